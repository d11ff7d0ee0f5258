//! Which commit status to post for a confirmation, and when: GitLab refuses some same-state
//! transitions (pending → pending, running → running, running → pending: 400), and every
//! post after a terminal state creates another status. So a confirmation posts only when
//! the state moves forward — pending when the trigger is delivered, running when the
//! source has the commit, then success, failed or canceled — at most three posts, and
//! remembers in its message what it posted. (Flux's notifier reads the commit's statuses
//! before every post to skip duplicates, `docs/reference/gitlab.md` §3; fluxrelay reads
//! them only when an earlier attempt may have posted without recording it: see
//! [`must_read_first`].)

use super::message::Confirmation;
use super::rule::ConfirmState;
use crate::gitlab_api::StatusState;

/// The state the confirmation stands at, as a commit status.
pub fn current_state(confirmation: &Confirmation) -> StatusState {
    if let Some(ended) = &confirmation.ended {
        return ended.outcome.status_state();
    }
    match confirmation.last.as_ref().map(|seen| seen.state) {
        Some(ConfirmState::Running) => StatusState::Running,
        _ => StatusState::Pending,
    }
}

fn rank(state: StatusState) -> u8 {
    match state {
        StatusState::Pending => 0,
        StatusState::Running => 1,
        _ => 2,
    }
}

/// The state to post now, if any: the current one, when it is ahead of what was posted.
pub fn to_post(confirmation: &Confirmation) -> Option<StatusState> {
    let current = current_state(confirmation);
    match confirmation.posted {
        None => Some(current),
        Some(posted) if rank(current) > rank(posted) => Some(current),
        Some(_) => None,
    }
}

/// The status's description: what the latest look found, or how it ended (the consumer's
/// own message for a failure; "superseded: …" or "timed out: …" for `canceled`).
pub fn description(confirmation: &Confirmation) -> String {
    if let Some(ended) = &confirmation.ended {
        return ended.message.clone();
    }
    match &confirmation.last {
        Some(seen) => seen.message.clone(),
        None => "trigger delivered; waiting for Flux".to_string(),
    }
}

/// Read the status by name before this terminal post, and post nothing if it already ended:
/// - when a twin may exist (`twin_possible`): after a redelivery (a crash or a lost
///   acknowledgement after an earlier attempt may already have posted it, and a second
///   terminal post would add a duplicate status), or in a look another process scheduled
///   (`serve` was restarted: a look redelivered after the crash may have ended the same
///   confirmation, see [`scheduled_elsewhere`]);
/// - before a `canceled` (superseded or timed out): a duplicate confirmation of the same
///   push and cluster (a trigger delivered twice, at least once) that starts late can find
///   the source past a commit its twin already saw applied; GitLab keeps the first end.
///
/// A success or a failure is posted without the read, so the usual path stays at three
/// calls.
pub fn must_read_first(
    confirmation: &Confirmation,
    state: StatusState,
    twin_possible: bool,
) -> bool {
    state.is_terminal()
        && confirmation.posted != Some(state)
        && (twin_possible || state == StatusState::Canceled)
}

/// This look was scheduled by another confirm process than `instance` (this one's): the
/// process that scheduled it stopped in between, maybe after sending this look and before
/// acknowledging the one that sent it, so that one comes back too and a twin of this
/// confirmation may already have posted its end. Unknown on either side (Lambda, whose
/// containers come and go, or an older message): no.
pub fn scheduled_elsewhere(confirmation: &Confirmation, instance: Option<&str>) -> bool {
    matches!(
        (confirmation.scheduled_by.as_deref(), instance),
        (Some(by), Some(me)) if by != me
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confirm::message::{Ended, Outcome};
    use crate::confirm::rule::Observation;

    fn confirmation(
        last: Option<ConfirmState>,
        ended: Option<Outcome>,
        posted: Option<StatusState>,
    ) -> Confirmation {
        let mut c = Confirmation::start(
            "a",
            crate::push::tests::sample_push(),
            time::OffsetDateTime::UNIX_EPOCH,
        );
        c.last = last.map(|state| Observation {
            state,
            reason: "r".into(),
            message: format!("looked: {state:?}"),
            object: None,
            applied_at: None,
        });
        c.ended = ended.map(|outcome| Ended {
            outcome,
            reason: "r".into(),
            message: format!("ended: {}", outcome.as_str()),
            object: None,
            applied_at: None,
            ended_at: String::new(),
        });
        c.posted = posted;
        c
    }

    #[test]
    fn posts_only_forward_at_most_three_times() {
        use ConfirmState::*;
        use StatusState as S;
        // (last look, how it ended, posted, to post now, why)
        type Row = (
            Option<ConfirmState>,
            Option<Outcome>,
            Option<S>,
            Option<S>,
            &'static str,
        );
        let rows: Vec<Row> = vec![
            (None, None, None, Some(S::Pending), "delivered: pending"),
            (
                Some(Pending),
                None,
                None,
                Some(S::Pending),
                "first look pending",
            ),
            (
                Some(Pending),
                None,
                Some(S::Pending),
                None,
                "pending again: nothing (GitLab would answer 400)",
            ),
            (
                Some(Running),
                None,
                Some(S::Pending),
                Some(S::Running),
                "source has it",
            ),
            (
                Some(Running),
                None,
                None,
                Some(S::Running),
                "first look already running: straight to running",
            ),
            (
                Some(Running),
                None,
                Some(S::Running),
                None,
                "running again: nothing",
            ),
            (
                Some(Pending),
                None,
                Some(S::Running),
                None,
                "never back to pending",
            ),
            (
                Some(Running),
                Some(Outcome::Success),
                Some(S::Running),
                Some(S::Success),
                "success",
            ),
            (
                Some(Pending),
                Some(Outcome::Failed),
                Some(S::Pending),
                Some(S::Failed),
                "failed",
            ),
            (
                None,
                Some(Outcome::Superseded),
                None,
                Some(S::Canceled),
                "superseded at once",
            ),
            (
                Some(Running),
                Some(Outcome::TimedOut),
                Some(S::Running),
                Some(S::Canceled),
                "timed out",
            ),
            (
                Some(Running),
                Some(Outcome::Success),
                Some(S::Success),
                None,
                "terminal already posted: nothing",
            ),
        ];
        for (last, ended, posted, expected, why) in rows {
            assert_eq!(
                to_post(&confirmation(last, ended, posted)),
                expected,
                "{why}"
            );
        }
    }

    #[test]
    fn descriptions_say_how_it_ended() {
        assert_eq!(
            description(&confirmation(None, None, None)),
            "trigger delivered; waiting for Flux"
        );
        assert_eq!(
            description(&confirmation(Some(ConfirmState::Running), None, None)),
            "looked: Running"
        );
        assert_eq!(
            description(&confirmation(
                Some(ConfirmState::Running),
                Some(Outcome::TimedOut),
                None
            )),
            "ended: timed_out"
        );
    }

    #[test]
    fn reads_before_a_terminal_post_only_after_a_redelivery() {
        let c = confirmation(
            Some(ConfirmState::Running),
            Some(Outcome::Success),
            Some(StatusState::Running),
        );
        assert!(!must_read_first(&c, StatusState::Success, false));
        assert!(must_read_first(&c, StatusState::Success, true));
        assert!(
            !must_read_first(&c, StatusState::Running, true),
            "a same-state 400 says it already"
        );
        assert!(
            must_read_first(&c, StatusState::Canceled, false),
            "a cancel never overwrites an end"
        );
        assert!(!must_read_first(&c, StatusState::Failed, false));
    }

    #[test]
    fn a_look_scheduled_by_another_process_may_have_a_twin() {
        let mut c = confirmation(None, None, None);
        for (by, me, elsewhere) in [
            (Some("serve-1"), Some("serve-2"), true),
            (Some("serve-1"), Some("serve-1"), false),
            (None, Some("serve-2"), false),
            (Some("serve-1"), None, false),
            (None, None, false),
        ] {
            c.scheduled_by = by.map(str::to_string);
            assert_eq!(scheduled_elsewhere(&c, me), elsewhere, "{by:?} {me:?}");
        }
    }
}
