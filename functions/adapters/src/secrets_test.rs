#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

fn problem(text: &str) -> String {
    match parse_webhook_auth(text) {
        Ok(_) => panic!("expected an error"),
        Err(AuthProblem::Malformed(message)) => message,
        Err(AuthProblem::Invalid { field, error }) => format!("{field}: {error}"),
    }
}

#[test]
fn webhook_auth_errors_name_the_field_and_never_the_value() {
    for (text, expected) in [
        (
            r#"{"tokens": "tok-SECRET"}"#,
            "tokens must be a list of strings",
        ),
        (r#"{"tokens": [7]}"#, "tokens[0] must be a string"),
        (
            r#"{"tokens": ["tok-SECRET"], "extra-SECRET": 1}"#,
            "unknown field",
        ),
        (r#"["tok-SECRET"]"#, "must be a JSON object"),
        (r#"{"tokens": ["tok-SECRET"#, "not valid JSON"),
        ("{}", "no accepted token and no signing key"),
        (r#"{"tokens": [""]}"#, "accepted token #1 is empty"),
        (
            r#"{"signing_keys": ["whsec_SECRET!!"]}"#,
            "signing_keys[0]: signing key is invalid",
        ),
    ] {
        let message = problem(text);
        assert!(message.contains(expected), "{text}: {message}");
        assert!(!message.contains("SECRET"), "{text}: {message}");
    }
}

#[test]
fn webhook_auth_accepts_tokens_alone() {
    let config = parse_webhook_auth(r#"{"tokens": ["a", "b"], "signing_keys": null}"#)
        .ok()
        .unwrap();
    assert_eq!(config.tokens.len(), 2);
    assert!(config.signing_keys.is_empty());
}

#[test]
fn webhook_auth_reads_registry_tokens_and_checks_them_without_showing_them() {
    let config = parse_webhook_auth(r#"{"tokens": ["a"], "registry_tokens": ["r1", "r2"]}"#)
        .ok()
        .unwrap();
    assert_eq!(config.registry_tokens.len(), 2);
    assert_eq!(config.accepted_registry_tokens().len(), 2);
    for (text, expected) in [
        (
            r#"{"tokens": ["a"], "registry_tokens": "reg-SECRET"}"#,
            "registry_tokens must be a list of strings",
        ),
        (
            r#"{"tokens": ["a"], "registry_tokens": ["reg-SECRET "]}"#,
            "registry token #1 has a control character or surrounding whitespace",
        ),
    ] {
        let message = problem(text);
        assert!(message.contains(expected), "{text}: {message}");
        assert!(!message.contains("SECRET"), "{text}: {message}");
    }
}
