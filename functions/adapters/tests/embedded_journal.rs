//! The push journal stays bounded on a real fleet: a push's skips on a cluster are one
//! summary row, retries update it, a size cap drops the oldest pushes first and gives the
//! space back to the file system, the week's retention still applies, and an older file is
//! migrated with its data. Sizes are printed, never asserted against a clock:
//! `cargo test -p fluxrelay-adapters --test embedded_journal -- --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fluxrelay_adapters::embedded::{
    EmbeddedQueue, INTAKE_QUEUE, JOURNAL_RETENTION, JournalEntry, JournalRecord, ManualClock,
    PRUNE_CHUNK_ROWS, SKIP_DETAILS_KEPT, SKIPPED,
};

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
            "fluxrelay-journal-{name}-{}-{nanos}-{}.sqlite",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        Self { path }
    }

    fn open_manual(&self) -> (EmbeddedQueue, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(1_795_000_000_000));
        let queue = EmbeddedQueue::open_with_clock(&self.path, clock.clone()).unwrap();
        (queue, clock)
    }

    /// The main file's size once the WAL is written back into it (and truncated).
    fn checkpointed_size(&self) -> u64 {
        let connection = rusqlite::Connection::open(&self.path).unwrap();
        connection
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        std::fs::metadata(&self.path).unwrap().len()
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

fn key(n: usize) -> String {
    format!("{n:064x}")
}

/// As the dispatch worker words a skip: the object and why.
fn skip_detail(n: usize) -> String {
    format!(
        "GitRepository flux-system/app-{n}: url https://gitlab.example.com/platform/app-{n}.git \
         does not match the push's project"
    )
}

fn skips(key: &str, cluster: &str, objects: std::ops::Range<usize>) -> Vec<JournalEntry> {
    objects
        .map(|n| JournalEntry::new(key, Some(cluster), SKIPPED, skip_detail(n)))
        .collect()
}

/// One push's journal as the workers write it: routed, and per cluster queued, the skips
/// and a verdict.
fn push_entries(key: &str, clusters: usize, skipped: usize) -> Vec<JournalEntry> {
    let names: Vec<String> = (0..clusters).map(|c| format!("cluster-{c:02}")).collect();
    let mut entries = vec![JournalEntry::new(
        key,
        None,
        "routed",
        format!(
            "accepted 2026-11-18T10:00:00Z: platform/app-7 refs/heads/main 1a2b3c4d..5e6f7a8b; routed to {}",
            names.join(", ")
        ),
    )];
    for name in &names {
        entries.push(JournalEntry::new(
            key,
            Some(name),
            "queued",
            "queued for dispatch",
        ));
        entries.extend(skips(key, name, 0..skipped));
        entries.push(JournalEntry::new(
            key,
            Some(name),
            "delivered",
            "Receiver flux-system/app-7",
        ));
    }
    entries
}

fn stages(records: &[JournalRecord]) -> Vec<(Option<&str>, &str, u64)> {
    records
        .iter()
        .map(|record| {
            (
                record.entry.cluster.as_deref(),
                record.entry.stage.as_str(),
                record.count,
            )
        })
        .collect()
}

fn first_details(count: usize) -> Vec<String> {
    (0..count).map(skip_detail).collect()
}

#[test]
fn many_skips_of_one_push_on_one_cluster_are_one_row_with_the_count_and_the_first_details() {
    let file = TempQueueFile::new("summary");
    let (queue, _clock) = file.open_manual();
    let key = key(1);
    let mut entries = vec![JournalEntry::new(
        &key,
        None,
        "routed",
        "routed to prod, dev",
    )];
    entries.extend(skips(&key, "prod", 0..300));
    entries.push(JournalEntry::new(
        &key,
        Some("prod"),
        "retry",
        "again in 5 s: 503",
    ));
    entries.push(JournalEntry::new(
        &key,
        Some("prod"),
        "retry",
        "again in 5 s: 503",
    ));
    // Interleaved with another cluster's: each cluster gets its own summary.
    entries.extend(skips(&key, "dev", 0..2));
    entries.push(JournalEntry::new(
        &key,
        Some("dev"),
        "nothing_to_trigger",
        "none",
    ));

    queue.record(&entries).unwrap();

    let records = queue.journal(&key).unwrap();
    assert_eq!(
        stages(&records),
        [
            (None, "routed", 1),
            (Some("prod"), SKIPPED, 300),
            (Some("prod"), "retry", 1),
            (Some("prod"), "retry", 1),
            (Some("dev"), SKIPPED, 2),
            (Some("dev"), "nothing_to_trigger", 1),
        ],
        "skips are summarised where the first one was; other stages stay one row each"
    );
    let prod = &records[1];
    assert_eq!(
        prod.details().collect::<Vec<_>>(),
        first_details(SKIP_DETAILS_KEPT)
    );
    assert_eq!(prod.not_kept(), 295);
    assert_eq!(records[4].details().collect::<Vec<_>>(), first_details(2));
    assert_eq!(records[4].not_kept(), 0);
    assert_eq!(queue.journal_stats().unwrap().rows, 6);
}

#[test]
fn a_retried_dispatch_updates_the_summary_instead_of_adding_rows() {
    let file = TempQueueFile::new("retries");
    let (queue, clock) = file.open_manual();
    let (key, other) = (key(1), key(2));
    let attempt = |skipped: std::ops::Range<usize>, verdict: &str| {
        let mut entries = skips(&key, "prod", skipped);
        entries.push(JournalEntry::new(&key, Some("prod"), verdict, "..."));
        entries
    };

    queue.record(&attempt(0..300, "retry")).unwrap();
    let first_at = queue.journal(&key).unwrap()[0].at_ms;
    clock.advance(Duration::from_secs(5));
    queue.record(&attempt(0..300, "retry")).unwrap();
    // The same write again (a retried journal write) counts nothing twice.
    queue.record(&attempt(0..300, "retry")).unwrap();
    clock.advance(Duration::from_secs(10));
    // An object added to the registry meanwhile: one more skip.
    queue.record(&attempt(0..301, "delivered")).unwrap();
    // Another push, and another cluster of this push, are not folded in.
    queue.record(&skips(&other, "prod", 0..3)).unwrap();
    queue.record(&skips(&key, "dev", 0..4)).unwrap();

    let records = queue.journal(&key).unwrap();
    assert_eq!(
        stages(&records),
        [
            (Some("prod"), SKIPPED, 301),
            (Some("prod"), "retry", 1),
            (Some("prod"), "retry", 1),
            (Some("prod"), "retry", 1),
            (Some("prod"), "delivered", 1),
            (Some("dev"), SKIPPED, 4),
        ]
    );
    assert_eq!(
        records[0].at_ms, first_at,
        "the summary keeps its first time"
    );
    assert_eq!(
        records[0].details().collect::<Vec<_>>(),
        first_details(SKIP_DETAILS_KEPT)
    );
    assert_eq!(
        stages(&queue.journal(&other).unwrap()),
        [(Some("prod"), SKIPPED, 3)]
    );
    assert_eq!(queue.journal_stats().unwrap().rows, 7);
}

#[test]
fn the_cap_deletes_the_oldest_pushes_first_and_the_file_shrinks_after_incremental_vacuum() {
    let file = TempQueueFile::new("cap");
    let (queue, clock) = file.open_manual();
    let pushes = 400;
    let rows_per_push = queue_push(&queue, 0);
    for n in 1..pushes {
        clock.advance(Duration::from_secs(1));
        queue_push(&queue, n);
    }
    let before = queue.journal_stats().unwrap();
    let size_before = file.checkpointed_size();
    assert_eq!(
        before.rows,
        rows_per_push * pushes as u64,
        "under the default cap nothing is deleted"
    );

    let cap = 1024 * 1024;
    queue.set_journal_max_bytes(cap);
    // Each write deletes at most a chunk of the oldest rows (whole pushes, so up to a push
    // more), until the journal is under the cap; the writes after give the free pages back.
    let mut rows = before.rows;
    let mut writes = 0;
    let mut n = pushes;
    while queue.journal_stats().unwrap().bytes > cap {
        assert!(
            writes < 500,
            "the journal is still over its cap after {writes} writes"
        );
        clock.advance(Duration::from_secs(1));
        queue_push(&queue, n);
        n += 1;
        writes += 1;
        let now = queue.journal_stats().unwrap().rows;
        let deleted = rows + rows_per_push - now;
        assert!(
            deleted <= PRUNE_CHUNK_ROWS + rows_per_push,
            "write {writes} deleted {deleted} rows at once"
        );
        rows = now;
    }
    let pruned_after = writes;
    for _ in 0..4 {
        clock.advance(Duration::from_secs(1));
        queue_push(&queue, n);
        n += 1;
    }
    let after = queue.journal_stats().unwrap();
    let size_after = file.checkpointed_size();
    println!(
        "journal cap {cap} bytes: {} rows / {} bytes in a {size_before}-byte file became \
         {} rows / {} bytes in a {size_after}-byte file, pruned a chunk a write in \
         {pruned_after} writes; {} measurements",
        before.rows,
        before.bytes,
        after.rows,
        after.bytes,
        queue.journal_measurements()
    );

    assert!(after.bytes <= cap, "{after:?}");
    assert!(
        size_after < size_before / 2,
        "{size_before} -> {size_after}: the freed pages went back to the file system"
    );
    let kept: Vec<bool> = (0..n)
        .map(|n| !queue.journal(&key(n)).unwrap().is_empty())
        .collect();
    let first_kept = kept.iter().position(|kept| *kept).unwrap();
    assert!(first_kept > 0, "something was deleted");
    assert!(
        kept[first_kept..].iter().all(|kept| *kept),
        "the oldest pushes went first: {kept:?}"
    );
    for kept in first_kept..n {
        assert_eq!(
            queue.journal(&key(kept)).unwrap().len() as u64,
            rows_per_push,
            "push {kept} is kept whole"
        );
    }
}

/// Journal one push to 20 clusters with 300 skips each; returns its rows.
fn queue_push(queue: &EmbeddedQueue, n: usize) -> u64 {
    let key = key(n);
    queue.record(&push_entries(&key, 20, 300)).unwrap();
    queue.journal(&key).unwrap().len() as u64
}

/// A backlog in the queue makes the file larger than the journal's cap while the journal is
/// far under it: the file's size no longer bounds the journal, and measuring it (every page
/// read) on every 64th write cost serve's writer 5.3 s of a 35 s throughput run. What the
/// writes added since the last measurement bounds it instead.
#[test]
fn a_backlog_larger_than_the_cap_does_not_make_every_write_measure_the_journal() {
    let file = TempQueueFile::new("backlog");
    let (queue, clock) = file.open_manual();
    let cap = 2 * 1024 * 1024;
    queue.set_journal_max_bytes(cap);
    let body = "x".repeat(4096);
    for n in 0..1024 {
        queue
            .send(INTAKE_QUEUE, "project-1", &key(n), &body)
            .unwrap();
    }
    let writes = 600;
    for n in 0..writes {
        clock.advance(Duration::from_millis(10));
        queue.record(&push_entries(&key(n), 1, 0)).unwrap();
    }
    let journal = queue.journal_stats().unwrap();
    let file_bytes = file.checkpointed_size();
    println!(
        "{writes} journal writes, journal {} bytes under a {cap}-byte cap in a {file_bytes}-byte \
         file: measured {} times",
        journal.bytes,
        queue.journal_measurements()
    );
    assert!(file_bytes > cap && journal.bytes < cap / 2, "{journal:?}");
    assert_eq!(journal.rows, writes as u64 * 3, "nothing was pruned");
    assert!(
        queue.journal_measurements() <= 1,
        "measured {} times",
        queue.journal_measurements()
    );
}

#[test]
fn under_the_cap_nothing_is_deleted_and_the_cap_can_be_read_back() {
    let file = TempQueueFile::new("under-cap");
    let (queue, _clock) = file.open_manual();
    assert_eq!(
        queue.journal_max_bytes(),
        fluxrelay_adapters::embedded::DEFAULT_JOURNAL_MAX_BYTES
    );
    queue.set_journal_max_bytes(u64::MAX);
    for n in 0..20 {
        queue.record(&push_entries(&key(n), 3, 10)).unwrap();
    }
    assert_eq!(queue.journal_max_bytes(), u64::MAX);
    assert_eq!(queue.journal_stats().unwrap().rows, 20 * (1 + 3 * 3));
}

#[test]
fn retention_still_prunes_summaries_and_entries_after_a_week() {
    let file = TempQueueFile::new("retention");
    let (queue, clock) = file.open_manual();
    let (old, new) = (key(1), key(2));
    queue.record(&push_entries(&old, 2, 300)).unwrap();

    clock.advance(JOURNAL_RETENTION);
    queue.record(&push_entries(&new, 2, 300)).unwrap();
    assert_eq!(
        queue.journal(&old).unwrap().len(),
        7,
        "a week to the millisecond is kept"
    );

    clock.advance(Duration::from_millis(1));
    queue.record(&push_entries(&key(3), 2, 300)).unwrap();
    assert!(queue.journal(&old).unwrap().is_empty());
    assert_eq!(queue.journal_stats().unwrap().rows, 14);
}

/// The schema as version 2 wrote it: one row per skip, and no `auto_vacuum`.
const SCHEMA_V2_FILE: &str = "
CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL,
    group_id TEXT NOT NULL, dedup_id TEXT NOT NULL, body TEXT NOT NULL,
    first_enqueued_at INTEGER NOT NULL, visible_at INTEGER NOT NULL,
    receive_count INTEGER NOT NULL, leased INTEGER NOT NULL DEFAULT 0);
CREATE INDEX messages_in_order ON messages (queue, id);
CREATE INDEX messages_in_flight ON messages (queue, group_id, visible_at);
CREATE TABLE dedup (queue TEXT NOT NULL, dedup_id TEXT NOT NULL,
    first_seen_at INTEGER NOT NULL, PRIMARY KEY (queue, dedup_id)) WITHOUT ROWID;
CREATE INDEX dedup_by_age ON dedup (first_seen_at);
CREATE TABLE dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL, group_id TEXT NOT NULL, dedup_id TEXT NOT NULL,
    body TEXT NOT NULL, receive_count INTEGER NOT NULL,
    first_enqueued_at INTEGER NOT NULL, reason TEXT NOT NULL, status INTEGER,
    cluster TEXT, key TEXT, dead_at INTEGER NOT NULL);
CREATE INDEX dead_letters_by_queue ON dead_letters (queue, cluster, id);
CREATE TABLE journal (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL,
    cluster TEXT, at INTEGER NOT NULL, stage TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX journal_by_key ON journal (key, id);
CREATE INDEX journal_by_age ON journal (at);
PRAGMA user_version = 2;
";

fn insert_v2(
    connection: &rusqlite::Connection,
    key: &str,
    cluster: Option<&str>,
    stage: &str,
    detail: &str,
) {
    connection
        .execute(
            "INSERT INTO journal (key, cluster, at, stage, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![key, cluster, 1_795_000_000_000_i64, stage, detail],
        )
        .unwrap();
}

fn pragma(path: &Path, name: &str) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row(&format!("PRAGMA {name}"), [], |row| row.get(0))
        .unwrap()
}

#[test]
fn a_version_2_file_is_migrated_with_its_skips_summarised_its_data_kept_and_vacuum_on() {
    let file = TempQueueFile::new("migrate-v2");
    let (key, other) = (key(1), key(2));
    {
        let connection = rusqlite::Connection::open(&file.path).unwrap();
        connection.execute_batch(SCHEMA_V2_FILE).unwrap();
        connection
            .execute_batch(
                "INSERT INTO messages (queue, group_id, dedup_id, body, first_enqueued_at,
                     visible_at, receive_count) VALUES ('dispatch', 'prod', 'd1', 'kept', 0, 0, 0);
                 INSERT INTO dead_letters (queue, group_id, dedup_id, body, receive_count,
                     first_enqueued_at, reason, dead_at)
                     VALUES ('dispatch', 'prod', 'd0', 'dead', 8, 0, 'attempts exhausted', 0);",
            )
            .unwrap();
        insert_v2(&connection, &key, None, "routed", "routed to prod, dev");
        for n in 0..7 {
            insert_v2(&connection, &key, Some("prod"), SKIPPED, &skip_detail(n));
        }
        for n in 0..2 {
            insert_v2(&connection, &key, Some("dev"), SKIPPED, &skip_detail(n));
        }
        insert_v2(
            &connection,
            &key,
            Some("prod"),
            "retry",
            "again in 5 s: 503",
        );
        // The retry skipped the same objects again.
        for n in 0..7 {
            insert_v2(&connection, &key, Some("prod"), SKIPPED, &skip_detail(n));
        }
        insert_v2(&connection, &key, Some("prod"), "delivered", "Receiver a/b");
        insert_v2(&connection, &other, Some("prod"), SKIPPED, &skip_detail(9));
    }
    assert_eq!(pragma(&file.path, "auto_vacuum"), 0, "version 2 had none");

    let (queue, _clock) = file.open_manual();

    assert_eq!(pragma(&file.path, "user_version"), 5);
    assert_eq!(pragma(&file.path, "auto_vacuum"), 2, "incremental");
    let records = queue.journal(&key).unwrap();
    assert_eq!(
        stages(&records),
        [
            (None, "routed", 1),
            (Some("prod"), SKIPPED, 7),
            (Some("dev"), SKIPPED, 2),
            (Some("prod"), "retry", 1),
            (Some("prod"), "delivered", 1),
        ],
        "each summary sits where its first skip was; the repeats are counted once"
    );
    assert_eq!(
        records[1].details().collect::<Vec<_>>(),
        first_details(SKIP_DETAILS_KEPT)
    );
    assert_eq!(records[1].not_kept(), 2);
    assert_eq!(records[2].details().collect::<Vec<_>>(), first_details(2));
    assert_eq!(records[0].entry.detail, "routed to prod, dev");
    assert_eq!(
        stages(&queue.journal(&other).unwrap()),
        [(Some("prod"), SKIPPED, 1)]
    );
    let received = queue
        .receive("dispatch", 10, Duration::from_secs(30))
        .unwrap();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body, "kept");
    assert_eq!(queue.dead_letter_count("dispatch").unwrap(), 1);

    // New skips of the migrated push fold into its migrated summary.
    queue.record(&skips(&key, "prod", 0..8)).unwrap();
    let records = queue.journal(&key).unwrap();
    assert_eq!(records.len(), 5);
    assert_eq!(records[1].count, 8);

    // Reopening an up-to-date file changes nothing.
    drop(queue);
    let (queue, _clock) = file.open_manual();
    assert_eq!(queue.journal(&key).unwrap(), records);
}

#[test]
fn a_new_file_has_incremental_vacuum_from_the_start() {
    let file = TempQueueFile::new("new-file");
    drop(file.open_manual());
    assert_eq!(pragma(&file.path, "auto_vacuum"), 2);
    assert_eq!(pragma(&file.path, "user_version"), 5);
}

/// A day of a real fleet: 2,000 pushes, each to 20 clusters with 300 GitRepositories
/// skipped on each. The old scheme's size is measured on a sample of its rows (writing all
/// 12 million would take gigabytes) and multiplied out.
#[test]
fn prints_the_journal_of_a_fleets_day_summarised_and_as_one_row_per_skip() {
    const PUSHES: usize = 2_000;
    const CLUSTERS: usize = 20;
    const SKIPPED_PER_CLUSTER: usize = 300;
    const SAMPLE_PUSHES: usize = 10;

    let file = TempQueueFile::new("fleet-day");
    let (queue, clock) = file.open_manual();
    queue.set_journal_max_bytes(u64::MAX);
    let mut writing = Duration::ZERO;
    let mut entries_written = 0_u64;
    for n in 0..PUSHES {
        clock.advance(Duration::from_millis(43_200));
        let entries = push_entries(&key(n), CLUSTERS, SKIPPED_PER_CLUSTER);
        entries_written += entries.len() as u64;
        let started = Instant::now();
        queue.record(&entries).unwrap();
        writing += started.elapsed();
    }
    let write_seconds = writing.as_secs_f64();
    let measured = Instant::now();
    let summarised = queue.journal_stats().unwrap();
    let stats_millis = measured.elapsed().as_secs_f64() * 1000.0;
    let file_bytes = file.checkpointed_size();

    let sample = TempQueueFile::new("fleet-day-old-scheme");
    let old_bytes_per_row = {
        let connection = rusqlite::Connection::open(&sample.path).unwrap();
        connection.execute_batch(SCHEMA_V2_FILE).unwrap();
        let transaction = connection.unchecked_transaction().unwrap();
        let mut rows = 0_u64;
        for n in 0..SAMPLE_PUSHES {
            for entry in push_entries(&key(n), CLUSTERS, SKIPPED_PER_CLUSTER) {
                insert_v2(
                    &transaction,
                    &entry.key,
                    entry.cluster.as_deref(),
                    &entry.stage,
                    &entry.detail,
                );
                rows += 1;
            }
        }
        transaction.commit().unwrap();
        let bytes: u64 = connection
            .query_row(
                "SELECT SUM(pgsize) FROM dbstat('main', 1)
                 WHERE name IN (SELECT name FROM sqlite_schema WHERE tbl_name = 'journal')",
                [],
                |row| row.get(0),
            )
            .unwrap();
        bytes as f64 / rows as f64
    };
    let old_bytes = old_bytes_per_row * entries_written as f64;
    let mib = |bytes: f64| bytes / (1024.0 * 1024.0);
    let default_cap = fluxrelay_adapters::embedded::DEFAULT_JOURNAL_MAX_BYTES as f64;

    println!(
        "a day of {PUSHES} pushes x {CLUSTERS} clusters x {SKIPPED_PER_CLUSTER} skips:\n\
         \x20 summarised: {} rows, {:.1} MiB of journal ({:.1} MiB file), {PUSHES} record calls took {write_seconds:.1} s; \
         journal_stats() took {stats_millis:.0} ms\n\
         \x20 one row per entry (old): {entries_written} rows, {:.0} MiB ({old_bytes_per_row:.0} bytes a row, \
         measured on {SAMPLE_PUSHES} pushes)\n\
         \x20 {:.0}x fewer rows, {:.0}x fewer bytes; the default {:.0} MiB cap holds {:.1} days \
         (retention: {} days)",
        summarised.rows,
        mib(summarised.bytes as f64),
        mib(file_bytes as f64),
        mib(old_bytes),
        entries_written as f64 / summarised.rows as f64,
        old_bytes / summarised.bytes as f64,
        mib(default_cap),
        default_cap / summarised.bytes as f64,
        JOURNAL_RETENTION.as_secs() / 86_400,
    );
    assert_eq!(summarised.rows, (PUSHES * (1 + CLUSTERS * 3)) as u64);
}
