//! Dispatch: a batch of `Dispatch` messages → per cluster, coalesced triggers → a verdict
//! per message → settled on its queue the moment its cluster is done.
//!
//! Every cluster stands alone: clusters run concurrently, each against its own deadline,
//! and each is settled as soon as it finishes, so a hung apiserver delays nobody else.
//! What a cluster has not finished by its deadline is retried, not timed out.

mod answered;
mod calls;
mod cluster;
mod paths;

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::{Either, join_all, select};
use time::OffsetDateTime;

use tracing::Instrument;

pub use self::answered::{AnsweredCalls, answer, one_call};
use self::cluster::{ClusterWork, Decided, handle_cluster};
use super::plan::Skip;
use crate::confirm::message::Confirmation;
use crate::outcome::classify::{FailureClass, Responder, TriggerFailure};
use crate::outcome::denials::Denials;
use crate::outcome::retry::RetryPolicy;
use crate::outcome::settle::{Settled, dispatch_settlement, settle, settle_confirming};
use crate::outcome::supersede::Deliveries;
use crate::outcome::verdict::{DeadLetterPlan, Verdict};
use crate::ports::{
    Annotator, ApiserverReadiness, Clock, ClusterRegistry, FluxDiscovery, GitLabApi, NoGitLab,
    QueueMessage, Settle, TriggerSender,
};
use crate::push::Dispatch;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageOutcome {
    pub message_id: String,
    /// Absent only when the body is not a `Dispatch`.
    pub dispatch: Option<Dispatch>,
    pub verdict: Verdict,
    pub skipped: Vec<Skip>,
    /// How it was settled on its queue.
    pub settled: Settled,
    /// Its confirmation was started (the trigger reached the cluster, which confirms).
    pub confirming: bool,
}

/// One call made to a cluster, for the log, the metrics and the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetOutcome {
    pub cluster: String,
    pub target: String,
    /// Project and ref of the push the call carried (the newest of those it served).
    pub project: String,
    pub git_ref: String,
    /// The key of the push the call carried.
    pub carried: String,
    /// Keys of every push this one call served (coalescing), the carried one included.
    pub push_keys: Vec<String>,
    pub result: Result<(), TriggerFailure>,
    /// When the answer came.
    pub finished_at: OffsetDateTime,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DispatchReport {
    pub messages: Vec<MessageOutcome>,
    pub targets: Vec<TargetOutcome>,
}

impl DispatchReport {
    /// Ids to report as batch item failures: the messages that are to come back.
    pub fn failed_ids(&self) -> Vec<&str> {
        self.messages
            .iter()
            .filter(|m| m.settled.comes_back())
            .map(|m| m.message_id.as_str())
            .collect()
    }
}

/// How a batch is turned into calls. The default is what fluxrelay does; the other
/// settings exist to measure it against (the benchmark's naive dispatcher).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchOptions {
    /// One call per target for all the batch's pushes that need it (true), or one call
    /// per target per push (false: "one trigger per push", for comparison only).
    pub coalesce: bool,
}

impl Default for DispatchOptions {
    fn default() -> Self {
        Self { coalesce: true }
    }
}

/// The rules a dispatcher runs by.
#[derive(Debug, Clone, Copy, Default)]
pub struct DispatchRules {
    pub policy: RetryPolicy,
    pub options: DispatchOptions,
    /// How long one cluster may take in this batch; `None` for no limit. On Lambda it comes
    /// from the invocation's remaining time, in `serve` from the visibility timeout.
    pub cluster_budget: Option<Duration>,
    /// This dispatcher has a confirm queue: a push delivered to a cluster whose entry has
    /// `confirm` starts a confirmation (`docs/design.md`, "Confirmation").
    pub confirm: bool,
}

/// What a dispatcher remembers between batches (per process: a `serve` run, a warm
/// Lambda container).
#[derive(Debug, Default)]
pub struct DispatchMemory {
    pub denials: Denials,
    pub deliveries: Deliveries,
}

/// The systems a dispatch batch talks to.
pub struct DispatchPorts<'a, R, C, Q, T, G = NoGitLab> {
    pub registry: &'a R,
    pub clusters: &'a C,
    pub queue: &'a Q,
    pub clock: &'a T,
    /// GitLab's compare API, for dispatches route marked `verify_paths` (AWS, where route
    /// holds no credential); `NoGitLab` where route compares itself (`serve`).
    pub gitlab: &'a G,
}

/// Handle one batch: every cluster concurrently, each settled as it finishes.
pub async fn handle_dispatch<R, C, Q, T, G>(
    ports: &DispatchPorts<'_, R, C, Q, T, G>,
    rules: &DispatchRules,
    memory: &DispatchMemory,
    messages: &[QueueMessage],
    now: OffsetDateTime,
) -> DispatchReport
where
    R: ClusterRegistry,
    C: FluxDiscovery + TriggerSender + Annotator + ApiserverReadiness,
    Q: Settle,
    T: Clock,
    G: GitLabApi,
{
    let mut unreadable = Vec::new();
    let mut by_cluster: BTreeMap<String, Vec<(&QueueMessage, Dispatch)>> = BTreeMap::new();
    for message in messages {
        match Dispatch::from_json(&message.body) {
            Ok(dispatch) => by_cluster
                .entry(dispatch.cluster.clone())
                .or_default()
                .push((message, dispatch)),
            Err(error) => unreadable.push((message, error)),
        }
    }
    let not_a_dispatch = unreadable.into_iter().map(|(message, error)| async move {
        let verdict = Verdict::DeadLetter(DeadLetterPlan {
            only: None,
            reason: format!("not a Dispatch message: {error}"),
            status: None,
        });
        let settled = settle(
            ports.queue,
            message,
            &dispatch_settlement(message, None, &verdict),
        )
        .await;
        MessageOutcome {
            message_id: message.id.clone(),
            dispatch: None,
            verdict,
            skipped: Vec::new(),
            settled,
            confirming: false,
        }
    });
    // Before anything is planned (a push filtered out here must supersede nothing).
    let (by_cluster, unsubscribed) = paths::verify(ports.registry, ports.gitlab, by_cluster).await;
    let unsubscribed = unsubscribed
        .into_iter()
        .map(|(message, dispatch, skip)| async move {
            let verdict = Verdict::NothingToTrigger;
            let settled = settle(
                ports.queue,
                message,
                &dispatch_settlement(message, Some(&dispatch), &verdict),
            )
            .await;
            MessageOutcome {
                message_id: message.id.clone(),
                dispatch: Some(dispatch),
                verdict,
                skipped: vec![skip],
                settled,
                confirming: false,
            }
        });
    let clusters = by_cluster
        .into_iter()
        .map(|(name, group)| cluster_settled(ports, rules, memory, name, group, now));
    let (unreadable, (unsubscribed, clusters)) = futures_util::future::join(
        join_all(not_a_dispatch),
        futures_util::future::join(join_all(unsubscribed), join_all(clusters)),
    )
    .await;
    let mut report = DispatchReport {
        messages: unreadable,
        targets: Vec::new(),
    };
    report.messages.extend(unsubscribed);
    for (messages, targets) in clusters {
        report.messages.extend(messages);
        report.targets.extend(targets);
    }
    report
}

/// One cluster within its budget, then settled at once.
async fn cluster_settled<R, C, Q, T, G>(
    ports: &DispatchPorts<'_, R, C, Q, T, G>,
    rules: &DispatchRules,
    memory: &DispatchMemory,
    name: String,
    group: Vec<(&QueueMessage, Dispatch)>,
    now: OffsetDateTime,
) -> (Vec<MessageOutcome>, Vec<TargetOutcome>)
where
    R: ClusterRegistry,
    C: FluxDiscovery + TriggerSender + Annotator + ApiserverReadiness,
    Q: Settle,
    T: Clock,
{
    let work = ClusterWork {
        registry: ports.registry,
        clusters: ports.clusters,
        clock: ports.clock,
        rules,
        memory,
        name: &name,
        now,
    };
    let span = tracing::info_span!("dispatch", cluster = %name, messages = group.len());
    let decided = async {
        match rules.cluster_budget {
            None => handle_cluster(&work, &group).await,
            Some(budget) => {
                let work_done = std::pin::pin!(handle_cluster(&work, &group));
                let deadline = std::pin::pin!(ports.clock.sleep(budget));
                match select(work_done, deadline).await {
                    Either::Left((decided, _)) => decided,
                    Either::Right(((), _)) => Decided::whole_cluster_failed(
                        rules,
                        &group,
                        &over_budget(&name, budget),
                        None,
                    ),
                }
            }
        }
    }
    .instrument(span)
    .await;
    let confirming = rules.confirm && decided.confirm != Some(false);
    let delivered_at = ports.clock.now();
    let settled = join_all(group.iter().zip(&decided.verdicts).map(
        |((message, dispatch), (verdict, _))| {
            let settlement = dispatch_settlement(message, Some(dispatch), verdict);
            let confirmation = (confirming && starts_confirmation(dispatch, verdict))
                .then(|| Confirmation::start(&name, dispatch.push.clone(), delivered_at));
            async move {
                let settled =
                    settle_confirming(ports.queue, message, &settlement, confirmation.as_ref())
                        .await;
                let started = confirmation.is_some()
                    && !matches!(
                        settled,
                        Settled::RetriedInPlace { .. } | Settled::Failed { .. }
                    );
                (settled, started)
            }
        },
    ))
    .await;
    let outcomes = group
        .into_iter()
        .zip(decided.verdicts)
        .zip(settled)
        .map(
            |(((message, dispatch), (verdict, skipped)), (settled, confirming))| MessageOutcome {
                message_id: message.id.clone(),
                dispatch: Some(dispatch),
                verdict,
                skipped,
                settled,
                confirming,
            },
        )
        .collect();
    (outcomes, decided.targets)
}

/// A push starts a confirmation once its trigger reached the cluster: by its own call, or
/// covered by a newer push's or a later delivery (then the rule will find the source past
/// its commit: superseded). A deletion has no commit to follow.
fn starts_confirmation(dispatch: &Dispatch, verdict: &Verdict) -> bool {
    matches!(
        verdict,
        Verdict::Delivered { .. } | Verdict::Superseded { .. }
    ) && !dispatch.push.is_deletion()
}

/// What a cluster that ran out of time failed with: retryable, because a hung or slow
/// apiserver usually comes back, and the attempt limit ends it if it does not.
fn over_budget(name: &str, budget: Duration) -> TriggerFailure {
    TriggerFailure {
        class: FailureClass::Retryable,
        responder: Responder::Transport,
        status: None,
        reason: format!(
            "cluster {name} did not finish within its {} s budget (apiserver slow or hung)",
            budget.as_secs()
        ),
        credentials_rejected: false,
    }
}

#[cfg(test)]
#[path = "dispatch_test.rs"]
mod tests;

#[cfg(test)]
#[path = "dispatch_artifacts_test.rs"]
mod artifact_tests;
