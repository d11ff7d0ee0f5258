//! `fluxrelay cluster add`'s least-privilege identity, made with the operator's kubeconfig:
//! a ServiceAccount, in each namespace a Role with exactly the rules the entry needs
//! (core's `access::role_rules`) bound to it, and a bound token for it (TokenRequest) with
//! an expiry. The operator's own credentials are used for this and never stored.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};

use fluxrelay_core::access::RoleRule;
use fluxrelay_core::secret::Secret;

use crate::cluster_check::describe;

/// The field manager of what `cluster add` applies (server-side apply).
const FIELD_MANAGER: &str = "fluxrelay-cluster-add";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// What was made, and the token to store.
#[derive(Debug)]
pub struct DispatcherIdentity {
    /// `system:serviceaccount:<namespace>:<name>`.
    pub username: String,
    /// Namespaces with a Role and RoleBinding of this name.
    pub namespaces: Vec<String>,
    pub token: Secret,
    /// RFC 3339, from the apiserver's answer.
    pub expires: Option<String>,
}

/// A step that failed, with the apiserver's answer.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {problem}")]
pub struct IdentityError {
    pub step: String,
    pub problem: String,
}

fn failed(step: impl Into<String>) -> impl FnOnce(kube::Error) -> IdentityError {
    let step = step.into();
    move |error| IdentityError {
        step,
        problem: describe(error),
    }
}

fn meta(name: &str, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(BTreeMap::from([(
            MANAGED_BY.to_string(),
            "fluxrelay".to_string(),
        )])),
        ..ObjectMeta::default()
    }
}

fn policy_rule(rule: &RoleRule) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![rule.group.to_string()]),
        resources: Some(vec![rule.resource.to_string()]),
        resource_names: (!rule.names.is_empty()).then(|| rule.names.clone()),
        verbs: rule.verbs.iter().map(|verb| (*verb).to_string()).collect(),
        ..PolicyRule::default()
    }
}

/// Apply the ServiceAccount `name` in `home`, a Role and RoleBinding `name` per namespace
/// of `roles` (server-side apply: the rules are replaced by exactly these), then mint a
/// token for the ServiceAccount that expires after `ttl`.
pub async fn provision(
    client: &kube::Client,
    name: &str,
    home: &str,
    roles: &BTreeMap<String, Vec<RoleRule>>,
    ttl: Duration,
) -> Result<DispatcherIdentity, IdentityError> {
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), home);
    let account = ServiceAccount {
        metadata: meta(name, home),
        // Never mounted anywhere: the token is minted for fluxrelay, outside the cluster.
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    };
    accounts
        .patch(name, &apply, &Patch::Apply(&account))
        .await
        .map_err(failed(format!("apply ServiceAccount {home}/{name}")))?;
    for (namespace, rules) in roles {
        let role = Role {
            metadata: meta(name, namespace),
            rules: Some(rules.iter().map(policy_rule).collect()),
        };
        Api::<Role>::namespaced(client.clone(), namespace)
            .patch(name, &apply, &Patch::Apply(&role))
            .await
            .map_err(failed(format!("apply Role {namespace}/{name}")))?;
        let binding = RoleBinding {
            metadata: meta(name, namespace),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".to_string(),
                kind: "Role".to_string(),
                name: name.to_string(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".to_string(),
                name: name.to_string(),
                namespace: Some(home.to_string()),
                ..Subject::default()
            }]),
        };
        Api::<RoleBinding>::namespaced(client.clone(), namespace)
            .patch(name, &apply, &Patch::Apply(&binding))
            .await
            .map_err(failed(format!("apply RoleBinding {namespace}/{name}")))?;
    }
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let minted = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .map_err(failed(format!(
            "mint a token for ServiceAccount {home}/{name}"
        )))?;
    let status = minted.status.ok_or_else(|| IdentityError {
        step: format!("mint a token for ServiceAccount {home}/{name}"),
        problem: "the apiserver answered without a token".to_string(),
    })?;
    Ok(DispatcherIdentity {
        username: format!("system:serviceaccount:{home}:{name}"),
        namespaces: roles.keys().cloned().collect(),
        token: Secret::new(status.token),
        expires: Some(status.expiration_timestamp.0.to_string()),
    })
}
