use super::*;
use crate::push::Push;

const DELIVERY: Delivery<'static> = Delivery {
    received_at: "2026-11-22T03:00:00Z",
    id: "request:r-1",
};

fn artifact(registry: &str, repository: &str, tag: &str) -> PushedArtifact {
    PushedArtifact::new(
        OciLocation::from_parts(registry, repository).unwrap(),
        tag,
        &format!("sha256:{}", "a".repeat(64)),
        ("tag", "digest"),
    )
    .unwrap()
}

#[test]
fn an_artifact_push_round_trips_through_the_queue_message() {
    let pushed = artifact("registry.example.com:5000", "team/app", "v1.2.3");
    let push = pushed.clone().into_push(&DELIVERY);
    let back = Push::from_json(&push.to_json()).unwrap();
    assert_eq!(back, push);
    assert_eq!(back.artifact(), Some(pushed));
    assert!(!push.is_deletion());
    assert!(!push.is_branch_deletion());
    assert_eq!(push.short_ref(), "v1.2.3");
}

#[test]
fn each_repository_has_its_own_stable_id_and_key() {
    let a = artifact("r.example", "team/app", "v1").into_push(&DELIVERY);
    let b = artifact("r.example", "team/other", "v1").into_push(&DELIVERY);
    let c = artifact("r.example:5000", "team/app", "v1").into_push(&DELIVERY);
    assert_ne!(a.project.id, b.project.id);
    assert_ne!(a.project.id, c.project.id);
    assert_ne!(a.key, b.key);
    assert_eq!(
        a.project.id,
        artifact("r.example", "team/app", "v2")
            .into_push(&DELIVERY)
            .project
            .id
    );
    // printf 'oci|r.example/team/app' | sha256sum → first 8 bytes, top bit cleared.
    assert_eq!(
        a.project.id,
        repository_id(&OciLocation::from_parts("r.example", "team/app").unwrap())
    );
    assert!(a.project.id < 1 << 63);
}

#[test]
fn only_an_artifact_push_carries_an_artifact() {
    let git = crate::push::tests::sample_push();
    assert_eq!(git.artifact(), None);
    let mut forged = artifact("r.example", "a", "v1").into_push(&DELIVERY);
    forged.instance = "https://r.example".into();
    assert_eq!(forged.artifact(), None);
    forged.instance = "oci://bad host".into();
    assert_eq!(forged.artifact(), None);
}

#[test]
fn tags_and_digests_are_checked() {
    let location = OciLocation::from_parts("r.example", "a").unwrap();
    let digest = format!("sha256:{}", "b".repeat(64));
    assert!(PushedArtifact::new(location.clone(), "v1", &digest, ("t", "d")).is_ok());
    for (tag, digest, field) in [
        ("", digest.as_str(), "t"),
        ("v1+meta", digest.as_str(), "t"),
        ("v1", "", "d"),
        ("v1", "sha256", "d"),
    ] {
        let error = PushedArtifact::new(location.clone(), tag, digest, ("t", "d")).unwrap_err();
        assert!(
            error.to_string().starts_with(&format!("field {field}:")),
            "{error}"
        );
    }
}

#[test]
fn event_ids_become_delivery_ids_only_when_plausible() {
    assert_eq!(event_delivery("x", Some("abc")), Some("x:abc".to_string()));
    let long = "a".repeat(129);
    for bad in [None, Some(""), Some("a b"), Some("é"), Some(long.as_str())] {
        assert_eq!(event_delivery("x", bad), None, "{bad:?}");
    }
}
