//! Cost vs fleet size (issue 15, item 3), as curves: with N clusters registered, `fluxrelay
//! serve`'s RSS and push → last Receiver hit latency, the dispatch Lambda's RSS, route's own
//! time and SQS calls per push, and reading the registry index.
//!
//! Cluster `f<i>` is the serve stages' entry `i mod K` under its own name: it points at the
//! same apiserver and namespace (`bench-<i mod K>`, its GitRepository and Receiver), so the
//! K namespaces made at set-up serve any N. Creating 1,000 namespaces, RBAC, GitRepositories
//! and Receivers would be some 5,000 apiserver writes before the first push; what grows with
//! N on fluxrelay's side (one kube client, TLS connection, list cache and Receiver call per
//! cluster) is paid per entry whichever namespace it names. A push reaches every cluster,
//! so its hits are counted by its `after`, N per push.

use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use fluxrelay_testkit::moto::Moto;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::coldstart::LambdaRun;
use crate::fleet_route::{self, MOTO_LIMIT, index_key};
use crate::plot::{self, Series};
use crate::report::Report;
use crate::serve_bench::{Setup, after_sha, http_client, post_push};
use crate::serve_proc::{ServeProcess, open_sockets, peak_rss_mib, rss_mib};
use crate::sqs_stub::SqsStub;
use crate::stats::Samples;
use crate::{Scale, progress};

const SECTION: &str = "Fleet size";
pub const BUCKET: &str = "bench-fleet-registry";
const PREFIX: &str = "bench/fleet/";
/// The dispatch queue's `BatchSize` in template.yaml: one invocation's messages.
const DISPATCH_BATCH: usize = 10;

pub fn cluster_name(index: usize) -> String {
    format!("f{index:04}")
}

fn entry(setup: &Setup, index: usize) -> Value {
    let mut entry = setup.entries[index % setup.entries.len()].clone();
    entry["name"] = json!(cluster_name(index));
    entry
}

/// Every size the stage registers: the fleet sizes and the route-only ones.
fn sizes(scale: &Scale) -> Vec<usize> {
    let mut sizes: Vec<usize> = scale
        .fleet
        .iter()
        .chain(scale.fleet_route_only)
        .copied()
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// The registry on moto: a secret per cluster up to the largest fleet size (dispatch reads
/// them; route never does, so the route-only sizes have none), and an index per size.
async fn register(setup: &Setup, moto: &Moto, scale: &Scale) {
    let s3 = moto.s3().await;
    moto.create_bucket(BUCKET).await;
    let largest = scale.fleet.iter().copied().max().unwrap_or(0);
    progress(format!(
        "fleet: {largest} registry entries as Secrets Manager secrets on moto"
    ));
    let secrets = moto.secrets().await;
    futures_util::stream::iter(0..largest)
        .map(|index| {
            let secrets = secrets.clone();
            let text = entry(setup, index).to_string();
            async move {
                secrets
                    .create_secret()
                    .name(format!("{PREFIX}{}", cluster_name(index)))
                    .secret_string(text)
                    .send()
                    .await
                    .expect("registry secret on moto");
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
    for clusters in sizes(scale) {
        // Written whole: put_index_items re-reads the index per item (N² at 10,000).
        let items: Vec<Value> = (0..clusters)
            .map(|index| fluxrelay_core::registry::index::index_item(&entry(setup, index)))
            .collect();
        let text = json!({ "clusters": items }).to_string();
        s3.put_object()
            .bucket(BUCKET)
            .key(index_key(clusters))
            .content_type("application/json")
            .body(text.into_bytes().into())
            .send()
            .await
            .expect("registry index on moto");
    }
}

/// What one fleet size measured; `None` where it was not measured at that size.
#[derive(Default)]
struct Point {
    clusters: usize,
    serve_rss: Option<f64>,
    dispatch_rss: Option<f64>,
    latency_p50: Option<f64>,
    route_own_stub: Option<f64>,
    route_own_moto: Option<f64>,
    registry_first: Option<f64>,
    registry_refresh: Option<f64>,
}

pub async fn fleet(setup: &Setup, moto: &Moto, scale: &Scale, out: &Path, report: &mut Report) {
    register(setup, moto, scale).await;
    let stub = SqsStub::start().await;
    let mut points: Vec<Point> = Vec::new();
    for clusters in sizes(scale) {
        let mut point = Point {
            clusters,
            ..Point::default()
        };
        registry(moto, clusters, scale, report, &mut point).await;
        route(moto, &stub, clusters, scale, report, &mut point).await;
        if scale.fleet.contains(&clusters) {
            serve(setup, clusters, scale, report, &mut point).await;
            dispatch(setup, moto, clusters, report, &mut point).await;
        }
        points.push(point);
    }
    plots(&points, out, report);
}

async fn registry(
    moto: &Moto,
    clusters: usize,
    scale: &Scale,
    report: &mut Report,
    point: &mut Point,
) {
    progress(format!(
        "fleet: reading the registry index of {clusters} entries on moto"
    ));
    let read = fleet_route::registry_read(moto, BUCKET, clusters, scale.fleet_reps).await;
    report.info(
        SECTION,
        &format!("{clusters} clusters: registry index read (`RegistryIndexReader` on moto), median of {}", scale.fleet_reps),
        format!(
            "first read {:.1} ms in {} call(s), of which {:.1} ms on the wire (≈ {:.1} ms parse); refresh of the unchanged index {:.1} ms in {} call(s) (`304`)",
            read.first_ms,
            read.first_calls,
            read.first_wire_ms,
            (read.first_ms - read.first_wire_ms).max(0.0),
            read.refresh_ms,
            read.refresh_calls
        ),
    );
    point.registry_first = Some(read.first_ms);
    point.registry_refresh = Some(read.refresh_ms);
}

async fn route(
    moto: &Moto,
    stub: &SqsStub,
    clusters: usize,
    scale: &Scale,
    report: &mut Report,
    point: &mut Point,
) {
    if clusters <= MOTO_LIMIT {
        progress(format!(
            "fleet: routing 1 push to {clusters} clusters on moto"
        ));
        let routed = fleet_route::route_on_moto(moto, BUCKET, clusters).await;
        report.info(
            SECTION,
            &format!("{clusters} clusters: route on moto, one push (registry cached)"),
            format!(
                "{:.1} ms, of which {:.1} ms with a call on the wire to moto (≤ {} at once); ≈ {:.2} ms route's own; {} SQS call(s)",
                routed.elapsed_ms,
                routed.wire_ms,
                routed.max_in_flight,
                routed.own_ms(),
                routed.calls
            ),
        );
        point.route_own_moto = Some(routed.own_ms());
    }
    progress(format!(
        "fleet: routing {} pushes to {clusters} clusters against the counting SQS stub",
        scale.fleet_reps + 1
    ));
    let routed = fleet_route::route_on_stub(moto, stub, BUCKET, clusters, scale.fleet_reps).await;
    let metric = format!(
        "{clusters} clusters: route's own time per push (SQS adapter against the counting stub, median of {}); SQS calls per push",
        scale.fleet_reps
    );
    let value = format!(
        "{:.2} ms ({:.2} ms, of which {:.2} ms with a call on the wire to the stub, ≤ {} at once); {} SQS call(s)",
        routed.own_ms(),
        routed.elapsed_ms,
        routed.wire_ms,
        routed.max_in_flight,
        routed.calls
    );
    let own = routed.own_ms();
    match clusters {
        1000 => report.judged(SECTION, &metric, value, "≤ 20 ms", own <= 20.0),
        10_000 => report.judged(SECTION, &metric, value, "≤ 200 ms", own <= 200.0),
        _ => report.info(SECTION, &metric, value),
    }
    point.route_own_stub = Some(own);
}

/// `fluxrelay serve` with N clusters: `fleet_pushes` pushes one at a time, each waited for
/// until all N Receivers are hit (the first untimed: cold TLS and lists); then peak RSS.
async fn serve(
    setup: &Setup,
    clusters: usize,
    scale: &Scale,
    report: &mut Report,
    point: &mut Point,
) {
    progress(format!(
        "fleet: fluxrelay serve with {clusters} clusters, {} pushes one at a time",
        scale.fleet_pushes
    ));
    let entries: Vec<Value> = (0..clusters).map(|index| entry(setup, index)).collect();
    let serve = ServeProcess::start(&setup.config_for(&entries), &[]);
    let client = http_client();
    let poll = if clusters >= 100 { 10 } else { 1 };
    let mut cold = 0.0;
    let mut latencies = Vec::new();
    for n in 0..scale.fleet_pushes.max(2) as u64 {
        setup.receiver.clear();
        let sequence = 6_000_000 + (clusters as u64) * 100 + n;
        let sent = Instant::now();
        let status = post_push(&client, &serve, setup.push_body(sequence)).await;
        assert_eq!(status, 202, "fleet push answered {status}");
        let after = after_sha(sequence);
        let limit = Duration::from_secs(600);
        let hits = loop {
            let hits = setup.hits_for(&after);
            if hits.len() >= clusters {
                break hits;
            }
            assert!(
                sent.elapsed() < limit,
                "push {n}: {} of {clusters} Receivers hit within {limit:?}",
                hits.len()
            );
            tokio::time::sleep(Duration::from_millis(poll)).await;
        };
        let last = hits
            .iter()
            .map(|hit| hit.at.duration_since(sent))
            .max()
            .unwrap_or_default();
        if n == 0 {
            cold = last.as_secs_f64() * 1e3;
        } else {
            latencies.push(last);
        }
    }
    let rss = peak_rss_mib(serve.pid()).unwrap_or(f64::NAN);
    let rss_now = rss_mib(serve.pid()).unwrap_or(f64::NAN);
    let sockets = open_sockets(serve.pid()).unwrap_or_default();
    drop(serve);
    setup.receiver.clear();
    let stats = Samples::from_durations(&latencies);
    report.info(
        SECTION,
        &format!(
            "{clusters} clusters: `fluxrelay serve` push → last Receiver hit, p50 (max) of {} warm pushes; the first push (cold)",
            stats.len()
        ),
        format!("{:.1} ({:.1}) ms; {cold:.1} ms", stats.percentile(50.0), stats.max()),
    );
    let metric = format!(
        "{clusters} clusters: `fluxrelay serve` peak RSS after {} pushes to all of them",
        scale.fleet_pushes.max(2)
    );
    let value =
        format!("{rss:.1} MiB (after the last push {rss_now:.1} MiB, {sockets} sockets open)");
    if clusters == 1000 {
        report.judged(SECTION, &metric, value, "≤ 64 MiB", rss <= 64.0);
    } else {
        report.info(SECTION, &metric, value);
    }
    point.serve_rss = Some(rss);
    point.latency_p50 = Some(stats.percentile(50.0));
}

/// A dispatch invocation per `DISPATCH_BATCH` clusters, each message a push for a cluster of
/// its own, so the invocations reach every cluster once.
fn dispatch_events(clusters: usize) -> Vec<String> {
    let sample: Value = serde_json::from_str(
        &std::fs::read_to_string(crate::workspace_root().join("events/dispatch-batch.json"))
            .expect("events/dispatch-batch.json"),
    )
    .expect("dispatch-batch.json");
    let record = &sample["Records"][0];
    let body: Value = serde_json::from_str(record["body"].as_str().expect("a body")).expect("body");
    let records: Vec<Value> = (0..clusters)
        .map(|index| {
            let name = cluster_name(index);
            let key = format!("{:064x}", 0xf1ee_7000_0000_u64 + index as u64);
            let mut body = body.clone();
            body["cluster"] = json!(name.as_str());
            body["push"]["key"] = json!(key.as_str());
            let mut record = record.clone();
            record["messageId"] = json!(format!("fleet-{index}"));
            record["receiptHandle"] = json!(format!("fleet-receipt-{index}"));
            record["body"] = json!(body.to_string());
            record["attributes"]["MessageGroupId"] = json!(name.as_str());
            record["attributes"]["MessageDeduplicationId"] = json!(key);
            record
        })
        .collect();
    records
        .chunks(DISPATCH_BATCH)
        .map(|chunk| json!({ "Records": chunk }).to_string())
        .collect()
}

/// The dispatch binary as the cold-start stage runs it (runtime API stub, AWS on moto),
/// with the index of N entries, through invocations that reach all N; then peak RSS.
async fn dispatch(
    setup: &Setup,
    moto: &Moto,
    clusters: usize,
    report: &mut Report,
    point: &mut Point,
) {
    let sqs = moto.sqs().await;
    let mut urls = Vec::new();
    for name in ["dispatch", "dispatch-dlq", "dispatch-retry"] {
        let url = sqs
            .create_queue()
            .queue_name(format!("bench-fleet-{name}.fifo"))
            .attributes(QueueAttributeName::FifoQueue, "true")
            .send()
            .await
            .expect("CreateQueue")
            .queue_url
            .expect("queue url");
        urls.push(url);
    }
    let env: Vec<(String, String)> = [
        ("DISPATCH_QUEUE_URL", urls[0].clone()),
        ("DISPATCH_DLQ_URL", urls[1].clone()),
        ("DISPATCH_RETRY_QUEUE_URL", urls[2].clone()),
        ("REGISTRY_BUCKET", BUCKET.to_string()),
        ("REGISTRY_INDEX_KEY", index_key(clusters)),
        ("REGISTRY_PREFIX", PREFIX.to_string()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value))
    .collect();
    let events = dispatch_events(clusters);
    let invocations = events.len();
    progress(format!(
        "fleet: the dispatch Lambda binary with {clusters} registered, {invocations} invocations reaching all of them"
    ));
    setup.receiver.clear();
    let run = LambdaRun {
        binary: "dispatch",
        events,
        env: &env,
        limit: Duration::from_secs(900),
    };
    let crate::coldstart::Run { rss, answered, .. } = run.once(moto, invocations).await;
    let hits = setup
        .receiver
        .hits()
        .iter()
        .filter(|hit| hit.status == 200)
        .count();
    setup.receiver.clear();
    let metric = format!(
        "{clusters} clusters: dispatch Lambda peak RSS after {answered} invocations of ≤ {DISPATCH_BATCH} messages, one per cluster ({hits} Receiver hits)"
    );
    let value = format!("{rss:.1} MiB");
    if clusters == 1000 {
        report.judged(
            SECTION,
            &metric,
            value,
            "≤ 128 MiB",
            rss <= 128.0 && hits >= clusters,
        );
    } else {
        report.info(SECTION, &metric, value);
    }
    point.dispatch_rss = Some(rss);
}

fn series(points: &[Point], label: &str, pick: fn(&Point) -> Option<f64>) -> Series {
    Series {
        label: label.into(),
        points: points
            .iter()
            .filter_map(|point| pick(point).map(|y| (point.clusters as f64, y)))
            .collect(),
    }
}

fn plots(points: &[Point], out: &Path, report: &mut Report) {
    let charts = [
        (
            "fleet-memory.svg",
            "Fleet size: peak RSS",
            "MiB",
            vec![
                series(points, "fluxrelay serve", |p| p.serve_rss),
                series(points, "dispatch Lambda", |p| p.dispatch_rss),
            ],
        ),
        (
            "fleet-time.svg",
            "Fleet size: route's own time per push, registry index read",
            "milliseconds",
            vec![
                series(points, "route's own (SQS stub)", |p| p.route_own_stub),
                series(points, "route's own (moto)", |p| p.route_own_moto),
                series(points, "index first read (moto)", |p| p.registry_first),
                series(points, "index refresh, 304 (moto)", |p| p.registry_refresh),
            ],
        ),
        (
            "fleet-latency.svg",
            "Fleet size: fluxrelay serve push → last Receiver hit (p50)",
            "milliseconds",
            vec![series(points, "push → last hit", |p| p.latency_p50)],
        ),
    ];
    for (file, title, y_label, curves) in charts {
        match plot::log_log(
            &out.join(file),
            title,
            "clusters registered",
            y_label,
            &curves,
        ) {
            Ok(()) => report.plot(title, file),
            Err(error) => report.note(format!("{file} failed: {error}")),
        }
    }
}
