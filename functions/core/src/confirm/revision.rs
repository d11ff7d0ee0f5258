//! Which commit a Flux revision names.
//!
//! Every format Flux has written into `status.artifact.revision`,
//! `status.lastAppliedRevision` and `status.lastAttemptedRevision` reduces to a commit by
//! the rule of Flux's own `ExtractHashFromRevision` (fluxcd/pkg `git/utils.go`): the text
//! after the last `:`; without one, after the last `/`; else the whole string
//! (`docs/reference/flux.md` §2). So `main@sha1:<sha>`, `refs/tags/v1@sha1:<sha>`,
//! `feature/x@sha1:<sha>`, `sha1:<sha>`, `<unknown>:<sha>` and the pre-0.35 `main/<sha>`,
//! `HEAD/<sha>` all name `<sha>`.
//!
//! A HelmChart built from a GitRepository with `reconcileStrategy: Revision` carries the
//! first 12 hex digits of the commit as SemVer build metadata instead
//! (`<version>+<sha12>`, or `<version>+<sha12>.<generation>` with values files; flux.md
//! §4.2): [`chart_version_names`] reads those.

/// The commit a revision names (Flux's `ExtractHashFromRevision`); `None` for an empty
/// revision or one whose hash part is not hexadecimal.
pub fn commit_of(revision: &str) -> Option<&str> {
    let revision = revision.trim();
    if revision.is_empty() {
        return None;
    }
    let hash = match revision.rfind(':') {
        Some(at) => &revision[at + 1..],
        None => revision.rsplit('/').next().unwrap_or(revision),
    };
    (!hash.is_empty() && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hash)
}

/// Whether `revision` names `commit` (a full 40- or 64-hex SHA). A shorter hash in the
/// revision (at least 7 digits, as Git abbreviates) names the commits it is a prefix of.
pub fn names(revision: Option<&str>, commit: &str) -> bool {
    let Some(hash) = revision.and_then(commit_of) else {
        return false;
    };
    same_commit(hash, commit)
}

/// Two hashes of one commit: equal, or one an abbreviation (≥ 7 digits) of the other.
pub fn same_commit(a: &str, b: &str) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    short.len() >= 7
        && long
            .get(..short.len())
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(short))
}

/// The commit abbreviation in a HelmChart version built with `reconcileStrategy:
/// Revision` from a Git source: the first dot-separated part of the SemVer build
/// metadata (`6.0.3+4e5cbb7b97d0` → `4e5cbb7b97d0`; `6.0.3+4e5cbb7b97d0.3` → the same).
/// `None` when there is no build metadata or it is not a hex hash of 12 digits.
pub fn chart_version_commit(version: &str) -> Option<&str> {
    let (_, metadata) = version.trim().split_once('+')?;
    let first = metadata.split('.').next()?;
    (first.len() == 12 && first.bytes().all(|b| b.is_ascii_hexdigit())).then_some(first)
}

/// Whether a chart version (from `status.history[].chartVersion` or
/// `status.lastAttemptedRevision` of a HelmRelease) was built from `commit`.
pub fn chart_version_names(version: Option<&str>, commit: &str) -> bool {
    version
        .and_then(chart_version_commit)
        .is_some_and(|hash| same_commit(hash, commit))
}

#[cfg(test)]
#[path = "revision_test.rs"]
mod tests;
