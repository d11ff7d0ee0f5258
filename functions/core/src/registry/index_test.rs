use serde_json::{Value, json};

use super::*;
use crate::registry::Credentials;

const TOKEN: &str = "kube-token-SECRET-9";
const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

fn eks(name: &str) -> Value {
    json!({"name": name, "server": "https://ABC.gr7.eu-west-1.eks.amazonaws.com", "ca": CA,
           "auth": {"eks": {"cluster": name, "region": "eu-west-1"}},
           "subscriptions": [{"projects": ["platform/**"]}]})
}

fn pointer(name: &str) -> Value {
    json!({"name": name, "secret": true, "subscriptions": [{"refs": ["main"]}]})
}

fn index(items: Vec<Value>) -> RegistryIndex {
    RegistryIndex::from_json(&json!({ "clusters": items }).to_string()).unwrap()
}

fn kind(entry: Option<&IndexedEntry>) -> String {
    match entry {
        None => "absent".into(),
        Some(IndexedEntry::Secret) => "secret".into(),
        Some(IndexedEntry::Inline(entry)) => format!("inline {}", entry.credentials.kind()),
        Some(IndexedEntry::Invalid(error)) => format!("invalid: {error}"),
    }
}

/// (case, items, the cluster asked for, what the index says of it (prefix), routed names,
/// unusable names)
type Case = (
    &'static str,
    Vec<Value>,
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
);

#[test]
fn each_item_is_a_pointer_or_a_whole_entry_without_a_secret() {
    let with_token = json!({"name": "leak", "server": "https://k.example.com", "auth": {"token": TOKEN},
                            "subscriptions": [{"refs": ["main"]}]});
    let mut with_receiver_token = eks("hmac");
    with_receiver_token["trigger"] = json!({"receiver_tokens": {"flux-system/r": TOKEN}});
    let cases: Vec<Case> = vec![
        (
            "a pointer",
            vec![pointer("prod")],
            "prod",
            "secret",
            &["prod"],
            &[],
        ),
        (
            "a pointer with no subscriptions takes every push",
            vec![json!({"name": "all", "secret": true})],
            "all",
            "secret",
            &["all"],
            &[],
        ),
        (
            "an EKS entry inline",
            vec![eks("eks-1")],
            "eks-1",
            "inline eks",
            &["eks-1"],
            &[],
        ),
        (
            "order kept",
            vec![pointer("b"), eks("a")],
            "a",
            "inline eks",
            &["b", "a"],
            &[],
        ),
        (
            "an entry with a token is refused, but still routed by its subscriptions",
            vec![with_token],
            "leak",
            "invalid: invalid cluster registry entry: auth.token: holds a secret",
            &["leak"],
            &[],
        ),
        (
            "an EKS entry with a Receiver token is refused",
            vec![with_receiver_token],
            "hmac",
            "invalid: invalid cluster registry entry: trigger.receiver_tokens: holds a secret",
            &["hmac"],
            &[],
        ),
        (
            "a pointer may not say where the cluster is",
            vec![json!({"name": "p", "secret": true, "server": "https://evil.example.com"})],
            "p",
            "invalid: invalid cluster registry entry: server: does not belong",
            &["p"],
            &[],
        ),
        (
            "secret must be true",
            vec![json!({"name": "p", "secret": "yes"})],
            "p",
            "invalid: invalid cluster registry entry: secret: must be true",
            &["p"],
            &[],
        ),
        (
            "an inline entry that does not validate is routed, and dispatch dead-letters it",
            vec![
                json!({"name": "half", "server": "http://k.example.com", "auth": {"eks": {"cluster": "c", "region": "r"}}}),
            ],
            "half",
            "invalid: invalid cluster registry entry: server: must use https",
            &["half"],
            &[],
        ),
        (
            "unknown subscriptions make the cluster unusable",
            vec![
                pointer("ok"),
                json!({"name": "bad", "secret": true, "subscriptions": [{"refs": []}]}),
            ],
            "bad",
            "invalid",
            &["ok"],
            &["bad"],
        ),
        (
            "a name listed twice: neither is used",
            vec![pointer("twice"), eks("twice"), pointer("ok")],
            "twice",
            "invalid: invalid cluster registry entry: name: `twice` is listed more than once (clusters[0], clusters[1])",
            &["ok"],
            &["twice"],
        ),
        (
            "no usable name: a name from the position",
            vec![json!({"name": "no spaces allowed", "secret": true})],
            "index-0",
            "invalid: invalid cluster registry entry: name:",
            &["index-0"],
            &[],
        ),
        (
            "not an object",
            vec![json!("prod")],
            "index-0",
            "invalid",
            &[],
            &["index-0"],
        ),
        (
            "a name not listed",
            vec![pointer("prod")],
            "staging",
            "absent",
            &["prod"],
            &[],
        ),
        ("empty", vec![], "prod", "absent", &[], &[]),
    ];
    for (case, items, asked, expected, routed, unusable) in cases {
        let index = index(items);
        let said = kind(index.entries.get(asked));
        assert!(said.starts_with(expected), "{case}: {said}");
        assert!(
            !said.contains(TOKEN),
            "{case}: a secret in an error: {said}"
        );
        let names: Vec<&str> = index
            .routes
            .routes
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, routed, "{case}");
        assert_eq!(index.routes.unusable, unusable, "{case}");
    }
}

#[test]
fn the_subscriptions_route_reads_are_the_index_items() {
    let index = index(vec![pointer("prod"), eks("eks-1")]);
    let prod = &index.routes.routes[0];
    assert_eq!(prod.subscriptions.len(), 1);
    assert!(prod.subscriptions[0].refs.is_match("refs/heads/main"));
    assert!(!prod.subscriptions[0].refs.is_match("refs/heads/dev"));
    let Some(IndexedEntry::Inline(entry)) = index.entries.get("eks-1") else {
        panic!("eks-1 should be inline");
    };
    assert!(
        matches!(&entry.credentials, Credentials::Eks { cluster, region } if cluster == "eks-1" && region == "eu-west-1")
    );
}

#[test]
fn a_document_that_is_not_an_index_is_refused_whole() {
    for (case, text, expected) in [
        ("not JSON", "{", "(index): not valid JSON"),
        ("not an object", "[]", "(index): must be a JSON object"),
        ("no list", r#"{"clusters": {}}"#, "clusters: must be a list"),
        ("no clusters at all", "{}", "clusters: must be a list"),
        (
            "an unknown field",
            r#"{"clusters": [], "version": 2}"#,
            "version: unknown field",
        ),
        ("empty text", "", "(index): not valid JSON"),
    ] {
        let error = RegistryIndex::from_json(text).unwrap_err().to_string();
        assert!(error.contains(expected), "{case}: {error}");
    }
}

#[test]
fn an_entry_becomes_a_pointer_exactly_when_it_holds_a_secret() {
    let token = json!({"name": "t", "server": "https://k", "auth": {"token": TOKEN}, "namespaces": ["a"],
                       "subscriptions": [{"refs": ["main"]}]});
    let item = index_item(&token);
    assert_eq!(
        item,
        json!({"name": "t", "secret": true, "subscriptions": [{"refs": ["main"]}]})
    );
    assert!(!item.to_string().contains(TOKEN));
    let cert = json!({"name": "c", "server": "https://k", "auth": {"client_cert": "C", "client_key": "K"}});
    assert_eq!(index_item(&cert), json!({"name": "c", "secret": true}));
    let kubeconfig = json!({"name": "k", "server": "https://k", "kubeconfig": "apiVersion: v1"});
    assert!(holds_secret(&kubeconfig));
    assert!(!holds_secret(&eks("e")));
    assert_eq!(index_item(&eks("e")), eks("e"));
}

#[test]
fn with_item_adds_or_replaces_by_name_and_keeps_the_rest() {
    let first = with_item(None, pointer("a")).unwrap();
    let second = with_item(Some(&first), eks("b")).unwrap();
    let replaced = with_item(Some(&second), eks("a")).unwrap();
    let index = RegistryIndex::from_json(&replaced).unwrap();
    let names: Vec<&str> = index
        .routes
        .routes
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert!(matches!(
        index.entries.get("a"),
        Some(IndexedEntry::Inline(_))
    ));
    assert!(with_item(Some("not json"), pointer("a")).is_err());
}
