//! Kubernetes: discovery, service-proxy trigger and annotate, one client per registry entry.
//!
//! Every kube client is built from the registry entry alone (never from the environment),
//! with `default_retry = false` (retries belong to the queue), explicit timeouts and TLS
//! verification on. Credentials go only to the entry's `server`; an absolute receiver URL
//! gets a plain HTTP client without them. No error or log line carries a credential: kube's
//! and the YAML parser's own messages can quote their input, so those are replaced by ours.
//! An `eks` entry's client holds a token minted from the function's IAM role ([`crate::eks`])
//! and is rebuilt with a fresh token before that token's reuse window ends.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use fluxrelay_core::flux::{
    GIT_REPOSITORY_GROUP, GitRepository, ObjectRef, RECEIVER_GROUP, Receiver,
};
use fluxrelay_core::outcome::classify::{
    FailureClass, Responder, TransportErrorKind, TriggerFailure, TriggerResponse, apiserver_status,
    classify_apiserver_response, transport_failure,
};
use fluxrelay_core::ports::{Annotator, ApiserverReadiness, FluxDiscovery, TriggerSender};
use fluxrelay_core::registry::{ClusterEntry, Credentials};
use fluxrelay_core::secret::Secret;
use fluxrelay_core::trigger::request::{MERGE_PATCH_CONTENT_TYPE, RequestTarget, TriggerRequest};
use http::header::CONTENT_TYPE;
use http_body_util::BodyExt as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::eks::{EksTokenError, EksTokens, TokenLifetime};

/// The most of a response body kept: enough for any `Status`, never a whole page.
const MAX_BODY_BYTES: usize = 8 * 1024;
/// A GitRepository or Receiver list, read whole (thousands of objects fit).
const MAX_LIST_BYTES: usize = 16 * 1024 * 1024;
/// The context name of the in-memory kubeconfig built from token or certificate entries.
const CONTEXT: &str = "fluxrelay";

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(15);
pub const DEFAULT_LIST_TTL: Duration = Duration::from_secs(30);

/// Time limits for every cluster call; well inside the dispatch function's timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// For the response (kube: each read; absolute receiver URLs: the whole request).
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

/// The two Flux kinds discovery lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum FluxKind {
    GitRepositories,
    Receivers,
}

impl FluxKind {
    fn plural(self) -> &'static str {
        match self {
            FluxKind::GitRepositories => "gitrepositories",
            FluxKind::Receivers => "receivers",
        }
    }

    fn resource(self) -> ApiResource {
        let (group, kind) = match self {
            FluxKind::GitRepositories => (GIT_REPOSITORY_GROUP, "GitRepository"),
            FluxKind::Receivers => (RECEIVER_GROUP, "Receiver"),
        };
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", kind), self.plural())
    }
}

/// sha256 over the entry's server, CA and credentials: tells when a client must be rebuilt
/// without keeping a second copy of the credentials. Never logged.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Fingerprint([u8; 32]);

fn fingerprint(entry: &ClusterEntry) -> Fingerprint {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    field(entry.server.as_str().as_bytes());
    field(entry.ca.as_deref().unwrap_or_default().as_bytes());
    field(entry.credentials.kind().as_bytes());
    match &entry.credentials {
        Credentials::Token(token) => field(token.expose().as_bytes()),
        Credentials::ClientCertificate {
            certificate_pem,
            key_pem,
        } => {
            field(certificate_pem.as_bytes());
            field(key_pem.expose().as_bytes());
        }
        Credentials::Eks { cluster, region } => {
            field(cluster.as_bytes());
            field(region.as_bytes());
        }
        Credentials::Kubeconfig {
            kubeconfig,
            context,
        } => {
            field(kubeconfig.expose().as_bytes());
            field(context.as_deref().unwrap_or_default().as_bytes());
        }
    }
    Fingerprint(hash.finalize().into())
}

struct CachedClient {
    fingerprint: Fingerprint,
    client: kube::Client,
    /// Set for clients that hold a minted (EKS) token: past it, the client is rebuilt.
    token_lifetime: Option<TokenLifetime>,
}

impl CachedClient {
    fn usable(&self, fingerprint: Fingerprint, now: SystemTime) -> bool {
        self.fingerprint == fingerprint
            && self
                .token_lifetime
                .is_none_or(|lifetime| lifetime.usable_at(now))
    }
}

struct CachedList {
    fingerprint: Fingerprint,
    read_at: Instant,
    items: Vec<Value>,
}

/// The kube adapter: [`FluxDiscovery`], [`TriggerSender`] and [`Annotator`] for every
/// registry entry, with one client per entry name and a short-lived list cache.
pub struct KubeClusters {
    timeouts: Timeouts,
    list_ttl: Duration,
    clients: Mutex<HashMap<String, CachedClient>>,
    lists: Mutex<HashMap<(String, FluxKind, String), CachedList>>,
    /// For absolute receiver URLs: no cluster credentials, no redirects, no proxy. Built on
    /// first use: loading the system's root certificates is most of a cold start, and
    /// most entries only ever use the service proxy.
    receiver_http: OnceLock<reqwest::Client>,
    eks: EksTokens,
}

/// No token, so nothing was sent. Missing AWS credentials may come back (retry); a bad
/// `auth.eks` entry will not.
fn eks_failure(entry: &ClusterEntry, error: &EksTokenError) -> TriggerFailure {
    TriggerFailure {
        class: if error.is_retryable() {
            FailureClass::Retryable
        } else {
            FailureClass::Permanent
        },
        responder: Responder::Configuration,
        status: None,
        reason: format!("cluster {}: no EKS token: {error}", entry.name),
        credentials_rejected: false,
    }
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
    /// `list_ttl` bounds how long a GitRepository or Receiver list is reused.
    pub fn new(timeouts: Timeouts, list_ttl: Duration) -> Result<Self, TriggerFailure> {
        Ok(Self {
            timeouts,
            list_ttl,
            clients: Mutex::new(HashMap::new()),
            lists: Mutex::new(HashMap::new()),
            receiver_http: OnceLock::new(),
            eks: EksTokens::from_default_chain(),
        })
    }

    fn receiver_http(&self) -> Result<&reqwest::Client, TriggerFailure> {
        if let Some(client) = self.receiver_http.get() {
            return Ok(client);
        }
        let timeouts = self.timeouts;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(timeouts.connect)
            .read_timeout(timeouts.read)
            .timeout(timeouts.connect + timeouts.read + timeouts.write)
            .build()
            .map_err(|error| {
                configuration_failure(format!(
                    "could not build the HTTP client for receiver URLs: {}",
                    error_chain(&error)
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

    /// Connect 5 s, read and write 15 s, lists reused for 30 s.
    pub fn with_defaults() -> Result<Self, TriggerFailure> {
        Self::new(Timeouts::default(), DEFAULT_LIST_TTL)
    }

    /// The entry's client, for diagnostics (`fluxrelay cluster check`).
    pub async fn client_for(&self, entry: &ClusterEntry) -> Result<kube::Client, TriggerFailure> {
        self.client(entry).await
    }

    /// The entry's client, built on first use and rebuilt when its server, CA or
    /// credentials change, or when its minted token leaves its reuse window.
    async fn client(&self, entry: &ClusterEntry) -> Result<kube::Client, TriggerFailure> {
        let print = fingerprint(entry);
        if let Some(cached) = self
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&entry.name)
            && cached.usable(print, self.eks.now())
        {
            return Ok(cached.client.clone());
        }
        let minted = match &entry.credentials {
            Credentials::Eks { cluster, region } => Some(
                self.eks
                    .mint(cluster, region)
                    .await
                    .map_err(|error| eks_failure(entry, &error))?,
            ),
            _ => None,
        };
        let config = client_config(
            entry,
            self.timeouts,
            minted.as_ref().map(|minted| &minted.token),
        )
        .await?;
        let client = kube::Client::try_from(config).map_err(|_| {
            configuration_failure(format!(
                "cluster {}: could not build a client from the entry's CA and credentials (a certificate or key is not loadable; details withheld)",
                entry.name
            ))
        })?;
        tracing::debug!(cluster = %entry.name, minted_token = minted.is_some(), "built kube client");
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                entry.name.clone(),
                CachedClient {
                    fingerprint: print,
                    client: client.clone(),
                    token_lifetime: minted.map(|minted| minted.lifetime),
                },
            );
        Ok(client)
    }

    /// The apiserver rejected the entry's credentials (401): the next use builds a new
    /// client, which for an `eks` entry means a new token.
    fn forget_client(&self, entry: &ClusterEntry) {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&entry.name);
    }

    async fn list(
        &self,
        entry: &ClusterEntry,
        kind: FluxKind,
        namespace: &str,
        fresh: bool,
    ) -> Result<Vec<Value>, TriggerFailure> {
        let print = fingerprint(entry);
        let key = (entry.name.clone(), kind, namespace.to_string());
        if !fresh
            && let Some(cached) = self
                .lists
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&key)
            && cached.fingerprint == print
            && cached.read_at.elapsed() < self.list_ttl
        {
            return Ok(cached.items.clone());
        }
        let action = format!("list {} in {namespace}", kind.plural());
        // Namespaces are DNS labels (the registry validates them); anything else must not
        // reach a request path.
        if namespace.is_empty()
            || !namespace
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(configuration_failure(format!(
                "{action}: not a namespace name"
            )));
        }
        // A plain GET whose status is classified like every other apiserver answer: a 3xx
        // is a redirect not followed, not a list that failed to parse.
        let resource = kind.resource();
        let path = format!(
            "/apis/{}/{}/namespaces/{namespace}/{}",
            resource.group, resource.version, resource.plural
        );
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::ACCEPT,
            http::HeaderValue::from_static("application/json"),
        );
        let response = self
            .request_apiserver(
                entry,
                http::Method::GET,
                &path,
                &headers,
                &[],
                MAX_LIST_BYTES,
            )
            .await?;
        classify_apiserver_response(&response, &action).inspect_err(|failure| {
            if failure.credentials_rejected {
                self.forget_client(entry);
            }
        })?;
        let unreadable =
            |why: &str| transport_failure(TransportErrorKind::Other, &format!("{action}: {why}"));
        if response.body.len() >= MAX_LIST_BYTES {
            return Err(unreadable(
                "the list is larger than fluxrelay reads (16 MiB)",
            ));
        }
        let items = match serde_json::from_slice::<Value>(&response.body) {
            Ok(Value::Object(mut list)) => match list.remove("items") {
                Some(Value::Array(items)) => items,
                Some(Value::Null) | None => Vec::new(),
                Some(_) => return Err(unreadable("the list's items are not an array")),
            },
            _ => return Err(unreadable("the answer is not a JSON list")),
        };
        self.lists
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                key,
                CachedList {
                    fingerprint: print,
                    read_at: Instant::now(),
                    items: items.clone(),
                },
            );
        Ok(items)
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
            .body(kube::client::Body::from(body.to_vec()))
            .map_err(|_| configuration_failure("the apiserver request path is not a valid URI"))?;
        *request.headers_mut() = headers.clone();
        let response = client
            .send(request)
            .await
            .map_err(|error| transport_failure(transport_kind(&error), &error_chain(&error)))?;
        let status = response.status().as_u16();
        let content_type = content_type(response.headers());
        let body = read_limited(response.into_body(), limit).await;
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
        let to_failure = |error: reqwest::Error| {
            let error = error.without_url();
            let kind = if error.is_timeout() {
                TransportErrorKind::Timeout
            } else {
                match transport_kind(&error) {
                    TransportErrorKind::Other if error.is_connect() => TransportErrorKind::Connect,
                    kind => kind,
                }
            };
            transport_failure(kind, &error_chain(&error))
        };
        let mut response = self
            .receiver_http()?
            .request(request.method.clone(), url.clone())
            .headers(request.headers.clone())
            .body(request.body.clone())
            .send()
            .await
            .map_err(to_failure)?;
        let status = response.status().as_u16();
        let content_type = content_type(response.headers());
        let mut body = Vec::new();
        // A body that breaks off still leaves the status, which is what matters.
        while body.len() < MAX_BODY_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        body.truncate(MAX_BODY_BYTES);
        Ok(TriggerResponse {
            status,
            content_type,
            body,
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
        let items = self
            .list(cluster, FluxKind::GitRepositories, namespace, fresh)
            .await?;
        Ok(items.iter().map(GitRepository::from_json).collect())
    }

    async fn receivers(
        &self,
        cluster: &ClusterEntry,
        namespace: &str,
        fresh: bool,
    ) -> Result<Vec<Receiver>, TriggerFailure> {
        let items = self
            .list(cluster, FluxKind::Receivers, namespace, fresh)
            .await?;
        Ok(items.iter().map(Receiver::from_json).collect())
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

/// At most `limit` bytes; the rest is never read.
async fn read_limited(mut body: kube::client::Body, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
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
    out
}

/// The kube configuration for an entry, built only from the entry (and, for an `eks`
/// entry, the token just minted for it).
async fn client_config(
    entry: &ClusterEntry,
    timeouts: Timeouts,
    eks_token: Option<&Secret>,
) -> Result<kube::Config, TriggerFailure> {
    let (kubeconfig, context) = match &entry.credentials {
        Credentials::Token(token) => (
            in_memory_kubeconfig(entry, json!({ "token": token.expose() }))?,
            CONTEXT.to_string(),
        ),
        Credentials::ClientCertificate {
            certificate_pem,
            key_pem,
        } => (
            in_memory_kubeconfig(
                entry,
                json!({
                    "client-certificate-data": base64_of(certificate_pem),
                    "client-key-data": base64_of(key_pem.expose()),
                }),
            )?,
            CONTEXT.to_string(),
        ),
        Credentials::Eks { .. } => match eks_token {
            Some(token) => (
                in_memory_kubeconfig(entry, json!({ "token": token.expose() }))?,
                CONTEXT.to_string(),
            ),
            None => {
                return Err(configuration_failure(format!(
                    "cluster {}: no EKS token was minted for this entry",
                    entry.name
                )));
            }
        },
        Credentials::Kubeconfig {
            kubeconfig,
            context,
        } => whole_kubeconfig(entry, kubeconfig.expose(), context.as_deref())?,
    };
    let options = KubeConfigOptions {
        context: Some(context),
        ..KubeConfigOptions::default()
    };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|_| {
            configuration_failure(format!(
                "cluster {}: the cluster configuration could not be loaded (details withheld)",
                entry.name
            ))
        })?;
    // Checked again on the result: credentials go to the entry's server and nowhere else.
    if !same_server(&config.cluster_url.to_string(), &entry.server) {
        return Err(configuration_failure(format!(
            "cluster {}: the configured server is not the entry's server {}",
            entry.name, entry.server
        )));
    }
    config.default_retry = false;
    config.connect_timeout = Some(timeouts.connect);
    config.read_timeout = Some(timeouts.read);
    config.write_timeout = Some(timeouts.write);
    config.reset_reader_on_write = true;
    config.accept_invalid_certs = false;
    config.proxy_url = None;
    Ok(config)
}

fn base64_of(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A kubeconfig with one cluster (the entry's server and CA) and the given user, so kube
/// parses the PEM exactly as it does for `*-data` fields in a file.
fn in_memory_kubeconfig(entry: &ClusterEntry, user: Value) -> Result<Kubeconfig, TriggerFailure> {
    let mut cluster = json!({ "server": entry.server.as_str() });
    if let (Some(ca), Some(fields)) = (&entry.ca, cluster.as_object_mut()) {
        fields.insert(
            "certificate-authority-data".into(),
            Value::String(base64_of(ca)),
        );
    }
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": CONTEXT, "cluster": cluster }],
        "users": [{ "name": CONTEXT, "user": user }],
        "contexts": [{ "name": CONTEXT, "context": { "cluster": CONTEXT, "user": CONTEXT } }],
        "current-context": CONTEXT,
    });
    serde_json::from_value(kubeconfig).map_err(|_| {
        configuration_failure(format!(
            "cluster {}: the entry's credentials could not be put into a client configuration",
            entry.name
        ))
    })
}

/// A whole kubeconfig from the registry: its selected context must point at the entry's
/// server, and it must not run programs or read files to get credentials.
fn whole_kubeconfig(
    entry: &ClusterEntry,
    text: &str,
    context: Option<&str>,
) -> Result<(Kubeconfig, String), TriggerFailure> {
    let name = &entry.name;
    // The parser's messages quote the document, which holds the credentials.
    let kubeconfig = Kubeconfig::from_yaml(text).map_err(|_| {
        configuration_failure(format!(
            "cluster {name}: the kubeconfig could not be parsed (details withheld)"
        ))
    })?;
    let Some(context_name) = context
        .map(str::to_string)
        .or_else(|| kubeconfig.current_context.clone())
    else {
        return Err(configuration_failure(format!(
            "cluster {name}: the kubeconfig has no current-context and the entry names none"
        )));
    };
    let Some(selected) = kubeconfig
        .contexts
        .iter()
        .find(|named| named.name == context_name)
        .and_then(|named| named.context.as_ref())
    else {
        return Err(configuration_failure(format!(
            "cluster {name}: the kubeconfig has no context {context_name:?}"
        )));
    };
    let server = kubeconfig
        .clusters
        .iter()
        .find(|named| named.name == selected.cluster)
        .and_then(|named| named.cluster.as_ref())
        .and_then(|cluster| cluster.server.as_deref());
    if !server.is_some_and(|server| same_server(server, &entry.server)) {
        return Err(configuration_failure(format!(
            "cluster {name}: the kubeconfig context {context_name:?} does not point at the entry's server {}; credentials are only sent to the entry's server",
            entry.server
        )));
    }
    let user = selected.user.as_deref().and_then(|user| {
        kubeconfig
            .auth_infos
            .iter()
            .find(|named| named.name == user)
            .and_then(|named| named.auth_info.as_ref())
    });
    if let Some(user) = user
        && (user.exec.is_some()
            || user.auth_provider.is_some()
            || user.token_file.is_some()
            || user.client_certificate.is_some()
            || user.client_key.is_some())
    {
        return Err(configuration_failure(format!(
            "cluster {name}: the kubeconfig user must hold its credentials inline (token or *-data fields); exec, auth-provider and file paths are not used"
        )));
    }
    Ok((kubeconfig, context_name))
}

/// The same origin and path, whatever the spelling (`https://h:443/` = `https://h`).
fn same_server(candidate: &str, server: &url::Url) -> bool {
    url::Url::parse(candidate).is_ok_and(|candidate| {
        candidate.scheme() == server.scheme()
            && candidate.host() == server.host()
            && candidate.port_or_known_default() == server.port_or_known_default()
            && candidate.path().trim_end_matches('/') == server.path().trim_end_matches('/')
    })
}

/// What went wrong below HTTP, from the error and its sources. Only a certificate problem
/// is `Tls` (permanent: a wrong CA will not fix itself); a handshake cut short, e.g. by an
/// apiserver restarting or a load balancer dropping the connection, is `Connect` (retried).
fn transport_kind(error: &(dyn StdError + 'static)) -> TransportErrorKind {
    let mut chain: Vec<&(dyn StdError + 'static)> = Vec::new();
    let mut current = Some(error);
    while let Some(error) = current {
        chain.push(error);
        current = error.source();
    }
    let texts: Vec<String> = chain
        .iter()
        .map(|e| e.to_string().to_ascii_lowercase())
        .collect();
    if texts.iter().any(|t| {
        t.contains("certificate") || t.contains("unknownissuer") || t.contains("unknown issuer")
    }) {
        return TransportErrorKind::Tls;
    }
    let io_kinds: Vec<std::io::ErrorKind> = chain
        .iter()
        .filter_map(|e| e.downcast_ref::<std::io::Error>().map(std::io::Error::kind))
        .collect();
    if io_kinds.contains(&std::io::ErrorKind::TimedOut)
        || texts
            .iter()
            .any(|t| t.contains("timed out") || t.contains("timeout") || t.contains("elapsed"))
    {
        return TransportErrorKind::Timeout;
    }
    let connection_kinds = [
        std::io::ErrorKind::ConnectionRefused,
        std::io::ErrorKind::ConnectionReset,
        std::io::ErrorKind::ConnectionAborted,
        std::io::ErrorKind::NotConnected,
        std::io::ErrorKind::AddrNotAvailable,
        std::io::ErrorKind::HostUnreachable,
        std::io::ErrorKind::NetworkUnreachable,
        std::io::ErrorKind::UnexpectedEof,
        std::io::ErrorKind::BrokenPipe,
    ];
    if io_kinds.iter().any(|kind| connection_kinds.contains(kind))
        || texts
            .iter()
            .any(|t| t.contains("connect") || t.contains("tls") || t.contains("handshake"))
    {
        return TransportErrorKind::Connect;
    }
    TransportErrorKind::Other
}

/// `outer: inner: innermost`, without repeats (many errors print their source too).
fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(error);
    while let Some(error) = current {
        let text = error.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        current = error.source();
    }
    parts.join(": ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapped(&'static str, std::io::Error);
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl StdError for Wrapped {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.1)
        }
    }

    #[test]
    fn only_certificate_problems_are_permanent_tls_failures() {
        use std::io::{Error, ErrorKind};
        let cases = [
            (
                "client error (Connect)",
                Error::new(
                    ErrorKind::InvalidData,
                    "invalid peer certificate: UnknownIssuer",
                ),
                TransportErrorKind::Tls,
            ),
            (
                "client error (Connect)",
                Error::new(ErrorKind::UnexpectedEof, "tls handshake eof"),
                TransportErrorKind::Connect,
            ),
            (
                "client error (Connect)",
                Error::new(ErrorKind::ConnectionReset, "connection reset by peer"),
                TransportErrorKind::Connect,
            ),
            (
                "client error (Connect)",
                Error::new(ErrorKind::ConnectionRefused, "connection refused"),
                TransportErrorKind::Connect,
            ),
            (
                "operation timed out",
                Error::new(ErrorKind::TimedOut, "deadline"),
                TransportErrorKind::Timeout,
            ),
            (
                "something else",
                Error::other("odd"),
                TransportErrorKind::Other,
            ),
        ];
        for (outer, inner, expected) in cases {
            let text = inner.to_string();
            assert_eq!(
                transport_kind(&Wrapped(outer, inner)),
                expected,
                "{outer}: {text}"
            );
        }
    }

    #[test]
    fn servers_compare_by_origin_and_path() {
        let server = url::Url::parse("https://127.0.0.1:6443").unwrap();
        for (candidate, same) in [
            ("https://127.0.0.1:6443", true),
            ("https://127.0.0.1:6443/", true),
            ("https://127.0.0.1:6444", false),
            ("http://127.0.0.1:6443", false),
            ("https://localhost:6443", false),
            ("https://127.0.0.1:6443/other", false),
            ("not a url", false),
        ] {
            assert_eq!(same_server(candidate, &server), same, "{candidate}");
        }
    }

    #[test]
    fn object_names_cannot_change_the_path() {
        for (name, ok) in [
            ("podinfo", true),
            ("flux-system", true),
            ("a.b", true),
            ("", false),
            ("a/b", false),
            ("A", false),
            ("a?b", false),
            ("a%2f", false),
        ] {
            assert_eq!(is_object_name(name), ok, "{name}");
        }
    }
}
