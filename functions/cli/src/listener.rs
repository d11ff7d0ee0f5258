//! `serve`'s HTTP listener, for a network where not every client is GitLab.
//!
//! - HTTP/1.1 by hyper, with its header-read timeout (which also closes a connection that
//!   sends nothing, or sits idle between requests) and a 64 KiB cap on a request head.
//! - At most `max_connections` open. A new connection past the cap closes the connection
//!   that has been idle longest (no request in progress), so held-open idle connections
//!   cannot lock GitLab out; only when every connection is in a request does a new one wait.
//! - Shutdown: stop accepting, let requests in progress finish (each is bounded by the
//!   router's request timeout), close idle connections, and cut what is left after
//!   `shutdown_grace`.
//!
//! Time limits inside a request (reading the body, waiting for a slot) are the router's
//! (tower-http's `TimeoutLayer`, tower's `ConcurrencyLimit`), not this module's.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::ServiceExt as _;

/// A request head (request line and headers) larger than this is refused (431). GitLab's
/// are under 4 KiB; hyper's own default is 400 KiB per connection.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// After a failed accept (a full file table), wait this long before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The listener's limits (the config's `[http]` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
}

/// What the listener counts, for `/metrics` (handles shared with the registry).
#[derive(Clone, Debug, Default)]
pub struct ConnectionMetrics {
    /// Connections open now.
    pub open: Gauge,
    /// Idle connections closed to make room for a new one (the cap was reached).
    pub closed_for_room: Counter,
    /// Connections closed because their request head was not complete in time.
    pub header_timeouts: Counter,
}

/// What shutting down took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Connections still open when `shutdown_grace` ran out, and closed without an answer.
    pub cut: usize,
}

/// Serves `app` on `listener` until `shutdown` completes, then shuts down as described in
/// the module documentation.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    metrics: ConnectionMetrics,
    shutdown: impl Future<Output = ()>,
) -> Stopped {
    let pool = Arc::new(Pool::new(limits.max_connections, metrics.clone()));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    tokio::pin!(shutdown);
    'accept: loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break 'accept,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // Out of file descriptors (or a connection reset before it was accepted):
                // an idle connection is the cheapest thing to give up.
                tracing::warn!(error = %error, "could not accept a connection");
                if !pool.evict_longest_idle() {
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                continue;
            }
        };
        // Make room: the longest-idle connection goes; with none idle, wait for a request
        // to finish (each is bounded by the request timeout).
        while pool.open() >= pool.max {
            if pool.evict_longest_idle() {
                break;
            }
            tokio::select! {
                biased;
                () = &mut shutdown => break 'accept,
                () = pool.freed.notified() => {}
            }
        }
        let slot = Slot::open(pool.clone());
        let service = {
            let (app, slot) = (app.clone(), slot.clone());
            hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let (app, slot) = (app.clone(), slot.clone());
                async move {
                    slot.busy();
                    let response = app.oneshot(request.map(Body::new)).await;
                    slot.idle();
                    response
                }
            })
        };
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        let header_timeouts = metrics.header_timeouts.clone();
        tokio::spawn(async move {
            let evicted = slot.evict.clone();
            tokio::select! {
                result = connection => {
                    if let Err(error) = result {
                        if error.is_timeout() {
                            header_timeouts.inc();
                        }
                        tracing::debug!(error = %error, "connection closed");
                    }
                }
                () = evicted.notified() => {
                    tracing::debug!("closed the longest-idle connection to make room");
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    let open = pool.open();
    tracing::info!(
        connections = open,
        grace_secs = limits.shutdown_grace.as_secs(),
        "no longer accepting connections; finishing requests in progress"
    );
    match tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await {
        Ok(()) => Stopped { cut: 0 },
        Err(_) => {
            let cut = pool.open();
            tracing::warn!(
                connections = cut,
                grace_secs = limits.shutdown_grace.as_secs(),
                "connections still open after the shutdown grace are cut without an answer"
            );
            Stopped { cut }
        }
    }
}

/// Open connections, and the idle ones in the order they became idle.
struct Pool {
    max: usize,
    state: Mutex<PoolState>,
    /// Notified when a connection closes.
    freed: Notify,
    metrics: ConnectionMetrics,
}

#[derive(Default)]
struct PoolState {
    open: usize,
    next: u64,
    /// Idle since (a sequence number) → (connection, its eviction signal).
    idle: BTreeMap<u64, (u64, Arc<Notify>)>,
    /// Connection → idle since.
    idle_since: HashMap<u64, u64>,
}

impl Pool {
    fn new(max: usize, metrics: ConnectionMetrics) -> Pool {
        Pool {
            max: max.max(1),
            state: Mutex::new(PoolState::default()),
            freed: Notify::new(),
            metrics,
        }
    }

    fn state(&self) -> MutexGuard<'_, PoolState> {
        // The state stays consistent whatever panicked while holding it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn open(&self) -> usize {
        self.state().open
    }

    /// Signals the connection idle longest to close; false when none is idle.
    fn evict_longest_idle(&self) -> bool {
        let mut state = self.state();
        match state.idle.pop_first() {
            Some((_, (connection, evict))) => {
                state.idle_since.remove(&connection);
                // A stored permit: the signal is not lost if the task is not waiting yet.
                evict.notify_one();
                self.metrics.closed_for_room.inc();
                true
            }
            None => false,
        }
    }
}

/// One open connection's place in the pool; closing it (dropping the last clone) frees it.
#[derive(Clone)]
struct Slot(Arc<SlotInner>);

struct SlotInner {
    pool: Arc<Pool>,
    id: u64,
    evict: Arc<Notify>,
}

impl std::ops::Deref for Slot {
    type Target = SlotInner;
    fn deref(&self) -> &SlotInner {
        &self.0
    }
}

impl Slot {
    /// A new connection: counted, and idle until its first request head is read.
    fn open(pool: Arc<Pool>) -> Slot {
        let id = {
            let mut state = pool.state();
            state.open += 1;
            state.next += 1;
            state.next
        };
        pool.metrics.open.inc();
        let slot = Slot(Arc::new(SlotInner {
            pool,
            id,
            evict: Arc::new(Notify::new()),
        }));
        slot.idle();
        slot
    }

    fn idle(&self) {
        let mut state = self.pool.state();
        state.next += 1;
        let since = state.next;
        if let Some(old) = state.idle_since.insert(self.id, since) {
            state.idle.remove(&old);
        }
        state.idle.insert(since, (self.id, self.evict.clone()));
    }

    fn busy(&self) {
        let mut state = self.pool.state();
        if let Some(since) = state.idle_since.remove(&self.id) {
            state.idle.remove(&since);
        }
    }
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        {
            let mut state = self.pool.state();
            if let Some(since) = state.idle_since.remove(&self.id) {
                state.idle.remove(&since);
            }
            state.open = state.open.saturating_sub(1);
        }
        self.pool.metrics.open.dec();
        self.pool.freed.notify_one();
    }
}

/// The soft limit on open files, from `/proc/self/limits` (Linux); `None` elsewhere.
pub fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_longest_idle_connection_goes_first_and_a_busy_one_never() {
        let metrics = ConnectionMetrics::default();
        let pool = Arc::new(Pool::new(3, metrics.clone()));
        let first = Slot::open(pool.clone());
        let second = Slot::open(pool.clone());
        let third = Slot::open(pool.clone());
        assert_eq!(pool.open(), 3);
        first.busy();
        // `first` answered a request and is idle again: now the newest idle.
        first.idle();
        third.busy();
        assert!(pool.evict_longest_idle());
        assert!(second.evict.notified().now_or_never_ready());
        assert!(pool.evict_longest_idle());
        assert!(first.evict.notified().now_or_never_ready());
        // Only `third` is left, and it is in a request.
        assert!(!pool.evict_longest_idle());
        drop((first, second));
        assert_eq!(pool.open(), 1);
        drop(third);
        assert_eq!(pool.open(), 0);
        assert_eq!((metrics.open.get(), metrics.closed_for_room.get()), (0, 2));
    }

    trait ReadyNow {
        fn now_or_never_ready(self) -> bool;
    }

    impl<F: Future<Output = ()>> ReadyNow for F {
        fn now_or_never_ready(self) -> bool {
            let waker = std::task::Waker::noop();
            let mut context = std::task::Context::from_waker(waker);
            let mut future = std::pin::pin!(self);
            future.as_mut().poll(&mut context).is_ready()
        }
    }
}
