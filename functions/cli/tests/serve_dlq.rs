//! A dispatch that fails for good is dead-lettered with its reason; `fluxrelay dlq list`
//! shows it, and once the cause is fixed `fluxrelay dlq redrive` gets it delivered.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use std::time::Duration;

use common::{
    CLUSTER, Cluster, DIASPORA_URL, Metrics, NAMESPACE, Serve, TempDir, payload, post, rbac,
    run_fluxrelay, write_config,
};
use fluxrelay_testkit::netns;
use serde_json::{Value, json};

const HEADER: &str = "ID\tDEAD_AT\tCLUSTER\tPROJECT\tREF\tSTATUS\tATTEMPTS\tKEY\tREASON";

fn fluxrelay_ok(args: &[&str]) -> String {
    let (status, stdout, stderr) = run_fluxrelay(args, Duration::from_secs(10));
    assert!(
        status.success(),
        "fluxrelay {args:?}: {status}\n{stdout}\n{stderr}"
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_denied_by_rbac_is_dead_lettered_listed_and_redriven_once_rbac_is_fixed() {
    if !netns::enter(
        "a_push_denied_by_rbac_is_dead_lettered_listed_and_redriven_once_rbac_is_fixed",
    ) {
        return;
    }
    let cluster = Cluster::start().await;
    // The dispatcher's Role lacks `create` on services/proxy: the apiserver answers 403.
    let without_proxy = rbac().replace("verbs: [\"create\"]", "verbs: [\"get\"]");
    assert_ne!(without_proxy, rbac(), "infra/rbac.yaml changed shape");
    cluster.kube.apply(&without_proxy).await;
    cluster
        .git_repository("diaspora", DIASPORA_URL, json!({"branch": "master"}))
        .await;
    cluster
        .flux_receiver("diaspora", "generic", "generic-token", &[], "diaspora")
        .await;
    let dir = TempDir::new("serve-dlq");
    let config = write_config(dir.path(), &[cluster.entry(&[])], "");
    let data_dir = dir.path().join("data").to_string_lossy().into_owned();
    let config_arg = config.to_string_lossy().into_owned();
    let serve = Serve::start(&config, &[]).await;

    let (status, body) = post(&serve, "Push Hook", &payload("push-hook.json")).await;
    assert_eq!(status, 202, "{body}");
    let key = body["keys"][0].as_str().unwrap().to_string();
    let dead = [("cluster", CLUSTER), ("outcome", "dead_lettered")];
    // A denial is retried (at least 5 s apart) until it has lasted 10 s.
    eventually!(
        Duration::from_secs(40),
        "the dispatch is dead-lettered",
        Metrics::scrape(&serve)
            .await
            .get("fluxrelay_dispatches_total", &dead)
            == Some(1.0)
    );
    let metrics = Metrics::scrape(&serve).await;
    assert_eq!(
        metrics.value(
            "fluxrelay_queue_messages",
            &[("queue", "dispatch"), ("state", "dead_letter")]
        ),
        1.0
    );
    assert_eq!(metrics.queued(), 0.0, "{}", metrics.text);
    assert!(
        cluster.receiver.hits().is_empty(),
        "the denied request reached the receiver"
    );
    let logged = serve.outcomes("dead_lettered");
    assert_eq!(logged.len(), 1, "{}", serve.log_text());
    assert_eq!(logged[0]["key"], key.as_str());
    assert_eq!(logged[0]["cluster"], CLUSTER);

    // The text listing: a header and one tab-separated line.
    let listing = fluxrelay_ok(&["dlq", "list", "--data-dir", &data_dir]);
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 2, "{listing}");
    assert_eq!(lines[0], HEADER);
    let columns: Vec<&str> = lines[1].split('\t').collect();
    assert_eq!(columns.len(), 9, "{listing}");
    assert!(
        columns[1].starts_with("20") && columns[1].ends_with('Z'),
        "dead_at: {listing}"
    );
    assert_eq!(
        &columns[2..6],
        &[CLUSTER, "mike/diaspora", "refs/heads/master", "403"],
        "{listing}"
    );
    let attempts: u64 = columns[6].parse().unwrap();
    assert!(
        (3..=4).contains(&attempts),
        "a denial is dead-lettered once it has lasted 10 s, on the 3rd attempt 5 s apart (4 at most): {listing}"
    );
    assert_eq!(columns[7], key, "{listing}");
    let reason = columns[8];
    assert!(
        reason.contains("403") && reason.contains("services/proxy"),
        "the reason names the status and the missing permission: {reason}"
    );

    // The same through --json, and through --config instead of --data-dir.
    let json_listing = fluxrelay_ok(&["dlq", "list", "--config", &config_arg, "--json"]);
    let objects: Vec<Value> = json_listing
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(objects.len(), 1, "{json_listing}");
    let object = &objects[0];
    assert_eq!(object["cluster"], CLUSTER);
    assert_eq!(object["project"], "mike/diaspora");
    assert_eq!(object["ref"], "refs/heads/master");
    assert_eq!(object["status"], 403);
    assert_eq!(object["attempts"], attempts);
    assert_eq!(object["key"], key.as_str());
    assert_eq!(object["reason"], reason);
    // The id's JSON type is not part of the interface; its text is.
    let id = object["id"]
        .as_str()
        .map_or_else(|| object["id"].to_string(), str::to_string);
    assert_eq!(id, columns[0], "{json_listing}");
    assert_eq!(object["dead_at"], columns[1]);
    // Last: the interface names the queue in each object.
    assert_eq!(object["queue"], "dispatch", "{json_listing}");
    // Filtered by another cluster: nothing.
    let other = fluxrelay_ok(&[
        "dlq",
        "list",
        "--data-dir",
        &data_dir,
        "--cluster",
        "elsewhere",
    ]);
    assert_eq!(other.trim(), HEADER);

    // `explain` tells the story so far from the journal, found by a prefix of the key.
    let story = fluxrelay_ok(&["explain", &key[..12], "--data-dir", &data_dir]);
    assert!(story.starts_with(&format!("push {key}\n")), "{story}");
    assert!(story.contains("mike/diaspora refs/heads/master"), "{story}");
    assert!(story.contains(&format!("routed to {CLUSTER}")), "{story}");
    assert!(story.contains(&format!("cluster {CLUSTER}:")), "{story}");
    assert!(
        story.contains("trigger_failed") && story.contains("services/proxy"),
        "{story}"
    );
    assert!(story.contains("dead_lettered"), "{story}");
    assert!(
        story.contains(&format!("  {CLUSTER}: dead-lettered")),
        "the summary says where it stands: {story}"
    );

    // Fix the cause (the Role from infra/rbac.yaml), then redrive while serve runs.
    cluster.kube.apply(&rbac()).await;
    let redrive = fluxrelay_ok(&["dlq", "redrive", "--data-dir", &data_dir]);
    assert_eq!(
        redrive.trim(),
        "redrove 1 dead letter(s) to the dispatch queue"
    );
    eventually!(
        Duration::from_secs(20),
        "the redriven push reaches the receiver",
        !cluster.receiver.accepted(NAMESPACE, "diaspora").is_empty()
    );
    let delivered = [("cluster", CLUSTER), ("outcome", "delivered")];
    eventually!(
        Duration::from_secs(10),
        "it is counted as delivered",
        Metrics::scrape(&serve)
            .await
            .get("fluxrelay_dispatches_total", &delivered)
            == Some(1.0)
    );
    let sent: Value =
        serde_json::from_slice(&cluster.receiver.accepted(NAMESPACE, "diaspora")[0].body).unwrap();
    assert_eq!(sent["ref"], "refs/heads/master");
    let metrics = Metrics::scrape(&serve).await;
    assert_eq!(metrics.dead_letters(), 0.0, "{}", metrics.text);
    assert_eq!(metrics.queued(), 0.0, "{}", metrics.text);
    let listing = fluxrelay_ok(&["dlq", "list", "--data-dir", &data_dir]);
    assert_eq!(listing.trim(), HEADER, "nothing is left dead");
    let redrive = fluxrelay_ok(&["dlq", "redrive", "--data-dir", &data_dir]);
    assert_eq!(
        redrive.trim(),
        "redrove 0 dead letter(s) to the dispatch queue"
    );
    assert_eq!(cluster.receiver.hits().len(), 1);
    let story = fluxrelay_ok(&["explain", &key, "--config", &config_arg]);
    assert!(
        story.contains(&format!("  {CLUSTER}: delivered")),
        "after the redrive the journal ends delivered: {story}"
    );
    assert!(
        story
            .lines()
            .any(|line| line.contains(" delivered ") && line.ends_with(": success")),
        "the delivered line carries the Receiver's answer: {story}"
    );
}
