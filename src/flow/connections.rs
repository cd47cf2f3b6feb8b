//! Site connections kept open between runs.
//!
//! A site run needs one connection to its site. Logging in costs a round
//! trip or several and, on PostgreSQL, a server process: for a fleet synced
//! every few minutes by `hubsync run`, most of a no-op cycle. So a run
//! that succeeded hands its connection back here, and the next run at the
//! same site (of any flow) takes it again after one ping.
//!
//! Bounds: connections busy in runs plus connections kept idle never exceed
//! `hub.max_concurrent_sites` (the oldest idle one is closed to make room
//! for a new login), and an idle connection older than
//! `hub.site_idle_timeout` is closed rather than used. SQLite site files are
//! opened per run (opening a file costs less than checking that it was not
//! replaced in between).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::connector::Connector;

/// Idle site connections, oldest first, and the count of busy ones.
pub(crate) struct SiteConnections {
    /// Most connections open at once, busy and idle together.
    capacity: usize,
    /// Longest an idle connection is kept; zero keeps none.
    idle_timeout: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    idle: VecDeque<Idle>,
    busy: usize,
}

struct Idle {
    site: String,
    connector: Connector,
    since: Instant,
}

impl SiteConnections {
    /// An empty set: at most `capacity` connections open, idle ones kept for
    /// at most `idle_timeout` (zero: closed after each run).
    pub(crate) fn new(capacity: usize, idle_timeout: Duration) -> SiteConnections {
        SiteConnections {
            capacity: capacity.max(1),
            idle_timeout,
            state: Mutex::default(),
        }
    }

    /// Takes the newest idle connection to `site`, if one is kept and not
    /// older than the idle timeout, and counts it busy. Expired idle
    /// connections (of any site) are closed on the way.
    pub(crate) async fn take(&self, site: &str) -> Option<Connector> {
        let (found, expired) = {
            let mut state = self.state.lock().expect("site connections lock");
            let expired = self.expire(&mut state);
            let found = state
                .idle
                .iter()
                .rposition(|idle| idle.site == site)
                .and_then(|at| state.idle.remove(at))
                .map(|idle| idle.connector);
            if found.is_some() {
                state.busy += 1;
            }
            (found, expired)
        };
        close_all(expired).await;
        found
    }

    /// Counts a new connection busy, closing the oldest idle connections
    /// first so that busy plus idle stays within the capacity. Call before
    /// logging in; pair with [`SiteConnections::give_back`] or
    /// [`SiteConnections::discard`].
    pub(crate) async fn make_room(&self) {
        let evicted = {
            let mut state = self.state.lock().expect("site connections lock");
            state.busy += 1;
            let mut evicted = self.expire(&mut state);
            while !state.idle.is_empty() && state.idle.len() + state.busy > self.capacity {
                evicted.extend(state.idle.pop_front().map(|idle| idle.connector));
            }
            evicted
        };
        close_all(evicted).await;
    }

    /// Keeps the connection of a run that went well for the next run at
    /// `site`; closes it instead when connections are not kept (idle timeout
    /// zero, or a SQLite file).
    pub(crate) async fn give_back(&self, site: &str, connector: Connector) {
        let keep =
            !self.idle_timeout.is_zero() && connector.dialect() != crate::dialect::Dialect::Sqlite;
        {
            let mut state = self.state.lock().expect("site connections lock");
            state.busy = state.busy.saturating_sub(1);
            if keep {
                state.idle.push_back(Idle {
                    site: site.to_string(),
                    connector,
                    since: Instant::now(),
                });
                return;
            }
        }
        close_all(vec![connector]).await;
    }

    /// Closes the connection of a run that failed (it may be broken, or
    /// stuck in a statement that timed out) or that never opened one (pass
    /// `None`).
    pub(crate) async fn discard(&self, connector: Option<Connector>) {
        {
            let mut state = self.state.lock().expect("site connections lock");
            state.busy = state.busy.saturating_sub(1);
        }
        close_all(connector.into_iter().collect()).await;
    }

    /// Closes every idle connection (the hub is closing).
    pub(crate) async fn close_idle(&self) {
        let idle: Vec<Connector> = {
            let mut state = self.state.lock().expect("site connections lock");
            state.idle.drain(..).map(|idle| idle.connector).collect()
        };
        close_all(idle).await;
    }

    /// Idle connections kept now (for tests and the bench).
    pub(crate) fn idle_count(&self) -> usize {
        self.state.lock().expect("site connections lock").idle.len()
    }

    fn expire(&self, state: &mut State) -> Vec<Connector> {
        let mut expired = Vec::new();
        while let Some(oldest) = state.idle.front()
            && oldest.since.elapsed() >= self.idle_timeout
        {
            expired.extend(state.idle.pop_front().map(|idle| idle.connector));
        }
        expired
    }
}

/// Closes `connectors` at once (each waits at most 2 s) and counts them
/// closed in the `hubsync_site_connections_open` gauge.
async fn close_all(connectors: Vec<Connector>) {
    futures::future::join_all(connectors.iter().map(Connector::close)).await;
    for _ in &connectors {
        crate::telemetry::site_connection_closed();
    }
}
