//! Route: each push on the intake queue → one `Dispatch` per subscribed cluster, and one
//! per cluster whose registry entry cannot be used (see [`dispatch_clusters`]).
//!
//! The intake queue also carries what an EventBridge rule puts there: Amazon ECR `ECR Image
//! Action` events, read by core's parser ([`read_intake`]) into the same `Push`.

use futures_util::future::join_all;

use crate::artifacts::ecr;
use crate::gitlab::ParsedEvent;
use crate::gitlab_api::compare::{Compared, compare_push, wants_compare};
use crate::outcome::retry::RetryPolicy;
use crate::outcome::settle::{Settled, route_settlement, settle};
use crate::ports::{DispatchPublisher, GitLabApi, NoGitLab, QueueMessage, RouteTable, Settle};
use crate::push::{Dispatch, Push};
use crate::registry::RouteListing;
use crate::routing::dispatch_clusters;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteVerdict {
    /// Dispatches for these clusters are on the dispatch queue (possibly none subscribe;
    /// unusable entries included).
    Routed { clusters: Vec<String> },
    /// Not done; the message stays on the intake queue and comes back.
    Failed { reason: String },
    /// An EventBridge event that is not a push (an image deleted, a failed push, a push by
    /// digest): acknowledged, routed nowhere.
    Ignored { reason: String },
}

/// What an intake message holds: a push, or an EventBridge event that is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntakeBody {
    Push(Box<Push>),
    Ignored(String),
}

/// Reads an intake message: fluxrelay's own `Push`, or an EventBridge ECR event (the
/// `Push` it reports). `Err` says why it is neither.
pub fn read_intake(body: &str) -> Result<IntakeBody, String> {
    let error = match Push::from_json(body) {
        Ok(push) => return Ok(IntakeBody::Push(Box::new(push))),
        Err(error) => error,
    };
    if !ecr::is_eventbridge_event(body) {
        return Err(format!("not a Push message: {error}"));
    }
    match ecr::parse(body.as_bytes()) {
        Ok(ParsedEvent::Pushes(pushes)) => match <[Push; 1]>::try_from(pushes) {
            Ok([push]) => Ok(IntakeBody::Push(Box::new(push))),
            Err(_) => Err("an ECR event gave other than one push".to_string()),
        },
        Ok(ParsedEvent::Ignored { reason }) => Ok(IntakeBody::Ignored(reason)),
        Err(malformed) => Err(format!(
            "an EventBridge ECR event that cannot be read: {malformed}"
        )),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedMessage {
    pub message_id: String,
    pub push: Option<Push>,
    pub verdict: RouteVerdict,
    /// The clusters of a `Routed` verdict whose registry entry cannot be used: their
    /// dispatch will be dead-lettered with the entry's problem (logged at warn).
    pub unusable: Vec<String>,
    /// How the intake message was settled (`None` until [`settle_route`] ran).
    pub settled: Option<Settled>,
    /// Where the changed paths that `paths` subscriptions were matched against came from.
    pub paths: PathsSource,
}

/// Where a push's changed paths came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PathsSource {
    /// The payload's commits (no `paths` subscription cares, or no GitLab API token for
    /// the instance: then a force-push shows only its new commits' paths).
    #[default]
    Payload,
    /// GitLab's compare API, the two trees diffed (`straight=true`).
    Compare,
    /// The compare call failed: the paths are unknown, so every `paths` subscription takes
    /// the push (a trigger too many costs a fetch; one too few, a stale cluster).
    CompareFailed { reason: String },
    /// Left to dispatch, which holds the GitLab token (AWS: route holds no credential): the
    /// push went to every `paths` subscriber its other rules take, each dispatch marked
    /// `verify_paths`.
    DeferredToDispatch,
}

/// Where route takes the changed paths from, when a `paths` subscription depends on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathsFrom {
    /// The payload's commits, or GitLab's compare through route's own `GitLabApi`.
    Here,
    /// Dispatch compares (route holds no GitLab token): route routes as if the paths
    /// were unknown and marks the dispatches.
    Dispatch,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteReport {
    pub messages: Vec<RoutedMessage>,
}

impl RouteReport {
    /// Ids to report as batch item failures: the messages that are to come back.
    pub fn failed_ids(&self) -> Vec<&str> {
        self.messages
            .iter()
            .filter(|m| match &m.settled {
                Some(settled) => settled.comes_back(),
                None => matches!(m.verdict, RouteVerdict::Failed { .. }),
            })
            .map(|m| m.message_id.as_str())
            .collect()
    }
}

/// Route a batch, then settle each intake message on its queue (`outcome::settle`):
/// routed is acknowledged, a failure comes back after a backoff until it is dead-lettered
/// with its reason.
pub async fn route_and_settle(
    registry: &impl RouteTable,
    publisher: &impl DispatchPublisher,
    intake: &impl Settle,
    policy: &RetryPolicy,
    messages: &[QueueMessage],
) -> RouteReport {
    route_and_settle_with(registry, publisher, intake, policy, &NoGitLab, messages).await
}

/// [`route_and_settle`] with [`handle_route_deferring_paths`]: dispatch takes the changed
/// paths from GitLab's compare API (AWS, where route holds no credential).
pub async fn route_and_settle_deferring_paths(
    registry: &impl RouteTable,
    publisher: &impl DispatchPublisher,
    intake: &impl Settle,
    policy: &RetryPolicy,
    messages: &[QueueMessage],
) -> RouteReport {
    let mut report = handle_route_deferring_paths(registry, publisher, messages).await;
    settle_route(intake, policy, messages, &mut report).await;
    report
}

/// [`route_and_settle`], taking changed paths from GitLab's compare API where a `paths`
/// subscription depends on them and the instance has an API token.
pub async fn route_and_settle_with(
    registry: &impl RouteTable,
    publisher: &impl DispatchPublisher,
    intake: &impl Settle,
    policy: &RetryPolicy,
    gitlab: &impl GitLabApi,
    messages: &[QueueMessage],
) -> RouteReport {
    let mut report = handle_route_with(registry, publisher, gitlab, messages).await;
    settle_route(intake, policy, messages, &mut report).await;
    report
}

/// Settle each routed message (`report` comes from [`handle_route`] over `messages`).
///
/// The messages are settled at once, not one after another: each one's settlement depends
/// only on its own verdict (routing already failed every later message of a failed one's
/// group), so their order is nobody's business, and a batch's deletes then share the
/// queue's round trips (one group commit in `serve` instead of one per message).
pub async fn settle_route(
    intake: &impl Settle,
    policy: &RetryPolicy,
    messages: &[QueueMessage],
    report: &mut RouteReport,
) {
    let settlements = messages
        .iter()
        .zip(&report.messages)
        .map(|(message, routed)| {
            let failure = match &routed.verdict {
                RouteVerdict::Routed { .. } | RouteVerdict::Ignored { .. } => None,
                RouteVerdict::Failed { reason } => Some(reason.as_str()),
            };
            let key = routed.push.as_ref().map(|push| push.key.as_str());
            let settlement = route_settlement(policy, message, failure, key);
            async move { settle(intake, message, &settlement).await }
        });
    let settled = join_all(settlements).await;
    for (routed, settled) in report.messages.iter_mut().zip(settled) {
        routed.settled = Some(settled);
    }
}

/// Routes messages in order. A failure fails that message and every later message of the
/// same group, so a project's pushes keep their order. A body that is not a `Push` fails
/// too, and is dead-lettered with that reason once its attempts are used up.
pub async fn handle_route(
    registry: &impl RouteTable,
    queue: &impl DispatchPublisher,
    messages: &[QueueMessage],
) -> RouteReport {
    handle_route_with(registry, queue, &NoGitLab, messages).await
}

/// [`handle_route`] with a GitLab API for changed paths.
pub async fn handle_route_with(
    registry: &impl RouteTable,
    queue: &impl DispatchPublisher,
    gitlab: &impl GitLabApi,
    messages: &[QueueMessage],
) -> RouteReport {
    route_messages(registry, queue, gitlab, PathsFrom::Here, messages).await
}

/// [`handle_route`] for a route that holds no GitLab token while dispatch does (AWS with
/// a GitLab secret): a push whose changed paths matter goes to every `paths` subscriber
/// its other rules take, and dispatch decides with GitLab's compare.
pub async fn handle_route_deferring_paths(
    registry: &impl RouteTable,
    queue: &impl DispatchPublisher,
    messages: &[QueueMessage],
) -> RouteReport {
    route_messages(registry, queue, &NoGitLab, PathsFrom::Dispatch, messages).await
}

async fn route_messages(
    registry: &impl RouteTable,
    queue: &impl DispatchPublisher,
    gitlab: &impl GitLabApi,
    paths_from: PathsFrom,
    messages: &[QueueMessage],
) -> RouteReport {
    let clusters = match registry.routes().await {
        Ok(clusters) => clusters,
        Err(error) => {
            let reason = error.to_string();
            return RouteReport {
                messages: messages
                    .iter()
                    .map(|m| RoutedMessage {
                        message_id: m.id.clone(),
                        push: match read_intake(&m.body) {
                            Ok(IntakeBody::Push(push)) => Some(*push),
                            _ => None,
                        },
                        verdict: RouteVerdict::Failed {
                            reason: reason.clone(),
                        },
                        unusable: Vec::new(),
                        settled: None,
                        paths: PathsSource::Payload,
                    })
                    .collect(),
            };
        }
    };
    let mut failed_groups: Vec<&str> = Vec::new();
    let mut report = RouteReport::default();
    for message in messages {
        let mut intake = read_intake(&message.body);
        let mut paths = PathsSource::Payload;
        let verdict = if failed_groups.contains(&message.group.as_str()) {
            RouteVerdict::Failed {
                reason: "held behind an earlier failed message of the same project".to_string(),
            }
        } else {
            match &mut intake {
                Err(reason) => RouteVerdict::Failed {
                    reason: reason.clone(),
                },
                Ok(IntakeBody::Ignored(reason)) => RouteVerdict::Ignored {
                    reason: reason.clone(),
                },
                Ok(IntakeBody::Push(push)) => {
                    paths = match paths_from {
                        PathsFrom::Here => compared_paths(gitlab, push, &clusters).await,
                        PathsFrom::Dispatch => deferred_paths(push, &clusters),
                    };
                    let verify = paths == PathsSource::DeferredToDispatch;
                    route_one(queue, push, &clusters, verify).await
                }
            }
        };
        let unusable = match &verdict {
            RouteVerdict::Routed { clusters: routed } => routed
                .iter()
                .filter(|name| clusters.unusable.contains(name))
                .cloned()
                .collect(),
            RouteVerdict::Failed { .. } | RouteVerdict::Ignored { .. } => Vec::new(),
        };
        let push = match intake {
            Ok(IntakeBody::Push(push)) => Some(*push),
            _ => None,
        };
        if matches!(verdict, RouteVerdict::Failed { .. })
            && !failed_groups.contains(&message.group.as_str())
        {
            failed_groups.push(&message.group);
        }
        report.messages.push(RoutedMessage {
            message_id: message.id.clone(),
            push,
            verdict,
            unusable,
            settled: None,
            paths,
        });
    }
    report
}

/// When a `paths` subscription depends on them and the instance has an API token, the
/// push's changed paths become GitLab's straight compare of `before..after` (unknown when
/// the call fails); otherwise they stay the payload's.
async fn compared_paths(
    gitlab: &impl GitLabApi,
    push: &mut Push,
    clusters: &RouteListing,
) -> PathsSource {
    if !wants_compare(push, clusters) {
        return PathsSource::Payload;
    }
    match compare_push(gitlab, push).await {
        Compared::NotConfigured => PathsSource::Payload,
        Compared::Paths(paths) => {
            push.changed_paths = Some(paths);
            PathsSource::Compare
        }
        Compared::Failed { reason } => {
            push.changed_paths = None;
            PathsSource::CompareFailed { reason }
        }
    }
}

/// With dispatch comparing: when a `paths` subscription could decide, route treats the
/// paths as unknown (every `paths` subscription its other rules take gets the push) and
/// dispatch re-checks. The push keeps the payload's paths, dispatch's fallback when it has
/// no token for the instance.
fn deferred_paths(push: &Push, clusters: &RouteListing) -> PathsSource {
    if wants_compare(push, clusters) {
        PathsSource::DeferredToDispatch
    } else {
        PathsSource::Payload
    }
}

async fn route_one(
    queue: &impl DispatchPublisher,
    push: &Push,
    clusters: &RouteListing,
    verify_paths: bool,
) -> RouteVerdict {
    let clusters_for = if verify_paths {
        let mut unknown_paths = push.clone();
        unknown_paths.changed_paths = None;
        dispatch_clusters(&unknown_paths, clusters)
    } else {
        dispatch_clusters(push, clusters)
    };
    let dispatches: Vec<Dispatch> = clusters_for
        .into_iter()
        .map(|cluster| Dispatch {
            verify_paths,
            ..Dispatch::new(cluster, push.clone())
        })
        .collect();
    if !dispatches.is_empty()
        && let Err(error) = queue.publish_dispatches(&dispatches).await
    {
        return RouteVerdict::Failed {
            reason: format!("could not enqueue dispatches: {error}"),
        };
    }
    RouteVerdict::Routed {
        clusters: dispatches.into_iter().map(|d| d.cluster).collect(),
    }
}

#[cfg(test)]
#[path = "route_test.rs"]
mod tests;

#[cfg(test)]
#[path = "route_artifacts_test.rs"]
mod artifact_tests;
