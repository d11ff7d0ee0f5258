//! A signed delivery replayed with another `X-Gitlab-Instance` (the header is not covered by
//! the signature), against `fluxrelay serve` end to end: the config's
//! `[[webhook.instance_secrets]]` ties the signing key to one GitLab instance, and a token
//! to another. The delivery from the key's instance is delivered once through the real
//! kube-apiserver; its replay naming another instance (or none) is refused with 401, and
//! the tied token sent with another instance's header is refused before its body is read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{
    Cluster, DIASPORA_URL, Metrics, Serve, TempDir, WEBHOOK_TOKEN, http_client, payload,
    write_config,
};
use fluxrelay_testkit::netns;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

const SIGNING_KEY_BYTES: &[u8] = b"instance-a-signing-key-32-bytes!";
const TIED_TOKEN: &str = "token-for-gitlab-b-only-19d3";
const RECEIVER_TOKEN: &str = "replay-receiver-token-2b7e";
const INSTANCE_A: &str = "https://gitlab-a.example.com";
const INSTANCE_B: &str = "https://gitlab-b.example.com";

/// POSTs `body` with `token`, the instance header when given, and a signature by the key
/// when `signed`: the status.
async fn deliver(
    serve: &Serve,
    token: &str,
    instance: Option<&str>,
    signed: bool,
    body: &str,
) -> u16 {
    let mut request = http_client()
        .post(serve.url("/webhook"))
        .header("content-type", "application/json")
        .header("x-gitlab-event", "Push Hook")
        .header("x-gitlab-token", token);
    if let Some(instance) = instance {
        request = request.header("x-gitlab-instance", instance);
    }
    if signed {
        let (id, timestamp) = (
            "msg_replayed_delivery",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
                .to_string(),
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(SIGNING_KEY_BYTES).unwrap();
        mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
        request = request
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp)
            .header(
                "webhook-signature",
                format!("v1,{}", BASE64.encode(mac.finalize().into_bytes())),
            );
    }
    let response = request.body(body.to_string()).send().await.unwrap();
    response.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_delivery_replayed_with_another_instance_header_is_refused() {
    if !netns::enter("a_signed_delivery_replayed_with_another_instance_header_is_refused") {
        return;
    }
    let cluster = Cluster::start().await;
    cluster
        .git_repository("diaspora", DIASPORA_URL, json!({"branch": "master"}))
        .await;
    cluster
        .flux_receiver("r", "gitlab", RECEIVER_TOKEN, &[], "diaspora")
        .await;
    let dir = TempDir::new("serve-instance-replay");
    let config = write_config(dir.path(), &[cluster.entry(&[("r", RECEIVER_TOKEN)])], "");
    // The untied token stays (any instance); the signing key is for instance A only, and
    // a second token for instance B only.
    let text = std::fs::read_to_string(&config).unwrap();
    let tied = format!(
        "\n[[webhook.instance_secrets]]\ninstances = [\"gitlab-a.example.com\"]\nsigning_keys = [\"whsec_{}\"]\n\n[[webhook.instance_secrets]]\ninstances = [\"{INSTANCE_B}\"]\ntokens = [\"{TIED_TOKEN}\"]\n",
        BASE64.encode(SIGNING_KEY_BYTES)
    );
    let edited = text.replace("\n[dispatch]\n", &format!("{tied}\n[dispatch]\n"));
    assert_ne!(edited, text, "write_config changed shape");
    std::fs::write(&config, edited).unwrap();
    let serve = Serve::start(&config, &[]).await;
    let push = payload("push-hook.json").to_string();

    assert_eq!(
        deliver(&serve, WEBHOOK_TOKEN, Some(INSTANCE_A), true, &push).await,
        202
    );
    eventually!(
        Duration::from_secs(30),
        "the push from instance A is delivered",
        cluster.receiver.accepted("flux-system", "r").len() == 1
    );
    // Replayed: the same bytes and signature, another instance header, then none (the
    // instance then comes from project.web_url, example.com).
    assert_eq!(
        deliver(&serve, WEBHOOK_TOKEN, Some(INSTANCE_B), true, &push).await,
        401
    );
    assert_eq!(deliver(&serve, WEBHOOK_TOKEN, None, true, &push).await, 401);
    // B's token with A's header: refused from the head, before the body.
    assert_eq!(
        deliver(&serve, TIED_TOKEN, Some(INSTANCE_A), true, &push).await,
        401
    );
    // B's token from B, signed by A's key: the key does not vouch for B.
    assert_eq!(
        deliver(&serve, TIED_TOKEN, Some(INSTANCE_B), true, &push).await,
        401
    );
    let refusals = serve
        .outcomes("rejected")
        .into_iter()
        .filter(|line| {
            line["reason"]
                .as_str()
                .or(line["message"].as_str())
                .unwrap_or_default()
                .contains("is not for the GitLab instance")
        })
        .count();
    let metrics = Metrics::scrape(&serve).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        cluster.receiver.accepted("flux-system", "r").len(),
        1,
        "a replay was delivered: {:?}\n{}",
        cluster.receiver.hits(),
        metrics.text
    );
    assert_eq!(refusals, 4, "{}", serve.log_text());
}
