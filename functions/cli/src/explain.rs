//! `fluxrelay explain KEY`: what happened to one push on each cluster, from the embedded
//! queue's journal (matched and skipped objects, calls and their answers, retries, the
//! dead-letter reason), or on AWS from the dead-letter queue's reason attributes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use crate::dlq::{at, open, show_progress, sqs_client};
use crate::serve::QUEUE_FILE;
use crate::workers::routed_clusters;
use fluxrelay_adapters::embedded::{JournalEntry, JournalRecord};
use fluxrelay_adapters::sqs_dlq::{self, BrowseLimits};

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
        "confirming" => "delivered; confirming that the cluster applies it",
        "applied" => "delivered and applied (confirmed)",
        "apply_failed" => "delivered; the cluster failed to apply it (see the reason above)",
        "overtaken" => "delivered; a newer commit reached the source first (superseded)",
        "timed_out" => "delivered; not applied within the confirmation deadline",
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
    let records = with_queued(records);
    let mut clusters: BTreeMap<&str, Vec<&JournalRecord>> = BTreeMap::new();
    for record in &records {
        match &record.entry.cluster {
            None => write_record(record, out)?,
            Some(cluster) => clusters.entry(cluster).or_default().push(record),
        }
    }
    for (cluster, records) in &clusters {
        writeln!(out, "cluster {cluster}:")?;
        for record in records {
            write_record(record, out)?;
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
            // Status posts accompany a confirmation's state, as skips a verdict.
            .find(|record| {
                !matches!(
                    record.entry.stage.as_str(),
                    "skipped" | "status" | "status_failed"
                )
            })
            .map_or("in progress", |record| summary(&record.entry.stage));
        writeln!(out, "  {cluster}: {last}")?;
    }
    Ok(())
}

/// The records, each `routed` one followed by a `queued` line for every cluster it names
/// (at its time): route journals one row per push, whose clusters are the ones a cluster
/// without any other record is still queued for. A journal written before that (a
/// `queued` row per cluster) is shown as it is.
fn with_queued(records: &[JournalRecord]) -> Vec<JournalRecord> {
    let has_queued_rows = records.iter().any(|record| record.entry.stage == "queued");
    let mut all = Vec::with_capacity(records.len());
    for record in records {
        all.push(record.clone());
        if has_queued_rows || record.entry.stage != "routed" || record.entry.cluster.is_some() {
            continue;
        }
        for cluster in routed_clusters(&record.entry.detail) {
            all.push(JournalRecord {
                at_ms: record.at_ms,
                entry: JournalEntry::new(
                    record.entry.key.as_str(),
                    Some(cluster),
                    "queued",
                    "queued for dispatch",
                ),
                count: 1,
            });
        }
    }
    all
}

/// One line per detail kept (a push's skips on a cluster are one record with the first few),
/// then how many more were counted.
fn write_record(record: &JournalRecord, out: &mut impl Write) -> std::io::Result<()> {
    let at = at(record.at_ms);
    let stage = &record.entry.stage;
    for detail in record.details() {
        writeln!(out, "  {at}  {stage:<13} {detail}")?;
    }
    let not_kept = record.not_kept();
    if not_kept > 0 {
        writeln!(
            out,
            "  {at}  {stage:<13} and {not_kept} more ({} in all)",
            record.count
        )?;
    }
    Ok(())
}

pub async fn explain_sqs(
    dlq_url: &str,
    key: &str,
    limits: BrowseLimits,
    out: &mut impl Write,
) -> Result<(), String> {
    let client = sqs_client().await;
    let browsed = sqs_dlq::browse(&client, dlq_url, limits, show_progress())
        .await
        .map_err(|error| error.to_string())?;
    if let Some(note) = browsed.stopped.note(browsed.messages.len()) {
        eprintln!("note: {note}");
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {

    use super::*;

    fn record(cluster: Option<&str>, stage: &str, detail: &str, count: u64) -> JournalRecord {
        JournalRecord {
            at_ms: 1_795_000_000_000,
            entry: JournalEntry::new("abc", cluster, stage, detail),
            count,
        }
    }

    fn written(records: &[JournalRecord]) -> String {
        let mut out = Vec::new();
        write_journal("abc", records, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_skip_summary_shows_its_details_one_per_line_and_how_many_more() {
        let story = written(&[
            record(None, "routed", "routed to prod", 1),
            record(Some("prod"), "skipped", "a/one: url\na/two: ref", 300),
            record(Some("prod"), "nothing_to_trigger", "no GitRepository", 1),
        ]);

        let prod: Vec<&str> = story
            .lines()
            .skip_while(|line| *line != "cluster prod:")
            .skip(1)
            .take(4)
            .map(|line| line.split_once("Z  ").map_or(line, |(_, rest)| rest))
            .collect();
        assert_eq!(
            prod,
            [
                "skipped       a/one: url",
                "skipped       a/two: ref",
                "skipped       and 298 more (300 in all)",
                "nothing_to_trigger no GitRepository",
            ],
            "{story}"
        );
        assert!(
            story.ends_with("  prod: nothing to trigger (see the skipped objects)\n"),
            "the skips are not the verdict: {story}"
        );
    }

    /// The record lines of `cluster`, without their times.
    fn cluster_lines<'s>(story: &'s str, cluster: &str) -> Vec<&'s str> {
        let heading = format!("cluster {cluster}:");
        story
            .lines()
            .skip_while(|line| *line != heading)
            .skip(1)
            .take_while(|line| line.starts_with("  ") && line.contains("Z  "))
            .map(|line| line.split_once("Z  ").map_or(line, |(_, rest)| rest))
            .collect()
    }

    #[test]
    fn a_cluster_the_push_was_routed_to_is_queued_until_dispatch_says_more() {
        let routed = "accepted 2026-11-22T03:00:00Z: a/b refs/heads/x; routed to prod, staging";
        let story = written(&[
            record(None, "routed", routed, 1),
            record(
                Some("prod"),
                "delivered",
                "receiver/flux-system/r: success",
                1,
            ),
        ]);
        assert_eq!(
            cluster_lines(&story, "prod"),
            [
                "queued        queued for dispatch",
                "delivered     receiver/flux-system/r: success"
            ],
            "{story}"
        );
        assert_eq!(
            cluster_lines(&story, "staging"),
            ["queued        queued for dispatch"],
            "{story}"
        );
        assert!(
            story.ends_with("  prod: delivered\n  staging: queued, not dispatched yet\n"),
            "{story}"
        );

        // No cluster subscribes: none is queued.
        let story = written(&[record(
            None,
            "routed",
            "accepted 2026-11-22T03:00:00Z: a/b refs/heads/x; no cluster subscribes",
            1,
        )]);
        assert!(!story.contains("\ncluster "), "{story}");
        assert!(
            story.ends_with("  no cluster (see routed above)\n"),
            "{story}"
        );

        // A journal written with a queued row per cluster is shown as it was.
        let story = written(&[
            record(None, "routed", routed, 1),
            record(Some("prod"), "queued", "queued for dispatch", 1),
            record(Some("staging"), "queued", "queued for dispatch", 1),
        ]);
        assert_eq!(
            cluster_lines(&story, "prod"),
            ["queued        queued for dispatch"],
            "{story}"
        );
    }

    #[test]
    fn a_record_with_every_detail_kept_or_no_detail_has_no_more_line() {
        let cases = [
            (
                "all kept",
                record(Some("prod"), "skipped", "a/one: url\na/two: ref", 2),
            ),
            (
                "plain entry",
                record(Some("prod"), "delivered", "Receiver a/b", 1),
            ),
            ("empty detail", record(Some("prod"), "queued", "", 1)),
        ];
        for (name, record) in cases {
            let story = written(std::slice::from_ref(&record));
            // Record lines carry the time; the summary's do not.
            let lines = story.lines().filter(|line| line.contains("Z  "));
            assert_eq!(lines.count(), record.details().count(), "{name}: {story}");
            assert!(!story.contains("more ("), "{name}: {story}");
        }
    }
}
