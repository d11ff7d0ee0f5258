use super::*;
use AuthFailure::*;
use Requirement::{IfPresent, Off, Required};
use http::HeaderName;

const TOKEN_A: &str = "tok-alpha-7f3a9c51";
const TOKEN_B: &str = "tok-bravo-2b8e4166";
const TOKEN_C: &str = "tok-charlie-90d1ee";
const UNKNOWN_TOKEN: &str = "tok-delta-00000000";
/// `whsec_` + base64 of bytes 0..32, and of bytes 32..64.
const KEY_A: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B: &str = "whsec_ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
const ID: &str = "msg_2Lh5T3vtKdhVuFv7bUHOfE";
const TIMESTAMP: &str = "1763800000";
const NOW: i64 = 1_763_800_000;
const BODY: &[u8] = include_bytes!("../tests/fixtures/gitlab/push_hook.json");
// Computed independently, in functions/core, with START=0 (key A) and START=32 (key B):
// python3 -c "import hmac,hashlib,base64; k=bytes(range(START,START+32)); print(base64.b64encode(hmac.new(k, b'msg_2Lh5T3vtKdhVuFv7bUHOfE.1763800000.' + open('tests/fixtures/gitlab/push_hook.json','rb').read(), hashlib.sha256).digest()).decode())"
const SIGNATURE_A: &str = "v1,0bIrTLgbBf4bSYm8U6Ct4Cf/bS56/ubqeC75qrhHlz4=";
const SIGNATURE_B: &str = "v1,J7ZSSx0+SOR/ne6sj6EyY8jHP4mRALqkF7RmiGwuPbE=";
/// SIGNATURE_A with its first base64 character changed: still 32 bytes, wrong value.
const FORGED: &str = "v1,1bIrTLgbBf4bSYm8U6Ct4Cf/bS56/ubqeC75qrhHlz4=";

/// Recognisable secret text that must never appear in a message or a `Debug` dump.
const SECRETS: [&str; 8] = [
    TOKEN_A,
    TOKEN_B,
    TOKEN_C,
    UNKNOWN_TOKEN,
    "AAECAwQFBgcICQoLDA0O",
    "ICEiIyQlJicoKSorLC0u",
    "IrTLgbBf4bSYm8U6Ct4",
    "J7ZSSx0+SOR/ne6sj6",
];

type Headers = Vec<(&'static str, Vec<u8>)>;
type Verdict = Result<(), AuthFailure>;

struct Case {
    name: &'static str,
    headers: Headers,
    expected: Verdict,
    body: Vec<u8>,
    now: i64,
}

fn case(name: &'static str, headers: Headers, expected: Verdict) -> Case {
    let (body, now) = (BODY.to_vec(), NOW);
    Case {
        name,
        headers,
        expected,
        body,
        now,
    }
}

impl Case {
    fn at(self, now: i64) -> Self {
        Case { now, ..self }
    }
    fn with_body(self, body: Vec<u8>) -> Self {
        Case { body, ..self }
    }
    fn run(&self, config: &AuthConfig) -> Verdict {
        let mut map = HeaderMap::new();
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            map.append(name, HeaderValue::from_bytes(value).unwrap());
        }
        authenticate(config, &map, &self.body, self.now).map(|_| ())
    }
}

fn header(name: &'static str, value: impl AsRef<[u8]>) -> Headers {
    vec![(name, value.as_ref().to_vec())]
}

fn token(value: &str) -> Headers {
    header("X-Gitlab-Token", value)
}

/// The three signing headers; `None` leaves one out.
fn signing(id: Option<&str>, timestamp: Option<&str>, signature: Option<&str>) -> Headers {
    [
        (WEBHOOK_ID, id),
        (WEBHOOK_TIMESTAMP, timestamp),
        (WEBHOOK_SIGNATURE, signature),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((name, value?.as_bytes().to_vec())))
    .collect()
}

fn signed(signature: &str) -> Headers {
    signing(Some(ID), Some(TIMESTAMP), Some(signature))
}

fn sent_at(timestamp: &str) -> Headers {
    signing(Some(ID), Some(timestamp), Some(SIGNATURE_A))
}

fn both(first: Headers, second: Headers) -> Headers {
    [first, second].concat()
}

fn missing(header: &'static str) -> Verdict {
    Err(MissingHeader { header })
}

fn duplicated(header: &'static str) -> Verdict {
    Err(DuplicatedHeader { header })
}

fn stale() -> Verdict {
    Err(StaleTimestamp {
        tolerance_secs: 300,
    })
}

fn future() -> Verdict {
    Err(FutureTimestamp {
        tolerance_secs: 300,
    })
}

fn key(text: &str) -> SigningKey {
    SigningKey::parse(text).unwrap()
}

fn three_tokens() -> Vec<Secret> {
    [TOKEN_A, TOKEN_B, TOKEN_C].map(Secret::from).to_vec()
}

fn config(
    tokens: Vec<Secret>,
    keys: &[&str],
    token: Requirement,
    signature: Requirement,
) -> AuthConfig {
    let keys = keys.iter().map(|text| key(text)).collect();
    let config = AuthConfig::new(tokens, keys).unwrap();
    config.with_policy(AuthPolicy { token, signature }).unwrap()
}

fn altered_body() -> Vec<u8> {
    let mut body = BODY.to_vec();
    body[100] ^= 1;
    body
}

#[rustfmt::skip]
fn token_required() -> Vec<Case> {
    vec![
        case("accepts the first of several accepted tokens", token(TOKEN_A), Ok(())),
        case("accepts the last of several accepted tokens", token(TOKEN_C), Ok(())),
        case("rejects a token that is not accepted", token(UNKNOWN_TOKEN), Err(WrongToken)),
        case("rejects a token differing only in case", token(&TOKEN_A.to_uppercase()), Err(WrongToken)),
        case("rejects a token with a trailing space", token(&format!("{TOKEN_A} ")), Err(WrongToken)),
        case("rejects a token with a trailing tab", token(&format!("{TOKEN_A}\t")), Err(WrongToken)),
        case("rejects a prefix of an accepted token", token(&TOKEN_A[..10]), Err(WrongToken)),
        case("rejects an empty token", token(""), Err(WrongToken)),
        case("rejects non-UTF-8 token bytes", header(TOKEN_HEADER, b"tok-\xff\xfe"), Err(WrongToken)),
        case("rejects a huge token", token(&"x".repeat(64 * 1024)), Err(WrongToken)),
        case("rejects a request without a token", vec![], missing(TOKEN_HEADER)),
        case("rejects a duplicated header even when both copies are accepted",
             both(token(TOKEN_A), token(TOKEN_B)), duplicated(TOKEN_HEADER)),
        case("matches the header name in any case", header("X-GITLAB-TOKEN", TOKEN_B), Ok(())),
        case("ignores signing headers it was not asked to check", both(token(TOKEN_A), signed(FORGED)), Ok(())),
    ]
}

/// Token IfPresent next to a required signature, as when migrating from tokens to signing.
#[rustfmt::skip]
fn token_if_present() -> Vec<Case> {
    vec![
        case("IfPresent verifies a token that is present",
             both(token(UNKNOWN_TOKEN), signed(SIGNATURE_A)), Err(WrongToken)),
        case("IfPresent accepts a good token", both(token(TOKEN_B), signed(SIGNATURE_A)), Ok(())),
        case("IfPresent accepts a request without a token", signed(SIGNATURE_A), Ok(())),
        case("IfPresent still rejects a duplicated token header",
             both(both(token(TOKEN_A), token(TOKEN_A)), signed(SIGNATURE_A)), duplicated(TOKEN_HEADER)),
    ]
}

#[rustfmt::skip]
fn token_off() -> Vec<Case> {
    vec![
        case("Off ignores even a wrong, duplicated token",
             both(both(token("x"), token("y")), signed(SIGNATURE_A)), Ok(())),
    ]
}

#[rustfmt::skip]
fn signature_required() -> Vec<Case> {
    vec![
        case("accepts a valid signature", signed(SIGNATURE_A), Ok(())),
        case("accepts a valid entry after a wrong one", signed(&format!("{FORGED} {SIGNATURE_A}")), Ok(())),
        case("accepts a valid entry among other versions and a malformed entry",
             signed(&format!("v1a,xyz v2,{} v1 {SIGNATURE_A}", &SIGNATURE_A[3..])), Ok(())),
        case("ignores other versions, so v2 alone fails",
             signed(&SIGNATURE_A.replace("v1,", "v2,")), Err(NoSupportedSignature)),
        case("rejects a forged signature", signed(FORGED), Err(SignatureMismatch)),
        case("rejects a signature made with another key", signed(SIGNATURE_B), Err(SignatureMismatch)),
        case("rejects a body altered by one byte", signed(SIGNATURE_A), Err(SignatureMismatch))
            .with_body(altered_body()),
        case("rejects an altered webhook-id",
             signing(Some("msg_2Lh5T3vtKdhVuFv7bUHOfF"), Some(TIMESTAMP), Some(SIGNATURE_A)),
             Err(SignatureMismatch)),
        case("rejects a timestamp 301 s old", signed(SIGNATURE_A), stale()).at(NOW + 301),
        case("rejects a timestamp 301 s ahead", signed(SIGNATURE_A), future()).at(NOW - 301),
        case("accepts a timestamp exactly 300 s old", signed(SIGNATURE_A), Ok(())).at(NOW + 300),
        case("accepts a timestamp exactly 300 s ahead", signed(SIGNATURE_A), Ok(())).at(NOW - 300),
        case("compares times without overflow at the end of time", signed(SIGNATURE_A), stale()).at(i64::MAX),
        case("compares times without overflow at the start of time", signed(SIGNATURE_A), future()).at(i64::MIN),
        case("rejects timestamp `abc`", sent_at("abc"), Err(MalformedTimestamp)),
        case("rejects timestamp `1.5`", sent_at("1.5"), Err(MalformedTimestamp)),
        case("rejects an empty timestamp", sent_at(""), Err(MalformedTimestamp)),
        case("rejects a 40-digit timestamp", sent_at(&"9".repeat(40)), Err(MalformedTimestamp)),
        case("rejects a timestamp with a sign", sent_at("+1763800000"), Err(MalformedTimestamp)),
        case("rejects a negative timestamp", sent_at("-1763800000"), Err(MalformedTimestamp)),
        case("rejects non-UTF-8 timestamp bytes",
             both(signing(Some(ID), None, Some(SIGNATURE_A)), header(WEBHOOK_TIMESTAMP, b"17638\xff")),
             Err(MalformedTimestamp)),
        case("rejects signature header `v1`", signed("v1"), Err(MalformedSignature)),
        case("rejects signature header `v1,`", signed("v1,"), Err(MalformedSignature)),
        case("rejects signature header `v1,!!!`", signed("v1,!!!"), Err(MalformedSignature)),
        case("rejects an empty signature header", signed(""), Err(MalformedSignature)),
        case("rejects a signature header of spaces", signed("   "), Err(MalformedSignature)),
        case("rejects an entry without a version", signed(&SIGNATURE_A[2..]), Err(MalformedSignature)),
        case("rejects a v1 entry of unpadded base64",
             signed(SIGNATURE_A.trim_end_matches('=')), Err(MalformedSignature)),
        case("rejects a v1 entry of 31 bytes",
             signed("v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="), Err(MalformedSignature)),
        case("rejects a huge v1 entry", signed(&format!("v1,{}", "A".repeat(64 * 1024))), Err(MalformedSignature)),
        case("rejects non-UTF-8 signature bytes",
             both(signing(Some(ID), Some(TIMESTAMP), None), header(WEBHOOK_SIGNATURE, b"v1,\xff")),
             Err(MalformedSignature)),
        case("rejects a missing webhook-signature", signing(Some(ID), Some(TIMESTAMP), None), missing(WEBHOOK_SIGNATURE)),
        case("rejects a missing webhook-id", signing(None, Some(TIMESTAMP), Some(SIGNATURE_A)), missing(WEBHOOK_ID)),
        case("rejects a missing webhook-timestamp", signing(Some(ID), None, Some(SIGNATURE_A)), missing(WEBHOOK_TIMESTAMP)),
        case("rejects a duplicated webhook-signature",
             both(signed(SIGNATURE_A), signing(None, None, Some(SIGNATURE_A))), duplicated(WEBHOOK_SIGNATURE)),
        case("rejects a duplicated webhook-id",
             both(signed(SIGNATURE_A), signing(Some(ID), None, None)), duplicated(WEBHOOK_ID)),
        case("rejects a duplicated webhook-timestamp",
             both(signed(SIGNATURE_A), signing(None, Some(TIMESTAMP), None)), duplicated(WEBHOOK_TIMESTAMP)),
        case("ignores a token it was not asked to check", both(token(UNKNOWN_TOKEN), signed(SIGNATURE_A)), Ok(())),
    ]
}

#[rustfmt::skip]
fn key_rotation() -> Vec<Case> {
    vec![
        case("accepts the first of two rotated keys", signed(SIGNATURE_A), Ok(())),
        case("accepts the second of two rotated keys", signed(SIGNATURE_B), Ok(())),
        case("accepts either entry signed by either key",
             signed(&format!("{FORGED} {SIGNATURE_B}")), Ok(())),
        case("still rejects a forgery", signed(FORGED), Err(SignatureMismatch)),
    ]
}

#[rustfmt::skip]
fn token_and_signature_required() -> Vec<Case> {
    vec![
        case("accepts when both checks pass", both(token(TOKEN_A), signed(SIGNATURE_A)), Ok(())),
        case("checks the token before the signature", both(token(UNKNOWN_TOKEN), signed(FORGED)), Err(WrongToken)),
        case("requires the token even with a good signature", signed(SIGNATURE_A), missing(TOKEN_HEADER)),
        case("requires the signature even with a good token", token(TOKEN_A), missing(WEBHOOK_SIGNATURE)),
        case("rejects a bad signature after a good token",
             both(token(TOKEN_A), signed(SIGNATURE_B)), Err(SignatureMismatch)),
    ]
}

/// A config built by hand, bypassing validation, whose only check skips absent headers.
fn hand_built_open_config() -> AuthConfig {
    let policy = AuthPolicy {
        token: IfPresent,
        signature: Off,
    };
    AuthConfig {
        policy,
        ..config(three_tokens(), &[], Required, Off)
    }
}

fn all_tables() -> Vec<(AuthConfig, Vec<Case>)> {
    let failing_open = vec![case(
        "fails closed when every check skipped the request",
        vec![],
        Err(NothingVerified),
    )];
    vec![
        (config(three_tokens(), &[], Required, Off), token_required()),
        (
            config(three_tokens(), &[KEY_A], IfPresent, Required),
            token_if_present(),
        ),
        (config(three_tokens(), &[KEY_A], Off, Required), token_off()),
        (
            config(vec![], &[KEY_A], Off, Required),
            signature_required(),
        ),
        (
            config(vec![], &[KEY_A, KEY_B], Off, Required),
            key_rotation(),
        ),
        (
            config(vec![TOKEN_A.into()], &[KEY_A], Required, Required),
            token_and_signature_required(),
        ),
        (hand_built_open_config(), failing_open),
    ]
}

#[test]
fn every_case_gets_its_expected_verdict() {
    for (config, cases) in all_tables() {
        for case in cases {
            assert_eq!(case.run(&config), case.expected, "{}", case.name);
        }
    }
}

pub(super) fn variant_name_for_registry(failure: &AuthFailure) -> &'static str {
    variant_name(failure)
}

/// Exhaustive on purpose: a new variant must be named here, and the test below then
/// demands a case that produces it.
fn variant_name(failure: &AuthFailure) -> &'static str {
    match failure {
        MissingHeader { .. } => "MissingHeader",
        DuplicatedHeader { .. } => "DuplicatedHeader",
        WrongToken => "WrongToken",
        MalformedTimestamp => "MalformedTimestamp",
        StaleTimestamp { .. } => "StaleTimestamp",
        FutureTimestamp { .. } => "FutureTimestamp",
        MalformedSignature => "MalformedSignature",
        NoSupportedSignature => "NoSupportedSignature",
        SignatureMismatch => "SignatureMismatch",
        NothingVerified => "NothingVerified",
        // Produced by ingest, which knows the pushes' instances (ingest_instance_test.rs).
        OtherInstance => "OtherInstance",
        // Only `authenticate_registry` gives these; `auth_registry_test.rs` demands both.
        WrongRegistryToken => "WrongRegistryToken",
        NoRegistryToken => "NoRegistryToken",
    }
}

#[test]
fn every_failure_names_its_header_and_never_a_secret_or_header_value() {
    let header_names = [
        TOKEN_HEADER,
        WEBHOOK_ID,
        WEBHOOK_TIMESTAMP,
        WEBHOOK_SIGNATURE,
    ];
    let mut produced = std::collections::BTreeSet::new();
    for (config, cases) in all_tables() {
        for case in cases {
            let Err(failure) = case.run(&config) else {
                continue;
            };
            produced.insert(variant_name(&failure));
            let message = failure.to_string();
            assert!(
                header_names.iter().any(|name| message.contains(name)),
                "{}: {message}",
                case.name
            );
            for shown in [message, format!("{failure:?}")] {
                let values = case
                    .headers
                    .iter()
                    .map(|(_, value)| String::from_utf8_lossy(value));
                // Short values such as `v1` or `abc` are ordinary words, not recognisable.
                let long_values: Vec<_> = values.filter(|value| value.len() >= 5).collect();
                for leaked in SECRETS
                    .iter()
                    .copied()
                    .chain(long_values.iter().map(|v| v.as_ref()))
                {
                    assert!(
                        !shown.contains(leaked),
                        "{}: `{shown}` shows `{leaked}`",
                        case.name
                    );
                }
            }
        }
    }
    let all = [
        "MissingHeader",
        "DuplicatedHeader",
        "WrongToken",
        "MalformedTimestamp",
        "StaleTimestamp",
        "FutureTimestamp",
        "MalformedSignature",
        "NoSupportedSignature",
        "SignatureMismatch",
        "NothingVerified",
    ];
    assert_eq!(produced, all.into_iter().collect());
}

#[test]
fn verifies_the_standard_webhooks_spec_example() {
    // Key, id, timestamp, body and signature from the Standard Webhooks spec; checked with
    // python3 -c 'import hmac,hashlib,base64; print(base64.b64encode(hmac.new(base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), b"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{\"test\": 2432232314}", hashlib.sha256).digest()).decode())'
    let config = config(
        vec![],
        &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        Off,
        Required,
    );
    let headers = signing(
        Some("msg_p5jXN8AQM9LWM0D4loKWxJek"),
        Some("1614265330"),
        Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
    );
    let request = |body: &[u8]| Case {
        body: body.to_vec(),
        now: 1_614_265_330,
        ..case("", headers.clone(), Ok(()))
    };
    assert_eq!(request(br#"{"test": 2432232314}"#).run(&config), Ok(()));
    assert_eq!(
        request(br#"{"test": 2432232315}"#).run(&config),
        Err(SignatureMismatch)
    );
}

#[test]
fn unix_seconds_parser_takes_only_plain_digits_within_i64() {
    assert_eq!(parse_unix_seconds(b"1763800000"), Some(1_763_800_000));
    assert_eq!(parse_unix_seconds(b"0"), Some(0));
    assert_eq!(parse_unix_seconds(b"9223372036854775807"), Some(i64::MAX));
    for bad in [
        &b"9223372036854775808"[..],
        b"",
        b" 1",
        b"1 ",
        b"+1",
        b"-1",
        b"1e3",
        b"\xff",
    ] {
        assert_eq!(parse_unix_seconds(bad), None, "{bad:?}");
    }
}

#[test]
fn signing_key_parsing_rejects_what_is_not_a_whsec_key() {
    let rejected = [
        ("missing prefix", &KEY_A[6..]),
        (
            "upper-case prefix",
            "WHSEC_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        ),
        ("nothing after the prefix", "whsec_"),
        ("bad base64", "whsec_!!!AAECAwQFBgcICQoLDA0O!!!"),
        ("trailing newline", &format!("{KEY_A}\n")),
        ("unpadded base64", KEY_A.trim_end_matches('=')),
        ("key of 8 bytes", "whsec_AAECAwQFBgc="),
        ("empty text", ""),
    ];
    for (name, text) in rejected {
        let error = SigningKey::parse(text).unwrap_err();
        assert!(
            matches!(error, AuthConfigError::BadSigningKey { .. }),
            "{name}: {error:?}"
        );
        let message = error.to_string();
        assert!(
            message.starts_with("signing key is invalid: "),
            "{name}: {message}"
        );
        assert!(!message.contains("AAECAwQF"), "{name}: {message}");
    }
    // The 24-byte key of the Standard Webhooks examples, and a 32-byte GitLab-style key.
    assert!(SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
    assert!(SigningKey::parse(KEY_A).is_ok());
}

#[test]
fn debug_output_redacts_every_secret() {
    let config = config(three_tokens(), &[KEY_A, KEY_B], Required, Required);
    let dump = format!("{config:?} {:?}", key(KEY_A));
    for secret in SECRETS {
        assert!(!dump.contains(secret), "{dump}");
    }
    assert!(dump.contains("SigningKey(<redacted>)"), "{dump}");
}

#[test]
fn policy_is_derived_from_what_is_configured() {
    let derived = |tokens: Vec<Secret>, keys: Vec<SigningKey>| {
        AuthConfig::new(tokens, keys).map(|config| (config.policy.token, config.policy.signature))
    };
    assert_eq!(derived(three_tokens(), vec![]), Ok((Required, Off)));
    assert_eq!(derived(vec![], vec![key(KEY_A)]), Ok((Off, Required)));
    assert_eq!(
        derived(three_tokens(), vec![key(KEY_A)]),
        Ok((Required, Required))
    );
    assert_eq!(
        derived(vec![], vec![]),
        Err(AuthConfigError::NothingConfigured)
    );
    let tolerance = AuthConfig::new(three_tokens(), vec![])
        .unwrap()
        .timestamp_tolerance_secs;
    assert_eq!(tolerance, DEFAULT_TIMESTAMP_TOLERANCE_SECS);
}

#[test]
fn policies_that_cannot_work_are_refused() {
    let tokens_only = || AuthConfig::new(three_tokens(), vec![]).unwrap();
    let with = |config: AuthConfig, token, signature| {
        config.with_policy(AuthPolicy { token, signature }).err()
    };
    let no_keys = Some(AuthConfigError::EnabledWithoutMaterial {
        check: Check::Signature,
    });
    assert_eq!(with(tokens_only(), Required, Required), no_keys);
    assert_eq!(with(tokens_only(), Required, IfPresent), no_keys);
    assert_eq!(
        with(tokens_only(), Off, Off),
        Some(AuthConfigError::NoRequiredCheck)
    );
    assert_eq!(
        with(tokens_only(), IfPresent, Off),
        Some(AuthConfigError::NoRequiredCheck)
    );
    let keys_only = AuthConfig::new(vec![], vec![key(KEY_A)]).unwrap();
    let no_tokens = Some(AuthConfigError::EnabledWithoutMaterial {
        check: Check::Token,
    });
    assert_eq!(with(keys_only, IfPresent, Required), no_tokens);
    let full = config(three_tokens(), &[KEY_A], Required, Required);
    assert_eq!(with(full.clone(), Required, IfPresent), None);
    assert_eq!(with(full.clone(), IfPresent, Required), None);
    let negative = full.clone().with_timestamp_tolerance_secs(-1).err();
    assert_eq!(
        negative,
        Some(AuthConfigError::NegativeTolerance { secs: -1 })
    );
    assert_eq!(
        full.with_timestamp_tolerance_secs(60)
            .unwrap()
            .timestamp_tolerance_secs,
        60
    );
}

#[test]
fn tokens_that_could_never_be_delivered_are_refused() {
    let second_token =
        |text: &str| AuthConfig::new(vec![TOKEN_A.into(), text.into()], vec![]).err();
    assert_eq!(
        second_token(""),
        Some(AuthConfigError::EmptyToken { position: 2 })
    );
    let undeliverable = Some(AuthConfigError::UndeliverableToken { position: 2 });
    let newline = format!("{TOKEN_B}\n");
    for text in [newline.as_str(), " lead", "trail\t", "mid\rdle", "nul\0"] {
        assert_eq!(second_token(text), undeliverable, "{text:?}");
    }
    assert_eq!(second_token("inner space is fine"), None);
    let message = second_token(&newline).unwrap().to_string();
    assert!(!message.contains(TOKEN_B), "{message}");
}
