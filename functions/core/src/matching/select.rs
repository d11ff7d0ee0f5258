//! GitRepository and Receiver selection.
//!
//! Which GitRepositories a push should trigger, which Receivers would reconcile them, and
//! the webhook path a Receiver listens on.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::refs::{self, RefMiss};
use super::url::{self, PushLocations};
use crate::flux::{
    GIT_REPOSITORY_GROUP, GitRepository, ObjectRef, Receiver, ResourceSelector, SourceStatus,
};
use crate::push::Push;

const GIT_REPOSITORY_KIND: &str = "GitRepository";
const WEBHOOK_PATH_PREFIX: &str = "/hook/";
/// Flux's paths are 64 hex digits; the limit leaves room without accepting unbounded input.
const MAX_WEBHOOK_DIGEST_LENGTH: usize = 128;

/// Why a push does not trigger a GitRepository.
///
/// Messages never echo `spec.url` itself: it may carry credentials in its user info.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoSkip {
    #[error("has no spec.url")]
    NoUrl,
    #[error("spec.url is not an http, https or ssh git URL")]
    UnsupportedUrl,
    #[error("spec.url names `{location}`, not the pushed project")]
    OtherProject { location: String },
    #[error("{0}")]
    Ref(#[from] RefMiss),
    #[error("is suspended")]
    Suspended,
    #[error(
        "already at the pushed revision `{revision}`, made after the push was received, with no reconcile pending"
    )]
    AlreadyAtRevision { revision: String },
}

/// How recent the status a verdict is made on is: only a fresh read may skip anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Read for this very decision.
    Fresh,
    /// From a cache: it may predate the push.
    Cached,
}

/// What [`repository_verdict`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepositoryVerdict {
    Trigger,
    Skip(RepoSkip),
    /// It would be skipped as already at the revision, but the status was cached: read it
    /// again before skipping (until then it is a trigger).
    LookAgain,
}

/// How far apart fluxrelay's clock and a cluster's may be (NTP keeps them within
/// milliseconds): an artifact counts as made after a push only when its time is at least
/// this much later than the push's acceptance.
pub const CLOCK_SKEW_ALLOWANCE: time::Duration = time::Duration::seconds(5);

/// Flux has provably fetched the ref after the push: the source is Ready on its current
/// generation, no requested reconcile is pending, and its artifact was made at least
/// [`CLOCK_SKEW_ALLOWANCE`] after the push was accepted. An artifact at the pushed commit
/// made earlier proves nothing: a fetch that started before the ref moved again (a
/// rollback, A→B then B→A) may still land on the other commit.
pub fn settled_after(status: &SourceStatus, received_at: &str) -> bool {
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;
    let parse = |text: &str| OffsetDateTime::parse(text, &Rfc3339).ok();
    let (Some(received), Some(made)) = (
        parse(received_at),
        status.artifact_updated_at.as_deref().and_then(parse),
    ) else {
        return false;
    };
    let current_generation =
        status.generation.is_some() && status.generation == status.observed_generation;
    let nothing_pending = status
        .requested_at
        .as_ref()
        .is_none_or(|requested| status.last_handled_reconcile_at.as_ref() == Some(requested));
    status.ready && current_generation && nothing_pending && made >= received + CLOCK_SKEW_ALLOWANCE
}

/// Whether this push should trigger this GitRepository: URL, then ref, then suspended,
/// then already reconciled (decided only on a [`Freshness::Fresh`] status).
pub fn repository_verdict(
    repo: &GitRepository,
    push: &Push,
    pushed: &PushLocations<'_>,
    freshness: Freshness,
) -> RepositoryVerdict {
    match repository_skip(repo, push, pushed) {
        Err(skip) => RepositoryVerdict::Skip(skip),
        Ok(()) => {
            let reconciled = refs::already_at(
                &refs::effective_ref(repo.git_ref.as_ref()),
                repo.artifact_revision.as_deref(),
                push,
            ) && settled_after(&repo.status, &push.received_at);
            match (reconciled, freshness) {
                (false, _) => RepositoryVerdict::Trigger,
                (true, Freshness::Cached) => RepositoryVerdict::LookAgain,
                (true, Freshness::Fresh) => RepositoryVerdict::Skip(RepoSkip::AlreadyAtRevision {
                    revision: repo.artifact_revision.clone().unwrap_or_default(),
                }),
            }
        }
    }
}

/// The rules that do not depend on the source's status: URL, ref, suspended.
/// `pushed`: the push's locations under the cluster's host aliases.
pub fn repository_skip(
    repo: &GitRepository,
    push: &Push,
    pushed: &PushLocations<'_>,
) -> Result<(), RepoSkip> {
    let spec_url = repo.url.as_deref().ok_or(RepoSkip::NoUrl)?;
    let location = url::normalize(spec_url).ok_or(RepoSkip::UnsupportedUrl)?;
    let location = pushed.canonical(location);
    if !pushed.contains(&location) {
        return Err(RepoSkip::OtherProject {
            location: location.to_string(),
        });
    }
    let rule = refs::effective_ref(repo.git_ref.as_ref());
    refs::ref_triggers(&rule, push)?;
    if repo.suspend {
        return Err(RepoSkip::Suspended);
    }
    Ok(())
}

/// Whether a Receiver's spec.resources select this GitRepository: an entry with kind `GitRepository`,
/// apiVersion absent or in group `source.toolkit.fluxcd.io` (any version), namespace (default: the Receiver's)
/// equal to the repo's, and name equal to the repo's name, or name `*` whose matchLabels are all present on
/// the repo with equal values (empty matchLabels with `*` selects all GitRepositories in that namespace).
pub fn receiver_selects(receiver: &Receiver, repo: &GitRepository) -> bool {
    receiver_selects_object(
        receiver,
        GIT_REPOSITORY_KIND,
        GIT_REPOSITORY_GROUP,
        &repo.id,
        &repo.labels,
    )
}

/// [`receiver_selects`] for an object of any kind: its `kind`, API `group`, id and labels.
pub fn receiver_selects_object(
    receiver: &Receiver,
    kind: &str,
    group: &str,
    id: &ObjectRef,
    labels: &BTreeMap<String, String>,
) -> bool {
    receiver
        .resources
        .iter()
        .any(|selector| selector_selects(selector, &receiver.id.namespace, kind, group, id, labels))
}

fn selector_selects(
    selector: &ResourceSelector,
    receiver_namespace: &str,
    kind: &str,
    group: &str,
    id: &ObjectRef,
    labels: &BTreeMap<String, String>,
) -> bool {
    let namespace = selector.namespace.as_deref().unwrap_or(receiver_namespace);
    let name_selects = if selector.name == "*" {
        selector
            .match_labels
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
    } else {
        // flux.rs reads a missing name as ""; an empty name selects nothing.
        !selector.name.is_empty() && selector.name == id.name
    };
    selector.kind == kind
        && selector
            .api_version
            .as_deref()
            .is_none_or(|api_version| is_api_version_of(api_version, group))
        && namespace == id.namespace
        && name_selects
}

/// `<group>/<version>`, any version: which one the Receiver names does not change which
/// object it annotates.
fn is_api_version_of(api_version: &str, group: &str) -> bool {
    matches!(
        api_version.split_once('/'),
        Some((named, version))
            if named == group && !version.is_empty() && !version.contains('/')
    )
}

/// Flux's webhook path: "/hook/" + lowercase hex(sha256(token + name + namespace)), plain concatenation.
pub fn webhook_path(token: &str, name: &str, namespace: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(token.as_bytes());
    digest.update(name.as_bytes());
    digest.update(namespace.as_bytes());
    format!("{WEBHOOK_PATH_PREFIX}{}", hex::encode(digest.finalize()))
}

/// A syntactically safe webhook path: "/hook/" followed by 1..=128 chars of [A-Za-z0-9_-] — nothing else
/// (no dots, slashes, percent signs, query or fragment), because it is appended to a credentialed URL.
pub fn is_safe_webhook_path(path: &str) -> bool {
    path.strip_prefix(WEBHOOK_PATH_PREFIX)
        .is_some_and(|digest| {
            (1..=MAX_WEBHOOK_DIGEST_LENGTH).contains(&digest.len())
                && digest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

/// `text` with the secret part of every webhook path replaced: `…/hook/<redacted>`. A
/// generic Receiver's path is its only secret, and libraries log the URLs they call
/// (kube-client's `HTTP` span at debug carries `http.url`), so every log line written by
/// fluxrelay's processes passes through this. The part replaced is what
/// [`is_safe_webhook_path`] allows after the prefix, so no path dispatch can call escapes.
pub fn redact_webhook_paths(text: &str) -> std::borrow::Cow<'_, str> {
    const REDACTED: &str = "<redacted>";
    let is_digest_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    if !text.contains(WEBHOOK_PATH_PREFIX) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut redacted = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(WEBHOOK_PATH_PREFIX) {
        let after = at + WEBHOOK_PATH_PREFIX.len();
        redacted.push_str(&rest[..after]);
        let digest = rest[after..]
            .bytes()
            .take_while(|b| is_digest_byte(*b))
            .count();
        if digest > 0 {
            redacted.push_str(REDACTED);
        }
        rest = &rest[after + digest..];
    }
    redacted.push_str(rest);
    std::borrow::Cow::Owned(redacted)
}

#[cfg(test)]
#[path = "select_test.rs"]
mod tests;
