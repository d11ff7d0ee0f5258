//! Chaos, AWS mode: N pushes across M clusters through the ingest, route and dispatch
//! functions (in-process, with the real AWS SDK on moto and the real kube client on a real
//! kube-apiserver), polled as Lambda's SQS event sources do, while faults are injected at
//! random (seeded; the seed is printed): the Receiver answers 503 or 500 or stalls past the
//! kube client's timeout, the kube-apiserver is killed and restarted, the dispatcher's Role
//! is removed and restored, and SQS and Secrets Manager go away and come back (a TCP proxy
//! in front of moto cuts every connection: moto itself keeps its state, as AWS would).
//! Then the books: every (push, cluster) pair was delivered (or superseded by a later
//! trigger of the same ref), or is a dead letter with a reason; lost must be 0.
//!
//! CI size: 300 pushes × 5 clusters. `FLUXRELAY_CHAOS=long` runs 10,000 × 20
//! (`FLUXRELAY_CHAOS_PUSHES`, `_CLUSTERS`, `_POSTING_SECS` and `_SEED` override; see
//! RELIABILITY.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::config::Credentials;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};
use fluxrelay_adapters::cluster::{KubeClusters, Timeouts};
use fluxrelay_adapters::lambda::{IngestFunction, WebhookAuth};
use fluxrelay_adapters::sqs::SqsQueue;
use fluxrelay_core::confirm::schedule::ConfirmPolicy;
use fluxrelay_core::handlers::confirm::ConfirmRules;
use fluxrelay_core::outcome::retry::RetryPolicy;
use fluxrelay_e2e::depth;
use fluxrelay_e2e::pipeline::{
    GITLAB_SECRET, Pipeline, confirm_function, dispatch_function, repo_root, route_function,
};
use fluxrelay_testkit::chaos::{
    AckedPush, Books, ConfirmationBooks, DeadLetter, FaultLog, Rng, Scale, assert_hung_cluster_run,
    rbac_removal_hold, reason_class,
};
use fluxrelay_testkit::chaos_fleet::{self, FleetCluster, PushKind, ROLE};
use fluxrelay_testkit::confirm_world::{GITLAB_TOKEN, rbac_with_confirm};
use fluxrelay_testkit::fault_proxy::FaultProxy;
use fluxrelay_testkit::flux_controller::{Behaviour, FluxControllerStandIn, GitRemote};
use fluxrelay_testkit::gitlab::GitLabStandIn;
use fluxrelay_testkit::kube_faults::ApiserverControl;
use fluxrelay_testkit::netns;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};

const BRANCHES: usize = 3;
const TAG_POSTERS: usize = 4;
/// The kube client's read timeout here, and a stall past it.
const READ_TIMEOUT: Duration = Duration::from_secs(3);
const STALL: Duration = Duration::from_secs(4);
/// Queue settings for the run: a short visibility timeout (a message whose backoff call
/// failed during an outage comes back soon) and a redrive far beyond the function's own
/// attempt limit, so every dead letter carries the function's reason.
const VISIBILITY_TIMEOUT_SECS: u32 = 8;
/// The cluster whose apiserver never answers.
const HUNG: &str = "hung";
/// Concurrent invocations per dispatch event source (template: DispatchMaxConcurrency).
const DISPATCH_CONCURRENCY: usize = 5;
const MAX_RECEIVE_COUNT: u32 = 100;
const MAX_ATTEMPTS: u32 = 60;
/// The function timeout the pollers give each invocation (as Lambda's deadline).
const FUNCTION_TIMEOUT_SECS: u64 = 30;
/// With the hung cluster, how long no healthy cluster's message may have been seen by a
/// dispatch poller before the run may end. The books balance as soon as a newer push to a
/// ref is delivered, while an older message for it may still be queued (waiting out its
/// retry delay or its visibility timeout, behind pollers busy with the hung cluster for up to
/// a function timeout); it is then settled as superseded. Only work unseen for longer than
/// that is stuck, and the end-of-run check fails on it.
const HEALTHY_QUIET: Duration =
    Duration::from_secs(FUNCTION_TIMEOUT_SECS + VISIBILITY_TIMEOUT_SECS as u64 + 2 + 3);

#[derive(Default)]
struct Tally {
    acked: Vec<AckedPush>,
    attempts: usize,
    other_answers: BTreeMap<u16, usize>,
    unacknowledged: Vec<usize>,
}

#[derive(Default)]
struct PollStats {
    invocations: usize,
    sqs_errors: usize,
    /// When a dispatch poller last received, or finished an invocation holding, a message
    /// for a cluster other than the hung one.
    healthy_seen: Option<Instant>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_aws_every_push_reaches_every_cluster_or_a_dead_letter_with_a_reason() {
    if !netns::enter("chaos_aws_every_push_reaches_every_cluster_or_a_dead_letter_with_a_reason") {
        return;
    }
    let scale = Scale::from_env(300, 5, Duration::from_secs(60));
    let mut rng = Rng::from_env("chaos_aws");
    eprintln!("chaos_aws: {scale:?}");
    let started = Instant::now();
    let origin = time::OffsetDateTime::now_utc();

    let mut p = Pipeline::start().await;
    let rbac_yaml =
        std::fs::read_to_string(repo_root().join("infra/rbac.yaml")).expect("infra/rbac.yaml");
    let fleet =
        chaos_fleet::build(&p.kube, &p.receiver, &rbac_yaml, scale.clusters, BRANCHES).await;
    // Confirmation: the first two clusters confirm (on moto, a confirmation's looks cost
    // three SQS calls each, and moto is this mode's bottleneck); Flux and GitLab are the
    // stand-ins.
    // FLUXRELAY_CHAOS_CONFIRM=<n> confirms on n clusters instead (0: none).
    let confirming_count = std::env::var("FLUXRELAY_CHAOS_CONFIRM")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(2);
    let confirming: Vec<String> = fleet
        .iter()
        .take(confirming_count)
        .map(|c| c.name.clone())
        .collect();
    for cluster in &fleet {
        let mut entry = cluster.entry(&p.kube);
        if confirming.contains(&cluster.name) {
            p.kube.apply(&rbac_with_confirm(&cluster.namespace)).await;
            entry["confirm"] = json!(true);
        }
        p.register(entry).await;
    }
    let remote = GitRemote::default();
    let _flux = FluxControllerStandIn::start(
        p.kube.admin(),
        Some(&p.receiver),
        remote.clone(),
        fleet.iter().map(|c| c.namespace.clone()).collect(),
        Behaviour {
            fetch_delay: Duration::from_millis(200),
            ..Behaviour::default()
        },
    );
    let gitlab = Arc::new(
        GitLabStandIn::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap(),
    );
    gitlab.add_token(GITLAB_TOKEN, 1, &["api"]);
    gitlab.add_project(15, "mike/diaspora");
    gitlab.add_project(1, "jsmith/example");
    p.secrets
        .create_secret()
        .name(GITLAB_SECRET)
        .secret_string(
            json!({"instances": [{"url": "https://gitlab.example.com", "api_url": gitlab.api_url(), "token": GITLAB_TOKEN}]})
                .to_string(),
        )
        .send()
        .await
        .expect("CreateSecret gitlab");
    // One more cluster whose apiserver hangs for the whole run: it accepts connections and
    // never answers. Its pushes must wait for it without delaying the others, and none may
    // be dropped. (FLUXRELAY_CHAOS_HUNG=0 leaves it out, to compare the others' latency.)
    let with_hung = std::env::var("FLUXRELAY_CHAOS_HUNG").map_or(true, |v| v != "0");
    let hung_apiserver = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    if with_hung {
        let mut hung = fleet[0].entry(&p.kube);
        hung["name"] = serde_json::Value::from(HUNG);
        hung["server"] =
            serde_json::Value::from(format!("https://{}", hung_apiserver.local_addr().unwrap()));
        p.register(hung).await;
    }
    for queue in [&p.queues.intake, &p.queues.dispatch] {
        let dlq = if queue == &p.queues.intake {
            &p.queues.intake_dlq
        } else {
            &p.queues.dispatch_dlq
        };
        let arn = queue_arn(&p.sqs, dlq).await;
        p.sqs
            .set_queue_attributes()
            .queue_url(queue)
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                VISIBILITY_TIMEOUT_SECS.to_string(),
            )
            .attributes(
                QueueAttributeName::RedrivePolicy,
                json!({"deadLetterTargetArn": arn, "maxReceiveCount": MAX_RECEIVE_COUNT})
                    .to_string(),
            )
            .send()
            .await
            .expect("SetQueueAttributes");
    }

    // The functions (and their event-source pollers) reach moto only through the proxy.
    let moto_addr: SocketAddr = p
        .moto
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .expect("moto address");
    let proxy = FaultProxy::start(moto_addr).await;
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(proxy.endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .load()
        .await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let secrets = aws_sdk_secretsmanager::Client::new(&config);
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    );
    p.ingest = IngestFunction {
        auth: WebhookAuth::load(
            secrets.clone(),
            "fluxrelay/webhook",
            Duration::from_secs(300),
        )
        .await
        .expect("webhook auth"),
        queue: SqsQueue::new(sqs.clone(), p.queues.intake.clone()),
    };
    p.route = route_function(&p.queues, &s3, &sqs);
    p.dispatch = dispatch_function(
        &p.queues,
        &s3,
        &secrets,
        &sqs,
        KubeClusters::new(
            Timeouts {
                connect: Duration::from_secs(2),
                read: READ_TIMEOUT,
                write: READ_TIMEOUT,
            },
            Duration::from_secs(30),
        )
        .expect("kube clusters"),
        RetryPolicy {
            max_attempts: MAX_ATTEMPTS,
            base_delay_secs: 1,
            max_delay_secs: 2,
        },
    );
    p.confirm = confirm_function(
        &p.queues,
        &s3,
        &secrets,
        &sqs,
        KubeClusters::new(
            Timeouts {
                connect: Duration::from_secs(2),
                read: READ_TIMEOUT,
                write: READ_TIMEOUT,
            },
            Duration::from_secs(30),
        )
        .expect("kube clusters"),
        ConfirmRules {
            policy: ConfirmPolicy {
                deadline_secs: 30,
                ..ConfirmPolicy::default()
            },
            ..ConfirmRules::default()
        },
        true,
    )
    .await;
    let mut apiserver = ApiserverControl::new(&p.kube);
    let p = Arc::new(p);
    let setup_took = started.elapsed();

    // ---- the event-source pollers, as Lambda runs them (over the proxy too).
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Mutex::new(PollStats::default()));
    let mut pollers = Vec::new();
    // As many concurrent invocations per event source as the template allows by default
    // (route 5 is more than one poller needs here; dispatch and its retry queue 5 each,
    // DispatchMaxConcurrency): an invocation waiting for a hung cluster holds one of them.
    let mut sources = vec![(p.queues.intake.clone(), "route")];
    for _ in 0..DISPATCH_CONCURRENCY {
        sources.push((p.queues.dispatch.clone(), "dispatch"));
        sources.push((p.queues.dispatch_retry.clone(), "dispatch"));
    }
    // The confirm queue's poller only when a cluster confirms (moto is this mode's
    // bottleneck: without confirmation the run is the one it was before).
    if !confirming.is_empty() {
        sources.push((p.queues.confirm.clone(), "confirm"));
    }
    for (queue, function) in sources {
        let (p, sqs, stop, stats) = (p.clone(), sqs.clone(), stop.clone(), stats.clone());
        pollers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let Ok(event) = receive(&sqs, &queue).await else {
                    stats.lock().unwrap().sqs_errors += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                if event.records.is_empty() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                // As Lambda invokes it: with a deadline (a 30 s function timeout), from which
                // dispatch gives each cluster its budget.
                let mut context = Context::default();
                context.deadline = u64::try_from(
                    (time::OffsetDateTime::now_utc()
                        + time::Duration::seconds(FUNCTION_TIMEOUT_SECS as i64))
                    .unix_timestamp_nanos()
                        / 1_000_000,
                )
                .unwrap_or(0);
                let healthy = function == "dispatch"
                    && event.records.iter().any(|record| {
                        record
                            .body
                            .as_deref()
                            .and_then(|body| fluxrelay_core::push::Dispatch::from_json(body).ok())
                            .is_some_and(|dispatch| dispatch.cluster != HUNG)
                    });
                if healthy {
                    stats.lock().unwrap().healthy_seen = Some(Instant::now());
                }
                let lambda_event = LambdaEvent::new(event.clone(), context);
                let response = match function {
                    "route" => p.route.handle(lambda_event).await,
                    "confirm" => p.confirm.handle(lambda_event).await,
                    _ => p.dispatch.handle(lambda_event).await,
                }
                .expect("the function never fails a whole batch");
                {
                    let mut stats = stats.lock().unwrap();
                    stats.invocations += 1;
                    if healthy {
                        stats.healthy_seen = Some(Instant::now());
                    }
                }
                if acknowledge(&sqs, &queue, &event, &response).await.is_err() {
                    stats.lock().unwrap().sqs_errors += 1;
                }
            }
        }));
    }

    // ---- posters: one per branch (so a branch's commits are acknowledged in order), and a
    // few for tags; each push is sent again until it is acknowledged, as GitLab does.
    let kinds = chaos_fleet::plan(&mut rng, scale.pushes, BRANCHES);
    let template: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("events/ingest-push-hook.json"))
            .expect("events/ingest-push-hook.json"),
    )
    .expect("event JSON");
    let webhooks = repo_root().join("events/webhooks");
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut queues: Vec<Vec<usize>> = vec![Vec::new(); BRANCHES + TAG_POSTERS];
    for (n, kind) in kinds.iter().enumerate() {
        match kind {
            PushKind::Branch(branch) => queues[*branch].push(n),
            PushKind::Tag => queues[BRANCHES + n % TAG_POSTERS].push(n),
        }
    }
    let mut posters = Vec::new();
    for queue in queues {
        let (p, tally, kinds, webhooks, template) = (
            p.clone(),
            tally.clone(),
            kinds.clone(),
            webhooks.clone(),
            template.clone(),
        );
        let (gitlab, remote) = (gitlab.clone(), remote.clone());
        let pause = scale.posting / (queue.len().max(1) as u32);
        posters.push(tokio::spawn(async move {
            let mut before: Option<String> = None;
            for (order, n) in queue.into_iter().enumerate() {
                let (event_name, hook, git_ref) =
                    chaos_fleet::payload(&webhooks, n, &kinds[n], before.as_deref());
                // The commit exists at GitLab, and the remote's head (or newest tag) moves.
                let sha = chaos_fleet::commit(n);
                match &kinds[n] {
                    PushKind::Branch(branch) => {
                        let name = chaos_fleet::branch_name(*branch);
                        gitlab.commit(15, &name, &sha, None, &[("deploy", Some(&sha))]);
                        remote.set(chaos_fleet::BRANCH_PROJECT_URL, &name, &sha);
                    }
                    PushKind::Tag => {
                        gitlab.commit(1, "tags", &sha, None, &[("deploy", Some(&sha))]);
                        remote.set(chaos_fleet::TAG_PROJECT_URL, "semver", &sha);
                    }
                }
                let mut event = template.clone();
                event["headers"]["x-gitlab-event"] = json!(event_name);
                event["body"] = json!(hook.to_string());
                let event = event.to_string();
                let pushed_at = std::time::Instant::now();
                let deadline = Instant::now() + Duration::from_secs(180);
                let mut key = None;
                while key.is_none() && Instant::now() < deadline {
                    let (status, body) = p.post_event_json(&event).await;
                    {
                        let mut counts = tally.lock().unwrap();
                        counts.attempts += 1;
                        if status == 202 && body["status"] == "accepted" {
                            key = body["keys"][0].as_str().map(str::to_string);
                        } else {
                            *counts.other_answers.entry(status).or_default() += 1;
                        }
                    }
                    if key.is_none() {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                {
                    let mut counts = tally.lock().unwrap();
                    match key {
                        Some(key) => counts.acked.push(AckedPush {
                            n,
                            git_ref,
                            after: chaos_fleet::commit(n),
                            order: if kinds[n] == PushKind::Tag { 0 } else { order },
                            key,
                            acked_at: std::time::Instant::now(),
                            pushed_at,
                        }),
                        None => counts.unacknowledged.push(n),
                    }
                }
                before = Some(chaos_fleet::commit(n));
                tokio::time::sleep(pause).await;
            }
        }));
    }

    // ---- faults, one at a time, until the posters are done. Every kind comes up once
    // early (in a seeded order), then at random.
    let mut faults = FaultLog::default();
    let mut first_round: Vec<usize> = vec![0, 2, 3, 4, 6, 8, 9];
    while !posters.iter().all(|poster| poster.is_finished()) {
        tokio::time::sleep(rng.millis(1000, 3000)).await;
        let target: &FleetCluster = &fleet[rng.below(fleet.len())];
        let kind = if first_round.is_empty() {
            rng.below(10)
        } else {
            first_round.remove(rng.below(first_round.len()))
        };
        let start = time::OffsetDateTime::now_utc();
        match kind {
            0 | 1 => {
                let count = 1 + rng.below(4);
                p.receiver
                    .fail_next(&target.webhook_path, &vec![503; count]);
                faults.add("receiver-503");
            }
            2 => {
                let count = 1 + rng.below(4);
                p.receiver
                    .fail_next(&target.webhook_path, &vec![500; count]);
                faults.add("receiver-500");
            }
            3 => {
                p.receiver.stall_next(&target.webhook_path, 1, STALL);
                faults.add("receiver-stall");
            }
            4 | 5 => {
                apiserver.kill();
                tokio::time::sleep(rng.millis(500, 3000)).await;
                let took = apiserver.start(&p.kube).await;
                eprintln!("chaos_aws: apiserver restarted, ready in {took:.1?}");
                faults.window("apiserver-restart", start);
            }
            6 => {
                p.kube
                    .delete("rbac.authorization.k8s.io/v1", "roles", "flux-system", ROLE)
                    .await;
                p.kube
                    .delete(
                        "rbac.authorization.k8s.io/v1",
                        "roles",
                        &target.namespace,
                        ROLE,
                    )
                    .await;
                tokio::time::sleep(rbac_removal_hold(&mut rng, faults.count("rbac-removed"))).await;
                p.kube.apply(&rbac_yaml).await;
                p.kube
                    .apply(&chaos_fleet::rbac_in(&rbac_yaml, &target.namespace))
                    .await;
                faults.window("rbac-removed", start);
            }
            8 => {
                apiserver.pause();
                tokio::time::sleep(rng.millis(1000, 5000)).await;
                apiserver.resume();
                faults.window("apiserver-hang", start);
            }
            _ => {
                proxy.set_up(false);
                tokio::time::sleep(rng.millis(1000, 4000)).await;
                proxy.set_up(true);
                faults.window("aws-outage", start);
            }
        }
    }
    for poster in posters {
        poster.await.unwrap();
    }
    let posting_took = started.elapsed() - setup_took;
    eprintln!("chaos_aws: faults injected {:?}", faults.0);

    // ---- settle: both queues empty and every pair accounted for (bounded).
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    let clusters: Vec<String> = fleet.iter().map(|c| c.name.clone()).collect();
    let mut letters: Vec<DeadLetter> = Vec::new();
    let settle_deadline = Instant::now() + Duration::from_secs(if scale.long { 1800 } else { 300 });
    let statuses = |after: &str, cluster: &str| -> Vec<(String, String)> {
        let name = format!("fluxrelay/{cluster}");
        [15, 1]
            .iter()
            .flat_map(|project| gitlab.statuses(*project, after))
            .filter(|status| status.name == name)
            .map(|status| (status.state, status.description.unwrap_or_default()))
            .collect()
    };
    let mut balanced_at: Option<Instant> = None;
    let (books, confirmations) = loop {
        letters.extend(take_dead_letters(&p.sqs, &p.queues.dispatch_dlq).await);
        let deliveries = chaos_fleet::deliveries(&p.receiver, &fleet);
        let books = Books::reconcile(&tally.acked, &clusters, &deliveries, &letters, reason_class);
        let confirmations = ConfirmationBooks::reconcile(
            &tally.acked,
            &confirming,
            &deliveries,
            &letters,
            statuses,
        );
        // With the hung cluster, its messages stay queued: drained is then the intake, and
        // every pair of the healthy clusters accounted for.
        let intake_drained = depth(&p.sqs, &p.queues.intake).await == 0;
        if balanced_at.is_none() && books.lost == 0 && confirmations.pending == 0 && intake_drained
        {
            balanced_at = Some(Instant::now());
        }
        let drained = intake_drained
            && (with_hung
                || depth(&p.sqs, &p.queues.dispatch).await
                    + depth(&p.sqs, &p.queues.dispatch_retry).await
                    == 0)
            && (!with_hung
                || stats
                    .lock()
                    .unwrap()
                    .healthy_seen
                    .is_none_or(|seen| seen.elapsed() >= HEALTHY_QUIET))
            && fluxrelay_e2e::delayed_depth(&p.sqs, &p.queues.confirm).await == 0;
        if books.lost == 0 && confirmations.pending == 0 && drained {
            break (books, confirmations);
        }
        if Instant::now() > settle_deadline {
            // Said at once, with what was still outstanding: the assertions below then
            // name the pairs, and this says the run ran out of time rather than finished.
            eprintln!(
                "chaos_aws: NOT SETTLED within the settle deadline: lost pairs {}, confirmations pending {}, intake depth {}, dispatch depth {} + retry {}, confirm {}, a healthy cluster's message last seen {:.1?} ago",
                books.lost,
                confirmations.pending,
                depth(&p.sqs, &p.queues.intake).await,
                depth(&p.sqs, &p.queues.dispatch).await,
                depth(&p.sqs, &p.queues.dispatch_retry).await,
                fluxrelay_e2e::delayed_depth(&p.sqs, &p.queues.confirm).await,
                stats
                    .lock()
                    .unwrap()
                    .healthy_seen
                    .map(|seen| seen.elapsed()),
            );
            break (books, confirmations);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    if let Some(balanced_at) = balanced_at {
        eprintln!(
            "chaos_aws: the books balanced {:.1?} before the queues were done with the healthy clusters' work",
            balanced_at.elapsed()
        );
    }
    stop.store(true, Ordering::SeqCst);
    for poller in pollers {
        poller.await.unwrap();
    }
    // What is left queued: the hung cluster's, and for each ref its newest push.
    tokio::time::sleep(Duration::from_secs(u64::from(VISIBILITY_TIMEOUT_SECS) + 3)).await;
    let mut pending: Vec<(String, String)> = Vec::new();
    for queue in [&p.queues.dispatch, &p.queues.dispatch_retry] {
        for body in take_all(&p.sqs, queue).await {
            let dispatch = fluxrelay_core::push::Dispatch::from_json(&body).unwrap();
            pending.push((dispatch.cluster, dispatch.push.key));
        }
    }
    // The pollers' last invocations may have dead-lettered after the settle loop's last look.
    letters.extend(take_dead_letters(&p.sqs, &p.queues.dispatch_dlq).await);
    let intake_letters = take_dead_letters(&p.sqs, &p.queues.intake_dlq).await;
    let deliveries = chaos_fleet::deliveries(&p.receiver, &fleet);
    let (scripted, stalled) = chaos_fleet::receiver_fault_hits(&p.receiver);
    let stats = std::mem::take(&mut *stats.lock().unwrap());
    let reasons: BTreeMap<String, usize> = letters.iter().fold(BTreeMap::new(), |mut map, l| {
        let short: String = l.reason.chars().take(160).collect();
        *map.entry(short).or_default() += 1;
        map
    });
    eprintln!(
        "chaos_aws books: {} pushes × {} clusters, acknowledged {} ({} ingest calls, other answers {:?}); {} function invocations, {} poller SQS errors, {} connections cut by the outage proxy; posting {posting_took:.1?}, total {:.1?}\n  faults {:?}; receiver answered {scripted} scripted 5xx and {stalled} stalls\n  {books}\n  {confirmations}\n  intake dead letters {}\n  dead letters by fault window: {:?}\n  time line:\n{}\n  dead-letter reasons: {reasons:#?}",
        scale.pushes,
        scale.clusters,
        tally.acked.len(),
        tally.attempts,
        tally.other_answers,
        stats.invocations,
        stats.sqs_errors,
        proxy.refused(),
        started.elapsed(),
        faults.0,
        intake_letters.len(),
        faults.attribute(&letters, Duration::from_secs(5)),
        faults.timeline(origin, &letters),
    );

    assert!(
        intake_letters.is_empty(),
        "pushes dead-lettered before routing: {intake_letters:#?}"
    );
    assert!(
        tally.unacknowledged.is_empty(),
        "pushes never acknowledged within 3 minutes of retries: {:?}",
        tally.unacknowledged
    );
    assert_eq!(
        books.lost, 0,
        "lost (push, cluster) pairs, e.g. {:#?}",
        books.lost_examples
    );
    assert_eq!(
        books.unknown_deliveries, 0,
        "deliveries of no acknowledged push"
    );
    assert_eq!(
        books.unknown_dead_letters, 0,
        "dead letters of no acknowledged pair"
    );
    assert_hung_cluster_run(
        "chaos_aws",
        &tally.acked,
        HUNG,
        &pending,
        &letters,
        &deliveries,
        with_hung,
    );
    drop(hung_apiserver);
    // Transient faults never dead-letter; a 403 does, naming what is missing.
    for letter in &letters {
        assert_eq!(
            reason_class(&letter.reason),
            "rbac",
            "a dead letter that is not an apiserver 403: {letter:?}"
        );
        assert!(
            ["services/proxy", "gitrepositories", "receivers"]
                .iter()
                .any(|permission| letter.reason.contains(permission)),
            "a 403 dead letter must name the missing permission: {letter:?}"
        );
    }
    // A 403 is dead-lettered only once it has lasted 10 s: never while the apiserver
    // restarts or a Role is briefly re-created, only inside a long RBAC removal (or in the
    // seconds after it, while the restored Role propagates).
    let stray = faults.outside("rbac-removed", &letters, Duration::from_secs(5));
    assert!(
        stray.is_empty(),
        "{} dead letters outside any RBAC removal, e.g. {:?}",
        stray.len(),
        stray.first()
    );
    for kind in [
        "receiver-503",
        "receiver-500",
        "receiver-stall",
        "apiserver-restart",
        "apiserver-hang",
        "rbac-removed",
        "aws-outage",
    ] {
        assert!(faults.count(kind) > 0, "no {kind} fault in {:?}", faults.0);
    }
    assert!(
        scripted > 0,
        "no scripted receiver failure was ever answered"
    );
    assert!(
        proxy.refused() > 0 || stats.sqs_errors > 0 || tally.other_answers.contains_key(&503),
        "the AWS outage was never felt"
    );
    // Every pair whose trigger reached its cluster ended in exactly one outcome.
    assert_eq!(
        confirmations.pending, 0,
        "confirmations left pending, e.g. {:#?}",
        confirmations.pending_examples
    );
    assert!(
        confirming.is_empty() || confirmations.expected > 0,
        "{confirmations}"
    );
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("GetQueueAttributes")
        .attributes
        .and_then(|attributes| attributes.get(&QueueAttributeName::QueueArn).cloned())
        .expect("queue arn")
}

/// One batch (up to 10), as Lambda's poller receives it; an SQS error is returned.
async fn receive(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Result<SqsEvent, String> {
    let output = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .wait_time_seconds(0)
        .send()
        .await
        .map_err(|error| error.to_string())?;
    Ok(fluxrelay_e2e::sqs_event(
        queue_url,
        output.messages.unwrap_or_default(),
    ))
}

/// Deletes what the function acknowledged; an SQS error is returned (the messages then
/// come back after their visibility timeout, as on AWS).
async fn acknowledge(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    event: &SqsEvent,
    response: &SqsBatchResponse,
) -> Result<(), String> {
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|failure| failure.item_identifier.as_str())
        .collect();
    let entries: Vec<DeleteMessageBatchRequestEntry> = event
        .records
        .iter()
        .filter(|record| !failed.contains(&record.message_id.as_deref().unwrap_or_default()))
        .enumerate()
        .map(|(index, record)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(index.to_string())
                .receipt_handle(record.receipt_handle.clone().unwrap_or_default())
                .build()
                .expect("entry")
        })
        .collect();
    if entries.is_empty() {
        return Ok(());
    }
    sqs.delete_message_batch()
        .queue_url(queue_url)
        .set_entries(Some(entries))
        .send()
        .await
        .map(|_| ())
        .map_err(|error| error.to_string())
}

/// Takes every message off the dispatch dead-letter queue (directly on moto).
/// Takes every message off a queue (the run is over): their bodies.
async fn take_all(sqs: &aws_sdk_sqs::Client, queue: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    let mut empty = 0;
    // A retry queue's messages may still be waiting out their delay (at most 2 s here).
    while empty < 3 {
        let messages = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .send()
            .await
            .expect("ReceiveMessage")
            .messages
            .unwrap_or_default();
        if messages.is_empty() {
            empty += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        for message in messages {
            sqs.delete_message()
                .queue_url(queue)
                .receipt_handle(message.receipt_handle.clone().unwrap_or_default())
                .send()
                .await
                .expect("DeleteMessage");
            bodies.push(message.body.unwrap_or_default());
        }
    }
    bodies
}

async fn take_dead_letters(sqs: &aws_sdk_sqs::Client, dlq: &str) -> Vec<DeadLetter> {
    let mut taken = Vec::new();
    loop {
        let output = sqs
            .receive_message()
            .queue_url(dlq)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .expect("ReceiveMessage DLQ");
        let messages = output.messages.unwrap_or_default();
        if messages.is_empty() {
            return taken;
        }
        for message in messages {
            sqs.delete_message()
                .queue_url(dlq)
                .receipt_handle(message.receipt_handle.clone().unwrap_or_default())
                .send()
                .await
                .expect("DeleteMessage DLQ");
            let attribute = |name: &str| {
                message
                    .message_attributes
                    .as_ref()
                    .and_then(|attributes| attributes.get(name))
                    .and_then(|value| value.string_value.clone())
                    .unwrap_or_default()
            };
            let at = message
                .attributes
                .as_ref()
                .and_then(|attributes| attributes.get(&MessageSystemAttributeName::SentTimestamp))
                .and_then(|millis| millis.parse::<i128>().ok())
                .and_then(|millis| {
                    time::OffsetDateTime::from_unix_timestamp_nanos(millis * 1_000_000).ok()
                });
            taken.push(DeadLetter {
                cluster: attribute("fluxrelay.cluster"),
                key: attribute("fluxrelay.key"),
                reason: attribute("fluxrelay.reason"),
                at,
            });
        }
    }
}
