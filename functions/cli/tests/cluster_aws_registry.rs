//! `fluxrelay cluster add|list|migrate --store secretsmanager` as a process, against a real
//! moto server: the registry index in S3, a secret only for an entry that holds one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};

use fluxrelay_testkit::moto::Moto;
use serde_json::{Value, json};

const TOKEN: &str = "kube-token-SECRET-cli";
const CA_B64: &str =
    "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=";

fn fluxrelay(moto: &Moto, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fluxrelay"))
        .args(args)
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("FLUXRELAY_S3_PATH_STYLE", "1")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap()
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "status {:?}, stdout: {}, stderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

async fn index_text(moto: &Moto) -> String {
    let object = moto
        .s3()
        .await
        .get_object()
        .bucket("registry")
        .key("clusters.json")
        .send()
        .await
        .unwrap();
    String::from_utf8(object.body.collect().await.unwrap().to_vec()).unwrap()
}

async fn secret_names(moto: &Moto) -> Vec<String> {
    let mut names: Vec<String> = moto
        .secrets()
        .await
        .list_secrets()
        .send()
        .await
        .unwrap()
        .secret_list()
        .iter()
        .filter_map(|s| s.name().map(str::to_string))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn add_writes_a_secret_and_a_pointer_and_list_shows_the_index_subscriptions() {
    let moto = Moto::start();
    moto.create_bucket("registry").await;
    let dir = std::env::temp_dir().join(format!("fluxrelay-cli-aws-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("config");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: prod\nclusters:\n- name: prod\n  cluster:\n    server: https://prod.example.com:6443\n    certificate-authority-data: {CA_B64}\ncontexts:\n- name: prod\n  context: {{cluster: prod, user: prod}}\nusers:\n- name: prod\n  user: {{token: {TOKEN}}}\n"
        ),
    )
    .unwrap();
    let kubeconfig = kubeconfig.to_str().unwrap();

    let added = ok(&fluxrelay(
        &moto,
        &[
            "cluster",
            "add",
            "prod",
            "--kubeconfig",
            kubeconfig,
            // No cluster behind this kubeconfig: store its token (the storage is what is
            // tested here; cluster_kube.rs tests the identity cluster add makes).
            "--operator-credentials",
            "--no-receiver-tokens",
            "--project",
            "platform/**",
            "--store",
            "secretsmanager",
            "--bucket",
            "registry",
        ],
    ));
    assert!(
        added.contains("Secrets Manager secret fluxrelay/clusters/prod"),
        "{added}"
    );
    assert!(!added.contains(TOKEN), "{added}");
    assert_eq!(secret_names(&moto).await, ["fluxrelay/clusters/prod"]);
    let index: Value = serde_json::from_str(&index_text(&moto).await).unwrap();
    assert_eq!(
        index,
        json!({"clusters": [{"name": "prod", "secret": true, "subscriptions": [{"projects": ["platform/**"]}]}]})
    );

    let listed = ok(&fluxrelay(
        &moto,
        &[
            "cluster",
            "list",
            "--store",
            "secretsmanager",
            "--bucket",
            "registry",
        ],
    ));
    let row = listed.lines().nth(1).unwrap_or_default().to_string();
    assert!(
        row.starts_with("prod\thttps://prod.example.com:6443/\ttoken\t"),
        "{listed}"
    );
    assert!(row.ends_with("\t1\tvalid"), "{listed}");

    let again = fluxrelay(
        &moto,
        &[
            "cluster",
            "add",
            "prod",
            "--kubeconfig",
            kubeconfig,
            // No cluster behind this kubeconfig: store its token (the storage is what is
            // tested here; cluster_kube.rs tests the identity cluster add makes).
            "--operator-credentials",
            "--no-receiver-tokens",
            "--store",
            "secretsmanager",
            "--bucket",
            "registry",
        ],
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    let no_bucket = fluxrelay(&moto, &["cluster", "list", "--store", "secretsmanager"]);
    assert!(!no_bucket.status.success());
    assert!(String::from_utf8_lossy(&no_bucket.stderr).contains("--bucket"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn migrate_builds_the_index_from_one_secret_per_cluster_and_keeps_every_secret() {
    let moto = Moto::start();
    moto.create_bucket("registry").await;
    let secrets = moto.secrets().await;
    let v1 = [
        // The secret name differs from the cluster name, as the old layout allowed.
        (
            "fluxrelay/clusters/eu-west-1",
            json!({"name": "prod", "server": "https://prod.example.com",
            "auth": {"token": TOKEN}, "subscriptions": [{"refs": ["main"]}]}),
        ),
        (
            "fluxrelay/clusters/eks-1",
            json!({"name": "eks-1", "server": "https://ABC.gr7.eu-west-1.eks.amazonaws.com",
            "auth": {"eks": {"cluster": "eks-1", "region": "eu-west-1"}}}),
        ),
        ("fluxrelay/clusters/broken", json!("not an entry")),
    ];
    for (name, value) in &v1 {
        secrets
            .create_secret()
            .name(*name)
            .secret_string(value.to_string())
            .send()
            .await
            .unwrap();
    }
    let args = [
        "cluster",
        "migrate",
        "--store",
        "secretsmanager",
        "--bucket",
        "registry",
    ];

    let plan = ok(&fluxrelay(&moto, &args));
    assert!(plan.contains("prod: index item pointing at fluxrelay/clusters/prod, a copy of fluxrelay/clusters/eu-west-1"), "{plan}");
    assert!(plan.contains("eks-1: whole entry in the index"), "{plan}");
    assert!(
        plan.contains("fluxrelay/clusters/broken: skipped"),
        "{plan}"
    );
    assert!(plan.contains("nothing written"), "{plan}");
    assert!(!plan.contains(TOKEN), "{plan}");
    assert!(
        moto.s3()
            .await
            .get_object()
            .bucket("registry")
            .key("clusters.json")
            .send()
            .await
            .is_err(),
        "a plan writes nothing"
    );

    let applied = ok(&fluxrelay(&moto, &[&args[..], &["--apply"]].concat()));
    assert!(applied.contains("wrote 2 cluster(s)"), "{applied}");
    assert_eq!(
        secret_names(&moto).await,
        [
            "fluxrelay/clusters/broken",
            "fluxrelay/clusters/eks-1",
            "fluxrelay/clusters/eu-west-1",
            "fluxrelay/clusters/prod"
        ],
        "every secret kept; prod copied to its name"
    );
    let index = index_text(&moto).await;
    assert!(!index.contains(TOKEN), "{index}");
    let listed = ok(&fluxrelay(
        &moto,
        &[
            "cluster",
            "list",
            "--store",
            "secretsmanager",
            "--bucket",
            "registry",
        ],
    ));
    let rows: Vec<&str> = listed.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{listed}");
    assert!(
        rows[0].starts_with("eks-1\thttps://abc.gr7.eu-west-1.eks.amazonaws.com/\teks\t"),
        "{listed}"
    );
    assert!(
        rows[1].starts_with("prod\thttps://prod.example.com/\ttoken\t"),
        "{listed}"
    );
    assert!(rows.iter().all(|row| row.ends_with("valid")), "{listed}");
}
