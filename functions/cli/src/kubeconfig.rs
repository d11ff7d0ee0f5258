//! `fluxrelay serve --kubeconfig PATH [--context NAME]`: one registry entry straight from a
//! kubeconfig context, subscribed to every push, validated like any other entry.

use std::path::Path;

use fluxrelay_core::registry::ClusterEntry;
use kube::config::Kubeconfig;
use serde_json::json;

use crate::config::{ConfigError, Problem};

pub fn entry_from_kubeconfig(
    path: &Path,
    context: Option<&str>,
) -> Result<ClusterEntry, ConfigError> {
    let fail = |field: &str, problem: String| ConfigError {
        problems: vec![Problem {
            file: path.to_path_buf(),
            field: field.to_string(),
            problem,
        }],
    };
    let text = std::fs::read_to_string(path)
        .map_err(|error| fail("", format!("cannot read the kubeconfig: {error}")))?;
    // The parser's messages quote the document, which holds credentials.
    let kubeconfig = Kubeconfig::from_yaml(&text).map_err(|_| {
        fail(
            "",
            "not a valid kubeconfig (details withheld: it holds credentials)".into(),
        )
    })?;
    let context_name = match context {
        Some(name) => name.to_string(),
        None => kubeconfig
            .current_context
            .clone()
            .ok_or_else(|| fail("current-context", "is not set; pass --context NAME".into()))?,
    };
    let selected = kubeconfig
        .contexts
        .iter()
        .find(|named| named.name == context_name)
        .and_then(|named| named.context.as_ref())
        .ok_or_else(|| {
            let known: Vec<&str> = kubeconfig
                .contexts
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            fail(
                "contexts",
                format!(
                    "has no context {context_name:?} (known: {})",
                    known.join(", ")
                ),
            )
        })?;
    let server = kubeconfig
        .clusters
        .iter()
        .find(|named| named.name == selected.cluster)
        .and_then(|named| named.cluster.as_ref())
        .and_then(|cluster| cluster.server.clone())
        .ok_or_else(|| {
            fail(
                "clusters",
                format!(
                    "context {context_name:?} names cluster {:?}, which has no server",
                    selected.cluster
                ),
            )
        })?;
    let value = json!({
        "name": cluster_name(&context_name),
        "server": server,
        "kubeconfig": text,
        "context": context_name,
    });
    ClusterEntry::from_value(&value).map_err(|error| ConfigError {
        problems: error
            .errors
            .into_iter()
            .map(|field_error| Problem {
                file: path.to_path_buf(),
                field: format!("context {context_name:?}: {}", field_error.path),
                problem: field_error.message,
            })
            .collect(),
    })
}

/// Context names such as `arn:aws:eks:...:cluster/prod` or `admin@prod` become valid
/// registry names: other characters turn into `-`, at most 63 kept (the end is the most
/// specific part).
fn cluster_name(context: &str) -> String {
    let cleaned: String = context
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let start = cleaned.len().saturating_sub(63);
    let name = cleaned[start..].trim_matches('-');
    if name.is_empty() {
        "kubeconfig".to_string()
    } else {
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::cluster_name;

    #[test]
    fn context_names_become_registry_names() {
        for (context, name) in [
            ("kind-kind", "kind-kind"),
            ("admin@prod", "admin-prod"),
            (
                "arn:aws:eks:eu-west-1:123456789012:cluster/prod",
                "arn-aws-eks-eu-west-1-123456789012-cluster-prod",
            ),
            ("@@@", "kubeconfig"),
            (&"x".repeat(80), &"x".repeat(63)),
        ] {
            assert_eq!(cluster_name(context), name, "{context}");
        }
    }
}
