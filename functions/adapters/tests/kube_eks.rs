//! `eks` registry entries against a real kube-apiserver v1.20.2 that authenticates
//! `k8s-aws-v1.` tokens through an aws-iam-authenticator-like TokenReview webhook
//! (fluxrelay_testkit::iam_authn: the same checks, and the SigV4 signature recomputed with
//! the test secret and the cluster's own id instead of a call to STS).
//!
//! The real `KubeClusters` mints every token from injected test credentials and an
//! injected clock; nothing of our code path is replaced. Each test re-runs itself inside a
//! private network namespace and starts its own apiserver.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials as AwsCredentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use fluxrelay_adapters::clock::TokioClock;
use fluxrelay_adapters::cluster::KubeClusters;
use fluxrelay_adapters::eks::{Clock, EksEndpoints, EksTokens};
use fluxrelay_core::flux::ObjectRef;
use fluxrelay_core::handlers::dispatch::{
    DispatchMemory, DispatchPorts, DispatchRules, handle_dispatch,
};
use fluxrelay_core::outcome::classify::{FailureClass, Responder};
use fluxrelay_core::outcome::verdict::{RetryPlan, Verdict};
use fluxrelay_core::ports::{
    ClusterRegistry, DeadLetterReason, FluxDiscovery, QueueError, QueueMessage, RegistryReadError,
    Settle, TriggerSender,
};
use fluxrelay_core::push::Dispatch;
use fluxrelay_core::registry::{ClusterEntry, Credentials, DEFAULT_RECEIVER_PROXY, TriggerConfig};
use fluxrelay_core::trigger::request::{RequestTarget, TriggerRequest};
use fluxrelay_testkit::eks_api::EksApi;
use fluxrelay_testkit::iam_authn::{IamAuthnConfig, Review, TestAccount};
use fluxrelay_testkit::kube_env::{KubeEnv, KubeEnvOptions};
use fluxrelay_testkit::receiver::{FluxReceiverEmulator, ReceiverSpec};
use fluxrelay_testkit::{fixtures, netns};
use http::{HeaderMap, HeaderValue, Method};
use serde_json::json;

const RBAC: &str = include_str!("../../../infra/rbac.yaml");
const NAMESPACE: &str = "flux-system";
/// The id the test cluster's authenticator expects in `x-k8s-aws-id`.
const CLUSTER_ID: &str = "fluxrelay-test";
const REGION: &str = "eu-west-1";
const ACCESS_KEY: &str = "ASIAFLUXRELAYTEST";
const SECRET_KEY: &str = "fluxrelay/test+secret-key-0123456789";
const SESSION_TOKEN: &str = "FwoGZXIvYXdzEXAMPLE/session+token==";
/// The user infra/rbac.yaml binds, as an EKS access entry would map the role.
const USER: &str = "fluxrelay-dispatcher";
const RECEIVER: &str = "fleet-infra";
/// The repository the shared push fixture (platform/fleet-infra, refs/heads/main) matches.
const REPOSITORY_URL: &str = "https://gitlab.example.com/platform/fleet-infra.git";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A clock the test moves by hand.
struct TestClock(Mutex<SystemTime>);

impl TestClock {
    fn at(now: SystemTime) -> Arc<TestClock> {
        Arc::new(TestClock(Mutex::new(now)))
    }

    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

/// The real adapter, with the test role's credentials and the given clock, checking
/// servers against the EKS API stand-in, which says the test cluster is the apiserver.
async fn clusters(clock: Arc<TestClock>, eks_api: &EksApi) -> KubeClusters {
    let credentials = AwsCredentials::new(
        ACCESS_KEY,
        SECRET_KEY,
        Some(SESSION_TOKEN.into()),
        None,
        "fluxrelay-test",
    );
    KubeClusters::with_defaults()
        .unwrap()
        .with_eks_tokens(EksTokens::new(
            SharedCredentialsProvider::new(credentials),
            clock,
        ))
        .with_eks_endpoints(EksEndpoints::from_config(eks_api.sdk_config().await))
}

/// The EKS API as it would answer for the test cluster: its endpoint is the apiserver.
async fn eks_api(env: &KubeEnv) -> EksApi {
    EksApi::start(&[
        (CLUSTER_ID, &env.server()),
        ("another-cluster", &env.server()),
    ])
    .await
}

fn eks_entry(env: &KubeEnv, name: &str, eks_cluster: &str) -> ClusterEntry {
    ClusterEntry {
        name: name.to_string(),
        server: url::Url::parse(&env.server()).unwrap(),
        ca: Some(env.ca_pem()),
        credentials: Credentials::Eks {
            cluster: eks_cluster.to_string(),
            region: REGION.to_string(),
        },
        namespaces: vec![NAMESPACE.to_string()],
        host_aliases: BTreeMap::new(),
        subscriptions: Vec::new(),
        trigger: TriggerConfig::default(),
        confirm: None,
    }
}

/// An apiserver that sends unknown bearer tokens to the IAM webhook, with the project's
/// RBAC, a GitRepository for the push fixture and a Ready `generic` Receiver for it, served
/// by the receiver emulator behind the service proxy.
async fn eks_cluster() -> (KubeEnv, FluxReceiverEmulator, String) {
    let env = KubeEnv::start_with(KubeEnvOptions {
        iam_authn: Some(IamAuthnConfig {
            cluster_id: CLUSTER_ID.into(),
            region: REGION.into(),
            accounts: vec![TestAccount {
                access_key_id: ACCESS_KEY.into(),
                secret_access_key: SECRET_KEY.into(),
                username: USER.into(),
                arn: "arn:aws:sts::111122223333:assumed-role/fluxrelay-dispatch/fn".into(),
            }],
        }),
    })
    .await;
    env.apply(RBAC).await;
    env.apply(
        &json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": "fleet-infra", "namespace": NAMESPACE},
            "spec": {"interval": "10m", "url": REPOSITORY_URL, "ref": {"branch": "main"}}
        })
        .to_string(),
    )
    .await;
    let emulator = FluxReceiverEmulator::start("192.0.2.10:9292".parse().unwrap())
        .await
        .unwrap();
    let path = emulator.upsert(ReceiverSpec {
        namespace: NAMESPACE.into(),
        name: RECEIVER.into(),
        receiver_type: "generic".into(),
        token: "receiver-token-for-eks-tests".into(),
        events: Vec::new(),
        suspended: false,
        ready: true,
    });
    env.apply(
        &json!({
            "apiVersion": "notification.toolkit.fluxcd.io/v1", "kind": "Receiver",
            "metadata": {"name": RECEIVER, "namespace": NAMESPACE},
            "spec": {"type": "generic", "secretRef": {"name": "receiver-token"},
                     "resources": [{"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository", "name": "fleet-infra"}]}
        })
        .to_string(),
    )
    .await;
    env.patch_status(
        "notification.toolkit.fluxcd.io/v1",
        "receivers",
        NAMESPACE,
        RECEIVER,
        json!({
            "webhookPath": path,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded",
                            "message": "Receiver initialized", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        }),
    )
    .await;
    (env, emulator, path)
}

/// A registry holding fixed entries (the registry is not what these tests are about).
struct Entries(Vec<ClusterEntry>);

impl ClusterRegistry for Entries {
    async fn cluster(&self, name: &str) -> Result<Option<Arc<ClusterEntry>>, RegistryReadError> {
        Ok(self
            .0
            .iter()
            .find(|entry| entry.name == name)
            .cloned()
            .map(Arc::new))
    }

    fn invalidate(&self, _name: &str) {}
}

/// Takes every settlement (this test looks at verdicts, not at queues).
struct AnyQueue;

impl Settle for AnyQueue {
    async fn acknowledge(&self, _: &QueueMessage) -> Result<(), QueueError> {
        Ok(())
    }
    async fn retry_in_place(&self, _: &QueueMessage, _: u32) -> Result<(), QueueError> {
        Ok(())
    }
    async fn schedule_retry(&self, _: &Dispatch, _: u32) -> Result<(), QueueError> {
        Ok(())
    }
    async fn dead_letter(
        &self,
        _: &QueueMessage,
        _: &str,
        _: &DeadLetterReason,
    ) -> Result<(), QueueError> {
        Ok(())
    }
}

/// The dispatch handler's verdict for one push to `entry`'s cluster, on the real adapter.
async fn dispatch_verdict(clusters: &KubeClusters, entry: &ClusterEntry) -> Verdict {
    let dispatch = Dispatch::new(entry.name.clone(), fixtures::push(7, "e1c5"));
    let message = QueueMessage {
        id: "message-1".into(),
        source: "dispatch".into(),
        receipt: "receipt-1".into(),
        group: entry.name.clone(),
        body: serde_json::to_string(&dispatch).unwrap(),
        receive_count: 1,
    };
    let registry = Entries(vec![entry.clone()]);
    let ports = DispatchPorts {
        registry: &registry,
        clusters,
        queue: &AnyQueue,
        clock: &TokioClock,
        gitlab: &fluxrelay_core::ports::NoGitLab,
    };
    let report = handle_dispatch(
        &ports,
        &DispatchRules::default(),
        &DispatchMemory::default(),
        &[message],
        time::OffsetDateTime::now_utc(),
    )
    .await;
    assert_eq!(report.messages.len(), 1, "{report:?}");
    report.messages[0].verdict.clone()
}

fn proxy_post(path: &str) -> TriggerRequest {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    TriggerRequest {
        target: RequestTarget::ApiServerPath(format!("{DEFAULT_RECEIVER_PROXY}{path}")),
        method: Method::POST,
        headers,
        body: br#"{"object_kind":"push","ref":"refs/heads/main"}"#.to_vec(),
    }
}

/// `X-Amz-Date` of a time.
fn amz_date(at: SystemTime) -> String {
    let format =
        time::format_description::parse_borrowed::<2>("[year][month][day]T[hour][minute][second]Z")
            .unwrap();
    time::OffsetDateTime::from(at).format(&format).unwrap()
}

/// The distinct tokens (by signature) the webhook has reviewed, with their X-Amz-Date.
fn distinct_tokens(reviews: &[Review]) -> BTreeMap<String, String> {
    reviews
        .iter()
        .filter_map(|review| Some((review.signature.clone()?, review.amz_date.clone()?)))
        .collect()
}

fn assert_no_secret(text: &str) {
    for secret in [SECRET_KEY, SESSION_TOKEN, "k8s-aws-v1."] {
        assert!(!text.contains(secret), "a secret leaked: {text}");
    }
}

// ---- tests -----------------------------------------------------------------------------------

#[test]
fn an_eks_entry_lists_flux_objects_and_triggers_the_receiver_through_the_proxy() {
    if !netns::enter("an_eks_entry_lists_flux_objects_and_triggers_the_receiver_through_the_proxy")
    {
        return;
    }
    runtime().block_on(async {
        let (env, emulator, path) = eks_cluster().await;
        let api = eks_api(&env).await;
        let clusters = clusters(TestClock::at(SystemTime::now()), &api).await;
        let entry = eks_entry(&env, "prod-eks", CLUSTER_ID);

        let repositories = clusters
            .git_repositories(&entry, NAMESPACE, true)
            .await
            .unwrap_or_else(|failure| panic!("{failure:?}"));
        assert_eq!(repositories.len(), 1);
        assert_eq!(repositories[0].id, ObjectRef::new(NAMESPACE, "fleet-infra"));
        let receivers = clusters
            .receivers(&entry, NAMESPACE, true)
            .await
            .unwrap_or_else(|failure| panic!("{failure:?}"));
        assert_eq!(receivers.len(), 1);
        assert_eq!(receivers[0].webhook_path.as_deref(), Some(path.as_str()));

        let response = clusters.send(&entry, &proxy_post(&path)).await.unwrap();
        assert_eq!(response.status, 200, "{response:?}");
        let hits = emulator.accepted(NAMESPACE, RECEIVER);
        assert_eq!(hits.len(), 1);
        assert!(
            hits[0].headers.get("authorization").is_none(),
            "the token must not reach the receiver"
        );

        // The whole dispatch path: discovery, matching and the Receiver call, all with
        // the minted token.
        let verdict = dispatch_verdict(&clusters, &entry).await;
        assert!(matches!(verdict, Verdict::Delivered { .. }), "{verdict:?}");
        assert_eq!(emulator.accepted(NAMESPACE, RECEIVER).len(), 2);

        // The apiserver really asked the webhook, which really authenticated our user.
        let reviews = env.iam_authn().reviews();
        assert!(!reviews.is_empty());
        assert!(
            reviews
                .iter()
                .all(|review| review.result.as_deref() == Ok(USER)),
            "{reviews:?}"
        );
    });
}

#[test]
fn tokens_for_another_cluster_or_past_fifteen_minutes_are_401_and_retried() {
    if !netns::enter("tokens_for_another_cluster_or_past_fifteen_minutes_are_401_and_retried") {
        return;
    }
    runtime().block_on(async {
        let (env, emulator, path) = eks_cluster().await;
        let api = eks_api(&env).await;

        // Signed for another cluster id: the authenticator's signature check fails.
        let clusters_now = clusters(TestClock::at(SystemTime::now()), &api).await;
        let other = eks_entry(&env, "other", "another-cluster");
        let failure = clusters_now
            .git_repositories(&other, NAMESPACE, true)
            .await
            .unwrap_err();
        assert_eq!(failure.status, Some(401), "{failure:?}");
        assert_eq!(failure.responder, Responder::ApiServer);
        assert!(failure.credentials_rejected, "{failure:?}");
        assert_no_secret(&failure.reason);
        let reviews = env.iam_authn().reviews();
        let last = reviews.last().unwrap();
        assert!(
            last.result
                .as_ref()
                .is_err_and(|reason| reason.contains("SignatureDoesNotMatch")),
            "{last:?}"
        );
        // Through the service proxy the 401 is the apiserver's, and nothing reaches Flux.
        let response = clusters_now.send(&other, &proxy_post(&path)).await.unwrap();
        assert_eq!(response.status, 401);
        assert!(emulator.hits().is_empty());
        // The dispatch handler treats rejected credentials as retryable (the registry
        // entry is re-read, and the adapter mints a new token on the next attempt).
        match dispatch_verdict(&clusters_now, &other).await {
            Verdict::Retry(RetryPlan { reason, .. }) => {
                assert!(reason.contains("401"), "{reason}");
                assert_no_secret(&reason);
            }
            verdict => panic!("a 401 must be retried: {verdict:?}"),
        }

        // Signed 20 minutes ago: expired for the authenticator.
        let clusters_past = clusters(
            TestClock::at(SystemTime::now() - Duration::from_secs(20 * 60)),
            &api,
        )
        .await;
        let entry = eks_entry(&env, "prod-eks", CLUSTER_ID);
        let failure = clusters_past
            .receivers(&entry, NAMESPACE, true)
            .await
            .unwrap_err();
        assert_eq!(failure.status, Some(401), "{failure:?}");
        assert!(failure.credentials_rejected);
        assert_eq!(failure.class, FailureClass::Permanent, "{failure:?}");
        let reviews = env.iam_authn().reviews();
        assert!(
            reviews
                .last()
                .unwrap()
                .result
                .as_ref()
                .is_err_and(|reason| reason.contains("expired")),
            "{reviews:?}"
        );

        // The same entry with a current clock is fine: the refusal was the token's age.
        let clusters_now = clusters(TestClock::at(SystemTime::now()), &api).await;
        assert_eq!(
            clusters_now
                .receivers(&entry, NAMESPACE, true)
                .await
                .unwrap()
                .len(),
            1
        );
    });
}

#[test]
fn a_token_is_reused_within_its_window_and_a_new_one_minted_after() {
    if !netns::enter("a_token_is_reused_within_its_window_and_a_new_one_minted_after") {
        return;
    }
    runtime().block_on(async {
        let (env, _emulator, _path) = eks_cluster().await;
        let api = eks_api(&env).await;
        let start = SystemTime::now();
        let clock = TestClock::at(start);
        let clusters = clusters(clock.clone(), &api).await;
        let entry = eks_entry(&env, "prod-eks", CLUSTER_ID);
        let minute = Duration::from_secs(60);
        // `fresh` bypasses the list cache: every call goes to the apiserver.
        let list = async || {
            clusters
                .git_repositories(&entry, NAMESPACE, true)
                .await
                .unwrap_or_else(|failure| panic!("{failure:?}"))
                .len()
        };
        let tokens = || distinct_tokens(&env.iam_authn().reviews());

        assert_eq!(list().await, 1);
        assert_eq!(
            tokens().into_values().collect::<Vec<_>>(),
            [amz_date(start)]
        );

        // 5 and 12:59 minutes later: the same token (a new one would carry a new date).
        clock.advance(5 * minute);
        assert_eq!(list().await, 1);
        clock.advance(7 * minute + Duration::from_secs(59));
        assert_eq!(list().await, 1);
        assert_eq!(
            tokens().len(),
            1,
            "reused within the window: {:?}",
            tokens()
        );

        // 14 minutes after the first: a new token, signed at the clock's time.
        clock.advance(minute + Duration::from_secs(1));
        assert_eq!(list().await, 1);
        let second = start + 14 * minute;
        assert_eq!(
            tokens().into_values().collect::<BTreeSet<_>>(),
            BTreeSet::from([amz_date(start), amz_date(second)])
        );

        // And again 14 minutes after that one.
        clock.advance(14 * minute);
        assert_eq!(list().await, 1);
        assert_eq!(tokens().len(), 3, "{:?}", tokens());
        assert!(
            tokens()
                .values()
                .any(|date| *date == amz_date(second + 14 * minute)),
            "{:?}",
            tokens()
        );
    });
}

/// Whoever can write the registry index can name the real EKS cluster with a server of
/// their own (here with the apiserver's own serving certificate, so TLS passes): no token
/// may be minted for it, let alone sent (issue 13).
#[test]
fn an_eks_entry_whose_server_is_not_the_clusters_endpoint_gets_no_token() {
    if !netns::enter("an_eks_entry_whose_server_is_not_the_clusters_endpoint_gets_no_token") {
        return;
    }
    runtime().block_on(async {
        let (env, emulator, path) = eks_cluster().await;
        let api = eks_api(&env).await;
        let cert = std::fs::read_to_string(env.dir().join("apiserver.crt")).unwrap();
        let key = std::fs::read_to_string(env.dir().join("apiserver.key")).unwrap();
        let collector = fluxrelay_testkit::decoy::Decoy::tls(
            "127.0.0.1:7443",
            &cert,
            &key,
            std::sync::Arc::new(|_| {
                fluxrelay_testkit::decoy::http_response(
                    200,
                    &[("content-type", "application/json")],
                    br#"{"kind":"List","apiVersion":"v1","items":[]}"#,
                )
            }),
        )
        .await;
        let clusters = clusters(TestClock::at(SystemTime::now()), &api).await;
        let mut entry = eks_entry(&env, "prod-eks", CLUSTER_ID);
        entry.server = url::Url::parse("https://127.0.0.1:7443").unwrap();

        let refused = clusters.git_repositories(&entry, NAMESPACE, true).await;
        let sent = clusters.send(&entry, &proxy_post(&path)).await;

        assert_eq!(
            collector.connections(),
            0,
            "a token for {CLUSTER_ID} was sent to a host that is not its endpoint: {:?}",
            collector
                .seen()
                .iter()
                .map(|seen| &seen.target)
                .collect::<Vec<_>>()
        );
        assert_eq!(api.asked(), [CLUSTER_ID], "asked once, then cached");
        for failure in [refused.unwrap_err(), sent.unwrap_err()] {
            assert!(
                failure
                    .reason
                    .contains("is not the endpoint of EKS cluster fluxrelay-test"),
                "{failure:?}"
            );
            assert_eq!(failure.class, FailureClass::Permanent, "{failure:?}");
            assert_eq!(failure.responder, Responder::Configuration, "{failure:?}");
        }
        assert!(emulator.accepted(NAMESPACE, RECEIVER).is_empty());

        // The cluster's own endpoint still works.
        let good = eks_entry(&env, "prod-eks-2", CLUSTER_ID);
        let repositories = clusters.git_repositories(&good, NAMESPACE, true).await;
        assert!(repositories.is_ok(), "{repositories:?}");
    });
}
