//! Throughput of the embedded queue on this machine's disk, printed, never asserted:
//! `cargo test -p fluxrelay-adapters --test embedded_throughput -- --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use fluxrelay_adapters::embedded::{EmbeddedQueue, NewMessage, SendOutcome};

const MESSAGES: usize = 5_000;

fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "fluxrelay-throughput-{name}-{}.sqlite",
        std::process::id()
    ))
}

fn remove(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.to_path_buf().into_os_string();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}

fn body(n: usize) -> String {
    // About the size of a Dispatch message.
    format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(900))
}

fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

#[test]
fn prints_messages_per_second_for_single_sends_and_batches_of_ten() {
    let path = temp_path("send");
    remove(&path);
    let queue = EmbeddedQueue::open(&path).unwrap();

    let start = Instant::now();
    for n in 0..MESSAGES {
        let id = format!("single-{n}");
        let outcome = queue
            .send("q", &format!("g{}", n % 10), &id, &body(n))
            .unwrap();
        assert_eq!(outcome, SendOutcome::Enqueued);
    }
    let single = start.elapsed();

    let start = Instant::now();
    for chunk in 0..MESSAGES / 10 {
        let batch: Vec<NewMessage> = (0..10)
            .map(|i| {
                let n = chunk * 10 + i;
                NewMessage::new(format!("g{i}"), format!("batch-{n}"), body(n))
            })
            .collect();
        queue.send_batch("q", &batch).unwrap();
    }
    let batched = start.elapsed();

    let start = Instant::now();
    let mut received = 0;
    loop {
        let messages = queue.receive("q", 10, Duration::from_secs(600)).unwrap();
        if messages.is_empty() {
            break;
        }
        for message in &messages {
            queue.delete(&message.receipt).unwrap();
        }
        received += messages.len();
    }
    let drained = start.elapsed();
    assert_eq!(received, 2 * MESSAGES);

    eprintln!(
        "embedded queue (synchronous=FULL, ~1 KiB bodies): {MESSAGES} single sends in {single:.2?} \
         = {:.0} msg/s; {MESSAGES} in batches of 10 in {batched:.2?} = {:.0} msg/s; \
         receive(10) + delete each of {received} in {drained:.2?} = {:.0} msg/s",
        per_second(MESSAGES, single),
        per_second(MESSAGES, batched),
        per_second(received, drained),
    );
    drop(queue);
    remove(&path);
}
