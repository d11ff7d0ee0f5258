//! `fluxrelay serve` on a network, attacked (loopback only, inside the test's own network
//! namespace): thousands of idle connections, slowloris headers, slow bodies with a wrong
//! token, and a flood of 401s. During each, with the default `[http]` limits:
//!
//! - real pushes with the right token are answered 202 within GitLab's 10 s and delivered
//!   through the real kube-apiserver to the Flux receiver emulator;
//! - `/healthz` and `/metrics` answer;
//! - the attacker's connections are closed (idle and slowloris: by the header-read timeout
//!   or to make room; a wrong token: answered 401 before its body is read);
//! - SIGTERM exits 0 within the shutdown grace;
//! - the process's peak RSS (VmHWM) is printed, with each figure, as one table row.
//!
//! Run: `cargo test -p fluxrelay-cli --test serve_attacks -- --nocapture`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{
    Cluster, EXAMPLE_URL, Metrics, Serve, TempDir, WEBHOOK_TOKEN, tag_push, tag_ref, write_config,
};
use fluxrelay_testkit::netns;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

const RECEIVER_TOKEN: &str = "attacks-receiver-token";
/// GitLab gives up on a delivery after 10 s.
const GITLAB_TIMEOUT: Duration = Duration::from_secs(10);
/// The default `http.shutdown_grace_secs`, and the default header-read timeout.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
const LEGITIMATE_PUSHES: usize = 3;

#[derive(Default)]
struct Stats {
    connected: AtomicUsize,
    connect_errors: AtomicUsize,
    /// Connections the server closed (EOF or reset) while the attacker held them.
    closed_by_server: AtomicUsize,
    /// The longest an attacking connection was held before the server closed it (ms).
    longest_held_ms: AtomicU64,
    /// Wrong-token requests answered 401, and the most body bytes sent before the answer.
    answered_401: AtomicUsize,
    most_body_before_answer: AtomicUsize,
    /// Slow bodies cut by the request timeout (408).
    answered_408: AtomicUsize,
    /// Other answers (not 401 or 408).
    other_answers: AtomicUsize,
}

impl Stats {
    fn held(&self, since: Instant) {
        self.closed_by_server.fetch_add(1, Ordering::Relaxed);
        let held = since.elapsed().as_millis() as u64;
        self.longest_held_ms.fetch_max(held, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Connect and send nothing.
    Idle,
    /// A request line and then one header line byte by byte, a byte a second.
    Slowloris,
    /// A full head with a wrong token and a 5,000,000-byte Content-Length, then the body at
    /// 100 bytes a second.
    SlowBodyWrongToken,
    /// Back-to-back POSTs of 64 KiB with a wrong token, on keep-alive connections.
    Flood401,
    /// The right token and a body at 100 bytes a second (someone who has the token, or
    /// a very slow link): cut by the request timeout, and never holding up SIGTERM.
    SlowBodyRightToken,
}

struct Attack {
    stats: Arc<Stats>,
    tasks: Vec<JoinHandle<()>>,
}

impl Attack {
    fn start(kind: Kind, connections: usize, addr: SocketAddr) -> Attack {
        let stats = Arc::new(Stats::default());
        let tasks = (0..connections)
            .map(|_| {
                let stats = stats.clone();
                tokio::spawn(async move {
                    loop {
                        attacker(kind, addr, &stats).await;
                        // Reconnect, as an attacker would, but not in a tight loop.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                })
            })
            .collect();
        Attack { stats, tasks }
    }

    fn stop(self) -> Arc<Stats> {
        for task in &self.tasks {
            task.abort();
        }
        self.stats
    }
}

async fn attacker(kind: Kind, addr: SocketAddr, stats: &Stats) {
    let mut stream = match TcpStream::connect(addr).await {
        Ok(stream) => stream,
        Err(_) => {
            stats.connect_errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    stats.connected.fetch_add(1, Ordering::Relaxed);
    let since = Instant::now();
    let mut buffer = vec![0u8; 4096];
    match kind {
        Kind::Idle => {
            // Returns when the server closes (0 bytes or an error).
            let _ = stream.read(&mut buffer).await;
            stats.held(since);
        }
        Kind::Slowloris => {
            let head =
                b"POST /webhook HTTP/1.1\r\nHost: fluxrelay\r\nX-Gitlab-Event: Push Hook\r\n";
            if stream.write_all(head).await.is_err() {
                return stats.held(since);
            }
            for byte in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                .iter()
                .cycle()
            {
                if stream.write_all(&[*byte]).await.is_err() {
                    return stats.held(since);
                }
                tokio::select! {
                    read = stream.read(&mut buffer) => {
                        // Closed (or answered 408/400 and then closed).
                        let _ = read;
                        return stats.held(since);
                    }
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
        Kind::SlowBodyWrongToken | Kind::SlowBodyRightToken => {
            let token = match kind {
                Kind::SlowBodyRightToken => WEBHOOK_TOKEN,
                _ => "not-the-token",
            };
            let head = format!(
                "POST /webhook HTTP/1.1\r\nHost: fluxrelay\r\nContent-Type: application/json\r\nX-Gitlab-Event: Push Hook\r\nX-Gitlab-Token: {token}\r\nContent-Length: 5000000\r\n\r\n"
            );
            if stream.write_all(head.as_bytes()).await.is_err() {
                return stats.held(since);
            }
            let mut sent = 0usize;
            loop {
                tokio::select! {
                    read = stream.read(&mut buffer) => {
                        match read {
                            Ok(n) if n > 0 => {
                                let answer = String::from_utf8_lossy(&buffer[..n]);
                                if answer.starts_with("HTTP/1.1 401") {
                                    stats.answered_401.fetch_add(1, Ordering::Relaxed);
                                    stats.most_body_before_answer.fetch_max(sent, Ordering::Relaxed);
                                } else if answer.starts_with("HTTP/1.1 408") {
                                    stats.answered_408.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    stats.other_answers.fetch_add(1, Ordering::Relaxed);
                                }
                                // The server then closes: wait for it.
                                let _ = stream.read_to_end(&mut Vec::new()).await;
                            }
                            _ => {}
                        }
                        return stats.held(since);
                    }
                    () = tokio::time::sleep(Duration::from_millis(100)) => {
                        if stream.write_all(&[b' '; 10]).await.is_err() {
                            return stats.held(since);
                        }
                        sent += 10;
                    }
                }
            }
        }
        Kind::Flood401 => {
            drop(stream);
            let client = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap();
            let body = vec![b' '; 64 * 1024];
            loop {
                let answer = client
                    .post(format!("http://{addr}/webhook"))
                    .header("x-gitlab-event", "Push Hook")
                    .header("x-gitlab-token", "flood-wrong-token")
                    .body(body.clone())
                    .send()
                    .await;
                match answer.map(|response| response.status().as_u16()) {
                    Ok(401) => stats.answered_401.fetch_add(1, Ordering::Relaxed),
                    Ok(_) => stats.other_answers.fetch_add(1, Ordering::Relaxed),
                    Err(_) => stats.connect_errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }
    }
}

/// Peak resident memory of a process, from `/proc/<pid>/status`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// POSTs one push the way GitLab does (a new connection): (status, time to the answer).
async fn push_as_gitlab(addr: SocketAddr, n: usize) -> (u16, Duration) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let sent = Instant::now();
    let status = client
        .post(format!("http://{addr}/webhook"))
        .header("content-type", "application/json")
        .header("x-gitlab-event", "Tag Push Hook")
        .header("x-gitlab-token", WEBHOOK_TOKEN)
        .body(tag_push(n).to_string())
        .send()
        .await
        .map(|response| response.status().as_u16())
        .unwrap_or_else(|error| panic!("push {n} during the attack: {error}"));
    (status, sent.elapsed())
}

async fn get_as_monitoring(addr: SocketAddr, path: &str) -> (u16, Duration) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let sent = Instant::now();
    let status = client
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .map(|response| response.status().as_u16())
        .unwrap_or_else(|error| panic!("GET {path} during the attack: {error}"));
    (status, sent.elapsed())
}

/// One attack at a time on the 2-core machine: each test starts its own kube-apiserver.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

macro_rules! attack_test {
    ($name:ident, $kind:expr, $connections:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            // The parent holds the lock while its child (in the namespace) runs.
            let inside = {
                let _serial = ONE_AT_A_TIME
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                netns::enter(stringify!($name))
            };
            if !inside {
                return;
            }
            under_attack($kind, $connections).await;
        }
    };
}

attack_test!(thousands_of_idle_connections, Kind::Idle, 2_000);
attack_test!(slowloris_headers, Kind::Slowloris, 500);
attack_test!(
    slow_bodies_with_a_wrong_token,
    Kind::SlowBodyWrongToken,
    200
);
attack_test!(a_flood_of_401s, Kind::Flood401, 32);
// Fewer than `http.webhook_concurrency` (16), so GitLab still finds a free slot.
attack_test!(
    slow_bodies_with_the_right_token,
    Kind::SlowBodyRightToken,
    8
);

const TABLE_HEAD: &str = "| attack | attacking connections | connects | connect errors | closed by serve | longest held | 401s / 408s | /metrics: closed for room / header timeouts / request timeouts | slowest legitimate push | /healthz / /metrics | peak RSS (VmHWM) | SIGTERM to exit |";

async fn under_attack(kind: Kind, connections: usize) {
    let cluster = Cluster::start().await;
    cluster
        .git_repository("releases", EXAMPLE_URL, json!({"semver": ">=0.0.0"}))
        .await;
    cluster
        .flux_receiver(
            "releases",
            "gitlab",
            RECEIVER_TOKEN,
            &["Tag Push Hook"],
            "releases",
        )
        .await;
    let dir = TempDir::new("serve-attacks");
    let config = write_config(
        dir.path(),
        &[cluster.entry(&[("releases", RECEIVER_TOKEN)])],
        "",
    );
    let mut serve = Serve::start(&config, &[]).await;
    let addr = serve.addr;
    let pid = serve.pid();
    let attack = Attack::start(kind, connections, addr);
    // Let the attack take hold: every attacker connected once, and the server busy.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut slowest_push = Duration::ZERO;
    let mut tags = Vec::new();
    for n in 0..LEGITIMATE_PUSHES {
        let (status, took) = push_as_gitlab(addr, n).await;
        assert_eq!(status, 202, "{kind:?}: push {n} answered {status}");
        assert!(
            took < GITLAB_TIMEOUT,
            "{kind:?}: push {n} answered after {took:?}, past GitLab's 10 s"
        );
        slowest_push = slowest_push.max(took);
        tags.push(tag_ref(n));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (health, health_took) = get_as_monitoring(addr, "/healthz").await;
    let (metrics, metrics_took) = get_as_monitoring(addr, "/metrics").await;
    assert_eq!(
        (health, metrics),
        (200, 200),
        "{kind:?}: /healthz, /metrics"
    );
    assert!(
        health_took.max(metrics_took) < GITLAB_TIMEOUT,
        "{kind:?}: /healthz took {health_took:?}, /metrics {metrics_took:?}"
    );
    eventually!(
        Duration::from_secs(30),
        format!("{kind:?}: the pushes made during the attack are delivered"),
        {
            let delivered = cluster.delivered_refs("releases");
            tags.iter().all(|tag| delivered.contains(tag))
        }
    );
    // Long enough for every idle and slowloris connection to meet the header timeout.
    tokio::time::sleep(HEADER_READ_TIMEOUT + Duration::from_secs(2)).await;
    // What the server did on its own, before SIGTERM closes everything.
    let load = |counter: &AtomicUsize| counter.load(Ordering::Relaxed);
    let (connected, connect_errors) = (
        load(&attack.stats.connected),
        load(&attack.stats.connect_errors),
    );
    let closed = load(&attack.stats.closed_by_server);
    let answered = load(&attack.stats.answered_401);
    let timed_out = load(&attack.stats.answered_408);
    let other_answers = load(&attack.stats.other_answers);
    let peak_kib = peak_rss_kib(pid);
    // What serve says about it on /metrics.
    let scrape = Metrics::scrape(&serve).await;
    let counter = |name: &str| scrape.get(name, &[]).unwrap_or(0.0) as usize;
    let closed_for_room = counter("fluxrelay_http_connections_closed_for_room_total");
    let header_timeouts = counter("fluxrelay_http_header_timeouts_total");
    let request_timeouts = counter("fluxrelay_http_request_timeouts_total");
    let (status, stop_took) = serve
        .terminate(SHUTDOWN_GRACE + Duration::from_secs(20))
        .await;
    let stats = attack.stop();
    let row = format!(
        "| {kind:?} | {connections} | {connected} | {connect_errors} | {closed} | {:.1} s | {answered} / {timed_out} | {closed_for_room} / {header_timeouts} / {request_timeouts} | {:.0} ms | {:.0} ms / {:.0} ms | {:.1} MiB | {:.2} s |",
        stats.longest_held_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        slowest_push.as_secs_f64() * 1000.0,
        health_took.as_secs_f64() * 1000.0,
        metrics_took.as_secs_f64() * 1000.0,
        peak_kib as f64 / 1024.0,
        stop_took.as_secs_f64(),
    );
    eprintln!("{TABLE_HEAD}\n{row}");
    assert_eq!(
        status.code(),
        Some(0),
        "{kind:?}: exit status after SIGTERM"
    );
    assert!(
        stop_took < SHUTDOWN_GRACE + Duration::from_secs(2),
        "{kind:?}: SIGTERM to exit took {stop_took:?}; the bound is the shutdown grace ({SHUTDOWN_GRACE:?})"
    );
    match kind {
        Kind::Idle | Kind::Slowloris => {
            assert!(
                closed >= connections,
                "{kind:?}: the server closed only {closed} of {connections} attacking connections by itself"
            );
            assert!(
                closed_for_room + header_timeouts > 0,
                "{kind:?}: /metrics counted no connection closed"
            );
        }
        Kind::SlowBodyWrongToken => {
            assert!(
                answered >= connections,
                "{kind:?}: only {answered} of {connections} slow bodies with a wrong token were answered 401"
            );
            let before = stats.most_body_before_answer.load(Ordering::Relaxed);
            assert!(
                before <= 100,
                "{kind:?}: {before} body bytes were sent before the 401; the token is checked before the body"
            );
        }
        Kind::Flood401 => assert!(answered > 0, "{kind:?}: no 401 answered"),
        Kind::SlowBodyRightToken => {
            assert!(
                timed_out >= connections,
                "{kind:?}: only {timed_out} of {connections} slow bodies were cut by the request timeout (408)"
            );
            assert!(
                request_timeouts >= timed_out,
                "{kind:?}: /metrics counted {request_timeouts} request timeouts, the attackers saw {timed_out}"
            );
        }
    }
    assert_eq!(
        other_answers, 0,
        "{kind:?}: an attacking request got another answer than 401 or 408"
    );
}
