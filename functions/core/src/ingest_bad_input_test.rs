//! Bad input at the ingest edge, one table: every row is a whole request (headers and raw
//! body bytes) through the real `ingest` path into the recording `MemoryQueue`, with the
//! status DESIGN.md gives it ("Ignored events get 202 with a reason, never 4xx. Bad token:
//! 401. Malformed JSON: 400. Too large: 413.") and what must reach the queue.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::FutureExt;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::*;
use crate::auth::SigningKey;
use crate::push::{Push, PushEvent};
use crate::secret::Secret;
use crate::testing::MemoryQueue;

const PUSH_HOOK: &[u8] = include_bytes!("../tests/fixtures/gitlab/push_hook.json");
const TAG_PUSH_HOOK: &[u8] = include_bytes!("../tests/fixtures/gitlab/tag_push_hook.json");
const SYSTEM_PUSH: &[u8] = include_bytes!("../tests/fixtures/gitlab/system_hook_push.json");
const REPOSITORY_UPDATE: &[u8] =
    include_bytes!("../tests/fixtures/gitlab/system_hook_repository_update.json");
const MERGE_REQUEST: &[u8] = include_bytes!("../tests/fixtures/gitlab/merge_request_hook.json");

const TOKEN: &str = "bad-input-table-TOKEN-5c1e";
const SIGNING_KEY_BYTES: [u8; 32] = [0x5a; 32];
const OTHER_KEY_BYTES: [u8; 32] = [0x11; 32];
const NOW: i64 = 1_763_800_000;
const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

/// Which authentication the endpoint is configured with.
#[derive(Clone, Copy)]
enum Auth {
    /// `X-Gitlab-Token` required.
    Token,
    /// `webhook-signature` required, no token configured.
    Signed,
    /// `X-Gitlab-Token` required, the token tied to `gitlab.example.com` only.
    Tied,
}

/// What the answer must be.
enum Expect {
    /// A rejection: status and the `error` code in the body; nothing enqueued.
    Rejected(u16, &'static str),
    /// 202 `ignored`, with a reason containing this text; nothing enqueued.
    Ignored(&'static str),
    /// 202 `accepted`: this many pushes enqueued, and the pushes pass the check.
    Accepted(usize, fn(&[Push]) -> Result<(), String>),
}

struct Case {
    name: &'static str,
    /// The endpoint the request is sent to.
    source: Source,
    auth: Auth,
    /// Raw header values: those `http` refuses to represent (CR, LF, NUL) never reach
    /// ingest, exactly as a request carrying them would be refused by the HTTP parser.
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Vec<u8>,
    expect: Expect,
}

fn case(
    name: &'static str,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: impl Into<Vec<u8>>,
    expect: Expect,
) -> Case {
    Case {
        name,
        source: Source::Gitlab,
        auth: Auth::Token,
        headers,
        body: body.into(),
        expect,
    }
}

/// A request to a registry endpoint (`/registry/distribution`, `/registry/harbor`).
fn registry_case(
    name: &'static str,
    source: Source,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: impl Into<Vec<u8>>,
    expect: Expect,
) -> Case {
    Case {
        source,
        ..case(name, headers, body, expect)
    }
}

fn signed_case(
    name: &'static str,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: impl Into<Vec<u8>>,
    expect: Expect,
) -> Case {
    Case {
        auth: Auth::Signed,
        ..case(name, headers, body, expect)
    }
}

fn h(name: &'static str, value: impl AsRef<[u8]>) -> (&'static str, Vec<u8>) {
    (name, value.as_ref().to_vec())
}

/// A well-formed project-hook delivery of `event` with the right token.
fn gitlab(event: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        h("X-Gitlab-Event", event),
        h("X-Gitlab-Token", TOKEN),
        h("X-Gitlab-Instance", "https://gitlab.example.com"),
    ]
}

fn push_headers() -> Vec<(&'static str, Vec<u8>)> {
    gitlab("Push Hook")
}

/// `push_headers` without the named header, plus `extra`.
fn push_headers_with(
    drop: &str,
    extra: Vec<(&'static str, Vec<u8>)>,
) -> Vec<(&'static str, Vec<u8>)> {
    let mut headers: Vec<_> = push_headers()
        .into_iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case(drop))
        .collect();
    headers.extend(extra);
    headers
}

/// The push fixture with one edit applied to its JSON.
fn push_with(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    json_with(PUSH_HOOK, edit)
}

fn json_with(fixture: &[u8], edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut value: Value = serde_json::from_slice(fixture).unwrap();
    edit(&mut value);
    serde_json::to_vec(&value).unwrap()
}

/// Standard Webhooks headers for `body`, signed with `key` at `timestamp`.
fn signature_headers(key: &[u8], timestamp: i64, body: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let id = "msg_bad_input";
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let signature = BASE64.encode(mac.finalize().into_bytes());
    vec![
        h("X-Gitlab-Event", "Push Hook"),
        h("X-Gitlab-Instance", "https://gitlab.example.com"),
        h("webhook-id", id),
        h("webhook-timestamp", timestamp.to_string()),
        h("webhook-signature", format!("v1,{signature}")),
    ]
}

fn with_signature(
    mut headers: Vec<(&'static str, Vec<u8>)>,
    signature: impl AsRef<[u8]>,
) -> Vec<(&'static str, Vec<u8>)> {
    headers.retain(|(name, _)| *name != "webhook-signature");
    headers.push(h("webhook-signature", signature));
    headers
}

fn config(auth: Auth) -> IngestConfig {
    let auth = match auth {
        Auth::Token => AuthConfig::new(vec![Secret::new(TOKEN)], vec![]),
        Auth::Signed => {
            let key = format!("whsec_{}", BASE64.encode(SIGNING_KEY_BYTES));
            AuthConfig::new(vec![], vec![SigningKey::parse(&key).unwrap()])
        }
        Auth::Tied => AuthConfig::with_tied(
            vec![],
            vec![],
            vec![crate::auth::TiedSecrets {
                instances: vec!["gitlab.example.com".into()],
                tokens: vec![Secret::new(TOKEN)],
                signing_keys: vec![],
            }],
        ),
    };
    IngestConfig::new(auth.unwrap())
}

fn ensure(condition: bool, what: &str) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(what.to_string())
    }
}

fn header_map(case: &Case) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in &case.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        let unrepresentable = value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0));
        match HeaderValue::from_bytes(value) {
            Ok(value) => {
                assert!(
                    !unrepresentable,
                    "{}: http accepted a CR/LF/NUL header value",
                    case.name
                );
                map.append(name, value);
            }
            Err(_) => assert!(unrepresentable, "{}: http refused header {name}", case.name),
        }
    }
    map
}

fn cases() -> Vec<Case> {
    let mut cases = gitlab_cases();
    cases.extend(artifact_cases());
    cases
}

fn gitlab_cases() -> Vec<Case> {
    let now = NOW;
    let signed = |body: &[u8]| signature_headers(&SIGNING_KEY_BYTES, now, body);
    let long_ref = format!("refs/heads/{}", "r".repeat(crate::gitlab::MAX_NAME_BYTES));
    let long_ok_ref = format!("refs/heads/{}", "r".repeat(1000));
    let long_path = format!("group/{}", "p".repeat(crate::gitlab::MAX_NAME_BYTES));
    let many_commits: Vec<Value> = (0..20)
        .map(|i| json!({"id": format!("{i:040x}"), "added": [format!("file-{i}")], "modified": [], "removed": []}))
        .collect();

    vec![
        // ---- X-Gitlab-Token ------------------------------------------------------------
        case(
            "token missing",
            push_headers_with("X-Gitlab-Token", vec![]),
            PUSH_HOOK,
            Expect::Rejected(401, "unauthenticated"),
        ),
        case(
            "token wrong",
            push_headers_with("X-Gitlab-Token", vec![h("X-Gitlab-Token", "not-the-token")]),
            PUSH_HOOK,
            Expect::Rejected(401, "unauthenticated"),
        ),
        case(
            "token empty",
            push_headers_with("X-Gitlab-Token", vec![h("X-Gitlab-Token", "")]),
            PUSH_HOOK,
            Expect::Rejected(401, "unauthenticated"),
        ),
        case(
            "token a prefix of the real one",
            push_headers_with(
                "X-Gitlab-Token",
                vec![h("X-Gitlab-Token", &TOKEN[..TOKEN.len() - 1])],
            ),
            PUSH_HOOK,
            Expect::Rejected(401, "unauthenticated"),
        ),
        case(
            "token in another case",
            push_headers_with(
                "X-Gitlab-Token",
                vec![h("X-Gitlab-Token", TOKEN.to_uppercase())],
            ),
            PUSH_HOOK,
            Expect::Rejected(401, "unauthenticated"),
        ),
        case(
            "token with surrounding blanks",
            push_headers_with(
                "X-Gitlab-Token",
                vec![h("X-Gitlab-Token", format!(" {TOKEN}\t"))],
            ),
            PUSH_HOOK,
            Expect::Rejected(401, "unauthenticated"),
        ),
        case(
            "token duplicated, both right",
            push_headers_with("", vec![h("X-Gitlab-Token", TOKEN)]),
            PUSH_HOOK,
            Expect::Rejected(401, "unauthenticated"),
        ),
        case(
            "token duplicated, wrong then right",
            push_headers_with(
                "X-Gitlab-Token",
                vec![h("X-Gitlab-Token", "wrong"), h("X-Gitlab-Token", TOKEN)],
            ),
            PUSH_HOOK,
            Expect::Rejected(401, "unauthenticated"),
        ),
        case(
            "token folded into one comma-joined value",
            push_headers_with(
                "X-Gitlab-Token",
                vec![h("X-Gitlab-Token", format!("{TOKEN}, {TOKEN}"))],
            ),
            PUSH_HOOK,
            Expect::Rejected(401, "unauthenticated"),
        ),
        // http cannot carry these values: the header is lost, and so is authentication.
        case(
            "token with CRLF and an injected header",
            push_headers_with(
                "X-Gitlab-Token",
                vec![h(
                    "X-Gitlab-Token",
                    format!("{TOKEN}\r\nX-Gitlab-Event: Push Hook"),
                )],
            ),
            PUSH_HOOK,
            Expect::Rejected(401, "unauthenticated"),
        ),
        case(
            "token with a bare LF",
            push_headers_with(
                "X-Gitlab-Token",
                vec![h("X-Gitlab-Token", format!("{TOKEN}\n"))],
            ),
            PUSH_HOOK,
            Expect::Rejected(401, "unauthenticated"),
        ),
        case(
            "token with non-UTF-8 bytes",
            push_headers_with(
                "X-Gitlab-Token",
                vec![h(
                    "X-Gitlab-Token",
                    [TOKEN.as_bytes(), b"\xff\xfe"].concat(),
                )],
            ),
            PUSH_HOOK,
            Expect::Rejected(401, "unauthenticated"),
        ),
        case(
            "the token inside the body does not authenticate",
            push_headers_with("X-Gitlab-Token", vec![]),
            push_with(|v| v["X-Gitlab-Token"] = json!(TOKEN)),
            Expect::Rejected(401, "unauthenticated"),
        ),
        case(
            "token checked before the event is read",
            push_headers_with("X-Gitlab-Token", vec![h("X-Gitlab-Token", "wrong")]),
            b"not json".to_vec(),
            Expect::Rejected(401, "unauthenticated"),
        ),
        // ---- webhook-signature -----------------------------------------------------------
        signed_case(
            "signature valid (control row)",
            signed(PUSH_HOOK),
            PUSH_HOOK,
            Expect::Accepted(1, |_| Ok(())),
        ),
        signed_case(
            "signature stale",
            signature_headers(&SIGNING_KEY_BYTES, now - 301, PUSH_HOOK),
            PUSH_HOOK,
            Expect::Rejected(401, "unauthenticated"),
        ),
        signed_case(
            "signature from the future",
            signature_headers(&SIGNING_KEY_BYTES, now + 301, PUSH_HOOK),
            PUSH_HOOK,
            Expect::Rejected(401, "unauthenticated"),
        ),
        signed_case(
            "signature forged (right shape, wrong MAC)",
            with_signature(
                signed(PUSH_HOOK),
                format!("v1,{}", BASE64.encode([0u8; 32])),
            ),
            PUSH_HOOK,
            Expect::Rejected(401, "unauthenticated"),
        ),
        signed_case(
            "signature malformed",
            with_signature(signed(PUSH_HOOK), "v1,not-base64!"),
            PUSH_HOOK,
            Expect::Rejected(401, "unauthenticated"),
        ),
        signed_case(
            "signature with non-UTF-8 bytes",
            with_signature(signed(PUSH_HOOK), b"v1,\xff"),
            PUSH_HOOK,
            Expect::Rejected(401, "unauthenticated"),
        ),
        signed_case(
            "signature made with another key",
            signature_headers(&OTHER_KEY_BYTES, now, PUSH_HOOK),
            PUSH_HOOK,
            Expect::Rejected(401, "unauthenticated"),
        ),
        signed_case(
            "signature over another body",
            signed(TAG_PUSH_HOOK),
            PUSH_HOOK,
            Expect::Rejected(401, "unauthenticated"),
        ),
        signed_case(
            "signature missing",
            signed(PUSH_HOOK)
                .into_iter()
                .filter(|(n, _)| *n != "webhook-signature")
                .collect(),
            PUSH_HOOK,
            Expect::Rejected(401, "unauthenticated"),
        ),
        signed_case(
            "a token is no substitute for a required signature",
            push_headers(),
            PUSH_HOOK,
            Expect::Rejected(401, "unauthenticated"),
        ),
        // ---- size ----------------------------------------------------------------------
        case(
            "body over the cap",
            push_headers(),
            vec![b' '; DEFAULT_MAX_BODY_BYTES + 1],
            Expect::Rejected(413, "too_large"),
        ),
        case(
            "body over the cap, even with a wrong token",
            push_headers_with("X-Gitlab-Token", vec![h("X-Gitlab-Token", "wrong")]),
            vec![b'{'; DEFAULT_MAX_BODY_BYTES + 1],
            Expect::Rejected(413, "too_large"),
        ),
        // ---- body is not a push ----------------------------------------------------------
        case(
            "empty body",
            push_headers(),
            Vec::new(),
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "body is not JSON",
            push_headers(),
            b"ref=refs/heads/main&after=abc".to_vec(),
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "JSON cut short",
            push_headers(),
            PUSH_HOOK[..PUSH_HOOK.len() / 2].to_vec(),
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "JSON with trailing garbage",
            push_headers(),
            [PUSH_HOOK, b"}"].concat(),
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "a JSON array",
            push_headers(),
            b"[{\"ref\":\"refs/heads/main\"}]".to_vec(),
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "a JSON string",
            push_headers(),
            b"\"push\"".to_vec(),
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "JSON nested beyond any sense",
            push_headers(),
            [vec![b'['; 100_000], vec![b']'; 100_000]].concat(),
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "a UTF-8 byte-order mark before the JSON",
            push_headers(),
            [b"\xef\xbb\xbf".as_slice(), PUSH_HOOK].concat(),
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "non-UTF-8 bytes in the body",
            push_headers(),
            [
                &PUSH_HOOK[..30],
                b"\xff\xfe\xc0".as_slice(),
                &PUSH_HOOK[30..],
            ]
            .concat(),
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "a lone surrogate escape in the ref",
            push_headers(),
            String::from_utf8_lossy(PUSH_HOOK)
                .replacen("refs/heads/master", "refs/heads/\\ud800", 1)
                .into_bytes(),
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "duplicate key",
            push_headers(),
            String::from_utf8_lossy(PUSH_HOOK)
                .replacen("\"ref\":", "\"ref\": \"refs/heads/evil\", \"ref\":", 1)
                .into_bytes(),
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "project_id is a string",
            push_headers(),
            push_with(|v| v["project_id"] = json!("15")),
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "project_id is a 1 MiB string: the answer does not echo it",
            push_headers(),
            push_with(|v| v["project_id"] = json!("\"".repeat(1 << 20))),
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "project_id is negative",
            push_headers(),
            push_with(|v| v["project_id"] = json!(-15)),
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "project_id differs from project.id",
            push_headers(),
            push_with(|v| v["project_id"] = json!(16)),
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "commits is an object",
            push_headers(),
            push_with(|v| v["commits"] = json!({"id": "x"})),
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "ref is a number",
            push_headers(),
            push_with(|v| v["ref"] = json!(42)),
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "ref is null",
            push_headers(),
            push_with(|v| v["ref"] = Value::Null),
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "ref is a short name, not refs/...",
            push_headers(),
            push_with(|v| v["ref"] = json!("main")),
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "after is not an object id",
            push_headers(),
            push_with(|v| v["after"] = json!("HEAD")),
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "project is missing",
            push_headers(),
            push_with(|v| {
                v.as_object_mut().unwrap().remove("project");
            }),
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "a merge request body sent as a Push Hook",
            push_headers(),
            MERGE_REQUEST,
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "ref longer than any real one",
            push_headers(),
            push_with(|v| v["ref"] = json!(long_ref)),
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "project path longer than any real one",
            push_headers(),
            push_with(|v| v["project"]["path_with_namespace"] = json!(long_path)),
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "project web_url of 1 MiB",
            push_headers(),
            push_with(|v| {
                v["project"]["web_url"] = json!(format!(
                    "https://gitlab.example.com/{}",
                    "a".repeat(1 << 20)
                ))
            }),
            Expect::Rejected(400, "malformed"),
        ),
        // ---- header injection attempts inside the JSON -------------------------------------
        case(
            "ref carrying CRLF and a header",
            push_headers(),
            push_with(|v| v["ref"] = json!("refs/heads/main\r\nX-Gitlab-Token: x")),
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "web_url carrying CRLF and a Host header",
            push_headers(),
            push_with(|v| {
                v["project"]["web_url"] =
                    json!("http://example.com/mike/diaspora\r\nHost: 169.254.169.254")
            }),
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "git_http_url carrying a NUL",
            push_headers(),
            push_with(|v| {
                v["project"]["git_http_url"] =
                    json!("http://example.com/mike/diaspora.git\u{0}@evil.example")
            }),
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "default_branch carrying a newline",
            push_headers(),
            push_with(|v| v["project"]["default_branch"] = json!("master\nX-Injected: 1")),
            Expect::Rejected(400, "malformed"),
        ),
        // ---- X-Gitlab-Event and other headers ----------------------------------------------
        case(
            "event header missing",
            push_headers_with("X-Gitlab-Event", vec![]),
            PUSH_HOOK,
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "event header duplicated",
            push_headers_with("", vec![h("X-Gitlab-Event", "Push Hook")]),
            PUSH_HOOK,
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "event header with non-UTF-8 bytes",
            push_headers_with(
                "X-Gitlab-Event",
                vec![h("X-Gitlab-Event", b"Push Hook\xff")],
            ),
            PUSH_HOOK,
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "event header with CRLF is lost, so it is missing",
            push_headers_with(
                "X-Gitlab-Event",
                vec![h("X-Gitlab-Event", "Push Hook\r\nX-Gitlab-Token: x")],
            ),
            PUSH_HOOK,
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "instance header duplicated",
            push_headers_with("", vec![h("X-Gitlab-Instance", "https://evil.example")]),
            PUSH_HOOK,
            Expect::Rejected(400, "malformed"),
        ),
        // ---- ignored: 202 with a reason, never 4xx -------------------------------------------
        case(
            "unknown X-Gitlab-Event",
            gitlab("Job Hook"),
            b"{}".to_vec(),
            Expect::Ignored("Job Hook"),
        ),
        case(
            "unknown X-Gitlab-Event with a body that is not JSON",
            gitlab("Deployment Hook"),
            b"\xff not json".to_vec(),
            Expect::Ignored("Deployment Hook"),
        ),
        case(
            "X-Gitlab-Event in the wrong case",
            gitlab("push hook"),
            PUSH_HOOK,
            Expect::Ignored("push hook"),
        ),
        case(
            "a 10 KiB event name is ignored with a short reason",
            gitlab(&"E".repeat(10 * 1024)),
            PUSH_HOOK,
            Expect::Ignored("EEEE"),
        ),
        case(
            "merge request hook",
            gitlab("Merge Request Hook"),
            MERGE_REQUEST,
            Expect::Ignored("Merge Request Hook"),
        ),
        case(
            "system hook with an unknown event_name",
            gitlab("System Hook"),
            br#"{"event_name":"project_create","project_id":1}"#.to_vec(),
            Expect::Ignored("project_create"),
        ),
        case(
            "system hook with an event_name made up",
            gitlab("System Hook"),
            br#"{"event_name":"push_v2"}"#.to_vec(),
            Expect::Ignored("push_v2"),
        ),
        case(
            "system hook with neither event_name nor object_kind",
            gitlab("System Hook"),
            b"{}".to_vec(),
            Expect::Ignored("system hook"),
        ),
        case(
            "system hook merge request (object_kind only)",
            gitlab("System Hook"),
            MERGE_REQUEST,
            Expect::Ignored("merge_request"),
        ),
        case(
            "repository_update with no changes",
            gitlab("System Hook"),
            json_with(REPOSITORY_UPDATE, |v| v["changes"] = json!([])),
            Expect::Ignored("no ref changes"),
        ),
        // ---- system hooks that are not JSON are still malformed -------------------------------
        case(
            "system hook body is not JSON",
            gitlab("System Hook"),
            b"event_name=push".to_vec(),
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "system hook event_name is a number",
            gitlab("System Hook"),
            br#"{"event_name":5}"#.to_vec(),
            Expect::Rejected(400, "malformed"),
        ),
        // ---- accepted edge cases: what is enqueued -------------------------------------------
        case(
            "deleted branch is enqueued as a deletion (dispatch triggers nothing for it)",
            push_headers(),
            push_with(|v| {
                v["after"] = json!(ZERO_SHA);
                v["checkout_sha"] = Value::Null;
                v["commits"] = json!([]);
                v["total_commits_count"] = json!(0);
            }),
            Expect::Accepted(1, |p| {
                ensure(p[0].is_branch_deletion(), "a branch deletion")?;
                ensure(p[0].checkout_sha.is_none(), "no checkout_sha")?;
                ensure(p[0].changed_paths.is_none(), "changed paths unknown")
            }),
        ),
        case(
            "tag deletion is enqueued (a semver GitRepository needs it)",
            gitlab("Tag Push Hook"),
            json_with(TAG_PUSH_HOOK, |v| {
                v["before"] = v["after"].clone();
                v["after"] = json!(ZERO_SHA);
                v["checkout_sha"] = Value::Null;
            }),
            Expect::Accepted(1, |p| {
                ensure(p[0].event == PushEvent::TagPush, "a tag push")?;
                ensure(p[0].is_deletion(), "a deletion")?;
                ensure(p[0].changed_paths.is_none(), "changed paths unknown")
            }),
        ),
        case(
            "push with 0 commits (new branch): changed paths unknown, not empty",
            push_headers(),
            push_with(|v| {
                v["before"] = json!(ZERO_SHA);
                v["commits"] = json!([]);
                v["total_commits_count"] = json!(0);
            }),
            Expect::Accepted(1, |p| {
                ensure(p[0].changed_paths.is_none(), "changed paths unknown")
            }),
        ),
        case(
            "20 of 20 commits listed: changed paths known",
            push_headers(),
            push_with(|v| {
                v["commits"] = json!(many_commits);
                v["total_commits_count"] = json!(20);
            }),
            Expect::Accepted(1, |p| {
                ensure(
                    p[0].changed_paths.as_ref().map(Vec::len) == Some(20),
                    "20 changed paths",
                )
            }),
        ),
        case(
            "more than 20 commits (newest 20 listed): changed paths unknown",
            push_headers(),
            push_with(|v| {
                v["commits"] = json!(many_commits);
                v["total_commits_count"] = json!(21);
            }),
            Expect::Accepted(1, |p| {
                ensure(p[0].changed_paths.is_none(), "changed paths unknown")
            }),
        ),
        case(
            "a long but plausible ref is accepted whole",
            push_headers(),
            push_with(|v| v["ref"] = json!(long_ok_ref)),
            Expect::Accepted(1, |p| {
                ensure(
                    p[0].git_ref.len() == "refs/heads/".len() + 1000,
                    "the whole ref",
                )
            }),
        ),
        case(
            "instance header with non-UTF-8 bytes falls back to the project's web_url",
            push_headers_with(
                "X-Gitlab-Instance",
                vec![h("X-Gitlab-Instance", b"https://gitlab.example.com\xff")],
            ),
            PUSH_HOOK,
            Expect::Accepted(1, |p| {
                ensure(
                    p[0].instance == "http://example.com",
                    "instance from web_url",
                )
            }),
        ),
        case(
            "instance header with CRLF is lost: instance from web_url",
            push_headers_with(
                "X-Gitlab-Instance",
                vec![h(
                    "X-Gitlab-Instance",
                    "https://evil.example\r\nX-Gitlab-Token: x",
                )],
            ),
            PUSH_HOOK,
            Expect::Accepted(1, |p| {
                ensure(
                    p[0].instance == "http://example.com",
                    "instance from web_url",
                )
            }),
        ),
        case(
            "unknown JSON fields that look like headers change nothing",
            push_headers(),
            push_with(|v| {
                v["X-Gitlab-Event"] = json!("Merge Request Hook");
                v["headers"] = json!({"X-Gitlab-Token": "x", "Host": "169.254.169.254"});
            }),
            Expect::Accepted(1, |p| {
                ensure(
                    p[0].event == PushEvent::Push && p[0].git_ref == "refs/heads/master",
                    "the push as sent",
                )
            }),
        ),
        case(
            "system hook push: changed paths never known",
            gitlab("System Hook"),
            SYSTEM_PUSH,
            Expect::Accepted(1, |p| {
                ensure(p[0].changed_paths.is_none(), "changed paths unknown")
            }),
        ),
        // The request head alone (check_head, what serve answers before reading a body).
        case(
            "declared Content-Length over the cap with a wrong token: 413 first",
            push_headers_with(
                "X-Gitlab-Token",
                vec![h("X-Gitlab-Token", "wrong"), h("Content-Length", "5242881")],
            ),
            PUSH_HOOK,
            Expect::Rejected(413, "too_large"),
        ),
        case(
            "a Content-Length that is not a number: the body decides",
            push_headers_with("", vec![h("Content-Length", "lots")]),
            PUSH_HOOK,
            Expect::Accepted(1, |_| Ok(())),
        ),
        case(
            "two Content-Length values: the body decides",
            push_headers_with(
                "",
                vec![h("Content-Length", "99999999"), h("Content-Length", "1")],
            ),
            PUSH_HOOK,
            Expect::Accepted(1, |_| Ok(())),
        ),
        // A token tied to gitlab.example.com (X-Gitlab-Instance is not signed: a delivery
        // replayed with another instance must not become that instance's push).
        tied(
            "tied token from its instance",
            push_headers(),
            Expect::Accepted(1, |p| {
                ensure(
                    p[0].instance == "https://gitlab.example.com",
                    "its instance",
                )
            }),
        ),
        tied(
            "tied token, instance header in capitals, with a path and the default port",
            push_headers_with(
                "X-Gitlab-Instance",
                vec![h("X-Gitlab-Instance", "HTTPS://GITLAB.EXAMPLE.COM:443/x")],
            ),
            Expect::Accepted(1, |_| Ok(())),
        ),
        tied(
            "tied token, another instance's header",
            push_headers_with(
                "X-Gitlab-Instance",
                vec![h("X-Gitlab-Instance", "https://gitlab.other.example")],
            ),
            Expect::Rejected(401, "unauthenticated"),
        ),
        tied(
            "tied token, a look-alike host (a suffix is not the host)",
            push_headers_with(
                "X-Gitlab-Instance",
                vec![h(
                    "X-Gitlab-Instance",
                    "https://gitlab.example.com.evil.test",
                )],
            ),
            Expect::Rejected(401, "unauthenticated"),
        ),
        tied(
            "tied token, the instance behind user info",
            push_headers_with(
                "X-Gitlab-Instance",
                vec![h(
                    "X-Gitlab-Instance",
                    "https://gitlab.example.com@evil.test",
                )],
            ),
            Expect::Rejected(401, "unauthenticated"),
        ),
        tied(
            "tied token, the same host over http (the port differs, the host does not)",
            push_headers_with(
                "X-Gitlab-Instance",
                vec![h("X-Gitlab-Instance", "http://gitlab.example.com")],
            ),
            Expect::Accepted(1, |_| Ok(())),
        ),
        tied(
            "tied token, no instance header: from project.web_url (example.com)",
            push_headers_with("X-Gitlab-Instance", vec![]),
            Expect::Rejected(401, "unauthenticated"),
        ),
        tied(
            "tied token, an instance header that is no URL: from project.web_url",
            push_headers_with(
                "X-Gitlab-Instance",
                vec![h("X-Gitlab-Instance", "gitlab.example.com")],
            ),
            Expect::Rejected(401, "unauthenticated"),
        ),
        tied(
            "tied token, a duplicated instance header",
            push_headers_with(
                "",
                vec![h("X-Gitlab-Instance", "https://gitlab.example.com")],
            ),
            Expect::Rejected(400, "malformed"),
        ),
        tied(
            "tied token, a wrong token is still 401",
            push_headers_with("X-Gitlab-Token", vec![h("X-Gitlab-Token", "wrong")]),
            Expect::Rejected(401, "unauthenticated"),
        ),
    ]
}

fn tied(name: &'static str, headers: Vec<(&'static str, Vec<u8>)>, expect: Expect) -> Case {
    Case {
        auth: Auth::Tied,
        ..case(name, headers, PUSH_HOOK, expect)
    }
}

fn run(case: &Case) -> (Result<Accepted, IngestError>, IngestResponse, Vec<Push>) {
    let queue = MemoryQueue::default();
    let headers = header_map(case);
    let now = OffsetDateTime::from_unix_timestamp(NOW).unwrap();
    // The in-memory queue never waits, so the future completes on its first poll.
    let result = ingest_from(
        case.source,
        &config(case.auth),
        &queue,
        &headers,
        &case.body,
        now,
        "test-request",
    )
    .now_or_never()
    .expect("ingest waited");
    let response = IngestResponse::from_result(&result);
    let pushes = queue.pushes.lock().unwrap().clone();
    (result, response, pushes)
}

#[test]
fn bad_input_table() {
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    println!("{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let (result, response, pushes) = run(case);
        let body: Value = serde_json::from_str(&response.body).unwrap();
        let verdict = match &case.expect {
            Expect::Rejected(status, code) => {
                let good = response.status == *status
                    && body["status"] == "rejected"
                    && body["error"] == *code
                    && result.is_err()
                    && pushes.is_empty();
                ensure(good, &format!("want {status} {code}, nothing enqueued"))
            }
            Expect::Ignored(reason) => {
                let text = body["reason"].as_str().unwrap_or_default();
                let good = response.status == 202
                    && body["status"] == "ignored"
                    && text.contains(reason)
                    && text.len() <= 200
                    && pushes.is_empty();
                ensure(
                    good,
                    &format!("want 202 ignored mentioning {reason:?}, short, nothing enqueued"),
                )
            }
            Expect::Accepted(count, check) => {
                let keys: Vec<String> = pushes.iter().map(|p| p.key.clone()).collect();
                ensure(
                    response.status == 202
                        && body["status"] == "accepted"
                        && pushes.len() == *count
                        && matches!(&result, Ok(Accepted::Enqueued { keys: k }) if *k == keys),
                    &format!("want 202 accepted with {count} push(es) enqueued"),
                )
                .and_then(|()| check(&pushes))
            }
        };
        // Whatever the outcome: no secret in the answer, and an answer of sane size.
        let verdict = verdict.and_then(|()| {
            ensure(
                !response.body.contains(TOKEN),
                "the answer echoes the token",
            )?;
            ensure(
                response.body.len() <= 4096,
                "the answer is longer than 4 KiB",
            )
        });
        if let Err(problem) = verdict {
            failures.push(format!(
                "{}: {problem}; got {} {} ({} enqueued)",
                case.name,
                response.status,
                response.body.chars().take(300).collect::<String>(),
                pushes.len()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

const GITLAB_REGISTRY_PUSH: &[u8] =
    include_bytes!("../tests/fixtures/registry/gitlab-registry-manifest-push.json");
const DISTRIBUTION_ENVELOPE: &[u8] =
    include_bytes!("../tests/fixtures/registry/distribution-push-envelope.json");
const DISTRIBUTION_PULL: &[u8] =
    include_bytes!("../tests/fixtures/registry/distribution-manifest-pull.json");
const HARBOR_BY_TAG: &[u8] =
    include_bytes!("../tests/fixtures/harbor/push-artifact-default-by-tag.json");
const HARBOR_BY_DIGEST: &[u8] =
    include_bytes!("../tests/fixtures/harbor/push-artifact-default-by-digest.json");
const HARBOR_CLOUDEVENTS: &[u8] =
    include_bytes!("../tests/fixtures/harbor/push-artifact-cloudevents.json");
const HARBOR_PULL: &[u8] =
    include_bytes!("../tests/fixtures/harbor/pull-artifact-cloudevents.json");
const PIPELINE: &[u8] = include_bytes!("../tests/fixtures/gitlab/pipeline_hook.json");

/// Registry endpoints and pipeline hooks: the same order of checks (size, authentication,
/// parse, enqueue), `Authorization` instead of `X-Gitlab-Token`.
fn artifact_cases() -> Vec<Case> {
    let bearer = || vec![h("Authorization", format!("Bearer {TOKEN}"))];
    let artifact = |p: &[Push]| {
        ensure(
            p.iter()
                .all(|p| p.event == PushEvent::ArtifactPush && p.artifact().is_some()),
            "artifact pushes",
        )
    };
    let distribution = Source::Distribution;
    let harbor = Source::Harbor;
    let registry_edit =
        |edit: fn(&mut Value)| json_with(GITLAB_REGISTRY_PUSH, |v| edit(&mut v["events"][0]));
    vec![
        // ---- Distribution / GitLab container registry: authentication -------------------
        registry_case(
            "registry: bearer token",
            distribution,
            bearer(),
            GITLAB_REGISTRY_PUSH,
            Expect::Accepted(1, artifact),
        ),
        registry_case(
            "registry: bare token, as GitLab's example sends it",
            distribution,
            vec![h("Authorization", TOKEN)],
            GITLAB_REGISTRY_PUSH,
            Expect::Accepted(1, artifact),
        ),
        registry_case(
            "registry: Authorization missing",
            distribution,
            vec![],
            GITLAB_REGISTRY_PUSH,
            Expect::Rejected(401, "unauthenticated"),
        ),
        registry_case(
            "registry: wrong token",
            distribution,
            vec![h("Authorization", "Bearer not-the-token")],
            GITLAB_REGISTRY_PUSH,
            Expect::Rejected(401, "unauthenticated"),
        ),
        registry_case(
            "registry: X-Gitlab-Token is not read",
            distribution,
            vec![h("X-Gitlab-Token", TOKEN)],
            GITLAB_REGISTRY_PUSH,
            Expect::Rejected(401, "unauthenticated"),
        ),
        registry_case(
            "registry: Authorization duplicated",
            distribution,
            vec![
                h("Authorization", format!("Bearer {TOKEN}")),
                h("Authorization", format!("Bearer {TOKEN}")),
            ],
            GITLAB_REGISTRY_PUSH,
            Expect::Rejected(401, "unauthenticated"),
        ),
        registry_case(
            "registry: token with a CRLF is lost, so it is missing",
            distribution,
            vec![h("Authorization", format!("Bearer {TOKEN}\r\nX: y"))],
            GITLAB_REGISTRY_PUSH,
            Expect::Rejected(401, "unauthenticated"),
        ),
        registry_case(
            "registry: wrong token on an event that would be ignored",
            distribution,
            vec![h("Authorization", "x")],
            DISTRIBUTION_PULL,
            Expect::Rejected(401, "unauthenticated"),
        ),
        registry_case(
            "registry: over the size cap with a wrong token is 413",
            distribution,
            vec![h("Authorization", "x")],
            vec![b' '; DEFAULT_MAX_BODY_BYTES + 1],
            Expect::Rejected(413, "too_large"),
        ),
        // ---- Distribution: what is and is not a push -----------------------------------------
        registry_case(
            "registry: any Content-Type is read",
            distribution,
            vec![
                h("Authorization", format!("Bearer {TOKEN}")),
                h(
                    "Content-Type",
                    "application/vnd.docker.distribution.events.v2+json",
                ),
            ],
            GITLAB_REGISTRY_PUSH,
            Expect::Accepted(1, artifact),
        ),
        registry_case(
            "registry: pull",
            distribution,
            bearer(),
            DISTRIBUTION_PULL,
            Expect::Ignored("action \"pull\""),
        ),
        registry_case(
            "registry: manifest by digest and blob pushes",
            distribution,
            bearer(),
            DISTRIBUTION_ENVELOPE,
            Expect::Ignored("no tagged manifest push"),
        ),
        registry_case(
            "registry: no events",
            distribution,
            bearer(),
            r#"{"events": []}"#,
            Expect::Ignored("holds no event"),
        ),
        registry_case(
            "registry: a 10 KiB action is quoted short",
            distribution,
            bearer(),
            registry_edit(|e| e["action"] = json!("a".repeat(10 * 1024))),
            Expect::Ignored("action"),
        ),
        registry_case(
            "registry: not JSON",
            distribution,
            bearer(),
            b"\xff not json".to_vec(),
            Expect::Rejected(400, "malformed"),
        ),
        registry_case(
            "registry: no envelope",
            distribution,
            bearer(),
            "{}",
            Expect::Rejected(400, "malformed"),
        ),
        registry_case(
            "registry: a GitLab push sent to the registry endpoint",
            distribution,
            bearer(),
            PUSH_HOOK,
            Expect::Rejected(400, "malformed"),
        ),
        registry_case(
            "registry: CRLF and a header inside the tag",
            distribution,
            bearer(),
            registry_edit(|e| e["target"]["tag"] = json!("v1\r\nX-Injected: 1")),
            Expect::Rejected(400, "malformed"),
        ),
        registry_case(
            "registry: repository climbing out",
            distribution,
            bearer(),
            registry_edit(|e| e["target"]["repository"] = json!("../../etc")),
            Expect::Rejected(400, "malformed"),
        ),
        registry_case(
            "registry: host with a path",
            distribution,
            bearer(),
            registry_edit(|e| e["request"]["host"] = json!("169.254.169.254/latest")),
            Expect::Rejected(400, "malformed"),
        ),
        registry_case(
            "registry: digest missing",
            distribution,
            bearer(),
            registry_edit(|e| {
                e["target"].as_object_mut().unwrap().remove("digest");
            }),
            Expect::Rejected(400, "malformed"),
        ),
        registry_case(
            "registry: 101 events",
            distribution,
            bearer(),
            json!({"events": vec![json!({"action": "pull"}); 101]}).to_string(),
            Expect::Rejected(400, "malformed"),
        ),
        // ---- Harbor ------------------------------------------------------------------------
        registry_case(
            "harbor: Default push by tag",
            harbor,
            vec![h("Authorization", TOKEN)],
            HARBOR_BY_TAG,
            Expect::Accepted(1, artifact),
        ),
        registry_case(
            "harbor: CloudEvents push by tag",
            harbor,
            bearer(),
            json_with(HARBOR_CLOUDEVENTS, |v| {
                v["data"]["resources"][0]["tag"] = json!("v2")
            }),
            Expect::Accepted(1, artifact),
        ),
        registry_case(
            "harbor: untagged push",
            harbor,
            bearer(),
            HARBOR_BY_DIGEST,
            Expect::Ignored("no tag"),
        ),
        registry_case(
            "harbor: CloudEvents untagged push",
            harbor,
            bearer(),
            HARBOR_CLOUDEVENTS,
            Expect::Ignored("no tag"),
        ),
        registry_case(
            "harbor: pull",
            harbor,
            bearer(),
            HARBOR_PULL,
            Expect::Ignored("harbor.artifact.pulled"),
        ),
        registry_case(
            "harbor: wrong token",
            harbor,
            vec![h("Authorization", "Bearer nope")],
            HARBOR_BY_TAG,
            Expect::Rejected(401, "unauthenticated"),
        ),
        registry_case(
            "harbor: not JSON",
            harbor,
            bearer(),
            "not json",
            Expect::Rejected(400, "malformed"),
        ),
        registry_case(
            "harbor: resource URL without a host",
            harbor,
            bearer(),
            json_with(HARBOR_BY_TAG, |v| {
                v["event_data"]["resources"][0]["resource_url"] = json!("debian:latest")
            }),
            Expect::Rejected(400, "malformed"),
        ),
        registry_case(
            "harbor: a distribution envelope sent to the Harbor endpoint",
            harbor,
            bearer(),
            GITLAB_REGISTRY_PUSH,
            Expect::Ignored("is not an artifact push"),
        ),
        // ---- GitLab pipeline hooks ----------------------------------------------------------
        case(
            "pipeline: success",
            gitlab("Pipeline Hook"),
            PIPELINE,
            Expect::Accepted(1, |p| {
                ensure(
                    p[0].event == PushEvent::Pipeline && p[0].git_ref == "refs/heads/master",
                    "a pipeline of master",
                )
            }),
        ),
        case(
            "pipeline: failed triggers nothing",
            gitlab("Pipeline Hook"),
            json_with(PIPELINE, |v| {
                v["object_attributes"]["status"] = json!("failed")
            }),
            Expect::Ignored("not success"),
        ),
        case(
            "pipeline: running triggers nothing",
            gitlab("Pipeline Hook"),
            json_with(PIPELINE, |v| {
                v["object_attributes"]["status"] = json!("running")
            }),
            Expect::Ignored("not success"),
        ),
        case(
            "pipeline: wrong token",
            vec![
                h("X-Gitlab-Event", "Pipeline Hook"),
                h("X-Gitlab-Token", "x"),
            ],
            PIPELINE,
            Expect::Rejected(401, "unauthenticated"),
        ),
        case(
            "pipeline: empty body",
            gitlab("Pipeline Hook"),
            "{}",
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "pipeline: commit not hex",
            gitlab("Pipeline Hook"),
            json_with(PIPELINE, |v| {
                v["object_attributes"]["sha"] = json!("not-a-sha")
            }),
            Expect::Rejected(400, "malformed"),
        ),
        case(
            "pipeline: CRLF in the ref",
            gitlab("Pipeline Hook"),
            json_with(PIPELINE, |v| {
                v["object_attributes"]["ref"] = json!("main\r\nX: 1")
            }),
            Expect::Rejected(400, "malformed"),
        ),
    ]
}

#[test]
fn line_breaks_in_a_configured_token_are_refused_at_start_up() {
    // GitLab strips line breaks from the token it sends, so such a token could never match.
    for token in [
        format!("{TOKEN}\n"),
        format!("{TOKEN}\r\n"),
        "a\nb".to_string(),
    ] {
        assert!(AuthConfig::new(vec![Secret::new(token)], vec![]).is_err());
    }
}
