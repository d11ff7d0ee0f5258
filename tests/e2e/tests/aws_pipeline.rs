//! A GitLab push through ingest → intake.fifo → route → dispatch.fifo → dispatch → Flux
//! Receiver, over moto and a real kube-apiserver (each test in its own private network
//! namespace, with its own apiserver, moto and receiver emulator).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fluxrelay_e2e::depth;
use fluxrelay_e2e::pipeline::{Pipeline, repo_root};
use fluxrelay_testkit::netns;
use serde_json::json;

const DIASPORA: &str = "https://example.com/mike/diaspora.git";
const EXAMPLE: &str = "https://example.com/jsmith/example.git";

fn receiver_tokens(tokens: &[(&str, &str)]) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .map(|(name, token)| (format!("flux-system/{name}"), json!(token)))
        .collect();
    json!({"trigger": {"receiver_tokens": map}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_reaches_each_receiver_type_once_with_what_it_checks() {
    if !netns::enter("a_push_reaches_each_receiver_type_once_with_what_it_checks") {
        return;
    }
    let p = Pipeline::start().await;
    for kind in ["generic", "generic-hmac", "gitlab", "github"] {
        p.git_repository(
            &format!("app-{kind}"),
            DIASPORA,
            json!({"branch": "master"}),
        )
        .await;
        p.flux_receiver(
            &format!("r-{kind}"),
            kind,
            &format!("token-{kind}"),
            &[],
            &format!("app-{kind}"),
        )
        .await;
    }
    p.register(p.entry(
        "prod",
        receiver_tokens(&[
            ("r-generic-hmac", "token-generic-hmac"),
            ("r-gitlab", "token-gitlab"),
            ("r-github", "token-github"),
        ]),
    ))
    .await;

    let (status, body) = p.post_event_file("ingest-push-hook.json").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "accepted");
    p.drain().await;

    for kind in ["generic", "generic-hmac", "gitlab", "github"] {
        let accepted = p.receiver.accepted("flux-system", &format!("r-{kind}"));
        assert_eq!(accepted.len(), 1, "{kind}: {:?}", p.receiver.hits());
        let hit = &accepted[0];
        assert_eq!(hit.method, "POST");
        let body: serde_json::Value = serde_json::from_slice(&hit.body).unwrap();
        assert_eq!(body["ref"], "refs/heads/master", "{kind}");
        assert_eq!(body["project"]["path_with_namespace"], "mike/diaspora");
        // The apiserver's proxy never forwards our kube credentials to the receiver.
        assert!(hit.headers.get("authorization").is_none(), "{kind}");
    }
    let gitlab = &p.receiver.accepted("flux-system", "r-gitlab")[0];
    assert_eq!(gitlab.headers["x-gitlab-event"], "Push Hook");
    let github = &p.receiver.accepted("flux-system", "r-github")[0];
    assert_eq!(github.headers["x-github-event"], "push");
    assert!(p.take_dead_letters().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_push_triggers_a_semver_repository_and_not_a_branch_one() {
    if !netns::enter("a_tag_push_triggers_a_semver_repository_and_not_a_branch_one") {
        return;
    }
    let p = Pipeline::start().await;
    p.git_repository("releases", EXAMPLE, json!({"semver": ">=1.0.0"}))
        .await;
    p.git_repository("main", EXAMPLE, json!({"branch": "master"}))
        .await;
    p.flux_receiver("r-releases", "gitlab", "t1", &["Tag Push Hook"], "releases")
        .await;
    p.flux_receiver("r-main", "generic", "t2", &[], "main")
        .await;
    p.register(p.entry("prod", receiver_tokens(&[("r-releases", "t1")])))
        .await;

    assert_eq!(p.post_event_file("ingest-tag-push-hook.json").await.0, 202);
    p.drain().await;
    let releases = p.receiver.accepted("flux-system", "r-releases");
    assert_eq!(releases.len(), 1, "{:?}", p.receiver.hits());
    assert_eq!(releases[0].headers["x-gitlab-event"], "Tag Push Hook");
    assert!(p.receiver.accepted("flux-system", "r-main").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotate_mode_sets_requested_at_on_the_git_repository() {
    if !netns::enter("annotate_mode_sets_requested_at_on_the_git_repository") {
        return;
    }
    let p = Pipeline::start().await;
    p.git_repository("app", DIASPORA, json!({"branch": "master"}))
        .await;
    p.register(p.entry("prod", json!({"trigger": {"mode": "annotate"}})))
        .await;
    let before = p
        .kube
        .get_json(
            "source.toolkit.fluxcd.io/v1",
            "gitrepositories",
            "flux-system",
            "app",
        )
        .await;
    assert!(before["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"].is_null());

    assert_eq!(p.post_event_file("ingest-push-hook.json").await.0, 202);
    p.drain().await;
    let after = p
        .kube
        .get_json(
            "source.toolkit.fluxcd.io/v1",
            "gitrepositories",
            "flux-system",
            "app",
        )
        .await;
    let requested = after["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"]
        .as_str()
        .unwrap_or_default();
    assert!(
        requested.starts_with("20") && requested.ends_with('Z'),
        "{after}"
    );
    assert!(p.receiver.hits().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_fan_out_filter_and_deduplicate() {
    if !netns::enter("pushes_fan_out_filter_and_deduplicate") {
        return;
    }
    let p = Pipeline::start().await;
    p.git_repository("app", DIASPORA, json!({"branch": "master"}))
        .await;
    p.flux_receiver("r", "generic", "t", &[], "app").await;
    p.register(p.entry("prod", json!({}))).await;
    p.register(p.entry("staging", json!({}))).await;

    // A branch nobody tracks: accepted, routed, and nothing is called.
    let feature = Pipeline::edited_event("ingest-push-hook.json", |hook| {
        hook["ref"] = json!("refs/heads/feature")
    });
    assert_eq!(p.post_event_json(&feature).await.0, 202);
    p.drain().await;
    assert!(p.receiver.hits().is_empty(), "{:?}", p.receiver.hits());

    // The same push through a project hook and a system hook, both queued before routing.
    // Changed on purpose with the delivery semantics (docs/design.md, "Deduplication"): the
    // two deliveries are two pushes on the queue (only a resend of one delivery, same
    // Idempotency-Key, is deduplicated), and dispatch collapses them into one trigger per
    // cluster because they meet in one batch.
    assert_eq!(p.post_event_file("ingest-push-hook.json").await.0, 202);
    assert_eq!(
        p.post_event_file("ingest-system-hook-push.json").await.0,
        202
    );
    assert_eq!(
        depth(&p.sqs, &p.queues.intake).await,
        2,
        "two deliveries are two pushes"
    );
    p.drain().await;
    assert_eq!(
        p.receiver.accepted("flux-system", "r").len(),
        2,
        "{:?}",
        p.receiver.hits()
    );
    assert!(p.take_dead_letters().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_refuses_bad_tokens_follows_token_rotation_and_never_acknowledges_what_it_could_not_queue()
 {
    if !netns::enter(
        "ingest_refuses_bad_tokens_follows_token_rotation_and_never_acknowledges_what_it_could_not_queue",
    ) {
        return;
    }
    let mut p = Pipeline::start().await;
    let (status, body) = p.post_event_file("ingest-wrong-token.json").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(depth(&p.sqs, &p.queues.intake).await, 0);

    // The webhook secret is rotated: the first request with the new token fails against
    // the cached secret, which is then re-read early, and the request is accepted.
    p.secrets
        .put_secret_value()
        .secret_id("fluxrelay/webhook")
        .secret_string(json!({"tokens": ["rotated-webhook-token"]}).to_string())
        .send()
        .await
        .unwrap();
    let rotated = Pipeline::event_with_token("ingest-push-hook.json", "rotated-webhook-token");
    let (status, body) = p.post_event_json(&rotated).await;
    assert_eq!(status, 202, "{body}");
    let (status, _) = p.post_event_file("ingest-push-hook.json").await;
    assert_eq!(status, 401, "the old token is no longer accepted");
    assert_eq!(depth(&p.sqs, &p.queues.intake).await, 1);

    p.moto.stop();
    let (status, body) = p.post_event_json(&rotated).await;
    assert_eq!(status, 503, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_answers_503_twice_is_delivered_after_backoff() {
    if !netns::enter("a_receiver_that_answers_503_twice_is_delivered_after_backoff") {
        return;
    }
    let p = Pipeline::start().await;
    p.git_repository("app", DIASPORA, json!({"branch": "master"}))
        .await;
    let path = p.flux_receiver("r", "generic-hmac", "t", &[], "app").await;
    p.register(p.entry("prod", receiver_tokens(&[("r", "t")])))
        .await;
    p.receiver.fail_next(&path, &[503, 503]);

    assert_eq!(p.post_event_file("ingest-push-hook.json").await.0, 202);
    p.drain().await;
    let statuses: Vec<u16> = p.receiver.hits().iter().map(|h| h.status).collect();
    assert_eq!(statuses, vec![503, 503, 200]);
    assert!(p.take_dead_letters().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_are_dead_lettered_with_a_reason_that_says_what_to_fix() {
    if !netns::enter("permanent_failures_are_dead_lettered_with_a_reason_that_says_what_to_fix") {
        return;
    }
    let p = Pipeline::start().await;
    p.git_repository("app", DIASPORA, json!({"branch": "master"}))
        .await;
    let path = p.flux_receiver("r", "gitlab", "t", &[], "app").await;
    p.register(p.entry("prod", receiver_tokens(&[("r", "t")])))
        .await;

    // The Receiver's secret changed in the cluster but its path has not been recomputed yet:
    // Flux answers 400 to the old token.
    p.receiver
        .set_validation_token("flux-system", "r", "rotated");
    assert_eq!(p.post_event_file("ingest-push-hook.json").await.0, 202);
    p.drain().await;
    let dead = p.take_dead_letters().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].1["fluxrelay.status"], "400");
    assert!(
        dead[0].1["fluxrelay.reason"].contains("400"),
        "{:?}",
        dead[0].1
    );
    assert_eq!(dead[0].1["fluxrelay.cluster"], "prod");
    assert_eq!(dead[0].0["push"]["ref"], "refs/heads/master");
    assert_eq!(p.receiver.hits().len(), 1);
    assert_eq!(p.receiver.hits()[0].request_uri, path);

    // Without services/proxy in the Role: dead-lettered naming the missing permission.
    let without_proxy = std::fs::read_to_string(repo_root().join("infra/rbac.yaml"))
        .unwrap()
        .replace("verbs: [\"create\"]", "verbs: [\"get\"]");
    p.kube.apply(&without_proxy).await;
    p.receiver.set_validation_token("flux-system", "r", "t");
    let other = Pipeline::edited_event("ingest-push-hook.json", |hook| {
        hook["after"] = json!("1111111111111111111111111111111111111111");
        hook["checkout_sha"] = json!("1111111111111111111111111111111111111111");
    });
    assert_eq!(p.post_event_json(&other).await.0, 202);
    p.drain().await;
    let dead = p.take_dead_letters().await;
    let denial = dead
        .iter()
        .find(|(body, _)| body["push"]["after"] == "1111111111111111111111111111111111111111")
        .unwrap_or_else(|| {
            panic!(
                "no dead letter for the denied push: {dead:?} hits: {:?}",
                p.receiver.hits()
            )
        });
    let reason = &denial.1["fluxrelay.reason"];
    assert!(
        reason.contains("services/proxy") && reason.contains("403"),
        "{reason}"
    );
    assert_eq!(
        p.receiver.hits().len(),
        1,
        "the denied request never reached the receiver"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_with_a_half_edited_entry_registered_is_dead_lettered_for_it_and_delivered_to_the_rest()
 {
    if !netns::enter(
        "a_push_with_a_half_edited_entry_registered_is_dead_lettered_for_it_and_delivered_to_the_rest",
    ) {
        return;
    }
    let p = Pipeline::start().await;
    p.git_repository("app", DIASPORA, json!({"branch": "master"}))
        .await;
    p.flux_receiver("r", "generic", "t", &[], "app").await;
    p.register(p.entry("prod", json!({}))).await;
    // Half-edited: the server in its secret lost its https. Its subscriptions are the
    // registry index's (every push), which route reads without reading the secret.
    let half = p.entry("half", json!({"server": "http://k.example.com"}));
    let token = half["auth"]["token"].as_str().unwrap().to_string();
    p.register(half).await;

    assert_eq!(p.post_event_file("ingest-push-hook.json").await.0, 202);
    p.drain().await;

    assert_eq!(
        p.receiver.accepted("flux-system", "r").len(),
        1,
        "prod is delivered: {:?}",
        p.receiver.hits()
    );
    let dead = p.take_dead_letters().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let (body, attributes) = &dead[0];
    assert_eq!(attributes["fluxrelay.cluster"], "half");
    assert_eq!(body["cluster"], "half");
    assert_eq!(body["push"]["ref"], "refs/heads/master");
    let reason = &attributes["fluxrelay.reason"];
    assert!(reason.contains("cluster half is invalid"), "{reason}");
    assert!(reason.contains("server:"), "{reason}");
    assert!(!reason.contains(&token), "{reason}");
    assert_eq!(depth(&p.sqs, &p.queues.intake_dlq).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_event_gives_its_documented_outcome() {
    if !netns::enter("every_sample_event_gives_its_documented_outcome") {
        return;
    }
    let p = Pipeline::start().await;
    p.git_repository("diaspora", DIASPORA, json!({"branch": "master"}))
        .await;
    p.git_repository("example-releases", EXAMPLE, json!({"semver": "*"}))
        .await;
    p.flux_receiver("diaspora", "generic", "t1", &[], "diaspora")
        .await;
    p.flux_receiver("example-releases", "generic", "t2", &[], "example-releases")
        .await;
    p.register(p.entry("local-test", json!({}))).await;

    let mut files: Vec<String> = std::fs::read_dir(repo_root().join("events"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "{files:?}");
    for file in &files {
        let text = std::fs::read_to_string(repo_root().join("events").join(file)).unwrap();
        if file.starts_with("ingest-") {
            let expected = match file.as_str() {
                "ingest-wrong-token.json" => (401, "rejected"),
                "ingest-merge-request-hook.json" => (202, "ignored"),
                _ => (202, "accepted"),
            };
            let (status, body) = p.post_event_json(&text).await;
            assert_eq!(
                (status, body["status"].as_str().unwrap_or_default()),
                expected,
                "{file}: {body}"
            );
        } else if file.starts_with("route-") {
            let event = serde_json::from_str(&text).unwrap();
            let response = p.route_batch(event).await;
            assert!(response.batch_item_failures.is_empty(), "{file}");
        } else if file.starts_with("dispatch-") {
            let event = serde_json::from_str(&text).unwrap();
            let response = p.dispatch_batch(event).await;
            assert!(response.batch_item_failures.is_empty(), "{file}");
            assert_eq!(
                p.receiver.accepted("flux-system", "diaspora").len(),
                1,
                "{file}"
            );
            assert_eq!(
                p.receiver.accepted("flux-system", "example-releases").len(),
                1,
                "{file}"
            );
        } else {
            panic!(
                "{file}: no handler for this sample event; name it ingest-, route- or dispatch-"
            );
        }
    }
    assert!(p.take_dead_letters().await.is_empty());
}
