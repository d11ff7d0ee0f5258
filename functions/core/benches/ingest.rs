//! Ingest CPU per push: authenticate + parse + normalise each GitLab fixture, and each
//! artifact event kind (a registry notification, Harbor's two formats, a pipeline hook;
//! an ECR event as route reads it off the intake queue), with the enqueue replaced by a
//! publisher that only counts (the queue is measured elsewhere).
//! Before timing, each case is checked to give the outcome it should, so a broken path
//! cannot pass as a fast one.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue};
use time::OffsetDateTime;

use fluxrelay_core::Secret;
use fluxrelay_core::auth::{AuthConfig, SigningKey};
use fluxrelay_core::handlers::route::{IntakeBody, read_intake};
use fluxrelay_core::ingest::{Accepted, IngestConfig, Source, ingest, ingest_from};
use fluxrelay_core::ports::{PushPublisher, QueueError};
use fluxrelay_core::push::Push;

struct CountingQueue;

impl PushPublisher for CountingQueue {
    async fn publish_pushes(&self, pushes: &[Push]) -> Result<(), QueueError> {
        black_box(pushes.len());
        Ok(())
    }
}

const FIXTURES: &[(&str, &str, &[u8])] = &[
    (
        "push_hook",
        "Push Hook",
        include_bytes!("../tests/fixtures/gitlab/push_hook.json"),
    ),
    (
        "tag_push_hook",
        "Tag Push Hook",
        include_bytes!("../tests/fixtures/gitlab/tag_push_hook.json"),
    ),
    (
        "system_hook_push",
        "System Hook",
        include_bytes!("../tests/fixtures/gitlab/system_hook_push.json"),
    ),
    (
        "system_hook_repository_update",
        "System Hook",
        include_bytes!("../tests/fixtures/gitlab/system_hook_repository_update.json"),
    ),
    (
        "merge_request_hook (ignored)",
        "Merge Request Hook",
        include_bytes!("../tests/fixtures/gitlab/merge_request_hook.json"),
    ),
];

const TOKEN: &str = "bench-webhook-token-0123456789abcdef";
// whsec_ + base64 of 32 bytes 0..32.
const SIGNING_KEY: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn headers(event: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert("x-gitlab-event", HeaderValue::from_str(event).unwrap());
    map.insert("x-gitlab-token", HeaderValue::from_static(TOKEN));
    map.insert(
        "x-gitlab-instance",
        HeaderValue::from_static("https://gitlab.example.com"),
    );
    map
}

fn bench_ingest(c: &mut Criterion) {
    let now = OffsetDateTime::from_unix_timestamp(1_763_800_000).unwrap();
    let token_only = IngestConfig::new(
        AuthConfig::new(
            vec![Secret::new(TOKEN), Secret::new("rotated-old-token")],
            vec![],
        )
        .unwrap(),
    );
    let mut group = c.benchmark_group("ingest");
    for (name, event, body) in FIXTURES {
        let headers = headers(event);
        let outcome =
            ingest(&token_only, &CountingQueue, &headers, body, now, "bench").now_or_never();
        let accepted = matches!(outcome, Some(Ok(Accepted::Enqueued { .. })));
        let ignored = matches!(outcome, Some(Ok(Accepted::Ignored { .. })));
        assert!(
            accepted || (ignored && name.contains("ignored")),
            "{name}: {outcome:?}"
        );
        group.bench_function(*name, |b| {
            b.iter(|| {
                let result = ingest(
                    &token_only,
                    &CountingQueue,
                    black_box(&headers),
                    black_box(body),
                    now,
                    "bench",
                )
                .now_or_never();
                black_box(result)
            })
        });
    }
    let key = SigningKey::parse(SIGNING_KEY).unwrap();
    let signed = IngestConfig::new(AuthConfig::new(vec![Secret::new(TOKEN)], vec![key]).unwrap());
    let (_, _, body) = FIXTURES[0];
    let mut headers = headers("Push Hook");
    headers.insert(
        "webhook-id",
        HeaderValue::from_static("msg_2Lh5T3vtKdhVuFv7bUHOfE"),
    );
    headers.insert("webhook-timestamp", HeaderValue::from_static("1763800000"));
    headers.insert(
        "webhook-signature",
        HeaderValue::from_static(PUSH_HOOK_SIGNATURE),
    );
    let outcome = ingest(&signed, &CountingQueue, &headers, body, now, "bench").now_or_never();
    assert!(
        matches!(outcome, Some(Ok(Accepted::Enqueued { .. }))),
        "signed: {outcome:?}"
    );
    group.bench_function("push_hook + signing token", |b| {
        b.iter(|| {
            black_box(
                ingest(
                    &signed,
                    &CountingQueue,
                    black_box(&headers),
                    black_box(body),
                    now,
                    "bench",
                )
                .now_or_never(),
            )
        })
    });
    bench_artifacts(&mut group, &token_only, now);
    group.finish();
}

/// (name, endpoint, X-Gitlab-Event for GitLab, body, accepted): the artifact event kinds.
const ARTIFACT_FIXTURES: &[(&str, Source, &str, &[u8], bool)] = &[
    (
        "registry: GitLab container registry push",
        Source::Distribution,
        "",
        include_bytes!("../tests/fixtures/registry/gitlab-registry-manifest-push.json"),
        true,
    ),
    (
        "registry: distribution envelope by digest (ignored)",
        Source::Distribution,
        "",
        include_bytes!("../tests/fixtures/registry/distribution-push-envelope.json"),
        false,
    ),
    (
        "harbor: Default push by tag",
        Source::Harbor,
        "",
        include_bytes!("../tests/fixtures/harbor/push-artifact-default-by-tag.json"),
        true,
    ),
    (
        "harbor: CloudEvents push by digest (ignored)",
        Source::Harbor,
        "",
        include_bytes!("../tests/fixtures/harbor/push-artifact-cloudevents.json"),
        false,
    ),
    (
        "pipeline_hook (success)",
        Source::Gitlab,
        "Pipeline Hook",
        include_bytes!("../tests/fixtures/gitlab/pipeline_hook.json"),
        true,
    ),
];

const ECR_PUSH: &str = include_str!("../tests/fixtures/ecr/image-action-push.json");

fn bench_artifacts(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    config: &IngestConfig,
    now: OffsetDateTime,
) {
    for (name, source, event, body, accepted) in ARTIFACT_FIXTURES {
        let mut headers = HeaderMap::new();
        if *source == Source::Gitlab {
            headers = self::headers(event);
        } else {
            headers.insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {TOKEN}")).unwrap(),
            );
        }
        let outcome = ingest_from(
            *source,
            config,
            &CountingQueue,
            &headers,
            body,
            now,
            "bench",
        )
        .now_or_never();
        let enqueued = matches!(outcome, Some(Ok(Accepted::Enqueued { .. })));
        let ignored = matches!(outcome, Some(Ok(Accepted::Ignored { .. })));
        assert!(
            (*accepted && enqueued) || (!*accepted && ignored),
            "{name}: {outcome:?}"
        );
        group.bench_function(*name, |b| {
            b.iter(|| {
                black_box(
                    ingest_from(
                        *source,
                        config,
                        &CountingQueue,
                        black_box(&headers),
                        black_box(body),
                        now,
                        "bench",
                    )
                    .now_or_never(),
                )
            })
        });
    }
    assert!(matches!(read_intake(ECR_PUSH), Ok(IntakeBody::Push(_))));
    group.bench_function("ecr: EventBridge event read by route", |b| {
        b.iter(|| black_box(read_intake(black_box(ECR_PUSH))))
    });
}

// python3 -c 'import hmac,hashlib,base64;k=bytes(range(32));b=open("functions/core/tests/fixtures/gitlab/push_hook.json","rb").read();print("v1,"+base64.b64encode(hmac.new(k,b"msg_2Lh5T3vtKdhVuFv7bUHOfE.1763800000."+b,hashlib.sha256).digest()).decode())'
const PUSH_HOOK_SIGNATURE: &str = "v1,0bIrTLgbBf4bSYm8U6Ct4Cf/bS56/ubqeC75qrhHlz4=";

criterion_group!(benches, bench_ingest);
criterion_main!(benches);
