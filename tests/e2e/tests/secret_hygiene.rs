//! Secret hygiene of the AWS path, end to end: every log line the three functions write
//! (through `tracing`, in the functions' own JSON format and in the plain text format, each
//! at `debug` and at `trace` for every target — more than the template's default `info`)
//! and every answer ingest gives, over a run with webhook tokens and a signing key, a
//! client-certificate cluster and a token cluster, `gitlab` and `generic-hmac` Receiver
//! tokens, a `generic` Receiver (whose webhook path is its only secret), a 401, a 400, a
//! retry after a 503 and a dead letter. None of the secrets, raw or base64, may appear in
//! any of it, nor in the dead letters.
//!
//! `tracing` has one global subscriber per process: this file is its own test binary, and
//! its one test installs a subscriber, one layer per format and level each writing into
//! its own buffer (through the functions' redacting writer), before anything logs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use fluxrelay_adapters::lambda::{IngestFunction, WebhookAuth};
use fluxrelay_adapters::sqs::SqsQueue;
use fluxrelay_e2e::pipeline::{Pipeline, SAMPLE_WEBHOOK_TOKEN, repo_root};
use fluxrelay_testkit::kube_env::DISPATCHER_CERT_BINDING;
use fluxrelay_testkit::netns;
use fluxrelay_testkit::secret_forms::forbidden_forms;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const SECOND_WEBHOOK_TOKEN: &str = "second-webhook-token-3f9a61c2d8";
/// 32 bytes, as GitLab issues them.
const SIGNING_KEY_BYTES: &[u8] = b"fluxrelay-signing-key-32-bytes!!";
const GITLAB_RECEIVER_TOKEN: &str = "gitlab-receiver-token-77e0b1";
const HMAC_RECEIVER_TOKEN: &str = "hmac-receiver-token-a4c2f9";
/// Only makes the generic Receiver's path; fluxrelay never holds it.
const GENERIC_RECEIVER_TOKEN: &str = "generic-receiver-token-5d81e0";
const REGISTRY_TOKEN: &str = "registry-notification-token-0b7d3e";
const DIASPORA: &str = "https://example.com/mike/diaspora.git";

/// Everything one layer writes; `echo`: also to stderr, so a failing test shows it.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>, bool);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        if self.1 {
            std::io::stderr().write_all(bytes)?;
        }
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn signing_key() -> String {
    format!("whsec_{}", BASE64.encode(SIGNING_KEY_BYTES))
}

/// The plain text format (`fluxrelay serve --log-format text`), through the same
/// redacting writer as the functions' JSON.
fn text_layer<S>(captured: &Captured) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(fluxrelay_adapters::log_writer::Redacting(captured.clone()))
}

/// An events/ file, edited, with GitLab's token and a Standard Webhooks signature by `key`.
fn signed_event(file: &str, token: &str, edit: impl FnOnce(&mut Value), key: &[u8]) -> String {
    let event: Value = serde_json::from_str(&Pipeline::edited_event(file, edit)).unwrap();
    sign(event, token, key)
}

/// Sets the token and signs the event's body as it stands.
fn sign(mut event: Value, token: &str, key: &[u8]) -> String {
    let body = event["body"].as_str().unwrap().to_string();
    let id = "msg_2mV1a7vY1g3d0";
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let signature = BASE64.encode(mac.finalize().into_bytes());
    let headers = &mut event["headers"];
    headers["x-gitlab-token"] = json!(token);
    headers["webhook-id"] = json!(id);
    headers["webhook-timestamp"] = json!(timestamp);
    headers["webhook-signature"] = json!(format!("v1,{signature}"));
    event.to_string()
}

/// Hands the event to ingest; keeps its answer's status and body.
async fn post(p: &Pipeline, event: String, answers: &mut Vec<(u16, String)>) -> u16 {
    let request = lambda_http::request::from_str(&event).unwrap();
    let response = p.ingest.handle(request).await.unwrap();
    let status = response.status().as_u16();
    answers.push((
        status,
        String::from_utf8_lossy(response.body().as_ref()).into_owned(),
    ));
    status
}

fn new_commit(hook: &mut Value, n: u32) {
    let sha = format!("{:040x}", 0x5ec000 + n);
    hook["after"] = json!(sha);
    hook["checkout_sha"] = json!(sha);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_any_log_line_answer_or_dead_letter_of_the_aws_path() {
    if !netns::enter("no_secret_appears_in_any_log_line_answer_or_dead_letter_of_the_aws_path") {
        return;
    }
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let level = |level: &str| tracing_subscriber::EnvFilter::new(level);
    let logs: Vec<(&str, &str, Captured)> = [
        ("json", "debug"),
        ("json", "trace"),
        ("text", "debug"),
        ("text", "trace"),
    ]
    .into_iter()
    .map(|(format, filter)| {
        (
            format,
            filter,
            Captured(Arc::default(), (format, filter) == ("json", "debug")),
        )
    })
    .collect();
    tracing_subscriber::registry()
        .with(fluxrelay_adapters::lambda::log_layer(logs[0].2.clone()).with_filter(level("debug")))
        .with(fluxrelay_adapters::lambda::log_layer(logs[1].2.clone()).with_filter(level("trace")))
        .with(text_layer(&logs[2].2).with_filter(level("debug")))
        .with(text_layer(&logs[3].2).with_filter(level("trace")))
        .init();

    let mut p = Pipeline::start().await;
    // Two accepted tokens and a signing key: both checks required.
    p.secrets
        .put_secret_value()
        .secret_id("fluxrelay/webhook")
        .secret_string(
            json!({"tokens": [SAMPLE_WEBHOOK_TOKEN, SECOND_WEBHOOK_TOKEN], "signing_keys": [signing_key()],
                   "registry_tokens": [REGISTRY_TOKEN]})
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

    p.kube.apply(DISPATCHER_CERT_BINDING).await;
    p.git_repository("app", DIASPORA, json!({"branch": "master"}))
        .await;
    p.flux_receiver("r-gitlab", "gitlab", GITLAB_RECEIVER_TOKEN, &[], "app")
        .await;
    let hmac_path = p
        .flux_receiver("r-hmac", "generic-hmac", HMAC_RECEIVER_TOKEN, &[], "app")
        .await;
    let generic_path = p
        .flux_receiver("r-generic", "generic", GENERIC_RECEIVER_TOKEN, &[], "app")
        .await;
    let tokens = json!({"trigger": {"receiver_tokens": {
        "flux-system/r-gitlab": GITLAB_RECEIVER_TOKEN,
        "flux-system/r-hmac": HMAC_RECEIVER_TOKEN,
    }}});
    p.register(p.entry("token-cluster", tokens.clone())).await;
    let mut certificate = p.entry("cert-cluster", tokens);
    certificate["auth"] = json!({
        "client_cert": p.kube.dispatcher_cert_pem(),
        "client_key": p.kube.dispatcher_key_pem(),
    });
    p.register(certificate).await;

    let mut answers: Vec<(u16, String)> = Vec::new();
    let a = &mut answers;
    let key = SIGNING_KEY_BYTES;
    let push = "ingest-push-hook.json";
    // Refusals: a wrong token, the right token with a forged signature, no signature.
    let wrong_token = signed_event(push, "wrong-token", |_| {}, key);
    assert_eq!(post(&p, wrong_token, a).await, 401);
    let forged = signed_event(
        push,
        SAMPLE_WEBHOOK_TOKEN,
        |_| {},
        b"another-key-of-32-bytes-length!!",
    );
    assert_eq!(post(&p, forged, a).await, 401);
    let unsigned = Pipeline::event_with_token(push, SECOND_WEBHOOK_TOKEN);
    assert_eq!(post(&p, unsigned, a).await, 401);
    // Truncated JSON, correctly authenticated: 400.
    let mut truncated: Value = serde_json::from_str(&Pipeline::edited_event(push, |_| {})).unwrap();
    truncated["body"] = json!("{\"object_kind\": \"push\", \"ref\": ");
    assert_eq!(
        post(&p, sign(truncated, SAMPLE_WEBHOOK_TOKEN, key), a).await,
        400
    );
    // An ignored event, correctly authenticated.
    let merge_request = signed_event(
        "ingest-merge-request-hook.json",
        SAMPLE_WEBHOOK_TOKEN,
        |_| {},
        key,
    );
    assert_eq!(post(&p, merge_request, a).await, 202);
    // Delivered to both clusters' two Receivers.
    let first = signed_event(push, SAMPLE_WEBHOOK_TOKEN, |hook| new_commit(hook, 1), key);
    assert_eq!(post(&p, first, a).await, 202);
    p.drain().await;
    // A retry: the generic-hmac Receiver answers 503 once; then delivered.
    p.receiver.fail_next(&hmac_path, &[503]);
    let second = signed_event(push, SECOND_WEBHOOK_TOKEN, |hook| new_commit(hook, 2), key);
    assert_eq!(post(&p, second, a).await, 202);
    p.drain().await;
    // A dead letter per cluster: the gitlab Receiver's token was rotated in the cluster (400).
    p.receiver
        .set_validation_token("flux-system", "r-gitlab", "rotated-in-the-cluster");
    let third = signed_event(push, SAMPLE_WEBHOOK_TOKEN, |hook| new_commit(hook, 3), key);
    assert_eq!(post(&p, third, a).await, 202);
    p.drain().await;

    // Registry endpoints with the registry token: a notification and a Harbor webhook
    // (routed, nothing to trigger: no artifact kinds), a wrong token, a malformed body.
    let fixture = |path: &str| {
        std::fs::read_to_string(repo_root().join("functions/core/tests/fixtures").join(path))
            .unwrap()
    };
    let bearer = format!("Bearer {REGISTRY_TOKEN}");
    for (path, authorization, body, expected) in [
        (
            "/registry/distribution",
            bearer.as_str(),
            fixture("registry/gitlab-registry-manifest-push.json"),
            202,
        ),
        (
            "/registry/harbor",
            REGISTRY_TOKEN,
            fixture("harbor/push-artifact-default-by-tag.json"),
            202,
        ),
        (
            "/registry/distribution",
            SAMPLE_WEBHOOK_TOKEN,
            fixture("registry/gitlab-registry-manifest-push.json"),
            401,
        ),
        (
            "/registry/harbor",
            bearer.as_str(),
            "{\"type\": \"PUSH_ARTIFACT\", ".to_string(),
            400,
        ),
    ] {
        let (status, answer) = p
            .post_function_url(path, &[("authorization", authorization)], &body)
            .await;
        assert_eq!(status, expected, "{path}: {answer}");
        a.push((status, answer.to_string()));
    }
    p.drain().await;

    let dead = p.take_dead_letters().await;
    assert_eq!(dead.len(), 2, "one per cluster: {dead:?}");
    let hits = p.receiver.hits();
    let statuses: Vec<u16> = hits.iter().map(|hit| hit.status).collect();
    assert!(
        statuses.contains(&503) && statuses.contains(&400),
        "{statuses:?}"
    );

    let mut outputs = Vec::new();
    for (format, filter, captured) in &logs {
        let log = captured.text();
        let which = format!("the {format} log at {filter}");
        // The capture worked and covered the whole run.
        for outcome in [
            "rejected",
            "accepted",
            "ignored",
            "routed",
            "delivered",
            "retry",
            "dead_lettered",
        ] {
            let line = match *format {
                "json" => format!("\"outcome\":\"{outcome}\""),
                _ => format!("outcome=\"{outcome}\""),
            };
            assert!(log.contains(&line), "{which}: no {outcome} line");
        }
        for cluster in ["token-cluster", "cert-cluster"] {
            assert!(log.contains(cluster), "{which}: {cluster} never logged");
        }
        eprintln!(
            "{which}: {} lines, {} bytes",
            log.lines().count(),
            log.len()
        );
        outputs.push((which, log));
    }
    for (status, body) in &answers {
        outputs.push((format!("an ingest answer ({status})"), body.clone()));
    }
    for (body, attributes) in &dead {
        outputs.push(("a dead letter".into(), format!("{body} {attributes:?}")));
    }
    let secrets = [
        ("webhook token", SAMPLE_WEBHOOK_TOKEN.to_string()),
        ("second webhook token", SECOND_WEBHOOK_TOKEN.to_string()),
        ("signing key", signing_key()),
        (
            "signing key bytes",
            String::from_utf8(SIGNING_KEY_BYTES.to_vec()).unwrap(),
        ),
        ("kube token", p.kube.dispatcher_token()),
        ("client key", p.kube.dispatcher_key_pem()),
        ("gitlab receiver token", GITLAB_RECEIVER_TOKEN.to_string()),
        ("registry token", REGISTRY_TOKEN.to_string()),
        (
            "generic-hmac receiver token",
            HMAC_RECEIVER_TOKEN.to_string(),
        ),
        (
            "generic receiver webhook path",
            generic_path.trim_start_matches("/hook/").to_string(),
        ),
    ];
    let forms = forbidden_forms(&secrets);
    for (where_, text) in &outputs {
        for (name, form) in &forms {
            assert!(!text.contains(form.as_str()), "{name} appears in {where_}");
        }
    }
    // kube-client's span carries the URL of each call at debug: the redaction had
    // something to do, in both formats (the JSON lines list their spans).
    for (which, log) in outputs
        .iter()
        .filter(|(which, _)| which.ends_with(" log at debug") || which.ends_with(" log at trace"))
    {
        assert!(
            log.contains("/hook/<redacted>"),
            "{which}: no redacted webhook path; the checks above proved nothing"
        );
    }
}
