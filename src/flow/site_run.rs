//! One site run of a flow, in four phases:
//!
//! 1. **admit**: not when a stop was requested, outside the flow's `window`
//!    (in the site's zone), or while the pair's circuit is open;
//! 2. **start**: the run history's `running` row (`StateStore::start_run`;
//!    none for a dry run): a live run of the pair skips this one;
//! 3. **work**: ONE site connection (kept from an earlier run, or a login
//!    retried with backoff), the flow's streams in order, a heartbeat polled
//!    beside them, a panic caught as this run's failure;
//! 4. **finish**: the status from the outcome (failed, partial, succeeded),
//!    `finish_run`, telemetry and progress.
//!
//! The decisions are pure functions ([`Refusal`], [`Ending`], [`run_note`])
//! tested without a server; the phases around them do the I/O. Whatever
//! happens, the run ends in a [`SiteReport`]: one site never fails the fleet.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use backon::Retryable as _;
use chrono::{DateTime, Utc};
use futures::FutureExt as _;
use tokio_util::sync::CancellationToken;

use super::{
    Hub, Progress, RunCounters, RunError, SiteReport, StreamPlan, StreamReport, SyncOptions,
    heartbeat_interval,
};
use crate::config::{Flow, Site, SyncWindow};
use crate::connector::{ConnectOptions, Connector, ConnectorError, ErrorKind};
use crate::state::{INTERRUPTED, Lease, RunEnd, RunStatus, StateError};

/// The fixed facts of one site run of a flow, shared by its phases.
#[derive(Clone, Copy)]
pub(super) struct SiteRun<'a> {
    pub(super) hub: &'a Hub,
    pub(super) flow: &'a Flow,
    pub(super) site: &'a Site,
    /// Per stream of the flow, its plan for this pass or why it has none.
    pub(super) plans: &'a [Result<StreamPlan, RunError>],
    pub(super) options: SyncOptions,
    pub(super) progress: &'a dyn Progress,
    /// The lease of a leased run (`hub.leases`); `None`: a hub alone.
    pub(super) lease: Option<&'a Lease>,
}

impl SiteRun<'_> {
    /// Runs the phases in order (the site holds its slot): its report, also
    /// given to `progress.site_finished`.
    pub(super) async fn run(self, suspects: Option<&HashSet<String>>) -> SiteReport {
        let started = Instant::now();
        let mut report = SiteReport {
            flow: self.flow.name.clone(),
            site: self.site.id.clone(),
            run_id: None,
            status: RunStatus::Succeeded,
            streams: Vec::new(),
            error: None,
            error_kind: None,
            duration: Duration::ZERO,
            note: None,
        };
        if let Some(refusal) = self.admit(suspects).await {
            refusal.mark(&mut report);
            self.progress.site_finished(&report);
            return report;
        }
        match self.start().await {
            Ok(run_id) => report.run_id = run_id,
            Err(error) => {
                Refusal::not_started(&self.place(), &error).mark(&mut report);
                report.duration = started.elapsed();
                self.progress.site_finished(&report);
                return report;
            }
        }
        let outcome = self.work(&mut report).await;
        self.finish(report, outcome, started).await
    }

    /// "flow `f` site `x`", the place of the run's own errors.
    fn place(&self) -> String {
        format!("flow `{}` site `{}`", self.flow.name, self.site.id)
    }

    /// Phase 1: why the run is not started, or `None` to go on. A run
    /// refused for a stop or the window never starts (no `site_started`);
    /// one refused by its circuit does, after the history was asked.
    async fn admit(&self, suspects: Option<&HashSet<String>>) -> Option<Refusal> {
        let zone = (self.site.timezone)
            .or(self.flow.timezone)
            .unwrap_or(chrono_tz::Tz::UTC);
        let window = match (&self.flow.window, self.options.ignore_window) {
            (Some(window), false) => Some((window, zone)),
            _ => None,
        };
        if let Some(refusal) =
            Refusal::before_start(self.hub.cancel.is_cancelled(), window, Utc::now())
        {
            return Some(refusal);
        }
        self.progress.site_started(&self.flow.name, &self.site.id);
        if self.options.ignore_circuit {
            return None;
        }
        let (until, streak) = (self.hub)
            .circuit_open_until(self.flow, self.site, suspects)
            .await?;
        Some(Refusal::circuit_open(
            (&self.flow.name, &self.site.id),
            until,
            streak,
        ))
    }

    /// Phase 2: the run's `running` row in the history and its id (`None`
    /// for a dry run). Errors: [`StateError::AlreadyRunning`] when the pair
    /// is alive elsewhere (told to `progress`), or the master's failure.
    async fn start(&self) -> Result<Option<String>, StateError> {
        if self.options.dry_run {
            return Ok(None);
        }
        if let Some(lease) = self.lease {
            let started = (self.hub.state)
                .start_leased_run(&self.hub.master, lease)
                .await;
            if let Ok(run_id) = &started {
                (self.progress).run_started(&self.flow.name, &self.site.id, run_id);
            }
            return started.map(Some);
        }
        // Cloned out first: the lock must not be held across the await.
        let dead_runs = self.hub.dead_runs.lock().expect("dead runs lock").clone();
        let started = (self.hub.state)
            .start_run(&self.hub.master, &self.flow.name, &self.site.id, &dead_runs)
            .await;
        match &started {
            Ok(run_id) => (self.progress).run_started(&self.flow.name, &self.site.id, run_id),
            Err(StateError::AlreadyRunning { run_id, .. }) => {
                (self.progress).already_running(&self.flow.name, &self.site.id, run_id)
            }
            Err(_) => {}
        }
        started.map(Some)
    }

    /// Phase 3: the streams, with a panic caught as this run's failure and
    /// the heartbeat polled beside them; the streams' reports go to
    /// `report.streams`.
    async fn work(&self, report: &mut SiteReport) -> Result<(), RunError> {
        let counters = RunCounters::default();
        let run_id = report.run_id.clone();
        // Stops the streams at their next batch when the lease is lost
        // (and with the hub's own stop).
        let stop = self.hub.cancel.child_token();
        // A panic (a bug, or a driver failing on an unexpected value) must
        // fail this site's run only, never the process and the fleet.
        let work = std::panic::AssertUnwindSafe(self.run_streams(&counters, report, &stop))
            .catch_unwind()
            .map(|caught| {
                caught.unwrap_or_else(|panic| {
                    Err(RunError::from(format!(
                        "{}: internal error (please report it): {}",
                        self.place(),
                        panic_message(panic.as_ref())
                    )))
                })
            });
        // The heartbeat is a future of its own, polled beside the work:
        // its UPDATE of the run's row waits while a batch transaction of
        // this same run holds that row (`record_progress`), and that
        // transaction can only commit if the work keeps being polled.
        // (Awaited inside a `select!` arm, it stopped the work: the run
        // hung on itself, found by the 10M-row bench.)
        let heartbeats = self.heartbeats(run_id.as_deref(), &counters);
        tokio::pin!(work);
        tokio::pin!(heartbeats);
        tokio::select! {
            outcome = &mut work => outcome,
            // Only a leased run's heartbeat ends: its lease is lost. The
            // work is asked to stop at its next batch and given a lease
            // period to get there, then dropped (an open transaction rolls
            // back): dropped mid-statement at once, a `COPY` into the
            // master left its pooled connection unusable for the next run
            // (`leases` test). The lease's fencing token keeps the work
            // from writing its batch and checkpoint to the master meanwhile.
            lost = &mut heartbeats => {
                stop.cancel();
                let _ = tokio::time::timeout(self.hub.config.hub.lease_period, &mut work).await;
                Err(lost)
            }
        }
    }

    /// Writes the run's heartbeat and its row counts so far every
    /// [`heartbeat_interval`] (nothing for a dry run), and for a leased run
    /// renews its lease every `hub.heartbeat_seconds`; it ends only when
    /// the lease is lost (taken over, or not renewed for a whole lease
    /// period), with that error, so it is otherwise dropped with the work.
    async fn heartbeats(&self, run_id: Option<&str>, counters: &RunCounters) -> RunError {
        let hub_config = &self.hub.config.hub;
        let every = match self.lease {
            Some(_) => hub_config.lease_heartbeat,
            None => heartbeat_interval(),
        };
        let mut heartbeat = tokio::time::interval(every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await; // the first tick is immediate; start_run wrote one
        let mut renewed = Instant::now();
        loop {
            heartbeat.tick().await;
            if let Some(lease) = self.lease {
                let asked = Instant::now();
                match (self.hub.state)
                    .renew_lease(&self.hub.master, lease, hub_config.lease_period)
                    .await
                {
                    Ok(()) => renewed = asked,
                    Err(lost @ StateError::LeaseLost { .. }) => return RunError::from(lost),
                    // Unrenewed for a whole period: another replica may hold it now.
                    Err(e) if renewed.elapsed() >= hub_config.lease_period => {
                        return RunError::interrupted(format!(
                            "{INTERRUPTED}lease lost: it could not be renewed for {:.1} s ({e}); stopped",
                            renewed.elapsed().as_secs_f64()
                        ));
                    }
                    Err(e) => {
                        tracing::warn!(flow = %self.flow.name, site = %self.site.id, "cannot renew the lease: {e}")
                    }
                }
            }
            let Some(run_id) = run_id else {
                continue;
            };
            let (read, written) = counters.get();
            if let Err(e) = (self.hub.state)
                .heartbeat(&self.hub.master, run_id, read, written)
                .await
            {
                tracing::warn!(flow = %self.flow.name, site = %self.site.id, "cannot record a heartbeat: {e}");
            }
        }
    }

    /// The flow's streams in order over ONE site connection (a failing
    /// stream ends the run); the connection is kept for the next run only
    /// when every stream succeeded.
    async fn run_streams(
        &self,
        counters: &RunCounters,
        report: &mut SiteReport,
        stop: &CancellationToken,
    ) -> Result<(), RunError> {
        let site_conn = self.site_connection().await?;
        let result = self.each_stream(&site_conn, counters, report, stop).await;
        // A connection that served a whole run is kept for the next one; after
        // a failure it may be broken or stuck in a timed-out statement.
        if result.is_ok() {
            (self.hub.site_connections)
                .give_back(&self.site.id, site_conn)
                .await;
        } else {
            self.hub.site_connections.close(site_conn).await;
        }
        result
    }

    /// Runs each stream (its report pushed to `report.streams`) until one
    /// fails or `stop` is cancelled (the hub stops, or the run's lease is
    /// lost); errors name the stream's place.
    async fn each_stream(
        &self,
        site_conn: &Connector,
        counters: &RunCounters,
        report: &mut SiteReport,
        stop: &CancellationToken,
    ) -> Result<(), RunError> {
        let run_id = report.run_id.clone();
        for (stream, plan) in self.flow.streams.iter().zip(self.plans) {
            if stop.is_cancelled() {
                return Err(RunError::interrupted(format!(
                    "{INTERRUPTED}stopped after the last committed batch; the next run resumes there"
                )));
            }
            let place = format!(
                "flow `{}` stream `{}` site `{}`",
                self.flow.name, stream.name, self.site.id
            );
            let plan = plan.as_ref().map_err(|e| e.clone().at(&place))?;
            let mut stream_report = StreamReport {
                stream: stream.name.clone(),
                ..StreamReport::default()
            };
            let run = super::context::StreamRun {
                hub: self.hub,
                flow: self.flow,
                stream,
                plan,
                site: self.site,
                site_conn,
                options: self.options,
                progress: self.progress,
                cancel: stop,
                counters,
                run_id: run_id.as_deref(),
                lease: self.lease,
            };
            let outcome = run.run(&mut stream_report).await;
            report.streams.push(stream_report);
            outcome.map_err(|e| e.at(&place))?;
        }
        Ok(())
    }

    /// The site's connection kept from an earlier run if it still answers,
    /// else a new login (after closing idle connections to make room).
    async fn site_connection(&self) -> Result<Connector, RunError> {
        let hub = self.hub;
        match hub.site_connections.take(&self.site.id).await {
            Some(kept) if kept.idle_alive(hub.config.hub.connect_timeout).await => Ok(kept),
            kept => {
                // Not kept, or it died while idle (the site restarted): log in.
                if let Some(dead) = kept {
                    hub.site_connections.close(dead).await;
                }
                let busy = hub.config.hub.max_concurrent_sites - hub.site_slots.available_permits();
                hub.site_connections.make_room(busy).await;
                self.log_in().await
            }
        }
    }

    /// Logs in to the site. Transient failures are retried with exponential
    /// backoff and jitter (a site on a shop-floor network drops out for
    /// seconds at a time), unless a stop was requested.
    async fn log_in(&self) -> Result<Connector, RunError> {
        let hub_config = &self.hub.config.hub;
        let site_options = ConnectOptions {
            max_connections: 1,
            connect_timeout: hub_config.connect_timeout,
            acquire_timeout: hub_config.connect_timeout,
            statement_timeout: self.site.statement_timeout(hub_config),
            create_if_missing: false,
        };
        let backoff = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_secs(1))
            .with_max_delay(Duration::from_secs(30))
            .with_max_times(hub_config.connect_retries)
            .with_jitter();
        let retries = AtomicU32::new(0);
        let connected = (|| Connector::connect(&self.site.url, &site_options))
            .retry(backoff)
            .when(|e: &ConnectorError| e.is_transient() && !self.hub.cancel.is_cancelled())
            .notify(|e: &ConnectorError, wait: Duration| {
                retries.fetch_add(1, Ordering::Relaxed);
                tracing::info!(flow = %self.flow.name, site = %self.site.id, "retrying in {:.1} s: {e}", wait.as_secs_f64());
            })
            .await;
        let connection = connected.map_err(|e| {
            let attempts = 1 + retries.load(Ordering::Relaxed);
            after_attempts(RunError::connector(self.place(), &e), attempts)
        })?;
        crate::telemetry::site_connection_opened();
        Ok(connection)
    }

    /// Phase 4: the status from the outcome, the end in the run history,
    /// the metrics and the progress line.
    async fn finish(
        &self,
        mut report: SiteReport,
        outcome: Result<(), RunError>,
        started: Instant,
    ) -> SiteReport {
        let quarantine_table = self.hub.state.table_name("quarantine");
        let ending = Ending::of(
            outcome,
            &report.streams,
            &self.flow.name,
            &self.site.id,
            &quarantine_table,
        );
        report.status = ending.status;
        report.error = ending.error;
        report.error_kind = ending.error_kind;
        report.duration = started.elapsed();
        if let Some(run_id) = report.run_id.clone() {
            self.record_end(&run_id, &mut report).await;
        }
        crate::telemetry::run_finished(&crate::telemetry::RunFinished {
            flow: &report.flow,
            site: &report.site,
            status: report.status.as_str(),
            rows_read: report.rows_read(),
            rows_written: report.rows_written(),
            duration: report.duration,
            error: report.error.as_deref(),
        });
        self.progress.site_finished(&report);
        report
    }

    /// Records the run's end in the history. If the master does not take
    /// it, the run joins the hub's dead runs: its fresh heartbeat must not
    /// keep the pair busy for this process. A leased run's end is also its
    /// lease's release, refused when the lease was lost: the report then
    /// says so and nothing is recorded.
    async fn record_end(&self, run_id: &str, report: &mut SiteReport) {
        let note = run_note(&report.streams);
        let end = RunEnd {
            status: report.status,
            rows_read: report.rows_read(),
            rows_written: report.rows_written(),
            error: report.error.as_deref(),
            error_kind: report.error_kind,
            note: note.as_deref(),
        };
        // The run's follow-up events commit with its end (the outbox), and
        // a leased run's end with its lease's release (the fence).
        let events = super::events::run_ended(&self.hub.config, self.flow, report);
        let recorded = match self.lease {
            Some(lease) => {
                let next_due = super::leased::next_due(self.flow, report.error_kind, Utc::now());
                (self.hub.state)
                    .finish_leased_run(&self.hub.master, lease, run_id, &end, next_due, &events)
                    .await
            }
            None => {
                (self.hub.state)
                    .finish_run_with_events(&self.hub.master, run_id, &end, &events)
                    .await
            }
        };
        match recorded {
            Ok(()) => {}
            Err(lost @ StateError::LeaseLost { .. }) => {
                tracing::warn!(flow = %self.flow.name, site = %self.site.id, "run {run_id}: {lost}");
                if report.error_kind != Some(ErrorKind::Interrupted) {
                    report.status = RunStatus::Failed;
                    report.error = Some(format!("{}: {lost}", self.place()));
                    report.error_kind = Some(ErrorKind::Interrupted);
                }
            }
            Err(e) => {
                tracing::error!(flow = %self.flow.name, site = %self.site.id, "cannot record the end of run {run_id}: {e}");
                (self.hub.dead_runs.lock().expect("dead runs lock")).insert(run_id.to_string());
            }
        }
    }
}

/// Why a site run was not started: its status is `skipped` (or `failed`
/// when the history could not be written), with a note or an error.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// A stop was requested before the run began.
    Interrupted,
    /// Outside the flow's window: a note, not an error.
    OutsideWindow(String),
    /// Not started, for the error: a circuit open, a live run of the pair
    /// (both `skipped`) or a history that cannot be written (`failed`).
    Error(RunStatus, String),
}

impl Refusal {
    /// The decision before the history is asked: a stop requested, or the
    /// local time at `now` outside `window` (the flow's window in the site's
    /// zone; `None` when there is none or it is ignored).
    fn before_start(
        cancelled: bool,
        window: Option<(&SyncWindow, chrono_tz::Tz)>,
        now: DateTime<Utc>,
    ) -> Option<Refusal> {
        if cancelled {
            return Some(Refusal::Interrupted);
        }
        let (window, zone) = window?;
        let local = now.with_timezone(&zone);
        (!window.contains(local.time())).then(|| {
            Refusal::OutsideWindow(format!(
                "outside the flow's window {window} ({zone}; it is {} there); not run",
                local.format("%H:%M")
            ))
        })
    }

    /// The pair (flow, site) failed `streak` runs in a row: skipped
    /// `until`; the message says how to run it now all the same (whoever
    /// skipped it, `sync`, `run` or the API, the operator's way is `sync`).
    fn circuit_open((flow, site): (&str, &str), until: DateTime<Utc>, streak: u32) -> Refusal {
        Refusal::Error(
            RunStatus::Skipped,
            format!(
                "flow `{flow}` site `{site}`: circuit open after {streak} consecutive failed runs; skipped until {} \
                 (see `hubsync status`), or run it now with `hubsync sync --flow {flow} --site {site} --ignore-circuit`",
                until.format("%Y-%m-%d %H:%M:%S UTC")
            ),
        )
    }

    /// The history refused the run's start with `error`: skipped when the
    /// pair is alive elsewhere, else failed.
    fn not_started(place: &str, error: &StateError) -> Refusal {
        let status = match error {
            StateError::AlreadyRunning { .. } => RunStatus::Skipped,
            _ => RunStatus::Failed,
        };
        Refusal::Error(status, format!("{place}: {error}"))
    }

    /// Writes the refusal into the run's report.
    fn mark(self, report: &mut SiteReport) {
        match self {
            Refusal::Interrupted => {
                report.status = RunStatus::Skipped;
                report.error = Some("interrupted before the run started".into());
                report.error_kind = Some(ErrorKind::Interrupted);
            }
            Refusal::OutsideWindow(note) => {
                report.status = RunStatus::Skipped;
                report.note = Some(note);
            }
            Refusal::Error(status, error) => {
                report.status = status;
                report.error = Some(error);
            }
        }
    }
}

/// How a run that worked ends: its status, and the error and its kind
/// unless it succeeded.
#[derive(Debug, PartialEq, Eq)]
struct Ending {
    status: RunStatus,
    error: Option<String>,
    error_kind: Option<ErrorKind>,
}

impl Ending {
    /// From the work's `outcome` and its `streams`' reports: failed with
    /// the error; else partial when delete detection failed after the rows
    /// were applied (kind unset) or rows were quarantined (kind `data`: only
    /// data errors are quarantined, in `quarantine_table`); else succeeded.
    fn of(
        outcome: Result<(), RunError>,
        streams: &[StreamReport],
        flow: &str,
        site: &str,
        quarantine_table: &str,
    ) -> Ending {
        if let Err(error) = outcome {
            return Ending {
                status: RunStatus::Failed,
                error: Some(error.message),
                error_kind: Some(error.kind),
            };
        }
        let detection_failed = detection_errors(streams, flow, site);
        if !detection_failed.is_empty() {
            return Ending {
                status: RunStatus::Partial,
                error: Some(detection_failed.join("; ")),
                error_kind: None,
            };
        }
        let quarantined: u64 = streams.iter().map(|s| s.quarantined).sum();
        if quarantined > 0 {
            return Ending {
                status: RunStatus::Partial,
                error: Some(format!(
                    "flow `{flow}` site `{site}`: {quarantined} row(s) refused by the target were quarantined \
                     (table `{quarantine_table}`); they are retried when they change at the source"
                )),
                error_kind: Some(ErrorKind::Data),
            };
        }
        Ending {
            status: RunStatus::Succeeded,
            error: None,
            error_kind: None,
        }
    }
}

/// Each stream's delete detection failure, with its place.
fn detection_errors(streams: &[StreamReport], flow: &str, site: &str) -> Vec<String> {
    streams
        .iter()
        .filter_map(|s| {
            let error = s.delete_detection_error.as_ref()?;
            Some(format!(
                "flow `{flow}` stream `{}` site `{site}`: rows applied, but {error}",
                s.stream
            ))
        })
        .collect()
}

/// The run history's note: each stream's note after its name, or `None`.
fn run_note(streams: &[StreamReport]) -> Option<String> {
    let notes: Vec<String> = streams
        .iter()
        .filter_map(|s| Some(format!("stream `{}`: {}", s.stream, s.note.as_ref()?)))
        .collect();
    (!notes.is_empty()).then(|| notes.join("; "))
}

/// A login's `error` after `attempts` tries says how many there were.
fn after_attempts(error: RunError, attempts: u32) -> RunError {
    if attempts > 1 {
        RunError::new(
            error.kind,
            format!("{} (after {attempts} attempts)", error.message),
        )
    } else {
        error
    }
}

/// The text of a caught panic (`panic!` with a literal or a format).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(name: &str) -> StreamReport {
        StreamReport {
            stream: name.into(),
            ..StreamReport::default()
        }
    }

    fn ending(outcome: Result<(), RunError>, streams: &[StreamReport]) -> Ending {
        Ending::of(outcome, streams, "f", "s1", "hubsync.quarantine")
    }

    #[test]
    fn a_failed_run_keeps_its_error_and_kind() {
        let streams = [StreamReport {
            quarantined: 3,
            ..stream("a")
        }];
        let failed = ending(
            Err(RunError::new(
                ErrorKind::Connection,
                "flow `f` site `s1`: refused",
            )),
            &streams,
        );
        assert_eq!(
            failed,
            Ending {
                status: RunStatus::Failed,
                error: Some("flow `f` site `s1`: refused".into()),
                error_kind: Some(ErrorKind::Connection),
            }
        );
    }

    #[test]
    fn quarantined_rows_make_a_partial_run_of_kind_data() {
        let streams = [
            StreamReport {
                quarantined: 2,
                ..stream("a")
            },
            StreamReport {
                quarantined: 1,
                ..stream("b")
            },
        ];
        let partial = ending(Ok(()), &streams);
        assert_eq!(partial.status, RunStatus::Partial);
        assert_eq!(partial.error_kind, Some(ErrorKind::Data));
        assert_eq!(
            partial.error.as_deref(),
            Some(
                "flow `f` site `s1`: 3 row(s) refused by the target were quarantined (table \
                 `hubsync.quarantine`); they are retried when they change at the source"
            )
        );
    }

    #[test]
    fn a_failed_delete_detection_makes_a_partial_run_naming_each_stream() {
        let streams = [
            StreamReport {
                delete_detection_error: Some("x timed out".into()),
                quarantined: 4,
                ..stream("a")
            },
            stream("b"),
            StreamReport {
                delete_detection_error: Some("y refused".into()),
                ..stream("c")
            },
        ];
        // Detection failures come before quarantined rows, without a kind.
        assert_eq!(
            ending(Ok(()), &streams),
            Ending {
                status: RunStatus::Partial,
                error: Some(
                    "flow `f` stream `a` site `s1`: rows applied, but x timed out; \
                     flow `f` stream `c` site `s1`: rows applied, but y refused"
                        .into()
                ),
                error_kind: None,
            }
        );
    }

    #[test]
    fn a_clean_run_succeeds_and_its_note_joins_the_streams_notes() {
        let streams = [
            StreamReport {
                note: Some("backfill: the stream changed".into()),
                ..stream("a")
            },
            stream("b"),
            StreamReport {
                note: Some("2 NULL cursors".into()),
                ..stream("c")
            },
        ];
        assert_eq!(
            ending(Ok(()), &streams),
            Ending {
                status: RunStatus::Succeeded,
                error: None,
                error_kind: None,
            }
        );
        assert_eq!(
            run_note(&streams).as_deref(),
            Some("stream `a`: backfill: the stream changed; stream `c`: 2 NULL cursors")
        );
        assert_eq!(run_note(&[stream("a")]), None);
    }

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn admission_checks_the_stop_then_the_window_in_the_site_s_zone() {
        let window = SyncWindow::parse("22:00-06:00").unwrap();
        let paris = chrono_tz::Europe::Paris;
        // 21:30 UTC is 23:30 in Paris (summer time): inside.
        let night = utc("2026-07-01T21:30:00Z");
        assert_eq!(
            Refusal::before_start(false, Some((&window, paris)), night),
            None
        );
        assert_eq!(
            Refusal::before_start(true, Some((&window, paris)), night),
            Some(Refusal::Interrupted)
        );
        // 12:00 UTC is 14:00 in Paris: outside, a note.
        assert_eq!(
            Refusal::before_start(false, Some((&window, paris)), utc("2026-07-01T12:00:00Z")),
            Some(Refusal::OutsideWindow(
                "outside the flow's window 22:00-06:00 (Europe/Paris; it is 14:00 there); not run"
                    .into()
            ))
        );
        // No window (or one ignored): admitted.
        assert_eq!(Refusal::before_start(false, None, night), None);
    }

    #[test]
    fn refusals_mark_the_report() {
        let mut report = SiteReport {
            flow: "f".into(),
            site: "s1".into(),
            run_id: None,
            status: RunStatus::Succeeded,
            streams: Vec::new(),
            error: None,
            error_kind: None,
            duration: Duration::ZERO,
            note: None,
        };
        let mut interrupted = report.clone();
        Refusal::Interrupted.mark(&mut interrupted);
        assert_eq!(interrupted.status, RunStatus::Skipped);
        assert_eq!(interrupted.error_kind, Some(ErrorKind::Interrupted));
        assert_eq!(
            interrupted.error.as_deref(),
            Some("interrupted before the run started")
        );

        let mut outside = report.clone();
        Refusal::OutsideWindow("outside".into()).mark(&mut outside);
        assert_eq!(
            (outside.status, outside.error, outside.note.as_deref()),
            (RunStatus::Skipped, None, Some("outside"))
        );

        Refusal::circuit_open(("f", "s1"), utc("2026-07-01T12:05:00Z"), 4).mark(&mut report);
        assert_eq!(report.status, RunStatus::Skipped);
        assert_eq!(report.error_kind, None);
        assert_eq!(
            report.error.as_deref(),
            Some(
                "flow `f` site `s1`: circuit open after 4 consecutive failed runs; skipped until \
                 2026-07-01 12:05:00 UTC (see `hubsync status`), or run it now with \
                 `hubsync sync --flow f --site s1 --ignore-circuit`"
            )
        );
    }

    #[test]
    fn a_run_not_started_is_skipped_only_for_a_live_run() {
        let alive = StateError::AlreadyRunning {
            run_id: "r1".into(),
            seconds: 3,
        };
        let Refusal::Error(status, error) = Refusal::not_started("flow `f` site `s1`", &alive)
        else {
            panic!("an error refusal");
        };
        assert_eq!(status, RunStatus::Skipped);
        assert!(error.starts_with("flow `f` site `s1`: "), "{error}");
        let broken = StateError::Connector(ConnectorError::other("master gone".into()));
        assert!(matches!(
            Refusal::not_started("flow `f` site `s1`", &broken),
            Refusal::Error(RunStatus::Failed, _)
        ));
    }

    #[test]
    fn a_login_error_says_how_many_attempts_it_took() {
        let error = RunError::new(ErrorKind::Connection, "flow `f` site `s1`: refused");
        assert_eq!(after_attempts(error.clone(), 1), error);
        assert_eq!(
            after_attempts(error, 4),
            RunError::new(
                ErrorKind::Connection,
                "flow `f` site `s1`: refused (after 4 attempts)"
            )
        );
    }

    #[test]
    fn a_panic_s_message_is_its_text() {
        let literal: Box<dyn std::any::Any + Send> = Box::new("boom");
        let formatted: Box<dyn std::any::Any + Send> = Box::new(format!("bad {}", 1));
        let other: Box<dyn std::any::Any + Send> = Box::new(7_u8);
        assert_eq!(panic_message(literal.as_ref()), "boom");
        assert_eq!(panic_message(formatted.as_ref()), "bad 1");
        assert_eq!(panic_message(other.as_ref()), "unknown panic");
    }
}
