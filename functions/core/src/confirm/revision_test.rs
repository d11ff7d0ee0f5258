use super::*;

const SHA: &str = "1eabc9a41ca088515cab83f1cce49eb43e84b67f";
const OTHER: &str = "5394cb7f48332b2de7c17dd8b8384bbc84b7e738";

#[test]
fn every_revision_format_flux_writes_names_its_commit() {
    // (revision, where the format comes from)
    let rows = [
        (format!("main@sha1:{SHA}"), "branch, current format"),
        (format!("staging@sha1:{SHA}"), "another branch"),
        (format!("feature/x@sha1:{SHA}"), "branch with a slash"),
        (format!("v0.1.0@sha1:{SHA}"), "tag"),
        (format!("refs/tags/v1@sha1:{SHA}"), "spec.ref.name of a tag"),
        (
            format!("refs/heads/main@sha1:{SHA}"),
            "spec.ref.name of a branch",
        ),
        (
            format!("refs/pull/420/head@sha1:{SHA}"),
            "spec.ref.name, other ref",
        ),
        (format!("sha1:{SHA}"), "spec.ref.commit without a branch"),
        (
            format!("<unknown>:{SHA}"),
            "a hash length Flux does not know",
        ),
        (format!("main/{SHA}"), "before source-controller 0.35"),
        (
            format!("feature/branch/{SHA}"),
            "old format, branch with a slash",
        ),
        (format!("HEAD/{SHA}"), "old format, exact commit"),
        (SHA.to_string(), "a bare hash"),
        (
            format!("main@sha1:{}", SHA.to_uppercase()),
            "upper-case hex",
        ),
        (format!("  main@sha1:{SHA}\n"), "surrounding whitespace"),
    ];
    for (revision, why) in &rows {
        assert_eq!(
            commit_of(revision).map(str::to_ascii_lowercase).as_deref(),
            Some(SHA),
            "{why}: {revision}"
        );
        assert!(names(Some(revision), SHA), "{why}: {revision}");
        assert!(!names(Some(revision), OTHER), "{why} names no other commit");
    }
}

#[test]
fn what_names_no_commit() {
    for revision in [
        "",
        "   ",
        "main",
        "main@sha1:",
        "main@sha1:not-hex",
        "main/",
        "v1.2.3",
        "sha256:",
        "ünïcödé:ßß",
    ] {
        assert!(!names(Some(revision), SHA), "{revision:?}");
    }
    assert!(!names(None, SHA));
}

#[test]
fn abbreviations_match_only_as_prefixes_of_seven_digits_or_more() {
    assert!(same_commit("1eabc9a", SHA));
    assert!(same_commit(SHA, "1eabc9a41ca0"));
    assert!(!same_commit("1eabc9", SHA), "six digits are too few");
    assert!(!same_commit("eabc9a4", SHA), "not a prefix");
    assert!(!same_commit("", SHA));
    assert!(same_commit(SHA, &SHA.to_uppercase()));
    assert!(!same_commit(SHA, OTHER));
}

#[test]
fn chart_versions_carry_twelve_digits_of_the_commit() {
    let twelve = &SHA[..12];
    for (version, named) in [
        (format!("6.0.3+{twelve}"), true),
        (format!("6.0.3+{twelve}.3"), true),
        (format!("1.2.3-rc.1+{twelve}"), true),
        (format!("6.0.3+{}", &OTHER[..12]), false),
        ("6.0.3".to_string(), false),
        ("6.0.3+3".to_string(), false),
        (format!("6.0.3+{}", &SHA[..11]), false),
        (format!("6.0.3+{SHA}"), false),
        ("+".to_string(), false),
        (String::new(), false),
    ] {
        assert_eq!(chart_version_names(Some(&version), SHA), named, "{version}");
    }
    assert!(!chart_version_names(None, SHA));
}
