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
//! `hub.site_idle_timeout` is closed (by a task that looks every half
//! timeout, and at the next checkout). SQLite site files are
//! opened per run (opening a file costs less than checking that it was not
//! replaced in between).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::connector::Connector;

/// Idle site connections, oldest first. Busy connections are not counted
/// here: each belongs to a run holding a site slot, so the hub passes the
/// slots in use (a count no failure or panic can leave wrong).
pub(crate) struct SiteConnections {
    /// Most connections open at once, busy and idle together.
    capacity: usize,
    /// Longest an idle connection is kept; zero keeps none.
    idle_timeout: Duration,
    idle: Mutex<VecDeque<Idle>>,
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
            idle: Mutex::default(),
        }
    }

    /// Takes the newest idle connection to `site`, if one is kept and not
    /// older than the idle timeout. Expired idle connections (of any site)
    /// are closed on the way.
    pub(crate) async fn take(&self, site: &str) -> Option<Connector> {
        let (found, expired) = {
            let mut idle = self.idle.lock().expect("site connections lock");
            let expired = self.expire(&mut idle);
            let found = idle
                .iter()
                .rposition(|kept| kept.site == site)
                .and_then(|at| idle.remove(at))
                .map(|kept| kept.connector);
            (found, expired)
        };
        close_all(expired).await;
        found
    }

    /// Closes the oldest idle connections until `busy` (runs holding a site
    /// slot, the caller included) plus the idle ones fit the capacity; call
    /// before logging in.
    pub(crate) async fn make_room(&self, busy: usize) {
        let evicted = {
            let mut idle = self.idle.lock().expect("site connections lock");
            let mut evicted = self.expire(&mut idle);
            while !idle.is_empty() && idle.len() + busy > self.capacity {
                evicted.extend(idle.pop_front().map(|kept| kept.connector));
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
        if keep {
            self.idle
                .lock()
                .expect("site connections lock")
                .push_back(Idle {
                    site: site.to_string(),
                    connector,
                    since: Instant::now(),
                });
        } else {
            close_all(vec![connector]).await;
        }
    }

    /// Closes the connection of a run that failed (it may be broken, or
    /// stuck in a statement that timed out) or of one found dead.
    pub(crate) async fn close(&self, connector: Connector) {
        close_all(vec![connector]).await;
    }

    /// Closes the idle connections older than the idle timeout (called
    /// periodically by [`SiteConnections::reap`], so a hub that waits hours
    /// for its next pass does not hold site server processes meanwhile).
    pub(crate) async fn close_expired(&self) {
        let expired = {
            let mut idle = self.idle.lock().expect("site connections lock");
            self.expire(&mut idle)
        };
        close_all(expired).await;
    }

    /// Spawns the task that closes expired idle connections every half
    /// idle timeout (between 1 s and 1 min), until `cancel` fires or the
    /// set is dropped. Nothing is spawned when connections are not kept.
    pub(crate) fn reap(
        connections: &std::sync::Arc<SiteConnections>,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        if connections.idle_timeout.is_zero() {
            return;
        }
        let period =
            (connections.idle_timeout / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let weak = std::sync::Arc::downgrade(connections);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(period) => {}
                }
                let Some(connections) = weak.upgrade() else {
                    break;
                };
                connections.close_expired().await;
            }
        });
    }

    /// Closes every idle connection (the hub is closing).
    pub(crate) async fn close_idle(&self) {
        let idle: Vec<Connector> = {
            let mut idle = self.idle.lock().expect("site connections lock");
            idle.drain(..).map(|kept| kept.connector).collect()
        };
        close_all(idle).await;
    }

    /// Idle connections kept now (for tests and the bench).
    pub(crate) fn idle_count(&self) -> usize {
        self.idle.lock().expect("site connections lock").len()
    }

    fn expire(&self, idle: &mut VecDeque<Idle>) -> Vec<Connector> {
        let mut expired = Vec::new();
        while let Some(oldest) = idle.front()
            && oldest.since.elapsed() >= self.idle_timeout
        {
            expired.extend(idle.pop_front().map(|kept| kept.connector));
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
