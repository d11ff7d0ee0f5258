//! The parts of GitLab's payloads that fluxrelay reads. Unknown fields are ignored;
//! missing required fields and wrong types are shape errors.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub(super) struct ProjectPayload {
    pub id: Option<u64>,
    pub path_with_namespace: String,
    pub web_url: String,
    pub git_http_url: Option<String>,
    pub git_ssh_url: Option<String>,
    pub default_branch: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct CommitPayload {
    pub added: Option<Vec<String>>,
    pub modified: Option<Vec<String>>,
    pub removed: Option<Vec<String>>,
}

/// `Push Hook`, `Tag Push Hook` and system-hook `push` / `tag_push`.
#[derive(Debug, Deserialize)]
pub(super) struct PushPayload {
    pub before: String,
    pub after: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub checkout_sha: Option<String>,
    pub project_id: Option<u64>,
    pub project: ProjectPayload,
    pub commits: Option<Vec<CommitPayload>>,
    pub total_commits_count: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub(super) struct ChangePayload {
    pub before: String,
    pub after: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
}

/// System-hook `repository_update`: one push per entry of `changes`.
#[derive(Debug, Deserialize)]
pub(super) struct RepositoryUpdatePayload {
    pub project_id: Option<u64>,
    pub project: ProjectPayload,
    pub changes: Vec<ChangePayload>,
}
