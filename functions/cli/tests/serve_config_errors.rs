//! A broken configuration stops `fluxrelay serve` before it listens: exit status 78 and
//! one line per problem naming the file, the field and what is wrong, never a secret.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{Serve, TempDir, listening, run_fluxrelay};

const WEBHOOK_SECRET: &str = "webhook-secret-never-printed-5b2f";
const FILE_SECRET: &str = "file-secret-never-printed-81ac";
const CLUSTER_SECRET: &str = "cluster-secret-never-printed-c07d";
const UNSET_ENV: &str = "FLUXRELAY_SERVE_TEST_UNSET_TOKEN";
const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

struct Case {
    name: &'static str,
    /// The config file's text, after the `listen` and `data_dir` lines.
    config: String,
    /// Extra files in the config's directory: (name, content).
    files: Vec<(&'static str, String)>,
    /// The file the problem is reported in (relative to the directory).
    file: &'static str,
    /// The field path, or "" for the file as a whole.
    field: &'static str,
    /// What the message must say.
    says: Vec<String>,
}

fn good_webhook() -> String {
    format!("[webhook]\ntokens = [\"{WEBHOOK_SECRET}\"]\ntoken_files = [\"token.txt\"]\n")
}

fn cluster_json(name: &str, server: &str) -> String {
    serde_json::json!({
        "name": name,
        "server": server,
        "ca": CA,
        "auth": {"token": CLUSTER_SECRET},
    })
    .to_string()
}

fn cases(dir: &Path) -> Vec<Case> {
    let webhook = good_webhook();
    vec![
        Case {
            name: "TOML syntax error",
            config: format!(
                "[webhook]\nmax_body_bytes = = 4096\ntokens = [\"{WEBHOOK_SECRET}\"]\n"
            ),
            files: vec![],
            file: "fluxrelay.toml",
            field: "",
            // Lines 1-2 are listen and data_dir; the second `=` is at column 18 of line 4.
            says: vec!["not valid TOML (line 4, column 18)".into()],
        },
        Case {
            name: "unknown top-level field",
            config: format!("listne = \"127.0.0.1:1\"\n{webhook}"),
            files: vec![],
            file: "fluxrelay.toml",
            field: "listne",
            says: vec!["unknown field".into()],
        },
        Case {
            name: "bad listen",
            config: webhook.clone(),
            files: vec![],
            file: "fluxrelay.toml",
            field: "listen",
            says: vec!["\"127.0.0.1:99999\" is not an IP address and port".into()],
        },
        Case {
            name: "webhook with no token",
            config: "[webhook]\nmax_body_bytes = 4096\n".into(),
            files: vec![],
            file: "fluxrelay.toml",
            field: "webhook",
            says: vec!["no accepted token and no signing key configured".into()],
        },
        Case {
            name: "token env var not set",
            config: format!("{webhook}token_env = [\"{UNSET_ENV}\"]\n"),
            files: vec![],
            file: "fluxrelay.toml",
            field: "webhook.token_env[0]",
            says: vec![format!("environment variable {UNSET_ENV} is not set")],
        },
        Case {
            name: "cluster entry with a bad field",
            config: format!(
                "{webhook}\n[[clusters]]\nname = \"prod\"\nserver = \"http://127.0.0.1:6443\"\nauth = {{ token = \"{CLUSTER_SECRET}\" }}\n"
            ),
            files: vec![],
            file: "fluxrelay.toml",
            field: "clusters[0].server",
            says: vec!["must use https".into()],
        },
        Case {
            name: "missing cluster file",
            config: format!("cluster_files = [\"clusters/missing.json\"]\n{webhook}"),
            files: vec![],
            file: "fluxrelay.toml",
            field: "cluster_files[0]",
            says: vec![
                format!(
                    "cannot read {}",
                    dir.join("clusters/missing.json").display()
                ),
                "No such file or directory".into(),
            ],
        },
        Case {
            name: "duplicate cluster name",
            config: format!("cluster_files = [\"a.json\", \"b.json\"]\n{webhook}"),
            files: vec![
                ("a.json", cluster_json("prod", "https://127.0.0.1:6443")),
                ("b.json", cluster_json("prod", "https://127.0.0.2:6443")),
            ],
            // The field path is the one inside the file named: b.json has `name`, not
            // the config file's `cluster_files[1]`.
            file: "b.json",
            field: "name",
            says: vec![format!(
                "cluster \"prod\" is already defined in {}",
                dir.join("a.json").display()
            )],
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_fails_before_listening_with_status_78_and_says_where_and_what() {
    let dir = TempDir::new("serve-config");
    let config = dir.path().join("fluxrelay.toml");
    std::fs::write(dir.path().join("token.txt"), format!("{FILE_SECRET}\n")).unwrap();

    // A good configuration first, so each broken one is a restart on the same data dir.
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n{}",
            good_webhook()
        ),
    )
    .unwrap();
    let mut serve = Serve::start(&config, &[]).await;
    let addr: SocketAddr = serve.addr;
    let (status, _) = serve.terminate(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", serve.log_text());
    assert!(!listening(addr));

    let mut failures = Vec::new();
    for case in cases(dir.path()) {
        let listen = if case.name == "bad listen" {
            "127.0.0.1:99999".to_string()
        } else {
            addr.to_string()
        };
        std::fs::write(
            &config,
            format!(
                "listen = \"{listen}\"\ndata_dir = \"data\"\n{}",
                case.config
            ),
        )
        .unwrap();
        for (name, content) in &case.files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let config_arg = config.to_string_lossy().into_owned();
        let (status, _, stderr) = run_fluxrelay(
            &["serve", "--config", &config_arg, "--log-format", "json"],
            Duration::from_secs(10),
        );
        let file = dir.path().join(case.file);
        let expected_start = if case.field.is_empty() {
            format!("  {}: ", file.display())
        } else {
            format!("  {}: {}: ", file.display(), case.field)
        };
        let mut wrong = Vec::new();
        if status.code() != Some(78) {
            wrong.push(format!("exit status {status}, expected 78"));
        }
        if stderr.lines().next() != Some("fluxrelay: configuration error:") {
            wrong.push("the first line is not `fluxrelay: configuration error:`".to_string());
        }
        let line = stderr
            .lines()
            .find(|line| line.starts_with(&expected_start));
        match line {
            None => wrong.push(format!("no line starting {expected_start:?}")),
            Some(line) => {
                for says in &case.says {
                    if !line.contains(says.as_str()) {
                        wrong.push(format!("the line does not say {says:?}"));
                    }
                }
            }
        }
        for secret in [WEBHOOK_SECRET, FILE_SECRET, CLUSTER_SECRET] {
            if stderr.contains(secret) {
                wrong.push(format!("a secret is printed: {secret}"));
            }
        }
        if stderr.contains("\"listening\"") || listening(addr) {
            wrong.push(format!("it listened on {addr}"));
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{}: {}\n--- stderr ---\n{stderr}",
                case.name,
                wrong.join("; ")
            ));
        }
        for (name, _) in &case.files {
            let _ = std::fs::remove_file(dir.path().join(name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the broken configurations were not reported as they should be:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );

    // And the good one still starts on the same data directory and port.
    std::fs::write(
        &config,
        format!(
            "listen = \"{addr}\"\ndata_dir = \"data\"\n{}",
            good_webhook()
        ),
    )
    .unwrap();
    let mut serve = Serve::start(&config, &[]).await;
    assert_eq!(serve.addr, addr);
    let (status, _) = serve.terminate(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0));
}

#[test]
fn bad_usage_exits_2() {
    let (status, _, stderr) = run_fluxrelay(
        &["serve", "--listen", "not-an-address"],
        Duration::from_secs(10),
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
}
