//! Changed paths from GitLab's compare API, for `paths` subscriptions.
//!
//! A push payload lists the commits it added (at most 20), so for a force-push it shows
//! what was added, never what was dropped: a force-push that removes a commit touching
//! `clusters/prod/**` and adds one touching `docs/` looks like a docs change. The compare
//! API with `straight=true` diffs the two trees (`before..after`), which is exactly what
//! changed on the ref, force-push or not (`docs/reference/gitlab.md` §4).

use serde_json::Value;

use crate::gitlab_api::classify::{ApiOutcome, classify};
use crate::gitlab_api::request::{compare, project_id};
use crate::ports::GitLabApi;
use crate::push::{Push, is_zero_sha};
use crate::registry::RouteListing;

/// What asking GitLab for a push's changed paths gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compared {
    /// No token for the push's instance: the payload's paths stand.
    NotConfigured,
    /// The two trees' changed paths.
    Paths(Vec<String>),
    /// The call failed or GitLab cut the diff: the paths are unknown (every `paths`
    /// subscription takes the push).
    Failed { reason: String },
}

/// GitLab's straight compare of `before..after` for the push's project, through `gitlab`
/// (route in `serve`, dispatch on AWS: the one rule both call).
pub async fn compare_push(gitlab: &impl GitLabApi, push: &Push) -> Compared {
    if !gitlab.configured(&push.instance) {
        return Compared::NotConfigured;
    }
    let request = compare(&project_id(push.project.id), &push.before, &push.after);
    let answer = gitlab.call(&push.instance, &request).await;
    // The time only matters for a 429's wait, which a compare does not use (no retry).
    let outcome = classify(&answer, time::OffsetDateTime::UNIX_EPOCH);
    match (&answer, outcome) {
        (Ok(response), ApiOutcome::Done) => match changed_paths(&response.body) {
            Some(paths) => Compared::Paths(paths),
            None => Compared::Failed {
                reason: "GitLab cut the diff (compare_timeout or its limits)".to_string(),
            },
        },
        (_, ApiOutcome::RetryAfter { reason, .. } | ApiOutcome::Permanent { reason, .. }) => {
            Compared::Failed { reason }
        }
        _ => Compared::Failed {
            reason: "no answer".to_string(),
        },
    }
}

/// Whether asking GitLab for the changed paths could change where this push goes: a
/// cluster's route has a `paths` subscription whose other rules take the push, and the push
/// has two commits to compare (not a creation, not a deletion).
pub fn wants_compare(push: &Push, listing: &RouteListing) -> bool {
    if is_zero_sha(&push.before) || push.is_deletion() || push.before == push.after {
        return false;
    }
    listing.routes.iter().any(|route| {
        route.subscriptions.iter().any(|subscription| {
            subscription.paths.is_some() && {
                let mut unfiltered = subscription.clone();
                unfiltered.paths = None;
                unfiltered.accepts(push).is_ok()
            }
        })
    })
}

/// The changed paths in a compare answer: every diff's `old_path` and `new_path` (a
/// rename changes both), sorted, each once. `None` ("unknown": every `paths` subscription
/// takes the push) when GitLab cut the diff (`compare_timeout`, its file and size limits)
/// or the answer is not a compare.
pub fn changed_paths(body: &[u8]) -> Option<Vec<String>> {
    let value: Value = serde_json::from_slice(body).ok()?;
    if value.get("compare_timeout").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    let diffs = value.get("diffs")?.as_array()?;
    let mut paths: Vec<String> = Vec::new();
    for diff in diffs {
        let mut any = false;
        for key in ["old_path", "new_path"] {
            if let Some(path) = diff
                .get(key)
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty())
            {
                any = true;
                paths.push(path.to_string());
            }
        }
        if !any {
            return None;
        }
    }
    paths.sort();
    paths.dedup();
    Some(paths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_documented_compare_answer() {
        // The example of doc/api/repositories.md ("Compare branches, tags or commits").
        let body = json!({
            "commit": {"id": "12d65c8dd2b2676fa3ac47d955accc085a37a9c1", "short_id": "12d65c8dd2b"},
            "commits": [{"id": "12d65c8dd2b2676fa3ac47d955accc085a37a9c1"}],
            "diffs": [{"old_path": "files/js/application.js", "new_path": "files/js/application.js",
                       "a_mode": null, "b_mode": "100644", "diff": "@@ -24,8 +24,39 @@",
                       "new_file": false, "renamed_file": false, "deleted_file": false}],
            "compare_timeout": false,
            "compare_same_ref": false,
            "web_url": "https://gitlab.example.com/janedoe/gitlab-foss/-/compare/ae73cb07...0b4bc9a4"
        });
        assert_eq!(
            changed_paths(body.to_string().as_bytes()),
            Some(vec!["files/js/application.js".to_string()])
        );
    }

    #[test]
    fn renames_count_twice_and_truncation_is_unknown() {
        let renamed = json!({"diffs": [
            {"old_path": "clusters/prod/app.yaml", "new_path": "archive/app.yaml", "renamed_file": true},
            {"old_path": "docs/a.md", "new_path": "docs/a.md"}
        ], "compare_timeout": false});
        assert_eq!(
            changed_paths(renamed.to_string().as_bytes()),
            Some(vec![
                "archive/app.yaml".to_string(),
                "clusters/prod/app.yaml".to_string(),
                "docs/a.md".to_string()
            ])
        );
        let cut = json!({"diffs": [{"old_path": "a", "new_path": "a"}], "compare_timeout": true});
        assert_eq!(changed_paths(cut.to_string().as_bytes()), None);
        let same_tree = json!({"diffs": [], "commits": [], "compare_timeout": false});
        assert_eq!(
            changed_paths(same_tree.to_string().as_bytes()),
            Some(vec![])
        );
        for junk in [&b"not json"[..], b"{}", b"[]", br#"{"diffs": [{}]}"#] {
            assert_eq!(
                changed_paths(junk),
                None,
                "{}",
                String::from_utf8_lossy(junk)
            );
        }
    }
}
