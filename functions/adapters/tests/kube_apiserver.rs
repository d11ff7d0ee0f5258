//! The kube adapter against a real kube-apiserver v1.20.2 (tests/env/kube-up.sh).
//!
//! Each cluster test re-runs itself inside a private network namespace
//! (`fluxrelay_testkit::netns::enter`), starts its own apiserver (~4-5 s), applies the
//! project's RBAC and Flux objects, and stands a small recording HTTP listener on
//! 192.0.2.10:9292, where the apiserver's `webhook-receiver` Endpoints point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use fluxrelay_adapters::cluster::{KubeClusters, Timeouts};
use fluxrelay_core::flux::{ObjectRef, RECONCILE_REQUESTED_AT, ReceiverType};
use fluxrelay_core::outcome::classify::{
    FailureClass, Responder, classify_apiserver_response, classify_receiver_response,
};
use fluxrelay_core::ports::{Annotator, ApiserverReadiness, FluxDiscovery, TriggerSender};
use fluxrelay_core::registry::{ClusterEntry, Credentials, DEFAULT_RECEIVER_PROXY, TriggerConfig};
use fluxrelay_core::secret::Secret;
use fluxrelay_core::trigger::request::{
    RequestTarget, TriggerRequest, annotate_patch, requested_at,
};
use fluxrelay_testkit::kube_env::DISPATCHER_CERT_BINDING;
use fluxrelay_testkit::kube_env::{KubeEnv, kubeconfig_yaml};
use fluxrelay_testkit::netns;
use http::{HeaderMap, HeaderValue, Method};
use serde_json::json;

const RBAC: &str = include_str!("../../../infra/rbac.yaml");
const NAMESPACE: &str = "flux-system";
const WEBHOOK_PATH: &str = "/hook/0123456789abcdef";
const RECEIVER_TOKEN: &str = "receiver-token-for-tests";
const SOURCE_V1: &str = "source.toolkit.fluxcd.io/v1";

/// The project's Role without the services/proxy rule and without `patch`.
const ROLE_WITHOUT_PROXY_AND_PATCH: &str = "
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: fluxrelay-dispatcher, namespace: flux-system}
rules:
- {apiGroups: [source.toolkit.fluxcd.io], resources: [gitrepositories], verbs: [get, list]}
- {apiGroups: [notification.toolkit.fluxcd.io], resources: [receivers], verbs: [get, list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: fluxrelay-dispatcher, namespace: flux-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: fluxrelay-dispatcher}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: fluxrelay-dispatcher}
";

fn git_repository(name: &str) -> String {
    format!(
        "
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {{name: {name}, namespace: flux-system, labels: {{app: {name}}}}}
spec:
  url: https://gitlab.example.com/team/{name}.git
  ref: {{branch: main}}
  interval: 1h
"
    )
}

const RECEIVER: &str = "
apiVersion: notification.toolkit.fluxcd.io/v1
kind: Receiver
metadata: {name: gitlab-receiver, namespace: flux-system}
spec:
  type: gitlab
  events: [Push Hook, Tag Push Hook]
  secretRef: {name: receiver-token}
  resources:
  - {apiVersion: source.toolkit.fluxcd.io/v1, kind: GitRepository, name: podinfo}
";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn entry(name: &str, server: &str, ca: Option<String>, credentials: Credentials) -> ClusterEntry {
    ClusterEntry {
        name: name.to_string(),
        server: url::Url::parse(server).unwrap(),
        ca,
        credentials,
        namespaces: vec![NAMESPACE.to_string()],
        host_aliases: BTreeMap::new(),
        subscriptions: Vec::new(),
        trigger: TriggerConfig::default(),
        confirm: None,
    }
}

fn token_entry(env: &KubeEnv, name: &str, token: &str) -> ClusterEntry {
    entry(
        name,
        &env.server(),
        Some(env.ca_pem()),
        Credentials::Token(Secret::new(token)),
    )
}

/// A Receiver POST as the dispatcher builds it for a `gitlab` Receiver.
fn receiver_post(target: RequestTarget) -> TriggerRequest {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("user-agent", HeaderValue::from_static("fluxrelay-test"));
    let mut token = HeaderValue::from_static(RECEIVER_TOKEN);
    token.set_sensitive(true);
    headers.insert("x-gitlab-token", token);
    headers.insert("x-gitlab-event", HeaderValue::from_static("Push Hook"));
    TriggerRequest {
        target,
        method: Method::POST,
        headers,
        body: br#"{"object_kind":"push","ref":"refs/heads/main"}"#.to_vec(),
    }
}

fn proxy_target() -> RequestTarget {
    RequestTarget::ApiServerPath(format!("{DEFAULT_RECEIVER_PROXY}{WEBHOOK_PATH}"))
}

// ---- a recording stand-in for the webhook receiver ------------------------------------------

#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    uri: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// A scripted "status" that makes the listener hold the request without answering.
const HANG: u16 = 0;

#[derive(Clone, Default)]
struct Listener {
    seen: Arc<Mutex<Vec<Seen>>>,
    status: Arc<AtomicU16>,
    /// Bytes of filler in each answer's body.
    body_len: Arc<AtomicUsize>,
}

impl Listener {
    /// Binds 192.0.2.10:9292 (only possible inside the private namespace) and answers
    /// every request with the current scripted status (302s carry a Location).
    async fn start(status: u16) -> Listener {
        let listener = Listener::default();
        listener.answer(status);
        let socket = tokio::net::TcpListener::bind("192.0.2.10:9292")
            .await
            .unwrap();
        let app = axum::Router::new()
            .fallback(record)
            .with_state(listener.clone());
        tokio::spawn(async move { axum::serve(socket, app).await });
        listener
    }

    fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn record(State(listener): State<Listener>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    listener.seen.lock().unwrap().push(Seen {
        method: parts.method,
        uri: parts.uri.to_string(),
        headers: parts.headers,
        body: body.to_vec(),
    });
    let status = listener.status.load(Ordering::SeqCst);
    if status == HANG {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    let status = http::StatusCode::from_u16(status).unwrap();
    if status == http::StatusCode::FOUND {
        return (status, [("location", "http://192.0.2.10:9292/elsewhere")]).into_response();
    }
    let body = "x".repeat(listener.body_len.load(Ordering::SeqCst));
    (status, [("content-type", "text/plain")], body).into_response()
}

/// The request reached the receiver exactly as sent, and without the cluster credentials.
fn assert_delivered(seen: &Seen, request: &TriggerRequest, path: &str) {
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.uri, path, "exact path: no query, no trailing slash");
    assert_eq!(seen.body, request.body);
    for name in [
        "content-type",
        "x-gitlab-token",
        "x-gitlab-event",
        "user-agent",
    ] {
        assert_eq!(seen.headers.get(name), request.headers.get(name), "{name}");
    }
    assert!(
        seen.headers.get("authorization").is_none(),
        "Authorization must not reach the receiver: {:?}",
        seen.headers
    );
}

async fn cluster_with_flux_objects(rbac: &str) -> KubeEnv {
    let env = KubeEnv::start().await;
    env.apply(rbac).await;
    env.apply(&git_repository("podinfo")).await;
    env.apply(RECEIVER).await;
    env.patch_status(
        "notification.toolkit.fluxcd.io/v1",
        "receivers",
        NAMESPACE,
        "gitlab-receiver",
        json!({
            "webhookPath": WEBHOOK_PATH,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded",
                            "message": "Receiver initialized", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        }),
    )
    .await;
    env
}

// ---- tests -----------------------------------------------------------------------------------

#[test]
fn token_certificate_and_kubeconfig_credentials_list_flux_objects_and_post_through_the_proxy() {
    if !netns::enter(
        "token_certificate_and_kubeconfig_credentials_list_flux_objects_and_post_through_the_proxy",
    ) {
        return;
    }
    runtime().block_on(async {
        let env = cluster_with_flux_objects(RBAC).await;
        env.apply(DISPATCHER_CERT_BINDING).await;
        let listener = Listener::start(200).await;
        let clusters = KubeClusters::with_defaults().unwrap();
        let kubeconfig = kubeconfig_yaml(
            &env.server(),
            &env.ca_pem(),
            &json!({ "token": env.dispatcher_token() }),
            "dispatcher",
        );
        let entries = [
            token_entry(&env, "by-token", &env.dispatcher_token()),
            entry(
                "by-certificate",
                &env.server(),
                Some(env.ca_pem()),
                Credentials::ClientCertificate {
                    certificate_pem: env.dispatcher_cert_pem(),
                    key_pem: Secret::new(env.dispatcher_key_pem()),
                },
            ),
            entry(
                "by-kubeconfig",
                &env.server(),
                None,
                Credentials::Kubeconfig {
                    kubeconfig: Secret::new(kubeconfig),
                    context: Some("dispatcher".into()),
                },
            ),
        ];
        for cluster in &entries {
            let name = &cluster.name;
            let repositories = clusters
                .git_repositories(cluster, NAMESPACE, false)
                .await
                .unwrap_or_else(|failure| panic!("{name}: {failure:?}"));
            assert_eq!(repositories.len(), 1, "{name}");
            assert_eq!(repositories[0].id, ObjectRef::new(NAMESPACE, "podinfo"));
            assert_eq!(
                repositories[0].url.as_deref(),
                Some("https://gitlab.example.com/team/podinfo.git")
            );
            let receivers = clusters
                .receivers(cluster, NAMESPACE, false)
                .await
                .unwrap_or_else(|failure| panic!("{name}: {failure:?}"));
            assert_eq!(receivers.len(), 1, "{name}");
            assert_eq!(receivers[0].receiver_type, ReceiverType::Gitlab);
            assert!(receivers[0].ready, "{name}");
            assert_eq!(receivers[0].webhook_path.as_deref(), Some(WEBHOOK_PATH));

            let request = receiver_post(proxy_target());
            let before = listener.seen().len();
            let response = clusters
                .send(cluster, &request)
                .await
                .unwrap_or_else(|failure| panic!("{name}: {failure:?}"));
            assert_eq!(response.status, 200, "{name}: {response:?}");
            let seen = listener.seen();
            assert_eq!(seen.len(), before + 1, "{name}");
            assert_delivered(&seen[before], &request, WEBHOOK_PATH);
        }

        // A receiver 503 comes back as 503 at once: kube does not retry it.
        listener.answer(503);
        let before = listener.seen().len();
        let started = Instant::now();
        let response = clusters
            .send(&entries[0], &receiver_post(proxy_target()))
            .await
            .unwrap();
        assert_eq!(response.status, 503);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(listener.seen().len(), before + 1, "sent once, not retried");
        let failure = classify_receiver_response(&response).unwrap_err();
        assert_eq!(failure.responder, Responder::Receiver);
        assert_eq!(failure.class, FailureClass::Retryable);
    });
}

#[test]
fn the_list_cache_serves_within_its_ttl_and_fresh_reads_again() {
    if !netns::enter("the_list_cache_serves_within_its_ttl_and_fresh_reads_again") {
        return;
    }
    runtime().block_on(async {
        let env = cluster_with_flux_objects(RBAC).await;
        let cluster = token_entry(&env, "cached", &env.dispatcher_token());
        let ttl = Duration::from_secs(2);
        let clusters = KubeClusters::new(Timeouts::default(), ttl).unwrap();
        let count = async |fresh| {
            clusters
                .git_repositories(&cluster, NAMESPACE, fresh)
                .await
                .unwrap()
                .len()
        };
        let first_read = Instant::now();
        assert_eq!(count(false).await, 1);
        env.apply(&git_repository("second")).await;
        assert_eq!(
            count(false).await,
            1,
            "served from the cache within the TTL"
        );
        assert_eq!(
            count(true).await,
            2,
            "fresh bypasses and refreshes the cache"
        );
        env.apply(&git_repository("third")).await;
        assert_eq!(count(false).await, 2, "the fresh read refilled the cache");
        assert!(
            first_read.elapsed() < ttl,
            "the test itself took longer than the TTL"
        );
        tokio::time::sleep(ttl).await;
        assert_eq!(count(false).await, 3, "an expired entry is read again");

        // New credentials for the same entry name: a new client and no stale list.
        let mut changed = cluster.clone();
        changed.credentials = Credentials::Token(Secret::new(env.nobody_token()));
        let failure = clusters
            .git_repositories(&changed, NAMESPACE, false)
            .await
            .unwrap_err();
        assert_eq!(failure.status, Some(403), "{failure:?}");
    });
}

#[test]
fn rbac_and_credential_refusals_are_apiserver_statuses_and_annotate_patches_the_object() {
    if !netns::enter(
        "rbac_and_credential_refusals_are_apiserver_statuses_and_annotate_patches_the_object",
    ) {
        return;
    }
    runtime().block_on(async {
        let env = cluster_with_flux_objects(ROLE_WITHOUT_PROXY_AND_PATCH).await;
        let listener = Listener::start(200).await;
        let clusters = KubeClusters::with_defaults().unwrap();
        let cluster = token_entry(&env, "restricted", &env.dispatcher_token());
        let podinfo = ObjectRef::new(NAMESPACE, "podinfo");
        // A running apiserver is ready, and says so to the dispatcher's identity, which
        // has no rule for /readyz beyond the default public-info-viewer binding.
        assert_eq!(clusters.apiserver_ready(&cluster).await, Ok(()));
        let nowhere = ClusterEntry {
            server: "https://127.0.0.1:1".parse().unwrap(),
            ..cluster.clone()
        };
        let why = clusters.apiserver_ready(&nowhere).await.unwrap_err();
        assert!(why.contains("could not reach"), "{why}");

        // No services/proxy rule: the apiserver answers 403 and the receiver sees nothing.
        let response = clusters
            .send(&cluster, &receiver_post(proxy_target()))
            .await
            .unwrap();
        assert_eq!(response.status, 403);
        let failure = classify_receiver_response(&response).unwrap_err();
        assert_eq!(failure.responder, Responder::ApiServer);
        assert_eq!(failure.class, FailureClass::Denied);
        assert!(
            failure.reason.contains("services/proxy"),
            "{}",
            failure.reason
        );
        assert!(listener.seen().is_empty());

        // No patch: annotate is refused with a Status naming the verb.
        let value = requested_at(time::OffsetDateTime::now_utc());
        let response = clusters
            .annotate(&cluster, &podinfo, &annotate_patch(&value))
            .await
            .unwrap();
        assert_eq!(response.status, 403);
        let failure =
            classify_apiserver_response(&response, "patch GitRepository flux-system/podinfo")
                .unwrap_err();
        assert!(
            failure.reason.contains("cannot patch"),
            "{}",
            failure.reason
        );

        // A path the apiserver has no handler for (an API that is not installed, or a CRD
        // whose paths a restarting apiserver has not installed yet) is Go's plain 404, no
        // Status: retried until it persists, like a 403. (Asked as admin: RBAC would refuse
        // the dispatcher before routing.)
        // The same for a resource (or version) a served group does not have: its generic
        // Status.
        for path in [
            "/apis/notinstalled.example.com/v1/namespaces/flux-system/things",
            "/apis/source.toolkit.fluxcd.io/v1/namespaces/flux-system/things",
            "/apis/source.toolkit.fluxcd.io/v9/namespaces/flux-system/gitrepositories",
        ] {
            let request = http::Request::get(path)
                .body(kube::client::Body::from(Vec::new()))
                .unwrap();
            let answer = env.admin().send(request).await.unwrap();
            let content_type = answer
                .headers()
                .get(http::header::CONTENT_TYPE)
                .map(|value| value.to_str().unwrap().to_string());
            let response = fluxrelay_core::outcome::classify::TriggerResponse {
                status: answer.status().as_u16(),
                content_type,
                body: http_body_util::BodyExt::collect(answer.into_body())
                    .await
                    .unwrap()
                    .to_bytes()
                    .to_vec(),
            };
            assert_eq!(response.status, 404, "{path}: {response:?}");
            let failure =
                classify_apiserver_response(&response, "list things in flux-system").unwrap_err();
            assert_eq!(failure.class, FailureClass::Denied, "{path}: {failure:?}");
            assert!(
                failure.reason.contains("the API is not served"),
                "{path}: {}",
                failure.reason
            );
        }

        // A wrong token: 401, and the caller is told to refresh the credentials.
        let wrong = token_entry(&env, "wrong-token", "not-a-valid-token");
        let failure = clusters
            .git_repositories(&wrong, NAMESPACE, true)
            .await
            .unwrap_err();
        assert_eq!(failure.status, Some(401), "{failure:?}");
        assert_eq!(failure.class, FailureClass::Permanent);
        assert!(failure.credentials_rejected);
        assert!(!failure.reason.contains("not-a-valid-token"));

        // With the project's Role, annotate changes the annotation on the real object.
        env.apply(RBAC).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let response = loop {
            let response = clusters
                .annotate(&cluster, &podinfo, &annotate_patch(&value))
                .await
                .unwrap();
            if response.status != 403 || Instant::now() > deadline {
                break response;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(response.status, 200, "{response:?}");
        let object = env
            .get_json(SOURCE_V1, "gitrepositories", NAMESPACE, "podinfo")
            .await;
        assert_eq!(
            object["metadata"]["annotations"][RECONCILE_REQUESTED_AT].as_str(),
            Some(value.as_str())
        );
        assert_eq!(object["metadata"]["generation"], 1, "metadata only");
    });
}

/// Listing through `entry` fails before anything is sent: the apiserver's certificate is
/// not trusted, a permanent transport failure.
async fn assert_tls_refused(clusters: &KubeClusters, entry: &ClusterEntry) {
    let failure = clusters
        .git_repositories(entry, NAMESPACE, true)
        .await
        .unwrap_err();
    assert_eq!(failure.responder, Responder::Transport, "{failure:?}");
    assert_eq!(failure.class, FailureClass::Permanent, "{failure:?}");
    assert!(
        failure
            .reason
            .starts_with("could not reach the server: TLS verification failed"),
        "{}",
        failure.reason
    );
}

#[test]
fn transport_failures_are_classed_and_absolute_urls_get_no_credentials_and_no_redirects() {
    if !netns::enter(
        "transport_failures_are_classed_and_absolute_urls_get_no_credentials_and_no_redirects",
    ) {
        return;
    }
    runtime().block_on(async {
        let env = KubeEnv::start().await;
        env.apply(RBAC).await;
        let clusters = KubeClusters::with_defaults().unwrap();

        // A CA that did not sign the apiserver's certificate.
        let mut wrong_ca = token_entry(&env, "wrong-ca", &env.dispatcher_token());
        wrong_ca.ca = Some(env.dispatcher_cert_pem());
        assert_tls_refused(&clusters, &wrong_ca).await;
        // No CA in the entry: the platform's roots, which hold no private cluster CA.
        let mut no_ca = token_entry(&env, "no-ca", &env.dispatcher_token());
        no_ca.ca = None;
        assert_tls_refused(&clusters, &no_ca).await;
        // The same at an absolute receiver URL: the apiserver's certificate is not signed
        // by any root the receiver client trusts.
        let untrusted = url::Url::parse(&format!("{}/hook/x", env.server())).unwrap();
        let failure = clusters
            .send(
                &wrong_ca,
                &receiver_post(RequestTarget::Absolute(untrusted)),
            )
            .await
            .unwrap_err();
        assert_eq!(failure.responder, Responder::Transport, "{failure:?}");
        assert_eq!(failure.class, FailureClass::Permanent, "{failure:?}");
        assert!(failure.reason.contains("TLS"), "{}", failure.reason);

        // An absolute receiver URL: plain HTTP client, no cluster token, 302 not followed.
        let listener = Listener::start(302).await;
        let cluster = token_entry(&env, "absolute", &env.dispatcher_token());
        let url = url::Url::parse(&format!("http://192.0.2.10:9292{WEBHOOK_PATH}")).unwrap();
        let request = receiver_post(RequestTarget::Absolute(url));
        let response = clusters.send(&cluster, &request).await.unwrap();
        assert_eq!(response.status, 302);
        let seen = listener.seen();
        assert_eq!(seen.len(), 1, "the redirect was not followed: {seen:?}");
        assert_delivered(&seen[0], &request, WEBHOOK_PATH);
        let token = env.dispatcher_token();
        assert!(
            seen[0].headers.values().all(|value| !value
                .as_bytes()
                .windows(token.len())
                .any(|w| w == token.as_bytes())),
            "the cluster token leaked to the receiver URL"
        );
        let failure = classify_receiver_response(&response).unwrap_err();
        assert_eq!(failure.class, FailureClass::Permanent);

        // A large answer: only the first 8 KiB are kept, through the proxy and directly.
        listener.answer(200);
        listener.body_len.store(100 * 1024, Ordering::SeqCst);
        for request in [receiver_post(proxy_target()), request.clone()] {
            let response = clusters.send(&cluster, &request).await.unwrap();
            assert_eq!(response.status, 200);
            assert_eq!(response.content_type.as_deref(), Some("text/plain"));
            assert_eq!(response.body.len(), 8 * 1024);
        }

        // A receiver that never answers: a Timeout-class failure after the read timeout,
        // through the apiserver proxy and at an absolute URL alike.
        listener.answer(HANG);
        let second = Duration::from_secs(1);
        let impatient = KubeClusters::new(
            Timeouts {
                connect: second,
                read: second,
                write: second,
            },
            Duration::from_secs(30),
        )
        .unwrap();
        for request in [receiver_post(proxy_target()), request.clone()] {
            let started = Instant::now();
            let failure = impatient.send(&cluster, &request).await.unwrap_err();
            assert_eq!(failure.responder, Responder::Transport, "{failure:?}");
            assert_eq!(failure.class, FailureClass::Retryable, "{failure:?}");
            assert!(
                failure
                    .reason
                    .starts_with("could not reach the server: timed out waiting for the answer"),
                "{}",
                failure.reason
            );
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{:?}",
                started.elapsed()
            );
        }

        // Nothing listens: a Connect-class failure.
        let closed = token_entry(&env, "closed-port", &env.dispatcher_token());
        let closed = ClusterEntry {
            server: url::Url::parse("https://127.0.0.1:1").unwrap(),
            ..closed
        };
        let failure = clusters
            .git_repositories(&closed, NAMESPACE, true)
            .await
            .unwrap_err();
        assert_eq!(failure.class, FailureClass::Retryable, "{failure:?}");
        assert!(
            failure.reason.contains("connection failed"),
            "{}",
            failure.reason
        );
    });
}

#[tokio::test]
async fn a_kubeconfig_for_another_server_eks_and_exec_credentials_are_refused_before_any_request() {
    let clusters = KubeClusters::with_defaults().unwrap();
    let ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let elsewhere = kubeconfig_yaml(
        "https://203.0.113.7:6443",
        ca,
        &json!({ "token": "secret-kubeconfig-token" }),
        "ctx",
    );
    let exec = format!(
        "{}users:\n- name: u\n  user:\n    exec: {{apiVersion: client.authentication.k8s.io/v1, command: /bin/true}}\n",
        kubeconfig_yaml("https://127.0.0.1:6443", ca, &json!({}), "ctx")
            .split("users:")
            .next()
            .unwrap()
    ) + "contexts:\n- name: ctx\n  context: {cluster: c, user: u}\ncurrent-context: ctx\n";
    let cases = [
        (
            Credentials::Kubeconfig {
                kubeconfig: Secret::new(elsewhere),
                context: None,
            },
            "does not point at the entry's server",
        ),
        (
            Credentials::Kubeconfig {
                kubeconfig: Secret::new("{not: [yaml"),
                context: None,
            },
            "could not be parsed",
        ),
        (
            Credentials::Kubeconfig {
                kubeconfig: Secret::new(exec),
                context: None,
            },
            "exec, auth-provider and file paths are not used",
        ),
        // Checked before any AWS credential lookup: nothing is minted for a bad entry.
        (
            Credentials::Eks {
                cluster: "prod".into(),
                region: "eu-west-1.attacker.example".into(),
            },
            "is not an AWS region name",
        ),
        (
            Credentials::Eks {
                cluster: "prod cluster".into(),
                region: "eu-west-1".into(),
            },
            "is not an EKS cluster name",
        ),
    ];
    for (credentials, expected) in cases {
        let cluster = entry("refused", "https://127.0.0.1:6443", None, credentials);
        let failure = clusters
            .git_repositories(&cluster, NAMESPACE, true)
            .await
            .unwrap_err();
        assert_eq!(failure.responder, Responder::Configuration, "{failure:?}");
        assert_eq!(failure.class, FailureClass::Permanent);
        assert!(failure.reason.contains(expected), "{}", failure.reason);
        assert!(!failure.reason.contains("secret-kubeconfig-token"));
    }
}
