//! The registry index of the AWS functions: one JSON document (an S3 object) that lists
//! every cluster, so route reads one object whatever the number of clusters, and never a
//! credential.
//!
//! ```json
//! {"clusters": [
//!   {"name": "prod-eu", "secret": true, "subscriptions": [{"projects": ["platform/**"]}]},
//!   {"name": "eks-1", "server": "https://….eks.amazonaws.com", "ca": "-----BEGIN…",
//!    "auth": {"eks": {"cluster": "eks-1", "region": "eu-west-1"}}, "subscriptions": […]}
//! ]}
//! ```
//!
//! An item is either a pointer, `{name, subscriptions, secret: true}`, whose entry (with its
//! credentials, its server and everything else dispatch uses) is the secret `<prefix><name>`,
//! or a whole entry that holds no secret (an EKS entry without Receiver tokens), which then
//! needs no secret at all. The subscriptions of a pointer are the index's: whatever the
//! secret says about subscriptions is not read. Nothing that reaches a cluster with a
//! credential is in the index, so whoever may write the index cannot send a credential
//! anywhere; an inline EKS entry's server is checked against the cluster's real endpoint
//! before a token is minted (`adapters/src/eks.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::parse::{secret_fields, subscriptions_only};
use super::{
    ClusterEntry, ClusterRoute, FieldError, RegistryError, RouteListing, is_valid_cluster_name,
};
use crate::subscriptions::Subscription;

/// Where dispatch finds a listed cluster's entry.
#[derive(Debug, Clone)]
pub enum IndexedEntry {
    /// The secret `<prefix><name>` holds it.
    Secret,
    /// The index holds all of it: it has no secret.
    Inline(Arc<ClusterEntry>),
    /// Listed, but the item cannot be used; why.
    Invalid(RegistryError),
}

/// One read of the index.
#[derive(Debug, Clone, Default)]
pub struct RegistryIndex {
    /// What route needs: every cluster's subscriptions.
    pub routes: Arc<RouteListing>,
    /// Every listed cluster, by name.
    pub entries: BTreeMap<String, IndexedEntry>,
}

fn problem(path: impl Into<String>, message: impl Into<String>) -> RegistryError {
    RegistryError {
        errors: vec![FieldError {
            path: path.into(),
            message: message.into(),
        }],
    }
}

/// Fields a pointer item may have.
const POINTER_FIELDS: &[&str] = &["name", "secret", "subscriptions"];

struct Item {
    name: String,
    subscriptions: Result<Vec<Subscription>, RegistryError>,
    entry: IndexedEntry,
}

impl Item {
    fn parse(value: &Value, position: usize) -> Item {
        let fallback = format!("index-{position}");
        let Some(object) = value.as_object() else {
            let error = problem("(item)", "must be a JSON object");
            return Item {
                name: fallback,
                subscriptions: Err(error.clone()),
                entry: IndexedEntry::Invalid(error),
            };
        };
        let name = object
            .get("name")
            .and_then(Value::as_str)
            .filter(|name| is_valid_cluster_name(name))
            .map_or(fallback, str::to_string);
        let subscriptions = subscriptions_only(object.get("subscriptions"));
        let entry = match object.get("secret") {
            Some(Value::Bool(true)) => pointer(object),
            Some(_) => IndexedEntry::Invalid(problem(
                "secret",
                "must be true (the entry is the secret <prefix><name>), or be left out for an entry that holds no secret",
            )),
            None => inline(value, object),
        };
        Item {
            name,
            subscriptions,
            entry,
        }
    }
}

fn pointer(object: &Map<String, Value>) -> IndexedEntry {
    let mut errors: Vec<FieldError> = object
        .keys()
        .filter(|key| !POINTER_FIELDS.contains(&key.as_str()))
        .map(|key| FieldError {
            path: key.clone(),
            message: "does not belong in an index item that points at a secret (only name, secret and subscriptions; the rest is read from the secret)".into(),
        })
        .collect();
    if let Err(error) = subscriptions_only(object.get("subscriptions")) {
        errors.extend(error.errors);
    }
    match object.get("name").and_then(Value::as_str) {
        Some(name) if is_valid_cluster_name(name) => {}
        _ => errors.push(FieldError {
            path: "name".into(),
            message: "must be 1 to 63 characters of A-Z, a-z, 0-9, '-', '_' or '.'".into(),
        }),
    }
    if errors.is_empty() {
        IndexedEntry::Secret
    } else {
        IndexedEntry::Invalid(RegistryError { errors })
    }
}

fn inline(value: &Value, object: &Map<String, Value>) -> IndexedEntry {
    let secrets = secret_fields(object);
    if !secrets.is_empty() {
        // Not shown: the values. Route can read the index, so this is a secret exposed.
        return IndexedEntry::Invalid(RegistryError {
            errors: secrets
                .into_iter()
                .map(|field| FieldError {
                    path: field.into(),
                    message: "holds a secret, and the index is readable by route: store the whole entry as the secret <prefix><name>, list it here as {name, subscriptions, secret: true}, and rotate this credential".into(),
                })
                .collect(),
        });
    }
    match ClusterEntry::from_value(value) {
        Ok(entry) => IndexedEntry::Inline(Arc::new(entry)),
        Err(error) => IndexedEntry::Invalid(error),
    }
}

impl RegistryIndex {
    /// Parses the index. `Err` only when the document as a whole is unusable (not JSON,
    /// no `clusters` list); a bad item makes that one cluster unusable.
    pub fn from_json(text: &str) -> Result<Self, RegistryError> {
        let value: Value = serde_json::from_str(text).map_err(|error| {
            problem(
                "(index)",
                format!(
                    "not valid JSON (line {}, column {})",
                    error.line(),
                    error.column()
                ),
            )
        })?;
        let Some(object) = value.as_object() else {
            return Err(problem(
                "(index)",
                "must be a JSON object {\"clusters\": [...]}",
            ));
        };
        if let Some(key) = object.keys().find(|key| key.as_str() != "clusters") {
            return Err(problem(key.as_str(), "unknown field (known: clusters)"));
        }
        let Some(items) = object.get("clusters").and_then(Value::as_array) else {
            return Err(problem("clusters", "must be a list of entries"));
        };
        Ok(Self::from_items(items))
    }

    fn from_items(items: &[Value]) -> Self {
        let parsed: Vec<Item> = items
            .iter()
            .enumerate()
            .map(|(position, value)| Item::parse(value, position))
            .collect();
        let mut positions: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (position, item) in parsed.iter().enumerate() {
            positions.entry(&item.name).or_default().push(position);
        }
        let mut index = RegistryIndex::default();
        let mut routes = RouteListing::default();
        let mut unusable = Vec::new();
        for item in &parsed {
            let twice = &positions[item.name.as_str()];
            if twice.len() > 1 {
                let listed: Vec<String> = twice.iter().map(|p| format!("clusters[{p}]")).collect();
                index.entries.insert(
                    item.name.clone(),
                    IndexedEntry::Invalid(problem(
                        "name",
                        format!(
                            "`{}` is listed more than once ({}), so neither is used",
                            item.name,
                            listed.join(", ")
                        ),
                    )),
                );
                unusable.push(item.name.clone());
                continue;
            }
            index.entries.insert(item.name.clone(), item.entry.clone());
            match &item.subscriptions {
                Ok(subscriptions) => routes.routes.push(ClusterRoute {
                    name: item.name.clone(),
                    subscriptions: subscriptions.clone(),
                }),
                Err(_) => unusable.push(item.name.clone()),
            }
        }
        unusable.sort();
        unusable.dedup();
        routes.unusable = unusable;
        index.routes = Arc::new(routes);
        index
    }
}

/// Whether a whole entry (as JSON) holds a secret, and so belongs in a secret with a
/// pointer in the index.
pub fn holds_secret(entry: &Value) -> bool {
    entry
        .as_object()
        .is_some_and(|object| !secret_fields(object).is_empty())
}

/// The index item for a whole entry: a pointer with its subscriptions when it holds a
/// secret, else the entry itself.
pub fn index_item(entry: &Value) -> Value {
    if !holds_secret(entry) {
        return entry.clone();
    }
    let mut item = Map::new();
    if let Some(name) = entry.get("name") {
        item.insert("name".into(), name.clone());
    }
    item.insert("secret".into(), Value::Bool(true));
    if let Some(subscriptions) = entry.get("subscriptions") {
        item.insert("subscriptions".into(), subscriptions.clone());
    }
    Value::Object(item)
}

/// The index text with `item` added, or in place of the item of the same name. `current` is
/// the index as stored (`None`: there is none yet). Items it cannot read are kept as they are.
pub fn with_item(current: Option<&str>, item: Value) -> Result<String, RegistryError> {
    let mut items: Vec<Value> = match current {
        None => Vec::new(),
        Some(text) => {
            let value: Value = serde_json::from_str(text)
                .map_err(|error| problem("(index)", format!("not valid JSON: {error}")))?;
            value
                .get("clusters")
                .and_then(Value::as_array)
                .cloned()
                .ok_or_else(|| problem("clusters", "must be a list of entries"))?
        }
    };
    let name = item.get("name").cloned();
    match items
        .iter_mut()
        .find(|existing| existing.get("name") == name.as_ref())
    {
        Some(existing) => *existing = item,
        None => items.push(item),
    }
    let mut document = Map::new();
    document.insert("clusters".into(), Value::Array(items));
    serde_json::to_string_pretty(&Value::Object(document))
        .map_err(|error| problem("(index)", error.to_string()))
}

#[cfg(test)]
#[path = "index_test.rs"]
mod tests;
