//! Group commit: every write of the embedded queue goes through one writer thread. It takes
//! every write waiting for it, runs them in one IMMEDIATE transaction, commits once, and
//! only then answers each caller with its own result.
//!
//! - A group with a [`Durability::Synced`] write commits with `synchronous = FULL`: one
//!   fsync for the whole group before anyone is answered. A group of
//!   [`Durability::Ordered`] writes only commits with `synchronous = NORMAL`: in WAL mode
//!   the commit is in the file (it survives the process being killed) and not yet fsynced;
//!   the next synced commit's fsync of the WAL carries it, and a power loss before that
//!   rolls it back together with every commit after it (WAL recovery keeps a prefix).
//!
//! - A write that fails rolls back what it wrote and nothing else: the others of its group
//!   commit, as they would have one after another. A group first runs without savepoints
//!   (a savepoint copies every page a write touches into a statement journal: 8.6 % of
//!   serve's CPU under the throughput load, BENCHMARKS.md "A group without savepoints");
//!   if one of its writes fails, the transaction is rolled back and the group run again
//!   from its first write, each write in a savepoint of its own. Writes are therefore
//!   operations that can be run again from the start (`FnMut`), and only the last run's
//!   result is answered.
//! - Writes run in the order they were submitted, in the same transaction, so a later
//!   write sees an earlier one, exactly as two transactions in a row (a deduplication id
//!   sent twice before either is received is enqueued twice either way, and delivered
//!   once: `store::receive`).
//! - A commit that fails fails every write of its group: nobody is told a write is durable
//!   that is not.
//!
//! While the writer commits one group (the fsync), the next group gathers, so the fsyncs
//! per second stay what the disk allows while the writes per fsync grow with the load. No
//! write waits for a timer, except a [`Durability::Deferred`] one that has nothing to share
//! a commit with: it waits, at most [`DEFERRED_AT_MOST`], for a write that has a caller
//! waiting, and commits in that write's group.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fluxrelay_core::ports::QueueError;
use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::clock::Clock;
use super::store::storage;

/// Writes in one group at most, so one group's transaction (and the wait of its first
/// write) stays bounded however deep the backlog of callers.
const MAX_GROUP: usize = 1024;

/// What a write's caller needs of its commit before it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// On the disk (fsynced): the caller tells someone outside the process that it is kept
    /// (a webhook's `202`, an operator's command). Survives a power loss.
    Synced,
    /// Committed, visible and in order, but not yet fsynced: for the queue's own hand-offs
    /// (a receive, route's dispatches, a delete, a retry, the journal). A kill keeps it; a
    /// power loss can roll it back only with every later write, which puts the work back
    /// where it was before (a push routed or a cluster triggered again), never loses it.
    Ordered,
    /// [`Durability::Ordered`], for a write whose caller does not hold anything up by
    /// waiting (dispatch's deletes of delivered messages, with their journal lines): the
    /// writer gives it no commit of its own while it can help it. A group of such writes
    /// only waits, up to [`DEFERRED_AT_MOST`], for the next write of another kind and
    /// commits in its group. A push to 20 clusters settles 20 times within a few
    /// milliseconds, each once its cluster answered; one commit each was half of the
    /// transactions of that push, and the CPU they took was the other clusters' while
    /// their triggers were still on the way (BENCHMARKS.md, "A push's settles in one
    /// commit").
    Deferred,
}

/// The longest a group of [`Durability::Deferred`] writes waits for a write to share its
/// commit with: about the time the apiserver takes to answer a few triggers, so the
/// settles of one push's clusters gather; short against what a delete holds up (the next
/// message of its cluster's group, delivered after the delete commits).
pub(super) const DEFERRED_AT_MOST: Duration = Duration::from_millis(3);

/// Counts since the queue was opened: `writes ÷ commits` is the mean group size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupCommitStats {
    /// Transactions committed.
    pub commits: u64,
    /// Of those, the ones fsynced (a group with a [`Durability::Synced`] write).
    pub synced_commits: u64,
    /// Writes answered after a commit, failed ones included.
    pub writes: u64,
    /// Groups run a second time, each write in a savepoint, because one write failed.
    pub reruns: u64,
}

/// One write: run inside the group's transaction, then answered once the group's commit
/// is known.
trait Job: Send {
    fn durability(&self) -> Durability;
    /// Runs the operation, again if the group's first run was rolled back (the result kept
    /// is the last run's); `true` when it succeeded. A write that panicked is not run again.
    fn run(&mut self, transaction: &Transaction<'_>, now: i64) -> bool;
    /// Answers the caller: the operation's own result once `committed` is `Ok`, else the
    /// operation's error or, if it had succeeded, the group's.
    fn finish(self: Box<Self>, committed: Result<(), QueueError>);
}

struct Pending<T, Operation, Reply> {
    durability: Durability,
    operation: Option<Operation>,
    result: Option<Result<T, QueueError>>,
    reply: Reply,
}

impl<T, Operation, Reply> Job for Pending<T, Operation, Reply>
where
    T: Send,
    Operation: FnMut(&Transaction<'_>, i64) -> Result<T, QueueError> + Send,
    Reply: FnOnce(Result<T, QueueError>) + Send,
{
    fn durability(&self) -> Durability {
        self.durability
    }

    fn run(&mut self, transaction: &Transaction<'_>, now: i64) -> bool {
        self.result = None;
        let Some(operation) = self.operation.as_mut() else {
            return false;
        };
        // A panic in one write must not take the writer (and every later write) with it.
        match catch_unwind(AssertUnwindSafe(|| operation(transaction, now))) {
            Ok(result) => {
                let succeeded = result.is_ok();
                self.result = Some(result);
                succeeded
            }
            Err(_) => {
                self.operation = None;
                false
            }
        }
    }

    fn finish(self: Box<Self>, committed: Result<(), QueueError>) {
        let answer = match (self.result, committed) {
            (Some(Err(error)), _) => Err(error),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (Some(Ok(_)), Err(error)) | (None, Err(error)) => Err(error),
            (None, Ok(())) => Err(QueueError::new(
                "embedded queue: the write was not run (it panicked)",
            )),
        };
        (self.reply)(answer);
    }
}

/// The handle on the writer thread; dropping it lets the thread finish the writes it has
/// and waits for it.
pub(super) struct Writer {
    jobs: Option<Sender<Box<dyn Job>>>,
    thread: Option<JoinHandle<()>>,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    commits: AtomicU64,
    synced_commits: AtomicU64,
    writes: AtomicU64,
    reruns: AtomicU64,
    /// Submitted and not yet taken into a group.
    waiting: AtomicU64,
}

impl Writer {
    /// `deferred_at_most`: [`DEFERRED_AT_MOST`] except in tests.
    pub(super) fn start(
        connection: Arc<Mutex<Connection>>,
        clock: Arc<dyn Clock>,
        deferred_at_most: Duration,
    ) -> Result<Self, QueueError> {
        let (jobs, received) = mpsc::channel();
        let counts = Arc::new(Counts::default());
        let thread = std::thread::Builder::new()
            .name("fluxrelay-queue-writer".into())
            .spawn({
                let counts = counts.clone();
                move || {
                    write_groups(
                        &connection,
                        clock.as_ref(),
                        &received,
                        &counts,
                        deferred_at_most,
                    );
                }
            })
            .map_err(|error| {
                QueueError::new(format!("embedded queue: start the writer thread: {error}"))
            })?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Some(thread),
            counts,
        })
    }

    /// Queue `operation` for the next group; `reply` gets its result once the group's
    /// commit is known, as `durability` asks (on the writer thread: it must only hand the
    /// result on).
    pub(super) fn submit<T, Operation, Reply>(
        &self,
        durability: Durability,
        operation: Operation,
        reply: Reply,
    ) -> Result<(), QueueError>
    where
        T: Send + 'static,
        Operation: FnMut(&Transaction<'_>, i64) -> Result<T, QueueError> + Send + 'static,
        Reply: FnOnce(Result<T, QueueError>) + Send + 'static,
    {
        let job: Box<dyn Job> = Box::new(Pending {
            durability,
            operation: Some(operation),
            result: None,
            reply,
        });
        let stopped = || QueueError::new("embedded queue: the writer thread has stopped");
        self.jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())?;
        self.counts.waiting.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Run `operation` in the next group and wait for its result (a blocking call).
    pub(super) fn write<T>(
        &self,
        durability: Durability,
        operation: impl FnMut(&Transaction<'_>, i64) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError>
    where
        T: Send + 'static,
    {
        let (reply, answer) = mpsc::sync_channel(1);
        self.submit(durability, operation, move |result| {
            // The caller waits on `answer`; if it went away there is no one to tell.
            let _ = reply.send(result);
        })?;
        answer.recv().map_err(|_| {
            QueueError::new("embedded queue: the writer thread stopped before answering")
        })?
    }

    /// Run `operation` in the next group; the future resolves once its group committed.
    pub(super) async fn write_async<T>(
        &self,
        durability: Durability,
        operation: impl FnMut(&Transaction<'_>, i64) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError>
    where
        T: Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.submit(durability, operation, move |result| {
            let _ = reply.send(result);
        })?;
        answer.await.map_err(|_| {
            QueueError::new("embedded queue: the writer thread stopped before answering")
        })?
    }

    pub(super) fn stats(&self) -> GroupCommitStats {
        GroupCommitStats {
            commits: self.counts.commits.load(Ordering::SeqCst),
            synced_commits: self.counts.synced_commits.load(Ordering::SeqCst),
            writes: self.counts.writes.load(Ordering::SeqCst),
            reruns: self.counts.reruns.load(Ordering::SeqCst),
        }
    }

    /// Writes submitted and not yet taken into a group (tests hold the connection to make
    /// one group of a known set of writes).
    #[cfg(test)]
    pub(super) fn waiting(&self) -> u64 {
        self.counts.waiting.load(Ordering::SeqCst)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel ends the thread once it has answered what it holds.
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take()
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

pub(super) fn lock(connection: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while the lock was held dropped its open transaction, which SQLite rolled
    // back; the connection is consistent, so poisoning carries no information here.
    connection.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The writer thread: one group per turn, until every handle is dropped.
fn write_groups(
    connection: &Mutex<Connection>,
    clock: &dyn Clock,
    jobs: &Receiver<Box<dyn Job>>,
    counts: &Counts,
    deferred_at_most: Duration,
) {
    // The connection's `synchronous` setting, changed only between groups that differ;
    // `None` when unknown (a change failed), so the next group sets it again.
    let mut level = Some(Durability::Synced);
    while let Ok(first) = jobs.recv() {
        // The connection first, then whatever else is waiting: writes that arrive while
        // someone else holds the connection join this group.
        let mut held = lock(connection);
        let mut group = vec![first];
        take_waiting(jobs, &mut group);
        if only_deferred(&group) {
            // Nobody waits on these: let the next write that someone waits for carry them.
            drop(held);
            wait_for_company(jobs, &mut group, Instant::now() + deferred_at_most);
            held = lock(connection);
            take_waiting(jobs, &mut group);
        }
        let mut connection = held;
        counts
            .waiting
            .fetch_sub(group.len() as u64, Ordering::SeqCst);
        let size = group.len() as u64;
        let durability = if group
            .iter()
            .any(|job| job.durability() == Durability::Synced)
        {
            Durability::Synced
        } else {
            Durability::Ordered
        };
        if level != Some(durability) {
            match set_synchronous(&connection, durability) {
                Ok(()) => level = Some(durability),
                Err(error) => {
                    // Never answer a synced write from a commit that may not fsync.
                    level = None;
                    counts.writes.fetch_add(size, Ordering::SeqCst);
                    fail_all(group, &format!("set synchronous for the commit: {error}"));
                    continue;
                }
            }
        }
        commit_group(&mut connection, clock, group, |over| {
            if over.committed {
                counts.commits.fetch_add(1, Ordering::SeqCst);
                if durability == Durability::Synced {
                    counts.synced_commits.fetch_add(1, Ordering::SeqCst);
                }
            }
            if over.rerun {
                counts.reruns.fetch_add(1, Ordering::SeqCst);
            }
            counts.writes.fetch_add(size, Ordering::SeqCst);
        });
    }
}

/// Adds the writes already waiting to `group`, up to [`MAX_GROUP`].
fn take_waiting(jobs: &Receiver<Box<dyn Job>>, group: &mut Vec<Box<dyn Job>>) {
    while group.len() < MAX_GROUP {
        match jobs.try_recv() {
            Ok(job) => group.push(job),
            Err(_) => break,
        }
    }
}

fn only_deferred(group: &[Box<dyn Job>]) -> bool {
    group
        .iter()
        .all(|job| job.durability() == Durability::Deferred)
}

/// Adds writes to a group of [`Durability::Deferred`] ones as they come, until one of
/// another kind came (it is taken too), `deadline` passed, the group is full, or the
/// queue is closing.
fn wait_for_company(
    jobs: &Receiver<Box<dyn Job>>,
    group: &mut Vec<Box<dyn Job>>,
    deadline: Instant,
) {
    while group.len() < MAX_GROUP {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        match jobs.recv_timeout(left) {
            Ok(job) => {
                let company = job.durability() != Durability::Deferred;
                group.push(job);
                if company {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// `FULL` fsyncs the WAL at each commit; `NORMAL` (WAL mode) leaves it to the next `FULL`
/// commit or checkpoint. Set outside a transaction.
fn set_synchronous(connection: &Connection, durability: Durability) -> Result<(), rusqlite::Error> {
    let level = match durability {
        Durability::Synced => "FULL",
        Durability::Ordered | Durability::Deferred => "NORMAL",
    };
    connection.pragma_update(None, "synchronous", level)
}

/// How a group ended, for the counts.
struct GroupOver {
    committed: bool,
    /// Run a second time, write by write in savepoints, after one write failed.
    rerun: bool,
}

/// One transaction for the group: first without savepoints, and if a write fails, rolled
/// back and run again with a savepoint per write. `counted` runs once the group is over,
/// committed or not, before anyone is answered (a caller reads the counts after its
/// answer). Every write is answered before this returns.
fn commit_group(
    connection: &mut Connection,
    clock: &dyn Clock,
    mut group: Vec<Box<dyn Job>>,
    counted: impl FnOnce(GroupOver),
) {
    let now = clock.now_millis();
    let together = match run_together(connection, &mut group, now) {
        Ok(together) => together,
        Err(problem) => {
            counted(GroupOver {
                committed: false,
                rerun: false,
            });
            fail_all(group, &problem);
            return;
        }
    };
    let rerun = match together {
        Together::Committed => {
            counted(GroupOver {
                committed: true,
                rerun: false,
            });
            for job in group {
                job.finish(Ok(()));
            }
            return;
        }
        Together::AWriteFailed => true,
    };
    let committed = run_in_savepoints(connection, &mut group, now);
    counted(GroupOver {
        committed: committed.is_ok(),
        rerun,
    });
    match committed {
        Ok(()) => {
            for job in group {
                job.finish(Ok(()));
            }
        }
        Err(problem) => fail_all(group, &problem),
    }
}

enum Together {
    Committed,
    /// A write failed: the transaction was rolled back, nothing of the group is stored.
    AWriteFailed,
}

/// The group's writes one after another in one transaction, no savepoints, committed if
/// every write succeeded. `Err`: the transaction could not begin or commit, and nothing of
/// the group is stored.
fn run_together(
    connection: &mut Connection,
    group: &mut [Box<dyn Job>],
    now: i64,
) -> Result<Together, String> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|error| format!("begin transaction: {error}"))?;
    for job in group.iter_mut() {
        if !job.run(&transaction, now) {
            // Dropping the transaction rolls back what the group wrote.
            return Ok(Together::AWriteFailed);
        }
    }
    // A failed commit drops, and so rolls back, the transaction.
    transaction
        .commit()
        .map_err(|error| format!("commit: {error}"))?;
    Ok(Together::Committed)
}

/// The group's writes in one transaction, each in a savepoint: a write that fails rolls
/// back its own savepoint and nothing else. `Err`: nothing of the group is stored.
fn run_in_savepoints(
    connection: &mut Connection,
    group: &mut [Box<dyn Job>],
    now: i64,
) -> Result<(), String> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|error| format!("begin transaction: {error}"))?;
    for job in group.iter_mut() {
        run_cached(&transaction, "SAVEPOINT write")
            .map_err(|error| format!("begin a write's savepoint: {error}"))?;
        let ended = if job.run(&transaction, now) {
            run_cached(&transaction, "RELEASE write")
        } else {
            transaction.execute_batch("ROLLBACK TO write; RELEASE write")
        };
        // SQLite may have rolled the whole transaction back (an I/O error, a full disk);
        // returning drops, and so rolls back, the transaction.
        ended.map_err(|error| format!("end a write's savepoint: {error}"))?;
    }
    transaction
        .commit()
        .map_err(|error| format!("commit: {error}"))
}

/// Run `part` of a write inside a savepoint of its own, so that its failure rolls back
/// only what it wrote: `Ok(Err)` is the part's failure, the rest of the write standing.
/// `Err` means the savepoint itself could not be ended, and the whole write must fail.
pub(super) fn apart<T>(
    transaction: &Transaction<'_>,
    part: impl FnOnce(&Transaction<'_>) -> Result<T, QueueError>,
) -> Result<Result<T, QueueError>, QueueError> {
    run_cached(transaction, "SAVEPOINT part").map_err(storage("begin a part's savepoint"))?;
    let result = part(transaction);
    let ended = match &result {
        Ok(_) => run_cached(transaction, "RELEASE part"),
        Err(_) => transaction.execute_batch("ROLLBACK TO part; RELEASE part"),
    };
    ended.map_err(storage("end a part's savepoint"))?;
    Ok(result)
}

/// A statement without parameters, prepared once per connection: a write's savepoint is
/// opened and released for every write, and preparing SQL anew (these and the statements
/// that were not cached) was a tenth of serve's CPU at 20 clusters (perf, BENCHMARKS.md
/// "The writer's statements").
fn run_cached(connection: &Connection, sql: &str) -> Result<(), rusqlite::Error> {
    connection
        .prepare_cached(sql)
        .and_then(|mut statement| statement.execute([]))
        .map(drop)
}

fn fail_all(jobs: impl IntoIterator<Item = Box<dyn Job>>, problem: &str) {
    for job in jobs {
        job.finish(Err(QueueError::new(format!(
            "embedded queue: {problem}; nothing of this write was stored"
        ))));
    }
}
