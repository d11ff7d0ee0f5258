use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use super::*;
use crate::confirm::message::Outcome;
use crate::gitlab_api::StatusState;
use crate::handlers::plan::tests::entry;
use crate::push::Push;
use crate::testing::{
    FakeCluster, FakeGitLab, MemorySettle, StaticRegistry, TestClock, gitlab_answer,
};

const INSTANCE: &str = "https://gitlab.example.com";
const X: &str = "1eabc9a41ca088515cab83f1cce49eb43e84b67f";
const OLD: &str = "5394cb7f48332b2de7c17dd8b8384bbc84b7e738";

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_763_800_000).unwrap()
}

fn push(after: &str, key: &str) -> Push {
    Push {
        before: OLD.into(),
        after: after.into(),
        checkout_sha: Some(after.into()),
        key: key.into(),
        ..crate::push::tests::sample_push()
    }
}

fn registry(clusters: &[(&str, Value)]) -> StaticRegistry {
    StaticRegistry {
        entries: clusters
            .iter()
            .map(|(name, confirm)| entry(json!({"name": name, "confirm": confirm})))
            .collect(),
        ..Default::default()
    }
}

fn source(revision: &str, handled: bool) -> Value {
    json!({
        "metadata": {"name": "app", "namespace": "flux-system", "generation": 1,
                     "annotations": {"reconcile.fluxcd.io/requestedAt": "t2"}},
        "spec": {"url": "https://gitlab.example.com/mike/diaspora.git", "ref": {"branch": "main"}},
        "status": {"observedGeneration": 1, "lastHandledReconcileAt": if handled { "t2" } else { "t1" },
                   "artifact": {"revision": revision, "lastUpdateTime": "2026-11-22T00:00:03Z"},
                   "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

fn kustomization(
    applied: &str,
    attempted: &str,
    ready: &str,
    reason: &str,
    message: &str,
) -> Value {
    json!({
        "metadata": {"name": "apps", "namespace": "flux-system", "generation": 1},
        "spec": {"sourceRef": {"kind": "GitRepository", "name": "app"}},
        "status": {"observedGeneration": 1, "lastAppliedRevision": applied, "lastAttemptedRevision": attempted,
                   "conditions": [{"type": "Ready", "status": ready, "reason": reason, "message": message,
                                   "lastTransitionTime": "2026-11-22T00:00:09Z"}]}
    })
}

/// The cluster at a stage of the commit's way: 0 not fetched, 1 fetched, 2 applied,
/// 3 failed for it.
fn cluster_at(stage: u8) -> FakeCluster {
    let cluster = FakeCluster::default();
    let at = |c: &str| format!("main@sha1:{c}");
    let (revision, ks) = match stage {
        0 => (
            at(OLD),
            kustomization(&at(OLD), &at(OLD), "True", "ReconciliationSucceeded", ""),
        ),
        1 => (
            at(X),
            kustomization(
                &at(OLD),
                &at(X),
                "Unknown",
                "Progressing",
                "Reconciliation in progress",
            ),
        ),
        2 => (
            at(X),
            kustomization(
                &at(X),
                &at(X),
                "True",
                "ReconciliationSucceeded",
                "Applied revision",
            ),
        ),
        _ => (
            at(X),
            kustomization(
                &at(OLD),
                &at(X),
                "False",
                "BuildFailed",
                "kustomize build failed: accumulating resources from 'x.yaml'",
            ),
        ),
    };
    cluster
        .repositories
        .lock()
        .unwrap()
        .push(source(&revision, stage > 0));
    cluster.kustomizations.lock().unwrap().push(ks);
    cluster
}

fn message(id: &str, confirmation: &Confirmation, receive_count: u32) -> QueueMessage {
    QueueMessage {
        id: id.into(),
        source: "confirm".into(),
        receipt: format!("receipt-{id}"),
        group: String::new(),
        body: confirmation.to_json(),
        receive_count,
    }
}

struct Stage {
    queue: MemorySettle,
    clock: TestClock,
    memory: ConfirmMemory,
    rules: ConfirmRules,
    gitlab: FakeGitLab,
}

impl Stage {
    fn new() -> Self {
        Self {
            queue: MemorySettle::default(),
            clock: TestClock::default(),
            memory: ConfirmMemory::default(),
            rules: ConfirmRules::default(),
            gitlab: FakeGitLab::for_instance(INSTANCE),
        }
    }

    async fn run(
        &self,
        registry: &StaticRegistry,
        cluster: &FakeCluster,
        messages: &[QueueMessage],
        at: OffsetDateTime,
    ) -> ConfirmReport {
        let ports = ConfirmPorts {
            registry,
            clusters: cluster,
            gitlab: &self.gitlab,
            queue: &self.queue,
            clock: &self.clock,
        };
        handle_confirm(&ports, &self.rules, &self.memory, messages, at).await
    }

    /// The confirmations scheduled so far, taken off the fake queue.
    fn take_scheduled(&self) -> Vec<(Confirmation, u32)> {
        std::mem::take(&mut *self.queue.confirmations.lock().unwrap())
    }
}

fn start(cluster: &str, key: &str) -> Confirmation {
    Confirmation::start(cluster, push(X, key), now())
}

#[tokio::test]
async fn a_commit_is_followed_to_success_with_three_posts() {
    let stage = Stage::new();
    let registry = registry(&[("prod", json!(true))]);
    let mut confirmation = start("prod", "k1");
    let mut posts = Vec::new();
    for (round, cluster_stage) in [0u8, 1, 1, 2].into_iter().enumerate() {
        let report = stage
            .run(
                &registry,
                &cluster_at(cluster_stage),
                &[message("m", &confirmation, 1)],
                now() + Duration::seconds(round as i64 * 2),
            )
            .await;
        let done = &report.messages[0];
        posts.extend(done.calls.iter().map(|c| c.state));
        if cluster_stage == 2 {
            assert_eq!(done.step, ConfirmStep::Ended);
            assert_eq!(done.settled, Settled::Acknowledged);
            let ended = done.ended().unwrap();
            assert_eq!(ended.outcome, Outcome::Success);
            assert_eq!(ended.applied_at.as_deref(), Some("2026-11-22T00:00:09Z"));
            break;
        }
        assert!(
            matches!(done.step, ConfirmStep::Rechecked { .. }),
            "{:?}",
            done.step
        );
        let mut scheduled = stage.take_scheduled();
        assert_eq!(scheduled.len(), 1, "one follow-up");
        confirmation = scheduled.remove(0).0;
        assert_eq!(confirmation.checks, round as u32 + 1);
        assert_eq!(
            confirmation.requests,
            (round as u32 + 1) * 3,
            "three lists a look"
        );
    }
    assert_eq!(
        posts,
        vec![
            Some(StatusState::Pending),
            Some(StatusState::Running),
            Some(StatusState::Success)
        ],
        "pending, running (once, though seen twice), success"
    );
    assert_eq!(
        stage.gitlab.posted(),
        vec![
            ("fluxrelay/prod".to_string(), "pending".to_string()),
            ("fluxrelay/prod".to_string(), "running".to_string()),
            ("fluxrelay/prod".to_string(), "success".to_string())
        ]
    );
    let request = stage.gitlab.requests.lock().unwrap()[0].clone();
    assert_eq!(request.path, format!("/projects/15/statuses/{X}"));
    assert!(
        request
            .form
            .contains(&("ref".to_string(), "main".to_string()))
    );
}

#[tokio::test]
async fn a_cluster_is_read_once_per_batch_whatever_the_number_of_pushes() {
    let stage = Stage::new();
    let registry = registry(&[("prod", json!(true))]);
    let cluster = cluster_at(1);
    let messages: Vec<QueueMessage> = (0..5)
        .map(|i| message(&format!("m{i}"), &start("prod", &format!("k{i}")), 1))
        .collect();
    let report = stage.run(&registry, &cluster, &messages, now()).await;
    assert_eq!(report.messages.len(), 5);
    assert_eq!(
        cluster.lists.lock().unwrap().len(),
        3,
        "GitRepositories, Kustomizations, HelmReleases"
    );
    assert_eq!(report.requests, vec![("prod".to_string(), 3)]);
    let without_helm = registry_with_helm_off();
    let cluster = cluster_at(1);
    stage
        .run(&without_helm, &cluster, &messages[..1], now())
        .await;
    assert_eq!(
        cluster.lists.lock().unwrap().len(),
        2,
        "no HelmRelease list when turned off"
    );
}

fn registry_with_helm_off() -> StaticRegistry {
    registry(&[("prod", json!({"helm_releases": false}))])
}

#[tokio::test]
async fn a_failed_build_is_posted_failed_with_the_kustomizations_message() {
    let stage = Stage::new();
    let report = stage
        .run(
            &registry(&[("prod", json!(true))]),
            &cluster_at(3),
            &[message("m", &start("prod", "k"), 1)],
            now(),
        )
        .await;
    let ended = report.messages[0].ended().unwrap();
    assert_eq!(
        (ended.outcome, ended.reason.as_str()),
        (Outcome::Failed, "BuildFailed")
    );
    let statuses = stage.gitlab.statuses.lock().unwrap().clone();
    assert_eq!(statuses.len(), 1, "straight to failed: {statuses:?}");
    assert_eq!(statuses[0].2, "failed");
    assert_eq!(
        statuses[0].3,
        "kustomize build failed: accumulating resources from 'x.yaml'"
    );
}

#[tokio::test]
async fn past_its_deadline_a_confirmation_is_canceled_as_timed_out() {
    let stage = Stage::new();
    let mut confirmation = start("prod", "k");
    confirmation.posted = Some(StatusState::Running);
    let report = stage
        .run(
            &registry(&[("prod", json!(true))]),
            &cluster_at(1),
            &[message("m", &confirmation, 1)],
            now() + Duration::minutes(16),
        )
        .await;
    let ended = report.messages[0].ended().unwrap();
    assert_eq!(ended.outcome, Outcome::TimedOut);
    let statuses = stage.gitlab.statuses.lock().unwrap().clone();
    assert_eq!(statuses[0].2, "canceled");
    assert!(
        statuses[0]
            .3
            .starts_with("timed out: not applied within 15 min; "),
        "{}",
        statuses[0].3
    );
    assert!(
        statuses[0]
            .3
            .contains("waiting for Kustomization flux-system/apps")
    );
}

#[tokio::test]
async fn a_429_is_waited_out_and_holds_back_every_post_to_that_instance() {
    let stage = Stage::new();
    stage.gitlab.answer(
        "create_status",
        vec![Ok(crate::gitlab_api::ApiResponse {
            status: 429,
            retry_after: Some("7".into()),
            body: b"Retry later".to_vec(),
            ..Default::default()
        })],
    );
    let registry = registry(&[("prod", json!(true))]);
    let report = stage
        .run(
            &registry,
            &cluster_at(1),
            &[
                message("a", &start("prod", "ka"), 1),
                message("b", &start("prod", "kb"), 1),
            ],
            now(),
        )
        .await;
    assert_eq!(
        stage.gitlab.calls("create_status"),
        1,
        "the second waits without calling"
    );
    for done in &report.messages {
        assert!(
            matches!(done.step, ConfirmStep::Rechecked { delay_secs } if delay_secs >= 6),
            "{:?}",
            done.step
        );
    }
    let scheduled = stage.take_scheduled();
    assert!(scheduled.iter().all(|(c, _)| c.posted.is_none()));
    // After the wait, both post (and only forward).
    let later: Vec<QueueMessage> = scheduled
        .iter()
        .map(|(c, _)| message(&c.push.key, c, 1))
        .collect();
    stage
        .run(
            &registry,
            &cluster_at(1),
            &later,
            now() + Duration::seconds(8),
        )
        .await;
    assert_eq!(stage.gitlab.posted().len(), 2);
    assert!(
        stage
            .gitlab
            .posted()
            .iter()
            .all(|(_, state)| state == "running")
    );
}

#[tokio::test]
async fn a_rejected_token_stops_posting_and_dead_letters_the_final_status() {
    let stage = Stage::new();
    stage.gitlab.answer(
        "create_status",
        vec![gitlab_answer(401, json!({"message": "401 Unauthorized"}))],
    );
    let registry = registry(&[("prod", json!(true))]);
    let first = stage
        .run(
            &registry,
            &cluster_at(1),
            &[message("m", &start("prod", "k"), 1)],
            now(),
        )
        .await;
    assert!(matches!(
        first.messages[0].step,
        ConfirmStep::Rechecked { .. }
    ));
    let (confirmation, _) = stage.take_scheduled().remove(0);
    assert!(matches!(
        confirmation.report,
        Report::Failed {
            status: Some(401),
            ..
        }
    ));
    // The confirmation goes on without posting, and its end is dead-lettered.
    let last = stage
        .run(
            &registry,
            &cluster_at(2),
            &[message("m2", &confirmation, 1)],
            now() + Duration::seconds(2),
        )
        .await;
    assert_eq!(
        stage.gitlab.calls("create_status"),
        1,
        "nothing more is posted"
    );
    let ConfirmStep::DeadLettered { reason } = &last.messages[0].step else {
        panic!("{:?}", last.messages[0].step);
    };
    assert!(reason.contains("401"), "{reason}");
    assert_eq!(last.messages[0].ended().unwrap().outcome, Outcome::Success);
    let (_, body, why) = stage.queue.dead_letters.lock().unwrap()[0].clone();
    assert_eq!(why.cluster.as_deref(), Some("prod"));
    assert_eq!(why.key.as_deref(), Some("k"));
    assert_eq!(why.status, Some(401));
    // Redriven once the token is fixed, it posts the final status and ends.
    let redriven = Confirmation::from_json(&body).unwrap();
    assert_eq!(redriven.report, Report::Active);
    let done = stage
        .run(
            &registry,
            &cluster_at(2),
            &[message("m3", &redriven, 1)],
            now() + Duration::minutes(30),
        )
        .await;
    assert_eq!(done.messages[0].step, ConfirmStep::Ended);
    assert_eq!(
        stage.gitlab.posted(),
        vec![("fluxrelay/prod".to_string(), "success".to_string())]
    );
}

#[tokio::test]
async fn without_a_token_for_the_instance_it_is_still_confirmed_but_nothing_is_posted() {
    let stage = Stage {
        gitlab: FakeGitLab::default(),
        ..Stage::new()
    };
    let report = stage
        .run(
            &registry(&[("prod", json!(true))]),
            &cluster_at(2),
            &[message("m", &start("prod", "k"), 1)],
            now(),
        )
        .await;
    assert_eq!(report.messages[0].step, ConfirmStep::Ended);
    assert!(report.messages[0].calls.is_empty());
    assert_eq!(
        report.messages[0].confirmation.as_ref().unwrap().report,
        Report::NotConfigured
    );
}

#[tokio::test]
async fn a_cluster_without_confirm_drops_the_message_without_reading_anything() {
    let stage = Stage::new();
    let cluster = cluster_at(2);
    let off = StaticRegistry {
        entries: vec![entry(json!({"name": "prod"}))],
        ..Default::default()
    };
    let report = stage
        .run(
            &off,
            &cluster,
            &[message("m", &start("prod", "k"), 1)],
            now(),
        )
        .await;
    assert_eq!(report.messages[0].step, ConfirmStep::NotEnabled);
    assert_eq!(report.messages[0].settled, Settled::Acknowledged);
    assert!(cluster.lists.lock().unwrap().is_empty());
    assert!(stage.gitlab.requests.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_redelivered_terminal_post_is_not_made_twice() {
    let stage = Stage::new();
    let registry = registry(&[("prod", json!(true))]);
    // A first delivery posted success, then its acknowledgement was lost.
    let mut confirmation = start("prod", "k");
    confirmation.posted = Some(StatusState::Running);
    stage
        .run(
            &registry,
            &cluster_at(2),
            &[message("m", &confirmation, 1)],
            now(),
        )
        .await;
    assert_eq!(stage.gitlab.calls("create_status"), 1);
    stage
        .run(
            &registry,
            &cluster_at(2),
            &[message("m", &confirmation, 2)],
            now(),
        )
        .await;
    assert_eq!(
        stage.gitlab.calls("create_status"),
        1,
        "listed, found, not posted again"
    );
    assert_eq!(stage.gitlab.calls("list_statuses"), 1);
}

#[tokio::test]
async fn a_look_that_outlived_a_restart_reads_before_its_terminal_post() {
    // serve was killed after sending look n+1 and before acknowledging look n: after the
    // restart look n came back (received twice: reads, posts success) and look n+1, which
    // the earlier run scheduled, is received once. It must read too, and post nothing.
    let mut stage = Stage::new();
    stage.rules.instance = Some("serve-2".into());
    let registry = registry(&[("prod", json!(true))]);
    let mut twin = start("prod", "k");
    twin.posted = Some(StatusState::Running);
    stage
        .run(&registry, &cluster_at(2), &[message("n", &twin, 2)], now())
        .await;
    assert_eq!(
        stage.gitlab.calls("create_status"),
        1,
        "the redelivered look posts"
    );
    twin.checks = 1;
    twin.scheduled_by = Some("serve-1".into());
    stage
        .run(
            &registry,
            &cluster_at(2),
            &[message("n+1", &twin, 1)],
            now(),
        )
        .await;
    assert_eq!(
        stage.gitlab.calls("create_status"),
        1,
        "the earlier run's look read, found the end, posted nothing"
    );
    assert_eq!(stage.gitlab.calls("list_statuses"), 2);

    // Within one run, a look this run scheduled posts its end without the read.
    let mut stage = Stage::new();
    stage.rules.instance = Some("serve-2".into());
    let mut look = start("prod", "k2");
    look.posted = Some(StatusState::Running);
    look.scheduled_by = Some("serve-2".into());
    stage
        .run(&registry, &cluster_at(2), &[message("m", &look, 1)], now())
        .await;
    assert_eq!(stage.gitlab.calls("create_status"), 1);
    assert_eq!(stage.gitlab.calls("list_statuses"), 0);
    // And the looks it schedules say so.
    let mut stage = Stage::new();
    stage.rules.instance = Some("serve-3".into());
    stage
        .run(
            &registry,
            &cluster_at(1),
            &[message("s", &start("prod", "k3"), 1)],
            now(),
        )
        .await;
    let scheduled = stage.take_scheduled();
    assert!(!scheduled.is_empty());
    assert!(
        scheduled
            .iter()
            .all(|(c, _)| c.scheduled_by.as_deref() == Some("serve-3")),
        "{scheduled:?}"
    );
}

#[tokio::test]
async fn an_unreadable_cluster_is_looked_at_again_and_a_junk_message_is_dead_lettered() {
    let stage = Stage::new();
    let cluster = cluster_at(2);
    *cluster.list_failure.lock().unwrap() = Some(crate::handlers::plan::configuration_failure(
        crate::outcome::classify::FailureClass::Retryable,
        "could not reach https://127.0.0.1:6443".into(),
    ));
    let junk = QueueMessage {
        body: "{\"v\": 9}".into(),
        ..message("junk", &start("prod", "k"), 1)
    };
    let report = stage
        .run(
            &registry(&[("prod", json!(true))]),
            &cluster,
            &[message("m", &start("prod", "k"), 1), junk],
            now(),
        )
        .await;
    let seen = report
        .messages
        .iter()
        .find(|m| m.message_id == "m")
        .unwrap();
    assert_eq!(seen.seen.as_ref().unwrap().reason, "cluster_unreadable");
    assert!(matches!(seen.step, ConfirmStep::Rechecked { .. }));
    let junk = report
        .messages
        .iter()
        .find(|m| m.message_id == "junk")
        .unwrap();
    assert!(matches!(junk.step, ConfirmStep::Unreadable { .. }));
    assert_eq!(stage.queue.dead_letters.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_consumer_api_not_served_means_none_only_from_a_ready_apiserver() {
    // Source at the commit; the Kustomization list answers Go's plain 404 (the path has no
    // handler): what an older apiserver answers for a CRD's paths while it restarts.
    let not_served = crate::outcome::classify::classify_apiserver_response(
        &crate::outcome::classify::TriggerResponse {
            status: 404,
            content_type: Some("text/plain; charset=utf-8".into()),
            body: b"404 page not found\n".to_vec(),
        },
        "list kustomizations in flux-system",
    )
    .unwrap_err();
    let registry = registry(&[("prod", json!(true))]);
    // One look at a cluster whose source has the commit, its apiserver ready or not.
    let look = |unready: Option<&str>| {
        let cluster = cluster_at(1);
        *cluster.consumer_list_failure.lock().unwrap() = Some(not_served.clone());
        *cluster.unready.lock().unwrap() = unready.map(str::to_string);
        let registry = &registry;
        async move {
            let report = Stage::new()
                .run(
                    registry,
                    &cluster,
                    &[message("m", &start("prod", "k"), 1)],
                    now(),
                )
                .await;
            (report.messages.into_iter().next().unwrap(), cluster)
        }
    };

    // Not ready: not "no consumers" (that would confirm a commit nothing applied).
    let (seen, _) = look(Some("/readyz answered 500")).await;
    let observation = seen.seen.as_ref().unwrap();
    assert_eq!(observation.reason, "cluster_unreadable");
    assert!(
        observation.message.contains("not trusted"),
        "{observation:?}"
    );
    assert!(
        matches!(seen.step, ConfirmStep::Rechecked { .. }),
        "{:?}",
        seen.step
    );

    // Ready: kustomize-controller is not installed, and the source alone decides.
    let (done, cluster) = look(None).await;
    assert_eq!(done.step, ConfirmStep::Ended, "{done:?}");
    assert_eq!(done.ended().unwrap().outcome, Outcome::Success);
    // Asked once for each kind not served (Kustomizations and HelmReleases).
    assert_eq!(*cluster.readiness_checks.lock().unwrap(), 2);
}

#[tokio::test]
async fn the_summary_is_posted_once_every_cluster_has_ended() {
    let stage = Stage {
        rules: ConfirmRules {
            summary_name: Some("fluxrelay".into()),
            ..ConfirmRules::default()
        },
        ..Stage::new()
    };
    let registry = registry(&[("a", json!(true)), ("b", json!(true))]);
    // b is still running when a ends: no summary yet.
    let mut b = start("b", "k");
    b.posted = Some(StatusState::Running);
    stage.gitlab.statuses.lock().unwrap().push((
        1,
        "fluxrelay/b".into(),
        "running".into(),
        String::new(),
    ));
    stage
        .run(
            &registry,
            &cluster_at(2),
            &[message("a", &start("a", "k"), 1)],
            now(),
        )
        .await;
    assert!(
        stage
            .gitlab
            .posted()
            .iter()
            .all(|(name, _)| name != "fluxrelay"),
        "{:?}",
        stage.gitlab.posted()
    );
    stage
        .run(&registry, &cluster_at(2), &[message("b", &b, 1)], now())
        .await;
    let summaries: Vec<_> = stage
        .gitlab
        .statuses
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, name, _, _)| name == "fluxrelay")
        .cloned()
        .collect();
    assert_eq!(summaries.len(), 1, "{summaries:?}");
    assert_eq!(summaries[0].2, "success");
    assert_eq!(summaries[0].3, "deployed to all 2 clusters");
}

#[tokio::test]
async fn a_follow_up_that_cannot_be_scheduled_leaves_the_message_to_come_back() {
    let stage = Stage::new();
    *stage.queue.refuse_confirmations.lock().unwrap() = true;
    let report = stage
        .run(
            &registry(&[("prod", json!(true))]),
            &cluster_at(1),
            &[message("m", &start("prod", "k"), 1)],
            now(),
        )
        .await;
    assert!(report.messages[0].settled.comes_back());
    assert_eq!(report.failed_ids(), vec!["m"]);
}

#[tokio::test]
async fn two_clusters_ending_in_one_batch_post_the_summary_once() {
    let stage = Stage {
        rules: ConfirmRules {
            summary_name: Some("fluxrelay".into()),
            ..ConfirmRules::default()
        },
        ..Stage::new()
    };
    let registry = registry(&[("a", json!(true)), ("b", json!(true))]);
    let report = stage
        .run(
            &registry,
            &cluster_at(2),
            &[
                message("a", &start("a", "k"), 1),
                message("b", &start("b", "k"), 1),
            ],
            now(),
        )
        .await;
    assert!(
        report.messages.iter().all(|m| m.step == ConfirmStep::Ended),
        "{report:?}"
    );
    let summaries = stage
        .gitlab
        .posted()
        .into_iter()
        .filter(|(name, _)| name == "fluxrelay")
        .count();
    assert_eq!(summaries, 1);
    assert_eq!(
        stage.gitlab.calls("list_statuses"),
        1,
        "one read for the commit"
    );
}

#[tokio::test]
async fn a_late_twin_never_cancels_an_end_already_reported() {
    let stage = Stage::new();
    // The twin confirmation (the same push, delivered twice) already reported success.
    stage.gitlab.statuses.lock().unwrap().push((
        1,
        "fluxrelay/prod".into(),
        "success".into(),
        "applied".into(),
    ));
    // This one starts late and finds the source moved on: superseded, but not posted.
    let cluster = FakeCluster::default();
    cluster
        .repositories
        .lock()
        .unwrap()
        .push(source(&format!("main@sha1:{OLD}"), true));
    let report = stage
        .run(
            &registry(&[("prod", json!(true))]),
            &cluster,
            &[message("m", &start("prod", "k"), 1)],
            now(),
        )
        .await;
    assert_eq!(
        report.messages[0].ended().unwrap().outcome,
        Outcome::Superseded
    );
    assert_eq!(
        stage.gitlab.calls("create_status"),
        0,
        "{:?}",
        stage.gitlab.posted()
    );
    assert_eq!(stage.gitlab.calls("list_statuses"), 1);
}
