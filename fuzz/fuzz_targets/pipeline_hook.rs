//! GitLab `Pipeline Hook`s through the real `ingest` path (the `/webhook` endpoint).
//!
//! Input: byte 0 flags (bits 0-1: token right, wrong, absent; bit 2: `X-Gitlab-Instance`
//! present), then the raw body. Checked: no panic; the status is one of 202/400/401/413;
//! nothing is enqueued unless accepted; an accepted pipeline is one `pipeline` event with a
//! full ref, a commit, an http(s) instance and control-free text, that survives the queue.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use common::{MAX_BODY, NOW, RecordingQueue, TOKEN, check_answer, poll_once};
use fluxrelay_core::auth::AuthConfig;
use fluxrelay_core::ingest::{IngestConfig, ingest};
use fluxrelay_core::{Push, PushEvent, Secret};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fn check_pipeline(push: &Push) {
    assert_eq!(push.event, PushEvent::Pipeline);
    assert!(push.git_ref.starts_with("refs/") && push.git_ref.len() > 5);
    assert!(push.after.len() == 40 || push.after.len() == 64);
    assert!(push.instance.starts_with("http://") || push.instance.starts_with("https://"));
    for text in [&push.git_ref, &push.project.path, &push.project.web_url] {
        assert!(!text.is_empty() && !text.chars().any(char::is_control));
    }
    assert_eq!(Push::from_json(&push.to_json()).ok().as_ref(), Some(push));
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let config = IngestConfig {
        max_body_bytes: MAX_BODY,
        ..IngestConfig::new(AuthConfig::new(vec![Secret::new(TOKEN)], vec![]).expect("valid"))
    };
    let mut headers = HeaderMap::new();
    headers.insert("x-gitlab-event", HeaderValue::from_static("Pipeline Hook"));
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
    let queue = RecordingQueue::default();
    let now = time::OffsetDateTime::from_unix_timestamp(NOW).expect("a valid time");
    let result = poll_once(ingest(&config, &queue, &headers, body, now, "fuzz"))
        .expect("ingest with an in-memory queue completes on the first poll");
    let enqueued = queue.0.into_inner().unwrap_or_else(|e| e.into_inner());
    assert!(enqueued.len() <= 1);
    check_answer(&result, &enqueued, body.len(), check_pipeline);
});
