//! Check and dispatch agree: over a table of registry entries × Receivers, what check
//! passes is what dispatch calls for a push it matches, and what check fails or notes is
//! what dispatch fails or passes by, in the same words. And infra/rbac.yaml grants what
//! check asks for.

use std::collections::BTreeSet;

use fluxrelay_core::flux::{GitRepository, ObjectRef, Receiver};
use fluxrelay_core::handlers::plan::{ClusterView, PushPlan, Target, plan_push};
use fluxrelay_core::matching::select::webhook_path;
use fluxrelay_core::push::{Project, Push, PushEvent};
use serde_json::{Value, json};

use super::*;

const TOKEN: &str = "receiver-token";
const NAMESPACE: &str = "flux-system";

/// The Receivers of the table, each selecting the GitRepository `app`, in the order of the
/// expected marks below. Names are distinct and none is a prefix of another.
fn receivers() -> Vec<Receiver> {
    let ready = json!({"conditions": [{"type": "Ready", "status": "True"}]});
    let not_ready = json!({"conditions": [{"type": "Ready", "status": "False"}]});
    [
        ("gitlab", "gitlab", false, Some(ready.clone()), true),
        ("generic", "generic", false, Some(ready.clone()), true),
        ("hmac", "generic-hmac", false, Some(ready.clone()), true),
        ("github", "github", false, Some(ready.clone()), true),
        ("paused", "gitlab", true, Some(ready.clone()), true),
        ("harbor", "harbor", false, Some(ready.clone()), true),
        ("starting", "gitlab", false, Some(not_ready), true),
        ("pathless", "generic", false, Some(ready.clone()), false),
        ("tampered", "gitlab", false, Some(ready), false),
    ]
    .into_iter()
    .map(|(name, kind, suspend, status, real_path)| {
        let mut status = status.unwrap_or_default();
        if real_path {
            status["webhookPath"] = json!(webhook_path(TOKEN, name, NAMESPACE));
        } else if name == "tampered" {
            status["webhookPath"] = json!("/hook/../../api/v1/secrets");
        }
        Receiver::from_json(&json!({
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"type": kind, "suspend": suspend, "events": [],
                     "resources": [{"kind": "GitRepository", "name": "app"}]},
            "status": status,
        }))
    })
    .collect()
}

fn repository() -> GitRepository {
    GitRepository::from_json(&json!({
        "metadata": {"name": "app", "namespace": NAMESPACE},
        "spec": {"url": "https://gitlab.example.com/team/app.git", "ref": {"branch": "main"}},
    }))
}

fn push() -> Push {
    Push {
        v: 1,
        key: "k".into(),
        instance: "https://gitlab.example.com".into(),
        event: PushEvent::Push,
        project: Project {
            id: 7,
            path: "team/app".into(),
            http_url: "https://gitlab.example.com/team/app.git".into(),
            ssh_url: "git@gitlab.example.com:team/app.git".into(),
            web_url: "https://gitlab.example.com/team/app".into(),
            default_branch: Some("main".into()),
        },
        git_ref: "refs/heads/main".into(),
        before: "1".repeat(40),
        after: "2".repeat(40),
        checkout_sha: None,
        changed_paths: None,
        received_at: "2026-12-01T00:00:00Z".into(),
        accepted_in_run: None,
    }
}

/// An entry whose `receiver_tokens` give `token` to every Receiver of the table.
fn entry(endpoint: Option<&str>, token: Option<&str>) -> ClusterEntry {
    let mut trigger = json!({});
    if let Some(endpoint) = endpoint {
        trigger["webhook_receiver_url"] = json!(endpoint);
    }
    if let Some(token) = token {
        let tokens: serde_json::Map<String, Value> = receivers()
            .iter()
            .map(|r| (r.id.to_string(), json!(token)))
            .collect();
        trigger["receiver_tokens"] = Value::Object(tokens);
    }
    ClusterEntry::from_value(&json!({
        "name": "c", "server": "https://127.0.0.1:6443", "auth": {"token": "kube-token"},
        "trigger": trigger,
    }))
    .unwrap()
}

/// What dispatch does with one Receiver in `plan`: `Pass` (called), `Note` (skipped) or
/// `Fail` (a problem), with its reason.
fn dispatch_verdict(plan: &PushPlan, id: &ObjectRef) -> Vec<(Mark, String)> {
    let mut verdicts = Vec::new();
    for target in &plan.targets {
        if matches!(target, Target::Receiver { receiver, .. } if receiver == id) {
            verdicts.push((Mark::Pass, String::new()));
        }
    }
    for skip in &plan.skipped {
        if skip.object == format!("receiver/{id}") {
            verdicts.push((Mark::Note, skip.reason.clone()));
        }
    }
    for problem in &plan.problems {
        let names = |text: &str| {
            text.contains(&format!("Receiver {id} "))
                || text.contains(&format!("Receiver {id}:"))
                || text.contains(&format!("[\"{id}\"]"))
        };
        if names(&problem.failure.reason) {
            verdicts.push((Mark::Fail, problem.failure.reason.clone()));
        }
    }
    verdicts
}

#[test]
fn what_check_says_of_a_receiver_is_what_dispatch_does_with_it() {
    use Mark::{Fail as F, Note as N, Pass as P};
    // Receivers: gitlab, generic, generic-hmac, github, suspended, unsupported type,
    // not Ready, no webhookPath, unsafe webhookPath.
    let table = [
        (
            "service proxy, the tokens",
            entry(None, Some(TOKEN)),
            [P, P, P, P, N, N, F, F, F],
        ),
        (
            "service proxy, no tokens",
            entry(None, None),
            [F, P, F, F, N, N, F, F, F],
        ),
        (
            "service proxy, stale tokens",
            entry(None, Some("old")),
            [F, F, F, F, N, N, F, F, F],
        ),
        (
            "https URL with a base path",
            entry(Some("https://hooks.example.com/flux/"), Some(TOKEN)),
            [P, P, P, P, N, N, F, F, F],
        ),
        (
            "plain http URL: no gitlab token and no generic path over it",
            entry(Some("http://hooks.example.com"), Some(TOKEN)),
            [F, F, P, P, N, N, F, F, F],
        ),
    ];
    let receivers = receivers();
    let view = ClusterView {
        repositories: vec![repository()],
        receivers: receivers.clone(),
        freshness: fluxrelay_core::matching::select::Freshness::Fresh,
        ..ClusterView::default()
    };
    for (why, entry, expected) in table {
        let plan = plan_push(&entry, &view, &push());
        for (receiver, expected) in receivers.iter().zip(expected) {
            let (mark, line) = describe_receiver(&entry, receiver);
            let context = format!("{why}, {}: check says {mark:?} {line:?}", receiver.id);
            assert_eq!(mark, expected, "{context}");
            let dispatch = dispatch_verdict(&plan, &receiver.id);
            let [(verdict, reason)] = dispatch.as_slice() else {
                panic!("{context}; dispatch did not decide exactly once: {dispatch:?}");
            };
            assert_eq!(*verdict, mark, "{context}; dispatch: {reason}");
            assert!(
                line.ends_with(reason.as_str()),
                "{context}; dispatch: {reason}"
            );
        }
    }
}

#[test]
fn check_lines_say_why_without_a_token() {
    let receivers = receivers();
    let stale = entry(None, Some("old"));
    let lines: Vec<String> = receivers
        .iter()
        .map(|receiver| describe_receiver(&stale, receiver).1)
        .collect();
    let path = webhook_path(TOKEN, "gitlab", NAMESPACE);
    assert_eq!(
        lines[0],
        format!(
            "Receiver flux-system/gitlab (gitlab, ready, {path}): trigger.receiver_tokens[\"flux-system/gitlab\"] does not produce the Receiver's webhook path: the Receiver's secret token changed; update the registry entry"
        )
    );
    assert_eq!(
        lines[4],
        format!(
            "Receiver flux-system/paused (gitlab, ready, {}): skipped: Receiver is suspended",
            webhook_path(TOKEN, "paused", NAMESPACE)
        )
    );
    assert_eq!(
        lines[7],
        "Receiver flux-system/pathless (generic, ready): Receiver flux-system/pathless is not Ready or has no status.webhookPath yet"
    );
    let with_tokens = entry(None, Some(TOKEN));
    assert!(
        describe_receiver(&with_tokens, &receivers[0])
            .1
            .ends_with("): token in the entry matches")
    );
    assert!(
        describe_receiver(&entry(None, None), &receivers[1])
            .1
            .ends_with("): needs no token")
    );
    for line in lines {
        assert!(!line.contains(TOKEN) && !line.contains("\"old\""), "{line}");
    }
}

#[test]
fn a_repository_reads_with_the_ref_dispatch_follows() {
    let mut repository = repository();
    assert_eq!(
        describe_repository(&repository),
        "GitRepository flux-system/app: https://gitlab.example.com/team/app.git (branch main)"
    );
    // Flux ranks a commit above a name; check once showed the name.
    repository.git_ref = Some(fluxrelay_core::flux::GitRepositoryRef {
        name: Some("refs/heads/release".into()),
        commit: Some("a".repeat(40)),
        ..Default::default()
    });
    repository.suspend = true;
    repository.artifact_revision = Some(format!("main@sha1:{}", "a".repeat(40)));
    assert_eq!(
        describe_repository(&repository),
        format!(
            "GitRepository flux-system/app: https://gitlab.example.com/team/app.git (a pinned commit), suspended, at main@sha1:{}",
            "a".repeat(40)
        )
    );
    repository.git_ref = None;
    repository.suspend = false;
    repository.artifact_revision = None;
    assert!(describe_repository(&repository).ends_with("(branch master)"));
    // A token in the URL's user info is never printed (before: printed as it was).
    repository.url = Some("https://oauth2:glpat-in-the-url@gitlab.example.com/team/app.git".into());
    let line = describe_repository(&repository);
    assert!(
        !line.contains("glpat-in-the-url") && !line.contains("oauth2"),
        "{line}"
    );
    assert!(
        line.contains("https://***@gitlab.example.com/team/app.git"),
        "{line}"
    );
}

/// `(apiGroup, resource, verb, resourceNames)` of each rule of the Role in infra/rbac.yaml.
fn rbac_rules() -> BTreeSet<(String, String, String, Vec<String>)> {
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(include_str!("../../../../infra/rbac.yaml")).unwrap();
    let role = documents
        .iter()
        .find(|document| document["kind"] == "Role")
        .unwrap();
    let strings = |value: &Value| -> Vec<String> {
        value
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut rules = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    rules.insert((
                        group.clone(),
                        resource.clone(),
                        verb,
                        strings(&rule["resourceNames"]),
                    ));
                }
            }
        }
    }
    rules
}

#[test]
fn infra_rbac_yaml_grants_what_check_asks_for_in_either_mode_and_no_more() {
    let receiver_mode = entry(None, None);
    let annotate_mode = ClusterEntry::from_value(&json!({
        "name": "c", "server": "https://127.0.0.1:6443", "auth": {"token": "kube-token"},
        "trigger": {"mode": "annotate"},
    }))
    .unwrap();
    let asked: BTreeSet<(String, String, String, Vec<String>)> = [receiver_mode, annotate_mode]
        .iter()
        .flat_map(needed_permissions)
        .map(|permission| {
            assert_eq!(permission.namespace, "flux-system", "{permission}");
            (
                permission.group.to_string(),
                permission.resource.to_string(),
                permission.verb.to_string(),
                permission.name.into_iter().collect(),
            )
        })
        .collect();
    assert_eq!(asked, rbac_rules());
}

#[test]
fn an_artifact_source_no_receiver_lists_is_a_note_and_a_listed_one_passes() {
    use fluxrelay_core::flux::artifacts::{ArtifactKind, ArtifactObject};
    let entry = ClusterEntry::from_value(&json!({
        "name": "c", "server": "https://c.example", "auth": {"token": "t"},
        "trigger": {"artifact_kinds": ["OCIRepository", "HelmRepository", "HelmChart"]}
    }))
    .unwrap();
    let object = |kind, name: &str, spec: Value| {
        ArtifactObject::from_json(
            kind,
            &json!({"metadata": {"name": name, "namespace": "flux-system"}, "spec": spec}),
        )
    };
    let oci = object(
        ArtifactKind::OciRepository,
        "app",
        json!({"url": "oci://r.example/app", "ref": {"semver": "1.x"}}),
    );
    let helm = object(
        ArtifactKind::HelmRepository,
        "charts",
        json!({"type": "oci", "url": "oci://r.example/charts"}),
    );
    let lists_oci = Receiver::from_json(&json!({
        "metadata": {"name": "r", "namespace": "flux-system"},
        "spec": {"type": "generic", "resources": [{"kind": "OCIRepository", "name": "*"}]}
    }));
    let (mark, line) = describe_artifact(&entry, &[], &oci);
    assert_eq!(mark, Mark::Note, "{line}");
    assert!(
        line.contains("no Receiver lists it (add kind OCIRepository"),
        "{line}"
    );
    assert!(line.contains("oci://r.example/app (semver 1.x)"), "{line}");
    let (mark, line) = describe_artifact(&entry, &[lists_oci], &oci);
    assert_eq!(mark, Mark::Pass, "{line}");
    // An OCI HelmRepository is never triggered, so no Receiver needs to list it.
    let (mark, line) = describe_artifact(&entry, &[], &helm);
    assert_eq!(mark, Mark::Pass, "{line}");
    assert!(line.contains("never triggered itself"), "{line}");
}
