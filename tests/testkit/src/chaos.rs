//! Shared by the chaos tests (embedded `fluxrelay serve` and the AWS functions on moto):
//! the size of a run, a seeded random source whose seed is printed so a failure can be
//! replayed, and the books: every (push, cluster) pair that should have been delivered was
//! delivered (or superseded: covered by a later trigger of the same ref), or is in the dead-letter
//! queue with a reason; anything else is lost.
// A test harness: a failed reconciliation is a test failure.
#![allow(clippy::panic)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

/// How big a chaos run is: `FLUXRELAY_CHAOS=long` for the long run, anything else (or unset)
/// for the CI run. `FLUXRELAY_CHAOS_PUSHES`, `FLUXRELAY_CHAOS_CLUSTERS` and
/// `FLUXRELAY_CHAOS_POSTING_SECS` override either.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub pushes: usize,
    pub clusters: usize,
    /// How long the posters spread the pushes over (faults are injected meanwhile).
    pub posting: Duration,
    pub long: bool,
}

impl Scale {
    pub fn from_env(ci_pushes: usize, ci_clusters: usize, ci_posting: Duration) -> Scale {
        let long = std::env::var("FLUXRELAY_CHAOS").is_ok_and(|value| value == "long");
        let mut scale = if long {
            Scale {
                pushes: 10_000,
                clusters: 20,
                posting: Duration::from_secs(900),
                long,
            }
        } else {
            Scale {
                pushes: ci_pushes,
                clusters: ci_clusters,
                posting: ci_posting,
                long,
            }
        };
        let number = |name: &str| {
            std::env::var(name)
                .ok()
                .map(|value| match value.parse::<usize>() {
                    Ok(number) if number > 0 => number,
                    _ => panic!("{name}={value:?} is not a positive number"),
                })
        };
        if let Some(pushes) = number("FLUXRELAY_CHAOS_PUSHES") {
            scale.pushes = pushes;
        }
        if let Some(clusters) = number("FLUXRELAY_CHAOS_CLUSTERS") {
            scale.clusters = clusters;
        }
        if let Some(seconds) = number("FLUXRELAY_CHAOS_POSTING_SECS") {
            scale.posting = Duration::from_secs(seconds as u64);
        }
        scale
    }
}

/// SplitMix64: small, fast and fully determined by its seed (no dependency needed).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// `FLUXRELAY_CHAOS_SEED` when set (to replay a failure), else from the clock. The seed
    /// is printed either way.
    pub fn from_env(label: &str) -> Rng {
        let seed = match std::env::var("FLUXRELAY_CHAOS_SEED") {
            Ok(text) => match text.parse::<u64>() {
                Ok(seed) => seed,
                Err(error) => panic!("FLUXRELAY_CHAOS_SEED={text:?}: {error}"),
            },
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.as_nanos() as u64)
                .unwrap_or(1),
        };
        eprintln!("{label}: seed {seed} (replay with FLUXRELAY_CHAOS_SEED={seed})");
        Rng(seed)
    }

    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound.max(1) as u64) as usize
    }

    /// Uniform in `low..=high` milliseconds.
    pub fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next_u64() % (high - low + 1))
    }

    /// An independent stream (for another task), determined by this one.
    pub fn fork(&mut self) -> Rng {
        Rng(self.next_u64())
    }
}

/// One acknowledged push (202 accepted).
#[derive(Debug, Clone)]
pub struct AckedPush {
    /// The push's number in the run.
    pub n: usize,
    /// Full ref, e.g. `refs/heads/b1` or `refs/tags/v0.0.7`.
    pub git_ref: String,
    /// The `after` commit: unique per push in a chaos run.
    pub after: String,
    /// Position among the pushes to the same ref, in the order they were acknowledged (a
    /// ref's pushes are posted one after the other, so this is also the order of commits).
    pub order: usize,
    /// The dedup key ingest answered with.
    pub key: String,
    /// When its `202` came back: the push was accepted before this.
    pub acked_at: std::time::Instant,
    /// When its commit reached the ref, just before its first POST: a trigger of the ref
    /// answered after this made Flux fetch a head that includes it. (Not the `202`: serve
    /// covers a push by a call that went out after it accepted the push, which may be
    /// answered while the push waits for its fsync.)
    pub pushed_at: std::time::Instant,
}

/// A request a Receiver answered 200.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub cluster: String,
    pub git_ref: String,
    pub after: String,
    /// When the Receiver answered.
    pub at: std::time::Instant,
}

/// A dead letter of the dispatch queue.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub cluster: String,
    pub key: String,
    pub reason: String,
    /// When it was dead-lettered, if the queue says.
    pub at: Option<time::OffsetDateTime>,
}

/// The reconciled books of a run.
#[derive(Debug, Default)]
pub struct Books {
    pub pairs: usize,
    /// The Receiver saw this push's own trigger.
    pub delivered: usize,
    /// Delivered by supersession: no trigger of its own, but the same Receiver answered a
    /// trigger of the same ref after the push was accepted (a Flux trigger fetches the ref's
    /// head then, whichever push's body it carried): a newer push's, coalesced in one batch,
    /// or any later one that a retry found had covered it.
    pub superseded: usize,
    /// In the dead-letter queue (and not delivered), by reason class.
    pub dead_lettered: BTreeMap<String, usize>,
    /// Dead-lettered pairs that a later push to the same ref covered anyway.
    pub dead_lettered_then_covered: usize,
    /// Receiver calls beyond the first for the same (push, cluster).
    pub duplicates: usize,
    pub lost: usize,
    pub lost_examples: Vec<String>,
    /// 200s that name no acknowledged push of this run (must be 0).
    pub unknown_deliveries: usize,
    /// Dead letters that name no acknowledged (push, cluster) pair (must be 0).
    pub unknown_dead_letters: usize,
    /// Dead letters of pairs that were delivered too (at-least-once; reported, not an error).
    pub dead_lettered_and_delivered: usize,
}

impl Books {
    /// Reconciles `pushes` × `clusters` against what the Receivers answered 200 and what
    /// the dead-letter queue holds; `classify` names a dead letter's reason class.
    pub fn reconcile(
        pushes: &[AckedPush],
        clusters: &[String],
        deliveries: &[Delivery],
        dead_letters: &[DeadLetter],
        classify: impl Fn(&str) -> String,
    ) -> Books {
        let by_after: HashMap<&str, &AckedPush> = pushes
            .iter()
            .map(|push| (push.after.as_str(), push))
            .collect();
        // (cluster, after) → number of 200s; (cluster, ref) → when its latest 200 came.
        let mut calls: HashMap<(&str, &str), usize> = HashMap::new();
        let mut latest: HashMap<(&str, &str), std::time::Instant> = HashMap::new();
        let mut books = Books::default();
        for delivery in deliveries {
            match by_after.get(delivery.after.as_str()) {
                Some(push) if push.git_ref == delivery.git_ref => {
                    *calls
                        .entry((delivery.cluster.as_str(), push.after.as_str()))
                        .or_default() += 1;
                    let slot = latest
                        .entry((delivery.cluster.as_str(), push.git_ref.as_str()))
                        .or_insert(delivery.at);
                    *slot = (*slot).max(delivery.at);
                }
                _ => books.unknown_deliveries += 1,
            }
        }
        let keys: BTreeSet<(&str, &str)> = pushes
            .iter()
            .flat_map(|push| {
                clusters
                    .iter()
                    .map(move |cluster| (cluster.as_str(), push.key.as_str()))
            })
            .collect();
        let mut dead: HashMap<(&str, &str), &DeadLetter> = HashMap::new();
        for letter in dead_letters {
            if keys.contains(&(letter.cluster.as_str(), letter.key.as_str())) {
                dead.insert((letter.cluster.as_str(), letter.key.as_str()), letter);
            } else {
                books.unknown_dead_letters += 1;
            }
        }
        for push in pushes {
            for cluster in clusters {
                books.pairs += 1;
                let own = calls
                    .get(&(cluster.as_str(), push.after.as_str()))
                    .copied()
                    .unwrap_or(0);
                // A trigger of the same ref answered after the commit reached it made Flux
                // fetch a head that includes it.
                let covered = latest
                    .get(&(cluster.as_str(), push.git_ref.as_str()))
                    .is_some_and(|answered| *answered > push.pushed_at);
                let letter = dead.get(&(cluster.as_str(), push.key.as_str()));
                if own > 0 {
                    books.delivered += 1;
                    books.duplicates += own - 1;
                    if letter.is_some() {
                        books.dead_lettered_and_delivered += 1;
                    }
                } else if let Some(letter) = letter {
                    *books
                        .dead_lettered
                        .entry(classify(&letter.reason))
                        .or_default() += 1;
                    if covered {
                        books.dead_lettered_then_covered += 1;
                    }
                } else if covered {
                    books.superseded += 1;
                } else {
                    books.lost += 1;
                    if books.lost_examples.len() < 10 {
                        books.lost_examples.push(format!(
                            "push {} ({} @ {}, key {}) → cluster {cluster}",
                            push.n, push.git_ref, push.after, push.key
                        ));
                    }
                }
            }
        }
        books
    }

    pub fn dead_lettered_total(&self) -> usize {
        self.dead_lettered.values().sum()
    }
}

impl fmt::Display for Books {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pairs {} | delivered {} | superseded {} | dead-lettered {} {:?} (of which covered later by a newer push: {}) | duplicates {} | lost {} | unknown deliveries {} | unknown dead letters {} | dead-lettered and delivered {}",
            self.pairs,
            self.delivered,
            self.superseded,
            self.dead_lettered_total(),
            self.dead_lettered,
            self.dead_lettered_then_covered,
            self.duplicates,
            self.lost,
            self.unknown_deliveries,
            self.unknown_dead_letters,
            self.dead_lettered_and_delivered,
        )
    }
}

/// Confirmation (issue 14): every pair whose trigger reached its cluster (delivered or
/// superseded, and not dead-lettered) ends in exactly one outcome, none left pending. The
/// ground truth is GitLab (the stand-in): each end is a terminal commit status named for the
/// cluster on the push's commit, which outlives any crash of fluxrelay.
#[derive(Debug, Default)]
pub struct ConfirmationBooks {
    /// Pairs that must end.
    pub expected: usize,
    /// By outcome: success, failed, superseded, timed_out.
    pub ended: BTreeMap<String, usize>,
    pub pending: usize,
    pub pending_examples: Vec<String>,
    /// Pairs whose end was later replaced by a different one (the trigger was delivered
    /// twice, at least once, and the late twin saw the cluster differently, e.g. a timed-out
    /// confirmation followed by a success): the pair still ends in one outcome, GitLab's
    /// current status; reported, not a failure.
    pub revised: usize,
    pub revised_examples: Vec<String>,
}

/// The outcome a terminal commit status stands for (`canceled` says which in its
/// description); `None` for a status that is not terminal.
pub fn status_outcome(state: &str, description: &str) -> Option<&'static str> {
    match state {
        "success" => Some("success"),
        "failed" => Some("failed"),
        "canceled" if description.starts_with("superseded") => Some("superseded"),
        "canceled" => Some("timed_out"),
        _ => None,
    }
}

impl ConfirmationBooks {
    /// `statuses(after, cluster)`: every status (state, description) posted for the cluster
    /// on that commit, oldest first.
    pub fn reconcile(
        pushes: &[AckedPush],
        clusters: &[String],
        deliveries: &[Delivery],
        dead_letters: &[DeadLetter],
        statuses: impl Fn(&str, &str) -> Vec<(String, String)>,
    ) -> ConfirmationBooks {
        let mut reached: BTreeSet<(String, String)> = BTreeSet::new();
        let mut latest: HashMap<(String, String), usize> = HashMap::new();
        let by_after: HashMap<&str, &AckedPush> =
            pushes.iter().map(|p| (p.after.as_str(), p)).collect();
        for delivery in deliveries {
            if let Some(push) = by_after.get(delivery.after.as_str()) {
                reached.insert((delivery.cluster.clone(), push.after.clone()));
                let slot = latest
                    .entry((delivery.cluster.clone(), push.git_ref.clone()))
                    .or_default();
                *slot = (*slot).max(push.order + 1);
            }
        }
        let dead: BTreeSet<(&str, &str)> = dead_letters
            .iter()
            .map(|l| (l.cluster.as_str(), l.key.as_str()))
            .collect();
        let mut books = ConfirmationBooks::default();
        for push in pushes {
            for cluster in clusters {
                let own = reached.contains(&(cluster.clone(), push.after.clone()));
                let covered = latest
                    .get(&(cluster.clone(), push.git_ref.clone()))
                    .is_some_and(|highest| *highest > push.order);
                if !(own || covered) || dead.contains(&(cluster.as_str(), push.key.as_str())) {
                    continue;
                }
                books.expected += 1;
                let outcomes: Vec<&'static str> = statuses(&push.after, cluster)
                    .iter()
                    .filter_map(|(state, description)| status_outcome(state, description))
                    .collect();
                let Some(last) = outcomes.last() else {
                    books.pending += 1;
                    if books.pending_examples.len() < 10 {
                        books.pending_examples.push(format!(
                            "push {} ({} @ {}) on {cluster}",
                            push.n, push.git_ref, push.after
                        ));
                    }
                    continue;
                };
                *books.ended.entry(last.to_string()).or_default() += 1;
                if outcomes.iter().any(|outcome| outcome != last) {
                    books.revised += 1;
                    if books.revised_examples.len() < 10 {
                        books
                            .revised_examples
                            .push(format!("push {} on {cluster}: {outcomes:?}", push.n));
                    }
                }
            }
        }
        books
    }
}

impl fmt::Display for ConfirmationBooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "confirmations: expected {} | ended {:?} | pending {} | revised by a late twin {}",
            self.expected, self.ended, self.pending, self.revised
        )
    }
}

/// The reason class of a dead letter: `rbac` for an apiserver 403 (a permission removed),
/// `gave-up` for retries exhausted, `no-reason` for a queue redrive, else `other`.
pub fn reason_class(reason: &str) -> String {
    let lower = reason.to_lowercase();
    let class = if lower.contains("gave up after") {
        "gave-up"
    } else if lower.contains("403") || lower.contains("forbidden") {
        "rbac"
    } else if lower.contains("no reason recorded") || lower.is_empty() {
        "no-reason"
    } else {
        "other"
    };
    class.to_string()
}

/// How many faults of each kind a run injected, for the report and the "it tested
/// something" assertions, and when each lasted.
#[derive(Debug, Default, Clone)]
pub struct FaultLog(
    pub BTreeMap<&'static str, usize>,
    pub Vec<(&'static str, time::OffsetDateTime, time::OffsetDateTime)>,
);

impl FaultLog {
    pub fn add(&mut self, kind: &'static str) {
        *self.0.entry(kind).or_default() += 1;
    }

    /// A fault that lasted from `start` until now.
    pub fn window(&mut self, kind: &'static str, start: time::OffsetDateTime) {
        self.add(kind);
        self.1.push((kind, start, time::OffsetDateTime::now_utc()));
    }

    /// The windows and the dead letters on one time line, in seconds from `origin`:
    /// `kind +start..+end` and `dead letters at +second ×count`.
    pub fn timeline(&self, origin: time::OffsetDateTime, letters: &[DeadLetter]) -> String {
        let seconds = |at: time::OffsetDateTime| (at - origin).as_seconds_f64();
        let mut lines: Vec<(f64, String)> = self
            .1
            .iter()
            .map(|(kind, start, end)| {
                (
                    seconds(*start),
                    format!("{:7.1}..{:7.1} s  {kind}", seconds(*start), seconds(*end)),
                )
            })
            .collect();
        let mut per_second: BTreeMap<i64, BTreeMap<String, usize>> = BTreeMap::new();
        for letter in letters {
            if let Some(at) = letter.at {
                *per_second
                    .entry(seconds(at).floor() as i64)
                    .or_default()
                    .entry(reason_class(&letter.reason))
                    .or_default() += 1;
            }
        }
        for (second, classes) in per_second {
            lines.push((
                second as f64,
                format!("{second:7}         s  dead letters {classes:?}"),
            ));
        }
        lines.sort_by(|a, b| a.0.total_cmp(&b.0));
        lines
            .into_iter()
            .map(|(_, line)| line)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Which fault window each dead letter fell in (or up to `slack` after): counts by
    /// `"<class> during <fault kind>"`, or `"<class> outside any fault window"`.
    pub fn attribute(
        &self,
        letters: &[DeadLetter],
        slack: std::time::Duration,
    ) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for letter in letters {
            let class = reason_class(&letter.reason);
            // Inside a window first; else the latest window that ended within `slack`.
            let during = letter.at.and_then(|at| {
                self.1
                    .iter()
                    .find(|(_, start, end)| *start <= at && at <= *end)
                    .or_else(|| {
                        self.1
                            .iter()
                            .filter(|(_, start, end)| *start <= at && at <= *end + slack)
                            .max_by_key(|(_, _, end)| *end)
                    })
                    .map(|(kind, _, _)| *kind)
            });
            let label = match during {
                Some(kind) => format!("{class} during {kind}"),
                None => format!("{class} outside any fault window"),
            };
            *counts.entry(label).or_default() += 1;
        }
        counts
    }

    pub fn count(&self, kind: &str) -> usize {
        self.0.get(kind).copied().unwrap_or(0)
    }

    /// Dead letters that fall outside every `kind` window (or `slack` after one).
    pub fn outside<'l>(
        &self,
        kind: &str,
        letters: &'l [DeadLetter],
        slack: std::time::Duration,
    ) -> Vec<&'l DeadLetter> {
        letters
            .iter()
            .filter(|letter| {
                !letter.at.is_some_and(|at| {
                    self.1
                        .iter()
                        .any(|(k, start, end)| *k == kind && *start <= at && at <= *end + slack)
                })
            })
            .collect()
    }
}

/// The obligations toward a cluster whose apiserver hung for the whole run: nothing was
/// delivered there, so for each ref the newest acknowledged push must still be pending
/// (`pending`: (cluster, push key) of the messages left on the queues) or dead-lettered;
/// every older push of the ref is covered by it (a trigger fetches the head). Returns what
/// is missing.
pub fn hung_cluster_kept(
    pushes: &[AckedPush],
    cluster: &str,
    pending: &[(String, String)],
    dead_letters: &[DeadLetter],
) -> Vec<String> {
    let mut newest: HashMap<&str, &AckedPush> = HashMap::new();
    for push in pushes {
        let slot = newest.entry(push.git_ref.as_str()).or_insert(push);
        if push.acked_at > slot.acked_at {
            *slot = push;
        }
    }
    let mut missing: Vec<String> = newest
        .values()
        .filter(|push| {
            let kept = |c: &str, key: &str| c == cluster && key == push.key;
            !pending.iter().any(|(c, key)| kept(c, key))
                && !dead_letters
                    .iter()
                    .any(|letter| kept(&letter.cluster, &letter.key))
        })
        .map(|push| format!("push {} ({}, key {})", push.n, push.git_ref, push.key))
        .collect();
    missing.sort();
    missing
}

/// The end of a chaos run with a hung cluster (both modes): none of the healthy clusters'
/// work is left queued (`pending`: (cluster, push key) of what is), for each ref the hung
/// cluster's newest push is kept (when `with_hung`), and the healthy clusters'
/// acknowledged → delivered latency is printed under `mode`. Panics with what is wrong.
pub fn assert_hung_cluster_run(
    mode: &str,
    pushes: &[AckedPush],
    hung: &str,
    pending: &[(String, String)],
    dead_letters: &[DeadLetter],
    deliveries: &[Delivery],
    with_hung: bool,
) {
    let healthy_pending: Vec<&(String, String)> =
        pending.iter().filter(|(c, _)| c != hung).collect();
    assert!(
        healthy_pending.is_empty(),
        "healthy clusters' work left queued: {healthy_pending:?}"
    );
    if with_hung {
        let missing = hung_cluster_kept(pushes, hung, pending, dead_letters);
        assert!(
            missing.is_empty(),
            "pushes the hung cluster would never get: {missing:?}"
        );
    }
    let Some((p50, p90, p99)) = delivery_latencies(pushes, deliveries) else {
        panic!("{mode}: no delivery to time");
    };
    eprintln!(
        "{mode}: {} the healthy clusters' acknowledged → delivered latency: p50 {p50:.1?}, p90 {p90:.1?}, p99 {p99:.1?}",
        if with_hung {
            format!(
                "beside a cluster whose apiserver hung for the whole run ({} of its messages pending),",
                pending.len()
            )
        } else {
            "with no hung cluster (FLUXRELAY_CHAOS_HUNG=0),".to_string()
        }
    );
}

/// Acknowledged → first `200` of each delivered (push, cluster) pair: p50, p90, p99.
pub fn delivery_latencies(
    pushes: &[AckedPush],
    deliveries: &[Delivery],
) -> Option<(Duration, Duration, Duration)> {
    let acked: HashMap<&str, std::time::Instant> = pushes
        .iter()
        .map(|push| (push.after.as_str(), push.acked_at))
        .collect();
    let mut first: HashMap<(&str, &str), std::time::Instant> = HashMap::new();
    for delivery in deliveries {
        let slot = first
            .entry((delivery.cluster.as_str(), delivery.after.as_str()))
            .or_insert(delivery.at);
        *slot = (*slot).min(delivery.at);
    }
    let mut latencies: Vec<Duration> = first
        .iter()
        .filter_map(|((_, after), at)| {
            acked
                .get(after)
                .map(|acked| at.saturating_duration_since(*acked))
        })
        .collect();
    if latencies.is_empty() {
        return None;
    }
    latencies.sort();
    let at = |q: usize| latencies[(latencies.len() - 1) * q / 100];
    Some((at(50), at(90), at(99)))
}

/// How long a Role stays removed: the first removal, and one in four after it, outlasts
/// dispatch's 10 s denial confirmation (so dead-lettering a real denial is exercised); the
/// others are brief (a Role re-created by GitOps), which must dead-letter nothing.
pub fn rbac_removal_hold(rng: &mut Rng, removals_so_far: usize) -> Duration {
    if removals_so_far == 0 || rng.below(4) == 0 {
        rng.millis(12_000, 16_000)
    } else {
        rng.millis(500, 2_500)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> std::time::Instant {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        *START.get_or_init(std::time::Instant::now)
    }

    /// Push `n`, acknowledged at `n` seconds.
    fn push(n: usize, git_ref: &str, order: usize) -> AckedPush {
        AckedPush {
            n,
            git_ref: git_ref.into(),
            after: format!("{n:040x}"),
            order,
            key: format!("key{n}"),
            acked_at: start() + Duration::from_secs(n as u64),
            pushed_at: start() + Duration::from_secs(n as u64),
        }
    }

    /// A 200 for push `n`'s body, answered at `at` seconds.
    fn delivery_at(cluster: &str, git_ref: &str, n: usize, at: u64) -> Delivery {
        Delivery {
            cluster: cluster.into(),
            git_ref: git_ref.into(),
            after: format!("{n:040x}"),
            at: start() + Duration::from_secs(at),
        }
    }

    /// A 200 for push `n`'s body, answered just after it was acknowledged.
    fn delivery(cluster: &str, git_ref: &str, n: usize) -> Delivery {
        delivery_at(cluster, git_ref, n, n as u64 + 1)
    }

    #[test]
    fn books_count_own_coalesced_dead_and_lost_pairs() {
        let pushes = [
            push(0, "refs/heads/b", 0),
            push(1, "refs/heads/b", 1),
            push(2, "refs/tags/v2", 0),
            push(3, "refs/tags/v3", 0),
        ];
        let clusters = ["a".to_string(), "z".to_string()];
        let deliveries = [
            delivery("a", "refs/heads/b", 1),
            delivery("a", "refs/heads/b", 1),
            delivery("a", "refs/tags/v2", 2),
            delivery("z", "refs/heads/b", 0),
            delivery("z", "refs/tags/v3", 3),
            delivery("z", "refs/tags/v9", 9),
        ];
        let dead = [DeadLetter {
            cluster: "z".into(),
            key: "key2".into(),
            reason: "apiserver refused: 403 Forbidden".into(),
            at: None,
        }];
        let books = Books::reconcile(&pushes, &clusters, &deliveries, &dead, reason_class);
        assert_eq!(books.pairs, 8);
        // a: 1 own (twice), 0 coalesced under 1, 2 own; 3 lost. z: 0 own, 1 lost, 2 dead, 3 own.
        assert_eq!(books.delivered, 4, "{books}");
        assert_eq!(books.superseded, 1, "{books}");
        assert_eq!(books.duplicates, 1, "{books}");
        assert_eq!(books.dead_lettered.get("rbac"), Some(&1), "{books}");
        assert_eq!(books.lost, 2, "{books}");
        assert_eq!(books.unknown_deliveries, 1, "{books}");
    }

    #[test]
    fn a_trigger_answered_before_a_push_was_acknowledged_does_not_cover_it() {
        let pushes = [push(0, "refs/heads/b", 0), push(1, "refs/heads/b", 1)];
        let books = Books::reconcile(
            &pushes,
            &["a".to_string()],
            &[delivery_at("a", "refs/heads/b", 0, 0)],
            &[],
            reason_class,
        );
        assert_eq!((books.delivered, books.superseded, books.lost), (1, 0, 1));
    }

    #[test]
    fn every_reached_pair_must_end_once() {
        let pushes = [
            push(0, "refs/heads/b", 0),
            push(1, "refs/heads/b", 1),
            push(2, "refs/tags/v2", 0),
        ];
        let clusters = ["a".to_string()];
        // 1 delivered (0 covered by it); 2 dead-lettered: not expected.
        let deliveries = [delivery("a", "refs/heads/b", 1)];
        let dead = [DeadLetter {
            cluster: "a".into(),
            key: "key2".into(),
            reason: "403".into(),
            at: None,
        }];
        let statuses = |after: &str, _cluster: &str| -> Vec<(String, String)> {
            if after == format!("{:040x}", 1) {
                vec![
                    ("running".into(), String::new()),
                    ("success".into(), "applied".into()),
                ]
            } else {
                vec![("pending".into(), String::new())]
            }
        };
        let books = ConfirmationBooks::reconcile(&pushes, &clusters, &deliveries, &dead, statuses);
        assert_eq!(books.expected, 2, "{books}");
        assert_eq!(books.ended.get("success"), Some(&1), "{books}");
        assert_eq!(books.pending, 1, "push 0 is still pending: {books}");
        let conflicting = |_: &str, _: &str| {
            vec![
                ("success".to_string(), String::new()),
                ("canceled".to_string(), "timed out: x".to_string()),
            ]
        };
        let books =
            ConfirmationBooks::reconcile(&pushes, &clusters, &deliveries, &dead, conflicting);
        assert_eq!(books.revised, 2, "{books}");
        assert_eq!(
            books.ended.get("timed_out"),
            Some(&2),
            "the latest end counts: {books}"
        );
        assert_eq!(
            status_outcome("canceled", "superseded: y"),
            Some("superseded")
        );
        assert_eq!(status_outcome("running", ""), None);
    }

    #[test]
    fn a_trigger_answered_after_a_push_was_acknowledged_covers_it_whatever_it_carried() {
        // Push 0's retry is answered after push 1 was acknowledged: Flux fetched a head
        // that has push 1's commit.
        let pushes = [push(0, "refs/heads/b", 0), push(1, "refs/heads/b", 1)];
        let books = Books::reconcile(
            &pushes,
            &["a".to_string()],
            &[delivery_at("a", "refs/heads/b", 0, 5)],
            &[],
            reason_class,
        );
        assert_eq!((books.delivered, books.superseded, books.lost), (1, 1, 0));
        // Another ref's trigger covers nothing.
        let books = Books::reconcile(
            &pushes,
            &["a".to_string()],
            &[delivery_at("a", "refs/heads/other", 0, 5)],
            &[],
            reason_class,
        );
        assert_eq!(books.lost, 2, "{books}");
    }

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        let (mut one, mut two) = (Rng::new(42), Rng::new(42));
        for _ in 0..100 {
            assert_eq!(one.below(1000), two.below(1000));
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }
}
