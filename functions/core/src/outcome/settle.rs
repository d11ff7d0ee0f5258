//! What becomes of each received message, and how it is carried out on any queue
//! ([`Settle`]): the Lambda functions and `fluxrelay serve` settle through this one rule.
//!
//! Order is what keeps a push from being lost: every follow-up (a narrowed retry, a dead
//! letter) is sent before the message is acknowledged. When a follow-up cannot be sent,
//! the message stays on its queue and comes back (`retry_in_place`); when even that fails,
//! its visibility timeout brings it back. At worst a push is triggered twice.

use super::retry::RetryPolicy;
use super::verdict::Verdict;
use crate::ports::{DeadLetterReason, QueueMessage, Settle};
use crate::push::Dispatch;

/// After this many failed routes a push goes to the intake dead-letter queue, with the
/// reason. Below the intake queue's `maxReceiveCount` (10 in `template.yaml`), so
/// fluxrelay decides, and records why, before the queue's redrive policy would.
pub const INTAKE_MAX_RECEIVES: u32 = 8;
/// The wait before a message whose follow-up could not be sent comes back.
pub const FALLBACK_DELAY_SECS: u32 = 5;

/// What to do with one received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Delete it.
    Acknowledge,
    /// Send these, then delete it.
    FollowUp {
        retry: Option<(Box<Dispatch>, u32)>,
        dead_letter: Option<(String, DeadLetterReason)>,
    },
    /// Leave it to come back after the delay.
    RetryInPlace { delay_secs: u32 },
}

/// How settling went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Acknowledged,
    /// Nothing more was needed, but deleting it failed: the queue may deliver it again (a
    /// duplicate at worst). On SQS it is reported as processed, so the event source
    /// deletes it.
    AcknowledgeFailed {
        error: String,
    },
    /// The follow-ups were sent and the message deleted (a failed delete is logged: the
    /// message comes back and is settled again, a duplicate at worst).
    FollowedUp {
        retried: bool,
        dead_lettered: bool,
        acknowledge_error: Option<String>,
    },
    /// It stays on its queue and comes back; `because` says why when that was not the rule
    /// (a follow-up could not be sent).
    RetriedInPlace {
        delay_secs: u32,
        because: Option<String>,
    },
    /// Nothing could be done: it comes back after its visibility timeout.
    Failed {
        error: String,
    },
}

impl Settled {
    /// The consumer must report it as not processed (SQS batch item failure), because it
    /// is to come back.
    pub fn comes_back(&self) -> bool {
        matches!(
            self,
            Settled::RetriedInPlace { .. } | Settled::Failed { .. }
        )
    }

    /// The delete this settlement ended with failed after all (a queue that deletes later,
    /// in one write with the journal lines that explain it): `Acknowledged` becomes
    /// `AcknowledgeFailed` and a follow-up keeps its follow-ups and records the error, as
    /// if the delete had failed at once. A settlement that deleted nothing is unchanged.
    pub fn acknowledgement_failed(&mut self, error: String) {
        match self {
            Settled::Acknowledged => *self = Settled::AcknowledgeFailed { error },
            Settled::FollowedUp {
                acknowledge_error, ..
            } => *acknowledge_error = Some(error),
            Settled::AcknowledgeFailed { .. }
            | Settled::RetriedInPlace { .. }
            | Settled::Failed { .. } => {}
        }
    }

    /// It reached the dead-letter queue.
    pub fn dead_lettered(&self) -> bool {
        matches!(
            self,
            Settled::FollowedUp {
                dead_lettered: true,
                ..
            }
        )
    }
}

/// The attempts made on a dispatch so far, this delivery included.
pub fn attempt_number(dispatch: Option<&Dispatch>, message: &QueueMessage) -> u32 {
    dispatch
        .map_or(0, |d| d.attempts)
        .saturating_add(message.receive_count.max(1))
}

/// How to settle a dispatch message with this verdict. `dispatch` is `None` when the body
/// is not a `Dispatch` (it is dead-lettered as it is).
pub fn dispatch_settlement(
    message: &QueueMessage,
    dispatch: Option<&Dispatch>,
    verdict: &Verdict,
) -> Settlement {
    let narrowed = |only: &Option<Vec<String>>| -> Option<Dispatch> {
        let mut follow = dispatch?.clone();
        follow.attempts = attempt_number(dispatch, message);
        if only.is_some() {
            follow.only.clone_from(only);
        }
        Some(follow)
    };
    let retry = verdict
        .retry()
        .and_then(|plan| narrowed(&plan.only).map(|follow| (Box::new(follow), plan.delay_secs)));
    let dead_letter = verdict.dead_letter().map(|plan| {
        let body = match narrowed(&plan.only) {
            Some(follow) if plan.only.is_some() => follow.to_json(),
            _ => message.body.clone(),
        };
        let reason = DeadLetterReason {
            reason: plan.reason.clone(),
            status: plan.status,
            cluster: dispatch.map(|d| d.cluster.clone()),
            key: dispatch.map(|d| d.push.key.clone()),
            attempts: Some(attempt_number(dispatch, message)),
        };
        (body, reason)
    });
    if retry.is_none() && dead_letter.is_none() {
        return match verdict {
            // A retry of a body that is not a Dispatch cannot be narrowed: it returns as is.
            Verdict::Retry(plan) => Settlement::RetryInPlace {
                delay_secs: plan.delay_secs,
            },
            _ => Settlement::Acknowledge,
        };
    }
    Settlement::FollowUp { retry, dead_letter }
}

/// How to settle an intake message after routing: routed is done; a failure comes back
/// after a backoff (its project's group waits, which keeps the project's pushes in
/// order), until [`INTAKE_MAX_RECEIVES`], then it is dead-lettered with the reason.
pub fn route_settlement(
    policy: &RetryPolicy,
    message: &QueueMessage,
    failure: Option<&str>,
    key: Option<&str>,
) -> Settlement {
    let Some(reason) = failure else {
        return Settlement::Acknowledge;
    };
    if message.receive_count >= INTAKE_MAX_RECEIVES {
        return Settlement::FollowUp {
            retry: None,
            dead_letter: Some((
                message.body.clone(),
                DeadLetterReason {
                    reason: format!(
                        "could not be routed after {} attempts: {reason}",
                        message.receive_count
                    ),
                    status: None,
                    cluster: None,
                    key: key.map(str::to_string),
                    attempts: Some(message.receive_count),
                },
            )),
        };
    }
    Settlement::RetryInPlace {
        delay_secs: policy.delay_secs(message.receive_count, &message.id),
    }
}

/// Carry a settlement out.
pub async fn settle(
    queue: &impl Settle,
    message: &QueueMessage,
    settlement: &Settlement,
) -> Settled {
    match settlement {
        Settlement::Acknowledge => match queue.acknowledge(message).await {
            Ok(()) => Settled::Acknowledged,
            Err(error) => Settled::AcknowledgeFailed {
                error: error.to_string(),
            },
        },
        Settlement::RetryInPlace { delay_secs } => {
            in_place(queue, message, *delay_secs, None).await
        }
        Settlement::FollowUp { retry, dead_letter } => {
            if let Some((dispatch, delay_secs)) = retry
                && let Err(error) = queue.schedule_retry(dispatch, *delay_secs).await
            {
                let because = format!("could not schedule the retry: {error}");
                return in_place(queue, message, *delay_secs, Some(because)).await;
            }
            if let Some((body, reason)) = dead_letter
                && let Err(error) = queue.dead_letter(message, body, reason).await
            {
                let because = format!("could not dead-letter it: {error}");
                return in_place(queue, message, FALLBACK_DELAY_SECS, Some(because)).await;
            }
            Settled::FollowedUp {
                retried: retry.is_some(),
                dead_lettered: dead_letter.is_some(),
                acknowledge_error: queue
                    .acknowledge(message)
                    .await
                    .err()
                    .map(|error| error.to_string()),
            }
        }
    }
}

/// Carry a settlement out, first starting the message's confirmation when it has one (a
/// follow-up like any other: sent before the acknowledgement, and when it cannot be sent
/// the message comes back instead).
pub async fn settle_confirming(
    queue: &impl Settle,
    message: &QueueMessage,
    settlement: &Settlement,
    confirmation: Option<&crate::confirm::message::Confirmation>,
) -> Settled {
    if let Some(confirmation) = confirmation
        && let Err(error) = queue.schedule_confirmation(confirmation, 0).await
    {
        let because = format!("could not start its confirmation: {error}");
        return in_place(queue, message, FALLBACK_DELAY_SECS, Some(because)).await;
    }
    settle(queue, message, settlement).await
}

async fn in_place(
    queue: &impl Settle,
    message: &QueueMessage,
    delay_secs: u32,
    because: Option<String>,
) -> Settled {
    match queue.retry_in_place(message, delay_secs).await {
        Ok(()) => Settled::RetriedInPlace {
            delay_secs,
            because,
        },
        Err(error) => Settled::Failed {
            error: match because {
                Some(because) => format!("{because}; and could not change its visibility: {error}"),
                None => error.to_string(),
            },
        },
    }
}

#[cfg(test)]
#[path = "settle_test.rs"]
mod tests;
