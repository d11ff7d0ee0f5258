use time::Duration;

use super::*;
use crate::push::tests::sample_push;
use crate::push::{Dispatch, Push, PushEvent, RunInstant};

fn at(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_763_800_000).unwrap() + Duration::seconds(secs)
}

fn accepted(secs: i64) -> String {
    crate::ingest::rfc3339(at(secs))
}

/// A push accepted at `secs` on the wall clock and, if given, at `in_run` on a run's
/// monotonic clock.
fn push_at(secs: i64, in_run: Option<RunInstant>) -> Push {
    let mut push = sample_push();
    push.received_at = accepted(secs);
    push.accepted_in_run = in_run;
    push
}

fn wall(secs: i64) -> Push {
    push_at(secs, None)
}

fn run(run: u64, nanos: u64) -> Option<RunInstant> {
    Some(RunInstant { run, nanos })
}

fn dispatch(key: &str, git_ref: &str, received: i64, only: Option<&[&str]>) -> Dispatch {
    let mut push = sample_push();
    push.key = key.to_string();
    push.git_ref = git_ref.to_string();
    push.received_at = accepted(received);
    let mut dispatch = Dispatch::new("prod", push);
    dispatch.only = only.map(|only| only.iter().map(|s| s.to_string()).collect());
    dispatch
}

#[test]
fn a_delivery_covers_pushes_accepted_at_least_a_margin_before_it() {
    let deliveries = Deliveries::default();
    assert_eq!(deliveries.covering("prod", "receiver/ns/r", &wall(0)), None);
    deliveries.record("prod", "receiver/ns/r", at(10), None);
    // (accepted at, covered)
    for (received, covered) in [(0, true), (9, true), (10, false), (11, false), (30, false)] {
        assert_eq!(
            deliveries
                .covering("prod", "receiver/ns/r", &wall(received))
                .is_some(),
            covered,
            "accepted at {received} s, delivered at 10 s"
        );
    }
    // Per cluster and per target.
    assert_eq!(
        deliveries.covering("staging", "receiver/ns/r", &wall(0)),
        None
    );
    assert_eq!(
        deliveries.covering("prod", "receiver/ns/other", &wall(0)),
        None
    );
    // An earlier delivery never replaces a later one.
    deliveries.record("prod", "receiver/ns/r", at(5), None);
    assert!(
        deliveries
            .covering("prod", "receiver/ns/r", &wall(8))
            .is_some()
    );
    // An unreadable acceptance time is never covered.
    assert_eq!(
        deliveries.covering(
            "prod",
            "receiver/ns/r",
            &Push {
                received_at: "yesterday".into(),
                ..sample_push()
            }
        ),
        None
    );
}

/// `serve` accepts and dispatches in one process: a push and a delivery read in the same
/// run compare on its monotonic clock, exactly, and the wall clock (with its margin) is
/// used only when they cannot.
#[test]
fn a_delivery_in_the_run_that_accepted_the_push_covers_it_exactly() {
    // (case, delivery's wall second and run reading, push's wall second and run reading,
    // covered)
    #[allow(clippy::type_complexity)]
    let table: &[(
        &str,
        (i64, Option<RunInstant>),
        (i64, Option<RunInstant>),
        bool,
    )] = &[
        (
            "accepted a nanosecond before, same run",
            (10, run(7, 1_000)),
            (10, run(7, 999)),
            true,
        ),
        (
            "accepted at the same reading: not before",
            (10, run(7, 1_000)),
            (10, run(7, 1_000)),
            false,
        ),
        (
            "accepted after, same run",
            (10, run(7, 1_000)),
            (10, run(7, 1_001)),
            false,
        ),
        (
            "wall clock set back after the push: the run's clock decides (covered)",
            (3, run(7, 5_000)),
            (10, run(7, 4_000)),
            true,
        ),
        (
            "wall clock set forward before the delivery: the run's clock decides (not covered)",
            (3_600, run(7, 5_000)),
            (10, run(7, 6_000)),
            false,
        ),
        (
            "accepted by another run: the wall clock and its margin (covered)",
            (10, run(7, 1_000)),
            (8, run(6, 999_999)),
            true,
        ),
        (
            "accepted by another run: the wall clock and its margin (within it)",
            (10, run(7, 1_000)),
            (10, run(6, 1)),
            false,
        ),
        (
            "accepted by a Lambda ingest (no run reading): wall clock, covered",
            (10, run(7, 1_000)),
            (9, None),
            true,
        ),
        (
            "accepted by a Lambda ingest: wall clock, within the margin",
            (10, run(7, 1_000)),
            (10, None),
            false,
        ),
        (
            "delivered by a process without a run clock (Lambda): wall clock, covered",
            (10, None),
            (9, run(7, 1)),
            true,
        ),
        (
            "delivered by a process without a run clock: wall clock, within the margin",
            (10, None),
            (10, run(7, 1)),
            false,
        ),
    ];
    for (case, (delivered, delivered_in_run), (received, accepted_in_run), covered) in table {
        let deliveries = Deliveries::default();
        deliveries.record("prod", "receiver/ns/r", at(*delivered), *delivered_in_run);
        assert_eq!(
            deliveries
                .covering(
                    "prod",
                    "receiver/ns/r",
                    &push_at(*received, *accepted_in_run)
                )
                .is_some(),
            *covered,
            "{case}"
        );
    }
}

/// The memory keeps the latest delivery of each kind: an earlier one recorded after it
/// (calls finish out of order) changes nothing, and a later one moves both readings.
#[test]
fn the_latest_delivery_is_kept_on_both_clocks() {
    let deliveries = Deliveries::default();
    deliveries.record("prod", "receiver/ns/r", at(10), run(7, 5_000));
    deliveries.record("prod", "receiver/ns/r", at(11), run(7, 4_000));
    let covered = |received, nanos| {
        deliveries
            .covering("prod", "receiver/ns/r", &push_at(received, run(7, nanos)))
            .is_some()
    };
    assert!(
        covered(20, 4_999),
        "the earlier run reading replaced the later"
    );
    assert!(!covered(0, 5_000));
    deliveries.record("prod", "receiver/ns/r", at(12), run(7, 9_000));
    assert!(covered(20, 8_999));
    // A delivery without a run reading keeps the last one it had.
    deliveries.record("prod", "receiver/ns/r", at(13), None);
    assert!(covered(20, 8_999));
    assert!(!covered(0, 9_000));
}

#[test]
fn the_memory_is_bounded_and_forgets_the_oldest_first() {
    let deliveries = Deliveries::default();
    for i in 0..(MAX_REMEMBERED_DELIVERIES + 10) {
        deliveries.record("prod", &format!("t{i}"), at(i as i64), None);
    }
    assert!(
        deliveries.len() <= MAX_REMEMBERED_DELIVERIES,
        "{}",
        deliveries.len()
    );
    let newest = format!("t{}", MAX_REMEMBERED_DELIVERIES + 9);
    assert!(deliveries.covering("prod", &newest, &wall(0)).is_some());
    assert_eq!(deliveries.covering("prod", "t0", &wall(-100)), None);
}

#[test]
fn newer_pushes_of_the_same_scope_take_over_older_ones() {
    let main = "refs/heads/main";
    let a = dispatch("a", main, 1, None);
    let b = dispatch("b", main, 2, None);
    let c = dispatch("c", main, 3, None);
    let dev = dispatch("dev", "refs/heads/dev", 4, None);
    let narrow_old = dispatch("n", main, 0, Some(&["receiver/ns/r2"]));
    let narrow_new = dispatch("m", main, 5, Some(&["receiver/ns/r1"]));
    let mut tag = dispatch("t", main, 6, None);
    tag.push.event = PushEvent::TagPush;
    // (name, batch, expected: index of the message that takes over each)
    type Case<'a> = (&'a str, Vec<&'a Dispatch>, Vec<Option<usize>>);
    let cases: Vec<Case> = vec![
        ("one push", vec![&a], vec![None]),
        (
            "a burst collapses onto the newest",
            vec![&a, &b, &c],
            vec![Some(2), Some(2), None],
        ),
        (
            "queue order does not matter, acceptance does",
            vec![&c, &a, &b],
            vec![None, Some(0), Some(0)],
        ),
        (
            "another ref is never taken over",
            vec![&a, &dev],
            vec![None, None],
        ),
        (
            "a narrowed retry is taken over by a whole push",
            vec![&narrow_old, &a],
            vec![Some(1), None],
        ),
        (
            "a whole push is not taken over by a narrowed one",
            vec![&a, &narrow_new],
            vec![None, None],
        ),
        (
            "another event kind is never taken over",
            vec![&a, &tag],
            vec![None, None],
        ),
    ];
    for (name, batch, expected) in cases {
        assert_eq!(superseded_by(&batch), expected, "{name}");
    }
    // Equal acceptance times: the later in the queue is the newer.
    let same_time = dispatch("s", main, 1, None);
    assert_eq!(superseded_by(&[&a, &same_time]), vec![Some(1), None]);
    // Another instance or project is another scope.
    let mut other_project = dispatch("o", main, 9, None);
    other_project.push.project.id = 99;
    assert_eq!(superseded_by(&[&a, &other_project]), vec![None, None]);
    let mut other_instance = dispatch("i", main, 9, None);
    other_instance.push.instance = "https://gitlab.other.example".into();
    assert_eq!(superseded_by(&[&a, &other_instance]), vec![None, None]);
    // The same project id under other URLs (renamed between the pushes) matches other
    // GitRepositories: not taken over.
    let mut renamed = dispatch("r", main, 9, None);
    renamed.push.project.http_url = "https://gitlab.example.com/mike/renamed.git".into();
    assert_eq!(superseded_by(&[&a, &renamed]), vec![None, None]);
}
