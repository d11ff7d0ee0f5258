#![allow(clippy::unwrap_used)]

use super::*;

const CA: &str = include_str!("testdata/ca.pem");
const CLIENT: &str = include_str!("testdata/client.pem");
const CLIENT_PKCS8: &str = include_str!("testdata/client-pkcs8.key");
const CLIENT_SEC1: &str = include_str!("testdata/client-sec1.key");
const OTHER_SEC1: &str = include_str!("testdata/other-sec1.key");
const RSA_PKCS1: &str = include_str!("testdata/rsa-pkcs1.key");

fn server() -> ApiserverConfig {
    ApiserverConfig::new(&"https://10.0.0.1:6443".parse().unwrap()).unwrap()
}

fn header<'a>(config: &'a ApiserverConfig, name: &str) -> Vec<&'a HeaderValue> {
    config
        .headers()
        .iter()
        .filter(|(header, _)| header == name)
        .map(|(_, value)| value)
        .collect()
}

#[test]
fn only_http_and_https_servers_with_a_host() {
    for (server, ok) in [
        ("https://10.0.0.1:6443", true),
        ("https://apiserver.example/k8s/clusters/c-1", true),
        ("http://127.0.0.1:8080", true),
        ("ftp://apiserver.example", false),
        ("unix:/var/run/apiserver.sock", false),
    ] {
        let url: url::Url = server.parse().unwrap();
        assert_eq!(ApiserverConfig::new(&url).is_ok(), ok, "{server}");
    }
}

#[test]
fn a_ca_must_hold_a_certificate_and_other_blocks_are_skipped() {
    let bundle = format!("{CLIENT_SEC1}{CA}");
    for (pem, outcome) in [
        (CA, Ok(())),
        // A bundle: kube reads its CERTIFICATE blocks and skips the rest.
        (bundle.as_str(), Ok(())),
        (CLIENT_SEC1, Err(ConfigError::CaCertificates)),
        ("", Err(ConfigError::CaCertificates)),
        ("not pem at all", Err(ConfigError::CaCertificates)),
    ] {
        let trusted = server().trust_pem(pem.as_bytes());
        assert_eq!(
            trusted.as_ref().map(|_| ()).map_err(|e| *e),
            outcome,
            "{pem}"
        );
        if let Ok(config) = trusted {
            assert!(matches!(config.trust, Trust::Roots(ref roots) if roots.len() == 1));
            config.rustls_client_config().unwrap();
        }
    }
    // Without a CA, the platform's roots.
    assert!(matches!(server().trust, Trust::Platform));
}

#[test]
fn a_client_identity_takes_pkcs8_sec1_and_pkcs1_keys_and_must_match_its_certificate() {
    for (key, outcome) in [
        (CLIENT_PKCS8, Ok(())),
        (CLIENT_SEC1, Ok(())),
        // The wrong key loads, and rustls refuses the pair.
        (OTHER_SEC1, Err(ConfigError::ClientIdentity)),
        (RSA_PKCS1, Err(ConfigError::ClientIdentity)),
        (CA, Err(ConfigError::ClientKey)),
        ("", Err(ConfigError::ClientKey)),
    ] {
        let outcome_of = || -> Result<(), ConfigError> {
            server()
                .trust_pem(CA.as_bytes())?
                .identity_pem(CLIENT.as_bytes(), key.as_bytes())?
                .rustls_client_config()
                .map(|_| ())
        };
        assert_eq!(outcome_of(), outcome, "{key}");
    }
    assert_eq!(
        server()
            .identity_pem(CLIENT_SEC1.as_bytes(), CLIENT_SEC1.as_bytes())
            .err(),
        Some(ConfigError::ClientCertificate)
    );
}

#[test]
fn one_authorization_header_marked_sensitive_the_last_one_set() {
    let bearer = server().bearer("secret-token").unwrap();
    let values = header(&bearer, "authorization");
    assert_eq!(values, [&HeaderValue::from_static("Bearer secret-token")]);
    assert!(values[0].is_sensitive());

    let basic = bearer.basic("alice", "secret-password").unwrap();
    // base64("alice:secret-password")
    assert_eq!(
        header(&basic, "authorization"),
        [&HeaderValue::from_static(
            "Basic YWxpY2U6c2VjcmV0LXBhc3N3b3Jk"
        )]
    );
    assert!(header(&basic, "authorization")[0].is_sensitive());

    // A token a header cannot carry is refused, and the error does not quote it.
    let refused = server().bearer("secret\ntoken").unwrap_err();
    assert_eq!(refused, ConfigError::HeaderValue);
    assert!(!refused.to_string().contains("secret"));
}

#[test]
fn impersonation_sets_one_header_per_name_and_group() {
    let config = server()
        .impersonate(
            Some("system:serviceaccount:flux-system:relay"),
            Some("1234"),
            &["ops".to_string(), "deployers".to_string()],
        )
        .unwrap();
    assert_eq!(
        header(&config, "impersonate-user"),
        [&HeaderValue::from_static(
            "system:serviceaccount:flux-system:relay"
        )]
    );
    assert_eq!(
        header(&config, "impersonate-uid"),
        [&HeaderValue::from_static("1234")]
    );
    assert_eq!(
        header(&config, "impersonate-group"),
        [
            &HeaderValue::from_static("ops"),
            &HeaderValue::from_static("deployers")
        ]
    );
    assert!(
        server()
            .impersonate(None, None, &[])
            .unwrap()
            .headers()
            .is_empty()
    );
}

#[test]
fn the_debug_form_shows_no_credential() {
    let config = server()
        .trust_pem(CA.as_bytes())
        .unwrap()
        .identity_pem(CLIENT.as_bytes(), CLIENT_PKCS8.as_bytes())
        .unwrap()
        .bearer("secret-token")
        .unwrap();
    let shown = format!("{config:?}");
    assert!(!shown.contains("secret-token"), "{shown}");
    // The key's DER, in any of the forms Debug could print it, is not there.
    let key_base64 = CLIENT_PKCS8.lines().nth(1).unwrap();
    assert!(!shown.contains(key_base64), "{shown}");
    assert!(shown.contains("ClientIdentity"), "{shown}");
}

#[test]
fn a_tls_server_name_must_be_a_name_or_an_address() {
    assert!(server().tls_server_name("kubernetes.default.svc").is_ok());
    assert!(server().tls_server_name("10.96.0.1").is_ok());
    assert_eq!(
        server().tls_server_name("not a name").err(),
        Some(ConfigError::TlsServerName)
    );
}
