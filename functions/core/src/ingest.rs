//! The ingest flow and its outcome taxonomy: every answer GitLab or a registry can get, with
//! its status.
//!
//! Order: size cap (413) → authentication (401) → parse (400, or 202 ignored) → the
//! instance the secrets allow (401) → enqueue (503) → 202 accepted. A 202 is sent only
//! after the enqueue succeeded. What needs no body — the declared size, the token, the
//! signature headers' shape and age, the instance header against the token — is
//! [`check_head`], which `serve` runs before it reads the body and [`ingest_from`] runs first.
//! Each sender has its own endpoint on the same listener ([`Source::for_path`]), its own
//! authentication (GitLab: token and signature; registries: the `Authorization` header)
//! and its own parser; the rest is the same for all.

use http::HeaderMap;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::artifacts::{distribution, harbor};
use crate::auth::{
    AuthConfig, AuthFailure, InstanceScope, authenticate, authenticate_registry, preauthenticate,
};
use crate::gitlab::{Delivery, INSTANCE_HEADER, MalformedEvent, ParsedEvent, parse_event};
use crate::ports::{PushPublisher, QueueError};
use crate::push::{Push, RunInstant};

/// Under the 6 MB Lambda request limit; a GitLab push with 20 commits is far smaller.
pub const DEFAULT_MAX_BODY_BYTES: usize = 5 * 1024 * 1024;

#[derive(Debug)]
pub struct IngestConfig {
    pub auth: AuthConfig,
    pub max_body_bytes: usize,
}

impl IngestConfig {
    pub fn new(auth: AuthConfig) -> Self {
        Self {
            auth,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// 202 answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Every push of the event is on the intake queue.
    Enqueued { keys: Vec<String> },
    /// Authentic, but not a push (merge request, note, `project_create`, …).
    Ignored { reason: String },
}

/// Every other answer. Messages never contain a header value, token or signature.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("request body is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("{0}")]
    Unauthenticated(#[from] AuthFailure),
    #[error("{0}")]
    Malformed(#[from] MalformedEvent),
    /// The queue error is kept for the log only; the client gets a generic message.
    #[error("the push could not be queued; nothing was accepted")]
    EnqueueFailed(#[source] QueueError),
}

impl IngestError {
    pub fn status(&self) -> u16 {
        match self {
            IngestError::TooLarge { .. } => 413,
            IngestError::Unauthenticated(_) => 401,
            IngestError::Malformed(_) => 400,
            IngestError::EnqueueFailed(_) => 503,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            IngestError::TooLarge { .. } => "too_large",
            IngestError::Unauthenticated(_) => "unauthenticated",
            IngestError::Malformed(_) => "malformed",
            IngestError::EnqueueFailed(_) => "enqueue_failed",
        }
    }
}

/// The HTTP answer, built in one place for every entrypoint (Lambda, `fluxrelay serve`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestResponse {
    pub status: u16,
    /// `application/json`
    pub body: String,
}

impl IngestResponse {
    pub fn from_result(result: &Result<Accepted, IngestError>) -> Self {
        let (status, body) = match result {
            Ok(Accepted::Enqueued { keys }) => (
                202,
                json!({"status": "accepted", "pushes": keys.len(), "keys": keys}),
            ),
            Ok(Accepted::Ignored { reason }) => {
                (202, json!({"status": "ignored", "reason": reason}))
            }
            Err(error) => (
                error.status(),
                json!({"status": "rejected", "error": error.code(), "message": error.to_string()}),
            ),
        };
        Self {
            status,
            body: body.to_string(),
        }
    }
}

pub fn rfc3339(now: OffsetDateTime) -> String {
    now.format(&Rfc3339).unwrap_or_default()
}

/// GitLab's delivery header (17.4+): the same on a re-run or a manual resend of one
/// delivery, different for every other delivery, including the same push's project, group
/// and system hooks (`X-Gitlab-Event-UUID` and `X-Gitlab-Webhook-UUID` are new on every
/// attempt: docs/design.md, "Deduplication").
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Longest `Idempotency-Key` taken as one (GitLab sends a 36-character UUID).
const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// What makes this delivery distinct, and so what the queues may deduplicate on: GitLab's
/// `Idempotency-Key` when it sent exactly one plausible value, else `request_id`, which
/// the entrypoint makes unique per request (so the delivery is never deduplicated). A
/// missing or odd key only costs a duplicate trigger; it never drops a push.
pub fn delivery_id(headers: &HeaderMap, request_id: &str) -> String {
    let mut keys = headers.get_all(IDEMPOTENCY_KEY_HEADER).iter();
    let key = match (keys.next(), keys.next()) {
        (Some(value), None) => value.to_str().ok().filter(|key| {
            (1..=MAX_IDEMPOTENCY_KEY_LEN).contains(&key.len())
                && key.bytes().all(|b| b.is_ascii_graphic())
        }),
        _ => None,
    };
    match key {
        Some(key) => format!("idempotency-key:{key}"),
        None => format!("request:{request_id}"),
    }
}

/// The checks that need only the request head, in [`ingest_from`]'s order: a declared
/// `Content-Length` over the cap (413), then the sender's credentials (401). For GitLab:
/// the token, the signature headers and the `X-Gitlab-Instance` header against the
/// instances the token allows; for a registry: its `Authorization` header, which decides
/// alone. A request refused here is refused by [`ingest_from`] with the same answer, so an
/// entrypoint may answer it without reading the body. With only signing keys configured, a
/// stranger who sends well-formed, fresh signature headers gets past this and costs a body
/// read (up to the cap): configure a token as well to refuse strangers before their body.
pub fn check_head(
    source: Source,
    config: &IngestConfig,
    headers: &HeaderMap,
    now_unix: i64,
) -> Result<(), IngestError> {
    if let Some(size) = declared_length(headers).filter(|size| *size > config.max_body_bytes) {
        return Err(IngestError::TooLarge {
            size,
            limit: config.max_body_bytes,
        });
    }
    match source {
        Source::Gitlab => check_gitlab_head(config, headers, now_unix),
        Source::Distribution | Source::Harbor => Ok(authenticate_registry(&config.auth, headers)?),
    }
}

fn check_gitlab_head(
    config: &IngestConfig,
    headers: &HeaderMap,
    now_unix: i64,
) -> Result<(), IngestError> {
    let scope = preauthenticate(&config.auth, headers, now_unix)?;
    // The header is the instance of every push in the request when present; when it is
    // absent (older GitLab), the instance comes from the body and is checked after parsing.
    let mut instances = headers.get_all(INSTANCE_HEADER).iter();
    if let (Some(instance), None) = (instances.next(), instances.next()) {
        // Written as the push's instance will be; a header that is no URL is not used.
        let instance = instance.to_str().ok().and_then(crate::gitlab::origin);
        if instance.is_some_and(|instance| !scope.allows(&instance)) {
            return Err(IngestError::Unauthenticated(AuthFailure::OtherInstance));
        }
    }
    Ok(())
}

/// `Content-Length` when it is one plain number.
fn declared_length(headers: &HeaderMap) -> Option<usize> {
    let mut values = headers.get_all(http::header::CONTENT_LENGTH).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => value.to_str().ok()?.parse().ok(),
        _ => None,
    }
}

/// Every push must come from an instance the request's secrets allow: a delivery signed
/// for one GitLab instance and replayed with another's `X-Gitlab-Instance` is refused.
fn check_instances(scope: &InstanceScope, pushes: &[Push]) -> Result<(), IngestError> {
    if pushes.iter().all(|push| scope.allows(&push.instance)) {
        Ok(())
    } else {
        Err(IngestError::Unauthenticated(AuthFailure::OtherInstance))
    }
}

/// Who sends to an endpoint, and so how it is authenticated and parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// GitLab project, group and system hooks, including pipeline hooks: `POST /webhook`.
    Gitlab,
    /// CNCF Distribution and GitLab container registry notifications:
    /// `POST /registry/distribution`.
    Distribution,
    /// Harbor webhooks (Default or CloudEvents): `POST /registry/harbor`.
    Harbor,
}

impl Source {
    pub const GITLAB_PATH: &str = "/webhook";
    pub const DISTRIBUTION_PATH: &str = "/registry/distribution";
    pub const HARBOR_PATH: &str = "/registry/harbor";

    /// The sender of an endpoint path; `None` for a path that is no endpoint.
    pub fn for_path(path: &str) -> Option<Source> {
        match path {
            Self::GITLAB_PATH => Some(Source::Gitlab),
            Self::DISTRIBUTION_PATH => Some(Source::Distribution),
            Self::HARBOR_PATH => Some(Source::Harbor),
            _ => None,
        }
    }

    /// The name metrics and log lines use.
    pub fn name(self) -> &'static str {
        match self {
            Source::Gitlab => "gitlab",
            Source::Distribution => "distribution",
            Source::Harbor => "harbor",
        }
    }
}

/// When a webhook was accepted: the wall clock (every push's `received_at`) and, where the
/// accepting process also dispatches (`serve`), the same moment on its run's monotonic
/// clock (`Push::accepted_in_run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acceptance {
    pub at: OffsetDateTime,
    pub in_run: Option<RunInstant>,
}

impl From<OffsetDateTime> for Acceptance {
    fn from(at: OffsetDateTime) -> Self {
        Acceptance { at, in_run: None }
    }
}

/// Authenticate, parse and durably enqueue one GitLab webhook ([`ingest_from`] with
/// [`Source::Gitlab`]).
pub async fn ingest(
    config: &IngestConfig,
    queue: &impl PushPublisher,
    headers: &HeaderMap,
    body: &[u8],
    now: impl Into<Acceptance>,
    request_id: &str,
) -> Result<Accepted, IngestError> {
    ingest_from(
        Source::Gitlab,
        config,
        queue,
        headers,
        body,
        now,
        request_id,
    )
    .await
}

/// Authenticate, parse and durably enqueue one webhook from `source`. `request_id` must be
/// unique per request (the Lambda request id; `serve` makes its own): it identifies
/// deliveries that carry no `Idempotency-Key` or event id. [`admit`], then
/// [`Admitted::publish`].
pub async fn ingest_from(
    source: Source,
    config: &IngestConfig,
    queue: &impl PushPublisher,
    headers: &HeaderMap,
    body: &[u8],
    now: impl Into<Acceptance>,
    request_id: &str,
) -> Result<Accepted, IngestError> {
    admit(source, config, headers, body, now, request_id)?
        .publish(queue)
        .await
}

/// A webhook that passed every check and was parsed: what is left is its enqueue. It no
/// longer needs the request's body, so a caller that bounds the bodies it holds
/// (`serve`'s `webhook_concurrency`) can let the body go before the enqueue's wait.
#[derive(Debug)]
#[must_use = "an admitted webhook is accepted only once it is published"]
pub enum Admitted {
    /// Nothing to enqueue: answered 202 ignored.
    Ignored { reason: String },
    /// One or more pushes, all to be enqueued before the 202.
    Pushes(Vec<Push>),
}

impl Admitted {
    /// Enqueue the pushes (durably, as the queue promises) and give the answer.
    pub async fn publish(self, queue: &impl PushPublisher) -> Result<Accepted, IngestError> {
        match self {
            Admitted::Ignored { reason } => Ok(Accepted::Ignored { reason }),
            Admitted::Pushes(pushes) => {
                queue
                    .publish_pushes(&pushes)
                    .await
                    .map_err(IngestError::EnqueueFailed)?;
                Ok(Accepted::Enqueued {
                    keys: pushes.into_iter().map(|push| push.key).collect(),
                })
            }
        }
    }
}

/// Every check and the parse of one webhook from `source`, in the order of the module's
/// head: size, authentication, parse, the instance the secrets allow. Nothing is enqueued.
pub fn admit(
    source: Source,
    config: &IngestConfig,
    headers: &HeaderMap,
    body: &[u8],
    now: impl Into<Acceptance>,
    request_id: &str,
) -> Result<Admitted, IngestError> {
    let Acceptance { at: now, in_run } = now.into();
    if body.len() > config.max_body_bytes {
        return Err(IngestError::TooLarge {
            size: body.len(),
            limit: config.max_body_bytes,
        });
    }
    check_head(source, config, headers, now.unix_timestamp())?;
    let scope = match source {
        Source::Gitlab => {
            authenticate(&config.auth, headers, body, now.unix_timestamp())?.instances
        }
        // The registry's token, checked with the head, vouches for no GitLab instance; its
        // pushes name their registry.
        Source::Distribution | Source::Harbor => InstanceScope::Any,
    };
    let received_at = rfc3339(now);
    let id = delivery_id(headers, request_id);
    let delivery = Delivery {
        received_at: &received_at,
        id: &id,
    };
    let parsed = match source {
        Source::Gitlab => parse_event(headers, body, &delivery)?,
        Source::Distribution => distribution::parse(body, &delivery)?,
        Source::Harbor => harbor::parse(body, &delivery)?,
    };
    let mut pushes = match parsed {
        ParsedEvent::Ignored { reason } => return Ok(Admitted::Ignored { reason }),
        ParsedEvent::Pushes(pushes) if pushes.is_empty() => {
            return Ok(Admitted::Ignored {
                reason: "event has no ref changes".to_string(),
            });
        }
        ParsedEvent::Pushes(pushes) => pushes,
    };
    check_instances(&scope, &pushes)?;
    for push in &mut pushes {
        push.accepted_in_run = in_run;
    }
    Ok(Admitted::Pushes(pushes))
}

#[cfg(test)]
#[path = "ingest_test.rs"]
mod tests;

#[cfg(test)]
#[path = "ingest_bad_input_test.rs"]
mod bad_input_tests;

#[cfg(test)]
#[path = "ingest_instance_test.rs"]
mod instance_tests;
