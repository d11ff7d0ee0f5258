//! OCI repository identity: where an artifact lives, as `registry/repository`.
//!
//! Every comparison of an artifact's location (a registry notification, an OCIRepository's
//! `spec.url`, an OCI HelmRepository's, an ImageRepository's `spec.image`) goes through
//! [`OciLocation::parse`] or [`OciLocation::from_parts`], so "is this the pushed
//! repository?" has one answer everywhere. The rules are go-containerregistry's
//! (`pkg/name`), which Flux's source- and image-reflector-controllers use: the first path
//! component is a registry only when it is `localhost` or holds a `.` or a `:`; otherwise
//! the whole reference is a Docker Hub repository; `docker.io`, `index.docker.io` and
//! `registry-1.docker.io` are one registry; a one-component Docker Hub repository is
//! `library/<name>`. A port is part of the registry (`registry:5000` is not `registry`).

use std::collections::BTreeMap;
use std::fmt;

/// The registry name go-containerregistry gives Docker Hub.
pub const DOCKER_HUB: &str = "index.docker.io";
/// Names under which Docker Hub is reached; all become [`DOCKER_HUB`].
const DOCKER_HUB_NAMES: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];
/// Docker Hub's namespace for one-component names (`alpine` is `library/alpine`).
const DOCKER_HUB_LIBRARY: &str = "library/";
/// Flux's OCIRepository and OCI HelmRepository URLs start with this.
pub const OCI_SCHEME: &str = "oci://";
/// Longest reference accepted; real ones are far shorter.
pub const MAX_REFERENCE_BYTES: usize = 2048;
/// Longest digest accepted (a sha512 digest is 135 bytes).
const MAX_DIGEST_BYTES: usize = 256;

/// Where an artifact lives: a registry (lower-case `host[:port]`, Docker Hub under one
/// name) and a repository path (lower case, components joined by single `/`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OciLocation {
    pub registry: String,
    pub repository: String,
}

impl fmt::Display for OciLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

/// How a reference may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferenceForm {
    /// `oci://host/path`: an OCIRepository's or OCI HelmRepository's `spec.url`.
    OciUrl,
    /// `host/path` or a Docker Hub short name, no scheme: an ImageRepository's `spec.image`.
    Image,
}

/// Why a reference names no repository. Messages never echo the reference: a URL may
/// carry credentials in its user info.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OciReferenceError {
    #[error("is empty, too long, or holds whitespace or control characters")]
    NotText,
    #[error("does not start with oci://")]
    NotOciUrl,
    #[error("has a URL scheme; an image is written without one")]
    HasScheme,
    #[error("names a tag or a digest; Flux refuses one here")]
    HasTagOrDigest,
    #[error("has no valid registry host")]
    BadRegistry,
    #[error("has no valid repository path")]
    BadRepository,
}

impl OciLocation {
    /// A reference as a Flux object writes it (`form` says which way), without tag or digest.
    pub fn parse(text: &str, form: ReferenceForm) -> Result<Self, OciReferenceError> {
        if text.is_empty()
            || text.len() > MAX_REFERENCE_BYTES
            || text
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
        {
            return Err(OciReferenceError::NotText);
        }
        let rest = match form {
            ReferenceForm::OciUrl => text
                .strip_prefix(OCI_SCHEME)
                .ok_or(OciReferenceError::NotOciUrl)?,
            ReferenceForm::Image if text.contains("://") => {
                return Err(OciReferenceError::HasScheme);
            }
            ReferenceForm::Image => text,
        };
        let (registry, repository) = match rest.split_once('/') {
            Some((first, path)) if is_registry_component(first) => (first, path),
            _ => (DOCKER_HUB, rest),
        };
        // After the registry, a `:` is a tag and an `@` a digest (go-containerregistry
        // splits the same way), which Flux refuses in these fields.
        if repository.contains([':', '@']) {
            return Err(OciReferenceError::HasTagOrDigest);
        }
        Self::from_parts(registry, repository)
    }

    /// A location from a registry host and a repository path as a registry reports them
    /// (`request.host` and `target.repository` of a notification, Harbor's external host
    /// and `repo_full_name`), normalised like [`OciLocation::parse`].
    pub fn from_parts(registry: &str, repository: &str) -> Result<Self, OciReferenceError> {
        let registry = normalize_registry(registry).ok_or(OciReferenceError::BadRegistry)?;
        let mut repository = repository.to_ascii_lowercase();
        if !is_repository_path(&repository) {
            return Err(OciReferenceError::BadRepository);
        }
        if registry == DOCKER_HUB && !repository.contains('/') {
            repository.insert_str(0, DOCKER_HUB_LIBRARY);
        }
        Ok(Self {
            registry,
            repository,
        })
    }

    /// The same location with its registry replaced by the one `aliases` names for it
    /// (alias `host[:port]` → canonical `host[:port]`, compared in lower case); one step
    /// only, so a configuration cannot loop.
    pub fn canonical(self, aliases: &BTreeMap<String, String>) -> Self {
        let target = aliases.iter().find_map(|(alias, target)| {
            (normalize_registry(alias).as_deref() == Some(self.registry.as_str()))
                .then(|| normalize_registry(target))
                .flatten()
        });
        match target {
            Some(registry) => Self { registry, ..self },
            None => self,
        }
    }

    /// Whether this repository is `project` or lies below it (`group/app/manifests` lies
    /// below `group/app`), on the same registry: a GitLab project's container registry
    /// holds its own path and any path under it.
    pub fn within(&self, project: &OciLocation) -> bool {
        self.registry == project.registry
            && (self.repository == project.repository
                || self
                    .repository
                    .strip_prefix(project.repository.as_str())
                    .is_some_and(|rest| rest.starts_with('/')))
    }
}

/// go-containerregistry's test: the first component is a registry when it is `localhost`
/// or holds a `.` or a `:`.
fn is_registry_component(component: &str) -> bool {
    component == "localhost" || component.contains(['.', ':'])
}

/// A registry as lower-case `host[:port]`, Docker Hub's names as one; `None` when it is not
/// a host name, an IPv4 or bracketed IPv6 address, with an optional numeric port.
pub fn normalize_registry(registry: &str) -> Option<String> {
    let registry = registry.to_ascii_lowercase();
    let (host, port) = match registry.rsplit_once(':') {
        // `[::1]` alone has colons but no port.
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (registry.as_str(), None),
    };
    let port_ok = port.is_none_or(|port| {
        (1..=5).contains(&port.len())
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|port| port > 0)
    });
    let host = host.trim_end_matches('.');
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    };
    if !(port_ok && host_ok) {
        return None;
    }
    if port.is_none() && DOCKER_HUB_NAMES.contains(&host) {
        return Some(DOCKER_HUB.to_string());
    }
    Some(match port {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
}

/// The distribution specification's repository name, lower-cased first: components of
/// `[a-z0-9]` separated by `.`, `_`, `__` or runs of `-`, joined by `/`; at most 255 bytes.
fn is_repository_path(path: &str) -> bool {
    !path.is_empty() && path.len() <= 255 && path.split('/').all(is_path_component)
}

fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !(bytes.first().is_some_and(alnum) && bytes.last().is_some_and(alnum)) {
        return false;
    }
    // Between alphanumeric runs: one `.`, one or two `_`, or any number of `-`.
    let mut separator = String::new();
    for &b in bytes {
        if alnum(&b) {
            if !matches!(separator.as_str(), "" | "." | "_" | "__")
                && !separator.bytes().all(|s| s == b'-')
            {
                return false;
            }
            separator.clear();
        } else if matches!(b, b'.' | b'_' | b'-') {
            separator.push(char::from(b));
        } else {
            return false;
        }
    }
    true
}

/// A digest as the OCI image specification writes one: `algorithm ":" encoded`, the
/// algorithm `[a-z0-9]+` components joined by `+._-`, the encoded part `[a-zA-Z0-9=_-]+`,
/// at most 256 bytes. Registries send `sha256:<64 hex>`; the grammar is checked rather than
/// the length because AWS's own documented ECR event carries a shortened digest.
pub fn is_digest(text: &str) -> bool {
    let Some((algorithm, encoded)) = text.split_once(':') else {
        return false;
    };
    let component = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    text.len() <= MAX_DIGEST_BYTES
        && algorithm.split(['+', '.', '_', '-']).all(component)
        && !encoded.is_empty()
        && encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
}

/// An OCI tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}` (distribution specification).
pub fn is_tag(text: &str) -> bool {
    let bytes = text.as_bytes();
    (1..=128).contains(&bytes.len())
        && bytes
            .first()
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
#[path = "oci_test.rs"]
mod tests;
