//! The cluster registry of `fluxrelay serve`: entries read from its config file and cluster
//! files at start-up (and validated there, so a broken entry stops the process before it
//! listens instead of silently missing its pushes). Changes take effect on restart.

use std::sync::Arc;

use fluxrelay_core::ports::{ClusterRegistry, RegistryReadError};
use fluxrelay_core::registry::ClusterEntry;
use fluxrelay_core::registry::ClusterListing;

#[derive(Debug, Clone)]
pub struct FileRegistry {
    /// Every entry validated at start-up, so none is unusable.
    listing: Arc<ClusterListing>,
}

impl FileRegistry {
    pub fn new(entries: Vec<ClusterEntry>) -> Self {
        Self {
            listing: Arc::new(ClusterListing::usable(entries)),
        }
    }

    pub fn entries(&self) -> &[ClusterEntry] {
        &self.listing.entries
    }
}

impl ClusterRegistry for FileRegistry {
    async fn clusters(&self) -> Result<Arc<ClusterListing>, RegistryReadError> {
        Ok(Arc::clone(&self.listing))
    }

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
