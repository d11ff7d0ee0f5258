//! Commit statuses as fluxrelay names and reads them: the name template
//! (`fluxrelay/{cluster}` by default), the latest status of each name, the summary over
//! the clusters, and what `fluxrelay wait` makes of a commit's statuses.

use serde_json::Value;

use super::StatusState;
use crate::subscriptions::PatternList;

pub const DEFAULT_NAME_TEMPLATE: &str = "fluxrelay/{cluster}";
const CLUSTER_PLACEHOLDER: &str = "{cluster}";

/// How statuses are named: a template with `{cluster}` exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusNaming {
    prefix: String,
    suffix: String,
}

impl Default for StatusNaming {
    fn default() -> Self {
        Self {
            prefix: "fluxrelay/".to_string(),
            suffix: String::new(),
        }
    }
}

impl StatusNaming {
    pub fn new(template: &str) -> Result<Self, String> {
        let template = template.trim();
        let Some((prefix, suffix)) = template.split_once(CLUSTER_PLACEHOLDER) else {
            return Err(format!("must contain {CLUSTER_PLACEHOLDER}"));
        };
        if suffix.contains(CLUSTER_PLACEHOLDER) {
            return Err(format!("must contain {CLUSTER_PLACEHOLDER} only once"));
        }
        if template.chars().count() > 150 || template.chars().any(char::is_control) {
            return Err("must be at most 150 characters, without control characters".into());
        }
        Ok(Self {
            prefix: prefix.to_string(),
            suffix: suffix.to_string(),
        })
    }

    pub fn template(&self) -> String {
        format!("{}{CLUSTER_PLACEHOLDER}{}", self.prefix, self.suffix)
    }

    pub fn name(&self, cluster: &str) -> String {
        format!("{}{cluster}{}", self.prefix, self.suffix)
    }

    /// The cluster a status name stands for, if the name follows the template.
    pub fn cluster<'a>(&self, name: &'a str) -> Option<&'a str> {
        let cluster = name
            .strip_prefix(&self.prefix)?
            .strip_suffix(&self.suffix)?;
        (!cluster.is_empty()).then_some(cluster)
    }
}

/// One commit status as GitLab lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitStatus {
    pub id: u64,
    pub name: String,
    pub state: Option<StatusState>,
    pub description: String,
    pub git_ref: Option<String>,
}

/// A page of `GET …/commits/:sha/statuses`; `None` when the body is not a list.
pub fn parse_list(body: &[u8]) -> Option<Vec<CommitStatus>> {
    let value: Value = serde_json::from_slice(body).ok()?;
    Some(
        value
            .as_array()?
            .iter()
            .map(|item| CommitStatus {
                id: item.get("id").and_then(Value::as_u64).unwrap_or_default(),
                name: item
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                state: item
                    .get("status")
                    .and_then(Value::as_str)
                    .and_then(StatusState::parse),
                description: item
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                git_ref: item.get("ref").and_then(Value::as_str).map(str::to_string),
            })
            .collect(),
    )
}

/// The newest status of each name (GitLab lists the latest per name already; a client that
/// asked with `all=true`, or pages that overlap, may see several: the highest id wins).
pub fn latest_by_name(statuses: &[CommitStatus]) -> Vec<CommitStatus> {
    let mut latest: Vec<CommitStatus> = Vec::new();
    for status in statuses {
        match latest.iter_mut().find(|s| s.name == status.name) {
            Some(seen) if seen.id < status.id => *seen = status.clone(),
            Some(_) => {}
            None => latest.push(status.clone()),
        }
    }
    latest.sort_by(|a, b| a.name.cmp(&b.name));
    latest
}

/// Each cluster's status on a commit (the latest per name that follows the template).
pub fn cluster_states(
    naming: &StatusNaming,
    statuses: &[CommitStatus],
) -> Vec<(String, CommitStatus)> {
    latest_by_name(statuses)
        .into_iter()
        .filter_map(|status| {
            let cluster = naming.cluster(&status.name)?.to_string();
            Some((cluster, status))
        })
        .collect()
}

/// The summary over the clusters' statuses, once each of them has ended: `success` when
/// all succeeded, `failed` when any failed, else `canceled`; the description counts them.
/// `None` while any is still pending or running (the summary is posted once, at the end).
pub fn summary(clusters: &[(String, StatusState)]) -> Option<(StatusState, String)> {
    if clusters.is_empty() || clusters.iter().any(|(_, state)| !state.is_terminal()) {
        return None;
    }
    let count = |wanted: StatusState| clusters.iter().filter(|(_, s)| *s == wanted).count();
    let failed: Vec<&str> = clusters
        .iter()
        .filter(|(_, s)| *s == StatusState::Failed)
        .map(|(c, _)| c.as_str())
        .collect();
    let total = clusters.len();
    let succeeded = count(StatusState::Success);
    if !failed.is_empty() {
        return Some((
            StatusState::Failed,
            format!(
                "{succeeded} of {total} clusters deployed; failed: {}",
                failed.join(", ")
            ),
        ));
    }
    if succeeded == total {
        return Some((
            StatusState::Success,
            format!("deployed to all {total} clusters"),
        ));
    }
    let other: Vec<&str> = clusters
        .iter()
        .filter(|(_, s)| *s != StatusState::Success)
        .map(|(c, _)| c.as_str())
        .collect();
    Some((
        StatusState::Canceled,
        format!(
            "{succeeded} of {total} clusters deployed; not deployed: {}",
            other.join(", ")
        ),
    ))
}

/// What `fluxrelay wait` sees on a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitView {
    /// Each matching cluster's state and description, sorted by cluster.
    pub clusters: Vec<(String, Option<StatusState>, String)>,
    /// Clusters named exactly (no glob characters) that have no status yet.
    pub missing: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitVerdict {
    /// Not every expected cluster has ended yet.
    Waiting,
    /// Every cluster succeeded: exit 0.
    AllSucceeded,
    /// Every cluster ended, and not all succeeded: exit non-zero.
    NotAllSucceeded,
}

/// The clusters whose names match any of `patterns` (`*` within a name; no pattern: all),
/// and the patterns without glob characters that no status answers yet.
pub fn wait_view(
    naming: &StatusNaming,
    statuses: &[CommitStatus],
    patterns: &[String],
) -> Result<WaitView, String> {
    let globs = if patterns.is_empty() {
        PatternList::any()
    } else {
        PatternList::new(patterns, false).map_err(|e| e.to_string())?
    };
    let clusters: Vec<(String, Option<StatusState>, String)> = cluster_states(naming, statuses)
        .into_iter()
        .filter(|(cluster, _)| globs.is_match(cluster))
        .map(|(cluster, status)| (cluster, status.state, status.description))
        .collect();
    let missing = patterns
        .iter()
        .filter(|p| !p.contains(['*', '?', '[', '{']))
        .filter(|p| !clusters.iter().any(|(c, _, _)| c == *p))
        .cloned()
        .collect();
    Ok(WaitView { clusters, missing })
}

impl WaitView {
    pub fn verdict(&self) -> WaitVerdict {
        let ended = |state: &Option<StatusState>| state.is_some_and(StatusState::is_terminal);
        if self.clusters.is_empty()
            || !self.missing.is_empty()
            || !self.clusters.iter().all(|(_, state, _)| ended(state))
        {
            return WaitVerdict::Waiting;
        }
        if self
            .clusters
            .iter()
            .all(|(_, state, _)| *state == Some(StatusState::Success))
        {
            WaitVerdict::AllSucceeded
        } else {
            WaitVerdict::NotAllSucceeded
        }
    }
}

#[cfg(test)]
#[path = "statuses_test.rs"]
mod tests;
