//! The Flux webhook-receiver emulator answers as notification-controller v1.9.3 does.
//!
//! Requests go over a raw TCP socket so the request target reaches the server exactly as
//! written (a query string, a trailing slash), with no client-side normalisation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;

use fluxrelay_testkit::receiver::{FluxReceiverEmulator, MAX_REQUEST_SIZE_BYTES, ReceiverSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BODY: &[u8] = br#"{"ref":"refs/heads/main"}"#;
const HMAC_TOKEN: &str = "hmac-secret";
const GITHUB_TOKEN: &str = "github-secret";
const GITLAB_TOKEN: &str = "gitlab-secret";

// printf '%s' '{"ref":"refs/heads/main"}' | openssl dgst -sha256 -hmac 'hmac-secret' -r
const HMAC_SHA256: &str = "aa70a37bcf71b9bf2830d567bc89d1056da17fe6c87c8c19c7345e7e0775e8a0";
// printf '%s' '{"ref":"refs/heads/main"}' | openssl dgst -sha512 -hmac 'hmac-secret' -r
const HMAC_SHA512: &str = "f3c179ff3a689cbc0f28aa39b4ca1e3b8ac7a608b99027c9f842e6377ceb161e\
f91c4ad78d1a641e0396ad4e797a00dbe0cf6ca30f2b47e2a71cf82db7d3cb6d";
// printf '%s' '{"ref":"refs/heads/main"}' | openssl dgst -sha256 -hmac 'github-secret' -r
const GITHUB_SHA256: &str = "385f6bfe61c3e81c6ab211901cbf64cc0f097db40a3f7125ebef30db547ae844";
// The same payload as a form, signed over the raw form body:
// python3 -c "import hmac,hashlib,urllib.parse as u; b=b'payload='+u.quote_plus('{\"ref\":\"refs/heads/main\"}').encode(); print(hmac.new(b'github-secret',b,hashlib.sha256).hexdigest())"
const GITHUB_FORM_BODY: &[u8] = b"payload=%7B%22ref%22%3A%22refs%2Fheads%2Fmain%22%7D";
const GITHUB_FORM_SHA256: &str = "d59f6a2f4a9ed9012baf9208c53f49f2f679ac65cf46ea545586c26c40f97732";

fn spec(name: &str, receiver_type: &str, token: &str, events: &[&str]) -> ReceiverSpec {
    ReceiverSpec {
        namespace: "flux-system".to_string(),
        name: name.to_string(),
        receiver_type: receiver_type.to_string(),
        token: token.to_string(),
        events: events.iter().map(|event| event.to_string()).collect(),
        suspended: false,
        ready: true,
    }
}

/// Sends one HTTP/1.1 request with the target exactly as given and returns the status and
/// the response body.
async fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: webhook-receiver\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let head_end = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&response[..head_end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, response[head_end + 4..].to_vec())
}

async fn emulator() -> FluxReceiverEmulator {
    FluxReceiverEmulator::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

#[test]
fn webhook_path_is_flux_formula_for_the_reference_vector() {
    let receiver = ReceiverSpec {
        token: "example-receiver-token".to_string(),
        ..spec("gitlab-receiver", "gitlab", "", &[])
    };
    // printf '%s' 'example-receiver-tokengitlab-receiverflux-system' | sha256sum
    assert_eq!(
        receiver.webhook_path(),
        "/hook/66414f4907efe09e3c5a37d42fbc1ff608b6644f476e6cbf9da4d4a43d1b1977"
    );
    // Each of token, name and namespace takes part.
    for other in [
        ReceiverSpec {
            token: "other".to_string(),
            ..receiver.clone()
        },
        ReceiverSpec {
            name: "other".to_string(),
            ..receiver.clone()
        },
        ReceiverSpec {
            namespace: "other".to_string(),
            ..receiver.clone()
        },
    ] {
        assert_ne!(other.webhook_path(), receiver.webhook_path());
    }
    assert!(!format!("{receiver:?}").contains("example-receiver-token"));
}

struct Case {
    name: &'static str,
    /// Which registered receiver's path is called.
    receiver: &'static str,
    method: &'static str,
    /// Appended to the receiver's webhook path.
    suffix: &'static str,
    headers: Vec<(&'static str, String)>,
    body: &'static [u8],
    status: u16,
}

fn case(
    name: &'static str,
    receiver: &'static str,
    headers: &[(&'static str, &str)],
    body: &'static [u8],
    status: u16,
) -> Case {
    Case {
        name,
        receiver,
        method: "POST",
        suffix: "",
        headers: headers
            .iter()
            .map(|(header, value)| (*header, value.to_string()))
            .collect(),
        body,
        status,
    }
}

/// The receivers every table case can call, by short name.
fn receivers() -> Vec<(&'static str, ReceiverSpec)> {
    let gitlab_events = ["Push Hook", "Tag Push Hook"];
    vec![
        ("generic", spec("generic", "generic", "generic-secret", &[])),
        ("hmac", spec("hmac", "generic-hmac", HMAC_TOKEN, &[])),
        (
            "gitlab",
            spec("gitlab", "gitlab", GITLAB_TOKEN, &gitlab_events),
        ),
        (
            "gitlab-any",
            spec("gitlab-any", "gitlab", GITLAB_TOKEN, &[]),
        ),
        ("github", spec("github", "github", GITHUB_TOKEN, &["push"])),
        (
            "github-any",
            spec("github-any", "github", GITHUB_TOKEN, &[]),
        ),
        (
            "github-upper",
            spec("github-upper", "github", GITHUB_TOKEN, &["PUSH"]),
        ),
        (
            "bitbucket",
            spec("bitbucket", "bitbucket", "bitbucket-secret", &[]),
        ),
        (
            "suspended",
            ReceiverSpec {
                suspended: true,
                ..spec("suspended", "gitlab", GITLAB_TOKEN, &[])
            },
        ),
        (
            "not-ready",
            ReceiverSpec {
                ready: false,
                ..spec("not-ready", "gitlab", GITLAB_TOKEN, &[])
            },
        ),
    ]
}

fn cases() -> Vec<Case> {
    let json = ("Content-Type", "application/json");
    let hmac_sha256 = format!("sha256={HMAC_SHA256}");
    let hmac_sha512 = format!("sha512={HMAC_SHA512}");
    let github = format!("sha256={GITHUB_SHA256}");
    let github_form = format!("sha256={GITHUB_FORM_SHA256}");
    // printf '%s' 'not json' | openssl dgst -sha256 -hmac 'github-secret' -r
    let github_not_json =
        "sha256=bf39f1f6c4893e7a759a232be484cc2a3b489f0655db0ebae96b5cc3c41d9524".to_string();
    let gitlab_push = [
        ("X-Gitlab-Token", GITLAB_TOKEN),
        ("X-Gitlab-Event", "Push Hook"),
    ];
    let evil: &[u8] = br#"{"ref":"refs/heads/evil"}"#;
    vec![
        // generic: the path is the only secret.
        case("generic accepts any body", "generic", &[], b"not json", 200),
        case("generic accepts an empty body", "generic", &[], b"", 200),
        // generic-hmac
        case(
            "generic-hmac sha256",
            "hmac",
            &[("X-Signature", &hmac_sha256)],
            BODY,
            200,
        ),
        case(
            "generic-hmac sha512",
            "hmac",
            &[("X-Signature", &hmac_sha512)],
            BODY,
            200,
        ),
        case(
            "generic-hmac upper-case hex",
            "hmac",
            &[(
                "X-Signature",
                &hmac_sha256.to_uppercase().replace("SHA", "sha"),
            )],
            BODY,
            200,
        ),
        case("generic-hmac missing signature", "hmac", &[], BODY, 400),
        case(
            "generic-hmac no algorithm",
            "hmac",
            &[("X-Signature", HMAC_SHA256)],
            BODY,
            400,
        ),
        case(
            "generic-hmac upper-case algorithm is unknown",
            "hmac",
            &[("X-Signature", &hmac_sha256.replace("sha", "SHA"))],
            BODY,
            400,
        ),
        case(
            "generic-hmac algorithm and digest swapped",
            "hmac",
            &[("X-Signature", &hmac_sha512.replace("sha512", "sha256"))],
            BODY,
            400,
        ),
        case(
            "generic-hmac body changed after signing",
            "hmac",
            &[("X-Signature", &hmac_sha256)],
            evil,
            400,
        ),
        case(
            "generic-hmac signed with another token",
            "hmac",
            &[("X-Signature", &github)],
            BODY,
            400,
        ),
        case(
            "generic-hmac digest not hex",
            "hmac",
            &[("X-Signature", "sha256=zz")],
            BODY,
            400,
        ),
        case(
            "generic-hmac sha1 is refused by the emulator",
            "hmac",
            &[(
                "X-Signature",
                "sha1=0000000000000000000000000000000000000000",
            )],
            BODY,
            400,
        ),
        // gitlab
        case(
            "gitlab token and listed event",
            "gitlab",
            &gitlab_push,
            BODY,
            200,
        ),
        case(
            "gitlab event matches case-insensitively",
            "gitlab",
            &[
                ("X-Gitlab-Token", GITLAB_TOKEN),
                ("X-Gitlab-Event", "tag push hook"),
            ],
            BODY,
            200,
        ),
        case(
            "gitlab any event when events is empty",
            "gitlab-any",
            &[("X-Gitlab-Token", GITLAB_TOKEN)],
            b"",
            200,
        ),
        case(
            "gitlab wrong token",
            "gitlab",
            &[("X-Gitlab-Token", "wrong"), ("X-Gitlab-Event", "Push Hook")],
            BODY,
            400,
        ),
        case(
            "gitlab token differs in case",
            "gitlab",
            &[
                ("X-Gitlab-Token", "GITLAB-SECRET"),
                ("X-Gitlab-Event", "Push Hook"),
            ],
            BODY,
            400,
        ),
        case(
            "gitlab missing token",
            "gitlab",
            &[("X-Gitlab-Event", "Push Hook")],
            BODY,
            400,
        ),
        case(
            "gitlab event not in events",
            "gitlab",
            &[
                ("X-Gitlab-Token", GITLAB_TOKEN),
                ("X-Gitlab-Event", "Merge Request Hook"),
            ],
            BODY,
            400,
        ),
        case(
            "gitlab missing event when events is set",
            "gitlab",
            &[("X-Gitlab-Token", GITLAB_TOKEN)],
            BODY,
            400,
        ),
        // github
        case(
            "github json push",
            "github",
            &[
                json,
                ("X-GitHub-Event", "push"),
                ("X-Hub-Signature-256", &github),
            ],
            BODY,
            200,
        ),
        case(
            "github content type with parameters and upper case",
            "github",
            &[
                ("Content-Type", "Application/JSON; charset=utf-8"),
                ("X-GitHub-Event", "push"),
                ("X-Hub-Signature-256", &github),
            ],
            BODY,
            200,
        ),
        case(
            "github form body signed as sent",
            "github",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("X-GitHub-Event", "push"),
                ("X-Hub-Signature-256", &github_form),
            ],
            GITHUB_FORM_BODY,
            200,
        ),
        case(
            "github falls back to X-Hub-Signature",
            "github",
            &[
                json,
                ("X-GitHub-Event", "push"),
                ("X-Hub-Signature", &github),
            ],
            BODY,
            200,
        ),
        case(
            "github event matches spec.events case-insensitively",
            "github-upper",
            &[
                json,
                ("X-GitHub-Event", "push"),
                ("X-Hub-Signature-256", &github),
            ],
            BODY,
            200,
        ),
        case(
            "github wrong signature",
            "github",
            &[
                json,
                ("X-GitHub-Event", "push"),
                ("X-Hub-Signature-256", &hmac_sha256),
            ],
            BODY,
            400,
        ),
        case(
            "github body changed after signing",
            "github",
            &[
                json,
                ("X-GitHub-Event", "push"),
                ("X-Hub-Signature-256", &github),
            ],
            evil,
            400,
        ),
        case(
            "github missing signature",
            "github",
            &[json, ("X-GitHub-Event", "push")],
            BODY,
            400,
        ),
        case(
            "github text/plain content type",
            "github",
            &[
                ("Content-Type", "text/plain"),
                ("X-GitHub-Event", "push"),
                ("X-Hub-Signature-256", &github),
            ],
            BODY,
            400,
        ),
        case(
            "github missing content type",
            "github",
            &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &github)],
            BODY,
            400,
        ),
        case(
            "github malformed content type parameter",
            "github",
            &[
                ("Content-Type", "application/json; charset"),
                ("X-GitHub-Event", "push"),
                ("X-Hub-Signature-256", &github),
            ],
            BODY,
            400,
        ),
        case(
            "github event not in events",
            "github",
            &[
                json,
                ("X-GitHub-Event", "ping"),
                ("X-Hub-Signature-256", &github),
            ],
            BODY,
            400,
        ),
        case(
            "github any known event when events is empty",
            "github-any",
            &[
                json,
                ("X-GitHub-Event", "ping"),
                ("X-Hub-Signature-256", &github),
            ],
            BODY,
            200,
        ),
        // go-github's ParseWebHook knows event names case-sensitively, and needs one.
        case(
            "github event unknown to go-github",
            "github-any",
            &[
                json,
                ("X-GitHub-Event", "PUSH"),
                ("X-Hub-Signature-256", &github),
            ],
            BODY,
            400,
        ),
        case(
            "github missing event",
            "github-any",
            &[json, ("X-Hub-Signature-256", &github)],
            BODY,
            400,
        ),
        case(
            "github payload not JSON",
            "github-any",
            &[
                json,
                ("X-GitHub-Event", "push"),
                ("X-Hub-Signature-256", &github_not_json),
            ],
            b"not json",
            400,
        ),
        // Other types are never called by fluxrelay and are not emulated.
        case("bitbucket is refused", "bitbucket", &[], BODY, 400),
        // Lookup is by the exact request URI.
        Case {
            suffix: "?x=1",
            ..case("query string misses", "generic", &[], BODY, 404)
        },
        Case {
            suffix: "/",
            ..case("trailing slash misses", "generic", &[], BODY, 404)
        },
        Case {
            suffix: "0",
            ..case("longer path misses", "generic", &[], BODY, 404)
        },
        // Any method is handled like POST.
        Case {
            method: "GET",
            ..case("GET is handled like POST", "generic", &[], b"", 200)
        },
        Case {
            method: "GET",
            ..case(
                "GET is validated like POST",
                "gitlab",
                &[("X-Gitlab-Token", "wrong")],
                b"",
                400,
            )
        },
        Case {
            method: "PUT",
            ..case("PUT is handled like POST", "gitlab", &gitlab_push, b"", 200)
        },
        // Suspended or not ready is answered before validation.
        case(
            "suspended",
            "suspended",
            &[("X-Gitlab-Token", GITLAB_TOKEN)],
            BODY,
            503,
        ),
        case(
            "suspended even with a wrong token",
            "suspended",
            &[("X-Gitlab-Token", "wrong")],
            BODY,
            503,
        ),
        case(
            "not ready",
            "not-ready",
            &[("X-Gitlab-Token", GITLAB_TOKEN)],
            BODY,
            503,
        ),
    ]
}

#[tokio::test]
async fn answers_each_request_as_notification_controller_does() {
    let receiver = emulator().await;
    let mut paths = std::collections::HashMap::new();
    for (short, spec) in receivers() {
        paths.insert(short, receiver.upsert(spec));
    }
    let mut failures = Vec::new();
    for case in cases() {
        let target = format!("{}{}", paths[case.receiver], case.suffix);
        let headers: Vec<(&str, &str)> = case
            .headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let (status, body) = send(
            receiver.local_addr(),
            case.method,
            &target,
            &headers,
            case.body,
        )
        .await;
        let hit = receiver.hits().pop().expect("the request is recorded");
        if status != case.status
            || !body.is_empty()
            || hit.status != status
            || hit.request_uri != target
        {
            failures.push(format!(
                "{}: answered {status} (want {}), body {:?}, recorded {} for {} ({:?})",
                case.name,
                case.status,
                String::from_utf8_lossy(&body),
                hit.status,
                hit.request_uri,
                hit.reason
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn a_path_nobody_listens_on_is_not_found() {
    let receiver = emulator().await;
    let path = receiver.upsert(spec("generic", "generic", "t", &[]));
    let unknown = "/hook/66414f4907efe09e3c5a37d42fbc1ff608b6644f476e6cbf9da4d4a43d1b1977";
    for target in [
        unknown.to_string(),
        "/healthz".to_string(),
        "/".to_string(),
        "/hook".to_string(),
        "/hook/".to_string(),
        format!("/{path}"),
        path.replacen("/hook/", "/hook//", 1),
        path.to_uppercase(),
    ] {
        let (status, body) = send(receiver.local_addr(), "POST", &target, &[], b"{}").await;
        assert_eq!((status, body.as_slice()), (404, &b""[..]), "{target}");
    }
    assert!(receiver.hits().iter().all(|hit| hit.receiver.is_none()));
    assert!(receiver.accepted("flux-system", "generic").is_empty());
}

#[tokio::test]
async fn a_body_over_three_mebibytes_is_too_large_before_lookup() {
    let receiver = emulator().await;
    let generic = receiver.upsert(spec("generic", "generic", "t", &[]));
    let hmac = receiver.upsert(spec("hmac", "generic-hmac", HMAC_TOKEN, &[]));
    let exactly = vec![b'a'; MAX_REQUEST_SIZE_BYTES];
    let over = vec![b'a'; MAX_REQUEST_SIZE_BYTES + 1];
    let addr = receiver.local_addr();

    assert_eq!(send(addr, "POST", &generic, &[], &exactly).await.0, 200);
    // Exactly 3 MiB reaches validation, which then refuses a wrong signature.
    assert_eq!(
        send(
            addr,
            "POST",
            &hmac,
            &[("X-Signature", "sha256=00")],
            &exactly
        )
        .await
        .0,
        400
    );
    assert_eq!(send(addr, "POST", &generic, &[], &over).await.0, 413);
    assert_eq!(send(addr, "POST", &hmac, &[], &over).await.0, 413);
    // Checked before the lookup: an unknown path is too large, not missing.
    assert_eq!(send(addr, "POST", "/hook/unknown", &[], &over).await.0, 413);

    let statuses: Vec<u16> = receiver.hits().iter().map(|hit| hit.status).collect();
    assert_eq!(statuses, [200, 400, 413, 413, 413]);
    assert_eq!(receiver.hits()[0].body.len(), MAX_REQUEST_SIZE_BYTES);
    assert_eq!(receiver.accepted("flux-system", "generic").len(), 1);
}

#[tokio::test]
async fn scripted_failures_come_first_then_normal_handling() {
    let receiver = emulator().await;
    let path = receiver.upsert(spec("gitlab", "gitlab", GITLAB_TOKEN, &["Push Hook"]));
    receiver.fail_next(&path, &[503, 503]);
    let headers = [
        ("X-Gitlab-Token", GITLAB_TOKEN),
        ("X-Gitlab-Event", "Push Hook"),
    ];
    let addr = receiver.local_addr();

    // Another path is not affected by the script.
    assert_eq!(
        send(addr, "POST", &format!("{path}?x=1"), &headers, BODY)
            .await
            .0,
        404
    );
    for want in [503, 503, 200, 200] {
        assert_eq!(send(addr, "POST", &path, &headers, BODY).await.0, want);
    }
    // A script runs before validation, and the next one after it is used up.
    receiver.fail_next(&path, &[500]);
    assert_eq!(send(addr, "POST", &path, &[], BODY).await.0, 500);
    assert_eq!(send(addr, "POST", &path, &[], BODY).await.0, 400);

    let hits = receiver.hits();
    let statuses: Vec<u16> = hits.iter().map(|hit| hit.status).collect();
    assert_eq!(statuses, [404, 503, 503, 200, 200, 500, 400]);
    assert!(
        hits[1..]
            .iter()
            .all(|hit| hit.receiver.as_deref() == Some("flux-system/gitlab"))
    );

    let accepted = receiver.accepted("flux-system", "gitlab");
    assert_eq!(accepted.len(), 2, "only 200s are accepted");
    assert!(accepted[0].at <= accepted[1].at);
    assert_eq!(accepted[0].method, "POST");
    assert_eq!(accepted[0].request_uri, path);
    assert_eq!(accepted[0].body, BODY);
    assert_eq!(accepted[0].headers["x-gitlab-event"], "Push Hook");
    assert!(receiver.accepted("flux-system", "other").is_empty());
}

#[tokio::test]
async fn upsert_replaces_remove_forgets_and_clear_empties_the_record() {
    let receiver = emulator().await;
    let addr = receiver.local_addr();
    let old = receiver.upsert(spec("generic", "generic", "old-token", &[]));
    assert_eq!(send(addr, "POST", &old, &[], b"").await.0, 200);

    // Rotating the token moves the path, as in Flux.
    let new = receiver.upsert(spec("generic", "generic", "new-token", &[]));
    assert_ne!(old, new);
    assert_eq!(send(addr, "POST", &old, &[], b"").await.0, 404);
    assert_eq!(send(addr, "POST", &new, &[], b"").await.0, 200);

    let suspended = receiver.upsert(ReceiverSpec {
        suspended: true,
        ..spec("generic", "generic", "new-token", &[])
    });
    assert_eq!(suspended, new);
    assert_eq!(send(addr, "POST", &new, &[], b"").await.0, 503);

    receiver.remove("flux-system", "generic");
    assert_eq!(send(addr, "POST", &new, &[], b"").await.0, 404);
    assert_eq!(receiver.accepted("flux-system", "generic").len(), 2);
    assert_eq!(receiver.hits().len(), 5);

    receiver.fail_next(&new, &[503]);
    receiver.clear();
    assert!(receiver.hits().is_empty());
    let new = receiver.upsert(spec("generic", "generic", "new-token", &[]));
    assert_eq!(
        send(addr, "POST", &new, &[], b"").await.0,
        200,
        "clear drops scripts too"
    );
}

#[tokio::test]
async fn dropping_the_emulator_stops_serving() {
    let receiver = emulator().await;
    let addr = receiver.local_addr();
    drop(receiver);
    let mut refused = false;
    for _ in 0..50 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(refused, "{addr} still accepts connections");
}
