//! The journal's size: measured (`dbstat`, the journal's own pages), capped (the oldest
//! pushes' rows go first), and the space given back to the file system (incremental
//! vacuum), so a busy fleet's journal stays under `DEFAULT_JOURNAL_MAX_BYTES` whatever
//! `JOURNAL_RETENTION` would keep.

use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, Transaction};

use super::store::storage;
use fluxrelay_core::ports::QueueError;

/// About 1.2 days of a 300-repository, 20-cluster, 2,000-pushes-a-day fleet (51.5 MiB a
/// day, printed by the `embedded_journal` test); a fleet a sixth that busy keeps the week.
pub const DEFAULT_JOURNAL_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// A prune takes the journal down to this share of the cap, so the next one is thousands
/// of writes away instead of on every write.
const PRUNE_TO_PERCENT: u64 = 90;
/// Over the cheap bound, measure the journal exactly on one write in this many: `dbstat`
/// reads every page of the journal, and a few writes past the cap cost a few kilobytes.
const MEASURE_EVERY: u64 = 64;
/// Free pages are kept for reuse up to a prune's slack (what the writes after a prune fill
/// again, so a journal at its cap does not shrink and regrow the file over and over) and at
/// least this much (a busy queue frees and reuses pages all the time). Beyond that they are
/// given back, at most `RECLAIM_PAGES` per write so one write never moves the whole file.
const KEEP_FREE_MIN_BYTES: u64 = 1024 * 1024;
const RECLAIM_PAGES: u64 = 1024;

/// The journal's table and indexes, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JournalStats {
    pub rows: u64,
    /// Pages of the journal's table and its indexes, in bytes.
    pub bytes: u64,
}

/// The cap and the count of writes since the journal was last measured.
#[derive(Debug)]
pub(super) struct JournalCap {
    max_bytes: AtomicU64,
    writes_over_bound: AtomicU64,
}

impl JournalCap {
    pub(super) fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes: AtomicU64::new(max_bytes),
            writes_over_bound: AtomicU64::new(0),
        }
    }

    pub(super) fn set_max_bytes(&self, max_bytes: u64) {
        self.max_bytes.store(max_bytes, Ordering::Relaxed);
        // Measure on the next write, not up to `MEASURE_EVERY` writes later.
        self.writes_over_bound.store(0, Ordering::Relaxed);
    }

    pub(super) fn max_bytes(&self) -> u64 {
        self.max_bytes.load(Ordering::Relaxed)
    }

    /// Free space worth keeping for the next writes: a prune's slack, at least 1 MiB.
    pub(super) fn keep_free_bytes(&self) -> u64 {
        (self.max_bytes() / 100 * (100 - PRUNE_TO_PERCENT)).max(KEEP_FREE_MIN_BYTES)
    }

    /// Delete the oldest pushes if the journal is over the cap; returns the rows deleted.
    /// Cheap on almost every write: the file's used pages (two header reads) bound the
    /// journal from above, and only a file over the cap has the journal measured.
    pub(super) fn enforce(&self, transaction: &Transaction<'_>) -> Result<u64, QueueError> {
        let max_bytes = self.max_bytes();
        if used_bytes(transaction)? <= max_bytes {
            self.writes_over_bound.store(0, Ordering::Relaxed);
            return Ok(0);
        }
        let writes = self.writes_over_bound.fetch_add(1, Ordering::Relaxed);
        if !writes.is_multiple_of(MEASURE_EVERY) {
            return Ok(0);
        }
        let bytes = journal_bytes(transaction)?;
        if bytes <= max_bytes {
            return Ok(0);
        }
        let target = max_bytes / 100 * PRUNE_TO_PERCENT;
        delete_oldest_pushes(transaction, bytes, target)
    }
}

/// Delete whole pushes, oldest first (by their first row), about enough rows to bring the
/// journal from `bytes` to `target`: rows are taken as equally large, and the next check
/// prunes again if that was not enough.
fn delete_oldest_pushes(
    transaction: &Transaction<'_>,
    bytes: u64,
    target: u64,
) -> Result<u64, QueueError> {
    let rows: u64 = transaction
        .query_row("SELECT COUNT(*) FROM journal", [], |row| row.get(0))
        .map_err(storage("count journal rows"))?;
    let excess = bytes.saturating_sub(target);
    let to_delete = u128::from(rows) * u128::from(excess) / u128::from(bytes.max(1));
    let to_delete = i64::try_from(to_delete).unwrap_or(i64::MAX).max(1);
    let deleted = transaction
        .execute(
            "DELETE FROM journal WHERE key IN (
                 SELECT key FROM journal WHERE id <= COALESCE(
                     (SELECT id FROM journal ORDER BY id LIMIT 1 OFFSET ?1 - 1),
                     (SELECT MAX(id) FROM journal)))",
            [to_delete],
        )
        .map_err(storage("delete the oldest pushes from the journal"))?;
    Ok(u64::try_from(deleted).unwrap_or(u64::MAX))
}

/// Give free pages back to the file system once there are more than `keep_free_bytes`
/// (deleted pushes after the cap was lowered, a drained backlog, an upgraded file). Needs
/// `auto_vacuum = INCREMENTAL` (schema step 3); a no-op otherwise.
pub(super) fn reclaim(
    transaction: &Transaction<'_>,
    keep_free_bytes: u64,
) -> Result<(), QueueError> {
    let (free, page_size): (u64, u64) = transaction
        .prepare_cached(
            "SELECT freelist_count, page_size FROM pragma_freelist_count(), pragma_page_size()",
        )
        .and_then(|mut statement| statement.query_row([], |row| Ok((row.get(0)?, row.get(1)?))))
        .map_err(storage("read free pages"))?;
    let keep = keep_free_bytes / page_size.max(1);
    if free <= keep {
        return Ok(());
    }
    let pages = (free - keep).min(RECLAIM_PAGES);
    // One page per step: the pragma must be run to completion, not executed once.
    transaction
        .prepare(&format!("PRAGMA incremental_vacuum({pages})"))
        .and_then(|mut statement| {
            let mut rows = statement.query([])?;
            while rows.next()?.is_some() {}
            Ok(())
        })
        .map_err(storage("incremental vacuum"))
}

pub(super) fn stats(connection: &Connection) -> Result<JournalStats, QueueError> {
    let rows = connection
        .query_row("SELECT COUNT(*) FROM journal", [], |row| row.get(0))
        .map_err(storage("count journal rows"))?;
    Ok(JournalStats {
        rows,
        bytes: journal_bytes(connection)?,
    })
}

/// Pages in use in the whole file, in bytes: an upper bound on the journal's, from the
/// header alone.
fn used_bytes(connection: &Connection) -> Result<u64, QueueError> {
    connection
        .prepare_cached(
            "SELECT (page_count - freelist_count) * page_size
             FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()",
        )
        .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
        .map_err(storage("read the file's used pages"))
}

/// The pages of the journal's table and indexes (the bundled SQLite has `dbstat`).
fn journal_bytes(connection: &Connection) -> Result<u64, QueueError> {
    connection
        .query_row(
            "SELECT COALESCE(SUM(pgsize), 0) FROM dbstat('main', 1)
             WHERE name IN (SELECT name FROM sqlite_schema WHERE tbl_name = 'journal')",
            [],
            |row| row.get(0),
        )
        .map_err(storage("measure the journal"))
}
