//! The confirm stage in `fluxrelay serve`: a worker polling the embedded `confirm` queue
//! (each message deliverable after its delay), running core's confirm handler, and
//! writing each confirmation's timeline to the push journal (`fluxrelay explain`).

use std::sync::Arc;
use std::time::Duration;

use fluxrelay_adapters::clock::TokioClock;
use fluxrelay_adapters::embedded::{CONFIRM_QUEUE, JournalEntry};
use fluxrelay_adapters::outcome_log;
use fluxrelay_core::confirm::message::Report;
use fluxrelay_core::handlers::confirm::{ConfirmPorts, ConfirmReport, ConfirmStep, handle_confirm};
use fluxrelay_core::ports::QueueError;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::workers::{Workers, queue_messages};

/// Confirmations handled per batch (a cluster's are read together, once).
const CONFIRM_BATCH: usize = 200;
/// Longer than a batch can take: each cluster's reads are bounded by the budget below,
/// and each GitLab call by its client's timeout.
const CONFIRM_VISIBILITY: Duration = Duration::from_secs(180);
/// How long one cluster's reads may take in a confirm batch.
pub const CONFIRM_CLUSTER_BUDGET: Duration = Duration::from_secs(30);

impl Workers {
    /// Confirm one batch; `Ok(n)` is how many messages it received.
    pub async fn confirm_once(&self) -> Result<usize, QueueError> {
        let received = self
            .queue
            .receive_async(CONFIRM_QUEUE, CONFIRM_BATCH, CONFIRM_VISIBILITY)
            .await?;
        if received.is_empty() {
            return Ok(0);
        }
        let messages = queue_messages(CONFIRM_QUEUE, &received);
        let settle = self
            .settle(&self.confirm_wake)
            .notifying_confirmations(self.confirm_wake.clone());
        let ports = ConfirmPorts {
            registry: &self.registry,
            clusters: &self.clusters,
            gitlab: &self.gitlab,
            queue: &settle,
            clock: &TokioClock,
        };
        let report = handle_confirm(
            &ports,
            &self.confirm_rules,
            &self.confirm_memory,
            &messages,
            OffsetDateTime::now_utc(),
        )
        .await;
        outcome_log::confirm(&report);
        self.metrics.confirm.record(&report);
        self.journal(confirm_journal(&report)).await;
        Ok(received.len())
    }
}

/// The timeline of each confirmation: a look that changed the state, each status posted,
/// and how it ended (the last line of the cluster's story in `explain`).
fn confirm_journal(report: &ConfirmReport) -> Vec<JournalEntry> {
    let mut entries = Vec::new();
    for message in &report.messages {
        let Some(confirmation) = &message.confirmation else {
            continue;
        };
        let key = &confirmation.push.key;
        let cluster = Some(confirmation.cluster.as_str());
        for call in &message.calls {
            let stage = if call.status.starts_with('2') {
                "status"
            } else {
                "status_failed"
            };
            let detail = match (&call.name, call.state) {
                (Some(name), Some(state)) => {
                    format!(
                        "{name}: {} (GitLab answered {})",
                        state.as_str(),
                        call.status
                    )
                }
                _ => format!("{} (GitLab answered {})", call.endpoint, call.status),
            };
            entries.push(JournalEntry::new(key, cluster, stage, detail));
        }
        if let (Some(seen), None) = (&message.seen, message.ended())
            && message.changed
        {
            let detail = format!(
                "{}: {} (look {})",
                serde_json::to_value(seen.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                seen.message,
                confirmation.checks
            );
            entries.push(JournalEntry::new(key, cluster, "confirming", detail));
        }
        if let Some(ended) = message.ended() {
            let stage = match ended.outcome {
                fluxrelay_core::confirm::message::Outcome::Success => "applied",
                fluxrelay_core::confirm::message::Outcome::Failed => "apply_failed",
                fluxrelay_core::confirm::message::Outcome::Superseded => "overtaken",
                fluxrelay_core::confirm::message::Outcome::TimedOut => "timed_out",
            };
            let mut detail = ended.message.clone();
            if let Some(object) = &ended.object {
                detail = format!("{object}: {detail}");
            }
            if let Some(seconds) = confirmation.push_to_applied_secs() {
                detail.push_str(&format!(" (push to applied: {seconds:.1} s)"));
            }
            match (&message.step, &confirmation.report) {
                (ConfirmStep::DeadLettered { reason }, _) => {
                    detail.push_str(&format!(
                        "; its status could not be posted and is dead-lettered: {reason}"
                    ));
                }
                (_, Report::NotConfigured) => {
                    detail.push_str("; no GitLab token for this instance: no status posted");
                }
                _ => {}
            }
            entries.push(JournalEntry::new(key, cluster, stage, detail));
        }
    }
    entries
}

/// Confirm until `stop` turns true; the batch in hand is finished first, and what is left
/// stays queued for the next start.
pub async fn run_confirm(workers: Arc<Workers>, stop: watch::Receiver<bool>) {
    crate::workers::poll_until_stopped("confirm", &workers.confirm_wake, stop, || {
        workers.confirm_once()
    })
    .await;
}
