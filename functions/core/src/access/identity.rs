//! The dispatcher identity `fluxrelay cluster add` creates in a cluster: the name of its
//! ServiceAccount, Roles and RoleBindings, and how long its token has left.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use time::OffsetDateTime;

/// A token this close to its expiry makes `cluster check` fail, so it is renewed
/// (`cluster add --force`) with time to spare.
pub const RENEW_WITHIN_DAYS: i64 = 14;

/// The Kubernetes name of an entry's dispatcher identity: `fluxrelay-<entry>`, lower case,
/// every character outside `[a-z0-9-]` a `-`, at most 63 characters, ending in a letter or
/// digit (a DNS-1123 label, valid for a ServiceAccount, a Role and a RoleBinding).
pub fn identity_name(entry: &str) -> String {
    let mut name: String = format!("fluxrelay-{entry}")
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-') => c,
            _ => '-',
        })
        .take(63)
        .collect();
    while name.ends_with('-') {
        name.pop();
    }
    name
}

/// When a JWT bearer token expires (its `exp` claim), read without verifying it: the
/// apiserver verifies; this only tells the operator when to renew. `None` for a token that
/// is not a JWT or has no `exp` (a static token, a legacy Secret token).
pub fn token_expiry(token: &str) -> Option<OffsetDateTime> {
    let mut parts = token.trim().split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_i64()?;
    OffsetDateTime::from_unix_timestamp(exp).ok()
}

/// How a token's expiry stands at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No expiry to read.
    Unknown,
    /// Whole days left, at least [`RENEW_WITHIN_DAYS`].
    Fine {
        days: i64,
    },
    /// Fewer than [`RENEW_WITHIN_DAYS`] days left: renew it now.
    RenewSoon {
        days: i64,
    },
    Expired,
}

pub fn expiry(token: &str, now: OffsetDateTime) -> Expiry {
    let Some(at) = token_expiry(token) else {
        return Expiry::Unknown;
    };
    if at <= now {
        return Expiry::Expired;
    }
    let days = (at - now).whole_days();
    if days < RENEW_WITHIN_DAYS {
        Expiry::RenewSoon { days }
    } else {
        Expiry::Fine { days }
    }
}

#[cfg(test)]
#[path = "identity_test.rs"]
mod tests;
