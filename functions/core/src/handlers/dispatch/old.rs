//! Dispatch: a batch of `Dispatch` messages → coalesced triggers per cluster → a verdict
//! per message (delivered, retry later, or dead-letter with a reason).

use std::collections::BTreeMap;

use futures_util::future::join_all;
use time::{Duration, OffsetDateTime};

use super::plan::{
    ClusterView, PushPlan, ReceiverCall, Target, configuration_failure, plan_push, receiver_call,
};
use crate::flux::ObjectRef;
use crate::outcome::classify::{
    FailureClass, TriggerFailure, classify_apiserver_response, classify_receiver_response,
};
use crate::outcome::denials::{DENIAL_CONFIRM_AFTER, DENIAL_RETRY_MIN_SECS, Denials};
use crate::outcome::retry::RetryPolicy;
use crate::ports::{
    Annotator, ApiserverReadiness, ClusterRegistry, FluxDiscovery, RegistryReadError, TriggerSender,
};
use crate::push::{Dispatch, Push};
use crate::registry::{ClusterEntry, TriggerMode};
use crate::trigger::request::{annotate_patch, requested_at};

/// One dispatch-queue message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchMessage {
    pub id: String,
    pub body: String,
    /// `ApproximateReceiveCount`: 1 on the first delivery.
    pub receive_count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every target of the push answered success.
    Delivered { targets: Vec<String> },
    /// Nothing in the cluster tracks this project and ref (see the skips).
    NothingToTrigger,
    /// Make the message visible again after `delay_secs` (and report it as failed).
    Retry { delay_secs: u32, reason: String },
    /// Send to the dead-letter queue with this reason, then delete it.
    DeadLetter { reason: String, status: Option<u16> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageOutcome {
    pub message_id: String,
    /// Absent only when the body is not a `Dispatch`.
    pub dispatch: Option<Dispatch>,
    pub verdict: Verdict,
    pub skipped: Vec<super::plan::Skip>,
}

/// One call made to a cluster, for the log and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetOutcome {
    pub cluster: String,
    pub target: String,
    /// Project and ref of the push the call carried (the latest of the coalesced ones).
    pub project: String,
    pub git_ref: String,
    /// Keys of every push this one call served (coalescing).
    pub push_keys: Vec<String>,
    pub result: Result<(), TriggerFailure>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DispatchReport {
    pub messages: Vec<MessageOutcome>,
    pub targets: Vec<TargetOutcome>,
}

impl DispatchReport {
    /// Ids to report as batch item failures (the retries).
    pub fn failed_ids(&self) -> Vec<&str> {
        self.messages
            .iter()
            .filter(|m| matches!(m.verdict, Verdict::Retry { .. }))
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

pub async fn handle_dispatch<C>(
    registry: &impl ClusterRegistry,
    cluster_api: &C,
    policy: &RetryPolicy,
    denials: &Denials,
    messages: &[DispatchMessage],
    now: OffsetDateTime,
) -> DispatchReport
where
    C: FluxDiscovery + TriggerSender + Annotator + ApiserverReadiness,
{
    handle_dispatch_with(
        registry,
        cluster_api,
        policy,
        denials,
        DispatchOptions::default(),
        messages,
        now,
    )
    .await
}

/// [`handle_dispatch`] with explicit [`DispatchOptions`].
pub async fn handle_dispatch_with<C>(
    registry: &impl ClusterRegistry,
    cluster_api: &C,
    policy: &RetryPolicy,
    denials: &Denials,
    options: DispatchOptions,
    messages: &[DispatchMessage],
    now: OffsetDateTime,
) -> DispatchReport
where
    C: FluxDiscovery + TriggerSender + Annotator + ApiserverReadiness,
{
    let mut report = DispatchReport::default();
    let mut by_cluster: BTreeMap<String, Vec<(&DispatchMessage, Dispatch)>> = BTreeMap::new();
    for message in messages {
        match Dispatch::from_json(&message.body) {
            Ok(dispatch) => by_cluster
                .entry(dispatch.cluster.clone())
                .or_default()
                .push((message, dispatch)),
            Err(error) => report.messages.push(MessageOutcome {
                message_id: message.id.clone(),
                dispatch: None,
                verdict: Verdict::DeadLetter {
                    reason: format!("not a Dispatch message: {error}"),
                    status: None,
                },
                skipped: Vec::new(),
            }),
        }
    }
    let clusters = by_cluster.into_iter().map(|(name, group)| {
        let rules = Rules {
            policy,
            denials,
            options,
        };
        handle_cluster(registry, cluster_api, rules, name, group, now)
    });
    for (messages, targets) in join_all(clusters).await {
        report.messages.extend(messages);
        report.targets.extend(targets);
    }
    report
}

/// What decides the calls and verdicts of a batch.
#[derive(Clone, Copy)]
struct Rules<'a> {
    policy: &'a RetryPolicy,
    denials: &'a Denials,
    options: DispatchOptions,
}

/// All messages of one cluster (one FIFO group), in order.
async fn handle_cluster<C>(
    registry: &impl ClusterRegistry,
    cluster_api: &C,
    rules: Rules<'_>,
    name: String,
    group: Vec<(&DispatchMessage, Dispatch)>,
    now: OffsetDateTime,
) -> (Vec<MessageOutcome>, Vec<TargetOutcome>)
where
    C: FluxDiscovery + TriggerSender + Annotator + ApiserverReadiness,
{
    let Rules {
        policy,
        denials,
        options,
    } = rules;
    let mut lookup = registry.cluster(&name).await;
    if matches!(lookup, Ok(None)) {
        // A cluster added a moment ago may not be in this container's cache yet.
        registry.invalidate(&name);
        lookup = registry.cluster(&name).await;
    }
    let entry = match lookup {
        Ok(Some(entry)) => entry,
        Ok(None) => {
            let failure = configuration_failure(
                FailureClass::Permanent,
                format!("cluster {name} is not in the registry"),
            );
            return (fail_all(policy, group, &failure, None), Vec::new());
        }
        Err(error) => {
            let class = match error {
                RegistryReadError::Unavailable(_) => FailureClass::Retryable,
                RegistryReadError::Invalid { .. } => FailureClass::Permanent,
            };
            return (
                fail_all(
                    policy,
                    group,
                    &configuration_failure(class, error.to_string()),
                    None,
                ),
                Vec::new(),
            );
        }
    };
    let (view, plans) = match discover_and_plan(cluster_api, &entry, &group).await {
        Ok(planned) => planned,
        Err(failure) => {
            if failure.credentials_rejected {
                registry.invalidate(&name);
            }
            let mut failure = failure;
            if failure.class == FailureClass::Denied {
                distrust_if_unready(cluster_api, &entry, std::iter::once(&mut failure)).await;
            }
            let denied_for = denials.observe(&name, failure.class == FailureClass::Denied, now);
            return (fail_all(policy, group, &failure, denied_for), Vec::new());
        }
    };

    // Coalesce: one call per target, built from the latest push that needs it. Without
    // coalescing each push gets its own call (the slot is the message's index).
    let slot_of = |index: usize| if options.coalesce { 0 } else { index };
    let mut wanted: BTreeMap<(Target, usize), (usize, Vec<String>)> = BTreeMap::new();
    for (index, plan) in plans.iter().enumerate() {
        for target in &plan.targets {
            let slot = wanted
                .entry((target.clone(), slot_of(index)))
                .or_insert((index, Vec::new()));
            slot.0 = index;
            slot.1.push(group[index].1.push.key.clone());
        }
    }
    let calls = wanted.iter().map(|((target, _), (latest, _))| {
        trigger(
            cluster_api,
            &entry,
            &view,
            target,
            &group[*latest].1.push,
            now,
        )
    });
    let mut results: BTreeMap<&(Target, usize), Result<(), TriggerFailure>> =
        wanted.keys().zip(join_all(calls).await).collect();
    if results
        .values()
        .any(|r| r.as_ref().is_err_and(|f| f.class == FailureClass::Denied))
    {
        let denials = results
            .values_mut()
            .filter_map(|r| r.as_mut().err())
            .filter(|f| f.class == FailureClass::Denied);
        distrust_if_unready(cluster_api, &entry, denials).await;
    }
    if results
        .values()
        .any(|r| r.as_ref().is_err_and(|f| f.credentials_rejected))
    {
        registry.invalidate(&name);
    }
    let denied = results
        .values()
        .any(|r| r.as_ref().is_err_and(|f| f.class == FailureClass::Denied));
    let denied_for = denials.observe(&name, denied, now);

    let targets = wanted
        .iter()
        .map(|(key, (latest, keys))| TargetOutcome {
            cluster: name.clone(),
            target: key.0.to_string(),
            project: group[*latest].1.push.project.path.clone(),
            git_ref: group[*latest].1.push.git_ref.clone(),
            push_keys: keys.clone(),
            result: results.get(key).cloned().unwrap_or(Ok(())),
        })
        .collect();

    let mut outcomes = Vec::with_capacity(group.len());
    let mut blocked_by: Option<(String, u32)> = None;
    for (index, ((message, dispatch), plan)) in group.into_iter().zip(plans).enumerate() {
        let mut failures: Vec<TriggerFailure> = plan.problems.clone();
        for target in &plan.targets {
            if let Some(Err(failure)) = results.get(&(target.clone(), slot_of(index))) {
                failures.push(failure.clone());
            }
        }
        let verdict = match &blocked_by {
            // FIFO: nothing after a message that will be retried may overtake it.
            Some((blocker, delay_secs)) => Verdict::Retry {
                delay_secs: *delay_secs,
                reason: format!("held behind message {blocker} of the same cluster to keep order"),
            },
            None => verdict(policy, message, &plan, &failures, denied_for),
        };
        if let (None, Verdict::Retry { delay_secs, .. }) = (&blocked_by, &verdict) {
            blocked_by = Some((message.id.clone(), *delay_secs));
        }
        outcomes.push(MessageOutcome {
            message_id: message.id.clone(),
            dispatch: Some(dispatch),
            verdict,
            skipped: plan.skipped,
        });
    }
    (outcomes, targets)
}

/// A 403 from an apiserver that is not ready is not trusted (it may not have loaded its
/// RBAC yet): the denials become retryable and start no streak.
async fn distrust_if_unready<'f>(
    api: &impl ApiserverReadiness,
    entry: &ClusterEntry,
    denials: impl IntoIterator<Item = &'f mut TriggerFailure>,
) {
    let Err(why) = api.apiserver_ready(entry).await else {
        return;
    };
    for failure in denials {
        failure.class = FailureClass::Retryable;
        failure.reason = format!(
            "{} (not trusted: the apiserver is not ready: {why})",
            failure.reason
        );
    }
}

/// `denied_for`: how long the cluster has been answering 403 without a break, when it did
/// this round ([`Denials`]).
fn verdict(
    policy: &RetryPolicy,
    message: &DispatchMessage,
    plan: &PushPlan,
    failures: &[TriggerFailure],
    denied_for: Option<Duration>,
) -> Verdict {
    if failures.is_empty() {
        return if plan.targets.is_empty() {
            Verdict::NothingToTrigger
        } else {
            Verdict::Delivered {
                targets: plan.targets.iter().map(ToString::to_string).collect(),
            }
        };
    }
    let reason = failures
        .iter()
        .map(|f| f.reason.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    // Rejected credentials were invalidated above: the retry uses the re-read entry.
    let retryable = failures
        .iter()
        .any(|f| f.class == FailureClass::Retryable || f.credentials_rejected);
    let denied = failures.iter().any(|f| f.class == FailureClass::Denied);
    // Confirmed: the cluster has denied for 10 s without a break, and this message was
    // tried before (a push redriven right after the Role was fixed gets a second try while
    // the apiserver's RBAC cache catches up).
    let unconfirmed_denial = denied
        && (denied_for.is_none_or(|d| d < DENIAL_CONFIRM_AFTER) || message.receive_count < 2);
    if (retryable || unconfirmed_denial) && !policy.exhausted(message.receive_count) {
        let delay_secs = policy.delay_secs(message.receive_count, &message.id);
        return Verdict::Retry {
            delay_secs: if unconfirmed_denial {
                delay_secs.max(DENIAL_RETRY_MIN_SECS)
            } else {
                delay_secs
            },
            reason,
        };
    }
    let reason = if retryable {
        format!("gave up after {} attempts: {reason}", message.receive_count)
    } else if denied {
        format!(
            "{reason} (denied without a break for {} s)",
            denied_for.unwrap_or_default().whole_seconds()
        )
    } else {
        reason
    };
    Verdict::DeadLetter {
        reason,
        status: failures.iter().find_map(|f| f.status),
    }
}

fn fail_all(
    policy: &RetryPolicy,
    group: Vec<(&DispatchMessage, Dispatch)>,
    failure: &TriggerFailure,
    denied_for: Option<Duration>,
) -> Vec<MessageOutcome> {
    let plan = PushPlan::default();
    let mut blocked_by: Option<(String, u32)> = None;
    group
        .into_iter()
        .map(|(message, dispatch)| {
            let verdict = match &blocked_by {
                Some((blocker, delay_secs)) => Verdict::Retry {
                    delay_secs: *delay_secs,
                    reason: format!(
                        "held behind message {blocker} of the same cluster to keep order ({})",
                        failure.reason
                    ),
                },
                None => verdict(
                    policy,
                    message,
                    &plan,
                    std::slice::from_ref(failure),
                    denied_for,
                ),
            };
            if let (None, Verdict::Retry { delay_secs, .. }) = (&blocked_by, &verdict) {
                blocked_by = Some((message.id.clone(), *delay_secs));
            }
            MessageOutcome {
                message_id: message.id.clone(),
                dispatch: Some(dispatch),
                verdict,
                skipped: Vec::new(),
            }
        })
        .collect()
}

/// Plans every message against the cached view; if a plan found the view inconsistent
/// with the registry (a Receiver path that the configured token does not produce), plans
/// again once against freshly read objects, and what is still inconsistent is permanent.
async fn discover_and_plan(
    api: &impl FluxDiscovery,
    entry: &ClusterEntry,
    group: &[(&DispatchMessage, Dispatch)],
) -> Result<(ClusterView, Vec<PushPlan>), TriggerFailure> {
    let plan_all = |view: &ClusterView| -> Vec<PushPlan> {
        group
            .iter()
            .map(|(_, d)| plan_push(entry, view, &d.push))
            .collect()
    };
    let stale = |plans: &[PushPlan]| {
        plans
            .iter()
            .flat_map(|p| &p.problems)
            .any(|f| f.class == FailureClass::Rediscover)
    };
    let mut view = discover(api, entry, false).await?;
    let mut plans = plan_all(&view);
    if stale(&plans) {
        view = discover(api, entry, true).await?;
        plans = plan_all(&view);
        // Still inconsistent with fresh objects: a token rotation in progress (registry and
        // Receiver Secret are rarely updated at the same instant). Retry with backoff;
        // the attempt limit dead-letters it with this reason if it never settles.
        for failure in plans.iter_mut().flat_map(|p| &mut p.problems) {
            if failure.class == FailureClass::Rediscover {
                failure.class = FailureClass::Retryable;
            }
        }
    }
    Ok((view, plans))
}

async fn discover(
    api: &impl FluxDiscovery,
    entry: &ClusterEntry,
    fresh: bool,
) -> Result<ClusterView, TriggerFailure> {
    let mut view = ClusterView::default();
    for namespace in &entry.namespaces {
        view.repositories
            .extend(api.git_repositories(entry, namespace, fresh).await?);
        if entry.trigger.mode == TriggerMode::Receiver {
            view.receivers
                .extend(api.receivers(entry, namespace, fresh).await?);
        }
    }
    Ok(view)
}

async fn trigger<C>(
    api: &C,
    entry: &ClusterEntry,
    view: &ClusterView,
    target: &Target,
    push: &Push,
    now: OffsetDateTime,
) -> Result<(), TriggerFailure>
where
    C: FluxDiscovery + TriggerSender + Annotator + ApiserverReadiness,
{
    match target {
        Target::Annotate { repository } => {
            let patch = annotate_patch(&requested_at(now));
            let response = api.annotate(entry, repository, &patch).await?;
            classify_apiserver_response(&response, &format!("patch gitrepository {repository}"))
        }
        Target::Receiver { receiver, .. } => {
            let first = send_to_receiver(api, entry, view, receiver, push).await;
            match first {
                Err(failure) if failure.class == FailureClass::Rediscover => {
                    rediscover_and_resend(api, entry, receiver, push, failure).await
                }
                other => other,
            }
        }
    }
}

async fn send_to_receiver(
    api: &impl TriggerSender,
    entry: &ClusterEntry,
    view: &ClusterView,
    id: &ObjectRef,
    push: &Push,
) -> Result<(), TriggerFailure> {
    let Some(receiver) = view.receiver(id) else {
        return Err(configuration_failure(
            FailureClass::Permanent,
            format!("Receiver {id} disappeared during dispatch"),
        ));
    };
    match receiver_call(entry, receiver, push) {
        ReceiverCall::Ready(request) => {
            let response = api.send(entry, &request).await?;
            classify_receiver_response(&response)
        }
        ReceiverCall::Skip(_) => Ok(()),
        ReceiverCall::Problem(failure) => Err(failure),
    }
}

/// A Receiver 404 usually means its token, and so its path, changed: read the Receiver
/// again and resend once if the path moved; otherwise the 404 is final.
async fn rediscover_and_resend<C>(
    api: &C,
    entry: &ClusterEntry,
    id: &ObjectRef,
    push: &Push,
    first: TriggerFailure,
) -> Result<(), TriggerFailure>
where
    C: FluxDiscovery + TriggerSender,
{
    let permanent = |reason: String| TriggerFailure {
        class: FailureClass::Permanent,
        reason,
        ..first.clone()
    };
    let receivers = api.receivers(entry, &id.namespace, true).await?;
    let view = ClusterView {
        repositories: Vec::new(),
        receivers,
    };
    let Some(fresh) = view.receiver(id) else {
        return Err(permanent(format!(
            "{}; Receiver {id} no longer exists",
            first.reason
        )));
    };
    let old_path = fresh.webhook_path.clone();
    let result = send_to_receiver(api, entry, &view, id, push).await;
    match result {
        Err(again) if again.class == FailureClass::Rediscover => Err(permanent(format!(
            "{} (path {} re-read from the cluster, still not found)",
            again.reason,
            old_path.unwrap_or_default()
        ))),
        other => other,
    }
}

#[cfg(test)]
#[path = "dispatch_test.rs"]
mod tests;
