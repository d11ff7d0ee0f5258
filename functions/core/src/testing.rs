//! In-memory stand-ins for the external systems behind the ports, for handler unit tests.
//! They record what they were asked and answer what the test scripted; the real systems
//! are exercised by the end-to-end tests.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::confirm::message::Confirmation;
use crate::confirm::objects::{HelmRelease, Kustomization};
use crate::flux::artifacts::{ArtifactKind, ArtifactObject};
use crate::flux::{GitRepository, ObjectRef, Receiver};
use crate::gitlab_api::{ApiError, ApiRequest, ApiResponse, Method};
use crate::outcome::classify::{TriggerFailure, TriggerResponse};
use crate::ports::*;
use crate::push::{Dispatch, Push};
use crate::registry::{ClusterEntry, ClusterListing, RouteListing};
use crate::trigger::request::{RequestTarget, TriggerRequest};

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
pub struct MemoryQueue {
    pub pushes: Mutex<Vec<Push>>,
    pub dispatches: Mutex<Vec<Dispatch>>,
    /// Calls that fail before the queue works again (`u32::MAX`: down for good).
    pub failures_left: Mutex<u32>,
}

impl MemoryQueue {
    pub fn down() -> Self {
        Self {
            failures_left: Mutex::new(u32::MAX),
            ..Self::default()
        }
    }

    fn fails(&self) -> bool {
        let mut left = lock(&self.failures_left);
        match *left {
            0 => false,
            u32::MAX => true,
            n => {
                *left = n - 1;
                true
            }
        }
    }
}

impl PushPublisher for MemoryQueue {
    async fn publish_pushes(&self, pushes: &[Push]) -> Result<(), QueueError> {
        if self.fails() {
            return Err(QueueError::new(
                "queue endpoint https://sqs.internal/123/intake.fifo unreachable",
            ));
        }
        lock(&self.pushes).extend_from_slice(pushes);
        Ok(())
    }
}

impl DispatchPublisher for MemoryQueue {
    async fn publish_dispatches(&self, dispatches: &[Dispatch]) -> Result<(), QueueError> {
        if self.fails() {
            return Err(QueueError::new("dispatch queue unreachable"));
        }
        lock(&self.dispatches).extend_from_slice(dispatches);
        Ok(())
    }
}

#[derive(Default)]
pub struct StaticRegistry {
    pub entries: Vec<ClusterEntry>,
    /// Entries that cannot be used, with what `cluster(name)` answers for each.
    pub unusable: Vec<(String, RegistryReadError)>,
    pub unavailable: bool,
    pub invalidated: Mutex<Vec<String>>,
}

impl StaticRegistry {
    fn down(&self) -> Result<(), RegistryReadError> {
        if self.unavailable {
            return Err(RegistryReadError::Unavailable(
                "secrets manager timed out".into(),
            ));
        }
        Ok(())
    }
}

/// Route's view: an `Invalid` entry's subscriptions are unknown (unusable); an
/// `Unavailable` one's are its last good ones, which this registry does not have, so it is
/// not routed at all (as the registry index never reports one: see `registry::index`).
impl RouteTable for StaticRegistry {
    async fn routes(&self) -> Result<Arc<RouteListing>, RegistryReadError> {
        self.down()?;
        let listing = ClusterListing {
            entries: self.entries.clone(),
            unusable: self
                .unusable
                .iter()
                .filter(|(_, error)| matches!(error, RegistryReadError::Invalid { .. }))
                .map(|(name, _)| name.clone())
                .collect(),
        };
        let mut routes = listing.routes();
        routes.unusable.sort();
        routes.unusable.dedup();
        Ok(Arc::new(routes))
    }
}

impl ClusterRegistry for StaticRegistry {
    async fn cluster(&self, name: &str) -> Result<Option<Arc<ClusterEntry>>, RegistryReadError> {
        self.down()?;
        if let Some((_, error)) = self.unusable.iter().find(|(unusable, _)| unusable == name) {
            return Err(error.clone());
        }
        Ok(self
            .entries
            .iter()
            .find(|e| e.name == name)
            .cloned()
            .map(Arc::new))
    }

    fn invalidate(&self, name: &str) {
        lock(&self.invalidated).push(name.to_string());
    }
}

/// A queue that records how each message was settled, and can refuse: `down` makes every
/// call fail; `refuse_retries` / `refuse_dead_letters` only those.
#[derive(Default)]
pub struct MemorySettle {
    pub acknowledged: Mutex<Vec<String>>,
    /// When each acknowledgement happened (tokio's clock, which tests may pause).
    pub acknowledged_at: Mutex<Vec<(String, tokio::time::Instant)>>,
    pub retried_in_place: Mutex<Vec<(String, u32)>>,
    pub scheduled: Mutex<Vec<(Dispatch, u32)>>,
    pub dead_letters: Mutex<Vec<(String, String, DeadLetterReason)>>,
    pub down: Mutex<bool>,
    pub refuse_retries: Mutex<bool>,
    pub refuse_dead_letters: Mutex<bool>,
    /// Confirmations scheduled on the confirm queue, with their delays.
    pub confirmations: Mutex<Vec<(Confirmation, u32)>>,
    pub refuse_confirmations: Mutex<bool>,
}

impl MemorySettle {
    fn refuse(&self, specific: &Mutex<bool>) -> Result<(), QueueError> {
        if *lock(&self.down) || *lock(specific) {
            return Err(QueueError::new("queue unavailable"));
        }
        Ok(())
    }
}

impl Settle for MemorySettle {
    async fn acknowledge(&self, message: &QueueMessage) -> Result<(), QueueError> {
        self.refuse(&Mutex::new(false))?;
        lock(&self.acknowledged).push(message.id.clone());
        lock(&self.acknowledged_at).push((message.id.clone(), tokio::time::Instant::now()));
        Ok(())
    }

    async fn retry_in_place(
        &self,
        message: &QueueMessage,
        delay_secs: u32,
    ) -> Result<(), QueueError> {
        self.refuse(&Mutex::new(false))?;
        lock(&self.retried_in_place).push((message.id.clone(), delay_secs));
        Ok(())
    }

    async fn schedule_retry(&self, dispatch: &Dispatch, delay_secs: u32) -> Result<(), QueueError> {
        self.refuse(&self.refuse_retries)?;
        lock(&self.scheduled).push((dispatch.clone(), delay_secs));
        Ok(())
    }

    async fn dead_letter(
        &self,
        message: &QueueMessage,
        body: &str,
        reason: &DeadLetterReason,
    ) -> Result<(), QueueError> {
        self.refuse(&self.refuse_dead_letters)?;
        lock(&self.dead_letters).push((message.id.clone(), body.to_string(), reason.clone()));
        Ok(())
    }

    async fn schedule_confirmation(
        &self,
        confirmation: &Confirmation,
        delay_secs: u32,
    ) -> Result<(), QueueError> {
        self.refuse(&self.refuse_confirmations)?;
        lock(&self.confirmations).push((confirmation.clone(), delay_secs));
        Ok(())
    }
}

/// Tokio's clock (paused in tests that cross a deadline), starting at a fixed time; with
/// `run`, also a run's monotonic clock (as `serve` has), counting from `started`.
pub struct TestClock {
    pub start: time::OffsetDateTime,
    pub started: tokio::time::Instant,
    pub run: Option<u64>,
}

impl Default for TestClock {
    fn default() -> Self {
        Self {
            start: time::OffsetDateTime::from_unix_timestamp(1_763_800_000)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
            started: tokio::time::Instant::now(),
            run: None,
        }
    }
}

impl Clock for TestClock {
    fn now(&self) -> time::OffsetDateTime {
        let elapsed = self.started.elapsed();
        self.start + time::Duration::try_from(elapsed).unwrap_or(time::Duration::ZERO)
    }

    async fn sleep(&self, duration: std::time::Duration) {
        tokio::time::sleep(duration).await;
    }

    fn run_instant(&self) -> Option<crate::push::RunInstant> {
        let nanos = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.run.map(|run| crate::push::RunInstant { run, nanos })
    }
}

/// A cluster: Flux objects as JSON, and scripted answers per request path.
#[derive(Default)]
pub struct FakeCluster {
    pub repositories: Mutex<Vec<serde_json::Value>>,
    pub receivers: Mutex<Vec<serde_json::Value>>,
    /// Receivers after a token rotation: what a fresh list returns.
    pub receivers_after_rotation: Mutex<Option<Vec<serde_json::Value>>>,
    /// GitRepositories as a fresh list returns them, when they differ from the cached
    /// ones (Flux has moved on since the cache was filled).
    pub repositories_fresh: Mutex<Option<Vec<serde_json::Value>>>,
    pub list_failure: Mutex<Option<TriggerFailure>>,
    /// Answers the consumer lists (Kustomizations, HelmReleases) only.
    pub consumer_list_failure: Mutex<Option<TriggerFailure>>,
    /// Answers by request path (or `patch:ns/name`), consumed in order; default 200.
    pub answers: Mutex<BTreeMap<String, VecDeque<Result<TriggerResponse, TriggerFailure>>>>,
    pub sent: Mutex<Vec<(String, TriggerRequest)>>,
    pub patched: Mutex<Vec<(String, ObjectRef, Vec<u8>)>>,
    pub lists: Mutex<Vec<(String, String, bool)>>,
    /// What `/readyz` says: `None` is ready.
    pub unready: Mutex<Option<String>>,
    pub readiness_checks: Mutex<usize>,
    /// Clusters whose apiserver never answers (every call waits forever).
    pub hung: Mutex<Vec<String>>,
    pub kustomizations: Mutex<Vec<serde_json::Value>>,
    pub helm_releases: Mutex<Vec<serde_json::Value>>,
    /// Objects of the artifact kinds, as the apiserver returns them.
    pub artifacts: Mutex<Vec<(ArtifactKind, serde_json::Value)>>,
    /// Artifact objects patched: cluster, kind, object, body.
    pub patched_objects: Mutex<Vec<PatchedObject>>,
}

/// An artifact object a [`FakeCluster`] was asked to patch: cluster, kind, object, body.
pub type PatchedObject = (String, ArtifactKind, ObjectRef, Vec<u8>);

pub fn status(code: u16) -> TriggerResponse {
    TriggerResponse {
        status: code,
        content_type: None,
        body: Vec::new(),
    }
}

pub fn api_status(code: u16, message: &str) -> TriggerResponse {
    TriggerResponse {
        status: code,
        content_type: Some("application/json".into()),
        body: serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code})
            .to_string()
            .into_bytes(),
    }
}

impl FakeCluster {
    /// A hung apiserver: waits forever for this cluster's calls.
    async fn hang_if_hung(&self, cluster: &ClusterEntry) {
        if lock(&self.hung).contains(&cluster.name) {
            std::future::pending::<()>().await;
        }
    }

    pub fn answer(&self, key: &str, answers: Vec<Result<TriggerResponse, TriggerFailure>>) {
        lock(&self.answers)
            .entry(key.to_string())
            .or_default()
            .extend(answers);
    }

    fn next_answer(&self, key: &str) -> Result<TriggerResponse, TriggerFailure> {
        lock(&self.answers)
            .get_mut(key)
            .and_then(VecDeque::pop_front)
            .unwrap_or_else(|| Ok(status(200)))
    }

    pub fn sent_paths(&self) -> Vec<String> {
        lock(&self.sent)
            .iter()
            .map(|(_, r)| match &r.target {
                RequestTarget::ApiServerPath(p) => p.clone(),
                RequestTarget::Absolute(u) => u.to_string(),
            })
            .collect()
    }
}

impl FluxDiscovery for FakeCluster {
    async fn git_repositories(
        &self,
        cluster: &ClusterEntry,
        namespace: &str,
        fresh: bool,
    ) -> Result<Vec<GitRepository>, TriggerFailure> {
        self.hang_if_hung(cluster).await;
        lock(&self.lists).push((
            cluster.name.clone(),
            format!("gitrepositories/{namespace}"),
            fresh,
        ));
        if let Some(failure) = lock(&self.list_failure).clone() {
            return Err(failure);
        }
        let fresh_list = lock(&self.repositories_fresh).clone();
        let source = match (fresh, fresh_list) {
            (true, Some(fresh_list)) => fresh_list,
            _ => lock(&self.repositories).clone(),
        };
        Ok(source
            .iter()
            .map(GitRepository::from_json)
            .filter(|r| r.id.namespace == namespace)
            .collect())
    }

    async fn receivers(
        &self,
        cluster: &ClusterEntry,
        namespace: &str,
        fresh: bool,
    ) -> Result<Vec<Receiver>, TriggerFailure> {
        lock(&self.lists).push((
            cluster.name.clone(),
            format!("receivers/{namespace}"),
            fresh,
        ));
        if let Some(failure) = lock(&self.list_failure).clone() {
            return Err(failure);
        }
        let rotated = lock(&self.receivers_after_rotation).clone();
        let source = match (fresh, rotated) {
            (true, Some(rotated)) => rotated,
            _ => lock(&self.receivers).clone(),
        };
        Ok(source
            .iter()
            .map(Receiver::from_json)
            .filter(|r| r.id.namespace == namespace)
            .collect())
    }

    async fn artifact_objects(
        &self,
        cluster: &ClusterEntry,
        namespace: &str,
        kind: ArtifactKind,
        fresh: bool,
    ) -> Result<Vec<ArtifactObject>, TriggerFailure> {
        self.hang_if_hung(cluster).await;
        lock(&self.lists).push((
            cluster.name.clone(),
            format!("{}/{namespace}", kind.plural()),
            fresh,
        ));
        if let Some(failure) = lock(&self.list_failure).clone() {
            return Err(failure);
        }
        Ok(lock(&self.artifacts)
            .iter()
            .filter(|(listed, _)| *listed == kind)
            .map(|(_, value)| ArtifactObject::from_json(kind, value))
            .filter(|object| object.id.namespace == namespace)
            .collect())
    }
}

impl ApiserverReadiness for FakeCluster {
    async fn apiserver_ready(&self, _cluster: &ClusterEntry) -> Result<(), String> {
        *lock(&self.readiness_checks) += 1;
        match lock(&self.unready).clone() {
            None => Ok(()),
            Some(why) => Err(why),
        }
    }
}

impl TriggerSender for FakeCluster {
    async fn send(
        &self,
        cluster: &ClusterEntry,
        request: &TriggerRequest,
    ) -> Result<TriggerResponse, TriggerFailure> {
        let key = match &request.target {
            RequestTarget::ApiServerPath(p) => p.clone(),
            RequestTarget::Absolute(u) => u.to_string(),
        };
        self.hang_if_hung(cluster).await;
        lock(&self.sent).push((cluster.name.clone(), request.clone()));
        self.next_answer(&key)
    }
}

impl Annotator for FakeCluster {
    async fn annotate(
        &self,
        cluster: &ClusterEntry,
        repository: &ObjectRef,
        merge_patch: &[u8],
    ) -> Result<TriggerResponse, TriggerFailure> {
        lock(&self.patched).push((
            cluster.name.clone(),
            repository.clone(),
            merge_patch.to_vec(),
        ));
        self.next_answer(&format!("patch:{repository}"))
    }

    async fn annotate_object(
        &self,
        cluster: &ClusterEntry,
        kind: ArtifactKind,
        object: &ObjectRef,
        merge_patch: &[u8],
    ) -> Result<TriggerResponse, TriggerFailure> {
        lock(&self.patched_objects).push((
            cluster.name.clone(),
            kind,
            object.clone(),
            merge_patch.to_vec(),
        ));
        self.next_answer(&format!("patch:{}/{object}", kind.object_prefix()))
    }
}

impl FluxConsumers for FakeCluster {
    async fn kustomizations(
        &self,
        cluster: &ClusterEntry,
        namespace: &str,
    ) -> Result<Vec<Kustomization>, TriggerFailure> {
        self.hang_if_hung(cluster).await;
        lock(&self.lists).push((
            cluster.name.clone(),
            format!("kustomizations/{namespace}"),
            true,
        ));
        if let Some(failure) = lock(&self.list_failure).clone() {
            return Err(failure);
        }
        if let Some(failure) = lock(&self.consumer_list_failure).clone() {
            return Err(failure);
        }
        Ok(lock(&self.kustomizations)
            .iter()
            .map(Kustomization::from_json)
            .filter(|k| k.id.namespace == namespace)
            .collect())
    }

    async fn helm_releases(
        &self,
        cluster: &ClusterEntry,
        namespace: &str,
    ) -> Result<Vec<HelmRelease>, TriggerFailure> {
        lock(&self.lists).push((
            cluster.name.clone(),
            format!("helmreleases/{namespace}"),
            true,
        ));
        if let Some(failure) = lock(&self.list_failure).clone() {
            return Err(failure);
        }
        if let Some(failure) = lock(&self.consumer_list_failure).clone() {
            return Err(failure);
        }
        Ok(lock(&self.helm_releases)
            .iter()
            .map(HelmRelease::from_json)
            .filter(|h| h.id.namespace == namespace)
            .collect())
    }
}

/// GitLab's API for one instance: statuses posted are kept and listed back as GitLab lists
/// them (the latest per name); scripted answers per endpoint come first.
#[derive(Default)]
pub struct FakeGitLab {
    /// Instances with a token (`https://gitlab.example.com`).
    pub configured: Vec<String>,
    /// Answers by endpoint (`create_status`, `list_statuses`, `compare`), used in order.
    pub answers: Mutex<BTreeMap<&'static str, VecDeque<Result<ApiResponse, ApiError>>>>,
    /// Every request, in order.
    pub requests: Mutex<Vec<ApiRequest>>,
    /// Statuses as posted: (id, name, state, description).
    pub statuses: Mutex<Vec<(u64, String, String, String)>>,
}

pub fn gitlab_answer(status: u16, body: serde_json::Value) -> Result<ApiResponse, ApiError> {
    Ok(ApiResponse {
        status,
        body: body.to_string().into_bytes(),
        ..ApiResponse::default()
    })
}

impl FakeGitLab {
    pub fn for_instance(instance: &str) -> Self {
        Self {
            configured: vec![instance.to_string()],
            ..Self::default()
        }
    }

    pub fn answer(&self, endpoint: &'static str, answers: Vec<Result<ApiResponse, ApiError>>) {
        lock(&self.answers)
            .entry(endpoint)
            .or_default()
            .extend(answers);
    }

    /// The (name, state) of every status post that GitLab accepted, in order.
    pub fn posted(&self) -> Vec<(String, String)> {
        lock(&self.statuses)
            .iter()
            .map(|(_, name, state, _)| (name.clone(), state.clone()))
            .collect()
    }

    pub fn calls(&self, endpoint: &str) -> usize {
        lock(&self.requests)
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .count()
    }
}

impl GitLabApi for FakeGitLab {
    fn configured(&self, instance: &str) -> bool {
        self.configured.iter().any(|i| i == instance)
    }

    async fn call(&self, instance: &str, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        if !self.configured(instance) {
            return Err(ApiError::NotConfigured {
                instance: instance.to_string(),
            });
        }
        lock(&self.requests).push(request.clone());
        if let Some(answer) = lock(&self.answers)
            .get_mut(request.endpoint)
            .and_then(VecDeque::pop_front)
        {
            if request.method == Method::Post
                && answer
                    .as_ref()
                    .is_ok_and(|r| (200..300).contains(&r.status))
            {
                self.record(request);
            }
            return answer;
        }
        match request.endpoint {
            "create_status" => {
                let id = self.record(request);
                gitlab_answer(201, serde_json::json!({"id": id}))
            }
            "list_statuses" => {
                let name = request
                    .query
                    .iter()
                    .find(|(k, _)| k == "name")
                    .map(|(_, v)| v.clone());
                let list: Vec<serde_json::Value> = lock(&self.statuses)
                    .iter()
                    .filter(|(_, n, _, _)| name.as_ref().is_none_or(|wanted| wanted == n))
                    .map(|(id, n, state, description)| {
                        serde_json::json!({"id": id, "name": n, "status": state, "description": description})
                    })
                    .collect();
                gitlab_answer(200, serde_json::Value::Array(list))
            }
            _ => gitlab_answer(404, serde_json::json!({"message": "404 Not Found"})),
        }
    }
}

impl FakeGitLab {
    fn record(&self, request: &ApiRequest) -> u64 {
        let field = |key: &str| {
            request
                .form
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let mut statuses = lock(&self.statuses);
        let id = statuses.len() as u64 + 1;
        statuses.push((id, field("name"), field("state"), field("description")));
        id
    }
}

/// Property tests of rules with cheap cases: at least 4,096 of them, and no regression
/// files (they would land outside the module's files; a failure prints its minimal input,
/// which belongs in that module's table tests).
pub fn many_cases() -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases: proptest::test_runner::Config::default().cases.max(4096),
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}
