//! `authenticate_registry`: the `Authorization` header of registry notifications.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::*;

const WEBHOOK_TOKEN: &str = "webhook-token-SECRET-1";
const REGISTRY_OLD: &str = "registry-token-SECRET-old";
const REGISTRY_NEW: &str = "registry-token-SECRET-new";

fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value).unwrap(),
        );
    }
    map
}

fn webhook_only() -> AuthConfig {
    AuthConfig::new(vec![Secret::new(WEBHOOK_TOKEN)], vec![]).unwrap()
}

fn with_registry_tokens() -> AuthConfig {
    webhook_only()
        .with_registry_tokens(vec![Secret::new(REGISTRY_OLD), Secret::new(REGISTRY_NEW)])
        .unwrap()
}

#[test]
fn the_authorization_header_is_checked_against_the_registry_tokens() {
    use AuthFailure::*;
    let bearer = |token: &str| format!("Bearer {token}");
    let cases: Vec<(&str, AuthConfig, HeaderMap, Result<(), AuthFailure>)> = vec![
        (
            "bearer, newest token",
            with_registry_tokens(),
            headers(&[("authorization", bearer(REGISTRY_NEW).as_bytes())]),
            Ok(()),
        ),
        (
            "bearer, older token during rotation",
            with_registry_tokens(),
            headers(&[("authorization", bearer(REGISTRY_OLD).as_bytes())]),
            Ok(()),
        ),
        (
            "bare token, as Harbor and GitLab's examples send it",
            with_registry_tokens(),
            headers(&[("authorization", REGISTRY_NEW.as_bytes())]),
            Ok(()),
        ),
        (
            "the scheme in any case",
            with_registry_tokens(),
            headers(&[("Authorization", format!("bEARER {REGISTRY_OLD}").as_bytes())]),
            Ok(()),
        ),
        (
            "the webhook token is not a registry token once those are set",
            with_registry_tokens(),
            headers(&[("authorization", bearer(WEBHOOK_TOKEN).as_bytes())]),
            Err(WrongRegistryToken),
        ),
        (
            "without registry tokens the webhook tokens are accepted",
            webhook_only(),
            headers(&[("authorization", bearer(WEBHOOK_TOKEN).as_bytes())]),
            Ok(()),
        ),
        (
            "missing",
            with_registry_tokens(),
            headers(&[]),
            Err(MissingHeader {
                header: AUTHORIZATION,
            }),
        ),
        (
            "X-Gitlab-Token is not read",
            with_registry_tokens(),
            headers(&[("x-gitlab-token", REGISTRY_NEW.as_bytes())]),
            Err(MissingHeader {
                header: AUTHORIZATION,
            }),
        ),
        (
            "duplicated, even when both are right",
            with_registry_tokens(),
            headers(&[
                ("authorization", REGISTRY_NEW.as_bytes()),
                ("authorization", REGISTRY_NEW.as_bytes()),
            ]),
            Err(DuplicatedHeader {
                header: AUTHORIZATION,
            }),
        ),
        (
            "empty",
            with_registry_tokens(),
            headers(&[("authorization", b"")]),
            Err(WrongRegistryToken),
        ),
        (
            "scheme alone",
            with_registry_tokens(),
            headers(&[("authorization", b"Bearer ")]),
            Err(WrongRegistryToken),
        ),
        (
            "a prefix of the token",
            with_registry_tokens(),
            headers(&[("authorization", &REGISTRY_NEW.as_bytes()[..10])]),
            Err(WrongRegistryToken),
        ),
        (
            "the token and more",
            with_registry_tokens(),
            headers(&[("authorization", format!("{REGISTRY_NEW}x").as_bytes())]),
            Err(WrongRegistryToken),
        ),
        (
            "another scheme",
            with_registry_tokens(),
            headers(&[("authorization", format!("Basic {REGISTRY_NEW}").as_bytes())]),
            Err(WrongRegistryToken),
        ),
        (
            "two spaces after the scheme",
            with_registry_tokens(),
            headers(&[(
                "authorization",
                format!("Bearer  {REGISTRY_NEW}").as_bytes(),
            )]),
            Err(WrongRegistryToken),
        ),
        (
            "non-UTF-8 bytes",
            with_registry_tokens(),
            headers(&[("authorization", b"Bearer \xff\xfe")]),
            Err(WrongRegistryToken),
        ),
    ];
    let mut produced = std::collections::BTreeSet::new();
    for (name, config, headers, expected) in cases {
        let result = authenticate_registry(&config, &headers);
        assert_eq!(result, expected, "{name}");
        if let Err(failure) = result {
            produced.insert(tests::variant_name_for_registry(&failure));
            let shown = format!("{failure} {failure:?}");
            for secret in [WEBHOOK_TOKEN, REGISTRY_OLD, REGISTRY_NEW, "SECRET"] {
                assert!(!shown.contains(secret), "{name}: {shown}");
            }
        }
    }
    // A configuration with signing keys only has no token a registry could send.
    let keys_only = AuthConfig::new(
        vec![],
        vec![SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()],
    )
    .unwrap();
    let no_token = authenticate_registry(&keys_only, &headers(&[("authorization", b"Bearer x")]));
    assert_eq!(no_token, Err(AuthFailure::NoRegistryToken));
    produced.insert(tests::variant_name_for_registry(
        &AuthFailure::NoRegistryToken,
    ));
    assert!(produced.contains("WrongRegistryToken") && produced.contains("NoRegistryToken"));
}

#[test]
fn registry_tokens_are_checked_like_webhook_tokens_and_never_shown() {
    for (tokens, expected) in [
        (
            vec![""],
            AuthConfigError::EmptyRegistryToken { position: 1 },
        ),
        (
            vec!["ok", " padded"],
            AuthConfigError::UndeliverableRegistryToken { position: 2 },
        ),
        (
            vec!["line\nbreak"],
            AuthConfigError::UndeliverableRegistryToken { position: 1 },
        ),
    ] {
        let error = webhook_only()
            .with_registry_tokens(tokens.iter().map(|t| Secret::new(*t)).collect())
            .unwrap_err();
        assert_eq!(error, expected);
    }
    let shown = format!("{:?}", with_registry_tokens());
    assert!(!shown.contains("SECRET"), "{shown}");
}
