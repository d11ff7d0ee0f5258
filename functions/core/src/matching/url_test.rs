use super::*;
use crate::push::tests::sample_push;
use proptest::prelude::*;

fn location(host: &str, path: &str) -> Option<RepoLocation> {
    Some(RepoLocation {
        host: host.into(),
        path: path.into(),
    })
}

fn push_with_urls(http_url: &str, ssh_url: &str, web_url: &str) -> Push {
    let mut push = sample_push();
    push.project.http_url = http_url.into();
    push.project.ssh_url = ssh_url.into();
    push.project.web_url = web_url.into();
    push
}

fn no_aliases() -> BTreeMap<String, String> {
    BTreeMap::new()
}

#[test]
fn every_url_form_of_the_push_hook_fixture_normalises_to_the_same_project() {
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("../../tests/fixtures/gitlab/push_hook.json")).unwrap();
    let urls: Vec<&str> = [
        "/project/web_url",
        "/project/git_ssh_url",
        "/project/git_http_url",
        "/project/url",
        "/project/ssh_url",
        "/project/http_url",
        "/repository/url",
        "/repository/git_http_url",
        "/repository/git_ssh_url",
    ]
    .into_iter()
    .map(|pointer| fixture.pointer(pointer).unwrap().as_str().unwrap())
    .collect();
    assert!(urls.contains(&"http://example.com/mike/diaspora.git"));
    assert!(urls.contains(&"git@example.com:mike/diaspora.git"));
    assert!(urls.contains(&"http://example.com/mike/diaspora"));
    for url in urls {
        assert_eq!(
            normalize(url),
            location("example.com", "mike/diaspora"),
            "{url}"
        );
    }
}

#[test]
fn normalises_every_accepted_url_form_to_host_and_path() {
    for (why, url, host, path) in [
        (
            "http clone URL",
            "http://example.com/mike/diaspora.git",
            "example.com",
            "mike/diaspora",
        ),
        (
            "scp-like ssh URL",
            "git@example.com:mike/diaspora.git",
            "example.com",
            "mike/diaspora",
        ),
        (
            "web URL without .git",
            "http://example.com/mike/diaspora",
            "example.com",
            "mike/diaspora",
        ),
        (
            "https is the same project as http",
            "https://example.com/mike/diaspora.git",
            "example.com",
            "mike/diaspora",
        ),
        (
            "ssh URL with user and port, subgroups",
            "ssh://git@host:2222/group/sub/project.git",
            "host",
            "group/sub/project",
        ),
        (
            "ssh URL without user or port",
            "ssh://gitlab.example.com/group/project",
            "gitlab.example.com",
            "group/project",
        ),
        (
            "upper-case host and path",
            "https://GitLab.Example.COM/Mike/Diaspora.GIT",
            "gitlab.example.com",
            "mike/diaspora",
        ),
        (
            "upper-case scheme",
            "HTTPS://example.com/mike/diaspora",
            "example.com",
            "mike/diaspora",
        ),
        (
            "trailing slash",
            "https://example.com/mike/diaspora/",
            "example.com",
            "mike/diaspora",
        ),
        (
            "trailing .git/",
            "https://example.com/mike/diaspora.git/",
            "example.com",
            "mike/diaspora",
        ),
        (
            "user info is not identity",
            "https://user:pass@example.com/mike/diaspora.git",
            "example.com",
            "mike/diaspora",
        ),
        (
            "port is not identity",
            "https://example.com:8443/mike/diaspora",
            "example.com",
            "mike/diaspora",
        ),
        (
            "query and fragment are not identity",
            "https://example.com/mike/diaspora?x=1#f",
            "example.com",
            "mike/diaspora",
        ),
        (
            "subgroups are kept whole",
            "https://example.com/a/b/c/d.git",
            "example.com",
            "a/b/c/d",
        ),
        (
            "relative URL root stays part of the path",
            "https://example.com/gitlab/mike/diaspora",
            "example.com",
            "gitlab/mike/diaspora",
        ),
        (
            "trailing dot of a fully qualified host",
            "https://example.com./mike/diaspora",
            "example.com",
            "mike/diaspora",
        ),
        (
            "trailing dots that hide an IPv4 address",
            "git@0..:mike/diaspora",
            "0.0.0.0",
            "mike/diaspora",
        ),
        (
            "percent-encoded ssh host",
            "ssh://git@ex%41mple.com/mike/diaspora",
            "example.com",
            "mike/diaspora",
        ),
        (
            "internationalised host in its ASCII form",
            "https://bücher.example/mike/diaspora",
            "xn--bcher-kva.example",
            "mike/diaspora",
        ),
        (
            "scp-like without user",
            "example.com:mike/diaspora.git",
            "example.com",
            "mike/diaspora",
        ),
        (
            "scp-like with absolute path",
            "git@example.com:/mike/diaspora.git",
            "example.com",
            "mike/diaspora",
        ),
        (
            "scp-like upper-case host",
            "git@EXAMPLE.com:Mike/Diaspora.git",
            "example.com",
            "mike/diaspora",
        ),
        (
            "IPv4 host",
            "http://10.0.0.1/mike/diaspora",
            "10.0.0.1",
            "mike/diaspora",
        ),
        (
            "IPv6 host",
            "ssh://git@[::1]:22/mike/diaspora",
            "[::1]",
            "mike/diaspora",
        ),
        (
            "only one .git is removed",
            "https://example.com/mike/diaspora.git.d",
            "example.com",
            "mike/diaspora.git.d",
        ),
        (
            "percent-encoding is kept, not decoded",
            "https://example.com/mike/dia%73pora",
            "example.com",
            "mike/dia%73pora",
        ),
    ] {
        assert_eq!(normalize(url), location(host, path), "{why}: {url}");
    }
}

#[test]
fn rejects_what_is_not_an_http_https_ssh_or_scp_like_git_url() {
    for (why, url) in [
        ("empty", ""),
        ("only a colon", ":"),
        ("user without host", "git@"),
        ("scp-like without path", "host:"),
        ("scp-like without host", "git@:mike/diaspora"),
        ("scheme without host", "https://"),
        ("host without path", "https://example.com"),
        ("host with only a slash", "https://example.com/"),
        ("path that is only .git", "https://example.com/.git"),
        (
            "path whose last segment is only .git",
            "https://example.com/mike/.git",
        ),
        (
            "path ending in .git twice names no GitLab project",
            "https://example.com/mike/diaspora.git.git",
        ),
        (
            "removing .git would leave a dot segment",
            "https://example.com/mike/..git",
        ),
        ("OCI repository", "oci://host/x"),
        ("local file", "file:///x"),
        ("git protocol", "git://example.com/mike/diaspora.git"),
        ("ssh URL without host", "ssh:///mike/diaspora"),
        ("invalid port", "ssh://git@host:port/mike/diaspora"),
        ("Windows path", "C:\\x"),
        ("Windows path with forward slash", "C:/x"),
        ("relative local path", "./mike/diaspora"),
        ("absolute local path", "/srv/git/mike/diaspora.git"),
        ("whitespace only", " \t\n"),
        ("leading whitespace", " https://example.com/mike/diaspora"),
        ("inner whitespace", "https://example.com/mike/dia spora"),
        (
            "control character",
            "https://example.com/mike/\u{0}diaspora",
        ),
        (
            "bracketed scp-like host is not supported",
            "git@[::1]:mike/diaspora",
        ),
    ] {
        assert_eq!(normalize(url), None, "{why}: {url}");
    }
}

#[test]
fn very_long_inputs_do_not_panic() {
    let hundred_kb = 100_000;
    let long_path = format!("https://example.com/{}", "a/".repeat(hundred_kb / 2));
    assert_eq!(
        normalize(&long_path).map(|location| location.path.len()),
        Some(hundred_kb - 1)
    );
    let long_host = format!("https://{}/x", "a".repeat(hundred_kb));
    assert_eq!(
        normalize(&long_host).map(|location| location.host.len()),
        Some(hundred_kb)
    );
    for (why, url, parses) in [
        (
            "colons after a user",
            format!("git@{}", ":".repeat(hundred_kb)),
            false,
        ),
        ("only colons", ":".repeat(hundred_kb), false),
        (
            "only slashes after a scheme",
            format!("https://{}", "/".repeat(hundred_kb)),
            false,
        ),
        (
            "unicode without a colon",
            "\u{1F600}".repeat(hundred_kb / 4),
            false,
        ),
        (
            "percent signs in the path",
            format!("https://example.com/{}", "%".repeat(hundred_kb)),
            true,
        ),
    ] {
        assert_eq!(normalize(&url).is_some(), parses, "{why}");
    }
}

#[test]
fn a_spec_url_matches_the_push_only_when_host_and_whole_path_are_equal() {
    let push = push_with_urls(
        "http://example.com/mike/diaspora.git",
        "git@example.com:mike/diaspora.git",
        "http://example.com/mike/diaspora",
    );
    for (why, spec_url, matches) in [
        (
            "http clone URL",
            "http://example.com/mike/diaspora.git",
            true,
        ),
        (
            "https URL without .git",
            "https://example.com/mike/diaspora",
            true,
        ),
        (
            "ssh URL with port",
            "ssh://git@example.com:2222/mike/diaspora.git",
            true,
        ),
        ("upper case", "HTTPS://EXAMPLE.COM/MIKE/DIASPORA.GIT", true),
        (
            "trailing .git/",
            "https://example.com/mike/diaspora.git/",
            true,
        ),
        (
            "a prefix is not a match: longer name",
            "https://example.com/mike/diaspora-fork.git",
            false,
        ),
        (
            "a prefix is not a match: shorter name",
            "https://example.com/mike/dias.git",
            false,
        ),
        (
            "a suffix is not a match",
            "https://example.com/other/mike/diaspora.git",
            false,
        ),
        (
            "a sub-path is not a match",
            "https://example.com/mike/diaspora/sub.git",
            false,
        ),
        (
            "a dot is not a wildcard in the path",
            "https://example.com/mikeXdiaspora",
            false,
        ),
        (
            "a dot is not a wildcard in the host",
            "https://exampleXcom/mike/diaspora",
            false,
        ),
        (
            "a longer host is another host",
            "https://example.com.evil.com/mike/diaspora",
            false,
        ),
        (
            "a subdomain is another host",
            "https://gitlab.example.com/mike/diaspora",
            false,
        ),
        ("another scheme", "oci://example.com/mike/diaspora", false),
        ("empty", "", false),
    ] {
        assert_eq!(
            url_matches_push(spec_url, &push, &no_aliases()),
            matches,
            "{why}: {spec_url}"
        );
    }
}

#[test]
fn each_push_url_is_enough_to_match() {
    let spec_url = "https://example.com/mike/diaspora.git";
    for (why, push) in [
        (
            "only http_url parses",
            push_with_urls("http://example.com/mike/diaspora.git", "", ""),
        ),
        (
            "only ssh_url parses",
            push_with_urls("", "git@example.com:mike/diaspora.git", ""),
        ),
        (
            "only web_url parses",
            push_with_urls("", "", "http://example.com/mike/diaspora"),
        ),
    ] {
        assert!(url_matches_push(spec_url, &push, &no_aliases()), "{why}");
    }
    let nothing_parses = push_with_urls("", ":", "git@");
    assert!(!url_matches_push(spec_url, &nothing_parses, &no_aliases()));
}

#[test]
fn host_aliases_apply_to_both_sides() {
    let aliases = BTreeMap::from([
        (
            "SSH.Example.com".to_string(),
            "gitlab.example.com".to_string(),
        ),
        (
            "gitlab.internal".to_string(),
            "GitLab.Example.com".to_string(),
        ),
    ]);
    let public_push = push_with_urls(
        "https://gitlab.example.com/mike/diaspora.git",
        "git@gitlab.example.com:mike/diaspora.git",
        "https://gitlab.example.com/mike/diaspora",
    );
    let internal_push = push_with_urls(
        "https://gitlab.internal/mike/diaspora.git",
        "git@gitlab.internal:mike/diaspora.git",
        "https://gitlab.internal/mike/diaspora",
    );
    for (why, spec_url, push, aliases, matches) in [
        (
            "alias on the GitRepository side",
            "ssh://git@ssh.example.com/mike/diaspora.git",
            &public_push,
            &aliases,
            true,
        ),
        (
            "alias on the push side",
            "https://gitlab.example.com/mike/diaspora.git",
            &internal_push,
            &aliases,
            true,
        ),
        (
            "alias on both sides",
            "ssh://git@ssh.example.com:22/mike/diaspora.git",
            &internal_push,
            &aliases,
            true,
        ),
        (
            "without aliases the ssh host is another host",
            "ssh://git@ssh.example.com/mike/diaspora.git",
            &public_push,
            &no_aliases(),
            false,
        ),
        (
            "an alias does not change the path",
            "ssh://git@ssh.example.com/mike/other.git",
            &public_push,
            &aliases,
            false,
        ),
        (
            "an unrelated host stays unrelated",
            "ssh://git@ssh.other.com/mike/diaspora.git",
            &public_push,
            &aliases,
            false,
        ),
    ] {
        assert_eq!(url_matches_push(spec_url, push, aliases), matches, "{why}");
    }
}

#[test]
fn canonical_follows_one_alias_step_and_ignores_entries_that_are_not_hosts() {
    let aliases = BTreeMap::from([
        ("a.example".to_string(), "b.example".to_string()),
        ("b.example".to_string(), "c.example".to_string()),
        ("bad host:22".to_string(), "x.example".to_string()),
        ("d.example".to_string(), "".to_string()),
    ]);
    let at = |host: &str| RepoLocation {
        host: host.into(),
        path: "p".into(),
    };
    assert_eq!(canonical(at("a.example"), &aliases), at("b.example"));
    assert_eq!(canonical(at("b.example"), &aliases), at("c.example"));
    assert_eq!(canonical(at("d.example"), &aliases), at("d.example"));
    assert_eq!(canonical(at("z.example"), &aliases), at("z.example"));
}

/// Strings shaped like git URLs, so the property reaches the parsing paths and not
/// only the early rejections.
fn url_like() -> impl Strategy<Value = String> {
    let host = "([a-zA-Z0-9.]|%2[eE]|%41|xn--|ü|0x|\\.\\.|\\[::1\\]){0,8}";
    let path = "(/|\\.|\\.git|\\.GIT|%2[eE]|[a-zA-Z0-9]|\\?|#|%|:|@){0,12}";
    let regex = |pattern: &str| proptest::string::string_regex(pattern).unwrap();
    prop_oneof![
        any::<String>(),
        regex(&format!(
            "(https?|ssh|HTTP|file|oci)://([a-z%:]{{0,4}}@)?{host}(:[0-9]{{1,5}})?{path}"
        )),
        regex(&format!("([a-z%]{{0,4}}@)?{host}:{path}")),
        regex("[a-zA-Z0-9.:/@%]{0,40}"),
    ]
}

proptest! {
    #![proptest_config(crate::testing::many_cases())]
    #[test]
    fn normalize_never_panics_and_is_idempotent_on_its_own_output(url in url_like()) {
        if let Some(normalized) = normalize(&url) {
            let rendered = format!("https://{}/{}", normalized.host, normalized.path);
            prop_assert_eq!(normalize(&rendered), Some(normalized));
        }
    }
}

#[test]
fn display_url_hides_user_info_and_nothing_else() {
    for (url, shown) in [
        (
            "https://user:glpat-secret@gitlab.example.com/team/app.git",
            "https://***@gitlab.example.com/team/app.git",
        ),
        (
            "https://glpat-token-as-user@gitlab.example.com/team/app",
            "https://***@gitlab.example.com/team/app",
        ),
        ("http://a:b@h:8080/x?y=z@w", "http://***@h:8080/x?y=z@w"),
        // An @ after the authority is part of the path, not user info.
        (
            "https://gitlab.example.com/team/app@v1",
            "https://gitlab.example.com/team/app@v1",
        ),
        (
            "ssh://git@gitlab.example.com/team/app.git",
            "ssh://git@gitlab.example.com/team/app.git",
        ),
        ("ssh://deploy:pw@host/app.git", "ssh://***@host/app.git"),
        (
            "git@gitlab.example.com:team/app.git",
            "git@gitlab.example.com:team/app.git",
        ),
        (
            "https://gitlab.example.com/team/app.git",
            "https://gitlab.example.com/team/app.git",
        ),
        ("", ""),
        ("not a url", "not a url"),
    ] {
        assert_eq!(display_url(url), shown, "{url}");
    }
}
