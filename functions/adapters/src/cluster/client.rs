//! One apiserver client per registry entry, built from the entry alone (never from the
//! environment) and cached by entry name until the entry's server, CA or credentials change,
//! its minted (EKS) token leaves its reuse window, or the apiserver rejects it.
//!
//! Credentials go only to the entry's `server`; a whole kubeconfig must point there and hold
//! its credentials inline. The YAML, PEM and header parsers' own messages can quote their
//! input, so every failure here carries our message instead.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use fluxrelay_core::outcome::classify::{FailureClass, Responder, TriggerFailure};
use fluxrelay_core::registry::{ClusterEntry, Credentials};
use fluxrelay_core::secret::Secret;
use sha2::{Digest, Sha256};

use super::config::{ApiserverConfig, ConfigError};
use super::http_stack::ApiserverHttp;
use super::{KubeClusters, configuration_failure, kubeconfig};
use crate::eks::{EksTokenError, TokenLifetime};

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
        let config = client_config(entry, minted.as_ref().map(|minted| &minted.token))?;
        let client = super::http_stack::client(&config, self.timeouts, self.pool).map_err(|error| {
            configuration_failure(format!(
                "cluster {}: could not build a client from the entry's CA and credentials: {error}",
                entry.name
            ))
        })?;
        tracing::debug!(cluster = %entry.name, minted_token = minted.is_some(), "built apiserver client");
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

/// The client configuration for an entry, built only from the entry (and, for an `eks`
/// entry, the token just minted for it).
fn client_config(
    entry: &ClusterEntry,
    eks_token: Option<&Secret>,
) -> Result<ApiserverConfig, TriggerFailure> {
    let name = &entry.name;
    let withheld = |error: ConfigError| {
        configuration_failure(format!(
            "cluster {name}: the entry's server, CA or credentials do not make a client: {error}"
        ))
    };
    let config = match &entry.credentials {
        Credentials::Kubeconfig {
            kubeconfig,
            context,
        } => {
            let selected = kubeconfig::select(kubeconfig.expose(), context.as_deref())
                .map_err(|error| configuration_failure(format!("cluster {name}: {error}")))?;
            if !same_server(&selected.server, &entry.server) {
                return Err(configuration_failure(format!(
                    "cluster {name}: the kubeconfig context {:?} does not point at the entry's server {}; credentials are only sent to the entry's server",
                    selected.context, entry.server
                )));
            }
            selected.config
        }
        credentials => {
            let mut config = ApiserverConfig::new(&entry.server).map_err(withheld)?;
            if let Some(ca) = &entry.ca {
                config = config.trust_pem(ca.as_bytes()).map_err(withheld)?;
            }
            match credentials {
                Credentials::Token(token) => config.bearer(token.expose()),
                Credentials::ClientCertificate {
                    certificate_pem,
                    key_pem,
                } => config.identity_pem(certificate_pem.as_bytes(), key_pem.expose().as_bytes()),
                Credentials::Eks { .. } => match eks_token {
                    Some(token) => config.bearer(token.expose()),
                    None => {
                        return Err(configuration_failure(format!(
                            "cluster {name}: no EKS token was minted for this entry"
                        )));
                    }
                },
                Credentials::Kubeconfig { .. } => Ok(config),
            }
            .map_err(withheld)?
        }
    };
    // Checked again on the result: credentials go to the entry's server and nowhere else.
    if !same_server(&config.server().to_string(), &entry.server) {
        return Err(configuration_failure(format!(
            "cluster {name}: the configured server is not the entry's server {}",
            entry.server
        )));
    }
    Ok(config)
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
