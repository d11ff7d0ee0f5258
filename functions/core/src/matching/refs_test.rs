use super::*;
use crate::push::tests::sample_push;

const COMMIT: &str = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7";
const TAG_OBJECT: &str = "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7";
const ZERO: &str = "0000000000000000000000000000000000000000";

fn spec(fields: &[(&str, &str)]) -> GitRepositoryRef {
    let mut spec = GitRepositoryRef::default();
    for (field, value) in fields {
        let value = Some(value.to_string());
        match *field {
            "branch" => spec.branch = value,
            "tag" => spec.tag = value,
            "semver" => spec.semver = value,
            "name" => spec.name = value,
            "commit" => spec.commit = value,
            other => unreachable!("no field {other}"),
        }
    }
    spec
}

fn branch_push(git_ref: &str) -> Push {
    let mut push = sample_push();
    push.event = PushEvent::Push;
    push.git_ref = git_ref.into();
    push.after = COMMIT.into();
    push.checkout_sha = Some(COMMIT.into());
    push
}

fn branch_deletion(git_ref: &str) -> Push {
    let mut push = branch_push(git_ref);
    push.after = ZERO.into();
    push.checkout_sha = None;
    push
}

/// An annotated tag: `after` is the tag object, `checkout_sha` the tagged commit.
fn tag_push(git_ref: &str) -> Push {
    let mut push = branch_push(git_ref);
    push.event = PushEvent::TagPush;
    push.before = ZERO.into();
    push.after = TAG_OBJECT.into();
    push.checkout_sha = Some(COMMIT.into());
    push
}

fn tag_deletion(git_ref: &str) -> Push {
    let mut push = tag_push(git_ref);
    push.before = TAG_OBJECT.into();
    push.after = ZERO.into();
    push.checkout_sha = None;
    push
}

fn branch(name: &str) -> RefRule {
    RefRule::Branch(name.into())
}

#[test]
fn effective_ref_follows_flux_precedence_and_defaults_to_master() {
    for (why, spec, rule) in [
        ("no ref at all", None, branch("master")),
        ("an empty ref", Some(spec(&[])), branch("master")),
        (
            "only empty strings count as absent",
            Some(spec(&[("branch", ""), ("tag", ""), ("commit", "")])),
            branch("master"),
        ),
        (
            "a branch",
            Some(spec(&[("branch", "main")])),
            branch("main"),
        ),
        (
            "a tag",
            Some(spec(&[("tag", "v1.0.0")])),
            RefRule::Tag("v1.0.0".into()),
        ),
        (
            "a semver range",
            Some(spec(&[("semver", ">=1.0.0")])),
            RefRule::Semver(">=1.0.0".into()),
        ),
        (
            "a name",
            Some(spec(&[("name", "refs/heads/main")])),
            RefRule::Name("refs/heads/main".into()),
        ),
        (
            "a commit",
            Some(spec(&[("commit", COMMIT)])),
            RefRule::Commit,
        ),
        (
            "commit wins over branch",
            Some(spec(&[("branch", "main"), ("commit", COMMIT)])),
            RefRule::Commit,
        ),
        (
            "commit wins over everything",
            Some(spec(&[
                ("branch", "b"),
                ("tag", "t"),
                ("semver", "*"),
                ("name", "refs/heads/n"),
                ("commit", COMMIT),
            ])),
            RefRule::Commit,
        ),
        (
            "name wins over branch",
            Some(spec(&[("branch", "main"), ("name", "refs/heads/release")])),
            RefRule::Name("refs/heads/release".into()),
        ),
        (
            "name wins over semver and tag",
            Some(spec(&[
                ("tag", "t"),
                ("semver", "*"),
                ("name", "refs/tags/n"),
            ])),
            RefRule::Name("refs/tags/n".into()),
        ),
        (
            "semver wins over tag and branch",
            Some(spec(&[("branch", "b"), ("tag", "t"), ("semver", "1.x")])),
            RefRule::Semver("1.x".into()),
        ),
        (
            "tag wins over branch",
            Some(spec(&[("branch", "b"), ("tag", "t")])),
            RefRule::Tag("t".into()),
        ),
        (
            "an empty commit does not pin",
            Some(spec(&[("branch", "main"), ("commit", "")])),
            branch("main"),
        ),
    ] {
        assert_eq!(effective_ref(spec.as_ref()), rule, "{why}");
    }
}

#[test]
fn ref_rules_decide_which_pushes_trigger() {
    let tag = |name: &str| RefRule::Tag(name.into());
    let name = |name: &str| RefRule::Name(name.into());
    let semver = RefRule::Semver(">=1.0.0".into());
    let miss_branch = |tracked: &str, pushed: &str| {
        Err(RefMiss::OtherBranch {
            tracked: tracked.into(),
            pushed: pushed.into(),
        })
    };
    let not_a_tag_push = |pushed: &str| {
        Err(RefMiss::NotATagPush {
            pushed: pushed.into(),
        })
    };
    let branch_deleted = |pushed: &str| {
        Err(RefMiss::BranchDeleted {
            pushed: pushed.into(),
        })
    };
    let tag_deleted = |pushed: &str| {
        Err(RefMiss::TagDeleted {
            pushed: pushed.into(),
        })
    };
    let other_ref = |tracked: &str, pushed: &str| {
        Err(RefMiss::OtherRef {
            tracked: tracked.into(),
            pushed: pushed.into(),
        })
    };
    for (why, rule, push, verdict) in [
        // branch
        (
            "branch main ⇐ push to main",
            branch("main"),
            branch_push("refs/heads/main"),
            Ok(()),
        ),
        (
            "branch main ⇍ push to mainline (a prefix is not a match)",
            branch("main"),
            branch_push("refs/heads/mainline"),
            miss_branch("main", "refs/heads/mainline"),
        ),
        (
            "branch main ⇍ push to feature/main (a suffix is not a match)",
            branch("main"),
            branch_push("refs/heads/feature/main"),
            miss_branch("main", "refs/heads/feature/main"),
        ),
        (
            "branch main ⇍ push to Main (refs are case-sensitive)",
            branch("main"),
            branch_push("refs/heads/Main"),
            miss_branch("main", "refs/heads/Main"),
        ),
        (
            "branch main ⇍ a bare `main` ref",
            branch("main"),
            branch_push("main"),
            miss_branch("main", "main"),
        ),
        (
            "branch main ⇍ tag push of refs/tags/main",
            branch("main"),
            tag_push("refs/tags/main"),
            Err(RefMiss::NotABranchPush {
                tracked: "main".into(),
                pushed: "refs/tags/main".into(),
            }),
        ),
        (
            "branch main ⇍ deletion of main",
            branch("main"),
            branch_deletion("refs/heads/main"),
            branch_deleted("refs/heads/main"),
        ),
        (
            "branch main ⇍ deletion of another branch (mismatch reported first)",
            branch("main"),
            branch_deletion("refs/heads/old"),
            miss_branch("main", "refs/heads/old"),
        ),
        (
            "default master ⇐ push to master",
            branch("master"),
            branch_push("refs/heads/master"),
            Ok(()),
        ),
        (
            "default master ⇍ push to main",
            branch("master"),
            branch_push("refs/heads/main"),
            miss_branch("master", "refs/heads/main"),
        ),
        // tag
        (
            "tag v1 ⇐ tag push of v1",
            tag("v1"),
            tag_push("refs/tags/v1"),
            Ok(()),
        ),
        (
            "tag v1 ⇍ tag push of v1.1 (a prefix is not a match)",
            tag("v1"),
            tag_push("refs/tags/v1.1"),
            Err(RefMiss::OtherTag {
                tracked: "v1".into(),
                pushed: "refs/tags/v1.1".into(),
            }),
        ),
        (
            "tag v1 ⇍ branch push of refs/heads/v1",
            tag("v1"),
            branch_push("refs/heads/v1"),
            not_a_tag_push("refs/heads/v1"),
        ),
        (
            "tag v1 ⇍ deletion of v1",
            tag("v1"),
            tag_deletion("refs/tags/v1"),
            tag_deleted("refs/tags/v1"),
        ),
        // semver
        (
            "semver ⇐ tag creation",
            semver.clone(),
            tag_push("refs/tags/v2.0.0"),
            Ok(()),
        ),
        (
            "semver ⇐ tag deletion (the highest tag may be gone)",
            semver.clone(),
            tag_deletion("refs/tags/v2.0.0"),
            Ok(()),
        ),
        (
            "semver ⇍ branch push",
            semver.clone(),
            branch_push("refs/heads/main"),
            not_a_tag_push("refs/heads/main"),
        ),
        (
            "semver ⇍ branch deletion",
            semver.clone(),
            branch_deletion("refs/heads/main"),
            not_a_tag_push("refs/heads/main"),
        ),
        // name: full branch and tag refs
        (
            "name refs/heads/main ⇐ push to main",
            name("refs/heads/main"),
            branch_push("refs/heads/main"),
            Ok(()),
        ),
        (
            "name refs/heads/main ⇍ push to mainline",
            name("refs/heads/main"),
            branch_push("refs/heads/mainline"),
            other_ref("refs/heads/main", "refs/heads/mainline"),
        ),
        (
            "name refs/heads/main ⇍ tag push of refs/tags/main",
            name("refs/heads/main"),
            tag_push("refs/tags/main"),
            other_ref("refs/heads/main", "refs/tags/main"),
        ),
        (
            "name refs/heads/main ⇍ deletion of main",
            name("refs/heads/main"),
            branch_deletion("refs/heads/main"),
            branch_deleted("refs/heads/main"),
        ),
        (
            "name refs/tags/v1 ⇐ tag push of v1",
            name("refs/tags/v1"),
            tag_push("refs/tags/v1"),
            Ok(()),
        ),
        (
            "name refs/tags/v1 ⇍ tag push of v2",
            name("refs/tags/v1"),
            tag_push("refs/tags/v2"),
            other_ref("refs/tags/v1", "refs/tags/v2"),
        ),
        (
            "name refs/tags/v1 ⇍ deletion of v1",
            name("refs/tags/v1"),
            tag_deletion("refs/tags/v1"),
            tag_deleted("refs/tags/v1"),
        ),
        // name: any other ref
        (
            "name refs/merge-requests/1/head ⇐ any branch push",
            name("refs/merge-requests/1/head"),
            branch_push("refs/heads/feature"),
            Ok(()),
        ),
        (
            "name refs/merge-requests/1/head ⇐ any tag push",
            name("refs/merge-requests/1/head"),
            tag_push("refs/tags/v1"),
            Ok(()),
        ),
        (
            "name refs/merge-requests/1/head ⇐ a tag deletion",
            name("refs/merge-requests/1/head"),
            tag_deletion("refs/tags/v1"),
            Ok(()),
        ),
        (
            "name refs/merge-requests/1/head ⇍ a branch deletion",
            name("refs/merge-requests/1/head"),
            branch_deletion("refs/heads/feature"),
            branch_deleted("refs/heads/feature"),
        ),
        (
            "name Refs/Heads/main is another ref, not a branch (case-sensitive)",
            name("Refs/Heads/main"),
            branch_push("refs/heads/other"),
            Ok(()),
        ),
        // commit
        (
            "commit ⇍ push to any branch",
            RefRule::Commit,
            branch_push("refs/heads/main"),
            Err(RefMiss::PinnedToCommit),
        ),
        (
            "commit ⇍ any tag push",
            RefRule::Commit,
            tag_push("refs/tags/v1"),
            Err(RefMiss::PinnedToCommit),
        ),
    ] {
        assert_eq!(ref_triggers(&rule, &push), verdict, "{why}");
    }
}

#[test]
fn commit_combined_with_branch_never_triggers() {
    let rule = effective_ref(Some(&spec(&[("branch", "main"), ("commit", COMMIT)])));
    assert_eq!(
        ref_triggers(&rule, &branch_push("refs/heads/main")),
        Err(RefMiss::PinnedToCommit)
    );
}

#[test]
fn ref_misses_say_why_in_words() {
    for (miss, text) in [
        (
            RefMiss::PinnedToCommit,
            "pinned to a commit, so no push can change what it fetches",
        ),
        (
            RefMiss::OtherBranch {
                tracked: "main".into(),
                pushed: "refs/heads/dev".into(),
            },
            "tracks branch `main`, but the push is to `refs/heads/dev`",
        ),
        (
            RefMiss::BranchDeleted {
                pushed: "refs/heads/main".into(),
            },
            "the push deletes branch `refs/heads/main`, so there is nothing new to fetch",
        ),
        (
            RefMiss::NotATagPush {
                pushed: "refs/heads/main".into(),
            },
            "tracks tags, but the push is a branch push to `refs/heads/main`",
        ),
    ] {
        assert_eq!(miss.to_string(), text);
    }
}

#[test]
fn already_at_only_when_the_revision_names_the_pushed_ref_and_commit() {
    let sha1 = |name: &str, commit: &str| format!("{name}@sha1:{commit}");
    let sha256_commit = "a".repeat(64);
    let mut sha256_push = branch_push("refs/heads/main");
    sha256_push.after = sha256_commit.clone();
    let mut lightweight_tag = tag_push("refs/tags/v1");
    lightweight_tag.after = COMMIT.into();
    let upper_case_revision = sha1("main", &COMMIT.to_ascii_uppercase());
    let mut tag_without_checkout = tag_push("refs/tags/v1");
    tag_without_checkout.checkout_sha = None;
    for (why, rule, revision, push, expected) in [
        (
            "branch at the pushed commit",
            branch("main"),
            Some(sha1("main", COMMIT)),
            branch_push("refs/heads/main"),
            true,
        ),
        (
            "branch at another commit",
            branch("main"),
            Some(sha1("main", TAG_OBJECT)),
            branch_push("refs/heads/main"),
            false,
        ),
        (
            "a sha that is a prefix of the pushed one",
            branch("main"),
            Some(format!("main@sha1:{}", &COMMIT[..39])),
            branch_push("refs/heads/main"),
            false,
        ),
        (
            "the pushed sha is a prefix of the revision's",
            branch("main"),
            Some(format!("main@sha1:{COMMIT}0")),
            branch_push("refs/heads/main"),
            false,
        ),
        (
            "hex case does not matter",
            branch("main"),
            Some(upper_case_revision),
            branch_push("refs/heads/main"),
            true,
        ),
        (
            "sha256 repository at the pushed commit",
            branch("main"),
            Some(format!("main@sha256:{sha256_commit}")),
            sha256_push.clone(),
            true,
        ),
        (
            "sha256 digest of another commit",
            branch("main"),
            Some(format!("main@sha256:{}", "b".repeat(64))),
            sha256_push,
            false,
        ),
        (
            "a sha1 under the sha256 label is malformed",
            branch("main"),
            Some(format!("main@sha256:{COMMIT}")),
            branch_push("refs/heads/main"),
            false,
        ),
        (
            "revision of another branch with the same sha",
            branch("main"),
            Some(sha1("release", COMMIT)),
            branch_push("refs/heads/main"),
            false,
        ),
        (
            "push to another branch with the same sha",
            branch("main"),
            Some(sha1("main", COMMIT)),
            branch_push("refs/heads/release"),
            false,
        ),
        (
            "a tag push of refs/tags/main is not branch main",
            branch("main"),
            Some(sha1("main", COMMIT)),
            tag_push("refs/tags/main"),
            false,
        ),
        (
            "branch names with @ split at the last @",
            branch("me@work"),
            Some(sha1("me@work", COMMIT)),
            branch_push("refs/heads/me@work"),
            true,
        ),
        (
            "tag at the tagged commit (checkout_sha)",
            RefRule::Tag("v1".into()),
            Some(sha1("v1", COMMIT)),
            tag_push("refs/tags/v1"),
            true,
        ),
        (
            "tag at the lightweight tag's after",
            RefRule::Tag("v1".into()),
            Some(sha1("v1", COMMIT)),
            lightweight_tag,
            true,
        ),
        (
            "tag push without checkout_sha compares after",
            RefRule::Tag("v1".into()),
            Some(sha1("v1", TAG_OBJECT)),
            tag_without_checkout,
            true,
        ),
        (
            "tag at another commit",
            RefRule::Tag("v1".into()),
            Some(sha1("v1", "c".repeat(40).as_str())),
            tag_push("refs/tags/v1"),
            false,
        ),
        (
            "revision of another tag with the same sha",
            RefRule::Tag("v1".into()),
            Some(sha1("v2", COMMIT)),
            tag_push("refs/tags/v1"),
            false,
        ),
        (
            "name compares the full ref",
            RefRule::Name("refs/heads/main".into()),
            Some(sha1("refs/heads/main", COMMIT)),
            branch_push("refs/heads/main"),
            true,
        ),
        (
            "name does not accept the short ref",
            RefRule::Name("refs/heads/main".into()),
            Some(sha1("main", COMMIT)),
            branch_push("refs/heads/main"),
            false,
        ),
        (
            "other name never equals a pushed ref",
            RefRule::Name("refs/merge-requests/1/head".into()),
            Some(sha1("refs/merge-requests/1/head", COMMIT)),
            branch_push("refs/heads/main"),
            false,
        ),
        (
            "semver never: a new tag on the same commit changes the revision",
            RefRule::Semver("*".into()),
            Some(sha1("v1", COMMIT)),
            tag_push("refs/tags/v1"),
            false,
        ),
        (
            "commit never",
            RefRule::Commit,
            Some(sha1("main", COMMIT)),
            branch_push("refs/heads/main"),
            false,
        ),
        (
            "a deletion is never already there",
            branch("main"),
            Some(sha1("main", ZERO)),
            branch_deletion("refs/heads/main"),
            false,
        ),
        (
            "no status yet",
            branch("main"),
            None,
            branch_push("refs/heads/main"),
            false,
        ),
        (
            "garbage: only @",
            branch("main"),
            Some("@".into()),
            branch_push("refs/heads/main"),
            false,
        ),
        (
            "garbage: name and @",
            branch("main"),
            Some("main@".into()),
            branch_push("refs/heads/main"),
            false,
        ),
        (
            "garbage: empty sha1",
            branch("main"),
            Some("main@sha1:".into()),
            branch_push("refs/heads/main"),
            false,
        ),
        (
            "garbage: no @",
            branch("main"),
            Some(format!("mainsha1:{COMMIT}")),
            branch_push("refs/heads/main"),
            false,
        ),
        (
            "garbage: bare commit",
            branch("main"),
            Some(COMMIT.into()),
            branch_push("refs/heads/main"),
            false,
        ),
        (
            "garbage: digest without a ref name",
            branch("main"),
            Some(format!("sha1:{COMMIT}")),
            branch_push("refs/heads/main"),
            false,
        ),
        (
            "garbage: unknown algorithm",
            branch("main"),
            Some(format!("main@md5:{COMMIT}")),
            branch_push("refs/heads/main"),
            false,
        ),
        (
            "garbage: non-hex sha",
            branch("main"),
            Some(format!("main@sha1:{}", "g".repeat(40))),
            branch_push("refs/heads/main"),
            false,
        ),
        (
            "legacy `main/<sha>` format",
            branch("main"),
            Some(format!("main/{COMMIT}")),
            branch_push("refs/heads/main"),
            false,
        ),
    ] {
        assert_eq!(
            already_at(&rule, revision.as_deref(), &push),
            expected,
            "{why}"
        );
    }
}

#[test]
fn a_ref_rule_reads_as_what_it_follows() {
    for (spec, words) in [
        (None, "branch master"),
        (Some(spec(&[("branch", "main")])), "branch main"),
        (Some(spec(&[("tag", "v1.0.0")])), "tag v1.0.0"),
        (Some(spec(&[("semver", ">=1.0.0")])), "semver >=1.0.0"),
        (
            Some(spec(&[("branch", "main"), ("name", "refs/heads/release")])),
            "ref refs/heads/release",
        ),
        // The precedence is effective_ref's: a commit wins over a name, which
        // `cluster check` once ranked the other way round.
        (
            Some(spec(&[("name", "refs/heads/release"), ("commit", COMMIT)])),
            "a pinned commit",
        ),
    ] {
        assert_eq!(effective_ref(spec.as_ref()).to_string(), words, "{spec:?}");
    }
}
