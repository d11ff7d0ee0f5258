//! The `fluxrelay serve` stages: ingest throughput and queue depth, push → Receiver hit
//! latency, and coalescing against the naive dispatcher. All over real parts: the release
//! `fluxrelay` binary, a real kube-apiserver whose service proxy forwards to the Flux
//! receiver emulator, and HTTP on loopback.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fluxrelay_testkit::kube_env::KubeEnv;
use fluxrelay_testkit::receiver::{FluxReceiverEmulator, Hit, ReceiverSpec};
use serde_json::{Value, json};

use crate::plot::{self, Series};
use crate::report::Report;
use crate::serve_proc::{Scrape, ServeProcess, peak_rss_mib};
use crate::stats::Samples;
use crate::{Scale, progress};

const WEBHOOK_TOKEN: &str = "bench-webhook-token-5f1c";
const RECEIVER_ADDR: &str = "192.0.2.10:9292";
/// The project of `events/webhooks/push-hook.json`, and its branch.
const PROJECT_URL: &str = "http://example.com/mike/diaspora.git";
const BRANCH: &str = "master";
/// The `after` of push-hook.json; replaced per request so every push has its own key.
pub const SAMPLE_AFTER: &str = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7";

/// The apiserver, the receiver emulator, and one namespace per benchmark cluster, each with
/// a GitRepository tracking the sample project and a Ready `generic` Receiver selecting it.
pub struct Setup {
    pub kube: KubeEnv,
    pub receiver: FluxReceiverEmulator,
    /// Registry entries, one per namespace (`bench-00`, `bench-01`, …).
    pub entries: Vec<Value>,
    /// Each cluster's Receiver webhook path (`/hook/<sha256>`), for the latency floor.
    pub hook_paths: Vec<String>,
    pub dir: PathBuf,
    push_template: String,
    runs: AtomicU64,
}

pub fn namespace(index: usize) -> String {
    format!("bench-{index:02}")
}

impl Setup {
    pub async fn start(scale: &Scale) -> Setup {
        let clusters = scale.latency_clusters[1].max(scale.burst_clusters);
        progress(format!(
            "starting the kube-apiserver and the receiver emulator; {clusters} benchmark clusters"
        ));
        let kube = KubeEnv::start().await;
        let rbac = std::fs::read_to_string(crate::workspace_root().join("infra/rbac.yaml"))
            .expect("infra/rbac.yaml");
        kube.apply(&rbac).await;
        let receiver = FluxReceiverEmulator::start(RECEIVER_ADDR.parse().unwrap())
            .await
            .expect("receiver emulator on 192.0.2.10:9292");
        let mut entries = Vec::new();
        let mut hook_paths = Vec::new();
        for index in 0..clusters {
            let ns = namespace(index);
            kube.apply(
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
                    .to_string(),
            )
            .await;
            // The dispatcher's Role, in this namespace (the proxy rule stays in flux-system).
            kube.apply(&rbac.replace("namespace: flux-system", &format!("namespace: {ns}")))
                .await;
            kube.apply(
                &json!({
                    "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                    "metadata": {"name": "app", "namespace": ns},
                    "spec": {"interval": "10m", "url": PROJECT_URL, "ref": {"branch": BRANCH}}
                })
                .to_string(),
            )
            .await;
            let path = receiver.upsert(ReceiverSpec {
                namespace: ns.clone(),
                name: "r".into(),
                receiver_type: "generic".into(),
                token: format!("bench-receiver-token-{index}"),
                events: Vec::new(),
                suspended: false,
                ready: true,
            });
            kube.apply(&json!({
                "apiVersion": "notification.toolkit.fluxcd.io/v1", "kind": "Receiver",
                "metadata": {"name": "r", "namespace": ns},
                "spec": {"type": "generic", "secretRef": {"name": "r-token"},
                         "resources": [{"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository", "name": "app"}]}
            }).to_string())
            .await;
            kube.patch_status(
                "notification.toolkit.fluxcd.io/v1",
                "receivers",
                &ns,
                "r",
                json!({
                    "webhookPath": path,
                    "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded",
                                    "message": format!("Receiver initialized for path: {path}"),
                                    "lastTransitionTime": "2026-11-22T00:00:00Z"}]
                }),
            )
            .await;
            hook_paths.push(path.clone());
            entries.push(json!({
                "name": format!("c{index:02}"),
                "server": kube.server(),
                "ca": kube.ca_pem(),
                "auth": {"token": kube.dispatcher_token()},
                "namespaces": [ns],
                "trigger": {"mode": "receiver"},
            }));
        }
        let dir = std::env::temp_dir().join(format!("fluxrelay-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("bench temp dir");
        let push_template =
            std::fs::read_to_string(crate::workspace_root().join("events/webhooks/push-hook.json"))
                .expect("events/webhooks/push-hook.json");
        assert!(push_template.contains(SAMPLE_AFTER));
        Setup {
            kube,
            receiver,
            entries,
            hook_paths,
            dir,
            push_template,
            runs: AtomicU64::new(0),
        }
    }

    /// A fresh configuration (own data directory) for the first `clusters` entries.
    pub fn config(&self, clusters: usize) -> PathBuf {
        self.config_for(&self.entries[..clusters])
    }

    /// A fresh configuration (own data directory) with these registry entries.
    pub fn config_for(&self, entries: &[Value]) -> PathBuf {
        let run = self.runs.fetch_add(1, Ordering::SeqCst);
        let dir = self.dir.join(format!("run-{run}"));
        std::fs::create_dir_all(&dir).expect("run dir");
        let mut files = Vec::new();
        for entry in entries {
            let file = format!("cluster-{}.json", entry["name"].as_str().unwrap());
            std::fs::write(dir.join(&file), entry.to_string()).expect("cluster file");
            files.push(format!("{file:?}"));
        }
        let text = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\ncluster_files = [{}]\n\n[webhook]\ntokens = [\"{WEBHOOK_TOKEN}\"]\n\n[dispatch]\nmax_attempts = 8\nretry_base_secs = 5\nretry_max_secs = 900\n",
            files.join(", ")
        );
        let path = dir.join("fluxrelay.toml");
        std::fs::write(&path, text).expect("fluxrelay.toml");
        path
    }

    /// push-hook.json with its own `after` (so its own dedup key).
    pub fn push_body(&self, sequence: u64) -> String {
        self.push_template
            .replace(SAMPLE_AFTER, &after_sha(sequence))
    }

    /// The Receiver hits so far that answered 200 to the push whose `after` is given.
    pub fn hits_for(&self, after: &str) -> Vec<Hit> {
        self.receiver
            .hits()
            .into_iter()
            .filter(|hit| hit.status == 200)
            .filter(|hit| {
                serde_json::from_slice::<Value>(&hit.body).is_ok_and(|body| body["after"] == after)
            })
            .collect()
    }

    /// The cluster index a Receiver hit belongs to, from its namespace.
    fn hit_cluster(receiver: Option<&str>) -> Option<usize> {
        receiver?
            .strip_prefix("bench-")?
            .split('/')
            .next()?
            .parse()
            .ok()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn after_sha(sequence: u64) -> String {
    format!("be{sequence:038x}")
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

pub async fn post_push(client: &reqwest::Client, serve: &ServeProcess, body: String) -> u16 {
    client
        .post(serve.url("/webhook"))
        .header("content-type", "application/json")
        .header("x-gitlab-event", "Push Hook")
        .header("x-gitlab-token", WEBHOOK_TOKEN)
        .body(body)
        .send()
        .await
        .map(|response| response.status().as_u16())
        .unwrap_or(0)
}

/// Waits until both queues are empty (nothing visible or in flight); the time it took.
pub async fn drained(client: &reqwest::Client, serve: &ServeProcess, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let scrape = Scrape::get(client, serve).await;
        if scrape.depth("intake") + scrape.depth("dispatch") == 0.0 {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "serve's queues did not drain within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What one load run measured: `202`s, other answers, how long it ran, and each `202`'s
/// time from sending the request to its answer.
struct LoadRun {
    accepted: u64,
    other: u64,
    elapsed: Duration,
    latencies: Samples,
    /// What serve used from the load's start to its end.
    serve: ServeUsage,
    /// What the other programs on the two cores used meanwhile.
    machine: MachineCpu,
}

/// serve's CPU (user + system) and the bytes it wrote to the file system (its pages dirtied,
/// `write_bytes` of `/proc/<pid>/io`: the queue's WAL frames and checkpoints) so far; a
/// wrapped serve reports its wrapper's.
#[derive(Debug, Default, Clone, Copy)]
struct ServeUsage {
    cpu: Duration,
    written: u64,
}

impl ServeUsage {
    fn now(serve: &ServeProcess) -> ServeUsage {
        let written = std::fs::read_to_string(format!("/proc/{}/io", serve.pid()))
            .ok()
            .and_then(|io| {
                io.lines()
                    .find_map(|line| line.strip_prefix("write_bytes:"))
                    .and_then(|value| value.trim().parse().ok())
            })
            .unwrap_or_default();
        ServeUsage {
            cpu: crate::coldstart::cpu_time(serve.pid()).unwrap_or_default(),
            written,
        }
    }

    fn since(&self, before: &ServeUsage) -> ServeUsage {
        ServeUsage {
            cpu: self.cpu.saturating_sub(before.cpu),
            written: self.written.saturating_sub(before.written),
        }
    }
}

/// `load_connections` keep-alive clients posting push-hook.json to `/webhook`, each with its
/// own `after`, until `stop`.
fn start_load(
    setup: &Setup,
    scale: &Scale,
    serve: &ServeProcess,
    first_sequence: u64,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(u64, u64, Vec<Duration>)>> {
    let client = http_client();
    let sequence = Arc::new(AtomicU64::new(first_sequence));
    let bodies = Arc::new(setup.push_template.clone());
    (0..scale.load_connections)
        .map(|_| {
            let (client, stop, sequence, bodies) = (
                client.clone(),
                stop.clone(),
                sequence.clone(),
                bodies.clone(),
            );
            let url = serve.url("/webhook");
            tokio::spawn(async move {
                let (mut accepted, mut other, mut latencies) = (0u64, 0u64, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let n = sequence.fetch_add(1, Ordering::Relaxed);
                    let body = bodies.replace(SAMPLE_AFTER, &after_sha(n));
                    let sent = Instant::now();
                    let status = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("x-gitlab-event", "Push Hook")
                        .header("x-gitlab-token", WEBHOOK_TOKEN)
                        .body(body)
                        .send()
                        .await
                        .map(|response| response.status().as_u16())
                        .unwrap_or(0);
                    if status == 202 {
                        accepted += 1;
                        latencies.push(sent.elapsed());
                    } else {
                        other += 1;
                    }
                }
                (accepted, other, latencies)
            })
        })
        .collect()
}

async fn finish_load(
    setup: &Setup,
    generators: Vec<tokio::task::JoinHandle<(u64, u64, Vec<Duration>)>>,
    start: Instant,
    serve: &ServeProcess,
    at_start: (ServeUsage, MachineCpu),
) -> LoadRun {
    let (mut accepted, mut other, mut latencies) = (0u64, 0u64, Vec::new());
    for generator in generators {
        let (a, o, l) = generator.await.expect("load generator");
        accepted += a;
        other += o;
        latencies.extend(l);
    }
    let used = ServeUsage::now(serve).since(&at_start.0);
    LoadRun {
        accepted,
        other,
        elapsed: start.elapsed(),
        latencies: Samples::from_durations(&latencies),
        serve: used,
        machine: MachineCpu::now(setup).since(&at_start.1),
    }
}

impl LoadRun {
    fn rate(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64()
    }

    fn describe(&self) -> String {
        format!(
            "{:.0} /s ({} in {:.1} s, {} not 202)",
            self.rate(),
            self.accepted,
            self.elapsed.as_secs_f64(),
            self.other
        )
    }

    /// serve's CPU per `202` and as a share of one core, and its bytes written per `202`,
    /// over the load.
    fn usage(&self) -> String {
        let per_push = |total: f64| total / (self.accepted.max(1) as f64);
        let seconds = self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        format!(
            "{:.0} µs CPU per push, {:.0} % of a core; {:.1} KiB written per push, {:.0} MiB/s",
            per_push(self.serve.cpu.as_secs_f64() * 1e6),
            self.serve.cpu.as_secs_f64() * 100.0 / seconds,
            per_push(self.serve.written as f64 / 1024.0),
            self.serve.written as f64 / (1024.0 * 1024.0) / seconds
        )
    }

    /// The CPU of the other programs per `202`, and the whole machine's (serve's
    /// included) per `202` and as a share of the two cores: near 100 % the load is bound by
    /// the CPU, below it by something that waits (the fsyncs).
    fn machine_usage(&self) -> String {
        let per_push = |cpu: Duration| cpu.as_secs_f64() * 1e6 / (self.accepted.max(1) as f64);
        format!(
            "this process {:.0} µs, kube-apiserver {:.0} µs, etcd {:.0} µs per push; all of them and serve {:.0} µs per push, {:.0} % of the 2 cores",
            per_push(self.machine.bench),
            per_push(self.machine.apiserver),
            per_push(self.machine.etcd),
            per_push(self.serve.cpu + self.machine.total()),
            self.busy_percent()
        )
    }

    /// serve's and the other programs' CPU over the load, as a share of the two cores.
    fn busy_percent(&self) -> f64 {
        let all = self.serve.cpu + self.machine.total();
        let seconds = self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        all.as_secs_f64() * 100.0 / (2.0 * seconds)
    }

    fn latency(&self) -> String {
        format!(
            "{:.1} / {:.1} ({:.1}) ms over {} answers",
            self.latencies.percentile(50.0),
            self.latencies.percentile(99.0),
            self.latencies.max(),
            self.latencies.len()
        )
    }
}

/// 1. Durable ingest throughput (202s per second, `load_connections` concurrent clients
///    for `load_secs`), queue depth over time while dispatch works, serve's peak RSS; then
///    the same load against the same binary started with `--bench-ceiling-no-queue` (the
///    same server answering 202 without queueing): the ceiling durable ingest is held to.
pub async fn throughput(setup: &Setup, scale: &Scale, out: &Path, report: &mut Report) {
    const SECTION: &str = "Ingest throughput (serve)";
    progress(format!(
        "throughput: {} connections for {} s against fluxrelay serve (1 cluster)",
        scale.load_connections, scale.load_secs
    ));
    let serve = ServeProcess::start(&setup.config(1), &[]);
    let client = http_client();
    let stop = Arc::new(AtomicBool::new(false));
    let at_start = (ServeUsage::now(&serve), MachineCpu::now(setup));
    let start = Instant::now();
    let mut generators = start_load(setup, scale, &serve, 1_000_000, &stop);
    // Queue depth every 250 ms, during the load and until dispatch has caught up.
    let mut intake = Vec::new();
    let mut dispatch = Vec::new();
    let load = Duration::from_secs_f64(scale.load_secs);
    let mut durable: Option<LoadRun> = None;
    let mut commits_during_load = (0.0, 0.0, 0.0);
    loop {
        let scrape = Scrape::get(&client, &serve).await;
        let t = start.elapsed().as_secs_f64();
        let (i, d) = (scrape.depth("intake"), scrape.depth("dispatch"));
        intake.push((t, i));
        dispatch.push((t, d));
        if durable.is_none() && start.elapsed() >= load {
            stop.store(true, Ordering::Relaxed);
            let run = finish_load(
                setup,
                std::mem::take(&mut generators),
                start,
                &serve,
                at_start,
            )
            .await;
            let after = Scrape::get(&client, &serve).await;
            commits_during_load = (
                after.sum("fluxrelay_queue_commits", &[]),
                after.sum("fluxrelay_queue_synced_commits", &[]),
                after.sum("fluxrelay_queue_writes", &[]),
            );
            progress(format!(
                "  load over after {:.1} s: {} accepted; waiting for dispatch to drain",
                run.elapsed.as_secs_f64(),
                run.accepted
            ));
            durable = Some(run);
        }
        if durable.is_some() && i + d == 0.0 {
            break;
        }
        assert!(
            start.elapsed() < load + Duration::from_secs(600),
            "dispatch did not drain within 10 minutes of the load"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let durable = durable.expect("the load ran");
    let drain = start.elapsed().saturating_sub(durable.elapsed);
    let peak_dispatch = dispatch.iter().map(|p| p.1).fold(0.0, f64::max);
    let peak_intake = intake.iter().map(|p| p.1).fold(0.0, f64::max);
    report.judged(
        SECTION,
        "pushes acknowledged 202 per second (durable: committed with `synchronous = FULL`)",
        durable.describe(),
        "≥ 10,000 /s",
        durable.rate() >= 10_000.0 && durable.other == 0,
    );
    report.info(
        SECTION,
        "durable: time to each 202 under that load, p50 / p99 (max)",
        durable.latency(),
    );
    report.info(
        SECTION,
        "durable: serve's CPU (user + system) and bytes written during the load, per 202 (its route and dispatch included; a wrapper's if wrapped)",
        durable.usage(),
    );
    report.info(
        SECTION,
        "durable: the other programs' CPU during the load, per 202 (this process is the load generator and the Receiver emulator), and the machine's",
        durable.machine_usage(),
    );
    let (commits, synced, writes) = commits_during_load;
    report.info(
        SECTION,
        "durable: queue transactions, of which fsynced, and writes until the load ended (route and dispatch included); writes per transaction",
        format!(
            "{commits:.0}, {synced:.0} fsynced; {writes:.0} writes, {:.1} per transaction",
            writes / commits.max(1.0)
        ),
    );
    report.info(
        SECTION,
        "peak queue depth (intake / dispatch), time to drain after the load",
        format!(
            "{peak_intake:.0} / {peak_dispatch:.0}; {:.1} s",
            drain.as_secs_f64()
        ),
    );
    let rss = peak_rss_mib(serve.pid()).unwrap_or(f64::NAN);
    report.judged(
        "Memory",
        "`fluxrelay serve` peak RSS after the throughput load",
        format!("{rss:.1} MiB"),
        "≤ 24 MB",
        rss <= 24.0,
    );
    let file = "queue-depth.svg";
    if let Err(error) = plot::lines(
        &out.join(file),
        &format!(
            "fluxrelay serve: queue depth during {:.0} s of load and after",
            scale.load_secs
        ),
        "seconds since the load started",
        "messages visible or in flight",
        &[
            Series {
                label: "intake".into(),
                points: intake,
            },
            Series {
                label: "dispatch".into(),
                points: dispatch,
            },
        ],
    ) {
        report.note(format!("queue depth plot failed: {error}"));
    } else {
        report.plot("Queue depth over time", file);
    }
    drop(serve);
    setup.receiver.clear();
    ceiling(setup, scale, &durable, report).await;
    against_connections(setup, scale, out, report).await;
}

/// One durable and one ceiling load at each of `load_sweep`'s connection counts: how each
/// throughput grows with the webhooks in flight. The ceiling is bound by the CPU once the
/// cores are busy; the durable path by its commit cycle (the fsync and the writer's work),
/// whose groups grow with what is in flight. A curve, so the ratio judged at
/// `load_connections` is read as one point of it.
async fn against_connections(setup: &Setup, scale: &Scale, out: &Path, report: &mut Report) {
    const SECTION: &str = "Ingest throughput (serve)";
    let (mut durable_points, mut ceiling_points) = (Vec::new(), Vec::new());
    let mut rows = Vec::new();
    for (index, &connections) in scale.load_sweep.iter().enumerate() {
        progress(format!(
            "throughput against connections: {connections} connections, durable and ceiling loads of {} s",
            scale.load_secs
        ));
        let at = Scale {
            load_connections: connections,
            ..*scale
        };
        let sequence = 40_000_000 + 2_000_000 * index as u64;
        let ceiling = load_only(setup, &at, Ingest::Ceiling, sequence).await;
        let durable = load_only(setup, &at, Ingest::Durable, sequence + 1_000_000).await;
        durable_points.push((connections as f64, durable.rate()));
        ceiling_points.push((connections as f64, ceiling.rate()));
        rows.push(format!(
            "{connections}: {:.0} / {:.0} = {:.2} (p99 {:.1} / {:.1} ms; cores busy {:.0} / {:.0} %)",
            durable.rate(),
            ceiling.rate(),
            durable.rate() / ceiling.rate().max(f64::MIN_POSITIVE),
            durable.latencies.percentile(99.0),
            ceiling.latencies.percentile(99.0),
            durable.busy_percent(),
            ceiling.busy_percent()
        ));
        if durable.other + ceiling.other > 0 {
            rows.push(format!(
                "{connections}: {} / {} answers not 202",
                durable.other, ceiling.other
            ));
        }
    }
    report.info(
        SECTION,
        "against the load's connections: durable / ceiling pushes per second = ratio (p99 of the 202, durable / ceiling), one load each",
        rows.join("; "),
    );
    let file = "throughput-connections.svg";
    if let Err(error) = plot::lines(
        &out.join(file),
        "fluxrelay serve: pushes acknowledged per second against connections",
        "concurrent connections of the load",
        "202 per second",
        &[
            Series {
                label: "durable".into(),
                points: durable_points,
            },
            Series {
                label: "ceiling (no queue)".into(),
                points: ceiling_points,
            },
        ],
    ) {
        report.note(format!("throughput plot failed: {error}"));
    } else {
        report.plot("Throughput against connections", file);
    }
}

/// The same load against the same binary and configuration started with
/// `--bench-ceiling-no-queue`: every layer of the server, authentication, parsing, the log
/// line and the metrics, but the accepted pushes are not queued (so nothing is routed or
/// dispatched either). Durable ingest's throughput is judged against it.
///
/// One durable run against one ceiling is a sample of each: on this host the ceiling alone
/// read 31,000–39,500/s from run to run. So the ratio judged is the median of the first
/// pair (the durable run above, this ceiling) and `ratio_pairs` more, each a ceiling and a
/// durable load back to back on fresh servers, alternating which goes first.
async fn ceiling(setup: &Setup, scale: &Scale, durable: &LoadRun, report: &mut Report) {
    const SECTION: &str = "Ingest throughput (serve)";
    progress(format!(
        "throughput ceiling: the same load for {} s against serve --bench-ceiling-no-queue",
        scale.load_secs
    ));
    let run = load_only(setup, scale, Ingest::Ceiling, 9_000_000).await;
    report.info(
        SECTION,
        "ceiling: the same server answering 202 without the queue (`--bench-ceiling-no-queue`, benchmark only)",
        run.describe(),
    );
    report.info(
        SECTION,
        "ceiling: time to each 202 under that load, p50 / p99 (max)",
        run.latency(),
    );
    report.info(
        SECTION,
        "ceiling: serve's CPU and bytes written during the load, per 202",
        run.usage(),
    );
    report.info(
        SECTION,
        "ceiling: the other programs' CPU during the load, per 202, and the machine's",
        run.machine_usage(),
    );
    let mut pairs = vec![(durable.rate(), run.rate())];
    for pair in 0..scale.ratio_pairs {
        progress(format!(
            "throughput pair {} of {}: durable and ceiling loads of {} s back to back",
            pair + 1,
            scale.ratio_pairs,
            scale.load_secs
        ));
        let sequence = 20_000_000 + 2_000_000 * pair as u64;
        let (durable, ceiling) = if pair % 2 == 0 {
            let ceiling = load_only(setup, scale, Ingest::Ceiling, sequence).await;
            let durable = load_only(setup, scale, Ingest::Durable, sequence + 1_000_000).await;
            (durable, ceiling)
        } else {
            let durable = load_only(setup, scale, Ingest::Durable, sequence).await;
            let ceiling = load_only(setup, scale, Ingest::Ceiling, sequence + 1_000_000).await;
            (durable, ceiling)
        };
        pairs.push((durable.rate(), ceiling.rate()));
    }
    let ratios: Vec<f64> = pairs
        .iter()
        .map(|(durable, ceiling)| durable / ceiling.max(f64::MIN_POSITIVE))
        .collect();
    report.info(
        SECTION,
        "durable and ceiling per pair (the first: the runs above), pushes per second, and their ratio",
        pairs
            .iter()
            .zip(&ratios)
            .map(|((durable, ceiling), ratio)| format!("{durable:.0} / {ceiling:.0} = {ratio:.2}"))
            .collect::<Vec<_>>()
            .join("; "),
    );
    // Nearest-rank, of unitless ratios here: the middle pair's, or with an even count the
    // lower of the two middle ones.
    let ratio = Samples::from_millis(ratios.clone()).percentile(50.0);
    report.judged(
        SECTION,
        &format!("durable ÷ ceiling, the median of {} pairs", ratios.len()),
        format!("{ratio:.2}"),
        "≥ 0.5",
        ratio >= 0.5,
    );
}

/// Which server a load runs against.
#[derive(Clone, Copy)]
enum Ingest {
    /// serve as deployed: each `202` after its push's commit.
    Durable,
    /// serve with `--bench-ceiling-no-queue`.
    Ceiling,
}

/// The throughput load alone against a fresh serve, stopped once the load ends (no drain).
async fn load_only(setup: &Setup, scale: &Scale, ingest: Ingest, first_sequence: u64) -> LoadRun {
    let flags: &[&str] = match ingest {
        Ingest::Durable => &[],
        Ingest::Ceiling => &["--bench-ceiling-no-queue"],
    };
    let serve = ServeProcess::start(&setup.config(1), flags);
    let stop = Arc::new(AtomicBool::new(false));
    let at_start = (ServeUsage::now(&serve), MachineCpu::now(setup));
    let start = Instant::now();
    let generators = start_load(setup, scale, &serve, first_sequence, &stop);
    tokio::time::sleep(Duration::from_secs_f64(scale.load_secs)).await;
    stop.store(true, Ordering::Relaxed);
    let run = finish_load(setup, generators, start, &serve, at_start).await;
    drop(serve);
    setup.receiver.clear();
    run
}

/// 2. Push → Receiver hit latency, pushes one after another, for each cluster count.
pub async fn latency(setup: &Setup, scale: &Scale, out: &Path, report: &mut Report) {
    const SECTION: &str = "Latency push → Receiver hit (serve)";
    let client = http_client();
    let mut curves = Vec::new();
    for clusters in scale.latency_clusters {
        progress(format!(
            "latency: {} pushes one at a time, {clusters} cluster(s)",
            scale.latency_pushes
        ));
        let serve = ServeProcess::start(&setup.config(clusters), &[]);
        let floor = Floor::connect(setup).await;
        // Each push is followed by a floor round (the same number of concurrent POSTs
        // straight through the same apiserver's service proxy to the same Receivers,
        // nothing of fluxrelay), so both see the machine as it is at that moment. Each is
        // followed by a pause in which it finishes its work (serve settles after the
        // hits), counted with it. Push and round 0 stay out of the percentiles: the first
        // TLS connections and lists are the cold path, not the steady state; their own row
        // shows them (one sample each), and the apiserver stage counts their requests.
        let mut samples = Vec::new();
        let mut floor_samples = Vec::new();
        let (mut machine, mut floor_machine) = (MachineCpu::default(), MachineCpu::default());
        let mut serve_cpu = Duration::ZERO;
        let mut serve_written = 0;
        let mut before = None;
        let mut cold = None;
        for n in 0..=scale.latency_pushes as u64 {
            if n == 1 {
                before = Some(QueueWork::now(&client, &serve).await);
            }
            setup.receiver.clear();
            let sequence = 2_000_000 + (clusters as u64) * 100_000 + n;
            let at_push = (MachineCpu::now(setup), ServeUsage::now(&serve));
            let sent = Instant::now();
            let status = post_push(&client, &serve, setup.push_body(sequence)).await;
            assert_eq!(status, 202, "latency push answered {status}");
            let hits = wait_for_hits(setup, &after_sha(sequence), clusters, sent, "push", n).await;
            tokio::time::sleep(LATENCY_PAUSE).await;
            let at_round = (MachineCpu::now(setup), ServeUsage::now(&serve));
            let round = floor.round(setup, clusters, n).await;
            tokio::time::sleep(LATENCY_PAUSE).await;
            let after_round = MachineCpu::now(setup);
            if n == 0 {
                let last_hit = hits.iter().map(|hit| hit.at.duration_since(sent)).max();
                cold = last_hit.zip(round.iter().max().copied());
            }
            if n > 0 {
                samples.extend(hits.iter().map(|hit| hit.at.duration_since(sent)));
                floor_samples.extend(round);
                machine = machine.plus(&at_round.0.since(&at_push.0));
                floor_machine = floor_machine.plus(&after_round.since(&at_round.0));
                let used = at_round.1.since(&at_push.1);
                serve_cpu += used.cpu;
                serve_written += used.written;
            }
        }
        let work = match before {
            Some(work) => QueueWork::now(&client, &serve).await.since(&work),
            None => QueueWork::default(),
        };
        drop(serve);
        let pushes = scale.latency_pushes.max(1) as f64;
        report.info(
            SECTION,
            &format!(
                "{clusters} cluster(s): per push, the queue's transactions (of which fsynced) and writes; serve's CPU (user + system, wrapper's if wrapped) and bytes written"
            ),
            format!(
                "{:.1} ({:.1}) transactions, {:.1} writes; {:.2} ms CPU; {:.1} KiB written",
                work.commits / pushes,
                work.synced_commits / pushes,
                work.writes / pushes,
                ms(serve_cpu) / pushes,
                serve_written as f64 / 1024.0 / pushes
            ),
        );
        if let Some((push, round)) = cold {
            report.info(
                SECTION,
                &format!(
                    "{clusters} cluster(s): the first push after serve starts (left out of the percentiles: new TLS connections, the cluster's lists read), to its last Receiver hit; the floor's first round, on a new client"
                ),
                format!("fluxrelay {:.1} ms; floor {:.1} ms", ms(push), ms(round)),
            );
        }
        let stats = Samples::from_durations(&samples);
        let (p50, p95, p99) = (
            stats.percentile(50.0),
            stats.percentile(95.0),
            stats.percentile(99.0),
        );
        report.judged(
            SECTION,
            &format!(
                "{clusters} cluster(s): p50 / p95 / p99 (max) over {} hits",
                stats.len()
            ),
            format!("{p50:.1} / {p95:.1} / {p99:.1} ({:.1}) ms", stats.max()),
            "p50 ≤ 10 ms, p99 ≤ 50 ms",
            p50 <= 10.0 && p99 <= 50.0,
        );
        let floor = Samples::from_durations(&floor_samples);
        let (floor_p50, floor_p99) = (floor.percentile(50.0), floor.percentile(99.0));
        report.judged(
            SECTION,
            &format!(
                "{clusters} cluster(s): fluxrelay p50 − floor p50 (floor: {clusters} concurrent POSTs through the service proxy, no fluxrelay; p50 / p99 over {} hits)",
                floor.len()
            ),
            format!(
                "{:+.1} ms (fluxrelay {p50:.1} / {p99:.1} ms; floor {floor_p50:.1} / {floor_p99:.1} ms; ratio of p50s {:.2})",
                p50 - floor_p50,
                p50 / floor_p50.max(0.001)
            ),
            "≤ 3 ms",
            p50 - floor_p50 <= 3.0,
        );
        // What the two cores do for one push beside serve, against one floor round: the
        // distance above can be no smaller than the extra CPU spread over both cores
        // while they are busy.
        let (per_push, per_round) = (
            machine.per(scale.latency_pushes),
            floor_machine.per(scale.latency_pushes),
        );
        let serve_ms = ms(serve_cpu) / pushes;
        let extra = serve_ms + ms(per_push.total()) - ms(per_round.total());
        report.info(
            SECTION,
            &format!(
                "{clusters} cluster(s): CPU per push (fluxrelay) / per round (floor): kube-apiserver, etcd, this process (load generator, Receiver emulator), serve (a wrapper's if wrapped); the extra CPU over 2 cores"
            ),
            format!(
                "apiserver {:.2} / {:.2} ms, etcd {:.2} / {:.2} ms, this process {:.2} / {:.2} ms, serve {serve_ms:.2} ms; {extra:.2} ms more per push, {:.2} ms over 2 cores",
                ms(per_push.apiserver),
                ms(per_round.apiserver),
                ms(per_push.etcd),
                ms(per_round.etcd),
                ms(per_push.bench),
                ms(per_round.bench),
                extra / 2.0
            ),
        );
        let n = stats.len() as f64;
        curves.push(Series {
            label: format!("{clusters} cluster(s)"),
            points: stats
                .values()
                .iter()
                .enumerate()
                .map(|(i, ms)| (*ms, 100.0 * (i + 1) as f64 / n))
                .collect(),
        });
        setup.receiver.clear();
    }
    let file = "latency.svg";
    match plot::lines(
        &out.join(file),
        "push → Receiver hit latency (cumulative distribution)",
        "milliseconds from POST /webhook to the Receiver hit",
        "% of hits at or below",
        &curves,
    ) {
        Ok(()) => report.plot("Latency distribution", file),
        Err(error) => report.note(format!("latency plot failed: {error}")),
    }
}

/// What serve's queue and CPU have done so far: the latency stage's cost per push is the
/// difference over its timed pushes.
#[derive(Debug, Default, Clone, Copy)]
struct QueueWork {
    commits: f64,
    synced_commits: f64,
    writes: f64,
    serve: ServeUsage,
}

impl QueueWork {
    async fn now(client: &reqwest::Client, serve: &ServeProcess) -> QueueWork {
        let scrape = Scrape::get(client, serve).await;
        QueueWork {
            commits: scrape.sum("fluxrelay_queue_commits", &[]),
            synced_commits: scrape.sum("fluxrelay_queue_synced_commits", &[]),
            writes: scrape.sum("fluxrelay_queue_writes", &[]),
            serve: ServeUsage::now(serve),
        }
    }

    fn since(&self, before: &QueueWork) -> QueueWork {
        QueueWork {
            commits: self.commits - before.commits,
            synced_commits: self.synced_commits - before.synced_commits,
            writes: self.writes - before.writes,
            serve: self.serve.since(&before.serve),
        }
    }
}

/// Between a latency push or floor round and the next: long enough for serve to settle a
/// push to 20 clusters after their hits (a few milliseconds), so neither measures the
/// other's tail.
const LATENCY_PAUSE: Duration = Duration::from_millis(20);

/// The latency floor: one POST to each cluster's Receiver at once, through the apiserver's
/// service proxy with the dispatcher's token (the path dispatch takes), on one warm kube
/// client.
struct Floor {
    client: kube::Client,
}

impl Floor {
    async fn connect(setup: &Setup) -> Floor {
        let client = fluxrelay_testkit::kube_env::client_from_kubeconfig(
            &fluxrelay_testkit::kube_env::kubeconfig_yaml(
                &setup.kube.server(),
                &setup.kube.ca_pem(),
                &json!({"token": setup.kube.dispatcher_token()}),
                "floor",
            ),
        )
        .await;
        Floor { client }
    }

    /// One round to the first `clusters` Receivers, timed like fluxrelay's pushes: from
    /// the start of the round to each Receiver hit.
    async fn round(&self, setup: &Setup, clusters: usize, round: u64) -> Vec<Duration> {
        const PROXY: &str =
            "/api/v1/namespaces/flux-system/services/http:webhook-receiver:80/proxy";
        setup.receiver.clear();
        let after = format!("f1{round:038x}");
        let body = json!({"after": after}).to_string();
        let sent = Instant::now();
        let posts = setup.hook_paths[..clusters].iter().map(|path| {
            let request = http::Request::builder()
                .method(http::Method::POST)
                .uri(format!("{PROXY}{path}"))
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(kube::client::Body::from(body.clone().into_bytes()))
                .expect("floor request");
            let client = self.client.clone();
            async move {
                let response = client.send(request).await.expect("floor POST");
                assert_eq!(response.status(), 200, "floor POST answered");
            }
        });
        futures_util::future::join_all(posts).await;
        let hits = wait_for_hits(setup, &after, clusters, sent, "floor round", round).await;
        hits.iter().map(|hit| hit.at.duration_since(sent)).collect()
    }
}

/// The Receiver hits of `after`, once every one of `clusters` has one (30 s at most).
async fn wait_for_hits(
    setup: &Setup,
    after: &str,
    clusters: usize,
    sent: Instant,
    what: &str,
    n: u64,
) -> Vec<Hit> {
    let deadline = sent + Duration::from_secs(30);
    loop {
        let hits = setup.hits_for(after);
        if hits.len() >= clusters {
            return hits;
        }
        assert!(
            Instant::now() < deadline,
            "{what} {n}: {} of {clusters} Receivers hit within 30 s",
            hits.len()
        );
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

/// The CPU (user + system) used so far by the other programs on the two cores: the
/// kube-apiserver and etcd (their pid files from kube-up.sh) and this process (the load
/// generator and the Receiver emulator). 10 ms resolution, so read over many pushes.
#[derive(Debug, Default, Clone, Copy)]
struct MachineCpu {
    apiserver: Duration,
    etcd: Duration,
    bench: Duration,
}

impl MachineCpu {
    fn now(setup: &Setup) -> MachineCpu {
        let server = |name: &str| {
            std::fs::read_to_string(setup.kube.dir().join(format!("{name}.pid")))
                .ok()
                .and_then(|pid| pid.trim().parse().ok())
                .and_then(crate::coldstart::cpu_time)
                .unwrap_or_default()
        };
        MachineCpu {
            apiserver: server("apiserver"),
            etcd: server("etcd"),
            bench: crate::coldstart::cpu_time(std::process::id()).unwrap_or_default(),
        }
    }

    fn since(&self, before: &MachineCpu) -> MachineCpu {
        MachineCpu {
            apiserver: self.apiserver.saturating_sub(before.apiserver),
            etcd: self.etcd.saturating_sub(before.etcd),
            bench: self.bench.saturating_sub(before.bench),
        }
    }

    fn plus(&self, more: &MachineCpu) -> MachineCpu {
        MachineCpu {
            apiserver: self.apiserver + more.apiserver,
            etcd: self.etcd + more.etcd,
            bench: self.bench + more.bench,
        }
    }

    /// The share of one of `count` pushes or rounds.
    fn per(&self, count: usize) -> MachineCpu {
        let count = u32::try_from(count.max(1)).unwrap_or(u32::MAX);
        MachineCpu {
            apiserver: self.apiserver / count,
            etcd: self.etcd / count,
            bench: self.bench / count,
        }
    }

    fn total(&self) -> Duration {
        self.apiserver + self.etcd + self.bench
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// 3. A burst of pushes to one project: Receiver calls per cluster, coalescing against the
///    naive dispatcher (`serve --bench-no-coalesce`), in the same run.
pub async fn coalescing(setup: &Setup, scale: &Scale, report: &mut Report) {
    const SECTION: &str = "Coalescing (serve)";
    let client = http_client();
    let mut calls = Vec::new();
    for (mode, extra) in [
        ("coalescing", &[][..]),
        ("naive", &["--bench-no-coalesce"][..]),
    ] {
        progress(format!(
            "coalescing: a burst of {} pushes to one project, {} clusters, {mode} dispatcher",
            scale.burst_pushes, scale.burst_clusters
        ));
        setup.receiver.clear();
        let serve = ServeProcess::start(&setup.config(scale.burst_clusters), extra);
        let base = if mode == "naive" {
            4_000_000
        } else {
            3_000_000
        };
        let burst = Instant::now();
        let posts = (0..scale.burst_pushes as u64).map(|n| {
            let (client, body) = (client.clone(), setup.push_body(base + n));
            let serve = &serve;
            async move { (post_push(&client, serve, body).await, Instant::now()) }
        });
        let answers = futures_util::future::join_all(posts).await;
        let statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
        assert!(
            statuses.iter().all(|s| *s == 202),
            "burst statuses {statuses:?}"
        );
        let accepted_over = answers
            .iter()
            .map(|(_, at)| at.duration_since(burst))
            .max()
            .unwrap_or_default();
        drained(&client, &serve, Duration::from_secs(600)).await;
        let mut per_cluster: BTreeMap<usize, usize> = BTreeMap::new();
        let mut spans: BTreeMap<usize, (Instant, Instant)> = BTreeMap::new();
        for hit in setup.receiver.hits().iter().filter(|hit| hit.status == 200) {
            if let Some(cluster) = Setup::hit_cluster(hit.receiver.as_deref()) {
                *per_cluster.entry(cluster).or_default() += 1;
                let span = spans.entry(cluster).or_insert((hit.at, hit.at));
                span.0 = span.0.min(hit.at);
                span.1 = span.1.max(hit.at);
            }
        }
        let counts: Vec<usize> = (0..scale.burst_clusters)
            .map(|c| per_cluster.get(&c).copied().unwrap_or(0))
            .collect();
        let max = counts.iter().copied().max().unwrap_or(0);
        let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
        let value = format!(
            "mean {mean:.1}, max {max}, min {}",
            counts.iter().copied().min().unwrap_or(0)
        );
        if mode == "coalescing" {
            // Since issue 12 a push accepted after a cluster's trigger went out needs a
            // trigger of its own: the calls per cluster follow how long the burst took to
            // be accepted, against how long one round of a cluster's dispatch takes.
            let mut call_spans: Vec<f64> = spans
                .values()
                .map(|(first, last)| last.duration_since(*first).as_secs_f64() * 1e3)
                .collect();
            call_spans.sort_by(f64::total_cmp);
            let median_span = call_spans.get(call_spans.len() / 2).copied().unwrap_or(0.0);
            report.info(
                SECTION,
                "the burst: first POST → last 202; a cluster's first → last Receiver call (median over clusters)",
                format!(
                    "{:.1} ms; {median_span:.1} ms",
                    accepted_over.as_secs_f64() * 1e3
                ),
            );
            report.judged(
                SECTION,
                &format!(
                    "Receiver calls per cluster, {} pushes, coalescing",
                    scale.burst_pushes
                ),
                value,
                "≤ 2",
                max <= 2,
            );
        } else {
            report.info(
                SECTION,
                &format!(
                    "Receiver calls per cluster, {} pushes, naive (one per push)",
                    scale.burst_pushes
                ),
                value,
            );
        }
        calls.push(mean);
    }
    report.info(
        SECTION,
        "naive ÷ coalescing calls",
        format!("{:.1}×", calls[1] / calls[0].max(f64::MIN_POSITIVE)),
    );
    setup.receiver.clear();
}
