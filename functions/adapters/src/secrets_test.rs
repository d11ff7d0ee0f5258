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
fn webhook_auth_ties_secrets_to_instances_and_keeps_the_old_form() {
    let key = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let config = parse_webhook_auth(&format!(
        r#"{{"tokens": ["any-instance"], "instance_secrets": [
             {{"instances": ["gitlab-a.example.com"], "tokens": ["for-a"], "signing_keys": ["{key}"]}}]}}"#
    ))
    .ok()
    .unwrap();
    assert_eq!(config.tokens.len(), 1);
    assert_eq!(config.tied.len(), 1);
    assert_eq!(config.tied[0].instances, ["gitlab-a.example.com"]);
    assert!(config.tied[0].tokens[0].matches(b"for-a"));
    assert_eq!(config.tied[0].signing_keys.len(), 1);
    // Only tied secrets: a complete configuration.
    assert!(
        parse_webhook_auth(
            r#"{"instance_secrets": [{"instances": ["gitlab-a.example.com"], "tokens": ["for-a"]}]}"#
        )
        .is_ok()
    );
    for (text, expected) in [
        (
            r#"{"instance_secrets": {"tokens": ["tok-SECRET"]}}"#,
            "instance_secrets must be a list of objects",
        ),
        (
            r#"{"instance_secrets": ["tok-SECRET"]}"#,
            "instance_secrets[0] must be a JSON object",
        ),
        (
            r#"{"instance_secrets": [{"tokens": ["tok-SECRET"]}]}"#,
            "instance-tied secrets #1 name no instance",
        ),
        (
            r#"{"instance_secrets": [{"instances": ["gitlab-a.example.com"]}]}"#,
            "instance-tied secrets #1 name no token and no signing key",
        ),
        (
            r#"{"instance_secrets": [{"instances": ["a"], "tokens": ["tok-SECRET"], "token": 1}]}"#,
            "instance_secrets[0] has an unknown field",
        ),
        (
            r#"{"instance_secrets": [{"instances": [1], "tokens": ["tok-SECRET"]}]}"#,
            "instance_secrets[0].instances[0] must be a string",
        ),
        (
            r#"{"instance_secrets": [{"instances": ["a"], "signing_keys": ["whsec_SECRET!!"]}]}"#,
            "instance_secrets[0].signing_keys[0]: signing key is invalid",
        ),
        (
            r#"{"instance_secrets": [{"instances": ["a"], "tokens": ["tok-SECRET"], "instance_secrets": []}]}"#,
            "unknown field",
        ),
    ] {
        let message = problem(text);
        assert!(message.contains(expected), "{text}: {message}");
        assert!(!message.contains("SECRET"), "{text}: {message}");
    }
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
