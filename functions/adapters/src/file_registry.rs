//! The cluster registry of `fluxrelay serve`: entries read from its config file and cluster
//! files at start-up (and validated there, so a broken entry stops the process before it
//! listens instead of silently missing its pushes). Changes take effect on restart.

use std::sync::Arc;

use fluxrelay_core::ports::{ClusterRegistry, RegistryReadError, RouteTable};
use fluxrelay_core::registry::{ClusterEntry, ClusterListing, RouteListing};

#[derive(Debug, Clone)]
pub struct FileRegistry {
    /// Every entry validated at start-up, so none is unusable.
    listing: Arc<ClusterListing>,
    routes: Arc<RouteListing>,
}

impl FileRegistry {
    pub fn new(entries: Vec<ClusterEntry>) -> Self {
        let listing = ClusterListing::usable(entries);
        Self {
            routes: Arc::new(listing.routes()),
            listing: Arc::new(listing),
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
            .listing
            .entries
            .iter()
            .find(|entry| entry.name == name)
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
