use std::time::{Duration, Instant};

use super::*;

const TTL: Duration = Duration::from_secs(60);
const RETRY: Duration = Duration::from_secs(10);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// (case, what happened at which second: Some(value) read, None a failed read; the second
/// asked at; what `current` answers)
type Case = (&'static str, Vec<(u64, Option<u32>)>, u64, Option<u32>);

#[test]
fn a_failed_re_read_keeps_the_last_good_value_and_only_a_first_read_can_fail() {
    let cases: Vec<Case> = vec![
        ("nothing read yet", vec![], 0, None),
        ("fresh", vec![(0, Some(1))], 59, Some(1)),
        ("due at the ttl", vec![(0, Some(1))], 60, None),
        (
            "the first read failed: nothing to serve",
            vec![(0, None)],
            1,
            None,
        ),
        (
            "a failed re-read serves the last good until its retry",
            vec![(0, Some(1)), (60, None)],
            69,
            Some(1),
        ),
        ("then reads again", vec![(0, Some(1)), (60, None)], 70, None),
        (
            "failing for an hour still serves the last good between retries",
            (0..360)
                .map(|n| (60 + n * 10, None))
                .chain([(0, Some(1))])
                .collect(),
            3_655,
            Some(1),
        ),
        (
            "a later good read replaces it",
            vec![(0, Some(1)), (60, None), (70, Some(2))],
            75,
            Some(2),
        ),
    ];
    let start = Instant::now();
    for (case, mut events, at, expected) in cases {
        events.sort_by_key(|(second, _)| *second);
        let mut last = LastGood::default();
        for (second, read) in events {
            let now = start + secs(second);
            match read {
                Some(value) => {
                    last.succeeded(value, now);
                }
                None => {
                    let stale = last.failed(now, RETRY);
                    assert_eq!(
                        stale.is_some(),
                        last.good.is_some(),
                        "{case}: a failure serves the last good value exactly when there is one"
                    );
                }
            }
        }
        assert_eq!(
            last.current(start + secs(at), TTL).map(|v| *v),
            expected,
            "{case}"
        );
    }
}

#[test]
fn a_stale_value_says_how_old_it_is_and_forget_drops_it() {
    let start = Instant::now();
    let mut last = LastGood::default();
    last.succeeded("entry", start);
    let stale = last.failed(start + secs(90), RETRY).unwrap();
    assert_eq!(*stale.value, "entry");
    assert_eq!(stale.age, secs(90));
    last.forget();
    assert!(last.current(start + secs(91), TTL).is_none());
    assert!(last.failed(start + secs(92), RETRY).is_none());
}

#[test]
fn an_unchanged_read_refreshes_and_expire_makes_the_next_use_read() {
    let start = Instant::now();
    let mut last = LastGood::default();
    assert!(last.confirmed(start).is_none(), "nothing to confirm");
    last.succeeded(7, start);
    assert_eq!(last.confirmed(start + secs(59)).map(|v| *v), Some(7));
    assert_eq!(last.current(start + secs(100), TTL).map(|v| *v), Some(7));
    last.expire();
    assert!(last.current(start + secs(101), TTL).is_none());
    let stale = last.failed(start + secs(102), RETRY).unwrap();
    assert_eq!(*stale.value, 7);
    assert_eq!(last.current(start + secs(103), TTL).map(|v| *v), Some(7));
}
