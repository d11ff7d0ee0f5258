//! `fluxrelay serve` and artifact triggers end to end: the real binary receives the
//! registries' and GitLab's documented payloads over HTTP (a GitLab container registry
//! notification, a Harbor webhook, GitLab pipeline hooks), and the OCIRepositories,
//! HelmCharts, HelmReleases and ImageRepositories they concern are annotated on a real
//! kube-apiserver, or their Receiver is called through its service proxy; nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{
    CLUSTER, Cluster, Metrics, NAMESPACE, Serve, TempDir, WEBHOOK_TOKEN, http_client, repo_root,
    write_config,
};
use fluxrelay_testkit::netns;
use fluxrelay_testkit::receiver::ReceiverSpec;
use serde_json::{Value, json};

const REGISTRY: &str = "registry.example.com";
const DIGEST: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";
const REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";

/// (API version, plural, name) of each object the tests create.
type Object = (&'static str, &'static str, &'static str);
const OCI: &str = "source.toolkit.fluxcd.io/v1";
const SOURCES: [Object; 10] = [
    (OCI, "ocirepositories", "by-tag"),
    (OCI, "ocirepositories", "by-range"),
    (OCI, "ocirepositories", "old-range"),
    (OCI, "ocirepositories", "pinned"),
    (OCI, "ocirepositories", "other"),
    (OCI, "ocirepositories", "aliased"),
    (OCI, "helmrepositories", "charts"),
    (OCI, "helmcharts", "app-chart"),
    ("helm.toolkit.fluxcd.io/v2", "helmreleases", "app-release"),
    (
        "image.toolkit.fluxcd.io/v1",
        "imagerepositories",
        "app-image",
    ),
];

fn fixture(path: &str) -> Value {
    let file = repo_root().join("functions/core/tests/fixtures").join(path);
    serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap()
}

/// The sources of `registry.example.com/team/app` (by tag, by range, an old range, pinned to
/// a digest, and one written with the registry's internal name), another repository, an
/// OCI Helm chart repository with a HelmChart and a HelmRelease, and an ImageRepository.
async fn apply_sources(cluster: &Cluster) {
    let object = |api: &str, kind: &str, name: &str, spec: Value| {
        json!({"apiVersion": api, "kind": kind,
               "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"fluxrelay.io/trigger": "true"}},
               "spec": spec})
        .to_string()
    };
    let app = format!("oci://{REGISTRY}/team/app");
    for manifest in [
        object(
            OCI,
            "OCIRepository",
            "by-tag",
            json!({"interval": "10m", "url": app, "ref": {"tag": "v1.2.0"}}),
        ),
        object(
            OCI,
            "OCIRepository",
            "by-range",
            json!({"interval": "10m", "url": app, "ref": {"semver": ">=1.0.0 <2.0.0"}}),
        ),
        object(
            OCI,
            "OCIRepository",
            "old-range",
            json!({"interval": "10m", "url": app, "ref": {"semver": "0.x"}}),
        ),
        object(
            OCI,
            "OCIRepository",
            "pinned",
            json!({"interval": "10m", "url": app, "ref": {"digest": DIGEST}}),
        ),
        object(
            OCI,
            "OCIRepository",
            "other",
            json!({"interval": "10m", "url": format!("oci://{REGISTRY}/team/other"), "ref": {"tag": "v1.2.0"}}),
        ),
        object(
            OCI,
            "OCIRepository",
            "aliased",
            json!({"interval": "10m", "url": "oci://registry.internal:5000/team/app", "ref": {"tag": "v1.2.0"}}),
        ),
        object(
            OCI,
            "HelmRepository",
            "charts",
            json!({"type": "oci", "interval": "10m", "url": format!("oci://{REGISTRY}/team/charts")}),
        ),
        object(
            OCI,
            "HelmChart",
            "app-chart",
            json!({"interval": "10m", "chart": "app", "version": ">=1.0.0", "sourceRef": {"kind": "HelmRepository", "name": "charts"}}),
        ),
        object(
            "helm.toolkit.fluxcd.io/v2",
            "HelmRelease",
            "app-release",
            json!({"interval": "10m", "chart": {"spec": {"chart": "app", "version": "1.x", "sourceRef": {"kind": "HelmRepository", "name": "charts"}}}}),
        ),
        object(
            "image.toolkit.fluxcd.io/v1",
            "ImageRepository",
            "app-image",
            json!({"interval": "10m", "image": format!("{REGISTRY}/team/app")}),
        ),
    ] {
        cluster.kube.apply(&manifest).await;
    }
}

/// `reconcile.fluxcd.io/requestedAt` of every source, by name (absent: never triggered).
async fn requested(cluster: &Cluster) -> BTreeMap<&'static str, String> {
    let mut found = BTreeMap::new();
    for (api, plural, name) in SOURCES {
        let object = cluster.kube.get_json(api, plural, NAMESPACE, name).await;
        if let Some(at) = object["metadata"]["annotations"][REQUESTED_AT].as_str() {
            found.insert(name, at.to_string());
        }
    }
    found
}

fn names(map: &BTreeMap<&'static str, String>) -> Vec<&'static str> {
    map.keys().copied().collect()
}

/// The names whose annotation changed (or appeared) between two reads.
fn changed(
    before: &BTreeMap<&'static str, String>,
    after: &BTreeMap<&'static str, String>,
) -> Vec<&'static str> {
    after
        .iter()
        .filter(|(name, at)| before.get(*name) != Some(*at))
        .map(|(name, _)| *name)
        .collect()
}

/// The entry: annotate mode, every artifact kind, the registry's internal name as an alias,
/// and pushes of the registry plus successful pipelines of `team/*` projects.
fn annotate_entry(cluster: &Cluster) -> Value {
    let mut entry = cluster.entry(&[]);
    entry["trigger"] = json!({
        "mode": "annotate",
        "artifact_kinds": ["OCIRepository", "HelmRepository", "HelmChart", "HelmRelease", "ImageRepository"],
        "registry_aliases": {"registry.internal:5000": REGISTRY}
    });
    entry["subscriptions"] = json!([
        {"registries": [REGISTRY]},
        {"on": "pipeline", "projects": ["team/*"], "refs": ["main"], "registry": REGISTRY}
    ]);
    entry
}

async fn start(cluster: &Cluster, entry: Value, dir: &TempDir) -> Serve {
    cluster
        .kube
        .apply(&std::fs::read_to_string(repo_root().join("infra/rbac-artifacts.yaml")).unwrap())
        .await;
    apply_sources(cluster).await;
    let config = write_config(dir.path(), &[entry], "");
    Serve::start(&config, &[]).await
}

async fn post_to(
    serve: &Serve,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, Value) {
    let mut request = http_client()
        .post(serve.url(path))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// GitLab's documented container registry notification, as a push of `repository:tag`.
fn registry_push(repository: &str, tag: &str) -> Value {
    let mut body = fixture("registry/gitlab-registry-manifest-push.json");
    let event = &mut body["events"][0];
    event["id"] = json!(format!("event-{repository}-{tag}"));
    event["request"]["host"] = json!(REGISTRY);
    event["target"]["repository"] = json!(repository);
    event["target"]["tag"] = json!(tag);
    event["target"]["digest"] = json!(DIGEST);
    body
}

/// Harbor's documented Default payload, as a push of `repository:tag`.
fn harbor_push(repository: &str, tag: &str) -> Value {
    let mut body = fixture("harbor/push-artifact-default-by-tag.json");
    let resource = &mut body["event_data"]["resources"][0];
    resource["tag"] = json!(tag);
    resource["digest"] = json!(DIGEST);
    resource["resource_url"] = json!(format!("{REGISTRY}/{repository}:{tag}"));
    body["event_data"]["repository"]["repo_full_name"] = json!(repository);
    body
}

/// GitLab's documented Pipeline Hook, for project `team/app` on main, with `status`.
fn pipeline(status: &str) -> Value {
    let mut body = fixture("gitlab/pipeline_hook.json");
    body["object_attributes"]["status"] = json!(status);
    body["object_attributes"]["ref"] = json!("main");
    body["project"]["path_with_namespace"] = json!("team/app");
    body["project"]["web_url"] = json!("https://gitlab.example.com/team/app");
    body
}

fn bearer() -> String {
    format!("Bearer {WEBHOOK_TOKEN}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_pushes_and_pipelines_annotate_exactly_the_sources_they_concern() {
    if !netns::enter("registry_pushes_and_pipelines_annotate_exactly_the_sources_they_concern") {
        return;
    }
    let cluster = Cluster::start().await;
    let dir = TempDir::new("serve-artifacts");
    let serve = start(&cluster, annotate_entry(&cluster), &dir).await;

    // A tag pushed to GitLab's container registry: the sources whose ref takes v1.2.0,
    // the one written with the registry's other name included; not the digest pin, the
    // 0.x range or another repository.
    let (status, body) = post_to(
        &serve,
        "/registry/distribution",
        &[("authorization", &bearer())],
        &registry_push("team/app", "v1.2.0"),
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("accepted")),
        "{body}"
    );
    eventually!(
        Duration::from_secs(20),
        "the image push is dispatched",
        requested(&cluster).await.len() >= 4
    );
    // Longer than an idle worker's poll: anything else it would annotate is annotated.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after_push = requested(&cluster).await;
    assert_eq!(
        names(&after_push),
        ["aliased", "app-image", "by-range", "by-tag"],
        "{}",
        serve.log_text()
    );

    // An OCI Helm chart pushed to Harbor: the HelmChart and HelmRelease that take it, never
    // the HelmRepository.
    let (status, body) = post_to(
        &serve,
        "/registry/harbor",
        &[("authorization", WEBHOOK_TOKEN)],
        &harbor_push("team/charts/app", "1.4.0"),
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("accepted")),
        "{body}"
    );
    eventually!(
        Duration::from_secs(20),
        "the chart push is dispatched",
        requested(&cluster).await.len() >= 6
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after_chart = requested(&cluster).await;
    assert_eq!(
        changed(&after_push, &after_chart),
        ["app-chart", "app-release"]
    );

    // A failed pipeline triggers nothing; a wrong registry token is refused.
    let headers = [
        ("x-gitlab-event", "Pipeline Hook"),
        ("x-gitlab-token", WEBHOOK_TOKEN),
    ];
    let (status, body) = post_to(&serve, "/webhook", &headers, &pipeline("failed")).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("ignored")),
        "{body}"
    );
    let (status, _) = post_to(
        &serve,
        "/registry/distribution",
        &[("authorization", "Bearer not-the-token")],
        &registry_push("team/app", "v1.3.0"),
    )
    .await;
    assert_eq!(status, 401);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        requested(&cluster).await,
        after_chart,
        "nothing more was triggered"
    );

    // A successful pipeline of team/app on main: every source under the project's path in
    // its registry (whichever tag the pipeline published), but the digest pin.
    let (status, body) = post_to(&serve, "/webhook", &headers, &pipeline("success")).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("accepted")),
        "{body}"
    );
    eventually!(
        Duration::from_secs(20),
        "the pipeline is dispatched",
        changed(&after_chart, &requested(&cluster).await).len() >= 5
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        changed(&after_chart, &requested(&cluster).await),
        ["aliased", "app-image", "by-range", "by-tag", "old-range"]
    );

    let metrics = Metrics::scrape(&serve).await;
    let delivered = [("cluster", CLUSTER), ("outcome", "delivered")];
    assert_eq!(
        metrics.value("fluxrelay_dispatches_total", &delivered),
        3.0,
        "{}",
        metrics.text
    );
    assert_eq!(metrics.dead_letters(), 0.0, "{}", metrics.text);
    assert!(
        !serve.log_text().contains(WEBHOOK_TOKEN),
        "a secret is in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_lists_oci_repositories_is_called_only_for_a_tag_they_take() {
    if !netns::enter("a_receiver_that_lists_oci_repositories_is_called_only_for_a_tag_they_take") {
        return;
    }
    let cluster = Cluster::start().await;
    let token = "oci-receiver-token";
    let path = cluster.receiver.upsert(ReceiverSpec {
        namespace: NAMESPACE.into(),
        name: "oci".into(),
        receiver_type: "generic-hmac".into(),
        token: token.into(),
        events: Vec::new(),
        suspended: false,
        ready: true,
    });
    cluster
        .kube
        .apply(
            &json!({
                "apiVersion": "notification.toolkit.fluxcd.io/v1", "kind": "Receiver",
                "metadata": {"name": "oci", "namespace": NAMESPACE},
                "spec": {"type": "generic-hmac", "secretRef": {"name": "oci-token"},
                         "resources": [{"apiVersion": OCI, "kind": "OCIRepository", "name": "*",
                                        "matchLabels": {"fluxrelay.io/trigger": "true"}}]}
            })
            .to_string(),
        )
        .await;
    cluster
        .kube
        .patch_status("notification.toolkit.fluxcd.io/v1", "receivers", NAMESPACE, "oci", json!({
            "webhookPath": path,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded", "message": "ok",
                            "lastTransitionTime": "2026-11-22T00:00:00Z"}]
        }))
        .await;
    let mut entry = cluster.entry(&[("oci", token)]);
    entry["trigger"]["artifact_kinds"] = json!(["OCIRepository"]);
    let dir = TempDir::new("serve-artifacts-receiver");
    let serve = start(&cluster, entry, &dir).await;

    // v9.0.0: no source's ref takes it (by-tag wants v1.2.0, the ranges 1.x and 0.x).
    let (status, body) = post_to(
        &serve,
        "/registry/distribution",
        &[("authorization", &bearer())],
        &registry_push("team/app", "v9.0.0"),
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("accepted")),
        "{body}"
    );
    // v1.5.0: the 1.x range takes it; the Receiver is called once for the push.
    let (status, _) = post_to(
        &serve,
        "/registry/distribution",
        &[("authorization", &bearer())],
        &registry_push("team/app", "v1.5.0"),
    )
    .await;
    assert_eq!(status, 202);
    eventually!(
        Duration::from_secs(20),
        "the OCI Receiver is hit",
        !cluster.receiver.accepted(NAMESPACE, "oci").is_empty()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let hits = cluster.receiver.accepted(NAMESPACE, "oci");
    assert_eq!(hits.len(), 1, "{:?}", cluster.receiver.hits());
    let sent: Value = serde_json::from_slice(&hits[0].body).unwrap();
    assert_eq!(sent["object_kind"], "artifact_push");
    assert_eq!(sent["ref"], "v1.5.0");
    assert_eq!(
        sent["project"]["web_url"],
        format!("oci://{REGISTRY}/team/app")
    );
    assert!(hits[0].headers.get("authorization").is_none());
    // Receiver mode annotates nothing itself.
    assert!(requested(&cluster).await.is_empty());
}
