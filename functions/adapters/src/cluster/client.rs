//! One kube client per registry entry, built from the entry alone (never from the
//! environment) and cached by entry name until the entry's server, CA or credentials change,
//! its minted (EKS) token leaves its reuse window, or the apiserver rejects it.
//!
//! Credentials go only to the entry's `server`; a whole kubeconfig must point there and hold
//! its credentials inline. kube's and the YAML parser's own messages can quote their input,
//! so every failure here carries our message instead.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use base64::Engine as _;
use fluxrelay_core::outcome::classify::{FailureClass, Responder, TriggerFailure};
use fluxrelay_core::registry::{ClusterEntry, Credentials};
use fluxrelay_core::secret::Secret;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::http_stack::ApiserverHttp;
use super::{KubeClusters, Timeouts, configuration_failure};
use crate::eks::{EksTokenError, TokenLifetime};

/// The context name of the in-memory kubeconfig built from token or certificate entries.
const CONTEXT: &str = "fluxrelay";

/// sha256 over the entry's server, CA and credentials: tells when a client must be rebuilt
/// without keeping a second copy of the credentials. Never logged.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Fingerprint([u8; 32]);

pub(super) fn fingerprint(entry: &ClusterEntry) -> Fingerprint {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    field(entry.server.as_str().as_bytes());
    field(entry.ca.as_deref().unwrap_or_default().as_bytes());
    field(entry.credentials.kind().as_bytes());
    match &entry.credentials {
        Credentials::Token(token) => field(token.expose().as_bytes()),
        Credentials::ClientCertificate {
            certificate_pem,
            key_pem,
        } => {
            field(certificate_pem.as_bytes());
            field(key_pem.expose().as_bytes());
        }
        Credentials::Eks { cluster, region } => {
            field(cluster.as_bytes());
            field(region.as_bytes());
        }
        Credentials::Kubeconfig {
            kubeconfig,
            context,
        } => {
            field(kubeconfig.expose().as_bytes());
            field(context.as_deref().unwrap_or_default().as_bytes());
        }
    }
    Fingerprint(hash.finalize().into())
}

struct CachedClient {
    fingerprint: Fingerprint,
    client: ApiserverHttp,
    /// Set for clients that hold a minted (EKS) token: past it, the client is rebuilt.
    token_lifetime: Option<TokenLifetime>,
}

impl CachedClient {
    fn usable(&self, fingerprint: Fingerprint, now: SystemTime) -> bool {
        self.fingerprint == fingerprint
            && self
                .token_lifetime
                .is_none_or(|lifetime| lifetime.usable_at(now))
    }
}

/// The clients built so far, by entry name. Bounded by the registry: one per entry name
/// that was used.
#[derive(Default)]
pub(super) struct ClientCache(Mutex<HashMap<String, CachedClient>>);

impl ClientCache {
    fn usable(
        &self,
        name: &str,
        fingerprint: Fingerprint,
        now: SystemTime,
    ) -> Option<ApiserverHttp> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .filter(|cached| cached.usable(fingerprint, now))
            .map(|cached| cached.client.clone())
    }

    fn insert(&self, name: &str, cached: CachedClient) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_string(), cached);
    }

    fn forget(&self, name: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }
}

/// No token, so nothing was sent. Missing AWS credentials may come back (retry); a bad
/// `auth.eks` entry will not.
fn eks_failure(entry: &ClusterEntry, error: &EksTokenError) -> TriggerFailure {
    TriggerFailure {
        class: if error.is_retryable() {
            FailureClass::Retryable
        } else {
            FailureClass::Permanent
        },
        responder: Responder::Configuration,
        status: None,
        reason: format!("cluster {}: no EKS token: {error}", entry.name),
        credentials_rejected: false,
    }
}

impl KubeClusters {
    /// The entry's kube client, for diagnostics (`fluxrelay cluster check`).
    pub async fn client_for(&self, entry: &ClusterEntry) -> Result<kube::Client, TriggerFailure> {
        Ok(self.client(entry).await?.kube_client())
    }

    /// The entry's client, built on first use and rebuilt when its server, CA or
    /// credentials change, or when its minted token leaves its reuse window.
    pub(super) async fn client(
        &self,
        entry: &ClusterEntry,
    ) -> Result<ApiserverHttp, TriggerFailure> {
        let print = fingerprint(entry);
        if let Some(client) = self.clients.usable(&entry.name, print, self.eks.now()) {
            return Ok(client);
        }
        let minted = match &entry.credentials {
            Credentials::Eks { cluster, region } => {
                // The entry's server must be the cluster's own endpoint before a token
                // for it exists at all.
                self.eks_endpoints
                    .check(&entry.server, cluster, region)
                    .await
                    .map_err(|error| eks_failure(entry, &error))?;
                Some(
                    self.eks
                        .mint(cluster, region)
                        .await
                        .map_err(|error| eks_failure(entry, &error))?,
                )
            }
            _ => None,
        };
        let config = client_config(
            entry,
            self.timeouts,
            minted.as_ref().map(|minted| &minted.token),
        )
        .await?;
        let client = super::http_stack::client(config, self.pool).map_err(|_| {
            configuration_failure(format!(
                "cluster {}: could not build a client from the entry's CA and credentials (a certificate or key is not loadable; details withheld)",
                entry.name
            ))
        })?;
        tracing::debug!(cluster = %entry.name, minted_token = minted.is_some(), "built kube client");
        self.clients.insert(
            &entry.name,
            CachedClient {
                fingerprint: print,
                client: client.clone(),
                token_lifetime: minted.map(|minted| minted.lifetime),
            },
        );
        Ok(client)
    }

    /// The apiserver rejected the entry's credentials (401): the next use builds a new
    /// client, which for an `eks` entry means a new token.
    pub(super) fn forget_client(&self, entry: &ClusterEntry) {
        self.clients.forget(&entry.name);
    }
}

/// The kube configuration for an entry, built only from the entry (and, for an `eks`
/// entry, the token just minted for it).
async fn client_config(
    entry: &ClusterEntry,
    timeouts: Timeouts,
    eks_token: Option<&Secret>,
) -> Result<kube::Config, TriggerFailure> {
    let (kubeconfig, context) = match &entry.credentials {
        Credentials::Token(token) => (
            in_memory_kubeconfig(entry, json!({ "token": token.expose() }))?,
            CONTEXT.to_string(),
        ),
        Credentials::ClientCertificate {
            certificate_pem,
            key_pem,
        } => (
            in_memory_kubeconfig(
                entry,
                json!({
                    "client-certificate-data": base64_of(certificate_pem),
                    "client-key-data": base64_of(key_pem.expose()),
                }),
            )?,
            CONTEXT.to_string(),
        ),
        Credentials::Eks { .. } => match eks_token {
            Some(token) => (
                in_memory_kubeconfig(entry, json!({ "token": token.expose() }))?,
                CONTEXT.to_string(),
            ),
            None => {
                return Err(configuration_failure(format!(
                    "cluster {}: no EKS token was minted for this entry",
                    entry.name
                )));
            }
        },
        Credentials::Kubeconfig {
            kubeconfig,
            context,
        } => whole_kubeconfig(entry, kubeconfig.expose(), context.as_deref())?,
    };
    let options = KubeConfigOptions {
        context: Some(context),
        ..KubeConfigOptions::default()
    };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|_| {
            configuration_failure(format!(
                "cluster {}: the cluster configuration could not be loaded (details withheld)",
                entry.name
            ))
        })?;
    // Checked again on the result: credentials go to the entry's server and nowhere else.
    if !same_server(&config.cluster_url.to_string(), &entry.server) {
        return Err(configuration_failure(format!(
            "cluster {}: the configured server is not the entry's server {}",
            entry.name, entry.server
        )));
    }
    config.default_retry = false;
    config.connect_timeout = Some(timeouts.connect);
    config.read_timeout = Some(timeouts.read);
    config.write_timeout = Some(timeouts.write);
    config.reset_reader_on_write = true;
    config.accept_invalid_certs = false;
    config.proxy_url = None;
    Ok(config)
}

fn base64_of(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A kubeconfig with one cluster (the entry's server and CA) and the given user, so kube
/// parses the PEM exactly as it does for `*-data` fields in a file.
fn in_memory_kubeconfig(entry: &ClusterEntry, user: Value) -> Result<Kubeconfig, TriggerFailure> {
    let mut cluster = json!({ "server": entry.server.as_str() });
    if let (Some(ca), Some(fields)) = (&entry.ca, cluster.as_object_mut()) {
        fields.insert(
            "certificate-authority-data".into(),
            Value::String(base64_of(ca)),
        );
    }
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": CONTEXT, "cluster": cluster }],
        "users": [{ "name": CONTEXT, "user": user }],
        "contexts": [{ "name": CONTEXT, "context": { "cluster": CONTEXT, "user": CONTEXT } }],
        "current-context": CONTEXT,
    });
    serde_json::from_value(kubeconfig).map_err(|_| {
        configuration_failure(format!(
            "cluster {}: the entry's credentials could not be put into a client configuration",
            entry.name
        ))
    })
}

/// A whole kubeconfig from the registry: its selected context must point at the entry's
/// server, and it must not run programs or read files to get credentials.
fn whole_kubeconfig(
    entry: &ClusterEntry,
    text: &str,
    context: Option<&str>,
) -> Result<(Kubeconfig, String), TriggerFailure> {
    let name = &entry.name;
    // The parser's messages quote the document, which holds the credentials.
    let kubeconfig = Kubeconfig::from_yaml(text).map_err(|_| {
        configuration_failure(format!(
            "cluster {name}: the kubeconfig could not be parsed (details withheld)"
        ))
    })?;
    let Some(context_name) = context
        .map(str::to_string)
        .or_else(|| kubeconfig.current_context.clone())
    else {
        return Err(configuration_failure(format!(
            "cluster {name}: the kubeconfig has no current-context and the entry names none"
        )));
    };
    let Some(selected) = kubeconfig
        .contexts
        .iter()
        .find(|named| named.name == context_name)
        .and_then(|named| named.context.as_ref())
    else {
        return Err(configuration_failure(format!(
            "cluster {name}: the kubeconfig has no context {context_name:?}"
        )));
    };
    let server = kubeconfig
        .clusters
        .iter()
        .find(|named| named.name == selected.cluster)
        .and_then(|named| named.cluster.as_ref())
        .and_then(|cluster| cluster.server.as_deref());
    if !server.is_some_and(|server| same_server(server, &entry.server)) {
        return Err(configuration_failure(format!(
            "cluster {name}: the kubeconfig context {context_name:?} does not point at the entry's server {}; credentials are only sent to the entry's server",
            entry.server
        )));
    }
    let user = selected.user.as_deref().and_then(|user| {
        kubeconfig
            .auth_infos
            .iter()
            .find(|named| named.name == user)
            .and_then(|named| named.auth_info.as_ref())
    });
    if let Some(user) = user
        && (user.exec.is_some()
            || user.auth_provider.is_some()
            || user.token_file.is_some()
            || user.client_certificate.is_some()
            || user.client_key.is_some())
    {
        return Err(configuration_failure(format!(
            "cluster {name}: the kubeconfig user must hold its credentials inline (token or *-data fields); exec, auth-provider and file paths are not used"
        )));
    }
    Ok((kubeconfig, context_name))
}

/// The same origin and path, whatever the spelling (`https://h:443/` = `https://h`).
fn same_server(candidate: &str, server: &url::Url) -> bool {
    url::Url::parse(candidate).is_ok_and(|candidate| {
        candidate.scheme() == server.scheme()
            && candidate.host() == server.host()
            && candidate.port_or_known_default() == server.port_or_known_default()
            && candidate.path().trim_end_matches('/') == server.path().trim_end_matches('/')
    })
}

#[cfg(test)]
#[path = "client_test.rs"]
mod tests;
