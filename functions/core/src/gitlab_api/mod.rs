//! GitLab's REST API as plain data: the requests fluxrelay makes (commit statuses, compare),
//! what each answer means, and the rules read from it (`fluxrelay wait`, the summary
//! status). Adapters send the requests; nothing here does I/O.
//!
//! Facts (with sources) in `docs/reference/gitlab.md` §2–4: `POST /projects/:id/statuses/:sha`
//! validates `state` ∈ pending, running, success, failed, canceled, skipped and ≤ 255
//! characters of `ref`, `description`, `target_url`; a pending or running status with the
//! same name and ref is updated in place, and a same-state transition (pending → pending,
//! running → running, running → pending) is refused with 400 "Cannot transition status
//! via …"; after a terminal state any post creates a new status. `GET
//! /projects/:id/repository/commits/:sha/statuses` lists the latest per name (paginated,
//! 20 by default). `GET /projects/:id/repository/compare?straight=true` diffs the two trees.

pub mod classify;
pub mod compare;
pub mod instances;
pub mod request;
pub mod statuses;
pub mod throttle;

use serde::{Deserialize, Serialize};

/// The most characters GitLab accepts in a status's `description`, `ref` and `target_url`.
pub const MAX_FIELD_CHARS: usize = 255;

/// A commit status's `state`, as GitLab names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusState {
    Pending,
    Running,
    Success,
    Failed,
    Canceled,
    Skipped,
}

impl StatusState {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusState::Pending => "pending",
            StatusState::Running => "running",
            StatusState::Success => "success",
            StatusState::Failed => "failed",
            StatusState::Canceled => "canceled",
            StatusState::Skipped => "skipped",
        }
    }

    /// A state GitLab reports. Its job states beyond the six a client may post
    /// (`created`, `preparing`, `waiting_for_resource`, `scheduled`, `manual`) are
    /// "not started yet", i.e. pending.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pending"
            | "created"
            | "preparing"
            | "waiting_for_resource"
            | "scheduled"
            | "manual" => StatusState::Pending,
            "running" => StatusState::Running,
            "success" => StatusState::Success,
            "failed" => StatusState::Failed,
            "canceled" | "canceling" => StatusState::Canceled,
            "skipped" => StatusState::Skipped,
            _ => return None,
        })
    }

    /// No later transition is expected.
    pub fn is_terminal(self) -> bool {
        !matches!(self, StatusState::Pending | StatusState::Running)
    }
}

/// Cut `text` to GitLab's 255 characters, marking a cut with `…`.
pub fn cut_to_field(text: &str) -> String {
    let text = text.trim();
    if text.chars().count() <= MAX_FIELD_CHARS {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(MAX_FIELD_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// One request to GitLab's REST API, relative to the instance's API root (`…/api/v4`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    pub method: Method,
    /// Starts with `/`, path segments already percent-encoded.
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Sent as `application/x-www-form-urlencoded` (POST only).
    pub form: Vec<(String, String)>,
    /// What the call is, for metrics and logs: `create_status`, `list_statuses`, `compare`.
    pub endpoint: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// An HTTP answer from GitLab, as the adapter received it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiResponse {
    pub status: u16,
    /// `Retry-After` (seconds or an HTTP date).
    pub retry_after: Option<String>,
    /// `RateLimit-Reset` (Unix time).
    pub ratelimit_reset: Option<String>,
    /// `X-Next-Page` of a paginated list (empty or absent on the last page).
    pub next_page: Option<String>,
    /// At most the first few hundred KiB; adapters truncate.
    pub body: Vec<u8>,
}

/// No HTTP answer: the connection failed or timed out, or the instance is not configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// fluxrelay has no API URL and token for this GitLab instance.
    #[error("no GitLab API token is configured for {instance}")]
    NotConfigured { instance: String },
    #[error("could not reach the GitLab API: {0}")]
    Transport(String),
}

/// Percent-encode one path segment (a project path `group/sub/project` becomes
/// `group%2Fsub%2Fproject`, as GitLab's `:id` accepts it).
pub fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_cut_to_255_characters() {
        assert_eq!(cut_to_field("  short  "), "short");
        let long = "é".repeat(300);
        let cut = cut_to_field(&long);
        assert_eq!(cut.chars().count(), 255);
        assert!(cut.ends_with('…'));
        let exact = "x".repeat(255);
        assert_eq!(cut_to_field(&exact), exact);
        assert_eq!(cut_to_field(""), "");
    }

    #[test]
    fn states_round_trip_and_job_states_read_as_pending() {
        for state in [
            StatusState::Pending,
            StatusState::Running,
            StatusState::Success,
            StatusState::Failed,
            StatusState::Canceled,
            StatusState::Skipped,
        ] {
            assert_eq!(StatusState::parse(state.as_str()), Some(state));
        }
        assert_eq!(StatusState::parse("created"), Some(StatusState::Pending));
        assert_eq!(StatusState::parse("manual"), Some(StatusState::Pending));
        assert_eq!(StatusState::parse("retried"), None);
        assert_eq!(StatusState::parse(""), None);
        assert!(StatusState::Canceled.is_terminal() && !StatusState::Running.is_terminal());
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(encode_segment("42"), "42");
        assert_eq!(encode_segment("group/sub/project"), "group%2Fsub%2Fproject");
        assert_eq!(encode_segment("a b?c#d"), "a%20b%3Fc%23d");
        assert_eq!(encode_segment("ü"), "%C3%BC");
    }
}
