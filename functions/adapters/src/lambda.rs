//! AWS Lambda events ↔ the core handlers: turn SQS records into queue messages, and the
//! handlers' verdicts into a partial batch response, visibility backoff and dead-letter
//! sends. One JSON log line per outcome, each with the delivery key, project, ref and
//! cluster.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use fluxrelay_core::handlers::dispatch::DispatchReport;
use fluxrelay_core::handlers::route::RouteReport;
use fluxrelay_core::ingest::{Accepted, IngestError, IngestResponse};
use fluxrelay_core::ports::QueueMessage;

use crate::outcome_log;
use crate::sqs::{SqsQueue, SqsSettle};

/// JSON logs on stdout (CloudWatch adds the timestamp and request id), level from `RUST_LOG`.
pub fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(log_layer(std::io::stdout))
        .try_init();
}

/// `RUST_LOG` as levels by target (`info`, `warn,fluxrelay_adapters=debug`); unset or not
/// understood: `info`. `filter::Targets` rather than `EnvFilter`: the functions need no
/// span-field directives, and `EnvFilter`'s regex engine was a part of every binary's size.
pub fn log_filter(rust_log: Option<&str>) -> tracing_subscriber::filter::Targets {
    let info = || {
        tracing_subscriber::filter::Targets::new()
            .with_default(tracing_subscriber::filter::LevelFilter::INFO)
    };
    match rust_log.map(str::trim).filter(|value| !value.is_empty()) {
        Some(directives) => directives.parse().unwrap_or_else(|_| info()),
        None => info(),
    }
}

/// The functions' log lines: one JSON object each, with every span the line is logged in
/// (the batch's cluster, the call's push key, project, ref and target), so an adapter's
/// own lines can be followed by push and cluster; written through [`Redacting`]: the span
/// list carries kube-client's `http.url` at debug, and a webhook path may be a secret.
///
/// [`Redacting`]: crate::log_writer::Redacting
pub fn log_layer<S, W>(writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(true)
        .without_time()
        .with_writer(crate::log_writer::Redacting(writer))
}

/// A function's environment, read once at start-up: every missing variable is reported
/// in one error, as `serve` reports every problem of its config at once.
#[derive(Debug, Default)]
pub struct Env {
    missing: Vec<&'static str>,
}

impl Env {
    /// The variable's value; an unset or blank one is remembered for [`Env::check`].
    pub fn required(&mut self, name: &'static str) -> String {
        match std::env::var(name)
            .ok()
            .filter(|value| !value.trim().is_empty())
        {
            Some(value) => value,
            None => {
                self.missing.push(name);
                String::new()
            }
        }
    }

    /// `Err` naming every missing variable.
    pub fn check(self) -> Result<(), String> {
        match self.missing.as_slice() {
            [] => Ok(()),
            [one] => Err(format!("environment variable {one} is not set")),
            many => Err(format!(
                "environment variables {} are not set",
                many.join(", ")
            )),
        }
    }
}

fn attribute<'a>(record: &'a SqsMessage, name: &str) -> Option<&'a str> {
    record.attributes.get(name).map(String::as_str)
}

/// An SQS event's records as the handlers read them; `source` is the queue's ARN and
/// `receipt` its receipt handle, for settling.
pub fn queue_messages(event: &SqsEvent) -> Vec<QueueMessage> {
    event
        .records
        .iter()
        .map(|record| QueueMessage {
            id: record.message_id.clone().unwrap_or_default(),
            source: record.event_source_arn.clone().unwrap_or_default(),
            receipt: record.receipt_handle.clone().unwrap_or_default(),
            group: attribute(record, "MessageGroupId")
                .unwrap_or_default()
                .to_string(),
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

/// Logs each routed push and reports the ones that are to come back to SQS.
pub fn route_response(report: &RouteReport) -> SqsBatchResponse {
    outcome_log::route(report);
    batch_response(report.failed_ids())
}

/// Logs each call and message of a dispatch batch (already settled, cluster by cluster)
/// and reports the ones that are to come back to SQS.
pub fn dispatch_response(report: &DispatchReport) -> SqsBatchResponse {
    outcome_log::dispatch(report);
    batch_response(report.failed_ids())
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

use aws_config::SdkConfig;
use fluxrelay_core::handlers::dispatch::{
    DispatchMemory, DispatchPorts, DispatchRules, handle_dispatch,
};
use fluxrelay_core::handlers::route::{route_and_settle, route_and_settle_deferring_paths};
use fluxrelay_core::ingest::{IngestConfig, Source, ingest_from};
use fluxrelay_core::outcome::retry::RetryPolicy;
use fluxrelay_core::ports::{Annotator, ApiserverReadiness, FluxDiscovery, TriggerSender};
use lambda_runtime::LambdaEvent;
use time::OffsetDateTime;
use tokio::sync::RwLock;

use crate::clock::TokioClock;
use crate::gitlab_secret::FunctionGitLab;
use crate::registry_aws::{AwsRegistry, RegistryIndexReader};
use crate::secrets::{WebhookAuthError, load_webhook_auth};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    /// `aws`: the function's AWS configuration ([`crate::lambda_aws::from_process_env`]).
    pub async fn from_env(aws: &SdkConfig) -> Result<Self, BoxError> {
        let mut env = Env::default();
        let secret_id = env.required("WEBHOOK_SECRET_ID");
        let queue_url = env.required("INTAKE_QUEUE_URL");
        env.check()?;
        let auth = WebhookAuth::load(
            aws_sdk_secretsmanager::Client::new(aws),
            secret_id,
            Duration::from_secs(300),
        )
        .await?;
        let queue = SqsQueue::new(aws_sdk_sqs::Client::new(aws), queue_url);
        Ok(Self { auth, queue })
    }

    pub async fn handle(
        &self,
        request: lambda_http::Request,
    ) -> Result<lambda_http::Response<lambda_http::Body>, std::convert::Infallible> {
        use lambda_http::RequestExt;
        let now = OffsetDateTime::now_utc();
        // Unique per invocation: what identifies a delivery that carries no Idempotency-Key.
        let request_id = request
            .lambda_context_ref()
            .map(|context| context.request_id.clone())
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| crate::request_id::unique("lambda"));
        let body: &[u8] = request.body().as_ref();
        // The Function URL serves registries on their paths, GitLab on every other one (its
        // root included, as before registries were served).
        let source = Source::for_path(request.uri().path()).unwrap_or(Source::Gitlab);
        let config = self.auth.config(false).await;
        let mut result = ingest_from(
            source,
            &config,
            &self.queue,
            request.headers(),
            body,
            now,
            &request_id,
        )
        .await;
        if matches!(result, Err(IngestError::Unauthenticated(_))) {
            let fresh = self.auth.config(true).await;
            if !Arc::ptr_eq(&fresh, &config) {
                result = ingest_from(
                    source,
                    &fresh,
                    &self.queue,
                    request.headers(),
                    body,
                    now,
                    &request_id,
                )
                .await;
            }
        }
        Ok(ingest_response(&result))
    }
}

pub struct RouteFunction {
    /// The registry index alone: route reads no secret (and may not: see template.yaml).
    pub registry: RegistryIndexReader,
    /// The dispatch queue, where route sends.
    pub dispatches: SqsQueue,
    /// The intake queue and its dead-letter queue, where route settles.
    pub intake: SqsSettle,
    pub policy: RetryPolicy,
    /// `CHANGED_PATHS_FROM=dispatch` (the template sets it when there is a GitLab secret):
    /// a push whose changed paths matter goes to every `paths` subscriber its other rules
    /// take, and dispatch decides with GitLab's compare. Otherwise the payload's paths.
    pub paths_from_dispatch: bool,
}

impl RouteFunction {
    /// `aws`: the function's AWS configuration ([`crate::lambda_aws::from_process_env`]).
    pub async fn from_env(aws: &SdkConfig) -> Result<Self, BoxError> {
        let mut env = Env::default();
        let dispatch_url = env.required("DISPATCH_QUEUE_URL");
        let intake_url = env.required("INTAKE_QUEUE_URL");
        let intake_dlq_url = env.required("INTAKE_DLQ_URL");
        let bucket = env.required("REGISTRY_BUCKET");
        let paths_from_dispatch = match std::env::var("CHANGED_PATHS_FROM").ok().as_deref() {
            None | Some("" | "payload") => false,
            Some("dispatch") => true,
            Some(other) => {
                return Err(format!(
                    "CHANGED_PATHS_FROM is {other:?}: it must be \"dispatch\" or \"payload\""
                )
                .into());
            }
        };
        env.check()?;
        let sqs = aws_sdk_sqs::Client::new(aws);
        Ok(Self {
            registry: index_from_env(aws, bucket),
            dispatches: SqsQueue::new(sqs.clone(), dispatch_url),
            intake: SqsSettle::new(sqs, intake_url, intake_dlq_url),
            policy: RetryPolicy::default(),
            paths_from_dispatch,
        })
    }

    pub async fn handle(&self, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, BoxError> {
        let messages = queue_messages(&event.payload);
        // No GitLab API here: route handles payload content and holds no credential, the
        // GitLab token included. With one configured, dispatch (which holds it) decides the
        // `paths` subscriptions from GitLab's compare (docs/design.md, "Changed paths").
        let report = if self.paths_from_dispatch {
            route_and_settle_deferring_paths(
                &self.registry,
                &self.dispatches,
                &self.intake,
                &self.policy,
                &messages,
            )
            .await
        } else {
            route_and_settle(
                &self.registry,
                &self.dispatches,
                &self.intake,
                &self.policy,
                &messages,
            )
            .await
        };
        Ok(route_response(&report))
    }
}

/// The cluster registry: the index at `REGISTRY_BUCKET`, the entries' secrets under
/// `REGISTRY_PREFIX` (dispatch and confirm read both).
fn registry_from_env(aws: &SdkConfig, bucket: String) -> AwsRegistry {
    let prefix = std::env::var("REGISTRY_PREFIX")
        .ok()
        .filter(|prefix| !prefix.trim().is_empty())
        .unwrap_or_else(|| crate::registry_aws::DEFAULT_PREFIX.to_string());
    AwsRegistry::new(
        index_from_env(aws, bucket),
        aws_sdk_secretsmanager::Client::new(aws),
        prefix,
    )
}

/// The registry index at `REGISTRY_BUCKET` / `REGISTRY_INDEX_KEY` (default `clusters.json`).
fn index_from_env(aws: &SdkConfig, bucket: String) -> RegistryIndexReader {
    let key = std::env::var("REGISTRY_INDEX_KEY")
        .ok()
        .filter(|key| !key.trim().is_empty())
        .unwrap_or_else(|| crate::registry_aws::DEFAULT_INDEX_KEY.to_string());
    RegistryIndexReader::new(aws_sdk_s3::Client::new(aws), bucket, key)
}

/// Kept back from the invocation's remaining time for settling what the clusters decided
/// (a few SQS calls each) before the function's timeout.
pub const SETTLE_RESERVE: Duration = Duration::from_secs(5);

pub struct DispatchFunction<C> {
    pub registry: AwsRegistry,
    pub clusters: C,
    /// The dispatch queue, its retry queue and its dead-letter queue.
    pub queue: SqsSettle,
    pub rules: DispatchRules,
    /// Denial streaks and recent deliveries, kept while the container is warm.
    pub memory: DispatchMemory,
    /// GitLab's compare API for dispatches route marked `verify_paths`
    /// (`GITLAB_SECRET_ID`; none: the payload's paths).
    pub gitlab: FunctionGitLab,
}

impl<C: FluxDiscovery + TriggerSender + Annotator + ApiserverReadiness> DispatchFunction<C> {
    /// `aws`: the function's AWS configuration ([`crate::lambda_aws::from_process_env`]).
    pub async fn from_env(aws: &SdkConfig, clusters: C) -> Result<Self, BoxError> {
        let mut env = Env::default();
        let dispatch_url = env.required("DISPATCH_QUEUE_URL");
        let retry_url = env.required("DISPATCH_RETRY_QUEUE_URL");
        let dlq_url = env.required("DISPATCH_DLQ_URL");
        let attempts = std::env::var("MAX_ATTEMPTS").ok();
        let bucket = env.required("REGISTRY_BUCKET");
        // Optional: with it, deliveries to clusters whose entry has `confirm` start a
        // confirmation there.
        let confirm_url = std::env::var("CONFIRM_QUEUE_URL")
            .ok()
            .filter(|url| !url.trim().is_empty());
        env.check()?;
        let mut rules = DispatchRules {
            confirm: confirm_url.is_some(),
            ..DispatchRules::default()
        };
        if let Some(attempts) = attempts {
            rules.policy.max_attempts = attempts
                .parse()
                .map_err(|_| "MAX_ATTEMPTS is not a whole number")?;
        }
        let gitlab = FunctionGitLab::from_env(&aws_sdk_secretsmanager::Client::new(aws)).await?;
        Ok(Self {
            registry: registry_from_env(aws, bucket),
            clusters,
            gitlab,
            queue: {
                let queue = SqsSettle::new(aws_sdk_sqs::Client::new(aws), dispatch_url, dlq_url)
                    .with_retry_queue(retry_url);
                match confirm_url {
                    Some(url) => queue.with_confirm_queue(url),
                    None => queue,
                }
            },
            rules,
            memory: DispatchMemory::default(),
        })
    }

    pub async fn handle(&self, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, BoxError> {
        let messages = queue_messages(&event.payload);
        let rules = DispatchRules {
            cluster_budget: cluster_budget(event.context.deadline).or(self.rules.cluster_budget),
            ..self.rules
        };
        let ports = DispatchPorts {
            registry: &self.registry,
            clusters: &self.clusters,
            queue: &self.queue,
            clock: &TokioClock,
            gitlab: &self.gitlab,
        };
        let report = handle_dispatch(
            &ports,
            &rules,
            &self.memory,
            &messages,
            OffsetDateTime::now_utc(),
        )
        .await;
        Ok(dispatch_response(&report))
    }
}

/// Each cluster's budget in this invocation: what remains before the deadline (ms since
/// the epoch; 0 when unknown) less [`SETTLE_RESERVE`], and at least a second.
pub fn cluster_budget(deadline_ms: u64) -> Option<Duration> {
    if deadline_ms == 0 {
        return None;
    }
    let now_ms = u64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or_default();
    let remaining = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
    Some(
        remaining
            .saturating_sub(SETTLE_RESERVE)
            .max(Duration::from_secs(1)),
    )
}

// ---- confirm (issue 14) ----

use fluxrelay_core::confirm::schedule::ConfirmPolicy;
use fluxrelay_core::gitlab_api::statuses::StatusNaming;
use fluxrelay_core::handlers::confirm::{
    ConfirmMemory, ConfirmPorts, ConfirmRules, handle_confirm,
};
use fluxrelay_core::ports::FluxConsumers;

/// confirm: the confirm queue (standard, a delay per message) → per cluster, one read of
/// its Flux objects → commit statuses on GitLab → the next look, or the end.
pub struct ConfirmFunction<C> {
    pub registry: AwsRegistry,
    pub clusters: C,
    /// The confirm queue (source and where the next looks go) and its dead-letter queue.
    pub queue: SqsSettle,
    pub gitlab: FunctionGitLab,
    pub rules: ConfirmRules,
    /// GitLab's 429s, kept while the container is warm.
    pub memory: ConfirmMemory,
    /// CloudWatch namespace of the EMF lines.
    pub metrics_namespace: String,
}

fn parsed_env<T: std::str::FromStr>(name: &str) -> Result<Option<T>, BoxError> {
    match std::env::var(name).ok().filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(value) => value
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("{name} is not a whole number").into()),
    }
}

impl<C: FluxDiscovery + FluxConsumers + ApiserverReadiness> ConfirmFunction<C> {
    /// `aws`: the function's AWS configuration ([`crate::lambda_aws::from_process_env`]).
    pub async fn from_env(aws: &SdkConfig, clusters: C) -> Result<Self, BoxError> {
        let mut env = Env::default();
        let confirm_url = env.required("CONFIRM_QUEUE_URL");
        let dlq_url = env.required("CONFIRM_DLQ_URL");
        let bucket = env.required("REGISTRY_BUCKET");
        env.check()?;
        let mut policy = ConfirmPolicy::default();
        if let Some(secs) = parsed_env("CONFIRM_DEADLINE_SECS")? {
            policy.deadline_secs = secs;
        }
        if let Some(budget) = parsed_env("CONFIRM_REQUEST_BUDGET")? {
            policy.request_budget = budget;
        }
        let naming = match std::env::var("STATUS_NAME").ok().filter(|v| !v.is_empty()) {
            Some(template) => {
                StatusNaming::new(&template).map_err(|e| format!("STATUS_NAME {e}"))?
            }
            None => StatusNaming::default(),
        };
        let summary_name = std::env::var("SUMMARY_STATUS_NAME")
            .ok()
            .filter(|v| !v.trim().is_empty());
        let gitlab = FunctionGitLab::from_env(&aws_sdk_secretsmanager::Client::new(aws)).await?;
        let sqs = aws_sdk_sqs::Client::new(aws);
        Ok(Self {
            registry: registry_from_env(aws, bucket),
            clusters,
            queue: SqsSettle::new(sqs, confirm_url.clone(), dlq_url)
                .with_confirm_queue(confirm_url),
            gitlab,
            rules: ConfirmRules {
                policy,
                naming,
                summary_name,
                ..ConfirmRules::default()
            },
            memory: ConfirmMemory::default(),
            metrics_namespace: std::env::var("METRICS_NAMESPACE")
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| crate::emf::DEFAULT_NAMESPACE.to_string()),
        })
    }

    pub async fn handle(&self, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, BoxError> {
        let messages = queue_messages(&event.payload);
        let rules = ConfirmRules {
            cluster_budget: cluster_budget(event.context.deadline).or(self.rules.cluster_budget),
            ..self.rules.clone()
        };
        let ports = ConfirmPorts {
            registry: &self.registry,
            clusters: &self.clusters,
            gitlab: &self.gitlab,
            queue: &self.queue,
            clock: &TokioClock,
        };
        let now = OffsetDateTime::now_utc();
        let report = handle_confirm(&ports, &rules, &self.memory, &messages, now).await;
        crate::outcome_log::confirm(&report);
        let timestamp_ms = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        for line in crate::emf::confirm_lines(&report, &self.metrics_namespace, timestamp_ms) {
            // Straight to stdout, not through tracing: EMF wants `_aws` as an object.
            println!("{line}");
        }
        Ok(batch_response(report.failed_ids()))
    }
}

#[cfg(test)]
mod log_filter_tests {
    use tracing::Level;

    use super::log_filter;

    #[test]
    fn rust_log_sets_the_level_by_target_and_anything_else_means_info() {
        // (RUST_LOG, target, level, enabled)
        let cases: &[(Option<&str>, &str, Level, bool)] = &[
            (None, "fluxrelay_adapters::sqs", Level::INFO, true),
            (None, "fluxrelay_adapters::sqs", Level::DEBUG, false),
            (Some(""), "kube_client", Level::INFO, true),
            (Some("  "), "kube_client", Level::DEBUG, false),
            (Some("warn"), "fluxrelay_core", Level::WARN, true),
            (Some("warn"), "fluxrelay_core", Level::INFO, false),
            (Some("debug"), "kube_client", Level::DEBUG, true),
            (Some("debug"), "kube_client", Level::TRACE, false),
            (
                Some("warn,fluxrelay_adapters=debug"),
                "fluxrelay_adapters::lambda",
                Level::DEBUG,
                true,
            ),
            (
                Some("warn,fluxrelay_adapters=debug"),
                "aws_smithy_runtime",
                Level::INFO,
                false,
            ),
            (Some("off"), "fluxrelay_core", Level::ERROR, false),
            // Not understood: info, as with no RUST_LOG.
            (Some("=="), "fluxrelay_core", Level::INFO, true),
            (Some("=="), "fluxrelay_core", Level::DEBUG, false),
            (
                Some("info,[span{key=x}]=debug"),
                "fluxrelay_core",
                Level::DEBUG,
                false,
            ),
        ];
        for &(rust_log, target, level, enabled) in cases {
            assert_eq!(
                log_filter(rust_log).would_enable(target, &level),
                enabled,
                "RUST_LOG={rust_log:?}, {target} at {level}"
            );
        }
    }
}
