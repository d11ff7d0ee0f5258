//! Route: each push on the intake queue → one `Dispatch` per subscribed cluster, and one
//! per cluster whose registry entry cannot be used (see [`dispatch_clusters`]).

use crate::outcome::retry::RetryPolicy;
use crate::outcome::settle::{Settled, route_settlement, settle};
use crate::ports::{DispatchPublisher, QueueMessage, RouteTable, Settle};
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
    let mut report = handle_route(registry, publisher, messages).await;
    settle_route(intake, policy, messages, &mut report).await;
    report
}

/// Settle each routed message (`report` comes from [`handle_route`] over `messages`).
pub async fn settle_route(
    intake: &impl Settle,
    policy: &RetryPolicy,
    messages: &[QueueMessage],
    report: &mut RouteReport,
) {
    for (message, routed) in messages.iter().zip(&mut report.messages) {
        let failure = match &routed.verdict {
            RouteVerdict::Routed { .. } => None,
            RouteVerdict::Failed { reason } => Some(reason.as_str()),
        };
        let key = routed.push.as_ref().map(|push| push.key.as_str());
        let settlement = route_settlement(policy, message, failure, key);
        routed.settled = Some(settle(intake, message, &settlement).await);
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
    let clusters = match registry.routes().await {
        Ok(clusters) => clusters,
        Err(error) => {
            let reason = error.to_string();
            return RouteReport {
                messages: messages
                    .iter()
                    .map(|m| RoutedMessage {
                        message_id: m.id.clone(),
                        push: Push::from_json(&m.body).ok(),
                        verdict: RouteVerdict::Failed {
                            reason: reason.clone(),
                        },
                        unusable: Vec::new(),
                        settled: None,
                    })
                    .collect(),
            };
        }
    };
    let mut failed_groups: Vec<&str> = Vec::new();
    let mut report = RouteReport::default();
    for message in messages {
        let push = Push::from_json(&message.body);
        let verdict = if failed_groups.contains(&message.group.as_str()) {
            RouteVerdict::Failed {
                reason: "held behind an earlier failed message of the same project".to_string(),
            }
        } else {
            match &push {
                Err(error) => RouteVerdict::Failed {
                    reason: format!("not a Push message: {error}"),
                },
                Ok(push) => route_one(queue, push, &clusters).await,
            }
        };
        let unusable = match &verdict {
            RouteVerdict::Routed { clusters: routed } => routed
                .iter()
                .filter(|name| clusters.unusable.contains(name))
                .cloned()
                .collect(),
            RouteVerdict::Failed { .. } => Vec::new(),
        };
        if matches!(verdict, RouteVerdict::Failed { .. })
            && !failed_groups.contains(&message.group.as_str())
        {
            failed_groups.push(&message.group);
        }
        report.messages.push(RoutedMessage {
            message_id: message.id.clone(),
            push: push.ok(),
            verdict,
            unusable,
            settled: None,
        });
    }
    report
}

async fn route_one(
    queue: &impl DispatchPublisher,
    push: &Push,
    clusters: &RouteListing,
) -> RouteVerdict {
    let dispatches: Vec<Dispatch> = dispatch_clusters(push, clusters)
        .into_iter()
        .map(|cluster| Dispatch::new(cluster, push.clone()))
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
