use super::*;
use serde_json::{Value, json};

const X: &str = "1eabc9a41ca088515cab83f1cce49eb43e84b67f"; // the pushed commit
const OLD: &str = "5394cb7f48332b2de7c17dd8b8384bbc84b7e738"; // before the push
const NEW: &str = "9c41e7aa00112233445566778899aabbccddeeff"; // a newer push

fn push() -> Push {
    Push {
        before: OLD.into(),
        after: X.into(),
        checkout_sha: Some(X.into()),
        ..crate::push::tests::sample_push()
    }
}

/// A GitRepository of the pushed project on `main` at `revision`, Ready on its current
/// generation; `handled`: its requested reconcile was handled.
fn source(name: &str, revision: &str, handled: bool) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "flux-system", "generation": 1,
                     "annotations": {"reconcile.fluxcd.io/requestedAt": "2026-11-22T00:00:01Z"}},
        "spec": {"url": "https://gitlab.example.com/mike/diaspora.git", "ref": {"branch": "main"}},
        "status": {"observedGeneration": 1,
                   "lastHandledReconcileAt": if handled { "2026-11-22T00:00:01Z" } else { "2026-11-21T00:00:00Z" },
                   "artifact": {"revision": revision, "lastUpdateTime": "2026-11-22T00:00:03Z"},
                   "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded"}]}
    })
}

fn ks(
    name: &str,
    source: &str,
    applied: &str,
    attempted: &str,
    ready: &str,
    reason: &str,
    message: &str,
) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "flux-system", "generation": 1},
        "spec": {"sourceRef": {"kind": "GitRepository", "name": source}},
        "status": {"observedGeneration": if ready == "True" { 1 } else { 0 },
                   "lastAppliedRevision": applied, "lastAttemptedRevision": attempted,
                   "conditions": [{"type": "Ready", "status": ready, "reason": reason, "message": message,
                                   "lastTransitionTime": "2026-11-22T00:00:07Z"}]}
    })
}

fn applied_ks(name: &str, source: &str, commit: &str) -> Value {
    let revision = format!("main@sha1:{commit}");
    ks(
        name,
        source,
        &revision,
        &revision,
        "True",
        "ReconciliationSucceeded",
        &format!("Applied revision: {revision}"),
    )
}

fn hr(
    name: &str,
    strategy: Option<&str>,
    deployed: &str,
    attempted: &str,
    ready: &str,
    reason: &str,
) -> Value {
    let mut spec = json!({"chart": "./chart", "sourceRef": {"kind": "GitRepository", "name": "app", "namespace": "flux-system"}});
    if let Some(strategy) = strategy {
        spec["reconcileStrategy"] = json!(strategy);
    }
    json!({
        "metadata": {"name": name, "namespace": "apps", "generation": 2},
        "spec": {"chart": {"spec": spec}},
        "status": {"observedGeneration": if ready == "True" { 2 } else { 1 }, "lastAttemptedRevision": attempted,
                   "history": [{"chartVersion": deployed, "status": "deployed"}],
                   "conditions": [{"type": "Ready", "status": ready, "reason": reason,
                                   "message": format!("Helm upgrade {reason}"), "lastTransitionTime": "2026-11-22T00:00:09Z"}]}
    })
}

fn objects(sources: &[Value], kustomizations: &[Value], helm_releases: &[Value]) -> ClusterObjects {
    ClusterObjects {
        sources: sources.iter().map(GitRepository::from_json).collect(),
        kustomizations: kustomizations
            .iter()
            .map(Kustomization::from_json)
            .collect(),
        helm_releases: helm_releases.iter().map(HelmRelease::from_json).collect(),
    }
}

fn look(objects: &ClusterObjects) -> Observation {
    observe(&push(), &BTreeMap::new(), true, objects)
}

#[test]
fn the_confirmation_table() {
    let at = |c: &str| format!("main@sha1:{c}");
    let sha12 = &X[..12];
    let rows: Vec<(&str, ClusterObjects, ConfirmState, &str)> = vec![
        // --- success, in every revision format Flux writes ---
        (
            "source and Kustomization at the commit",
            objects(
                &[source("app", &at(X), true)],
                &[applied_ks("apps", "app", X)],
                &[],
            ),
            ConfirmState::Success,
            "applied",
        ),
        (
            "old revision format main/<sha>",
            objects(
                &[source("app", &format!("main/{X}"), true)],
                &[ks(
                    "apps",
                    "app",
                    &format!("main/{X}"),
                    &format!("main/{X}"),
                    "True",
                    "ReconciliationSucceeded",
                    "",
                )],
                &[],
            ),
            ConfirmState::Success,
            "applied",
        ),
        (
            "spec.ref.name format refs/heads/main@sha1:",
            objects(
                &[source("app", &format!("refs/heads/main@sha1:{X}"), true)],
                &[ks(
                    "apps",
                    "app",
                    &format!("refs/heads/main@sha1:{X}"),
                    "",
                    "True",
                    "ReconciliationSucceeded",
                    "",
                )],
                &[],
            ),
            ConfirmState::Success,
            "applied",
        ),
        (
            "a source nothing consumes",
            objects(&[source("app", &at(X), true)], &[], &[]),
            ConfirmState::Success,
            "applied",
        ),
        (
            "two sources, both done",
            objects(
                &[source("app", &at(X), true), source("app2", &at(X), false)],
                &[applied_ks("apps", "app", X), applied_ks("apps2", "app2", X)],
                &[],
            ),
            ConfirmState::Success,
            "applied",
        ),
        (
            "a suspended Kustomization is not waited for",
            objects(
                &[source("app", &at(X), true)],
                &[{
                    let mut k = ks(
                        "apps",
                        "app",
                        &at(OLD),
                        &at(OLD),
                        "True",
                        "ReconciliationSucceeded",
                        "",
                    );
                    k["spec"]["suspend"] = json!(true);
                    k
                }],
                &[],
            ),
            ConfirmState::Success,
            "applied",
        ),
        (
            "a Kustomization of another source is not waited for",
            objects(
                &[source("app", &at(X), true)],
                &[ks(
                    "other",
                    "elsewhere",
                    &at(OLD),
                    &at(OLD),
                    "False",
                    "BuildFailed",
                    "boom",
                )],
                &[],
            ),
            ConfirmState::Success,
            "applied",
        ),
        (
            "HelmRelease, Revision strategy, deployed",
            objects(
                &[source("app", &at(X), true)],
                &[],
                &[hr(
                    "web",
                    Some("Revision"),
                    &format!("1.2.3+{sha12}"),
                    &format!("1.2.3+{sha12}"),
                    "True",
                    "UpgradeSucceeded",
                )],
            ),
            ConfirmState::Success,
            "applied",
        ),
        (
            "HelmRelease, Revision strategy with values files (+sha12.gen)",
            objects(
                &[source("app", &at(X), true)],
                &[],
                &[hr(
                    "web",
                    Some("Revision"),
                    &format!("1.2.3+{sha12}.4"),
                    "",
                    "True",
                    "UpgradeSucceeded",
                )],
            ),
            ConfirmState::Success,
            "applied",
        ),
        (
            "HelmRelease, ChartVersion strategy: not comparable, not waited for",
            objects(
                &[source("app", &at(X), true)],
                &[],
                &[hr("web", None, "1.2.3", "1.2.3", "False", "UpgradeFailed")],
            ),
            ConfirmState::Success,
            "applied",
        ),
        // --- running ---
        (
            "source at the commit, Kustomization still on the old one",
            objects(
                &[source("app", &at(X), true)],
                &[ks(
                    "apps",
                    "app",
                    &at(OLD),
                    &at(X),
                    "Unknown",
                    "Progressing",
                    "Reconciliation in progress",
                )],
                &[],
            ),
            ConfirmState::Running,
            "waiting_for_kustomization",
        ),
        (
            "Ready=True naming the commit but lastAppliedRevision still old (conditions are written first)",
            objects(
                &[source("app", &at(X), true)],
                &[ks(
                    "apps",
                    "app",
                    &at(OLD),
                    &at(X),
                    "True",
                    "ReconciliationSucceeded",
                    &format!("Applied revision: {}", at(X)),
                )],
                &[],
            ),
            ConfirmState::Running,
            "waiting_for_kustomization",
        ),
        (
            "applied but observedGeneration behind",
            objects(
                &[source("app", &at(X), true)],
                &[{
                    let mut k = applied_ks("apps", "app", X);
                    k["status"]["observedGeneration"] = json!(0);
                    k
                }],
                &[],
            ),
            ConfirmState::Running,
            "waiting_for_kustomization",
        ),
        (
            "a Kustomization not for the commit: DependencyNotReady",
            objects(
                &[source("app", &at(X), true)],
                &[ks(
                    "apps",
                    "app",
                    &at(OLD),
                    &at(X),
                    "False",
                    "DependencyNotReady",
                    "dependency not ready",
                )],
                &[],
            ),
            ConfirmState::Running,
            "waiting_for_kustomization",
        ),
        (
            "ArtifactFailed happens before lastAttemptedRevision: not a verdict",
            objects(
                &[source("app", &at(X), true)],
                &[ks(
                    "apps",
                    "app",
                    &at(OLD),
                    &at(OLD),
                    "False",
                    "ArtifactFailed",
                    "kustomization path not found",
                )],
                &[],
            ),
            ConfirmState::Running,
            "waiting_for_kustomization",
        ),
        (
            "a failure of the previous commit is no failure of this one",
            objects(
                &[source("app", &at(X), true)],
                &[ks(
                    "apps",
                    "app",
                    &at(OLD),
                    &at(OLD),
                    "False",
                    "BuildFailed",
                    "old boom",
                )],
                &[],
            ),
            ConfirmState::Running,
            "waiting_for_kustomization",
        ),
        (
            "HelmRelease upgrade not there yet",
            objects(
                &[source("app", &at(X), true)],
                &[],
                &[hr(
                    "web",
                    Some("Revision"),
                    "1.2.3+000000000000",
                    "1.2.3+000000000000",
                    "True",
                    "UpgradeSucceeded",
                )],
            ),
            ConfirmState::Running,
            "waiting_for_helm_release",
        ),
        (
            "one source done, the other not there yet",
            objects(
                &[source("app", &at(X), true), source("app2", &at(OLD), false)],
                &[applied_ks("apps", "app", X)],
                &[],
            ),
            ConfirmState::Running,
            "waiting_for_source",
        ),
        // --- failed ---
        (
            "Kustomization BuildFailed for the commit",
            objects(
                &[source("app", &at(X), true)],
                &[ks(
                    "apps",
                    "app",
                    &at(OLD),
                    &at(X),
                    "False",
                    "BuildFailed",
                    "kustomize build failed: accumulating resources",
                )],
                &[],
            ),
            ConfirmState::Failed,
            "BuildFailed",
        ),
        (
            "Kustomization HealthCheckFailed for the commit",
            objects(
                &[source("app", &at(X), true)],
                &[ks(
                    "apps",
                    "app",
                    &at(OLD),
                    &at(X),
                    "False",
                    "HealthCheckFailed",
                    "timeout waiting for: [Deployment/apps/web status: 'InProgress']",
                )],
                &[],
            ),
            ConfirmState::Failed,
            "HealthCheckFailed",
        ),
        (
            "one of two Kustomizations fails",
            objects(
                &[source("app", &at(X), true)],
                &[
                    applied_ks("a", "app", X),
                    ks(
                        "b",
                        "app",
                        &at(OLD),
                        &at(X),
                        "False",
                        "ReconciliationFailed",
                        "Service/x dry-run failed",
                    ),
                ],
                &[],
            ),
            ConfirmState::Failed,
            "ReconciliationFailed",
        ),
        (
            "HelmRelease UpgradeFailed for the commit",
            objects(
                &[source("app", &at(X), true)],
                &[],
                &[hr(
                    "web",
                    Some("Revision"),
                    "1.2.3+000000000000",
                    &format!("1.2.3+{sha12}"),
                    "False",
                    "UpgradeFailed",
                )],
            ),
            ConfirmState::Failed,
            "UpgradeFailed",
        ),
        // --- superseded ---
        (
            "the source fetched after the push and found a newer commit",
            objects(
                &[source("app", &at(NEW), true)],
                &[ks(
                    "apps",
                    "app",
                    &at(OLD),
                    &at(OLD),
                    "True",
                    "ReconciliationSucceeded",
                    "",
                )],
                &[],
            ),
            ConfirmState::Superseded,
            "source_moved",
        ),
        (
            "moved past, even though its Kustomization already runs the newer one",
            objects(
                &[source("app", &at(NEW), true)],
                &[applied_ks("apps", "app", NEW)],
                &[],
            ),
            ConfirmState::Superseded,
            "source_moved",
        ),
        (
            "supersession wins over a source still waiting",
            objects(
                &[
                    source("app", &at(NEW), true),
                    source("app2", &at(OLD), false),
                ],
                &[],
                &[],
            ),
            ConfirmState::Superseded,
            "source_moved",
        ),
        // --- pending ---
        (
            "the source has not fetched yet (its request is not handled)",
            objects(&[source("app", &at(OLD), false)], &[], &[]),
            ConfirmState::Pending,
            "waiting_for_source",
        ),
        (
            "another commit, but the request is still pending: not proof",
            objects(&[source("app", &at(NEW), false)], &[], &[]),
            ConfirmState::Pending,
            "waiting_for_source",
        ),
        (
            "another commit, handled, but the source is not Ready (fetch failed)",
            objects(
                &[{
                    let mut s = source("app", &at(OLD), true);
                    s["status"]["conditions"] = json!([{"type": "Ready", "status": "False", "reason": "GitOperationFailed", "message": "auth failed"}]);
                    s
                }],
                &[],
                &[],
            ),
            ConfirmState::Pending,
            "waiting_for_source",
        ),
        (
            "another commit, handled, on an old generation",
            objects(
                &[{
                    let mut s = source("app", &at(NEW), true);
                    s["metadata"]["generation"] = json!(2);
                    s
                }],
                &[],
                &[],
            ),
            ConfirmState::Pending,
            "waiting_for_source",
        ),
        (
            "no artifact at all",
            objects(
                &[{
                    let mut s = source("app", "", false);
                    s["status"] = json!({});
                    s
                }],
                &[],
                &[],
            ),
            ConfirmState::Pending,
            "waiting_for_source",
        ),
        (
            "no GitRepository tracks the push any more",
            objects(&[], &[applied_ks("apps", "app", X)], &[]),
            ConfirmState::Pending,
            "no_source",
        ),
        (
            "a GitRepository of another branch is not this push's",
            objects(
                &[{
                    let mut s = source("app", &at(X), true);
                    s["spec"]["ref"] = json!({"branch": "dev"});
                    s
                }],
                &[],
                &[],
            ),
            ConfirmState::Pending,
            "no_source",
        ),
        (
            "a suspended GitRepository is not this push's",
            objects(
                &[{
                    let mut s = source("app", &at(X), true);
                    s["spec"]["suspend"] = json!(true);
                    s
                }],
                &[],
                &[],
            ),
            ConfirmState::Pending,
            "no_source",
        ),
    ];
    for (why, objects, state, reason) in rows {
        let seen = look(&objects);
        assert_eq!(
            (seen.state, seen.reason.as_str()),
            (state, reason),
            "{why}: {seen:?}"
        );
        assert!(!seen.message.is_empty(), "{why}: a message for people");
    }
}

#[test]
fn a_failure_carries_the_consumers_reason_and_message() {
    let seen = look(&objects(
        &[source("app", &format!("main@sha1:{X}"), true)],
        &[ks(
            "apps",
            "app",
            "",
            &format!("main@sha1:{X}"),
            "False",
            "BuildFailed",
            "kustomize build failed: map[string]interface {}(nil): yaml: line 3",
        )],
        &[],
    ));
    assert_eq!(
        seen.message,
        "kustomize build failed: map[string]interface {}(nil): yaml: line 3"
    );
    assert_eq!(
        seen.object.as_deref(),
        Some("Kustomization flux-system/apps")
    );
    let empty = look(&objects(
        &[source("app", &format!("main@sha1:{X}"), true)],
        &[ks(
            "apps",
            "app",
            "",
            &format!("main@sha1:{X}"),
            "False",
            "PruneFailed",
            "",
        )],
        &[],
    ));
    assert_eq!(
        empty.message,
        "Kustomization flux-system/apps: Ready=False PruneFailed"
    );
}

#[test]
fn success_says_when_and_names_what_was_not_compared() {
    let seen = look(&objects(
        &[source("app", &format!("main@sha1:{X}"), true)],
        &[applied_ks("apps", "app", X)],
        &[hr(
            "web",
            Some("ChartVersion"),
            "1.2.3",
            "1.2.3",
            "True",
            "UpgradeSucceeded",
        )],
    ));
    assert_eq!(seen.state, ConfirmState::Success);
    assert_eq!(seen.applied_at.as_deref(), Some("2026-11-22T00:00:07Z"));
    assert!(
        seen.message.contains("not compared") && seen.message.contains("HelmRelease apps/web"),
        "{}",
        seen.message
    );
    let unconsumed = look(&objects(
        &[source("app", &format!("main@sha1:{X}"), true)],
        &[],
        &[],
    ));
    assert_eq!(
        unconsumed.applied_at.as_deref(),
        Some("2026-11-22T00:00:03Z"),
        "the artifact's time"
    );
}

#[test]
fn helm_releases_are_not_read_when_the_entry_turns_them_off() {
    let failing = objects(
        &[source("app", &format!("main@sha1:{X}"), true)],
        &[],
        &[hr(
            "web",
            Some("Revision"),
            "1.2.3+000000000000",
            &format!("1.2.3+{}", &X[..12]),
            "False",
            "UpgradeFailed",
        )],
    );
    assert_eq!(
        observe(&push(), &BTreeMap::new(), false, &failing).state,
        ConfirmState::Success
    );
    assert_eq!(
        observe(&push(), &BTreeMap::new(), true, &failing).state,
        ConfirmState::Failed
    );
}

#[test]
fn an_annotated_tag_is_confirmed_by_the_commit_it_points_to() {
    let tag = Push {
        event: crate::push::PushEvent::TagPush,
        git_ref: "refs/tags/v1.0.0".into(),
        after: "ffffffffffffffffffffffffffffffffffffffff".into(), // the tag object
        checkout_sha: Some(X.into()),
        ..push()
    };
    assert_eq!(pushed_commit(&tag), X);
    let mut s = source("app", &format!("v1.0.0@sha1:{X}"), true);
    s["spec"]["ref"] = json!({"tag": "v1.0.0"});
    let seen = observe(&tag, &BTreeMap::new(), true, &objects(&[s], &[], &[]));
    assert_eq!(seen.state, ConfirmState::Success);
}

#[test]
fn nothing_panics_on_junk() {
    let junk = [
        json!(null),
        json!([]),
        json!({"status": 5}),
        json!({"metadata": {"name": 1}}),
    ];
    let seen = look(&objects(&junk, &junk, &junk));
    assert_eq!(seen.state, ConfirmState::Pending);
}
