//! Route with artifact events: ECR events as an EventBridge rule puts them on the intake
//! queue, registry pushes and pipelines, each to the clusters that subscribe to its kind.

use serde_json::json;

use super::*;
use crate::handlers::plan::tests::entry;
use crate::outcome::retry::RetryPolicy;
use crate::push::PushEvent;
use crate::push::tests::sample_push;
use crate::testing::{MemoryQueue, MemorySettle, StaticRegistry};

/// AWS's documented `ECR Image Action` events, as EventBridge delivers them: the message
/// body is the event itself (sources next to the fixtures).
const ECR_PUSH: &str = include_str!("../../tests/fixtures/ecr/image-action-push.json");
const ECR_DELETE: &str = include_str!("../../tests/fixtures/ecr/image-action-delete.json");
const ECR_REGISTRY: &str = "123456789012.dkr.ecr.us-west-2.amazonaws.com";

fn message(id: &str, body: &str) -> QueueMessage {
    QueueMessage {
        id: id.into(),
        source: "intake".into(),
        receipt: format!("r-{id}"),
        // EventBridge's rule target puts every event in one static group.
        group: "ecr".into(),
        body: body.into(),
        receive_count: 1,
    }
}

fn registry() -> StaticRegistry {
    StaticRegistry {
        entries: vec![
            entry(json!({"name": "git-only", "subscriptions": [{"projects": ["**"]}]})),
            entry(json!({"name": "ecr", "subscriptions": [{"registries": [ECR_REGISTRY]}]})),
            entry(
                json!({"name": "harbor", "subscriptions": [{"registries": ["harbor.example.com"]}]}),
            ),
            entry(json!({"name": "everything"})),
            entry(json!({"name": "pipelines", "subscriptions": [
                {"on": "pipeline", "projects": ["mike/*"], "refs": ["main"], "registry": "registry.gitlab.example.com"}
            ]})),
        ],
        ..StaticRegistry::default()
    }
}

async fn route(messages: &[QueueMessage]) -> (RouteReport, MemoryQueue, MemorySettle) {
    let queue = MemoryQueue::default();
    let intake = MemorySettle::default();
    let report = route_and_settle(
        &registry(),
        &queue,
        &intake,
        &RetryPolicy::default(),
        messages,
    )
    .await;
    (report, queue, intake)
}

#[tokio::test]
async fn an_ecr_push_from_eventbridge_is_routed_to_the_clusters_that_take_its_registry() {
    let (report, queue, intake) = route(&[message("m1", ECR_PUSH)]).await;
    assert_eq!(
        report.messages[0].verdict,
        RouteVerdict::Routed {
            clusters: vec!["ecr".into(), "everything".into()]
        }
    );
    let push = report.messages[0].push.as_ref().unwrap();
    assert_eq!(push.event, PushEvent::ArtifactPush);
    assert_eq!(push.instance, format!("oci://{ECR_REGISTRY}"));
    let dispatched = queue.dispatches.lock().unwrap();
    assert!(dispatched.iter().all(|d| d.push == *push));
    assert_eq!(*intake.acknowledged.lock().unwrap(), vec!["m1".to_string()]);
    assert!(report.failed_ids().is_empty());
}

#[tokio::test]
async fn an_ecr_deletion_is_acknowledged_and_routed_nowhere() {
    let (report, queue, intake) = route(&[message("m1", ECR_DELETE)]).await;
    assert!(matches!(
        &report.messages[0].verdict,
        RouteVerdict::Ignored { reason } if reason.contains("\"DELETE\"")
    ));
    assert!(report.messages[0].push.is_none());
    assert!(queue.dispatches.lock().unwrap().is_empty());
    assert_eq!(*intake.acknowledged.lock().unwrap(), vec!["m1".to_string()]);
    assert!(report.failed_ids().is_empty());
}

#[tokio::test]
async fn an_unreadable_eventbridge_event_fails_with_its_reason_and_holds_its_group() {
    let mut broken: serde_json::Value = serde_json::from_str(ECR_PUSH).unwrap();
    broken["account"] = json!("not-an-account");
    let (report, queue, _) = route(&[
        message("m1", &broken.to_string()),
        message("m2", ECR_PUSH),
        message("m3", "{\"neither\": true}"),
    ])
    .await;
    assert!(matches!(
        &report.messages[0].verdict,
        RouteVerdict::Failed { reason } if reason.contains("EventBridge ECR event") && reason.contains("account")
    ));
    // The group waits behind its failed message, as a project's pushes do.
    assert!(matches!(
        &report.messages[1].verdict,
        RouteVerdict::Failed { reason } if reason.contains("held behind")
    ));
    assert!(queue.dispatches.lock().unwrap().is_empty());
    assert_eq!(report.failed_ids(), vec!["m1", "m2", "m3"]);
    let mut alone = message("m3", "{\"neither\": true}");
    alone.group = "other".into();
    let (report, _, _) = route(&[alone]).await;
    assert!(matches!(
        &report.messages[0].verdict,
        RouteVerdict::Failed { reason } if reason.starts_with("not a Push message")
    ));
}

#[tokio::test]
async fn a_successful_pipeline_goes_only_to_clusters_that_subscribe_to_its_project_pipelines() {
    let mut pipeline = sample_push();
    pipeline.event = PushEvent::Pipeline;
    let mut body = message("m1", &pipeline.to_json());
    body.group = pipeline.project.id.to_string();
    let (report, _, _) = route(&[body]).await;
    assert_eq!(
        report.messages[0].verdict,
        RouteVerdict::Routed {
            clusters: vec!["pipelines".into()]
        }
    );
    let mut other_ref = pipeline.clone();
    other_ref.git_ref = "refs/heads/dev".into();
    let (report, _, _) = route(&[message("m2", &other_ref.to_json())]).await;
    assert_eq!(
        report.messages[0].verdict,
        RouteVerdict::Routed { clusters: vec![] }
    );
}
