//! Commit statuses as `Ci::CreateCommitStatusService` keeps them (docs/reference/gitlab.md
//! §2): a pending or running status with the same name and ref, by the same user, is
//! updated in place, along GitLab's state machine; a same-state transition is refused
//! with GitLab's 400 message; otherwise a new status is created and the older ones of that
//! name become `retried`.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub id: u64,
    pub project: u64,
    pub sha: String,
    pub git_ref: String,
    pub name: String,
    pub state: String,
    pub description: Option<String>,
    pub target_url: Option<String>,
    pub user_id: u64,
    pub created_at: String,
    pub retried: bool,
}

/// The event `CreateCommitStatusService#apply_job_state!` fires for a state.
fn event(state: &str) -> &'static str {
    match state {
        "pending" => "enqueue",
        "running" => "run",
        "success" => "success",
        "failed" => "drop",
        "canceled" => "cancel",
        _ => "skip",
    }
}

/// Whether the state machine allows `event` from `from` (`app/models/commit_status.rb`).
fn allowed(from: &str, to: &str) -> bool {
    match to {
        "pending" => from == "created",
        "running" => matches!(from, "created" | "pending"),
        "success" | "failed" | "canceled" => matches!(from, "created" | "pending" | "running"),
        "skipped" => matches!(from, "created" | "pending"),
        _ => false,
    }
}

/// Apply one post: `Ok(index of the status created or updated)`, or GitLab's 400 message.
pub fn apply(statuses: &mut Vec<Status>, next_id: &mut u64, post: Status) -> Result<usize, String> {
    let open = statuses.iter().position(|s| {
        !s.retried
            && s.project == post.project
            && s.sha == post.sha
            && s.name == post.name
            && s.git_ref == post.git_ref
            && s.user_id == post.user_id
            && matches!(s.state.as_str(), "pending" | "running")
    });
    if let Some(index) = open {
        let current = statuses[index].state.clone();
        if !allowed(&current, &post.state) {
            let event = event(&post.state);
            return Err(format!(
                "Cannot transition status via :{event} from :{current} (Reason(s): Status cannot transition via \"{event}\")"
            ));
        }
        let status = &mut statuses[index];
        status.state = post.state;
        if post.description.is_some() {
            status.description = post.description;
        }
        if post.target_url.is_some() {
            status.target_url = post.target_url;
        }
        return Ok(index);
    }
    for older in statuses.iter_mut().filter(|s| {
        s.project == post.project && s.sha == post.sha && s.name == post.name && !s.retried
    }) {
        older.retried = true;
    }
    *next_id += 1;
    statuses.push(Status {
        id: *next_id,
        ..post
    });
    Ok(statuses.len() - 1)
}
