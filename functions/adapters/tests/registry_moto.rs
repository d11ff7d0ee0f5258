//! The AWS cluster registry (index object in S3, one secret per cluster that holds a
//! credential) against a real moto server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fluxrelay_adapters::registry_aws::{
    AwsRegistry, DEFAULT_INDEX_KEY, RegistryIndexReader, put_index_item, put_index_items,
};
use fluxrelay_core::handlers::route::{RouteVerdict, handle_route};
use fluxrelay_core::ports::{
    ClusterRegistry, DispatchPublisher, QueueError, QueueMessage, RegistryReadError, RouteTable,
};
use fluxrelay_core::push::Dispatch;
use fluxrelay_core::registry::index::index_item;
use fluxrelay_testkit::fixtures::push;
use fluxrelay_testkit::moto::{FailCalls, Moto, RecordCalls};
use serde_json::{Value, json};

const PREFIX: &str = "fluxrelay/clusters/";
const TOKEN: &str = "kube-token-SECRET-4";
const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

fn token_entry(name: &str, projects: &str) -> Value {
    json!({"name": name, "server": format!("https://{name}.example.com"), "auth": {"token": TOKEN},
           "subscriptions": [{"projects": [projects]}]})
}

fn eks_entry(name: &str) -> Value {
    json!({"name": name, "server": "https://ABC.gr7.eu-west-1.eks.amazonaws.com", "ca": CA,
           "auth": {"eks": {"cluster": name, "region": "eu-west-1"}}})
}

/// Registers entries as `fluxrelay cluster add --store secretsmanager` does: the secret
/// first (for an entry that holds one), then its index item.
async fn register(moto: &Moto, bucket: &str, entries: &[Value]) {
    let secrets = moto.secrets().await;
    for entry in entries {
        if fluxrelay_core::registry::index::holds_secret(entry) {
            secrets
                .create_secret()
                .name(format!("{PREFIX}{}", entry["name"].as_str().unwrap()))
                .secret_string(entry.to_string())
                .send()
                .await
                .unwrap();
        }
    }
    let items = entries.iter().map(index_item).collect();
    put_index_items(&moto.s3().await, bucket, DEFAULT_INDEX_KEY, items)
        .await
        .unwrap();
}

#[derive(Default)]
struct Sent(Mutex<Vec<String>>);

impl DispatchPublisher for Sent {
    async fn publish_dispatches(&self, dispatches: &[Dispatch]) -> Result<(), QueueError> {
        self.0
            .lock()
            .unwrap()
            .extend(dispatches.iter().map(|d| d.cluster.clone()));
        Ok(())
    }
}

fn intake() -> QueueMessage {
    let push = push(1, "a1"); // platform/fleet-infra
    QueueMessage {
        id: "m1".into(),
        source: "intake".into(),
        receipt: "r1".into(),
        group: push.project.id.to_string(),
        body: push.to_json(),
        receive_count: 1,
    }
}

async fn route(table: &impl RouteTable) -> RouteVerdict {
    let sent = Sent::default();
    let report = handle_route(table, &sent, &[intake()]).await;
    report.messages[0].verdict.clone()
}

fn routed(names: &[&str]) -> RouteVerdict {
    RouteVerdict::Routed {
        clusters: names.iter().map(|n| n.to_string()).collect(),
    }
}

#[tokio::test]
async fn route_reads_only_the_index_and_dispatch_reads_the_secret_of_the_cluster_it_dispatches_to()
{
    let moto = Moto::start();
    let bucket = moto.create_bucket("registry").await;
    register(
        &moto,
        &bucket,
        &[
            token_entry("prod", "platform/**"),
            token_entry("other", "elsewhere/**"),
            eks_entry("eks-1"),
        ],
    )
    .await;
    let route_calls = RecordCalls::new();
    let index = RegistryIndexReader::new(
        moto.s3_with(vec![route_calls.clone()]).await,
        &bucket,
        DEFAULT_INDEX_KEY,
    );

    assert_eq!(route(&index).await, routed(&["prod", "eks-1"]));
    assert_eq!(route_calls.targets(), ["s3.GetObject"]);
    // The index holds no credential: a secret-holding entry is a pointer.
    let text = String::from_utf8(
        moto.s3()
            .await
            .get_object()
            .bucket(&bucket)
            .key(DEFAULT_INDEX_KEY)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(!text.contains(TOKEN), "{text}");
    assert!(!text.contains("prod.example.com"), "{text}");

    let dispatch_calls = RecordCalls::new();
    let registry = AwsRegistry::new(
        RegistryIndexReader::new(moto.s3().await, &bucket, DEFAULT_INDEX_KEY),
        moto.secrets_recorded(&dispatch_calls).await,
        PREFIX,
    );
    let prod = registry.cluster("prod").await.unwrap().unwrap();
    assert_eq!(prod.server.as_str(), "https://prod.example.com/");
    let eks = registry.cluster("eks-1").await.unwrap().unwrap();
    assert_eq!(eks.credentials.kind(), "eks");
    assert!(registry.cluster("nope").await.unwrap().is_none());
    // Again, from the cache.
    registry.cluster("prod").await.unwrap().unwrap();
    assert_eq!(
        dispatch_calls.targets(),
        ["secretsmanager.GetSecretValue"],
        "one read of prod's secret, none for the EKS cluster or the cache"
    );
}

/// Issue 13: a throttled read used to make route send the cluster every push. Now a failed
/// re-read keeps the last good subscriptions, and a first read that fails fails the route
/// (retried), never routes unfiltered.
#[tokio::test]
async fn a_failed_re_read_keeps_the_last_good_subscriptions() {
    let moto = Moto::start();
    let bucket = moto.create_bucket("registry").await;
    register(
        &moto,
        &bucket,
        &[
            token_entry("other", "elsewhere/**"),
            token_entry("all", "**"),
        ],
    )
    .await;
    let throttled = FailCalls::new();
    let index = RegistryIndexReader::new(
        moto.s3_with(vec![throttled.clone()]).await,
        &bucket,
        DEFAULT_INDEX_KEY,
    )
    .with_timing(Duration::from_millis(200), Duration::from_millis(200));
    assert_eq!(route(&index).await, routed(&["all"]));

    throttled.fail(true);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            route(&index).await,
            routed(&["all"]),
            "cluster `other` subscribes to elsewhere/** only"
        );
    }

    let cold = RegistryIndexReader::new(
        moto.s3_with(vec![throttled.clone()]).await,
        &bucket,
        DEFAULT_INDEX_KEY,
    );
    match route(&cold).await {
        RouteVerdict::Failed { reason } => {
            assert!(reason.contains("ThrottlingException"), "{reason}")
        }
        other => panic!("a first read that fails must fail the route, got {other:?}"),
    }
    throttled.fail(false);
    assert_eq!(route(&cold).await, routed(&["all"]));
}

#[tokio::test]
async fn an_unchanged_index_is_not_downloaded_again_and_a_changed_one_is() {
    let moto = Moto::start();
    let bucket = moto.create_bucket("registry").await;
    register(&moto, &bucket, &[token_entry("a", "**")]).await;
    let index = RegistryIndexReader::new(moto.s3().await, &bucket, DEFAULT_INDEX_KEY)
        .with_timing(Duration::ZERO, Duration::ZERO);

    let first = index.index().await.unwrap();
    let again = index.index().await.unwrap();
    assert!(Arc::ptr_eq(&first, &again), "a 304 keeps the parsed index");

    put_index_item(
        &moto.s3().await,
        &bucket,
        DEFAULT_INDEX_KEY,
        index_item(&eks_entry("b")),
    )
    .await
    .unwrap();
    let changed = index.index().await.unwrap();
    let names: Vec<&str> = changed
        .routes
        .routes
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["a", "b"]);
}

#[tokio::test]
async fn a_secret_that_cannot_be_read_again_serves_its_last_good_entry() {
    let moto = Moto::start();
    let bucket = moto.create_bucket("registry").await;
    register(&moto, &bucket, &[token_entry("prod", "**")]).await;
    let throttled = FailCalls::only("secretsmanager.GetSecretValue", "fluxrelay/clusters/prod");
    let config = aws_sdk_secretsmanager::config::Builder::from(&moto.sdk_config().await)
        .interceptor(throttled.clone())
        .build();
    let index = || {
        let s3 = moto.s3();
        async move {
            RegistryIndexReader::new(s3.await, "registry", DEFAULT_INDEX_KEY)
                .with_timing(Duration::from_millis(100), Duration::from_millis(100))
        }
    };
    let registry = AwsRegistry::new(
        index().await,
        aws_sdk_secretsmanager::Client::from_conf(config.clone()),
        PREFIX,
    );
    registry.cluster("prod").await.unwrap().unwrap();

    throttled.fail(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stale = registry.cluster("prod").await.unwrap().unwrap();
    assert_eq!(stale.name, "prod");

    let cold = AwsRegistry::new(
        index().await,
        aws_sdk_secretsmanager::Client::from_conf(config),
        PREFIX,
    );
    match cold.cluster("prod").await {
        Err(RegistryReadError::Unavailable(message)) => {
            assert!(message.contains("fluxrelay/clusters/prod"), "{message}");
            assert!(message.contains("ThrottlingException"), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_pointer_whose_secret_is_missing_or_names_another_cluster_is_refused() {
    let moto = Moto::start();
    let bucket = moto.create_bucket("registry").await;
    put_index_items(
        &moto.s3().await,
        &bucket,
        DEFAULT_INDEX_KEY,
        vec![
            json!({"name": "missing", "secret": true}),
            json!({"name": "swapped", "secret": true}),
        ],
    )
    .await
    .unwrap();
    moto.secrets()
        .await
        .create_secret()
        .name(format!("{PREFIX}swapped"))
        .secret_string(token_entry("prod", "**").to_string())
        .send()
        .await
        .unwrap();
    let registry = AwsRegistry::new(
        RegistryIndexReader::new(moto.s3().await, &bucket, DEFAULT_INDEX_KEY),
        moto.secrets().await,
        PREFIX,
    );

    match registry.cluster("missing").await {
        Err(RegistryReadError::Unavailable(message)) => {
            assert!(
                message.contains("fluxrelay/clusters/missing, which does not exist"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    match registry.cluster("swapped").await {
        Err(RegistryReadError::Invalid { name, error }) => {
            assert_eq!(name, "swapped");
            let text = error.to_string();
            assert!(text.contains("holds the entry of cluster `prod`"), "{text}");
            assert!(!text.contains(TOKEN), "{text}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn invalidate_reads_the_secret_again() {
    let moto = Moto::start();
    let bucket = moto.create_bucket("registry").await;
    register(&moto, &bucket, &[token_entry("prod", "**")]).await;
    let registry = AwsRegistry::new(
        RegistryIndexReader::new(moto.s3().await, &bucket, DEFAULT_INDEX_KEY),
        moto.secrets().await,
        PREFIX,
    );
    assert_eq!(
        registry
            .cluster("prod")
            .await
            .unwrap()
            .unwrap()
            .server
            .as_str(),
        "https://prod.example.com/"
    );
    let mut moved = token_entry("prod", "**");
    moved["server"] = json!("https://prod-2.example.com");
    moto.secrets()
        .await
        .put_secret_value()
        .secret_id(format!("{PREFIX}prod"))
        .secret_string(moved.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        registry
            .cluster("prod")
            .await
            .unwrap()
            .unwrap()
            .server
            .as_str(),
        "https://prod.example.com/",
        "cached within the TTL"
    );
    registry.invalidate("prod");
    assert_eq!(
        registry
            .cluster("prod")
            .await
            .unwrap()
            .unwrap()
            .server
            .as_str(),
        "https://prod-2.example.com/"
    );
}

#[tokio::test]
async fn writers_at_the_same_time_both_land_in_the_index() {
    let moto = Moto::start();
    let bucket = moto.create_bucket("registry").await;
    let s3 = moto.s3().await;
    let writers = (0..6).map(|n| {
        let s3 = s3.clone();
        let bucket = bucket.clone();
        tokio::spawn(async move {
            put_index_item(
                &s3,
                &bucket,
                DEFAULT_INDEX_KEY,
                index_item(&eks_entry(&format!("c{n}"))),
            )
            .await
        })
    });
    for writer in writers.collect::<Vec<_>>() {
        writer.await.unwrap().unwrap();
    }
    let index = RegistryIndexReader::new(s3, &bucket, DEFAULT_INDEX_KEY);
    let mut names: Vec<String> = index
        .routes()
        .await
        .unwrap()
        .routes
        .iter()
        .map(|r| r.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4", "c5"]);
}
