//! Secrets Manager adapter (webhook auth) against a real moto server. The cluster
//! registry's secrets are tested with the rest of the registry in `registry_moto.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aws_sdk_secretsmanager::Client;
use fluxrelay_adapters::secrets::{WebhookAuthError, load_webhook_auth};
use fluxrelay_core::auth::Requirement;
use fluxrelay_testkit::moto::Moto;
use serde_json::json;

async fn create(client: &Client, secret_name: &str, value: &str) {
    client
        .create_secret()
        .name(secret_name)
        .secret_string(value)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn load_webhook_auth_reads_tokens_and_signing_keys() {
    let moto = Moto::start();
    let client = moto.secrets().await;
    let key = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    create(
        &client,
        "fluxrelay/webhook",
        &json!({"tokens": ["tok-1", "tok-2"], "signing_keys": [key]}).to_string(),
    )
    .await;

    let config = load_webhook_auth(&client, "fluxrelay/webhook")
        .await
        .unwrap();

    assert_eq!(config.tokens.len(), 2);
    assert_eq!(config.tokens[1].expose(), "tok-2");
    assert_eq!(config.signing_keys.len(), 1);
    assert_eq!(config.policy.token, Requirement::Required);
    assert_eq!(config.policy.signature, Requirement::Required);
}

#[tokio::test]
async fn a_bad_signing_key_is_an_error_that_does_not_contain_the_key() {
    let moto = Moto::start();
    let client = moto.secrets().await;
    let bad_key = "whsec_c2hvcnQ=";
    create(
        &client,
        "fluxrelay/webhook",
        &json!({"tokens": ["tok-1"], "signing_keys": [bad_key]}).to_string(),
    )
    .await;

    let error = load_webhook_auth(&client, "fluxrelay/webhook")
        .await
        .unwrap_err();

    assert!(
        matches!(error, WebhookAuthError::Invalid { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("signing_keys[0]"), "{message}");
    assert!(message.contains("fluxrelay/webhook"), "{message}");
    assert!(!message.contains("c2hvcnQ"), "{message}");
    assert!(!format!("{error:?}").contains("c2hvcnQ"));
}

#[tokio::test]
async fn a_missing_webhook_auth_secret_is_unavailable() {
    let moto = Moto::start();
    let client = moto.secrets().await;

    let error = load_webhook_auth(&client, "fluxrelay/nope")
        .await
        .unwrap_err();

    assert!(
        matches!(error, WebhookAuthError::Unavailable { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("ResourceNotFoundException"),
        "{error}"
    );
}
