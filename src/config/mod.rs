//! The TOML config file: raw serde structs, `${VAR}` substitution, and one
//! validation pass that returns a typed [`Config`] or every problem at once.
//!
//! Phases (as vector's config compiler): parse TOML -> substitute `${VAR}`
//! in strings -> deserialize raw structs (unknown keys refused) -> validate
//! and build typed values, collecting all problems. Connectivity is not
//! checked here; that is `hubsync check`.

pub mod api;
pub mod env;
pub mod events;
pub mod routes;
pub mod schedule;
pub mod selector;
pub mod service;
pub mod url;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use self::api::{ApiConfig, ApiToken, Role};
pub use self::events::{EventAction, EventHandler, EventKind, WebhookSecret};
pub use self::routes::{Inventory, Route, System};
pub use self::schedule::{Schedule, SyncWindow};
pub use self::selector::SiteSelector;
pub use self::service::{Operation, Param, ParamType, Service, ServiceTarget};
pub use self::url::{DbUrl, Secret};
use crate::dialect::Dialect;
use crate::dialect::params::bind_site_placeholders;

/// A config that could not be loaded: the file and every problem found.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The config file.
    pub path: PathBuf,
    /// One line per problem, each naming its place (flow, stream, site, key).
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let [only] = self.problems.as_slice() {
            return write!(f, "config `{}`: {only}", self.path.display());
        }
        write!(
            f,
            "config `{}`: {} problems:",
            self.path.display(),
            self.problems.len()
        )?;
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

/// Default of `hub.site_idle_timeout`: longer than the usual "every 5m"
/// schedule, so a daemon's next pass finds its connections open.
const DEFAULT_SITE_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Default `statement_timeout`: 5 minutes.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(300);

/// Parses an optional timeout; `"0s"` means no limit (`Some(None)`), an
/// absent key `None`. A bad value is recorded under `what`.
fn parse_timeout(
    text: Option<&str>,
    what: &str,
    problems: &mut Vec<String>,
) -> Option<Option<Duration>> {
    let text = text?;
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Some(None),
        Ok(d) => Some(Some(d)),
        Err(e) => {
            problems.push(format!(
                "{what} `{text}`: {e} (examples: `30s`, `5m`, `0s` for no limit)"
            ));
            None
        }
    }
}

/// Default `cursor_lag`: how far below the checkpoint each run re-reads.
pub const DEFAULT_CURSOR_LAG: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------- raw structs

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    hub: RawHub,
    master: Option<RawDb>,
    #[serde(default)]
    site: Vec<RawSite>,
    #[serde(default)]
    flow: Vec<RawFlow>,
    api: Option<api::RawApi>,
    #[serde(default)]
    service: Vec<service::RawService>,
    #[serde(default)]
    system: Vec<routes::RawSystem>,
    inventory: Option<routes::RawInventory>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHub {
    max_concurrent_sites: Option<usize>,
    master_write_concurrency: Option<usize>,
    batch_size: Option<usize>,
    connect_timeout: Option<String>,
    site_idle_timeout: Option<String>,
    statement_timeout: Option<String>,
    connect_retries: Option<usize>,
    circuit_breaker_failures: Option<usize>,
    circuit_breaker_cooldown: Option<String>,
    run_history_days: Option<u32>,
    max_rows_per_second: Option<u32>,
    leases: Option<bool>,
    replica_id: Option<String>,
    lease_seconds: Option<f64>,
    heartbeat_seconds: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDb {
    url: String,
    password: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSite {
    id: String,
    url: String,
    password: Option<String>,
    statement_timeout: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlow {
    name: String,
    direction: String,
    schedule: Option<String>,
    timezone: Option<String>,
    splay: Option<String>,
    window: Option<String>,
    after: Option<String>,
    #[serde(default)]
    stream: Vec<RawStream>,
    #[serde(default)]
    on: Vec<events::RawHandler>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStream {
    name: Option<String>,
    source: Option<String>,
    query: Option<String>,
    target: String,
    #[serde(default)]
    primary_key: Vec<String>,
    cursor: Option<String>,
    cursor_lag: Option<String>,
    site_column: Option<String>,
    columns: Option<BTreeMap<String, String>>,
    on_error: Option<String>,
    zero_dates: Option<String>,
    null_cursors: Option<String>,
    late_commits: Option<String>,
    create_target: Option<bool>,
    booleans: Option<Vec<String>>,
    delete_column: Option<String>,
    deletes: Option<String>,
    deletes_window: Option<String>,
    #[serde(default)]
    route: Vec<routes::RawRoute>,
    when: Option<String>,
    compute: Option<BTreeMap<String, String>>,
    filter: Option<String>,
}

// ---------------------------------------------------------------- typed config

/// A validated config.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// Hub-wide limits.
    pub hub: HubConfig,
    /// The master database (also holds hubsync's state tables).
    pub master: DbUrl,
    /// The inventory: every site, in config order.
    pub sites: Vec<Site>,
    /// Every flow, in config order.
    pub flows: Vec<Flow>,
    /// `[api]`; `None` when the section is absent (`hubsync run` then
    /// serves no HTTP, `hubsync serve` uses the defaults).
    pub api: Option<ApiConfig>,
    /// Data services, in config order.
    pub services: Vec<Service>,
    /// `[[system]]` databases that pull streams route rows to, in config
    /// order.
    pub systems: Vec<System>,
    /// `[inventory]`: sites read from the master each pass, besides the
    /// static `sites`; `None` when the section is absent.
    pub inventory: Option<Inventory>,
}

/// Hub-wide limits (`[hub]`).
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Sites worked at once, hence site connections open at once (default 32).
    pub max_concurrent_sites: usize,
    /// Batches written to the master at once (default 4).
    pub master_write_concurrency: usize,
    /// Most rows read and written per batch (default 10,000).
    pub batch_size: usize,
    /// Time allowed to open one database connection (default 10 s).
    pub connect_timeout: Duration,
    /// How long a site connection is kept open after a successful run for
    /// the next run at that site (default 10 min; zero closes it after each
    /// run). Busy plus kept connections never exceed `max_concurrent_sites`.
    pub site_idle_timeout: Duration,
    /// Longest one statement may take at the master or a site (default
    /// 5 min); `None` (`"0s"`) means no limit. A site that stops answering
    /// fails its run after this long instead of holding its flow's pass.
    pub statement_timeout: Option<Duration>,
    /// Extra attempts to connect to a site after a connection failure, with
    /// exponential backoff and jitter (1 s, 2 s, ... at most 30 s; default 2).
    pub connect_retries: usize,
    /// Consecutive failed runs of a (flow, site) that open its circuit: the
    /// pair is then skipped for a cool-down (default 3; 0 disables).
    pub circuit_breaker_failures: usize,
    /// First cool-down of an open circuit; it doubles with every further
    /// failure, up to one hour (default 1 min).
    pub circuit_breaker_cooldown: Duration,
    /// Days of run history kept; older finished runs are deleted by the
    /// daemon (`hubsync run` / `serve`) at start and hourly (default 30;
    /// 0 keeps everything).
    pub run_history_days: u32,
    /// Most rows per second moved through the master, all flows and sites
    /// together: rows sent by pulls (changed or not) and rows read by pushes (token
    /// bucket, one second of burst); `None` (default): no limit.
    pub max_rows_per_second: Option<std::num::NonZeroU32>,
    /// Several hub replicas share the fleet through leases in a PostgreSQL
    /// master (`hubsync run` only; default false: one hub runs every flow).
    pub leases: bool,
    /// This replica's id in lease rows and the run history; `None`: the
    /// host name and process id (`host/pid`).
    pub replica_id: Option<String>,
    /// How long a claimed lease lasts without renewal (default 30 s): a
    /// dead replica's pairs are taken over this long after its last renewal.
    pub lease_period: Duration,
    /// How often a running leased run renews its lease (default 10 s; at
    /// most half of `lease_period`).
    pub lease_heartbeat: Duration,
}

/// Default `hub.lease_seconds`.
pub const DEFAULT_LEASE_PERIOD: Duration = Duration::from_secs(30);

/// Default `hub.heartbeat_seconds`.
pub const DEFAULT_LEASE_HEARTBEAT: Duration = Duration::from_secs(10);

/// `hub.lease_seconds` and `hub.heartbeat_seconds` as durations (defaults
/// 30 s and 10 s, or a third of a shorter lease); a value that is not
/// positive, or a heartbeat longer than half the lease, is a problem.
fn lease_times(raw: &RawHub, problems: &mut Vec<String>) -> (Duration, Duration) {
    let seconds = |value: Option<f64>, key: &str, problems: &mut Vec<String>| match value {
        Some(s) if s.is_finite() && s > 0.0 && s < 86_400.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => {
            problems.push(format!(
                "`hub.{key}` is {s}; give a number of seconds above 0 and below 86400"
            ));
            None
        }
        None => None,
    };
    let period =
        seconds(raw.lease_seconds, "lease_seconds", problems).unwrap_or(DEFAULT_LEASE_PERIOD);
    let heartbeat = seconds(raw.heartbeat_seconds, "heartbeat_seconds", problems)
        .unwrap_or_else(|| DEFAULT_LEASE_HEARTBEAT.min(period / 3));
    if heartbeat * 2 > period {
        problems.push(format!(
            "`hub.heartbeat_seconds` ({}) must be at most half of `hub.lease_seconds` ({}): \
             a lease must survive one late renewal",
            heartbeat.as_secs_f64(),
            period.as_secs_f64()
        ));
    }
    (period, heartbeat)
}

/// One remote database.
#[derive(Clone, Debug)]
pub struct Site {
    /// Unique id, written to pulled rows' `site_column`.
    pub id: String,
    /// How to reach it.
    pub url: DbUrl,
    /// Overrides `hub.statement_timeout` for this site (`Some(None)`: no
    /// limit).
    pub statement_timeout: Option<Option<Duration>>,
    /// Free-form tags (`region`, `price_zone`, `timezone`...), bound into
    /// push queries as `:site.<tag>`.
    pub tags: BTreeMap<String, String>,
    /// The `timezone` tag, parsed (an IANA zone): the site's local time for
    /// flow `window`s.
    pub timezone: Option<chrono_tz::Tz>,
}

impl Site {
    /// This site's statement timeout: its own, else the hub's.
    pub fn statement_timeout(&self, hub: &HubConfig) -> Option<Duration> {
        self.statement_timeout.unwrap_or(hub.statement_timeout)
    }

    /// Value of `:site.<name>`: the id for `id`, else the tag.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        if name == "id" {
            Some(&self.id)
        } else {
            self.tags.get(name).map(String::as_str)
        }
    }
}

/// Which way rows move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Sites -> master.
    Pull,
    /// Master -> sites.
    Push,
}

impl Direction {
    /// `pull` or `push`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Pull => "pull",
            Direction::Push => "push",
        }
    }
}

/// A named sync job.
#[derive(Clone, Debug)]
pub struct Flow {
    /// Unique flow name.
    pub name: String,
    /// Pull or push.
    pub direction: Direction,
    /// When `hubsync run` starts it; `None` means on demand only.
    pub schedule: Option<Schedule>,
    /// The flow's `timezone` (IANA): its cron schedule's and, for sites
    /// without a `timezone` tag, its `window`'s zone.
    pub timezone: Option<chrono_tz::Tz>,
    /// Scheduled passes start each site at a fixed offset in `[0, splay)`
    /// (from a hash of flow name and site id), so a fleet on one schedule
    /// does not hit the master in the same second; `None`: all at once.
    pub splay: Option<Duration>,
    /// Local time of day in which the flow may work a site; outside it the
    /// site's run is skipped (status `skipped`, not a failure). `None`:
    /// any time.
    pub window: Option<SyncWindow>,
    /// The flow's streams, run in order for each site.
    pub streams: Vec<Stream>,
    /// `after`: this flow runs at a site right after the named flow
    /// succeeded there (a chained flow, delivered through the outbox).
    pub after: Option<String>,
    /// `[[flow.on]]`: follow-up event handlers, in config order.
    pub on: Vec<EventHandler>,
}

/// What happens to a row the target refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    /// The stream stops with an error naming the row; nothing of the batch
    /// is written.
    Stop,
    /// The row goes to the master's quarantine table (with its site, key,
    /// values and error), the rest of the batch is applied, the run ends
    /// `partial`; the row is retried when it changes at the source.
    Quarantine,
}

/// What a MySQL zero date (`0000-00-00`, or a date with a zero month or
/// day) read from a source becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZeroDates {
    /// The stream stops before the batch is written, naming the row, the
    /// column and both types (default). A MySQL target receives it as is.
    Error,
    /// It is written as NULL.
    Null,
}

/// What a stream does with source rows whose cursor is NULL (a keyset read
/// on the cursor never returns them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NullCursors {
    /// Read them every run in a separate `cursor IS NULL` read, after the
    /// cursor read (the default): upserts skip unchanged rows, so an
    /// unchanged row costs a read, and an update that leaves the cursor
    /// NULL still arrives. They never move the checkpoint. Counted per run.
    Read,
    /// Never read them; a backfill counts them once in the run history.
    Skip,
}

/// How a pull from a PostgreSQL table finds rows committed late with a
/// cursor value older than the checkpoint (see `crate::capture`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LateCommits {
    /// By transaction id (the default): each run re-reads rows written by
    /// transactions the previous run's snapshot did not see, whatever their
    /// cursor values. Costs one sequential scan of the source table per run
    /// when the site's server assigned any transaction id since the last
    /// run (measured by `hubsync bench`, scenario `late_commit_scan`).
    Xid,
    /// Only by the `cursor_lag` overlap and the source's clock (what other
    /// dialects do): no scan, but a transaction open longer than the lag
    /// that commits older cursor values is missed until a `reset`.
    Lag,
}

/// How rows deleted at the source (without a soft-delete flag) reach the
/// target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deletes {
    /// Hard deletes at the source are not looked for (the default): a
    /// cursor read cannot see a row that is gone.
    Ignore,
    /// After each run of the stream, the source's and target's primary-key
    /// sets are compared chunk by chunk (a hash per key range) and target
    /// rows whose key is no longer at the source are deleted (for a pull,
    /// only rows of that site). See `flow/reconcile.rs`.
    Detect,
}

/// Where a stream reads from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A table (`table` or `schema.table`), names quoted as written.
    Table(String),
    /// A query; `:site.<tag>` placeholders are bound per site.
    Query(String),
}

/// One table-level movement inside a flow.
#[derive(Clone, Debug)]
pub struct Stream {
    /// Unique within the flow; keys the checkpoints (defaults to `target`).
    pub name: String,
    /// What is read (at the site for a pull, at the master for a push).
    pub source: Source,
    /// Table written (at the master for a pull, at the site for a push).
    pub target: String,
    /// Target key columns (target names), without the `site_column`.
    pub primary_key: Vec<String>,
    /// Source column whose increasing value marks progress.
    pub cursor: String,
    /// Pull only: master column that receives the site id.
    pub site_column: Option<String>,
    /// Overlap re-read every run below the checkpoint's cursor, so rows
    /// committed late with an older cursor value still arrive (time cursors
    /// only; default 5 s; zero disables).
    pub cursor_lag: Duration,
    /// What a row the target refuses does: stop the stream (default) or go
    /// to the master's quarantine table while the rest of the batch is
    /// applied.
    pub on_error: OnError,
    /// What a MySQL zero date read from the source becomes (default: an
    /// error before the batch is written).
    pub zero_dates: ZeroDates,
    /// Rows with a NULL cursor: read every run (default) or skipped.
    pub null_cursors: NullCursors,
    /// Late commits on PostgreSQL table pulls: by transaction id (default)
    /// or by the lag only.
    pub late_commits: LateCommits,
    /// Create the target table from the source's columns when it is
    /// missing (mapped types, `NOT NULL` key, primary key on the conflict
    /// key; see `dialect/types.rs`).
    pub create_target: bool,
    /// Source columns holding booleans as 0/1 integers (MySQL `TINYINT(1)`,
    /// signed or not, which is otherwise a small integer): read as booleans, any other
    /// value stops the batch naming it; `create_target` makes them boolean.
    pub booleans: Vec<String>,
    /// `(target column, source column)` pairs; `None` copies every source
    /// column to the target column of the same name.
    pub columns: Option<Vec<(String, String)>>,
    /// Soft deletes: a source column that marks a row deleted when it is
    /// set (not NULL, not false/0; see `Value::marks_deleted`). Such a row
    /// is deleted at the target instead of written.
    pub delete_column: Option<String>,
    /// Whether hard deletes are detected by key comparison.
    pub deletes: Deletes,
    /// With `deletes = "detect"`: compare only rows whose cursor is within
    /// this long of the source's clock (sites purge old history); `None`
    /// compares every row.
    pub deletes_window: Option<Duration>,
    /// Pull only: extra targets in `[[system]]` databases, written before
    /// the master (see [`Route`]).
    pub routes: Vec<Route>,
    /// Push only: a CEL predicate over the master row (`row`) and the site
    /// (`site.id`, `site.tags.<tag>`, `run`): a site receives a row when it
    /// is true, on top of the `:site.<tag>` params of `query`. `None`:
    /// every row read.
    pub when: Option<String>,
    /// Computed target columns: `(target column, CEL expression)` pairs,
    /// in target-name order (see `mediate::expr`); checked against the
    /// source's columns when a run or `hubsync check` describes it.
    pub compute: Vec<(String, String)>,
    /// A CEL predicate over the source row: a row for which it is false is
    /// not written (its cursor still advances the checkpoint).
    pub filter: Option<String>,
}

impl Stream {
    /// Source column feeding target column `target_column`.
    pub fn source_column<'a>(&'a self, target_column: &'a str) -> &'a str {
        source_column_of(&self.columns, target_column)
    }

    /// Source columns of the keyset: the cursor, then the primary key.
    pub fn keyset_source_columns(&self) -> Vec<String> {
        let mut keyset = vec![self.cursor.clone()];
        for key in &self.primary_key {
            keyset.push(self.source_column(key).to_string());
        }
        keyset
    }

    /// Source columns read by the stream's `compute` and `filter`
    /// expressions (`row.<name>`), in first-use order; a syntax error
    /// (refused when the config is loaded) reads none.
    pub fn expression_columns(&self) -> Vec<String> {
        let mut columns: Vec<String> = Vec::new();
        let texts = self.compute.iter().map(|(_, e)| e).chain(&self.filter);
        for text in texts {
            for column in crate::mediate::expr::referenced_columns(text).unwrap_or_default() {
                if !columns.contains(&column) {
                    columns.push(column);
                }
            }
        }
        columns
    }

    /// Source columns to select, or `None` for `*` (no `columns` mapping;
    /// or a `when`, or a route with a `when` or its own `columns`, which may
    /// read any source column: the read serves every target). Always
    /// includes the keyset columns and the columns the stream's
    /// expressions read.
    pub fn select_columns(&self) -> Option<Vec<String>> {
        if self.when.is_some()
            || self
                .routes
                .iter()
                .any(|route| route.when.is_some() || route.stream.columns != self.columns)
        {
            return None;
        }
        let pairs = self.columns.as_ref()?;
        let mut selected: Vec<String> = Vec::new();
        for (_, source) in pairs {
            if !selected.contains(source) {
                selected.push(source.clone());
            }
        }
        for column in self
            .keyset_source_columns()
            .into_iter()
            .chain(self.delete_column.clone())
            .chain(self.expression_columns())
        {
            if !selected.contains(&column) {
                selected.push(column);
            }
        }
        Some(selected)
    }
}

impl Config {
    /// Reads and validates the config file at `path`. Relative SQLite paths
    /// resolve against the file's folder, made absolute from the current
    /// directory.
    ///
    /// Errors: a [`ConfigError`] listing every problem (unreadable file, TOML
    /// syntax with line and column, unknown keys, unset `${VAR}`, invalid
    /// values), each naming its place.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            problems: vec![format!(
                "cannot read the file: {e}; pass another with `--config PATH` or run `hubsync demo` to get an example"
            )],
        })?;
        // Relative SQLite paths resolve against the config file's folder,
        // made absolute so messages show `sqlite:///srv/hub/s1.db`, not
        // `sqlite://./s1.db` (symlinks are kept as written).
        let absolute_path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let base_dir = absolute_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let base_dir = if base_dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base_dir
        };
        Config::parse(&text, path, &base_dir, &|name| std::env::var(name).ok())
    }

    /// Parses and validates config text. `path` is only used in messages;
    /// `base_dir` resolves relative SQLite paths; `lookup` resolves `${VAR}`.
    pub fn parse(
        text: &str,
        path: &Path,
        base_dir: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let fail = |problems: Vec<String>| ConfigError {
            path: path.to_path_buf(),
            problems,
        };
        // Structure first, straight from the text, so that unknown keys and
        // wrong types are reported with their line and column.
        toml::from_str::<RawConfig>(text)
            .map_err(|e| fail(vec![one_line_toml_error(&e.to_string())]))?;
        let mut document: toml::Value =
            toml::from_str(text).map_err(|e| fail(vec![one_line_toml_error(&e.to_string())]))?;
        let mut problems = Vec::new();
        env::interpolate_tree(&mut document, "", lookup, &mut problems);
        if !problems.is_empty() {
            return Err(fail(problems));
        }
        let raw: RawConfig = RawConfig::deserialize(document)
            .map_err(|e| fail(vec![one_line_toml_error(&e.to_string())]))?;
        let config = validate(raw, path, base_dir, &mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(fail(problems))
        }
    }

    /// The flow named `name`.
    pub fn flow(&self, name: &str) -> Option<&Flow> {
        self.flows.iter().find(|f| f.name == name)
    }

    /// The site with id `id`.
    pub fn site(&self, id: &str) -> Option<&Site> {
        self.sites.iter().find(|s| s.id == id)
    }

    /// Flows chained after `flow` (`after = "<flow>"`), in config order.
    pub fn flows_after(&self, flow: &str) -> impl Iterator<Item = &Flow> {
        self.flows
            .iter()
            .filter(move |f| f.after.as_deref() == Some(flow))
    }

    /// The `[[system]]` named `name`.
    pub fn system(&self, name: &str) -> Option<&System> {
        self.systems.iter().find(|s| s.name == name)
    }

    /// The data service named `name`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// toml's messages span several lines with a source excerpt; keep them but
/// indent continuation lines so a problem list stays readable.
fn one_line_toml_error(message: &str) -> String {
    message.trim_end().replace('\n', "\n    ")
}

fn validate(raw: RawConfig, path: &Path, base_dir: &Path, problems: &mut Vec<String>) -> Config {
    let positive =
        |value: Option<usize>, key: &str, default: usize, problems: &mut Vec<String>| match value {
            Some(0) => {
                problems.push(format!("`hub.{key}` must be at least 1"));
                default
            }
            Some(v) => v,
            None => default,
        };
    let connect_timeout = match &raw.hub.connect_timeout {
        Some(text) => humantime::parse_duration(text).unwrap_or_else(|e| {
            problems.push(format!(
                "`hub.connect_timeout` `{text}`: {e} (example: `10s`)"
            ));
            Duration::from_secs(10)
        }),
        None => Duration::from_secs(10),
    };
    let statement_timeout = parse_timeout(
        raw.hub.statement_timeout.as_deref(),
        "`hub.statement_timeout`",
        problems,
    )
    .unwrap_or(Some(DEFAULT_STATEMENT_TIMEOUT));
    let (lease_period, lease_heartbeat) = lease_times(&raw.hub, problems);
    let hub = HubConfig {
        max_concurrent_sites: positive(
            raw.hub.max_concurrent_sites,
            "max_concurrent_sites",
            32,
            problems,
        ),
        master_write_concurrency: positive(
            raw.hub.master_write_concurrency,
            "master_write_concurrency",
            4,
            problems,
        ),
        batch_size: positive(raw.hub.batch_size, "batch_size", 10_000, problems),
        connect_timeout,
        site_idle_timeout: match &raw.hub.site_idle_timeout {
            Some(text) => humantime::parse_duration(text).unwrap_or_else(|e| {
                problems.push(format!(
                    "`hub.site_idle_timeout` `{text}`: {e} (example: `10m`, or `0s` to close each site connection after its run)"
                ));
                DEFAULT_SITE_IDLE_TIMEOUT
            }),
            None => DEFAULT_SITE_IDLE_TIMEOUT,
        },
        statement_timeout,
        connect_retries: raw.hub.connect_retries.unwrap_or(2),
        circuit_breaker_failures: raw.hub.circuit_breaker_failures.unwrap_or(3),
        circuit_breaker_cooldown: match &raw.hub.circuit_breaker_cooldown {
            Some(text) => humantime::parse_duration(text).unwrap_or_else(|e| {
                problems.push(format!(
                    "`hub.circuit_breaker_cooldown` `{text}`: {e} (example: `1m`)"
                ));
                Duration::from_secs(60)
            }),
            None => Duration::from_secs(60),
        },
        run_history_days: raw.hub.run_history_days.unwrap_or(30),
        max_rows_per_second: match raw.hub.max_rows_per_second {
            Some(0) => {
                problems.push(
                    "`hub.max_rows_per_second` must be at least 1; leave it out for no limit"
                        .into(),
                );
                None
            }
            rate => rate.and_then(std::num::NonZeroU32::new),
        },
        leases: raw.hub.leases.unwrap_or(false),
        replica_id: match raw.hub.replica_id.as_deref().map(str::trim) {
            Some("") => {
                problems.push("`hub.replica_id` is empty; leave it out for `host/pid`".into());
                None
            }
            other => other.map(str::to_string),
        },
        lease_period,
        lease_heartbeat,
    };

    let master = match raw.master {
        Some(db) => DbUrl::parse(&db.url, db.password, base_dir).unwrap_or_else(|e| {
            problems.push(format!("`master.url`: {e}"));
            DbUrl::Sqlite {
                path: PathBuf::new(),
            }
        }),
        None => {
            problems.push("no `[master]` section; add `[master] url = \"postgres://...\"`".into());
            DbUrl::Sqlite {
                path: PathBuf::new(),
            }
        }
    };

    let mut sites = Vec::new();
    let mut site_ids = HashSet::new();
    for raw_site in raw.site {
        let place = format!("site `{}`", raw_site.id);
        if raw_site.id.trim().is_empty() {
            problems.push("a `[[site]]` has an empty `id`".into());
        } else if !site_ids.insert(raw_site.id.clone()) {
            problems.push(format!("{place}: duplicate site id"));
        }
        match DbUrl::parse(&raw_site.url, raw_site.password, base_dir) {
            Ok(url) => {
                let statement_timeout = parse_timeout(
                    raw_site.statement_timeout.as_deref(),
                    &format!("{place}: `statement_timeout`"),
                    problems,
                );
                let timezone = raw_site.tags.get("timezone").and_then(|name| {
                    schedule::parse_timezone(name)
                        .map_err(|e| problems.push(format!("{place}: tag `timezone`: {e}")))
                        .ok()
                });
                sites.push(Site {
                    id: raw_site.id,
                    url,
                    statement_timeout,
                    tags: raw_site.tags,
                    timezone,
                })
            }
            Err(e) => problems.push(format!("{place}: `url`: {e}")),
        }
    }

    let systems = routes::validate_systems(raw.system, base_dir, problems);
    let inventory = raw
        .inventory
        .and_then(|raw_inventory| routes::validate_inventory(raw_inventory, base_dir, problems));
    let mut flows = Vec::new();
    let mut flow_names = HashSet::new();
    for (flow_index, raw_flow) in raw.flow.into_iter().enumerate() {
        // An empty name cannot name its place; the key path can.
        let place = if raw_flow.name.trim().is_empty() {
            problems.push(format!(
                "flow[{flow_index}]: `name` is empty; give the flow a unique name (it keys the checkpoints and `--flow`)"
            ));
            format!("flow[{flow_index}]")
        } else {
            if !flow_names.insert(raw_flow.name.clone()) {
                problems.push(format!("flow `{}`: duplicate flow name", raw_flow.name));
            }
            format!("flow `{}`", raw_flow.name)
        };
        let direction = match raw_flow.direction.as_str() {
            "pull" => Direction::Pull,
            "push" => Direction::Push,
            other => {
                problems.push(format!(
                    "{place}: unknown direction `{other}`; use `pull` (sites -> master) or `push` (master -> sites)"
                ));
                Direction::Pull
            }
        };
        let schedule = match &raw_flow.schedule {
            Some(text) => match Schedule::parse(text, raw_flow.timezone.as_deref()) {
                Ok(s) => Some(s),
                Err(e) => {
                    problems.push(format!("{place}: `schedule`: {e}"));
                    None
                }
            },
            None => {
                if raw_flow.timezone.is_some() && raw_flow.window.is_none() {
                    problems.push(format!(
                        "{place}: `timezone` is set but there is no `schedule` or `window`"
                    ));
                }
                None
            }
        };
        let timezone = raw_flow.timezone.as_deref().and_then(|name| {
            schedule::parse_timezone(name)
                .map_err(|e| {
                    if schedule.is_none() && raw_flow.schedule.is_none() {
                        problems.push(format!("{place}: `timezone`: {e}"));
                    }
                })
                .ok()
        });
        let window = raw_flow.window.as_deref().and_then(|text| {
            SyncWindow::parse(text)
                .map_err(|e| problems.push(format!("{place}: `window`: {e}")))
                .ok()
        });
        let splay = match &raw_flow.splay {
            None => None,
            Some(text) => match humantime::parse_duration(text) {
                Err(e) => {
                    problems.push(format!(
                        "{place}: `splay` `{text}`: {e} (examples: `30s`, `4m`)"
                    ));
                    None
                }
                Ok(splay) => match &schedule {
                    None if raw_flow.schedule.is_none() => {
                        problems.push(format!(
                            "{place}: `splay` spreads scheduled passes; it needs a `schedule`"
                        ));
                        None
                    }
                    Some(Schedule::Every(interval)) if splay >= *interval => {
                        problems.push(format!(
                            "{place}: `splay` `{text}` must be shorter than the schedule's interval ({}), or passes would overlap",
                            humantime::format_duration(*interval)
                        ));
                        None
                    }
                    _ => Some(splay).filter(|s| !s.is_zero()),
                },
            },
        };
        if raw_flow.stream.is_empty() {
            problems.push(format!(
                "{place}: no streams; add at least one `[[flow.stream]]`"
            ));
        }
        let mut streams = Vec::new();
        let mut stream_names = HashSet::new();
        for (stream_index, mut raw_stream) in raw_flow.stream.into_iter().enumerate() {
            let name = raw_stream
                .name
                .clone()
                .unwrap_or_else(|| raw_stream.target.clone());
            let stream_place = if name.trim().is_empty() {
                format!("{place} stream[{stream_index}]")
            } else {
                format!("{place} stream `{name}`")
            };
            if raw_stream
                .name
                .as_deref()
                .is_some_and(|given| given.trim().is_empty())
            {
                problems.push(format!(
                    "{stream_place}: `name` is empty; set a name unique in this flow, or remove the key to use `target`"
                ));
            } else if !name.trim().is_empty() && !stream_names.insert(name.clone()) {
                problems.push(format!(
                    "{stream_place}: duplicate stream name in this flow; set a distinct `name` (it keys the checkpoints)"
                ));
            }
            let raw_routes = std::mem::take(&mut raw_stream.route);
            if let Some(mut stream) =
                validate_stream(raw_stream, name, direction, &stream_place, &sites, problems)
            {
                stream.routes = routes::validate_routes(
                    raw_routes,
                    &stream,
                    direction,
                    &systems,
                    &stream_place,
                    problems,
                );
                streams.push(stream);
            }
        }
        let on = events::validate_handlers(raw_flow.on, &place, problems);
        flows.push(Flow {
            name: raw_flow.name,
            direction,
            schedule,
            timezone,
            splay,
            window,
            streams,
            after: raw_flow.after,
            on,
        });
    }
    check_pulled_and_pushed(&flows, problems);
    check_detected_targets(&flows, problems);
    let api = raw.api.map(|raw_api| api::validate_api(raw_api, problems));
    let services = service::validate_services(raw.service, &sites, problems);
    events::check_references(&flows, &services, problems);

    Config {
        path: path.to_path_buf(),
        hub,
        master,
        sites,
        flows,
        api,
        services,
        systems,
        inventory,
    }
}

fn validate_stream(
    raw: RawStream,
    name: String,
    direction: Direction,
    place: &str,
    sites: &[Site],
    problems: &mut Vec<String>,
) -> Option<Stream> {
    let before = problems.len();
    let source = match (raw.source, raw.query) {
        (Some(table), None) => Source::Table(table),
        (None, Some(query)) => Source::Query(query),
        (Some(_), Some(_)) => {
            problems.push(format!(
                "{place}: set either `source` (a table) or `query`, not both"
            ));
            return None;
        }
        (None, None) => {
            problems.push(format!(
                "{place}: no `source` table or `query`; say what to read"
            ));
            return None;
        }
    };
    match &source {
        Source::Table(table) if table.trim().is_empty() => problems.push(format!(
            "{place}: `source` is empty; name the table to read, e.g. `source = \"sales\"`"
        )),
        Source::Query(query) if query.trim().is_empty() => problems.push(format!(
            "{place}: `query` is empty; write the SELECT that reads the rows, or use `source` for a whole table"
        )),
        _ => {}
    }
    if raw.target.trim().is_empty() {
        problems.push(format!(
            "{place}: `target` is empty; name the table to write, e.g. `target = \"sales\"`"
        ));
    }
    if raw.primary_key.is_empty() {
        problems.push(format!(
            "{place}: no `primary_key`; list the target's key columns, e.g. `primary_key = [\"id\"]`"
        ));
    }
    check_primary_key_names(&raw.primary_key, place, problems);
    let cursor = match raw.cursor {
        Some(cursor) if cursor.trim().is_empty() => {
            problems.push(format!(
                "{place}: `cursor` is empty; name the column whose increasing value marks progress, e.g. `cursor = \"updated_at\"`"
            ));
            cursor
        }
        Some(cursor) => cursor,
        None => {
            problems.push(format!(
                "{place}: no `cursor`; name the column whose increasing value marks progress, e.g. `cursor = \"updated_at\"`"
            ));
            String::new()
        }
    };
    match (direction, &raw.site_column) {
        (Direction::Pull, None) => problems.push(format!(
            "{place}: a pull stream needs `site_column`, the master column that receives the site id \
             (rows from different sites with the same key would overwrite each other)"
        )),
        (Direction::Push, Some(_)) => problems.push(format!(
            "{place}: `site_column` applies to pull streams only; route push rows with `:site.<tag>` in `query`"
        )),
        (Direction::Pull, Some(column)) if column.trim().is_empty() => problems.push(format!(
            "{place}: `site_column` is empty; name the master column that receives the site id, e.g. `site_column = \"store_id\"`"
        )),
        (Direction::Pull, Some(column)) if raw.primary_key.contains(column) => problems.push(format!(
            "{place}: `site_column` `{column}` is added to the key automatically; remove it from `primary_key`"
        )),
        _ => {}
    }
    let columns = raw
        .columns
        .map(|map| map.into_iter().collect::<Vec<(String, String)>>());
    if let Some(pairs) = &columns {
        for key in &raw.primary_key {
            if !pairs.iter().any(|(target, _)| target == key) {
                problems.push(format!(
                    "{place}: primary key column `{key}` is not in `columns`; map it, e.g. `{key} = \"{key}\"`"
                ));
            }
        }
        if let Some(site_column) = &raw.site_column
            && pairs.iter().any(|(target, _)| target == site_column)
        {
            problems.push(format!(
                "{place}: `site_column` `{site_column}` is filled with the site id; remove it from `columns`"
            ));
        }
    }
    if let Source::Query(query) = &source {
        // Every site must be able to fill every placeholder. The query's
        // dialect is the one it runs in (sites may mix them): PostgreSQL's
        // lexer first, MySQL's (backslash escapes, `#` comments) if that
        // one cannot read it.
        match bind_site_placeholders(query, Dialect::Postgres, 1)
            .or_else(|e| bind_site_placeholders(query, Dialect::MySql, 1).map_err(|_| e))
        {
            Ok(bound) => {
                let needed: BTreeSet<&String> = bound.params.iter().collect();
                for site in sites {
                    for attribute in &needed {
                        if site.attribute(attribute).is_none() {
                            problems.push(format!(
                                "{place}: site `{}` has no tag `{attribute}` used by `:site.{attribute}` in `query`; add it to the site's `tags`",
                                site.id
                            ));
                        }
                    }
                }
            }
            Err(e) => problems.push(format!("{place}: `query`: {e}")),
        }
    }
    let on_error = match raw.on_error.as_deref() {
        None | Some("stop") => OnError::Stop,
        Some("quarantine") => OnError::Quarantine,
        Some(other) => {
            problems.push(format!(
                "{place}: unknown `on_error` `{other}`; use `stop` or `quarantine`"
            ));
            OnError::Stop
        }
    };
    let zero_dates = match raw.zero_dates.as_deref() {
        None | Some("error") => ZeroDates::Error,
        Some("null") => ZeroDates::Null,
        Some(other) => {
            problems.push(format!(
                "{place}: unknown `zero_dates` `{other}`; use `error` or `null`"
            ));
            ZeroDates::Error
        }
    };
    let null_cursors = match raw.null_cursors.as_deref() {
        None | Some("read") => NullCursors::Read,
        Some("skip") => NullCursors::Skip,
        Some(other) => {
            problems.push(format!(
                "{place}: unknown `null_cursors` `{other}`; use `read` or `skip`"
            ));
            NullCursors::Read
        }
    };
    let late_commits = match raw.late_commits.as_deref() {
        None | Some("xid") => LateCommits::Xid,
        Some("lag") => LateCommits::Lag,
        Some(other) => {
            problems.push(format!(
                "{place}: unknown `late_commits` `{other}`; use `xid` or `lag`"
            ));
            LateCommits::Xid
        }
    };
    let cursor_lag = match &raw.cursor_lag {
        Some(text) => humantime::parse_duration(text).unwrap_or_else(|e| {
            problems.push(format!(
                "{place}: `cursor_lag` `{text}`: {e} (examples: `5s`, `2m`, `0s` to disable)"
            ));
            DEFAULT_CURSOR_LAG
        }),
        None => DEFAULT_CURSOR_LAG,
    };
    if let Some(column) = &raw.delete_column {
        if column.trim().is_empty() {
            problems.push(format!(
                "{place}: `delete_column` is empty; name the source column that marks a row deleted, e.g. `delete_column = \"deleted\"`"
            ));
        } else if *column == cursor {
            problems.push(format!(
                "{place}: `delete_column` `{column}` is also the `cursor`; the cursor must be the column that changes when a row is deleted (e.g. `updated_at`)"
            ));
        } else if raw
            .primary_key
            .iter()
            .any(|key| source_column_of(&columns, key) == column.as_str())
        {
            problems.push(format!(
                "{place}: `delete_column` `{column}` is a primary key column; name the flag column (e.g. `deleted`)"
            ));
        }
    }
    let deletes = match raw.deletes.as_deref() {
        None | Some("ignore") => Deletes::Ignore,
        Some("detect") => Deletes::Detect,
        Some(other) => {
            problems.push(format!(
                "{place}: unknown `deletes` `{other}`; use `ignore` (the default) or `detect`"
            ));
            Deletes::Ignore
        }
    };
    if raw.deletes_window.is_some()
        && let Some(pairs) = &columns
        && !pairs.iter().any(|(_, source)| *source == cursor)
    {
        problems.push(format!(
            "{place}: `deletes_window` compares rows by the cursor on both sides, but `columns` does not copy the cursor `{cursor}` to the target; map it, e.g. `{cursor} = \"{cursor}\"`"
        ));
    }
    let deletes_window = match &raw.deletes_window {
        Some(_) if deletes != Deletes::Detect => {
            problems.push(format!(
                "{place}: `deletes_window` applies only with `deletes = \"detect\"`"
            ));
            None
        }
        Some(text) => match humantime::parse_duration(text) {
            Ok(window) if window.is_zero() => {
                problems.push(format!(
                    "{place}: `deletes_window` is zero; leave it out to compare every row, or give a span like `30d`"
                ));
                None
            }
            Ok(window) => Some(window),
            Err(e) => {
                problems.push(format!(
                    "{place}: `deletes_window` `{text}`: {e} (examples: `30d`, `12h`)"
                ));
                None
            }
        },
        None => None,
    };
    let (compute, filter) = validate_transforms(
        raw.compute,
        raw.filter,
        &TransformRules {
            place,
            primary_key: &raw.primary_key,
            site_column: raw.site_column.as_deref(),
            columns: columns.as_deref(),
            create_target: raw.create_target.unwrap_or(false),
        },
        problems,
    );
    if problems.len() > before {
        return None;
    }
    Some(Stream {
        name,
        source,
        target: raw.target,
        primary_key: raw.primary_key,
        cursor,
        site_column: raw.site_column,
        cursor_lag,
        on_error,
        zero_dates,
        null_cursors,
        late_commits,
        create_target: raw.create_target.unwrap_or(false),
        booleans: raw.booleans.unwrap_or_default(),
        columns,
        delete_column: raw.delete_column,
        deletes,
        deletes_window,
        routes: Vec::new(),
        when: routes::validate_push_when(raw.when, direction, place, problems),
        compute,
        filter,
    })
}

/// What the `compute` and `filter` of a stream are checked against.
struct TransformRules<'a> {
    place: &'a str,
    primary_key: &'a [String],
    site_column: Option<&'a str>,
    columns: Option<&'a [(String, String)]>,
    create_target: bool,
}

/// Checks a stream's `compute` and `filter` before any database is
/// reached: CEL syntax, and target columns that may not be computed (a
/// key column, the `site_column`, a `columns` target). Types and source
/// columns are checked against the described source (`mediate::expr`).
fn validate_transforms(
    compute: Option<BTreeMap<String, String>>,
    filter: Option<String>,
    rules: &TransformRules<'_>,
    problems: &mut Vec<String>,
) -> (Vec<(String, String)>, Option<String>) {
    let place = rules.place;
    let compute: Vec<(String, String)> = compute.unwrap_or_default().into_iter().collect();
    if rules.create_target && !compute.is_empty() {
        problems.push(format!(
            "{place}: `create_target` cannot type computed columns; create the target table yourself, or drop `compute`"
        ));
    }
    for (target, text) in &compute {
        let why = if rules.primary_key.contains(target) {
            Some(
                "is a primary key column, which must be copied from the source (the checkpoint's keyset reads it there)",
            )
        } else if rules.site_column == Some(target.as_str()) {
            Some("is the `site_column`, which receives the site id")
        } else if rules
            .columns
            .is_some_and(|pairs| pairs.iter().any(|(t, _)| t == target))
        {
            Some("is also mapped in `columns`; keep one of the two")
        } else {
            None
        };
        if let Some(why) = why {
            problems.push(format!(
                "{place}: `compute.{target}`: column `{target}` {why}"
            ));
        }
        if let Err(e) = crate::mediate::expr::referenced_columns(text) {
            problems.push(format!(
                "{place}: `compute.{target}`: expression `{text}`: {e}"
            ));
        }
    }
    if let Some(text) = &filter
        && let Err(e) = crate::mediate::expr::referenced_columns(text)
    {
        problems.push(format!("{place}: `filter`: expression `{text}`: {e}"));
    }
    (compute, filter)
}

/// `deletes = "detect"` deletes every target row its own source lacks, so
/// its target must be written by no other stream of the same direction
/// (their rows would be deleted each run).
fn check_detected_targets(flows: &[Flow], problems: &mut Vec<String>) {
    let streams: Vec<(&Flow, &Stream)> = flows
        .iter()
        .flat_map(|flow| flow.streams.iter().map(move |stream| (flow, stream)))
        .collect();
    for (flow, stream) in &streams {
        if stream.deletes != Deletes::Detect {
            continue;
        }
        for (other_flow, other) in &streams {
            if std::ptr::eq(*other, *stream)
                || other_flow.direction != flow.direction
                || other.target != stream.target
            {
                continue;
            }
            problems.push(format!(
                "flow `{}` stream `{}`: `deletes = \"detect\"` deletes the target rows its own source lacks, \
                 but flow `{}` stream `{}` also writes `{}`: its rows would be deleted every run; \
                 detect deletes only on a target one stream writes",
                flow.name, stream.name, other_flow.name, other.name, stream.target
            ));
        }
    }
}

/// The source column feeding target column `target` under `columns`.
fn source_column_of<'a>(columns: &'a Option<Vec<(String, String)>>, target: &'a str) -> &'a str {
    columns
        .as_ref()
        .and_then(|pairs| pairs.iter().find(|(t, _)| t == target))
        .map_or(target, |(_, source)| source.as_str())
}

/// `primary_key` names each column once and names no empty column: a
/// repeated key column would repeat the column in the upsert's conflict key
/// and the keyset.
fn check_primary_key_names(primary_key: &[String], place: &str, problems: &mut Vec<String>) {
    if primary_key.iter().any(|column| column.trim().is_empty()) {
        problems.push(format!(
            "{place}: `primary_key` has an empty column name; list the target's key columns, e.g. `primary_key = [\"id\"]`"
        ));
    }
    let mut seen = HashSet::new();
    let mut reported = HashSet::new();
    for column in primary_key {
        if column.trim().is_empty() {
            continue;
        }
        if !seen.insert(column.as_str()) && reported.insert(column.as_str()) {
            problems.push(format!(
                "{place}: `primary_key` lists `{column}` more than once; list each key column once"
            ));
        }
    }
}

/// The name a table is compared by in [`check_pulled_and_pushed`]: without
/// the default schema a dialect adds when none is written (`public.` on
/// PostgreSQL, `main.` on SQLite), so `public.sales` and `sales` are one
/// table. Other schemas stay: `staging.sales` is another table.
fn table_identity(table: &str) -> &str {
    table
        .strip_prefix("public.")
        .or_else(|| table.strip_prefix("main."))
        .unwrap_or(table)
}

/// A table may not be both pulled and pushed: at the master (pull target vs
/// push source) or at the sites (pull source vs push target). Names are
/// compared by [`table_identity`].
fn check_pulled_and_pushed(flows: &[Flow], problems: &mut Vec<String>) {
    let mut master_written = BTreeMap::new();
    let mut site_read = BTreeMap::new();
    for flow in flows.iter().filter(|f| f.direction == Direction::Pull) {
        for stream in &flow.streams {
            master_written.insert(
                table_identity(&stream.target).to_string(),
                (&flow.name, &stream.name),
            );
            if let Source::Table(table) = &stream.source {
                site_read.insert(
                    table_identity(table).to_string(),
                    (&flow.name, &stream.name),
                );
            }
        }
    }
    for flow in flows.iter().filter(|f| f.direction == Direction::Push) {
        for stream in &flow.streams {
            if let Source::Table(table) = &stream.source
                && let Some((pull_flow, pull_stream)) = master_written.get(table_identity(table))
            {
                problems.push(format!(
                    "flow `{}` stream `{}`: master table `{table}` is pushed but also pulled by flow `{pull_flow}` stream `{pull_stream}`; a table may move one way only",
                    flow.name, stream.name
                ));
            }
            if let Some((pull_flow, pull_stream)) = site_read.get(table_identity(&stream.target)) {
                problems.push(format!(
                    "flow `{}` stream `{}`: site table `{}` is pushed but also pulled by flow `{pull_flow}` stream `{pull_stream}`; a table may move one way only",
                    flow.name, stream.name, stream.target
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(
            text,
            Path::new("hubsync.toml"),
            Path::new("/cfg"),
            &|name| (name == "PW").then(|| "p@ss:/%".to_string()),
        )
    }

    const MINIMAL: &str = r#"
        [master]
        url = "sqlite://master.db"
        [[site]]
        id = "s1"
        url = "sqlite://s1.db"
        tags = { price_zone = "A" }
    "#;

    #[test]
    fn lease_keys_default_and_are_checked() {
        let parse = |hub: &str| {
            let text = format!("[hub]\n{hub}\n[master]\nurl = \"sqlite://m.db\"\n");
            Config::parse(&text, Path::new("h.toml"), Path::new("/cfg"), &|_| None)
        };
        let config = parse("").unwrap();
        assert!(!config.hub.leases);
        assert_eq!(config.hub.replica_id, None);
        assert_eq!(config.hub.lease_period, Duration::from_secs(30));
        assert_eq!(config.hub.lease_heartbeat, Duration::from_secs(10));
        // A short lease: the heartbeat defaults to a third of it.
        let short = parse("leases = true\nlease_seconds = 1.5").unwrap();
        assert_eq!(short.hub.lease_heartbeat, Duration::from_millis(500));
        let error = parse("lease_seconds = 4\nheartbeat_seconds = 3\nreplica_id = \" \"")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(
                "`hub.heartbeat_seconds` (3) must be at most half of `hub.lease_seconds` (4): \
                 a lease must survive one late renewal"
            ),
            "{error}"
        );
        assert!(
            error.contains("`hub.replica_id` is empty; leave it out for `host/pid`"),
            "{error}"
        );
        let error = parse("lease_seconds = 0").unwrap_err().to_string();
        assert!(
            error.contains(
                "`hub.lease_seconds` is 0; give a number of seconds above 0 and below 86400"
            ),
            "{error}"
        );
    }

    #[test]
    fn reference_config_parses() {
        let text = include_str!("../../docs/hubsync.reference.toml");
        let config = Config::parse(text, Path::new("ref.toml"), Path::new("/cfg"), &|name| {
            Some(match name {
                "ERP_WEBHOOK_SECRET" => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string(),
                _ => format!("value-of-{name}"),
            })
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!config.flows.is_empty());
        let sales = config.flow("sales").expect("flow sales");
        assert_eq!(sales.on.len(), 3);
        assert_eq!(sales.on[2].name, "on[2]");
        assert_eq!(
            config.flow("store_totals").unwrap().after.as_deref(),
            Some("sales")
        );
        assert!(config.flows.iter().any(|f| f.direction == Direction::Push));
        let api = config.api.as_ref().expect("[api] in the reference");
        assert_eq!(api.listen.to_string(), "127.0.0.1:7070");
        assert_eq!(api.tokens.len(), 2);
        assert_eq!(api.tokens[1].role, Role::Operate);
        assert_eq!(config.hub.run_history_days, 30);
        assert!(config.hub.leases);
        assert_eq!(config.hub.replica_id.as_deref(), Some("value-of-HOSTNAME"));
        assert_eq!(config.hub.lease_period, Duration::from_secs(30));
        assert_eq!(config.hub.lease_heartbeat, Duration::from_secs(10));
        let stock = config.service("stock").expect("service stock");
        assert_eq!(stock.on, ServiceTarget::Site);
        assert_eq!(stock.operation("recount").unwrap().params.len(), 2);
        assert_eq!(config.service("reports").unwrap().on, ServiceTarget::Master);
        assert_eq!(config.system("erp").unwrap().url.dialect(), Dialect::MySql);
        let inventory = config
            .inventory
            .as_ref()
            .expect("[inventory] in the reference");
        assert_eq!(inventory.url_columns, ["host", "db"]);
        let sales = &config.flow("sales").unwrap().streams[0];
        assert_eq!(sales.routes[0].stream.site_column.as_deref(), Some("store"));
        assert_eq!(sales.routes[0].when.as_deref(), Some("row.qty < 0"));
        assert!(config.flow("catalog").unwrap().streams[0].when.is_some());
        let payments = &config.flows[0].streams[1];
        assert_eq!(payments.compute.len(), 4);
        assert_eq!(
            payments.compute[0],
            (
                "amount".to_string(),
                "decimal(row.amount_cents) / 100".to_string()
            )
        );
        assert_eq!(
            payments.filter.as_deref(),
            Some("row.tender_type != 'training'")
        );
        // Expression columns are selected although `columns` does not map them.
        let selected = payments.select_columns().unwrap();
        assert!(
            selected.contains(&"amount_cents".to_string())
                && selected.contains(&"created_at".to_string())
        );
    }

    #[test]
    fn api_tokens_come_from_the_environment() {
        let text = format!(
            "{MINIMAL}\n[api]\nlisten = \"0.0.0.0:7070\"\n[[api.token]]\nname = \"erp\"\ntoken = \"${{OPS_TOKEN}}\"\nrole = \"operate\"\n"
        );
        let config = Config::parse(&text, Path::new("h.toml"), Path::new("/cfg"), &|name| {
            (name == "OPS_TOKEN").then(|| "0123456789abcdef-from-env".to_string())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let api = config.api.unwrap();
        assert_eq!(api.tokens[0].token.expose(), "0123456789abcdef-from-env");
        assert_eq!(api.listen.to_string(), "0.0.0.0:7070");
        let err =
            Config::parse(&text, Path::new("h.toml"), Path::new("/cfg"), &|_| None).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert!(
            err.problems[0].starts_with("`api.token[0].token`: "),
            "{err}"
        );
        assert!(err.problems[0].contains("OPS_TOKEN"), "{err}");
    }

    #[test]
    fn service_placeholders_are_checked_against_params_and_tags() {
        let text = format!(
            r#"{MINIMAL}
            [[service]]
            name = "stock"
            on = "site"
              [[service.operation]]
              name = "level"
              sql = "SELECT qty FROM stock WHERE sku = :sku AND region = :site.region"
              params = [{{ name = "store", type = "text" }}, {{ name = "n", type = "int", default = "x" }}]
            [[service]]
            name = "hq"
            on = "master"
              [[service.operation]]
              name = "who"
              sql = "SELECT :site.id"
            "#
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(
            err.problems,
            [
                "service `stock` operation `level` param `n`: `default`: expected a 64-bit integer, got `x`",
                "service `stock` operation `level`: `sql` uses `:sku` but no param `sku` is declared; add `{ name = \"sku\", type = \"text\" }` to `params`",
                "service `stock` operation `level`: `sql` uses `:site.region` but site(s) `s1` have no tag `region`",
                "service `stock` operation `level` param `store`: declared but `sql` never uses `:store`",
                "service `stock` operation `level` param `n`: declared but `sql` never uses `:n`",
                "service `hq` operation `who`: `:site.id` is only available to `on = \"site\"` services",
            ]
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_place() {
        let text = format!(
            "{MINIMAL}
            [[flow]]
            name = \"sales\"
            direction = \"both\"
              [[flow.stream]]
              source = \"sales\"
              target = \"sales\"
              cursor = \"updated_at\"
              site_column = \"store_id\"
            [[flow]]
            name = \"prices\"
            direction = \"push\"
              [[flow.stream]]
              query = \"SELECT * FROM prices WHERE region = :site.region\"
              target = \"prices\"
              primary_key = [\"sku\"]
              cursor = \"updated_at\"
            "
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(
            err.problems,
            vec![
                "flow `sales`: unknown direction `both`; use `pull` (sites -> master) or `push` (master -> sites)",
                "flow `sales` stream `sales`: no `primary_key`; list the target's key columns, e.g. `primary_key = [\"id\"]`",
                "flow `prices` stream `prices`: site `s1` has no tag `region` used by `:site.region` in `query`; add it to the site's `tags`",
            ]
        );
    }

    /// Regression: a MySQL query with a backslash-escaped quote was read
    /// with PostgreSQL's lexer only and refused as unterminated.
    #[test]
    fn mysql_queries_with_backslash_escapes_are_accepted() {
        let text = format!(
            "{MINIMAL}
            [[flow]]
            name = \"prices\"
            direction = \"push\"
              [[flow.stream]]
              query = \"SELECT * FROM prices WHERE note <> 'it\\\\'s' AND zone = :site.price_zone\"
              target = \"prices\"
              primary_key = [\"sku\"]
              cursor = \"updated_at\"
            "
        );
        let config = parse(&text).unwrap();
        assert_eq!(config.flows[0].streams.len(), 1);
        let missing = text.replace(":site.price_zone", ":site.region");
        assert_eq!(
            parse(&missing).unwrap_err().problems,
            vec![
                "flow `prices` stream `prices`: site `s1` has no tag `region` used by `:site.region` in `query`; add it to the site's `tags`"
            ]
        );
    }

    /// Regression: `primary_key = ["id", "id"]` passed validation.
    #[test]
    fn repeated_primary_key_column_is_refused() {
        let text = format!(
            "{MINIMAL}
            [[flow]]
            name = \"sales\"
            direction = \"pull\"
              [[flow.stream]]
              source = \"sales\"
              target = \"sales\"
              primary_key = [\"id\", \"line\", \"id\", \"id\"]
              cursor = \"updated_at\"
              site_column = \"store_id\"
            "
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(
            err.problems,
            vec![
                "flow `sales` stream `sales`: `primary_key` lists `id` more than once; list each key column once"
            ]
        );
    }

    /// Regression: empty or blank names passed validation and produced SQL
    /// with empty identifiers.
    #[test]
    fn empty_names_are_refused_with_their_place() {
        let text = format!(
            "{MINIMAL}
            [[flow]]
            name = \" \"
            direction = \"pull\"
              [[flow.stream]]
              name = \"\"
              source = \"  \"
              target = \"sales\"
              primary_key = [\"id\", \"\"]
              cursor = \" \"
              site_column = \"\"
            [[flow]]
            name = \"prices\"
            direction = \"push\"
              [[flow.stream]]
              query = \"\"
              target = \"\"
              primary_key = [\"sku\"]
              cursor = \"updated_at\"
            "
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(
            err.problems,
            vec![
                "flow[0]: `name` is empty; give the flow a unique name (it keys the checkpoints and `--flow`)",
                "flow[0] stream[0]: `name` is empty; set a name unique in this flow, or remove the key to use `target`",
                "flow[0] stream[0]: `source` is empty; name the table to read, e.g. `source = \"sales\"`",
                "flow[0] stream[0]: `primary_key` has an empty column name; list the target's key columns, e.g. `primary_key = [\"id\"]`",
                "flow[0] stream[0]: `cursor` is empty; name the column whose increasing value marks progress, e.g. `cursor = \"updated_at\"`",
                "flow[0] stream[0]: `site_column` is empty; name the master column that receives the site id, e.g. `site_column = \"store_id\"`",
                "flow `prices` stream[0]: `query` is empty; write the SELECT that reads the rows, or use `source` for a whole table",
                "flow `prices` stream[0]: `target` is empty; name the table to write, e.g. `target = \"sales\"`",
            ]
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let err = parse(&format!("{MINIMAL}\n[hub]\nmax_sites = 3\n")).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("unknown field `max_sites`"), "{message}");
        assert!(message.contains("line"), "{message}");
    }

    #[test]
    fn password_key_and_env_substitution() {
        let text = "[master]\nurl = \"postgres://hub@db/hq\"\npassword = \"${PW}\"\n";
        let config = parse(text).unwrap();
        match &config.master {
            DbUrl::Postgres {
                password: Some(p), ..
            } => assert_eq!(p.expose(), "p@ss:/%"),
            other => panic!("unexpected {other:?}"),
        }
        let err = parse("[master]\nurl = \"postgres://hub:${MISSING}@db/hq\"\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config `hubsync.toml`: `master.url`: environment variable `MISSING` is not set; export it or remove `${MISSING}`"
        );
    }

    #[test]
    fn a_table_moves_one_way_only() {
        let text = format!(
            "{MINIMAL}
            [[flow]]
            name = \"up\"
            direction = \"pull\"
              [[flow.stream]]
              source = \"stock\"
              target = \"stock\"
              primary_key = [\"sku\"]
              cursor = \"updated_at\"
              site_column = \"site\"
            [[flow]]
            name = \"down\"
            direction = \"push\"
              [[flow.stream]]
              source = \"catalog\"
              target = \"stock\"
              primary_key = [\"sku\"]
              cursor = \"updated_at\"
            "
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(
            err.problems,
            vec![
                "flow `down` stream `stock`: site table `stock` is pushed but also pulled by flow `up` stream `stock`; a table may move one way only"
            ]
        );
        // The default schema written out is the same table (a fresh-user
        // trial pushed into `public.sales` while pulling `sales`, and a row
        // deleted at the site came back); another schema is another table.
        let pushed_qualified = text.replacen(
            "source = \"catalog\"\n              target = \"stock\"",
            "source = \"catalog\"\n              target = \"public.stock\"",
            1,
        );
        assert_ne!(pushed_qualified, text);
        assert_eq!(
            parse(&pushed_qualified).unwrap_err().problems,
            vec![
                "flow `down` stream `public.stock`: site table `public.stock` is pushed but also pulled by flow `up` stream `stock`; a table may move one way only"
            ]
        );
        let other_schema = text.replacen(
            "source = \"catalog\"\n              target = \"stock\"",
            "source = \"catalog\"\n              target = \"staging.stock\"",
            1,
        );
        assert!(parse(&other_schema).is_ok());
    }

    #[test]
    fn columns_map_renames_and_keeps_keyset() {
        let text = format!(
            "{MINIMAL}
            [[flow]]
            name = \"sales\"
            direction = \"pull\"
              [[flow.stream]]
              source = \"pos.tickets\"
              target = \"sales\"
              primary_key = [\"sale_id\"]
              cursor = \"changed\"
              site_column = \"store_id\"
              columns = {{ sale_id = \"ticket_no\", amount = \"total\" }}
            "
        );
        let config = parse(&text).unwrap();
        let stream = &config.flows[0].streams[0];
        assert_eq!(stream.keyset_source_columns(), vec!["changed", "ticket_no"]);
        assert_eq!(
            stream.select_columns().unwrap(),
            vec!["total", "ticket_no", "changed"]
        );
    }
}
