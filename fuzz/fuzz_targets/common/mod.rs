//! What the artifact fuzz targets share: a recording queue, a one-poll executor, and the
//! checks every answer and every accepted artifact push must pass.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use fluxrelay_core::ingest::{Accepted, IngestError, IngestResponse};
use fluxrelay_core::oci::{is_digest, is_tag};
use fluxrelay_core::ports::{PushPublisher, QueueError};
use fluxrelay_core::{Push, PushEvent};

pub const TOKEN: &str = "fuzz-registry-token-3b9e";
pub const NOW: i64 = 1_763_800_000;
/// Small, so the fuzzer reaches the 413 branch too.
pub const MAX_BODY: usize = 8 * 1024;

#[derive(Default)]
pub struct RecordingQueue(pub Mutex<Vec<Push>>);

impl PushPublisher for RecordingQueue {
    async fn publish_pushes(&self, pushes: &[Push]) -> Result<(), QueueError> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(pushes);
        Ok(())
    }
}

pub fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// An artifact push is well formed: its artifact reads back from its fields, its tag and
/// digest are valid, its text has no control characters, its key is 64 hex digits, and it
/// survives the queue's JSON.
pub fn check_artifact_push(push: &Push) {
    assert_eq!(push.event, PushEvent::ArtifactPush);
    let artifact = push.artifact().expect("an artifact push carries its artifact");
    assert_eq!(push.instance, format!("oci://{}", artifact.location.registry));
    assert_eq!(push.project.path, artifact.location.repository);
    assert!(is_tag(&artifact.tag), "{:?}", artifact.tag);
    assert!(is_digest(&artifact.digest), "{:?}", artifact.digest);
    for text in [&push.instance, &push.project.path, &push.git_ref, &push.after] {
        assert!(!text.chars().any(char::is_control), "{text:?}");
    }
    assert_eq!(push.key.len(), 64);
    assert_eq!(Push::from_json(&push.to_json()).ok().as_ref(), Some(push));
}

/// The answer is one of ingest's statuses, carries no token, and a push is queued only for
/// a 202 accepted; rejections and ignore reasons stay short.
pub fn check_answer(
    result: &Result<Accepted, IngestError>,
    enqueued: &[Push],
    body_len: usize,
    check_push: fn(&Push),
) {
    let response = IngestResponse::from_result(result);
    assert!([202, 400, 401, 413].contains(&response.status), "{}", response.status);
    assert!(!response.body.contains(TOKEN), "the answer echoes the token");
    match result {
        Ok(Accepted::Enqueued { keys }) => {
            assert!(!enqueued.is_empty());
            assert_eq!(keys, &enqueued.iter().map(|p| p.key.clone()).collect::<Vec<_>>());
            enqueued.iter().for_each(check_push);
        }
        Ok(Accepted::Ignored { reason }) => {
            assert!(enqueued.is_empty());
            assert!(reason.len() <= 512, "reason of {} bytes", reason.len());
        }
        Err(_) => {
            assert!(enqueued.is_empty());
            assert!(response.body.len() <= 4096, "answer of {} bytes", response.body.len());
        }
    }
    if body_len > MAX_BODY {
        assert_eq!(response.status, 413);
    }
}
