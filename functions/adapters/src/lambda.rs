//! AWS Lambda events ↔ the core handlers: turn SQS records into queue messages, and the
//! handlers' verdicts into a partial batch response, visibility backoff and dead-letter
//! sends. One JSON log line per outcome, each with the delivery key, project, ref and
//! cluster.

use std::collections::HashMap;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use fluxrelay_core::handlers::dispatch::{DispatchMessage, DispatchReport, Verdict};
use fluxrelay_core::handlers::route::{IntakeMessage, RouteReport};
use fluxrelay_core::ingest::{Accepted, IngestError, IngestResponse};

use crate::outcome_log;
use crate::sqs::{DeadLetterReason, SqsQueue};

/// JSON logs on stdout (CloudWatch adds the timestamp and request id), level from `RUST_LOG`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .without_time()
        .with_env_filter(filter)
        .try_init();
}

/// The environment variable, or a start-up error that names it.
pub fn required_env(name: &str) -> Result<String, String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
        .ok_or_else(|| format!("environment variable {name} is not set"))
}

fn attribute<'a>(record: &'a SqsMessage, name: &str) -> Option<&'a str> {
    record.attributes.get(name).map(String::as_str)
}

pub fn intake_messages(event: &SqsEvent) -> Vec<IntakeMessage> {
    event
        .records
        .iter()
        .map(|record| IntakeMessage {
            id: record.message_id.clone().unwrap_or_default(),
            group: attribute(record, "MessageGroupId")
                .unwrap_or_default()
                .to_string(),
            body: record.body.clone().unwrap_or_default(),
        })
        .collect()
}

pub fn dispatch_messages(event: &SqsEvent) -> Vec<DispatchMessage> {
    event
        .records
        .iter()
        .map(|record| DispatchMessage {
            id: record.message_id.clone().unwrap_or_default(),
            body: record.body.clone().unwrap_or_default(),
            receive_count: attribute(record, "ApproximateReceiveCount")
                .and_then(|count| count.parse().ok())
                .unwrap_or(1),
        })
        .collect()
}

fn batch_response<'a>(failed: impl IntoIterator<Item = &'a str>) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for id in failed {
        response.add_failure(id.to_string());
    }
    response
}

/// Logs each routed push and reports the failed ones back to SQS.
pub fn route_response(report: &RouteReport) -> SqsBatchResponse {
    outcome_log::route(report);
    batch_response(report.failed_ids())
}

/// Acts on the dispatch verdicts: retries get a visibility backoff and are reported as
/// failures; dead letters are sent to the DLQ with their reason, then acknowledged. A
/// dead letter that cannot be sent is reported as a failure instead, so nothing is lost.
pub async fn settle_dispatch(
    queue: &SqsQueue,
    dlq_url: &str,
    event: &SqsEvent,
    report: &DispatchReport,
) -> SqsBatchResponse {
    let records: HashMap<&str, &SqsMessage> = event
        .records
        .iter()
        .filter_map(|r| r.message_id.as_deref().map(|id| (id, r)))
        .collect();
    outcome_log::targets(report);
    let mut failed: Vec<&str> = Vec::new();
    for message in &report.messages {
        outcome_log::dispatch(message);
        let record = records.get(message.message_id.as_str());
        let dispatch = message.dispatch.as_ref();
        let (key, _, _, cluster) = outcome_log::dispatch_fields(message);
        match &message.verdict {
            Verdict::Delivered { .. } | Verdict::NothingToTrigger => {}
            Verdict::Retry { delay_secs, .. } => {
                if let Some(handle) = record.and_then(|r| r.receipt_handle.as_deref())
                    && let Err(error) = queue.retry_later(handle, *delay_secs).await
                {
                    tracing::warn!(outcome = "backoff_failed", key, cluster, error = %error);
                }
                failed.push(&message.message_id);
            }
            Verdict::DeadLetter { reason, status } => {
                let body = record.and_then(|r| r.body.as_deref()).unwrap_or_default();
                let dead_letter = DeadLetterReason {
                    reason: reason.clone(),
                    status: *status,
                    cluster: dispatch.map(|d| d.cluster.clone()),
                    key: dispatch.map(|d| d.push.key.clone()),
                };
                // A group of its own, so `fluxrelay dlq list` can browse every dead
                // letter (FIFO hides a group's later messages while one is in flight).
                let group = &message.message_id;
                match queue
                    .dead_letter(dlq_url, body, group, &message.message_id, &dead_letter)
                    .await
                {
                    Ok(()) => outcome_log::dead_lettered(message, reason, *status),
                    Err(error) => {
                        outcome_log::dead_letter_failed(message, reason, &error);
                        failed.push(&message.message_id);
                    }
                }
            }
        }
    }
    batch_response(failed)
}

/// The HTTP answer to GitLab, and its log line.
pub fn ingest_response(
    result: &Result<Accepted, IngestError>,
) -> lambda_http::Response<lambda_http::Body> {
    outcome_log::ingest(result);
    let response = IngestResponse::from_result(result);
    lambda_http::Response::builder()
        .status(response.status)
        .header("content-type", "application/json")
        .body(lambda_http::Body::from(response.body))
        .unwrap_or_else(|_| lambda_http::Response::new(lambda_http::Body::Empty))
}

// ---- the three functions: dependencies built once per container, one handler each ----

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use fluxrelay_core::handlers::dispatch::handle_dispatch;
use fluxrelay_core::handlers::route::handle_route;
use fluxrelay_core::ingest::{IngestConfig, ingest};
use fluxrelay_core::outcome::denials::Denials;
use fluxrelay_core::outcome::retry::RetryPolicy;
use fluxrelay_core::ports::{Annotator, ApiserverReadiness, FluxDiscovery, TriggerSender};
use lambda_runtime::LambdaEvent;
use time::OffsetDateTime;
use tokio::sync::RwLock;

use crate::secrets::{SecretsRegistry, WebhookAuthError, load_webhook_auth};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The AWS configuration from the Lambda environment (region, role credentials, and
/// `AWS_ENDPOINT_URL` when set).
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// The webhook tokens and signing keys, re-read after `ttl`, and at most every
/// `refresh_floor` when a request fails authentication, so a rotated token is accepted
/// without waiting for a new container.
const DEFAULT_REFRESH_FLOOR: Duration = Duration::from_secs(10);

pub struct WebhookAuth {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
    ttl: Duration,
    refresh_floor: Duration,
    current: RwLock<(Arc<IngestConfig>, Instant)>,
}

impl WebhookAuth {
    pub async fn load(
        client: aws_sdk_secretsmanager::Client,
        secret_id: impl Into<String>,
        ttl: Duration,
    ) -> Result<Self, WebhookAuthError> {
        let secret_id = secret_id.into();
        let auth = load_webhook_auth(&client, &secret_id).await?;
        Ok(Self {
            client,
            secret_id,
            ttl,
            refresh_floor: DEFAULT_REFRESH_FLOOR,
            current: RwLock::new((Arc::new(IngestConfig::new(auth)), Instant::now())),
        })
    }

    /// The shortest time between two early re-reads after failed authentications (a flood
    /// of bad tokens must not become a flood of Secrets Manager calls).
    pub fn with_refresh_floor(mut self, floor: Duration) -> Self {
        self.refresh_floor = floor;
        self
    }

    async fn config(&self, force: bool) -> Arc<IngestConfig> {
        let (config, loaded) = self.current.read().await.clone();
        let due = if force {
            loaded.elapsed() >= self.refresh_floor
        } else {
            loaded.elapsed() >= self.ttl
        };
        if !due {
            return config;
        }
        match load_webhook_auth(&self.client, &self.secret_id).await {
            Ok(auth) => {
                let fresh = Arc::new(IngestConfig {
                    auth,
                    max_body_bytes: config.max_body_bytes,
                });
                *self.current.write().await = (fresh.clone(), Instant::now());
                fresh
            }
            Err(error) => {
                // Keep serving with what we have, and wait a full period before trying
                // again, so an outage of Secrets Manager is not called on every request.
                tracing::warn!(outcome = "webhook_secret_refresh_failed", error = %error);
                *self.current.write().await = (config.clone(), Instant::now());
                config
            }
        }
    }
}

pub struct IngestFunction {
    pub auth: WebhookAuth,
    pub queue: SqsQueue,
}

impl IngestFunction {
    pub async fn from_env() -> Result<Self, BoxError> {
        let aws = aws_config().await;
        let auth = WebhookAuth::load(
            aws_sdk_secretsmanager::Client::new(&aws),
            required_env("WEBHOOK_SECRET_ID")?,
            Duration::from_secs(300),
        )
        .await?;
        let queue = SqsQueue::new(
            aws_sdk_sqs::Client::new(&aws),
            required_env("INTAKE_QUEUE_URL")?,
        );
        Ok(Self { auth, queue })
    }

    pub async fn handle(
        &self,
        request: lambda_http::Request,
    ) -> Result<lambda_http::Response<lambda_http::Body>, std::convert::Infallible> {
        let now = OffsetDateTime::now_utc();
        let body: &[u8] = request.body().as_ref();
        let config = self.auth.config(false).await;
        let mut result = ingest(&config, &self.queue, request.headers(), body, now).await;
        if matches!(result, Err(IngestError::Unauthenticated(_))) {
            let fresh = self.auth.config(true).await;
            if !Arc::ptr_eq(&fresh, &config) {
                result = ingest(&fresh, &self.queue, request.headers(), body, now).await;
            }
        }
        Ok(ingest_response(&result))
    }
}

pub struct RouteFunction {
    pub registry: SecretsRegistry,
    pub queue: SqsQueue,
}

impl RouteFunction {
    pub async fn from_env() -> Result<Self, BoxError> {
        let aws = aws_config().await;
        Ok(Self {
            registry: registry_from_env(&aws),
            queue: SqsQueue::new(
                aws_sdk_sqs::Client::new(&aws),
                required_env("DISPATCH_QUEUE_URL")?,
            ),
        })
    }

    pub async fn handle(&self, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, BoxError> {
        let messages = intake_messages(&event.payload);
        let report = handle_route(&self.registry, &self.queue, &messages).await;
        Ok(route_response(&report))
    }
}

fn registry_from_env(aws: &aws_config::SdkConfig) -> SecretsRegistry {
    let prefix = std::env::var("REGISTRY_PREFIX")
        .unwrap_or_else(|_| crate::secrets::DEFAULT_PREFIX.to_string());
    SecretsRegistry::with_settings(
        aws_sdk_secretsmanager::Client::new(aws),
        prefix,
        crate::secrets::DEFAULT_TTL,
    )
}

pub struct DispatchFunction<C> {
    pub registry: SecretsRegistry,
    pub clusters: C,
    /// The dispatch queue itself, for visibility backoff.
    pub queue: SqsQueue,
    pub dead_letter_queue_url: String,
    pub policy: RetryPolicy,
    /// Which clusters have been denying, and since when (kept while the container is warm).
    pub denials: Denials,
}

impl<C: FluxDiscovery + TriggerSender + Annotator + ApiserverReadiness> DispatchFunction<C> {
    pub async fn from_env(clusters: C) -> Result<Self, BoxError> {
        let aws = aws_config().await;
        let mut policy = RetryPolicy::default();
        if let Ok(attempts) = std::env::var("MAX_ATTEMPTS") {
            policy.max_attempts = attempts
                .parse()
                .map_err(|_| "MAX_ATTEMPTS is not a whole number")?;
        }
        Ok(Self {
            registry: registry_from_env(&aws),
            clusters,
            queue: SqsQueue::new(
                aws_sdk_sqs::Client::new(&aws),
                required_env("DISPATCH_QUEUE_URL")?,
            ),
            dead_letter_queue_url: required_env("DISPATCH_DLQ_URL")?,
            policy,
            denials: Denials::default(),
        })
    }

    pub async fn handle(&self, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, BoxError> {
        let messages = dispatch_messages(&event.payload);
        let report = handle_dispatch(
            &self.registry,
            &self.clusters,
            &self.policy,
            &self.denials,
            &messages,
            OffsetDateTime::now_utc(),
        )
        .await;
        Ok(settle_dispatch(
            &self.queue,
            &self.dead_letter_queue_url,
            &event.payload,
            &report,
        )
        .await)
    }
}
