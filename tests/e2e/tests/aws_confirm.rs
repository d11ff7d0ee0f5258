//! Confirmation end to end on the AWS path (issue 14): the Lambda handlers in-process on
//! moto (SQS, Secrets Manager with the GitLab token), the real kube client against a real
//! kube-apiserver where the Flux controller stand-in writes what Flux writes, and the
//! GitLab API stand-in receiving the commit statuses.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use fluxrelay_adapters::cluster::KubeClusters;
use fluxrelay_core::confirm::schedule::ConfirmPolicy;
use fluxrelay_core::handlers::confirm::ConfirmRules;
use fluxrelay_e2e::pipeline::{GITLAB_SECRET, Pipeline, confirm_function};
use fluxrelay_testkit::confirm_world::{
    BRANCH, ConfirmCluster, GITLAB_TOKEN, PROJECT_ID, REPOSITORY_URL, commit, confirm_clusters,
    gitlab_with, push_hook,
};
use fluxrelay_testkit::flux_controller::{Behaviour, FluxControllerStandIn, GitRemote};
use fluxrelay_testkit::gitlab::GitLabStandIn;
use fluxrelay_testkit::netns;
use serde_json::{Value, json};

/// The `X-Gitlab-Instance` of `events/ingest-push-hook.json`.
const EVENT_INSTANCE: &str = "https://gitlab.example.com";

fn fast() -> Behaviour {
    Behaviour {
        fetch_delay: Duration::from_millis(300),
        apply_delay: Duration::from_millis(300),
        ..Behaviour::default()
    }
}

struct World {
    p: Pipeline,
    clusters: Vec<ConfirmCluster>,
    gitlab: GitLabStandIn,
    remote: GitRemote,
    controller: FluxControllerStandIn,
}

async fn world(names: &[&str], commits: &[&str], rules: ConfirmRules) -> World {
    let mut p = Pipeline::start().await;
    let clusters = confirm_clusters(&p.kube, &p.receiver, names).await;
    let gitlab = gitlab_with(commits).await;
    p.secrets
        .create_secret()
        .name(GITLAB_SECRET)
        .secret_string(
            json!({"instances": [{"url": EVENT_INSTANCE, "api_url": gitlab.api_url(), "token": GITLAB_TOKEN}]})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    p.confirm = confirm_function(
        &p.queues,
        &p.s3,
        &p.secrets,
        &p.sqs,
        KubeClusters::with_defaults().unwrap(),
        rules,
        true,
    )
    .await;
    for cluster in &clusters {
        p.register(cluster.entry(&p.kube)).await;
    }
    let remote = GitRemote::default();
    remote.set(REPOSITORY_URL, BRANCH, commits[0]);
    let controller = FluxControllerStandIn::start(
        p.kube.admin(),
        Some(&p.receiver),
        remote.clone(),
        clusters.iter().map(|c| c.namespace.clone()).collect(),
        fast(),
    );
    let world = World {
        p,
        clusters,
        gitlab,
        remote,
        controller,
    };
    let revision = format!("{BRANCH}@sha1:{}", commits[0]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !world.clusters.iter().all(|c| {
        world
            .controller
            .applied()
            .iter()
            .any(|a| a.kustomization == c.kustomization() && a.revision == revision)
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "the initial commit was not applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    world
}

impl World {
    /// Pushes `before..after` through ingest (the remote's head moved to `after` first)
    /// and runs every function until the queues are empty: every confirmation ended.
    async fn push(&self, before: &str, after: &str) -> String {
        self.remote.set(REPOSITORY_URL, BRANCH, after);
        let event = Pipeline::edited_event("ingest-push-hook.json", |hook| {
            *hook = push_hook(before, after);
        });
        let (status, body) = self.p.post_event_json(&event).await;
        assert_eq!(status, 202, "{body}");
        self.p.drain().await;
        body["keys"][0].as_str().unwrap().to_string()
    }

    fn state(&self, sha: &str, name: &str) -> Option<(String, String)> {
        self.gitlab.current(PROJECT_ID, sha).get(name).cloned()
    }

    async fn take_confirm_dead_letters(&self) -> Vec<(Value, BTreeMap<String, String>)> {
        let output = self
            .p
            .sqs
            .receive_message()
            .queue_url(&self.p.queues.confirm_dlq)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap();
        output
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                let body = serde_json::from_str(m.body.as_deref().unwrap_or("null"))
                    .unwrap_or(Value::Null);
                let attributes = m
                    .message_attributes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.string_value.unwrap_or_default()))
                    .collect();
                (body, attributes)
            })
            .collect()
    }
}

fn success(state: Option<(String, String)>) -> bool {
    state.is_some_and(|(state, _)| state == "success")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_are_confirmed_on_aws_then_a_failing_build_is_reported() {
    if !netns::enter("two_clusters_are_confirmed_on_aws_then_a_failing_build_is_reported") {
        return;
    }
    let (base, x, y) = (commit(1), commit(2), commit(3));
    let rules = ConfirmRules {
        summary_name: Some("fluxrelay".into()),
        ..ConfirmRules::default()
    };
    let w = world(&["a", "b"], &[&base, &x, &y], rules).await;
    w.push(&base, &x).await;
    assert!(
        success(w.state(&x, "fluxrelay/a")),
        "{:?}",
        w.gitlab.current(PROJECT_ID, &x)
    );
    assert!(success(w.state(&x, "fluxrelay/b")));
    assert_eq!(
        w.state(&x, "fluxrelay").unwrap(),
        ("success".into(), "deployed to all 2 clusters".into())
    );
    for name in ["fluxrelay/a", "fluxrelay/b"] {
        let posts = w
            .gitlab
            .calls()
            .iter()
            .filter(|c| c.posted.as_ref().is_some_and(|(n, _)| n == name))
            .count();
        assert!((1..=3).contains(&posts), "{name}: {posts} GitLab posts");
    }
    assert!(
        w.gitlab.statuses(PROJECT_ID, &x).iter().all(|s| !s.retried),
        "no duplicates"
    );

    w.controller.set_behaviour(
        &w.clusters[1].namespace,
        Behaviour {
            fail_build: BTreeMap::from([(y.clone(), "kustomize build failed: boom".to_string())]),
            ..fast()
        },
    );
    w.push(&x, &y).await;
    assert!(success(w.state(&y, "fluxrelay/a")));
    assert_eq!(
        w.state(&y, "fluxrelay/b").unwrap(),
        ("failed".into(), "kustomize build failed: boom".into())
    );
    assert_eq!(w.state(&y, "fluxrelay").unwrap().0, "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn superseded_timed_out_throttled_and_refused_on_aws() {
    if !netns::enter("superseded_timed_out_throttled_and_refused_on_aws") {
        return;
    }
    let commits: Vec<String> = (1..=6).map(commit).collect();
    let rules = ConfirmRules {
        policy: ConfirmPolicy {
            deadline_secs: 10,
            ..ConfirmPolicy::default()
        },
        ..ConfirmRules::default()
    };
    let refs: Vec<&str> = commits.iter().map(String::as_str).collect();
    let w = world(&["a"], &refs, rules).await;
    let namespace = w.clusters[0].namespace.clone();

    // Superseded: the branch moved on before Flux fetched.
    w.controller.set_behaviour(
        &namespace,
        Behaviour {
            fetch_delay: Duration::from_secs(2),
            ..fast()
        },
    );
    let x = &commits[1];
    w.remote.set(REPOSITORY_URL, BRANCH, &commits[2]);
    let event = Pipeline::edited_event("ingest-push-hook.json", |hook| {
        *hook = push_hook(&commits[0], x)
    });
    assert_eq!(w.p.post_event_json(&event).await.0, 202);
    w.p.drain().await;
    let (state, description) = w.state(x, "fluxrelay/a").unwrap();
    assert_eq!(state, "canceled");
    assert!(description.starts_with("superseded: "), "{description}");

    // Timed out: never applied within the 10 s deadline.
    w.controller.set_behaviour(
        &namespace,
        Behaviour {
            never_apply: true,
            ..fast()
        },
    );
    w.push(&commits[2], &commits[3]).await;
    let (state, description) = w.state(&commits[3], "fluxrelay/a").unwrap();
    assert_eq!(state, "canceled");
    assert!(
        description.starts_with("timed out: not applied within 10 s"),
        "{description}"
    );

    // GitLab answers 429 then 201: the status still arrives.
    w.controller.set_behaviour(&namespace, fast());
    w.gitlab.throttle_next(1, 1);
    w.push(&commits[3], &commits[4]).await;
    assert!(success(w.state(&commits[4], "fluxrelay/a")));
    assert!(w.gitlab.calls().iter().any(|c| c.status == 429));

    // A revoked token: dispatch delivers all the same, the final status is dead-lettered
    // with GitLab's 401 as its reason.
    w.gitlab.revoke_token(GITLAB_TOKEN);
    let hits = w.p.receiver.accepted(&namespace, "recv").len();
    let key = w.push(&commits[4], &commits[5]).await;
    assert!(
        w.p.receiver.accepted(&namespace, "recv").len() > hits,
        "dispatch unaffected"
    );
    assert!(
        w.p.take_dead_letters().await.is_empty(),
        "no dispatch dead letter"
    );
    let dead = w.take_confirm_dead_letters().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].1["fluxrelay.cluster"], "a");
    assert_eq!(dead[0].1["fluxrelay.key"], key);
    assert_eq!(dead[0].1["fluxrelay.status"], "401");
    assert!(
        dead[0].1["fluxrelay.reason"].contains("the API token is wrong"),
        "{dead:?}"
    );
    assert_eq!(
        dead[0].0["ended"]["outcome"], "success",
        "the outcome is kept for a redrive"
    );
    assert!(!format!("{dead:?}").contains(GITLAB_TOKEN));
}

/// A force-push on AWS, where route holds no credential: the commit it dropped touched
/// `deploy/`, the payload lists neither `deploy/` nor `other/`. Route sends the push to
/// both `paths` subscribers, dispatch takes the changed paths from GitLab's compare (the
/// token in its secret): `a` (deploy/**) is triggered and confirms, `b` (other/**) is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_push_reaches_the_paths_subscriber_through_dispatchs_compare() {
    if !netns::enter("a_force_push_reaches_the_paths_subscriber_through_dispatchs_compare") {
        return;
    }
    let (base, dropped, x) = (commit(1), commit(2), commit(3));
    let mut w = world(&["a", "b"], &[&base], ConfirmRules::default()).await;
    w.gitlab.commit(
        PROJECT_ID,
        BRANCH,
        &dropped,
        Some(&base),
        &[("deploy/app.yaml", Some("dropped by the force-push"))],
    );
    w.gitlab.commit(
        PROJECT_ID,
        BRANCH,
        &x,
        Some(&base),
        &[("docs/readme.md", Some("the new commit"))],
    );
    for (cluster, paths) in w.clusters.iter().zip(["deploy/**", "other/**"]) {
        let mut entry = cluster.entry(&w.p.kube);
        entry["subscriptions"] = json!([{"paths": [paths]}]);
        fluxrelay_adapters::registry_aws::store_entry(
            &w.p.s3,
            &w.p.secrets,
            &fluxrelay_e2e::pipeline::registry_location(),
            &entry,
            true,
        )
        .await
        .unwrap();
    }
    w.p.route.paths_from_dispatch = true;
    w.p.dispatch.gitlab = fluxrelay_e2e::pipeline::function_gitlab(&w.p.secrets, true).await;

    w.push(&dropped, &x).await;

    let statuses = w.gitlab.current(PROJECT_ID, &x);
    assert!(success(w.state(&x, "fluxrelay/a")), "{statuses:?}");
    assert!(
        !statuses.contains_key("fluxrelay/b"),
        "b does not subscribe to what changed: {statuses:?}"
    );
    let compares = w
        .gitlab
        .calls()
        .iter()
        .filter(|call| call.endpoint == "compare" && call.status == 200)
        .count();
    assert_eq!(compares, 1, "one compare for the push, by dispatch");
}
