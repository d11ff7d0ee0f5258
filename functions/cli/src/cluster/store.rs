//! Where registry entries live, and reading and writing them there.

use std::path::{Path, PathBuf};

use fluxrelay_adapters::secrets::SecretsRegistry;
use fluxrelay_core::ports::RegistryReadError;
use fluxrelay_core::registry::{ClusterEntry, RegistryError};

use crate::config::ServeConfig;

/// Where registry entries live.
#[derive(Debug, Clone)]
pub enum Store {
    /// One `<name>.json` per cluster in a directory (`cluster_dir` of `fluxrelay serve`).
    Files(PathBuf),
    /// One secret per cluster under a prefix (the AWS functions' registry).
    SecretsManager { prefix: String },
    /// The clusters of a `fluxrelay serve` configuration (read only).
    ServeConfig(PathBuf),
}

pub(super) fn describe_store(store: &Store) -> String {
    match store {
        Store::Files(dir) => dir.display().to_string(),
        Store::SecretsManager { prefix } => format!("Secrets Manager under {prefix}"),
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
        Store::SecretsManager { prefix } => {
            let registry = SecretsRegistry::with_settings(
                secrets_client().await,
                prefix.clone(),
                std::time::Duration::ZERO,
            );
            let (valid, unusable) = registry
                .read_everything()
                .await
                .map_err(|error| error.to_string())?;
            let mut all: Vec<(String, Result<ClusterEntry, String>)> = valid
                .into_iter()
                .map(|entry| (entry.name.clone(), Ok(entry)))
                .collect();
            all.extend(unusable.into_iter().map(|(name, error)| {
                let problem = match error {
                    RegistryReadError::Invalid { error, .. } => problems(&error),
                    RegistryReadError::Unavailable(message) => message,
                };
                (name, Err(problem))
            }));
            all.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(all)
        }
    }
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
        Store::SecretsManager { prefix } => {
            let client = secrets_client().await;
            let secret_id = format!("{prefix}{name}");
            let created = client
                .create_secret()
                .name(&secret_id)
                .secret_string(text)
                .description("fluxrelay cluster registry entry")
                .send()
                .await;
            match created {
                Ok(_) => Ok(format!("Secrets Manager secret {secret_id}")),
                Err(error)
                    if error
                        .as_service_error()
                        .is_some_and(|e| e.is_resource_exists_exception()) =>
                {
                    if !force {
                        return Err(format!(
                            "secret {secret_id} exists; pass --force to replace its value"
                        ));
                    }
                    client
                        .put_secret_value()
                        .secret_id(&secret_id)
                        .secret_string(text)
                        .send()
                        .await
                        .map_err(|error| {
                            format!(
                                "cannot update secret {secret_id}: {}",
                                aws_sdk_secretsmanager::error::DisplayErrorContext(&error)
                            )
                        })?;
                    Ok(format!("Secrets Manager secret {secret_id} (new version)"))
                }
                Err(error) => Err(format!(
                    "cannot create secret {secret_id}: {}",
                    aws_sdk_secretsmanager::error::DisplayErrorContext(&error)
                )),
            }
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

async fn secrets_client() -> aws_sdk_secretsmanager::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    aws_sdk_secretsmanager::Client::new(&config)
}
