//! One stream at one site: the run's phases (prepare the source, target,
//! mapping and checkpoint; the reads of `read.rs`, each batch through
//! `apply.rs`; finish with the snapshot and delete detection), the
//! per-pass plan of a flow's streams, and the fingerprint that decides a
//! backfill.

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::apply::Applied;
use super::error::RunError;
use super::leg::Leg;
use super::read::{ReadPart, ResolvedSource, snapshot_text};
use super::schema::{Logical, create_table_sql, incompatibility, source_logical, target_logical};
use super::{Hub, Progress, StreamReport, SyncOptions, reconcile};
use crate::capture;
use crate::config::{
    Deletes, Direction, Flow, LateCommits, NullCursors, OnError, Site, Source, Stream,
};
use crate::connector::{Connector, SourceClock, TableInfo};
use crate::dialect::SelectFrom;
use crate::mediate::MappingPlan;
use crate::state::{Checkpoint, CheckpointKey};
use crate::value::Value;

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

/// Appends a remark to the stream's note (several may apply to one run).
fn add_note(report: &mut StreamReport, note: String) {
    report.note = Some(match report.note.take() {
        Some(earlier) => format!("{earlier}; {note}"),
        None => note,
    });
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
    /// Adds rows read and written (a batch, or detected deletes).
    pub(super) fn add(&self, read: u64, written: u64) {
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
        let place = Leg {
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
                    .save_checkpoint(&mut tx, &key, &checkpoint)
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

}
