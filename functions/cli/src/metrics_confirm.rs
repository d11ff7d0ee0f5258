//! The confirmation figures on `/metrics` (issue 14): push → applied per cluster (the
//! number users care about: commit to deployed), confirmations by outcome and reason,
//! GitLab API calls by endpoint and status, and the apiserver requests confirmations made.

use fluxrelay_core::handlers::confirm::ConfirmReport;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabel {
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConfirmationLabels {
    cluster: String,
    outcome: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    endpoint: String,
    status: String,
}

/// Seconds from a push's acceptance to its last consumer's `Ready`: from a few seconds to
/// the 15-minute deadline.
const APPLIED_BUCKETS: [f64; 14] = [
    1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 300.0, 600.0, 900.0,
];

pub struct ConfirmMetrics {
    applied: Family<ClusterLabel, Histogram>,
    confirmations: Family<ConfirmationLabels, Counter>,
    calls: Family<CallLabels, Counter>,
    requests: Family<ClusterLabel, Counter>,
}

impl ConfirmMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let applied = Family::<ClusterLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(APPLIED_BUCKETS)
        });
        let confirmations = Family::<ConfirmationLabels, Counter>::default();
        let calls = Family::<CallLabels, Counter>::default();
        let requests = Family::<ClusterLabel, Counter>::default();
        registry.register(
            "push_to_applied_seconds",
            "Time from a push's webhook being accepted to the cluster reporting it applied (the last consumer's Ready), per cluster",
            applied.clone(),
        );
        registry.register(
            "confirmations",
            "Confirmations ended, by cluster, outcome (success, failed, superseded, timed_out) and reason",
            confirmations.clone(),
        );
        registry.register(
            "gitlab_api_calls",
            "Calls to GitLab's API, by endpoint (create_status, list_statuses, compare) and HTTP status (or transport)",
            calls.clone(),
        );
        registry.register(
            "confirm_apiserver_requests",
            "apiserver requests made by confirmations (one list per kind and namespace per look), per cluster",
            requests.clone(),
        );
        Self {
            applied,
            confirmations,
            calls,
            requests,
        }
    }

    pub fn record(&self, report: &ConfirmReport) {
        for (cluster, requests) in &report.requests {
            self.requests
                .get_or_create(&ClusterLabel {
                    cluster: cluster.clone(),
                })
                .inc_by(u64::from(*requests));
        }
        for message in &report.messages {
            for call in &message.calls {
                self.calls
                    .get_or_create(&CallLabels {
                        endpoint: call.endpoint.to_string(),
                        status: call.status.clone(),
                    })
                    .inc();
            }
            let (Some(confirmation), Some(ended)) = (&message.confirmation, message.ended()) else {
                continue;
            };
            self.confirmations
                .get_or_create(&ConfirmationLabels {
                    cluster: confirmation.cluster.clone(),
                    outcome: ended.outcome.as_str().to_string(),
                    reason: ended.reason.clone(),
                })
                .inc();
            if let Some(seconds) = confirmation.push_to_applied_secs() {
                self.applied
                    .get_or_create(&ClusterLabel {
                        cluster: confirmation.cluster.clone(),
                    })
                    .observe(seconds);
            }
        }
    }

    /// A compare made by route (changed paths for `paths` subscriptions).
    pub fn record_compare(&self, status: &str) {
        self.calls
            .get_or_create(&CallLabels {
                endpoint: "compare".to_string(),
                status: status.to_string(),
            })
            .inc();
    }
}
