//! A world for confirmation tests, shared by the serve and AWS end-to-end tests, the chaos
//! suites and the benchmark: clusters as namespaces of one real kube-apiserver, each with
//! `infra/rbac.yaml` and `infra/rbac-confirm.yaml`, a GitRepository, a generic Receiver and a
//! Kustomization; a GitLab API stand-in knowing the project; the Flux controller stand-in
//! following the Receiver hits.

use std::path::Path;

use serde_json::{Value, json};

use crate::chaos_fleet::rbac_in;
use crate::flux_controller::kustomization_manifest;
use crate::gitlab::GitLabStandIn;
use crate::kube_env::KubeEnv;
use crate::receiver::{FluxReceiverEmulator, ReceiverSpec};

/// The GitLab API token the worlds' configurations carry (never to be seen in a log).
pub const GITLAB_TOKEN: &str = "glpat-confirm-world-token-1f2e";
/// The GitLab instance of `events/webhooks/push-hook.json` (from its `web_url`).
pub const INSTANCE: &str = "http://example.com";
pub const PROJECT_ID: u64 = 15;
pub const PROJECT_PATH: &str = "mike/diaspora";
pub const REPOSITORY_URL: &str = "https://example.com/mike/diaspora.git";
pub const BRANCH: &str = "master";

fn repo_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `infra/rbac.yaml` then `infra/rbac-confirm.yaml`, as one manifest for `namespace`.
pub fn rbac_with_confirm(namespace: &str) -> String {
    let read = |name: &str| {
        std::fs::read_to_string(repo_root().join("infra").join(name))
            .unwrap_or_else(|error| panic!("infra/{name}: {error}"))
    };
    format!(
        "{}\n---\n{}",
        rbac_in(&read("rbac.yaml"), namespace),
        rbac_in(&read("rbac-confirm.yaml"), namespace)
    )
}

/// One test cluster: a namespace with its own objects.
#[derive(Debug, Clone)]
pub struct ConfirmCluster {
    pub name: String,
    pub namespace: String,
    pub receiver_path: String,
}

impl ConfirmCluster {
    /// A registry entry confined to the namespace, with confirmation on.
    pub fn entry(&self, kube: &KubeEnv) -> Value {
        json!({
            "name": self.name,
            "server": kube.server(),
            "ca": kube.ca_pem(),
            "auth": {"token": kube.dispatcher_token()},
            "namespaces": [self.namespace],
            "confirm": true,
        })
    }

    pub fn kustomization(&self) -> String {
        format!("{}/apps", self.namespace)
    }
}

/// Creates each cluster `name` in namespace `ns-<name>`: RBAC (the Role of
/// `infra/rbac.yaml` for the service proxy stays in flux-system, applied by the caller),
/// GitRepository `app` on [`REPOSITORY_URL`] `master`, a generic Receiver `recv`
/// selecting it (in the emulator too), Kustomization `apps` of `app`.
pub async fn confirm_clusters(
    kube: &KubeEnv,
    receiver: &FluxReceiverEmulator,
    names: &[&str],
) -> Vec<ConfirmCluster> {
    let mut clusters = Vec::new();
    for name in names {
        let namespace = format!("ns-{name}");
        kube.apply(
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
                .to_string(),
        )
        .await;
        kube.apply(&rbac_with_confirm(&namespace)).await;
        kube.apply(
            &json!({
                "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                "metadata": {"name": "app", "namespace": namespace},
                "spec": {"interval": "10m", "url": REPOSITORY_URL, "ref": {"branch": BRANCH}}
            })
            .to_string(),
        )
        .await;
        let receiver_path = receiver.upsert(ReceiverSpec {
            namespace: namespace.clone(),
            name: "recv".into(),
            receiver_type: "generic".into(),
            token: format!("{namespace}-token"),
            events: Vec::new(),
            suspended: false,
            ready: true,
        });
        kube.apply(
            &json!({
                "apiVersion": "notification.toolkit.fluxcd.io/v1", "kind": "Receiver",
                "metadata": {"name": "recv", "namespace": namespace},
                "spec": {"type": "generic", "secretRef": {"name": "recv-token"},
                         "resources": [{"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository", "name": "app"}]}
            })
            .to_string(),
        )
        .await;
        kube.patch_status(
            "notification.toolkit.fluxcd.io/v1",
            "receivers",
            &namespace,
            "recv",
            json!({"webhookPath": receiver_path,
                   "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded",
                                   "message": "Receiver initialized", "lastTransitionTime": "2026-11-22T00:00:00Z"}]}),
        )
        .await;
        kube.apply(&kustomization_manifest(&namespace, "apps", "app"))
            .await;
        clusters.push(ConfirmCluster {
            name: name.to_string(),
            namespace,
            receiver_path,
        });
    }
    clusters
}

/// The GitLab stand-in with the world's token and project, and `commits` on master
/// (each on the previous one).
pub async fn gitlab_with(commits: &[&str]) -> GitLabStandIn {
    let gitlab = GitLabStandIn::start("127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()))
        .await
        .unwrap_or_else(|error| panic!("GitLab stand-in: {error}"));
    gitlab.add_token(GITLAB_TOKEN, 1, &["api"]);
    gitlab.add_project(PROJECT_ID, PROJECT_PATH);
    for (index, sha) in commits.iter().enumerate() {
        gitlab.commit(
            PROJECT_ID,
            BRANCH,
            sha,
            None,
            &[("deploy/app.yaml", Some(&format!("v{index}")))],
        );
    }
    gitlab
}

/// `events/webhooks/push-hook.json` moved to `before..after` (a new commit of master).
pub fn push_hook(before: &str, after: &str) -> Value {
    let path = repo_root().join("events/webhooks/push-hook.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let mut hook: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    hook["before"] = json!(before);
    hook["after"] = json!(after);
    hook["checkout_sha"] = json!(after);
    hook
}

/// A commit id for test number `n` (40 hex digits).
pub fn commit(n: u64) -> String {
    format!("{:040x}", 0x00c0_ffee_0000_0000_u64 + n)
}
