//! The push journal: one row per thing that happened to a push (routed, each call to a
//! cluster, delivered, skipped objects, retries, dead letter), by push key, so `fluxrelay
//! explain` can answer "why didn't this push reconcile?" after the fact. Kept in the queue
//! file, written in one transaction per batch, pruned after `JOURNAL_RETENTION`.

use std::time::Duration;

use rusqlite::{Connection, Transaction, params};

use super::clock::millis;
use super::store::storage;
use fluxrelay_core::ports::QueueError;

pub const JOURNAL_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

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
}

pub(super) fn append(
    transaction: &Transaction<'_>,
    entries: &[JournalEntry],
    now: i64,
) -> Result<(), QueueError> {
    transaction
        .execute(
            "DELETE FROM journal WHERE at < ?1",
            [now.saturating_sub(millis(JOURNAL_RETENTION))],
        )
        .map_err(storage("prune journal"))?;
    let mut insert = transaction
        .prepare_cached(
            "INSERT INTO journal (key, cluster, at, stage, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(storage("prepare journal insert"))?;
    for entry in entries {
        insert
            .execute(params![
                entry.key,
                entry.cluster,
                now,
                entry.stage,
                entry.detail
            ])
            .map_err(storage("append to journal"))?;
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
            "SELECT key, cluster, at, stage, detail FROM journal WHERE key = ?1 ORDER BY id",
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
                    })
                })?
                .collect()
        })
        .map_err(storage("read journal"))
}
