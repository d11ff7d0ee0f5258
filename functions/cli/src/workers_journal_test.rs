//! What dispatch writes to the journal: a delivered push is one line per cluster with each
//! call's answer; a call whose push is not delivered keeps a line of its own.

use fluxrelay_core::handlers::dispatch::{DispatchReport, MessageOutcome, TargetOutcome};
use fluxrelay_core::outcome::classify::{FailureClass, Responder, TriggerFailure};
use fluxrelay_core::outcome::settle::Settled;
use fluxrelay_core::outcome::verdict::{DeadLetterPlan, RetryPlan, Verdict};
use fluxrelay_core::push::Dispatch;
use time::OffsetDateTime;

use super::dispatch_journal;

const A: &str = "receiver/flux-system/a";
const B: &str = "receiver/flux-system/b";

fn message(key: &str, verdict: Verdict) -> MessageOutcome {
    let body = format!(
        r#"{{"v":1,"cluster":"prod","push":{{"v":1,"key":"{key}","instance":"https://gitlab.example.com","event":"push","project":{{"id":15,"path":"mike/diaspora","http_url":"http://example.com/mike/diaspora.git","ssh_url":"git@example.com:mike/diaspora.git","web_url":"http://example.com/mike/diaspora","default_branch":"master"}},"ref":"refs/heads/master","before":"95790bf891e76fee5e1747ab589903a6a1f80f22","after":"da1560886d4f094c3e6c9ef40349f7d38b5d27d7","checkout_sha":"da1560886d4f094c3e6c9ef40349f7d38b5d27d7","changed_paths":null,"received_at":"2026-11-22T03:00:00Z"}}}}"#
    );
    MessageOutcome {
        message_id: format!("m-{key}"),
        dispatch: Some(Dispatch::from_json(&body).unwrap()),
        verdict,
        skipped: Vec::new(),
        settled: Settled::Acknowledged,
        confirming: false,
    }
}

fn call(target: &str, keys: &[&str], result: Result<(), TriggerFailure>) -> TargetOutcome {
    TargetOutcome {
        cluster: "prod".to_string(),
        target: target.to_string(),
        project: "mike/diaspora".to_string(),
        git_ref: "refs/heads/master".to_string(),
        carried: keys[keys.len() - 1].to_string(),
        push_keys: keys.iter().map(|key| key.to_string()).collect(),
        result,
        finished_at: OffsetDateTime::UNIX_EPOCH,
    }
}

fn refused() -> TriggerFailure {
    TriggerFailure {
        class: FailureClass::Retryable,
        responder: Responder::Receiver,
        status: Some(503),
        reason: "Receiver answered 503".to_string(),
        credentials_rejected: false,
    }
}

fn delivered(targets: &[&str]) -> Verdict {
    Verdict::Delivered {
        targets: targets.iter().map(|target| target.to_string()).collect(),
    }
}

fn retry(only: &str) -> RetryPlan {
    RetryPlan {
        only: Some(vec![only.to_string()]),
        delay_secs: 30,
        reason: "Receiver answered 503".to_string(),
    }
}

/// A case: its name, the batch's calls and messages, and the lines expected (key, stage,
/// detail), all on cluster `prod`.
type Case = (
    &'static str,
    Vec<TargetOutcome>,
    Vec<MessageOutcome>,
    Vec<(&'static str, &'static str, &'static str)>,
);

#[test]
fn each_call_is_told_once_in_the_verdict_when_it_delivered_and_on_its_own_otherwise() {
    let cases: Vec<Case> = vec![
        (
            "one push, one call: the delivered line carries the answer",
            vec![call(A, &["k1"], Ok(()))],
            vec![message("k1", delivered(&[A]))],
            vec![("k1", "delivered", "receiver/flux-system/a: success")],
        ),
        (
            "two targets: both answers on the one line",
            vec![call(A, &["k1"], Ok(())), call(B, &["k1"], Ok(()))],
            vec![message("k1", delivered(&[A, B]))],
            vec![(
                "k1",
                "delivered",
                "receiver/flux-system/a: success, receiver/flux-system/b: success",
            )],
        ),
        (
            "one call for two pushes: each push's line says so",
            vec![call(A, &["k1", "k2"], Ok(()))],
            vec![
                message("k1", delivered(&[A])),
                message("k2", delivered(&[A])),
            ],
            vec![
                (
                    "k1",
                    "delivered",
                    "receiver/flux-system/a: success (one call for 2 pushes)",
                ),
                (
                    "k2",
                    "delivered",
                    "receiver/flux-system/a: success (one call for 2 pushes)",
                ),
            ],
        ),
        (
            "one target answered, the other failed: the success keeps its own line",
            vec![call(A, &["k1"], Ok(())), call(B, &["k1"], Err(refused()))],
            vec![message("k1", Verdict::Retry(retry(B)))],
            vec![
                ("k1", "triggered", "receiver/flux-system/a: success"),
                (
                    "k1",
                    "trigger_failed",
                    "receiver/flux-system/b: Receiver answered 503",
                ),
                (
                    "k1",
                    "retry",
                    "again in 30 s (receiver/flux-system/b): Receiver answered 503",
                ),
            ],
        ),
        (
            "a failed call for two pushes, dead-lettered",
            vec![call(A, &["k1", "k2"], Err(refused()))],
            vec![message(
                "k2",
                Verdict::DeadLetter(DeadLetterPlan {
                    only: None,
                    reason: "Receiver answered 503".to_string(),
                    status: Some(503),
                }),
            )],
            vec![
                (
                    "k1",
                    "trigger_failed",
                    "receiver/flux-system/a: Receiver answered 503 (one call for 2 pushes)",
                ),
                (
                    "k2",
                    "trigger_failed",
                    "receiver/flux-system/a: Receiver answered 503 (one call for 2 pushes)",
                ),
                ("k2", "dead_lettered", "Receiver answered 503 (status 503)"),
            ],
        ),
        (
            "a call for a push whose verdict is not here keeps its own line",
            vec![call(A, &["k1", "k2"], Ok(()))],
            vec![message("k2", delivered(&[A]))],
            vec![
                (
                    "k1",
                    "triggered",
                    "receiver/flux-system/a: success (one call for 2 pushes)",
                ),
                (
                    "k2",
                    "delivered",
                    "receiver/flux-system/a: success (one call for 2 pushes)",
                ),
            ],
        ),
        (
            "superseded: no call of its own, nothing to fold",
            vec![],
            vec![message(
                "k1",
                Verdict::Superseded {
                    by: "k2".to_string(),
                },
            )],
            vec![(
                "k1",
                "superseded",
                "delivered by supersession: covered by k2",
            )],
        ),
        (
            "a delivered target no call of this batch answered is named alone",
            vec![call(B, &["k1"], Ok(()))],
            vec![message("k1", delivered(&[A]))],
            vec![
                ("k1", "triggered", "receiver/flux-system/b: success"),
                ("k1", "delivered", "receiver/flux-system/a"),
            ],
        ),
    ];
    for (name, targets, messages, expected) in cases {
        let report = DispatchReport { messages, targets };
        let lines: Vec<(String, String, String)> = dispatch_journal(&report)
            .into_iter()
            .map(|entry| {
                assert_eq!(entry.cluster.as_deref(), Some("prod"), "{name}");
                (entry.key, entry.stage, entry.detail)
            })
            .collect();
        let expected: Vec<(String, String, String)> = expected
            .into_iter()
            .map(|(key, stage, detail)| (key.into(), stage.into(), detail.into()))
            .collect();
        assert_eq!(lines, expected, "{name}");
    }
}

/// A routed push is one row whose clusters `explain` reads back, whatever the ref holds
/// (a ref may contain `; routed to `); no cluster is none.
#[test]
fn a_routed_row_names_the_clusters_explain_reads_back() {
    use fluxrelay_core::handlers::route::{PathsSource, RouteReport, RouteVerdict, RoutedMessage};

    use super::{route_journal, routed_clusters};

    let routed = |git_ref: &str, clusters: &[&str]| {
        let mut push = message("k1", delivered(&[])).dispatch.unwrap().push;
        push.git_ref = git_ref.to_string();
        RoutedMessage {
            message_id: "m1".to_string(),
            push: Some(push),
            verdict: RouteVerdict::Routed {
                clusters: clusters.iter().map(|cluster| cluster.to_string()).collect(),
            },
            unusable: Vec::new(),
            settled: None,
            paths: PathsSource::Payload,
        }
    };
    let cases: &[(&str, &str, &[&str])] = &[
        ("one cluster", "refs/heads/master", &["prod"]),
        (
            "three",
            "refs/heads/master",
            &["prod", "staging", "eu.west-1_b"],
        ),
        ("none subscribes", "refs/heads/master", &[]),
        (
            "the separator inside the ref",
            "refs/heads/a; routed to evil, worse",
            &["prod"],
        ),
        (
            "the separator inside the ref, no cluster",
            "refs/heads/a; routed to evil",
            &[],
        ),
    ];
    for (name, git_ref, clusters) in cases {
        let report = RouteReport {
            messages: vec![routed(git_ref, clusters)],
        };
        let entries = route_journal(&report);
        assert_eq!(entries.len(), 1, "{name}: one row per push: {entries:?}");
        assert_eq!(entries[0].stage, "routed", "{name}");
        assert_eq!(entries[0].cluster, None, "{name}");
        let expected: Vec<&str> = clusters.to_vec();
        if expected.is_empty() {
            assert!(
                entries[0].detail.ends_with("; no cluster subscribes"),
                "{name}: {}",
                entries[0].detail
            );
        }
        assert_eq!(
            routed_clusters(&entries[0].detail),
            expected,
            "{name}: {}",
            entries[0].detail
        );
    }
}
