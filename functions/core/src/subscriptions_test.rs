use super::*;
use crate::push::tests::sample_push;

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
    ];
    for (pattern, path, expected) in cases {
        assert_eq!(
            list(&[pattern], true).is_match(path),
            *expected,
            "{pattern} ~ {path}"
        );
    }
    assert!(PatternList::new(&["a/[b".to_string()], true).is_err());
    assert!(PatternList::new(&[String::new()], true).is_err());
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
