//! The fleet stage's AWS-side costs at N registered clusters: reading the registry index
//! (`RegistryIndexReader` on moto), and route's time and SQS calls for one push to all N,
//! with the SQS adapter against moto (N ≤ [`MOTO_LIMIT`]) and against the counting stub
//! (every N, and past what moto holds).

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use fluxrelay_adapters::registry_aws::RegistryIndexReader;
use fluxrelay_adapters::sqs::SqsQueue;
use fluxrelay_core::handlers::route::{RouteVerdict, handle_route};
use fluxrelay_core::ports::{QueueMessage, RouteTable};
use fluxrelay_testkit::moto::{CountCalls, Moto, RecordCalls, WireTime};

use crate::sqs_stub::SqsStub;
use crate::stats::Samples;

/// The largest fan-out routed on moto here: moto's time per `SendMessageBatch` grows with
/// what the queue holds (1,000 clusters took 192 s in the fan-out stage, which measures it).
pub const MOTO_LIMIT: usize = 100;
const LONG: Duration = Duration::from_secs(600);

pub fn index_key(clusters: usize) -> String {
    format!("fleet-{clusters}.json")
}

/// Reading the index of `clusters` entries: a first read (GET + parse), and a refresh of an
/// unchanged index (the conditional GET's `304`), medians of `reps` fresh readers.
pub struct RegistryRead {
    pub first_ms: f64,
    pub first_wire_ms: f64,
    pub first_calls: usize,
    pub refresh_ms: f64,
    pub refresh_calls: usize,
}

pub async fn registry_read(
    moto: &Moto,
    bucket: &str,
    clusters: usize,
    reps: usize,
) -> RegistryRead {
    let config = moto.sdk_config().await;
    let (mut first, mut first_wire, mut refresh) = (Vec::new(), Vec::new(), Vec::new());
    let (mut first_calls, mut refresh_calls) = (0, 0);
    for _ in 0..reps.max(1) {
        let calls = RecordCalls::new();
        let wire = WireTime::new();
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&config)
                .force_path_style(true)
                .interceptor(calls.clone())
                .interceptor(wire.clone())
                .build(),
        );
        let reader =
            RegistryIndexReader::new(s3, bucket, index_key(clusters)).with_timing(LONG, LONG);
        let started = Instant::now();
        let index = reader.index().await.expect("registry index on moto");
        first.push(started.elapsed());
        first_wire.push(wire.busy());
        assert_eq!(index.entries.len(), clusters, "index entries read back");
        first_calls = calls.targets().len();
        reader.expire();
        let started = Instant::now();
        reader.index().await.expect("registry index refresh");
        refresh.push(started.elapsed());
        refresh_calls = calls.targets().len() - first_calls;
    }
    let median = |values: &[Duration]| Samples::from_durations(values).percentile(50.0);
    RegistryRead {
        first_ms: median(&first),
        first_wire_ms: median(&first_wire),
        first_calls,
        refresh_ms: median(&refresh),
        refresh_calls,
    }
}

/// One push routed to every cluster.
pub struct Routed {
    pub elapsed_ms: f64,
    /// Wall time with at least one of route's calls on the wire.
    pub wire_ms: f64,
    pub max_in_flight: usize,
    pub calls: usize,
}

impl Routed {
    /// Route's own time: what is left when the wire time is taken out.
    pub fn own_ms(&self) -> f64 {
        (self.elapsed_ms - self.wire_ms).max(0.0)
    }
}

fn push_message(clusters: usize, rep: usize) -> QueueMessage {
    let push = fluxrelay_testkit::fixtures::push(42, &format!("{clusters:x}e{rep:x}"));
    QueueMessage {
        id: format!("fleet-{clusters}-{rep}"),
        source: "intake".into(),
        receipt: format!("fleet-{clusters}-{rep}"),
        group: push.project.id.to_string(),
        body: push.to_json(),
        receive_count: 1,
    }
}

async fn route_once(
    registry: &RegistryIndexReader,
    client: aws_sdk_sqs::Client,
    url: String,
    clusters: usize,
    rep: usize,
    counted: (&CountCalls, &CountCalls, &WireTime),
) -> Routed {
    let (batches, singles, wire) = counted;
    let (calls_before, wire_before) = (batches.count() + singles.count(), wire.busy());
    let queue = SqsQueue::new(client, url);
    let message = push_message(clusters, rep);
    let started = Instant::now();
    let routed = handle_route(registry, &queue, std::slice::from_ref(&message)).await;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    match &routed.messages[0].verdict {
        RouteVerdict::Routed { clusters: to } => assert_eq!(to.len(), clusters),
        RouteVerdict::Failed { reason } => panic!("route failed: {reason}"),
        RouteVerdict::Ignored { reason } => panic!("route ignored a push: {reason}"),
    }
    Routed {
        elapsed_ms,
        wire_ms: (wire.busy() - wire_before).as_secs_f64() * 1e3,
        max_in_flight: wire.max_in_flight(),
        calls: batches.count() + singles.count() - calls_before,
    }
}

async fn registry(moto: &Moto, bucket: &str, clusters: usize) -> RegistryIndexReader {
    let reader = RegistryIndexReader::new(moto.s3().await, bucket, index_key(clusters))
        .with_timing(LONG, LONG);
    let listed = reader
        .routes()
        .await
        .expect("registry on moto")
        .routes
        .len();
    assert_eq!(listed, clusters, "registry entries read back");
    reader
}

/// Route against the counting stub: the median by route's own time of `reps` pushes, after
/// one untimed push (the client's first connection).
pub async fn route_on_stub(
    moto: &Moto,
    stub: &SqsStub,
    bucket: &str,
    clusters: usize,
    reps: usize,
) -> Routed {
    let registry = registry(moto, bucket, clusters).await;
    let (batches, singles, wire) = (
        CountCalls::new("AmazonSQS.SendMessageBatch"),
        CountCalls::new("AmazonSQS.SendMessage"),
        WireTime::new(),
    );
    let client = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&moto.sdk_config().await)
            .endpoint_url(stub.endpoint())
            .interceptor(batches.clone())
            .interceptor(singles.clone())
            .interceptor(wire.clone())
            .build(),
    );
    let url = stub.queue_url("bench-fleet-dispatch.fifo");
    let counted = (&batches, &singles, &wire);
    let answered_before = stub.calls();
    route_once(&registry, client.clone(), url.clone(), clusters, 0, counted).await;
    let mut runs = Vec::new();
    for rep in 1..=reps.max(1) {
        runs.push(
            route_once(
                &registry,
                client.clone(),
                url.clone(),
                clusters,
                rep,
                counted,
            )
            .await,
        );
    }
    // What the client counted is what the stub answered (no call went elsewhere).
    assert_eq!(
        stub.calls() - answered_before,
        batches.count() + singles.count(),
        "calls answered by the SQS stub"
    );
    runs.sort_by(|a, b| a.own_ms().total_cmp(&b.own_ms()));
    runs.swap_remove(runs.len() / 2)
}

/// Route on moto, one push into a fresh FIFO queue (as the fan-out stage does).
pub async fn route_on_moto(moto: &Moto, bucket: &str, clusters: usize) -> Routed {
    let registry = registry(moto, bucket, clusters).await;
    let config = moto.sdk_config().await;
    let url = moto
        .sqs()
        .await
        .create_queue()
        .queue_name(format!("bench-fleet-{clusters}.fifo"))
        .attributes(QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .expect("CreateQueue")
        .queue_url
        .expect("queue url");
    let (batches, singles, wire) = (
        CountCalls::new("AmazonSQS.SendMessageBatch"),
        CountCalls::new("AmazonSQS.SendMessage"),
        WireTime::new(),
    );
    let client = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&config)
            .interceptor(batches.clone())
            .interceptor(singles.clone())
            .interceptor(wire.clone())
            .build(),
    );
    route_once(
        &registry,
        client,
        url,
        clusters,
        0,
        (&batches, &singles, &wire),
    )
    .await
}
