//! A stand-in for Flux's source-controller, notification-controller's resource
//! annotation and kustomize-controller, against the real kube-apiserver. It writes what
//! the controllers write, in their order (`docs/reference/flux.md` §1, §3, §6):
//!
//! 1. A Receiver hit annotates each GitRepository the Receiver selects with
//!    `reconcile.fluxcd.io/requestedAt` = now before the receiver emulator answers 200, as
//!    notification-controller does ([`crate::receiver::FluxReceiverEmulator::on_accept`]).
//! 2. A GitRepository whose `requestedAt` differs from `status.lastHandledReconcileAt` (or
//!    whose generation is new) is fetched after `fetch_delay`: the head of its ref in the
//!    [`GitRemote`]; conditions are patched first, then `artifact` (`<branch>@sha1:<sha>`),
//!    `lastHandledReconcileAt` and `observedGeneration` together.
//! 3. When the artifact's revision changed, each Kustomization whose `sourceRef` is that
//!    GitRepository is applied after `apply_delay`: `Ready=Unknown Progressing` and
//!    `lastAttemptedRevision`, then `Ready=True ReconciliationSucceeded "Applied revision:
//!    R"` with `lastAppliedRevision` and `observedGeneration` — or, for a commit whose build
//!    is scripted to fail, `Ready=False BuildFailed` with the message; or never, when the
//!    namespace's Kustomizations are scripted never to apply.
//!
//! The remote's head can move on at any time ([`GitRemote::set`]): a fetch then finds the
//! newer commit. Clusters are namespaces (each with its own behaviour).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::receiver::FluxReceiverEmulator;

/// Branch and tag heads of the Git repositories the GitRepositories point at.
#[derive(Clone, Default)]
pub struct GitRemote {
    heads: Arc<Mutex<BTreeMap<(String, String), String>>>,
}

fn location(url: &str) -> String {
    url.trim()
        .trim_end_matches('/')
        .trim_end_matches(".git")
        .to_ascii_lowercase()
}

impl GitRemote {
    /// `git_ref` is `refs/heads/<b>`, `refs/tags/<t>` or a bare name.
    pub fn set(&self, url: &str, git_ref: &str, sha: &str) {
        let name = git_ref
            .strip_prefix("refs/heads/")
            .or_else(|| git_ref.strip_prefix("refs/tags/"))
            .unwrap_or(git_ref);
        lock(&self.heads).insert((location(url), name.to_string()), sha.to_string());
    }

    pub fn head(&self, url: &str, name: &str) -> Option<String> {
        lock(&self.heads)
            .get(&(location(url), name.to_string()))
            .cloned()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How the controllers of one namespace (one test cluster) behave.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    pub fetch_delay: Duration,
    pub apply_delay: Duration,
    /// Builds of these commits fail with this message.
    pub fail_build: BTreeMap<String, String>,
    /// Kustomizations start applying and never finish.
    pub never_apply: bool,
}

/// A Kustomization marked applied: when, and at which revision.
#[derive(Debug, Clone)]
pub struct Applied {
    pub kustomization: String,
    pub revision: String,
    pub at: Instant,
}

#[derive(Default)]
struct State {
    behaviour: BTreeMap<String, Behaviour>,
    default: Behaviour,
    applied: Vec<Applied>,
    /// GitRepository `ns/name` → (due, token, generation) of a fetch in progress.
    fetching: BTreeMap<String, (Instant, String)>,
    /// Kustomization `ns/name` → (due, revision) of an apply in progress.
    applying: BTreeMap<String, (Instant, String)>,
    errors: Vec<String>,
}

pub struct FluxControllerStandIn {
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for FluxControllerStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// `metav1.Now().String()`: Go's `time.Time` format, as notification-controller writes it.
fn go_time_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:09} +0000 UTC",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.nanosecond()
    )
}

struct Apis {
    client: kube::Client,
    git: ApiResource,
    kustomization: ApiResource,
    receiver: ApiResource,
}

impl Apis {
    fn api(&self, resource: &ApiResource, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, resource)
    }
}

impl FluxControllerStandIn {
    /// Runs in the background (every 50 ms) until dropped, over `namespaces`, with
    /// `default` behaviour unless [`FluxControllerStandIn::set_behaviour`] says otherwise;
    /// `receiver`'s 200s annotate the Receiver's GitRepositories before they are answered.
    pub fn start(
        admin: kube::Client,
        receiver: Option<&FluxReceiverEmulator>,
        remote: GitRemote,
        namespaces: Vec<String>,
        default: Behaviour,
    ) -> Self {
        let state = Arc::new(Mutex::new(State {
            default,
            ..State::default()
        }));
        let apis = Apis {
            client: admin,
            git: resource(
                "source.toolkit.fluxcd.io",
                "v1",
                "GitRepository",
                "gitrepositories",
            ),
            kustomization: resource(
                "kustomize.toolkit.fluxcd.io",
                "v1",
                "Kustomization",
                "kustomizations",
            ),
            receiver: resource(
                "notification.toolkit.fluxcd.io",
                "v1",
                "Receiver",
                "receivers",
            ),
        };
        let apis = Arc::new(apis);
        if let Some(receiver) = receiver {
            let (apis, state) = (apis.clone(), state.clone());
            receiver.on_accept(Arc::new(move |id: String| {
                let (apis, state) = (apis.clone(), state.clone());
                Box::pin(async move {
                    if let Err(error) = annotate_resources(&apis, &id).await {
                        lock(&state).errors.push(error);
                    }
                })
            }));
        }
        let task = {
            let state = state.clone();
            tokio::spawn(async move {
                loop {
                    if let Err(error) = tick(&apis, &state, &remote, &namespaces).await {
                        let mut state = lock(&state);
                        if state.errors.len() < 100 {
                            state.errors.push(error);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        Self { state, task }
    }

    pub fn set_behaviour(&self, namespace: &str, behaviour: Behaviour) {
        lock(&self.state)
            .behaviour
            .insert(namespace.to_string(), behaviour);
    }

    /// Every Kustomization marked applied so far.
    pub fn applied(&self) -> Vec<Applied> {
        lock(&self.state).applied.clone()
    }

    /// What went wrong talking to the apiserver (a test may print it on failure; an
    /// apiserver restart shows here and is survived).
    pub fn errors(&self) -> Vec<String> {
        lock(&self.state).errors.clone()
    }
}

fn text<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

fn id(object: &DynamicObject) -> (String, String) {
    (
        object.metadata.namespace.clone().unwrap_or_default(),
        object.metadata.name.clone().unwrap_or_default(),
    )
}

async fn tick(
    apis: &Apis,
    state: &Arc<Mutex<State>>,
    remote: &GitRemote,
    namespaces: &[String],
) -> Result<(), String> {
    for namespace in namespaces {
        let behaviour = {
            let state = lock(state);
            state
                .behaviour
                .get(namespace)
                .cloned()
                .unwrap_or_else(|| state.default.clone())
        };
        let repositories = apis
            .api(&apis.git, namespace)
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("list gitrepositories in {namespace}: {e}"))?;
        for repository in &repositories.items {
            fetch_if_due(apis, state, remote, &behaviour, repository).await?;
        }
        let kustomizations = apis
            .api(&apis.kustomization, namespace)
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("list kustomizations in {namespace}: {e}"))?;
        for kustomization in &kustomizations.items {
            apply_if_due(apis, state, &behaviour, kustomization).await?;
        }
    }
    Ok(())
}

/// notification-controller: a Receiver about to answer 200 annotates its resources.
async fn annotate_resources(apis: &Apis, receiver: &str) -> Result<(), String> {
    {
        let (namespace, name) = receiver.split_once('/').unwrap_or(("", receiver));
        let object = apis
            .api(&apis.receiver, namespace)
            .get(name)
            .await
            .map_err(|e| format!("get receiver {receiver}: {e}"))?;
        let resources = object
            .data
            .pointer("/spec/resources")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for selected in resources {
            if text(&selected, "/kind") != Some("GitRepository") {
                continue;
            }
            let target_namespace = text(&selected, "/namespace").unwrap_or(namespace);
            let api = apis.api(&apis.git, target_namespace);
            let names: Vec<String> = match text(&selected, "/name") {
                Some("*") => {
                    let labels: Vec<String> = selected
                        .get("matchLabels")
                        .and_then(Value::as_object)
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                                .collect()
                        })
                        .unwrap_or_default();
                    let params = ListParams::default().labels(&labels.join(","));
                    api.list(&params)
                        .await
                        .map_err(|e| format!("list for receiver {receiver}: {e}"))?
                        .items
                        .iter()
                        .filter_map(|o| o.metadata.name.clone())
                        .collect()
                }
                Some(name) => vec![name.to_string()],
                None => Vec::new(),
            };
            for name in names {
                let patch = json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": go_time_now()}}});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|e| format!("annotate {target_namespace}/{name}: {e}"))?;
            }
        }
    }
    Ok(())
}

async fn fetch_if_due(
    apis: &Apis,
    state: &Arc<Mutex<State>>,
    remote: &GitRemote,
    behaviour: &Behaviour,
    repository: &DynamicObject,
) -> Result<(), String> {
    let (namespace, name) = id(repository);
    let key = format!("{namespace}/{name}");
    let data = &repository.data;
    let requested = repository
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("reconcile.fluxcd.io/requestedAt"))
        .cloned()
        .unwrap_or_default();
    let handled = text(data, "/status/lastHandledReconcileAt").unwrap_or_default();
    let generation = repository.metadata.generation.unwrap_or(1);
    let observed = data
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64);
    let wanted = (!requested.is_empty() && requested != handled) || observed != Some(generation);
    let due = {
        let mut state = lock(state);
        match state.fetching.get(&key).cloned() {
            None if wanted => {
                state.fetching.insert(
                    key.clone(),
                    (Instant::now() + behaviour.fetch_delay, requested.clone()),
                );
                None
            }
            Some((due, token)) if Instant::now() >= due => {
                state.fetching.remove(&key);
                Some(token)
            }
            _ => None,
        }
    };
    let Some(token) = due else { return Ok(()) };
    let api = apis.api(&apis.git, &namespace);
    let url = text(data, "/spec/url").unwrap_or_default();
    let (branch, tag) = (text(data, "/spec/ref/branch"), text(data, "/spec/ref/tag"));
    // A semver range follows the remote's `semver` head (the test sets it to the tag it
    // means to win).
    let semver = text(data, "/spec/ref/semver").map(|_| "semver");
    let name_ref = tag.or(semver).or(branch).unwrap_or("master");
    let old = text(data, "/status/artifact/revision").map(str::to_string);
    let Some(head) = remote.head(url, name_ref) else {
        let failure = json!({"status": {
            "lastHandledReconcileAt": token,
            "conditions": [{"type": "Ready", "status": "False", "reason": "GitOperationFailed",
                            "message": format!("failed to checkout and determine revision: reference '{name_ref}' not found"),
                            "lastTransitionTime": now_rfc3339()}]}});
        return patch_status(&api, &name, &failure).await;
    };
    let revision = format!("{name_ref}@sha1:{head}");
    let now = now_rfc3339();
    let conditions = json!({"status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "Succeeded", "message": format!("stored artifact for revision '{revision}'"),
         "observedGeneration": generation, "lastTransitionTime": now},
        {"type": "ArtifactInStorage", "status": "True", "reason": "Succeeded", "message": format!("stored artifact for revision '{revision}'"),
         "observedGeneration": generation, "lastTransitionTime": now}]}});
    patch_status(&api, &name, &conditions).await?;
    let changed = old.as_deref() != Some(revision.as_str());
    let artifact_time = if changed {
        now.clone()
    } else {
        text(data, "/status/artifact/lastUpdateTime")
            .unwrap_or(&now)
            .to_string()
    };
    let rest = json!({"status": {
        "observedGeneration": generation,
        "lastHandledReconcileAt": token,
        "artifact": {"revision": revision, "lastUpdateTime": artifact_time,
                     "digest": format!("sha256:{}", "0".repeat(64)),
                     "path": format!("gitrepository/{namespace}/{name}/{head}.tar.gz"),
                     "url": format!("http://source-controller.flux-system.svc.cluster.local./gitrepository/{namespace}/{name}/{head}.tar.gz"),
                     "size": 1234}}});
    patch_status(&api, &name, &rest).await?;
    if changed {
        let kustomizations = apis
            .api(&apis.kustomization, &namespace)
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("list kustomizations in {namespace}: {e}"))?;
        let mut state = lock(state);
        for kustomization in &kustomizations.items {
            let source = text(&kustomization.data, "/spec/sourceRef/name");
            let kind = text(&kustomization.data, "/spec/sourceRef/kind");
            let source_namespace =
                text(&kustomization.data, "/spec/sourceRef/namespace").unwrap_or(&namespace);
            if kind == Some("GitRepository")
                && source == Some(&name)
                && source_namespace == namespace
            {
                let (ks_namespace, ks_name) = id(kustomization);
                state.applying.insert(
                    format!("{ks_namespace}/{ks_name}"),
                    (Instant::now() + behaviour.apply_delay, revision.clone()),
                );
            }
        }
    }
    Ok(())
}

async fn apply_if_due(
    apis: &Apis,
    state: &Arc<Mutex<State>>,
    behaviour: &Behaviour,
    kustomization: &DynamicObject,
) -> Result<(), String> {
    let (namespace, name) = id(kustomization);
    let key = format!("{namespace}/{name}");
    let due = {
        let mut state = lock(state);
        match state.applying.get(&key).cloned() {
            Some((due, revision)) if Instant::now() >= due => {
                state.applying.remove(&key);
                Some(revision)
            }
            _ => None,
        }
    };
    let Some(revision) = due else { return Ok(()) };
    let api = apis.api(&apis.kustomization, &namespace);
    let generation = kustomization.metadata.generation.unwrap_or(1);
    let now = now_rfc3339();
    let progressing = json!({"status": {
        "lastAttemptedRevision": revision,
        "conditions": [
            {"type": "Ready", "status": "Unknown", "reason": "Progressing", "message": "Reconciliation in progress", "lastTransitionTime": now},
            {"type": "Reconciling", "status": "True", "reason": "Progressing",
             "message": format!("Building manifests for revision {revision} with a timeout of 5m0s"), "lastTransitionTime": now}]}});
    patch_status(&api, &name, &progressing).await?;
    if behaviour.never_apply {
        return Ok(());
    }
    let commit = revision.rsplit(':').next().unwrap_or_default();
    let done = match behaviour.fail_build.get(commit) {
        Some(message) => json!({"status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": "BuildFailed", "message": message, "lastTransitionTime": now_rfc3339()},
            {"type": "Reconciling", "status": "True", "reason": "ProgressingWithRetry",
             "message": format!("Building manifests for revision {revision} with a timeout of 5m0s"), "lastTransitionTime": now}]}}),
        None => json!({"status": {
            "observedGeneration": generation,
            "lastAppliedRevision": revision,
            "conditions": [{"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded",
                            "message": format!("Applied revision: {revision}"), "lastTransitionTime": now_rfc3339()}]}}),
    };
    patch_status(&api, &name, &done).await?;
    if !behaviour.fail_build.contains_key(commit) {
        lock(state).applied.push(Applied {
            kustomization: key,
            revision,
            at: Instant::now(),
        });
    }
    Ok(())
}

async fn patch_status(api: &Api<DynamicObject>, name: &str, patch: &Value) -> Result<(), String> {
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(|_| ())
        .map_err(|e| format!("patch status of {name}: {e}"))
}

/// A Kustomization of `source` (a GitRepository in the same namespace), as a manifest.
pub fn kustomization_manifest(namespace: &str, name: &str, source: &str) -> String {
    json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"interval": "10m", "prune": true, "path": "./deploy",
                 "sourceRef": {"kind": "GitRepository", "name": source}}
    })
    .to_string()
}
