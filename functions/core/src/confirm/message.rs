//! The confirmation message: one per delivered push and cluster, on the confirm queue.
//! Small and versioned like `Dispatch`; each re-check is a new message carrying what the
//! earlier checks found and what was posted to GitLab, so no state lives anywhere else.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::rule::Observation;
use crate::gitlab_api::StatusState;
use crate::push::{MessageError, Push};

pub const CONFIRMATION_VERSION: u32 = 1;

/// How a confirmation ended: exactly one of these per confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every consumer applied the commit.
    Success,
    /// A consumer reported `Ready=False` for the commit.
    Failed,
    /// The source moved past the commit before it was applied (the newer push owns it).
    Superseded,
    /// The deadline (or the apiserver request budget) ran out first.
    TimedOut,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failed => "failed",
            Outcome::Superseded => "superseded",
            Outcome::TimedOut => "timed_out",
        }
    }

    /// The commit status it is reported as: superseded and timed out are `canceled`, and
    /// the description says which.
    pub fn status_state(self) -> StatusState {
        match self {
            Outcome::Success => StatusState::Success,
            Outcome::Failed => StatusState::Failed,
            Outcome::Superseded | Outcome::TimedOut => StatusState::Canceled,
        }
    }

    /// Counted by the "not deployed" alarm.
    pub fn is_alarming(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::TimedOut)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    pub outcome: Outcome,
    /// A short machine word (`applied`, `BuildFailed`, `source_moved`, `deadline`,
    /// `request_budget`).
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// When the cluster applied it (success only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<String>,
    pub ended_at: String,
}

/// Whether statuses are being posted to GitLab for this confirmation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Report {
    #[default]
    Active,
    /// No API token is configured for the push's GitLab instance: nothing is posted.
    NotConfigured,
    /// A post failed in a way retrying cannot fix (bad token, project gone): nothing more
    /// is posted, and the final status is dead-lettered with this reason at the end.
    Failed {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    pub v: u32,
    pub cluster: String,
    pub push: Push,
    /// RFC 3339: when the trigger was delivered (the deadline counts from here).
    pub started_at: String,
    /// Looks at the cluster so far.
    #[serde(default)]
    pub checks: u32,
    /// apiserver requests those looks made (each list is one).
    #[serde(default)]
    pub requests: u32,
    /// What the latest look found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Observation>,
    /// The last state posted to GitLab for this push and cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posted: Option<StatusState>,
    #[serde(default)]
    pub report: Report,
    /// Posts that failed and are to be tried again, in a row.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub post_failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<Ended>,
    /// The summary status is still to be brought up to date.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub summary_due: bool,
    /// The confirm process that scheduled this look (`serve`: one id per run; Lambda:
    /// none), so a look that outlived a restart reads before its terminal post
    /// (`report::scheduled_elsewhere`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_by: Option<String>,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

impl Confirmation {
    pub fn start(cluster: impl Into<String>, push: Push, now: OffsetDateTime) -> Self {
        Self {
            v: CONFIRMATION_VERSION,
            cluster: cluster.into(),
            push,
            started_at: crate::ingest::rfc3339(now),
            checks: 0,
            requests: 0,
            last: None,
            posted: None,
            report: Report::Active,
            post_failures: 0,
            ended: None,
            summary_due: false,
            scheduled_by: None,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<Self, MessageError> {
        let confirmation: Self = serde_json::from_str(text)?;
        if confirmation.v != CONFIRMATION_VERSION {
            return Err(MessageError::Version {
                found: confirmation.v,
                supported: CONFIRMATION_VERSION,
            });
        }
        Ok(confirmation)
    }

    /// Seconds from the push's acceptance to the cluster reporting it applied (success
    /// only; 0 when the cluster's clock is behind fluxrelay's).
    pub fn push_to_applied_secs(&self) -> Option<f64> {
        use time::format_description::well_known::Rfc3339;
        let ended = self
            .ended
            .as_ref()
            .filter(|e| e.outcome == Outcome::Success)?;
        let applied = OffsetDateTime::parse(ended.applied_at.as_deref()?, &Rfc3339).ok()?;
        let accepted = OffsetDateTime::parse(&self.push.received_at, &Rfc3339).ok()?;
        Some((applied - accepted).as_seconds_f64().max(0.0))
    }

    /// Deduplicates the start of one confirmation (the embedded queue's dedup window): a
    /// dispatch message that comes back after its confirmation was started does not start
    /// a second one.
    pub fn dedup_id(&self) -> String {
        let mut digest = Sha256::new();
        digest.update(b"confirm|");
        digest.update(self.cluster.as_bytes());
        digest.update(b"|");
        digest.update(self.push.key.as_bytes());
        hex::encode(digest.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Confirmation {
        Confirmation::start(
            "prod-eu",
            crate::push::tests::sample_push(),
            OffsetDateTime::from_unix_timestamp(1_763_800_000).unwrap(),
        )
    }

    #[test]
    fn round_trips_and_stays_small() {
        let mut confirmation = sample();
        assert_eq!(
            Confirmation::from_json(&confirmation.to_json()).unwrap(),
            confirmation
        );
        let start = confirmation.to_json();
        assert!(
            !start.contains("post_failures") && !start.contains("summary_due"),
            "{start}"
        );
        confirmation.report = Report::Failed {
            reason: "GitLab answered 401".into(),
            status: Some(401),
        };
        confirmation.posted = Some(StatusState::Running);
        confirmation.ended = Some(Ended {
            outcome: Outcome::TimedOut,
            reason: "deadline".into(),
            message: "timed out".into(),
            object: None,
            applied_at: None,
            ended_at: "2026-11-22T00:15:00Z".into(),
        });
        let text = confirmation.to_json();
        assert!(text.contains(r#""report":{"state":"failed""#), "{text}");
        assert!(text.contains(r#""outcome":"timed_out""#), "{text}");
        assert_eq!(Confirmation::from_json(&text).unwrap(), confirmation);
        assert!(text.len() < 2048, "{}", text.len());
    }

    #[test]
    fn refuses_other_versions_and_junk() {
        let mut other = sample();
        other.v = 2;
        assert!(matches!(
            Confirmation::from_json(&other.to_json()),
            Err(MessageError::Version { found: 2, .. })
        ));
        assert!(Confirmation::from_json("{}").is_err());
        assert!(Confirmation::from_json("not json").is_err());
    }

    #[test]
    fn one_dedup_id_per_push_and_cluster() {
        let a = sample();
        let mut b = sample();
        assert_eq!(a.dedup_id(), b.dedup_id());
        b.cluster = "prod-us".into();
        assert_ne!(a.dedup_id(), b.dedup_id());
    }

    #[test]
    fn push_to_applied_counts_from_acceptance_to_the_last_ready() {
        let mut confirmation = sample();
        assert_eq!(confirmation.push_to_applied_secs(), None);
        let ended = |outcome, applied_at: Option<&str>| Ended {
            outcome,
            reason: String::new(),
            message: String::new(),
            object: None,
            applied_at: applied_at.map(str::to_string),
            ended_at: String::new(),
        };
        confirmation.ended = Some(ended(Outcome::Success, Some("2026-11-22T00:00:12Z")));
        assert_eq!(confirmation.push_to_applied_secs(), Some(12.0));
        confirmation.ended = Some(ended(Outcome::Success, Some("2026-11-21T23:59:59Z")));
        assert_eq!(
            confirmation.push_to_applied_secs(),
            Some(0.0),
            "a clock behind"
        );
        confirmation.ended = Some(ended(Outcome::Failed, Some("2026-11-22T00:00:12Z")));
        assert_eq!(confirmation.push_to_applied_secs(), None);
        confirmation.ended = Some(ended(Outcome::Success, Some("yesterday")));
        assert_eq!(confirmation.push_to_applied_secs(), None);
    }

    #[test]
    fn outcomes_map_to_gitlab_states() {
        assert_eq!(Outcome::Success.status_state(), StatusState::Success);
        assert_eq!(Outcome::Failed.status_state(), StatusState::Failed);
        assert_eq!(Outcome::Superseded.status_state(), StatusState::Canceled);
        assert_eq!(Outcome::TimedOut.status_state(), StatusState::Canceled);
        assert!(Outcome::TimedOut.is_alarming() && !Outcome::Superseded.is_alarming());
    }
}
