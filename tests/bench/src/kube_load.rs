//! Stage 5, Kubernetes API load: apiserver requests per push per cluster, with cold list caches
//! (a fresh `fluxrelay serve`) and warm ones (the next pushes, within the list cache's
//! lifetime), read from the apiserver's own `apiserver_request_total` as admin.

use std::time::{Duration, Instant};

use crate::report::Report;
use crate::serve_bench::{Setup, after_sha, http_client, post_push};
use crate::serve_proc::ServeProcess;
use crate::{Scale, progress};

/// The resources fluxrelay's dispatcher touches (services = the service proxy POST).
const RESOURCES: [&str; 3] = ["gitrepositories", "receivers", "services"];

/// Sum of `apiserver_request_total` for [`RESOURCES`], from the apiserver's `/metrics`.
async fn requests(setup: &Setup) -> f64 {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("GET /metrics");
    let text = setup
        .kube
        .admin()
        .request_text(request)
        .await
        .expect("apiserver /metrics as admin");
    text.lines()
        .filter(|line| line.starts_with("apiserver_request_total{"))
        .filter(|line| {
            RESOURCES
                .iter()
                .any(|resource| line.contains(&format!("resource=\"{resource}\"")))
        })
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// One push through `serve`, waiting for every cluster's Receiver; the apiserver
/// requests it caused.
async fn one_push(setup: &Setup, serve: &ServeProcess, clusters: usize, sequence: u64) -> f64 {
    let client = http_client();
    setup.receiver.clear();
    let before = requests(setup).await;
    assert_eq!(
        post_push(&client, serve, setup.push_body(sequence)).await,
        202
    );
    let after = after_sha(sequence);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if setup.hits_for(&after).len() >= clusters {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "push not delivered to every cluster within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The apiserver counts a request when it has answered it; let the last one land.
    tokio::time::sleep(Duration::from_millis(300)).await;
    requests(setup).await - before
}

pub async fn apiserver_requests(setup: &Setup, scale: &Scale, report: &mut Report) {
    const SECTION: &str = "Kubernetes API load";
    let clusters = scale.latency_clusters[1];
    progress(format!(
        "apiserver load: 1 cold + {} warm pushes, {clusters} clusters, counted by the apiserver",
        scale.warm_pushes
    ));
    let serve = ServeProcess::start(&setup.config(clusters), &[]);
    let cold = one_push(setup, &serve, clusters, 5_000_000).await / clusters as f64;
    let mut warm = 0.0;
    for n in 1..=scale.warm_pushes as u64 {
        warm += one_push(setup, &serve, clusters, 5_000_000 + n).await;
    }
    let warm = warm / (scale.warm_pushes * clusters) as f64;
    report.info(
        SECTION,
        &format!("apiserver requests per push per cluster, cold caches ({clusters} clusters)"),
        format!("{cold:.2}"),
    );
    report.judged(
        SECTION,
        &format!(
            "apiserver requests per push per cluster, warm caches (mean of {})",
            scale.warm_pushes
        ),
        format!("{warm:.2}"),
        "≤ 2",
        warm <= 2.0,
    );
    setup.receiver.clear();
}
