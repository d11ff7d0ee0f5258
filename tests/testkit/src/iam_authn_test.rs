#![allow(clippy::unwrap_used)]

use std::time::UNIX_EPOCH;

use super::*;

/// botocore's `generate_presigned_url` output (the `aws eks get-token` code path) for
/// AKIDEXAMPLE, cluster my-cluster, eu-west-1, signed at 2024-01-02T03:04:05Z with a
/// session token: a token from outside this project, so the verifier is checked on its own.
const BOTOCORE_URL: &str = "https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20240102%2Feu-west-1%2Fsts%2Faws4_request&X-Amz-Date=20240102T030405Z&X-Amz-SignedHeaders=host%3Bx-k8s-aws-id&X-Amz-Expires=60&X-Amz-Security-Token=IQoJb3JpZ2luX2VjEXAMPLE%2Fsession%2Btoken%3D%3D&X-Amz-Signature=0a4212d703b39bfe52c0c359853cc63f449d65799fbd3d26e24820d031d96813";
/// 2024-01-02T03:04:05Z
const SIGNED_AT: u64 = 1_704_164_645;

fn config(cluster_id: &str) -> IamAuthnConfig {
    IamAuthnConfig {
        cluster_id: cluster_id.into(),
        region: "eu-west-1".into(),
        accounts: vec![TestAccount {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            username: "fluxrelay-dispatcher".into(),
            arn: "arn:aws:sts::111122223333:assumed-role/fluxrelay-dispatch/fn".into(),
        }],
    }
}

fn token(url: &str) -> String {
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url)
    )
}

fn at(seconds_after_signing: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(SIGNED_AT + seconds_after_signing)
}

#[test]
fn a_botocore_token_for_this_cluster_authenticates_its_user() {
    let who = verify(&config("my-cluster"), &token(BOTOCORE_URL), at(60)).unwrap();
    assert_eq!(who.username, "fluxrelay-dispatcher");
    assert_eq!(who.access_key_id, "AKIDEXAMPLE");
    assert!(verify(&config("my-cluster"), &token(BOTOCORE_URL), at(15 * 60)).is_ok());
}

#[test]
fn tokens_are_refused_as_aws_iam_authenticator_and_sts_refuse_them() {
    let good = token(BOTOCORE_URL);
    let changed = |from: &str, to: &str| token(&BOTOCORE_URL.replace(from, to));
    let mut wrong_secret = config("my-cluster");
    wrong_secret.accounts[0].secret_access_key = "another-secret".into();
    let mut other_region = config("my-cluster");
    other_region.region = "eu-central-1".into();
    let cases: Vec<(&str, IamAuthnConfig, String, SystemTime, &str)> = vec![
        (
            "another cluster",
            config("other-cluster"),
            good.clone(),
            at(60),
            "SignatureDoesNotMatch",
        ),
        (
            "wrong secret",
            wrong_secret,
            good.clone(),
            at(60),
            "SignatureDoesNotMatch",
        ),
        (
            "expired",
            config("my-cluster"),
            good.clone(),
            at(15 * 60 + 1),
            "expired",
        ),
        (
            "other STS region",
            other_region,
            good.clone(),
            at(60),
            "unexpected hostname",
        ),
        (
            "no prefix",
            config("my-cluster"),
            good.replace(TOKEN_PREFIX, "k8s-aws-v2."),
            at(60),
            "does not start",
        ),
        (
            "too large",
            config("my-cluster"),
            format!("{good}{}", "A".repeat(4096)),
            at(60),
            "too large",
        ),
        (
            "plain http",
            config("my-cluster"),
            changed("https://", "http://"),
            at(60),
            "scheme",
        ),
        (
            "other host",
            config("my-cluster"),
            changed("sts.eu-west-1.amazonaws.com", "sts.example.com"),
            at(60),
            "hostname",
        ),
        (
            "other path",
            config("my-cluster"),
            changed(".com/?", ".com/x?"),
            at(60),
            "path",
        ),
        (
            "other action",
            config("my-cluster"),
            changed("GetCallerIdentity", "AssumeRole"),
            at(60),
            "action",
        ),
        (
            "extra parameter",
            config("my-cluster"),
            changed("?Action", "?Foo=1&Action"),
            at(60),
            "non-whitelisted",
        ),
        (
            "repeated parameter",
            config("my-cluster"),
            changed("?Action", "?Version=1&Action"),
            at(60),
            "more than once",
        ),
        (
            "cluster id not signed",
            config("my-cluster"),
            changed("host%3Bx-k8s-aws-id", "host"),
            at(60),
            "not a signed header",
        ),
        (
            "expires over 900",
            config("my-cluster"),
            changed("X-Amz-Expires=60", "X-Amz-Expires=901"),
            at(60),
            "out of range",
        ),
        (
            "tampered session token",
            config("my-cluster"),
            changed("session%2Btoken", "session%2Btoken2"),
            at(60),
            "SignatureDoesNotMatch",
        ),
        (
            "unknown key",
            config("my-cluster"),
            changed("AKIDEXAMPLE", "AKIDOTHER"),
            at(60),
            "unknown access key",
        ),
    ];
    for (name, config, token, now, expected) in cases {
        let error = verify(&config, &token, now).unwrap_err();
        assert!(error.contains(expected), "{name}: {error}");
    }
}

#[test]
fn sigv4_uri_encoding_keeps_only_unreserved_characters() {
    assert_eq!(uri_encode("AZaz09-_.~"), "AZaz09-_.~");
    assert_eq!(uri_encode("a/b+c=d;e f"), "a%2Fb%2Bc%3Dd%3Be%20f");
    assert_eq!(uri_encode("é"), "%C3%A9");
}
