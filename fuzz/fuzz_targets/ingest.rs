//! Webhook parse + auth: the real `ingest` path with fuzzer-chosen headers and body.
//!
//! Input layout (so that the seed corpus can be plain GitLab payloads with a short prefix):
//! byte 0 picks the `X-Gitlab-Event`, byte 1 is a set of flags (token right / wrong /
//! absent, a signing key configured and the request signed, `X-Gitlab-Instance` present,
//! an extra fuzzer-chosen header), then the optional extra header as
//! `<name len><name><value len><value>`, then the raw body.
//!
//! Checked on every input: no panic; the status is one of 202/400/401/413; nothing is
//! enqueued unless the answer is 202 `accepted`; an accepted push is well formed and its
//! key is the one its fields give; the answer never contains the token and a rejection stays
//! small.
#![no_main]

use std::future::Future;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use fluxrelay_core::auth::{AuthConfig, SigningKey};
use fluxrelay_core::ingest::{Accepted, IngestConfig, IngestResponse, delivery_id, ingest};
use fluxrelay_core::ports::{PushPublisher, QueueError};
use fluxrelay_core::{Push, Secret};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

const TOKEN: &str = "fuzz-webhook-token-7d1f";
const KEY_BYTES: [u8; 32] = [0x42; 32];
const NOW: i64 = 1_763_800_000;
/// Small, so the fuzzer reaches the 413 branch too.
const MAX_BODY: usize = 8 * 1024;
const EVENTS: [&str; 7] = [
    "Push Hook",
    "Tag Push Hook",
    "System Hook",
    "Pipeline Hook",
    "Merge Request Hook",
    "push hook",
    "",
];

#[derive(Default)]
struct RecordingQueue(Mutex<Vec<Push>>);

impl PushPublisher for RecordingQueue {
    async fn publish_pushes(&self, pushes: &[Push]) -> Result<(), QueueError> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(pushes);
        Ok(())
    }
}

fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

fn take<'a>(data: &mut &'a [u8]) -> &'a [u8] {
    let Some((&len, rest)) = data.split_first() else {
        return &[];
    };
    let len = usize::from(len).min(rest.len());
    let (taken, rest) = rest.split_at(len);
    *data = rest;
    taken
}

fn config(signed: bool) -> IngestConfig {
    let auth = if signed {
        let key =
            SigningKey::parse(&format!("whsec_{}", BASE64.encode(KEY_BYTES))).expect("a valid key");
        AuthConfig::new(vec![], vec![key])
    } else {
        AuthConfig::new(vec![Secret::new(TOKEN)], vec![])
    }
    .expect("a valid config");
    IngestConfig {
        max_body_bytes: MAX_BODY,
        ..IngestConfig::new(auth)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut data = data;
    let (event, flags) = match data {
        [event, flags, rest @ ..] => {
            data = rest;
            (*event, *flags)
        }
        _ => return,
    };
    let signed = flags & 0b1000 != 0;
    let mut headers = HeaderMap::new();
    let event = EVENTS[usize::from(event) % EVENTS.len()];
    if !event.is_empty() {
        headers.insert("x-gitlab-event", HeaderValue::from_static(event));
    }
    match flags & 0b11 {
        0 => {
            headers.insert("x-gitlab-token", HeaderValue::from_static(TOKEN));
        }
        1 => {
            headers.insert("x-gitlab-token", HeaderValue::from_static("wrong"));
        }
        _ => {}
    }
    if flags & 0b100 != 0 {
        headers.insert(
            "x-gitlab-instance",
            HeaderValue::from_static("https://gitlab.example.com"),
        );
    }
    if flags & 0b1_0000 != 0 {
        let name = take(&mut data);
        let value = take(&mut data);
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    let body = data;
    if signed {
        let timestamp = NOW.to_string();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&KEY_BYTES).expect("any key length");
        mac.update(format!("msg_fuzz.{timestamp}.").as_bytes());
        mac.update(body);
        let signature = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
        for (name, value) in [
            ("webhook-id", "msg_fuzz".to_string()),
            ("webhook-timestamp", timestamp),
            ("webhook-signature", signature),
        ] {
            headers.insert(name, HeaderValue::from_str(&value).expect("ASCII"));
        }
    }

    let queue = RecordingQueue::default();
    let now = time::OffsetDateTime::from_unix_timestamp(NOW).expect("a valid time");
    let result = poll_once(ingest(&config(signed), &queue, &headers, body, now, "fuzz"))
        .expect("ingest with an in-memory queue completes on the first poll");
    let response = IngestResponse::from_result(&result);
    let enqueued = queue.0.into_inner().unwrap_or_else(|e| e.into_inner());

    assert!(
        [202, 400, 401, 413].contains(&response.status),
        "{}",
        response.status
    );
    assert!(
        !response.body.contains(TOKEN),
        "the answer echoes the token"
    );
    match &result {
        Ok(Accepted::Enqueued { keys }) => {
            assert!(!enqueued.is_empty());
            assert_eq!(
                keys,
                &enqueued.iter().map(|p| p.key.clone()).collect::<Vec<_>>()
            );
            for push in &enqueued {
                assert!(push.git_ref.starts_with("refs/") && push.git_ref.len() > 5);
                // A Git push's key is its fields and the delivery (a pipeline's adds its id).
                if push.event.is_git_push() {
                    assert_eq!(
                        push.key,
                        Push::compute_key(
                            &push.instance,
                            push.project.id,
                            &push.git_ref,
                            &push.before,
                            &push.after,
                            &delivery_id(&headers, "fuzz")
                        )
                    );
                }
                for text in [&push.git_ref, &push.project.path, &push.project.web_url] {
                    assert!(!text.is_empty() && !text.chars().any(char::is_control));
                }
                assert!(
                    push.instance.starts_with("http://") || push.instance.starts_with("https://")
                );
                // A Push must survive the queue.
                assert_eq!(Push::from_json(&push.to_json()).ok().as_ref(), Some(push));
            }
        }
        Ok(Accepted::Ignored { reason }) => {
            assert!(enqueued.is_empty());
            assert!(reason.len() <= 512, "reason of {} bytes", reason.len());
        }
        Err(_) => {
            assert!(enqueued.is_empty());
            assert!(
                response.body.len() <= 4096,
                "answer of {} bytes",
                response.body.len()
            );
        }
    }
    if body.len() > MAX_BODY {
        assert_eq!(response.status, 413);
    }
});
