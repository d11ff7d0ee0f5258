use super::*;
use FailureClass::{Denied, Permanent, Rediscover, Retryable};
use Responder::{ApiServer, Receiver};

const JSON: Option<&str> = Some("application/json");

// Bodies as the real apiserver (kube-testenv §1.4) answered them.
const STATUS_401: &str = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#;
const STATUS_403: &str = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"services \"http:webhook-receiver:80\" is forbidden: User \"nobody\" cannot create resource \"services/proxy\" in API group \"\" in the namespace \"flux-system\"","reason":"Forbidden","details":{"name":"http:webhook-receiver:80","kind":"services"},"code":403}"#;
const STATUS_404: &str = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"services \"nope\" not found","reason":"NotFound","details":{"name":"nope","kind":"services"},"code":404}"#;
const STATUS_400: &str = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"invalid service request \"a:b:c:d\"","reason":"BadRequest","code":400}"#;
const STATUS_503: &str = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"no endpoints available for service \"webhook-receiver\"","reason":"ServiceUnavailable","code":503}"#;
const STATUS_500: &str = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"error trying to reach service: dial tcp 192.0.2.10:9292: connect: connection refused","code":500}"#;
const STATUS_409: &str = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Operation cannot be fulfilled","reason":"Conflict","code":409}"#;
const STATUS_429: &str = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Too many requests, please try again later.","reason":"TooManyRequests","code":429}"#;
const STATUS_415: &str = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml","reason":"UnsupportedMediaType","code":415}"#;

fn response(status: u16, content_type: Option<&str>, body: &str) -> TriggerResponse {
    TriggerResponse {
        status,
        content_type: content_type.map(str::to_string),
        body: body.as_bytes().to_vec(),
    }
}

struct Case {
    status: u16,
    content_type: Option<&'static str>,
    body: &'static str,
    class: FailureClass,
    responder: Responder,
    credentials_rejected: bool,
    fragment: &'static str,
}

const fn case(
    status: u16,
    content_type: Option<&'static str>,
    body: &'static str,
    class: FailureClass,
    responder: Responder,
    credentials_rejected: bool,
    fragment: &'static str,
) -> Case {
    Case {
        status,
        content_type,
        body,
        class,
        responder,
        credentials_rejected,
        fragment,
    }
}

#[rustfmt::skip]
const RECEIVER_CASES: &[Case] = &[
    // The apiserver's own answers through the proxy.
    case(401, JSON, STATUS_401, Permanent, ApiServer, true, "apiserver refused the proxied Receiver request (401 Unauthorized): the cluster credentials were rejected: Unauthorized"),
    case(403, JSON, STATUS_403, Denied, ApiServer, false, r#"apiserver refused the proxied Receiver request (403 Forbidden): the cluster credentials lack an RBAC permission: services "http:webhook-receiver:80" is forbidden: User "nobody" cannot create resource "services/proxy" in API group "" in the namespace "flux-system""#),
    case(404, JSON, STATUS_404, Permanent, ApiServer, false, r#"apiserver refused the proxied Receiver request (404 Not Found): the receiver Service or namespace does not exist (check the receiver endpoint): services "nope" not found"#),
    case(400, JSON, STATUS_400, Permanent, ApiServer, false, r#"(400 Bad Request): invalid service proxy request (check the receiver endpoint): invalid service request "a:b:c:d""#),
    case(409, JSON, STATUS_409, Retryable, ApiServer, false, "apiserver refused the proxied Receiver request (409 Conflict)"),
    case(429, JSON, STATUS_429, Retryable, ApiServer, false, "apiserver refused the proxied Receiver request (429 Too Many Requests)"),
    case(503, JSON, STATUS_503, Retryable, ApiServer, false, r#"apiserver refused the proxied Receiver request (503 Service Unavailable): the Receiver service cannot be reached through the apiserver: no endpoints available for service "webhook-receiver""#),
    case(500, JSON, STATUS_500, Retryable, ApiServer, false, "(500 Internal Server Error): the Receiver service cannot be reached through the apiserver: error trying to reach service: dial tcp 192.0.2.10:9292: connect: connection refused"),
    case(502, Some("application/json; charset=utf-8"), STATUS_503, Retryable, ApiServer, false, "apiserver refused the proxied Receiver request (502 Bad Gateway)"),
    case(422, JSON, r#"{"kind":"Status","message":"invalid"}"#, Permanent, ApiServer, false, "apiserver refused the proxied Receiver request (422 Unprocessable Entity): request not accepted: invalid"),
    // The Receiver's answers, passed through verbatim.
    case(404, Some("text/plain"), "receiver not found", Rediscover, Receiver, false, "Receiver answered 404 Not Found: no Receiver has this webhook path"),
    case(404, None, "", Rediscover, Receiver, false, "Receiver answered 404 Not Found"),
    case(400, None, "", Permanent, Receiver, false, "Receiver answered 400 Bad Request: Receiver rejected the request: wrong token or signature, or event not in spec.events"),
    case(413, None, "", Permanent, Receiver, false, "Receiver answered 413 Payload Too Large"),
    case(503, None, "", Retryable, Receiver, false, "Receiver answered 503 Service Unavailable: the Receiver is suspended or not Ready"),
    case(500, None, "", Retryable, Receiver, false, "Receiver answered 500 Internal Server Error: Flux could not annotate a resource"),
    case(429, None, "", Retryable, Receiver, false, "Receiver answered 429 Too Many Requests"),
    case(408, None, "", Retryable, Receiver, false, "Receiver answered 408 Request Timeout"),
    case(502, Some("text/html"), "<html>bad gateway</html>", Retryable, Receiver, false, "Receiver answered 502 Bad Gateway: server error"),
    case(302, Some("text/html"), "<a href=\"https://login.example.com/\">Found</a>.", Permanent, Receiver, false, "Receiver answered 302 Found: redirect not followed: credentials are never sent elsewhere"),
    case(401, None, "", Permanent, Receiver, false, "Receiver answered 401 Unauthorized: request not accepted"),
    case(403, Some("text/plain"), "forbidden", Permanent, Receiver, false, "Receiver answered 403 Forbidden: request not accepted"),
    // JSON that is not an apiserver Status is the Receiver's.
    case(403, JSON, r#"{"kind":"Other","message":"m"}"#, Permanent, Receiver, false, "Receiver answered 403 Forbidden"),
    case(503, JSON, "[]", Retryable, Receiver, false, "Receiver answered 503"),
    case(503, JSON, r#"{"kind":"Status""#, Retryable, Receiver, false, "Receiver answered 503"),
    case(404, JSON, r#"{"kind":"status"}"#, Rediscover, Receiver, false, "Receiver answered 404"),
    case(404, JSON, r#"{"kind":["Status"]}"#, Rediscover, Receiver, false, "Receiver answered 404"),
    case(404, Some("text/plain"), STATUS_404, Rediscover, Receiver, false, "Receiver answered 404"),
    case(401, None, STATUS_401, Permanent, Receiver, false, "Receiver answered 401"),
    case(404, Some("application/jsonx"), STATUS_404, Rediscover, Receiver, false, "Receiver answered 404"),
    // Codes that are not HTTP statuses.
    case(0, None, "", Retryable, Receiver, false, "Receiver answered 0: unexpected status"),
    case(999, JSON, STATUS_500, Retryable, ApiServer, false, "apiserver refused the proxied Receiver request (999): unexpected status"),
    case(101, None, "", Retryable, Receiver, false, "Receiver answered 101 Switching Protocols: unexpected status"),
    case(u16::MAX, None, "", Retryable, Receiver, false, "Receiver answered 65535: unexpected status"),
];

#[test]
fn classifies_receiver_posts_by_who_answered_and_status() {
    for case in RECEIVER_CASES {
        let failure =
            classify_receiver_response(&response(case.status, case.content_type, case.body))
                .unwrap_err();
        let context = format!(
            "{} {:?} {}: {failure:?}",
            case.status, case.content_type, case.body
        );
        assert_eq!(failure.class, case.class, "{context}");
        assert_eq!(failure.responder, case.responder, "{context}");
        assert_eq!(failure.status, Some(case.status), "{context}");
        assert_eq!(
            failure.credentials_rejected, case.credentials_rejected,
            "{context}"
        );
        assert!(failure.reason.contains(case.fragment), "{context}");
        assert_eq!(failure.to_string(), failure.reason);
        let prefix = match case.responder {
            ApiServer => "apiserver refused ",
            _ => "Receiver answered ",
        };
        assert!(failure.reason.starts_with(prefix), "{context}");
    }
}

#[test]
fn any_2xx_is_done_whatever_the_body() {
    for (status, content_type, body) in [
        (200, None, ""),
        (202, None, ""),
        (204, None, ""),
        (299, None, ""),
        (200, JSON, STATUS_403),
    ] {
        assert_eq!(
            classify_receiver_response(&response(status, content_type, body)),
            Ok(())
        );
        assert_eq!(
            classify_apiserver_response(&response(status, content_type, body), "list"),
            Ok(())
        );
    }
}

#[test]
fn a_receiver_answer_never_repeats_its_body() {
    let failure =
        classify_receiver_response(&response(404, Some("text/plain"), "receiver not found"))
            .unwrap_err();
    assert!(
        !failure.reason.contains("receiver not found"),
        "{}",
        failure.reason
    );
    let failure = classify_receiver_response(&response(
        403,
        JSON,
        r#"{"kind":"Other","message":"leaked-detail"}"#,
    ))
    .unwrap_err();
    assert!(!failure.reason.contains("leaked-detail"));
}

#[test]
fn classifies_apiserver_calls_naming_the_action() {
    let action = "patch GitRepository flux-system/podinfo";
    #[rustfmt::skip]
    let cases = [
        (401, JSON, STATUS_401, Permanent, true, "apiserver refused the request to patch GitRepository flux-system/podinfo (401 Unauthorized): the cluster credentials were rejected: Unauthorized"),
        (403, JSON, r#"{"kind":"Status","message":"gitrepositories.source.toolkit.fluxcd.io \"podinfo\" is forbidden: User \"flux-dispatcher\" cannot patch resource \"gitrepositories\" in API group \"source.toolkit.fluxcd.io\" in the namespace \"flux-system\"","reason":"Forbidden","code":403}"#, Denied, false, r#"(403 Forbidden): the cluster credentials lack an RBAC permission: gitrepositories.source.toolkit.fluxcd.io "podinfo" is forbidden: User "flux-dispatcher" cannot patch resource "gitrepositories""#),
        (404, JSON, r#"{"kind":"Status","message":"gitrepositories.source.toolkit.fluxcd.io \"podinfo\" not found","reason":"NotFound","code":404}"#, Permanent, false, r#"apiserver refused the request to patch GitRepository flux-system/podinfo (404 Not Found): not found (the object, namespace or API does not exist): gitrepositories.source.toolkit.fluxcd.io "podinfo" not found"#),
        // No Status: the path has no handler (API not installed, or not yet: a restarting
        // apiserver before MuxAndDiscoveryComplete). Permanent only once it persists.
        (404, Some("text/plain; charset=utf-8"), "404 page not found\n", Denied, false, "apiserver refused the request to patch GitRepository flux-system/podinfo (404 Not Found): the API is not served (Flux's CRDs are not installed, or the apiserver is still starting)"),
        (404, JSON, r#"{"kind":"Status","message":"","reason":"NotFound","code":404}"#, Permanent, false, "(404 Not Found): not found (the object, namespace or API does not exist)"),
        (404, JSON, r#"{"kind":"Status","message":"the server could not find the requested resource","reason":"NotFound","details":{},"code":404}"#, Denied, false, "(404 Not Found): the API is not served"),
        (409, JSON, STATUS_409, Retryable, false, "(409 Conflict): conflict with a concurrent change: Operation cannot be fulfilled"),
        (415, JSON, STATUS_415, Permanent, false, "(415 Unsupported Media Type): request not accepted: the body of the request was in an unknown format"),
        (422, JSON, r#"{"kind":"GitRepository","message":"not-a-status"}"#, Permanent, false, "(422 Unprocessable Entity): request not accepted"),
        (400, JSON, "[]", Permanent, false, "(400 Bad Request): bad request"),
        (429, None, "", Retryable, false, "(429 Too Many Requests): too many requests"),
        (500, JSON, "not json", Retryable, false, "(500 Internal Server Error): server error"),
        (503, JSON, STATUS_503, Retryable, false, "(503 Service Unavailable): server error: no endpoints"),
        (0, None, "", Retryable, false, "(0): unexpected status"),
        (999, None, "", Retryable, false, "(999): unexpected status"),
    ];
    for (status, content_type, body, class, credentials_rejected, fragment) in cases {
        let failure =
            classify_apiserver_response(&response(status, content_type, body), action).unwrap_err();
        let context = format!("{status} {body}: {failure:?}");
        assert_eq!(failure.class, class, "{context}");
        assert_eq!(failure.responder, ApiServer, "{context}");
        assert_eq!(failure.status, Some(status), "{context}");
        assert_eq!(
            failure.credentials_rejected, credentials_rejected,
            "{context}"
        );
        assert!(failure.reason.contains(fragment), "{context}");
        assert!(failure.reason.contains(action), "{context}");
        assert!(!failure.reason.contains("not-a-status"), "{context}");
    }
}

#[test]
fn apiserver_status_is_read_leniently_only_from_json_status_bodies() {
    assert_eq!(
        apiserver_status(&response(403, JSON, STATUS_403)),
        Some(ApiStatus {
            code: Some(403),
            reason: "Forbidden".into(),
            message: r#"services "http:webhook-receiver:80" is forbidden: User "nobody" cannot create resource "services/proxy" in API group "" in the namespace "flux-system""#.into(),
        })
    );
    assert_eq!(
        apiserver_status(&response(
            500,
            Some("Application/JSON;charset=utf-8"),
            r#"{"kind":"Status","code":"500","message":7}"#
        )),
        Some(ApiStatus::default())
    );
    assert_eq!(
        apiserver_status(&response(500, JSON, r#"{"kind":"Status","code":70000}"#)),
        Some(ApiStatus::default())
    );
    for (content_type, body) in [
        (JSON, r#"{"kind":"Other"}"#),
        (JSON, "[]"),
        (JSON, "{"),
        (JSON, ""),
        (JSON, "\u{feff}{}"),
        (Some("text/plain"), STATUS_401),
        (None, STATUS_401),
    ] {
        assert_eq!(
            apiserver_status(&response(401, content_type, body)),
            None,
            "{body}"
        );
    }
}

fn status_with_message(status: u16, message: &str) -> TriggerResponse {
    let body = serde_json::json!({"kind": "Status", "message": message, "code": status});
    TriggerResponse {
        status,
        content_type: Some("application/json".into()),
        body: serde_json::to_vec(&body).unwrap(),
    }
}

#[test]
fn a_10_mb_status_message_is_truncated_to_300_characters() {
    let message = format!(
        "cannot create resource \"services/proxy\"{}",
        "x".repeat(10_000_000)
    );
    let failure = classify_receiver_response(&status_with_message(403, &message)).unwrap_err();
    assert!(
        failure
            .reason
            .contains("cannot create resource \"services/proxy\"")
    );
    assert!(failure.reason.ends_with('…'), "{}", failure.reason);
    let (_, repeated) = failure.reason.split_once("permission: ").unwrap();
    assert_eq!(repeated.chars().count(), MAX_MESSAGE_CHARS);
    assert!(failure.reason.chars().count() < 500);
}

#[test]
fn a_message_of_exactly_300_characters_is_kept_whole() {
    let message = "é".repeat(MAX_MESSAGE_CHARS);
    let failure = classify_receiver_response(&status_with_message(403, &message)).unwrap_err();
    assert!(failure.reason.ends_with(&message), "{}", failure.reason);
}

#[test]
fn control_and_bidi_characters_are_stripped_from_messages() {
    let message =
        "line one\nfake: log line\r\n\u{1b}[31mred\u{7}\u{0}\u{202e}desrever\u{85}\ttab  end\n";
    let failure = classify_receiver_response(&status_with_message(503, message)).unwrap_err();
    assert!(
        failure
            .reason
            .ends_with(": line one fake: log line [31mred desrever tab end"),
        "{:?}",
        failure.reason
    );
    assert!(!failure.reason.chars().any(char::is_control));
}

#[test]
fn webhook_paths_in_messages_are_redacted() {
    let message = "Post \"http://10.0.0.5:9292/hook/66414f4907efe09e3c5a37d42fbc1ff6\": EOF; /hook/ /hook/a_b-c?x";
    let failure = classify_receiver_response(&status_with_message(500, message)).unwrap_err();
    assert!(
        failure.reason.ends_with(
            r#"Post "http://10.0.0.5:9292/hook/<redacted>": EOF; /hook/ /hook/<redacted>?x"#
        ),
        "{}",
        failure.reason
    );
    assert!(!failure.reason.contains("66414f"));
}

#[test]
fn an_empty_status_message_adds_nothing() {
    let failure = classify_receiver_response(&status_with_message(503, " \n ")).unwrap_err();
    assert_eq!(
        failure.reason,
        "apiserver refused the proxied Receiver request (503 Service Unavailable): the Receiver service cannot be reached through the apiserver"
    );
}

#[test]
fn the_action_is_sanitised_too() {
    let failure =
        classify_apiserver_response(&response(404, None, ""), "list\nReceivers").unwrap_err();
    assert!(
        failure
            .reason
            .starts_with("apiserver refused the request to list Receivers (404")
    );
}

#[test]
fn transport_failures_retry_except_tls() {
    for (kind, class, fragment) in [
        (
            TransportErrorKind::ConnectTimeout,
            Retryable,
            "could not reach the server: timed out connecting: operation timed out",
        ),
        (
            TransportErrorKind::Timeout,
            Retryable,
            "could not reach the server: timed out waiting for the answer: operation timed out",
        ),
        (
            TransportErrorKind::Connect,
            Retryable,
            "could not reach the server: connection failed: operation timed out",
        ),
        (
            TransportErrorKind::Tls,
            Permanent,
            "could not reach the server: TLS verification failed",
        ),
        (
            TransportErrorKind::AnswerHeadTooLarge,
            Retryable,
            "the server's answer could not be read: its status line and headers are longer than the client reads: operation timed out",
        ),
        (
            TransportErrorKind::Other,
            Retryable,
            "could not reach the server: transport error",
        ),
    ] {
        let failure = transport_failure(kind, "operation timed out\n");
        assert_eq!(failure.class, class, "{kind:?}");
        assert_eq!(failure.responder, Responder::Transport);
        assert_eq!(failure.status, None);
        assert!(!failure.credentials_rejected);
        assert!(failure.reason.starts_with(fragment), "{}", failure.reason);
        assert!(!failure.reason.contains('\n'));
    }
    assert_eq!(
        transport_failure(TransportErrorKind::Timeout, "").reason,
        "could not reach the server: timed out waiting for the answer"
    );
    let long = transport_failure(TransportErrorKind::Other, &"d".repeat(1_000_000));
    assert!(long.reason.chars().count() < 400);
}
