use serde_json::{Value, json};

use super::*;

fn entry(extra: Value) -> ClusterEntry {
    let mut value = json!({"name": "c", "server": "https://c.example.com", "auth": {"token": "t"}, "namespaces": ["flux-system", "apps"]});
    if let (Some(object), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
        object.extend(extra.clone());
    }
    ClusterEntry::from_value(&value).unwrap()
}

fn described(entry: &ClusterEntry) -> Vec<String> {
    needed_permissions(entry)
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn proxy_paths_name_their_service() {
    for (path, expected) in [
        (
            "/api/v1/namespaces/flux-system/services/http:webhook-receiver:80/proxy",
            Some(("flux-system", "http:webhook-receiver:80")),
        ),
        ("/api/v1/namespaces/a/services/b/proxy", Some(("a", "b"))),
        ("/api/v1/namespaces/a/pods/b/proxy", None),
        ("/api/v1/namespaces/a/services/b", None),
        ("/api/v1/namespaces//services/b/proxy", None),
        ("/api/v1/namespaces/a/services//proxy", None),
        ("/api/v1/namespaces/a/x/services/b/proxy", None),
        ("/api/v1/namespaces/a/services/b/c/proxy", None),
        ("", None),
    ] {
        assert_eq!(proxy_service(path), expected, "{path}");
    }
}

#[test]
fn receiver_mode_needs_lists_and_the_proxy_annotate_mode_needs_patch() {
    assert_eq!(
        described(&entry(json!({}))),
        [
            "list gitrepositories.source.toolkit.fluxcd.io in flux-system",
            "list receivers.notification.toolkit.fluxcd.io in flux-system",
            "list gitrepositories.source.toolkit.fluxcd.io in apps",
            "list receivers.notification.toolkit.fluxcd.io in apps",
            "create services/proxy http:webhook-receiver:80 in flux-system",
        ]
    );
    assert_eq!(
        described(&entry(json!({"trigger": {"mode": "annotate"}}))),
        [
            "list gitrepositories.source.toolkit.fluxcd.io in flux-system",
            "patch gitrepositories.source.toolkit.fluxcd.io in flux-system",
            "list gitrepositories.source.toolkit.fluxcd.io in apps",
            "patch gitrepositories.source.toolkit.fluxcd.io in apps",
        ]
    );
    // An absolute receiver URL is called without cluster credentials: no proxy rule.
    assert_eq!(
        described(&entry(
            json!({"trigger": {"webhook_receiver_url": "https://hooks.example.com/flux/"}})
        )),
        [
            "list gitrepositories.source.toolkit.fluxcd.io in flux-system",
            "list receivers.notification.toolkit.fluxcd.io in flux-system",
            "list gitrepositories.source.toolkit.fluxcd.io in apps",
            "list receivers.notification.toolkit.fluxcd.io in apps",
        ]
    );
    // The proxy rule names the service of the entry's own proxy path.
    let other_proxy = needed_permissions(&entry(
        json!({"trigger": {"webhook_receiver_url": "/api/v1/namespaces/ops/services/https:hooks:443/proxy"}}),
    ));
    assert_eq!(
        other_proxy.last().map(ToString::to_string).as_deref(),
        Some("create services/proxy https:hooks:443 in ops")
    );
}

#[test]
fn the_groups_are_the_flux_groups_discovery_uses() {
    for permission in needed_permissions(&entry(json!({}))) {
        let expected = match permission.resource {
            "gitrepositories" => crate::flux::GIT_REPOSITORY_GROUP,
            "receivers" => crate::flux::RECEIVER_GROUP,
            _ => "",
        };
        assert_eq!(permission.group, expected, "{permission}");
    }
}

#[test]
fn the_fix_for_a_missing_permission_is_a_role_rule() {
    let needed = needed_permissions(&entry(json!({})));
    assert_eq!(
        needed.last().map(Permission::rule).as_deref(),
        Some(
            "{apiGroups: [\"\"], resources: [\"services/proxy\"], resourceNames: [\"http:webhook-receiver:80\"], verbs: [\"create\"]} in namespace flux-system"
        )
    );
    assert_eq!(
        needed.first().map(Permission::rule).as_deref(),
        Some(
            "{apiGroups: [\"source.toolkit.fluxcd.io\"], resources: [\"gitrepositories\"], verbs: [\"list\"]} in namespace flux-system"
        )
    );
    assert_eq!(
        needed.last().map(Permission::resource_parts),
        Some(("services", Some("proxy")))
    );
    assert_eq!(
        needed.first().map(Permission::resource_parts),
        Some(("gitrepositories", None))
    );
}

#[test]
fn artifact_kinds_add_their_list_and_in_annotate_mode_their_patch() {
    let kinds = json!([
        "OCIRepository",
        "HelmRepository",
        "HelmChart",
        "HelmRelease",
        "ImageRepository"
    ]);
    let flux_system = |all: Vec<String>| -> Vec<String> {
        all.into_iter()
            .filter(|p| p.ends_with("in flux-system"))
            .collect()
    };
    assert_eq!(
        flux_system(described(&entry(
            json!({"trigger": {"artifact_kinds": kinds}})
        ))),
        [
            "list gitrepositories.source.toolkit.fluxcd.io in flux-system",
            "list receivers.notification.toolkit.fluxcd.io in flux-system",
            "list ocirepositories.source.toolkit.fluxcd.io in flux-system",
            "list helmrepositories.source.toolkit.fluxcd.io in flux-system",
            "list helmcharts.source.toolkit.fluxcd.io in flux-system",
            "list helmreleases.helm.toolkit.fluxcd.io in flux-system",
            "list imagerepositories.image.toolkit.fluxcd.io in flux-system",
            "create services/proxy http:webhook-receiver:80 in flux-system",
        ]
    );
    // Annotate mode patches what it triggers; an OCI HelmRepository is never triggered.
    assert_eq!(
        flux_system(described(&entry(
            json!({"trigger": {"mode": "annotate", "artifact_kinds": ["OCIRepository", "HelmRepository", "HelmChart"]}})
        ))),
        [
            "list gitrepositories.source.toolkit.fluxcd.io in flux-system",
            "patch gitrepositories.source.toolkit.fluxcd.io in flux-system",
            "list ocirepositories.source.toolkit.fluxcd.io in flux-system",
            "patch ocirepositories.source.toolkit.fluxcd.io in flux-system",
            "list helmrepositories.source.toolkit.fluxcd.io in flux-system",
            "list helmcharts.source.toolkit.fluxcd.io in flux-system",
            "patch helmcharts.source.toolkit.fluxcd.io in flux-system",
        ]
    );
    // Only the kinds the entry names: none by default.
    assert!(
        described(&entry(json!({})))
            .iter()
            .all(|p| !p.contains("oci") && !p.contains("helm") && !p.contains("image"))
    );
}

#[test]
fn confirmation_adds_a_list_of_the_consumers_and_nothing_else() {
    let confirm = |value: Value| described(&entry(json!({"confirm": value})));
    let without = described(&entry(json!({})));
    let with = confirm(json!(true));
    let added: Vec<&String> = with.iter().filter(|p| !without.contains(p)).collect();
    assert_eq!(
        added,
        [
            "list kustomizations.kustomize.toolkit.fluxcd.io in flux-system",
            "list helmreleases.helm.toolkit.fluxcd.io in flux-system",
            "list kustomizations.kustomize.toolkit.fluxcd.io in apps",
            "list helmreleases.helm.toolkit.fluxcd.io in apps",
        ]
    );
    let no_helm = confirm(json!({"helm_releases": false}));
    assert!(no_helm.iter().any(|p| p.starts_with("list kustomizations")));
    assert!(
        !no_helm.iter().any(|p| p.contains("helmreleases")),
        "{no_helm:?}"
    );
    assert!(
        !confirm(json!(false))
            .iter()
            .any(|p| p.contains("kustomizations"))
    );
}

#[test]
fn role_rules_grant_exactly_the_needed_permissions_per_namespace() {
    let annotate = entry(json!({"trigger": {"mode": "annotate"}}));
    let roles = role_rules(&needed_permissions(&annotate));
    assert_eq!(roles.keys().collect::<Vec<_>>(), ["apps", "flux-system"]);
    // list and patch of one resource share a rule.
    assert_eq!(
        roles["apps"],
        [RoleRule {
            group: "source.toolkit.fluxcd.io",
            resource: "gitrepositories",
            names: vec![],
            verbs: vec!["list", "patch"],
        }]
    );
    let receiver = entry(json!({}));
    let roles = role_rules(&needed_permissions(&receiver));
    // The proxy rule keeps its resource name, apart from every other rule.
    assert_eq!(
        roles["flux-system"],
        [
            RoleRule {
                group: "",
                resource: "services/proxy",
                names: vec!["http:webhook-receiver:80".to_string()],
                verbs: vec!["create"],
            },
            RoleRule {
                group: "notification.toolkit.fluxcd.io",
                resource: "receivers",
                names: vec![],
                verbs: vec!["list"],
            },
            RoleRule {
                group: "source.toolkit.fluxcd.io",
                resource: "gitrepositories",
                names: vec![],
                verbs: vec!["list"],
            },
        ]
    );
    // Every permission is granted by exactly one rule of its namespace; nothing else is.
    for permission in needed_permissions(&receiver) {
        let granting: Vec<&RoleRule> = roles[&permission.namespace]
            .iter()
            .filter(|rule| {
                rule.group == permission.group
                    && rule.resource == permission.resource
                    && rule.verbs.contains(&permission.verb)
                    && rule.names == permission.name.iter().cloned().collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(granting.len(), 1, "{permission}");
    }
    let verbs: usize = roles.values().flatten().map(|rule| rule.verbs.len()).sum();
    assert_eq!(verbs, needed_permissions(&receiver).len());
    assert!(role_rules(&[]).is_empty());
}
