use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;
use crate::gitlab::Delivery;

const RECEIVED: &str = "2026-11-22T03:00:00Z";
const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn pushed(reference: &str, tag: &str) -> ArtifactScope {
    let location = OciLocation::parse(reference, ReferenceForm::Image).unwrap();
    ArtifactScope::Pushed(PushedArtifact::new(location, tag, DIGEST, ("tag", "digest")).unwrap())
}

fn project(registry: &str, path: &str) -> ArtifactScope {
    ArtifactScope::Project(OciLocation::from_parts(registry, path).unwrap())
}

fn object(kind: ArtifactKind, name: &str, spec: Value) -> ArtifactObject {
    ArtifactObject::from_json(
        kind,
        &json!({"metadata": {"name": name, "namespace": "flux-system"}, "spec": spec}),
    )
}

fn oci(name: &str, url: &str, reference: Value) -> ArtifactObject {
    object(
        ArtifactKind::OciRepository,
        name,
        json!({"url": url, "ref": reference}),
    )
}

fn verdict_of(objects: &[ArtifactObject], scope: &ArtifactScope, name: &str) -> ArtifactVerdict {
    verdict_with(objects, scope, name, &BTreeMap::new())
}

fn verdict_with(
    objects: &[ArtifactObject],
    scope: &ArtifactScope,
    name: &str,
    aliases: &BTreeMap<String, String>,
) -> ArtifactVerdict {
    artifact_verdicts(objects, scope, aliases, RECEIVED, Freshness::Fresh)
        .into_iter()
        .find(|(object, _)| object.id.name == name)
        .map(|(_, verdict)| verdict)
        .unwrap()
}

fn triggers(verdict: &ArtifactVerdict) -> bool {
    *verdict == ArtifactVerdict::Trigger
}

#[test]
fn oci_repositories_by_url_and_ref_with_negatives() {
    let url = "oci://registry.example.com/team/app";
    let cases: Vec<(&str, &str, Value, &str, bool, &str)> = vec![
        // (case, spec.url, spec.ref, pushed tag, triggers, reason fragment when skipped)
        (
            "tag equal",
            url,
            json!({"tag": "v1.2.3"}),
            "v1.2.3",
            true,
            "",
        ),
        (
            "tag differs",
            url,
            json!({"tag": "v1.2.3"}),
            "v1.2.4",
            false,
            "tracks tag `v1.2.3`",
        ),
        (
            "tag is case-sensitive",
            url,
            json!({"tag": "V1"}),
            "v1",
            false,
            "tracks tag",
        ),
        (
            "no ref follows latest",
            url,
            json!(null),
            "latest",
            true,
            "",
        ),
        (
            "no ref ignores others",
            url,
            json!(null),
            "v1",
            false,
            "tracks tag `latest`",
        ),
        (
            "empty ref follows latest",
            url,
            json!({}),
            "latest",
            true,
            "",
        ),
        (
            "semver in range",
            url,
            json!({"semver": ">=1.0.0 <2.0.0"}),
            "1.4.0",
            true,
            "",
        ),
        (
            "semver with v",
            url,
            json!({"semver": "1.x"}),
            "v1.4.0",
            true,
            "",
        ),
        (
            "semver out of range",
            url,
            json!({"semver": ">=1.0.0 <2.0.0"}),
            "2.0.0",
            false,
            "not in its semver range",
        ),
        (
            "semver never takes a non-version",
            url,
            json!({"semver": "*"}),
            "latest",
            false,
            "not in its semver range",
        ),
        (
            "semver beats tag",
            url,
            json!({"semver": "1.x", "tag": "latest"}),
            "latest",
            false,
            "semver range",
        ),
        (
            "semver excludes pre-releases",
            url,
            json!({"semver": ">=1.0.0"}),
            "1.5.0-rc.1",
            false,
            "semver range",
        ),
        (
            "semverFilter keeps",
            url,
            json!({"semver": ">=1.0.0-0", "semverFilter": ".*-rc.*"}),
            "1.5.0-rc.1",
            true,
            "",
        ),
        (
            "semverFilter drops",
            url,
            json!({"semver": "*", "semverFilter": "^v"}),
            "1.5.0",
            false,
            "semverFilter",
        ),
        (
            "semverFilter ignored without semver",
            url,
            json!({"tag": "x", "semverFilter": "^v"}),
            "x",
            true,
            "",
        ),
        (
            "an unreadable filter triggers",
            url,
            json!({"semver": "*", "semverFilter": "(["}),
            "1.0.0",
            true,
            "",
        ),
        (
            "an unreadable range triggers",
            url,
            json!({"semver": "!=1.0.0"}),
            "1.0.1",
            true,
            "",
        ),
        (
            "helm's _ is read as +",
            url,
            json!({"semver": ">=1.0.0+0"}),
            "1.0.0_build.1",
            true,
            "",
        ),
        (
            "digest pin is never triggered",
            url,
            json!({"digest": DIGEST}),
            "latest",
            false,
            "pinned to a digest",
        ),
        (
            "digest beats semver and tag",
            url,
            json!({"digest": "sha256:00", "semver": "*", "tag": "v1"}),
            "v1",
            false,
            "pinned",
        ),
        (
            "other repository",
            "oci://registry.example.com/team/other",
            json!({"tag": "v1"}),
            "v1",
            false,
            "names `registry.example.com/team/other`",
        ),
        (
            "parent repository",
            "oci://registry.example.com/team",
            json!({"tag": "v1"}),
            "v1",
            false,
            "names",
        ),
        (
            "child repository",
            "oci://registry.example.com/team/app/sub",
            json!({"tag": "v1"}),
            "v1",
            false,
            "names",
        ),
        (
            "port is another registry",
            "oci://registry.example.com:5000/team/app",
            json!({"tag": "v1"}),
            "v1",
            false,
            "names",
        ),
        (
            "case of the URL",
            "oci://Registry.Example.com/Team/App",
            json!({"tag": "v1"}),
            "v1",
            true,
            "",
        ),
        (
            "plain reference is no OCI URL",
            "registry.example.com/team/app",
            json!({"tag": "v1"}),
            "v1",
            false,
            "does not start with oci://",
        ),
        (
            "tag in the URL",
            "oci://registry.example.com/team/app:v1",
            json!({"tag": "v1"}),
            "v1",
            false,
            "names a tag or a digest",
        ),
    ];
    for (case, spec_url, reference, tag, expected, reason) in cases {
        let objects = [oci("x", spec_url, reference)];
        let verdict = verdict_of(&objects, &pushed("registry.example.com/team/app", tag), "x");
        assert_eq!(triggers(&verdict), expected, "{case}: {verdict:?}");
        if let ArtifactVerdict::Skip(skip) = &verdict {
            assert!(skip.to_string().contains(reason), "{case}: {skip}");
        }
    }
    let missing = [object(ArtifactKind::OciRepository, "x", json!({}))];
    assert_eq!(
        verdict_of(
            &missing,
            &pushed("registry.example.com/team/app", "v1"),
            "x"
        ),
        ArtifactVerdict::Skip(ArtifactSkip::NoReference { field: "spec.url" })
    );
}

#[test]
fn docker_hub_names_and_registry_aliases_name_one_repository() {
    let objects = [
        oci(
            "hub",
            "oci://docker.io/library/nginx",
            json!({"tag": "1.27"}),
        ),
        oci(
            "internal",
            "oci://harbor.internal:8443/team/app",
            json!({"tag": "v1"}),
        ),
    ];
    assert!(triggers(&verdict_of(
        &objects,
        &pushed("nginx", "1.27"),
        "hub"
    )));
    assert!(triggers(&verdict_of(
        &objects,
        &pushed("index.docker.io/nginx", "1.27"),
        "hub"
    )));
    let harbor = pushed("harbor.example.com/team/app", "v1");
    assert!(!triggers(&verdict_of(&objects, &harbor, "internal")));
    let aliases = BTreeMap::from([(
        "harbor.internal:8443".to_string(),
        "harbor.example.com".to_string(),
    )]);
    assert!(triggers(&verdict_with(
        &objects, &harbor, "internal", &aliases
    )));
}

#[test]
fn suspended_and_already_reconciled_sources_are_skipped_only_on_proof() {
    let mut suspended = oci("s", "oci://r.example/a", json!({"tag": "v1"}));
    suspended.suspend = true;
    assert_eq!(
        verdict_of(&[suspended], &pushed("r.example/a", "v1"), "s"),
        ArtifactVerdict::Skip(ArtifactSkip::Suspended)
    );
    // A suspended source of another repository says why it is not this one first.
    let mut other = oci("o", "oci://r.example/b", json!({"tag": "v1"}));
    other.suspend = true;
    assert!(matches!(
        verdict_of(&[other], &pushed("r.example/a", "v1"), "o"),
        ArtifactVerdict::Skip(ArtifactSkip::OtherRepository { .. })
    ));

    let settled = |made: &str| {
        ArtifactObject::from_json(
            ArtifactKind::OciRepository,
            &json!({"metadata": {"name": "done", "namespace": "flux-system", "generation": 2},
                    "spec": {"url": "oci://r.example/a", "ref": {"tag": "v1"}},
                    "status": {"observedGeneration": 2,
                               "conditions": [{"type": "Ready", "status": "True"}],
                               "artifact": {"revision": format!("v1@{DIGEST}"), "lastUpdateTime": made}}}),
        )
    };
    let scope = pushed("r.example/a", "v1");
    let after = [settled("2026-11-22T03:00:10Z")];
    let verdicts = |freshness| {
        artifact_verdicts(&after, &scope, &BTreeMap::new(), RECEIVED, freshness)[0]
            .1
            .clone()
    };
    assert!(matches!(
        verdicts(Freshness::Fresh),
        ArtifactVerdict::Skip(ArtifactSkip::AlreadyAtRevision { .. })
    ));
    assert_eq!(verdicts(Freshness::Cached), ArtifactVerdict::LookAgain);
    // Made before the push was received: proves nothing.
    let before = [settled("2026-11-22T02:59:59Z")];
    assert!(triggers(&verdict_of(&before, &scope, "done")));
    // Another digest under the same tag is new.
    let other_digest = ArtifactScope::Pushed(
        PushedArtifact::new(
            OciLocation::from_parts("r.example", "a").unwrap(),
            "v1",
            "sha256:22",
            ("t", "d"),
        )
        .unwrap(),
    );
    assert!(triggers(&verdict_of(&after, &other_digest, "done")));
}

fn helm_objects() -> Vec<ArtifactObject> {
    vec![
        object(
            ArtifactKind::HelmRepository,
            "charts",
            json!({"type": "oci", "url": "oci://ghcr.io/team/charts"}),
        ),
        object(
            ArtifactKind::HelmRepository,
            "classic",
            json!({"url": "https://charts.example.com"}),
        ),
        object(
            ArtifactKind::HelmRepository,
            "elsewhere",
            json!({"type": "oci", "url": "oci://ghcr.io/other/charts"}),
        ),
        object(
            ArtifactKind::HelmChart,
            "podinfo-any",
            json!({"chart": "podinfo", "sourceRef": {"kind": "HelmRepository", "name": "charts"}}),
        ),
        object(
            ArtifactKind::HelmChart,
            "podinfo-6",
            json!({"chart": "podinfo", "version": "6.x", "sourceRef": {"kind": "HelmRepository", "name": "charts"}}),
        ),
        object(
            ArtifactKind::HelmChart,
            "podinfo-5",
            json!({"chart": "podinfo", "version": "5.x", "sourceRef": {"kind": "HelmRepository", "name": "charts"}}),
        ),
        object(
            ArtifactKind::HelmChart,
            "other-chart",
            json!({"chart": "redis", "sourceRef": {"kind": "HelmRepository", "name": "charts"}}),
        ),
        object(
            ArtifactKind::HelmChart,
            "other-repo",
            json!({"chart": "podinfo", "sourceRef": {"kind": "HelmRepository", "name": "elsewhere"}}),
        ),
        object(
            ArtifactKind::HelmChart,
            "from-git",
            json!({"chart": "./charts/podinfo", "sourceRef": {"kind": "GitRepository", "name": "charts"}}),
        ),
        object(
            ArtifactKind::HelmChart,
            "from-classic",
            json!({"chart": "podinfo", "sourceRef": {"kind": "HelmRepository", "name": "classic"}}),
        ),
        object(
            ArtifactKind::HelmRelease,
            "release-6",
            json!({"chart": {"spec": {"chart": "podinfo", "version": ">=6.0.0 <7.0.0", "sourceRef": {"kind": "HelmRepository", "name": "charts", "namespace": "flux-system"}}}}),
        ),
        object(
            ArtifactKind::HelmRelease,
            "release-other-ns",
            json!({"chart": {"spec": {"chart": "podinfo", "sourceRef": {"kind": "HelmRepository", "name": "charts", "namespace": "apps"}}}}),
        ),
        object(
            ArtifactKind::HelmRelease,
            "release-chartref",
            json!({"chartRef": {"kind": "OCIRepository", "name": "podinfo"}}),
        ),
    ]
}

#[test]
fn an_oci_chart_push_triggers_the_charts_and_releases_that_take_it_never_the_repository() {
    let objects = helm_objects();
    let scope = pushed("ghcr.io/team/charts/podinfo", "6.1.0");
    for (name, expected, reason) in [
        ("charts", false, "never reconciles"),
        ("classic", false, "is not of type oci"),
        ("elsewhere", false, "names `ghcr.io/other/charts`"),
        ("podinfo-any", true, ""),
        ("podinfo-6", true, ""),
        ("podinfo-5", false, "not in its semver range `5.x`"),
        ("other-chart", false, "names `ghcr.io/team/charts/redis`"),
        ("other-repo", false, "names `ghcr.io/other/charts/podinfo`"),
        (
            "from-git",
            false,
            "takes its chart from GitRepository charts",
        ),
        (
            "from-classic",
            false,
            "takes its chart from HelmRepository classic",
        ),
        ("release-6", true, ""),
        (
            "release-other-ns",
            false,
            "takes its chart from HelmRepository charts",
        ),
        (
            "release-chartref",
            false,
            "through spec.chartRef (OCIRepository podinfo)",
        ),
    ] {
        let verdict = verdict_of(&objects, &scope, name);
        assert_eq!(triggers(&verdict), expected, "{name}: {verdict:?}");
        if let ArtifactVerdict::Skip(skip) = &verdict {
            assert!(skip.to_string().contains(reason), "{name}: {skip}");
        }
    }
    // A chart version's build metadata is written with `_` in its tag.
    let built = pushed("ghcr.io/team/charts/podinfo", "6.1.0_abc123");
    assert!(triggers(&verdict_of(&objects, &built, "podinfo-6")));
    // Helm never publishes a pre-release to a `*` range.
    let rc = pushed("ghcr.io/team/charts/podinfo", "6.2.0-rc.1");
    assert!(!triggers(&verdict_of(&objects, &rc, "podinfo-any")));
}

#[test]
fn image_repositories_by_image_and_exclusion_list() {
    let objects = [
        object(
            ArtifactKind::ImageRepository,
            "podinfo",
            json!({"image": "ghcr.io/stefanprodan/podinfo"}),
        ),
        object(
            ArtifactKind::ImageRepository,
            "hub",
            json!({"image": "stefanprodan/podinfo"}),
        ),
        object(
            ArtifactKind::ImageRepository,
            "no-rc",
            json!({"image": "ghcr.io/stefanprodan/podinfo", "exclusionList": ["-rc", "(["]}),
        ),
        object(
            ArtifactKind::ImageRepository,
            "scheme",
            json!({"image": "oci://ghcr.io/stefanprodan/podinfo"}),
        ),
        object(
            ArtifactKind::ImageRepository,
            "tagged",
            json!({"image": "ghcr.io/stefanprodan/podinfo:6.0"}),
        ),
    ];
    let scope = pushed("ghcr.io/stefanprodan/podinfo", "6.1.0-rc.1");
    assert!(triggers(&verdict_of(&objects, &scope, "podinfo")));
    assert!(matches!(
        verdict_of(&objects, &scope, "hub"),
        ArtifactVerdict::Skip(ArtifactSkip::OtherRepository { .. })
    ));
    assert!(matches!(
        verdict_of(&objects, &scope, "no-rc"),
        ArtifactVerdict::Skip(ArtifactSkip::ExcludedTag { .. })
    ));
    assert!(
        verdict_of(&objects, &scope, "scheme").eq(&ArtifactVerdict::Skip(
            ArtifactSkip::BadReference {
                field: "spec.image",
                error: OciReferenceError::HasScheme
            }
        ))
    );
    assert!(matches!(
        verdict_of(&objects, &scope, "tagged"),
        ArtifactVerdict::Skip(ArtifactSkip::BadReference { .. })
    ));
    // The default exclusion list drops cosign signatures.
    let signature = pushed("ghcr.io/stefanprodan/podinfo", "sha256-abc.sig");
    assert!(matches!(
        verdict_of(&objects, &signature, "podinfo"),
        ArtifactVerdict::Skip(ArtifactSkip::ExcludedTag { .. })
    ));
    // An explicit list replaces the default.
    assert!(triggers(&verdict_of(&objects, &signature, "no-rc")));
    let hub = pushed("docker.io/stefanprodan/podinfo", "6.1.0");
    assert!(triggers(&verdict_of(&objects, &hub, "hub")));
}

#[test]
fn a_project_scope_triggers_every_source_under_the_project_but_digest_pins() {
    let objects = vec![
        oci(
            "manifests",
            "oci://registry.gitlab.example.com/team/app/manifests",
            json!({"tag": "production"}),
        ),
        oci(
            "root",
            "oci://registry.gitlab.example.com/team/app",
            json!({"semver": "1.x"}),
        ),
        oci(
            "pinned",
            "oci://registry.gitlab.example.com/team/app",
            json!({"digest": DIGEST}),
        ),
        oci(
            "sibling",
            "oci://registry.gitlab.example.com/team/application",
            json!(null),
        ),
        oci(
            "other-registry",
            "oci://registry.example.com/team/app",
            json!(null),
        ),
        object(
            ArtifactKind::ImageRepository,
            "image",
            json!({"image": "registry.gitlab.example.com/team/app/web"}),
        ),
        object(
            ArtifactKind::HelmRepository,
            "charts",
            json!({"type": "oci", "url": "oci://registry.gitlab.example.com/team/app/charts"}),
        ),
        object(
            ArtifactKind::HelmChart,
            "chart",
            json!({"chart": "app", "version": "99.x", "sourceRef": {"kind": "HelmRepository", "name": "charts"}}),
        ),
        object(
            ArtifactKind::HelmRepository,
            "team-charts",
            json!({"type": "oci", "url": "oci://registry.gitlab.example.com/team"}),
        ),
        object(
            ArtifactKind::HelmChart,
            "team-app",
            json!({"chart": "app", "sourceRef": {"kind": "HelmRepository", "name": "team-charts"}}),
        ),
        object(
            ArtifactKind::HelmChart,
            "team-other",
            json!({"chart": "other", "sourceRef": {"kind": "HelmRepository", "name": "team-charts"}}),
        ),
    ];
    let scope = project("registry.gitlab.example.com", "Team/App");
    for (name, expected) in [
        ("manifests", true),
        ("root", true),
        ("pinned", false),
        ("sibling", false),
        ("other-registry", false),
        ("image", true),
        ("charts", false),
        ("chart", true),
        ("team-charts", false),
        ("team-app", true),
        ("team-other", false),
    ] {
        let verdict = verdict_of(&objects, &scope, name);
        assert_eq!(triggers(&verdict), expected, "{name}: {verdict:?}");
    }
}

fn entry(value: Value) -> ClusterEntry {
    let mut base = json!({"name": "c", "server": "https://k.example", "auth": {"token": "t"}});
    for (key, field) in value.as_object().unwrap() {
        base[key] = field.clone();
    }
    ClusterEntry::from_value(&base).unwrap()
}

#[test]
fn scopes_come_from_the_event_and_the_entrys_subscriptions() {
    let delivery = Delivery {
        received_at: RECEIVED,
        id: "request:1",
    };
    let artifact = PushedArtifact::new(
        OciLocation::from_parts("harbor.internal:8443", "team/app").unwrap(),
        "v1",
        DIGEST,
        ("t", "d"),
    )
    .unwrap();
    let artifact_push = artifact.clone().into_push(&delivery);
    let mut pipeline = crate::push::tests::sample_push();
    pipeline.event = PushEvent::Pipeline;
    let mut tag_push = crate::push::tests::sample_push();
    tag_push.event = PushEvent::TagPush;
    tag_push.git_ref = "refs/tags/v1".into();
    let git_push = crate::push::tests::sample_push();

    let kinds = json!({"artifact_kinds": ["OCIRepository"], "registry_aliases": {"harbor.internal:8443": "harbor.example.com"}});
    let with_kinds = entry(json!({"trigger": kinds, "subscriptions": [
        {"on": "pipeline", "projects": ["mike/*"], "registry": "Registry.GitLab.example.com"},
        {"on": "pipeline", "projects": ["mike/**"], "registry": "registry.gitlab.example.com"},
        {"on": "tag_push", "projects": ["other/*"], "registry": "registry.gitlab.example.com"},
        {"registries": ["harbor.internal:8443"]},
        {"projects": ["**"]}
    ]}));
    let aliased = OciLocation::from_parts("harbor.example.com", "team/app").unwrap();
    assert_eq!(
        artifact_scopes(&with_kinds, &artifact_push),
        vec![ArtifactScope::Pushed(PushedArtifact {
            location: aliased,
            ..artifact
        })]
    );
    // Two subscriptions naming one location give one scope.
    assert_eq!(
        artifact_scopes(&with_kinds, &pipeline),
        vec![project("registry.gitlab.example.com", "mike/diaspora")]
    );
    // The tag-push subscription is for other projects.
    assert_eq!(artifact_scopes(&with_kinds, &tag_push), vec![]);
    assert_eq!(artifact_scopes(&with_kinds, &git_push), vec![]);
    // An entry that reads no artifact kinds has no scopes at all.
    let without_kinds = entry(json!({}));
    assert_eq!(artifact_scopes(&without_kinds, &artifact_push), vec![]);
}

#[test]
fn what_each_object_follows_reads_as_the_rules_decide() {
    for (object, expected) in [
        (
            oci(
                "a",
                "oci://r.example/a",
                json!({"digest": DIGEST, "tag": "v1"}),
            ),
            "oci://r.example/a (a pinned digest, so it is never triggered)",
        ),
        (
            oci(
                "a",
                "oci://r.example/a",
                json!({"semver": "1.x", "semverFilter": "^v", "tag": "v1"}),
            ),
            "oci://r.example/a (semver 1.x, tags matching ^v)",
        ),
        (
            oci("a", "oci://r.example/a", json!({"tag": "v1"})),
            "oci://r.example/a (tag v1)",
        ),
        (
            oci("a", "oci://r.example/a", json!(null)),
            "oci://r.example/a (tag latest)",
        ),
        (
            object(
                ArtifactKind::HelmRepository,
                "h",
                json!({"type": "oci", "url": "oci://r.example/c"}),
            ),
            "oci://r.example/c (type oci: never triggered itself",
        ),
        (
            object(
                ArtifactKind::HelmChart,
                "c",
                json!({"chart": "app", "sourceRef": {"kind": "HelmRepository", "name": "h"}}),
            ),
            "chart app version * from HelmRepository h",
        ),
        (
            object(
                ArtifactKind::HelmRelease,
                "r",
                json!({"chartRef": {"kind": "OCIRepository", "name": "o"}}),
            ),
            "spec.chartRef OCIRepository o",
        ),
        (
            object(
                ArtifactKind::ImageRepository,
                "i",
                json!({"image": "r.example/a"}),
            ),
            "r.example/a",
        ),
    ] {
        let text = follows(&object);
        assert!(text.starts_with(expected), "{text}");
    }
}
