//! Group commit on a real queue file: the test holds the writer's connection while the
//! writes gather, so they are taken as one group, then checks each caller's answer and what
//! the file holds after reopening.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fluxrelay_core::ports::QueueError;

use super::{
    DeadLetterReason, Durability, EmbeddedQueue, INTAKE_QUEUE, JournalEntry, NewMessage, Receipt,
    SendOutcome, SystemClock,
};

const VISIBILITY: Duration = Duration::from_secs(30);

pub(super) struct TempQueueFile {
    pub(super) path: PathBuf,
}

impl TempQueueFile {
    pub(super) fn new(name: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "fluxrelay-group-{name}-{}-{}.sqlite",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let file = Self { path };
        file.remove();
        file
    }

    fn remove(&self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut file = self.path.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }
}

impl Drop for TempQueueFile {
    fn drop(&mut self) {
        self.remove();
    }
}

type Answer = JoinHandle<Result<SendOutcome, QueueError>>;

/// Runs `submit` with the writer's connection held until all `writes` are waiting, so the
/// writer takes them as one group once it is released; returns what `submit` returned.
fn in_one_group<T>(queue: &EmbeddedQueue, writes: u64, submit: impl FnOnce() -> T) -> T {
    let held = queue.inner.write_connection.lock().unwrap();
    let submitted = submit();
    let deadline = Instant::now() + Duration::from_secs(10);
    while queue.inner.writer.waiting() < writes {
        assert!(
            Instant::now() < deadline,
            "only {} of {writes} writes reached the writer",
            queue.inner.writer.waiting()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(held);
    submitted
}

fn send_in_thread(queue: &EmbeddedQueue, group: &str, dedup: &str, body: &str) -> Answer {
    let (queue, group, dedup, body) = (
        queue.clone(),
        group.to_string(),
        dedup.to_string(),
        body.to_string(),
    );
    std::thread::spawn(move || queue.send(INTAKE_QUEUE, &group, &dedup, &body))
}

#[test]
fn concurrent_sends_share_one_commit_and_each_gets_its_own_result() {
    let file = TempQueueFile::new("own-results");
    let queue = EmbeddedQueue::open(&file.path).unwrap();
    let before = queue.group_commit_stats();
    // 20 distinct pushes, a second delivery of push 7's dedup id, and one invalid send.
    let (distinct, duplicate, invalid) = in_one_group(&queue, 22, || {
        let distinct: Vec<Answer> = (0..20)
            .map(|n| {
                let id = format!("push-{n}");
                send_in_thread(&queue, &format!("project-{}", n % 3), &id, &id)
            })
            .collect();
        let duplicate = send_in_thread(&queue, "project-1", "push-7", "push-7 again");
        let invalid = send_in_thread(&queue, "", "push-invalid", "no group");
        (distinct, duplicate, invalid)
    });
    let mut outcomes: Vec<SendOutcome> = distinct
        .into_iter()
        .map(|answer| answer.join().unwrap().unwrap())
        .collect();
    outcomes.push(duplicate.join().unwrap().unwrap());
    let invalid = invalid.join().unwrap();

    let after = queue.group_commit_stats();
    assert_eq!(after.commits - before.commits, 1, "one transaction for all");
    assert_eq!(after.writes - before.writes, 22);
    // Push 7 is not yet received, so both its sends are enqueued; the receive delivers it
    // once (below).
    assert!(
        outcomes
            .iter()
            .all(|outcome| *outcome == SendOutcome::Enqueued),
        "{outcomes:?}"
    );
    assert_eq!(outcomes.len(), 21);
    let error = invalid.expect_err("an empty group id is refused");
    assert!(error.message.contains("group id"), "{error}");

    // Durable: another process reading the file finds the 20 pushes, once each.
    drop(queue);
    let reopened = EmbeddedQueue::open(&file.path).unwrap();
    let mut bodies: Vec<String> = reopened
        .receive(INTAKE_QUEUE, 100, VISIBILITY)
        .unwrap()
        .into_iter()
        .map(|message| message.body)
        .collect();
    bodies.sort();
    let push_7: Vec<&String> = bodies.iter().filter(|b| b.starts_with("push-7")).collect();
    assert_eq!(push_7.len(), 1, "{bodies:?}");
    assert_eq!(bodies.len(), 20, "{bodies:?}");
    assert!(!bodies.iter().any(|body| body == "no group"));
}

#[test]
fn a_failing_commit_fails_every_write_of_its_group_and_stores_none() {
    let file = TempQueueFile::new("failed-commit");
    let queue = EmbeddedQueue::open(&file.path).unwrap();
    {
        // A deferred foreign key is checked at COMMIT: a real commit that SQLite refuses.
        let connection = queue.inner.write_connection.lock().unwrap();
        connection
            .execute_batch(
                "PRAGMA foreign_keys = ON;
                 CREATE TABLE parent (id INTEGER PRIMARY KEY);
                 CREATE TABLE child (parent INTEGER REFERENCES parent (id)
                                     DEFERRABLE INITIALLY DEFERRED);",
            )
            .unwrap();
    }
    let (sends, breaker) = in_one_group(&queue, 11, || {
        let sends: Vec<Answer> = (0..10)
            .map(|n| {
                let id = format!("push-{n}");
                send_in_thread(&queue, "project", &id, &id)
            })
            .collect();
        let writer = queue.clone();
        let breaker = std::thread::spawn(move || {
            writer.write(|transaction, _| {
                transaction
                    .execute("INSERT INTO child (parent) VALUES (42)", [])
                    .map_err(|error| QueueError::new(error.to_string()))
            })
        });
        (sends, breaker)
    });
    for send in sends {
        let error = send.join().unwrap().expect_err("its group's commit failed");
        assert!(error.message.contains("commit"), "{error}");
    }
    assert!(breaker.join().unwrap().is_err());
    assert_eq!(queue.group_commit_stats().commits, 0);

    // Nothing of the group is stored, no deduplication id is consumed, and the writer
    // goes on: the same pushes sent again are enqueued.
    let depth = queue.depth(INTAKE_QUEUE).unwrap();
    assert_eq!(depth.visible + depth.in_flight, 0);
    for n in 0..10 {
        let id = format!("push-{n}");
        let outcome = queue.send(INTAKE_QUEUE, "project", &id, &id).unwrap();
        assert_eq!(outcome, SendOutcome::Enqueued, "{id}");
    }
    drop(queue);
    let reopened = EmbeddedQueue::open(&file.path).unwrap();
    assert_eq!(reopened.depth(INTAKE_QUEUE).unwrap().visible, 10);
}

/// The `synchronous` level the group's transaction runs under: 2 = FULL (fsync at commit),
/// 1 = NORMAL (WAL: no fsync of its own).
fn synchronous_level(queue: &EmbeddedQueue, durability: Durability) -> JoinHandle<i64> {
    let queue = queue.clone();
    std::thread::spawn(move || {
        queue
            .inner
            .writer
            .write(durability, |transaction, _| {
                transaction
                    .pragma_query_value(None, "synchronous", |row| row.get(0))
                    .map_err(|error| QueueError::new(error.to_string()))
            })
            .unwrap()
    })
}

#[test]
fn a_group_fsyncs_when_one_of_its_writes_is_synced_and_only_then() {
    let file = TempQueueFile::new("durability");
    let queue = EmbeddedQueue::open(&file.path).unwrap();
    let before = queue.group_commit_stats();

    let ordered = in_one_group(&queue, 3, || {
        (0..3)
            .map(|_| synchronous_level(&queue, Durability::Ordered))
            .collect::<Vec<_>>()
    });
    for level in ordered {
        assert_eq!(level.join().unwrap(), 1, "ordered only: NORMAL");
    }
    let middle = queue.group_commit_stats();
    assert_eq!(middle.commits - before.commits, 1);
    assert_eq!(middle.synced_commits, before.synced_commits, "no fsync");

    let mixed = in_one_group(&queue, 3, || {
        vec![
            synchronous_level(&queue, Durability::Ordered),
            synchronous_level(&queue, Durability::Synced),
            synchronous_level(&queue, Durability::Ordered),
        ]
    });
    for level in mixed {
        assert_eq!(
            level.join().unwrap(),
            2,
            "one synced write: the group is FULL"
        );
    }
    let after = queue.group_commit_stats();
    assert_eq!(after.commits - middle.commits, 1);
    assert_eq!(after.synced_commits - middle.synced_commits, 1);

    // And back: the next ordered group does not inherit the FULL of the last one.
    assert_eq!(
        synchronous_level(&queue, Durability::Ordered)
            .join()
            .unwrap(),
        1
    );
}

/// Which of the queue's writes wait for an fsync: the acknowledged ones (a push behind its
/// `202`, an operator's command) and no other.
#[test]
fn each_write_of_the_queue_has_the_durability_its_caller_promises() {
    type Write = fn(&EmbeddedQueue, Receipt);
    let cases: [(&str, Write, bool); 12] = [
        (
            "send (a push behind its 202)",
            |q, _| {
                q.send(INTAKE_QUEUE, "p", "push-x", "x").unwrap();
            },
            true,
        ),
        (
            "send_batch",
            |q, _| {
                q.send_batch(INTAKE_QUEUE, &[NewMessage::new("p", "push-y", "y")])
                    .unwrap();
            },
            true,
        ),
        (
            "receive",
            |q, _| {
                q.receive(INTAKE_QUEUE, 1, VISIBILITY).unwrap();
            },
            false,
        ),
        ("delete", |q, receipt| q.delete(&receipt).unwrap(), false),
        (
            "change_visibility",
            |q, receipt| {
                q.change_visibility(&receipt, Duration::ZERO).unwrap();
            },
            false,
        ),
        (
            "send_delayed (a retry, a recheck)",
            |q, _| {
                q.send_delayed("dispatch-retry", "r", VISIBILITY).unwrap();
            },
            false,
        ),
        (
            "dead_letter_copy (settling)",
            |q, receipt| {
                q.dead_letter_copy(&receipt, None, "body", &DeadLetterReason::default())
                    .unwrap();
            },
            false,
        ),
        (
            "delete_and_record, deferred (serve's dispatch settling)",
            |q, receipt| {
                settle_deferred(q, receipt, "push-d")
                    .join()
                    .unwrap()
                    .unwrap();
            },
            false,
        ),
        (
            "record (the journal)",
            |q, _| {
                q.record(&[JournalEntry::new("push-0", None, "accepted", "")])
                    .unwrap();
            },
            false,
        ),
        (
            "release_leases (start-up)",
            |q, _| {
                q.release_leases(INTAKE_QUEUE).unwrap();
            },
            true,
        ),
        (
            "redrive (an operator)",
            |q, _| {
                q.redrive(INTAKE_QUEUE, None).unwrap();
            },
            true,
        ),
        (
            "dead_letter (an operator)",
            |q, receipt| {
                q.dead_letter(receipt, &DeadLetterReason::default())
                    .unwrap();
            },
            true,
        ),
    ];
    let file = TempQueueFile::new("durability-table");
    let queue = EmbeddedQueue::open(&file.path).unwrap();
    for n in 0..cases.len() {
        let id = format!("push-{n}");
        queue.send(INTAKE_QUEUE, &id, &id, &id).unwrap();
    }
    for (name, write, synced) in cases {
        // A delivery for the writes that settle one (its receive is a commit of its own).
        let received = queue.receive(INTAKE_QUEUE, 1, VISIBILITY).unwrap();
        let before = queue.group_commit_stats();
        write(&queue, received[0].receipt);
        let after = queue.group_commit_stats();
        assert_eq!(after.commits - before.commits, 1, "{name}: one commit");
        let fsynced = after.synced_commits - before.synced_commits == 1;
        assert_eq!(fsynced, synced, "{name}");
    }
}

/// The writer's statements stay prepared: a receive's, whatever batch size its caller
/// asks for (SQLite re-prepared it for each new `LIMIT` while plans could depend on the
/// values bound), and each statement of a write's savepoint (a group run again after a
/// write failed).
#[test]
fn the_writer_prepares_each_statement_once() {
    let file = TempQueueFile::new("prepared-once");
    let queue = EmbeddedQueue::open(&file.path).unwrap();
    for n in 0..5 {
        let id = format!("push-{n}");
        // The second send fails (no group id): the group runs again, in savepoints.
        let (sent, refused) = in_one_group(&queue, 2, || {
            (
                send_in_thread(&queue, &format!("project-{n}"), &id, &id),
                send_in_thread(&queue, "", &id, &id),
            )
        });
        assert_eq!(sent.join().unwrap().unwrap(), SendOutcome::Enqueued);
        assert!(refused.join().unwrap().is_err());
    }
    assert_eq!(queue.group_commit_stats().reruns, 5);
    for limit in [1, 100, 2, 1000, 3, 7] {
        let received = queue.receive(INTAKE_QUEUE, limit, VISIBILITY).unwrap();
        for message in &received {
            queue
                .change_visibility(&message.receipt, Duration::ZERO)
                .unwrap();
        }
    }
    let connection = queue.inner.write_connection.lock().unwrap();
    for sql in [
        super::store::READY_GROUPS,
        super::store::GROUP_MESSAGES,
        "SAVEPOINT write",
        "RELEASE write",
    ] {
        let statement = connection.prepare_cached(sql).unwrap();
        assert_eq!(
            statement.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "{sql}"
        );
        // Run by every receive and write above, so it came from the cache.
        assert!(
            statement.get_status(rusqlite::StatementStatus::Run) > 0,
            "{sql}"
        );
    }
    // Bound values no longer inform the plans; they still take groups and messages in
    // index order instead of sorting what they found (a backlog of thousands).
    for sql in [super::store::READY_GROUPS, super::store::GROUP_MESSAGES] {
        let statement = connection.prepare_cached(sql).unwrap();
        assert_eq!(
            statement.get_status(rusqlite::StatementStatus::Sort),
            0,
            "{sql}"
        );
    }
    drop(connection);

    // The read connection's look before each receive (`LIMIT 1`, a new `now` each time)
    // keeps its plan too: re-preparing it was 5 % of serve's CPU at 20 clusters.
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(2));
        assert!(
            queue
                .receive("dispatch", 10, VISIBILITY)
                .unwrap()
                .is_empty()
        );
    }
    let reader = queue.inner.reader.lock().unwrap();
    let look = reader.prepare_cached(super::store::READY_GROUPS).unwrap();
    assert!(look.get_status(rusqlite::StatementStatus::Run) >= 5);
    assert_eq!(look.get_status(rusqlite::StatementStatus::RePrepare), 0);
}

/// A receive that finds nothing deliverable takes no write lock and commits nothing (the
/// workers look again after every batch and wake-up); one that finds a message commits
/// once, and a message in flight or delayed is not deliverable.
#[test]
fn a_receive_that_finds_nothing_commits_nothing() {
    let file = TempQueueFile::new("empty-receive");
    let queue = EmbeddedQueue::open(&file.path).unwrap();
    let commits = |queue: &EmbeddedQueue| queue.group_commit_stats().commits;

    assert_empty_without_commit(&queue, INTAKE_QUEUE, "empty queue");

    queue.send(INTAKE_QUEUE, "p", "push-1", "one").unwrap();
    let before = commits(&queue);
    let received = queue.receive(INTAKE_QUEUE, 10, VISIBILITY).unwrap();
    assert_eq!(received.len(), 1);
    assert_eq!(commits(&queue), before + 1, "a message to take");

    assert_empty_without_commit(&queue, INTAKE_QUEUE, "its group in flight");

    queue
        .send_delayed("dispatch-retry", "later", Duration::from_secs(60))
        .unwrap();
    assert_empty_without_commit(&queue, "dispatch-retry", "a delayed message");

    queue
        .change_visibility(&received[0].receipt, Duration::ZERO)
        .unwrap();
    let again = queue.receive(INTAKE_QUEUE, 10, VISIBILITY).unwrap();
    assert_eq!(again.len(), 1, "visible again");
}

/// A receive on `queue` finds nothing and commits nothing.
fn assert_empty_without_commit(queue: &EmbeddedQueue, name: &str, case: &str) {
    let before = queue.group_commit_stats().commits;
    assert!(
        queue.receive(name, 10, VISIBILITY).unwrap().is_empty(),
        "{case}"
    );
    assert_eq!(queue.group_commit_stats().commits, before, "{case}");
}

/// A receive does not wait for a read connection busy with a scrape: it asks the writer.
#[test]
fn a_receive_does_not_wait_for_a_busy_reader() {
    let file = TempQueueFile::new("busy-reader");
    let queue = EmbeddedQueue::open(&file.path).unwrap();
    queue.send(INTAKE_QUEUE, "p", "push-1", "one").unwrap();
    let scrape = queue.inner.reader.lock().unwrap();
    let before = queue.group_commit_stats().commits;
    let received = queue.receive(INTAKE_QUEUE, 10, VISIBILITY).unwrap();
    assert_eq!(received.len(), 1);
    assert!(
        queue
            .receive(INTAKE_QUEUE, 10, VISIBILITY)
            .unwrap()
            .is_empty()
    );
    // Both went to the writer, the empty one included.
    assert_eq!(queue.group_commit_stats().commits, before + 2);
    drop(scrape);
}

/// The steps SQLite's virtual machine ran for `sql` on `connection` while `run` ran (the
/// same on every machine, unlike a time).
fn vm_steps(
    connection: &std::sync::Mutex<rusqlite::Connection>,
    sql: &str,
    run: impl FnOnce(),
) -> i32 {
    let status = rusqlite::StatementStatus::VmStep;
    connection
        .lock()
        .unwrap()
        .prepare_cached(sql)
        .unwrap()
        .reset_status(status);
    run();
    connection
        .lock()
        .unwrap()
        .prepare_cached(sql)
        .unwrap()
        .get_status(status)
}

/// What a look or a receive reads does not grow with the messages it cannot take: a
/// group's backlog behind its in-flight message, and an outage's delayed retries (each a
/// group of its own). It did: the look walked the queue message by message, and 100,000
/// messages behind one in flight took 65 ms to answer "nothing".
#[test]
fn a_receive_reads_nothing_of_a_blocked_backlog() {
    let steps = |backlog: usize| {
        let file = TempQueueFile::new(&format!("blocked-backlog-{backlog}"));
        let queue = EmbeddedQueue::open(&file.path).unwrap();
        queue
            .send(INTAKE_QUEUE, "busy", "in-flight", "first")
            .unwrap();
        assert_eq!(queue.receive(INTAKE_QUEUE, 1, VISIBILITY).unwrap().len(), 1);
        let behind: Vec<NewMessage> = (0..backlog)
            .map(|n| NewMessage::new("busy", format!("behind-{n}"), "behind"))
            .collect();
        queue.send_batch(INTAKE_QUEUE, &behind).unwrap();
        {
            let mut connection = queue.inner.write_connection.lock().unwrap();
            let transaction = connection.transaction().unwrap();
            let now = queue.inner.clock.now_millis();
            for n in 0..backlog {
                let id = format!("retry-{n}");
                let retry = NewMessage::new(id.clone(), id, "later");
                super::store::send_delayed(&transaction, "dispatch-retry", &retry, now, 3_600_000)
                    .unwrap();
            }
            transaction.commit().unwrap();
        }
        let reader = &queue.inner.reader;
        let writer = &*queue.inner.write_connection;
        let looks = vm_steps(reader, super::store::READY_GROUPS, || {
            assert!(
                queue
                    .receive(INTAKE_QUEUE, 10, VISIBILITY)
                    .unwrap()
                    .is_empty()
            );
            assert!(
                queue
                    .receive("dispatch-retry", 10, VISIBILITY)
                    .unwrap()
                    .is_empty()
            );
        });
        queue.send(INTAKE_QUEUE, "free", "free-1", "free").unwrap();
        let mut received = Vec::new();
        let groups = vm_steps(writer, super::store::READY_GROUPS, || {
            received = queue.receive(INTAKE_QUEUE, 10, VISIBILITY).unwrap();
        });
        let bodies: Vec<&str> = received.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, ["free"], "backlog {backlog}");
        (looks, groups)
    };
    let small = steps(10);
    let large = steps(20_000);
    println!("VM steps (looks, groups): 10 blocked {small:?}, 20,000 blocked {large:?}");
    // A B-tree one level deeper costs a few steps; a walk would cost 20,000 and more.
    assert!(
        large.0 <= small.0 + 50,
        "looks: {small:?} against {large:?}"
    );
    assert!(
        large.1 <= small.1 + 50,
        "groups: {small:?} against {large:?}"
    );
}

/// `receive_async`, serve's receive, follows the same rule without a blocking thread:
/// nothing deliverable commits nothing, a message is taken in one commit, and a reader
/// busy with a scrape is not waited for.
#[test]
fn an_async_receive_looks_first_and_does_not_wait_for_a_busy_reader() {
    let file = TempQueueFile::new("async-receive");
    let queue = EmbeddedQueue::open(&file.path).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let receive = |queue: &EmbeddedQueue| {
        runtime
            .block_on(queue.receive_async(INTAKE_QUEUE, 10, VISIBILITY))
            .unwrap()
    };
    let commits = |queue: &EmbeddedQueue| queue.group_commit_stats().commits;

    let before = commits(&queue);
    assert!(receive(&queue).is_empty());
    assert_eq!(commits(&queue), before, "empty queue: no commit");

    queue.send(INTAKE_QUEUE, "p", "push-1", "one").unwrap();
    let before = commits(&queue);
    assert_eq!(receive(&queue).len(), 1);
    assert_eq!(commits(&queue), before + 1, "a message to take");
    assert!(receive(&queue).is_empty(), "its group in flight");
    assert_eq!(
        commits(&queue),
        before + 1,
        "its group in flight: no commit"
    );

    queue.send(INTAKE_QUEUE, "q", "push-2", "two").unwrap();
    let scrape = queue.inner.reader.lock().unwrap();
    let before = commits(&queue);
    assert_eq!(receive(&queue).len(), 1, "taken past a busy reader");
    assert!(receive(&queue).is_empty());
    // Both went to the writer, the empty one included.
    assert_eq!(commits(&queue), before + 2);
    drop(scrape);
}

/// serve's dispatch settles a cluster in one write: its messages deleted and the journal
/// lines that explain them. A stale receipt fails alone, and journal lines that cannot be
/// written are rolled back alone: explaining never holds up a delete.
#[test]
fn deletes_and_their_journal_lines_are_one_write_and_a_failing_journal_keeps_the_deletes() {
    let file = TempQueueFile::new("delete-and-record");
    let queue = EmbeddedQueue::open(&file.path).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let received = delivered(&queue, 3);
    let stale = Receipt {
        receive_count: received[1].receipt.receive_count + 1,
        ..received[1].receipt
    };
    let line = |key: &str| JournalEntry::new(key, Some("prod"), "delivered", "Receiver a/b");

    let before = queue.group_commit_stats().commits;
    let done = runtime
        .block_on(queue.delete_and_record_async(
            vec![received[0].receipt, stale],
            vec![line("push-0"), line("push-1")],
            Durability::Ordered,
        ))
        .unwrap();
    assert_eq!(queue.group_commit_stats().commits, before + 1, "one commit");
    assert!(done.deleted[0].is_ok(), "{:?}", done.deleted);
    assert!(
        done.deleted[1].is_err(),
        "a stale receipt: {:?}",
        done.deleted
    );
    assert!(done.recorded.is_ok(), "{:?}", done.recorded);
    assert_eq!(queue.journal("push-0").unwrap().len(), 1);
    assert_eq!(queue.journal("push-1").unwrap().len(), 1);
    assert_eq!(queue.peek(INTAKE_QUEUE).unwrap().len(), 2, "push-0 deleted");

    // A journal that refuses its lines (a real failure inside SQLite, from a trigger).
    rusqlite::Connection::open(&file.path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON journal
             BEGIN SELECT RAISE(ABORT, 'journal refused'); END;",
        )
        .unwrap();
    let done = runtime
        .block_on(queue.delete_and_record_async(
            vec![received[1].receipt, received[2].receipt],
            vec![line("push-1"), line("push-2")],
            Durability::Ordered,
        ))
        .unwrap();
    assert!(done.deleted.iter().all(Result::is_ok), "{:?}", done.deleted);
    let refused = done.recorded.unwrap_err().to_string();
    assert!(refused.contains("journal refused"), "{refused}");
    assert!(
        queue.peek(INTAKE_QUEUE).unwrap().is_empty(),
        "the deletes stand"
    );
    assert_eq!(
        queue.journal("push-1").unwrap().len(),
        1,
        "no line of this write"
    );
    assert!(queue.journal("push-2").unwrap().is_empty());
}

/// `push-0` … `push-{count - 1}`, each in a group of its own, sent and received.
fn delivered(queue: &EmbeddedQueue, count: usize) -> Vec<super::Received> {
    for n in 0..count {
        let id = format!("push-{n}");
        queue
            .send(INTAKE_QUEUE, &format!("cluster-{n}"), &id, &id)
            .unwrap();
    }
    let received = queue.receive(INTAKE_QUEUE, 10, VISIBILITY).unwrap();
    assert_eq!(received.len(), count);
    received
}

/// Deletes and journal lines of a delivered message, as serve's dispatch settles it.
fn settle_deferred(
    queue: &EmbeddedQueue,
    receipt: Receipt,
    key: &str,
) -> JoinHandle<Result<super::DeletedAndRecorded, QueueError>> {
    let (queue, key) = (queue.clone(), key.to_string());
    std::thread::spawn(move || {
        let line = JournalEntry::new(&key, Some("prod"), "delivered", "Receiver a/b");
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(queue.delete_and_record_async(
                vec![receipt],
                vec![line],
                Durability::Deferred,
            ))
    })
}

/// Until the deferred write is submitted. It then counts as waiting until its group is
/// committed, which the wait for company puts off.
fn wait_until_submitted(queue: &EmbeddedQueue) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while queue.inner.writer.waiting() == 0 {
        assert!(
            Instant::now() < deadline,
            "the deferred write was never submitted, or was committed at once"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A deferred write that has nothing to share a commit with waits for a write someone
/// waits on, and commits in its group; that write (a webhook's synced send) is not held
/// back by it.
#[test]
fn a_deferred_write_commits_with_the_next_write_someone_waits_for() {
    let file = TempQueueFile::new("deferred-company");
    // Far longer than the test: only company ends the wait here.
    let queue =
        EmbeddedQueue::open_deferring(&file.path, Arc::new(SystemClock), Duration::from_secs(600))
            .unwrap();
    let received = delivered(&queue, 2);
    let before = queue.group_commit_stats();

    let deferred = settle_deferred(&queue, received[0].receipt, "push-0");
    wait_until_submitted(&queue);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !deferred.is_finished(),
        "answered without a commit to share"
    );
    assert_eq!(queue.group_commit_stats(), before, "committed alone");

    let (sent, answer) = std::sync::mpsc::channel();
    let sender = queue.clone();
    std::thread::spawn(move || {
        let _ = sent.send(sender.send(INTAKE_QUEUE, "cluster-9", "push-9", "x"));
    });
    let outcome = answer
        .recv_timeout(Duration::from_secs(10))
        .expect("the synced send waited for the deferred write's bound");
    assert!(matches!(outcome, Ok(SendOutcome::Enqueued)), "{outcome:?}");
    let settled = deferred.join().unwrap().unwrap();
    assert!(settled.deleted[0].is_ok(), "{:?}", settled.deleted);
    assert!(settled.recorded.is_ok(), "{:?}", settled.recorded);

    let after = queue.group_commit_stats();
    assert_eq!(after.commits - before.commits, 1, "one commit for both");
    assert_eq!(after.synced_commits - before.synced_commits, 1, "fsynced");
    assert_eq!(after.writes - before.writes, 2);
    assert_eq!(queue.journal("push-0").unwrap().len(), 1);
    assert_eq!(
        queue.peek(INTAKE_QUEUE).unwrap(),
        ["push-1", "x"],
        "push-0 deleted"
    );
}

/// With no other write coming, a deferred write commits on its own once its bound has
/// passed; deferred writes that come meanwhile join it.
#[test]
fn deferred_writes_alone_commit_together_after_their_bound() {
    let file = TempQueueFile::new("deferred-alone");
    let bound = Duration::from_millis(300);
    let queue = EmbeddedQueue::open_deferring(&file.path, Arc::new(SystemClock), bound).unwrap();
    let received = delivered(&queue, 2);
    let before = queue.group_commit_stats();
    let started = Instant::now();
    let first = settle_deferred(&queue, received[0].receipt, "push-0");
    wait_until_submitted(&queue);
    let second = settle_deferred(&queue, received[1].receipt, "push-1");
    for settled in [first.join(), second.join()] {
        let settled = settled.unwrap().unwrap();
        assert!(settled.deleted[0].is_ok(), "{:?}", settled.deleted);
    }
    assert!(started.elapsed() >= bound, "committed before its bound");
    let after = queue.group_commit_stats();
    assert_eq!(after.commits - before.commits, 1, "one commit for both");
    assert_eq!(after.synced_commits, before.synced_commits, "not fsynced");
    assert!(queue.peek(INTAKE_QUEUE).unwrap().is_empty());
}

#[test]
fn the_reader_keeps_a_small_page_cache_and_the_writer_the_default() {
    let file = TempQueueFile::new("cache-sizes");
    let queue = EmbeddedQueue::open(&file.path).unwrap();
    let cache_size = |connection: &rusqlite::Connection| -> i64 {
        connection
            .pragma_query_value(None, "cache_size", |row| row.get(0))
            .unwrap()
    };
    assert_eq!(cache_size(&queue.read()), -super::READER_CACHE_KIB);
    assert_eq!(
        cache_size(&queue.inner.write_connection.lock().unwrap()),
        -2000
    );
}

/// A setting of the writer's connection, as SQLite reports it.
fn writer_pragma(queue: &EmbeddedQueue, pragma: &str) -> i64 {
    queue
        .inner
        .write_connection
        .lock()
        .unwrap()
        .pragma_query_value(None, pragma, |row| row.get(0))
        .unwrap()
}

#[test]
fn the_writer_keeps_statement_journals_in_memory() {
    let file = TempQueueFile::new("temp-store");
    let queue = EmbeddedQueue::open(&file.path).unwrap();
    let temp_store = writer_pragma(&queue, "temp_store");
    // 2 is MEMORY; the default (0) spills a savepoint's journal past 64 KiB to a file.
    assert_eq!(temp_store, 2);
}

/// The messages a queue holds, by deduplication id, read straight from the file.
fn stored_dedup_ids(queue: &EmbeddedQueue) -> Vec<String> {
    let connection = queue.inner.write_connection.lock().unwrap();
    let mut statement = connection
        .prepare("SELECT dedup_id FROM messages ORDER BY id")
        .unwrap();
    statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// How often the writer ran its savepoint statement (prepared once, so counted by SQLite).
fn savepoints_run(queue: &EmbeddedQueue) -> i32 {
    let connection = queue.inner.write_connection.lock().unwrap();
    let statement = connection.prepare_cached("SAVEPOINT write").unwrap();
    statement.get_status(rusqlite::StatementStatus::Run)
}

/// A savepoint copies every page its write touches into a statement journal; a group whose
/// writes all succeed needs none, and is committed once without them.
#[test]
fn a_group_whose_writes_all_succeed_runs_without_savepoints() {
    let file = TempQueueFile::new("no-savepoints");
    let queue = EmbeddedQueue::open(&file.path).unwrap();
    let before = queue.group_commit_stats();
    let sends = in_one_group(&queue, 10, || {
        (0..10)
            .map(|n| {
                let id = format!("push-{n}");
                send_in_thread(&queue, "project", &id, &id)
            })
            .collect::<Vec<Answer>>()
    });
    for send in sends {
        assert_eq!(send.join().unwrap().unwrap(), SendOutcome::Enqueued);
    }
    let received = queue.receive(INTAKE_QUEUE, 10, VISIBILITY).unwrap();
    queue.delete(&received[0].receipt).unwrap();
    let after = queue.group_commit_stats();
    assert_eq!(
        after.commits - before.commits,
        3,
        "the sends, the receive, the delete"
    );
    assert_eq!(after.reruns, before.reruns);
    assert_eq!(savepoints_run(&queue), 0);
}

/// A write that wrote and then failed is rolled back alone: the group is rolled back and
/// run again from its first write, each write in a savepoint, so the writes before and
/// after it commit with their own results and the failed one leaves nothing behind (not
/// even a deduplication id).
#[test]
fn a_write_that_fails_after_writing_is_rolled_back_alone_and_its_group_runs_again() {
    let file = TempQueueFile::new("rerun");
    let queue = EmbeddedQueue::open(&file.path).unwrap();
    let before = queue.group_commit_stats();
    let (first, half, last) = in_one_group(&queue, 3, || {
        let first = send_in_thread(&queue, "project", "first", "first");
        let batch = queue.clone();
        let half = std::thread::spawn(move || {
            // The first entry is written, then the second is refused (no group id).
            batch.send_batch(
                INTAKE_QUEUE,
                &[
                    NewMessage::new("project", "half-written", "kept?"),
                    NewMessage::new("", "refused", "no group"),
                ],
            )
        });
        let last = send_in_thread(&queue, "project", "last", "last");
        (first, half, last)
    });
    assert_eq!(first.join().unwrap().unwrap(), SendOutcome::Enqueued);
    let error = half
        .join()
        .unwrap()
        .expect_err("the batch has an entry without group");
    assert!(error.message.contains("group id"), "{error}");
    assert_eq!(last.join().unwrap().unwrap(), SendOutcome::Enqueued);
    let after = queue.group_commit_stats();
    assert_eq!(
        (after.commits - before.commits, after.reruns - before.reruns),
        (1, 1),
        "rolled back once, committed once"
    );
    assert!(savepoints_run(&queue) >= 3, "each write in its savepoint");

    let mut stored = stored_dedup_ids(&queue);
    stored.sort();
    assert_eq!(stored, ["first", "last"]);
    // Its deduplication id was not consumed either.
    let again = queue
        .send(INTAKE_QUEUE, "project", "half-written", "again")
        .unwrap();
    assert_eq!(again, SendOutcome::Enqueued);
}

/// A write that panics is answered with an error, is not run a second time (what it did
/// before panicking is rolled back with its savepoint), and the writer goes on.
#[test]
fn a_write_that_panics_fails_alone_and_is_not_run_again() {
    let file = TempQueueFile::new("panic");
    let queue = EmbeddedQueue::open(&file.path).unwrap();
    let runs = std::sync::Arc::new(AtomicU32::new(0));
    let (before, panicking, after) = in_one_group(&queue, 3, || {
        let before = send_in_thread(&queue, "project", "before", "before");
        let (writer, counted) = (queue.clone(), runs.clone());
        let panicking = std::thread::spawn(move || {
            writer.write::<()>(move |transaction, now| {
                counted.fetch_add(1, Ordering::SeqCst);
                let message = NewMessage::new("project", "panicked", "half");
                super::store::send(transaction, INTAKE_QUEUE, &message, now, 60_000)?;
                panic!("a bug in one write");
            })
        });
        let after = send_in_thread(&queue, "project", "after", "after");
        (before, panicking, after)
    });
    assert_eq!(before.join().unwrap().unwrap(), SendOutcome::Enqueued);
    let error: QueueError = panicking.join().unwrap().unwrap_err();
    assert!(error.message.contains("panicked"), "{error}");
    assert_eq!(after.join().unwrap().unwrap(), SendOutcome::Enqueued);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let mut stored = stored_dedup_ids(&queue);
    stored.sort();
    assert_eq!(stored, ["after", "before"]);
    assert_eq!(queue.group_commit_stats().reruns, 1);
}

/// Fewer, larger checkpoints: each writes every page the WAL holds, and under load the
/// same pages (the deduplication table's leaves) are in many consecutive WALs.
#[test]
fn the_writer_checkpoints_the_wal_after_16000_pages() {
    let file = TempQueueFile::new("wal-checkpoint");
    let queue = EmbeddedQueue::open(&file.path).unwrap();
    let pages = writer_pragma(&queue, "wal_autocheckpoint");
    assert_eq!(pages, 16_000);
}
