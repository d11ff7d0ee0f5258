//! A signed delivery replayed with another `X-Gitlab-Instance` (the header is not covered by
//! the signature), on the AWS path end to end: ingest on moto with the webhook secret's
//! `instance_secrets`, route and dispatch to the Flux receiver emulator through a real
//! kube-apiserver. The signing key is tied to one instance: the delivery from it is
//! delivered once, the replay naming another instance is refused with 401 and delivers
//! nothing. With the key untied, as every secret was before, the replay is delivered again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use fluxrelay_adapters::lambda::{IngestFunction, WebhookAuth};
use fluxrelay_adapters::sqs::SqsQueue;
use fluxrelay_e2e::pipeline::{Pipeline, SAMPLE_WEBHOOK_TOKEN};
use fluxrelay_testkit::netns;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const SIGNING_KEY_BYTES: &[u8] = b"instance-a-signing-key-32-bytes!";
const RECEIVER_TOKEN: &str = "replay-receiver-token-6a0c";
const DIASPORA: &str = "https://example.com/mike/diaspora.git";
const INSTANCE_A: &str = "https://gitlab-a.example.com";
const INSTANCE_B: &str = "https://gitlab-b.example.com";

/// The sample push from `instance`, with the untied token and a signature by the key tied
/// to instance A (over the body only, as GitLab signs).
fn signed_push(instance: &str) -> String {
    let mut event: Value =
        serde_json::from_str(&Pipeline::edited_event("ingest-push-hook.json", |_| {})).unwrap();
    let body = event["body"].as_str().unwrap().to_string();
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
    let headers = &mut event["headers"];
    headers["x-gitlab-token"] = json!(SAMPLE_WEBHOOK_TOKEN);
    headers["x-gitlab-instance"] = json!(instance);
    headers["webhook-id"] = json!(id);
    headers["webhook-timestamp"] = json!(timestamp);
    headers["webhook-signature"] =
        json!(format!("v1,{}", BASE64.encode(mac.finalize().into_bytes())));
    event.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_delivery_replayed_with_another_instance_header_is_refused() {
    if !netns::enter("a_signed_delivery_replayed_with_another_instance_header_is_refused") {
        return;
    }
    let mut p = Pipeline::start().await;
    p.secrets
        .put_secret_value()
        .secret_id("fluxrelay/webhook")
        .secret_string(
            json!({
                "tokens": [SAMPLE_WEBHOOK_TOKEN],
                "instance_secrets": [{
                    "instances": ["gitlab-a.example.com"],
                    "signing_keys": [format!("whsec_{}", BASE64.encode(SIGNING_KEY_BYTES))],
                }],
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    p.ingest = IngestFunction {
        auth: WebhookAuth::load(
            p.secrets.clone(),
            "fluxrelay/webhook",
            Duration::from_secs(300),
        )
        .await
        .unwrap(),
        queue: SqsQueue::new(p.sqs.clone(), p.queues.intake.clone()),
    };
    p.git_repository("app", DIASPORA, json!({"branch": "master"}))
        .await;
    p.flux_receiver("r", "gitlab", RECEIVER_TOKEN, &[], "app")
        .await;
    p.register(p.entry(
        "prod",
        json!({"trigger": {"receiver_tokens": {"flux-system/r": RECEIVER_TOKEN}}}),
    ))
    .await;

    let (status, body) = p.post_event_json(&signed_push(INSTANCE_A)).await;
    assert_eq!(
        (status, &body["status"]),
        (202, &json!("accepted")),
        "{body}"
    );
    p.drain().await;
    assert_eq!(p.receiver.accepted("flux-system", "r").len(), 1);

    // The same bytes and signature, another instance header: before instance_secrets this
    // was a new push (another key) and was dispatched again.
    let (status, body) = p.post_event_json(&signed_push(INSTANCE_B)).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("is not for the GitLab instance"),
        "{body}"
    );
    // And without the header (the instance then comes from project.web_url).
    let mut headerless: Value = serde_json::from_str(&signed_push(INSTANCE_A)).unwrap();
    headerless["headers"]
        .as_object_mut()
        .unwrap()
        .remove("x-gitlab-instance");
    let (status, body) = p.post_event_json(&headerless.to_string()).await;
    assert_eq!(status, 401, "{body}");
    p.drain().await;
    assert_eq!(
        p.receiver.accepted("flux-system", "r").len(),
        1,
        "a replay was delivered: {:?}",
        p.receiver.hits()
    );
    assert!(p.take_dead_letters().await.is_empty());

    // The same key untied (the secret as it was before instance_secrets): the replay is a
    // new push from instance B and is delivered again. This is what tying prevents, and
    // what an untied secret still allows (backwards compatible).
    p.secrets
        .put_secret_value()
        .secret_id("fluxrelay/webhook")
        .secret_string(
            json!({
                "tokens": [SAMPLE_WEBHOOK_TOKEN],
                "signing_keys": [format!("whsec_{}", BASE64.encode(SIGNING_KEY_BYTES))],
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    p.ingest = IngestFunction {
        auth: WebhookAuth::load(
            p.secrets.clone(),
            "fluxrelay/webhook",
            Duration::from_secs(300),
        )
        .await
        .unwrap(),
        queue: SqsQueue::new(p.sqs.clone(), p.queues.intake.clone()),
    };
    let (status, body) = p.post_event_json(&signed_push(INSTANCE_B)).await;
    assert_eq!(status, 202, "{body}");
    p.drain().await;
    assert_eq!(p.receiver.accepted("flux-system", "r").len(), 2);
}
