//! Test harness: a real moto server (moto's own, started through `tests/env/moto_server.py`)
//! on a free loopback port, killed on drop, and AWS SDK clients that talk to it with static
//! test credentials (nothing read from the process's AWS environment for region,
//! credentials or endpoint).
//!
//! A missing `moto_server` fails the test: a skipped AWS test would pass silently.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sqs::config::Credentials;

const NOT_FOUND: &str = "moto_server not found: run tests/env/setup.sh (installs moto into ~/.cache/fluxrelay/venv) or set FLUXRELAY_MOTO_SERVER";
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Moto {
    child: Option<Child>,
    port: u16,
}

/// `FLUXRELAY_MOTO_SERVER`, else `${FLUXRELAY_CACHE:-$HOME/.cache/fluxrelay}/venv/bin/moto_server`.
pub fn moto_server_path() -> PathBuf {
    if let Some(path) = std::env::var_os("FLUXRELAY_MOTO_SERVER").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("FLUXRELAY_CACHE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect(NOT_FOUND);
            PathBuf::from(home).join(".cache").join("fluxrelay")
        });
    cache.join("venv").join("bin").join("moto_server")
}

/// moto's socket accepts connections before its app is ready: wait for a real answer.
fn answers_http(addr: &SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect_timeout(addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("no free loopback port")
}

impl Moto {
    /// Start a fresh server (each test gets its own, so state never leaks between tests).
    pub fn start() -> Moto {
        let path = moto_server_path();
        assert!(path.is_file(), "{NOT_FOUND} (looked at {})", path.display());
        // moto_server's own python runs it through tests/env/moto_server.py, which fixes a
        // race in which moto lost a sent SQS message (see that file).
        let python = path.with_file_name("python");
        assert!(
            python.is_file(),
            "{NOT_FOUND} (no python beside it: {})",
            python.display()
        );
        let launcher = Path::new(env!("CARGO_MANIFEST_DIR")).join("../env/moto_server.py");
        let mut last_error = String::new();
        // The port is free when chosen but another process may take it first: try again.
        for _ in 0..3 {
            let port = free_port();
            let mut child = Command::new(&python)
                .arg(&launcher)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|error| panic!("{NOT_FOUND} ({}: {error})", path.display()));
            let deadline = Instant::now() + START_TIMEOUT;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_error = format!("moto_server exited early with {status}");
                    break;
                }
                if answers_http(&addr) {
                    return Moto {
                        child: Some(child),
                        port,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = format!(
                        "moto_server did not answer on port {port} within {START_TIMEOUT:?}"
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("could not start moto_server: {last_error}");
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kill the server; later calls through its clients fail to connect.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(self.endpoint())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
            .load()
            .await
    }

    pub async fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk_config().await)
    }

    pub async fn secrets(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.sdk_config().await)
    }

    /// An S3 client on this server (path-style addressing: moto has no per-bucket hosts).
    pub async fn s3(&self) -> aws_sdk_s3::Client {
        self.s3_with(Vec::<RecordCalls>::new()).await
    }

    /// An S3 client whose requests also pass through `interceptors`.
    pub async fn s3_with<I>(&self, interceptors: Vec<I>) -> aws_sdk_s3::Client
    where
        I: aws_sdk_s3::config::Intercept + 'static,
    {
        let mut config =
            aws_sdk_s3::config::Builder::from(&self.sdk_config().await).force_path_style(true);
        for interceptor in interceptors {
            config = config.interceptor(interceptor);
        }
        aws_sdk_s3::Client::from_conf(config.build())
    }

    /// An EKS client on this server.
    pub async fn eks(&self) -> aws_sdk_eks::Client {
        aws_sdk_eks::Client::new(&self.sdk_config().await)
    }

    /// A bucket for the registry index; returns its name.
    pub async fn create_bucket(&self, name: &str) -> String {
        self.s3()
            .await
            .create_bucket()
            .bucket(name)
            .send()
            .await
            .unwrap_or_else(|error| panic!("moto could not create bucket {name}: {error:?}"));
        name.to_string()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Counts the calls a client makes to one operation (`x-amz-target`, e.g.
/// `AmazonSQS.SendMessageBatch`), on the wire. Add it with `.interceptor(...)` to an SQS or
/// Secrets Manager client config: both re-export the same `Intercept` trait.
#[derive(Debug, Clone)]
pub struct CountCalls {
    target: &'static str,
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CountCalls {
    pub fn new(target: &'static str) -> Self {
        Self {
            target,
            count: Default::default(),
        }
    }

    pub fn count(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl aws_sdk_sqs::config::Intercept for CountCalls {
    fn name(&self) -> &'static str {
        "CountCalls"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_sqs::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_sqs::config::RuntimeComponents,
        _: &mut aws_sdk_sqs::config::ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if context.request().headers().get("x-amz-target") == Some(self.target) {
            self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(())
    }
}

/// Create a FIFO queue (`name` ends in `.fifo`) with explicit deduplication ids, as the
/// template's queues are; returns its URL.
pub async fn create_fifo_queue(client: &aws_sdk_sqs::Client, name: &str) -> String {
    let created = client
        .create_queue()
        .queue_name(name)
        .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
        .send()
        .await;
    match created.ok().and_then(|output| output.queue_url) {
        Some(url) => url,
        None => panic!("moto could not create FIFO queue {name}"),
    }
}

/// Records the operation (`x-amz-target`, e.g. `AmazonSQS.SendMessageBatch` or
/// `secretsmanager.GetSecretValue`) of every request a client sends, on the wire and in
/// order, retries included. Clones share one record, so one recorder can sit on all of a
/// function's clients. SQS and Secrets Manager both speak the AWS JSON protocol, which names
/// the operation in that header.
#[derive(Debug, Clone, Default)]
pub struct RecordCalls {
    targets: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl RecordCalls {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every operation recorded so far, in order.
    pub fn targets(&self) -> Vec<String> {
        match self.targets.lock() {
            Ok(targets) => targets.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl aws_sdk_sqs::config::Intercept for RecordCalls {
    fn name(&self) -> &'static str {
        "RecordCalls"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_sqs::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_sqs::config::RuntimeComponents,
        cfg: &mut aws_sdk_sqs::config::ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        // REST APIs (S3, EKS) name no operation on the wire: the SDK's own metadata does,
        // as `service.Operation`. A request with neither is recorded too.
        let metadata = cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>();
        let target = match (context.request().headers().get("x-amz-target"), metadata) {
            (Some(target), _) => target.to_string(),
            (None, Some(metadata)) => format!(
                "{}.{}",
                metadata.service().to_ascii_lowercase(),
                metadata.name()
            ),
            (None, None) => "(no x-amz-target)".to_string(),
        };
        match self.targets.lock() {
            Ok(mut targets) => targets.push(target),
            Err(poisoned) => poisoned.into_inner().push(target),
        }
        Ok(())
    }
}

impl Moto {
    /// An SQS client on this server whose every request `calls` records.
    pub async fn sqs_recorded(&self, calls: &RecordCalls) -> aws_sdk_sqs::Client {
        let config = aws_sdk_sqs::config::Builder::from(&self.sdk_config().await)
            .interceptor(calls.clone())
            .build();
        aws_sdk_sqs::Client::from_conf(config)
    }

    /// A Secrets Manager client on this server whose every request `calls` records.
    pub async fn secrets_recorded(&self, calls: &RecordCalls) -> aws_sdk_secretsmanager::Client {
        let config = aws_sdk_secretsmanager::config::Builder::from(&self.sdk_config().await)
            .interceptor(calls.clone())
            .build();
        aws_sdk_secretsmanager::Client::from_conf(config)
    }
}

/// When each request of a client was on the wire: from just before it is sent to when its
/// response has arrived (moto's own time plus loopback). Add it with `.interceptor(...)`.
#[derive(Debug, Clone, Default)]
pub struct WireTime {
    spans: std::sync::Arc<std::sync::Mutex<Vec<(Instant, Instant)>>>,
}

#[derive(Debug, Clone)]
struct SentAt(Instant);

impl aws_smithy_types::config_bag::Storable for SentAt {
    type Storer = aws_smithy_types::config_bag::StoreReplace<Self>;
}

impl WireTime {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn spans(&self) -> Vec<(Instant, Instant)> {
        match self.spans.lock() {
            Ok(spans) => spans.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Wall time during which at least one request was on the wire (overlaps count once).
    pub fn busy(&self) -> Duration {
        let mut spans = self.spans();
        spans.sort();
        let mut busy = Duration::ZERO;
        let mut current: Option<(Instant, Instant)> = None;
        for (start, end) in spans {
            current = match current {
                Some((s, e)) if start <= e => Some((s, e.max(end))),
                Some((s, e)) => {
                    busy += e - s;
                    Some((start, end))
                }
                None => Some((start, end)),
            };
        }
        if let Some((s, e)) = current {
            busy += e - s;
        }
        busy
    }

    /// The most requests that were on the wire at the same moment.
    pub fn max_in_flight(&self) -> usize {
        let spans = self.spans();
        spans
            .iter()
            .map(|(start, _)| {
                spans
                    .iter()
                    .filter(|(s, e)| s <= start && start < e)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }
}

impl aws_sdk_sqs::config::Intercept for WireTime {
    fn name(&self) -> &'static str {
        "WireTime"
    }

    fn read_before_transmit(
        &self,
        _: &aws_sdk_sqs::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_sqs::config::RuntimeComponents,
        cfg: &mut aws_sdk_sqs::config::ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        cfg.interceptor_state().store_put(SentAt(Instant::now()));
        Ok(())
    }

    fn read_after_transmit(
        &self,
        _: &aws_sdk_sqs::config::interceptors::BeforeDeserializationInterceptorContextRef<'_>,
        _: &aws_sdk_sqs::config::RuntimeComponents,
        cfg: &mut aws_sdk_sqs::config::ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if let Some(SentAt(sent)) = cfg.load::<SentAt>().cloned() {
            let span = (sent, Instant::now());
            match self.spans.lock() {
                Ok(mut spans) => spans.push(span),
                Err(poisoned) => poisoned.into_inner().push(span),
            }
        }
        Ok(())
    }
}

/// Holds every request of one operation (`x-amz-target`) for `delay` before it is sent,
/// as a slow or distant endpoint would: what makes a long read take longer than a
/// visibility timeout. Blocks the calling thread (use a multi-threaded runtime).
#[derive(Debug, Clone)]
pub struct SlowCalls {
    target: &'static str,
    delay: Duration,
}

impl SlowCalls {
    pub fn new(target: &'static str, delay: Duration) -> Self {
        Self { target, delay }
    }
}

impl aws_sdk_sqs::config::Intercept for SlowCalls {
    fn name(&self) -> &'static str {
        "SlowCalls"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_sqs::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_sqs::config::RuntimeComponents,
        _: &mut aws_sdk_sqs::config::ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if context.request().headers().get("x-amz-target") == Some(self.target) {
            std::thread::sleep(self.delay);
        }
        Ok(())
    }
}

/// Fails the requests of a client while switched on (before they are sent), as a throttled
/// or denied read would fail: the SDK call returns an error and nothing reaches moto. Every
/// request, or with [`FailCalls::only`] those of one operation (`x-amz-target`) whose body
/// contains a text (e.g. one secret's name). Clones share the switch.
#[derive(Debug, Clone, Default)]
pub struct FailCalls {
    on: std::sync::Arc<std::sync::atomic::AtomicBool>,
    only: Option<(&'static str, String)>,
}

impl FailCalls {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn only(target: &'static str, body_contains: impl Into<String>) -> Self {
        Self {
            only: Some((target, body_contains.into())),
            ..Self::default()
        }
    }

    pub fn fail(&self, on: bool) {
        self.on.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

impl aws_sdk_sqs::config::Intercept for FailCalls {
    fn name(&self) -> &'static str {
        "FailCalls"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_sqs::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_sqs::config::RuntimeComponents,
        _: &mut aws_sdk_sqs::config::ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let request = context.request();
        let chosen = match &self.only {
            None => true,
            Some((target, text)) => {
                request.headers().get("x-amz-target") == Some(*target)
                    && request
                        .body()
                        .bytes()
                        .is_some_and(|body| String::from_utf8_lossy(body).contains(text.as_str()))
            }
        };
        if chosen && self.on.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("ThrottlingException: Rate exceeded (injected by FailCalls)".into());
        }
        Ok(())
    }
}
