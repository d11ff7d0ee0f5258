#![allow(clippy::unwrap_used)]

use base64::Engine as _;

use super::*;

const CA: &str = include_str!("testdata/ca.pem");
const CLIENT: &str = include_str!("testdata/client.pem");
const CLIENT_SEC1: &str = include_str!("testdata/client-sec1.key");

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A kubeconfig with two contexts (`a`, current, and `b`) over two clusters, `a`'s user
/// given by `user` (YAML lines, indented under `user:`) and `a`'s cluster extra fields by
/// `cluster`.
fn document(cluster: &str, user: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: ca
  cluster:
    server: https://10.0.0.1:6443
    certificate-authority-data: {ca}
{cluster}- name: cb
  cluster:
    server: https://10.0.0.2:6443
users:
- name: ua
  user:
{user}- name: ub
  user:
    token: token-of-b
contexts:
- name: a
  context: {{cluster: ca, user: ua, namespace: flux-system}}
- name: b
  context: {{cluster: cb, user: ub}}
current-context: a
",
        ca = b64(CA)
    )
}

fn authorization(selected: &Selected) -> Option<String> {
    selected
        .config
        .headers()
        .iter()
        .find(|(name, _)| name == "authorization")
        .map(|(_, value)| value.to_str().unwrap().to_string())
}

#[test]
fn the_current_context_unless_one_is_named() {
    let text = document("", "    token: token-of-a\n");
    let current = select(&text, None).unwrap();
    assert_eq!(current.context, "a");
    assert_eq!(current.server, "https://10.0.0.1:6443");
    assert_eq!(authorization(&current).unwrap(), "Bearer token-of-a");
    assert_eq!(current.config.namespace(), "flux-system");

    let named = select(&text, Some("b")).unwrap();
    assert_eq!(named.server, "https://10.0.0.2:6443");
    assert_eq!(authorization(&named).unwrap(), "Bearer token-of-b");
    assert_eq!(named.config.namespace(), "default");
}

/// kubectl's choice of context, pinned as a table: what `select_names` answers is what
/// `select` (dispatch) uses, so the CLI and dispatch cannot disagree on it.
#[test]
fn which_context_a_kubeconfig_selects() {
    let text = document("", "    token: token-of-a\n");
    let names = |context: &str, user: Option<&str>, cluster: &str| ContextNames {
        context: context.into(),
        cluster: cluster.into(),
        user: user.map(str::to_string),
    };
    let without_user = text.replace("context: {cluster: cb, user: ub}", "context: {cluster: cb}");
    let cases: [(String, Option<&str>, Result<ContextNames, KubeconfigError>); 9] = [
        (text.clone(), None, Ok(names("a", Some("ua"), "ca"))),
        (text.clone(), Some("b"), Ok(names("b", Some("ub"), "cb"))),
        // An empty name is no name, given or current, as to kubectl.
        (text.clone(), Some(""), Ok(names("a", Some("ua"), "ca"))),
        (without_user.clone(), Some("b"), Ok(names("b", None, "cb"))),
        // Negative cases.
        (
            text.replace("current-context: a\n", "current-context: \"\"\n"),
            None,
            Err(KubeconfigError::NoContext),
        ),
        (
            text.replace("current-context: a\n", ""),
            Some(""),
            Err(KubeconfigError::NoContext),
        ),
        (
            text.clone(),
            Some("c"),
            Err(KubeconfigError::UnknownContext("c".into())),
        ),
        // Names are matched exactly.
        (
            text.clone(),
            Some("A"),
            Err(KubeconfigError::UnknownContext("A".into())),
        ),
        ("{not: [yaml".into(), None, Err(KubeconfigError::Unparsable)),
    ];
    for (text, context, expected) in cases {
        assert_eq!(
            select_names(&text, context),
            expected,
            "{context:?} in {text}"
        );
        let selected = select(&text, context).map(|selected| selected.context);
        match &expected {
            Ok(names) if names.user.is_some() => {
                assert_eq!(selected.unwrap(), names.context, "{context:?}")
            }
            Ok(_) => assert_eq!(
                selected.err(),
                None,
                "a context without a user gives a client without credentials"
            ),
            Err(error) => assert_eq!(selected.err().as_ref(), Some(error), "{context:?}"),
        }
    }
}

#[test]
fn basic_credentials_come_before_a_token_as_in_kube_and_client_go() {
    let text = document(
        "",
        "    token: token-of-a\n    username: alice\n    password: pw\n",
    );
    assert_eq!(
        authorization(&select(&text, None).unwrap()).unwrap(),
        format!("Basic {}", b64("alice:pw"))
    );
    // A user name without a password is not Basic: the token is used.
    let text = document("", "    token: token-of-a\n    username: alice\n");
    assert_eq!(
        authorization(&select(&text, None).unwrap()).unwrap(),
        "Bearer token-of-a"
    );
}

#[test]
fn inline_client_certificates_tls_server_names_and_impersonation_are_used() {
    let user = format!(
        "    client-certificate-data: {}\n    client-key-data: {}\n    as: relay\n    as-groups: [ops]\n",
        b64(CLIENT),
        b64(CLIENT_SEC1)
    );
    let text = document("    tls-server-name: kubernetes.default.svc\n", &user);
    let selected = select(&text, None).unwrap();
    assert_eq!(authorization(&selected), None);
    assert!(selected.config.has_identity());
    assert!(selected.config.tls_server_name_override().is_some());
    let impersonated: Vec<_> = selected
        .config
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str(), value.to_str().unwrap()))
        .collect();
    assert_eq!(
        impersonated,
        [("impersonate-user", "relay"), ("impersonate-group", "ops")]
    );
    selected.config.rustls_client_config().unwrap();
}

#[test]
fn what_a_registry_entry_may_not_hold_is_refused_before_anything_is_sent() {
    let certificate = format!("    client-certificate-data: {}\n", b64(CLIENT));
    let key = format!("    client-key-data: {}\n", b64(CLIENT_SEC1));
    let cases: Vec<(String, KubeconfigError)> = vec![
        (
            document(
                "",
                "    exec: {command: aws, apiVersion: client.authentication.k8s.io/v1}\n",
            ),
            KubeconfigError::NotInline,
        ),
        (
            document("", "    auth-provider: {name: oidc}\n"),
            KubeconfigError::NotInline,
        ),
        (
            document("", "    tokenFile: /var/run/secrets/token\n"),
            KubeconfigError::NotInline,
        ),
        (
            document(
                "",
                "    client-certificate: /home/me/cert.pem\n    client-key: /home/me/key.pem\n",
            ),
            KubeconfigError::NotInline,
        ),
        (
            document("    certificate-authority: /etc/ca.pem\n", "    token: t\n").replacen(
                &format!("    certificate-authority-data: {}\n", b64(CA)),
                "",
                1,
            ),
            KubeconfigError::CaFile,
        ),
        (
            document("", "    as: relay\n    as-user-extra: {scopes: [view]}\n"),
            KubeconfigError::ImpersonatedExtra,
        ),
        (
            document("", &certificate),
            KubeconfigError::Incomplete("client-certificate-data", "client-key-data"),
        ),
        (
            document("", &key),
            KubeconfigError::Incomplete("client-key-data", "client-certificate-data"),
        ),
        (
            document(
                "",
                "    client-certificate-data: '%%%'\n    client-key-data: '%%%'\n",
            ),
            KubeconfigError::NotBase64("client-certificate-data"),
        ),
        (
            document("", "    token: t\n").replace("current-context: a\n", ""),
            KubeconfigError::NoContext,
        ),
        (
            document("", "    token: t\n").replace("current-context: a", "current-context: c"),
            KubeconfigError::UnknownContext("c".into()),
        ),
        (
            document("", "    token: t\n").replace("user: ua,", "user: nobody,"),
            KubeconfigError::UnknownUser("a".into(), "nobody".into()),
        ),
        (
            document("", "    token: t\n").replace("cluster: ca,", "cluster: elsewhere,"),
            KubeconfigError::NoServer("a".into()),
        ),
        (
            document("", "    token: \"bad\\ntoken\"\n"),
            KubeconfigError::Config(ConfigError::HeaderValue),
        ),
        ("{not: [yaml".into(), KubeconfigError::Unparsable),
    ];
    for (text, expected) in cases {
        assert_eq!(select(&text, None).err(), Some(expected), "{text}");
    }
}

#[test]
fn no_error_quotes_the_document() {
    for text in [
        "token: secret-kubeconfig-token\n{not: [yaml",
        "clusters: secret-kubeconfig-token",
        "users: [{name: u, user: {token: [secret-kubeconfig-token]}}]",
    ] {
        let error = select(text, None).err().unwrap();
        assert!(
            !error.to_string().contains("secret-kubeconfig-token"),
            "{error}"
        );
        assert!(
            !format!("{error:?}").contains("secret-kubeconfig-token"),
            "{error:?}"
        );
    }
}
