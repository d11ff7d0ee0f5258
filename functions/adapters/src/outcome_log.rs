//! One log line per outcome, the same for the Lambda functions and `fluxrelay serve`: each
//! names the delivery key, project, ref and cluster, so one push can be followed by key.

use fluxrelay_core::handlers::dispatch::{DispatchReport, MessageOutcome, Verdict};
use fluxrelay_core::handlers::route::{RouteReport, RouteVerdict};
use fluxrelay_core::ingest::{Accepted, IngestError};

pub fn ingest(result: &Result<Accepted, IngestError>) {
    match result {
        Ok(Accepted::Enqueued { keys }) => {
            tracing::info!(outcome = "accepted", keys = keys.join(","))
        }
        Ok(Accepted::Ignored { reason }) => tracing::info!(outcome = "ignored", reason),
        Err(IngestError::EnqueueFailed(error)) => {
            tracing::error!(outcome = "enqueue_failed", status = 503u16, error = %error)
        }
        Err(error) => {
            tracing::warn!(outcome = "rejected", status = error.status(), reason = %error)
        }
    }
}

pub fn route(report: &RouteReport) {
    for message in &report.messages {
        let (key, project, git_ref) = message
            .push
            .as_ref()
            .map(|p| (p.key.as_str(), p.project.path.as_str(), p.git_ref.as_str()))
            .unwrap_or_default();
        match &message.verdict {
            RouteVerdict::Routed { clusters } => tracing::info!(
                outcome = "routed",
                key,
                project,
                git_ref,
                clusters = if clusters.is_empty() {
                    "(no cluster subscribes)".to_string()
                } else {
                    clusters.join(",")
                },
                message_id = message.message_id
            ),
            RouteVerdict::Failed { reason } => tracing::warn!(
                outcome = "route_failed",
                key,
                project,
                git_ref,
                reason,
                message_id = message.message_id
            ),
        }
        if !message.unusable.is_empty() {
            // Their entries are broken: dispatch dead-letters these with the entry's problem.
            tracing::warn!(
                outcome = "routed_to_unusable",
                key,
                project,
                git_ref,
                clusters = message.unusable.join(","),
                message_id = message.message_id,
                "sent to clusters whose registry entry cannot be used; fix the entry, then redrive their dead letters",
            );
        }
    }
}

/// Every call made to a cluster.
pub fn targets(report: &DispatchReport) {
    for target in &report.targets {
        match &target.result {
            Ok(()) => tracing::info!(
                outcome = "triggered",
                cluster = target.cluster,
                target = target.target,
                keys = target.push_keys.join(","),
                status = 200u16
            ),
            Err(failure) => tracing::warn!(
                outcome = "trigger_failed",
                cluster = target.cluster,
                target = target.target,
                keys = target.push_keys.join(","),
                status = failure.status,
                reason = failure.reason
            ),
        }
    }
}

/// Key, project, ref and cluster of a dispatch message (empty when its body was unreadable).
pub fn dispatch_fields(message: &MessageOutcome) -> (&str, &str, &str, &str) {
    message
        .dispatch
        .as_ref()
        .map(|d| {
            (
                d.push.key.as_str(),
                d.push.project.path.as_str(),
                d.push.git_ref.as_str(),
                d.cluster.as_str(),
            )
        })
        .unwrap_or_default()
}

/// The verdict of one dispatch message. A dead letter is logged by `dead_lettered` once it
/// is safely on the dead-letter queue, or by `dead_letter_failed`.
pub fn dispatch(message: &MessageOutcome) {
    let (key, project, git_ref, cluster) = dispatch_fields(message);
    match &message.verdict {
        Verdict::Delivered { targets } => tracing::info!(
            outcome = "delivered",
            key,
            project,
            git_ref,
            cluster,
            targets = targets.join(",")
        ),
        Verdict::NothingToTrigger => {
            let skipped: Vec<String> = message
                .skipped
                .iter()
                .map(|s| format!("{}: {}", s.object, s.reason))
                .collect();
            tracing::info!(
                outcome = "nothing_to_trigger",
                key,
                project,
                git_ref,
                cluster,
                skipped = skipped.join("; ")
            );
        }
        Verdict::Retry { delay_secs, reason } => tracing::warn!(
            outcome = "retry",
            key,
            project,
            git_ref,
            cluster,
            delay_secs,
            reason
        ),
        Verdict::DeadLetter { .. } => {}
    }
}

pub fn dead_lettered(message: &MessageOutcome, reason: &str, status: Option<u16>) {
    let (key, project, git_ref, cluster) = dispatch_fields(message);
    tracing::error!(
        outcome = "dead_lettered",
        key,
        project,
        git_ref,
        cluster,
        status,
        reason
    );
}

pub fn dead_letter_failed(message: &MessageOutcome, reason: &str, error: &dyn std::fmt::Display) {
    let (key, _, _, cluster) = dispatch_fields(message);
    tracing::error!(outcome = "dead_letter_failed", key, cluster, reason, error = %error);
}
