//! The GitLab API stand-in answers as GitLab's API documentation and code say
//! (docs/reference/gitlab.md §2–4): each row is a documented example or rule.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fluxrelay_testkit::gitlab::GitLabStandIn;
use serde_json::{Value, json};

const TOKEN: &str = "glpat-standin-api";
const READ_ONLY: &str = "glpat-standin-read";
const SHA: &str = "18f3e63d05582537db6d183d9d557be09e1f90c8";

async fn gitlab() -> GitLabStandIn {
    let gitlab = GitLabStandIn::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    gitlab.add_token(TOKEN, 1, &["api"]);
    gitlab.add_token(READ_ONLY, 2, &["read_api"]);
    gitlab.add_project(5, "thedude/gitlab-foss");
    gitlab.commit(5, "master", SHA, None, &[("README.md", Some("hello"))]);
    gitlab
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn call(
    gitlab: &GitLabStandIn,
    method: &str,
    path: &str,
    token: Option<&str>,
    form: &[(&str, &str)],
) -> Reply {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("{}{path}", gitlab.api_url());
    let mut request = match method {
        "POST" => client
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form)
                    .finish(),
            ),
        _ => client.get(url),
    };
    if let Some(token) = token {
        request = request.header("PRIVATE-TOKEN", token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    Reply {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

async fn post(gitlab: &GitLabStandIn, form: &[(&str, &str)]) -> Reply {
    call(
        gitlab,
        "POST",
        &format!("/projects/5/statuses/{SHA}"),
        Some(TOKEN),
        form,
    )
    .await
}

#[tokio::test]
async fn creating_statuses_follows_gitlabs_validations() {
    let gitlab = gitlab().await;
    let long = "x".repeat(256);
    let max = "x".repeat(255);
    // (form, status, what the body says, why)
    type Row<'a> = (Vec<(&'a str, &'a str)>, u16, Value, &'a str);
    let rows: Vec<Row> = vec![
        (
            vec![("state", "pending"), ("name", "a")],
            201,
            json!("pending"),
            "a new status",
        ),
        (
            vec![("name", "b")],
            400,
            json!({"error": "state is missing"}),
            "state is required",
        ),
        (
            vec![("state", "done"), ("name", "b")],
            400,
            json!({"error": "state does not have a valid value"}),
            "one of six states",
        ),
        (
            vec![("state", "success"), ("name", "b"), ("description", &long)],
            400,
            json!({"message": {"description": ["is too long (maximum is 255 characters)"]}}),
            "255 characters at most",
        ),
        (
            vec![("state", "success"), ("name", "b"), ("description", &max)],
            201,
            json!("success"),
            "255 characters exactly",
        ),
        (
            vec![("state", "success"), ("name", "c"), ("ref", &long)],
            400,
            json!({"message": {"ref": ["is too long (maximum is 255 characters)"]}}),
            "ref too",
        ),
        (
            vec![
                ("state", "success"),
                ("name", "c"),
                ("target_url", "ftp://x"),
            ],
            400,
            json!({"message": {"target_url": ["is blocked: Only allowed schemes are http, https"]}}),
            "http(s) only",
        ),
        (
            vec![("state", "success"), ("context", "d")],
            201,
            json!("success"),
            "context is an alias of name",
        ),
    ];
    for (form, status, expected, why) in rows {
        let reply = post(&gitlab, &form).await;
        assert_eq!(reply.status, status, "{why}: {}", reply.body);
        if status == 201 {
            assert_eq!(reply.body["status"], expected, "{why}");
            assert_eq!(reply.body["sha"], SHA);
            assert_eq!(
                reply.body["ref"], "master",
                "{why}: ref defaults to a branch holding the commit"
            );
        } else {
            assert_eq!(reply.body, expected, "{why}");
        }
    }
    assert_eq!(gitlab.current(5, SHA)["d"].0, "success");
}

#[tokio::test]
async fn same_state_transitions_are_refused_as_gitlab_does() {
    let gitlab = gitlab().await;
    // The messages of spec/services/ci/create_commit_status_service_spec.rb.
    let transition = |event: &str, from: &str| json!({"message": format!("Cannot transition status via :{event} from :{from} (Reason(s): Status cannot transition via \"{event}\")")});
    let rows: Vec<(&str, u16, Option<Value>, &str)> = vec![
        ("pending", 201, None, "created → pending"),
        (
            "pending",
            400,
            Some(transition("enqueue", "pending")),
            "pending → pending",
        ),
        (
            "running",
            201,
            None,
            "pending → running, same status updated",
        ),
        (
            "running",
            400,
            Some(transition("run", "running")),
            "running → running",
        ),
        (
            "pending",
            400,
            Some(transition("enqueue", "running")),
            "running → pending",
        ),
        (
            "skipped",
            400,
            Some(transition("skip", "running")),
            "running → skipped",
        ),
        ("success", 201, None, "running → success"),
        ("success", 201, None, "after a terminal state: a new status"),
    ];
    let mut ids = Vec::new();
    for (state, status, body, why) in rows {
        let reply = post(
            &gitlab,
            &[
                ("state", state),
                ("name", "fluxrelay/prod"),
                ("ref", "master"),
                ("description", why),
            ],
        )
        .await;
        assert_eq!(reply.status, status, "{why}: {}", reply.body);
        match body {
            Some(body) => assert_eq!(reply.body, body, "{why}"),
            None => ids.push(reply.body["id"].as_u64().unwrap()),
        }
    }
    assert_eq!(ids[0], ids[1], "pending → running updates in place");
    assert_eq!(ids[1], ids[2], "running → success too");
    assert_ne!(ids[2], ids[3], "a post after success creates a status");
    let all = gitlab.statuses(5, SHA);
    assert_eq!(all.len(), 2);
    assert!(
        all[0].retried && !all[1].retried,
        "the older becomes retried"
    );
}

#[tokio::test]
async fn listing_gives_the_latest_per_name_newest_first_paginated() {
    let gitlab = gitlab().await;
    for (name, state) in [
        ("build", "failed"),
        ("build", "success"),
        ("test", "pending"),
        ("fluxrelay/a", "running"),
    ] {
        post(
            &gitlab,
            &[("state", state), ("name", name), ("ref", "master")],
        )
        .await;
    }
    let path = format!("/projects/5/repository/commits/{SHA}/statuses");
    let latest = call(&gitlab, "GET", &path, Some(READ_ONLY), &[]).await;
    assert_eq!(latest.status, 200, "read_api may read");
    let names: Vec<(&str, &str)> = latest
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("fluxrelay/a", "running"),
            ("test", "pending"),
            ("build", "success")
        ]
    );
    let all = call(
        &gitlab,
        "GET",
        &format!("{path}?all=true"),
        Some(TOKEN),
        &[],
    )
    .await;
    assert_eq!(all.body.as_array().unwrap().len(), 4);
    let by_name = call(
        &gitlab,
        "GET",
        &format!("{path}?name=build"),
        Some(TOKEN),
        &[],
    )
    .await;
    assert_eq!(by_name.body.as_array().unwrap().len(), 1);
    let page = call(
        &gitlab,
        "GET",
        &format!("{path}?per_page=2"),
        Some(TOKEN),
        &[],
    )
    .await;
    assert_eq!(page.body.as_array().unwrap().len(), 2);
    assert_eq!(page.headers["x-next-page"], "2");
    assert_eq!(page.headers["x-total"], "3");
    let last = call(
        &gitlab,
        "GET",
        &format!("{path}?per_page=2&page=2"),
        Some(TOKEN),
        &[],
    )
    .await;
    assert_eq!(last.headers["x-next-page"], "");
    let by_path = call(
        &gitlab,
        "GET",
        &format!("/projects/thedude%2Fgitlab-foss/repository/commits/{SHA}/statuses"),
        Some(TOKEN),
        &[],
    )
    .await;
    assert_eq!(
        by_path.status, 200,
        "the URL-encoded path names the project too"
    );
}

#[tokio::test]
async fn tokens_and_missing_things_are_refused_with_gitlabs_answers() {
    let gitlab = gitlab().await;
    let status_path = format!("/projects/5/statuses/{SHA}");
    let form = [("state", "success"), ("name", "x")];
    /// (method, path, token, status, body, why)
    type Row<'a> = (&'a str, String, Option<&'a str>, u16, Value, &'a str);
    let rows: Vec<Row> = vec![
        (
            "POST",
            status_path.clone(),
            None,
            401,
            json!({"message": "401 Unauthorized"}),
            "no token",
        ),
        (
            "POST",
            status_path.clone(),
            Some("glpat-wrong"),
            401,
            json!({"message": "401 Unauthorized"}),
            "unknown token",
        ),
        (
            "POST",
            status_path.clone(),
            Some(READ_ONLY),
            403,
            json!({"error": "insufficient_scope",
            "error_description": "The request requires higher privileges than provided by the access token.", "scope": "api"}),
            "read_api cannot write",
        ),
        (
            "POST",
            format!("/projects/6/statuses/{SHA}"),
            Some(TOKEN),
            404,
            json!({"message": "404 Project Not Found"}),
            "project gone",
        ),
        (
            "POST",
            format!("/projects/5/statuses/{}", "0".repeat(40)),
            Some(TOKEN),
            404,
            json!({"message": "404 Commit Not Found"}),
            "commit unknown",
        ),
        (
            "GET",
            "/personal_access_tokens/self".into(),
            Some(TOKEN),
            200,
            Value::Null,
            "token introspection",
        ),
    ];
    for (method, path, token, status, body, why) in rows {
        let reply = call(&gitlab, method, &path, token, &form).await;
        assert_eq!(reply.status, status, "{why}: {}", reply.body);
        if body.is_null() {
            assert_eq!(reply.body["scopes"], json!(["api"]), "{why}");
        } else {
            assert_eq!(reply.body, body, "{why}");
        }
    }
    gitlab.revoke_token(TOKEN);
    assert_eq!(post(&gitlab, &form).await.status, 401, "a revoked token");
}

#[tokio::test]
async fn throttling_answers_429_with_retry_after_then_serves_again() {
    let gitlab = gitlab().await;
    gitlab.throttle_next(1, 17);
    let throttled = post(&gitlab, &[("state", "pending"), ("name", "x")]).await;
    assert_eq!(throttled.status, 429);
    assert_eq!(throttled.headers["retry-after"], "17");
    assert_eq!(throttled.headers["ratelimit-remaining"], "0");
    assert!(throttled.headers.contains_key("ratelimit-reset"));
    assert_eq!(throttled.body, json!("Retry later"));
    assert_eq!(
        post(&gitlab, &[("state", "pending"), ("name", "x")])
            .await
            .status,
        201
    );
    let calls = gitlab.calls();
    assert_eq!(
        calls.iter().map(|c| c.status).collect::<Vec<_>>(),
        vec![429, 201]
    );
    assert_eq!(calls[0].posted, Some(("x".into(), "pending".into())));
}

#[tokio::test]
async fn compare_straight_diffs_the_trees_and_otherwise_from_the_merge_base() {
    let gitlab = gitlab().await;
    let base = SHA;
    // main: base → dropped (touches clusters/prod); force-pushed to base → kept (touches docs).
    gitlab.commit(
        5,
        "main",
        "dropped",
        Some(base),
        &[("clusters/prod/app.yaml", Some("v2"))],
    );
    gitlab.commit(
        5,
        "main",
        "kept",
        Some(base),
        &[("docs/readme.md", Some("new"))],
    );
    let compare = |from: &str, to: &str, straight: bool| {
        format!("/projects/5/repository/compare?from={from}&to={to}&straight={straight}")
    };
    let paths = |reply: &Reply| -> Vec<String> {
        reply.body["diffs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["new_path"].as_str().unwrap().to_string())
            .collect()
    };
    let straight = call(
        &gitlab,
        "GET",
        &compare("dropped", "kept", true),
        Some(TOKEN),
        &[],
    )
    .await;
    assert_eq!(straight.status, 200);
    assert_eq!(
        paths(&straight),
        vec!["clusters/prod/app.yaml", "docs/readme.md"],
        "what changed on the ref"
    );
    assert_eq!(straight.body["compare_timeout"], false);
    let merge_base = call(
        &gitlab,
        "GET",
        &compare("dropped", "kept", false),
        Some(TOKEN),
        &[],
    )
    .await;
    assert_eq!(
        paths(&merge_base),
        vec!["docs/readme.md"],
        "from the merge base: the dropped commit is invisible"
    );
    assert_eq!(merge_base.body["commits"].as_array().unwrap().len(), 1);
    let deleted = {
        gitlab.commit(5, "main", "rm", Some("kept"), &[("README.md", None)]);
        call(
            &gitlab,
            "GET",
            &compare("kept", "rm", true),
            Some(TOKEN),
            &[],
        )
        .await
    };
    assert_eq!(deleted.body["diffs"][0]["deleted_file"], true);
    let unknown_to = call(
        &gitlab,
        "GET",
        &compare("kept", "nope", true),
        Some(TOKEN),
        &[],
    )
    .await;
    assert_eq!(
        (unknown_to.status, unknown_to.body.clone()),
        (404, json!({"message": "404 Ref Not Found"}))
    );
    let unknown_from = call(
        &gitlab,
        "GET",
        &compare(&"0".repeat(40), "kept", true),
        Some(TOKEN),
        &[],
    )
    .await;
    assert_eq!(unknown_from.status, 200);
    assert_eq!(
        unknown_from.body["diffs"],
        json!([]),
        "an unknown from compares nothing"
    );
    let by_branch = call(
        &gitlab,
        "GET",
        &compare("dropped", "main", true),
        Some(TOKEN),
        &[],
    )
    .await;
    assert_eq!(by_branch.status, 200, "to may be a branch name");
}
