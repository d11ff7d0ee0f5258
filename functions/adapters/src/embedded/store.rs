//! The SQL of the embedded queue: schema and one function per operation. Every function runs
//! inside a transaction its caller owns and commits. Times are milliseconds since the Unix
//! epoch; a message with `visible_at > now` is in flight, and enqueued messages start at
//! `visible_at = 0` so a clock that steps backwards never hides a new message.

use fluxrelay_core::ports::QueueError;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::journal;
use super::{DeadLetter, Depth, NewMessage, Receipt, Received, SendOutcome};
use fluxrelay_core::ports::DeadLetterReason;

/// Stored in `PRAGMA user_version`; bump it with a migration step in `migrate`.
pub(super) const SCHEMA_VERSION: i64 = 3;

const SCHEMA_V1: &str = "
CREATE TABLE messages (
    id                INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: receipts stay unique
    queue             TEXT NOT NULL,
    group_id          TEXT NOT NULL,
    dedup_id          TEXT NOT NULL,
    body              TEXT NOT NULL,
    first_enqueued_at INTEGER NOT NULL,
    visible_at        INTEGER NOT NULL,
    receive_count     INTEGER NOT NULL
);
CREATE INDEX messages_in_order ON messages (queue, id);
CREATE INDEX messages_in_flight ON messages (queue, group_id, visible_at);

-- Kept after the message is deleted: the window runs from the first enqueue, as in SQS.
CREATE TABLE dedup (
    queue         TEXT NOT NULL,
    dedup_id      TEXT NOT NULL,
    first_seen_at INTEGER NOT NULL,
    PRIMARY KEY (queue, dedup_id)
) WITHOUT ROWID;
CREATE INDEX dedup_by_age ON dedup (first_seen_at);

CREATE TABLE dead_letters (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    queue             TEXT NOT NULL,
    group_id          TEXT NOT NULL,
    dedup_id          TEXT NOT NULL,
    body              TEXT NOT NULL,
    receive_count     INTEGER NOT NULL,
    first_enqueued_at INTEGER NOT NULL,
    reason            TEXT NOT NULL,
    status            INTEGER,
    cluster           TEXT,
    key               TEXT,
    dead_at           INTEGER NOT NULL
);
CREATE INDEX dead_letters_by_queue ON dead_letters (queue, cluster, id);
";

/// `leased`: hidden by a receive (a consumer holds it), as opposed to hidden by a retry
/// delay. Only leases die with the process that held them (see `release_leases`).
///
/// `journal`: what happened to each push, by key, for `fluxrelay explain`; kept for
/// `JOURNAL_RETENTION`.
const SCHEMA_V2: &str = "
ALTER TABLE messages ADD COLUMN leased INTEGER NOT NULL DEFAULT 0;
CREATE TABLE journal (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    key     TEXT NOT NULL,
    cluster TEXT,
    at      INTEGER NOT NULL,
    stage   TEXT NOT NULL,
    detail  TEXT NOT NULL
);
CREATE INDEX journal_by_key ON journal (key, id);
CREATE INDEX journal_by_age ON journal (at);
";

/// `journal.count`: how many entries a row stands for, 1 except for the skip summaries
/// (see `journal`); the step folds the existing skips into summaries.
const SCHEMA_V3: &str = "
ALTER TABLE journal ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
";

/// SQLite's code for `auto_vacuum = INCREMENTAL`.
const AUTO_VACUUM_INCREMENTAL: i64 = 2;

/// SQS FIFO limits for group and deduplication ids; keeping them makes the two paths agree.
const MAX_ID_LEN: usize = 128;

pub(super) fn storage(operation: &'static str) -> impl Fn(rusqlite::Error) -> QueueError {
    move |error| QueueError::new(format!("embedded queue: {operation}: {error}"))
}

/// Create or check the schema. Runs in an IMMEDIATE transaction so two processes opening a
/// new file at once do not both create it. Then makes sure freed pages can be given back
/// (`auto_vacuum = INCREMENTAL`): a new file gets it before its first table; an older file
/// needs one full VACUUM, after its skips were summarised (so the copy is the small one).
pub(super) fn migrate(connection: &mut Connection) -> Result<(), QueueError> {
    // Takes effect only on a file without tables yet; harmless otherwise.
    connection
        .execute_batch("PRAGMA auto_vacuum = INCREMENTAL")
        .map_err(storage("set auto_vacuum"))?;
    let transaction = connection
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(storage("begin schema transaction"))?;
    let version: i64 = transaction
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(storage("read schema version"))?;
    if version > SCHEMA_VERSION {
        return Err(QueueError::new(format!(
            "embedded queue: schema version {version} is newer than this build's \
             {SCHEMA_VERSION}; use a newer fluxrelay"
        )));
    }
    let steps = [(1, SCHEMA_V1), (2, SCHEMA_V2), (3, SCHEMA_V3)];
    for (step_version, step) in steps {
        if version < step_version {
            transaction
                .execute_batch(step)
                .map_err(storage("migrate schema"))?;
        }
    }
    if version < 3 {
        journal::summarise_existing_skips(&transaction)?;
    }
    if version != SCHEMA_VERSION {
        transaction
            .execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
            .map_err(storage("write schema version"))?;
    }
    transaction.commit().map_err(storage("commit schema"))?;
    let auto_vacuum: i64 = connection
        .query_row("PRAGMA auto_vacuum", [], |row| row.get(0))
        .map_err(storage("read auto_vacuum"))?;
    if auto_vacuum != AUTO_VACUUM_INCREMENTAL {
        // Checked on every open rather than tied to the step, so an interrupted VACUUM is
        // simply done again.
        connection
            .execute_batch("VACUUM")
            .map_err(storage("vacuum to enable incremental vacuum"))?;
    }
    Ok(())
}

fn validate(queue: &str, message: &NewMessage) -> Result<(), QueueError> {
    let fields = [
        ("queue name", queue),
        ("group id", message.group_id.as_str()),
        ("deduplication id", message.dedup_id.as_str()),
    ];
    for (field, value) in fields {
        if value.is_empty() || value.len() > MAX_ID_LEN {
            return Err(QueueError::new(format!(
                "embedded queue: {field} must be 1 to {MAX_ID_LEN} bytes, got {}",
                value.len()
            )));
        }
    }
    Ok(())
}

/// Enqueue one message, deliverable after `delay_ms`, with no deduplication and a group of
/// its own: what an SQS standard queue with a per-message delay does.
pub(super) fn send_delayed(
    transaction: &Transaction<'_>,
    queue: &str,
    message: &NewMessage,
    now: i64,
    delay_ms: i64,
) -> Result<(), QueueError> {
    validate(queue, message)?;
    transaction
        .prepare_cached(
            "INSERT INTO messages
                 (queue, group_id, dedup_id, body, first_enqueued_at, visible_at, receive_count)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                queue,
                message.group_id,
                message.dedup_id,
                message.body,
                now,
                now.saturating_add(delay_ms.max(0))
            ])
        })
        .map_err(storage("insert delayed message"))?;
    Ok(())
}

/// Enqueue one message unless its deduplication id was first seen less than `window_ms` ago.
/// Validation happens here, per entry, so a bad entry rolls back the entries before it.
pub(super) fn send(
    transaction: &Transaction<'_>,
    queue: &str,
    message: &NewMessage,
    now: i64,
    window_ms: i64,
) -> Result<SendOutcome, QueueError> {
    validate(queue, message)?;
    let first_seen: Option<i64> = transaction
        .prepare_cached("SELECT first_seen_at FROM dedup WHERE queue = ?1 AND dedup_id = ?2")
        .and_then(|mut statement| {
            statement
                .query_row(params![queue, message.dedup_id], |row| row.get(0))
                .optional()
        })
        .map_err(storage("read deduplication id"))?;
    if first_seen.is_some_and(|seen| now.saturating_sub(seen) < window_ms) {
        return Ok(SendOutcome::Duplicate);
    }
    transaction
        .prepare_cached(
            "INSERT INTO dedup (queue, dedup_id, first_seen_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (queue, dedup_id) DO UPDATE SET first_seen_at = excluded.first_seen_at",
        )
        .and_then(|mut statement| statement.execute(params![queue, message.dedup_id, now]))
        .map_err(storage("record deduplication id"))?;
    transaction
        .prepare_cached(
            "INSERT INTO messages
                 (queue, group_id, dedup_id, body, first_enqueued_at, visible_at, receive_count)
             VALUES (?1, ?2, ?3, ?4, ?5, 0, 0)",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                queue,
                message.group_id,
                message.dedup_id,
                message.body,
                now
            ])
        })
        .map_err(storage("insert message"))?;
    Ok(SendOutcome::Enqueued)
}

/// Forget deduplication ids whose window has passed, so the table stays small.
pub(super) fn prune_dedup(
    transaction: &Transaction<'_>,
    now: i64,
    window_ms: i64,
) -> Result<(), QueueError> {
    transaction
        .prepare_cached("DELETE FROM dedup WHERE first_seen_at <= ?1")
        .and_then(|mut statement| statement.execute([now.saturating_sub(window_ms)]))
        .map_err(storage("prune deduplication ids"))?;
    Ok(())
}

/// The messages a receive takes: each visible group's first messages, in order.
pub(super) const RECEIVE: &str =
    "SELECT m.id, m.group_id, m.body, m.receive_count, m.first_enqueued_at
     FROM messages m
     WHERE m.queue = ?1
       AND NOT EXISTS (SELECT 1 FROM messages f
                       WHERE f.queue = ?1 AND f.group_id = m.group_id
                         AND f.visible_at > ?2)
     ORDER BY m.id
     LIMIT ?3";

/// Whether a receive on `queue` at `now` would take a message, read without the write lock.
pub(super) fn deliverable(
    connection: &Connection,
    queue: &str,
    now: i64,
) -> Result<bool, QueueError> {
    connection
        .prepare_cached(RECEIVE)
        .and_then(|mut statement| statement.exists(params![queue, now, 1]))
        .map_err(storage("look for deliverable messages"))
}

/// The oldest messages of groups with nothing in flight, in enqueue order; each is hidden
/// until `now + visibility_ms` and its receive count incremented.
pub(super) fn receive(
    transaction: &Transaction<'_>,
    queue: &str,
    max: usize,
    now: i64,
    visibility_ms: i64,
) -> Result<Vec<Received>, QueueError> {
    let limit = i64::try_from(max).unwrap_or(i64::MAX);
    let mut received = transaction
        .prepare_cached(RECEIVE)
        .and_then(|mut statement| {
            statement
                .query_map(params![queue, now, limit], |row| {
                    let id: i64 = row.get(0)?;
                    let receive_count = row.get::<_, u32>(3)?.saturating_add(1);
                    Ok(Received {
                        id,
                        receipt: Receipt {
                            message_id: id,
                            receive_count,
                        },
                        group_id: row.get(1)?,
                        body: row.get(2)?,
                        receive_count,
                        first_enqueued_at_ms: row.get(4)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(storage("select messages to receive"))?;
    let visible_at = now.saturating_add(visibility_ms);
    for message in &mut received {
        transaction
            .prepare_cached(
                "UPDATE messages SET receive_count = ?2, visible_at = ?3, leased = 1 WHERE id = ?1",
            )
            .and_then(|mut statement| {
                statement.execute(params![message.id, message.receive_count, visible_at])
            })
            .map_err(storage("mark message received"))?;
    }
    Ok(received)
}

fn stale(receipt: &Receipt) -> QueueError {
    QueueError::new(format!(
        "embedded queue: receipt {receipt} is stale (the message was deleted or received again)"
    ))
}

pub(super) fn delete(transaction: &Transaction<'_>, receipt: &Receipt) -> Result<(), QueueError> {
    let deleted = transaction
        .prepare_cached("DELETE FROM messages WHERE id = ?1 AND receive_count = ?2")
        .and_then(|mut statement| {
            statement.execute(params![receipt.message_id, receipt.receive_count])
        })
        .map_err(storage("delete message"))?;
    if deleted == 0 {
        return Err(stale(receipt));
    }
    Ok(())
}

/// Like SQS, only a message still in flight under this receipt can have its visibility changed.
pub(super) fn change_visibility(
    transaction: &Transaction<'_>,
    receipt: &Receipt,
    now: i64,
    visibility_ms: i64,
) -> Result<(), QueueError> {
    let changed = transaction
        .prepare_cached(
            "UPDATE messages SET visible_at = ?3, leased = 0
             WHERE id = ?1 AND receive_count = ?2 AND visible_at > ?4",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                receipt.message_id,
                receipt.receive_count,
                now.saturating_add(visibility_ms),
                now
            ])
        })
        .map_err(storage("change visibility"))?;
    if changed == 0 {
        return Err(QueueError::new(format!(
            "embedded queue: receipt {receipt} is stale or its message is no longer in flight"
        )));
    }
    Ok(())
}

/// Copy the message delivered under `receipt` to the dead letters of `file_as` (queue and
/// group; `None` keeps the message's own) with `body` (a narrowed dispatch) and the reason,
/// leaving the message itself for its consumer to delete.
pub(super) fn dead_letter_copy(
    transaction: &Transaction<'_>,
    receipt: &Receipt,
    file_as: Option<(&str, &str)>,
    body: &str,
    reason: &DeadLetterReason,
    now: i64,
) -> Result<bool, QueueError> {
    let (queue, group) = file_as.unzip();
    let copied = transaction
        .execute(
            "INSERT INTO dead_letters (queue, group_id, dedup_id, body, receive_count,
                 first_enqueued_at, reason, status, cluster, key, dead_at)
             SELECT COALESCE(?9, queue), COALESCE(?10, group_id), dedup_id, ?3,
                    COALESCE(?11, receive_count), first_enqueued_at, ?4, ?5, ?6, ?7, ?8
             FROM messages WHERE id = ?1 AND receive_count = ?2",
            params![
                receipt.message_id,
                receipt.receive_count,
                body,
                reason.reason,
                reason.status,
                reason.cluster,
                reason.key,
                now,
                queue,
                group,
                reason.attempts
            ],
        )
        .map_err(storage("copy message to dead letters"))?;
    Ok(copied > 0)
}

/// Move one message to the dead letters. `receive_count = None` selects by id alone.
pub(super) fn dead_letter(
    transaction: &Transaction<'_>,
    message_id: i64,
    receive_count: Option<u32>,
    reason: &DeadLetterReason,
    now: i64,
) -> Result<bool, QueueError> {
    let moved = transaction
        .execute(
            "INSERT INTO dead_letters (queue, group_id, dedup_id, body, receive_count,
                 first_enqueued_at, reason, status, cluster, key, dead_at)
             SELECT queue, group_id, dedup_id, body, receive_count, first_enqueued_at,
                    ?3, ?4, ?5, ?6, ?7
             FROM messages WHERE id = ?1 AND (?2 IS NULL OR receive_count = ?2)",
            params![
                message_id,
                receive_count,
                reason.reason,
                reason.status,
                reason.cluster,
                reason.key,
                now
            ],
        )
        .map_err(storage("copy message to dead letters"))?;
    if moved == 0 {
        return Ok(false);
    }
    transaction
        .execute("DELETE FROM messages WHERE id = ?1", [message_id])
        .map_err(storage("delete dead-lettered message"))?;
    Ok(true)
}

pub(super) fn list_dead_letters(
    connection: &Connection,
    queue: &str,
    cluster: Option<&str>,
) -> Result<Vec<DeadLetter>, QueueError> {
    connection
        .prepare_cached(
            "SELECT id, queue, group_id, body, receive_count, first_enqueued_at,
                    reason, status, cluster, key, dead_at
             FROM dead_letters WHERE queue = ?1 AND (?2 IS NULL OR cluster = ?2)
             ORDER BY id",
        )
        .and_then(|mut statement| {
            statement
                .query_map(params![queue, cluster], |row| {
                    Ok(DeadLetter {
                        id: row.get(0)?,
                        queue: row.get(1)?,
                        group_id: row.get(2)?,
                        body: row.get(3)?,
                        receive_count: row.get(4)?,
                        first_enqueued_at_ms: row.get(5)?,
                        reason: DeadLetterReason {
                            reason: row.get(6)?,
                            status: row.get(7)?,
                            cluster: row.get(8)?,
                            key: row.get(9)?,
                            attempts: row.get(4)?,
                        },
                        dead_at_ms: row.get(10)?,
                    })
                })?
                .collect()
        })
        .map_err(storage("list dead letters"))
}

/// Move dead letters back to the tail of their queue, oldest first, as new messages. Their
/// deduplication id is new (`redrive:<dead letter id>:<original>`) and bypasses the window:
/// redriving is an operator's explicit request to deliver again.
pub(super) fn redrive(
    transaction: &Transaction<'_>,
    queue: &str,
    cluster: Option<&str>,
    now: i64,
) -> Result<usize, QueueError> {
    let moved = transaction
        .execute(
            "INSERT INTO messages
                 (queue, group_id, dedup_id, body, first_enqueued_at, visible_at, receive_count)
             SELECT queue, group_id, 'redrive:' || id || ':' || dedup_id, body, ?3, 0, 0
             FROM dead_letters WHERE queue = ?1 AND (?2 IS NULL OR cluster = ?2)
             ORDER BY id",
            params![queue, cluster, now],
        )
        .map_err(storage("redrive dead letters"))?;
    let deleted = transaction
        .execute(
            "DELETE FROM dead_letters WHERE queue = ?1 AND (?2 IS NULL OR cluster = ?2)",
            params![queue, cluster],
        )
        .map_err(storage("delete redriven dead letters"))?;
    if deleted != moved {
        return Err(QueueError::new(format!(
            "embedded queue: redrive moved {moved} messages but removed {deleted} dead letters"
        )));
    }
    Ok(moved)
}

/// Make every leased message of `queue` visible now: the consumers that held them are gone
/// (the caller owns the queue exclusively). Messages waiting out a retry delay stay hidden.
pub(super) fn release_leases(
    transaction: &Transaction<'_>,
    queue: &str,
    now: i64,
) -> Result<usize, QueueError> {
    transaction
        .execute(
            "UPDATE messages SET visible_at = ?2, leased = 0
             WHERE queue = ?1 AND leased = 1 AND visible_at > ?2",
            params![queue, now],
        )
        .map_err(storage("release leases"))
}

pub(super) fn peek(connection: &Connection, queue: &str) -> Result<Vec<String>, QueueError> {
    connection
        .prepare_cached("SELECT body FROM messages WHERE queue = ?1 ORDER BY id")
        .and_then(|mut statement| {
            statement
                .query_map([queue], |row| row.get(0))?
                .collect::<Result<Vec<String>, _>>()
        })
        .map_err(storage("peek messages"))
}

pub(super) fn dead_letter_count(connection: &Connection, queue: &str) -> Result<u64, QueueError> {
    connection
        .query_row(
            "SELECT COUNT(*) FROM dead_letters WHERE queue = ?1",
            [queue],
            |row| row.get(0),
        )
        .map_err(storage("count dead letters"))
}

/// Messages available now (ignoring group blocking, like SQS's approximate count) and in flight.
pub(super) fn depth(connection: &Connection, queue: &str, now: i64) -> Result<Depth, QueueError> {
    connection
        .query_row(
            "SELECT COALESCE(SUM(visible_at <= ?2), 0), COALESCE(SUM(visible_at > ?2), 0)
             FROM messages WHERE queue = ?1",
            params![queue, now],
            |row| {
                Ok(Depth {
                    visible: row.get(0)?,
                    in_flight: row.get(1)?,
                })
            },
        )
        .map_err(storage("count messages"))
}
