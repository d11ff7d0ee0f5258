//! Registry entry parsing: JSON → [`ClusterEntry`], with every problem reported at once,
//! each with its field path, and no secret value in any message.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

use super::{
    ClusterEntry, ConfirmOptions, Credentials, DEFAULT_NAMESPACE, ReceiverEndpoint, TriggerConfig,
    TriggerMode,
};
use crate::flux::ObjectRef;
use crate::flux::artifacts::ArtifactKind;
use crate::oci::normalize_registry;
use crate::secret::Secret;
use crate::subscriptions::{PatternList, ProjectEvent, RefPatterns, Subscription, Takes};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Where in the entry, e.g. `auth.token` or `subscriptions[1].refs[0]`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RegistryError {
    pub errors: Vec<FieldError>,
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid cluster registry entry: ")?;
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

const TOP_LEVEL_FIELDS: &[&str] = &[
    "name",
    "server",
    "ca",
    "auth",
    "kubeconfig",
    "context",
    "namespaces",
    "host_aliases",
    "subscriptions",
    "trigger",
    "confirm",
];

impl ClusterEntry {
    /// Parses one entry (a Secrets Manager secret string or a registry file).
    pub fn from_json(text: &str) -> Result<Self, RegistryError> {
        match serde_json::from_str::<Value>(text) {
            Ok(value) => Self::from_value(&value),
            // serde_json's message has a position, never the text around it.
            Err(error) => Err(RegistryError {
                errors: vec![FieldError {
                    path: "(entry)".into(),
                    message: format!("not valid JSON: {error}"),
                }],
            }),
        }
    }

    pub fn from_value(value: &Value) -> Result<Self, RegistryError> {
        let mut errors = Errors::default();
        let Some(object) = value.as_object() else {
            errors.add("(entry)", "must be a JSON object");
            return Err(errors.into_error());
        };
        for key in object.keys() {
            if !TOP_LEVEL_FIELDS.contains(&key.as_str()) {
                errors.add(
                    key,
                    format!("unknown field (known: {})", TOP_LEVEL_FIELDS.join(", ")),
                );
            }
        }
        let name = cluster_name(object, &mut errors);
        let server = server(object, &mut errors);
        let ca = optional_string(object, "ca", &mut errors);
        if ca
            .as_deref()
            .is_some_and(|pem| !pem.contains("-----BEGIN CERTIFICATE-----"))
        {
            errors.add("ca", "must be a PEM bundle (-----BEGIN CERTIFICATE-----)");
        }
        let credentials = credentials(object, &mut errors);
        let namespaces = namespaces(object, &mut errors);
        let host_aliases = host_aliases(object, &mut errors);
        let subscriptions = subscriptions(object.get("subscriptions"), &mut errors);
        let trigger = trigger(object.get("trigger"), &mut errors);
        let confirm = confirm(object.get("confirm"), &mut errors);

        match (name, server, credentials, errors.is_empty()) {
            (Some(name), Some(server), Some(credentials), true) => Ok(ClusterEntry {
                name,
                server,
                ca,
                credentials,
                namespaces,
                host_aliases,
                subscriptions,
                trigger,
                confirm,
            }),
            _ => Err(errors.into_error()),
        }
    }
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn into_error(self) -> RegistryError {
        RegistryError { errors: self.0 }
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A present, non-empty string; anything else is an error at `path`.
fn string_at(value: Option<&Value>, path: &str, errors: &mut Errors) -> Option<String> {
    match value {
        None => None,
        Some(Value::String(text)) if text.trim().is_empty() => {
            errors.add(path, "must not be empty");
            None
        }
        Some(Value::String(text)) => Some(text.clone()),
        Some(other) => {
            errors.add(
                path,
                format!("must be a string, found {}", type_name(other)),
            );
            None
        }
    }
}

fn required_string(object: &Map<String, Value>, key: &str, errors: &mut Errors) -> Option<String> {
    let value = string_at(object.get(key), key, errors);
    if object.get(key).is_none() {
        errors.add(key, "is required");
    }
    value
}

fn optional_string(object: &Map<String, Value>, key: &str, errors: &mut Errors) -> Option<String> {
    string_at(object.get(key), key, errors)
}

fn cluster_name(object: &Map<String, Value>, errors: &mut Errors) -> Option<String> {
    let name = required_string(object, "name", errors)?;
    if !super::is_valid_cluster_name(&name) {
        errors.add(
            "name",
            "must be 1 to 63 characters of A-Z, a-z, 0-9, '-', '_' or '.'",
        );
        return None;
    }
    Some(name)
}

fn server(object: &Map<String, Value>, errors: &mut Errors) -> Option<url::Url> {
    let text = required_string(object, "server", errors)?;
    let Ok(url) = url::Url::parse(&text) else {
        errors.add("server", "is not a URL");
        return None;
    };
    let problem = if url.scheme() != "https" {
        Some("must use https (TLS verification is always on)")
    } else if url.host_str().is_none_or(str::is_empty) {
        Some("has no host")
    } else if !url.username().is_empty() || url.password().is_some() {
        Some("must not contain user info; put credentials in auth")
    } else if url.query().is_some() || url.fragment().is_some() {
        Some("must not have a query or fragment")
    } else {
        None
    };
    match problem {
        Some(message) => {
            errors.add("server", message);
            None
        }
        None => Some(url),
    }
}

fn credentials(object: &Map<String, Value>, errors: &mut Errors) -> Option<Credentials> {
    let auth = object.get("auth");
    let kubeconfig = optional_string(object, "kubeconfig", errors);
    let context = optional_string(object, "context", errors);
    match (auth, kubeconfig) {
        (Some(_), Some(_)) => {
            errors.add("auth", "give either auth or kubeconfig, not both");
            None
        }
        (None, None) => {
            if object.get("kubeconfig").is_none() {
                errors.add(
                    "auth",
                    "is required (token, client_cert + client_key, or eks), or give kubeconfig",
                );
            }
            None
        }
        (None, Some(kubeconfig)) => Some(Credentials::Kubeconfig {
            kubeconfig: Secret::new(kubeconfig),
            context,
        }),
        (Some(auth), None) => {
            if object.contains_key("context") {
                errors.add("context", "only applies with kubeconfig");
            }
            auth_kind(auth, errors)
        }
    }
}

fn auth_kind(auth: &Value, errors: &mut Errors) -> Option<Credentials> {
    let Some(auth) = auth.as_object() else {
        errors.add(
            "auth",
            format!("must be an object, found {}", type_name(auth)),
        );
        return None;
    };
    for key in auth.keys() {
        if !matches!(key.as_str(), "token" | "client_cert" | "client_key" | "eks") {
            errors.add(
                format!("auth.{key}"),
                "unknown field (known: token, client_cert, client_key, eks)",
            );
        }
    }
    let kinds: Vec<&str> = [
        ("token", auth.contains_key("token")),
        (
            "client_cert",
            auth.contains_key("client_cert") || auth.contains_key("client_key"),
        ),
        ("eks", auth.contains_key("eks")),
    ]
    .into_iter()
    .filter_map(|(kind, present)| present.then_some(kind))
    .collect();
    match kinds.as_slice() {
        ["token"] => string_at(auth.get("token"), "auth.token", errors)
            .map(|t| Credentials::Token(Secret::new(t))),
        ["client_cert"] => {
            let certificate = string_at(auth.get("client_cert"), "auth.client_cert", errors);
            let key = string_at(auth.get("client_key"), "auth.client_key", errors);
            for (field, present) in [
                ("auth.client_cert", auth.contains_key("client_cert")),
                ("auth.client_key", auth.contains_key("client_key")),
            ] {
                if !present {
                    errors.add(field, "is required with client certificate auth");
                }
            }
            if certificate
                .as_deref()
                .is_some_and(|pem| !pem.contains("-----BEGIN CERTIFICATE-----"))
            {
                errors.add("auth.client_cert", "must be a PEM certificate");
            }
            if key
                .as_deref()
                .is_some_and(|pem| !pem.contains("PRIVATE KEY-----"))
            {
                errors.add("auth.client_key", "must be a PEM private key");
            }
            Some(Credentials::ClientCertificate {
                certificate_pem: certificate?,
                key_pem: Secret::new(key?),
            })
        }
        ["eks"] => eks(auth.get("eks"), errors),
        [] => {
            errors.add(
                "auth",
                "must have exactly one kind: token, client_cert + client_key, or eks",
            );
            None
        }
        several => {
            errors.add(
                "auth",
                format!(
                    "has several kinds ({}); give exactly one",
                    several.join(", ")
                ),
            );
            None
        }
    }
}

fn eks(value: Option<&Value>, errors: &mut Errors) -> Option<Credentials> {
    let Some(eks) = value.and_then(Value::as_object) else {
        errors.add("auth.eks", "must be an object {cluster, region}");
        return None;
    };
    let cluster = string_at(eks.get("cluster"), "auth.eks.cluster", errors);
    let region = string_at(eks.get("region"), "auth.eks.region", errors);
    for key in ["cluster", "region"] {
        if !eks.contains_key(key) {
            errors.add(format!("auth.eks.{key}"), "is required");
        }
    }
    Some(Credentials::Eks {
        cluster: cluster?,
        region: region?,
    })
}

fn is_dns_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

fn namespaces(object: &Map<String, Value>, errors: &mut Errors) -> Vec<String> {
    let Some(value) = object.get("namespaces") else {
        return vec![DEFAULT_NAMESPACE.to_string()];
    };
    let list = string_list(value, "namespaces", errors);
    for (i, namespace) in list.iter().enumerate() {
        if !is_dns_label(namespace) {
            errors.add(
                format!("namespaces[{i}]"),
                "is not a Kubernetes namespace name",
            );
        }
    }
    list
}

/// A non-empty array of non-empty strings.
fn string_list(value: &Value, path: &str, errors: &mut Errors) -> Vec<String> {
    let Some(items) = value.as_array() else {
        errors.add(
            path,
            format!("must be an array of strings, found {}", type_name(value)),
        );
        return Vec::new();
    };
    if items.is_empty() {
        errors.add(path, "must not be empty (omit the field for the default)");
    }
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| string_at(Some(item), &format!("{path}[{i}]"), errors))
        .collect()
}

fn host_aliases(object: &Map<String, Value>, errors: &mut Errors) -> BTreeMap<String, String> {
    let Some(value) = object.get("host_aliases") else {
        return BTreeMap::new();
    };
    let Some(map) = value.as_object() else {
        errors.add(
            "host_aliases",
            "must be an object {alias host: canonical host}",
        );
        return BTreeMap::new();
    };
    map.iter()
        .filter_map(|(alias, canonical)| {
            let path = format!("host_aliases.{alias}");
            let canonical = string_at(Some(canonical), &path, errors)?;
            if alias.contains(['/', ':', '@']) || canonical.contains(['/', ':', '@']) {
                errors.add(path, "must map a bare host name to a bare host name");
                return None;
            }
            Some((alias.to_ascii_lowercase(), canonical.to_ascii_lowercase()))
        })
        .collect()
}

/// A `subscriptions` field alone (the registry index lists them apart from the entry), with
/// the same rules and messages as in a whole entry.
pub(crate) fn subscriptions_only(
    value: Option<&Value>,
) -> Result<Vec<Subscription>, RegistryError> {
    let mut errors = Errors::default();
    let subscriptions = subscriptions(value, &mut errors);
    if errors.is_empty() {
        Ok(subscriptions)
    } else {
        Err(errors.into_error())
    }
}

/// The fields of an entry that hold a secret: none may be in the registry index, which route
/// reads.
pub(crate) fn secret_fields(object: &Map<String, Value>) -> Vec<&'static str> {
    let auth = object.get("auth").and_then(Value::as_object);
    let trigger = object.get("trigger").and_then(Value::as_object);
    [
        ("auth.token", auth.is_some_and(|a| a.contains_key("token"))),
        (
            "auth.client_key",
            auth.is_some_and(|a| a.contains_key("client_key")),
        ),
        (
            "auth.client_cert",
            auth.is_some_and(|a| a.contains_key("client_cert")),
        ),
        ("kubeconfig", object.contains_key("kubeconfig")),
        (
            "trigger.receiver_tokens",
            trigger.is_some_and(|t| t.contains_key("receiver_tokens")),
        ),
    ]
    .into_iter()
    .filter_map(|(field, present)| present.then_some(field))
    .collect()
}

fn subscriptions(value: Option<&Value>, errors: &mut Errors) -> Vec<Subscription> {
    let Some(value) = value else {
        return vec![Subscription::default(), Subscription::every_artifact()];
    };
    let Some(items) = value.as_array() else {
        errors.add(
            "subscriptions",
            format!("must be an array, found {}", type_name(value)),
        );
        return Vec::new();
    };
    if items.is_empty() {
        errors.add(
            "subscriptions",
            "matches nothing; omit the field to receive every push",
        );
    }
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| subscription(item, &format!("subscriptions[{i}]"), errors))
        .collect()
}

const GIT_SUBSCRIPTION_FIELDS: &[&str] =
    &["projects", "refs", "instances", "paths", "on", "registry"];
const ARTIFACT_SUBSCRIPTION_FIELDS: &[&str] = &["registries", "repositories", "tags"];

fn subscription(value: &Value, path: &str, errors: &mut Errors) -> Option<Subscription> {
    let Some(object) = value.as_object() else {
        errors.add(
            path,
            "must be an object {projects, refs, instances, paths, on, registry} or {registries, repositories, tags}",
        );
        return None;
    };
    for key in object.keys() {
        if !GIT_SUBSCRIPTION_FIELDS.contains(&key.as_str())
            && !ARTIFACT_SUBSCRIPTION_FIELDS.contains(&key.as_str())
        {
            errors.add(
                format!("{path}.{key}"),
                "unknown field (known: projects, refs, instances, paths, on, registry; or registries, repositories, tags)",
            );
        }
    }
    let has = |fields: &[&str]| fields.iter().any(|field| object.contains_key(*field));
    if has(ARTIFACT_SUBSCRIPTION_FIELDS) {
        if has(GIT_SUBSCRIPTION_FIELDS) {
            errors.add(
                path,
                "mixes a registry subscription (registries, repositories, tags) with a GitLab one (projects, refs, instances, paths, on, registry); write two subscriptions",
            );
            return None;
        }
        return Some(artifact_subscription(object, path, errors));
    }
    let mut subscription = Subscription::default();
    let globs = |key: &str, case_insensitive: bool, errors: &mut Errors| -> Option<PatternList> {
        let field = format!("{path}.{key}");
        let list = string_list(object.get(key)?, &field, errors);
        PatternList::new(&list, case_insensitive)
            .map_err(|e| errors.add(&field, e.to_string()))
            .ok()
    };
    if let Some(projects) = globs("projects", true, errors) {
        subscription.projects = projects;
    }
    subscription.paths = globs("paths", false, errors);
    if let Some(value) = object.get("refs") {
        let field = format!("{path}.refs");
        let list = string_list(value, &field, errors);
        match RefPatterns::new(&list) {
            Ok(refs) => subscription.refs = refs,
            Err(e) => errors.add(field, e.to_string()),
        }
    }
    if let Some(value) = object.get("instances") {
        subscription.instances = string_list(value, &format!("{path}.instances"), errors);
    }
    subscription.takes = takes(object, path, errors);
    if matches!(subscription.takes, Takes::ProjectArtifacts { .. }) && object.contains_key("paths")
    {
        errors.add(
            format!("{path}.paths"),
            "only applies to Git pushes (on: push); a pipeline or tag push lists no changed files",
        );
    }
    Some(subscription)
}

/// `on` (`push`, the default; `pipeline`; `tag_push`) and, for the last two, `registry`.
fn takes(object: &Map<String, Value>, path: &str, errors: &mut Errors) -> Takes {
    let on = string_at(object.get("on"), &format!("{path}.on"), errors);
    let registry = string_at(object.get("registry"), &format!("{path}.registry"), errors);
    let event = match on.as_deref() {
        None | Some("push") => {
            if registry.is_some() {
                errors.add(
                    format!("{path}.registry"),
                    "only applies with on: pipeline or on: tag_push",
                );
            }
            return Takes::GitPushes;
        }
        Some("pipeline") => ProjectEvent::Pipeline,
        Some("tag_push") => ProjectEvent::TagPush,
        Some(_) => {
            errors.add(
                format!("{path}.on"),
                "must be \"push\", \"pipeline\" or \"tag_push\"",
            );
            return Takes::GitPushes;
        }
    };
    let Some(registry) = registry else {
        if !object.contains_key("registry") {
            errors.add(
                format!("{path}.registry"),
                "is required with on: pipeline or tag_push: the host[:port] of the GitLab container registry that holds the projects' artifacts",
            );
        }
        return Takes::GitPushes;
    };
    match normalize_registry(&registry) {
        Some(registry) => Takes::ProjectArtifacts {
            on: event,
            registry,
        },
        None => {
            errors.add(
                format!("{path}.registry"),
                "must be a registry host[:port], without scheme or path",
            );
            Takes::GitPushes
        }
    }
}

/// `{registries, repositories, tags}`: tagged pushes to these registries and repositories.
fn artifact_subscription(
    object: &Map<String, Value>,
    path: &str,
    errors: &mut Errors,
) -> Subscription {
    let mut subscription = Subscription::every_artifact();
    let globs = |key: &str, case_insensitive: bool, errors: &mut Errors| -> Option<PatternList> {
        let field = format!("{path}.{key}");
        let list = string_list(object.get(key)?, &field, errors);
        PatternList::new(&list, case_insensitive)
            .map_err(|e| errors.add(&field, e.to_string()))
            .ok()
    };
    if let Some(repositories) = globs("repositories", true, errors) {
        subscription.projects = repositories;
    }
    if let Some(tags) = globs("tags", false, errors) {
        subscription.takes = Takes::ArtifactPushes { tags };
    }
    if let Some(value) = object.get("registries") {
        let field = format!("{path}.registries");
        let registries = string_list(value, &field, errors);
        for (i, registry) in registries.iter().enumerate() {
            if normalize_registry(registry).is_none() {
                errors.add(
                    format!("{field}[{i}]"),
                    "must be a registry host[:port], without scheme or path",
                );
            }
        }
        subscription.instances = registries;
    }
    subscription
}

fn trigger(value: Option<&Value>, errors: &mut Errors) -> TriggerConfig {
    let mut config = TriggerConfig::default();
    let Some(value) = value else {
        return config;
    };
    let Some(object) = value.as_object() else {
        errors.add(
            "trigger",
            format!("must be an object, found {}", type_name(value)),
        );
        return config;
    };
    for key in object.keys() {
        if !matches!(
            key.as_str(),
            "mode"
                | "webhook_receiver_url"
                | "receiver_tokens"
                | "artifact_kinds"
                | "registry_aliases"
        ) {
            errors.add(
                format!("trigger.{key}"),
                "unknown field (known: mode, webhook_receiver_url, receiver_tokens, artifact_kinds, registry_aliases)",
            );
        }
    }
    match string_at(object.get("mode"), "trigger.mode", errors).as_deref() {
        None | Some("receiver") => {}
        Some("annotate") => config.mode = TriggerMode::Annotate,
        Some(_) => errors.add("trigger.mode", "must be \"receiver\" or \"annotate\""),
    }
    if let Some(text) = string_at(
        object.get("webhook_receiver_url"),
        "trigger.webhook_receiver_url",
        errors,
    ) {
        match receiver_endpoint(&text) {
            Some(endpoint) => config.receiver_endpoint = endpoint,
            None => errors.add(
                "trigger.webhook_receiver_url",
                "must be an absolute http(s) URL or a service-proxy path /api/v1/namespaces/<ns>/services/<service>/proxy",
            ),
        }
    }
    if let Some(value) = object.get("receiver_tokens") {
        config.receiver_tokens = receiver_tokens(value, errors);
    }
    if let Some(value) = object.get("artifact_kinds") {
        config.artifact_kinds = artifact_kinds(value, errors);
    }
    if let Some(value) = object.get("registry_aliases") {
        config.registry_aliases = registry_aliases(value, errors);
    }
    config
}

/// `confirm`: `true` (Kustomizations and HelmReleases), `false` or absent (off), or
/// `{"helm_releases": bool}`.
fn confirm(value: Option<&Value>, errors: &mut Errors) -> Option<ConfirmOptions> {
    match value? {
        Value::Bool(true) => Some(ConfirmOptions::default()),
        Value::Bool(false) => None,
        Value::Object(object) => {
            let mut options = ConfirmOptions::default();
            for (key, value) in object {
                match (key.as_str(), value) {
                    ("helm_releases", Value::Bool(flag)) => options.helm_releases = *flag,
                    ("helm_releases", other) => errors.add(
                        "confirm.helm_releases",
                        format!("must be a boolean, found {}", type_name(other)),
                    ),
                    _ => errors.add(
                        format!("confirm.{key}"),
                        "unknown field (known: helm_releases)",
                    ),
                }
            }
            Some(options)
        }
        other => {
            errors.add(
                "confirm",
                format!(
                    "must be true, false or {{\"helm_releases\": bool}}, found {}",
                    type_name(other)
                ),
            );
            None
        }
    }
}

/// The kinds dispatch reads (and triggers) for artifact events: a subset of OCIRepository,
/// HelmRepository, HelmChart, HelmRelease and ImageRepository. The Helm kinds go together:
/// a HelmChart or HelmRelease is found through its OCI HelmRepository, and a HelmRepository
/// alone is never triggered (Flux never reconciles an OCI one).
fn artifact_kinds(value: &Value, errors: &mut Errors) -> BTreeSet<ArtifactKind> {
    const FIELD: &str = "trigger.artifact_kinds";
    let Some(items) = value.as_array() else {
        errors.add(
            FIELD,
            format!("must be an array of kinds, found {}", type_name(value)),
        );
        return BTreeSet::new();
    };
    let mut kinds = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("{FIELD}[{i}]");
        let Some(text) = string_at(Some(item), &path, errors) else {
            continue;
        };
        match ArtifactKind::parse(&text) {
            Some(kind) => {
                kinds.insert(kind);
            }
            None => errors.add(
                path,
                "must be one of OCIRepository, HelmRepository, HelmChart, HelmRelease, ImageRepository",
            ),
        }
    }
    let helm_consumers =
        kinds.contains(&ArtifactKind::HelmChart) || kinds.contains(&ArtifactKind::HelmRelease);
    if kinds.contains(&ArtifactKind::HelmRepository) != helm_consumers {
        errors.add(
            FIELD,
            "HelmRepository goes with HelmChart and/or HelmRelease: the charts of an OCI HelmRepository are triggered through the HelmCharts and HelmReleases that take them",
        );
    }
    kinds
}

/// `{"alias host[:port]": "canonical host[:port]"}` for registries reached under several
/// names; a port is part of the name.
fn registry_aliases(value: &Value, errors: &mut Errors) -> BTreeMap<String, String> {
    const FIELD: &str = "trigger.registry_aliases";
    let Some(map) = value.as_object() else {
        errors.add(
            FIELD,
            "must be an object {alias registry: canonical registry}",
        );
        return BTreeMap::new();
    };
    map.iter()
        .filter_map(|(alias, canonical)| {
            let path = format!("{FIELD}.{alias}");
            let canonical = string_at(Some(canonical), &path, errors)?;
            match (normalize_registry(alias), normalize_registry(&canonical)) {
                (Some(alias), Some(canonical)) => Some((alias, canonical)),
                _ => {
                    errors.add(
                        path,
                        "must map a registry host[:port] to a registry host[:port]",
                    );
                    None
                }
            }
        })
        .collect()
}

/// A service-proxy path (`^/api/v1/namespaces/[^/]+/services/[^/]+/proxy$`) or an
/// absolute http(s) URL without user info, query or fragment.
pub fn receiver_endpoint(text: &str) -> Option<ReceiverEndpoint> {
    if text.starts_with('/') {
        let parts: Vec<&str> = text.split('/').collect();
        let is_proxy = matches!(
            parts.as_slice(),
            ["", "api", "v1", "namespaces", namespace, "services", service, "proxy"]
                if !namespace.is_empty() && !service.is_empty()
        );
        let clean = !text.contains(['?', '#', '%', '\\']) && !text.chars().any(char::is_whitespace);
        return (is_proxy && clean).then(|| ReceiverEndpoint::ServiceProxy(text.to_string()));
    }
    let url = url::Url::parse(text).ok()?;
    let acceptable = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some_and(|h| !h.is_empty())
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none();
    acceptable.then_some(ReceiverEndpoint::Absolute(url))
}

fn receiver_tokens(value: &Value, errors: &mut Errors) -> BTreeMap<ObjectRef, Secret> {
    let Some(map) = value.as_object() else {
        errors.add(
            "trigger.receiver_tokens",
            "must be an object {\"namespace/name\": token}",
        );
        return BTreeMap::new();
    };
    map.iter()
        .filter_map(|(key, token)| {
            let receiver = match key.split_once('/') {
                Some((namespace, name))
                    if is_dns_label(namespace) && !name.is_empty() && !name.contains('/') =>
                {
                    ObjectRef::new(namespace, name)
                }
                _ => {
                    // Not shown: a key that is no Receiver name may be the token itself,
                    // written where its `namespace/name` belongs.
                    errors.add(
                        "trigger.receiver_tokens",
                        "key must be \"namespace/name\" of a Receiver (the key is not shown: it may be a token in the wrong place)",
                    );
                    return None;
                }
            };
            let path = format!("trigger.receiver_tokens[{key:?}]");
            let token = string_at(Some(token), &path, errors)?;
            Some((receiver, Secret::new(token)))
        })
        .collect()
}

#[cfg(test)]
#[path = "parse_test.rs"]
mod tests;
