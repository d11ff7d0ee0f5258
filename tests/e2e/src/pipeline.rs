//! The whole AWS path over real parts: the Lambda handlers in-process, the real AWS SDK
//! against `moto_server` (SQS FIFO queues, Secrets Manager), the real kube client against a
//! real kube-apiserver, whose service proxy forwards to the Flux receiver emulator.

use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_sqs::types::QueueAttributeName;
use fluxrelay_adapters::cluster::KubeClusters;
use fluxrelay_adapters::gitlab_secret::{FunctionGitLab, RefreshingGitLab};
use fluxrelay_adapters::lambda::{
    ConfirmFunction, DispatchFunction, IngestFunction, RouteFunction, WebhookAuth,
};
use fluxrelay_adapters::registry_aws::{
    AwsRegistry, RegistryIndexReader, RegistryLocation, store_entry,
};
use fluxrelay_adapters::sqs::{SqsQueue, SqsSettle};
use fluxrelay_core::handlers::confirm::{ConfirmMemory, ConfirmRules};
use fluxrelay_core::handlers::dispatch::{DispatchMemory, DispatchRules};
use fluxrelay_core::outcome::retry::RetryPolicy;
use fluxrelay_testkit::kube_env::KubeEnv;
use fluxrelay_testkit::moto::Moto;
use fluxrelay_testkit::receiver::{FluxReceiverEmulator, ReceiverSpec};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};

use crate::{acknowledge, depth, receive_batch};

/// The token the files in `events/` carry.
pub const SAMPLE_WEBHOOK_TOKEN: &str = "sample-webhook-token-change-me";
pub const RECEIVER_ADDR: &str = "192.0.2.10:9292";
pub const PROXY: &str = "/api/v1/namespaces/flux-system/services/http:webhook-receiver:80/proxy";

pub struct Queues {
    pub intake: String,
    pub intake_dlq: String,
    pub dispatch: String,
    pub dispatch_dlq: String,
    /// Standard queue: dispatch retries, each with its own delay.
    pub dispatch_retry: String,
    /// Standard queues: confirmations (each look with its own delay) and their dead letters.
    pub confirm: String,
    pub confirm_dlq: String,
}

pub struct Pipeline {
    pub kube: KubeEnv,
    pub receiver: FluxReceiverEmulator,
    pub moto: Moto,
    pub sqs: aws_sdk_sqs::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub s3: aws_sdk_s3::Client,
    pub queues: Queues,
    pub ingest: IngestFunction,
    pub route: RouteFunction,
    pub dispatch: DispatchFunction<KubeClusters>,
    pub confirm: ConfirmFunction<KubeClusters>,
}

pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

async fn fifo_queue(sqs: &aws_sdk_sqs::Client, name: &str, dlq_arn: Option<&str>) -> String {
    let mut request = sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(QueueAttributeName::VisibilityTimeout, "30");
    if let Some(arn) = dlq_arn {
        request = request.attributes(
            QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": arn, "maxReceiveCount": 20}).to_string(),
        );
    }
    request
        .send()
        .await
        .expect("CreateQueue")
        .queue_url
        .expect("queue url")
}

/// A standard queue, as the dispatch retry queue is.
async fn standard_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    sqs.create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::VisibilityTimeout, "30")
        .send()
        .await
        .expect("CreateQueue")
        .queue_url
        .expect("queue url")
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("GetQueueAttributes")
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("queue arn")
}

/// Fast retries, so tests that retry finish in seconds.
pub fn test_retry_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 6,
        base_delay_secs: 1,
        max_delay_secs: 2,
    }
}

/// Where the pipeline's registry lives on moto (the template's defaults).
pub fn registry_location() -> RegistryLocation {
    RegistryLocation {
        bucket: "fluxrelay-registry".into(),
        index_key: fluxrelay_adapters::registry_aws::DEFAULT_INDEX_KEY.into(),
        prefix: "fluxrelay/clusters/".into(),
    }
}

/// The registry index, as route reads it.
pub fn registry_index(s3: &aws_sdk_s3::Client) -> RegistryIndexReader {
    let location = registry_location();
    RegistryIndexReader::new(s3.clone(), location.bucket, location.index_key)
}

/// The registry as dispatch reads it.
pub fn registry(s3: &aws_sdk_s3::Client, secrets: &aws_sdk_secretsmanager::Client) -> AwsRegistry {
    AwsRegistry::new(
        registry_index(s3),
        secrets.clone(),
        registry_location().prefix,
    )
}

/// The route function over these queues, with its own SQS and S3 clients (recording ones
/// in the IAM test). Route reads the registry index only.
pub fn route_function(
    queues: &Queues,
    s3: &aws_sdk_s3::Client,
    sqs: &aws_sdk_sqs::Client,
) -> RouteFunction {
    RouteFunction {
        registry: registry_index(s3),
        dispatches: SqsQueue::new(sqs.clone(), queues.dispatch.clone()),
        intake: SqsSettle::new(
            sqs.clone(),
            queues.intake.clone(),
            queues.intake_dlq.clone(),
        ),
        policy: test_retry_policy(),
        paths_from_dispatch: false,
    }
}

/// The dispatch function over these queues.
pub fn dispatch_function<C>(
    queues: &Queues,
    s3: &aws_sdk_s3::Client,
    secrets: &aws_sdk_secretsmanager::Client,
    sqs: &aws_sdk_sqs::Client,
    clusters: C,
    policy: RetryPolicy,
) -> DispatchFunction<C> {
    DispatchFunction {
        registry: registry(s3, secrets),
        clusters,
        queue: SqsSettle::new(
            sqs.clone(),
            queues.dispatch.clone(),
            queues.dispatch_dlq.clone(),
        )
        .with_retry_queue(queues.dispatch_retry.clone())
        .with_confirm_queue(queues.confirm.clone()),
        rules: DispatchRules {
            policy,
            confirm: true,
            ..DispatchRules::default()
        },
        memory: DispatchMemory::default(),
        gitlab: FunctionGitLab::None,
    }
}

/// The name of the GitLab secret on moto (GITLAB_SECRET_ID).
pub const GITLAB_SECRET: &str = "fluxrelay/gitlab";

/// The confirm function over these queues; `gitlab` reads [`GITLAB_SECRET`] when true.
pub async fn confirm_function<C>(
    queues: &Queues,
    s3: &aws_sdk_s3::Client,
    secrets: &aws_sdk_secretsmanager::Client,
    sqs: &aws_sdk_sqs::Client,
    clusters: C,
    rules: ConfirmRules,
    gitlab: bool,
) -> ConfirmFunction<C> {
    ConfirmFunction {
        registry: registry(s3, secrets),
        clusters,
        queue: SqsSettle::new(
            sqs.clone(),
            queues.confirm.clone(),
            queues.confirm_dlq.clone(),
        )
        .with_confirm_queue(queues.confirm.clone()),
        gitlab: function_gitlab(secrets, gitlab).await,
        rules,
        memory: ConfirmMemory::default(),
        metrics_namespace: "fluxrelay-test".into(),
    }
}

/// The GitLab API of a function: from [`GITLAB_SECRET`] on moto, or none.
pub async fn function_gitlab(
    secrets: &aws_sdk_secretsmanager::Client,
    gitlab: bool,
) -> FunctionGitLab {
    if !gitlab {
        return FunctionGitLab::None;
    }
    FunctionGitLab::Secret(
        RefreshingGitLab::load(secrets.clone(), GITLAB_SECRET)
            .await
            .expect("the GitLab secret on moto"),
    )
}

impl Pipeline {
    /// A cluster with `infra/rbac.yaml` applied, the receiver emulator on 192.0.2.10:9292,
    /// queues and the webhook secret on moto. Register clusters with [`Pipeline::register`].
    pub async fn start() -> Pipeline {
        // The functions' own JSON log lines, in the test output: what a failure looked like.
        fluxrelay_adapters::lambda::init_tracing();
        let kube = KubeEnv::start().await;
        kube.apply(
            &std::fs::read_to_string(repo_root().join("infra/rbac.yaml")).expect("infra/rbac.yaml"),
        )
        .await;
        let receiver = FluxReceiverEmulator::start(RECEIVER_ADDR.parse().expect("addr"))
            .await
            .expect("receiver emulator");
        let moto = Moto::start();
        let sqs = moto.sqs().await;
        let secrets = moto.secrets().await;
        let s3 = moto.s3().await;
        moto.create_bucket(&registry_location().bucket).await;

        let intake_dlq = fifo_queue(&sqs, "fluxrelay-intake-dlq.fifo", None).await;
        let dispatch_dlq = fifo_queue(&sqs, "fluxrelay-dispatch-dlq.fifo", None).await;
        let intake = fifo_queue(
            &sqs,
            "fluxrelay-intake.fifo",
            Some(&queue_arn(&sqs, &intake_dlq).await),
        )
        .await;
        let dispatch = fifo_queue(
            &sqs,
            "fluxrelay-dispatch.fifo",
            Some(&queue_arn(&sqs, &dispatch_dlq).await),
        )
        .await;
        let dispatch_retry = standard_queue(&sqs, "fluxrelay-dispatch-retry").await;
        let confirm_dlq = standard_queue(&sqs, "fluxrelay-confirm-dlq").await;
        let confirm = standard_queue(&sqs, "fluxrelay-confirm").await;
        let queues = Queues {
            intake,
            intake_dlq,
            dispatch,
            dispatch_dlq,
            dispatch_retry,
            confirm,
            confirm_dlq,
        };
        secrets
            .create_secret()
            .name("fluxrelay/webhook")
            .secret_string(json!({"tokens": [SAMPLE_WEBHOOK_TOKEN]}).to_string())
            .send()
            .await
            .expect("CreateSecret webhook");

        let ingest = IngestFunction {
            auth: WebhookAuth::load(
                secrets.clone(),
                "fluxrelay/webhook",
                Duration::from_secs(300),
            )
            .await
            .expect("webhook auth")
            .with_refresh_floor(Duration::ZERO),
            queue: SqsQueue::new(sqs.clone(), queues.intake.clone()),
        };
        let route = route_function(&queues, &s3, &sqs);
        let dispatch = dispatch_function(
            &queues,
            &s3,
            &secrets,
            &sqs,
            KubeClusters::with_defaults().expect("kube clusters"),
            test_retry_policy(),
        );
        let confirm = confirm_function(
            &queues,
            &s3,
            &secrets,
            &sqs,
            KubeClusters::with_defaults().expect("kube clusters"),
            ConfirmRules::default(),
            false,
        )
        .await;
        Pipeline {
            kube,
            receiver,
            moto,
            sqs,
            secrets,
            s3,
            queues,
            ingest,
            route,
            dispatch,
            confirm,
        }
    }

    /// A registry entry for the test cluster, authenticated with the dispatcher's static token.
    pub fn entry(&self, name: &str, extra: Value) -> Value {
        let mut entry = json!({
            "name": name,
            "server": self.kube.server(),
            "ca": self.kube.ca_pem(),
            "auth": {"token": self.kube.dispatcher_token()},
        });
        if let (Some(base), Some(extra)) = (entry.as_object_mut(), extra.as_object()) {
            base.extend(extra.clone());
        }
        entry
    }

    /// Registers an entry as `fluxrelay cluster add --store secretsmanager` does: its secret
    /// (when it holds one) and its item in the registry index.
    pub async fn register(&self, entry: Value) {
        store_entry(&self.s3, &self.secrets, &registry_location(), &entry, false)
            .await
            .expect("register the cluster on moto");
    }

    /// A GitRepository in flux-system.
    pub async fn git_repository(&self, name: &str, url: &str, git_ref: Value) {
        self.kube
            .apply(
                &json!({
                    "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                    "metadata": {"name": name, "namespace": "flux-system"},
                    "spec": {"interval": "10m", "url": url, "ref": git_ref}
                })
                .to_string(),
            )
            .await;
    }

    /// A Ready Receiver in flux-system selecting `repository`, in the cluster and in the
    /// emulator behind the service proxy. Returns its webhook path.
    pub async fn flux_receiver(
        &self,
        name: &str,
        kind: &str,
        token: &str,
        events: &[&str],
        repository: &str,
    ) -> String {
        let spec = ReceiverSpec {
            namespace: "flux-system".into(),
            name: name.into(),
            receiver_type: kind.into(),
            token: token.into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            suspended: false,
            ready: true,
        };
        let path = self.receiver.upsert(spec);
        self.kube
            .apply(&json!({
                "apiVersion": "notification.toolkit.fluxcd.io/v1", "kind": "Receiver",
                "metadata": {"name": name, "namespace": "flux-system"},
                "spec": {"type": kind, "events": events, "secretRef": {"name": format!("{name}-token")},
                         "resources": [{"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository", "name": repository}]}
            }).to_string())
            .await;
        self.kube
            .patch_status("notification.toolkit.fluxcd.io/v1", "receivers", "flux-system", name, json!({
                "webhookPath": path,
                "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded", "message": format!("Receiver initialized for path: {path}"),
                                "lastTransitionTime": "2026-11-22T00:00:00Z"}]
            }))
            .await;
        path
    }

    /// POSTs one file of `events/` to the ingest function: (status, JSON body).
    pub async fn post_event_file(&self, file: &str) -> (u16, Value) {
        let text =
            std::fs::read_to_string(repo_root().join("events").join(file)).expect("event file");
        self.post_event_json(&text).await
    }

    /// POSTs a Function URL event (payload 2.0 JSON).
    pub async fn post_event_json(&self, text: &str) -> (u16, Value) {
        let request = lambda_http::request::from_str(text).expect("a Function URL event");
        let response = self.ingest.handle(request).await.expect("infallible");
        let status = response.status().as_u16();
        let body: Value = serde_json::from_slice(response.body().as_ref()).unwrap_or(Value::Null);
        (status, body)
    }

    /// An events/ file with its GitLab payload edited.
    pub fn edited_event(file: &str, edit: impl FnOnce(&mut Value)) -> String {
        let text =
            std::fs::read_to_string(repo_root().join("events").join(file)).expect("event file");
        let mut event: Value = serde_json::from_str(&text).expect("event JSON");
        let mut payload: Value =
            serde_json::from_str(event["body"].as_str().expect("body")).expect("payload");
        edit(&mut payload);
        event["body"] = Value::String(payload.to_string());
        event.to_string()
    }

    /// An events/ file sent with another `X-Gitlab-Token`.
    pub fn event_with_token(file: &str, token: &str) -> String {
        let text =
            std::fs::read_to_string(repo_root().join("events").join(file)).expect("event file");
        let mut event: Value = serde_json::from_str(&text).expect("event JSON");
        event["headers"]["x-gitlab-token"] = Value::String(token.to_string());
        event.to_string()
    }

    pub async fn route_batch(
        &self,
        event: SqsEvent,
    ) -> aws_lambda_events::event::sqs::SqsBatchResponse {
        self.route
            .handle(LambdaEvent::new(event, Context::default()))
            .await
            .expect("route")
    }

    pub async fn dispatch_batch(
        &self,
        event: SqsEvent,
    ) -> aws_lambda_events::event::sqs::SqsBatchResponse {
        self.dispatch
            .handle(LambdaEvent::new(event, Context::default()))
            .await
            .expect("dispatch")
    }

    pub async fn confirm_batch(
        &self,
        event: SqsEvent,
    ) -> aws_lambda_events::event::sqs::SqsBatchResponse {
        self.confirm
            .handle(LambdaEvent::new(event, Context::default()))
            .await
            .expect("confirm")
    }

    /// Runs route and dispatch the way their SQS event sources would, until both queues
    /// are empty (messages waiting out a visibility backoff included). Bounded.
    async fn queues_empty(&self) -> bool {
        depth(&self.sqs, &self.queues.intake).await
            + depth(&self.sqs, &self.queues.dispatch).await
            + crate::delayed_depth(&self.sqs, &self.queues.dispatch_retry).await
            + crate::delayed_depth(&self.sqs, &self.queues.confirm).await
            == 0
    }

    pub async fn drain(&self) {
        for _ in 0..240 {
            let intake = receive_batch(&self.sqs, &self.queues.intake).await;
            if !intake.records.is_empty() {
                let response = self.route_batch(intake.clone()).await;
                acknowledge(&self.sqs, &self.queues.intake, &intake, &response).await;
            }
            let dispatch = receive_batch(&self.sqs, &self.queues.dispatch).await;
            if !dispatch.records.is_empty() {
                let response = self.dispatch_batch(dispatch.clone()).await;
                acknowledge(&self.sqs, &self.queues.dispatch, &dispatch, &response).await;
            }
            let retries = receive_batch(&self.sqs, &self.queues.dispatch_retry).await;
            if !retries.records.is_empty() {
                let response = self.dispatch_batch(retries.clone()).await;
                acknowledge(&self.sqs, &self.queues.dispatch_retry, &retries, &response).await;
            }
            let confirms = receive_batch(&self.sqs, &self.queues.confirm).await;
            if !confirms.records.is_empty() {
                let response = self.confirm_batch(confirms.clone()).await;
                acknowledge(&self.sqs, &self.queues.confirm, &confirms, &response).await;
            }
            if intake.records.is_empty()
                && dispatch.records.is_empty()
                && retries.records.is_empty()
                && confirms.records.is_empty()
            {
                if self.queues_empty().await {
                    // moto's approximate counts can miss a message whose visibility was
                    // just changed (seen once in least_privilege): empty twice, 0.5 s apart.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if self.queues_empty().await {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        panic!("the queues did not drain within a minute");
    }

    /// Takes every message off the dispatch dead-letter queue: (body, fluxrelay.*
    /// attributes). Taken, not peeked: an in-flight message would hold back the rest of
    /// its FIFO group.
    pub async fn take_dead_letters(
        &self,
    ) -> Vec<(Value, std::collections::BTreeMap<String, String>)> {
        let mut taken = Vec::new();
        loop {
            let output = self
                .sqs
                .receive_message()
                .queue_url(&self.queues.dispatch_dlq)
                .max_number_of_messages(10)
                .message_attribute_names("All")
                .send()
                .await
                .expect("ReceiveMessage DLQ");
            let messages = output.messages.unwrap_or_default();
            if messages.is_empty() {
                return taken;
            }
            for m in messages {
                self.sqs
                    .delete_message()
                    .queue_url(&self.queues.dispatch_dlq)
                    .receipt_handle(m.receipt_handle.clone().unwrap_or_default())
                    .send()
                    .await
                    .expect("DeleteMessage DLQ");
                let body = serde_json::from_str(m.body.as_deref().unwrap_or("null"))
                    .unwrap_or(Value::Null);
                let attributes = m
                    .message_attributes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.string_value.unwrap_or_default()))
                    .collect();
                taken.push((body, attributes));
            }
        }
    }
}

// ---- artifact triggers (issue 16): registry endpoints and EventBridge on the intake queue --

impl Pipeline {
    /// POSTs `body` to the ingest function's Function URL at `path` (`/registry/distribution`,
    /// `/registry/harbor`, `/webhook`) with exactly `headers`: (status, JSON body). The event
    /// is `events/ingest-push-hook.json`'s, with path, headers and body replaced.
    pub async fn post_function_url(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, Value) {
        let text = std::fs::read_to_string(repo_root().join("events/ingest-push-hook.json"))
            .expect("event file");
        let mut event: Value = serde_json::from_str(&text).expect("event JSON");
        event["rawPath"] = json!(path);
        event["requestContext"]["http"]["path"] = json!(path);
        let mut map = serde_json::Map::new();
        map.insert("content-type".into(), json!("application/json"));
        for (name, value) in headers {
            map.insert(name.to_ascii_lowercase(), json!(value));
        }
        event["headers"] = Value::Object(map);
        event["body"] = json!(body);
        self.post_event_json(&event.to_string()).await
    }

    /// Puts an EventBridge event on the intake queue as the template's `EcrImagePushRule`
    /// target does: the event JSON as the body, the static message group `ecr`, no
    /// deduplication id (the queue deduplicates by content, as `EcrEvents=true` sets it).
    pub async fn send_eventbridge_event(&self, event: &Value) {
        self.sqs
            .set_queue_attributes()
            .queue_url(&self.queues.intake)
            .attributes(QueueAttributeName::ContentBasedDeduplication, "true")
            .send()
            .await
            .expect("SetQueueAttributes ContentBasedDeduplication");
        self.sqs
            .send_message()
            .queue_url(&self.queues.intake)
            .message_group_id("ecr")
            .message_body(event.to_string())
            .send()
            .await
            .expect("SendMessage EventBridge event");
    }
}
