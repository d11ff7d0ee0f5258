//! The list cache with many registry entries against a real kube-apiserver v1.20.2
//! (tests/env/kube-up.sh): its bounds hold, the oldest lists go first, expired lists go on
//! the next write, and what 1,000 cached lists weigh (printed; run with --nocapture).
//!
//! The test re-runs itself inside a private network namespace and starts its own apiserver.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fluxrelay_adapters::cluster::{
    DEFAULT_LIST_CACHE_BYTES, DEFAULT_LIST_CACHE_ENTRIES, KubeClusters, ListCacheLimits, Timeouts,
};
use fluxrelay_core::ports::FluxDiscovery;
use fluxrelay_core::registry::{ClusterEntry, Credentials, TriggerConfig};
use fluxrelay_core::secret::Secret;
use fluxrelay_testkit::kube_env::KubeEnv;
use fluxrelay_testkit::netns;
use serde_json::Value;

const RBAC: &str = include_str!("../../../infra/rbac.yaml");
/// A handful of namespaces shared by many entry names: each entry name has a cache entry
/// (and a client) of its own, whatever namespace it reads.
const NAMESPACES: [&str; 4] = ["flux-system", "team-a", "team-b", "team-c"];
const REPOSITORIES_PER_NAMESPACE: usize = 10;
const ENTRIES: usize = 1_000;
// The first part measures 1,000 lists within the default bounds.
const _: () = assert!(DEFAULT_LIST_CACHE_ENTRIES >= ENTRIES);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn git_repository(namespace: &str, name: &str) -> String {
    format!(
        "
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {{name: {name}, namespace: {namespace}, labels: {{app: {name}, team: {namespace}}}}}
spec:
  url: https://gitlab.example.com/{namespace}/{name}.git
  ref: {{branch: main}}
  interval: 1h
"
    )
}

/// Entry `n` reads one of the namespaces, in turn.
fn entries(env: &KubeEnv) -> Vec<ClusterEntry> {
    let token = env.dispatcher_token();
    (0..ENTRIES)
        .map(|n| ClusterEntry {
            name: format!("cluster-{n:04}"),
            server: url::Url::parse(&env.server()).unwrap(),
            ca: Some(env.ca_pem()),
            credentials: Credentials::Token(Secret::new(token.clone())),
            namespaces: vec![NAMESPACES[n % NAMESPACES.len()].to_string()],
            host_aliases: BTreeMap::new(),
            subscriptions: Vec::new(),
            trigger: TriggerConfig::default(),
            confirm: None,
        })
        .collect()
}

async fn count(clusters: &KubeClusters, entry: &ClusterEntry) -> usize {
    clusters
        .git_repositories(entry, &entry.namespaces[0], false)
        .await
        .unwrap_or_else(|failure| panic!("{}: {failure:?}", entry.name))
        .len()
}

/// The resident set of this process, in bytes.
fn resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: usize = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// About what a `serde_json::Value` holds on the heap (no `preserve_order`: objects are
/// B-trees of up to 11 pairs a node): what the cache held per list before it parsed them.
fn value_heap_bytes(value: &Value) -> usize {
    const NODE: usize = 16 + 11 * (size_of::<String>() + size_of::<Value>());
    match value {
        Value::String(text) => text.capacity(),
        Value::Array(items) => {
            items.capacity() * size_of::<Value>()
                + items.iter().map(value_heap_bytes).sum::<usize>()
        }
        Value::Object(map) => {
            map.len().div_ceil(11) * NODE
                + map
                    .iter()
                    .map(|(key, value)| key.capacity() + value_heap_bytes(value))
                    .sum::<usize>()
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

/// Namespaces, the project's Role in each, and the GitRepositories; the Role may take a
/// moment to reach the apiserver's authorizer.
async fn flux_namespaces(env: &KubeEnv, first: &[ClusterEntry]) {
    for namespace in NAMESPACES {
        env.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {namespace}}}\n"
        ))
        .await;
        env.apply(&RBAC.replace("namespace: flux-system", &format!("namespace: {namespace}")))
            .await;
        for n in 0..REPOSITORIES_PER_NAMESPACE {
            env.apply(&git_repository(namespace, &format!("app-{n}")))
                .await;
        }
    }
    let clusters = KubeClusters::with_defaults().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    for entry in first {
        while let Err(failure) = clusters
            .git_repositories(entry, &entry.namespaces[0], true)
            .await
        {
            assert!(Instant::now() < deadline, "{failure:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[test]
fn the_list_cache_stays_bounded_with_a_thousand_registry_entries() {
    if !netns::enter("the_list_cache_stays_bounded_with_a_thousand_registry_entries") {
        return;
    }
    runtime().block_on(async {
        let env = KubeEnv::start().await;
        let entries = entries(&env);
        flux_namespaces(&env, &entries[..NAMESPACES.len()]).await;

        // 1,000 entries within the default bounds: every list cached, and what they weigh.
        let clusters = KubeClusters::with_defaults().unwrap();
        let resident_before = resident_bytes();
        let started = Instant::now();
        for entry in &entries {
            assert_eq!(count(&clusters, entry).await, REPOSITORIES_PER_NAMESPACE);
        }
        let elapsed = started.elapsed();
        let usage = clusters.list_cache_usage();
        assert_eq!(usage.entries, ENTRIES);
        assert!(usage.bytes <= DEFAULT_LIST_CACHE_BYTES);
        let per_list = usage.bytes / usage.entries;
        let json = env
            .admin()
            .request_text(
                http::Request::get(
                    "/apis/source.toolkit.fluxcd.io/v1/namespaces/flux-system/gitrepositories",
                )
                .body(Vec::new())
                .unwrap(),
            )
            .await
            .unwrap();
        let items = serde_json::from_str::<Value>(&json).unwrap()["items"].take();
        let as_values = value_heap_bytes(&items);
        println!(
            "list cache, {ENTRIES} entries of {REPOSITORIES_PER_NAMESPACE} GitRepositories each: \
             {} bytes held, {per_list} per list (one such list: {} bytes of JSON; kept as \
             JSON values, as before, about {as_values} bytes, copied on every hit); \
             process RSS grew {} bytes (that includes {ENTRIES} kube clients and their \
             connections); {ENTRIES} lists read in {elapsed:.1?}",
            usage.bytes,
            json.len(),
            resident_bytes().saturating_sub(resident_before),
        );
        drop(clusters);

        // At most 100 lists: the oldest go first. A GitRepository added after the lists
        // were read shows only in those read again.
        let ttl = Duration::from_secs(600);
        let bounded = KubeClusters::new(Timeouts::default(), ttl)
            .unwrap()
            .with_list_cache_limits(ListCacheLimits {
                max_entries: 100,
                max_bytes: DEFAULT_LIST_CACHE_BYTES,
            });
        for entry in &entries[..300] {
            count(&bounded, entry).await;
            assert!(bounded.list_cache_usage().entries <= 100);
        }
        for namespace in NAMESPACES {
            env.apply(&git_repository(namespace, "added")).await;
        }
        let cached = REPOSITORIES_PER_NAMESPACE;
        for entry in [&entries[299], &entries[200]] {
            assert_eq!(count(&bounded, entry).await, cached, "{}", entry.name);
        }
        for entry in [&entries[199], &entries[0]] {
            assert_eq!(count(&bounded, entry).await, cached + 1, "{}", entry.name);
        }
        assert_eq!(bounded.list_cache_usage().entries, 100);

        // At most about 20 lists' worth of bytes.
        let max_bytes = 20 * per_list;
        let by_bytes = KubeClusters::new(Timeouts::default(), ttl)
            .unwrap()
            .with_list_cache_limits(ListCacheLimits {
                max_entries: DEFAULT_LIST_CACHE_ENTRIES,
                max_bytes,
            });
        for entry in &entries[..100] {
            count(&by_bytes, entry).await;
            let usage = by_bytes.list_cache_usage();
            assert!(usage.bytes <= max_bytes, "{usage:?}");
            assert!(usage.entries <= 20, "{usage:?}");
        }

        // Past the TTL, the next write evicts every expired list.
        let ttl = Duration::from_secs(1);
        let short = KubeClusters::new(Timeouts::default(), ttl).unwrap();
        for entry in &entries[..10] {
            count(&short, entry).await;
        }
        assert_eq!(short.list_cache_usage().entries, 10);
        tokio::time::sleep(ttl).await;
        count(&short, &entries[10]).await;
        assert_eq!(short.list_cache_usage().entries, 1);
    });
}
