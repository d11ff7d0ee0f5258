//! The cluster registry of `fluxrelay serve`: entries read from its config file and cluster
//! files at start-up (and validated there, so a broken entry stops the process before it
//! listens instead of silently missing its pushes). Changes take effect on restart.

use std::collections::HashMap;
use std::sync::Arc;

use fluxrelay_core::ports::{ClusterRegistry, RegistryReadError, RouteTable};
use fluxrelay_core::registry::{ClusterEntry, ClusterListing, RouteListing};

#[derive(Debug, Clone)]
pub struct FileRegistry {
    /// Every entry validated at start-up, so none is unusable.
    listing: Arc<ClusterListing>,
    routes: Arc<RouteListing>,
    /// Each name's first entry, by position: dispatch looks a cluster up per batch, and a
    /// scan of the entries made that quadratic in the fleet.
    positions: Arc<HashMap<String, usize>>,
}

impl FileRegistry {
    pub fn new(entries: Vec<ClusterEntry>) -> Self {
        let listing = ClusterListing::usable(entries);
        let mut positions = HashMap::with_capacity(listing.entries.len());
        for (position, entry) in listing.entries.iter().enumerate() {
            positions.entry(entry.name.clone()).or_insert(position);
        }
        Self {
            routes: Arc::new(listing.routes()),
            listing: Arc::new(listing),
            positions: Arc::new(positions),
        }
    }

    pub fn entries(&self) -> &[ClusterEntry] {
        &self.listing.entries
    }
}

impl RouteTable for FileRegistry {
    async fn routes(&self) -> Result<Arc<RouteListing>, RegistryReadError> {
        Ok(Arc::clone(&self.routes))
    }
}

impl ClusterRegistry for FileRegistry {
    async fn cluster(&self, name: &str) -> Result<Option<Arc<ClusterEntry>>, RegistryReadError> {
        Ok(self
            .positions
            .get(name)
            .and_then(|position| self.listing.entries.get(*position))
            .map(|entry| Arc::new(entry.clone())))
    }

    /// Rejected credentials cannot be re-read from a file without a restart; the dispatch
    /// retries (and dead-letters when attempts run out), and the log says what to do.
    fn invalidate(&self, name: &str) {
        tracing::warn!(
            cluster = %name,
            "the cluster's credentials were rejected; fix its entry and restart fluxrelay serve"
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use fluxrelay_core::registry::{Credentials, TriggerConfig};
    use fluxrelay_core::secret::Secret;

    use super::*;

    fn entry(name: &str, server: &str) -> ClusterEntry {
        ClusterEntry {
            name: name.to_string(),
            server: url::Url::parse(server).unwrap(),
            ca: None,
            credentials: Credentials::Token(Secret::new("t")),
            namespaces: vec!["flux-system".to_string()],
            host_aliases: BTreeMap::new(),
            subscriptions: Vec::new(),
            trigger: TriggerConfig::default(),
            confirm: None,
        }
    }

    #[tokio::test]
    async fn a_cluster_is_found_by_name_and_the_first_of_a_name_wins() {
        let registry = FileRegistry::new(vec![
            entry("a", "https://a.example.com"),
            entry("b", "https://b.example.com"),
            entry("a", "https://second-a.example.com"),
        ]);
        let found = |name: &'static str| {
            let registry = registry.clone();
            async move { registry.cluster(name).await.unwrap() }
        };
        assert_eq!(
            found("b").await.unwrap().server.as_str(),
            "https://b.example.com/"
        );
        assert_eq!(
            found("a").await.unwrap().server.as_str(),
            "https://a.example.com/"
        );
        assert!(found("c").await.is_none());
        assert!(found("").await.is_none());
    }
}
