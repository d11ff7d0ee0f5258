//! What an answer from GitLab's API means, in one place (the STYLE rule: a class is the
//! whole truth, so no caller re-reads the status code).

use serde_json::Value;
use time::OffsetDateTime;

use super::{ApiError, ApiResponse};

/// When GitLab sends 429 without `Retry-After` or `RateLimit-Reset`.
pub const DEFAULT_RETRY_AFTER_SECS: u32 = 60;
/// A `Retry-After` longer than this is taken as this (a confirmation re-checks anyway).
pub const MAX_RETRY_AFTER_SECS: u32 = 900;
/// A conflict (409 "Another update to this commit status is in progress") or a server
/// error is tried again after this long.
pub const RETRY_SOON_SECS: u32 = 5;
const MAX_MESSAGE_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiOutcome {
    /// 2xx.
    Done,
    /// 400 "Cannot transition status via :enqueue from :pending" and its kind: the status
    /// is already in that state (an earlier attempt posted it). Nothing to do.
    AlreadyInState,
    /// Try again after this many seconds (429 with its `Retry-After`, 409, 5xx, no answer).
    RetryAfter { secs: u32, reason: String },
    /// Retrying cannot help until someone changes something (a bad or under-scoped token,
    /// the project or commit gone, a refused value): dead-letter with the reason.
    Permanent { status: Option<u16>, reason: String },
}

impl ApiOutcome {
    /// The label metrics use for the call: its HTTP status, or what happened instead.
    pub fn succeeded(&self) -> bool {
        matches!(self, ApiOutcome::Done | ApiOutcome::AlreadyInState)
    }
}

/// GitLab's error text: `{"message": …}` (a string or an object of field errors) or
/// `{"error": …, "error_description": …}`, sanitised and cut.
pub fn error_message(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(value) => match (value.get("message"), value.get("error")) {
            (Some(Value::String(message)), _) => message.clone(),
            (Some(other), _) => other.to_string(),
            (None, Some(error)) => {
                let description = value
                    .get("error_description")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                format!("{} {description}", error.as_str().unwrap_or_default())
            }
            (None, None) => String::new(),
        },
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let clean = clean.trim();
    if clean.chars().count() > MAX_MESSAGE_CHARS {
        let mut cut: String = clean.chars().take(MAX_MESSAGE_CHARS).collect();
        cut.push('…');
        cut
    } else {
        clean.to_string()
    }
}

/// How long a 429 asks to wait: `Retry-After` (seconds, or an HTTP date), else
/// `RateLimit-Reset` (Unix time), else [`DEFAULT_RETRY_AFTER_SECS`]; at least 1 s, at
/// most [`MAX_RETRY_AFTER_SECS`].
pub fn retry_after_secs(response: &ApiResponse, now: OffsetDateTime) -> u32 {
    // An HTTP date ends in `GMT`, which RFC 2822 parsers may only know as `+0000`.
    let from_date = |text: &str| {
        let text = text
            .strip_suffix(" GMT")
            .map_or_else(|| text.to_string(), |t| format!("{t} +0000"));
        OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc2822)
            .ok()
            .map(|at| (at - now).whole_seconds())
    };
    let secs = response
        .retry_after
        .as_deref()
        .map(str::trim)
        .and_then(|text| text.parse::<i64>().ok().or_else(|| from_date(text)))
        .or_else(|| {
            response
                .ratelimit_reset
                .as_deref()
                .and_then(|reset| reset.trim().parse::<i64>().ok())
                .map(|reset| reset - now.unix_timestamp())
        })
        .unwrap_or(i64::from(DEFAULT_RETRY_AFTER_SECS));
    u32::try_from(secs.clamp(1, i64::from(MAX_RETRY_AFTER_SECS))).unwrap_or(1)
}

/// One answer (or its absence) → what it means.
pub fn classify(answer: &Result<ApiResponse, ApiError>, now: OffsetDateTime) -> ApiOutcome {
    let response = match answer {
        Ok(response) => response,
        Err(ApiError::NotConfigured { instance }) => {
            return ApiOutcome::Permanent {
                status: None,
                reason: format!("no GitLab API token is configured for {instance}"),
            };
        }
        Err(ApiError::Transport(reason)) => {
            return ApiOutcome::RetryAfter {
                secs: RETRY_SOON_SECS,
                reason: format!("could not reach the GitLab API: {reason}"),
            };
        }
    };
    let status = response.status;
    let message = error_message(&response.body);
    let said = |what: &str| {
        if message.is_empty() {
            format!("GitLab answered {status} {what}")
        } else {
            format!("GitLab answered {status} {what}: {message}")
        }
    };
    match status {
        200..=299 => ApiOutcome::Done,
        400 if message.contains("Cannot transition status via") => ApiOutcome::AlreadyInState,
        400 | 422 => ApiOutcome::Permanent {
            status: Some(status),
            reason: said("(the request was refused)"),
        },
        401 => ApiOutcome::Permanent {
            status: Some(status),
            reason: said(
                "(the API token is wrong, expired or revoked: give fluxrelay a token with scope `api` and role Developer)",
            ),
        },
        403 => ApiOutcome::Permanent {
            status: Some(status),
            reason: said(
                "(the token may not do this: it needs scope `api` and role Developer on the project, Maintainer for protected refs)",
            ),
        },
        404 => ApiOutcome::Permanent {
            status: Some(status),
            reason: said("(the project or commit is gone, or the token cannot see the project)"),
        },
        409 => ApiOutcome::RetryAfter {
            secs: RETRY_SOON_SECS,
            reason: said("(another update of this status is in progress)"),
        },
        429 => ApiOutcome::RetryAfter {
            secs: retry_after_secs(response, now),
            reason: said("(rate limited)"),
        },
        _ => ApiOutcome::RetryAfter {
            secs: RETRY_SOON_SECS,
            reason: said("(try again)"),
        },
    }
}

/// The label of a call in metrics: its HTTP status, `transport` or `not_configured`.
pub fn status_label(answer: &Result<ApiResponse, ApiError>) -> String {
    match answer {
        Ok(response) => response.status.to_string(),
        Err(ApiError::NotConfigured { .. }) => "not_configured".to_string(),
        Err(ApiError::Transport(_)) => "transport".to_string(),
    }
}

#[cfg(test)]
#[path = "classify_test.rs"]
mod tests;
