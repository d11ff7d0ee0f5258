//! Dispatch's plan for one cluster (`handlers::plan::plan_push`): which of the cluster's
//! GitRepositories a push triggers and through which Receivers, for a cluster with one
//! GitRepository and one with fifty (one of them the pushed project's). Before timing,
//! each case is checked to plan what it should, so a broken plan cannot pass as a fast one.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

use fluxrelay_core::flux::{GitRepository, Receiver};
use fluxrelay_core::handlers::plan::{ClusterView, plan_push};
use fluxrelay_core::matching::select::{Freshness, webhook_path};
use fluxrelay_core::push::Push;
use fluxrelay_core::registry::ClusterEntry;

fn push() -> Push {
    serde_json::from_value(json!({
        "v": 1,
        "key": "0".repeat(64),
        "instance": "https://gitlab.example.com",
        "event": "push",
        "project": {
            "id": 15,
            "path": "mike/diaspora",
            "http_url": "https://gitlab.example.com/mike/diaspora.git",
            "ssh_url": "git@gitlab.example.com:mike/diaspora.git",
            "web_url": "https://gitlab.example.com/mike/diaspora",
            "default_branch": "main"
        },
        "ref": "refs/heads/main",
        "before": "b".repeat(40),
        "after": "a".repeat(40),
        "checkout_sha": "a".repeat(40),
        "changed_paths": null,
        "received_at": "2026-11-22T00:00:00Z"
    }))
    .unwrap()
}

fn repository(name: &str, project: &str) -> GitRepository {
    GitRepository::from_json(&json!({
        "metadata": {"name": name, "namespace": "flux-system"},
        "spec": {
            "url": format!("https://gitlab.example.com/{project}.git"),
            "interval": "1m",
            "ref": {"branch": "main"}
        }
    }))
}

fn receiver(selects: &str) -> Receiver {
    let name = "flux-system-push";
    Receiver::from_json(&json!({
        "metadata": {"name": name, "namespace": "flux-system"},
        "spec": {
            "type": "generic",
            "secretRef": {"name": "t"},
            "resources": [{"kind": "GitRepository", "name": selects}]
        },
        "status": {
            "webhookPath": webhook_path("token", name, "flux-system"),
            "conditions": [{"type": "Ready", "status": "True"}]
        }
    }))
}

/// `repositories` GitRepositories, the last of them the pushed project's, and a Receiver
/// selecting it.
fn view(repositories: usize) -> ClusterView {
    let mut listed: Vec<GitRepository> = (1..repositories)
        .map(|n| repository(&format!("app-{n}"), &format!("platform/app-{n}")))
        .collect();
    listed.push(repository("diaspora", "mike/diaspora"));
    ClusterView {
        repositories: listed,
        receivers: vec![receiver("diaspora")],
        freshness: Freshness::Fresh,
        ..ClusterView::default()
    }
}

fn plan(c: &mut Criterion) {
    let entry = ClusterEntry::from_value(&json!({
        "name": "prod",
        "server": "https://127.0.0.1:6443",
        "auth": {"token": "kube-token"},
        "host_aliases": {"gitlab.internal": "gitlab.example.com"}
    }))
    .unwrap();
    let push = push();
    let mut group = c.benchmark_group("plan_push");
    for repositories in [1, 50] {
        let view = view(repositories);
        let planned = plan_push(&entry, &view, &push);
        assert_eq!(planned.targets.len(), 1, "{planned:?}");
        assert_eq!(planned.skipped.len(), repositories - 1, "{planned:?}");
        group.bench_function(format!("{repositories}_repositories"), |b| {
            b.iter(|| black_box(plan_push(&entry, black_box(&view), black_box(&push))))
        });
    }
    group.finish();
}

criterion_group!(benches, plan);
criterion_main!(benches);
