//! SIGTERM stops `fluxrelay serve` gracefully: it exits 0 promptly (it does not wait out
//! retry backoffs), stops accepting, and what it acknowledged is delivered after a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{
    Cluster, EXAMPLE_URL, Metrics, Serve, TempDir, WEBHOOK_TOKEN, http_client, listening, post,
    post_webhook, tag_push, tag_ref, write_config,
};
use fluxrelay_testkit::netns;
use serde_json::json;

const RECEIVER_TOKEN: &str = "releases-receiver-token";
const BEFORE_SIGTERM: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_promptly_and_acknowledged_pushes_are_delivered_after_restart() {
    if !netns::enter(
        "sigterm_exits_zero_promptly_and_acknowledged_pushes_are_delivered_after_restart",
    ) {
        return;
    }
    // Distinct tags, so each push is its own Receiver call (see serve_crash.rs).
    let cluster = Cluster::start().await;
    cluster
        .git_repository("releases", EXAMPLE_URL, json!({"semver": ">=0.0.0"}))
        .await;
    let path = cluster
        .flux_receiver(
            "releases",
            "gitlab",
            RECEIVER_TOKEN,
            &["Tag Push Hook"],
            "releases",
        )
        .await;
    let dir = TempDir::new("serve-sigterm");
    let config = write_config(
        dir.path(),
        &[cluster.entry(&[("releases", RECEIVER_TOKEN)])],
        "max_attempts = 8\nretry_base_secs = 2\nretry_max_secs = 4\nworkers = 2\n",
    );
    let mut serve = Serve::start(&config, &[]).await;
    let addr = serve.addr;

    // Flux is briefly unavailable: the first calls are answered 503, so pushes are waiting
    // out a retry backoff (2-4 s) when SIGTERM arrives.
    cluster.receiver.fail_next(&path, &[503; BEFORE_SIGTERM]);
    let mut acknowledged = BTreeSet::new();
    for n in 0..BEFORE_SIGTERM {
        let (status, body) = post(&serve, "Tag Push Hook", &tag_push(n)).await;
        assert_eq!(
            (status, body["status"].as_str()),
            (202, Some("accepted")),
            "{body}"
        );
        acknowledged.insert(tag_ref(n));
    }
    eventually!(
        Duration::from_secs(10),
        "a 503 from the receiver",
        cluster.receiver.hits().iter().any(|hit| hit.status == 503)
    );

    // Keep posting while the signal is handled: whatever is still acknowledged counts too.
    let poster = tokio::spawn(async move {
        let client = http_client();
        let mut acknowledged = BTreeSet::new();
        let mut refused = 0;
        for n in BEFORE_SIGTERM..BEFORE_SIGTERM + 500 {
            match post_webhook(&client, addr, "Tag Push Hook", WEBHOOK_TOKEN, &tag_push(n)).await {
                Ok((202, body)) if body["status"] == "accepted" => {
                    acknowledged.insert(tag_ref(n));
                }
                Ok(_) => {}
                Err(_) => {
                    refused += 1;
                    if refused >= 3 {
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (acknowledged, refused)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, took) = serve.terminate(Duration::from_secs(30)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
    assert!(
        took < Duration::from_secs(5),
        "SIGTERM to exit took {took:?}: it must not wait out retry backoffs"
    );
    assert!(!listening(addr), "something still listens on {addr}");
    let (late, refused) = poster.await.unwrap();
    assert!(
        refused >= 3,
        "posting after SIGTERM was never refused: the server kept accepting"
    );
    assert!(
        serve.log_lines().iter().any(|line| line["message"]
            .as_str()
            .unwrap_or_default()
            .contains("shutting down")),
        "no shutdown log line:\n{}",
        serve.log_text()
    );
    acknowledged.extend(late);
    let before_restart: BTreeSet<String> = cluster.delivered_refs("releases").into_iter().collect();
    eprintln!(
        "sigterm test: {} acknowledged ({BEFORE_SIGTERM} before SIGTERM), {} delivered before exit, exit in {took:?}",
        acknowledged.len(),
        before_restart.len()
    );

    // Flux is back; the restarted process delivers what the first one left queued.
    cluster.receiver.clear();
    let serve = Serve::start(&config, &["--listen", &addr.to_string()]).await;
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let mut delivered = before_restart.clone();
            delivered.extend(cluster.delivered_refs("releases"));
            if acknowledged.is_subset(&delivered) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let mut delivered = before_restart.clone();
    delivered.extend(cluster.delivered_refs("releases"));
    let lost: Vec<&String> = acknowledged.difference(&delivered).collect();
    assert!(
        lost.is_empty(),
        "acknowledged before SIGTERM but never delivered: {lost:?}"
    );
    eventually!(
        Duration::from_secs(10),
        "the queues drain",
        Metrics::scrape(&serve).await.queued() == 0.0
    );
    assert_eq!(Metrics::scrape(&serve).await.dead_letters(), 0.0);
}
