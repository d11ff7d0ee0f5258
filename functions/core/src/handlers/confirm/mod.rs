//! Confirm: a batch of confirmation messages → per cluster, one read of its Flux objects →
//! per message, a look ([`crate::confirm::rule`]), the next step
//! ([`crate::confirm::schedule`]), the commit status to post ([`post`]) → settled: a
//! re-check is a new delayed message, an end is acknowledged (or, when its status could
//! not be posted, dead-lettered with the reason).
//!
//! Clusters run concurrently, each within its budget; GitLab's slowness only delays this
//! stage, never dispatch (its own queue and worker or function).

mod post;

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::{Either, join_all, select};
use time::OffsetDateTime;
use tracing::Instrument;

pub use self::post::GitLabCall;
use crate::confirm::message::{Confirmation, Ended, Report};
use crate::confirm::rule::{ClusterObjects, ConfirmState, Observation, observe};
use crate::confirm::schedule::{ConfirmPolicy, Step, next_step};
use crate::gitlab_api::statuses::StatusNaming;
use crate::gitlab_api::throttle::Throttle;
use crate::outcome::classify::TriggerFailure;
use crate::outcome::settle::{FALLBACK_DELAY_SECS, Settled};
use crate::ports::{
    ApiserverReadiness, Clock, ClusterRegistry, DeadLetterReason, FluxConsumers, FluxDiscovery,
    GitLabApi, QueueMessage, Settle,
};
use crate::registry::{ClusterEntry, ConfirmOptions};

/// Posts that fail and are retried, in a row, before the status is given up on
/// (dead-lettered at the end with the reason).
pub const DEFAULT_MAX_POST_FAILURES: u32 = 10;

#[derive(Debug, Clone)]
pub struct ConfirmRules {
    pub policy: ConfirmPolicy,
    pub naming: StatusNaming,
    /// The name of a status over all clusters of a push (`None`: no summary).
    pub summary_name: Option<String>,
    pub max_post_failures: u32,
    /// How long one cluster's reads may take in a batch.
    pub cluster_budget: Option<Duration>,
    /// This confirm process (`serve`: one id per run; Lambda: none), written into each
    /// look it schedules.
    pub instance: Option<String>,
}

impl Default for ConfirmRules {
    fn default() -> Self {
        Self {
            policy: ConfirmPolicy::default(),
            naming: StatusNaming::default(),
            summary_name: None,
            max_post_failures: DEFAULT_MAX_POST_FAILURES,
            cluster_budget: None,
            instance: None,
        }
    }
}

/// What the confirm stage remembers between batches (per process).
#[derive(Debug, Default)]
pub struct ConfirmMemory {
    pub throttle: Throttle,
}

pub struct ConfirmPorts<'a, R, C, G, Q, T> {
    pub registry: &'a R,
    pub clusters: &'a C,
    pub gitlab: &'a G,
    pub queue: &'a Q,
    pub clock: &'a T,
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmStep {
    /// Looked (or posted) and scheduled the next round after `delay_secs`.
    Rechecked { delay_secs: u32 },
    /// Ended, and its status reported as far as it can be.
    Ended,
    /// Ended; its final status could not be posted and is in the dead-letter queue.
    DeadLettered { reason: String },
    /// The cluster does not confirm (its entry has no `confirm`): dropped.
    NotEnabled,
    /// Not a confirmation message: dead-lettered.
    Unreadable { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmedMessage {
    pub message_id: String,
    /// As it stands after this round (what was posted, how it ended).
    pub confirmation: Option<Confirmation>,
    /// This round's look, if there was one.
    pub seen: Option<Observation>,
    /// The look changed the state (or was the first): worth a journal line.
    pub changed: bool,
    pub step: ConfirmStep,
    pub calls: Vec<GitLabCall>,
    pub settled: Settled,
}

impl ConfirmedMessage {
    /// It ended in this round (exactly once per confirmation).
    pub fn ended(&self) -> Option<&Ended> {
        match self.step {
            ConfirmStep::Ended | ConfirmStep::DeadLettered { .. } => {
                self.confirmation.as_ref().and_then(|c| c.ended.as_ref())
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfirmReport {
    pub messages: Vec<ConfirmedMessage>,
    /// apiserver requests per cluster this batch (one read per cluster).
    pub requests: Vec<(String, u32)>,
}

impl ConfirmReport {
    pub fn failed_ids(&self) -> Vec<&str> {
        self.messages
            .iter()
            .filter(|m| m.settled.comes_back())
            .map(|m| m.message_id.as_str())
            .collect()
    }
}

/// Handle one batch of confirmation messages.
pub async fn handle_confirm<R, C, G, Q, T>(
    ports: &ConfirmPorts<'_, R, C, G, Q, T>,
    rules: &ConfirmRules,
    memory: &ConfirmMemory,
    messages: &[QueueMessage],
    now: OffsetDateTime,
) -> ConfirmReport
where
    R: ClusterRegistry,
    C: FluxDiscovery + FluxConsumers + ApiserverReadiness,
    G: GitLabApi,
    Q: Settle,
    T: Clock,
{
    let mut report = ConfirmReport::default();
    let mut by_cluster: BTreeMap<String, Vec<(&QueueMessage, Confirmation)>> = BTreeMap::new();
    for message in messages {
        match Confirmation::from_json(&message.body) {
            Ok(confirmation) => by_cluster
                .entry(confirmation.cluster.clone())
                .or_default()
                .push((message, confirmation)),
            Err(error) => {
                let reason = format!("not a Confirmation message: {error}");
                let settled = dead_letter(ports.queue, message, &message.body, &reason, None).await;
                report.messages.push(ConfirmedMessage {
                    message_id: message.id.clone(),
                    confirmation: None,
                    seen: None,
                    changed: false,
                    step: ConfirmStep::Unreadable { reason },
                    calls: Vec::new(),
                    settled,
                });
            }
        }
    }
    let clusters = by_cluster.into_iter().map(|(name, group)| {
        let span = tracing::info_span!("confirm", cluster = %name, messages = group.len());
        cluster_round(ports, rules, memory, name, group, now).instrument(span)
    });
    let mut rounds = Vec::new();
    for (done, requests) in join_all(clusters).await {
        rounds.extend(done);
        report.requests.push(requests);
    }
    summaries(ports.gitlab, rules, memory, &mut rounds, now).await;
    let settled = join_all(
        rounds
            .into_iter()
            .map(|round| settle_round(ports.queue, round)),
    )
    .await;
    report.messages.extend(settled);
    report
}

/// The summaries of the commits whose confirmations ended in this batch, once per commit.
async fn summaries(
    gitlab: &impl GitLabApi,
    rules: &ConfirmRules,
    memory: &ConfirmMemory,
    rounds: &mut [Round<'_>],
    now: OffsetDateTime,
) {
    let mut commits: BTreeMap<(String, u64, String), Vec<usize>> = BTreeMap::new();
    for (index, round) in rounds.iter_mut().enumerate() {
        let Some(confirmation) = &mut round.confirmation else {
            continue;
        };
        if post::summary_due(confirmation) {
            let push = &confirmation.push;
            commits
                .entry((
                    push.instance.clone(),
                    push.project.id,
                    crate::confirm::rule::pushed_commit(push).to_string(),
                ))
                .or_default()
                .push(index);
        } else if confirmation.report != Report::Active || rules.summary_name.is_none() {
            confirmation.summary_due = false;
        }
    }
    for indexes in commits.into_values() {
        let mut posted = post::Posted {
            calls: Vec::new(),
            retry_secs: None,
        };
        let outcome = {
            let members: Vec<&Confirmation> = indexes
                .iter()
                .filter_map(|i| rounds[*i].confirmation.as_ref())
                .collect();
            post::post_summary_once(gitlab, rules, memory, &mut posted, &members, now).await
        };
        if let Some(first) = indexes.first() {
            rounds[*first].calls.extend(posted.calls);
        }
        for index in indexes {
            let round = &mut rounds[index];
            match outcome {
                Ok(()) => {
                    if let Some(confirmation) = &mut round.confirmation {
                        confirmation.summary_due = false;
                    }
                }
                Err(secs) => {
                    round.delay_secs = Some(round.delay_secs.map_or(secs, |d| d.max(secs)));
                }
            }
        }
    }
}

/// What one read of a cluster found, or why there is nothing to look at.
enum ClusterRead {
    Objects(ClusterObjects),
    Failed(String),
}

async fn read_cluster<C: FluxDiscovery + FluxConsumers + ApiserverReadiness>(
    clusters: &C,
    entry: &ClusterEntry,
    options: ConfirmOptions,
) -> (ClusterRead, u32) {
    let mut objects = ClusterObjects::default();
    let mut requests = 0;
    for namespace in &entry.namespaces {
        requests += 1;
        match clusters.git_repositories(entry, namespace, true).await {
            Ok(list) => objects.sources.extend(list),
            Err(failure) => return (ClusterRead::Failed(failure.reason), requests),
        }
        requests += 1;
        let kustomizations = clusters.kustomizations(entry, namespace).await;
        match consumers_or_none(clusters, entry, kustomizations, &mut requests).await {
            Ok(list) => objects.kustomizations.extend(list),
            Err(reason) => return (ClusterRead::Failed(reason), requests),
        }
        if options.helm_releases {
            requests += 1;
            let releases = clusters.helm_releases(entry, namespace).await;
            match consumers_or_none(clusters, entry, releases, &mut requests).await {
                Ok(list) => objects.helm_releases.extend(list),
                Err(reason) => return (ClusterRead::Failed(reason), requests),
            }
        }
    }
    (ClusterRead::Objects(objects), requests)
}

/// A consumer kind whose API is not served has no objects: the cluster runs no
/// kustomize- or helm-controller, and the source alone decides. But a (re)starting
/// apiserver answers the same 404 until it has installed its CRDs' paths, and "no
/// consumers" would then confirm a commit nothing has applied: believe it only from an
/// apiserver that says it is ready.
async fn consumers_or_none<C: ApiserverReadiness, O>(
    clusters: &C,
    entry: &ClusterEntry,
    listed: Result<Vec<O>, TriggerFailure>,
    requests: &mut u32,
) -> Result<Vec<O>, String> {
    match listed {
        Ok(list) => Ok(list),
        Err(failure) if failure.api_not_served() => {
            *requests += 1;
            match clusters.apiserver_ready(entry).await {
                Ok(()) => Ok(Vec::new()),
                Err(why) => Err(format!(
                    "{} (not trusted: the apiserver is not ready: {why})",
                    failure.reason
                )),
            }
        }
        Err(failure) => Err(failure.reason),
    }
}

/// The apiserver requests one look at the cluster costs.
fn look_cost(entry: &ClusterEntry, options: ConfirmOptions) -> u32 {
    let kinds = if options.helm_releases { 3 } else { 2 };
    u32::try_from(entry.namespaces.len())
        .unwrap_or(u32::MAX)
        .saturating_mul(kinds)
}

async fn cluster_round<'m, R, C, G, Q, T>(
    ports: &ConfirmPorts<'_, R, C, G, Q, T>,
    rules: &ConfirmRules,
    memory: &ConfirmMemory,
    name: String,
    group: Vec<(&'m QueueMessage, Confirmation)>,
    now: OffsetDateTime,
) -> (Vec<Round<'m>>, (String, u32))
where
    R: ClusterRegistry,
    C: FluxDiscovery + FluxConsumers + ApiserverReadiness,
    G: GitLabApi,
    Q: Settle,
    T: Clock,
{
    let entry = match ports.registry.cluster(&name).await {
        Ok(Some(entry)) => Ok(entry),
        Ok(None) => Err(format!("cluster {name} is not in the registry")),
        Err(error) => Err(error.to_string()),
    };
    if let Ok(entry) = &entry
        && entry.confirm.is_none()
    {
        let rounds = group
            .into_iter()
            .map(|(message, confirmation)| Round {
                message,
                confirmation: Some(confirmation),
                seen: None,
                changed: false,
                delay_secs: None,
                calls: Vec::new(),
                not_enabled: true,
            })
            .collect();
        return (rounds, (name, 0));
    }
    let options = entry
        .as_ref()
        .ok()
        .and_then(|e| e.confirm)
        .unwrap_or_default();
    let looking = group.iter().any(|(_, c)| c.ended.is_none());
    let (read, requests) = match (&entry, looking) {
        (Ok(entry), true) => {
            let reading = std::pin::pin!(read_cluster(ports.clusters, entry, options));
            match rules.cluster_budget {
                None => reading.await,
                Some(budget) => {
                    let deadline = std::pin::pin!(ports.clock.sleep(budget));
                    match select(reading, deadline).await {
                        Either::Left((read, _)) => read,
                        Either::Right(((), _)) => (
                            ClusterRead::Failed(format!(
                                "cluster {name} did not answer within {} s",
                                budget.as_secs()
                            )),
                            look_cost(entry, options),
                        ),
                    }
                }
            }
        }
        (Err(reason), true) => (ClusterRead::Failed(reason.clone()), 0),
        (_, false) => (ClusterRead::Objects(ClusterObjects::default()), 0),
    };
    let cost = entry.as_ref().map_or(3, |e| look_cost(e, options));
    let aliases = entry
        .as_ref()
        .map(|e| e.host_aliases.clone())
        .unwrap_or_default();
    let rounds = group.into_iter().map(|(message, confirmation)| {
        let read = &read;
        let aliases = &aliases;
        async move {
            round(
                ports,
                rules,
                memory,
                message,
                confirmation,
                Look {
                    read,
                    aliases,
                    helm_releases: options.helm_releases,
                    requests,
                    cost,
                },
                now,
            )
            .await
        }
    });
    (join_all(rounds).await, (name, requests))
}

struct Look<'a> {
    read: &'a ClusterRead,
    aliases: &'a BTreeMap<String, String>,
    helm_releases: bool,
    /// Requests this round's read made.
    requests: u32,
    /// Requests one read costs.
    cost: u32,
}

/// One message's round before it is settled (the summaries of the batch come in between).
struct Round<'m> {
    message: &'m QueueMessage,
    confirmation: Option<Confirmation>,
    seen: Option<Observation>,
    changed: bool,
    /// Look again (or post again) after this long; `None` once it ended and is reported.
    delay_secs: Option<u32>,
    calls: Vec<GitLabCall>,
    /// The cluster does not confirm: the message is dropped.
    not_enabled: bool,
}

async fn round<'m, R, C, G, Q, T>(
    ports: &ConfirmPorts<'_, R, C, G, Q, T>,
    rules: &ConfirmRules,
    memory: &ConfirmMemory,
    message: &'m QueueMessage,
    mut confirmation: Confirmation,
    look: Look<'_>,
    now: OffsetDateTime,
) -> Round<'m>
where
    G: GitLabApi,
{
    let mut seen = None;
    let mut changed = false;
    let mut delay_secs = None;
    if confirmation.ended.is_none() {
        let observation = match look.read {
            ClusterRead::Objects(objects) => observe(
                &confirmation.push,
                look.aliases,
                look.helm_releases,
                objects,
            ),
            ClusterRead::Failed(reason) => Observation {
                state: ConfirmState::Pending,
                reason: "cluster_unreadable".into(),
                message: format!("could not read the cluster: {reason}"),
                object: None,
                applied_at: None,
            },
        };
        confirmation.checks = confirmation.checks.saturating_add(1);
        confirmation.requests = confirmation.requests.saturating_add(look.requests);
        changed = confirmation.last.as_ref().is_none_or(|last| {
            last.state != observation.state || last.reason != observation.reason
        });
        let started = time::OffsetDateTime::parse(
            &confirmation.started_at,
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap_or(now);
        match next_step(
            &rules.policy,
            started,
            confirmation.checks,
            confirmation.requests,
            look.cost,
            &observation,
            now,
        ) {
            Step::Recheck { delay_secs: delay } => delay_secs = Some(delay),
            Step::End(ended) => {
                confirmation.ended = Some(ended);
                confirmation.summary_due = rules.summary_name.is_some();
            }
        }
        confirmation.last = Some(observation.clone());
        seen = Some(observation);
    }
    let posted = post::report(ports.gitlab, rules, memory, &mut confirmation, message, now).await;
    // The next look (if any) is this process's.
    confirmation.scheduled_by = rules.instance.clone();
    if let Some(retry) = posted.retry_secs {
        delay_secs = Some(delay_secs.map_or(retry, |d| d.max(retry)));
    }
    Round {
        message,
        confirmation: Some(confirmation),
        seen,
        changed,
        delay_secs,
        calls: posted.calls,
        not_enabled: false,
    }
}

/// Settle one round: a re-check is a new delayed message, an end is acknowledged (or its
/// unpostable final status dead-lettered), then the message is acknowledged.
async fn settle_round(queue: &impl Settle, round: Round<'_>) -> ConfirmedMessage {
    let Round {
        message,
        confirmation,
        seen,
        changed,
        mut delay_secs,
        calls,
        not_enabled,
    } = round;
    let Some(confirmation) = confirmation else {
        // Not reached: unreadable messages are settled when they are read.
        return ConfirmedMessage {
            message_id: message.id.clone(),
            confirmation: None,
            seen,
            changed,
            step: ConfirmStep::Unreadable {
                reason: String::new(),
            },
            calls,
            settled: settle_done(queue, message).await,
        };
    };
    if not_enabled {
        return ConfirmedMessage {
            message_id: message.id.clone(),
            confirmation: Some(confirmation),
            seen,
            changed,
            step: ConfirmStep::NotEnabled,
            calls,
            settled: settle_done(queue, message).await,
        };
    }
    // An end whose summary is still owed comes back for it.
    if confirmation.ended.is_some() && confirmation.summary_due && delay_secs.is_none() {
        delay_secs = Some(FALLBACK_DELAY_SECS);
    }
    let ports_queue = queue;
    let (step, settled) = match (&confirmation.ended, delay_secs) {
        (Some(_), None) => match &confirmation.report {
            Report::Failed { reason, status } => {
                let reason = reason.clone();
                let mut redrivable = confirmation.clone();
                redrivable.report = Report::Active;
                redrivable.post_failures = 0;
                let settled = dead_letter(
                    ports_queue,
                    message,
                    &redrivable.to_json(),
                    &format!("the commit status could not be posted: {reason}"),
                    Some((&confirmation, *status)),
                )
                .await;
                (ConfirmStep::DeadLettered { reason }, settled)
            }
            _ => (ConfirmStep::Ended, settle_done(ports_queue, message).await),
        },
        (_, Some(delay)) => (
            ConfirmStep::Rechecked { delay_secs: delay },
            reschedule(ports_queue, message, &confirmation, delay).await,
        ),
        // Not ended and no delay cannot happen (a look always ends or reschedules).
        (None, None) => (
            ConfirmStep::Rechecked {
                delay_secs: FALLBACK_DELAY_SECS,
            },
            reschedule(ports_queue, message, &confirmation, FALLBACK_DELAY_SECS).await,
        ),
    };
    ConfirmedMessage {
        message_id: message.id.clone(),
        confirmation: Some(confirmation),
        seen,
        changed,
        step,
        calls,
        settled,
    }
}

async fn settle_done(queue: &impl Settle, message: &QueueMessage) -> Settled {
    match queue.acknowledge(message).await {
        Ok(()) => Settled::Acknowledged,
        Err(error) => Settled::Failed {
            error: error.to_string(),
        },
    }
}

/// The next round as a new delayed message, then this one acknowledged (in that order: a
/// confirmation is never dropped; at worst a round runs twice).
async fn reschedule(
    queue: &impl Settle,
    message: &QueueMessage,
    confirmation: &Confirmation,
    delay_secs: u32,
) -> Settled {
    if let Err(error) = queue.schedule_confirmation(confirmation, delay_secs).await {
        return in_place(
            queue,
            message,
            format!("could not schedule the next look: {error}"),
        )
        .await;
    }
    Settled::FollowedUp {
        retried: true,
        dead_lettered: false,
        acknowledge_error: queue
            .acknowledge(message)
            .await
            .err()
            .map(|e| e.to_string()),
    }
}

async fn dead_letter(
    queue: &impl Settle,
    message: &QueueMessage,
    body: &str,
    reason: &str,
    about: Option<(&Confirmation, Option<u16>)>,
) -> Settled {
    let reason = DeadLetterReason {
        reason: reason.to_string(),
        status: about.and_then(|(_, status)| status),
        cluster: about.map(|(c, _)| c.cluster.clone()),
        key: about.map(|(c, _)| c.push.key.clone()),
        // A final status that could not be posted: the message's own receives are the story.
        attempts: None,
    };
    if let Err(error) = queue.dead_letter(message, body, &reason).await {
        return in_place(queue, message, format!("could not dead-letter it: {error}")).await;
    }
    Settled::FollowedUp {
        retried: false,
        dead_lettered: true,
        acknowledge_error: queue
            .acknowledge(message)
            .await
            .err()
            .map(|e| e.to_string()),
    }
}

async fn in_place(queue: &impl Settle, message: &QueueMessage, because: String) -> Settled {
    match queue.retry_in_place(message, FALLBACK_DELAY_SECS).await {
        Ok(()) => Settled::RetriedInPlace {
            delay_secs: FALLBACK_DELAY_SECS,
            because: Some(because),
        },
        Err(error) => Settled::Failed {
            error: format!("{because}; and could not change its visibility: {error}"),
        },
    }
}

#[cfg(test)]
#[path = "confirm_test.rs"]
mod tests;
