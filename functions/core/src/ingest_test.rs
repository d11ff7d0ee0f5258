use futures_util::FutureExt;
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use time::OffsetDateTime;

use super::*;
use crate::auth::SigningKey;
use crate::secret::Secret;
use crate::testing::MemoryQueue;

const PUSH_HOOK: &[u8] = include_bytes!("../tests/fixtures/gitlab/push_hook.json");
const REPOSITORY_UPDATE: &[u8] =
    include_bytes!("../tests/fixtures/gitlab/system_hook_repository_update.json");
const MERGE_REQUEST: &[u8] = include_bytes!("../tests/fixtures/gitlab/merge_request_hook.json");
const TOKEN: &str = "gitlab-webhook-token-SECRET";

fn config() -> IngestConfig {
    IngestConfig::new(AuthConfig::new(vec![Secret::new(TOKEN)], vec![]).unwrap())
}

fn headers(event: &str, token: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert("x-gitlab-event", HeaderValue::from_str(event).unwrap());
    map.insert("x-gitlab-token", HeaderValue::from_str(token).unwrap());
    map.insert(
        "x-gitlab-instance",
        HeaderValue::from_static("https://gitlab.example.com"),
    );
    map
}

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_763_800_000).unwrap()
}

fn run(
    config: &IngestConfig,
    queue: &MemoryQueue,
    headers: &HeaderMap,
    body: &[u8],
) -> (Result<Accepted, IngestError>, IngestResponse) {
    // The in-memory queue never waits, so the future completes on its first poll.
    let result = ingest(config, queue, headers, body, now(), "test-request")
        .now_or_never()
        .expect("ingest waited");
    let response = IngestResponse::from_result(&result);
    (result, response)
}

#[test]
fn an_authentic_push_is_enqueued_before_it_is_acknowledged() {
    let queue = MemoryQueue::default();
    let (result, response) = run(&config(), &queue, &headers("Push Hook", TOKEN), PUSH_HOOK);
    let pushes = queue.pushes.lock().unwrap().clone();
    assert_eq!(pushes.len(), 1);
    assert_eq!(
        result.unwrap(),
        Accepted::Enqueued {
            keys: vec![pushes[0].key.clone()]
        }
    );
    assert_eq!(response.status, 202);
    let body: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(body["status"], "accepted");
    assert_eq!(body["pushes"], 1);
    assert_eq!(body["keys"][0], pushes[0].key.as_str());
    assert_eq!(pushes[0].received_at, "2025-11-22T08:26:40Z");
    // A plain time (Lambda ingest) gives no run reading, and the message does not name one.
    assert_eq!(pushes[0].accepted_in_run, None);
    let json = serde_json::to_value(&pushes[0]).unwrap();
    assert!(json.get("accepted_in_run").is_none(), "{json}");
}

/// Where the accepting process also dispatches (`serve`), every push it enqueues carries
/// the run reading of its acceptance, which dispatch orders its deliveries against.
#[test]
fn pushes_carry_the_run_reading_of_their_acceptance() {
    let queue = MemoryQueue::default();
    let in_run = RunInstant {
        run: 42,
        nanos: 1_234_567,
    };
    let accepted = Acceptance {
        at: now(),
        in_run: Some(in_run),
    };
    let result = ingest_from(
        Source::Gitlab,
        &config(),
        &queue,
        &headers("System Hook", TOKEN),
        REPOSITORY_UPDATE,
        accepted,
        "test-request",
    )
    .now_or_never()
    .expect("ingest waited");
    assert!(
        matches!(result, Ok(Accepted::Enqueued { .. })),
        "{result:?}"
    );
    let pushes = queue.pushes.lock().unwrap().clone();
    assert!(!pushes.is_empty());
    for push in &pushes {
        assert_eq!(push.accepted_in_run, Some(in_run));
        assert_eq!(push.received_at, "2025-11-22T08:26:40Z");
        // It survives the queue: written and read back as the same push.
        let json = serde_json::to_string(push).unwrap();
        assert_eq!(&serde_json::from_str::<Push>(&json).unwrap(), push);
    }
}

#[test]
fn outcome_table() {
    let big = vec![b' '; DEFAULT_MAX_BODY_BYTES + 1];
    // (name, headers, body, status, word in the answer, pushes enqueued)
    type Case<'a> = (&'a str, HeaderMap, &'a [u8], u16, &'a str, usize);
    let cases: Vec<Case> = vec![
        (
            "push hook",
            headers("Push Hook", TOKEN),
            PUSH_HOOK,
            202,
            "accepted",
            1,
        ),
        (
            "repository_update with one change",
            headers("System Hook", TOKEN),
            REPOSITORY_UPDATE,
            202,
            "accepted",
            1,
        ),
        (
            "merge request is ignored, not an error",
            headers("Merge Request Hook", TOKEN),
            MERGE_REQUEST,
            202,
            "ignored",
            0,
        ),
        (
            "wrong token",
            headers("Push Hook", "wrong-token"),
            PUSH_HOOK,
            401,
            "unauthenticated",
            0,
        ),
        (
            "no token",
            {
                let mut h = headers("Push Hook", TOKEN);
                h.remove("x-gitlab-token");
                h
            },
            PUSH_HOOK,
            401,
            "unauthenticated",
            0,
        ),
        (
            "token checked before the event is read",
            headers("Merge Request Hook", "wrong"),
            MERGE_REQUEST,
            401,
            "unauthenticated",
            0,
        ),
        (
            "malformed JSON",
            headers("Push Hook", TOKEN),
            b"{\"ref\":",
            400,
            "malformed",
            0,
        ),
        (
            "missing event header",
            {
                let mut h = headers("Push Hook", TOKEN);
                h.remove("x-gitlab-event");
                h
            },
            PUSH_HOOK,
            400,
            "malformed",
            0,
        ),
        (
            "body over the cap",
            headers("Push Hook", TOKEN),
            &big,
            413,
            "too_large",
            0,
        ),
    ];
    for (name, headers, body, status, word, enqueued) in cases {
        let queue = MemoryQueue::default();
        let (_, response) = run(&config(), &queue, &headers, body);
        assert_eq!(response.status, status, "{name}: {}", response.body);
        assert!(response.body.contains(word), "{name}: {}", response.body);
        assert_eq!(queue.pushes.lock().unwrap().len(), enqueued, "{name}");
        assert!(!response.body.contains(TOKEN), "{name} echoes the token");
    }
}

/// What the queues may deduplicate: GitLab's `Idempotency-Key` (one delivery, re-run or
/// resent), and nothing else, so a re-push of the same `before..after` is a new push.
#[test]
fn only_the_same_idempotency_key_gives_the_same_key() {
    let key_of = |idempotency_key: Option<&str>, request_id: &str| {
        let mut headers = headers("Push Hook", TOKEN);
        if let Some(key) = idempotency_key {
            headers.insert("idempotency-key", HeaderValue::from_str(key).unwrap());
        }
        let queue = MemoryQueue::default();
        let result = ingest(&config(), &queue, &headers, PUSH_HOOK, now(), request_id)
            .now_or_never()
            .expect("ingest waited");
        let Ok(Accepted::Enqueued { keys }) = result else {
            panic!("{result:?}")
        };
        keys[0].clone()
    };
    let resent = key_of(Some("0c5a4f3e-1111-4a2b-9c7d-000000000001"), "lambda-1");
    // (what happens, its key equals the first delivery's)
    let cases = [
        (
            "GitLab resends the delivery",
            key_of(Some("0c5a4f3e-1111-4a2b-9c7d-000000000001"), "lambda-2"),
            true,
        ),
        (
            "another hook of the same push",
            key_of(Some("0c5a4f3e-2222-4a2b-9c7d-000000000002"), "lambda-1"),
            false,
        ),
        ("no key", key_of(None, "lambda-1"), false),
        ("an empty key", key_of(Some(""), "lambda-1"), false),
        ("a key with a space", key_of(Some("a b"), "lambda-1"), false),
        (
            "a key too long to be one",
            key_of(Some(&"k".repeat(129)), "lambda-1"),
            false,
        ),
    ];
    for (what, key, same) in cases {
        assert_eq!(key == resent, same, "{what}");
    }
    // Without a key, two requests are two pushes even with identical bodies.
    assert_ne!(key_of(None, "lambda-1"), key_of(None, "lambda-2"));
    assert_eq!(
        key_of(None, "lambda-1"),
        key_of(None, "lambda-1"),
        "the key is a function of its inputs"
    );
    // Two Idempotency-Key headers are not one key: treated as none.
    let mut twice = headers("Push Hook", TOKEN);
    twice.append("idempotency-key", HeaderValue::from_static("a"));
    twice.append("idempotency-key", HeaderValue::from_static("b"));
    assert_eq!(delivery_id(&twice, "r"), "request:r");
    let mut once = headers("Push Hook", TOKEN);
    once.insert("idempotency-key", HeaderValue::from_static("a"));
    assert_eq!(delivery_id(&once, "r"), "idempotency-key:a");
}

#[test]
fn a_queue_outage_is_503_never_202_and_hides_queue_details() {
    let queue = MemoryQueue::down();
    let (result, response) = run(&config(), &queue, &headers("Push Hook", TOKEN), PUSH_HOOK);
    assert!(matches!(result, Err(IngestError::EnqueueFailed(_))));
    assert_eq!(response.status, 503);
    assert!(!response.body.contains("sqs.internal"), "{}", response.body);
    assert!(queue.pushes.lock().unwrap().is_empty());
}

#[test]
fn signed_webhooks_are_verified_when_a_signing_key_is_configured() {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let key_bytes = [7u8; 32];
    let key = SigningKey::parse(&format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key_bytes)
    ))
    .unwrap();
    let config = IngestConfig::new(AuthConfig::new(vec![], vec![key]).unwrap());
    let timestamp = now().unix_timestamp().to_string();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key_bytes).unwrap();
    mac.update(format!("msg_1.{timestamp}.").as_bytes());
    mac.update(PUSH_HOOK);
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());

    let mut signed = headers("Push Hook", "ignored-token");
    signed.remove("x-gitlab-token");
    signed.insert("webhook-id", HeaderValue::from_static("msg_1"));
    signed.insert(
        "webhook-timestamp",
        HeaderValue::from_str(&timestamp).unwrap(),
    );
    signed.insert(
        "webhook-signature",
        HeaderValue::from_str(&format!("v1,{signature}")).unwrap(),
    );
    let queue = MemoryQueue::default();
    assert_eq!(run(&config, &queue, &signed, PUSH_HOOK).1.status, 202);

    let mut tampered = PUSH_HOOK.to_vec();
    tampered[20] ^= 1;
    let queue = MemoryQueue::default();
    assert_eq!(run(&config, &queue, &signed, &tampered).1.status, 401);
    assert!(queue.pushes.lock().unwrap().is_empty());
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("x-gitlab-event".to_string()),
        Just("x-gitlab-token".to_string()),
        Just("x-gitlab-instance".to_string()),
        Just("webhook-id".to_string()),
        Just("webhook-timestamp".to_string()),
        Just("webhook-signature".to_string()),
        "[a-z-]{1,20}",
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        // The real payload with a few bytes changed.
        proptest::collection::vec((0..PUSH_HOOK.len(), any::<u8>()), 0..8).prop_map(|edits| {
            let mut body = PUSH_HOOK.to_vec();
            for (at, byte) in edits {
                body[at] = byte;
            }
            body
        }),
        Just(PUSH_HOOK.to_vec()),
        Just(REPOSITORY_UPDATE.to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// No bytes and no headers make the ingest path panic; every answer has a known status.
    #[test]
    fn no_input_makes_ingest_panic(
        pairs in proptest::collection::vec((header_name(), proptest::collection::vec(any::<u8>(), 0..64)), 0..8),
        event in prop_oneof![Just("Push Hook"), Just("Tag Push Hook"), Just("System Hook"), Just("Other")],
        with_token in any::<bool>(),
        body in body(),
    ) {
        let mut map = HeaderMap::new();
        map.insert("x-gitlab-event", HeaderValue::from_static(event));
        if with_token {
            map.insert("x-gitlab-token", HeaderValue::from_static(TOKEN));
        }
        for (name, value) in pairs {
            if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(&value)) {
                map.append(name, value);
            }
        }
        let queue = MemoryQueue::default();
        let (_, response) = run(&config(), &queue, &map, &body);
        prop_assert!([202, 400, 401, 413].contains(&response.status), "{}", response.status);
        prop_assert!(!response.body.contains(TOKEN));
        if response.status != 202 {
            prop_assert!(queue.pushes.lock().unwrap().is_empty());
        }
    }
}
