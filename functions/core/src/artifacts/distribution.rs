//! CNCF Distribution registry notifications, as `registry:2` and GitLab's self-managed
//! container registry send them: `{"events": [Event]}` (media type
//! `application/vnd.docker.distribution.events.v1+json`, `v2+json` from Distribution 3;
//! the body is read whatever the `Content-Type`). Current registries post one event per
//! request; older ones several, so every event is read.
//!
//! An event is a new artifact version when its `action` is `push`, its `target` is a
//! manifest (by media type; by a `/manifests/` URL when the media type is absent) and it
//! carries a `target.tag` (a manifest pushed by digest has none). The registry's name is
//! `request.host`, the host the pushing client used, which is the name Flux objects are
//! written with; the host of `target.url` when it is absent. Docs:
//! distribution `docs/content/about/notifications.md`; GitLab container registry
//! `docs/spec/gitlab/notifications.md`.

use serde::Deserialize;

use super::{MAX_EVENTS, Passed, PushedArtifact, event_delivery};
use crate::gitlab::{Delivery, MalformedEvent, ParsedEvent, decode, field, quote_untrusted};
use crate::oci::OciLocation;

/// The manifest media types whose push is a new version of an artifact: OCI image manifest
/// and index (container images, `flux push artifact`, `helm push`), Docker's v2 manifest
/// and manifest list, and the OCI artifact manifest of image-spec 1.1 release candidates.
pub const MANIFEST_MEDIA_TYPES: [&str; 5] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.artifact.manifest.v1+json",
];

#[derive(Debug, Deserialize)]
struct Envelope {
    events: Vec<Event>,
}

#[derive(Debug, Deserialize)]
struct Event {
    id: Option<String>,
    action: Option<String>,
    target: Option<Target>,
    request: Option<Request>,
}

#[derive(Debug, Deserialize)]
struct Target {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    digest: Option<String>,
    repository: Option<String>,
    url: Option<String>,
    tag: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Request {
    host: Option<String>,
}

/// The tagged manifest pushes of one notification, or why there are none.
pub fn parse(body: &[u8], delivery: &Delivery<'_>) -> Result<ParsedEvent, MalformedEvent> {
    let envelope: Envelope = decode(body, "registry notification")?;
    if envelope.events.len() > MAX_EVENTS {
        return Err(field(
            "events",
            format!(
                "{} events; at most {MAX_EVENTS} are accepted",
                envelope.events.len()
            ),
        ));
    }
    let mut pushes = Vec::new();
    let mut passed = Passed::default();
    for event in envelope.events {
        match tagged_manifest_push(&event)? {
            Ok(artifact) => {
                let id = event_delivery("registry-event", event.id.as_deref());
                let delivery = Delivery {
                    id: id.as_deref().unwrap_or(delivery.id),
                    ..*delivery
                };
                let push = artifact.into_push(&delivery);
                if !pushes.iter().any(|p: &crate::push::Push| p.key == push.key) {
                    pushes.push(push);
                }
            }
            Err(what) => passed.add(what),
        }
    }
    if pushes.is_empty() {
        return Ok(ParsedEvent::Ignored {
            reason: passed.reason("registry"),
        });
    }
    Ok(ParsedEvent::Pushes(pushes))
}

/// `Ok(Ok(artifact))` for a tagged manifest push, `Ok(Err(what))` for anything else
/// (`what` says what it was), `Err` for a push that cannot be read.
fn tagged_manifest_push(event: &Event) -> Result<Result<PushedArtifact, String>, MalformedEvent> {
    let action = event.action.as_deref().unwrap_or_default();
    if action != "push" {
        return Ok(Err(format!("action {}", quote_untrusted(action))));
    }
    let Some(target) = &event.target else {
        return Err(field("events[].target", "missing on a push"));
    };
    if !is_manifest(target) {
        return Ok(Err("blob push".to_string()));
    }
    let Some(tag) = target.tag.as_deref().filter(|tag| !tag.is_empty()) else {
        return Ok(Err("manifest push by digest (no tag)".to_string()));
    };
    let repository = target
        .repository
        .as_deref()
        .ok_or_else(|| field("events[].target.repository", "missing on a manifest push"))?;
    let host = registry_host(event).ok_or_else(|| {
        field(
            "events[].request.host",
            "missing, and target.url has no host",
        )
    })?;
    let location = OciLocation::from_parts(&host, repository).map_err(|error| {
        field(
            "events[].target.repository",
            format!("with request.host: {error}"),
        )
    })?;
    let digest = target.digest.as_deref().unwrap_or_default();
    PushedArtifact::new(
        location,
        tag,
        digest,
        ("events[].target.tag", "events[].target.digest"),
    )
    .map(Ok)
}

fn is_manifest(target: &Target) -> bool {
    match target.media_type.as_deref() {
        Some(media_type) => MANIFEST_MEDIA_TYPES
            .iter()
            .any(|known| media_type.eq_ignore_ascii_case(known)),
        None => target
            .url
            .as_deref()
            .is_some_and(|url| url.contains("/manifests/")),
    }
}

/// `request.host`, else `host[:port]` of `target.url`.
fn registry_host(event: &Event) -> Option<String> {
    let from_request = event
        .request
        .as_ref()
        .and_then(|request| request.host.clone())
        .filter(|host| !host.is_empty());
    from_request.or_else(|| {
        let url = url::Url::parse(event.target.as_ref()?.url.as_deref()?).ok()?;
        let host = url.host_str()?;
        Some(match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        })
    })
}

#[cfg(test)]
#[path = "distribution_test.rs"]
mod tests;
