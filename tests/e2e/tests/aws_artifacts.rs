//! Artifact triggers through the AWS path: the ingest function's registry endpoints and
//! GitLab pipeline hooks, and Amazon ECR's EventBridge event put straight on intake.fifo,
//! through route and dispatch on moto, to OCIRepositories, HelmCharts, HelmReleases and
//! ImageRepositories annotated on a real kube-apiserver (in a private network namespace).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use fluxrelay_e2e::pipeline::{Pipeline, SAMPLE_WEBHOOK_TOKEN, repo_root};
use fluxrelay_testkit::netns;
use serde_json::{Value, json};

const REGISTRY: &str = "registry.example.com";
/// The registry of AWS's documented `ECR Image Action` event (account and region).
const ECR: &str = "123456789012.dkr.ecr.us-west-2.amazonaws.com";
const DIGEST: &str = "sha256:4444444444444444444444444444444444444444444444444444444444444444";
const OCI: &str = "source.toolkit.fluxcd.io/v1";

type Object = (&'static str, &'static str, &'static str);
const SOURCES: [Object; 9] = [
    (OCI, "ocirepositories", "by-tag"),
    (OCI, "ocirepositories", "by-range"),
    (OCI, "ocirepositories", "pinned"),
    (OCI, "ocirepositories", "other"),
    (OCI, "ocirepositories", "ecr-latest"),
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
    serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
}

async fn apply_sources(p: &Pipeline) {
    p.kube
        .apply(&std::fs::read_to_string(repo_root().join("infra/rbac-artifacts.yaml")).unwrap())
        .await;
    let object = |api: &str, kind: &str, name: &str, spec: Value| {
        json!({"apiVersion": api, "kind": kind,
               "metadata": {"name": name, "namespace": "flux-system"}, "spec": spec})
        .to_string()
    };
    let app = format!("oci://{REGISTRY}/team/app");
    for manifest in [
        object(
            OCI,
            "OCIRepository",
            "by-tag",
            json!({"url": app, "ref": {"tag": "v2.0.0"}}),
        ),
        object(
            OCI,
            "OCIRepository",
            "by-range",
            json!({"url": app, "ref": {"semver": "2.x"}}),
        ),
        object(
            OCI,
            "OCIRepository",
            "pinned",
            json!({"url": app, "ref": {"digest": DIGEST}}),
        ),
        object(
            OCI,
            "OCIRepository",
            "other",
            json!({"url": format!("oci://{REGISTRY}/team/other")}),
        ),
        // AWS's documented event pushes `latest` of my-repository-name.
        object(
            OCI,
            "OCIRepository",
            "ecr-latest",
            json!({"url": format!("oci://{ECR}/my-repository-name")}),
        ),
        object(
            OCI,
            "HelmRepository",
            "charts",
            json!({"type": "oci", "url": format!("oci://{REGISTRY}/team/charts")}),
        ),
        object(
            OCI,
            "HelmChart",
            "app-chart",
            json!({"chart": "app", "sourceRef": {"kind": "HelmRepository", "name": "charts"}}),
        ),
        object(
            "helm.toolkit.fluxcd.io/v2",
            "HelmRelease",
            "app-release",
            json!({"chart": {"spec": {"chart": "app", "version": ">=1.0.0", "sourceRef": {"kind": "HelmRepository", "name": "charts"}}}}),
        ),
        object(
            "image.toolkit.fluxcd.io/v1",
            "ImageRepository",
            "app-image",
            json!({"image": format!("{REGISTRY}/team/app")}),
        ),
    ] {
        p.kube.apply(&manifest).await;
    }
}

async fn requested(p: &Pipeline) -> BTreeMap<&'static str, String> {
    let mut found = BTreeMap::new();
    for (api, plural, name) in SOURCES {
        let object = p.kube.get_json(api, plural, "flux-system", name).await;
        if let Some(at) =
            object["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"].as_str()
        {
            found.insert(name, at.to_string());
        }
    }
    found
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_pushes_ecr_events_and_pipelines_reach_their_sources_through_the_aws_path() {
    if !netns::enter(
        "registry_pushes_ecr_events_and_pipelines_reach_their_sources_through_the_aws_path",
    ) {
        return;
    }
    let p = Pipeline::start().await;
    apply_sources(&p).await;
    p.register(p.entry(
        "prod",
        json!({
            "trigger": {"mode": "annotate",
                        "artifact_kinds": ["OCIRepository", "HelmRepository", "HelmChart", "HelmRelease", "ImageRepository"]},
            "subscriptions": [
                {"registries": [REGISTRY, ECR]},
                {"on": "pipeline", "projects": ["team/app"], "registry": REGISTRY}
            ]
        }),
    ))
    .await;
    let bearer = format!("Bearer {SAMPLE_WEBHOOK_TOKEN}");

    // GitLab's container registry notification of team/app:v2.0.0 on the Function URL's
    // registry path.
    let mut notification = fixture("registry/gitlab-registry-manifest-push.json");
    notification["events"][0]["request"]["host"] = json!(REGISTRY);
    notification["events"][0]["target"]["repository"] = json!("team/app");
    notification["events"][0]["target"]["tag"] = json!("v2.0.0");
    let (status, body) = p
        .post_function_url(
            "/registry/distribution",
            &[("authorization", &bearer)],
            &notification.to_string(),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("accepted")),
        "{body}"
    );
    p.drain().await;
    let after_push = requested(&p).await;
    assert_eq!(
        after_push.keys().copied().collect::<Vec<_>>(),
        ["app-image", "by-range", "by-tag"]
    );

    // Harbor's webhook for the OCI chart team/charts/app:1.2.0.
    let mut harbor = fixture("harbor/push-artifact-default-by-tag.json");
    harbor["event_data"]["resources"][0]["tag"] = json!("1.2.0");
    harbor["event_data"]["resources"][0]["resource_url"] =
        json!(format!("{REGISTRY}/team/charts/app:1.2.0"));
    harbor["event_data"]["repository"]["repo_full_name"] = json!("team/charts/app");
    let (status, body) = p
        .post_function_url(
            "/registry/harbor",
            &[("authorization", SAMPLE_WEBHOOK_TOKEN)],
            &harbor.to_string(),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("accepted")),
        "{body}"
    );
    p.drain().await;
    let after_chart = requested(&p).await;
    assert_eq!(
        changed(&after_push, &after_chart),
        ["app-chart", "app-release"]
    );

    // AWS's documented ECR push, put on intake.fifo as the EventBridge rule does, and the
    // documented deletion, which route acknowledges and routes nowhere.
    p.send_eventbridge_event(&fixture("ecr/image-action-push.json"))
        .await;
    p.send_eventbridge_event(&fixture("ecr/image-action-delete.json"))
        .await;
    p.drain().await;
    let after_ecr = requested(&p).await;
    assert_eq!(changed(&after_chart, &after_ecr), ["ecr-latest"]);

    // A failed pipeline of team/app triggers nothing; a successful one its sources.
    let pipeline = |status: &str| {
        let mut hook = fixture("gitlab/pipeline_hook.json");
        hook["object_attributes"]["status"] = json!(status);
        hook["project"]["path_with_namespace"] = json!("team/app");
        hook["project"]["web_url"] = json!("https://gitlab.example.com/team/app");
        hook.to_string()
    };
    let headers = [
        ("x-gitlab-event", "Pipeline Hook"),
        ("x-gitlab-token", SAMPLE_WEBHOOK_TOKEN),
    ];
    let (status, body) = p
        .post_function_url("/", &headers, &pipeline("failed"))
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("ignored")),
        "{body}"
    );
    p.drain().await;
    assert_eq!(requested(&p).await, after_ecr);
    let (status, body) = p
        .post_function_url("/", &headers, &pipeline("success"))
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("accepted")),
        "{body}"
    );
    p.drain().await;
    assert_eq!(
        changed(&after_ecr, &requested(&p).await),
        ["app-image", "by-range", "by-tag"]
    );

    // A registry notification with a wrong token is refused and queues nothing.
    let (status, _) = p
        .post_function_url(
            "/registry/distribution",
            &[("authorization", "Bearer wrong")],
            &notification.to_string(),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(fluxrelay_e2e::depth(&p.sqs, &p.queues.intake).await, 0);
    assert!(p.take_dead_letters().await.is_empty());
}
