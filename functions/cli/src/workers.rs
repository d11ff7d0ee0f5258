//! The route and dispatch handlers as in-process workers polling the embedded queue: the
//! same handlers as the Lambda functions, settled the way SQS settles them (delete, a
//! visibility backoff, or the dead-letter table with a reason).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fluxrelay_adapters::clock::RunClock;
use fluxrelay_adapters::cluster::KubeClusters;
use fluxrelay_adapters::embedded::{
    DISPATCH_QUEUE, DISPATCH_RETRY_QUEUE, EmbeddedQueue, EmbeddedSettle, HeldSettled, INTAKE_QUEUE,
    JournalEntry, Received,
};
use fluxrelay_adapters::file_registry::FileRegistry;
use fluxrelay_adapters::gitlab::GitLabClient;
use fluxrelay_adapters::outcome_log;
use fluxrelay_core::handlers::confirm::{ConfirmMemory, ConfirmRules};
use fluxrelay_core::handlers::dispatch::{
    DispatchMemory, DispatchPorts, DispatchReport, DispatchRules, answer, handle_dispatch, one_call,
};
use fluxrelay_core::handlers::route::{
    PathsSource, RouteReport, RouteVerdict, route_and_settle_with,
};
use fluxrelay_core::outcome::settle::Settled;
use fluxrelay_core::outcome::verdict::Verdict;
use fluxrelay_core::ports::{QueueError, QueueMessage};
use fluxrelay_core::push::{Dispatch, PushEvent};
use fluxrelay_core::registry::is_valid_cluster_name;
use futures_util::FutureExt as _;
use time::OffsetDateTime;
use tokio::sync::{Notify, Semaphore, watch};

use crate::metrics::Metrics;

/// SQS hands a Lambda at most 10 messages; the embedded queue has no such limit, and a
/// bigger batch costs fewer transactions and lets dispatch coalesce a whole backlog of one
/// cluster's pushes into one call per Receiver (the handlers take batches of any size).
const INTAKE_BATCH: usize = 100;
const DISPATCH_BATCH: usize = 1000;
/// Longer than one route of a batch takes (it only reads the registry and enqueues).
const INTAKE_VISIBILITY: Duration = Duration::from_secs(60);
/// Longer than a dispatch batch can take: each cluster of it is bounded by
/// [`CLUSTER_BUDGET`], then settled.
const DISPATCH_VISIBILITY: Duration = Duration::from_secs(180);
/// How long one cluster of a batch may take before what it has not finished is retried
/// (a hung apiserver): well inside the visibility timeout, so nothing is delivered twice
/// for being slow.
pub const CLUSTER_BUDGET: Duration = Duration::from_secs(60);
/// How often an idle worker looks for messages whose retry delay has passed; new
/// messages wake it at once.
pub const IDLE_POLL: Duration = Duration::from_millis(500);
/// How long route leaves the queue's writer to webhooks after a full batch taken while
/// webhooks were being acknowledged (see [`route_pause`]).
const ROUTE_PAUSE_UNDER_INGEST: Duration = Duration::from_millis(100);
/// The oldest push route holds back for webhooks: past it, route runs at full speed
/// however many webhooks arrive (see [`route_pause`]).
const ROUTE_HOLD_AT_MOST: Duration = Duration::from_secs(5);

pub struct Workers {
    pub queue: EmbeddedQueue,
    pub registry: FileRegistry,
    pub clusters: KubeClusters,
    pub rules: DispatchRules,
    pub memory: DispatchMemory,
    pub metrics: Arc<Metrics>,
    pub route_wake: Arc<Notify>,
    pub dispatch_wake: Arc<Notify>,
    /// Dispatch batches handled at once: a cluster that hangs holds one, never the others.
    pub dispatch_slots: Arc<Semaphore>,
    /// GitLab's API per instance (statuses, compare); no instance: nothing is posted.
    pub gitlab: GitLabClient,
    pub confirm_rules: ConfirmRules,
    pub confirm_memory: ConfirmMemory,
    pub confirm_wake: Arc<Notify>,
}

impl Workers {
    pub(crate) fn settle(&self, wake: &Arc<Notify>) -> EmbeddedSettle {
        EmbeddedSettle::new(self.queue.clone()).notifying(wake.clone())
    }

    /// Route one batch: how many messages it received, and how long the oldest of them
    /// had waited.
    pub async fn route_once(&self) -> Result<RouteBatch, QueueError> {
        let received = self
            .queue
            .receive_async(INTAKE_QUEUE, INTAKE_BATCH, INTAKE_VISIBILITY)
            .await?;
        let batch = RouteBatch {
            received: received.len(),
            oldest_waited: received
                .iter()
                .map(|message| self.queue.waited(message))
                .max()
                .unwrap_or_default(),
        };
        if received.is_empty() {
            return Ok(batch);
        }
        let messages = queue_messages(INTAKE_QUEUE, &received);
        // The intake messages are deleted after routing, in one write with the journal
        // lines that say where each push went.
        let settle = self.settle(&self.route_wake).holding_acknowledgements();
        let mut report = route_and_settle_with(
            &self.registry,
            &self.queue,
            &settle,
            &self.rules.policy,
            &self.gitlab,
            &messages,
        )
        .await;
        // The dispatches are committed and the intake's deletes only held: dispatch may
        // take them now, its receive sharing a commit with the delete below rather than
        // waiting behind it (a crash between them routes the push again: a duplicate
        // trigger at worst).
        self.dispatch_wake.notify_one();
        let entries = route_journal(&report);
        let settlements = report.messages.iter_mut().filter_map(|message| {
            let id = message.message_id.as_str();
            message.settled.as_mut().map(|settled| (id, settled))
        });
        delete_held_and_record(&settle, entries, settlements).await;
        outcome_log::route(&report);
        for message in &report.messages {
            match &message.paths {
                // serve's route compares itself: nothing is deferred to dispatch here.
                PathsSource::Payload | PathsSource::DeferredToDispatch => {}
                PathsSource::Compare => self.metrics.confirm.record_compare("200"),
                PathsSource::CompareFailed { .. } => self.metrics.confirm.record_compare("failed"),
            }
        }
        Ok(batch)
    }

    /// The journal is for explaining, not for delivery: failing to write it is logged
    /// and the work goes on.
    pub(crate) async fn journal(&self, entries: Vec<JournalEntry>) {
        if let Err(error) = self.queue.record_async(entries).await {
            tracing::warn!(outcome = "journal_failed", error = %error);
        }
    }

    /// Receive one dispatch batch (the dispatch queue's visible groups, and the retries
    /// that are due); empty when there is nothing to do.
    async fn receive_dispatch(&self) -> Result<Vec<QueueMessage>, QueueError> {
        let fifo = self
            .queue
            .receive_async(DISPATCH_QUEUE, DISPATCH_BATCH, DISPATCH_VISIBILITY)
            .await?;
        let room = DISPATCH_BATCH.saturating_sub(fifo.len()).max(1);
        let retries = self
            .queue
            .receive_async(DISPATCH_RETRY_QUEUE, room, DISPATCH_VISIBILITY)
            .await?;
        let mut messages = queue_messages(DISPATCH_QUEUE, &fifo);
        messages.extend(queue_messages(DISPATCH_RETRY_QUEUE, &retries));
        Ok(messages)
    }

    /// Dispatch one batch (one cluster's share): its follow-ups are sent inside the
    /// handler, and its messages are deleted after it, in one write with the journal lines
    /// that explain them (a delete and a journal write each were 20 of the 46 writes per
    /// push to 20 clusters). That write is deferred: it commits with the next write
    /// someone waits for, so the settles of a push's clusters share commits.
    pub async fn dispatch_batch(&self, messages: Vec<QueueMessage>) {
        let settle = self
            .settle(&self.dispatch_wake)
            .notifying_confirmations(self.confirm_wake.clone())
            .holding_acknowledgements()
            .deferring_held();
        let ports = DispatchPorts {
            registry: &self.registry,
            clusters: &self.clusters,
            queue: &settle,
            // The clock serve's ingest stamps its pushes with: a delivery covers exactly
            // the pushes accepted before it (`outcome::supersede`).
            clock: &RunClock,
            // serve's route compares itself: no dispatch is marked verify_paths here.
            gitlab: &fluxrelay_core::ports::NoGitLab,
        };
        let mut report = handle_dispatch(
            &ports,
            &self.rules,
            &self.memory,
            &messages,
            OffsetDateTime::now_utc(),
        )
        .await;
        let entries = dispatch_journal(&report);
        let settlements = report
            .messages
            .iter_mut()
            .map(|message| (message.message_id.as_str(), &mut message.settled));
        delete_held_and_record(&settle, entries, settlements).await;
        outcome_log::dispatch(&report);
        self.metrics.record_dispatch(&report);
    }
}

/// Carry out the acknowledgements `settle` held, in one write with `entries`, then make
/// each settlement whose delete failed say so (for the log lines and metrics after it).
/// The journal is for explaining, not for delivery: failing to write it is logged.
async fn delete_held_and_record<'a>(
    settle: &EmbeddedSettle,
    entries: Vec<JournalEntry>,
    settlements: impl Iterator<Item = (&'a str, &'a mut Settled)>,
) {
    let (mut failed, all_failed) = match settle.delete_held_and_record(entries).await {
        Ok(HeldSettled { failed, recorded }) => {
            if let Err(error) = recorded {
                tracing::warn!(outcome = "journal_failed", error = %error);
            }
            (failed, None)
        }
        Err(error) => {
            tracing::warn!(outcome = "journal_failed", error = %error);
            (Vec::new(), Some(error.to_string()))
        }
    };
    for (id, settled) in settlements {
        let error = match failed.iter().position(|(failed_id, _)| failed_id == id) {
            Some(at) => Some(failed.swap_remove(at).1.to_string()),
            None => all_failed.clone(),
        };
        if let Some(error) = error {
            settled.acknowledgement_failed(error);
        }
    }
}

pub(crate) fn queue_messages(queue: &str, received: &[Received]) -> Vec<QueueMessage> {
    received
        .iter()
        .map(|message| QueueMessage {
            id: message.receipt.to_string(),
            source: queue.to_string(),
            receipt: message.receipt.to_string(),
            group: message.group_id.clone(),
            body: message.body.clone(),
            receive_count: message.receive_count,
        })
        .collect()
}

/// One entry per push: what was accepted and the clusters it was queued for, which
/// `explain` reads back ([`routed_clusters`]) to tell "queued, not dispatched yet" from
/// "never routed there". (A `queued` row per cluster said the same again: 20 of a
/// 20-cluster push's 41 rows, and half of what the writer spent appending them.)
fn route_journal(report: &RouteReport) -> Vec<JournalEntry> {
    let mut entries = Vec::new();
    for message in &report.messages {
        let Some(push) = &message.push else { continue };
        let what = match push.event {
            PushEvent::ArtifactPush => format!(
                "accepted {}: artifact {}:{} ({})",
                push.received_at, push.project.web_url, push.git_ref, push.after
            ),
            PushEvent::Pipeline => format!(
                "accepted {}: successful pipeline of {} {} at {}",
                push.received_at,
                push.project.path,
                push.git_ref,
                short(&push.after)
            ),
            PushEvent::Push | PushEvent::TagPush => format!(
                "accepted {}: {} {} {}..{}",
                push.received_at,
                push.project.path,
                push.git_ref,
                short(&push.before),
                short(&push.after)
            ),
        };
        match &message.verdict {
            RouteVerdict::Routed { clusters } => {
                let detail = if clusters.is_empty() {
                    format!("{what}; no cluster subscribes")
                } else {
                    format!("{what}{ROUTED_TO}{}", clusters.join(CLUSTER_SEPARATOR))
                };
                entries.push(JournalEntry::new(&push.key, None, "routed", detail));
            }
            RouteVerdict::Failed { reason } => {
                entries.push(JournalEntry::new(
                    &push.key,
                    None,
                    "route_failed",
                    format!("{what}; {reason}"),
                ));
            }
            // Only an EventBridge event that is no push is ignored, and it carries none.
            RouteVerdict::Ignored { .. } => {}
        }
    }
    entries
}

/// What ends a `routed` row that queued the push for clusters, before their names. The
/// text before it may hold it too (a ref may contain `; `), so it is read from the end.
const ROUTED_TO: &str = "; routed to ";
/// Between two cluster names, which hold none of `,` and ` ` (`registry::is_valid_cluster_name`).
const CLUSTER_SEPARATOR: &str = ", ";

/// The clusters a `routed` row's detail says the push was queued for (none when no
/// cluster subscribes). Only cluster names may follow the last `; routed to `: when
/// anything else does, the words were the ref's and no cluster subscribed.
pub(crate) fn routed_clusters(detail: &str) -> Vec<&str> {
    let Some((_, tail)) = detail.rsplit_once(ROUTED_TO) else {
        return Vec::new();
    };
    let clusters: Vec<&str> = tail.split(CLUSTER_SEPARATOR).collect();
    if clusters
        .iter()
        .all(|cluster| is_valid_cluster_name(cluster))
    {
        clusters
    } else {
        Vec::new()
    }
}

fn short(sha: &str) -> &str {
    sha.get(..8).unwrap_or(sha)
}

/// One line per verdict, and one per call whose answer no verdict line carries
/// (`AnsweredCalls`, as in the log): a push delivered to a cluster is one `delivered` line
/// naming each target with its answer (a `triggered` line of its own would repeat the
/// target, and was a third of a 20-cluster push's journal rows). A call for a push that is
/// retried or dead-lettered, or one that failed, keeps its own `triggered` /
/// `trigger_failed` line before the verdict.
fn dispatch_journal(report: &DispatchReport) -> Vec<JournalEntry> {
    let calls = report.answered_calls();
    let mut entries = Vec::new();
    for target in &report.targets {
        for key in &target.push_keys {
            let (stage, detail) = match &target.result {
                Ok(()) if calls.told(key, &target.cluster, &target.target) => continue,
                Ok(()) => ("triggered", answer(&target.target, target.push_keys.len())),
                Err(failure) => (
                    "trigger_failed",
                    one_call(
                        format!("{}: {}", target.target, failure.reason),
                        target.push_keys.len(),
                    ),
                ),
            };
            entries.push(JournalEntry::new(key, Some(&target.cluster), stage, detail));
        }
    }
    for message in &report.messages {
        let Some(dispatch) = &message.dispatch else {
            continue;
        };
        let key = &dispatch.push.key;
        let cluster = Some(dispatch.cluster.as_str());
        for skip in &message.skipped {
            let detail = format!("{}: {}", skip.object, skip.reason);
            entries.push(JournalEntry::new(key, cluster, "skipped", detail));
        }
        let targets = |only: &Option<Vec<String>>| match only {
            Some(only) => format!(" ({})", only.join(", ")),
            None => String::new(),
        };
        let mut add = |stage: &str, detail: String| {
            entries.push(JournalEntry::new(key, cluster, stage, detail));
        };
        match &message.verdict {
            Verdict::Delivered { targets } => {
                add("delivered", calls.delivered_targets(message, targets))
            }
            Verdict::Superseded { by } => add(
                "superseded",
                format!("delivered by supersession: covered by {by}"),
            ),
            Verdict::NothingToTrigger => add(
                "nothing_to_trigger",
                match dispatch.push.event {
                    PushEvent::ArtifactPush => {
                        "no Flux object in the cluster follows this repository and tag"
                    }
                    PushEvent::Pipeline => {
                        "no artifact source in the cluster lies under this project"
                    }
                    PushEvent::Push | PushEvent::TagPush => {
                        "no GitRepository in the cluster tracks this project and ref"
                    }
                }
                .to_string(),
            ),
            Verdict::Retry(retry) => add(
                "retry",
                format!(
                    "again in {} s{}: {}",
                    retry.delay_secs,
                    targets(&retry.only),
                    retry.reason
                ),
            ),
            Verdict::DeadLetter(dead) => add("dead_lettered", dead_detail(dead, &targets)),
            Verdict::RetryAndDeadLetter(retry, dead) => {
                add(
                    "retry",
                    format!(
                        "again in {} s{}: {}",
                        retry.delay_secs,
                        targets(&retry.only),
                        retry.reason
                    ),
                );
                add("dead_lettered", dead_detail(dead, &targets));
            }
        }
    }
    entries
}

fn dead_detail(
    dead: &fluxrelay_core::outcome::verdict::DeadLetterPlan,
    targets: &dyn Fn(&Option<Vec<String>>) -> String,
) -> String {
    match dead.status {
        Some(status) => format!("{}{} (status {status})", dead.reason, targets(&dead.only)),
        None => format!("{}{}", dead.reason, targets(&dead.only)),
    }
}

/// Route until `stop` turns true; the batch in hand is finished first, and whatever is
/// left stays queued for the next start.
pub async fn run_route(workers: Arc<Workers>, stop: watch::Receiver<bool>) {
    poll_until_stopped("route", &workers.route_wake, stop, || async {
        let acknowledged = workers.queue.group_commit_stats().synced_commits;
        let batch = workers.route_once().await?;
        let webhooks_meanwhile = workers.queue.group_commit_stats().synced_commits > acknowledged;
        if let Some(pause) = route_pause(&batch, webhooks_meanwhile) {
            // Short enough that a stop waits for it rather than interrupting it.
            tokio::time::sleep(pause).await;
        }
        Ok(batch.received)
    })
    .await;
}

/// What one route batch took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteBatch {
    /// Messages received (and routed, failed or ignored).
    pub received: usize,
    /// How long the oldest of them had waited since it was enqueued.
    pub oldest_waited: Duration,
}

/// A burst comes first: while webhooks are being acknowledged (a synced commit during
/// route's batch) and route is behind (its batch was full, so more is waiting), route
/// pauses before the next batch, and the writer and the two cores go to the `202`s; a
/// push routed a little later is delivered, and the backlog's pushes to one cluster
/// coalesce into one call. Only while the pushes held back are young: once the oldest has
/// waited [`ROUTE_HOLD_AT_MOST`], route runs at full speed, so a steady load that route
/// can keep up with is never left to grow a backlog behind the pauses (a batch per pause
/// would cap route near 1,000 pushes a second). A single push, or a backlog with no
/// webhook arriving, is routed at once.
fn route_pause(batch: &RouteBatch, webhooks_meanwhile: bool) -> Option<Duration> {
    (batch.received >= INTAKE_BATCH
        && webhooks_meanwhile
        && batch.oldest_waited < ROUTE_HOLD_AT_MOST)
        .then_some(ROUTE_PAUSE_UNDER_INGEST)
}

/// Run `once` (one batch: how many messages it handled) until `stop` turns true: at once
/// again after a batch, after `IDLE_POLL` (or a wake-up) when the queue was empty, and
/// backing off while the queue itself fails or a batch panics. A panic is a bug (no input
/// may cause one); it ends that batch, not the stage: the batch's messages stay leased and
/// are received again when their lease runs out, and the next batch runs.
pub(crate) async fn poll_until_stopped<F, Fut>(
    stage: &'static str,
    wake: &tokio::sync::Notify,
    mut stop: watch::Receiver<bool>,
    mut once: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<usize, QueueError>>,
{
    let mut failures: u32 = 0;
    while !*stop.borrow() {
        let pause = match guarded(once()).await {
            Ok(0) => IDLE_POLL,
            Ok(_) => {
                failures = 0;
                continue;
            }
            Err(failure) => back_off(stage, &mut failures, failure),
        };
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Why a step of a stage's loop did not come to a result.
enum StepFailure {
    Queue(QueueError),
    /// A bug: no input may cause one.
    Panicked,
}

/// `step`, with a panic caught as [`StepFailure::Panicked`]. What a panicking step left
/// behind is the queue's (transactions, leases) and mutexes that are read through
/// poisoning, so the stage going on is sound: the step's messages stay leased and are
/// received again when their lease runs out.
async fn guarded<T>(
    step: impl std::future::Future<Output = Result<T, QueueError>>,
) -> Result<T, StepFailure> {
    match AssertUnwindSafe(step).catch_unwind().await {
        Ok(result) => result.map_err(StepFailure::Queue),
        Err(_) => Err(StepFailure::Panicked),
    }
}

/// Logs `failure` and counts it; the pause before the stage tries again, longer the more
/// failures in a row.
fn back_off(stage: &'static str, failures: &mut u32, failure: StepFailure) -> Duration {
    *failures = failures.saturating_add(1);
    match failure {
        StepFailure::Queue(error) => {
            tracing::error!(outcome = "queue_unavailable", stage, error = %error);
        }
        StepFailure::Panicked => tracing::error!(
            outcome = "batch_panicked",
            stage,
            "a batch panicked (a bug); its messages are received again after their lease"
        ),
    }
    IDLE_POLL * (*failures).min(20)
}

pub async fn run_dispatch(workers: Arc<Workers>, mut stop: watch::Receiver<bool>) {
    let busy: BusyClusters = Arc::default();
    let mut failures: u32 = 0;
    let mut running = tokio::task::JoinSet::new();
    while !*stop.borrow() {
        let permit = tokio::select! {
            permit = workers.dispatch_slots.clone().acquire_owned() => permit,
            _ = stop.changed() => continue,
        };
        let Ok(permit) = permit else { break };
        while running.try_join_next().is_some() {}
        // A receive that panics (a bug) backs off like one that fails, rather than
        // ending dispatch while serve goes on accepting pushes.
        let pause = match guarded(workers.receive_dispatch()).await {
            Ok(messages) if messages.is_empty() => IDLE_POLL,
            Ok(messages) => {
                failures = 0;
                let mut permit = Some(permit);
                for (cluster, share) in by_cluster(messages) {
                    {
                        let mut busy = lock(&busy);
                        if let Some(backlog) = busy.get_mut(&cluster) {
                            backlog.extend(share);
                            continue;
                        }
                        busy.insert(cluster.clone(), Vec::new());
                    }
                    let slot = match permit.take() {
                        Some(slot) => slot,
                        None => match workers.dispatch_slots.clone().acquire_owned().await {
                            Ok(slot) => slot,
                            Err(_) => break,
                        },
                    };
                    let batch = workers.clone();
                    let mut marked = BusyCluster {
                        busy: busy.clone(),
                        cluster,
                        released: false,
                    };
                    running.spawn(async move {
                        let mut share = share;
                        loop {
                            batch.dispatch_batch(share).await;
                            match marked.next_share() {
                                Some(backlog) => share = backlog,
                                None => break,
                            }
                        }
                        // No wake here: the settle woke dispatch if the cluster's
                        // group still holds messages (`EmbeddedSettle`), and a look after
                        // each of a push's clusters found nothing.
                        drop(slot);
                    });
                }
                continue;
            }
            Err(failure) => back_off("dispatch", &mut failures, failure),
        };
        drop(permit);
        tokio::select! {
            _ = workers.dispatch_wake.notified() => {}
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => {}
        }
    }
    while running.join_next().await.is_some() {}
}

/// A batch's messages by cluster, in queue order within each (an unreadable body is a
/// share of its own: dispatch dead-letters it).
fn by_cluster(messages: Vec<QueueMessage>) -> Vec<(String, Vec<QueueMessage>)> {
    let mut shares: Vec<(String, Vec<QueueMessage>)> = Vec::new();
    for message in messages {
        let cluster = Dispatch::from_json(&message.body)
            .map(|dispatch| dispatch.cluster)
            .unwrap_or_else(|_| format!("\u{0}unreadable:{}", message.id));
        match shares.iter_mut().find(|(name, _)| *name == cluster) {
            Some((_, share)) => share.push(message),
            None => shares.push((cluster, vec![message])),
        }
    }
    shares
}

/// Clusters being dispatched to, each with the messages that arrived for it meanwhile.
type BusyClusters = Arc<Mutex<HashMap<String, Vec<QueueMessage>>>>;

/// One cluster marked busy while a task dispatches to it, unmarked when the task ends
/// however it ends. A task that panicked (a bug) would otherwise leave its cluster marked,
/// and every later message for it would wait in a backlog nobody reads until serve
/// restarts; unmarked, the cluster's leased messages are received again when their lease
/// runs out, and dispatched.
struct BusyCluster {
    busy: BusyClusters,
    cluster: String,
    /// Unmarked by [`BusyCluster::next_share`]: the mark may already be another task's.
    released: bool,
}

impl BusyCluster {
    /// The messages that arrived for the cluster meanwhile; none, and the cluster
    /// unmarked, when nothing did.
    fn next_share(&mut self) -> Option<Vec<QueueMessage>> {
        let mut waiting = lock(&self.busy);
        match waiting.get_mut(&self.cluster).map(std::mem::take) {
            Some(backlog) if !backlog.is_empty() => Some(backlog),
            _ => {
                waiting.remove(&self.cluster);
                self.released = true;
                None
            }
        }
    }
}

impl Drop for BusyCluster {
    fn drop(&mut self) {
        if !self.released {
            lock(&self.busy).remove(&self.cluster);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
#[path = "workers_journal_test.rs"]
mod journal_test;

#[cfg(test)]
mod poll_test {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_batch_that_panics_ends_itself_and_the_next_batch_runs() {
        let calls = AtomicUsize::new(0);
        let (stop_tx, stop) = watch::channel(false);
        let wake = tokio::sync::Notify::new();
        poll_until_stopped("test", &wake, stop, || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 => {
                    // Ends the back-off's wait at once (a stored wake-up).
                    wake.notify_one();
                    panic!("a bug in the first batch")
                }
                // The stage goes on after the panic; the third batch stops the test.
                1 => Ok(1),
                _ => {
                    stop_tx.send(true).unwrap();
                    Ok(0)
                }
            }
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    /// Dispatch's receive goes through the same guard as route's and confirm's batches.
    #[tokio::test]
    async fn a_step_that_panics_or_fails_is_a_failure_to_back_off_from() {
        let panicked = guarded(async {
            if a_bug_here() {
                panic!("a bug in a receive");
            }
            Ok::<usize, QueueError>(1)
        })
        .await;
        assert!(matches!(panicked, Err(StepFailure::Panicked)));
        let failed = guarded(async { Err::<usize, _>(QueueError::new("closed")) }).await;
        assert!(matches!(failed, Err(StepFailure::Queue(_))));
        assert!(matches!(
            guarded(async { Ok::<_, QueueError>(2) }).await,
            Ok(2)
        ));

        let mut failures = 0;
        let first = back_off("test", &mut failures, StepFailure::Panicked);
        let second = back_off("test", &mut failures, StepFailure::Panicked);
        assert_eq!((failures, first, second), (2, IDLE_POLL, IDLE_POLL * 2));
    }

    fn a_bug_here() -> bool {
        true
    }
}

#[cfg(test)]
mod busy_cluster_test {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    fn marked(busy: &BusyClusters, cluster: &str) -> BusyCluster {
        lock(busy).insert(cluster.to_string(), Vec::new());
        BusyCluster {
            busy: busy.clone(),
            cluster: cluster.to_string(),
            released: false,
        }
    }

    #[tokio::test]
    async fn a_dispatch_task_that_panics_unmarks_its_cluster() {
        let busy = BusyClusters::default();
        let mark = marked(&busy, "c1");
        let task = tokio::spawn(async move {
            let _mark = mark;
            panic!("a bug in one cluster's dispatch");
        });
        assert!(task.await.unwrap_err().is_panic());
        // Later messages for c1 start a task of their own instead of waiting behind it.
        assert!(lock(&busy).is_empty());
    }

    #[test]
    fn a_finished_task_leaves_the_next_tasks_mark_alone() {
        let busy = BusyClusters::default();
        let mut first = marked(&busy, "c1");
        assert!(first.next_share().is_none());
        assert!(lock(&busy).is_empty());
        // Another receive marks c1 for a new task before the first is dropped.
        let second = marked(&busy, "c1");
        drop(first);
        assert!(lock(&busy).contains_key("c1"));
        drop(second);
        assert!(lock(&busy).is_empty());
    }
}

#[cfg(test)]
mod route_pause_test {
    use std::time::Duration;

    use super::{
        INTAKE_BATCH, ROUTE_HOLD_AT_MOST, ROUTE_PAUSE_UNDER_INGEST, RouteBatch, route_pause,
    };

    #[test]
    fn route_pauses_only_when_behind_on_young_pushes_while_webhooks_are_acknowledged() {
        let young = Duration::from_millis(300);
        let almost = ROUTE_HOLD_AT_MOST - Duration::from_millis(1);
        let cases = [
            // (received, oldest waited, webhooks committed during the batch, pause)
            (INTAKE_BATCH, young, true, Some(ROUTE_PAUSE_UNDER_INGEST)),
            (
                INTAKE_BATCH + 1,
                young,
                true,
                Some(ROUTE_PAUSE_UNDER_INGEST),
            ),
            (INTAKE_BATCH, almost, true, Some(ROUTE_PAUSE_UNDER_INGEST)),
            // Not behind: whatever was waiting fitted in the batch.
            (INTAKE_BATCH - 1, young, true, None),
            (1, Duration::ZERO, true, None),
            (0, Duration::ZERO, true, None),
            // Behind, but no webhook to make room for: a backlog drains at full speed.
            (INTAKE_BATCH, young, false, None),
            (0, Duration::ZERO, false, None),
            // Held back long enough: a steady load route can keep up with is kept up with.
            (INTAKE_BATCH, ROUTE_HOLD_AT_MOST, true, None),
            (INTAKE_BATCH, Duration::from_secs(60), true, None),
        ];
        for (received, oldest_waited, webhooks_meanwhile, pause) in cases {
            let batch = RouteBatch {
                received,
                oldest_waited,
            };
            assert_eq!(
                route_pause(&batch, webhooks_meanwhile),
                pause,
                "{batch:?}, webhooks meanwhile {webhooks_meanwhile}"
            );
        }
    }
}
