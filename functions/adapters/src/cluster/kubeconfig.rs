//! The part of a kubeconfig a registry entry may hold: one context's cluster (server, CA
//! data, TLS server name) and user (an inline token, Basic credentials, client certificate
//! data, impersonation). Field names and precedence are kubectl's (the kubeconfig file
//! format, `k8s.io/client-go/tools/clientcmd/api/v1`), as kube's loader reads them.
//!
//! A user that would run a program (`exec`, `auth-provider`) or read a file (`tokenFile`,
//! `client-certificate`, `client-key`), or a cluster whose CA is a file
//! (`certificate-authority`), is refused: a function has neither the program nor the file,
//! and an entry's credentials are the entry's. `insecure-skip-tls-verify` and `proxy-url`
//! are not used: verification stays on, and the apiserver is reached directly.

use std::collections::HashMap;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use super::config::{ApiserverConfig, ConfigError};

#[derive(Deserialize, Default)]
#[serde(default)]
struct Kubeconfig {
    clusters: Vec<Named<Cluster>>,
    users: Vec<Named<User>>,
    contexts: Vec<Named<Context>>,
    #[serde(rename = "current-context")]
    current_context: Option<String>,
}

/// kubectl's `{name, cluster|user|context}` list items; the item under its own key.
#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    item: Option<T>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "kebab-case")]
struct Cluster {
    server: Option<String>,
    certificate_authority: Option<String>,
    certificate_authority_data: Option<String>,
    tls_server_name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "kebab-case")]
struct User {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<String>,
    username: Option<String>,
    password: Option<String>,
    client_certificate: Option<String>,
    client_certificate_data: Option<String>,
    client_key: Option<String>,
    client_key_data: Option<String>,
    #[serde(rename = "as")]
    impersonate: Option<String>,
    #[serde(rename = "as-uid")]
    impersonate_uid: Option<String>,
    #[serde(rename = "as-groups")]
    impersonate_groups: Option<Vec<String>>,
    #[serde(rename = "as-user-extra")]
    impersonate_user_extra: Option<HashMap<String, Vec<String>>>,
    auth_provider: Option<Value>,
    exec: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Context {
    cluster: String,
    user: Option<String>,
    namespace: Option<String>,
}

/// Why a kubeconfig gives no client. The messages name fields, never their values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeconfigError {
    /// The parser's own message quotes the document, which holds the credentials.
    #[error("the kubeconfig could not be parsed (details withheld)")]
    Unparsable,
    #[error("the kubeconfig has no current-context and the entry names none")]
    NoContext,
    #[error("the kubeconfig has no context {0:?}")]
    UnknownContext(String),
    #[error("the kubeconfig context {0:?} names no cluster with a server")]
    NoServer(String),
    #[error("the kubeconfig context {0:?} names user {1:?}, which it does not define")]
    UnknownUser(String, String),
    #[error(
        "the kubeconfig user must hold its credentials inline (token or *-data fields); exec, auth-provider and file paths are not used"
    )]
    NotInline,
    #[error(
        "the kubeconfig cluster's CA must be inline (certificate-authority-data); a file path is not used"
    )]
    CaFile,
    #[error("the kubeconfig user's as-user-extra is not supported")]
    ImpersonatedExtra,
    #[error("the kubeconfig user has {0} without {1}")]
    Incomplete(&'static str, &'static str),
    #[error("the kubeconfig's {0} is not base64")]
    NotBase64(&'static str),
    #[error("{0}")]
    Config(#[from] ConfigError),
}

/// The selected context of a kubeconfig: its server (to be checked against the entry's by
/// the caller before anything is sent) and the client configuration it gives.
pub struct Selected {
    pub context: String,
    pub server: String,
    pub config: ApiserverConfig,
}

/// The context a kubeconfig selects, by name, and the names of the cluster and user it
/// refers to (whether those exist is for the caller: dispatch refuses a missing user,
/// kubectl goes on without credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextNames {
    pub context: String,
    pub cluster: String,
    pub user: Option<String>,
}

/// Which context `text` selects, by kubectl's rule ([`selected_context`]): for the CLI,
/// which reads the operator's kubeconfig files as plain data before an entry exists.
pub fn select_names(text: &str, context: Option<&str>) -> Result<ContextNames, KubeconfigError> {
    let kubeconfig = parse(text)?;
    let (context, selected) = selected_context(&kubeconfig, context)?;
    Ok(ContextNames {
        context,
        cluster: selected.cluster.clone(),
        user: selected.user.clone(),
    })
}

fn parse(text: &str) -> Result<Kubeconfig, KubeconfigError> {
    serde_saphyr::from_str(text).map_err(|_| KubeconfigError::Unparsable)
}

/// kubectl's choice: `context` when given, else the current-context (an empty name is
/// none, as `--context ""` and `current-context: ""` are to kubectl), which the kubeconfig
/// must define. The one place this rule lives: dispatch, `serve --kubeconfig` and
/// `fluxrelay cluster add` all select through it.
fn selected_context<'a>(
    kubeconfig: &'a Kubeconfig,
    context: Option<&str>,
) -> Result<(String, &'a Context), KubeconfigError> {
    let name = context
        .filter(|name| !name.is_empty())
        .or(kubeconfig.current_context.as_deref())
        .filter(|name| !name.is_empty())
        .ok_or(KubeconfigError::NoContext)?;
    let selected = find(&kubeconfig.contexts, name)
        .ok_or_else(|| KubeconfigError::UnknownContext(name.to_string()))?;
    Ok((name.to_string(), selected))
}

/// Reads `text` and selects `context` (else its current-context).
pub fn select(text: &str, context: Option<&str>) -> Result<Selected, KubeconfigError> {
    let kubeconfig = parse(text)?;
    let (context_name, selected) = selected_context(&kubeconfig, context)?;
    let cluster = find(&kubeconfig.clusters, &selected.cluster);
    let server = cluster
        .and_then(|cluster| cluster.server.clone())
        .ok_or_else(|| KubeconfigError::NoServer(context_name.clone()))?;
    let user = match &selected.user {
        Some(name) => Some(
            find(&kubeconfig.users, name)
                .ok_or_else(|| KubeconfigError::UnknownUser(context_name.clone(), name.clone()))?,
        ),
        None => None,
    };
    let url = url::Url::parse(&server).map_err(|_| ConfigError::Server)?;
    let mut config = ApiserverConfig::new(&url)?;
    if let Some(cluster) = cluster {
        config = with_cluster(config, cluster)?;
    }
    if let Some(user) = user {
        config = with_user(config, user)?;
    }
    if let Some(namespace) = &selected.namespace {
        config = config.default_namespace(namespace);
    }
    Ok(Selected {
        context: context_name,
        server,
        config,
    })
}

fn find<'a, T>(items: &'a [Named<T>], name: &str) -> Option<&'a T> {
    items
        .iter()
        .find(|named| named.name == name)
        .and_then(|named| named.item.as_ref())
}

fn with_cluster(
    mut config: ApiserverConfig,
    cluster: &Cluster,
) -> Result<ApiserverConfig, KubeconfigError> {
    if cluster.certificate_authority.is_some() && cluster.certificate_authority_data.is_none() {
        return Err(KubeconfigError::CaFile);
    }
    if let Some(data) = &cluster.certificate_authority_data {
        config = config.trust_pem(&decode(data, "certificate-authority-data")?)?;
    }
    if let Some(name) = &cluster.tls_server_name {
        config = config.tls_server_name(name)?;
    }
    Ok(config)
}

fn with_user(mut config: ApiserverConfig, user: &User) -> Result<ApiserverConfig, KubeconfigError> {
    if user.exec.is_some()
        || user.auth_provider.is_some()
        || user.token_file.is_some()
        || user.client_certificate.is_some()
        || user.client_key.is_some()
    {
        return Err(KubeconfigError::NotInline);
    }
    if user.impersonate_user_extra.is_some() {
        return Err(KubeconfigError::ImpersonatedExtra);
    }
    match (&user.client_certificate_data, &user.client_key_data) {
        (Some(certificate), Some(key)) => {
            config = config.identity_pem(
                &decode(certificate, "client-certificate-data")?,
                &decode(key, "client-key-data")?,
            )?;
        }
        (Some(_), None) => {
            return Err(KubeconfigError::Incomplete(
                "client-certificate-data",
                "client-key-data",
            ));
        }
        (None, Some(_)) => {
            return Err(KubeconfigError::Incomplete(
                "client-key-data",
                "client-certificate-data",
            ));
        }
        (None, None) => {}
    }
    // kube's and client-go's order: Basic credentials when both parts are there, else the
    // token.
    if let (Some(username), Some(password)) = (&user.username, &user.password) {
        config = config.basic(username, password)?;
    } else if let Some(token) = &user.token {
        config = config.bearer(token)?;
    }
    config = config.impersonate(
        user.impersonate.as_deref(),
        user.impersonate_uid.as_deref(),
        user.impersonate_groups.as_deref().unwrap_or_default(),
    )?;
    Ok(config)
}

fn decode(data: &str, field: &'static str) -> Result<Vec<u8>, KubeconfigError> {
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|_| KubeconfigError::NotBase64(field))
}

#[cfg(test)]
#[path = "kubeconfig_test.rs"]
mod tests;
