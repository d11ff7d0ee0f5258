//! When one push covers another, so the older needs no call of its own.
//!
//! A Flux trigger makes the controller fetch the ref's head *now*: a call made after a push
//! was accepted serves that push, whichever push's body it carried. So, per cluster and
//! target (a Receiver for one project, ref and event, or one GitRepository to annotate):
//!
//! - within a batch, the newest push that needs a target carries the one call, and every
//!   older pending push of that project, ref and event whose targets it includes is
//!   superseded by it, whatever becomes of it (if it fails, it carries the retry, and a
//!   dead letter of it redriven serves them all);
//! - across batches, a target delivered at a time `t` covers every push accepted before
//!   `t` (with [`SUPERSEDE_MARGIN`] for the clocks of different hosts): a retry that comes
//!   due after a newer push was delivered there is acknowledged as superseded.
//!
//! The memory of deliveries ([`Deliveries`]) is per process (a `serve` run, a warm Lambda
//! container), like the denial streaks: a container that has not seen a delivery only
//! makes one more call, which is a duplicate trigger, never a dropped push.

use std::collections::HashMap;
use std::sync::Mutex;

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::push::Dispatch;

/// A delivery covers a push accepted at least this much earlier: ingest and dispatch may
/// run on different hosts, whose clocks NTP keeps far closer than this.
pub const SUPERSEDE_MARGIN: Duration = Duration::seconds(1);
/// Deliveries remembered per process; the oldest are forgotten first.
pub const MAX_REMEMBERED_DELIVERIES: usize = 50_000;

/// When each (cluster, target scope) was last delivered to, by this process. The scope is
/// what a delivery serves (`Target::delivery_scope`: a Receiver per project, ref and event;
/// a GitRepository to annotate).
#[derive(Debug, Default)]
pub struct Deliveries {
    last: Mutex<HashMap<(String, String), OffsetDateTime>>,
}

impl Deliveries {
    /// `target` delivered at `at` (the time the call was decided, which is before it was
    /// sent: the conservative side).
    pub fn record(&self, cluster: &str, target: &str, at: OffsetDateTime) {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = last
            .entry((cluster.to_string(), target.to_string()))
            .or_insert(at);
        if at > *slot {
            *slot = at;
        }
        if last.len() > MAX_REMEMBERED_DELIVERIES {
            forget_oldest_half(&mut last);
        }
    }

    /// The delivery that covers a push accepted at `received_at` (RFC 3339), if any.
    pub fn covering(
        &self,
        cluster: &str,
        target: &str,
        received_at: &str,
    ) -> Option<OffsetDateTime> {
        let received = OffsetDateTime::parse(received_at, &Rfc3339).ok()?;
        let last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let delivered = *last.get(&(cluster.to_string(), target.to_string()))?;
        (delivered >= received + SUPERSEDE_MARGIN).then_some(delivered)
    }

    pub fn len(&self) -> usize {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn forget_oldest_half(last: &mut HashMap<(String, String), OffsetDateTime>) {
    let mut times: Vec<OffsetDateTime> = last.values().copied().collect();
    let middle = times.len() / 2;
    let (_, cutoff, _) = times.select_nth_unstable(middle);
    let cutoff = *cutoff;
    last.retain(|_, at| *at > cutoff);
}

/// For each message (in queue order), the index of a newer message of the same batch that
/// takes over all of its targets, if any: same instance, project (id, path and URLs), ref
/// and event, accepted
/// later (queue order breaks ties), and asking for every target the older one asks for.
/// The newest such message is chosen, so a chain of pushes collapses onto one.
pub fn superseded_by(dispatches: &[&Dispatch]) -> Vec<Option<usize>> {
    let accepted: Vec<Option<OffsetDateTime>> = dispatches
        .iter()
        .map(|d| OffsetDateTime::parse(&d.push.received_at, &Rfc3339).ok())
        .collect();
    let newer = |a: usize, b: usize| -> bool {
        // Is b newer than a? An unreadable time is never newer by time.
        match (accepted[a], accepted[b]) {
            (Some(ta), Some(tb)) if ta != tb => tb > ta,
            _ => b > a,
        }
    };
    (0..dispatches.len())
        .map(|older| {
            let mut best: Option<usize> = None;
            for candidate in 0..dispatches.len() {
                if candidate == older || !newer(older, candidate) {
                    continue;
                }
                let (o, c) = (&dispatches[older].push, &dispatches[candidate].push);
                // The whole project, URLs included: what a push matches in a cluster is
                // decided by them, and two pushes of one project id may name it
                // differently (a project renamed between them).
                let same_scope = o.instance == c.instance
                    && o.project == c.project
                    && o.git_ref == c.git_ref
                    && o.event == c.event;
                if same_scope
                    && dispatches[older].targets_within(dispatches[candidate])
                    && best.is_none_or(|b| newer(b, candidate))
                {
                    best = Some(candidate);
                }
            }
            best
        })
        .collect()
}

#[cfg(test)]
#[path = "supersede_test.rs"]
mod tests;
