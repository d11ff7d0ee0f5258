//! The IAM policies of `template.yaml` are exactly what each function's code calls.
//!
//! The three functions are built as their `from_env` builds them, but each on AWS SDK clients
//! of its own (moto) that record every operation they send. They are driven through every
//! path that touches AWS: ingest refusing a token (which re-reads the webhook secret) and
//! accepting a push; route fanning it out to a registered cluster; dispatch delivering,
//! backing off after a 503 and dead-lettering after a 400 (a real kube-apiserver and the
//! receiver emulator, in a private network namespace). The recorded operations, as IAM
//! actions, must equal the actions `check_template.py --grants template.yaml` reads from each
//! function's `Policies`: nothing called without a grant, nothing granted without a caller.
//!
//! Receiving messages is not the functions' code: the Lambda event source mapping does it,
//! with the function's own role, granted `sqs:ReceiveMessage` and `sqs:GetQueueAttributes`
//! on the function's own queues only (no SAM `AWSLambdaSQSQueueExecutionRole`, which allows
//! every queue of the account). Here the test harness receives with its own client, which
//! records nothing, so those two actions are the only grants no code path calls.
//!
//! A second test reads the grants alone: route can read no credential, and no function can
//! receive, delete or re-time a queue another function consumes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use fluxrelay_adapters::cluster::KubeClusters;
use fluxrelay_adapters::lambda::{IngestFunction, WebhookAuth};
use fluxrelay_adapters::sqs::SqsQueue;
use fluxrelay_core::confirm::schedule::ConfirmPolicy;
use fluxrelay_core::handlers::confirm::ConfirmRules;
use fluxrelay_e2e::pipeline::{
    GITLAB_SECRET, Pipeline, Queues, confirm_function, dispatch_function, repo_root,
    route_function, test_retry_policy,
};
use fluxrelay_testkit::confirm_world::gitlab_with;
use fluxrelay_testkit::moto::RecordCalls;
use fluxrelay_testkit::netns;
use serde_json::json;

const DIASPORA: &str = "https://example.com/mike/diaspora.git";
const WEBHOOK_SECRET: &str = "fluxrelay/webhook";
/// Grants this pipeline's paths do not call, each with where it is called (through the real
/// SDK).
const NOT_ON_THIS_PATH: [(&str, &str, &str); 5] = [
    (
        "DispatchFunction",
        "eks:DescribeCluster",
        "the endpoint check of an `eks` entry: functions/adapters/tests/kube_eks.rs",
    ),
    (
        "RouteFunction",
        "sqs:ChangeMessageVisibility",
        "a push that could not be routed waits in place (Settle::retry_in_place): functions/adapters/tests/sqs_moto.rs",
    ),
    (
        "DispatchFunction",
        "sqs:ChangeMessageVisibility",
        "a message whose retry could not be scheduled waits in place: functions/adapters/tests/sqs_moto.rs",
    ),
    (
        "ConfirmFunction",
        "eks:DescribeCluster",
        "the endpoint check of an `eks` entry, the same KubeClusters as dispatch: functions/adapters/tests/kube_eks.rs",
    ),
    (
        "ConfirmFunction",
        "sqs:ChangeMessageVisibility",
        "a look whose next look could not be scheduled waits in place (Settle::retry_in_place): functions/adapters/tests/sqs_moto.rs",
    ),
];
/// What only the event source mapping calls (with the function's role): granted, never
/// called by the function's code.
const EVENT_SOURCE_ACTIONS: [&str; 2] = ["sqs:ReceiveMessage", "sqs:GetQueueAttributes"];
/// What receives, settles or inspects a queue's messages: only on the queues the function's
/// own event sources read.
const CONSUME_ACTIONS: [&str; 4] = [
    "sqs:ReceiveMessage",
    "sqs:GetQueueAttributes",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
];
/// The queues each function's event source mappings read (template.yaml).
const OWN_QUEUES: [(&str, &[&str]); 4] = [
    ("IngestFunction", &[]),
    ("RouteFunction", &["IntakeQueue"]),
    ("DispatchFunction", &["DispatchQueue", "DispatchRetryQueue"]),
    ("ConfirmFunction", &["ConfirmQueue"]),
];
/// Actions that can read a stored credential (a secret value, or the key that decrypts it).
const CREDENTIAL_READS: [&str; 3] = [
    "secretsmanager:GetSecretValue",
    "secretsmanager:BatchGetSecretValue",
    "kms:Decrypt",
];

/// Each function's grants: action -> resources (a logical id for `!GetAtt X.Arn`).
type Grants = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// The IAM actions one recorded operation (`x-amz-target`) needs.
fn iam_actions(target: &str) -> Vec<String> {
    let Some((service, operation)) = target.split_once('.') else {
        panic!("recorded a request without an operation name: {target:?}");
    };
    let prefix = match service {
        "AmazonSQS" => "sqs",
        "secretsmanager" => "secretsmanager",
        "s3" => "s3",
        "eks" => "eks",
        other => panic!(
            "recorded a call to service {other:?} ({target}): add its IAM prefix to iam_actions"
        ),
    };
    let actions: &[&str] = match (prefix, operation) {
        // The batch APIs are authorised by the single-message actions.
        ("sqs", "SendMessageBatch") => &["SendMessage"],
        ("sqs", "ChangeMessageVisibilityBatch") => &["ChangeMessageVisibility"],
        ("sqs", "DeleteMessageBatch") => &["DeleteMessage"],
        // Its own action, and GetSecretValue on each secret it returns (AWS API reference).
        ("secretsmanager", "BatchGetSecretValue") => &["BatchGetSecretValue", "GetSecretValue"],
        _ => &[operation],
    };
    actions
        .iter()
        .map(|action| format!("{prefix}:{action}"))
        .collect()
}

/// `$FLUXRELAY_CACHE/venv/bin/python` (default cache `~/.cache/fluxrelay`), which has cfn-lint.
fn venv_python() -> PathBuf {
    let cache = std::env::var_os("FLUXRELAY_CACHE")
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .expect("neither FLUXRELAY_CACHE nor HOME is set: cannot find the project venv");
            PathBuf::from(home).join(".cache").join("fluxrelay")
        });
    let python = cache.join("venv").join("bin").join("python");
    assert!(
        python.is_file(),
        "{} not found: run tests/env/setup.sh (creates the venv with cfn-lint, which tests/template/check_template.py needs) or set FLUXRELAY_CACHE",
        python.display()
    );
    python
}

/// Each function's granted actions and their resources, as `check_template.py --grants
/// template.yaml` reads them.
fn template_grants() -> Grants {
    let python = venv_python();
    let output = Command::new(&python)
        .args([
            "tests/template/check_template.py",
            "--grants",
            "template.yaml",
        ])
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|error| panic!("could not run {}: {error}", python.display()));
    assert!(
        output.status.success(),
        "check_template.py --grants template.yaml failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "check_template.py --grants printed no JSON object of actions and resources ({error}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Each grant the code does not use, and each call the template does not grant.
fn mismatches(
    granted: &BTreeMap<String, BTreeSet<String>>,
    called: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let functions: BTreeSet<&String> = granted.keys().chain(called.keys()).collect();
    for function in functions {
        let none = BTreeSet::new();
        let grants = granted.get(function).unwrap_or(&none);
        let calls = called.get(function).unwrap_or(&none);
        for action in calls.difference(grants) {
            let note = if EVENT_SOURCE_ACTIONS.contains(&action.as_str()) {
                " (the event source mapping polls with it; the function's code must not)"
            } else {
                ""
            };
            problems.push(format!(
                "function {function} calls {action} but template.yaml does not grant it{note}"
            ));
        }
        for action in grants.difference(calls) {
            if EVENT_SOURCE_ACTIONS.contains(&action.as_str()) {
                continue; // the event source mapping's; its queues are checked apart
            }
            if NOT_ON_THIS_PATH
                .iter()
                .any(|(f, a, _)| f == function && a == action)
            {
                continue;
            }
            problems.push(format!(
                "template.yaml grants {function} the unused action {action}: remove it or add the path that needs it"
            ));
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_function_is_granted_exactly_the_aws_actions_its_code_calls() {
    if !netns::enter("each_function_is_granted_exactly_the_aws_actions_its_code_calls") {
        return;
    }
    // First, so a missing venv fails before a cluster is started.
    let granted: BTreeMap<String, BTreeSet<String>> = template_grants()
        .into_iter()
        .map(|(function, actions)| (function, actions.into_keys().collect()))
        .collect();

    let mut p = Pipeline::start().await;
    let recorders: BTreeMap<String, RecordCalls> = [
        "IngestFunction",
        "RouteFunction",
        "DispatchFunction",
        "ConfirmFunction",
    ]
    .into_iter()
    .map(|function| (function.to_string(), RecordCalls::new()))
    .collect();
    let calls = |function: &str| recorders[function].clone();

    // The functions as from_env builds them (webhook secret read at start, registry under
    // its prefix), each on its own recorded clients, replacing the Pipeline's.
    let ingest = calls("IngestFunction");
    p.ingest = IngestFunction {
        auth: WebhookAuth::load(
            p.moto.secrets_recorded(&ingest).await,
            WEBHOOK_SECRET,
            Duration::from_secs(300),
        )
        .await
        .expect("webhook auth")
        .with_refresh_floor(Duration::ZERO),
        queue: SqsQueue::new(p.moto.sqs_recorded(&ingest).await, p.queues.intake.clone()),
    };
    // Confirmation (issue 14): the GitLab token in its secret, read by confirm (statuses)
    // only: route reads no credential; GitLab answers 401 to the second push, so its status is
    // dead-lettered.
    let sha = "2222222222222222222222222222222222222222";
    let head = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7";
    let gitlab = gitlab_with(&["95790bf891e76fee5e1747ab589903a6a1f80f22", head, sha]).await;
    p.secrets
        .create_secret()
        .name(GITLAB_SECRET)
        .secret_string(
            json!({"instances": [{"url": "https://gitlab.example.com", "api_url": gitlab.api_url(),
                                  "token": fluxrelay_testkit::confirm_world::GITLAB_TOKEN}]})
            .to_string(),
        )
        .send()
        .await
        .expect("CreateSecret gitlab");
    let route = calls("RouteFunction");
    p.route = route_function(
        &p.queues,
        &p.moto.s3_with(vec![route.clone()]).await,
        &p.moto.sqs_recorded(&route).await,
    );
    let confirm = calls("ConfirmFunction");
    p.confirm = confirm_function(
        &p.queues,
        &p.moto.s3_with(vec![confirm.clone()]).await,
        &p.moto.secrets_recorded(&confirm).await,
        &p.moto.sqs_recorded(&confirm).await,
        KubeClusters::with_defaults().expect("kube clusters"),
        // Nothing in this cluster applies anything: each confirmation times out quickly.
        ConfirmRules {
            policy: ConfirmPolicy {
                deadline_secs: 3,
                ..ConfirmPolicy::default()
            },
            ..ConfirmRules::default()
        },
        true,
    )
    .await;
    let dispatch = calls("DispatchFunction");
    p.dispatch = dispatch_function(
        &p.queues,
        &p.moto.s3_with(vec![dispatch.clone()]).await,
        &p.moto.secrets_recorded(&dispatch).await,
        &p.moto.sqs_recorded(&dispatch).await,
        KubeClusters::with_defaults().expect("kube clusters"),
        test_retry_policy(),
    );

    p.git_repository("app", DIASPORA, json!({"branch": "master"}))
        .await;
    let path = p.flux_receiver("r", "generic", "t", &[], "app").await;
    p.register(p.entry("prod", json!({"confirm": true}))).await;
    p.kube
        .apply(&fluxrelay_testkit::confirm_world::rbac_with_confirm(
            "flux-system",
        ))
        .await;

    // Ingest: a refused token (the secret is re-read in case it was rotated), then a push
    // accepted and enqueued.
    let (status, body) = p.post_event_file("ingest-wrong-token.json").await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = p.post_event_file("ingest-push-hook.json").await;
    assert_eq!(status, 202, "{body}");

    // Route fans it out; dispatch gets a 503 (visibility backoff), then delivers.
    p.receiver.fail_next(&path, &[503]);
    p.drain().await;
    let statuses: Vec<u16> = p.receiver.hits().iter().map(|hit| hit.status).collect();
    assert_eq!(statuses, vec![503, 200], "{:?}", p.receiver.hits());

    // Another push, which the receiver refuses with a 400: dead-lettered with its reason.
    gitlab.revoke_token(fluxrelay_testkit::confirm_world::GITLAB_TOKEN);
    let second = Pipeline::edited_event("ingest-push-hook.json", |hook| {
        hook["after"] = json!(sha);
        hook["checkout_sha"] = json!(sha);
    });
    assert_eq!(p.post_event_json(&second).await.0, 202);
    p.receiver.fail_next(&path, &[400]);
    p.drain().await;
    let dead = p.take_dead_letters().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0["push"]["after"], sha, "{dead:?}");
    assert_eq!(dead[0].1["fluxrelay.status"], "400", "{dead:?}");

    // Dispatch's fallback: when a retry cannot be scheduled (here its queue does not
    // exist), the message is hidden for its backoff on its own queue instead.
    let missing_retry_queue = Queues {
        intake: p.queues.intake.clone(),
        intake_dlq: p.queues.intake_dlq.clone(),
        dispatch: p.queues.dispatch.clone(),
        dispatch_dlq: p.queues.dispatch_dlq.clone(),
        dispatch_retry: format!("{}-missing", p.queues.dispatch_retry),
        confirm: p.queues.confirm.clone(),
        confirm_dlq: p.queues.confirm_dlq.clone(),
    };
    let working = std::mem::replace(
        &mut p.dispatch,
        dispatch_function(
            &missing_retry_queue,
            &p.moto.s3_with(vec![dispatch.clone()]).await,
            &p.moto.secrets_recorded(&dispatch).await,
            &p.moto.sqs_recorded(&dispatch).await,
            KubeClusters::with_defaults().expect("kube clusters"),
            test_retry_policy(),
        ),
    );
    let sha = "3333333333333333333333333333333333333333";
    let third = Pipeline::edited_event("ingest-push-hook.json", |hook| {
        hook["after"] = json!(sha);
        hook["checkout_sha"] = json!(sha);
    });
    assert_eq!(p.post_event_json(&third).await.0, 202);
    p.receiver.fail_next(&path, &[503]);
    p.drain().await;
    p.dispatch = working;
    let last: Vec<u16> = p
        .receiver
        .hits()
        .iter()
        .rev()
        .take(2)
        .map(|hit| hit.status)
        .collect();
    assert_eq!(last, vec![200, 503], "retried in place, then delivered");

    // Route: a body that is not a push is backed off, then dead-lettered with its reason.
    p.sqs
        .send_message()
        .queue_url(&p.queues.intake)
        .message_body("not a push")
        .message_group_id("garbage")
        .message_deduplication_id("garbage-1")
        .send()
        .await
        .expect("SendMessage garbage");
    p.drain().await;
    let intake_dead = p
        .sqs
        .receive_message()
        .queue_url(&p.queues.intake_dlq)
        .message_attribute_names("All")
        .send()
        .await
        .expect("ReceiveMessage intake DLQ")
        .messages
        .unwrap_or_default();
    assert_eq!(intake_dead.len(), 1, "{intake_dead:?}");
    let reason = intake_dead[0]
        .message_attributes
        .as_ref()
        .and_then(|a| a.get("fluxrelay.reason"))
        .and_then(|v| v.string_value.clone())
        .unwrap_or_default();
    assert!(
        reason.starts_with("could not be routed after 8 attempts: not a Push"),
        "{reason}"
    );

    // The evidence, then the verdict.
    let mut called: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (function, recorder) in &recorders {
        let mut operations: BTreeMap<String, usize> = BTreeMap::new();
        for target in recorder.targets() {
            *operations.entry(target).or_default() += 1;
        }
        let actions: BTreeSet<String> = operations.keys().flat_map(|t| iam_actions(t)).collect();
        println!("{function} called {operations:?}");
        println!("{function} needs   {actions:?}");
        println!(
            "{function} granted {:?}",
            granted.get(function).cloned().unwrap_or_default()
        );
        called.insert(function.clone(), actions);
    }
    let problems = mismatches(&granted, &called);
    assert!(
        problems.is_empty(),
        "template.yaml's IAM policies do not match what the code calls:\n{}",
        problems.join("\n")
    );
}

#[test]
fn route_can_read_no_credential_and_no_function_touches_another_functions_queue() {
    let grants = template_grants();
    let mut problems = Vec::new();
    for action in CREDENTIAL_READS {
        if let Some(resources) = grants["RouteFunction"].get(action) {
            problems.push(format!(
                "RouteFunction may {action} on {resources:?}: route handles payload content and must hold no credential"
            ));
        }
    }
    for (function, own) in OWN_QUEUES {
        let Some(actions) = grants.get(function) else {
            problems.push(format!("template.yaml has no function {function}"));
            continue;
        };
        for action in CONSUME_ACTIONS {
            for queue in actions.get(action).into_iter().flatten() {
                if !own.contains(&queue.as_str()) {
                    problems.push(format!(
                        "{function} may {action} on {queue}, which is not a queue its own event sources read ({own:?})"
                    ));
                }
            }
        }
    }
    println!("grants: {grants:#?}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
