//! `fluxrelay cluster add|list|check`: register a cluster from a kubeconfig context, see
//! the registry, and check that an entry can do everything dispatch needs — each check
//! with its fix.

use std::path::{Path, PathBuf};

use fluxrelay_adapters::cluster::KubeClusters;
use fluxrelay_adapters::cluster_check::{Access, can_i, receiver_tokens};
use fluxrelay_adapters::secrets::SecretsRegistry;
use fluxrelay_core::access::needed_permissions;
use fluxrelay_core::flux::{GitRepository, Receiver};
use fluxrelay_core::matching::receiver::{ReceiverState, receiver_state};
use fluxrelay_core::matching::refs::effective_ref;
use fluxrelay_core::outcome::classify::apiserver_status;
use fluxrelay_core::ports::{FluxDiscovery, RegistryReadError, TriggerSender};
use fluxrelay_core::registry::{ClusterEntry, ReceiverEndpoint, RegistryError, TriggerMode};
use fluxrelay_core::trigger::request::probe_request;
use serde_json::{Map, Value, json};

use crate::config::ServeConfig;
use crate::kubeconfig::{KubeconfigContext, read_context};

const OK: &str = "✓";
const FAIL: &str = "✗";
const NOTE: &str = "!";

/// The verdict of one line of `cluster check`: a note does not fail the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Pass,
    Fail,
    Note,
}

impl Mark {
    fn pass_if(ok: bool) -> Self {
        if ok { Mark::Pass } else { Mark::Fail }
    }

    fn symbol(self) -> &'static str {
        match self {
            Mark::Pass => OK,
            Mark::Fail => FAIL,
            Mark::Note => NOTE,
        }
    }
}

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

pub struct AddOptions {
    pub name: String,
    pub kubeconfig: PathBuf,
    pub context: Option<String>,
    pub namespaces: Vec<String>,
    pub projects: Vec<String>,
    pub refs: Vec<String>,
    pub annotate: bool,
    pub read_receiver_tokens: bool,
    pub force: bool,
}

// ---- add ----

/// Build the entry from the kubeconfig context (credentials extracted, never the whole
/// file), read Receiver tokens from the cluster, validate, and store it. Prints what it
/// did, never a secret.
pub async fn add(options: &AddOptions, store: &Store) -> Result<(), String> {
    let context = read_context(&options.kubeconfig, options.context.as_deref())
        .map_err(|error| error.to_string())?;
    let (mut value, notes) = entry_value(options, &context)?;
    for note in &notes {
        println!("{NOTE} {note}");
    }
    if !options.annotate && options.read_receiver_tokens {
        let tokens = read_receiver_tokens(&context, &options.namespaces).await;
        let mut found = Map::new();
        for (id, token) in tokens {
            match token {
                Ok(token) => {
                    println!("{OK} Receiver {id}: token read from its Secret");
                    found.insert(id, Value::String(token));
                }
                Err(problem) => println!(
                    "{FAIL} Receiver {id}: {problem}; add its token to trigger.receiver_tokens by hand"
                ),
            }
        }
        if !found.is_empty() {
            value["trigger"]["receiver_tokens"] = Value::Object(found);
        }
    }
    let entry = ClusterEntry::from_value(&value).map_err(|error| invalid(&options.name, &error))?;
    let text = serde_json::to_string_pretty(&value).map_err(|error| error.to_string())?;
    let place = store_entry(store, &entry.name, &text, options.force).await?;
    println!(
        "{OK} cluster {}: server {}, auth {}, namespaces {}, {} mode; written to {place}",
        entry.name,
        entry.server,
        entry.credentials.kind(),
        entry.namespaces.join(","),
        mode(&entry)
    );
    Ok(())
}

fn mode(entry: &ClusterEntry) -> &'static str {
    match entry.trigger.mode {
        TriggerMode::Receiver => "receiver",
        TriggerMode::Annotate => "annotate",
    }
}

fn invalid(name: &str, error: &RegistryError) -> String {
    let lines: Vec<String> = error
        .errors
        .iter()
        .map(|e| format!("  {}: {}", e.path, e.message))
        .collect();
    format!(
        "the entry for {name} would be invalid:\n{}",
        lines.join("\n")
    )
}

/// The registry entry (as JSON) for a kubeconfig context, and notes for the operator.
fn entry_value(
    options: &AddOptions,
    context: &KubeconfigContext,
) -> Result<(Value, Vec<String>), String> {
    let mut notes = Vec::new();
    let auth = if let Some(token) = &context.token {
        json!({ "token": token })
    } else if let (Some(cert), Some(key)) =
        (&context.client_certificate_pem, &context.client_key_pem)
    {
        json!({ "client_cert": cert, "client_key": key })
    } else if let Some(eks) = &context.eks {
        notes.push(format!(
            "EKS cluster {} in {}: fluxrelay mints its token from its own IAM role; map that role to user fluxrelay-dispatcher with an access entry (docs/eks.md)",
            eks.cluster, eks.region
        ));
        if let Some(role) = &eks.assumed_role {
            notes.push(format!(
                "your kubeconfig assumes role {role}; fluxrelay does not: it uses its own role"
            ));
        }
        json!({ "eks": { "cluster": eks.cluster, "region": eks.region } })
    } else {
        return Err(format!(
            "the kubeconfig user of context {:?} has no token, client certificate or EKS exec: {}",
            context.name,
            context
                .unsupported_auth
                .as_deref()
                .unwrap_or("no credentials")
        ));
    };
    let mut value = json!({
        "name": options.name,
        "server": context.server,
        "auth": auth,
        "namespaces": options.namespaces,
        "trigger": { "mode": if options.annotate { "annotate" } else { "receiver" } },
    });
    if let Some(ca) = &context.ca_pem {
        value["ca"] = Value::String(ca.clone());
    }
    if !options.projects.is_empty() || !options.refs.is_empty() {
        let mut subscription = Map::new();
        if !options.projects.is_empty() {
            subscription.insert("projects".into(), json!(options.projects));
        }
        if !options.refs.is_empty() {
            subscription.insert("refs".into(), json!(options.refs));
        }
        value["subscriptions"] = json!([subscription]);
    }
    if context.eks.is_none() {
        notes.push("the credentials are your kubeconfig user's: for production, give the entry the fluxrelay-dispatcher identity of infra/rbac.yaml".to_string());
    }
    Ok((value, notes))
}

async fn read_receiver_tokens(
    context: &KubeconfigContext,
    namespaces: &[String],
) -> Vec<(String, Result<String, String>)> {
    let client = match context.client().await {
        Ok(client) => client,
        Err(problem) => {
            return vec![(
                "(all)".into(),
                Err(format!("cannot connect with the kubeconfig: {problem}")),
            )];
        }
    };
    let mut found = Vec::new();
    for namespace in namespaces {
        match receiver_tokens(&client, namespace).await {
            Ok(tokens) => found.extend(tokens.into_iter().map(|t| {
                (
                    t.receiver.to_string(),
                    t.token.map(|token| token.expose().to_string()),
                )
            })),
            Err(problem) => found.push((
                format!("{namespace}/*"),
                Err(format!("cannot list Receivers: {problem}")),
            )),
        }
    }
    found
}

async fn store_entry(store: &Store, name: &str, text: &str, force: bool) -> Result<String, String> {
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

// ---- list ----

/// Every entry, valid or not; `Err` entries carry their problems.
async fn entries(store: &Store) -> Result<Vec<(String, Result<ClusterEntry, String>)>, String> {
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

fn subscriptions(entry: &ClusterEntry) -> String {
    if entry.subscriptions.iter().any(|s| s.takes_everything()) {
        "every push".to_string()
    } else {
        entry.subscriptions.len().to_string()
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

pub async fn list(store: &Store) -> Result<usize, String> {
    let entries = entries(store).await?;
    println!("NAME\tSERVER\tAUTH\tNAMESPACES\tMODE\tSUBSCRIPTIONS\tSTATE");
    for (name, entry) in &entries {
        match entry {
            Ok(entry) => println!(
                "{name}\t{}\t{}\t{}\t{}\t{}\tvalid",
                entry.server,
                entry.credentials.kind(),
                entry.namespaces.join(","),
                mode(entry),
                subscriptions(entry),
            ),
            Err(problem) => println!("{name}\t-\t-\t-\t-\t-\tinvalid: {problem}"),
        }
    }
    Ok(entries.len())
}

// ---- check ----

/// Connect as the entry, check each permission dispatch needs, list what it would trigger
/// and probe the receiver. `Ok(true)` when everything passed.
pub async fn check(store: &Store, name: &str) -> Result<bool, String> {
    let entry = match entries(store).await?.into_iter().find(|(n, _)| n == name) {
        Some((_, Ok(entry))) => entry,
        Some((_, Err(problem))) => {
            return Err(format!("the entry for {name} is invalid: {problem}"));
        }
        None => {
            return Err(format!(
                "no cluster named {name} in {}",
                describe_store(store)
            ));
        }
    };
    let clusters = KubeClusters::with_defaults().map_err(|failure| failure.reason)?;
    let mut passed = true;
    let mut report = |mark: Mark, line: String| {
        passed &= mark != Mark::Fail;
        println!("{} {line}", mark.symbol());
    };
    println!(
        "cluster {} ({}, auth {})",
        entry.name,
        entry.server,
        entry.credentials.kind()
    );
    let client = match clusters.client_for(&entry).await {
        Ok(client) => client,
        Err(failure) => {
            report(Mark::Fail, format!("build a client: {}", failure.reason));
            return Ok(false);
        }
    };
    match client.apiserver_version().await {
        Ok(version) => report(
            Mark::Pass,
            format!(
                "apiserver reachable, Kubernetes {}.{}",
                version.major, version.minor
            ),
        ),
        Err(error) => {
            report(
                Mark::Fail,
                format!(
                    "reach the apiserver: {}; check server, ca and network access",
                    fluxrelay_adapters::cluster_check::describe(error)
                ),
            );
            return Ok(false);
        }
    }
    for permission in needed_permissions(&entry) {
        match can_i(&client, &permission).await {
            Ok(Access::Allowed) => report(Mark::Pass, format!("may {permission}")),
            Ok(Access::Denied { reason }) => report(
                Mark::Fail,
                format!(
                    "may not {permission} ({reason}); fix: add the rule {} to the identity's Role (infra/rbac.yaml has all of them)",
                    permission.rule()
                ),
            ),
            Err(problem) => report(
                Mark::Fail,
                format!("ask whether it may {permission}: {problem}"),
            ),
        }
    }
    for namespace in &entry.namespaces {
        match clusters.git_repositories(&entry, namespace, true).await {
            Ok(repositories) => {
                report(
                    Mark::Pass,
                    format!("{} GitRepositories in {namespace}", repositories.len()),
                );
                for repository in &repositories {
                    println!("    {}", describe_repository(repository));
                }
            }
            Err(failure) => report(
                Mark::Fail,
                format!("list GitRepositories in {namespace}: {}", failure.reason),
            ),
        }
        if entry.trigger.mode == TriggerMode::Receiver {
            match clusters.receivers(&entry, namespace, true).await {
                Ok(receivers) => {
                    report(
                        Mark::Pass,
                        format!("{} Receivers in {namespace}", receivers.len()),
                    );
                    for receiver in &receivers {
                        let (mark, line) = describe_receiver(&entry, receiver);
                        report(mark, format!("  {line}"));
                    }
                }
                Err(failure) => report(
                    Mark::Fail,
                    format!("list Receivers in {namespace}: {}", failure.reason),
                ),
            }
        }
    }
    if entry.trigger.mode == TriggerMode::Receiver {
        let (ok, line) = probe_receiver(&clusters, &entry).await;
        report(Mark::pass_if(ok), line);
    }
    Ok(passed)
}

fn describe_store(store: &Store) -> String {
    match store {
        Store::Files(dir) => dir.display().to_string(),
        Store::SecretsManager { prefix } => format!("Secrets Manager under {prefix}"),
        Store::ServeConfig(file) => file.display().to_string(),
    }
}

fn describe_repository(repository: &GitRepository) -> String {
    format!(
        "GitRepository {}: {} ({}){}{}",
        repository.id,
        repository.url.as_deref().unwrap_or("(no url)"),
        effective_ref(repository.git_ref.as_ref()),
        if repository.suspend {
            ", suspended"
        } else {
            ""
        },
        repository
            .artifact_revision
            .as_ref()
            .map(|revision| format!(", at {revision}"))
            .unwrap_or_default()
    )
}

/// A Receiver as dispatch sees it (core's `receiver_state`): passes when dispatch would call
/// it for a push it takes, fails with dispatch's reason when dispatch would fail, and is a
/// note, with dispatch's reason, when dispatch passes it by.
fn describe_receiver(entry: &ClusterEntry, receiver: &Receiver) -> (Mark, String) {
    let head = format!(
        "Receiver {} ({}{}{})",
        receiver.id,
        receiver.receiver_type.as_str(),
        if receiver.ready {
            ", ready"
        } else {
            ", not ready"
        },
        receiver
            .webhook_path
            .as_ref()
            .map(|p| format!(", {p}"))
            .unwrap_or_default()
    );
    match receiver_state(entry, receiver) {
        ReceiverState::Callable { token: Some(_), .. } => {
            (Mark::Pass, format!("{head}: token in the entry matches"))
        }
        ReceiverState::Callable { token: None, .. } => {
            (Mark::Pass, format!("{head}: needs no token"))
        }
        ReceiverState::Skipped(skip) => (Mark::Note, format!("{head}: skipped: {skip}")),
        ReceiverState::Unusable(problem) => (Mark::Fail, format!("{head}: {problem}")),
    }
}

/// POST to a path no Receiver has: the webhook receiver answers for itself (404) when the
/// proxy reaches it; an apiserver `Status` means the proxy did not.
async fn probe_receiver(clusters: &KubeClusters, entry: &ClusterEntry) -> (bool, String) {
    let request = match probe_request(&entry.trigger.receiver_endpoint) {
        Ok(request) => request,
        Err(error) => return (false, format!("probe the receiver: {error}")),
    };
    match clusters.send(entry, &request).await {
        Err(failure) => (
            false,
            format!("probe the webhook receiver: {}", failure.reason),
        ),
        Ok(response) => match apiserver_status(&response) {
            Some(status) => (
                false,
                format!(
                    "probe the webhook receiver: the apiserver answered {} ({}); fix: check trigger.webhook_receiver_url, and that notification-controller's webhook-receiver Service has endpoints",
                    response.status,
                    if status.message.is_empty() {
                        "no message"
                    } else {
                        status.message.as_str()
                    }
                ),
            ),
            None => (
                true,
                format!(
                    "the webhook receiver answers through {} (HTTP {} for a probe path)",
                    endpoint_label(entry),
                    response.status
                ),
            ),
        },
    }
}

fn endpoint_label(entry: &ClusterEntry) -> String {
    match &entry.trigger.receiver_endpoint {
        ReceiverEndpoint::ServiceProxy(base) => format!("the service proxy {base}"),
        ReceiverEndpoint::Absolute(url) => url.to_string(),
    }
}
