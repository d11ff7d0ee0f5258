//! The capabilities the handlers need, one trait per capability, so each handler asks for
//! the narrowest set and adapters (SQS, Secrets Manager, kube, the embedded queue) only do I/O.
//!
//! Methods return `impl Future + Send` so handlers run on multi-threaded runtimes.

use std::future::Future;
use std::sync::Arc;

use crate::confirm::message::Confirmation;
use crate::confirm::objects::{HelmRelease, Kustomization};
use crate::flux::artifacts::{ArtifactKind, ArtifactObject};
use crate::flux::{GitRepository, ObjectRef, Receiver};
use crate::gitlab_api::{ApiError, ApiRequest, ApiResponse};
use crate::outcome::classify::{TriggerFailure, TriggerResponse};
use crate::push::{Dispatch, Push};
use crate::registry::{ClusterEntry, RegistryError, RouteListing};
use crate::trigger::request::TriggerRequest;

/// A queue refused or could not take messages. The message is for logs: it may name
/// queues or endpoints, so it is never put in an HTTP response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct QueueError {
    pub message: String,
}

impl QueueError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// One message as a consumer received it, from any queue: what the handlers read and what
/// [`Settle`] needs to settle it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    /// The queue's id for the message (SQS `MessageId`; the embedded queue's receipt).
    pub id: String,
    /// Which queue it came from, as the adapter names it (an SQS event source ARN, an
    /// embedded queue name). Opaque to the handlers.
    pub source: String,
    /// The handle that settles this delivery (SQS receipt handle). Opaque to the handlers.
    pub receipt: String,
    /// FIFO message group (empty for standard queues).
    pub group: String,
    pub body: String,
    /// `ApproximateReceiveCount`: 1 on the first delivery.
    pub receive_count: u32,
}

/// Why a message is dead-lettered: sent with it (SQS message attributes, the embedded
/// queue's columns) so `fluxrelay dlq` can show it without parsing the body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterReason {
    pub reason: String,
    /// HTTP status of the failed trigger, when there was one.
    pub status: Option<u16>,
    pub cluster: Option<String>,
    /// The push key.
    pub key: Option<String>,
    /// Attempts made in all (a retry is a new message, so its own receive count is not
    /// the whole story).
    pub attempts: Option<u32>,
}

/// Settle received messages. The rules of which to call, in what order, and what to do
/// when one fails live in `outcome::settle`; adapters only carry them out.
pub trait Settle: Sync {
    /// Delete the message: nothing more is needed of it.
    fn acknowledge(
        &self,
        message: &QueueMessage,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Leave it on its queue, received again after `delay_secs` with its receive count
    /// raised (in a FIFO queue, its group waits meanwhile).
    fn retry_in_place(
        &self,
        message: &QueueMessage,
        delay_secs: u32,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Put `dispatch` on the dispatch retry queue, delivered after `delay_secs`, outside
    /// any FIFO group (SQS: a standard queue with a per-message delay).
    fn schedule_retry(
        &self,
        dispatch: &Dispatch,
        delay_secs: u32,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Put `body` on the dead-letter queue of the message's queue, with the reason.
    fn dead_letter(
        &self,
        message: &QueueMessage,
        body: &str,
        reason: &DeadLetterReason,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Put a confirmation on the confirm queue, delivered after `delay_secs` (a start has
    /// `checks == 0` and is deduplicated per push and cluster where the queue can). Queues
    /// without a confirm queue refuse, and a dispatcher only asks when it has one.
    fn schedule_confirmation(
        &self,
        confirmation: &Confirmation,
        delay_secs: u32,
    ) -> impl Future<Output = Result<(), QueueError>> + Send {
        let _ = (confirmation, delay_secs);
        async { Err(QueueError::new("this queue has no confirm queue")) }
    }
}

/// Time, for deadlines and for when answers came: the handlers race each cluster's work
/// against `sleep`.
pub trait Clock: Sync {
    fn now(&self) -> time::OffsetDateTime;
    fn sleep(&self, duration: std::time::Duration) -> impl Future<Output = ()> + Send;
    /// Now on this process run's monotonic clock, where the process also accepts the
    /// pushes it dispatches (`serve`): what orders a push against a delivery exactly
    /// (`outcome::supersede`). `None` (the default) where ingest runs elsewhere.
    fn run_instant(&self) -> Option<crate::push::RunInstant> {
        None
    }
}

/// Durably enqueue pushes on the intake queue (group = project, dedup = push key).
/// `Ok` means every push is persisted; anything less is an error.
pub trait PushPublisher: Sync {
    fn publish_pushes(
        &self,
        pushes: &[Push],
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// Durably enqueue dispatches on the dispatch queue (group = cluster, dedup = cluster+push).
pub trait DispatchPublisher: Sync {
    fn publish_dispatches(
        &self,
        dispatches: &[Dispatch],
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryReadError {
    /// The store could not be read now; try again later.
    #[error("cluster registry unavailable: {0}")]
    Unavailable(String),
    /// The entry exists but does not validate; it will not fix itself.
    #[error("registry entry for cluster {name} is invalid: {error}")]
    Invalid { name: String, error: RegistryError },
}

/// What route reads of the registry: every cluster's name and subscriptions, and nothing
/// that reaches a cluster (no server, no credential).
pub trait RouteTable: Sync {
    /// `Err` only when the registry as a whole cannot be read and nothing was read before
    /// (a failed re-read keeps the last good subscriptions: unreadable is not unfiltered).
    fn routes(&self) -> impl Future<Output = Result<Arc<RouteListing>, RegistryReadError>> + Send;
}

/// What dispatch reads of the registry: one cluster's whole entry, credentials included.
pub trait ClusterRegistry: Sync {
    fn cluster(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Arc<ClusterEntry>>, RegistryReadError>> + Send;

    /// The cluster's credentials were rejected: re-read its entry before the next use.
    fn invalidate(&self, name: &str);
}

/// Read the Flux objects of one cluster. `fresh` bypasses any cache (after a Receiver 404,
/// whose webhook path may have changed with a token rotation).
pub trait FluxDiscovery: Sync {
    fn git_repositories(
        &self,
        cluster: &ClusterEntry,
        namespace: &str,
        fresh: bool,
    ) -> impl Future<Output = Result<Vec<GitRepository>, TriggerFailure>> + Send;

    fn receivers(
        &self,
        cluster: &ClusterEntry,
        namespace: &str,
        fresh: bool,
    ) -> impl Future<Output = Result<Vec<Receiver>, TriggerFailure>> + Send;

    /// The objects of one artifact kind (OCIRepository, HelmRepository, HelmChart,
    /// HelmRelease, ImageRepository), listed at `ArtifactKind::list_path`. Asked only for
    /// the kinds the entry's `trigger.artifact_kinds` names, and only for artifact events.
    fn artifact_objects(
        &self,
        cluster: &ClusterEntry,
        namespace: &str,
        kind: ArtifactKind,
        fresh: bool,
    ) -> impl Future<Output = Result<Vec<ArtifactObject>, TriggerFailure>> + Send;
}

/// Read the objects that consume Flux sources, in one namespace, always fresh (a
/// confirmation must see the status as it is now). A kind whose API is not served is an
/// `Err` for which [`TriggerFailure::api_not_served`] holds: the confirmation asks the
/// apiserver's readiness before it takes that as "not installed, none of them".
///
/// [`TriggerFailure::api_not_served`]: crate::outcome::classify::TriggerFailure::api_not_served
pub trait FluxConsumers: Sync {
    fn kustomizations(
        &self,
        cluster: &ClusterEntry,
        namespace: &str,
    ) -> impl Future<Output = Result<Vec<Kustomization>, TriggerFailure>> + Send;

    fn helm_releases(
        &self,
        cluster: &ClusterEntry,
        namespace: &str,
    ) -> impl Future<Output = Result<Vec<HelmRelease>, TriggerFailure>> + Send;
}

/// GitLab's REST API: one request to the API of the push's instance, with that
/// instance's token (configured by the operator; the instance only selects the entry).
/// HTTP answers are `Ok` whatever their status.
pub trait GitLabApi: Sync {
    /// Whether an API URL and token are configured for this instance.
    fn configured(&self, instance: &str) -> bool;

    fn call(
        &self,
        instance: &str,
        request: &ApiRequest,
    ) -> impl Future<Output = Result<ApiResponse, ApiError>> + Send;
}

/// No GitLab API at all: every instance is unconfigured.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoGitLab;

impl GitLabApi for NoGitLab {
    fn configured(&self, _instance: &str) -> bool {
        false
    }

    async fn call(&self, instance: &str, _request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        Err(ApiError::NotConfigured {
            instance: instance.to_string(),
        })
    }
}

/// Send one Receiver webhook: to the cluster's own apiserver (service proxy, with the
/// cluster's credentials) or to an absolute receiver URL (without them). Redirects are
/// never followed. HTTP answers are `Ok`, whatever their status; `Err` is transport only.
pub trait TriggerSender: Sync {
    fn send(
        &self,
        cluster: &ClusterEntry,
        request: &TriggerRequest,
    ) -> impl Future<Output = Result<TriggerResponse, TriggerFailure>> + Send;
}

/// Whether the cluster's apiserver says it is ready (`GET /readyz`); `Err` says why not.
/// Asked only after a denial: a starting kube-apiserver serves requests before it is ready
/// and denies valid credentials with a real 403 until its RBAC caches have synced.
pub trait ApiserverReadiness: Sync {
    fn apiserver_ready(
        &self,
        cluster: &ClusterEntry,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// JSON-merge-patch one GitRepository (annotate mode).
pub trait Annotator: Sync {
    fn annotate(
        &self,
        cluster: &ClusterEntry,
        repository: &ObjectRef,
        merge_patch: &[u8],
    ) -> impl Future<Output = Result<TriggerResponse, TriggerFailure>> + Send;

    /// JSON-merge-patch one object of an artifact kind at `ArtifactKind::object_path`
    /// (annotate mode, artifact events).
    fn annotate_object(
        &self,
        cluster: &ClusterEntry,
        kind: ArtifactKind,
        object: &ObjectRef,
        merge_patch: &[u8],
    ) -> impl Future<Output = Result<TriggerResponse, TriggerFailure>> + Send;
}
