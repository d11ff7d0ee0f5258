//! The SQL of the embedded queue: schema and one function per operation. Every function runs
//! inside a transaction its caller owns and commits. Times are milliseconds since the Unix
//! epoch; a message with `visible_at > now` is in flight, and enqueued messages start at
//! `visible_at = 0` so a clock that steps backwards never hides a new message.

use std::collections::BTreeSet;

use fluxrelay_core::ports::QueueError;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::journal;
use super::{DeadLetter, Depth, NewMessage, Receipt, Received, SendOutcome};
use fluxrelay_core::ports::DeadLetterReason;

/// Stored in `PRAGMA user_version`; bump it with a migration step in `migrate`.
pub(super) const SCHEMA_VERSION: i64 = 5;

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

/// `message_groups`: per group with messages, what a receive needs without reading the
/// group's messages: its oldest message (`head_id`) and the latest time any of them is
/// hidden until (`hidden_until`, 0 when none ever was). A group is deliverable when
/// `hidden_until <= now`. Before it, a receive walked the queue message by message asking
/// of each whether its group was blocked: 100,000 messages behind one in-flight message
/// took 65 ms to answer "nothing", and every delayed retry of an outage was such a walk's
/// step (BENCHMARKS.md, "A receive that does not grow with what is blocked").
///
/// `messages_hidden` holds only messages ever hidden (`visible_at > 0`): a new message is
/// not written to it, and a group's `hidden_until` is its last entry.
const SCHEMA_V4: &str = "
CREATE TABLE message_groups (
    queue        TEXT NOT NULL,
    group_id     TEXT NOT NULL,
    head_id      INTEGER NOT NULL,
    hidden_until INTEGER NOT NULL,
    PRIMARY KEY (queue, group_id)
) WITHOUT ROWID;
CREATE INDEX message_groups_ready ON message_groups (queue, hidden_until, head_id);
DROP INDEX IF EXISTS messages_in_order;
DROP INDEX IF EXISTS messages_in_flight;
CREATE INDEX messages_by_group ON messages (queue, group_id, id);
CREATE INDEX messages_hidden ON messages (queue, group_id, visible_at) WHERE visible_at > 0;
";

/// `dedup_unchecked`: sent with deduplication and not yet received. A send only reads the
/// `dedup` table; the first receive checks the message's id against it and records the id
/// (or drops the message as a duplicate). So a webhook's `202` waits for its message only,
/// not for a row at a random place of the deduplication table: half the bytes each durable
/// push wrote (BENCHMARKS.md, "A burst's webhooks first"). Messages of earlier versions
/// were recorded when sent (0).
const SCHEMA_V5: &str = "
ALTER TABLE messages ADD COLUMN dedup_unchecked INTEGER NOT NULL DEFAULT 0;
";

/// What `message_groups` must hold, read from the messages themselves.
const GROUPS_FROM_MESSAGES: &str =
    "SELECT queue, group_id, MIN(id), MAX(0, MAX(visible_at)) FROM messages
     GROUP BY queue, group_id";

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
    let steps = [
        (1, SCHEMA_V1),
        (2, SCHEMA_V2),
        (3, SCHEMA_V3),
        (4, SCHEMA_V4),
        (5, SCHEMA_V5),
    ];
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
    check_groups(&transaction)?;
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

/// Make `message_groups` say what the messages say, checked on every open: a message whose
/// group had no row would never be delivered. Filled here when the table is new (the
/// version 4 step); rebuilt, and said so, if it ever disagrees (a file edited by hand).
/// Reads every message once, as releasing the leases at start does.
fn check_groups(transaction: &Transaction<'_>) -> Result<(), QueueError> {
    let disagree: bool = transaction
        .query_row(
            &format!(
                "SELECT EXISTS ({GROUPS_FROM_MESSAGES}
                     EXCEPT SELECT queue, group_id, head_id, hidden_until FROM message_groups)
                 OR EXISTS (SELECT queue, group_id FROM message_groups
                     EXCEPT SELECT queue, group_id FROM messages)"
            ),
            [],
            |row| row.get(0),
        )
        .map_err(storage("check message groups"))?;
    if !disagree {
        return Ok(());
    }
    let rows: i64 = transaction
        .query_row("SELECT COUNT(*) FROM message_groups", [], |row| row.get(0))
        .map_err(storage("count message groups"))?;
    if rows > 0 {
        tracing::warn!(
            outcome = "queue_groups_rebuilt",
            "embedded queue: message groups disagreed with their messages; rebuilt"
        );
    }
    transaction
        .execute_batch(&format!(
            "DELETE FROM message_groups;
             INSERT INTO message_groups (queue, group_id, head_id, hidden_until)
                 {GROUPS_FROM_MESSAGES};"
        ))
        .map_err(storage("rebuild message groups"))
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
    let id = transaction.last_insert_rowid();
    join_group(
        transaction,
        queue,
        &message.group_id,
        id,
        now.saturating_add(delay_ms.max(0)),
    )
}

/// Enqueue one message unless its deduplication id was first seen less than `window_ms` ago
/// by a receive. The id is recorded by the message's first receive, which drops it if an
/// earlier message with the same id was received first (see `receive`): a duplicate of a
/// message still waiting is enqueued and never delivered, as SQS FIFO answers one.
/// Validation happens here, per entry, so a bad entry rolls back the entries before it.
pub(super) fn send(
    transaction: &Transaction<'_>,
    queue: &str,
    message: &NewMessage,
    now: i64,
    window_ms: i64,
) -> Result<SendOutcome, QueueError> {
    validate(queue, message)?;
    if seen_within(transaction, queue, &message.dedup_id, now, window_ms)? {
        return Ok(SendOutcome::Duplicate);
    }
    transaction
        .prepare_cached(
            "INSERT INTO messages
                 (queue, group_id, dedup_id, body, first_enqueued_at, visible_at, receive_count,
                  dedup_unchecked)
             VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, 1)",
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
    let id = transaction.last_insert_rowid();
    join_group(transaction, queue, &message.group_id, id, 0)?;
    Ok(SendOutcome::Enqueued)
}

/// Enter a new message, `id`, in its group: a new group's oldest message, or a later
/// hiding of a group that has messages (ids only grow, so its oldest stays). A message
/// joining a group that already has one writes nothing.
fn join_group(
    transaction: &Transaction<'_>,
    queue: &str,
    group_id: &str,
    id: i64,
    visible_at: i64,
) -> Result<(), QueueError> {
    transaction
        .prepare_cached(
            "INSERT INTO message_groups (queue, group_id, head_id, hidden_until)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (queue, group_id) DO UPDATE SET hidden_until = excluded.hidden_until
             WHERE excluded.hidden_until > message_groups.hidden_until",
        )
        .and_then(|mut statement| {
            statement.execute(params![queue, group_id, id, visible_at.max(0)])
        })
        .map_err(storage("enter the message in its group"))?;
    Ok(())
}

/// Make a group's row true again after its messages changed (deleted, hidden, shown):
/// its oldest message and its latest hiding, each one index lookup; no row once the group
/// has no messages. Writes nothing when neither changed. `true`: the group still holds a
/// message (one its consumer may be waiting for).
pub(super) fn refresh_group(
    transaction: &Transaction<'_>,
    queue: &str,
    group_id: &str,
) -> Result<bool, QueueError> {
    let head: Option<i64> = transaction
        .prepare_cached("SELECT MIN(id) FROM messages WHERE queue = ?1 AND group_id = ?2")
        .and_then(|mut statement| statement.query_row(params![queue, group_id], |row| row.get(0)))
        .map_err(storage("find a group's oldest message"))?;
    let Some(head) = head else {
        transaction
            .prepare_cached("DELETE FROM message_groups WHERE queue = ?1 AND group_id = ?2")
            .and_then(|mut statement| statement.execute(params![queue, group_id]))
            .map_err(storage("forget an empty group"))?;
        return Ok(false);
    };
    let hidden_until: i64 = transaction
        .prepare_cached(
            "SELECT COALESCE(MAX(visible_at), 0) FROM messages
             WHERE queue = ?1 AND group_id = ?2 AND visible_at > 0",
        )
        .and_then(|mut statement| statement.query_row(params![queue, group_id], |row| row.get(0)))
        .map_err(storage("find a group's latest hiding"))?;
    transaction
        .prepare_cached(
            "INSERT INTO message_groups (queue, group_id, head_id, hidden_until)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (queue, group_id) DO UPDATE
                 SET head_id = excluded.head_id, hidden_until = excluded.hidden_until
             WHERE message_groups.head_id != excluded.head_id
                OR message_groups.hidden_until != excluded.hidden_until",
        )
        .and_then(|mut statement| statement.execute(params![queue, group_id, head, hidden_until]))
        .map_err(storage("update a group"))?;
    Ok(true)
}

/// The groups one write changed, each refreshed once after it (a batch's deletes are
/// mostly of a few groups; released leases and redrives can touch many).
#[derive(Debug, Default)]
pub(super) struct TouchedGroups(BTreeSet<(String, String)>);

impl TouchedGroups {
    pub(super) fn add(&mut self, group: (String, String)) {
        self.0.insert(group);
    }

    /// Refresh each group once; `true`: one of them still holds a message.
    pub(super) fn refresh(self, transaction: &Transaction<'_>) -> Result<bool, QueueError> {
        let mut any_left = false;
        for (queue, group_id) in &self.0 {
            any_left |= refresh_group(transaction, queue, group_id)?;
        }
        Ok(any_left)
    }
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

/// The groups a receive takes from, in the order it takes them: those with nothing
/// hidden by their oldest message, then those whose hiding has passed, in the order it
/// passed. Read from `message_groups_ready` in its order: however many messages wait
/// behind hidden ones, they are never read.
pub(super) const READY_GROUPS: &str = "SELECT group_id FROM message_groups
     WHERE queue = ?1 AND hidden_until <= ?2
     ORDER BY hidden_until, head_id
     LIMIT ?3";

/// One group's oldest messages, in order.
pub(super) const GROUP_MESSAGES: &str =
    "SELECT id, body, receive_count, first_enqueued_at, dedup_id, dedup_unchecked FROM messages
     WHERE queue = ?1 AND group_id = ?2
     ORDER BY id
     LIMIT ?3";

/// Whether a receive on `queue` at `now` would take a message, read without the write lock.
pub(super) fn deliverable(
    connection: &Connection,
    queue: &str,
    now: i64,
) -> Result<bool, QueueError> {
    connection
        .prepare_cached(READY_GROUPS)
        .and_then(|mut statement| statement.exists(params![queue, now, 1]))
        .map_err(storage("look for deliverable messages"))
}

/// Up to `max` messages of groups with nothing hidden, a group's oldest first and as many
/// of one group as there is room for before the next, as SQS FIFO does ("attempts to
/// return as many messages with the same message group ID as possible"); each is hidden
/// until `now + visibility_ms` and its receive count incremented, and so is its group.
///
/// A message received for the first time since it was sent with deduplication
/// (`dedup_unchecked`) is checked here: if an earlier message with its id was first
/// enqueued less than `window_ms` before it, it is deleted instead of delivered; otherwise
/// its id is recorded from its own enqueue time, so the window is the one a check at send
/// would have applied. A receive can then return fewer messages than it had room for.
pub(super) fn receive(
    transaction: &Transaction<'_>,
    queue: &str,
    max: usize,
    now: i64,
    visibility_ms: i64,
    window_ms: i64,
) -> Result<Vec<Received>, QueueError> {
    let limit = i64::try_from(max).unwrap_or(i64::MAX);
    let groups: Vec<String> = transaction
        .prepare_cached(READY_GROUPS)
        .and_then(|mut statement| {
            statement
                .query_map(params![queue, now, limit], |row| row.get(0))?
                .collect()
        })
        .map_err(storage("select groups to receive from"))?;
    let visible_at = now.saturating_add(visibility_ms);
    let mut received: Vec<Received> = Vec::new();
    for group_id in groups {
        let room = max.saturating_sub(received.len());
        if room == 0 {
            break;
        }
        let room = i64::try_from(room).unwrap_or(i64::MAX);
        let selected = transaction
            .prepare_cached(GROUP_MESSAGES)
            .and_then(|mut statement| {
                statement
                    .query_map(params![queue, group_id, room], |row| {
                        let id: i64 = row.get(0)?;
                        let receive_count = row.get::<_, u32>(2)?.saturating_add(1);
                        let received = Received {
                            id,
                            receipt: Receipt {
                                message_id: id,
                                receive_count,
                            },
                            group_id: group_id.clone(),
                            body: row.get(1)?,
                            receive_count,
                            first_enqueued_at_ms: row.get(3)?,
                        };
                        let unchecked = row.get::<_, bool>(5)?.then(|| row.get::<_, String>(4));
                        Ok((received, unchecked.transpose()?))
                    })?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(storage("select messages to receive"))?;
        if selected.is_empty() {
            // A row without messages would be taken again by every receive: forget it.
            refresh_group(transaction, queue, &group_id)?;
            continue;
        }
        let mut taken = Vec::with_capacity(selected.len());
        let mut dropped_any = false;
        for (message, unchecked) in selected {
            if let Some(dedup_id) = unchecked
                && is_duplicate(transaction, queue, &dedup_id, &message, window_ms)?
            {
                transaction
                    .prepare_cached("DELETE FROM messages WHERE id = ?1")
                    .and_then(|mut statement| statement.execute(params![message.id]))
                    .map_err(storage("drop a duplicate message"))?;
                dropped_any = true;
                continue;
            }
            transaction
                .prepare_cached(
                    "UPDATE messages SET receive_count = ?2, visible_at = ?3, leased = 1,
                         dedup_unchecked = 0
                     WHERE id = ?1",
                )
                .and_then(|mut statement| {
                    statement.execute(params![message.id, message.receive_count, visible_at])
                })
                .map_err(storage("mark message received"))?;
            taken.push(message);
        }
        if dropped_any {
            // The group's oldest message may have been one dropped.
            refresh_group(transaction, queue, &group_id)?;
        } else {
            // The group was deliverable, so none of its messages was hidden past `now`:
            // the ones just taken hide it the longest.
            transaction
                .prepare_cached(
                    "UPDATE message_groups SET hidden_until = ?3
                     WHERE queue = ?1 AND group_id = ?2",
                )
                .and_then(|mut statement| {
                    statement.execute(params![queue, group_id, visible_at.max(0)])
                })
                .map_err(storage("mark group received"))?;
        }
        received.extend(taken);
    }
    Ok(received)
}

/// Whether `message` repeats an id an earlier message of `queue` was first enqueued with
/// less than `window_ms` before it; if not, its id is recorded (from its own enqueue, so a
/// later duplicate is measured from it).
fn is_duplicate(
    transaction: &Transaction<'_>,
    queue: &str,
    dedup_id: &str,
    message: &Received,
    window_ms: i64,
) -> Result<bool, QueueError> {
    let enqueued = message.first_enqueued_at_ms;
    if seen_within(transaction, queue, dedup_id, enqueued, window_ms)? {
        return Ok(true);
    }
    transaction
        .prepare_cached(
            "INSERT INTO dedup (queue, dedup_id, first_seen_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (queue, dedup_id) DO UPDATE SET first_seen_at = excluded.first_seen_at",
        )
        .and_then(|mut statement| statement.execute(params![queue, dedup_id, enqueued]))
        .map_err(storage("record deduplication id"))?;
    Ok(false)
}

/// Whether `dedup_id` was recorded on `queue` less than `window_ms` before `at` (a read:
/// the id is recorded by a message's first receive, `is_duplicate`).
fn seen_within(
    transaction: &Transaction<'_>,
    queue: &str,
    dedup_id: &str,
    at: i64,
    window_ms: i64,
) -> Result<bool, QueueError> {
    let first_seen: Option<i64> = transaction
        .prepare_cached("SELECT first_seen_at FROM dedup WHERE queue = ?1 AND dedup_id = ?2")
        .and_then(|mut statement| {
            statement
                .query_row(params![queue, dedup_id], |row| row.get(0))
                .optional()
        })
        .map_err(storage("read deduplication id"))?;
    Ok(first_seen.is_some_and(|seen| at.saturating_sub(seen) < window_ms))
}

fn stale(receipt: &Receipt) -> QueueError {
    QueueError::new(format!(
        "embedded queue: receipt {receipt} is stale (the message was deleted or received again)"
    ))
}

/// Delete the message delivered under `receipt`; its group is returned for the caller to
/// refresh once the write's other deletes are done.
pub(super) fn delete(
    transaction: &Transaction<'_>,
    receipt: &Receipt,
) -> Result<(String, String), QueueError> {
    transaction
        .prepare_cached(
            "DELETE FROM messages WHERE id = ?1 AND receive_count = ?2
             RETURNING queue, group_id",
        )
        .and_then(|mut statement| {
            statement
                .query_row(params![receipt.message_id, receipt.receive_count], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()
        })
        .map_err(storage("delete message"))?
        .ok_or_else(|| stale(receipt))
}

/// Like SQS, only a message still in flight under this receipt can have its visibility changed.
pub(super) fn change_visibility(
    transaction: &Transaction<'_>,
    receipt: &Receipt,
    now: i64,
    visibility_ms: i64,
) -> Result<(), QueueError> {
    let changed: Option<(String, String)> = transaction
        .prepare_cached(
            "UPDATE messages SET visible_at = ?3, leased = 0
             WHERE id = ?1 AND receive_count = ?2 AND visible_at > ?4
             RETURNING queue, group_id",
        )
        .and_then(|mut statement| {
            statement
                .query_row(
                    params![
                        receipt.message_id,
                        receipt.receive_count,
                        now.saturating_add(visibility_ms),
                        now
                    ],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
        })
        .map_err(storage("change visibility"))?;
    let Some((queue, group_id)) = changed else {
        return Err(QueueError::new(format!(
            "embedded queue: receipt {receipt} is stale or its message is no longer in flight"
        )));
    };
    refresh_group(transaction, &queue, &group_id).map(drop)
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
    let (queue, group_id): (String, String) = transaction
        .query_row(
            "DELETE FROM messages WHERE id = ?1 RETURNING queue, group_id",
            [message_id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(storage("delete dead-lettered message"))?;
    refresh_group(transaction, &queue, &group_id)?;
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
    let groups: Vec<String> = transaction
        .prepare(
            "SELECT DISTINCT group_id FROM dead_letters
             WHERE queue = ?1 AND (?2 IS NULL OR cluster = ?2)",
        )
        .and_then(|mut statement| {
            statement
                .query_map(params![queue, cluster], |row| row.get(0))?
                .collect()
        })
        .map_err(storage("find the groups of dead letters to redrive"))?;
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
    let mut touched = TouchedGroups::default();
    for group_id in groups {
        touched.add((queue.to_string(), group_id));
    }
    touched.refresh(transaction)?;
    Ok(moved)
}

/// Make every leased message of `queue` visible now: the consumers that held them are gone
/// (the caller owns the queue exclusively). Messages waiting out a retry delay stay hidden.
pub(super) fn release_leases(
    transaction: &Transaction<'_>,
    queue: &str,
    now: i64,
) -> Result<usize, QueueError> {
    let released: Vec<String> = transaction
        .prepare(
            "UPDATE messages SET visible_at = ?2, leased = 0
             WHERE queue = ?1 AND leased = 1 AND visible_at > ?2
             RETURNING group_id",
        )
        .and_then(|mut statement| {
            statement
                .query_map(params![queue, now], |row| row.get(0))?
                .collect()
        })
        .map_err(storage("release leases"))?;
    let mut touched = TouchedGroups::default();
    for group_id in &released {
        touched.add((queue.to_string(), group_id.clone()));
    }
    touched.refresh(transaction)?;
    Ok(released.len())
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
            // Each count from an index alone: every message's, and the hidden ones'.
            "SELECT (SELECT COUNT(*) FROM messages WHERE queue = ?1),
                    (SELECT COUNT(*) FROM messages
                     WHERE queue = ?1 AND visible_at > 0 AND visible_at > ?2)",
            params![queue, now],
            |row| {
                let all: u64 = row.get(0)?;
                let in_flight: u64 = row.get(1)?;
                Ok(Depth {
                    visible: all.saturating_sub(in_flight),
                    in_flight,
                })
            },
        )
        .map_err(storage("count messages"))
}
