//! A stand-in for GitLab's REST API, written from GitLab's API documentation and code
//! (`docs/reference/gitlab.md` §2–4), for the parts fluxrelay calls:
//!
//! - `POST /api/v4/projects/:id/statuses/:sha` (form, query or JSON parameters): `state`
//!   required and one of six; `ref`, `description`, `target_url` ≤ 255 characters;
//!   `target_url` http(s); `name` (or `context`, default `default`); `ref` defaults to a
//!   branch holding the commit; the state machine of [`statuses`] (same-state 400s); 201
//!   with the status.
//! - `GET /api/v4/projects/:id/repository/commits/:sha/statuses`: the latest status per
//!   name (`all=true`: every one), `name` and `ref` filters, `page`/`per_page` (20 by
//!   default, at most 100) with `X-Page`, `X-Next-Page`, `X-Total` headers, newest first.
//! - `GET /api/v4/projects/:id/repository/compare?from&to&straight`: `straight=true` diffs
//!   the two trees, otherwise from the merge base; an unknown `to` is 404 `Ref`, an
//!   unknown `from` an empty comparison.
//! - `GET /api/v4/personal_access_tokens/self`.
//! - Tokens in `PRIVATE-TOKEN` or `Authorization: Bearer`: none or unknown → 401; a token
//!   without `api` (writes) or `api`/`read_api` (reads) → 403 `insufficient_scope`.
//! - `:id` is the numeric id or the URL-encoded path; unknown → 404 `Project Not Found`;
//!   an unknown commit → 404 `Commit Not Found`.
//! - Scripted: [`GitLabStandIn::throttle_next`] answers 429 with `Retry-After` and
//!   `RateLimit-*` headers; [`GitLabStandIn::slow`] delays every answer.

pub mod repo;
pub mod statuses;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use self::repo::{Commit, Repo};
pub use self::statuses::Status;

#[derive(Debug, Clone)]
pub struct Token {
    pub user_id: u64,
    pub scopes: Vec<String>,
    pub active: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Project {
    pub id: u64,
    pub path: String,
    pub repo: Repo,
}

/// One request as it reached the stand-in.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// `create_status`, `list_statuses`, `compare`, `token_self`, `unknown`.
    pub endpoint: &'static str,
    pub status: u16,
    pub at: Instant,
    /// For status posts: (name, state), as asked.
    pub posted: Option<(String, String)>,
}

#[derive(Default)]
struct Inner {
    tokens: BTreeMap<String, Token>,
    projects: BTreeMap<u64, Project>,
    statuses: Vec<Status>,
    next_status_id: u64,
    /// Retry-After of the next requests to be throttled.
    throttled: VecDeque<u32>,
    delay: Duration,
    calls: Vec<Call>,
}

type Shared = Arc<Mutex<Inner>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Inner> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The GitLab API stand-in, serving until dropped.
pub struct GitLabStandIn {
    shared: Shared,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
}

impl GitLabStandIn {
    /// Binds (e.g. `127.0.0.1:0`) and serves in the background. Inside a Tokio runtime.
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Shared::default();
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let (shutdown, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(error) = serve.await {
                eprintln!("GitLab stand-in on {addr} stopped: {error}");
            }
        });
        Ok(Self {
            shared,
            addr,
            shutdown: Some(shutdown),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API root, `http://<addr>/api/v4`.
    pub fn api_url(&self) -> String {
        format!("http://{}/api/v4", self.addr)
    }

    pub fn add_token(&self, token: &str, user_id: u64, scopes: &[&str]) {
        lock(&self.shared).tokens.insert(
            token.to_string(),
            Token {
                user_id,
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                active: true,
            },
        );
    }

    pub fn revoke_token(&self, token: &str) {
        if let Some(token) = lock(&self.shared).tokens.get_mut(token) {
            token.active = false;
        }
    }

    pub fn add_project(&self, id: u64, path: &str) {
        lock(&self.shared).projects.insert(
            id,
            Project {
                id,
                path: path.to_string(),
                repo: Repo::default(),
            },
        );
    }

    pub fn remove_project(&self, id: u64) {
        lock(&self.shared).projects.remove(&id);
    }

    /// A commit on `branch`: its parent is the branch's head unless `parent` says
    /// otherwise (a force-push names another); `changes` set (Some) or delete (None)
    /// files of the parent's tree.
    pub fn commit(
        &self,
        project: u64,
        branch: &str,
        sha: &str,
        parent: Option<&str>,
        changes: &[(&str, Option<&str>)],
    ) {
        let mut inner = lock(&self.shared);
        let Some(project) = inner.projects.get_mut(&project) else {
            panic!("no project {project} in the GitLab stand-in");
        };
        let repo = &mut project.repo;
        let parent = parent
            .map(str::to_string)
            .or_else(|| repo.refs.get(branch).cloned());
        let mut tree = parent
            .as_ref()
            .and_then(|p| repo.commits.get(p))
            .map(|c| c.tree.clone())
            .unwrap_or_default();
        for (path, content) in changes {
            match content {
                Some(content) => tree.insert(path.to_string(), content.to_string()),
                None => tree.remove(*path),
            };
        }
        repo.commits.insert(
            sha.to_string(),
            Commit {
                parent,
                message: format!("commit {sha}"),
                tree,
            },
        );
        repo.refs.insert(branch.to_string(), sha.to_string());
    }

    /// The next `count` requests are answered 429 with `Retry-After: retry_after`.
    pub fn throttle_next(&self, count: usize, retry_after: u32) {
        lock(&self.shared)
            .throttled
            .extend(std::iter::repeat_n(retry_after, count));
    }

    /// Every answer waits this long first (a slow GitLab).
    pub fn slow(&self, delay: Duration) {
        lock(&self.shared).delay = delay;
    }

    /// Every status on a commit, retried ones included, oldest first.
    pub fn statuses(&self, project: u64, sha: &str) -> Vec<Status> {
        lock(&self.shared)
            .statuses
            .iter()
            .filter(|s| s.project == project && s.sha == sha)
            .cloned()
            .collect()
    }

    /// The current (not retried) status of each name on a commit: name → (state,
    /// description).
    pub fn current(&self, project: u64, sha: &str) -> BTreeMap<String, (String, String)> {
        self.statuses(project, sha)
            .into_iter()
            .filter(|s| !s.retried)
            .map(|s| (s.name, (s.state, s.description.unwrap_or_default())))
            .collect()
    }

    pub fn calls(&self) -> Vec<Call> {
        lock(&self.shared).calls.clone()
    }
}

impl Drop for GitLabStandIn {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

struct Answer {
    status: u16,
    body: Value,
    headers: Vec<(&'static str, String)>,
}

fn answer(status: u16, body: Value) -> Answer {
    Answer {
        status,
        body,
        headers: Vec::new(),
    }
}

fn message(status: u16, text: &str) -> Answer {
    answer(status, json!({"message": text}))
}

async fn handle(State(shared): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let delay = lock(&shared).delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let path = parts.uri.path().to_string();
    let mut params: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let json_body = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    if json_body {
        if let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(&body) {
            for (key, value) in object {
                let text = match value {
                    Value::String(text) => text,
                    other => other.to_string(),
                };
                params.push((key, text));
            }
        }
    } else {
        params.extend(url::form_urlencoded::parse(&body).into_owned());
    }
    let method = parts.method.as_str().to_string();
    let mut inner = lock(&shared);
    let endpoint = endpoint(&method, &path);
    let posted = (endpoint == "create_status").then(|| {
        let get = |k: &str| param(&params, k).unwrap_or_default();
        (
            param(&params, "name")
                .or_else(|| param(&params, "context"))
                .unwrap_or_else(|| "default".into()),
            get("state"),
        )
    });
    let answer = match inner.throttled.pop_front() {
        Some(retry_after) => Answer {
            status: 429,
            body: Value::String("Retry later".into()),
            headers: vec![
                ("retry-after", retry_after.to_string()),
                ("ratelimit-name", "throttle_authenticated_api".into()),
                ("ratelimit-limit", "60".into()),
                ("ratelimit-observed", "61".into()),
                ("ratelimit-remaining", "0".into()),
                (
                    "ratelimit-reset",
                    (time::OffsetDateTime::now_utc().unix_timestamp() + i64::from(retry_after))
                        .to_string(),
                ),
            ],
        },
        None => route(&mut inner, &method, &path, &parts.headers, &params),
    };
    inner.calls.push(Call {
        method,
        path,
        endpoint,
        status: answer.status,
        at: Instant::now(),
        posted,
    });
    drop(inner);
    let text = match &answer.body {
        Value::String(text) if answer.status == 429 => text.clone(),
        other => other.to_string(),
    };
    let mut response = Response::new(Body::from(text));
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = if answer.status == 429 {
        "text/plain"
    } else {
        "application/json"
    };
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    for (name, value) in answer.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

fn endpoint(method: &str, path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_start_matches("/api/v4/").split('/').collect();
    match (method, segments.as_slice()) {
        ("POST", ["projects", _, "statuses", _]) => "create_status",
        ("GET", ["projects", _, "repository", "commits", _, "statuses"]) => "list_statuses",
        ("GET", ["projects", _, "repository", "compare"]) => "compare",
        ("GET", ["personal_access_tokens", "self"]) => "token_self",
        _ => "unknown",
    }
}

fn param(params: &[(String, String)], key: &str) -> Option<String> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

fn token<'a>(inner: &'a Inner, headers: &HeaderMap) -> Result<&'a Token, Answer> {
    let presented = headers
        .get("private-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_string)
        });
    presented
        .and_then(|t| inner.tokens.get(&t))
        .filter(|t| t.active)
        .ok_or_else(|| message(401, "401 Unauthorized"))
}

fn insufficient_scope() -> Answer {
    answer(
        403,
        json!({"error": "insufficient_scope",
               "error_description": "The request requires higher privileges than provided by the access token.",
               "scope": "api"}),
    )
}

fn route(
    inner: &mut Inner,
    method: &str,
    path: &str,
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Answer {
    let token = match token(inner, headers) {
        Ok(token) => token.clone(),
        Err(denied) => return denied,
    };
    let can = |scope: &str| token.scopes.iter().any(|s| s == scope);
    let endpoint = endpoint(method, path);
    let writes = method == "POST";
    if (writes && !can("api")) || (!writes && !can("api") && !can("read_api")) {
        return insufficient_scope();
    }
    let segments: Vec<String> = path
        .trim_start_matches("/api/v4/")
        .split('/')
        .map(|s| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
        .collect();
    if endpoint == "token_self" {
        return answer(
            200,
            json!({"id": token.user_id, "name": "fluxrelay", "revoked": false, "active": true,
                   "scopes": token.scopes, "user_id": token.user_id, "expires_at": null}),
        );
    }
    if endpoint == "unknown" {
        return message(404, "404 Not Found");
    }
    let Some(project) = project_id(inner, &segments[1]) else {
        return message(404, "404 Project Not Found");
    };
    match endpoint {
        "create_status" => create_status(inner, project, &segments[3], token.user_id, params),
        "list_statuses" => list_statuses(inner, project, &segments[4], params),
        _ => compare(inner, project, params),
    }
}

fn project_id(inner: &Inner, id: &str) -> Option<u64> {
    match id.parse::<u64>() {
        Ok(id) => inner.projects.contains_key(&id).then_some(id),
        Err(_) => inner
            .projects
            .values()
            .find(|p| p.path.eq_ignore_ascii_case(id))
            .map(|p| p.id),
    }
}

fn status_json(status: &Status) -> Value {
    json!({
        "id": status.id, "sha": status.sha, "ref": status.git_ref, "status": status.state,
        "name": status.name, "target_url": status.target_url, "description": status.description,
        "created_at": status.created_at, "started_at": null, "finished_at": null,
        "allow_failure": false, "coverage": null, "author": {"id": status.user_id, "username": format!("user{}", status.user_id)}
    })
}

fn create_status(
    inner: &mut Inner,
    project: u64,
    sha: &str,
    user_id: u64,
    params: &[(String, String)],
) -> Answer {
    let Some(state) = param(params, "state") else {
        return answer(400, json!({"error": "state is missing"}));
    };
    if !matches!(
        state.as_str(),
        "pending" | "running" | "success" | "failed" | "canceled" | "skipped"
    ) {
        return answer(400, json!({"error": "state does not have a valid value"}));
    }
    let repo = &inner.projects[&project].repo;
    if !repo.commits.contains_key(sha) {
        return message(404, "404 Commit Not Found");
    }
    let mut too_long = serde_json::Map::new();
    for key in ["ref", "description", "target_url"] {
        if param(params, key).is_some_and(|v| v.chars().count() > 255) {
            too_long.insert(
                key.to_string(),
                json!(["is too long (maximum is 255 characters)"]),
            );
        }
    }
    if !too_long.is_empty() {
        return answer(400, json!({"message": too_long}));
    }
    if let Some(url) = param(params, "target_url")
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return answer(
            400,
            json!({"message": {"target_url": ["is blocked: Only allowed schemes are http, https"]}}),
        );
    }
    let git_ref = match param(params, "ref") {
        Some(git_ref) => git_ref,
        None => match repo
            .refs
            .iter()
            .find(|(_, head)| repo.ancestry(head).iter().any(|c| c == sha))
        {
            Some((name, _)) => name.clone(),
            None => return message(404, "404 References for commit Not Found"),
        },
    };
    let post = Status {
        id: 0,
        project,
        sha: sha.to_string(),
        git_ref,
        name: param(params, "name")
            .or_else(|| param(params, "context"))
            .unwrap_or_else(|| "default".into()),
        state,
        description: param(params, "description"),
        target_url: param(params, "target_url"),
        user_id,
        created_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        retried: false,
    };
    let Inner {
        statuses,
        next_status_id,
        ..
    } = inner;
    match statuses::apply(statuses, next_status_id, post) {
        Ok(index) => answer(201, status_json(&statuses[index])),
        Err(text) => message(400, &text),
    }
}

fn list_statuses(inner: &Inner, project: u64, sha: &str, params: &[(String, String)]) -> Answer {
    if !inner.projects[&project].repo.commits.contains_key(sha) {
        return message(404, "404 Commit Not Found");
    }
    let all = param(params, "all").as_deref() == Some("true");
    let name = param(params, "name");
    let git_ref = param(params, "ref");
    let mut list: Vec<&Status> = inner
        .statuses
        .iter()
        .filter(|s| s.project == project && s.sha == sha)
        .filter(|s| all || !s.retried)
        .filter(|s| name.as_ref().is_none_or(|n| *n == s.name))
        .filter(|s| git_ref.as_ref().is_none_or(|r| *r == s.git_ref))
        .collect();
    list.sort_by_key(|s| std::cmp::Reverse(s.id));
    let per_page = param(params, "per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(20)
        .clamp(1, 100);
    let page = param(params, "page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let total = list.len();
    let items: Vec<Value> = list
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(status_json)
        .collect();
    let next = if page * per_page < total {
        (page + 1).to_string()
    } else {
        String::new()
    };
    Answer {
        status: 200,
        body: Value::Array(items),
        headers: vec![
            ("x-page", page.to_string()),
            ("x-per-page", per_page.to_string()),
            ("x-next-page", next),
            ("x-total", total.to_string()),
        ],
    }
}

fn compare(inner: &Inner, project: u64, params: &[(String, String)]) -> Answer {
    let repo = &inner.projects[&project].repo;
    let (Some(from), Some(to)) = (param(params, "from"), param(params, "to")) else {
        return answer(400, json!({"error": "from is missing, to is missing"}));
    };
    let Some(to) = repo.resolve(&to).map(str::to_string) else {
        return message(404, "404 Ref Not Found");
    };
    let Some(from) = repo.resolve(&from).map(str::to_string) else {
        return answer(
            200,
            json!({"commit": null, "commits": [], "diffs": [], "compare_timeout": false,
                   "compare_same_ref": false, "web_url": ""}),
        );
    };
    let straight = param(params, "straight").as_deref() == Some("true");
    let base = if straight {
        Some(from.clone())
    } else {
        repo.merge_base(&from, &to)
    };
    let diffs: Vec<Value> = repo
        .diff(base.as_deref(), &to)
        .into_iter()
        .map(|d| {
            json!({"old_path": d.old_path, "new_path": d.new_path, "a_mode": "100644", "b_mode": "100644",
                   "diff": "", "new_file": d.new_file, "renamed_file": false, "deleted_file": d.deleted_file})
        })
        .collect();
    let commits: Vec<Value> = repo
        .between(&from, &to)
        .iter()
        .map(|sha| json!({"id": sha, "short_id": &sha[..sha.len().min(8)], "title": repo.commits[sha].message}))
        .collect();
    answer(
        200,
        json!({"commit": commits.last().cloned(), "commits": commits, "diffs": diffs,
               "compare_timeout": false, "compare_same_ref": from == to,
               "web_url": format!("https://gitlab.example.com/-/compare/{from}...{to}")}),
    )
}
