#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Mutex;

use super::*;
use fluxrelay_core::ports::DeadLetterReason;

fn message(n: usize, bytes: usize) -> Outgoing {
    Outgoing {
        group_id: format!("g{}", n % 3),
        dedup_id: format!("d{n}"),
        body: "x".repeat(bytes),
    }
}

fn failure(index: usize, code: &str, sender_fault: bool) -> EntryFailure {
    EntryFailure {
        index,
        code: code.to_string(),
        sender_fault,
    }
}

#[test]
fn batches_hold_at_most_ten_entries_in_order() {
    let sizes: Vec<usize> = batches((0..25).map(|n| message(n, 10)).collect())
        .iter()
        .map(Vec::len)
        .collect();
    assert_eq!(sizes, vec![10, 10, 5]);
    let all: Vec<String> = batches((0..25).map(|n| message(n, 10)).collect())
        .into_iter()
        .flatten()
        .map(|m| m.dedup_id)
        .collect();
    assert_eq!(all, (0..25).map(|n| format!("d{n}")).collect::<Vec<_>>());
    assert!(batches(Vec::new()).is_empty());
}

#[test]
fn batches_stay_under_256_kib() {
    let sizes: Vec<usize> = batches((0..5).map(|n| message(n, 100 * 1024)).collect())
        .iter()
        .map(Vec::len)
        .collect();
    assert_eq!(sizes, vec![2, 2, 1]);
    // An oversized message travels alone rather than being dropped.
    let sizes: Vec<usize> = batches(vec![message(0, 10), message(1, 300 * 1024), message(2, 10)])
        .iter()
        .map(Vec::len)
        .collect();
    assert_eq!(sizes, vec![1, 1, 1]);
}

#[test]
fn visibility_is_clamped_to_twelve_hours() {
    assert_eq!(visibility_timeout(0), 0);
    assert_eq!(visibility_timeout(30), 30);
    assert_eq!(visibility_timeout(43_200), 43_200);
    assert_eq!(visibility_timeout(u32::MAX), 43_200);
}

/// Runs `send_with_retries` against scripted answers, recording which entries each
/// call carried.
fn run(
    batch_len: usize,
    answers: Vec<Result<Vec<EntryFailure>, QueueError>>,
) -> (Result<(), BatchFailure>, Vec<Vec<usize>>) {
    let calls = Mutex::new(Vec::new());
    let answers = Mutex::new(answers.into_iter());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let result = runtime.block_on(send_with_retries(
        (0..batch_len).map(|n| message(n, 1)).collect(),
        |pending| {
            calls
                .lock()
                .unwrap()
                .push(pending.iter().map(|(i, _)| *i).collect::<Vec<_>>());
            let answer = answers.lock().unwrap().next().unwrap_or(Ok(Vec::new()));
            async move { answer }
        },
    ));
    (result, calls.into_inner().unwrap())
}

#[test]
fn a_fully_accepted_batch_is_sent_once() {
    let (result, calls) = run(3, vec![Ok(Vec::new())]);
    assert_eq!(result, Ok(()));
    assert_eq!(calls, vec![vec![0, 1, 2]]);
}

#[test]
fn only_the_failed_entries_are_resent() {
    let (result, calls) = run(
        4,
        vec![
            Ok(vec![
                failure(1, "InternalError", false),
                failure(3, "InternalError", false),
            ]),
            Ok(Vec::new()),
        ],
    );
    assert_eq!(result, Ok(()));
    assert_eq!(calls, vec![vec![0, 1, 2, 3], vec![1, 3]]);
}

#[test]
fn server_failures_are_retried_three_attempts_in_all_then_reported() {
    let always = || Ok(vec![failure(2, "ServiceUnavailable", false)]);
    let (result, calls) = run(3, vec![always(), always(), always(), always()]);
    assert_eq!(calls, vec![vec![0, 1, 2], vec![2], vec![2]]);
    let failure = result.unwrap_err();
    assert_eq!(failure.failed, 1);
    assert!(
        failure.detail.contains("ServiceUnavailable"),
        "{}",
        failure.detail
    );
}

#[test]
fn sender_fault_failures_are_not_retried() {
    let (result, calls) = run(
        3,
        vec![
            Ok(vec![
                failure(0, "InvalidParameterValue", true),
                failure(1, "InternalError", false),
            ]),
            Ok(Vec::new()),
        ],
    );
    assert_eq!(calls, vec![vec![0, 1, 2], vec![1]]);
    let failure = result.unwrap_err();
    assert_eq!(failure.failed, 1);
    assert!(
        failure.detail.contains("InvalidParameterValue"),
        "{}",
        failure.detail
    );
    assert!(
        failure.detail.contains("sender fault"),
        "{}",
        failure.detail
    );
}

#[test]
fn a_failed_call_fails_every_pending_entry() {
    let (result, calls) = run(
        3,
        vec![
            Ok(vec![
                failure(0, "Bad", true),
                failure(2, "InternalError", false),
            ]),
            Err(QueueError::new("connection refused")),
        ],
    );
    assert_eq!(calls.len(), 2);
    let failure = result.unwrap_err();
    assert_eq!(failure.failed, 2);
    assert_eq!(failure.detail, "connection refused");
}

#[test]
fn attribute_values_lose_control_characters_and_stop_at_1024_bytes() {
    assert_eq!(attribute_value("a\nb\t\u{0}c\u{7f}\u{85}d"), "abcd");
    assert_eq!(attribute_value(&"x".repeat(2000)).len(), 1024);
    // A multi-byte character that would straddle the limit is left out whole.
    let text = format!("{}é", "x".repeat(1023));
    assert_eq!(attribute_value(&text), "x".repeat(1023));
}

#[test]
fn dead_letter_attributes_leave_out_what_is_absent_or_empty() {
    let attributes = dead_letter_attributes(&DeadLetterReason {
        reason: "receiver answered 400".into(),
        status: Some(400),
        cluster: Some("prod".into()),
        key: Some("\n".into()),
        attempts: None,
    });
    assert_eq!(
        attributes,
        vec![
            (ATTRIBUTE_REASON, "receiver answered 400".to_string()),
            (ATTRIBUTE_STATUS, "400".to_string()),
            (ATTRIBUTE_CLUSTER, "prod".to_string()),
        ]
    );
    let attributes = dead_letter_attributes(&DeadLetterReason::default());
    assert_eq!(
        attributes,
        vec![(ATTRIBUTE_REASON, "(no reason given)".to_string())]
    );
}

#[test]
fn only_messages_in_groups_of_their_own_may_be_sent_concurrently() {
    let in_group = |group: &str| Outgoing {
        group_id: group.into(),
        dedup_id: "d".into(),
        body: String::new(),
    };
    for (groups, distinct) in [
        (&[][..], true),
        (&["a"][..], true),
        (&["a", "b", "c"][..], true),
        (&["a", "b", "a"][..], false),
        (&["a", "a"][..], false),
    ] {
        let messages: Vec<Outgoing> = groups.iter().map(|g| in_group(g)).collect();
        assert_eq!(all_groups_distinct(&messages), distinct, "{groups:?}");
    }
}
