//! An entry's apiserver over HTTP, built here rather than by `kube::Client::try_from` for
//! what a client per cluster costs when there are a thousand of them (heaptrack of `serve`
//! with 1,000 clusters), and so that calling an apiserver does not link kube's client:
//!
//! - **the TLS session cache**: kube's rustls configuration keeps rustls' default
//!   resumption store (256 sessions, ~14 KB allocated up front per client). A client talks
//!   to one apiserver, so it gets a store for one ([`OneServerSessions`], a few hundred bytes);
//! - **the connection pool**: kube's keeps every connection it opened for 90 s with no
//!   limit (~30 KB of rustls and hyper buffers each). Here each cluster keeps at most
//!   [`ConnectionPool::max_idle`] idle connections for [`ConnectionPool::idle_timeout`];
//! - **the read buffer**: hyper reads each connection's answers through a buffer of 8 KB,
//!   kept while the connection is idle. Here it is [`ANSWER_HEAD_LIMIT`] (4 KiB), read
//!   again as often as an answer needs, which also bounds the answer's status line and
//!   headers (an apiserver's are under 1 KiB, a Receiver's through the proxy too);
//! - **kube's request buffer**: a `kube::Client` puts its service behind a `tower::Buffer`,
//!   whose channel allocates its first block (~10 KB) when built and whose worker task lives
//!   as long as the client. Requests here need no queue in front of a connection pool that
//!   is always ready, so the cache keeps the stack itself ([`ApiserverHttp`]) and calls it
//!   directly; a `kube::Client` is built from it only for the typed API (`cluster check`).
//!
//! The rest follows kube's client, in kube's order: the TLS configuration from the entry's
//! CA and identity ([`ApiserverConfig`]), its server-name override, the server joined before
//! each path, the `Authorization` and impersonation headers, the connect, read and write
//! timeouts, and a tracing span per request (`HTTP` with the method and URL, at debug; the
//! log writer redacts webhook paths in it). Nothing retries: retries belong to the queue.
//!
//! Absolute URLs (a receiver URL, GitLab's API) go through the same hyper client
//! ([`UrlClient`]) with the platform's roots, no credentials and a total time: one HTTP
//! client in every binary instead of this one and reqwest (about 0.3 MB of dispatch).

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Bytes;
use hyper_rustls::FixedServerNameResolver;
use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::client::Resumption;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceBuilder, ServiceExt as _};
use tower_http::trace::TraceLayer;

use super::Timeouts;
use super::config::{ApiserverConfig, ConfigError};
use super::tls_sessions::OneServerSessions;

/// The most bytes of status line and headers read of an apiserver's answer, and the size
/// of each connection's read buffer. The answers here have under 1 KiB of them (the
/// apiserver's own headers, and through the service proxy the Receiver's few); 4 KiB is
/// also what nginx reads an upstream's response head into by default (`proxy_buffer_size`,
/// one page). A longer head fails the request with hyper's "message head is too large".
pub const ANSWER_HEAD_LIMIT: usize = 4 * 1024;

/// How long an idle connection to a cluster's apiserver is kept, and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionPool {
    pub idle_timeout: Duration,
    pub max_idle: usize,
}

impl Default for ConnectionPool {
    /// One connection per cluster, kept for 30 s: the pushes of a burst reuse it (a push
    /// and its retries, the confirmation's reads), and a fleet that is quiet between
    /// pushes costs no memory per cluster.
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30),
            max_idle: 1,
        }
    }
}

/// An apiserver's answer, its body read as it arrives.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// A request's body: ours are whole (`full`); kube's typed API (`cluster check`) streams.
pub type RequestBody = UnsyncBoxBody<Bytes, RequestBodyError>;

/// Why a request's body could not be read (only a streamed one can fail). A named type:
/// a `BoxError` here would make the stack's type higher-ranked over the error's lifetime,
/// which the async callers cannot name.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct RequestBodyError(BoxError);

/// A request body of these bytes.
pub fn full(bytes: impl Into<Bytes>) -> RequestBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// One cluster's apiserver over HTTP: the entry's server, headers and TLS over a bounded
/// connection pool. Cheap to clone (the pool is shared); each clone sends on the same
/// connections.
#[derive(Clone)]
pub struct ApiserverHttp {
    service:
        BoxCloneSyncService<http::Request<RequestBody>, http::Response<ResponseBody>, BoxError>,
    default_namespace: String,
}

impl ApiserverHttp {
    /// Sends one request (its URI a path, joined to the entry's server). The error is the
    /// stack's own, whose chain `transport` reads.
    pub async fn send(
        &self,
        request: http::Request<RequestBody>,
    ) -> Result<http::Response<ResponseBody>, BoxError> {
        self.service.clone().oneshot(request).await
    }

    /// A kube client on the same stack and connections, for kube's typed API. It brings
    /// kube's request buffer with it, for as long as it is kept.
    pub fn kube_client(&self) -> kube::Client {
        let service =
            self.service
                .clone()
                .map_request(|request: http::Request<kube::client::Body>| {
                    request.map(|body| {
                        body.map_err(|error| RequestBodyError(error.into()))
                            .boxed_unsync()
                    })
                });
        kube::Client::new(service, self.default_namespace.clone())
    }
}

/// hyper's client over TCP, TLS and hyper-timeout's limits: what the apiserver stack and
/// [`UrlClient`] both send on (one HTTP client in the binaries, not two).
type HyperClient = hyper_util::client::legacy::Client<
    TimeoutConnector<hyper_rustls::HttpsConnector<HttpConnector>>,
    RequestBody,
>;

fn hyper_client(
    tls: rustls::ClientConfig,
    server_name: Option<&rustls::pki_types::ServerName<'static>>,
    timeouts: Timeouts,
    pool: ConnectionPool,
) -> HyperClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let mut https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    if let Some(name) = server_name {
        https = https.with_server_name_resolver(FixedServerNameResolver::new(name.clone()));
    }
    let https = https.enable_http1().wrap_connector(http);
    let mut connector = TimeoutConnector::new(https);
    connector.set_connect_timeout(Some(timeouts.connect));
    connector.set_read_timeout(Some(timeouts.read));
    connector.set_write_timeout(Some(timeouts.write));
    connector.set_reset_reader_on_write(true);
    hyper_util::client::legacy::Builder::new(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(pool.idle_timeout)
        .pool_max_idle_per_host(pool.max_idle)
        .http1_read_buf_exact_size(ANSWER_HEAD_LIMIT)
        .build(connector)
}

/// The apiserver stack for `config`, with `timeouts`, its pool bounded by `pool`. Fails
/// only when the TLS configuration does (a CA, certificate or key that does not load).
pub fn client(
    config: &ApiserverConfig,
    timeouts: Timeouts,
    pool: ConnectionPool,
) -> Result<ApiserverHttp, ConfigError> {
    let hyper_client = hyper_client(
        tls_config(config)?,
        config.tls_server_name_override(),
        timeouts,
        pool,
    );
    let on_server = Arc::new(OnServer {
        server: config.server().clone(),
        headers: config.headers().to_vec(),
    });
    let service = ServiceBuilder::new()
        .map_response(boxed_body)
        .map_request(move |request| on_server.apply(request))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &http::Request<RequestBody>| {
                tracing::debug_span!(
                    "HTTP",
                    http.method = %request.method(),
                    http.url = %request.uri(),
                )
            }),
        )
        .map_err(BoxError::from)
        .service(hyper_client);
    Ok(ApiserverHttp {
        service: BoxCloneSyncService::new(service),
        default_namespace: config.namespace().to_string(),
    })
}

/// HTTP to absolute URLs (GitLab's API, a receiver URL): the apiserver stack's client with
/// the platform's roots and no credentials of any kind; the caller adds its own headers.
/// No proxy, and redirects are never followed (hyper follows none), so what a request
/// carries goes to its URL and nowhere else. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct UrlClient {
    client: HyperClient,
    total: Duration,
}

/// An answer from a [`UrlClient`]: its status, headers and at most a limit of its body.
#[derive(Debug)]
pub struct UrlAnswer {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl UrlClient {
    /// `timeouts` bound connecting (TCP and TLS) and each read and write; `total` the
    /// whole request, body included.
    pub fn new(
        timeouts: Timeouts,
        total: Duration,
        pool: ConnectionPool,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            client: hyper_client(platform_tls()?, None, timeouts, pool),
            total,
        })
    }

    /// Sends `request` (its URI absolute) and reads at most `limit` bytes of the answer's
    /// body. Without an answer's head within the total time, that is the error (an
    /// `io::Error` of kind `TimedOut`, which `transport` reads as a timeout); a body that
    /// breaks off or runs past it keeps what arrived, since the status is what matters.
    pub async fn fetch(
        &self,
        request: http::Request<RequestBody>,
        limit: usize,
    ) -> Result<UrlAnswer, BoxError> {
        let deadline = tokio::time::Instant::now() + self.total;
        let response = tokio::time::timeout_at(deadline, self.client.request(request))
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {:?}", self.total),
                )
            })??;
        let (parts, body) = response.into_parts();
        let mut out = Vec::new();
        let _ = tokio::time::timeout_at(deadline, read_limited(body, limit, &mut out)).await;
        Ok(UrlAnswer {
            status: parts.status,
            headers: parts.headers,
            body: out,
        })
    }
}

/// At most `limit` bytes of `body` into `out`; a body that fails ends there.
pub(crate) async fn read_limited<B>(mut body: B, limit: usize, out: &mut Vec<u8>)
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    while out.len() < limit {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    out.extend_from_slice(&data);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    out.truncate(limit);
}

/// What every request to the entry's apiserver gets: the server joined before its path,
/// and the entry's `Authorization` and impersonation headers.
struct OnServer {
    server: http::Uri,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl OnServer {
    fn apply(&self, request: http::Request<RequestBody>) -> http::Request<RequestBody> {
        let (mut parts, body) = request.into_parts();
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        // A path that does not join (it cannot: it was a valid URI's) stays relative, and
        // hyper refuses to send it; it never goes anywhere but the entry's server.
        if let Some(uri) = join(&self.server, path_and_query) {
            parts.uri = uri;
        }
        for (name, value) in &self.headers {
            if name == http::header::AUTHORIZATION {
                parts.headers.insert(name.clone(), value.clone());
            } else {
                parts.headers.append(name.clone(), value.clone());
            }
        }
        http::Request::from_parts(parts, body)
    }
}

/// `path_and_query` on `server`, under the server's own path if it has one (a proxy in
/// front of the apiserver, as Rancher's `https://host/k8s/clusters/c-1`), as kube joins
/// them.
pub(super) fn join(server: &http::Uri, path_and_query: &str) -> Option<http::Uri> {
    let base = server.path().trim_end_matches('/');
    let mut builder = http::Uri::builder();
    if let Some(scheme) = server.scheme() {
        builder = builder.scheme(scheme.clone());
    }
    if let Some(authority) = server.authority() {
        builder = builder.authority(authority.clone());
    }
    builder
        .path_and_query(format!("{base}{path_and_query}"))
        .build()
        .ok()
}

/// The platform's roots and no client identity: for URLs outside any registry entry.
fn platform_tls() -> Result<rustls::ClientConfig, ConfigError> {
    Ok(super::config::platform_trust()?.with_no_client_auth())
}

/// The TLS configuration for `config` (its CA, identity and verification), with a session
/// store for its one apiserver.
pub fn tls_config(config: &ApiserverConfig) -> Result<rustls::ClientConfig, ConfigError> {
    let mut tls = config.rustls_client_config()?;
    tls.resumption = Resumption::store(Arc::new(OneServerSessions::default()));
    Ok(tls)
}

/// The answer with its body behind one type, whatever layers wrapped it.
fn boxed_body<B>(response: http::Response<B>) -> http::Response<ResponseBody>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    response.map(|body| body.map_err(Into::into).boxed_unsync())
}

#[cfg(test)]
#[path = "http_stack_test.rs"]
mod tests;
