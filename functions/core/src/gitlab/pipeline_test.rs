use http::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

use crate::gitlab::{Delivery, MalformedEvent, ParsedEvent, parse_event};
use crate::push::{Push, PushEvent};

/// GitLab's documented `Pipeline Hook` example (source next to the file).
const PIPELINE_HOOK: &str = include_str!("../../tests/fixtures/gitlab/pipeline_hook.json");
const DELIVERY: Delivery<'static> = Delivery {
    received_at: "2026-11-22T03:00:00Z",
    id: "idempotency-key:pipeline-delivery",
};

fn parse(body: &str) -> Result<ParsedEvent, MalformedEvent> {
    let mut headers = HeaderMap::new();
    headers.insert("x-gitlab-event", HeaderValue::from_static("Pipeline Hook"));
    parse_event(&headers, body.as_bytes(), &DELIVERY)
}

fn edited(edit: impl FnOnce(&mut Value)) -> String {
    let mut value: Value = serde_json::from_str(PIPELINE_HOOK).unwrap();
    edit(&mut value);
    value.to_string()
}

fn the_push(body: &str) -> Push {
    match parse(body) {
        Ok(ParsedEvent::Pushes(mut pushes)) if pushes.len() == 1 => pushes.remove(0),
        other => panic!("expected one push, got {other:?}"),
    }
}

#[test]
fn a_successful_pipeline_is_a_pipeline_event_of_its_project_ref_and_commit() {
    let push = the_push(PIPELINE_HOOK);
    assert_eq!(push.event, PushEvent::Pipeline);
    assert_eq!(push.instance, "http://192.168.64.1:3005");
    assert_eq!(push.project.id, 1);
    assert_eq!(push.project.path, "gitlab-org/gitlab-test");
    assert_eq!(push.git_ref, "refs/heads/master");
    assert_eq!(push.after, "bcbb5ec396a2c0f828686f14fac9b80b780504f2");
    assert_eq!(push.checkout_sha.as_deref(), Some(push.after.as_str()));
    assert_eq!(push.changed_paths, None);
    assert_eq!(push.received_at, "2026-11-22T03:00:00Z");
    assert_eq!(push.key.len(), 64);
}

#[test]
fn a_tag_pipeline_has_a_tag_ref_and_a_full_ref_stays_whole() {
    let tag = the_push(&edited(|v| {
        v["object_attributes"]["ref"] = json!("v1.2.3");
        v["object_attributes"]["tag"] = json!(true);
    }));
    assert_eq!(tag.git_ref, "refs/tags/v1.2.3");
    let merge_request = the_push(&edited(|v| {
        v["object_attributes"]["ref"] = json!("refs/merge-requests/1/head");
    }));
    assert_eq!(merge_request.git_ref, "refs/merge-requests/1/head");
}

#[test]
fn every_status_but_success_is_ignored_with_its_name() {
    for status in [
        "failed", "running", "pending", "canceled", "skipped", "manual", "SUCCESS", "",
    ] {
        let body = edited(|v| v["object_attributes"]["status"] = json!(status));
        match parse(&body) {
            Ok(ParsedEvent::Ignored { reason }) => {
                assert!(reason.contains("is not success"), "{status}: {reason}");
            }
            other => panic!("{status}: expected ignored, got {other:?}"),
        }
    }
}

#[test]
fn two_pipelines_of_one_commit_have_two_keys() {
    let first = the_push(PIPELINE_HOOK);
    let retried = the_push(&edited(|v| v["object_attributes"]["id"] = json!(32)));
    assert_ne!(first.key, retried.key);
    assert_eq!(
        first.key,
        the_push(PIPELINE_HOOK).key,
        "a resend is the same delivery"
    );
}

#[test]
fn a_pipeline_that_cannot_be_read_is_malformed() {
    let cases: Vec<(String, &str)> = vec![
        ("{}".to_string(), "shape of a GitLab pipeline"),
        ("not json".to_string(), "not valid UTF-8 JSON"),
        (
            edited(|v| v["object_attributes"]["sha"] = json!("xyz")),
            "object_attributes.sha",
        ),
        (
            edited(|v| v["object_attributes"]["sha"] = json!("0".repeat(40))),
            "all zeros",
        ),
        (
            edited(|v| v["object_attributes"]["before_sha"] = json!("nope")),
            "before_sha",
        ),
        (
            edited(|v| v["object_attributes"]["ref"] = json!("main\r\nX: y")),
            "control characters",
        ),
        (edited(|v| v["object_attributes"]["ref"] = json!("")), "ref"),
        (
            edited(|v| v["project"]["web_url"] = json!("ftp://x")),
            "project.web_url",
        ),
        (
            edited(|v| v["object_attributes"]["status"] = json!(5)),
            "shape of a GitLab pipeline",
        ),
        (
            edited(|v| v["project"]["path_with_namespace"] = json!("")),
            "path_with_namespace",
        ),
    ];
    for (body, expected) in cases {
        match parse(&body) {
            Err(error) => assert!(error.to_string().contains(expected), "{error} ∌ {expected}"),
            other => panic!("expected malformed ({expected}), got {other:?}"),
        }
    }
}
