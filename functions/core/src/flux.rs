//! The Flux objects fluxrelay reads, reduced to the fields its rules use: GitRepository and
//! Receiver here, the kinds an artifact push concerns in [`artifacts`].
//!
//! They are read from untyped JSON (a `kube` `DynamicObject` serialises to exactly the
//! object the apiserver returned), leniently: a missing or mistyped field becomes "absent",
//! and the rules decide what absent means. No input here can fail or panic.

pub mod artifacts;

use std::collections::BTreeMap;

use serde_json::Value;

pub const GIT_REPOSITORY_GROUP: &str = "source.toolkit.fluxcd.io";
pub const RECEIVER_GROUP: &str = "notification.toolkit.fluxcd.io";
pub const RECONCILE_REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";

/// `namespace/name` of an object; also the key of `receiver_tokens` in the registry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// `spec.ref` of a GitRepository, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitRepositoryRef {
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub semver: Option<String>,
    pub name: Option<String>,
    pub commit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRepository {
    pub id: ObjectRef,
    pub labels: BTreeMap<String, String>,
    pub url: Option<String>,
    pub git_ref: Option<GitRepositoryRef>,
    pub suspend: bool,
    /// `status.artifact.revision`, e.g. `main@sha1:<commit>`.
    pub artifact_revision: Option<String>,
    /// What tells whether the artifact is settled and when it was made (the rule that
    /// uses them: `matching::refs::already_reconciled`).
    pub status: SourceStatus,
}

/// The parts of a Flux source's metadata and status that say whether its artifact is
/// settled, and since when.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceStatus {
    /// `metadata.generation` and `status.observedGeneration`.
    pub generation: Option<i64>,
    pub observed_generation: Option<i64>,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// `metadata.annotations["reconcile.fluxcd.io/requestedAt"]` and
    /// `status.lastHandledReconcileAt`: different values mean a requested reconcile has
    /// not finished yet.
    pub requested_at: Option<String>,
    pub last_handled_reconcile_at: Option<String>,
    /// `status.artifact.lastUpdateTime` (RFC 3339, whole seconds): when the artifact was made.
    pub artifact_updated_at: Option<String>,
}

impl SourceStatus {
    pub fn from_json(value: &Value) -> Self {
        Self {
            generation: value
                .pointer("/metadata/generation")
                .and_then(Value::as_i64),
            observed_generation: value
                .pointer("/status/observedGeneration")
                .and_then(Value::as_i64),
            ready: condition_true(value, "Ready"),
            requested_at: value
                .pointer("/metadata/annotations")
                .and_then(|annotations| annotations.get(RECONCILE_REQUESTED_AT))
                .and_then(Value::as_str)
                .map(str::to_string),
            last_handled_reconcile_at: text(value, "/status/lastHandledReconcileAt"),
            artifact_updated_at: text(value, "/status/artifact/lastUpdateTime"),
        }
    }
}

/// Whether the object has a condition of this type with status `True`.
pub fn condition_true(value: &Value, kind: &str) -> bool {
    value
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|conditions| {
            conditions.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some(kind)
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// `spec.type` of a Receiver; the types fluxrelay can call are named, the rest kept as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiverType {
    Generic,
    GenericHmac,
    Gitlab,
    Github,
    Other(String),
}

impl ReceiverType {
    pub fn parse(value: &str) -> Self {
        match value {
            "generic" => Self::Generic,
            "generic-hmac" => Self::GenericHmac,
            "gitlab" => Self::Gitlab,
            "github" => Self::Github,
            other => Self::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Generic => "generic",
            Self::GenericHmac => "generic-hmac",
            Self::Gitlab => "gitlab",
            Self::Github => "github",
            Self::Other(other) => other,
        }
    }

    /// Whether fluxrelay needs the Receiver's secret token to build a valid request.
    pub fn needs_token(&self) -> bool {
        matches!(self, Self::GenericHmac | Self::Gitlab | Self::Github)
    }
}

/// One entry of a Receiver's `spec.resources`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceSelector {
    pub api_version: Option<String>,
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receiver {
    pub id: ObjectRef,
    pub receiver_type: ReceiverType,
    pub events: Vec<String>,
    pub resources: Vec<ResourceSelector>,
    pub suspend: bool,
    /// `Ready` condition is `True`.
    pub ready: bool,
    /// `status.webhookPath`, e.g. `/hook/<hex>`.
    pub webhook_path: Option<String>,
}

fn text(value: &Value, pointer: &str) -> Option<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn flag(value: &Value, pointer: &str) -> bool {
    value.pointer(pointer).and_then(Value::as_bool) == Some(true)
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn object_ref(value: &Value) -> ObjectRef {
    ObjectRef::new(
        text(value, "/metadata/namespace").unwrap_or_default(),
        text(value, "/metadata/name").unwrap_or_default(),
    )
}

impl GitRepository {
    pub fn from_json(value: &Value) -> Self {
        let git_ref = value
            .pointer("/spec/ref")
            .filter(|r| r.is_object())
            .map(|r| GitRepositoryRef {
                branch: text(r, "/branch"),
                tag: text(r, "/tag"),
                semver: text(r, "/semver"),
                name: text(r, "/name"),
                commit: text(r, "/commit"),
            });
        Self {
            id: object_ref(value),
            labels: string_map(value.pointer("/metadata/labels")),
            url: text(value, "/spec/url"),
            git_ref,
            suspend: flag(value, "/spec/suspend"),
            artifact_revision: text(value, "/status/artifact/revision"),
            status: SourceStatus::from_json(value),
        }
    }
}

impl Receiver {
    pub fn from_json(value: &Value) -> Self {
        let resources = value
            .pointer("/spec/resources")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .map(|item| ResourceSelector {
                        api_version: text(item, "/apiVersion"),
                        kind: text(item, "/kind").unwrap_or_default(),
                        name: text(item, "/name").unwrap_or_default(),
                        namespace: text(item, "/namespace"),
                        match_labels: string_map(item.get("matchLabels")),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let events = value
            .pointer("/spec/events")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let ready = condition_true(value, "Ready");
        Self {
            id: object_ref(value),
            receiver_type: ReceiverType::parse(&text(value, "/spec/type").unwrap_or_default()),
            events,
            resources,
            suspend: flag(value, "/spec/suspend"),
            ready,
            webhook_path: text(value, "/status/webhookPath"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_git_repository_as_the_apiserver_returns_it() {
        let repo = GitRepository::from_json(&json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": "podinfo", "namespace": "flux-system", "labels": {"team": "a"}},
            "spec": {"url": "https://gitlab.example.com/mike/diaspora.git", "interval": "1m",
                     "ref": {"branch": "main"}, "suspend": true},
            "status": {"artifact": {"revision": "main@sha1:abc"}}
        }));
        assert_eq!(repo.id, ObjectRef::new("flux-system", "podinfo"));
        assert_eq!(repo.labels.get("team").map(String::as_str), Some("a"));
        assert_eq!(
            repo.url.as_deref(),
            Some("https://gitlab.example.com/mike/diaspora.git")
        );
        assert_eq!(repo.git_ref.unwrap().branch.as_deref(), Some("main"));
        assert!(repo.suspend);
        assert_eq!(repo.artifact_revision.as_deref(), Some("main@sha1:abc"));
    }

    #[test]
    fn missing_or_mistyped_fields_are_absent_not_errors() {
        for value in [
            json!(null),
            json!([]),
            json!({"spec": {"url": 5, "ref": "main", "suspend": "yes"}}),
        ] {
            let repo = GitRepository::from_json(&value);
            assert_eq!(repo.url, None);
            assert_eq!(repo.git_ref, None);
            assert!(!repo.suspend);
            let receiver = Receiver::from_json(&value);
            assert!(!receiver.ready);
            assert!(receiver.resources.is_empty());
            assert_eq!(receiver.receiver_type, ReceiverType::Other(String::new()));
        }
    }

    #[test]
    fn reads_a_receiver_with_status() {
        let receiver = Receiver::from_json(&json!({
            "metadata": {"name": "gitlab-receiver", "namespace": "flux-system"},
            "spec": {"type": "gitlab", "events": ["Push Hook"], "secretRef": {"name": "t"},
                     "resources": [{"kind": "GitRepository", "name": "*", "matchLabels": {"app": "x"}},
                                   {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                                    "name": "podinfo", "namespace": "apps"}]},
            "status": {"webhookPath": "/hook/abc",
                       "conditions": [{"type": "Reconciling", "status": "True"}, {"type": "Ready", "status": "True"}]}
        }));
        assert_eq!(receiver.receiver_type, ReceiverType::Gitlab);
        assert!(receiver.receiver_type.needs_token());
        assert_eq!(receiver.events, vec!["Push Hook".to_string()]);
        assert!(receiver.ready);
        assert_eq!(receiver.webhook_path.as_deref(), Some("/hook/abc"));
        assert_eq!(receiver.resources.len(), 2);
        assert_eq!(
            receiver.resources[0]
                .match_labels
                .get("app")
                .map(String::as_str),
            Some("x")
        );
        assert_eq!(receiver.resources[1].namespace.as_deref(), Some("apps"));
    }

    #[test]
    fn receiver_type_names() {
        for (text, kind, needs_token) in [
            ("generic", ReceiverType::Generic, false),
            ("generic-hmac", ReceiverType::GenericHmac, true),
            ("gitlab", ReceiverType::Gitlab, true),
            ("github", ReceiverType::Github, true),
            ("bitbucket", ReceiverType::Other("bitbucket".into()), false),
            ("GitLab", ReceiverType::Other("GitLab".into()), false),
        ] {
            let parsed = ReceiverType::parse(text);
            assert_eq!(parsed, kind);
            assert_eq!(parsed.as_str(), text);
            assert_eq!(parsed.needs_token(), needs_token, "{text}");
        }
    }
}
