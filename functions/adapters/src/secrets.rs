//! Secrets Manager: the webhook auth secret, read by ingest. (The cluster registry's
//! secrets are read by `registry_aws`.)

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use fluxrelay_core::auth::{AuthConfig, AuthConfigError, SigningKey};
use fluxrelay_core::secret::Secret;
use serde_json::Value;

/// The stage that names a secret's current value. Asked for explicitly: some stores (moto)
/// answer a stage-less read with an older version after a stage move.
const CURRENT_STAGE: &str = "AWSCURRENT";

/// The webhook auth secret could not be used. Messages name the secret and the field,
/// never a token or key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookAuthError {
    #[error("webhook auth secret {secret_id} could not be read: {message}")]
    Unavailable { secret_id: String, message: String },
    #[error("webhook auth secret {secret_id} is malformed: {message}")]
    Malformed { secret_id: String, message: String },
    #[error("webhook auth secret {secret_id}: {field}: {error}")]
    Invalid {
        secret_id: String,
        field: String,
        error: AuthConfigError,
    },
}

/// Read the webhook auth secret, JSON `{"tokens": ["..."], "signing_keys": ["whsec_..."]}`
/// (either list may be absent; at least one secret must be configured).
pub async fn load_webhook_auth(
    client: &Client,
    secret_id: &str,
) -> Result<AuthConfig, WebhookAuthError> {
    let output = client
        .get_secret_value()
        .secret_id(secret_id)
        .version_stage(CURRENT_STAGE)
        .send()
        .await
        .map_err(|error| WebhookAuthError::Unavailable {
            secret_id: secret_id.to_string(),
            message: DisplayErrorContext(&error).to_string(),
        })?;
    let malformed = |message: &str| WebhookAuthError::Malformed {
        secret_id: secret_id.to_string(),
        message: message.to_string(),
    };
    let text = output
        .secret_string()
        .ok_or_else(|| malformed("it has no secret string (binary secrets are not supported)"))?;
    parse_webhook_auth(text).map_err(|problem| match problem {
        AuthProblem::Malformed(message) => malformed(&message),
        AuthProblem::Invalid { field, error } => WebhookAuthError::Invalid {
            secret_id: secret_id.to_string(),
            field,
            error,
        },
    })
}

enum AuthProblem {
    Malformed(String),
    Invalid {
        field: String,
        error: AuthConfigError,
    },
}

/// Parsed by hand, not with serde: serde's messages quote the offending value.
fn parse_webhook_auth(text: &str) -> Result<AuthConfig, AuthProblem> {
    let malformed = |message: &str| AuthProblem::Malformed(message.to_string());
    let value: Value = serde_json::from_str(text).map_err(|error| {
        AuthProblem::Malformed(format!(
            "not valid JSON (line {}, column {})",
            error.line(),
            error.column()
        ))
    })?;
    let Some(object) = value.as_object() else {
        return Err(malformed("must be a JSON object"));
    };
    if object
        .keys()
        .any(|key| key != "tokens" && key != "signing_keys")
    {
        return Err(malformed(
            "has an unknown field (only `tokens` and `signing_keys` are read)",
        ));
    }
    let strings = |field: &str| -> Result<Vec<String>, AuthProblem> {
        match object.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(index, item)| {
                    item.as_str().map(str::to_string).ok_or_else(|| {
                        AuthProblem::Malformed(format!("{field}[{index}] must be a string"))
                    })
                })
                .collect(),
            Some(_) => Err(AuthProblem::Malformed(format!(
                "{field} must be a list of strings"
            ))),
        }
    };
    let tokens: Vec<Secret> = strings("tokens")?.into_iter().map(Secret::new).collect();
    let mut keys = Vec::new();
    for (index, key) in strings("signing_keys")?.iter().enumerate() {
        keys.push(
            SigningKey::parse(key).map_err(|error| AuthProblem::Invalid {
                field: format!("signing_keys[{index}]"),
                error,
            })?,
        );
    }
    AuthConfig::new(tokens, keys).map_err(|error| AuthProblem::Invalid {
        field: "(secret)".into(),
        error,
    })
}

#[cfg(test)]
#[path = "secrets_test.rs"]
mod tests;
