use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

use super::*;

const PUSH_HOOK: &str = include_str!("../../tests/fixtures/gitlab/push_hook.json");
const TAG_PUSH_HOOK: &str = include_str!("../../tests/fixtures/gitlab/tag_push_hook.json");
const SYSTEM_PUSH: &str = include_str!("../../tests/fixtures/gitlab/system_hook_push.json");
const SYSTEM_REPOSITORY_UPDATE: &str =
    include_str!("../../tests/fixtures/gitlab/system_hook_repository_update.json");
const MERGE_REQUEST_HOOK: &str =
    include_str!("../../tests/fixtures/gitlab/merge_request_hook.json");

const NOW: &str = "2026-11-22T03:00:00Z";
const DELIVERY_ID: &str = "idempotency-key:test-delivery";
const DELIVERY: Delivery<'static> = Delivery {
    received_at: NOW,
    id: DELIVERY_ID,
};
const INSTANCE: &str = "https://gitlab.example.com";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn event(kind: &str) -> HeaderMap {
    headers(&[("X-Gitlab-Event", kind), ("X-Gitlab-Instance", INSTANCE)])
}

fn pushes(kind: &str, body: &str) -> Vec<Push> {
    match parse_event(&event(kind), body.as_bytes(), &DELIVERY) {
        Ok(ParsedEvent::Pushes(pushes)) => pushes,
        other => panic!("expected pushes, got {other:?}"),
    }
}

fn one_push(kind: &str, body: &str) -> Push {
    let mut all = pushes(kind, body);
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

fn edited(body: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut value: Value = serde_json::from_str(body).unwrap();
    edit(&mut value);
    value.to_string()
}

fn malformed(kind: &str, body: &[u8]) -> MalformedEvent {
    match parse_event(&event(kind), body, &DELIVERY) {
        Err(error) => error,
        Ok(other) => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn project_push_hook_becomes_one_push_record() {
    let push = one_push("Push Hook", PUSH_HOOK);
    assert_eq!(push.v, 1);
    assert_eq!(push.event, PushEvent::Push);
    assert_eq!(push.instance, INSTANCE);
    assert_eq!(push.git_ref, "refs/heads/master");
    assert_eq!(push.before, "95790bf891e76fee5e1747ab589903a6a1f80f22");
    assert_eq!(push.after, "da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
    assert_eq!(
        push.checkout_sha.as_deref(),
        Some("da1560886d4f094c3e6c9ef40349f7d38b5d27d7")
    );
    assert_eq!(push.project.id, 15);
    assert_eq!(push.project.path, "mike/diaspora");
    assert_eq!(
        push.project.http_url,
        "http://example.com/mike/diaspora.git"
    );
    assert_eq!(push.project.ssh_url, "git@example.com:mike/diaspora.git");
    assert_eq!(push.project.web_url, "http://example.com/mike/diaspora");
    assert_eq!(push.project.default_branch.as_deref(), Some("master"));
    assert_eq!(push.received_at, NOW);
    assert_eq!(
        push.key,
        Push::compute_key(
            INSTANCE,
            15,
            "refs/heads/master",
            "95790bf891e76fee5e1747ab589903a6a1f80f22",
            "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            DELIVERY_ID
        )
    );
    // The fixture lists 2 of 4 commits: the changed files are unknown, not "these two".
    assert_eq!(push.changed_paths, None);
}

#[test]
fn changed_paths_rules() {
    let all_listed = |v: &mut Value| v["total_commits_count"] = json!(2);
    let cases: Vec<(&str, String, Option<Vec<&str>>)> = vec![
        (
            "every commit listed: union of added, modified, removed, sorted, unique",
            edited(PUSH_HOOK, all_listed),
            Some(vec!["CHANGELOG", "app/controller/application.rb"]),
        ),
        (
            "commits truncated (total 4 > 2 listed) is unknown",
            PUSH_HOOK.to_string(),
            None,
        ),
        (
            "a removed file counts as changed",
            edited(PUSH_HOOK, |v| {
                v["total_commits_count"] = json!(1);
                v["commits"] = json!([{"added": [], "modified": [], "removed": ["old.txt"]}]);
            }),
            Some(vec!["old.txt"]),
        ),
        (
            "new branch with no commits is unknown, not nothing changed",
            edited(PUSH_HOOK, |v| {
                v["before"] = json!("0".repeat(40));
                v["commits"] = json!([]);
                v["total_commits_count"] = json!(0);
            }),
            None,
        ),
        (
            "missing total_commits_count is unknown",
            edited(PUSH_HOOK, |v| {
                v.as_object_mut().unwrap().remove("total_commits_count");
            }),
            None,
        ),
        (
            "a commit without file lists is unknown",
            edited(PUSH_HOOK, |v| {
                v["total_commits_count"] = json!(1);
                v["commits"] = json!([{"id": "x"}]);
            }),
            None,
        ),
        (
            "more changed paths than a message may carry is unknown",
            edited(PUSH_HOOK, |v| {
                let many: Vec<String> = (0..=MAX_CHANGED_PATHS)
                    .map(|i| format!("vendor/{i}.go"))
                    .collect();
                v["total_commits_count"] = json!(1);
                v["commits"] = json!([{"added": many, "modified": [], "removed": []}]);
            }),
            None,
        ),
        (
            "changed paths over 64 KiB are unknown",
            edited(PUSH_HOOK, |v| {
                let long: Vec<String> = (0..100)
                    .map(|i| format!("{i}-{}", "x".repeat(700)))
                    .collect();
                v["total_commits_count"] = json!(1);
                v["commits"] = json!([{"added": long, "modified": [], "removed": []}]);
            }),
            None,
        ),
        (
            "missing commits is unknown",
            edited(PUSH_HOOK, |v| {
                v.as_object_mut().unwrap().remove("commits");
            }),
            None,
        ),
        (
            "branch deletion is unknown",
            edited(PUSH_HOOK, |v| {
                all_listed(v);
                v["after"] = json!("0".repeat(40));
                v["checkout_sha"] = Value::Null;
            }),
            None,
        ),
    ];
    for (name, body, expected) in cases {
        let push = one_push("Push Hook", &body);
        let expected =
            expected.map(|paths| paths.into_iter().map(String::from).collect::<Vec<_>>());
        assert_eq!(push.changed_paths, expected, "{name}");
    }
}

#[test]
fn tag_push_hook_is_a_tag_push_with_unknown_paths() {
    let push = one_push("Tag Push Hook", TAG_PUSH_HOOK);
    assert_eq!(push.event, PushEvent::TagPush);
    assert_eq!(push.git_ref, "refs/tags/v1.0.0");
    assert_eq!(push.short_ref(), "v1.0.0");
    assert_eq!(push.project.id, 1);
    assert_eq!(push.changed_paths, None);
    assert!(!push.is_deletion());
}

#[test]
fn deletions_are_recognised() {
    let deleted_branch = edited(PUSH_HOOK, |v| {
        v["after"] = json!("0".repeat(40));
        v["checkout_sha"] = Value::Null;
        v["commits"] = json!([]);
        v["total_commits_count"] = json!(0);
    });
    let push = one_push("Push Hook", &deleted_branch);
    assert!(push.is_deletion() && push.is_branch_deletion());
    assert_eq!(push.checkout_sha, None);

    let deleted_tag = edited(TAG_PUSH_HOOK, |v| {
        v["before"] = json!("82b3d5ae55f7080f1e6022629cdb57bfae7cccc7");
        v["after"] = json!("0".repeat(40));
        v["checkout_sha"] = Value::Null;
    });
    let push = one_push("Tag Push Hook", &deleted_tag);
    assert!(push.is_deletion());
    assert!(!push.is_branch_deletion());
    assert_eq!(push.event, PushEvent::TagPush);
}

#[test]
fn system_hook_push_never_lists_changed_paths() {
    let push = one_push("System Hook", SYSTEM_PUSH);
    assert_eq!(push.event, PushEvent::Push);
    // The system hook's project has no id: the top-level project_id is used.
    assert_eq!(push.project.id, 15);
    assert_eq!(push.changed_paths, None);
}

#[test]
fn the_same_push_through_a_project_hook_and_a_system_hook_has_one_key() {
    let project = one_push("Push Hook", PUSH_HOOK);
    let system = one_push("System Hook", SYSTEM_PUSH);
    assert_eq!(project.key, system.key);
    let update = edited(SYSTEM_REPOSITORY_UPDATE, |v| {
        v["project_id"] = json!(15);
        v["changes"] =
            json!([{"before": project.before, "after": project.after, "ref": project.git_ref}]);
    });
    assert_eq!(one_push("System Hook", &update).key, project.key);
}

#[test]
fn system_hook_tag_push_is_a_tag_push() {
    let body = edited(SYSTEM_PUSH, |v| {
        v["event_name"] = json!("tag_push");
        v["ref"] = json!("refs/tags/v2.0.0");
    });
    let push = one_push("System Hook", &body);
    assert_eq!(push.event, PushEvent::TagPush);
    assert_eq!(push.changed_paths, None);
}

#[test]
fn repository_update_yields_one_push_per_change() {
    let push = one_push("System Hook", SYSTEM_REPOSITORY_UPDATE);
    assert_eq!(push.project.id, 1);
    assert_eq!(push.project.path, "jsmith/example");
    assert_eq!(push.git_ref, "refs/heads/master");
    assert_eq!(push.after, "4045ea7a3df38697b3730a20fb73c8bed8a3e69e");
    assert_eq!(
        push.checkout_sha.as_deref(),
        Some("4045ea7a3df38697b3730a20fb73c8bed8a3e69e")
    );
    assert_eq!(push.changed_paths, None);

    let body = edited(SYSTEM_REPOSITORY_UPDATE, |v| {
        v["changes"] = json!([
            {"before": "0".repeat(40), "after": "a".repeat(40), "ref": "refs/heads/feature"},
            {"before": "0".repeat(40), "after": "b".repeat(40), "ref": "refs/tags/v1.2.3"},
            {"before": "c".repeat(40), "after": "0".repeat(40), "ref": "refs/heads/old"},
        ]);
    });
    let all = pushes("System Hook", &body);
    let summary: Vec<(PushEvent, &str, bool)> = all
        .iter()
        .map(|p| (p.event, p.git_ref.as_str(), p.is_deletion()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (PushEvent::Push, "refs/heads/feature", false),
            (PushEvent::TagPush, "refs/tags/v1.2.3", false),
            (PushEvent::Push, "refs/heads/old", true),
        ]
    );
    assert_eq!(all[2].checkout_sha, None);
    let keys: std::collections::BTreeSet<_> = all.iter().map(|p| &p.key).collect();
    assert_eq!(keys.len(), 3);

    let empty = edited(SYSTEM_REPOSITORY_UPDATE, |v| v["changes"] = json!([]));
    assert_eq!(pushes("System Hook", &empty), vec![]);
}

#[test]
fn events_that_are_not_pushes_are_ignored_with_a_reason() {
    let project_create = json!({"event_name": "project_create", "name": "x", "path_with_namespace": "a/x", "project_id": 3}).to_string();
    let cases: Vec<(&str, &str, &str)> = vec![
        (
            "Merge Request Hook",
            MERGE_REQUEST_HOOK,
            "\"Merge Request Hook\" is not a push",
        ),
        ("Note Hook", "{}", "\"Note Hook\" is not a push"),
        (
            "Wiki Page Hook",
            "not even json",
            "\"Wiki Page Hook\" is not a push",
        ),
        ("Job Hook", "", "\"Job Hook\" is not a push"),
        (
            "System Hook",
            MERGE_REQUEST_HOOK,
            "system hook event \"merge_request\" is not a push",
        ),
        (
            "System Hook",
            &project_create,
            "system hook event \"project_create\" is not a push",
        ),
        ("System Hook", "{}", "system hook event \"\" is not a push"),
        ("push hook", PUSH_HOOK, "\"push hook\" is not a push"),
    ];
    for (kind, body, reason) in cases {
        match parse_event(&event(kind), body.as_bytes(), &DELIVERY) {
            Ok(ParsedEvent::Ignored { reason: got }) => {
                assert!(got.contains(reason), "{kind}: {got}")
            }
            other => panic!("{kind}: expected ignored, got {other:?}"),
        }
    }
}

#[test]
fn header_names_are_case_insensitive() {
    for name in ["X-Gitlab-Event", "x-gitlab-event", "X-GITLAB-EVENT"] {
        let map = headers(&[(name, "Push Hook"), ("X-GITLAB-INSTANCE", INSTANCE)]);
        assert!(
            matches!(
                parse_event(&map, PUSH_HOOK.as_bytes(), &DELIVERY),
                Ok(ParsedEvent::Pushes(_))
            ),
            "{name}"
        );
    }
}

#[test]
fn instance_comes_from_the_header_or_else_from_the_web_url() {
    let without = headers(&[("X-Gitlab-Event", "Push Hook")]);
    let Ok(ParsedEvent::Pushes(p)) = parse_event(&without, PUSH_HOOK.as_bytes(), &DELIVERY) else {
        panic!()
    };
    assert_eq!(p[0].instance, "http://example.com");

    for (header, expected) in [
        ("https://GitLab.Example.com", "https://gitlab.example.com"),
        ("https://gitlab.example.com/", "https://gitlab.example.com"),
        (
            "https://gitlab.example.com/gitlab",
            "https://gitlab.example.com",
        ),
        (
            "https://gitlab.example.com:8443",
            "https://gitlab.example.com:8443",
        ),
        (
            "https://gitlab.example.com:443",
            "https://gitlab.example.com",
        ),
        ("not a url", "http://example.com"),
        ("ftp://gitlab.example.com", "http://example.com"),
    ] {
        let map = headers(&[
            ("X-Gitlab-Event", "Push Hook"),
            ("X-Gitlab-Instance", header),
        ]);
        let Ok(ParsedEvent::Pushes(p)) = parse_event(&map, PUSH_HOOK.as_bytes(), &DELIVERY) else {
            panic!("{header}")
        };
        assert_eq!(p[0].instance, expected, "{header}");
    }
}

#[test]
fn malformed_requests_are_errors_that_say_what_is_wrong() {
    let long_ref = format!("refs/heads/{}", "a".repeat(MAX_NAME_BYTES));
    let many_changes = edited(SYSTEM_REPOSITORY_UPDATE, |v| {
        v["changes"] = json!(vec![
            json!({"before": "0".repeat(40), "after": "a".repeat(40), "ref": "refs/heads/x"});
            MAX_CHANGES + 1
        ]);
    });
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        ("empty body", "Push Hook", vec![], "not valid UTF-8 JSON"),
        (
            "not JSON",
            "Push Hook",
            b"hello".to_vec(),
            "not valid UTF-8 JSON",
        ),
        (
            "truncated JSON",
            "Push Hook",
            PUSH_HOOK.as_bytes()[..100].to_vec(),
            "not valid UTF-8 JSON",
        ),
        (
            "non-UTF-8 bytes",
            "Push Hook",
            vec![0xff, 0xfe, b'{', b'}'],
            "not valid UTF-8 JSON",
        ),
        (
            "JSON array",
            "Push Hook",
            b"[1,2]".to_vec(),
            "shape of a GitLab push event",
        ),
        (
            "JSON array to a system hook",
            "System Hook",
            b"[]".to_vec(),
            "shape of a GitLab system hook",
        ),
        (
            "project_id of the wrong type",
            "Push Hook",
            edited(PUSH_HOOK, |v| {
                v["project_id"] = json!("15");
            })
            .into_bytes(),
            "shape of a GitLab push",
        ),
        (
            "missing ref",
            "Push Hook",
            edited(PUSH_HOOK, |v| {
                v.as_object_mut().unwrap().remove("ref");
            })
            .into_bytes(),
            "missing field `ref`",
        ),
        (
            "missing project",
            "Tag Push Hook",
            edited(TAG_PUSH_HOOK, |v| {
                v.as_object_mut().unwrap().remove("project");
            })
            .into_bytes(),
            "missing field `project`",
        ),
        (
            "no project id anywhere",
            "System Hook",
            edited(SYSTEM_PUSH, |v| {
                v.as_object_mut().unwrap().remove("project_id");
            })
            .into_bytes(),
            "project_id: missing",
        ),
        (
            "project ids that disagree",
            "Push Hook",
            edited(PUSH_HOOK, |v| {
                v["project_id"] = json!(16);
            })
            .into_bytes(),
            "differs from project_id",
        ),
        (
            "short ref",
            "Push Hook",
            edited(PUSH_HOOK, |v| {
                v["ref"] = json!("master");
            })
            .into_bytes(),
            "not a full ref",
        ),
        (
            "bare refs/",
            "Push Hook",
            edited(PUSH_HOOK, |v| {
                v["ref"] = json!("refs/");
            })
            .into_bytes(),
            "not a full ref",
        ),
        (
            "absurdly long ref",
            "Push Hook",
            edited(PUSH_HOOK, |v| {
                v["ref"] = json!(long_ref);
            })
            .into_bytes(),
            "at most 1024",
        ),
        (
            "ref with a line break",
            "Push Hook",
            edited(PUSH_HOOK, |v| {
                v["ref"] = json!("refs/heads/a\nb");
            })
            .into_bytes(),
            "control characters",
        ),
        (
            "after that is not a sha",
            "Push Hook",
            edited(PUSH_HOOK, |v| {
                v["after"] = json!("HEAD");
            })
            .into_bytes(),
            "after: is not",
        ),
        (
            "upper-case sha",
            "Push Hook",
            edited(PUSH_HOOK, |v| {
                v["after"] = json!("DA1560886D4F094C3E6C9EF40349F7D38B5D27D7");
            })
            .into_bytes(),
            "after: is not",
        ),
        (
            "empty project path",
            "Push Hook",
            edited(PUSH_HOOK, |v| {
                v["project"]["path_with_namespace"] = json!("");
            })
            .into_bytes(),
            "path_with_namespace: empty",
        ),
        (
            "absurdly long project path",
            "Push Hook",
            edited(PUSH_HOOK, |v| {
                v["project"]["path_with_namespace"] = json!("a/".repeat(600));
            })
            .into_bytes(),
            "at most 1024",
        ),
        (
            "too many changes",
            "System Hook",
            many_changes.into_bytes(),
            "at most 1000",
        ),
    ];
    for (name, kind, body, fragment) in cases {
        let error = malformed(kind, &body).to_string();
        assert!(error.contains(fragment), "{name}: {error}");
    }
}

#[test]
fn sha256_repositories_are_accepted() {
    let body = edited(PUSH_HOOK, |v| {
        v["before"] = json!("1".repeat(64));
        v["after"] = json!("2".repeat(64));
        v["checkout_sha"] = json!("2".repeat(64));
    });
    assert_eq!(one_push("Push Hook", &body).after, "2".repeat(64));
}

#[test]
fn event_header_problems() {
    assert_eq!(
        parse_event(&HeaderMap::new(), PUSH_HOOK.as_bytes(), &DELIVERY),
        Err(MalformedEvent::MissingEventHeader)
    );
    let twice = headers(&[
        ("X-Gitlab-Event", "Push Hook"),
        ("X-Gitlab-Event", "Push Hook"),
    ]);
    assert_eq!(
        parse_event(&twice, PUSH_HOOK.as_bytes(), &DELIVERY),
        Err(MalformedEvent::DuplicateHeader("X-Gitlab-Event"))
    );
    let mut binary = HeaderMap::new();
    binary.insert(
        "x-gitlab-event",
        HeaderValue::from_bytes(b"Push \xffHook").unwrap(),
    );
    assert_eq!(
        parse_event(&binary, PUSH_HOOK.as_bytes(), &DELIVERY),
        Err(MalformedEvent::EventHeaderNotText)
    );
    let instance_twice = headers(&[
        ("X-Gitlab-Event", "Push Hook"),
        ("X-Gitlab-Instance", INSTANCE),
        ("X-Gitlab-Instance", "https://evil.example"),
    ]);
    assert_eq!(
        parse_event(&instance_twice, PUSH_HOOK.as_bytes(), &DELIVERY),
        Err(MalformedEvent::DuplicateHeader("X-Gitlab-Instance"))
    );
}

#[test]
fn ignored_reasons_do_not_echo_long_or_control_text() {
    let long = format!("{}\tHook", "x".repeat(500));
    let map = headers(&[("X-Gitlab-Event", &long)]);
    let Ok(ParsedEvent::Ignored { reason }) = parse_event(&map, b"{}", &DELIVERY) else {
        panic!()
    };
    assert!(reason.len() < 120, "{reason}");
    assert!(!reason.contains('\t'));
}

#[test]
fn a_huge_mistyped_value_is_not_echoed_whole_in_the_error() {
    // serde quotes the offending string in full; 1 MiB of quotes used to become a 4 MiB
    // answer body (a 5 MiB one would pass the Lambda response limit).
    let huge = "\"".repeat(1 << 20);
    for (field, value) in [("project_id", json!(huge)), ("ref", json!([huge]))] {
        let body = edited(PUSH_HOOK, |v| v[field] = value);
        let error = malformed("Push Hook", body.as_bytes());
        let message = error.to_string();
        assert!(
            matches!(error, MalformedEvent::Shape { .. }),
            "{field}: {message}"
        );
        assert!(message.contains("invalid type"), "{field}: {message}");
        assert!(message.len() < 600, "{field}: {} bytes", message.len());
    }
}
