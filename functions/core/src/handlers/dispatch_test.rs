use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use super::*;
use crate::handlers::plan::tests::{entry, receiver, repository};
use crate::handlers::route::{IntakeMessage, RouteVerdict, handle_route};
use crate::matching::select::webhook_path;
use crate::outcome::classify::{Responder, TransportErrorKind, TriggerResponse, transport_failure};
use crate::push::tests::sample_push;
use crate::testing::{FakeCluster, MemoryQueue, StaticRegistry, api_status, status};

const PROXY: &str = "/api/v1/namespaces/flux-system/services/http:webhook-receiver:80/proxy";

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_763_800_000).unwrap()
}

fn hook(token: &str, name: &str) -> String {
    format!("{PROXY}{}", webhook_path(token, name, "flux-system"))
}

fn push_with(after: char) -> Push {
    let mut push = sample_push();
    push.after = after.to_string().repeat(40);
    push.checkout_sha = Some(push.after.clone());
    push.key = Push::compute_key(
        &push.instance,
        push.project.id,
        &push.git_ref,
        &push.before,
        &push.after,
    );
    push
}

fn message(id: &str, cluster: &str, push: Push, receive_count: u32) -> DispatchMessage {
    DispatchMessage {
        id: id.into(),
        body: Dispatch::new(cluster, push).to_json(),
        receive_count,
    }
}

/// Cluster `prod` with one GitRepository `app` (mike/diaspora @ main) and one
/// generic-hmac Receiver `r` selecting it, whose token is in the registry.
fn setup() -> (StaticRegistry, FakeCluster) {
    let registry = StaticRegistry {
        entries: vec![entry(
            json!({"trigger": {"receiver_tokens": {"flux-system/r": "tok"}}}),
        )],
        ..Default::default()
    };
    let cluster = FakeCluster::default();
    cluster
        .repositories
        .lock()
        .unwrap()
        .push(repository("app", json!({})));
    cluster.receivers.lock().unwrap().push(receiver(
        "r",
        "generic-hmac",
        "tok",
        json!([{"kind": "GitRepository", "name": "app"}]),
    ));
    (registry, cluster)
}

async fn run(
    registry: &StaticRegistry,
    cluster: &FakeCluster,
    messages: &[DispatchMessage],
) -> DispatchReport {
    handle_dispatch(
        registry,
        cluster,
        &RetryPolicy::default(),
        &Denials::default(),
        messages,
        now(),
    )
    .await
}

fn verdicts(report: &DispatchReport) -> Vec<(&str, &Verdict)> {
    report
        .messages
        .iter()
        .map(|m| (m.message_id.as_str(), &m.verdict))
        .collect()
}

#[tokio::test]
async fn a_push_hits_the_receiver_once_through_the_service_proxy() {
    let (registry, cluster) = setup();
    let report = run(
        &registry,
        &cluster,
        &[message("m1", "prod", sample_push(), 1)],
    )
    .await;
    assert_eq!(
        verdicts(&report),
        vec![(
            "m1",
            &Verdict::Delivered {
                targets: vec!["receiver/flux-system/r".into()]
            }
        )]
    );
    assert_eq!(cluster.sent_paths(), vec![hook("tok", "r")]);
    let sent = cluster.sent.lock().unwrap();
    let signature = sent[0]
        .1
        .headers
        .get("x-signature")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(signature.starts_with("sha256="), "{signature}");
    assert!(report.failed_ids().is_empty());
    assert_eq!(report.targets[0].result, Ok(()));
}

#[tokio::test]
async fn a_burst_of_pushes_is_coalesced_into_one_call_carrying_the_latest_push() {
    let (registry, cluster) = setup();
    let messages: Vec<DispatchMessage> = ['a', 'b', 'c']
        .iter()
        .enumerate()
        .map(|(i, c)| message(&format!("m{i}"), "prod", push_with(*c), 1))
        .collect();
    let report = run(&registry, &cluster, &messages).await;
    assert_eq!(cluster.sent_paths().len(), 1);
    let body: Value = serde_json::from_slice(&cluster.sent.lock().unwrap()[0].1.body).unwrap();
    assert_eq!(body["after"], "c".repeat(40));
    assert_eq!(report.targets.len(), 1);
    assert_eq!(report.targets[0].push_keys.len(), 3);
    assert!(
        report
            .messages
            .iter()
            .all(|m| matches!(m.verdict, Verdict::Delivered { .. }))
    );
}

#[tokio::test]
async fn pushes_to_different_refs_are_never_merged_into_one_call() {
    // One Receiver selects the main and the dev GitRepository; a batch has a push to each.
    // A CEL filter on req.ref must see both, so there are two calls, each with its own push.
    let (registry, cluster) = setup();
    cluster
        .repositories
        .lock()
        .unwrap()
        .push(repository("app-dev", json!({"ref": {"branch": "dev"}})));
    *cluster.receivers.lock().unwrap() = vec![receiver(
        "r",
        "generic-hmac",
        "tok",
        json!([{"kind": "GitRepository", "name": "app"}, {"kind": "GitRepository", "name": "app-dev"}]),
    )];
    let mut dev = sample_push();
    dev.git_ref = "refs/heads/dev".into();
    dev.key = "dev".into();
    let report = run(
        &registry,
        &cluster,
        &[
            message("m1", "prod", sample_push(), 1),
            message("m2", "prod", dev, 1),
        ],
    )
    .await;
    let refs: Vec<String> = cluster
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|(_, request)| {
            serde_json::from_slice::<Value>(&request.body).unwrap()["ref"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(refs.len(), 2, "{refs:?}");
    assert!(
        refs.contains(&"refs/heads/main".to_string())
            && refs.contains(&"refs/heads/dev".to_string()),
        "{refs:?}"
    );
    assert!(
        report
            .messages
            .iter()
            .all(|m| matches!(m.verdict, Verdict::Delivered { .. }))
    );
}

#[tokio::test]
async fn receiver_answers_decide_retry_or_dead_letter() {
    let cases: Vec<(
        &str,
        Result<crate::outcome::classify::TriggerResponse, TriggerFailure>,
        u32,
        &str,
    )> = vec![
        ("503 is retried", Ok(status(503)), 1, "retry"),
        ("500 is retried", Ok(status(500)), 3, "retry"),
        ("429 is retried", Ok(status(429)), 1, "retry"),
        (
            "timeouts are retried",
            Err(transport_failure(
                TransportErrorKind::Timeout,
                "read timed out",
            )),
            1,
            "retry",
        ),
        (
            "retries end in the dead-letter queue",
            Ok(status(503)),
            8,
            "gave up after 8 attempts",
        ),
        ("400 is permanent", Ok(status(400)), 1, "400"),
        ("413 is permanent", Ok(status(413)), 1, "413"),
        (
            "RBAC denial names the permission",
            Ok(api_status(
                403,
                "services \"http:webhook-receiver:80\" is forbidden: User \"flux-dispatcher\" cannot create resource \"services/proxy\" in API group \"\" in the namespace \"flux-system\"",
            )),
            1,
            // Only a denial that persists is permanent (see the denial tests below).
            "retry",
        ),
        (
            "a wrong CA is permanent",
            Err(transport_failure(
                TransportErrorKind::Tls,
                "invalid peer certificate",
            )),
            1,
            "certificate",
        ),
    ];
    for (name, answer, receive_count, expected) in cases {
        let (registry, cluster) = setup();
        cluster.answer(&hook("tok", "r"), vec![answer]);
        let report = run(
            &registry,
            &cluster,
            &[message("m1", "prod", sample_push(), receive_count)],
        )
        .await;
        match (&report.messages[0].verdict, expected) {
            (Verdict::Retry { delay_secs, .. }, "retry") => {
                assert!(*delay_secs >= 1, "{name}");
                assert_eq!(report.failed_ids(), vec!["m1"], "{name}");
            }
            (Verdict::DeadLetter { reason, .. }, fragment) if fragment != "retry" => {
                assert!(reason.contains(fragment), "{name}: {reason}");
                assert!(
                    report.failed_ids().is_empty(),
                    "{name}: a dead-lettered message is deleted, not retried"
                );
            }
            (other, _) => panic!("{name}: unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_rejected_credential_is_re_read_and_retried_then_dead_lettered() {
    let (registry, cluster) = setup();
    cluster.answer(
        &hook("tok", "r"),
        vec![
            Ok(api_status(401, "Unauthorized")),
            Ok(api_status(401, "Unauthorized")),
        ],
    );
    // First attempt: the entry is invalidated and the message retried with backoff, so a
    // rotated kube token is picked up from the registry instead of losing the push.
    let report = run(
        &registry,
        &cluster,
        &[message("m1", "prod", sample_push(), 1)],
    )
    .await;
    assert!(
        matches!(report.messages[0].verdict, Verdict::Retry { .. }),
        "{report:?}"
    );
    assert_eq!(
        *registry.invalidated.lock().unwrap(),
        vec!["prod".to_string()]
    );
    // Last attempt: dead-lettered with the apiserver's 401.
    let report = run(
        &registry,
        &cluster,
        &[message("m1", "prod", sample_push(), 8)],
    )
    .await;
    assert!(
        matches!(
            report.messages[0].verdict,
            Verdict::DeadLetter {
                status: Some(401),
                ..
            }
        ),
        "{report:?}"
    );
}

#[tokio::test]
async fn a_rotated_token_is_checked_against_fresh_receivers_before_sending() {
    // The registry already has the new token; the cached Receiver still shows the old path.
    let (_, cluster) = setup();
    let registry = StaticRegistry {
        entries: vec![entry(
            json!({"trigger": {"receiver_tokens": {"flux-system/r": "tok2"}}}),
        )],
        ..Default::default()
    };
    *cluster.receivers_after_rotation.lock().unwrap() = Some(vec![receiver(
        "r",
        "generic-hmac",
        "tok2",
        json!([{"kind": "GitRepository", "name": "app"}]),
    )]);
    let report = run(
        &registry,
        &cluster,
        &[message("m1", "prod", sample_push(), 1)],
    )
    .await;
    assert!(
        matches!(report.messages[0].verdict, Verdict::Delivered { .. }),
        "{report:?}"
    );
    assert_eq!(cluster.sent_paths(), vec![hook("tok2", "r")]);
    assert!(
        cluster
            .lists
            .lock()
            .unwrap()
            .iter()
            .any(|(_, what, fresh)| what == "receivers/flux-system" && *fresh)
    );
}

#[tokio::test]
async fn a_registry_token_that_fresh_receivers_do_not_match_is_retried_then_dead_lettered() {
    // A rotation in progress: retried with backoff (nothing sent meanwhile), and only when
    // the attempts run out dead-lettered with the reason that says what to fix.
    let (_, cluster) = setup();
    let registry = StaticRegistry {
        entries: vec![entry(
            json!({"trigger": {"receiver_tokens": {"flux-system/r": "stale-token"}}}),
        )],
        ..Default::default()
    };
    let report = run(
        &registry,
        &cluster,
        &[message("m1", "prod", sample_push(), 1)],
    )
    .await;
    let Verdict::Retry { reason, .. } = &report.messages[0].verdict else {
        panic!("{report:?}")
    };
    assert!(reason.contains("secret token changed"), "{reason}");
    let report = run(
        &registry,
        &cluster,
        &[message("m1", "prod", sample_push(), 8)],
    )
    .await;
    let Verdict::DeadLetter { reason, .. } = &report.messages[0].verdict else {
        panic!("{report:?}")
    };
    assert!(
        reason.contains("gave up after 8 attempts") && reason.contains("secret token changed"),
        "{reason}"
    );
    assert!(cluster.sent.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_receiver_404_is_rediscovered_once_and_resent_to_the_new_path() {
    // A generic Receiver (no token in the registry) whose secret changed: the cached path
    // answers 404, the fresh Receiver has a new path.
    let (_, cluster) = setup();
    let registry = StaticRegistry {
        entries: vec![entry(json!({}))],
        ..Default::default()
    };
    let selects = json!([{"kind": "GitRepository", "name": "app"}]);
    *cluster.receivers.lock().unwrap() = vec![receiver("r", "generic", "old", selects.clone())];
    *cluster.receivers_after_rotation.lock().unwrap() =
        Some(vec![receiver("r", "generic", "new", selects)]);
    cluster.answer(&hook("old", "r"), vec![Ok(status(404))]);

    let report = run(
        &registry,
        &cluster,
        &[message("m1", "prod", sample_push(), 1)],
    )
    .await;
    assert!(
        matches!(report.messages[0].verdict, Verdict::Delivered { .. }),
        "{report:?}"
    );
    assert_eq!(
        cluster.sent_paths(),
        vec![hook("old", "r"), hook("new", "r")]
    );
}

#[tokio::test]
async fn a_receiver_404_that_persists_is_permanent() {
    let (registry, cluster) = setup();
    cluster.answer(&hook("tok", "r"), vec![Ok(status(404)), Ok(status(404))]);
    let report = run(
        &registry,
        &cluster,
        &[message("m1", "prod", sample_push(), 1)],
    )
    .await;
    let Verdict::DeadLetter { reason, status } = &report.messages[0].verdict else {
        panic!("{report:?}")
    };
    assert!(reason.contains("still not found"), "{reason}");
    assert_eq!(*status, Some(404));
    assert_eq!(cluster.sent_paths().len(), 2);
}

#[tokio::test]
async fn a_failure_holds_back_later_messages_of_its_cluster_but_not_other_clusters() {
    let (mut registry, cluster) = setup();
    registry.entries.push(entry(
        json!({"name": "staging", "trigger": {"receiver_tokens": {"flux-system/r": "tok"}}}),
    ));
    cluster
        .repositories
        .lock()
        .unwrap()
        .push(repository("other", json!({"ref": {"branch": "dev"}})));
    cluster.receivers.lock().unwrap().push(receiver(
        "r2",
        "generic",
        "",
        json!([{"kind": "GitRepository", "name": "other"}]),
    ));
    let mut dev_push = sample_push();
    dev_push.git_ref = "refs/heads/dev".into();
    dev_push.key = "dev".into();
    // prod: the main push fails once (503); the dev push after it must wait.
    cluster.answer(&hook("tok", "r"), vec![Ok(status(503))]);
    let report = run(
        &registry,
        &cluster,
        &[
            message("p1", "prod", sample_push(), 1),
            message("p2", "prod", dev_push.clone(), 1),
            message("s1", "staging", dev_push, 1),
        ],
    )
    .await;
    let by_id = |id: &str| {
        report
            .messages
            .iter()
            .find(|m| m.message_id == id)
            .unwrap()
            .verdict
            .clone()
    };
    assert!(matches!(by_id("p1"), Verdict::Retry { .. }));
    let Verdict::Retry { reason, .. } = by_id("p2") else {
        panic!("{report:?}")
    };
    assert!(reason.contains("held behind message p1"), "{reason}");
    assert!(matches!(by_id("s1"), Verdict::Delivered { .. }));
    let mut failed = report.failed_ids();
    failed.sort();
    assert_eq!(failed, vec!["p1", "p2"]);
}

#[tokio::test]
async fn cluster_level_problems_fail_only_that_clusters_messages() {
    let (registry, cluster) = setup();
    let report = run(
        &registry,
        &cluster,
        &[
            message("m1", "gone", sample_push(), 1),
            message("m2", "prod", sample_push(), 1),
        ],
    )
    .await;
    let Verdict::DeadLetter { reason, .. } = &report
        .messages
        .iter()
        .find(|m| m.message_id == "m1")
        .unwrap()
        .verdict
    else {
        panic!()
    };
    assert!(reason.contains("not in the registry"), "{reason}");
    assert!(matches!(
        report
            .messages
            .iter()
            .find(|m| m.message_id == "m2")
            .unwrap()
            .verdict,
        Verdict::Delivered { .. }
    ));

    let unavailable = StaticRegistry {
        unavailable: true,
        ..Default::default()
    };
    let report = run(
        &unavailable,
        &cluster,
        &[message("m1", "prod", sample_push(), 1)],
    )
    .await;
    assert!(matches!(report.messages[0].verdict, Verdict::Retry { .. }));

    for (failure, retried) in [
        (
            TriggerFailure {
                class: FailureClass::Retryable,
                responder: Responder::ApiServer,
                status: Some(503),
                reason: "apiserver 503".into(),
                credentials_rejected: false,
            },
            true,
        ),
        (
            TriggerFailure {
                class: FailureClass::Permanent,
                responder: Responder::ApiServer,
                status: Some(404),
                reason: "the server could not find the requested resource (gitrepositories)".into(),
                credentials_rejected: false,
            },
            false,
        ),
    ] {
        let (registry, cluster) = setup();
        *cluster.list_failure.lock().unwrap() = Some(failure);
        let report = run(
            &registry,
            &cluster,
            &[
                message("m1", "prod", sample_push(), 1),
                message("m2", "prod", sample_push(), 1),
            ],
        )
        .await;
        assert_eq!(
            report.failed_ids().len(),
            if retried { 2 } else { 0 },
            "{report:?}"
        );
        assert!(cluster.sent.lock().unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_message_that_is_not_a_dispatch_is_dead_lettered_alone() {
    let (registry, cluster) = setup();
    let bad = DispatchMessage {
        id: "bad".into(),
        body: "{\"v\":1}".into(),
        receive_count: 1,
    };
    let report = run(
        &registry,
        &cluster,
        &[bad, message("m1", "prod", sample_push(), 1)],
    )
    .await;
    assert!(
        matches!(
            &verdicts(&report)[..],
            [
                ("bad", Verdict::DeadLetter { .. }),
                ("m1", Verdict::Delivered { .. })
            ]
        ),
        "{report:?}"
    );
}

#[tokio::test]
async fn annotate_mode_patches_the_git_repository() {
    let registry = StaticRegistry {
        entries: vec![entry(json!({"trigger": {"mode": "annotate"}}))],
        ..Default::default()
    };
    let cluster = FakeCluster::default();
    cluster
        .repositories
        .lock()
        .unwrap()
        .push(repository("app", json!({})));
    let report = run(
        &registry,
        &cluster,
        &[message("m1", "prod", sample_push(), 1)],
    )
    .await;
    assert!(matches!(
        report.messages[0].verdict,
        Verdict::Delivered { .. }
    ));
    {
        let patched = cluster.patched.lock().unwrap();
        assert_eq!(patched[0].1, ObjectRef::new("flux-system", "app"));
        let patch: Value = serde_json::from_slice(&patched[0].2).unwrap();
        assert!(
            patch["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"]
                .as_str()
                .unwrap()
                .starts_with("2025-11-22T08:26:40")
        );
        // Receivers are not even listed in annotate mode.
        assert!(
            cluster
                .lists
                .lock()
                .unwrap()
                .iter()
                .all(|(_, what, _)| what.starts_with("gitrepositories"))
        );
    }

    cluster.answer(
        "patch:flux-system/app",
        vec![Ok(api_status(
            403,
            "cannot patch resource \"gitrepositories\"",
        ))],
    );
    let report = run(
        &registry,
        &cluster,
        &[message("m2", "prod", sample_push(), 1)],
    )
    .await;
    let Verdict::Retry { reason, .. } = &report.messages[0].verdict else {
        panic!("a first denial is retried: {report:?}")
    };
    assert!(reason.contains("cannot patch resource"), "{reason}");
}

#[tokio::test]
async fn a_push_nothing_tracks_is_done_with_the_reasons() {
    let (registry, cluster) = setup();
    let mut push = sample_push();
    push.git_ref = "refs/heads/feature".into();
    let report = run(&registry, &cluster, &[message("m1", "prod", push, 1)]).await;
    assert_eq!(report.messages[0].verdict, Verdict::NothingToTrigger);
    assert!(
        report.messages[0].skipped[0].reason.contains("feature")
            || !report.messages[0].skipped.is_empty()
    );
    assert!(cluster.sent.lock().unwrap().is_empty());
}

// ---- route ----

fn intake(id: &str, group: &str, push: &Push) -> IntakeMessage {
    IntakeMessage {
        id: id.into(),
        group: group.into(),
        body: push.to_json(),
    }
}

#[tokio::test]
async fn route_sends_one_dispatch_per_subscribed_cluster() {
    let registry = StaticRegistry {
        entries: vec![
            entry(json!({"name": "a"})),
            entry(json!({"name": "b", "subscriptions": [{"projects": ["other/**"]}]})),
            entry(json!({"name": "c", "subscriptions": [{"refs": ["main"]}]})),
        ],
        ..Default::default()
    };
    let queue = MemoryQueue::default();
    let push = sample_push();
    let report = handle_route(&registry, &queue, &[intake("i1", "15", &push)]).await;
    assert_eq!(
        report.messages[0].verdict,
        RouteVerdict::Routed {
            clusters: vec!["a".into(), "c".into()]
        }
    );
    let dispatches = queue.dispatches.lock().unwrap();
    assert_eq!(
        dispatches.iter().map(|d| d.group_id()).collect::<Vec<_>>(),
        vec!["a", "c"]
    );
    assert_eq!(dispatches[0].push, push);
    assert_ne!(dispatches[0].dedup_id(), dispatches[1].dedup_id());
}

#[tokio::test]
async fn route_failures_hold_back_the_rest_of_the_project() {
    let registry = StaticRegistry {
        entries: vec![entry(json!({"name": "a"}))],
        ..Default::default()
    };
    let queue = MemoryQueue {
        failures_left: std::sync::Mutex::new(1),
        ..Default::default()
    };
    let other_project = {
        let mut p = push_with('d');
        p.project.id = 99;
        p.project.path = "other/x".into();
        p
    };
    let report = handle_route(
        &registry,
        &queue,
        &[
            intake("i1", "15", &push_with('a')),
            intake("i2", "15", &push_with('b')),
            IntakeMessage {
                id: "i3".into(),
                group: "7".into(),
                body: "garbage".into(),
            },
            intake("i4", "99", &other_project),
        ],
    )
    .await;
    assert_eq!(report.failed_ids(), vec!["i1", "i2", "i3"]);
    assert!(
        matches!(&report.messages[1].verdict, RouteVerdict::Failed { reason } if reason.contains("held behind"))
    );
    assert!(
        matches!(&report.messages[2].verdict, RouteVerdict::Failed { reason } if reason.contains("not a Push"))
    );
    assert_eq!(queue.dispatches.lock().unwrap().len(), 1);

    let unavailable = StaticRegistry {
        unavailable: true,
        ..Default::default()
    };
    let report = handle_route(
        &unavailable,
        &MemoryQueue::default(),
        &[intake("i1", "15", &push_with('a'))],
    )
    .await;
    assert_eq!(report.failed_ids(), vec!["i1"]);
}

#[tokio::test]
async fn route_drops_branch_deletions_without_failing() {
    let registry = StaticRegistry {
        entries: vec![entry(json!({"name": "a"}))],
        ..Default::default()
    };
    let queue = MemoryQueue::default();
    let report = handle_route(&registry, &queue, &[intake("i1", "15", &push_with('0'))]).await;
    assert_eq!(
        report.messages[0].verdict,
        RouteVerdict::Routed { clusters: vec![] }
    );
    assert!(queue.dispatches.lock().unwrap().is_empty());
}

#[tokio::test]
async fn coalescing_decides_how_many_calls_a_burst_makes() {
    // (coalesce, pushes in the batch, calls expected, push keys per call)
    let cases = [
        (true, 1, 1, 1),
        (true, 3, 1, 3),
        (true, 10, 1, 10),
        (false, 1, 1, 1),
        (false, 3, 3, 1),
        (false, 10, 10, 1),
    ];
    for (coalesce, pushes, calls, keys_per_call) in cases {
        let (registry, cluster) = setup();
        let messages: Vec<DispatchMessage> = ('a'..='z')
            .take(pushes)
            .enumerate()
            .map(|(i, c)| message(&format!("m{i}"), "prod", push_with(c), 1))
            .collect();
        let report = handle_dispatch_with(
            &registry,
            &cluster,
            &RetryPolicy::default(),
            &Denials::default(),
            DispatchOptions { coalesce },
            &messages,
            now(),
        )
        .await;
        let case = format!("coalesce={coalesce}, {pushes} pushes");
        assert_eq!(cluster.sent_paths().len(), calls, "{case}");
        assert_eq!(report.targets.len(), calls, "{case}");
        assert!(
            report
                .targets
                .iter()
                .all(|t| t.push_keys.len() == keys_per_call && t.result.is_ok()),
            "{case}"
        );
        assert!(
            report
                .messages
                .iter()
                .all(|m| matches!(m.verdict, Verdict::Delivered { .. })),
            "{case}"
        );
        // Without coalescing, each push is sent in its own call.
        if !coalesce {
            let afters: std::collections::BTreeSet<String> = cluster
                .sent
                .lock()
                .unwrap()
                .iter()
                .map(|(_, request)| {
                    let body: Value = serde_json::from_slice(&request.body).unwrap();
                    body["after"].as_str().unwrap().to_string()
                })
                .collect();
            assert_eq!(afters.len(), pushes, "{case}: each push sent once");
        }
    }
    assert_eq!(
        DispatchOptions::default(),
        DispatchOptions { coalesce: true }
    );
}

#[tokio::test]
async fn without_coalescing_a_failing_push_still_holds_back_the_later_ones() {
    let (registry, cluster) = setup();
    cluster
        .answers
        .lock()
        .unwrap()
        .insert(hook("tok", "r"), [Ok(status(503))].into());
    let messages: Vec<DispatchMessage> = ['a', 'b']
        .iter()
        .enumerate()
        .map(|(i, c)| message(&format!("m{i}"), "prod", push_with(*c), 1))
        .collect();
    let report = handle_dispatch_with(
        &registry,
        &cluster,
        &RetryPolicy::default(),
        &Denials::default(),
        DispatchOptions { coalesce: false },
        &messages,
        now(),
    )
    .await;
    assert_eq!(report.failed_ids().len(), 2, "{:?}", verdicts(&report));
}

fn services_proxy_denied() -> Result<TriggerResponse, TriggerFailure> {
    Ok(api_status(
        403,
        "services \"http:webhook-receiver:80\" is forbidden: User \"flux-dispatcher\" cannot create resource \"services/proxy\" in API group \"\" in the namespace \"flux-system\"",
    ))
}

async fn dispatch_at(
    registry: &StaticRegistry,
    cluster: &FakeCluster,
    denials: &Denials,
    receive_count: u32,
    secs: i64,
) -> Verdict {
    let report = handle_dispatch(
        registry,
        cluster,
        &RetryPolicy::default(),
        denials,
        &[message("m1", "prod", sample_push(), receive_count)],
        now() + Duration::seconds(secs),
    )
    .await;
    report.messages[0].verdict.clone()
}

#[tokio::test]
async fn a_denial_is_dead_lettered_only_once_it_has_lasted_ten_seconds() {
    let (registry, cluster) = setup();
    let denials = Denials::default();
    let target = hook("tok", "r");
    // (receive count, seconds since the first denial, answer, expected)
    #[rustfmt::skip]
    let script = [
        (1, 0, services_proxy_denied(), "retry"),
        (2, 6, services_proxy_denied(), "retry"),
        (3, 11, services_proxy_denied(), "dead"),
    ];
    for (receive_count, secs, answer, expected) in script {
        cluster.answer(&target, vec![answer]);
        let verdict = dispatch_at(&registry, &cluster, &denials, receive_count, secs).await;
        match (expected, &verdict) {
            ("retry", Verdict::Retry { delay_secs, reason }) => {
                assert!(*delay_secs >= DENIAL_RETRY_MIN_SECS, "{verdict:?}");
                assert!(reason.contains("services/proxy"), "{reason}");
            }
            ("dead", Verdict::DeadLetter { reason, status }) => {
                assert_eq!(*status, Some(403));
                assert!(reason.contains("services/proxy"), "{reason}");
                assert!(
                    reason.ends_with("(denied without a break for 11 s)"),
                    "{reason}"
                );
                assert!(!reason.contains("gave up"), "{reason}");
            }
            _ => panic!("at {secs} s expected {expected}, got {verdict:?}"),
        }
    }
    // A message tried for the first time (a redrive right after the Role was fixed) gets a
    // second try even while the streak goes on.
    cluster.answer(&target, vec![services_proxy_denied()]);
    let verdict = dispatch_at(&registry, &cluster, &denials, 1, 12).await;
    assert!(matches!(verdict, Verdict::Retry { .. }), "{verdict:?}");
}

#[tokio::test]
async fn an_apiserver_that_denies_while_restarting_is_retried_not_dead_lettered() {
    let (registry, cluster) = setup();
    let denials = Denials::default();
    let target = hook("tok", "r");
    // The apiserver was down for the first receives (count climbs), then denies valid
    // credentials for a few seconds before its RBAC caches sync, then accepts.
    cluster.answer(
        &target,
        vec![
            Err(transport_failure(
                TransportErrorKind::Connect,
                "connection refused",
            )),
            services_proxy_denied(),
            services_proxy_denied(),
            Ok(status(202)),
        ],
    );
    let mut verdicts = Vec::new();
    for (receive_count, secs) in [(4, 0), (5, 2), (6, 7), (7, 13)] {
        verdicts.push(dispatch_at(&registry, &cluster, &denials, receive_count, secs).await);
    }
    assert!(
        verdicts[..3]
            .iter()
            .all(|v| matches!(v, Verdict::Retry { .. })),
        "{verdicts:?}"
    );
    assert!(
        matches!(verdicts[3], Verdict::Delivered { .. }),
        "{verdicts:?}"
    );

    // A success ends the streak: a later denial starts counting from zero.
    cluster.answer(&target, vec![services_proxy_denied()]);
    let verdict = dispatch_at(&registry, &cluster, &denials, 1, 60).await;
    assert!(matches!(verdict, Verdict::Retry { .. }), "{verdict:?}");
}

#[tokio::test]
async fn a_denial_still_there_when_attempts_run_out_is_dead_lettered_as_a_denial() {
    let (registry, cluster) = setup();
    cluster.answer(&hook("tok", "r"), vec![services_proxy_denied()]);
    let verdict = dispatch_at(&registry, &cluster, &Denials::default(), 8, 0).await;
    let Verdict::DeadLetter { reason, status } = &verdict else {
        panic!("{verdict:?}")
    };
    assert_eq!(*status, Some(403));
    assert!(reason.contains("services/proxy"), "{reason}");
    assert!(!reason.contains("gave up"), "{reason}");
}

#[tokio::test]
async fn a_denied_list_call_counts_as_a_denial_too() {
    let (registry, cluster) = setup();
    let denials = Denials::default();
    *cluster.list_failure.lock().unwrap() = Some(TriggerFailure {
        class: FailureClass::Denied,
        responder: Responder::ApiServer,
        status: Some(403),
        reason: "cannot list resource \"gitrepositories\"".into(),
        credentials_rejected: false,
    });
    let first = dispatch_at(&registry, &cluster, &denials, 1, 0).await;
    assert!(matches!(first, Verdict::Retry { .. }), "{first:?}");
    let later = dispatch_at(&registry, &cluster, &denials, 2, 10).await;
    let Verdict::DeadLetter { reason, .. } = &later else {
        panic!("{later:?}")
    };
    assert!(reason.contains("gitrepositories"), "{reason}");
}

#[tokio::test]
async fn a_denial_from_an_apiserver_that_is_not_ready_is_retried_and_starts_no_streak() {
    let (registry, cluster) = setup();
    let denials = Denials::default();
    let target = hook("tok", "r");
    // A restart longer than the confirmation window: /readyz fails all along.
    *cluster.unready.lock().unwrap() = Some("/readyz answered 500".into());
    for (receive_count, secs) in [(1, 0), (2, 6), (3, 12), (4, 20)] {
        cluster.answer(&target, vec![services_proxy_denied()]);
        let verdict = dispatch_at(&registry, &cluster, &denials, receive_count, secs).await;
        let Verdict::Retry { reason, .. } = &verdict else {
            panic!("at {secs} s: {verdict:?}")
        };
        assert!(
            reason.contains("not trusted: the apiserver is not ready: /readyz answered 500"),
            "{reason}"
        );
    }
    // Ready again and still denying: the streak starts now, not at the restart.
    *cluster.unready.lock().unwrap() = None;
    cluster.answer(&target, vec![services_proxy_denied()]);
    let verdict = dispatch_at(&registry, &cluster, &denials, 5, 21).await;
    assert!(matches!(verdict, Verdict::Retry { .. }), "{verdict:?}");

    // The same for a denied list call.
    let (registry, cluster) = setup();
    *cluster.unready.lock().unwrap() = Some("/readyz answered 403".into());
    *cluster.list_failure.lock().unwrap() = Some(TriggerFailure {
        class: FailureClass::Denied,
        responder: Responder::ApiServer,
        status: Some(403),
        reason: "cannot list resource \"gitrepositories\"".into(),
        credentials_rejected: false,
    });
    let denials = Denials::default();
    for (receive_count, secs) in [(1, 0), (2, 30)] {
        let verdict = dispatch_at(&registry, &cluster, &denials, receive_count, secs).await;
        assert!(matches!(verdict, Verdict::Retry { .. }), "{verdict:?}");
    }
}

#[tokio::test]
async fn readiness_is_asked_only_after_a_denial() {
    let (registry, cluster) = setup();
    let verdict = dispatch_at(&registry, &cluster, &Denials::default(), 1, 0).await;
    assert!(matches!(verdict, Verdict::Delivered { .. }), "{verdict:?}");
    cluster.answer(&hook("tok", "r"), vec![Ok(status(503))]);
    dispatch_at(&registry, &cluster, &Denials::default(), 1, 0).await;
    assert_eq!(*cluster.readiness_checks.lock().unwrap(), 0);
    cluster.answer(&hook("tok", "r"), vec![services_proxy_denied()]);
    dispatch_at(&registry, &cluster, &Denials::default(), 1, 0).await;
    assert_eq!(*cluster.readiness_checks.lock().unwrap(), 1);
}
