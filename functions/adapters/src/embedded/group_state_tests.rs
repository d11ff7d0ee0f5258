//! `message_groups` against the messages it summarises: any sequence of the queue's writes
//! leaves each group's row equal to what its messages say, and every receive takes what
//! the FIFO rule allows and no less.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use rusqlite::Connection;

use super::group_commit_tests::TempQueueFile;
use super::{Clock, DeadLetterReason, Durability, EmbeddedQueue, ManualClock, MessageRef, Receipt};

const QUEUES: [&str; 3] = ["intake", "dispatch", "dispatch-retry"];

#[derive(Debug, Clone)]
enum Step {
    Send {
        queue: usize,
        group: u8,
    },
    SendDelayed {
        seconds: u64,
    },
    Receive {
        queue: usize,
        max: usize,
        seconds: u64,
    },
    Delete {
        pick: usize,
    },
    /// serve's settle: several deletes in one write (with no journal lines here).
    DeleteMany {
        picks: Vec<usize>,
    },
    ChangeVisibility {
        pick: usize,
        seconds: u64,
    },
    DeadLetter {
        pick: usize,
    },
    DeadLetterById {
        pick: usize,
    },
    Redrive {
        queue: usize,
    },
    ReleaseLeases {
        queue: usize,
    },
    Advance {
        seconds: u64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..2usize, 0..3u8).prop_map(|(queue, group)| Step::Send { queue, group }),
        1 => (0..3u64).prop_map(|seconds| Step::SendDelayed { seconds }),
        4 => (0..3usize, 1..4usize, 0..3u64)
            .prop_map(|(queue, max, seconds)| Step::Receive { queue, max, seconds }),
        3 => any::<usize>().prop_map(|pick| Step::Delete { pick }),
        2 => proptest::collection::vec(any::<usize>(), 1..4)
            .prop_map(|picks| Step::DeleteMany { picks }),
        1 => (any::<usize>(), 0..3u64)
            .prop_map(|(pick, seconds)| Step::ChangeVisibility { pick, seconds }),
        1 => any::<usize>().prop_map(|pick| Step::DeadLetter { pick }),
        1 => any::<usize>().prop_map(|pick| Step::DeadLetterById { pick }),
        1 => (0..3usize).prop_map(|queue| Step::Redrive { queue }),
        1 => (0..3usize).prop_map(|queue| Step::ReleaseLeases { queue }),
        2 => (0..4u64).prop_map(|seconds| Step::Advance { seconds }),
    ]
}

type Groups = Vec<(String, String, i64, i64)>;

fn stored_groups(connection: &Connection) -> Groups {
    rows(
        connection,
        "SELECT queue, group_id, head_id, hidden_until FROM message_groups
         ORDER BY queue, group_id",
    )
}

/// What the rows must say: each group's oldest message and latest hiding.
fn groups_from_messages(connection: &Connection) -> Groups {
    rows(
        connection,
        "SELECT queue, group_id, MIN(id), MAX(0, MAX(visible_at)) FROM messages
         GROUP BY queue, group_id ORDER BY queue, group_id",
    )
}

fn rows(connection: &Connection, sql: &str) -> Groups {
    let mut statement = connection.prepare(sql).unwrap();
    statement
        .query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A queue's messages by group, oldest first: (id, visible_at).
fn messages_by_group(connection: &Connection, queue: &str) -> BTreeMap<String, Vec<(i64, i64)>> {
    let mut statement = connection
        .prepare("SELECT group_id, id, visible_at FROM messages WHERE queue = ?1 ORDER BY id")
        .unwrap();
    let mut groups: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    let found = statement
        .query_map([queue], |row| {
            Ok((row.get::<_, String>(0)?, row.get(1)?, row.get(2)?))
        })
        .unwrap();
    for message in found {
        let (group, id, visible_at) = message.unwrap();
        groups.entry(group).or_default().push((id, visible_at));
    }
    groups
}

fn reason() -> DeadLetterReason {
    DeadLetterReason {
        reason: "test".to_string(),
        status: None,
        cluster: None,
        key: None,
        attempts: None,
    }
}

fn run(steps: &[Step]) {
    let file = TempQueueFile::new("groups");
    let clock = Arc::new(ManualClock::new(1_795_000_000_000));
    let queue = EmbeddedQueue::open_with_clock(&file.path, clock.clone()).unwrap();
    let reader = Connection::open(&file.path).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut receipts: Vec<Receipt> = Vec::new();
    let mut sent = 0u32;
    let pick =
        |receipts: &[Receipt], pick: usize| receipts.get(pick % receipts.len().max(1)).copied();
    for step in steps {
        // Refusals (a stale receipt, a message no longer in flight) are answers, not
        // failures: what matters is what the file holds after them.
        match *step {
            Step::Send {
                queue: which,
                group,
            } => {
                sent += 1;
                let id = format!("m{sent}");
                queue
                    .send(QUEUES[which], &format!("g{group}"), &id, &id)
                    .unwrap();
            }
            Step::SendDelayed { seconds } => {
                queue
                    .send_delayed(QUEUES[2], "later", Duration::from_secs(seconds))
                    .unwrap();
            }
            Step::Receive {
                queue: which,
                max,
                seconds,
            } => {
                let name = QUEUES[which];
                let now = clock.now_millis();
                let before = messages_by_group(&reader, name);
                let received = queue
                    .receive(name, max, Duration::from_secs(seconds))
                    .unwrap();
                assert!(received.len() <= max);
                // Whole groups in turn: each group's oldest messages, in order, and all of
                // them unless the receive ran out of room.
                let mut taken: Vec<(String, Vec<i64>)> = Vec::new();
                for message in &received {
                    match taken.last_mut() {
                        Some((group, ids)) if *group == message.group_id => ids.push(message.id),
                        _ => taken.push((message.group_id.clone(), vec![message.id])),
                    }
                }
                for (at, (group, ids)) in taken.iter().enumerate() {
                    assert!(
                        taken[..at].iter().all(|(earlier, _)| earlier != group),
                        "{group} taken in two runs: {received:?}"
                    );
                    let messages = &before[group];
                    assert!(
                        messages.iter().all(|(_, visible_at)| *visible_at <= now),
                        "{group} had a message hidden: {messages:?}"
                    );
                    let oldest: Vec<i64> =
                        messages.iter().map(|(id, _)| *id).take(ids.len()).collect();
                    assert_eq!(*ids, oldest, "{group}: its oldest, in order");
                    let last = at + 1 == taken.len();
                    assert!(
                        last || ids.len() == messages.len(),
                        "{group} not taken whole"
                    );
                }
                // Room left over: every group with nothing hidden was taken.
                if received.len() < max {
                    for (group, messages) in &before {
                        let ready = messages.iter().all(|(_, visible_at)| *visible_at <= now);
                        assert!(
                            !ready || taken.iter().any(|(taken, _)| taken == group),
                            "a receive of {max} took {} and left {group}",
                            received.len()
                        );
                    }
                }
                receipts.extend(received.iter().map(|message| message.receipt));
            }
            Step::Delete { pick: at } => {
                if let Some(receipt) = pick(&receipts, at) {
                    let _ = queue.delete(&receipt);
                }
            }
            Step::DeleteMany { ref picks } => {
                let chosen: Vec<Receipt> =
                    picks.iter().filter_map(|at| pick(&receipts, *at)).collect();
                runtime
                    .block_on(queue.delete_and_record_async(
                        chosen,
                        Vec::new(),
                        Durability::Ordered,
                    ))
                    .unwrap();
            }
            Step::ChangeVisibility { pick: at, seconds } => {
                if let Some(receipt) = pick(&receipts, at) {
                    let _ = queue.change_visibility(&receipt, Duration::from_secs(seconds));
                }
            }
            Step::DeadLetter { pick: at } => {
                if let Some(receipt) = pick(&receipts, at) {
                    let _ = queue.dead_letter(receipt, &reason());
                }
            }
            Step::DeadLetterById { pick: at } => {
                if let Some(receipt) = pick(&receipts, at) {
                    let _ = queue.dead_letter(MessageRef::Id(receipt.message_id()), &reason());
                }
            }
            Step::Redrive { queue: which } => {
                queue.redrive(QUEUES[which], None).unwrap();
            }
            Step::ReleaseLeases { queue: which } => {
                queue.release_leases(QUEUES[which]).unwrap();
            }
            Step::Advance { seconds } => clock.advance(Duration::from_secs(seconds)),
        }
        assert_eq!(
            stored_groups(&reader),
            groups_from_messages(&reader),
            "after {step:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn each_groups_row_says_what_its_messages_say_and_receives_follow_the_fifo_rule(
        steps in proptest::collection::vec(step(), 1..60)
    ) {
        run(&steps);
    }
}
