use super::*;
use crate::push::tests::sample_push;
use proptest::prelude::*;

fn list(patterns: &[&str], case_insensitive: bool) -> PatternList {
    let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
    PatternList::new(&patterns, case_insensitive).unwrap()
}

fn refs(patterns: &[&str]) -> RefPatterns {
    let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
    RefPatterns::new(&patterns).unwrap()
}

#[test]
fn project_globs() {
    let cases: &[(&str, &str, bool)] = &[
        ("mike/diaspora", "mike/diaspora", true),
        ("mike/diaspora", "mike/diaspora-fork", false),
        ("mike/diaspora", "other/mike/diaspora", false),
        ("mike/*", "mike/diaspora", true),
        ("mike/*", "mike/sub/diaspora", false),
        ("mike/**", "mike/sub/diaspora", true),
        ("mike/**", "mikeX/diaspora", false),
        ("**/diaspora", "a/b/c/diaspora", true),
        ("Mike/Diaspora", "mike/diaspora", true),
        ("mike/dia.pora", "mike/diaXpora", false),
        ("mike/dia?pora", "mike/diaXpora", true),
        ("platform/{infra,apps}", "platform/apps", true),
        ("platform/{infra,apps}", "platform/web", false),
        ("**", "anything/at/all", true),
        ("mike/**", "mike", false),
        ("mike/**/diaspora", "mike/diaspora", true),
        ("mike/**/diaspora", "mike/a/b/diaspora", true),
        ("mike/**/diaspora", "mike/a/b/diaspora2", false),
        ("**/diaspora", "diaspora", true),
        ("mike/dia?pora", "mike/dia/pora", false),
        ("mike/[a-c]*", "mike/backend", true),
        ("mike/[a-c]*", "mike/frontend", false),
        ("mike/[A-C]*", "mike/Backend", true),
        ("mike/[!a-c]*", "mike/frontend", true),
        ("mike/[!a-c]*", "mike/backend", false),
        ("mike/[a-z]", "mike/", false),
        ("mike/*end", "mike/back/end", false),
        ("platform/{infra,apps/*}", "platform/apps/web", true),
        ("platform/{infra,apps/*}", "platform/infra/web", false),
        ("*", "", true),
        ("a", "", false),
        // A leading `!` is a character, not a negation.
        ("!mike/*", "!mike/diaspora", true),
        ("!mike/*", "other/diaspora", false),
        // An escape makes the next character literal; an escaped letter is that letter.
        (r"mike/\*", "mike/*", true),
        (r"mike/\*", "mike/diaspora", false),
        (r"mike/\{a,b}", "mike/{a,b}", true),
        (r"mike/\{a,b}", "mike/a", false),
        (r"mike/\new", "mike/new", true),
        (r"mike/\t\b", "mike/tb", true),
        ("mike/diaspora", "mike/diaspora\n", false),
    ];
    for (pattern, path, expected) in cases {
        assert_eq!(
            list(&[pattern], true).is_match(path),
            *expected,
            "{pattern} ~ {path}"
        );
    }
    // Case is kept where the list does not ignore it.
    assert!(!list(&["mike/[A-C]*"], false).is_match("mike/backend"));
    assert!(list(&["mike/[A-C]*"], false).is_match("mike/Backend"));
    assert!(!list(&["Mike/*"], false).is_match("mike/x"));
    // A list matches when one of its patterns does.
    let several = list(&["mike/*", "platform/**"], true);
    assert!(several.is_match("platform/a/b"));
    assert!(several.is_match("mike/x"));
    assert!(!several.is_match("other/x"));
    assert!(!list(&[], true).is_match("mike/x"));
    for invalid in ["a/[b", "a/{b,c", "a/{b", r"a\", ""] {
        let error = PatternList::new(&[invalid.to_string()], true)
            .expect_err(invalid)
            .to_string();
        assert!(error.starts_with("invalid glob"), "{invalid}: {error}");
    }
    // Patterns are kept as written, for messages.
    assert_eq!(list(&["Mike/*"], true).patterns(), ["Mike/*".to_string()]);
}

#[test]
fn ref_globs_match_names_or_full_refs() {
    let cases: &[(&[&str], &str, bool)] = &[
        (&["main"], "refs/heads/main", true),
        (&["main"], "refs/heads/mainline", false),
        (&["main"], "refs/heads/x/main", false),
        (&["main"], "refs/tags/main", true),
        (&["Main"], "refs/heads/main", false),
        (&["release/*"], "refs/heads/release/1.0", true),
        (&["release/*"], "refs/heads/release/1/hotfix", false),
        (&["release/**"], "refs/heads/release/1/hotfix", true),
        (&["v*"], "refs/tags/v1.2.3", true),
        (&["refs/tags/*"], "refs/tags/v1.2.3", true),
        (&["refs/tags/*"], "refs/heads/v1.2.3", false),
        (&["refs/heads/main"], "refs/heads/main", true),
        (&["refs/heads/main"], "refs/tags/main", false),
        (&["main", "refs/tags/*"], "refs/tags/v1", true),
        (&["main", "refs/tags/*"], "refs/heads/dev", false),
        // A short pattern never matches a ref outside heads and tags.
        (&["**"], "refs/merge-requests/1/head", false),
        (&["refs/**"], "refs/merge-requests/1/head", true),
    ];
    for (patterns, git_ref, expected) in cases {
        assert_eq!(
            refs(patterns).is_match(git_ref),
            *expected,
            "{patterns:?} ~ {git_ref}"
        );
    }
    assert!(RefPatterns::any().is_match("refs/merge-requests/1/head"));
    assert!(RefPatterns::any().is_match("refs/heads/main"));
}

#[test]
fn instance_hosts() {
    for (instance, host) in [
        ("https://gitlab.example.com", "gitlab.example.com"),
        ("https://GitLab.Example.com/", "gitlab.example.com"),
        (
            "http://gitlab.example.com:8080/gitlab",
            "gitlab.example.com:8080",
        ),
        ("gitlab.example.com", "gitlab.example.com"),
        ("https://user@gitlab.example.com", "gitlab.example.com"),
        ("", ""),
    ] {
        assert_eq!(instance_host(instance), host, "{instance}");
    }
}

fn subscription() -> Subscription {
    Subscription::default()
}

#[test]
fn subscription_rules_with_negative_cases() {
    let push = sample_push(); // gitlab.example.com, mike/diaspora, refs/heads/main
    let mut with_paths = push.clone();
    with_paths.changed_paths = Some(vec!["apps/web/deploy.yaml".into(), "README.md".into()]);

    let cases: Vec<(&str, Subscription, &Push, Result<(), SubscriptionMiss>)> = vec![
        ("default takes everything", subscription(), &push, Ok(())),
        (
            "instance by host",
            Subscription {
                instances: vec!["gitlab.example.com".into()],
                ..subscription()
            },
            &push,
            Ok(()),
        ),
        (
            "instance by URL",
            Subscription {
                instances: vec!["https://gitlab.example.com/".into()],
                ..subscription()
            },
            &push,
            Ok(()),
        ),
        (
            "other instance",
            Subscription {
                instances: vec!["gitlab.com".into()],
                ..subscription()
            },
            &push,
            Err(SubscriptionMiss::Instance),
        ),
        (
            "instance with another port",
            Subscription {
                instances: vec!["gitlab.example.com:8443".into()],
                ..subscription()
            },
            &push,
            Err(SubscriptionMiss::Instance),
        ),
        (
            "project glob",
            Subscription {
                projects: list(&["mike/*"], true),
                ..subscription()
            },
            &push,
            Ok(()),
        ),
        (
            "other project",
            Subscription {
                projects: list(&["other/**"], true),
                ..subscription()
            },
            &push,
            Err(SubscriptionMiss::Project),
        ),
        (
            "ref",
            Subscription {
                refs: refs(&["main"]),
                ..subscription()
            },
            &push,
            Ok(()),
        ),
        (
            "other ref",
            Subscription {
                refs: refs(&["production"]),
                ..subscription()
            },
            &push,
            Err(SubscriptionMiss::Ref),
        ),
        (
            "unknown paths pass a path filter",
            Subscription {
                paths: Some(list(&["apps/**"], false)),
                ..subscription()
            },
            &push,
            Ok(()),
        ),
        (
            "a changed path matches",
            Subscription {
                paths: Some(list(&["apps/**"], false)),
                ..subscription()
            },
            &with_paths,
            Ok(()),
        ),
        (
            "no changed path matches",
            Subscription {
                paths: Some(list(&["infra/**"], false)),
                ..subscription()
            },
            &with_paths,
            Err(SubscriptionMiss::Paths),
        ),
        (
            "paths are case-sensitive",
            Subscription {
                paths: Some(list(&["Apps/**"], false)),
                ..subscription()
            },
            &with_paths,
            Err(SubscriptionMiss::Paths),
        ),
    ];
    for (name, subscription, push, expected) in cases {
        assert_eq!(subscription.accepts(push), expected, "{name}");
    }
}

#[test]
fn only_an_unrestricted_subscription_takes_everything() {
    let cases: Vec<(&str, Subscription, bool)> = vec![
        ("default", subscription(), true),
        (
            "explicit ** projects",
            Subscription {
                projects: list(&["**"], true),
                ..subscription()
            },
            true,
        ),
        (
            "a project glob",
            Subscription {
                projects: list(&["team/**"], true),
                ..subscription()
            },
            false,
        ),
        (
            "a ref",
            Subscription {
                refs: refs(&["main"]),
                ..subscription()
            },
            false,
        ),
        (
            "an instance",
            Subscription {
                instances: vec!["gitlab.example.com".into()],
                ..subscription()
            },
            false,
        ),
        (
            "a path filter",
            Subscription {
                paths: Some(list(&["**"], false)),
                ..subscription()
            },
            false,
        ),
    ];
    for (name, subscription, expected) in cases {
        assert_eq!(subscription.takes_everything(), expected, "{name}");
    }
}

fn artifact_push(registry: &str, repository: &str, tag: &str) -> Push {
    use crate::artifacts::PushedArtifact;
    use crate::gitlab::Delivery;
    use crate::oci::OciLocation;
    PushedArtifact::new(
        OciLocation::from_parts(registry, repository).unwrap(),
        tag,
        &format!("sha256:{}", "c".repeat(64)),
        ("tag", "digest"),
    )
    .unwrap()
    .into_push(&Delivery {
        received_at: "2026-11-22T00:00:00Z",
        id: "request:x",
    })
}

fn artifact_subscription(
    registries: &[&str],
    repositories: &[&str],
    tags: &[&str],
) -> Subscription {
    Subscription {
        instances: registries.iter().map(|r| r.to_string()).collect(),
        projects: list(repositories, true),
        takes: Takes::ArtifactPushes {
            tags: list(tags, false),
        },
        ..Subscription::default()
    }
}

#[test]
fn each_kind_of_subscription_takes_only_its_kind_of_event() {
    let git = sample_push();
    let mut tag = sample_push();
    tag.event = PushEvent::TagPush;
    tag.git_ref = "refs/tags/v1".into();
    let mut pipeline = sample_push();
    pipeline.event = PushEvent::Pipeline;
    let artifact = artifact_push("r.example", "mike/diaspora", "v1");
    let project_artifacts = |on| Subscription {
        takes: Takes::ProjectArtifacts {
            on,
            registry: "registry.example.com".into(),
        },
        ..Subscription::default()
    };
    let every_artifact = Subscription::every_artifact();
    let cases: Vec<(&str, Subscription, [bool; 4])> = vec![
        // [git push, tag push, pipeline, artifact push]
        ("git", Subscription::default(), [true, true, false, false]),
        (
            "artifacts",
            every_artifact.clone(),
            [false, false, false, true],
        ),
        (
            "pipeline",
            project_artifacts(ProjectEvent::Pipeline),
            [false, false, true, false],
        ),
        (
            "tag push",
            project_artifacts(ProjectEvent::TagPush),
            [false, true, false, false],
        ),
    ];
    for (name, subscription, expected) in cases {
        for (push, taken) in [&git, &tag, &pipeline, &artifact].into_iter().zip(expected) {
            let result = subscription.accepts(push);
            assert_eq!(result.is_ok(), taken, "{name} × {:?}", push.event);
            if !taken {
                assert_eq!(
                    result,
                    Err(SubscriptionMiss::Event),
                    "{name} × {:?}",
                    push.event
                );
            }
        }
    }
    assert!(every_artifact.takes_everything());
    assert!(!project_artifacts(ProjectEvent::Pipeline).takes_everything());
}

#[test]
fn registry_subscriptions_match_registry_repository_and_tag_with_negatives() {
    let push = artifact_push("Registry.Example.com:5000", "team/app", "v1.2.3");
    let hub = artifact_push("docker.io", "nginx", "1.27");
    for (sub, push, expected) in [
        (artifact_subscription(&[], &["**"], &["**"]), &push, Ok(())),
        (
            artifact_subscription(&["registry.example.com:5000"], &["**"], &["**"]),
            &push,
            Ok(()),
        ),
        (
            artifact_subscription(&["REGISTRY.example.com:5000"], &["**"], &["**"]),
            &push,
            Ok(()),
        ),
        // The port is part of the registry.
        (
            artifact_subscription(&["registry.example.com"], &["**"], &["**"]),
            &push,
            Err(SubscriptionMiss::Instance),
        ),
        (
            artifact_subscription(&["registry.example.com:5001"], &["**"], &["**"]),
            &push,
            Err(SubscriptionMiss::Instance),
        ),
        (
            artifact_subscription(&["registryXexample.com:5000"], &["**"], &["**"]),
            &push,
            Err(SubscriptionMiss::Instance),
        ),
        // Docker Hub under any of its names.
        (
            artifact_subscription(&["docker.io"], &["library/*"], &["**"]),
            &hub,
            Ok(()),
        ),
        (
            artifact_subscription(&["registry-1.docker.io"], &["library/nginx"], &["1.*"]),
            &hub,
            Ok(()),
        ),
        (
            artifact_subscription(&["team/app"], &["**"], &["**"]),
            &push,
            Err(SubscriptionMiss::Instance),
        ),
        (
            artifact_subscription(&[], &["team/*"], &["**"]),
            &push,
            Ok(()),
        ),
        (
            artifact_subscription(&[], &["team"], &["**"]),
            &push,
            Err(SubscriptionMiss::Project),
        ),
        (
            artifact_subscription(&[], &["team/app/*"], &["**"]),
            &push,
            Err(SubscriptionMiss::Project),
        ),
        (
            artifact_subscription(&[], &["Team/App"], &["**"]),
            &push,
            Ok(()),
        ),
        (artifact_subscription(&[], &["**"], &["v*"]), &push, Ok(())),
        (
            artifact_subscription(&[], &["**"], &["v1.2.?"]),
            &push,
            Ok(()),
        ),
        (
            artifact_subscription(&[], &["**"], &["v1.2"]),
            &push,
            Err(SubscriptionMiss::Ref),
        ),
        (
            artifact_subscription(&[], &["**"], &["V*"]),
            &push,
            Err(SubscriptionMiss::Ref),
        ),
        (
            artifact_subscription(&[], &["**"], &["v1.2.3.*"]),
            &push,
            Err(SubscriptionMiss::Ref),
        ),
    ] {
        assert_eq!(
            sub.accepts(push),
            expected,
            "{:?} {:?} {:?}",
            sub.instances,
            sub.projects.patterns(),
            push.git_ref
        );
    }
}

#[test]
fn a_project_artifacts_subscription_filters_like_a_git_one() {
    let mut pipeline = sample_push();
    pipeline.event = PushEvent::Pipeline;
    let sub = |projects: &[&str], refs_: &[&str], instances: &[&str]| Subscription {
        projects: list(projects, true),
        refs: refs(refs_),
        instances: instances.iter().map(|i| i.to_string()).collect(),
        takes: Takes::ProjectArtifacts {
            on: ProjectEvent::Pipeline,
            registry: "registry.example.com".into(),
        },
        ..Subscription::default()
    };
    assert_eq!(
        sub(&["mike/*"], &["main"], &["gitlab.example.com"]).accepts(&pipeline),
        Ok(())
    );
    assert_eq!(
        sub(&["other/*"], &["main"], &[]).accepts(&pipeline),
        Err(SubscriptionMiss::Project)
    );
    assert_eq!(
        sub(&["**"], &["dev"], &[]).accepts(&pipeline),
        Err(SubscriptionMiss::Ref)
    );
    assert_eq!(
        sub(&["**"], &["**"], &["gitlab.other.com"]).accepts(&pipeline),
        Err(SubscriptionMiss::Instance)
    );
}

fn glob_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        proptest::string::string_regex(
            r"(!|\\)?([a-zA-Z./\-!,]|\*|\*\*|\?|\[!?[a-z\-\]]{0,3}\]?|\{|\}|\\.?){0,12}"
        )
        .expect("a valid strategy"),
    ]
}

/// Every character that has a meaning in a glob, escaped: the pattern of `text` itself.
fn literal_pattern(text: &str) -> String {
    let mut pattern = String::new();
    for c in text.chars() {
        if "*?[]{}\\!,".contains(c) {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern
}

proptest! {
    #![proptest_config(crate::testing::many_cases())]
    #[test]
    fn any_pattern_is_accepted_or_refused_and_then_matches_without_panicking(
        pattern in glob_like(),
        candidate in glob_like(),
        case_insensitive in any::<bool>(),
    ) {
        if let Ok(list) = PatternList::new(&[pattern], case_insensitive) {
            let _ = list.is_match(&candidate);
        }
    }

    #[test]
    fn an_escaped_text_matches_itself_and_nothing_longer(text in "[ -~]{1,24}") {
        let list = PatternList::new(&[literal_pattern(&text)], false)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(list.is_match(&text));
        let longer = format!("{text}x");
        prop_assert!(!list.is_match(&longer));
    }
}
