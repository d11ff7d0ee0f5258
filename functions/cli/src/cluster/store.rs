//! Where registry entries live, and reading and writing them there.

use std::path::{Path, PathBuf};

use fluxrelay_adapters::registry_aws::{AwsRegistry, RegistryIndexReader, RegistryLocation};
use fluxrelay_core::ports::{ClusterRegistry, RegistryReadError};
use fluxrelay_core::registry::{ClusterEntry, RegistryError};

use crate::config::ServeConfig;

/// Where registry entries live.
#[derive(Debug, Clone)]
pub enum Store {
    /// One `<name>.json` per cluster in a directory (`cluster_dir` of `fluxrelay serve`).
    Files(PathBuf),
    /// The AWS functions' registry: the index object, and a secret per cluster that holds
    /// a credential.
    SecretsManager { location: RegistryLocation },
    /// The clusters of a `fluxrelay serve` configuration (read only).
    ServeConfig(PathBuf),
}

pub(super) fn describe_store(store: &Store) -> String {
    match store {
        Store::Files(dir) => dir.display().to_string(),
        Store::SecretsManager { location } => format!(
            "s3://{}/{} and Secrets Manager under {}",
            location.bucket, location.index_key, location.prefix
        ),
        Store::ServeConfig(file) => file.display().to_string(),
    }
}

/// Every entry, valid or not; `Err` entries carry their problems.
pub(super) async fn entries(
    store: &Store,
) -> Result<Vec<(String, Result<ClusterEntry, String>)>, String> {
    match store {
        Store::ServeConfig(file) => {
            let config = ServeConfig::load(file).map_err(|error| error.to_string())?;
            Ok(config
                .clusters
                .into_iter()
                .map(|entry| (entry.name.clone(), Ok(entry)))
                .collect())
        }
        Store::Files(dir) => {
            let listing = std::fs::read_dir(dir)
                .map_err(|error| format!("cannot read {}: {error}", dir.display()))?;
            let mut paths: Vec<PathBuf> = listing
                .filter_map(Result::ok)
                .map(|item| item.path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
                .collect();
            paths.sort();
            Ok(paths
                .into_iter()
                .map(|path| {
                    let label = path.display().to_string();
                    let entry = std::fs::read_to_string(&path)
                        .map_err(|error| error.to_string())
                        .and_then(|text| {
                            ClusterEntry::from_json(&text).map_err(|error| problems(&error))
                        });
                    let name = entry.as_ref().map(|e| e.name.clone()).unwrap_or(label);
                    (name, entry)
                })
                .collect())
        }
        Store::SecretsManager { location } => {
            let location = located(location)?;
            let index =
                RegistryIndexReader::new(s3_client().await, &location.bucket, &location.index_key)
                    .with_timing(
                        std::time::Duration::from_secs(600),
                        std::time::Duration::ZERO,
                    );
            let listed = index.index().await.map_err(|error| error.to_string())?;
            let registry = AwsRegistry::new(index, secrets_client().await, &location.prefix);
            let mut all = Vec::new();
            for name in listed.entries.keys() {
                // Route follows the index's subscriptions, not the secret's: show those.
                let subscriptions = listed
                    .routes
                    .routes
                    .iter()
                    .find(|route| &route.name == name)
                    .map(|route| route.subscriptions.clone());
                let entry = match registry.cluster(name).await {
                    Ok(Some(entry)) => {
                        let mut entry = (*entry).clone();
                        if let Some(subscriptions) = subscriptions {
                            entry.subscriptions = subscriptions;
                        }
                        Ok(entry)
                    }
                    Ok(None) => Err("not in the index".to_string()),
                    Err(RegistryReadError::Invalid { error, .. }) => Err(problems(&error)),
                    Err(RegistryReadError::Unavailable(message)) => Err(message),
                };
                all.push((name.clone(), entry));
            }
            Ok(all)
        }
    }
}

/// The location, once it names a bucket.
pub(super) fn located(location: &RegistryLocation) -> Result<&RegistryLocation, String> {
    if location.bucket.trim().is_empty() {
        return Err("--store secretsmanager needs --bucket <RegistryBucketName> (the stack's output), or FLUXRELAY_REGISTRY_BUCKET".into());
    }
    Ok(location)
}

fn problems(error: &RegistryError) -> String {
    error
        .errors
        .iter()
        .map(|e| format!("{}: {}", e.path, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

pub(super) async fn store_entry(
    store: &Store,
    name: &str,
    text: &str,
    force: bool,
) -> Result<String, String> {
    match store {
        Store::Files(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
            let path = dir.join(format!("{name}.json"));
            if path.exists() && !force {
                return Err(format!(
                    "{} exists; pass --force to replace it",
                    path.display()
                ));
            }
            write_private(&path, text)?;
            Ok(path.display().to_string())
        }
        Store::SecretsManager { location } => {
            let location = located(location)?;
            let entry: serde_json::Value = serde_json::from_str(text)
                .map_err(|error| format!("the entry is not JSON: {error}"))?;
            if entry.get("name").and_then(serde_json::Value::as_str) != Some(name) {
                return Err(format!("the entry is not named {name}"));
            }
            fluxrelay_adapters::registry_aws::store_entry(
                &s3_client().await,
                &secrets_client().await,
                location,
                &entry,
                force,
            )
            .await
        }
        Store::ServeConfig(file) => Err(format!(
            "cannot add to {}: use --dir (the config's cluster_dir) or --store secretsmanager",
            file.display()
        )),
    }
}

/// Owner-only, because the entry holds credentials.
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .map_err(|error| format!("cannot write {}: {error}", path.display()))
}

pub(super) async fn secrets_client() -> aws_sdk_secretsmanager::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    aws_sdk_secretsmanager::Client::new(&config)
}

/// S3 with the environment's AWS configuration; `FLUXRELAY_S3_PATH_STYLE=1` for an endpoint
/// without per-bucket host names (a local S3 stand-in).
pub(super) async fn s3_client() -> aws_sdk_s3::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let path_style = std::env::var("FLUXRELAY_S3_PATH_STYLE").is_ok_and(|v| v == "1");
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(path_style)
            .build(),
    )
}
