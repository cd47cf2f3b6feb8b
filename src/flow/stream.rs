//! One stream at one site: the run's phases (prepare the source, target,
//! mapping and checkpoint; the reads of `read.rs`, each batch through
//! `apply.rs`; finish with the snapshot and delete detection), the
//! per-pass plan of a flow's streams, and the fingerprint that decides a
//! backfill.

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::apply::Applied;
use super::error::RunError;
use super::leg::{Leg, RunPlace};
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

/// What the prepare phase of a stream run found: the source resolved for
/// the site, the target's description, the mapping plan, and the stored
/// checkpoint (`None`: backfill from the start).
struct Prepared {
    resolved: ResolvedSource,
    /// The target's description when this run described (or created) it;
    /// `None`: the pass's plan holds it (a pull's master table).
    target_info: Option<TableInfo>,
    mapping: MappingPlan,
    /// The `:site.*` values bound to the source, in order.
    site_values: Vec<Value>,
    key: CheckpointKey,
    fingerprint: String,
    /// The checkpoint as stored, if its fingerprint still matches.
    saved: Option<Checkpoint>,
}

/// Where and how this run's reads start, taken from the source before
/// reading (`crate::capture`).
struct ReadWindow {
    /// The cursor value the cursor read starts at (inclusive); `None`: all.
    from_cursor: Option<Value>,
    /// The source's clock and snapshot.
    clock: Option<SourceClock>,
    /// The late-commit floor for the next run's overlap.
    floor: Option<chrono::DateTime<chrono::Utc>>,
    /// The snapshot stored with the checkpoint, when late commits are
    /// caught by transaction id.
    snapshot_saved: Option<capture::Snapshot>,
    /// The snapshot now, likewise.
    snapshot_now: Option<capture::Snapshot>,
}

impl StreamRun<'_> {
    /// Moves every row after the checkpoint, batch by batch, in phases:
    /// prepare (source, target, mapping, checkpoint), window (where reads
    /// start, the source's clock and snapshot), the reads (late commits,
    /// the cursor read, NULL cursors; each batch through the apply stage),
    /// finish (the snapshot, delete detection). Pull: site -> master, batch
    /// and checkpoint in one master transaction. Push: master -> site,
    /// checkpoint saved after the site commit.
    ///
    /// Errors: a [`RunError`] whose message names the place below the
    /// stream (the caller adds flow, stream and site) and whose kind says
    /// what failed.
    pub async fn run(&self, report: &mut StreamReport) -> Result<(), RunError> {
        let leg = Leg::new(
            self.flow.direction,
            self.hub.master(),
            self.site_conn,
            self.stream,
            self.site,
        );
        let prepared = self.prepare(&leg, report).await?;
        let target_info = match (&prepared.target_info, &self.plan.master_target) {
            (Some(info), _) | (None, Some(info)) => info,
            (None, None) => unreachable!("prepare describes the target when the plan has none"),
        };
        let window = self.open_window(&leg, &prepared, report).await?;
        let place = RunPlace {
            leg: &leg,
            mapping: &prepared.mapping,
            resolved: &prepared.resolved,
            target_info,
            key: &prepared.key,
            fingerprint: &prepared.fingerprint,
            floor: window.floor,
            // Stored with the batches of the cursor read, after the
            // late-commit read (see `read_all`).
            snapshot: window.snapshot_now.as_ref().map(snapshot_text),
        };
        let mut applied = Applied {
            stored_snapshot: prepared.saved.as_ref().and_then(|c| c.snapshot.clone()),
            saved: prepared.saved.clone(),
            quarantine_open: self.quarantine_open(&prepared.key).await?,
        };
        self.read_all(&place, &mut applied, &window, &prepared.site_values, report)
            .await?;
        self.store_snapshot(&place, &mut applied).await?;
        if self.stream.deletes == Deletes::Detect && !self.options.dry_run {
            self.detect_deletes_after(&place, &applied, &window, &prepared.site_values, report)
                .await;
        }
        Ok(())
    }

    /// Prepare phase: resolves the source at this site, describes (or
    /// creates) the target, checks the columns' types, builds the mapping
    /// plan and loads the checkpoint (a changed fingerprint forgets it and
    /// notes the backfill).
    async fn prepare(
        &self,
        leg: &Leg<'_>,
        report: &mut StreamReport,
    ) -> Result<Prepared, RunError> {
        let batch_size = self.hub.config().hub.batch_size;
        let resolved = ResolvedSource::resolve(self.stream, self.site, leg.source, batch_size)
            .await
            .map_err(|e| format!("reading from {}: {e}", leg.source_place))?;
        let target_info = match &self.plan.master_target {
            Some(_) => None,
            None => Some(self.describe_target(leg, &resolved).await?),
        };
        let target = target_info
            .as_ref()
            .or(self.plan.master_target.as_ref())
            .expect("described above when the plan has none");
        if let Some(problem) = schema_problems(
            self.stream,
            leg.direction,
            leg.source.dialect(),
            &resolved.described,
            leg.target.dialect(),
            target,
        )
        .into_iter()
        .next()
        {
            return Err(format!("{}: {problem}", leg.target_place).into());
        }
        let source_columns: Vec<String> = resolved
            .described
            .iter()
            .map(|(name, _)| name.clone())
            .collect();
        let mapping = MappingPlan::build(
            self.stream,
            leg.direction,
            &source_columns,
            target,
            &leg.target_place,
        )?;
        let site_values: Vec<Value> = resolved
            .site_params
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
            &resolved.site_params,
            &resolved.described,
            resolved.cursor_date_time.is_some(),
        );
        let saved = self.load_checkpoint(&key, &fingerprint, report).await?;
        Ok(Prepared {
            resolved,
            target_info,
            mapping,
            site_values,
            key,
            fingerprint,
            saved,
        })
    }

    /// The target's description, read at the target; a missing table is
    /// created from the source's columns with `create_target` (not in a dry
    /// run), else an error saying how to fix it.
    async fn describe_target(
        &self,
        leg: &Leg<'_>,
        resolved: &ResolvedSource,
    ) -> Result<TableInfo, RunError> {
        let target_place = &leg.target_place;
        let described = leg
            .target
            .describe_table(&self.stream.target)
            .await
            .map_err(|e| RunError::connector(format_args!("cannot describe {target_place}"), &e))?;
        match described {
            Some(info) => Ok(info),
            None if self.stream.create_target && !self.options.dry_run => Ok(self
                .create_target(
                    leg.direction,
                    leg.source,
                    leg.target,
                    resolved,
                    target_place,
                )
                .await?),
            None => Err(format!(
                "{target_place} does not exist; create it, or set `create_target = true`"
            )
            .into()),
        }
    }

    /// The stored checkpoint of `key` if its fingerprint is `fingerprint`;
    /// one of another fingerprint (the stream or the site's tags changed)
    /// is forgotten at once (not in a dry run), so an empty backfill does
    /// not leave it, and this note, behind for every run.
    async fn load_checkpoint(
        &self,
        key: &CheckpointKey,
        fingerprint: &str,
        report: &mut StreamReport,
    ) -> Result<Option<Checkpoint>, RunError> {
        let master = self.hub.master();
        match self.hub.state().load_checkpoint(master, key).await? {
            Some(checkpoint) if checkpoint.fingerprint == fingerprint => Ok(Some(checkpoint)),
            Some(_) => {
                add_note(
                    report,
                    "stream definition or site tags changed since the last run: backfilling from the start".into(),
                );
                if !self.options.dry_run {
                    self.hub
                        .state()
                        .delete_checkpoints(
                            master,
                            &key.flow,
                            Some(&key.stream),
                            &[key.site.as_str()],
                        )
                        .await?;
                }
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Window phase: the cursor value the run starts at (the checkpoint's
    /// `resume_from`, or its own cursor value for a checkpoint written
    /// before every run restarted inclusively), and the source's clock and
    /// snapshot taken before reading (see `crate::capture`).
    async fn open_window(
        &self,
        leg: &Leg<'_>,
        prepared: &Prepared,
        report: &mut StreamReport,
    ) -> Result<ReadWindow, RunError> {
        let saved = prepared.saved.as_ref();
        let from_cursor = saved.and_then(|c| {
            c.resume_from
                .clone()
                .or_else(|| c.position.first().cloned())
        });
        let clock = leg.source.visibility().await.map_err(|e| {
            RunError::connector(
                format_args!("reading the clock of {}", leg.source_place),
                &e,
            )
        })?;
        let floor = clock
            .as_ref()
            .map(|c| capture::visibility_floor(c.now, c.oldest_open, self.stream.cursor_lag));
        self.note_clock_behind(report, clock.as_ref(), saved, leg.source_place);
        // Late commits by transaction id: pulls from PostgreSQL tables.
        let by_xid = leg.direction == Direction::Pull
            && self.stream.late_commits == LateCommits::Xid
            && leg.source.dialect() == crate::dialect::Dialect::Postgres
            && matches!(self.stream.source, Source::Table(_));
        let snapshot_now = clock
            .as_ref()
            .and_then(|c| c.snapshot.clone())
            .filter(|_| by_xid);
        let snapshot_saved = saved
            .and_then(|c| c.snapshot.as_deref())
            .and_then(capture::Snapshot::parse)
            .filter(|_| by_xid);
        if saved.is_none() && self.stream.null_cursors == NullCursors::Skip {
            self.note_null_cursors(
                report,
                leg.source,
                &prepared.resolved,
                &prepared.site_values,
            )
            .await;
        }
        Ok(ReadWindow {
            from_cursor,
            clock,
            floor,
            snapshot_saved,
            snapshot_now,
        })
    }

    /// Whether the quarantine may hold rows of this (stream, site): they are
    /// released when applied again, and only worth the DELETEs when some
    /// are there.
    async fn quarantine_open(&self, key: &CheckpointKey) -> Result<bool, RunError> {
        if self.stream.on_error != OnError::Quarantine || self.options.dry_run {
            return Ok(false);
        }
        let master = self.hub.master();
        Ok(self.hub.state().quarantine_count(master, key).await? > 0)
    }

    /// Read phase: (1) rows below the cursor read's start written by
    /// transactions the stored snapshot may not have seen, first, so that
    /// the cursor read's checkpoints may carry this run's snapshot; (2)
    /// the cursor read, from the overlap's start (inclusive); (3) rows
    /// whose cursor is NULL, which no cursor read returns. Each counted in
    /// the run's note where it found rows.
    async fn read_all(
        &self,
        place: &RunPlace<'_>,
        applied: &mut Applied,
        window: &ReadWindow,
        site_values: &[Value],
        report: &mut StreamReport,
    ) -> Result<(), RunError> {
        let dialect = place.leg.source.dialect();
        let keyset = self.stream.keyset_source_columns();
        let spec = place
            .resolved
            .read_spec(&keyset, window.from_cursor.as_ref());
        let mut params = site_values.to_vec();
        params.extend(window.from_cursor.iter().cloned());
        if let (Some(seen), Some(now)) = (&window.snapshot_saved, &window.snapshot_now)
            && seen.may_have_missed_commits(now)
            && let Some(sql) = dialect.late_commit_select(&spec, seen)
        {
            let late = self
                .read_and_apply(place, applied, &sql, &params, ReadPart::Side, report)
                .await?;
            if late > 0 {
                add_note(
                    report,
                    format!("rows committed late, found by transaction id: {late}"),
                );
            }
        }
        let sql = dialect.keyset_select(&spec);
        self.read_and_apply(place, applied, &sql, &params, ReadPart::Cursor, report)
            .await?;
        if self.stream.null_cursors == NullCursors::Read {
            let sql = dialect.null_cursor_select(&spec);
            let nulls = self
                .read_and_apply(place, applied, &sql, site_values, ReadPart::Side, report)
                .await?;
            report.null_cursor_rows += nulls;
            if nulls > 0 {
                let cursor = &self.stream.cursor;
                add_note(
                    report,
                    format!("rows with a NULL cursor `{cursor}` read: {nulls}"),
                );
            }
        }
        Ok(())
    }

    /// Finish phase, snapshot: every read saw what this run's snapshot saw,
    /// so it is stored when no batch stored it (a checkpoint left as it was
    /// keeps the older snapshot, whose late rows would be re-read every
    /// run). An idle site's snapshot does not change: no write.
    async fn store_snapshot(
        &self,
        place: &RunPlace<'_>,
        applied: &mut Applied,
    ) -> Result<(), RunError> {
        let (Some(now), Some(saved)) = (&place.snapshot, &applied.saved) else {
            return Ok(());
        };
        if applied.stored_snapshot.as_ref() == Some(now) || self.options.dry_run {
            return Ok(());
        }
        let checkpoint = Checkpoint {
            snapshot: Some(now.clone()),
            ..saved.clone()
        };
        let master = self.hub.master();
        let mut tx = master
            .begin()
            .await
            .map_err(crate::state::StateError::from)?;
        self.hub
            .state()
            .save_checkpoint(&mut tx, place.key, &checkpoint)
            .await?;
        tx.commit().await.map_err(crate::state::StateError::from)?;
        applied.stored_snapshot = checkpoint.snapshot.clone();
        applied.saved = Some(checkpoint);
        Ok(())
    }

    /// Finish phase, delete detection (`deletes = "detect"`). The rows have
    /// arrived; a failed comparison must not stop the next runs from
    /// bringing new ones (nor open the circuit): the run ends `partial`
    /// with the reason. Deletes count as rows written in the run history.
    async fn detect_deletes_after(
        &self,
        place: &RunPlace<'_>,
        applied: &Applied,
        window: &ReadWindow,
        site_values: &[Value],
        report: &mut StreamReport,
    ) {
        let now = window
            .clock
            .as_ref()
            .map_or_else(chrono::Utc::now, |c| c.now);
        let cursor_value = applied.saved.as_ref().and_then(|c| c.position.first());
        let outcome = self
            .reconcile(place, site_values, now, cursor_value, report)
            .await;
        match outcome {
            Ok(deleted) => {
                report.rows_deleted += deleted;
                report.rows_written += deleted;
                self.counters.add(0, deleted);
            }
            Err(e) => report.delete_detection_error = Some(e),
        }
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
    async fn reconcile(
        &self,
        place: &RunPlace<'_>,
        site_values: &[Value],
        now: chrono::DateTime<chrono::Utc>,
        cursor_value: Option<&Value>,
        report: &mut StreamReport,
    ) -> Result<u64, String> {
        let (source, target) = (place.leg.source, place.leg.target);
        let (resolved, target_info) = (place.resolved, place.target_info);
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
