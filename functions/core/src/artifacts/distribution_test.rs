use serde_json::{Value, json};

use super::parse;
use crate::gitlab::{Delivery, MalformedEvent, ParsedEvent};
use crate::push::{Push, PushEvent};

/// GitLab's container registry spec example: a manifest pushed by tag (source next to it).
const GITLAB_PUSH: &str =
    include_str!("../../tests/fixtures/registry/gitlab-registry-manifest-push.json");
/// Distribution's docs "full event": a manifest pushed by digest and two blob pushes.
const DISTRIBUTION_ENVELOPE: &str =
    include_str!("../../tests/fixtures/registry/distribution-push-envelope.json");
/// Distribution's docs example of a manifest pull.
const DISTRIBUTION_PULL: &str =
    include_str!("../../tests/fixtures/registry/distribution-manifest-pull.json");

const DELIVERY: Delivery<'static> = Delivery {
    received_at: "2026-11-22T03:00:00Z",
    id: "request:r-1",
};

fn pushes(body: &str) -> Vec<Push> {
    match parse(body.as_bytes(), &DELIVERY) {
        Ok(ParsedEvent::Pushes(pushes)) => pushes,
        other => panic!("expected pushes, got {other:?}"),
    }
}

fn ignored(body: &str) -> String {
    match parse(body.as_bytes(), &DELIVERY) {
        Ok(ParsedEvent::Ignored { reason }) => reason,
        other => panic!("expected ignored, got {other:?}"),
    }
}

fn malformed(body: &str) -> MalformedEvent {
    match parse(body.as_bytes(), &DELIVERY) {
        Err(error) => error,
        other => panic!("expected malformed, got {other:?}"),
    }
}

fn gitlab_edited(edit: impl FnOnce(&mut Value)) -> String {
    let mut value: Value = serde_json::from_str(GITLAB_PUSH).unwrap();
    edit(&mut value["events"][0]);
    value.to_string()
}

#[test]
fn a_tagged_manifest_push_from_gitlabs_registry_is_an_artifact_push() {
    let all = pushes(GITLAB_PUSH);
    assert_eq!(all.len(), 1);
    let push = &all[0];
    assert_eq!(push.event, PushEvent::ArtifactPush);
    assert_eq!(push.instance, "oci://registry.test:5000");
    assert_eq!(push.project.path, "root/test");
    assert_eq!(push.project.web_url, "oci://registry.test:5000/root/test");
    assert_eq!(push.git_ref, "latest");
    assert_eq!(
        push.after,
        "sha256:af06af3514c44a964d3b905b498cf6493db8f1cde7c10e078213a89c87308ba0"
    );
    let artifact = push.artifact().unwrap();
    assert_eq!(
        artifact.location.to_string(),
        "registry.test:5000/root/test"
    );
    assert_eq!(artifact.tag, "latest");
    // The registry's event id is the delivery: its own retries are one delivery.
    let other_request = Delivery {
        id: "request:r-2",
        ..DELIVERY
    };
    match parse(GITLAB_PUSH.as_bytes(), &other_request) {
        Ok(ParsedEvent::Pushes(again)) => assert_eq!(again[0].key, push.key),
        other => panic!("{other:?}"),
    }
    let another_event = gitlab_edited(|e| e["id"] = json!("b582a0f3-e620-43e6-8e98-ff850fc9d984"));
    assert_ne!(pushes(&another_event)[0].key, push.key);
}

#[test]
fn what_is_not_a_tagged_manifest_push_is_ignored_with_what_it_was() {
    // The docs' envelope: a manifest pushed by digest and two layer pushes.
    let reason = ignored(DISTRIBUTION_ENVELOPE);
    assert!(
        reason.contains("1 × manifest push by digest (no tag)"),
        "{reason}"
    );
    assert!(reason.contains("2 × blob push"), "{reason}");
    assert!(ignored(DISTRIBUTION_PULL).contains("action \"pull\""));
    for (action, expected) in [
        ("delete", "action \"delete\""),
        ("mount", "action \"mount\""),
        ("rename", "action \"rename\""),
        ("PUSH", "action \"PUSH\""),
    ] {
        let body = gitlab_edited(|e| e["action"] = json!(action));
        assert!(ignored(&body).contains(expected), "{action}");
    }
    let blob = gitlab_edited(|e| e["target"]["mediaType"] = json!("application/octet-stream"));
    assert!(ignored(&blob).contains("blob push"));
    let helm_layer = gitlab_edited(|e| {
        e["target"]["mediaType"] = json!("application/vnd.cncf.helm.chart.content.v1.tar+gzip")
    });
    assert!(ignored(&helm_layer).contains("blob push"));
    let by_digest = gitlab_edited(|e| {
        e["target"].as_object_mut().unwrap().remove("tag");
    });
    assert!(ignored(&by_digest).contains("by digest"));
    let empty_tag = gitlab_edited(|e| e["target"]["tag"] = json!(""));
    assert!(ignored(&empty_tag).contains("by digest"));
    assert!(ignored(r#"{"events": []}"#).contains("holds no event"));
    // A 10 KiB action name is quoted short.
    let long = gitlab_edited(|e| e["action"] = json!("x".repeat(10 * 1024)));
    assert!(ignored(&long).len() < 300);
}

#[test]
fn every_manifest_media_type_counts_and_a_missing_one_is_judged_by_the_url() {
    for media_type in super::MANIFEST_MEDIA_TYPES {
        let body = gitlab_edited(|e| e["target"]["mediaType"] = json!(media_type));
        assert_eq!(pushes(&body).len(), 1, "{media_type}");
    }
    let no_type = gitlab_edited(|e| {
        e["target"].as_object_mut().unwrap().remove("mediaType");
    });
    assert_eq!(pushes(&no_type).len(), 1);
    let no_type_blob = gitlab_edited(|e| {
        e["target"].as_object_mut().unwrap().remove("mediaType");
        e["target"]["url"] = json!("http://registry.test:5000/v2/root/test/blobs/sha256:00");
    });
    assert!(ignored(&no_type_blob).contains("blob push"));
}

#[test]
fn the_registry_is_the_host_the_client_pushed_to_else_the_urls() {
    let docker_hub = gitlab_edited(|e| {
        e["request"]["host"] = json!("docker.io");
        e["target"]["repository"] = json!("nginx");
    });
    assert_eq!(
        pushes(&docker_hub)[0].project.web_url,
        "oci://index.docker.io/library/nginx"
    );
    let from_url = gitlab_edited(|e| {
        e["request"].as_object_mut().unwrap().remove("host");
    });
    assert_eq!(pushes(&from_url)[0].instance, "oci://registry.test:5000");
    let no_host = gitlab_edited(|e| {
        e["request"].as_object_mut().unwrap().remove("host");
        e["target"].as_object_mut().unwrap().remove("url");
    });
    assert!(malformed(&no_host).to_string().contains("request.host"));
}

#[test]
fn several_events_give_several_pushes_and_a_repeated_one_gives_one() {
    let mut value: Value = serde_json::from_str(GITLAB_PUSH).unwrap();
    let mut second = value["events"][0].clone();
    second["id"] = json!("other-event");
    second["target"]["tag"] = json!("v2");
    let repeated = value["events"][0].clone();
    value["events"]
        .as_array_mut()
        .unwrap()
        .extend([second, repeated]);
    let all = pushes(&value.to_string());
    let tags: Vec<&str> = all.iter().map(|p| p.git_ref.as_str()).collect();
    assert_eq!(tags, ["latest", "v2"]);
}

#[test]
fn a_push_that_cannot_be_read_is_malformed_and_names_the_field() {
    let cases: Vec<(String, &str)> = vec![
        ("{}".into(), "shape of a registry notification"),
        ("[]".into(), "shape of a registry notification"),
        (
            r#"{"events": {}}"#.into(),
            "shape of a registry notification",
        ),
        ("not json".into(), "not valid UTF-8 JSON"),
        (
            gitlab_edited(|e| e["target"]["tag"] = json!("v1+build")),
            "events[].target.tag",
        ),
        (
            gitlab_edited(|e| e["target"]["tag"] = json!("a\nb")),
            "events[].target.tag",
        ),
        (
            gitlab_edited(|e| e["target"]["digest"] = json!("nope")),
            "events[].target.digest",
        ),
        (
            gitlab_edited(|e| {
                e["target"].as_object_mut().unwrap().remove("digest");
            }),
            "events[].target.digest",
        ),
        (
            gitlab_edited(|e| e["target"]["repository"] = json!("Root/../x")),
            "events[].target.repository",
        ),
        (
            gitlab_edited(|e| {
                e["target"].as_object_mut().unwrap().remove("repository");
            }),
            "events[].target.repository",
        ),
        (
            gitlab_edited(|e| e["request"]["host"] = json!("evil host")),
            "events[].target.repository",
        ),
        (
            gitlab_edited(|e| {
                e.as_object_mut().unwrap().remove("target");
            }),
            "events[].target",
        ),
        (
            gitlab_edited(|e| e["target"]["tag"] = json!(5)),
            "shape of a registry notification",
        ),
        (
            json!({"events": vec![json!({"action": "pull"}); 101]}).to_string(),
            "at most 100",
        ),
    ];
    for (body, expected) in cases {
        let error = malformed(&body).to_string();
        assert!(error.contains(expected), "{error} ∌ {expected}");
        assert!(error.len() < 400, "{error}");
    }
}
