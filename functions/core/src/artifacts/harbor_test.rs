use serde_json::{Value, json};

use super::parse;
use crate::gitlab::{Delivery, ParsedEvent};
use crate::push::{Push, PushEvent};

/// Harbor's documented payloads (sources next to each file).
const DEFAULT_BY_TAG: &str =
    include_str!("../../tests/fixtures/harbor/push-artifact-default-by-tag.json");
const DEFAULT_BY_DIGEST: &str =
    include_str!("../../tests/fixtures/harbor/push-artifact-default-by-digest.json");
const CLOUDEVENTS_PUSH: &str =
    include_str!("../../tests/fixtures/harbor/push-artifact-cloudevents.json");
const CLOUDEVENTS_PULL: &str =
    include_str!("../../tests/fixtures/harbor/pull-artifact-cloudevents.json");

const DELIVERY: Delivery<'static> = Delivery {
    received_at: "2026-11-22T03:00:00Z",
    id: "request:r-1",
};

fn parsed(body: &str) -> ParsedEvent {
    match parse(body.as_bytes(), &DELIVERY) {
        Ok(parsed) => parsed,
        Err(error) => panic!("{error}"),
    }
}

fn pushes(body: &str) -> Vec<Push> {
    match parsed(body) {
        ParsedEvent::Pushes(pushes) => pushes,
        other => panic!("expected pushes, got {other:?}"),
    }
}

fn ignored(body: &str) -> String {
    match parsed(body) {
        ParsedEvent::Ignored { reason } => reason,
        other => panic!("expected ignored, got {other:?}"),
    }
}

fn edited(body: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut value: Value = serde_json::from_str(body).unwrap();
    edit(&mut value);
    value.to_string()
}

#[test]
fn a_default_format_push_by_tag_is_an_artifact_push_on_harbors_external_host() {
    let all = pushes(DEFAULT_BY_TAG);
    assert_eq!(all.len(), 1);
    let push = &all[0];
    assert_eq!(push.event, PushEvent::ArtifactPush);
    assert_eq!(push.instance, "oci://hub.harbor.com");
    assert_eq!(push.project.path, "test-webhook/debian");
    assert_eq!(push.git_ref, "latest");
    assert_eq!(
        push.after,
        "sha256:8a9e9863dbb6e10edb5adfe917c00da84e1700fa76e7ed02476aa6e6fb8ee0d8"
    );
}

#[test]
fn an_untagged_push_whose_tag_is_its_digest_is_ignored() {
    assert!(ignored(DEFAULT_BY_DIGEST).contains("push by digest (no tag)"));
    assert!(ignored(CLOUDEVENTS_PUSH).contains("push by digest (no tag)"));
}

#[test]
fn a_cloudevents_push_reads_data_and_its_id_is_the_delivery() {
    let tagged = edited(CLOUDEVENTS_PUSH, |v| {
        v["data"]["resources"][0]["tag"] = json!("v1.4.0")
    });
    let push = &pushes(&tagged)[0];
    assert_eq!(push.instance, "oci://localhost");
    assert_eq!(push.project.path, "harbor/alpine");
    assert_eq!(push.git_ref, "v1.4.0");
    let other_request = Delivery {
        id: "request:r-2",
        ..DELIVERY
    };
    match parse(tagged.as_bytes(), &other_request) {
        Ok(ParsedEvent::Pushes(again)) => assert_eq!(again[0].key, push.key),
        other => panic!("{other:?}"),
    }
    // The Default format has no event id: each request is its own delivery.
    match parse(DEFAULT_BY_TAG.as_bytes(), &other_request) {
        Ok(ParsedEvent::Pushes(again)) => assert_ne!(again[0].key, pushes(DEFAULT_BY_TAG)[0].key),
        other => panic!("{other:?}"),
    }
}

#[test]
fn other_event_types_are_ignored_in_either_format() {
    assert!(ignored(CLOUDEVENTS_PULL).contains("\"harbor.artifact.pulled\""));
    for kind in [
        "PULL_ARTIFACT",
        "DELETE_ARTIFACT",
        "SCANNING_COMPLETED",
        "push_artifact",
        "",
    ] {
        let body = edited(DEFAULT_BY_TAG, |v| v["type"] = json!(kind));
        assert!(ignored(&body).contains("is not an artifact push"), "{kind}");
    }
    // Each format's name for a push counts only in that format.
    let crossed = edited(DEFAULT_BY_TAG, |v| {
        v["type"] = json!("harbor.artifact.pushed")
    });
    assert!(ignored(&crossed).contains("is not an artifact push"));
    let crossed = edited(CLOUDEVENTS_PUSH, |v| v["type"] = json!("PUSH_ARTIFACT"));
    assert!(ignored(&crossed).contains("is not an artifact push"));
    assert!(ignored("{}").contains("is not an artifact push"));
}

#[test]
fn a_push_that_cannot_be_read_is_malformed_and_names_the_field() {
    let cases: Vec<(String, &str)> = vec![
        ("[]".into(), "shape of a Harbor webhook"),
        ("not json".into(), "not valid UTF-8 JSON"),
        (
            edited(DEFAULT_BY_TAG, |v| {
                v.as_object_mut().unwrap().remove("event_data");
            }),
            "event_data",
        ),
        (
            edited(DEFAULT_BY_TAG, |v| {
                v["event_data"]
                    .as_object_mut()
                    .unwrap()
                    .remove("repository");
            }),
            "event_data.repository.repo_full_name",
        ),
        (
            edited(DEFAULT_BY_TAG, |v| {
                v["event_data"]["resources"][0]["resource_url"] = json!("no-slash");
            }),
            "resource_url",
        ),
        (
            edited(DEFAULT_BY_TAG, |v| {
                v["event_data"]["resources"][0]["resource_url"] = json!("bad host/x/y:latest");
            }),
            "repo_full_name",
        ),
        (
            edited(DEFAULT_BY_TAG, |v| {
                v["event_data"]["repository"]["repo_full_name"] = json!("UP/../x");
            }),
            "repo_full_name",
        ),
        (
            edited(DEFAULT_BY_TAG, |v| {
                v["event_data"]["resources"][0]["digest"] = json!("");
            }),
            "resources[].digest",
        ),
        (
            edited(DEFAULT_BY_TAG, |v| {
                v["event_data"]["resources"][0]["tag"] = json!("v1 2");
            }),
            "resources[].tag",
        ),
        (
            edited(CLOUDEVENTS_PUSH, |v| {
                v.as_object_mut().unwrap().remove("data");
            }),
            "data",
        ),
        (
            edited(DEFAULT_BY_TAG, |v| v["event_data"]["resources"] = json!({})),
            "shape of a Harbor webhook",
        ),
    ];
    for (body, expected) in cases {
        match parse(body.as_bytes(), &DELIVERY) {
            Err(error) => assert!(error.to_string().contains(expected), "{error} ∌ {expected}"),
            other => panic!("expected malformed ({expected}), got {other:?}"),
        }
    }
}
