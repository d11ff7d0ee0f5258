//! Confirmation's lists: the Kustomizations and HelmReleases of one namespace, always read
//! fresh (a confirmation must see the status as it is now), one plain GET each, classified
//! like every other apiserver answer. A kind whose CRD is not installed is a 404 with no
//! `Status`, classified as "API not served": the confirmation decides what it means.

use fluxrelay_core::confirm::objects::{
    HELM_RELEASE_GROUP, HelmRelease, KUSTOMIZATION_GROUP, Kustomization,
};
use fluxrelay_core::outcome::classify::{
    TransportErrorKind, TriggerFailure, classify_apiserver_response, transport_failure,
};
use fluxrelay_core::ports::FluxConsumers;
use fluxrelay_core::registry::ClusterEntry;
use serde_json::Value;

use super::{KubeClusters, configuration_failure};

const MAX_LIST_BYTES: usize = 16 * 1024 * 1024;

impl KubeClusters {
    async fn list_json(
        &self,
        entry: &ClusterEntry,
        namespace: &str,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Result<Vec<Value>, TriggerFailure> {
        let action = format!("list {plural} in {namespace}");
        if namespace.is_empty()
            || !namespace
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(configuration_failure(format!(
                "{action}: not a namespace name"
            )));
        }
        let path = format!("/apis/{group}/{version}/namespaces/{namespace}/{plural}");
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
        match serde_json::from_slice::<Value>(&response.body) {
            Ok(Value::Object(mut list)) => match list.remove("items") {
                Some(Value::Array(items)) => Ok(items),
                Some(Value::Null) | None => Ok(Vec::new()),
                Some(_) => Err(unreadable("the list's items are not an array")),
            },
            _ => Err(unreadable("the answer is not a JSON list")),
        }
    }
}

impl FluxConsumers for KubeClusters {
    async fn kustomizations(
        &self,
        cluster: &ClusterEntry,
        namespace: &str,
    ) -> Result<Vec<Kustomization>, TriggerFailure> {
        let items = self
            .list_json(
                cluster,
                namespace,
                KUSTOMIZATION_GROUP,
                "v1",
                "kustomizations",
            )
            .await?;
        Ok(items.iter().map(Kustomization::from_json).collect())
    }

    async fn helm_releases(
        &self,
        cluster: &ClusterEntry,
        namespace: &str,
    ) -> Result<Vec<HelmRelease>, TriggerFailure> {
        let items = self
            .list_json(cluster, namespace, HELM_RELEASE_GROUP, "v2", "helmreleases")
            .await?;
        Ok(items.iter().map(HelmRelease::from_json).collect())
    }
}
