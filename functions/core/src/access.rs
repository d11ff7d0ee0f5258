//! What dispatch (and confirmation) ask of a cluster's apiserver, as RBAC permissions: the
//! list `fluxrelay cluster check` asks about (`SelfSubjectAccessReview`, in the adapters),
//! the Roles `fluxrelay cluster add` creates for the dispatcher's ServiceAccount
//! ([`role_rules`]), and what `infra/rbac.yaml` grants.

use std::collections::BTreeMap;
use std::fmt;

pub mod identity;

use crate::confirm::objects::{HELM_RELEASE_GROUP, KUSTOMIZATION_GROUP};
use crate::flux::artifacts::ArtifactKind;
use crate::flux::{GIT_REPOSITORY_GROUP, RECEIVER_GROUP};
use crate::registry::{ClusterEntry, ReceiverEndpoint, TriggerMode};

const GIT_REPOSITORIES: &str = "gitrepositories";
const RECEIVERS: &str = "receivers";
const SERVICES_PROXY: &str = "services/proxy";
const KUSTOMIZATIONS: &str = "kustomizations";
const HELM_RELEASES: &str = "helmreleases";
/// The core API group.
const CORE_GROUP: &str = "";

/// One permission the dispatcher needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    pub verb: &'static str,
    /// API group, `""` for the core group.
    pub group: &'static str,
    /// Plural resource, with subresource as `services/proxy`.
    pub resource: &'static str,
    pub namespace: String,
    /// A resource name the rule must allow (`resourceNames`), if any.
    pub name: Option<String>,
}

impl Permission {
    /// The resource and subresource (`services/proxy` → `services`, `proxy`), as an access
    /// review asks for them.
    pub fn resource_parts(&self) -> (&'static str, Option<&'static str>) {
        match self.resource.split_once('/') {
            Some((resource, subresource)) => (resource, Some(subresource)),
            None => (self.resource, None),
        }
    }

    /// The Role rule that grants it, as one line of YAML.
    pub fn rule(&self) -> String {
        let names = self
            .name
            .as_ref()
            .map(|name| format!(", resourceNames: [\"{name}\"]"))
            .unwrap_or_default();
        format!(
            "{{apiGroups: [\"{}\"], resources: [\"{}\"]{names}, verbs: [\"{}\"]}} in namespace {}",
            self.group, self.resource, self.verb, self.namespace
        )
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        if !self.group.is_empty() {
            write!(f, ".{}", self.group)?;
        }
        if let Some(name) = &self.name {
            write!(f, " {name}")?;
        }
        write!(f, " in {}", self.namespace)
    }
}

/// What dispatch does with this entry, as permissions: in each namespace, list
/// GitRepositories and, by mode, list Receivers or patch GitRepositories; list each kind of
/// the entry's `trigger.artifact_kinds` and, in annotate mode, patch each (but
/// HelmRepository, which is never triggered); with `confirm`, list Kustomizations (and
/// HelmReleases unless turned off); in receiver mode through the service proxy, create on
/// that proxy's service.
pub fn needed_permissions(entry: &ClusterEntry) -> Vec<Permission> {
    let permission = |verb, group, resource, namespace: &str| Permission {
        verb,
        group,
        resource,
        namespace: namespace.to_string(),
        name: None,
    };
    let mut needed = Vec::new();
    for namespace in &entry.namespaces {
        needed.push(permission(
            "list",
            GIT_REPOSITORY_GROUP,
            GIT_REPOSITORIES,
            namespace,
        ));
        needed.push(match entry.trigger.mode {
            TriggerMode::Receiver => permission("list", RECEIVER_GROUP, RECEIVERS, namespace),
            TriggerMode::Annotate => {
                permission("patch", GIT_REPOSITORY_GROUP, GIT_REPOSITORIES, namespace)
            }
        });
        for kind in &entry.trigger.artifact_kinds {
            needed.push(permission("list", kind.group(), kind.plural(), namespace));
            if entry.trigger.mode == TriggerMode::Annotate && *kind != ArtifactKind::HelmRepository
            {
                needed.push(permission("patch", kind.group(), kind.plural(), namespace));
            }
        }
        if let Some(confirm) = &entry.confirm {
            needed.push(permission(
                "list",
                KUSTOMIZATION_GROUP,
                KUSTOMIZATIONS,
                namespace,
            ));
            if confirm.helm_releases {
                needed.push(permission(
                    "list",
                    HELM_RELEASE_GROUP,
                    HELM_RELEASES,
                    namespace,
                ));
            }
        }
    }
    if entry.trigger.mode == TriggerMode::Receiver
        && let ReceiverEndpoint::ServiceProxy(path) = &entry.trigger.receiver_endpoint
        && let Some((namespace, service)) = proxy_service(path)
    {
        needed.push(Permission {
            name: Some(service.to_string()),
            ..permission("create", CORE_GROUP, SERVICES_PROXY, namespace)
        });
    }
    needed
}

/// One rule of a Role, as plain data (the adapter writes it as a `PolicyRule`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RoleRule {
    pub group: &'static str,
    pub resource: &'static str,
    pub names: Vec<String>,
    pub verbs: Vec<&'static str>,
}

/// The Role per namespace that grants exactly `needed`: one rule per (group, resource,
/// name), with the verbs it needs, in a stable order. A permission with a resource name
/// gets a rule of its own, so the name never widens to the other verbs.
pub fn role_rules(needed: &[Permission]) -> BTreeMap<String, Vec<RoleRule>> {
    let mut roles: BTreeMap<String, Vec<RoleRule>> = BTreeMap::new();
    for permission in needed {
        let names: Vec<String> = permission.name.iter().cloned().collect();
        let rules = roles.entry(permission.namespace.clone()).or_default();
        match rules.iter_mut().find(|rule| {
            rule.group == permission.group
                && rule.resource == permission.resource
                && rule.names == names
        }) {
            Some(rule) => {
                if !rule.verbs.contains(&permission.verb) {
                    rule.verbs.push(permission.verb);
                    rule.verbs.sort_unstable();
                }
            }
            None => rules.push(RoleRule {
                group: permission.group,
                resource: permission.resource,
                names,
                verbs: vec![permission.verb],
            }),
        }
    }
    for rules in roles.values_mut() {
        rules.sort();
    }
    roles
}

/// `/api/v1/namespaces/<ns>/services/<id>/proxy` → (ns, id). RBAC sees the literal id, so
/// it is what the rule's `resourceNames` must hold.
pub fn proxy_service(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let (namespace, rest) = rest.split_once("/services/")?;
    let service = rest.strip_suffix("/proxy")?;
    let segment = |text: &str| !text.is_empty() && !text.contains('/');
    (segment(namespace) && segment(service)).then_some((namespace, service))
}

#[cfg(test)]
#[path = "access_test.rs"]
mod tests;
