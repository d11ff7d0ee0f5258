//! `fluxrelay dlq list|redrive --sqs` as a process, against a real moto server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};

use aws_sdk_sqs::Client;
use fluxrelay_adapters::sqs::SqsQueue;
use fluxrelay_core::ports::DeadLetterReason;
use fluxrelay_core::push::Dispatch;
use fluxrelay_testkit::fixtures::push;
use fluxrelay_testkit::moto::{Moto, create_fifo_queue};
use serde_json::Value;

fn fluxrelay(moto: &Moto, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fluxrelay"))
        .args(args)
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "status {:?}, stderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

async fn visible_bodies(client: &Client, url: &str) -> Vec<String> {
    let output = client
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .visibility_timeout(0)
        .send()
        .await
        .unwrap();
    output
        .messages()
        .iter()
        .map(|m| m.body().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn lists_sqs_dead_letters_with_reasons_and_redrives_one_clusters_to_the_source_queue() {
    let moto = Moto::start();
    let client = moto.sqs().await;
    let dispatch_queue = create_fifo_queue(&client, "fr-dispatch.fifo").await;
    let dlq = create_fifo_queue(&client, "fr-dispatch-dlq.fifo").await;
    let queue = SqsQueue::new(client.clone(), dlq.clone());
    let mut dispatches = Vec::new();
    for (n, cluster) in [(1, "prod"), (2, "staging"), (3, "prod")] {
        let dispatch = Dispatch::new(cluster, push(n, &format!("{n}")));
        let reason = DeadLetterReason {
            reason: format!("apiserver refused (403): cannot create services/proxy ({n})"),
            status: Some(403),
            cluster: Some(cluster.into()),
            key: Some(dispatch.push.key.clone()),
            attempts: None,
        };
        let id = format!("m{n}");
        queue
            .dead_letter(&dlq, &dispatch.to_json(), &id, &id, &reason)
            .await
            .unwrap();
        dispatches.push(dispatch);
    }

    let listed = stdout(&fluxrelay(&moto, &["dlq", "list", "--sqs", &dlq, "--json"]));
    let rows: Vec<Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3, "{listed}");
    for row in &rows {
        let dispatch = dispatches
            .iter()
            .find(|d| d.push.key == row["key"].as_str().unwrap())
            .unwrap();
        assert_eq!(row["cluster"], dispatch.cluster.as_str());
        assert_eq!(row["project"], "platform/fleet-infra");
        assert_eq!(row["ref"], "refs/heads/main");
        assert_eq!(row["status"], 403);
        assert!(
            row["reason"].as_str().unwrap().contains("services/proxy"),
            "{row}"
        );
    }

    let text = stdout(&fluxrelay(
        &moto,
        &["dlq", "list", "--sqs", &dlq, "--cluster", "prod"],
    ));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("ID\tDEAD_AT\tCLUSTER"), "{text}");
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.split('\t').nth(2) == Some("prod")),
        "{text}"
    );

    let redriven = stdout(&fluxrelay(
        &moto,
        &["dlq", "redrive", "--sqs", &dlq, "--cluster", "prod"],
    ));
    assert_eq!(
        redriven.trim(),
        format!("redrove 2 dead letter(s) to {dispatch_queue}")
    );
    let mut back = visible_bodies(&client, &dispatch_queue).await;
    back.sort();
    let mut expected = vec![dispatches[0].to_json(), dispatches[2].to_json()];
    expected.sort();
    assert_eq!(back, expected);
    let left = stdout(&fluxrelay(&moto, &["dlq", "list", "--sqs", &dlq, "--json"]));
    assert_eq!(left.lines().count(), 1, "{left}");
    assert!(left.contains("\"cluster\":\"staging\""), "{left}");
}

#[tokio::test]
async fn redrive_refuses_to_guess_the_target_of_an_unconventional_queue_name() {
    let moto = Moto::start();
    let client = moto.sqs().await;
    let dlq = create_fifo_queue(&client, "my-dead-letters.fifo").await;

    let output = fluxrelay(&moto, &["dlq", "redrive", "--sqs", &dlq]);

    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("pass --to QUEUE_URL"), "{stderr}");
}

/// `--max` bounds a run; the run says it stopped, and the next redrive continues where the
/// last one stopped (redriven messages are gone from the dead-letter queue).
#[tokio::test]
async fn a_run_stops_at_max_says_so_and_redrive_continues_where_it_stopped() {
    let moto = Moto::start();
    let client = moto.sqs().await;
    let dispatch_queue = create_fifo_queue(&client, "fr-dispatch.fifo").await;
    let dlq = create_fifo_queue(&client, "fr-dispatch-dlq.fifo").await;
    let queue = SqsQueue::new(client.clone(), dlq.clone());
    for n in 1..=12u64 {
        let dispatch = Dispatch::new("prod", push(n, &format!("{n}")));
        let reason = DeadLetterReason {
            reason: format!("receiver answered 400 ({n})"),
            status: Some(400),
            cluster: Some("prod".into()),
            key: Some(dispatch.push.key.clone()),
            attempts: None,
        };
        let id = format!("m{n}");
        queue
            .dead_letter(&dlq, &dispatch.to_json(), &id, &id, &reason)
            .await
            .unwrap();
    }

    let listed = fluxrelay(
        &moto,
        &["dlq", "list", "--sqs", &dlq, "--json", "--max", "5"],
    );
    assert_eq!(stdout(&listed).lines().count(), 5);
    let note = String::from_utf8_lossy(&listed.stderr).to_string();
    assert!(note.contains("stopped after 5 dead letters"), "{note}");

    let mut redriven = Vec::new();
    for _ in 0..3 {
        let run = fluxrelay(&moto, &["dlq", "redrive", "--sqs", &dlq, "--max", "5"]);
        redriven.push(stdout(&run).trim().to_string());
    }
    assert_eq!(
        redriven,
        [5, 5, 2].map(|n| format!("redrove {n} dead letter(s) to {dispatch_queue}")),
    );
    let left = stdout(&fluxrelay(&moto, &["dlq", "list", "--sqs", &dlq, "--json"]));
    assert_eq!(left.lines().count(), 0, "{left}");
}
