//! Has the cluster applied the pushed commit? One look at the cluster's GitRepositories,
//! Kustomizations and HelmReleases (read once per cluster per check) decides, for one push:
//!
//! | State | When (for every GitRepository that tracks the push, as dispatch matches them) |
//! |---|---|
//! | **failed** | a consumer reports `Ready=False` *for the pushed commit*: a Kustomization whose `lastAttemptedRevision` names it and whose `lastAppliedRevision` does not (`BuildFailed`, `ReconciliationFailed`, `PruneFailed`, `HealthCheckFailed`), or a comparable HelmRelease whose `lastAttemptedRevision` carries it; the consumer's reason and message are the outcome's |
//! | **superseded** | the source provably moved past the commit before it was applied: its artifact names another commit, it is `Ready` on its current generation, and the requested reconcile was handled (`requestedAt` = `lastHandledReconcileAt`: our trigger's, or a later one, was fetched after the push, and it found another head) |
//! | **success** | every source has the commit and every consumer applied it: a Kustomization's `lastAppliedRevision` names it with `Ready=True` on its current generation; a comparable HelmRelease's newest release is `deployed` with that chart version and `Ready=True` |
//! | **running** | a source has the commit; a consumer has not applied it yet |
//! | **pending** | no source has the commit yet |
//!
//! What the rule deliberately does not do, and why (`docs/reference/flux.md`, "Summary for
//! implementers"): it never trusts "no `Reconciling` condition" (source-controller writes
//! none before a timer-driven fetch); a Kustomization `Ready=False` that is not for the
//! commit (`ArtifactFailed`, `DependencyNotReady`, `HealthCheckCanceled`, or
//! `lastAttemptedRevision` at another commit) and a source whose fetch failed are not
//! failures of the commit — the confirmation keeps waiting and, if it times out, says
//! what it was waiting on. A HelmRelease whose chart version does not carry the commit
//! (`reconcileStrategy: ChartVersion`, the default, or a chart from a HelmRepository) is
//! not comparable: it is not waited for, and the message names it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::objects::{ChartSource, Condition, HelmRelease, Kustomization};
use super::revision;
use crate::flux::GitRepository;
use crate::matching::select::repository_skip;
use crate::matching::url::PushLocations;
use crate::push::Push;

/// Where a confirmation stands after one look at the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfirmState {
    Pending,
    Running,
    Success,
    Failed,
    Superseded,
}

impl ConfirmState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ConfirmState::Success | ConfirmState::Failed | ConfirmState::Superseded
        )
    }
}

/// One look at the cluster, for one push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub state: ConfirmState,
    /// A short machine word: `applied`, `source_moved`, the consumer's Ready reason
    /// (`BuildFailed`, …), `waiting_for_source`, `waiting_for_kustomization`, …
    pub reason: String,
    /// For people (the GitLab description; a failure is the consumer's own message).
    pub message: String,
    /// `kind namespace/name` of the object the state is about, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// When the cluster applied it (the latest consumer's `Ready` transition, or the
    /// artifact's time when nothing consumes the source): success only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<String>,
}

/// What a cluster holds, as one check read it.
#[derive(Debug, Clone, Default)]
pub struct ClusterObjects {
    pub sources: Vec<GitRepository>,
    pub kustomizations: Vec<Kustomization>,
    pub helm_releases: Vec<HelmRelease>,
}

/// The commit Flux will record for a push: a tag's `checkout_sha` (the commit; `after`
/// is the tag object for annotated tags), else `after`.
pub fn pushed_commit(push: &Push) -> &str {
    push.checkout_sha
        .as_deref()
        .filter(|sha| !sha.is_empty())
        .unwrap_or(&push.after)
}

pub fn short(sha: &str) -> &str {
    sha.get(..8).unwrap_or(sha)
}

enum Consumer {
    Applied { at: Option<String> },
    Failed { reason: String, message: String },
    Waiting { why: String },
}

fn describe(ready: Option<&Condition>) -> String {
    match ready {
        None => "no Ready condition yet".to_string(),
        Some(ready) if ready.reason.is_empty() => format!("Ready={}", ready.status),
        Some(ready) => format!("Ready={} {}", ready.status, ready.reason),
    }
}

/// Ready=False reasons that are no verdict on the commit: the controller is waiting or was
/// interrupted by a newer revision.
const NOT_A_VERDICT: &[&str] = &[
    "DependencyNotReady",
    "HealthCheckCanceled",
    "Progressing",
    "ProgressingWithRetry",
    "ArtifactFailed",
    "SourceNotReady",
];

fn failed(ready: Option<&Condition>) -> Option<(String, String)> {
    let ready = ready.filter(|r| r.is_false())?;
    if NOT_A_VERDICT.contains(&ready.reason.as_str()) {
        return None;
    }
    let reason = if ready.reason.is_empty() {
        "NotReady".to_string()
    } else {
        ready.reason.clone()
    };
    Some((reason, ready.message.clone()))
}

fn kustomization(ks: &Kustomization, commit: &str) -> Consumer {
    let applied = revision::names(ks.last_applied_revision.as_deref(), commit);
    let ready = ks.ready.as_ref();
    if applied && ready.is_some_and(Condition::is_true) && ks.current_generation {
        return Consumer::Applied {
            at: ready.and_then(|r| r.last_transition_time.clone()),
        };
    }
    if !applied
        && revision::names(ks.last_attempted_revision.as_deref(), commit)
        && let Some((reason, message)) = failed(ready)
    {
        return Consumer::Failed { reason, message };
    }
    Consumer::Waiting {
        why: describe(ready),
    }
}

fn helm_release(hr: &HelmRelease, commit: &str) -> Consumer {
    let deployed = (revision::chart_version_names(hr.latest_chart_version.as_deref(), commit)
        && hr.latest_status.as_deref() == Some("deployed"))
        || revision::chart_version_names(hr.last_applied_revision.as_deref(), commit);
    let ready = hr.ready.as_ref();
    if deployed && ready.is_some_and(Condition::is_true) && hr.current_generation {
        return Consumer::Applied {
            at: ready.and_then(|r| r.last_transition_time.clone()),
        };
    }
    if !deployed
        && revision::chart_version_names(hr.last_attempted_revision.as_deref(), commit)
        && let Some((reason, message)) = failed(ready)
    {
        return Consumer::Failed { reason, message };
    }
    Consumer::Waiting {
        why: describe(ready),
    }
}

/// The source fetched after the push and found another commit (see the module table).
fn moved_past(source: &GitRepository, commit: &str) -> Option<String> {
    let other = revision::commit_of(source.artifact_revision.as_deref()?)?;
    let status = &source.status;
    let handled = status
        .requested_at
        .as_ref()
        .is_some_and(|requested| status.last_handled_reconcile_at.as_ref() == Some(requested));
    let current = status.generation.is_some() && status.generation == status.observed_generation;
    (!revision::same_commit(other, commit) && status.ready && current && handled)
        .then(|| other.to_string())
}

enum SourceState {
    Done { applied_at: Option<String> },
    Failed(Observation),
    Superseded(Observation),
    Running(Observation),
    Pending(Observation),
}

fn source_state(
    source: &GitRepository,
    objects: &ClusterObjects,
    helm_releases: bool,
    commit: &str,
    not_comparable: &mut Vec<String>,
) -> SourceState {
    let source_id = format!("GitRepository {}", source.id);
    let mut consumers: Vec<(String, Consumer)> = Vec::new();
    for ks in &objects.kustomizations {
        if ks.git_repository.as_ref() == Some(&source.id) && !ks.suspend {
            consumers.push((
                format!("Kustomization {}", ks.id),
                kustomization(ks, commit),
            ));
        }
    }
    if helm_releases {
        for hr in &objects.helm_releases {
            let ChartSource::GitRepository {
                repository,
                revision_strategy,
            } = &hr.chart
            else {
                continue;
            };
            if *repository != source.id || hr.suspend {
                continue;
            }
            let name = format!("HelmRelease {}", hr.id);
            if *revision_strategy {
                consumers.push((name, helm_release(hr, commit)));
            } else {
                not_comparable.push(name);
            }
        }
    }
    if let Some((object, Consumer::Failed { reason, message })) = consumers
        .iter()
        .find(|(_, c)| matches!(c, Consumer::Failed { .. }))
    {
        return SourceState::Failed(Observation {
            state: ConfirmState::Failed,
            reason: reason.clone(),
            message: if message.is_empty() {
                format!("{object}: Ready=False {reason}")
            } else {
                message.clone()
            },
            object: Some(object.clone()),
            applied_at: None,
        });
    }
    let at_commit = revision::names(source.artifact_revision.as_deref(), commit);
    let waiting = consumers.iter().find_map(|(object, c)| match c {
        Consumer::Waiting { why } => Some((object, why)),
        _ => None,
    });
    let applied_at = consumers
        .iter()
        .filter_map(|(_, c)| match c {
            Consumer::Applied { at } => at.clone(),
            _ => None,
        })
        .max();
    match waiting {
        None if at_commit => SourceState::Done {
            applied_at: if consumers.is_empty() {
                source.status.artifact_updated_at.clone()
            } else {
                applied_at
            },
        },
        Some((object, why)) if at_commit => SourceState::Running(Observation {
            state: ConfirmState::Running,
            reason: if object.starts_with("HelmRelease") {
                "waiting_for_helm_release".into()
            } else {
                "waiting_for_kustomization".into()
            },
            message: format!(
                "{source_id} has {}; waiting for {object} ({why})",
                short(commit)
            ),
            object: Some(object.clone()),
            applied_at: None,
        }),
        _ => match moved_past(source, commit) {
            Some(other) => SourceState::Superseded(Observation {
                state: ConfirmState::Superseded,
                reason: "source_moved".into(),
                message: format!(
                    "superseded: {source_id} moved to {} before {} was applied (a newer push, or the ref was rewound)",
                    short(&other),
                    short(commit)
                ),
                object: Some(source_id),
                applied_at: None,
            }),
            None => SourceState::Pending(Observation {
                state: ConfirmState::Pending,
                reason: "waiting_for_source".into(),
                message: format!(
                    "waiting for {source_id} to fetch {} (at {}; {})",
                    short(commit),
                    source
                        .artifact_revision
                        .as_deref()
                        .and_then(revision::commit_of)
                        .map_or("no artifact", short),
                    if source.status.ready {
                        "Ready=True".to_string()
                    } else {
                        "not Ready".to_string()
                    }
                ),
                object: Some(source_id),
                applied_at: None,
            }),
        },
    }
}

/// One look at the cluster for one push. `aliases` are the entry's host aliases (the
/// sources are matched as dispatch matches them: URL, ref rule, not suspended).
pub fn observe(
    push: &Push,
    aliases: &BTreeMap<String, String>,
    helm_releases: bool,
    objects: &ClusterObjects,
) -> Observation {
    let commit = pushed_commit(push);
    let mut not_comparable = Vec::new();
    let pushed = PushLocations::of(push, aliases);
    let states: Vec<SourceState> = objects
        .sources
        .iter()
        .filter(|source| repository_skip(source, push, &pushed).is_ok())
        .map(|source| source_state(source, objects, helm_releases, commit, &mut not_comparable))
        .collect();
    if states.is_empty() {
        return Observation {
            state: ConfirmState::Pending,
            reason: "no_source".into(),
            message: format!(
                "no GitRepository in the cluster tracks {} {} (deleted or suspended since the trigger?)",
                push.project.path,
                push.short_ref()
            ),
            object: None,
            applied_at: None,
        };
    }
    let first =
        |wanted: fn(&SourceState) -> Option<&Observation>| states.iter().find_map(wanted).cloned();
    if let Some(failed) = first(|s| match s {
        SourceState::Failed(o) => Some(o),
        _ => None,
    }) {
        return failed;
    }
    if let Some(superseded) = first(|s| match s {
        SourceState::Superseded(o) => Some(o),
        _ => None,
    }) {
        return superseded;
    }
    if states.iter().all(|s| matches!(s, SourceState::Done { .. })) {
        let applied_at = states
            .iter()
            .filter_map(|s| match s {
                SourceState::Done { applied_at } => applied_at.clone(),
                _ => None,
            })
            .max();
        let mut message = format!("{} applied", short(commit));
        if !not_comparable.is_empty() {
            not_comparable.sort();
            not_comparable.dedup();
            message.push_str(&format!(
                "; not compared (chart version not tied to the commit): {}",
                not_comparable.join(", ")
            ));
        }
        return Observation {
            state: ConfirmState::Success,
            reason: "applied".into(),
            message,
            object: None,
            applied_at,
        };
    }
    if let Some(running) = first(|s| match s {
        SourceState::Running(o) => Some(o),
        _ => None,
    }) {
        return running;
    }
    if let Some(pending) = first(|s| match s {
        SourceState::Pending(o) => Some(o),
        _ => None,
    }) {
        // Some sources are done, others not there yet: the commit is on its way.
        if states.iter().any(|s| matches!(s, SourceState::Done { .. })) {
            return Observation {
                state: ConfirmState::Running,
                ..pending
            };
        }
        return pending;
    }
    // Not reachable: every state is one of the above.
    Observation {
        state: ConfirmState::Pending,
        reason: "waiting_for_source".into(),
        message: String::new(),
        object: None,
        applied_at: None,
    }
}

#[cfg(test)]
#[path = "rule_test.rs"]
mod tests;
