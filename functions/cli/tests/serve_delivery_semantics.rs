//! The delivery promise, tried as a user would break it: "every accepted push reaches every
//! subscribed cluster", in the odd sequences an operator produces while rolling back an
//! incident. Each test fails on the code before docs/design.md's delivery semantics.
//!
//! - A→B, B→A, A→B: the third push is the same `before..after` as the first, and is
//!   delivered (it used to be dropped as a duplicate).
//! - A tag deleted and created again within five minutes is delivered again.
//! - GitLab resending one delivery (same `Idempotency-Key`) is queued once; another hook's
//!   delivery of the same push is its own (one extra trigger at most).
//! - A rollback whose commit a cached list says the cluster is already at is triggered.
//! - A Receiver that stays not Ready holds back no other Receiver or push of the cluster.
//! - A hung apiserver does not delay another cluster.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{
    CLUSTER, Cluster, DIASPORA_URL, EXAMPLE_URL, Metrics, NAMESPACE, Serve, TempDir, WEBHOOK_TOKEN,
    http_client, payload, write_config,
};
use fluxrelay_testkit::netns;
use serde_json::{Value, json};

/// POSTs a webhook with extra headers (an `Idempotency-Key`, as GitLab 17.4+ sends).
async fn post_with(
    serve: &Serve,
    gitlab_event: &str,
    payload: &Value,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut request = http_client()
        .post(serve.url("/webhook"))
        .header("content-type", "application/json")
        .header("x-gitlab-event", gitlab_event)
        .header("x-gitlab-token", WEBHOOK_TOKEN);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.body(payload.to_string()).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn sha(c: char) -> String {
    c.to_string().repeat(40)
}

/// diaspora's push hook moving `refs/heads/master` from `before` to `after`.
fn branch_push(before: char, after: char) -> Value {
    let mut hook = payload("push-hook.json");
    hook["before"] = json!(sha(before));
    hook["after"] = json!(sha(after));
    hook["checkout_sha"] = json!(sha(after));
    hook
}

/// The `after` of every request a Receiver answered 200, in arrival order.
fn delivered_afters(cluster: &Cluster, receiver: &str) -> Vec<String> {
    cluster
        .receiver
        .accepted(NAMESPACE, receiver)
        .iter()
        .map(|hit| {
            let body: Value = serde_json::from_slice(&hit.body).unwrap_or(Value::Null);
            body["after"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

async fn diaspora_cluster() -> Cluster {
    let cluster = Cluster::start().await;
    cluster
        .git_repository("diaspora", DIASPORA_URL, json!({"branch": "master"}))
        .await;
    cluster
        .flux_receiver("diaspora", "generic", "generic-token", &[], "diaspora")
        .await;
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_push_of_the_same_commits_after_a_rollback_is_delivered_last() {
    if !netns::enter("a_re_push_of_the_same_commits_after_a_rollback_is_delivered_last") {
        return;
    }
    let cluster = diaspora_cluster().await;
    let dir = TempDir::new("serve-repush");
    let config = write_config(dir.path(), &[cluster.entry(&[])], "");
    let serve = Serve::start(&config, &[]).await;
    // A→B, B→A (the rollback), A→B (roll forward again), each once delivered before the
    // next: the branch ends at B, and so must the last trigger.
    for (n, (before, after)) in [('a', 'b'), ('b', 'a'), ('a', 'b')].into_iter().enumerate() {
        let (status, answer) =
            post_with(&serve, "Push Hook", &branch_push(before, after), &[]).await;
        assert_eq!(
            (status, answer["status"].as_str()),
            (202, Some("accepted")),
            "{answer}"
        );
        eventually!(
            Duration::from_secs(20),
            format!("push {} ({before}→{after}) is delivered", n + 1),
            delivered_afters(&cluster, "diaspora").len() > n
        );
    }
    assert_eq!(
        delivered_afters(&cluster, "diaspora"),
        vec![sha('b'), sha('a'), sha('b')],
        "the roll forward after the rollback is a push of its own"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_deleted_and_created_again_within_five_minutes_is_delivered_again() {
    if !netns::enter("a_tag_deleted_and_created_again_within_five_minutes_is_delivered_again") {
        return;
    }
    let cluster = Cluster::start().await;
    cluster
        .git_repository("release", EXAMPLE_URL, json!({"tag": "v1.0.0"}))
        .await;
    cluster
        .flux_receiver("release", "generic", "generic-token", &[], "release")
        .await;
    let dir = TempDir::new("serve-retag");
    let config = write_config(dir.path(), &[cluster.entry(&[])], "");
    let serve = Serve::start(&config, &[]).await;
    // jsmith/example's tag push hook, for tag v1.0.0.
    let tag = |before: &str, after: &str| {
        let mut hook = payload("tag-push-hook.json");
        hook["ref"] = json!("refs/tags/v1.0.0");
        hook["before"] = json!(before);
        hook["after"] = json!(after);
        hook["checkout_sha"] = if after == "0".repeat(40) {
            Value::Null
        } else {
            json!(after)
        };
        hook
    };
    let (zero, commit) = ("0".repeat(40), sha('c'));
    let (status, answer) = post_with(&serve, "Tag Push Hook", &tag(&zero, &commit), &[]).await;
    assert_eq!(status, 202, "{answer}");
    eventually!(
        Duration::from_secs(20),
        "the tag's creation is delivered",
        delivered_afters(&cluster, "release").contains(&commit)
    );
    // Re-run the release: delete the tag and create it again at the same commit.
    for (before, after) in [(&commit, &zero), (&zero, &commit)] {
        let (status, answer) = post_with(&serve, "Tag Push Hook", &tag(before, after), &[]).await;
        assert_eq!(
            (status, answer["status"].as_str()),
            (202, Some("accepted")),
            "{answer}"
        );
    }
    eventually!(
        Duration::from_secs(20),
        "the tag's creation again is delivered",
        delivered_afters(&cluster, "release")
            .iter()
            .filter(|after| **after == commit)
            .count()
            == 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitlab_resend_is_queued_once_and_another_hooks_delivery_of_the_push_once_more() {
    if !netns::enter(
        "a_gitlab_resend_is_queued_once_and_another_hooks_delivery_of_the_push_once_more",
    ) {
        return;
    }
    let cluster = diaspora_cluster().await;
    let dir = TempDir::new("serve-idempotency");
    let config = write_config(dir.path(), &[cluster.entry(&[])], "");
    let serve = Serve::start(&config, &[]).await;
    let push = branch_push('a', 'b');
    let project_hook = [("idempotency-key", "8b1e7c2a-0000-4000-8000-000000000001")];
    let (status, first) = post_with(&serve, "Push Hook", &push, &project_hook).await;
    assert_eq!(status, 202, "{first}");
    eventually!(
        Duration::from_secs(20),
        "the push is delivered",
        delivered_afters(&cluster, "diaspora").len() == 1
    );
    // GitLab resends the same delivery (manual "Resend request" keeps the key): the same
    // key in the answer, and nothing more is queued or triggered.
    let (status, resent) = post_with(&serve, "Push Hook", &push, &project_hook).await;
    assert_eq!(status, 202, "{resent}");
    assert_eq!(first["keys"], resent["keys"], "one delivery, one key");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(delivered_afters(&cluster, "diaspora").len(), 1);
    let metrics = Metrics::scrape(&serve).await;
    assert_eq!(metrics.queued(), 0.0, "{}", metrics.text);
    assert_eq!(
        metrics.value(
            "fluxrelay_dispatches_total",
            &[("cluster", CLUSTER), ("outcome", "delivered")]
        ),
        1.0
    );

    // The same push through the project's group hook (another delivery, another key),
    // arriving after the first was delivered: one more trigger, which costs a Git fetch.
    let group_hook = [("idempotency-key", "8b1e7c2a-0000-4000-8000-000000000002")];
    let (status, other) = post_with(&serve, "Push Hook", &push, &group_hook).await;
    assert_eq!(status, 202, "{other}");
    assert_ne!(
        first["keys"], other["keys"],
        "another delivery is another push"
    );
    eventually!(
        Duration::from_secs(20),
        "the other hook's delivery triggers once more",
        delivered_afters(&cluster, "diaspora").len() == 2
    );
    assert_eq!(
        delivered_afters(&cluster, "diaspora"),
        vec![sha('b'), sha('b')]
    );
}

/// Sets the GitRepository's status as source-controller would after fetching `after`: its
/// artifact, made at `made` (RFC 3339), Ready on its generation, nothing pending.
async fn flux_fetched(cluster: &Cluster, name: &str, after: &str, made: &str) {
    let object = cluster
        .kube
        .get_json(
            "source.toolkit.fluxcd.io/v1",
            "gitrepositories",
            NAMESPACE,
            name,
        )
        .await;
    let generation = object["metadata"]["generation"].as_i64().unwrap_or(1);
    cluster
        .kube
        .patch_status(
            "source.toolkit.fluxcd.io/v1",
            "gitrepositories",
            NAMESPACE,
            name,
            json!({
                "observedGeneration": generation,
                "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded",
                                "message": format!("stored artifact for revision 'master@sha1:{after}'"),
                                "lastTransitionTime": made}],
                "artifact": {"revision": format!("master@sha1:{after}"), "lastUpdateTime": made,
                             "path": "x", "url": "http://source-controller/x", "digest": "sha256:0"},
            }),
        )
        .await;
}

fn rfc3339(at: time::OffsetDateTime) -> String {
    at.replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_within_the_list_cache_window_is_triggered() {
    if !netns::enter("a_rollback_within_the_list_cache_window_is_triggered") {
        return;
    }
    let cluster = diaspora_cluster().await;
    let long_ago = rfc3339(time::OffsetDateTime::now_utc() - time::Duration::hours(1));
    flux_fetched(&cluster, "diaspora", &sha('a'), &long_ago).await;
    let dir = TempDir::new("serve-rollback");
    let config = write_config(dir.path(), &[cluster.entry(&[])], "");
    let serve = Serve::start(&config, &[]).await;

    // A→B: triggered (the lists are read, and cached for 30 s, showing A).
    post_with(&serve, "Push Hook", &branch_push('a', 'b'), &[]).await;
    eventually!(
        Duration::from_secs(20),
        "A→B is delivered",
        delivered_afters(&cluster, "diaspora") == vec![sha('b')]
    );
    // Flux fetches B; then, seconds later, the rollback B→A arrives while the cache still
    // says A.
    flux_fetched(
        &cluster,
        "diaspora",
        &sha('b'),
        &rfc3339(time::OffsetDateTime::now_utc()),
    )
    .await;
    post_with(&serve, "Push Hook", &branch_push('b', 'a'), &[]).await;
    eventually!(
        Duration::from_secs(20),
        "the rollback B→A is triggered, not skipped as \"already at A\"",
        delivered_afters(&cluster, "diaspora") == vec![sha('b'), sha('a')]
    );

    drop(serve);

    // Skipping stays possible where it is provably right: Flux fetched A well after this
    // delivery of the rollback was accepted (its interval beat a delayed dispatch), and a
    // fresh read shows it settled. (A new process, so no list is cached.)
    let later = rfc3339(time::OffsetDateTime::now_utc() + time::Duration::minutes(1));
    flux_fetched(&cluster, "diaspora", &sha('a'), &later).await;
    let dir = TempDir::new("serve-rollback-settled");
    let config = write_config(dir.path(), &[cluster.entry(&[])], "");
    let serve = Serve::start(&config, &[]).await;
    let (status, _) = post_with(
        &serve,
        "Push Hook",
        &branch_push('b', 'a'),
        &[("idempotency-key", "another-hook")],
    )
    .await;
    assert_eq!(status, 202);
    eventually!(
        Duration::from_secs(20),
        "the delivery is settled as nothing to trigger",
        Metrics::scrape(&serve)
            .await
            .get(
                "fluxrelay_dispatches_total",
                &[("cluster", CLUSTER), ("outcome", "nothing_to_trigger")]
            )
            .is_some()
    );
    assert_eq!(delivered_afters(&cluster, "diaspora").len(), 2);
    let skipped = serve.outcomes("nothing_to_trigger");
    assert!(
        skipped[0]
            .to_string()
            .contains("already at the pushed revision"),
        "{skipped:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_stays_not_ready_delays_no_other_receiver_of_the_cluster() {
    if !netns::enter("a_receiver_that_stays_not_ready_delays_no_other_receiver_of_the_cluster") {
        return;
    }
    // Two tenants deploy diaspora's master with a Receiver each; tenant-b's Receiver is not
    // Ready (its Secret is missing, say) and stays so.
    let cluster = diaspora_cluster().await;
    cluster
        .git_repository("diaspora-b", DIASPORA_URL, json!({"branch": "master"}))
        .await;
    cluster
        .flux_receiver("tenant-b", "generic", "tenant-b-token", &[], "diaspora-b")
        .await;
    cluster
        .kube
        .patch_status(
            "notification.toolkit.fluxcd.io/v1",
            "receivers",
            NAMESPACE,
            "tenant-b",
            json!({"conditions": [{"type": "Ready", "status": "False", "reason": "TokenNotFound",
                                   "message": "secret not found", "lastTransitionTime": "2026-11-22T00:00:00Z"}]}),
        )
        .await;
    let dir = TempDir::new("serve-not-ready");
    let config = write_config(
        dir.path(),
        &[cluster.entry(&[])],
        "retry_base_secs = 5\nretry_max_secs = 60\n",
    );
    let serve = Serve::start(&config, &[]).await;
    // Three pushes a few seconds apart: each reaches tenant a's Receiver at once, while
    // tenant b's retries wait out their backoff on their own.
    for (n, (before, after)) in [('a', 'b'), ('b', 'c'), ('c', 'd')].into_iter().enumerate() {
        let posted = Instant::now();
        post_with(&serve, "Push Hook", &branch_push(before, after), &[]).await;
        eventually!(
            Duration::from_secs(20),
            format!("push {} reaches tenant a", n + 1),
            delivered_afters(&cluster, "diaspora").len() > n
        );
        let took = posted.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "push {} took {took:?} to reach tenant a: held behind tenant b's retry",
            n + 1
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert_eq!(
        delivered_afters(&cluster, "diaspora"),
        vec![sha('b'), sha('c'), sha('d')]
    );
    assert!(cluster.receiver.accepted(NAMESPACE, "tenant-b").is_empty());
    let text = serve.log_text();
    assert!(
        text.contains("receiver/flux-system/tenant-b"),
        "the retries name the Receiver they wait for"
    );
}

/// A TCP endpoint that accepts connections (the kernel completes the handshake) and never
/// reads or answers: what a stopped (SIGSTOP) or wedged apiserver looks like to a client.
fn hung_apiserver() -> (std::net::TcpListener, SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// The push → Receiver hit latencies of `pushes` pushes to the healthy cluster, one after
/// the other, sorted.
async fn latencies(serve: &Serve, cluster: &Cluster, first: usize, pushes: usize) -> Vec<Duration> {
    let mut latencies = Vec::new();
    for n in first..first + pushes {
        let before = delivered_afters(cluster, "diaspora").len();
        let mut hook = branch_push('a', 'a');
        let after = format!("{:040x}", n + 1);
        hook["after"] = json!(after);
        hook["checkout_sha"] = json!(after);
        let posted = Instant::now();
        let (status, answer) = post_with(serve, "Push Hook", &hook, &[]).await;
        assert_eq!(status, 202, "{answer}");
        eventually!(
            Duration::from_secs(30),
            format!("push {n} reaches the healthy cluster"),
            delivered_afters(cluster, "diaspora").len() > before
        );
        latencies.push(posted.elapsed());
    }
    latencies.sort();
    latencies
}

/// Four hung apiservers: as many as serve used to dispatch at once (`[dispatch] workers`
/// was 4 by default), when they held every slot and the healthy cluster waited for their
/// connect timeout on every push (p50 148 ms alone, 5.0 s beside them).
const HUNG_APISERVERS: usize = 4;
/// serve's own default for `[dispatch] workers` (this file's other tests set 2).
const DISPATCH_DEFAULT_WORKERS: &str =
    "max_attempts = 4\nretry_base_secs = 1\nretry_max_secs = 2\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_apiservers_do_not_delay_another_cluster() {
    if !netns::enter("hung_apiservers_do_not_delay_another_cluster") {
        return;
    }
    let cluster = diaspora_cluster().await;
    let mut held = Vec::new();
    let mut entries = vec![cluster.entry(&[])];
    for n in 0..HUNG_APISERVERS {
        let (listener, hung_addr) = hung_apiserver();
        held.push(listener);
        let mut hung = cluster.entry(&[]);
        hung["name"] = json!(format!("hung-{n}"));
        hung["server"] = json!(format!("https://{hung_addr}"));
        entries.push(hung);
    }

    // Undisturbed: only the healthy cluster.
    let dir = TempDir::new("serve-alone");
    let config = write_config(dir.path(), &[cluster.entry(&[])], DISPATCH_DEFAULT_WORKERS);
    let serve = Serve::start(&config, &[]).await;
    let alone = latencies(&serve, &cluster, 0, 11).await;
    drop(serve);

    // The same pushes, each also routed to clusters whose apiservers never answer.
    let dir = TempDir::new("serve-next-to-hung");
    let config = write_config(dir.path(), &entries, DISPATCH_DEFAULT_WORKERS);
    let serve = Serve::start(&config, &[]).await;
    let beside = latencies(&serve, &cluster, 100, 11).await;
    eprintln!(
        "healthy cluster push → hit over 11 pushes: alone p50 {:?} p90 {:?}; beside {HUNG_APISERVERS} hung apiservers p50 {:?} p90 {:?}",
        alone[5], alone[9], beside[5], beside[9]
    );
    assert!(
        beside[5] <= alone[5] * 2,
        "the healthy cluster's p50 went from {:?} to {:?} beside hung apiservers",
        alone[5],
        beside[5]
    );
    // Not only the median: no push of the healthy cluster may wait for the hung ones'
    // connect timeout (5 s), as every other one did when a batch was settled as a whole.
    assert!(
        beside[9] <= (alone[9] * 2).max(Duration::from_secs(1)),
        "the healthy cluster's p90 went from {:?} to {:?} beside hung apiservers: {beside:?}",
        alone[9],
        beside[9]
    );
    // The hung clusters' pushes are waiting to be retried, not lost or dead-lettered.
    let metrics = Metrics::scrape(&serve).await;
    assert_eq!(metrics.dead_letters(), 0.0, "{}", metrics.text);
    for n in 0..HUNG_APISERVERS {
        let name = format!("hung-{n}");
        eventually!(
            Duration::from_secs(20),
            format!("{name}'s pushes are retried"),
            serve
                .outcomes("retry")
                .iter()
                .any(|line| line["cluster"] == name.as_str())
        );
    }
    drop(held);
}
