use std::collections::BTreeMap;

use super::*;

fn location(registry: &str, repository: &str) -> OciLocation {
    OciLocation {
        registry: registry.into(),
        repository: repository.into(),
    }
}

#[test]
fn oci_urls_normalise_to_one_location() {
    let hub = |repo: &str| location(DOCKER_HUB, repo);
    for (url, expected) in [
        (
            "oci://ghcr.io/stefanprodan/manifests/podinfo",
            location("ghcr.io", "stefanprodan/manifests/podinfo"),
        ),
        (
            "oci://GHCR.io/StefanProdan/Podinfo",
            location("ghcr.io", "stefanprodan/podinfo"),
        ),
        (
            "oci://registry.example.com:5000/team/app",
            location("registry.example.com:5000", "team/app"),
        ),
        (
            "oci://localhost:5000/app",
            location("localhost:5000", "app"),
        ),
        ("oci://localhost/app", location("localhost", "app")),
        ("oci://[::1]:5000/app", location("[::1]:5000", "app")),
        (
            "oci://127.0.0.1:5000/a/b",
            location("127.0.0.1:5000", "a/b"),
        ),
        // Docker Hub under each of its names, and its implicit namespace.
        ("oci://docker.io/alpine", hub("library/alpine")),
        (
            "oci://index.docker.io/library/alpine",
            hub("library/alpine"),
        ),
        ("oci://registry-1.docker.io/alpine", hub("library/alpine")),
        ("oci://docker.io/fluxcd/flux", hub("fluxcd/flux")),
        // A first component without `.` or `:` is a Docker Hub namespace, not a host.
        ("oci://fluxcd/flux", hub("fluxcd/flux")),
        ("oci://alpine", hub("library/alpine")),
        // Separators inside components.
        (
            "oci://r.example/a.b/c__d/e---f/g_h",
            location("r.example", "a.b/c__d/e---f/g_h"),
        ),
        // No `/`: the whole reference is a Docker Hub name, as go-containerregistry reads it.
        ("oci://ghcr.io", hub("library/ghcr.io")),
    ] {
        assert_eq!(
            OciLocation::parse(url, ReferenceForm::OciUrl),
            Ok(expected),
            "{url}"
        );
    }
}

#[test]
fn images_normalise_like_go_containerregistry() {
    for (image, expected) in [
        ("alpine", "index.docker.io/library/alpine"),
        ("docker.io/alpine", "index.docker.io/library/alpine"),
        (
            "stefanprodan/podinfo",
            "index.docker.io/stefanprodan/podinfo",
        ),
        (
            "ghcr.io/stefanprodan/podinfo",
            "ghcr.io/stefanprodan/podinfo",
        ),
        (
            "registry.example.com:443/app",
            "registry.example.com:443/app",
        ),
        ("localhost/app", "localhost/app"),
    ] {
        let parsed = OciLocation::parse(image, ReferenceForm::Image).map(|l| l.to_string());
        assert_eq!(parsed.as_deref(), Ok(expected), "{image}");
    }
}

#[test]
fn references_that_name_no_repository_are_refused() {
    use OciReferenceError::*;
    for (text, form, error) in [
        ("", ReferenceForm::OciUrl, NotText),
        ("oci://a b/c", ReferenceForm::OciUrl, NotText),
        ("oci://a/b\n", ReferenceForm::OciUrl, NotText),
        ("oci://a\\b/c", ReferenceForm::OciUrl, NotText),
        ("ghcr.io/a/b", ReferenceForm::OciUrl, NotOciUrl),
        ("OCI://ghcr.io/a/b", ReferenceForm::OciUrl, NotOciUrl),
        ("https://ghcr.io/a/b", ReferenceForm::OciUrl, NotOciUrl),
        ("oci://ghcr.io/a/b", ReferenceForm::Image, HasScheme),
        ("https://ghcr.io/a/b", ReferenceForm::Image, HasScheme),
        (
            "oci://ghcr.io/a/b:v1",
            ReferenceForm::OciUrl,
            HasTagOrDigest,
        ),
        ("ghcr.io/a/b:v1", ReferenceForm::Image, HasTagOrDigest),
        ("alpine:3", ReferenceForm::Image, HasTagOrDigest),
        (
            "ghcr.io/a/b@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            ReferenceForm::Image,
            HasTagOrDigest,
        ),
        ("oci://r.example/a/", ReferenceForm::OciUrl, BadRepository),
        ("oci://ghcr.io/", ReferenceForm::OciUrl, BadRepository),
        ("oci://ghcr.io//a", ReferenceForm::OciUrl, BadRepository),
        ("oci://ghcr.io/a//b", ReferenceForm::OciUrl, BadRepository),
        ("oci://ghcr.io/-a", ReferenceForm::OciUrl, BadRepository),
        ("oci://ghcr.io/a-", ReferenceForm::OciUrl, BadRepository),
        ("oci://ghcr.io/a..b", ReferenceForm::OciUrl, BadRepository),
        ("oci://ghcr.io/a___b", ReferenceForm::OciUrl, BadRepository),
        ("oci://ghcr.io/a%2fb", ReferenceForm::OciUrl, BadRepository),
        ("oci://ghcr.io/../b", ReferenceForm::OciUrl, BadRepository),
        ("oci://user@ghcr.io/a", ReferenceForm::OciUrl, BadRegistry),
        ("oci://ghcr.io:99999/a", ReferenceForm::OciUrl, BadRegistry),
        ("oci://ghcr.io:0/a", ReferenceForm::OciUrl, BadRegistry),
        ("oci://ghcr.io:/a", ReferenceForm::OciUrl, BadRegistry),
        ("oci://-ghcr.io/a", ReferenceForm::OciUrl, BadRegistry),
        ("oci://[::1/a", ReferenceForm::OciUrl, BadRegistry),
        ("oci://gh_cr.io/a", ReferenceForm::OciUrl, BadRegistry),
    ] {
        assert_eq!(OciLocation::parse(text, form), Err(error), "{text:?}");
    }
    let long = format!("oci://r.example/{}", "a".repeat(MAX_REFERENCE_BYTES));
    assert_eq!(
        OciLocation::parse(&long, ReferenceForm::OciUrl),
        Err(OciReferenceError::NotText)
    );
    // A repository path of 256 bytes is over the distribution limit.
    let long_path = format!("oci://r.example/{}", "a".repeat(256));
    assert_eq!(
        OciLocation::parse(&long_path, ReferenceForm::OciUrl),
        Err(OciReferenceError::BadRepository)
    );
}

#[test]
fn a_registry_with_a_port_is_another_registry_and_a_dot_is_no_wildcard() {
    let parse = |url: &str| OciLocation::parse(url, ReferenceForm::OciUrl).ok();
    assert_ne!(parse("oci://r.example:5000/a"), parse("oci://r.example/a"));
    assert_ne!(parse("oci://r.example:443/a"), parse("oci://r.example/a"));
    assert_ne!(parse("oci://rxexample/a"), parse("oci://r.example/a"));
    assert_ne!(parse("oci://r.example/a/b"), parse("oci://r.example/a"));
    assert_ne!(parse("oci://r.example/ab"), parse("oci://r.example/a"));
    // docker.io with a port is not Docker Hub.
    assert_eq!(
        parse("oci://docker.io:5000/a").map(|l| l.registry),
        Some("docker.io:5000".to_string())
    );
    // A trailing dot names the same host.
    assert_eq!(parse("oci://r.example./a"), parse("oci://r.example/a"));
}

#[test]
fn parts_from_a_registry_normalise_like_a_reference() {
    assert_eq!(
        OciLocation::from_parts("Registry.Test:5000", "root/test"),
        Ok(location("registry.test:5000", "root/test"))
    );
    assert_eq!(
        OciLocation::from_parts("docker.io", "nginx"),
        Ok(location(DOCKER_HUB, "library/nginx"))
    );
    assert_eq!(
        OciLocation::from_parts("hub.harbor.com", "test-webhook/debian"),
        Ok(location("hub.harbor.com", "test-webhook/debian"))
    );
    assert_eq!(
        OciLocation::from_parts("hub.harbor.com", "/test-webhook/debian"),
        Err(OciReferenceError::BadRepository)
    );
    assert_eq!(
        OciLocation::from_parts("", "a"),
        Err(OciReferenceError::BadRegistry)
    );
    assert_eq!(
        OciLocation::from_parts("r.example", ""),
        Err(OciReferenceError::BadRepository)
    );
    assert_eq!(
        OciLocation::from_parts("r.example", "a:b"),
        Err(OciReferenceError::BadRepository)
    );
}

#[test]
fn aliases_map_one_registry_name_onto_another_once() {
    let aliases = BTreeMap::from([
        (
            "harbor.internal:8443".to_string(),
            "Harbor.Example.com".to_string(),
        ),
        ("a.example".to_string(), "b.example".to_string()),
        ("b.example".to_string(), "c.example".to_string()),
        ("bad alias".to_string(), "x.example".to_string()),
    ]);
    let canonical = |registry: &str| {
        OciLocation::from_parts(registry, "team/app")
            .map(|l| l.canonical(&aliases).registry)
            .ok()
    };
    assert_eq!(
        canonical("harbor.internal:8443").as_deref(),
        Some("harbor.example.com")
    );
    // The port is part of the name: without it, no alias applies.
    assert_eq!(
        canonical("harbor.internal").as_deref(),
        Some("harbor.internal")
    );
    // One step only.
    assert_eq!(canonical("a.example").as_deref(), Some("b.example"));
    assert_eq!(canonical("z.example").as_deref(), Some("z.example"));
}

#[test]
fn a_repository_lies_within_a_project_only_below_a_whole_component() {
    let project = location("registry.gitlab.example.com", "group/app");
    for (repository, within) in [
        ("group/app", true),
        ("group/app/manifests", true),
        ("group/app/a/b", true),
        ("group/application", false),
        ("group/ap", false),
        ("group", false),
        ("other/app", false),
    ] {
        assert_eq!(
            location("registry.gitlab.example.com", repository).within(&project),
            within,
            "{repository}"
        );
    }
    assert!(!location("registry.example.com", "group/app").within(&project));
}

#[test]
fn digests_and_tags() {
    let sha256 = format!("sha256:{}", "a".repeat(64));
    for good in [
        sha256.as_str(),
        &format!("sha512:{}", "0".repeat(128)),
        // AWS's documented ECR event: a shortened sha256.
        "sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd1234",
        "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8",
        "sha256:ABC=_-",
    ] {
        assert!(is_digest(good), "{good}");
    }
    for bad in [
        "",
        "sha256",
        "sha256:",
        ":abc",
        "SHA256:abc",
        "sha256+:abc",
        "sha256:a b",
        "sha256:a/b",
        "sha256:a:b",
        &format!("sha256:{}", "a".repeat(300)),
    ] {
        assert!(!is_digest(bad), "{bad}");
    }
    for good in ["latest", "v1.2.3", "1.0.0_build.1", "_x", "A-b.C"] {
        assert!(is_tag(good), "{good}");
    }
    for bad in ["", ".x", "-x", "v1+build", "a/b", "a:b", &"a".repeat(129)] {
        assert!(!is_tag(bad), "{bad}");
    }
}

#[test]
fn normalising_never_panics_and_is_stable() {
    for text in [
        "oci://",
        "oci:///",
        "oci://:",
        "oci://[",
        "oci://]",
        "oci://[]:1/a",
        "oci://a:1:2/b",
        "oci://é.example/a",
        "oci://a/é",
        "oci://a/\u{0}",
        "/",
        ":",
        "@",
        "a@b",
        "[::1]",
    ] {
        for form in [ReferenceForm::OciUrl, ReferenceForm::Image] {
            if let Ok(location) = OciLocation::parse(text, form) {
                let again = OciLocation::parse(&format!("oci://{location}"), ReferenceForm::OciUrl);
                assert_eq!(again, Ok(location), "{text}");
            }
        }
    }
}
