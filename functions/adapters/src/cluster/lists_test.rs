//! The weight the cache counts for a list: at least the text its objects hold, and less
//! than the JSON they were read from (most of which, `managedFields` above all, is dropped).
#![allow(clippy::unwrap_used)]

use serde_json::json;

use super::*;

/// A GitRepository as the apiserver serves it.
fn served_git_repository(n: usize) -> Value {
    json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {
            "name": format!("app-{n}"),
            "namespace": "flux-system",
            "labels": {"app": format!("app-{n}"), "team": "platform"},
            "uid": "0b8c1a52-3f1e-4d7a-9f55-1c2d3e4f5a6b",
            "resourceVersion": "123456",
            "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "managedFields": [{
                "apiVersion": "source.toolkit.fluxcd.io/v1",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {".": {}, "f:interval": {}, "f:ref": {".": {}, "f:branch": {}}, "f:url": {}}},
                "manager": "kubectl-client-side-apply",
                "operation": "Update",
                "time": "2026-01-01T00:00:00Z"
            }]
        },
        "spec": {
            "url": format!("https://gitlab.example.com/team/app-{n}.git"),
            "ref": {"branch": "main"},
            "interval": "1h"
        },
        "status": {
            "artifact": {"revision": "main@sha1:0123456789abcdef0123456789abcdef01234567"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded",
                            "message": "stored artifact for revision 'main@sha1:0123456789abcdef'",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}]
        }
    })
}

#[test]
fn a_list_weighs_its_text_and_about_its_json() {
    let served: Vec<Value> = (0..100).map(served_git_repository).collect();
    let json_bytes = serde_json::to_vec(&served).unwrap().len();
    let items: Arc<[GitRepository]> = served
        .iter()
        .map(|item| GitRepository::from_item(FluxKind::GitRepositories, item))
        .collect();
    let text: usize = items
        .iter()
        .map(|repository| {
            repository.id.namespace.len()
                + repository.id.name.len()
                + repository.url.as_deref().unwrap_or_default().len()
                + repository
                    .artifact_revision
                    .as_deref()
                    .unwrap_or_default()
                    .len()
                + repository
                    .labels
                    .iter()
                    .map(|(key, value)| key.len() + value.len())
                    .sum::<usize>()
        })
        .sum();
    let weight = list_bytes(&items);
    assert!(weight > text + size_of_val(&*items), "{weight} vs {text}");
    // These objects are small (served JSON of real ones is several times larger, mostly
    // fields fluxrelay does not keep); even so the parsed list stays near its JSON, and a
    // hit copies neither.
    assert!(
        weight < json_bytes * 3 / 2,
        "{weight} vs {json_bytes} bytes of JSON"
    );
}

#[test]
fn a_receiver_counts_its_resources_and_events() {
    let bare = Receiver::from_item(
        FluxKind::Receivers,
        &json!({"metadata": {"name": "r", "namespace": "ns"}}),
    );
    let full = Receiver::from_item(
        FluxKind::Receivers,
        &json!({
            "metadata": {"name": "r", "namespace": "ns"},
            "spec": {
                "type": "gitlab",
                "events": ["Push Hook", "Tag Push Hook"],
                "resources": [{"kind": "GitRepository", "name": "*", "matchLabels": {"team": "platform"}}]
            },
            "status": {"webhookPath": "/hook/0123456789abcdef"}
        }),
    );
    assert!(full.heap_bytes() > bare.heap_bytes() + "Push HookTag Push Hook".len());
    assert_eq!(bare.heap_bytes(), "rns".len());
}

#[test]
fn an_artifact_object_counts_its_spec_and_status() {
    use fluxrelay_core::flux::artifacts::{ArtifactKind, ArtifactObject};
    let kind = FluxKind::Artifacts(ArtifactKind::OciRepository);
    let bare =
        ArtifactObject::from_item(kind, &json!({"metadata": {"name": "o", "namespace": "ns"}}));
    assert_eq!(bare.kind, ArtifactKind::OciRepository);
    assert_eq!(bare.heap_bytes(), "ons".len());
    let url = "oci://ghcr.io/stefanprodan/manifests/podinfo";
    let full = ArtifactObject::from_item(
        kind,
        &json!({"metadata": {"name": "o", "namespace": "ns"},
                "spec": {"url": url, "ref": {"semver": ">=6.0.0"}},
                "status": {"artifact": {"revision": "6.1.0@sha256:abc"}}}),
    );
    assert!(full.heap_bytes() >= bare.heap_bytes() + url.len() + ">=6.0.0".len());
    let image = ArtifactObject::from_item(
        FluxKind::Artifacts(ArtifactKind::ImageRepository),
        &json!({"spec": {"image": "ghcr.io/a/b", "exclusionList": ["^x$"]}}),
    );
    assert_eq!(image.kind, ArtifactKind::ImageRepository);
    assert!(image.heap_bytes() >= "ghcr.io/a/b^x$".len());
}
