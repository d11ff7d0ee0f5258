//! A stand-in for Flux notification-controller's webhook receiver.
//!
//! It answers as `handlePayload` in notification-controller v1.9.3 does (reference facts
//! §1.5–1.7), in this order: a path outside `/hook/` → 404; a body over 3 MiB → 413; no
//! Receiver whose webhook path equals the request URI exactly (path and query as sent) → 404;
//! a suspended or not-ready Receiver → 503; the type's validation fails → 400; else 200.
//! Any HTTP method is served, and no response carries a body. A test can script transient
//! failures per path with [`FluxReceiverEmulator::fail_next`]; these are answered before
//! the steps above (after the body is read, so the [`Hit`] keeps it).
//!
//! Known differences from the real controller, none of which fluxrelay can produce (it only
//! sends safe `/hook/<hex>` paths):
//! - Go's `ServeMux` redirects (301) unclean paths (`//`, `/./`, `/../`) and `/hook` to the
//!   cleaned path, and answers other paths 404 with a text body; here all of them are 404
//!   with no body.
//! - `generic-hmac` and `github` signatures with `sha1=` are refused (400): no SHA-1 crate.
//! - `github` payloads must be JSON objects (or `null`) for a known `X-GitHub-Event`, as
//!   go-github's `ParseWebHook` demands; its per-field type checks are not emulated.
//! - The body is read whole before the 3 MiB check (Go stops reading at the limit), header
//!   size limits and read timeouts are not emulated, and there is no resource annotation
//!   step (so no 500s unless scripted).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::response::Response;
use fluxrelay_core::flux::ReceiverType;
use hmac::{Hmac, Mac};
use http::{HeaderMap, StatusCode};
use sha2::{Sha256, Sha512};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// `maxRequestSizeBytes` in notification-controller's `internal/server/limits.go`.
pub const MAX_REQUEST_SIZE_BYTES: usize = 3 * 1024 * 1024;

const HOOK_PREFIX: &str = "/hook/";

/// The parts of a Receiver (and its Secret) that decide how a request is answered.
#[derive(Clone)]
pub struct ReceiverSpec {
    pub namespace: String,
    pub name: String,
    /// `spec.type`: "generic", "generic-hmac", "gitlab", "github"; anything else is refused.
    pub receiver_type: String,
    /// The Secret's `token`.
    pub token: String,
    /// `spec.events`; empty means every event.
    pub events: Vec<String>,
    pub suspended: bool,
    pub ready: bool,
}

impl ReceiverSpec {
    /// Flux's `GetWebhookPath`: `/hook/` + hex(sha256(token + name + namespace)).
    pub fn webhook_path(&self) -> String {
        fluxrelay_core::matching::select::webhook_path(&self.token, &self.name, &self.namespace)
    }

    fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl std::fmt::Debug for ReceiverSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiverSpec")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("receiver_type", &self.receiver_type)
            .field("token", &"<redacted>")
            .field("events", &self.events)
            .field("suspended", &self.suspended)
            .field("ready", &self.ready)
            .finish()
    }
}

/// One request as it reached the emulator, and how it was answered.
#[derive(Clone, Debug)]
pub struct Hit {
    /// `namespace/name` of the Receiver whose path matched, if any.
    pub receiver: Option<String>,
    pub method: String,
    /// The request target as sent: path plus query string.
    pub request_uri: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub status: u16,
    /// Why a status other than 200 was answered, in the words of the controller's log where
    /// it has one; `None` for 200.
    pub reason: Option<String>,
    pub at: Instant,
}

#[derive(Default)]
struct Registry {
    /// Keyed by `namespace/name`, so iteration (and a path collision) is deterministic.
    receivers: BTreeMap<String, ReceiverSpec>,
    /// `status.webhookPath` by `namespace/name`: computed at upsert, and kept when only the
    /// Secret's token changes (as Flux keeps it until the Receiver is reconciled again).
    paths: BTreeMap<String, String>,
    scripted: HashMap<String, VecDeque<u16>>,
    /// Scripted stalls per path ([`FluxReceiverEmulator::stall_next`]).
    stalls: HashMap<String, VecDeque<Duration>>,
    hits: Vec<Hit>,
    /// Called with `namespace/name` of a Receiver about to answer 200, and awaited before
    /// the answer: notification-controller annotates the Receiver's resources before it
    /// answers ([`FluxReceiverEmulator::on_accept`]).
    on_accept: Option<AcceptHook>,
}

/// What runs before a 200 (the Flux controller stand-in's annotation of the resources).
pub type AcceptHook = Arc<
    dyn Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync,
>;

type Shared = Arc<Mutex<Registry>>;

/// A Flux webhook receiver serving in the background until dropped.
pub struct FluxReceiverEmulator {
    registry: Shared,
    local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
}

impl FluxReceiverEmulator {
    /// Binds and serves in the background until dropped. `addr` e.g. 192.0.2.10:9292 or
    /// 127.0.0.1:0. Must be called inside a Tokio runtime.
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let registry = Shared::default();
        let app = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::disable())
            .with_state(registry.clone());
        let (shutdown, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                // A dropped sender is the signal too.
                let _ = stopped.await;
            });
            if let Err(error) = serve.await {
                eprintln!("flux receiver emulator on {local_addr} stopped: {error}");
            }
        });
        Ok(Self {
            registry,
            local_addr,
            shutdown: Some(shutdown),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Registers (or replaces, by namespace/name) a Receiver; returns its webhook path.
    pub fn upsert(&self, spec: ReceiverSpec) -> String {
        let path = spec.webhook_path();
        let mut registry = lock(&self.registry);
        registry.paths.insert(spec.id(), path.clone());
        registry.receivers.insert(spec.id(), spec);
        path
    }

    /// The Receiver's Secret now holds `token`, but its webhook path stays the old one
    /// until it is reconciled: requests to the old path are validated with the new token
    /// (Flux answers 400 to the old one).
    pub fn set_validation_token(&self, namespace: &str, name: &str, token: &str) {
        if let Some(spec) = lock(&self.registry)
            .receivers
            .get_mut(&format!("{namespace}/{name}"))
        {
            spec.token = token.to_string();
        }
    }

    pub fn remove(&self, namespace: &str, name: &str) {
        let id = format!("{namespace}/{name}");
        let mut registry = lock(&self.registry);
        registry.receivers.remove(&id);
        registry.paths.remove(&id);
    }

    /// The next `statuses.len()` requests whose URI equals `webhook_path` are answered with
    /// these statuses (no body) before normal handling; appends to anything already queued.
    pub fn fail_next(&self, webhook_path: &str, statuses: &[u16]) {
        lock(&self.registry)
            .scripted
            .entry(webhook_path.to_string())
            .or_default()
            .extend(statuses);
    }

    /// The next `count` requests whose URI equals `webhook_path` are held for `delay` (a
    /// notification-controller that stopped answering), then answered 503. Each is recorded
    /// as a [`Hit`] with status 503 when it arrives, so a client that gave up still left a
    /// trace. Taken before [`FluxReceiverEmulator::fail_next`]'s statuses.
    pub fn stall_next(&self, webhook_path: &str, count: usize, delay: Duration) {
        lock(&self.registry)
            .stalls
            .entry(webhook_path.to_string())
            .or_default()
            .extend(std::iter::repeat_n(delay, count));
    }

    /// Requests answered 200 for one Receiver, in arrival order.
    pub fn accepted(&self, namespace: &str, name: &str) -> Vec<Hit> {
        let id = format!("{namespace}/{name}");
        lock(&self.registry)
            .hits
            .iter()
            .filter(|hit| hit.status == 200 && hit.receiver.as_deref() == Some(id.as_str()))
            .cloned()
            .collect()
    }

    /// Every request, whatever its status, in arrival order.
    pub fn hits(&self) -> Vec<Hit> {
        lock(&self.registry).hits.clone()
    }

    /// Run `hook` (awaited) before every 200, with the Receiver's `namespace/name`, as
    /// notification-controller annotates the selected resources before it answers.
    pub fn on_accept(&self, hook: AcceptHook) {
        lock(&self.registry).on_accept = Some(hook);
    }

    /// Forgets the recorded hits and any scripted failures; Receivers stay registered.
    pub fn clear(&self) {
        let mut registry = lock(&self.registry);
        registry.hits.clear();
        registry.scripted.clear();
    }
}

impl Drop for FluxReceiverEmulator {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// A test that panicked while holding the lock must not hide every later request.
fn lock(registry: &Shared) -> MutexGuard<'_, Registry> {
    registry
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn handle(State(registry): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let request_uri = parts.uri.to_string();
    let under_hook = parts.uri.path().starts_with(HOOK_PREFIX);
    // Read whole even off `/hook/` (where the size does not matter): closing a socket with
    // unread data resets it, and the client could lose the answer. Go drains it too.
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .map(|bytes| bytes.to_vec());
    let at = Instant::now();

    if let Some(stalled) = stall(&registry, &request_uri, &parts, &body, at).await {
        return stalled;
    }
    // The lock is released before the hook is awaited (a guard held across an await would
    // make the handler's future not Send).
    let (status, hook) = {
        let mut state = lock(&registry);
        let matched = state
            .paths
            .iter()
            .find(|(_, path)| **path == request_uri)
            .and_then(|(id, _)| state.receivers.get(id))
            .cloned();
        let scripted = state
            .scripted
            .get_mut(&request_uri)
            .and_then(VecDeque::pop_front);
        let (status, reason, body) = match body {
            Err(error) => (
                400,
                Some(format!("unable to read request body: {error}")),
                Vec::new(),
            ),
            Ok(body) => {
                let outcome = match scripted {
                    Some(status) => Err((status, "scripted by fail_next".to_string())),
                    None => answer(under_hook, matched.as_ref(), &parts.headers, &body),
                };
                match outcome {
                    Ok(()) => (200, None, body),
                    Err((status, reason)) => (status, Some(reason), body),
                }
            }
        };
        // A scripted status that is not a valid HTTP status is answered and recorded as 500.
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let hook = (status == StatusCode::OK)
            .then(|| state.on_accept.clone())
            .flatten()
            .zip(matched.as_ref().map(ReceiverSpec::id));
        state.hits.push(Hit {
            receiver: matched.as_ref().map(ReceiverSpec::id),
            method: parts.method.to_string(),
            request_uri,
            headers: parts.headers,
            body,
            status: status.as_u16(),
            reason,
            at,
        });
        (status, hook)
    };
    if let Some((hook, receiver)) = hook {
        hook(receiver).await;
    }

    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

/// A scripted stall for this request: recorded, held, then answered 503; `None` when no
/// stall is scripted for its path.
async fn stall(
    registry: &Shared,
    request_uri: &str,
    parts: &http::request::Parts,
    body: &Result<Vec<u8>, axum::Error>,
    at: Instant,
) -> Option<Response> {
    let delay = {
        let mut state = lock(registry);
        let delay = state
            .stalls
            .get_mut(request_uri)
            .and_then(VecDeque::pop_front)?;
        let matched = state
            .paths
            .iter()
            .find(|(_, path)| path.as_str() == request_uri)
            .map(|(id, _)| id.clone());
        state.hits.push(Hit {
            receiver: matched,
            method: parts.method.to_string(),
            request_uri: request_uri.to_string(),
            headers: parts.headers.clone(),
            body: body.as_ref().ok().cloned().unwrap_or_default(),
            status: 503,
            reason: Some(format!(
                "stalled {delay:?} by stall_next, then answered 503"
            )),
            at,
        });
        delay
    };
    tokio::time::sleep(delay).await;
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    Some(response)
}

/// `handlePayload` after the body is read: the status and, unless 200, why.
fn answer(
    under_hook: bool,
    matched: Option<&ReceiverSpec>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), (u16, String)> {
    if !under_hook {
        return Err((404, "not under /hook/".to_string()));
    }
    if body.len() > MAX_REQUEST_SIZE_BYTES {
        return Err((413, "request body too large".to_string()));
    }
    let Some(spec) = matched else {
        return Err((404, "no receiver has this webhook path".to_string()));
    };
    if spec.suspended || !spec.ready {
        return Err((503, "receiver is suspended or not ready".to_string()));
    }
    validate(spec, headers, body).map_err(|reason| (400, reason))
}

/// `validate()` per receiver type.
fn validate(spec: &ReceiverSpec, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    match ReceiverType::parse(&spec.receiver_type) {
        ReceiverType::Generic => Ok(()),
        ReceiverType::GenericHmac => {
            validate_signature(&header(headers, "x-signature"), body, &spec.token)
                .map_err(|error| format!("unable to validate HMAC signature: {error}"))
        }
        ReceiverType::Gitlab => {
            if header(headers, "x-gitlab-token") != spec.token {
                return Err(
                    "the X-Gitlab-Token header value does not match the receiver token".to_string(),
                );
            }
            let event = header(headers, "x-gitlab-event");
            if event_allowed(&spec.events, &event) {
                Ok(())
            } else {
                Err(format!("the GitLab event {event:?} is not authorised"))
            }
        }
        ReceiverType::Github => validate_github(spec, headers, body),
        ReceiverType::Other(other) => Err(format!("receiver type {other:?} is not emulated")),
    }
}

/// Flux's `github` type: go-github's `ValidatePayload`, then `ParseWebHook`, then `events`.
fn validate_github(spec: &ReceiverSpec, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let mut signature = header(headers, "x-hub-signature-256");
    if signature.is_empty() {
        signature = header(headers, "x-hub-signature");
    }
    let content_type = media_type(&header(headers, "content-type"))
        .ok_or("the GitHub signature header is invalid, err: mime: invalid media type")?;
    let payload = match content_type.as_str() {
        "application/json" => body.to_vec(),
        "application/x-www-form-urlencoded" => form_value(body, "payload")
            .map_err(|error| format!("the GitHub signature header is invalid, err: {error}"))?,
        other => {
            return Err(format!(
                "the GitHub signature header is invalid, err: webhook request has unsupported Content-Type {other:?}"
            ));
        }
    };
    // go-github checks the signature only if one is sent or a token is set.
    if !spec.token.is_empty() || !signature.is_empty() {
        validate_signature(&signature, body, &spec.token)
            .map_err(|error| format!("the GitHub signature header is invalid, err: {error}"))?;
    }
    let event = header(headers, "x-github-event");
    if !GITHUB_EVENT_TYPES.contains(&event.as_str()) {
        return Err(format!(
            "unable to parse GitHub payload, err: unknown X-Github-Event in message: {event}"
        ));
    }
    match serde_json::from_slice::<serde_json::Value>(&payload) {
        Ok(serde_json::Value::Object(_) | serde_json::Value::Null) => {}
        Ok(_) => return Err("unable to parse GitHub payload, err: not a JSON object".to_string()),
        Err(error) => return Err(format!("unable to parse GitHub payload, err: {error}")),
    }
    if event_allowed(&spec.events, &event) {
        Ok(())
    } else {
        Err(format!("the GitHub event {event:?} is not authorised"))
    }
}

/// go-github's `ValidateSignature`: `<algo>=<hex>`, HMAC keyed with the token over the raw body.
fn validate_signature(signature: &str, body: &[u8], token: &str) -> Result<(), String> {
    if signature.is_empty() {
        return Err("missing signature".to_string());
    }
    let (algorithm, digest) = signature
        .split_once('=')
        .ok_or_else(|| format!("error parsing signature {signature:?}"))?;
    let digest = hex::decode(digest)
        .map_err(|error| format!("error decoding signature {signature:?}: {error}"))?;
    let valid = match algorithm {
        "sha256" => Hmac::<Sha256>::new_from_slice(token.as_bytes())
            .map(|mac| mac.chain_update(body).verify_slice(&digest).is_ok()),
        "sha512" => Hmac::<Sha512>::new_from_slice(token.as_bytes())
            .map(|mac| mac.chain_update(body).verify_slice(&digest).is_ok()),
        "sha1" => return Err("sha1 signatures are not emulated".to_string()),
        other => return Err(format!("unknown hash type prefix: {other:?}")),
    }
    .map_err(|error| error.to_string())?;
    if valid {
        Ok(())
    } else {
        Err("payload signature check failed".to_string())
    }
}

/// `spec.events` filtering: empty allows all; otherwise a case-insensitive match.
fn event_allowed(events: &[String], event: &str) -> bool {
    let event = event.to_lowercase();
    events.is_empty() || events.iter().any(|allowed| allowed.to_lowercase() == event)
}

/// Go's `Header.Get`: the first value, or "" when absent.
fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .unwrap_or_default()
}

/// Go's `mime.ParseMediaType`, reduced to what decides the outcome: the lower-cased media
/// type, or `None` when the value or one of its `; key=value` parameters is malformed.
fn media_type(value: &str) -> Option<String> {
    let mut segments = value.split(';');
    let media_type = segments.next()?.trim().to_lowercase();
    let is_token = |text: &str| {
        !text.is_empty()
            && text
                .bytes()
                .all(|byte| byte.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&byte))
    };
    let (kind, subtype) = media_type.split_once('/').unwrap_or((&media_type, "x"));
    if !is_token(kind) || !is_token(subtype) {
        return None;
    }
    let parameters: Vec<&str> = segments.map(str::trim).collect();
    for (index, parameter) in parameters.iter().enumerate() {
        if parameter.is_empty() && index + 1 == parameters.len() {
            break; // a trailing semicolon is not an error
        }
        let (key, parameter_value) = parameter.split_once('=')?;
        let quoted = parameter_value.len() >= 2
            && parameter_value.starts_with('"')
            && parameter_value.ends_with('"');
        if !is_token(key.trim()) || !(quoted || is_token(parameter_value.trim())) {
            return None;
        }
    }
    Some(media_type)
}

/// Go's `url.ParseQuery(body).Get(key)`: the first value, "" when absent; an error on a bad
/// escape or a `;` separator.
fn form_value(body: &[u8], key: &str) -> Result<Vec<u8>, String> {
    let mut found = None;
    for pair in body.split(|byte| *byte == b'&') {
        if pair.is_empty() {
            continue;
        }
        if pair.contains(&b';') {
            return Err("invalid semicolon separator in query".to_string());
        }
        let (name, value) = match pair.iter().position(|byte| *byte == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &[][..]),
        };
        let name = unescape(name)?;
        let value = unescape(value)?;
        if found.is_none() && name == key.as_bytes() {
            found = Some(value);
        }
    }
    Ok(found.unwrap_or_default())
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte, anything else after `%` an error.
fn unescape(text: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut index = 0;
    while let Some(&byte) = text.get(index) {
        match byte {
            b'+' => out.push(b' '),
            b'%' => {
                let escape = text.get(index + 1..index + 3).ok_or("invalid URL escape")?;
                let decoded = hex::decode(escape).map_err(|_| "invalid URL escape")?;
                out.extend(decoded);
                index += 2;
            }
            other => out.push(other),
        }
        index += 1;
    }
    Ok(out)
}

/// go-github's `eventTypeMapping` keys (`github/messages.go`): `ParseWebHook` refuses others.
const GITHUB_EVENT_TYPES: &[&str] = &[
    "branch_protection_rule",
    "check_run",
    "check_suite",
    "code_scanning_alert",
    "commit_comment",
    "content_reference",
    "create",
    "delete",
    "dependabot_alert",
    "deploy_key",
    "deployment",
    "deployment_status",
    "deployment_protection_rule",
    "discussion",
    "discussion_comment",
    "fork",
    "github_app_authorization",
    "gollum",
    "installation",
    "installation_repositories",
    "installation_target",
    "issue_comment",
    "issues",
    "label",
    "marketplace_purchase",
    "member",
    "membership",
    "merge_group",
    "meta",
    "milestone",
    "organization",
    "org_block",
    "package",
    "page_build",
    "personal_access_token_request",
    "ping",
    "project",
    "project_card",
    "project_column",
    "projects_v2",
    "projects_v2_item",
    "public",
    "pull_request",
    "pull_request_review",
    "pull_request_review_comment",
    "pull_request_review_thread",
    "pull_request_target",
    "push",
    "repository",
    "repository_dispatch",
    "repository_import",
    "repository_vulnerability_alert",
    "release",
    "secret_scanning_alert",
    "security_advisory",
    "security_and_analysis",
    "star",
    "status",
    "team",
    "team_add",
    "user",
    "watch",
    "workflow_dispatch",
    "workflow_job",
    "workflow_run",
];
