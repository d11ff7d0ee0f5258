//! `fluxrelay cluster add`: an entry from a kubeconfig context, with the Receiver tokens
//! read from the cluster. By default the entry gets a least-privilege identity made with
//! the operator's kubeconfig (a ServiceAccount, Roles with exactly what the entry needs, a
//! bound token); the operator's own credentials are stored only on request.

use std::path::PathBuf;
use std::time::Duration;

use fluxrelay_adapters::cluster_check::receiver_tokens;
use fluxrelay_adapters::dispatcher_identity::provision;
use fluxrelay_core::access::identity::identity_name;
use fluxrelay_core::access::{needed_permissions, role_rules};
use fluxrelay_core::registry::{ClusterEntry, RegistryError};
use serde_json::{Map, Value, json};

use super::store::{Store, store_entry};
use super::{FAIL, NOTE, OK, mode};
use crate::kubeconfig::{KubeconfigContext, read_context};

pub struct AddOptions {
    pub name: String,
    pub kubeconfig: PathBuf,
    pub context: Option<String>,
    pub namespaces: Vec<String>,
    pub projects: Vec<String>,
    pub refs: Vec<String>,
    pub annotate: bool,
    pub read_receiver_tokens: bool,
    pub force: bool,
    /// Store the kubeconfig user's own credentials instead of making the dispatcher
    /// identity (the way before; e.g. a cluster where the operator may not create RBAC).
    pub operator_credentials: bool,
    /// How long the dispatcher identity's token lasts.
    pub token_days: u32,
}

/// Build the entry from the kubeconfig context (credentials extracted, never the whole
/// file), read Receiver tokens from the cluster, validate, and store it. Prints what it
/// did, never a secret.
pub async fn add(options: &AddOptions, store: &Store) -> Result<(), String> {
    let context = read_context(&options.kubeconfig, options.context.as_deref())
        .map_err(|error| error.to_string())?;
    let (mut value, notes) = entry_value(options, &context)?;
    for note in &notes {
        println!("{NOTE} {note}");
    }
    if !options.annotate && options.read_receiver_tokens {
        let tokens = read_receiver_tokens(&context, &options.namespaces).await;
        let mut found = Map::new();
        for (id, token) in tokens {
            match token {
                Ok(token) => {
                    println!("{OK} Receiver {id}: token read from its Secret");
                    found.insert(id, Value::String(token));
                }
                Err(problem) => println!(
                    "{FAIL} Receiver {id}: {problem}; add its token to trigger.receiver_tokens by hand"
                ),
            }
        }
        if !found.is_empty() {
            value["trigger"]["receiver_tokens"] = Value::Object(found);
        }
    }
    let mut entry =
        ClusterEntry::from_value(&value).map_err(|error| invalid(&options.name, &error))?;
    if context.eks.is_none() && !options.operator_credentials {
        value["auth"] = dispatcher_identity(options, &context, &entry).await?;
        entry = ClusterEntry::from_value(&value).map_err(|error| invalid(&options.name, &error))?;
    }
    let text = serde_json::to_string_pretty(&value).map_err(|error| error.to_string())?;
    let place = store_entry(store, &entry.name, &text, options.force).await?;
    println!(
        "{OK} cluster {}: server {}, auth {}, namespaces {}, {} mode; written to {place}",
        entry.name,
        entry.server,
        entry.credentials.kind(),
        entry.namespaces.join(","),
        mode(&entry)
    );
    Ok(())
}

fn invalid(name: &str, error: &RegistryError) -> String {
    let lines: Vec<String> = error
        .errors
        .iter()
        .map(|e| format!("  {}: {}", e.path, e.message))
        .collect();
    format!(
        "the entry for {name} would be invalid:\n{}",
        lines.join("\n")
    )
}

/// The registry entry (as JSON) for a kubeconfig context, and notes for the operator.
fn entry_value(
    options: &AddOptions,
    context: &KubeconfigContext,
) -> Result<(Value, Vec<String>), String> {
    let mut notes = Vec::new();
    let auth = if let Some(token) = &context.token {
        json!({ "token": token })
    } else if let (Some(cert), Some(key)) =
        (&context.client_certificate_pem, &context.client_key_pem)
    {
        json!({ "client_cert": cert, "client_key": key })
    } else if let Some(eks) = &context.eks {
        notes.push(format!(
            "EKS cluster {} in {}: fluxrelay mints its token from its own IAM role; map that role to user fluxrelay-dispatcher with an access entry (docs/eks.md)",
            eks.cluster, eks.region
        ));
        if let Some(role) = &eks.assumed_role {
            notes.push(format!(
                "your kubeconfig assumes role {role}; fluxrelay does not: it uses its own role"
            ));
        }
        json!({ "eks": { "cluster": eks.cluster, "region": eks.region } })
    } else {
        return Err(format!(
            "the kubeconfig user of context {:?} has no token, client certificate or EKS exec: {}",
            context.name,
            context
                .unsupported_auth
                .as_deref()
                .unwrap_or("no credentials")
        ));
    };
    let mut value = json!({
        "name": options.name,
        "server": context.server,
        "auth": auth,
        "namespaces": options.namespaces,
        "trigger": { "mode": if options.annotate { "annotate" } else { "receiver" } },
    });
    if let Some(ca) = &context.ca_pem {
        value["ca"] = Value::String(ca.clone());
    }
    if !options.projects.is_empty() || !options.refs.is_empty() {
        let mut subscription = Map::new();
        if !options.projects.is_empty() {
            subscription.insert("projects".into(), json!(options.projects));
        }
        if !options.refs.is_empty() {
            subscription.insert("refs".into(), json!(options.refs));
        }
        value["subscriptions"] = json!([subscription]);
    }
    if context.eks.is_none() && options.operator_credentials {
        notes.push("--operator-credentials: the entry holds your kubeconfig user's credentials, with all they may do; without the flag, cluster add makes a least-privilege identity instead".to_string());
    }
    Ok((value, notes))
}

/// Make the entry's own identity with the operator's kubeconfig: the ServiceAccount
/// `fluxrelay-<name>` in the first namespace, a Role and RoleBinding of that name in each
/// namespace the entry needs anything in, and a token that expires after `token_days`.
/// Returns the entry's `auth`.
async fn dispatcher_identity(
    options: &AddOptions,
    context: &KubeconfigContext,
    entry: &ClusterEntry,
) -> Result<Value, String> {
    let client = context
        .client()
        .await
        .map_err(|problem| format!("cannot connect with the kubeconfig: {problem}"))?;
    let name = identity_name(&entry.name);
    let home = entry
        .namespaces
        .first()
        .cloned()
        .unwrap_or_else(|| "flux-system".to_string());
    let roles = role_rules(&needed_permissions(entry));
    let ttl = Duration::from_secs(u64::from(options.token_days) * 86_400);
    let identity = provision(&client, &name, &home, &roles, ttl)
        .await
        .map_err(|error| {
            format!(
                "could not make the dispatcher identity ({error}); your kubeconfig user needs to create ServiceAccounts, Roles, RoleBindings and serviceaccounts/token there, or pass --operator-credentials to store its own credentials instead"
            )
        })?;
    for namespace in &identity.namespaces {
        let rules = roles.get(namespace).map_or(0, Vec::len);
        println!(
            "{OK} Role and RoleBinding {namespace}/{name}: {rules} rule(s), exactly what the entry needs"
        );
    }
    println!(
        "{OK} dispatcher identity {}: token expires {} (renew with cluster add --force before then; cluster check warns 14 days ahead)",
        identity.username,
        identity.expires.as_deref().unwrap_or("(unknown)")
    );
    Ok(json!({ "token": identity.token.expose() }))
}

async fn read_receiver_tokens(
    context: &KubeconfigContext,
    namespaces: &[String],
) -> Vec<(String, Result<String, String>)> {
    let client = match context.client().await {
        Ok(client) => client,
        Err(problem) => {
            return vec![(
                "(all)".into(),
                Err(format!("cannot connect with the kubeconfig: {problem}")),
            )];
        }
    };
    let mut found = Vec::new();
    for namespace in namespaces {
        match receiver_tokens(&client, namespace).await {
            Ok(tokens) => found.extend(tokens.into_iter().map(|t| {
                (
                    t.receiver.to_string(),
                    t.token.map(|token| token.expose().to_string()),
                )
            })),
            Err(problem) => found.push((
                format!("{namespace}/*"),
                Err(format!("cannot list Receivers: {problem}")),
            )),
        }
    }
    found
}
