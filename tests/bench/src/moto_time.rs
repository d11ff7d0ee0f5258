//! moto's own time per SQS call of the kinds on the SQS path, so the path's latency can be
//! split into moto's part and the rest.

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, SendMessageBatchRequestEntry,
};
use fluxrelay_testkit::moto::{Moto, create_fifo_queue};

use crate::stats::Samples;

/// Rounds timed per operation (after 3 untimed).
pub const ROUNDS: usize = 20;

pub struct MotoMs {
    pub send: f64,
    /// From the start of a send to the return of a long poll that was already waiting: one
    /// hop of the path, where the pollers wait before the message exists (moto hands the
    /// message over while it answers the send, so this is about one round trip, not two).
    pub hop: f64,
    pub delete: f64,
}

/// moto's own time per call of the kinds on the path, as the SDK client sees it, one
/// message at a time on an idle FIFO queue: p50 of [`ROUNDS`], after 3 untimed rounds.
pub async fn round_trips(moto: &Moto) -> MotoMs {
    let sqs = moto.sqs().await;
    let url = create_fifo_queue(&sqs, "bench-sqs-path-moto.fifo").await;
    let mut times: [Vec<Duration>; 3] = Default::default();
    for round in 0..ROUNDS + 3 {
        let waiting = tokio::spawn(
            sqs.receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .wait_time_seconds(20)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send(),
        );
        // Let the long poll reach moto and wait there.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let entry = SendMessageBatchRequestEntry::builder()
            .id("m")
            .message_body(format!("{{\"round\":{round}}}"))
            .message_group_id("g")
            .message_deduplication_id(format!("round-{round}"))
            .build()
            .expect("batch entry");
        let started = Instant::now();
        sqs.send_message_batch()
            .queue_url(&url)
            .entries(entry)
            .send()
            .await
            .expect("SendMessageBatch on moto");
        let sent = started.elapsed();
        let received = waiting
            .await
            .expect("long poll task")
            .expect("ReceiveMessage on moto");
        let hop = started.elapsed();
        let handle = received
            .messages
            .unwrap_or_default()
            .first()
            .and_then(|m| m.receipt_handle.clone())
            .expect("the message just sent");
        let entry = DeleteMessageBatchRequestEntry::builder()
            .id("m")
            .receipt_handle(handle)
            .build()
            .expect("delete entry");
        let started = Instant::now();
        sqs.delete_message_batch()
            .queue_url(&url)
            .entries(entry)
            .send()
            .await
            .expect("DeleteMessageBatch on moto");
        let delete = started.elapsed();
        if round >= 3 {
            for (times, time) in times.iter_mut().zip([sent, hop, delete]) {
                times.push(time);
            }
        }
    }
    let [send, hop, delete] = times.map(|t| Samples::from_durations(&t).percentile(50.0));
    MotoMs { send, hop, delete }
}
