use serde_json::{Value, json};

use super::*;
use crate::matching::select::Freshness;
use crate::matching::select::webhook_path;
use crate::push::tests::sample_push;

pub(crate) fn entry(extra: Value) -> ClusterEntry {
    let mut value = json!({"name": "prod", "server": "https://127.0.0.1:6443", "auth": {"token": "kube-token"}});
    if let (Some(base), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
        base.extend(extra.clone());
    }
    ClusterEntry::from_value(&value).unwrap()
}

/// A GitRepository tracking `mike/diaspora` on gitlab.example.com at branch `main`.
pub(crate) fn repository(name: &str, spec: Value) -> Value {
    let mut full = json!({"url": "https://gitlab.example.com/mike/diaspora.git", "interval": "1m", "ref": {"branch": "main"}});
    if let (Some(base), Some(spec)) = (full.as_object_mut(), spec.as_object()) {
        base.extend(spec.clone());
    }
    json!({"metadata": {"name": name, "namespace": "flux-system", "labels": {"app": name}}, "spec": full})
}

pub(crate) fn receiver(name: &str, kind: &str, token: &str, resources: Value) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "flux-system"},
        "spec": {"type": kind, "secretRef": {"name": "t"}, "resources": resources},
        "status": {"webhookPath": webhook_path(token, name, "flux-system"),
                   "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

fn view(repositories: Vec<Value>, receivers: Vec<Value>) -> ClusterView {
    ClusterView {
        repositories: repositories.iter().map(GitRepository::from_json).collect(),
        receivers: receivers.iter().map(Receiver::from_json).collect(),
        freshness: Freshness::Fresh,
        ..ClusterView::default()
    }
}

fn selects(name: &str) -> Value {
    json!([{"kind": "GitRepository", "name": name}])
}

fn receiver_target(name: &str) -> Target {
    let push = sample_push();
    Target::Receiver {
        receiver: ObjectRef::new("flux-system", name),
        instance: push.instance,
        project: push.project,
        git_ref: push.git_ref,
        event: PushEvent::Push,
    }
}

#[test]
fn a_matched_repository_is_triggered_through_the_receivers_that_select_it() {
    let plan = plan_push(
        &entry(json!({})),
        &view(
            vec![repository("app", json!({}))],
            vec![receiver("r", "generic", "", selects("app"))],
        ),
        &sample_push(),
    );
    assert_eq!(plan.targets, vec![receiver_target("r")]);
    assert!(
        plan.problems.is_empty() && plan.skipped.is_empty(),
        "{plan:?}"
    );
}

#[test]
fn one_receiver_selecting_several_matched_repositories_is_one_target() {
    let plan = plan_push(
        &entry(json!({})),
        &view(
            vec![repository("a", json!({})), repository("b", json!({}))],
            vec![receiver(
                "r",
                "generic",
                "",
                json!([{"kind": "GitRepository", "name": "*"}]),
            )],
        ),
        &sample_push(),
    );
    assert_eq!(plan.targets, vec![receiver_target("r")]);
}

#[test]
fn planning_table() {
    let with_tokens = |tokens: Value| entry(json!({"trigger": {"receiver_tokens": tokens}}));
    let mut not_ready = receiver("r", "generic", "", selects("app"));
    not_ready["status"]["conditions"][0]["status"] = json!("False");
    let mut suspended = receiver("r", "generic", "", selects("app"));
    suspended["spec"]["suspend"] = json!(true);
    let mut unsafe_path = receiver("r", "generic", "", selects("app"));
    unsafe_path["status"]["webhookPath"] = json!("/hook/../../api/v1/secrets");
    let mut tag_events = receiver("r", "gitlab", "tok", selects("app"));
    tag_events["spec"]["events"] = json!(["Tag Push Hook"]);
    let mut push_events = receiver("r", "gitlab", "tok", selects("app"));
    push_events["spec"]["events"] = json!(["push hook"]);

    // (name, entry, receivers, expected targets, skip fragment, problem fragment + class)
    type Case = (
        &'static str,
        ClusterEntry,
        Vec<Value>,
        usize,
        Option<&'static str>,
        Option<(&'static str, FailureClass)>,
    );
    let cases: Vec<Case> = vec![
        (
            "generic needs no token",
            entry(json!({})),
            vec![receiver("r", "generic", "", selects("app"))],
            1,
            None,
            None,
        ),
        (
            "generic-hmac with its token",
            with_tokens(json!({"flux-system/r": "tok"})),
            vec![receiver("r", "generic-hmac", "tok", selects("app"))],
            1,
            None,
            None,
        ),
        (
            "gitlab with its token",
            with_tokens(json!({"flux-system/r": "tok"})),
            vec![receiver("r", "gitlab", "tok", selects("app"))],
            1,
            None,
            None,
        ),
        (
            "github with its token",
            with_tokens(json!({"flux-system/r": "tok"})),
            vec![receiver("r", "github", "tok", selects("app"))],
            1,
            None,
            None,
        ),
        (
            "gitlab without a token",
            entry(json!({})),
            vec![receiver("r", "gitlab", "tok", selects("app"))],
            0,
            None,
            Some((
                "add trigger.receiver_tokens[\"flux-system/r\"]",
                FailureClass::Permanent,
            )),
        ),
        (
            "a token that does not produce the path asks for fresh objects",
            with_tokens(json!({"flux-system/r": "old"})),
            vec![receiver("r", "generic-hmac", "new", selects("app"))],
            0,
            None,
            Some(("secret token changed", FailureClass::Rediscover)),
        ),
        (
            "a Receiver that is not Ready is retried",
            entry(json!({})),
            vec![not_ready],
            0,
            None,
            Some(("is not Ready", FailureClass::Retryable)),
        ),
        (
            "an unsafe webhook path is refused",
            entry(json!({})),
            vec![unsafe_path],
            0,
            None,
            Some(("refusing to send", FailureClass::Permanent)),
        ),
        (
            "a suspended Receiver is skipped",
            entry(json!({})),
            vec![suspended],
            0,
            Some("suspended"),
            None,
        ),
        (
            "a type fluxrelay cannot call is skipped",
            entry(json!({})),
            vec![receiver("r", "bitbucket", "", selects("app"))],
            0,
            Some("cannot be called"),
            None,
        ),
        (
            "spec.events without Push Hook is skipped",
            with_tokens(json!({"flux-system/r": "tok"})),
            vec![tag_events],
            0,
            Some("does not include \"Push Hook\""),
            None,
        ),
        (
            "spec.events compares without case",
            with_tokens(json!({"flux-system/r": "tok"})),
            vec![push_events],
            1,
            None,
            None,
        ),
        (
            "no Receiver selects the repository",
            entry(json!({})),
            vec![receiver("r", "generic", "", selects("other"))],
            0,
            Some("no Receiver selects it"),
            None,
        ),
        (
            "a Receiver for a Kustomization does not count",
            entry(json!({})),
            vec![receiver(
                "r",
                "generic",
                "",
                json!([{"kind": "Kustomization", "name": "app"}]),
            )],
            0,
            Some("no Receiver selects it"),
            None,
        ),
        (
            "a gitlab token is never sent over plain http",
            entry(
                json!({"trigger": {"webhook_receiver_url": "http://flux.example.com", "receiver_tokens": {"flux-system/r": "tok"}}}),
            ),
            vec![receiver("r", "gitlab", "tok", selects("app"))],
            0,
            None,
            Some(("not https", FailureClass::Permanent)),
        ),
        (
            "a gitlab token may go to an https receiver URL",
            entry(
                json!({"trigger": {"webhook_receiver_url": "https://flux.example.com", "receiver_tokens": {"flux-system/r": "tok"}}}),
            ),
            vec![receiver("r", "gitlab", "tok", selects("app"))],
            1,
            None,
            None,
        ),
        (
            "an HMAC signature may go over http: the token itself is not sent",
            entry(
                json!({"trigger": {"webhook_receiver_url": "http://flux.example.com", "receiver_tokens": {"flux-system/r": "tok"}}}),
            ),
            vec![receiver("r", "generic-hmac", "tok", selects("app"))],
            1,
            None,
            None,
        ),
        (
            "annotate mode needs no Receiver",
            entry(json!({"trigger": {"mode": "annotate"}})),
            vec![],
            1,
            None,
            None,
        ),
    ];
    for (name, entry, receivers, targets, skip, problem) in cases {
        let plan = plan_push(
            &entry,
            &view(vec![repository("app", json!({}))], receivers),
            &sample_push(),
        );
        assert_eq!(plan.targets.len(), targets, "{name}: {plan:?}");
        match skip {
            Some(fragment) => assert!(
                plan.skipped.iter().any(|s| s.reason.contains(fragment)),
                "{name}: {plan:?}"
            ),
            None => assert!(plan.skipped.is_empty(), "{name}: {plan:?}"),
        }
        match problem {
            Some((fragment, class)) => {
                assert_eq!(plan.problems.len(), 1, "{name}: {plan:?}");
                assert!(
                    plan.problems[0].failure.reason.contains(fragment),
                    "{name}: {}",
                    plan.problems[0].failure.reason
                );
                assert_eq!(plan.problems[0].failure.class, class, "{name}");
                assert_eq!(
                    plan.problems[0].failure.responder,
                    Responder::Configuration,
                    "{name}"
                );
            }
            None => assert!(plan.problems.is_empty(), "{name}: {plan:?}"),
        }
    }
}

#[test]
fn repositories_that_do_not_match_are_skipped_with_their_reason() {
    let mut suspended = repository("suspended", json!({}));
    suspended["spec"]["suspend"] = json!(true);
    let plan = plan_push(
        &entry(json!({"trigger": {"mode": "annotate"}})),
        &view(
            vec![
                repository(
                    "other-project",
                    json!({"url": "https://gitlab.example.com/mike/other.git"}),
                ),
                repository("other-branch", json!({"ref": {"branch": "dev"}})),
                suspended,
                repository("match", json!({})),
            ],
            vec![],
        ),
        &sample_push(),
    );
    assert_eq!(
        plan.targets,
        vec![Target::Annotate {
            repository: ObjectRef::new("flux-system", "match")
        }]
    );
    let skipped: Vec<&str> = plan.skipped.iter().map(|s| s.object.as_str()).collect();
    assert_eq!(
        skipped,
        vec![
            "gitrepository/flux-system/other-project",
            "gitrepository/flux-system/other-branch",
            "gitrepository/flux-system/suspended"
        ]
    );
}

#[test]
fn a_receiver_delivery_scope_differs_wherever_the_body_would() {
    // A delivery covers only pushes whose call would have sent the same body apart from
    // the commit: the same Receiver, instance, project (all of it), ref and event.
    type Fields<'t> = (
        &'t mut ObjectRef,
        &'t mut String,
        &'t mut Project,
        &'t mut String,
        &'t mut PushEvent,
    );
    fn fields(target: &mut Target) -> Fields<'_> {
        match target {
            Target::Receiver {
                receiver,
                instance,
                project,
                git_ref,
                event,
            } => (receiver, instance, project, git_ref, event),
            other => panic!("not a Receiver target: {other}"),
        }
    }
    fn scope(change: fn(&mut Target)) -> String {
        let mut target = receiver_target("r");
        change(&mut target);
        target.delivery_scope()
    }
    let base = scope(|_| {});
    type Change = fn(&mut Target);
    let cases: Vec<(&str, Change, bool)> = vec![
        ("the same target", |_| {}, true),
        (
            "another Receiver",
            |t| *fields(t).0 = ObjectRef::new("flux-system", "r2"),
            false,
        ),
        (
            "another instance, same project id",
            |t| *fields(t).1 = "https://gitlab.other.example".into(),
            false,
        ),
        (
            "the project renamed",
            |t| fields(t).2.path = "mike/renamed".into(),
            false,
        ),
        (
            "the project's web URL",
            |t| fields(t).2.web_url = "https://gitlab.example.com/x".into(),
            false,
        ),
        (
            "the project's default branch",
            |t| fields(t).2.default_branch = None,
            false,
        ),
        (
            "the project's default branch empty, not absent",
            |t| fields(t).2.default_branch = Some(String::new()),
            false,
        ),
        (
            "the project's http URL",
            |t| fields(t).2.http_url = "https://gitlab.example.com/y.git".into(),
            false,
        ),
        (
            "the project's ssh URL",
            |t| fields(t).2.ssh_url = "git@gitlab.example.com:y.git".into(),
            false,
        ),
        ("another project id", |t| fields(t).2.id = 16, false),
        (
            "another ref",
            |t| *fields(t).3 = "refs/heads/dev".into(),
            false,
        ),
        ("a tag push", |t| *fields(t).4 = PushEvent::TagPush, false),
        // A separator inside a value cannot make two scopes read the same.
        (
            "a separator in the ref",
            |t| *fields(t).3 = "refs/heads/main|\"x\"".into(),
            false,
        ),
        // Nor can a value that spells the next field's length and text.
        (
            "the next field inside the instance",
            |t| {
                let (_, instance, project, _, _) = fields(t);
                let next = format!("|{}:{}", project.id.to_string().len(), project.id);
                instance.push_str(&next);
            },
            false,
        ),
    ];
    for (name, change, same) in cases {
        assert_eq!(scope(change) == base, same, "{name}");
    }
    let annotate = Target::Annotate {
        repository: ObjectRef::new("flux-system", "app"),
    };
    assert_eq!(annotate.delivery_scope(), "gitrepository/flux-system/app");
}
