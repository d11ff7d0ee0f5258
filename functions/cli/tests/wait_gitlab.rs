//! `fluxrelay wait` against the GitLab API stand-in: it reads the commit's statuses, shows
//! progress per cluster, exits 0 when every matching cluster succeeded, 1 with a table
//! naming the cluster when one failed, 3 when the timeout passes first, and waits out a
//! 429's Retry-After.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use fluxrelay_testkit::gitlab::GitLabStandIn;
use tokio::process::Command;

const TOKEN: &str = "glpat-wait-test-token";
const SHA: &str = "1eabc9a41ca088515cab83f1cce49eb43e84b67f";

async fn gitlab() -> GitLabStandIn {
    let gitlab = GitLabStandIn::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    gitlab.add_token(TOKEN, 1, &["api"]);
    gitlab.add_token("glpat-reader", 2, &["read_api"]);
    gitlab.add_project(15, "mike/diaspora");
    gitlab.commit(15, "main", SHA, None, &[("a", Some("1"))]);
    gitlab
}

async fn post(gitlab: &GitLabStandIn, name: &str, state: &str, description: &str) {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("state", state),
            ("name", name),
            ("ref", "main"),
            ("description", description),
        ])
        .finish();
    let status = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{}/projects/15/statuses/{SHA}", gitlab.api_url()))
        .header("PRIVATE-TOKEN", TOKEN)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "{status}");
}

struct Finished {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

async fn wait(gitlab: &GitLabStandIn, args: &[&str]) -> Finished {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_fluxrelay"))
        .args([
            "wait",
            "--project",
            "mike/diaspora",
            "--sha",
            SHA,
            "--poll",
            "1s",
        ])
        .args(["--gitlab-url", &gitlab.api_url()])
        .args(args)
        .env("FLUXRELAY_GITLAB_TOKEN", "glpat-reader")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    Finished {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        took: started.elapsed(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_every_cluster_then_exits_zero() {
    let gitlab = gitlab().await;
    post(&gitlab, "fluxrelay/prod-a", "running", "source has it").await;
    post(&gitlab, "fluxrelay/prod-b", "pending", "").await;
    post(&gitlab, "build", "failed", "not ours").await;
    let later = {
        async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            post(&gitlab, "fluxrelay/prod-a", "success", "1eabc9a4 applied").await;
            post(&gitlab, "fluxrelay/prod-b", "success", "1eabc9a4 applied").await;
        }
    };
    let (finished, ()) = tokio::join!(wait(&gitlab, &["--cluster", "prod-*"]), later);
    assert_eq!(finished.code, 0, "{}\n{}", finished.stdout, finished.stderr);
    assert!(
        finished
            .stdout
            .contains("prod-a\tsuccess\t1eabc9a4 applied"),
        "{}",
        finished.stdout
    );
    assert!(
        finished.stderr.contains("prod-b: pending"),
        "progress per cluster: {}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains("prod-b: success"),
        "{}",
        finished.stderr
    );
    assert!(!finished.stdout.contains("build"), "not a fluxrelay status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_cluster_exits_non_zero_with_a_table_naming_it() {
    let gitlab = gitlab().await;
    post(&gitlab, "fluxrelay/prod-a", "success", "1eabc9a4 applied").await;
    post(
        &gitlab,
        "fluxrelay/prod-b",
        "failed",
        "kustomize build failed: boom",
    )
    .await;
    let finished = wait(&gitlab, &[]).await;
    assert_eq!(finished.code, 1, "{}\n{}", finished.stdout, finished.stderr);
    assert!(
        finished
            .stdout
            .contains("prod-b\tfailed\tkustomize build failed: boom"),
        "{}",
        finished.stdout
    );
    assert!(finished.stdout.starts_with("CLUSTER\tSTATE\tDESCRIPTION"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_cluster_without_a_status_is_waited_for_until_the_timeout() {
    let gitlab = gitlab().await;
    post(&gitlab, "fluxrelay/prod-a", "success", "applied").await;
    let finished = wait(
        &gitlab,
        &[
            "--cluster",
            "prod-a",
            "--cluster",
            "prod-c",
            "--timeout",
            "3s",
        ],
    )
    .await;
    assert_eq!(finished.code, 3, "{}\n{}", finished.stdout, finished.stderr);
    assert!(
        finished.stdout.contains("prod-c\tmissing"),
        "{}",
        finished.stdout
    );
    assert!(finished.took >= Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_waited_out_and_a_bad_token_fails_at_once() {
    let gitlab = gitlab().await;
    post(&gitlab, "fluxrelay/prod-a", "success", "applied").await;
    gitlab.throttle_next(1, 2);
    let finished = wait(&gitlab, &[]).await;
    assert_eq!(finished.code, 0, "{}\n{}", finished.stdout, finished.stderr);
    assert!(finished.stderr.contains("429"), "{}", finished.stderr);
    assert!(
        finished.took >= Duration::from_secs(2),
        "Retry-After honoured: {:?}",
        finished.took
    );
    let output = Command::new(env!("CARGO_BIN_EXE_fluxrelay"))
        .args([
            "wait",
            "--project",
            "15",
            "--sha",
            SHA,
            "--gitlab-url",
            &gitlab.api_url(),
        ])
        .env("FLUXRELAY_GITLAB_TOKEN", "glpat-not-a-token")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("401"), "{stderr}");
    assert!(
        !stderr.contains("glpat-not-a-token"),
        "the token is never printed"
    );
}
