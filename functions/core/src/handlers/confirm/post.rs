//! Reporting one confirmation to GitLab: the per-cluster status (at most one post per
//! round, only forward), and once every cluster has ended, the summary status.

use time::OffsetDateTime;

use super::ConfirmRules;
use crate::confirm::message::{Confirmation, Report};
use crate::confirm::report::{description, must_read_first, scheduled_elsewhere, to_post};
use crate::confirm::rule::pushed_commit;
use crate::gitlab_api::classify::{ApiOutcome, classify, status_label};
use crate::gitlab_api::request::{StatusPost, create_status, list_statuses, project_id};
use crate::gitlab_api::statuses::{
    StatusNaming, cluster_states, latest_by_name, parse_list, summary,
};
use crate::gitlab_api::{ApiRequest, StatusState};
use crate::ports::{GitLabApi, QueueMessage};

use super::ConfirmMemory;

/// One call to GitLab, for metrics and the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitLabCall {
    pub endpoint: &'static str,
    /// The HTTP status, `transport` or `not_configured`.
    pub status: String,
    /// The state posted (status posts only).
    pub state: Option<StatusState>,
    /// The status name posted (status posts only).
    pub name: Option<String>,
}

pub(super) struct Posted {
    pub calls: Vec<GitLabCall>,
    /// Post again after this long (GitLab asked to wait, or a retryable failure).
    pub retry_secs: Option<u32>,
}

/// Most pages of statuses read for a summary (100 each).
const MAX_PAGES: u32 = 10;

pub(super) async fn report(
    gitlab: &impl GitLabApi,
    rules: &ConfirmRules,
    memory: &ConfirmMemory,
    confirmation: &mut Confirmation,
    message: &QueueMessage,
    now: OffsetDateTime,
) -> Posted {
    let mut posted = Posted {
        calls: Vec::new(),
        retry_secs: None,
    };
    if confirmation.report != Report::Active {
        confirmation.summary_due = false;
        return posted;
    }
    let instance = confirmation.push.instance.clone();
    if !gitlab.configured(&instance) {
        confirmation.report = Report::NotConfigured;
        confirmation.summary_due = false;
        return posted;
    }
    if let Some(state) = to_post(confirmation) {
        if let Some(wait) = memory.throttle.wait_secs(&instance, now) {
            posted.retry_secs = Some(wait);
            return posted;
        }
        let name = rules.naming.name(&confirmation.cluster);
        let description = description(confirmation);
        let twin_possible = message.receive_count > 1
            || scheduled_elsewhere(confirmation, rules.instance.as_deref());
        if must_read_first(confirmation, state, twin_possible)
            && already_posted(
                gitlab,
                &mut posted,
                confirmation,
                &name,
                state,
                &description,
            )
            .await
        {
            confirmation.posted = Some(state);
        } else {
            let request = status_request(confirmation, &name, state, description);
            match call(
                gitlab,
                memory,
                &mut posted,
                &instance,
                &request,
                Some(state),
                now,
            )
            .await
            {
                Ok(()) => {
                    confirmation.posted = Some(state);
                    confirmation.post_failures = 0;
                }
                Err(Failure::Retry { secs, reason }) => {
                    confirmation.post_failures = confirmation.post_failures.saturating_add(1);
                    if confirmation.post_failures >= rules.max_post_failures {
                        confirmation.report = Report::Failed {
                            reason: format!(
                                "gave up after {} attempts: {reason}",
                                confirmation.post_failures
                            ),
                            status: None,
                        };
                    } else {
                        posted.retry_secs = Some(secs);
                    }
                    return posted;
                }
                Err(Failure::Permanent { status, reason }) => {
                    confirmation.report = Report::Failed { reason, status };
                    confirmation.summary_due = false;
                    return posted;
                }
            }
        }
    }
    if rules.summary_name.is_none() {
        confirmation.summary_due = false;
    }
    posted
}

/// Whether this confirmation still owes the summary a look: it ended, its own status is
/// posted, and statuses are being posted.
pub(super) fn summary_due(confirmation: &Confirmation) -> bool {
    confirmation.summary_due
        && confirmation.report == Report::Active
        && confirmation.ended.is_some()
        && confirmation.posted.is_some_and(StatusState::is_terminal)
}

/// The summary for the confirmations of one commit that ended in this batch (they are
/// brought up to date together, so two clusters ending at once post it once): `Ok` when it
/// is done or cannot be done, `Err(secs)` to try again after that long.
pub(super) async fn post_summary_once(
    gitlab: &impl GitLabApi,
    rules: &ConfirmRules,
    memory: &ConfirmMemory,
    posted: &mut Posted,
    confirmations: &[&Confirmation],
    now: OffsetDateTime,
) -> Result<(), u32> {
    let (Some(summary_name), Some(first)) = (&rules.summary_name, confirmations.first()) else {
        return Ok(());
    };
    if let Some(wait) = memory.throttle.wait_secs(&first.push.instance, now) {
        return Err(wait);
    }
    match post_summary(
        gitlab,
        rules,
        memory,
        posted,
        confirmations,
        summary_name,
        now,
    )
    .await
    {
        Ok(()) | Err(Failure::Permanent { .. }) => Ok(()),
        Err(Failure::Retry { secs, .. }) => Err(secs),
    }
}

fn status_request(
    confirmation: &Confirmation,
    name: &str,
    state: StatusState,
    description: String,
) -> ApiRequest {
    create_status(
        &project_id(confirmation.push.project.id),
        pushed_commit(&confirmation.push),
        &StatusPost {
            state,
            name: name.to_string(),
            git_ref: Some(confirmation.push.short_ref().to_string()),
            description,
            target_url: None,
        },
    )
}

enum Failure {
    Retry { secs: u32, reason: String },
    Permanent { status: Option<u16>, reason: String },
}

async fn call(
    gitlab: &impl GitLabApi,
    memory: &ConfirmMemory,
    posted: &mut Posted,
    instance: &str,
    request: &ApiRequest,
    state: Option<StatusState>,
    now: OffsetDateTime,
) -> Result<(), Failure> {
    let answer = gitlab.call(instance, request).await;
    posted.calls.push(GitLabCall {
        endpoint: request.endpoint,
        status: status_label(&answer),
        state,
        name: request
            .form
            .iter()
            .find(|(key, _)| key == "name")
            .map(|(_, name)| name.clone()),
    });
    match classify(&answer, now) {
        ApiOutcome::Done | ApiOutcome::AlreadyInState => Ok(()),
        ApiOutcome::RetryAfter { secs, reason } => {
            if answer.as_ref().is_ok_and(|response| response.status == 429) {
                memory.throttle.hold(instance, now, secs);
            }
            Err(Failure::Retry { secs, reason })
        }
        ApiOutcome::Permanent { status, reason } => Err(Failure::Permanent { status, reason }),
    }
}

/// Is the latest status of this name already this end, or any end (success, failed,
/// canceled)? A failed read answers no: posting again is the lesser harm.
async fn already_posted(
    gitlab: &impl GitLabApi,
    posted: &mut Posted,
    confirmation: &Confirmation,
    name: &str,
    state: StatusState,
    description: &str,
) -> bool {
    let request = list_statuses(
        &project_id(confirmation.push.project.id),
        pushed_commit(&confirmation.push),
        Some(name),
        1,
    );
    let answer = gitlab.call(&confirmation.push.instance, &request).await;
    posted.calls.push(GitLabCall {
        endpoint: request.endpoint,
        status: status_label(&answer),
        state: None,
        name: None,
    });
    let Some(response) = answer.ok().filter(|r| (200..300).contains(&r.status)) else {
        return false;
    };
    let Some(list) = parse_list(&response.body) else {
        return false;
    };
    latest_by_name(&list).iter().any(|status| {
        status.name == name
            && (status.state.is_some_and(StatusState::is_terminal)
                || (status.state == Some(state)
                    && status.description == crate::gitlab_api::cut_to_field(description)))
    })
}

/// Every cluster's status on the commit, read back (this one's as just posted): once all
/// have ended, the summary is posted, unless it already says the same.
async fn post_summary(
    gitlab: &impl GitLabApi,
    rules: &ConfirmRules,
    memory: &ConfirmMemory,
    posted: &mut Posted,
    confirmations: &[&Confirmation],
    summary_name: &str,
    now: OffsetDateTime,
) -> Result<(), Failure> {
    let Some(confirmation) = confirmations.first() else {
        return Ok(());
    };
    let instance = confirmation.push.instance.as_str();
    let project = project_id(confirmation.push.project.id);
    let commit = pushed_commit(&confirmation.push);
    let mut all = Vec::new();
    for page in 1..=MAX_PAGES {
        let request = list_statuses(&project, commit, None, page);
        let answer = gitlab.call(instance, &request).await;
        posted.calls.push(GitLabCall {
            endpoint: request.endpoint,
            status: status_label(&answer),
            state: None,
            name: None,
        });
        match classify(&answer, now) {
            ApiOutcome::Done | ApiOutcome::AlreadyInState => {}
            ApiOutcome::RetryAfter { secs, reason } => return Err(Failure::Retry { secs, reason }),
            ApiOutcome::Permanent { status, reason } => {
                return Err(Failure::Permanent { status, reason });
            }
        }
        let Ok(response) = answer else { break };
        let Some(list) = parse_list(&response.body) else {
            break;
        };
        all.extend(list);
        if response.next_page.as_deref().is_none_or(str::is_empty) {
            break;
        }
    }
    let naming: &StatusNaming = &rules.naming;
    let mut states: Vec<(String, StatusState)> = cluster_states(naming, &all)
        .into_iter()
        .filter(|(_, status)| status.name != summary_name)
        .filter_map(|(cluster, status)| Some((cluster, status.state?)))
        .collect();
    // This batch's own ends, as just posted (a list may not show them yet).
    for own in confirmations {
        let Some(state) = own.ended.as_ref().map(|e| e.outcome.status_state()) else {
            continue;
        };
        match states.iter_mut().find(|(c, _)| *c == own.cluster) {
            Some((_, current)) => *current = state,
            None => states.push((own.cluster.clone(), state)),
        }
    }
    let Some((state, description)) = summary(&states) else {
        return Ok(());
    };
    let current = latest_by_name(&all)
        .into_iter()
        .find(|status| status.name == summary_name);
    if current.is_some_and(|c| c.state == Some(state) && c.description == description) {
        return Ok(());
    }
    let request = create_status(
        &project,
        commit,
        &StatusPost {
            state,
            name: summary_name.to_string(),
            git_ref: Some(confirmation.push.short_ref().to_string()),
            description,
            target_url: None,
        },
    );
    call(gitlab, memory, posted, instance, &request, Some(state), now).await
}
