use time::Duration;

use super::*;
use crate::push::tests::sample_push;
use crate::push::{Dispatch, PushEvent};

fn at(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_763_800_000).unwrap() + Duration::seconds(secs)
}

fn accepted(secs: i64) -> String {
    crate::ingest::rfc3339(at(secs))
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
    assert_eq!(
        deliveries.covering("prod", "receiver/ns/r", &accepted(0)),
        None
    );
    deliveries.record("prod", "receiver/ns/r", at(10));
    // (accepted at, covered)
    for (received, covered) in [(0, true), (9, true), (10, false), (11, false), (30, false)] {
        assert_eq!(
            deliveries
                .covering("prod", "receiver/ns/r", &accepted(received))
                .is_some(),
            covered,
            "accepted at {received} s, delivered at 10 s"
        );
    }
    // Per cluster and per target.
    assert_eq!(
        deliveries.covering("staging", "receiver/ns/r", &accepted(0)),
        None
    );
    assert_eq!(
        deliveries.covering("prod", "receiver/ns/other", &accepted(0)),
        None
    );
    // An earlier delivery never replaces a later one.
    deliveries.record("prod", "receiver/ns/r", at(5));
    assert!(
        deliveries
            .covering("prod", "receiver/ns/r", &accepted(8))
            .is_some()
    );
    // An unreadable acceptance time is never covered.
    assert_eq!(
        deliveries.covering("prod", "receiver/ns/r", "yesterday"),
        None
    );
}

#[test]
fn the_memory_is_bounded_and_forgets_the_oldest_first() {
    let deliveries = Deliveries::default();
    for i in 0..(MAX_REMEMBERED_DELIVERIES + 10) {
        deliveries.record("prod", &format!("t{i}"), at(i as i64));
    }
    assert!(
        deliveries.len() <= MAX_REMEMBERED_DELIVERIES,
        "{}",
        deliveries.len()
    );
    let newest = format!("t{}", MAX_REMEMBERED_DELIVERIES + 9);
    assert!(deliveries.covering("prod", &newest, &accepted(0)).is_some());
    assert_eq!(deliveries.covering("prod", "t0", &accepted(-100)), None);
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
