//! Drives the Lambda functions in-process the way AWS does: an SQS event-source poller
//! that receives up to 10 messages, hands them to the function as an `SqsEvent`, and
//! deletes every message the function did not report as a batch item failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};

pub mod pipeline;

/// The ARN an SQS event names a queue by (its last part is the name, as in the URL; the
/// account and region are moto's defaults).
pub fn queue_arn_of(queue_url: &str) -> String {
    let name = queue_url.rsplit('/').next().unwrap_or_default();
    format!("arn:aws:sqs:us-east-1:123456789012:{name}")
}

/// Receives one batch (up to 10) from `queue_url` as Lambda's poller does.
pub async fn receive_batch(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> SqsEvent {
    let output = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .wait_time_seconds(0)
        .send()
        .await
        .expect("ReceiveMessage");
    sqs_event(queue_url, output.messages.unwrap_or_default())
}

/// The records Lambda's event source mapping builds from messages received from `queue_url`.
pub fn sqs_event(queue_url: &str, messages: Vec<aws_sdk_sqs::types::Message>) -> SqsEvent {
    let mut event = SqsEvent::default();
    for message in messages {
        let mut record = SqsMessage::default();
        record.message_id = message.message_id;
        record.receipt_handle = message.receipt_handle;
        record.body = message.body;
        record.attributes = message
            .attributes
            .unwrap_or_default()
            .into_iter()
            .map(|(name, value)| (name.as_str().to_string(), value))
            .collect::<HashMap<_, _>>();
        record.event_source = Some("aws:sqs".into());
        record.event_source_arn = Some(queue_arn_of(queue_url));
        event.records.push(record);
    }
    event
}

/// Deletes what the function acknowledged (everything not in `batch_item_failures`).
pub async fn acknowledge(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    event: &SqsEvent,
    response: &SqsBatchResponse,
) {
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    let entries: Vec<DeleteMessageBatchRequestEntry> = event
        .records
        .iter()
        .filter(|r| !failed.contains(&r.message_id.as_deref().unwrap_or_default()))
        .enumerate()
        .map(|(i, r)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(r.receipt_handle.clone().unwrap_or_default())
                .build()
                .expect("entry")
        })
        .collect();
    if !entries.is_empty() {
        sqs.delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("DeleteMessageBatch");
    }
}

/// How many messages are on a queue: visible, in flight, or waiting out a per-message delay
/// (the dispatch retry queue's retries).
pub async fn depth(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> usize {
    use aws_sdk_sqs::types::QueueAttributeName;
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .expect("GetQueueAttributes")
        .attributes
        .unwrap_or_default();
    // A retry waiting out its delay is work still to do: moto (as SQS) counts it only as
    // delayed.
    [
        QueueAttributeName::ApproximateNumberOfMessages,
        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        QueueAttributeName::ApproximateNumberOfMessagesDelayed,
    ]
    .iter()
    .map(|name| {
        attributes
            .get(name)
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0)
    })
    .sum()
}

/// How many messages are on a queue: visible, in flight, or waiting out their delay.
pub async fn delayed_depth(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> usize {
    use aws_sdk_sqs::types::QueueAttributeName;
    let delayed = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .expect("GetQueueAttributes")
        .attributes
        .unwrap_or_default()
        .get(&QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    depth(sqs, queue_url).await + delayed
}
