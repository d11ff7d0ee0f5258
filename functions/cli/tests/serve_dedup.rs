//! Deduplication is of the same delivery only. A GitLab resend (same `Idempotency-Key`)
//! within 5 minutes is acknowledged and not delivered again, before or after delivery; the
//! same push through a system hook is another delivery, queued and triggered once more.
//!
//! Changed on purpose with the delivery semantics (docs/design.md, "Deduplication"): this
//! test used to pin "the same push through a system hook is delivered once", which came
//! from deduplicating on the push's content, and that also dropped legitimate re-pushes of
//! the same commits (rolling back and forth, a tag re-created).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use std::time::Duration;

use common::{
    CLUSTER, Cluster, DIASPORA_URL, Metrics, NAMESPACE, Serve, TempDir, WEBHOOK_TOKEN, http_client,
    payload, post, write_config,
};
use fluxrelay_testkit::netns;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_of_one_delivery_is_queued_once_and_another_hooks_delivery_again() {
    if !netns::enter("a_resend_of_one_delivery_is_queued_once_and_another_hooks_delivery_again") {
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
    let serve_url = serve.url("/webhook");
    let resend = |hook: Value| {
        let serve_url = serve_url.clone();
        async move {
            let response = http_client()
                .post(serve_url)
                .header("content-type", "application/json")
                .header("x-gitlab-event", "Push Hook")
                .header("x-gitlab-token", WEBHOOK_TOKEN)
                .header("idempotency-key", "5d0f3a90-7a11-4c55-9e8e-3f1c0f6f0a01")
                .body(hook.to_string())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };

    // Twice in a row (GitLab's delivery and its resend), before the first is delivered.
    let (status, first) = resend(hook.clone()).await;
    assert_eq!(
        (status, first["status"].as_str()),
        (202, Some("accepted")),
        "{first}"
    );
    let (status, second) = resend(hook.clone()).await;
    assert_eq!(
        (status, second["status"].as_str()),
        (202, Some("accepted")),
        "{second}"
    );
    assert_eq!(first["keys"], second["keys"], "one delivery, one key");

    let delivered = [("cluster", CLUSTER), ("outcome", "delivered")];
    eventually!(
        Duration::from_secs(20),
        "the push is delivered",
        Metrics::scrape(&serve)
            .await
            .get("fluxrelay_dispatches_total", &delivered)
            .is_some()
    );

    // Resent again after it was delivered: still the same delivery, nothing queued. Then
    // the same push through a system hook (no key): another delivery, another trigger.
    let (status, third) = resend(hook.clone()).await;
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
    assert_ne!(
        first["keys"], system["keys"],
        "a system hook's delivery of the same push is another delivery"
    );

    // Long enough for idle workers (500 ms poll) to pick up anything queued, twice over.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = Metrics::scrape(&serve).await;
    assert_eq!(metrics.queued(), 0.0, "{}", metrics.text);
    assert_eq!(
        cluster.receiver.accepted(NAMESPACE, "diaspora").len(),
        2,
        "once for the project hook's delivery, once for the system hook's: {:?}",
        cluster.receiver.hits()
    );
    assert_eq!(cluster.receiver.hits().len(), 2);
    assert_eq!(metrics.value("fluxrelay_pushes_accepted_total", &[]), 4.0);
    assert_eq!(metrics.value("fluxrelay_dispatches_total", &delivered), 2.0);
    assert_eq!(
        metrics.value(
            "fluxrelay_triggers_total",
            &[("cluster", CLUSTER), ("outcome", "ok")]
        ),
        2.0
    );
    assert_eq!(metrics.dead_letters(), 0.0);
}
