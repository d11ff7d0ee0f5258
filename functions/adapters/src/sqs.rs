//! SQS FIFO: intake and dispatch publishers, visibility backoff, dead-letter sends.
//!
//! Publishing sends `SendMessageBatch` calls (≤ 10 entries and ≤ 256 KiB each) one after
//! another, so the messages of one FIFO group reach SQS in the order they were given; when
//! every message has a group of its own (a push's dispatches, one per cluster) there is no
//! order to keep and up to 16 calls are in flight at once. Entries
//! SQS reports as failed without a sender fault are resent, up to [`MAX_ATTEMPTS`] attempts
//! in all; a batch that still has failures stops the publish (later batches would overtake
//! the failed messages of the same group) and the publish returns `Err`. Errors name the
//! queue, the counts and the SQS error code, never a message body.
//!
//! Limit: when SQS accepts entry 5 of a batch but fails entry 3 of the same group, the
//! resent entry 3 lands after entry 5. Delivery stays at-least-once and triggering is
//! idempotent, so a reordered push only asks Flux to fetch the head once more.
//!
//! The 256 KiB batch budget is the pre-2025 SQS limit (now 1 MiB): smaller batches cost a
//! call more and work on queues whose `MaximumMessageSize` was never raised.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use fluxrelay_core::confirm::message::Confirmation;
use fluxrelay_core::ports::{
    DeadLetterReason, DispatchPublisher, PushPublisher, QueueError, QueueMessage, Settle,
};
use fluxrelay_core::push::{Dispatch, Push};
use futures_util::stream::{self, StreamExt};

/// SQS takes at most 10 entries per batch call.
pub const MAX_BATCH_ENTRIES: usize = 10;
/// SQS takes at most 256 KiB of message bodies (and attributes) per batch call.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;
/// `SendMessageBatch` calls in flight at once when no two messages share a FIFO group.
const CONCURRENT_BATCHES: usize = 16;
/// Attempts per batch entry whose failure SQS did not blame on the sender.
pub const MAX_ATTEMPTS: u32 = 3;
/// Pause before the first resend of failed entries; doubled for each later one.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);
/// The longest visibility timeout SQS accepts (12 hours).
pub const MAX_VISIBILITY_SECS: u32 = 43_200;
/// The longest per-message delay SQS accepts (15 minutes).
pub const MAX_DELAY_SECS: u32 = 900;
/// Longest dead-letter attribute value we send; the rest is cut (at a character boundary).
pub const MAX_ATTRIBUTE_BYTES: usize = 1024;

pub const ATTRIBUTE_REASON: &str = "fluxrelay.reason";
pub const ATTRIBUTE_STATUS: &str = "fluxrelay.status";
pub const ATTRIBUTE_CLUSTER: &str = "fluxrelay.cluster";
pub const ATTRIBUTE_KEY: &str = "fluxrelay.key";
pub const ATTRIBUTE_ATTEMPTS: &str = "fluxrelay.attempts";

/// One FIFO queue (intake, dispatch, or either dead-letter queue).
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    queue_url: String,
}

/// A message ready to send: FIFO group, deduplication id and body.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outgoing {
    group_id: String,
    dedup_id: String,
    body: String,
}

impl Outgoing {
    fn size(&self) -> usize {
        self.body.len()
    }
}

/// One entry SQS did not accept.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EntryFailure {
    /// Index of the entry within the batch being sent.
    index: usize,
    code: String,
    sender_fault: bool,
}

impl SqsQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// Hide a received message for `delay_secs` (capped at 12 hours), after which SQS
    /// delivers it again: the queue's own backoff for retryable failures.
    pub async fn retry_later(
        &self,
        receipt_handle: &str,
        delay_secs: u32,
    ) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(visibility_timeout(delay_secs))
            .send()
            .await
            .map_err(|error| {
                QueueError::new(format!(
                    "ChangeMessageVisibility on {} failed: {}",
                    self.queue_url,
                    DisplayErrorContext(&error)
                ))
            })?;
        Ok(())
    }

    /// Put a message on the (FIFO) dead-letter queue `dlq_url`, with the reason as message
    /// attributes so `fluxrelay dlq list` can show it without parsing the body.
    pub async fn dead_letter(
        &self,
        dlq_url: &str,
        body: &str,
        group_id: &str,
        dedup_id: &str,
        reason: &DeadLetterReason,
    ) -> Result<(), QueueError> {
        let mut request = self
            .client
            .send_message()
            .queue_url(dlq_url)
            .message_body(body);
        // A standard dead-letter queue (the confirm queue's) takes no group or dedup id.
        if dlq_url.ends_with(".fifo") {
            request = request
                .message_group_id(group_id)
                .message_deduplication_id(dedup_id);
        }
        for (name, value) in dead_letter_attributes(reason) {
            let attribute = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|error| {
                    QueueError::new(format!("dead-letter attribute {name}: {error}"))
                })?;
            request = request.message_attributes(name, attribute);
        }
        request.send().await.map_err(|error| {
            QueueError::new(format!(
                "SendMessage to dead-letter queue {dlq_url} failed: {}",
                DisplayErrorContext(&error)
            ))
        })?;
        Ok(())
    }

    /// Send every message, batch after batch, in order. `Ok` only when all are accepted.
    async fn publish(&self, messages: Vec<Outgoing>) -> Result<(), QueueError> {
        if all_groups_distinct(&messages) {
            return self.publish_concurrently(messages).await;
        }
        let total = messages.len();
        let batches = batches(messages);
        let mut sent = 0;
        for batch in batches {
            let size = batch.len();
            if let Err(failure) = send_with_retries(batch, |pending| self.send_batch(pending)).await
            {
                let not_attempted = total - sent - size;
                return Err(QueueError::new(format!(
                    "{} of {total} messages were not accepted by {} ({}){}",
                    failure.failed + not_attempted,
                    self.queue_url,
                    failure.detail,
                    if not_attempted > 0 {
                        format!("; {not_attempted} later messages were not sent to keep FIFO order")
                    } else {
                        String::new()
                    }
                )));
            }
            sent += size;
        }
        Ok(())
    }

    /// Every message in a group of its own (one push's dispatches: one per cluster): no
    /// order to keep between batches, so up to [`CONCURRENT_BATCHES`] are in flight at once.
    /// A fan-out to 1,000 clusters is 100 calls, which one after another would take seconds.
    async fn publish_concurrently(&self, messages: Vec<Outgoing>) -> Result<(), QueueError> {
        let total = messages.len();
        let results: Vec<Result<(), BatchFailure>> = stream::iter(batches(messages))
            .map(|batch| send_with_retries(batch, |pending| self.send_batch(pending)))
            .buffer_unordered(CONCURRENT_BATCHES)
            .collect()
            .await;
        let failures: Vec<BatchFailure> = results.into_iter().filter_map(Result::err).collect();
        let Some(first) = failures.first() else {
            return Ok(());
        };
        let failed: usize = failures.iter().map(|failure| failure.failed).sum();
        Err(QueueError::new(format!(
            "{failed} of {total} messages were not accepted by {} ({})",
            self.queue_url, first.detail
        )))
    }

    /// One `SendMessageBatch` call; entry ids are the indexes in `pending`.
    async fn send_batch(
        &self,
        pending: Vec<(usize, Outgoing)>,
    ) -> Result<Vec<EntryFailure>, QueueError> {
        let mut entries = Vec::with_capacity(pending.len());
        for (index, message) in pending {
            let entry = SendMessageBatchRequestEntry::builder()
                .id(index.to_string())
                .message_body(message.body)
                .message_group_id(message.group_id)
                .message_deduplication_id(message.dedup_id)
                .build()
                .map_err(|error| QueueError::new(format!("batch entry {index}: {error}")))?;
            entries.push(entry);
        }
        let output = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|error| {
                QueueError::new(format!(
                    "SendMessageBatch to {} failed: {}",
                    self.queue_url,
                    DisplayErrorContext(&error)
                ))
            })?;
        let mut failures = Vec::new();
        for failed in output.failed() {
            let Ok(index) = failed.id().parse::<usize>() else {
                return Err(QueueError::new(format!(
                    "SendMessageBatch to {} reported a failure for an unknown entry id",
                    self.queue_url
                )));
            };
            failures.push(EntryFailure {
                index,
                code: failed.code().to_string(),
                sender_fault: failed.sender_fault(),
            });
        }
        Ok(failures)
    }
}

/// `Settle` on SQS, for the messages of one consumer: the queues it receives from (an SQS
/// event names its queue by ARN, whose last part is the queue's name, as in its URL), the
/// dead-letter queue its failures go to with a reason, and the standard queue its dispatch
/// retries go to with a per-message delay (dispatch only). Which of these to call, and in
/// what order, is core's rule (`fluxrelay_core::outcome::settle`).
#[derive(Debug, Clone)]
pub struct SqsSettle {
    client: Client,
    /// Queue URLs; a message from an unknown source is settled on the first.
    sources: Vec<String>,
    dead_letter_url: String,
    retry_url: Option<String>,
    /// The confirm queue (standard): confirmations start and re-check there.
    confirm_url: Option<String>,
}

impl SqsSettle {
    pub fn new(
        client: Client,
        source: impl Into<String>,
        dead_letter_url: impl Into<String>,
    ) -> Self {
        Self {
            client,
            sources: vec![source.into()],
            dead_letter_url: dead_letter_url.into(),
            retry_url: None,
            confirm_url: None,
        }
    }

    /// Confirmations are scheduled on this standard queue (`DelaySeconds` per message).
    /// The confirm function settles its own messages with a settle whose source it is.
    pub fn with_confirm_queue(mut self, confirm_url: impl Into<String>) -> Self {
        self.confirm_url = Some(confirm_url.into());
        self
    }

    pub fn confirms(&self) -> bool {
        self.confirm_url.is_some()
    }

    /// Dispatch retries go to this standard queue, which is also a source of messages.
    pub fn with_retry_queue(mut self, retry_url: impl Into<String>) -> Self {
        let retry_url = retry_url.into();
        self.sources.push(retry_url.clone());
        self.retry_url = Some(retry_url);
        self
    }

    /// The URL of the queue a message came from (`source`: its event source ARN).
    fn url_of(&self, source: &str) -> &str {
        let name = source.rsplit(':').next().unwrap_or_default();
        self.sources
            .iter()
            .find(|url| !name.is_empty() && url.rsplit('/').next() == Some(name))
            .or_else(|| self.sources.first())
            .map(String::as_str)
            .unwrap_or_default()
    }
}

impl Settle for SqsSettle {
    async fn acknowledge(&self, message: &QueueMessage) -> Result<(), QueueError> {
        let url = self.url_of(&message.source);
        self.client
            .delete_message()
            .queue_url(url)
            .receipt_handle(&message.receipt)
            .send()
            .await
            .map_err(|error| {
                QueueError::new(format!(
                    "DeleteMessage on {url} failed: {}",
                    DisplayErrorContext(&error)
                ))
            })?;
        Ok(())
    }

    async fn retry_in_place(
        &self,
        message: &QueueMessage,
        delay_secs: u32,
    ) -> Result<(), QueueError> {
        SqsQueue::new(self.client.clone(), self.url_of(&message.source))
            .retry_later(&message.receipt, delay_secs)
            .await
    }

    async fn schedule_retry(&self, dispatch: &Dispatch, delay_secs: u32) -> Result<(), QueueError> {
        let Some(url) = &self.retry_url else {
            return Err(QueueError::new("no retry queue is configured"));
        };
        self.client
            .send_message()
            .queue_url(url)
            .message_body(dispatch.to_json())
            // Within SQS's 15 minutes; the retry policy's cap is the same.
            .delay_seconds(i32::try_from(delay_secs.min(MAX_DELAY_SECS)).unwrap_or(0))
            .send()
            .await
            .map_err(|error| {
                QueueError::new(format!(
                    "SendMessage to retry queue {url} failed: {}",
                    DisplayErrorContext(&error)
                ))
            })?;
        Ok(())
    }

    async fn schedule_confirmation(
        &self,
        confirmation: &Confirmation,
        delay_secs: u32,
    ) -> Result<(), QueueError> {
        let Some(url) = &self.confirm_url else {
            return Err(QueueError::new("no confirm queue is configured"));
        };
        self.client
            .send_message()
            .queue_url(url)
            .message_body(confirmation.to_json())
            .delay_seconds(i32::try_from(delay_secs.min(MAX_DELAY_SECS)).unwrap_or(0))
            .send()
            .await
            .map_err(|error| {
                QueueError::new(format!(
                    "SendMessage to confirm queue {url} failed: {}",
                    DisplayErrorContext(&error)
                ))
            })?;
        Ok(())
    }

    async fn dead_letter(
        &self,
        message: &QueueMessage,
        body: &str,
        reason: &DeadLetterReason,
    ) -> Result<(), QueueError> {
        // A group of its own, so `fluxrelay dlq list` can browse every dead letter (FIFO
        // hides a group's later messages while one is in flight).
        SqsQueue::new(self.client.clone(), self.url_of(&message.source))
            .dead_letter(
                &self.dead_letter_url,
                body,
                &message.id,
                &message.id,
                reason,
            )
            .await
    }
}

impl PushPublisher for SqsQueue {
    async fn publish_pushes(&self, pushes: &[Push]) -> Result<(), QueueError> {
        let messages = pushes
            .iter()
            .map(|push| Outgoing {
                group_id: push.project.id.to_string(),
                dedup_id: push.key.clone(),
                body: push.to_json(),
            })
            .collect();
        self.publish(messages).await
    }
}

impl DispatchPublisher for SqsQueue {
    async fn publish_dispatches(&self, dispatches: &[Dispatch]) -> Result<(), QueueError> {
        let messages = dispatches
            .iter()
            .map(|dispatch| Outgoing {
                group_id: dispatch.group_id().to_string(),
                dedup_id: dispatch.dedup_id(),
                body: dispatch.to_json(),
            })
            .collect();
        self.publish(messages).await
    }
}

fn visibility_timeout(delay_secs: u32) -> i32 {
    // 43 200 fits an i32, so the conversion cannot fail after the clamp.
    i32::try_from(delay_secs.min(MAX_VISIBILITY_SECS)).unwrap_or(i32::MAX)
}

fn all_groups_distinct(messages: &[Outgoing]) -> bool {
    let mut groups = std::collections::HashSet::with_capacity(messages.len());
    messages
        .iter()
        .all(|message| groups.insert(message.group_id.as_str()))
}

/// Split messages, in order, into batches of at most 10 entries and 256 KiB. A message
/// bigger than the byte limit travels alone (SQS then refuses it with a clear error).
fn batches(messages: Vec<Outgoing>) -> Vec<Vec<Outgoing>> {
    let mut batches: Vec<Vec<Outgoing>> = Vec::new();
    let mut current: Vec<Outgoing> = Vec::new();
    let mut bytes = 0;
    for message in messages {
        let full = current.len() == MAX_BATCH_ENTRIES || bytes + message.size() > MAX_BATCH_BYTES;
        if full && !current.is_empty() {
            batches.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += message.size();
        current.push(message);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// What is left when a batch could not be delivered completely.
#[derive(Debug, PartialEq, Eq)]
struct BatchFailure {
    failed: usize,
    detail: String,
}

/// Send one batch; resend the entries that failed without a sender fault, up to
/// [`MAX_ATTEMPTS`] attempts. Sender-fault failures are final at once (resending the same
/// entry cannot succeed). A failed call (transport, throttling after the SDK's own retries)
/// fails the whole batch.
async fn send_with_retries<F, Fut>(batch: Vec<Outgoing>, mut send: F) -> Result<(), BatchFailure>
where
    F: FnMut(Vec<(usize, Outgoing)>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<EntryFailure>, QueueError>>,
{
    let mut pending: Vec<(usize, Outgoing)> = batch.into_iter().enumerate().collect();
    let mut final_failures: Vec<EntryFailure> = Vec::new();
    for attempt in 1..=MAX_ATTEMPTS {
        let failures = send(pending.clone()).await.map_err(|error| BatchFailure {
            failed: pending.len() + final_failures.len(),
            detail: error.message,
        })?;
        let (retryable, sender_faults): (Vec<_>, Vec<_>) = failures
            .into_iter()
            .partition(|failure| !failure.sender_fault);
        final_failures.extend(sender_faults);
        if retryable.is_empty() || attempt == MAX_ATTEMPTS {
            final_failures.extend(retryable);
            break;
        }
        pending.retain(|(index, _)| retryable.iter().any(|failure| failure.index == *index));
        // A short pause lets a transient SQS fault pass (50 ms, then 100 ms).
        tokio::time::sleep(RETRY_PAUSE * 2u32.pow(attempt - 1)).await;
    }
    match final_failures.first() {
        None => Ok(()),
        Some(first) => Err(BatchFailure {
            failed: final_failures.len(),
            detail: format!(
                "first error code {}{}",
                first.code,
                if first.sender_fault {
                    ", sender fault"
                } else {
                    ""
                }
            ),
        }),
    }
}

/// The dead-letter attributes, in a fixed order, each value cleaned for SQS.
fn dead_letter_attributes(reason: &DeadLetterReason) -> Vec<(&'static str, String)> {
    let mut attributes = Vec::with_capacity(4);
    let reason_text = attribute_value(&reason.reason);
    attributes.push((
        ATTRIBUTE_REASON,
        if reason_text.is_empty() {
            "(no reason given)".to_string()
        } else {
            reason_text
        },
    ));
    let optional = [
        (
            ATTRIBUTE_STATUS,
            reason.status.map(|status| status.to_string()),
        ),
        (
            ATTRIBUTE_CLUSTER,
            reason.cluster.as_deref().map(attribute_value),
        ),
        (ATTRIBUTE_KEY, reason.key.as_deref().map(attribute_value)),
        (
            ATTRIBUTE_ATTEMPTS,
            reason.attempts.map(|attempts| attempts.to_string()),
        ),
    ];
    for (name, value) in optional {
        // SQS refuses empty attribute values: an absent and an empty value look the same.
        if let Some(value) = value.filter(|value| !value.is_empty()) {
            attributes.push((name, value));
        }
    }
    attributes
}

/// Strip control characters (and the two non-characters SQS refuses), then cut to
/// [`MAX_ATTRIBUTE_BYTES`] at a character boundary.
fn attribute_value(text: &str) -> String {
    let mut value = String::with_capacity(text.len().min(MAX_ATTRIBUTE_BYTES));
    for c in text
        .chars()
        .filter(|c| !c.is_control() && *c != '\u{FFFE}' && *c != '\u{FFFF}')
    {
        if value.len() + c.len_utf8() > MAX_ATTRIBUTE_BYTES {
            break;
        }
        value.push(c);
    }
    value
}

#[cfg(test)]
#[path = "sqs_test.rs"]
mod tests;
