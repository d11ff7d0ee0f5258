//! When to look at the cluster again, and when to stop.
//!
//! Nothing sleeps: each re-check is a new message on the confirm queue, delivered after
//! its delay (an SQS standard queue's `DelaySeconds` on AWS, the embedded queue's delay
//! in `serve`). Looks come fast while a commit usually lands (1 s, then 2 s …) and slow
//! down to every 30 s; a confirmation ends by its deadline (15 minutes by default), or
//! earlier when its apiserver request budget would be exceeded by one more look.

use time::{Duration, OffsetDateTime};

use super::message::{Ended, Outcome};
use super::rule::{ConfirmState, Observation};

pub const DEFAULT_DEADLINE_SECS: u32 = 15 * 60;
/// 41 looks fit the default deadline with the default delays; three lists per look (one
/// namespace) is 123 requests.
pub const DEFAULT_REQUEST_BUDGET: u32 = 150;
pub const DEFAULT_MAX_DELAY_SECS: u32 = 30;
/// The delay after the n-th look (then the last one, up to the maximum).
const DELAYS_SECS: [u32; 16] = [1, 2, 2, 2, 3, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfirmPolicy {
    pub deadline_secs: u32,
    pub request_budget: u32,
    pub max_delay_secs: u32,
}

impl Default for ConfirmPolicy {
    fn default() -> Self {
        Self {
            deadline_secs: DEFAULT_DEADLINE_SECS,
            request_budget: DEFAULT_REQUEST_BUDGET,
            max_delay_secs: DEFAULT_MAX_DELAY_SECS,
        }
    }
}

impl ConfirmPolicy {
    /// The delay after `checks` looks (1 after the first).
    pub fn delay_secs(&self, checks: u32) -> u32 {
        let index = usize::try_from(checks.saturating_sub(1)).unwrap_or(usize::MAX);
        let step = DELAYS_SECS
            .get(index)
            .or(DELAYS_SECS.last())
            .copied()
            .unwrap_or(DEFAULT_MAX_DELAY_SECS);
        step.min(self.max_delay_secs.max(1))
    }
}

/// What to do after a look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Recheck { delay_secs: u32 },
    End(Ended),
}

/// After a look that found `seen`: end when it is final, when the deadline has passed, or
/// when the next look (costing `next_cost` requests) would exceed the budget; else look
/// again after the backoff, never past the deadline by more than a second.
pub fn next_step(
    policy: &ConfirmPolicy,
    started_at: OffsetDateTime,
    checks: u32,
    requests: u32,
    next_cost: u32,
    seen: &Observation,
    now: OffsetDateTime,
) -> Step {
    let end = |outcome: Outcome, reason: &str, message: String| {
        Step::End(Ended {
            outcome,
            reason: reason.to_string(),
            message,
            object: seen.object.clone(),
            applied_at: seen.applied_at.clone(),
            ended_at: crate::ingest::rfc3339(now),
        })
    };
    let final_outcome = match seen.state {
        ConfirmState::Success => Some(Outcome::Success),
        ConfirmState::Failed => Some(Outcome::Failed),
        ConfirmState::Superseded => Some(Outcome::Superseded),
        ConfirmState::Pending | ConfirmState::Running => None,
    };
    if let Some(outcome) = final_outcome {
        return end(outcome, &seen.reason, seen.message.clone());
    }
    let deadline = started_at + Duration::seconds(i64::from(policy.deadline_secs));
    if now >= deadline {
        return end(
            Outcome::TimedOut,
            "deadline",
            format!(
                "timed out: not applied within {}; {}",
                minutes(policy.deadline_secs),
                seen.message
            ),
        );
    }
    if requests.saturating_add(next_cost) > policy.request_budget {
        return end(
            Outcome::TimedOut,
            "request_budget",
            format!(
                "timed out: its budget of {} apiserver requests is spent; {}",
                policy.request_budget, seen.message
            ),
        );
    }
    let left = (deadline - now).whole_seconds().max(1);
    let delay = policy.delay_secs(checks.max(1));
    Step::Recheck {
        delay_secs: delay.min(u32::try_from(left).unwrap_or(u32::MAX)),
    }
}

fn minutes(secs: u32) -> String {
    if secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(state: ConfirmState) -> Observation {
        Observation {
            state,
            reason: "waiting_for_kustomization".into(),
            message: "waiting for Kustomization flux-system/apps".into(),
            object: Some("Kustomization flux-system/apps".into()),
            applied_at: None,
        }
    }

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_763_800_000 + secs).unwrap()
    }

    #[test]
    fn looks_come_fast_then_slow_down_and_fit_the_budget() {
        let policy = ConfirmPolicy::default();
        let delays: Vec<u32> = (1..=20).map(|n| policy.delay_secs(n)).collect();
        assert_eq!(&delays[..6], &[1, 2, 2, 2, 3, 3]);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
        assert_eq!(policy.delay_secs(1000), 30);
        // Looks within the default deadline, at three lists each, stay within the budget.
        let (mut elapsed, mut looks) = (0u32, 0u32);
        while elapsed < DEFAULT_DEADLINE_SECS {
            looks += 1;
            elapsed += policy.delay_secs(looks);
        }
        assert!(looks * 3 <= DEFAULT_REQUEST_BUDGET, "{looks} looks");
        let capped = ConfirmPolicy {
            max_delay_secs: 5,
            ..policy
        };
        assert_eq!(capped.delay_secs(100), 5);
    }

    #[test]
    fn every_look_ends_or_schedules_the_next() {
        let policy = ConfirmPolicy::default();
        // (state seen, seconds since the start, requests so far, next delay or end, why)
        type Row = (
            ConfirmState,
            i64,
            u32,
            Result<u32, (Outcome, &'static str)>,
            &'static str,
        );
        let rows: Vec<Row> = vec![
            (
                ConfirmState::Success,
                5,
                3,
                Err((Outcome::Success, "waiting_for_kustomization")),
                "final states end",
            ),
            (
                ConfirmState::Failed,
                5,
                3,
                Err((Outcome::Failed, "waiting_for_kustomization")),
                "failed",
            ),
            (
                ConfirmState::Superseded,
                5,
                3,
                Err((Outcome::Superseded, "waiting_for_kustomization")),
                "superseded",
            ),
            (
                ConfirmState::Success,
                10_000,
                3,
                Err((Outcome::Success, "waiting_for_kustomization")),
                "a final state wins over the deadline",
            ),
            (
                ConfirmState::Running,
                5,
                3,
                Ok(1),
                "first look: again in 1 s",
            ),
            (
                ConfirmState::Pending,
                900,
                3,
                Err((Outcome::TimedOut, "deadline")),
                "deadline reached",
            ),
            (
                ConfirmState::Running,
                899,
                3,
                Ok(1),
                "never past the deadline",
            ),
            (
                ConfirmState::Running,
                5,
                148,
                Err((Outcome::TimedOut, "request_budget")),
                "budget",
            ),
            (
                ConfirmState::Running,
                5,
                147,
                Ok(1),
                "exactly within budget",
            ),
        ];
        for (state, elapsed, requests, expected, why) in rows {
            let step = next_step(&policy, at(0), 1, requests, 3, &seen(state), at(elapsed));
            match (step, expected) {
                (Step::Recheck { delay_secs }, Ok(delay)) => assert_eq!(delay_secs, delay, "{why}"),
                (Step::End(ended), Err((outcome, reason))) => {
                    assert_eq!(
                        (ended.outcome, ended.reason.as_str()),
                        (outcome, reason),
                        "{why}"
                    );
                    assert_eq!(
                        ended.object.as_deref(),
                        Some("Kustomization flux-system/apps")
                    );
                }
                (step, expected) => panic!("{why}: {step:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn a_timeout_says_what_it_waited_for() {
        let step = next_step(
            &ConfirmPolicy::default(),
            at(0),
            30,
            60,
            3,
            &seen(ConfirmState::Running),
            at(901),
        );
        let Step::End(ended) = step else {
            panic!("ends")
        };
        assert_eq!(
            ended.message,
            "timed out: not applied within 15 min; waiting for Kustomization flux-system/apps"
        );
    }
}
