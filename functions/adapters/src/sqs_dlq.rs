//! The SQS dead-letter queues, for `fluxrelay dlq list|redrive`: browse every message with
//! its reason, put messages back on their source queue, delete what was redriven.
//!
//! SQS has no "peek": browsing receives each message, hiding it for a while, and then
//! makes what it did not redrive visible again at once. In a FIFO queue, messages of a
//! group with a message in flight are not returned, so dispatch dead-letters each message
//! in a group of its own (its message id); only messages the queue's redrive policy moved
//! (after `maxReceiveCount`) keep their cluster's group, and a browse may see just the
//! first of those per cluster — `Browse::maybe_incomplete` says so.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, Message, MessageSystemAttributeName,
};
use fluxrelay_core::ports::{DeadLetterReason, QueueError};
use fluxrelay_core::push::{Dispatch, Push};

use crate::sqs::{
    ATTRIBUTE_ATTEMPTS, ATTRIBUTE_CLUSTER, ATTRIBUTE_KEY, ATTRIBUTE_REASON, ATTRIBUTE_STATUS,
};

/// How long a browse hides the messages it has seen; long enough to list a large queue,
/// short enough that an interrupted browse does not delay a redrive by much.
pub const BROWSE_HOLD: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsDeadLetter {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    pub group_id: String,
    /// When it was sent to the dead-letter queue, ms since the epoch.
    pub sent_at_ms: Option<i64>,
    /// Present when dispatch dead-lettered it; absent when the queue's redrive policy moved
    /// it (every receive failed, e.g. the function timed out each time).
    pub reason: Option<DeadLetterReason>,
}

impl SqsDeadLetter {
    /// The cluster it was for: from the reason, else from a `Dispatch` body.
    pub fn cluster(&self) -> Option<String> {
        self.reason
            .as_ref()
            .and_then(|reason| reason.cluster.clone())
            .or_else(|| Dispatch::from_json(&self.body).ok().map(|d| d.cluster))
    }

    /// The FIFO group it belongs to on its source queue: the cluster for a `Dispatch`, the
    /// project id for a `Push`; `None` for a body that is neither.
    pub fn source_group(&self) -> Option<String> {
        if let Ok(dispatch) = Dispatch::from_json(&self.body) {
            return Some(dispatch.group_id().to_string());
        }
        Push::from_json(&self.body)
            .ok()
            .map(|push| push.project.id.to_string())
    }

    /// The push it carries (for project and ref in listings).
    pub fn push(&self) -> Option<Push> {
        Dispatch::from_json(&self.body)
            .map(|dispatch| dispatch.push)
            .or_else(|_| Push::from_json(&self.body))
            .ok()
    }
}

#[derive(Debug, Clone, Default)]
pub struct Browse {
    /// Oldest first.
    pub messages: Vec<SqsDeadLetter>,
    /// Some messages share a FIFO group, so later ones of that group may be hidden behind
    /// them until the next browse.
    pub maybe_incomplete: bool,
}

fn sqs_error(operation: &str, queue_url: &str, error: impl std::error::Error) -> QueueError {
    QueueError::new(format!(
        "{operation} on {queue_url} failed: {}",
        DisplayErrorContext(&error)
    ))
}

/// Receive every visible message of `dlq_url`, hiding each for `hold`. Call `release` (or
/// `delete`) for each afterwards.
pub async fn browse(client: &Client, dlq_url: &str, hold: Duration) -> Result<Browse, QueueError> {
    let mut browse = Browse::default();
    loop {
        let output = client
            .receive_message()
            .queue_url(dlq_url)
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .visibility_timeout(i32::try_from(hold.as_secs()).unwrap_or(i32::MAX))
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|error| sqs_error("ReceiveMessage", dlq_url, error))?;
        let received = output.messages();
        if received.is_empty() {
            break;
        }
        browse
            .messages
            .extend(received.iter().filter_map(dead_letter));
    }
    browse.messages.sort_by_key(|message| message.sent_at_ms);
    let mut groups: Vec<&str> = browse
        .messages
        .iter()
        .map(|m| m.group_id.as_str())
        .collect();
    groups.sort_unstable();
    groups.dedup();
    browse.maybe_incomplete = groups.len() < browse.messages.len();
    Ok(browse)
}

fn dead_letter(message: &Message) -> Option<SqsDeadLetter> {
    let system = message.attributes();
    let system = |name: MessageSystemAttributeName| system.and_then(|a| a.get(&name)).cloned();
    let custom = |name: &str| {
        message
            .message_attributes()
            .and_then(|attributes| attributes.get(name))
            .and_then(|value| value.string_value())
            .map(str::to_string)
    };
    let reason = custom(ATTRIBUTE_REASON).map(|reason| DeadLetterReason {
        reason,
        status: custom(ATTRIBUTE_STATUS).and_then(|status| status.parse().ok()),
        cluster: custom(ATTRIBUTE_CLUSTER),
        key: custom(ATTRIBUTE_KEY),
        attempts: custom(ATTRIBUTE_ATTEMPTS).and_then(|attempts| attempts.parse().ok()),
    });
    Some(SqsDeadLetter {
        message_id: message.message_id()?.to_string(),
        receipt_handle: message.receipt_handle()?.to_string(),
        body: message.body().unwrap_or_default().to_string(),
        group_id: system(MessageSystemAttributeName::MessageGroupId).unwrap_or_default(),
        sent_at_ms: system(MessageSystemAttributeName::SentTimestamp).and_then(|t| t.parse().ok()),
        reason,
    })
}

/// Make browsed messages visible again now.
pub async fn release(
    client: &Client,
    dlq_url: &str,
    messages: &[SqsDeadLetter],
) -> Result<(), QueueError> {
    for chunk in messages.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(index, message)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(&message.receipt_handle)
                    .visibility_timeout(0)
                    .build()
                    .map_err(|error| QueueError::new(format!("visibility entry: {error}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output = client
            .change_message_visibility_batch()
            .queue_url(dlq_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|error| sqs_error("ChangeMessageVisibilityBatch", dlq_url, error))?;
        if !output.failed().is_empty() {
            return Err(QueueError::new(format!(
                "{} message(s) of {dlq_url} stay hidden until the browse hold ends",
                output.failed().len()
            )));
        }
    }
    Ok(())
}

/// Send the message back to `target_url` in its source group, as a new message (a fresh
/// deduplication id, so the source queue's 5-minute window does not swallow it), then
/// delete it from the dead-letter queue. Sent but not deleted means it may be redriven
/// twice, which delivers twice: harmless, and never lost.
pub async fn redrive_one(
    client: &Client,
    dlq_url: &str,
    target_url: &str,
    message: &SqsDeadLetter,
) -> Result<(), QueueError> {
    let group = message.source_group().ok_or_else(|| {
        QueueError::new(format!(
            "message {} is neither a Dispatch nor a Push; left on {dlq_url}",
            message.message_id
        ))
    })?;
    client
        .send_message()
        .queue_url(target_url)
        .message_body(&message.body)
        .message_group_id(group)
        .message_deduplication_id(format!("redrive-{}", message.message_id))
        .send()
        .await
        .map_err(|error| sqs_error("SendMessage", target_url, error))?;
    client
        .delete_message()
        .queue_url(dlq_url)
        .receipt_handle(&message.receipt_handle)
        .send()
        .await
        .map_err(|error| sqs_error("DeleteMessage", dlq_url, error))?;
    Ok(())
}

/// The source queue of a dead-letter queue named as `template.yaml` names them:
/// `...-dispatch-dlq.fifo` → `...-dispatch.fifo`.
pub fn source_queue_url(dlq_url: &str) -> Option<String> {
    dlq_url
        .strip_suffix("-dlq.fifo")
        .map(|stem| format!("{stem}.fifo"))
}
