use super::*;
use crate::push::PushEvent;

const PROXY: &str = "/api/v1/namespaces/flux-system/services/http:webhook-receiver:80/proxy";
// Flux's path for token `example-receiver-token`, Receiver flux-system/gitlab-receiver.
const PATH: &str = "/hook/66414f4907efe09e3c5a37d42fbc1ff608b6644f476e6cbf9da4d4a43d1b1977";
const TOKEN: &str = "tok";

/// The exact `push_body` of `push()`.
const BODY: &str = concat!(
    r#"{"object_kind":"push","event_name":"push","#,
    r#""before":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","#,
    r#""after":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","#,
    r#""ref":"refs/heads/main","#,
    r#""checkout_sha":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","#,
    r#""project_id":15,"project":{"id":15,"path_with_namespace":"mike/diaspora","#,
    r#""web_url":"https://gitlab.example.com/mike/diaspora","#,
    r#""git_http_url":"https://gitlab.example.com/mike/diaspora.git","#,
    r#""git_ssh_url":"git@gitlab.example.com:mike/diaspora.git","#,
    r#""default_branch":"main"},"fluxrelay":{"key":"k1"}}"#
);
// python3 -c 'import hmac,hashlib,sys;print(hmac.new(b"tok", sys.argv[1].encode(), hashlib.sha256).hexdigest())' "$BODY"
// printf '%s' "$BODY" | openssl dgst -sha256 -hmac tok   (same value)
const BODY_HMAC_TOK: &str = "2cfc1be6c4079ba6cea957f27a2ca3fca7f88d680dad4a231f8c932923760731";

fn push() -> Push {
    // The core sample push, with the short key the expected bodies below spell out.
    Push {
        key: "k1".into(),
        ..crate::push::tests::sample_push()
    }
}

fn proxy() -> ReceiverEndpoint {
    ReceiverEndpoint::ServiceProxy(PROXY.to_string())
}

fn build(receiver_type: &str, token: Option<&str>) -> Result<TriggerRequest, RequestError> {
    let token = token.map(Secret::from);
    receiver_request(
        &proxy(),
        &ReceiverType::parse(receiver_type),
        PATH,
        token.as_ref(),
        &push(),
    )
}

/// Every header as `(name, value)`, sorted, sensitive values included.
fn headers(request: &TriggerRequest) -> Vec<(String, String)> {
    let mut all: Vec<_> = request
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                value.to_str().unwrap().to_string(),
            )
        })
        .collect();
    all.sort();
    all
}

fn expected_headers(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut all: Vec<_> = [
        ("content-type", "application/json"),
        ("user-agent", USER_AGENT),
    ]
    .iter()
    .chain(extra)
    .map(|(name, value)| (name.to_string(), value.to_string()))
    .collect();
    all.sort();
    all
}

fn proxy_target() -> RequestTarget {
    RequestTarget::ApiServerPath(format!("{PROXY}{PATH}"))
}

#[test]
fn push_body_is_the_exact_small_gitlab_shaped_json() {
    assert_eq!(String::from_utf8(push_body(&push())).unwrap(), BODY);
}

#[test]
fn generic_posts_the_body_with_no_auth_header_and_needs_no_token() {
    for token in [None, Some(TOKEN)] {
        let request = build("generic", token).unwrap();
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.target, proxy_target());
        assert_eq!(headers(&request), expected_headers(&[]));
        assert_eq!(request.body, BODY.as_bytes());
    }
}

#[test]
fn generic_hmac_signs_the_exact_body_with_hmac_sha256_of_the_token() {
    let request = build("generic-hmac", Some(TOKEN)).unwrap();
    assert_eq!(request.method, Method::POST);
    assert_eq!(request.target, proxy_target());
    let signature = format!("sha256={BODY_HMAC_TOK}");
    assert_eq!(
        headers(&request),
        expected_headers(&[("x-signature", &signature)])
    );
    assert_eq!(request.body, BODY.as_bytes());
}

#[test]
fn gitlab_sends_the_token_and_the_push_hook_event() {
    let request = build("gitlab", Some(TOKEN)).unwrap();
    assert_eq!(request.method, Method::POST);
    assert_eq!(request.target, proxy_target());
    assert_eq!(
        headers(&request),
        expected_headers(&[("x-gitlab-token", TOKEN), ("x-gitlab-event", "Push Hook")])
    );
    assert!(request.headers["x-gitlab-token"].is_sensitive());
    assert_eq!(request.body, BODY.as_bytes());
}

#[test]
fn gitlab_names_a_tag_push_tag_push_hook() {
    let mut tag = push();
    tag.event = PushEvent::TagPush;
    tag.git_ref = "refs/tags/v1.0.0".into();
    let token = Secret::from(TOKEN);
    let request =
        receiver_request(&proxy(), &ReceiverType::Gitlab, PATH, Some(&token), &tag).unwrap();
    assert_eq!(request.headers["x-gitlab-event"], "Tag Push Hook");
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["object_kind"], "tag_push");
    assert_eq!(body["event_name"], "tag_push");
    assert_eq!(body["ref"], "refs/tags/v1.0.0");
}

#[test]
fn github_signs_the_body_in_x_hub_signature_256_and_names_the_event_push() {
    let request = build("github", Some(TOKEN)).unwrap();
    assert_eq!(request.method, Method::POST);
    assert_eq!(request.target, proxy_target());
    let signature = format!("sha256={BODY_HMAC_TOK}");
    assert_eq!(
        headers(&request),
        expected_headers(&[
            ("x-hub-signature-256", &signature),
            ("x-github-event", "push")
        ])
    );
    assert_eq!(request.body, BODY.as_bytes());
}

#[test]
fn hmac_matches_an_independent_vector() {
    // python3 -c 'import hmac,hashlib;print(hmac.new(b"tok", b"{}", hashlib.sha256).hexdigest())'
    assert_eq!(
        hmac_sha256_hex(&Secret::from("tok"), b"{}").unwrap(),
        "5b2fa15e22095bb334899aa26542e536fe6c91ca04402c5ba72d0f2c9e04f77c"
    );
}

#[test]
fn other_receiver_types_are_unsupported() {
    for other in ["bitbucket", "generic-oidc", "GitLab", ""] {
        let error = build(other, Some(TOKEN)).unwrap_err();
        assert_eq!(
            error,
            RequestError::UnsupportedReceiverType {
                receiver_type: other.to_string()
            }
        );
    }
}

#[test]
fn debug_of_a_request_never_shows_the_token() {
    let secret = "s3cr3t-receiver-token";
    for receiver_type in ["gitlab", "generic-hmac", "github"] {
        let request = build(receiver_type, Some(secret)).unwrap();
        let debug = format!("{request:?}");
        assert!(!debug.contains(secret), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        assert!(debug.contains("user-agent"), "{debug}");
        assert!(debug.contains(PATH), "{debug}");
        assert!(!format!("{:#?}", request).contains(secret));
    }
}

#[test]
fn a_type_that_needs_a_token_without_one_is_an_error() {
    for receiver_type in ["generic-hmac", "gitlab", "github"] {
        for token in [None, Some("")] {
            assert_eq!(
                build(receiver_type, token).unwrap_err(),
                RequestError::TokenMissing {
                    receiver_type: receiver_type.to_string()
                }
            );
        }
    }
}

#[test]
fn a_gitlab_token_that_is_not_a_header_value_is_an_error_that_does_not_echo_it() {
    for token in [
        "secret-part-one\nsecret-part-two",
        "secret-part-one\r\nX-Injected: 1",
        "secret-part-one\0",
        "secret-part-one ",
        "\tsecret-part-one",
    ] {
        let error = build("gitlab", Some(token)).unwrap_err();
        assert_eq!(
            error,
            RequestError::InvalidHeaderValue {
                header: "X-Gitlab-Token"
            }
        );
        for shown in [error.to_string(), format!("{error:?}")] {
            assert!(!shown.contains("secret-part"), "{shown}");
        }
    }
}

#[test]
fn any_bytes_are_a_valid_hmac_key() {
    for receiver_type in ["generic-hmac", "github"] {
        assert!(build(receiver_type, Some("line\nbreak\0")).is_ok());
    }
}

#[test]
fn unsafe_webhook_paths_are_rejected_without_being_echoed() {
    let long = format!("/hook/{}", "a".repeat(129));
    for path in [
        "",
        "/hook/",
        "/hook",
        "hook/abc",
        "/hooks/abc",
        "/HOOK/abc",
        "/hook/abc/",
        "/hook/abc?x=1",
        "/hook/abc#frag",
        "/hook/../api/v1/secrets",
        "/hook/a/b",
        "/hook/a b",
        "/hook/a%2Fb",
        "/hook/a.b",
        "/hook/abc\n",
        "/hook/é",
        "//hook/abc",
        "/api/v1/namespaces/flux-system/secrets",
        long.as_str(),
    ] {
        let token = Secret::from(TOKEN);
        let error = receiver_request(
            &proxy(),
            &ReceiverType::Generic,
            path,
            Some(&token),
            &push(),
        )
        .unwrap_err();
        assert!(
            matches!(error, RequestError::UnsafeWebhookPath { .. }),
            "{path:?}: {error:?}"
        );
        if path.len() > "/hook/".len() {
            assert!(!error.to_string().contains(path), "{path:?}");
        }
    }
}

#[test]
fn webhook_path_ids_of_1_to_128_safe_characters_are_accepted() {
    for path in [
        "/hook/a".to_string(),
        format!("/hook/{}", "Z".repeat(128)),
        "/hook/A-z_0-9".to_string(),
        PATH.to_string(),
    ] {
        assert!(check_webhook_path(&path).is_ok(), "{path}");
    }
}

#[test]
fn an_absolute_endpoint_gets_exactly_one_slash_before_the_path() {
    for (base, expected) in [
        (
            "https://flux.example.com",
            format!("https://flux.example.com{PATH}"),
        ),
        (
            "https://flux.example.com/",
            format!("https://flux.example.com{PATH}"),
        ),
        (
            "https://flux.example.com//",
            format!("https://flux.example.com{PATH}"),
        ),
        (
            "https://example.com/flux",
            format!("https://example.com/flux{PATH}"),
        ),
        (
            "https://example.com/flux/",
            format!("https://example.com/flux{PATH}"),
        ),
        (
            "http://10.0.0.1:9292",
            format!("http://10.0.0.1:9292{PATH}"),
        ),
    ] {
        let endpoint = ReceiverEndpoint::Absolute(url::Url::parse(base).unwrap());
        let request =
            receiver_request(&endpoint, &ReceiverType::Generic, PATH, None, &push()).unwrap();
        let RequestTarget::Absolute(url) = &request.target else {
            panic!("{base}: {:?}", request.target);
        };
        assert_eq!(url.as_str(), expected, "{base}");
        assert_eq!(url.query(), None);
    }
}

#[test]
fn an_absolute_endpoint_with_a_query_or_fragment_is_refused() {
    for base in [
        "https://flux.example.com/?a=b",
        "https://flux.example.com/#x",
    ] {
        let endpoint = ReceiverEndpoint::Absolute(url::Url::parse(base).unwrap());
        let error =
            receiver_request(&endpoint, &ReceiverType::Generic, PATH, None, &push()).unwrap_err();
        assert!(
            matches!(error, RequestError::InvalidEndpoint { .. }),
            "{base}: {error:?}"
        );
    }
}

#[test]
fn a_service_proxy_endpoint_becomes_an_apiserver_path_joined_exactly() {
    let request = build("generic", None).unwrap();
    assert_eq!(
        request.target,
        RequestTarget::ApiServerPath(format!(
            "/api/v1/namespaces/flux-system/services/http:webhook-receiver:80/proxy{PATH}"
        ))
    );
    for base in ["api/v1/x/proxy", "/api/v1/x/proxy?a=b"] {
        let endpoint = ReceiverEndpoint::ServiceProxy(base.to_string());
        let error =
            receiver_request(&endpoint, &ReceiverType::Generic, PATH, None, &push()).unwrap_err();
        assert!(
            matches!(error, RequestError::InvalidEndpoint { .. }),
            "{base}"
        );
    }
}

#[test]
fn body_parses_with_ref_and_project_path_for_cel_filters() {
    let body: serde_json::Value = serde_json::from_slice(&push_body(&push())).unwrap();
    assert_eq!(body["ref"], "refs/heads/main");
    assert_eq!(body["project"]["path_with_namespace"], "mike/diaspora");
    assert_eq!(body["project_id"], 15);
    assert_eq!(body["fluxrelay"]["key"], "k1");
}

#[test]
fn absent_optional_fields_are_null() {
    let mut bare = push();
    bare.checkout_sha = None;
    bare.project.default_branch = None;
    let body: serde_json::Value = serde_json::from_slice(&push_body(&bare)).unwrap();
    assert!(body["checkout_sha"].is_null());
    assert!(body["project"]["default_branch"].is_null());
}

#[test]
fn body_stays_far_below_3_mib_for_a_long_ref_and_huge_urls() {
    let mut big = push();
    big.git_ref = format!("refs/heads/{}", "r".repeat(1_000));
    big.project.web_url = format!("https://gitlab.example.com/{}", "w".repeat(4 << 20));
    big.project.http_url = format!("https://gitlab.example.com/{}", "\u{1}".repeat(4 << 20));
    big.project.ssh_url = "\"".repeat(4 << 20);
    big.project.path = "p/".repeat(1 << 20);
    big.before = "\u{1}".repeat(MAX_BODY_FIELD_BYTES);
    big.after = "\u{1}".repeat(MAX_BODY_FIELD_BYTES);
    let body = push_body(&big);
    assert!(body.len() < 3 * 1024 * 1024, "{} bytes", body.len());
    assert!(body.len() < 256 * 1024, "{} bytes", body.len());
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["ref"].as_str(), Some(big.git_ref.as_str()));
    assert!(json["project"]["web_url"].is_null());
    assert!(json["project"]["git_http_url"].is_null());
    assert!(json["project"]["path_with_namespace"].is_null());
    assert_eq!(json["before"].as_str(), Some(big.before.as_str()));
}

#[test]
fn requested_at_is_rfc3339_utc_with_nine_fraction_digits() {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(1_795_316_645_123_456_789).unwrap();
    assert_eq!(requested_at(at), "2026-11-22T03:04:05.123456789Z");
    let whole = time::OffsetDateTime::from_unix_timestamp(1_795_316_645).unwrap();
    assert_eq!(requested_at(whole), "2026-11-22T03:04:05.000000000Z");
    let elsewhere = at.to_offset(time::UtcOffset::from_hms(-5, -30, 0).unwrap());
    assert_eq!(requested_at(elsewhere), "2026-11-22T03:04:05.123456789Z");
    let parsed = time::OffsetDateTime::parse(
        &requested_at(at),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(parsed, at);
}

#[test]
fn annotate_patch_is_the_exact_merge_patch() {
    assert_eq!(
        String::from_utf8(annotate_patch("2026-11-22T03:04:05.123456789Z")).unwrap(),
        r#"{"metadata":{"annotations":{"reconcile.fluxcd.io/requestedAt":"2026-11-22T03:04:05.123456789Z"}}}"#
    );
    assert_eq!(MERGE_PATCH_CONTENT_TYPE, "application/merge-patch+json");
}

#[test]
fn user_agent_names_fluxrelay_and_its_version() {
    assert_eq!(
        USER_AGENT,
        format!("fluxrelay/{}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_probe_goes_where_a_receivers_webhook_goes() {
    let absolute = |url: &str| ReceiverEndpoint::Absolute(url::Url::parse(url).unwrap());
    for (endpoint, expected) in [
        (
            proxy(),
            RequestTarget::ApiServerPath(format!("{PROXY}/hook/fluxrelay-check")),
        ),
        (
            absolute("https://hooks.example.com"),
            RequestTarget::Absolute(
                url::Url::parse("https://hooks.example.com/hook/fluxrelay-check").unwrap(),
            ),
        ),
        // A base path is kept, with or without its trailing slash. Check once joined the
        // probe path as a relative URL, which drops a last segment without one: it probed
        // https://hooks.example.com/hook/fluxrelay-check while dispatch called /flux/hook/….
        (
            absolute("https://hooks.example.com/flux/"),
            RequestTarget::Absolute(
                url::Url::parse("https://hooks.example.com/flux/hook/fluxrelay-check").unwrap(),
            ),
        ),
        (
            absolute("https://hooks.example.com/flux"),
            RequestTarget::Absolute(
                url::Url::parse("https://hooks.example.com/flux/hook/fluxrelay-check").unwrap(),
            ),
        ),
        (
            absolute("http://10.0.0.1:9292/a/b"),
            RequestTarget::Absolute(
                url::Url::parse("http://10.0.0.1:9292/a/b/hook/fluxrelay-check").unwrap(),
            ),
        ),
    ] {
        let probe = probe_request(&endpoint).unwrap();
        assert_eq!(probe.target, expected, "{endpoint:?}");
        assert_eq!(
            (probe.method, probe.body.as_slice()),
            (Method::POST, &b"{}"[..])
        );
        assert!(
            probe.headers.is_empty(),
            "no token, no signature: {:?}",
            probe.headers
        );

        // The same base as a Receiver's webhook for that endpoint.
        let webhook =
            receiver_request(&endpoint, &ReceiverType::Generic, PATH, None, &push()).unwrap();
        let base = |target: &RequestTarget, path: &str| match target {
            RequestTarget::ApiServerPath(full) => full.strip_suffix(path).map(str::to_string),
            RequestTarget::Absolute(url) => url.as_str().strip_suffix(path).map(str::to_string),
        };
        assert_eq!(
            base(&probe.target, PROBE_WEBHOOK_PATH),
            base(&webhook.target, PATH),
            "{endpoint:?}"
        );
        assert!(base(&probe.target, PROBE_WEBHOOK_PATH).is_some());
    }
}

#[test]
fn the_probe_path_is_a_safe_webhook_path_no_receiver_has() {
    assert_eq!(check_webhook_path(PROBE_WEBHOOK_PATH), Ok(()));
    assert!(crate::matching::select::is_safe_webhook_path(
        PROBE_WEBHOOK_PATH
    ));
    assert_ne!(PROBE_WEBHOOK_PATH.len(), "/hook/".len() + 64);
}
