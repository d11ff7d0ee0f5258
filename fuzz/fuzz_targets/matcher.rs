//! URL and ref matcher: `normalize`, `canonical`, `url_matches_push`, the ref rules and
//! `repository_verdict`, on fuzzer-chosen URLs, aliases, refs and `spec.ref` fields.
//!
//! Checked on every input: no panic; `normalize` gives a lower-case host and a path without
//! surrounding `/` or `.git`, and is idempotent on its own output; a spec URL matches a push
//! exactly when one of the push URLs normalises (with aliases) to the same location; a
//! branch rule triggers only on a push to that very branch that is not a deletion; a
//! triggered GitRepository was not skipped for its URL.
#![no_main]

use std::collections::BTreeMap;

use fluxrelay_core::flux::{GitRepository, GitRepositoryRef, ObjectRef};
use fluxrelay_core::matching::refs::{RefRule, effective_ref, ref_triggers};
use fluxrelay_core::matching::select::{
    Freshness, RepoSkip, RepositoryVerdict, is_safe_webhook_path, repository_verdict,
};
use fluxrelay_core::matching::url::{PushLocations, canonical, normalize, url_matches_push};
use fluxrelay_core::push::{PUSH_VERSION, Project};
use fluxrelay_core::{Push, PushEvent};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    spec_url: String,
    http_url: String,
    web_url: String,
    ssh_url: String,
    aliases: Vec<(String, String)>,
    git_ref: String,
    tag_push: bool,
    deletion: bool,
    branch: Option<String>,
    tag: Option<String>,
    semver: Option<String>,
    name: Option<String>,
    commit: Option<String>,
    revision: Option<String>,
    suspend: bool,
}

fn push(input: &Input) -> Push {
    let after = if input.deletion { "0" } else { "a" }.repeat(40);
    Push {
        v: PUSH_VERSION,
        key: String::new(),
        instance: "https://gitlab.example.com".into(),
        event: if input.tag_push {
            PushEvent::TagPush
        } else {
            PushEvent::Push
        },
        project: Project {
            id: 1,
            path: "group/project".into(),
            http_url: input.http_url.clone(),
            ssh_url: input.ssh_url.clone(),
            web_url: input.web_url.clone(),
            default_branch: None,
        },
        git_ref: input.git_ref.clone(),
        before: "b".repeat(40),
        after: after.clone(),
        checkout_sha: (!input.deletion).then_some(after),
        changed_paths: None,
        received_at: String::new(),
        accepted_in_run: None,
    }
}

fuzz_target!(|input: Input| {
    let aliases: BTreeMap<String, String> = input.aliases.iter().cloned().collect();
    let push = push(&input);

    // normalize: shape and idempotence.
    for url in [
        &input.spec_url,
        &input.http_url,
        &input.web_url,
        &input.ssh_url,
    ] {
        if let Some(location) = normalize(url) {
            assert!(!location.host.is_empty() && !location.path.is_empty());
            assert_eq!(location.host, location.host.to_ascii_lowercase());
            assert!(!location.path.starts_with('/') && !location.path.ends_with('/'));
            assert!(!location.path.ends_with(".git"));
            let rendered = format!("https://{}/{}", location.host, location.path);
            assert_eq!(normalize(&rendered).as_ref(), Some(&location), "{url:?}");
        }
    }

    // url_matches_push is exactly "some push URL has the same canonical location".
    let wanted = normalize(&input.spec_url).map(|l| canonical(l, &aliases));
    let expected = wanted.as_ref().is_some_and(|wanted| {
        [&input.http_url, &input.web_url, &input.ssh_url]
            .into_iter()
            .filter_map(|url| normalize(url))
            .any(|location| &canonical(location, &aliases) == wanted)
    });
    assert_eq!(url_matches_push(&input.spec_url, &push, &aliases), expected);

    // Ref rules.
    let spec = GitRepositoryRef {
        branch: input.branch.clone(),
        tag: input.tag.clone(),
        semver: input.semver.clone(),
        name: input.name.clone(),
        commit: input.commit.clone(),
    };
    let rule = effective_ref(Some(&spec));
    let triggers = ref_triggers(&rule, &push).is_ok();
    match &rule {
        RefRule::Commit => assert!(!triggers),
        RefRule::Branch(branch) => assert_eq!(
            triggers,
            !input.tag_push
                && !input.deletion
                && input.git_ref.strip_prefix("refs/heads/") == Some(branch.as_str())
        ),
        RefRule::Tag(tag) => assert_eq!(
            triggers,
            input.tag_push
                && !input.deletion
                && input.git_ref.strip_prefix("refs/tags/") == Some(tag.as_str())
        ),
        RefRule::Semver(_) => assert_eq!(triggers, input.tag_push),
        RefRule::Name(_) => {}
    }

    // The whole verdict never triggers a repository of another project, or a suspended one.
    let repository = GitRepository {
        id: ObjectRef::new("flux-system", "app"),
        labels: BTreeMap::new(),
        url: Some(input.spec_url.clone()).filter(|u| !u.is_empty()),
        git_ref: Some(spec),
        suspend: input.suspend,
        artifact_revision: input.revision.clone(),
        status: Default::default(),
    };
    for freshness in [Freshness::Fresh, Freshness::Cached] {
        let pushed = PushLocations::of(&push, &aliases);
        let verdict = repository_verdict(&repository, &push, &pushed, freshness);
        if !matches!(verdict, RepositoryVerdict::Skip(_)) {
            assert!(expected && triggers && !input.suspend);
        }
        // A cached status never skips as "already at the revision": it is read again.
        if freshness == Freshness::Cached {
            assert!(!matches!(
                verdict,
                RepositoryVerdict::Skip(RepoSkip::AlreadyAtRevision { .. })
            ));
        }
    }

    let _ = is_safe_webhook_path(&input.git_ref);
});
