//! Request ids unique to one process run and across runs: what identifies a webhook delivery
//! that carries no `Idempotency-Key` (core's `ingest::delivery_id`), so it is never taken for
//! another.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// `<prefix>:<pid>:<process start, ns since the epoch>:<sequence>`.
pub fn unique(prefix: &str) -> String {
    static STARTED: OnceLock<i128> = OnceLock::new();
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let started = STARTED.get_or_init(|| time::OffsetDateTime::now_utc().unix_timestamp_nanos());
    format!(
        "{prefix}:{}:{started}:{}",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_unique_within_a_run() {
        let ids: std::collections::BTreeSet<String> =
            (0..1000).map(|_| super::unique("t")).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| id.starts_with("t:")));
    }
}
