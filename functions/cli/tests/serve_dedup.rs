//! The same push sent again within 5 minutes (GitLab retrying, or a project hook and a
//! system hook both firing) is acknowledged each time and delivered once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use std::time::Duration;

use common::{
    CLUSTER, Cluster, DIASPORA_URL, Metrics, NAMESPACE, Serve, TempDir, payload, post, write_config,
};
use fluxrelay_testkit::netns;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_push_posted_again_within_five_minutes_is_delivered_once() {
    if !netns::enter("the_same_push_posted_again_within_five_minutes_is_delivered_once") {
        return;
    }
    let cluster = Cluster::start().await;
    cluster
        .git_repository("diaspora", DIASPORA_URL, json!({"branch": "master"}))
        .await;
    cluster
        .flux_receiver("diaspora", "generic", "generic-token", &[], "diaspora")
        .await;
    let dir = TempDir::new("serve-dedup");
    let config = write_config(dir.path(), &[cluster.entry(&[])], "");
    let serve = Serve::start(&config, &[]).await;
    let hook = payload("push-hook.json");

    // Twice in a row, before the first is delivered.
    let (status, first) = post(&serve, "Push Hook", &hook).await;
    assert_eq!(
        (status, first["status"].as_str()),
        (202, Some("accepted")),
        "{first}"
    );
    let (status, second) = post(&serve, "Push Hook", &hook).await;
    assert_eq!(
        (status, second["status"].as_str()),
        (202, Some("accepted")),
        "{second}"
    );
    assert_eq!(first["keys"], second["keys"], "one push, one key");

    let delivered = [("cluster", CLUSTER), ("outcome", "delivered")];
    eventually!(
        Duration::from_secs(20),
        "the push is delivered",
        Metrics::scrape(&serve)
            .await
            .get("fluxrelay_dispatches_total", &delivered)
            .is_some()
    );

    // Again after it was delivered, and once more through a system hook (same instance,
    // project, ref and commit: the same push).
    let (status, third) = post(&serve, "Push Hook", &hook).await;
    assert_eq!(
        (status, third["status"].as_str()),
        (202, Some("accepted")),
        "{third}"
    );
    let (status, system) = post(&serve, "System Hook", &payload("system-hook-push.json")).await;
    assert_eq!(
        (status, system["status"].as_str()),
        (202, Some("accepted")),
        "{system}"
    );
    assert_eq!(first["keys"], third["keys"]);
    assert_eq!(
        first["keys"], system["keys"],
        "a system hook of the same push"
    );

    // Long enough for idle workers (500 ms poll) to pick up anything queued, twice over.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = Metrics::scrape(&serve).await;
    assert_eq!(metrics.queued(), 0.0, "{}", metrics.text);
    assert_eq!(
        cluster.receiver.accepted(NAMESPACE, "diaspora").len(),
        1,
        "{:?}",
        cluster.receiver.hits()
    );
    assert_eq!(cluster.receiver.hits().len(), 1);
    assert_eq!(metrics.value("fluxrelay_pushes_accepted_total", &[]), 4.0);
    assert_eq!(metrics.value("fluxrelay_dispatches_total", &delivered), 1.0);
    assert_eq!(
        metrics.value(
            "fluxrelay_triggers_total",
            &[("cluster", CLUSTER), ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(metrics.dead_letters(), 0.0);
}
