//! Registry notifications → `Push` records of kind `artifact_push`, one parser per sender:
//!
//! - [`distribution`]: CNCF Distribution (`registry:2`) and GitLab's self-managed container
//!   registry, `{"events": [...]}` envelopes (`POST /registry/distribution`);
//! - [`harbor`]: Harbor webhooks, Default and CloudEvents formats (`POST /registry/harbor`);
//! - [`ecr`]: Amazon ECR `ECR Image Action` events, put on the intake queue by an
//!   EventBridge rule (read by route, not by ingest).
//!
//! Every parser keeps only tagged manifest pushes: a push by digest moves no tag, so no Flux
//! object that follows a tag or a range can see anything new, and a digest-pinned one never
//! moves. Everything else authentic (pulls, deletes, blobs, scans) is ignored with a reason,
//! never an error, because registries retry (and queue up) what they see fail.
//!
//! An artifact push travels as a [`Push`] whose fields hold the artifact: `instance` is
//! `oci://<registry>`, `project.path` the repository, `ref` the tag, `after` the manifest
//! digest, and `project.id` a number derived from registry and repository
//! ([`repository_id`]), so everything grouped per project (the intake FIFO group,
//! supersession, one Receiver call per project and ref) is grouped per repository.

pub mod distribution;
pub mod ecr;
pub mod harbor;

use sha2::{Digest, Sha256};

use crate::gitlab::{Delivery, MalformedEvent, field};
use crate::oci::{OCI_SCHEME, OciLocation, is_digest, is_tag};
use crate::push::{PUSH_VERSION, Project, Push, PushEvent};

/// Most events one notification may carry; registries send one per request.
pub const MAX_EVENTS: usize = 100;
/// Longest event id taken as a delivery id.
const MAX_EVENT_ID_BYTES: usize = 128;

/// One tag pushed to one repository, as every registry parser reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedArtifact {
    pub location: OciLocation,
    pub tag: String,
    pub digest: String,
}

impl PushedArtifact {
    /// Checks the tag and digest a registry sent; `fields` names them in an error.
    pub fn new(
        location: OciLocation,
        tag: &str,
        digest: &str,
        fields: (&'static str, &'static str),
    ) -> Result<Self, MalformedEvent> {
        if !is_tag(tag) {
            return Err(field(fields.0, "is not an OCI tag"));
        }
        if !is_digest(digest) {
            return Err(field(fields.1, "is not a digest (<algorithm>:<encoded>)"));
        }
        Ok(Self {
            location,
            tag: tag.to_string(),
            digest: digest.to_string(),
        })
    }

    /// The `Push` that carries this artifact through the queues.
    pub fn into_push(self, delivery: &Delivery<'_>) -> Push {
        let instance = format!("{OCI_SCHEME}{}", self.location.registry);
        let id = repository_id(&self.location);
        let key = Push::compute_key(&instance, id, &self.tag, "", &self.digest, delivery.id);
        Push {
            v: PUSH_VERSION,
            key,
            event: PushEvent::ArtifactPush,
            project: Project {
                id,
                path: self.location.repository.clone(),
                http_url: String::new(),
                ssh_url: String::new(),
                web_url: format!("{OCI_SCHEME}{}", self.location),
                default_branch: None,
            },
            instance,
            git_ref: self.tag,
            before: String::new(),
            after: self.digest,
            checkout_sha: None,
            changed_paths: None,
            received_at: delivery.received_at.to_string(),
            accepted_in_run: None,
        }
    }
}

impl Push {
    /// The artifact an `artifact_push` carries; `None` for every other event, or a message
    /// whose fields do not hold one.
    pub fn artifact(&self) -> Option<PushedArtifact> {
        if self.event != PushEvent::ArtifactPush {
            return None;
        }
        let registry = self.instance.strip_prefix(OCI_SCHEME)?;
        let location = OciLocation::from_parts(registry, &self.project.path).ok()?;
        Some(PushedArtifact {
            location,
            tag: self.git_ref.clone(),
            digest: self.after.clone(),
        })
    }
}

/// A stable number for a registry and repository, where a GitLab push has its project id:
/// the first 8 bytes of `sha256("oci|" + registry/repository)`, top bit cleared so it stays
/// a non-negative 64-bit integer in every JSON reader.
pub fn repository_id(location: &OciLocation) -> u64 {
    let digest = Sha256::digest(format!("oci|{location}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) & (u64::MAX >> 1)
}

/// A registry's event id as a delivery id (`<prefix>:<id>`), when it is plausible: the
/// same on the registry's own retries of one event, different for every other event.
pub(crate) fn event_delivery(prefix: &str, id: Option<&str>) -> Option<String> {
    id.filter(|id| {
        (1..=MAX_EVENT_ID_BYTES).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
    })
    .map(|id| format!("{prefix}:{id}"))
}

/// Counts of what a notification held besides tagged manifest pushes, for the reason of
/// an ignored one: `"1 pull, 2 blob pushes"`.
#[derive(Debug, Default)]
pub(crate) struct Passed {
    counts: Vec<(String, usize)>,
}

impl Passed {
    pub(crate) fn add(&mut self, what: impl Into<String>) {
        let what = what.into();
        match self.counts.iter_mut().find(|(known, _)| *known == what) {
            Some((_, count)) => *count += 1,
            None => self.counts.push((what, 1)),
        }
    }

    pub(crate) fn reason(&self, source: &str) -> String {
        if self.counts.is_empty() {
            return format!("{source} notification holds no event");
        }
        let parts: Vec<String> = self
            .counts
            .iter()
            .map(|(what, count)| format!("{count} × {what}"))
            .collect();
        format!(
            "{source} notification holds no tagged manifest push ({})",
            parts.join(", ")
        )
    }
}

#[cfg(test)]
#[path = "artifacts_test.rs"]
mod tests;
