//! Every push `fluxrelay serve` acknowledged with 202 reaches its cluster, even when the
//! process is killed with SIGKILL in the middle of a burst and restarted on the same data
//! directory and port.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    Cluster, EXAMPLE_URL, Metrics, Serve, TempDir, WEBHOOK_TOKEN, http_client, post_webhook,
    run_fluxrelay, tag_push, tag_ref, write_config,
};
use fluxrelay_testkit::netns;
use serde_json::json;

const PUSHES: usize = 1000;
const POSTERS: usize = 8;
/// SIGKILL once this many pushes were acknowledged.
const KILL_AFTER_ACKS: usize = 300;
const RECEIVER_TOKEN: &str = "releases-receiver-token";

#[derive(Default)]
struct Tally {
    /// Push numbers answered 202 accepted.
    acknowledged: BTreeSet<usize>,
    attempts: usize,
    connection_errors: usize,
    /// Answers other than 202 accepted, by status.
    other_answers: BTreeMap<u16, usize>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_push_is_delivered_across_a_sigkill_and_restart() {
    if !netns::enter("every_acknowledged_push_is_delivered_across_a_sigkill_and_restart") {
        return;
    }
    // Counting must be exact: each acknowledged push must cause its own Receiver call. The
    // dispatcher coalesces the pushes of one batch that share (Receiver, project, ref,
    // event) into one call, so the pushes must differ in one of those. Distinct tags
    // `v0.0.N` of one project do, with a single GitRepository tracking `ref.semver` (which
    // any tag push triggers, refs.rs) and a single Receiver: one cluster, two objects, and
    // the Receiver's body names the tag, so the emulator's hits say which push arrived.
    // (Distinct projects would need a GitRepository per push.)
    let cluster = Cluster::start().await;
    cluster
        .git_repository("releases", EXAMPLE_URL, json!({"semver": ">=0.0.0"}))
        .await;
    cluster
        .flux_receiver(
            "releases",
            "gitlab",
            RECEIVER_TOKEN,
            &["Tag Push Hook"],
            "releases",
        )
        .await;
    let dir = TempDir::new("serve-crash");
    let config = write_config(
        dir.path(),
        &[cluster.entry(&[("releases", RECEIVER_TOKEN)])],
        "max_attempts = 8\nretry_base_secs = 1\nretry_max_secs = 2\nworkers = 4\n",
    );
    let data_dir = dir.path().join("data");
    let mut serve = Serve::start(&config, &[]).await;
    let addr = serve.addr;

    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut posters = Vec::new();
    for _ in 0..POSTERS {
        let (next, tally) = (next.clone(), tally.clone());
        posters.push(tokio::spawn(async move {
            let client = http_client();
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= PUSHES {
                    return;
                }
                let hook = tag_push(n);
                // As GitLab does, a push that got no 202 is sent again (for up to a minute).
                let deadline = Instant::now() + Duration::from_secs(60);
                while Instant::now() < deadline {
                    let answer =
                        post_webhook(&client, addr, "Tag Push Hook", WEBHOOK_TOKEN, &hook).await;
                    let acknowledged = {
                        let mut tally = tally.lock().unwrap();
                        tally.attempts += 1;
                        match answer {
                            Ok((202, body)) if body["status"] == "accepted" => {
                                tally.acknowledged.insert(n);
                                true
                            }
                            Ok((status, _)) => {
                                *tally.other_answers.entry(status).or_default() += 1;
                                false
                            }
                            Err(_) => {
                                tally.connection_errors += 1;
                                false
                            }
                        }
                    };
                    if acknowledged {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }

    eventually!(
        Duration::from_secs(60),
        "a few hundred pushes acknowledged",
        tally.lock().unwrap().acknowledged.len() >= KILL_AFTER_ACKS
    );
    let acknowledged_before_kill = tally.lock().unwrap().acknowledged.len();
    serve.kill();
    let delivered_before_kill = cluster.delivered_refs("releases").len();
    let mut serve = Serve::start(&config, &["--listen", &addr.to_string()]).await;
    assert_eq!(serve.addr, addr, "restarted on the same port");
    for poster in posters {
        poster.await.unwrap();
    }
    let posting_took = started.elapsed();

    let acknowledged: BTreeSet<String> = tally
        .lock()
        .unwrap()
        .acknowledged
        .iter()
        .map(|n| tag_ref(*n))
        .collect();
    let delivered_set =
        || -> BTreeSet<String> { cluster.delivered_refs("releases").into_iter().collect() };
    // Wait for the acknowledged ones only: a failure then shows what is missing.
    let _ = tokio::time::timeout(Duration::from_secs(120), async {
        while !acknowledged.is_subset(&delivered_set()) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    eventually!(
        Duration::from_secs(20),
        "the queues drain",
        Metrics::scrape(&serve).await.queued() == 0.0
    );

    let delivered = cluster.delivered_refs("releases");
    let distinct: BTreeSet<String> = delivered.iter().cloned().collect();
    let lost: Vec<&String> = acknowledged.difference(&distinct).collect();
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    eprintln!(
        "crash test: {PUSHES} pushes posted by {POSTERS} posters in {posting_took:.1?} \
         ({} requests); acknowledged {} ({acknowledged_before_kill} before SIGKILL, when \
         {delivered_before_kill} deliveries had reached the receiver); connection errors {}; \
         other answers {:?}; delivered {} distinct tags in {} receiver calls ({} duplicates); \
         delivered but never acknowledged {}; lost {}",
        tally.attempts,
        acknowledged.len(),
        tally.connection_errors,
        tally.other_answers,
        distinct.len(),
        delivered.len(),
        delivered.len() - distinct.len(),
        distinct.difference(&acknowledged).count(),
        lost.len(),
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged pushes never reached the receiver, e.g. {:?}",
        lost.len(),
        lost.iter().take(10).collect::<Vec<_>>()
    );
    assert_eq!(
        acknowledged.len(),
        PUSHES,
        "every push is acknowledged once the restarted process answers (retried for a minute)"
    );
    assert!(
        tally.connection_errors > 0,
        "the kill was not seen by any poster: the test did not test a crash"
    );
    let non_tag_calls: Vec<_> = cluster
        .receiver
        .hits()
        .into_iter()
        .filter(|hit| hit.status != 200)
        .collect();
    assert!(non_tag_calls.is_empty(), "refused calls: {non_tag_calls:?}");

    let metrics = Metrics::scrape(&serve).await;
    assert_eq!(metrics.dead_letters(), 0.0, "{}", metrics.text);
    let data_dir = data_dir.to_string_lossy().into_owned();
    let (status, stdout, stderr) = run_fluxrelay(
        &["dlq", "list", "--data-dir", &data_dir, "--json"],
        Duration::from_secs(10),
    );
    assert!(status.success(), "dlq list: {status}\n{stderr}");
    assert_eq!(stdout.trim(), "", "dead letters after the crash:\n{stdout}");
    let (status, _) = serve.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "exit after SIGTERM: {status}");
}
