//! Fan-out: one push → N clusters through the route handler on moto: how long routing
//! takes and how many SQS calls it makes (counted on the wire by `CountCalls`), with the
//! time moto spent answering those very calls (`WireTime`) taken apart.

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use fluxrelay_adapters::registry_aws::{RegistryIndexReader, put_index_items};
use fluxrelay_adapters::sqs::SqsQueue;
use fluxrelay_core::handlers::route::{RouteVerdict, handle_route};
use fluxrelay_core::ports::{QueueMessage, RouteTable};
use fluxrelay_testkit::moto::{CountCalls, Moto, WireTime};
use serde_json::json;

use crate::report::Report;
use crate::{Scale, progress};

const SECTION: &str = "Fan-out (route on moto)";
/// The registry bucket on moto (the cold-start stage's route and dispatch read it too).
pub const REGISTRY_BUCKET: &str = "bench-fanout-registry";

pub async fn fan_out(moto: &Moto, scale: &Scale, report: &mut Report) {
    let config = moto.sdk_config().await;
    let s3 = moto.s3().await;
    let bucket = moto.create_bucket(REGISTRY_BUCKET).await;
    for &clusters in scale.fanout {
        progress(format!("fan-out: registering {clusters} clusters on moto"));
        // Route reads only the index: one item per cluster (its entry's secret, which
        // dispatch alone reads, plays no part here).
        let key = format!("fanout-{clusters}.json");
        let items = (0..clusters)
            .map(|index| json!({"name": format!("c{index:04}"), "secret": true}))
            .collect();
        put_index_items(&s3, &bucket, &key, items)
            .await
            .expect("registry index on moto");
        let registry = RegistryIndexReader::new(s3.clone(), &bucket, &key)
            .with_timing(Duration::from_secs(600), Duration::from_secs(600));
        let listed = registry
            .routes()
            .await
            .expect("registry on moto")
            .routes
            .len();
        assert_eq!(listed, clusters, "registry entries read back");

        let batches = CountCalls::new("AmazonSQS.SendMessageBatch");
        let singles = CountCalls::new("AmazonSQS.SendMessage");
        let wire = WireTime::new();
        let sqs = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(&config)
                .interceptor(batches.clone())
                .interceptor(singles.clone())
                .build(),
        );
        // Only route's own calls are timed on the wire (not the queue set-up below).
        let timed = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(&config)
                .interceptor(batches.clone())
                .interceptor(singles.clone())
                .interceptor(wire.clone())
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
        let queue = SqsQueue::new(timed, url.clone());
        let push = fluxrelay_testkit::fixtures::push(42, &format!("{clusters:x}f"));
        let message = QueueMessage {
            id: "fanout-1".into(),
            source: "intake".into(),
            receipt: "fanout-1".into(),
            group: push.project.id.to_string(),
            body: push.to_json(),
            receive_count: 1,
        };
        progress(format!("fan-out: routing 1 push to {clusters} clusters"));
        let started = Instant::now();
        let routed = handle_route(&registry, &queue, std::slice::from_ref(&message)).await;
        let elapsed = started.elapsed().as_secs_f64() * 1e3;
        match &routed.messages[0].verdict {
            RouteVerdict::Routed { clusters: to } => assert_eq!(to.len(), clusters),
            RouteVerdict::Failed { reason } => panic!("route failed: {reason}"),
            RouteVerdict::Ignored { reason } => panic!("route ignored a push: {reason}"),
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
        // moto's time grows with what the queue holds (measured: 30–100 ms per batch of 10
        // into an empty FIFO queue, 800 ms once it holds 200 messages), so it is taken from
        // route's own calls: the wall time with at least one call on the wire.
        let on_wire = wire.busy().as_secs_f64() * 1e3;
        let time = format!(
            "{elapsed:.1} ms, of which {on_wire:.1} ms with a call on the wire to moto (≤ {} at once); ≈ {:.1} ms fluxrelay",
            wire.max_in_flight(),
            (elapsed - on_wire).max(0.0)
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
