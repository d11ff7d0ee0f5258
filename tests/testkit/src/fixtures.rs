//! Sample messages shared by the adapter tests.

use fluxrelay_core::push::{PUSH_VERSION, Project, Push, PushEvent};

/// A push to `refs/heads/main` of project `project_id`; `after` is left-padded with zeros
/// to a 40-character sha, so distinct `after` values give distinct keys.
pub fn push(project_id: u64, after: &str) -> Push {
    let instance = "https://gitlab.example.com".to_string();
    let before = "0".repeat(40);
    let after = format!("{after:0>40}");
    Push {
        v: PUSH_VERSION,
        key: Push::compute_key(
            &instance,
            project_id,
            "refs/heads/main",
            &before,
            &after,
            "request:fixture",
        ),
        instance,
        event: PushEvent::Push,
        project: Project {
            id: project_id,
            path: "platform/fleet-infra".into(),
            http_url: "https://gitlab.example.com/platform/fleet-infra.git".into(),
            ssh_url: "git@gitlab.example.com:platform/fleet-infra.git".into(),
            web_url: "https://gitlab.example.com/platform/fleet-infra".into(),
            default_branch: Some("main".into()),
        },
        git_ref: "refs/heads/main".into(),
        before,
        after: after.clone(),
        checkout_sha: Some(after),
        changed_paths: Some(vec!["clusters/prod/app.yaml".into()]),
        received_at: "2026-11-22T00:00:00Z".into(),
        accepted_in_run: None,
    }
}
