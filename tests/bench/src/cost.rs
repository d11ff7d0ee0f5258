//! The cost model: Lambda invocations, GB-seconds and SQS requests per 1 M pushes × N
//! clusters, from the counts and handler durations the SQS path stage measured in the same
//! run and the memory and batch sizes of `template.yaml`; next to it, the Git fetches that
//! push-driven reconciliation saves against polling every minute. Plain arithmetic, tested
//! below with hand-computed values.

use crate::template::Settings;

/// us-east-1 list prices, as quoted in the issue on 2026-11-22 (AWS pricing pages; check
/// them before relying on the total). The free tier is not deducted.
const LAMBDA_ARM64_USD_PER_GB_SECOND: f64 = 0.000_013_333_4;
const LAMBDA_USD_PER_REQUEST: f64 = 0.20 / 1e6;
/// A FIFO request is billed per 64 KB chunk of payload; the messages here are small DTOs
/// (the stage reports the largest, and the text says when 10 of them would not fit).
const SQS_FIFO_USD_PER_REQUEST: f64 = 0.50 / 1e6;
const SQS_BILLING_CHUNK_BYTES: usize = 64 * 1024;
/// The event source mapping's long poll, for the idle polls the table leaves out.
const LONG_POLL_SECONDS: f64 = 20.0;
const SECONDS_PER_30_DAYS: f64 = 30.0 * 24.0 * 3600.0;

/// `SendMessageBatch` takes at most 10 entries.
const SEND_BATCH_MAX: f64 = 10.0;

/// Polling every minute: fetches per GitRepository per cluster in 30 days.
const POLLING_FETCHES_PER_30_DAYS: f64 = 30.0 * 24.0 * 60.0;
/// Push-driven, a GitRepository keeps `spec.interval: 1h` to catch drift (a push GitLab
/// could not deliver, a force-push outside the hook): 720 reconciles in 30 days.
const DRIFT_FETCHES_PER_30_DAYS: f64 = 30.0 * 24.0;
/// The repositories (GitRepository objects) the pushes go to, each tracked by every
/// cluster: 1 M pushes over 1,000 repositories is 1,000 pushes per repository in 30 days.
pub const TRACKED_REPOSITORIES: f64 = 1_000.0;

pub const PUSHES: f64 = 1e6;
pub const CLUSTER_COUNTS: [u32; 3] = [1, 10, 100];

/// What the SQS path stage measured, pushes one at a time to one cluster.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    /// SQS requests each function made itself: per push (ingest, route) and per delivery
    /// to a cluster (dispatch; none when the trigger succeeds).
    pub ingest_requests_per_push: f64,
    pub route_requests_per_push: f64,
    pub dispatch_requests_per_delivery: f64,
    /// The pollers' `ReceiveMessage` + `DeleteMessageBatch` per batch handed to a function.
    pub intake_poller_requests_per_batch: f64,
    pub dispatch_poller_requests_per_batch: f64,
    /// Pushes per route invocation (1 when pushes arrive one at a time: no batching).
    pub pushes_per_route_invocation: f64,
    /// Mean handler time: per invocation (ingest, route), per delivery (dispatch), in ms.
    pub ingest_ms: f64,
    pub route_ms: f64,
    pub dispatch_ms: f64,
    /// The largest message body the pollers saw.
    pub largest_message_bytes: usize,
}

/// One column of the table: `pushes` pushes to `clusters` clusters in 30 days.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// ingest, route, dispatch.
    pub invocations: [f64; 3],
    pub gb_seconds: [f64; 3],
    /// By the functions themselves, and by the pollers (event source mappings).
    pub sqs_by_functions: f64,
    pub sqs_by_pollers: f64,
    pub usd: f64,
    pub git_fetches_polling: f64,
    pub git_fetches_push_driven: f64,
}

/// Lambda bills each invocation's duration rounded up to the millisecond.
fn gb_seconds(invocations: f64, ms_per_invocation: f64, memory_mb: u32) -> f64 {
    invocations * ms_per_invocation.ceil() / 1e3 * f64::from(memory_mb) / 1024.0
}

pub fn estimate(measured: &Measured, settings: &Settings, pushes: f64, clusters: u32) -> Estimate {
    let n = f64::from(clusters);
    let deliveries = pushes * n;
    let route_invocations = pushes / measured.pushes_per_route_invocation;
    // route sends a push's N dispatch messages together (10 per SendMessageBatch); the
    // dispatch poller is assumed to take them in full batches of the template's BatchSize.
    let send_batches = pushes * (n / SEND_BATCH_MAX).ceil();
    let dispatch_batch = f64::from(settings.dispatch.batch_size.unwrap_or(1));
    let dispatch_invocations = pushes * (n / dispatch_batch).ceil();
    // Measured with one delivery per invocation; a batch is assumed to take as long as its
    // deliveries one after another (an upper bound: dispatch triggers clusters concurrently).
    let dispatch_ms_per_invocation = measured.dispatch_ms * deliveries / dispatch_invocations;
    let invocations = [pushes, route_invocations, dispatch_invocations];
    let gb = [
        gb_seconds(pushes, measured.ingest_ms, settings.ingest.memory_mb),
        gb_seconds(
            route_invocations,
            measured.route_ms,
            settings.route.memory_mb,
        ),
        gb_seconds(
            dispatch_invocations,
            dispatch_ms_per_invocation,
            settings.dispatch.memory_mb,
        ),
    ];
    let sqs_by_functions = pushes * measured.ingest_requests_per_push
        + send_batches * measured.route_requests_per_push
        + deliveries * measured.dispatch_requests_per_delivery;
    let sqs_by_pollers = route_invocations * measured.intake_poller_requests_per_batch
        + dispatch_invocations * measured.dispatch_poller_requests_per_batch;
    let usd = invocations.iter().sum::<f64>() * LAMBDA_USD_PER_REQUEST
        + gb.iter().sum::<f64>() * LAMBDA_ARM64_USD_PER_GB_SECOND
        + (sqs_by_functions + sqs_by_pollers) * SQS_FIFO_USD_PER_REQUEST;
    Estimate {
        invocations,
        gb_seconds: gb,
        sqs_by_functions,
        sqs_by_pollers,
        usd,
        git_fetches_polling: POLLING_FETCHES_PER_30_DAYS * TRACKED_REPOSITORIES * n,
        // Every push is fetched once by every cluster (coalescing can only lower this).
        git_fetches_push_driven: (pushes + DRIFT_FETCHES_PER_30_DAYS * TRACKED_REPOSITORIES) * n,
    }
}

/// `1234567.8` → `1,234,568`.
pub fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return "n/a".into();
    }
    let digits = format!("{:.0}", value.abs());
    let mut grouped = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if value < -0.5 {
        grouped.insert(0, '-');
    }
    grouped
}

/// Whether a full batch of the largest message fits one 64 KB billing chunk.
fn chunks(largest_message_bytes: usize) -> String {
    let batch = SEND_BATCH_MAX as usize * largest_message_bytes;
    if batch <= SQS_BILLING_CHUNK_BYTES {
        format!(
            "The largest message was {largest_message_bytes} B, so a batch of 10 fits one 64 KB chunk: one billed request per call."
        )
    } else {
        format!(
            "The largest message was {largest_message_bytes} B: a batch of 10 is {} chunks of 64 KB, billed as that many requests, which this table does not count.",
            batch.div_ceil(SQS_BILLING_CHUNK_BYTES)
        )
    }
}

/// The cost table, its inputs and its assumptions, as Markdown.
pub fn markdown(measured: &Measured, settings: &Settings) -> String {
    let columns: Vec<Estimate> = CLUSTER_COUNTS
        .iter()
        .map(|&n| estimate(measured, settings, PUSHES, n))
        .collect();
    let mut text = format!(
        "1 M pushes in 30 days × N clusters: an estimate from this run's counts and handler times on moto, not an AWS bill.\n\n| | {} |\n|---|{}\n",
        CLUSTER_COUNTS.map(|n| format!("N = {n}")).join(" | "),
        "---|".repeat(CLUSTER_COUNTS.len())
    );
    let mut row = |label: &str, value: &dyn Fn(&Estimate) -> String| {
        let cells: Vec<String> = columns.iter().map(value).collect();
        text.push_str(&format!("| {label} | {} |\n", cells.join(" | ")));
    };
    for (i, function) in ["ingest", "route", "dispatch"].iter().enumerate() {
        row(&format!("`{function}` invocations"), &|e| {
            thousands(e.invocations[i])
        });
    }
    row("GB-seconds (ingest + route + dispatch)", &|e| {
        let [a, b, c] = e.gb_seconds;
        format!(
            "{} ({} + {} + {})",
            thousands(a + b + c),
            thousands(a),
            thousands(b),
            thousands(c)
        )
    });
    row("SQS requests (functions + pollers)", &|e| {
        format!(
            "{} ({} + {})",
            thousands(e.sqs_by_functions + e.sqs_by_pollers),
            thousands(e.sqs_by_functions),
            thousands(e.sqs_by_pollers)
        )
    });
    row("estimated price, us-east-1 list (arm64)", &|e| {
        format!("${:.2}", e.usd)
    });
    row(
        &format!(
            "Git fetches, polling every 1 min ({} GitRepositories)",
            thousands(TRACKED_REPOSITORIES)
        ),
        &|e| thousands(e.git_fetches_polling),
    );
    row("Git fetches, push-driven (+ `interval: 1h`)", &|e| {
        thousands(e.git_fetches_push_driven)
    });
    row("Git fetches saved", &|e| {
        thousands(e.git_fetches_polling - e.git_fetches_push_driven)
    });
    let memory = |f: crate::template::FunctionSettings| f.memory_mb;
    text.push_str(&format!(
        "\nInputs and assumptions:\n\n\
- Measured on the SQS path (pushes one at a time, 1 cluster): SQS requests by ingest {:.2} per push, by route {:.2} per push (per `SendMessageBatch` of ≤ 10 dispatch messages), by dispatch {:.2} per delivery; pollers {:.2} (intake) and {:.2} (dispatch) requests per batch; {:.2} pushes per route invocation (no batching: an upper bound); mean handler time ingest {:.2} ms, route {:.2} ms, dispatch {:.2} ms per delivery (moto and the apiserver on loopback included).\n\
- From template.yaml: MemorySize ingest {} MB, route {} MB, dispatch {} MB; dispatch BatchSize {}.\n\
- Invocations: ingest 1 per webhook (one push per webhook); route as measured; dispatch ⌈N ÷ BatchSize⌉ per push (route sends a push's N messages together), each batch as long as its deliveries one after another. Durations are billed rounded up to 1 ms.\n\
- SQS requests: ingest and route as measured, route × ⌈N ÷ 10⌉; each poller's receive + delete per batch as measured. {} Not counted: the pollers' idle long polls (they depend on time, not on pushes: {} `ReceiveMessage` of {} s per poller in 30 days) and Secrets Manager reads (per cache TTL, not per push).\n\
- Prices: Lambda arm64 ${} per GB-s and ${:.2} per 1 M requests, SQS FIFO ${:.2} per 1 M requests (us-east-1 list, free tier not deducted).\n\
- Git fetches per GitRepository per cluster in 30 days: polling every 1 min = {}; push-driven = the pushes to it + {} reconciles of `spec.interval: 1h` for drift. The 1 M pushes go to {} repositories, each tracked by every cluster, and every push is fetched by every cluster (coalescing only lowers this).\n",
        measured.ingest_requests_per_push,
        measured.route_requests_per_push,
        measured.dispatch_requests_per_delivery,
        measured.intake_poller_requests_per_batch,
        measured.dispatch_poller_requests_per_batch,
        measured.pushes_per_route_invocation,
        measured.ingest_ms,
        measured.route_ms,
        measured.dispatch_ms,
        memory(settings.ingest),
        memory(settings.route),
        memory(settings.dispatch),
        settings
            .dispatch
            .batch_size
            .map_or("not set (1 assumed)".to_string(), |b| b.to_string()),
        chunks(measured.largest_message_bytes),
        thousands(SECONDS_PER_30_DAYS / LONG_POLL_SECONDS),
        LONG_POLL_SECONDS,
        LAMBDA_ARM64_USD_PER_GB_SECOND,
        LAMBDA_USD_PER_REQUEST * 1e6,
        SQS_FIFO_USD_PER_REQUEST * 1e6,
        thousands(POLLING_FETCHES_PER_30_DAYS),
        thousands(DRIFT_FETCHES_PER_30_DAYS),
        thousands(TRACKED_REPOSITORIES),
    ));
    text
}

/// SQS standard requests (the confirm queue), us-east-1 list.
const SQS_STANDARD_USD_PER_REQUEST: f64 = 0.40 / 1e6;
/// The confirm function's memory (template.yaml) and an assumed handler time per look: it
/// lists three kinds on one apiserver and posts at most one status, which the dispatch
/// stage's measured delivery time (one proxied call) bounds from below; 3 × that is taken.
const CONFIRM_MEMORY_MB: u32 = 256;

/// One column of the confirmation stage's cost: 1 M pushes × `clusters` confirming clusters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConfirmEstimate {
    pub invocations: f64,
    pub gb_seconds: f64,
    pub sqs_requests: f64,
    pub gitlab_calls: f64,
    pub apiserver_requests: f64,
    pub usd: f64,
}

/// Each look is (at most) one invocation of the confirm function, and four SQS requests:
/// the function's own send of the next look and delete of this one, and the poller's
/// receive and delete.
pub fn confirm_estimate(
    confirmed: &crate::confirm_bench::ConfirmMeasured,
    measured: &Measured,
    pushes: f64,
    clusters: u32,
) -> ConfirmEstimate {
    let confirmations = pushes * f64::from(clusters);
    let looks = confirmations * confirmed.looks_per_confirmation;
    let ms_per_look = 3.0 * measured.dispatch_ms;
    let gb = gb_seconds(looks, ms_per_look, CONFIRM_MEMORY_MB);
    let sqs = looks * 4.0;
    ConfirmEstimate {
        invocations: looks,
        gb_seconds: gb,
        sqs_requests: sqs,
        gitlab_calls: confirmations * confirmed.gitlab_calls_per_confirmation,
        apiserver_requests: confirmations * confirmed.apiserver_requests_per_confirmation,
        usd: looks * LAMBDA_USD_PER_REQUEST
            + gb * LAMBDA_ARM64_USD_PER_GB_SECOND
            + sqs * SQS_STANDARD_USD_PER_REQUEST,
    }
}

/// The confirmation stage's cost table, as Markdown.
pub fn confirm_markdown(
    confirmed: &crate::confirm_bench::ConfirmMeasured,
    measured: &Measured,
) -> String {
    let columns: Vec<ConfirmEstimate> = CLUSTER_COUNTS
        .iter()
        .map(|&n| confirm_estimate(confirmed, measured, PUSHES, n))
        .collect();
    let mut text = format!(
        "1 M pushes in 30 days × N clusters, every one confirming: an estimate from this run's confirmation stage, added to the table above.\n\n| | {} |\n|---|{}\n",
        CLUSTER_COUNTS.map(|n| format!("N = {n}")).join(" | "),
        "---|".repeat(CLUSTER_COUNTS.len())
    );
    let mut row = |label: &str, value: &dyn Fn(&ConfirmEstimate) -> String| {
        let cells: Vec<String> = columns.iter().map(value).collect();
        text.push_str(&format!("| {label} | {} |\n", cells.join(" | ")));
    };
    row("`confirm` invocations (one per look, at most)", &|e| {
        thousands(e.invocations)
    });
    row("GB-seconds", &|e| thousands(e.gb_seconds));
    row("SQS requests (confirm queue, standard)", &|e| {
        thousands(e.sqs_requests)
    });
    row("estimated price, us-east-1 list (arm64)", &|e| {
        format!("${:.2}", e.usd)
    });
    row("GitLab API calls", &|e| thousands(e.gitlab_calls));
    row("apiserver requests (lists), all clusters", &|e| {
        thousands(e.apiserver_requests)
    });
    text.push_str(&format!(
        "\nInputs: {:.1} looks, {:.2} GitLab calls and {:.1} apiserver requests per confirmation, as measured (pushes one at a time, so no look was shared; a batch of a cluster's looks shares one read); {} MB; {:.1} ms per look assumed (3 × dispatch's measured {:.2} ms per delivery); SQS standard ${:.2} per 1 M requests. A look that ends early (superseded, failed) costs less; a commit that never applies costs the most looks (about 41 in the 15-minute deadline).\n",
        confirmed.looks_per_confirmation,
        confirmed.gitlab_calls_per_confirmation,
        confirmed.apiserver_requests_per_confirmation,
        CONFIRM_MEMORY_MB,
        3.0 * measured.dispatch_ms,
        measured.dispatch_ms,
        SQS_STANDARD_USD_PER_REQUEST * 1e6,
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::FunctionSettings;

    #[test]
    fn the_confirmation_stage_costs_four_sqs_requests_and_one_invocation_per_look() {
        let confirmed = crate::confirm_bench::ConfirmMeasured {
            looks_per_confirmation: 3.0,
            gitlab_calls_per_confirmation: 3.0,
            apiserver_requests_per_confirmation: 9.0,
        };
        let measured = Measured {
            ingest_requests_per_push: 1.0,
            route_requests_per_push: 1.0,
            dispatch_requests_per_delivery: 0.0,
            intake_poller_requests_per_batch: 2.0,
            dispatch_poller_requests_per_batch: 2.0,
            pushes_per_route_invocation: 1.0,
            ingest_ms: 10.0,
            route_ms: 10.0,
            dispatch_ms: 5.0,
            largest_message_bytes: 600,
        };
        let e = confirm_estimate(&confirmed, &measured, 1e6, 10);
        // 10 M confirmations × 3 looks.
        assert_eq!(e.invocations, 30e6);
        assert_eq!(e.sqs_requests, 120e6);
        // 30 M × 15 ms × 0.25 GB.
        assert!((e.gb_seconds - 112_500.0).abs() < 1e-6, "{}", e.gb_seconds);
        assert_eq!(e.gitlab_calls, 30e6);
        assert_eq!(e.apiserver_requests, 90e6);
        let usd = 30e6 * 0.2 / 1e6 + 112_500.0 * 0.000_013_333_4 + 120e6 * 0.4 / 1e6;
        assert!((e.usd - usd).abs() < 1e-6, "{} vs {usd}", e.usd);
    }

    fn settings() -> Settings {
        let function = |memory_mb, batch_size| FunctionSettings {
            memory_mb,
            batch_size,
        };
        Settings {
            ingest: function(128, None),
            route: function(128, Some(10)),
            dispatch: function(256, Some(10)),
        }
    }

    fn measured() -> Measured {
        Measured {
            ingest_requests_per_push: 1.0,
            route_requests_per_push: 1.0,
            dispatch_requests_per_delivery: 0.0,
            intake_poller_requests_per_batch: 2.0,
            dispatch_poller_requests_per_batch: 2.0,
            pushes_per_route_invocation: 1.0,
            ingest_ms: 2.3,
            route_ms: 4.0,
            dispatch_ms: 7.5,
            largest_message_bytes: 700,
        }
    }

    fn close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() <= 1e-9 * expected.abs().max(1.0),
            "{actual} is not {expected}"
        );
    }

    /// Each column computed by hand: (clusters, dispatch invocations, GB-s of ingest,
    /// route and dispatch, SQS requests by functions and by pollers, USD).
    #[test]
    fn one_million_pushes_by_hand() {
        let cases = [
            // 1 cluster: dispatch 1 M invocations of ⌈7.5⌉ = 8 ms at 0.25 GB = 2,000 GB-s;
            // SQS 1 M + 1 M by functions, 2 M + 2 M by pollers;
            // $: 3 M × 0.2e-6 + 2,875 GB-s × 0.0000133334 + 6 M × 0.5e-6.
            (1, 1e6, 375.0, 500.0, 2_000.0, 2e6, 4e6),
            // 10 clusters: one batch of 10 deliveries per push, 75 ms each batch.
            (10, 1e6, 375.0, 500.0, 18_750.0, 2e6, 4e6),
            // 100 clusters: 10 batches and 10 SendMessageBatch per push.
            (100, 1e7, 375.0, 500.0, 187_500.0, 11e6, 22e6),
        ];
        for (clusters, dispatch, ingest_gb, route_gb, dispatch_gb, functions, pollers) in cases {
            let e = estimate(&measured(), &settings(), 1e6, clusters);
            close(e.invocations[0], 1e6);
            close(e.invocations[1], 1e6);
            close(e.invocations[2], dispatch);
            close(e.gb_seconds[0], ingest_gb);
            close(e.gb_seconds[1], route_gb);
            close(e.gb_seconds[2], dispatch_gb);
            close(e.sqs_by_functions, functions);
            close(e.sqs_by_pollers, pollers);
            let usd = (2e6 + dispatch) * 0.2e-6
                + (ingest_gb + route_gb + dispatch_gb) * 0.000_013_333_4
                + (functions + pollers) * 0.5e-6;
            close(e.usd, usd);
            let n = f64::from(clusters);
            close(e.git_fetches_polling, 43_200.0 * 1_000.0 * n);
            close(e.git_fetches_push_driven, (1e6 + 720.0 * 1_000.0) * n);
        }
        // The 1-cluster total, spelled out: $0.60 + $0.0383335 + $3.00.
        close(
            estimate(&measured(), &settings(), 1e6, 1).usd,
            0.6 + 2_875.0 * 0.000_013_333_4 + 3.0,
        );
    }

    #[test]
    fn batched_route_invocations_and_dispatch_retries_count() {
        let measured = Measured {
            pushes_per_route_invocation: 4.0,
            dispatch_requests_per_delivery: 0.5,
            ..measured()
        };
        let e = estimate(&measured, &settings(), 1e6, 10);
        close(e.invocations[1], 250_000.0);
        // 4 ms per route invocation of 4 pushes, 250,000 × 0.004 s × 0.125 GB.
        close(e.gb_seconds[1], 125.0);
        // ingest 1 M + route 1 M + dispatch 10 M deliveries × 0.5.
        close(e.sqs_by_functions, 7e6);
        close(e.sqs_by_pollers, 250_000.0 * 2.0 + 1e6 * 2.0);
    }

    #[test]
    fn says_when_a_batch_exceeds_one_billing_chunk() {
        assert!(chunks(6_553).contains("fits one 64 KB chunk"));
        assert!(chunks(6_554).contains("is 2 chunks"));
        assert!(chunks(20_000).contains("is 4 chunks"));
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1_000.0), "1,000");
        assert_eq!(thousands(43_200_000.0), "43,200,000");
        assert_eq!(thousands(-1_234_567.0), "-1,234,567");
        assert_eq!(thousands(f64::NAN), "n/a");
    }
}
