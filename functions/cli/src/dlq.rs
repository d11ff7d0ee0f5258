//! `fluxrelay dlq list|redrive`: the embedded queue's dead letters, with their reasons.
//! Safe while `fluxrelay serve` runs (SQLite serialises the writers); redriven messages are
//! picked up within a second.

use std::io::Write;
use std::path::Path;

use fluxrelay_adapters::embedded::{DISPATCH_QUEUE, DeadLetter, EmbeddedQueue, INTAKE_QUEUE};
use fluxrelay_core::push::{Dispatch, Push};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::serve::QUEUE_FILE;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueName {
    Dispatch,
    Intake,
}

impl QueueName {
    pub fn name(self) -> &'static str {
        match self {
            QueueName::Dispatch => DISPATCH_QUEUE,
            QueueName::Intake => INTAKE_QUEUE,
        }
    }
}

fn open(data_dir: &Path) -> Result<EmbeddedQueue, String> {
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
    let write_error = |error: std::io::Error| format!("cannot write the listing: {error}");
    if !as_json {
        writeln!(
            out,
            "ID\tDEAD_AT\tCLUSTER\tPROJECT\tREF\tSTATUS\tATTEMPTS\tKEY\tREASON"
        )
        .map_err(write_error)?;
    }
    for dead in &dead_letters {
        let (project, git_ref) = push_of(queue, dead)
            .map(|push| (push.project.path, push.git_ref))
            .unwrap_or_default();
        let dead_at = at(dead.dead_at_ms);
        let cluster = dead.reason.cluster.as_deref().unwrap_or("-");
        let key = dead.reason.key.as_deref().unwrap_or("-");
        if as_json {
            let line = json!({
                "id": dead.id,
                "queue": dead.queue,
                "dead_at": dead_at,
                "cluster": dead.reason.cluster,
                "project": project,
                "ref": git_ref,
                "status": dead.reason.status,
                "attempts": dead.receive_count,
                "key": dead.reason.key,
                "reason": dead.reason.reason,
            });
            writeln!(out, "{line}").map_err(write_error)?;
        } else {
            let status = dead
                .reason
                .status
                .map_or_else(|| "-".to_string(), |status| status.to_string());
            writeln!(
                out,
                "{}\t{dead_at}\t{cluster}\t{project}\t{git_ref}\t{status}\t{}\t{key}\t{}",
                dead.id, dead.receive_count, dead.reason.reason
            )
            .map_err(write_error)?;
        }
    }
    Ok(dead_letters.len())
}

pub fn redrive(data_dir: &Path, queue: QueueName, cluster: Option<&str>) -> Result<usize, String> {
    open(data_dir)?
        .redrive(queue.name(), cluster)
        .map_err(|error| error.to_string())
}

fn push_of(queue: QueueName, dead: &DeadLetter) -> Option<Push> {
    match queue {
        QueueName::Dispatch => Dispatch::from_json(&dead.body).ok().map(|d| d.push),
        QueueName::Intake => Push::from_json(&dead.body).ok(),
    }
}

fn at(millis: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .ok()
        .and_then(|time| time.format(&Rfc3339).ok())
        .unwrap_or_else(|| millis.to_string())
}
