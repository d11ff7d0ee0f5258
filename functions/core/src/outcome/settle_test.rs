use futures_util::FutureExt;

use super::*;
use crate::outcome::verdict::{DeadLetterPlan, RetryPlan};
use crate::push::tests::sample_push;
use crate::testing::MemorySettle;

fn message(body: &str, receive_count: u32) -> QueueMessage {
    QueueMessage {
        id: "m1".into(),
        source: "dispatch".into(),
        receipt: "r1".into(),
        group: "prod".into(),
        body: body.into(),
        receive_count,
    }
}

fn retry(only: Option<&[&str]>, delay_secs: u32) -> RetryPlan {
    RetryPlan {
        only: only.map(|only| only.iter().map(|s| s.to_string()).collect()),
        delay_secs,
        reason: "503".into(),
    }
}

fn dead(only: Option<&[&str]>) -> DeadLetterPlan {
    DeadLetterPlan {
        only: only.map(|only| only.iter().map(|s| s.to_string()).collect()),
        reason: "400".into(),
        status: Some(400),
    }
}

/// Every verdict → what is sent and whether the original is acknowledged.
#[test]
fn each_verdict_settles_one_way() {
    let mut dispatch = Dispatch::new("prod", sample_push());
    dispatch.attempts = 2;
    let body = dispatch.to_json();
    let incoming = message(&body, 3);
    let cases: Vec<(&str, Verdict, &str)> = vec![
        (
            "delivered",
            Verdict::Delivered {
                targets: vec!["a".into()],
            },
            "ack",
        ),
        ("superseded", Verdict::Superseded { by: "k".into() }, "ack"),
        ("nothing", Verdict::NothingToTrigger, "ack"),
        ("retry", Verdict::Retry(retry(Some(&["a"]), 7)), "retry"),
        ("dead", Verdict::DeadLetter(dead(Some(&["b"]))), "dead"),
        (
            "both",
            Verdict::RetryAndDeadLetter(retry(Some(&["a"]), 7), dead(Some(&["b"]))),
            "both",
        ),
    ];
    for (name, verdict, expected) in cases {
        let settlement = dispatch_settlement(&incoming, Some(&dispatch), &verdict);
        match (expected, &settlement) {
            ("ack", Settlement::Acknowledge) => {}
            (
                "retry",
                Settlement::FollowUp {
                    retry: Some((follow, 7)),
                    dead_letter: None,
                },
            ) => {
                // The attempts so far travel with it: 2 earlier + 3 receives of this one.
                assert_eq!(follow.attempts, 5, "{name}");
                assert_eq!(follow.only, Some(vec!["a".to_string()]), "{name}");
                assert_eq!(follow.push, dispatch.push, "{name}");
            }
            (
                "dead",
                Settlement::FollowUp {
                    retry: None,
                    dead_letter: Some((body, reason)),
                },
            ) => {
                let narrowed = Dispatch::from_json(body).unwrap();
                assert_eq!(narrowed.only, Some(vec!["b".to_string()]), "{name}");
                assert_eq!(reason.reason, "400");
                assert_eq!(reason.status, Some(400));
                assert_eq!(reason.cluster.as_deref(), Some("prod"));
                assert_eq!(reason.key.as_deref(), Some(dispatch.push.key.as_str()));
            }
            (
                "both",
                Settlement::FollowUp {
                    retry: Some(_),
                    dead_letter: Some(_),
                },
            ) => {}
            _ => panic!("{name}: {settlement:?}"),
        }
    }
    // A whole-message retry keeps what the message already asked for.
    let mut narrowed = dispatch.clone();
    narrowed.only = Some(vec!["x".into()]);
    let Settlement::FollowUp {
        retry: Some((follow, _)),
        ..
    } = dispatch_settlement(
        &message(&narrowed.to_json(), 1),
        Some(&narrowed),
        &Verdict::Retry(retry(None, 3)),
    )
    else {
        panic!()
    };
    assert_eq!(follow.only, Some(vec!["x".to_string()]));
    // A whole-message dead letter keeps the body as it came.
    let Settlement::FollowUp {
        dead_letter: Some((dead_body, _)),
        ..
    } = dispatch_settlement(&incoming, Some(&dispatch), &Verdict::DeadLetter(dead(None)))
    else {
        panic!()
    };
    assert_eq!(dead_body, body);
}

#[test]
fn a_body_that_is_not_a_dispatch_is_dead_lettered_as_it_came() {
    let incoming = message("garbage", 1);
    let settlement = dispatch_settlement(&incoming, None, &Verdict::DeadLetter(dead(None)));
    let Settlement::FollowUp {
        retry: None,
        dead_letter: Some((body, reason)),
    } = settlement
    else {
        panic!("{settlement:?}")
    };
    assert_eq!(body, "garbage");
    assert_eq!(reason.cluster, None);
}

#[test]
fn follow_ups_are_sent_before_the_acknowledgement_and_a_failed_one_keeps_the_message() {
    let dispatch = Dispatch::new("prod", sample_push());
    let incoming = message(&dispatch.to_json(), 1);
    let both = dispatch_settlement(
        &incoming,
        Some(&dispatch),
        &Verdict::RetryAndDeadLetter(retry(Some(&["a"]), 7), dead(Some(&["b"]))),
    );

    let queue = MemorySettle::default();
    let settled = settle(&queue, &incoming, &both).now_or_never().unwrap();
    assert_eq!(
        settled,
        Settled::FollowedUp {
            retried: true,
            dead_lettered: true,
            acknowledge_error: None
        }
    );
    assert_eq!(queue.scheduled.lock().unwrap().len(), 1);
    assert_eq!(queue.dead_letters.lock().unwrap().len(), 1);
    assert_eq!(*queue.acknowledged.lock().unwrap(), vec!["m1"]);
    assert!(!settled.comes_back() && settled.dead_lettered());

    // The retry queue refuses: nothing is acknowledged, the message comes back in place.
    let queue = MemorySettle::default();
    *queue.refuse_retries.lock().unwrap() = true;
    let settled = settle(&queue, &incoming, &both).now_or_never().unwrap();
    assert!(
        matches!(
            settled,
            Settled::RetriedInPlace {
                delay_secs: 7,
                because: Some(_)
            }
        ),
        "{settled:?}"
    );
    assert!(queue.acknowledged.lock().unwrap().is_empty());
    assert!(queue.dead_letters.lock().unwrap().is_empty());
    assert!(settled.comes_back());

    // The dead-letter queue refuses: the retry went out, the message still comes back.
    let queue = MemorySettle::default();
    *queue.refuse_dead_letters.lock().unwrap() = true;
    let settled = settle(&queue, &incoming, &both).now_or_never().unwrap();
    assert!(
        matches!(
            settled,
            Settled::RetriedInPlace {
                delay_secs: FALLBACK_DELAY_SECS,
                ..
            }
        ),
        "{settled:?}"
    );
    assert!(queue.acknowledged.lock().unwrap().is_empty());

    // Everything refuses: it comes back after its visibility timeout.
    let queue = MemorySettle::default();
    *queue.down.lock().unwrap() = true;
    let settled = settle(&queue, &incoming, &both).now_or_never().unwrap();
    assert!(matches!(settled, Settled::Failed { .. }), "{settled:?}");
    assert!(settled.comes_back());
}

#[test]
fn a_failed_acknowledgement_leaves_the_message_to_the_queue_but_not_to_come_back() {
    let incoming = message("body", 1);
    let queue = MemorySettle::default();
    *queue.down.lock().unwrap() = true;
    let settled = settle(&queue, &incoming, &Settlement::Acknowledge)
        .now_or_never()
        .unwrap();
    assert!(
        matches!(settled, Settled::AcknowledgeFailed { .. }),
        "{settled:?}"
    );
    // The work is done: on SQS the event source deletes it (reported as processed).
    assert!(!settled.comes_back());
}

#[test]
fn a_route_failure_backs_off_then_is_dead_lettered_with_its_reason() {
    let policy = RetryPolicy::default();
    let push = sample_push();
    let body = push.to_json();
    assert_eq!(
        route_settlement(&policy, &message(&body, 1), None, Some(&push.key)),
        Settlement::Acknowledge
    );
    for receive_count in 1..INTAKE_MAX_RECEIVES {
        let settlement = route_settlement(
            &policy,
            &message(&body, receive_count),
            Some("registry unavailable"),
            Some(&push.key),
        );
        assert!(
            matches!(settlement, Settlement::RetryInPlace { delay_secs } if delay_secs >= 1),
            "receive {receive_count}: {settlement:?}"
        );
    }
    let settlement = route_settlement(
        &policy,
        &message(&body, INTAKE_MAX_RECEIVES),
        Some("registry unavailable"),
        Some(&push.key),
    );
    let Settlement::FollowUp {
        retry: None,
        dead_letter: Some((dead_body, reason)),
    } = settlement
    else {
        panic!("{settlement:?}")
    };
    assert_eq!(dead_body, body);
    assert_eq!(
        reason.reason,
        format!("could not be routed after {INTAKE_MAX_RECEIVES} attempts: registry unavailable")
    );
    assert_eq!(reason.key.as_deref(), Some(push.key.as_str()));
}

/// A delete carried out later (serve's dispatch deletes a cluster's messages in one write
/// with their journal lines) that fails turns the settlement into what a failed delete at
/// once would have given; a settlement that deleted nothing stays as it was.
#[test]
fn a_later_failed_delete_changes_only_settlements_that_deleted() {
    let error = || "stale receipt".to_string();
    let cases = [
        (
            Settled::Acknowledged,
            Settled::AcknowledgeFailed { error: error() },
        ),
        (
            Settled::FollowedUp {
                retried: true,
                dead_lettered: false,
                acknowledge_error: None,
            },
            Settled::FollowedUp {
                retried: true,
                dead_lettered: false,
                acknowledge_error: Some(error()),
            },
        ),
        (
            Settled::AcknowledgeFailed {
                error: "first".into(),
            },
            Settled::AcknowledgeFailed {
                error: "first".into(),
            },
        ),
        (
            Settled::RetriedInPlace {
                delay_secs: 5,
                because: None,
            },
            Settled::RetriedInPlace {
                delay_secs: 5,
                because: None,
            },
        ),
        (
            Settled::Failed {
                error: "down".into(),
            },
            Settled::Failed {
                error: "down".into(),
            },
        ),
    ];
    for (before, after) in cases {
        let mut settled = before.clone();
        settled.acknowledgement_failed(error());
        assert_eq!(settled, after, "from {before:?}");
        assert!(!settled.comes_back() || before.comes_back(), "{before:?}");
    }
}
