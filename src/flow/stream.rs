//! One stream at one site: keyset capture, row mapping, apply, checkpoint.

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::error::RunError;
use super::schema::{Logical, create_table_sql, incompatibility, source_logical, target_logical};
use super::{Hub, Progress, StreamReport, SyncOptions, reconcile};
use crate::capture;
use crate::config::{
    Deletes, Direction, Flow, LateCommits, NullCursors, OnError, Site, Source, Stream,
};
use crate::connector::{Connector, ConnectorError, ErrorKind, SourceClock, TableInfo};
use crate::dialect::params::bind_site_placeholders;
use crate::dialect::{KeysetSelect, SelectFrom, UpsertSpec};
use crate::mediate::MappingPlan;
use crate::state::{Checkpoint, CheckpointKey, INTERRUPTED, StateError};
use crate::value::{Batch, Value};

/// What a stream needs that is the same for every site, found once per
/// pass: for a pull, the master target table's description.
#[derive(Clone, Debug)]
pub struct StreamPlan {
    /// The master target (pull only; a push describes each site's table).
    pub master_target: Option<TableInfo>,
}

/// Builds the plan of every stream of `flow`; a stream whose plan fails
/// carries the message, and every site's run of it fails with it.
pub async fn plan_streams(hub: &Hub, flow: &Flow) -> Vec<Result<StreamPlan, String>> {
    let mut plans = Vec::with_capacity(flow.streams.len());
    for stream in &flow.streams {
        let plan = match flow.direction {
            Direction::Push => Ok(StreamPlan {
                master_target: None,
            }),
            Direction::Pull => match hub.master().describe_table(&stream.target).await {
                Ok(Some(info)) => Ok(StreamPlan {
                    master_target: Some(info),
                }),
                // The first site's run creates it from its source's columns.
                Ok(None) if stream.create_target => Ok(StreamPlan {
                    master_target: None,
                }),
                Ok(None) => Err(format!(
                    "master table `{}` does not exist; create it with the source's columns plus `{}`, \
                     or set `create_target = true`",
                    stream.target,
                    stream.site_column.as_deref().unwrap_or("site_id")
                )),
                Err(e) => Err(format!(
                    "cannot describe master table `{}`: {e}",
                    stream.target
                )),
            },
        };
        plans.push(plan);
    }
    plans
}

/// A hex SHA-256 of everything that defines `stream` of `flow` for one site:
/// direction, source or query text, target, key, cursor, site column,
/// column mapping, the `:site.*` values bound for that site, and the
/// source's columns when all of them are copied. When it
/// changes, the stream restarts with a backfill for that site.
///
/// `source_columns` are the (name, type) pairs the source returns; they
/// count only when the stream has no `columns` mapping (then every source
/// column is copied, so a column added at the source must be backfilled).
/// `cursor_by_instant`: a SQLite date/time cursor ordered by instant
/// (`ResolvedSource::cursor_date_time`); it counts only when set, so that
/// checkpoints saved while such a cursor was ordered as stored (which
/// skipped rows) are replaced by one backfill, and no other stream's
/// fingerprint changes.
pub fn fingerprint(
    flow: &Flow,
    stream: &Stream,
    site_params: &[(String, String)],
    source_columns: &[(String, String)],
    cursor_by_instant: bool,
) -> String {
    let copied_columns = if stream.columns.is_none() {
        source_columns
    } else {
        &[]
    };
    let mut definition = serde_json::json!({
        "direction": flow.direction.as_str(),
        "source": match &stream.source {
            Source::Table(t) => format!("table:{t}"),
            Source::Query(q) => format!("query:{q}"),
        },
        "target": stream.target,
        "primary_key": stream.primary_key,
        "cursor": stream.cursor,
        "site_column": stream.site_column,
        "columns": stream.columns,
        "site_params": site_params,
        "source_columns": copied_columns,
    });
    if cursor_by_instant {
        definition["cursor_order"] = serde_json::json!("instant");
    }
    let digest = Sha256::digest(definition.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Columns written by `stream` whose source type cannot carry values into
/// the target column's type, one message each ("column `x`: source type
/// `INT4` cannot go to `date`: a number cannot become ..."). `described`:
/// the source's (name, type) pairs.
pub(crate) fn schema_problems(
    stream: &Stream,
    direction: Direction,
    source_dialect: crate::dialect::Dialect,
    described: &[(String, String)],
    target_dialect: crate::dialect::Dialect,
    target: &TableInfo,
) -> Vec<String> {
    let written: Vec<(String, String)> = match &stream.columns {
        Some(pairs) => pairs.clone(),
        None => described
            .iter()
            .filter(|(name, _)| {
                direction == Direction::Push || stream.site_column.as_ref() != Some(name)
            })
            .map(|(name, _)| (name.clone(), name.clone()))
            .collect(),
    };
    let mut problems = Vec::new();
    for (target_column, source_column) in written {
        let (Some((_, source_type)), Some(target_info)) = (
            described.iter().find(|(name, _)| *name == source_column),
            target.column(&target_column),
        ) else {
            continue;
        };
        let source = if stream.booleans.contains(&source_column) {
            Logical::Bool
        } else {
            source_logical(source_dialect, source_type)
        };
        let why = incompatibility(
            source,
            target_logical(target_dialect, &target_info.data_type),
        );
        if let Some(why) = why {
            problems.push(format!(
                "column `{target_column}`: source type `{source_type}` ({}) cannot go to `{}` ({}): {why}",
                source_dialect.name(),
                target_info.data_type,
                target_dialect.name()
            ));
        }
    }
    problems
}

/// When the database refuses a batch, finds the first row it refuses, by
/// applying the rows one by one under savepoints in a transaction that is
/// rolled back, and names it: "row (store_id, id) = (s1, 7): <error>".
/// Returns the batch's error unchanged if it was not about a row (a lost
/// connection, a timeout) or no single row fails alone. Nothing is written.
async fn refused_row(
    target: &Connector,
    spec: &UpsertSpec<'_>,
    rows: &[Vec<Value>],
    error: ConnectorError,
) -> String {
    // A lost connection or a timeout is no row's fault.
    if !is_row_error(&error) {
        return error.to_string();
    }
    if rows.len() < 2 {
        return describe_refusal(spec, rows.first(), &error);
    }
    let Ok(mut tx) = target.begin().await else {
        return error.to_string();
    };
    for row in rows {
        if tx.execute("SAVEPOINT hubsync_row", &[]).await.is_err() {
            break;
        }
        match tx.upsert(spec, std::slice::from_ref(row)).await {
            Ok(_) => {
                if tx
                    .execute("RELEASE SAVEPOINT hubsync_row", &[])
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Err(row_error) => return describe_refusal(spec, Some(row), &row_error),
        }
    }
    error.to_string()
}

/// What one applied batch leaves for the master's state tables.
struct BatchOutcome {
    /// Rows read from the source.
    read: u64,
    /// Rows inserted or changed at the target.
    written: u64,
    /// Refused rows for the quarantine: (row key JSON, row JSON, error).
    quarantined: Vec<(String, String, String)>,
    /// Row keys (JSON) applied now whose quarantine entries go away.
    released: Vec<String>,
}

/// How many times a batch whose transaction met a deadlock or a
/// serialization failure is run again before the stream fails.
pub(crate) const CONFLICT_RETRIES: u32 = 5;

/// The pause before running a conflicted batch again (`attempt` from 1):
/// 50 ms doubling per attempt, up to 1.6 s, plus up to as much again of
/// jitter so two hubs that deadlocked do not meet again in step.
fn conflict_pause(attempt: u32) -> std::time::Duration {
    let base = 50u64 << attempt.saturating_sub(1).min(5);
    std::time::Duration::from_millis(base + rand::random_range(0..=base))
}

/// A state-table error inside a write transaction, as the connector error
/// it came from (its kind decides a retry), or as one of kind `other`.
fn state_as_connector(error: StateError) -> ConnectorError {
    match error {
        StateError::Connector(e) => e,
        other => ConnectorError::other(other.to_string()),
    }
}

/// True for errors about the data of a row (the database refused a value),
/// as opposed to a lost connection or a timeout, which quarantine must not
/// hide.
fn is_row_error(error: &ConnectorError) -> bool {
    error.kind() == ErrorKind::Data
}

/// Applies `rows` one at a time under a savepoint each; returns rows written
/// and the (index, error) of every row the database refused.
async fn apply_row_by_row(
    tx: &mut crate::connector::Tx,
    spec: &UpsertSpec<'_>,
    rows: &[Vec<Value>],
) -> Result<(u64, Vec<(usize, String)>), ConnectorError> {
    let mut written = 0;
    let mut refused = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        tx.execute("SAVEPOINT hubsync_row", &[]).await?;
        match tx.upsert(spec, std::slice::from_ref(row)).await {
            Ok(n) => written += n,
            Err(e) if is_row_error(&e) => {
                tx.execute("ROLLBACK TO SAVEPOINT hubsync_row", &[]).await?;
                refused.push((i, e.to_string()));
            }
            Err(e) => return Err(e),
        }
        tx.execute("RELEASE SAVEPOINT hubsync_row", &[]).await?;
    }
    Ok((written, refused))
}

/// The key values of a target row as JSON (the quarantine table's key).
fn row_key_json(spec: &UpsertSpec<'_>, row: &[Value]) -> String {
    let key: Vec<&Value> = spec
        .key
        .iter()
        .filter_map(|k| spec.columns.iter().position(|c| c == k))
        .map(|i| &row[i])
        .collect();
    serde_json::to_string(&key).unwrap_or_default()
}

/// (row key JSON, row values JSON by column, error) for the quarantine table.
fn quarantine_entry(spec: &UpsertSpec<'_>, row: &[Value], error: &str) -> (String, String, String) {
    let values: serde_json::Map<String, serde_json::Value> = spec
        .columns
        .iter()
        .zip(row)
        .map(|(c, v)| (c.clone(), serde_json::to_value(v).unwrap_or_default()))
        .collect();
    (
        row_key_json(spec, row),
        serde_json::Value::Object(values).to_string(),
        error.to_string(),
    )
}

/// "row (k1, k2) = (v1, v2): error" for a refused row (just the error when
/// the row is unknown).
fn describe_refusal(
    spec: &UpsertSpec<'_>,
    row: Option<&Vec<Value>>,
    error: &ConnectorError,
) -> String {
    let Some(row) = row else {
        return error.to_string();
    };
    let key: Vec<String> = spec
        .key
        .iter()
        .filter_map(|k| spec.columns.iter().position(|c| c == k))
        .map(|i| row[i].to_string())
        .collect();
    format!(
        "row ({}) = ({}): {error}",
        spec.key.join(", "),
        key.join(", ")
    )
}

/// Appends a remark to the stream's note (several may apply to one run).
fn add_note(report: &mut StreamReport, note: String) {
    report.note = Some(match report.note.take() {
        Some(earlier) => format!("{earlier}; {note}"),
        None => note,
    });
}

/// What one batch writes at the target, in one transaction.
struct BatchWrite<'a> {
    /// The upsert of `rows`.
    upsert: UpsertSpec<'a>,
    /// Rows to upsert (target column order).
    rows: &'a [Vec<Value>],
    /// The conflict key, for deleting `deleted_keys`.
    delete: UpsertSpec<'a>,
    /// Conflict keys of soft-deleted source rows.
    deleted_keys: &'a [Vec<Value>],
}

/// The work of one stream at one site.
pub(super) struct StreamRun<'a> {
    pub hub: &'a Hub,
    pub flow: &'a Flow,
    pub stream: &'a Stream,
    pub plan: &'a StreamPlan,
    pub site: &'a Site,
    pub site_conn: &'a Connector,
    pub options: SyncOptions,
    pub progress: &'a dyn Progress,
    pub cancel: &'a CancellationToken,
    pub counters: &'a RunCounters,
    /// The run in the history (`None` for a dry run).
    pub run_id: Option<&'a str>,
}

/// Rows read and written so far by one site run, over all its streams;
/// shared with the heartbeat that records them in the run history.
#[derive(Debug, Default)]
pub struct RunCounters {
    read: std::sync::atomic::AtomicU64,
    written: std::sync::atomic::AtomicU64,
}

impl RunCounters {
    fn add(&self, read: u64, written: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.read.fetch_add(read, Relaxed);
        self.written.fetch_add(written, Relaxed);
    }

    /// (rows read, rows written) so far.
    pub fn get(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.read.load(Relaxed), self.written.load(Relaxed))
    }
}

/// The source side of a stream at one site, resolved once per run: the
/// query with `:site.*` bound, and the select list, found by preparing the
/// first page's SQL (which also proves it is valid before anything is read).
#[derive(Clone, Debug)]
pub(crate) struct ResolvedSource {
    /// The table, or the query rewritten with numbered placeholders.
    from: Source,
    /// `(attribute, value)` bound to the query's placeholders, in order.
    pub site_params: Vec<(String, String)>,
    /// Explicit select list (source names), or `None` for `*`.
    columns: Option<Vec<String>>,
    /// Columns read as text because the connector cannot decode their type.
    text_columns: Vec<String>,
    /// Every column the source returns, as (name, type name).
    pub described: Vec<(String, String)>,
    /// SQLite sources whose cursor is declared a date or date-time type
    /// (`DATETIME`, `TIMESTAMP`, `DATE`...): that declared type. Such a
    /// cursor may hold text, Julian-day REALs and unix-second INTEGERs; it
    /// is ordered by instant and each value read as one
    /// ([`crate::connector::sqlite_instant`]).
    pub cursor_date_time: Option<String>,
}

impl ResolvedSource {
    /// Binds `:site.*`, prepares the first page and chooses the select list.
    ///
    /// Errors (one line, for a message prefixed with the place): a missing
    /// tag, a query that does not prepare, a cursor or key column whose type
    /// can only be read as text (its order would change).
    pub(crate) async fn resolve(
        stream: &Stream,
        site: &Site,
        source: &Connector,
        batch_size: usize,
    ) -> Result<ResolvedSource, String> {
        let mut resolved = ResolvedSource {
            from: stream.source.clone(),
            site_params: Vec::new(),
            columns: stream.select_columns(),
            text_columns: Vec::new(),
            described: Vec::new(),
            cursor_date_time: None,
        };
        match &stream.source {
            Source::Table(_) => {}
            Source::Query(query) => {
                let bound = bind_site_placeholders(query, source.dialect(), 1)
                    .map_err(|e| format!("`query`: {e}"))?;
                for name in &bound.params {
                    let value = site.attribute(name).ok_or_else(|| {
                        format!("site has no tag `{name}` used by `:site.{name}` in `query`")
                    })?;
                    resolved.site_params.push((name.clone(), value.to_string()));
                }
                resolved.from = Source::Query(bound.sql);
            }
        }
        let keyset = stream.keyset_source_columns();
        let probe = resolved.keyset_select(source.dialect(), &keyset, None, None, Some(batch_size));
        let what = match &stream.source {
            Source::Table(table) => format!("table `{table}`"),
            Source::Query(_) => "`query`".to_string(),
        };
        resolved.described = source
            .describe_query(&probe)
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        let text_columns: Vec<String> = resolved
            .described
            .iter()
            .filter(|(_, type_name)| !source.decodes_natively(type_name))
            .map(|(name, _)| name.clone())
            .collect();
        if let Some(column) = keyset.iter().find(|c| text_columns.contains(c)) {
            let type_name = &resolved
                .described
                .iter()
                .find(|(n, _)| n == column)
                .expect("described")
                .1;
            return Err(format!(
                "cursor or key column `{column}` has type `{type_name}`, which hubsync cannot order by; use another column or cast it in a `query`"
            ));
        }
        if !text_columns.is_empty() {
            resolved.columns = Some(resolved.described.iter().map(|(n, _)| n.clone()).collect());
            resolved.text_columns = text_columns;
        }
        if source.dialect() == crate::dialect::Dialect::Sqlite {
            // The declared type where the cursor comes from a table; else
            // the driver's name (`DATETIME` for `datetime` and `timestamp`).
            let declared = match source
                .declared_type(&probe, &stream.cursor)
                .await
                .map_err(|e| format!("{what}: {e}"))?
            {
                Some(declared) => Some(declared),
                None => resolved
                    .described
                    .iter()
                    .find(|(name, _)| *name == stream.cursor)
                    .map(|(_, type_name)| type_name.clone()),
            };
            resolved.cursor_date_time =
                declared.filter(|d| crate::connector::sqlite_is_date_time_type(d));
        }
        Ok(resolved)
    }

    /// SQL counting the source rows whose `cursor` is NULL (bound with the
    /// same `:site.*` parameters as the pages).
    pub(crate) fn null_cursor_count(
        &self,
        dialect: crate::dialect::Dialect,
        cursor: &str,
    ) -> String {
        dialect.null_count(self.select_from(), cursor)
    }

    pub(crate) fn select_from(&self) -> SelectFrom<'_> {
        match &self.from {
            Source::Table(table) => SelectFrom::Table(table),
            Source::Query(sql) => SelectFrom::Query(sql),
        }
    }

    /// The read of a run: every row whose cursor is at or above
    /// `from_cursor` (`None`: every row), in keyset order, streamed.
    pub(crate) fn read_spec<'a>(
        &'a self,
        keyset: &'a [String],
        from_cursor: Option<&'a Value>,
    ) -> KeysetSelect<'a> {
        KeysetSelect {
            from: self.select_from(),
            columns: self.columns.as_deref(),
            text_columns: &self.text_columns,
            order_by: keyset,
            after: None,
            from_cursor,
            first_param: self.site_params.len() + 1,
            limit: None,
            cursor_by_instant: self.cursor_date_time.is_some(),
        }
    }

    /// SQL of the keyset read after `position` (`None`: from the start), at
    /// most `limit` rows (`None`: all, streamed).
    pub(crate) fn keyset_select(
        &self,
        dialect: crate::dialect::Dialect,
        keyset: &[String],
        position: Option<&[Value]>,
        from_cursor: Option<&Value>,
        limit: Option<usize>,
    ) -> String {
        dialect.keyset_select(&KeysetSelect {
            from: self.select_from(),
            columns: self.columns.as_deref(),
            text_columns: &self.text_columns,
            order_by: keyset,
            after: position,
            from_cursor,
            first_param: self.site_params.len() + 1,
            limit,
            cursor_by_instant: self.cursor_date_time.is_some(),
        })
    }
}

/// Which read of a run a batch comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadPart {
    /// The cursor read: each batch moves the checkpoint to its last row.
    Cursor,
    /// A read outside cursor order (late commits, NULL cursors): rows are
    /// applied, the checkpoint's position stays.
    Side,
}

/// The facts of one stream run at one site, fixed before the first read.
struct RunPlace<'a> {
    direction: Direction,
    /// How source rows become target rows, built once before reading.
    mapping: &'a MappingPlan,
    source: &'a Connector,
    target: &'a Connector,
    resolved: &'a ResolvedSource,
    target_info: &'a TableInfo,
    /// "the site" / "the master", for messages.
    source_place: &'a str,
    /// "master table `t`" / "site table `t`", for messages.
    target_place: &'a str,
    key: &'a CheckpointKey,
    fingerprint: &'a str,
    /// The late-commit floor taken before reading (`crate::capture`).
    floor: Option<chrono::DateTime<chrono::Utc>>,
    /// The snapshot text checkpoints written during the run carry.
    snapshot: Option<String>,
}

/// What the apply side carries from batch to batch and read to read.
struct Applied {
    /// The checkpoint as stored now.
    saved: Option<Checkpoint>,
    /// Whether the quarantine may hold rows of this (stream, site).
    quarantine_open: bool,
    /// The source snapshot the stored checkpoint carries (a batch that
    /// leaves the checkpoint as stored does not write this run's).
    stored_snapshot: Option<String>,
}

/// PostgreSQL's text form of `snapshot`, as stored in the checkpoint.
fn snapshot_text(snapshot: &capture::Snapshot) -> String {
    let ids: Vec<String> = snapshot.xip.iter().map(u64::to_string).collect();
    format!("{}:{}:{}", snapshot.xmin, snapshot.xmax, ids.join(","))
}

impl StreamRun<'_> {
    /// Moves every row after the checkpoint, batch by batch. Pull: site ->
    /// master, batch and checkpoint in one master transaction. Push: master
    /// -> site, checkpoint saved after the site commit.
    pub async fn run(&self, report: &mut StreamReport) -> Result<(), RunError> {
        let master = self.hub.master();
        let direction = self.flow.direction;
        let batch_size = self.hub.config().hub.batch_size;
        let (source, target) = match direction {
            Direction::Pull => (self.site_conn, master),
            Direction::Push => (master, self.site_conn),
        };
        let (source_place, target_place) = match direction {
            Direction::Pull => ("the site", format!("master table `{}`", self.stream.target)),
            Direction::Push => ("the master", format!("site table `{}`", self.stream.target)),
        };
        let resolved = ResolvedSource::resolve(self.stream, self.site, source, batch_size)
            .await
            .map_err(|e| format!("reading from {source_place}: {e}"))?;
        let site_target;
        let target_info = match &self.plan.master_target {
            Some(info) => info,
            None => {
                let described = target
                    .describe_table(&self.stream.target)
                    .await
                    .map_err(|e| format!("cannot describe {target_place}: {e}"))?;
                site_target = match described {
                    Some(info) => info,
                    None if self.stream.create_target && !self.options.dry_run => {
                        self.create_target(direction, source, target, &resolved, &target_place)
                            .await?
                    }
                    None => {
                        return Err(format!(
                            "{target_place} does not exist; create it, or set `create_target = true`"
                        )
                        .into());
                    }
                };
                &site_target
            }
        };
        if let Some(problem) = schema_problems(
            self.stream,
            direction,
            source.dialect(),
            &resolved.described,
            target.dialect(),
            target_info,
        )
        .into_iter()
        .next()
        {
            return Err(format!("{target_place}: {problem}").into());
        }
        let source_columns: Vec<String> = resolved
            .described
            .iter()
            .map(|(name, _)| name.clone())
            .collect();
        let mapping = MappingPlan::build(
            self.stream,
            direction,
            &source_columns,
            target_info,
            &target_place,
        )?;
        let site_params = &resolved.site_params;
        let site_values: Vec<Value> = site_params
            .iter()
            .map(|(_, v)| Value::Text(v.clone()))
            .collect();

        let key = CheckpointKey {
            flow: self.flow.name.clone(),
            stream: self.stream.name.clone(),
            site: self.site.id.clone(),
        };
        let fingerprint = fingerprint(
            self.flow,
            self.stream,
            site_params,
            &resolved.described,
            resolved.cursor_date_time.is_some(),
        );
        let stored = self.hub.state().load_checkpoint(master, &key).await?;
        // `saved`: the furthest position applied (what the checkpoint holds);
        // `read_start`: where this run's first read begins.
        let saved: Option<Checkpoint> = match stored {
            Some(checkpoint) if checkpoint.fingerprint == fingerprint => Some(checkpoint),
            Some(_) => {
                add_note(
                    report,
                    "stream definition or site tags changed since the last run: backfilling from the start".into(),
                );
                if !self.options.dry_run {
                    // Forget it now, so an empty backfill does not leave the
                    // stale checkpoint (and this note) behind for every run.
                    self.hub
                        .state()
                        .delete_checkpoints(
                            master,
                            &key.flow,
                            Some(&key.stream),
                            &[key.site.as_str()],
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                }
                None
            }
            None => None,
        };
        // Late commits: the first read re-reads the overlap from
        // `resume_from`; the floor for the next run comes from the source's
        // clock and open transactions, taken before reading.
        // A checkpoint written before every run restarted inclusively (no
        // `resume_from`) restarts at its own cursor value.
        let from_cursor = saved.as_ref().and_then(|c| {
            c.resume_from
                .clone()
                .or_else(|| c.position.first().cloned())
        });
        let clock = source.visibility().await.map_err(|e| {
            RunError::connector(format_args!("reading the clock of {source_place}"), &e)
        })?;
        let floor = clock
            .as_ref()
            .map(|c| capture::visibility_floor(c.now, c.oldest_open, self.stream.cursor_lag));
        self.note_clock_behind(report, clock.as_ref(), saved.as_ref(), source_place);
        // Late commits by transaction id: pulls from PostgreSQL tables.
        let by_xid = direction == Direction::Pull
            && self.stream.late_commits == LateCommits::Xid
            && source.dialect() == crate::dialect::Dialect::Postgres
            && matches!(self.stream.source, Source::Table(_));
        let snapshot_now = clock
            .as_ref()
            .and_then(|c| c.snapshot.as_ref())
            .filter(|_| by_xid);
        let snapshot_saved = saved
            .as_ref()
            .and_then(|c| c.snapshot.as_deref())
            .and_then(capture::Snapshot::parse)
            .filter(|_| by_xid);
        if saved.is_none() && self.stream.null_cursors == NullCursors::Skip {
            self.note_null_cursors(report, source, &resolved, &site_values)
                .await;
        }

        // Quarantined rows of this (stream, site) are released when they
        // are applied again; only worth the DELETEs when there are some.
        let quarantine_open = self.stream.on_error == OnError::Quarantine
            && !self.options.dry_run
            && self
                .hub
                .state()
                .quarantine_count(master, &key)
                .await
                .map_err(|e| e.to_string())?
                > 0;
        let keyset = self.stream.keyset_source_columns();
        let place = RunPlace {
            direction,
            mapping: &mapping,
            source,
            target,
            resolved: &resolved,
            target_info,
            source_place,
            target_place: &target_place,
            key: &key,
            fingerprint: &fingerprint,
            floor,
            // Stored with the batches of the cursor read, after the
            // late-commit read (see below).
            snapshot: snapshot_now.map(snapshot_text),
        };
        let mut applied = Applied {
            stored_snapshot: saved.as_ref().and_then(|c| c.snapshot.clone()),
            saved,
            quarantine_open,
        };
        let spec = resolved.read_spec(&keyset, from_cursor.as_ref());
        let mut params = site_values.clone();
        params.extend(from_cursor.iter().cloned());
        // 1. Rows below the cursor read's start written by transactions the
        //    stored snapshot did not see (see `crate::capture`). First, so
        //    that the cursor read's checkpoints may carry this run's
        //    snapshot: whatever it did not see is in progress now, and the
        //    next run re-reads it. A checkpoint not rewritten (nothing
        //    changed) keeps the older snapshot, which misses a superset.
        if let (Some(seen), Some(now)) = (&snapshot_saved, snapshot_now)
            && seen.may_have_missed_commits(now)
            && let Some(sql) = source.dialect().late_commit_select(&spec, seen)
        {
            let late = self
                .read_and_apply(&place, &mut applied, &sql, &params, ReadPart::Side, report)
                .await?;
            if late > 0 {
                add_note(
                    report,
                    format!("rows committed late, found by transaction id: {late}"),
                );
            }
        }
        // 2. The cursor read, streamed, from the overlap's start (inclusive).
        let sql = source.dialect().keyset_select(&spec);
        self.read_and_apply(
            &place,
            &mut applied,
            &sql,
            &params,
            ReadPart::Cursor,
            report,
        )
        .await?;
        // 3. Rows whose cursor is NULL, which no cursor read returns.
        if self.stream.null_cursors == NullCursors::Read {
            let sql = source.dialect().null_cursor_select(&spec);
            let nulls = self
                .read_and_apply(
                    &place,
                    &mut applied,
                    &sql,
                    &site_values,
                    ReadPart::Side,
                    report,
                )
                .await?;
            report.null_cursor_rows += nulls;
            if nulls > 0 {
                add_note(
                    report,
                    format!(
                        "rows with a NULL cursor `{}` read: {nulls}",
                        self.stream.cursor
                    ),
                );
            }
        }
        // 4. Every read saw what this run's snapshot saw: store it when the
        //    batches did not (a checkpoint left as it was keeps the older
        //    snapshot, whose late rows would be re-read every run). An idle
        //    site's snapshot does not change, so it costs no write.
        if let (Some(now), Some(saved)) = (&place.snapshot, &applied.saved)
            && applied.stored_snapshot.as_ref() != Some(now)
            && !self.options.dry_run
        {
            let checkpoint = Checkpoint {
                snapshot: Some(now.clone()),
                ..saved.clone()
            };
            let master = self.hub.master();
            let save = async {
                let mut tx = master.begin().await?;
                self.hub
                    .state()
                    .save_checkpoint(&mut tx, &key, Some(saved), &checkpoint)
                    .await?;
                tx.commit().await?;
                Ok::<(), crate::state::StateError>(())
            };
            save.await?;
            applied.stored_snapshot = checkpoint.snapshot.clone();
            applied.saved = Some(checkpoint);
        }
        if self.stream.deletes == Deletes::Detect && !self.options.dry_run {
            let now = clock.as_ref().map_or_else(chrono::Utc::now, |c| c.now);
            // The rows have arrived; a failed comparison must not stop the
            // next runs from bringing new ones (nor open the circuit): the
            // run ends `partial` with the reason.
            match self
                .reconcile(
                    source,
                    target,
                    &resolved,
                    &site_values,
                    target_info,
                    now,
                    applied.saved.as_ref().and_then(|c| c.position.first()),
                    report,
                )
                .await
            {
                Ok(deleted) => {
                    report.rows_deleted += deleted;
                    // Deletes count as rows written in the run history
                    // (the reference config's `deletes`).
                    report.rows_written += deleted;
                    self.counters.add(0, deleted);
                }
                Err(e) => report.delete_detection_error = Some(e),
            }
        }
        Ok(())
    }

    /// Notes a source clock behind cursor values already applied: it went
    /// back (a clock reset), so rows it stamps now sort before the
    /// checkpoint.
    fn note_clock_behind(
        &self,
        report: &mut StreamReport,
        clock: Option<&SourceClock>,
        saved: Option<&Checkpoint>,
        source_place: &str,
    ) {
        if let (Some(clock), Some(Value::TimestampTz(applied))) =
            (clock, saved.and_then(|c| c.position.first()))
            && clock.now + chrono::Duration::from_std(self.stream.cursor_lag).unwrap_or_default()
                < *applied
        {
            add_note(
                report,
                format!(
                    "the clock of {source_place} ({}) is behind the checkpoint's cursor ({}): it went back, or \
                     rows were stamped in the future; reads now start from the source's clock, so new rows still \
                     arrive, but rows stamped below it before this run are only found by `hubsync reset`",
                    clock.now.format(crate::value::TIMESTAMPTZ_TEXT_FORMAT),
                    applied.format(crate::value::TIMESTAMPTZ_TEXT_FORMAT)
                ),
            );
        }
    }

    /// With `null_cursors = "skip"`, a backfill counts the rows it will
    /// never read (NULL cursor) once, in a note. A failed count is no error.
    async fn note_null_cursors(
        &self,
        report: &mut StreamReport,
        source: &Connector,
        resolved: &ResolvedSource,
        site_values: &[Value],
    ) {
        let sql = resolved.null_cursor_count(source.dialect(), &self.stream.cursor);
        if let Ok(batch) = source.query(&sql, site_values).await
            && let Some(Value::Int(nulls)) = batch.rows.first().and_then(|r| r.first())
            && *nulls > 0
        {
            add_note(
                report,
                format!(
                    "source rows with a NULL cursor `{}`: {nulls} (never synced: `null_cursors = \"skip\"`)",
                    self.stream.cursor
                ),
            );
        }
    }

    /// Runs one read, streamed: the source sends rows while earlier batches
    /// are applied (a channel of one batch between the two, so at most
    /// three batches are in memory). Returns the rows read.
    async fn read_and_apply(
        &self,
        place: &RunPlace<'_>,
        applied: &mut Applied,
        sql: &str,
        params: &[Value],
        part: ReadPart,
        report: &mut StreamReport,
    ) -> Result<u64, RunError> {
        let batch_size = self.hub.config().hub.batch_size;
        let (sender, batches) = tokio::sync::mpsc::channel(1);
        let read = place.source.query_batches(sql, params, batch_size, sender);
        let apply_all = async {
            // Owned here: when applying stops (an error, a stop signal), the
            // receiver is dropped, which stops the read.
            let mut batches = batches;
            let mut rows_read = 0;
            while let Some(batch) = batches.recv().await {
                let batch = batch.map_err(|e| {
                    RunError::connector(format_args!("reading from {}", place.source_place), &e)
                })?;
                if self.cancel.is_cancelled() {
                    return Err(RunError::interrupted(format!(
                        "{INTERRUPTED}stopped after the last committed batch; the next run resumes there"
                    )));
                }
                rows_read += self
                    .apply_batch(place, applied, batch, part, report)
                    .await?;
            }
            Ok::<u64, RunError>(rows_read)
        };
        let ((), rows_read) = tokio::join!(read, apply_all);
        rows_read
    }

    /// Maps, checks and applies one batch read from the source; returns
    /// the rows it held. A [`ReadPart::Cursor`] batch moves the checkpoint
    /// to its last row; a [`ReadPart::Side`] batch leaves it where it is
    /// (and writes none when there is none yet).
    async fn apply_batch(
        &self,
        place: &RunPlace<'_>,
        applied: &mut Applied,
        batch: Batch,
        part: ReadPart,
        report: &mut StreamReport,
    ) -> Result<u64, RunError> {
        let (direction, source, target) = (place.direction, place.source, place.target);
        if direction == Direction::Push {
            // Rows read from the master count against its rate budget.
            self.hub.master_writes.throttle(batch.len()).await;
        }
        let mapping = place.mapping;
        let mut batch = batch;
        let last_instant = match &place.resolved.cursor_date_time {
            Some(declared) => {
                mapping.read_cursor_instants(&mut batch.rows, &self.site.id, declared)?
            }
            None => None,
        };
        let batch_end = match part {
            ReadPart::Cursor => {
                let mut position =
                    mapping.position(batch.rows.last().expect("batch is not empty"))?;
                // The checkpoint holds the instant, whatever form it had.
                if let Some(instant) = last_instant {
                    position[0] = instant;
                }
                Some(position)
            }
            ReadPart::Side => None,
        };
        let flags = mapping.deleted_flags(&batch);
        // `booleans` names source columns; the batch moves into `rows`.
        let source_columns = if self.stream.booleans.is_empty() {
            Vec::new()
        } else {
            batch.columns.clone()
        };
        let mut rows = mapping.map_rows(batch, &self.site.id);
        mapping.check_unique_keys(&rows)?;
        let zero_date_columns =
            mapping.zero_date_columns(source.dialect(), &place.resolved.described);
        if !zero_date_columns.is_empty() {
            mapping.handle_zero_dates(
                &mut rows,
                &zero_date_columns,
                self.stream.zero_dates,
                target.dialect(),
                place.target_info,
            )?;
        }
        if !self.stream.booleans.is_empty() {
            mapping.apply_booleans(&mut rows, &source_columns, &self.stream.booleans)?;
        }
        if let Some(zone) = self.site.timezone {
            mapping.apply_site_zone(&mut rows, direction, zone, place.target_info)?;
        }
        if target.dialect() == crate::dialect::Dialect::Postgres {
            mapping.parse_text_datetimes(&mut rows, place.target_info);
            mapping.check_postgres_values(&rows, place.target_info)?;
        }
        let read = rows.len() as u64;
        let (rows, deleted_keys) = mapping.split_deleted(flags, rows);
        let checkpoint = match batch_end {
            Some(batch_end) => {
                let position = match &applied.saved {
                    Some(checkpoint) => checkpoint.later_position(&batch_end),
                    None => batch_end,
                };
                Some(Checkpoint {
                    resume_from: capture::resume_from(
                        &position[0],
                        self.stream.cursor_lag,
                        place.floor,
                        match direction {
                            Direction::Pull => self.site.timezone,
                            Direction::Push => None,
                        },
                    ),
                    position,
                    fingerprint: place.fingerprint.to_string(),
                    snapshot: place.snapshot.clone(),
                })
            }
            // Out of cursor order: the stored checkpoint stays as it is.
            None => applied.saved.clone(),
        };
        let (written, quarantined, deleted, checkpoint_saved) = if self.options.dry_run {
            // A dry run shows what it would delete.
            (0, 0, deleted_keys.len() as u64, false)
        } else {
            let key_types = mapping.key_types();
            let write = BatchWrite {
                upsert: UpsertSpec {
                    table: &self.stream.target,
                    columns: &mapping.target_columns,
                    column_types: &mapping.column_types,
                    key: &mapping.conflict_key,
                },
                rows: &rows,
                delete: mapping.delete_spec(&self.stream.target, &key_types),
                deleted_keys: &deleted_keys,
            };
            // A new snapshot alone is not worth a write (see `run`).
            let stored = match (&checkpoint, &applied.saved) {
                (Some(new), Some(old)) => new.same_position(old),
                _ => false,
            };
            self.apply(
                direction,
                target,
                &write,
                place.key,
                applied.saved.as_ref(),
                checkpoint.as_ref(),
                stored,
                place.target_place,
                applied.quarantine_open,
            )
            .await?
        };
        report.rows_deleted += deleted;
        if quarantined > 0 {
            applied.quarantine_open = true;
            report.quarantined += quarantined;
        }
        report.rows_read += read;
        report.rows_written += written;
        self.counters.add(read, written);
        self.progress.batch_applied(
            &self.flow.name,
            &self.site.id,
            &self.stream.name,
            read,
            written,
        );
        if checkpoint_saved {
            applied.stored_snapshot = checkpoint.as_ref().and_then(|c| c.snapshot.clone());
        }
        if checkpoint.is_some() {
            applied.saved = checkpoint;
        }
        Ok(read)
    }

    /// Runs delete detection for this stream and site (see
    /// `flow/reconcile.rs`); `now` is the source's clock. Returns rows
    /// deleted.
    #[allow(clippy::too_many_arguments)]
    async fn reconcile(
        &self,
        source: &Connector,
        target: &Connector,
        resolved: &ResolvedSource,
        site_values: &[Value],
        target_info: &TableInfo,
        now: chrono::DateTime<chrono::Utc>,
        cursor_value: Option<&Value>,
        report: &mut StreamReport,
    ) -> Result<u64, String> {
        if self.stream.deletes_window.is_some()
            && let Some(value @ (Value::Int(_) | Value::Float(_) | Value::Numeric(_))) =
                cursor_value
        {
            return Err(format!(
                "`deletes_window` needs a time cursor, but `{}` holds numbers (e.g. {value}); remove `deletes_window` or use a timestamp cursor",
                self.stream.cursor
            ));
        }
        let source_key: Vec<String> = self
            .stream
            .primary_key
            .iter()
            .map(|k| self.stream.source_column(k).to_string())
            .collect();
        let window_start = self.stream.deletes_window.map(|window| {
            let span = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
            Value::TimestampTz(
                now.checked_sub_signed(span)
                    .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC),
            )
        });
        let target_cursor = match &self.stream.columns {
            Some(pairs) => pairs
                .iter()
                .find(|(_, s)| *s == self.stream.cursor)
                .map(|(t, _)| t.as_str()),
            None => Some(self.stream.cursor.as_str()),
        }
        .filter(|c| target_info.column(c).is_some());
        if window_start.is_some() && target_cursor.is_none() {
            return Err(format!(
                "`deletes_window` needs the cursor `{}` copied to the target, to compare the same rows on both sides",
                self.stream.cursor
            ));
        }
        let site_id = Value::Text(self.site.id.clone());
        let only = match self.flow.direction {
            Direction::Pull => self.stream.site_column.as_deref().map(|c| (c, &site_id)),
            Direction::Push => None,
        };
        let source_side = reconcile::Side {
            conn: source,
            from: resolved.select_from(),
            params: site_values,
            key: &source_key,
            only: None,
            cursor: window_start.as_ref().map(|_| self.stream.cursor.as_str()),
        };
        let target_side = reconcile::Side {
            conn: target,
            from: SelectFrom::Table(&self.stream.target),
            params: &[],
            key: &self.stream.primary_key,
            only,
            cursor: window_start.as_ref().and(target_cursor),
        };
        let at = reconcile::DeleteAt {
            table: &self.stream.target,
            info: target_info,
            site: only,
        };
        let mut notes = Vec::new();
        let deleted = self
            .detect_deletes(
                &source_side,
                &target_side,
                &at,
                window_start.as_ref(),
                &mut notes,
            )
            .await?;
        for note in notes {
            add_note(report, note);
        }
        Ok(deleted)
    }

    /// Creates the missing target table from the source's columns (see
    /// `flow/schema.rs`): for a pull, `site_column` (text) first; the
    /// primary key is the conflict key. Returns its description.
    async fn create_target(
        &self,
        direction: Direction,
        source: &Connector,
        target: &Connector,
        resolved: &ResolvedSource,
        target_place: &str,
    ) -> Result<TableInfo, String> {
        let mut columns: Vec<(String, Logical)> = Vec::new();
        let mut key: Vec<String> = Vec::new();
        if direction == Direction::Pull
            && let Some(site_column) = &self.stream.site_column
        {
            columns.push((site_column.clone(), Logical::Text));
            key.push(site_column.clone());
        }
        let logical_of = |source_column: &str| {
            resolved
                .described
                .iter()
                .find(|(name, _)| name == source_column)
                .map_or(Logical::Other, |(_, ty)| {
                    if self.stream.booleans.iter().any(|b| b == source_column) {
                        Logical::Bool
                    } else {
                        source_logical(source.dialect(), ty)
                    }
                })
        };
        match &self.stream.columns {
            Some(pairs) => {
                for (target_column, source_column) in pairs {
                    columns.push((target_column.clone(), logical_of(source_column)));
                }
            }
            None => {
                for (name, _) in &resolved.described {
                    if direction == Direction::Pull
                        && self.stream.site_column.as_ref() == Some(name)
                    {
                        continue;
                    }
                    columns.push((name.clone(), logical_of(name)));
                }
            }
        }
        key.extend(self.stream.primary_key.iter().cloned());
        let sql = create_table_sql(target.dialect(), &self.stream.target, &columns, &key);
        target
            .execute_script(&sql)
            .await
            .map_err(|e| format!("creating {target_place} (`create_target`): {e}"))?;
        target
            .describe_table(&self.stream.target)
            .await
            .map_err(|e| format!("cannot describe {target_place}: {e}"))?
            .ok_or_else(|| {
                format!("{target_place} was created but cannot be found; check the table name")
            })
    }

    /// Records the run's row counts including this batch, in the master
    /// transaction that saves its checkpoint: the history then counts
    /// exactly what was committed, even if the hub is killed next.
    async fn record_progress(
        &self,
        tx: &mut crate::connector::Tx,
        read: u64,
        written: u64,
    ) -> Result<(), StateError> {
        let Some(run_id) = self.run_id else {
            return Ok(());
        };
        let (total_read, total_written) = self.counters.get();
        self.hub
            .state()
            .record_progress(tx, run_id, total_read + read, total_written + written)
            .await
    }

    /// Writes one batch and its checkpoint; returns (rows changed, rows
    /// quarantined). A batch the target refuses stops the stream, naming the
    /// refused row, unless the stream quarantines: then the rows are applied
    /// one by one under savepoints and the refused ones go to the master's
    /// quarantine table with the checkpoint. Only errors of kind
    /// [`ErrorKind::Data`] are a row's fault; a deadlock or serialization
    /// failure ([`ErrorKind::Conflict`]) rolled the whole transaction back
    /// and it is run again as is, up to [`CONFLICT_RETRIES`] times after a
    /// short pause with jitter; any other error fails the stream.
    ///
    /// A batch that changes nothing and leaves the stored checkpoint as it
    /// is (`checkpoint_stored`: the `cursor_lag` overlap re-read by a no-op
    /// run) writes no state rows: its reads are counted in the history by
    /// the next heartbeat or the run's end. On a PostgreSQL master such a
    /// pull batch is first compared with the master in one read
    /// (`Connector::changed_rows`) and, if nothing differs, not written.
    ///
    /// Returns (rows upserted or deleted, rows quarantined, rows deleted,
    /// whether `checkpoint` was saved).
    #[allow(clippy::too_many_arguments)]
    async fn apply(
        &self,
        direction: Direction,
        target: &Connector,
        write: &BatchWrite<'_>,
        key: &CheckpointKey,
        expected: Option<&Checkpoint>,
        checkpoint: Option<&Checkpoint>,
        checkpoint_stored: bool,
        target_place: &str,
        release_quarantine: bool,
    ) -> Result<(u64, u64, u64, bool), RunError> {
        let spec = &write.upsert;
        let rows = write.rows;
        let _permit = match direction {
            Direction::Pull => {
                // Waiting for the rate budget must not hold a write slot.
                self.hub
                    .master_writes
                    .throttle(rows.len() + write.deleted_keys.len())
                    .await;
                Some(self.hub.master_writes.acquire().await)
            }
            Direction::Push => None,
        };
        // The overlap re-read of a no-op run: if the master already holds
        // every row exactly as the upsert would leave it, one read replaces
        // the write transaction (nothing to write, the checkpoint stays). On
        // any doubt (an error, a row that differs) the batch is applied.
        if direction == Direction::Pull
            && checkpoint_stored
            && write.deleted_keys.is_empty()
            && !release_quarantine
            && !rows.is_empty()
            && matches!(target.changed_rows(spec, rows).await, Ok(Some(0)))
        {
            return Ok((0, 0, 0, false));
        }
        let mut conflicts = 0;
        loop {
            let attempt = self
                .apply_once(
                    direction,
                    target,
                    write,
                    key,
                    expected,
                    checkpoint,
                    checkpoint_stored,
                    release_quarantine,
                )
                .await;
            let error = match attempt {
                Ok(applied) => return Ok(applied),
                Err(error) => error,
            };
            if error.kind() == ErrorKind::Conflict
                && conflicts < CONFLICT_RETRIES
                && !self.cancel.is_cancelled()
            {
                conflicts += 1;
                let pause = conflict_pause(conflicts);
                tracing::info!(
                    flow = %self.flow.name, stream = %self.stream.name, site = %self.site.id,
                    "writing to {target_place}: {error}; running the batch again in {} ms",
                    pause.as_millis()
                );
                tokio::time::sleep(pause).await;
                continue;
            }
            let kind = error.kind();
            let mut message = if is_row_error(&error) {
                refused_row(target, spec, rows, error).await
            } else {
                error.to_string()
            };
            if kind == ErrorKind::Permission {
                message.push_str(
                    "; grant the hub's login SELECT, INSERT and UPDATE on it (and DELETE where rows are deleted)",
                );
            }
            return Err(RunError::new(
                kind,
                format!("writing to {target_place}: {message}"),
            ));
        }
    }

    /// One attempt of [`StreamRun::apply`]'s write transaction(s); every
    /// error comes back with its kind.
    #[allow(clippy::too_many_arguments)]
    async fn apply_once(
        &self,
        direction: Direction,
        target: &Connector,
        write: &BatchWrite<'_>,
        key: &CheckpointKey,
        expected: Option<&Checkpoint>,
        checkpoint: Option<&Checkpoint>,
        checkpoint_stored: bool,
        release_quarantine: bool,
    ) -> Result<(u64, u64, u64, bool), ConnectorError> {
        let spec = &write.upsert;
        let rows = write.rows;
        let mut tx = target.begin().await?;
        let (written, refused) = match tx.upsert(spec, rows).await {
            Ok(written) => (written, Vec::new()),
            Err(e) => {
                drop(tx);
                if self.stream.on_error == OnError::Stop || !is_row_error(&e) {
                    return Err(e);
                }
                tx = target.begin().await?;
                apply_row_by_row(&mut tx, spec, rows).await?
            }
        };
        let deleted = tx.delete_keys(&write.delete, write.deleted_keys).await?;
        let written = written + deleted;
        let released: Vec<String> = if release_quarantine {
            let refused_rows: std::collections::HashSet<usize> =
                refused.iter().map(|(i, _)| *i).collect();
            (0..rows.len())
                .filter(|i| !refused_rows.contains(i))
                .map(|i| row_key_json(spec, &rows[i]))
                // A quarantined row deleted since at the source is gone too.
                .chain(
                    write
                        .deleted_keys
                        .iter()
                        .map(|key| row_key_json(&write.delete, key)),
                )
                .collect()
        } else {
            Vec::new()
        };
        let outcome = BatchOutcome {
            read: (rows.len() + write.deleted_keys.len()) as u64,
            written,
            quarantined: refused
                .iter()
                .map(|(i, error)| quarantine_entry(spec, &rows[*i], error))
                .collect(),
            released,
        };
        let state_unchanged = checkpoint_stored
            && outcome.written == 0
            && outcome.quarantined.is_empty()
            && outcome.released.is_empty();
        match direction {
            _ if state_unchanged => tx.commit().await?,
            // The batch, its checkpoint, quarantine and counts: one master transaction.
            Direction::Pull => {
                self.save_state(&mut tx, key, expected, checkpoint, &outcome)
                    .await
                    .map_err(state_as_connector)?;
                tx.commit().await?;
            }
            Direction::Push => {
                tx.commit().await?;
                // A crash here re-applies this batch next run: a no-op.
                let mut state_tx = self.hub.master().begin().await?;
                self.save_state(&mut state_tx, key, expected, checkpoint, &outcome)
                    .await
                    .map_err(state_as_connector)?;
                state_tx.commit().await?;
            }
        }
        Ok((
            written,
            outcome.quarantined.len() as u64,
            deleted,
            !state_unchanged && checkpoint.is_some(),
        ))
    }

    /// Checkpoint, quarantine entries, released entries and the run's row
    /// counts, inside the master transaction `tx`.
    async fn save_state(
        &self,
        tx: &mut crate::connector::Tx,
        key: &CheckpointKey,
        expected: Option<&Checkpoint>,
        checkpoint: Option<&Checkpoint>,
        outcome: &BatchOutcome,
    ) -> Result<(), StateError> {
        let BatchOutcome {
            read,
            written,
            quarantined,
            released,
        } = outcome;
        let state = self.hub.state();
        if let Some(checkpoint) = checkpoint {
            state.save_checkpoint(tx, key, expected, checkpoint).await?;
        }
        if !quarantined.is_empty() {
            state.quarantine(tx, key, quarantined).await?;
        }
        if !released.is_empty() {
            state.release_quarantine(tx, key, released).await?;
        }
        self.record_progress(tx, *read, *written).await
    }
}
