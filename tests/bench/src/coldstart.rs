//! Stage 6, the Lambda binaries: cold start (exec → first `GET /2018-06-01/runtime/invocation/next`
//! against a local Lambda Runtime API stub), binary size, and peak RSS after serving
//! invocations of their sample events (AWS calls go to moto).

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::types::QueueAttributeName;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use fluxrelay_testkit::moto::Moto;
use tokio::sync::Notify;

use crate::report::Report;
use crate::serve_proc::peak_rss_mib;
use crate::stats::Samples;
use crate::{Scale, progress};

const SAMPLE_TOKEN: &str = "sample-webhook-token-change-me";

#[derive(Default)]
struct Stub {
    first_next: Mutex<Option<Instant>>,
    /// Invocations still to hand out; after them `next` never answers (an idle container).
    remaining: Mutex<usize>,
    answered: Mutex<usize>,
    last_answer: Mutex<Option<Instant>>,
    /// Handed out in turn (the last first); one sample event, or one per invocation.
    events: Vec<String>,
    function: String,
    changed: Notify,
}

async fn next(State(stub): State<Arc<Stub>>) -> axum::response::Response {
    {
        let mut first = stub.first_next.lock().unwrap();
        if first.is_none() {
            *first = Some(Instant::now());
        }
    }
    stub.changed.notify_waiters();
    let number = {
        let mut remaining = stub.remaining.lock().unwrap();
        if *remaining == 0 {
            None
        } else {
            *remaining -= 1;
            Some(*remaining)
        }
    };
    let Some(number) = number else {
        std::future::pending::<()>().await;
        unreachable!()
    };
    let deadline = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        + 30_000;
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        headers.insert(name, HeaderValue::from_str(&value).expect("header value"));
    };
    set("lambda-runtime-aws-request-id", format!("bench-{number}"));
    set("lambda-runtime-deadline-ms", deadline.to_string());
    set(
        "lambda-runtime-invoked-function-arn",
        format!(
            "arn:aws:lambda:us-east-1:123456789012:function:{}",
            stub.function
        ),
    );
    set("content-type", "application/json".into());
    let event = stub.events[number % stub.events.len()].clone();
    (StatusCode::OK, headers, event).into_response()
}

async fn settled(State(stub): State<Arc<Stub>>) -> StatusCode {
    *stub.answered.lock().unwrap() += 1;
    *stub.last_answer.lock().unwrap() = Some(Instant::now());
    stub.changed.notify_waiters();
    StatusCode::ACCEPTED
}

async fn start_stub(stub: Arc<Stub>) -> SocketAddr {
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(settled),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(settled))
        .route("/2018-06-01/runtime/init/error", post(settled))
        .with_state(stub);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("runtime API stub");
    let addr = listener.local_addr().expect("stub address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

struct Function {
    binary: &'static str,
    event_file: &'static str,
    env: Vec<(String, String)>,
}

/// What one run measured.
pub struct Run {
    pub cold: Duration,
    /// Peak RSS in MiB after the invocations.
    pub rss: f64,
    pub answered: usize,
    /// From the first `next` to the last answer, per invocation answered.
    pub wall_per_invocation: Duration,
    /// The process's CPU time (user + system, init included) per invocation answered.
    pub cpu_per_invocation: Duration,
}

/// The CPU time (user + system) a process has used so far, from `/proc/<pid>/stat`.
pub(crate) fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start at field 3; utime and stime
    // are fields 14 and 15, in clock ticks (USER_HZ, 100 on Linux).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

async fn run_once(function: &Function, moto: &Moto, invocations: usize) -> Run {
    let event = std::fs::read_to_string(
        crate::workspace_root()
            .join("events")
            .join(function.event_file),
    )
    .expect("sample event");
    let run = LambdaRun {
        binary: function.binary,
        events: vec![event],
        env: &function.env,
        limit: Duration::from_secs(60),
    };
    run.once(moto, invocations).await
}

/// A Lambda binary exec'd against the runtime API stub, which hands out `events` in turn.
pub struct LambdaRun<'a> {
    pub binary: &'static str,
    pub events: Vec<String>,
    /// The function's own environment (queue URLs, registry location).
    pub env: &'a [(String, String)],
    /// How long its invocations may take in all.
    pub limit: Duration,
}

impl LambdaRun<'_> {
    /// Cold start, peak RSS after `invocations`, invocations answered, time per invocation.
    pub async fn once(&self, moto: &Moto, invocations: usize) -> Run {
        run_events(self, moto, invocations).await
    }
}

async fn run_events(function: &LambdaRun<'_>, moto: &Moto, invocations: usize) -> Run {
    assert!(!function.events.is_empty(), "a Lambda run needs an event");
    let stub = Arc::new(Stub {
        events: function.events.clone(),
        function: function.binary.into(),
        remaining: Mutex::new(invocations),
        ..Stub::default()
    });
    let addr = start_stub(stub.clone()).await;
    let binary = crate::sam_build::lambda_binary(function.binary);
    let mut command = Command::new(&binary);
    command
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", function.binary)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "bench")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .envs(function.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let exec = Instant::now();
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("exec {}: {error}", binary.display()));
    let deadline = exec + function.limit;
    loop {
        let changed = stub.changed.notified();
        let first = *stub.first_next.lock().unwrap();
        let answered = *stub.answered.lock().unwrap();
        if first.is_some() && answered >= invocations {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{} exited ({status}) before its invocations were answered",
                function.binary
            );
        }
        assert!(
            Instant::now() < deadline,
            "{} did not finish within {:?}",
            function.binary,
            function.limit
        );
        let _ = tokio::time::timeout(Duration::from_millis(100), changed).await;
    }
    let cold = stub
        .first_next
        .lock()
        .unwrap()
        .expect("first next")
        .duration_since(exec);
    let rss = peak_rss_mib(child.id()).unwrap_or(f64::NAN);
    let cpu = cpu_time(child.id()).unwrap_or_default();
    let answered = *stub.answered.lock().unwrap();
    let first = stub.first_next.lock().unwrap().expect("first next");
    let last = stub.last_answer.lock().unwrap().unwrap_or(first);
    let _ = child.kill();
    let _ = child.wait();
    let per = |total: Duration| total / u32::try_from(answered.max(1)).unwrap_or(u32::MAX);
    Run {
        cold,
        rss,
        answered,
        wall_per_invocation: per(last.duration_since(first)),
        cpu_per_invocation: per(cpu),
    }
}

pub async fn lambdas(moto: &Moto, scale: &Scale, report: &mut Report) {
    let config = moto.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let secrets = aws_sdk_secretsmanager::Client::new(&config);
    secrets
        .create_secret()
        .name("bench/webhook")
        .secret_string(serde_json::json!({"tokens": [SAMPLE_TOKEN]}).to_string())
        .send()
        .await
        .expect("webhook secret on moto");
    let url = |name: &'static str| {
        let sqs = sqs.clone();
        async move {
            sqs.create_queue()
                .queue_name(name)
                .attributes(QueueAttributeName::FifoQueue, "true")
                .send()
                .await
                .expect("CreateQueue")
                .queue_url
                .expect("queue url")
        }
    };
    let intake = url("bench-intake.fifo").await;
    let dispatch = url("bench-dispatch.fifo").await;
    let dispatch_dlq = url("bench-dispatch-dlq.fifo").await;
    // What route and dispatch settle on (their from_env requires them since they settle
    // their own messages); never used by the sample events' happy paths.
    let intake_dlq = url("bench-intake-dlq.fifo").await;
    let dispatch_retry = url("bench-dispatch-retry.fifo").await;
    let registry_prefix = format!("bench/fanout-{}/", scale.fanout[0]);
    // The registry index the fan-out stage wrote (route reads it; dispatch reads it and the
    // secrets under the prefix).
    let registry_index = format!("fanout-{}.json", scale.fanout[0]);
    let env = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
    };
    let functions = [
        Function {
            binary: "ingest",
            event_file: "ingest-push-hook.json",
            env: env(&[
                ("WEBHOOK_SECRET_ID", "bench/webhook"),
                ("INTAKE_QUEUE_URL", &intake),
            ]),
        },
        Function {
            binary: "route",
            event_file: "route-batch.json",
            env: env(&[
                ("DISPATCH_QUEUE_URL", &dispatch),
                ("INTAKE_QUEUE_URL", &intake),
                ("INTAKE_DLQ_URL", &intake_dlq),
                ("REGISTRY_BUCKET", crate::fanout::REGISTRY_BUCKET),
                ("REGISTRY_INDEX_KEY", &registry_index),
            ]),
        },
        Function {
            binary: "dispatch",
            event_file: "dispatch-batch.json",
            env: env(&[
                ("DISPATCH_QUEUE_URL", &dispatch),
                ("DISPATCH_DLQ_URL", &dispatch_dlq),
                ("DISPATCH_RETRY_QUEUE_URL", &dispatch_retry),
                ("REGISTRY_BUCKET", crate::fanout::REGISTRY_BUCKET),
                ("REGISTRY_INDEX_KEY", &registry_index),
                ("REGISTRY_PREFIX", &registry_prefix),
            ]),
        },
    ];
    for function in &functions {
        progress(format!(
            "cold start: {} × {} (exec → first invocation/next), then {} invocations for peak RSS",
            scale.cold_starts, function.binary, scale.invocations
        ));
        let mut starts = Vec::new();
        for _ in 0..scale.cold_starts {
            starts.push(run_once(function, moto, 0).await.cold);
        }
        let starts = Samples::from_durations(&starts);
        let median = starts.percentile(50.0);
        report.judged(
            "Cold start",
            &format!(
                "`{}`: exec → first invocation/next, median of {} (max)",
                function.binary,
                starts.len()
            ),
            format!("{median:.1} ms ({:.1})", starts.max()),
            "≤ 20 ms",
            median <= 20.0,
        );
        let Run {
            rss,
            answered,
            wall_per_invocation,
            cpu_per_invocation,
            ..
        } = run_once(function, moto, scale.invocations).await;
        report.info(
            "Invocation time",
            &format!(
                "`{}`: per invocation of events/{} over {answered}, wall (first next → last answer) / process CPU (init included)",
                function.binary, function.event_file
            ),
            format!(
                "{:.2} / {:.2} ms",
                wall_per_invocation.as_secs_f64() * 1e3,
                cpu_per_invocation.as_secs_f64() * 1e3
            ),
        );
        report.judged(
            "Memory",
            &format!(
                "`{}` peak RSS after {answered} invocations of events/{}",
                function.binary, function.event_file
            ),
            format!("{rss:.1} MiB"),
            "≤ 24 MB",
            rss <= 24.0,
        );
    }
    for binary in ["ingest", "route", "dispatch", "confirm", "fluxrelay"] {
        let (path, origin) = if binary == "fluxrelay" {
            let profile = crate::profile_name();
            (
                crate::profile_dir().join(binary),
                if profile == "release" {
                    "release profile, stripped"
                } else {
                    "debug profile, not stripped"
                },
            )
        } else {
            (
                crate::sam_build::lambda_binary(binary),
                crate::sam_build::origin(),
            )
        };
        let size = std::fs::metadata(&path)
            .map(|m| m.len())
            .unwrap_or_default() as f64
            / 1e6;
        report.judged(
            "Binary size",
            &format!("`{binary}` ({origin})"),
            format!("{size:.1} MB"),
            if binary == "fluxrelay" {
                "— (not a Lambda)"
            } else {
                "≤ 8 MB"
            },
            binary == "fluxrelay" || size <= 8.0,
        );
    }
}
