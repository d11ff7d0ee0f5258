//! The AWS path on moto: ingest → intake FIFO queue → route → dispatch FIFO queue →
//! dispatch, with the real adapters (SQS and Secrets Manager on moto, the kube client on the
//! apiserver of [`Setup`], whose service proxy reaches the receiver emulator), and two
//! [`Poller`]s standing in for Lambda's event source mappings. Ingest is called in-process
//! with a Function URL request, as Lambda would hand it over.
//!
//! It measures push → Receiver hit latency with pushes one at a time, moto's own time per
//! SQS call apart, and what the cost model needs: SQS requests on the wire per function and
//! poller (`RecordCalls`), invocations and handler times.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fluxrelay_adapters::cluster::KubeClusters;
use fluxrelay_adapters::lambda::{DispatchFunction, IngestFunction, RouteFunction, WebhookAuth};
use fluxrelay_adapters::registry_aws::{
    AwsRegistry, DEFAULT_INDEX_KEY, RegistryIndexReader, RegistryLocation, store_entry,
};
use fluxrelay_adapters::sqs::{SqsQueue, SqsSettle};
use fluxrelay_core::handlers::dispatch::{DispatchMemory, DispatchRules};
use fluxrelay_core::outcome::retry::RetryPolicy;
use fluxrelay_e2e::pipeline::SAMPLE_WEBHOOK_TOKEN;
use fluxrelay_testkit::moto::{Moto, RecordCalls, create_fifo_queue};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::json;

use crate::cost::Measured;
use crate::moto_time::{self, ROUNDS as MOTO_ROUNDS};
use crate::poller::{Invocation, Poller};
use crate::report::Report;
use crate::serve_bench::{SAMPLE_AFTER, Setup, after_sha};
use crate::stats::Samples;
use crate::template::Settings;
use crate::{Scale, progress};

const SECTION: &str = "SQS path (on moto, not AWS)";
const WEBHOOK_SECRET: &str = "bench/sqs-path/webhook";
const REGISTRY_PREFIX: &str = "bench/sqs-path/clusters/";

/// The SQS operations one client sent, on the wire, since a mark.
struct Calls {
    record: RecordCalls,
    since: AtomicUsize,
}

impl Calls {
    fn new() -> Calls {
        Calls {
            record: RecordCalls::new(),
            since: AtomicUsize::new(0),
        }
    }

    fn mark(&self) {
        self.since
            .store(self.record.targets().len(), Ordering::SeqCst);
    }

    /// Calls since the mark whose operation ends with `operation` (every call for "").
    fn count(&self, operation: &str) -> usize {
        let targets = self.record.targets();
        targets[self.since.load(Ordering::SeqCst).min(targets.len())..]
            .iter()
            .filter(|target| target.ends_with(operation))
            .count()
    }

    fn last_is(&self, operation: &str) -> bool {
        self.record
            .targets()
            .last()
            .is_some_and(|target| target.ends_with(operation))
    }
}

/// The functions wired to moto and the apiserver, with a recorder on each SQS client.
struct Wiring {
    ingest: IngestFunction,
    /// ingest, route, dispatch, intake poller, dispatch poller.
    calls: [Arc<Calls>; 5],
    secrets_calls: RecordCalls,
    intake_poller: Poller,
    dispatch_poller: Poller,
}

async fn wire(setup: &Setup, moto: &Moto, settings: &Settings) -> Wiring {
    let secrets_calls = RecordCalls::new();
    let secrets = moto.secrets_recorded(&secrets_calls).await;
    let plain = moto.sqs().await;
    let intake = create_fifo_queue(&plain, "bench-sqs-path-intake.fifo").await;
    let dispatch_queue = create_fifo_queue(&plain, "bench-sqs-path-dispatch.fifo").await;
    let dispatch_dlq = create_fifo_queue(&plain, "bench-sqs-path-dispatch-dlq.fifo").await;
    let intake_dlq = create_fifo_queue(&plain, "bench-sqs-path-intake-dlq.fifo").await;
    let dispatch_retry = plain
        .create_queue()
        .queue_name("bench-sqs-path-dispatch-retry")
        .send()
        .await
        .expect("CreateQueue retry on moto")
        .queue_url
        .expect("retry queue url");
    secrets
        .create_secret()
        .name(WEBHOOK_SECRET)
        .secret_string(json!({"tokens": [SAMPLE_WEBHOOK_TOKEN]}).to_string())
        .send()
        .await
        .expect("webhook secret on moto");
    // One registered cluster, the first of the Setup's (namespace bench-00).
    let s3 = moto.s3().await;
    let location = RegistryLocation {
        bucket: moto.create_bucket("bench-sqs-path-registry").await,
        index_key: DEFAULT_INDEX_KEY.into(),
        prefix: REGISTRY_PREFIX.into(),
    };
    store_entry(&s3, &secrets, &location, &setup.entries[0], false)
        .await
        .expect("registry entry on moto");
    let calls: [Arc<Calls>; 5] = std::array::from_fn(|_| Arc::new(Calls::new()));
    let sqs = |index: usize| moto.sqs_recorded(&calls[index].record);
    let index = || RegistryIndexReader::new(s3.clone(), &location.bucket, &location.index_key);
    let ingest = IngestFunction {
        auth: WebhookAuth::load(secrets.clone(), WEBHOOK_SECRET, Duration::from_secs(300))
            .await
            .expect("webhook auth from moto"),
        queue: SqsQueue::new(sqs(0).await, &intake),
    };
    let route = Arc::new(RouteFunction {
        registry: index(),
        dispatches: SqsQueue::new(sqs(1).await, &dispatch_queue),
        intake: SqsSettle::new(sqs(1).await, &intake, intake_dlq),
        policy: RetryPolicy::default(),
        paths_from_dispatch: false,
    });
    let dispatch = Arc::new(DispatchFunction {
        registry: AwsRegistry::new(index(), secrets.clone(), REGISTRY_PREFIX),
        clusters: KubeClusters::with_defaults().expect("kube clusters"),
        queue: SqsSettle::new(sqs(2).await, &dispatch_queue, dispatch_dlq)
            .with_retry_queue(dispatch_retry),
        rules: DispatchRules::default(),
        memory: DispatchMemory::default(),
        gitlab: fluxrelay_adapters::gitlab_secret::FunctionGitLab::None,
    });
    let batch = |size: Option<u32>| size.and_then(|s| i32::try_from(s).ok()).unwrap_or(10);
    let intake_poller = Poller::start(
        sqs(3).await,
        intake,
        batch(settings.route.batch_size),
        move |event| {
            let route = route.clone();
            async move {
                route
                    .handle(LambdaEvent::new(event, Context::default()))
                    .await
                    .expect("route")
            }
        },
    );
    let dispatch_poller = Poller::start(
        sqs(4).await,
        dispatch_queue,
        batch(settings.dispatch.batch_size),
        move |event| {
            let dispatch = dispatch.clone();
            async move {
                dispatch
                    .handle(LambdaEvent::new(event, Context::default()))
                    .await
                    .expect("dispatch")
            }
        },
    );
    Wiring {
        ingest,
        calls,
        secrets_calls,
        intake_poller,
        dispatch_poller,
    }
}

/// Where the timed pushes start in the pollers' and Secrets Manager's records.
#[derive(Default)]
struct Marks {
    routes: usize,
    dispatches: usize,
    empty_receives: usize,
    secrets_calls: usize,
}

impl Wiring {
    fn marks(&self) -> Marks {
        Marks {
            routes: self.intake_poller.invocations().len(),
            dispatches: self.dispatch_poller.invocations().len(),
            empty_receives: self.intake_poller.empty_receives()
                + self.dispatch_poller.empty_receives(),
            secrets_calls: self.secrets_calls.targets().len(),
        }
    }

    /// Waits until both pollers have settled every batch and sent their next long poll.
    async fn quiet(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let quiet = [(&self.intake_poller, 3), (&self.dispatch_poller, 4)]
                .iter()
                .all(|(poller, i)| poller.idle() && self.calls[*i].last_is("ReceiveMessage"));
            if quiet {
                return;
            }
            assert!(Instant::now() < deadline, "the pollers did not settle");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Push → Receiver hit through the SQS path, pushes one at a time; returns what the cost
/// model needs.
pub async fn latency(setup: &Setup, moto: &Moto, scale: &Scale, report: &mut Report) -> Measured {
    let settings = Settings::read();
    let wiring = wire(setup, moto, &settings).await;
    let event_template =
        std::fs::read_to_string(crate::workspace_root().join("events/ingest-push-hook.json"))
            .expect("events/ingest-push-hook.json");
    progress(format!(
        "SQS path: {} pushes one at a time through ingest → route → dispatch on moto, 1 cluster",
        scale.latency_pushes
    ));
    let mut samples = Vec::new();
    let mut ingest_times = Vec::new();
    let mut start = Marks::default();
    // Push 0 is untimed and not counted: the first registry read, TLS connection and lists.
    for n in 0..=scale.latency_pushes as u64 {
        wiring.quiet().await;
        if n == 1 {
            wiring.calls.iter().for_each(|calls| calls.mark());
            start = wiring.marks();
        }
        setup.receiver.clear();
        let after = after_sha(6_000_000 + n);
        let request = lambda_http::request::from_str(&event_template.replace(SAMPLE_AFTER, &after))
            .expect("a Function URL event");
        let sent = Instant::now();
        let response = wiring.ingest.handle(request).await.expect("infallible");
        let ingested = sent.elapsed();
        assert_eq!(response.status().as_u16(), 202, "ingest's answer");
        let deadline = sent + Duration::from_secs(30);
        let hit_at = loop {
            if let Some(hit) = setup.hits_for(&after).first() {
                break hit.at;
            }
            assert!(
                Instant::now() < deadline,
                "push {n}: no Receiver hit within 30 s through the SQS path"
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        };
        if n > 0 {
            samples.push(hit_at.duration_since(sent));
            ingest_times.push(ingested);
        }
    }
    wiring.quiet().await;
    setup.receiver.clear();

    let pushes = samples.len() as f64;
    let end = wiring.marks();
    let routes = wiring.intake_poller.invocations()[start.routes..].to_vec();
    let dispatches = wiring.dispatch_poller.invocations()[start.dispatches..].to_vec();
    let empty = end.empty_receives - start.empty_receives;
    let secrets_calls = end.secrets_calls - start.secrets_calls;
    let largest_body = wiring
        .intake_poller
        .largest_body()
        .max(wiring.dispatch_poller.largest_body());
    let [
        ingest_calls,
        route_calls,
        dispatch_calls,
        intake_poller,
        dispatch_poller,
    ] = wiring.calls.clone();
    report.note(
        "SQS path: moto_server (Python, on loopback) stands in for SQS and Secrets Manager, and two in-process pollers for Lambda's event source mappings; neither Lambda's invoke overhead nor AWS's network is in these numbers.",
    );
    // Stop the pollers before timing moto, so it is idle.
    drop(wiring);
    let moto_ms = moto_time::round_trips(moto).await;

    let stats = Samples::from_durations(&samples);
    let p50 = stats.percentile(50.0);
    report.info(
        SECTION,
        &format!(
            "1 cluster: push → Receiver hit p50 / p95 / p99 (max) over {} pushes, pollers long-polling",
            stats.len()
        ),
        format!(
            "{p50:.1} / {:.1} / {:.1} ({:.1}) ms",
            stats.percentile(95.0),
            stats.percentile(99.0),
            stats.max()
        ),
    );
    report.info(
        SECTION,
        &format!(
            "moto's own time as the SDK client sees it, p50 of {MOTO_ROUNDS} on an idle queue: SendMessageBatch (1 message) / send → a waiting long poll returns it / DeleteMessageBatch"
        ),
        format!(
            "{:.1} / {:.1} / {:.1} ms",
            moto_ms.send, moto_ms.hop, moto_ms.delete
        ),
    );
    // On the path to the hit: two hops, each a send (ingest's, route's) and the waiting long
    // poll that returns its message; the deletes follow the handlers, off the path.
    let hops = (routes.len() + dispatches.len()) as f64 / pushes;
    let of_moto = hops * moto_ms.hop;
    report.info(
        SECTION,
        &format!(
            "of which moto (estimated: {hops:.1} hops per push × moto's p50 send → long poll return)"
        ),
        format!(
            "≈ {of_moto:.1} ms of the p50; the rest, ≈ {:.1} ms: fluxrelay, the apiserver and the receiver",
            (p50 - of_moto).max(0.0)
        ),
    );
    let per_push = |calls: &Calls, operation: &str| calls.count(operation) as f64 / pushes;
    report.info(
        SECTION,
        "SQS requests per push, on the wire: ingest / route / dispatch; intake poller and dispatch poller (receive + delete)",
        format!(
            "{:.2} / {:.2} / {:.2}; {:.2} + {:.2} and {:.2} + {:.2} ({empty} empty long polls, {secrets_calls} Secrets Manager calls while timed, largest message {largest_body} B)",
            per_push(&ingest_calls, ""),
            per_push(&route_calls, ""),
            per_push(&dispatch_calls, ""),
            per_push(&intake_poller, "ReceiveMessage"),
            per_push(&intake_poller, "DeleteMessageBatch"),
            per_push(&dispatch_poller, "ReceiveMessage"),
            per_push(&dispatch_poller, "DeleteMessageBatch"),
        ),
    );
    let ingest_ms = Samples::from_durations(&ingest_times);
    let route_ms = handler_ms(&routes);
    let dispatch_ms = handler_ms(&dispatches);
    report.info(
        SECTION,
        "handler time per invocation, mean (p50): ingest / route / dispatch",
        format!(
            "{:.2} ({:.2}) / {:.2} ({:.2}) / {:.2} ({:.2}) ms",
            mean(ingest_ms.values()),
            ingest_ms.percentile(50.0),
            mean(route_ms.values()),
            route_ms.percentile(50.0),
            mean(dispatch_ms.values()),
            dispatch_ms.percentile(50.0),
        ),
    );
    let messages =
        |invocations: &[Invocation]| invocations.iter().map(|i| i.messages).sum::<usize>();
    let per_batch = |calls: &Calls, batches: usize| calls.count("") as f64 / batches.max(1) as f64;
    Measured {
        ingest_requests_per_push: per_push(&ingest_calls, ""),
        route_requests_per_push: per_push(&route_calls, ""),
        // One cluster: a push is one delivery.
        dispatch_requests_per_delivery: per_push(&dispatch_calls, ""),
        intake_poller_requests_per_batch: per_batch(&intake_poller, routes.len()),
        dispatch_poller_requests_per_batch: per_batch(&dispatch_poller, dispatches.len()),
        pushes_per_route_invocation: messages(&routes) as f64 / routes.len().max(1) as f64,
        largest_message_bytes: largest_body,
        ingest_ms: mean(ingest_ms.values()),
        route_ms: mean(route_ms.values()),
        dispatch_ms: mean(dispatch_ms.values()) * dispatches.len() as f64
            / messages(&dispatches).max(1) as f64,
    }
}

fn handler_ms(invocations: &[Invocation]) -> Samples {
    let durations: Vec<Duration> = invocations.iter().map(|i| i.handler).collect();
    Samples::from_durations(&durations)
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}
