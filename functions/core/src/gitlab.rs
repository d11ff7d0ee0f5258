//! GitLab webhook events → `Push` records.
//!
//! Project and group hooks send `Push Hook` / `Tag Push Hook`; system hooks send
//! `System Hook` with the kind in the body (`push`, `tag_push`, `repository_update`, …).
//! Everything that is not a push is `Ignored`, never an error: GitLab disables hooks that
//! fail, and an unsupported event is not a failure.

mod payload;
mod pipeline;

use std::collections::BTreeSet;

use http::HeaderMap;

use crate::push::{PUSH_VERSION, Project, Push, PushEvent, is_zero_sha};
use payload::{ChangePayload, CommitPayload, ProjectPayload, PushPayload, RepositoryUpdatePayload};

pub const EVENT_HEADER: &str = "x-gitlab-event";
pub const INSTANCE_HEADER: &str = "x-gitlab-instance";

/// Longest ref or project path we accept; GitLab's own limits are far lower.
pub const MAX_NAME_BYTES: usize = 1024;
/// Longest project URL we accept.
pub const MAX_URL_BYTES: usize = 2048;
/// Most ref changes one `repository_update` may carry: each becomes one queued push.
pub const MAX_CHANGES: usize = 1000;
/// Beyond this many changed paths (or bytes of them) the list is dropped as "unknown":
/// a `Push` must stay far below the 256 KiB queue message limit.
pub const MAX_CHANGED_PATHS: usize = 1000;
pub const MAX_CHANGED_PATH_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedEvent {
    Pushes(Vec<Push>),
    Ignored { reason: String },
}

/// Why a body that claims to be a GitLab event cannot be read (→ 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedEvent {
    #[error("missing X-Gitlab-Event header")]
    MissingEventHeader,
    #[error("header {0} appears more than once")]
    DuplicateHeader(&'static str),
    #[error("X-Gitlab-Event header is not valid text")]
    EventHeaderNotText,
    #[error("body is not valid UTF-8 JSON: {0}")]
    NotJson(String),
    #[error("body does not have the shape of a {event} event: {detail}")]
    Shape { event: &'static str, detail: String },
    #[error("field {field}: {problem}")]
    Field {
        field: &'static str,
        problem: String,
    },
}

pub(crate) fn field(field: &'static str, problem: impl Into<String>) -> MalformedEvent {
    MalformedEvent::Field {
        field,
        problem: problem.into(),
    }
}

/// Where the event came from: project/group hooks list changed files, system hooks never do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HookKind {
    ProjectOrGroup,
    System,
}

/// One webhook request as ingest accepted it.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// RFC 3339 time of acceptance.
    pub received_at: &'a str,
    /// What makes this delivery distinct (`crate::ingest::delivery_id`): part of each
    /// push's key.
    pub id: &'a str,
}

pub fn parse_event(
    headers: &HeaderMap,
    body: &[u8],
    delivery: &Delivery<'_>,
) -> Result<ParsedEvent, MalformedEvent> {
    let event = single_header(headers, EVENT_HEADER, "X-Gitlab-Event")?
        .ok_or(MalformedEvent::MissingEventHeader)?;
    let event = event
        .to_str()
        .map_err(|_| MalformedEvent::EventHeaderNotText)?;
    let instance_header = single_header(headers, INSTANCE_HEADER, "X-Gitlab-Instance")?
        .and_then(|value| value.to_str().ok());

    match event {
        "Push Hook" | "Tag Push Hook" => {
            let payload: PushPayload = decode(body, "GitLab push")?;
            let push =
                normalise_push(payload, instance_header, HookKind::ProjectOrGroup, delivery)?;
            Ok(ParsedEvent::Pushes(vec![push]))
        }
        "System Hook" => parse_system_hook(body, instance_header, delivery),
        "Pipeline Hook" => pipeline::parse(body, instance_header, delivery),
        other => Ok(ParsedEvent::Ignored {
            reason: format!("event {} is not a push", quote_untrusted(other)),
        }),
    }
}

fn parse_system_hook(
    body: &[u8],
    instance_header: Option<&str>,
    delivery: &Delivery<'_>,
) -> Result<ParsedEvent, MalformedEvent> {
    #[derive(serde::Deserialize)]
    struct Kind {
        event_name: Option<String>,
        object_kind: Option<String>,
    }
    let kind: Kind = decode(body, "GitLab system hook")?;
    let name = kind.event_name.or(kind.object_kind).unwrap_or_default();
    match name.as_str() {
        "push" | "tag_push" => {
            let payload: PushPayload = decode(body, "GitLab system hook push")?;
            let push = normalise_push(payload, instance_header, HookKind::System, delivery)?;
            Ok(ParsedEvent::Pushes(vec![push]))
        }
        "repository_update" => {
            let payload: RepositoryUpdatePayload = decode(body, "GitLab repository_update")?;
            normalise_repository_update(payload, instance_header, delivery).map(ParsedEvent::Pushes)
        }
        other => Ok(ParsedEvent::Ignored {
            reason: format!("system hook event {} is not a push", quote_untrusted(other)),
        }),
    }
}

pub(crate) fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
    display: &'static str,
) -> Result<Option<&'a http::HeaderValue>, MalformedEvent> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(MalformedEvent::DuplicateHeader(display));
    }
    Ok(first)
}

pub(crate) fn decode<'a, T: serde::Deserialize<'a>>(
    body: &'a [u8],
    event: &'static str,
) -> Result<T, MalformedEvent> {
    let text = std::str::from_utf8(body).map_err(|e| MalformedEvent::NotJson(e.to_string()))?;
    serde_json::from_str(text).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            MalformedEvent::NotJson(bounded_detail(&e))
        } else {
            MalformedEvent::Shape {
                event,
                detail: bounded_detail(&e),
            }
        }
    })
}

/// Longest parser message put in an answer or a log line.
const MAX_DETAIL_CHARS: usize = 200;

/// serde's "invalid type: string \"…\"" quotes the offending value whole: a 5 MiB string
/// would make a 20 MiB answer (over the 6 MB Lambda response limit, so GitLab would see a
/// failure) and a 20 MiB log line. The start of the message says what is wrong.
fn bounded_detail(error: &serde_json::Error) -> String {
    let message = error.to_string();
    if message.chars().count() <= MAX_DETAIL_CHARS {
        return message;
    }
    let mut cut: String = message.chars().take(MAX_DETAIL_CHARS).collect();
    cut.push_str("… (cut)");
    cut
}

/// Untrusted text in a reason: bounded, printable, quoted.
pub(crate) fn quote_untrusted(text: &str) -> String {
    let clean: String = text.chars().filter(|c| !c.is_control()).take(64).collect();
    format!("{clean:?}")
}

fn normalise_push(
    payload: PushPayload,
    instance_header: Option<&str>,
    hook: HookKind,
    delivery: &Delivery<'_>,
) -> Result<Push, MalformedEvent> {
    let project = normalise_project(&payload.project, payload.project_id)?;
    let instance = instance_origin(instance_header, &project.web_url)?;
    let change = ChangePayload {
        before: payload.before,
        after: payload.after,
        git_ref: payload.git_ref,
    };
    let changed_paths = match hook {
        HookKind::ProjectOrGroup => {
            changed_paths(payload.commits.as_deref(), payload.total_commits_count)
        }
        HookKind::System => None,
    };
    build_push(
        instance,
        project,
        change,
        payload.checkout_sha,
        changed_paths,
        delivery,
    )
}

fn normalise_repository_update(
    payload: RepositoryUpdatePayload,
    instance_header: Option<&str>,
    delivery: &Delivery<'_>,
) -> Result<Vec<Push>, MalformedEvent> {
    if payload.changes.len() > MAX_CHANGES {
        return Err(field(
            "changes",
            format!(
                "{} ref changes; at most {MAX_CHANGES} are accepted",
                payload.changes.len()
            ),
        ));
    }
    let project = normalise_project(&payload.project, payload.project_id)?;
    let instance = instance_origin(instance_header, &project.web_url)?;
    payload
        .changes
        .into_iter()
        .map(|change| {
            // repository_update carries no checkout_sha; for a branch it is `after`.
            let checkout_sha = (!is_zero_sha(&change.after)).then(|| change.after.clone());
            build_push(
                instance.clone(),
                project.clone(),
                change,
                checkout_sha,
                None,
                delivery,
            )
        })
        .collect()
}

fn build_push(
    instance: String,
    project: Project,
    change: ChangePayload,
    checkout_sha: Option<String>,
    changed_paths: Option<Vec<String>>,
    delivery: &Delivery<'_>,
) -> Result<Push, MalformedEvent> {
    check_ref(&change.git_ref)?;
    check_sha("before", &change.before)?;
    check_sha("after", &change.after)?;
    let checkout_sha = checkout_sha.filter(|sha| !sha.is_empty());
    if let Some(sha) = &checkout_sha {
        check_sha("checkout_sha", sha)?;
    }
    let event = if change.git_ref.starts_with("refs/tags/") {
        PushEvent::TagPush
    } else {
        PushEvent::Push
    };
    // Tag pushes list no commits; their changed files are unknown.
    let changed_paths =
        changed_paths.filter(|_| event == PushEvent::Push && !is_zero_sha(&change.after));
    Ok(Push {
        v: PUSH_VERSION,
        key: Push::compute_key(
            &instance,
            project.id,
            &change.git_ref,
            &change.before,
            &change.after,
            delivery.id,
        ),
        instance,
        event,
        project,
        git_ref: change.git_ref,
        before: change.before,
        after: change.after,
        checkout_sha,
        changed_paths,
        received_at: delivery.received_at.to_string(),
        accepted_in_run: None,
    })
}

fn normalise_project(
    project: &ProjectPayload,
    top_level_id: Option<u64>,
) -> Result<Project, MalformedEvent> {
    let id = match (project.id, top_level_id) {
        (Some(a), Some(b)) if a != b => {
            return Err(field("project.id", "differs from project_id"));
        }
        (Some(id), _) | (None, Some(id)) => id,
        (None, None) => return Err(field("project_id", "missing")),
    };
    let path = project.path_with_namespace.trim_matches('/');
    check_text("project.path_with_namespace", path, MAX_NAME_BYTES)?;
    check_text("project.web_url", &project.web_url, MAX_URL_BYTES)?;
    let http_url = project.git_http_url.clone().unwrap_or_default();
    let ssh_url = project.git_ssh_url.clone().unwrap_or_default();
    for (name, value) in [
        ("project.git_http_url", &http_url),
        ("project.git_ssh_url", &ssh_url),
    ] {
        if !value.is_empty() {
            check_text(name, value, MAX_URL_BYTES)?;
        }
    }
    let default_branch = project.default_branch.clone().filter(|b| !b.is_empty());
    if let Some(branch) = &default_branch {
        check_text("project.default_branch", branch, MAX_NAME_BYTES)?;
    }
    Ok(Project {
        id,
        path: path.to_string(),
        http_url,
        ssh_url,
        web_url: project.web_url.clone(),
        default_branch,
    })
}

pub(crate) fn check_text(
    name: &'static str,
    value: &str,
    max: usize,
) -> Result<(), MalformedEvent> {
    if value.is_empty() {
        return Err(field(name, "empty"));
    }
    if value.len() > max {
        return Err(field(
            name,
            format!("{} bytes; at most {max} are accepted", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(field(name, "contains control characters"));
    }
    Ok(())
}

pub(crate) fn check_ref(git_ref: &str) -> Result<(), MalformedEvent> {
    check_text("ref", git_ref, MAX_NAME_BYTES)?;
    if !git_ref.starts_with("refs/") || git_ref.len() <= "refs/".len() {
        return Err(field("ref", "is not a full ref (refs/...)"));
    }
    Ok(())
}

/// SHA-1 (40) or SHA-256 (64) object ids in lower-case hex.
pub(crate) fn check_sha(name: &'static str, sha: &str) -> Result<(), MalformedEvent> {
    let hex = sha
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !(hex && (sha.len() == 40 || sha.len() == 64)) {
        return Err(field(
            name,
            "is not a 40 or 64 character lower-case hex object id",
        ));
    }
    Ok(())
}

/// The instance origin, `scheme://host[:port]` in lower case: from `X-Gitlab-Instance`, or
/// from the project's web URL for GitLab versions that do not send the header.
pub(crate) fn instance_origin(
    header: Option<&str>,
    web_url: &str,
) -> Result<String, MalformedEvent> {
    header
        .and_then(origin)
        .or_else(|| origin(web_url))
        .ok_or_else(|| {
            field(
                "project.web_url",
                "is not an http(s) URL and X-Gitlab-Instance is absent",
            )
        })
}

/// `scheme://host[:port]` in lower case, without a default port, when `text` is an
/// http(s) URL: how a push's instance is written.
pub fn origin(text: &str) -> Option<String> {
    let url = url::Url::parse(text.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let origin = url.origin();
    origin
        .is_tuple()
        .then(|| origin.ascii_serialization().to_ascii_lowercase())
}

/// Every file the push touched, or `None` when GitLab did not list them all: commits
/// truncated to the newest 20, no commits at all (a new branch, a rewind), or a commit
/// without file lists.
fn changed_paths(commits: Option<&[CommitPayload]>, total: Option<u64>) -> Option<Vec<String>> {
    let commits = commits.filter(|c| !c.is_empty())?;
    let total = total?;
    if total > commits.len() as u64 {
        return None;
    }
    let mut paths = BTreeSet::new();
    for commit in commits {
        for list in [&commit.added, &commit.modified, &commit.removed] {
            paths.extend(list.as_ref()?.iter().cloned());
        }
    }
    let bytes: usize = paths.iter().map(String::len).sum();
    if paths.len() > MAX_CHANGED_PATHS || bytes > MAX_CHANGED_PATH_BYTES {
        return None;
    }
    Some(paths.into_iter().collect())
}

#[cfg(test)]
#[path = "gitlab/gitlab_test.rs"]
mod tests;
