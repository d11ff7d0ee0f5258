//! An SQS event source mapping in a tokio task, as Lambda's poller works for a FIFO queue:
//! long-poll `ReceiveMessage` (up to the batch size, `WaitTimeSeconds` 20), hand the
//! messages to the function as one `SqsEvent`, then delete every message the function did
//! not report as a batch item failure (`fluxrelay_e2e::acknowledge`, shared with the
//! end-to-end tests). It keeps what the cost model needs: each invocation's handler time
//! and size, and its empty receives.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::MessageSystemAttributeName;

/// The event source mapping's long poll (the SQS maximum).
const WAIT_TIME_SECONDS: i32 = 20;

#[derive(Clone, Copy, Debug)]
pub struct Invocation {
    pub messages: usize,
    pub handler: Duration,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub invocations: Vec<Invocation>,
    /// Long polls that ended without a message.
    pub empty_receives: usize,
    /// Batches received, and batches whose messages the poller has settled (deleted).
    pub received: usize,
    pub settled: usize,
    /// The largest message body seen, in bytes.
    pub largest_body: usize,
}

pub struct Poller {
    stats: Arc<Mutex<Stats>>,
    task: tokio::task::JoinHandle<()>,
}

impl Poller {
    pub fn start<F, Fut>(
        sqs: aws_sdk_sqs::Client,
        queue_url: String,
        batch_size: i32,
        function: F,
    ) -> Poller
    where
        F: Fn(SqsEvent) -> Fut + Send + 'static,
        Fut: Future<Output = SqsBatchResponse> + Send,
    {
        let stats = Arc::new(Mutex::new(Stats::default()));
        let shared = stats.clone();
        let task = tokio::spawn(async move {
            loop {
                let output = sqs
                    .receive_message()
                    .queue_url(&queue_url)
                    .max_number_of_messages(batch_size)
                    .wait_time_seconds(WAIT_TIME_SECONDS)
                    .message_system_attribute_names(MessageSystemAttributeName::All)
                    .send()
                    .await
                    .expect("ReceiveMessage (long poll) on moto");
                let event =
                    fluxrelay_e2e::sqs_event(&queue_url, output.messages.unwrap_or_default());
                if event.records.is_empty() {
                    shared.lock().unwrap().empty_receives += 1;
                    continue;
                }
                {
                    let mut stats = shared.lock().unwrap();
                    stats.received += 1;
                    let largest = event.records.iter().filter_map(|r| r.body.as_ref());
                    let largest = largest.map(String::len).max().unwrap_or(0);
                    stats.largest_body = stats.largest_body.max(largest);
                }
                let started = Instant::now();
                let response = function(event.clone()).await;
                let handler = started.elapsed();
                fluxrelay_e2e::acknowledge(&sqs, &queue_url, &event, &response).await;
                let mut stats = shared.lock().unwrap();
                stats.invocations.push(Invocation {
                    messages: event.records.len(),
                    handler,
                });
                stats.settled += 1;
            }
        });
        Poller { stats, task }
    }

    /// Whether every batch received so far has been handled and deleted.
    pub fn idle(&self) -> bool {
        let stats = self.stats.lock().unwrap();
        stats.received == stats.settled
    }

    pub fn invocations(&self) -> Vec<Invocation> {
        self.stats.lock().unwrap().invocations.clone()
    }

    pub fn empty_receives(&self) -> usize {
        self.stats.lock().unwrap().empty_receives
    }

    pub fn largest_body(&self) -> usize {
        self.stats.lock().unwrap().largest_body
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.task.abort();
    }
}
