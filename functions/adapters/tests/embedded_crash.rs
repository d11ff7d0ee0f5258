//! A send that returned `Ok` survives SIGKILL of the process that made it, and so does a
//! delete (an ordered write: committed without an fsync of its own, which a kill does not
//! undo). The test re-runs this test binary as a child that sends (from several threads, so
//! writes share group commits) and consumes until killed, printing each acknowledged id and
//! each deleted one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use fluxrelay_adapters::embedded::{EmbeddedQueue, NewMessage};

const CHILD_ENV: &str = "FLUXRELAY_EMBEDDED_CRASH_CHILD_PATH";
const ACKED: &str = "acked ";
const DELETING: &str = "deleting ";
const DELETED: &str = "deleted ";

/// Threads sending at once, so acknowledged sends include ones that shared a group commit.
const SENDERS: usize = 4;

/// The child: sends from `SENDERS` threads and consumes from one until it is killed,
/// printing the id of every acknowledged send and of every message it deleted.
fn send_until_killed(path: &str) -> ! {
    let queue = EmbeddedQueue::open(path).unwrap();
    let mut senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let queue = queue.clone();
            std::thread::spawn(move || send_forever(&queue, sender))
        })
        .collect();
    senders.push(std::thread::spawn(move || consume_forever(&queue)));
    for sender in senders {
        let _ = sender.join();
    }
    unreachable!("sends until the parent kills it")
}

fn send_forever(queue: &EmbeddedQueue, sender: usize) {
    for n in 0.. {
        if n % 2 == 0 {
            let id = format!("single-{sender}-{n}");
            queue.send("q", "g", &id, &id).unwrap();
            println!("{ACKED}{id}");
        } else {
            let batch: Vec<NewMessage> = (0..10)
                .map(|i| {
                    let id = format!("batch-{sender}-{n}-{i}");
                    NewMessage::new(format!("g{i}"), id.clone(), id)
                })
                .collect();
            queue.send_batch("q", &batch).unwrap();
            for message in batch {
                println!("{ACKED}{}", message.body);
            }
        }
    }
}

/// Receives and deletes (ordered writes), printing each id before its delete starts and
/// once it returned: a kill between the two may or may not have undone the delete.
fn consume_forever(queue: &EmbeddedQueue) {
    loop {
        for message in queue.receive("q", 10, Duration::from_secs(600)).unwrap() {
            println!("{DELETING}{}", message.body);
            queue.delete(&message.receipt).unwrap();
            println!("{DELETED}{}", message.body);
        }
    }
}

#[test]
fn every_acknowledged_send_survives_sigkill() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        send_until_killed(&path);
    }
    let path = std::env::temp_dir().join(format!("fluxrelay-crash-{}.sqlite", std::process::id()));
    remove_queue_file(&path);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "every_acknowledged_send_survives_sigkill",
            "--nocapture",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut acked, mut deleting, mut deleted) = (HashSet::new(), HashSet::new(), HashSet::new());
    let mut note = |line: &str| {
        if let Some(id) = line.strip_prefix(ACKED) {
            acked.insert(id.to_string());
        } else if let Some(id) = line.strip_prefix(DELETING) {
            deleting.insert(id.to_string());
        } else if let Some(id) = line.strip_prefix(DELETED) {
            deleted.insert(id.to_string());
        }
    };
    let mut seen = 0;
    while seen < 1_000 {
        note(&lines.next().expect("child ended early").unwrap());
        seen += 1;
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no final commit
    child.wait().unwrap();
    // Acknowledgements printed before the kill are still in the pipe.
    for line in lines {
        note(&line.unwrap());
    }

    let queue = EmbeddedQueue::open(&path).unwrap();
    // What the dead child had received and not deleted is deliverable again (as serve
    // releases its leases at start).
    queue.release_leases("q").unwrap();
    let mut stored = HashSet::new();
    loop {
        let received = queue.receive("q", 100, Duration::from_secs(600)).unwrap();
        if received.is_empty() {
            break;
        }
        for message in received {
            queue.delete(&message.receipt).unwrap();
            stored.insert(message.body);
        }
    }
    drop(queue);
    remove_queue_file(&path);

    assert!(
        !deleted.is_empty(),
        "the child deleted nothing before the kill"
    );
    // A message whose delete had started when the child was killed may be gone: its delete
    // can have committed before the child printed that it returned.
    let missing: Vec<_> = acked
        .difference(&stored)
        .filter(|id| !deleting.contains(*id))
        .collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    let undeleted: Vec<_> = deleted.intersection(&stored).collect();
    assert!(
        undeleted.is_empty(),
        "deleted before the kill, back after it: {undeleted:?}"
    );
    eprintln!(
        "acknowledged before SIGKILL: {}, deleted: {}, stored after restart: {}",
        acked.len(),
        deleted.len(),
        stored.len()
    );
}

fn remove_queue_file(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.to_path_buf().into_os_string();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}
