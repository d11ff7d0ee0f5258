//! The Flux objects an artifact push can concern, reduced to the fields the rules use
//! (`matching::artifacts`): OCIRepository, HelmRepository (type `oci`), the HelmCharts and
//! HelmReleases that take charts from one, and ImageRepository.
//!
//! Read leniently from the apiserver's JSON like the other Flux objects (`crate::flux`): a
//! missing or mistyped field is absent, never an error or a panic.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use super::{GIT_REPOSITORY_GROUP, ObjectRef, SourceStatus, flag, object_ref, string_map, text};

pub const HELM_GROUP: &str = "helm.toolkit.fluxcd.io";
pub const IMAGE_GROUP: &str = "image.toolkit.fluxcd.io";
/// An ImageRepository's `spec.exclusionList` when it sets none (the CRD's default): cosign
/// signature tags are never stored.
pub const DEFAULT_IMAGE_EXCLUSIONS: [&str; 1] = ["^.*\\.sig$"];

/// A kind of Flux object an artifact push may trigger or lead to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ArtifactKind {
    OciRepository,
    HelmRepository,
    HelmChart,
    HelmRelease,
    ImageRepository,
}

impl ArtifactKind {
    pub const ALL: [ArtifactKind; 5] = [
        ArtifactKind::OciRepository,
        ArtifactKind::HelmRepository,
        ArtifactKind::HelmChart,
        ArtifactKind::HelmRelease,
        ArtifactKind::ImageRepository,
    ];

    /// The kind as Kubernetes names it (`OCIRepository`).
    pub fn kind(self) -> &'static str {
        match self {
            ArtifactKind::OciRepository => "OCIRepository",
            ArtifactKind::HelmRepository => "HelmRepository",
            ArtifactKind::HelmChart => "HelmChart",
            ArtifactKind::HelmRelease => "HelmRelease",
            ArtifactKind::ImageRepository => "ImageRepository",
        }
    }

    /// The API group.
    pub fn group(self) -> &'static str {
        match self {
            ArtifactKind::OciRepository
            | ArtifactKind::HelmRepository
            | ArtifactKind::HelmChart => GIT_REPOSITORY_GROUP,
            ArtifactKind::HelmRelease => HELM_GROUP,
            ArtifactKind::ImageRepository => IMAGE_GROUP,
        }
    }

    /// The API version fluxrelay reads and patches (Flux 2.7's GA versions).
    pub fn version(self) -> &'static str {
        match self {
            ArtifactKind::HelmRelease => "v2",
            _ => "v1",
        }
    }

    /// The plural resource name, as RBAC and URLs use it.
    pub fn plural(self) -> &'static str {
        match self {
            ArtifactKind::OciRepository => "ocirepositories",
            ArtifactKind::HelmRepository => "helmrepositories",
            ArtifactKind::HelmChart => "helmcharts",
            ArtifactKind::HelmRelease => "helmreleases",
            ArtifactKind::ImageRepository => "imagerepositories",
        }
    }

    /// The kind in lower case, as an object id starts (`ocirepository/<ns>/<name>`).
    pub fn object_prefix(self) -> &'static str {
        match self {
            ArtifactKind::OciRepository => "ocirepository",
            ArtifactKind::HelmRepository => "helmrepository",
            ArtifactKind::HelmChart => "helmchart",
            ArtifactKind::HelmRelease => "helmrelease",
            ArtifactKind::ImageRepository => "imagerepository",
        }
    }

    /// `OCIRepository` and the other Kubernetes kind names, exactly as written.
    pub fn parse(kind: &str) -> Option<ArtifactKind> {
        ArtifactKind::ALL
            .into_iter()
            .find(|known| known.kind() == kind)
    }

    /// `/apis/<group>/<version>/namespaces/<namespace>/<plural>`: where the kind is listed.
    pub fn list_path(self, namespace: &str) -> String {
        format!(
            "/apis/{}/{}/namespaces/{namespace}/{}",
            self.group(),
            self.version(),
            self.plural()
        )
    }

    /// Where one object of the kind is patched.
    pub fn object_path(self, object: &ObjectRef) -> String {
        format!("{}/{}", self.list_path(&object.namespace), object.name)
    }
}

impl fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

/// `spec.ref` of an OCIRepository, as written. Flux's precedence: digest, semver (with
/// `semverFilter`), tag, else the tag `latest`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OciReference {
    pub digest: Option<String>,
    pub semver: Option<String>,
    pub semver_filter: Option<String>,
    pub tag: Option<String>,
}

/// A `sourceRef`/`chartRef`: kind, name and (where the API has one) namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceReference {
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
}

/// What each kind says about where its artifact comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactSpec {
    OciRepository {
        url: Option<String>,
        reference: OciReference,
    },
    HelmRepository {
        url: Option<String>,
        /// `spec.type: oci`.
        oci: bool,
    },
    HelmChart {
        chart: Option<String>,
        /// `spec.version`, a semver range (default `*`).
        version: Option<String>,
        source: Option<SourceReference>,
    },
    HelmRelease {
        /// `spec.chart.spec.chart`, `.version` and `.sourceRef`.
        chart: Option<String>,
        version: Option<String>,
        source: Option<SourceReference>,
        /// `spec.chartRef`, when the chart comes from an OCIRepository or HelmChart instead.
        chart_ref: Option<SourceReference>,
    },
    ImageRepository {
        image: Option<String>,
        /// `spec.exclusionList`; `None` when unset ([`DEFAULT_IMAGE_EXCLUSIONS`] apply).
        exclusions: Option<Vec<String>>,
    },
}

/// One Flux object of an [`ArtifactKind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactObject {
    pub kind: ArtifactKind,
    pub id: ObjectRef,
    pub labels: BTreeMap<String, String>,
    pub suspend: bool,
    pub spec: ArtifactSpec,
    /// `status.artifact.revision`: `<tag>@sha256:<digest>` for an OCIRepository.
    pub artifact_revision: Option<String>,
    pub status: SourceStatus,
}

impl ArtifactObject {
    /// `<kind>/<namespace>/<name>`, as a retry's `only` and the journal name objects.
    pub fn object(&self) -> String {
        format!("{}/{}", self.kind.object_prefix(), self.id)
    }

    /// Reads one object of `kind` from the apiserver's JSON.
    pub fn from_json(kind: ArtifactKind, value: &Value) -> Self {
        let spec = match kind {
            ArtifactKind::OciRepository => ArtifactSpec::OciRepository {
                url: text(value, "/spec/url"),
                reference: value
                    .pointer("/spec/ref")
                    .map(|r| OciReference {
                        digest: text(r, "/digest"),
                        semver: text(r, "/semver"),
                        semver_filter: text(r, "/semverFilter"),
                        tag: text(r, "/tag"),
                    })
                    .unwrap_or_default(),
            },
            ArtifactKind::HelmRepository => ArtifactSpec::HelmRepository {
                url: text(value, "/spec/url"),
                oci: text(value, "/spec/type").as_deref() == Some("oci"),
            },
            ArtifactKind::HelmChart => ArtifactSpec::HelmChart {
                chart: text(value, "/spec/chart"),
                version: text(value, "/spec/version"),
                source: source_reference(value.pointer("/spec/sourceRef")),
            },
            ArtifactKind::HelmRelease => ArtifactSpec::HelmRelease {
                chart: text(value, "/spec/chart/spec/chart"),
                version: text(value, "/spec/chart/spec/version"),
                source: source_reference(value.pointer("/spec/chart/spec/sourceRef")),
                chart_ref: source_reference(value.pointer("/spec/chartRef")),
            },
            ArtifactKind::ImageRepository => ArtifactSpec::ImageRepository {
                image: text(value, "/spec/image"),
                exclusions: value
                    .pointer("/spec/exclusionList")
                    .and_then(Value::as_array)
                    .map(|items| {
                        items
                            .iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    }),
            },
        };
        Self {
            kind,
            id: object_ref(value),
            labels: string_map(value.pointer("/metadata/labels")),
            suspend: flag(value, "/spec/suspend"),
            spec,
            artifact_revision: text(value, "/status/artifact/revision"),
            status: SourceStatus::from_json(value),
        }
    }
}

fn source_reference(value: Option<&Value>) -> Option<SourceReference> {
    let value = value.filter(|v| v.is_object())?;
    Some(SourceReference {
        kind: text(value, "/kind").unwrap_or_default(),
        name: text(value, "/name").unwrap_or_default(),
        namespace: text(value, "/namespace"),
    })
}

#[cfg(test)]
#[path = "artifacts_test.rs"]
mod tests;
