//! `fluxrelay explain KEY`: what happened to one push on each cluster, from the embedded
//! queue's journal (matched and skipped objects, calls and their answers, retries, the
//! dead-letter reason), or on AWS from the dead-letter queue's reason attributes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use crate::dlq::{at, open, sqs_client};
use crate::serve::QUEUE_FILE;
use fluxrelay_adapters::embedded::JournalRecord;
use fluxrelay_adapters::sqs_dlq::{self, BROWSE_HOLD};

/// Stages after which nothing more happens to the push on that cluster.
fn summary(stage: &str) -> &'static str {
    match stage {
        "delivered" => "delivered",
        "nothing_to_trigger" => "nothing to trigger (see the skipped objects)",
        "dead_lettered" => {
            "dead-lettered (fluxrelay dlq list; fix the cause, then fluxrelay dlq redrive)"
        }
        "retry" | "trigger_failed" => "failing, will be retried",
        "queued" => "queued, not dispatched yet",
        _ => "in progress",
    }
}

pub fn explain_embedded(data_dir: &Path, key: &str, out: &mut impl Write) -> Result<(), String> {
    let queue = open(data_dir)?;
    let keys = queue.journal_keys(key).map_err(|error| error.to_string())?;
    let full_key = match keys.as_slice() {
        [] => {
            return Err(format!(
                "no push with key {key} in the journal of {} (the journal keeps 7 days; the key is in the 202 answer and in every log line)",
                data_dir.join(QUEUE_FILE).display()
            ));
        }
        [one] => one.clone(),
        many => {
            return Err(format!(
                "{key} is the start of {} keys; give more of it: {}",
                many.len(),
                many.join(", ")
            ));
        }
    };
    let records = queue
        .journal(&full_key)
        .map_err(|error| error.to_string())?;
    write_journal(&full_key, &records, out).map_err(|error| format!("cannot write: {error}"))
}

fn write_journal(
    key: &str,
    records: &[JournalRecord],
    out: &mut impl Write,
) -> std::io::Result<()> {
    writeln!(out, "push {key}")?;
    let mut clusters: BTreeMap<&str, Vec<&JournalRecord>> = BTreeMap::new();
    for record in records {
        match &record.entry.cluster {
            None => writeln!(
                out,
                "  {}  {:<13} {}",
                at(record.at_ms),
                record.entry.stage,
                record.entry.detail
            )?,
            Some(cluster) => clusters.entry(cluster).or_default().push(record),
        }
    }
    for (cluster, records) in &clusters {
        writeln!(out, "cluster {cluster}:")?;
        for record in records {
            writeln!(
                out,
                "  {}  {:<13} {}",
                at(record.at_ms),
                record.entry.stage,
                record.entry.detail
            )?;
        }
    }
    writeln!(out, "summary:")?;
    if clusters.is_empty() {
        writeln!(out, "  no cluster (see routed above)")?;
    }
    for (cluster, records) in &clusters {
        // Skips accompany a verdict; the verdict is the state.
        let last = records
            .iter()
            .rev()
            .find(|record| record.entry.stage != "skipped")
            .map_or("in progress", |record| summary(&record.entry.stage));
        writeln!(out, "  {cluster}: {last}")?;
    }
    Ok(())
}

pub async fn explain_sqs(dlq_url: &str, key: &str, out: &mut impl Write) -> Result<(), String> {
    let client = sqs_client().await;
    let browsed = sqs_dlq::browse(&client, dlq_url, BROWSE_HOLD)
        .await
        .map_err(|error| error.to_string())?;
    let mut written = Ok(());
    let mut found = 0;
    for dead in &browsed.messages {
        let dead_key = dead
            .reason
            .as_ref()
            .and_then(|reason| reason.key.clone())
            .or_else(|| dead.push().map(|push| push.key));
        if !dead_key.as_deref().is_some_and(|k| k.starts_with(key)) {
            continue;
        }
        found += 1;
        let reason = dead.reason.as_ref().map_or(
            "moved by the queue's redrive policy (no reason recorded)".to_string(),
            |reason| match reason.status {
                Some(status) => format!("{} (status {status})", reason.reason),
                None => reason.reason.clone(),
            },
        );
        written = written.and(writeln!(
            out,
            "push {} cluster {}: dead-lettered {}: {reason}",
            dead_key.unwrap_or_default(),
            dead.cluster().unwrap_or_else(|| "-".into()),
            dead.sent_at_ms.map(at).unwrap_or_default()
        ));
    }
    let released = sqs_dlq::release(&client, dlq_url, &browsed.messages).await;
    written.map_err(|error| format!("cannot write: {error}"))?;
    released.map_err(|error| error.to_string())?;
    if found == 0 {
        writeln!(
            out,
            "no dead letter for {key} in {dlq_url}: the push was delivered, had nothing to trigger, or is still being retried.\n\
             Every outcome is a log line with its key: aws logs filter-log-events --log-group-name /aws/lambda/<DispatchFunctionName> --filter-pattern '\"{key}\"'"
        )
        .map_err(|error| format!("cannot write: {error}"))?;
    }
    Ok(())
}
