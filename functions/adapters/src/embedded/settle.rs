//! `Settle` on the embedded queue: the same four operations the SQS adapter carries out,
//! for `fluxrelay serve`. Which to call, and in what order, is core's rule
//! (`fluxrelay_core::outcome::settle`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fluxrelay_core::confirm::message::Confirmation;
use fluxrelay_core::ports::{DeadLetterReason, QueueError, QueueMessage, Settle};
use fluxrelay_core::push::Dispatch;
use tokio::sync::Notify;

use super::{
    CONFIRM_QUEUE, DISPATCH_QUEUE, DISPATCH_RETRY_QUEUE, DeletedAndRecorded, Durability,
    EmbeddedQueue, JournalEntry, NewMessage, Receipt,
};

/// Settles messages received from an [`EmbeddedQueue`] (the message's `receipt` is the
/// queue's receipt text). `freed` is notified whenever a message leaves a FIFO group that
/// holds more, or a retry is scheduled, so an idle consumer looks again at once. (Not when
/// the group is left empty: nothing became receivable, and serve's dispatch would look
/// after each of a push's clusters for nothing.)
#[derive(Clone)]
pub struct EmbeddedSettle {
    queue: EmbeddedQueue,
    freed: Option<Arc<Notify>>,
    confirmations: Option<Arc<Notify>>,
    /// Acknowledged messages (id, receipt) not deleted yet: see
    /// [`EmbeddedSettle::holding_acknowledgements`].
    held: Option<Arc<Mutex<Vec<HeldAcknowledgement>>>>,
    /// How [`EmbeddedSettle::delete_held_and_record`] commits.
    held_durability: Durability,
}

/// An acknowledged message not deleted yet: its id (for the report) and its receipt.
type HeldAcknowledgement = (String, Receipt);

/// The held acknowledgements one [`EmbeddedSettle::delete_held_and_record`] carried out:
/// each message's id with why its delete failed, and the journal's outcome.
#[derive(Debug)]
pub struct HeldSettled {
    pub failed: Vec<(String, QueueError)>,
    pub recorded: Result<(), QueueError>,
}

impl EmbeddedSettle {
    pub fn new(queue: EmbeddedQueue) -> Self {
        Self {
            queue,
            freed: None,
            confirmations: None,
            held: None,
            held_durability: Durability::Ordered,
        }
    }

    /// Hold acknowledgements instead of deleting each at once, for
    /// [`EmbeddedSettle::delete_held_and_record`] to delete in one write with the journal
    /// lines that explain them. An acknowledgement is the last thing done to a message
    /// (its follow-ups are sent before), so holding it keeps the order of everything else.
    pub fn holding_acknowledgements(mut self) -> Self {
        self.held = Some(Arc::default());
        self
    }

    /// Commit the held acknowledgements' write as [`Durability::Deferred`], in the group of
    /// the next write someone waits for: for a consumer that waits on it for nothing but
    /// its log line and its next message of the same group (serve's dispatch).
    pub fn deferring_held(mut self) -> Self {
        self.held_durability = Durability::Deferred;
        self
    }

    /// Delete what was acknowledged since the last call and append `entries`, in one
    /// write. `Err`: nothing was deleted, and the messages come back after their
    /// visibility timeout (a duplicate trigger at worst).
    pub async fn delete_held_and_record(
        &self,
        entries: Vec<JournalEntry>,
    ) -> Result<HeldSettled, QueueError> {
        let held = match &self.held {
            Some(held) => std::mem::take(&mut *held.lock().unwrap_or_else(PoisonError::into_inner)),
            None => Vec::new(),
        };
        if held.is_empty() && entries.is_empty() {
            return Ok(HeldSettled {
                failed: Vec::new(),
                recorded: Ok(()),
            });
        }
        let (ids, receipts): (Vec<String>, Vec<Receipt>) = held.into_iter().unzip();
        let DeletedAndRecorded {
            deleted,
            groups_not_empty,
            recorded,
        } = self
            .queue
            .delete_and_record_async(receipts, entries, self.held_durability)
            .await?;
        if groups_not_empty {
            self.freed();
        }
        let failed = ids
            .into_iter()
            .zip(deleted)
            .filter_map(|(id, deleted)| deleted.err().map(|error| (id, error)))
            .collect();
        Ok(HeldSettled { failed, recorded })
    }

    pub fn notifying(mut self, freed: Arc<Notify>) -> Self {
        self.freed = Some(freed);
        self
    }

    /// Notify `wake` whenever a confirmation is scheduled (the confirm worker's).
    pub fn notifying_confirmations(mut self, wake: Arc<Notify>) -> Self {
        self.confirmations = Some(wake);
        self
    }

    fn freed(&self) {
        if let Some(freed) = &self.freed {
            freed.notify_one();
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&EmbeddedQueue) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let queue = self.queue.clone();
        tokio::task::spawn_blocking(move || operation(&queue))
            .await
            .map_err(|error| QueueError::new(format!("embedded queue task: {error}")))?
    }
}

impl Settle for EmbeddedSettle {
    async fn acknowledge(&self, message: &QueueMessage) -> Result<(), QueueError> {
        let receipt: Receipt = message.receipt.parse()?;
        if let Some(held) = &self.held {
            held.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((message.id.clone(), receipt));
            return Ok(());
        }
        if self.queue.delete_async(&receipt).await? {
            self.freed();
        }
        Ok(())
    }

    async fn retry_in_place(
        &self,
        message: &QueueMessage,
        delay_secs: u32,
    ) -> Result<(), QueueError> {
        let receipt: Receipt = message.receipt.parse()?;
        let delay = Duration::from_secs(delay_secs.into());
        self.queue.change_visibility_async(&receipt, delay).await
    }

    async fn schedule_retry(&self, dispatch: &Dispatch, delay_secs: u32) -> Result<(), QueueError> {
        let body = dispatch.to_json();
        let delay = Duration::from_secs(delay_secs.into());
        self.queue
            .send_delayed_async(DISPATCH_RETRY_QUEUE, &body, delay)
            .await?;
        self.freed();
        Ok(())
    }

    async fn schedule_confirmation(
        &self,
        confirmation: &Confirmation,
        delay_secs: u32,
    ) -> Result<(), QueueError> {
        let body = confirmation.to_json();
        let delay = Duration::from_secs(delay_secs.into());
        // A start is deduplicated (its group is its own: the pair's dedup id).
        let start = (confirmation.checks == 0 && delay_secs == 0).then(|| confirmation.dedup_id());
        match start {
            Some(dedup) => {
                let start = NewMessage::new(dedup.clone(), dedup, body);
                self.queue.send_ordered_async(CONFIRM_QUEUE, start).await?;
            }
            None => {
                self.queue
                    .send_delayed_async(CONFIRM_QUEUE, &body, delay)
                    .await?
            }
        }
        if let Some(wake) = &self.confirmations {
            wake.notify_one();
        }
        Ok(())
    }

    async fn dead_letter(
        &self,
        message: &QueueMessage,
        body: &str,
        reason: &DeadLetterReason,
    ) -> Result<(), QueueError> {
        let receipt: Receipt = message.receipt.parse()?;
        // A retry's dead letter is the dispatch's, filed in the cluster's group: what
        // `fluxrelay dlq` lists and redrives (as on AWS, where both queues' dead letters go
        // to the dispatch dead-letter queue).
        let file_as = (message.source == DISPATCH_RETRY_QUEUE)
            .then(|| reason.cluster.clone())
            .flatten();
        let (body, reason) = (body.to_string(), reason.clone());
        self.blocking(move |queue| {
            let file_as = file_as.as_deref().map(|cluster| (DISPATCH_QUEUE, cluster));
            queue.dead_letter_copy(&receipt, file_as, &body, &reason)
        })
        .await
    }
}
