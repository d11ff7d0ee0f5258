//! What an entry's apiserver client connects to and how it proves who it is: the server
//! every request path is joined to, the CAs it trusts, its client certificate, and the
//! `Authorization` and impersonation headers every request carries.
//!
//! Built from the registry entry alone (`client`); for a whole kubeconfig, from the part
//! of it an entry may use (`kubeconfig`). kube's loader would also run exec plugins and
//! auth providers, read files and refresh tokens, none of which an entry may use, and it
//! brings the rest of kube's client into every function that calls the apiserver: about
//! 2 MB of `dispatch` and `confirm` ("Where `dispatch`'s bytes are", BENCHMARKS.md). What
//! is left is this: kube's own rules for these fields, kept where they matter (a base path
//! in the server, the key formats, Basic before Bearer, the platform's roots without a CA).

use std::sync::Arc;

use base64::Engine as _;
use http::header::{AUTHORIZATION, HeaderName};
use http::{HeaderValue, Uri};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Why a client configuration could not be built. Never carries the input: PEM, YAML and
/// header errors can quote what they failed on, and that is a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("the server is not a valid https or http URL")]
    Server,
    #[error("the CA is not PEM or holds no certificate")]
    CaCertificates,
    #[error("the client certificate is not PEM or holds no certificate")]
    ClientCertificate,
    #[error("the client key is not a PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    ClientKey,
    #[error("the client certificate and key do not load together")]
    ClientIdentity,
    #[error("the TLS server name is not a DNS name or IP address")]
    TlsServerName,
    #[error(
        "a token, user name, password or impersonated name holds characters a header cannot carry"
    )]
    HeaderValue,
    #[error("the platform's root certificates could not be loaded")]
    PlatformRoots,
}

/// The certificates an apiserver's must chain to.
#[derive(Debug)]
pub enum Trust {
    /// The entry's CA (or its kubeconfig's `certificate-authority-data`) only.
    Roots(Vec<CertificateDer<'static>>),
    /// No CA given: the platform's trust store, as kube and client-go do.
    Platform,
}

/// A client certificate chain and its key, for mutual TLS.
pub struct ClientIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("certificates", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// One entry's apiserver: where, whom to trust, and who the client is.
#[derive(Debug)]
pub struct ApiserverConfig {
    server: Uri,
    trust: Trust,
    identity: Option<ClientIdentity>,
    tls_server_name: Option<ServerName<'static>>,
    /// `Authorization` (marked sensitive, so no debug output shows it) and impersonation.
    headers: Vec<(HeaderName, HeaderValue)>,
    default_namespace: String,
}

impl ApiserverConfig {
    /// The server only: no CA (the platform's roots), no credentials.
    pub fn new(server: &url::Url) -> Result<Self, ConfigError> {
        if !matches!(server.scheme(), "https" | "http") || server.host_str().is_none() {
            return Err(ConfigError::Server);
        }
        let server = server
            .as_str()
            .parse::<Uri>()
            .map_err(|_| ConfigError::Server)?;
        Ok(Self {
            server,
            trust: Trust::Platform,
            identity: None,
            tls_server_name: None,
            headers: Vec::new(),
            default_namespace: "default".to_string(),
        })
    }

    /// Trust only the certificates of `pem` (kube reads every `CERTIFICATE` block of it and
    /// skips other blocks).
    pub fn trust_pem(mut self, pem: &[u8]) -> Result<Self, ConfigError> {
        let roots = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| ConfigError::CaCertificates)?;
        if roots.is_empty() {
            return Err(ConfigError::CaCertificates);
        }
        self.trust = Trust::Roots(roots);
        Ok(self)
    }

    /// Present this certificate chain and key (both PEM) when the apiserver asks.
    pub fn identity_pem(mut self, certificate: &[u8], key: &[u8]) -> Result<Self, ConfigError> {
        let chain = CertificateDer::pem_slice_iter(certificate)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| ConfigError::ClientCertificate)?;
        if chain.is_empty() {
            return Err(ConfigError::ClientCertificate);
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|_| ConfigError::ClientKey)?;
        self.identity = Some(ClientIdentity { chain, key });
        Ok(self)
    }

    /// Verify the apiserver's certificate for this name, and send it as SNI, instead of the
    /// server's host.
    pub fn tls_server_name(mut self, name: &str) -> Result<Self, ConfigError> {
        let name =
            ServerName::try_from(name.to_string()).map_err(|_| ConfigError::TlsServerName)?;
        self.tls_server_name = Some(name);
        Ok(self)
    }

    /// `Authorization: Bearer <token>` on every request.
    pub fn bearer(self, token: &str) -> Result<Self, ConfigError> {
        self.authorization(format!("Bearer {token}"))
    }

    /// `Authorization: Basic …` on every request.
    pub fn basic(self, user: &str, password: &str) -> Result<Self, ConfigError> {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.authorization(format!("Basic {encoded}"))
    }

    fn authorization(mut self, value: String) -> Result<Self, ConfigError> {
        let mut value = HeaderValue::try_from(value).map_err(|_| ConfigError::HeaderValue)?;
        value.set_sensitive(true);
        self.headers.retain(|(name, _)| name != AUTHORIZATION);
        self.headers.push((AUTHORIZATION, value));
        Ok(self)
    }

    /// Act as `user` (with `uid`, in `groups`), as kubectl's `--as` does: the apiserver
    /// checks that the client may impersonate them.
    pub fn impersonate(
        mut self,
        user: Option<&str>,
        uid: Option<&str>,
        groups: &[String],
    ) -> Result<Self, ConfigError> {
        let value = |text: &str| HeaderValue::try_from(text).map_err(|_| ConfigError::HeaderValue);
        if let Some(user) = user {
            self.headers
                .push((HeaderName::from_static("impersonate-user"), value(user)?));
        }
        if let Some(uid) = uid {
            self.headers
                .push((HeaderName::from_static("impersonate-uid"), value(uid)?));
        }
        for group in groups {
            self.headers
                .push((HeaderName::from_static("impersonate-group"), value(group)?));
        }
        Ok(self)
    }

    /// The namespace kube's typed API uses when a call names none (`cluster check`).
    pub fn default_namespace(mut self, namespace: &str) -> Self {
        self.default_namespace = namespace.to_string();
        self
    }

    pub fn server(&self) -> &Uri {
        &self.server
    }

    #[cfg(test)]
    pub fn has_identity(&self) -> bool {
        self.identity.is_some()
    }

    pub fn tls_server_name_override(&self) -> Option<&ServerName<'static>> {
        self.tls_server_name.as_ref()
    }

    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    pub fn namespace(&self) -> &str {
        &self.default_namespace
    }

    /// The TLS configuration: the trusted roots, and the client identity if there is one.
    pub fn rustls_client_config(&self) -> Result<rustls::ClientConfig, ConfigError> {
        let builder = match &self.trust {
            Trust::Roots(roots) => {
                let mut store = rustls::RootCertStore::empty();
                for root in roots {
                    store
                        .add(root.clone())
                        .map_err(|_| ConfigError::CaCertificates)?;
                }
                rustls::ClientConfig::builder().with_root_certificates(Arc::new(store))
            }
            Trust::Platform => platform_trust()?,
        };
        match &self.identity {
            Some(identity) => builder
                .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
                .map_err(|_| ConfigError::ClientIdentity),
            None => Ok(builder.with_no_client_auth()),
        }
    }
}

/// The platform's trust store (without a CA, as kube and client-go trust): for entries
/// without a CA and for URLs outside any entry.
pub(super) fn platform_trust()
-> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>, ConfigError>
{
    use rustls_platform_verifier::BuilderVerifierExt as _;
    rustls::ClientConfig::builder()
        .with_platform_verifier()
        .map_err(|_| ConfigError::PlatformRoots)
}

#[cfg(test)]
#[path = "config_test.rs"]
mod tests;
