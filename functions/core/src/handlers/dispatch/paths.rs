//! Dispatches route marked `verify_paths` (it holds no GitLab token, so it sent the push to
//! every `paths` subscriber its other rules take): take the changed paths from GitLab's
//! compare, once per push in the batch, and keep only the dispatches whose cluster's
//! subscriptions take the push with them. Unknown paths (a failed compare) take it; no token
//! for the instance leaves the payload's paths.

use std::collections::BTreeMap;

use futures_util::future::join_all;

use crate::gitlab_api::compare::{Compared, compare_push};
use crate::handlers::plan::Skip;
use crate::ports::{ClusterRegistry, GitLabApi, QueueMessage};
use crate::push::Dispatch;
use crate::routing::route_by;

type Group<'m> = Vec<(&'m QueueMessage, Dispatch)>;

/// The groups with the dispatches that stay, and those whose cluster does not take the
/// push after all (each with why).
pub(super) async fn verify<'m>(
    registry: &impl ClusterRegistry,
    gitlab: &impl GitLabApi,
    mut by_cluster: BTreeMap<String, Group<'m>>,
) -> (
    BTreeMap<String, Group<'m>>,
    Vec<(&'m QueueMessage, Dispatch, Skip)>,
) {
    let mut pushes: BTreeMap<String, crate::push::Push> = BTreeMap::new();
    for (_, dispatch) in by_cluster.values().flatten() {
        if dispatch.verify_paths {
            pushes
                .entry(dispatch.push.key.clone())
                .or_insert_with(|| dispatch.push.clone());
        }
    }
    if pushes.is_empty() {
        return (by_cluster, Vec::new());
    }
    let compared: BTreeMap<String, Compared> = join_all(
        pushes
            .into_iter()
            .map(|(key, push)| async move { (key, compare_push(gitlab, &push).await) }),
    )
    .await
    .into_iter()
    .collect();

    let mut unsubscribed = Vec::new();
    for (name, group) in &mut by_cluster {
        if !group.iter().any(|(_, d)| d.verify_paths) {
            continue;
        }
        // An entry that cannot be read now is left to the cluster's own handling (which
        // fails or retries it); a push is never dropped on a read failure.
        let Ok(Some(entry)) = registry.cluster(name).await else {
            continue;
        };
        let mut kept = Vec::with_capacity(group.len());
        for (message, mut dispatch) in std::mem::take(group) {
            if dispatch.verify_paths
                && let Some(result) = compared.get(&dispatch.push.key)
            {
                match result {
                    Compared::NotConfigured => {}
                    Compared::Paths(paths) => dispatch.push.changed_paths = Some(paths.clone()),
                    Compared::Failed { .. } => dispatch.push.changed_paths = None,
                }
                if route_by(&dispatch.push, &entry.subscriptions).is_err() {
                    let skip = Skip {
                        object: format!("cluster {name}"),
                        reason: format!(
                            "not subscribed after all: {} match none of its subscriptions",
                            match result {
                                Compared::Paths(_) => "the changed paths from GitLab's compare",
                                _ =>
                                    "the payload's changed paths (no GitLab token for the instance)",
                            }
                        ),
                    };
                    unsubscribed.push((message, dispatch, skip));
                    continue;
                }
            }
            kept.push((message, dispatch));
        }
        *group = kept;
    }
    by_cluster.retain(|_, group| !group.is_empty());
    (by_cluster, unsubscribed)
}
