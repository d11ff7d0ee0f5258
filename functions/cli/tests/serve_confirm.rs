//! Confirmation end to end in `fluxrelay serve` (issue 14): the real binary, a real
//! kube-apiserver with the Flux controller stand-in writing what Flux writes, and the
//! GitLab API stand-in receiving the commit statuses. Clusters are namespaces.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Cluster, Metrics, Serve, TempDir, post, run_fluxrelay, write_config};
use fluxrelay_testkit::confirm_world::{
    BRANCH, ConfirmCluster, GITLAB_TOKEN, INSTANCE, PROJECT_ID, REPOSITORY_URL, commit,
    confirm_clusters, gitlab_with, push_hook,
};
use fluxrelay_testkit::flux_controller::{Behaviour, FluxControllerStandIn, GitRemote};
use fluxrelay_testkit::gitlab::GitLabStandIn;
use fluxrelay_testkit::netns;
use serde_json::Value;

struct World {
    cluster: Cluster,
    clusters: Vec<ConfirmCluster>,
    gitlab: GitLabStandIn,
    remote: GitRemote,
    controller: FluxControllerStandIn,
    dir: TempDir,
}

fn fast() -> Behaviour {
    Behaviour {
        fetch_delay: Duration::from_millis(300),
        apply_delay: Duration::from_millis(300),
        ..Behaviour::default()
    }
}

async fn world(names: &[&str], commits: &[&str]) -> World {
    let cluster = Cluster::start().await;
    let clusters = confirm_clusters(&cluster.kube, &cluster.receiver, names).await;
    let gitlab = gitlab_with(commits).await;
    let remote = GitRemote::default();
    remote.set(REPOSITORY_URL, BRANCH, commits[0]);
    let controller = FluxControllerStandIn::start(
        cluster.kube.admin(),
        Some(&cluster.receiver),
        remote.clone(),
        clusters.iter().map(|c| c.namespace.clone()).collect(),
        fast(),
    );
    World {
        cluster,
        clusters,
        gitlab,
        remote,
        controller,
        dir: TempDir::new("serve-confirm"),
    }
}

impl World {
    fn config(&self, confirm: &str) -> std::path::PathBuf {
        let entries: Vec<Value> = self
            .clusters
            .iter()
            .map(|c| c.entry(&self.cluster.kube))
            .collect();
        let extra = format!(
            "max_attempts = 6\nretry_base_secs = 1\nretry_max_secs = 2\nworkers = 2\n\n[confirm]\n{confirm}\n\n\
             [[gitlab]]\nurl = \"{INSTANCE}\"\napi_url = \"{}\"\ntoken_env = \"FLUXRELAY_TEST_GITLAB_TOKEN\"\n",
            self.gitlab.api_url()
        );
        write_config(self.dir.path(), &entries, &extra)
    }

    /// Every cluster's initial commit applied (the stand-in reconciled the new objects).
    async fn settled_at(&self, sha: &str) {
        let revision = format!("{BRANCH}@sha1:{sha}");
        eventually!(
            Duration::from_secs(20),
            "the initial commit applied everywhere",
            {
                let applied = self.controller.applied();
                self.clusters.iter().all(|c| {
                    applied
                        .iter()
                        .any(|a| a.kustomization == c.kustomization() && a.revision == revision)
                })
            }
        );
    }

    fn statuses(&self, sha: &str) -> BTreeMap<String, (String, String)> {
        self.gitlab.current(PROJECT_ID, sha)
    }

    fn posts(&self, name: &str) -> usize {
        self.gitlab
            .calls()
            .iter()
            .filter(|c| c.posted.as_ref().is_some_and(|(n, _)| n == name))
            .count()
    }
}

fn state(statuses: &BTreeMap<String, (String, String)>, name: &str) -> Option<String> {
    statuses.get(name).map(|(state, _)| state.clone())
}

fn wait_command(world: &World, sha: &str, extra: &[&str]) -> (i32, String, String) {
    let api = world.gitlab.api_url();
    let mut args = vec![
        "wait",
        "--project",
        "15",
        "--sha",
        sha,
        "--gitlab-url",
        &api,
        "--poll",
        "1s",
        "--timeout",
        "20s",
    ];
    args.extend_from_slice(extra);
    let mut command = std::process::Command::new(common::fluxrelay_binary());
    command
        .args(&args)
        .env("FLUXRELAY_GITLAB_TOKEN", GITLAB_TOKEN);
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_confirm_a_commit_then_one_fails_the_next() {
    if !netns::enter("two_clusters_confirm_a_commit_then_one_fails_the_next") {
        return;
    }
    let (base, x, y) = (commit(1), commit(2), commit(3));
    let world = world(&["a", "b"], &[&base, &x, &y]).await;
    world.settled_at(&base).await;
    let config = world.config("deadline_secs = 60\nsummary_status = \"fluxrelay\"");
    let serve = Serve::start_with_env(
        &config,
        &[],
        &[("FLUXRELAY_TEST_GITLAB_TOKEN", GITLAB_TOKEN)],
    )
    .await;

    // A push of X: both clusters apply it; each gets its status, then the summary.
    world.remote.set(REPOSITORY_URL, BRANCH, &x);
    let (status, body) = post(&serve, "Push Hook", &push_hook(&base, &x)).await;
    assert_eq!(status, 202, "{body}");
    let key = body["keys"][0].as_str().unwrap().to_string();
    eventually!(
        Duration::from_secs(40),
        "success on a, b and the summary",
        {
            let statuses = world.statuses(&x);
            ["fluxrelay/a", "fluxrelay/b", "fluxrelay"]
                .iter()
                .all(|name| state(&statuses, name).as_deref() == Some("success"))
        }
    );
    let statuses = world.statuses(&x);
    assert_eq!(statuses["fluxrelay"].1, "deployed to all 2 clusters");
    assert!(
        statuses["fluxrelay/a"].1.contains("applied"),
        "{statuses:?}"
    );
    for name in ["fluxrelay/a", "fluxrelay/b"] {
        let posts = world.posts(name);
        assert!(
            (1..=3).contains(&posts),
            "{name}: {posts} posts (at most pending, running, success)"
        );
    }
    let all = world.gitlab.statuses(PROJECT_ID, &x);
    assert!(
        all.iter().all(|s| !s.retried),
        "no duplicate status: {all:?}"
    );
    let (code, stdout, stderr) = wait_command(&world, &x, &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("a\tsuccess") && stdout.contains("b\tsuccess"),
        "{stdout}"
    );
    // The metrics and the journal say the same.
    eventually!(Duration::from_secs(5), "the confirmations are counted", {
        Metrics::scrape(&serve).await.get(
            "fluxrelay_confirmations_total",
            &[
                ("cluster", "b"),
                ("outcome", "success"),
                ("reason", "applied"),
            ],
        ) == Some(1.0)
    });
    let metrics = Metrics::scrape(&serve).await;
    assert_eq!(
        metrics.value(
            "fluxrelay_push_to_applied_seconds_count",
            &[("cluster", "a")]
        ),
        1.0
    );
    assert!(
        metrics.value(
            "fluxrelay_gitlab_api_calls_total",
            &[("endpoint", "create_status"), ("status", "201")]
        ) >= 3.0
    );
    let (explained, out, err) = run_fluxrelay(
        &["explain", &key, "--config", config.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert!(explained.success(), "{err}");
    assert!(
        out.contains("applied") && out.contains("a: delivered and applied (confirmed)"),
        "{out}"
    );
    assert!(out.contains("fluxrelay/a: success"), "{out}");

    // A push of Y, whose build fails on b: b's status is failed with the message, the
    // summary failed, and `wait` exits non-zero naming b.
    world.controller.set_behaviour(
        &world.clusters[1].namespace,
        Behaviour {
            fail_build: BTreeMap::from([(
                y.clone(),
                "kustomize build failed: accumulating resources: 'missing.yaml'".to_string(),
            )]),
            ..fast()
        },
    );
    world.remote.set(REPOSITORY_URL, BRANCH, &y);
    let (status, _) = post(&serve, "Push Hook", &push_hook(&x, &y)).await;
    assert_eq!(status, 202);
    eventually!(
        Duration::from_secs(40),
        "b failed, a success, the summary failed",
        {
            let statuses = world.statuses(&y);
            state(&statuses, "fluxrelay/b").as_deref() == Some("failed")
                && state(&statuses, "fluxrelay/a").as_deref() == Some("success")
                && state(&statuses, "fluxrelay").as_deref() == Some("failed")
        }
    );
    let statuses = world.statuses(&y);
    assert_eq!(
        statuses["fluxrelay/b"].1,
        "kustomize build failed: accumulating resources: 'missing.yaml'"
    );
    assert_eq!(
        statuses["fluxrelay"].1,
        "1 of 2 clusters deployed; failed: b"
    );
    let (code, stdout, stderr) = wait_command(&world, &y, &[]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("b\tfailed\tkustomize build failed"),
        "{stdout}"
    );
    assert!(
        !serve.log_text().contains(GITLAB_TOKEN),
        "the GitLab token is never logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_overtaken_at_the_source_is_superseded_and_one_never_applied_times_out() {
    if !netns::enter(
        "a_commit_overtaken_at_the_source_is_superseded_and_one_never_applied_times_out",
    ) {
        return;
    }
    let (base, x, newer, w) = (commit(1), commit(2), commit(3), commit(4));
    let world = world(&["a"], &[&base, &x, &newer, &w]).await;
    world.settled_at(&base).await;
    let config = world.config("deadline_secs = 12");
    let serve = Serve::start_with_env(
        &config,
        &[],
        &[("FLUXRELAY_TEST_GITLAB_TOKEN", GITLAB_TOKEN)],
    )
    .await;

    // X is pushed, but the branch has moved on to a newer commit before Flux fetches.
    world.controller.set_behaviour(
        &world.clusters[0].namespace,
        Behaviour {
            fetch_delay: Duration::from_secs(2),
            ..fast()
        },
    );
    world.remote.set(REPOSITORY_URL, BRANCH, &newer);
    let (status, _) = post(&serve, "Push Hook", &push_hook(&base, &x)).await;
    assert_eq!(status, 202);
    eventually!(Duration::from_secs(30), "X canceled as superseded", {
        state(&world.statuses(&x), "fluxrelay/a").as_deref() == Some("canceled")
    });
    let description = world.statuses(&x)["fluxrelay/a"].1.clone();
    assert!(description.starts_with("superseded: "), "{description}");

    // W is pushed and never applied: canceled as timed out once the deadline passes.
    world.controller.set_behaviour(
        &world.clusters[0].namespace,
        Behaviour {
            never_apply: true,
            ..fast()
        },
    );
    world.remote.set(REPOSITORY_URL, BRANCH, &w);
    let (status, _) = post(&serve, "Push Hook", &push_hook(&newer, &w)).await;
    assert_eq!(status, 202);
    eventually!(Duration::from_secs(10), "W running", {
        state(&world.statuses(&w), "fluxrelay/a").as_deref() == Some("running")
    });
    eventually!(Duration::from_secs(30), "W canceled as timed out", {
        state(&world.statuses(&w), "fluxrelay/a").as_deref() == Some("canceled")
    });
    let description = world.statuses(&w)["fluxrelay/a"].1.clone();
    assert!(
        description.starts_with("timed out: not applied within 12 s"),
        "{description}"
    );
    assert!(
        description.contains("Kustomization ns-a/apps"),
        "{description}"
    );
    eventually!(Duration::from_secs(10), "both ends logged", {
        serve.outcomes("confirmed").len() >= 2
    });
    let outcomes: Vec<String> = serve
        .outcomes("confirmed")
        .iter()
        .map(|line| line["result"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(outcomes, vec!["superseded", "timed_out"], "one end each");
    let metrics = Metrics::scrape(&serve).await;
    assert_eq!(
        metrics.value(
            "fluxrelay_confirmations_total",
            &[
                ("cluster", "a"),
                ("outcome", "timed_out"),
                ("reason", "deadline")
            ]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_throttling_is_waited_out_and_a_wrong_token_is_dead_lettered_without_touching_dispatch()
 {
    if !netns::enter(
        "gitlab_throttling_is_waited_out_and_a_wrong_token_is_dead_lettered_without_touching_dispatch",
    ) {
        return;
    }
    let (base, x, y) = (commit(1), commit(2), commit(3));
    let world = world(&["a"], &[&base, &x, &y]).await;
    world.settled_at(&base).await;
    let config = world.config("deadline_secs = 60");
    let serve = Serve::start_with_env(
        &config,
        &[],
        &[("FLUXRELAY_TEST_GITLAB_TOKEN", GITLAB_TOKEN)],
    )
    .await;

    // GitLab answers 429 (Retry-After 2) to the first post, then 201.
    world.gitlab.throttle_next(1, 2);
    world.remote.set(REPOSITORY_URL, BRANCH, &x);
    let (status, _) = post(&serve, "Push Hook", &push_hook(&base, &x)).await;
    assert_eq!(status, 202);
    eventually!(Duration::from_secs(40), "X success after the 429", {
        state(&world.statuses(&x), "fluxrelay/a").as_deref() == Some("success")
    });
    let calls = world.gitlab.calls();
    let throttled = calls
        .iter()
        .position(|c| c.status == 429)
        .expect("a 429 was answered");
    let next = calls
        .iter()
        .skip(throttled + 1)
        .find(|c| c.endpoint == "create_status")
        .expect("a post after it");
    assert!(
        next.at.duration_since(calls[throttled].at) >= Duration::from_millis(1900),
        "Retry-After honoured"
    );

    // The token is revoked: dispatch still delivers at once; the status is dead-lettered
    // with GitLab's 401 as the reason.
    world.gitlab.revoke_token(GITLAB_TOKEN);
    world.remote.set(REPOSITORY_URL, BRANCH, &y);
    let hits_before = world.cluster.receiver.accepted("ns-a", "recv").len();
    let (status, body) = post(&serve, "Push Hook", &push_hook(&x, &y)).await;
    assert_eq!(status, 202);
    let key = body["keys"][0].as_str().unwrap().to_string();
    eventually!(Duration::from_secs(10), "dispatch delivered", {
        world.cluster.receiver.accepted("ns-a", "recv").len() > hits_before
    });
    eventually!(Duration::from_secs(40), "the status is dead-lettered", {
        Metrics::scrape(&serve).await.get(
            "fluxrelay_queue_messages",
            &[("queue", "confirm"), ("state", "dead_letter")],
        ) == Some(1.0)
    });
    let config_arg = config.to_str().unwrap();
    let (listed, out, err) = run_fluxrelay(
        &[
            "dlq", "list", "--config", config_arg, "--queue", "confirm", "--json",
        ],
        Duration::from_secs(20),
    );
    assert!(listed.success(), "{err}");
    let dead: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(dead["key"], key.as_str());
    assert_eq!(dead["cluster"], "a");
    assert_eq!(dead["status"], 401);
    assert!(
        dead["reason"]
            .as_str()
            .unwrap()
            .contains("the API token is wrong"),
        "{dead}"
    );
    assert!(!out.contains(GITLAB_TOKEN));
    let dispatch_dead = Metrics::scrape(&serve).await.value(
        "fluxrelay_queue_messages",
        &[("queue", "dispatch"), ("state", "dead_letter")],
    );
    assert_eq!(dispatch_dead, 0.0, "dispatch unaffected");
    // Fixed token, redriven: the final status is posted.
    world.gitlab.add_token(GITLAB_TOKEN, 1, &["api"]);
    let (redriven, _, err) = run_fluxrelay(
        &[
            "dlq", "redrive", "--config", config_arg, "--queue", "confirm",
        ],
        Duration::from_secs(20),
    );
    assert!(redriven.success(), "{err}");
    eventually!(Duration::from_secs(20), "Y success after the redrive", {
        state(&world.statuses(&y), "fluxrelay/a").as_deref() == Some("success")
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmation_survives_serve_being_killed_and_still_ends() {
    if !netns::enter("a_confirmation_survives_serve_being_killed_and_still_ends") {
        return;
    }
    let (base, x) = (commit(1), commit(2));
    let world = world(&["a", "b"], &[&base, &x]).await;
    world.settled_at(&base).await;
    let config = world.config("deadline_secs = 120");
    let mut serve = Serve::start_with_env(
        &config,
        &[],
        &[("FLUXRELAY_TEST_GITLAB_TOKEN", GITLAB_TOKEN)],
    )
    .await;
    for cluster in &world.clusters {
        world.controller.set_behaviour(
            &cluster.namespace,
            Behaviour {
                never_apply: true,
                ..fast()
            },
        );
    }
    world.remote.set(REPOSITORY_URL, BRANCH, &x);
    let (status, _) = post(&serve, "Push Hook", &push_hook(&base, &x)).await;
    assert_eq!(status, 202);
    eventually!(Duration::from_secs(20), "both running", {
        let statuses = world.statuses(&x);
        ["fluxrelay/a", "fluxrelay/b"]
            .iter()
            .all(|n| state(&statuses, n).as_deref() == Some("running"))
    });
    // SIGKILL mid-confirmation: both are running, their next looks queued.
    serve.kill();
    // kustomize-controller finishes while fluxrelay is down.
    for cluster in &world.clusters {
        world.cluster.kube.patch_status("kustomize.toolkit.fluxcd.io/v1", "kustomizations", &cluster.namespace, "apps", serde_json::json!({
            "observedGeneration": 1, "lastAppliedRevision": format!("{BRANCH}@sha1:{x}"), "lastAttemptedRevision": format!("{BRANCH}@sha1:{x}"),
            "conditions": [{"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded",
                            "message": format!("Applied revision: {BRANCH}@sha1:{x}"), "lastTransitionTime": "2026-11-22T00:00:00Z"}]
        })).await;
    }
    let serve = Serve::start_with_env(
        &config,
        &[],
        &[("FLUXRELAY_TEST_GITLAB_TOKEN", GITLAB_TOKEN)],
    )
    .await;
    eventually!(
        Duration::from_secs(40),
        "both end in success after the restart",
        {
            let statuses = world.statuses(&x);
            ["fluxrelay/a", "fluxrelay/b"]
                .iter()
                .all(|n| state(&statuses, n).as_deref() == Some("success"))
        }
    );
    let all = world.gitlab.statuses(PROJECT_ID, &x);
    assert_eq!(
        all.iter().filter(|s| s.state == "success").count(),
        2,
        "one success each, no duplicate: {all:?}"
    );
    // The outcome line is written once the batch is settled, just after the post.
    eventually!(Duration::from_secs(10), "both ends logged", {
        serve.outcomes("confirmed").len() >= 2
    });
    let ended: Vec<Value> = serve.outcomes("confirmed");
    assert_eq!(
        ended.len(),
        2,
        "each confirmation ended once after the restart: {ended:?}"
    );
}
