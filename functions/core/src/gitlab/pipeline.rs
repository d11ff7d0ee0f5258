//! GitLab `Pipeline Hook`: a pipeline that succeeded is a `pipeline` event, for teams whose
//! CI publishes the artifact Flux deploys (`flux push artifact`, `helm push`): a cluster
//! that subscribes to the project's pipelines then reconciles the artifact sources under the
//! project's container registry path. Every other status (created, running, failed, …) is
//! ignored. GitLab sends the ref short (`main`, or a tag name with `tag: true`); it becomes
//! a full ref here. Docs: GitLab `doc/user/project/integrations/webhook_events.md`,
//! "Pipeline events".

use serde::Deserialize;

use super::payload::ProjectPayload;
use super::{
    Delivery, MalformedEvent, ParsedEvent, check_ref, check_sha, check_text, decode, field,
    instance_origin, normalise_project, quote_untrusted,
};
use crate::push::{PUSH_VERSION, Push, PushEvent, is_zero_sha};

const SUCCESS: &str = "success";

#[derive(Debug, Deserialize)]
struct PipelinePayload {
    object_attributes: Attributes,
    project: ProjectPayload,
}

#[derive(Debug, Deserialize)]
struct Attributes {
    id: Option<u64>,
    #[serde(rename = "ref")]
    git_ref: String,
    #[serde(default)]
    tag: bool,
    sha: String,
    before_sha: Option<String>,
    status: String,
}

pub(super) fn parse(
    body: &[u8],
    instance_header: Option<&str>,
    delivery: &Delivery<'_>,
) -> Result<ParsedEvent, MalformedEvent> {
    let payload: PipelinePayload = decode(body, "GitLab pipeline")?;
    let attributes = payload.object_attributes;
    if attributes.status != SUCCESS {
        return Ok(ParsedEvent::Ignored {
            reason: format!(
                "pipeline status {} is not success",
                quote_untrusted(&attributes.status)
            ),
        });
    }
    let project = normalise_project(&payload.project, None)?;
    let instance = instance_origin(instance_header, &project.web_url)?;
    check_text(
        "object_attributes.ref",
        &attributes.git_ref,
        super::MAX_NAME_BYTES,
    )?;
    let git_ref = full_ref(&attributes.git_ref, attributes.tag);
    check_ref(&git_ref)?;
    check_sha("object_attributes.sha", &attributes.sha)?;
    if is_zero_sha(&attributes.sha) {
        return Err(field("object_attributes.sha", "is all zeros"));
    }
    let before = attributes
        .before_sha
        .filter(|sha| !sha.is_empty())
        .unwrap_or_else(|| "0".repeat(attributes.sha.len()));
    check_sha("object_attributes.before_sha", &before)?;
    // The pipeline id keeps two pipelines of one commit (a retry) apart in the key even
    // when a hand-made request reuses an Idempotency-Key.
    let pipeline = format!(
        "{}|pipeline:{}",
        delivery.id,
        attributes.id.unwrap_or_default()
    );
    Ok(ParsedEvent::Pushes(vec![Push {
        v: PUSH_VERSION,
        key: Push::compute_key(
            &instance,
            project.id,
            &git_ref,
            &before,
            &attributes.sha,
            &pipeline,
        ),
        instance,
        event: PushEvent::Pipeline,
        project,
        git_ref,
        before,
        checkout_sha: Some(attributes.sha.clone()),
        after: attributes.sha,
        changed_paths: None,
        received_at: delivery.received_at.to_string(),
        accepted_in_run: None,
    }]))
}

/// GitLab's short pipeline ref as a full one: a tag with `tag: true`, else a branch; a ref
/// that is already full (`refs/merge-requests/1/head`) stays as it is.
fn full_ref(short: &str, tag: bool) -> String {
    if short.starts_with("refs/") {
        short.to_string()
    } else if tag {
        format!("refs/tags/{short}")
    } else {
        format!("refs/heads/{short}")
    }
}

#[cfg(test)]
#[path = "pipeline_test.rs"]
mod tests;
