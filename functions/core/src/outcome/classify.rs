//! What an answer to a trigger request means: done, retry later, re-discover the Receiver,
//! or give up (DESIGN "Outcome classes").
//!
//! Through the service proxy two parties can answer: the apiserver itself (a JSON `Status`,
//! e.g. RBAC refused, service not found, no endpoints) or the Receiver, whose answer the
//! apiserver passes through verbatim (Flux replies with an empty body). Every reason says
//! which one answered, because the fixes differ: RBAC or credentials on one side, the
//! Receiver or its token on the other.

use serde_json::Value;

/// The apiserver's `Status` message for a path of a served group whose resource it does
/// not serve (`NewGenericServerResponse` for 404); a missing object names the object.
const RESOURCE_NOT_SERVED: &str = "the server could not find the requested resource";

/// The most of a `Status` message (or transport detail) a reason repeats, in characters.
const MAX_MESSAGE_CHARS: usize = 300;

/// An HTTP answer, as the adapter received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerResponse {
    pub status: u16,
    pub content_type: Option<String>,
    /// At most the first few KiB; adapters truncate.
    pub body: Vec<u8>,
}

/// Who produced the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Responder {
    /// The Kubernetes apiserver: a `Status` through the proxy, or any non-proxy call.
    ApiServer,
    /// The Flux Receiver (through the proxy or at an absolute URL).
    Receiver,
    /// No HTTP answer at all.
    Transport,
    /// Nothing was sent: the registry entry or the cluster's Flux objects do not allow it.
    Configuration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Try again later (queue visibility backoff, bounded).
    Retryable,
    /// Retrying cannot help: dead-letter with the reason.
    Permanent,
    /// Receiver 404: re-discover the Receiver (token rotation changes the path) once, then
    /// Permanent.
    Rediscover,
    /// apiserver 403, or a 404 without a `Status` (the API is not served): Permanent only
    /// when it persists. A missing RBAC permission or CRD does not fix itself, but a
    /// restarting apiserver denies valid credentials until its authorizer's caches have
    /// synced (RELIABILITY.md, finding 5), and an older one answers 404 for a CRD's paths
    /// until it has installed them.
    Denied,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct TriggerFailure {
    pub class: FailureClass,
    pub responder: Responder,
    pub status: Option<u16>,
    /// Says who answered ("apiserver refused …", "Receiver answered …", "could not reach …")
    /// and the status; repeats at most a sanitised, truncated `Status` message.
    pub reason: String,
    /// apiserver 401: our credentials were rejected → caller refreshes them early.
    pub credentials_rejected: bool,
}

impl TriggerFailure {
    /// The apiserver has no handler for the path: the API is not installed, or a
    /// restarting apiserver has not installed it yet (a 404 with no `Status`).
    pub fn api_not_served(&self) -> bool {
        self.class == FailureClass::Denied
            && self.responder == Responder::ApiServer
            && self.status == Some(404)
    }
}

/// A Kubernetes `Status` object, read leniently: absent or mistyped fields are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiStatus {
    pub code: Option<u16>,
    /// Machine-readable, e.g. `Forbidden`, `NotFound`; empty when absent.
    pub reason: String,
    /// Human-readable, as the apiserver wrote it (not sanitised); empty when absent.
    pub message: String,
}

impl ApiStatus {
    fn from_json(value: &Value) -> Self {
        let text = |key| {
            value
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Self {
            code: value
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|code| u16::try_from(code).ok()),
            reason: text("reason"),
            message: text("message"),
        }
    }
}

fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|content_type| {
        content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .eq_ignore_ascii_case("application/json")
    })
}

/// The apiserver's own answer: a JSON body with `"kind":"Status"` served as
/// `application/json`. Anything else came from the upstream receiver through the proxy
/// (Flux replies have empty bodies).
pub fn apiserver_status(response: &TriggerResponse) -> Option<ApiStatus> {
    if !is_json(response.content_type.as_deref()) {
        return None;
    }
    let value: Value = serde_json::from_slice(&response.body).ok()?;
    (value.get("kind").and_then(Value::as_str) == Some("Status"))
        .then(|| ApiStatus::from_json(&value))
}

fn is_success(status: u16) -> bool {
    (200..=299).contains(&status)
}

/// `404 Not Found`, or just `999` when the code has no standard name.
fn status_text(status: u16) -> String {
    match http::StatusCode::from_u16(status)
        .ok()
        .and_then(|code| code.canonical_reason())
    {
        Some(name) => format!("{status} {name}"),
        None => status.to_string(),
    }
}

/// Fit for a log line and a dead-letter reason: control and bidi-override characters become
/// spaces, whitespace runs collapse, Receiver webhook paths (for a `generic` Receiver, the
/// secret) are redacted, and the result is at most [`MAX_MESSAGE_CHARS`] characters.
fn sanitize(text: &str) -> String {
    let mut cleaned = String::new();
    let mut pending_space = false;
    for c in text.chars() {
        let hidden = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || c.is_whitespace() || hidden {
            pending_space = !cleaned.is_empty();
            continue;
        }
        if pending_space {
            cleaned.push(' ');
            pending_space = false;
        }
        cleaned.push(c);
    }
    let redacted = redact_webhook_paths(&cleaned);
    if redacted.chars().count() <= MAX_MESSAGE_CHARS {
        return redacted;
    }
    let mut truncated: String = redacted.chars().take(MAX_MESSAGE_CHARS - 1).collect();
    truncated.push('…');
    truncated
}

fn redact_webhook_paths(text: &str) -> String {
    const MARK: &str = "/hook/";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(MARK) {
        let (before, from_mark) = rest.split_at(at);
        out.push_str(before);
        out.push_str(MARK);
        let after = from_mark.get(MARK.len()..).unwrap_or_default();
        let id_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(after.len());
        if id_len > 0 {
            out.push_str("<redacted>");
        }
        rest = after.get(id_len..).unwrap_or_default();
    }
    out.push_str(rest);
    out
}

fn failure(
    class: FailureClass,
    responder: Responder,
    status: u16,
    reason: String,
) -> TriggerFailure {
    TriggerFailure {
        class,
        responder,
        status: Some(status),
        reason,
        credentials_rejected: false,
    }
}

/// What the apiserver refused, for one subject ("the proxied Receiver request" or
/// "the request to <action>").
fn apiserver_failure(
    status: u16,
    api_status: Option<&ApiStatus>,
    subject: &str,
    not_found: &str,
    bad_request: &str,
    server_error: &str,
) -> TriggerFailure {
    use FailureClass::{Denied, Permanent, Retryable};
    let (class, explanation) = match status {
        401 => (Permanent, "the cluster credentials were rejected"),
        403 => (Denied, "the cluster credentials lack an RBAC permission"),
        // No `Status` (the apiserver's mux has no handler for the path), or the generic
        // Status for a resource a served group does not have (e.g. a HelmRelease version
        // the installed helm-controller does not serve): the API is not served. Either it
        // is not installed, or a (re)starting apiserver has not installed the paths of its
        // CRDs yet: apiservers before the generic server's `MuxAndDiscoveryComplete` signal
        // answer 404 then, newer ones 503. Permanent only once it persists, like a 403.
        404 if api_status.is_none_or(|status| status.message == RESOURCE_NOT_SERVED) => (
            Denied,
            "the API is not served (Flux's CRDs are not installed, or the apiserver is still starting)",
        ),
        404 => (Permanent, not_found),
        400 => (Permanent, bad_request),
        409 => (Retryable, "conflict with a concurrent change"),
        429 => (Retryable, "too many requests"),
        _ if (300..=399).contains(&status) => (
            Permanent,
            "redirect not followed: credentials are never sent elsewhere",
        ),
        _ if (400..=499).contains(&status) => (Permanent, "request not accepted"),
        _ if (500..=599).contains(&status) => (Retryable, server_error),
        _ => (Retryable, "unexpected status"),
    };
    let mut reason = format!(
        "apiserver refused {subject} ({}): {explanation}",
        status_text(status)
    );
    let message = api_status.map(|api_status| sanitize(&api_status.message));
    if let Some(message) = message.filter(|message| !message.is_empty()) {
        reason.push_str(": ");
        reason.push_str(&message);
    }
    TriggerFailure {
        credentials_rejected: status == 401,
        ..failure(class, Responder::ApiServer, status, reason)
    }
}

fn receiver_failure(status: u16) -> TriggerFailure {
    use FailureClass::{Permanent, Rediscover, Retryable};
    let (class, explanation) = match status {
        404 => (
            Rediscover,
            "no Receiver has this webhook path (the token may have been rotated)",
        ),
        400 => (
            Permanent,
            "Receiver rejected the request: wrong token or signature, or event not in spec.events",
        ),
        413 => (
            Permanent,
            "the body is larger than the Receiver accepts (3 MiB)",
        ),
        408 => (Retryable, "request timeout"),
        429 => (Retryable, "too many requests"),
        503 => (Retryable, "the Receiver is suspended or not Ready"),
        500 => (
            Retryable,
            "Flux could not annotate a resource (missing object, RBAC or CEL filter error)",
        ),
        _ if (300..=399).contains(&status) => (
            Permanent,
            "redirect not followed: credentials are never sent elsewhere",
        ),
        _ if (400..=499).contains(&status) => (Permanent, "request not accepted"),
        _ if (500..=599).contains(&status) => (Retryable, "server error"),
        _ => (Retryable, "unexpected status"),
    };
    failure(
        class,
        Responder::Receiver,
        status,
        format!("Receiver answered {}: {explanation}", status_text(status)),
    )
}

/// A Receiver POST (through the service proxy or at an absolute URL): 2xx → `Ok(())`; an
/// apiserver `Status` → what the apiserver refused; anything else is the Receiver's answer.
/// A status outside 200..=599 is Retryable: the outcome is unknown and a trigger is
/// idempotent.
pub fn classify_receiver_response(response: &TriggerResponse) -> Result<(), TriggerFailure> {
    if is_success(response.status) {
        return Ok(());
    }
    match apiserver_status(response) {
        Some(api_status) => Err(apiserver_failure(
            response.status,
            Some(&api_status),
            "the proxied Receiver request",
            "the receiver Service or namespace does not exist (check the receiver endpoint)",
            "invalid service proxy request (check the receiver endpoint)",
            "the Receiver service cannot be reached through the apiserver",
        )),
        None => Err(receiver_failure(response.status)),
    }
}

/// A call answered by the apiserver itself (merge patch of a GitRepository, the list calls
/// of discovery): 2xx → `Ok(())`. `action` names the call in the reason, e.g.
/// `patch GitRepository flux-system/podinfo`. The body may be any JSON; only a `Status`
/// message is repeated.
pub fn classify_apiserver_response(
    response: &TriggerResponse,
    action: &str,
) -> Result<(), TriggerFailure> {
    if is_success(response.status) {
        return Ok(());
    }
    let api_status = apiserver_status(response);
    Err(apiserver_failure(
        response.status,
        api_status.as_ref(),
        &format!("the request to {}", sanitize(action)),
        "not found (the object, namespace or API does not exist)",
        "bad request",
        "server error",
    ))
}

/// Why no HTTP answer came. Adapters tell these apart by the error's types (I/O error
/// kinds, TLS errors, the HTTP client's own flags), never by its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportErrorKind {
    /// No connection (TCP, or the TLS handshake) within the connect timeout: the address
    /// is unreachable, or something on the way drops packets.
    ConnectTimeout,
    /// Connected and sent, but no answer within the read (or write) timeout: the server,
    /// or the Receiver behind the service proxy, is slow or hung.
    Timeout,
    /// Refused, reset or cut short (a restarting apiserver, a load balancer dropping the
    /// connection, a handshake that ended early).
    Connect,
    /// A certificate was rejected: we rejected the server's (unknown issuer, wrong name,
    /// expired), or the server rejected ours.
    Tls,
    /// The server answered, but the answer's status line and headers are longer than the
    /// client reads: something on the way (a proxy in front of the apiserver) adds more
    /// than any apiserver or Receiver sends. Retried: it may be fixed, and the push kept.
    AnswerHeadTooLarge,
    Other,
}

/// No usable HTTP answer. TLS failures are Permanent: verification is always on, and a
/// wrong CA bundle will not fix itself. `detail` is sanitised and truncated like a `Status`
/// message; adapters should still pass an error without the URL (e.g. reqwest's
/// `without_url`).
pub fn transport_failure(kind: TransportErrorKind, detail: &str) -> TriggerFailure {
    let (class, what) = match kind {
        TransportErrorKind::ConnectTimeout => (
            FailureClass::Retryable,
            "could not reach the server: timed out connecting",
        ),
        TransportErrorKind::Timeout => (
            FailureClass::Retryable,
            "could not reach the server: timed out waiting for the answer",
        ),
        TransportErrorKind::Connect => (
            FailureClass::Retryable,
            "could not reach the server: connection failed",
        ),
        TransportErrorKind::Tls => (
            FailureClass::Permanent,
            "could not reach the server: TLS verification failed (check the CA bundle; this will not fix itself)",
        ),
        TransportErrorKind::AnswerHeadTooLarge => (
            FailureClass::Retryable,
            "the server's answer could not be read: its status line and headers are longer than the client reads",
        ),
        TransportErrorKind::Other => (
            FailureClass::Retryable,
            "could not reach the server: transport error",
        ),
    };
    let mut reason = what.to_string();
    let detail = sanitize(detail);
    if !detail.is_empty() {
        reason.push_str(": ");
        reason.push_str(&detail);
    }
    TriggerFailure {
        class,
        responder: Responder::Transport,
        status: None,
        reason,
        credentials_rejected: false,
    }
}

#[cfg(test)]
#[path = "classify_test.rs"]
mod tests;
