//! `fluxrelay cluster check` with artifact kinds, as a process against a real kube-apiserver
//! (inside a private network namespace): it asks for exactly the rules the entry's
//! `trigger.artifact_kinds` need, names each missing one with its fix, and lists each object
//! with what it follows, by dispatch's own rules.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use fluxrelay_testkit::kube_env::KubeEnv;
use fluxrelay_testkit::netns;
use fluxrelay_testkit::receiver::FluxReceiverEmulator;
use serde_json::json;

const RBAC: &str = include_str!("../../../infra/rbac.yaml");
const RBAC_ARTIFACTS: &str = include_str!("../../../infra/rbac-artifacts.yaml");

fn check(dir: &std::path::Path) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_fluxrelay"))
        .args([
            "cluster",
            "check",
            "artifacts",
            "--dir",
            dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    (
        output.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[test]
fn cluster_check_asks_for_the_artifact_kinds_rules_and_describes_each_source() {
    if !netns::enter("cluster_check_asks_for_the_artifact_kinds_rules_and_describes_each_source") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let env = KubeEnv::start().await;
        env.apply(RBAC).await;
        let _receiver = FluxReceiverEmulator::start("192.0.2.10:9292".parse().unwrap())
            .await
            .unwrap();
        env.apply(
            "
apiVersion: source.toolkit.fluxcd.io/v1
kind: OCIRepository
metadata: {name: manifests, namespace: flux-system}
spec: {url: 'oci://registry.example.com/team/app/manifests', ref: {semver: '>=1.0.0'}, interval: 1h}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: OCIRepository
metadata: {name: pinned, namespace: flux-system}
spec: {url: 'oci://registry.example.com/team/app', ref: {digest: 'sha256:5555555555555555555555555555555555555555555555555555555555555555'}, interval: 1h}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {name: app, namespace: flux-system}
spec: {image: registry.example.com/team/app, interval: 1h}
",
        )
        .await;
        let dir = std::env::temp_dir().join(format!("fluxrelay-check-artifacts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("artifacts.json"),
            json!({
                "name": "artifacts", "server": env.server(), "ca": env.ca_pem(),
                "auth": {"token": env.dispatcher_token()},
                "trigger": {"artifact_kinds": ["OCIRepository", "ImageRepository"]}
            })
            .to_string(),
        )
        .unwrap();

        // Only infra/rbac.yaml: each artifact kind's list is missing, with its rule.
        let (code, out) = check(&dir);
        assert_eq!(code, Some(1), "{out}");
        for expected in [
            "✗ may not list ocirepositories.source.toolkit.fluxcd.io in flux-system",
            "fix: add the rule {apiGroups: [\"source.toolkit.fluxcd.io\"], resources: [\"ocirepositories\"], verbs: [\"list\"]} in namespace flux-system",
            "✗ may not list imagerepositories.image.toolkit.fluxcd.io in flux-system",
            "✗ list OCIRepository objects in flux-system",
        ] {
            assert!(out.contains(expected), "missing {expected:?} in\n{out}");
        }
        // Kinds the entry does not name are not asked for.
        assert!(!out.contains("helmcharts") && !out.contains("patch ocirepositories"), "{out}");

        // With infra/rbac-artifacts.yaml: the kinds are listed and each object described;
        // in receiver mode, a source no Receiver lists is a note, not a failure.
        env.apply(RBAC_ARTIFACTS).await;
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let (code, out) = check(&dir);
        assert_eq!(code, Some(0), "{out}");
        for expected in [
            "✓ may list ocirepositories.source.toolkit.fluxcd.io in flux-system",
            "✓ 2 OCIRepository objects in flux-system",
            "OCIRepository flux-system/manifests: oci://registry.example.com/team/app/manifests (semver >=1.0.0): no Receiver lists it (add kind OCIRepository to a Receiver's resources",
            "OCIRepository flux-system/pinned: oci://registry.example.com/team/app (a pinned digest, so it is never triggered)",
            "✓ 1 ImageRepository objects in flux-system",
            "ImageRepository flux-system/app: registry.example.com/team/app",
        ] {
            assert!(out.contains(expected), "missing {expected:?} in\n{out}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    });
}
