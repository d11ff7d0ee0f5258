//! Trigger requests: the exact bytes fluxrelay sends to make Flux fetch a GitRepository.
//!
//! Two ways (DESIGN "Triggering"): a POST to a Flux Receiver, shaped per Receiver type, or a
//! JSON merge patch of `reconcile.fluxcd.io/requestedAt` on the GitRepository itself. Both
//! are plain data here; the adapters send them.

use std::fmt;

use hmac::{Hmac, Mac};
use http::header::{CONTENT_TYPE, HeaderName, USER_AGENT as USER_AGENT_HEADER};
use http::{HeaderMap, HeaderValue, Method};
use serde::Serialize;
use sha2::Sha256;

use crate::flux::{RECONCILE_REQUESTED_AT, ReceiverType};
use crate::push::Push;
use crate::registry::ReceiverEndpoint;
use crate::secret::Secret;

pub const USER_AGENT: &str = concat!("fluxrelay/", env!("CARGO_PKG_VERSION"));

/// Content type of [`annotate_patch`] bodies: a JSON merge patch (RFC 7386). The apiserver
/// answers a strategic merge patch on a custom resource with 415.
pub const MERGE_PATCH_CONTENT_TYPE: &str = "application/merge-patch+json";

const JSON_CONTENT_TYPE: &str = "application/json";
const WEBHOOK_PATH_PREFIX: &str = "/hook/";
const MAX_WEBHOOK_PATH_ID_LEN: usize = 128;

/// A string field of [`push_body`] longer than this is sent as `null` ("unknown") rather
/// than cut short: a shortened URL or ref would be a wrong value, and a CEL filter is better
/// off not matching. It keeps the body far below Flux's 3 MiB limit whatever the push holds
/// (12 strings × 8 KiB × 6 bytes per escaped byte < 600 KiB), while a real ref or URL
/// always fits.
const MAX_BODY_FIELD_BYTES: usize = 8 * 1024;

const X_SIGNATURE: HeaderName = HeaderName::from_static("x-signature");
const X_GITLAB_TOKEN: HeaderName = HeaderName::from_static("x-gitlab-token");
const X_GITLAB_EVENT: HeaderName = HeaderName::from_static("x-gitlab-event");
const X_HUB_SIGNATURE_256: HeaderName = HeaderName::from_static("x-hub-signature-256");
const X_GITHUB_EVENT: HeaderName = HeaderName::from_static("x-github-event");

/// Where the request goes: a path on the cluster's own apiserver (sent with cluster
/// credentials), or an absolute receiver URL (sent without cluster credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestTarget {
    ApiServerPath(String),
    Absolute(url::Url),
}

/// One HTTP request, ready for an adapter to send.
///
/// Header values derived from a Receiver token are marked sensitive, and `Debug` prints
/// every sensitive value as `<redacted>`, so a request can be logged whole.
#[derive(Clone, PartialEq, Eq)]
pub struct TriggerRequest {
    pub target: RequestTarget,
    pub method: Method,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl fmt::Debug for TriggerRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Headers<'a>(&'a HeaderMap);
        impl fmt::Debug for Headers<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut map = f.debug_map();
                for (name, value) in self.0 {
                    if value.is_sensitive() {
                        map.entry(name, &format_args!("<redacted>"));
                    } else {
                        map.entry(name, value);
                    }
                }
                map.finish()
            }
        }
        f.debug_struct("TriggerRequest")
            .field("target", &self.target)
            .field("method", &self.method)
            .field("headers", &Headers(&self.headers))
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .finish()
    }
}

/// Why no request could be built. No message includes a token or a webhook path (for a
/// `generic` Receiver the path is the only secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error(
        "Receiver type {receiver_type:?} needs the Receiver's token, but none (or an empty one) is configured for this Receiver"
    )]
    TokenMissing { receiver_type: String },
    #[error(
        "Receiver type {receiver_type:?} is not supported: fluxrelay calls generic, generic-hmac, gitlab and github Receivers"
    )]
    UnsupportedReceiverType { receiver_type: String },
    #[error(
        "unsafe webhook path ({problem}): expected /hook/ followed by 1 to {MAX_WEBHOOK_PATH_ID_LEN} characters of A-Z, a-z, 0-9, '_' or '-'"
    )]
    UnsafeWebhookPath { problem: &'static str },
    #[error(
        "the Receiver token cannot be sent in the {header} header: it contains a character not allowed in an HTTP header value (such as a newline) or leading or trailing whitespace (the value is not shown)"
    )]
    InvalidHeaderValue { header: &'static str },
    #[error("the receiver endpoint cannot be used: {problem}")]
    InvalidEndpoint { problem: &'static str },
    /// HMAC accepts keys of any length, so this does not happen; it exists so that signing
    /// has no panic path.
    #[error("could not compute the request signature")]
    Signature,
}

#[derive(Serialize)]
struct PushBody<'a> {
    object_kind: &'static str,
    event_name: &'static str,
    before: Option<&'a str>,
    after: Option<&'a str>,
    #[serde(rename = "ref")]
    git_ref: Option<&'a str>,
    checkout_sha: Option<&'a str>,
    project_id: u64,
    project: ProjectBody<'a>,
    fluxrelay: FluxrelayBody<'a>,
}

#[derive(Serialize)]
struct ProjectBody<'a> {
    id: u64,
    path_with_namespace: Option<&'a str>,
    web_url: Option<&'a str>,
    git_http_url: Option<&'a str>,
    git_ssh_url: Option<&'a str>,
    default_branch: Option<&'a str>,
}

#[derive(Serialize)]
struct FluxrelayBody<'a> {
    key: Option<&'a str>,
}

fn bounded(value: &str) -> Option<&str> {
    (value.len() <= MAX_BODY_FIELD_BYTES).then_some(value)
}

/// Small GitLab-shaped JSON built from the Push, so Receiver CEL filters on `req.ref` and
/// `req.project.path_with_namespace` work:
///
/// `{"object_kind","event_name","before","after","ref","checkout_sha","project_id",
/// "project":{"id","path_with_namespace","web_url","git_http_url","git_ssh_url","default_branch"},
/// "fluxrelay":{"key"}}`
///
/// Absent values and strings over 8 KiB are `null`; the body stays well under Flux's
/// 3 MiB limit.
pub fn push_body(push: &Push) -> Vec<u8> {
    let body = PushBody {
        object_kind: push.event.object_kind(),
        event_name: push.event.object_kind(),
        before: bounded(&push.before),
        after: bounded(&push.after),
        git_ref: bounded(&push.git_ref),
        checkout_sha: push.checkout_sha.as_deref().and_then(bounded),
        project_id: push.project.id,
        project: ProjectBody {
            id: push.project.id,
            path_with_namespace: bounded(&push.project.path),
            web_url: bounded(&push.project.web_url),
            git_http_url: bounded(&push.project.http_url),
            git_ssh_url: bounded(&push.project.ssh_url),
            default_branch: push.project.default_branch.as_deref().and_then(bounded),
        },
        fluxrelay: FluxrelayBody {
            key: bounded(&push.key),
        },
    };
    // Serialising strings, numbers and nulls into a Vec cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

/// `/hook/` followed by 1..=128 of `[A-Za-z0-9_-]`. Flux's own paths are
/// `/hook/<64 hex>`; anything else (a query, a slash, `..`, a space, percent-encoding)
/// would change where the request goes or make the Receiver lookup miss.
///
/// Deliberately private: a public `is_safe_webhook_path` lives with discovery and the two
/// will be unified later.
fn check_webhook_path(path: &str) -> Result<(), RequestError> {
    let problem = |problem| Err(RequestError::UnsafeWebhookPath { problem });
    let Some(id) = path.strip_prefix(WEBHOOK_PATH_PREFIX) else {
        return problem("it does not start with /hook/");
    };
    if id.is_empty() {
        return problem("nothing follows /hook/");
    }
    if id.len() > MAX_WEBHOOK_PATH_ID_LEN {
        return problem("too long");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return problem("it contains a character other than A-Z, a-z, 0-9, '_' or '-'");
    }
    Ok(())
}

fn request_target(
    endpoint: &ReceiverEndpoint,
    webhook_path: &str,
) -> Result<RequestTarget, RequestError> {
    let joined = endpoint.target(webhook_path);
    match endpoint {
        ReceiverEndpoint::ServiceProxy(_) => {
            if !joined.starts_with('/') || joined.contains(['?', '#']) {
                return Err(RequestError::InvalidEndpoint {
                    problem: "a service-proxy endpoint must be an apiserver path starting with '/', without query or fragment",
                });
            }
            Ok(RequestTarget::ApiServerPath(joined))
        }
        ReceiverEndpoint::Absolute(_) => {
            let url = url::Url::parse(&joined).map_err(|_| RequestError::InvalidEndpoint {
                problem: "the receiver URL joined with the webhook path is not a valid URL",
            })?;
            // The Receiver matches the exact request URI: a query or fragment on the base
            // would swallow the webhook path.
            if url.query().is_some()
                || url.fragment().is_some()
                || !url.path().ends_with(webhook_path)
            {
                return Err(RequestError::InvalidEndpoint {
                    problem: "an absolute receiver URL must not have a query or fragment",
                });
            }
            Ok(RequestTarget::Absolute(url))
        }
    }
}

fn required_token<'a>(
    receiver_type: &ReceiverType,
    token: Option<&'a Secret>,
) -> Result<&'a Secret, RequestError> {
    token
        .filter(|token| !token.is_empty())
        .ok_or_else(|| RequestError::TokenMissing {
            receiver_type: receiver_type.as_str().to_string(),
        })
}

fn hmac_sha256_hex(key: &Secret, body: &[u8]) -> Result<String, RequestError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.expose().as_bytes())
        .map_err(|_| RequestError::Signature)?;
    mac.update(body);
    Ok(hex::encode(mac.finalize().into_bytes()))
}

fn sensitive(value: &str, header: &'static str) -> Result<HeaderValue, RequestError> {
    // HTTP strips leading and trailing whitespace from header values, so such a token could
    // never match on the Receiver's side.
    if value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']) {
        return Err(RequestError::InvalidHeaderValue { header });
    }
    let mut value =
        HeaderValue::from_str(value).map_err(|_| RequestError::InvalidHeaderValue { header })?;
    value.set_sensitive(true);
    Ok(value)
}

fn signature(token: &Secret, body: &[u8]) -> Result<HeaderValue, RequestError> {
    // Not the token, but an HMAC over a known body lets a weak token be guessed offline.
    let mut value = HeaderValue::from_str(&format!("sha256={}", hmac_sha256_hex(token, body)?))
        .map_err(|_| RequestError::Signature)?;
    value.set_sensitive(true);
    Ok(value)
}

/// The POST for one Receiver: `endpoint` + `webhook_path` exactly (no query, no trailing
/// slash; the Receiver looks itself up by the exact request URI), `Content-Type:
/// application/json`, `User-Agent`, the [`push_body`] and per type:
///
/// - `generic`: nothing more; a token is not needed and ignored.
/// - `generic-hmac`: `X-Signature: sha256=<hex HMAC-SHA256(token, body)>`.
/// - `gitlab`: `X-Gitlab-Token: <token>`, `X-Gitlab-Event: Push Hook` / `Tag Push Hook`.
/// - `github`: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(token, body)>`,
///   `X-GitHub-Event: push`.
pub fn receiver_request(
    endpoint: &ReceiverEndpoint,
    receiver_type: &ReceiverType,
    webhook_path: &str,
    token: Option<&Secret>,
    push: &Push,
) -> Result<TriggerRequest, RequestError> {
    if let ReceiverType::Other(other) = receiver_type {
        return Err(RequestError::UnsupportedReceiverType {
            receiver_type: other.clone(),
        });
    }
    check_webhook_path(webhook_path)?;
    let target = request_target(endpoint, webhook_path)?;
    let body = push_body(push);

    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE));
    headers.insert(USER_AGENT_HEADER, HeaderValue::from_static(USER_AGENT));
    match receiver_type {
        ReceiverType::Generic | ReceiverType::Other(_) => {}
        ReceiverType::GenericHmac => {
            let token = required_token(receiver_type, token)?;
            headers.insert(X_SIGNATURE, signature(token, &body)?);
        }
        ReceiverType::Gitlab => {
            let token = required_token(receiver_type, token)?;
            headers.insert(X_GITLAB_TOKEN, sensitive(token.expose(), "X-Gitlab-Token")?);
            headers.insert(
                X_GITLAB_EVENT,
                HeaderValue::from_static(push.event.gitlab_event_header()),
            );
        }
        ReceiverType::Github => {
            let token = required_token(receiver_type, token)?;
            headers.insert(X_HUB_SIGNATURE_256, signature(token, &body)?);
            // GitHub names branch and tag pushes alike.
            headers.insert(X_GITHUB_EVENT, HeaderValue::from_static("push"));
        }
    }

    Ok(TriggerRequest {
        target,
        method: Method::POST,
        headers,
        body,
    })
}

/// A webhook path no Receiver has (Flux's are 64 hex digits): `fluxrelay cluster check`
/// POSTs to it, and notification-controller's webhook receiver answers for itself (404)
/// when the request reaches it.
pub const PROBE_WEBHOOK_PATH: &str = "/hook/fluxrelay-check";

/// The request `fluxrelay cluster check` sends to learn whether the receiver endpoint
/// reaches the webhook receiver: a POST of `{}` to [`PROBE_WEBHOOK_PATH`], joined to the
/// endpoint as every Receiver's webhook is, so it goes where dispatch's requests go.
pub fn probe_request(endpoint: &ReceiverEndpoint) -> Result<TriggerRequest, RequestError> {
    Ok(TriggerRequest {
        target: request_target(endpoint, PROBE_WEBHOOK_PATH)?,
        method: Method::POST,
        headers: HeaderMap::new(),
        body: b"{}".to_vec(),
    })
}

/// RFC 3339 with nanoseconds (always nine digits), UTC, e.g. `2026-11-22T03:04:05.123456789Z`:
/// the form `flux reconcile` writes, except that Go trims trailing zeros. Flux treats the
/// value as an opaque token (any change triggers), so fixed width costs nothing and sorts.
pub fn requested_at(now: time::OffsetDateTime) -> String {
    // Only an instant at the very edge of the supported years has no UTC form; it keeps
    // its own offset's fields, still a fresh token.
    let (date, clock) = match now.checked_to_utc() {
        Some(utc) => (utc.date(), utc.time()),
        None => (now.date(), now.time()),
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        date.year(),
        u8::from(date.month()),
        date.day(),
        clock.hour(),
        clock.minute(),
        clock.second(),
        clock.nanosecond()
    )
}

/// JSON merge patch body `{"metadata":{"annotations":{"reconcile.fluxcd.io/requestedAt":"<value>"}}}`,
/// sent with [`MERGE_PATCH_CONTENT_TYPE`].
pub fn annotate_patch(requested_at: &str) -> Vec<u8> {
    let patch = serde_json::json!({
        "metadata": { "annotations": { RECONCILE_REQUESTED_AT: requested_at } }
    });
    serde_json::to_vec(&patch).unwrap_or_default()
}

#[cfg(test)]
#[path = "request_test.rs"]
mod tests;
