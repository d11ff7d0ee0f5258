//! Secrets tied to GitLab instances, and the checks [`check_head`] makes before a body is
//! read. `X-Gitlab-Instance` is not covered by the signature: a signed delivery replayed
//! with another instance header must not become another instance's push.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::FutureExt;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;
use time::OffsetDateTime;

use super::*;
use crate::auth::{SigningKey, TiedSecrets};
use crate::secret::Secret;
use crate::testing::MemoryQueue;

const PUSH_HOOK: &[u8] = include_bytes!("../tests/fixtures/gitlab/push_hook.json");
const UNTIED_TOKEN: &str = "untied-token-0b7c";
const TOKEN_A: &str = "token-for-gitlab-a-51e2";
const KEY_A_BYTES: &[u8] = b"signing-key-for-instance-a-32byt";
const KEY_ANY_BYTES: &[u8] = b"signing-key-for-any-instance-32b";
const A: &str = "https://gitlab-a.example.com";
const B: &str = "https://gitlab-b.example.com";
const NOW: i64 = 1_763_800_000;

fn key(bytes: &[u8]) -> SigningKey {
    SigningKey::parse(&format!("whsec_{}", BASE64.encode(bytes))).unwrap()
}

fn tied(instances: &[&str], tokens: &[&str], keys: &[&[u8]]) -> TiedSecrets {
    TiedSecrets {
        instances: instances.iter().map(|i| i.to_string()).collect(),
        tokens: tokens.iter().map(|t| Secret::new(*t)).collect(),
        signing_keys: keys.iter().map(|k| key(k)).collect(),
    }
}

fn config(tokens: &[&str], keys: &[&[u8]], ties: Vec<TiedSecrets>) -> IngestConfig {
    let tokens = tokens.iter().map(|t| Secret::new(*t)).collect();
    let keys = keys.iter().map(|k| key(k)).collect();
    IngestConfig::new(AuthConfig::with_tied(tokens, keys, ties).unwrap())
}

/// A push hook as GitLab sends it: token when given, signed with `signed_by` when given,
/// and an `X-Gitlab-Instance` header when given.
fn request(token: Option<&str>, signed_by: Option<&[u8]>, instance: Option<&str>) -> HeaderMap {
    let mut map = HeaderMap::new();
    let mut set = |name: &'static str, value: &str| {
        map.insert(
            HeaderName::from_static(name),
            HeaderValue::from_str(value).unwrap(),
        );
    };
    set("x-gitlab-event", "Push Hook");
    if let Some(token) = token {
        set("x-gitlab-token", token);
    }
    if let Some(instance) = instance {
        set("x-gitlab-instance", instance);
    }
    if let Some(bytes) = signed_by {
        let (id, timestamp) = ("msg_replayed", NOW.to_string());
        let mut mac = Hmac::<Sha256>::new_from_slice(bytes).unwrap();
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(PUSH_HOOK);
        let signature = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
        set("webhook-id", id);
        set("webhook-timestamp", &timestamp);
        set("webhook-signature", &signature);
    }
    map
}

/// (status, error code or "accepted", pushes enqueued)
type Outcome = (u16, String, usize);

fn run(config: &IngestConfig, headers: &HeaderMap) -> Outcome {
    let queue = MemoryQueue::default();
    let now = OffsetDateTime::from_unix_timestamp(NOW).unwrap();
    let result = ingest(config, &queue, headers, PUSH_HOOK, now, "request-1")
        .now_or_never()
        .expect("ingest waited");
    let response = IngestResponse::from_result(&result);
    let code = match &result {
        Ok(_) => "accepted".to_string(),
        Err(error) => error.code().to_string(),
    };
    let enqueued = queue.pushes.lock().unwrap().len();
    (response.status, code, enqueued)
}

#[test]
fn a_secret_tied_to_an_instance_vouches_only_for_that_instance() {
    let tied_token = || config(&[], &[], vec![tied(&[A], &[TOKEN_A], &[])]);
    let tied_key = || {
        config(
            &[UNTIED_TOKEN],
            &[],
            vec![tied(&["gitlab-a.example.com"], &[], &[KEY_A_BYTES])],
        )
    };
    let untied = || config(&[UNTIED_TOKEN], &[KEY_ANY_BYTES], vec![]);
    let mixed = || {
        config(
            &[UNTIED_TOKEN],
            &[],
            vec![tied(&[A], &[TOKEN_A], &[]), tied(&[B], &[TOKEN_A], &[])],
        )
    };
    let accepted = (202, "accepted".to_string(), 1);
    let refused = (401, "unauthenticated".to_string(), 0);
    #[rustfmt::skip]
    let cases: Vec<(&str, IngestConfig, HeaderMap, Outcome)> = vec![
        ("a tied token from its instance", tied_token(),
         request(Some(TOKEN_A), None, Some(A)), accepted.clone()),
        ("a tied token with another instance's header", tied_token(),
         request(Some(TOKEN_A), None, Some(B)), refused.clone()),
        ("a tied token, instance from the body (no header): not its instance", tied_token(),
         request(Some(TOKEN_A), None, None), refused.clone()),
        ("a tied token, header in another case and with a default port", tied_token(),
         request(Some(TOKEN_A), None, Some("HTTPS://GitLab-A.example.com:443")), accepted.clone()),
        ("a signed delivery from its instance", tied_key(),
         request(Some(UNTIED_TOKEN), Some(KEY_A_BYTES), Some(A)), accepted.clone()),
        ("the same signed delivery replayed with another instance header", tied_key(),
         request(Some(UNTIED_TOKEN), Some(KEY_A_BYTES), Some(B)), refused.clone()),
        ("the same signed delivery replayed without the instance header", tied_key(),
         request(Some(UNTIED_TOKEN), Some(KEY_A_BYTES), None), refused.clone()),
        ("untied secrets keep working for any instance (backwards compatible)", untied(),
         request(Some(UNTIED_TOKEN), Some(KEY_ANY_BYTES), Some(B)), accepted.clone()),
        ("untied secrets, instance from the body", untied(),
         request(Some(UNTIED_TOKEN), Some(KEY_ANY_BYTES), None), accepted.clone()),
        ("one token tied to two instances: the first", mixed(),
         request(Some(TOKEN_A), None, Some(A)), accepted.clone()),
        ("one token tied to two instances: the second", mixed(),
         request(Some(TOKEN_A), None, Some(B)), accepted.clone()),
        ("one token tied to two instances: a third", mixed(),
         request(Some(TOKEN_A), None, Some("https://gitlab-c.example.com")), refused.clone()),
        ("an untied token next to tied ones", mixed(),
         request(Some(UNTIED_TOKEN), None, Some("https://gitlab-c.example.com")), accepted.clone()),
        ("a wrong token is still a wrong token", mixed(),
         request(Some("not-a-token"), None, Some(A)), refused.clone()),
    ];
    for (why, config, headers, expected) in cases {
        assert_eq!(run(&config, &headers), expected, "{why}");
    }
}

#[test]
fn a_tied_key_and_a_tied_token_must_both_allow_the_instance() {
    let config = config(
        &[],
        &[],
        vec![
            tied(&[A, B], &[TOKEN_A], &[]),
            tied(&[A], &[], &[KEY_A_BYTES]),
        ],
    );
    assert_eq!(
        run(&config, &request(Some(TOKEN_A), Some(KEY_A_BYTES), Some(A))).0,
        202
    );
    // The token allows B, the key does not.
    assert_eq!(
        run(&config, &request(Some(TOKEN_A), Some(KEY_A_BYTES), Some(B))).0,
        401
    );
}

#[test]
fn the_instance_refusal_names_no_instance_and_no_secret() {
    let config = config(&[], &[], vec![tied(&[A], &[TOKEN_A], &[])]);
    let now = OffsetDateTime::from_unix_timestamp(NOW).unwrap();
    let result = ingest(
        &config,
        &MemoryQueue::default(),
        &request(Some(TOKEN_A), None, Some(B)),
        PUSH_HOOK,
        now,
        "r",
    )
    .now_or_never()
    .unwrap();
    let body = IngestResponse::from_result(&result).body;
    assert!(body.contains("is not for the GitLab instance"), "{body}");
    for secret in [TOKEN_A, A, B, "gitlab-a", "gitlab-b"] {
        assert!(!body.contains(secret), "{secret} in {body}");
    }
}

#[test]
fn tied_secrets_need_instances_and_secrets() {
    let no_instances = AuthConfig::with_tied(vec![], vec![], vec![tied(&[], &[TOKEN_A], &[])]);
    assert!(matches!(
        no_instances,
        Err(crate::auth::AuthConfigError::TiedWithoutInstances { position: 1 })
    ));
    let blank_instance =
        AuthConfig::with_tied(vec![], vec![], vec![tied(&["https://"], &[TOKEN_A], &[])]);
    assert!(blank_instance.is_err());
    let no_secrets = AuthConfig::with_tied(
        vec![Secret::new(UNTIED_TOKEN)],
        vec![],
        vec![tied(&[A], &[], &[])],
    );
    assert!(matches!(
        no_secrets,
        Err(crate::auth::AuthConfigError::TiedWithoutSecrets { position: 1 })
    ));
    // Only tied secrets configured: fluxrelay still requires them.
    let only_tied = AuthConfig::with_tied(vec![], vec![], vec![tied(&[A], &[TOKEN_A], &[])]);
    assert!(only_tied.is_ok());
}

/// What `serve` answers before reading a body: each refusal is the one `ingest` gives
/// with the body, and an accepted head is no promise (the body decides the rest).
#[test]
fn check_head_refuses_what_the_head_alone_disproves() {
    let token_config = config(&[UNTIED_TOKEN], &[], vec![tied(&[A], &[TOKEN_A], &[])]);
    let signature_only = config(&[], &[KEY_ANY_BYTES], vec![]);
    let with_length = |mut headers: HeaderMap, length: &str| {
        headers.insert(
            http::header::CONTENT_LENGTH,
            HeaderValue::from_str(length).unwrap(),
        );
        headers
    };
    let stale = {
        let mut headers = request(None, Some(KEY_ANY_BYTES), Some(A));
        headers.insert("webhook-timestamp", HeaderValue::from_static("1763000000"));
        headers
    };
    #[rustfmt::skip]
    let cases: Vec<(&str, &IngestConfig, HeaderMap, Result<(), &str>)> = vec![
        ("a right token", &token_config, request(Some(UNTIED_TOKEN), None, Some(A)), Ok(())),
        ("a wrong token", &token_config, request(Some("wrong"), None, Some(A)), Err("unauthenticated")),
        ("no token", &token_config, request(None, None, Some(A)), Err("unauthenticated")),
        ("a tied token with another instance header", &token_config,
         request(Some(TOKEN_A), None, Some(B)), Err("unauthenticated")),
        ("a tied token without an instance header: the body decides", &token_config,
         request(Some(TOKEN_A), None, None), Ok(())),
        ("a declared length over the cap, before the token", &token_config,
         with_length(request(Some("wrong"), None, Some(A)), "5242881"), Err("too_large")),
        ("a declared length at the cap", &token_config,
         with_length(request(Some(UNTIED_TOKEN), None, Some(A)), "5242880"), Ok(())),
        ("a declared length that is not a number: the body decides", &token_config,
         with_length(request(Some(UNTIED_TOKEN), None, Some(A)), "lots"), Ok(())),
        ("signature only: fresh, well-formed headers pass the head check", &signature_only,
         request(None, Some(KEY_ANY_BYTES), Some(A)), Ok(())),
        ("signature only: a forged signature also passes it (the HMAC needs the body)", &signature_only,
         request(None, Some(b"another-key-of-32-bytes-length!!"), Some(A)), Ok(())),
        ("signature only: no signature headers", &signature_only,
         request(None, None, Some(A)), Err("unauthenticated")),
        ("signature only: a stale timestamp", &signature_only, stale, Err("unauthenticated")),
    ];
    for (why, config, headers, expected) in cases {
        let got = check_head(Source::Gitlab, config, &headers, NOW).map_err(|error| error.code());
        assert_eq!(got, expected, "{why}");
        // Whatever the head check refuses, ingest refuses with the same code.
        if let Err(code) = expected {
            let (_, full, enqueued) = run(config, &headers);
            assert_eq!((full.as_str(), enqueued), (code, 0), "{why}: ingest");
        }
    }
}
