//! GitLab said 429: no call to that instance until its `Retry-After` has passed. Kept per
//! process (a `serve` run, a warm Lambda container), like the denial streaks.

use std::collections::BTreeMap;
use std::sync::Mutex;

use time::OffsetDateTime;

#[derive(Debug, Default)]
pub struct Throttle {
    until: Mutex<BTreeMap<String, OffsetDateTime>>,
}

impl Throttle {
    /// The instance asked for no calls for `secs` from `now`.
    pub fn hold(&self, instance: &str, now: OffsetDateTime, secs: u32) {
        let until = now + time::Duration::seconds(i64::from(secs));
        let mut map = self.until.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(instance.to_string()).or_insert(until);
        if *entry < until {
            *entry = until;
        }
    }

    /// Seconds still to wait before calling the instance (`None`: call now).
    pub fn wait_secs(&self, instance: &str, now: OffsetDateTime) -> Option<u32> {
        let map = self.until.lock().unwrap_or_else(|e| e.into_inner());
        let until = *map.get(instance)?;
        let left = (until - now).whole_seconds();
        (left > 0).then(|| u32::try_from(left).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_each_instance_apart_until_the_latest_retry_after() {
        let now = OffsetDateTime::from_unix_timestamp(1_763_800_000).unwrap();
        let throttle = Throttle::default();
        assert_eq!(throttle.wait_secs("https://a", now), None);
        throttle.hold("https://a", now, 30);
        throttle.hold("https://a", now, 10);
        assert_eq!(throttle.wait_secs("https://a", now), Some(30));
        assert_eq!(throttle.wait_secs("https://b", now), None);
        let later = now + time::Duration::seconds(30);
        assert_eq!(throttle.wait_secs("https://a", later), None);
    }
}
