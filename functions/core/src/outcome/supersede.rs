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
//!   `t`: a retry that comes due after a newer push was delivered there is acknowledged
//!   as superseded. Where the push was accepted by this very process run (`serve`), both
//!   moments are readings of its monotonic clock and compare exactly; otherwise they are
//!   wall-clock times, from different hosts on AWS, and the delivery must come at least
//!   [`SUPERSEDE_MARGIN`] after the acceptance.
//!
//! The memory of deliveries ([`Deliveries`]) is per process (a `serve` run, a warm Lambda
//! container), like the denial streaks: a container that has not seen a delivery only
//! makes one more call, which is a duplicate trigger, never a dropped push.

use std::collections::HashMap;
use std::sync::Mutex;

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::push::{Dispatch, Push, RunInstant};

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
    last: Mutex<HashMap<(String, String), Delivered>>,
}

/// The latest delivery to one target: its wall-clock time and, where the process has one
/// (`Clock::run_instant`), the same moment on its run's monotonic clock. Each is the
/// latest of its kind, so a wall clock set back keeps the later monotonic reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Delivered {
    at: OffsetDateTime,
    in_run: Option<RunInstant>,
}

/// The delivery that covers a push: when its batch began (wall clock), and whether the
/// push was ordered against it on the run's clock rather than by the wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Covering {
    pub at: OffsetDateTime,
    pub in_run: bool,
}

impl Covering {
    /// What `explain` and the journal show as the push's cover. On the run's clock the
    /// batch may have begun before the push was accepted, while its call went out after:
    /// said so, so that the time does not read as a delivery before the push.
    pub fn describe(&self) -> String {
        let at = crate::ingest::rfc3339(self.at);
        if self.in_run {
            format!("a delivery at {at} (its call went out after this process accepted the push)")
        } else {
            format!("a delivery at {at}")
        }
    }
}

impl Deliveries {
    /// `target` delivered at `at` (and `in_run`), both read before the call was sent: the
    /// conservative side.
    pub fn record(
        &self,
        cluster: &str,
        target: &str,
        at: OffsetDateTime,
        in_run: Option<RunInstant>,
    ) {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = last
            .entry((cluster.to_string(), target.to_string()))
            .or_insert(Delivered { at, in_run });
        slot.at = slot.at.max(at);
        slot.in_run = match (slot.in_run, in_run) {
            (Some(kept), Some(new)) if kept.run == new.run && kept.nanos >= new.nanos => Some(kept),
            (kept, None) => kept,
            (_, new) => new,
        };
        if last.len() > MAX_REMEMBERED_DELIVERIES {
            forget_oldest_half(&mut last);
        }
    }

    /// The delivery that covers `push` on `target`, if any. A push accepted in the run that
    /// delivered is covered exactly when it was accepted before the delivery was decided,
    /// whatever the wall clock says; any other by the wall clock with
    /// [`SUPERSEDE_MARGIN`]. An unreadable acceptance time is never covered.
    pub fn covering(&self, cluster: &str, target: &str, push: &Push) -> Option<Covering> {
        let last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let delivered = *last.get(&(cluster.to_string(), target.to_string()))?;
        let exact = push
            .accepted_in_run
            .zip(delivered.in_run)
            .and_then(|(accepted, decided)| accepted.is_before(decided));
        let covered = match exact {
            Some(before) => before,
            None => OffsetDateTime::parse(&push.received_at, &Rfc3339)
                .is_ok_and(|received| delivered.at >= received + SUPERSEDE_MARGIN),
        };
        covered.then_some(Covering {
            at: delivered.at,
            in_run: exact.is_some(),
        })
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

fn forget_oldest_half(last: &mut HashMap<(String, String), Delivered>) {
    let mut times: Vec<OffsetDateTime> = last.values().map(|delivered| delivered.at).collect();
    let middle = times.len() / 2;
    let (_, cutoff, _) = times.select_nth_unstable(middle);
    let cutoff = *cutoff;
    last.retain(|_, delivered| delivered.at > cutoff);
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
