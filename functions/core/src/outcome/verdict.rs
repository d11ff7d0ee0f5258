//! What becomes of one dispatch message, from what happened to each of its targets.
//!
//! A message is done when every target it asks for was reached: by its own call
//! (delivered), or without one (superseded: a call that carried a newer push of the same
//! project and ref, a newer message in the batch that takes over its targets, or a delivery
//! to the same target made after this push was accepted). What is not reached is retried
//! on its own, narrowed to the targets that failed, or dead-lettered with the reason; a
//! failure never holds back any other target or message.

use time::Duration;

use super::classify::{FailureClass, TriggerFailure};
use super::denials::{DENIAL_CONFIRM_AFTER, DENIAL_RETRY_MIN_SECS};
use super::retry::RetryPolicy;

/// How one target of one message was reached, or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetState {
    /// This message's own call (carrying its push) answered success.
    Delivered,
    /// Reached without a call of its own; `by` says by what (a push key, or a delivery).
    Covered {
        by: String,
    },
    Failed(TriggerFailure),
}

/// Targets still to reach on a later attempt: a new message narrowed to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPlan {
    /// The targets to retry (`None`: the whole push, e.g. when the cluster could not be
    /// read and its targets are unknown).
    pub only: Option<Vec<String>>,
    pub delay_secs: u32,
    pub reason: String,
}

/// Targets that cannot be reached: the message (narrowed to them) goes to the dead-letter
/// queue with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterPlan {
    pub only: Option<Vec<String>>,
    pub reason: String,
    pub status: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every target reached, at least one by this push's own call.
    Delivered {
        targets: Vec<String>,
    },
    /// Every target reached without a call of this push's own (the first cover named).
    Superseded {
        by: String,
    },
    /// Nothing in the cluster tracks this project and ref (see the skips).
    NothingToTrigger,
    Retry(RetryPlan),
    DeadLetter(DeadLetterPlan),
    /// Some targets are retried, others cannot succeed.
    RetryAndDeadLetter(RetryPlan, DeadLetterPlan),
}

impl Verdict {
    /// The word logs, metrics and the journal use for it.
    pub fn outcome(&self) -> &'static str {
        match self {
            Verdict::Delivered { .. } => "delivered",
            Verdict::Superseded { .. } => "superseded",
            Verdict::NothingToTrigger => "nothing_to_trigger",
            Verdict::Retry(_) => "retry",
            Verdict::DeadLetter(_) => "dead_lettered",
            Verdict::RetryAndDeadLetter(..) => "retry_and_dead_lettered",
        }
    }

    pub fn retry(&self) -> Option<&RetryPlan> {
        match self {
            Verdict::Retry(retry) | Verdict::RetryAndDeadLetter(retry, _) => Some(retry),
            _ => None,
        }
    }

    pub fn dead_letter(&self) -> Option<&DeadLetterPlan> {
        match self {
            Verdict::DeadLetter(dead) | Verdict::RetryAndDeadLetter(_, dead) => Some(dead),
            _ => None,
        }
    }
}

/// What the verdict rule needs to know about the message besides its targets.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// Attempts made so far, this one included (earlier messages' attempts plus this
    /// message's receive count).
    pub number: u32,
    /// Spreads the retries of different messages apart (the jitter's seed).
    pub message_id: &'a str,
    /// How long the cluster has been denying us without a break, when it did this round.
    pub denied_for: Option<Duration>,
}

/// The verdict for one message. `targets` lists each target the message asked for, in
/// plan order, with what became of it; `problems` the objects that were blocked before
/// anything was sent. `narrowed` says whether targets are known (a cluster-wide failure
/// has none: `problems` then holds one entry for the whole message, object `None`).
pub fn message_verdict(
    policy: &RetryPolicy,
    attempt: Attempt<'_>,
    targets: &[(String, TargetState)],
    problems: &[(Option<String>, TriggerFailure)],
) -> Verdict {
    let failures: Vec<(Option<&str>, &TriggerFailure)> = targets
        .iter()
        .filter_map(|(object, state)| match state {
            TargetState::Failed(failure) => Some((Some(object.as_str()), failure)),
            _ => None,
        })
        .chain(problems.iter().map(|(object, f)| (object.as_deref(), f)))
        .collect();
    if failures.is_empty() {
        let own: Vec<String> = targets
            .iter()
            .filter(|(_, state)| *state == TargetState::Delivered)
            .map(|(object, _)| object.clone())
            .collect();
        if !own.is_empty() {
            return Verdict::Delivered { targets: own };
        }
        return match targets.iter().find_map(|(_, state)| match state {
            TargetState::Covered { by } => Some(by.clone()),
            _ => None,
        }) {
            Some(by) => Verdict::Superseded { by },
            None => Verdict::NothingToTrigger,
        };
    }
    let exhausted = policy.exhausted(attempt.number);
    let (mut retry, mut dead): (Vec<_>, Vec<_>) = (Vec::new(), Vec::new());
    for (object, failure) in failures {
        if wants_retry(failure, attempt) && !exhausted {
            retry.push((object, failure));
        } else {
            dead.push((object, failure));
        }
    }
    let retry_plan = (!retry.is_empty()).then(|| {
        let unconfirmed_denial = retry.iter().any(|(_, f)| f.class == FailureClass::Denied);
        let delay_secs = policy.delay_secs(attempt.number, attempt.message_id);
        RetryPlan {
            only: objects(&retry),
            delay_secs: if unconfirmed_denial {
                delay_secs.max(DENIAL_RETRY_MIN_SECS)
            } else {
                delay_secs
            },
            reason: reasons(&retry),
        }
    });
    let dead_plan = (!dead.is_empty()).then(|| {
        let reason = reasons(&dead);
        let gave_up = dead
            .iter()
            .any(|(_, f)| f.class == FailureClass::Retryable || f.credentials_rejected);
        let denied = dead.iter().any(|(_, f)| f.class == FailureClass::Denied);
        let reason = if gave_up && exhausted {
            format!("gave up after {} attempts: {reason}", attempt.number)
        } else if denied {
            format!(
                "{reason} (denied without a break for {} s)",
                attempt.denied_for.unwrap_or_default().whole_seconds()
            )
        } else {
            reason
        };
        DeadLetterPlan {
            only: objects(&dead),
            reason,
            status: dead.iter().find_map(|(_, f)| f.status),
        }
    });
    match (retry_plan, dead_plan) {
        (Some(retry), Some(dead)) => Verdict::RetryAndDeadLetter(retry, dead),
        (Some(retry), None) => Verdict::Retry(retry),
        (None, Some(dead)) => Verdict::DeadLetter(dead),
        // Not reachable: there was at least one failure.
        (None, None) => Verdict::NothingToTrigger,
    }
}

/// Whether a failure is worth another attempt. A denial is, until it is confirmed: the
/// cluster has denied for [`DENIAL_CONFIRM_AFTER`] without a break, and this message was
/// tried before (a push redriven right after the Role was fixed gets a second try while
/// the apiserver's RBAC cache catches up). Rejected credentials are re-read first.
fn wants_retry(failure: &TriggerFailure, attempt: Attempt<'_>) -> bool {
    match failure.class {
        FailureClass::Retryable => true,
        FailureClass::Denied => {
            attempt
                .denied_for
                .is_none_or(|denied| denied < DENIAL_CONFIRM_AFTER)
                || attempt.number < 2
        }
        FailureClass::Permanent | FailureClass::Rediscover => failure.credentials_rejected,
    }
}

/// The objects of these failures, or `None` when one of them is the whole message.
fn objects(failures: &[(Option<&str>, &TriggerFailure)]) -> Option<Vec<String>> {
    let mut objects: Vec<String> = Vec::new();
    for (object, _) in failures {
        let object = (*object)?;
        if !objects.iter().any(|o| o == object) {
            objects.push(object.to_string());
        }
    }
    Some(objects)
}

fn reasons(failures: &[(Option<&str>, &TriggerFailure)]) -> String {
    let mut reasons: Vec<&str> = Vec::new();
    for (_, failure) in failures {
        if !reasons.contains(&failure.reason.as_str()) {
            reasons.push(&failure.reason);
        }
    }
    reasons.join("; ")
}

#[cfg(test)]
#[path = "verdict_test.rs"]
mod tests;
