//! What route reads off the intake queue: fluxrelay's own `Push` or an EventBridge ECR
//! event (`handlers::route::read_intake`, with `artifacts::ecr::parse` behind it), on any
//! bytes. Checked: no panic; a push read from an EventBridge event is a well-formed artifact
//! push on an ECR registry, accepted at the event's time; an ignore reason stays short.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use common::check_artifact_push;
use fluxrelay_core::artifacts::ecr;
use fluxrelay_core::handlers::route::{IntakeBody, read_intake};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ecr::parse(data);
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    match read_intake(body) {
        Ok(IntakeBody::Push(push)) if ecr::is_eventbridge_event(body) => {
            check_artifact_push(&push);
            assert!(push.instance.contains(".dkr.ecr."), "{}", push.instance);
            assert!(
                time::OffsetDateTime::parse(
                    &push.received_at,
                    &time::format_description::well_known::Rfc3339
                )
                .is_ok()
            );
        }
        Ok(IntakeBody::Push(_)) => {}
        Ok(IntakeBody::Ignored(reason)) => assert!(reason.len() <= 512, "{reason}"),
        Err(reason) => assert!(reason.len() <= 4096, "{} bytes", reason.len()),
    }
});
