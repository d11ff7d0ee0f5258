#!/usr/bin/env python3
"""Writes the sample events in this folder from the GitLab fixtures.

Run from the repository root: python3 events/generate.py
The Function URL requests use the payload format 2.0 that Lambda Function URLs and HTTP
APIs send, with the headers GitLab sends (WebHookService#build_headers) and the fixture
bytes as the body, unchanged. The SQS batches carry Push and Dispatch v1 messages.
"""
import hashlib
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "functions/core/tests/fixtures/gitlab"
EVENTS = ROOT / "events"
INSTANCE = "https://gitlab.example.com"
# The token the sample events carry; the replay test and the local example config accept it.
SAMPLE_TOKEN = "sample-webhook-token-change-me"


def function_url_request(event_header, fixture, token=SAMPLE_TOKEN, request_id="1"):
    body = (FIXTURES / fixture).read_text()
    headers = {
        "content-type": "application/json",
        "user-agent": "GitLab/18.10.0",
        "idempotency-key": idempotency_key(request_id),
        "x-gitlab-event": event_header,
        "x-gitlab-instance": INSTANCE,
        "x-gitlab-webhook-uuid": f"3c1a1f0e-0000-4000-8000-00000000000{request_id}",
        "x-gitlab-event-uuid": f"5b7e2a9d-0000-4000-8000-00000000000{request_id}",
        "host": "abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws",
    }
    if token is not None:
        headers["x-gitlab-token"] = token
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/",
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "abcdefghijklmnopqrstuvwxyz012345",
            "domainName": headers["host"],
            "domainPrefix": "abcdefghijklmnopqrstuvwxyz012345",
            "http": {"method": "POST", "path": "/", "protocol": "HTTP/1.1",
                     "sourceIp": "203.0.113.7", "userAgent": "GitLab/18.10.0"},
            "requestId": f"c0ffee00-0000-4000-8000-00000000000{request_id}",
            "routeKey": "$default",
            "stage": "$default",
            "time": "22/Nov/2026:03:00:00 +0000",
            "timeEpoch": 1763780400000,
        },
        "body": body,
        "isBase64Encoded": False,
    }


def idempotency_key(request_id):
    """GitLab's Idempotency-Key: its own for every delivery (each hook of each event)."""
    return f"9d2c6f3e-0000-4000-8000-00000000000{request_id}"


def push_from_project_hook(fixture, request_id):
    """The Push ingest makes of the fixture delivered with `request_id`'s Idempotency-Key
    (the key includes the delivery: docs/design.md, "Messages")."""
    hook = json.loads((FIXTURES / fixture).read_text())
    project = hook["project"]
    delivery = f"idempotency-key:{idempotency_key(request_id)}"
    key = hashlib.sha256(f"{INSTANCE}|{hook['project_id']}|{hook['ref']}|{hook['before']}|{hook['after']}|{delivery}".encode()).hexdigest()
    return {
        "v": 1, "key": key, "instance": INSTANCE,
        "event": "tag_push" if hook["ref"].startswith("refs/tags/") else "push",
        "project": {"id": hook["project_id"], "path": project["path_with_namespace"],
                    "http_url": project["git_http_url"], "ssh_url": project["git_ssh_url"],
                    "web_url": project["web_url"], "default_branch": project.get("default_branch")},
        "ref": hook["ref"], "before": hook["before"], "after": hook["after"],
        "checkout_sha": hook.get("checkout_sha"), "changed_paths": None,
        "received_at": "2026-11-22T03:00:00Z",
    }


def sqs_record(message_id, body, group, dedup, queue, receive_count=1):
    return {
        "messageId": message_id,
        "receiptHandle": f"AQEB-sample-receipt-{message_id}",
        "body": json.dumps(body, separators=(",", ":")),
        "attributes": {
            "ApproximateReceiveCount": str(receive_count),
            "SentTimestamp": "1763780400000",
            "SequenceNumber": "18849496460467696128",
            "MessageGroupId": group,
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "MessageDeduplicationId": dedup,
            "ApproximateFirstReceiveTimestamp": "1763780400010",
        },
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(json.dumps(body, separators=(",", ":")).encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:us-east-1:123456789012:{queue}",
        "awsRegion": "us-east-1",
    }


def write(name, event):
    (EVENTS / name).write_text(json.dumps(event, indent=2) + "\n")


def main():
    # Each delivery its own request id, so its own Idempotency-Key, as GitLab sends them.
    for name, header, fixture, request_id in [
        ("ingest-push-hook.json", "Push Hook", "push_hook.json", "1"),
        ("ingest-tag-push-hook.json", "Tag Push Hook", "tag_push_hook.json", "2"),
        ("ingest-system-hook-push.json", "System Hook", "system_hook_push.json", "3"),
        ("ingest-system-hook-repository-update.json", "System Hook", "system_hook_repository_update.json", "4"),
        ("ingest-merge-request-hook.json", "Merge Request Hook", "merge_request_hook.json", "5"),
    ]:
        write(name, function_url_request(header, fixture, request_id=request_id))
    # The webhook bodies alone, byte for byte, to POST to `fluxrelay serve` with curl.
    (EVENTS / "webhooks").mkdir(exist_ok=True)
    for fixture in sorted(FIXTURES.glob("*.json")):
        raw = fixture.read_bytes()
        (EVENTS / "webhooks" / fixture.name.replace("_", "-")).write_bytes(raw)
    write("ingest-wrong-token.json", function_url_request("Push Hook", "push_hook.json", token="not-the-token", request_id="9"))

    push = push_from_project_hook("push_hook.json", "1")
    tag = push_from_project_hook("tag_push_hook.json", "2")
    write("route-batch.json", {"Records": [
        sqs_record("route-msg-1", push, str(push["project"]["id"]), push["key"], "fluxrelay-intake.fifo"),
        sqs_record("route-msg-2", tag, str(tag["project"]["id"]), tag["key"], "fluxrelay-intake.fifo"),
    ]})
    records = []
    for i, (cluster, p) in enumerate([("local-test", push), ("local-test", tag)], start=1):
        dispatch = {"v": 1, "cluster": cluster, "push": p}
        # Dispatch::dedup_id: the push's half, then the cluster's.
        dedup = (hashlib.sha256(p["key"].encode()).hexdigest()[:32]
                 + hashlib.sha256(f"{cluster}|{p['key']}".encode()).hexdigest()[:32])
        records.append(sqs_record(f"dispatch-msg-{i}", dispatch, cluster, dedup, "fluxrelay-dispatch.fifo"))
    write("dispatch-batch.json", {"Records": records})


if __name__ == "__main__":
    main()
