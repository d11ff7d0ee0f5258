//! How long each cluster has been denying us (apiserver 403), so a denial is dead-lettered
//! only once it persists.
//!
//! A missing RBAC permission does not fix itself, but a restarting kube-apiserver denies
//! valid credentials with a real 403 for the seconds before its RBAC caches have synced, and
//! a Role being re-created (delete, then apply) denies for a moment too. Dead-lettering those
//! at once would send an operator looking for a permission that is not missing.
//!
//! The memory is per process (a serve run, a warm Lambda container): a container that has
//! not seen the earlier denials starts counting afresh, which only retries longer (still
//! bounded by the retry policy's attempts).

use std::collections::HashMap;
use std::sync::Mutex;

use time::{Duration, OffsetDateTime};

/// A denial must last this long before it is permanent.
pub const DENIAL_CONFIRM_AFTER: Duration = Duration::seconds(10);
/// Retries of a denial not yet confirmed wait at least this long.
pub const DENIAL_RETRY_MIN_SECS: u32 = 5;
/// A record whose last denial is older than this is stale (another container may have
/// seen the cluster answer since): start again.
const STALE_AFTER: Duration = Duration::minutes(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Streak {
    first: OffsetDateTime,
    last: OffsetDateTime,
}

#[derive(Debug, Default)]
pub struct Denials {
    streaks: Mutex<HashMap<String, Streak>>,
}

impl Denials {
    /// Records what the cluster answered this round and returns for how long it has been
    /// denying without a break (`None` when it did not deny).
    pub fn observe(&self, cluster: &str, denied: bool, now: OffsetDateTime) -> Option<Duration> {
        // A poisoned lock only means another thread panicked mid-update: the map is still
        // a valid map, and forgetting a streak is the safe direction.
        let mut streaks = self
            .streaks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !denied {
            streaks.remove(cluster);
            return None;
        }
        let streak = streaks
            .entry(cluster.to_string())
            .and_modify(|streak| {
                if now - streak.last > STALE_AFTER || now < streak.first {
                    streak.first = now;
                }
                streak.last = now;
            })
            .or_insert(Streak {
                first: now,
                last: now,
            });
        Some(now - streak.first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + Duration::seconds(1_700_000_000 + secs)
    }

    #[test]
    fn a_streak_grows_until_any_other_answer_and_is_per_cluster() {
        let denials = Denials::default();
        assert_eq!(denials.observe("a", true, at(0)), Some(Duration::ZERO));
        assert_eq!(denials.observe("b", true, at(4)), Some(Duration::ZERO));
        assert_eq!(
            denials.observe("a", true, at(6)),
            Some(Duration::seconds(6))
        );
        assert_eq!(
            denials.observe("a", true, at(12)),
            Some(Duration::seconds(12))
        );
        assert_eq!(denials.observe("a", false, at(13)), None);
        assert_eq!(denials.observe("a", true, at(14)), Some(Duration::ZERO));
        assert_eq!(
            denials.observe("b", true, at(9)),
            Some(Duration::seconds(5))
        );
    }

    #[test]
    fn a_stale_streak_or_a_clock_step_back_starts_again() {
        let denials = Denials::default();
        denials.observe("a", true, at(0));
        assert_eq!(
            denials.observe("a", true, at(21 * 60)),
            Some(Duration::ZERO),
            "20 minutes without news: another container may have seen a success"
        );
        assert_eq!(
            denials.observe("a", true, at(21 * 60 - 30)),
            Some(Duration::ZERO)
        );
    }
}
