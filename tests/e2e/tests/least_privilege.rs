//! Least privilege of `infra/rbac.yaml`, through the real dispatch path (ingest → route →
//! dispatch over moto and a real kube-apiserver): for every verb of every rule of the
//! Role, the Role is applied without exactly that verb, and one push is sent to a
//! receiver-mode and an annotate-mode entry. A permission the code needs makes the push a
//! dead letter whose reason names the verb and resource the apiserver refused; a permission
//! whose removal changes nothing in either mode is excess, and the Role must have none.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use fluxrelay_adapters::cluster::KubeClusters;
use fluxrelay_core::outcome::retry::RetryPolicy;
use fluxrelay_e2e::pipeline::{Pipeline, dispatch_function, repo_root, route_function};
use fluxrelay_testkit::netns;
use serde_json::{Value, json};

const DIASPORA: &str = "https://example.com/mike/diaspora.git";

/// infra/rbac.yaml's documents (the Role first, then its binding).
fn rbac_documents() -> Vec<Value> {
    let text = std::fs::read_to_string(repo_root().join("infra/rbac.yaml")).unwrap();
    serde_saphyr::from_multiple(&text).unwrap()
}

/// Each (rule index, verb, "verb resource" as the apiserver words a refusal).
fn permissions(role: &Value) -> Vec<(usize, String, String)> {
    let mut found = Vec::new();
    for (index, rule) in role["rules"].as_array().unwrap().iter().enumerate() {
        for resource in rule["resources"].as_array().unwrap() {
            for verb in rule["verbs"].as_array().unwrap() {
                let verb = verb.as_str().unwrap().to_string();
                let refusal = format!("cannot {verb} resource \"{}\"", resource.as_str().unwrap());
                found.push((index, verb, refusal));
            }
        }
    }
    found
}

/// Fresh route and dispatch functions: no registry or list cache from an earlier Role.
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

/// Sends push `n` and returns, per entry, the dead letter's reason (None = delivered).
async fn outcome(p: &mut Pipeline, n: u32) -> Vec<(String, Option<String>)> {
    fresh_functions(p);
    let sha = format!("{:040x}", 0x1ea5e000 + n);
    let event = Pipeline::edited_event("ingest-push-hook.json", |hook| {
        hook["after"] = json!(sha);
        hook["checkout_sha"] = json!(sha);
    });
    let hits_before = p.receiver.accepted("flux-system", "r").len();
    assert_eq!(p.post_event_json(&event).await.0, 202);
    p.drain().await;
    let dead = p.take_dead_letters().await;
    let delivered_by_receiver = p.receiver.accepted("flux-system", "r").len() - hits_before;
    let mut outcomes = Vec::new();
    for cluster in ["receiver-mode", "annotate-mode"] {
        let reason = dead
            .iter()
            .find(|(body, attributes)| {
                body["push"]["after"] == sha.as_str() && attributes["fluxrelay.cluster"] == cluster
            })
            .map(|(_, attributes)| attributes["fluxrelay.reason"].clone());
        outcomes.push((cluster.to_string(), reason));
    }
    // Delivered means delivered: the receiver-mode entry reached the Receiver.
    assert_eq!(
        delivered_by_receiver,
        usize::from(outcomes[0].1.is_none()),
        "{outcomes:?} {:?}",
        p.receiver.hits()
    );
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_permission_of_the_role_is_needed_and_its_absence_is_a_dead_letter_naming_it() {
    if !netns::enter(
        "every_permission_of_the_role_is_needed_and_its_absence_is_a_dead_letter_naming_it",
    ) {
        return;
    }
    let mut p = Pipeline::start().await;
    p.git_repository("app", DIASPORA, json!({"branch": "master"}))
        .await;
    p.flux_receiver("r", "generic", "t", &[], "app").await;
    p.register(p.entry("receiver-mode", json!({}))).await;
    p.register(p.entry("annotate-mode", json!({"trigger": {"mode": "annotate"}})))
        .await;

    let documents = rbac_documents();
    let role = documents
        .iter()
        .find(|document| document["kind"] == "Role")
        .expect("a Role in infra/rbac.yaml")
        .clone();
    let binding = documents
        .iter()
        .find(|document| document["kind"] == "RoleBinding")
        .expect("a RoleBinding in infra/rbac.yaml")
        .clone();
    p.kube.apply(&binding.to_string()).await;

    // The whole Role: both modes deliver.
    p.kube.apply(&role.to_string()).await;
    let full = outcome(&mut p, 0).await;
    assert!(full.iter().all(|(_, reason)| reason.is_none()), "{full:?}");

    let permissions = permissions(&role);
    assert!(permissions.len() >= 4, "{permissions:?}");
    let mut excess = Vec::new();
    let mut report = Vec::new();
    for (n, (rule, verb, refusal)) in permissions.iter().enumerate() {
        let mut reduced = role.clone();
        let rules = reduced["rules"].as_array_mut().unwrap();
        rules[*rule]["verbs"]
            .as_array_mut()
            .unwrap()
            .retain(|v| v != verb.as_str());
        if rules[*rule]["verbs"].as_array().unwrap().is_empty() {
            rules.remove(*rule);
        }
        p.kube.apply(&reduced.to_string()).await;
        // The apiserver's RBAC authorizer reads Roles through an informer.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let outcomes = outcome(&mut p, n as u32 + 1).await;
        report.push(format!("without `{refusal}`: {outcomes:?}"));
        let refused: Vec<&(String, Option<String>)> = outcomes
            .iter()
            .filter(|(_, reason)| reason.is_some())
            .collect();
        if refused.is_empty() {
            excess.push(refusal.clone());
        }
        for (cluster, reason) in refused {
            let reason = reason.as_deref().unwrap();
            assert!(
                reason.contains("403") && reason.contains(refusal.as_str()),
                "{cluster} without `{refusal}`: the reason does not name the permission: {reason}"
            );
        }
    }
    println!("{}", report.join("\n"));
    assert!(
        excess.is_empty(),
        "infra/rbac.yaml grants permissions no dispatch needs: {excess:?}\n{}",
        report.join("\n")
    );

    // Restored: delivered again.
    p.kube.apply(&role.to_string()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restored = outcome(&mut p, 100).await;
    assert!(
        restored.iter().all(|(_, reason)| reason.is_none()),
        "{restored:?}"
    );
}
