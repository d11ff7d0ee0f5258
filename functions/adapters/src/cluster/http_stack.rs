//! The kube client's HTTP stack, built here rather than by `kube::Client::try_from` for what
//! a client per cluster costs when there are a thousand of them (heaptrack of `serve` with
//! 1,000 clusters):
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
//! Everything else is kube's own, in kube's order: its TLS configuration from the entry's CA
//! and identity, its server-name override, its base-URI, authentication and header layers,
//! and the same timeouts, and its tracing span per request (`HTTP` with the method and URL,
//! at debug; the log writer redacts webhook paths in it). kube's retry is off as before.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Bytes;
use hyper_rustls::FixedServerNameResolver;
use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::RustlsTlsError;
use kube::client::{Body, ConfigExt};
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceBuilder, ServiceExt as _};
use tower_http::trace::TraceLayer;

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

/// One cluster's apiserver over HTTP: kube's layers over a bounded connection pool. Cheap to
/// clone (the pool is shared); each clone sends on the same connections.
#[derive(Clone)]
pub struct ApiserverHttp {
    service: BoxCloneSyncService<http::Request<Body>, http::Response<ResponseBody>, BoxError>,
    default_namespace: String,
}

impl ApiserverHttp {
    /// Sends one request (its URI a path, joined to the entry's server by kube's base-URI
    /// layer). The error is the stack's own, whose chain `transport` reads.
    pub async fn send(
        &self,
        request: http::Request<Body>,
    ) -> Result<http::Response<ResponseBody>, BoxError> {
        self.service.clone().oneshot(request).await
    }

    /// A kube client on the same stack and connections, for kube's typed API. It brings
    /// kube's request buffer with it, for as long as it is kept.
    pub fn kube_client(&self) -> kube::Client {
        kube::Client::new(self.service.clone(), self.default_namespace.clone())
    }
}

/// The apiserver stack for `config` (whose proxy, retry and timeouts the caller has set),
/// its pool bounded by `pool`. Fails only as kube's own builder does (a CA, certificate or
/// key that does not load).
pub fn client(config: kube::Config, pool: ConnectionPool) -> Result<ApiserverHttp, kube::Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let tls = tls_config(&config)?;
    let mut https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    if let Some(name) = &config.tls_server_name {
        let name = ServerName::try_from(name.clone())
            .map_err(|error| kube::Error::RustlsTls(RustlsTlsError::InvalidServerName(error)))?;
        https = https.with_server_name_resolver(FixedServerNameResolver::new(name));
    }
    let https = https.enable_http1().wrap_connector(http);
    let mut connector = TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let hyper_client = hyper_util::client::legacy::Builder::new(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(pool.idle_timeout)
        .pool_max_idle_per_host(pool.max_idle)
        .http1_read_buf_exact_size(ANSWER_HEAD_LIMIT)
        .build(connector);
    let service = ServiceBuilder::new()
        .map_response(boxed_body)
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &http::Request<Body>| {
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
        default_namespace: config.default_namespace,
    })
}

/// kube's TLS configuration for `config` (its CA, identity and verification), with a
/// session store for its one apiserver.
pub fn tls_config(config: &kube::Config) -> Result<rustls::ClientConfig, kube::Error> {
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
