//! Properties of the whole matcher (URL side and ref side), next to the table tests that
//! pin single cases. The fuzz target `fuzz/fuzz_targets/matcher.rs` checks the same rules
//! on arbitrary bytes; these run in every `cargo test`.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::refs::{RefRule, ref_triggers};
use super::url::{normalize, url_matches_push};
use crate::push::tests::sample_push;
use crate::push::{Push, PushEvent};

fn host() -> impl Strategy<Value = String> {
    // No `xn--` labels: those must be valid punycode, which random text is not.
    let label = "[a-wyz][a-z0-9-]{0,6}[a-z0-9]";
    proptest::collection::vec(label, 1..4).prop_map(|labels| {
        let mut labels = labels;
        labels.push("example".into());
        labels.join(".")
    })
}

fn project_path() -> impl Strategy<Value = String> {
    proptest::collection::vec("[a-z0-9][a-z0-9_.-]{0,8}[a-z0-9]", 2..4)
        .prop_filter("GitLab paths do not end in .git", |segments| {
            !segments
                .iter()
                .any(|s| s.ends_with(".git") || s.contains(".."))
        })
        .prop_map(|segments| segments.join("/"))
}

fn push_at(host: &str, path: &str) -> Push {
    let mut push = sample_push();
    push.project.http_url = format!("https://{host}/{path}.git");
    push.project.ssh_url = format!("git@{host}:{path}.git");
    push.project.web_url = format!("https://{host}/{path}");
    push
}

/// Every spelling of one project that Flux accepts in `spec.url`.
fn spellings(host: &str, path: &str) -> Vec<String> {
    let upper_host = host.to_ascii_uppercase();
    let upper_path = path.to_ascii_uppercase();
    vec![
        format!("https://{host}/{path}.git"),
        format!("https://{host}/{path}"),
        format!("http://{host}/{path}/"),
        format!("https://user:pass@{host}:8443/{path}.git"),
        format!("ssh://git@{host}/{path}.git"),
        format!("ssh://git@{host}:2222/{path}"),
        format!("git@{host}:{path}.git"),
        format!("https://{upper_host}./{upper_path}.git"),
    ]
}

fn no_aliases() -> BTreeMap<String, String> {
    BTreeMap::new()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Any spelling of the pushed project matches; the same spellings of another host,
    /// another path, or a path that merely extends or shortens the project's do not.
    #[test]
    fn a_spec_url_matches_exactly_the_pushed_project(
        host in host(),
        other_host in host(),
        path in project_path(),
        other_path in project_path(),
        suffix in "[a-z0-9-]{1,5}",
    ) {
        let push = push_at(&host, &path);
        for url in spellings(&host, &path) {
            prop_assert!(url_matches_push(&url, &push, &no_aliases()), "{} vs {:?}", url, push.project);
        }
        let mut others = vec![format!("{path}{suffix}"), format!("{path}/{suffix}")];
        if let Some((parent, _)) = path.rsplit_once('/') {
            others.push(parent.to_string());
        }
        if other_path != path {
            others.push(other_path.clone());
        }
        for wrong_path in others {
            for url in spellings(&host, &wrong_path) {
                prop_assert!(!url_matches_push(&url, &push, &no_aliases()), "{}", url);
            }
        }
        if other_host != host {
            for url in spellings(&other_host, &path) {
                prop_assert!(!url_matches_push(&url, &push, &no_aliases()), "{}", url);
            }
            // A host alias makes exactly the aliased host match.
            let aliases = BTreeMap::from([(other_host.clone(), host.clone())]);
            for url in spellings(&other_host, &path) {
                prop_assert!(url_matches_push(&url, &push, &aliases), "{}", url);
            }
        }
    }

    /// Normalising is case-blind and idempotent over every spelling.
    #[test]
    fn every_spelling_normalises_to_one_location(host in host(), path in project_path()) {
        let locations: Vec<_> = spellings(&host, &path).iter().map(|url| normalize(url)).collect();
        prop_assert!(locations[0].is_some());
        prop_assert!(locations.iter().all(|l| l == &locations[0]), "{:?}", locations);
    }

    /// A branch rule triggers on a push to exactly that branch, never on a tag push, another
    /// branch, a prefix of it or a deletion; a tag rule likewise for tags.
    #[test]
    fn branch_and_tag_rules_trigger_only_on_their_own_ref(
        tracked in "[a-zA-Z0-9._/-]{1,12}",
        pushed in "[a-zA-Z0-9._/-]{1,12}",
        tag_push in any::<bool>(),
        deletion in any::<bool>(),
    ) {
        let mut push = sample_push();
        push.event = if tag_push { PushEvent::TagPush } else { PushEvent::Push };
        push.git_ref = format!("refs/{}/{pushed}", if tag_push { "tags" } else { "heads" });
        if deletion {
            push.after = "0".repeat(40);
        }
        let same = tracked == pushed;
        let branch = ref_triggers(&RefRule::Branch(tracked.clone()), &push).is_ok();
        prop_assert_eq!(branch, !tag_push && same && !deletion);
        let tag = ref_triggers(&RefRule::Tag(tracked.clone()), &push).is_ok();
        prop_assert_eq!(tag, tag_push && same && !deletion);
        let name = ref_triggers(&RefRule::Name(push.git_ref.clone()), &push).is_ok();
        prop_assert_eq!(name, !deletion);
        prop_assert!(ref_triggers(&RefRule::Commit, &push).is_err());
        prop_assert_eq!(ref_triggers(&RefRule::Semver("*".into()), &push).is_ok(), tag_push);
    }
}
