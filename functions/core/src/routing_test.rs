use super::*;
use crate::push::{PushEvent, tests::sample_push};
use crate::registry::ClusterEntry;
use crate::subscriptions::SubscriptionMiss;

fn cluster(name: &str, subscriptions: serde_json::Value) -> ClusterEntry {
    let mut entry = serde_json::json!({"name": name, "server": "https://k.example.com", "auth": {"token": "t"}});
    if !subscriptions.is_null() {
        entry["subscriptions"] = subscriptions;
    }
    ClusterEntry::from_value(&entry).unwrap()
}

#[test]
fn route_picks_subscribed_clusters_in_registry_order() {
    let clusters = vec![
        cluster("all", serde_json::Value::Null),
        cluster(
            "other-project",
            serde_json::json!([{"projects": ["other/**"]}]),
        ),
        cluster("main-only", serde_json::json!([{"refs": ["main"]}])),
        cluster(
            "tags-or-mike",
            serde_json::json!([{"refs": ["refs/tags/*"]}, {"projects": ["mike/**"]}]),
        ),
    ];
    let push = sample_push();
    let names: Vec<&str> = subscribed_clusters(&push, &clusters)
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, vec!["all", "main-only", "tags-or-mike"]);
    assert_eq!(
        route(&push, &clusters[1]),
        Err(RouteMiss::NotSubscribed(vec![SubscriptionMiss::Project]))
    );
}

#[test]
fn deleted_branches_go_nowhere_but_deleted_tags_do() {
    let clusters = [cluster("all", serde_json::Value::Null)];
    let mut push = sample_push();
    push.after = "0".repeat(40);
    assert_eq!(route(&push, &clusters[0]), Err(RouteMiss::BranchDeleted));
    push.event = PushEvent::TagPush;
    push.git_ref = "refs/tags/v1.0.0".into();
    assert_eq!(route(&push, &clusters[0]), Ok(()));
}
