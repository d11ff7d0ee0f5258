//! The world of a chaos run: M "clusters" that are M registry entries against one real
//! kube-apiserver, each confined to its own namespace (`chaos-c<i>`) with its own
//! GitRepositories and its own Receiver, so the receiver emulator counts hits per cluster;
//! and N pushes, each identifiable by its `after` commit: distinct tags `v0.0.<n>` of one
//! project (a `semver` GitRepository takes every tag) and commits on a few branches of
//! another project (one GitRepository per branch), whose pushes may coalesce.
// A test harness: a setup that fails is a test failure.
#![allow(clippy::panic)]

use serde_json::{Value, json};

use crate::chaos::Rng;
use crate::kube_env::KubeEnv;
use crate::receiver::{FluxReceiverEmulator, ReceiverSpec};

/// The projects of `events/webhooks/tag-push-hook.json` and `push-hook.json`.
pub const TAG_PROJECT_URL: &str = "https://example.com/jsmith/example.git";
pub const BRANCH_PROJECT_URL: &str = "https://example.com/mike/diaspora.git";
/// The dispatcher's Role and RoleBinding (in `flux-system` from `infra/rbac.yaml`, and a
/// copy in each cluster's namespace for its lists).
pub const ROLE: &str = "fluxrelay-dispatcher";
pub const PROXY_NAMESPACE: &str = "flux-system";

/// One chaos "cluster".
#[derive(Debug, Clone)]
pub struct FleetCluster {
    pub name: String,
    pub namespace: String,
    /// The Receiver's webhook path (where faults are scripted).
    pub webhook_path: String,
}

impl FleetCluster {
    /// The emulator's id of this cluster's Receiver.
    pub fn receiver_id(&self) -> String {
        format!("{}/recv", self.namespace)
    }

    /// A registry entry: the dispatcher's static token, confined to this namespace.
    pub fn entry(&self, kube: &KubeEnv) -> Value {
        json!({
            "name": self.name,
            "server": kube.server(),
            "ca": kube.ca_pem(),
            "auth": {"token": kube.dispatcher_token()},
            "namespaces": [self.namespace],
            "trigger": {"mode": "receiver"},
        })
    }
}

pub fn branch_name(branch: usize) -> String {
    format!("b{branch}")
}

/// `infra/rbac.yaml` moved to `namespace`.
pub fn rbac_in(rbac_yaml: &str, namespace: &str) -> String {
    rbac_yaml.replace(
        &format!("namespace: {PROXY_NAMESPACE}"),
        &format!("namespace: {namespace}"),
    )
}

/// Creates `clusters` namespaces with a Role, a `tags` and `b<k>` GitRepositories and a
/// Ready generic Receiver `recv` selecting them all (in the apiserver and the emulator).
pub async fn build(
    kube: &KubeEnv,
    receiver: &FluxReceiverEmulator,
    rbac_yaml: &str,
    clusters: usize,
    branches: usize,
) -> Vec<FleetCluster> {
    let mut fleet = Vec::with_capacity(clusters);
    for index in 0..clusters {
        let namespace = format!("chaos-c{index}");
        kube.apply(
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
                .to_string(),
        )
        .await;
        kube.apply(&rbac_in(rbac_yaml, &namespace)).await;
        let mut repositories = vec![(
            "tags".to_string(),
            TAG_PROJECT_URL,
            json!({"semver": ">=0.0.0"}),
        )];
        for branch in 0..branches {
            repositories.push((
                branch_name(branch),
                BRANCH_PROJECT_URL,
                json!({"branch": branch_name(branch)}),
            ));
        }
        for (name, url, git_ref) in &repositories {
            kube.apply(
                &json!({
                    "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": {"interval": "10m", "url": url, "ref": git_ref}
                })
                .to_string(),
            )
            .await;
        }
        let webhook_path = receiver.upsert(ReceiverSpec {
            namespace: namespace.clone(),
            name: "recv".into(),
            receiver_type: "generic".into(),
            token: format!("{namespace}-receiver-token"),
            events: Vec::new(),
            suspended: false,
            ready: true,
        });
        let resources: Vec<Value> = repositories
            .iter()
            .map(|(name, _, _)| {
                json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository", "name": name})
            })
            .collect();
        kube.apply(
            &json!({
                "apiVersion": "notification.toolkit.fluxcd.io/v1", "kind": "Receiver",
                "metadata": {"name": "recv", "namespace": namespace},
                "spec": {"type": "generic", "secretRef": {"name": "recv-token"}, "resources": resources}
            })
            .to_string(),
        )
        .await;
        kube.patch_status(
            "notification.toolkit.fluxcd.io/v1",
            "receivers",
            &namespace,
            "recv",
            json!({
                "webhookPath": webhook_path,
                "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded",
                                "message": format!("Receiver initialized for path: {webhook_path}"),
                                "lastTransitionTime": "2026-11-22T00:00:00Z"}]
            }),
        )
        .await;
        fleet.push(FleetCluster {
            name: format!("c{index}"),
            namespace,
            webhook_path,
        });
    }
    fleet
}

/// The commit of push `n`: unique in a run.
pub fn commit(n: usize) -> String {
    format!("c4a05{n:035x}")
}

/// What push `n` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushKind {
    Tag,
    Branch(usize),
}

/// The kinds of `pushes` pushes: about 60 % to `branches` branches, the rest new tags.
pub fn plan(rng: &mut Rng, pushes: usize, branches: usize) -> Vec<PushKind> {
    (0..pushes)
        .map(|_| {
            if branches > 0 && rng.below(10) < 6 {
                PushKind::Branch(rng.below(branches))
            } else {
                PushKind::Tag
            }
        })
        .collect()
}

/// GitLab's `X-Gitlab-Event`, the payload and the ref of push `n`. `before` is the branch's
/// previous commit (the fixture's for the first push).
pub fn payload(
    webhooks_dir: &std::path::Path,
    n: usize,
    kind: &PushKind,
    before: Option<&str>,
) -> (&'static str, Value, String) {
    let read = |file: &str| -> Value {
        let path = webhooks_dir.join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|error| panic!("{file}: {error}"))
    };
    match kind {
        PushKind::Tag => {
            let mut hook = read("tag-push-hook.json");
            let git_ref = format!("refs/tags/v0.0.{n}");
            hook["ref"] = json!(git_ref);
            hook["after"] = json!(commit(n));
            hook["checkout_sha"] = json!(commit(n));
            ("Tag Push Hook", hook, git_ref)
        }
        PushKind::Branch(branch) => {
            let mut hook = read("push-hook.json");
            let git_ref = format!("refs/heads/{}", branch_name(*branch));
            hook["ref"] = json!(git_ref);
            if let Some(before) = before {
                hook["before"] = json!(before);
            }
            hook["after"] = json!(commit(n));
            hook["checkout_sha"] = json!(commit(n));
            ("Push Hook", hook, git_ref)
        }
    }
}

/// The `(ref, after)` a Receiver request's body names.
pub fn ref_and_after(body: &[u8]) -> (String, String) {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    (
        body["ref"].as_str().unwrap_or_default().to_string(),
        body["after"].as_str().unwrap_or_default().to_string(),
    )
}

/// Every request the emulator answered 200, as deliveries per cluster.
pub fn deliveries(
    receiver: &FluxReceiverEmulator,
    fleet: &[FleetCluster],
) -> Vec<crate::chaos::Delivery> {
    let mut deliveries = Vec::new();
    for cluster in fleet {
        for hit in receiver.accepted(&cluster.namespace, "recv") {
            let (git_ref, after) = ref_and_after(&hit.body);
            deliveries.push(crate::chaos::Delivery {
                at: hit.at,
                cluster: cluster.name.clone(),
                git_ref,
                after,
            });
        }
    }
    deliveries
}

/// Scripted receiver faults seen by the emulator: (503/500 answers, stalls).
pub fn receiver_fault_hits(receiver: &FluxReceiverEmulator) -> (usize, usize) {
    let hits = receiver.hits();
    let stalls = hits
        .iter()
        .filter(|hit| {
            hit.reason
                .as_deref()
                .is_some_and(|r| r.contains("stall_next"))
        })
        .count();
    let scripted = hits
        .iter()
        .filter(|hit| hit.reason.as_deref() == Some("scripted by fail_next"))
        .count();
    (scripted, stalls)
}
