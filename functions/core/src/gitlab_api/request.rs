//! The requests fluxrelay makes, built here and sent by an adapter (the STYLE rule:
//! requests are plain data built in core).

use super::{ApiRequest, Method, StatusState, cut_to_field, encode_segment};

/// The commit status to post: `POST /projects/:id/statuses/:sha`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusPost {
    pub state: StatusState,
    pub name: String,
    /// The branch or tag name (GitLab's `ref` is the short name).
    pub git_ref: Option<String>,
    pub description: String,
    pub target_url: Option<String>,
}

/// A project as GitLab's `:id` takes it: the numeric id (never renamed).
pub fn project_id(id: u64) -> String {
    id.to_string()
}

pub fn create_status(project: &str, sha: &str, post: &StatusPost) -> ApiRequest {
    let mut form = vec![
        ("state".to_string(), post.state.as_str().to_string()),
        ("name".to_string(), cut_to_field(&post.name)),
        ("description".to_string(), cut_to_field(&post.description)),
    ];
    if let Some(git_ref) = post.git_ref.as_deref().filter(|r| !r.is_empty()) {
        form.push(("ref".to_string(), cut_to_field(git_ref)));
    }
    if let Some(url) = post.target_url.as_deref().filter(|u| !u.is_empty()) {
        form.push(("target_url".to_string(), cut_to_field(url)));
    }
    ApiRequest {
        method: Method::Post,
        path: format!(
            "/projects/{}/statuses/{}",
            encode_segment(project),
            encode_segment(sha)
        ),
        query: Vec::new(),
        form,
        endpoint: "create_status",
    }
}

/// The latest status of each name on a commit (`name` narrows to one), one page.
pub fn list_statuses(project: &str, sha: &str, name: Option<&str>, page: u32) -> ApiRequest {
    let mut query = vec![
        ("per_page".to_string(), "100".to_string()),
        ("page".to_string(), page.max(1).to_string()),
    ];
    if let Some(name) = name {
        query.push(("name".to_string(), name.to_string()));
    }
    ApiRequest {
        method: Method::Get,
        path: format!(
            "/projects/{}/repository/commits/{}/statuses",
            encode_segment(project),
            encode_segment(sha)
        ),
        query,
        form: Vec::new(),
        endpoint: "list_statuses",
    }
}

/// The straight diff between two commits' trees (`straight=true`: `from..to`, not from
/// their merge base), which is what changed for a force-push too.
pub fn compare(project: &str, from: &str, to: &str) -> ApiRequest {
    ApiRequest {
        method: Method::Get,
        path: format!("/projects/{}/repository/compare", encode_segment(project)),
        query: vec![
            ("from".to_string(), from.to_string()),
            ("to".to_string(), to.to_string()),
            ("straight".to_string(), "true".to_string()),
        ],
        form: Vec::new(),
        endpoint: "compare",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_post_is_a_form_with_fields_cut_to_255() {
        let request = create_status(
            "42",
            "1eabc9a41ca088515cab83f1cce49eb43e84b67f",
            &StatusPost {
                state: StatusState::Failed,
                name: "fluxrelay/prod-eu".into(),
                git_ref: Some("main".into()),
                description: "x".repeat(1000),
                target_url: None,
            },
        );
        assert_eq!(request.method, Method::Post);
        assert_eq!(
            request.path,
            "/projects/42/statuses/1eabc9a41ca088515cab83f1cce49eb43e84b67f"
        );
        let field = |key: &str| {
            request
                .form
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(field("state").as_deref(), Some("failed"));
        assert_eq!(field("name").as_deref(), Some("fluxrelay/prod-eu"));
        assert_eq!(field("ref").as_deref(), Some("main"));
        assert_eq!(field("description").unwrap().chars().count(), 255);
        assert_eq!(field("target_url"), None, "absent, not empty");
    }

    #[test]
    fn lists_and_compares_name_the_project_in_one_segment() {
        let list = list_statuses("group/project", "abc", Some("fluxrelay/a"), 0);
        assert_eq!(
            list.path,
            "/projects/group%2Fproject/repository/commits/abc/statuses"
        );
        assert!(list.query.contains(&("page".into(), "1".into())));
        assert!(list.query.contains(&("name".into(), "fluxrelay/a".into())));
        let compare = compare("7", "a", "b");
        assert_eq!(compare.path, "/projects/7/repository/compare");
        assert!(compare.query.contains(&("straight".into(), "true".into())));
        assert_eq!(compare.method, Method::Get);
    }
}
