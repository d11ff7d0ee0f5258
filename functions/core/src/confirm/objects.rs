//! The Flux objects that consume a GitRepository, reduced to the fields the confirmation
//! rule reads, and where those fields come from (`docs/reference/flux.md` §3, §4):
//!
//! - **Kustomization** (kustomize-controller, `kustomize.toolkit.fluxcd.io/v1`):
//!   `spec.sourceRef` {kind, name, namespace (default: the Kustomization's)};
//!   `status.lastAppliedRevision` — written only when an apply of that revision fully
//!   succeeded, together with `Ready=True` reason `ReconciliationSucceeded`;
//!   `status.lastAttemptedRevision` — written once the artifact is downloaded and the path
//!   found, before the build, so a `Ready=False` with it at the pushed commit is a failure
//!   *of that commit* (`BuildFailed`, `ReconciliationFailed`, `PruneFailed`,
//!   `HealthCheckFailed`); `ArtifactFailed` and `DependencyNotReady` happen before it is
//!   written; `status.observedGeneration` (updated only when Ready=True).
//! - **HelmRelease** (helm-controller, `helm.toolkit.fluxcd.io/v2`) whose chart comes from
//!   the GitRepository (`spec.chart.spec.sourceRef.kind: GitRepository`): comparable with a
//!   commit only with `spec.chart.spec.reconcileStrategy: Revision`, where the chart
//!   version carries the commit (`<version>+<sha12>`); then `status.history[0]`
//!   {chartVersion, status: deployed} is what was applied and `status.lastAttemptedRevision`
//!   (a chart version) what was tried. With the default `ChartVersion` strategy a commit
//!   that does not bump `Chart.yaml`'s version makes no new chart at all: such a release is
//!   *not comparable* and the rule does not wait for it (it names it in the message).
//!
//! Read leniently from the apiserver's JSON, like `flux.rs`: a missing or mistyped field is
//! absent, never an error.

use serde_json::Value;

use crate::flux::ObjectRef;

pub const KUSTOMIZATION_GROUP: &str = "kustomize.toolkit.fluxcd.io";
pub const HELM_RELEASE_GROUP: &str = "helm.toolkit.fluxcd.io";

/// One `status.conditions[]` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Condition {
    /// `"True"`, `"False"` or `"Unknown"`.
    pub status: String,
    pub reason: String,
    pub message: String,
    /// RFC 3339, as the controller wrote it.
    pub last_transition_time: Option<String>,
}

impl Condition {
    pub fn is_true(&self) -> bool {
        self.status == "True"
    }

    pub fn is_false(&self) -> bool {
        self.status == "False"
    }
}

/// The condition of type `kind`, if the object has one.
pub fn condition(value: &Value, kind: &str) -> Option<Condition> {
    value
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
        .map(|c| Condition {
            status: text(c, "/status").unwrap_or_default(),
            reason: text(c, "/reason").unwrap_or_default(),
            message: text(c, "/message").unwrap_or_default(),
            last_transition_time: text(c, "/lastTransitionTime"),
        })
}

/// `metadata.generation` equals `status.observedGeneration` (absent on either side: not).
fn current_generation(value: &Value) -> bool {
    let generation = value
        .pointer("/metadata/generation")
        .and_then(Value::as_i64);
    let observed = value
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64);
    generation.is_some() && generation == observed
}

fn text(value: &Value, pointer: &str) -> Option<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn id(value: &Value) -> ObjectRef {
    ObjectRef::new(
        text(value, "/metadata/namespace").unwrap_or_default(),
        text(value, "/metadata/name").unwrap_or_default(),
    )
}

/// A `sourceRef`: `namespace` defaults to the referring object's.
fn source_ref(value: Option<&Value>, own_namespace: &str) -> Option<(String, ObjectRef)> {
    let value = value?;
    let kind = text(value, "/kind")?;
    let name = text(value, "/name")?;
    let namespace = text(value, "/namespace").unwrap_or_else(|| own_namespace.to_string());
    Some((kind, ObjectRef::new(namespace, name)))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kustomization {
    pub id: ObjectRef,
    /// `spec.sourceRef` when its kind is `GitRepository`.
    pub git_repository: Option<ObjectRef>,
    pub suspend: bool,
    pub last_applied_revision: Option<String>,
    pub last_attempted_revision: Option<String>,
    pub ready: Option<Condition>,
    /// `metadata.generation == status.observedGeneration`.
    pub current_generation: bool,
}

impl Kustomization {
    pub fn from_json(value: &Value) -> Self {
        let id = id(value);
        let git_repository = source_ref(value.pointer("/spec/sourceRef"), &id.namespace)
            .filter(|(kind, _)| kind == "GitRepository")
            .map(|(_, source)| source);
        Self {
            git_repository,
            suspend: value.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true),
            last_applied_revision: text(value, "/status/lastAppliedRevision"),
            last_attempted_revision: text(value, "/status/lastAttemptedRevision"),
            ready: condition(value, "Ready"),
            current_generation: current_generation(value),
            id,
        }
    }
}

/// How a HelmRelease's chart relates to a GitRepository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChartSource {
    /// `spec.chart.spec.sourceRef` is this GitRepository; `revision_strategy` is
    /// `reconcileStrategy: Revision` (the chart version then carries the commit).
    GitRepository {
        repository: ObjectRef,
        revision_strategy: bool,
    },
    /// Anything else (a HelmRepository, `spec.chartRef`, no chart at all).
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelmRelease {
    pub id: ObjectRef,
    pub chart: ChartSource,
    pub suspend: bool,
    /// `status.history[0]` (the newest release): its chart version and Helm status.
    pub latest_chart_version: Option<String>,
    pub latest_status: Option<String>,
    /// `status.lastAppliedRevision` of the v2beta1 API (a chart version), for older
    /// controllers without `history`.
    pub last_applied_revision: Option<String>,
    /// `status.lastAttemptedRevision`: a chart version.
    pub last_attempted_revision: Option<String>,
    pub ready: Option<Condition>,
    pub current_generation: bool,
}

impl HelmRelease {
    pub fn from_json(value: &Value) -> Self {
        let id = id(value);
        let chart = match source_ref(value.pointer("/spec/chart/spec/sourceRef"), &id.namespace) {
            Some((kind, repository)) if kind == "GitRepository" => ChartSource::GitRepository {
                repository,
                revision_strategy: text(value, "/spec/chart/spec/reconcileStrategy").as_deref()
                    == Some("Revision"),
            },
            _ => ChartSource::Other,
        };
        let latest = value
            .pointer("/status/history")
            .and_then(Value::as_array)
            .and_then(|history| history.first());
        Self {
            chart,
            suspend: value.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true),
            latest_chart_version: latest.and_then(|entry| text(entry, "/chartVersion")),
            latest_status: latest.and_then(|entry| text(entry, "/status")),
            last_applied_revision: text(value, "/status/lastAppliedRevision"),
            last_attempted_revision: text(value, "/status/lastAttemptedRevision"),
            ready: condition(value, "Ready"),
            current_generation: current_generation(value),
            id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_kustomization_as_the_docs_show_it() {
        let ks = Kustomization::from_json(&json!({
            "metadata": {"name": "apps", "namespace": "flux-system", "generation": 2},
            "spec": {"interval": "10m", "prune": true, "path": "./apps",
                     "sourceRef": {"kind": "GitRepository", "name": "podinfo"}},
            "status": {"observedGeneration": 2,
                       "lastAppliedRevision": "main@sha1:a1afe267b54f38b46b487f6e938a6fd508278c07",
                       "lastAttemptedRevision": "main@sha1:a1afe267b54f38b46b487f6e938a6fd508278c07",
                       "conditions": [{"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded",
                                       "message": "Applied revision: main@sha1:a1afe267b54f38b46b487f6e938a6fd508278c07",
                                       "lastTransitionTime": "2022-10-17T13:40:21Z"}]}
        }));
        assert_eq!(
            ks.git_repository,
            Some(ObjectRef::new("flux-system", "podinfo")),
            "sourceRef.namespace defaults to the Kustomization's"
        );
        assert!(ks.current_generation);
        let ready = ks.ready.unwrap();
        assert!(ready.is_true());
        assert_eq!(ready.reason, "ReconciliationSucceeded");
        assert_eq!(
            ready.last_transition_time.as_deref(),
            Some("2022-10-17T13:40:21Z")
        );
    }

    #[test]
    fn a_source_of_another_kind_or_namespace() {
        let other_kind = Kustomization::from_json(&json!({
            "metadata": {"name": "a", "namespace": "apps"},
            "spec": {"sourceRef": {"kind": "OCIRepository", "name": "podinfo"}}
        }));
        assert_eq!(other_kind.git_repository, None);
        let cross = Kustomization::from_json(&json!({
            "metadata": {"name": "a", "namespace": "apps"},
            "spec": {"sourceRef": {"kind": "GitRepository", "name": "podinfo", "namespace": "flux-system"}}
        }));
        assert_eq!(
            cross.git_repository,
            Some(ObjectRef::new("flux-system", "podinfo"))
        );
    }

    #[test]
    fn reads_a_helm_release_with_history() {
        let hr = HelmRelease::from_json(&json!({
            "metadata": {"name": "podinfo", "namespace": "apps", "generation": 1},
            "spec": {"chart": {"spec": {"chart": "./charts/podinfo", "reconcileStrategy": "Revision",
                                        "sourceRef": {"kind": "GitRepository", "name": "podinfo", "namespace": "flux-system"}}}},
            "status": {"observedGeneration": 1, "lastAttemptedRevision": "6.6.1+0cc9a8446c95",
                       "history": [{"chartVersion": "6.6.1+0cc9a8446c95", "status": "deployed"},
                                   {"chartVersion": "6.6.0+1111111111aa", "status": "superseded"}]}
        }));
        assert_eq!(
            hr.chart,
            ChartSource::GitRepository {
                repository: ObjectRef::new("flux-system", "podinfo"),
                revision_strategy: true
            }
        );
        assert_eq!(
            hr.latest_chart_version.as_deref(),
            Some("6.6.1+0cc9a8446c95")
        );
        assert_eq!(hr.latest_status.as_deref(), Some("deployed"));
        assert!(hr.current_generation);
        let default_strategy = HelmRelease::from_json(&json!({
            "metadata": {"name": "p", "namespace": "apps"},
            "spec": {"chart": {"spec": {"sourceRef": {"kind": "GitRepository", "name": "podinfo"}}}}
        }));
        assert_eq!(
            default_strategy.chart,
            ChartSource::GitRepository {
                repository: ObjectRef::new("apps", "podinfo"),
                revision_strategy: false
            }
        );
        let chart_ref = HelmRelease::from_json(&json!({
            "metadata": {"name": "p", "namespace": "apps"},
            "spec": {"chartRef": {"kind": "OCIRepository", "name": "podinfo"}}
        }));
        assert_eq!(chart_ref.chart, ChartSource::Other);
    }

    #[test]
    fn anything_else_is_absent_not_an_error() {
        for value in [
            json!(null),
            json!([]),
            json!({"spec": {"sourceRef": "podinfo", "suspend": "yes"},
                   "status": {"conditions": "Ready", "history": {}, "observedGeneration": "1"}}),
        ] {
            let ks = Kustomization::from_json(&value);
            assert_eq!(ks.git_repository, None);
            assert!(!ks.suspend && !ks.current_generation && ks.ready.is_none());
            let hr = HelmRelease::from_json(&value);
            assert_eq!(hr.chart, ChartSource::Other);
            assert!(hr.latest_chart_version.is_none() && hr.ready.is_none());
        }
    }
}
