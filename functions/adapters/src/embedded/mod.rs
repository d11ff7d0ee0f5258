//! The embedded durable queue: what `fluxrelay serve` uses instead of SQS FIFO, with the
//! semantics the handlers rely on there. One SQLite file holds named queues (`intake`,
//! `dispatch`), a 5-minute deduplication window per queue, FIFO message groups, visibility
//! timeouts with receive counts, and a dead-letter table with reasons.
//!
//! Durability: WAL, and a send that is acknowledged outside the process (ingest's push,
//! behind its `202`; an operator's redrive) returns `Ok` only after its transaction is
//! fsynced (`synchronous = FULL`): it survives a process kill *and* a power loss, by the
//! reliability rule "never acknowledge what is not persisted". The queue's own hand-offs
//! (receives, route's dispatches, deletes, retries, the journal) are
//! [`Durability::Ordered`]: committed without their own fsync, carried to the disk by the
//! next synced commit. A power loss can undo them only together with everything after
//! them, which puts a push back where it was (routed or triggered again: a duplicate
//! trigger, never a lost push). Batches amortise the fsync, and so does the group commit
//! (`writer`): concurrent writes share one transaction, each answered with its own result
//! only after that commit.
//!
//! Writes go through the writer thread; reads (depths, dead letters, the journal) use a
//! connection of their own, so a metrics scrape never holds up a commit. The blocking calls
//! block on SQLite; async callers go through `spawn_blocking`, except the publishers, the
//! settles and the receives, which wait for their group without taking a thread.

mod clock;
#[cfg(test)]
mod group_commit_tests;
#[cfg(test)]
mod group_state_tests;
mod journal;
mod journal_cap;
mod settle;
mod store;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use fluxrelay_core::ports::{DispatchPublisher, PushPublisher, QueueError};
use fluxrelay_core::push::{Dispatch, Push};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, Transaction};

use self::clock::millis;
pub use self::clock::{Clock, ManualClock, SystemClock};
pub use self::journal::{
    JOURNAL_RETENTION, JournalEntry, JournalRecord, SKIP_DETAILS_KEPT, SKIPPED,
};
use self::journal_cap::JournalCap;
pub use self::journal_cap::{DEFAULT_JOURNAL_MAX_BYTES, JournalStats, PRUNE_CHUNK_ROWS};
pub use self::settle::{EmbeddedSettle, HeldSettled};
use self::store::storage;
use self::writer::Writer;
pub use self::writer::{Durability, GroupCommitStats};
pub use fluxrelay_core::ports::DeadLetterReason;

/// The queue `PushPublisher` writes to: group = project id, dedup = push key.
pub const INTAKE_QUEUE: &str = "intake";
/// The queue `DispatchPublisher` writes to: group = cluster, dedup = cluster + push key.
pub const DISPATCH_QUEUE: &str = "dispatch";
/// Dispatch retries: each message in a group of its own and deliverable after its delay,
/// as the SQS standard queue the Lambda dispatch function retries through.
pub const DISPATCH_RETRY_QUEUE: &str = "dispatch-retry";
/// Confirmations (issue 14): each message in a group of its own, deliverable after its
/// delay (the SQS standard confirm queue's `DelaySeconds`); a start is deduplicated per
/// push and cluster within the window, so a dispatch that comes back starts no second one.
pub const CONFIRM_QUEUE: &str = "confirm";
/// A deduplication id seen this recently (from its first enqueue) is a duplicate, as in SQS:
/// never delivered. A send reports it when the first was already received; a duplicate of
/// a message still waiting is enqueued, and dropped by the receive that meets it.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(5 * 60);

/// One message to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub group_id: String,
    pub dedup_id: String,
    pub body: String,
}

impl NewMessage {
    pub fn new(
        group_id: impl Into<String>,
        dedup_id: impl Into<String>,
        body: impl Into<String>,
    ) -> Self {
        Self {
            group_id: group_id.into(),
            dedup_id: dedup_id.into(),
            body: body.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    Enqueued,
    /// The deduplication id was first received within `DEDUP_WINDOW` of its enqueue;
    /// nothing was enqueued. (A duplicate of a message not yet received is `Enqueued`,
    /// and never delivered.)
    Duplicate,
}

/// Proof of one delivery of one message. A later delivery of the same message gets a new
/// receipt, and the old one is then refused. Text form `<message id>.<receive count>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Receipt {
    message_id: i64,
    receive_count: u32,
}

impl Receipt {
    pub fn message_id(&self) -> i64 {
        self.message_id
    }
}

impl fmt::Display for Receipt {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}.{}", self.message_id, self.receive_count)
    }
}

impl FromStr for Receipt {
    type Err = QueueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || QueueError::new(format!("embedded queue: malformed receipt {text:?}"));
        let (message_id, receive_count) = text.split_once('.').ok_or_else(invalid)?;
        Ok(Self {
            message_id: message_id.parse().map_err(|_| invalid())?,
            receive_count: receive_count.parse().map_err(|_| invalid())?,
        })
    }
}

/// One delivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub id: i64,
    pub receipt: Receipt,
    pub group_id: String,
    pub body: String,
    /// 1 on the first delivery.
    pub receive_count: u32,
    /// Milliseconds since the Unix epoch.
    pub first_enqueued_at_ms: i64,
}

/// Which message to dead-letter: the one delivered under a receipt (refused when stale), or
/// any message by id (an operator's choice, whatever its state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageRef {
    Receipt(Receipt),
    Id(i64),
}

impl From<Receipt> for MessageRef {
    fn from(receipt: Receipt) -> Self {
        Self::Receipt(receipt)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: i64,
    pub queue: String,
    pub group_id: String,
    pub body: String,
    pub receive_count: u32,
    pub first_enqueued_at_ms: i64,
    pub reason: DeadLetterReason,
    pub dead_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Depth {
    /// Not in flight (some may wait behind an in-flight message of their group).
    pub visible: u64,
    pub in_flight: u64,
}

/// A handle on one queue file; cheap to clone, safe to share between threads.
#[derive(Clone)]
pub struct EmbeddedQueue {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    // One writer (SQLite serialises writers anyway), grouping concurrent writes into one
    // transaction; first in the struct, so dropping the queue stops it first.
    writer: Writer,
    /// The writer's connection: tests hold it to gather a group.
    #[cfg_attr(not(test), allow(dead_code))]
    write_connection: Arc<Mutex<Connection>>,
    // Reads see what is committed (WAL: readers never wait for the writer's fsync).
    reader: Mutex<Connection>,
    clock: Arc<dyn Clock>,
    journal_cap: Arc<JournalCap>,
}

impl fmt::Debug for EmbeddedQueue {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("EmbeddedQueue")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl EmbeddedQueue {
    /// Open or create the queue file, on the system clock.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, QueueError> {
        Self::open_with_clock(path, Arc::new(SystemClock))
    }

    pub fn open_with_clock(
        path: impl AsRef<Path>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, QueueError> {
        Self::open_deferring(path, clock, writer::DEFERRED_AT_MOST)
    }

    /// `deferred_at_most`: how long a group of [`Durability::Deferred`] writes waits for
    /// company; tests set it long (to see the wait) or short.
    fn open_deferring(
        path: impl AsRef<Path>,
        clock: Arc<dyn Clock>,
        deferred_at_most: Duration,
    ) -> Result<Self, QueueError> {
        let path = path.as_ref().to_path_buf();
        let mut connection = connect(&path)?;
        let journal_mode: String = connection
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(storage("enable WAL"))?;
        if !journal_mode.eq_ignore_ascii_case("wal") {
            return Err(QueueError::new(format!(
                "embedded queue: {} cannot use WAL (journal mode {journal_mode})",
                path.display()
            )));
        }
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(storage("set synchronous = FULL"))?;
        // A savepoint's statement journal (each write of a group run again after one
        // failed, the journal lines beside a batch's deletes) spills to a temporary file
        // past 64 KiB: when every write had a savepoint, a file created, written and
        // removed by most commits under load, about 5 % of serve's CPU (BENCHMARKS.md,
        // "Statement journals in memory; a scrape's journal measurement"). In memory it is
        // one write's pages at most, freed when its savepoint is released.
        connection
            .pragma_update(None, "temp_store", "MEMORY")
            .map_err(storage("keep statement journals in memory"))?;
        // SQLite checkpoints the WAL into the queue file after the commit that takes it
        // past this many pages. Each push's first receive dirties a random leaf of the
        // deduplication table, and a checkpoint writes every page the WAL holds: the fewer checkpoints,
        // the fewer pages written twice. 16,000 pages (a WAL file of up to about 64 MiB
        // beside the queue file) against SQLite's 1,000: 9,888 and 10,250 acknowledged
        // pushes a second against 8,671 and 8,961 (BENCHMARKS.md, "A larger WAL before
        // each checkpoint").
        connection
            .pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)
            .map_err(storage("set wal_autocheckpoint"))?;
        store::migrate(&mut connection)?;
        let page_size: u64 = connection
            .pragma_query_value(None, "page_size", |row| row.get(0))
            .map_err(storage("read the page size"))?;
        // Every statement the writer runs stays prepared: rusqlite keeps 16 by default,
        // fewer than the writer's working set, and a push's writes then re-parsed the
        // statements the others had pushed out.
        connection.set_prepared_statement_cache_capacity(WRITER_STATEMENTS);
        let reader = connect(&path)?;
        // The reader looks before receives, counts the depth for `/metrics`, and serves
        // `dlq`/`explain` reads: a small working set, where SQLite's default page cache
        // (2,000 KiB) filled up with the depth count's index pages under load. Pages it no
        // longer keeps are read again from the OS's cache.
        reader
            .pragma_update(None, "cache_size", -READER_CACHE_KIB)
            .map_err(storage("set the reader's cache size"))?;
        let write_connection = Arc::new(Mutex::new(connection));
        let writer = Writer::start(write_connection.clone(), clock.clone(), deferred_at_most)?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                writer,
                write_connection,
                reader: Mutex::new(reader),
                clock,
                journal_cap: Arc::new(JournalCap::new(DEFAULT_JOURNAL_MAX_BYTES, page_size)),
            }),
        })
    }

    /// Transactions committed and writes answered since the queue was opened.
    pub fn group_commit_stats(&self) -> GroupCommitStats {
        self.inner.writer.stats()
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn send(
        &self,
        queue: &str,
        group_id: &str,
        dedup_id: &str,
        body: &str,
    ) -> Result<SendOutcome, QueueError> {
        let message = NewMessage::new(group_id, dedup_id, body);
        let mut outcomes = self.send_batch(queue, std::slice::from_ref(&message))?;
        outcomes
            .pop()
            .ok_or_else(|| QueueError::new("embedded queue: send produced no outcome"))
    }

    /// Enqueue all messages in one transaction: all are persisted, or none (and no
    /// deduplication id is consumed). A repeated dedup id within the batch is delivered
    /// once.
    pub fn send_batch(
        &self,
        queue: &str,
        messages: &[NewMessage],
    ) -> Result<Vec<SendOutcome>, QueueError> {
        self.write(send_operation(queue.to_string(), messages.to_vec()))
    }

    /// Enqueue one message as a hand-off between the queue's own consumers
    /// ([`Durability::Ordered`]), waiting for its group's commit without a thread.
    pub async fn send_ordered_async(
        &self,
        queue: &str,
        message: NewMessage,
    ) -> Result<SendOutcome, QueueError> {
        let mut outcomes = self
            .inner
            .writer
            .write_async(
                Durability::Ordered,
                send_operation(queue.to_string(), vec![message]),
            )
            .await?;
        outcomes
            .pop()
            .ok_or_else(|| QueueError::new("embedded queue: send produced no outcome"))
    }

    /// Enqueue `body` on `queue`, deliverable after `delay`, outside any FIFO group and
    /// without deduplication (an SQS standard queue's per-message delay). A retry or a
    /// recheck: [`Durability::Ordered`].
    pub fn send_delayed(&self, queue: &str, body: &str, delay: Duration) -> Result<(), QueueError> {
        self.write_ordered(self.send_delayed_operation(queue, body, delay))
    }

    /// [`EmbeddedQueue::send_delayed`] for async callers: waits for its group's commit
    /// without taking a thread.
    pub async fn send_delayed_async(
        &self,
        queue: &str,
        body: &str,
        delay: Duration,
    ) -> Result<(), QueueError> {
        self.inner
            .writer
            .write_async(
                Durability::Ordered,
                self.send_delayed_operation(queue, body, delay),
            )
            .await
    }

    fn send_delayed_operation(
        &self,
        queue: &str,
        body: &str,
        delay: Duration,
    ) -> impl FnMut(&Transaction<'_>, i64) -> Result<(), QueueError> + Send + 'static {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let unique = format!(
            "delayed:{}:{}:{}",
            std::process::id(),
            self.inner.clock.now_millis(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let message = NewMessage::new(unique.clone(), unique, body);
        let queue = queue.to_string();
        move |transaction, now| {
            store::send_delayed(transaction, &queue, &message, now, millis(delay))
        }
    }

    /// Copy the message delivered under `receipt` to the dead letters with `body` and the
    /// reason, filed under another queue and group when `file_as` says so; the message
    /// stays until it is deleted (settling deletes it next). [`Durability::Ordered`]: undone
    /// only with the delete after it, the message is then retried and dead-lettered again.
    pub fn dead_letter_copy(
        &self,
        receipt: &Receipt,
        file_as: Option<(&str, &str)>,
        body: &str,
        reason: &DeadLetterReason,
    ) -> Result<(), QueueError> {
        let file_as = file_as.map(|(queue, group)| (queue.to_string(), group.to_string()));
        let (copy_of, body, why) = (*receipt, body.to_string(), reason.clone());
        let copied = self.write_ordered(move |transaction, now| {
            let file_as = file_as
                .as_ref()
                .map(|(queue, group)| (queue.as_str(), group.as_str()));
            store::dead_letter_copy(transaction, &copy_of, file_as, &body, &why, now)
        })?;
        if !copied {
            return Err(QueueError::new(format!(
                "embedded queue: cannot dead-letter {receipt}: the receipt is stale"
            )));
        }
        Ok(())
    }

    /// Up to `max` of the oldest deliverable messages; see `store::receive` for the rule.
    /// [`Durability::Ordered`]: a receive undone by a power loss is a delivery the restart
    /// repeats (it releases the dead process's leases anyway).
    pub fn receive(
        &self,
        queue: &str,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<Received>, QueueError> {
        if max == 0 || !self.may_deliver(queue)? {
            return Ok(Vec::new());
        }
        self.write_ordered(receive_operation(queue, max, visibility))
    }

    /// [`EmbeddedQueue::receive`] for async callers, without taking a thread: the look runs
    /// here (one index probe, whatever waits behind hidden messages, and it never waits for
    /// the reader) and the receive waits for its group's commit. Through a blocking thread,
    /// each look was a thread woken and put back to sleep, and serve's dispatch looks after
    /// every settled cluster. (Measured and reverted once, while the look still walked
    /// every blocked message: inline, that walk would have stalled a tokio worker.)
    pub async fn receive_async(
        &self,
        queue: &str,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<Received>, QueueError> {
        if max == 0 || !self.may_deliver(queue)? {
            return Ok(Vec::new());
        }
        self.inner
            .writer
            .write_async(
                Durability::Ordered,
                receive_operation(queue, max, visibility),
            )
            .await
    }

    /// Whether a receive on `queue` could take a message now: `false` only when the reader
    /// sees none. Most receives find nothing (a worker looks again after each batch, and
    /// after each wake-up): the reader tells so without the write lock and a transaction of
    /// its own. Those were 9 of the 17 writes per push to one cluster (BENCHMARKS.md, "Fewer
    /// transactions per push"). A message that turns deliverable just after this look is
    /// found by the next one, as it would be after an empty receive. A reader busy with a
    /// scrape (the journal's size reads every page of it) is not waited for: the receive
    /// then asks the writer, as it did before the look.
    fn may_deliver(&self, queue: &str) -> Result<bool, QueueError> {
        let now = self.inner.clock.now_millis();
        match self.inner.reader.try_lock() {
            Ok(reader) => store::deliverable(&reader, queue, now),
            Err(TryLockError::Poisoned(poisoned)) => {
                store::deliverable(&poisoned.into_inner(), queue, now)
            }
            Err(TryLockError::WouldBlock) => Ok(true),
        }
    }

    /// [`Durability::Ordered`]: a delete undone by a power loss delivers the message again
    /// (a duplicate trigger, which is idempotent).
    pub fn delete(&self, receipt: &Receipt) -> Result<(), QueueError> {
        self.write_ordered(delete_operation(*receipt)).map(drop)
    }

    /// [`EmbeddedQueue::delete`] for async callers: waits for its group's commit without
    /// taking a thread (settling a dispatch batch of 1,000 messages at once took a blocking
    /// thread each: 105 threads and 60 MiB of RSS under the throughput load). `true`: the
    /// message's group still holds a message (one its consumer may be waiting for).
    pub async fn delete_async(&self, receipt: &Receipt) -> Result<bool, QueueError> {
        self.inner
            .writer
            .write_async(Durability::Ordered, delete_operation(*receipt))
            .await
    }

    /// Hide an in-flight message for `visibility` from now; zero makes it deliverable now.
    pub fn change_visibility(
        &self,
        receipt: &Receipt,
        visibility: Duration,
    ) -> Result<(), QueueError> {
        self.write_ordered(change_visibility_operation(*receipt, visibility))
    }

    /// [`EmbeddedQueue::change_visibility`] for async callers, without taking a thread.
    pub async fn change_visibility_async(
        &self,
        receipt: &Receipt,
        visibility: Duration,
    ) -> Result<(), QueueError> {
        self.inner
            .writer
            .write_async(
                Durability::Ordered,
                change_visibility_operation(*receipt, visibility),
            )
            .await
    }

    pub fn dead_letter(
        &self,
        message: impl Into<MessageRef>,
        reason: &DeadLetterReason,
    ) -> Result<(), QueueError> {
        let message = message.into();
        let (message_id, receive_count) = match message {
            MessageRef::Receipt(receipt) => (receipt.message_id, Some(receipt.receive_count)),
            MessageRef::Id(id) => (id, None),
        };
        let why = reason.clone();
        let moved = self.write(move |transaction, now| {
            store::dead_letter(transaction, message_id, receive_count, &why, now)
        })?;
        if !moved {
            return Err(QueueError::new(format!(
                "embedded queue: cannot dead-letter {message:?}: no such message, or the \
                 receipt is stale"
            )));
        }
        Ok(())
    }

    pub fn list_dead_letters(
        &self,
        queue: &str,
        cluster: Option<&str>,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        store::list_dead_letters(&self.read(), queue, cluster)
    }

    /// Move the queue's dead letters (only one cluster's, if given) back; returns how many.
    pub fn redrive(&self, queue: &str, cluster: Option<&str>) -> Result<usize, QueueError> {
        let (queue, cluster) = (queue.to_string(), cluster.map(str::to_string));
        self.write(move |transaction, now| {
            store::redrive(transaction, &queue, cluster.as_deref(), now)
        })
    }

    /// After a crash, make the messages the dead process had received deliverable at once
    /// instead of after their visibility timeout. Only for the queue's exclusive owner (`fluxrelay
    /// serve` holds a lock file): a live consumer's messages would be delivered twice.
    /// Returns how many were released.
    pub fn release_leases(&self, queue: &str) -> Result<usize, QueueError> {
        let queue = queue.to_string();
        self.write(move |transaction, now| store::release_leases(transaction, &queue, now))
    }

    /// Append to the push journal: skips folded into one summary per push and cluster (give
    /// one attempt's skips in one call: a later call is taken as a retry of the same
    /// dispatch), entries older than `JOURNAL_RETENTION` dropped, the oldest pushes dropped
    /// while the journal is over its cap, and free pages given back.
    pub fn record(&self, entries: &[JournalEntry]) -> Result<(), QueueError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.write_ordered(self.record_operation(entries.to_vec()))
    }

    /// [`EmbeddedQueue::record`] for async callers: waits for its group's commit without
    /// taking a thread (serve's dispatch journals each cluster as it is settled).
    pub async fn record_async(&self, entries: Vec<JournalEntry>) -> Result<(), QueueError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.inner
            .writer
            .write_async(Durability::Ordered, self.record_operation(entries))
            .await
    }

    /// Delete messages and append the journal lines that tell why, in one write (serve's
    /// dispatch settles a cluster this way: one write where a delete and a journal write
    /// each took their own, 20 of the 46 writes per push to 20 clusters). The journal lines
    /// are written apart inside it: when they fail they alone are rolled back, since
    /// explaining must never hold up a delete. `Err`: nothing was written, the messages
    /// stay in flight and come back after their visibility timeout. `durability`:
    /// [`Durability::Ordered`], or [`Durability::Deferred`] when the caller's waiting holds
    /// nothing up.
    pub async fn delete_and_record_async(
        &self,
        receipts: Vec<Receipt>,
        entries: Vec<JournalEntry>,
        durability: Durability,
    ) -> Result<DeletedAndRecorded, QueueError> {
        let mut record = (!entries.is_empty()).then(|| self.record_operation(entries));
        self.inner
            .writer
            .write_async(durability, move |transaction, now| {
                let mut touched = store::TouchedGroups::default();
                let deleted = receipts
                    .iter()
                    .map(|receipt| {
                        store::delete(transaction, receipt).map(|group| touched.add(group))
                    })
                    .collect();
                let groups_not_empty = touched.refresh(transaction)?;
                let recorded = match record.as_mut() {
                    Some(record) => {
                        writer::apart(transaction, |transaction| record(transaction, now))?
                    }
                    None => Ok(()),
                };
                Ok(DeletedAndRecorded {
                    deleted,
                    groups_not_empty,
                    recorded,
                })
            })
            .await
    }

    /// For explaining, not for delivery: ordered with the writes it describes.
    fn record_operation(
        &self,
        entries: Vec<JournalEntry>,
    ) -> impl FnMut(&Transaction<'_>, i64) -> Result<(), QueueError> + Send + 'static {
        let cap = self.inner.journal_cap.clone();
        move |transaction, now| {
            journal::append(transaction, &entries, now)?;
            cap.enforce(transaction, &entries)?;
            journal_cap::reclaim(transaction, cap.keep_free_pages())
        }
    }

    /// Cap the journal's size (its table and indexes) from the next `record` on; the
    /// default is `DEFAULT_JOURNAL_MAX_BYTES`.
    pub fn set_journal_max_bytes(&self, max_bytes: u64) {
        self.inner.journal_cap.set_max_bytes(max_bytes);
    }

    pub fn journal_max_bytes(&self) -> u64 {
        self.inner.journal_cap.max_bytes()
    }

    /// The journal's rows and bytes on disk. Reads every page of the journal: for a scrape,
    /// not for every write.
    pub fn journal_stats(&self) -> Result<JournalStats, QueueError> {
        journal_cap::stats(&self.read())
    }

    /// How often the writer measured the journal to enforce its cap since the queue was
    /// opened: each reads every page of the journal.
    pub fn journal_measurements(&self) -> u64 {
        self.inner.journal_cap.measurements()
    }

    /// The journal of one push, oldest first.
    pub fn journal(&self, key: &str) -> Result<Vec<JournalRecord>, QueueError> {
        journal::records(&self.read(), key)
    }

    /// Journalled keys starting with `prefix` (at most 20).
    pub fn journal_keys(&self, prefix: &str) -> Result<Vec<String>, QueueError> {
        journal::keys_with_prefix(&self.read(), prefix)
    }

    /// The bodies of every message on `queue`, whatever its state, oldest first: for
    /// inspection (what is still pending), never for delivery.
    pub fn peek(&self, queue: &str) -> Result<Vec<String>, QueueError> {
        store::peek(&self.read(), queue)
    }

    pub fn dead_letter_count(&self, queue: &str) -> Result<u64, QueueError> {
        store::dead_letter_count(&self.read(), queue)
    }

    /// How long `message` has waited since it was first enqueued, on the clock that
    /// stamped that enqueue; no wait when the clock reads earlier than the stamp.
    pub fn waited(&self, message: &Received) -> Duration {
        let waited = self
            .inner
            .clock
            .now_millis()
            .saturating_sub(message.first_enqueued_at_ms);
        Duration::from_millis(u64::try_from(waited).unwrap_or(0))
    }

    pub fn depth(&self, queue: &str) -> Result<Depth, QueueError> {
        let now = self.inner.clock.now_millis();
        store::depth(&self.read(), queue, now)
    }

    /// The read connection: it sees what is committed and never waits for a commit.
    fn read(&self) -> MutexGuard<'_, Connection> {
        writer::lock(&self.inner.reader)
    }

    /// Run `operation` in the writer's next group (an IMMEDIATE transaction: the write lock
    /// up front, so concurrent processes wait for `busy_timeout` instead of failing on
    /// upgrade) and return its result once that group is committed and fsynced.
    fn write<T: Send + 'static>(
        &self,
        operation: impl FnMut(&Transaction<'_>, i64) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        self.inner.writer.write(Durability::Synced, operation)
    }

    /// [`EmbeddedQueue::write`] for the queue's own hand-offs: answered once committed,
    /// without waiting for an fsync of its own.
    fn write_ordered<T: Send + 'static>(
        &self,
        operation: impl FnMut(&Transaction<'_>, i64) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        self.inner.writer.write(Durability::Ordered, operation)
    }

    /// `send_batch` for async callers: waits for its group's commit without a thread.
    async fn send_batch_async(
        &self,
        queue: &'static str,
        messages: Vec<NewMessage>,
        durability: Durability,
    ) -> Result<(), QueueError> {
        if messages.is_empty() {
            return Ok(());
        }
        self.inner
            .writer
            .write_async(durability, send_operation(queue.to_string(), messages))
            .await?;
        Ok(())
    }
}

/// Enqueue all `messages` in one write: all are persisted, or none (and no deduplication
/// id is consumed); a repeated dedup id within them, or within the group, is delivered once.
fn send_operation(
    queue: String,
    messages: Vec<NewMessage>,
) -> impl FnMut(&Transaction<'_>, i64) -> Result<Vec<SendOutcome>, QueueError> + Send + 'static {
    move |transaction, now| {
        let window = millis(DEDUP_WINDOW);
        store::prune_dedup(transaction, now, window)?;
        messages
            .iter()
            .map(|message| store::send(transaction, &queue, message, now, window))
            .collect()
    }
}

fn receive_operation(
    queue: &str,
    max: usize,
    visibility: Duration,
) -> impl FnMut(&Transaction<'_>, i64) -> Result<Vec<Received>, QueueError> + Send + 'static {
    let queue = queue.to_string();
    move |transaction, now| {
        store::receive(
            transaction,
            &queue,
            max,
            now,
            millis(visibility),
            millis(DEDUP_WINDOW),
        )
    }
}

fn delete_operation(
    receipt: Receipt,
) -> impl FnMut(&Transaction<'_>, i64) -> Result<bool, QueueError> + Send + 'static {
    move |transaction, _| {
        let (queue, group_id) = store::delete(transaction, &receipt)?;
        store::refresh_group(transaction, &queue, &group_id)
    }
}

fn change_visibility_operation(
    receipt: Receipt,
    visibility: Duration,
) -> impl FnMut(&Transaction<'_>, i64) -> Result<(), QueueError> + Send + 'static {
    move |transaction, now| store::change_visibility(transaction, &receipt, now, millis(visibility))
}

/// What one [`EmbeddedQueue::delete_and_record_async`] stored.
#[derive(Debug)]
pub struct DeletedAndRecorded {
    /// Per receipt, in order: deleted, or why not (a stale receipt: the message was
    /// received again meanwhile, and whoever holds it now settles it).
    pub deleted: Vec<Result<(), QueueError>>,
    /// Whether a group a message was deleted from still holds a message: only then can
    /// the deletes have let a consumer receive something it could not before.
    pub groups_not_empty: bool,
    /// The journal lines: stored, or why not (the deletes stand either way).
    pub recorded: Result<(), QueueError>,
}

/// Room in the writer connection's statement cache: its distinct statements (about 25, the
/// queue's and the journal's) with room to spare.
const WRITER_STATEMENTS: usize = 64;

/// WAL pages after which a commit checkpoints (see `open_with_clock`).
const WAL_CHECKPOINT_PAGES: i64 = 16_000;

/// The read connection's page cache, in KiB (SQLite's default is 2,000; the writer keeps it).
const READER_CACHE_KIB: i64 = 512;

/// A connection to the queue file that waits for another process's write lock.
fn connect(path: &Path) -> Result<Connection, QueueError> {
    let connection = Connection::open(path).map_err(|error| {
        QueueError::new(format!("embedded queue: open {}: {error}", path.display()))
    })?;
    // Another process (`fluxrelay dlq ...`) may hold the write lock briefly.
    connection
        .busy_timeout(Duration::from_secs(5))
        .map_err(storage("set busy timeout"))?;
    // Plans that do not depend on the values bound: otherwise SQLite re-prepares a
    // statement whenever a value its plan looked at is bound again (a receive's `LIMIT`
    // and `now`), which was 3–4 % of serve's CPU on the writer and 5 % on the reader's
    // look before each receive.
    connection
        .set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(storage("enable the query planner stability guarantee"))?;
    Ok(connection)
}

/// Duplicates count as success: the push is already persisted, as SQS FIFO reports it.
/// Synced: the caller answers the webhook `202` on this.
impl PushPublisher for EmbeddedQueue {
    async fn publish_pushes(&self, pushes: &[Push]) -> Result<(), QueueError> {
        let messages = pushes
            .iter()
            .map(|push| NewMessage::new(push.project.id.to_string(), &push.key, push.to_json()))
            .collect();
        self.send_batch_async(INTAKE_QUEUE, messages, Durability::Synced)
            .await
    }
}

/// Ordered: route's hand-off of a push from the intake queue, committed before that push's
/// delete there; a power loss that undoes it undoes the delete too, and route routes the
/// push again.
impl DispatchPublisher for EmbeddedQueue {
    async fn publish_dispatches(&self, dispatches: &[Dispatch]) -> Result<(), QueueError> {
        let messages = dispatches
            .iter()
            .map(|dispatch| {
                NewMessage::new(dispatch.group_id(), dispatch.dedup_id(), dispatch.to_json())
            })
            .collect();
        self.send_batch_async(DISPATCH_QUEUE, messages, Durability::Ordered)
            .await
    }
}
