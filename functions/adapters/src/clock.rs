//! The core's `Clock` on tokio and the wall clock: what the Lambda functions and `serve`
//! race each cluster's work against; and, for `serve`, its run's monotonic clock.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use fluxrelay_core::ports::Clock;
use fluxrelay_core::push::RunInstant;
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    async fn sleep(&self, duration: std::time::Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// [`TokioClock`] with this process run's monotonic clock, for a process that accepts the
/// pushes it dispatches (`serve`): its pushes and its deliveries are ordered exactly
/// (`Clock::run_instant`).
#[derive(Debug, Clone, Copy, Default)]
pub struct RunClock;

impl RunClock {
    /// Now on this run's monotonic clock: nanoseconds since the first reading, named by a
    /// run id taken from the wall clock and the process id at that reading (two runs of
    /// `serve` on one queue are never the same process at the same nanosecond).
    pub fn instant(&self) -> RunInstant {
        static ORIGIN: OnceLock<(u64, Instant)> = OnceLock::new();
        let (run, origin) = *ORIGIN.get_or_init(|| {
            let wall = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_nanos());
            let run = (wall as u64) ^ (u64::from(std::process::id()) << 40);
            (run, Instant::now())
        });
        let nanos = u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        RunInstant { run, nanos }
    }
}

impl Clock for RunClock {
    fn now(&self) -> OffsetDateTime {
        TokioClock.now()
    }

    async fn sleep(&self, duration: std::time::Duration) {
        TokioClock.sleep(duration).await;
    }

    fn run_instant(&self) -> Option<RunInstant> {
        Some(self.instant())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_reads_one_run_id_and_never_goes_back() {
        let first = RunClock.instant();
        std::thread::sleep(std::time::Duration::from_millis(1));
        let second = RunClock.instant();
        assert_eq!(first.run, second.run);
        assert_eq!(first.is_before(second), Some(true));
        assert_eq!(second.is_before(first), Some(false));
        assert_eq!(RunClock.run_instant().map(|now| now.run), Some(first.run));
        assert_eq!(TokioClock.run_instant(), None);
    }
}
