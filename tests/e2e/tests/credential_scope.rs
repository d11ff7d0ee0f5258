//! Credentials go only where they belong, through the whole AWS path (ingest → route →
//! dispatch over moto and a real kube-apiserver): a registry entry's credentials reach only
//! its own `server`, an absolute receiver URL gets none, no redirect is followed (from the
//! apiserver, from a Receiver behind the service proxy, from an absolute receiver URL, on
//! list calls, proxy POSTs and annotate PATCHes), a kubeconfig whose context points at
//! another server is refused, and nothing in a push payload moves any request to another
//! host. Decoy listeners on 192.0.2.11, 192.0.2.12 and 169.254.169.254 (added to `lo` of
//! the test's private network namespace) count every connection; each must see none.
//!
//! What `functions/adapters/tests/kube_apiserver.rs` already pins at the adapter level
//! (a 302 from an absolute URL to itself not followed, no token at an absolute URL, a
//! kubeconfig for an unreachable server refused) is not repeated; these tests add the
//! redirect *targets*, the apiserver side, and the push payload.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use fluxrelay_e2e::pipeline::Pipeline;
use fluxrelay_testkit::decoy::{
    Decoy, SeenRequest, add_loopback_address, http_response, redirect_to,
};
use fluxrelay_testkit::kube_env::DISPATCHER_CERT_BINDING;
use fluxrelay_testkit::kube_env::kubeconfig_yaml;
use fluxrelay_testkit::netns;
use fluxrelay_testkit::receiver::{FluxReceiverEmulator, Hit, ReceiverSpec};
use serde_json::{Value, json};

const DIASPORA: &str = "https://example.com/mike/diaspora.git";
const RECEIVER_TOKEN: &str = "hmac-receiver-token-5be1d0c7";
/// Addresses no request may reach: other hosts and the cloud metadata service.
const DECOY_IPS: [&str; 3] = ["192.0.2.11", "192.0.2.12", "169.254.169.254"];

/// A listener on every port a stray request could use, on every decoy address but the
/// ones a test uses for its own listeners (`except`).
async fn decoys(except: &[&str]) -> Vec<Decoy> {
    for ip in DECOY_IPS {
        add_loopback_address(ip);
    }
    let mut decoys = Vec::new();
    for ip in DECOY_IPS {
        for port in [22, 80, 443, 6443, 9292] {
            let addr = format!("{ip}:{port}");
            if !except.contains(&addr.as_str()) {
                decoys.push(Decoy::start(&addr).await);
            }
        }
    }
    decoys
}

fn assert_untouched(decoys: &[Decoy]) {
    for decoy in decoys {
        assert_eq!(
            decoy.connections(),
            0,
            "{} was contacted: {:?}",
            decoy.addr(),
            decoy.seen()
        );
    }
}

/// The push with a fresh commit id (so it is not deduplicated) and `edit` applied.
fn push(n: u8, edit: impl FnOnce(&mut Value)) -> String {
    Pipeline::edited_event("ingest-push-hook.json", |hook| {
        let sha = format!("{:040x}", 0xabc000 + u32::from(n));
        hook["after"] = json!(sha);
        hook["checkout_sha"] = json!(sha);
        edit(hook);
    })
}

/// Every URL-like field GitLab sends, set to `base` + a path.
fn point_everything_at(hook: &mut Value, http: &str, ssh_host: &str) {
    for (object, fields) in [
        (
            "project",
            &[
                "web_url",
                "git_http_url",
                "http_url",
                "url",
                "homepage",
                "avatar_url",
            ][..],
        ),
        ("repository", &["url", "homepage", "git_http_url"][..]),
    ] {
        for field in fields {
            hook[object][*field] = json!(format!("{http}/mike/diaspora.git"));
        }
    }
    for (object, field) in [
        ("project", "git_ssh_url"),
        ("project", "ssh_url"),
        ("repository", "git_ssh_url"),
    ] {
        hook[object][field] = json!(format!("git@{ssh_host}:mike/diaspora.git"));
    }
    if let Some(commits) = hook["commits"].as_array_mut() {
        for commit in commits {
            commit["url"] = json!(format!("{http}/latest/meta-data/iam/security-credentials/"));
        }
    }
}

fn with_instance_header(event: String, instance: &str) -> String {
    let mut event: Value = serde_json::from_str(&event).unwrap();
    event["headers"]["x-gitlab-instance"] = json!(instance);
    event.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_in_a_push_payload_changes_the_host_of_any_outgoing_request() {
    if !netns::enter("nothing_in_a_push_payload_changes_the_host_of_any_outgoing_request") {
        return;
    }
    let p = Pipeline::start().await;
    let decoys = decoys(&[]).await;
    p.git_repository("app", DIASPORA, json!({"branch": "master"}))
        .await;
    let path_app = p
        .flux_receiver("r", "generic-hmac", RECEIVER_TOKEN, &[], "app")
        .await;
    // A cluster-side GitRepository whose URL host is a decoy: a push naming that host
    // matches it, and the trigger still goes only to the entry's server.
    p.git_repository(
        "look-alike",
        "https://192.0.2.11/mike/diaspora.git",
        json!({"branch": "master"}),
    )
    .await;
    // generic-hmac: a generic Receiver's secret path is refused over the plain-http
    // absolute URL below.
    let path_alike = p
        .flux_receiver("r-alike", "generic-hmac", "alike-token", &[], "look-alike")
        .await;
    let tokens = json!({"flux-system/r": RECEIVER_TOKEN, "flux-system/r-alike": "alike-token"});
    p.register(p.entry("via-proxy", json!({"trigger": {"receiver_tokens": tokens}})))
        .await;
    p.register(p.entry(
        "absolute",
        json!({"trigger": {"webhook_receiver_url": "http://192.0.2.10:9292", "receiver_tokens": tokens}}),
    ))
    .await;
    p.register(p.entry("annotate", json!({"trigger": {"mode": "annotate"}})))
        .await;

    let pushes = [
        // The control: the sample push as GitLab sends it.
        push(0, |_| {}),
        // Every URL at the cloud metadata service, and the instance header too.
        with_instance_header(
            push(1, |hook| {
                point_everything_at(hook, "http://169.254.169.254", "169.254.169.254")
            }),
            "http://169.254.169.254",
        ),
        // Every URL at a decoy, on the apiserver's and the receiver's ports.
        with_instance_header(
            push(2, |hook| {
                point_everything_at(hook, "https://192.0.2.11:6443", "192.0.2.12")
            }),
            "https://192.0.2.11:9292",
        ),
        // Matches the look-alike GitRepository (host 192.0.2.11, same path).
        push(3, |hook| {
            point_everything_at(hook, "https://192.0.2.11", "192.0.2.11")
        }),
        // URLs with user info, paths that look like apiserver paths, and a ref that does.
        push(4, |hook| {
            point_everything_at(
                hook,
                "http://user:pass@192.0.2.12:9292/api/v1/namespaces/flux-system/services/x/proxy/..",
                "192.0.2.12",
            );
            hook["ref"] = json!("refs/heads/master/../../api/v1/secrets");
        }),
    ];
    let mut statuses = Vec::new();
    for event in &pushes {
        let (status, body) = p.post_event_json(event).await;
        statuses.push((status, body));
    }
    assert_eq!(statuses[0].0, 202, "{statuses:?}");
    p.drain().await;

    assert_untouched(&decoys);
    let hits = p.receiver.hits();
    assert!(!hits.is_empty(), "the control push was not delivered");
    for hit in &hits {
        assert!(
            hit.request_uri == path_app || hit.request_uri == path_alike,
            "a request to an unexpected path: {hit:?}"
        );
        assert!(hit.headers.get("authorization").is_none(), "{hit:?}");
    }
    // The control push: once through the proxy and once at the absolute URL; the pushes
    // naming 192.0.2.11 reached the look-alike Receiver the same two ways.
    assert!(
        p.receiver.accepted("flux-system", "r").len() >= 2,
        "{hits:?}"
    );
    assert!(
        p.receiver.accepted("flux-system", "r-alike").len() >= 2,
        "{hits:?}"
    );
    let annotated = p
        .kube
        .get_json(
            "source.toolkit.fluxcd.io/v1",
            "gitrepositories",
            "flux-system",
            "look-alike",
        )
        .await;
    assert!(
        annotated["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"].is_string(),
        "{annotated}"
    );
    assert!(p.take_dead_letters().await.is_empty());
}

/// A second Service behind the apiserver's proxy, whose only endpoint (192.0.2.12:9293)
/// answers every request with a redirect; the Role may POST to it.
const REDIRECTOR_SERVICE: &str = "
apiVersion: v1
kind: Pod
metadata: {name: redirector-0, namespace: flux-system}
spec:
  automountServiceAccountToken: false
  containers: [{name: redirector, image: redirector}]
---
apiVersion: v1
kind: Service
metadata: {name: redirector, namespace: flux-system}
spec:
  ports: [{name: http, port: 80, targetPort: 9293, protocol: TCP}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: redirector-proxy, namespace: flux-system}
rules:
- {apiGroups: [''], resources: [services/proxy], resourceNames: ['http:redirector:80'], verbs: [create]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: redirector-proxy, namespace: flux-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: redirector-proxy}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: fluxrelay-dispatcher}
";

const REDIRECTOR_ENDPOINTS: &str = "
apiVersion: v1
kind: Endpoints
metadata: {name: redirector, namespace: flux-system}
subsets:
- addresses: [{ip: 192.0.2.12, targetRef: {kind: Pod, name: redirector-0, namespace: flux-system}}]
  ports: [{name: http, port: 9293, protocol: TCP}]
";

/// A stand-in apiserver: lists like the real one (one GitRepository `app`, one Ready
/// Receiver `r`), and answers every write (proxy POST, annotate PATCH) with a redirect.
fn apiserver_that_redirects_writes(location: &str) -> fluxrelay_testkit::decoy::Answer {
    let location = location.to_string();
    Arc::new(move |request: &SeenRequest| {
        let list = |kind: &str, items: Value| {
            let body = json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items});
            http_response(
                200,
                &[("content-type", "application/json")],
                body.to_string().as_bytes(),
            )
        };
        if request.method == "GET" && request.target.contains("/gitrepositories") {
            list(
                "GitRepositoryList",
                json!([{"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                    "metadata": {"name": "app", "namespace": "flux-system"},
                    "spec": {"interval": "10m", "url": DIASPORA, "ref": {"branch": "master"}}}]),
            )
        } else if request.method == "GET" && request.target.contains("/receivers") {
            list(
                "ReceiverList",
                json!([{"apiVersion": "notification.toolkit.fluxcd.io/v1", "kind": "Receiver",
                    "metadata": {"name": "r", "namespace": "flux-system"},
                    "spec": {"type": "generic", "resources": [{"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository", "name": "app"}]},
                    "status": {"webhookPath": "/hook/0123456789abcdef",
                               "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded", "message": "ok", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}]),
            )
        } else {
            http_response(302, &[("location", &location)], b"moved")
        }
    })
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle.as_bytes())
}

/// The secret in any of the forms it could travel in: raw, a PEM's base64 body lines,
/// the base64 of the whole text.
fn forms(secret: &str) -> Vec<String> {
    let mut forms = vec![
        secret.to_string(),
        base64::engine::general_purpose::STANDARD.encode(secret),
    ];
    forms.extend(
        secret
            .lines()
            .filter(|line| !line.starts_with("-----") && line.len() >= 16)
            .map(str::to_string),
    );
    forms
}

fn assert_no_secret_in_hits(hits: &[Hit], secrets: &[String], at: &str) {
    for hit in hits {
        assert!(hit.headers.get("authorization").is_none(), "{at}: {hit:?}");
        for secret in secrets.iter().flat_map(|secret| forms(secret)) {
            for (name, value) in &hit.headers {
                assert!(
                    !contains(value.as_bytes(), &secret),
                    "{at}: a cluster credential in header {name}"
                );
            }
            assert!(
                !contains(&hit.body, &secret),
                "{at}: a cluster credential in the body"
            );
        }
    }
}

fn assert_no_secret_in_requests(seen: &[SeenRequest], secrets: &[String], at: &str) {
    for request in seen {
        assert!(
            request.header("authorization").is_none(),
            "{at}: {request:?}"
        );
        for secret in secrets.iter().flat_map(|secret| forms(secret)) {
            assert!(
                !contains(&request.raw, &secret),
                "{at}: a cluster credential was sent"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_reach_only_the_entry_server_and_no_redirect_is_followed() {
    if !netns::enter("credentials_reach_only_the_entry_server_and_no_redirect_is_followed") {
        return;
    }
    let p = Pipeline::start().await;
    add_loopback_address("192.0.2.13");
    add_loopback_address("192.0.2.14");
    let decoys = decoys(&["192.0.2.12:9292"]).await;
    let stolen = "http://192.0.2.11:9292/hook/stolen";

    // Receivers at absolute URLs, one per entry, so each sees only its entry's requests.
    let receiver_spec = ReceiverSpec {
        namespace: "flux-system".into(),
        name: "r".into(),
        receiver_type: "generic-hmac".into(),
        token: RECEIVER_TOKEN.into(),
        events: vec![],
        suspended: false,
        ready: true,
    };
    let absolute_token = FluxReceiverEmulator::start("192.0.2.13:9292".parse().unwrap())
        .await
        .unwrap();
    let absolute_cert = FluxReceiverEmulator::start("192.0.2.14:9292".parse().unwrap())
        .await
        .unwrap();
    absolute_token.upsert(receiver_spec.clone());
    absolute_cert.upsert(receiver_spec);
    // An absolute receiver URL that redirects to a decoy.
    let absolute_redirect = Decoy::answering("192.0.2.12:9292", redirect_to(stolen)).await;
    // A Receiver behind the real apiserver's service proxy that redirects to a decoy.
    let proxied_redirect = Decoy::answering("192.0.2.12:9293", redirect_to(stolen)).await;
    // Stand-in apiservers with the real one's serving certificate (SAN 127.0.0.1).
    let cert = std::fs::read_to_string(p.kube.dir().join("apiserver.crt")).unwrap();
    let key = std::fs::read_to_string(p.kube.dir().join("apiserver.key")).unwrap();
    let redirects_everything = Decoy::tls(
        "127.0.0.1:7443",
        &cert,
        &key,
        redirect_to("https://192.0.2.11:6443/apis/source.toolkit.fluxcd.io/v1/namespaces/flux-system/gitrepositories"),
    )
    .await;
    let redirects_writes = Decoy::tls(
        "127.0.0.1:7444",
        &cert,
        &key,
        apiserver_that_redirects_writes(stolen),
    )
    .await;

    p.kube.apply(DISPATCHER_CERT_BINDING).await;
    p.kube.apply(REDIRECTOR_SERVICE).await;
    p.kube
        .patch_status(
            "v1",
            "pods",
            "flux-system",
            "redirector-0",
            json!({"phase": "Running", "podIP": "192.0.2.12", "podIPs": [{"ip": "192.0.2.12"}]}),
        )
        .await;
    p.kube.apply(REDIRECTOR_ENDPOINTS).await;
    p.git_repository("app", DIASPORA, json!({"branch": "master"}))
        .await;
    p.flux_receiver("r", "generic-hmac", RECEIVER_TOKEN, &[], "app")
        .await;

    let token = p.kube.dispatcher_token();
    let cert_pem = p.kube.dispatcher_cert_pem();
    let key_pem = p.kube.dispatcher_key_pem();
    let tokens = json!({"flux-system/r": RECEIVER_TOKEN});
    let trigger =
        |url: &str| json!({"trigger": {"webhook_receiver_url": url, "receiver_tokens": tokens}});
    let kubeconfig_token = json!({"token": token});
    let elsewhere = kubeconfig_yaml(
        "https://192.0.2.11:6443",
        &p.kube.ca_pem(),
        &kubeconfig_token,
        "ctx",
    );
    // Two contexts: the current one is right, the one the entry names is not.
    let two_contexts = format!(
        "{}- name: evil\n  context: {{cluster: evil, user: u}}\n",
        kubeconfig_yaml(&p.kube.server(), &p.kube.ca_pem(), &kubeconfig_token, "good")
            .replace(
                "users:",
                &format!("- name: evil\n  cluster:\n    server: \"https://192.0.2.12:443\"\n    certificate-authority-data: {}\nusers:",
                    base64::engine::general_purpose::STANDARD.encode(p.kube.ca_pem())),
            )
            .replace("current-context: good\n", "")
    ) + "current-context: good\n";

    let mut entries = vec![
        p.entry("absolute-token", trigger("http://192.0.2.13:9292")),
        p.entry("absolute-redirect", trigger("http://192.0.2.12:9292")),
        p.entry(
            "proxy-redirect",
            trigger("/api/v1/namespaces/flux-system/services/http:redirector:80/proxy"),
        ),
    ];
    let mut certificate = p.entry("absolute-cert", trigger("http://192.0.2.14:9292"));
    certificate["auth"] = json!({"client_cert": cert_pem, "client_key": key_pem});
    entries.push(certificate);
    for (name, server, mode) in [
        (
            "apiserver-redirects-lists",
            "https://127.0.0.1:7443",
            "receiver",
        ),
        (
            "apiserver-redirects-proxy",
            "https://127.0.0.1:7444",
            "receiver",
        ),
        (
            "apiserver-redirects-patch",
            "https://127.0.0.1:7444",
            "annotate",
        ),
    ] {
        let mut entry = p.entry(name, json!({"trigger": {"mode": mode}}));
        entry["server"] = json!(server);
        entries.push(entry);
    }
    for (name, kubeconfig, context) in [
        ("kubeconfig-elsewhere", elsewhere, None),
        ("kubeconfig-context-elsewhere", two_contexts, Some("evil")),
    ] {
        let mut entry = p.entry(name, json!({}));
        let object = entry.as_object_mut().unwrap();
        object.remove("auth");
        object.remove("ca");
        object.insert("kubeconfig".into(), json!(kubeconfig));
        if let Some(context) = context {
            object.insert("context".into(), json!(context));
        }
        entries.push(entry);
    }
    for entry in entries {
        p.register(entry).await;
    }

    assert_eq!(p.post_event_file("ingest-push-hook.json").await.0, 202);
    p.drain().await;

    let secrets = [token.clone(), key_pem.clone()];
    // Absolute URLs: delivered, without the cluster's token, certificate key or Authorization.
    assert_eq!(
        absolute_token.accepted("flux-system", "r").len(),
        1,
        "{:?}",
        absolute_token.hits()
    );
    assert_eq!(
        absolute_cert.accepted("flux-system", "r").len(),
        1,
        "{:?}",
        absolute_cert.hits()
    );
    assert_no_secret_in_hits(
        &absolute_token.hits(),
        &secrets,
        "absolute URL (token entry)",
    );
    assert_no_secret_in_hits(
        &absolute_cert.hits(),
        &secrets,
        "absolute URL (certificate entry)",
    );
    // Nothing went through the default webhook-receiver proxy.
    assert!(p.receiver.hits().is_empty(), "{:?}", p.receiver.hits());
    // The redirecting receivers were asked once each (a redirect is permanent), without
    // credentials; their redirect target, like every other decoy, saw nothing.
    assert_eq!(
        absolute_redirect.seen().len(),
        1,
        "{:?}",
        absolute_redirect.seen()
    );
    assert_eq!(
        proxied_redirect.seen().len(),
        1,
        "{:?}",
        proxied_redirect.seen()
    );
    assert_no_secret_in_requests(
        &absolute_redirect.seen(),
        &secrets,
        "redirecting absolute URL",
    );
    assert_no_secret_in_requests(
        &proxied_redirect.seen(),
        &secrets,
        "redirecting proxied Receiver",
    );
    assert_untouched(&decoys);
    // The stand-in apiservers are the entries' own servers: they get the token, and their
    // redirects are not followed.
    let everything = redirects_everything.seen();
    assert!(!everything.is_empty());
    assert!(
        everything
            .iter()
            .all(|r| r.method == "GET" && r.target.contains("/gitrepositories")),
        "{everything:?}"
    );
    let writes: Vec<(String, String)> = redirects_writes
        .seen()
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| (r.method.clone(), r.target.clone()))
        .collect();
    assert!(writes.contains(&("POST".into(), "/api/v1/namespaces/flux-system/services/http:webhook-receiver:80/proxy/hook/0123456789abcdef".into())), "{writes:?}");
    assert!(
        writes.contains(&(
            "PATCH".into(),
            "/apis/source.toolkit.fluxcd.io/v1/namespaces/flux-system/gitrepositories/app".into()
        )),
        "{writes:?}"
    );

    let dead: BTreeMap<String, String> = p
        .take_dead_letters()
        .await
        .into_iter()
        .map(|(_, attributes)| {
            (
                attributes["fluxrelay.cluster"].clone(),
                attributes["fluxrelay.reason"].clone(),
            )
        })
        .collect();
    let expected = [
        ("absolute-redirect", "redirect not followed"),
        ("proxy-redirect", "redirect not followed"),
        ("apiserver-redirects-lists", "redirect not followed"),
        ("apiserver-redirects-proxy", "redirect not followed"),
        ("apiserver-redirects-patch", "redirect not followed"),
        (
            "kubeconfig-elsewhere",
            "does not point at the entry's server",
        ),
        (
            "kubeconfig-context-elsewhere",
            "does not point at the entry's server",
        ),
    ];
    assert_eq!(
        dead.keys().collect::<Vec<_>>(),
        {
            let mut names: Vec<&str> = expected.iter().map(|(name, _)| *name).collect();
            names.sort();
            names
        },
        "{dead:#?}"
    );
    for (cluster, says) in expected {
        assert!(dead[cluster].contains(says), "{cluster}: {}", dead[cluster]);
        for secret in secrets.iter().flat_map(|secret| forms(secret)) {
            assert!(
                !dead[cluster].contains(&secret),
                "{cluster}: a secret in the reason"
            );
        }
    }
}
