use super::*;
use serde_json::json;

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_763_800_000).unwrap()
}

fn answer(status: u16, body: serde_json::Value) -> Result<ApiResponse, ApiError> {
    Ok(ApiResponse {
        status,
        body: body.to_string().into_bytes(),
        ..ApiResponse::default()
    })
}

#[test]
fn every_answer_has_one_meaning() {
    let permanent = |status: u16| move |o: &ApiOutcome| matches!(o, ApiOutcome::Permanent { status: Some(s), .. } if *s == status);
    #[allow(clippy::type_complexity)]
    let rows: Vec<(
        Result<ApiResponse, ApiError>,
        Box<dyn Fn(&ApiOutcome) -> bool>,
        &str,
    )> = vec![
        (
            answer(201, json!({"id": 1})),
            Box::new(|o| *o == ApiOutcome::Done),
            "created",
        ),
        (
            answer(200, json!([])),
            Box::new(|o| *o == ApiOutcome::Done),
            "listed",
        ),
        (
            answer(
                400,
                json!({"message": "Cannot transition status via :enqueue from :pending (Reason(s): Status cannot transition via \"enqueue\")"}),
            ),
            Box::new(|o| *o == ApiOutcome::AlreadyInState),
            "pending again: already pending",
        ),
        (
            answer(
                400,
                json!({"message": "Cannot transition status via :run from :running (Reason(s): Status cannot transition via \"run\")"}),
            ),
            Box::new(|o| *o == ApiOutcome::AlreadyInState),
            "running again",
        ),
        (
            answer(400, json!({"message": "invalid state"})),
            Box::new(permanent(400)),
            "a refused value",
        ),
        (
            answer(
                400,
                json!({"message": {"target_url": ["is blocked: Only allowed schemes are http, https"]}}),
            ),
            Box::new(permanent(400)),
            "field errors",
        ),
        (
            answer(401, json!({"message": "401 Unauthorized"})),
            Box::new(permanent(401)),
            "bad token",
        ),
        (
            answer(
                403,
                json!({"error": "insufficient_scope", "error_description": "The request requires higher privileges than provided by the access token."}),
            ),
            Box::new(permanent(403)),
            "read_api token",
        ),
        (
            answer(404, json!({"message": "404 Project Not Found"})),
            Box::new(permanent(404)),
            "project gone",
        ),
        (
            answer(404, json!({"message": "404 Commit Not Found"})),
            Box::new(permanent(404)),
            "commit gone",
        ),
        (
            answer(
                409,
                json!({"message": "Another update to this commit status is in progress"}),
            ),
            Box::new(|o| {
                matches!(
                    o,
                    ApiOutcome::RetryAfter {
                        secs: RETRY_SOON_SECS,
                        ..
                    }
                )
            }),
            "conflict",
        ),
        (
            answer(500, json!({"message": "500 Internal Server Error"})),
            Box::new(|o| matches!(o, ApiOutcome::RetryAfter { .. })),
            "server error",
        ),
        (
            answer(502, json!("<html>bad gateway</html>")),
            Box::new(|o| matches!(o, ApiOutcome::RetryAfter { .. })),
            "a proxy's page",
        ),
        (
            Err(ApiError::Transport("connection refused".into())),
            Box::new(|o| {
                matches!(
                    o,
                    ApiOutcome::RetryAfter {
                        secs: RETRY_SOON_SECS,
                        ..
                    }
                )
            }),
            "no answer",
        ),
        (
            Err(ApiError::NotConfigured {
                instance: "https://gitlab.example.com".into(),
            }),
            Box::new(|o| matches!(o, ApiOutcome::Permanent { status: None, .. })),
            "no token for the instance",
        ),
    ];
    for (answer, expected, why) in rows {
        let outcome = classify(&answer, now());
        assert!(expected(&outcome), "{why}: {outcome:?}");
    }
}

#[test]
fn a_429_waits_as_long_as_gitlab_asks() {
    let throttled = |retry_after: Option<&str>, reset: Option<&str>| ApiResponse {
        status: 429,
        retry_after: retry_after.map(str::to_string),
        ratelimit_reset: reset.map(str::to_string),
        body: b"Retry later".to_vec(),
        ..ApiResponse::default()
    };
    let reset_in_30 = (now().unix_timestamp() + 30).to_string();
    for (response, secs, why) in [
        (throttled(Some("7"), None), 7, "seconds"),
        (
            throttled(Some(" 12 "), Some(&reset_in_30)),
            12,
            "Retry-After wins",
        ),
        (throttled(None, Some(&reset_in_30)), 30, "RateLimit-Reset"),
        (
            throttled(None, None),
            DEFAULT_RETRY_AFTER_SECS,
            "nothing said",
        ),
        (throttled(Some("0"), None), 1, "at least a second"),
        (throttled(Some("-5"), None), 1, "a negative value"),
        (
            throttled(Some("100000"), None),
            MAX_RETRY_AFTER_SECS,
            "capped",
        ),
        (
            throttled(Some("soon"), None),
            DEFAULT_RETRY_AFTER_SECS,
            "garbage",
        ),
        (
            throttled(Some("Sat, 22 Nov 2025 08:27:00 GMT"), None),
            20,
            "an HTTP date 20 s ahead",
        ),
        (
            throttled(Some("Sat, 22 Nov 2025 08:00:00 GMT"), None),
            1,
            "an HTTP date in the past",
        ),
    ] {
        assert_eq!(retry_after_secs(&response, now()), secs, "{why}");
        assert!(matches!(
            classify(&Ok(response), now()),
            ApiOutcome::RetryAfter { secs: s, .. } if s == secs
        ));
    }
}

#[test]
fn reasons_say_what_to_fix_and_never_echo_a_huge_body() {
    let ApiOutcome::Permanent { reason, .. } =
        classify(&answer(401, json!({"message": "401 Unauthorized"})), now())
    else {
        panic!("401 is permanent");
    };
    assert!(
        reason.contains("401") && reason.contains("scope `api`"),
        "{reason}"
    );
    let huge = answer(500, json!({"message": "x".repeat(100_000)}));
    let ApiOutcome::RetryAfter { reason, .. } = classify(&huge, now()) else {
        panic!("500 is retried");
    };
    assert!(reason.len() < 500, "{}", reason.len());
    assert_eq!(error_message(b"line\r\nbreak"), "line  break");
    assert_eq!(error_message(b""), "");
}

#[test]
fn metric_labels() {
    assert_eq!(status_label(&answer(429, json!({}))), "429");
    assert_eq!(
        status_label(&Err(ApiError::Transport("x".into()))),
        "transport"
    );
}
