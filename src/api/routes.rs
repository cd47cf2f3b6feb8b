//! Route handlers and the JSON shapes they answer with.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::ToSchema;

use super::json::{JsonRow, value_json};
use super::{ApiError, ApiState};
use crate::config::{Schedule, SiteSelector};
use crate::flow::{Progress, SiteReport, SyncOptions, circuit};
use crate::service::{self, ParamInput, ServiceError};
use crate::state::{RunFilter, RunRecord, RunStatus, format_position};
use crate::telemetry;

// ------------------------------------------------------------------ shapes

/// `GET /health`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` when the master answers, else `degraded`.
    pub status: String,
    /// `ok`, or `unreachable` (the reason is logged, not shown: no token
    /// is needed here).
    pub master: String,
}

/// `GET /readyz`.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`, or `not_ready`.
    pub status: String,
    /// `ok`, or `unreachable` (the reason is logged, not shown).
    pub master: String,
    /// `current` (the master's state schema is this hubsync's), `behind`
    /// (another hub has not migrated it yet), `ahead` (a newer hubsync
    /// migrated it: upgrade this one) or `unknown` (master unreachable).
    pub schema: String,
    /// The schema version this hubsync runs.
    pub schema_version: i64,
}

/// One site (never its URL or password).
#[derive(Serialize, ToSchema)]
pub struct SiteView {
    /// Site id.
    pub id: String,
    /// `postgres` or `sqlite`.
    pub dialect: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// `GET /api/v1/sites`.
#[derive(Serialize, ToSchema)]
pub struct SitesResponse {
    /// Every site: the static `[[site]]`s in config order, then the
    /// `[inventory]` query's in row order.
    pub sites: Vec<SiteView>,
    /// Why the `[inventory]` query could not be read now (the sites are
    /// then those of its last good read, the static ones if none); null
    /// when it was read, or without `[inventory]`.
    pub inventory_error: Option<String>,
}

/// One stream of a flow.
#[derive(Serialize, ToSchema)]
pub struct StreamView {
    /// Stream name.
    pub name: String,
    /// Target table.
    pub target: String,
}

/// One flow.
#[derive(Serialize, ToSchema)]
pub struct FlowView {
    /// Flow name.
    pub name: String,
    /// `pull` or `push`.
    pub direction: String,
    /// `every 5m`, a cron expression with its zone, or null (on demand only).
    pub schedule: Option<String>,
    /// Streams in order.
    pub streams: Vec<StreamView>,
}

/// `GET /api/v1/flows`.
#[derive(Serialize, ToSchema)]
pub struct FlowsResponse {
    /// Every flow, in config order.
    pub flows: Vec<FlowView>,
}

/// One run of the history.
#[derive(Serialize, ToSchema)]
pub struct RunView {
    /// Run id (UUID).
    pub run_id: String,
    /// Flow name.
    pub flow: String,
    /// Site id.
    pub site: String,
    /// `running`, `succeeded`, `failed`, `skipped` or `partial`; a
    /// `running` run whose heartbeat is 30 s old or more (its hub died)
    /// shows as `failed` with `error_kind` `interrupted`.
    pub status: String,
    /// Start (RFC 3339, UTC).
    pub started_at: DateTime<Utc>,
    /// End; null while running.
    pub finished_at: Option<DateTime<Utc>>,
    /// Rows read from the source (all streams).
    pub rows_read: i64,
    /// Rows inserted or changed at the target (all streams).
    pub rows_written: i64,
    /// Error of a failed or skipped run.
    pub error: Option<String>,
    /// Kind of a failed run's error: `connection`, `login`, `conflict`,
    /// `canceled`, `permission`, `data`, `other` or `interrupted` (the hub
    /// stopped it); null without error.
    pub error_kind: Option<String>,
    /// Remarks (backfills and why).
    pub note: Option<String>,
}

impl From<&RunRecord> for RunView {
    fn from(run: &RunRecord) -> Self {
        RunView {
            run_id: run.run_id.clone(),
            flow: run.flow.clone(),
            site: run.site.clone(),
            status: run.status.as_str().to_string(),
            started_at: run.started_at,
            finished_at: run.finished_at,
            rows_read: run.rows_read,
            rows_written: run.rows_written,
            error: run.error.clone(),
            error_kind: run.error_kind.clone(),
            note: run.note.clone(),
        }
    }
}

/// `GET /api/v1/runs`.
#[derive(Serialize, ToSchema)]
pub struct RunsResponse {
    /// Runs, newest first.
    pub runs: Vec<RunView>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A checkpoint in the status.
#[derive(Serialize, ToSchema)]
pub struct CheckpointView {
    /// Stream name.
    pub stream: String,
    /// Last (cursor, key...) applied, as text.
    pub position: String,
    /// When it last moved.
    pub updated_at: DateTime<Utc>,
}

/// Circuit breaker state of a (flow, site).
#[derive(Serialize, ToSchema)]
pub struct CircuitView {
    /// True while the pair is skipped.
    pub open: bool,
    /// Consecutive failed runs.
    pub failures: u32,
    /// When it closes again (open circuits only).
    pub until: Option<DateTime<Utc>>,
}

/// Status of one (flow, site).
#[derive(Serialize, ToSchema)]
pub struct PairStatus {
    /// Flow name.
    pub flow: String,
    /// Site id.
    pub site: String,
    /// The newest run, if any.
    pub last_run: Option<RunView>,
    /// End of the newest successful run.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Seconds since then (the lag); null if it never succeeded.
    pub lag_seconds: Option<i64>,
    /// Checkpoints of its streams.
    pub checkpoints: Vec<CheckpointView>,
    /// Circuit breaker.
    pub circuit: CircuitView,
    /// Rows of its streams in the quarantine (`on_error = "quarantine"`):
    /// refused by the target, retried when they change at the source.
    pub quarantined_rows: u64,
}

/// `GET /api/v1/status`.
#[derive(Serialize, ToSchema)]
pub struct StatusResponse {
    /// One entry per flow and site, flows in config order, then sites
    /// (the page the filters keep).
    pub pairs: Vec<PairStatus>,
    /// Follow-up events in the outbox, per state (`dead`: dead letters;
    /// list them at `GET /api/v1/events`).
    pub events: super::events::EventCounts,
    /// Counts over the whole fleet, whatever the filters.
    pub summary: super::fleet::FleetSummary,
    /// Pairs the filters keep, over all pages.
    pub total: usize,
    /// `offset` of the next page; null on the last (or without `limit`).
    pub next_offset: Option<usize>,
    /// Why the `[inventory]` query could not be read now (the pairs are
    /// then those of its last good read, the static sites' if none); null
    /// when it was read, or without `[inventory]`.
    pub inventory_error: Option<String>,
}

/// `POST /api/v1/flows/{flow}/sync` body: `{}` (all sites), or one of
/// `sites` / `tags`.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// Site ids.
    pub sites: Option<Vec<String>>,
    /// Tag values every chosen site has, e.g. `{"region": "north"}`.
    pub tags: Option<BTreeMap<String, String>>,
}

/// What a sync request did at one site.
#[derive(Serialize, ToSchema)]
pub struct SyncStarted {
    /// Site id.
    pub site: String,
    /// `started` (a new run), `already_running` (the live run's id is
    /// given), `skipped` (e.g. circuit open; see `error`), or `queued`
    /// (waiting for a free site slot; the run id appears in `/runs`).
    pub status: String,
    /// The run id (new or already running).
    pub run_id: Option<String>,
    /// Why it was skipped.
    pub error: Option<String>,
}

/// `POST /api/v1/flows/{flow}/sync` answer (202).
#[derive(Serialize, ToSchema)]
pub struct SyncResponse {
    /// Flow name.
    pub flow: String,
    /// One entry per chosen site, in selection order.
    pub runs: Vec<SyncStarted>,
}

/// `POST /api/v1/services/{service}/{operation}` body.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallRequest {
    /// Parameter values by name (JSON types as in the service docs;
    /// strings are parsed by the declared type).
    #[schema(value_type = Object)]
    pub params: Option<serde_json::Map<String, serde_json::Value>>,
    /// Site services: these site ids.
    pub sites: Option<Vec<String>>,
    /// Site services: sites with these tag values.
    pub tags: Option<BTreeMap<String, String>>,
    /// Site services: every site.
    pub all_sites: Option<bool>,
}

/// One place's result of a service call.
#[derive(Serialize, ToSchema)]
pub struct CallPlaceResult {
    /// Site id; null for a master service.
    pub site: Option<String>,
    /// False when this place failed (see `error`).
    pub ok: bool,
    /// Result columns, in order.
    pub columns: Vec<String>,
    /// Rows as objects keyed by column (see the README for JSON types).
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<JsonRow>,
    /// Rows affected by a statement; null for a query.
    pub rows_affected: Option<u64>,
    /// Error at this place, naming service, operation and site.
    pub error: Option<String>,
}

/// `POST /api/v1/services/{service}/{operation}` answer.
#[derive(Serialize, ToSchema)]
pub struct CallResponse {
    /// Service name.
    pub service: String,
    /// Operation name.
    pub operation: String,
    /// One entry per place (the master, or each chosen site in order).
    pub results: Vec<CallPlaceResult>,
    /// How many places failed.
    pub failed: usize,
}

// ------------------------------------------------------------------ handlers

/// Liveness and master reachability; needs no token.
#[utoipa::path(get, path = "/health", tag = "hub",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(State(state): State<ApiState>) -> impl IntoResponse {
    let hub = state.hub();
    match hub.master().query("SELECT 1", &[]).await {
        Ok(_) => (
            StatusCode::OK,
            Json(Health {
                status: "ok".into(),
                master: "ok".into(),
            }),
        ),
        Err(e) => {
            // The details (host, database) stay in the log: /health is open.
            tracing::warn!("health check: master: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Health {
                    status: "degraded".into(),
                    master: "unreachable".into(),
                }),
            )
        }
    }
}

/// Liveness for an orchestrator (Kubernetes `livenessProbe`, systemd
/// watchdogs): 200 while the process serves HTTP, without asking the master
/// (a replica cut off from its master is not restarted: its leased runs
/// stop by themselves and it claims again once the master is back). No
/// token needed.
#[utoipa::path(get, path = "/healthz", tag = "hub", responses((status = 200, description = "alive")))]
pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

/// Readiness (Kubernetes `readinessProbe`): 200 when the master answers and
/// its state schema is the one this hubsync runs, else 503 saying which.
/// No token needed; reasons are logged, not shown.
#[utoipa::path(get, path = "/readyz", tag = "hub",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(State(state): State<ApiState>) -> impl IntoResponse {
    let hub = state.hub();
    let expected = crate::state::SCHEMA_VERSION;
    let stored = hub.state().stored_schema_version(hub.master()).await;
    let (master, schema) = match &stored {
        Ok(version) if *version == expected => ("ok", "current"),
        Ok(version) if *version < expected => ("ok", "behind"),
        Ok(_) => ("ok", "ahead"),
        Err(e) => {
            tracing::warn!("readiness check: master: {e}");
            ("unreachable", "unknown")
        }
    };
    let ready = schema == "current";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            status: if ready { "ready" } else { "not_ready" }.into(),
            master: master.into(),
            schema: schema.into(),
            schema_version: expected,
        }),
    )
}

/// Prometheus text format (metric names in the README).
#[utoipa::path(get, path = "/metrics", tag = "hub", security(("bearer" = [])),
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    refresh_gauges(&state).await.map_err(ApiError::internal)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics().render(),
    ))
}

/// Scrape-time gauges: freshness, cursor age and circuits, from the master.
async fn refresh_gauges(state: &ApiState) -> Result<(), crate::state::StateError> {
    let hub = state.hub();
    let config = hub.config();
    let now = Utc::now();
    let successes = hub.state().last_successes(hub.master()).await?;
    let streaks = hub.state().failure_streaks(hub.master(), None).await?;
    let checkpoints = hub.state().checkpoints(hub.master()).await?;
    metrics::gauge!(telemetry::MASTER_WRITES_HIGH_WATER).set(hub.master_write_high_water() as f64);
    let (pending, _, dead) = hub.state().event_counts(hub.master()).await?;
    metrics::gauge!(telemetry::OUTBOX_EVENTS, "state" => "pending").set(pending as f64);
    metrics::gauge!(telemetry::OUTBOX_EVENTS, "state" => "dead").set(dead as f64);
    let fleet = hub.sites();
    for flow in &config.flows {
        for site in fleet.iter() {
            let pair = (flow.name.clone(), site.id.clone());
            let labels = [("flow", flow.name.clone()), ("site", site.id.clone())];
            if let Some(at) = successes.get(&pair) {
                metrics::gauge!(telemetry::LAST_SUCCESS_AGE, &labels)
                    .set((now - *at).num_milliseconds() as f64 / 1000.0);
            }
            if let Some((streak, last)) = streaks.get(&pair) {
                let open = circuit::open_until(
                    *streak,
                    *last,
                    config.hub.circuit_breaker_failures,
                    config.hub.circuit_breaker_cooldown,
                    now,
                )
                .is_some();
                metrics::gauge!(telemetry::CIRCUIT_OPEN, &labels).set(if open { 1.0 } else { 0.0 });
            } else {
                metrics::gauge!(telemetry::CIRCUIT_OPEN, &labels).set(0.0);
            }
        }
    }
    for checkpoint in &checkpoints {
        if let Some(at) = checkpoint.position.first().and_then(as_instant) {
            metrics::gauge!(
                telemetry::CURSOR_AGE,
                "flow" => checkpoint.key.flow.clone(),
                "stream" => checkpoint.key.stream.clone(),
                "site" => checkpoint.key.site.clone()
            )
            .set((now - at).num_milliseconds() as f64 / 1000.0);
        }
    }
    Ok(())
}

/// A cursor value as an instant: timestamps with zone, local timestamps
/// read as UTC, and RFC 3339 text (SQLite).
fn as_instant(value: &crate::value::Value) -> Option<DateTime<Utc>> {
    use crate::value::Value;
    match value {
        Value::TimestampTz(t) => Some(*t),
        Value::Timestamp(t) => Some(t.and_utc()),
        Value::Text(t) => DateTime::parse_from_rfc3339(t)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        _ => None,
    }
}

/// The inventory.
#[utoipa::path(get, path = "/api/v1/sites", tag = "fleet", security(("bearer" = [])),
    responses((status = 200, body = SitesResponse), (status = 401, body = super::error::ErrorBody)))]
pub async fn sites(State(state): State<ApiState>) -> Json<SitesResponse> {
    let (fleet, inventory_error) = current_sites(state.hub()).await;
    Json(SitesResponse {
        inventory_error,
        sites: fleet
            .iter()
            .map(|site| SiteView {
                id: site.id.clone(),
                dialect: site.url.dialect().name().to_string(),
                tags: site.tags.clone(),
            })
            .collect(),
    })
}

/// The sites of the fleet now, as `hubsync sync` reads them: the static
/// `[[site]]`s, plus, with `[inventory]`, the rows of its query read again
/// from the master (so `serve`, which runs no pass, shows them too). When
/// that read fails: the sites of the hub's last good read (the static ones
/// if none) and the error's text (`` `inventory.query` on the master: ...``).
pub(super) async fn current_sites(
    hub: &crate::flow::Hub,
) -> (Arc<Vec<crate::config::Site>>, Option<String>) {
    if hub.config().inventory.is_none() {
        return (hub.sites(), None);
    }
    match hub.refresh_inventory().await {
        Ok(_) => (hub.sites(), None),
        Err(e) => (hub.sites(), Some(e.to_string())),
    }
}

/// The flows.
#[utoipa::path(get, path = "/api/v1/flows", tag = "fleet", security(("bearer" = [])),
    responses((status = 200, body = FlowsResponse), (status = 401, body = super::error::ErrorBody)))]
pub async fn flows(State(state): State<ApiState>) -> Json<FlowsResponse> {
    let config = state.hub().config();
    Json(FlowsResponse {
        flows: config
            .flows
            .iter()
            .map(|flow| FlowView {
                name: flow.name.clone(),
                direction: flow.direction.as_str().to_string(),
                schedule: flow.schedule.as_ref().map(schedule_text),
                streams: flow
                    .streams
                    .iter()
                    .map(|s| StreamView {
                        name: s.name.clone(),
                        target: s.target.clone(),
                    })
                    .collect(),
            })
            .collect(),
    })
}

fn schedule_text(schedule: &Schedule) -> String {
    match schedule {
        Schedule::Every(interval) => format!("every {}", humantime::format_duration(*interval)),
        Schedule::Cron { cron, timezone } => format!("{} ({timezone})", cron.pattern),
    }
}

/// Most runs one page may hold.
pub const MAX_RUNS_LIMIT: usize = 1000;
/// Runs per page when `limit` is not given.
pub const DEFAULT_RUNS_LIMIT: usize = 50;

/// Run history, newest first, filtered and paged.
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", security(("bearer" = [])),
    params(
        ("flow" = Option<String>, Query, description = "only this flow"),
        ("site" = Option<String>, Query, description = "only this site"),
        ("status" = Option<String>, Query, description = "running, succeeded, failed, skipped or partial; a dead hub's run (heartbeat 30 s old or more) is failed, not running"),
        ("limit" = Option<usize>, Query, description = "runs per page, 1 to 1000 (default 50)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses((status = 200, body = RunsResponse), (status = 400, body = super::error::ErrorBody)))]
pub async fn runs(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
) -> Result<Json<RunsResponse>, ApiError> {
    let mut filter = RunFilter::default();
    let mut limit = DEFAULT_RUNS_LIMIT;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "flow" => filter.flow = Some(value.into_owned()),
            "site" => filter.site = Some(value.into_owned()),
            "status" => {
                const STATUSES: [RunStatus; 5] = [
                    RunStatus::Running,
                    RunStatus::Succeeded,
                    RunStatus::Failed,
                    RunStatus::Skipped,
                    RunStatus::Partial,
                ];
                if !STATUSES.iter().any(|s| s.as_str() == value) {
                    return Err(ApiError::bad_request(format!(
                        "query param `status`: unknown status `{value}`; use running, succeeded, failed, skipped or partial"
                    )));
                }
                filter.status = Some(value.into_owned());
            }
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_RUNS_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "query param `limit`: `{value}` is not a whole number from 1 to {MAX_RUNS_LIMIT}"
                        ))
                    })?;
            }
            "cursor" => {
                filter.before = Some(decode_cursor(&value).ok_or_else(|| {
                    ApiError::bad_request(
                        "query param `cursor`: not a `next_cursor` returned by this API",
                    )
                })?);
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query param `{other}`; use flow, site, status, limit or cursor"
                )));
            }
        }
    }
    let hub = state.hub();
    let runs = hub
        .state()
        .list_runs(hub.master(), &filter, limit)
        .await
        .map_err(ApiError::internal)?;
    let next_cursor = (runs.len() == limit)
        .then(|| runs.last().map(|r| encode_cursor(r.started_at, &r.run_id)))
        .flatten();
    Ok(Json(RunsResponse {
        runs: runs.iter().map(RunView::from).collect(),
        next_cursor,
    }))
}

fn encode_cursor(started_at: DateTime<Utc>, run_id: &str) -> String {
    let text = format!(
        "{}|{run_id}",
        started_at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
    );
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

fn decode_cursor(cursor: &str) -> Option<(DateTime<Utc>, String)> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (at, run_id) = text.split_once('|')?;
    let at = DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc);
    Some((at, run_id.to_string()))
}

/// Per flow and site: last run, lag, checkpoints, circuit; with the fleet's
/// summary counts, filters and paging for large fleets.
#[utoipa::path(get, path = "/api/v1/status", tag = "runs", security(("bearer" = [])),
    params(
        ("flow" = Option<String>, Query, description = "only this flow"),
        ("state" = Option<String>, Query, description = "running, succeeded, failed, skipped, partial, never or circuit_open"),
        ("tag" = Option<String>, Query, description = "only sites with this tag value, `name:value` (e.g. `region:north`)"),
        ("q" = Option<String>, Query, description = "only sites whose id contains this text (any case)"),
        ("limit" = Option<usize>, Query, description = "pairs per page, 1 to 1000 (default: all)"),
        ("offset" = Option<usize>, Query, description = "pairs skipped: `next_offset` of the previous page"),
    ),
    responses((status = 200, body = StatusResponse), (status = 400, body = super::error::ErrorBody)))]
pub async fn status(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
) -> Result<Json<StatusResponse>, ApiError> {
    let filter = super::fleet::StatusFilter::parse(&query.unwrap_or_default())?;
    let (mut status, fleet) = fleet_status(&state).await.map_err(ApiError::internal)?;
    let (pairs, total, next_offset) = filter.page(std::mem::take(&mut status.pairs), &fleet);
    status.pairs = pairs;
    status.total = total;
    status.next_offset = next_offset;
    Ok(Json(status))
}

/// The status of every (flow, site), as `/api/v1/status` answers it, and
/// the sites it covers ([`current_sites`]: with `[inventory]`, read again).
pub(super) async fn fleet_status(
    state: &ApiState,
) -> Result<(StatusResponse, Arc<Vec<crate::config::Site>>), crate::state::StateError> {
    let hub = state.hub();
    let (fleet, inventory_error) = current_sites(hub).await;
    let config = hub.config();
    let now = Utc::now();
    let last_runs = hub.state().last_runs(hub.master()).await?;
    let successes = hub.state().last_successes(hub.master()).await?;
    let streaks = hub.state().failure_streaks(hub.master(), None).await?;
    let checkpoints = hub.state().checkpoints(hub.master()).await?;
    let quarantined = hub.state().quarantine_counts(hub.master()).await?;
    // Indexed by pair: a fleet of thousands of sites is not scanned per pair.
    let last_runs: HashMap<(&str, &str), &RunRecord> = (last_runs.iter())
        .map(|r| ((r.flow.as_str(), r.site.as_str()), r))
        .collect();
    let mut checkpoints_of: HashMap<(&str, &str), Vec<CheckpointView>> = HashMap::new();
    for c in &checkpoints {
        (checkpoints_of
            .entry((c.key.flow.as_str(), c.key.site.as_str()))
            .or_default())
        .push(CheckpointView {
            stream: c.key.stream.clone(),
            position: format_position(&c.position),
            updated_at: c.updated_at,
        });
    }
    let mut pairs = Vec::new();
    for flow in &config.flows {
        for site in fleet.iter() {
            let pair = (flow.name.clone(), site.id.clone());
            let last_success_at = successes.get(&pair).copied();
            let circuit = match streaks.get(&pair) {
                Some((streak, last)) => {
                    let until = circuit::open_until(
                        *streak,
                        *last,
                        config.hub.circuit_breaker_failures,
                        config.hub.circuit_breaker_cooldown,
                        now,
                    );
                    CircuitView {
                        open: until.is_some(),
                        failures: *streak,
                        until,
                    }
                }
                None => CircuitView {
                    open: false,
                    failures: 0,
                    until: None,
                },
            };
            pairs.push(PairStatus {
                flow: flow.name.clone(),
                site: site.id.clone(),
                last_run: (last_runs.get(&(flow.name.as_str(), site.id.as_str())))
                    .map(|r| RunView::from(*r)),
                last_success_at,
                lag_seconds: last_success_at.map(|at| (now - at).num_seconds().max(0)),
                checkpoints: (checkpoints_of.remove(&(flow.name.as_str(), site.id.as_str())))
                    .unwrap_or_default(),
                quarantined_rows: quarantined.get(&pair).copied().unwrap_or(0),
                circuit,
            });
        }
    }
    let events = super::events::counts(state).await?;
    let total = pairs.len();
    let status = StatusResponse {
        summary: super::fleet::summary(&pairs, fleet.len()),
        pairs,
        total,
        next_offset: None,
        events,
        inventory_error,
    };
    Ok((status, fleet))
}

/// How long a sync request waits for its runs to be recorded before it
/// answers `queued` for the rest.
const SYNC_ANSWER_WAIT: Duration = Duration::from_secs(5);

/// Starts a pass of the flow now over all sites, the listed ones, or those
/// with the given tags; answers 202 with the run ids. A (flow, site) already
/// running is not started twice: its running run id is returned.
#[utoipa::path(post, path = "/api/v1/flows/{flow}/sync", tag = "runs", security(("bearer" = [])),
    params(("flow" = String, Path, description = "flow name")),
    request_body(content = SyncRequest, description = "`{}` for every site"),
    responses((status = 202, body = SyncResponse), (status = 400, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn sync_flow(
    State(state): State<ApiState>,
    Path(flow_name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<SyncResponse>), ApiError> {
    let hub = state.hub().clone();
    let config = hub.config();
    let flow = config
        .flow(&flow_name)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "unknown flow `{flow_name}`; known flows: {}",
                config
                    .flows
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?
        .clone();
    let request: SyncRequest = parse_body(&body)?;
    let selector = match (request.sites, request.tags) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "body: give `sites` or `tags`, not both",
            ));
        }
        (Some(ids), None) => SiteSelector::Ids(ids),
        (None, Some(tags)) => SiteSelector::Tags(tags),
        (None, None) => SiteSelector::All,
    };
    // With `[inventory]`, the sites of its last read.
    let with_inventory;
    let fleet_config = if config.inventory.is_some() {
        with_inventory = crate::config::Config {
            sites: (*hub.sites()).clone(),
            ..config.clone()
        };
        &with_inventory
    } else {
        config
    };
    let site_ids: Vec<String> = fleet_config
        .select_sites(&selector)
        .map_err(|e| ApiError::bad_request(format!("body: `{}`: {e}", selector_field(&selector))))?
        .iter()
        .map(|s| s.id.clone())
        .collect();

    // Pairs already running answer at once, without waiting for a site slot
    // (the run's own `start_run` check would only come after one).
    let live = hub
        .state()
        .live_runs(hub.master(), &flow.name)
        .await
        .map_err(ApiError::internal)?;
    let mut answers: HashMap<String, SyncStarted> = HashMap::new();
    for site in &site_ids {
        if let Some(run_id) = live.get(site) {
            answers.insert(
                site.clone(),
                SyncStarted {
                    site: site.clone(),
                    status: "already_running".into(),
                    run_id: Some(run_id.clone()),
                    error: None,
                },
            );
        }
    }
    let to_start: Vec<String> = site_ids
        .iter()
        .filter(|s| !answers.contains_key(*s))
        .cloned()
        .collect();

    let (sender, mut receiver) = mpsc::unbounded_channel();
    let progress = KickProgress {
        inner: state.progress().clone(),
        sender,
    };
    if !to_start.is_empty() {
        let task_hub = hub.clone();
        state.tasks().spawn(async move {
            let fleet = task_hub.sites();
            let sites: Vec<_> = to_start
                .iter()
                .filter_map(|id| fleet.iter().find(|site| site.id == *id))
                .collect();
            task_hub
                .sync_flow(&flow, &sites, SyncOptions::default(), &progress)
                .await;
        });
    }

    let deadline = tokio::time::Instant::now() + SYNC_ANSWER_WAIT;
    while answers.len() < site_ids.len() {
        let event = tokio::select! {
            event = receiver.recv() => event,
            _ = tokio::time::sleep_until(deadline) => None,
        };
        let Some(event) = event else { break };
        let (site, answer) = match event {
            KickEvent::Started { site, run_id } => (
                site.clone(),
                SyncStarted {
                    site,
                    status: "started".into(),
                    run_id: Some(run_id),
                    error: None,
                },
            ),
            KickEvent::AlreadyRunning { site, run_id } => (
                site.clone(),
                SyncStarted {
                    site,
                    status: "already_running".into(),
                    run_id: Some(run_id),
                    error: None,
                },
            ),
            KickEvent::Finished {
                site,
                run_id,
                error,
            } => (
                site.clone(),
                SyncStarted {
                    site,
                    status: if run_id.is_some() {
                        "started"
                    } else {
                        "skipped"
                    }
                    .into(),
                    run_id,
                    error,
                },
            ),
        };
        answers.entry(site).or_insert(answer);
    }
    let runs = site_ids
        .into_iter()
        .map(|site| {
            answers.remove(&site).unwrap_or(SyncStarted {
                site,
                status: "queued".into(),
                run_id: None,
                error: None,
            })
        })
        .collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(SyncResponse {
            flow: flow_name,
            runs,
        }),
    ))
}

fn selector_field(selector: &SiteSelector) -> &'static str {
    match selector {
        SiteSelector::All => "sites",
        SiteSelector::Ids(_) => "sites",
        SiteSelector::Tags(_) => "tags",
    }
}

/// A JSON body, `{}` when empty; errors name the bad field.
fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("body: {e}")))
}

enum KickEvent {
    Started {
        site: String,
        run_id: String,
    },
    AlreadyRunning {
        site: String,
        run_id: String,
    },
    Finished {
        site: String,
        run_id: Option<String>,
        error: Option<String>,
    },
}

/// Forwards progress to the daemon's progress and tells the waiting request
/// what happened at each site.
struct KickProgress {
    inner: std::sync::Arc<dyn Progress>,
    sender: mpsc::UnboundedSender<KickEvent>,
}

impl Progress for KickProgress {
    fn site_started(&self, flow: &str, site: &str) {
        self.inner.site_started(flow, site);
    }
    fn batch_applied(&self, flow: &str, site: &str, stream: &str, read: u64, written: u64) {
        self.inner.batch_applied(flow, site, stream, read, written);
    }
    fn site_finished(&self, report: &SiteReport) {
        self.inner.site_finished(report);
        let _ = self.sender.send(KickEvent::Finished {
            site: report.site.clone(),
            run_id: report.run_id.clone(),
            // A window skip has no error, only its reason.
            error: report.error.clone().or_else(|| report.note.clone()),
        });
    }
    fn run_started(&self, _flow: &str, site: &str, run_id: &str) {
        let _ = self.sender.send(KickEvent::Started {
            site: site.to_string(),
            run_id: run_id.to_string(),
        });
    }
    fn already_running(&self, _flow: &str, site: &str, run_id: &str) {
        let _ = self.sender.send(KickEvent::AlreadyRunning {
            site: site.to_string(),
            run_id: run_id.to_string(),
        });
    }
}

/// Runs a declared data service operation with JSON parameters, on the
/// master or on the chosen sites; rows come back with exact JSON types.
#[utoipa::path(post, path = "/api/v1/services/{service}/{operation}", tag = "services",
    security(("bearer" = [])),
    params(("service" = String, Path, description = "service name"),
        ("operation" = String, Path, description = "operation name")),
    request_body = CallRequest,
    responses((status = 200, body = CallResponse), (status = 400, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn call_service(
    State(state): State<ApiState>,
    Path((service_name, operation_name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<CallResponse>, ApiError> {
    let hub = state.hub();
    let config = hub.config();
    let request: CallRequest = parse_body(&body)?;
    let chosen = [
        request.sites.is_some(),
        request.tags.is_some(),
        request.all_sites == Some(true),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if chosen > 1 {
        return Err(ApiError::bad_request(
            "body: give one of `sites`, `tags` or `all_sites`",
        ));
    }
    let selector = if let Some(ids) = request.sites {
        Some(SiteSelector::Ids(ids))
    } else if let Some(tags) = request.tags {
        Some(SiteSelector::Tags(tags))
    } else if request.all_sites == Some(true) {
        Some(SiteSelector::All)
    } else {
        None
    };
    let inputs: BTreeMap<String, ParamInput> = request
        .params
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, ParamInput::Json(v)))
        .collect();
    let call = service::prepare(
        config,
        &service_name,
        &operation_name,
        &inputs,
        selector.as_ref(),
    )
    .map_err(|e| match e {
        ServiceError::UnknownService { .. } | ServiceError::UnknownOperation { .. } => {
            ApiError::not_found(e.to_string())
        }
        _ => ApiError::bad_request(e.to_string()),
    })?;
    let results = service::execute(config, &call, Some(hub.master())).await;
    let mut failed = 0;
    let results = results
        .into_iter()
        .map(|result| {
            telemetry::service_called(&service_name, &operation_name, result.outcome.is_ok());
            match result.outcome {
                Ok(rows) => CallPlaceResult {
                    site: result.site,
                    ok: true,
                    rows: rows
                        .rows
                        .iter()
                        .map(|row| {
                            JsonRow(
                                row.iter()
                                    .zip(&rows.columns)
                                    .zip(&rows.column_types)
                                    .map(|((value, column), type_name)| {
                                        (column.clone(), value_json(value, type_name))
                                    })
                                    .collect(),
                            )
                        })
                        .collect(),
                    columns: rows.columns,
                    rows_affected: rows.rows_affected,
                    error: None,
                },
                Err(error) => {
                    failed += 1;
                    CallPlaceResult {
                        site: result.site,
                        ok: false,
                        columns: Vec::new(),
                        rows: Vec::new(),
                        rows_affected: None,
                        error: Some(error),
                    }
                }
            }
        })
        .collect();
    Ok(Json(CallResponse {
        service: service_name,
        operation: operation_name,
        results,
        failed,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let at = DateTime::parse_from_rfc3339("2026-01-02T09:00:00.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let cursor = encode_cursor(at, "abc");
        assert_eq!(decode_cursor(&cursor), Some((at, "abc".to_string())));
        assert_eq!(decode_cursor("not a cursor"), None);
        assert_eq!(decode_cursor(""), None);
    }
}
