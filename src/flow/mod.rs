//! Pull and push engines: capture -> map -> apply, per site.
//!
//! A [`Hub`] holds the master connection pool, the state store and the
//! fleet limits. [`Hub::sync_flow`] runs one pass of a flow over a set of
//! sites: each site in its own future, at most `max_concurrent_sites` at
//! once, each run in the phases of `site_run.rs` (admit, start, work,
//! finish) over one site connection, kept for the next run only after a
//! success. A site that fails fails only its own run; its error is recorded
//! in the run history and returned in its [`SiteReport`].
//!
//! Per stream and site the loop is: read the next keyset page after the
//! checkpoint (cursor, primary key...), map it to target rows, then
//! - pull: upsert into the master and save the checkpoint in ONE master
//!   transaction (at most `master_write_concurrency` such writes at once);
//! - push: upsert into the site and commit, then save the checkpoint on the
//!   master. A crash between the two re-applies the batch next time, which
//!   changes nothing because upserts skip unchanged rows.

mod apply;
pub mod check;
pub mod circuit;
mod connections;
mod context;
pub mod error;
pub mod events;
mod leased;
mod leg;
pub mod limits;
mod plan;
mod read;
mod reconcile;
mod route;
mod shared;

mod site_run;
mod source;
mod stream;
mod target;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use self::error::RunError;
use crate::config::{Config, Flow, Site};
use crate::connector::{ConnectOptions, Connector, ConnectorError, ErrorKind};
use crate::state::{RunStatus, StateError, StateStore};

pub use self::context::RunCounters;
pub use self::plan::{StreamPlan, fingerprint, plan_streams};
pub use self::shared::PushReads;

/// Errors that stop a whole command (not one site).
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// The master could not be reached.
    #[error("master: {cause}")]
    Master {
        /// Redacted URL.
        url: String,
        /// Cause (kept out of `source()` so `{:#}` prints it once).
        cause: ConnectorError,
    },
    /// The state tables could not be created or read.
    #[error("{0}")]
    State(StateError),
}

/// Options of one pass.
#[derive(Clone, Copy, Debug, Default)]
pub struct SyncOptions {
    /// Read and count, write nothing (no rows, no checkpoints, no history).
    pub dry_run: bool,
    /// Work sites outside the flow's `window` too (an operator's manual sync).
    pub ignore_window: bool,
    /// Work pairs whose circuit is open too (an operator who fixed the cause
    /// and does not want to wait for the cool-down). A success closes the
    /// circuit, as always.
    pub ignore_circuit: bool,
    /// Start each site at its splay offset (`Flow::splay`; scheduled passes).
    pub splay: bool,
}

/// Receives progress events from running flows (progress bars, logs).
/// Implementations must be cheap: they are called once per batch.
pub trait Progress: Send + Sync {
    /// A site's run begins.
    fn site_started(&self, flow: &str, site: &str);
    /// A batch of `read` source rows was applied, `written` of them changed
    /// the target.
    fn batch_applied(&self, flow: &str, site: &str, stream: &str, read: u64, written: u64);
    /// A site's run ended.
    fn site_finished(&self, report: &SiteReport);
    /// The run history recorded the start of run `run_id` (the HTTP API
    /// answers a sync request with these ids). Default: nothing.
    fn run_started(&self, _flow: &str, _site: &str, _run_id: &str) {}
    /// The pair was not started because run `run_id` of it is alive, in
    /// this or another hub process. Default: nothing.
    fn already_running(&self, _flow: &str, _site: &str, _run_id: &str) {}
}

/// A [`Progress`] that ignores everything.
pub struct NoProgress;

impl Progress for NoProgress {
    fn site_started(&self, _: &str, _: &str) {}
    fn batch_applied(&self, _: &str, _: &str, _: &str, _: u64, _: u64) {}
    fn site_finished(&self, _: &SiteReport) {}
}

/// What one stream did at one site.
#[derive(Clone, Debug, Default)]
pub struct StreamReport {
    /// Stream name.
    pub stream: String,
    /// Rows read from the source.
    pub rows_read: u64,
    /// Rows inserted or changed at the target.
    pub rows_written: u64,
    /// Remarks for the run history (a backfill and why, NULL cursors...).
    pub note: Option<String>,
    /// Rows the target refused that went to quarantine.
    pub quarantined: u64,
    /// Target rows deleted: soft-deleted source rows (`delete_column`) and
    /// rows found gone at the source (`deletes = "detect"`).
    pub rows_deleted: u64,
    /// Why delete detection failed, after the rows were applied (the run
    /// ends `partial`).
    pub delete_detection_error: Option<String>,
    /// Rows inserted, changed or deleted in the stream's `[[system]]`
    /// routes, over all routes (a row routed to two systems counts twice).
    pub rows_routed: u64,
}

/// What one flow did at one site.
#[derive(Clone, Debug)]
pub struct SiteReport {
    /// Flow name.
    pub flow: String,
    /// Site id.
    pub site: String,
    /// Run id in the history (`None` for a dry run).
    pub run_id: Option<String>,
    /// Outcome.
    pub status: RunStatus,
    /// Per stream, in flow order (streams after a failure are absent).
    pub streams: Vec<StreamReport>,
    /// The error of a failed or skipped run; it starts with its place
    /// (`flow `f` [stream `s`] site `x`: `) and names the column where known.
    pub error: Option<String>,
    /// The kind of a failed run's error (run history `error_kind`): what
    /// the circuit breaker and retries go by, never the message text.
    pub error_kind: Option<ErrorKind>,
    /// Wall time of the run.
    pub duration: Duration,
    /// Why a run was skipped on purpose (outside the flow's window); such a
    /// run is not a failure.
    pub note: Option<String>,
}

impl SiteReport {
    /// Rows read over all streams.
    pub fn rows_read(&self) -> u64 {
        self.streams.iter().map(|s| s.rows_read).sum()
    }

    /// Rows written over all streams.
    pub fn rows_written(&self) -> u64 {
        self.streams.iter().map(|s| s.rows_written).sum()
    }

    /// Rows inserted, changed or deleted in `[[system]]` routes over all
    /// streams (a row routed to two systems counts twice).
    pub fn rows_routed(&self) -> u64 {
        self.streams.iter().map(|s| s.rows_routed).sum()
    }

    /// Target rows deleted over all streams.
    pub fn rows_deleted(&self) -> u64 {
        self.streams.iter().map(|s| s.rows_deleted).sum()
    }
}

/// The fixed start offset of `site` in a scheduled pass of `flow`, in
/// `[0, splay)`: the first 8 bytes of SHA-256(flow, NUL, site) as a fraction
/// of `splay`. Stable across runs and hubs, so each site keeps its phase and
/// a fleet is spread evenly.
pub fn splay_offset(flow: &str, site: &str, splay: Duration) -> Duration {
    use sha2::{Digest, Sha256};
    let hash = Sha256::new()
        .chain_update(flow.as_bytes())
        .chain_update([0])
        .chain_update(site.as_bytes())
        .finalize();
    let fraction =
        u64::from_be_bytes(hash[..8].try_into().expect("8 bytes")) as f64 / (u64::MAX as f64 + 1.0);
    splay.mul_f64(fraction)
}

/// How often a running run writes its heartbeat: [`crate::state::HEARTBEAT_INTERVAL`],
/// or `HUBSYNC_HEARTBEAT_INTERVAL_MS` milliseconds when that variable is set
/// (a testing knob: tests tick every few milliseconds to make rare
/// interleavings of heartbeats and batch transactions certain).
fn heartbeat_interval() -> Duration {
    std::env::var("HUBSYNC_HEARTBEAT_INTERVAL_MS")
        .ok()
        .and_then(|ms| ms.parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map_or(crate::state::HEARTBEAT_INTERVAL, Duration::from_millis)
}

/// The central hub: master pool, state store and fleet limits.
pub struct Hub {
    config: Arc<Config>,
    master: Connector,
    /// The master pool pushes read through (one connection per site slot;
    /// `None` without push flows): see [`Hub::master_for`].
    master_reads: Option<Connector>,
    state: StateStore,
    site_slots: Semaphore,
    site_connections: Arc<connections::SiteConnections>,
    master_writes: limits::MasterWrites,
    cancel: CancellationToken,
    /// Runs of this process whose end the master did not record (it was
    /// unreachable): not alive, whatever their last heartbeat says.
    dead_runs: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The `[[system]]` pools, opened at first use, in config order.
    systems: Vec<tokio::sync::OnceCell<Connector>>,
    /// The sites of the last inventory read (`Hub::refresh_inventory`);
    /// the config's static sites until then.
    sites: std::sync::RwLock<Arc<Vec<Site>>>,
    /// Push cursor reads sent to the master and shared (`shared.rs`).
    push_reads: PushReads,
}

impl Hub {
    /// Connects to the master and creates or migrates the state tables.
    ///
    /// Errors: [`FlowError::Master`] if the master is unreachable,
    /// [`FlowError::State`] if the state tables cannot be created.
    pub async fn open(config: Arc<Config>, cancel: CancellationToken) -> Result<Hub, FlowError> {
        Hub::open_with(config, cancel, true).await
    }

    /// Like [`Hub::open`], but a SQLite master file that does not exist is
    /// an error rather than created: for commands that only read or reset
    /// state (`status`, `reset`), where a typo in the path must not pass
    /// silently as "never ran".
    pub async fn open_existing(config: Arc<Config>) -> Result<Hub, FlowError> {
        Hub::open_with(config, CancellationToken::new(), false).await
    }

    async fn open_with(
        config: Arc<Config>,
        cancel: CancellationToken,
        create: bool,
    ) -> Result<Hub, FlowError> {
        // Writes are limited by a semaphore; 4 more connections serve state
        // rows. A push holds one master connection per site it works (its
        // streamed read) while each batch's checkpoint needs another: with
        // the reads in the same pool, every connection could be a read
        // waiting for a checkpoint connection (a deadlock, found by the
        // bench pushing 2 batches to 10 sites). So pushes read the master
        // through a pool of their own, one connection per site slot, and
        // the main pool stays small (a pool as large as the site slots made
        // a first pull cycle log in once per site at the master: the cold
        // no-op cycle of 100 sites took 1.48 s instead of about 0.8 s).
        let pushes = config
            .flows
            .iter()
            .any(|flow| flow.direction == crate::config::Direction::Push);
        let options = ConnectOptions {
            max_connections: (config.hub.master_write_concurrency + 4) as u32,
            connect_timeout: config.hub.connect_timeout,
            acquire_timeout: Duration::from_secs(600),
            statement_timeout: config.hub.statement_timeout,
            create_if_missing: create,
        };
        let master_error = |cause| FlowError::Master {
            url: config.master.redacted(),
            cause,
        };
        let master = Connector::connect(&config.master, &options)
            .await
            .map_err(master_error)?;
        let master_reads = if pushes {
            let read_options = ConnectOptions {
                max_connections: config.hub.max_concurrent_sites as u32,
                ..options.clone()
            };
            let reads = Connector::connect(&config.master, &read_options).await;
            Some(reads.map_err(master_error)?)
        } else {
            None
        };
        let state = StateStore::open(&master).await.map_err(FlowError::State)?;
        let site_connections = Arc::new(connections::SiteConnections::new(
            config.hub.max_concurrent_sites,
            config.hub.site_idle_timeout,
        ));
        connections::SiteConnections::reap(&site_connections, cancel.clone());
        let mut master_writes = limits::MasterWrites::new(
            config.hub.master_write_concurrency,
            config.hub.max_rows_per_second,
        );
        if config.hub.leases && master.dialect() == crate::dialect::Dialect::Postgres {
            let fleet = fleet_limits(&config, &state, &options).await?;
            master_writes = master_writes.with_fleet(fleet);
        }
        Ok(Hub {
            master_reads,
            systems: config
                .systems
                .iter()
                .map(|_| tokio::sync::OnceCell::new())
                .collect(),
            sites: std::sync::RwLock::new(Arc::new(config.sites.clone())),
            push_reads: PushReads::default(),
            site_slots: Semaphore::new(config.hub.max_concurrent_sites),
            site_connections,
            master_writes,
            config,
            master,
            state,
            cancel,
            dead_runs: std::sync::Mutex::default(),
        })
    }

    /// When the circuit of (`flow`, `site`) closes again and how many runs
    /// failed in a row, if it is open now (see [`circuit`]). A failure to
    /// read the history keeps it closed.
    ///
    /// `suspects`: the sites of the flow with a failure recent enough to
    /// hold a circuit open (see [`Hub::circuit_suspects`]); others are
    /// closed without a query. `None`: ask the history for this site.
    async fn circuit_open_until(
        &self,
        flow: &Flow,
        site: &Site,
        suspects: Option<&std::collections::HashSet<String>>,
    ) -> Option<(chrono::DateTime<chrono::Utc>, u32)> {
        let hub = &self.config.hub;
        if hub.circuit_breaker_failures == 0 {
            return None;
        }
        if suspects.is_some_and(|suspects| !suspects.contains(&site.id)) {
            return None;
        }
        let streaks = self
            .state
            .failure_streaks(&self.master, Some((&flow.name, &site.id)))
            .await
            .ok()?;
        let (streak, last) = streaks.get(&(flow.name.clone(), site.id.clone()))?;
        circuit::open_until(
            *streak,
            *last,
            hub.circuit_breaker_failures,
            hub.circuit_breaker_cooldown,
            chrono::Utc::now(),
        )
        .map(|until| (until, *streak))
    }

    /// Closes the site connections kept between runs, then the master pool
    /// (each waits at most 2 s). Call once, when the hub is done.
    pub async fn close(&self) {
        self.site_connections.close_idle().await;
        for system in &self.systems {
            if let Some(connector) = system.get() {
                connector.close().await;
            }
        }
        self.master_writes.close().await;
        if let Some(reads) = &self.master_reads {
            reads.close().await;
        }
        self.master.close().await;
    }

    /// The pool of `[[system]]` `name`, connected at first use (at most
    /// `hub.master_write_concurrency` connections; routes write one batch
    /// per site at a time).
    ///
    /// Errors: the system is unknown (a config that changed under a
    /// running hub cannot happen; still an error, not a panic), or it cannot
    /// be reached: the message names the system and its redacted URL.
    pub async fn system(&self, name: &str) -> Result<&Connector, RunError> {
        let Some(index) = self.config.systems.iter().position(|s| s.name == name) else {
            return Err(RunError::from(format!("no `[[system]]` named `{name}`")));
        };
        let system = &self.config.systems[index];
        let options = ConnectOptions {
            max_connections: self.config.hub.master_write_concurrency as u32,
            connect_timeout: self.config.hub.connect_timeout,
            acquire_timeout: Duration::from_secs(600),
            statement_timeout: self.config.hub.statement_timeout,
            create_if_missing: false,
        };
        self.systems[index]
            .get_or_try_init(|| Connector::connect(&system.url, &options))
            .await
            .map_err(|e| {
                RunError::connector(
                    format_args!("system `{name}` ({})", system.url.redacted()),
                    &e,
                )
            })
    }

    /// Push cursor reads since the hub opened: (sent to the master,
    /// answered by another site's read of the same pass). Sites whose read
    /// is the same statement with the same parameters share one read (see
    /// `flow/shared.rs`): a pass over N sites with K distinct parameter sets
    /// sends K reads per stream once every site has a checkpoint.
    pub fn push_reads(&self) -> (u64, u64) {
        self.push_reads.get()
    }

    /// The sites of the last inventory read: the static `[[site]]`s, then
    /// those of `[inventory]` (see [`crate::inventory`]).
    pub fn sites(&self) -> Arc<Vec<Site>> {
        self.sites
            .read()
            .expect("sites lock is never poisoned")
            .clone()
    }

    /// Reads the inventory again (with `[inventory]`, a query on the
    /// master) and makes it the hub's site list; returns the read, whose
    /// warnings name the rows left out. On an error the previous list
    /// stays.
    pub async fn refresh_inventory(
        &self,
    ) -> Result<crate::inventory::InventoryRead, crate::inventory::InventoryError> {
        let read = crate::inventory::read_sites(&self.config, &self.master).await?;
        *self.sites.write().expect("sites lock is never poisoned") = Arc::new(read.sites.clone());
        Ok(read)
    }

    /// Site connections kept open between runs now (at most
    /// `hub.max_concurrent_sites`; see `hub.site_idle_timeout`).
    pub fn idle_site_connections(&self) -> usize {
        self.site_connections.idle_count()
    }

    /// Sites of `flow` that failed within the longest circuit cool-down:
    /// the only ones whose circuit may be open. `None` when the breaker is
    /// off or the history cannot be read (each site then asks for itself).
    async fn circuit_suspects(&self, flow: &Flow) -> Option<std::collections::HashSet<String>> {
        if self.config.hub.circuit_breaker_failures == 0 {
            return None;
        }
        let window = chrono::Duration::from_std(circuit::MAX_COOLDOWN).ok()?;
        self.state
            .sites_failed_since(&self.master, &flow.name, chrono::Utc::now() - window)
            .await
            .ok()
    }

    /// The master connector.
    pub fn master(&self) -> &Connector {
        &self.master
    }

    /// The master connector a stream of `direction` reads or writes the
    /// master through: pulls write through the main pool ([`Hub::master`]);
    /// pushes read through a pool of their own, so that a push's streamed
    /// read never holds a connection its checkpoint waits for.
    pub fn master_for(&self, direction: crate::config::Direction) -> &Connector {
        match (direction, &self.master_reads) {
            (crate::config::Direction::Push, Some(reads)) => reads,
            _ => &self.master,
        }
    }

    /// The state store.
    pub fn state(&self) -> &StateStore {
        &self.state
    }

    /// The config the hub runs.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Most master write transactions that were in flight at once since the
    /// hub opened (never above `hub.master_write_concurrency`).
    pub fn master_write_high_water(&self) -> usize {
        self.master_writes.high_water()
    }

    /// Runs one pass of `flow` over `sites`, concurrently within the fleet
    /// limits; returns one report per site, in `sites` order. Never fails
    /// as a whole: per-site failures are in the reports.
    pub async fn sync_flow(
        &self,
        flow: &Flow,
        sites: &[&Site],
        options: SyncOptions,
        progress: &dyn Progress,
    ) -> Vec<SiteReport> {
        let plans: Vec<Result<StreamPlan, RunError>> = plan_streams(self, flow).await;
        let suspects = self.circuit_suspects(flow).await;
        // Concurrency is bounded by `site_slots` inside `run_site`; join_all
        // keeps report order equal to `sites` order. (A loop rather than a
        // closure keeps the future `Send` for `tokio::spawn`.)
        let mut runs = Vec::with_capacity(sites.len());
        for site in sites {
            runs.push(self.run_site(flow, site, &plans, suspects.as_ref(), options, progress));
        }
        futures::future::join_all(runs).await
    }

    /// One site's run in a pass: its splay offset (scheduled passes), a
    /// site slot, then the phases of [`site_run::SiteRun`].
    async fn run_site(
        &self,
        flow: &Flow,
        site: &Site,
        plans: &[Result<StreamPlan, RunError>],
        suspects: Option<&std::collections::HashSet<String>>,
        options: SyncOptions,
        progress: &dyn Progress,
    ) -> SiteReport {
        if options.splay
            && let Some(splay) = flow.splay
        {
            let offset = splay_offset(&flow.name, &site.id, splay);
            tokio::select! {
                _ = self.cancel.cancelled() => {}
                _ = tokio::time::sleep(offset) => {}
            }
        }
        let _slot = self
            .site_slots
            .acquire()
            .await
            .expect("site semaphore is never closed");
        // Boxed: a pass creates one `run_site` future per site up front, and
        // the run's future is large (tens of KiB); unboxed, a fleet of 1,000
        // sites would hold about 100 MiB before the first site starts.
        let run = site_run::SiteRun {
            hub: self,
            flow,
            site,
            plans,
            options,
            progress,
            lease: None,
        };
        Box::pin(run.run(suspects)).await
    }
}

/// The master write limits shared by the replicas (`hub.leases` on a
/// PostgreSQL master): a pool of 2 connections of their own, the slot rows
/// and bucket seeded.
async fn fleet_limits(
    config: &Config,
    state: &StateStore,
    options: &ConnectOptions,
) -> Result<limits::FleetLimits, FlowError> {
    let options = ConnectOptions {
        max_connections: 2,
        ..options.clone()
    };
    let master = Connector::connect(&config.master, &options)
        .await
        .map_err(|cause| FlowError::Master {
            url: config.master.redacted(),
            cause,
        })?;
    (state.seed_fleet_limits(&master, config.hub.master_write_concurrency))
        .await
        .map_err(FlowError::State)?;
    Ok(limits::FleetLimits {
        master: Arc::new(master),
        state: state.clone(),
        replica: (config.hub.replica_id.clone()).unwrap_or_else(crate::state::default_replica_id),
        slots: config.hub.master_write_concurrency,
        hold: config.hub.lease_period,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pass creates one `run_site` future per site before any runs, so
    /// its size is held once per site of the fleet: it must stay small
    /// (the run itself is boxed when the site gets its slot). Unboxed it was
    /// about 95 KiB, 95 MiB for a fleet of 1,000 SQLite stores.
    #[tokio::test]
    async fn a_waiting_site_run_holds_well_under_a_kibibyte() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[master]\nurl = \"sqlite://master.db\"\n\
                    [[site]]\nid = \"s1\"\nurl = \"sqlite://s1.db\"\n\
                    [[flow]]\nname = \"f\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"t\"\n  \
                    target = \"t\"\n  primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"site\"\n";
        let config =
            Config::parse(text, &dir.path().join("h.toml"), dir.path(), &|_| None).unwrap();
        let hub = Hub::open(Arc::new(config), CancellationToken::new())
            .await
            .unwrap();
        let flow = hub.config().flow("f").unwrap().clone();
        let site = hub.config().sites[0].clone();
        let waiting = hub.run_site(&flow, &site, &[], None, SyncOptions::default(), &NoProgress);
        assert!(
            std::mem::size_of_val(&waiting) < 1024,
            "{} bytes",
            std::mem::size_of_val(&waiting)
        );
        drop(waiting);
        hub.close().await;
    }
}
