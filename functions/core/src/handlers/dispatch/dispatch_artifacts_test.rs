//! Dispatch of artifact events: which objects are read and triggered, through Receivers or
//! by annotation, with the same coalescing, supersession and per-target retries as Git
//! pushes.

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::*;
use crate::artifacts::PushedArtifact;
use crate::flux::artifacts::ArtifactKind;
use crate::gitlab::Delivery;
use crate::handlers::plan::tests::{entry, receiver};
use crate::oci::OciLocation;
use crate::push::tests::sample_push;
use crate::push::{Push, PushEvent};
use crate::testing::{FakeCluster, MemorySettle, StaticRegistry, TestClock, status};

const DIGEST: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_763_800_000).unwrap()
}

fn artifact(reference: &str, tag: &str, request: &str) -> Push {
    PushedArtifact::new(
        OciLocation::parse(reference, crate::oci::ReferenceForm::Image).unwrap(),
        tag,
        DIGEST,
        ("tag", "digest"),
    )
    .unwrap()
    .into_push(&Delivery {
        received_at: &crate::ingest::rfc3339(now() - time::Duration::seconds(30)),
        id: request,
    })
}

fn message(id: &str, push: Push) -> QueueMessage {
    let dispatch = Dispatch::new("prod", push);
    QueueMessage {
        id: id.into(),
        source: "dispatch".into(),
        receipt: format!("receipt-{id}"),
        group: "prod".into(),
        body: dispatch.to_json(),
        receive_count: 1,
    }
}

fn object(name: &str, spec: Value) -> Value {
    json!({"metadata": {"name": name, "namespace": "flux-system", "labels": {"team": "a"}}, "spec": spec})
}

/// OCIRepositories of registry.example.com/team/app (tag, semver, digest-pinned, another
/// repository), an OCI Helm chart with its chart and release, and an ImageRepository.
fn cluster() -> FakeCluster {
    let cluster = FakeCluster::default();
    cluster.artifacts.lock().unwrap().extend([
        (ArtifactKind::OciRepository, object("by-tag", json!({"url": "oci://registry.example.com/team/app", "ref": {"tag": "v1.2.0"}}))),
        (ArtifactKind::OciRepository, object("by-range", json!({"url": "oci://registry.example.com/team/app", "ref": {"semver": "1.x"}}))),
        (ArtifactKind::OciRepository, object("old-range", json!({"url": "oci://registry.example.com/team/app", "ref": {"semver": "0.x"}}))),
        (ArtifactKind::OciRepository, object("pinned", json!({"url": "oci://registry.example.com/team/app", "ref": {"digest": DIGEST}}))),
        (ArtifactKind::OciRepository, object("other", json!({"url": "oci://registry.example.com/team/other", "ref": {"tag": "v1.2.0"}}))),
        (ArtifactKind::HelmRepository, object("charts", json!({"type": "oci", "url": "oci://registry.example.com/team/charts"}))),
        (ArtifactKind::HelmChart, object("app-chart", json!({"chart": "app", "version": ">=1.0.0", "sourceRef": {"kind": "HelmRepository", "name": "charts"}}))),
        (ArtifactKind::HelmRelease, object("app-release", json!({"chart": {"spec": {"chart": "app", "sourceRef": {"kind": "HelmRepository", "name": "charts"}}}}))),
        (ArtifactKind::ImageRepository, object("image", json!({"image": "registry.example.com/team/app"}))),
    ]);
    cluster
}

fn registry(trigger: Value, extra: Value) -> StaticRegistry {
    let mut spec = json!({"trigger": trigger});
    for (key, value) in extra.as_object().unwrap() {
        spec[key] = value.clone();
    }
    StaticRegistry {
        entries: vec![entry(spec)],
        ..Default::default()
    }
}

fn annotate_all_kinds() -> StaticRegistry {
    registry(
        json!({"mode": "annotate", "artifact_kinds": ["OCIRepository", "HelmRepository", "HelmChart", "HelmRelease", "ImageRepository"]}),
        json!({}),
    )
}

async fn run(
    registry: &StaticRegistry,
    cluster: &FakeCluster,
    messages: &[QueueMessage],
) -> (DispatchReport, MemorySettle) {
    let queue = MemorySettle::default();
    let ports = DispatchPorts {
        registry,
        clusters: cluster,
        queue: &queue,
        clock: &TestClock::default(),
        gitlab: &crate::ports::NoGitLab,
    };
    let report = handle_dispatch(
        &ports,
        &DispatchRules::default(),
        &DispatchMemory::default(),
        messages,
        now(),
    )
    .await;
    (report, queue)
}

fn patched(cluster: &FakeCluster) -> Vec<String> {
    let mut names: Vec<String> = cluster
        .patched_objects
        .lock()
        .unwrap()
        .iter()
        .map(|(_, kind, object, _)| format!("{}/{}", kind.object_prefix(), object.name))
        .collect();
    names.sort();
    names
}

fn lists(cluster: &FakeCluster) -> Vec<String> {
    cluster
        .lists
        .lock()
        .unwrap()
        .iter()
        .map(|(_, what, _)| what.clone())
        .collect()
}

#[tokio::test]
async fn a_tag_push_annotates_exactly_the_sources_whose_ref_takes_it() {
    let cluster = cluster();
    let (report, queue) = run(
        &annotate_all_kinds(),
        &cluster,
        &[message(
            "m1",
            artifact("registry.example.com/team/app", "v1.2.0", "request:1"),
        )],
    )
    .await;
    assert_eq!(
        patched(&cluster),
        [
            "imagerepository/image",
            "ocirepository/by-range",
            "ocirepository/by-tag"
        ]
    );
    assert!(matches!(
        report.messages[0].verdict,
        Verdict::Delivered { .. }
    ));
    let skipped: Vec<(&str, &str)> = report.messages[0]
        .skipped
        .iter()
        .map(|s| (s.object.as_str(), s.reason.as_str()))
        .collect();
    for (object, reason) in [
        ("ocirepository/flux-system/pinned", "pinned to a digest"),
        (
            "ocirepository/flux-system/old-range",
            "not in its semver range `0.x`",
        ),
        (
            "ocirepository/flux-system/other",
            "names `registry.example.com/team/other`",
        ),
    ] {
        assert!(
            skipped
                .iter()
                .any(|(o, r)| *o == object && r.contains(reason)),
            "{object}: {skipped:?}"
        );
    }
    // The patch is the same annotation `flux reconcile` sets.
    let body = cluster.patched_objects.lock().unwrap()[0].3.clone();
    assert!(
        String::from_utf8(body)
            .unwrap()
            .contains("reconcile.fluxcd.io/requestedAt")
    );
    // Only the artifact kinds are read: no GitRepository list for an artifact event.
    let listed = lists(&cluster);
    assert!(
        listed.iter().all(|l| !l.starts_with("gitrepositories")),
        "{listed:?}"
    );
    assert!(listed.contains(&"ocirepositories/flux-system".to_string()));
    assert_eq!(*queue.acknowledged.lock().unwrap(), vec!["m1".to_string()]);
}

#[tokio::test]
async fn an_oci_chart_push_annotates_its_charts_and_releases_never_the_helm_repository() {
    let cluster = cluster();
    let (report, _) = run(
        &annotate_all_kinds(),
        &cluster,
        &[message(
            "m1",
            artifact("registry.example.com/team/charts/app", "1.4.0", "request:1"),
        )],
    )
    .await;
    assert_eq!(
        patched(&cluster),
        ["helmchart/app-chart", "helmrelease/app-release"]
    );
    assert!(
        report.messages[0]
            .skipped
            .iter()
            .any(|s| s.object == "helmrepository/flux-system/charts"
                && s.reason.contains("never reconciles"))
    );
}

#[tokio::test]
async fn receivers_that_list_the_kind_are_called_once_per_repository_and_tag() {
    let cluster = cluster();
    cluster.receivers.lock().unwrap().extend([
        receiver(
            "oci",
            "generic",
            "t-oci",
            json!([{"kind": "OCIRepository", "name": "*", "matchLabels": {"team": "a"}}]),
        ),
        receiver(
            "git",
            "generic",
            "t-git",
            json!([{"kind": "GitRepository", "name": "*"}]),
        ),
    ]);
    let registry = registry(json!({"artifact_kinds": ["OCIRepository"]}), json!({}));
    // Two pushes of one tag (a registry's retry, a second notification) and one of another.
    let first = artifact("registry.example.com/team/app", "v1.2.0", "request:1");
    let mut again = artifact("registry.example.com/team/app", "v1.2.0", "request:2");
    again.received_at = crate::ingest::rfc3339(now() - time::Duration::seconds(10));
    let other = artifact("registry.example.com/team/other", "v1.2.0", "request:3");
    let (report, _) = run(
        &registry,
        &cluster,
        &[
            message("m1", first.clone()),
            message("m2", again.clone()),
            message("m3", other),
        ],
    )
    .await;
    let sent = cluster.sent_paths();
    // One call for team/app (the newer push carries it), one for team/other; the git
    // Receiver selects no OCIRepository.
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent.iter().all(
        |path| path.ends_with(&crate::matching::select::webhook_path(
            "t-oci",
            "oci",
            "flux-system"
        ))
    ));
    assert_eq!(
        report.messages[0].verdict,
        Verdict::Superseded {
            by: again.key.clone()
        }
    );
    assert!(matches!(
        report.messages[1].verdict,
        Verdict::Delivered { .. }
    ));
    assert!(matches!(
        report.messages[2].verdict,
        Verdict::Delivered { .. }
    ));
    // The body names the artifact for the Receiver's CEL filters.
    let (_, request) = cluster.sent.lock().unwrap()[0].clone();
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["object_kind"], "artifact_push");
    assert!(
        body["project"]["web_url"]
            .as_str()
            .unwrap()
            .starts_with("oci://registry.example.com/team/")
    );
    assert_eq!(body["ref"], "v1.2.0");
}

#[tokio::test]
async fn a_matching_source_no_receiver_selects_is_a_skip_that_says_what_to_add() {
    let cluster = cluster();
    cluster.receivers.lock().unwrap().push(receiver(
        "git",
        "generic",
        "t-git",
        json!([{"kind": "GitRepository", "name": "*"}]),
    ));
    let registry = registry(json!({"artifact_kinds": ["OCIRepository"]}), json!({}));
    let (report, _) = run(
        &registry,
        &cluster,
        &[message(
            "m1",
            artifact("registry.example.com/team/app", "v1.2.0", "request:1"),
        )],
    )
    .await;
    assert_eq!(report.messages[0].verdict, Verdict::NothingToTrigger);
    assert!(report.messages[0].skipped.iter().any(|s| {
        s.object == "ocirepository/flux-system/by-tag"
            && s.reason
                .contains("add kind OCIRepository to a Receiver's resources")
    }));
}

#[tokio::test]
async fn a_successful_pipeline_annotates_the_projects_sources_and_no_other() {
    let cluster = cluster();
    let registry = registry(
        json!({"mode": "annotate", "artifact_kinds": ["OCIRepository", "ImageRepository"]}),
        json!({"subscriptions": [{"on": "pipeline", "projects": ["team/*"], "registry": "registry.example.com"}]}),
    );
    let mut pipeline = sample_push();
    pipeline.event = PushEvent::Pipeline;
    pipeline.project.path = "team/app".into();
    let (report, _) = run(&registry, &cluster, &[message("m1", pipeline)]).await;
    // Every source under registry.example.com/team/app but the digest pin.
    assert_eq!(
        patched(&cluster),
        [
            "imagerepository/image",
            "ocirepository/by-range",
            "ocirepository/by-tag",
            "ocirepository/old-range"
        ]
    );
    assert!(matches!(
        report.messages[0].verdict,
        Verdict::Delivered { .. }
    ));
}

#[tokio::test]
async fn an_entry_without_artifact_kinds_reads_nothing_and_says_why() {
    let cluster = cluster();
    let registry = registry(json!({"mode": "annotate"}), json!({}));
    let (report, _) = run(
        &registry,
        &cluster,
        &[message(
            "m1",
            artifact("registry.example.com/team/app", "v1.2.0", "request:1"),
        )],
    )
    .await;
    assert_eq!(report.messages[0].verdict, Verdict::NothingToTrigger);
    assert!(
        report.messages[0]
            .skipped
            .iter()
            .any(|s| s.reason.contains("trigger.artifact_kinds is empty"))
    );
    assert!(lists(&cluster).is_empty(), "{:?}", lists(&cluster));
    // And a Git push to an entry with artifact kinds lists no artifact kind.
    let fresh = cluster_for_retry();
    let (_, _) = run(
        &annotate_all_kinds(),
        &fresh,
        &[message("m2", sample_push())],
    )
    .await;
    assert_eq!(lists(&fresh), ["gitrepositories/flux-system"]);
}

#[tokio::test]
async fn a_failed_annotation_is_retried_for_that_object_alone() {
    let cluster = cluster();
    cluster.answer(
        "patch:ocirepository/flux-system/by-tag",
        vec![Ok(status(503))],
    );
    let (report, queue) = run(
        &annotate_all_kinds(),
        &cluster,
        &[message(
            "m1",
            artifact("registry.example.com/team/app", "v1.2.0", "request:1"),
        )],
    )
    .await;
    let Verdict::Retry(plan) = &report.messages[0].verdict else {
        panic!("{:?}", report.messages[0].verdict);
    };
    assert!(
        plan.reason
            .contains("patch ocirepositories flux-system/by-tag"),
        "{}",
        plan.reason
    );
    let retry = queue.scheduled.lock().unwrap()[0].0.clone();
    assert_eq!(
        retry.only,
        Some(vec!["ocirepository/flux-system/by-tag".to_string()])
    );
    // The retry patches only that object.
    let retried = cluster_for_retry();
    let mut message = message("m2", retry.push.clone());
    message.body = retry.to_json();
    let (report, _) = run(&annotate_all_kinds(), &retried, &[message]).await;
    assert_eq!(patched(&retried), ["ocirepository/by-tag"]);
    assert!(matches!(
        report.messages[0].verdict,
        Verdict::Delivered { .. }
    ));
}

fn cluster_for_retry() -> FakeCluster {
    cluster()
}
