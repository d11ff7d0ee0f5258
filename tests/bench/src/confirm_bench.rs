//! The confirmation stage (issue 14), on `fluxrelay serve` over real parts: the release
//! binary, the real kube-apiserver with the Flux controller stand-in writing what Flux
//! writes, and the GitLab API stand-in receiving the statuses. Pushes one at a time to
//! `clusters` clusters:
//!
//! - overhead: from the moment the stand-in marks the Kustomization applied to the moment
//!   the GitLab stand-in records the `success` status (both this process's `Instant`);
//! - GitLab API calls per push per cluster (status posts and reads, on that commit);
//! - apiserver requests per confirmation per cluster (`/metrics`), and looks per
//!   confirmation (for the cost model).

use std::time::{Duration, Instant};

use fluxrelay_testkit::confirm_world::{
    BRANCH, GITLAB_TOKEN, PROJECT_ID, REPOSITORY_URL, commit, confirm_clusters, gitlab_with,
    push_hook,
};
use fluxrelay_testkit::flux_controller::{Behaviour, FluxControllerStandIn, GitRemote};

use crate::report::Report;
use crate::serve_bench::Setup;
use crate::serve_proc::{Scrape, ServeProcess};
use crate::stats::Samples;
use crate::{Scale, progress};

const SECTION: &str = "Confirmation (serve)";
const WEBHOOK_TOKEN: &str = "bench-confirm-webhook-token-7e2d";

/// What the cost model takes from this stage.
#[derive(Clone, Copy, Debug)]
pub struct ConfirmMeasured {
    pub looks_per_confirmation: f64,
    pub gitlab_calls_per_confirmation: f64,
    pub apiserver_requests_per_confirmation: f64,
}

pub async fn confirmation(setup: &Setup, scale: &Scale, report: &mut Report) -> ConfirmMeasured {
    let (pushes, clusters) = if scale.smoke { (3, 2) } else { (40, 2) };
    progress(format!(
        "confirmation: {pushes} pushes one at a time to {clusters} confirming clusters"
    ));
    let names: Vec<String> = (0..clusters).map(|i| format!("k{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let world = confirm_clusters(&setup.kube, &setup.receiver, &refs).await;
    let commits: Vec<String> = (0..=pushes as u64).map(|n| commit(1000 + n)).collect();
    let commit_refs: Vec<&str> = commits.iter().map(String::as_str).collect();
    let gitlab = gitlab_with(&commit_refs[..1]).await;
    let remote = GitRemote::default();
    remote.set(REPOSITORY_URL, BRANCH, &commits[0]);
    // Flux takes its time: a fetch, then an apply that takes a second (the overhead is
    // measured from the apply, whatever it took).
    let flux = FluxControllerStandIn::start(
        setup.kube.admin(),
        Some(&setup.receiver),
        remote.clone(),
        world.iter().map(|c| c.namespace.clone()).collect(),
        Behaviour {
            fetch_delay: Duration::from_millis(300),
            apply_delay: Duration::from_millis(1000),
            ..Behaviour::default()
        },
    );
    let dir = setup.dir.join("confirm");
    std::fs::create_dir_all(&dir).expect("confirm dir");
    let mut files = Vec::new();
    for cluster in &world {
        let file = format!("cluster-{}.json", cluster.name);
        std::fs::write(dir.join(&file), cluster.entry(&setup.kube).to_string()).expect("entry");
        files.push(format!("{file:?}"));
    }
    let config = dir.join("fluxrelay.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\ncluster_files = [{}]\n\n[webhook]\ntokens = [\"{WEBHOOK_TOKEN}\"]\n\n\
             [[gitlab]]\nurl = \"http://example.com\"\napi_url = \"{}\"\ntoken = \"{GITLAB_TOKEN}\"\n",
            files.join(", "),
            gitlab.api_url()
        ),
    )
    .expect("fluxrelay.toml");
    // The initial commit applied everywhere before timing.
    let initial = format!("{BRANCH}@sha1:{}", commits[0]);
    wait_for(
        "the initial commit applied",
        Duration::from_secs(60),
        || {
            world.iter().all(|c| {
                flux.applied()
                    .iter()
                    .any(|a| a.kustomization == c.kustomization() && a.revision == initial)
            })
        },
    )
    .await;
    let serve = ServeProcess::start(&config, &[]);
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let mut overheads = Vec::new();
    let mut totals = Vec::new();
    let mut calls = 0usize;
    for i in 1..=pushes {
        let (before, after) = (&commits[i - 1], &commits[i]);
        gitlab.commit(
            PROJECT_ID,
            BRANCH,
            after,
            None,
            &[("deploy/app.yaml", Some(after))],
        );
        remote.set(REPOSITORY_URL, BRANCH, after);
        let posted = Instant::now();
        let answer = client
            .post(serve.url("/webhook"))
            .header("content-type", "application/json")
            .header("x-gitlab-event", "Push Hook")
            .header("x-gitlab-token", WEBHOOK_TOKEN)
            .body(push_hook(before, after).to_string())
            .send()
            .await
            .expect("POST /webhook");
        assert_eq!(answer.status().as_u16(), 202, "push {i}");
        let revision = format!("{BRANCH}@sha1:{after}");
        wait_for("success on every cluster", Duration::from_secs(90), || {
            let current = gitlab.current(PROJECT_ID, after);
            world.iter().all(|c| {
                current
                    .get(&format!("fluxrelay/{}", c.name))
                    .is_some_and(|(state, _)| state == "success")
            })
        })
        .await;
        let statuses = gitlab.calls();
        for cluster in &world {
            let name = format!("fluxrelay/{}", cluster.name);
            let applied = flux
                .applied()
                .iter()
                .find(|a| a.kustomization == cluster.kustomization() && a.revision == revision)
                .map(|a| a.at)
                .expect("the stand-in applied it");
            let success = statuses
                .iter()
                .find(|c| {
                    c.path.contains(after.as_str())
                        && c.posted.as_ref() == Some(&(name.clone(), "success".to_string()))
                        && (200..300).contains(&c.status)
                })
                .map(|c| c.at)
                .expect("the success status");
            overheads.push(success.saturating_duration_since(applied));
            totals.push(success.saturating_duration_since(posted));
        }
        calls += statuses
            .iter()
            .filter(|c| c.path.contains(after.as_str()))
            .count();
    }
    let metrics = Scrape::get(&client, &serve).await;
    let confirmations = metrics.sum("fluxrelay_confirmations_total", &[]);
    let requests = metrics.sum("fluxrelay_confirm_apiserver_requests_total", &[]);
    drop(serve);
    drop(flux);
    let overhead = Samples::from_durations(&overheads);
    let total = Samples::from_durations(&totals);
    let confirmed = (pushes * clusters) as f64;
    let calls_per = calls as f64 / confirmed;
    let requests_per = requests / confirmations.max(1.0);
    // Each look reads the cluster's three kinds in its one namespace.
    let looks_per = requests_per / 3.0;
    let p50 = overhead.percentile(50.0);
    report.judged(
        SECTION,
        &format!(
            "overhead: Kustomization marked applied → `success` status at GitLab, p50 / p99 (max) over {} confirmations",
            overhead.len()
        ),
        format!(
            "{:.0} / {:.0} ({:.0}) ms",
            p50,
            overhead.percentile(99.0),
            overhead.max()
        ),
        "p50 ≤ 2 s (default polling)",
        p50 <= 2000.0,
    );
    report.info(
        SECTION,
        "push accepted → `success` status, p50 / p99 (the stand-in fetches after 0.3 s and applies after 1 s)",
        format!("{:.0} / {:.0} ms", total.percentile(50.0), total.percentile(99.0)),
    );
    report.judged(
        SECTION,
        "GitLab API calls per push per cluster",
        format!("{calls_per:.2} ({calls} calls for {confirmed:.0} confirmations)"),
        "≤ 3",
        calls_per <= 3.0,
    );
    report.info(
        SECTION,
        "apiserver requests per confirmation per cluster (one list per kind per look)",
        format!(
            "{requests_per:.1} ({requests:.0} requests for {confirmations:.0} confirmations; ≈ {looks_per:.1} looks each)"
        ),
    );
    ConfirmMeasured {
        looks_per_confirmation: looks_per,
        gitlab_calls_per_confirmation: calls_per,
        apiserver_requests_per_confirmation: requests_per,
    }
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "confirmation stage: not within {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
