//! Secrets Manager: the webhook auth secret, read by ingest. (The cluster registry's
//! secrets are read by `registry_aws`.)

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use fluxrelay_core::auth::{AuthConfig, AuthConfigError, SigningKey, TiedSecrets};
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

/// Read the webhook auth secret, JSON `{"tokens": ["..."], "signing_keys": ["whsec_..."],
/// "instance_secrets": [{"instances": ["gitlab.example.com"], "tokens": [...],
/// "signing_keys": [...]}]}` (every list may be absent; at least one secret must be
/// configured). Secrets in `instance_secrets` vouch only for pushes from their instances.
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
    let value: Value = serde_json::from_str(text).map_err(|error| {
        AuthProblem::Malformed(format!(
            "not valid JSON (line {}, column {})",
            error.line(),
            error.column()
        ))
    })?;
    let (tokens, keys, tied) = webhook_secrets(&value, "", true)?;
    let mut all_tied = Vec::new();
    for (index, entry) in tied.iter().enumerate() {
        let field = format!("instance_secrets[{index}]");
        let (tokens, signing_keys, _) = webhook_secrets(entry, &field, false)?;
        let instances = strings(entry, &field, "instances")?;
        all_tied.push(TiedSecrets {
            instances,
            tokens,
            signing_keys,
        });
    }
    // Registries (POST /registry/...) send these in Authorization; without any, they send
    // one of `tokens`.
    let registry_tokens: Vec<Secret> = strings(&value, "", "registry_tokens")?
        .into_iter()
        .map(Secret::new)
        .collect();
    AuthConfig::with_tied(tokens, keys, all_tied)
        .and_then(|auth| auth.with_registry_tokens(registry_tokens))
        .map_err(|error| AuthProblem::Invalid {
            field: "(secret)".into(),
            error,
        })
}

/// Tokens, signing keys, and the `instance_secrets` entries still to read.
type WebhookSecrets = (Vec<Secret>, Vec<SigningKey>, Vec<Value>);

/// The tokens and keys of one object (the secret, or one of its `instance_secrets`), and
/// the `instance_secrets` entries when `top` (they do not nest).
fn webhook_secrets(value: &Value, prefix: &str, top: bool) -> Result<WebhookSecrets, AuthProblem> {
    let at = |field: &str| {
        if prefix.is_empty() {
            field.to_string()
        } else {
            format!("{prefix}.{field}")
        }
    };
    let Some(object) = value.as_object() else {
        let what = if prefix.is_empty() {
            "the secret"
        } else {
            prefix
        };
        return Err(AuthProblem::Malformed(format!(
            "{what} must be a JSON object"
        )));
    };
    let known: &[&str] = if top {
        &[
            "tokens",
            "signing_keys",
            "instance_secrets",
            "registry_tokens",
        ]
    } else {
        &["instances", "tokens", "signing_keys"]
    };
    if object.keys().any(|key| !known.contains(&key.as_str())) {
        return Err(AuthProblem::Malformed(format!(
            "{} has an unknown field (only {} are read)",
            if prefix.is_empty() { "it" } else { prefix },
            known
                .iter()
                .map(|key| format!("`{key}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let tokens: Vec<Secret> = strings(value, prefix, "tokens")?
        .into_iter()
        .map(Secret::new)
        .collect();
    let mut keys = Vec::new();
    for (index, key) in strings(value, prefix, "signing_keys")?.iter().enumerate() {
        keys.push(
            SigningKey::parse(key).map_err(|error| AuthProblem::Invalid {
                field: at(&format!("signing_keys[{index}]")),
                error,
            })?,
        );
    }
    let tied = match object.get("instance_secrets") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if top => items.clone(),
        Some(_) => {
            return Err(AuthProblem::Malformed(
                "instance_secrets must be a list of objects".into(),
            ));
        }
    };
    Ok((tokens, keys, tied))
}

/// A list of strings at `field` of `value` (absent or null: empty).
fn strings(value: &Value, prefix: &str, field: &str) -> Result<Vec<String>, AuthProblem> {
    let name = if prefix.is_empty() {
        field.to_string()
    } else {
        format!("{prefix}.{field}")
    };
    match value.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                item.as_str().map(str::to_string).ok_or_else(|| {
                    AuthProblem::Malformed(format!("{name}[{index}] must be a string"))
                })
            })
            .collect(),
        Some(_) => Err(AuthProblem::Malformed(format!(
            "{name} must be a list of strings"
        ))),
    }
}

#[cfg(test)]
#[path = "secrets_test.rs"]
mod tests;
