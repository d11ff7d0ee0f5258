//! The calls dispatch makes to one cluster: read its Flux objects, and trigger one target
//! (a Receiver POST, a GitRepository annotation, or an artifact object's annotation),
//! re-reading a Receiver whose path moved.

use time::OffsetDateTime;
use tracing::Instrument;

use crate::flux::ObjectRef;
use crate::handlers::plan::{
    ClusterView, ReceiverCall, Target, configuration_failure, receiver_call,
};
use crate::matching::select::Freshness;
use crate::outcome::classify::{
    FailureClass, TriggerFailure, classify_apiserver_response, classify_receiver_response,
};
use crate::ports::{Annotator, ApiserverReadiness, FluxDiscovery, TriggerSender};
use crate::push::Push;
use crate::registry::{ClusterEntry, TriggerMode};
use crate::trigger::request::{annotate_patch, requested_at};

/// What a batch needs read: GitRepositories for Git pushes, the entry's artifact kinds
/// for artifact events (`super::cluster::needed_reads`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reads {
    pub git_repositories: bool,
    pub artifacts: bool,
}

/// Read the cluster's GitRepositories, the objects of its artifact kinds (each as `reads`
/// asks) and Receivers (in receiver mode) in every namespace of the entry; `Fresh` bypasses
/// any cache.
pub(super) async fn discover(
    api: &impl FluxDiscovery,
    entry: &ClusterEntry,
    freshness: Freshness,
    reads: Reads,
) -> Result<ClusterView, TriggerFailure> {
    let fresh = freshness == Freshness::Fresh;
    let mut view = ClusterView {
        freshness,
        ..ClusterView::default()
    };
    for namespace in &entry.namespaces {
        if reads.git_repositories {
            view.repositories
                .extend(api.git_repositories(entry, namespace, fresh).await?);
        }
        if reads.artifacts {
            for kind in &entry.trigger.artifact_kinds {
                view.artifacts
                    .extend(api.artifact_objects(entry, namespace, *kind, fresh).await?);
            }
        }
        // Receivers matter only for objects that were read.
        if entry.trigger.mode == TriggerMode::Receiver
            && (reads.git_repositories || reads.artifacts)
        {
            view.receivers
                .extend(api.receivers(entry, namespace, fresh).await?);
        }
    }
    Ok(view)
}

/// A 403 from an apiserver that is not ready is not trusted (it may not have loaded its
/// RBAC yet): the denials become retryable and start no streak.
pub(super) async fn distrust_if_unready<'f>(
    api: &impl ApiserverReadiness,
    entry: &ClusterEntry,
    denials: impl IntoIterator<Item = &'f mut TriggerFailure>,
) {
    let Err(why) = api.apiserver_ready(entry).await else {
        return;
    };
    for failure in denials {
        failure.class = FailureClass::Retryable;
        failure.reason = format!(
            "{} (not trusted: the apiserver is not ready: {why})",
            failure.reason
        );
    }
}

/// What a trigger that did not fail did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Triggered {
    /// The request went out and was answered as accepted.
    Sent,
    /// Nothing went out: the Receiver, read again after a 404, is now skipped (suspended,
    /// say), for `reason`. The pushes that needed it are settled with it as a skip, as if
    /// the plan had skipped it, and it covers no other push.
    NotSent { reason: String },
}

/// Trigger one target with `push`.
pub(super) async fn trigger<C>(
    api: &C,
    entry: &ClusterEntry,
    view: &ClusterView,
    target: &Target,
    push: &Push,
    now: OffsetDateTime,
) -> Result<Triggered, TriggerFailure>
where
    C: FluxDiscovery + TriggerSender + Annotator,
{
    let span = tracing::info_span!(
        "trigger",
        key = %push.key,
        project = %push.project.path,
        git_ref = %push.git_ref,
        target = %target,
    );
    trigger_in_span(api, entry, view, target, push, now)
        .instrument(span)
        .await
}

async fn trigger_in_span<C>(
    api: &C,
    entry: &ClusterEntry,
    view: &ClusterView,
    target: &Target,
    push: &Push,
    now: OffsetDateTime,
) -> Result<Triggered, TriggerFailure>
where
    C: FluxDiscovery + TriggerSender + Annotator,
{
    match target {
        Target::Annotate { repository } => {
            let patch = annotate_patch(&requested_at(now));
            let response = api.annotate(entry, repository, &patch).await?;
            classify_apiserver_response(&response, &format!("patch gitrepository {repository}"))
                .map(|()| Triggered::Sent)
        }
        Target::AnnotateArtifact { kind, object } => {
            let patch = annotate_patch(&requested_at(now));
            let response = api.annotate_object(entry, *kind, object, &patch).await?;
            classify_apiserver_response(&response, &format!("patch {} {object}", kind.plural()))
                .map(|()| Triggered::Sent)
        }
        Target::Receiver { receiver, .. } => {
            match send_to_receiver(api, entry, view, receiver, push).await {
                Err(failure) if failure.class == FailureClass::Rediscover => {
                    rediscover_and_resend(api, entry, receiver, push, failure).await
                }
                other => other,
            }
        }
    }
}

async fn send_to_receiver(
    api: &impl TriggerSender,
    entry: &ClusterEntry,
    view: &ClusterView,
    id: &ObjectRef,
    push: &Push,
) -> Result<Triggered, TriggerFailure> {
    let Some(receiver) = view.receiver(id) else {
        return Err(configuration_failure(
            FailureClass::Permanent,
            format!("Receiver {id} disappeared during dispatch"),
        ));
    };
    match receiver_call(entry, receiver, push) {
        ReceiverCall::Ready(request) => {
            let response = api.send(entry, &request).await?;
            classify_receiver_response(&response).map(|()| Triggered::Sent)
        }
        ReceiverCall::Skip(reason) => Ok(Triggered::NotSent {
            reason: format!("read again after a 404: {reason}"),
        }),
        ReceiverCall::Problem(failure) => Err(failure),
    }
}

/// A Receiver 404 usually means its token, and so its path, changed: read the Receiver
/// again and resend once if the path moved; otherwise the 404 is final.
async fn rediscover_and_resend<C>(
    api: &C,
    entry: &ClusterEntry,
    id: &ObjectRef,
    push: &Push,
    first: TriggerFailure,
) -> Result<Triggered, TriggerFailure>
where
    C: FluxDiscovery + TriggerSender,
{
    let permanent = |reason: String| TriggerFailure {
        class: FailureClass::Permanent,
        reason,
        ..first.clone()
    };
    let receivers = api.receivers(entry, &id.namespace, true).await?;
    let view = ClusterView {
        receivers,
        freshness: Freshness::Fresh,
        ..ClusterView::default()
    };
    let Some(fresh) = view.receiver(id) else {
        return Err(permanent(format!(
            "{}; Receiver {id} no longer exists",
            first.reason
        )));
    };
    let old_path = fresh.webhook_path.clone();
    match send_to_receiver(api, entry, &view, id, push).await {
        Err(again) if again.class == FailureClass::Rediscover => Err(permanent(format!(
            "{} (path {} re-read from the cluster, still not found)",
            again.reason,
            old_path.unwrap_or_default()
        ))),
        other => other,
    }
}
