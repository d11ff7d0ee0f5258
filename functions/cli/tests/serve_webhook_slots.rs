//! `http.webhook_concurrency` bounds the webhook bodies serve holds, not the pushes waiting
//! for their commit: a small webhook gives its slot back once parsed, so the queue's
//! writer can put every webhook in flight into one group (docs/operations.md, `[http]`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use std::time::Duration;

use std::net::SocketAddr;

use common::{
    Metrics, Serve, TempDir, WEBHOOK_TOKEN, http_client, post_webhook, tag_push, write_config,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One webhook slot; no clusters (what is accepted is routed to nobody).
const ONE_SLOT: &str = "workers = 1\n\n[http]\nwebhook_concurrency = 1\n";

/// `payload` to serve as GitLab sends a tag push hook, from a task of its own.
fn send(addr: SocketAddr, payload: Value) -> tokio::task::JoinHandle<(u16, Value)> {
    tokio::spawn(async move {
        post_webhook(
            &http_client(),
            addr,
            "Tag Push Hook",
            WEBHOOK_TOKEN,
            &payload,
        )
        .await
        .unwrap()
    })
}

/// Tag push `n`, sent as [`send`] does.
fn push(addr: SocketAddr, n: usize) -> tokio::task::JoinHandle<(u16, Value)> {
    send(addr, tag_push(n))
}

async fn synced_commits(serve: &Serve) -> f64 {
    Metrics::scrape(serve)
        .await
        .value("fluxrelay_queue_synced_commits", &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_waiting_for_their_commit_hold_no_slot_and_share_a_commit() {
    let dir = TempDir::new("serve-webhook-slots");
    let config = write_config(dir.path(), &[], ONE_SLOT);
    let serve = Serve::start(&config, &[]).await;
    let before = synced_commits(&serve).await;

    // Another process holds the queue's write lock (as `fluxrelay dlq` may, briefly):
    // every commit waits for it.
    let holder = rusqlite::Connection::open(dir.path().join("data/queue.sqlite")).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let answers: Vec<_> = (0..3).map(|n| push(serve.addr, n)).collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        answers.iter().all(|answer| !answer.is_finished()),
        "answered before the commit could happen"
    );
    holder.execute_batch("ROLLBACK").unwrap();

    for answer in answers {
        let (status, body) = tokio::time::timeout(Duration::from_secs(10), answer)
            .await
            .expect("answered once the lock is free")
            .unwrap();
        assert_eq!(status, 202, "{body}");
    }
    // With the slot held through the commit, each push would wait for the one before it
    // and commit alone: three commits.
    let commits = synced_commits(&serve).await - before;
    assert!(
        (1.0..=2.0).contains(&commits),
        "three pushes took {commits} commits"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_being_read_holds_the_slot() {
    let dir = TempDir::new("serve-webhook-slots-body");
    let config = write_config(dir.path(), &[], ONE_SLOT);
    let serve = Serve::start(&config, &[]).await;

    // A sender with the right token that is slow to send its body.
    let mut slow = tokio::net::TcpStream::connect(serve.addr).await.unwrap();
    let body = tag_push(0).to_string();
    let head = format!(
        "POST /webhook HTTP/1.1\r\nhost: fluxrelay\r\ncontent-type: application/json\r\nx-gitlab-event: Tag Push Hook\r\nx-gitlab-token: {WEBHOOK_TOKEN}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&body.as_bytes()[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let waiting = push(serve.addr, 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !waiting.is_finished(),
        "a second webhook was let in while the only slot's body was being read"
    );

    slow.write_all(&body.as_bytes()[10..]).await.unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = slow.read(&mut buffer).await.unwrap();
        assert!(read > 0, "serve closed the slow sender's connection");
        answer.extend_from_slice(&buffer[..read]);
    }
    assert!(
        answer.starts_with(b"HTTP/1.1 202"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the second webhook is let in once the slot is free")
        .unwrap();
    assert_eq!(status, 202, "{body}");
}

/// Which webhooks give their slot back before their commit: a small one does, a large one
/// (over 64 KiB, whose pushes may be as large) keeps it until answered. Seen from a
/// malformed webhook behind it, which is answered `400` as soon as it gets the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_small_webhook_gives_its_slot_back_before_its_commit() {
    for (padding, slot_freed) in [(0, true), (70 * 1024, false)] {
        let dir = TempDir::new("serve-webhook-slots-size");
        let config = write_config(dir.path(), &[], ONE_SLOT);
        let serve = Serve::start(&config, &[]).await;
        let holder = rusqlite::Connection::open(dir.path().join("data/queue.sqlite")).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();

        let mut waiting_push = tag_push(0);
        waiting_push["padding"] = Value::String("x".repeat(padding));
        let waiting = send(serve.addr, waiting_push);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let malformed = send(serve.addr, Value::String("not an event".into()));
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(
            malformed.is_finished(),
            slot_freed,
            "a {padding}-byte padded push waiting for its commit"
        );
        assert!(!waiting.is_finished(), "answered before its commit");
        holder.execute_batch("ROLLBACK").unwrap();
        let (status, body) = waiting.await.unwrap();
        assert_eq!(status, 202, "{body}");
        let (status, body) = malformed.await.unwrap();
        assert_eq!(status, 400, "{body}");
    }
}
