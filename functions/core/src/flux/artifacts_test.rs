use serde_json::json;

use super::*;

#[test]
fn kinds_name_their_api_and_paths() {
    for (kind, name, api, plural) in [
        (
            ArtifactKind::OciRepository,
            "OCIRepository",
            "source.toolkit.fluxcd.io/v1",
            "ocirepositories",
        ),
        (
            ArtifactKind::HelmRepository,
            "HelmRepository",
            "source.toolkit.fluxcd.io/v1",
            "helmrepositories",
        ),
        (
            ArtifactKind::HelmChart,
            "HelmChart",
            "source.toolkit.fluxcd.io/v1",
            "helmcharts",
        ),
        (
            ArtifactKind::HelmRelease,
            "HelmRelease",
            "helm.toolkit.fluxcd.io/v2",
            "helmreleases",
        ),
        (
            ArtifactKind::ImageRepository,
            "ImageRepository",
            "image.toolkit.fluxcd.io/v1",
            "imagerepositories",
        ),
    ] {
        assert_eq!(kind.kind(), name);
        assert_eq!(format!("{}/{}", kind.group(), kind.version()), api);
        assert_eq!(kind.plural(), plural);
        assert_eq!(ArtifactKind::parse(name), Some(kind));
        assert_eq!(
            kind.object_path(&ObjectRef::new("apps", "x")),
            format!("/apis/{api}/namespaces/apps/{plural}/x")
        );
    }
    for other in [
        "ocirepository",
        "OciRepository",
        "GitRepository",
        "",
        "Kustomization",
    ] {
        assert_eq!(ArtifactKind::parse(other), None, "{other}");
    }
}

#[test]
fn reads_each_kind_as_the_apiserver_returns_it() {
    let oci = ArtifactObject::from_json(
        ArtifactKind::OciRepository,
        &json!({"metadata": {"name": "podinfo", "namespace": "flux-system", "labels": {"a": "b"}},
                "spec": {"url": "oci://ghcr.io/stefanprodan/manifests/podinfo",
                         "ref": {"semver": ">=6.0.0", "semverFilter": ".*-rc.*", "tag": "latest"},
                         "suspend": true},
                "status": {"artifact": {"revision": "6.1.6@sha256:abc"}}}),
    );
    assert_eq!(oci.object(), "ocirepository/flux-system/podinfo");
    assert!(oci.suspend);
    assert_eq!(oci.labels.get("a").map(String::as_str), Some("b"));
    assert_eq!(oci.artifact_revision.as_deref(), Some("6.1.6@sha256:abc"));
    assert_eq!(
        oci.spec,
        ArtifactSpec::OciRepository {
            url: Some("oci://ghcr.io/stefanprodan/manifests/podinfo".into()),
            reference: OciReference {
                digest: None,
                semver: Some(">=6.0.0".into()),
                semver_filter: Some(".*-rc.*".into()),
                tag: Some("latest".into()),
            },
        }
    );
    let helm_repository = ArtifactObject::from_json(
        ArtifactKind::HelmRepository,
        &json!({"spec": {"type": "oci", "url": "oci://ghcr.io/stefanprodan/charts"}}),
    );
    assert_eq!(
        helm_repository.spec,
        ArtifactSpec::HelmRepository {
            url: Some("oci://ghcr.io/stefanprodan/charts".into()),
            oci: true
        }
    );
    let chart = ArtifactObject::from_json(
        ArtifactKind::HelmChart,
        &json!({"spec": {"chart": "podinfo", "version": "6.x",
                         "sourceRef": {"kind": "HelmRepository", "name": "podinfo"}}}),
    );
    assert_eq!(
        chart.spec,
        ArtifactSpec::HelmChart {
            chart: Some("podinfo".into()),
            version: Some("6.x".into()),
            source: Some(SourceReference {
                kind: "HelmRepository".into(),
                name: "podinfo".into(),
                namespace: None
            }),
        }
    );
    let release = ArtifactObject::from_json(
        ArtifactKind::HelmRelease,
        &json!({"spec": {"chart": {"spec": {"chart": "podinfo", "version": ">=6",
                          "sourceRef": {"kind": "HelmRepository", "name": "podinfo", "namespace": "flux-system"}}}}}),
    );
    assert!(matches!(
        release.spec,
        ArtifactSpec::HelmRelease {
            chart: Some(_),
            chart_ref: None,
            source: Some(SourceReference {
                namespace: Some(_),
                ..
            }),
            ..
        }
    ));
    let image = ArtifactObject::from_json(
        ArtifactKind::ImageRepository,
        &json!({"spec": {"image": "ghcr.io/a/b", "exclusionList": ["^x$", 5]}}),
    );
    assert_eq!(
        image.spec,
        ArtifactSpec::ImageRepository {
            image: Some("ghcr.io/a/b".into()),
            exclusions: Some(vec!["^x$".into()])
        }
    );
}

#[test]
fn missing_or_mistyped_fields_are_absent_not_errors() {
    for value in [
        json!(null),
        json!([]),
        json!({"spec": {"url": 5, "ref": "x", "type": 1, "sourceRef": "y", "chart": 3, "exclusionList": "z"}}),
    ] {
        for kind in ArtifactKind::ALL {
            let object = ArtifactObject::from_json(kind, &value);
            assert!(!object.suspend);
            match object.spec {
                ArtifactSpec::OciRepository { url, reference } => {
                    assert_eq!(url, None);
                    assert_eq!(reference, OciReference::default());
                }
                ArtifactSpec::HelmRepository { url, oci } => assert!(url.is_none() && !oci),
                ArtifactSpec::HelmChart { chart, source, .. } => {
                    assert!(chart.is_none() && source.is_none())
                }
                ArtifactSpec::HelmRelease {
                    chart,
                    source,
                    chart_ref,
                    ..
                } => {
                    assert!(chart.is_none() && source.is_none() && chart_ref.is_none())
                }
                ArtifactSpec::ImageRepository { image, exclusions } => {
                    assert!(image.is_none() && exclusions.is_none())
                }
            }
        }
    }
}
