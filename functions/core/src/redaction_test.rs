//! Secrets never reach a `Debug` dump or an error message (DESIGN, "Security rules").
//!
//! Every type that holds secret material is built around distinctive secret strings, and
//! `{:?}`, `{:#?}` and the `Display` of every error that parsing bad configuration
//! produces are searched for them, raw and base64-encoded.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use crate::auth::{AuthConfig, SigningKey, authenticate};
use crate::flux::{ObjectRef, Receiver, ReceiverType};
use crate::handlers::plan::{ClusterView, plan_push};
use crate::ingest::{IngestConfig, IngestResponse};
use crate::push::tests::sample_push;
use crate::registry::{ClusterEntry, Credentials, ReceiverEndpoint, TriggerConfig, TriggerMode};
use crate::secret::Secret;
use crate::trigger::request::receiver_request;

const WEBHOOK_TOKEN: &str = "Wh00k-T0ken-redaction-a41f";
const KUBE_TOKEN: &str = "kube-T0ken-redaction-5be2";
const CLIENT_KEY: &str =
    "-----BEGIN PRIVATE KEY-----\nClientKeyRedaction93d0\n-----END PRIVATE KEY-----";
const KUBECONFIG: &str =
    "apiVersion: v1\nusers:\n- name: u\n  user:\n    token: KubeconfigT0kenRedaction77c1\n";
const RECEIVER_TOKEN: &str = "Receiver-T0ken-redaction-c0de";
/// 32 bytes of signing key; the configuration holds `whsec_` + their base64.
const SIGNING_KEY_BYTES: &[u8; 32] = b"SigningKeyRedaction-0123456789ab";

/// Distinctive parts of every secret: a match on any of them is a leak.
fn needles() -> Vec<String> {
    let mut needles = Vec::new();
    for secret in [
        WEBHOOK_TOKEN,
        KUBE_TOKEN,
        "ClientKeyRedaction93d0",
        "KubeconfigT0kenRedaction77c1",
        RECEIVER_TOKEN,
    ] {
        needles.push(secret.to_string());
        needles.push(STANDARD.encode(secret));
        needles.push(URL_SAFE_NO_PAD.encode(secret));
    }
    needles.push(String::from_utf8_lossy(SIGNING_KEY_BYTES).into_owned());
    // Any 12 characters of the key's base64 (as configured) or hex.
    let encoded = STANDARD.encode(SIGNING_KEY_BYTES);
    needles.push(encoded[..12].to_string());
    needles.push(encoded[20..32].to_string());
    needles.push(hex::encode(&SIGNING_KEY_BYTES[..8]));
    needles
}

fn signing_key_text() -> String {
    format!("whsec_{}", STANDARD.encode(SIGNING_KEY_BYTES))
}

#[track_caller]
fn assert_hidden(what: &str, text: &str) {
    for needle in needles() {
        assert!(!text.contains(&needle), "{what} shows {needle:?}:\n{text}");
    }
}

#[track_caller]
fn assert_debug_hidden(what: &str, value: &impl std::fmt::Debug) {
    let compact = format!("{value:?}");
    let pretty = format!("{value:#?}");
    assert!(!compact.is_empty() && !pretty.is_empty());
    assert_hidden(what, &compact);
    assert_hidden(what, &pretty);
}

fn entry_json(extra: Value) -> Value {
    let mut value = json!({
        "name": "prod",
        "server": "https://127.0.0.1:6443",
        "trigger": {"receiver_tokens": {"flux-system/r": RECEIVER_TOKEN}},
    });
    if let (Some(base), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
        base.extend(extra.clone());
    }
    value
}

fn entries() -> Vec<(&'static str, ClusterEntry)> {
    let client_cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
    [
        ("token", json!({"auth": {"token": KUBE_TOKEN}})),
        (
            "client certificate",
            json!({"auth": {"client_cert": client_cert, "client_key": CLIENT_KEY}}),
        ),
        (
            "eks",
            json!({"auth": {"eks": {"cluster": "prod", "region": "eu-west-1"}}}),
        ),
        (
            "kubeconfig",
            json!({"kubeconfig": KUBECONFIG, "context": "prod"}),
        ),
    ]
    .into_iter()
    .map(|(kind, extra)| {
        let entry = ClusterEntry::from_json(&entry_json(extra).to_string()).unwrap();
        (kind, entry)
    })
    .collect()
}

#[test]
fn debug_of_every_type_holding_a_secret_is_redacted() {
    // The needles are really in the values: a check that passes on empty values proves nothing.
    let token = Secret::new(WEBHOOK_TOKEN);
    assert_eq!(token.expose(), WEBHOOK_TOKEN);
    assert_debug_hidden("Secret", &token);
    assert_hidden("Secret (Display)", &token.to_string());

    let key = SigningKey::parse(&signing_key_text()).unwrap();
    assert_debug_hidden("SigningKey", &key);

    let auth = AuthConfig::new(vec![token.clone()], vec![key.clone()]).unwrap();
    assert_debug_hidden("AuthConfig", &auth);
    assert_debug_hidden("IngestConfig", &IngestConfig::new(auth));

    let entries = entries();
    let kinds: Vec<&str> = entries.iter().map(|(_, e)| e.credentials.kind()).collect();
    assert_eq!(kinds, ["token", "client_cert", "eks", "kubeconfig"]);
    for (kind, entry) in &entries {
        let exposed = match &entry.credentials {
            Credentials::Token(secret) => secret.expose(),
            Credentials::ClientCertificate { key_pem, .. } => key_pem.expose(),
            Credentials::Kubeconfig { kubeconfig, .. } => kubeconfig.expose(),
            Credentials::Eks { .. } => "",
        };
        assert!(*kind == "eks" || exposed.contains("T0ken") || exposed.contains("Redaction"));
        assert_debug_hidden(kind, entry);
        assert_debug_hidden(kind, &entry.credentials);
        assert_debug_hidden(kind, &entry.trigger);
    }

    let trigger = TriggerConfig {
        mode: TriggerMode::Receiver,
        receiver_endpoint: ReceiverEndpoint::ServiceProxy(
            crate::registry::DEFAULT_RECEIVER_PROXY.into(),
        ),
        receiver_tokens: BTreeMap::from([(
            ObjectRef::new("flux-system", "r"),
            Secret::new(RECEIVER_TOKEN),
        )]),
        ..TriggerConfig::default()
    };
    assert_eq!(
        trigger.receiver_tokens.values().next().map(Secret::expose),
        Some(RECEIVER_TOKEN)
    );
    assert_debug_hidden("TriggerConfig", &trigger);

    // Requests carry the Receiver token (gitlab) or an HMAC keyed by it.
    for kind in ["gitlab", "generic-hmac", "github"] {
        let request = receiver_request(
            &trigger.receiver_endpoint,
            &ReceiverType::parse(kind),
            "/hook/0123abcd",
            Some(&Secret::new(RECEIVER_TOKEN)),
            &sample_push(),
        )
        .unwrap();
        assert_debug_hidden(kind, &request);
        let signature = request
            .headers
            .iter()
            .find(|(name, _)| name.as_str().contains("signature"))
            .map(|(_, value)| value.to_str().unwrap().to_string());
        if let Some(signature) = signature {
            assert!(!format!("{request:?}").contains(&signature), "{kind}");
        }
    }
}

#[test]
fn errors_from_bad_configuration_never_show_the_secret() {
    let bad_entries: Vec<(&str, String)> = vec![
        (
            "good auth, bad server",
            entry_json(json!({"server": "http://x", "auth": {"token": KUBE_TOKEN}})).to_string(),
        ),
        (
            "secret in the server's user info",
            entry_json(json!({"server": format!("https://admin:{KUBE_TOKEN}@k8s.example"), "auth": {"token": KUBE_TOKEN}})).to_string(),
        ),
        (
            "token and client certificate at once",
            entry_json(json!({"auth": {"token": KUBE_TOKEN, "client_key": CLIENT_KEY}})).to_string(),
        ),
        (
            "client key without a certificate",
            entry_json(json!({"auth": {"client_key": CLIENT_KEY}})).to_string(),
        ),
        (
            "client key that is not PEM",
            entry_json(json!({"auth": {"client_cert": "x", "client_key": KUBE_TOKEN}})).to_string(),
        ),
        (
            "auth and kubeconfig at once",
            entry_json(json!({"auth": {"token": KUBE_TOKEN}, "kubeconfig": KUBECONFIG})).to_string(),
        ),
        (
            "kubeconfig with context and a stray auth field",
            entry_json(json!({"kubeconfig": KUBECONFIG, "authx": KUBE_TOKEN})).to_string(),
        ),
        (
            "auth is the token itself",
            entry_json(json!({"auth": KUBE_TOKEN})).to_string(),
        ),
        (
            "token under a misspelt key",
            entry_json(json!({"auth": {"tokn": KUBE_TOKEN}})).to_string(),
        ),
        (
            "receiver token under a key that is not namespace/name",
            entry_json(json!({"auth": {"token": KUBE_TOKEN}, "trigger": {"receiver_tokens": {"r": RECEIVER_TOKEN}}})).to_string(),
        ),
        (
            "receiver token and its namespace/name swapped",
            entry_json(json!({"auth": {"token": KUBE_TOKEN}, "trigger": {"receiver_tokens": {RECEIVER_TOKEN: "flux-system/r"}}})).to_string(),
        ),
        (
            "receiver token that is not a string",
            entry_json(json!({"auth": {"token": KUBE_TOKEN}, "trigger": {"receiver_tokens": {"flux-system/r": [RECEIVER_TOKEN]}}})).to_string(),
        ),
        (
            "receiver tokens given as a list",
            entry_json(json!({"auth": {"token": KUBE_TOKEN}, "trigger": {"receiver_tokens": [RECEIVER_TOKEN]}})).to_string(),
        ),
        (
            "entry cut short after the token",
            format!(r#"{{"name": "prod", "auth": {{"token": "{KUBE_TOKEN}""#),
        ),
        (
            "invalid escape right after the token",
            format!(r#"{{"auth": {{"token": "{KUBE_TOKEN}\q"}}}}"#),
        ),
        (
            "control character inside the token",
            format!("{{\"auth\": {{\"token\": \"{KUBE_TOKEN}\u{1}\"}}}}"),
        ),
    ];
    for (name, text) in &bad_entries {
        let error = ClusterEntry::from_json(text).expect_err(name);
        assert!(!error.errors.is_empty(), "{name}");
        assert_hidden(name, &error.to_string());
        assert_debug_hidden(name, &error);
        let read_error = crate::ports::RegistryReadError::Invalid {
            name: "prod".into(),
            error,
        };
        assert_hidden(name, &read_error.to_string());
    }

    let key_text = signing_key_text();
    let bad_keys = [
        key_text.replacen("whsec_", "whsec-", 1),
        format!("{key_text}\n"),
        format!("whsec_{}", STANDARD.encode(&SIGNING_KEY_BYTES[..12])),
        format!("whsec_{}", &key_text["whsec_".len()..key_text.len() - 1]),
    ];
    for text in &bad_keys {
        let error = SigningKey::parse(text).unwrap_err();
        assert_hidden("signing key error", &error.to_string());
        assert_debug_hidden("signing key error", &error);
    }
    for token in [
        format!("{WEBHOOK_TOKEN}\n"),
        format!(" {WEBHOOK_TOKEN}"),
        String::new(),
    ] {
        let error = AuthConfig::new(vec![Secret::new(token)], vec![]).unwrap_err();
        assert_hidden("token config error", &error.to_string());
        assert_debug_hidden("token config error", &error);
    }

    // A wrong token at the edge: neither the accepted one nor the presented one is echoed.
    let auth = AuthConfig::new(vec![Secret::new(WEBHOOK_TOKEN)], vec![]).unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert("x-gitlab-token", http::HeaderValue::from_static(KUBE_TOKEN));
    let failure = authenticate(&auth, &headers, b"{}", 0).unwrap_err();
    assert_hidden("auth failure", &failure.to_string());
    let response = IngestResponse::from_result(&Err(failure.into()));
    assert_eq!(response.status, 401);
    assert_hidden("401 answer", &response.body);
}

#[test]
fn plan_problems_about_tokens_never_show_them() {
    // A Receiver whose webhook path the registry token does not produce, and a token that
    // cannot go into a header: both are reported, neither report shows a token.
    let entry = ClusterEntry::from_value(&entry_json(json!({
        "auth": {"token": KUBE_TOKEN},
        "trigger": {"receiver_tokens": {"flux-system/r": RECEIVER_TOKEN, "flux-system/bad": format!("{RECEIVER_TOKEN}\n")}},
    })))
    .unwrap();
    let receiver = |name: &str, token: &str| {
        Receiver::from_json(&json!({
            "metadata": {"name": name, "namespace": "flux-system"},
            "spec": {"type": "gitlab", "resources": [{"kind": "GitRepository", "name": "*"}]},
            "status": {"webhookPath": crate::matching::select::webhook_path(token, name, "flux-system"),
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
    };
    let view = ClusterView {
        repositories: vec![crate::flux::GitRepository::from_json(&json!({
            "metadata": {"name": "app", "namespace": "flux-system"},
            "spec": {"url": "https://gitlab.example.com/mike/diaspora.git", "ref": {"branch": "main"}}
        }))],
        receivers: vec![
            receiver("r", "another-token"),
            receiver("bad", &format!("{RECEIVER_TOKEN}\n")),
        ],
        freshness: crate::matching::select::Freshness::Fresh,
        ..ClusterView::default()
    };
    let plan = plan_push(&entry, &view, &sample_push());
    assert_eq!(plan.problems.len(), 2, "{plan:?}");
    assert_debug_hidden("plan", &plan);
    for problem in &plan.problems {
        assert_hidden("plan problem", &problem.failure.to_string());
    }
}
