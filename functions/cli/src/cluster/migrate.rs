//! `fluxrelay cluster migrate --store secretsmanager`: from the layout before issue 13 (one
//! secret per cluster under the prefix, each a whole entry, found by listing) to the
//! registry index (`docs/operations.md`, "Migrating the registry").
//!
//! Every secret stays as it is, so the stack before the upgrade keeps working while the
//! index is written; dispatch reads those same secrets afterwards (their subscriptions are
//! then the index's). An entry that holds no secret (EKS) goes into the index whole, and its
//! secret is no longer read: it is named for deletion, never deleted here. A secret whose
//! name is not `<prefix><name>` is copied to that name (with `--apply`).

use fluxrelay_adapters::registry_aws::put_index_items;
use fluxrelay_core::registry::ClusterEntry;
use fluxrelay_core::registry::index::{holds_secret, index_item};
use serde_json::Value;

use super::store::{Store, located, s3_client, secrets_client};

/// Reads (and with `apply` writes) the registry; prints the plan, one line per secret.
pub async fn migrate(store: &Store, apply: bool) -> Result<(), String> {
    let Store::SecretsManager { location } = store else {
        return Err("migrate works on the AWS registry: pass --store secretsmanager --bucket <RegistryBucketName>".into());
    };
    let location = located(location)?;
    let secrets = secrets_client().await;
    let mut names = Vec::new();
    let mut next_token = None;
    loop {
        let page = secrets
            .list_secrets()
            .filters(
                aws_sdk_secretsmanager::types::Filter::builder()
                    .key(aws_sdk_secretsmanager::types::FilterNameStringType::Name)
                    .values(&location.prefix)
                    .build(),
            )
            .set_next_token(next_token.take())
            .send()
            .await
            .map_err(|error| {
                format!(
                    "ListSecrets under {} failed: {}",
                    location.prefix,
                    aws_sdk_secretsmanager::error::DisplayErrorContext(&error)
                )
            })?;
        names.extend(
            page.secret_list()
                .iter()
                .filter_map(|secret| secret.name())
                .filter(|name| name.starts_with(&location.prefix))
                .map(str::to_string),
        );
        match page.next_token() {
            Some(token) if !token.is_empty() => next_token = Some(token.to_string()),
            _ => break,
        }
    }
    names.sort();
    let mut items = Vec::new();
    let mut copies = Vec::new();
    for secret_name in &names {
        let text = secrets
            .get_secret_value()
            .secret_id(secret_name)
            .version_stage("AWSCURRENT")
            .send()
            .await
            .map_err(|error| {
                format!(
                    "GetSecretValue of {secret_name} failed: {}",
                    aws_sdk_secretsmanager::error::DisplayErrorContext(&error)
                )
            })?
            .secret_string()
            .unwrap_or_default()
            .to_string();
        let Ok(entry) = serde_json::from_str::<Value>(&text) else {
            println!("{secret_name}: skipped: not JSON (fix it, then run migrate again)");
            continue;
        };
        let Some(name) = entry
            .get("name")
            .and_then(Value::as_str)
            .filter(|name| fluxrelay_core::registry::is_valid_cluster_name(name))
        else {
            println!("{secret_name}: skipped: no valid `name` (fix it, then run migrate again)");
            continue;
        };
        let valid = match ClusterEntry::from_value(&entry) {
            Ok(_) => String::new(),
            Err(error) => format!(" (invalid, as before: {error})"),
        };
        let wanted = location.secret_id(name);
        if holds_secret(&entry) {
            if *secret_name == wanted {
                println!("{name}: index item pointing at {secret_name}{valid}");
            } else {
                println!("{name}: index item pointing at {wanted}, a copy of {secret_name}{valid}");
                copies.push((wanted, text));
            }
        } else {
            println!(
                "{name}: whole entry in the index (it holds no secret); {secret_name} is no longer read once the new stack runs: delete it then{valid}"
            );
        }
        items.push(index_item(&entry));
    }
    let target = format!("s3://{}/{}", location.bucket, location.index_key);
    if !apply {
        println!(
            "{} cluster(s) for {target}; nothing written: run again with --apply",
            items.len()
        );
        return Ok(());
    }
    for (secret_id, text) in copies {
        let created = secrets
            .create_secret()
            .name(&secret_id)
            .secret_string(text)
            .send()
            .await;
        if let Err(error) = created
            && !error
                .as_service_error()
                .is_some_and(|e| e.is_resource_exists_exception())
        {
            return Err(format!(
                "cannot create {secret_id}: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(&error)
            ));
        }
    }
    let count = items.len();
    put_index_items(
        &s3_client().await,
        &location.bucket,
        &location.index_key,
        items,
    )
    .await?;
    println!("wrote {count} cluster(s) to {target}");
    Ok(())
}
