//! Which Flux objects an artifact event should trigger: one rule per kind, each table-tested
//! with its negatives in `artifacts_test.rs`.
//!
//! An event reaches a cluster as one or more [`ArtifactScope`]s: a tag pushed to a
//! repository (a registry notification), or a GitLab project whose artifacts are new (a
//! successful pipeline or a tag push, by a subscription that names the project's registry).
//!
//! - **OCIRepository**: `spec.url` names the repository (or, for a project, a repository
//!   within it); by Flux's precedence `spec.ref.digest` pins it (never triggered),
//!   `spec.ref.semver` (after `semverFilter`) must take the tag, `spec.ref.tag` must be the
//!   tag, and no ref means the tag `latest`.
//! - **HelmRepository** of `type: oci`: never triggered (Flux never reconciles one; it is a
//!   static data container), but the charts under its URL lead to the **HelmCharts** and
//!   **HelmReleases** that take them from it: same chart name, and the pushed tag (Helm writes
//!   `+` as `_`) within their `version` range (default `*`).
//! - **ImageRepository**: `spec.image` names the repository, and the tag is not excluded by
//!   `spec.exclusionList` (default: cosign's `.sig` tags).
//!
//! Locations are compared by `crate::oci` with the entry's registry aliases applied to both
//! sides. A range or regex fluxrelay cannot evaluate triggers: a needless fetch is cheap, a
//! missed deploy is not.

use std::collections::BTreeMap;

use regex_lite::Regex;

use super::select::{Freshness, settled_after};
use super::semver_range::{self, RangeCheck};
use crate::artifacts::PushedArtifact;
use crate::flux::ObjectRef;
use crate::flux::artifacts::{
    ArtifactKind, ArtifactObject, ArtifactSpec, DEFAULT_IMAGE_EXCLUSIONS, OciReference,
    SourceReference,
};
use crate::oci::{OciLocation, OciReferenceError, ReferenceForm};
use crate::push::{Push, PushEvent};
use crate::registry::ClusterEntry;
use crate::subscriptions::Takes;

/// The tag an OCIRepository without `spec.ref` follows.
pub const DEFAULT_TAG: &str = "latest";
/// The version range of a HelmChart or HelmRelease that sets none.
const DEFAULT_CHART_VERSION: &str = "*";
const HELM_REPOSITORY_KIND: &str = "HelmRepository";

/// What an event makes new, as far as one cluster is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactScope {
    /// A tag pushed to a repository.
    Pushed(PushedArtifact),
    /// Whatever is under a GitLab project's path in its container registry: a pipeline or
    /// tag push says it published something, not what.
    Project(OciLocation),
}

impl std::fmt::Display for ArtifactScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArtifactScope::Pushed(artifact) => {
                write!(f, "{}:{}", artifact.location, artifact.tag)
            }
            ArtifactScope::Project(location) => write!(f, "{location}/**"),
        }
    }
}

/// The scopes a push has in this cluster: an artifact push its own artifact; a pipeline or
/// tag push one project location per subscription of the entry that takes it for the
/// project's artifacts; anything else none. Empty when the entry reads no artifact kinds.
pub fn artifact_scopes(entry: &ClusterEntry, push: &Push) -> Vec<ArtifactScope> {
    if entry.trigger.artifact_kinds.is_empty() {
        return Vec::new();
    }
    let aliases = &entry.trigger.registry_aliases;
    let mut scopes = Vec::new();
    match push.event {
        PushEvent::ArtifactPush => {
            if let Some(mut artifact) = push.artifact() {
                artifact.location = artifact.location.canonical(aliases);
                scopes.push(ArtifactScope::Pushed(artifact));
            }
        }
        PushEvent::Pipeline | PushEvent::TagPush => {
            for subscription in &entry.subscriptions {
                let Takes::ProjectArtifacts { on, registry } = &subscription.takes else {
                    continue;
                };
                if on.event() != push.event || subscription.accepts(push).is_err() {
                    continue;
                }
                let Ok(location) = OciLocation::from_parts(registry, &push.project.path) else {
                    continue;
                };
                let scope = ArtifactScope::Project(location.canonical(aliases));
                if !scopes.contains(&scope) {
                    scopes.push(scope);
                }
            }
        }
        PushEvent::Push => {}
    }
    scopes
}

/// Why an artifact event does not trigger an object. Messages never echo a `spec.url`
/// (it may hold credentials); locations are shown normalised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactSkip {
    #[error("has no {field}")]
    NoReference { field: &'static str },
    #[error("{field} {error}")]
    BadReference {
        field: &'static str,
        error: OciReferenceError,
    },
    #[error("names `{location}`, not `{scope}`")]
    OtherRepository { location: String, scope: String },
    #[error("is pinned to a digest, so no push can change what it fetches")]
    PinnedToDigest,
    #[error("tracks tag `{tracked}`, but the push is of tag `{pushed}`")]
    OtherTag { tracked: String, pushed: String },
    #[error("tag `{tag}` is not in its semver range `{range}`")]
    OutsideRange { tag: String, range: String },
    #[error("tag `{tag}` does not match its semverFilter `{filter}`")]
    FilteredOut { tag: String, filter: String },
    #[error("tag `{tag}` is excluded by its exclusionList entry `{pattern}`")]
    ExcludedTag { tag: String, pattern: String },
    #[error("is not of type oci")]
    NotOci,
    #[error(
        "is an OCI HelmRepository, which Flux never reconciles: the HelmCharts and HelmReleases that take the chart from it are triggered instead"
    )]
    StaticHelmRepository,
    #[error("takes its chart from {kind} {name}, not from an OCI HelmRepository under `{scope}`")]
    OtherSource {
        kind: String,
        name: String,
        scope: String,
    },
    #[error("takes its chart through spec.chartRef ({kind} {name}), which is triggered itself")]
    ChartRef { kind: String, name: String },
    #[error("is suspended")]
    Suspended,
    #[error(
        "already at the pushed revision `{revision}`, made after the push was received, with no reconcile pending"
    )]
    AlreadyAtRevision { revision: String },
}

/// What [`artifact_verdicts`] decided for one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactVerdict {
    Trigger,
    Skip(ArtifactSkip),
    /// Already at the revision by a cached status: read it again before skipping.
    LookAgain,
}

/// The verdict for every object, in order, given a scope. `received_at` is when the event
/// was accepted (for "already at the revision").
pub fn artifact_verdicts<'a>(
    objects: &'a [ArtifactObject],
    scope: &ArtifactScope,
    aliases: &BTreeMap<String, String>,
    received_at: &str,
    freshness: Freshness,
) -> Vec<(&'a ArtifactObject, ArtifactVerdict)> {
    let helm_repositories = oci_helm_repositories(objects, aliases);
    objects
        .iter()
        .map(|object| {
            let verdict = match verdict(object, scope, aliases, &helm_repositories) {
                Err(skip) => ArtifactVerdict::Skip(skip),
                Ok(()) if object.suspend => ArtifactVerdict::Skip(ArtifactSkip::Suspended),
                Ok(()) => match already_at(object, scope, received_at) {
                    None => ArtifactVerdict::Trigger,
                    Some(_) if freshness == Freshness::Cached => ArtifactVerdict::LookAgain,
                    Some(revision) => {
                        ArtifactVerdict::Skip(ArtifactSkip::AlreadyAtRevision { revision })
                    }
                },
            };
            (object, verdict)
        })
        .collect()
}

/// The OCI HelmRepositories among `objects`, by namespace and name, with their locations.
fn oci_helm_repositories(
    objects: &[ArtifactObject],
    aliases: &BTreeMap<String, String>,
) -> BTreeMap<ObjectRef, OciLocation> {
    objects
        .iter()
        .filter_map(|object| match &object.spec {
            ArtifactSpec::HelmRepository {
                url: Some(url),
                oci: true,
            } => OciLocation::parse(url, ReferenceForm::OciUrl)
                .ok()
                .map(|location| (object.id.clone(), location.canonical(aliases))),
            _ => None,
        })
        .collect()
}

fn verdict(
    object: &ArtifactObject,
    scope: &ArtifactScope,
    aliases: &BTreeMap<String, String>,
    helm_repositories: &BTreeMap<ObjectRef, OciLocation>,
) -> Result<(), ArtifactSkip> {
    match &object.spec {
        ArtifactSpec::OciRepository { url, reference } => {
            let location = location(url.as_deref(), "spec.url", ReferenceForm::OciUrl, aliases)?;
            in_scope(&location, scope)?;
            oci_reference_takes(reference, scope)
        }
        ArtifactSpec::HelmRepository { url, oci } => {
            if !oci {
                return Err(ArtifactSkip::NotOci);
            }
            let location = location(url.as_deref(), "spec.url", ReferenceForm::OciUrl, aliases)?;
            let holds = match scope {
                ArtifactScope::Pushed(artifact) => {
                    parent(&artifact.location).as_ref() == Some(&location)
                }
                ArtifactScope::Project(project) => {
                    location.within(project) || project.within(&location)
                }
            };
            if holds {
                Err(ArtifactSkip::StaticHelmRepository)
            } else {
                Err(ArtifactSkip::OtherRepository {
                    location: location.to_string(),
                    scope: scope.to_string(),
                })
            }
        }
        ArtifactSpec::HelmChart {
            chart,
            version,
            source,
        } => {
            // A HelmChart's sourceRef has no namespace: it is the chart's own.
            let source = source.as_ref().map(|source| SourceReference {
                namespace: None,
                ..source.clone()
            });
            chart_takes(
                object,
                chart.as_deref(),
                version.as_deref(),
                source.as_ref(),
                scope,
                helm_repositories,
            )
        }
        ArtifactSpec::HelmRelease {
            chart,
            version,
            source,
            chart_ref,
        } => {
            if let Some(chart_ref) = chart_ref {
                return Err(ArtifactSkip::ChartRef {
                    kind: chart_ref.kind.clone(),
                    name: chart_ref.name.clone(),
                });
            }
            chart_takes(
                object,
                chart.as_deref(),
                version.as_deref(),
                source.as_ref(),
                scope,
                helm_repositories,
            )
        }
        ArtifactSpec::ImageRepository { image, exclusions } => {
            let location = location(
                image.as_deref(),
                "spec.image",
                ReferenceForm::Image,
                aliases,
            )?;
            in_scope(&location, scope)?;
            match scope {
                ArtifactScope::Pushed(artifact) => {
                    not_excluded(&artifact.tag, exclusions.as_deref())
                }
                ArtifactScope::Project(_) => Ok(()),
            }
        }
    }
}

fn location(
    text: Option<&str>,
    field: &'static str,
    form: ReferenceForm,
    aliases: &BTreeMap<String, String>,
) -> Result<OciLocation, ArtifactSkip> {
    let text = text.ok_or(ArtifactSkip::NoReference { field })?;
    OciLocation::parse(text, form)
        .map(|location| location.canonical(aliases))
        .map_err(|error| ArtifactSkip::BadReference { field, error })
}

/// The pushed repository itself, or a repository within the project.
fn in_scope(location: &OciLocation, scope: &ArtifactScope) -> Result<(), ArtifactSkip> {
    let inside = match scope {
        ArtifactScope::Pushed(artifact) => *location == artifact.location,
        ArtifactScope::Project(project) => location.within(project),
    };
    if inside {
        Ok(())
    } else {
        Err(ArtifactSkip::OtherRepository {
            location: location.to_string(),
            scope: scope.to_string(),
        })
    }
}

/// Flux's precedence: digest (never moves), semver after semverFilter, tag, else `latest`.
/// A project scope does not say which tag was published, so only a digest pin rules out.
fn oci_reference_takes(
    reference: &OciReference,
    scope: &ArtifactScope,
) -> Result<(), ArtifactSkip> {
    if reference.digest.is_some() {
        return Err(ArtifactSkip::PinnedToDigest);
    }
    let ArtifactScope::Pushed(artifact) = scope else {
        return Ok(());
    };
    let tag = &artifact.tag;
    if let Some(range) = &reference.semver {
        if let Some(filter) = &reference.semver_filter
            && Regex::new(filter).is_ok_and(|regex| !regex.is_match(tag))
        {
            return Err(ArtifactSkip::FilteredOut {
                tag: tag.clone(),
                filter: filter.clone(),
            });
        }
        return within_range(range, tag);
    }
    let tracked = reference.tag.as_deref().unwrap_or(DEFAULT_TAG);
    if tracked == tag {
        Ok(())
    } else {
        Err(ArtifactSkip::OtherTag {
            tracked: tracked.to_string(),
            pushed: tag.clone(),
        })
    }
}

/// The tag satisfies the range, as it is or with Helm's `_` read back as `+` (Helm writes a
/// chart version's build metadata with `_` in tags, and Flux reads it back); a range that
/// cannot be evaluated is taken as satisfied.
fn within_range(range: &str, tag: &str) -> Result<(), ArtifactSkip> {
    let helm_tag = tag.replace('_', "+");
    let checks = [
        semver_range::check(range, tag),
        semver_range::check(range, &helm_tag),
    ];
    if checks
        .iter()
        .any(|check| *check != RangeCheck::NotSatisfied)
    {
        return Ok(());
    }
    Err(ArtifactSkip::OutsideRange {
        tag: tag.to_string(),
        range: range.to_string(),
    })
}

/// A HelmChart or HelmRelease takes the pushed chart: its source is an OCI HelmRepository
/// that holds the chart's repository, under the scope, and its version range takes the tag.
fn chart_takes(
    object: &ArtifactObject,
    chart: Option<&str>,
    version: Option<&str>,
    source: Option<&SourceReference>,
    scope: &ArtifactScope,
    helm_repositories: &BTreeMap<ObjectRef, OciLocation>,
) -> Result<(), ArtifactSkip> {
    let other_source = |source: Option<&SourceReference>| ArtifactSkip::OtherSource {
        kind: source.map(|s| s.kind.clone()).unwrap_or_default(),
        name: source.map(|s| s.name.clone()).unwrap_or_default(),
        scope: scope.to_string(),
    };
    let Some(source) = source.filter(|source| source.kind == HELM_REPOSITORY_KIND) else {
        return Err(other_source(source));
    };
    let namespace = source.namespace.as_deref().unwrap_or(&object.id.namespace);
    let repository = helm_repositories
        .get(&ObjectRef::new(namespace, source.name.as_str()))
        .ok_or_else(|| other_source(Some(source)))?;
    let chart = chart.ok_or(ArtifactSkip::NoReference {
        field: "chart name",
    })?;
    let chart_location = OciLocation::from_parts(
        &repository.registry,
        &format!("{}/{chart}", repository.repository),
    )
    .map_err(|error| ArtifactSkip::BadReference {
        field: "chart name",
        error,
    })?;
    in_scope(&chart_location, scope)?;
    match scope {
        ArtifactScope::Pushed(artifact) => {
            within_range(version.unwrap_or(DEFAULT_CHART_VERSION), &artifact.tag)
        }
        ArtifactScope::Project(_) => Ok(()),
    }
}

/// Not excluded by any pattern of the exclusion list that fluxrelay can evaluate.
fn not_excluded(tag: &str, exclusions: Option<&[String]>) -> Result<(), ArtifactSkip> {
    let default: Vec<String> = DEFAULT_IMAGE_EXCLUSIONS
        .iter()
        .map(|pattern| pattern.to_string())
        .collect();
    let patterns = exclusions.unwrap_or(&default);
    for pattern in patterns {
        if Regex::new(pattern).is_ok_and(|regex| regex.is_match(tag)) {
            return Err(ArtifactSkip::ExcludedTag {
                tag: tag.to_string(),
                pattern: pattern.clone(),
            });
        }
    }
    Ok(())
}

/// The repository one component up: a chart's HelmRepository (`charts/podinfo` → `charts`).
fn parent(location: &OciLocation) -> Option<OciLocation> {
    let (parent, _chart) = location.repository.rsplit_once('/')?;
    Some(OciLocation {
        registry: location.registry.clone(),
        repository: parent.to_string(),
    })
}

/// The revision an OCIRepository would have after fetching the pushed artifact, when it
/// provably already has it (`<tag>@<digest>`, made after the push was received, nothing
/// pending): then triggering it again fetches nothing new.
fn already_at(object: &ArtifactObject, scope: &ArtifactScope, received_at: &str) -> Option<String> {
    let (ArtifactKind::OciRepository, ArtifactScope::Pushed(artifact)) = (object.kind, scope)
    else {
        return None;
    };
    let revision = object.artifact_revision.as_deref()?;
    let pushed = format!("{}@{}", artifact.tag, artifact.digest);
    (revision == pushed && settled_after(&object.status, received_at)).then(|| revision.to_string())
}

/// What an object follows, in the words an operator reads (`fluxrelay cluster check`), by
/// the same precedence the rules above apply.
pub fn follows(object: &ArtifactObject) -> String {
    let text = |value: &Option<String>| value.clone().unwrap_or_else(|| "(none)".to_string());
    match &object.spec {
        ArtifactSpec::OciRepository { url, reference } => {
            let rule = if reference.digest.is_some() {
                "a pinned digest, so it is never triggered".to_string()
            } else if let Some(range) = &reference.semver {
                match &reference.semver_filter {
                    Some(filter) => format!("semver {range}, tags matching {filter}"),
                    None => format!("semver {range}"),
                }
            } else {
                format!("tag {}", reference.tag.as_deref().unwrap_or(DEFAULT_TAG))
            };
            format!("{} ({rule})", text(url))
        }
        ArtifactSpec::HelmRepository { url, oci: true } => format!(
            "{} (type oci: never triggered itself; the HelmCharts and HelmReleases that take charts from it are)",
            text(url)
        ),
        ArtifactSpec::HelmRepository { url, oci: false } => {
            format!("{} (not type oci: no artifact push concerns it)", text(url))
        }
        ArtifactSpec::HelmChart {
            chart,
            version,
            source,
        }
        | ArtifactSpec::HelmRelease {
            chart,
            version,
            source,
            chart_ref: None,
        } => format!(
            "chart {} version {} from {}",
            text(chart),
            version.as_deref().unwrap_or(DEFAULT_CHART_VERSION),
            source
                .as_ref()
                .map(|s| format!("{} {}", s.kind, s.name))
                .unwrap_or_else(|| "(no sourceRef)".to_string())
        ),
        ArtifactSpec::HelmRelease {
            chart_ref: Some(chart_ref),
            ..
        } => format!(
            "spec.chartRef {} {} (that source is triggered, not the release)",
            chart_ref.kind, chart_ref.name
        ),
        ArtifactSpec::ImageRepository { image, exclusions } => match exclusions {
            Some(list) => format!("{} (tags excluded: {})", text(image), list.join(", ")),
            None => text(image),
        },
    }
}

#[cfg(test)]
#[path = "artifacts_test.rs"]
mod tests;
