//! Shared by the `fluxrelay serve` integration tests: the real binary as a child process
//! (killed when its guard drops), a real kube-apiserver with the Flux receiver emulator
//! behind its service proxy, GitLab payloads from `events/webhooks/`, and readers for
//! `/metrics` and the JSON log.
// Each test binary uses a part of this module; a harness fails loudly.
#![allow(
    dead_code,
    unused_macros,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

/// Re-evaluates `$check` (an expression, `.await` allowed) every 100 ms until it is true;
/// fails with `$what` after `$timeout`.
macro_rules! eventually {
    ($timeout:expr, $what:expr, $check:expr) => {{
        let timeout: std::time::Duration = $timeout;
        let deadline = std::time::Instant::now() + timeout;
        while !($check) {
            assert!(
                std::time::Instant::now() < deadline,
                "not within {timeout:?}: {}",
                $what
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }};
}

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fluxrelay_testkit::kube_env::KubeEnv;
use fluxrelay_testkit::receiver::{FluxReceiverEmulator, ReceiverSpec};
use serde_json::{Value, json};

/// The webhook secret the tests' configurations accept (never to be seen in a log).
pub const WEBHOOK_TOKEN: &str = "serve-test-webhook-token-9c41e7";
/// Where the apiserver's `webhook-receiver` Endpoints point (exists only in the netns).
pub const RECEIVER_ADDR: &str = "192.0.2.10:9292";
pub const NAMESPACE: &str = "flux-system";
/// The projects of `events/webhooks/push-hook.json` and `tag-push-hook.json`.
pub const DIASPORA_URL: &str = "https://example.com/mike/diaspora.git";
pub const EXAMPLE_URL: &str = "https://example.com/jsmith/example.git";
/// The cluster name every test registers.
pub const CLUSTER: &str = "local";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn fluxrelay_binary() -> &'static str {
    env!("CARGO_BIN_EXE_fluxrelay")
}

// ---- temporary directory -------------------------------------------------------------------

/// A fresh directory under the system temp dir; removed on drop, kept (and named) when the
/// test failed.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default();
        let dir =
            std::env::temp_dir().join(format!("fluxrelay-{label}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept for inspection: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

// ---- configuration -------------------------------------------------------------------------

/// Writes each cluster entry as `cluster-<name>.json` and a `fluxrelay.toml` naming them,
/// with the queue in `<dir>/data`, fast retries and `extra` appended (TOML). Returns the
/// config file's path.
pub fn write_config(dir: &Path, clusters: &[Value], dispatch: &str) -> PathBuf {
    let mut files = Vec::new();
    for entry in clusters {
        let name = entry["name"].as_str().unwrap();
        let file = format!("cluster-{name}.json");
        std::fs::write(
            dir.join(&file),
            serde_json::to_string_pretty(entry).unwrap(),
        )
        .unwrap();
        files.push(format!("{file:?}"));
    }
    let dispatch = if dispatch.is_empty() {
        "max_attempts = 4\nretry_base_secs = 1\nretry_max_secs = 2\nworkers = 2\n"
    } else {
        dispatch
    };
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\ncluster_files = [{}]\n\n[webhook]\ntokens = [\"{WEBHOOK_TOKEN}\"]\n\n[dispatch]\n{dispatch}",
        files.join(", ")
    );
    let path = dir.join("fluxrelay.toml");
    std::fs::write(&path, text).unwrap();
    path
}

// ---- the fluxrelay serve child process -----------------------------------------------------

/// A running `fluxrelay serve --log-format json`. Dropping it kills the process (SIGKILL)
/// and, when the test failed, prints the end of its log.
pub struct Serve {
    child: Option<Child>,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Serve {
    /// Starts the binary and waits (up to 30 s) for its "listening" log line.
    pub async fn start(config: &Path, extra_args: &[&str]) -> Serve {
        Self::start_with_log_filter(config, extra_args, "info").await
    }

    /// [`Serve::start`] with another `RUST_LOG` filter (e.g. `debug`).
    pub async fn start_with_log_filter(config: &Path, extra_args: &[&str], filter: &str) -> Serve {
        Self::start_with_log(config, extra_args, filter, "json").await
    }

    /// [`Serve::start`] with extra environment variables (e.g. a `token_env` secret).
    pub async fn start_with_env(config: &Path, extra_args: &[&str], env: &[(&str, &str)]) -> Serve {
        Self::start_full(config, extra_args, "info", "json", env).await
    }

    /// [`Serve::start`] with another `RUST_LOG` filter and `--log-format` (`json` or
    /// `text`; [`Serve::log_lines`] and [`Serve::outcomes`] read only `json`).
    pub async fn start_with_log(
        config: &Path,
        extra_args: &[&str],
        filter: &str,
        format: &str,
    ) -> Serve {
        Self::start_full(config, extra_args, filter, format, &[]).await
    }

    async fn start_full(
        config: &Path,
        extra_args: &[&str],
        filter: &str,
        format: &str,
        env: &[(&str, &str)],
    ) -> Serve {
        let mut child = Command::new(fluxrelay_binary())
            .arg("serve")
            .arg("--config")
            .arg(config)
            .args(["--log-format", format])
            .args(extra_args)
            .envs(env.iter().copied())
            .env("RUST_LOG", filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fluxrelay serve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap().push(line);
                }
            })
        };
        let mut serve = Serve {
            child: Some(child),
            addr: "0.0.0.0:0".parse().unwrap(),
            log,
            reader: Some(reader),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(addr) = serve.listening_addr() {
                serve.addr = addr
                    .parse()
                    .unwrap_or_else(|error| panic!("listening on {addr:?}: {error}"));
                return serve;
            }
            if let Some(status) = serve.child.as_mut().unwrap().try_wait().unwrap() {
                serve.join_reader();
                panic!(
                    "fluxrelay serve exited ({status}) before listening:\n{}",
                    serve.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "fluxrelay serve printed no \"listening\" line within 30 s:\n{}",
                serve.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The address of the "listening" line, in the JSON or the text format.
    fn listening_addr(&self) -> Option<String> {
        let json = self
            .log_lines()
            .iter()
            .find(|line| line["message"] == "listening")
            .and_then(|line| line["addr"].as_str().map(str::to_string));
        json.or_else(|| {
            let log = self.log.lock().unwrap();
            log.iter()
                .filter(|line| line.contains(" listening "))
                .flat_map(|line| line.split_whitespace())
                .find_map(|word| word.strip_prefix("addr="))
                .map(str::to_string)
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGKILL: no destructor, no graceful shutdown, no final commit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.join_reader();
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit: (status, time it took).
    pub async fn terminate(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let pid = self.pid();
        let sent = Instant::now();
        let kill = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(kill.success(), "kill -TERM {pid}: {kill}");
        let status = self.wait_exit(timeout).await;
        (status, sent.elapsed())
    }

    /// Waits for the process to exit by itself; kills it and fails after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut().expect("running");
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                self.join_reader();
                return status;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!(
                    "fluxrelay serve did not exit within {timeout:?}:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    fn join_reader(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }

    /// Every log line that is a JSON object (each should be).
    pub fn log_lines(&self) -> Vec<Value> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The log lines with this `outcome`.
    pub fn outcomes(&self, outcome: &str) -> Vec<Value> {
        self.log_lines()
            .into_iter()
            .filter(|line| line["outcome"] == outcome)
            .collect()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            let tail = log.len().saturating_sub(80);
            eprintln!(
                "--- last {} lines of fluxrelay serve's log ---",
                log.len() - tail
            );
            for line in &log[tail..] {
                eprintln!("{line}");
            }
        }
    }
}

/// A `fluxrelay` command that is expected to exit by itself within `timeout`: (status,
/// stdout, stderr). Killed (and the test failed) otherwise.
pub fn run_fluxrelay(args: &[&str], timeout: Duration) -> (ExitStatus, String, String) {
    let mut child = Command::new(fluxrelay_binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fluxrelay");
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "fluxrelay {args:?} did not exit within {timeout:?}; stderr:\n{}",
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (
        status,
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    )
}

// ---- HTTP ------------------------------------------------------------------------------------

/// A client that never goes through a proxy (everything here is on loopback).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// POSTs a GitLab webhook as GitLab sends it: (status, JSON body).
pub async fn post_webhook(
    client: &reqwest::Client,
    serve_addr: SocketAddr,
    gitlab_event: &str,
    token: &str,
    payload: &Value,
) -> Result<(u16, Value), reqwest::Error> {
    let response = client
        .post(format!("http://{serve_addr}/webhook"))
        .header("content-type", "application/json")
        .header("x-gitlab-event", gitlab_event)
        .header("x-gitlab-token", token)
        .body(payload.to_string())
        .send()
        .await?;
    let status = response.status().as_u16();
    let body = response.bytes().await?;
    Ok((
        status,
        serde_json::from_slice(&body).unwrap_or_else(|_| json!(String::from_utf8_lossy(&body))),
    ))
}

/// POSTs and expects an answer (a connection error fails the test).
pub async fn post(serve: &Serve, gitlab_event: &str, payload: &Value) -> (u16, Value) {
    post_webhook(
        &http_client(),
        serve.addr,
        gitlab_event,
        WEBHOOK_TOKEN,
        payload,
    )
    .await
    .unwrap_or_else(|error| panic!("POST /webhook to {}: {error}", serve.addr))
}

/// A raw GitLab payload from `events/webhooks/`.
pub fn payload(file: &str) -> Value {
    let path = repo_root().join("events/webhooks").join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// `tag-push-hook.json` (project jsmith/example) creating tag `v0.0.<n>` at its own commit.
pub fn tag_push(n: usize) -> Value {
    let mut hook = payload("tag-push-hook.json");
    let sha = format!("{:040x}", n + 1);
    hook["ref"] = json!(tag_ref(n));
    hook["after"] = json!(sha);
    hook["checkout_sha"] = json!(sha);
    hook
}

pub fn tag_ref(n: usize) -> String {
    format!("refs/tags/v0.0.{n}")
}

// ---- /metrics --------------------------------------------------------------------------------

/// One scrape of `GET /metrics`.
pub struct Metrics {
    pub text: String,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    pub async fn scrape(serve: &Serve) -> Metrics {
        let response = http_client()
            .get(serve.url("/metrics"))
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET /metrics: {error}"));
        assert_eq!(response.status().as_u16(), 200, "GET /metrics");
        let text = response.text().await.unwrap();
        Metrics::parse(text)
    }

    fn parse(text: String) -> Metrics {
        let mut samples = Vec::new();
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter_map(|pair| pair.split_once('='))
                .map(|(key, value)| (key.to_string(), value.trim_matches('"').to_string()))
                .collect();
            samples.push((name.to_string(), labels, value));
        }
        Metrics { text, samples }
    }

    /// The sample `name` whose labels are exactly `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|(sample, labels, _)| sample == name && *labels == wanted)
            .map(|(_, _, value)| *value)
    }

    /// Like [`Metrics::get`], failing with the whole scrape when absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in /metrics:\n{}", self.text))
    }

    /// Visible + in flight (or waiting out a retry delay) on every queue.
    pub fn queued(&self) -> f64 {
        ["intake", "dispatch", "dispatch-retry"]
            .iter()
            .flat_map(|queue| {
                ["visible", "in_flight"].map(|state| {
                    self.value(
                        "fluxrelay_queue_messages",
                        &[("queue", queue), ("state", state)],
                    )
                })
            })
            .sum()
    }

    pub fn dead_letters(&self) -> f64 {
        ["intake", "dispatch", "dispatch-retry"]
            .iter()
            .map(|queue| {
                self.value(
                    "fluxrelay_queue_messages",
                    &[("queue", queue), ("state", "dead_letter")],
                )
            })
            .sum()
    }
}

// ---- the cluster -----------------------------------------------------------------------------

/// A real kube-apiserver with `infra/rbac.yaml` applied, and the Flux receiver emulator on
/// 192.0.2.10:9292 behind its `webhook-receiver` service proxy.
pub struct Cluster {
    pub kube: KubeEnv,
    pub receiver: FluxReceiverEmulator,
}

impl Cluster {
    pub async fn start() -> Cluster {
        let kube = KubeEnv::start().await;
        kube.apply(&rbac()).await;
        let receiver = FluxReceiverEmulator::start(RECEIVER_ADDR.parse().unwrap())
            .await
            .expect("receiver emulator on 192.0.2.10:9292");
        Cluster { kube, receiver }
    }

    /// A registry entry for this cluster: the dispatcher's static token, the apiserver CA,
    /// and the Receiver tokens (`name` in flux-system → token).
    pub fn entry(&self, receiver_tokens: &[(&str, &str)]) -> Value {
        let tokens: serde_json::Map<String, Value> = receiver_tokens
            .iter()
            .map(|(name, token)| (format!("{NAMESPACE}/{name}"), json!(token)))
            .collect();
        json!({
            "name": CLUSTER,
            "server": self.kube.server(),
            "ca": self.kube.ca_pem(),
            "auth": {"token": self.kube.dispatcher_token()},
            "namespaces": [NAMESPACE],
            "trigger": {"mode": "receiver", "receiver_tokens": tokens},
        })
    }

    pub async fn git_repository(&self, name: &str, url: &str, git_ref: Value) {
        self.kube
            .apply(
                &json!({
                    "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                    "metadata": {"name": name, "namespace": NAMESPACE},
                    "spec": {"interval": "10m", "url": url, "ref": git_ref}
                })
                .to_string(),
            )
            .await;
    }

    /// A Ready Receiver selecting `repository`, in the cluster and in the emulator.
    /// Returns its webhook path.
    pub async fn flux_receiver(
        &self,
        name: &str,
        kind: &str,
        token: &str,
        events: &[&str],
        repository: &str,
    ) -> String {
        let path = self.receiver.upsert(ReceiverSpec {
            namespace: NAMESPACE.into(),
            name: name.into(),
            receiver_type: kind.into(),
            token: token.into(),
            events: events.iter().map(|event| event.to_string()).collect(),
            suspended: false,
            ready: true,
        });
        self.kube
            .apply(&json!({
                "apiVersion": "notification.toolkit.fluxcd.io/v1", "kind": "Receiver",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"type": kind, "events": events, "secretRef": {"name": format!("{name}-token")},
                         "resources": [{"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository", "name": repository}]}
            }).to_string())
            .await;
        self.kube
            .patch_status(
                "notification.toolkit.fluxcd.io/v1",
                "receivers",
                NAMESPACE,
                name,
                json!({
                    "webhookPath": path,
                    "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded",
                                    "message": format!("Receiver initialized for path: {path}"),
                                    "lastTransitionTime": "2026-11-22T00:00:00Z"}]
                }),
            )
            .await;
        path
    }

    /// The `ref` of every request the Receiver answered 200, in arrival order.
    pub fn delivered_refs(&self, receiver: &str) -> Vec<String> {
        self.receiver
            .accepted(NAMESPACE, receiver)
            .iter()
            .map(|hit| {
                let body: Value = serde_json::from_slice(&hit.body).unwrap_or(Value::Null);
                body["ref"].as_str().unwrap_or_default().to_string()
            })
            .collect()
    }
}

/// `infra/rbac.yaml`, the dispatcher's least-privilege Role and its binding.
pub fn rbac() -> String {
    std::fs::read_to_string(repo_root().join("infra/rbac.yaml")).expect("infra/rbac.yaml")
}

/// Whether something accepts TCP connections on `addr`.
pub fn listening(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}
