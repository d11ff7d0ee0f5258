//! An artifact event's share of a plan: the OCIRepositories, HelmCharts, HelmReleases and
//! ImageRepositories it triggers in one cluster (`matching::artifacts` decides which),
//! called through the Receivers that select them or annotated, as the entry's mode says.

use std::collections::BTreeMap;

use super::{ClusterView, PushPlan, Target, add, add_receiver_targets, add_skip};
use crate::flux::artifacts::ArtifactObject;
use crate::matching::artifacts::{ArtifactVerdict, artifact_scopes, artifact_verdicts};
use crate::matching::select::receiver_selects_object;
use crate::push::{Push, PushEvent};
use crate::registry::{ClusterEntry, TriggerMode};

/// Where a plan says the entry reads no artifact kinds.
const NO_KINDS_OBJECT: &str = "cluster";

pub(super) fn plan_artifact_sources(
    entry: &ClusterEntry,
    view: &ClusterView,
    push: &Push,
    plan: &mut PushPlan,
) {
    if matches!(push.event, PushEvent::Push) {
        return;
    }
    if entry.trigger.artifact_kinds.is_empty() {
        // A tag push is a Git push too; only say so for events that are nothing else.
        if push.event != PushEvent::TagPush {
            add_skip(
                plan,
                NO_KINDS_OBJECT.to_string(),
                "the registry entry's trigger.artifact_kinds is empty: this cluster reads no OCIRepository, HelmRepository, HelmChart, HelmRelease or ImageRepository".to_string(),
            );
        }
        return;
    }
    // Across scopes (two subscriptions may name two registries of one project), an object
    // is triggered when any scope triggers it, else skipped with its first reason.
    let mut decided: BTreeMap<String, (&ArtifactObject, ArtifactVerdict)> = BTreeMap::new();
    for scope in artifact_scopes(entry, push) {
        let verdicts = artifact_verdicts(
            &view.artifacts,
            &scope,
            &entry.trigger.registry_aliases,
            &push.received_at,
            view.freshness,
        );
        for (object, verdict) in verdicts {
            let slot = decided
                .entry(object.object())
                .or_insert((object, verdict.clone()));
            if matches!(slot.1, ArtifactVerdict::Skip(_))
                && !matches!(verdict, ArtifactVerdict::Skip(_))
            {
                slot.1 = verdict;
            }
        }
    }
    for (object, verdict) in decided.into_values() {
        match verdict {
            ArtifactVerdict::Skip(skip) => add_skip(plan, object.object(), skip.to_string()),
            ArtifactVerdict::LookAgain => {
                plan.look_again = true;
                trigger(entry, view, push, object, plan);
            }
            ArtifactVerdict::Trigger => trigger(entry, view, push, object, plan),
        }
    }
}

fn trigger(
    entry: &ClusterEntry,
    view: &ClusterView,
    push: &Push,
    object: &ArtifactObject,
    plan: &mut PushPlan,
) {
    match entry.trigger.mode {
        TriggerMode::Annotate => add(
            &mut plan.targets,
            Target::AnnotateArtifact {
                kind: object.kind,
                object: object.id.clone(),
            },
        ),
        TriggerMode::Receiver => {
            let kind = object.kind;
            let selected = add_receiver_targets(entry, view, push, plan, |receiver| {
                receiver_selects_object(
                    receiver,
                    kind.kind(),
                    kind.group(),
                    &object.id,
                    &object.labels,
                )
            });
            if !selected {
                add_skip(
                    plan,
                    object.object(),
                    format!(
                        "matches the push, but no Receiver selects it (add kind {} to a Receiver's resources, or use trigger.mode annotate)",
                        kind.kind()
                    ),
                );
            }
        }
    }
}
