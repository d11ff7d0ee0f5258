//! Harbor webhooks (notify type `http`), in either payload format:
//!
//! - Default: `{"type": "PUSH_ARTIFACT", "occur_at", "operator", "event_data": {...}}`;
//! - CloudEvents (`application/cloudevents+json`): `{"specversion": "1.0", "id",
//!   "type": "harbor.artifact.pushed", "data": {...}}`.
//!
//! Both carry `resources: [{digest, tag, resource_url}]` and `repository: {repo_full_name}`.
//! Harbor sends one resource per event, its first tag, or the digest in `tag` when the
//! artifact was pushed untagged. The registry is `resource_url` up to its first `/`
//! (Harbor's external URL without the scheme). Only `PUSH_ARTIFACT` is a new version; every
//! other event type is ignored. Docs: goharbor/website
//! `docs/working-with-projects/project-configuration/configure-webhooks.md`; Harbor
//! `src/controller/event/handler/webhook/artifact/artifact.go`.

use serde::Deserialize;

use super::{MAX_EVENTS, Passed, PushedArtifact, event_delivery};
use crate::gitlab::{Delivery, MalformedEvent, ParsedEvent, decode, field, quote_untrusted};
use crate::oci::OciLocation;

const DEFAULT_PUSH: &str = "PUSH_ARTIFACT";
const CLOUDEVENTS_PUSH: &str = "harbor.artifact.pushed";

#[derive(Debug, Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    kind: Option<String>,
    /// CloudEvents only.
    specversion: Option<String>,
    id: Option<String>,
    /// Default format.
    event_data: Option<EventData>,
    /// CloudEvents format.
    data: Option<EventData>,
}

#[derive(Debug, Deserialize)]
struct EventData {
    #[serde(default)]
    resources: Vec<Resource>,
    repository: Option<Repository>,
}

#[derive(Debug, Deserialize)]
struct Resource {
    digest: Option<String>,
    tag: Option<String>,
    resource_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Repository {
    repo_full_name: Option<String>,
}

/// The tagged pushes of one Harbor webhook, or why there are none.
pub fn parse(body: &[u8], delivery: &Delivery<'_>) -> Result<ParsedEvent, MalformedEvent> {
    let payload: Payload = decode(body, "Harbor webhook")?;
    let cloudevents = payload.specversion.is_some();
    let kind = payload.kind.as_deref().unwrap_or_default();
    let is_push = if cloudevents {
        kind == CLOUDEVENTS_PUSH
    } else {
        kind == DEFAULT_PUSH
    };
    if !is_push {
        return Ok(ParsedEvent::Ignored {
            reason: format!(
                "Harbor event type {} is not an artifact push",
                quote_untrusted(kind)
            ),
        });
    }
    let data = if cloudevents {
        payload.data
    } else {
        payload.event_data
    };
    let (data_field, repository_field) = if cloudevents {
        ("data", "data.repository.repo_full_name")
    } else {
        ("event_data", "event_data.repository.repo_full_name")
    };
    let data = data.ok_or_else(|| field(data_field, "missing on an artifact push"))?;
    if data.resources.len() > MAX_EVENTS {
        return Err(field(
            data_field,
            format!(
                "{} resources; at most {MAX_EVENTS} are accepted",
                data.resources.len()
            ),
        ));
    }
    let repository = data
        .repository
        .as_ref()
        .and_then(|repository| repository.repo_full_name.as_deref())
        .ok_or_else(|| field(repository_field, "missing on an artifact push"))?;
    let id = if cloudevents {
        event_delivery("harbor-event", payload.id.as_deref())
    } else {
        None
    };
    let delivery = Delivery {
        id: id.as_deref().unwrap_or(delivery.id),
        ..*delivery
    };
    let mut pushes = Vec::new();
    let mut passed = Passed::default();
    for resource in &data.resources {
        let tag = resource.tag.as_deref().unwrap_or_default();
        let digest = resource.digest.as_deref().unwrap_or_default();
        // Harbor reports an untagged push with the digest as its tag.
        if tag.is_empty() || tag == digest || tag.contains(':') {
            passed.add("push by digest (no tag)");
            continue;
        }
        let host = resource
            .resource_url
            .as_deref()
            .and_then(|url| url.split_once('/'))
            .map(|(host, _)| host)
            .filter(|host| !host.is_empty())
            .ok_or_else(|| field("resources[].resource_url", "has no registry host"))?;
        let location = OciLocation::from_parts(host, repository).map_err(|error| {
            field(
                "repository.repo_full_name",
                format!("with the host of resource_url: {error}"),
            )
        })?;
        let artifact = PushedArtifact::new(
            location,
            tag,
            digest,
            ("resources[].tag", "resources[].digest"),
        )?;
        let push = artifact.into_push(&delivery);
        if !pushes.iter().any(|p: &crate::push::Push| p.key == push.key) {
            pushes.push(push);
        }
    }
    if pushes.is_empty() {
        return Ok(ParsedEvent::Ignored {
            reason: passed.reason("Harbor"),
        });
    }
    Ok(ParsedEvent::Pushes(pushes))
}

#[cfg(test)]
#[path = "harbor_test.rs"]
mod tests;
