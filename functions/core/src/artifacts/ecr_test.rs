use serde_json::{Value, json};

use super::{is_eventbridge_event, parse};
use crate::gitlab::ParsedEvent;
use crate::push::PushEvent;

/// AWS's documented `ECR Image Action` events (sources next to each file).
const PUSH: &str = include_str!("../../tests/fixtures/ecr/image-action-push.json");
const DELETE: &str = include_str!("../../tests/fixtures/ecr/image-action-delete.json");

fn edited(edit: impl FnOnce(&mut Value)) -> String {
    let mut value: Value = serde_json::from_str(PUSH).unwrap();
    edit(&mut value);
    value.to_string()
}

fn ignored(body: &str) -> String {
    match parse(body.as_bytes()) {
        Ok(ParsedEvent::Ignored { reason }) => reason,
        other => panic!("expected ignored, got {other:?}"),
    }
}

#[test]
fn the_documented_push_is_an_artifact_push_on_the_accounts_registry() {
    let pushes = match parse(PUSH.as_bytes()) {
        Ok(ParsedEvent::Pushes(pushes)) => pushes,
        other => panic!("{other:?}"),
    };
    assert_eq!(pushes.len(), 1);
    let push = &pushes[0];
    assert_eq!(push.event, PushEvent::ArtifactPush);
    assert_eq!(
        push.instance,
        "oci://123456789012.dkr.ecr.us-west-2.amazonaws.com"
    );
    assert_eq!(push.project.path, "my-repository-name");
    assert_eq!(push.git_ref, "latest");
    assert_eq!(
        push.after,
        "sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd1234"
    );
    // The event's own time is when the push happened.
    assert_eq!(push.received_at, "2019-11-16T01:54:34Z");
    // The event id is the delivery: EventBridge's retries of one event are one delivery.
    let again = match parse(PUSH.as_bytes()) {
        Ok(ParsedEvent::Pushes(pushes)) => pushes,
        other => panic!("{other:?}"),
    };
    assert_eq!(again[0].key, push.key);
    let other = edited(|v| v["id"] = json!("23cde686-328b-6117-af20-0e5566167482"));
    match parse(other.as_bytes()) {
        Ok(ParsedEvent::Pushes(pushes)) => assert_ne!(pushes[0].key, push.key),
        other => panic!("{other:?}"),
    }
}

#[test]
fn china_regions_have_their_own_domain() {
    let body = edited(|v| v["region"] = json!("cn-north-1"));
    match parse(body.as_bytes()) {
        Ok(ParsedEvent::Pushes(pushes)) => assert_eq!(
            pushes[0].instance,
            "oci://123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn deletions_failures_untagged_pushes_and_other_events_are_ignored() {
    assert!(ignored(DELETE).contains("\"DELETE\""));
    assert!(ignored(&edited(|v| v["detail"]["result"] = json!("FAILURE"))).contains("\"FAILURE\""));
    assert!(
        ignored(&edited(|v| {
            v["detail"].as_object_mut().unwrap().remove("image-tag");
        }))
        .contains("by digest")
    );
    assert!(
        ignored(&edited(|v| v["detail-type"] = json!("ECR Image Scan")))
            .contains("not an ECR image action")
    );
    assert!(
        ignored(&edited(|v| v["source"] = json!("aws.s3"))).contains("not an ECR image action")
    );
}

#[test]
fn an_event_that_cannot_be_read_is_malformed_and_names_the_field() {
    for (body, expected) in [
        (edited(|v| v["account"] = json!("12345")), "account"),
        (edited(|v| v["account"] = json!("12345678901x")), "account"),
        (edited(|v| v["region"] = json!("us west")), "region"),
        (edited(|v| v["region"] = json!("")), "region"),
        (edited(|v| v["time"] = json!("yesterday")), "time"),
        (
            edited(|v| {
                v.as_object_mut().unwrap().remove("id");
            }),
            "id",
        ),
        (
            edited(|v| v["detail"]["repository-name"] = json!("A B")),
            "repository-name",
        ),
        (
            edited(|v| v["detail"]["image-digest"] = json!("x")),
            "image-digest",
        ),
        (
            edited(|v| v["detail"]["image-tag"] = json!("a/b")),
            "image-tag",
        ),
        (
            edited(|v| {
                v.as_object_mut().unwrap().remove("detail");
            }),
            "detail",
        ),
        ("[1]".to_string(), "shape of a EventBridge"),
    ] {
        match parse(body.as_bytes()) {
            Err(error) => assert!(error.to_string().contains(expected), "{error} ∌ {expected}"),
            other => panic!("expected malformed ({expected}), got {other:?}"),
        }
    }
}

#[test]
fn eventbridge_events_are_told_from_fluxrelays_own_messages() {
    assert!(is_eventbridge_event(PUSH));
    assert!(is_eventbridge_event(DELETE));
    let push = crate::push::tests::sample_push();
    assert!(!is_eventbridge_event(&push.to_json()));
    for other in [
        "",
        "{}",
        "[]",
        "null",
        "not json",
        r#"{"source": "aws.ecr"}"#,
    ] {
        assert!(!is_eventbridge_event(other), "{other}");
    }
}
