//! Kubernetes: discovery, service-proxy trigger and annotate, one client per registry entry.
//!
//! Every apiserver client is built from the registry entry alone (never from the
//! environment), with no retries (they belong to the queue), explicit timeouts and TLS
//! verification on. Credentials go only to the entry's `server`; an absolute receiver URL
//! gets a plain HTTP client without them. No error or log line carries a credential: the
//! YAML, PEM and header parsers' own messages can quote their input, so those are replaced
//! by ours.
//! An `eks` entry's client holds a token minted from the function's IAM role ([`crate::eks`])
//! and is rebuilt with a fresh token before that token's reuse window ends.
//!
//! - [`config`] and [`kubeconfig`]: what an entry's client connects to and with which
//!   credentials; [`client`]: building and caching each entry's client;
//! - [`lists`] and [`list_cache`]: discovery's lists and their bounded cache;
//! - [`transport`]: what a failure below HTTP was, from the error's types;
//! - here: the adapter itself, its requests and the ports it implements.

mod client;
mod config;
mod consumers;
pub(crate) mod http_stack;
mod kubeconfig;
mod list_cache;
mod lists;
mod tls_sessions;
mod transport;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fluxrelay_core::flux::artifacts::{ArtifactKind, ArtifactObject};
use fluxrelay_core::flux::{GIT_REPOSITORY_GROUP, GitRepository, ObjectRef, Receiver};
use fluxrelay_core::outcome::classify::{
    FailureClass, Responder, TriggerFailure, TriggerResponse, apiserver_status, transport_failure,
};
use fluxrelay_core::ports::{Annotator, ApiserverReadiness, FluxDiscovery, TriggerSender};
use fluxrelay_core::registry::ClusterEntry;
use fluxrelay_core::trigger::request::{MERGE_PATCH_CONTENT_TYPE, RequestTarget, TriggerRequest};
use http::header::CONTENT_TYPE;

pub use list_cache::{
    DEFAULT_LIST_CACHE_BYTES, DEFAULT_LIST_CACHE_ENTRIES, ListCacheLimits, ListCacheUsage,
};

use crate::eks::{EksEndpoints, EksTokens, SystemClock};
use client::ClientCache;
pub use http_stack::ConnectionPool;
pub use kubeconfig::{ContextNames, KubeconfigError, select_names};
use list_cache::ListCache;
use lists::{CachedList, FluxKind, ListKey};
pub(crate) use transport::error_chain;
use transport::transport_kind;

/// The most of a response body kept: enough for any `Status`, never a whole page.
const MAX_BODY_BYTES: usize = 8 * 1024;

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(15);
pub const DEFAULT_LIST_TTL: Duration = Duration::from_secs(30);

/// Time limits for every cluster call; well inside the dispatch function's timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// For the response (apiservers: each read; absolute receiver URLs: the whole request).
    pub read: Duration,
    pub write: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: DEFAULT_CONNECT_TIMEOUT,
            read: DEFAULT_READ_TIMEOUT,
            write: DEFAULT_READ_TIMEOUT,
        }
    }
}

/// The kube adapter: [`FluxDiscovery`], [`TriggerSender`] and [`Annotator`] for every
/// registry entry, with one client per entry name and a short-lived, bounded list cache.
pub struct KubeClusters {
    timeouts: Timeouts,
    list_ttl: Duration,
    clients: ClientCache,
    pool: ConnectionPool,
    lists: ListCache<ListKey, CachedList>,
    /// For absolute receiver URLs: no cluster credentials, no redirects, no proxy. Built on
    /// first use: loading the system's root certificates is most of a cold start, and
    /// most entries only ever use the service proxy.
    receiver_http: OnceLock<http_stack::UrlClient>,
    eks: EksTokens,
    /// Checked before any token is minted for an `eks` entry.
    eks_endpoints: EksEndpoints,
}

/// Whether a whole kubeconfig (with `context`, else its current-context) gives an entry's
/// client: the rule dispatch applies, for `serve --kubeconfig` to apply before listening.
/// The message names fields, never values.
pub fn check_kubeconfig(text: &str, context: Option<&str>) -> Result<(), String> {
    kubeconfig::select(text, context)
        .map(|_| ())
        .map_err(|error| error.to_string())
}

fn configuration_failure(reason: impl Into<String>) -> TriggerFailure {
    TriggerFailure {
        class: FailureClass::Permanent,
        responder: Responder::Configuration,
        status: None,
        reason: reason.into(),
        credentials_rejected: false,
    }
}

impl KubeClusters {
    /// `list_ttl` bounds how long a GitRepository or Receiver list is reused. `eks` entries
    /// use the `aws-config` default chain, looked up on first use (`serve`, the CLI).
    pub fn new(timeouts: Timeouts, list_ttl: Duration) -> Result<Self, TriggerFailure> {
        Ok(Self::with_aws(
            timeouts,
            list_ttl,
            EksTokens::from_default_chain(),
            EksEndpoints::from_default_chain(),
        ))
    }

    /// A Lambda function's: the defaults of [`KubeClusters::with_defaults`], and `eks`
    /// entries use the function's own AWS configuration ([`crate::lambda_aws`]), so the
    /// default chain is not linked into the function.
    pub fn for_lambda(aws: &aws_config::SdkConfig) -> Result<Self, TriggerFailure> {
        let credentials = aws.credentials_provider().ok_or_else(|| {
            configuration_failure("the function's AWS configuration has no credentials")
        })?;
        Ok(Self::with_aws(
            Timeouts::default(),
            DEFAULT_LIST_TTL,
            EksTokens::new(credentials, Arc::new(SystemClock)),
            EksEndpoints::from_config(aws.clone()),
        ))
    }

    fn with_aws(
        timeouts: Timeouts,
        list_ttl: Duration,
        eks: EksTokens,
        eks_endpoints: EksEndpoints,
    ) -> Self {
        Self {
            timeouts,
            list_ttl,
            clients: ClientCache::default(),
            pool: ConnectionPool::default(),
            lists: ListCache::new(list_ttl, ListCacheLimits::default()),
            receiver_http: OnceLock::new(),
            eks,
            eks_endpoints,
        }
    }

    /// How many lists, and about how many bytes of them, the list cache may hold
    /// (default: [`DEFAULT_LIST_CACHE_ENTRIES`], [`DEFAULT_LIST_CACHE_BYTES`]). Starts
    /// with an empty cache.
    pub fn with_list_cache_limits(mut self, limits: ListCacheLimits) -> Self {
        self.lists = ListCache::new(self.list_ttl, limits);
        self
    }

    /// What the list cache holds now.
    pub fn list_cache_usage(&self) -> ListCacheUsage {
        self.lists.usage()
    }

    fn receiver_http(&self) -> Result<&http_stack::UrlClient, TriggerFailure> {
        if let Some(client) = self.receiver_http.get() {
            return Ok(client);
        }
        let timeouts = self.timeouts;
        let client = http_stack::UrlClient::new(
            timeouts,
            timeouts.connect + timeouts.read + timeouts.write,
            ConnectionPool::default(),
        )
        .map_err(|error| {
            configuration_failure(format!(
                "could not build the HTTP client for receiver URLs: {error}"
            ))
        })?;
        // Two first uses at once build two clients; one is kept, both work.
        Ok(self.receiver_http.get_or_init(|| client))
    }

    /// Where `eks` entries get their AWS credentials and clock (default: the `aws-config`
    /// default chain, looked up on first use, and the wall clock).
    pub fn with_eks_tokens(mut self, eks: EksTokens) -> Self {
        self.eks = eks;
        self
    }

    /// Where `eks` entries' servers are checked (default: DescribeCluster with the
    /// `aws-config` default chain, looked up on first use).
    pub fn with_eks_endpoints(mut self, endpoints: EksEndpoints) -> Self {
        self.eks_endpoints = endpoints;
        self
    }

    /// Connect 5 s, read and write 15 s, lists reused for 30 s.
    pub fn with_defaults() -> Result<Self, TriggerFailure> {
        Self::new(Timeouts::default(), DEFAULT_LIST_TTL)
    }

    async fn send_to_apiserver(
        &self,
        entry: &ClusterEntry,
        method: http::Method,
        path: &str,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Result<TriggerResponse, TriggerFailure> {
        self.request_apiserver(entry, method, path, headers, body, MAX_BODY_BYTES)
            .await
    }

    /// One request to the entry's own apiserver; at most `limit` bytes of the answer.
    async fn request_apiserver(
        &self,
        entry: &ClusterEntry,
        method: http::Method,
        path: &str,
        headers: &http::HeaderMap,
        body: &[u8],
        limit: usize,
    ) -> Result<TriggerResponse, TriggerFailure> {
        // A relative path only: kube joins it to the entry's server, so the request cannot
        // leave for another host.
        if !path.starts_with('/') || path.starts_with("//") {
            return Err(configuration_failure(
                "an apiserver request path must start with a single '/'",
            ));
        }
        let client = self.client(entry).await?;
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .body(http_stack::full(body.to_vec()))
            .map_err(|_| configuration_failure("the apiserver request path is not a valid URI"))?;
        *request.headers_mut() = headers.clone();
        let response = client
            .send(request)
            .await
            .map_err(|error| transport_failure(transport_kind(&*error), &error_chain(&*error)))?;
        let status = response.status().as_u16();
        let content_type = content_type(response.headers());
        let mut body = Vec::new();
        http_stack::read_limited(response.into_body(), limit, &mut body).await;
        let response = TriggerResponse {
            status,
            content_type,
            body,
        };
        if status == 401 && apiserver_status(&response).is_some() {
            self.forget_client(entry);
        }
        Ok(response)
    }

    async fn send_to_url(
        &self,
        url: &url::Url,
        request: &TriggerRequest,
    ) -> Result<TriggerResponse, TriggerFailure> {
        let mut outgoing = http::Request::builder()
            .method(request.method.clone())
            .uri(url.as_str())
            .body(http_stack::full(request.body.clone()))
            .map_err(|_| configuration_failure("the receiver URL is not a valid request URI"))?;
        *outgoing.headers_mut() = request.headers.clone();
        let answer = self
            .receiver_http()?
            .fetch(outgoing, MAX_BODY_BYTES)
            .await
            .map_err(|error| transport_failure(transport_kind(&*error), &error_chain(&*error)))?;
        Ok(TriggerResponse {
            status: answer.status.as_u16(),
            content_type: content_type(&answer.headers),
            body: answer.body,
        })
    }
}

impl FluxDiscovery for KubeClusters {
    async fn git_repositories(
        &self,
        cluster: &ClusterEntry,
        namespace: &str,
        fresh: bool,
    ) -> Result<Vec<GitRepository>, TriggerFailure> {
        // The port returns owned objects: a hit copies the parsed objects (far less than
        // their JSON), after the cache's lock is released.
        Ok(self
            .list::<GitRepository>(cluster, FluxKind::GitRepositories, namespace, fresh)
            .await?
            .to_vec())
    }

    async fn receivers(
        &self,
        cluster: &ClusterEntry,
        namespace: &str,
        fresh: bool,
    ) -> Result<Vec<Receiver>, TriggerFailure> {
        Ok(self
            .list::<Receiver>(cluster, FluxKind::Receivers, namespace, fresh)
            .await?
            .to_vec())
    }

    async fn artifact_objects(
        &self,
        cluster: &ClusterEntry,
        namespace: &str,
        kind: ArtifactKind,
        fresh: bool,
    ) -> Result<Vec<ArtifactObject>, TriggerFailure> {
        Ok(self
            .list::<ArtifactObject>(cluster, FluxKind::Artifacts(kind), namespace, fresh)
            .await?
            .to_vec())
    }
}

impl TriggerSender for KubeClusters {
    async fn send(
        &self,
        cluster: &ClusterEntry,
        request: &TriggerRequest,
    ) -> Result<TriggerResponse, TriggerFailure> {
        match &request.target {
            RequestTarget::ApiServerPath(path) => {
                self.send_to_apiserver(
                    cluster,
                    request.method.clone(),
                    path,
                    &request.headers,
                    &request.body,
                )
                .await
            }
            RequestTarget::Absolute(url) => self.send_to_url(url, request).await,
        }
    }
}

impl ApiserverReadiness for KubeClusters {
    /// `/readyz` is readable by every authenticated user (`system:public-info-viewer`);
    /// a starting apiserver answers it with an error, or denies it too.
    async fn apiserver_ready(&self, cluster: &ClusterEntry) -> Result<(), String> {
        let response = self
            .send_to_apiserver(
                cluster,
                http::Method::GET,
                "/readyz",
                &http::HeaderMap::new(),
                &[],
            )
            .await
            .map_err(|failure| failure.reason)?;
        if response.status == 200 {
            Ok(())
        } else {
            Err(format!("/readyz answered {}", response.status))
        }
    }
}

impl Annotator for KubeClusters {
    async fn annotate(
        &self,
        cluster: &ClusterEntry,
        repository: &ObjectRef,
        merge_patch: &[u8],
    ) -> Result<TriggerResponse, TriggerFailure> {
        if !is_object_name(&repository.namespace) || !is_object_name(&repository.name) {
            return Err(configuration_failure(format!(
                "cannot annotate GitRepository {repository}: not a valid namespace and name"
            )));
        }
        let path = format!(
            "/apis/{GIT_REPOSITORY_GROUP}/v1/namespaces/{}/gitrepositories/{}",
            repository.namespace, repository.name
        );
        let mut headers = http::HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            http::HeaderValue::from_static(MERGE_PATCH_CONTENT_TYPE),
        );
        self.send_to_apiserver(cluster, http::Method::PATCH, &path, &headers, merge_patch)
            .await
    }

    async fn annotate_object(
        &self,
        cluster: &ClusterEntry,
        kind: ArtifactKind,
        object: &ObjectRef,
        merge_patch: &[u8],
    ) -> Result<TriggerResponse, TriggerFailure> {
        if !is_object_name(&object.namespace) || !is_object_name(&object.name) {
            return Err(configuration_failure(format!(
                "cannot annotate {kind} {object}: not a valid namespace and name"
            )));
        }
        let mut headers = http::HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            http::HeaderValue::from_static(MERGE_PATCH_CONTENT_TYPE),
        );
        let path = kind.object_path(object);
        self.send_to_apiserver(cluster, http::Method::PATCH, &path, &headers, merge_patch)
            .await
    }
}

/// A DNS-1123 subdomain: what namespaces and object names are, and nothing that could
/// change the path it is put in.
fn is_object_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

fn content_type(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
}

#[cfg(test)]
#[path = "mod_test.rs"]
mod tests;
