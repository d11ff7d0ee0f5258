//! Payload URLs cannot steer requests (DESIGN, "Nothing in a webhook payload can choose a
//! URL, a host or a credential"). A push whose project URLs point at other hosts, at the
//! instance metadata service, at localhost, or carry user info, `@` or CRLF, only decides
//! *which* GitRepositories match, by normalised location; *where* a trigger goes always
//! comes from the registry entry (its server's service proxy or its absolute receiver URL).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::tests::{entry, receiver, repository};
use super::*;
use crate::push::tests::sample_push;
use crate::trigger::request::RequestTarget;

const GITLAB_RECEIVER_TOKEN: &str = "steering-receiver-token-91c3";

/// GitRepositories of one cluster, by name; every one tracks branch `main`.
const REPOSITORIES: [(&str, &str); 7] = [
    ("legit", "https://gitlab.example.com/mike/diaspora.git"),
    (
        "legit-ssh",
        "ssh://git@gitlab.example.com/mike/diaspora.git",
    ),
    ("evil", "https://evil.example/mike/diaspora.git"),
    ("imds", "http://169.254.169.254/mike/diaspora.git"),
    ("imds6", "http://[fd00:ec2::254]/mike/diaspora.git"),
    ("local", "ssh://git@localhost/mike/diaspora.git"),
    ("other-project", "https://gitlab.example.com/mike/other.git"),
];

/// How an entry sends triggers, and the target every request must have.
struct Endpoint {
    name: &'static str,
    trigger: Value,
    /// The request target for a webhook path; `None` in annotate mode.
    expected: Option<fn(&str) -> RequestTarget>,
}

fn endpoints() -> Vec<Endpoint> {
    let tokens = json!({"flux-system/gl": GITLAB_RECEIVER_TOKEN});
    vec![
        Endpoint {
            name: "default service proxy",
            trigger: json!({"receiver_tokens": tokens}),
            expected: Some(|path| {
                RequestTarget::ApiServerPath(format!(
                    "{}{path}",
                    crate::registry::DEFAULT_RECEIVER_PROXY
                ))
            }),
        },
        Endpoint {
            name: "own service proxy",
            trigger: json!({"receiver_tokens": tokens, "webhook_receiver_url": "/api/v1/namespaces/flux/services/https:receiver:443/proxy"}),
            expected: Some(|path| {
                RequestTarget::ApiServerPath(format!(
                    "/api/v1/namespaces/flux/services/https:receiver:443/proxy{path}"
                ))
            }),
        },
        Endpoint {
            name: "absolute receiver URL",
            trigger: json!({"receiver_tokens": tokens, "webhook_receiver_url": "https://receiver.internal.example/flux/"}),
            expected: Some(|path| {
                RequestTarget::Absolute(
                    url::Url::parse(&format!("https://receiver.internal.example/flux{path}"))
                        .unwrap(),
                )
            }),
        },
        Endpoint {
            name: "annotate mode",
            trigger: json!({"mode": "annotate"}),
            expected: None,
        },
    ]
}

fn view() -> ClusterView {
    let repositories: Vec<Value> = REPOSITORIES
        .iter()
        .map(|(name, url)| repository(name, json!({"url": url})))
        .collect();
    // One generic Receiver per repository, and one gitlab Receiver selecting them all.
    let mut receivers: Vec<Value> = REPOSITORIES
        .iter()
        .map(|(name, _)| {
            receiver(
                &format!("r-{name}"),
                "generic",
                "",
                json!([{"kind": "GitRepository", "name": name}]),
            )
        })
        .collect();
    receivers.push(receiver(
        "gl",
        "gitlab",
        GITLAB_RECEIVER_TOKEN,
        json!([{"kind": "GitRepository", "name": "*"}]),
    ));
    ClusterView {
        repositories: repositories.iter().map(GitRepository::from_json).collect(),
        receivers: receivers.iter().map(Receiver::from_json).collect(),
        freshness: crate::matching::select::Freshness::Fresh,
        ..ClusterView::default()
    }
}

/// (name, http_url, ssh_url, web_url, GitRepositories that must match)
type Case = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
);

const CASES: &[Case] = &[
    (
        "control: the project's own URLs",
        "https://gitlab.example.com/mike/diaspora.git",
        "git@gitlab.example.com:mike/diaspora.git",
        "https://gitlab.example.com/mike/diaspora",
        &["legit", "legit-ssh"],
    ),
    (
        "every URL at another host matches only that host's repository",
        "https://evil.example/mike/diaspora.git",
        "git@evil.example:mike/diaspora.git",
        "https://evil.example/mike/diaspora",
        &["evil"],
    ),
    (
        "web_url at the metadata service adds only a repository at that same location",
        "https://gitlab.example.com/mike/diaspora.git",
        "git@gitlab.example.com:mike/diaspora.git",
        "http://169.254.169.254/mike/diaspora",
        &["legit", "legit-ssh", "imds"],
    ),
    (
        "metadata service written in hex is the same host, nothing more",
        "http://0xA9FEA9FE/mike/diaspora.git",
        "",
        "",
        &["imds"],
    ),
    (
        "metadata service path is not the project path",
        "http://169.254.169.254/latest/meta-data/",
        "",
        "http://169.254.169.254/latest/api/token",
        &[],
    ),
    (
        "IPv6 metadata service",
        "http://[fd00:ec2::254]/mike/diaspora.git",
        "",
        "",
        &["imds6"],
    ),
    (
        "IPv6 metadata service in a longer spelling",
        "http://[fd00:ec2:0:0::254]:80/mike/diaspora",
        "",
        "",
        &["imds6"],
    ),
    (
        "localhost over scp-like ssh",
        "",
        "git@localhost:mike/diaspora.git",
        "",
        &["local"],
    ),
    (
        "user info naming the real host: the host is what follows @",
        "https://gitlab.example.com@evil.example/mike/diaspora.git",
        "",
        "https://gitlab.example.com:x@evil.example/mike/diaspora",
        &["evil"],
    ),
    (
        "user info naming another host in front of the real one",
        "https://evil.example@gitlab.example.com/mike/diaspora.git",
        "",
        "",
        &["legit", "legit-ssh"],
    ),
    (
        "scp-like with two @: the host is after the last one",
        "",
        "gitlab.example.com@evil.example:mike/diaspora.git",
        "",
        &["evil"],
    ),
    (
        "CRLF and a Host header in web_url: refused, matches nothing",
        "",
        "",
        "https://gitlab.example.com/mike/diaspora\r\nHost: evil.example",
        &[],
    ),
    (
        "CRLF before user info: refused",
        "https://evil.example\r\n@gitlab.example.com/mike/diaspora.git",
        "",
        "",
        &[],
    ),
    (
        "a host that merely starts with the real one",
        "https://gitlab.example.com.evil.example/mike/diaspora.git",
        "",
        "",
        &[],
    ),
    (
        "port, case and a trailing dot do not make another host",
        "https://GITLAB.Example.COM.:8443/Mike/Diaspora.git",
        "",
        "",
        &["legit", "legit-ssh"],
    ),
    (
        "a project path that merely starts with the real one",
        "https://gitlab.example.com/mike/diaspora-fork.git",
        "",
        "",
        &[],
    ),
    (
        "other schemes name no repository",
        "file:///etc/passwd",
        "ftp://evil.example/mike/diaspora.git",
        "javascript:alert(1)//gitlab.example.com/mike/diaspora",
        &[],
    ),
    ("no URLs at all", "", "", "", &[]),
];

#[test]
fn payload_urls_choose_matches_by_location_and_never_the_request_target() {
    let view = view();
    let mut failures = Vec::new();
    for endpoint in endpoints() {
        let entry = entry(json!({"trigger": endpoint.trigger}));
        for (name, http_url, ssh_url, web_url, expected) in CASES {
            let mut push = sample_push();
            push.project.http_url = http_url.to_string();
            push.project.ssh_url = ssh_url.to_string();
            push.project.web_url = web_url.to_string();
            let plan = plan_push(&entry, &view, &push);
            let context = format!("{} / {name}", endpoint.name);
            if !plan.problems.is_empty() {
                failures.push(format!("{context}: problems {:?}", plan.problems));
            }

            let mut matched = BTreeSet::new();
            for target in &plan.targets {
                match target {
                    Target::Annotate { repository } => {
                        matched.insert(repository.name.clone());
                    }
                    Target::AnnotateArtifact { object, .. } => {
                        failures.push(format!("{context}: a Git push annotated {object}"));
                    }
                    Target::Receiver { receiver: id, .. } => {
                        let receiver = view.receiver(id).unwrap();
                        if let Some(repo) = id.name.strip_prefix("r-") {
                            matched.insert(repo.to_string());
                        }
                        let ReceiverCall::Ready(request) = receiver_call(&entry, receiver, &push)
                        else {
                            failures.push(format!("{context}: no request for {id}"));
                            continue;
                        };
                        let path = receiver.webhook_path.as_deref().unwrap();
                        let want = (endpoint.expected.unwrap())(path);
                        if request.target != want {
                            failures.push(format!(
                                "{context}: {id} goes to {:?}, not {want:?}",
                                request.target
                            ));
                        }
                        // Only fixed header values: nothing from the payload.
                        for (header, value) in &request.headers {
                            let value = value.to_str().unwrap_or("<bytes>");
                            let fixed = [
                                "application/json",
                                crate::trigger::request::USER_AGENT,
                                "Push Hook",
                                GITLAB_RECEIVER_TOKEN,
                            ];
                            if !fixed.contains(&value) {
                                failures.push(format!("{context}: header {header}: {value:?}"));
                            }
                        }
                    }
                }
            }
            // The gitlab Receiver selects every repository: it is called iff any matched.
            let gitlab_called = plan
                .targets
                .iter()
                .any(|t| matches!(t, Target::Receiver { receiver, .. } if receiver.name == "gl"));
            if endpoint.expected.is_some() && gitlab_called == expected.is_empty() {
                failures.push(format!(
                    "{context}: gitlab Receiver called: {gitlab_called}"
                ));
            }
            let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
            if matched != expected {
                failures.push(format!("{context}: matched {matched:?}, want {expected:?}"));
            }
            // Every repository that did not match is skipped for its URL, never its ref.
            for skip in &plan.skipped {
                if skip.object.starts_with("gitrepository/")
                    && !skip.reason.contains("not the pushed project")
                {
                    failures.push(format!(
                        "{context}: {} skipped: {}",
                        skip.object, skip.reason
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The push fields fluxrelay never reads (`homepage`, `url`, `repository.*`, `project.ssh_url`
/// and `project.http_url` aliases) cannot change the Push, so cannot change anything after it.
#[test]
fn payload_fields_fluxrelay_does_not_read_cannot_change_the_push() {
    use crate::gitlab::{Delivery, ParsedEvent, parse_event};
    let fixture: Value =
        serde_json::from_slice(include_bytes!("../../tests/fixtures/gitlab/push_hook.json"))
            .unwrap();
    let parse = |body: &Value| {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "x-gitlab-event",
            http::HeaderValue::from_static("Push Hook"),
        );
        match parse_event(
            &headers,
            body.to_string().as_bytes(),
            &Delivery {
                received_at: "2026-11-22T00:00:00Z",
                id: "request:steering",
            },
        ) {
            Ok(ParsedEvent::Pushes(pushes)) => pushes,
            other => panic!("{other:?}"),
        }
    };
    let original = parse(&fixture);
    for hostile in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "https://localhost:6443/api/v1/secrets",
        "https://user:pass@evil.example/",
        "https://evil.example/\r\nHost: evil.example",
    ] {
        let mut body = fixture.clone();
        for field in ["homepage", "url", "ssh_url", "http_url"] {
            body["project"][field] = json!(hostile);
            body["repository"][field] = json!(hostile);
        }
        body["repository"]["git_http_url"] = json!(hostile);
        body["repository"]["git_ssh_url"] = json!(hostile);
        body["user_avatar"] = json!(hostile);
        body["commits"][0]["url"] = json!(hostile);
        assert_eq!(parse(&body), original, "{hostile:?}");
    }
    // Negative: the fields it does read do change it.
    let mut body = fixture.clone();
    body["project"]["git_http_url"] = json!("https://evil.example/mike/diaspora.git");
    assert_ne!(parse(&body), original);
}
