//! `fluxrelay serve`: ingest over HTTP, route and dispatch as in-process workers, one
//! embedded queue file under the data directory.

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fluxrelay_adapters::clock::RunClock;
use fluxrelay_adapters::cluster::KubeClusters;
use fluxrelay_adapters::embedded::{
    CONFIRM_QUEUE, DISPATCH_QUEUE, DISPATCH_RETRY_QUEUE, EmbeddedQueue, INTAKE_QUEUE,
};
use fluxrelay_adapters::file_registry::FileRegistry;
use fluxrelay_adapters::gitlab::GitLabClient;
use fluxrelay_adapters::outcome_log;
use fluxrelay_core::handlers::confirm::{ConfirmMemory, ConfirmRules};
use fluxrelay_core::handlers::dispatch::{DispatchMemory, DispatchOptions, DispatchRules};
use fluxrelay_core::ingest::{
    Acceptance, Accepted, IngestConfig, IngestError, IngestResponse, Source, admit, check_head,
};
use fluxrelay_core::ports::{PushPublisher, QueueError};
use fluxrelay_core::push::Push;
use time::OffsetDateTime;
use tokio::sync::{Notify, Semaphore, watch};
use tower::ServiceBuilder;
use tower::limit::ConcurrencyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::config::{ConfigError, HttpLimits, Problem, ServeConfig};
use crate::listener::{self, ConnectionLimits};
use crate::metrics::Metrics;
use crate::workers::{self, Workers};

pub const QUEUE_FILE: &str = "queue.sqlite";
const LOCK_FILE: &str = "serve.lock";
/// `/healthz` and `/metrics` requests at once: their own slots, so a flood of `/webhook`
/// cannot take them (a scrape reads the queue file: a few at a time is plenty).
const OPERATIONS_CONCURRENCY: usize = 4;
/// Bodies up to this size give up their `/webhook` slot once parsed, before the wait for
/// their commit (a GitLab push hook is 2–30 KiB): the writer's groups can then hold every
/// webhook in flight rather than `webhook_concurrency` at most, and what waits is bounded
/// by the connections at this size each.
const SLOTLESS_COMMIT_WAIT_BYTES: usize = 64 * 1024;
/// File descriptors kept for the queue file, the kube clients and the log, above the
/// connections.
const RESERVED_FILES: usize = 64;

/// Why `serve` could not start (config-level, exit 78) or stopped with an error (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Runtime(String),
}

#[derive(Clone)]
struct AppState {
    ingest: Arc<IngestConfig>,
    intake: Intake,
    queue: EmbeddedQueue,
    metrics: Arc<Metrics>,
    route_wake: Arc<Notify>,
    /// `http.webhook_concurrency`: webhooks whose bodies are held at once (read,
    /// authenticated, parsed). A push waiting for its commit holds none: only its parsed
    /// form, so the writer's groups can take every webhook in flight.
    webhook_slots: Arc<Semaphore>,
}

/// How `serve` runs, beyond its configuration.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    pub dispatch: DispatchOptions,
    /// Benchmark only (`--bench-ceiling-no-queue`): see [`Intake::BenchCeilingNoQueue`].
    pub bench_ceiling_no_queue: bool,
}

/// Where `/webhook` puts the pushes it accepts.
#[derive(Clone)]
enum Intake {
    /// The embedded queue: `202` only once the push is committed (and fsynced).
    Queue(EmbeddedQueue),
    /// Benchmark only: accepted pushes are dropped and answered `202` at once. Everything
    /// else is the same server (listener, layers, head check, authentication, parsing,
    /// log line, metrics), so `fluxrelay-bench` measures the ceiling the durable enqueue is
    /// compared against. Never for use: what it answers `202` is lost.
    BenchCeilingNoQueue,
}

impl PushPublisher for Intake {
    async fn publish_pushes(&self, pushes: &[Push]) -> Result<(), QueueError> {
        match self {
            Intake::Queue(queue) => queue.publish_pushes(pushes).await,
            Intake::BenchCeilingNoQueue => Ok(()),
        }
    }
}

/// Serve until `shutdown` completes, then stop accepting, let in-flight requests and
/// batches finish, and return. Start-up problems are reported before anything listens.
pub async fn run(
    mut config: ServeConfig,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let dispatch = options.dispatch;
    let problem = |field: &str, problem: String| {
        ServeError::Config(ConfigError {
            problems: vec![Problem {
                file: config.file.clone(),
                field: field.to_string(),
                problem,
            }],
        })
    };
    std::fs::create_dir_all(&config.data_dir).map_err(|error| {
        problem(
            "data_dir",
            format!("cannot create {}: {error}", config.data_dir.display()),
        )
    })?;
    let _lock = lock_data_dir(&config.data_dir).map_err(|message| problem("data_dir", message))?;
    let queue = EmbeddedQueue::open(config.data_dir.join(QUEUE_FILE))
        .map_err(|error| problem("data_dir", error.to_string()))?;
    queue.set_journal_max_bytes(config.journal_max_bytes);
    for name in [
        INTAKE_QUEUE,
        DISPATCH_QUEUE,
        DISPATCH_RETRY_QUEUE,
        CONFIRM_QUEUE,
    ] {
        let released = queue
            .release_leases(name)
            .map_err(|error| ServeError::Runtime(error.to_string()))?;
        if released > 0 {
            tracing::info!(
                queue = name,
                released,
                "redelivering messages a previous run had received but not settled"
            );
        }
    }
    let clusters =
        KubeClusters::with_defaults().map_err(|failure| ServeError::Runtime(failure.reason))?;
    let gitlab = GitLabClient::new(config.gitlab.clone()).map_err(ServeError::Runtime)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|error| {
            problem(
                "listen",
                format!("cannot listen on {}: {error}", config.listen),
            )
        })?;
    let address = listener
        .local_addr()
        .map_err(|error| ServeError::Runtime(format!("listening socket: {error}")))?;

    let metrics = Arc::new(Metrics::new());
    let route_wake = Arc::new(Notify::new());
    // Moved, not copied: an entry with its CA is about 1.5 KB, and only the registry
    // reads the entries from here on.
    let cluster_count = config.clusters.len();
    let workers = Arc::new(Workers {
        queue: queue.clone(),
        registry: FileRegistry::new(std::mem::take(&mut config.clusters)),
        clusters,
        rules: DispatchRules {
            policy: config.retry,
            options: dispatch,
            cluster_budget: Some(workers::CLUSTER_BUDGET),
            // serve always has its confirm queue: a cluster whose entry has `confirm`
            // gets its deliveries confirmed.
            confirm: true,
        },
        memory: DispatchMemory::default(),
        metrics: metrics.clone(),
        route_wake: route_wake.clone(),
        dispatch_wake: Arc::new(Notify::new()),
        dispatch_slots: Arc::new(Semaphore::new(config.dispatch_workers.max(1))),
        gitlab,
        confirm_rules: ConfirmRules {
            cluster_budget: Some(crate::confirm_worker::CONFIRM_CLUSTER_BUDGET),
            // One id per run: a look scheduled by an earlier run (it was killed, maybe
            // between sending this look and acknowledging the one before) reads GitLab
            // before its terminal post, so a twin's end is not posted twice.
            instance: Some(run_id()),
            ..config.confirm.clone()
        },
        confirm_memory: ConfirmMemory::default(),
        confirm_wake: Arc::new(Notify::new()),
    });
    let intake = if options.bench_ceiling_no_queue {
        tracing::warn!(
            "--bench-ceiling-no-queue: webhooks are answered 202 and dropped (benchmark only)"
        );
        Intake::BenchCeilingNoQueue
    } else {
        Intake::Queue(queue.clone())
    };
    let state = AppState {
        ingest: Arc::new(config.ingest),
        intake,
        queue: queue.clone(),
        metrics,
        route_wake: route_wake.clone(),
        webhook_slots: Arc::new(Semaphore::new(config.http.webhook_concurrency)),
    };
    let metrics = state.metrics.clone();
    let app = router(state, &config.http);
    let connections = connection_limits(&config.http);

    let (stop_workers, stopped) = watch::channel(false);
    let tasks = vec![
        tokio::spawn(workers::run_route(workers.clone(), stopped.clone())),
        tokio::spawn(workers::run_dispatch(workers.clone(), stopped.clone())),
        tokio::spawn(crate::confirm_worker::run_confirm(
            workers.clone(),
            stopped.clone(),
        )),
    ];
    // Pick up what a previous run left queued.
    route_wake.notify_one();
    workers.dispatch_wake.notify_one();
    workers.confirm_wake.notify_one();
    tracing::info!(
        addr = %address,
        data_dir = %config.data_dir.display(),
        clusters = cluster_count,
        gitlab_instances = config.gitlab.instances.len(),
        "listening"
    );

    let stopped = listener::serve(
        listener,
        app,
        connections,
        metrics.connections(),
        async move {
            shutdown.await;
            tracing::info!("shutting down: no new webhooks; finishing work in hand");
        },
    )
    .await;
    let _ = stop_workers.send(true);
    for task in tasks {
        let _ = task.await;
    }
    let left = queue
        .depth(INTAKE_QUEUE)
        .and_then(|intake| Ok((intake, queue.depth(DISPATCH_QUEUE)?)));
    if let Ok((intake, dispatch)) = left {
        tracing::info!(
            intake = intake.visible + intake.in_flight,
            dispatch = dispatch.visible + dispatch.in_flight,
            connections_cut = stopped.cut,
            "stopped; queued messages are kept for the next start"
        );
    }
    Ok(())
}

/// `/webhook` behind, from the outside in: the request timeout (408), the head check (a
/// wrong token is refused before its body is read, and takes no slot), and its own
/// concurrency limit. `/healthz` and `/metrics` have their own limit and timeout.
fn router(state: AppState, limits: &HttpLimits) -> Router {
    let timeout =
        || TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limits.request_timeout);
    let webhooks = Router::new()
        .route(Source::GITLAB_PATH, post(webhook))
        .route(Source::DISTRIBUTION_PATH, post(distribution_webhook))
        .route(Source::HARBOR_PATH, post(harbor_webhook))
        .route_layer(
            ServiceBuilder::new()
                .layer(middleware::map_response_with_state(
                    state.clone(),
                    count_request_timeout,
                ))
                .layer(timeout())
                .layer(middleware::from_fn_with_state(
                    state.clone(),
                    refuse_by_head,
                )),
        );
    let operations = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route_layer(
            ServiceBuilder::new()
                .layer(timeout())
                .layer(ConcurrencyLimitLayer::new(OPERATIONS_CONCURRENCY)),
        );
    webhooks.merge(operations).with_state(state)
}

/// A 408 from the request timeout is an answer the handler never gave: count it here.
async fn count_request_timeout(State(state): State<AppState>, response: Response) -> Response {
    if response.status() == StatusCode::REQUEST_TIMEOUT {
        state.metrics.record_request_timeout();
        tracing::warn!(
            outcome = "rejected",
            status = 408u16,
            reason = "the request body did not arrive within http.request_timeout_secs"
        );
    }
    response
}

/// The configured limits, with the connection cap lowered to what the process may open.
fn connection_limits(limits: &HttpLimits) -> ConnectionLimits {
    let mut connections = limits.connections;
    if let Some(files) = listener::open_files_limit() {
        let room = files.saturating_sub(RESERVED_FILES).max(1);
        if connections.max_connections > room {
            tracing::warn!(
                max_connections = connections.max_connections,
                open_files_limit = files,
                using = room,
                "http.max_connections is above what the open-files limit allows (raise LimitNOFILE / ulimit -n)"
            );
            connections.max_connections = room;
        }
    }
    connections
}

/// Answers from the head alone what the head decides (a declared size over the cap, a
/// wrong or missing token, bad signature headers, an instance the token is not for), with
/// the answer `ingest` would give, before a byte of the body is read.
async fn refuse_by_head(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // Only the webhook routes carry this layer, so every path here is a source's.
    let Some(source) = Source::for_path(request.uri().path()) else {
        return next.run(request).await;
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    match check_head(source, &state.ingest, request.headers(), now) {
        Ok(()) => next.run(request).await,
        Err(error) => answer(&state, Err(error)),
    }
}

/// One `serve` per data directory: a second would deliver the first one's in-flight
/// messages again when it releases their leases. The lock dies with the process.
fn lock_data_dir(dir: &Path) -> Result<File, String> {
    let path: PathBuf = dir.join(LOCK_FILE);
    let file = File::create(&path)
        .map_err(|error| format!("cannot create {}: {error}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "another fluxrelay serve is using {} (it holds {})",
            dir.display(),
            path.display()
        )),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(format!("cannot lock {}: {error}", path.display()))
        }
    }
}

async fn webhook(state: State<AppState>, headers: HeaderMap, body: Body) -> Response {
    receive(Source::Gitlab, state, headers, body).await
}

async fn distribution_webhook(state: State<AppState>, headers: HeaderMap, body: Body) -> Response {
    receive(Source::Distribution, state, headers, body).await
}

async fn harbor_webhook(state: State<AppState>, headers: HeaderMap, body: Body) -> Response {
    receive(Source::Harbor, state, headers, body).await
}

/// One webhook from `source`: the same path for every sender, core's rules deciding.
async fn receive(
    source: Source,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Held while the body is: reading it, authenticating and parsing. The semaphore is
    // never closed; were it, the webhook would go on without a slot.
    let slot = state.webhook_slots.acquire().await.ok();
    let limit = state.ingest.max_body_bytes;
    // One byte over the cap is enough for ingest to answer 413 with its own message.
    let (admitted, slot) = match to_bytes(body, limit.saturating_add(1)).await {
        Ok(bytes) => {
            let admitted = admit(
                source,
                &state.ingest,
                &headers,
                &bytes,
                // Read on the run's clock too: this process dispatches what it accepts.
                Acceptance {
                    at: OffsetDateTime::now_utc(),
                    in_run: Some(RunClock.instant()),
                },
                &fluxrelay_adapters::request_id::unique("serve"),
            );
            // What a small body was parsed into is small: its wait for the commit takes
            // no slot. A large one's pushes may be as large as the body, so it keeps its
            // slot until it is answered, and the slots still bound what is held.
            let slot = slot.filter(|_| bytes.len() > SLOTLESS_COMMIT_WAIT_BYTES);
            (admitted, slot)
        }
        Err(error) if is_length_limit(&error) => (
            Err(IngestError::TooLarge {
                size: content_length(&headers).unwrap_or(limit.saturating_add(1)),
                limit,
            }),
            None,
        ),
        Err(error) => {
            // The client went away or sent a broken body: nothing to authenticate or queue.
            tracing::warn!(outcome = "rejected", status = 400u16, reason = "the request body could not be read", error = %error);
            state.metrics.record_unreadable_body();
            let body = r#"{"status":"rejected","error":"the request body could not be read"}"#;
            return (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
        }
    };
    let result = match admitted {
        Ok(admitted) => admitted.publish(&state.intake).await,
        Err(error) => Err(error),
    };
    drop(slot);
    answer(&state, result)
}

/// The answer to GitLab, its log line and its metrics.
fn answer(state: &AppState, result: Result<Accepted, IngestError>) -> Response {
    outcome_log::ingest(&result);
    state.metrics.record_ingest(&result);
    if result.is_ok() && matches!(state.intake, Intake::Queue(_)) {
        state.route_wake.notify_one();
    }
    let response = IngestResponse::from_result(&result);
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        response.body,
    )
        .into_response()
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if current.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = current.source();
    }
    false
}

fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Healthy when the queue file answers.
async fn healthz(State(state): State<AppState>) -> Response {
    let queue = state.queue.clone();
    let readable = tokio::task::spawn_blocking(move || queue.depth(INTAKE_QUEUE)).await;
    match readable {
        Ok(Ok(_)) => (StatusCode::OK, "ok\n").into_response(),
        Ok(Err(error)) => {
            tracing::error!(outcome = "unhealthy", error = %error);
            (StatusCode::SERVICE_UNAVAILABLE, "queue unavailable\n").into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "queue unavailable\n").into_response(),
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let AppState { queue, metrics, .. } = state;
    let rendered = tokio::task::spawn_blocking(move || metrics.render(&queue)).await;
    match rendered {
        Ok(Ok(text)) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Ok(Err(error)) => {
            tracing::error!(outcome = "metrics_failed", error = %error);
            (StatusCode::SERVICE_UNAVAILABLE, "metrics unavailable\n").into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "metrics unavailable\n").into_response(),
    }
}

/// This run of `serve`: its process id and start time (distinct across restarts).
fn run_id() -> String {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis());
    format!("serve-{}-{started}", std::process::id())
}
