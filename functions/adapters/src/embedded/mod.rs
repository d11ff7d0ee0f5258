//! The embedded durable queue: what `fluxrelay serve` uses instead of SQS FIFO, with the
//! semantics the handlers rely on there. One SQLite file holds named queues (`intake`,
//! `dispatch`), a 5-minute deduplication window per queue, FIFO message groups, visibility
//! timeouts with receive counts, and a dead-letter table with reasons.
//!
//! Durability: WAL with `synchronous = FULL`, so a call returns `Ok` only after its
//! transaction is fsynced; an acknowledged webhook survives a process kill *and* a power
//! loss. `NORMAL` would survive only the former, and the reliability rule is "never
//! acknowledge what is not persisted". Batches amortise the fsync.
//!
//! Calls block on SQLite; async callers go through `spawn_blocking` (the port impls do).

mod clock;
mod journal;
mod journal_cap;
mod settle;
mod store;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use fluxrelay_core::ports::{DispatchPublisher, PushPublisher, QueueError};
use fluxrelay_core::push::{Dispatch, Push};
use rusqlite::{Connection, Transaction, TransactionBehavior};

use self::clock::millis;
pub use self::clock::{Clock, ManualClock, SystemClock};
pub use self::journal::{
    JOURNAL_RETENTION, JournalEntry, JournalRecord, SKIP_DETAILS_KEPT, SKIPPED,
};
use self::journal_cap::JournalCap;
pub use self::journal_cap::{DEFAULT_JOURNAL_MAX_BYTES, JournalStats};
pub use self::settle::EmbeddedSettle;
use self::store::storage;
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
/// A deduplication id seen this recently (from its first enqueue) is a duplicate, as in SQS.
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
    /// The deduplication id was first seen within `DEDUP_WINDOW`; nothing was enqueued.
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
    // One connection: SQLite serialises writers anyway, and every operation here writes
    // or is short.
    connection: Mutex<Connection>,
    clock: Arc<dyn Clock>,
    journal_cap: JournalCap,
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
        let path = path.as_ref().to_path_buf();
        let mut connection = Connection::open(&path).map_err(|error| {
            QueueError::new(format!("embedded queue: open {}: {error}", path.display()))
        })?;
        // Another process (`fluxrelay dlq ...`) may hold the write lock briefly.
        connection
            .busy_timeout(Duration::from_secs(5))
            .map_err(storage("set busy timeout"))?;
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
        store::migrate(&mut connection)?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                connection: Mutex::new(connection),
                clock,
                journal_cap: JournalCap::new(DEFAULT_JOURNAL_MAX_BYTES),
            }),
        })
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
    /// deduplication id is consumed). A repeated dedup id within the batch is a duplicate.
    pub fn send_batch(
        &self,
        queue: &str,
        messages: &[NewMessage],
    ) -> Result<Vec<SendOutcome>, QueueError> {
        let window = millis(DEDUP_WINDOW);
        self.write(|transaction, now| {
            store::prune_dedup(transaction, now, window)?;
            messages
                .iter()
                .map(|message| store::send(transaction, queue, message, now, window))
                .collect()
        })
    }

    /// Enqueue `body` on `queue`, deliverable after `delay`, outside any FIFO group and
    /// without deduplication (an SQS standard queue's per-message delay).
    pub fn send_delayed(&self, queue: &str, body: &str, delay: Duration) -> Result<(), QueueError> {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let unique = format!(
            "delayed:{}:{}:{}",
            std::process::id(),
            self.inner.clock.now_millis(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let message = NewMessage::new(unique.clone(), unique, body);
        self.write(|transaction, now| {
            store::send_delayed(transaction, queue, &message, now, millis(delay))
        })
    }

    /// Copy the message delivered under `receipt` to the dead letters with `body` and the
    /// reason, filed under another queue and group when `file_as` says so; the message
    /// stays until it is deleted (settling deletes it next).
    pub fn dead_letter_copy(
        &self,
        receipt: &Receipt,
        file_as: Option<(&str, &str)>,
        body: &str,
        reason: &DeadLetterReason,
    ) -> Result<(), QueueError> {
        let copied = self.write(|transaction, now| {
            store::dead_letter_copy(transaction, receipt, file_as, body, reason, now)
        })?;
        if !copied {
            return Err(QueueError::new(format!(
                "embedded queue: cannot dead-letter {receipt}: the receipt is stale"
            )));
        }
        Ok(())
    }

    /// Up to `max` of the oldest deliverable messages; see `store::receive` for the rule.
    pub fn receive(
        &self,
        queue: &str,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<Received>, QueueError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.write(|transaction, now| {
            store::receive(transaction, queue, max, now, millis(visibility))
        })
    }

    pub fn delete(&self, receipt: &Receipt) -> Result<(), QueueError> {
        self.write(|transaction, _| store::delete(transaction, receipt))
    }

    /// Hide an in-flight message for `visibility` from now; zero makes it deliverable now.
    pub fn change_visibility(
        &self,
        receipt: &Receipt,
        visibility: Duration,
    ) -> Result<(), QueueError> {
        self.write(|transaction, now| {
            store::change_visibility(transaction, receipt, now, millis(visibility))
        })
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
        let moved = self.write(|transaction, now| {
            store::dead_letter(transaction, message_id, receive_count, reason, now)
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
        store::list_dead_letters(&self.lock(), queue, cluster)
    }

    /// Move the queue's dead letters (only one cluster's, if given) back; returns how many.
    pub fn redrive(&self, queue: &str, cluster: Option<&str>) -> Result<usize, QueueError> {
        self.write(|transaction, now| store::redrive(transaction, queue, cluster, now))
    }

    /// After a crash, make the messages the dead process had received deliverable at once
    /// instead of after their visibility timeout. Only for the queue's exclusive owner (`fluxrelay
    /// serve` holds a lock file): a live consumer's messages would be delivered twice.
    /// Returns how many were released.
    pub fn release_leases(&self, queue: &str) -> Result<usize, QueueError> {
        self.write(|transaction, now| store::release_leases(transaction, queue, now))
    }

    /// Append to the push journal: skips folded into one summary per push and cluster (give
    /// one attempt's skips in one call: a later call is taken as a retry of the same
    /// dispatch), entries older than `JOURNAL_RETENTION` dropped, the oldest pushes dropped
    /// while the journal is over its cap, and free pages given back.
    pub fn record(&self, entries: &[JournalEntry]) -> Result<(), QueueError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.write(|transaction, now| {
            journal::append(transaction, entries, now)?;
            let cap = &self.inner.journal_cap;
            cap.enforce(transaction)?;
            journal_cap::reclaim(transaction, cap.keep_free_bytes())
        })
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
        journal_cap::stats(&self.lock())
    }

    /// The journal of one push, oldest first.
    pub fn journal(&self, key: &str) -> Result<Vec<JournalRecord>, QueueError> {
        journal::records(&self.lock(), key)
    }

    /// Journalled keys starting with `prefix` (at most 20).
    pub fn journal_keys(&self, prefix: &str) -> Result<Vec<String>, QueueError> {
        journal::keys_with_prefix(&self.lock(), prefix)
    }

    /// The bodies of every message on `queue`, whatever its state, oldest first: for
    /// inspection (what is still pending), never for delivery.
    pub fn peek(&self, queue: &str) -> Result<Vec<String>, QueueError> {
        store::peek(&self.lock(), queue)
    }

    pub fn dead_letter_count(&self, queue: &str) -> Result<u64, QueueError> {
        store::dead_letter_count(&self.lock(), queue)
    }

    pub fn depth(&self, queue: &str) -> Result<Depth, QueueError> {
        let now = self.inner.clock.now_millis();
        store::depth(&self.lock(), queue, now)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held dropped its open transaction, which SQLite rolled
        // back; the connection is consistent, so poisoning carries no information here.
        self.inner
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Run `operation` in an IMMEDIATE transaction (the write lock up front, so concurrent
    /// processes wait for `busy_timeout` instead of failing on upgrade) and commit it.
    fn write<T>(
        &self,
        operation: impl FnOnce(&Transaction<'_>, i64) -> Result<T, QueueError>,
    ) -> Result<T, QueueError> {
        let mut connection = self.lock();
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(storage("begin transaction"))?;
        let now = self.inner.clock.now_millis();
        let value = operation(&transaction, now)?;
        transaction.commit().map_err(storage("commit"))?;
        Ok(value)
    }

    async fn send_batch_async(
        &self,
        queue: &'static str,
        messages: Vec<NewMessage>,
    ) -> Result<(), QueueError> {
        if messages.is_empty() {
            return Ok(());
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.send_batch(queue, &messages))
            .await
            .map_err(|error| QueueError::new(format!("embedded queue: send task: {error}")))??;
        Ok(())
    }
}

/// Duplicates count as success: the push is already persisted, as SQS FIFO reports it.
impl PushPublisher for EmbeddedQueue {
    async fn publish_pushes(&self, pushes: &[Push]) -> Result<(), QueueError> {
        let messages = pushes
            .iter()
            .map(|push| NewMessage::new(push.project.id.to_string(), &push.key, push.to_json()))
            .collect();
        self.send_batch_async(INTAKE_QUEUE, messages).await
    }
}

impl DispatchPublisher for EmbeddedQueue {
    async fn publish_dispatches(&self, dispatches: &[Dispatch]) -> Result<(), QueueError> {
        let messages = dispatches
            .iter()
            .map(|dispatch| {
                NewMessage::new(dispatch.group_id(), dispatch.dedup_id(), dispatch.to_json())
            })
            .collect();
        self.send_batch_async(DISPATCH_QUEUE, messages).await
    }
}
