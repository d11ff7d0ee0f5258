//! `fluxrelay serve --kubeconfig PATH [--context NAME]`: one cluster registered straight from
//! a kubeconfig context, and a wrong context refused before listening.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use std::time::Duration;

use common::{
    Cluster, DIASPORA_URL, Metrics, NAMESPACE, Serve, TempDir, payload, post, run_fluxrelay,
    write_config,
};
use fluxrelay_testkit::netns;
use serde_json::json;

/// kube-up.sh's admin kubeconfig context, as a registry name (`@` is not allowed).
const CLUSTER_FROM_CONTEXT: &str = "admin-testenv";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_from_a_kubeconfig_context_gets_every_push() {
    if !netns::enter("a_cluster_from_a_kubeconfig_context_gets_every_push") {
        return;
    }
    let cluster = Cluster::start().await;
    cluster
        .git_repository("diaspora", DIASPORA_URL, json!({"branch": "master"}))
        .await;
    // A generic Receiver needs no token, so a kubeconfig alone is enough.
    cluster
        .flux_receiver(
            "diaspora",
            "generic",
            "generic-receiver-token",
            &[],
            "diaspora",
        )
        .await;
    let dir = TempDir::new("serve-kubeconfig");
    let config = write_config(dir.path(), &[], "");
    let kubeconfig = cluster.kube.dir().join("admin.kubeconfig");
    let kubeconfig = kubeconfig.to_str().unwrap();

    let (status, _, stderr) = run_fluxrelay(
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--kubeconfig",
            kubeconfig,
            "--context",
            "nope",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains(&format!("{kubeconfig}: contexts: has no context \"nope\"")),
        "{stderr}"
    );

    let serve = Serve::start(&config, &["--kubeconfig", kubeconfig]).await;
    let listening = serve
        .log_lines()
        .into_iter()
        .find(|line| line["message"] == "listening")
        .unwrap();
    assert_eq!(listening["clusters"], 1, "{listening}");
    let (status, answer) = post(&serve, "Push Hook", &payload("push-hook.json")).await;
    assert_eq!(status, 202, "{answer}");

    eventually!(
        Duration::from_secs(20),
        "the push reaches the Receiver of the kubeconfig's cluster",
        !cluster.receiver.accepted(NAMESPACE, "diaspora").is_empty()
    );
    let delivered = [("cluster", CLUSTER_FROM_CONTEXT), ("outcome", "delivered")];
    eventually!(
        Duration::from_secs(10),
        "it is counted for the cluster named after the context",
        Metrics::scrape(&serve)
            .await
            .get("fluxrelay_dispatches_total", &delivered)
            == Some(1.0)
    );
    drop(serve);

    // The same cluster from a kubeconfig that names its CA, client certificate and key as
    // files beside it (minikube's and kubeadm's way), relative to the kubeconfig: read in
    // when serve starts, so the entry holds them inline and every push still gets there.
    let files = TempDir::new("serve-kubeconfig-files");
    std::fs::create_dir_all(files.path().join("pki")).unwrap();
    for name in ["ca.crt", "admin.crt", "admin.key"] {
        std::fs::copy(
            cluster.kube.dir().join(name),
            files.path().join("pki").join(name),
        )
        .unwrap();
    }
    let by_files = files.path().join("kubeconfig");
    std::fs::write(
        &by_files,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: files\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: pki/ca.crt\nusers:\n- name: admin\n  user:\n    client-certificate: pki/admin.crt\n    client-key: pki/admin.key\ncontexts:\n- name: files\n  context: {{cluster: c, user: admin}}\n",
            cluster.kube.server()
        ),
    )
    .unwrap();
    let config = write_config(files.path(), &[], "");
    let serve = Serve::start(&config, &["--kubeconfig", by_files.to_str().unwrap()]).await;
    let (status, answer) = post(&serve, "Push Hook", &payload("push-hook.json")).await;
    assert_eq!(status, 202, "{answer}");
    let delivered = [("cluster", "files"), ("outcome", "delivered")];
    eventually!(
        Duration::from_secs(20),
        "the push reaches the Receiver through the kubeconfig's files",
        Metrics::scrape(&serve)
            .await
            .get("fluxrelay_dispatches_total", &delivered)
            == Some(1.0)
    );
}
