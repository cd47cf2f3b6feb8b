//! Metrics: every name is declared here with its description, and one
//! helper per event writes its log line (if any) and bumps the metrics
//! together, so names cannot drift between the code, the README and
//! `/metrics`. A leaf module: events are plain values (flow, site, status,
//! rows, duration), so nothing here imports the engine that reports them.
//!
//! The Prometheus recorder is installed once per process by [`install`]
//! (the HTTP API does it); before that the helpers are no-ops, so
//! `hubsync sync` pays nothing. No per-site histograms: a fleet has
//! thousands of sites, so the run duration histogram is per flow only.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Counter `{flow, site}`: rows read from the source by finished runs.
pub const ROWS_READ: &str = "hubsync_rows_read_total";
/// Counter `{flow, site}`: rows inserted or changed at the target by finished runs.
pub const ROWS_WRITTEN: &str = "hubsync_rows_written_total";
/// Counter `{flow, site, status}`: finished runs by outcome
/// (`succeeded`, `failed`, `skipped`, `partial`).
pub const RUNS: &str = "hubsync_runs_total";
/// Histogram `{flow}`: wall time of a site run, in seconds.
pub const RUN_DURATION: &str = "hubsync_run_duration_seconds";
/// Gauge `{flow, site}`: seconds since the pair's last successful run
/// (from the run history, computed at scrape time).
pub const LAST_SUCCESS_AGE: &str = "hubsync_last_success_age_seconds";
/// Gauge `{flow, stream, site}`: for time cursors, seconds between now and
/// the newest cursor value applied (how far the target is behind the
/// site's clock when the site writes continuously); computed at scrape time.
pub const CURSOR_AGE: &str = "hubsync_checkpoint_cursor_age_seconds";
/// Gauge: site connections open now (flow runs and service calls).
pub const SITE_CONNECTIONS: &str = "hubsync_site_connections_open";
/// Gauge `{flow, site}`: 1 while the pair's circuit breaker is open, else 0
/// (pairs that ever failed; computed at scrape time).
pub const CIRCUIT_OPEN: &str = "hubsync_circuit_open";
/// Gauge: most master write transactions in flight at once since the hub
/// started (at most `hub.master_write_concurrency`); set at scrape time.
pub const MASTER_WRITES_HIGH_WATER: &str = "hubsync_master_writes_high_water";
/// Counter `{service, operation, outcome}`: data service calls per place
/// (`ok` or `error`).
pub const SERVICE_CALLS: &str = "hubsync_service_calls_total";

/// Counter `{flow, handler, outcome}`: delivery attempts of follow-up
/// events (`delivered`, `retry`, `dead`).
pub const EVENT_DELIVERIES: &str = "hubsync_event_deliveries_total";
/// Gauge `{state}`: follow-up events in the master's outbox by state
/// (`pending`, `dead`); computed at scrape time.
pub const OUTBOX_EVENTS: &str = "hubsync_outbox_events";

/// Buckets of [`RUN_DURATION`], in seconds.
const DURATION_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls return
/// the same handle) and describes every metric.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(RUN_DURATION.into()), &DURATION_BUCKETS)
            .expect("buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed (a test harness);
        // the handle then renders nothing, which is harmless.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    })
}

fn describe() {
    metrics::describe_counter!(
        ROWS_READ,
        metrics::Unit::Count,
        "Rows read from the source by finished runs"
    );
    metrics::describe_counter!(
        ROWS_WRITTEN,
        metrics::Unit::Count,
        "Rows inserted or changed at the target by finished runs"
    );
    metrics::describe_counter!(RUNS, metrics::Unit::Count, "Finished runs by outcome");
    metrics::describe_histogram!(
        RUN_DURATION,
        metrics::Unit::Seconds,
        "Wall time of one site run of a flow"
    );
    metrics::describe_gauge!(
        LAST_SUCCESS_AGE,
        metrics::Unit::Seconds,
        "Seconds since the last successful run of a flow at a site"
    );
    metrics::describe_gauge!(
        CURSOR_AGE,
        metrics::Unit::Seconds,
        "Seconds between now and the newest time cursor value applied"
    );
    metrics::describe_gauge!(
        SITE_CONNECTIONS,
        metrics::Unit::Count,
        "Site connections open now"
    );
    metrics::describe_gauge!(
        CIRCUIT_OPEN,
        "1 while the circuit breaker of a flow at a site is open"
    );
    metrics::describe_gauge!(
        MASTER_WRITES_HIGH_WATER,
        metrics::Unit::Count,
        "Most master write transactions in flight at once since the hub started"
    );
    metrics::describe_counter!(
        SERVICE_CALLS,
        metrics::Unit::Count,
        "Data service calls per place and outcome"
    );
    metrics::describe_counter!(
        EVENT_DELIVERIES,
        metrics::Unit::Count,
        "Delivery attempts of follow-up events by outcome"
    );
    metrics::describe_gauge!(
        OUTBOX_EVENTS,
        metrics::Unit::Count,
        "Follow-up events in the master's outbox by state (pending, dead)"
    );
}

/// A site run of a flow that ended after it was started (dry runs and runs
/// without a history row included; runs refused before starting are not).
#[derive(Clone, Copy, Debug)]
pub struct RunFinished<'a> {
    /// Flow name.
    pub flow: &'a str,
    /// Site id.
    pub site: &'a str,
    /// Outcome as stored in the run history: `succeeded`, `failed`,
    /// `partial` (or `skipped`).
    pub status: &'static str,
    /// Rows read from the source over all streams.
    pub rows_read: u64,
    /// Rows inserted or changed at the target over all streams.
    pub rows_written: u64,
    /// Wall time of the run.
    pub duration: Duration,
    /// The error of a run that did not succeed (with its place).
    pub error: Option<&'a str>,
}

/// Records a finished site run: a debug line (progress lines already show
/// each run), rows, outcome and duration.
pub fn run_finished(run: &RunFinished<'_>) {
    match run.error {
        Some(error) => tracing::debug!(flow = %run.flow, site = %run.site, "run ended: {error}"),
        None => tracing::debug!(
            flow = %run.flow,
            site = %run.site,
            rows_read = run.rows_read,
            rows_written = run.rows_written,
            "run succeeded"
        ),
    }
    let labels = [
        ("flow", run.flow.to_string()),
        ("site", run.site.to_string()),
    ];
    metrics::counter!(ROWS_READ, &labels).increment(run.rows_read);
    metrics::counter!(ROWS_WRITTEN, &labels).increment(run.rows_written);
    metrics::counter!(
        RUNS,
        "flow" => run.flow.to_string(),
        "site" => run.site.to_string(),
        "status" => run.status
    )
    .increment(1);
    metrics::histogram!(RUN_DURATION, "flow" => run.flow.to_string())
        .record(run.duration.as_secs_f64());
}

/// A site connection was opened.
pub fn site_connection_opened() {
    metrics::gauge!(SITE_CONNECTIONS).increment(1.0);
}

/// A site connection was closed.
pub fn site_connection_closed() {
    metrics::gauge!(SITE_CONNECTIONS).decrement(1.0);
}

/// Records one place's outcome of a data service call.
pub fn service_called(service: &str, operation: &str, ok: bool) {
    metrics::counter!(
        SERVICE_CALLS,
        "service" => service.to_string(),
        "operation" => operation.to_string(),
        "outcome" => if ok { "ok" } else { "error" }
    )
    .increment(1);
}

/// One delivery attempt of a follow-up event, as the worker recorded it.
#[derive(Clone, Copy, Debug)]
pub struct EventAttempt<'a> {
    /// The event id.
    pub event_id: &'a str,
    /// The flow that raised it.
    pub flow: &'a str,
    /// The site of that run.
    pub site: &'a str,
    /// The handler (`flow:<name>` for a chained flow).
    pub handler: &'a str,
    /// This attempt's number (1 for the first).
    pub attempt: u32,
    /// Attempts allowed before it is a dead letter.
    pub max_attempts: u32,
    /// `None` when delivered; else the error and whether it is retried.
    pub failure: Option<(&'a str, bool)>,
}

/// Records a delivery attempt: a warning line for a failed one (saying
/// whether it is retried or now a dead letter) and the outcome counter.
pub fn event_attempted(attempt: &EventAttempt<'_>) {
    let outcome = match attempt.failure {
        None => "delivered",
        Some((error, retried)) => {
            tracing::warn!(
                event_id = %attempt.event_id, flow = %attempt.flow, site = %attempt.site,
                handler = %attempt.handler,
                "follow-up event, attempt {} of {}: {error}{}",
                attempt.attempt,
                attempt.max_attempts,
                if retried { "; retrying later" } else { "; now a dead letter (`hubsync events`)" }
            );
            if retried { "retry" } else { "dead" }
        }
    };
    metrics::counter!(
        EVENT_DELIVERIES,
        "flow" => attempt.flow.to_string(),
        "handler" => attempt.handler.to_string(),
        "outcome" => outcome
    )
    .increment(1);
}
