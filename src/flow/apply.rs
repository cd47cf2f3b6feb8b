//! The apply stage of a stream run: each batch mapped by the stream's
//! [`MappingPlan`], checked, and written to the target idempotently with its
//! checkpoint (pull: one master transaction; push: the site's commit, then
//! the checkpoint), refused rows named or quarantined, deadlocks and
//! serialization failures run again.

use super::StreamReport;
use super::context::{Applied, ReadPart, StreamRun};
use super::error::RunError;
use super::leg::{Leg, RunPlace};
use crate::capture;
use crate::config::OnError;
use crate::connector::{Connector, ConnectorError, ErrorKind, Savepoint};
use crate::dialect::UpsertSpec;
use crate::mediate::{MapError, MappedBatch, ValueFixes};
use crate::state::{Checkpoint, CheckpointKey, StateError};
use crate::value::{Batch, Value};

/// When the database refuses a batch, finds the first row it refuses, by
/// applying the rows one by one under savepoints in a transaction that is
/// rolled back, and names it: "row (store_id, id) = (s1, 7): <error>".
/// Returns the batch's error unchanged if it was not about a row (a lost
/// connection, a timeout) or no single row fails alone. Nothing is written.
pub(super) async fn refused_row(
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
        if tx.savepoint(Savepoint::Set).await.is_err() {
            break;
        }
        match tx.upsert(spec, std::slice::from_ref(row)).await {
            Ok(_) => {
                if tx.savepoint(Savepoint::Release).await.is_err() {
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
    error.into_connector()
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
        tx.savepoint(Savepoint::Set).await?;
        match tx.upsert(spec, std::slice::from_ref(row)).await {
            Ok(n) => written += n,
            Err(e) if is_row_error(&e) => {
                tx.savepoint(Savepoint::RollBack).await?;
                refused.push((i, e.to_string()));
            }
            Err(e) => return Err(e),
        }
        tx.savepoint(Savepoint::Release).await?;
    }
    Ok((written, refused))
}

/// Row keys (JSON) whose quarantine entries a written batch releases: its
/// rows the target accepted (`refused` holds the others' indexes) and its
/// deleted keys (a quarantined row deleted since at the source is gone
/// too).
fn released_keys(write: &BatchWrite<'_>, refused: &[(usize, String)]) -> Vec<String> {
    let refused_rows: std::collections::HashSet<usize> = refused.iter().map(|(i, _)| *i).collect();
    (0..write.rows.len())
        .filter(|i| !refused_rows.contains(i))
        .map(|i| row_key_json(&write.upsert, &write.rows[i]))
        .chain(
            write
                .deleted_keys
                .iter()
                .map(|key| row_key_json(&write.delete, key)),
        )
        .collect()
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
    let message = error.to_string();
    format!(
        "row ({}) = ({}){}: {message}",
        spec.key.join(", "),
        key.join(", "),
        refused_column(spec, row, &message)
    )
}

/// `, column `c`` when the database's refusal quotes a value (PostgreSQL:
/// `invalid input syntax for type smallint: "t"`, `date/time field value
/// out of range: "838:59:59"`), which names no column) that exactly one
/// column of `row` holds as the write sends it; else nothing.
fn refused_column(spec: &UpsertSpec<'_>, row: &[Value], message: &str) -> String {
    let Some((_, rest)) = message.rsplit_once(": \"") else {
        return String::new();
    };
    let Some((quoted, _)) = rest.split_once('"') else {
        return String::new();
    };
    let holds = |value: &Value| match value {
        Value::Text(text) => text == quoted,
        Value::Bool(b) => quoted == if *b { "t" } else { "f" },
        Value::Null => false,
        other => other.to_string() == quoted,
    };
    let mut columns = (spec.columns.iter().zip(row)).filter(|(_, value)| holds(value));
    match (columns.next(), columns.next()) {
        (Some((column, _)), None) => format!(", column `{column}`"),
        _ => String::new(),
    }
}

/// What one batch writes at the target, in one transaction.
pub(super) struct BatchWrite<'a> {
    /// The upsert of `rows`.
    upsert: UpsertSpec<'a>,
    /// Rows to upsert (target column order).
    rows: &'a [Vec<Value>],
    /// The conflict key, for deleting `deleted_keys`.
    delete: UpsertSpec<'a>,
    /// Conflict keys of soft-deleted source rows.
    deleted_keys: &'a [Vec<Value>],
    /// Quarantine entries of rows refused before writing (by the mapping
    /// plan's value checks), stored with the batch.
    refused_before: &'a [(String, String, String)],
    /// The checkpoint's key.
    key: &'a CheckpointKey,
    /// The checkpoint as stored (what the write expects to replace).
    expected: Option<&'a Checkpoint>,
    /// The checkpoint after this batch (`None`: there is none to store yet).
    checkpoint: Option<&'a Checkpoint>,
    /// `checkpoint` is the stored one (same position: the `cursor_lag`
    /// overlap re-read by a no-op run).
    checkpoint_stored: bool,
    /// The quarantine may hold rows of this (stream, site) to release.
    release_quarantine: bool,
    /// Count only changed rows as read (`ReadPart::Late`).
    count_changed_only: bool,
    /// The site's initial load into a target holding none of its rows:
    /// inserted without conflict handling (`Tx::copy_in`).
    initial_load: bool,
}

/// The checkpoint after a batch: for a batch of the cursor read that ended
/// at `end`, the later of the stored position and `end` (re-reading the
/// overlap never moves it back), with where the next run starts
/// (`capture::resume_from`, from `place`'s floor and cursor zone) and the
/// run's snapshot, or, where `gaps` watches an integer cursor and waits for
/// a gap in its ids, a start just below the gap and the hold in place of
/// the snapshot (`capture::GapScan::held`); for a batch read out of cursor
/// order (`end` = `None`), the stored checkpoint unchanged (`None` when
/// there is none yet).
fn next_checkpoint(
    saved: Option<&Checkpoint>,
    end: Option<Vec<Value>>,
    cursor_lag: std::time::Duration,
    place: &RunPlace<'_>,
    gaps: Option<&capture::GapScan>,
) -> Option<Checkpoint> {
    let facts = CheckpointFacts {
        cursor_lag,
        floor: place.floor,
        cursor_zone: place.leg.cursor_zone,
        fingerprint: place.fingerprint,
        snapshot: place.snapshot.as_deref(),
        gaps,
    };
    facts.after(saved, end)
}

/// What a run's checkpoints carry besides their position.
struct CheckpointFacts<'a> {
    cursor_lag: std::time::Duration,
    floor: Option<chrono::DateTime<chrono::Utc>>,
    cursor_zone: Option<chrono_tz::Tz>,
    fingerprint: &'a str,
    snapshot: Option<&'a str>,
    gaps: Option<&'a capture::GapScan>,
}

impl CheckpointFacts<'_> {
    /// See [`next_checkpoint`].
    fn after(&self, saved: Option<&Checkpoint>, end: Option<Vec<Value>>) -> Option<Checkpoint> {
        let Some(end) = end else {
            return saved.cloned();
        };
        let position = match saved {
            Some(checkpoint) => checkpoint.later_position(&end),
            None => end,
        };
        let lagged =
            || capture::resume_from(&position[0], self.cursor_lag, self.floor, self.cursor_zone);
        let (resume_from, snapshot) = match self.gaps.map(capture::GapScan::held) {
            // A gap in an integer cursor holds the next start below it.
            Some(Some((before_gap, hold))) => {
                (Some(Value::Int(before_gap)), Some(hold.to_string()))
            }
            Some(None) => (lagged(), None),
            None => (lagged(), self.snapshot.map(str::to_string)),
        };
        Some(Checkpoint {
            resume_from,
            position,
            fingerprint: self.fingerprint.to_string(),
            snapshot,
        })
    }
}

impl StreamRun<'_> {
    /// Maps, checks and applies one batch read from the source; returns
    /// the rows it held. A [`ReadPart::Cursor`] batch moves the checkpoint
    /// to its last row; a [`ReadPart::Side`] batch leaves it where it is
    /// (and writes none when there is none yet).
    pub(super) async fn apply_batch(
        &self,
        place: &RunPlace<'_>,
        applied: &mut Applied,
        batch: Batch,
        part: ReadPart,
        report: &mut StreamReport,
    ) -> Result<u64, RunError> {
        if !place.leg.writes_master() {
            // Rows read from the master count against its rate budget.
            self.hub.master_writes.throttle(batch.len()).await;
        }
        if !place.routes.is_empty() && !self.options.dry_run {
            // Systems first, then master + checkpoint (see `route.rs`).
            self.write_routes(place, &batch, report).await?;
        }
        let fixes = ValueFixes {
            direction: place.leg.direction,
            source_dialect: place.leg.source.dialect(),
            described: &place.resolved.described,
            cursor_date_time: place.resolved.cursor_date_time.as_deref(),
            target_dialect: place.leg.target.dialect(),
            target: place.target_info,
            zero_dates: self.stream.zero_dates,
            booleans: &self.stream.booleans,
            site_zone: self.site.timezone,
        };
        let with_end = part == ReadPart::Cursor;
        if let Some(scan) = applied.gaps.as_mut().filter(|_| with_end) {
            let cursor = place.mapping.cursor_index();
            for row in &batch.rows {
                scan.see(&row[cursor]);
            }
        }
        // A push's `when`: the site gets the rows it selects, while the
        // checkpoint moves past every row read.
        let (batch, selected) = self.select_for_site(place, batch, with_end)?;
        let mut mapped = if self.stream.on_error == OnError::Quarantine && !self.options.dry_run {
            // A value refused before writing is quarantined like one the
            // database refuses; the batch is mapped again row by row only
            // when some row was refused.
            match place
                .mapping
                .map_batch(batch.clone(), &self.site.id, &fixes, with_end)
            {
                Ok(mapped) => mapped,
                Err(MapError::Row(_)) => {
                    place
                        .mapping
                        .map_batch_sparing(batch, &self.site.id, &fixes, with_end)?
                }
                Err(plan) => return Err(plan.into()),
            }
        } else {
            place
                .mapping
                .map_batch(batch, &self.site.id, &fixes, with_end)?
        };
        if let Some(selected) = selected {
            mapped.end = selected.end;
            mapped.read = selected.read;
        }
        let checkpoint = next_checkpoint(
            applied.saved.as_ref(),
            mapped.end.clone(),
            self.stream.cursor_lag,
            place,
            applied.gaps.as_ref(),
        );
        let overlap = with_end
            && matches!((&checkpoint, &applied.saved), (Some(new), Some(old)) if new.same_position(old));
        let (written, quarantined, deleted, checkpoint_saved) = if self.options.dry_run {
            // A dry run shows what it would delete, and on a PostgreSQL
            // target what it would insert or change (read, not written).
            let deleted = mapped.deleted_keys.len() as u64;
            (
                self.would_change(place, &mapped).await? + deleted,
                0,
                deleted,
                false,
            )
        } else {
            self.write_batch(
                place,
                applied,
                &mapped,
                checkpoint.as_ref(),
                part == ReadPart::Late,
            )
            .await?
        };
        report.rows_deleted += deleted;
        applied.filtered += mapped.filtered;
        if overlap && written == 0 && quarantined == 0 {
            applied.reread += mapped.read;
        }
        if quarantined > 0 {
            applied.quarantine_open = true;
            report.quarantined += quarantined;
        }
        let read = match part {
            ReadPart::Late if !self.options.dry_run => written,
            _ => mapped.read,
        };
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

    /// A dry run's count of `mapped` rows an upsert would insert or change
    /// at the target: asked of a PostgreSQL target in one read
    /// (`Connector::changed_rows`), 0 elsewhere (not predicted: the upsert
    /// itself is the only way to know there).
    ///
    /// Errors: the read fails (a `RunError` naming the target).
    async fn would_change(
        &self,
        place: &RunPlace<'_>,
        mapped: &MappedBatch,
    ) -> Result<u64, RunError> {
        if mapped.rows.is_empty() {
            return Ok(0);
        }
        let spec = place.mapping.upsert_spec(&self.stream.target);
        let leg = place.leg;
        match leg.target.changed_rows(&spec, &mapped.rows).await {
            Ok(changed) => Ok(changed.unwrap_or(0)),
            Err(e) => Err(RunError::connector(
                format_args!("comparing rows with {}", leg.target_place),
                &e,
            )),
        }
    }

    /// Writes mapped `rows` and deletes `deleted_keys` with `checkpoint`
    /// (see [`StreamRun::apply`]); returns what `apply` returns.
    async fn write_batch(
        &self,
        place: &RunPlace<'_>,
        applied: &Applied,
        mapped: &MappedBatch,
        checkpoint: Option<&Checkpoint>,
        count_changed_only: bool,
    ) -> Result<(u64, u64, u64, bool), RunError> {
        let (rows, deleted_keys) = (&mapped.rows, &mapped.deleted_keys);
        let mapping = place.mapping;
        let key_types = mapping.key_types();
        // A new snapshot alone is not worth a write (see `run`).
        let stored = match (checkpoint, &applied.saved) {
            (Some(new), Some(old)) => new.same_position(old),
            _ => false,
        };
        let upsert = mapping.upsert_spec(&self.stream.target);
        let refused_before: Vec<(String, String, String)> = mapped
            .refused
            .iter()
            .map(|(row, why)| quarantine_entry(&upsert, row, why))
            .collect();
        let write = BatchWrite {
            upsert,
            rows,
            refused_before: &refused_before,
            delete: mapping.delete_spec(&self.stream.target, &key_types),
            deleted_keys,
            key: place.key,
            expected: applied.saved.as_ref(),
            checkpoint,
            checkpoint_stored: stored,
            release_quarantine: applied.quarantine_open,
            count_changed_only,
            // Only the cursor read's batches (one statement: each key once).
            initial_load: place.initial_load && mapped.end.is_some(),
        };
        self.apply(place.leg, &write).await
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
    pub(super) async fn apply(
        &self,
        leg: &Leg<'_>,
        write: &BatchWrite<'_>,
    ) -> Result<(u64, u64, u64, bool), RunError> {
        let spec = &write.upsert;
        let rows = write.rows;
        let (target, target_place) = (leg.target, &leg.target_place);
        let _permit = if leg.writes_master() {
            // Waiting for the rate budget must not hold a write slot.
            self.hub
                .master_writes
                .throttle(rows.len() + write.deleted_keys.len())
                .await;
            Some(self.hub.master_writes.acquire().await)
        } else {
            None
        };
        // The overlap re-read of a no-op run: if the master already holds
        // every row exactly as the upsert would leave it, one read replaces
        // the write transaction (nothing to write, the checkpoint stays). On
        // any doubt (an error, a row that differs) the batch is applied.
        if leg.writes_master()
            && write.checkpoint_stored
            && write.deleted_keys.is_empty()
            && write.refused_before.is_empty()
            && !write.release_quarantine
            && !rows.is_empty()
            && matches!(target.changed_rows(spec, rows).await, Ok(Some(0)))
        {
            return Ok((0, 0, 0, false));
        }
        let mut conflicts = 0;
        let mut copy = write.initial_load;
        loop {
            let attempt = self.apply_once(leg, write, copy).await;
            let error = match attempt {
                Ok(applied) => return Ok(applied),
                Err(error) => error,
            };
            // A key already there (another writer of the same rows since the
            // run checked): this batch and the rest are upserted instead.
            if copy && error.is_unique_violation() {
                copy = false;
                continue;
            }
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
    async fn apply_once(
        &self,
        leg: &Leg<'_>,
        write: &BatchWrite<'_>,
        copy: bool,
    ) -> Result<(u64, u64, u64, bool), ConnectorError> {
        let spec = &write.upsert;
        let rows = write.rows;
        let (key, expected, checkpoint) = (write.key, write.expected, write.checkpoint);
        let target = leg.target;
        let mut tx = target.begin().await?;
        let inserted = if copy {
            tx.copy_in(spec, rows).await
        } else {
            tx.upsert(spec, rows).await
        };
        let (written, refused) = match inserted {
            Ok(_) if rows.is_empty() => (0, Vec::new()),
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
        let released = if write.release_quarantine {
            released_keys(write, &refused)
        } else {
            Vec::new()
        };
        let outcome = BatchOutcome {
            read: if write.count_changed_only {
                written
            } else {
                (rows.len() + write.deleted_keys.len() + write.refused_before.len()) as u64
            },
            written,
            quarantined: refused
                .iter()
                .map(|(i, error)| quarantine_entry(spec, &rows[*i], error))
                .chain(write.refused_before.iter().cloned())
                .collect(),
            released,
        };
        let state_unchanged = write.checkpoint_stored
            && outcome.written == 0
            && outcome.quarantined.is_empty()
            && outcome.released.is_empty();
        match leg.writes_master() {
            _ if state_unchanged => tx.commit().await?,
            // The batch, its checkpoint, quarantine and counts: one master transaction.
            true => {
                self.save_state(&mut tx, key, expected, checkpoint, &outcome)
                    .await
                    .map_err(state_as_connector)?;
                tx.commit().await?;
            }
            false => {
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

    /// Checkpoint, quarantine entries, released entries, the batch's
    /// `rows_changed` events (outbox) and the run's row counts, inside the
    /// master transaction `tx`.
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
        // The fence: a leased run writes only while its lease is its own.
        if let Some(lease) = self.lease {
            state.check_lease(tx, lease).await?;
        }
        if let Some(checkpoint) = checkpoint {
            state.save_checkpoint(tx, key, expected, checkpoint).await?;
        }
        if !quarantined.is_empty() {
            state.quarantine(tx, key, quarantined).await?;
        }
        if !released.is_empty() {
            state.release_quarantine(tx, key, released).await?;
        }
        // The batch's `rows_changed` events commit with its checkpoint.
        let events = super::events::rows_changed(
            self.flow,
            &self.site.id,
            self.run_id,
            &self.stream.name,
            *written,
        );
        if !events.is_empty() {
            state.enqueue_events(tx, &events).await?;
        }
        self.record_progress(tx, *read, *written).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_refusal_quoting_a_value_names_the_one_column_holding_it() {
        let columns = vec![
            "store_id".to_string(),
            "id".into(),
            "paid".into(),
            "tod".into(),
        ];
        let types = vec![
            "text".to_string(),
            "int".into(),
            "smallint".into(),
            "time".into(),
        ];
        let key = vec!["store_id".to_string(), "id".into()];
        let spec = UpsertSpec {
            table: "t",
            columns: &columns,
            column_types: &types,
            key: &key,
        };
        let row = vec![
            Value::Text("s1".into()),
            Value::Int(7),
            Value::Bool(true),
            Value::Text("838:59:59".into()),
        ];
        let named = |message: &str| refused_column(&spec, &row, message);
        assert_eq!(
            named("invalid input syntax for type smallint: \"t\" (code 22P02)"),
            ", column `paid`"
        );
        assert_eq!(
            named("date/time field value out of range: \"838:59:59\" (code 22008)"),
            ", column `tod`"
        );
        // A number quoted as the write sends it; nothing quoted, or two
        // columns holding the value: no column named.
        assert_eq!(
            named("invalid input syntax for type integer: \"7\""),
            ", column `id`"
        );
        assert_eq!(named("value too long for type character varying(2)"), "");
        let twice = vec![
            Value::Text("x".into()),
            Value::Int(1),
            Value::Bool(false),
            Value::Text("x".into()),
        ];
        assert_eq!(refused_column(&spec, &twice, "bad: \"x\""), "");
    }

    use super::*;

    fn facts(lag_seconds: u64) -> CheckpointFacts<'static> {
        CheckpointFacts {
            cursor_lag: std::time::Duration::from_secs(lag_seconds),
            floor: None,
            cursor_zone: None,
            fingerprint: "f",
            snapshot: Some("5:9:7"),
            gaps: None,
        }
    }

    /// A gap waited for in an integer cursor: the next run starts just
    /// below it and the hold replaces the snapshot; none waited for: the
    /// usual inclusive start, and no snapshot (a gap-watched source has
    /// none).
    #[test]
    fn a_held_gap_starts_the_next_run_below_it() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-03-01T10:00:10Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let mut scan = capture::GapScan::new(
            Some(&Value::Int(2)),
            None,
            now,
            std::time::Duration::from_secs(5),
        );
        for id in [2, 4, 5] {
            scan.see(&Value::Int(id));
        }
        let held = CheckpointFacts {
            gaps: Some(&scan),
            ..facts(5)
        }
        .after(None, Some(vec![Value::Int(5), Value::Int(5)]))
        .unwrap();
        assert_eq!(held.position, vec![Value::Int(5), Value::Int(5)]);
        assert_eq!(held.resume_from, Some(Value::Int(2)));
        assert_eq!(
            held.snapshot,
            Some(format!("gaps:{}:5", now.timestamp_micros()))
        );
        let mut filled = capture::GapScan::new(
            Some(&Value::Int(2)),
            None,
            now,
            std::time::Duration::from_secs(5),
        );
        for id in [2, 3, 4, 5] {
            filled.see(&Value::Int(id));
        }
        let plain = CheckpointFacts {
            gaps: Some(&filled),
            ..facts(5)
        }
        .after(None, Some(vec![Value::Int(5), Value::Int(5)]))
        .unwrap();
        assert_eq!(
            (plain.resume_from, plain.snapshot),
            (Some(Value::Int(5)), None)
        );
    }

    fn stored(position: Vec<Value>) -> Checkpoint {
        Checkpoint {
            resume_from: position.first().cloned(),
            position,
            fingerprint: "f".into(),
            snapshot: Some("1:2:".into()),
        }
    }

    #[test]
    fn a_side_batch_keeps_the_stored_checkpoint_and_writes_none_without_one() {
        let saved = stored(vec![Value::Int(7), Value::Int(2)]);
        assert_eq!(facts(0).after(Some(&saved), None), Some(saved));
        assert_eq!(facts(0).after(None, None), None);
    }

    #[test]
    fn a_cursor_batch_never_moves_the_checkpoint_back_and_restarts_inclusively() {
        let saved = stored(vec![Value::Int(7), Value::Int(2)]);
        // The overlap re-read ends below the stored position: it stays.
        let kept = facts(0)
            .after(Some(&saved), Some(vec![Value::Int(7), Value::Int(1)]))
            .unwrap();
        assert_eq!(kept.position, vec![Value::Int(7), Value::Int(2)]);
        // An integer cursor restarts at its own value (ties below the key).
        assert_eq!(kept.resume_from, Some(Value::Int(7)));
        // The run's snapshot goes with it.
        assert_eq!(kept.snapshot.as_deref(), Some("5:9:7"));
        let ahead = facts(0)
            .after(Some(&saved), Some(vec![Value::Int(9), Value::Int(1)]))
            .unwrap();
        assert_eq!(ahead.position, vec![Value::Int(9), Value::Int(1)]);
        // A time cursor restarts `cursor_lag` below.
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let first = facts(5)
            .after(None, Some(vec![Value::TimestampTz(at), Value::Int(1)]))
            .unwrap();
        assert_eq!(
            first.resume_from,
            Some(Value::TimestampTz(at - chrono::Duration::seconds(5)))
        );
    }

    #[test]
    fn only_data_errors_are_a_rows_fault() {
        let data = ConnectorError::Database {
            kind: ErrorKind::Data,
            code: Some("23502".into()),
            message: "null value".into(),
        };
        let denied = ConnectorError::Database {
            kind: ErrorKind::Permission,
            code: Some("42501".into()),
            message: "permission denied".into(),
        };
        assert!(is_row_error(&data));
        assert!(!is_row_error(&denied));
        assert!(!is_row_error(&ConnectorError::Timeout { seconds: 1 }));
    }

    #[test]
    fn a_conflict_pause_grows_and_stays_bounded() {
        for attempt in 1..=8 {
            let base = 50u64 << (attempt - 1).min(5);
            let pause = conflict_pause(attempt).as_millis() as u64;
            assert!((base..=2 * base).contains(&pause), "{attempt}: {pause}");
        }
    }
}
