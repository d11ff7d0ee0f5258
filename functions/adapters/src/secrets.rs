//! Secrets Manager: webhook auth secret and the cluster registry, cached per warm container.
//!
//! The registry is every secret whose name starts with a prefix (default
//! `fluxrelay/clusters/`). The cluster's name is the entry's `name` field, not the secret
//! name, so entries are found by listing. The whole list is cached for a TTL; `invalidate`
//! drops the whole cache (not only the named cluster), so the next read lists and reads
//! every secret again: a rotated credential may come with a renamed or added secret, and
//! one list is only a few calls for a registry of clusters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
use fluxrelay_core::auth::{AuthConfig, AuthConfigError, SigningKey};
use fluxrelay_core::ports::{ClusterRegistry, RegistryReadError};
use fluxrelay_core::registry::{ClusterEntry, FieldError, RegistryError};
use fluxrelay_core::secret::Secret;
use futures_util::StreamExt as _;
use serde_json::Value;

pub const DEFAULT_PREFIX: &str = "fluxrelay/clusters/";
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Secrets read at once when the list is refreshed.
const CONCURRENT_READS: usize = 8;
/// The stage that names a secret's current value. Asked for explicitly: some stores (moto)
/// answer a stage-less read with an older version after a stage move.
const CURRENT_STAGE: &str = "AWSCURRENT";

/// The cluster registry in Secrets Manager, one secret per cluster.
pub struct SecretsRegistry {
    client: Client,
    prefix: String,
    ttl: Duration,
    cache: Mutex<Cache>,
    /// One refresh at a time: concurrent readers of a stale cache wait for it.
    refresh: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Cache {
    snapshot: Option<Arc<Snapshot>>,
    /// Bumped by `invalidate`, so a refresh that started before it is not cached.
    generation: u64,
}

/// One read of the whole registry.
struct Snapshot {
    read_at: Instant,
    valid: Arc<Vec<ClusterEntry>>,
    by_name: HashMap<String, Arc<ClusterEntry>>,
    invalid: HashMap<String, RegistryError>,
}

impl Snapshot {
    fn is_fresh(&self, ttl: Duration) -> bool {
        self.read_at.elapsed() < ttl
    }

    fn lookup(&self, name: &str) -> Result<Option<Arc<ClusterEntry>>, RegistryReadError> {
        if let Some(error) = self.invalid.get(name) {
            return Err(RegistryReadError::Invalid {
                name: name.to_string(),
                error: error.clone(),
            });
        }
        Ok(self.by_name.get(name).cloned())
    }
}

impl SecretsRegistry {
    /// Prefix `fluxrelay/clusters/`, TTL 60 s.
    pub fn new(client: Client) -> Self {
        Self::with_settings(client, DEFAULT_PREFIX, DEFAULT_TTL)
    }

    pub fn with_settings(client: Client, prefix: impl Into<String>, ttl: Duration) -> Self {
        Self {
            client,
            prefix: prefix.into(),
            ttl,
            cache: Mutex::new(Cache::default()),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    /// Every entry under the prefix, read now: the valid ones, and each invalid one by name
    /// with its problems (for `fluxrelay cluster list`).
    pub async fn read_everything(
        &self,
    ) -> Result<(Vec<ClusterEntry>, Vec<(String, RegistryError)>), RegistryReadError> {
        let snapshot = self.read_all().await?;
        let mut invalid: Vec<(String, RegistryError)> = snapshot.invalid.into_iter().collect();
        invalid.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((snapshot.valid.as_ref().clone(), invalid))
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        // The cache holds plain data; a panic elsewhere cannot leave it half-written.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fresh_snapshot(&self) -> Option<Arc<Snapshot>> {
        self.cache()
            .snapshot
            .clone()
            .filter(|snapshot| snapshot.is_fresh(self.ttl))
    }

    /// The cached registry while fresh; otherwise read Secrets Manager (once for all
    /// concurrent callers).
    async fn snapshot(&self) -> Result<Arc<Snapshot>, RegistryReadError> {
        if let Some(snapshot) = self.fresh_snapshot() {
            return Ok(snapshot);
        }
        let _refreshing = self.refresh.lock().await;
        if let Some(snapshot) = self.fresh_snapshot() {
            return Ok(snapshot);
        }
        let generation = self.cache().generation;
        let snapshot = Arc::new(self.read_all().await?);
        let mut cache = self.cache();
        if cache.generation == generation {
            cache.snapshot = Some(Arc::clone(&snapshot));
        }
        Ok(snapshot)
    }

    async fn read_all(&self) -> Result<Snapshot, RegistryReadError> {
        let names = self.list_names().await?;
        let mut secrets: Vec<(String, Option<String>)> = futures_util::stream::iter(names)
            .map(|name| async move {
                let value = self.read_value(&name).await?;
                Ok::<_, RegistryReadError>((name, value))
            })
            .buffer_unordered(CONCURRENT_READS)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        secrets.sort();
        Ok(self.parse_all(secrets))
    }

    /// Names of every secret under the prefix, all pages.
    async fn list_names(&self) -> Result<Vec<String>, RegistryReadError> {
        let filter = Filter::builder()
            .key(FilterNameStringType::Name)
            .values(self.prefix.clone())
            .build();
        let mut names = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_secrets()
                .filters(filter.clone())
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(|error| {
                    RegistryReadError::Unavailable(format!(
                        "ListSecrets under {} failed: {}",
                        self.prefix,
                        DisplayErrorContext(&error)
                    ))
                })?;
            // The service filter is a case-insensitive prefix match; the registry is exact.
            names.extend(
                page.secret_list()
                    .iter()
                    .filter_map(|entry| entry.name())
                    .filter(|name| name.starts_with(&self.prefix))
                    .map(str::to_string),
            );
            match page.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_string()),
                _ => break,
            }
        }
        Ok(names)
    }

    /// The current secret string; `None` when the secret vanished since it was listed.
    async fn read_value(&self, secret_name: &str) -> Result<Option<String>, RegistryReadError> {
        match self
            .client
            .get_secret_value()
            .secret_id(secret_name)
            .version_stage(CURRENT_STAGE)
            .send()
            .await
        {
            // A binary-only secret reads as an empty string, which then fails to parse.
            Ok(output) => Ok(Some(output.secret_string().unwrap_or_default().to_string())),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|service| service.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(error) => Err(RegistryReadError::Unavailable(format!(
                "GetSecretValue of {secret_name} failed: {}",
                DisplayErrorContext(&error)
            ))),
        }
    }

    /// Parse every secret, in secret-name order. Invalid entries are logged (secret name
    /// and field errors, never the value) and kept apart so `cluster(name)` can report them.
    fn parse_all(&self, secrets: Vec<(String, Option<String>)>) -> Snapshot {
        let mut by_name: HashMap<String, Arc<ClusterEntry>> = HashMap::new();
        let mut secret_of: HashMap<String, String> = HashMap::new();
        let mut invalid: HashMap<String, RegistryError> = HashMap::new();
        for (secret_name, value) in secrets {
            let Some(text) = value else { continue };
            let (name, result) = match ClusterEntry::from_json(&text) {
                Ok(entry) => (entry.name.clone(), Ok(entry)),
                Err(error) => (self.claimed_name(&secret_name, &text), Err(error)),
            };
            let result = match secret_of.get(&name) {
                Some(first) => Err(RegistryError {
                    errors: vec![FieldError {
                        path: "name".into(),
                        message: format!("`{name}` is also the name in secret {first}"),
                    }],
                }),
                None => result,
            };
            secret_of.entry(name.clone()).or_insert(secret_name.clone());
            match result {
                Ok(entry) => {
                    by_name.insert(name, Arc::new(entry));
                }
                Err(error) => {
                    tracing::warn!(
                        secret = %secret_name,
                        cluster = %name,
                        errors = %error,
                        "cluster registry entry is invalid; it is left out",
                    );
                    // A duplicate makes the name ambiguous: neither entry is used.
                    by_name.remove(&name);
                    invalid.insert(name, error);
                }
            }
        }
        let mut valid: Vec<ClusterEntry> =
            by_name.values().map(|entry| (**entry).clone()).collect();
        valid.sort_by(|a, b| a.name.cmp(&b.name));
        Snapshot {
            read_at: Instant::now(),
            valid: Arc::new(valid),
            by_name,
            invalid,
        }
    }

    /// The cluster an invalid entry is meant for: its `name` field when that is a string,
    /// else the secret name after the prefix.
    fn claimed_name(&self, secret_name: &str, text: &str) -> String {
        serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|value| {
                value
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| {
                secret_name
                    .strip_prefix(&self.prefix)
                    .unwrap_or(secret_name)
                    .to_string()
            })
    }
}

impl ClusterRegistry for SecretsRegistry {
    async fn clusters(&self) -> Result<Arc<Vec<ClusterEntry>>, RegistryReadError> {
        Ok(Arc::clone(&self.snapshot().await?.valid))
    }

    async fn cluster(&self, name: &str) -> Result<Option<Arc<ClusterEntry>>, RegistryReadError> {
        self.snapshot().await?.lookup(name)
    }

    /// Drops the whole cached registry (whatever `name`): the next read goes to Secrets
    /// Manager.
    fn invalidate(&self, name: &str) {
        tracing::debug!(cluster = %name, "cluster registry cache invalidated");
        let mut cache = self.cache();
        cache.snapshot = None;
        cache.generation += 1;
    }
}

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
