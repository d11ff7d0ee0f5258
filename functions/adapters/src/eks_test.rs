#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use super::*;

/// 2024-01-02T03:04:05Z
const AT_SECS: u64 = 1_704_164_645;
const ACCESS_KEY: &str = "AKIDEXAMPLE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
/// With `/`, `+` and `=`, so the test also pins how the token is percent-encoded.
const SESSION_TOKEN: &str = "IQoJb3JpZ2luX2VjEXAMPLE/session+token==";

/// The known answer for the inputs above, cluster `my-cluster`, region `eu-west-1`.
///
/// The inputs behind the `e15d88ea…e8ab` signature quoted in kube-testenv.md are not in
/// the shared reference, so this answer was derived independently, once, by two
/// computations that agree: botocore 1.43.127's `RequestSigner.generate_presigned_url`
/// (the `aws eks get-token` code path; it signed through awscrt 0.38.0) with the signing
/// time patched, and a 20-line hand-written Python SigV4 (hashlib + hmac only): canonical
/// request `GET`, `/`, the sorted RFC 3986-encoded query (session token included),
/// `host` and `x-k8s-aws-id` headers, sha256 of the empty payload.
const KNOWN_SIGNATURE: &str = "0a4212d703b39bfe52c0c359853cc63f449d65799fbd3d26e24820d031d96813";

fn at() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(AT_SECS)
}

fn credentials(expiry: Option<SystemTime>) -> Credentials {
    Credentials::new(
        ACCESS_KEY,
        SECRET_KEY,
        Some(SESSION_TOKEN.into()),
        expiry,
        "test",
    )
}

/// The token's URL and its query, decoded.
fn decode(token: &Secret) -> (url::Url, BTreeMap<String, String>) {
    let encoded = token.expose().strip_prefix(TOKEN_PREFIX).unwrap();
    assert!(!encoded.contains('='), "no padding");
    assert!(
        !encoded.contains('+') && !encoded.contains('/'),
        "url alphabet"
    );
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .unwrap();
    let url = url::Url::parse(std::str::from_utf8(&bytes).unwrap()).unwrap();
    let query = url.query_pairs().into_owned().collect();
    (url, query)
}

#[test]
fn the_token_carries_the_known_signature_and_exactly_the_authenticator_parameters() {
    let token = mint("my-cluster", "eu-west-1", &credentials(None), at()).unwrap();
    let (url, query) = decode(&token.token);
    assert_eq!(url.scheme(), "https");
    assert_eq!(url.host_str(), Some("sts.eu-west-1.amazonaws.com"));
    assert_eq!(url.path(), "/");
    let expected: BTreeMap<String, String> = [
        ("Action", "GetCallerIdentity"),
        ("Version", "2011-06-15"),
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
        (
            "X-Amz-Credential",
            "AKIDEXAMPLE/20240102/eu-west-1/sts/aws4_request",
        ),
        ("X-Amz-Date", "20240102T030405Z"),
        ("X-Amz-Expires", "60"),
        ("X-Amz-SignedHeaders", "host;x-k8s-aws-id"),
        ("X-Amz-Security-Token", SESSION_TOKEN),
        ("X-Amz-Signature", KNOWN_SIGNATURE),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(query, expected);
    assert_eq!(
        url.query_pairs().count(),
        expected.len(),
        "each parameter once"
    );
}

#[test]
fn the_signature_binds_cluster_region_time_and_credentials() {
    let signature = |cluster, region, credentials: &Credentials, at| {
        let token = mint(cluster, region, credentials, at).unwrap();
        decode(&token.token).1["X-Amz-Signature"].clone()
    };
    let base = signature("my-cluster", "eu-west-1", &credentials(None), at());
    assert_eq!(base, KNOWN_SIGNATURE);
    let other_key = Credentials::new(ACCESS_KEY, "other", Some(SESSION_TOKEN.into()), None, "t");
    for (name, other) in [
        (
            "cluster",
            signature("other-cluster", "eu-west-1", &credentials(None), at()),
        ),
        (
            "region",
            signature("my-cluster", "eu-central-1", &credentials(None), at()),
        ),
        (
            "time",
            signature(
                "my-cluster",
                "eu-west-1",
                &credentials(None),
                at() + Duration::from_secs(1),
            ),
        ),
        (
            "secret key",
            signature("my-cluster", "eu-west-1", &other_key, at()),
        ),
    ] {
        assert_ne!(other, base, "{name} must change the signature");
    }
}

#[test]
fn china_regions_use_their_own_sts_domain_and_bad_names_are_refused() {
    assert_eq!(
        sts_host("cn-north-1").unwrap(),
        "sts.cn-north-1.amazonaws.com.cn"
    );
    assert_eq!(
        sts_host("us-gov-west-1").unwrap(),
        "sts.us-gov-west-1.amazonaws.com"
    );
    for region in [
        "",
        "EU-WEST-1",
        "eu-west-1.evil.example",
        "eu west",
        "-x",
        "a/b",
    ] {
        assert!(
            matches!(sts_host(region), Err(EksTokenError::InvalidRegion(_))),
            "{region:?}"
        );
    }
    for cluster in ["", "-lead", "a b", "a\nb", "a:b", &"x".repeat(101)] {
        let error = mint(cluster, "eu-west-1", &credentials(None), at()).unwrap_err();
        assert!(
            matches!(error, EksTokenError::InvalidCluster(_)),
            "{cluster:?}"
        );
        assert!(!error.is_retryable());
    }
    assert!(mint("prod_eks-2", "eu-west-1", &credentials(None), at()).is_ok());
}

#[test]
fn a_token_is_reused_for_thirteen_minutes_and_never_past_its_credentials() {
    let minute = Duration::from_secs(60);
    let lifetime = TokenLifetime::new(at(), None);
    assert!(lifetime.usable_at(at()));
    assert!(lifetime.usable_at(at() + 5 * minute));
    assert!(lifetime.usable_at(at() + 13 * minute - Duration::from_millis(1)));
    assert!(!lifetime.usable_at(at() + 13 * minute));
    assert!(!lifetime.usable_at(at() + 14 * minute));
    assert!(
        !lifetime.usable_at(at() - Duration::from_secs(1)),
        "a clock that went back"
    );
    // Well inside what EKS accepts, even with a request in flight.
    assert!(REUSE_FOR + Duration::from_secs(30) < ACCEPTED_FOR);

    let short = TokenLifetime::new(at(), Some(at() + 2 * minute));
    assert!(short.usable_at(at() + minute));
    assert!(!short.usable_at(at() + 2 * minute));

    let token = mint(
        "my-cluster",
        "eu-west-1",
        &credentials(Some(at() + 3 * minute)),
        at(),
    )
    .unwrap();
    assert_eq!(token.lifetime.usable_until, at() + 3 * minute);
}

#[test]
fn no_secret_reaches_debug_or_error_text() {
    let token = mint("my-cluster", "eu-west-1", &credentials(None), at()).unwrap();
    let dumped = format!("{token:?} {:?}", credentials(None));
    for secret in [
        SECRET_KEY,
        SESSION_TOKEN,
        KNOWN_SIGNATURE,
        token.token.expose(),
    ] {
        assert!(!dumped.contains(secret), "{dumped}");
    }
    assert!(dumped.contains("<redacted>"));
}

/// A clock the test sets by hand.
struct FixedClock(Mutex<SystemTime>);

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

/// A credential chain that finds nothing (no role, no environment).
#[derive(Debug)]
struct NoCredentials;

impl ProvideCredentials for NoCredentials {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::ready(Err(
            aws_credential_types::provider::error::CredentialsError::not_loaded(
                "no role in this test",
            ),
        ))
    }
}

#[tokio::test]
async fn minting_signs_with_the_providers_credentials_at_the_clocks_time() {
    let clock = Arc::new(FixedClock(Mutex::new(at())));
    let tokens = EksTokens::new(
        SharedCredentialsProvider::new(credentials(None)),
        clock.clone(),
    );
    let token = tokens.mint("my-cluster", "eu-west-1").await.unwrap();
    assert_eq!(decode(&token.token).1["X-Amz-Signature"], KNOWN_SIGNATURE);
    *clock.0.lock().unwrap() = at() + Duration::from_secs(600);
    let later = tokens.mint("my-cluster", "eu-west-1").await.unwrap();
    assert_eq!(decode(&later.token).1["X-Amz-Date"], "20240102T031405Z");
    assert_eq!(tokens.now(), at() + Duration::from_secs(600));
}

#[tokio::test]
async fn missing_credentials_are_retryable_and_a_bad_entry_is_refused_before_looking() {
    let tokens = EksTokens::new(
        SharedCredentialsProvider::new(NoCredentials),
        Arc::new(SystemClock),
    );
    let error = tokens.mint("my-cluster", "eu-west-1").await.unwrap_err();
    assert!(
        matches!(error, EksTokenError::CredentialsUnavailable(_)),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert!(
        error.to_string().contains("no role in this test"),
        "{error}"
    );
    let error = tokens.mint("my-cluster", "nowhere/1").await.unwrap_err();
    assert!(
        matches!(error, EksTokenError::InvalidRegion(_)),
        "{error:?}"
    );
    assert!(!error.is_retryable());
}
