//! `fluxrelay dlq list|redrive`: dead letters with their reasons, from the embedded queue
//! (safe while `fluxrelay serve` runs: SQLite serialises the writers, and redriven
//! messages are picked up within a second) or from an SQS dead-letter queue.

use std::io::Write;
use std::path::Path;

use fluxrelay_adapters::embedded::{
    CONFIRM_QUEUE, DISPATCH_QUEUE, DeadLetter, EmbeddedQueue, INTAKE_QUEUE,
};
use fluxrelay_adapters::sqs_dlq::{self, BrowseLimits, Browser, SqsDeadLetter};
use fluxrelay_core::confirm::message::Confirmation;
use fluxrelay_core::push::{Dispatch, Push};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::serve::QUEUE_FILE;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueName {
    Dispatch,
    Intake,
    /// Confirmations whose final commit status could not be posted (a redrive posts it).
    Confirm,
}

impl QueueName {
    pub fn name(self) -> &'static str {
        match self {
            QueueName::Dispatch => DISPATCH_QUEUE,
            QueueName::Intake => INTAKE_QUEUE,
            QueueName::Confirm => CONFIRM_QUEUE,
        }
    }
}

/// One dead letter as listed, whichever queue it came from.
struct Row {
    id: String,
    /// The embedded queue's name, or the SQS dead-letter queue's URL.
    queue: String,
    dead_at: String,
    cluster: Option<String>,
    project: String,
    git_ref: String,
    status: Option<u16>,
    attempts: Option<u32>,
    key: Option<String>,
    reason: String,
}

const NO_REASON: &str = "moved by the queue's redrive policy after maxReceiveCount failed receives (no reason recorded)";

fn write_rows(rows: &[Row], as_json: bool, out: &mut impl Write) -> Result<(), String> {
    let write_error = |error: std::io::Error| format!("cannot write the listing: {error}");
    if !as_json {
        writeln!(
            out,
            "ID\tDEAD_AT\tCLUSTER\tPROJECT\tREF\tSTATUS\tATTEMPTS\tKEY\tREASON"
        )
        .map_err(write_error)?;
    }
    for row in rows {
        if as_json {
            let line = json!({
                "id": row.id,
                "queue": row.queue,
                "dead_at": row.dead_at,
                "cluster": row.cluster,
                "project": row.project,
                "ref": row.git_ref,
                "status": row.status,
                "attempts": row.attempts,
                "key": row.key,
                "reason": row.reason,
            });
            writeln!(out, "{line}").map_err(write_error)?;
        } else {
            let or_dash = |value: Option<String>| value.unwrap_or_else(|| "-".to_string());
            writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                row.id,
                row.dead_at,
                or_dash(row.cluster.clone()),
                row.project,
                row.git_ref,
                or_dash(row.status.map(|s| s.to_string())),
                or_dash(row.attempts.map(|a| a.to_string())),
                or_dash(row.key.clone()),
                row.reason
            )
            .map_err(write_error)?;
        }
    }
    Ok(())
}

// ---- the embedded queue ----

/// The embedded queue of a data directory, refusing to create one where none is.
pub(crate) fn open(data_dir: &Path) -> Result<EmbeddedQueue, String> {
    let path = data_dir.join(QUEUE_FILE);
    if !path.exists() {
        return Err(format!(
            "no embedded queue at {} (has fluxrelay serve run with this data directory?)",
            path.display()
        ));
    }
    EmbeddedQueue::open(&path).map_err(|error| error.to_string())
}

pub fn list(
    data_dir: &Path,
    queue: QueueName,
    cluster: Option<&str>,
    as_json: bool,
    out: &mut impl Write,
) -> Result<usize, String> {
    let dead_letters = open(data_dir)?
        .list_dead_letters(queue.name(), cluster)
        .map_err(|error| error.to_string())?;
    let rows: Vec<Row> = dead_letters
        .iter()
        .map(|dead| embedded_row(queue, dead))
        .collect();
    write_rows(&rows, as_json, out)?;
    Ok(rows.len())
}

fn embedded_row(queue: QueueName, dead: &DeadLetter) -> Row {
    let push = match queue {
        QueueName::Dispatch => Dispatch::from_json(&dead.body).ok().map(|d| d.push),
        QueueName::Intake => Push::from_json(&dead.body).ok(),
        QueueName::Confirm => Confirmation::from_json(&dead.body).ok().map(|c| c.push),
    };
    let (project, git_ref) = push
        .map(|push| (push.project.path, push.git_ref))
        .unwrap_or_default();
    Row {
        id: dead.id.to_string(),
        queue: dead.queue.clone(),
        dead_at: at(dead.dead_at_ms),
        cluster: dead.reason.cluster.clone(),
        project,
        git_ref,
        status: dead.reason.status,
        attempts: Some(dead.receive_count),
        key: dead.reason.key.clone(),
        reason: dead.reason.reason.clone(),
    }
}

pub fn redrive(data_dir: &Path, queue: QueueName, cluster: Option<&str>) -> Result<usize, String> {
    open(data_dir)?
        .redrive(queue.name(), cluster)
        .map_err(|error| error.to_string())
}

/// Milliseconds since the epoch as RFC 3339.
pub(crate) fn at(millis: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .ok()
        .and_then(|time| time.format(&Rfc3339).ok())
        .unwrap_or_else(|| millis.to_string())
}

// ---- an SQS dead-letter queue ----

/// SQS with the AWS configuration of the environment, as the AWS CLI has it.
pub(crate) async fn sqs_client() -> aws_sdk_sqs::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    aws_sdk_sqs::Client::new(&config)
}

fn sqs_row(queue_url: &str, dead: &SqsDeadLetter) -> Row {
    let (project, git_ref) = dead
        .push()
        .map(|push| (push.project.path, push.git_ref))
        .unwrap_or_default();
    Row {
        id: dead.message_id.clone(),
        queue: queue_url.to_string(),
        dead_at: dead.sent_at_ms.map(at).unwrap_or_else(|| "-".to_string()),
        cluster: dead.cluster(),
        project,
        git_ref,
        status: dead.reason.as_ref().and_then(|reason| reason.status),
        attempts: dead.reason.as_ref().and_then(|reason| reason.attempts),
        key: dead
            .reason
            .as_ref()
            .and_then(|reason| reason.key.clone())
            .or_else(|| dead.push().map(|push| push.key)),
        reason: dead
            .reason
            .as_ref()
            .map_or_else(|| NO_REASON.to_string(), |reason| reason.reason.clone()),
    }
}

fn wanted(dead: &SqsDeadLetter, cluster: Option<&str>) -> bool {
    cluster.is_none_or(|cluster| dead.cluster().as_deref() == Some(cluster))
}

/// The default browse limits with at most `max` messages.
pub fn sqs_limits(max: usize) -> BrowseLimits {
    BrowseLimits {
        max_messages: max,
        ..BrowseLimits::default()
    }
}

/// Tells on stderr (stdout is the list) how many dead letters a browse has received, each
/// time the count passes another 1,000.
pub(crate) fn show_progress() -> impl FnMut(usize) {
    let mut thousands = 0;
    move |received: usize| {
        if received / 1_000 > thousands {
            thousands = received / 1_000;
            eprintln!("… {received} dead letters received");
        }
    }
}

const INCOMPLETE: &str = "note: some dead letters share a FIFO group (moved by the queue's redrive policy); later ones of such a group show up once earlier ones are redriven";

pub async fn list_sqs(
    dlq_url: &str,
    cluster: Option<&str>,
    limits: BrowseLimits,
    as_json: bool,
    out: &mut impl Write,
) -> Result<usize, String> {
    let client = sqs_client().await;
    let browsed = sqs_dlq::browse(&client, dlq_url, limits, show_progress())
        .await
        .map_err(|error| error.to_string())?;
    if let Some(note) = browsed.stopped.note(browsed.messages.len()) {
        eprintln!("note: {note}");
    }
    let rows: Vec<Row> = browsed
        .messages
        .iter()
        .filter(|dead| wanted(dead, cluster))
        .map(|dead| sqs_row(dlq_url, dead))
        .collect();
    let written = write_rows(&rows, as_json, out);
    let released = sqs_dlq::release(&client, dlq_url, &browsed.messages).await;
    written?;
    released.map_err(|error| error.to_string())?;
    if browsed.maybe_incomplete {
        eprintln!("{INCOMPLETE}");
    }
    Ok(rows.len())
}

/// Redrive the wanted dead letters of `dlq_url` to `target_url` (default: the source queue
/// by the template's naming), page by page as they are received; everything else is made
/// visible again at the end. Only what is not redriven is kept in memory.
pub async fn redrive_sqs(
    dlq_url: &str,
    target_url: Option<&str>,
    cluster: Option<&str>,
    limits: BrowseLimits,
) -> Result<(usize, String), String> {
    let target = match target_url {
        Some(url) => url.to_string(),
        None => sqs_dlq::source_queue_url(dlq_url).ok_or_else(|| {
            format!("cannot tell the source queue of {dlq_url} (not named <stack>-<queue>-dlq.fifo): pass --to QUEUE_URL")
        })?,
    };
    let client = sqs_client().await;
    let mut browser = Browser::new(&client, dlq_url, limits);
    let mut redriven = 0;
    let mut left = Vec::new();
    let mut problems = Vec::new();
    let mut groups = std::collections::HashSet::new();
    let mut shared_group = false;
    let mut progress = show_progress();
    loop {
        let page = match browser.next_page().await {
            Ok(Some(page)) => page,
            Ok(None) => break,
            Err(error) => {
                problems.push(error.to_string());
                break;
            }
        };
        for dead in page {
            shared_group |= !groups.insert(dead.group_id.clone());
            if !wanted(&dead, cluster) {
                left.push(dead.hold_only());
                continue;
            }
            match sqs_dlq::redrive_one(&client, dlq_url, &target, &dead).await {
                Ok(()) => redriven += 1,
                Err(error) => {
                    problems.push(error.to_string());
                    left.push(dead.hold_only());
                }
            }
        }
        progress(browser.received());
    }
    let released = sqs_dlq::release(&client, dlq_url, &left).await;
    if shared_group {
        eprintln!("{INCOMPLETE}");
    }
    if let Some(note) = browser
        .stopped()
        .and_then(|stop| stop.note(browser.received()))
    {
        eprintln!("note: {note}");
    }
    if let Err(error) = released {
        problems.push(error.to_string());
    }
    if problems.is_empty() {
        Ok((redriven, target))
    } else {
        Err(format!(
            "redrove {redriven} dead letter(s) to {target}, but:\n  {}",
            problems.join("\n  ")
        ))
    }
}
