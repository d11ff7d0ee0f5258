//! The rule for a registry read that may fail: a value is used while fresh, and when a
//! re-read fails the last good value is kept (and the read tried again after a pause),
//! because unreadable is not unfiltered: a throttled read must not turn a cluster's
//! subscriptions into "every push", nor its entry into "unknown". Only with no good value
//! yet is a failure the caller's to report.

use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct LastGood<T> {
    good: Option<(Arc<T>, Instant)>,
    /// After a failed re-read: when to read again (the last good value serves until then).
    retry_at: Option<Instant>,
    /// Read again at the next use, fresh or not.
    expired: bool,
}

impl<T> Default for LastGood<T> {
    fn default() -> Self {
        Self {
            good: None,
            retry_at: None,
            expired: false,
        }
    }
}

/// What a failed re-read leaves to serve.
#[derive(Debug)]
pub struct Stale<T> {
    pub value: Arc<T>,
    /// How long ago it was read.
    pub age: Duration,
}

impl<T> LastGood<T> {
    /// The value to use at `now` without reading, or `None` when a read is due: the good
    /// value while younger than `ttl`, or, after a failed re-read, until its retry time.
    pub fn current(&self, now: Instant, ttl: Duration) -> Option<Arc<T>> {
        let (value, read_at) = self.good.as_ref()?;
        let fresh = !self.expired && now.saturating_duration_since(*read_at) < ttl;
        let waiting = self.retry_at.is_some_and(|retry_at| now < retry_at);
        (fresh || waiting).then(|| Arc::clone(value))
    }

    /// A read succeeded at `now`.
    pub fn succeeded(&mut self, value: T, now: Instant) -> Arc<T> {
        let value = Arc::new(value);
        self.good = Some((Arc::clone(&value), now));
        self.retry_at = None;
        self.expired = false;
        value
    }

    /// A read at `now` found the value unchanged (an HTTP `304`): the last good value is
    /// fresh again. `None` when there is none.
    pub fn confirmed(&mut self, now: Instant) -> Option<Arc<T>> {
        let (value, read_at) = self.good.as_mut()?;
        *read_at = now;
        self.retry_at = None;
        self.expired = false;
        Some(Arc::clone(value))
    }

    /// The next use reads again; a failure then still falls back to the value.
    pub fn expire(&mut self) {
        self.expired = true;
        self.retry_at = None;
    }

    /// A read failed at `now`: the last good value, if any, serves until `now + retry_after`.
    pub fn failed(&mut self, now: Instant, retry_after: Duration) -> Option<Stale<T>> {
        let (value, read_at) = self.good.as_ref()?;
        self.retry_at = Some(now + retry_after);
        Some(Stale {
            value: Arc::clone(value),
            age: now.saturating_duration_since(*read_at),
        })
    }

    /// Forget the value: the next use reads (credentials were rejected).
    pub fn forget(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
#[path = "last_good_test.rs"]
mod tests;
