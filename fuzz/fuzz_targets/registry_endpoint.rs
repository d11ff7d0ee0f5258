//! Registry notifications (CNCF Distribution, GitLab's container registry) and Harbor
//! webhooks: the real `ingest_from` path of `/registry/distribution` and `/registry/harbor`
//! with fuzzer-chosen `Authorization` and body.
//!
//! Input: byte 0 flags (bit 0 picks Harbor over Distribution; bits 1-2: bearer token, bare
//! token, wrong token, none; bit 3: separate registry tokens configured), then the raw body.
//! Checked on every input: no panic; the status is one of 202/400/401/413; nothing is
//! enqueued unless the answer is 202 `accepted`; each accepted push is a well-formed
//! artifact push; the answer never contains the token and a rejection stays small.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use common::{MAX_BODY, NOW, RecordingQueue, TOKEN, check_answer, check_artifact_push, poll_once};
use fluxrelay_core::Secret;
use fluxrelay_core::auth::AuthConfig;
use fluxrelay_core::ingest::{IngestConfig, Source, ingest_from};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let source = if flags & 1 == 0 {
        Source::Distribution
    } else {
        Source::Harbor
    };
    let mut auth = AuthConfig::new(vec![Secret::new("gitlab-webhook-token")], vec![])
        .expect("a valid config");
    if flags & 0b1000 != 0 {
        auth = auth
            .with_registry_tokens(vec![Secret::new(TOKEN)])
            .expect("valid registry tokens");
    }
    let config = IngestConfig {
        max_body_bytes: MAX_BODY,
        ..IngestConfig::new(auth)
    };
    let mut headers = HeaderMap::new();
    let authorization = match (flags >> 1) & 0b11 {
        0 => Some(format!("Bearer {TOKEN}")),
        1 => Some(TOKEN.to_string()),
        2 => Some("Bearer wrong".to_string()),
        _ => None,
    };
    if let Some(value) = authorization {
        headers.insert("authorization", HeaderValue::from_str(&value).expect("ASCII"));
    }
    let queue = RecordingQueue::default();
    let now = time::OffsetDateTime::from_unix_timestamp(NOW).expect("a valid time");
    let result = poll_once(ingest_from(source, &config, &queue, &headers, body, now, "fuzz"))
        .expect("ingest with an in-memory queue completes on the first poll");
    let enqueued = queue.0.into_inner().unwrap_or_else(|e| e.into_inner());
    check_answer(&result, &enqueued, body.len(), check_artifact_push);
});
