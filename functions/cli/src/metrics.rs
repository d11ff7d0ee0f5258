//! `GET /metrics`: what `fluxrelay serve` received, queued, delivered, retried and
//! dead-lettered, per cluster, with queue depths read at scrape time and the journal's size
//! measured at most once a minute.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use fluxrelay_adapters::embedded::{
    CONFIRM_QUEUE, DISPATCH_QUEUE, DISPATCH_RETRY_QUEUE, EmbeddedQueue, INTAKE_QUEUE,
};
use fluxrelay_core::handlers::dispatch::DispatchReport;
use fluxrelay_core::ingest::{Accepted, IngestError};
use fluxrelay_core::outcome::verdict::Verdict;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::metrics_confirm::ConfirmMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterOutcome {
    cluster: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueState {
    queue: String,
    state: String,
}

/// Webhook answer to trigger answer, in seconds: fractions of a second on a healthy
/// cluster, minutes while a cluster is down and the backoff grows.
const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 900.0,
];

/// How old a scrape's journal size may be. Measuring it reads every page of the journal
/// (`dbstat`, up to its 64 MiB cap) through the read connection that route's and dispatch's
/// looks for work share: a scrape every 250 ms took 6 % of serve's CPU under the throughput
/// load, and each one held those looks back while it read (BENCHMARKS.md, "Statement
/// journals in memory; a scrape's journal measurement"). The cap is enforced by the writer
/// whatever this gauge says.
const JOURNAL_GAUGE_MAX_AGE: Duration = Duration::from_secs(60);

pub struct Metrics {
    registry: Registry,
    received: Counter,
    ignored: Counter,
    rejected: Family<ReasonLabel, Counter>,
    accepted: Counter,
    dispatches: Family<ClusterOutcome, Counter>,
    triggers: Family<ClusterOutcome, Counter>,
    queue_messages: Family<QueueState, Gauge>,
    journal_rows: Gauge,
    journal_bytes: Gauge,
    /// When the journal gauges were last measured.
    journal_measured_at: Mutex<Option<Instant>>,
    journal_cap_measurements: Gauge,
    queue_commits: Gauge,
    queue_synced_commits: Gauge,
    queue_writes: Gauge,
    trigger_latency: Histogram,
    /// Confirmation figures (`metrics_confirm.rs`).
    pub confirm: ConfirmMetrics,
    connections: crate::listener::ConnectionMetrics,
    request_timeouts: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fluxrelay");
        let received = Counter::default();
        let ignored = Counter::default();
        let rejected = Family::<ReasonLabel, Counter>::default();
        let accepted = Counter::default();
        let dispatches = Family::<ClusterOutcome, Counter>::default();
        let triggers = Family::<ClusterOutcome, Counter>::default();
        let queue_messages = Family::<QueueState, Gauge>::default();
        let journal_rows = Gauge::default();
        let journal_bytes = Gauge::default();
        let journal_cap_measurements = Gauge::default();
        let queue_commits = Gauge::default();
        let queue_synced_commits = Gauge::default();
        let queue_writes = Gauge::default();
        let trigger_latency = Histogram::new(LATENCY_BUCKETS);
        registry.register(
            "webhooks_received",
            "Webhook requests received on POST /webhook",
            received.clone(),
        );
        registry.register(
            "webhooks_ignored",
            "Authentic webhooks that are not pushes (answered 202 with a reason)",
            ignored.clone(),
        );
        registry.register(
            "webhooks_rejected",
            "Webhooks refused, by reason (unauthenticated, malformed, too_large, enqueue_failed)",
            rejected.clone(),
        );
        registry.register(
            "pushes_accepted",
            "Pushes acknowledged with 202, each durably queued (a delivery GitLab resends with the same Idempotency-Key is counted twice and queued once)",
            accepted.clone(),
        );
        registry.register(
            "dispatches",
            "Push-to-cluster dispatches settled, by cluster and outcome (delivered, superseded, \
             nothing_to_trigger, retried, dead_lettered, retried_and_dead_lettered)",
            dispatches.clone(),
        );
        registry.register(
            "triggers",
            "Calls to a cluster (Receiver webhook or annotation), by cluster and outcome (ok, failed)",
            triggers.clone(),
        );
        registry.register(
            "queue_messages",
            "Messages in the embedded queue, by queue and state (visible, in_flight, dead_letter)",
            queue_messages.clone(),
        );
        registry.register(
            "journal_rows",
            "Rows in the push journal (fluxrelay explain); a push's skips on a cluster are one row",
            journal_rows.clone(),
        );
        registry.register(
            "journal_bytes",
            "Bytes of the push journal's table and indexes in the queue file, kept under its cap",
            journal_bytes.clone(),
        );
        registry.register(
            "journal_cap_measurements",
            "Times the queue's writer measured the journal against its cap since start (each reads every page of the journal); rising steadily means the journal sits at its cap",
            journal_cap_measurements.clone(),
        );
        registry.register(
            "queue_commits",
            "Transactions the embedded queue committed since start (concurrent writes share one)",
            queue_commits.clone(),
        );
        registry.register(
            "queue_synced_commits",
            "Of queue_commits, those fsynced (a group holding an acknowledged push or an operator's write)",
            queue_synced_commits.clone(),
        );
        registry.register(
            "queue_writes",
            "Writes to the embedded queue since start; queue_writes / queue_commits is the mean group size",
            queue_writes.clone(),
        );
        registry.register(
            "trigger_latency_seconds",
            "Time from a push's webhook being accepted to its cluster's trigger succeeding",
            trigger_latency.clone(),
        );
        let confirm = ConfirmMetrics::register(&mut registry);
        let connections = crate::listener::ConnectionMetrics::default();
        let request_timeouts = Counter::default();
        registry.register(
            "http_connections",
            "HTTP connections open now (at most http.max_connections, briefly more while the longest-idle one closes)",
            connections.open.clone(),
        );
        registry.register(
            "http_connections_closed_for_room",
            "Idle HTTP connections closed to make room for a new one (http.max_connections was reached)",
            connections.closed_for_room.clone(),
        );
        registry.register(
            "http_header_timeouts",
            "HTTP connections closed because their request head was not complete within http.header_read_timeout_secs (including idle ones)",
            connections.header_timeouts.clone(),
        );
        registry.register(
            "http_request_timeouts",
            "Requests answered 408 because their body and answer took longer than http.request_timeout_secs",
            request_timeouts.clone(),
        );
        Self {
            confirm,
            registry,
            received,
            ignored,
            rejected,
            accepted,
            dispatches,
            triggers,
            queue_messages,
            journal_rows,
            journal_bytes,
            journal_measured_at: Mutex::new(None),
            journal_cap_measurements,
            queue_commits,
            queue_synced_commits,
            queue_writes,
            trigger_latency,
            connections,
            request_timeouts,
        }
    }

    /// The listener's counters (shared handles: the listener updates them).
    pub fn connections(&self) -> crate::listener::ConnectionMetrics {
        self.connections.clone()
    }

    pub fn record_request_timeout(&self) {
        self.request_timeouts.inc();
    }

    pub fn record_ingest(&self, result: &Result<Accepted, IngestError>) {
        self.received.inc();
        match result {
            Ok(Accepted::Enqueued { keys }) => {
                self.accepted.inc_by(keys.len() as u64);
            }
            Ok(Accepted::Ignored { .. }) => {
                self.ignored.inc();
            }
            Err(error) => {
                self.rejected
                    .get_or_create(&ReasonLabel {
                        reason: error.code().to_string(),
                    })
                    .inc();
            }
        }
    }

    pub fn record_unreadable_body(&self) {
        self.received.inc();
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: "unreadable_body".to_string(),
            })
            .inc();
    }

    /// Count each call, and each dispatch as it was settled on the queue: one that comes
    /// back (a retry in place, a settle that failed) counts as retried.
    pub fn record_dispatch(&self, report: &DispatchReport) {
        for target in &report.targets {
            let outcome = if target.result.is_ok() {
                "ok"
            } else {
                "failed"
            };
            self.triggers
                .get_or_create(&labels(&target.cluster, outcome))
                .inc();
        }
        for message in &report.messages {
            let cluster = message
                .dispatch
                .as_ref()
                .map_or("unreadable", |d| d.cluster.as_str());
            let outcome = if message.settled.comes_back() {
                "retried"
            } else {
                match message.verdict {
                    Verdict::Delivered { .. } => "delivered",
                    Verdict::Superseded { .. } => "superseded",
                    Verdict::NothingToTrigger => "nothing_to_trigger",
                    Verdict::Retry(_) => "retried",
                    Verdict::DeadLetter(_) => "dead_lettered",
                    Verdict::RetryAndDeadLetter(..) => "retried_and_dead_lettered",
                }
            };
            self.dispatches
                .get_or_create(&labels(cluster, outcome))
                .inc();
            // Accepted to answered: the push's own successful call.
            if let (Verdict::Delivered { .. }, Some(dispatch)) =
                (&message.verdict, &message.dispatch)
                && let Ok(accepted) = OffsetDateTime::parse(&dispatch.push.received_at, &Rfc3339)
                && let Some(answered) = report
                    .targets
                    .iter()
                    .filter(|t| t.carried == dispatch.push.key && t.result.is_ok())
                    .map(|t| t.finished_at)
                    .max()
            {
                let seconds = (answered - accepted).as_seconds_f64().max(0.0);
                self.trigger_latency.observe(seconds);
            }
        }
    }

    /// The text exposition, with queue gauges read from `queue` now and the journal's
    /// measured if its last measurement is older than `JOURNAL_GAUGE_MAX_AGE`.
    pub fn render(&self, queue: &EmbeddedQueue) -> Result<String, String> {
        self.render_at(queue, Instant::now())
    }

    fn render_at(&self, queue: &EmbeddedQueue, now: Instant) -> Result<String, String> {
        for name in [
            INTAKE_QUEUE,
            DISPATCH_QUEUE,
            DISPATCH_RETRY_QUEUE,
            CONFIRM_QUEUE,
        ] {
            let depth = queue.depth(name).map_err(|error| error.to_string())?;
            let dead = queue
                .dead_letter_count(name)
                .map_err(|error| error.to_string())?;
            for (state, count) in [
                ("visible", depth.visible),
                ("in_flight", depth.in_flight),
                ("dead_letter", dead),
            ] {
                self.queue_messages
                    .get_or_create(&QueueState {
                        queue: name.to_string(),
                        state: state.to_string(),
                    })
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
            }
        }
        {
            // Held while measuring: concurrent scrapes measure once.
            let mut measured_at = self
                .journal_measured_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let due = measured_at
                .is_none_or(|at| now.saturating_duration_since(at) >= JOURNAL_GAUGE_MAX_AGE);
            if due {
                let journal = queue.journal_stats().map_err(|error| error.to_string())?;
                self.journal_rows
                    .set(i64::try_from(journal.rows).unwrap_or(i64::MAX));
                self.journal_bytes
                    .set(i64::try_from(journal.bytes).unwrap_or(i64::MAX));
                *measured_at = Some(now);
            }
        }
        self.journal_cap_measurements
            .set(i64::try_from(queue.journal_measurements()).unwrap_or(i64::MAX));
        let group_commit = queue.group_commit_stats();
        self.queue_commits
            .set(i64::try_from(group_commit.commits).unwrap_or(i64::MAX));
        self.queue_synced_commits
            .set(i64::try_from(group_commit.synced_commits).unwrap_or(i64::MAX));
        self.queue_writes
            .set(i64::try_from(group_commit.writes).unwrap_or(i64::MAX));
        let mut text = String::new();
        encode(&mut text, &self.registry).map_err(|error| error.to_string())?;
        Ok(text)
    }
}

fn labels(cluster: &str, outcome: &str) -> ClusterOutcome {
    ClusterOutcome {
        cluster: cluster.to_string(),
        outcome: outcome.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use fluxrelay_adapters::embedded::JournalEntry;

    use super::*;

    fn gauge(text: &str, name: &str) -> i64 {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn the_journal_size_is_measured_at_scrape_time_at_most_once_a_minute() {
        let dir = std::env::temp_dir().join(format!("fluxrelay-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let queue = EmbeddedQueue::open(dir.join("queue.sqlite")).unwrap();
        let metrics = Metrics::new();
        let start = Instant::now();

        let before = metrics.render_at(&queue, start).unwrap();
        let skips: Vec<JournalEntry> = (0..300)
            .map(|n| JournalEntry::new("k", Some("prod"), "skipped", format!("a/{n}: url")))
            .chain([JournalEntry::new("k", None, "routed", "routed to prod")])
            .collect();
        queue.record(&skips).unwrap();
        let within_the_minute = metrics
            .render_at(
                &queue,
                start + JOURNAL_GAUGE_MAX_AGE - Duration::from_millis(1),
            )
            .unwrap();
        let after = metrics
            .render_at(&queue, start + JOURNAL_GAUGE_MAX_AGE)
            .unwrap();
        drop(queue);
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(gauge(&before, "fluxrelay_journal_rows"), 0);
        assert_eq!(
            gauge(&within_the_minute, "fluxrelay_journal_rows"),
            0,
            "{within_the_minute}"
        );
        assert_eq!(gauge(&after, "fluxrelay_journal_rows"), 2, "{after}");
        let page = 4096;
        assert!(
            gauge(&before, "fluxrelay_journal_bytes") >= page,
            "{before}"
        );
        assert!(gauge(&after, "fluxrelay_journal_bytes") >= page, "{after}");
    }

    #[test]
    fn the_writers_measurements_of_the_journal_against_its_cap_are_counted() {
        let dir =
            std::env::temp_dir().join(format!("fluxrelay-metrics-cap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let queue = EmbeddedQueue::open(dir.join("queue.sqlite")).unwrap();
        let metrics = Metrics::new();
        let before = metrics.render(&queue).unwrap();
        // Under a one-page cap every write finds the journal possibly over it and measures.
        queue.set_journal_max_bytes(4096);
        for n in 0..3 {
            let entry = JournalEntry::new(format!("k{n}"), None, "routed", "x".repeat(2000));
            queue.record(&[entry]).unwrap();
        }
        let measured = queue.journal_measurements();
        let after = metrics.render(&queue).unwrap();
        drop(queue);
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(gauge(&before, "fluxrelay_journal_cap_measurements"), 0);
        assert!(measured > 0, "the cap was never measured");
        assert_eq!(
            gauge(&after, "fluxrelay_journal_cap_measurements"),
            i64::try_from(measured).unwrap(),
            "{after}"
        );
    }
}
