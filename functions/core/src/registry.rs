//! The cluster registry entry: one per cluster, a Secrets Manager secret (or a local file).
//! Parsing and validation live in `registry/parse.rs`; this file is the validated shape.

pub mod index;
pub mod last_good;
mod parse;

use std::collections::{BTreeMap, BTreeSet};

pub use parse::{FieldError, RegistryError};

use crate::flux::ObjectRef;
use crate::flux::artifacts::ArtifactKind;
use crate::secret::Secret;
use crate::subscriptions::Subscription;

pub const DEFAULT_NAMESPACE: &str = "flux-system";
pub const DEFAULT_RECEIVER_PROXY: &str =
    "/api/v1/namespaces/flux-system/services/http:webhook-receiver:80/proxy";

/// A cluster name: 1 to 63 characters of `A-Z`, `a-z`, `0-9`, `-`, `_` or `.` (so it is also
/// a valid FIFO message group id).
pub fn is_valid_cluster_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[derive(Debug, Clone)]
pub struct ClusterEntry {
    pub name: String,
    /// The apiserver: always `https`. Cluster credentials go to this origin and nowhere else.
    pub server: url::Url,
    /// PEM bundle that signs the apiserver certificate; `None` means the system roots.
    pub ca: Option<String>,
    pub credentials: Credentials,
    /// Namespaces in which GitRepositories and Receivers are discovered.
    pub namespaces: Vec<String>,
    /// Alternative Git host names (alias → canonical), e.g. an SSH host that differs from
    /// the web host. Applied to both sides before URLs are compared.
    pub host_aliases: BTreeMap<String, String>,
    /// A push goes to this cluster when any subscription matches. Without subscriptions in
    /// the entry: every Git push and every artifact push.
    pub subscriptions: Vec<Subscription>,
    pub trigger: TriggerConfig,
    /// Follow each delivered push until the cluster has applied it (`confirm` in the
    /// entry); `None`: confirmation is off for this cluster, and its Role needs nothing
    /// more (`docs/design.md`, "Confirmation").
    pub confirm: Option<ConfirmOptions>,
}

/// What confirmation reads in a cluster. Kustomizations always; HelmReleases unless
/// turned off (then the Role needs no `list` on them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfirmOptions {
    pub helm_releases: bool,
}

impl Default for ConfirmOptions {
    fn default() -> Self {
        Self {
            helm_releases: true,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Credentials {
    Token(Secret),
    ClientCertificate {
        certificate_pem: String,
        key_pem: Secret,
    },
    /// A `k8s-aws-v1.` token minted from the function's own IAM role: no static secret.
    Eks {
        cluster: String,
        region: String,
    },
    /// A whole kubeconfig; its context's server must be this entry's `server`.
    Kubeconfig {
        kubeconfig: Secret,
        context: Option<String>,
    },
}

impl Credentials {
    pub fn kind(&self) -> &'static str {
        match self {
            Credentials::Token(_) => "token",
            Credentials::ClientCertificate { .. } => "client_cert",
            Credentials::Eks { .. } => "eks",
            Credentials::Kubeconfig { .. } => "kubeconfig",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TriggerMode {
    /// POST to the Flux Receivers that select a matched GitRepository.
    #[default]
    Receiver,
    /// Merge-patch `reconcile.fluxcd.io/requestedAt` on the matched GitRepository.
    Annotate,
}

/// Where Receiver webhooks are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiverEndpoint {
    /// A service-proxy path on the entry's own apiserver, sent with cluster credentials:
    /// `/api/v1/namespaces/<ns>/services/<id>/proxy`.
    ServiceProxy(String),
    /// An absolute `http(s)` URL (e.g. an Ingress), sent without cluster credentials.
    Absolute(url::Url),
}

impl ReceiverEndpoint {
    /// The request target for a webhook path: the base and the path joined with nothing
    /// added, because the Receiver matches the exact request URI.
    pub fn target(&self, webhook_path: &str) -> String {
        match self {
            ReceiverEndpoint::ServiceProxy(base) => format!("{base}{webhook_path}"),
            ReceiverEndpoint::Absolute(url) => {
                format!("{}{webhook_path}", url.as_str().trim_end_matches('/'))
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct TriggerConfig {
    pub mode: TriggerMode,
    pub receiver_endpoint: ReceiverEndpoint,
    /// Secret tokens of `gitlab`, `generic-hmac` and `github` Receivers, by `namespace/name`.
    pub receiver_tokens: BTreeMap<ObjectRef, Secret>,
    /// The Flux kinds dispatch reads and triggers for artifact events (registry pushes,
    /// project pipelines); empty (the default) for none, so a cluster whose Role only
    /// covers GitRepositories never lists anything else.
    pub artifact_kinds: BTreeSet<ArtifactKind>,
    /// Registries reached under several names: alias `host[:port]` → canonical
    /// `host[:port]`, applied to both sides before artifact locations are compared.
    pub registry_aliases: BTreeMap<String, String>,
}

impl Default for TriggerConfig {
    fn default() -> Self {
        Self {
            mode: TriggerMode::Receiver,
            receiver_endpoint: ReceiverEndpoint::ServiceProxy(DEFAULT_RECEIVER_PROXY.to_string()),
            receiver_tokens: BTreeMap::new(),
            artifact_kinds: BTreeSet::new(),
            registry_aliases: BTreeMap::new(),
        }
    }
}

/// What a registry holds, as `ClusterRegistry::clusters` (ports) read it.
#[derive(Debug, Clone, Default)]
pub struct ClusterListing {
    /// The entries that validate, in name order.
    pub entries: Vec<ClusterEntry>,
    /// Clusters whose entry is there but cannot be used: it does not validate, or it could
    /// not be read. `cluster(name)` answers the reason (`Invalid` or `Unavailable`) for
    /// each. Their subscriptions are unknown, so route sends them every push and dispatch
    /// dead-letters it with that reason, rather than the push being skipped in silence.
    /// Each name is fit to be a `Dispatch` cluster (and so a FIFO message group), sorted,
    /// each once, and never the name of one of `entries`.
    pub unusable: Vec<String>,
}

impl ClusterListing {
    /// What route needs of it.
    pub fn routes(&self) -> RouteListing {
        RouteListing {
            routes: self
                .entries
                .iter()
                .map(|entry| ClusterRoute {
                    name: entry.name.clone(),
                    subscriptions: entry.subscriptions.clone(),
                })
                .collect(),
            unusable: self.unusable.clone(),
        }
    }

    /// A registry in which every entry can be used.
    pub fn usable(entries: Vec<ClusterEntry>) -> Self {
        Self {
            entries,
            unusable: Vec::new(),
        }
    }

    /// How many entries can be used (`unusable` not counted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No entry can be used (there may still be unusable ones).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What route needs of a cluster: its name and subscriptions, nothing that reaches it.
#[derive(Debug, Clone)]
pub struct ClusterRoute {
    pub name: String,
    pub subscriptions: Vec<Subscription>,
}

/// What route reads (`ports::RouteTable`): the clusters and their subscriptions.
#[derive(Debug, Clone, Default)]
pub struct RouteListing {
    /// In registry order.
    pub routes: Vec<ClusterRoute>,
    /// Clusters whose subscriptions are unknown because their entry does not validate:
    /// route sends them every push, and dispatch dead-letters it with the entry's problem.
    /// A cluster whose entry merely could not be *read* is never here: unreadable is not
    /// unfiltered (its last good subscriptions stay in `routes`). Names fit to be a FIFO
    /// message group, sorted, each once, none of `routes`.
    pub unusable: Vec<String>,
}

/// Whether an entry's `server` is the endpoint a cluster's provider reports (EKS
/// `DescribeCluster`): the same https origin, compared as URLs (host case, an explicit
/// default port and a trailing `/` do not matter; anything else does). A credential minted
/// for that cluster goes only to its own endpoint.
pub fn same_endpoint(server: &url::Url, endpoint: &str) -> bool {
    let Ok(endpoint) = url::Url::parse(endpoint) else {
        return false;
    };
    let plain = |url: &url::Url| {
        url.scheme() == "https"
            && url.username().is_empty()
            && url.password().is_none()
            && url.query().is_none()
            && url.fragment().is_none()
            && matches!(url.path(), "" | "/")
    };
    plain(server)
        && plain(&endpoint)
        && server.host_str().map(str::to_ascii_lowercase)
            == endpoint.host_str().map(str::to_ascii_lowercase)
        && server.port_or_known_default() == endpoint.port_or_known_default()
}

#[cfg(test)]
#[path = "registry/endpoint_test.rs"]
mod endpoint_tests;
