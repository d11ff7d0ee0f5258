//! The Flux controller stand-in writes, against the real kube-apiserver, what
//! notification-, source- and kustomize-controller write (docs/reference/flux.md §1, §3,
//! §6), in their order: a Receiver hit annotates its GitRepositories; a new requestedAt is
//! fetched (the remote's head) and recorded as handled; a new revision is applied by each
//! Kustomization of the source — or fails to build, or never applies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fluxrelay_testkit::flux_controller::{
    Behaviour, FluxControllerStandIn, GitRemote, kustomization_manifest,
};
use fluxrelay_testkit::kube_env::KubeEnv;
use fluxrelay_testkit::netns;
use fluxrelay_testkit::receiver::{FluxReceiverEmulator, ReceiverSpec};
use serde_json::{Value, json};

const URL: &str = "https://gitlab.example.com/mike/diaspora.git";
const A: &str = "1eabc9a41ca088515cab83f1cce49eb43e84b67f";
const B: &str = "9c41e7aa00112233445566778899aabbccddeeff";

async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "not within 20 s: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get(kube: &KubeEnv, plural: &str, name: &str) -> Value {
    let api_version = match plural {
        "gitrepositories" => "source.toolkit.fluxcd.io/v1",
        _ => "kustomize.toolkit.fluxcd.io/v1",
    };
    kube.get_json(api_version, plural, "flux-system", name)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stand_in_fetches_applies_fails_and_moves_on_as_flux_does() {
    if !netns::enter("the_stand_in_fetches_applies_fails_and_moves_on_as_flux_does") {
        return;
    }
    let kube = KubeEnv::start().await;
    let receiver = FluxReceiverEmulator::start("192.0.2.10:9292".parse().unwrap())
        .await
        .unwrap();
    let path = receiver.upsert(ReceiverSpec {
        namespace: "flux-system".into(),
        name: "r".into(),
        receiver_type: "generic".into(),
        token: "t".into(),
        events: Vec::new(),
        suspended: false,
        ready: true,
    });
    kube.apply(
        &json!({
            "apiVersion": "notification.toolkit.fluxcd.io/v1", "kind": "Receiver",
            "metadata": {"name": "r", "namespace": "flux-system"},
            "spec": {"type": "generic", "secretRef": {"name": "t"},
                     "resources": [{"kind": "GitRepository", "name": "app"}]}
        })
        .to_string(),
    )
    .await;
    kube.apply(
        &json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": "app", "namespace": "flux-system"},
            "spec": {"interval": "10m", "url": URL, "ref": {"branch": "main"}}
        })
        .to_string(),
    )
    .await;
    kube.apply(&kustomization_manifest("flux-system", "apps", "app"))
        .await;

    let remote = GitRemote::default();
    remote.set(URL, "refs/heads/main", A);
    let controller = FluxControllerStandIn::start(
        kube.admin(),
        Some(&receiver),
        remote.clone(),
        vec!["flux-system".into()],
        Behaviour {
            fetch_delay: Duration::from_millis(200),
            apply_delay: Duration::from_millis(200),
            ..Behaviour::default()
        },
    );
    // A new object is reconciled (generation 1, nothing observed yet), and applied.
    until("the first artifact and apply", async || {
        get(&kube, "kustomizations", "apps").await["status"]["lastAppliedRevision"]
            == format!("main@sha1:{A}")
    })
    .await;
    let source = get(&kube, "gitrepositories", "app").await;
    assert_eq!(
        source["status"]["artifact"]["revision"],
        format!("main@sha1:{A}")
    );
    assert_eq!(source["status"]["observedGeneration"], 1);
    assert_eq!(source["status"]["conditions"][0]["type"], "Ready");
    let applied = get(&kube, "kustomizations", "apps").await;
    assert_eq!(
        applied["status"]["conditions"][0]["reason"],
        "ReconciliationSucceeded"
    );
    assert_eq!(
        applied["status"]["conditions"][0]["message"],
        format!("Applied revision: main@sha1:{A}")
    );
    assert_eq!(applied["status"]["observedGeneration"], 1);

    // A Receiver hit annotates the GitRepository; the fetch finds B and records the token.
    remote.set(URL, "main", B);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let answer = client
        .post(format!("http://192.0.2.10:9292{path}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    until("the hit is fetched", async || {
        get(&kube, "gitrepositories", "app").await["status"]["artifact"]["revision"]
            == format!("main@sha1:{B}")
    })
    .await;
    let source = get(&kube, "gitrepositories", "app").await;
    let token = source["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        token.ends_with(" +0000 UTC"),
        "Go's time format, as notification-controller writes it: {token}"
    );
    assert_eq!(source["status"]["lastHandledReconcileAt"], token.as_str());
    until("B applied", async || {
        get(&kube, "kustomizations", "apps").await["status"]["lastAppliedRevision"]
            == format!("main@sha1:{B}")
    })
    .await;

    // A build that fails for a commit: Ready=False BuildFailed, lastAttemptedRevision set.
    let c = "c0ffee00112233445566778899aabbccddeeff00";
    controller.set_behaviour(
        "flux-system",
        Behaviour {
            fail_build: BTreeMap::from([(
                c.to_string(),
                "kustomize build failed: boom".to_string(),
            )]),
            ..Behaviour::default()
        },
    );
    remote.set(URL, "main", c);
    client
        .post(format!("http://192.0.2.10:9292{path}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    until("the failed build", async || {
        get(&kube, "kustomizations", "apps").await["status"]["conditions"][0]["reason"]
            == "BuildFailed"
    })
    .await;
    let failed = get(&kube, "kustomizations", "apps").await;
    assert_eq!(
        failed["status"]["lastAttemptedRevision"],
        format!("main@sha1:{c}")
    );
    assert_eq!(
        failed["status"]["lastAppliedRevision"],
        format!("main@sha1:{B}"),
        "unchanged"
    );
    assert_eq!(
        failed["status"]["conditions"][0]["message"],
        "kustomize build failed: boom"
    );

    // Never applying: stuck Progressing at the new revision.
    controller.set_behaviour(
        "flux-system",
        Behaviour {
            never_apply: true,
            ..Behaviour::default()
        },
    );
    remote.set(URL, "main", A);
    client
        .post(format!("http://192.0.2.10:9292{path}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    until("progressing at A", async || {
        get(&kube, "kustomizations", "apps").await["status"]["lastAttemptedRevision"]
            == format!("main@sha1:{A}")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stuck = get(&kube, "kustomizations", "apps").await;
    assert_eq!(stuck["status"]["conditions"][0]["reason"], "Progressing");
    assert_ne!(
        stuck["status"]["lastAppliedRevision"],
        format!("main@sha1:{A}")
    );
    assert_eq!(
        controller.applied().len(),
        2,
        "A and B, not the failure nor the stuck one"
    );
    assert!(controller.errors().is_empty(), "{:?}", controller.errors());
}
