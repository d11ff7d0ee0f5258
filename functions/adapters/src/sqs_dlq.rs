//! The SQS dead-letter queues, for `fluxrelay dlq list|redrive`: browse every message with
//! its reason, put messages back on their source queue, delete what was redriven.
//!
//! SQS has no "peek": browsing receives each message, hiding it for a while, and then
//! makes what it did not redrive visible again at once. In a FIFO queue, messages of a
//! group with a message in flight are not returned, so dispatch dead-letters each message
//! in a group of its own (its message id); only messages the queue's redrive policy moved
//! (after `maxReceiveCount`) keep their cluster's group, and a browse may see just the
//! first of those per cluster — `Browse::maybe_incomplete` says so.
//!
//! A browse is bounded: it receives page by page ([`Browser`]) and stops at the first of an
//! empty receive, `max_messages` received, or the hold running out (`margin` before the
//! first message it hid could show again, so nothing it saw is received twice); a message
//! seen again stops it too. What it did not reach is for the next run.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, Message, MessageSystemAttributeName,
};
use fluxrelay_core::confirm::message::Confirmation;
use fluxrelay_core::ports::{DeadLetterReason, QueueError};
use fluxrelay_core::push::{Dispatch, Push};

use crate::sqs::{
    ATTRIBUTE_ATTEMPTS, ATTRIBUTE_CLUSTER, ATTRIBUTE_KEY, ATTRIBUTE_REASON, ATTRIBUTE_STATUS,
};

/// How long a browse hides the messages it has seen; long enough to list a large queue,
/// short enough that an interrupted browse does not delay a redrive by much.
pub const BROWSE_HOLD: Duration = Duration::from_secs(120);
/// A browse stops receiving this long before its hold ends, to finish with what it saw.
pub const BROWSE_MARGIN: Duration = Duration::from_secs(30);
/// Most dead letters one browse receives (and keeps in memory).
pub const BROWSE_MAX_MESSAGES: usize = 10_000;

/// How far one browse goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrowseLimits {
    /// How long each received message stays hidden.
    pub hold: Duration,
    /// Stop receiving once less than this is left of the hold.
    pub margin: Duration,
    /// Stop receiving after this many messages.
    pub max_messages: usize,
}

impl Default for BrowseLimits {
    fn default() -> Self {
        Self {
            hold: BROWSE_HOLD,
            margin: BROWSE_MARGIN,
            max_messages: BROWSE_MAX_MESSAGES,
        }
    }
}

/// Why a browse stopped receiving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrowseStop {
    /// An empty receive: every visible message was seen.
    Empty,
    /// `max_messages` were received.
    Limit,
    /// The hold was about to end.
    Hold,
    /// A message came back (its hold ended, or another reader let it go).
    SeenAgain,
}

impl BrowseStop {
    /// What a person should know when the browse did not reach the end of the queue.
    pub fn note(self, received: usize) -> Option<String> {
        match self {
            BrowseStop::Empty => None,
            BrowseStop::Limit => Some(format!(
                "stopped after {received} dead letters (--max {received}); more are on the queue: run again (a redrive continues where this one stopped), or raise --max"
            )),
            BrowseStop::Hold | BrowseStop::SeenAgain => Some(format!(
                "stopped after {received} dead letters: the queue could not be read before the first ones would show again; more may be on the queue: run again"
            )),
        }
    }
}

/// Receives a dead-letter queue page by page, within [`BrowseLimits`].
pub struct Browser<'a> {
    client: &'a Client,
    dlq_url: &'a str,
    limits: BrowseLimits,
    started: Instant,
    seen: HashSet<String>,
    stop: Option<BrowseStop>,
}

impl<'a> Browser<'a> {
    pub fn new(client: &'a Client, dlq_url: &'a str, limits: BrowseLimits) -> Self {
        Self {
            client,
            dlq_url,
            limits,
            started: Instant::now(),
            seen: HashSet::new(),
            stop: None,
        }
    }

    /// Messages received so far.
    pub fn received(&self) -> usize {
        self.seen.len()
    }

    /// Why it stopped; `None` while it has not.
    pub fn stopped(&self) -> Option<BrowseStop> {
        self.stop
    }

    /// The next page (at most 10 messages, each hidden for the hold); `None` once stopped.
    pub async fn next_page(&mut self) -> Result<Option<Vec<SqsDeadLetter>>, QueueError> {
        if self.stop.is_some() {
            return Ok(None);
        }
        let room = self.limits.max_messages.saturating_sub(self.seen.len());
        if room == 0 {
            self.stop = Some(BrowseStop::Limit);
            return Ok(None);
        }
        if self.started.elapsed() + self.limits.margin >= self.limits.hold {
            self.stop = Some(BrowseStop::Hold);
            return Ok(None);
        }
        let output = self
            .client
            .receive_message()
            .queue_url(self.dlq_url)
            .max_number_of_messages(i32::try_from(room.min(10)).unwrap_or(10))
            .wait_time_seconds(0)
            .visibility_timeout(
                i32::try_from(self.limits.hold.as_secs().max(1)).unwrap_or(i32::MAX),
            )
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|error| sqs_error("ReceiveMessage", self.dlq_url, error))?;
        let received = output.messages();
        if received.is_empty() {
            self.stop = Some(BrowseStop::Empty);
            return Ok(None);
        }
        let mut page = Vec::with_capacity(received.len());
        for message in received.iter().filter_map(dead_letter) {
            if self.seen.insert(message.message_id.clone()) {
                page.push(message);
            } else {
                self.stop = Some(BrowseStop::SeenAgain);
            }
        }
        Ok(Some(page))
    }
}

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
            .or_else(|| Confirmation::from_json(&self.body).ok().map(|c| c.cluster))
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

    /// Only what [`release`] needs (the receipt handle), so a long browse keeps no bodies.
    pub fn hold_only(self) -> SqsDeadLetter {
        SqsDeadLetter {
            body: String::new(),
            reason: None,
            ..self
        }
    }

    /// The push it carries (for project and ref in listings).
    pub fn push(&self) -> Option<Push> {
        Dispatch::from_json(&self.body)
            .map(|dispatch| dispatch.push)
            .or_else(|_| Push::from_json(&self.body))
            .ok()
            .or_else(|| Confirmation::from_json(&self.body).ok().map(|c| c.push))
    }
}

#[derive(Debug, Clone)]
pub struct Browse {
    /// Oldest first.
    pub messages: Vec<SqsDeadLetter>,
    /// Some messages share a FIFO group, so later ones of that group may be hidden behind
    /// them until the next browse.
    pub maybe_incomplete: bool,
    /// Why it stopped: anything but `Empty` means more may be on the queue.
    pub stopped: BrowseStop,
}

fn sqs_error(operation: &str, queue_url: &str, error: impl std::error::Error) -> QueueError {
    QueueError::new(format!(
        "{operation} on {queue_url} failed: {}",
        DisplayErrorContext(&error)
    ))
}

/// Receive the visible messages of `dlq_url` within `limits`, each hidden for the hold;
/// `progress` is told the count after each page. Call `release` (or `delete`) for each
/// afterwards.
pub async fn browse(
    client: &Client,
    dlq_url: &str,
    limits: BrowseLimits,
    mut progress: impl FnMut(usize),
) -> Result<Browse, QueueError> {
    let mut browser = Browser::new(client, dlq_url, limits);
    let mut messages = Vec::new();
    while let Some(page) = browser.next_page().await? {
        messages.extend(page);
        progress(messages.len());
    }
    messages.sort_by_key(|message| message.sent_at_ms);
    let mut groups: Vec<&str> = messages.iter().map(|m| m.group_id.as_str()).collect();
    groups.sort_unstable();
    groups.dedup();
    let maybe_incomplete = groups.len() < messages.len();
    Ok(Browse {
        messages,
        maybe_incomplete,
        stopped: browser.stopped().unwrap_or(BrowseStop::Empty),
    })
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
    let mut send = client
        .send_message()
        .queue_url(target_url)
        .message_body(&message.body);
    if target_url.ends_with(".fifo") {
        let group = message.source_group().ok_or_else(|| {
            QueueError::new(format!(
                "message {} is neither a Dispatch nor a Push; left on {dlq_url}",
                message.message_id
            ))
        })?;
        send = send
            .message_group_id(group)
            .message_deduplication_id(format!("redrive-{}", message.message_id));
    }
    send.send()
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
/// `...-dispatch-dlq.fifo` → `...-dispatch.fifo`; the standard confirm queue's
/// `...-confirm-dlq` → `...-confirm`.
pub fn source_queue_url(dlq_url: &str) -> Option<String> {
    dlq_url
        .strip_suffix("-dlq.fifo")
        .map(|stem| format!("{stem}.fifo"))
        .or_else(|| {
            dlq_url
                .strip_suffix("-confirm-dlq")
                .map(|stem| format!("{stem}-confirm"))
        })
}
