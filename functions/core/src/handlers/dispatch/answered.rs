//! Which calls a `delivered` verdict tells: the log line and the journal row of a delivered
//! push name each target with its call's answer, so a successful call needs no line of
//! its own (it would repeat the target, and was half of a 20-cluster push's dispatch log
//! lines). A call that failed, or served a push that is retried or dead-lettered, keeps
//! its own `triggered` / `trigger_failed` line.

use std::collections::{HashMap, HashSet};

use super::{DispatchReport, MessageOutcome, TargetOutcome};
use crate::outcome::verdict::Verdict;

/// (push key, cluster, target)
type Call<'r> = (&'r str, &'r str, &'r str);

/// The successful calls of one report, and which of them a `delivered` verdict tells.
#[derive(Debug, Default)]
pub struct AnsweredCalls<'r> {
    /// Per push served and target: how many pushes the successful call served.
    answered: HashMap<Call<'r>, usize>,
    /// The ones whose push was delivered with the target named.
    told: HashSet<Call<'r>>,
}

impl DispatchReport {
    pub fn answered_calls(&self) -> AnsweredCalls<'_> {
        let mut calls = AnsweredCalls::default();
        for target in self.targets.iter().filter(|target| target.result.is_ok()) {
            for key in &target.push_keys {
                calls.answered.insert(
                    (key, &target.cluster, &target.target),
                    target.push_keys.len(),
                );
            }
        }
        for message in &self.messages {
            if let (Some(dispatch), Verdict::Delivered { targets }) =
                (&message.dispatch, &message.verdict)
            {
                for target in targets {
                    let call = (
                        dispatch.push.key.as_str(),
                        dispatch.cluster.as_str(),
                        target.as_str(),
                    );
                    if calls.answered.contains_key(&call) {
                        calls.told.insert(call);
                    }
                }
            }
        }
        calls
    }
}

impl AnsweredCalls<'_> {
    /// Whether the delivered verdict of push `key` tells the call's answer.
    pub fn told(&self, key: &str, cluster: &str, target: &str) -> bool {
        self.told.contains(&(key, cluster, target))
    }

    /// Whether every push `call` served has a delivered verdict that tells its answer:
    /// then the call needs no log line of its own.
    pub fn call_told(&self, call: &TargetOutcome) -> bool {
        call.result.is_ok()
            && call
                .push_keys
                .iter()
                .all(|key| self.told(key, &call.cluster, &call.target))
    }

    /// A delivered message's targets, each a call answered with its answer:
    /// `receiver/ns/a: success (one call for 3 pushes), gitrepository/ns/b` (a target
    /// without an answer was delivered by an earlier call). The journal's `delivered` row.
    pub fn delivered_targets(&self, message: &MessageOutcome, targets: &[String]) -> String {
        targets
            .iter()
            .map(|target| {
                self.answer_to(message, target)
                    .unwrap_or_else(|| target.clone())
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Only the targets of a delivered message that a call of this report answered, with
    /// the answer (`None`: all were delivered by earlier calls). The `delivered` log line's
    /// `answered`, beside its `targets`.
    pub fn answered_targets(&self, message: &MessageOutcome, targets: &[String]) -> Option<String> {
        let answers: Vec<String> = targets
            .iter()
            .filter_map(|target| self.answer_to(message, target))
            .collect();
        (!answers.is_empty()).then(|| answers.join(", "))
    }

    fn answer_to(&self, message: &MessageOutcome, target: &str) -> Option<String> {
        let dispatch = message.dispatch.as_ref()?;
        let call = (
            dispatch.push.key.as_str(),
            dispatch.cluster.as_str(),
            target,
        );
        self.answered
            .get(&call)
            .map(|pushes| answer(target, *pushes))
    }
}

/// A successful call's answer, as the journal and the log tell it.
pub fn answer(target: &str, pushes: usize) -> String {
    one_call(format!("{target}: success"), pushes)
}

/// `detail`, saying how many pushes one call served when it served more than one.
pub fn one_call(detail: String, pushes: usize) -> String {
    if pushes > 1 {
        format!("{detail} (one call for {pushes} pushes)")
    } else {
        detail
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use time::OffsetDateTime;

    use super::*;
    use crate::outcome::classify::{FailureClass, Responder, TriggerFailure};
    use crate::outcome::settle::Settled;
    use crate::outcome::verdict::RetryPlan;
    use crate::push::Dispatch;
    use crate::push::tests::sample_push;

    const A: &str = "receiver/flux-system/a";
    const B: &str = "receiver/flux-system/b";

    fn message(key: &str, verdict: Verdict) -> MessageOutcome {
        let mut push = sample_push();
        push.key = key.to_string();
        MessageOutcome {
            message_id: format!("m-{key}"),
            dispatch: Some(Dispatch::new("prod", push)),
            verdict,
            skipped: Vec::new(),
            settled: Settled::Acknowledged,
            confirming: false,
        }
    }

    /// A call on cluster `prod` for the pushes `keys` (the last one carried), answered or
    /// refused.
    fn call(target: &str, keys: &[&str], answered: bool) -> TargetOutcome {
        let push = sample_push();
        let refused = TriggerFailure {
            class: FailureClass::Retryable,
            responder: Responder::Receiver,
            status: Some(503),
            reason: "Receiver answered 503".to_string(),
            credentials_rejected: false,
        };
        TargetOutcome {
            cluster: "prod".to_string(),
            target: target.to_string(),
            project: push.project.path,
            git_ref: push.git_ref,
            carried: keys.last().map(|key| key.to_string()).unwrap_or_default(),
            push_keys: keys.iter().map(|key| key.to_string()).collect(),
            result: if answered { Ok(()) } else { Err(refused) },
            finished_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn delivered(targets: &[&str]) -> Verdict {
        Verdict::Delivered {
            targets: targets.iter().map(|target| target.to_string()).collect(),
        }
    }

    fn retry() -> Verdict {
        Verdict::Retry(RetryPlan {
            only: None,
            delay_secs: 30,
            reason: "Receiver answered 503".to_string(),
        })
    }

    /// Per case: the calls, the messages, then per call whether the log still gives it a
    /// line of its own, and per message what its `delivered` line's `answered` says.
    type Case = (
        &'static str,
        Vec<TargetOutcome>,
        Vec<MessageOutcome>,
        Vec<bool>,
        Vec<Option<&'static str>>,
    );

    #[test]
    fn a_call_has_a_line_of_its_own_unless_every_push_it_served_was_delivered_naming_it() {
        let cases: Vec<Case> = vec![
            (
                "one push, one call: told by the delivered line",
                vec![call(A, &["k1"], true)],
                vec![message("k1", delivered(&[A]))],
                vec![false],
                vec![Some("receiver/flux-system/a: success")],
            ),
            (
                "one call for two delivered pushes: told by both",
                vec![call(A, &["k1", "k2"], true)],
                vec![
                    message("k1", delivered(&[A])),
                    message("k2", delivered(&[A])),
                ],
                vec![false],
                vec![
                    Some("receiver/flux-system/a: success (one call for 2 pushes)"),
                    Some("receiver/flux-system/a: success (one call for 2 pushes)"),
                ],
            ),
            (
                "one call for two pushes, one of them not in the batch: its own line",
                vec![call(A, &["k1", "k2"], true)],
                vec![message("k2", delivered(&[A]))],
                vec![true],
                vec![Some(
                    "receiver/flux-system/a: success (one call for 2 pushes)",
                )],
            ),
            (
                "a success for a push that is retried: its own line",
                vec![call(A, &["k1"], true), call(B, &["k1"], false)],
                vec![message("k1", retry())],
                vec![true, true],
                vec![None],
            ),
            (
                "a failed call is never told by a verdict",
                vec![call(A, &["k1"], false)],
                vec![message("k1", delivered(&[A]))],
                vec![true],
                vec![None],
            ),
            (
                "a delivered target answered by no call here: the call made is its own line",
                vec![call(B, &["k1"], true)],
                vec![message("k1", delivered(&[A]))],
                vec![true],
                vec![None],
            ),
            (
                "another cluster's call of the same target and push is not this one's",
                vec![TargetOutcome {
                    cluster: "staging".to_string(),
                    ..call(A, &["k1"], true)
                }],
                vec![message("k1", delivered(&[A]))],
                vec![true],
                vec![None],
            ),
        ];
        for (name, targets, messages, own_lines, answered) in cases {
            let report = DispatchReport { messages, targets };
            let calls = report.answered_calls();
            let got: Vec<bool> = report
                .targets
                .iter()
                .map(|target| !calls.call_told(target))
                .collect();
            assert_eq!(got, own_lines, "{name}: own lines");
            let got: Vec<Option<String>> = report
                .messages
                .iter()
                .map(|message| match &message.verdict {
                    Verdict::Delivered { targets } => calls.answered_targets(message, targets),
                    _ => None,
                })
                .collect();
            let answered: Vec<Option<String>> = answered
                .into_iter()
                .map(|text| text.map(str::to_string))
                .collect();
            assert_eq!(got, answered, "{name}: answered");
        }
    }
}
