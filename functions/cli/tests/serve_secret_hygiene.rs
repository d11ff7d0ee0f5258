//! Secret hygiene of `fluxrelay serve`, end to end: its whole stderr in every log format
//! and at the levels that log the most (`--log-format json` and `text`, `RUST_LOG=debug`
//! and `trace`), every answer of /webhook, /metrics and /healthz, and the output of
//! `dlq list --json` and `explain`, over a run with two webhook tokens and a signing key, a
//! client-certificate cluster and a token cluster, `gitlab` and `generic-hmac` Receiver
//! tokens, a `generic` Receiver (whose webhook path is its only secret), a registry token
//! with registry notifications and Harbor webhooks (accepted, refused, malformed), 401s, a
//! 400, a retry after a 503 and a dead letter. No secret, raw or base64, may appear in any
//! of it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{
    Cluster, DIASPORA_URL, Metrics, NAMESPACE, Serve, TempDir, WEBHOOK_TOKEN, http_client, payload,
    run_fluxrelay, write_config,
};
use fluxrelay_testkit::kube_env::DISPATCHER_CERT_BINDING;
use fluxrelay_testkit::netns;
use fluxrelay_testkit::secret_forms::forbidden_forms;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const SECOND_WEBHOOK_TOKEN: &str = "second-serve-webhook-token-61d0e8";
const SIGNING_KEY_BYTES: &[u8] = b"serve-signing-key-of-32-bytes-ok";
const GITLAB_RECEIVER_TOKEN: &str = "serve-gitlab-receiver-token-0c5d";
const HMAC_RECEIVER_TOKEN: &str = "serve-hmac-receiver-token-93ab";
/// Only makes the generic Receiver's path; fluxrelay never holds it.
const GENERIC_RECEIVER_TOKEN: &str = "serve-generic-receiver-token-77f2";

const REGISTRY_TOKEN: &str = "serve-registry-notification-token-4f2a";

/// POSTs `body` to a registry endpoint with `authorization`: (status, body text).
async fn notify(serve: &Serve, path: &str, authorization: &str, body: &str) -> (u16, String) {
    let response = http_client()
        .post(serve.url(path))
        .header("content-type", "application/json")
        .header("authorization", authorization)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

fn core_fixture(path: &str) -> String {
    std::fs::read_to_string(
        common::repo_root()
            .join("functions/core/tests/fixtures")
            .join(path),
    )
    .unwrap()
}

fn signing_key() -> String {
    format!("whsec_{}", BASE64.encode(SIGNING_KEY_BYTES))
}

/// POSTs `body` to /webhook with a token and, when `key` is given, a Standard Webhooks
/// signature: (status, body text).
async fn deliver(serve: &Serve, token: &str, key: Option<&[u8]>, body: &str) -> (u16, String) {
    let mut request = http_client()
        .post(serve.url("/webhook"))
        .header("content-type", "application/json")
        .header("x-gitlab-event", "Push Hook")
        .header("x-gitlab-token", token);
    if let Some(key) = key {
        let id = "msg_serve_hygiene";
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .to_string();
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
        let signature = BASE64.encode(mac.finalize().into_bytes());
        request = request
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp)
            .header("webhook-signature", format!("v1,{signature}"));
    }
    let response = request.body(body.to_string()).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

fn push(n: u32) -> String {
    let mut hook = payload("push-hook.json");
    let sha = format!("{:040x}", 0x5e7000 + n);
    hook["after"] = json!(sha);
    hook["checkout_sha"] = json!(sha);
    hook.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_the_log_answers_dlq_listing_or_explain_output_of_serve() {
    if !netns::enter("no_secret_appears_in_the_log_answers_dlq_listing_or_explain_output_of_serve")
    {
        return;
    }
    let cluster = Cluster::start().await;
    let generic_path = receivers(&cluster).await;
    for (format, level) in [
        ("json", "debug"),
        ("text", "debug"),
        ("json", "trace"),
        ("text", "trace"),
    ] {
        run_once(&cluster, &generic_path, format, level).await;
    }
}

/// The cluster's GitRepository and Receivers; returns the generic Receiver's path.
async fn receivers(cluster: &Cluster) -> String {
    cluster.kube.apply(DISPATCHER_CERT_BINDING).await;
    cluster
        .git_repository("diaspora", DIASPORA_URL, json!({"branch": "master"}))
        .await;
    cluster
        .flux_receiver("r-gitlab", "gitlab", GITLAB_RECEIVER_TOKEN, &[], "diaspora")
        .await;
    cluster
        .flux_receiver(
            "r-hmac",
            "generic-hmac",
            HMAC_RECEIVER_TOKEN,
            &[],
            "diaspora",
        )
        .await;
    cluster
        .flux_receiver(
            "r-generic",
            "generic",
            GENERIC_RECEIVER_TOKEN,
            &[],
            "diaspora",
        )
        .await
}

/// One whole run of serve with this log format and level, then every check.
async fn run_once(cluster: &Cluster, generic_path: &str, format: &str, level: &str) {
    let run = format!("--log-format {format}, RUST_LOG={level}");
    eprintln!("secret hygiene: {run}");
    // The scenario changes the emulator: put it back.
    cluster.receiver.clear();
    cluster
        .receiver
        .set_validation_token(NAMESPACE, "r-gitlab", GITLAB_RECEIVER_TOKEN);
    let hmac_path =
        fluxrelay_core::matching::select::webhook_path(HMAC_RECEIVER_TOKEN, "r-hmac", NAMESPACE);
    let receiver_tokens = [
        ("r-gitlab", GITLAB_RECEIVER_TOKEN),
        ("r-hmac", HMAC_RECEIVER_TOKEN),
    ];
    let mut token_cluster = cluster.entry(&receiver_tokens);
    token_cluster["name"] = json!("token-cluster");
    let mut cert_cluster = cluster.entry(&receiver_tokens);
    cert_cluster["name"] = json!("cert-cluster");
    cert_cluster["auth"] = json!({
        "client_cert": cluster.kube.dispatcher_cert_pem(),
        "client_key": cluster.kube.dispatcher_key_pem(),
    });

    let dir = TempDir::new("serve-secret-hygiene");
    let config = write_config(dir.path(), &[token_cluster, cert_cluster], "");
    let text = std::fs::read_to_string(&config).unwrap();
    let webhook = format!(
        "tokens = [\"{WEBHOOK_TOKEN}\", \"{SECOND_WEBHOOK_TOKEN}\"]\nsigning_keys = [\"{}\"]\nregistry_tokens = [\"{REGISTRY_TOKEN}\"]",
        signing_key()
    );
    let edited = text.replace(&format!("tokens = [\"{WEBHOOK_TOKEN}\"]"), &webhook);
    assert_ne!(edited, text, "write_config changed shape");
    std::fs::write(&config, edited).unwrap();
    let data_dir = dir.path().join("data").to_string_lossy().into_owned();
    let serve = Serve::start_with_log(&config, &[], level, format).await;

    let mut outputs: Vec<(String, String)> = Vec::new();
    let key = Some(SIGNING_KEY_BYTES);
    let mut answer = |what: &str, (status, body): (u16, String)| {
        outputs.push((format!("/webhook {what} ({status})"), body));
        status
    };
    // Refusals: a wrong token, a forged signature, no signature; then malformed JSON.
    assert_eq!(
        answer(
            "wrong token",
            deliver(&serve, "wrong-token", key, &push(0)).await
        ),
        401
    );
    let other_key = Some(&b"another-key-of-32-bytes-length!!"[..]);
    assert_eq!(
        answer(
            "forged",
            deliver(&serve, WEBHOOK_TOKEN, other_key, &push(0)).await
        ),
        401
    );
    assert_eq!(
        answer(
            "unsigned",
            deliver(&serve, WEBHOOK_TOKEN, None, &push(0)).await
        ),
        401
    );
    assert_eq!(
        answer(
            "truncated",
            deliver(&serve, WEBHOOK_TOKEN, key, "{\"object_kind\": \"push\", ").await
        ),
        400
    );
    // A retry: the generic-hmac Receiver answers 503 once.
    cluster.receiver.fail_next(&hmac_path, &[503]);
    assert_eq!(
        answer("first", deliver(&serve, WEBHOOK_TOKEN, key, &push(1)).await),
        202
    );
    let delivered =
        |cluster_name: &'static str| [("cluster", cluster_name), ("outcome", "delivered")];
    eventually!(
        Duration::from_secs(30),
        "the first push is delivered to both clusters",
        {
            let metrics = Metrics::scrape(&serve).await;
            metrics.get("fluxrelay_dispatches_total", &delivered("token-cluster")) == Some(1.0)
                && metrics.get("fluxrelay_dispatches_total", &delivered("cert-cluster"))
                    == Some(1.0)
        }
    );
    // A dead letter per cluster: the gitlab Receiver's token was rotated in the cluster.
    cluster
        .receiver
        .set_validation_token(NAMESPACE, "r-gitlab", "rotated-in-the-cluster");
    let (status, body) = deliver(&serve, SECOND_WEBHOOK_TOKEN, key, &push(2)).await;
    let accepted: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer("second", (status, body)), 202);
    let dead_key = accepted["keys"][0].as_str().unwrap().to_string();
    eventually!(
        Duration::from_secs(30),
        "the second push is dead-lettered for both clusters",
        Metrics::scrape(&serve).await.dead_letters() == 2.0
    );
    let statuses: Vec<u16> = cluster
        .receiver
        .hits()
        .iter()
        .map(|hit| hit.status)
        .collect();
    assert!(
        statuses.contains(&503) && statuses.contains(&400),
        "{statuses:?}"
    );

    // Registries: a notification and a Harbor webhook accepted with the registry token, the
    // webhook token refused there, a malformed notification.
    let registry_push = core_fixture("registry/gitlab-registry-manifest-push.json");
    let harbor_push = core_fixture("harbor/push-artifact-default-by-tag.json");
    let bearer = format!("Bearer {REGISTRY_TOKEN}");
    for (what, path, authorization, body, expected) in [
        (
            "registry push",
            "/registry/distribution",
            bearer.as_str(),
            registry_push.as_str(),
            202,
        ),
        (
            "harbor push",
            "/registry/harbor",
            REGISTRY_TOKEN,
            harbor_push.as_str(),
            202,
        ),
        (
            "registry, webhook token",
            "/registry/distribution",
            WEBHOOK_TOKEN,
            registry_push.as_str(),
            401,
        ),
        (
            "registry, truncated",
            "/registry/distribution",
            bearer.as_str(),
            "{\"events\": [",
            400,
        ),
    ] {
        let (status, body) = notify(&serve, path, authorization, body).await;
        assert_eq!(status, expected, "{what}: {body}");
        outputs.push((format!("{path} {what} ({status})"), body));
    }

    for path in ["/metrics", "/healthz", "/webhook"] {
        let response = http_client().get(serve.url(path)).send().await.unwrap();
        outputs.push((format!("GET {path}"), response.text().await.unwrap()));
    }
    let metrics = Metrics::scrape(&serve).await;
    outputs.push(("/metrics".into(), metrics.text));

    let (status, listing, stderr) = run_fluxrelay(
        &["dlq", "list", "--data-dir", &data_dir, "--json"],
        Duration::from_secs(10),
    );
    assert!(status.success(), "{stderr}");
    assert_eq!(listing.lines().count(), 2, "{listing}");
    outputs.push(("dlq list --json".into(), format!("{listing}{stderr}")));
    let (status, explained, stderr) = run_fluxrelay(
        &["explain", &dead_key, "--data-dir", &data_dir],
        Duration::from_secs(10),
    );
    assert!(status.success(), "{stderr}");
    assert!(explained.contains("400"), "{explained}");
    outputs.push(("explain".into(), format!("{explained}{stderr}")));

    let log = serve.log_text();
    for outcome in [
        "rejected",
        "accepted",
        "delivered",
        "retry",
        "dead_lettered",
    ] {
        let line = match format {
            "json" => format!("\"outcome\":\"{outcome}\""),
            _ => format!("outcome=\"{outcome}\""),
        };
        assert!(log.contains(&line), "{run}: no {outcome} line in:\n{log}");
    }
    // The calls were logged with their URLs (kube-client's span at debug): what the
    // redaction has to catch is there (checked after the leaks, below).
    let saw_redacted_path = log.contains("/hook/<redacted>");
    outputs.push((format!("the serve log ({run})"), log));

    let secrets = [
        ("webhook token", WEBHOOK_TOKEN.to_string()),
        ("second webhook token", SECOND_WEBHOOK_TOKEN.to_string()),
        ("signing key", signing_key()),
        (
            "signing key bytes",
            String::from_utf8(SIGNING_KEY_BYTES.to_vec()).unwrap(),
        ),
        ("kube token", cluster.kube.dispatcher_token()),
        ("client key", cluster.kube.dispatcher_key_pem()),
        ("gitlab receiver token", GITLAB_RECEIVER_TOKEN.to_string()),
        (
            "generic-hmac receiver token",
            HMAC_RECEIVER_TOKEN.to_string(),
        ),
        (
            "generic receiver webhook path",
            generic_path.trim_start_matches("/hook/").to_string(),
        ),
        ("registry token", REGISTRY_TOKEN.to_string()),
    ];
    let forms = forbidden_forms(&secrets);
    for (where_, text) in &outputs {
        for (name, form) in &forms {
            assert!(
                !text.contains(form.as_str()),
                "{run}: {name} appears in {where_}"
            );
        }
    }
    // Text logs show each line's spans, kube-client's `HTTP{http.url=…}` among them (the
    // JSON format of serve leaves spans out).
    assert!(
        saw_redacted_path || format != "text",
        "{run}: no redacted webhook path in the log; the check above proved nothing"
    );
}
