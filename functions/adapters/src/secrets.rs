//! Secrets Manager: webhook auth secret and the cluster registry, cached per warm container.
//!
//! The registry is every secret whose name starts with a prefix (default
//! `fluxrelay/clusters/`). The cluster's name is the entry's `name` field, not the secret
//! name, so entries are found by listing. The whole list is cached for a TTL; `invalidate`
//! drops the whole cache (not only the named cluster), so the next read lists and reads
//! every secret again: a rotated credential may come with a renamed or added secret, and
//! one list is only a few calls for a registry of clusters.
//!
//! One broken secret never hides the others: an entry that does not validate, or a secret
//! that cannot be read, becomes an *unusable* cluster name (see [`ClusterListing`]) whose
//! `cluster(name)` answers `Invalid` or `Unavailable`. Only a failed `ListSecrets` makes the
//! whole registry unavailable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
use fluxrelay_core::auth::{AuthConfig, AuthConfigError, SigningKey};
use fluxrelay_core::ports::{ClusterRegistry, RegistryReadError};
use fluxrelay_core::registry::ClusterListing;
use fluxrelay_core::registry::{ClusterEntry, FieldError, RegistryError, is_valid_cluster_name};
use fluxrelay_core::secret::Secret;
use futures_util::StreamExt as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const DEFAULT_PREFIX: &str = "fluxrelay/clusters/";
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Secrets read at once when the list is refreshed.
const CONCURRENT_READS: usize = 8;
/// The stage that names a secret's current value. Asked for explicitly: some stores (moto)
/// answer a stage-less read with an older version after a stage move.
const CURRENT_STAGE: &str = "AWSCURRENT";
/// Longest cluster name taken from a secret name (a FIFO message group id allows 128).
const MAX_SECRET_DERIVED_NAME: usize = 128;

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
    listing: Arc<ClusterListing>,
    by_name: HashMap<String, Arc<ClusterEntry>>,
    /// Why each of `listing.unusable` cannot be used (`Invalid` or `Unavailable`).
    unusable: HashMap<String, RegistryReadError>,
}

/// What reading one listed secret gave.
enum SecretRead {
    Value(String),
    /// Deleted since it was listed, or no current value yet: no entry (nothing to route).
    Missing,
    /// Could not be read now (access or KMS denied, throttled, …). A message for logs and
    /// dead letters; it never holds the secret value.
    Failed(String),
}

impl Snapshot {
    fn is_fresh(&self, ttl: Duration) -> bool {
        self.read_at.elapsed() < ttl
    }

    fn lookup(&self, name: &str) -> Result<Option<Arc<ClusterEntry>>, RegistryReadError> {
        if let Some(error) = self.unusable.get(name) {
            return Err(error.clone());
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

    /// Every entry under the prefix, read now: the valid ones, and each unusable one by
    /// name with why (`Invalid` with its problems, or `Unavailable`), for
    /// `fluxrelay cluster list`.
    pub async fn read_everything(
        &self,
    ) -> Result<(Vec<ClusterEntry>, Vec<(String, RegistryReadError)>), RegistryReadError> {
        let snapshot = self.read_all().await?;
        let mut unusable: Vec<(String, RegistryReadError)> =
            snapshot.unusable.into_iter().collect();
        unusable.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((snapshot.listing.entries.clone(), unusable))
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

    /// Fails only when the list fails: a secret that cannot be read is kept as such.
    async fn read_all(&self) -> Result<Snapshot, RegistryReadError> {
        let names = self.list_names().await?;
        let mut secrets: Vec<(String, SecretRead)> = futures_util::stream::iter(names)
            .map(|name| async move {
                let read = self.read_value(&name).await;
                (name, read)
            })
            .buffer_unordered(CONCURRENT_READS)
            .collect()
            .await;
        secrets.sort_by(|a, b| a.0.cmp(&b.0));
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

    /// The current secret string.
    async fn read_value(&self, secret_name: &str) -> SecretRead {
        match self
            .client
            .get_secret_value()
            .secret_id(secret_name)
            .version_stage(CURRENT_STAGE)
            .send()
            .await
        {
            // A binary-only secret reads as an empty string, which then fails to parse.
            Ok(output) => SecretRead::Value(output.secret_string().unwrap_or_default().to_string()),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|service| service.is_resource_not_found_exception()) =>
            {
                SecretRead::Missing
            }
            Err(error) => SecretRead::Failed(format!(
                "GetSecretValue of {secret_name} failed: {}",
                DisplayErrorContext(&error)
            )),
        }
    }

    /// Parse every secret, in secret-name order. Unusable entries are logged (secret name
    /// and problem, never the value) and kept apart so `cluster(name)` can report them.
    fn parse_all(&self, secrets: Vec<(String, SecretRead)>) -> Snapshot {
        let mut by_name: HashMap<String, Arc<ClusterEntry>> = HashMap::new();
        let mut secret_of: HashMap<String, String> = HashMap::new();
        let mut invalid: HashMap<String, RegistryError> = HashMap::new();
        let mut unreadable: Vec<(String, String)> = Vec::new();
        for (secret_name, read) in secrets {
            let text = match read {
                SecretRead::Value(text) => text,
                SecretRead::Missing => continue,
                SecretRead::Failed(message) => {
                    unreadable.push((secret_name, message));
                    continue;
                }
            };
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
                        "cluster registry entry is invalid; every push is dead-lettered for this cluster until it is fixed",
                    );
                    // A duplicate makes the name ambiguous: neither entry is used.
                    by_name.remove(&name);
                    invalid.insert(name, error);
                }
            }
        }
        let mut unusable: HashMap<String, RegistryReadError> = invalid
            .into_iter()
            .map(|(name, error)| (name.clone(), RegistryReadError::Invalid { name, error }))
            .collect();
        for (secret_name, message) in unreadable {
            let name = self.name_of_secret(&secret_name);
            tracing::warn!(
                secret = %secret_name,
                cluster = %name,
                error = %message,
                "cluster registry entry could not be read; pushes for this cluster are retried, then dead-lettered",
            );
            // Already invalid whatever the unread secret holds: that answer is final.
            if unusable.contains_key(&name) {
                continue;
            }
            // A valid entry of the same name may be this very cluster's duplicate: until the
            // secret is read, the name is ambiguous (as with two readable duplicates).
            let shadowed = by_name.remove(&name).is_some();
            let also = if shadowed {
                format!(" (it may be a second entry for cluster {name}, so neither is used)")
            } else {
                String::new()
            };
            unusable.insert(
                name,
                RegistryReadError::Unavailable(format!(
                    "the entry in secret {secret_name} could not be read{also}: {message}"
                )),
            );
        }
        let mut entries: Vec<ClusterEntry> =
            by_name.values().map(|entry| (**entry).clone()).collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let mut unusable_names: Vec<String> = unusable.keys().cloned().collect();
        unusable_names.sort();
        Snapshot {
            read_at: Instant::now(),
            listing: Arc::new(ClusterListing {
                entries,
                unusable: unusable_names,
            }),
            by_name,
            unusable,
        }
    }

    /// The cluster an invalid entry is meant for: its `name` field when that is a valid
    /// cluster name, else the one derived from the secret name.
    fn claimed_name(&self, secret_name: &str, text: &str) -> String {
        serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|value| {
                value
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .filter(|name| is_valid_cluster_name(name))
            .unwrap_or_else(|| self.name_of_secret(secret_name))
    }

    /// The cluster name of a secret whose entry names none usable (unreadable, not JSON, or
    /// a bad `name`): the secret name after the prefix. Route sends it dispatches, so it
    /// must be a FIFO message group id; Secrets Manager names use only characters a group id
    /// allows, but may be longer (or empty after the prefix): those become `secret-` and a
    /// digest of the secret name (the error still names the secret).
    fn name_of_secret(&self, secret_name: &str) -> String {
        let rest = secret_name
            .strip_prefix(&self.prefix)
            .unwrap_or(secret_name);
        let fits_a_group = (1..=MAX_SECRET_DERIVED_NAME).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/_+=.@-".contains(&b));
        if fits_a_group {
            return rest.to_string();
        }
        let digest = Sha256::digest(secret_name.as_bytes());
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("secret-{hex}")
    }
}

impl ClusterRegistry for SecretsRegistry {
    async fn clusters(&self) -> Result<Arc<ClusterListing>, RegistryReadError> {
        Ok(Arc::clone(&self.snapshot().await?.listing))
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
        .any(|key| !matches!(key.as_str(), "tokens" | "signing_keys" | "registry_tokens"))
    {
        return Err(malformed(
            "has an unknown field (only `tokens`, `signing_keys` and `registry_tokens` are read)",
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
    let registry_tokens: Vec<Secret> = strings("registry_tokens")?
        .into_iter()
        .map(Secret::new)
        .collect();
    AuthConfig::new(tokens, keys)
        .and_then(|auth| auth.with_registry_tokens(registry_tokens))
        .map_err(|error| AuthProblem::Invalid {
            field: "(secret)".into(),
            error,
        })
}

#[cfg(test)]
#[path = "secrets_test.rs"]
mod tests;
