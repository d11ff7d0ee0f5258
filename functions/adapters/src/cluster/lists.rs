//! Discovery's lists: the GitRepositories, Receivers or objects of one artifact kind of one
//! namespace, one plain GET each, classified like every other apiserver answer. A list is parsed once into the
//! core's types and cached behind an `Arc`: a hit copies no JSON, and holds the cache's
//! lock only to clone a pointer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use fluxrelay_core::flux::artifacts::{
    ArtifactKind, ArtifactObject, ArtifactSpec, OciReference, SourceReference,
};
use fluxrelay_core::flux::{
    GIT_REPOSITORY_GROUP, GitRepository, GitRepositoryRef, ObjectRef, RECEIVER_GROUP, Receiver,
    ReceiverType, ResourceSelector, SourceStatus,
};
use fluxrelay_core::outcome::classify::{
    TransportErrorKind, TriggerFailure, classify_apiserver_response, transport_failure,
};
use fluxrelay_core::registry::ClusterEntry;
use serde_json::Value;

use super::client::{Fingerprint, fingerprint};
use super::{KubeClusters, configuration_failure};

/// A GitRepository or Receiver list, read whole (thousands of objects fit).
const MAX_LIST_BYTES: usize = 16 * 1024 * 1024;

/// The Flux kinds discovery lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum FluxKind {
    GitRepositories,
    Receivers,
    /// One of the kinds an artifact event concerns (core's `ArtifactKind`).
    Artifacts(ArtifactKind),
}

impl FluxKind {
    fn plural(self) -> &'static str {
        match self {
            FluxKind::GitRepositories => "gitrepositories",
            FluxKind::Receivers => "receivers",
            FluxKind::Artifacts(kind) => kind.plural(),
        }
    }

    /// The kind's API group and version.
    fn group_version(self) -> (&'static str, &'static str) {
        match self {
            FluxKind::GitRepositories => (GIT_REPOSITORY_GROUP, "v1"),
            FluxKind::Receivers => (RECEIVER_GROUP, "v1"),
            FluxKind::Artifacts(kind) => (kind.group(), kind.version()),
        }
    }
}

/// Entry name, kind, namespace.
pub(super) type ListKey = (String, FluxKind, String);

/// One list as cached: the objects, and the entry they were read with (a list read with
/// other credentials may hold what these may not see).
#[derive(Clone)]
pub(super) struct CachedList {
    fingerprint: Fingerprint,
    items: Items,
}

#[derive(Clone)]
pub(super) enum Items {
    GitRepositories(Arc<[GitRepository]>),
    Receivers(Arc<[Receiver]>),
    Artifacts(Arc<[ArtifactObject]>),
}

/// A Flux kind discovery lists, read with the core's lenient reader.
pub(super) trait Listed: Sized {
    /// One item of a list of `kind` (a kind of `Self`).
    fn from_item(kind: FluxKind, item: &Value) -> Self;
    fn share(items: Arc<[Self]>) -> Items;
    fn shared(items: &Items) -> Option<Arc<[Self]>>;
    /// Approximate bytes on the heap this object points to (not its own size).
    fn heap_bytes(&self) -> usize;
}

impl Listed for GitRepository {
    fn from_item(_kind: FluxKind, item: &Value) -> Self {
        GitRepository::from_json(item)
    }

    fn share(items: Arc<[Self]>) -> Items {
        Items::GitRepositories(items)
    }

    fn shared(items: &Items) -> Option<Arc<[Self]>> {
        match items {
            Items::GitRepositories(items) => Some(Arc::clone(items)),
            Items::Receivers(_) | Items::Artifacts(_) => None,
        }
    }

    fn heap_bytes(&self) -> usize {
        // Every field named: a new one does not compile until it is counted.
        let GitRepository {
            id,
            labels,
            url,
            git_ref,
            suspend: _,
            artifact_revision,
            status,
        } = self;
        let SourceStatus {
            generation: _,
            observed_generation: _,
            ready: _,
            requested_at,
            last_handled_reconcile_at,
            artifact_updated_at,
        } = status;
        let git_ref = git_ref.as_ref().map_or(0, |git_ref| {
            let GitRepositoryRef {
                branch,
                tag,
                semver,
                name,
                commit,
            } = git_ref;
            [branch, tag, semver, name, commit]
                .into_iter()
                .map(optional_text_bytes)
                .sum()
        });
        object_ref_bytes(id)
            + labels_bytes(labels)
            + optional_text_bytes(url)
            + git_ref
            + optional_text_bytes(artifact_revision)
            + [requested_at, last_handled_reconcile_at, artifact_updated_at]
                .into_iter()
                .map(optional_text_bytes)
                .sum::<usize>()
    }
}

impl Listed for Receiver {
    fn from_item(_kind: FluxKind, item: &Value) -> Self {
        Receiver::from_json(item)
    }

    fn share(items: Arc<[Self]>) -> Items {
        Items::Receivers(items)
    }

    fn shared(items: &Items) -> Option<Arc<[Self]>> {
        match items {
            Items::Receivers(items) => Some(Arc::clone(items)),
            Items::GitRepositories(_) | Items::Artifacts(_) => None,
        }
    }

    fn heap_bytes(&self) -> usize {
        let Receiver {
            id,
            receiver_type,
            events,
            resources,
            suspend: _,
            ready: _,
            webhook_path,
        } = self;
        let receiver_type = match receiver_type {
            ReceiverType::Other(text) => text.capacity(),
            ReceiverType::Generic
            | ReceiverType::GenericHmac
            | ReceiverType::Gitlab
            | ReceiverType::Github => 0,
        };
        let events = events.capacity() * size_of::<String>()
            + events.iter().map(String::capacity).sum::<usize>();
        let resources = resources.capacity() * size_of::<ResourceSelector>()
            + resources
                .iter()
                .map(|resource| {
                    let ResourceSelector {
                        api_version,
                        kind,
                        name,
                        namespace,
                        match_labels,
                    } = resource;
                    optional_text_bytes(api_version)
                        + kind.capacity()
                        + name.capacity()
                        + optional_text_bytes(namespace)
                        + labels_bytes(match_labels)
                })
                .sum::<usize>();
        object_ref_bytes(id)
            + receiver_type
            + events
            + resources
            + optional_text_bytes(webhook_path)
    }
}

impl Listed for ArtifactObject {
    fn from_item(kind: FluxKind, item: &Value) -> Self {
        // Only artifact kinds are listed as `ArtifactObject`s (`KubeClusters::artifact_objects`).
        let kind = match kind {
            FluxKind::Artifacts(kind) => kind,
            FluxKind::GitRepositories | FluxKind::Receivers => ArtifactKind::OciRepository,
        };
        ArtifactObject::from_json(kind, item)
    }

    fn share(items: Arc<[Self]>) -> Items {
        Items::Artifacts(items)
    }

    fn shared(items: &Items) -> Option<Arc<[Self]>> {
        match items {
            Items::Artifacts(items) => Some(Arc::clone(items)),
            Items::GitRepositories(_) | Items::Receivers(_) => None,
        }
    }

    fn heap_bytes(&self) -> usize {
        let ArtifactObject {
            kind: _,
            id,
            labels,
            suspend: _,
            spec,
            artifact_revision,
            status,
        } = self;
        let reference = |reference: &Option<SourceReference>| {
            reference.as_ref().map_or(0, |r| {
                r.kind.capacity() + r.name.capacity() + optional_text_bytes(&r.namespace)
            })
        };
        let spec = match spec {
            ArtifactSpec::OciRepository { url, reference } => {
                let OciReference {
                    digest,
                    semver,
                    semver_filter,
                    tag,
                } = reference;
                [url, digest, semver, semver_filter, tag]
                    .into_iter()
                    .map(optional_text_bytes)
                    .sum()
            }
            ArtifactSpec::HelmRepository { url, oci: _ } => optional_text_bytes(url),
            ArtifactSpec::HelmChart {
                chart,
                version,
                source,
            } => optional_text_bytes(chart) + optional_text_bytes(version) + reference(source),
            ArtifactSpec::HelmRelease {
                chart,
                version,
                source,
                chart_ref,
            } => {
                optional_text_bytes(chart)
                    + optional_text_bytes(version)
                    + reference(source)
                    + reference(chart_ref)
            }
            ArtifactSpec::ImageRepository { image, exclusions } => {
                optional_text_bytes(image)
                    + exclusions.as_ref().map_or(0, |list| {
                        list.capacity() * size_of::<String>()
                            + list.iter().map(String::capacity).sum::<usize>()
                    })
            }
        };
        let SourceStatus {
            generation: _,
            observed_generation: _,
            ready: _,
            requested_at,
            last_handled_reconcile_at,
            artifact_updated_at,
        } = status;
        object_ref_bytes(id)
            + labels_bytes(labels)
            + spec
            + optional_text_bytes(artifact_revision)
            + [requested_at, last_handled_reconcile_at, artifact_updated_at]
                .into_iter()
                .map(optional_text_bytes)
                .sum::<usize>()
    }
}

fn optional_text_bytes(text: &Option<String>) -> usize {
    text.as_ref().map_or(0, String::capacity)
}

fn object_ref_bytes(id: &ObjectRef) -> usize {
    id.namespace.capacity() + id.name.capacity()
}

/// A B-tree node holds up to 11 pairs; a small map is one node.
fn labels_bytes(labels: &BTreeMap<String, String>) -> usize {
    const PAIRS_PER_NODE: usize = 11;
    const NODE_HEADER: usize = 16;
    let nodes = labels.len().div_ceil(PAIRS_PER_NODE);
    nodes * (PAIRS_PER_NODE * 2 * size_of::<String>() + NODE_HEADER)
        + labels
            .iter()
            .map(|(key, value)| key.capacity() + value.capacity())
            .sum::<usize>()
}

/// What a shared list weighs: the `Arc`'s counters, the objects and what they point to.
fn list_bytes<T: Listed>(items: &[T]) -> usize {
    2 * size_of::<usize>()
        + size_of_val(items)
        + items.iter().map(Listed::heap_bytes).sum::<usize>()
}

impl KubeClusters {
    /// GET a list (`Accept: application/json`, at most `MAX_LIST_BYTES` read): the raw
    /// answer, for the caller to classify.
    pub(super) async fn get_list(
        &self,
        entry: &ClusterEntry,
        path: &str,
    ) -> Result<fluxrelay_core::outcome::classify::TriggerResponse, TriggerFailure> {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::ACCEPT,
            http::HeaderValue::from_static("application/json"),
        );
        self.request_apiserver(
            entry,
            http::Method::GET,
            path,
            &headers,
            &[],
            MAX_LIST_BYTES,
        )
        .await
    }

    /// The `T`s of `kind` in one namespace: from the cache when read with the same entry
    /// less than the TTL ago (and not `fresh`), else from the apiserver.
    pub(super) async fn list<T: Listed>(
        &self,
        entry: &ClusterEntry,
        kind: FluxKind,
        namespace: &str,
        fresh: bool,
    ) -> Result<Arc<[T]>, TriggerFailure> {
        let print = fingerprint(entry);
        let key: ListKey = (entry.name.clone(), kind, namespace.to_string());
        if !fresh
            && let Some(cached) = self.lists.get(&key, Instant::now())
            && cached.fingerprint == print
            && let Some(items) = T::shared(&cached.items)
        {
            return Ok(items);
        }
        let action = format!("list {} in {namespace}", kind.plural());
        // Namespaces are DNS labels (the registry validates them); anything else must not
        // reach a request path.
        if namespace.is_empty()
            || !namespace
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(configuration_failure(format!(
                "{action}: not a namespace name"
            )));
        }
        // A plain GET whose status is classified like every other apiserver answer: a 3xx
        // is a redirect not followed, not a list that failed to parse.
        let (group, version) = kind.group_version();
        let path = format!(
            "/apis/{group}/{version}/namespaces/{namespace}/{}",
            kind.plural()
        );
        let response = self.get_list(entry, &path).await?;
        classify_apiserver_response(&response, &action).inspect_err(|failure| {
            if failure.credentials_rejected {
                self.forget_client(entry);
            }
        })?;
        let unreadable =
            |why: &str| transport_failure(TransportErrorKind::Other, &format!("{action}: {why}"));
        if response.body.len() >= MAX_LIST_BYTES {
            return Err(unreadable(
                "the list is larger than fluxrelay reads (16 MiB)",
            ));
        }
        let items: Arc<[T]> = match serde_json::from_slice::<Value>(&response.body) {
            Ok(Value::Object(list)) => match list.get("items") {
                Some(Value::Array(items)) => {
                    items.iter().map(|item| T::from_item(kind, item)).collect()
                }
                Some(Value::Null) | None => Arc::from([]),
                Some(_) => return Err(unreadable("the list's items are not an array")),
            },
            _ => return Err(unreadable("the answer is not a JSON list")),
        };
        let bytes = list_bytes(&items) + 2 * (entry.name.len() + namespace.len());
        self.lists.insert(
            key,
            CachedList {
                fingerprint: print,
                items: T::share(Arc::clone(&items)),
            },
            bytes,
            Instant::now(),
        );
        Ok(items)
    }
}

#[cfg(test)]
#[path = "lists_test.rs"]
mod tests;
