//! Browsing and redriving the SQS dead-letter queues, against a real moto server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use fluxrelay_adapters::sqs::SqsQueue;
use fluxrelay_adapters::sqs_dlq::{
    BrowseLimits, BrowseStop, browse, redrive_one, release, source_queue_url,
};
use fluxrelay_core::ports::DeadLetterReason;
use fluxrelay_core::push::Dispatch;
use fluxrelay_testkit::fixtures::push;
use fluxrelay_testkit::moto::{Moto, create_fifo_queue};

/// What dispatch does: each dead letter in a group of its own, with its reason.
async fn dead_letter(queue: &SqsQueue, dlq: &str, cluster: &str, n: u64) -> Dispatch {
    let dispatch = Dispatch::new(cluster, push(n, &format!("{n:x}")));
    let reason = DeadLetterReason {
        reason: format!("receiver answered 400 for push {n}"),
        status: Some(400),
        cluster: Some(cluster.into()),
        key: Some(dispatch.push.key.clone()),
        attempts: None,
    };
    let message_id = format!("message-{n}");
    queue
        .dead_letter(dlq, &dispatch.to_json(), &message_id, &message_id, &reason)
        .await
        .unwrap();
    dispatch
}

async fn visible_count(client: &Client, url: &str) -> usize {
    let browsed = browse(client, url, BrowseLimits::default(), |_| {})
        .await
        .unwrap();
    release(client, url, &browsed.messages).await.unwrap();
    browsed.messages.len()
}

#[tokio::test]
async fn a_browse_sees_every_dead_letter_with_its_reason_oldest_first_and_release_shows_them_again()
{
    let moto = Moto::start();
    let client = moto.sqs().await;
    let dlq = create_fifo_queue(&client, "stack-dispatch-dlq.fifo").await;
    let queue = SqsQueue::new(client.clone(), dlq.clone());
    let mut sent = Vec::new();
    for n in 1..=23 {
        let cluster = if n % 2 == 0 { "prod" } else { "staging" };
        sent.push(dead_letter(&queue, &dlq, cluster, n).await);
    }

    let browsed = browse(&client, &dlq, BrowseLimits::default(), |_| {})
        .await
        .unwrap();

    assert_eq!(browsed.messages.len(), 23);
    assert!(!browsed.maybe_incomplete);
    let mut keys: Vec<String> = browsed
        .messages
        .iter()
        .map(|m| m.reason.as_ref().unwrap().key.clone().unwrap())
        .collect();
    let mut expected: Vec<String> = sent.iter().map(|d| d.push.key.clone()).collect();
    keys.sort();
    expected.sort();
    assert_eq!(keys, expected);
    let first = &browsed.messages[0];
    assert!(first.sent_at_ms <= browsed.messages[22].sent_at_ms);
    let reason = first.reason.as_ref().unwrap();
    assert_eq!(reason.status, Some(400));
    assert!(
        reason.reason.starts_with("receiver answered 400"),
        "{reason:?}"
    );
    assert_eq!(first.cluster(), reason.cluster);
    assert_eq!(first.push().unwrap().key, reason.key.clone().unwrap());
    // Hidden while browsed, visible again once released.
    assert!(
        browse(&client, &dlq, BrowseLimits::default(), |_| {})
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    release(&client, &dlq, &browsed.messages).await.unwrap();
    assert_eq!(visible_count(&client, &dlq).await, 23);
}

#[tokio::test]
async fn messages_the_redrive_policy_moved_have_no_reason_but_a_cluster_and_may_hide_each_other() {
    let moto = Moto::start();
    let client = moto.sqs().await;
    let dlq = create_fifo_queue(&client, "stack-dispatch-dlq.fifo").await;
    for n in 1..=3 {
        let dispatch = Dispatch::new("prod", push(n, "b"));
        client
            .send_message()
            .queue_url(&dlq)
            .message_body(dispatch.to_json())
            .message_group_id("prod")
            .message_deduplication_id(dispatch.dedup_id())
            .send()
            .await
            .unwrap();
    }

    let browsed = browse(&client, &dlq, BrowseLimits::default(), |_| {})
        .await
        .unwrap();

    assert!(!browsed.messages.is_empty());
    assert!(browsed.messages.iter().all(|m| m.reason.is_none()));
    assert!(
        browsed
            .messages
            .iter()
            .all(|m| m.cluster().as_deref() == Some("prod"))
    );
    assert_eq!(browsed.maybe_incomplete, browsed.messages.len() > 1);
    release(&client, &dlq, &browsed.messages).await.unwrap();
}

#[tokio::test]
async fn redrive_puts_a_dead_letter_back_in_its_cluster_group_and_removes_it_from_the_dlq() {
    let moto = Moto::start();
    let client = moto.sqs().await;
    let dlq = create_fifo_queue(&client, "stack-dispatch-dlq.fifo").await;
    let target = create_fifo_queue(&client, "stack-dispatch.fifo").await;
    let queue = SqsQueue::new(client.clone(), dlq.clone());
    let kept = dead_letter(&queue, &dlq, "staging", 1).await;
    let moved = dead_letter(&queue, &dlq, "prod", 2).await;
    // The original is still on the source queue's dedup window: the redrive must not be
    // swallowed by it.
    client
        .send_message()
        .queue_url(&target)
        .message_body(moved.to_json())
        .message_group_id("prod")
        .message_deduplication_id(moved.dedup_id())
        .send()
        .await
        .unwrap();
    let browsed = browse(&client, &dlq, BrowseLimits::default(), |_| {})
        .await
        .unwrap();
    let (prod, others): (Vec<_>, Vec<_>) = browsed
        .messages
        .into_iter()
        .partition(|m| m.cluster().as_deref() == Some("prod"));

    redrive_one(&client, &dlq, &target, &prod[0]).await.unwrap();
    release(&client, &dlq, &others).await.unwrap();

    let output = client
        .receive_message()
        .queue_url(&target)
        .max_number_of_messages(10)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap();
    let messages = output.messages();
    assert_eq!(messages.len(), 2, "original and redriven copy");
    for message in messages {
        assert_eq!(message.body().unwrap(), moved.to_json());
        let group = &message.attributes().unwrap()[&MessageSystemAttributeName::MessageGroupId];
        assert_eq!(group, "prod");
    }
    let left = browse(&client, &dlq, BrowseLimits::default(), |_| {})
        .await
        .unwrap();
    assert_eq!(left.messages.len(), 1);
    assert_eq!(left.messages[0].cluster().as_deref(), Some("staging"));
    assert_eq!(left.messages[0].push().unwrap().key, kept.push.key);
}

#[tokio::test]
async fn a_body_that_is_neither_dispatch_nor_push_is_not_redriven() {
    let moto = Moto::start();
    let client = moto.sqs().await;
    let dlq = create_fifo_queue(&client, "stack-dispatch-dlq.fifo").await;
    let target = create_fifo_queue(&client, "stack-dispatch.fifo").await;
    client
        .send_message()
        .queue_url(&dlq)
        .message_body("{not json")
        .message_group_id("g")
        .message_deduplication_id("d")
        .send()
        .await
        .unwrap();
    let browsed = browse(&client, &dlq, BrowseLimits::default(), |_| {})
        .await
        .unwrap();

    let error = redrive_one(&client, &dlq, &target, &browsed.messages[0])
        .await
        .unwrap_err();

    assert!(
        error.message.contains("neither a Dispatch nor a Push"),
        "{error}"
    );
    release(&client, &dlq, &browsed.messages).await.unwrap();
    assert_eq!(visible_count(&client, &dlq).await, 1);
    assert_eq!(visible_count(&client, &target).await, 0);
}

#[test]
fn the_source_queue_follows_the_template_naming() {
    for (dlq, source) in [
        (
            "https://sqs.eu-west-1.amazonaws.com/123456789012/fluxrelay-dispatch-dlq.fifo",
            Some("https://sqs.eu-west-1.amazonaws.com/123456789012/fluxrelay-dispatch.fifo"),
        ),
        (
            "http://127.0.0.1:5055/123456789012/x-intake-dlq.fifo",
            Some("http://127.0.0.1:5055/123456789012/x-intake.fifo"),
        ),
        ("https://sqs.example/1/fluxrelay-dispatch.fifo", None),
        ("https://sqs.example/1/my-dead-letters", None),
    ] {
        assert_eq!(source_queue_url(dlq).as_deref(), source, "{dlq}");
    }
}

/// A dead-letter queue that takes longer to read than the browse hides each message: the
/// first messages show again while the browse is still receiving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browse_longer_than_its_hold_ends_and_sees_each_message_once() {
    let moto = Moto::start();
    let plain = moto.sqs().await;
    let dlq = create_fifo_queue(&plain, "stack-dispatch-dlq.fifo").await;
    let queue = SqsQueue::new(plain.clone(), dlq.clone());
    for n in 1..=40 {
        dead_letter(&queue, &dlq, "prod", n).await;
    }
    // Each receive takes 400 ms: 4 receives outlast a 1 s hold.
    let config = aws_sdk_sqs::config::Builder::from(&moto.sdk_config().await)
        .interceptor(fluxrelay_testkit::moto::SlowCalls::new(
            "AmazonSQS.ReceiveMessage",
            Duration::from_millis(400),
        ))
        .build();
    let slow = Client::from_conf(config);

    let limits = BrowseLimits {
        hold: Duration::from_secs(1),
        margin: Duration::from_millis(200),
        ..BrowseLimits::default()
    };
    let mut pages = Vec::new();
    let browsed = tokio::time::timeout(
        Duration::from_secs(30),
        browse(&slow, &dlq, limits, |count| pages.push(count)),
    )
    .await
    .expect("the browse never ended: messages whose hold ran out were received again and again")
    .unwrap();

    let mut ids: Vec<&str> = browsed
        .messages
        .iter()
        .map(|m| m.message_id.as_str())
        .collect();
    let received = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), received, "a message was listed twice");
    assert!(
        matches!(browsed.stopped, BrowseStop::Hold | BrowseStop::SeenAgain),
        "{:?} after {received}",
        browsed.stopped
    );
    assert!(received < 40, "{received}");
    assert!(browsed.stopped.note(received).is_some());
    // Progress was reported page by page.
    assert_eq!(pages.last(), Some(&received), "{pages:?}");
    println!(
        "stopped after {received} of 40 ({:?}), pages {pages:?}",
        browsed.stopped
    );
}

#[tokio::test]
async fn a_browse_stops_at_its_limit_and_the_next_one_still_sees_everything() {
    let moto = Moto::start();
    let client = moto.sqs().await;
    let dlq = create_fifo_queue(&client, "stack-dispatch-dlq.fifo").await;
    let queue = SqsQueue::new(client.clone(), dlq.clone());
    for n in 1..=25 {
        dead_letter(&queue, &dlq, "prod", n).await;
    }
    let limits = BrowseLimits {
        max_messages: 12,
        ..BrowseLimits::default()
    };

    let first = browse(&client, &dlq, limits, |_| {}).await.unwrap();

    assert_eq!(first.messages.len(), 12);
    assert_eq!(first.stopped, BrowseStop::Limit);
    assert!(first.stopped.note(12).unwrap().contains("--max"));
    release(&client, &dlq, &first.messages).await.unwrap();
    assert_eq!(visible_count(&client, &dlq).await, 25);
    let all = browse(&client, &dlq, BrowseLimits::default(), |_| {})
        .await
        .unwrap();
    assert_eq!(all.stopped, BrowseStop::Empty);
    assert!(all.stopped.note(25).is_none());
    release(&client, &dlq, &all.messages).await.unwrap();
}
