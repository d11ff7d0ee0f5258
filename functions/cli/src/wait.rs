//! `fluxrelay wait`: for a CI job, wait until every cluster has deployed a commit, from
//! GitLab's commit statuses (so it works the same whichever mode posted them). Progress
//! goes to stderr, one line per cluster whose status changed; the end is a table on stdout.
//!
//! Exit status: 0 every matching cluster succeeded; 1 one failed or was canceled (or
//! GitLab refused the token or does not know the project or commit); 3 the timeout passed
//! first.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use fluxrelay_adapters::gitlab::GitLabClient;
use fluxrelay_core::gitlab_api::StatusState;
use fluxrelay_core::gitlab_api::classify::{ApiOutcome, classify};
use fluxrelay_core::gitlab_api::instances::{GitLabInstances, instance};
use fluxrelay_core::gitlab_api::request::list_statuses;
use fluxrelay_core::gitlab_api::statuses::{
    CommitStatus, StatusNaming, WaitVerdict, WaitView, parse_list, wait_view,
};
use fluxrelay_core::ports::GitLabApi;
use fluxrelay_core::secret::Secret;

pub const EXIT_NOT_ALL_SUCCEEDED: u8 = 1;
pub const EXIT_TIMED_OUT: u8 = 3;
const MAX_PAGES: u32 = 20;

pub struct WaitOptions {
    pub api_url: String,
    pub token: Secret,
    pub project: String,
    pub sha: String,
    pub clusters: Vec<String>,
    pub timeout: Duration,
    pub poll: Duration,
    pub naming: StatusNaming,
}

/// "15m", "90s", "1h", "2m30s", or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(format!("{text:?} is not a duration like 15m, 90s or 1h")),
        };
        let value: u64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a duration like 15m, 90s or 1h"))?;
        total = total.saturating_add(value.saturating_mul(unit));
        number.clear();
    }
    if !number.is_empty() || text.is_empty() {
        return Err(format!("{text:?} is not a duration like 15m, 90s or 1h"));
    }
    Ok(Duration::from_secs(total))
}

/// Every status on the commit (all pages), or why not: `Err((permanent, reason))`.
async fn statuses(
    client: &GitLabClient,
    options: &WaitOptions,
) -> Result<Vec<CommitStatus>, (bool, String, Option<u32>)> {
    let mut all = Vec::new();
    for page in 1..=MAX_PAGES {
        let request = list_statuses(&options.project, &options.sha, None, page);
        let answer = client.call(&options.api_url, &request).await;
        match classify(&answer, time::OffsetDateTime::now_utc()) {
            ApiOutcome::Done | ApiOutcome::AlreadyInState => {}
            ApiOutcome::RetryAfter { secs, reason } => return Err((false, reason, Some(secs))),
            ApiOutcome::Permanent { reason, .. } => return Err((true, reason, None)),
        }
        let Ok(response) = answer else { break };
        let list = parse_list(&response.body).ok_or((
            false,
            "GitLab's answer is not a list of statuses".to_string(),
            None,
        ))?;
        all.extend(list);
        if response.next_page.as_deref().is_none_or(str::is_empty) {
            break;
        }
    }
    Ok(all)
}

fn state_text(state: Option<StatusState>) -> &'static str {
    state.map_or("unknown", StatusState::as_str)
}

fn table(view: &WaitView, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "CLUSTER\tSTATE\tDESCRIPTION")?;
    for (cluster, state, description) in &view.clusters {
        writeln!(out, "{cluster}\t{}\t{description}", state_text(*state))?;
    }
    for missing in &view.missing {
        writeln!(out, "{missing}\tmissing\tno status posted yet")?;
    }
    Ok(())
}

pub async fn wait(
    options: WaitOptions,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<u8, String> {
    let entry = instance(
        &options.api_url,
        Some(&options.api_url),
        options.token.clone(),
    )
    .map_err(|(field, problem)| format!("--gitlab-url ({field}): {problem}"))?;
    let client = GitLabClient::new(GitLabInstances {
        instances: vec![entry],
    })?;
    // Validate the patterns once.
    wait_view(&options.naming, &[], &options.clusters)?;
    let started = Instant::now();
    let mut shown: BTreeMap<String, (Option<StatusState>, String)> = BTreeMap::new();
    let mut view = WaitView {
        clusters: Vec::new(),
        missing: options.clusters.clone(),
    };
    let write_error = |error: std::io::Error| format!("cannot write: {error}");
    writeln!(
        err,
        "waiting up to {} s for {} on project {} (statuses named {})",
        options.timeout.as_secs(),
        &options.sha[..options.sha.len().min(8)],
        options.project,
        options.naming.template()
    )
    .map_err(write_error)?;
    loop {
        let mut pause = options.poll;
        match statuses(&client, &options).await {
            Ok(all) => {
                view = wait_view(&options.naming, &all, &options.clusters)?;
                for (cluster, state, description) in &view.clusters {
                    let now = (*state, description.clone());
                    if shown.get(cluster) != Some(&now) {
                        writeln!(
                            err,
                            "{:>5} s  {cluster}: {} {description}",
                            started.elapsed().as_secs(),
                            state_text(*state)
                        )
                        .map_err(write_error)?;
                        shown.insert(cluster.clone(), now);
                    }
                }
                match view.verdict() {
                    WaitVerdict::Waiting => {}
                    WaitVerdict::AllSucceeded => {
                        table(&view, out).map_err(write_error)?;
                        return Ok(0);
                    }
                    WaitVerdict::NotAllSucceeded => {
                        table(&view, out).map_err(write_error)?;
                        return Ok(EXIT_NOT_ALL_SUCCEEDED);
                    }
                }
            }
            Err((true, reason, _)) => return Err(reason),
            Err((false, reason, retry_after)) => {
                writeln!(err, "  {reason}").map_err(write_error)?;
                if let Some(secs) = retry_after {
                    pause = pause.max(Duration::from_secs(u64::from(secs)));
                }
            }
        }
        let left = options.timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            writeln!(err, "timed out after {} s", options.timeout.as_secs())
                .map_err(write_error)?;
            table(&view, out).map_err(write_error)?;
            return Ok(EXIT_TIMED_OUT);
        }
        tokio::time::sleep(pause.min(left)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_ci_jobs_write_them() {
        for (text, secs) in [
            ("15m", 900),
            ("90s", 90),
            ("1h", 3600),
            ("2m30s", 150),
            ("45", 45),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        for bad in ["", "m", "15x", "1.5m", "-5s", "15m3"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
