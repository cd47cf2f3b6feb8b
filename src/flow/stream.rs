//! One stream at one site: the run's phases (prepare the source, target,
//! mapping and checkpoint; the reads of `read.rs`, each batch through
//! `apply.rs`; finish with the snapshot and delete detection), the
//! per-pass plan of a flow's streams, and the fingerprint that decides a
//! backfill.

use super::context::{Applied, ReadPart, StreamRun, add_note};
use super::error::RunError;
use super::leg::{Leg, RunPlace};
use super::plan::{fingerprint, schema_problems};
use super::source::ResolvedSource;
use super::{StreamReport, reconcile, route};
use crate::capture;
use crate::config::{Deletes, Direction, LateCommits, NullCursors, OnError, Source};
use crate::connector::{Connector, SourceClock, TableInfo};
use crate::mediate::expr::ExprScope;
use crate::mediate::{MappingPlan, TransformSides};
use crate::state::{Checkpoint, CheckpointKey};
use crate::value::Value;

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
    /// Each route to a `[[system]]` (mapping plan, `when`), in route order.
    routes: Vec<route::PreparedRoute>,
    /// A push's per-site `when`, compiled.
    site_when: Option<crate::mediate::expr::Expr>,
}

/// Unchanged rows re-read below the checkpoint from which a run says so
/// in its note (a trial saw 4,840 re-read twice without a word under
/// 10,000-row batches).
const REREAD_NOTE_ROWS: u64 = 1_000;

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
            self.hub.master_for(self.flow.direction),
            self.site_conn,
            self.stream,
            self.site,
        );
        let prepared = self.prepare(&leg, report).await?;
        let target_info = match (&prepared.target_info, &self.plan.master_target) {
            (Some(info), _) | (None, Some(info)) => info,
            (None, None) => unreachable!("prepare describes the target when the plan has none"),
        };
        // The source's clock and the target's emptiness, side by side.
        let (window, initial_load) = tokio::join!(
            self.open_window(&leg, &prepared, report),
            self.initial_load(&leg, &prepared)
        );
        let window = window?;
        let routes = self.route_runs(&prepared.routes).await?;
        let expr_scope = self.expr_scope();
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
            snapshot: window.snapshot_now.as_ref().map(ToString::to_string),
            initial_load,
            routes: &routes,
            expr_scope: &expr_scope,
            site_when: prepared.site_when.as_ref(),
            shared_read: leg.direction == Direction::Push,
        };
        let mut applied = Applied {
            stored_snapshot: prepared.saved.as_ref().and_then(|c| c.snapshot.clone()),
            saved: prepared.saved.clone(),
            quarantine_open: self.quarantine_open(&prepared.key).await?,
            filtered: 0,
            reread: 0,
            gaps: self.gap_scan(&leg, &prepared, &window),
        };
        let read = self
            .read_all(&place, &mut applied, &window, &prepared.site_values, report)
            .await;
        if applied.filtered > 0 {
            let rows = match applied.filtered {
                1 => "1 row".to_string(),
                n => format!("{n} rows"),
            };
            add_note(report, format!("{rows} left out by the stream's `filter`"));
        }
        self.note_reread(report, applied.reread);
        self.note_given_up(report, applied.gaps.as_ref());
        read?;
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
        // A push describes the master's source once per pass (the same
        // statement for every site).
        let describes = (leg.direction == Direction::Push).then_some(&self.plan.shared_describes);
        // The source and the target are described side by side (two
        // databases: one round trip of latency instead of two).
        let (resolved, described) = tokio::join!(
            ResolvedSource::resolve(
                self.stream,
                self.site,
                leg.source_statements,
                describes,
                batch_size,
            ),
            async {
                match &self.plan.master_target {
                    Some(_) => Ok(None),
                    None => self.read_target(leg).await.map(Some),
                }
            }
        );
        let resolved = resolved.map_err(|e| {
            RunError::new(e.kind, format!("reading from {}: {e}", leg.source_place))
        })?;
        let target_info = match described? {
            Some(described) => Some(self.target_or_create(leg, &resolved, described).await?),
            None => None,
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
        let scope = ExprScope {
            site_id: self.site.id.clone(),
            site_tags: self.site.tags.clone(),
            run_started_at: Some(chrono::Utc::now()),
            flow: self.flow.name.clone(),
        };
        let mapping = MappingPlan::build(
            self.stream,
            leg.direction,
            &source_columns,
            target,
            &leg.target_place,
        )?
        .with_transforms(
            self.stream,
            &TransformSides {
                described: &resolved.described,
                source_dialect: leg.source.dialect(),
                target,
                target_dialect: leg.target.dialect(),
            },
            scope,
        )?;
        let config = self.hub.config();
        let stream_place = format!("flow `{}`, stream `{}`", self.flow.name, self.stream.name);
        let routes = route::prepare_routes(
            &self.stream.routes,
            &self.plan.route_targets,
            leg.source.dialect(),
            &resolved.described,
            &|name| {
                config
                    .system(name)
                    .map_or(crate::dialect::Dialect::Postgres, |s| s.url.dialect())
            },
            self.site,
            &stream_place,
        )?;
        let site_when = route::compile_when(
            self.stream.when.as_deref(),
            &resolved.described,
            self.site,
            &format!("{stream_place}, `when`"),
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
        let tags = super::plan::expression_tags(self.stream, &self.site.tags);
        let fingerprint = fingerprint(
            self.flow,
            self.stream,
            &resolved.site_params,
            &tags,
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
            routes,
            site_when,
        })
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
        let clock = leg.source_statements.visibility().await.map_err(|e| {
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
        if !by_xid {
            note_blind_login(report, clock.as_ref(), leg.source_place);
        }
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
                leg.source_statements,
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

    /// Notes a re-read of at least [`REREAD_NOTE_ROWS`] (or a batch, if
    /// smaller) unchanged rows below the checkpoint: a cost every run pays
    /// until newer rows arrive, which the row counts alone ("200000 read, 0
    /// written") do not explain.
    fn note_reread(&self, report: &mut StreamReport, reread: u64) {
        if reread < (self.hub.config().hub.batch_size as u64).min(REREAD_NOTE_ROWS) {
            return;
        }
        add_note(
            report,
            format!(
                "{reread} rows re-read unchanged below the checkpoint: each run reads again the rows stamped \
                 within `cursor_lag` ({}) of its cursor value or sharing it, or after a gap in integer ids still \
                 waited for; many when one transaction stamped many rows alike, until newer rows arrive",
                humantime::format_duration(self.stream.cursor_lag)
            ),
        );
    }

    /// Notes ids this run moved past after waiting `cursor_lag` for them
    /// (`capture::GapScan::given_up`), something to alert on: a
    /// transaction open longer than that loses its rows until a `reset`.
    fn note_given_up(&self, report: &mut StreamReport, gaps: Option<&capture::GapScan>) {
        let given_up = gaps.map_or(0, capture::GapScan::given_up);
        if given_up == 0 {
            return;
        }
        add_note(
            report,
            format!(
                "{given_up} missing ids of cursor `{}` given up after waiting `cursor_lag` ({}): rows of a \
                 transaction that took one and commits later are not read (a `reset` backfill finds them); \
                 rolled-back inserts and deleted rows leave such gaps too",
                self.stream.cursor,
                humantime::format_duration(self.stream.cursor_lag)
            ),
        );
    }

    /// The watch on gaps in an integer cursor (`capture::GapScan`): for a
    /// MySQL/MariaDB source, whose transactions in progress a reader cannot
    /// see, and a PostgreSQL source not read by transaction id (a `query`,
    /// a push's master, `late_commits = "lag"`); not for SQLite (one writer
    /// at a time). Needs the source's clock. The stored hold is read from
    /// the checkpoint's snapshot column, which no PostgreSQL snapshot
    /// occupies when transaction ids are not used.
    fn gap_scan(
        &self,
        leg: &Leg<'_>,
        prepared: &Prepared,
        window: &ReadWindow,
    ) -> Option<capture::GapScan> {
        if leg.source.dialect() == crate::dialect::Dialect::Sqlite || window.snapshot_now.is_some()
        {
            return None;
        }
        let now = window.clock.as_ref()?.now;
        let hold = (prepared.saved.as_ref())
            .and_then(|c| c.snapshot.as_deref())
            .and_then(capture::GapHold::parse);
        Some(capture::GapScan::new(
            window.from_cursor.as_ref(),
            hold,
            now,
            self.stream.cursor_lag,
        ))
    }

    /// Whether this run is an initial load into a PostgreSQL or MySQL table that
    /// holds none of its rows (no checkpoint; a pull: no master row with
    /// this site's id in `site_column`; a push: an empty site table): then
    /// the cursor read's batches need no conflict handling. Any doubt (an
    /// error asking) says no.
    async fn initial_load(&self, leg: &Leg<'_>, prepared: &Prepared) -> bool {
        if prepared.saved.is_some()
            || self.options.dry_run
            || leg.target.dialect() == crate::dialect::Dialect::Sqlite
        {
            return false;
        }
        let dialect = leg.target.dialect();
        let (sql, params) = if leg.writes_master() {
            // A pull: the master table holds every site's rows.
            let Some(site_column) = &self.stream.site_column else {
                return false;
            };
            let sql = dialect.any_row_where(&self.stream.target, site_column);
            (sql, vec![Value::Text(self.site.id.clone())])
        } else {
            // A push: the site's table must be empty.
            (dialect.any_row(&self.stream.target), Vec::new())
        };
        matches!(leg.target.query(&sql, &params).await, Ok(batch) if batch.rows.is_empty())
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
                .read_and_apply(place, applied, &sql, &params, ReadPart::Late, report)
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
        if let Some(lease) = self.lease {
            self.hub.state().check_lease(&mut tx, lease).await?;
        }
        self.hub
            .state()
            .save_checkpoint(&mut tx, place.key, Some(saved), &checkpoint)
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
            Err(e) => report.delete_detection_error = Some(e.message),
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
        let lag = chrono::Duration::from_std(self.stream.cursor_lag).unwrap_or_default();
        // A cursor of local times (MySQL `DATETIME`, PostgreSQL `timestamp`)
        // against the source's clock in the site's zone (UTC without one):
        // reads do not start from the clock there, so rows stamped below a
        // checkpoint in the future are not read until a `reset`.
        if let (Some(clock), Some(Value::Timestamp(applied))) =
            (clock, saved.and_then(|c| c.position.first()))
        {
            let local_now = match self.site.timezone {
                Some(zone) => clock.now.with_timezone(&zone).naive_local(),
                None => clock.now.naive_utc(),
            };
            if local_now + lag < *applied {
                add_note(
                    report,
                    format!(
                        "the clock of {source_place} ({local_now}, {}) is behind the checkpoint's cursor ({applied}): \
                         rows were stamped in the future, the clock went back, or the site's local times are not in \
                         that zone (set its `timezone` tag); rows stamped below the checkpoint are not read until \
                         `hubsync reset`",
                        self.site
                            .timezone
                            .map_or("UTC".to_string(), |zone| zone.name().to_string())
                    ),
                );
            }
            return;
        }
        if let (Some(clock), Some(Value::TimestampTz(applied))) =
            (clock, saved.and_then(|c| c.position.first()))
            && clock.now + lag < *applied
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
    /// `flow/reconcile.rs`) through its narrow context; `now` is the
    /// source's clock. Returns rows deleted; notes go to the run's note.
    async fn reconcile(
        &self,
        place: &RunPlace<'_>,
        site_values: &[Value],
        now: chrono::DateTime<chrono::Utc>,
        cursor_value: Option<&Value>,
        report: &mut StreamReport,
    ) -> Result<u64, RunError> {
        if let Some(problem) = &self.plan.detect_refused {
            return Err(problem.clone().into());
        }
        let site_id = Value::Text(self.site.id.clone());
        let detection = reconcile::DetectDeletes {
            stream: self.stream,
            direction: place.leg.direction,
            site_id: &site_id,
            source: place.leg.source,
            source_from: place.resolved.select_from(),
            source_params: site_values,
            target: place.leg.target,
            target_info: place.target_info,
            now,
            cursor_value,
            chunk: self.hub.config().hub.batch_size,
            master_writes: place.leg.writes_master().then_some(&self.hub.master_writes),
            fence: (place.leg.writes_master())
                .then_some(self.lease)
                .flatten()
                .map(|lease| (self.hub.state(), lease)),
            cancel: self.cancel,
            quarantine: (self.stream.on_error == OnError::Quarantine)
                .then(|| (self.hub.state(), self.hub.master(), place.key)),
        };
        let mut notes = Vec::new();
        let deleted = detection.run(&mut notes).await?;
        for note in notes {
            add_note(report, note);
        }
        Ok(deleted)
    }
}

/// Notes a source login that cannot see other logins' open transactions
/// (`SourceClock::sees_other_logins`), for a read the late-commit floor
/// alone guards (no transaction ids): trial 4's push whose master login
/// lacked the role lost a 20 s transaction's rows with every run
/// "succeeded". `source_place`: "the site" / "the master".
fn note_blind_login(
    report: &mut StreamReport,
    clock: Option<&crate::connector::SourceClock>,
    source_place: &str,
) {
    if clock.and_then(|c| c.sees_other_logins) == Some(false) {
        add_note(
            report,
            format!(
                "{source_place}'s login cannot see other logins' open transactions (grant it `pg_read_all_stats`): \
                 their rows can be missed if they commit more than `cursor_lag` after their cursor value"
            ),
        );
    }
}
