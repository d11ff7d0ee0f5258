use serde_json::json;
use time::OffsetDateTime;

use super::*;
use crate::handlers::dispatch::{DispatchMemory, DispatchPorts, DispatchRules, handle_dispatch};
use crate::handlers::plan::tests::{entry, receiver, repository};
use crate::outcome::verdict::{DeadLetterPlan, RetryPlan, Verdict};
use crate::ports::{QueueError, RegistryReadError};
use crate::push::PushEvent;
use crate::push::tests::sample_push;
use crate::registry::ClusterEntry;
use crate::testing::{FakeCluster, MemoryQueue, MemorySettle, StaticRegistry, TestClock};

const KUBE_TOKEN: &str = "kube-token-SECRET-7";

fn intake(push: &Push) -> QueueMessage {
    QueueMessage {
        id: "i1".into(),
        source: "intake".into(),
        receipt: "r1".into(),
        group: push.project.id.to_string(),
        body: push.to_json(),
        receive_count: 1,
    }
}

fn named(name: &str, subscriptions: serde_json::Value) -> ClusterEntry {
    entry(json!({"name": name, "subscriptions": subscriptions}))
}

/// What the registry answers for an entry that does not validate: the real parse error of
/// a half-edited entry (plain `http` server), which never quotes the token it holds.
fn invalid(name: &str) -> (String, RegistryReadError) {
    let text =
        json!({"name": name, "server": "http://k.example.com", "auth": {"token": KUBE_TOKEN}})
            .to_string();
    let Err(error) = ClusterEntry::from_json(&text) else {
        panic!("the entry of {name} should not validate");
    };
    (
        name.to_string(),
        RegistryReadError::Invalid {
            name: name.to_string(),
            error,
        },
    )
}

fn unreadable(name: &str) -> (String, RegistryReadError) {
    (
        name.to_string(),
        RegistryReadError::Unavailable(format!(
            "entry of cluster {name} could not be read: GetSecretValue of fluxrelay/clusters/{name} failed: AccessDeniedException: not allowed to use the KMS key"
        )),
    )
}

/// (case, usable entries, unusable entries, push, dispatched clusters, of which unusable)
type RouteCase = (
    &'static str,
    Vec<ClusterEntry>,
    Vec<(String, RegistryReadError)>,
    Push,
    &'static [&'static str],
    &'static [&'static str],
);

fn branch_deletion() -> Push {
    let mut push = sample_push();
    push.after = "0".repeat(40);
    push
}

fn tag_push() -> Push {
    let mut push = sample_push();
    push.event = PushEvent::TagPush;
    push.git_ref = "refs/tags/v1.0.0".into();
    push
}

#[tokio::test]
async fn route_sends_every_unusable_cluster_each_push_and_no_unsubscribed_usable_one() {
    let everything = json!([{"projects": ["**"]}]);
    let other_project = json!([{"projects": ["other/**"]}]);
    let release_only = json!([{"refs": ["release/*"]}]);
    let cases: Vec<RouteCase> = vec![
        (
            "usable subscribed and unsubscribed",
            vec![
                named("a", everything.clone()),
                named("b", other_project.clone()),
                named("c", release_only.clone()),
            ],
            vec![],
            sample_push(),
            &["a"],
            &[],
        ),
        (
            "an invalid entry gets the push next to the subscribed one",
            vec![
                named("a", everything.clone()),
                named("b", other_project.clone()),
            ],
            vec![invalid("bad")],
            sample_push(),
            &["a", "bad"],
            &["bad"],
        ),
        (
            "an unreadable entry is not sent every push: unreadable is not unfiltered",
            vec![named("a", everything.clone())],
            vec![unreadable("locked")],
            sample_push(),
            &["a"],
            &[],
        ),
        (
            "invalid entries get the push when no usable cluster subscribes",
            vec![
                named("b", other_project.clone()),
                named("c", release_only.clone()),
            ],
            vec![invalid("bad"), unreadable("locked")],
            sample_push(),
            &["bad"],
            &["bad"],
        ),
        (
            "a tag push reaches unusable entries too",
            vec![named("c", release_only.clone())],
            vec![invalid("bad")],
            tag_push(),
            &["bad"],
            &["bad"],
        ),
        (
            "a name listed twice gets one dispatch",
            vec![named("a", everything.clone())],
            vec![invalid("bad"), unreadable("bad"), invalid("a")],
            sample_push(),
            &["a", "bad"],
            &["a", "bad"],
        ),
        (
            "a branch deletion goes nowhere, not even to unusable entries",
            vec![named("a", everything.clone())],
            vec![invalid("bad")],
            branch_deletion(),
            &[],
            &[],
        ),
        ("no entry at all", vec![], vec![], sample_push(), &[], &[]),
    ];
    for (case, entries, unusable, push, expected, expected_unusable) in cases {
        // Only an invalid entry's subscriptions are unknown; an unreadable one is not sent
        // every push (in AWS the index keeps its last good subscriptions).
        let unusable_names: Vec<String> = unusable
            .iter()
            .filter(|(_, error)| matches!(error, RegistryReadError::Invalid { .. }))
            .map(|(n, _)| n.clone())
            .collect();
        let unsubscribed: Vec<String> = entries
            .iter()
            .filter(|e| crate::routing::route(&push, e).is_err())
            .map(|e| e.name.clone())
            .collect();
        let registry = StaticRegistry {
            entries,
            unusable,
            ..Default::default()
        };
        let queue = MemoryQueue::default();

        let report = handle_route(&registry, &queue, &[intake(&push)]).await;

        let routed = &report.messages[0];
        assert_eq!(
            routed.verdict,
            RouteVerdict::Routed {
                clusters: expected.iter().map(|c| c.to_string()).collect()
            },
            "{case}"
        );
        assert_eq!(routed.unusable, expected_unusable, "{case}");
        let dispatches = queue.dispatches.lock().unwrap().clone();
        let sent: Vec<&str> = dispatches.iter().map(|d| d.group_id()).collect();
        assert_eq!(sent, expected, "{case}");
        for dispatch in &dispatches {
            assert_eq!(dispatch.push, push, "{case}: the push goes as it came");
            assert_eq!(
                dispatch.to_json(),
                Dispatch::new(dispatch.cluster.clone(), push.clone()).to_json(),
                "{case}: the message format is the usual Dispatch"
            );
        }
        // Negative cases, whatever the table says.
        if !push.is_branch_deletion() {
            for name in &unusable_names {
                assert!(sent.contains(&name.as_str()), "{case}: {name} was dropped");
            }
        }
        for name in &unsubscribed {
            if !unusable_names.contains(name) {
                assert!(
                    !sent.contains(&name.as_str()),
                    "{case}: {name} does not subscribe"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_registry_that_cannot_be_listed_still_fails_the_push() {
    let registry = StaticRegistry {
        unavailable: true,
        unusable: vec![invalid("bad")],
        ..Default::default()
    };
    let queue = MemoryQueue::default();

    let report = handle_route(&registry, &queue, &[intake(&sample_push())]).await;

    assert_eq!(report.failed_ids(), vec!["i1"]);
    assert!(report.messages[0].unusable.is_empty());
    assert!(queue.dispatches.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_failed_enqueue_fails_a_push_routed_to_an_unusable_cluster() {
    let registry = StaticRegistry {
        unusable: vec![invalid("bad")],
        ..Default::default()
    };

    let report = handle_route(&registry, &MemoryQueue::down(), &[intake(&sample_push())]).await;

    assert_eq!(report.failed_ids(), vec!["i1"]);
    assert!(report.messages[0].unusable.is_empty());
}

// ---- route, then dispatch: what becomes of the push for an unusable cluster ----

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_763_800_000).unwrap()
}

/// Routes one push over `registry` and hands its dispatches to dispatch as received for the
/// `receive_count`-th time, with one for each of `subscribed` too (clusters the registry
/// index routes by their subscriptions, whose entries dispatch reads from their secrets).
async fn route_then_dispatch(
    registry: &StaticRegistry,
    cluster: &FakeCluster,
    receive_count: u32,
    subscribed: &[&str],
) -> Vec<(String, Verdict)> {
    let queue = MemoryQueue::default();
    let report = handle_route(registry, &queue, &[intake(&sample_push())]).await;
    assert!(report.failed_ids().is_empty(), "{report:?}");
    let mut dispatches = queue.dispatches.lock().unwrap().clone();
    dispatches.extend(
        subscribed
            .iter()
            .map(|name| Dispatch::new(*name, sample_push())),
    );
    let messages: Vec<QueueMessage> = dispatches
        .iter()
        .map(|d| QueueMessage {
            id: format!("d-{}", d.cluster),
            source: "dispatch".into(),
            receipt: format!("r-{}", d.cluster),
            group: d.cluster.clone(),
            body: d.to_json(),
            receive_count,
        })
        .collect();
    let ports = DispatchPorts {
        registry,
        clusters: cluster,
        queue: &MemorySettle::default(),
        clock: &TestClock::default(),
        gitlab: &crate::ports::NoGitLab,
    };
    let report = handle_dispatch(
        &ports,
        &DispatchRules::default(),
        &DispatchMemory::default(),
        &messages,
        now(),
    )
    .await;
    let mut verdicts: Vec<(String, Verdict)> = report
        .messages
        .into_iter()
        .map(|m| (m.dispatch.map(|d| d.cluster).unwrap_or_default(), m.verdict))
        .collect();
    verdicts.sort_by(|a, b| a.0.cmp(&b.0));
    verdicts
}

/// `prod` delivers to its generic Receiver; `bad` and `locked` are what the test adds.
fn prod_and(unusable: Vec<(String, RegistryReadError)>) -> (StaticRegistry, FakeCluster) {
    let registry = StaticRegistry {
        entries: vec![entry(json!({}))],
        unusable,
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
        "generic",
        "tok",
        json!([{"kind": "GitRepository", "name": "app"}]),
    ));
    (registry, cluster)
}

#[tokio::test]
async fn a_push_for_an_invalid_entry_is_dead_lettered_at_once_naming_the_field() {
    let (registry, cluster) = prod_and(vec![invalid("bad")]);

    let verdicts = route_then_dispatch(&registry, &cluster, 1, &[]).await;

    assert_eq!(verdicts.len(), 2, "{verdicts:?}");
    assert_eq!(verdicts[0].0, "bad");
    match &verdicts[0].1 {
        Verdict::DeadLetter(DeadLetterPlan { reason, status, .. }) => {
            assert!(reason.contains("cluster bad is invalid"), "{reason}");
            assert!(reason.contains("server:"), "{reason}");
            assert!(!reason.contains(KUBE_TOKEN), "{reason}");
            assert_eq!(*status, None);
        }
        other => panic!("expected a dead letter, got {other:?}"),
    }
    assert_eq!(verdicts[1].0, "prod");
    assert!(
        matches!(verdicts[1].1, Verdict::Delivered { .. }),
        "{verdicts:?}"
    );
    let sent = cluster.sent.lock().unwrap();
    assert!(sent.iter().all(|(name, _)| name == "prod"), "{sent:?}");
}

#[tokio::test]
async fn a_push_for_a_subscribed_cluster_whose_entry_is_unreadable_is_retried_then_dead_lettered() {
    let policy = RetryPolicy::default();
    for (receive_count, gives_up) in [
        (1, false),
        (policy.max_attempts - 1, false),
        (policy.max_attempts, true),
    ] {
        let (registry, cluster) = prod_and(vec![unreadable("locked")]);

        let verdicts = route_then_dispatch(&registry, &cluster, receive_count, &["locked"]).await;

        assert_eq!(verdicts[0].0, "locked", "{verdicts:?}");
        match (&verdicts[0].1, gives_up) {
            (
                Verdict::Retry(RetryPlan {
                    reason, delay_secs, ..
                }),
                false,
            ) => {
                assert!(reason.contains("AccessDeniedException"), "{reason}");
                assert!(*delay_secs > 0);
            }
            (Verdict::DeadLetter(DeadLetterPlan { reason, .. }), true) => {
                assert!(
                    reason.starts_with(&format!("gave up after {receive_count} attempts")),
                    "{reason}"
                );
                assert!(reason.contains("fluxrelay/clusters/locked"), "{reason}");
            }
            (other, _) => panic!("attempt {receive_count}: unexpected {other:?}"),
        }
        assert!(
            matches!(verdicts[1], (ref name, Verdict::Delivered { .. }) if name == "prod"),
            "{verdicts:?}"
        );
    }
}

// ---- changed paths from GitLab's compare API (issue 14) --------------------------------

/// A force-push whose payload lists only the new commit (touching docs/), while the commit
/// it dropped touched clusters/prod/.
fn force_push() -> Push {
    let mut push = sample_push();
    push.changed_paths = Some(vec!["docs/readme.md".into()]);
    push
}

fn paths_registry() -> StaticRegistry {
    StaticRegistry {
        entries: vec![
            named("prod", json!([{"paths": ["clusters/prod/**"]}])),
            named("docs", json!([{"paths": ["docs/**"]}])),
        ],
        ..Default::default()
    }
}

fn routed(report: &RouteReport) -> Vec<String> {
    match &report.messages[0].verdict {
        RouteVerdict::Routed { clusters } => clusters.clone(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_force_push_is_routed_by_the_straight_compare_of_the_two_trees() {
    use crate::testing::{FakeGitLab, gitlab_answer};
    let gitlab = FakeGitLab::for_instance("https://gitlab.example.com");
    gitlab.answer(
        "compare",
        vec![gitlab_answer(
            200,
            json!({"diffs": [{"old_path": "clusters/prod/app.yaml", "new_path": "clusters/prod/app.yaml", "deleted_file": false},
                             {"old_path": "docs/readme.md", "new_path": "docs/readme.md"}],
                   "compare_timeout": false}),
        )],
    );
    let queue = MemoryQueue::default();
    let report =
        handle_route_with(&paths_registry(), &queue, &gitlab, &[intake(&force_push())]).await;
    assert_eq!(routed(&report), vec!["prod", "docs"]);
    assert_eq!(report.messages[0].paths, PathsSource::Compare);
    let request = gitlab.requests.lock().unwrap()[0].clone();
    assert_eq!(request.path, "/projects/15/repository/compare");
    assert!(request.query.contains(&("straight".into(), "true".into())));
    assert!(request.query.contains(&("from".into(), "b".repeat(40))));
    // The dispatched push carries the compared paths.
    let dispatched = queue.dispatches.lock().unwrap().clone();
    assert_eq!(
        dispatched[0].push.changed_paths,
        Some(vec![
            "clusters/prod/app.yaml".into(),
            "docs/readme.md".into()
        ])
    );
}

#[tokio::test]
async fn without_a_token_the_payload_decides_and_a_failed_compare_means_unknown() {
    use crate::testing::{FakeGitLab, gitlab_answer};
    // No token for the instance: the payload's paths (the documented limit).
    let queue = MemoryQueue::default();
    let report = handle_route_with(
        &paths_registry(),
        &queue,
        &FakeGitLab::default(),
        &[intake(&force_push())],
    )
    .await;
    assert_eq!(routed(&report), vec!["docs"]);
    assert_eq!(report.messages[0].paths, PathsSource::Payload);
    // The call fails: unknown paths, so every paths subscriber gets it.
    let gitlab = FakeGitLab::for_instance("https://gitlab.example.com");
    gitlab.answer(
        "compare",
        vec![gitlab_answer(
            404,
            json!({"message": "404 Project Not Found"}),
        )],
    );
    let report = handle_route_with(
        &paths_registry(),
        &MemoryQueue::default(),
        &gitlab,
        &[intake(&force_push())],
    )
    .await;
    assert_eq!(routed(&report), vec!["prod", "docs"]);
    assert!(
        matches!(&report.messages[0].paths, PathsSource::CompareFailed { reason } if reason.contains("404"))
    );
    // GitLab cut the diff: unknown too.
    let gitlab = FakeGitLab::for_instance("https://gitlab.example.com");
    gitlab.answer(
        "compare",
        vec![gitlab_answer(
            200,
            json!({"diffs": [], "compare_timeout": true}),
        )],
    );
    let report = handle_route_with(
        &paths_registry(),
        &MemoryQueue::default(),
        &gitlab,
        &[intake(&force_push())],
    )
    .await;
    assert_eq!(routed(&report), vec!["prod", "docs"]);
}

#[tokio::test]
async fn gitlab_is_asked_only_when_a_paths_subscription_could_decide() {
    use crate::testing::FakeGitLab;
    let gitlab = FakeGitLab::for_instance("https://gitlab.example.com");
    let no_paths = StaticRegistry {
        entries: vec![named("prod", json!([{"projects": ["mike/**"]}]))],
        ..Default::default()
    };
    handle_route_with(
        &no_paths,
        &MemoryQueue::default(),
        &gitlab,
        &[intake(&force_push())],
    )
    .await;
    let other_project = StaticRegistry {
        entries: vec![named(
            "prod",
            json!([{"projects": ["other/**"], "paths": ["clusters/**"]}]),
        )],
        ..Default::default()
    };
    handle_route_with(
        &other_project,
        &MemoryQueue::default(),
        &gitlab,
        &[intake(&force_push())],
    )
    .await;
    let mut created = force_push();
    created.before = "0".repeat(40);
    handle_route_with(
        &paths_registry(),
        &MemoryQueue::default(),
        &gitlab,
        &[intake(&created)],
    )
    .await;
    assert_eq!(gitlab.calls("compare"), 0);
}

// ---- changed paths compared by dispatch (AWS: route holds no credential) ---------------

/// Route without a GitLab token, deferring the paths; then dispatch with `gitlab`, every
/// dispatch of the push in one batch. The verdict per cluster, the skip reasons, and the
/// dispatches as route queued them.
async fn deferred(
    push: Push,
    gitlab: &crate::testing::FakeGitLab,
) -> (
    Vec<(String, Verdict, Vec<String>)>,
    Vec<Dispatch>,
    PathsSource,
) {
    let registry = paths_registry();
    let (_, cluster) = prod_and(Vec::new());
    let queue = MemoryQueue::default();
    let report = handle_route_deferring_paths(&registry, &queue, &[intake(&push)]).await;
    let paths = report.messages[0].paths.clone();
    let dispatches = queue.dispatches.lock().unwrap().clone();
    let messages: Vec<QueueMessage> = dispatches
        .iter()
        .map(|d| QueueMessage {
            id: format!("d-{}", d.cluster),
            source: "dispatch".into(),
            receipt: format!("r-{}", d.cluster),
            group: d.cluster.clone(),
            body: d.to_json(),
            receive_count: 1,
        })
        .collect();
    let ports = DispatchPorts {
        registry: &registry,
        clusters: &cluster,
        queue: &MemorySettle::default(),
        clock: &TestClock::default(),
        gitlab,
    };
    let report = handle_dispatch(
        &ports,
        &DispatchRules::default(),
        &DispatchMemory::default(),
        &messages,
        now(),
    )
    .await;
    let mut verdicts: Vec<(String, Verdict, Vec<String>)> = report
        .messages
        .into_iter()
        .map(|m| {
            (
                m.dispatch.map(|d| d.cluster).unwrap_or_default(),
                m.verdict,
                m.skipped.into_iter().map(|s| s.reason).collect(),
            )
        })
        .collect();
    verdicts.sort_by(|a, b| a.0.cmp(&b.0));
    (verdicts, dispatches, paths)
}

fn compare_answer(
    paths: &[&str],
) -> Result<crate::gitlab_api::ApiResponse, crate::gitlab_api::ApiError> {
    let diffs: Vec<serde_json::Value> = paths
        .iter()
        .map(|p| json!({"old_path": p, "new_path": p}))
        .collect();
    crate::testing::gitlab_answer(200, json!({"diffs": diffs, "compare_timeout": false}))
}

#[tokio::test]
async fn without_a_token_route_sends_every_paths_subscriber_and_dispatch_decides_by_the_compare() {
    use crate::testing::FakeGitLab;
    // The force-push dropped a commit touching clusters/prod/: the compare shows it, so
    // prod gets its trigger although the payload lists only docs/.
    let gitlab = FakeGitLab::for_instance("https://gitlab.example.com");
    gitlab.answer(
        "compare",
        vec![compare_answer(&[
            "clusters/prod/app.yaml",
            "docs/readme.md",
        ])],
    );
    let (verdicts, dispatches, paths) = deferred(force_push(), &gitlab).await;
    assert_eq!(paths, PathsSource::DeferredToDispatch);
    assert!(dispatches.iter().all(|d| d.verify_paths), "{dispatches:?}");
    assert_eq!(
        dispatches
            .iter()
            .map(|d| d.cluster.as_str())
            .collect::<Vec<_>>(),
        ["prod", "docs"]
    );
    // The dispatches carry the payload's paths (dispatch's fallback without a token).
    assert_eq!(dispatches[0].push.changed_paths, force_push().changed_paths);
    assert!(
        matches!(verdicts[0].1, Verdict::Delivered { .. }),
        "{verdicts:?}"
    );
    assert!(
        matches!(verdicts[1].1, Verdict::Delivered { .. }),
        "{verdicts:?}"
    );
    assert_eq!(gitlab.calls("compare"), 1, "one compare per push per batch");

    // The compare shows docs/ only: prod is not subscribed after all, and says why.
    let gitlab = FakeGitLab::for_instance("https://gitlab.example.com");
    gitlab.answer("compare", vec![compare_answer(&["docs/readme.md"])]);
    let (verdicts, _, _) = deferred(force_push(), &gitlab).await;
    assert_eq!(verdicts[0].0, "docs");
    assert!(
        matches!(verdicts[0].1, Verdict::Delivered { .. }),
        "{verdicts:?}"
    );
    assert_eq!(verdicts[1].0, "prod");
    assert_eq!(verdicts[1].1, Verdict::NothingToTrigger);
    assert!(
        verdicts[1].2[0].contains("the changed paths from GitLab's compare match none"),
        "{verdicts:?}"
    );

    // The compare fails: the paths are unknown, so both are triggered.
    let gitlab = FakeGitLab::for_instance("https://gitlab.example.com");
    gitlab.answer(
        "compare",
        vec![crate::testing::gitlab_answer(
            500,
            json!({"message": "500"}),
        )],
    );
    let (verdicts, _, _) = deferred(force_push(), &gitlab).await;
    assert!(
        verdicts
            .iter()
            .all(|(_, v, _)| matches!(v, Verdict::Delivered { .. })),
        "{verdicts:?}"
    );

    // No token for the instance at dispatch either: the payload decides (docs only).
    let (verdicts, _, _) = deferred(force_push(), &FakeGitLab::default()).await;
    assert!(
        matches!(verdicts[0].1, Verdict::Delivered { .. }),
        "{verdicts:?}"
    );
    assert_eq!(verdicts[1].1, Verdict::NothingToTrigger, "{verdicts:?}");
    assert!(
        verdicts[1].2[0].contains("the payload's changed paths"),
        "{verdicts:?}"
    );
}

#[tokio::test]
async fn a_push_no_paths_subscription_cares_about_is_not_deferred() {
    use crate::testing::FakeGitLab;
    // A creation (no before) has nothing to compare: the payload decides, nothing marked.
    let mut push = force_push();
    push.before = "0".repeat(40);
    let gitlab = FakeGitLab::for_instance("https://gitlab.example.com");
    let (verdicts, dispatches, paths) = deferred(push, &gitlab).await;
    assert_eq!(paths, PathsSource::Payload);
    assert!(dispatches.iter().all(|d| !d.verify_paths));
    assert_eq!(dispatches.len(), 1, "{verdicts:?}");
    assert_eq!(gitlab.calls("compare"), 0);
}

/// Acknowledges only once `batch` acknowledgements are in flight at the same time: settling
/// one message after another never gets there.
struct AllAtOnce {
    barrier: tokio::sync::Barrier,
    acknowledged: std::sync::Mutex<Vec<String>>,
}

impl Settle for AllAtOnce {
    async fn acknowledge(&self, message: &QueueMessage) -> Result<(), QueueError> {
        self.barrier.wait().await;
        self.acknowledged.lock().unwrap().push(message.id.clone());
        Ok(())
    }
    async fn retry_in_place(&self, _: &QueueMessage, _: u32) -> Result<(), QueueError> {
        Err(QueueError::new("not expected"))
    }
    async fn schedule_retry(&self, _: &Dispatch, _: u32) -> Result<(), QueueError> {
        Err(QueueError::new("not expected"))
    }
    async fn dead_letter(
        &self,
        _: &QueueMessage,
        _: &str,
        _: &crate::ports::DeadLetterReason,
    ) -> Result<(), QueueError> {
        Err(QueueError::new("not expected"))
    }
    async fn schedule_confirmation(
        &self,
        _: &crate::confirm::message::Confirmation,
        _: u32,
    ) -> Result<(), QueueError> {
        Err(QueueError::new("not expected"))
    }
}

#[tokio::test]
async fn a_batch_is_settled_at_once_not_message_after_message() {
    let messages: Vec<QueueMessage> = (0..5)
        .map(|n| {
            let mut push = sample_push();
            push.key = format!("push-{n}");
            QueueMessage {
                id: format!("i{n}"),
                receipt: format!("r{n}"),
                ..intake(&push)
            }
        })
        .collect();
    let registry = StaticRegistry {
        entries: vec![named("prod", json!([{"projects": ["**"]}]))],
        ..StaticRegistry::default()
    };
    let settle = AllAtOnce {
        barrier: tokio::sync::Barrier::new(messages.len()),
        acknowledged: std::sync::Mutex::default(),
    };
    let report = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        route_and_settle(
            &registry,
            &MemoryQueue::default(),
            &settle,
            &RetryPolicy::default(),
            &messages,
        ),
    )
    .await
    .expect("the batch's acknowledgements were made one after another");
    // Each message's outcome is reported against that message, whatever order they ended in.
    for (n, routed) in report.messages.iter().enumerate() {
        assert!(
            matches!(routed.verdict, RouteVerdict::Routed { .. }),
            "{n}: {:?}",
            routed.verdict
        );
        assert_eq!(
            routed.push.as_ref().map(|p| p.key.clone()),
            Some(format!("push-{n}"))
        );
        assert!(routed.settled.is_some(), "{n}");
    }
    assert_eq!(settle.acknowledged.lock().unwrap().len(), messages.len());
}
