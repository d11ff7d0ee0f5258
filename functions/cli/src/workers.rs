//! The route and dispatch handlers as in-process workers polling the embedded queue: the
//! same handlers as the Lambda functions, settled the way SQS settles them (delete, a
//! visibility backoff, or the dead-letter table with a reason).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fluxrelay_adapters::cluster::KubeClusters;
use fluxrelay_adapters::embedded::{
    DISPATCH_QUEUE, DeadLetterReason, EmbeddedQueue, INTAKE_QUEUE, JournalEntry, Received,
};
use fluxrelay_adapters::file_registry::FileRegistry;
use fluxrelay_adapters::outcome_log;
use fluxrelay_core::handlers::dispatch::{
    DispatchMessage, DispatchOptions, DispatchReport, Verdict, handle_dispatch_with,
};
use fluxrelay_core::handlers::route::{IntakeMessage, RouteReport, RouteVerdict, handle_route};
use fluxrelay_core::outcome::denials::Denials;
use fluxrelay_core::outcome::retry::RetryPolicy;
use fluxrelay_core::ports::QueueError;
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};

use crate::metrics::Metrics;

/// SQS hands a Lambda at most 10 messages; the embedded queue has no such limit, and a
/// bigger batch costs fewer transactions and lets dispatch coalesce a whole backlog of one
/// cluster's pushes into one call per Receiver (the handlers take batches of any size).
const INTAKE_BATCH: usize = 100;
const DISPATCH_BATCH: usize = 1000;
/// Longer than one route of a batch takes (it only reads the registry and enqueues).
const INTAKE_VISIBILITY: Duration = Duration::from_secs(60);
/// Longer than a dispatch batch can take: each kube call is bounded by its connect and
/// read timeouts (5 s + 15 s), and a batch makes a few per cluster.
const DISPATCH_VISIBILITY: Duration = Duration::from_secs(180);
/// As the intake queue's `maxReceiveCount` in `template.yaml`: after that many failed
/// routes a push goes to the intake dead letters.
const INTAKE_MAX_RECEIVES: u32 = 10;
/// How often an idle worker looks for messages whose retry delay has passed; new
/// messages wake it at once.
const IDLE_POLL: Duration = Duration::from_millis(500);

pub struct Workers {
    pub queue: EmbeddedQueue,
    pub registry: FileRegistry,
    pub clusters: KubeClusters,
    pub retry: RetryPolicy,
    pub denials: Denials,
    pub dispatch: DispatchOptions,
    pub metrics: Arc<Metrics>,
    pub route_wake: Arc<Notify>,
    pub dispatch_wake: Arc<Notify>,
}

impl Workers {
    /// Route one batch; `Ok(n)` is how many messages it received.
    pub async fn route_once(&self) -> Result<usize, QueueError> {
        let received = blocking(&self.queue, |queue| {
            queue.receive(INTAKE_QUEUE, INTAKE_BATCH, INTAKE_VISIBILITY)
        })
        .await?;
        if received.is_empty() {
            return Ok(0);
        }
        let messages: Vec<IntakeMessage> = received
            .iter()
            .map(|message| IntakeMessage {
                id: message.receipt.to_string(),
                group: message.group_id.clone(),
                body: message.body.clone(),
            })
            .collect();
        let report = handle_route(&self.registry, &self.queue, &messages).await;
        outcome_log::route(&report);
        let by_receipt = receipts(&received);
        for routed in &report.messages {
            let Some(message) = by_receipt.get(routed.message_id.as_str()) else {
                continue;
            };
            let receipt = message.receipt;
            let settled = match &routed.verdict {
                RouteVerdict::Routed { .. } => {
                    blocking(&self.queue, move |queue| queue.delete(&receipt)).await
                }
                RouteVerdict::Failed { reason } if message.receive_count >= INTAKE_MAX_RECEIVES => {
                    let dead_letter = DeadLetterReason {
                        reason: format!(
                            "could not be routed after {} attempts: {reason}",
                            message.receive_count
                        ),
                        status: None,
                        cluster: None,
                        key: routed.push.as_ref().map(|push| push.key.clone()),
                    };
                    tracing::error!(
                        outcome = "dead_lettered",
                        queue = INTAKE_QUEUE,
                        key = dead_letter.key.as_deref().unwrap_or_default(),
                        reason = dead_letter.reason
                    );
                    blocking(&self.queue, move |queue| {
                        queue.dead_letter(receipt, &dead_letter)
                    })
                    .await
                }
                RouteVerdict::Failed { .. } => {
                    let delay = self
                        .retry
                        .delay_secs(message.receive_count, &routed.message_id);
                    blocking(&self.queue, move |queue| {
                        queue.change_visibility(&receipt, Duration::from_secs(delay.into()))
                    })
                    .await
                }
            };
            if let Err(error) = settled {
                tracing::warn!(outcome = "settle_failed", queue = INTAKE_QUEUE, error = %error);
            }
        }
        self.journal(route_journal(&report)).await;
        self.dispatch_wake.notify_one();
        Ok(received.len())
    }

    /// The journal is for explaining, not for delivery: failing to write it is logged
    /// and the work goes on.
    async fn journal(&self, entries: Vec<JournalEntry>) {
        if let Err(error) = blocking(&self.queue, move |queue| queue.record(&entries)).await {
            tracing::warn!(outcome = "journal_failed", error = %error);
        }
    }

    /// Dispatch one batch; `Ok(n)` is how many messages it received.
    pub async fn dispatch_once(&self) -> Result<usize, QueueError> {
        let received = blocking(&self.queue, |queue| {
            queue.receive(DISPATCH_QUEUE, DISPATCH_BATCH, DISPATCH_VISIBILITY)
        })
        .await?;
        if received.is_empty() {
            return Ok(0);
        }
        if received.len() == DISPATCH_BATCH {
            // There may be more: let an idle worker take the next batch meanwhile.
            self.dispatch_wake.notify_one();
        }
        let messages: Vec<DispatchMessage> = received
            .iter()
            .map(|message| DispatchMessage {
                id: message.receipt.to_string(),
                body: message.body.clone(),
                receive_count: message.receive_count,
            })
            .collect();
        let report = handle_dispatch_with(
            &self.registry,
            &self.clusters,
            &self.retry,
            &self.denials,
            self.dispatch,
            &messages,
            OffsetDateTime::now_utc(),
        )
        .await;
        outcome_log::targets(&report);
        let by_receipt = receipts(&received);
        let mut settled = Vec::with_capacity(report.messages.len());
        for outcome in &report.messages {
            let Some(message) = by_receipt.get(outcome.message_id.as_str()) else {
                settled.push(false);
                continue;
            };
            let receipt = message.receipt;
            outcome_log::dispatch(outcome);
            let result = match &outcome.verdict {
                Verdict::Delivered { .. } | Verdict::NothingToTrigger => {
                    blocking(&self.queue, move |queue| queue.delete(&receipt)).await
                }
                Verdict::Retry { delay_secs, .. } => {
                    let delay = Duration::from_secs((*delay_secs).into());
                    blocking(&self.queue, move |queue| {
                        queue.change_visibility(&receipt, delay)
                    })
                    .await
                }
                Verdict::DeadLetter { reason, status } => {
                    let dispatch = outcome.dispatch.as_ref();
                    let dead_letter = DeadLetterReason {
                        reason: reason.clone(),
                        status: *status,
                        cluster: dispatch.map(|d| d.cluster.clone()),
                        key: dispatch.map(|d| d.push.key.clone()),
                    };
                    let result = blocking(&self.queue, move |queue| {
                        queue.dead_letter(receipt, &dead_letter)
                    })
                    .await;
                    match &result {
                        Ok(()) => outcome_log::dead_lettered(outcome, reason, *status),
                        Err(error) => outcome_log::dead_letter_failed(outcome, reason, error),
                    }
                    result
                }
            };
            if let Err(error) = &result {
                // The message comes back after its visibility timeout: delivered at least
                // once, never lost.
                tracing::warn!(outcome = "settle_failed", queue = DISPATCH_QUEUE, error = %error);
            }
            settled.push(result.is_ok());
        }
        self.metrics
            .record_dispatch(&report, &settled, OffsetDateTime::now_utc());
        self.journal(dispatch_journal(&report)).await;
        Ok(received.len())
    }
}

/// One entry for the push, and one per cluster it was queued for (so `explain` can tell
/// "queued, not dispatched yet" from "never routed there").
fn route_journal(report: &RouteReport) -> Vec<JournalEntry> {
    let mut entries = Vec::new();
    for message in &report.messages {
        let Some(push) = &message.push else { continue };
        let what = format!(
            "accepted {}: {} {} {}..{}",
            push.received_at,
            push.project.path,
            push.git_ref,
            short(&push.before),
            short(&push.after)
        );
        match &message.verdict {
            RouteVerdict::Routed { clusters } => {
                let routed = if clusters.is_empty() {
                    "no cluster subscribes".to_string()
                } else {
                    format!("routed to {}", clusters.join(", "))
                };
                entries.push(JournalEntry::new(
                    &push.key,
                    None,
                    "routed",
                    format!("{what}; {routed}"),
                ));
                for cluster in clusters {
                    entries.push(JournalEntry::new(
                        &push.key,
                        Some(cluster),
                        "queued",
                        "queued for dispatch",
                    ));
                }
            }
            RouteVerdict::Failed { reason } => {
                entries.push(JournalEntry::new(
                    &push.key,
                    None,
                    "route_failed",
                    format!("{what}; {reason}"),
                ));
            }
        }
    }
    entries
}

fn short(sha: &str) -> &str {
    sha.get(..8).unwrap_or(sha)
}

fn dispatch_journal(report: &DispatchReport) -> Vec<JournalEntry> {
    let mut entries = Vec::new();
    for target in &report.targets {
        let (stage, detail) = match &target.result {
            Ok(()) => ("triggered", format!("{}: success", target.target)),
            Err(failure) => (
                "trigger_failed",
                format!("{}: {}", target.target, failure.reason),
            ),
        };
        for key in &target.push_keys {
            let detail = if target.push_keys.len() > 1 {
                format!("{detail} (one call for {} pushes)", target.push_keys.len())
            } else {
                detail.clone()
            };
            entries.push(JournalEntry::new(key, Some(&target.cluster), stage, detail));
        }
    }
    for message in &report.messages {
        let Some(dispatch) = &message.dispatch else {
            continue;
        };
        let key = &dispatch.push.key;
        let cluster = Some(dispatch.cluster.as_str());
        for skip in &message.skipped {
            let detail = format!("{}: {}", skip.object, skip.reason);
            entries.push(JournalEntry::new(key, cluster, "skipped", detail));
        }
        let (stage, detail) = match &message.verdict {
            Verdict::Delivered { targets } => ("delivered", targets.join(", ")),
            Verdict::NothingToTrigger => (
                "nothing_to_trigger",
                "no GitRepository in the cluster tracks this project and ref".to_string(),
            ),
            Verdict::Retry { delay_secs, reason } => {
                ("retry", format!("again in {delay_secs} s: {reason}"))
            }
            Verdict::DeadLetter { reason, status } => (
                "dead_lettered",
                match status {
                    Some(status) => format!("{reason} (status {status})"),
                    None => reason.clone(),
                },
            ),
        };
        entries.push(JournalEntry::new(key, cluster, stage, detail));
    }
    entries
}

fn receipts(received: &[Received]) -> HashMap<String, &Received> {
    received
        .iter()
        .map(|message| (message.receipt.to_string(), message))
        .collect()
}

/// SQLite calls block; run them off the async workers.
async fn blocking<T: Send + 'static>(
    queue: &EmbeddedQueue,
    operation: impl FnOnce(&EmbeddedQueue) -> Result<T, QueueError> + Send + 'static,
) -> Result<T, QueueError> {
    let queue = queue.clone();
    tokio::task::spawn_blocking(move || operation(&queue))
        .await
        .map_err(|error| QueueError::new(format!("embedded queue task: {error}")))?
}

#[derive(Clone, Copy, Debug)]
pub enum Stage {
    Route,
    Dispatch,
}

/// Run `stage` until `stop` turns true; the batch in hand is finished first, and whatever
/// is left stays queued for the next start.
pub async fn run(workers: Arc<Workers>, stage: Stage, mut stop: watch::Receiver<bool>) {
    let wake = match stage {
        Stage::Route => workers.route_wake.clone(),
        Stage::Dispatch => workers.dispatch_wake.clone(),
    };
    let mut failures: u32 = 0;
    while !*stop.borrow() {
        let result = match stage {
            Stage::Route => workers.route_once().await,
            Stage::Dispatch => workers.dispatch_once().await,
        };
        let pause = match result {
            Ok(0) => IDLE_POLL,
            Ok(_) => {
                failures = 0;
                continue;
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                tracing::error!(outcome = "queue_unavailable", stage = ?stage, error = %error);
                IDLE_POLL * failures.min(20)
            }
        };
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => {}
        }
    }
}
