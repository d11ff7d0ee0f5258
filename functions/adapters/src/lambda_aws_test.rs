#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use aws_credential_types::provider::ProvideCredentials;

use super::*;

/// What Lambda sets for a function with an execution role (values made up).
const LAMBDA: &[(&str, &str)] = &[
    ("AWS_REGION", "eu-west-1"),
    ("AWS_DEFAULT_REGION", "eu-west-1"),
    ("AWS_ACCESS_KEY_ID", "ASIAEXAMPLE"),
    ("AWS_SECRET_ACCESS_KEY", "secret-example"),
    ("AWS_SESSION_TOKEN", "session-example"),
];

/// Variables to set (`Some`) or unset (`None`) on top of [`LAMBDA`].
type Changes<'a> = &'a [(&'a str, Option<&'a str>)];

fn config(changes: Changes) -> Result<SdkConfig, LambdaAwsError> {
    let mut variables: HashMap<String, String> = LAMBDA
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    for (name, value) in changes {
        match value {
            Some(value) => variables.insert(name.to_string(), value.to_string()),
            None => variables.remove(*name),
        };
    }
    from_variables(|name| variables.get(name).cloned())
}

#[tokio::test]
async fn lambda_variables_give_region_role_credentials_and_endpoint() {
    struct Case {
        name: &'static str,
        changes: Changes<'static>,
        region: &'static str,
        session_token: Option<&'static str>,
        endpoint: Option<&'static str>,
    }
    let cases = [
        Case {
            name: "as Lambda sets them",
            changes: &[],
            region: "eu-west-1",
            session_token: Some("session-example"),
            endpoint: None,
        },
        Case {
            name: "AWS_REGION wins over AWS_DEFAULT_REGION",
            changes: &[("AWS_DEFAULT_REGION", Some("us-east-2"))],
            region: "eu-west-1",
            session_token: Some("session-example"),
            endpoint: None,
        },
        Case {
            name: "AWS_DEFAULT_REGION alone",
            changes: &[
                ("AWS_REGION", None),
                ("AWS_DEFAULT_REGION", Some("us-east-2")),
            ],
            region: "us-east-2",
            session_token: Some("session-example"),
            endpoint: None,
        },
        Case {
            name: "an empty AWS_REGION counts as unset",
            changes: &[
                ("AWS_REGION", Some(" ")),
                ("AWS_DEFAULT_REGION", Some("us-east-2")),
            ],
            region: "us-east-2",
            session_token: Some("session-example"),
            endpoint: None,
        },
        Case {
            name: "long-term keys have no session token",
            changes: &[("AWS_SESSION_TOKEN", None)],
            region: "eu-west-1",
            session_token: None,
            endpoint: None,
        },
        Case {
            name: "AWS_ENDPOINT_URL points every client elsewhere",
            changes: &[("AWS_ENDPOINT_URL", Some("http://127.0.0.1:5000"))],
            region: "eu-west-1",
            session_token: Some("session-example"),
            endpoint: Some("http://127.0.0.1:5000"),
        },
        Case {
            name: "an empty AWS_ENDPOINT_URL counts as unset",
            changes: &[("AWS_ENDPOINT_URL", Some(""))],
            region: "eu-west-1",
            session_token: Some("session-example"),
            endpoint: None,
        },
    ];
    for case in cases {
        let config = config(case.changes).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(
            config.region().map(|r| r.as_ref()),
            Some(case.region),
            "{}",
            case.name
        );
        assert_eq!(config.endpoint_url(), case.endpoint, "{}", case.name);
        assert!(config.behavior_version().is_some(), "{}", case.name);
        let credentials = config
            .credentials_provider()
            .expect(case.name)
            .provide_credentials()
            .await
            .expect(case.name);
        assert_eq!(credentials.access_key_id(), "ASIAEXAMPLE", "{}", case.name);
        assert_eq!(
            credentials.secret_access_key(),
            "secret-example",
            "{}",
            case.name
        );
        assert_eq!(
            credentials.session_token(),
            case.session_token,
            "{}",
            case.name
        );
        assert_eq!(credentials.expiry(), None, "{}", case.name);
    }
}

#[test]
fn a_missing_variable_is_named_and_no_value_is_shown() {
    let cases: &[(Changes, &str)] = &[
        (
            &[("AWS_REGION", None), ("AWS_DEFAULT_REGION", None)],
            "AWS_REGION",
        ),
        (&[("AWS_ACCESS_KEY_ID", None)], "AWS_ACCESS_KEY_ID"),
        (&[("AWS_SECRET_ACCESS_KEY", None)], "AWS_SECRET_ACCESS_KEY"),
        (
            &[("AWS_SECRET_ACCESS_KEY", Some(""))],
            "AWS_SECRET_ACCESS_KEY",
        ),
    ];
    for (changes, missing) in cases {
        let error = config(changes).expect_err(missing);
        assert_eq!(error, LambdaAwsError::Missing(missing));
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("{missing} is not set")),
            "{message}"
        );
        for (_, value) in LAMBDA {
            assert!(!message.contains(value), "{message}");
        }
    }
}
