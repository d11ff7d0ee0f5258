//! The `fluxrelay serve` configuration file (TOML): where to listen, where the queue lives,
//! which webhook secrets to accept, how to retry, and the cluster registry (entries in the
//! same schema as the Secrets Manager entries, inline or one JSON file each).
//!
//! Every problem is reported with the file, the field path and what is wrong, all at once,
//! and never with a secret's text: TOML's own error snippet (which quotes the offending
//! line) is not used.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fluxrelay_adapters::embedded::DEFAULT_JOURNAL_MAX_BYTES;
use fluxrelay_core::auth::{AuthConfig, SigningKey, TiedSecrets};
use fluxrelay_core::gitlab_api::instances::GitLabInstances;
use fluxrelay_core::handlers::confirm::ConfirmRules;
use fluxrelay_core::ingest::{DEFAULT_MAX_BODY_BYTES, IngestConfig};
use fluxrelay_core::outcome::retry::RetryPolicy;
use fluxrelay_core::registry::ClusterEntry;
use fluxrelay_core::secret::Secret;
use serde_json::Value;

use crate::listener::ConnectionLimits;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Clusters dispatched at once (each cluster's batch holds one slot until it is settled).
/// A hung apiserver holds its slot until its connect or read timeout; with 4, four hung
/// clusters held every slot and each push to the others waited for them.
pub const DEFAULT_DISPATCH_WORKERS: usize = 32;
const MAX_DISPATCH_WORKERS: usize = 64;
const MIB: u64 = 1024 * 1024;
/// A journal cap beyond 1 TiB is a typo, not a plan.
const MAX_JOURNAL_MIB: i64 = 1024 * 1024;

/// The HTTP listener's limits (`[http]`): what a client that is not GitLab can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub connections: ConnectionLimits,
    /// From the end of a request's head to its answer: reading the body, authenticating,
    /// queueing (and waiting for a `/webhook` slot). 408 past it.
    pub request_timeout: Duration,
    /// `/webhook` bodies held at once past the head check (each up to `max_body_bytes`);
    /// more wait, within their request timeout. A small webhook's wait for its commit
    /// holds no slot (`serve::SLOTLESS_COMMIT_WAIT_BYTES`).
    pub webhook_concurrency: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            connections: ConnectionLimits {
                header_read_timeout: Duration::from_secs(5),
                max_connections: 512,
                shutdown_grace: Duration::from_secs(10),
            },
            request_timeout: Duration::from_secs(10),
            webhook_concurrency: 16,
        }
    }
}

#[derive(Debug)]
pub struct ServeConfig {
    pub file: PathBuf,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub ingest: IngestConfig,
    pub clusters: Vec<ClusterEntry>,
    pub retry: RetryPolicy,
    pub dispatch_workers: usize,
    /// The push journal's cap in the queue file (`journal_max_mib`).
    pub journal_max_bytes: u64,
    /// How confirmations run (`[confirm]`).
    pub confirm: ConfirmRules,
    /// GitLab API URL and token per instance (`[[gitlab]]`); empty: no statuses are
    /// posted and changed paths come from the payload.
    pub gitlab: GitLabInstances,
    pub http: HttpLimits,
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file it is in (the config file, or a cluster file it names).
    pub file: PathBuf,
    /// Field path, e.g. `clusters[0].auth.token`; empty for the file as a whole.
    pub field: String,
    pub problem: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.problem)
        } else {
            write!(
                f,
                "{}: {}: {}",
                self.file.display(),
                self.field,
                self.problem
            )
        }
    }
}

/// Every problem found, one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// Where secrets named by `*_env` fields are looked up (the process environment, or a
/// table in tests).
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl ServeConfig {
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|error| ConfigError {
            problems: vec![Problem {
                file: file.to_path_buf(),
                field: String::new(),
                problem: format!("cannot read the config file: {error}"),
            }],
        })?;
        Self::parse(file, &text, &ProcessEnvironment)
    }

    /// Relative paths in the file are resolved against the file's own directory.
    pub fn parse(file: &Path, text: &str, env: &dyn Environment) -> Result<Self, ConfigError> {
        let mut reader = Reader {
            file: file.to_path_buf(),
            base: file.parent().map(Path::to_path_buf).unwrap_or_default(),
            env,
            problems: Vec::new(),
        };
        let config = reader.read(text);
        match config {
            Some(config) if reader.problems.is_empty() => Ok(config),
            _ => Err(ConfigError {
                problems: reader.problems,
            }),
        }
    }
}

impl ServeConfig {
    /// Add a cluster from outside the file (`--kubeconfig`); its name must be new.
    pub fn add_cluster(&mut self, entry: ClusterEntry, source: &Path) -> Result<(), ConfigError> {
        if self.clusters.iter().any(|known| known.name == entry.name) {
            return Err(ConfigError {
                problems: vec![Problem {
                    file: source.to_path_buf(),
                    field: "name".into(),
                    problem: format!(
                        "cluster {:?} is already defined in {}",
                        entry.name,
                        self.file.display()
                    ),
                }],
            });
        }
        self.clusters.push(entry);
        Ok(())
    }
}

/// Only the data directory of a config file, for commands that need nothing else (and may
/// run where the webhook secrets' environment variables are not set).
pub fn data_dir_of(file: &Path) -> Result<PathBuf, ConfigError> {
    let fail = |problem: String| ConfigError {
        problems: vec![Problem {
            file: file.to_path_buf(),
            field: String::new(),
            problem,
        }],
    };
    let text = std::fs::read_to_string(file)
        .map_err(|error| fail(format!("cannot read the config file: {error}")))?;
    let table = text
        .parse::<Table>()
        .map_err(|error| fail(format!("not valid TOML: {}", error.message())))?;
    match table.get("data_dir") {
        None => Ok(default_data_dir()),
        Some(toml::Value::String(dir)) => Ok(file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
            .join(dir)),
        Some(other) => Err(ConfigError {
            problems: vec![Problem {
                file: file.to_path_buf(),
                field: "data_dir".into(),
                problem: format!("must be a string, not {}", other.type_str()),
            }],
        }),
    }
}

/// The data directory when the file names none: `$XDG_STATE_HOME/fluxrelay`, else
/// `~/.local/state/fluxrelay`, else `./.fluxrelay`.
pub fn default_data_dir() -> PathBuf {
    let non_empty = |name| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(state) = non_empty("XDG_STATE_HOME") {
        return PathBuf::from(state).join("fluxrelay");
    }
    if let Some(home) = non_empty("HOME") {
        return PathBuf::from(home).join(".local/state/fluxrelay");
    }
    PathBuf::from(".fluxrelay")
}

const TOP_LEVEL: &[&str] = &[
    "listen",
    "data_dir",
    "journal_max_mib",
    "cluster_files",
    "cluster_dir",
    "webhook",
    "dispatch",
    "http",
    "clusters",
    "confirm",
    "gitlab",
];
const HTTP: &[&str] = &[
    "header_read_timeout_secs",
    "request_timeout_secs",
    "max_connections",
    "webhook_concurrency",
    "shutdown_grace_secs",
];
const WEBHOOK: &[&str] = &[
    "tokens",
    "token_files",
    "token_env",
    "signing_keys",
    "signing_key_files",
    "signing_key_env",
    "registry_tokens",
    "registry_token_files",
    "registry_token_env",
    "max_body_bytes",
    "timestamp_tolerance_secs",
    "instance_secrets",
];
/// `[[webhook.instance_secrets]]`: secrets that vouch only for these GitLab instances.
const INSTANCE_SECRETS: &[&str] = &[
    "instances",
    "tokens",
    "token_files",
    "token_env",
    "signing_keys",
    "signing_key_files",
    "signing_key_env",
];
const DISPATCH: &[&str] = &[
    "max_attempts",
    "retry_base_secs",
    "retry_max_secs",
    "workers",
];

struct Reader<'a> {
    file: PathBuf,
    base: PathBuf,
    env: &'a dyn Environment,
    problems: Vec<Problem>,
}

type Table = toml::Table;

impl Reader<'_> {
    fn problem(&mut self, field: impl Into<String>, problem: impl Into<String>) {
        self.problems.push(Problem {
            file: self.file.clone(),
            field: field.into(),
            problem: problem.into(),
        });
    }

    fn read(&mut self, text: &str) -> Option<ServeConfig> {
        let table = match text.parse::<Table>() {
            Ok(table) => table,
            Err(error) => {
                let at = error
                    .span()
                    .map(|span| line_and_column(text, span.start))
                    .map(|(line, column)| format!(" (line {line}, column {column})"))
                    .unwrap_or_default();
                self.problem("", format!("not valid TOML{at}: {}", error.message()));
                return None;
            }
        };
        self.unknown_keys("", &table, TOP_LEVEL);
        let listen = self.listen(&table);
        let data_dir = self
            .string(&table, "", "data_dir")
            .map(|dir| self.resolve(&dir))
            .unwrap_or_else(default_data_dir);
        let ingest = self.webhook(&table);
        let (retry, dispatch_workers) = self.dispatch(&table);
        let journal_max_bytes = self
            .integer(&table, "", "journal_max_mib", (1, MAX_JOURNAL_MIB))
            .map_or(DEFAULT_JOURNAL_MAX_BYTES, |mib| mib.unsigned_abs() * MIB);
        let clusters = self.clusters(&table);
        let confirm = self.confirm(&table);
        let gitlab = self.gitlab(&table);
        let http = self.http(&table);
        Some(ServeConfig {
            file: self.file.clone(),
            listen: listen?,
            data_dir,
            ingest: ingest?,
            clusters,
            retry,
            dispatch_workers,
            journal_max_bytes,
            confirm,
            gitlab,
            http,
        })
    }

    fn http(&mut self, table: &Table) -> HttpLimits {
        let empty = Table::new();
        let http = self.subtable(table, "http").unwrap_or(&empty);
        self.unknown_keys("http", http, HTTP);
        let mut limits = HttpLimits::default();
        let secs = |reader: &mut Self, key: &str, range: (i64, i64), into: &mut Duration| {
            if let Some(value) = reader.integer(http, "http", key, range) {
                *into = Duration::from_secs(value.unsigned_abs());
            }
        };
        secs(
            self,
            "header_read_timeout_secs",
            (1, 60),
            &mut limits.connections.header_read_timeout,
        );
        secs(
            self,
            "request_timeout_secs",
            (1, 300),
            &mut limits.request_timeout,
        );
        secs(
            self,
            "shutdown_grace_secs",
            (1, 300),
            &mut limits.connections.shutdown_grace,
        );
        if let Some(value) = self.integer(http, "http", "max_connections", (16, 100_000)) {
            limits.connections.max_connections = value.unsigned_abs() as usize;
        }
        if let Some(value) = self.integer(http, "http", "webhook_concurrency", (1, 1024)) {
            limits.webhook_concurrency = value.unsigned_abs() as usize;
        }
        limits
    }

    fn resolve(&self, path: &str) -> PathBuf {
        self.base.join(path)
    }

    fn unknown_keys(&mut self, prefix: &str, table: &Table, known: &[&str]) {
        for key in table.keys() {
            if !known.contains(&key.as_str()) {
                self.problem(
                    join(prefix, key),
                    format!("unknown field (known: {})", known.join(", ")),
                );
            }
        }
    }

    fn string(&mut self, table: &Table, prefix: &str, key: &str) -> Option<String> {
        match table.get(key)? {
            toml::Value::String(text) => Some(text.clone()),
            other => {
                self.problem(
                    join(prefix, key),
                    format!("must be a string, not {}", other.type_str()),
                );
                None
            }
        }
    }

    fn strings(&mut self, table: &Table, prefix: &str, key: &str) -> Vec<String> {
        let field = join(prefix, key);
        match table.get(key) {
            None => Vec::new(),
            Some(toml::Value::Array(items)) => {
                let mut strings = Vec::new();
                for (index, item) in items.iter().enumerate() {
                    match item {
                        toml::Value::String(text) => strings.push(text.clone()),
                        other => self.problem(
                            format!("{field}[{index}]"),
                            format!("must be a string, not {}", other.type_str()),
                        ),
                    }
                }
                strings
            }
            Some(other) => {
                self.problem(
                    field,
                    format!("must be a list of strings, not {}", other.type_str()),
                );
                Vec::new()
            }
        }
    }

    fn integer(
        &mut self,
        table: &Table,
        prefix: &str,
        key: &str,
        range: (i64, i64),
    ) -> Option<i64> {
        let field = join(prefix, key);
        match table.get(key)? {
            toml::Value::Integer(value) if (range.0..=range.1).contains(value) => Some(*value),
            toml::Value::Integer(value) => {
                self.problem(
                    field,
                    format!("{value} is out of range ({} to {})", range.0, range.1),
                );
                None
            }
            other => {
                self.problem(
                    field,
                    format!("must be an integer, not {}", other.type_str()),
                );
                None
            }
        }
    }

    fn subtable<'t>(&mut self, table: &'t Table, key: &str) -> Option<&'t Table> {
        match table.get(key)? {
            toml::Value::Table(inner) => Some(inner),
            other => {
                self.problem(key, format!("must be a table, not {}", other.type_str()));
                None
            }
        }
    }

    fn listen(&mut self, table: &Table) -> Option<SocketAddr> {
        let text = self
            .string(table, "", "listen")
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        match text.parse() {
            Ok(address) => Some(address),
            Err(_) => {
                self.problem(
                    "listen",
                    format!("{text:?} is not an IP address and port, e.g. \"{DEFAULT_LISTEN}\""),
                );
                None
            }
        }
    }

    /// Accepted tokens and signing keys from the three sources each: inline, files (one
    /// secret per file, surrounding whitespace trimmed) and environment variables.
    fn webhook(&mut self, table: &Table) -> Option<IngestConfig> {
        let empty = Table::new();
        let webhook = self.subtable(table, "webhook").unwrap_or(&empty);
        self.unknown_keys("webhook", webhook, WEBHOOK);
        let (tokens, signing_keys) = self.token_and_keys(webhook, "webhook");
        let tied = self.instance_secrets(webhook);
        let max_body_bytes = self
            .integer(
                webhook,
                "webhook",
                "max_body_bytes",
                (1024, 64 * 1024 * 1024),
            )
            .map_or(DEFAULT_MAX_BODY_BYTES, |bytes| bytes as usize);
        let tolerance = self.integer(webhook, "webhook", "timestamp_tolerance_secs", (0, 86_400));
        // Registries (POST /registry/...) send these in Authorization; without any, they
        // send one of `tokens`.
        let registry_tokens: Vec<Secret> = self
            .secrets(
                webhook,
                "webhook",
                "registry_tokens",
                "registry_token_files",
                "registry_token_env",
            )
            .into_iter()
            .map(|(_, token)| token)
            .collect();
        let auth = AuthConfig::with_tied(tokens, signing_keys, tied)
            .and_then(|auth| match tolerance {
                Some(secs) => auth.with_timestamp_tolerance_secs(secs),
                None => Ok(auth),
            })
            .and_then(|auth| auth.with_registry_tokens(registry_tokens));
        match auth {
            Ok(auth) => Some(IngestConfig {
                auth,
                max_body_bytes,
            }),
            Err(error) => {
                self.problem("webhook", error.to_string());
                None
            }
        }
    }

    /// The accepted tokens and signing keys of one table (`[webhook]`, or one of its
    /// `instance_secrets`), each from its three sources.
    fn token_and_keys(&mut self, table: &Table, prefix: &str) -> (Vec<Secret>, Vec<SigningKey>) {
        let tokens = self.secrets(table, prefix, "tokens", "token_files", "token_env");
        let mut signing_keys = Vec::new();
        let keys = self.secrets(
            table,
            prefix,
            "signing_keys",
            "signing_key_files",
            "signing_key_env",
        );
        for (field, key) in keys {
            match SigningKey::parse(key.expose()) {
                Ok(key) => signing_keys.push(key),
                Err(error) => self.problem(field, error.to_string()),
            }
        }
        let tokens = tokens.into_iter().map(|(_, token)| token).collect();
        (tokens, signing_keys)
    }

    /// `[[webhook.instance_secrets]]`: tokens and keys accepted only for pushes from the
    /// GitLab instances named in each table's `instances` (host names or URLs).
    fn instance_secrets(&mut self, webhook: &Table) -> Vec<TiedSecrets> {
        let items = match webhook.get("instance_secrets") {
            None => return Vec::new(),
            Some(toml::Value::Array(items)) => items,
            Some(other) => {
                self.problem(
                    "webhook.instance_secrets",
                    format!(
                        "must be an array of tables ([[webhook.instance_secrets]]), not {}",
                        other.type_str()
                    ),
                );
                return Vec::new();
            }
        };
        let mut tied = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let prefix = format!("webhook.instance_secrets[{index}]");
            let Some(table) = item.as_table() else {
                self.problem(prefix, format!("must be a table, not {}", item.type_str()));
                continue;
            };
            self.unknown_keys(&prefix, table, INSTANCE_SECRETS);
            let instances = self.strings(table, &prefix, "instances");
            for (position, instance) in instances.iter().enumerate() {
                if fluxrelay_core::subscriptions::instance_host(instance).is_empty() {
                    self.problem(
                        format!("{prefix}.instances[{position}]"),
                        "must be a GitLab host name or URL, e.g. \"gitlab.example.com\"",
                    );
                }
            }
            if instances.is_empty() {
                self.problem(
                    join(&prefix, "instances"),
                    "must name at least one GitLab instance (without one, put the secrets in [webhook])",
                );
            }
            let (tokens, signing_keys) = self.token_and_keys(table, &prefix);
            if tokens.is_empty() && signing_keys.is_empty() {
                self.problem(prefix.clone(), "names no token and no signing key");
            }
            tied.push(TiedSecrets {
                instances,
                tokens,
                signing_keys,
            });
        }
        tied
    }

    /// Each secret with the field it came from (for error messages, never its value).
    fn secrets(
        &mut self,
        table: &Table,
        prefix: &str,
        inline: &str,
        files: &str,
        env: &str,
    ) -> Vec<(String, Secret)> {
        let mut secrets: Vec<(String, Secret)> = self
            .strings(table, prefix, inline)
            .into_iter()
            .enumerate()
            .map(|(index, value)| (format!("{prefix}.{inline}[{index}]"), Secret::new(value)))
            .collect();
        for (index, path) in self.strings(table, prefix, files).iter().enumerate() {
            let field = format!("{prefix}.{files}[{index}]");
            let resolved = self.resolve(path);
            match std::fs::read_to_string(&resolved) {
                Ok(text) => secrets.push((field, Secret::new(text.trim()))),
                Err(error) => self.problem(
                    field,
                    format!("cannot read {}: {error}", resolved.display()),
                ),
            }
        }
        for (index, name) in self.strings(table, prefix, env).iter().enumerate() {
            let field = format!("{prefix}.{env}[{index}]");
            match self.env.var(name).filter(|value| !value.is_empty()) {
                Some(value) => secrets.push((field, Secret::new(value))),
                None => self.problem(field, format!("environment variable {name} is not set")),
            }
        }
        secrets
    }

    fn dispatch(&mut self, table: &Table) -> (RetryPolicy, usize) {
        let empty = Table::new();
        let dispatch = self.subtable(table, "dispatch").unwrap_or(&empty);
        self.unknown_keys("dispatch", dispatch, DISPATCH);
        let mut retry = RetryPolicy::default();
        let read = |reader: &mut Self, key: &str, range: (i64, i64), into: &mut u32| {
            if let Some(value) = reader.integer(dispatch, "dispatch", key, range) {
                *into = value as u32;
            }
        };
        read(self, "max_attempts", (1, 100), &mut retry.max_attempts);
        read(
            self,
            "retry_base_secs",
            (1, 3600),
            &mut retry.base_delay_secs,
        );
        read(
            self,
            "retry_max_secs",
            (1, 43_200),
            &mut retry.max_delay_secs,
        );
        if retry.max_delay_secs < retry.base_delay_secs {
            self.problem(
                "dispatch.retry_max_secs",
                "must not be less than dispatch.retry_base_secs",
            );
        }
        let workers = self
            .integer(
                dispatch,
                "dispatch",
                "workers",
                (1, MAX_DISPATCH_WORKERS as i64),
            )
            .map_or(DEFAULT_DISPATCH_WORKERS, |workers| workers as usize);
        (retry, workers)
    }

    /// Inline `[[clusters]]`, then `cluster_files`, then `*.json` in `cluster_dir` (by
    /// name). Names must be unique across all of them.
    fn clusters(&mut self, table: &Table) -> Vec<ClusterEntry> {
        let mut entries: Vec<(PathBuf, String, ClusterEntry)> = Vec::new();
        match table.get("clusters") {
            None => {}
            Some(toml::Value::Array(items)) => {
                for (index, item) in items.iter().enumerate() {
                    let field = format!("clusters[{index}]");
                    let value = toml_to_json(item);
                    if let Some(entry) = self.entry(&self.file.clone(), &field, &value) {
                        entries.push((self.file.clone(), field, entry));
                    }
                }
            }
            Some(other) => self.problem(
                "clusters",
                format!(
                    "must be an array of tables ([[clusters]]), not {}",
                    other.type_str()
                ),
            ),
        }
        let mut files: Vec<(String, PathBuf)> = self
            .strings(table, "", "cluster_files")
            .iter()
            .enumerate()
            .map(|(index, path)| (format!("cluster_files[{index}]"), self.resolve(path)))
            .collect();
        if let Some(dir) = self.string(table, "", "cluster_dir") {
            files.extend(self.cluster_dir(&self.resolve(&dir)));
        }
        for (field, path) in files {
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(error) => {
                    self.problem(field, format!("cannot read {}: {error}", path.display()));
                    continue;
                }
            };
            match serde_json::from_str::<Value>(&text) {
                Ok(value) => {
                    // Problems inside a cluster file name fields of that file.
                    if let Some(entry) = self.entry(&path, "", &value) {
                        entries.push((path, String::new(), entry));
                    }
                }
                Err(error) => self.problems.push(Problem {
                    file: path,
                    field: String::new(),
                    problem: format!(
                        "not valid JSON (line {}, column {})",
                        error.line(),
                        error.column()
                    ),
                }),
            }
        }
        let mut seen: Vec<(&str, &Path)> = Vec::new();
        let mut duplicates = Vec::new();
        for (path, field, entry) in &entries {
            if let Some((_, first)) = seen.iter().find(|(name, _)| *name == entry.name) {
                duplicates.push(Problem {
                    file: path.clone(),
                    field: join(field, "name"),
                    problem: format!(
                        "cluster {:?} is already defined in {}",
                        entry.name,
                        first.display()
                    ),
                });
            } else {
                seen.push((&entry.name, path));
            }
        }
        self.problems.extend(duplicates);
        entries.into_iter().map(|(_, _, entry)| entry).collect()
    }

    fn cluster_dir(&mut self, dir: &Path) -> Vec<(String, PathBuf)> {
        let listing = match std::fs::read_dir(dir) {
            Ok(listing) => listing,
            Err(error) => {
                self.problem(
                    "cluster_dir",
                    format!("cannot read directory {}: {error}", dir.display()),
                );
                return Vec::new();
            }
        };
        let mut paths: Vec<PathBuf> = listing
            .filter_map(Result::ok)
            .map(|item| item.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .collect();
        paths.sort();
        paths
            .into_iter()
            .map(|path| ("cluster_dir".to_string(), path))
            .collect()
    }

    fn entry(&mut self, file: &Path, prefix: &str, value: &Value) -> Option<ClusterEntry> {
        match ClusterEntry::from_value(value) {
            Ok(entry) => Some(entry),
            Err(error) => {
                for field_error in &error.errors {
                    self.problems.push(Problem {
                        file: file.to_path_buf(),
                        field: join(prefix, &field_error.path),
                        problem: field_error.message.clone(),
                    });
                }
                None
            }
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    match (prefix.is_empty(), key.is_empty()) {
        (true, _) => key.to_string(),
        (_, true) => prefix.to_string(),
        _ => format!("{prefix}.{key}"),
    }
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// TOML and the registry's JSON schema share their shapes; datetimes (which the schema
/// never uses) become strings so the schema reports them as wrong types.
fn toml_to_json(value: &toml::Value) -> Value {
    match value {
        toml::Value::String(text) => Value::String(text.clone()),
        toml::Value::Integer(number) => Value::from(*number),
        toml::Value::Float(number) => Value::from(*number),
        toml::Value::Boolean(flag) => Value::Bool(*flag),
        toml::Value::Datetime(datetime) => Value::String(datetime.to_string()),
        toml::Value::Array(items) => Value::Array(items.iter().map(toml_to_json).collect()),
        toml::Value::Table(table) => Value::Object(
            table
                .iter()
                .map(|(key, value)| (key.clone(), toml_to_json(value)))
                .collect(),
        ),
    }
}

#[path = "config_confirm.rs"]
mod confirm;

#[cfg(test)]
#[path = "config_test.rs"]
mod tests;
