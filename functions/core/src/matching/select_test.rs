use super::*;
use crate::flux::{GitRepositoryRef, ObjectRef, ReceiverType, SourceStatus};
use crate::push::tests::sample_push;
use crate::push::{Push, PushEvent};

const PUSHED: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// A GitRepository that the sample push (main of mike/diaspora at `PUSHED`) triggers.
fn tracking_repo() -> GitRepository {
    GitRepository {
        id: ObjectRef::new("flux-system", "diaspora"),
        labels: BTreeMap::from([
            ("app".to_string(), "diaspora".to_string()),
            ("team".to_string(), "mike".to_string()),
        ]),
        url: Some("ssh://git@gitlab.example.com/mike/diaspora.git".into()),
        git_ref: Some(GitRepositoryRef {
            branch: Some("main".into()),
            ..GitRepositoryRef::default()
        }),
        suspend: false,
        artifact_revision: Some("main@sha1:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb".into()),
        // Settled, and made 10 s after the sample push was accepted.
        status: settled_status(),
    }
}

fn settled_status() -> SourceStatus {
    SourceStatus {
        generation: Some(2),
        observed_generation: Some(2),
        ready: true,
        requested_at: Some("2026-11-22T00:00:01Z".into()),
        last_handled_reconcile_at: Some("2026-11-22T00:00:01Z".into()),
        artifact_updated_at: Some("2026-11-22T00:00:10Z".into()),
    }
}

fn verdict(
    repo: &GitRepository,
    push: &Push,
    aliases: &BTreeMap<String, String>,
) -> Result<(), RepoSkip> {
    match repository_verdict(
        repo,
        push,
        &PushLocations::of(push, aliases),
        Freshness::Fresh,
    ) {
        RepositoryVerdict::Trigger => Ok(()),
        RepositoryVerdict::Skip(skip) => Err(skip),
        RepositoryVerdict::LookAgain => panic!("a fresh view never asks to look again"),
    }
}

fn with(change: impl FnOnce(&mut GitRepository)) -> GitRepository {
    let mut repo = tracking_repo();
    change(&mut repo);
    repo
}

#[test]
fn repository_verdict_checks_url_then_ref_then_suspended_then_revision() {
    let push = sample_push();
    assert_eq!(push.after, PUSHED);
    let aliases = BTreeMap::from([(
        "ssh.gitlab.example.com".to_string(),
        "gitlab.example.com".to_string(),
    )]);
    let other_branch = RefMiss::OtherBranch {
        tracked: "release".into(),
        pushed: "refs/heads/main".into(),
    };
    for (why, repo, expected) in [
        (
            "a repository tracking the pushed branch",
            tracking_repo(),
            Ok(()),
        ),
        ("no spec.url", with(|r| r.url = None), Err(RepoSkip::NoUrl)),
        (
            "an OCI URL",
            with(|r| r.url = Some("oci://gitlab.example.com/mike/diaspora".into())),
            Err(RepoSkip::UnsupportedUrl),
        ),
        (
            "another project",
            with(|r| r.url = Some("https://gitlab.example.com/mike/diaspora-fork.git".into())),
            Err(RepoSkip::OtherProject {
                location: "gitlab.example.com/mike/diaspora-fork".into(),
            }),
        ),
        (
            "an aliased host",
            with(|r| r.url = Some("ssh://git@ssh.gitlab.example.com/mike/diaspora.git".into())),
            Ok(()),
        ),
        (
            "another branch",
            with(|r| {
                r.git_ref = Some(GitRepositoryRef {
                    branch: Some("release".into()),
                    ..GitRepositoryRef::default()
                })
            }),
            Err(RepoSkip::Ref(other_branch.clone())),
        ),
        (
            "no ref means master",
            with(|r| r.git_ref = None),
            Err(RepoSkip::Ref(RefMiss::OtherBranch {
                tracked: "master".into(),
                pushed: "refs/heads/main".into(),
            })),
        ),
        (
            "suspended",
            with(|r| r.suspend = true),
            Err(RepoSkip::Suspended),
        ),
        (
            "no artifact yet",
            with(|r| r.artifact_revision = None),
            Ok(()),
        ),
        (
            "already at the pushed revision",
            with(|r| r.artifact_revision = Some(format!("main@sha1:{PUSHED}"))),
            Err(RepoSkip::AlreadyAtRevision {
                revision: format!("main@sha1:{PUSHED}"),
            }),
        ),
        // Order: the first failing check is the one reported.
        (
            "another project wins over a ref mismatch",
            with(|r| {
                r.url = Some("https://other.example.com/x/y".into());
                r.suspend = true;
                r.git_ref = None;
            }),
            Err(RepoSkip::OtherProject {
                location: "other.example.com/x/y".into(),
            }),
        ),
        (
            "a ref mismatch wins over suspended",
            with(|r| {
                r.suspend = true;
                r.git_ref = Some(GitRepositoryRef {
                    branch: Some("release".into()),
                    ..GitRepositoryRef::default()
                });
            }),
            Err(RepoSkip::Ref(other_branch)),
        ),
        (
            "suspended wins over already at the revision",
            with(|r| {
                r.suspend = true;
                r.artifact_revision = Some(format!("main@sha1:{PUSHED}"));
            }),
            Err(RepoSkip::Suspended),
        ),
    ] {
        assert_eq!(verdict(&repo, &push, &aliases), expected, "{why}");
    }
}

/// "Already at the pushed revision" skips a trigger only when Flux provably fetched after
/// the push: on a fresh status, Ready on its generation, nothing pending, and the artifact
/// made at least the clock allowance after the push was accepted. Anything less triggers.
#[test]
fn already_reconciled_needs_a_fresh_settled_status_made_after_the_push() {
    let push = sample_push(); // accepted 2026-11-22T00:00:00Z
    let at_pushed = |change: fn(&mut SourceStatus)| {
        with(|r| {
            r.artifact_revision = Some(format!("main@sha1:{PUSHED}"));
            change(&mut r.status);
        })
    };
    let cases: Vec<(&str, GitRepository, Freshness, RepositoryVerdict)> = vec![
        (
            "settled, fresh",
            at_pushed(|_| {}),
            Freshness::Fresh,
            RepositoryVerdict::Skip(RepoSkip::AlreadyAtRevision {
                revision: format!("main@sha1:{PUSHED}"),
            }),
        ),
        (
            "settled, but cached",
            at_pushed(|_| {}),
            Freshness::Cached,
            RepositoryVerdict::LookAgain,
        ),
        (
            "another revision, cached",
            tracking_repo(),
            Freshness::Cached,
            RepositoryVerdict::Trigger,
        ),
        (
            "made exactly the allowance after",
            at_pushed(|s| s.artifact_updated_at = Some("2026-11-22T00:00:05Z".into())),
            Freshness::Fresh,
            RepositoryVerdict::Skip(RepoSkip::AlreadyAtRevision {
                revision: format!("main@sha1:{PUSHED}"),
            }),
        ),
        (
            "made within the allowance",
            at_pushed(|s| s.artifact_updated_at = Some("2026-11-22T00:00:04Z".into())),
            Freshness::Fresh,
            RepositoryVerdict::Trigger,
        ),
        (
            "made before the push (a rollback may still land elsewhere)",
            at_pushed(|s| s.artifact_updated_at = Some("2026-11-21T23:59:00Z".into())),
            Freshness::Fresh,
            RepositoryVerdict::Trigger,
        ),
        (
            "no artifact time",
            at_pushed(|s| s.artifact_updated_at = None),
            Freshness::Fresh,
            RepositoryVerdict::Trigger,
        ),
        (
            "an unreadable artifact time",
            at_pushed(|s| s.artifact_updated_at = Some("soon".into())),
            Freshness::Fresh,
            RepositoryVerdict::Trigger,
        ),
        (
            "not Ready",
            at_pushed(|s| s.ready = false),
            Freshness::Fresh,
            RepositoryVerdict::Trigger,
        ),
        (
            "an old generation observed",
            at_pushed(|s| s.observed_generation = Some(1)),
            Freshness::Fresh,
            RepositoryVerdict::Trigger,
        ),
        (
            "no generation",
            at_pushed(|s| {
                s.generation = None;
                s.observed_generation = None;
            }),
            Freshness::Fresh,
            RepositoryVerdict::Trigger,
        ),
        (
            "a requested reconcile still pending",
            at_pushed(|s| s.requested_at = Some("2026-11-22T00:00:20Z".into())),
            Freshness::Fresh,
            RepositoryVerdict::Trigger,
        ),
        (
            "no reconcile ever requested",
            at_pushed(|s| {
                s.requested_at = None;
                s.last_handled_reconcile_at = None;
            }),
            Freshness::Fresh,
            RepositoryVerdict::Skip(RepoSkip::AlreadyAtRevision {
                revision: format!("main@sha1:{PUSHED}"),
            }),
        ),
    ];
    for (why, repo, freshness, expected) in cases {
        assert_eq!(
            repository_verdict(
                &repo,
                &push,
                &PushLocations::of(&push, &BTreeMap::new()),
                freshness
            ),
            expected,
            "{why}"
        );
    }
}

#[test]
fn branch_deletions_trigger_no_repository() {
    let mut deletion = sample_push();
    deletion.after = "0".repeat(40);
    deletion.checkout_sha = None;
    assert_eq!(
        verdict(&tracking_repo(), &deletion, &BTreeMap::new()),
        Err(RepoSkip::Ref(RefMiss::BranchDeleted {
            pushed: "refs/heads/main".into()
        }))
    );
    let mut tag_deletion = deletion;
    tag_deletion.event = PushEvent::TagPush;
    tag_deletion.git_ref = "refs/tags/v1.0.0".into();
    let semver = with(|r| {
        r.git_ref = Some(GitRepositoryRef {
            semver: Some(">=1.0.0".into()),
            ..GitRepositoryRef::default()
        })
    });
    assert_eq!(verdict(&semver, &tag_deletion, &BTreeMap::new()), Ok(()));
}

#[test]
fn skip_reasons_never_echo_credentials_in_spec_url() {
    let repo =
        with(|r| r.url = Some("https://user:s3cr3t@gitlab.example.com/other/project.git".into()));
    let skip = verdict(&repo, &sample_push(), &BTreeMap::new()).unwrap_err();
    assert_eq!(
        skip.to_string(),
        "spec.url names `gitlab.example.com/other/project`, not the pushed project"
    );
    let unsupported = with(|r| r.url = Some("file://user:s3cr3t@host/x".into()));
    let skip = verdict(&unsupported, &sample_push(), &BTreeMap::new()).unwrap_err();
    assert!(!skip.to_string().contains("s3cr3t"));
}

fn receiver(namespace: &str, resources: Vec<ResourceSelector>) -> Receiver {
    Receiver {
        id: ObjectRef::new(namespace, "gitlab-receiver"),
        receiver_type: ReceiverType::Gitlab,
        events: vec![],
        resources,
        suspend: false,
        ready: true,
        webhook_path: None,
    }
}

fn selector(kind: &str, name: &str) -> ResourceSelector {
    ResourceSelector {
        kind: kind.into(),
        name: name.into(),
        ..ResourceSelector::default()
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

#[test]
fn receiver_selects_a_git_repository_by_kind_group_namespace_and_name_or_labels() {
    let repo = tracking_repo(); // flux-system/diaspora, labels app=diaspora, team=mike
    let by_name = selector("GitRepository", "diaspora");
    let wildcard = |pairs: &[(&str, &str)]| ResourceSelector {
        match_labels: labels(pairs),
        ..selector("GitRepository", "*")
    };
    let in_namespace = |namespace: &str| ResourceSelector {
        namespace: Some(namespace.into()),
        ..by_name.clone()
    };
    let with_api_version = |api_version: &str| ResourceSelector {
        api_version: Some(api_version.into()),
        ..by_name.clone()
    };
    for (why, receiver_namespace, resources, selects) in [
        (
            "by name in the Receiver's namespace",
            "flux-system",
            vec![by_name.clone()],
            true,
        ),
        (
            "another kind with the same name",
            "flux-system",
            vec![selector("Kustomization", "diaspora")],
            false,
        ),
        (
            "kind is case-sensitive",
            "flux-system",
            vec![selector("gitrepository", "diaspora")],
            false,
        ),
        (
            "another name",
            "flux-system",
            vec![selector("GitRepository", "diaspora-fork")],
            false,
        ),
        (
            "a name prefix",
            "flux-system",
            vec![selector("GitRepository", "dias")],
            false,
        ),
        (
            "an empty name",
            "flux-system",
            vec![selector("GitRepository", "")],
            false,
        ),
        (
            "the Receiver in another namespace",
            "apps",
            vec![by_name.clone()],
            false,
        ),
        (
            "an explicit namespace equal to the repo's",
            "apps",
            vec![in_namespace("flux-system")],
            true,
        ),
        (
            "an explicit namespace other than the repo's",
            "flux-system",
            vec![in_namespace("apps")],
            false,
        ),
        (
            "apiVersion v1",
            "flux-system",
            vec![with_api_version("source.toolkit.fluxcd.io/v1")],
            true,
        ),
        (
            "apiVersion of an older version of the group",
            "flux-system",
            vec![with_api_version("source.toolkit.fluxcd.io/v1beta2")],
            true,
        ),
        (
            "apiVersion of another group",
            "flux-system",
            vec![with_api_version("kustomize.toolkit.fluxcd.io/v1")],
            false,
        ),
        (
            "apiVersion of a look-alike group",
            "flux-system",
            vec![with_api_version("source.toolkit.fluxcd.io.evil/v1")],
            false,
        ),
        (
            "apiVersion without a version",
            "flux-system",
            vec![with_api_version("source.toolkit.fluxcd.io")],
            false,
        ),
        (
            "apiVersion with an empty version",
            "flux-system",
            vec![with_api_version("source.toolkit.fluxcd.io/")],
            false,
        ),
        (
            "* with a subset of the repo's labels",
            "flux-system",
            vec![wildcard(&[("app", "diaspora")])],
            true,
        ),
        (
            "* with exactly the repo's labels",
            "flux-system",
            vec![wildcard(&[("app", "diaspora"), ("team", "mike")])],
            true,
        ),
        (
            "* with a superset of the repo's labels",
            "flux-system",
            vec![wildcard(&[("app", "diaspora"), ("tier", "web")])],
            false,
        ),
        (
            "* with a mismatched value",
            "flux-system",
            vec![wildcard(&[("app", "other")])],
            false,
        ),
        (
            "* with empty labels selects every GitRepository of the namespace",
            "flux-system",
            vec![wildcard(&[])],
            true,
        ),
        (
            "* with empty labels in another namespace",
            "apps",
            vec![wildcard(&[])],
            false,
        ),
        (
            "* of another kind",
            "flux-system",
            vec![ResourceSelector {
                kind: "Kustomization".into(),
                ..wildcard(&[])
            }],
            false,
        ),
        (
            "any one matching entry is enough",
            "flux-system",
            vec![selector("Kustomization", "diaspora"), by_name.clone()],
            true,
        ),
        ("no entries", "flux-system", vec![], false),
    ] {
        assert_eq!(
            receiver_selects(&receiver(receiver_namespace, resources), &repo),
            selects,
            "{why}"
        );
    }
}

#[test]
fn webhook_path_is_hook_and_sha256_of_token_name_namespace_concatenated() {
    // printf '%s' 'example-receiver-tokengitlab-receiverflux-system' | sha256sum
    assert_eq!(
        webhook_path("example-receiver-token", "gitlab-receiver", "flux-system"),
        "/hook/66414f4907efe09e3c5a37d42fbc1ff608b6644f476e6cbf9da4d4a43d1b1977"
    );
    // The GitLab agent's Receivers have an empty token:
    // printf '%s' 'gitlab-flux-systemflux-system' | sha256sum
    assert_eq!(
        webhook_path("", "gitlab-flux-system", "flux-system"),
        "/hook/44720991f2ce92bdfb144da4b110b193c39bfa7a1a63b1bdaf847de789c01a2d"
    );
    assert!(is_safe_webhook_path(&webhook_path("t", "n", "ns")));
}

#[test]
fn only_hook_followed_by_1_to_128_word_characters_is_a_safe_webhook_path() {
    let longest = format!("/hook/{}", "a".repeat(128));
    let too_long = format!("/hook/{}", "a".repeat(129));
    for (why, path, safe) in [
        (
            "a Flux path",
            "/hook/66414f4907efe09e3c5a37d42fbc1ff608b6644f476e6cbf9da4d4a43d1b1977",
            true,
        ),
        ("letters, digits, _ and -", "/hook/Ab_9-z", true),
        ("one character", "/hook/a", true),
        ("128 characters", longest.as_str(), true),
        ("nothing after /hook/", "/hook/", false),
        ("a parent segment", "/hook/../x", false),
        ("a slash", "/hook/a/b", false),
        ("a trailing slash", "/hook/a/", false),
        ("a query", "/hook/a?x=1", false),
        ("a fragment", "/hook/a#f", false),
        ("a percent-encoded dot", "/hook/%2e", false),
        ("a dot", "/hook/a.b", false),
        ("no leading slash", "hook/a", false),
        ("another prefix", "/hooks/a", false),
        ("upper-case prefix", "/HOOK/a", false),
        ("a doubled slash", "//hook/a", false),
        ("129 characters", too_long.as_str(), false),
        ("unicode", "/hook/ä", false),
        ("a space", "/hook/a b", false),
        ("a newline", "/hook/a\n", false),
        ("empty", "", false),
    ] {
        assert_eq!(is_safe_webhook_path(path), safe, "{why}: {path:?}");
    }
}

#[test]
fn every_webhook_path_in_a_log_line_is_redacted() {
    let path = webhook_path("generic-receiver-token", "r", "flux-system");
    let digest = path.trim_start_matches("/hook/").to_string();
    let cases = [
        // kube-client's span, in text logs.
        (
            format!("HTTP{{http.method=POST http.url=https://10.0.0.1:6443/api/v1/namespaces/flux-system/services/http:webhook-receiver:80/proxy{path} otel.kind=\"client\"}}: requesting"),
            "HTTP{http.method=POST http.url=https://10.0.0.1:6443/api/v1/namespaces/flux-system/services/http:webhook-receiver:80/proxy/hook/<redacted> otel.kind=\"client\"}: requesting".to_string(),
        ),
        // The same in a JSON span list, twice in one line.
        (
            format!("{{\"spans\":[{{\"http.url\":\"https://h{path}\"}},{{\"url\":\"http://x/base{path}?a=1\"}}]}}"),
            "{\"spans\":[{\"http.url\":\"https://h/hook/<redacted>\"},{\"url\":\"http://x/base/hook/<redacted>?a=1\"}]}".to_string(),
        ),
        // Any digest dispatch could call: letters, digits, '_' and '-'.
        ("/hook/Ab_9-z.".to_string(), "/hook/<redacted>.".to_string()),
        // Nothing after the prefix, or no prefix: unchanged.
        ("/hook/".to_string(), "/hook/".to_string()),
        ("/hook/?x".to_string(), "/hook/?x".to_string()),
        ("a hook/abc and /hooks/abc".to_string(), "a hook/abc and /hooks/abc".to_string()),
        (String::new(), String::new()),
    ];
    for (line, expected) in cases {
        let redacted = redact_webhook_paths(&line);
        assert_eq!(redacted, expected, "{line}");
        assert!(!redacted.contains(&digest), "{line}");
    }
    // Multi-byte text around a path is kept whole.
    assert_eq!(
        redact_webhook_paths(&format!("é{path}ü")),
        "é/hook/<redacted>ü"
    );
}
