//! Amazon ECR `ECR Image Action` events, as an EventBridge rule puts them on the intake
//! queue: the message body is the whole event,
//! `{"version", "id", "detail-type", "source", "account", "time", "region", "detail": {...}}`.
//!
//! A push is `source` `aws.ecr`, `detail-type` `ECR Image Action`, `detail.action-type`
//! `PUSH` and `detail.result` `SUCCESS`, with a `detail.image-tag` (a push by digest has
//! none). The event names no registry host; ECR's is
//! `<account>.dkr.ecr.<region>.amazonaws.com` (`.amazonaws.com.cn` in the China regions).
//! The event's `id` is the delivery id and its `time` the moment the push is accepted from.
//! Docs: AWS ECR user guide `ecr-eventbridge.md`; EventBridge `eb-use-resource-based.md`.

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{PushedArtifact, event_delivery};
use crate::gitlab::{Delivery, MalformedEvent, ParsedEvent, decode, field, quote_untrusted};
use crate::oci::OciLocation;

pub const SOURCE: &str = "aws.ecr";
pub const DETAIL_TYPE: &str = "ECR Image Action";

#[derive(Debug, Deserialize)]
struct Event {
    id: Option<String>,
    #[serde(rename = "detail-type")]
    detail_type: Option<String>,
    source: Option<String>,
    account: Option<String>,
    time: Option<String>,
    region: Option<String>,
    detail: Option<Detail>,
}

#[derive(Debug, Deserialize)]
struct Detail {
    result: Option<String>,
    #[serde(rename = "repository-name")]
    repository_name: Option<String>,
    #[serde(rename = "image-digest")]
    image_digest: Option<String>,
    #[serde(rename = "action-type")]
    action_type: Option<String>,
    #[serde(rename = "image-tag")]
    image_tag: Option<String>,
}

/// Whether a queue body is an EventBridge event (it has `detail-type` and `source`), not
/// one of fluxrelay's own messages.
pub fn is_eventbridge_event(body: &str) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "detail-type")]
        detail_type: Option<serde_json::Value>,
        source: Option<serde_json::Value>,
    }
    serde_json::from_str::<Probe>(body)
        .is_ok_and(|probe| probe.detail_type.is_some() && probe.source.is_some())
}

/// The push an EventBridge ECR event reports, or why it is none.
pub fn parse(body: &[u8]) -> Result<ParsedEvent, MalformedEvent> {
    let event: Event = decode(body, "EventBridge")?;
    let source = event.source.as_deref().unwrap_or_default();
    let detail_type = event.detail_type.as_deref().unwrap_or_default();
    if source != SOURCE || detail_type != DETAIL_TYPE {
        return Ok(ParsedEvent::Ignored {
            reason: format!(
                "EventBridge event {} from {} is not an ECR image action",
                quote_untrusted(detail_type),
                quote_untrusted(source)
            ),
        });
    }
    let detail = event
        .detail
        .as_ref()
        .ok_or_else(|| field("detail", "missing"))?;
    let action = detail.action_type.as_deref().unwrap_or_default();
    let result = detail.result.as_deref().unwrap_or_default();
    if action != "PUSH" || result != "SUCCESS" {
        return Ok(ParsedEvent::Ignored {
            reason: format!(
                "ECR image action {} with result {} is not a successful push",
                quote_untrusted(action),
                quote_untrusted(result)
            ),
        });
    }
    let Some(tag) = detail.image_tag.as_deref().filter(|tag| !tag.is_empty()) else {
        return Ok(ParsedEvent::Ignored {
            reason: "ECR push by digest (no tag)".to_string(),
        });
    };
    let host = registry_host(
        event.account.as_deref().unwrap_or_default(),
        event.region.as_deref().unwrap_or_default(),
    )?;
    let repository = detail
        .repository_name
        .as_deref()
        .ok_or_else(|| field("detail.repository-name", "missing"))?;
    let location = OciLocation::from_parts(&host, repository)
        .map_err(|error| field("detail.repository-name", error.to_string()))?;
    let received_at = event
        .time
        .as_deref()
        .and_then(|time| OffsetDateTime::parse(time, &Rfc3339).ok())
        .and_then(|time| time.format(&Rfc3339).ok())
        .ok_or_else(|| field("time", "missing or not an RFC 3339 time"))?;
    let id = event_delivery("eventbridge", event.id.as_deref())
        .ok_or_else(|| field("id", "missing or not an event id"))?;
    let artifact = PushedArtifact::new(
        location,
        tag,
        detail.image_digest.as_deref().unwrap_or_default(),
        ("detail.image-tag", "detail.image-digest"),
    )?;
    let delivery = Delivery {
        received_at: &received_at,
        id: &id,
    };
    Ok(ParsedEvent::Pushes(vec![artifact.into_push(&delivery)]))
}

/// `<account>.dkr.ecr.<region>.amazonaws.com`, `.com.cn` in the China (`cn-`) regions.
fn registry_host(account: &str, region: &str) -> Result<String, MalformedEvent> {
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(field("account", "is not a 12-digit AWS account id"));
    }
    let region_ok = !region.is_empty()
        && region.len() <= 32
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !region_ok {
        return Err(field("region", "is not an AWS region name"));
    }
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    Ok(format!("{account}.dkr.ecr.{region}.{suffix}"))
}

#[cfg(test)]
#[path = "ecr_test.rs"]
mod tests;
