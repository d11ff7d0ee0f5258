//! The push journal: what happened to a push (routed, each call to a cluster, delivered,
//! skipped objects, retries, dead letter), by push key, so `fluxrelay explain` can answer
//! "why didn't this push reconcile?" after the fact. Kept in the queue file, written in one
//! transaction per batch, pruned after `JOURNAL_RETENTION` and to a size cap (`journal_cap`).
//!
//! One row per entry, except skips: a registry of 300 GitRepositories skips about 300 of
//! them for every push on every cluster, which would be millions of rows a day. The skips of
//! one push on one cluster are one summary row instead: how many, and the first
//! `SKIP_DETAILS_KEPT` details.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::clock::millis;
use super::store::storage;
use fluxrelay_core::ports::QueueError;

pub const JOURNAL_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// The stage whose entries are summarised per push and cluster.
pub const SKIPPED: &str = "skipped";
/// Skip details kept in a summary; the rest are only counted.
pub const SKIP_DETAILS_KEPT: usize = 5;

/// One event in a push's life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    pub key: String,
    /// `None` for what happens before the push is split per cluster.
    pub cluster: Option<String>,
    /// What happened: `routed`, `triggered`, `trigger_failed`, `delivered`,
    /// `nothing_to_trigger`, `skipped`, `retry`, `dead_lettered`.
    pub stage: String,
    /// Human text: targets, answers, reasons. Never a secret (the handlers' reasons never
    /// carry one).
    pub detail: String,
}

impl JournalEntry {
    pub fn new(
        key: impl Into<String>,
        cluster: Option<&str>,
        stage: &str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            key: key.into(),
            cluster: cluster.map(str::to_string),
            stage: stage.to_string(),
            detail: detail.into(),
        }
    }
}

/// An entry as read back, with its time (ms since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRecord {
    pub at_ms: i64,
    pub entry: JournalEntry,
    /// How many entries the record stands for: 1, or for the skip summary of a push on a
    /// cluster (stage `skipped`, first recorded at `at_ms`) the number of objects skipped,
    /// whose first `SKIP_DETAILS_KEPT` details are the lines of `entry.detail`.
    pub count: u64,
}

impl JournalRecord {
    /// The details kept: the detail (even an empty one), or one line per kept skip.
    pub fn details(&self) -> impl Iterator<Item = &str> {
        self.entry
            .detail
            .split('\n')
            .map(|line| line.strip_suffix('\r').unwrap_or(line))
    }

    /// Entries counted but whose details were not kept ("and N more").
    pub fn not_kept(&self) -> u64 {
        let kept = u64::try_from(self.details().count()).unwrap_or(u64::MAX);
        self.count.saturating_sub(kept)
    }
}

/// The skips of one push on one cluster: the first distinct details, and how many.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct SkipSummary {
    pub(super) details: Vec<String>,
    pub(super) count: u64,
}

impl SkipSummary {
    /// The summary of one attempt's skips: the distinct details, counted.
    pub(super) fn of<'a>(details: impl IntoIterator<Item = &'a str>) -> Self {
        let mut seen = BTreeSet::new();
        let mut summary = Self::default();
        for detail in details {
            if seen.insert(detail) {
                summary.count = summary.count.saturating_add(1);
                summary.keep(detail);
            }
        }
        summary
    }

    /// Fold in a later attempt. A retried dispatch skips the same objects again (and a
    /// retried journal write repeats the same entries), so the count is the larger one, not
    /// the sum; it is never less than the details kept.
    pub(super) fn merge(&mut self, later: &Self) {
        for detail in &later.details {
            self.keep(detail);
        }
        let kept = u64::try_from(self.details.len()).unwrap_or(u64::MAX);
        self.count = self.count.max(later.count).max(kept);
    }

    fn keep(&mut self, detail: &str) {
        if self.details.len() >= SKIP_DETAILS_KEPT {
            return;
        }
        // One line per detail: the summary's details are the lines of its text.
        let detail = detail.replace(['\r', '\n'], " ");
        if !self.details.contains(&detail) {
            self.details.push(detail);
        }
    }

    fn from_row(detail: &str, count: u64) -> Self {
        Self {
            details: detail.lines().map(str::to_string).collect(),
            count,
        }
    }

    fn text(&self) -> String {
        self.details.join("\n")
    }
}

type PushCluster<'a> = (&'a str, Option<&'a str>);

/// Append `entries`, skips folded into their push's and cluster's summary. Every call is
/// taken as one attempt: the skips of one dispatch of a push to a cluster come in one call.
pub(super) fn append(
    transaction: &Transaction<'_>,
    entries: &[JournalEntry],
    now: i64,
) -> Result<(), QueueError> {
    transaction
        .prepare_cached("DELETE FROM journal WHERE at < ?1")
        .and_then(|mut statement| {
            statement.execute([now.saturating_sub(millis(JOURNAL_RETENTION))])
        })
        .map_err(storage("prune journal"))?;
    let mut skips: BTreeMap<PushCluster<'_>, Vec<&str>> = BTreeMap::new();
    for entry in entries.iter().filter(|entry| entry.stage == SKIPPED) {
        skips
            .entry((entry.key.as_str(), entry.cluster.as_deref()))
            .or_default()
            .push(entry.detail.as_str());
    }
    let mut insert = transaction
        .prepare_cached(
            "INSERT INTO journal (key, cluster, at, stage, detail, count)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(storage("prepare journal insert"))?;
    for entry in entries {
        if entry.stage != SKIPPED {
            insert
                .execute(params![
                    entry.key,
                    entry.cluster,
                    now,
                    entry.stage,
                    entry.detail,
                    1
                ])
                .map_err(storage("append to journal"))?;
            continue;
        }
        // The summary goes where the push's first skip on the cluster was: before its verdict.
        let push_cluster = (entry.key.as_str(), entry.cluster.as_deref());
        if let Some(details) = skips.remove(&push_cluster) {
            summarise_skips(transaction, push_cluster, &SkipSummary::of(details), now)?;
        }
    }
    Ok(())
}

/// Insert the summary, or fold it into the one already there.
fn summarise_skips(
    transaction: &Transaction<'_>,
    (key, cluster): PushCluster<'_>,
    attempt: &SkipSummary,
    now: i64,
) -> Result<(), QueueError> {
    let existing: Option<(i64, String, u64)> = transaction
        .prepare_cached(
            "SELECT id, detail, count FROM journal
             WHERE key = ?1 AND cluster IS ?2 AND stage = 'skipped'",
        )
        .and_then(|mut statement| {
            statement
                .query_row(params![key, cluster], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()
        })
        .map_err(storage("read skip summary"))?;
    match existing {
        Some((id, detail, count)) => {
            let mut summary = SkipSummary::from_row(&detail, count);
            summary.merge(attempt);
            transaction
                .prepare_cached("UPDATE journal SET detail = ?2, count = ?3 WHERE id = ?1")
                .and_then(|mut statement| {
                    statement.execute(params![id, summary.text(), summary.count])
                })
                .map_err(storage("update skip summary"))?;
        }
        None => {
            transaction
                .prepare_cached(
                    "INSERT INTO journal (key, cluster, at, stage, detail, count)
                     VALUES (?1, ?2, ?3, 'skipped', ?4, ?5)",
                )
                .and_then(|mut statement| {
                    statement.execute(params![key, cluster, now, attempt.text(), attempt.count])
                })
                .map_err(storage("insert skip summary"))?;
        }
    }
    Ok(())
}

/// Schema step 3: fold the one-row-per-skip journal of an older file into summaries, each
/// kept in the row of its first skip. All the skips are there, so the count is exact: the
/// distinct objects skipped. One push at a time, each push's rows read once.
pub(super) fn summarise_existing_skips(transaction: &Transaction<'_>) -> Result<(), QueueError> {
    let keys: Vec<String> = transaction
        .prepare("SELECT DISTINCT key FROM journal WHERE stage = 'skipped'")
        .and_then(|mut statement| statement.query_map([], |row| row.get(0))?.collect())
        .map_err(storage("find skips to summarise"))?;
    for key in keys {
        let skips: Vec<(i64, Option<String>, String)> = transaction
            .prepare_cached(
                "SELECT id, cluster, detail FROM journal
                 WHERE key = ?1 AND stage = 'skipped' ORDER BY id",
            )
            .and_then(|mut statement| {
                statement
                    .query_map([&key], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                    .collect()
            })
            .map_err(storage("read skips to summarise"))?;
        let mut by_cluster: BTreeMap<Option<&str>, (i64, Vec<&str>)> = BTreeMap::new();
        for (id, cluster, detail) in &skips {
            by_cluster
                .entry(cluster.as_deref())
                .or_insert_with(|| (*id, Vec::new()))
                .1
                .push(detail);
        }
        for (first_id, details) in by_cluster.into_values() {
            let summary = SkipSummary::of(details);
            transaction
                .prepare_cached("UPDATE journal SET detail = ?2, count = ?3 WHERE id = ?1")
                .and_then(|mut statement| {
                    statement.execute(params![first_id, summary.text(), summary.count])
                })
                .map_err(storage("write skip summary"))?;
        }
        transaction
            .prepare_cached(
                "DELETE FROM journal WHERE key = ?1 AND stage = 'skipped' AND id NOT IN (
                     SELECT MIN(id) FROM journal WHERE key = ?1 AND stage = 'skipped'
                     GROUP BY cluster)",
            )
            .and_then(|mut statement| statement.execute([&key]))
            .map_err(storage("delete summarised skips"))?;
    }
    Ok(())
}

/// Every key that starts with `prefix` (a key is 64 hex digits; people paste prefixes).
pub(super) fn keys_with_prefix(
    connection: &Connection,
    prefix: &str,
) -> Result<Vec<String>, QueueError> {
    let escaped: String = prefix
        .chars()
        .flat_map(|c| match c {
            '%' | '_' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    connection
        .prepare_cached(
            "SELECT DISTINCT key FROM journal WHERE key LIKE ?1 || '%' ESCAPE '\\' ORDER BY key LIMIT 20",
        )
        .and_then(|mut statement| {
            statement
                .query_map([escaped], |row| row.get(0))?
                .collect::<Result<Vec<String>, _>>()
        })
        .map_err(storage("find journal keys"))
}

pub(super) fn records(
    connection: &Connection,
    key: &str,
) -> Result<Vec<JournalRecord>, QueueError> {
    connection
        .prepare_cached(
            "SELECT key, cluster, at, stage, detail, count FROM journal WHERE key = ?1 ORDER BY id",
        )
        .and_then(|mut statement| {
            statement
                .query_map([key], |row| {
                    Ok(JournalRecord {
                        at_ms: row.get(2)?,
                        entry: JournalEntry {
                            key: row.get(0)?,
                            cluster: row.get(1)?,
                            stage: row.get(3)?,
                            detail: row.get(4)?,
                        },
                        count: row.get(5)?,
                    })
                })?
                .collect()
        })
        .map_err(storage("read journal"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn summary(details: &[&str], count: u64) -> SkipSummary {
        SkipSummary {
            details: details.iter().map(|d| d.to_string()).collect(),
            count,
        }
    }

    #[test]
    fn an_attempt_keeps_the_first_distinct_details_and_counts_them_all() {
        let cases: [(&str, Vec<&str>, SkipSummary); 5] = [
            ("none", vec![], summary(&[], 0)),
            ("one", vec!["a: url"], summary(&["a: url"], 1)),
            (
                "more than kept",
                vec!["a", "b", "c", "d", "e", "f", "g"],
                summary(&["a", "b", "c", "d", "e"], 7),
            ),
            (
                "a repeat counts once",
                vec!["a", "a", "b"],
                summary(&["a", "b"], 2),
            ),
            (
                "a newline cannot add a line",
                vec!["a\nb", "c\r\nd"],
                summary(&["a b", "c  d"], 2),
            ),
        ];
        for (name, details, expected) in cases {
            assert_eq!(SkipSummary::of(details), expected, "{name}");
        }
    }

    #[test]
    fn a_later_attempt_adds_details_but_not_its_count() {
        let cases = [
            (
                "the same skips again",
                summary(&["a", "b"], 300),
                summary(&["a", "b"], 300),
                summary(&["a", "b"], 300),
            ),
            (
                "one more object in the registry",
                summary(&["a", "b"], 300),
                summary(&["a", "b"], 301),
                summary(&["a", "b"], 301),
            ),
            (
                "fewer skips later do not shrink the count",
                summary(&["a", "b", "c"], 3),
                summary(&["a"], 1),
                summary(&["a", "b", "c"], 3),
            ),
            (
                "new details fill the kept ones and raise the count to them",
                summary(&["a", "b"], 2),
                summary(&["c", "d", "e", "f"], 4),
                summary(&["a", "b", "c", "d", "e"], 5),
            ),
            (
                "an empty attempt changes nothing",
                summary(&["a"], 1),
                summary(&[], 0),
                summary(&["a"], 1),
            ),
        ];
        for (name, mut earlier, later, expected) in cases {
            earlier.merge(&later);
            assert_eq!(earlier, expected, "{name}");
        }
    }

    #[test]
    fn a_record_counts_what_it_did_not_keep() {
        let record = |detail: &str, count| JournalRecord {
            at_ms: 0,
            entry: JournalEntry::new("k", Some("prod"), SKIPPED, detail),
            count,
        };
        assert_eq!(record("a\nb", 300).not_kept(), 298);
        assert_eq!(record("a\nb", 2).not_kept(), 0);
        assert_eq!(record("delivered", 1).not_kept(), 0);
        assert_eq!(record("", 1).not_kept(), 0, "an empty detail is one");
        assert_eq!(record("", 0).not_kept(), 0, "a bare row never underflows");
        assert_eq!(
            record("a\nb", 1).not_kept(),
            0,
            "nor a count below the lines"
        );
    }
}
