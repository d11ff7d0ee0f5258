use serde_json::json;

use super::*;
use crate::registry::DEFAULT_RECEIVER_PROXY;

fn minimal() -> serde_json::Value {
    json!({"name": "prod-eu", "server": "https://k8s.example.com:6443", "auth": {"token": "kube-token-SECRET-1"}})
}

fn errors_of(value: serde_json::Value) -> Vec<String> {
    match ClusterEntry::from_value(&value) {
        Ok(entry) => panic!("expected errors, got {entry:?}"),
        Err(error) => error.errors.iter().map(ToString::to_string).collect(),
    }
}

fn with(mut value: serde_json::Value, key: &str, field: serde_json::Value) -> serde_json::Value {
    value[key] = field;
    value
}

#[test]
fn a_minimal_entry_gets_the_documented_defaults() {
    let entry = ClusterEntry::from_value(&minimal()).unwrap();
    assert_eq!(entry.name, "prod-eu");
    assert_eq!(entry.server.as_str(), "https://k8s.example.com:6443/");
    assert_eq!(entry.ca, None);
    assert!(
        matches!(&entry.credentials, Credentials::Token(t) if t.expose() == "kube-token-SECRET-1")
    );
    assert_eq!(entry.namespaces, vec!["flux-system".to_string()]);
    assert!(entry.host_aliases.is_empty());
    // Every Git push and every artifact push.
    assert_eq!(entry.subscriptions.len(), 2);
    assert!(entry.subscriptions.iter().all(|s| s.takes_everything()));
    assert_eq!(entry.trigger.mode, TriggerMode::Receiver);
    assert!(entry.trigger.artifact_kinds.is_empty());
    assert!(entry.trigger.registry_aliases.is_empty());
    assert_eq!(
        entry.trigger.receiver_endpoint,
        ReceiverEndpoint::ServiceProxy(DEFAULT_RECEIVER_PROXY.to_string())
    );
    assert!(entry.trigger.receiver_tokens.is_empty());
}

#[test]
fn a_full_entry_parses_every_field() {
    let entry = ClusterEntry::from_json(&json!({
        "name": "staging",
        "server": "https://127.0.0.1:6443",
        "ca": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "auth": {"client_cert": "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----", "client_key": "-----BEGIN PRIVATE KEY-----\nKEY-SECRET\n-----END PRIVATE KEY-----"},
        "namespaces": ["flux-system", "apps"],
        "host_aliases": {"SSH.gitlab.example.com": "gitlab.example.com"},
        "subscriptions": [{"projects": ["platform/**"], "refs": ["main", "refs/tags/v*"], "instances": ["gitlab.example.com"], "paths": ["clusters/staging/**"]}],
        "trigger": {"mode": "annotate", "webhook_receiver_url": "https://flux-webhook.example.com/", "receiver_tokens": {"flux-system/gitlab-receiver": "RECEIVER-SECRET"}}
    }).to_string()).unwrap();
    assert!(
        matches!(&entry.credentials, Credentials::ClientCertificate { key_pem, .. } if key_pem.expose().contains("KEY-SECRET"))
    );
    assert_eq!(entry.namespaces, vec!["flux-system", "apps"]);
    assert_eq!(
        entry
            .host_aliases
            .get("ssh.gitlab.example.com")
            .map(String::as_str),
        Some("gitlab.example.com")
    );
    assert_eq!(entry.subscriptions[0].instances, vec!["gitlab.example.com"]);
    assert!(entry.subscriptions[0].paths.is_some());
    assert_eq!(entry.trigger.mode, TriggerMode::Annotate);
    assert!(
        matches!(&entry.trigger.receiver_endpoint, ReceiverEndpoint::Absolute(u) if u.host_str() == Some("flux-webhook.example.com"))
    );
    let token = entry
        .trigger
        .receiver_tokens
        .get(&ObjectRef::new("flux-system", "gitlab-receiver"))
        .unwrap();
    assert_eq!(token.expose(), "RECEIVER-SECRET");
}

#[test]
fn every_error_is_reported_at_once_with_its_field_path() {
    let errors = errors_of(json!({
        "name": "bad name!",
        "server": "http://k8s.example.com",
        "auth": {"token": "t", "eks": {"cluster": "c", "region": "r"}},
        "namespaces": ["Flux_System"],
        "subscriptions": [],
        "trigger": {"mode": "poke", "webhook_receiver_url": "/api/v1/namespaces/flux-system/services/x/proxy/"},
        "subscription": []
    }));
    for expected in [
        "name: must be 1 to 63 characters",
        "server: must use https",
        "auth: has several kinds (token, eks)",
        "namespaces[0]: is not a Kubernetes namespace name",
        "subscriptions: matches nothing",
        "trigger.mode: must be \"receiver\" or \"annotate\"",
        "trigger.webhook_receiver_url: must be an absolute http(s) URL or a service-proxy path",
        "subscription: unknown field",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "missing {expected:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), 8, "{errors:#?}");
}

#[test]
fn server_rules() {
    for (server, fragment) in [
        (json!("http://k8s.example.com"), "must use https"),
        (json!("k8s.example.com"), "is not a URL"),
        (
            json!("https://user:pw@k8s.example.com"),
            "must not contain user info",
        ),
        (
            json!("https://k8s.example.com/?x=1"),
            "must not have a query",
        ),
        (json!(""), "must not be empty"),
        (json!(6443), "must be a string, found a number"),
    ] {
        let errors = errors_of(with(minimal(), "server", server.clone()));
        assert!(
            errors.iter().any(|e| e.contains(fragment)),
            "{server}: {errors:?}"
        );
    }
    let mut missing = minimal();
    missing.as_object_mut().unwrap().remove("server");
    assert_eq!(errors_of(missing), vec!["server: is required"]);
    // A path prefix (e.g. a Rancher cluster proxy) is allowed.
    assert!(
        ClusterEntry::from_value(&with(
            minimal(),
            "server",
            json!("https://rancher.example.com/k8s/clusters/c-1")
        ))
        .is_ok()
    );
}

#[test]
fn auth_is_exactly_one_kind() {
    let cert = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----";
    let key = "-----BEGIN EC PRIVATE KEY-----\nx\n-----END EC PRIVATE KEY-----";
    let ok: Vec<(serde_json::Value, &str)> = vec![
        (json!({"token": "t"}), "token"),
        (
            json!({"client_cert": cert, "client_key": key}),
            "client_cert",
        ),
        (
            json!({"eks": {"cluster": "prod", "region": "eu-west-1"}}),
            "eks",
        ),
    ];
    for (auth, kind) in ok {
        let entry = ClusterEntry::from_value(&with(minimal(), "auth", auth)).unwrap();
        assert_eq!(entry.credentials.kind(), kind);
    }
    let bad: Vec<(serde_json::Value, &str)> = vec![
        (json!({}), "auth: must have exactly one kind"),
        (
            json!({"token": "t", "client_cert": cert, "client_key": key}),
            "auth: has several kinds (token, client_cert)",
        ),
        (json!({"client_cert": cert}), "auth.client_key: is required"),
        (json!({"client_key": key}), "auth.client_cert: is required"),
        (
            json!({"client_cert": "not pem", "client_key": key}),
            "auth.client_cert: must be a PEM certificate",
        ),
        (
            json!({"client_cert": cert, "client_key": "not pem"}),
            "auth.client_key: must be a PEM private key",
        ),
        (
            json!({"eks": {"cluster": "prod"}}),
            "auth.eks.region: is required",
        ),
        (json!({"eks": "prod"}), "auth.eks: must be an object"),
        (json!({"token": ""}), "auth.token: must not be empty"),
        (json!({"token": 5}), "auth.token: must be a string"),
        (json!({"password": "x"}), "auth.password: unknown field"),
        (json!("token"), "auth: must be an object"),
    ];
    for (auth, expected) in bad {
        let errors = errors_of(with(minimal(), "auth", auth.clone()));
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "{auth}: {errors:?}"
        );
    }
}

#[test]
fn kubeconfig_replaces_auth() {
    let mut entry = minimal();
    entry.as_object_mut().unwrap().remove("auth");
    entry["kubeconfig"] = json!("apiVersion: v1\nkind: Config\n");
    entry["context"] = json!("prod");
    let parsed = ClusterEntry::from_value(&entry).unwrap();
    assert!(
        matches!(&parsed.credentials, Credentials::Kubeconfig { context: Some(c), .. } if c == "prod")
    );

    let both = with(minimal(), "kubeconfig", json!("apiVersion: v1"));
    assert!(
        errors_of(both)
            .iter()
            .any(|e| e.starts_with("auth: give either auth or kubeconfig"))
    );
    let context_alone = with(minimal(), "context", json!("prod"));
    assert_eq!(
        errors_of(context_alone),
        vec!["context: only applies with kubeconfig"]
    );
    let mut neither = minimal();
    neither.as_object_mut().unwrap().remove("auth");
    assert!(errors_of(neither)[0].starts_with("auth: is required"));
}

#[test]
fn receiver_endpoint_rules() {
    let proxy = |s: &str| Some(ReceiverEndpoint::ServiceProxy(s.to_string()));
    let cases: Vec<(&str, bool)> = vec![
        (
            "/api/v1/namespaces/flux-system/services/http:webhook-receiver:80/proxy",
            true,
        ),
        (
            "/api/v1/namespaces/flux/services/webhook-receiver:http/proxy",
            true,
        ),
        ("https://flux.example.com/", true),
        ("http://flux.example.com:9292", true),
        ("https://flux.example.com/base/path", true),
        (
            "/api/v1/namespaces/flux-system/services/http:webhook-receiver:80/proxy/",
            false,
        ),
        (
            "/api/v1/namespaces/flux-system/services/http:webhook-receiver:80",
            false,
        ),
        ("/api/v1/namespaces//services/x/proxy", false),
        ("/api/v1/namespaces/a/b/services/x/proxy", false),
        ("/api/v1/namespaces/a/services/x/proxy?x=1", false),
        ("/api/v1/namespaces/a/services/%2e%2e/proxy", false),
        ("/api/v1/namespaces/flux system/services/x/proxy", false),
        ("/apis/v1/namespaces/a/services/x/proxy", false),
        ("api/v1/namespaces/a/services/x/proxy", false),
        ("ftp://flux.example.com/", false),
        ("https://user:pw@flux.example.com/", false),
        ("https://flux.example.com/?token=x", false),
        ("", false),
    ];
    for (text, valid) in cases {
        let endpoint = receiver_endpoint(text);
        assert_eq!(endpoint.is_some(), valid, "{text:?} → {endpoint:?}");
        if valid && text.starts_with('/') {
            assert_eq!(endpoint, proxy(text));
        }
    }
}

#[test]
fn receiver_token_keys_are_namespace_slash_name() {
    let trigger =
        |tokens: serde_json::Value| with(minimal(), "trigger", json!({"receiver_tokens": tokens}));
    let entry =
        ClusterEntry::from_value(&trigger(json!({"apps/r1": "a", "flux-system/r2": "b"}))).unwrap();
    assert_eq!(entry.trigger.receiver_tokens.len(), 2);
    for key in ["r1", "/r1", "apps/", "Apps/r1", "a/b/c"] {
        let errors = errors_of(trigger(json!({key: "tok"})));
        assert!(
            errors[0].contains("key must be \"namespace/name\""),
            "{key}: {errors:?}"
        );
    }
    // Token and name swapped: the key is refused without being shown.
    let swapped = errors_of(trigger(json!({"swapped-TOKEN-3f9a": "apps/r1"})));
    assert!(
        swapped[0].contains("key must be \"namespace/name\""),
        "{swapped:?}"
    );
    assert!(
        !swapped.concat().contains("swapped-TOKEN-3f9a"),
        "{swapped:?}"
    );
    assert!(errors_of(trigger(json!({"apps/r1": 1})))[0].contains("must be a string"));
    assert!(errors_of(trigger(json!(["apps/r1"])))[0].contains("must be an object"));
}

#[test]
fn subscription_fields_are_checked() {
    let sub = |s: serde_json::Value| with(minimal(), "subscriptions", json!([s]));
    for (subscription, expected) in [
        (
            json!({"projects": []}),
            "subscriptions[0].projects: must not be empty",
        ),
        (
            json!({"projects": ["a/[b"]}),
            "subscriptions[0].projects: invalid glob",
        ),
        (
            json!({"refs": [""]}),
            "subscriptions[0].refs[0]: must not be empty",
        ),
        (
            json!({"paths": "apps/**"}),
            "subscriptions[0].paths: must be an array",
        ),
        (
            json!({"instances": [1]}),
            "subscriptions[0].instances[0]: must be a string",
        ),
        (
            json!({"branch": ["main"]}),
            "subscriptions[0].branch: unknown field",
        ),
        (json!("all"), "subscriptions[0]: must be an object"),
    ] {
        let errors = errors_of(sub(subscription.clone()));
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "{subscription}: {errors:?}"
        );
    }
}

#[test]
fn host_aliases_are_bare_hosts() {
    let aliases = |a: serde_json::Value| with(minimal(), "host_aliases", a);
    assert!(
        errors_of(aliases(json!({"ssh.example.com": "https://example.com"})))[0]
            .contains("bare host")
    );
    assert!(errors_of(aliases(json!({"ssh.example.com": 1})))[0].contains("must be a string"));
    assert!(errors_of(aliases(json!(["x"])))[0].contains("must be an object"));
}

#[test]
fn not_an_object_or_not_json() {
    assert_eq!(errors_of(json!([])), vec!["(entry): must be a JSON object"]);
    let error =
        ClusterEntry::from_json("{\"name\": \"x\", \"auth\": {\"token\": \"SECRET-IN-BROKEN-JSON")
            .unwrap_err();
    assert!(error.to_string().contains("not valid JSON"));
    assert!(!error.to_string().contains("SECRET-IN-BROKEN-JSON"));
}

#[test]
fn secrets_never_appear_in_debug_or_errors() {
    let secrets = [
        "kube-token-SECRET-1",
        "KEY-SECRET",
        "KUBECONFIG-SECRET",
        "RECEIVER-SECRET",
    ];
    let token_entry = ClusterEntry::from_value(&with(
        minimal(),
        "trigger",
        json!({"receiver_tokens": {"flux-system/r": "RECEIVER-SECRET"}}),
    ))
    .unwrap();
    let cert_entry = ClusterEntry::from_value(&with(
        minimal(),
        "auth",
        json!({
        "client_cert": "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----",
        "client_key": "-----BEGIN PRIVATE KEY-----\nKEY-SECRET\n-----END PRIVATE KEY-----"}),
    ))
    .unwrap();
    let mut kubeconfig = minimal();
    kubeconfig.as_object_mut().unwrap().remove("auth");
    kubeconfig["kubeconfig"] = json!("users: [{token: KUBECONFIG-SECRET}]");
    let kubeconfig_entry = ClusterEntry::from_value(&kubeconfig).unwrap();
    let dumps = format!("{token_entry:?}{cert_entry:?}{kubeconfig_entry:?}");
    // Errors from entries that carry secrets in the wrong places.
    let broken = [
        json!({"name": "x", "server": "http://a", "auth": {"token": "kube-token-SECRET-1", "eks": {}}}),
        json!({"name": "x", "server": "https://a", "auth": {"token": "kube-token-SECRET-1"}, "kubeconfig": "KUBECONFIG-SECRET"}),
        json!({"name": "x", "server": "https://a", "auth": {"client_cert": "KEY-SECRET", "client_key": "KEY-SECRET"}}),
        json!({"name": "x", "server": "https://a", "auth": {"token": "t"}, "trigger": {"receiver_tokens": {"bad key": "RECEIVER-SECRET"}}}),
    ];
    let errors: String = broken
        .iter()
        .map(|b| ClusterEntry::from_value(b).unwrap_err().to_string())
        .collect();
    for secret in secrets {
        assert!(!dumps.contains(secret), "{secret} in Debug");
        assert!(!errors.contains(secret), "{secret} in {errors}");
    }
}

#[test]
fn confirmation_is_off_unless_the_entry_turns_it_on() {
    use crate::registry::ConfirmOptions;
    let parse = |confirm: Option<serde_json::Value>| {
        let entry = match confirm {
            Some(value) => with(minimal(), "confirm", value),
            None => minimal(),
        };
        ClusterEntry::from_value(&entry).map(|entry| entry.confirm)
    };
    assert_eq!(parse(None).unwrap(), None);
    assert_eq!(parse(Some(json!(false))).unwrap(), None);
    assert_eq!(
        parse(Some(json!(true))).unwrap(),
        Some(ConfirmOptions::default())
    );
    assert_eq!(
        parse(Some(json!({"helm_releases": false}))).unwrap(),
        Some(ConfirmOptions {
            helm_releases: false
        })
    );
    assert_eq!(
        parse(Some(json!({}))).unwrap(),
        Some(ConfirmOptions::default())
    );
    for (bad, path) in [
        (json!("yes"), "confirm"),
        (json!(1), "confirm"),
        (json!({"helm_releases": "no"}), "confirm.helm_releases"),
        (json!({"kustomizations": false}), "confirm.kustomizations"),
    ] {
        let error = parse(Some(bad.clone())).unwrap_err();
        assert!(
            error.errors.iter().any(|e| e.path == path),
            "{bad}: {error}"
        );
    }
}

#[test]
fn registry_and_project_artifact_subscriptions_parse_and_are_checked() {
    use crate::subscriptions::{ProjectEvent, Takes};
    let entry = ClusterEntry::from_value(&with(
        minimal(),
        "subscriptions",
        json!([
            {"registries": ["Harbor.Example.com:8443"], "repositories": ["team/**"], "tags": ["v*"]},
            {"on": "pipeline", "projects": ["team/app"], "refs": ["main"], "registry": "registry.gitlab.example.com"},
            {"on": "tag_push", "projects": ["team/app"], "registry": "registry.gitlab.example.com:5050"},
            {"on": "push", "projects": ["team/app"]},
        ]),
    ))
    .unwrap();
    assert!(matches!(
        entry.subscriptions[0].takes,
        Takes::ArtifactPushes { .. }
    ));
    assert_eq!(
        entry.subscriptions[0].instances,
        vec!["Harbor.Example.com:8443"]
    );
    assert!(matches!(
        &entry.subscriptions[1].takes,
        Takes::ProjectArtifacts { on: ProjectEvent::Pipeline, registry } if registry == "registry.gitlab.example.com"
    ));
    assert!(matches!(
        &entry.subscriptions[2].takes,
        Takes::ProjectArtifacts { on: ProjectEvent::TagPush, registry } if registry == "registry.gitlab.example.com:5050"
    ));
    assert!(matches!(entry.subscriptions[3].takes, Takes::GitPushes));

    let sub = |s: serde_json::Value| with(minimal(), "subscriptions", json!([s]));
    for (subscription, expected) in [
        (
            json!({"registries": ["r.example"], "projects": ["a"]}),
            "subscriptions[0]: mixes a registry subscription",
        ),
        (
            json!({"tags": ["v*"], "on": "pipeline"}),
            "subscriptions[0]: mixes",
        ),
        (
            json!({"registries": ["https://r.example"]}),
            "subscriptions[0].registries[0]: must be a registry host",
        ),
        (
            json!({"registries": []}),
            "subscriptions[0].registries: must not be empty",
        ),
        (
            json!({"tags": ["[v"]}),
            "subscriptions[0].tags: invalid glob",
        ),
        (
            json!({"repositories": "team/*"}),
            "subscriptions[0].repositories: must be an array",
        ),
        (
            json!({"on": "pipeline", "projects": ["a"]}),
            "subscriptions[0].registry: is required",
        ),
        (
            json!({"on": "pipeline", "registry": "r.example/x"}),
            "subscriptions[0].registry: must be a registry host",
        ),
        (
            json!({"on": "merge_request"}),
            "subscriptions[0].on: must be",
        ),
        (json!({"on": 1}), "subscriptions[0].on: must be a string"),
        (
            json!({"registry": "r.example"}),
            "subscriptions[0].registry: only applies with on: pipeline",
        ),
        (
            json!({"on": "pipeline", "registry": "r.example", "paths": ["a/**"]}),
            "subscriptions[0].paths: only applies to Git pushes",
        ),
    ] {
        let errors = errors_of(sub(subscription.clone()));
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "{subscription}: {errors:?}"
        );
    }
}

#[test]
fn artifact_kinds_and_registry_aliases_parse_and_are_checked() {
    use crate::flux::artifacts::ArtifactKind;
    let trigger = |t: serde_json::Value| with(minimal(), "trigger", t);
    let entry = ClusterEntry::from_value(&trigger(json!({
        "artifact_kinds": ["OCIRepository", "HelmRepository", "HelmChart", "ImageRepository", "OCIRepository"],
        "registry_aliases": {"Harbor.Internal:8443": "harbor.example.com", "docker.io": "mirror.example:5000"}
    })))
    .unwrap();
    assert_eq!(
        entry
            .trigger
            .artifact_kinds
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        vec![
            ArtifactKind::OciRepository,
            ArtifactKind::HelmRepository,
            ArtifactKind::HelmChart,
            ArtifactKind::ImageRepository
        ]
    );
    assert_eq!(
        entry
            .trigger
            .registry_aliases
            .get("harbor.internal:8443")
            .map(String::as_str),
        Some("harbor.example.com")
    );
    // Docker Hub's names are one registry, on both sides.
    assert_eq!(
        entry
            .trigger
            .registry_aliases
            .get("index.docker.io")
            .map(String::as_str),
        Some("mirror.example:5000")
    );
    for (value, expected) in [
        (
            json!({"artifact_kinds": "OCIRepository"}),
            "trigger.artifact_kinds: must be an array",
        ),
        (
            json!({"artifact_kinds": ["ocirepository"]}),
            "trigger.artifact_kinds[0]: must be one of",
        ),
        (
            json!({"artifact_kinds": ["GitRepository"]}),
            "trigger.artifact_kinds[0]: must be one of",
        ),
        (
            json!({"artifact_kinds": [""]}),
            "trigger.artifact_kinds[0]: must not be empty",
        ),
        (
            json!({"artifact_kinds": ["HelmRepository"]}),
            "trigger.artifact_kinds: HelmRepository goes with",
        ),
        (
            json!({"artifact_kinds": ["HelmRelease"]}),
            "trigger.artifact_kinds: HelmRepository goes with",
        ),
        (
            json!({"registry_aliases": ["a"]}),
            "trigger.registry_aliases: must be an object",
        ),
        (
            json!({"registry_aliases": {"a b": "c.example"}}),
            "trigger.registry_aliases.a b: must map",
        ),
        (
            json!({"registry_aliases": {"a.example": "https://c.example"}}),
            "trigger.registry_aliases.a.example: must map",
        ),
        (
            json!({"registry_aliases": {"a.example": 5}}),
            "trigger.registry_aliases.a.example: must be a string",
        ),
    ] {
        let errors = errors_of(trigger(value.clone()));
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "{value}: {errors:?}"
        );
    }
}
