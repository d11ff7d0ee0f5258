//! Least privilege of `infra/rbac-artifacts.yaml`, through the real AWS path (ingest →
//! route → dispatch over moto and a real kube-apiserver): the Role is split into one rule per
//! verb and resource, and applied without each in turn; an image push and an OCI chart push
//! are then sent to a receiver-mode and an annotate-mode entry that list every artifact
//! kind. A permission the code needs makes a push a dead letter whose reason names the verb
//! and resource the apiserver refused; a permission whose removal changes nothing is excess.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use fluxrelay_adapters::cluster::KubeClusters;
use fluxrelay_core::outcome::retry::RetryPolicy;
use fluxrelay_e2e::pipeline::{Pipeline, dispatch_function, repo_root, route_function};
use fluxrelay_testkit::netns;
use serde_json::{Value, json};

const REGISTRY: &str = "registry.example.com";
const OCI: &str = "source.toolkit.fluxcd.io/v1";
const KINDS: [&str; 5] = [
    "OCIRepository",
    "HelmRepository",
    "HelmChart",
    "HelmRelease",
    "ImageRepository",
];

fn documents() -> Vec<Value> {
    let text = std::fs::read_to_string(repo_root().join("infra/rbac-artifacts.yaml")).unwrap();
    serde_saphyr::from_multiple(&text).unwrap()
}

/// The Role as one rule per (group, resource, verb), with the refusal the apiserver words.
fn split_rules(role: &Value) -> Vec<(Value, String)> {
    let mut rules = Vec::new();
    for rule in role["rules"].as_array().unwrap() {
        for resource in rule["resources"].as_array().unwrap() {
            for verb in rule["verbs"].as_array().unwrap() {
                let refusal = format!(
                    "cannot {} resource \"{}\"",
                    verb.as_str().unwrap(),
                    resource.as_str().unwrap()
                );
                let single = json!({"apiGroups": rule["apiGroups"], "resources": [resource], "verbs": [verb]});
                rules.push((single, refusal));
            }
        }
    }
    rules
}

fn with_rules(role: &Value, rules: Vec<Value>) -> String {
    let mut role = role.clone();
    role["rules"] = Value::Array(rules);
    role.to_string()
}

fn fresh_functions(p: &mut Pipeline) {
    p.route = route_function(&p.queues, &p.s3, &p.sqs);
    p.dispatch = dispatch_function(
        &p.queues,
        &p.s3,
        &p.secrets,
        &p.sqs,
        KubeClusters::with_defaults().unwrap(),
        RetryPolicy {
            max_attempts: 3,
            base_delay_secs: 1,
            max_delay_secs: 1,
        },
    );
}

/// Sends round `n`'s image and chart pushes; returns each dead letter's (cluster, reason).
async fn dead_letters(p: &mut Pipeline, n: u32) -> Vec<(String, String)> {
    fresh_functions(p);
    let push = |repository: &str, tag: String| {
        let file = repo_root()
            .join("functions/core/tests/fixtures/registry/gitlab-registry-manifest-push.json");
        let mut body: Value =
            serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let event = &mut body["events"][0];
        event["id"] = json!(format!("round-{n}-{repository}"));
        event["request"]["host"] = json!(REGISTRY);
        event["target"]["repository"] = json!(repository);
        event["target"]["tag"] = json!(tag);
        body.to_string()
    };
    let bearer = format!("Bearer {}", fluxrelay_e2e::pipeline::SAMPLE_WEBHOOK_TOKEN);
    for body in [
        push("team/app", format!("1.0.{n}")),
        push("team/charts/app", format!("1.0.{n}")),
    ] {
        let (status, answer) = p
            .post_function_url(
                "/registry/distribution",
                &[("authorization", &bearer)],
                &body,
            )
            .await;
        assert_eq!(status, 202, "{answer}");
    }
    drain_with_delayed_retries(p).await;
    p.take_dead_letters()
        .await
        .into_iter()
        .map(|(_, attributes)| {
            (
                attributes["fluxrelay.cluster"].clone(),
                attributes["fluxrelay.reason"].clone(),
            )
        })
        .collect()
}

/// `Pipeline::drain` stops when no message is visible or in flight; a retry still waiting
/// out its delay on the standard retry queue counts as neither. Each round must end with its
/// own messages settled, so this drains until none is delayed either.
async fn drain_with_delayed_retries(p: &Pipeline) {
    use aws_sdk_sqs::types::QueueAttributeName;
    for _ in 0..60 {
        p.drain().await;
        let delayed = p
            .sqs
            .get_queue_attributes()
            .queue_url(&p.queues.dispatch_retry)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap_or_default()
            .get(&QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .and_then(|count| count.parse::<usize>().ok())
            .unwrap_or(0);
        if delayed == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("retries still delayed after a minute");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_permission_of_the_artifact_role_is_needed_and_its_absence_is_a_dead_letter_naming_it()
 {
    if !netns::enter(
        "every_permission_of_the_artifact_role_is_needed_and_its_absence_is_a_dead_letter_naming_it",
    ) {
        return;
    }
    let mut p = Pipeline::start().await;
    let object = |api: &str, kind: &str, name: &str, spec: Value| {
        json!({"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": "flux-system"}, "spec": spec}).to_string()
    };
    for manifest in [
        object(
            OCI,
            "OCIRepository",
            "app",
            json!({"url": format!("oci://{REGISTRY}/team/app"), "ref": {"semver": "1.x"}}),
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
            "app",
            json!({"chart": "app", "sourceRef": {"kind": "HelmRepository", "name": "charts"}}),
        ),
        object(
            "helm.toolkit.fluxcd.io/v2",
            "HelmRelease",
            "app",
            json!({"chart": {"spec": {"chart": "app", "sourceRef": {"kind": "HelmRepository", "name": "charts"}}}}),
        ),
        object(
            "image.toolkit.fluxcd.io/v1",
            "ImageRepository",
            "app",
            json!({"image": format!("{REGISTRY}/team/app")}),
        ),
    ] {
        p.kube.apply(&manifest).await;
    }
    // A generic Receiver listing every kind a push may trigger, for the receiver-mode entry.
    p.flux_receiver("r", "generic", "t", &[], "unused").await;
    p.kube
        .apply(
            &json!({
                "apiVersion": "notification.toolkit.fluxcd.io/v1", "kind": "Receiver",
                "metadata": {"name": "r", "namespace": "flux-system"},
                "spec": {"type": "generic", "secretRef": {"name": "r-token"}, "resources": [
                    {"kind": "OCIRepository", "name": "*"},
                    {"kind": "HelmChart", "name": "*"},
                    {"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "name": "*"},
                    {"kind": "ImageRepository", "name": "*"}]}
            })
            .to_string(),
        )
        .await;
    p.register(p.entry(
        "receiver-mode",
        json!({"trigger": {"artifact_kinds": KINDS}}),
    ))
    .await;
    p.register(p.entry(
        "annotate-mode",
        json!({"trigger": {"mode": "annotate", "artifact_kinds": KINDS}}),
    ))
    .await;

    let documents = documents();
    let role = documents
        .iter()
        .find(|d| d["kind"] == "Role")
        .unwrap()
        .clone();
    let binding = documents
        .iter()
        .find(|d| d["kind"] == "RoleBinding")
        .unwrap()
        .clone();
    p.kube.apply(&binding.to_string()).await;
    let rules = split_rules(&role);
    assert_eq!(rules.len(), 9, "{rules:?}");

    // The whole Role: nothing is dead-lettered, and the Receiver is called.
    p.kube
        .apply(&with_rules(
            &role,
            rules.iter().map(|(r, _)| r.clone()).collect(),
        ))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let full = dead_letters(&mut p, 0).await;
    assert!(full.is_empty(), "{full:?}");
    assert!(!p.receiver.accepted("flux-system", "r").is_empty());

    let mut excess = Vec::new();
    let mut report = Vec::new();
    for (n, (_, refusal)) in rules.iter().enumerate() {
        let reduced: Vec<Value> = rules
            .iter()
            .filter(|(_, other)| other != refusal)
            .map(|(rule, _)| rule.clone())
            .collect();
        p.kube.apply(&with_rules(&role, reduced)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let dead = dead_letters(&mut p, n as u32 + 1).await;
        report.push(format!("without `{refusal}`: {dead:?}"));
        if dead.is_empty() {
            excess.push(refusal.clone());
        }
        for (cluster, reason) in &dead {
            assert!(
                reason.contains("403") && reason.contains(refusal.as_str()),
                "{cluster} without `{refusal}`: the reason does not name the permission: {reason}"
            );
        }
    }
    println!("{}", report.join("\n"));
    assert!(
        excess.is_empty(),
        "infra/rbac-artifacts.yaml grants permissions no dispatch needs: {excess:?}\n{}",
        report.join("\n")
    );
}
