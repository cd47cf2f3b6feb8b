//! hubsync's own state, kept in the master database: checkpoints per
//! (flow, stream, site) and the run history.
//!
//! Tables live in schema `hubsync` on PostgreSQL and as `hubsync_`-prefixed
//! tables on SQLite and MySQL/MariaDB (in the master's own database). They
//! are created on first use and versioned: a `schema_version` row and
//! forward migrations (`migrations.rs`: one ordered list, each entry with
//! every dialect's SQL side by side) applied in order, in one transaction (serialised
//! between hubs by an advisory lock on PostgreSQL, `GET_LOCK` on MySQL,
//! whose DDL commits at once, so a MySQL migration is not atomic but is
//! re-runnable: tables are created `IF NOT EXISTS` and a column or index
//! that already exists is passed over).
//!
//! Checkpoint rules (after quickwit's `checkpoint.rs`): a checkpoint is the
//! furthest keyset position (cursor, primary key...) applied, with a
//! fingerprint of what defines the stream for that site and the cursor value
//! the next run re-reads from (`resume_from`, for late commits). Re-reading
//! that overlap never moves the position back ([`Checkpoint::later_position`]);
//! a pull writes it in the same master transaction as the batch it covers.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::connector::{Connector, ConnectorError, ErrorKind, Tx};
use crate::dialect::Dialect;
use crate::value::{Batch, Value, compare_positions};

mod history;
mod leases;
mod migrations;
mod outbox;
pub use self::history::RunFilter;
pub use self::leases::{Claim, Lease, LeaseRecord, NextDue};
pub use self::outbox::{DeliveryState, NewEvent, OutboxRecord};

/// Current version of the state schema: the last migration's (see
/// `state/migrations.rs`, which lists every migration with each dialect's SQL).
pub const SCHEMA_VERSION: i64 = migrations::MIGRATIONS[migrations::MIGRATIONS.len() - 1].version;

/// Marks the error of a run that the hub itself cut short (a stop signal,
/// a hub that died); such runs say nothing about the site and do not count
/// toward its circuit breaker.
pub const INTERRUPTED: &str = "interrupted: ";

/// How long `start_run` waits for another hub's MySQL `GET_LOCK` on the
/// same (flow, site) (held only while that hub records its run's start).
pub const RUN_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How often a running run records that it is alive (and its row counts).
pub const HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// A `running` run whose last heartbeat is older than this belonged to a
/// hub that died; a newer one is alive and its (flow, site) is not started
/// again. Three missed heartbeats.
pub const HEARTBEAT_EXPIRY: std::time::Duration = std::time::Duration::from_secs(30);

/// Errors of the state layer.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The master refused a state statement.
    #[error("master state tables: {0}")]
    Connector(ConnectorError),
    /// A stored row could not be read back.
    #[error("master state tables: {0}")]
    Corrupt(String),
    /// The per-(flow, site) run lock could not be taken in time (MySQL
    /// `GET_LOCK`): another hub holds it.
    #[error(
        "could not take the run lock of this flow and site within {seconds} s; another hub is starting it"
    )]
    LockTimeout {
        /// How long the hub waited, in seconds.
        seconds: u64,
    },
    /// A checkpoint write found the stored checkpoint changed since the
    /// writer read (or last wrote) it: another hub's run of the same
    /// stream and site, or `hubsync reset`, moved or removed it. Nothing
    /// was written.
    #[error(
        "the checkpoint of flow `{flow}`, stream `{stream}`, site `{site}` was changed by another writer \
         (another hub, or `hubsync reset`) since this run read it, so this run stops without moving it; \
         the next run resumes from the stored checkpoint"
    )]
    CheckpointMoved {
        /// Flow name.
        flow: String,
        /// Stream name.
        stream: String,
        /// Site id.
        site: String,
    },
    /// A checkpoint write would have moved the position back (a checkpoint
    /// never moves backwards; see [`Checkpoint::moves_back_from`]). Nothing
    /// was written.
    #[error(
        "the checkpoint of flow `{flow}`, stream `{stream}`, site `{site}` would move back from {stored} to {new}, \
         so it was not written and this run stops; the next run resumes from the stored checkpoint \
         (this is a hubsync bug: please report it with the stream's cursor and key column types)"
    )]
    CheckpointBackwards {
        /// Flow name.
        flow: String,
        /// Stream name.
        stream: String,
        /// Site id.
        site: String,
        /// The stored position ([`format_position`]).
        stored: String,
        /// The refused position ([`format_position`]).
        new: String,
    },
    /// A leased run's lease no longer carries its (holder, token): it
    /// expired and another replica claimed the pair (see `state/leases.rs`).
    /// The write that found out was refused and nothing of it was kept.
    #[error(
        "lease lost: the lease of flow `{flow}` site `{site}` held by replica `{holder}` (token {token}) \
         expired and another replica took the pair over, so this run stops without writing; \
         the new holder resumes from the stored checkpoint"
    )]
    LeaseLost {
        /// Flow name.
        flow: String,
        /// Site id.
        site: String,
        /// The replica that held it.
        holder: String,
        /// The token it held.
        token: i64,
    },
    /// Another run of the same (flow, site) is alive.
    #[error(
        "already running (run {run_id}, last heartbeat {seconds} s ago), in this or another hub process; \
         if that hub died, this pair can run again once its heartbeat is older than 30 s"
    )]
    AlreadyRunning {
        /// The live run.
        run_id: String,
        /// Age of its last heartbeat, in seconds.
        seconds: u64,
    },
}

// Not `#[from]`: that would also make the cause a `source()`, and `{:#}`
// would print its message twice.
impl From<ConnectorError> for StateError {
    fn from(error: ConnectorError) -> Self {
        StateError::Connector(error)
    }
}

impl StateError {
    /// This error as a connector error, for code paths that carry those:
    /// the master's own error as it was, [`StateError::LeaseLost`] as kind
    /// [`ErrorKind::Interrupted`] (the hub cut the run short: not the
    /// site's fault, not retried), anything else as kind `other`.
    pub fn into_connector(self) -> ConnectorError {
        match self {
            StateError::Connector(e) => e,
            lost @ StateError::LeaseLost { .. } => ConnectorError::Database {
                kind: ErrorKind::Interrupted,
                code: None,
                message: lost.to_string(),
            },
            other => ConnectorError::other(other.to_string()),
        }
    }
}

/// Shorthand for this layer's results.
pub type Result<T> = std::result::Result<T, StateError>;

/// Identifies one checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointKey {
    /// Flow name.
    pub flow: String,
    /// Stream name (unique within the flow).
    pub stream: String,
    /// Site id.
    pub site: String,
}

/// A stored checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Furthest (cursor, primary key...) applied, as source values.
    pub position: Vec<Value>,
    /// Hash of what defines the stream for this site (see `flow::fingerprint`).
    pub fingerprint: String,
    /// Cursor value the next run starts reading at (inclusive): the
    /// position's cursor minus the stream's `cursor_lag`, lowered further to
    /// the start of the oldest open write transaction seen at the site. Rows
    /// committed late with an older cursor value are found there. `None`:
    /// resume strictly after `position` (no overlap).
    pub resume_from: Option<Value>,
    /// PostgreSQL sources: the source's `pg_current_snapshot()` taken when
    /// the run that last completed began, in PostgreSQL's text form
    /// (`xmin:xmax:xip,...`; see `capture::Snapshot`). The next run re-reads
    /// rows written by transactions that snapshot did not see, whatever
    /// their cursor values. `None`: other dialects, query sources, or a
    /// checkpoint from before this column.
    pub snapshot: Option<String>,
}

impl Checkpoint {
    /// True if both say the same about where reads resume (position,
    /// fingerprint, `resume_from`, and a hold below a gap in an integer
    /// cursor: `capture::GapHold`), whatever their PostgreSQL snapshots.
    pub fn same_position(&self, other: &Checkpoint) -> bool {
        let hold = |c: &Checkpoint| {
            c.snapshot
                .as_deref()
                .and_then(crate::capture::GapHold::parse)
        };
        self.position == other.position
            && self.fingerprint == other.fingerprint
            && self.resume_from == other.resume_from
            && hold(self) == hold(other)
    }

    /// True if storing `self` in place of `stored` would move the position
    /// back: the same stream definition (fingerprint) and a position that
    /// sorts before the stored one. A new fingerprint starts over (a
    /// backfill), and positions whose order only the database knows
    /// (collation-dependent text, see [`Value::compare`]) are not refused,
    /// as in [`Self::later_position`].
    pub fn moves_back_from(&self, stored: &Checkpoint) -> bool {
        self.fingerprint == stored.fingerprint
            && compare_positions(&self.position, &stored.position) == Some(std::cmp::Ordering::Less)
    }

    /// The position to store after applying a batch that ended at
    /// `new_position`: the later of the two, so re-reading the overlap below
    /// the checkpoint never moves it back.
    ///
    /// Where the order depends on a text collation only the database knows
    /// (see [`Value::compare`]), the database's `ORDER BY` is trusted and the
    /// new position is taken; a run always reads to the end of its source,
    /// so its last save is the furthest position in either case.
    pub fn later_position(&self, new_position: &[Value]) -> Vec<Value> {
        match compare_positions(&self.position, new_position) {
            Some(std::cmp::Ordering::Equal | std::cmp::Ordering::Greater) => self.position.clone(),
            Some(std::cmp::Ordering::Less) | None => new_position.to_vec(),
        }
    }
}

/// `(2026-01-01T00:00:00.000000Z, 17)`: a position for messages.
pub fn format_position(position: &[Value]) -> String {
    let parts: Vec<String> = position.iter().map(ToString::to_string).collect();
    format!("({})", parts.join(", "))
}

/// Status of a run, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Started, not finished.
    Running,
    /// Every stream completed.
    Succeeded,
    /// A stream failed; its error is recorded.
    Failed,
    /// Not attempted (e.g. interrupted before it started).
    Skipped,
    /// Completed, but some rows went to quarantine.
    Partial,
}

impl RunStatus {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Skipped => "skipped",
            RunStatus::Partial => "partial",
        }
    }

    fn parse(text: &str) -> RunStatus {
        match text {
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "skipped" => RunStatus::Skipped,
            "partial" => RunStatus::Partial,
            _ => RunStatus::Failed,
        }
    }
}

/// One row of the run history.
#[derive(Clone, Debug, Serialize)]
pub struct RunRecord {
    /// Unique run id (UUID v4 text).
    pub run_id: String,
    /// Flow name.
    pub flow: String,
    /// Site id.
    pub site: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended; `None` while running.
    pub finished_at: Option<DateTime<Utc>>,
    /// Rows read from the source, all streams.
    pub rows_read: i64,
    /// Rows inserted or changed at the target, all streams.
    pub rows_written: i64,
    /// Outcome.
    pub status: RunStatus,
    /// Error message of a failed run.
    pub error: Option<String>,
    /// Kind of a failed run's error (`ErrorKind::as_str`: `connection`,
    /// `login`, `conflict`, `canceled`, `permission`, `data`, `other`,
    /// `interrupted`); `None` for runs without error or recorded before
    /// schema v9.
    pub error_kind: Option<String>,
    /// Remarks (e.g. why a stream restarted with a backfill).
    pub note: Option<String>,
}

/// How a run ended, as [`StateStore::finish_run_with_events`] records it.
#[derive(Clone, Copy, Debug)]
pub struct RunEnd<'a> {
    /// Outcome.
    pub status: RunStatus,
    /// Rows read, all streams.
    pub rows_read: u64,
    /// Rows written, all streams.
    pub rows_written: u64,
    /// Error message of a failed run.
    pub error: Option<&'a str>,
    /// Its kind (run history `error_kind`).
    pub error_kind: Option<ErrorKind>,
    /// Remarks.
    pub note: Option<&'a str>,
}

/// A checkpoint row with its key, for `status`.
#[derive(Clone, Debug)]
pub struct CheckpointRecord {
    /// Which checkpoint.
    pub key: CheckpointKey,
    /// Its position.
    pub position: Vec<Value>,
    /// When it last moved.
    pub updated_at: DateTime<Utc>,
}

/// Access to the state tables of one master.
#[derive(Clone, Debug)]
pub struct StateStore {
    dialect: Dialect,
}

impl StateStore {
    /// Creates or migrates the state tables, then returns a store.
    ///
    /// Errors: [`StateError::Connector`] when the master refuses (no
    /// `CREATE` privilege: grant it, or create schema `hubsync` for the hub).
    pub async fn open(master: &Connector) -> Result<StateStore> {
        let store = StateStore {
            dialect: master.dialect(),
        };
        store.migrate(master).await?;
        Ok(store)
    }

    /// The full name of state table `name` (`hubsync.quarantine` on
    /// PostgreSQL, `hubsync_quarantine` on SQLite), for messages.
    pub fn table_name(&self, name: &str) -> String {
        self.table(name)
    }

    fn table(&self, name: &str) -> String {
        match self.dialect {
            Dialect::Postgres => format!("hubsync.{name}"),
            Dialect::Sqlite | Dialect::MySql => format!("hubsync_{name}"),
        }
    }

    /// `INSERT ... ON CONFLICT (key) DO UPDATE SET c = excluded.c, ...` in
    /// this master's dialect (MySQL: `ON DUPLICATE KEY UPDATE c = VALUES(c)`).
    fn upsert_clause(&self, key: &str, updated: &[&str]) -> String {
        match self.dialect {
            Dialect::MySql => {
                let sets: Vec<String> = updated
                    .iter()
                    .map(|c| format!("{c} = VALUES({c})"))
                    .collect();
                format!(" ON DUPLICATE KEY UPDATE {}", sets.join(", "))
            }
            Dialect::Postgres | Dialect::Sqlite => {
                let sets: Vec<String> = updated
                    .iter()
                    .map(|c| format!("{c} = excluded.{c}"))
                    .collect();
                format!(" ON CONFLICT ({key}) DO UPDATE SET {}", sets.join(", "))
            }
        }
    }

    /// Placeholders for `values`, typed on PostgreSQL.
    fn placeholders(&self, values: &[Value]) -> Vec<String> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| self.dialect.typed_placeholder(i + 1, v))
            .collect()
    }

    /// The checkpoint of `key`, if one is stored.
    pub async fn load_checkpoint(
        &self,
        master: &Connector,
        key: &CheckpointKey,
    ) -> Result<Option<Checkpoint>> {
        let params = key_values(key);
        let p = self.placeholders(&params);
        let sql = format!(
            "SELECT position, fingerprint, resume_from, snapshot FROM {} WHERE flow = {} AND stream = {} AND site = {}",
            self.table("checkpoints"),
            p[0],
            p[1],
            p[2]
        );
        let batch = master.query(&sql, &params).await?;
        let Some(row) = batch.rows.first() else {
            return Ok(None);
        };
        let (Value::Text(position), Value::Text(fingerprint)) = (&row[0], &row[1]) else {
            return Err(StateError::Corrupt(format!(
                "checkpoint row of {key:?} has unexpected types"
            )));
        };
        let position: Vec<Value> = serde_json::from_str(position)
            .map_err(|e| StateError::Corrupt(format!("checkpoint of {key:?}: {e}")))?;
        let resume_from: Option<Value> = match &row[2] {
            Value::Text(json) => Some(serde_json::from_str(json).map_err(|e| {
                StateError::Corrupt(format!("checkpoint of {key:?}: resume_from: {e}"))
            })?),
            _ => None,
        };
        let snapshot = match &row[3] {
            Value::Text(text) => Some(text.clone()),
            _ => None,
        };
        Ok(Some(Checkpoint {
            position,
            fingerprint: fingerprint.clone(),
            resume_from,
            snapshot,
        }))
    }

    /// Writes the checkpoint of `key` inside `tx` (the transaction that
    /// wrote the batch, for a pull), if the stored one is still `expected`
    /// (compare-and-set): the checkpoint as the caller read or last wrote
    /// it, or `None` when none is stored. Position and fingerprint are
    /// compared (as stored, JSON text); `resume_from` and the snapshot may
    /// differ. With `expected` it is one `UPDATE ... WHERE` the key, position
    /// and fingerprint that must touch one row (`updated_at` always changes,
    /// and the MySQL driver counts rows found, not changed); without, one
    /// `INSERT` that a stored row stops (`ON CONFLICT DO NOTHING`; MySQL:
    /// its duplicate-key error 1062, which undoes only that statement).
    ///
    /// Errors, nothing written (roll `tx` back): [`StateError::CheckpointMoved`]
    /// when the stored checkpoint is not `expected` (another hub's run or
    /// `hubsync reset` changed it); [`StateError::CheckpointBackwards`] when
    /// `checkpoint`'s position sorts before `expected`'s
    /// ([`Checkpoint::moves_back_from`]); [`StateError::Connector`] when the
    /// master refuses; [`StateError::Corrupt`] when a position cannot be
    /// encoded.
    pub async fn save_checkpoint(
        &self,
        tx: &mut Tx,
        key: &CheckpointKey,
        expected: Option<&Checkpoint>,
        checkpoint: &Checkpoint,
    ) -> Result<()> {
        let moved = || StateError::CheckpointMoved {
            flow: key.flow.clone(),
            stream: key.stream.clone(),
            site: key.site.clone(),
        };
        let resume_from = match &checkpoint.resume_from {
            Some(value) => Value::Text(encode_json(value)?),
            None => Value::Null,
        };
        let new_values = [
            Value::Text(encode_json(&checkpoint.position)?),
            Value::Text(checkpoint.fingerprint.clone()),
            Value::TimestampTz(Utc::now()),
            resume_from,
            checkpoint.snapshot.clone().map_or(Value::Null, Value::Text),
        ];
        let table = self.table("checkpoints");
        let Some(expected) = expected else {
            let mut params = key_values(key);
            params.extend(new_values);
            let p = self.placeholders(&params);
            let insert = format!(
                "INSERT INTO {table} (flow, stream, site, position, fingerprint, updated_at, resume_from, snapshot) \
                 VALUES ({})",
                p.join(", ")
            );
            let inserted = match self.dialect {
                Dialect::Postgres | Dialect::Sqlite => {
                    tx.execute(
                        &format!("{insert} ON CONFLICT (flow, stream, site) DO NOTHING"),
                        &params,
                    )
                    .await?
                }
                // `ON DUPLICATE KEY UPDATE` would count a kept row as one
                // found: the plain INSERT's duplicate-key error tells.
                Dialect::MySql => match tx.execute(&insert, &params).await {
                    Err(e) if e.code() == Some("1062") => 0,
                    other => other?,
                },
            };
            return if inserted == 1 { Ok(()) } else { Err(moved()) };
        };
        if checkpoint.moves_back_from(expected) {
            return Err(StateError::CheckpointBackwards {
                flow: key.flow.clone(),
                stream: key.stream.clone(),
                site: key.site.clone(),
                stored: format_position(&expected.position),
                new: format_position(&checkpoint.position),
            });
        }
        let mut params = new_values.to_vec();
        params.extend(key_values(key));
        params.push(Value::Text(encode_json(&expected.position)?));
        params.push(Value::Text(expected.fingerprint.clone()));
        let p = self.placeholders(&params);
        let sql = format!(
            "UPDATE {table} SET position = {}, fingerprint = {}, updated_at = {}, resume_from = {}, snapshot = {} \
             WHERE flow = {} AND stream = {} AND site = {} AND position = {} AND fingerprint = {}",
            p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9]
        );
        let updated = tx.execute(&sql, &params).await?;
        if updated == 1 { Ok(()) } else { Err(moved()) }
    }

    /// Forgets the checkpoints of `flow` (optionally one stream) at the
    /// given sites; returns how many were removed. Only the listed sites are
    /// touched: hubs sharing one master with other inventories keep theirs.
    pub async fn delete_checkpoints(
        &self,
        master: &Connector,
        flow: &str,
        stream: Option<&str>,
        sites: &[&str],
    ) -> Result<u64> {
        let mut removed = 0;
        // Chunks keep the statement under every dialect's parameter limit.
        for chunk in sites.chunks(1000) {
            let mut params = vec![Value::Text(flow.to_string())];
            params.extend(stream.map(|s| Value::Text(s.to_string())));
            let first_site = params.len();
            params.extend(chunk.iter().map(|s| Value::Text(s.to_string())));
            let p = self.placeholders(&params);
            let stream_filter = if stream.is_some() {
                format!(" AND stream = {}", p[1])
            } else {
                String::new()
            };
            let sql = format!(
                "DELETE FROM {} WHERE flow = {}{stream_filter} AND site IN ({})",
                self.table("checkpoints"),
                p[0],
                p[first_site..].join(", ")
            );
            removed += master.execute(&sql, &params).await?;
        }
        Ok(removed)
    }

    /// Per (flow, site): how many of its newest finished runs failed in a
    /// row, and when the newest of them started. Pairs whose newest finished
    /// run succeeded are absent. Skipped runs, and runs the hub itself cut
    /// short ([`INTERRUPTED`]), do not count either way.
    /// `flow_site` limits the answer to one pair.
    pub async fn failure_streaks(
        &self,
        master: &Connector,
        flow_site: Option<(&str, &str)>,
    ) -> Result<std::collections::HashMap<(String, String), (u32, DateTime<Utc>)>> {
        let mut params = Vec::new();
        let mut filter = String::new();
        if let Some((flow, site)) = flow_site {
            params = vec![Value::Text(flow.to_string()), Value::Text(site.to_string())];
            let p = self.placeholders(&params);
            filter = format!(" AND flow = {} AND site = {}", p[0], p[1]);
        }
        // The newest 20 finished runs per pair: enough to size any cool-down
        // (it stops doubling at one hour).
        let sql = format!(
            "SELECT flow, site, status, started_at FROM (\
               SELECT flow, site, status, started_at, \
                 row_number() OVER (PARTITION BY flow, site ORDER BY started_at DESC) AS newest \
               FROM {} WHERE (status = 'succeeded' OR (status = 'failed' \
                 AND coalesce(error_kind, '') <> 'interrupted')){filter}) AS recent \
             WHERE newest <= 20 ORDER BY flow, site, started_at DESC",
            self.table("runs")
        );
        let batch = master.query(&sql, &params).await?;
        let mut streaks = std::collections::HashMap::new();
        let mut broken = std::collections::HashSet::new();
        for row in &batch.rows {
            let pair = (text(&row[0]), text(&row[1]));
            if broken.contains(&pair) {
                continue;
            }
            if text(&row[2]) != "failed" {
                broken.insert(pair);
                continue;
            }
            let started = timestamp(&row[3])?;
            streaks
                .entry(pair)
                .and_modify(|(count, _)| *count += 1)
                .or_insert((1u32, started));
        }
        Ok(streaks)
    }

    /// Sites of `flow` with a failed run started at or after `since`: the
    /// only ones whose circuit can be open when `since` is now minus the
    /// longest cool-down. One query per pass instead of one per site (it
    /// reads the recent history through the `started_at` index).
    pub async fn sites_failed_since(
        &self,
        master: &Connector,
        flow: &str,
        since: DateTime<Utc>,
    ) -> Result<std::collections::HashSet<String>> {
        let params = [Value::Text(flow.to_string()), Value::TimestampTz(since)];
        let p = self.placeholders(&params);
        let sql = format!(
            "SELECT DISTINCT site FROM {} WHERE started_at >= {} AND flow = {} AND status = 'failed'",
            self.table("runs"),
            p[1],
            p[0]
        );
        let batch = master.query(&sql, &params).await?;
        Ok(batch.rows.iter().map(|row| text(&row[0])).collect())
    }

    /// Records the start of a run of (`flow`, `site`) and returns its id,
    /// unless another run of that pair is alive.
    ///
    /// Earlier `running` rows whose heartbeat is older than
    /// [`HEARTBEAT_EXPIRY`] belonged to a hub that stopped mid-run: they are
    /// closed as `failed`. On a PostgreSQL or SQLite master the usual case
    /// (the pair's newest run finished) is one `INSERT ... WHERE NOT EXISTS`
    /// guarded by a unique index on the pair's `running` rows; otherwise the
    /// check and the insert are serialised per pair (an advisory lock on
    /// PostgreSQL, SQLite's single writer, `GET_LOCK` on MySQL).
    ///
    /// Errors: [`StateError::AlreadyRunning`] when a live run exists.
    ///
    /// `own_dead_runs` are ids of this process's runs whose end could not be
    /// recorded (the master was unreachable): their fresh heartbeat does not
    /// make them alive.
    pub async fn start_run(
        &self,
        master: &Connector,
        flow: &str,
        site: &str,
        own_dead_runs: &std::collections::HashSet<String>,
    ) -> Result<String> {
        match self.dialect {
            Dialect::Postgres | Dialect::Sqlite => {
                match self.start_run_at_once(master, flow, site).await {
                    Ok(Some(run_id)) => return Ok(run_id),
                    Ok(None) => {}
                    // A second hub inserted first (unique index), or another
                    // failure: the locked path below decides and reports.
                    Err(e) => tracing::debug!(flow, site, "starting the run the long way: {e}"),
                }
            }
            // No unique index on a pair's running rows (schema v7 does
            // nothing on MySQL): always the locked path.
            Dialect::MySql => {}
        }
        let runs = self.table("runs");
        let pair = [Value::Text(flow.to_string()), Value::Text(site.to_string())];
        let p = self.placeholders(&pair);
        let mut tx = master.begin().await?;
        match self.dialect {
            Dialect::Postgres => {
                tx.execute(
                    &format!("SELECT pg_advisory_xact_lock(hashtext('hubsync.runs'), hashtext({} || chr(31) || {}))", p[0], p[1]),
                    &pair,
                )
                .await?;
            }
            // The first write takes SQLite's write lock for the transaction.
            Dialect::Sqlite => {
                tx.execute(&format!("UPDATE {runs} SET status = status WHERE 0"), &[])
                    .await?;
            }
            // A named lock per pair (names are at most 64 characters: the
            // pair is hashed). It belongs to the session, not the
            // transaction: it is released on the same connection after the
            // commit or rollback, on every path.
            Dialect::MySql => {
                let lock_name = "CONCAT('hubsync.run.', SHA1(CONCAT(?, CHAR(31), ?)))";
                let locked = tx
                    .query(
                        &format!("SELECT GET_LOCK({lock_name}, {})", RUN_LOCK_WAIT.as_secs()),
                        &pair,
                    )
                    .await?;
                if !matches!(
                    locked.rows.first().and_then(|r| r.first()),
                    Some(Value::Int(1))
                ) {
                    return Err(StateError::LockTimeout {
                        seconds: RUN_LOCK_WAIT.as_secs(),
                    });
                }
                let result = self
                    .start_run_locked(&mut tx, flow, site, own_dead_runs)
                    .await;
                let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
                let ended = tx.execute(end, &[]).await;
                tx.execute(&format!("DO RELEASE_LOCK({lock_name})"), &pair)
                    .await?;
                ended?;
                let run_id = result?;
                tx.commit().await?;
                return Ok(run_id);
            }
        }
        let run_id = self
            .start_run_locked(&mut tx, flow, site, own_dead_runs)
            .await?;
        tx.commit().await?;
        Ok(run_id)
    }

    /// The common case of [`Self::start_run`] in one statement (PostgreSQL
    /// and SQLite masters): the run is inserted unless the pair's newest run
    /// is still `running` or finished after this run's start (a clock
    /// ahead, or a race with its end). `Ok(None)`: not inserted, take the
    /// locked path, which tells a live run from a dead one. Two hubs
    /// inserting at once are kept apart by the unique index on the pair's
    /// `running` rows (schema version 7): the second gets an error.
    async fn start_run_at_once(
        &self,
        master: &Connector,
        flow: &str,
        site: &str,
    ) -> Result<Option<String>> {
        let runs = self.table("runs");
        let run_id = uuid::Uuid::new_v4().to_string();
        let params = [
            Value::Text(run_id.clone()),
            Value::Text(flow.to_string()),
            Value::Text(site.to_string()),
            Value::TimestampTz(Utc::now()),
            Value::Text(this_holder()),
        ];
        let p = self.placeholders(&params);
        let sql = format!(
            "INSERT INTO {runs} (run_id, flow, site, started_at, heartbeat_at, holder, status) \
             SELECT {id}, {flow}, {site}, {now}, {now}, {holder}, 'running' \
             WHERE NOT EXISTS (SELECT 1 FROM (SELECT status, finished_at FROM {runs} \
               WHERE flow = {flow} AND site = {site} ORDER BY started_at DESC LIMIT 1) AS newest \
             WHERE newest.status = 'running' OR newest.finished_at > {now})",
            id = p[0],
            flow = p[1],
            site = p[2],
            now = p[3],
            holder = p[4],
        );
        let inserted = master.execute(&sql, &params).await?;
        Ok((inserted == 1).then_some(run_id))
    }

    /// The body of [`Self::start_run`], once the pair's lock is held.
    async fn start_run_locked(
        &self,
        tx: &mut Tx,
        flow: &str,
        site: &str,
        own_dead_runs: &std::collections::HashSet<String>,
    ) -> Result<String> {
        let runs = self.table("runs");
        let pair = [Value::Text(flow.to_string()), Value::Text(site.to_string())];
        let p = self.placeholders(&pair);
        let running = tx
            .query(
                &format!(
                    "SELECT run_id, coalesce(heartbeat_at, started_at), holder FROM {runs} \
                     WHERE flow = {} AND site = {} AND status = 'running'",
                    p[0], p[1]
                ),
                &pair,
            )
            .await?;
        // Read the clock once the pair is locked and the previous run seen
        // finished: this run must not be stamped as started before the
        // previous one's `finished_at` (read by that hub before its UPDATE).
        let now = Utc::now();
        for row in &running.rows {
            let heartbeat = timestamp(&row[1])?;
            let age = (now - heartbeat).to_std().unwrap_or_default();
            let holder_dead = matches!(&row[2], Value::Text(holder) if holder_is_dead(holder));
            if age < HEARTBEAT_EXPIRY && !holder_dead && !own_dead_runs.contains(&text(&row[0])) {
                return Err(StateError::AlreadyRunning {
                    run_id: text(&row[0]),
                    seconds: age.as_secs(),
                });
            }
        }
        let stale = [
            Value::TimestampTz(now),
            Value::Text(format!(
                "{INTERRUPTED}the hub stopped before this run finished (its rows are counted up to its last committed batch)"
            )),
            pair[0].clone(),
            pair[1].clone(),
        ];
        let sp = self.placeholders(&stale);
        tx.execute(
            &format!(
                "UPDATE {runs} SET status = 'failed', finished_at = {}, error = {}, error_kind = 'interrupted' \
                 WHERE flow = {} AND site = {} AND status = 'running'",
                sp[0], sp[1], sp[2], sp[3]
            ),
            &stale,
        )
        .await?;
        let run_id = uuid::Uuid::new_v4().to_string();
        let params = [
            Value::Text(run_id.clone()),
            pair[0].clone(),
            pair[1].clone(),
            Value::TimestampTz(now),
            Value::TimestampTz(now),
            Value::Text(this_holder()),
        ];
        let ip = self.placeholders(&params);
        tx.execute(
            &format!(
                "INSERT INTO {runs} (run_id, flow, site, started_at, heartbeat_at, holder, status) VALUES ({}, 'running')",
                ip.join(", ")
            ),
            &params,
        )
        .await?;
        Ok(run_id)
    }

    /// Puts refused rows of (flow, stream, site) into the quarantine table
    /// inside `tx` (the batch's checkpoint transaction). Each entry is
    /// (row key as JSON, row values as JSON, the database's error); a row
    /// quarantined again replaces its earlier entry.
    pub async fn quarantine(
        &self,
        tx: &mut Tx,
        key: &CheckpointKey,
        entries: &[(String, String, String)],
    ) -> Result<()> {
        for (row_key, row_values, error) in entries {
            let mut params = key_values(key);
            params.extend([
                Value::Text(row_key.clone()),
                Value::Text(row_values.clone()),
                Value::Text(error.clone()),
                Value::TimestampTz(Utc::now()),
            ]);
            let p = self.placeholders(&params);
            let sql = format!(
                "INSERT INTO {} (flow, stream, site, row_key, row_values, error, quarantined_at) VALUES ({}){}",
                self.table("quarantine"),
                p.join(", "),
                self.upsert_clause(
                    "flow, stream, site, row_key",
                    &["row_values", "error", "quarantined_at"]
                )
            );
            tx.execute(&sql, &params).await?;
        }
        Ok(())
    }

    /// Removes the quarantine entries of rows that have now been applied
    /// (row keys as JSON), inside `tx`; returns how many were removed.
    pub async fn release_quarantine(
        &self,
        tx: &mut Tx,
        key: &CheckpointKey,
        row_keys: &[String],
    ) -> Result<u64> {
        let mut removed = 0;
        for chunk in row_keys.chunks(500) {
            let mut params = key_values(key);
            params.extend(chunk.iter().map(|k| Value::Text(k.clone())));
            let p = self.placeholders(&params);
            let sql = format!(
                "DELETE FROM {} WHERE flow = {} AND stream = {} AND site = {} AND row_key IN ({})",
                self.table("quarantine"),
                p[0],
                p[1],
                p[2],
                p[3..].join(", ")
            );
            removed += tx.execute(&sql, &params).await?;
        }
        Ok(removed)
    }

    /// Number of quarantined rows of one (flow, stream, site).
    pub async fn quarantine_count(&self, master: &Connector, key: &CheckpointKey) -> Result<i64> {
        let params = key_values(key);
        let p = self.placeholders(&params);
        let sql = format!(
            "SELECT count(*) FROM {} WHERE flow = {} AND stream = {} AND site = {}",
            self.table("quarantine"),
            p[0],
            p[1],
            p[2]
        );
        let batch = master.query(&sql, &params).await?;
        Ok(match batch.rows.first().and_then(|r| r.first()) {
            Some(Value::Int(n)) => *n,
            _ => 0,
        })
    }

    /// Quarantined rows per (flow, site), all streams together:
    /// `(flow, site) -> rows`, for `hubsync status` and `/api/v1/status`.
    ///
    /// Errors: the master refused the query.
    pub async fn quarantine_counts(
        &self,
        master: &Connector,
    ) -> Result<std::collections::HashMap<(String, String), u64>> {
        let sql = format!(
            "SELECT flow, site, count(*) FROM {} GROUP BY flow, site",
            self.table("quarantine")
        );
        let batch = master.query(&sql, &[]).await?;
        Ok((batch.rows.iter())
            .map(|row| {
                let rows = match &row[2] {
                    Value::Int(n) => u64::try_from(*n).unwrap_or(0),
                    _ => 0,
                };
                ((text(&row[0]), text(&row[1])), rows)
            })
            .collect())
    }

    /// The row keys (JSON text, as stored) of the quarantined rows of
    /// (flow, stream, site) `key`.
    ///
    /// Errors: the master refused the query.
    pub async fn quarantined_keys(
        &self,
        master: &Connector,
        key: &CheckpointKey,
    ) -> Result<Vec<String>> {
        let params = key_values(key);
        let p = self.placeholders(&params);
        let sql = format!(
            "SELECT row_key FROM {} WHERE flow = {} AND stream = {} AND site = {}",
            self.table("quarantine"),
            p[0],
            p[1],
            p[2]
        );
        let batch = master.query(&sql, &params).await?;
        Ok(batch.rows.iter().map(|row| text(&row[0])).collect())
    }

    /// Records run `run_id`'s row counts so far (and that it is alive) inside
    /// `tx`, the transaction that commits the batch they include.
    pub async fn record_progress(
        &self,
        tx: &mut Tx,
        run_id: &str,
        rows_read: u64,
        rows_written: u64,
    ) -> Result<()> {
        let (sql, params) = self.progress_statement(run_id, rows_read, rows_written);
        tx.execute(&sql, &params).await?;
        Ok(())
    }

    /// Records that run `run_id` is alive, with its row counts so far.
    pub async fn heartbeat(
        &self,
        master: &Connector,
        run_id: &str,
        rows_read: u64,
        rows_written: u64,
    ) -> Result<()> {
        let (sql, params) = self.progress_statement(run_id, rows_read, rows_written);
        master.execute(&sql, &params).await?;
        Ok(())
    }

    /// The UPDATE behind [`Self::heartbeat`] and [`Self::record_progress`].
    fn progress_statement(
        &self,
        run_id: &str,
        rows_read: u64,
        rows_written: u64,
    ) -> (String, [Value; 4]) {
        let params = [
            Value::TimestampTz(Utc::now()),
            Value::Int(rows_read as i64),
            Value::Int(rows_written as i64),
            Value::Text(run_id.to_string()),
        ];
        let p = self.placeholders(&params);
        let sql = format!(
            "UPDATE {} SET heartbeat_at = {}, rows_read = {}, rows_written = {} WHERE run_id = {} AND status = 'running'",
            self.table("runs"),
            p[0],
            p[1],
            p[2],
            p[3]
        );
        (sql, params)
    }

    /// Records the end of a run: its status, row counts, error and the
    /// error's kind (`error_kind`, read by the circuit breaker), and notes.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_run(
        &self,
        master: &Connector,
        run_id: &str,
        status: RunStatus,
        rows_read: u64,
        rows_written: u64,
        error: Option<&str>,
        error_kind: Option<ErrorKind>,
        note: Option<&str>,
    ) -> Result<()> {
        let end = RunEnd {
            status,
            rows_read,
            rows_written,
            error,
            error_kind,
            note,
        };
        let (sql, params) = self.finish_statement(run_id, &end);
        master.execute(&sql, &params).await?;
        Ok(())
    }

    /// [`Self::finish_run`] and the run's follow-up `events` (the outbox)
    /// in one master transaction: a hub killed after it commits has
    /// recorded both, before it neither.
    pub async fn finish_run_with_events(
        &self,
        master: &Connector,
        run_id: &str,
        end: &RunEnd<'_>,
        events: &[NewEvent],
    ) -> Result<()> {
        let (sql, params) = self.finish_statement(run_id, end);
        let mut tx = master.begin().await?;
        tx.execute(&sql, &params).await?;
        self.enqueue_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The UPDATE behind [`Self::finish_run`] (and a leased run's end).
    fn finish_statement(&self, run_id: &str, end: &RunEnd<'_>) -> (String, [Value; 8]) {
        let text_or_null = |t: Option<&str>| t.map_or(Value::Null, |t| Value::Text(t.to_string()));
        let params = [
            Value::TimestampTz(Utc::now()),
            Value::Int(end.rows_read as i64),
            Value::Int(end.rows_written as i64),
            Value::Text(end.status.as_str().to_string()),
            text_or_null(end.error),
            text_or_null(end.error_kind.map(ErrorKind::as_str)),
            text_or_null(end.note),
            Value::Text(run_id.to_string()),
        ];
        let p = self.placeholders(&params);
        let sql = format!(
            "UPDATE {} SET finished_at = {}, rows_read = {}, rows_written = {}, status = {}, error = {}, \
             error_kind = {}, note = {} WHERE run_id = {}",
            self.table("runs"),
            p[0],
            p[1],
            p[2],
            p[3],
            p[4],
            p[5],
            p[6],
            p[7]
        );
        (sql, params)
    }

    /// The newest run of every (flow, site), ordered by flow then site; a
    /// dead hub's run shows as interrupted (see [`run_record`]).
    pub async fn last_runs(&self, master: &Connector) -> Result<Vec<RunRecord>> {
        let runs = self.table("runs");
        let sql = format!(
            "SELECT run_id, flow, site, started_at, finished_at, rows_read, rows_written, status, error, error_kind, note, \
             heartbeat_at FROM {runs} r WHERE started_at = (SELECT max(started_at) FROM {runs} x \
             WHERE x.flow = r.flow AND x.site = r.site) ORDER BY flow, site"
        );
        let batch = master.query(&sql, &[]).await?;
        batch
            .rows
            .iter()
            .map(|row| run_record(&batch, row))
            .collect()
    }

    /// Every checkpoint, ordered by flow, stream, site.
    pub async fn checkpoints(&self, master: &Connector) -> Result<Vec<CheckpointRecord>> {
        let sql = format!(
            "SELECT flow, stream, site, position, updated_at FROM {} ORDER BY flow, stream, site",
            self.table("checkpoints")
        );
        let batch = master.query(&sql, &[]).await?;
        let mut records = Vec::with_capacity(batch.len());
        for row in &batch.rows {
            let position: Vec<Value> = serde_json::from_str(&text(&row[3]))
                .map_err(|e| StateError::Corrupt(format!("checkpoint position: {e}")))?;
            records.push(CheckpointRecord {
                key: CheckpointKey {
                    flow: text(&row[0]),
                    stream: text(&row[1]),
                    site: text(&row[2]),
                },
                position,
                updated_at: timestamp(&row[4])?,
            });
        }
        Ok(records)
    }
}

/// The default replica id of `hub.replica_id`: this process as a run
/// holder, `host/pid`.
pub fn default_replica_id() -> String {
    this_holder()
}

/// This process as a run holder: `host/pid`.
fn this_holder() -> String {
    format!("{}/{}", host_name(), std::process::id())
}

/// The machine's host name (empty if it cannot be read).
fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most
    // that many bytes and we stop at the first NUL.
    let ok = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) } == 0;
    if !ok {
        return String::new();
    }
    let end = buffer.iter().position(|b| *b == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

/// True if `holder` (`host/pid`) is a process on this host that no longer
/// exists (checked in `/proc`); a holder on another host, or one that cannot
/// be checked, is presumed alive until its heartbeat expires.
fn holder_is_dead(holder: &str) -> bool {
    let Some((host, pid)) = holder.rsplit_once('/') else {
        return false;
    };
    if host != host_name() || host.is_empty() || pid == std::process::id().to_string() {
        return false;
    }
    let proc_root = std::path::Path::new("/proc");
    proc_root.join("self").exists() && pid.parse::<u32>().is_ok() && !proc_root.join(pid).exists()
}

/// `value` as the JSON text the checkpoint table stores.
fn encode_json<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| StateError::Corrupt(format!("cannot encode checkpoint: {e}")))
}

fn key_values(key: &CheckpointKey) -> Vec<Value> {
    vec![
        Value::Text(key.flow.clone()),
        Value::Text(key.stream.clone()),
        Value::Text(key.site.clone()),
    ]
}

fn text(value: &Value) -> String {
    match value {
        Value::Text(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Reads a state timestamp: native on PostgreSQL, RFC 3339 text on SQLite,
/// a UTC `DATETIME(6)` on MySQL.
fn timestamp(value: &Value) -> Result<DateTime<Utc>> {
    match value {
        Value::TimestampTz(ts) => Ok(*ts),
        Value::Timestamp(ts) => Ok(ts.and_utc()),
        Value::Text(t) => DateTime::parse_from_rfc3339(t)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| StateError::Corrupt(format!("timestamp `{t}`: {e}"))),
        other => Err(StateError::Corrupt(format!(
            "expected a timestamp, found {}",
            other.kind()
        ))),
    }
}

/// A run row as read for status, the API and the dashboard: a `running`
/// row whose last sign of life (`heartbeat_at`, else `started_at`) is
/// [`HEARTBEAT_EXPIRY`] or more before `now` belonged to a hub that died.
/// It shows as the next run of its pair will record it (`failed`, kind
/// `interrupted`, ended at its last heartbeat), with the heartbeat's age;
/// nothing is written.
fn run_record(batch: &Batch, row: &[Value]) -> Result<RunRecord> {
    let mut record = stored_run_record(batch, row)?;
    if record.status == RunStatus::Running
        && let Some(i) = batch.column_index("heartbeat_at")
    {
        let last_beat = match &row[i] {
            Value::Null => record.started_at,
            other => timestamp(other)?,
        };
        show_dead_run(&mut record, last_beat, Utc::now());
    }
    Ok(record)
}

/// Turns `record` (a `running` run whose last heartbeat was at
/// `last_beat`) into the interrupted run it is when that heartbeat is
/// [`HEARTBEAT_EXPIRY`] or more before `now`; leaves a live one alone.
fn show_dead_run(record: &mut RunRecord, last_beat: DateTime<Utc>, now: DateTime<Utc>) {
    let silent = (now - last_beat).num_seconds().max(0);
    if silent < HEARTBEAT_EXPIRY.as_secs() as i64 {
        return;
    }
    record.status = RunStatus::Failed;
    record.finished_at = Some(last_beat);
    record.error_kind = Some("interrupted".to_string());
    record.error = Some(format!(
        "{INTERRUPTED}no heartbeat for {silent} s (a live run records one every {} s): its hub \
         stopped before this run finished (its rows are counted up to its last committed batch); \
         the next run of this pair records it as failed",
        HEARTBEAT_INTERVAL.as_secs()
    ));
}

/// [`run_record`] as stored, a dead hub's run still `running`.
fn stored_run_record(batch: &Batch, row: &[Value]) -> Result<RunRecord> {
    let get = |name: &str| {
        batch
            .column_index(name)
            .map(|i| &row[i])
            .unwrap_or(&Value::Null)
    };
    let optional_text = |name: &str| match get(name) {
        Value::Null => None,
        other => Some(text(other)),
    };
    let int = |name: &str| match get(name) {
        Value::Int(i) => *i,
        _ => 0,
    };
    Ok(RunRecord {
        run_id: text(get("run_id")),
        flow: text(get("flow")),
        site: text(get("site")),
        started_at: timestamp(get("started_at"))?,
        finished_at: match get("finished_at") {
            Value::Null => None,
            other => Some(timestamp(other)?),
        },
        rows_read: int("rows_read"),
        rows_written: int("rows_written"),
        status: RunStatus::parse(&text(get("status"))),
        error: optional_text("error"),
        error_kind: optional_text("error_kind"),
        note: optional_text("note"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_run_silent_for_30_s_shows_as_interrupted() {
        let started = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let beat = started + chrono::Duration::seconds(70);
        let running = RunRecord {
            run_id: "r".into(),
            flow: "sales".into(),
            site: "s1".into(),
            started_at: started,
            finished_at: None,
            rows_read: 2,
            rows_written: 2,
            status: RunStatus::Running,
            error: None,
            error_kind: None,
            note: None,
        };
        // 29 s after the heartbeat: alive.
        let mut alive = running.clone();
        show_dead_run(&mut alive, beat, beat + chrono::Duration::seconds(29));
        assert_eq!(alive.status, RunStatus::Running);
        assert_eq!(alive.error, None);
        // 30 s (three missed heartbeats): dead, ended at its last heartbeat.
        let mut dead = running.clone();
        show_dead_run(&mut dead, beat, beat + chrono::Duration::seconds(30));
        assert_eq!(dead.status, RunStatus::Failed);
        assert_eq!(dead.finished_at, Some(beat));
        assert_eq!(dead.error_kind.as_deref(), Some("interrupted"));
        assert_eq!(
            dead.error.as_deref(),
            Some(
                "interrupted: no heartbeat for 30 s (a live run records one every 10 s): its hub stopped \
                 before this run finished (its rows are counted up to its last committed batch); the next \
                 run of this pair records it as failed"
            )
        );
        assert_eq!((dead.rows_read, dead.rows_written), (2, 2));
    }

    #[test]
    fn dead_holders_on_this_host_are_recognised() {
        assert!(!holder_is_dead(&this_holder()), "this process is alive");
        // pid 4194304 is above Linux's pid_max: no such process.
        assert!(holder_is_dead(&format!("{}/4194304", host_name())));
        assert!(!holder_is_dead("some-other-host/4194304"));
        assert!(!holder_is_dead("garbage"));
    }

    #[test]
    fn a_checkpoint_never_moves_back() {
        let stored = Checkpoint {
            position: vec![Value::Int(5), Value::Int(2)],
            fingerprint: "f".into(),
            resume_from: Some(Value::Int(3)),
            snapshot: None,
        };
        let at = |position: Vec<Value>, fingerprint: &str| Checkpoint {
            position,
            fingerprint: fingerprint.into(),
            ..stored.clone()
        };
        // Behind the stored position, same stream definition: refused.
        assert!(at(vec![Value::Int(5), Value::Int(1)], "f").moves_back_from(&stored));
        assert!(at(vec![Value::Int(4), Value::Int(9)], "f").moves_back_from(&stored));
        // Ahead, or the same position (a new snapshot or `resume_from`): taken.
        assert!(!at(vec![Value::Int(5), Value::Int(3)], "f").moves_back_from(&stored));
        assert!(!at(vec![Value::Int(5), Value::Int(2)], "f").moves_back_from(&stored));
        // A new definition starts over (a backfill): taken.
        assert!(!at(vec![Value::Int(1), Value::Int(1)], "g").moves_back_from(&stored));
        // An order only the database knows (collation-dependent text): taken.
        let text = at(vec![Value::Text("b".into())], "f");
        assert!(!at(vec![Value::Text("a".into())], "f").moves_back_from(&text));
    }

    #[test]
    fn checkpoints_keep_the_later_position() {
        let checkpoint = Checkpoint {
            position: vec![Value::Int(5), Value::Int(2)],
            fingerprint: "f".into(),
            resume_from: None,
            snapshot: None,
        };
        // Ahead: taken.
        assert_eq!(
            checkpoint.later_position(&[Value::Int(5), Value::Int(3)]),
            [Value::Int(5), Value::Int(3)]
        );
        // Re-read overlap (behind or equal): the stored position stays.
        assert_eq!(
            checkpoint.later_position(&[Value::Int(4), Value::Int(9)]),
            [Value::Int(5), Value::Int(2)]
        );
        assert_eq!(
            checkpoint.later_position(&[Value::Int(5), Value::Int(2)]),
            [Value::Int(5), Value::Int(2)]
        );
        // Collation-dependent text: the database's order is trusted.
        let text = Checkpoint {
            position: vec![Value::Text("b".into())],
            fingerprint: "f".into(),
            resume_from: None,
            snapshot: None,
        };
        assert_eq!(
            text.later_position(&[Value::Text("a".into())]),
            [Value::Text("a".into())]
        );
    }
}
