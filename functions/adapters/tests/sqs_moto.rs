//! SQS adapter against a real moto server, through the real AWS SDK.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use fluxrelay_adapters::sqs::SqsQueue;
use fluxrelay_core::ports::DeadLetterReason;
use fluxrelay_core::ports::{DispatchPublisher, PushPublisher};
use fluxrelay_core::push::{Dispatch, Push};
use fluxrelay_testkit::fixtures::push;
use fluxrelay_testkit::moto::{CountCalls, Moto, WireTime, create_fifo_queue};

async fn fifo_queue(client: &Client, name: &str) -> String {
    create_fifo_queue(client, &format!("{name}.fifo")).await
}

async fn receive(client: &Client, queue_url: &str) -> Vec<Message> {
    client
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(0)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap()
        .messages()
        .to_vec()
}

/// Receive and delete until the queue is empty (a FIFO group is locked while it has
/// messages in flight, so deleting is what lets the next ones of that group through).
async fn drain(client: &Client, queue_url: &str) -> Vec<Message> {
    let mut all = Vec::new();
    loop {
        let batch = receive(client, queue_url).await;
        if batch.is_empty() {
            return all;
        }
        for message in &batch {
            client
                .delete_message()
                .queue_url(queue_url)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
        all.extend(batch);
    }
}

fn system_attribute(message: &Message, name: MessageSystemAttributeName) -> String {
    message.attributes().unwrap().get(&name).unwrap().clone()
}

/// Counts `SendMessageBatch` requests as they go on the wire.
#[tokio::test]
async fn pushes_land_on_a_fifo_queue_with_project_group_push_key_dedup_and_json_body() {
    let moto = Moto::start();
    let client = moto.sqs().await;
    let url = fifo_queue(&client, "intake").await;
    let queue = SqsQueue::new(client.clone(), url.clone());
    let pushes = [push(15, "a1"), push(16, "a2")];

    queue.publish_pushes(&pushes).await.unwrap();

    let messages = drain(&client, &url).await;
    assert_eq!(messages.len(), 2);
    for (message, sent) in messages.iter().zip(&pushes) {
        assert_eq!(
            system_attribute(message, MessageSystemAttributeName::MessageGroupId),
            sent.project.id.to_string()
        );
        assert_eq!(
            system_attribute(message, MessageSystemAttributeName::MessageDeduplicationId),
            sent.key
        );
        assert_eq!(&Push::from_json(message.body().unwrap()).unwrap(), sent);
    }
}

#[tokio::test]
async fn twenty_five_dispatches_are_sent_in_three_batch_calls_and_arrive_in_order_per_group() {
    let moto = Moto::start();
    let calls = CountCalls::new("AmazonSQS.SendMessageBatch");
    let config = aws_sdk_sqs::config::Builder::from(&moto.sdk_config().await)
        .interceptor(calls.clone())
        .build();
    let client = Client::from_conf(config);
    let url = fifo_queue(&client, "dispatch").await;
    let queue = SqsQueue::new(client.clone(), url.clone());
    let clusters = ["prod", "staging", "dev"];
    let dispatches: Vec<Dispatch> = (0..25)
        .map(|n| Dispatch::new(clusters[n % 3], push(15, &format!("{n:x}"))))
        .collect();

    queue.publish_dispatches(&dispatches).await.unwrap();
    assert_eq!(calls.count(), 3);

    let messages = drain(&client, &url).await;
    assert_eq!(messages.len(), 25);
    let mut received: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for message in &messages {
        let dispatch = Dispatch::from_json(message.body().unwrap()).unwrap();
        assert_eq!(
            system_attribute(message, MessageSystemAttributeName::MessageGroupId),
            dispatch.cluster
        );
        assert_eq!(
            system_attribute(message, MessageSystemAttributeName::MessageDeduplicationId),
            dispatch.dedup_id()
        );
        received
            .entry(dispatch.cluster.clone())
            .or_default()
            .push(dispatch.push.after);
    }
    for cluster in clusters {
        let sent: Vec<String> = dispatches
            .iter()
            .filter(|d| d.cluster == cluster)
            .map(|d| d.push.after.clone())
            .collect();
        assert_eq!(received[cluster], sent, "order of group {cluster}");
    }
}

#[tokio::test]
async fn a_fan_out_to_distinct_clusters_sends_its_batches_concurrently_and_every_message_lands() {
    let moto = Moto::start();
    let calls = CountCalls::new("AmazonSQS.SendMessageBatch");
    let wire = WireTime::new();
    let config = aws_sdk_sqs::config::Builder::from(&moto.sdk_config().await)
        .interceptor(calls.clone())
        .interceptor(wire.clone())
        .build();
    let client = Client::from_conf(config);
    let url = fifo_queue(&client, "fanout").await;
    let queue = SqsQueue::new(client.clone(), url.clone());
    let one_push = push(15, "f0");
    let dispatches: Vec<Dispatch> = (0..95)
        .map(|n| Dispatch::new(format!("cluster-{n}"), one_push.clone()))
        .collect();

    queue.publish_dispatches(&dispatches).await.unwrap();
    assert_eq!(calls.count(), 10);
    assert!(
        wire.max_in_flight() > 1,
        "batches of distinct groups go out together: {:?}",
        wire.spans()
    );
    let messages = drain(&client, &url).await;
    let mut clusters: Vec<String> = messages
        .iter()
        .map(|m| Dispatch::from_json(m.body().unwrap()).unwrap().cluster)
        .collect();
    clusters.sort();
    clusters.dedup();
    assert_eq!(clusters.len(), 95, "every cluster's dispatch landed once");

    // A shared group keeps the calls one after another.
    let wire = WireTime::new();
    let config = aws_sdk_sqs::config::Builder::from(&moto.sdk_config().await)
        .interceptor(wire.clone())
        .build();
    let queue = SqsQueue::new(Client::from_conf(config), url.clone());
    let ordered: Vec<Dispatch> = (0..30)
        .map(|n| Dispatch::new(["a", "b"][n % 2], push(15, &format!("{n:x}"))))
        .collect();
    queue.publish_dispatches(&ordered).await.unwrap();
    assert_eq!(wire.spans().len(), 3);
    assert_eq!(wire.max_in_flight(), 1, "{:?}", wire.spans());
}

#[tokio::test]
async fn the_same_push_published_twice_before_consumption_is_received_once() {
    let moto = Moto::start();
    let client = moto.sqs().await;
    let url = fifo_queue(&client, "intake").await;
    let queue = SqsQueue::new(client.clone(), url.clone());
    let same = push(15, "a1");

    queue
        .publish_pushes(std::slice::from_ref(&same))
        .await
        .unwrap();
    queue
        .publish_pushes(std::slice::from_ref(&same))
        .await
        .unwrap();
    // Also within one publish call (entries of one batch with the same dedup id).
    queue
        .publish_pushes(&[same.clone(), same.clone()])
        .await
        .unwrap();

    let messages = drain(&client, &url).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(Push::from_json(messages[0].body().unwrap()).unwrap(), same);
}

#[tokio::test]
async fn retry_later_hides_a_received_message_for_the_delay() {
    let moto = Moto::start();
    let client = moto.sqs().await;
    let url = fifo_queue(&client, "dispatch").await;
    let queue = SqsQueue::new(client.clone(), url.clone());
    queue
        .publish_dispatches(&[Dispatch::new("prod", push(15, "a1"))])
        .await
        .unwrap();
    // Received with the queue's default 30 s visibility timeout.
    let first = receive(&client, &url).await;
    assert_eq!(first.len(), 1);

    queue
        .retry_later(first[0].receipt_handle().unwrap(), 2)
        .await
        .unwrap();

    assert!(
        receive(&client, &url).await.is_empty(),
        "hidden during the delay"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let again = receive(&client, &url).await;
    assert_eq!(again.len(), 1, "back after the delay, well before 30 s");
    assert_eq!(again[0].message_id(), first[0].message_id());
    assert_eq!(
        system_attribute(
            &again[0],
            MessageSystemAttributeName::ApproximateReceiveCount
        ),
        "2"
    );
}

#[tokio::test]
async fn retry_later_with_an_unknown_receipt_handle_is_an_error() {
    let moto = Moto::start();
    let client = moto.sqs().await;
    let url = fifo_queue(&client, "dispatch").await;
    let queue = SqsQueue::new(client, url);

    let error = queue
        .retry_later("not-a-receipt-handle", 1)
        .await
        .unwrap_err();
    assert!(error.message.contains("ChangeMessageVisibility"), "{error}");
}

#[tokio::test]
async fn dead_letter_puts_the_message_on_the_dlq_with_the_four_attributes() {
    let moto = Moto::start();
    let client = moto.sqs().await;
    let url = fifo_queue(&client, "dispatch").await;
    let dlq = fifo_queue(&client, "dispatch-dlq").await;
    let queue = SqsQueue::new(client.clone(), url);
    let dispatch = Dispatch::new("prod", push(15, "a1"));
    let reason = DeadLetterReason {
        reason: format!("receiver answered 400:\n{}", "x".repeat(2000)),
        status: Some(400),
        cluster: Some("prod".into()),
        key: Some(dispatch.push.key.clone()),
        attempts: None,
    };

    queue
        .dead_letter(
            &dlq,
            &dispatch.to_json(),
            dispatch.group_id(),
            &dispatch.dedup_id(),
            &reason,
        )
        .await
        .unwrap();

    let messages = drain(&client, &dlq).await;
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message.body().unwrap(), dispatch.to_json());
    assert_eq!(
        system_attribute(message, MessageSystemAttributeName::MessageGroupId),
        "prod"
    );
    let attributes = message.message_attributes().unwrap();
    let text = |name: &str| -> String {
        let value = &attributes[name];
        assert_eq!(value.data_type(), "String");
        value.string_value().unwrap().to_string()
    };
    let reason_text = text("fluxrelay.reason");
    assert!(
        reason_text.starts_with("receiver answered 400:xxx"),
        "{reason_text}"
    );
    assert_eq!(reason_text.len(), 1024);
    assert_eq!(text("fluxrelay.status"), "400");
    assert_eq!(text("fluxrelay.cluster"), "prod");
    assert_eq!(text("fluxrelay.key"), dispatch.push.key);
    assert_eq!(attributes.len(), 4);
}

#[tokio::test]
async fn publish_pushes_to_a_stopped_queue_service_is_an_error_without_the_body() {
    let mut moto = Moto::start();
    let client = moto.sqs().await;
    let url = fifo_queue(&client, "intake").await;
    let queue = SqsQueue::new(client, url);
    moto.stop();

    let error = queue.publish_pushes(&[push(15, "a1")]).await.unwrap_err();

    assert!(error.message.contains("1 of 1 messages"), "{error}");
    assert!(error.message.contains("SendMessageBatch"), "{error}");
    assert!(!error.message.contains("fleet-infra"), "no body in {error}");
}

#[tokio::test]
async fn publishing_to_a_missing_queue_is_an_error() {
    let moto = Moto::start();
    let client = moto.sqs().await;
    let url = format!("{}/123456789012/missing.fifo", moto.endpoint());
    let queue = SqsQueue::new(client, url);

    let error = queue
        .publish_dispatches(&[Dispatch::new("prod", push(15, "a1"))])
        .await
        .unwrap_err();
    assert!(error.message.contains("1 of 1 messages"), "{error}");
}

#[tokio::test]
async fn publishing_nothing_makes_no_call() {
    let mut moto = Moto::start();
    let client = moto.sqs().await;
    let queue = SqsQueue::new(
        client,
        format!("{}/123456789012/intake.fifo", moto.endpoint()),
    );
    moto.stop();

    queue.publish_pushes(&[]).await.unwrap();
    queue.publish_dispatches(&[]).await.unwrap();
}

/// The Lambda functions build their AWS configuration from the runtime's variables alone
/// (`lambda_aws`), not with aws-config's loader: clients built on it must reach SQS, and
/// when SQS is gone, fail as a connection failure after the SDK's retries (which need the
/// sleep and time sources the loader would have set).
#[tokio::test]
async fn the_lambda_functions_aws_configuration_reaches_sqs_and_retries() {
    let mut moto = Moto::start();
    let endpoint = moto.endpoint();
    let aws = fluxrelay_adapters::lambda_aws::from_variables(|name| match name {
        "AWS_REGION" => Some("us-east-1".into()),
        "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY" => Some("testing".into()),
        "AWS_ENDPOINT_URL" => Some(endpoint.clone()),
        _ => None,
    })
    .unwrap();
    let client = Client::new(&aws);
    let url = fifo_queue(&client, "lambda-config").await;
    let queue = SqsQueue::new(client.clone(), url.clone());
    let sent = push(17, "a3");

    queue
        .publish_pushes(std::slice::from_ref(&sent))
        .await
        .unwrap();

    let messages = drain(&moto.sqs().await, &url).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(Push::from_json(messages[0].body().unwrap()).unwrap(), sent);

    moto.stop();
    let error = client
        .get_queue_attributes()
        .queue_url(&url)
        .send()
        .await
        .expect_err("moto is stopped");
    assert!(
        matches!(error, aws_sdk_sqs::error::SdkError::DispatchFailure(_)),
        "{error:?}"
    );
}
