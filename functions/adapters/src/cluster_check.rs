//! Diagnostics for `fluxrelay cluster add|check`: ask the apiserver what the entry's
//! identity may do (`SelfSubjectAccessReview`), and read Receiver tokens from the cluster
//! (with the operator's own kubeconfig) so they need not be copied by hand.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};

use fluxrelay_core::access::Permission;
use fluxrelay_core::flux::{ObjectRef, RECEIVER_GROUP, ReceiverType};
use fluxrelay_core::secret::Secret;

/// The apiserver's answer to "may I?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Allowed,
    Denied { reason: String },
}

/// Ask whether the client's identity has `permission`. `Err` when the question itself
/// failed (unreachable, credentials rejected): the text says which.
pub async fn can_i(client: &kube::Client, permission: &Permission) -> Result<Access, String> {
    let (resource, subresource) = permission.resource_parts();
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(permission.verb.to_string()),
                group: Some(permission.group.to_string()),
                resource: Some(resource.to_string()),
                subresource: subresource.map(str::to_string),
                namespace: Some(permission.namespace.clone()),
                name: permission.name.clone(),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(describe)?;
    let status = answer.status.unwrap_or_default();
    if status.allowed {
        Ok(Access::Allowed)
    } else {
        Ok(Access::Denied {
            reason: status
                .reason
                .filter(|reason| !reason.is_empty())
                .unwrap_or_else(|| "no RBAC rule allows it".to_string()),
        })
    }
}

/// A kube error for an operator: status and message, never a request body.
pub fn describe(error: kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            let hint = match status.code {
                401 => " (the credentials were rejected: expired or wrong token/certificate)",
                403 => " (the identity lacks a permission)",
                _ => "",
            };
            format!(
                "apiserver answered {}: {}{hint}",
                status.code, status.message
            )
        }
        other => format!("could not talk to the apiserver: {other}"),
    }
}

/// A Receiver and the token it was created with, read from its `spec.secretRef`.
#[derive(Debug, Clone)]
pub struct ReceiverToken {
    pub receiver: ObjectRef,
    pub receiver_type: String,
    /// `Err` says why the token could not be read (no secretRef, Secret missing, no
    /// permission).
    pub token: Result<Secret, String>,
}

/// The tokens of every Receiver in `namespace` whose type signs or carries a token.
pub async fn receiver_tokens(
    client: &kube::Client,
    namespace: &str,
) -> Result<Vec<ReceiverToken>, String> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(RECEIVER_GROUP, "v1", "Receiver"),
        "receivers",
    );
    let receivers: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let list = receivers
        .list(&ListParams::default())
        .await
        .map_err(describe)?;
    let secrets: Api<KubeSecret> = Api::namespaced(client.clone(), namespace);
    let mut tokens = Vec::new();
    for receiver in list.items {
        let name = receiver.metadata.name.clone().unwrap_or_default();
        let spec = receiver.data.get("spec");
        let receiver_type = spec
            .and_then(|spec| spec.get("type"))
            .and_then(|value| value.as_str())
            .unwrap_or_default()
            .to_string();
        if !ReceiverType::parse(&receiver_type).needs_token() {
            continue;
        }
        let secret_name = spec
            .and_then(|spec| spec.pointer("/secretRef/name"))
            .and_then(|value| value.as_str())
            .map(str::to_string);
        let token = match secret_name {
            None => Err("the Receiver has no spec.secretRef".to_string()),
            Some(secret_name) => match secrets.get(&secret_name).await {
                Ok(secret) => secret
                    .data
                    .and_then(|data| data.get("token").cloned())
                    .and_then(|bytes| String::from_utf8(bytes.0).ok())
                    .map(Secret::new)
                    .ok_or_else(|| format!("Secret {namespace}/{secret_name} has no `token` key")),
                Err(error) => Err(format!(
                    "Secret {namespace}/{secret_name}: {}",
                    describe(error)
                )),
            },
        };
        tokens.push(ReceiverToken {
            receiver: ObjectRef {
                namespace: namespace.to_string(),
                name,
            },
            receiver_type,
            token,
        });
    }
    Ok(tokens)
}
