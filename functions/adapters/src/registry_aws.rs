//! The cluster registry of the AWS functions (`docs/design.md`, "Cluster registry"): the
//! index, one S3 object that lists every cluster (route's whole view: names and
//! subscriptions, never a credential), and for each cluster whose entry holds a secret,
//! the Secrets Manager secret `<prefix><name>`, which only dispatch reads, for the clusters
//! it dispatches to.
//!
//! Reads follow core's `registry::last_good` rule. The index is read with a conditional
//! GET once per TTL (an unchanged index is a `304` without a body); a secret once per TTL
//! per cluster in use. A failed re-read keeps the last good value (logged at warn with its
//! age) and is tried again 10 s later: unreadable is not unfiltered. Only a first read
//! that fails is an error (`Unavailable`, so route and dispatch retry).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use aws_sdk_s3::error::DisplayErrorContext;
use fluxrelay_core::ports::{ClusterRegistry, RegistryReadError, RouteTable};
use fluxrelay_core::registry::index::{IndexedEntry, RegistryIndex};
use fluxrelay_core::registry::last_good::LastGood;
use fluxrelay_core::registry::{ClusterEntry, FieldError, RegistryError, RouteListing};

pub const DEFAULT_PREFIX: &str = "fluxrelay/clusters/";
pub const DEFAULT_INDEX_KEY: &str = "clusters.json";
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// How long a failed re-read waits before the next try (the last good value serves).
pub const RETRY_AFTER: Duration = Duration::from_secs(10);
/// The stage that names a secret's current value (moto answers a stage-less read with an
/// older version after a stage move).
const CURRENT_STAGE: &str = "AWSCURRENT";

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data; a panic elsewhere cannot leave it half-written.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Default)]
struct IndexState {
    last: LastGood<RegistryIndex>,
    /// The ETag of the last good read, for the conditional GET.
    etag: Option<String>,
}

/// The index object, read once per TTL for all concurrent callers.
pub struct RegistryIndexReader {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    ttl: Duration,
    retry_after: Duration,
    state: Mutex<IndexState>,
    refresh: tokio::sync::Mutex<()>,
}

/// What one GET of the index gave.
enum IndexRead {
    Changed { text: String, etag: Option<String> },
    Unchanged,
}

impl RegistryIndexReader {
    pub fn new(
        client: aws_sdk_s3::Client,
        bucket: impl Into<String>,
        key: impl Into<String>,
    ) -> Self {
        Self {
            client,
            bucket: bucket.into(),
            key: key.into(),
            ttl: DEFAULT_TTL,
            retry_after: RETRY_AFTER,
            state: Mutex::new(IndexState::default()),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    /// Reuse a read for `ttl`, and after a failed re-read wait `retry_after`.
    pub fn with_timing(mut self, ttl: Duration, retry_after: Duration) -> Self {
        self.ttl = ttl;
        self.retry_after = retry_after;
        self
    }

    /// `s3://bucket/key`, for messages.
    pub fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// The next use reads the index again (a failure still falls back to the last good).
    pub fn expire(&self) {
        lock(&self.state).last.expire();
    }

    /// The index: cached while fresh, else read (once for all concurrent callers).
    pub async fn index(&self) -> Result<Arc<RegistryIndex>, RegistryReadError> {
        if let Some(index) = lock(&self.state).last.current(Instant::now(), self.ttl) {
            return Ok(index);
        }
        let _refreshing = self.refresh.lock().await;
        if let Some(index) = lock(&self.state).last.current(Instant::now(), self.ttl) {
            return Ok(index);
        }
        let etag = lock(&self.state).etag.clone();
        let read = self.read(etag).await.and_then(|read| match read {
            IndexRead::Unchanged => Ok(None),
            IndexRead::Changed { text, etag } => RegistryIndex::from_json(&text)
                .map(|index| Some((index, etag)))
                .map_err(|error| format!("{} is not a registry index: {error}", self.location())),
        });
        let now = Instant::now();
        let mut state = lock(&self.state);
        match read {
            Ok(Some((index, etag))) => {
                state.etag = etag;
                Ok(state.last.succeeded(index, now))
            }
            Ok(None) => state.last.confirmed(now).ok_or_else(|| {
                RegistryReadError::Unavailable(format!(
                    "{} answered 304 to a first read",
                    self.location()
                ))
            }),
            Err(message) => match state.last.failed(now, self.retry_after) {
                Some(stale) => {
                    tracing::warn!(
                        outcome = "registry_stale",
                        index = %self.location(),
                        age_secs = stale.age.as_secs(),
                        error = %message,
                        "the registry index could not be read again; the last good one is used",
                    );
                    Ok(stale.value)
                }
                None => Err(RegistryReadError::Unavailable(message)),
            },
        }
    }

    async fn read(&self, etag: Option<String>) -> Result<IndexRead, String> {
        let answer = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .set_if_none_match(etag)
            .send()
            .await;
        match answer {
            Ok(output) => {
                let etag = output.e_tag().map(str::to_string);
                let bytes = output
                    .body
                    .collect()
                    .await
                    .map_err(|error| format!("reading {} failed: {error}", self.location()))?
                    .into_bytes();
                let text = String::from_utf8(bytes.to_vec())
                    .map_err(|_| format!("{} is not UTF-8 text", self.location()))?;
                Ok(IndexRead::Changed { text, etag })
            }
            Err(error) if error.raw_response().map(|raw| raw.status().as_u16()) == Some(304) => {
                Ok(IndexRead::Unchanged)
            }
            Err(error) => Err(format!(
                "GetObject of {} failed (a missing index reads as AccessDenied without s3:ListBucket): {}",
                self.location(),
                DisplayErrorContext(&error)
            )),
        }
    }
}

impl RouteTable for RegistryIndexReader {
    async fn routes(&self) -> Result<Arc<RouteListing>, RegistryReadError> {
        Ok(Arc::clone(&self.index().await?.routes))
    }
}

/// Dispatch's registry: the index, and the secrets of the clusters it dispatches to.
pub struct AwsRegistry {
    index: RegistryIndexReader,
    secrets: aws_sdk_secretsmanager::Client,
    prefix: String,
    ttl: Duration,
    retry_after: Duration,
    entries: Mutex<HashMap<String, LastGood<ClusterEntry>>>,
}

impl AwsRegistry {
    pub fn new(
        index: RegistryIndexReader,
        secrets: aws_sdk_secretsmanager::Client,
        prefix: impl Into<String>,
    ) -> Self {
        let (ttl, retry_after) = (index.ttl, index.retry_after);
        Self {
            index,
            secrets,
            prefix: prefix.into(),
            ttl,
            retry_after,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn index(&self) -> &RegistryIndexReader {
        &self.index
    }

    /// The secret that holds cluster `name`'s entry.
    pub fn secret_id(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    async fn entry_in_secret(&self, name: &str) -> Result<Arc<ClusterEntry>, RegistryReadError> {
        if let Some(entry) = lock(&self.entries)
            .get(name)
            .and_then(|last| last.current(Instant::now(), self.ttl))
        {
            return Ok(entry);
        }
        let secret_id = self.secret_id(name);
        let answer = self
            .secrets
            .get_secret_value()
            .secret_id(&secret_id)
            .version_stage(CURRENT_STAGE)
            .send()
            .await;
        let text = match answer {
            Ok(output) => output.secret_string().unwrap_or_default().to_string(),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|service| service.is_resource_not_found_exception()) =>
            {
                return Err(RegistryReadError::Unavailable(format!(
                    "the registry index lists cluster {name} with its entry in secret {secret_id}, which does not exist"
                )));
            }
            Err(error) => {
                let message = format!(
                    "the entry in secret {secret_id} could not be read: GetSecretValue failed: {}",
                    aws_sdk_secretsmanager::error::DisplayErrorContext(&error)
                );
                let now = Instant::now();
                let stale = lock(&self.entries)
                    .entry(name.to_string())
                    .or_default()
                    .failed(now, self.retry_after);
                return match stale {
                    Some(stale) => {
                        tracing::warn!(
                            outcome = "registry_stale",
                            cluster = %name,
                            secret = %secret_id,
                            age_secs = stale.age.as_secs(),
                            error = %message,
                            "the cluster's entry could not be read again; the last good one is used",
                        );
                        Ok(stale.value)
                    }
                    None => Err(RegistryReadError::Unavailable(message)),
                };
            }
        };
        let entry = ClusterEntry::from_json(&text)
            .and_then(|entry| {
                if entry.name == name {
                    Ok(entry)
                } else {
                    Err(RegistryError {
                        errors: vec![FieldError {
                            path: "name".into(),
                            message: format!(
                                "secret {secret_id} holds the entry of cluster `{}`, not `{name}`",
                                entry.name
                            ),
                        }],
                    })
                }
            })
            .map_err(|error| {
                // A value read and found wrong is not served from the cache: it is the answer.
                lock(&self.entries).remove(name);
                RegistryReadError::Invalid {
                    name: name.to_string(),
                    error,
                }
            })?;
        Ok(lock(&self.entries)
            .entry(name.to_string())
            .or_default()
            .succeeded(entry, Instant::now()))
    }
}

impl ClusterRegistry for AwsRegistry {
    async fn cluster(&self, name: &str) -> Result<Option<Arc<ClusterEntry>>, RegistryReadError> {
        let index = self.index.index().await?;
        match index.entries.get(name) {
            None => Ok(None),
            Some(IndexedEntry::Invalid(error)) => Err(RegistryReadError::Invalid {
                name: name.to_string(),
                error: error.clone(),
            }),
            Some(IndexedEntry::Inline(entry)) => Ok(Some(Arc::clone(entry))),
            Some(IndexedEntry::Secret) => self.entry_in_secret(name).await.map(Some),
        }
    }

    /// The cluster's credentials were rejected: read its secret and the index again before
    /// the next use.
    fn invalidate(&self, name: &str) {
        tracing::debug!(cluster = %name, "cluster registry entry invalidated");
        lock(&self.entries).remove(name);
        self.index.expire();
    }
}

/// Add `item` to the index object, or replace the item of the same name, with a conditional
/// write (`If-Match` the ETag read, `If-None-Match: *` when there is no index yet), tried
/// again when another writer got there first. For `fluxrelay cluster add|migrate`.
pub async fn put_index_item(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    item: serde_json::Value,
) -> Result<(), String> {
    put_index_items(client, bucket, key, vec![item]).await
}

/// Conditional writes of the index tried before giving up. Each lost round means another
/// writer won it, so N writers at once all land within N rounds; the jittered backoff keeps
/// losers from colliding again in lockstep.
const INDEX_WRITE_ATTEMPTS: u32 = 12;

/// 20 ms × the attempt, plus up to 40 ms of jitter (from the clock's nanoseconds: no
/// random source needed for this).
fn index_write_backoff(attempt: u32) -> std::time::Duration {
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.subsec_nanos() % 40_000_000);
    std::time::Duration::from_millis(20 * u64::from(attempt))
        + std::time::Duration::from_nanos(u64::from(jitter))
}

/// [`put_index_item`] for several items in one write.
pub async fn put_index_items(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    items: Vec<serde_json::Value>,
) -> Result<(), String> {
    let location = format!("s3://{bucket}/{key}");
    for attempt in 0..INDEX_WRITE_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(index_write_backoff(attempt)).await;
        }
        let (current, etag) = match client.get_object().bucket(bucket).key(key).send().await {
            Ok(output) => {
                let etag = output.e_tag().map(str::to_string);
                let bytes = output
                    .body
                    .collect()
                    .await
                    .map_err(|error| format!("reading {location} failed: {error}"))?
                    .into_bytes();
                (Some(String::from_utf8_lossy(&bytes).to_string()), etag)
            }
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|service| service.is_no_such_key()) =>
            {
                (None, None)
            }
            Err(error) => {
                return Err(format!(
                    "GetObject of {location} failed: {}",
                    DisplayErrorContext(&error)
                ));
            }
        };
        let mut text = current.clone();
        for item in &items {
            text = Some(
                fluxrelay_core::registry::index::with_item(text.as_deref(), item.clone())
                    .map_err(|error| format!("{location}: {error}"))?,
            );
        }
        let body = text.unwrap_or_default();
        let put = client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/json")
            .body(body.into_bytes().into());
        let put = match (&current, etag) {
            (Some(_), Some(etag)) => put.if_match(etag),
            _ => put.if_none_match("*"),
        };
        match put.send().await {
            Ok(_) => return Ok(()),
            Err(error)
                if error
                    .raw_response()
                    .is_some_and(|raw| matches!(raw.status().as_u16(), 409 | 412)) =>
            {
                continue; // another writer changed it: read it again
            }
            Err(error) => {
                return Err(format!(
                    "PutObject of {location} failed: {}",
                    DisplayErrorContext(&error)
                ));
            }
        }
    }
    Err(format!(
        "{location} kept changing while it was written; try again"
    ))
}

/// Where the AWS registry lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryLocation {
    pub bucket: String,
    pub index_key: String,
    /// Name prefix of the clusters' secrets.
    pub prefix: String,
}

impl RegistryLocation {
    pub fn secret_id(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

/// Store one whole entry (validated JSON) the way the functions read it: an entry that holds
/// a secret goes to the secret `<prefix><name>` (created, or with `replace` given a new
/// version) and gets a pointer in the index; one that holds none goes into the index whole,
/// and needs no secret. The secret is written before its pointer, so the index never
/// points at a secret that is not there yet. Says what it wrote.
pub async fn store_entry(
    s3: &aws_sdk_s3::Client,
    secrets: &aws_sdk_secretsmanager::Client,
    location: &RegistryLocation,
    entry: &serde_json::Value,
    replace: bool,
) -> Result<String, String> {
    use fluxrelay_core::registry::index::{holds_secret, index_item};
    let name = entry
        .get("name")
        .and_then(serde_json::Value::as_str)
        .ok_or("the entry has no name")?;
    let mut wrote = Vec::new();
    if holds_secret(entry) {
        let secret_id = location.secret_id(name);
        let text = entry.to_string();
        let created = secrets
            .create_secret()
            .name(&secret_id)
            .secret_string(&text)
            .description("fluxrelay cluster registry entry (its credentials; subscriptions are in the registry index)")
            .send()
            .await;
        match created {
            Ok(_) => wrote.push(format!("Secrets Manager secret {secret_id}")),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_exists_exception()) =>
            {
                if !replace {
                    return Err(format!(
                        "secret {secret_id} exists; pass --force to replace its value"
                    ));
                }
                secrets
                    .put_secret_value()
                    .secret_id(&secret_id)
                    .secret_string(&text)
                    .send()
                    .await
                    .map_err(|error| {
                        format!(
                            "cannot update secret {secret_id}: {}",
                            aws_sdk_secretsmanager::error::DisplayErrorContext(&error)
                        )
                    })?;
                wrote.push(format!("Secrets Manager secret {secret_id} (new version)"));
            }
            Err(error) => {
                return Err(format!(
                    "cannot create secret {secret_id}: {}",
                    aws_sdk_secretsmanager::error::DisplayErrorContext(&error)
                ));
            }
        }
    }
    put_index_item(s3, &location.bucket, &location.index_key, index_item(entry)).await?;
    wrote.push(format!(
        "its item in s3://{}/{}",
        location.bucket, location.index_key
    ));
    Ok(wrote.join(" and "))
}
