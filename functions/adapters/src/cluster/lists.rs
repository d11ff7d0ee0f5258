//! Discovery's lists: the GitRepositories or Receivers of one namespace, one plain GET
//! each, classified like every other apiserver answer, and reused for a short time.

use std::sync::PoisonError;
use std::time::Instant;

use fluxrelay_core::flux::{GIT_REPOSITORY_GROUP, RECEIVER_GROUP};
use fluxrelay_core::outcome::classify::{
    TransportErrorKind, TriggerFailure, classify_apiserver_response, transport_failure,
};
use fluxrelay_core::registry::ClusterEntry;
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

use super::client::{Fingerprint, fingerprint};
use super::{KubeClusters, configuration_failure};

/// A GitRepository or Receiver list, read whole (thousands of objects fit).
const MAX_LIST_BYTES: usize = 16 * 1024 * 1024;

/// The two Flux kinds discovery lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum FluxKind {
    GitRepositories,
    Receivers,
}

impl FluxKind {
    fn plural(self) -> &'static str {
        match self {
            FluxKind::GitRepositories => "gitrepositories",
            FluxKind::Receivers => "receivers",
        }
    }

    fn resource(self) -> ApiResource {
        let (group, kind) = match self {
            FluxKind::GitRepositories => (GIT_REPOSITORY_GROUP, "GitRepository"),
            FluxKind::Receivers => (RECEIVER_GROUP, "Receiver"),
        };
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", kind), self.plural())
    }
}

pub(super) struct CachedList {
    fingerprint: Fingerprint,
    read_at: Instant,
    items: Vec<Value>,
}

impl KubeClusters {
    pub(super) async fn list(
        &self,
        entry: &ClusterEntry,
        kind: FluxKind,
        namespace: &str,
        fresh: bool,
    ) -> Result<Vec<Value>, TriggerFailure> {
        let print = fingerprint(entry);
        let key = (entry.name.clone(), kind, namespace.to_string());
        if !fresh
            && let Some(cached) = self
                .lists
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&key)
            && cached.fingerprint == print
            && cached.read_at.elapsed() < self.list_ttl
        {
            return Ok(cached.items.clone());
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
        let resource = kind.resource();
        let path = format!(
            "/apis/{}/{}/namespaces/{namespace}/{}",
            resource.group, resource.version, resource.plural
        );
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::ACCEPT,
            http::HeaderValue::from_static("application/json"),
        );
        let response = self
            .request_apiserver(
                entry,
                http::Method::GET,
                &path,
                &headers,
                &[],
                MAX_LIST_BYTES,
            )
            .await?;
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
        let items = match serde_json::from_slice::<Value>(&response.body) {
            Ok(Value::Object(mut list)) => match list.remove("items") {
                Some(Value::Array(items)) => items,
                Some(Value::Null) | None => Vec::new(),
                Some(_) => return Err(unreadable("the list's items are not an array")),
            },
            _ => return Err(unreadable("the answer is not a JSON list")),
        };
        self.lists
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                key,
                CachedList {
                    fingerprint: print,
                    read_at: Instant::now(),
                    items: items.clone(),
                },
            );
        Ok(items)
    }
}
