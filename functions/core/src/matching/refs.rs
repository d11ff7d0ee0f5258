//! GitRepository ref rules.
//!
//! Which pushes can change what a GitRepository fetches, decided from its effective
//! `spec.ref` alone. Git refs are case-sensitive, so every comparison here is too.

use crate::flux::GitRepositoryRef;
use crate::push::{Push, PushEvent};

const BRANCH_PREFIX: &str = "refs/heads/";
const TAG_PREFIX: &str = "refs/tags/";
/// What Flux checks out when `spec.ref` says nothing.
const DEFAULT_BRANCH: &str = "master";

/// What a GitRepository follows, reduced to the one `spec.ref` field that Flux honours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefRule {
    /// Pinned to one commit (with or without a branch): a push can never move it.
    Commit,
    /// A full ref name, e.g. `refs/heads/main` or `refs/merge-requests/1/head`.
    Name(String),
    /// A semver range over the repository's tags.
    Semver(String),
    /// One tag, by short name.
    Tag(String),
    /// One branch, by short name.
    Branch(String),
}

/// What the rule follows, in the words an operator reads (`fluxrelay cluster check`).
impl std::fmt::Display for RefRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefRule::Commit => f.write_str("a pinned commit"),
            RefRule::Name(name) => write!(f, "ref {name}"),
            RefRule::Semver(range) => write!(f, "semver {range}"),
            RefRule::Tag(tag) => write!(f, "tag {tag}"),
            RefRule::Branch(branch) => write!(f, "branch {branch}"),
        }
    }
}

/// The effective ref of a GitRepository by Flux's precedence commit > name > semver > tag > branch; none → branch `master`.
pub fn effective_ref(spec: Option<&GitRepositoryRef>) -> RefRule {
    let Some(spec) = spec else {
        return RefRule::Branch(DEFAULT_BRANCH.to_string());
    };
    if set(&spec.commit).is_some() {
        RefRule::Commit
    } else if let Some(name) = set(&spec.name) {
        RefRule::Name(name.to_string())
    } else if let Some(range) = set(&spec.semver) {
        RefRule::Semver(range.to_string())
    } else if let Some(tag) = set(&spec.tag) {
        RefRule::Tag(tag.to_string())
    } else if let Some(branch) = set(&spec.branch) {
        RefRule::Branch(branch.to_string())
    } else {
        RefRule::Branch(DEFAULT_BRANCH.to_string())
    }
}

/// A field of `spec.ref` that is set. flux.rs already drops empty strings; this keeps the
/// rule true for a hand-built spec.
fn set(field: &Option<String>) -> Option<&str> {
    field.as_deref().filter(|value| !value.is_empty())
}

/// Why a push cannot change what a GitRepository fetches. `pushed` is always the full ref.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefMiss {
    #[error("pinned to a commit, so no push can change what it fetches")]
    PinnedToCommit,
    #[error("tracks branch `{tracked}`, but the push is to `{pushed}`")]
    OtherBranch { tracked: String, pushed: String },
    #[error("tracks branch `{tracked}`, but the push is a tag push to `{pushed}`")]
    NotABranchPush { tracked: String, pushed: String },
    #[error("tracks tag `{tracked}`, but the push is to tag `{pushed}`")]
    OtherTag { tracked: String, pushed: String },
    #[error("tracks tags, but the push is a branch push to `{pushed}`")]
    NotATagPush { pushed: String },
    #[error("tracks ref `{tracked}`, but the push is to `{pushed}`")]
    OtherRef { tracked: String, pushed: String },
    #[error("the push deletes branch `{pushed}`, so there is nothing new to fetch")]
    BranchDeleted { pushed: String },
    #[error("the push deletes tag `{pushed}`, so there is nothing new to fetch")]
    TagDeleted { pushed: String },
    #[error("a {event} event is no Git ref change")]
    NotAGitPush { event: &'static str },
}

/// Whether a push to `push.git_ref` can change what this GitRepository fetches.
///
/// A mismatch of ref is reported before a deletion: "tracks `main`, push is to `feature`"
/// explains more than "`feature` was deleted".
pub fn ref_triggers(rule: &RefRule, push: &Push) -> Result<(), RefMiss> {
    if !push.event.is_git_push() {
        return Err(RefMiss::NotAGitPush {
            event: push.event.object_kind(),
        });
    }
    let pushed = push.git_ref.as_str();
    match rule {
        RefRule::Commit => Err(RefMiss::PinnedToCommit),
        RefRule::Branch(branch) => {
            if push.event != PushEvent::Push {
                return Err(RefMiss::NotABranchPush {
                    tracked: branch.clone(),
                    pushed: pushed.to_string(),
                });
            }
            if pushed.strip_prefix(BRANCH_PREFIX) != Some(branch.as_str()) {
                return Err(RefMiss::OtherBranch {
                    tracked: branch.clone(),
                    pushed: pushed.to_string(),
                });
            }
            not_a_deletion(push)
        }
        RefRule::Tag(tag) => {
            if push.event != PushEvent::TagPush {
                return Err(RefMiss::NotATagPush {
                    pushed: pushed.to_string(),
                });
            }
            if pushed.strip_prefix(TAG_PREFIX) != Some(tag.as_str()) {
                return Err(RefMiss::OtherTag {
                    tracked: tag.clone(),
                    pushed: pushed.to_string(),
                });
            }
            not_a_deletion(push)
        }
        // Deleting the highest matching tag changes which tag the range resolves to, so a
        // tag deletion triggers too. The range itself is not evaluated: a tag outside it
        // costs one needless fetch, a wrong evaluation would cost a missed deploy.
        RefRule::Semver(_) => match push.event {
            PushEvent::TagPush => Ok(()),
            PushEvent::Push | PushEvent::Pipeline | PushEvent::ArtifactPush => {
                Err(RefMiss::NotATagPush {
                    pushed: pushed.to_string(),
                })
            }
        },
        RefRule::Name(name) if name.starts_with(BRANCH_PREFIX) || name.starts_with(TAG_PREFIX) => {
            if pushed != name {
                return Err(RefMiss::OtherRef {
                    tracked: name.clone(),
                    pushed: pushed.to_string(),
                });
            }
            not_a_deletion(push)
        }
        // Other refs (`refs/merge-requests/1/head`, `refs/pull/…`) are not reported by push
        // hooks at all, so any push of the project may have moved them.
        RefRule::Name(_) => {
            if push.is_branch_deletion() {
                Err(RefMiss::BranchDeleted {
                    pushed: pushed.to_string(),
                })
            } else {
                Ok(())
            }
        }
    }
}

fn not_a_deletion(push: &Push) -> Result<(), RefMiss> {
    if !push.is_deletion() {
        return Ok(());
    }
    let pushed = push.git_ref.clone();
    Err(match push.event {
        PushEvent::TagPush => RefMiss::TagDeleted { pushed },
        PushEvent::Push | PushEvent::Pipeline | PushEvent::ArtifactPush => {
            RefMiss::BranchDeleted { pushed }
        }
    })
}

/// Whether the GitRepository already has the pushed revision (status.artifact.revision), so triggering is pointless.
///
/// Only a certain "yes" skips a trigger; anything unclear (no status, an unknown revision
/// format, a semver range that a new tag may resolve differently) answers "no".
pub fn already_at(rule: &RefRule, artifact_revision: Option<&str>, push: &Push) -> bool {
    let Some(revision) = artifact_revision.and_then(ArtifactRevision::parse) else {
        return false;
    };
    if push.is_deletion() || !push.event.is_git_push() {
        return false;
    }
    // The revision must name the tracked ref, and the push must be to that same ref: the
    // same commit on another branch or tag is another revision.
    let (revision_name, tracked_ref_pushed) = match rule {
        RefRule::Commit | RefRule::Semver(_) => return false,
        RefRule::Branch(branch) => (
            branch.as_str(),
            push.git_ref.strip_prefix(BRANCH_PREFIX) == Some(branch.as_str()),
        ),
        RefRule::Tag(tag) => (
            tag.as_str(),
            push.git_ref.strip_prefix(TAG_PREFIX) == Some(tag.as_str()),
        ),
        RefRule::Name(name) => (name.as_str(), push.git_ref == *name),
    };
    // GitLab's `after` of an annotated tag is the tag object; `checkout_sha` is the commit
    // Flux records, so a tag push is "already there" when either one is.
    let pushed_commits: &[Option<&str>] = match push.event {
        PushEvent::TagPush => &[Some(push.after.as_str()), push.checkout_sha.as_deref()],
        PushEvent::Push | PushEvent::Pipeline | PushEvent::ArtifactPush => {
            &[Some(push.after.as_str())]
        }
    };
    tracked_ref_pushed
        && revision.ref_name == revision_name
        && pushed_commits
            .iter()
            .flatten()
            .any(|commit| commit.eq_ignore_ascii_case(revision.commit))
}

/// `status.artifact.revision` of a GitRepository: `<ref name>@sha1:<40 hex>` or
/// `<ref name>@sha256:<64 hex>`.
struct ArtifactRevision<'a> {
    ref_name: &'a str,
    commit: &'a str,
}

impl<'a> ArtifactRevision<'a> {
    fn parse(revision: &'a str) -> Option<Self> {
        // Branch names may contain `@`, digests never do: split at the last one.
        let (ref_name, digest) = revision.rsplit_once('@')?;
        let (algorithm, commit) = digest.split_once(':')?;
        let hex_length = match algorithm {
            "sha1" => 40,
            "sha256" => 64,
            _ => return None,
        };
        let well_formed = !ref_name.is_empty()
            && commit.len() == hex_length
            && commit.bytes().all(|b| b.is_ascii_hexdigit());
        well_formed.then_some(Self { ref_name, commit })
    }
}

#[cfg(test)]
#[path = "refs_test.rs"]
mod tests;
