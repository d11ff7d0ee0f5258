//! CloudWatch metrics from the confirm function without API calls: Embedded Metric Format
//! log lines (one JSON object per line on stdout, which Lambda sends to CloudWatch Logs,
//! where they become metrics). Namespace `METRICS_NAMESPACE` (the template sets the stack's).
//!
//! - `Confirmations` (Count) by `Cluster`+`Outcome` and by `Outcome`;
//! - `ConfirmationsNotDeployed` (Count: failed or timed out), also with no dimension — the
//!   stack's alarm watches it;
//! - `PushToAppliedSeconds` (Seconds) by `Cluster` and overall, for successes;
//! - `GitLabApiCalls` (Count) by `Endpoint`+`Status`.

use std::collections::BTreeMap;

use fluxrelay_core::handlers::confirm::ConfirmReport;
use serde_json::{Value, json};

pub const DEFAULT_NAMESPACE: &str = "fluxrelay";

fn directive(namespace: &str, timestamp_ms: i64, dimensions: Value, metrics: Value) -> Value {
    json!({
        "Timestamp": timestamp_ms,
        "CloudWatchMetrics": [{"Namespace": namespace, "Dimensions": dimensions, "Metrics": metrics}]
    })
}

/// The EMF lines for one confirm batch.
pub fn confirm_lines(report: &ConfirmReport, namespace: &str, timestamp_ms: i64) -> Vec<String> {
    let mut lines = Vec::new();
    for message in &report.messages {
        let (Some(confirmation), Some(ended)) = (&message.confirmation, message.ended()) else {
            continue;
        };
        let mut metrics = vec![
            json!({"Name": "Confirmations", "Unit": "Count"}),
            json!({"Name": "ConfirmationsNotDeployed", "Unit": "Count"}),
        ];
        let mut line = json!({
            "Cluster": confirmation.cluster,
            "Outcome": ended.outcome.as_str(),
            "Reason": ended.reason,
            "key": confirmation.push.key,
            "Confirmations": 1,
            "ConfirmationsNotDeployed": u8::from(ended.outcome.is_alarming()),
        });
        if let Some(seconds) = confirmation.push_to_applied_secs() {
            metrics.push(json!({"Name": "PushToAppliedSeconds", "Unit": "Seconds"}));
            line["PushToAppliedSeconds"] = json!(seconds);
        }
        line["_aws"] = directive(
            namespace,
            timestamp_ms,
            json!([["Cluster", "Outcome"], ["Outcome"], ["Cluster"], []]),
            Value::Array(metrics),
        );
        lines.push(line.to_string());
    }
    let mut calls: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for message in &report.messages {
        for call in &message.calls {
            *calls
                .entry((call.endpoint, call.status.as_str()))
                .or_default() += 1;
        }
    }
    for ((endpoint, status), count) in calls {
        let mut line = json!({"Endpoint": endpoint, "Status": status, "GitLabApiCalls": count});
        line["_aws"] = directive(
            namespace,
            timestamp_ms,
            json!([["Endpoint", "Status"]]),
            json!([{"Name": "GitLabApiCalls", "Unit": "Count"}]),
        );
        lines.push(line.to_string());
    }
    lines
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use fluxrelay_core::confirm::message::{Confirmation, Ended, Outcome};
    use fluxrelay_core::handlers::confirm::{ConfirmStep, ConfirmedMessage, GitLabCall};
    use fluxrelay_core::outcome::settle::Settled;

    fn ended(cluster: &str, outcome: Outcome, applied_at: Option<&str>) -> ConfirmedMessage {
        let push: fluxrelay_core::push::Push = serde_json::from_value(json!({
            "v": 1, "key": "k1", "instance": "https://gitlab.example.com", "event": "push",
            "project": {"id": 1, "path": "a/b", "http_url": "", "ssh_url": "", "web_url": "", "default_branch": null},
            "ref": "refs/heads/main", "before": "b", "after": "a", "checkout_sha": "a",
            "changed_paths": null, "received_at": "2026-11-22T00:00:00Z"
        }))
        .unwrap();
        let mut confirmation = Confirmation::start(cluster, push, time::OffsetDateTime::UNIX_EPOCH);
        confirmation.ended = Some(Ended {
            outcome,
            reason: "r".into(),
            message: String::new(),
            object: None,
            applied_at: applied_at.map(str::to_string),
            ended_at: String::new(),
        });
        ConfirmedMessage {
            message_id: cluster.into(),
            confirmation: Some(confirmation),
            seen: None,
            changed: false,
            step: ConfirmStep::Ended,
            calls: vec![GitLabCall {
                endpoint: "create_status",
                status: "201".into(),
                state: None,
                name: None,
            }],
            settled: Settled::Acknowledged,
        }
    }

    #[test]
    fn one_line_per_end_and_per_call_kind_in_embedded_metric_format() {
        let report = ConfirmReport {
            messages: vec![
                ended("prod", Outcome::Success, Some("2026-11-22T00:00:09Z")),
                ended("dev", Outcome::TimedOut, None),
            ],
            requests: Vec::new(),
        };
        let lines: Vec<Value> = confirm_lines(&report, "fluxrelay/test", 1_763_800_000_000)
            .iter()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        let success = &lines[0];
        assert_eq!(success["Outcome"], "success");
        assert_eq!(success["PushToAppliedSeconds"], 9.0);
        assert_eq!(success["ConfirmationsNotDeployed"], 0);
        let directive = &success["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "fluxrelay/test");
        assert_eq!(success["_aws"]["Timestamp"], 1_763_800_000_000i64);
        // Every metric named in the directive is a member of the line, and every
        // dimension too (EMF's rules).
        for metric in directive["Metrics"].as_array().unwrap() {
            assert!(success.get(metric["Name"].as_str().unwrap()).is_some());
        }
        for set in directive["Dimensions"].as_array().unwrap() {
            for name in set.as_array().unwrap() {
                assert!(success.get(name.as_str().unwrap()).is_some(), "{name}");
            }
        }
        assert!(
            directive["Dimensions"]
                .as_array()
                .unwrap()
                .contains(&json!([])),
            "an undimensioned set for the alarm"
        );
        let timed_out = &lines[1];
        assert_eq!(timed_out["ConfirmationsNotDeployed"], 1);
        assert!(timed_out.get("PushToAppliedSeconds").is_none());
        assert_eq!(lines[2]["GitLabApiCalls"], 2);
        assert_eq!(lines[2]["Status"], "201");
    }
}
