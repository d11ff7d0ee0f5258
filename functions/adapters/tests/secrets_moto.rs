//! Secrets Manager adapter (cluster registry, webhook auth) against a real moto server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_secretsmanager::Client;
use fluxrelay_adapters::secrets::{SecretsRegistry, WebhookAuthError, load_webhook_auth};
use fluxrelay_core::auth::Requirement;
use fluxrelay_core::ports::{ClusterRegistry, RegistryReadError};
use fluxrelay_core::registry::ClusterListing;
use fluxrelay_testkit::moto::{CountCalls, Moto};
use serde_json::json;

const PREFIX: &str = "fluxrelay/clusters/";
const LONG_TTL: Duration = Duration::from_secs(600);

fn entry(name: &str, server: &str) -> String {
    json!({"name": name, "server": server, "auth": {"token": "kube-token-SECRET-1"}}).to_string()
}

async fn create(client: &Client, secret_name: &str, value: &str) {
    client
        .create_secret()
        .name(secret_name)
        .secret_string(value)
        .send()
        .await
        .unwrap();
}

async fn update(client: &Client, secret_name: &str, value: &str) {
    client
        .put_secret_value()
        .secret_id(secret_name)
        .secret_string(value)
        .send()
        .await
        .unwrap();
}

fn names(listing: &ClusterListing) -> Vec<&str> {
    listing.entries.iter().map(|e| e.name.as_str()).collect()
}

/// Records every WARN event's fields as text, to check what the registry logs.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

struct FieldText<'a>(&'a mut String);

impl tracing::field::Visit for FieldText<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl tracing::Subscriber for Warnings {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() == tracing::Level::WARN
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut text = String::new();
        event.record(&mut FieldText(&mut text));
        self.0.lock().unwrap().push(text);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Counts `ListSecrets` requests as they go on the wire.
#[tokio::test]
async fn the_registry_is_the_valid_entries_under_the_prefix_named_by_their_name_field() {
    let moto = Moto::start();
    let client = moto.secrets().await;
    // Secret names deliberately differ from the cluster names.
    create(
        &client,
        "fluxrelay/clusters/eu-west-1",
        &entry("prod", "https://prod.example.com:6443"),
    )
    .await;
    create(
        &client,
        "fluxrelay/clusters/staging",
        &entry("staging", "https://staging.example.com"),
    )
    .await;
    create(
        &client,
        "fluxrelay/clusters/broken",
        &entry("bad", "http://bad.example.com"),
    )
    .await;
    create(
        &client,
        "fluxrelay/other/stray",
        &entry("stray", "https://stray.example.com"),
    )
    .await;
    create(
        &client,
        "old/fluxrelay/clusters/x",
        &entry("x", "https://x.example.com"),
    )
    .await;
    create(
        &client,
        "fluxrelay/clustersy",
        &entry("y", "https://y.example.com"),
    )
    .await;
    let registry = SecretsRegistry::with_settings(client, PREFIX, LONG_TTL);
    let warnings = Warnings::default();
    let _guard = tracing::subscriber::set_default(warnings.clone());

    let clusters = registry.clusters().await.unwrap();

    assert_eq!(names(&clusters), vec!["prod", "staging"]);
    assert_eq!(clusters.unusable, vec!["bad"]);
    let prod = registry.cluster("prod").await.unwrap().unwrap();
    assert_eq!(prod.server.as_str(), "https://prod.example.com:6443/");
    assert!(registry.cluster("stray").await.unwrap().is_none());
    assert!(registry.cluster("x").await.unwrap().is_none());
    assert!(registry.cluster("eu-west-1").await.unwrap().is_none());
    match registry.cluster("bad").await {
        Err(RegistryReadError::Invalid { name, error }) => {
            assert_eq!(name, "bad");
            assert_eq!(error.errors[0].path, "server", "{error}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    let warnings = warnings.0.lock().unwrap().clone();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("fluxrelay/clusters/broken"),
        "{}",
        warnings[0]
    );
    assert!(warnings[0].contains("server"), "{}", warnings[0]);
    assert!(
        !warnings[0].contains("kube-token-SECRET"),
        "{}",
        warnings[0]
    );
}

#[tokio::test]
async fn an_entry_that_is_not_json_is_invalid_under_its_secret_name_and_never_logged() {
    let moto = Moto::start();
    let client = moto.secrets().await;
    create(&client, "fluxrelay/clusters/garbled", "token=SECRET-VALUE").await;
    create(
        &client,
        "fluxrelay/clusters/ok",
        &entry("ok", "https://ok.example.com"),
    )
    .await;
    let registry = SecretsRegistry::with_settings(client, PREFIX, LONG_TTL);
    let warnings = Warnings::default();
    let _guard = tracing::subscriber::set_default(warnings.clone());

    assert_eq!(names(&registry.clusters().await.unwrap()), vec!["ok"]);
    let error = registry.cluster("garbled").await.unwrap_err();
    assert!(
        matches!(error, RegistryReadError::Invalid { .. }),
        "{error:?}"
    );
    assert!(!error.to_string().contains("SECRET-VALUE"), "{error}");
    let warnings = warnings.0.lock().unwrap().clone();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(!warnings[0].contains("SECRET-VALUE"), "{}", warnings[0]);
}

/// Sends the `GetSecretValue` of one secret to another secret name of the same length: a
/// secret that is marked for deletion, so moto itself answers `InvalidRequestException`.
/// Moto enforces neither IAM nor KMS, so this is how a test gets a listed secret that the
/// service refuses to read (in AWS: a KMS key the function may not use, a secret deleted
/// between `ListSecrets` and `GetSecretValue`).
#[derive(Debug)]
struct ReadAnotherSecret {
    listed: &'static str,
    read: &'static str,
}

impl aws_sdk_secretsmanager::config::Intercept for ReadAnotherSecret {
    fn name(&self) -> &'static str {
        "ReadAnotherSecret"
    }

    fn modify_before_signing(
        &self,
        context: &mut aws_sdk_secretsmanager::config::interceptors::BeforeTransmitInterceptorContextMut<'_>,
        _: &aws_sdk_secretsmanager::config::RuntimeComponents,
        _: &mut aws_sdk_secretsmanager::config::ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        assert_eq!(
            self.listed.len(),
            self.read.len(),
            "the body keeps its length"
        );
        let request = context.request_mut();
        if request.headers().get("x-amz-target") != Some("secretsmanager.GetSecretValue") {
            return Ok(());
        }
        let body = request
            .body()
            .bytes()
            .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
            .unwrap_or_default();
        let from = format!("\"SecretId\":\"{}\"", self.listed);
        if body.contains(&from) {
            let to = format!("\"SecretId\":\"{}\"", self.read);
            *request.body_mut() = body.replace(&from, &to).into();
        }
        Ok(())
    }
}

/// A client whose read of `fluxrelay/clusters/locked` is refused by the service.
async fn client_with_one_unreadable_secret(moto: &Moto) -> Client {
    let plain = moto.secrets().await;
    create(
        &plain,
        "fluxrelay/clusters/locked",
        &entry("locked", "https://l.example.com"),
    )
    .await;
    create(&plain, "graveyard/clusters/locked", "{}").await;
    plain
        .delete_secret()
        .secret_id("graveyard/clusters/locked")
        .send()
        .await
        .unwrap();
    let config = aws_sdk_secretsmanager::config::Builder::from(&moto.sdk_config().await)
        .interceptor(ReadAnotherSecret {
            listed: "fluxrelay/clusters/locked",
            read: "graveyard/clusters/locked",
        })
        .build();
    Client::from_conf(config)
}

#[tokio::test]
async fn a_broken_or_unreadable_secret_is_an_unusable_name_and_the_others_stay_usable() {
    let moto = Moto::start();
    let client = client_with_one_unreadable_secret(&moto).await;
    create(
        &client,
        "fluxrelay/clusters/prod",
        &entry("prod", "https://prod.example.com"),
    )
    .await;
    // Half-edited: a plain-http server.
    create(
        &client,
        "fluxrelay/clusters/half",
        &entry("half", "http://half.example.com"),
    )
    .await;
    create(
        &client,
        "fluxrelay/clusters/eu/garbled",
        "token=SECRET-VALUE",
    )
    .await;
    // A `name` that is no cluster name: the secret name stands in for it.
    create(
        &client,
        "fluxrelay/clusters/renamed",
        &entry("Prod Cluster!", "https://r.example.com"),
    )
    .await;
    let long = format!("{PREFIX}{}", "x".repeat(130));
    create(&client, &long, "not json").await;
    let registry = SecretsRegistry::with_settings(client, PREFIX, LONG_TTL);
    let warnings = Warnings::default();
    let _guard = tracing::subscriber::set_default(warnings.clone());

    let listing = registry.clusters().await.unwrap();

    assert_eq!(names(&listing), vec!["prod"]);
    let digest_name = listing
        .unusable
        .iter()
        .find(|name| name.starts_with("secret-"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(digest_name.len(), "secret-".len() + 16, "{listing:?}");
    let mut expected = vec![
        "eu/garbled",
        "half",
        "locked",
        "renamed",
        digest_name.as_str(),
    ];
    expected.sort();
    assert_eq!(listing.unusable, expected);
    assert!(registry.cluster("prod").await.unwrap().is_some());
    // (cluster, error kind, text the error must hold)
    for (name, invalid, holds) in [
        ("half", true, "server:"),
        ("eu/garbled", true, "invalid cluster registry entry"),
        ("renamed", true, "name:"),
        (digest_name.as_str(), true, "invalid cluster registry entry"),
        ("locked", false, "InvalidRequestException"),
    ] {
        let error = registry.cluster(name).await.unwrap_err();
        match (&error, invalid) {
            (RegistryReadError::Invalid { name: named, .. }, true) => assert_eq!(named, name),
            (RegistryReadError::Unavailable(message), false) => {
                assert!(message.contains("fluxrelay/clusters/locked"), "{message}");
            }
            _ => panic!("{name}: wrong kind {error:?}"),
        }
        let text = error.to_string();
        assert!(text.contains(holds), "{name}: {text}");
        assert!(!text.contains("SECRET"), "{name}: {text}");
    }
    let warnings = warnings.0.lock().unwrap().clone();
    assert_eq!(warnings.len(), 5, "{warnings:?}");
    assert!(
        warnings.iter().all(|w| !w.contains("SECRET")),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn an_unreadable_secret_named_like_a_valid_entry_makes_that_name_unavailable() {
    let moto = Moto::start();
    let client = client_with_one_unreadable_secret(&moto).await;
    // The unreadable secret is named `locked`; so is this entry in another secret.
    create(
        &client,
        "fluxrelay/clusters/a",
        &entry("locked", "https://a.example.com"),
    )
    .await;
    create(
        &client,
        "fluxrelay/clusters/b",
        &entry("b", "https://b.example.com"),
    )
    .await;
    let registry = SecretsRegistry::with_settings(client, PREFIX, LONG_TTL);

    let listing = registry.clusters().await.unwrap();

    assert_eq!(names(&listing), vec!["b"]);
    assert_eq!(listing.unusable, vec!["locked"]);
    match registry.cluster("locked").await {
        Err(RegistryReadError::Unavailable(message)) => {
            assert!(
                message.contains("second entry for cluster locked"),
                "{message}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn two_secrets_claiming_one_cluster_name_make_it_invalid() {
    let moto = Moto::start();
    let client = moto.secrets().await;
    create(
        &client,
        "fluxrelay/clusters/a",
        &entry("prod", "https://a.example.com"),
    )
    .await;
    create(
        &client,
        "fluxrelay/clusters/b",
        &entry("prod", "https://b.example.com"),
    )
    .await;
    let registry = SecretsRegistry::with_settings(client, PREFIX, LONG_TTL);

    assert!(registry.clusters().await.unwrap().is_empty());
    match registry.cluster("prod").await {
        Err(RegistryReadError::Invalid { error, .. }) => {
            assert_eq!(error.errors[0].path, "name");
            assert!(
                error.to_string().contains("fluxrelay/clusters/a"),
                "{error}"
            );
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[tokio::test]
async fn a_cached_read_survives_secrets_manager_going_away_within_the_ttl() {
    let mut moto = Moto::start();
    let client = moto.secrets().await;
    create(
        &client,
        "fluxrelay/clusters/prod",
        &entry("prod", "https://prod.example.com"),
    )
    .await;
    let registry = SecretsRegistry::with_settings(client, PREFIX, LONG_TTL);
    assert_eq!(names(&registry.clusters().await.unwrap()), vec!["prod"]);

    moto.stop();

    assert_eq!(names(&registry.clusters().await.unwrap()), vec!["prod"]);
    assert!(registry.cluster("prod").await.unwrap().is_some());
    assert!(registry.cluster("other").await.unwrap().is_none());
}

#[tokio::test]
async fn invalidate_makes_the_next_read_go_to_secrets_manager() {
    let mut moto = Moto::start();
    let client = moto.secrets().await;
    create(
        &client,
        "fluxrelay/clusters/prod",
        &entry("prod", "https://prod.example.com"),
    )
    .await;
    let registry = SecretsRegistry::with_settings(client, PREFIX, LONG_TTL);
    assert!(registry.cluster("prod").await.unwrap().is_some());
    moto.stop();

    registry.invalidate("prod");

    for _ in 0..2 {
        match registry.cluster("prod").await {
            Err(RegistryReadError::Unavailable(message)) => {
                assert!(message.contains("ListSecrets"), "{message}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
    assert!(matches!(
        registry.clusters().await,
        Err(RegistryReadError::Unavailable(_))
    ));
}

#[tokio::test]
async fn an_updated_secret_is_seen_after_invalidate_and_not_before() {
    let moto = Moto::start();
    let client = moto.secrets().await;
    create(
        &client,
        "fluxrelay/clusters/prod",
        &entry("prod", "https://old.example.com"),
    )
    .await;
    let registry = SecretsRegistry::with_settings(client.clone(), PREFIX, LONG_TTL);
    let server = |entry: Option<Arc<fluxrelay_core::registry::ClusterEntry>>| {
        entry.unwrap().server.host_str().unwrap().to_string()
    };
    assert_eq!(
        server(registry.cluster("prod").await.unwrap()),
        "old.example.com"
    );

    update(
        &client,
        "fluxrelay/clusters/prod",
        &entry("prod", "https://new.example.com"),
    )
    .await;
    create(
        &client,
        "fluxrelay/clusters/dev",
        &entry("dev", "https://dev.example.com"),
    )
    .await;
    assert_eq!(
        server(registry.cluster("prod").await.unwrap()),
        "old.example.com"
    );
    assert!(registry.cluster("dev").await.unwrap().is_none());

    registry.invalidate("prod");

    assert_eq!(
        server(registry.cluster("prod").await.unwrap()),
        "new.example.com"
    );
    assert_eq!(
        names(&registry.clusters().await.unwrap()),
        vec!["dev", "prod"]
    );
}

#[tokio::test]
async fn the_cache_expires_after_the_ttl() {
    let moto = Moto::start();
    let client = moto.secrets().await;
    create(
        &client,
        "fluxrelay/clusters/prod",
        &entry("prod", "https://old.example.com"),
    )
    .await;
    let registry = SecretsRegistry::with_settings(client.clone(), PREFIX, Duration::from_secs(1));
    assert!(registry.cluster("prod").await.unwrap().is_some());
    update(
        &client,
        "fluxrelay/clusters/prod",
        &entry("prod", "https://new.example.com"),
    )
    .await;

    tokio::time::sleep(Duration::from_millis(1200)).await;

    let prod = registry.cluster("prod").await.unwrap().unwrap();
    assert_eq!(prod.server.host_str(), Some("new.example.com"));
}

#[tokio::test]
async fn every_page_of_the_secret_list_is_read() {
    let moto = Moto::start();
    let client = moto.secrets().await;
    // More than one ListSecrets page (moto and AWS both page at 100 at most).
    for n in 0..105 {
        let name = format!("c{n:03}");
        create(
            &client,
            &format!("{PREFIX}{name}"),
            &entry(&name, "https://k.example.com"),
        )
        .await;
    }
    let list_calls = CountCalls::new("secretsmanager.ListSecrets");
    let counted = aws_sdk_secretsmanager::config::Builder::from(&moto.sdk_config().await)
        .interceptor(list_calls.clone())
        .build();
    let registry = SecretsRegistry::with_settings(Client::from_conf(counted), PREFIX, LONG_TTL);

    let clusters = registry.clusters().await.unwrap();

    assert_eq!(list_calls.count(), 2, "two ListSecrets pages");
    assert_eq!(clusters.len(), 105);
    assert_eq!(clusters.entries[104].name, "c104");
    assert!(clusters.unusable.is_empty());
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
