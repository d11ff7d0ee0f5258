//! `fluxrelay cluster add|list|check` as processes against a real kube-apiserver (inside a
//! private network namespace) with the Flux receiver emulator behind its service proxy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fluxrelay_testkit::kube_env::KubeEnv;
use fluxrelay_testkit::netns;
use fluxrelay_testkit::receiver::{FluxReceiverEmulator, ReceiverSpec};
use serde_json::{Value, json};

const RBAC: &str = include_str!("../../../infra/rbac.yaml");
const RECEIVER_TOKEN: &str = "receiver-token-kept-in-the-cluster";

fn fluxrelay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fluxrelay"))
        .args(args)
        .output()
        .unwrap()
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fluxrelay-cluster-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_entry(dir: &Path, entry: &Value) {
    let name = entry["name"].as_str().unwrap();
    std::fs::write(dir.join(format!("{name}.json")), entry.to_string()).unwrap();
}

/// A cluster with the project's Role, one GitRepository and one gitlab Receiver whose
/// token is in a Secret, and the receiver emulator answering behind the service proxy.
async fn cluster() -> (KubeEnv, FluxReceiverEmulator, String) {
    let env = KubeEnv::start().await;
    env.apply(RBAC).await;
    let receiver = FluxReceiverEmulator::start("192.0.2.10:9292".parse().unwrap())
        .await
        .unwrap();
    let path = receiver.upsert(ReceiverSpec {
        namespace: "flux-system".into(),
        name: "gitlab-receiver".into(),
        receiver_type: "gitlab".into(),
        token: RECEIVER_TOKEN.into(),
        events: vec!["Push Hook".into()],
        suspended: false,
        ready: true,
    });
    env.apply(
        &json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "receiver-token", "namespace": "flux-system"},
                "stringData": {"token": RECEIVER_TOKEN}})
        .to_string(),
    )
    .await;
    env.apply(
        "
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: podinfo, namespace: flux-system}
spec: {url: 'https://gitlab.example.com/team/podinfo.git', ref: {branch: main}, interval: 1h}
---
apiVersion: notification.toolkit.fluxcd.io/v1
kind: Receiver
metadata: {name: gitlab-receiver, namespace: flux-system}
spec:
  type: gitlab
  events: [Push Hook]
  secretRef: {name: receiver-token}
  resources: [{apiVersion: source.toolkit.fluxcd.io/v1, kind: GitRepository, name: podinfo}]
",
    )
    .await;
    env.patch_status(
        "notification.toolkit.fluxcd.io/v1",
        "receivers",
        "flux-system",
        "gitlab-receiver",
        json!({"webhookPath": path, "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded",
               "message": "ok", "lastTransitionTime": "2026-11-22T00:00:00Z"}]}),
    )
    .await;
    (env, receiver, path)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn cluster_add_makes_a_least_privilege_identity_reads_receiver_tokens_then_list_and_check_pass() {
    if !netns::enter(
        "cluster_add_makes_a_least_privilege_identity_reads_receiver_tokens_then_list_and_check_pass",
    ) {
        return;
    }
    runtime().block_on(async {
        let (env, _receiver, path) = cluster().await;
        let dir = temp_dir("add");
        let kubeconfig = env.dir().join("admin.kubeconfig");
        let admin_kubeconfig = std::fs::read_to_string(&kubeconfig).unwrap();

        // With an admin kubeconfig, as a new user would: the entry gets an identity of its
        // own, never the admin's credentials (before: the admin client certificate, with a
        // warning).
        let output = fluxrelay(&[
            "cluster", "add", "local",
            "--kubeconfig", kubeconfig.to_str().unwrap(),
            "--project", "team/**",
            "--dir", dir.to_str().unwrap(),
        ]);
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "{stdout}\n{stderr}");
        assert!(stdout.contains("✓ Receiver flux-system/gitlab-receiver: token read from its Secret"), "{stdout}");
        assert!(stdout.contains("✓ Role and RoleBinding flux-system/fluxrelay-local: 3 rule(s), exactly what the entry needs"), "{stdout}");
        assert!(stdout.contains("✓ dispatcher identity system:serviceaccount:flux-system:fluxrelay-local: token expires "), "{stdout}");
        assert!(stdout.contains("✓ cluster local: server "), "{stdout}");
        assert!(!stdout.contains(RECEIVER_TOKEN) && !stderr.contains(RECEIVER_TOKEN), "{stdout}{stderr}");

        let file = dir.join("local.json");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "the entry holds credentials");
        }
        let stored = std::fs::read_to_string(&file).unwrap();
        let entry: Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(entry["server"], env.server());
        assert_eq!(entry["ca"], env.ca_pem());
        assert_eq!(entry["trigger"]["receiver_tokens"]["flux-system/gitlab-receiver"], RECEIVER_TOKEN);
        assert_eq!(entry["subscriptions"], json!([{"projects": ["team/**"]}]));
        let auth: Vec<&String> = entry["auth"].as_object().unwrap().keys().collect();
        assert_eq!(auth, ["token"], "only the dispatcher's token: {auth:?}");
        let token = entry["auth"]["token"].as_str().unwrap();
        assert!(!stdout.contains(token) && !stderr.contains(token), "token printed");
        for line in admin_kubeconfig.lines() {
            if let Some(data) = line.trim().strip_prefix("client-key-data:").or_else(|| line.trim().strip_prefix("client-certificate-data:")) {
                assert!(!stored.contains(data.trim()), "an admin credential was stored");
            }
        }
        // Its identity is the ServiceAccount, and it may do what dispatch needs and no more:
        // not read a Secret, not list GitRepositories elsewhere, not patch them.
        let payload = token.split('.').nth(1).unwrap();
        let claims: Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).unwrap(),
        )
        .unwrap();
        assert_eq!(claims["sub"], "system:serviceaccount:flux-system:fluxrelay-local");
        let as_dispatcher = fluxrelay_testkit::kube_env::client_from_kubeconfig(
            &fluxrelay_testkit::kube_env::kubeconfig_yaml(&env.server(), &env.ca_pem(), &json!({"token": token}), "local"),
        )
        .await;
        let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> = kube::Api::namespaced(as_dispatcher.clone(), "flux-system");
        match secrets.list(&Default::default()).await {
            Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
            other => panic!("the dispatcher may list Secrets: {other:?}"),
        }
        let elsewhere: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(as_dispatcher, "default");
        assert!(elsewhere.list(&Default::default()).await.is_err(), "the dispatcher may list ConfigMaps in default");

        // Run again with --force: the token is renewed (a JWT's times are in whole seconds,
        // so a new one needs a new second), the Role stays exactly as it was.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let renewed = fluxrelay(&[
            "cluster", "add", "local", "--force",
            "--kubeconfig", kubeconfig.to_str().unwrap(),
            "--project", "team/**",
            "--dir", dir.to_str().unwrap(),
        ]);
        assert!(renewed.status.success(), "{}", text(&renewed).1);
        let renewed_entry: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_ne!(renewed_entry["auth"]["token"], entry["auth"]["token"], "a new token");

        // --operator-credentials keeps the old way, saying what it stores.
        let operator_dir = temp_dir("add-operator");
        let operator = fluxrelay(&[
            "cluster", "add", "mine", "--operator-credentials",
            "--kubeconfig", kubeconfig.to_str().unwrap(),
            "--dir", operator_dir.to_str().unwrap(),
        ]);
        let (operator_out, operator_err) = text(&operator);
        assert!(operator.status.success(), "{operator_out}\n{operator_err}");
        assert!(operator_out.contains("--operator-credentials: the entry holds your kubeconfig user's credentials"), "{operator_out}");
        assert!(!operator_out.contains("dispatcher identity"), "{operator_out}");
        let mine: Value = serde_json::from_str(&std::fs::read_to_string(operator_dir.join("mine.json")).unwrap()).unwrap();
        assert!(mine["auth"]["client_cert"].is_string() || mine["auth"]["token"].is_string(), "{}", mine["auth"]);
        let _ = std::fs::remove_dir_all(&operator_dir);

        let again = fluxrelay(&["cluster", "add", "local", "--kubeconfig", kubeconfig.to_str().unwrap(), "--dir", dir.to_str().unwrap()]);
        assert_eq!(again.status.code(), Some(1));
        assert!(text(&again).1.contains("pass --force"), "{}", text(&again).1);

        // The dispatcher identity of infra/rbac.yaml has exactly what dispatch needs.
        write_entry(&dir, &json!({
            "name": "dispatcher", "server": env.server(), "ca": env.ca_pem(),
            "auth": {"token": env.dispatcher_token()},
            "trigger": {"receiver_tokens": {"flux-system/gitlab-receiver": RECEIVER_TOKEN}},
        }));
        let listed = fluxrelay(&["cluster", "list", "--dir", dir.to_str().unwrap()]);
        let (stdout, _) = text(&listed);
        assert!(listed.status.success());
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 3, "{stdout}");
        assert!(lines[1].starts_with("dispatcher\thttps://") && lines[1].ends_with("\treceiver\tevery push\tvalid"), "{stdout}");
        assert!(lines[2].starts_with("local\t") && lines[2].ends_with("\treceiver\t1\tvalid"), "{stdout}");

        for name in ["local", "dispatcher"] {
            let checked = fluxrelay(&["cluster", "check", name, "--dir", dir.to_str().unwrap()]);
            let (stdout, stderr) = text(&checked);
            assert!(checked.status.success(), "{name}:\n{stdout}\n{stderr}");
            assert!(!stdout.contains('✗'), "{stdout}");
            if name == "local" {
                assert!(stdout.contains("✓ token valid for 36"), "{stdout}");
            }
            for expected in [
                "✓ apiserver reachable",
                "✓ may list gitrepositories.source.toolkit.fluxcd.io in flux-system",
                "✓ may list receivers.notification.toolkit.fluxcd.io in flux-system",
                "✓ may create services/proxy http:webhook-receiver:80 in flux-system",
                "GitRepository flux-system/podinfo: https://gitlab.example.com/team/podinfo.git (branch main)",
                &format!("✓   Receiver flux-system/gitlab-receiver (gitlab, ready, {path}): token in the entry matches"),
                "✓ the webhook receiver answers through the service proxy",
            ] {
                assert!(stdout.contains(expected), "{name}: missing {expected:?} in\n{stdout}");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn cluster_check_names_each_missing_permission_and_a_stale_token_with_the_fix() {
    if !netns::enter("cluster_check_names_each_missing_permission_and_a_stale_token_with_the_fix") {
        return;
    }
    runtime().block_on(async {
        let (env, receiver, _path) = cluster().await;
        let dir = temp_dir("check");
        write_entry(&dir, &json!({
            "name": "nobody", "server": env.server(), "ca": env.ca_pem(),
            "auth": {"token": env.nobody_token()},
        }));
        write_entry(&dir, &json!({
            "name": "stale", "server": env.server(), "ca": env.ca_pem(),
            "auth": {"token": env.dispatcher_token()},
            "trigger": {"receiver_tokens": {"flux-system/gitlab-receiver": "an-old-token"}},
        }));

        let checked = fluxrelay(&["cluster", "check", "nobody", "--dir", dir.to_str().unwrap()]);
        let (stdout, stderr) = text(&checked);
        assert_eq!(checked.status.code(), Some(1), "{stdout}\n{stderr}");
        assert!(stderr.contains("some checks failed"), "{stderr}");
        for expected in [
            "✗ may not list gitrepositories.source.toolkit.fluxcd.io in flux-system",
            "fix: add the rule {apiGroups: [\"source.toolkit.fluxcd.io\"], resources: [\"gitrepositories\"], verbs: [\"list\"]} in namespace flux-system",
            "✗ may not list receivers.notification.toolkit.fluxcd.io in flux-system",
            "✗ may not create services/proxy http:webhook-receiver:80 in flux-system",
            "resourceNames: [\"http:webhook-receiver:80\"], verbs: [\"create\"]",
            "✗ probe the webhook receiver: the apiserver answered 403",
        ] {
            assert!(stdout.contains(expected), "missing {expected:?} in\n{stdout}");
        }

        let checked = fluxrelay(&["cluster", "check", "stale", "--dir", dir.to_str().unwrap()]);
        let (stdout, _) = text(&checked);
        assert_eq!(checked.status.code(), Some(1), "{stdout}");
        // Dispatch's reason, word for word: check and dispatch share the rule.
        assert!(stdout.contains("✗   Receiver flux-system/gitlab-receiver (gitlab, ready, /hook/"), "{stdout}");
        assert!(stdout.contains("trigger.receiver_tokens[\"flux-system/gitlab-receiver\"] does not produce the Receiver's webhook path: the Receiver's secret token changed; update the registry entry"), "{stdout}");
        assert!(!stdout.contains("an-old-token") && !stdout.contains(RECEIVER_TOKEN), "{stdout}");

        // An absolute receiver URL with a base path: the probe goes under the base path,
        // where dispatch sends webhooks (a relative join once dropped `/flux`). Over plain
        // http, the gitlab Receiver fails as dispatch would fail it.
        write_entry(&dir, &json!({
            "name": "ingress", "server": env.server(), "ca": env.ca_pem(),
            "auth": {"token": env.dispatcher_token()},
            "trigger": {"webhook_receiver_url": format!("http://{}/flux", receiver.local_addr()),
                        "receiver_tokens": {"flux-system/gitlab-receiver": RECEIVER_TOKEN}},
        }));
        receiver.clear();
        let checked = fluxrelay(&["cluster", "check", "ingress", "--dir", dir.to_str().unwrap()]);
        let (stdout, _) = text(&checked);
        assert_eq!(checked.status.code(), Some(1), "{stdout}");
        let probed: Vec<String> = receiver.hits().into_iter().map(|hit| hit.request_uri).collect();
        assert_eq!(probed, ["/flux/hook/fluxrelay-check"], "{stdout}");
        assert!(stdout.contains(&format!("✓ the webhook receiver answers through http://{}/flux (HTTP 404 for a probe path)", receiver.local_addr())), "{stdout}");
        assert!(stdout.contains("Receiver flux-system/gitlab-receiver is of type gitlab, whose token is sent as it is, and trigger.webhook_receiver_url is not https"), "{stdout}");
        assert!(!stdout.contains("services/proxy"), "no proxy permission for an absolute URL: {stdout}");

        let missing = fluxrelay(&["cluster", "check", "absent", "--dir", dir.to_str().unwrap()]);
        assert_eq!(missing.status.code(), Some(1));
        assert!(text(&missing).1.contains("no cluster named absent"), "{}", text(&missing).1);
        let _ = std::fs::remove_dir_all(&dir);
    });
}
