//! `fluxrelay serve` end to end: the real binary receives real GitLab payloads over HTTP,
//! queues them in its embedded queue, and triggers the Flux Receiver through a real
//! kube-apiserver's service proxy (inside a private network namespace).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use std::time::Duration;

use common::{
    CLUSTER, Cluster, DIASPORA_URL, EXAMPLE_URL, Metrics, NAMESPACE, Serve, TempDir, WEBHOOK_TOKEN,
    http_client, payload, post, post_webhook, write_config,
};
use fluxrelay_testkit::netns;
use serde_json::json;

const DIASPORA_TOKEN: &str = "diaspora-receiver-token";
const EXAMPLE_TOKEN: &str = "example-receiver-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitlab_push_reaches_the_flux_receiver_through_the_apiserver_and_is_counted() {
    if !netns::enter("a_gitlab_push_reaches_the_flux_receiver_through_the_apiserver_and_is_counted")
    {
        return;
    }
    let cluster = Cluster::start().await;
    cluster
        .git_repository("diaspora", DIASPORA_URL, json!({"branch": "master"}))
        .await;
    cluster
        .git_repository("example", EXAMPLE_URL, json!({"semver": ">=1.0.0"}))
        .await;
    let diaspora_path = cluster
        .flux_receiver("diaspora", "gitlab", DIASPORA_TOKEN, &[], "diaspora")
        .await;
    cluster
        .flux_receiver(
            "example",
            "gitlab",
            EXAMPLE_TOKEN,
            &["Tag Push Hook"],
            "example",
        )
        .await;
    let dir = TempDir::new("serve-e2e");
    let config = write_config(
        dir.path(),
        &[cluster.entry(&[("diaspora", DIASPORA_TOKEN), ("example", EXAMPLE_TOKEN)])],
        "",
    );
    let serve = Serve::start(&config, &[]).await;

    let health = http_client()
        .get(serve.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200, "GET /healthz");

    // A branch push: accepted only once it is queued, then delivered through the proxy.
    let (status, body) = post(&serve, "Push Hook", &payload("push-hook.json")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "accepted", "{body}");
    assert_eq!(body["pushes"], 1, "{body}");
    let key = body["keys"][0].as_str().expect("a push key").to_string();
    eventually!(
        Duration::from_secs(20),
        "the diaspora Receiver is hit",
        !cluster.receiver.accepted(NAMESPACE, "diaspora").is_empty()
    );
    let hits = cluster.receiver.accepted(NAMESPACE, "diaspora");
    assert_eq!(hits.len(), 1, "{:?}", cluster.receiver.hits());
    let hit = &hits[0];
    assert_eq!(hit.method, "POST");
    assert_eq!(hit.request_uri, diaspora_path);
    assert_eq!(hit.headers["x-gitlab-event"], "Push Hook");
    assert_eq!(hit.headers["x-gitlab-token"], DIASPORA_TOKEN);
    assert!(
        hit.headers.get("authorization").is_none(),
        "the apiserver proxy must not pass our kube credentials on: {:?}",
        hit.headers
    );
    let sent: serde_json::Value = serde_json::from_slice(&hit.body).unwrap();
    assert_eq!(sent["ref"], "refs/heads/master");
    assert_eq!(sent["after"], "da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
    assert_eq!(sent["project"]["path_with_namespace"], "mike/diaspora");

    // The receiver answered before the message was settled and counted: wait for the count.
    let delivered = [("cluster", CLUSTER), ("outcome", "delivered")];
    eventually!(
        Duration::from_secs(10),
        "the dispatch is counted as delivered",
        Metrics::scrape(&serve)
            .await
            .get("fluxrelay_dispatches_total", &delivered)
            == Some(1.0)
    );
    let metrics = Metrics::scrape(&serve).await;
    assert_eq!(metrics.value("fluxrelay_webhooks_received_total", &[]), 1.0);
    assert_eq!(metrics.value("fluxrelay_pushes_accepted_total", &[]), 1.0);
    assert_eq!(metrics.value("fluxrelay_dispatches_total", &delivered), 1.0);
    assert_eq!(
        metrics.value(
            "fluxrelay_triggers_total",
            &[("cluster", CLUSTER), ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(
        metrics.get(
            "fluxrelay_triggers_total",
            &[("cluster", CLUSTER), ("outcome", "failed")]
        ),
        None,
        "{}",
        metrics.text
    );
    assert_eq!(
        metrics.value("fluxrelay_trigger_latency_seconds_count", &[]),
        1.0
    );
    assert!(metrics.value("fluxrelay_trigger_latency_seconds_sum", &[]) < 10.0);
    assert_eq!(metrics.queued(), 0.0, "{}", metrics.text);
    assert_eq!(metrics.dead_letters(), 0.0, "{}", metrics.text);

    // Each stage logged its outcome as one JSON line carrying the key, project, ref, cluster.
    eventually!(
        Duration::from_secs(5),
        "a delivered log line",
        !serve.outcomes("delivered").is_empty()
    );
    for outcome in ["accepted", "routed", "delivered"] {
        assert!(
            !serve.outcomes(outcome).is_empty(),
            "no {outcome:?} log line:\n{}",
            serve.log_text()
        );
    }
    let line = &serve.outcomes("delivered")[0];
    assert_eq!(line["key"], key.as_str(), "{line}");
    assert_eq!(line["cluster"], CLUSTER, "{line}");
    assert_eq!(line["project"], "mike/diaspora", "{line}");
    assert_eq!(line["git_ref"], "refs/heads/master", "{line}");
    // The delivered line tells the call's answer: the call has no `triggered` line.
    let target = line["targets"].as_str().unwrap_or_default();
    assert_eq!(line["answered"], format!("{target}: success"), "{line}");
    assert!(
        serve.outcomes("triggered").is_empty(),
        "a delivered call logged twice:\n{}",
        serve.log_text()
    );
    assert!(
        !serve.log_text().contains(WEBHOOK_TOKEN) && !serve.log_text().contains(DIASPORA_TOKEN),
        "a secret is in the log"
    );

    // A tag push reaches the Receiver of the semver-tracking repository.
    let (status, body) = post(&serve, "Tag Push Hook", &payload("tag-push-hook.json")).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("accepted")),
        "{body}"
    );
    eventually!(
        Duration::from_secs(20),
        "the example Receiver is hit",
        !cluster.receiver.accepted(NAMESPACE, "example").is_empty()
    );
    let tag = &cluster.receiver.accepted(NAMESPACE, "example")[0];
    assert_eq!(tag.headers["x-gitlab-event"], "Tag Push Hook");
    let sent: serde_json::Value = serde_json::from_slice(&tag.body).unwrap();
    assert_eq!(sent["ref"], "refs/tags/v1.0.0");

    // A merge request is authentic but not a push: 202 ignored, nothing is triggered.
    let (status, body) = post(
        &serve,
        "Merge Request Hook",
        &payload("merge-request-hook.json"),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "ignored", "{body}");
    // A wrong token is refused.
    let (status, body) = post_webhook(
        &http_client(),
        serve.addr,
        "Push Hook",
        "not-the-webhook-token",
        &payload("push-hook.json"),
    )
    .await
    .unwrap();
    assert_eq!(status, 401, "{body}");

    eventually!(
        Duration::from_secs(10),
        "both deliveries counted",
        Metrics::scrape(&serve)
            .await
            .get("fluxrelay_dispatches_total", &delivered)
            == Some(2.0)
    );
    // Longer than an idle worker's poll: anything the merge request had queued would run.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let hits = cluster.receiver.hits();
    assert_eq!(hits.len(), 2, "only the two pushes reach Flux: {hits:?}");
    let metrics = Metrics::scrape(&serve).await;
    assert_eq!(metrics.value("fluxrelay_webhooks_received_total", &[]), 4.0);
    assert_eq!(metrics.value("fluxrelay_webhooks_ignored_total", &[]), 1.0);
    assert_eq!(metrics.value("fluxrelay_pushes_accepted_total", &[]), 2.0);
    assert_eq!(
        metrics.value(
            "fluxrelay_webhooks_rejected_total",
            &[("reason", "unauthenticated")]
        ),
        1.0
    );
    assert_eq!(
        metrics.value("fluxrelay_trigger_latency_seconds_count", &[]),
        2.0
    );
    assert_eq!(metrics.queued(), 0.0, "{}", metrics.text);
    assert_eq!(metrics.dead_letters(), 0.0, "{}", metrics.text);
}
