//! The journal's size: bounded from above by what was written since it was last measured,
//! measured (`dbstat`, the journal's own pages) only when that bound passes the cap, capped
//! (the oldest pushes' rows go first, a chunk with each write), and the space given back to
//! the file system (incremental vacuum), so a busy fleet's journal stays about under
//! `DEFAULT_JOURNAL_MAX_BYTES` whatever `JOURNAL_RETENTION` would keep.

use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, Transaction};

use super::journal::JournalEntry;
use super::store::storage;
use fluxrelay_core::ports::QueueError;

/// About 1.2 days of a 300-repository, 20-cluster, 2,000-pushes-a-day fleet (51.5 MiB a
/// day, printed by the `embedded_journal` test); a fleet a sixth that busy keeps the week.
pub const DEFAULT_JOURNAL_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// A prune takes the journal down to this share of the cap, so the next one is thousands
/// of writes away instead of on every write.
const PRUNE_TO_PERCENT: u64 = 90;
/// A write deletes at most this many of the oldest rows (whole pushes, so a few more). A
/// write in a savepoint (dispatch's settle, a group run again) copies every page it changes
/// into the statement journal, in memory: one delete of a tenth of a 64 MiB journal, whose
/// hashed keys are spread over its index, took serve's peak RSS from 22 to 44 MiB and held
/// its group 126 ms (BENCHMARKS.md, "Pruning the journal a chunk at a time").
pub const PRUNE_CHUNK_ROWS: u64 = 256;
/// After a measurement under the cap, the next one waits for at least this share of the cap
/// to be written (estimated): `dbstat` reads every page of the journal, 25 ms at 64 MiB.
const MEASURE_STEP_PERCENT: u64 = 1;
/// The estimate of what a journal row adds, from above: the key is stored twice (the table
/// and `journal_by_key`), the time and id three times with their headers, and a b-tree's
/// pages are at least about half full.
const ROW_OVERHEAD_BYTES: u64 = 64;
const PAGE_FILL_DIVISOR: u64 = 2;
/// Free pages are kept for reuse up to a prune's slack (what the writes after a prune fill
/// again, so a journal at its cap does not shrink and regrow the file over and over) and at
/// least this much (a busy queue frees and reuses pages all the time). Beyond that they are
/// given back, at most `RECLAIM_PAGES` per write: each page moved is copied once more in a
/// savepoint, as a prune's are (`PRUNE_CHUNK_ROWS`).
const KEEP_FREE_MIN_BYTES: u64 = 1024 * 1024;
const RECLAIM_PAGES: u64 = 256;
/// `JournalCap::bound` before the first measurement.
const UNKNOWN: u64 = u64::MAX;

/// The journal's table and indexes, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JournalStats {
    pub rows: u64,
    /// Pages of the journal's table and its indexes, in bytes.
    pub bytes: u64,
}

/// The cap, what the journal holds at most (estimated), and the rows still to delete.
/// Only the writer thread changes them. A write run again after its group failed counts
/// twice: its bytes bring the next measurement forward, and rows it deleted and saw rolled
/// back are found by the measurement after the prune.
#[derive(Debug)]
pub(super) struct JournalCap {
    max_bytes: AtomicU64,
    /// The last measurement (or the file's used pages) plus an estimate from above of what
    /// was written since.
    bound: AtomicU64,
    rows_owed: AtomicU64,
    measurements: AtomicU64,
    /// The file's page size, read once at open: a WAL database cannot change it.
    page_size: u64,
}

impl JournalCap {
    pub(super) fn new(max_bytes: u64, page_size: u64) -> Self {
        Self {
            max_bytes: AtomicU64::new(max_bytes),
            bound: AtomicU64::new(UNKNOWN),
            rows_owed: AtomicU64::new(0),
            measurements: AtomicU64::new(0),
            page_size: page_size.max(1),
        }
    }

    pub(super) fn set_max_bytes(&self, max_bytes: u64) {
        self.max_bytes.store(max_bytes, Ordering::Relaxed);
        // Measured again on the next write, against the new cap.
        self.bound.store(UNKNOWN, Ordering::Relaxed);
        self.rows_owed.store(0, Ordering::Relaxed);
    }

    pub(super) fn max_bytes(&self) -> u64 {
        self.max_bytes.load(Ordering::Relaxed)
    }

    /// How often the journal was measured (`dbstat`) to enforce the cap.
    pub(super) fn measurements(&self) -> u64 {
        self.measurements.load(Ordering::Relaxed)
    }

    /// Free pages worth keeping for the next writes: a prune's slack, at least 1 MiB.
    pub(super) fn keep_free_pages(&self) -> u64 {
        (self.max_bytes() / 100 * (100 - PRUNE_TO_PERCENT)).max(KEEP_FREE_MIN_BYTES)
            / self.page_size
    }

    /// After appending `entries`: delete the next chunk of the oldest pushes if a prune is
    /// under way, or measure the journal if it may be over the cap and start one; returns
    /// the rows deleted. Cheap on almost every write: the estimate, then the file's used
    /// pages (two header reads), bound the journal from above, and only when both exceed
    /// the cap is the journal measured.
    pub(super) fn enforce(
        &self,
        transaction: &Transaction<'_>,
        entries: &[JournalEntry],
    ) -> Result<u64, QueueError> {
        let max_bytes = self.max_bytes();
        if self.rows_owed.load(Ordering::Relaxed) > 0 {
            return self.delete_chunk(transaction, max_bytes);
        }
        let bound = self
            .bound
            .load(Ordering::Relaxed)
            .saturating_add(estimated_bytes(entries));
        if bound <= max_bytes {
            self.bound.store(bound, Ordering::Relaxed);
            return Ok(0);
        }
        let used = used_bytes(transaction, self.page_size)?;
        if used <= max_bytes {
            self.bound.store(used, Ordering::Relaxed);
            return Ok(0);
        }
        self.measurements.fetch_add(1, Ordering::Relaxed);
        let bytes = journal_bytes(transaction)?;
        if bytes <= max_bytes {
            let step = max_bytes / 100 * MEASURE_STEP_PERCENT;
            self.bound
                .store(bytes.min(max_bytes.saturating_sub(step)), Ordering::Relaxed);
            return Ok(0);
        }
        let rows = journal_rows(transaction)?;
        // Rows taken as equally large; the measurement after the prune starts another if
        // that was not enough.
        let target = max_bytes / 100 * PRUNE_TO_PERCENT;
        let excess = bytes.saturating_sub(target);
        let owed = u128::from(rows) * u128::from(excess) / u128::from(bytes.max(1));
        self.rows_owed.store(
            u64::try_from(owed).unwrap_or(u64::MAX).max(1),
            Ordering::Relaxed,
        );
        self.delete_chunk(transaction, max_bytes)
    }

    fn delete_chunk(
        &self,
        transaction: &Transaction<'_>,
        max_bytes: u64,
    ) -> Result<u64, QueueError> {
        let owed = self.rows_owed.load(Ordering::Relaxed);
        let deleted = delete_oldest_pushes(transaction, owed.min(PRUNE_CHUNK_ROWS))?;
        // Nothing left to delete ends the prune too: an empty journal owes nothing.
        let owed = if deleted == 0 {
            0
        } else {
            owed.saturating_sub(deleted)
        };
        self.rows_owed.store(owed, Ordering::Relaxed);
        if owed == 0 {
            // Measured again on the next write.
            self.bound.store(max_bytes, Ordering::Relaxed);
        }
        Ok(deleted)
    }
}

/// What `entries` add to the journal at most, about: their text and each row's overhead,
/// over pages about half full. Folding skips into a summary adds less than this.
fn estimated_bytes(entries: &[JournalEntry]) -> u64 {
    let text: usize = entries
        .iter()
        .map(|entry| {
            2 * entry.key.len()
                + entry.cluster.as_ref().map_or(0, String::len)
                + entry.stage.len()
                + entry.detail.len()
        })
        .sum();
    let rows = u64::try_from(entries.len()).unwrap_or(u64::MAX);
    (u64::try_from(text).unwrap_or(u64::MAX))
        .saturating_add(rows.saturating_mul(ROW_OVERHEAD_BYTES))
        .saturating_mul(PAGE_FILL_DIVISOR)
}

/// Delete the oldest `rows` rows (by id) and every other row of their pushes, so a push is
/// kept whole or not at all; returns the rows deleted.
fn delete_oldest_pushes(transaction: &Transaction<'_>, rows: u64) -> Result<u64, QueueError> {
    let rows = i64::try_from(rows).unwrap_or(i64::MAX).max(1);
    let deleted = transaction
        .prepare_cached(
            "DELETE FROM journal WHERE key IN (
                 SELECT key FROM journal WHERE id <= COALESCE(
                     (SELECT id FROM journal ORDER BY id LIMIT 1 OFFSET ?1 - 1),
                     (SELECT MAX(id) FROM journal)))",
        )
        .and_then(|mut statement| statement.execute([rows]))
        .map_err(storage("delete the oldest pushes from the journal"))?;
    Ok(u64::try_from(deleted).unwrap_or(u64::MAX))
}

/// Give free pages back to the file system once there are more than `keep_free_pages`
/// (deleted pushes after the cap was lowered, a drained backlog, an upgraded file). Needs
/// `auto_vacuum = INCREMENTAL` (schema step 3); a no-op otherwise.
pub(super) fn reclaim(
    transaction: &Transaction<'_>,
    keep_free_pages: u64,
) -> Result<(), QueueError> {
    let free = free_pages(transaction)?;
    if free <= keep_free_pages {
        return Ok(());
    }
    let pages = (free - keep_free_pages).min(RECLAIM_PAGES);
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
    Ok(JournalStats {
        rows: journal_rows(connection)?,
        bytes: journal_bytes(connection)?,
    })
}

fn journal_rows(connection: &Connection) -> Result<u64, QueueError> {
    connection
        .query_row("SELECT COUNT(*) FROM journal", [], |row| row.get(0))
        .map_err(storage("count journal rows"))
}

/// Pages in use in the whole file, in bytes: an upper bound on the journal's, from the
/// header alone.
fn used_bytes(connection: &Connection, page_size: u64) -> Result<u64, QueueError> {
    // Only when the estimate passes the cap: `page_count`, unlike `freelist_count`, is
    // compiled again on every run.
    let pages: u64 = connection
        .query_row("PRAGMA page_count", [], |row| row.get(0))
        .map_err(storage("read the file's pages"))?;
    Ok(pages
        .saturating_sub(free_pages(connection)?)
        .saturating_mul(page_size))
}

/// The free pages, read on every write that journals. `PRAGMA freelist_count` is one of
/// the few pragmas SQLite keeps prepared (a read of the header); the table-valued form
/// (`SELECT … FROM pragma_freelist_count(), pragma_page_size()`) compiled two `PRAGMA`
/// statements each time it ran: 1.6 % of serve's CPU at 20 clusters, where every settle
/// journals (BENCHMARKS.md, "Reading the journal's free pages without compiling").
fn free_pages(connection: &Connection) -> Result<u64, QueueError> {
    connection
        .prepare_cached("PRAGMA freelist_count")
        .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
        .map_err(storage("read free pages"))
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
