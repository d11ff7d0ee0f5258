//! `fluxrelay cluster add|list|check|migrate`: register a cluster from a kubeconfig context, see
//! the registry, and check that an entry can do everything dispatch needs — each check
//! with its fix. Where entries are kept is `store`; every rule check applies is core's.

mod add;
mod check;
mod list;
mod migrate;
mod store;

pub use add::{AddOptions, add};
pub use check::check;
pub use list::list;
pub use migrate::migrate;
pub use store::Store;

use fluxrelay_core::registry::{ClusterEntry, TriggerMode};

const OK: &str = "✓";
const FAIL: &str = "✗";
const NOTE: &str = "!";

fn mode(entry: &ClusterEntry) -> &'static str {
    match entry.trigger.mode {
        TriggerMode::Receiver => "receiver",
        TriggerMode::Annotate => "annotate",
    }
}
