//! Stage 4, fan-out: one push → N clusters through the route handler on moto: how long routing
//! takes and how many SQS calls it makes (counted on the wire by `CountCalls`), with
//! moto's own time per `SendMessageBatch` measured apart.

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use fluxrelay_adapters::secrets::SecretsRegistry;
use fluxrelay_adapters::sqs::SqsQueue;
use fluxrelay_core::handlers::route::{IntakeMessage, RouteVerdict, handle_route};
use fluxrelay_core::ports::ClusterRegistry;
use fluxrelay_testkit::moto::{CountCalls, Moto};
use serde_json::json;

use crate::report::Report;
use crate::stats::Samples;
use crate::{Scale, progress};

const SECTION: &str = "Fan-out (route on moto)";

pub async fn fan_out(moto: &Moto, scale: &Scale, report: &mut Report) {
    let config = moto.sdk_config().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&config);
    let moto_batch_ms = moto_send_batch_ms(moto).await;
    report.info(
        SECTION,
        "moto's own time per SendMessageBatch of 10 (median of 20)",
        format!("{moto_batch_ms:.1} ms"),
    );
    for &clusters in scale.fanout {
        progress(format!("fan-out: registering {clusters} clusters on moto"));
        let prefix = format!("bench/fanout-{clusters}/");
        for chunk in (0..clusters).collect::<Vec<_>>().chunks(25) {
            let creates = chunk.iter().map(|index| {
                let name = format!("c{index:04}");
                let entry = json!({
                    "name": name,
                    "server": "https://192.0.2.1:6443",
                    "auth": {"token": "bench-token"},
                });
                secrets
                    .create_secret()
                    .name(format!("{prefix}{name}"))
                    .secret_string(entry.to_string())
                    .send()
            });
            for created in futures_util::future::join_all(creates).await {
                created.expect("CreateSecret on moto");
            }
        }
        let registry =
            SecretsRegistry::with_settings(secrets.clone(), prefix, Duration::from_secs(600));
        let listed = registry.clusters().await.expect("registry on moto").len();
        assert_eq!(listed, clusters, "registry entries read back");

        let batches = CountCalls::new("AmazonSQS.SendMessageBatch");
        let singles = CountCalls::new("AmazonSQS.SendMessage");
        let sqs = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(&config)
                .interceptor(batches.clone())
                .interceptor(singles.clone())
                .build(),
        );
        let url = sqs
            .create_queue()
            .queue_name(format!("bench-dispatch-{clusters}.fifo"))
            .attributes(QueueAttributeName::FifoQueue, "true")
            .send()
            .await
            .expect("CreateQueue")
            .queue_url
            .expect("queue url");
        let queue = SqsQueue::new(sqs.clone(), url.clone());
        let push = fluxrelay_testkit::fixtures::push(42, &format!("{clusters:x}f"));
        let message = IntakeMessage {
            id: "fanout-1".into(),
            group: push.project.id.to_string(),
            body: push.to_json(),
        };
        progress(format!("fan-out: routing 1 push to {clusters} clusters"));
        let started = Instant::now();
        let routed = handle_route(&registry, &queue, std::slice::from_ref(&message)).await;
        let elapsed = started.elapsed().as_secs_f64() * 1e3;
        match &routed.messages[0].verdict {
            RouteVerdict::Routed { clusters: to } => assert_eq!(to.len(), clusters),
            RouteVerdict::Failed { reason } => panic!("route failed: {reason}"),
        }
        let calls = batches.count() + singles.count();
        let queued = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .ok()
            .and_then(|a| a.attributes)
            .and_then(|a| {
                a.get(&QueueAttributeName::ApproximateNumberOfMessages)
                    .cloned()
            })
            .unwrap_or_default();
        let without_moto = elapsed - batches.count() as f64 * moto_batch_ms;
        let time = format!(
            "{elapsed:.1} ms (≈ {:.1} ms without moto's own time)",
            without_moto.max(0.0)
        );
        let sends = format!(
            "{calls} ({} SendMessageBatch, {} SendMessage)",
            batches.count(),
            singles.count()
        );
        let time_metric = format!("{clusters} clusters: route time (registry cached)");
        let sends_metric =
            format!("{clusters} clusters: SQS send calls ({queued} messages queued)");
        if clusters == 1000 {
            report.judged(SECTION, &time_metric, time, "≤ 100 ms", elapsed <= 100.0);
            report.judged(SECTION, &sends_metric, sends, "≤ 100", calls <= 100);
        } else {
            report.info(SECTION, &time_metric, time);
            report.info(SECTION, &sends_metric, sends);
        }
    }
}

/// moto's own latency: the median of 20 direct SendMessageBatch calls of 10 messages.
async fn moto_send_batch_ms(moto: &Moto) -> f64 {
    let sqs = moto.sqs().await;
    let url = sqs
        .create_queue()
        .queue_name("bench-moto-latency.fifo")
        .attributes(QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .expect("CreateQueue")
        .queue_url
        .expect("queue url");
    let mut samples = Vec::new();
    // The first calls warm moto up; they are not counted.
    for round in 0..23 {
        let entries = (0..10)
            .map(|i| {
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(format!("m{i}"))
                    .message_body(format!("{{\"round\":{round},\"i\":{i}}}"))
                    .message_group_id(format!("g{i}"))
                    .message_deduplication_id(format!("{round}-{i}"))
                    .build()
                    .expect("batch entry")
            })
            .collect::<Vec<_>>();
        let started = Instant::now();
        sqs.send_message_batch()
            .queue_url(&url)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("SendMessageBatch on moto");
        if round >= 3 {
            samples.push(started.elapsed());
        }
    }
    Samples::from_durations(&samples).percentile(50.0)
}
