//! One log line per outcome, the same for the Lambda functions and `fluxrelay serve`: each
//! names the delivery key, project, ref and cluster, so one push can be followed by key.

use fluxrelay_core::handlers::dispatch::{AnsweredCalls, DispatchReport, MessageOutcome};
use fluxrelay_core::handlers::route::{RouteReport, RouteVerdict};
use fluxrelay_core::ingest::{Accepted, IngestError};
use fluxrelay_core::outcome::settle::Settled;
use fluxrelay_core::outcome::verdict::{DeadLetterPlan, Verdict};

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
            RouteVerdict::Ignored { reason } => tracing::info!(
                outcome = "ignored",
                queue = "intake",
                reason,
                message_id = message.message_id
            ),
            RouteVerdict::Failed { reason } => {
                let dead = message.settled.as_ref().is_some_and(Settled::dead_lettered);
                if dead {
                    tracing::error!(
                        outcome = "dead_lettered",
                        queue = "intake",
                        key,
                        project,
                        git_ref,
                        reason,
                        message_id = message.message_id
                    );
                } else {
                    tracing::warn!(
                        outcome = "route_failed",
                        key,
                        project,
                        git_ref,
                        reason,
                        message_id = message.message_id
                    );
                }
            }
        }
        if let Some(
            Settled::Failed { error }
            | Settled::AcknowledgeFailed { error }
            | Settled::FollowedUp {
                acknowledge_error: Some(error),
                ..
            },
        ) = &message.settled
        {
            tracing::warn!(
                outcome = "settle_failed",
                queue = "intake",
                key,
                error = error.as_str()
            );
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

/// A dispatch batch's lines: each call that no `delivered` line tells (it failed, or
/// served a push that was not delivered), then each message's verdict. A delivered push's
/// line names the targets its calls answered (`answered`), so a successful call has no
/// line of its own (`AnsweredCalls`: the journal's rule too). A call that served many
/// pushes logs how many, and the key it carried: the full list is `explain`'s (a line
/// stays small however long the burst).
pub fn dispatch(report: &DispatchReport) {
    let calls = report.answered_calls();
    for target in report
        .targets
        .iter()
        .filter(|target| !calls.call_told(target))
    {
        let pushes = target.push_keys.len();
        match &target.result {
            Ok(()) => tracing::info!(
                outcome = "triggered",
                cluster = target.cluster,
                target = target.target,
                key = target.carried,
                project = target.project,
                git_ref = target.git_ref,
                pushes,
                status = 200u16
            ),
            Err(failure) => tracing::warn!(
                outcome = "trigger_failed",
                cluster = target.cluster,
                target = target.target,
                key = target.carried,
                project = target.project,
                git_ref = target.git_ref,
                pushes,
                status = failure.status,
                reason = failure.reason
            ),
        }
    }
    for message in &report.messages {
        verdict(message, &calls);
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

/// The verdict of one dispatch message, and how it was settled.
fn verdict(message: &MessageOutcome, calls: &AnsweredCalls<'_>) {
    let (key, project, git_ref, cluster) = dispatch_fields(message);
    let settled = settled_text(&message.settled);
    match &message.verdict {
        Verdict::Delivered { targets } => tracing::info!(
            outcome = "delivered",
            key,
            project,
            git_ref,
            cluster,
            targets = targets.join(","),
            answered = calls.answered_targets(message, targets),
            confirming = message.confirming,
            settled
        ),
        Verdict::Superseded { by } => tracing::info!(
            outcome = "superseded",
            key,
            project,
            git_ref,
            cluster,
            by,
            confirming = message.confirming,
            settled
        ),
        Verdict::NothingToTrigger => {
            // At most a few skips on the line; `explain` has them all.
            let skipped: Vec<String> = message
                .skipped
                .iter()
                .take(MAX_SKIPS_LOGGED)
                .map(|s| format!("{}: {}", s.object, s.reason))
                .collect();
            tracing::info!(
                outcome = "nothing_to_trigger",
                key,
                project,
                git_ref,
                cluster,
                skips = message.skipped.len(),
                skipped = skipped.join("; "),
                settled
            );
        }
        Verdict::Retry(retry) => tracing::warn!(
            outcome = "retry",
            key,
            project,
            git_ref,
            cluster,
            targets = retry.only.as_ref().map(|only| only.join(",")),
            delay_secs = retry.delay_secs,
            reason = retry.reason,
            settled
        ),
        Verdict::DeadLetter(dead) => dead_lettered(message, dead, settled),
        Verdict::RetryAndDeadLetter(retry, dead) => {
            tracing::warn!(
                outcome = "retry",
                key,
                project,
                git_ref,
                cluster,
                targets = retry.only.as_ref().map(|only| only.join(",")),
                delay_secs = retry.delay_secs,
                reason = retry.reason,
                settled
            );
            dead_lettered(message, dead, settled);
        }
    }
    if let Settled::Failed { error }
    | Settled::RetriedInPlace {
        because: Some(error),
        ..
    } = &message.settled
    {
        tracing::warn!(
            outcome = "settle_failed",
            key,
            cluster,
            error = error.as_str()
        );
    }
}

/// Skips named on a `nothing_to_trigger` line.
const MAX_SKIPS_LOGGED: usize = 5;

fn dead_lettered(message: &MessageOutcome, dead: &DeadLetterPlan, settled: &str) {
    let (key, project, git_ref, cluster) = dispatch_fields(message);
    let outcome = if message.settled.dead_lettered() {
        "dead_lettered"
    } else {
        "dead_letter_failed"
    };
    tracing::error!(
        outcome,
        key,
        project,
        git_ref,
        cluster,
        targets = dead.only.as_ref().map(|only| only.join(",")),
        status = dead.status,
        reason = dead.reason,
        settled
    );
}

fn settled_text(settled: &Settled) -> &'static str {
    match settled {
        Settled::Acknowledged => "acknowledged",
        Settled::AcknowledgeFailed { .. } => "acknowledge_failed",
        Settled::FollowedUp { .. } => "followed_up",
        Settled::RetriedInPlace { .. } => "retried_in_place",
        Settled::Failed { .. } => "settle_failed",
    }
}

/// Each confirmation's round: a state change, each GitLab call, and how it ended (once per
/// confirmation: `outcome="confirmed"` with `result`).
pub fn confirm(report: &fluxrelay_core::handlers::confirm::ConfirmReport) {
    use fluxrelay_core::confirm::message::Report;
    use fluxrelay_core::handlers::confirm::ConfirmStep;
    for message in &report.messages {
        let Some(confirmation) = &message.confirmation else {
            if let ConfirmStep::Unreadable { reason } = &message.step {
                tracing::error!(
                    outcome = "dead_lettered",
                    queue = "confirm",
                    reason,
                    message_id = message.message_id
                );
            }
            continue;
        };
        let push = &confirmation.push;
        let (key, project, git_ref, cluster) = (
            push.key.as_str(),
            push.project.path.as_str(),
            push.git_ref.as_str(),
            confirmation.cluster.as_str(),
        );
        for call in &message.calls {
            tracing::info!(
                outcome = "gitlab_call",
                key,
                cluster,
                endpoint = call.endpoint,
                status = call.status,
                state = call.state.map(|s| s.as_str()),
                name = call.name
            );
        }
        if let Some(ended) = message.ended() {
            let reported = match (&message.step, &confirmation.report) {
                (ConfirmStep::DeadLettered { .. }, _) => "dead_lettered",
                (_, Report::NotConfigured) => "not_configured",
                (_, Report::Failed { .. }) => "failed",
                (_, Report::Active) => "posted",
            };
            let line = |level: tracing::Level| {
                let seconds = confirmation.push_to_applied_secs();
                if level == tracing::Level::INFO {
                    tracing::info!(
                        outcome = "confirmed",
                        result = ended.outcome.as_str(),
                        key,
                        project,
                        git_ref,
                        cluster,
                        reason = ended.reason,
                        object = ended.object,
                        push_to_applied_secs = seconds,
                        checks = confirmation.checks,
                        apiserver_requests = confirmation.requests,
                        reported,
                        message = ended.message
                    );
                } else {
                    tracing::warn!(
                        outcome = "confirmed",
                        result = ended.outcome.as_str(),
                        key,
                        project,
                        git_ref,
                        cluster,
                        reason = ended.reason,
                        object = ended.object,
                        checks = confirmation.checks,
                        apiserver_requests = confirmation.requests,
                        reported,
                        message = ended.message
                    );
                }
            };
            if ended.outcome.is_alarming() || reported == "dead_lettered" {
                line(tracing::Level::WARN);
            } else {
                line(tracing::Level::INFO);
            }
        } else if message.changed
            && let Some(seen) = &message.seen
        {
            tracing::info!(
                outcome = "confirming",
                key,
                cluster,
                state = serde_json::to_value(seen.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string)),
                reason = seen.reason,
                checks = confirmation.checks
            );
        }
        if let Settled::Failed { error }
        | Settled::RetriedInPlace {
            because: Some(error),
            ..
        } = &message.settled
        {
            tracing::warn!(
                outcome = "settle_failed",
                queue = "confirm",
                key,
                cluster,
                error = error.as_str()
            );
        }
    }
}
