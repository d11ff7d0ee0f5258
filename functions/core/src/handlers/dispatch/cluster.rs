//! One cluster's share of a batch: read its registry entry and Flux objects, plan each
//! message, let newer pushes supersede older ones, make one call per target, and give each
//! message its verdict. Settling is the caller's (it happens as soon as this returns).

use std::collections::BTreeMap;

use futures_util::future::join_all;
use time::{Duration, OffsetDateTime};
use tracing::Instrument;

use super::calls::{Reads, Triggered, discover, distrust_if_unready, trigger};
use super::{DispatchMemory, DispatchRules, TargetOutcome};
use crate::handlers::plan::{
    ClusterView, PushPlan, Skip, Target, configuration_failure, plan_dispatch,
};
use crate::matching::artifacts::artifact_scopes;
use crate::matching::select::Freshness;
use crate::outcome::classify::{FailureClass, TriggerFailure};
use crate::outcome::settle::attempt_number;
use crate::outcome::supersede::superseded_by;
use crate::outcome::verdict::{Attempt, TargetState, Verdict, message_verdict};
use crate::ports::{
    Annotator, ApiserverReadiness, Clock, ClusterRegistry, FluxDiscovery, QueueMessage,
    RegistryReadError, TriggerSender,
};
use crate::push::Dispatch;
use crate::registry::ClusterEntry;

pub(super) struct ClusterWork<'a, R, C, T> {
    pub registry: &'a R,
    pub clusters: &'a C,
    pub clock: &'a T,
    pub rules: &'a DispatchRules,
    pub memory: &'a DispatchMemory,
    pub name: &'a str,
    pub now: OffsetDateTime,
}

/// The verdict (and skips) of each message, in order, and the calls made.
pub(super) struct Decided {
    pub verdicts: Vec<(Verdict, Vec<Skip>)>,
    pub targets: Vec<TargetOutcome>,
    /// Whether the cluster's entry has `confirm` (`None`: the entry could not be read;
    /// a confirmation is started anyway and dropped by the confirm stage if it is off).
    pub confirm: Option<bool>,
}

impl Decided {
    /// Every message failed the same way before any target was known: the newest of each
    /// project, ref and event carries the failure, the older ones are superseded by it.
    pub fn whole_cluster_failed(
        rules: &DispatchRules,
        group: &[(&QueueMessage, Dispatch)],
        failure: &TriggerFailure,
        denied_for: Option<Duration>,
    ) -> Decided {
        let dispatches: Vec<&Dispatch> = group.iter().map(|(_, d)| d).collect();
        let superseded = superseded_by(&dispatches);
        let verdicts = group
            .iter()
            .zip(&superseded)
            .map(|((message, dispatch), newer)| {
                let verdict = match newer {
                    Some(newer) => Verdict::Superseded {
                        by: group[*newer].1.push.key.clone(),
                    },
                    None => message_verdict(
                        &rules.policy,
                        Attempt {
                            number: attempt_number(Some(dispatch), message),
                            message_id: &message.id,
                            denied_for,
                        },
                        &[],
                        &[(None, failure.clone())],
                    ),
                };
                (verdict, Vec::new())
            })
            .collect();
        Decided {
            verdicts,
            targets: Vec::new(),
            confirm: None,
        }
    }

    fn confirming(mut self, entry: &ClusterEntry) -> Decided {
        self.confirm = Some(entry.confirm.is_some());
        self
    }
}

pub(super) async fn handle_cluster<R, C, T>(
    work: &ClusterWork<'_, R, C, T>,
    group: &[(&QueueMessage, Dispatch)],
) -> Decided
where
    R: ClusterRegistry,
    C: FluxDiscovery + TriggerSender + Annotator + ApiserverReadiness,
    T: Clock,
{
    let rules = work.rules;
    let entry = match entry(work.registry, work.name).await {
        Ok(entry) => entry,
        Err(failure) => return Decided::whole_cluster_failed(rules, group, &failure, None),
    };
    let planned = discover_and_plan(work.clusters, &entry, group).await;
    let (view, mut plans) = match planned {
        Ok(planned) => planned,
        Err(mut failure) => {
            if failure.credentials_rejected {
                work.registry.invalidate(work.name);
            }
            if failure.class == FailureClass::Denied {
                distrust_if_unready(work.clusters, &entry, std::iter::once(&mut failure)).await;
            }
            let denied_for = work.memory.denials.observe(
                work.name,
                failure.class == FailureClass::Denied,
                work.now,
            );
            return Decided::whole_cluster_failed(rules, group, &failure, denied_for)
                .confirming(&entry);
        }
    };
    let superseded = if rules.options.coalesce {
        superseded_by(&group.iter().map(|(_, d)| d).collect::<Vec<_>>())
    } else {
        vec![None; group.len()]
    };

    // Which messages need each target. A target delivered after a push was accepted
    // already covers it; otherwise the newest push that needs the target carries its one
    // call (one call per message, and no covering, without coalescing: for comparison
    // only).
    let mut states: Vec<Vec<(String, Option<TargetState>)>> = vec![Vec::new(); group.len()];
    let mut wanted: BTreeMap<(Target, usize), Vec<usize>> = BTreeMap::new();
    for (index, plan) in plans.iter().enumerate() {
        if superseded[index].is_some() {
            continue;
        }
        let push = &group[index].1.push;
        for target in &plan.targets {
            let object = target.object();
            let covering = rules
                .options
                .coalesce
                .then(|| {
                    work.memory
                        .deliveries
                        .covering(work.name, &target.delivery_scope(), push)
                })
                .flatten();
            if let Some(covering) = covering {
                let by = covering.describe();
                states[index].push((object, Some(TargetState::Covered { by })));
                continue;
            }
            states[index].push((object, None));
            let slot = if rules.options.coalesce { 0 } else { index };
            wanted
                .entry((target.clone(), slot))
                .or_default()
                .push(index);
        }
    }
    let carriers: Vec<((Target, usize), usize, Vec<usize>)> = wanted
        .into_iter()
        .map(|(key, needers)| {
            let carrier = newest(group, &needers);
            (key, carrier, needers)
        })
        .collect();
    let (entry, view) = (&*entry, &view);
    let calls = carriers.iter().map(|((target, _), carrier, _)| {
        let push = &group[*carrier].1.push;
        async move {
            // Read before the call goes out: every push accepted before it is served by it.
            let decided_in_run = work.clock.run_instant();
            let result = trigger(work.clusters, entry, view, target, push, work.now).await;
            // Only a request that went out covers other pushes.
            if matches!(result, Ok(Triggered::Sent)) {
                work.memory.deliveries.record(
                    work.name,
                    &target.delivery_scope(),
                    work.now,
                    decided_in_run,
                );
            }
            (result, work.clock.now())
        }
    });
    let outcomes = join_all(calls)
        .instrument(tracing::info_span!("calls", cluster = %work.name))
        .await;
    // A call that did not go out is reported as its plan would have reported the skip.
    let mut not_sent: Vec<Option<String>> = Vec::with_capacity(outcomes.len());
    let mut results = Vec::with_capacity(outcomes.len());
    for (result, finished_at) in outcomes {
        match result {
            Ok(Triggered::NotSent { reason }) => {
                not_sent.push(Some(reason));
                results.push((Ok(()), finished_at));
            }
            other => {
                not_sent.push(None);
                results.push((other.map(|_| ()), finished_at));
            }
        }
    }

    let denied = |results: &[(Result<(), TriggerFailure>, OffsetDateTime)]| {
        results
            .iter()
            .any(|(r, _)| r.as_ref().is_err_and(|f| f.class == FailureClass::Denied))
    };
    if denied(&results) {
        let denials = results
            .iter_mut()
            .filter_map(|(r, _)| r.as_mut().err())
            .filter(|f| f.class == FailureClass::Denied);
        distrust_if_unready(work.clusters, entry, denials).await;
    }
    if results
        .iter()
        .any(|(r, _)| r.as_ref().is_err_and(|f| f.credentials_rejected))
    {
        work.registry.invalidate(work.name);
    }
    let denied_for = work
        .memory
        .denials
        .observe(work.name, denied(&results), work.now);

    let mut targets = Vec::with_capacity(carriers.len());
    for ((((target, _), carrier, needers), (result, finished_at)), not_sent) in
        carriers.iter().zip(results).zip(not_sent)
    {
        let object = target.object();
        let carried = &group[*carrier].1.push;
        if let Some(reason) = not_sent {
            for index in needers {
                states[*index].retain(|(o, s)| !(*o == object && s.is_none()));
                plans[*index].skipped.push(Skip {
                    object: object.clone(),
                    reason: reason.clone(),
                });
            }
            continue;
        }
        for index in needers {
            let state = if index == carrier {
                match &result {
                    Ok(()) => TargetState::Delivered,
                    Err(failure) => TargetState::Failed(failure.clone()),
                }
            } else {
                TargetState::Covered {
                    by: match &result {
                        Ok(()) => carried.key.clone(),
                        Err(_) => format!("{} (which carries the retry)", carried.key),
                    },
                }
            };
            if let Some(slot) = states[*index]
                .iter_mut()
                .find(|(o, s)| *o == object && s.is_none())
            {
                slot.1 = Some(state);
            }
        }
        targets.push(TargetOutcome {
            cluster: work.name.to_string(),
            target: object,
            project: carried.project.path.clone(),
            git_ref: carried.git_ref.clone(),
            carried: carried.key.clone(),
            push_keys: needers
                .iter()
                .map(|index| group[*index].1.push.key.clone())
                .collect(),
            result,
            finished_at,
        });
    }

    let verdicts = group
        .iter()
        .zip(plans)
        .zip(states)
        .zip(&superseded)
        .map(|((((message, dispatch), plan), states), newer)| {
            if let Some(newer) = newer {
                let by = group[*newer].1.push.key.clone();
                return (Verdict::Superseded { by }, Vec::new());
            }
            let targets: Vec<(String, TargetState)> = states
                .into_iter()
                .filter_map(|(object, state)| state.map(|state| (object, state)))
                .collect();
            let problems: Vec<(Option<String>, TriggerFailure)> = plan
                .problems
                .into_iter()
                .map(|problem| (Some(problem.object), problem.failure))
                .collect();
            let verdict = message_verdict(
                &rules.policy,
                Attempt {
                    number: attempt_number(Some(dispatch), message),
                    message_id: &message.id,
                    denied_for,
                },
                &targets,
                &problems,
            );
            (verdict, plan.skipped)
        })
        .collect();
    Decided {
        verdicts,
        targets,
        confirm: Some(entry.confirm.is_some()),
    }
}

/// The newest of these messages (latest acceptance; queue order breaks ties).
fn newest(group: &[(&QueueMessage, Dispatch)], indexes: &[usize]) -> usize {
    use time::format_description::well_known::Rfc3339;
    let accepted =
        |index: usize| OffsetDateTime::parse(&group[index].1.push.received_at, &Rfc3339).ok();
    indexes
        .iter()
        .copied()
        .max_by(|a, b| accepted(*a).cmp(&accepted(*b)).then(a.cmp(b)))
        .unwrap_or_default()
}

/// The cluster's registry entry; a cluster added a moment ago may not be in this
/// process's cache yet, so a miss is read once more.
async fn entry(
    registry: &impl ClusterRegistry,
    name: &str,
) -> Result<std::sync::Arc<ClusterEntry>, TriggerFailure> {
    let mut lookup = registry.cluster(name).await;
    if matches!(lookup, Ok(None)) {
        registry.invalidate(name);
        lookup = registry.cluster(name).await;
    }
    match lookup {
        Ok(Some(entry)) => Ok(entry),
        Ok(None) => Err(configuration_failure(
            FailureClass::Permanent,
            format!("cluster {name} is not in the registry"),
        )),
        Err(error) => Err(configuration_failure(
            match error {
                RegistryReadError::Unavailable(_) => FailureClass::Retryable,
                RegistryReadError::Invalid { .. } => FailureClass::Permanent,
            },
            error.to_string(),
        )),
    }
}

/// Plans every message against the (possibly cached) view, then reads the cluster again
/// when a plan asks for it: a cached "already at the revision" must be re-read before it
/// may skip anything, and a Receiver path the registry token does not produce may be a
/// stale cache. What is still inconsistent on fresh objects is a token rotation in
/// progress: retried, and dead-lettered by the attempt limit if it never settles.
async fn discover_and_plan(
    api: &impl FluxDiscovery,
    entry: &ClusterEntry,
    group: &[(&QueueMessage, Dispatch)],
) -> Result<(ClusterView, Vec<PushPlan>), TriggerFailure> {
    let plan_all = |view: &ClusterView| -> Vec<PushPlan> {
        group
            .iter()
            .map(|(_, dispatch)| plan_dispatch(entry, view, dispatch))
            .collect()
    };
    let reads = needed_reads(entry, group);
    let mut view = discover(api, entry, Freshness::Cached, reads).await?;
    let mut plans = plan_all(&view);
    let stale = plans.iter().any(|plan| {
        plan.look_again
            || plan
                .problems
                .iter()
                .any(|p| p.failure.class == FailureClass::Rediscover)
    });
    if stale && view.freshness == Freshness::Cached {
        view = discover(api, entry, Freshness::Fresh, reads).await?;
        plans = plan_all(&view);
    }
    for problem in plans.iter_mut().flat_map(|p| &mut p.problems) {
        if problem.failure.class == FailureClass::Rediscover {
            problem.failure.class = FailureClass::Retryable;
        }
    }
    Ok((view, plans))
}

/// GitRepositories are read when the batch holds a Git push, the entry's artifact kinds
/// when it holds an event with artifact scopes here: a batch of Git pushes lists nothing
/// the Role of a Git-only cluster does not grant.
fn needed_reads(entry: &ClusterEntry, group: &[(&QueueMessage, Dispatch)]) -> Reads {
    let pushes = || group.iter().map(|(_, dispatch)| &dispatch.push);
    Reads {
        git_repositories: pushes().any(|push| push.event.is_git_push()),
        artifacts: pushes().any(|push| !artifact_scopes(entry, push).is_empty()),
    }
}
