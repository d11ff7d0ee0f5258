use time::Duration;

use super::*;
use crate::outcome::classify::Responder;

fn failure(class: FailureClass, reason: &str, status: Option<u16>) -> TriggerFailure {
    TriggerFailure {
        class,
        responder: Responder::Receiver,
        status,
        reason: reason.to_string(),
        credentials_rejected: false,
    }
}

fn attempt(number: u32, denied_for: Option<i64>) -> Attempt<'static> {
    Attempt {
        number,
        message_id: "m1",
        denied_for: denied_for.map(Duration::seconds),
    }
}

fn delivered(object: &str) -> (String, TargetState) {
    (object.to_string(), TargetState::Delivered)
}

fn covered(object: &str, by: &str) -> (String, TargetState) {
    (
        object.to_string(),
        TargetState::Covered { by: by.to_string() },
    )
}

fn failed(object: &str, failure: TriggerFailure) -> (String, TargetState) {
    (object.to_string(), TargetState::Failed(failure))
}

/// Every class of target outcome → the verdict, with the negative cases.
#[test]
fn verdicts_by_what_became_of_each_target() {
    use FailureClass::{Denied, Permanent, Retryable};
    let policy = RetryPolicy::default();
    let busy = failure(Retryable, "Receiver answered 503", Some(503));
    let bad = failure(Permanent, "Receiver answered 400", Some(400));
    let denied = failure(Denied, "apiserver refused (403)", Some(403));
    // (name, attempt, targets, problems, expected outcome, retried objects, dead objects)
    type Case = (
        &'static str,
        Attempt<'static>,
        Vec<(String, TargetState)>,
        Vec<(Option<String>, TriggerFailure)>,
        &'static str,
        Option<Option<Vec<&'static str>>>,
        Option<Option<Vec<&'static str>>>,
    );
    let cases: Vec<Case> = vec![
        (
            "no targets",
            attempt(1, None),
            vec![],
            vec![],
            "nothing_to_trigger",
            None,
            None,
        ),
        (
            "own call",
            attempt(1, None),
            vec![delivered("a")],
            vec![],
            "delivered",
            None,
            None,
        ),
        (
            "own call and a cover",
            attempt(1, None),
            vec![covered("a", "k2"), delivered("b")],
            vec![],
            "delivered",
            None,
            None,
        ),
        (
            "only covers",
            attempt(1, None),
            vec![covered("a", "k2"), covered("b", "k3")],
            vec![],
            "superseded",
            None,
            None,
        ),
        (
            "a retryable failure retries only its target",
            attempt(1, None),
            vec![delivered("a"), failed("b", busy.clone())],
            vec![],
            "retry",
            Some(Some(vec!["b"])),
            None,
        ),
        (
            "a retryable failure on the last attempt is dead-lettered",
            attempt(8, None),
            vec![failed("b", busy.clone())],
            vec![],
            "dead_lettered",
            None,
            Some(Some(vec!["b"])),
        ),
        (
            "a permanent failure is dead-lettered at once, narrowed",
            attempt(1, None),
            vec![delivered("a"), failed("b", bad.clone())],
            vec![],
            "dead_lettered",
            None,
            Some(Some(vec!["b"])),
        ),
        (
            "one of each: retried and dead-lettered apart",
            attempt(1, None),
            vec![failed("a", busy.clone()), failed("b", bad.clone())],
            vec![],
            "retry_and_dead_lettered",
            Some(Some(vec!["a"])),
            Some(Some(vec!["b"])),
        ),
        (
            "a problem blocks its object like a failed call",
            attempt(1, None),
            vec![delivered("a")],
            vec![(Some("c".into()), busy.clone())],
            "retry",
            Some(Some(vec!["c"])),
            None,
        ),
        (
            "a whole-message failure retries the whole message",
            attempt(1, None),
            vec![],
            vec![(None, busy.clone())],
            "retry",
            Some(None),
            None,
        ),
        (
            "a fresh denial is retried",
            attempt(3, Some(4)),
            vec![failed("a", denied.clone())],
            vec![],
            "retry",
            Some(Some(vec!["a"])),
            None,
        ),
        (
            "a denial of 10 s on a second try is dead-lettered",
            attempt(2, Some(10)),
            vec![failed("a", denied.clone())],
            vec![],
            "dead_lettered",
            None,
            Some(Some(vec!["a"])),
        ),
        (
            "a denial of 10 s on a first try gets a second",
            attempt(1, Some(30)),
            vec![failed("a", denied.clone())],
            vec![],
            "retry",
            Some(Some(vec!["a"])),
            None,
        ),
    ];
    for (name, attempt, targets, problems, outcome, retried, dead) in cases {
        let verdict = message_verdict(&policy, attempt, &targets, &problems);
        assert_eq!(verdict.outcome(), outcome, "{name}: {verdict:?}");
        fn as_strs(only: &Option<Vec<String>>) -> Option<Vec<&str>> {
            only.as_ref()
                .map(|only| only.iter().map(String::as_str).collect())
        }
        assert_eq!(
            verdict.retry().map(|r| as_strs(&r.only)),
            retried,
            "{name}: {verdict:?}"
        );
        assert_eq!(
            verdict.dead_letter().map(|d| as_strs(&d.only)),
            dead,
            "{name}: {verdict:?}"
        );
    }
}

#[test]
fn reasons_say_why_and_how_long() {
    let policy = RetryPolicy::default();
    let busy = failure(FailureClass::Retryable, "Receiver answered 503", Some(503));
    let verdict = message_verdict(&policy, attempt(8, None), &[failed("a", busy)], &[]);
    let dead = verdict.dead_letter().unwrap();
    assert_eq!(
        dead.reason,
        "gave up after 8 attempts: Receiver answered 503"
    );
    assert_eq!(dead.status, Some(503));

    let denied = failure(FailureClass::Denied, "apiserver refused (403)", Some(403));
    let verdict = message_verdict(&policy, attempt(2, Some(11)), &[failed("a", denied)], &[]);
    assert_eq!(
        verdict.dead_letter().unwrap().reason,
        "apiserver refused (403) (denied without a break for 11 s)"
    );

    // The same reason twice is said once.
    let twice = failure(FailureClass::Retryable, "same", None);
    let verdict = message_verdict(
        &policy,
        attempt(1, None),
        &[failed("a", twice.clone()), failed("b", twice)],
        &[],
    );
    assert_eq!(verdict.retry().unwrap().reason, "same");
}

#[test]
fn an_unconfirmed_denial_waits_at_least_the_denial_minimum() {
    let policy = RetryPolicy {
        base_delay_secs: 1,
        max_delay_secs: 1,
        ..RetryPolicy::default()
    };
    let denied = failure(FailureClass::Denied, "403", Some(403));
    let verdict = message_verdict(&policy, attempt(1, Some(0)), &[failed("a", denied)], &[]);
    assert!(verdict.retry().unwrap().delay_secs >= DENIAL_RETRY_MIN_SECS);
    let busy = failure(FailureClass::Retryable, "503", Some(503));
    let verdict = message_verdict(&policy, attempt(1, None), &[failed("a", busy)], &[]);
    assert_eq!(verdict.retry().unwrap().delay_secs, 1);
}

#[test]
fn rejected_credentials_are_retried_even_when_the_class_is_permanent() {
    let policy = RetryPolicy::default();
    let rejected = TriggerFailure {
        credentials_rejected: true,
        ..failure(FailureClass::Permanent, "401", Some(401))
    };
    let verdict = message_verdict(
        &policy,
        attempt(1, None),
        &[failed("a", rejected.clone())],
        &[],
    );
    assert_eq!(verdict.outcome(), "retry");
    let verdict = message_verdict(&policy, attempt(8, None), &[failed("a", rejected)], &[]);
    assert_eq!(verdict.outcome(), "dead_lettered");
}
