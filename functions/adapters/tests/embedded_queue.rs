//! The embedded queue keeps the SQS FIFO semantics the handlers rely on: groups in order,
//! visibility and receive counts, 5-minute deduplication, dead letters, durability.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fluxrelay_adapters::embedded::{
    DEDUP_WINDOW, DISPATCH_QUEUE, DeadLetterReason, Depth, EmbeddedQueue, INTAKE_QUEUE,
    JOURNAL_RETENTION, JournalEntry, ManualClock, MessageRef, NewMessage, Receipt, Received,
    SendOutcome,
};
use fluxrelay_core::ports::{DispatchPublisher, PushPublisher};
use fluxrelay_core::push::{Dispatch, Push};
use fluxrelay_testkit::fixtures::push;

const VISIBILITY: Duration = Duration::from_secs(30);

/// A queue file under the temp directory, removed (with its WAL) on drop.
struct TempQueueFile {
    path: PathBuf,
}

impl TempQueueFile {
    fn new(name: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| since.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "fluxrelay-{name}-{}-{nanos}-{}.sqlite",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        Self { path }
    }

    /// A queue on a manual clock starting at a fixed, realistic instant.
    fn open_manual(&self) -> (EmbeddedQueue, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(1_795_000_000_000));
        let queue = EmbeddedQueue::open_with_clock(&self.path, clock.clone()).unwrap();
        (queue, clock)
    }
}

impl Drop for TempQueueFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut file = self.path.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }
}

fn bodies(received: &[Received]) -> Vec<&str> {
    received
        .iter()
        .map(|message| message.body.as_str())
        .collect()
}

fn send(queue: &EmbeddedQueue, group: &str, body: &str) {
    let outcome = queue.send("q", group, body, body).unwrap();
    assert_eq!(outcome, SendOutcome::Enqueued, "{body}");
}

fn reason(cluster: &str, key: &str) -> DeadLetterReason {
    DeadLetterReason {
        reason: "receiver answered 400".into(),
        status: Some(400),
        cluster: Some(cluster.into()),
        key: Some(key.into()),
        attempts: None,
    }
}

/// As SQS FIFO does: "attempts to return as many messages with the same message group ID
/// as possible" in one receive, then other groups' (AWS, "FIFO queue delivery logic").
#[test]
fn delivers_a_group_in_order_as_many_as_there_is_room_for_oldest_group_first() {
    let file = TempQueueFile::new("order");
    let (queue, _clock) = file.open_manual();
    for (group, body) in [
        ("a", "a1"),
        ("b", "b1"),
        ("a", "a2"),
        ("c", "c1"),
        ("b", "b2"),
    ] {
        send(&queue, group, body);
    }

    let received = queue.receive("q", 10, VISIBILITY).unwrap();

    assert_eq!(bodies(&received), ["a1", "a2", "b1", "b2", "c1"]);
    assert!(received.iter().all(|message| message.receive_count == 1));
    assert_eq!(received[0].group_id, "a");
}

#[test]
fn receives_at_most_max_messages_of_the_oldest_groups() {
    let file = TempQueueFile::new("max");
    let (queue, _clock) = file.open_manual();
    for body in ["x1", "y1", "x2"] {
        send(&queue, &body[..1], body);
    }

    assert_eq!(
        bodies(&queue.receive("q", 2, VISIBILITY).unwrap()),
        ["x1", "x2"]
    );
    assert!(queue.receive("q", 0, VISIBILITY).unwrap().is_empty());
}

#[test]
fn an_in_flight_message_blocks_its_group_only() {
    let file = TempQueueFile::new("blocks");
    let (queue, _clock) = file.open_manual();
    send(&queue, "a", "a1");
    let first = queue.receive("q", 1, VISIBILITY).unwrap();
    assert_eq!(bodies(&first), ["a1"]);
    send(&queue, "a", "a2");
    send(&queue, "b", "b1");

    assert_eq!(bodies(&queue.receive("q", 10, VISIBILITY).unwrap()), ["b1"]);
    assert!(queue.receive("q", 10, VISIBILITY).unwrap().is_empty());

    queue.delete(&first[0].receipt).unwrap();
    assert_eq!(bodies(&queue.receive("q", 10, VISIBILITY).unwrap()), ["a2"]);
}

#[test]
fn queues_are_independent() {
    let file = TempQueueFile::new("queues");
    let (queue, _clock) = file.open_manual();
    queue.send(INTAKE_QUEUE, "g", "same-id", "intake").unwrap();
    let outcome = queue
        .send(DISPATCH_QUEUE, "g", "same-id", "dispatch")
        .unwrap();

    assert_eq!(outcome, SendOutcome::Enqueued);
    let intake = queue.receive(INTAKE_QUEUE, 10, VISIBILITY).unwrap();
    assert_eq!(bodies(&intake), ["intake"]);
    assert_eq!(
        bodies(&queue.receive(DISPATCH_QUEUE, 10, VISIBILITY).unwrap()),
        ["dispatch"]
    );
}

#[test]
fn visibility_expiry_redelivers_with_receive_count_two() {
    let file = TempQueueFile::new("expiry");
    let (queue, clock) = file.open_manual();
    send(&queue, "a", "a1");
    let first = queue.receive("q", 1, VISIBILITY).unwrap();

    clock.advance(VISIBILITY - Duration::from_millis(1));
    assert!(queue.receive("q", 1, VISIBILITY).unwrap().is_empty());
    clock.advance(Duration::from_millis(1));
    let second = queue.receive("q", 1, VISIBILITY).unwrap();

    assert_eq!(bodies(&second), ["a1"]);
    assert_eq!(second[0].id, first[0].id);
    assert_eq!(second[0].receive_count, 2);
    assert_eq!(
        second[0].first_enqueued_at_ms,
        first[0].first_enqueued_at_ms
    );
    assert_ne!(second[0].receipt, first[0].receipt);
}

/// How long a message has waited is read on the queue's own clock, the one that stamped its
/// enqueue: route's hold-back under a burst ends by it (`route_pause`), so a test clock moves
/// it and a clock that steps back reads no wait rather than a negative one.
#[test]
fn a_message_has_waited_since_its_first_enqueue_on_the_queues_clock() {
    let file = TempQueueFile::new("waited");
    let (queue, clock) = file.open_manual();
    send(&queue, "a", "a1");
    clock.advance(Duration::from_millis(4_999));
    let received = queue.receive("q", 1, VISIBILITY).unwrap();
    assert_eq!(queue.waited(&received[0]), Duration::from_millis(4_999));

    // Received again after its lease ran out: still measured from the first enqueue.
    clock.advance(VISIBILITY);
    let again = queue.receive("q", 1, VISIBILITY).unwrap();
    assert_eq!(again[0].receive_count, 2);
    assert_eq!(
        queue.waited(&again[0]),
        Duration::from_millis(4_999) + VISIBILITY
    );

    clock.set(received[0].first_enqueued_at_ms - 1_000);
    assert_eq!(queue.waited(&again[0]), Duration::ZERO);
}

#[test]
fn change_visibility_zero_makes_the_message_visible_now() {
    let file = TempQueueFile::new("visible-now");
    let (queue, _clock) = file.open_manual();
    send(&queue, "a", "a1");
    let first = queue.receive("q", 1, VISIBILITY).unwrap();

    queue
        .change_visibility(&first[0].receipt, Duration::ZERO)
        .unwrap();

    let again = queue.receive("q", 1, VISIBILITY).unwrap();
    assert_eq!(bodies(&again), ["a1"]);
    assert_eq!(again[0].receive_count, 2);
}

#[test]
fn change_visibility_extends_the_hiding_from_now() {
    let file = TempQueueFile::new("extend");
    let (queue, clock) = file.open_manual();
    send(&queue, "a", "a1");
    let first = queue.receive("q", 1, VISIBILITY).unwrap();
    clock.advance(Duration::from_secs(20));

    queue
        .change_visibility(&first[0].receipt, Duration::from_secs(60))
        .unwrap();

    clock.advance(Duration::from_secs(59));
    assert!(queue.receive("q", 1, VISIBILITY).unwrap().is_empty());
    clock.advance(Duration::from_secs(1));
    assert_eq!(bodies(&queue.receive("q", 1, VISIBILITY).unwrap()), ["a1"]);
}

#[test]
fn refuses_a_stale_receipt_after_someone_else_received_the_message() {
    let file = TempQueueFile::new("stale");
    let (queue, clock) = file.open_manual();
    send(&queue, "a", "a1");
    let first = queue.receive("q", 1, VISIBILITY).unwrap();
    clock.advance(VISIBILITY);

    // Expired but not yet redelivered: not in flight, so visibility cannot be changed.
    assert!(
        queue
            .change_visibility(&first[0].receipt, VISIBILITY)
            .is_err()
    );
    let second = queue.receive("q", 1, VISIBILITY).unwrap();

    let stale = first[0].receipt;
    assert!(queue.delete(&stale).is_err());
    assert!(queue.change_visibility(&stale, Duration::ZERO).is_err());
    assert!(queue.dead_letter(stale, &reason("c", "k")).is_err());
    assert_eq!(queue.depth("q").unwrap().in_flight, 1, "still in flight");
    queue.delete(&second[0].receipt).unwrap();
    assert_eq!(queue.depth("q").unwrap(), Depth::default());
    assert!(queue.delete(&second[0].receipt).is_err(), "deleted twice");
}

#[test]
fn receipts_round_trip_through_text() {
    let file = TempQueueFile::new("receipt-text");
    let (queue, _clock) = file.open_manual();
    send(&queue, "a", "a1");
    let received = queue.receive("q", 1, VISIBILITY).unwrap();

    let text = received[0].receipt.to_string();
    let parsed: Receipt = text.parse().unwrap();

    assert_eq!(parsed, received[0].receipt);
    assert!("12".parse::<Receipt>().is_err());
    assert!("a.b".parse::<Receipt>().is_err());
    queue.delete(&parsed).unwrap();
}

#[test]
fn a_duplicate_within_five_minutes_is_never_delivered_even_after_delete() {
    let file = TempQueueFile::new("dedup");
    let (queue, clock) = file.open_manual();
    assert_eq!(
        queue.send("q", "a", "push-1", "first").unwrap(),
        SendOutcome::Enqueued
    );
    clock.advance(Duration::from_secs(60));
    // The first is still waiting: the send only reads the ids already received, so this
    // one is enqueued and the receive that meets it drops it (as SQS FIFO answers a
    // duplicate with success and never delivers it).
    queue.send("q", "b", "push-1", "second").unwrap();
    let received = queue.receive("q", 10, VISIBILITY).unwrap();
    assert_eq!(bodies(&received), ["first"]);
    assert_eq!(
        queue.depth("q").unwrap(),
        Depth {
            visible: 0,
            in_flight: 1
        },
        "the duplicate is gone, not waiting"
    );
    queue.delete(&received[0].receipt).unwrap();

    // 4:59.999 after the first enqueue: still inside the window, although deleted.
    clock.advance(Duration::from_millis(4 * 60_000 - 1));
    assert_eq!(
        queue.send("q", "a", "push-1", "third").unwrap(),
        SendOutcome::Duplicate
    );
    assert_eq!(queue.depth("q").unwrap(), Depth::default());
}

#[test]
fn the_same_dedup_id_is_accepted_again_five_minutes_after_the_first_enqueue() {
    let file = TempQueueFile::new("dedup-expiry");
    let (queue, clock) = file.open_manual();
    queue.send("q", "a", "push-1", "first").unwrap();
    clock.advance(Duration::from_secs(4 * 60));
    // A duplicate does not restart the window.
    queue.send("q", "a", "push-1", "dup").unwrap();
    clock.advance(Duration::from_secs(60));
    queue.send("q", "a", "push-1", "again").unwrap();
    // The new enqueue opens a new window.
    queue.send("q", "a", "push-1", "again twice").unwrap();

    // Checked when received, each against the enqueue times: as if checked when sent.
    let received = queue.receive("q", 10, VISIBILITY).unwrap();
    assert_eq!(bodies(&received), ["first", "again"]);
    for message in &received {
        queue.delete(&message.receipt).unwrap();
    }
    assert_eq!(
        queue.send("q", "a", "push-1", "after both").unwrap(),
        SendOutcome::Duplicate,
        "the window runs from the enqueue of the one delivered last"
    );
}

/// The deduplication table stays small: an id is forgotten by the next send once its window
/// has passed, and not a moment before.
#[test]
fn deduplication_ids_are_forgotten_once_their_window_has_passed() {
    let file = TempQueueFile::new("dedup-prune");
    let (queue, clock) = file.open_manual();
    let ids = || -> Vec<String> {
        let connection = rusqlite_connection(&file);
        let mut statement = connection
            .prepare("SELECT dedup_id FROM dedup ORDER BY dedup_id")
            .unwrap();
        statement
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let send_and_take = |id: &str| {
        send(&queue, "a", id);
        for message in queue.receive("q", 10, VISIBILITY).unwrap() {
            queue.delete(&message.receipt).unwrap();
        }
    };
    send_and_take("push-1");
    clock.advance(DEDUP_WINDOW - Duration::from_millis(1));
    send_and_take("push-2");
    assert_eq!(
        ids(),
        ["push-1", "push-2"],
        "push-1 is still within its window"
    );
    clock.advance(Duration::from_millis(1));
    send_and_take("push-3");
    assert_eq!(ids(), ["push-2", "push-3"], "push-1's window has passed");
    assert_eq!(
        queue.send("q", "a", "push-1", "push-1 again").unwrap(),
        SendOutcome::Enqueued
    );
}

#[test]
fn a_message_received_again_is_not_taken_for_a_duplicate_of_itself() {
    let file = TempQueueFile::new("dedup-redelivery");
    let (queue, clock) = file.open_manual();
    queue.send("q", "a", "push-1", "only").unwrap();
    let first = queue.receive("q", 10, VISIBILITY).unwrap();
    assert_eq!(bodies(&first), ["only"]);

    // Not deleted: it comes back after its visibility, and after a restart's release.
    clock.advance(VISIBILITY);
    let again = queue.receive("q", 10, VISIBILITY).unwrap();
    assert_eq!(bodies(&again), ["only"]);
    assert_eq!(again[0].receive_count, 2);
    assert_eq!(queue.release_leases("q").unwrap(), 1);
    let released = queue.receive("q", 10, VISIBILITY).unwrap();
    assert_eq!(bodies(&released), ["only"]);
    assert_eq!(released[0].receive_count, 3);
}

#[test]
fn a_duplicate_at_the_head_of_its_group_leaves_the_group_deliverable() {
    let file = TempQueueFile::new("dedup-head");
    let (queue, _clock) = file.open_manual();
    queue.send("q", "a", "push-1", "first").unwrap();
    queue.send("q", "a", "push-1", "duplicate").unwrap();
    queue.send("q", "a", "push-2", "next").unwrap();
    let first = queue.receive("q", 1, VISIBILITY).unwrap();
    assert_eq!(bodies(&first), ["first"]);
    queue.delete(&first[0].receipt).unwrap();

    // The group's oldest message is now the duplicate: dropped, and the rest delivered.
    assert_eq!(
        bodies(&queue.receive("q", 1, VISIBILITY).unwrap()),
        Vec::<&str>::new(),
        "a receive with room for one that met only the duplicate"
    );
    assert_eq!(
        bodies(&queue.receive("q", 10, VISIBILITY).unwrap()),
        ["next"]
    );
}

#[test]
fn messages_and_receive_counts_survive_closing_and_reopening_the_file() {
    let file = TempQueueFile::new("durable");
    {
        let (queue, _clock) = file.open_manual();
        send(&queue, "a", "a1");
        // Zero visibility: received twice, then visible again at once.
        queue.receive("q", 1, Duration::ZERO).unwrap();
        queue.receive("q", 1, Duration::ZERO).unwrap();
        send(&queue, "b", "b1");
    }

    let (reopened, _clock) = file.open_manual();
    let received = reopened.receive("q", 10, VISIBILITY).unwrap();

    // A group never received comes before one whose hiding has passed.
    assert_eq!(bodies(&received), ["b1", "a1"]);
    let counts: Vec<u32> = received.iter().map(|m| m.receive_count).collect();
    assert_eq!(counts, [1, 3]);
    assert_eq!(
        reopened.send("q", "a", "a1", "again").unwrap(),
        SendOutcome::Duplicate,
        "deduplication ids survive too"
    );
}

#[test]
fn a_message_received_but_not_deleted_before_a_restart_is_redelivered_after_its_visibility() {
    let file = TempQueueFile::new("restart-in-flight");
    let first = {
        let (queue, _clock) = file.open_manual();
        send(&queue, "a", "a1");
        queue.receive("q", 1, VISIBILITY).unwrap()
    };

    let (reopened, clock) = file.open_manual();
    assert!(reopened.receive("q", 1, VISIBILITY).unwrap().is_empty());
    assert_eq!(
        reopened.depth("q").unwrap(),
        Depth {
            visible: 0,
            in_flight: 1
        }
    );
    clock.advance(VISIBILITY);
    let again = reopened.receive("q", 1, VISIBILITY).unwrap();

    assert_eq!(bodies(&again), ["a1"]);
    assert_eq!(again[0].receive_count, 2);
    assert!(reopened.delete(&first[0].receipt).is_err());
}

#[test]
fn releasing_leases_after_a_crash_redelivers_received_messages_but_keeps_retry_delays() {
    let file = TempQueueFile::new("release-leases");
    {
        let (queue, _clock) = file.open_manual();
        send(&queue, "a", "a1");
        send(&queue, "b", "b1");
        send(&queue, "c", "c1");
        let received = queue.receive("q", 2, VISIBILITY).unwrap();
        assert_eq!(bodies(&received), ["a1", "b1"]);
        // b1 failed and waits out a retry delay: that is not a lease.
        queue
            .change_visibility(&received[1].receipt, Duration::from_secs(600))
            .unwrap();
    }

    let (reopened, clock) = file.open_manual();
    assert_eq!(reopened.release_leases("q").unwrap(), 1);
    assert_eq!(reopened.release_leases("other").unwrap(), 0);
    let again = reopened.receive("q", 10, VISIBILITY).unwrap();

    // c1 was never received; a1's lease was released just now.
    assert_eq!(bodies(&again), ["c1", "a1"]);
    assert_eq!(again[1].receive_count, 2);
    for message in &again {
        reopened.delete(&message.receipt).unwrap();
    }
    clock.advance(Duration::from_secs(600));
    assert_eq!(
        bodies(&reopened.receive("q", 10, VISIBILITY).unwrap()),
        ["b1"]
    );
}

#[test]
fn a_version_1_file_is_migrated_and_keeps_its_messages() {
    let file = TempQueueFile::new("migrate-v1");
    {
        let connection = rusqlite_connection(&file);
        connection
            .execute_batch(
                "CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL,
                     group_id TEXT NOT NULL, dedup_id TEXT NOT NULL, body TEXT NOT NULL,
                     first_enqueued_at INTEGER NOT NULL, visible_at INTEGER NOT NULL,
                     receive_count INTEGER NOT NULL);
                 CREATE TABLE dedup (queue TEXT NOT NULL, dedup_id TEXT NOT NULL,
                     first_seen_at INTEGER NOT NULL, PRIMARY KEY (queue, dedup_id)) WITHOUT ROWID;
                 CREATE TABLE dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT,
                     queue TEXT NOT NULL, group_id TEXT NOT NULL, dedup_id TEXT NOT NULL,
                     body TEXT NOT NULL, receive_count INTEGER NOT NULL,
                     first_enqueued_at INTEGER NOT NULL, reason TEXT NOT NULL, status INTEGER,
                     cluster TEXT, key TEXT, dead_at INTEGER NOT NULL);
                 INSERT INTO messages VALUES (1, 'q', 'a', 'd1', 'old', 0, 0, 0);
                 -- In flight until 2100, with a message behind it: the group stays blocked.
                 INSERT INTO messages VALUES (2, 'q', 'b', 'd2', 'hidden', 0, 4102444800000, 1);
                 INSERT INTO messages VALUES (3, 'q', 'b', 'd3', 'behind', 0, 0, 0);
                 INSERT INTO messages VALUES (4, 'q', 'a', 'd4', 'old too', 0, 0, 0);
                 PRAGMA user_version = 1;",
            )
            .unwrap();
    }

    let (queue, _clock) = file.open_manual();

    assert_eq!(
        bodies(&queue.receive("q", 10, VISIBILITY).unwrap()),
        ["old", "old too"]
    );
    assert_eq!(
        queue.depth("q").unwrap(),
        Depth {
            visible: 1,
            in_flight: 3
        }
    );
    assert_eq!(queue.release_leases("q").unwrap(), 2);
    let version: i64 = rusqlite_connection(&file)
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, 5);
}

/// A message whose group has no row would never be delivered: opening the file makes the
/// rows say what the messages say again, whatever changed them (here, a hand edit).
#[test]
fn opening_rebuilds_group_rows_that_disagree_with_their_messages() {
    let file = TempQueueFile::new("groups-drift");
    {
        let (queue, _clock) = file.open_manual();
        send(&queue, "a", "a1");
        send(&queue, "b", "b1");
        send(&queue, "c", "c1");
        assert_eq!(bodies(&queue.receive("q", 1, VISIBILITY).unwrap()), ["a1"]);
    }
    rusqlite_connection(&file)
        .execute_batch(
            "DELETE FROM message_groups WHERE group_id = 'b';
             UPDATE message_groups SET hidden_until = 0 WHERE group_id = 'a';
             INSERT INTO message_groups VALUES ('q', 'gone', 99, 0);",
        )
        .unwrap();

    let (queue, _clock) = file.open_manual();

    // b is delivered again, a is still in flight, and no group is made up.
    assert_eq!(
        bodies(&queue.receive("q", 10, VISIBILITY).unwrap()),
        ["b1", "c1"]
    );
    let groups: i64 = rusqlite_connection(&file)
        .query_row("SELECT COUNT(*) FROM message_groups", [], |row| row.get(0))
        .unwrap();
    assert_eq!(groups, 3);
}

#[test]
fn reopening_is_refused_for_a_newer_schema_version() {
    let file = TempQueueFile::new("schema");
    drop(file.open_manual());
    {
        let connection = rusqlite_connection(&file);
        connection.pragma_update(None, "user_version", 99).unwrap();
    }

    let error = EmbeddedQueue::open(&file.path).unwrap_err();

    assert!(error.message.contains("schema version 99"), "{error}");
}

#[test]
fn the_file_is_in_wal_mode() {
    let file = TempQueueFile::new("wal");
    drop(file.open_manual());

    let mode: String = rusqlite_connection(&file)
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();

    assert_eq!(mode, "wal");
}

#[test]
fn opening_in_a_missing_directory_names_the_path() {
    let path = std::env::temp_dir()
        .join("fluxrelay-no-such-directory")
        .join("queue.sqlite");

    let error = EmbeddedQueue::open(&path).unwrap_err();

    assert!(
        error.message.contains("fluxrelay-no-such-directory"),
        "{error}"
    );
}

fn rusqlite_connection(file: &TempQueueFile) -> rusqlite::Connection {
    rusqlite::Connection::open(&file.path).unwrap()
}

#[test]
fn dead_letters_are_listed_by_cluster_and_redriven_as_new_messages() {
    let file = TempQueueFile::new("dead-letters");
    let (queue, clock) = file.open_manual();
    for (cluster, key) in [("prod", "k1"), ("staging", "k2"), ("prod", "k3")] {
        queue.send(DISPATCH_QUEUE, cluster, key, key).unwrap();
    }
    let received = queue.receive(DISPATCH_QUEUE, 10, VISIBILITY).unwrap();
    assert_eq!(bodies(&received), ["k1", "k3", "k2"]);
    clock.advance(Duration::from_secs(1));
    queue
        .dead_letter(received[0].receipt, &reason("prod", "k1"))
        .unwrap();
    queue
        .dead_letter(received[2].receipt, &reason("staging", "k2"))
        .unwrap();
    queue
        .dead_letter(MessageRef::Id(received[1].id), &reason("prod", "k3"))
        .unwrap();
    assert_eq!(queue.depth(DISPATCH_QUEUE).unwrap(), Depth::default());

    let all = queue.list_dead_letters(DISPATCH_QUEUE, None).unwrap();
    let prod = queue
        .list_dead_letters(DISPATCH_QUEUE, Some("prod"))
        .unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(
        prod.iter().map(|d| d.body.as_str()).collect::<Vec<_>>(),
        ["k1", "k3"]
    );
    // The listing fills in the attempts from the receive count when the reason has none.
    assert_eq!(
        prod[0].reason,
        DeadLetterReason {
            attempts: Some(1),
            ..reason("prod", "k1")
        }
    );
    assert_eq!(prod[0].group_id, "prod");
    assert_eq!(prod[0].receive_count, 1);
    assert_eq!(prod[0].queue, DISPATCH_QUEUE);
    assert_eq!(prod[0].dead_at_ms, prod[0].first_enqueued_at_ms + 1000);
    assert!(
        queue
            .list_dead_letters(INTAKE_QUEUE, None)
            .unwrap()
            .is_empty()
    );

    // Well within the dedup window: redriven messages must not be deduplicated away.
    assert_eq!(queue.redrive(DISPATCH_QUEUE, Some("prod")).unwrap(), 2);
    assert_eq!(
        queue.send(DISPATCH_QUEUE, "prod", "k1", "k1").unwrap(),
        SendOutcome::Duplicate,
        "a redrive does not reopen the original deduplication id"
    );
    let redriven = queue.receive(DISPATCH_QUEUE, 10, VISIBILITY).unwrap();
    assert_eq!(bodies(&redriven), ["k1", "k3"]);
    assert!(redriven.iter().all(|m| m.receive_count == 1));
    let left = queue.list_dead_letters(DISPATCH_QUEUE, None).unwrap();
    assert_eq!(
        left.iter().map(|d| d.body.as_str()).collect::<Vec<_>>(),
        ["k2"]
    );
    assert_eq!(queue.redrive(DISPATCH_QUEUE, None).unwrap(), 1);
    assert_eq!(queue.redrive(DISPATCH_QUEUE, None).unwrap(), 0);
}

#[test]
fn dead_lettering_an_unknown_message_is_an_error() {
    let file = TempQueueFile::new("dead-letter-unknown");
    let (queue, _clock) = file.open_manual();

    assert!(
        queue
            .dead_letter(MessageRef::Id(42), &reason("c", "k"))
            .is_err()
    );
}

#[test]
fn a_batch_with_one_invalid_entry_enqueues_nothing_and_consumes_no_dedup_id() {
    let file = TempQueueFile::new("batch-atomic");
    let (queue, _clock) = file.open_manual();
    let good = [
        NewMessage::new("a", "d1", "one"),
        NewMessage::new("b", "d2", "two"),
    ];
    let mut batch = good.to_vec();
    batch.push(NewMessage::new("", "d3", "no group"));

    assert!(queue.send_batch("q", &batch).is_err());
    assert_eq!(queue.depth("q").unwrap(), Depth::default());

    let outcomes = queue.send_batch("q", &good).unwrap();
    assert_eq!(outcomes, [SendOutcome::Enqueued, SendOutcome::Enqueued]);
}

#[test]
fn a_batch_delivers_each_id_once_within_itself_and_against_earlier_sends() {
    let file = TempQueueFile::new("batch-dedup");
    let (queue, _clock) = file.open_manual();
    queue.send("q", "a", "old", "old").unwrap();
    let batch = [
        NewMessage::new("a", "new", "new"),
        NewMessage::new("a", "old", "old again"),
        NewMessage::new("a", "new", "new again"),
    ];

    queue.send_batch("q", &batch).unwrap();

    assert_eq!(
        bodies(&queue.receive("q", 10, VISIBILITY).unwrap()),
        ["old", "new"]
    );
    // Once received, an id is a duplicate when sent.
    let outcomes = queue.send_batch("q", &batch).unwrap();
    assert_eq!(outcomes, [SendOutcome::Duplicate; 3]);
}

#[test]
fn rejects_empty_and_overlong_ids() {
    let file = TempQueueFile::new("validate");
    let (queue, _clock) = file.open_manual();

    assert!(queue.send("", "g", "d", "b").is_err());
    assert!(queue.send("q", "g", "", "b").is_err());
    assert!(queue.send("q", &"g".repeat(129), "d", "b").is_err());
    assert!(queue.send("q", &"g".repeat(128), "d", "b").is_ok());
}

#[test]
fn depth_counts_visible_and_in_flight_messages() {
    let file = TempQueueFile::new("depth");
    let (queue, _clock) = file.open_manual();
    for body in ["a1", "a2", "b1"] {
        send(&queue, &body[..1], body);
    }
    queue.receive("q", 1, VISIBILITY).unwrap();

    assert_eq!(
        queue.depth("q").unwrap(),
        Depth {
            visible: 2,
            in_flight: 1
        }
    );
    assert_eq!(queue.depth("other").unwrap(), Depth::default());
}

#[test]
fn concurrent_senders_lose_nothing() {
    let file = TempQueueFile::new("concurrent");
    let queue = EmbeddedQueue::open(&file.path).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|thread| {
            let queue = queue.clone();
            std::thread::spawn(move || {
                for n in 0..250 {
                    let id = format!("t{thread}-m{n}");
                    let group = format!("g{}", n % 5);
                    let outcome = queue.send("q", &group, &id, &id).unwrap();
                    assert_eq!(outcome, SendOutcome::Enqueued);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }

    let mut seen = HashSet::new();
    loop {
        let received = queue.receive("q", 100, Duration::from_secs(600)).unwrap();
        if received.is_empty() {
            break;
        }
        for message in received {
            queue.delete(&message.receipt).unwrap();
            assert!(seen.insert(message.body), "delivered twice");
        }
    }
    assert_eq!(seen.len(), 2000);
}

#[test]
fn is_shared_across_threads_while_receiving_and_sending() {
    let file = TempQueueFile::new("shared");
    let queue = Arc::new(EmbeddedQueue::open(&file.path).unwrap());
    let sender = {
        let queue = queue.clone();
        std::thread::spawn(move || {
            for n in 0..200 {
                let id = format!("m{n:03}");
                queue.send("q", "one-group", &id, &id).unwrap();
            }
        })
    };
    let mut order = Vec::new();
    while order.len() < 200 {
        for message in queue.receive("q", 10, Duration::from_secs(600)).unwrap() {
            queue.delete(&message.receipt).unwrap();
            order.push(message.body);
        }
    }
    sender.join().unwrap();

    let expected: Vec<String> = (0..200).map(|n| format!("m{n:03}")).collect();
    assert_eq!(order, expected, "one group is delivered in send order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_pushes_enqueues_on_intake_by_project_and_deduplicates_by_key() {
    let file = TempQueueFile::new("push-port");
    let (queue, _clock) = file.open_manual();
    let pushes = [push(15, "a"), push(16, "c"), push(15, "a")];

    queue.publish_pushes(&pushes).await.unwrap();
    queue.publish_pushes(&pushes[..1]).await.unwrap();
    queue.publish_pushes(&[]).await.unwrap();

    let received = queue.receive(INTAKE_QUEUE, 10, VISIBILITY).unwrap();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].group_id, "15");
    assert_eq!(received[1].group_id, "16");
    assert_eq!(Push::from_json(&received[0].body).unwrap(), pushes[0]);
    assert_eq!(Push::from_json(&received[1].body).unwrap(), pushes[1]);
    assert_eq!(queue.depth(DISPATCH_QUEUE).unwrap(), Depth::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_dispatches_enqueues_on_dispatch_by_cluster_and_deduplicates() {
    let file = TempQueueFile::new("dispatch-port");
    let (queue, _clock) = file.open_manual();
    let dispatches = [
        Dispatch::new("prod", push(15, "a")),
        Dispatch::new("staging", push(15, "a")),
        Dispatch::new("prod", push(15, "d")),
        Dispatch::new("prod", push(15, "a")),
    ];

    queue.publish_dispatches(&dispatches).await.unwrap();

    let received = queue.receive(DISPATCH_QUEUE, 10, VISIBILITY).unwrap();
    let groups: Vec<&str> = received.iter().map(|m| m.group_id.as_str()).collect();
    assert_eq!(groups, ["prod", "prod", "staging"]);
    let decoded: Vec<Dispatch> = received
        .iter()
        .map(|m| Dispatch::from_json(&m.body).unwrap())
        .collect();
    assert_eq!(
        decoded,
        [
            dispatches[0].clone(),
            dispatches[2].clone(),
            dispatches[1].clone()
        ]
    );
    assert_eq!(queue.depth(INTAKE_QUEUE).unwrap(), Depth::default());
}

#[test]
fn the_journal_keeps_a_pushs_events_in_order_finds_keys_by_prefix_and_forgets_after_a_week() {
    let file = TempQueueFile::new("journal");
    let (queue, clock) = file.open_manual();
    let first = "ab12".repeat(16);
    let second = "ab34".repeat(16);
    queue
        .record(&[
            JournalEntry::new(&first, None, "routed", "routed to prod"),
            JournalEntry::new(&first, Some("prod"), "queued", "queued for dispatch"),
            JournalEntry::new(&second, None, "routed", "no cluster subscribes"),
        ])
        .unwrap();
    clock.advance(Duration::from_secs(1));
    queue
        .record(&[JournalEntry::new(
            &first,
            Some("prod"),
            "delivered",
            "Receiver a/b",
        )])
        .unwrap();

    let records = queue.journal(&first).unwrap();
    let stages: Vec<&str> = records.iter().map(|r| r.entry.stage.as_str()).collect();
    assert_eq!(stages, ["routed", "queued", "delivered"]);
    assert_eq!(records[2].at_ms - records[0].at_ms, 1000);
    assert_eq!(records[1].entry.cluster.as_deref(), Some("prod"));
    assert_eq!(
        queue.journal_keys("ab").unwrap(),
        [first.clone(), second.clone()]
    );
    assert_eq!(
        queue.journal_keys("ab3").unwrap(),
        std::slice::from_ref(&second)
    );
    assert!(
        queue.journal_keys("%").unwrap().is_empty(),
        "LIKE wildcards are literal"
    );
    assert!(
        queue.journal_keys("_b").unwrap().is_empty(),
        "LIKE wildcards are literal"
    );

    clock.advance(JOURNAL_RETENTION + Duration::from_millis(1));
    queue
        .record(&[JournalEntry::new(&second, None, "routed", "again")])
        .unwrap();
    assert!(queue.journal(&first).unwrap().is_empty());
    assert_eq!(queue.journal(&second).unwrap().len(), 1);
}

/// Settling a batch is awaited on the writer's group commit, not on a blocking thread each:
/// a dispatch batch of 1,000 messages settled at once took a thread per message (105
/// threads and 60 MiB of RSS under the throughput benchmark). Here the runtime's only
/// blocking thread is held until every settle has finished: a settle that needed one would
/// never finish.
#[test]
fn settling_a_batch_takes_no_blocking_thread() {
    use fluxrelay_adapters::embedded::EmbeddedSettle;
    use fluxrelay_core::ports::{QueueMessage, Settle};

    let file = TempQueueFile::new("settle-threads");
    let (queue, _clock) = file.open_manual();
    for index in 0..300 {
        send(&queue, &format!("g{index}"), &format!("m{index}"));
    }
    let received = queue.receive("q", 300, VISIBILITY).unwrap();
    assert_eq!(received.len(), 300);
    let messages: Vec<QueueMessage> = received
        .iter()
        .map(|message| QueueMessage {
            id: message.receipt.to_string(),
            source: "q".into(),
            receipt: message.receipt.to_string(),
            group: message.group_id.clone(),
            body: message.body.clone(),
            receive_count: message.receive_count,
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let settle = EmbeddedSettle::new(queue.clone());
    let done = runtime.block_on(async {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let holder = tokio::task::spawn_blocking(move || held.recv());
        let (acknowledged, retried) = messages.split_at(200);
        let settled = tokio::time::timeout(
            Duration::from_secs(20),
            futures_util::future::join(
                futures_util::future::join_all(acknowledged.iter().map(|m| settle.acknowledge(m))),
                futures_util::future::join_all(retried.iter().map(|m| settle.retry_in_place(m, 0))),
            ),
        )
        .await;
        release.send(()).unwrap();
        holder.await.unwrap().unwrap();
        settled
    });
    let (acknowledged, retried) = done.expect("settling waited for a blocking thread");
    assert!(acknowledged.iter().all(Result::is_ok), "{acknowledged:?}");
    assert!(retried.iter().all(Result::is_ok), "{retried:?}");
    // The 200 are gone; the 100 retried in place are deliverable again at once.
    let again = queue.receive("q", 300, VISIBILITY).unwrap();
    assert_eq!(again.len(), 100);
}

/// A settle wakes the group's consumer when a delete leaves a message behind in the group
/// (it may be receivable now), and not when it empties the group: serve's dispatch would
/// otherwise look for nothing after each of a push's clusters.
#[test]
fn a_held_delete_wakes_the_consumer_only_when_its_group_holds_more() {
    use fluxrelay_adapters::embedded::EmbeddedSettle;
    use fluxrelay_core::ports::{QueueMessage, Settle};
    use tokio::sync::Notify;

    let file = TempQueueFile::new("settle-wake");
    let (queue, _clock) = file.open_manual();
    send(&queue, "alone", "a1");
    send(&queue, "pair", "p1");
    send(&queue, "pair", "p2");
    let received = queue.receive("q", 2, VISIBILITY).unwrap();
    assert_eq!(bodies(&received), ["a1", "p1"]);
    fn queue_message(message: &Received) -> QueueMessage {
        QueueMessage {
            id: message.receipt.to_string(),
            source: "q".into(),
            receipt: message.receipt.to_string(),
            group: message.group_id.clone(),
            body: message.body.clone(),
            receive_count: message.receive_count,
        }
    }
    let message = |index: usize| queue_message(&received[index]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let woken = |index: usize| {
        runtime.block_on(async {
            let wake = Arc::new(Notify::new());
            let settle = EmbeddedSettle::new(queue.clone())
                .notifying(wake.clone())
                .holding_acknowledgements();
            settle.acknowledge(&message(index)).await.unwrap();
            let settled = settle.delete_held_and_record(Vec::new()).await.unwrap();
            assert!(settled.failed.is_empty(), "{:?}", settled.failed);
            tokio::time::timeout(Duration::ZERO, wake.notified())
                .await
                .is_ok()
        })
    };
    assert!(
        !woken(0),
        "deleting the only message of a group woke the consumer"
    );
    assert!(woken(1), "deleting p1 left p2 receivable but woke nobody");
    let p2 = queue.receive("q", 10, VISIBILITY).unwrap();
    assert_eq!(bodies(&p2), ["p2"]);

    // The same rule when an acknowledgement deletes at once (not held).
    let unheld_woken = |received: &Received| {
        runtime.block_on(async {
            let wake = Arc::new(Notify::new());
            let settle = EmbeddedSettle::new(queue.clone()).notifying(wake.clone());
            settle.acknowledge(&queue_message(received)).await.unwrap();
            tokio::time::timeout(Duration::ZERO, wake.notified())
                .await
                .is_ok()
        })
    };
    send(&queue, "pair", "p3");
    assert!(unheld_woken(&p2[0]), "deleting p2 left p3 but woke nobody");
    let p3 = queue.receive("q", 10, VISIBILITY).unwrap();
    assert_eq!(bodies(&p3), ["p3"]);
    assert!(
        !unheld_woken(&p3[0]),
        "deleting the group's last message woke the consumer"
    );
}
