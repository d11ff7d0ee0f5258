#!/usr/bin/env python3
"""Self-test of check_template.py: it passes the real template, and each deliberately
broken copy of it makes it fail, naming the check that caught the breakage.

Usage: ~/.cache/fluxrelay/venv/bin/python tests/template/test_check_template.py [template.yaml]

Each broken copy is the real template with one edit of its text (written to a temporary
directory). An edit must match its target exactly once, so a template change that makes a
case edit nothing fails the case instead of passing it silently. Prints one line per case
("ok" or "NOT OK" and why) and "N passed, M failed" last; exits 1 if the real template
fails or any broken copy is not caught.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKER = HERE / "check_template.py"
TEMPLATE = HERE.parent.parent / "template.yaml"


class EditError(Exception):
    pass


def resource_span(text: str, lid: str) -> tuple[int, int]:
    """Where resource `lid`'s block (its two-space-indented key and everything under it)
    starts and ends in the template text."""
    start = re.search(rf"^  {re.escape(lid)}:\n", text, re.M)
    if not start:
        raise EditError(f"no resource {lid}")
    end = re.compile(r"^(  \S|\S)", re.M).search(text, start.end())
    return start.start(), end.start() if end else len(text)


def in_resource(lid: str, old: str, new: str):
    """An edit: `old` -> `new` inside resource `lid`, where `old` must occur exactly once."""

    def edit(text: str) -> str:
        start, end = resource_span(text, lid)
        block = text[start:end]
        if block.count(old) != 1:
            raise EditError(f"{old!r} occurs {block.count(old)} times in {lid}, not once")
        return text[:start] + block.replace(old, new) + text[end:]

    return edit


def anywhere(old: str, new: str):
    """An edit: `old` -> `new`, where `old` must occur exactly once in the template."""

    def edit(text: str) -> str:
        if text.count(old) != 1:
            raise EditError(f"{old!r} occurs {text.count(old)} times, not once")
        return text.replace(old, new)

    return edit


def without_resource(lid: str):
    def edit(text: str) -> str:
        start, end = resource_span(text, lid)
        return text[:start] + text[end:]

    return edit


# (case, edit, the check names - prefixes of FAIL lines - that must fail, and words each of
# those FAIL lines must contain)
CASES = [
    ("BatchSize 11 on a FIFO event source",
     in_resource("IntakeEventSource", "BatchSize: 10", "BatchSize: 11"),
     ["RouteFunction.IntakeEventSource BatchSize <= 10"], ["11"]),
    ("FunctionResponseTypes misspelt ReportBatchItemFailure",
     in_resource("DispatchEventSource", "FunctionResponseTypes: [ReportBatchItemFailures]",
                 "FunctionResponseTypes: [ReportBatchItemFailure]"),
     ["DispatchFunction.DispatchEventSource FunctionResponseTypes == ['ReportBatchItemFailures']"],
     ["ReportBatchItemFailure'"]),
    ("a SAM SQS event (SAM adds AWSLambdaSQSQueueExecutionRole: every queue of the account)",
     in_resource("RouteFunction", "      Policies:\n",
                 "      Events:\n        Intake:\n          Type: SQS\n          Properties:\n"
                 "            Queue: !GetAtt IntakeQueue.Arn\n      Policies:\n"),
     ["no SAM SQS Events"], ["RouteFunction.Intake"]),
    ("route may delete on dispatch's queue",
     in_resource("RouteFunction", "                - sqs:ChangeMessageVisibility\n              Resource: !GetAtt IntakeQueue.Arn",
                 "                - sqs:ChangeMessageVisibility\n              Resource: [!GetAtt IntakeQueue.Arn, !GetAtt DispatchQueue.Arn]"),
     ["no function can receive, delete or re-time another function's queue", "RouteFunction policy grants exactly"],
     ["RouteFunction", "DispatchQueue"]),
    ("ingest without reserved concurrency (a flood takes the account's)",
     in_resource("IngestFunction", "      ReservedConcurrentExecutions: !Ref IngestMaxConcurrency\n", ""),
     ["IngestFunction reserves 1..100"], ["None"]),
    ("ingest may reserve 1000",
     anywhere("    MaxValue: 100\n    Description: >-\n      Reserved concurrency of the ingest",
              "    MaxValue: 1000\n    Description: >-\n      Reserved concurrency of the ingest"),
     ["IngestFunction reserves 1..100"], ["> 100"]),
    ("route's event source may invoke more than route reserves",
     in_resource("IntakeEventSource", "MaximumConcurrency: 5", "MaximumConcurrency: 6"),
     ["RouteFunction reserves at least its event sources' MaximumConcurrency"], ["reserved 5 < 6"]),
    ("dispatch reserves less than its two event sources together",
     anywhere('"5": { DispatchReserved: 10 }', '"5": { DispatchReserved: 5 }'),
     ["DispatchFunction reserves at least its event sources' MaximumConcurrency"], ["reserved 5 < 10"]),
    ("an added sqs:* action",
     in_resource("IngestFunction", "Action: sqs:SendMessage", 'Action: [sqs:SendMessage, "sqs:*"]'),
     ["no IAM Action contains '*'", "IngestFunction policy grants exactly"], ["sqs:*"]),
    ('Resource: "*" on GetSecretValue',
     in_resource("DispatchFunction",
                 'Resource: !Sub "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${RegistryPrefix}*"',
                 'Resource: "*"'),
     ["no function policy has Resource '*'", "DispatchFunction policy grants exactly"],
     ["GetSecretValue"]),
    ("route may read the clusters' secrets again",
     in_resource("RouteFunction", "              Action: s3:GetObject\n",
                 "              Action: [s3:GetObject, secretsmanager:GetSecretValue]\n"),
     ["RouteFunction can read no credential", "RouteFunction policy grants exactly"],
     ["secretsmanager:GetSecretValue"]),
    ("secretsmanager:ListSecrets on '*' for dispatch",
     in_resource("DispatchFunction", "            - Sid: ReadClusterSecrets\n",
                 "            - Sid: List\n              Effect: Allow\n              Action: secretsmanager:ListSecrets\n"
                 "              Resource: \"*\"\n            - Sid: ReadClusterSecrets\n"),
     ["no function policy has Resource '*'", "DispatchFunction policy grants exactly"], ["ListSecrets"]),
    ("an extra granted action (sqs:DeleteQueue on the dispatch queue)",
     in_resource("DispatchFunction", "Action: sqs:SendMessage\n              Resource: !GetAtt DispatchDLQ.Arn",
                 "Action: [sqs:SendMessage, sqs:DeleteQueue]\n              Resource: !GetAtt DispatchDLQ.Arn"),
     ["DispatchFunction policy grants exactly"], ["unexpected", "sqs:DeleteQueue"]),
    ("a missing grant (no SendMessage for dispatch's retries)",
     in_resource("DispatchFunction",
                 "            - Sid: ScheduleRetries\n"
                 "              Effect: Allow\n"
                 "              Action: sqs:SendMessage\n"
                 "              Resource: !GetAtt DispatchRetryQueue.Arn\n", ""),
     ["DispatchFunction policy grants exactly"], ["missing", "sqs:SendMessage"]),
    ("a managed policy instead of inline statements",
     in_resource("IngestFunction", "      Policies:\n", "      Policies:\n        - AmazonSQSFullAccess\n"),
     ["IngestFunction policy grants exactly"], ["managed policy"]),
    ("Runtime provided.al2025",
     in_resource("IngestFunction", "Runtime: provided.al2023", "Runtime: provided.al2025"),
     ["IngestFunction Runtime is provided.al2023"], ["provided.al2025"]),
    ("Binary outside BuildProperties",
     in_resource("RouteFunction", "      BuildProperties:\n        Binary: route\n", "      Binary: route\n"),
     ["RouteFunction Metadata.BuildProperties.Binary names its workspace binary"], ["None"]),
    ("a non-FIFO dead-letter queue",
     in_resource("DispatchDLQ", "FifoQueue: true", "FifoQueue: false"),
     ["DispatchDLQ is FIFO", "DispatchQueue redrives to a FIFO DLQ of this template"], []),
    ("a work queue without a redrive policy",
     in_resource("IntakeQueue",
                 "      RedrivePolicy:\n        deadLetterTargetArn: !GetAtt IntakeDLQ.Arn\n",
                 "      NoRedrivePolicy:\n        deadLetterTargetArn: !GetAtt IntakeDLQ.Arn\n"),
     ["IntakeQueue redrives to a FIFO DLQ of this template"], ["None"]),
    ("visibility 179 s for a 30 s timeout (below 6 x)",
     anywhere('"30": { Seconds: 180 }', '"30": { Seconds: 179 }'),
     ["IntakeQueue VisibilityTimeout >= 6 x RouteFunction Timeout",
      "DispatchQueue VisibilityTimeout >= 6 x DispatchFunction Timeout"], ["visibility 179 < 6 x timeout 30"]),
    ("dispatch queue maxReceiveCount at the code's attempt limit",
     in_resource("DispatchQueue", "maxReceiveCount: 20", "maxReceiveCount: 8"),
     ["DispatchQueue maxReceiveCount > 8"], ["8"]),
    ("a missing DLQ-depth alarm",
     without_resource("DispatchDLQDepthAlarm"),
     ["DLQ-depth alarm (> 0) on DispatchDLQ"], []),
    ("a missing Errors alarm",
     without_resource("RouteErrorsAlarm"),
     ["Errors alarm (> 0) on RouteFunction"], []),
    # --- confirmation (issue 14) ---
    ("dispatch cannot start confirmations",
     in_resource("DispatchFunction",
                 "            - Sid: StartConfirmations\n"
                 "              Effect: Allow\n"
                 "              Action: sqs:SendMessage\n"
                 "              Resource: !GetAtt ConfirmQueue.Arn\n", ""),
     ["DispatchFunction policy grants exactly"], ["missing", "ConfirmQueue"]),
    ("a FIFO confirm queue (no per-message delay)",
     in_resource("ConfirmQueue", "QueueName: !Sub \"${AWS::StackName}-confirm\"",
                 "QueueName: !Sub \"${AWS::StackName}-confirm.fifo\"\n      FifoQueue: true"),
     ["ConfirmQueue is a standard queue"], []),
    ("confirm may read every secret",
     in_resource("ConfirmFunction",
                 'Resource: !Sub "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${GitLabSecretName}-??????"',
                 'Resource: !Sub "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:*"'),
     ["ConfirmFunction policy grants exactly"], ["unexpected"]),
    ("no alarm on confirmations that fail or time out",
     without_resource("ConfirmationsNotDeployedAlarm"),
     ["an alarm (> 0) on ConfirmationsNotDeployed"], []),
    ("an unconditional alarm action",
     in_resource("IngestErrorsAlarm", "AlarmActions: !If [HasAlarmTopic, [!Ref AlarmTopicArn], !Ref AWS::NoValue]",
                 "AlarmActions: [!Ref AlarmTopicArn]"),
     ["alarm actions only under a Condition on AlarmTopicArn"], ["IngestErrorsAlarm.AlarmActions"]),
    ("no Function URL",
     in_resource("IngestFunction", "AuthType: NONE", "AuthType: AWS_IAM"),
     ["IngestFunction has a Function URL"], ["AWS_IAM"]),
    ("intake content-based dedup on whatever the EcrEvents parameter says",
     in_resource("IntakeQueue", "ContentBasedDeduplication: !If [WithEcrEvents, true, false]",
                 "ContentBasedDeduplication: true"),
     ["IntakeQueue ContentBasedDeduplication is false", "IntakeQueue ContentBasedDeduplication is !If"], ["True"]),
    ("ECR rule outside the EcrEvents condition",
     in_resource("EcrImagePushRule", "    Condition: WithEcrEvents\n", ""),
     ["the ECR rule and queue policy exist only under WithEcrEvents"], ["None"]),
    ("ECR rule takes every ECR image action",
     in_resource("EcrImagePushRule", "          action-type: [PUSH]\n", ""),
     ["the ECR rule matches successful ECR image pushes only"], ["SUCCESS"]),
    ("ECR rule target without a message group",
     in_resource("EcrImagePushRule", "          SqsParameters:\n            MessageGroupId: ecr\n", ""),
     ["the ECR rule's one target is the intake queue"], ["IntakeQueue"]),
    ("queue policy lets any EventBridge rule send",
     in_resource("IntakeQueueEcrPolicy", "            Condition:\n              ArnEquals:\n                aws:SourceArn: !GetAtt EcrImagePushRule.Arn\n", ""),
     ["the intake queue policy lets events.amazonaws.com SendMessage from the ECR rule only"], ["events.amazonaws.com"]),
]


def load_checker():
    spec = importlib.util.spec_from_file_location("check_template", CHECKER)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {CHECKER}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_checker(checker, path: Path) -> tuple[int, str]:
    """The checker's main() in this process (cfn-lint is imported once, not per case)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = checker.main(["check_template.py", str(path)])
        except SystemExit as exit_:  # an unloadable template
            code = exit_.code if isinstance(exit_.code, int) else 1
            print(exit_.code)
    return code, out.getvalue()


def main(argv: list[str]) -> int:
    template = Path(argv[1]) if len(argv) > 1 else TEMPLATE
    original = template.read_text()
    checker = load_checker()
    passed, failed = 0, 0

    def report(ok: bool, line: str, detail: str = "") -> None:
        nonlocal passed, failed
        passed, failed = passed + ok, failed + (not ok)
        print(("ok     " if ok else "NOT OK ") + line + (f"\n    {detail}" if detail and not ok else ""))

    # The real template passes, run as CI runs it (its own process, its exit status).
    real = subprocess.run([sys.executable, str(CHECKER), str(template)], capture_output=True, text=True)
    fails = [line for line in real.stdout.splitlines() if line.startswith("FAIL")]
    report(real.returncode == 0 and not fails, f"{template.name} as it is: exit {real.returncode}, {len(fails)} FAIL",
           "\n    ".join(fails + real.stderr.splitlines()))

    # --grants on the real template: exactly the actions the checker expects of each function.
    grants = subprocess.run([sys.executable, str(CHECKER), "--grants", str(template)],
                            capture_output=True, text=True)
    want = {}
    for f, pairs in checker.EXPECTED_POLICIES.items():
        for action, resource in pairs:
            want.setdefault(f, {}).setdefault(action, set()).add(checker.getatt_target(resource) or resource)
    want = {f: {a: sorted(r) for a, r in sorted(by.items())} for f, by in want.items()}
    try:
        got = json.loads(grants.stdout)
    except json.JSONDecodeError:
        got = None
    report(grants.returncode == 0 and got == want, "--grants lists each function's expected actions and resources",
           f"exit {grants.returncode}, got {grants.stdout.strip() or grants.stderr.strip()}, want {json.dumps(want)}")

    # check_docs.py: the real docs pass; a doc naming a parameter the template lacks (the
    # `WebhookSecretId` docs/operations.md once told `sam deploy --guided` users to set)
    # fails, and so does a template parameter the operations guide leaves out.
    docs_checker = HERE / "check_docs.py"
    real_docs = subprocess.run([sys.executable, str(docs_checker), str(template)], capture_output=True, text=True)
    report(real_docs.returncode == 0, f"check_docs.py on the docs as they are: exit {real_docs.returncode}",
           real_docs.stdout + real_docs.stderr)
    with tempfile.TemporaryDirectory(prefix="fluxrelay-docs-") as tmp:
        operations = (TEMPLATE.parent / "docs" / "operations.md").read_text()
        for case, text, words in [
            ("a doc names parameter `WebhookSecretId`",
             operations.replace("`WebhookSecretName`", "`WebhookSecretId`", 1), ["`WebhookSecretId`"]),
            ("a doc names output <DispatchDLQUri>", operations + "\n`fluxrelay dlq list --sqs <DispatchDLQUri>`\n",
             ["`DispatchDLQUri`"]),
            ("the operations guide leaves out parameter LogLevel",
             operations.replace("`LogLevel`", "`Log level`"), ["parameter LogLevel"]),
        ]:
            doc = Path(tmp) / "operations.md"
            doc.write_text(text)
            run = subprocess.run([sys.executable, str(docs_checker), str(template), str(doc)],
                                 capture_output=True, text=True)
            caught = run.returncode == 1 and any(w in run.stdout for w in words)
            report(caught, f"check_docs.py catches: {case}", f"exit {run.returncode}: {run.stdout}")

    with tempfile.TemporaryDirectory(prefix="fluxrelay-template-") as tmp:
        for n, (case, edit, checks, words) in enumerate(CASES):
            try:
                broken = edit(original)
            except EditError as error:
                report(False, f"{case}: the edit no longer applies to {template.name} ({error})")
                continue
            path = Path(tmp) / f"broken-{n:02}.yaml"
            path.write_text(broken)
            code, output = run_checker(checker, path)
            fail_lines = [line for line in output.splitlines() if line.startswith("FAIL ")]
            problems = [] if code == 1 else [f"exit {code}, not 1"]
            for check in checks:
                lines = [line for line in fail_lines if line.startswith(f"FAIL {check}")]
                if not lines:
                    problems.append(f"no FAIL line for {check!r}")
                elif not any(all(w in line for w in words) for line in lines):
                    problems.append(f"the FAIL line for {check!r} does not mention {words}: {lines}")
            others = [line.split(":")[0][5:] for line in fail_lines if not any(line.startswith(f"FAIL {c}") for c in checks)]
            line = f"{case}: caught by {'; '.join(checks)}" + (f" (also: {'; '.join(others)})" if others else "")
            # What the checker said, without its PASS lines.
            said = [line for line in output.splitlines() if line.strip() and not line.startswith("PASS ")]
            report(not problems, line, "\n    ".join(problems + ["checker output:"] + said))

    # The release profile: a workspace whose [profile.release] sets `panic` fails, so the
    # Lambda artifacts keep cargo-lambda's abort and serve its unwinding (check_release_profile).
    cargo = template.parent / "Cargo.toml"
    if cargo.is_file():
        with tempfile.TemporaryDirectory(prefix="fluxrelay-profile-") as tmp:
            (Path(tmp) / "template.yaml").write_text(original)
            profile = cargo.read_text()
            marked = profile.replace("[profile.release]\n", "[profile.release]\npanic = \"unwind\"\n", 1)
            (Path(tmp) / "Cargo.toml").write_text(marked)
            code, output = run_checker(checker, Path(tmp) / "template.yaml")
            caught = [line for line in output.splitlines()
                      if line.startswith("FAIL the workspace release profile leaves panic to cargo-lambda")]
            report(marked != profile and code == 1 and any("unwind" in line for line in caught),
                   "a release profile that sets panic: caught by the release profile check",
                   f"exit {code}; edit applied: {marked != profile}; output:\n    " + output.replace("\n", "\n    "))

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
