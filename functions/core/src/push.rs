//! The messages that travel between the functions: `Push` v1 (intake queue) and
//! `Dispatch` v1 (dispatch queue). Small, versioned, never the raw webhook.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const PUSH_VERSION: u32 = 1;
pub const DISPATCH_VERSION: u32 = 1;

/// What happened: a Git branch push or tag push (creation, update or deletion) reported by
/// GitLab, a successful GitLab pipeline, or an artifact pushed to a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushEvent {
    Push,
    TagPush,
    /// A GitLab pipeline that succeeded: `ref` and `after` are the pipeline's ref and commit.
    Pipeline,
    /// A tagged manifest pushed to a registry (`crate::artifacts`): `instance` is
    /// `oci://<registry>`, `project.path` the repository, `ref` the tag and `after` the
    /// manifest digest.
    ArtifactPush,
}

impl PushEvent {
    /// The `X-Gitlab-Event` value GitLab uses for this event on a project hook. An
    /// artifact push is no GitLab event; a `gitlab` Receiver is sent `Artifact Push Hook`.
    pub fn gitlab_event_header(self) -> &'static str {
        match self {
            PushEvent::Push => "Push Hook",
            PushEvent::TagPush => "Tag Push Hook",
            PushEvent::Pipeline => "Pipeline Hook",
            PushEvent::ArtifactPush => "Artifact Push Hook",
        }
    }

    pub fn object_kind(self) -> &'static str {
        match self {
            PushEvent::Push => "push",
            PushEvent::TagPush => "tag_push",
            PushEvent::Pipeline => "pipeline",
            PushEvent::ArtifactPush => "artifact_push",
        }
    }

    /// A Git ref change, which GitRepositories follow.
    pub fn is_git_push(self) -> bool {
        matches!(self, PushEvent::Push | PushEvent::TagPush)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Project {
    pub id: u64,
    /// `path_with_namespace`, subgroups included: `group/sub/project`.
    pub path: String,
    pub http_url: String,
    pub ssh_url: String,
    pub web_url: String,
    pub default_branch: Option<String>,
}

/// One changed ref of one project, normalised from any GitLab hook kind; or one successful
/// pipeline; or one artifact pushed to a registry, whose registry, repository, tag and
/// digest ride in `instance`, `project`, `ref` and `after` (`crate::artifacts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Push {
    pub v: u32,
    /// `hex(sha256(instance|project_id|ref|before|after|delivery))`: one key per accepted
    /// delivery of one ref change. `delivery` is GitLab's `Idempotency-Key` when it sent one
    /// (the same on a re-run or a manual resend of that delivery, and only then), else a
    /// request id unique to this acceptance. So the queues deduplicate exactly the same
    /// delivery and nothing else: a re-push of the same `before..after` (a roll-forward
    /// after a rollback, a tag deleted and re-created) is a new push, and the same push
    /// through a project and a system hook is two (dispatch collapses them).
    pub key: String,
    /// The GitLab instance origin, e.g. `https://gitlab.example.com`.
    pub instance: String,
    pub event: PushEvent,
    pub project: Project,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub before: String,
    pub after: String,
    pub checkout_sha: Option<String>,
    /// `None` when GitLab did not tell us every changed file: "may have changed", never
    /// "nothing changed".
    pub changed_paths: Option<Vec<String>>,
    /// RFC 3339 time at which ingest accepted the webhook.
    pub received_at: String,
    /// The same moment on the accepting process's monotonic clock, where that process also
    /// dispatches (`serve`): within one run it orders the push against that process's
    /// deliveries exactly, where the wall clock needs a margin
    /// (`outcome::supersede`). Absent from Lambda ingest's pushes, and from the messages of
    /// releases before it (both read as absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_in_run: Option<RunInstant>,
}

/// A reading of one process run's monotonic clock: `run` names the run (it differs between
/// any two runs), `nanos` counts from a point fixed for that run. Two readings order
/// exactly when their `run`s are equal and mean nothing to each other otherwise; a wall
/// clock set back or forward between them changes neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RunInstant {
    pub run: u64,
    pub nanos: u64,
}

impl RunInstant {
    /// Whether `self` is known to come strictly before `later`: `None` when they are
    /// readings of different runs, which cannot be compared.
    pub fn is_before(self, later: RunInstant) -> Option<bool> {
        (self.run == later.run).then_some(self.nanos < later.nanos)
    }
}

impl Push {
    pub fn compute_key(
        instance: &str,
        project_id: u64,
        git_ref: &str,
        before: &str,
        after: &str,
        delivery: &str,
    ) -> String {
        let project_id = project_id.to_string();
        let mut digest = Sha256::new();
        for (i, part) in [instance, &project_id, git_ref, before, after, delivery]
            .iter()
            .enumerate()
        {
            if i > 0 {
                digest.update(b"|");
            }
            digest.update(part.as_bytes());
        }
        hex::encode(digest.finalize())
    }

    /// The ref was deleted: GitLab sends an all-zero `after`.
    pub fn is_deletion(&self) -> bool {
        is_zero_sha(&self.after)
    }

    pub fn is_branch_deletion(&self) -> bool {
        self.event == PushEvent::Push && self.is_deletion()
    }

    /// Branch or tag name without `refs/heads/` or `refs/tags/`; other refs stay whole.
    pub fn short_ref(&self) -> &str {
        short_ref(&self.git_ref)
    }
}

pub fn short_ref(git_ref: &str) -> &str {
    git_ref
        .strip_prefix("refs/heads/")
        .or_else(|| git_ref.strip_prefix("refs/tags/"))
        .unwrap_or(git_ref)
}

pub fn is_zero_sha(sha: &str) -> bool {
    !sha.is_empty() && sha.bytes().all(|b| b == b'0')
}

/// One push for one cluster: the unit of the dispatch queue.
///
/// A retry is a new message (on the retry queue, so it never holds the cluster's FIFO
/// group): `attempts` carries the attempts already made, and `only` the targets still to
/// reach. Both are absent on the first message, and older readers ignore them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispatch {
    pub v: u32,
    pub cluster: String,
    pub push: Push,
    /// Attempts made by the earlier messages of this delivery.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// Only these targets (`receiver/<ns>/<name>`, `gitrepository/<ns>/<name>`, or an
    /// artifact object such as `ocirepository/<ns>/<name>`); `None` for every target the
    /// push has in the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<Vec<String>>,
    /// Route could not take the changed paths from GitLab's compare (it holds no
    /// credential on AWS) and sent the push to every `paths` subscriber its other rules
    /// take: dispatch compares and re-checks the cluster's subscriptions before
    /// triggering (`docs/design.md`, "Changed paths for `paths` subscriptions").
    #[serde(default, skip_serializing_if = "is_false")]
    pub verify_paths: bool,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl Dispatch {
    pub fn new(cluster: impl Into<String>, push: Push) -> Self {
        Self {
            v: DISPATCH_VERSION,
            cluster: cluster.into(),
            push,
            attempts: 0,
            only: None,
            verify_paths: false,
        }
    }

    /// FIFO `MessageGroupId`: one group per cluster. A cluster's messages are handled one
    /// batch at a time, which lets dispatch coalesce a backlog into one call per target and
    /// bounds the load on each apiserver; clusters never wait for each other, and since
    /// retries leave the group (they go to the retry queue), no failure holds the group.
    pub fn group_id(&self) -> &str {
        &self.cluster
    }

    /// FIFO `MessageDeduplicationId`, so a route that fans out again after a partial
    /// failure does not queue a cluster's push twice: 64 hex digits, the first 32 of
    /// `sha256(push.key)` then the first 32 of `sha256(cluster|push.key)`. The push's half
    /// first puts one push's clusters side by side in the embedded queue's deduplication
    /// table (a B-tree keyed by the id), so a push to 20 clusters records its ids in a
    /// page or two instead of 20 pages at random, each written whole to the WAL; the
    /// cluster's half keeps 128 bits per (cluster, push), as unique as SQS needs.
    pub fn dedup_id(&self) -> String {
        let push = Sha256::digest(self.push.key.as_bytes());
        let mut digest = Sha256::new();
        digest.update(self.cluster.as_bytes());
        digest.update(b"|");
        digest.update(self.push.key.as_bytes());
        let cluster = digest.finalize();
        let mut id = hex::encode(&push[..16]);
        id.push_str(&hex::encode(&cluster[..16]));
        id
    }

    /// Whether this message asks for `target` (an object id such as `receiver/ns/name`).
    pub fn wants(&self, target: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|wanted| wanted == target))
    }

    /// Every target of `self` is also a target of `other`.
    pub fn targets_within(&self, other: &Dispatch) -> bool {
        match (&self.only, &other.only) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(mine), Some(theirs)) => mine.iter().all(|target| theirs.contains(target)),
        }
    }
}

/// A queue message body that is not a message we understand.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("message body is not valid JSON for this message type: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported message version {found} (this build reads version {supported})")]
    Version { found: u32, supported: u32 },
}

impl Push {
    pub fn from_json(body: &str) -> Result<Self, MessageError> {
        let push: Push = serde_json::from_str(body)?;
        if push.v != PUSH_VERSION {
            return Err(MessageError::Version {
                found: push.v,
                supported: PUSH_VERSION,
            });
        }
        Ok(push)
    }

    pub fn to_json(&self) -> String {
        // Serialising plain strings and numbers into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl Dispatch {
    pub fn from_json(body: &str) -> Result<Self, MessageError> {
        let dispatch: Dispatch = serde_json::from_str(body)?;
        for (found, supported) in [
            (dispatch.v, DISPATCH_VERSION),
            (dispatch.push.v, PUSH_VERSION),
        ] {
            if found != supported {
                return Err(MessageError::Version { found, supported });
            }
        }
        Ok(dispatch)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_push() -> Push {
        let instance = "https://gitlab.example.com".to_string();
        Push {
            v: PUSH_VERSION,
            key: Push::compute_key(
                &instance,
                15,
                "refs/heads/main",
                &"b".repeat(40),
                &"a".repeat(40),
                "idempotency-key:sample",
            ),
            instance,
            event: PushEvent::Push,
            project: Project {
                id: 15,
                path: "mike/diaspora".into(),
                http_url: "https://gitlab.example.com/mike/diaspora.git".into(),
                ssh_url: "git@gitlab.example.com:mike/diaspora.git".into(),
                web_url: "https://gitlab.example.com/mike/diaspora".into(),
                default_branch: Some("main".into()),
            },
            git_ref: "refs/heads/main".into(),
            before: "b".repeat(40),
            after: "a".repeat(40),
            checkout_sha: Some("a".repeat(40)),
            changed_paths: None,
            received_at: "2026-11-22T00:00:00Z".into(),
            accepted_in_run: None,
        }
    }

    #[test]
    fn key_is_sha256_of_instance_project_ref_before_after_delivery_joined_by_bars() {
        // printf '%s' 'https://gitlab.example.com|15|refs/heads/main|95790bf891e76fee5e1747ab589903a6a1f80f22|da1560886d4f094c3e6c9ef40349f7d38b5d27d7|idempotency-key:f0c8f8c6-3d3a-4b2b-9a59-5f4f0c1c2d3e' | sha256sum
        assert_eq!(
            Push::compute_key(
                "https://gitlab.example.com",
                15,
                "refs/heads/main",
                "95790bf891e76fee5e1747ab589903a6a1f80f22",
                "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
                "idempotency-key:f0c8f8c6-3d3a-4b2b-9a59-5f4f0c1c2d3e"
            ),
            "76599d39c68730a38a86cceb9b2fbc902f0855efe03c7a998979af648fd81a2d"
        );
    }

    #[test]
    fn key_changes_with_each_component() {
        let base = Push::compute_key("i", 1, "r", "b", "a", "d");
        assert_ne!(base, Push::compute_key("j", 1, "r", "b", "a", "d"));
        assert_ne!(base, Push::compute_key("i", 2, "r", "b", "a", "d"));
        assert_ne!(base, Push::compute_key("i", 1, "s", "b", "a", "d"));
        assert_ne!(base, Push::compute_key("i", 1, "r", "c", "a", "d"));
        assert_ne!(base, Push::compute_key("i", 1, "r", "b", "c", "d"));
        assert_ne!(
            base,
            Push::compute_key("i", 1, "r", "b", "a", "e"),
            "the same ref change delivered again (not a resend) is a new push"
        );
        // The separator keeps "i|11|r" and "i1|1|r" apart.
        assert_ne!(
            Push::compute_key("i", 11, "r", "b", "a", "d"),
            Push::compute_key("i1", 1, "r", "b", "a", "d")
        );
    }

    #[test]
    fn deletion_is_an_all_zero_after() {
        let mut push = sample_push();
        assert!(!push.is_deletion());
        push.after = "0".repeat(40);
        assert!(push.is_deletion());
        assert!(push.is_branch_deletion());
        push.event = PushEvent::TagPush;
        assert!(!push.is_branch_deletion());
        assert!(!is_zero_sha(""));
        assert!(is_zero_sha(&"0".repeat(64)));
    }

    #[test]
    fn short_ref_strips_only_heads_and_tags() {
        for (full, short) in [
            ("refs/heads/main", "main"),
            ("refs/heads/feature/x", "feature/x"),
            ("refs/tags/v1.0.0", "v1.0.0"),
            ("refs/merge-requests/1/head", "refs/merge-requests/1/head"),
            ("main", "main"),
            ("", ""),
        ] {
            assert_eq!(short_ref(full), short, "{full}");
        }
    }

    #[test]
    fn messages_round_trip_and_reject_other_versions() {
        let push = sample_push();
        let json = push.to_json();
        assert!(json.contains(r#""ref":"refs/heads/main""#));
        assert!(json.contains(r#""event":"push""#));
        assert!(json.contains(r#""changed_paths":null"#));
        assert_eq!(Push::from_json(&json).unwrap(), push);

        let dispatch = Dispatch::new("prod", push.clone());
        assert_eq!(Dispatch::from_json(&dispatch.to_json()).unwrap(), dispatch);
        assert_eq!(dispatch.group_id(), "prod");
        assert_eq!(dispatch.dedup_id().len(), 64);
        assert_ne!(
            dispatch.dedup_id(),
            Dispatch::new("staging", push).dedup_id()
        );

        let newer = json.replacen(r#""v":1"#, r#""v":2"#, 1);
        assert!(matches!(
            Push::from_json(&newer),
            Err(MessageError::Version { found: 2, .. })
        ));
        assert!(matches!(Push::from_json("{"), Err(MessageError::Json(_))));
        assert!(matches!(Push::from_json("[]"), Err(MessageError::Json(_))));
    }

    #[test]
    fn a_dispatch_checks_its_own_version_and_its_push_version_each_against_its_own() {
        let dispatch = Dispatch::new("prod", sample_push());
        let json = dispatch.to_json();
        // The outer "v" comes first, the push's second.
        let outer = json.replacen(r#""v":1"#, r#""v":7"#, 1);
        assert!(matches!(
            Dispatch::from_json(&outer),
            Err(MessageError::Version {
                found: 7,
                supported: DISPATCH_VERSION
            })
        ));
        let inner = json.replace(r#""push":{"v":1"#, r#""push":{"v":9"#);
        assert!(matches!(
            Dispatch::from_json(&inner),
            Err(MessageError::Version {
                found: 9,
                supported: PUSH_VERSION
            })
        ));
    }

    #[test]
    fn a_retry_carries_its_attempts_and_targets_and_a_first_message_neither() {
        let first = Dispatch::new("prod", sample_push());
        let json = first.to_json();
        assert!(
            !json.contains("attempts") && !json.contains("only"),
            "{json}"
        );
        let mut retry = first.clone();
        retry.attempts = 3;
        retry.only = Some(vec!["receiver/flux-system/a".into()]);
        let back = Dispatch::from_json(&retry.to_json()).unwrap();
        assert_eq!(back, retry);
        assert!(back.wants("receiver/flux-system/a"));
        assert!(!back.wants("receiver/flux-system/b"));
        assert!(first.wants("anything"));
        // Which message's targets lie within which.
        assert!(retry.targets_within(&first));
        assert!(!first.targets_within(&retry));
        assert!(retry.targets_within(&retry));
        let mut other = retry.clone();
        other.only = Some(vec!["receiver/flux-system/b".into()]);
        assert!(!retry.targets_within(&other));
    }

    #[test]
    fn a_dispatch_dedup_id_is_the_push_half_then_the_cluster_half() {
        let push = sample_push();
        let mut other_push = sample_push();
        other_push.key = "another key".into();
        let id = |cluster: &str, push: &Push| Dispatch::new(cluster, push.clone()).dedup_id();
        // (cluster a, push a, cluster b, push b, same push half, same id)
        let cases = [
            ("prod", &push, "prod", &push, true, true),
            ("prod", &push, "staging", &push, true, false),
            ("prod", &push, "prod", &other_push, false, false),
            ("prod", &push, "staging", &other_push, false, false),
            ("prod", &push, "Prod", &push, true, false),
        ];
        for (cluster_a, push_a, cluster_b, push_b, same_half, same_id) in cases {
            let (a, b) = (id(cluster_a, push_a), id(cluster_b, push_b));
            assert_eq!(
                a[..32] == b[..32],
                same_half,
                "{cluster_a} / {cluster_b}: {a} {b}"
            );
            assert_eq!(a == b, same_id, "{cluster_a} / {cluster_b}: {a} {b}");
            // What SQS accepts: at most 128 of its allowed characters.
            assert!(
                a.len() == 64
                    && a.bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
        }
        // Pinned (the sample push, cluster "prod"): a change of the rule changes which
        // messages SQS deduplicates across a deploy.
        assert_eq!(
            id("prod", &push),
            "1360f2ba3f38a905a916788fffde0b66c66956e5a30e340bc0d0e11301b74e3a"
        );
    }

    /// `events/generate.py` writes the sample SQS batches with its own copy of the ids'
    /// rules: the samples must carry the ids the queues get.
    #[test]
    fn the_sample_batches_carry_the_ids_the_rules_give() {
        let events = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events");
        let records = |file: &str| -> Vec<serde_json::Value> {
            let text = std::fs::read_to_string(events.join(file)).unwrap();
            let batch: serde_json::Value = serde_json::from_str(&text).unwrap();
            batch["Records"].as_array().unwrap().clone()
        };
        let ids = |record: &serde_json::Value| {
            let attributes = &record["attributes"];
            (
                attributes["MessageGroupId"].as_str().unwrap().to_string(),
                attributes["MessageDeduplicationId"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        };
        let dispatches = records("dispatch-batch.json");
        assert!(!dispatches.is_empty());
        for record in &dispatches {
            let dispatch = Dispatch::from_json(record["body"].as_str().unwrap()).unwrap();
            let expected = (dispatch.group_id().to_string(), dispatch.dedup_id());
            assert_eq!(ids(record), expected);
        }
        let pushes = records("route-batch.json");
        assert!(!pushes.is_empty());
        for record in &pushes {
            let push = Push::from_json(record["body"].as_str().unwrap()).unwrap();
            assert_eq!(ids(record).1, push.key);
        }
    }
}
