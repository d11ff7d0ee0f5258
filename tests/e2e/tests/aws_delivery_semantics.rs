//! The delivery promise on the AWS path (the Lambda handlers over moto and a real
//! kube-apiserver), in the odd sequences that broke it: a re-push of the same commits, a tag
//! re-created, GitLab resending a delivery, a rollback inside the list cache window, a
//! Receiver that stays not Ready, and a hung apiserver next to a healthy cluster (with
//! pollers running concurrently, as Lambda's event source does). The `serve` twin is
//! functions/cli/tests/serve_delivery_semantics.rs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fluxrelay_adapters::cluster::KubeClusters;
use fluxrelay_e2e::pipeline::{Pipeline, dispatch_function, route_function, test_retry_policy};
use fluxrelay_e2e::{acknowledge, receive_batch};
use fluxrelay_testkit::netns;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};

const DIASPORA: &str = "https://example.com/mike/diaspora.git";
const EXAMPLE: &str = "https://example.com/jsmith/example.git";

fn sha(c: char) -> String {
    c.to_string().repeat(40)
}

/// A Function URL event from `events/`, its payload edited, sent with `idempotency_key` (or
/// without one).
fn event(file: &str, idempotency_key: Option<&str>, edit: impl FnOnce(&mut Value)) -> String {
    let text = Pipeline::edited_event(file, edit);
    let mut event: Value = serde_json::from_str(&text).unwrap();
    let headers = event["headers"].as_object_mut().unwrap();
    match idempotency_key {
        Some(key) => {
            headers.insert("idempotency-key".into(), json!(key));
        }
        None => {
            headers.remove("idempotency-key");
        }
    }
    event.to_string()
}

/// diaspora's master moving `before` → `after`, as its own delivery.
fn branch_push(before: char, after: char, idempotency_key: &str) -> String {
    event("ingest-push-hook.json", Some(idempotency_key), |hook| {
        hook["before"] = json!(sha(before));
        hook["after"] = json!(sha(after));
        hook["checkout_sha"] = json!(sha(after));
    })
}

fn delivered_afters(p: &Pipeline, receiver: &str) -> Vec<String> {
    p.receiver
        .accepted("flux-system", receiver)
        .iter()
        .map(|hit| {
            let body: Value = serde_json::from_slice(&hit.body).unwrap_or(Value::Null);
            body["after"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

async fn diaspora_pipeline() -> Pipeline {
    let p = Pipeline::start().await;
    p.git_repository("diaspora", DIASPORA, json!({"branch": "master"}))
        .await;
    p.flux_receiver("diaspora", "generic", "t", &[], "diaspora")
        .await;
    p.register(p.entry("prod", json!({}))).await;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_a_re_push_of_the_same_commits_after_a_rollback_is_delivered_last() {
    if !netns::enter("aws_a_re_push_of_the_same_commits_after_a_rollback_is_delivered_last") {
        return;
    }
    let p = diaspora_pipeline().await;
    for (n, (before, after)) in [('a', 'b'), ('b', 'a'), ('a', 'b')].into_iter().enumerate() {
        let key = format!("repush-{n}");
        let (status, body) = p.post_event_json(&branch_push(before, after, &key)).await;
        assert_eq!(
            (status, body["status"].as_str()),
            (202, Some("accepted")),
            "{body}"
        );
        p.drain().await;
    }
    assert_eq!(
        delivered_afters(&p, "diaspora"),
        vec![sha('b'), sha('a'), sha('b')],
        "the roll forward after the rollback is a push of its own"
    );
    assert!(p.take_dead_letters().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_a_tag_deleted_and_created_again_is_delivered_again() {
    if !netns::enter("aws_a_tag_deleted_and_created_again_is_delivered_again") {
        return;
    }
    let p = Pipeline::start().await;
    p.git_repository("release", EXAMPLE, json!({"tag": "v1.0.0"}))
        .await;
    p.flux_receiver("release", "generic", "t", &[], "release")
        .await;
    p.register(p.entry("prod", json!({}))).await;
    let zero = "0".repeat(40);
    let commit = sha('c');
    let tag = |before: &str, after: &str, key: &str| {
        event("ingest-tag-push-hook.json", Some(key), |hook| {
            hook["ref"] = json!("refs/tags/v1.0.0");
            hook["before"] = json!(before);
            hook["after"] = json!(after);
            hook["checkout_sha"] = if after == zero {
                Value::Null
            } else {
                json!(after)
            };
        })
    };
    assert_eq!(
        p.post_event_json(&tag(&zero, &commit, "create")).await.0,
        202
    );
    p.drain().await;
    // Re-run the release: delete the tag, create it again at the same commit.
    assert_eq!(
        p.post_event_json(&tag(&commit, &zero, "delete")).await.0,
        202
    );
    assert_eq!(
        p.post_event_json(&tag(&zero, &commit, "create-again"))
            .await
            .0,
        202
    );
    p.drain().await;
    assert_eq!(
        delivered_afters(&p, "release")
            .iter()
            .filter(|after| **after == commit)
            .count(),
        2,
        "{:?}",
        p.receiver.hits()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_a_gitlab_resend_is_queued_once() {
    if !netns::enter("aws_a_gitlab_resend_is_queued_once") {
        return;
    }
    let p = diaspora_pipeline().await;
    let delivery = branch_push('a', 'b', "8b1e7c2a-0000-4000-8000-00000000000a");
    let (_, first) = p.post_event_json(&delivery).await;
    // The resend arrives while the first is still queued. (After the first is consumed,
    // SQS still drops a resend within its 5-minute window; moto forgets a deduplication id
    // once its message is deleted, so that part is shown by the serve test only.)
    let (status, resent) = p.post_event_json(&delivery).await;
    assert_eq!(status, 202, "{resent}");
    assert_eq!(first["keys"], resent["keys"], "one delivery, one key");
    assert_eq!(
        fluxrelay_e2e::depth(&p.sqs, &p.queues.intake).await,
        1,
        "the resend is not queued again"
    );
    // Another hook's delivery of the same push is its own.
    let other = branch_push('a', 'b', "8b1e7c2a-0000-4000-8000-00000000000b");
    assert_eq!(p.post_event_json(&other).await.0, 202);
    assert_eq!(fluxrelay_e2e::depth(&p.sqs, &p.queues.intake).await, 2);
    p.drain().await;
    // Both meet in one dispatch batch: one trigger.
    assert_eq!(delivered_afters(&p, "diaspora"), vec![sha('b')]);
}

/// Sets the GitRepository's status as source-controller would after fetching `after`,
/// its artifact made at `made`.
async fn flux_fetched(p: &Pipeline, after: &str, made: &str) {
    p.kube
        .patch_status(
            "source.toolkit.fluxcd.io/v1",
            "gitrepositories",
            "flux-system",
            "diaspora",
            json!({
                "observedGeneration": 1,
                "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded",
                                "message": "stored artifact", "lastTransitionTime": made}],
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
async fn aws_a_rollback_within_the_list_cache_window_is_triggered() {
    if !netns::enter("aws_a_rollback_within_the_list_cache_window_is_triggered") {
        return;
    }
    let p = diaspora_pipeline().await;
    let long_ago = rfc3339(time::OffsetDateTime::now_utc() - time::Duration::hours(1));
    flux_fetched(&p, &sha('a'), &long_ago).await;
    p.post_event_json(&branch_push('a', 'b', "forward")).await;
    p.drain().await;
    assert_eq!(delivered_afters(&p, "diaspora"), vec![sha('b')]);
    // Flux moves to B; the rollback arrives while dispatch's list cache still says A.
    flux_fetched(&p, &sha('b'), &rfc3339(time::OffsetDateTime::now_utc())).await;
    p.post_event_json(&branch_push('b', 'a', "rollback")).await;
    p.drain().await;
    assert_eq!(
        delivered_afters(&p, "diaspora"),
        vec![sha('b'), sha('a')],
        "the rollback is triggered, not skipped as already at A"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_a_receiver_that_stays_not_ready_delays_no_other_receiver() {
    if !netns::enter("aws_a_receiver_that_stays_not_ready_delays_no_other_receiver") {
        return;
    }
    let p = diaspora_pipeline().await;
    p.git_repository("diaspora-b", DIASPORA, json!({"branch": "master"}))
        .await;
    p.flux_receiver("tenant-b", "generic", "tb", &[], "diaspora-b")
        .await;
    p.kube
        .patch_status(
            "notification.toolkit.fluxcd.io/v1",
            "receivers",
            "flux-system",
            "tenant-b",
            json!({"conditions": [{"type": "Ready", "status": "False", "reason": "TokenNotFound",
                                   "message": "secret not found", "lastTransitionTime": "2026-11-22T00:00:00Z"}]}),
        )
        .await;
    // Each push reaches tenant a in its first dispatch, while tenant b's retries wait on
    // the retry queue without holding the cluster's group.
    for (n, (before, after)) in [('a', 'b'), ('b', 'c'), ('c', 'd')].into_iter().enumerate() {
        p.post_event_json(&branch_push(before, after, &format!("not-ready-{n}")))
            .await;
        for _ in 0..2 {
            let intake = receive_batch(&p.sqs, &p.queues.intake).await;
            if !intake.records.is_empty() {
                let response = p.route_batch(intake.clone()).await;
                acknowledge(&p.sqs, &p.queues.intake, &intake, &response).await;
            }
        }
        let dispatch = receive_batch(&p.sqs, &p.queues.dispatch).await;
        assert!(
            !dispatch.records.is_empty(),
            "push {n} is on the dispatch queue"
        );
        let response = p.dispatch_batch(dispatch.clone()).await;
        acknowledge(&p.sqs, &p.queues.dispatch, &dispatch, &response).await;
        assert_eq!(
            delivered_afters(&p, "diaspora").len(),
            n + 1,
            "push {n} reached tenant a in its first dispatch"
        );
    }
    assert_eq!(
        fluxrelay_e2e::depth(&p.sqs, &p.queues.dispatch).await,
        0,
        "nothing of the cluster is held on the dispatch queue"
    );
    assert!(p.receiver.accepted("flux-system", "tenant-b").is_empty());
}

/// Push → Receiver hit latencies of `pushes` pushes to the healthy cluster, one after the
/// other, while `pollers` dispatch pollers run concurrently (Lambda's event source), each
/// invocation with a 30 s deadline.
async fn latencies(p: &Arc<Pipeline>, first: usize, pushes: usize) -> Vec<Duration> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut pollers = Vec::new();
    for queue in [
        p.queues.intake.clone(),
        p.queues.dispatch.clone(),
        p.queues.dispatch.clone(),
        p.queues.dispatch.clone(),
    ] {
        let (p, stop) = (p.clone(), stop.clone());
        pollers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let event = receive_batch(&p.sqs, &queue).await;
                if event.records.is_empty() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                let mut context = Context::default();
                context.deadline = u64::try_from(
                    (time::OffsetDateTime::now_utc() + time::Duration::seconds(30))
                        .unix_timestamp_nanos()
                        / 1_000_000,
                )
                .unwrap();
                let response = if queue == p.queues.intake {
                    p.route
                        .handle(LambdaEvent::new(event.clone(), context))
                        .await
                        .unwrap()
                } else {
                    p.dispatch
                        .handle(LambdaEvent::new(event.clone(), context))
                        .await
                        .unwrap()
                };
                acknowledge(&p.sqs, &queue, &event, &response).await;
            }
        }));
    }
    let mut latencies = Vec::new();
    for n in first..first + pushes {
        let before = delivered_afters(p, "diaspora").len();
        let after = format!("{:040x}", n + 1);
        let delivery = event(
            "ingest-push-hook.json",
            Some(&format!("latency-{n}")),
            |hook| {
                hook["after"] = json!(after);
                hook["checkout_sha"] = json!(after);
            },
        );
        let posted = Instant::now();
        assert_eq!(p.post_event_json(&delivery).await.0, 202);
        while delivered_afters(p, "diaspora").len() == before {
            assert!(
                posted.elapsed() < Duration::from_secs(60),
                "push {n} never reached the healthy cluster"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        latencies.push(posted.elapsed());
    }
    stop.store(true, Ordering::SeqCst);
    for poller in pollers {
        poller.await.unwrap();
    }
    latencies.sort();
    latencies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_a_hung_apiserver_does_not_delay_another_cluster() {
    if !netns::enter("aws_a_hung_apiserver_does_not_delay_another_cluster") {
        return;
    }
    let p = Arc::new(diaspora_pipeline().await);
    let alone = latencies(&p, 0, 11).await;

    // A second cluster whose apiserver accepts connections and never answers (a stopped
    // process), subscribed to the same pushes; fresh functions, so the registry is read
    // again at once.
    let mut p = Arc::try_unwrap(p).unwrap_or_else(|_| panic!("pollers still hold the pipeline"));
    let hung_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut hung = p.entry("hung", json!({}));
    hung["server"] = json!(format!("https://{}", hung_listener.local_addr().unwrap()));
    p.register(hung).await;
    p.route = route_function(&p.queues, &p.s3, &p.sqs);
    p.dispatch = dispatch_function(
        &p.queues,
        &p.s3,
        &p.secrets,
        &p.sqs,
        KubeClusters::with_defaults().unwrap(),
        test_retry_policy(),
    );
    let p = Arc::new(p);
    let beside = latencies(&p, 100, 11).await;
    eprintln!(
        "AWS path, healthy cluster push → hit over 11 pushes: alone p50 {:?} p90 {:?}; beside a hung apiserver p50 {:?} p90 {:?}",
        alone[5], alone[9], beside[5], beside[9]
    );
    assert!(
        beside[5] <= alone[5] * 2,
        "p50 went from {:?} to {:?} beside a hung apiserver: {beside:?}",
        alone[5],
        beside[5]
    );
    assert!(
        beside[9] <= (alone[9] * 2).max(Duration::from_secs(1)),
        "p90 went from {:?} to {:?} beside a hung apiserver: {beside:?}",
        alone[9],
        beside[9]
    );
    drop(hung_listener);
}
