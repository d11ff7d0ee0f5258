use super::*;
use serde_json::json;

fn status(id: u64, name: &str, state: &str, description: &str) -> CommitStatus {
    CommitStatus {
        id,
        name: name.into(),
        state: StatusState::parse(state),
        description: description.into(),
        git_ref: Some("main".into()),
    }
}

#[test]
fn the_template_names_and_reads_back_clusters() {
    let default = StatusNaming::default();
    assert_eq!(default.template(), DEFAULT_NAME_TEMPLATE);
    assert_eq!(default.name("prod-eu"), "fluxrelay/prod-eu");
    assert_eq!(default.cluster("fluxrelay/prod-eu"), Some("prod-eu"));
    assert_eq!(default.cluster("fluxrelay/"), None);
    assert_eq!(
        default.cluster("kustomization/apps/0c9c2e41"),
        None,
        "Flux's own"
    );
    assert_eq!(default.cluster("ci/build"), None);
    let custom = StatusNaming::new("deploy ({cluster})").unwrap();
    assert_eq!(custom.name("a"), "deploy (a)");
    assert_eq!(custom.cluster("deploy (a)"), Some("a"));
    assert_eq!(custom.cluster("deploy (a"), None);
    for bad in ["fluxrelay", "{cluster}/{cluster}", "a\n{cluster}", ""] {
        assert!(StatusNaming::new(bad).is_err(), "{bad:?}");
    }
    assert!(StatusNaming::new(&format!("{}{{cluster}}", "x".repeat(200))).is_err());
}

#[test]
fn reads_the_documented_list_answer() {
    // The example of doc/api/commits.md ("List the statuses of a commit").
    let body = json!([
        {"status": "pending", "created_at": "2016-01-19T08:40:25.934Z", "started_at": null,
         "name": "bundler:audit", "allow_failure": true, "author": {"username": "thedude"},
         "description": null, "sha": "18f3e63d05582537db6d183d9d557be09e1f90c8",
         "target_url": "https://gitlab.example.com/thedude/gitlab-foss/builds/91", "finished_at": null,
         "id": 91, "ref": "master"},
        {"started_at": null, "name": "test", "allow_failure": false, "status": "pending",
         "created_at": "2016-01-19T08:40:25.832Z", "target_url": "https://gitlab.example.com/thedude/gitlab-foss/builds/90",
         "id": 90, "finished_at": null, "ref": "master", "sha": "18f3e63d05582537db6d183d9d557be09e1f90c8",
         "author": {"id": 1}, "description": null}
    ]);
    let list = parse_list(body.to_string().as_bytes()).unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].name, "bundler:audit");
    assert_eq!(list[0].state, Some(StatusState::Pending));
    assert_eq!(list[0].description, "", "null description reads as empty");
    assert_eq!(parse_list(b"{\"message\": \"404\"}"), None);
    assert_eq!(parse_list(b"nope"), None);
}

#[test]
fn the_newest_status_of_a_name_wins() {
    let statuses = [
        status(1, "fluxrelay/a", "failed", "old"),
        status(3, "fluxrelay/a", "success", "new"),
        status(2, "fluxrelay/b", "running", ""),
        status(4, "build", "success", ""),
    ];
    let clusters = cluster_states(&StatusNaming::default(), &statuses);
    assert_eq!(
        clusters
            .iter()
            .map(|(c, s)| (c.as_str(), s.state))
            .collect::<Vec<_>>(),
        vec![
            ("a", Some(StatusState::Success)),
            ("b", Some(StatusState::Running))
        ]
    );
}

#[test]
fn the_summary_waits_for_every_cluster_and_names_the_failures() {
    use StatusState::*;
    let s = |pairs: &[(&str, StatusState)]| -> Vec<(String, StatusState)> {
        pairs.iter().map(|(c, s)| (c.to_string(), *s)).collect()
    };
    for (clusters, expected) in [
        (s(&[("a", Success), ("b", Success)]), Some(Success)),
        (s(&[("a", Success), ("b", Failed)]), Some(Failed)),
        (s(&[("a", Failed), ("b", Canceled)]), Some(Failed)),
        (s(&[("a", Success), ("b", Canceled)]), Some(Canceled)),
        (s(&[("a", Success), ("b", Running)]), None),
        (s(&[("a", Pending)]), None),
        (s(&[]), None),
    ] {
        assert_eq!(
            summary(&clusters).map(|(state, _)| state),
            expected,
            "{clusters:?}"
        );
    }
    let (_, description) = summary(&s(&[("a", Success), ("b", Failed), ("c", Failed)])).unwrap();
    assert_eq!(description, "1 of 3 clusters deployed; failed: b, c");
}

#[test]
fn wait_exits_only_when_every_expected_cluster_ended() {
    use WaitVerdict::*;
    let naming = StatusNaming::default();
    let globs = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let both_ok = [
        status(1, "fluxrelay/prod-a", "success", "applied"),
        status(2, "fluxrelay/prod-b", "success", "applied"),
        status(3, "fluxrelay/staging", "running", ""),
    ];
    let one_failed = [
        status(1, "fluxrelay/prod-a", "success", ""),
        status(2, "fluxrelay/prod-b", "failed", "boom"),
    ];
    let canceled = [status(1, "fluxrelay/prod-a", "canceled", "timed out")];
    let rows: Vec<(&[CommitStatus], Vec<String>, WaitVerdict, &str)> = vec![
        (&both_ok, globs(&["prod-*"]), AllSucceeded, "a glob"),
        (&both_ok, globs(&[]), Waiting, "no glob: staging still runs"),
        (
            &both_ok,
            globs(&["prod-a", "prod-c"]),
            Waiting,
            "prod-c not posted yet",
        ),
        (&both_ok, globs(&["prod-a"]), AllSucceeded, "an exact name"),
        (&both_ok, globs(&["dev-*"]), Waiting, "nothing matches yet"),
        (&[], globs(&[]), Waiting, "no statuses at all"),
        (
            &one_failed,
            globs(&["prod-*"]),
            NotAllSucceeded,
            "one failed",
        ),
        (
            &canceled,
            globs(&[]),
            NotAllSucceeded,
            "canceled is an end, not a success",
        ),
    ];
    for (statuses, patterns, expected, why) in rows {
        let view = wait_view(&naming, statuses, &patterns).unwrap();
        assert_eq!(view.verdict(), expected, "{why}: {view:?}");
    }
    assert!(wait_view(&naming, &both_ok, &globs(&["["])).is_err());
}
