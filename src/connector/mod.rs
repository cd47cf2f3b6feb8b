//! I/O per dialect behind one closed enum.
//!
//! A [`Connector`] is a small pool of connections to one database (the
//! master, or one site). It reads keyset pages into [`Batch`]es, describes
//! tables, and opens [`Tx`] transactions in which batches are upserted and
//! state rows written. A connector knows nothing of flows; SQL text comes
//! from [`crate::dialect`].
//!
//! Binding rule: SQLite binds each [`Value`] natively (see `sqlite.rs` for the
//! storage rule); PostgreSQL binds values as text and the SQL casts them
//! (`$1::numeric`), so exact decimals and every other type arrive exactly,
//! except that an upsert binds integer, float, bool, date, time-stamp and
//! uuid columns as binary arrays when every value fits (same values, nothing
//! for the server to parse; see `postgres.rs` `ArrayKind`).
//! MySQL binds natively and checks each value against the target column's
//! declared type first (see `mysql.rs`).

mod error;
mod mysql;
mod pg_binary;
mod postgres;
mod sqlite;

use std::time::Duration;

use chrono::{DateTime, Utc};

pub use self::error::{ConnectorError, ErrorKind};

/// How long a pool's first connection may take before a direct attempt is
/// made to learn why it is slow (a refused connection is retried silently
/// by the pool).
const PROBE_AFTER: Duration = Duration::from_millis(250);

/// Checks a new pool's first connection, which then waits in the pool for
/// the caller (one login, not a test login and then another). The pool
/// retries a refused connection until its acquire timeout and then reports
/// only "pool timed out": without a connection after [`PROBE_AFTER`], one
/// direct attempt with `options` runs beside it and tells why (refused, bad
/// password, no such database). On failure the pool is closed.
///
/// Errors: [`ConnectorError::ConnectTimeout`] when nothing answered within
/// `connect_timeout` (a black-holed address), else the refusal from
/// `connect_failure` with `message` (the dialect's wording of it), naming
/// `url` redacted.
async fn check_first_connection<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
    options: &<DB::Connection as sqlx::Connection>::Options,
    url: &DbUrl,
    connect_timeout: Duration,
    message: fn(&sqlx::Error) -> String,
) -> Result<()> {
    use sqlx::ConnectOptions as _;
    let connected = {
        let first = pool.acquire();
        tokio::pin!(first);
        tokio::select! {
            result = &mut first => result,
            () = tokio::time::sleep(PROBE_AFTER) => {
                tokio::select! {
                    result = &mut first => result,
                    probe = options.connect() => match probe {
                        Ok(probe) => {
                            let _ = sqlx::Connection::close(probe).await;
                            first.await
                        }
                        Err(e) => Err(e),
                    },
                }
            }
        }
        // `first` is dropped here: a pending attempt would hold up `close`.
    };
    match connected {
        Ok(conn) => {
            drop(conn); // back to the pool, idle, for the caller
            Ok(())
        }
        Err(e) => {
            pool.close().await;
            if matches!(e, sqlx::Error::PoolTimedOut) {
                return Err(ConnectorError::ConnectTimeout {
                    url: url.redacted(),
                    seconds: connect_timeout.as_secs(),
                });
            }
            Err(error::connect_failure(url.redacted(), &e, message(&e)))
        }
    }
}
pub(crate) use self::error::{connect_failure, db_error};
pub use self::mysql::{MySqlConnector, check_value as mysql_check_value};
pub use self::postgres::{PgConnector, check_value as pg_check_value};
pub use self::sqlite::{
    INSTANT_FORMS as SQLITE_INSTANT_FORMS, SqliteConnector,
    is_date_time_type as sqlite_is_date_time_type, read_instant as sqlite_instant,
};
use crate::config::DbUrl;
use crate::dialect::{Dialect, UpsertSpec};
use crate::value::{Batch, Value};

/// Shorthand for this layer's results.
pub type Result<T> = std::result::Result<T, ConnectorError>;

/// What a source says about time and visibility before a read (see
/// `crate::capture`).
#[derive(Clone, Debug)]
pub struct SourceClock {
    /// The database's clock (`statement_timestamp()`, `UTC_TIMESTAMP(6)`).
    pub now: DateTime<Utc>,
    /// Start of the oldest open transaction of another session, where the
    /// login can see it (PostgreSQL).
    pub oldest_open: Option<DateTime<Utc>>,
    /// The snapshot (PostgreSQL `pg_current_snapshot()`).
    pub snapshot: Option<crate::capture::Snapshot>,
    /// Whether the login sees other logins' sessions, so `oldest_open`
    /// covers every writer (PostgreSQL: role `pg_read_all_stats`, or a
    /// superuser); `None` where not asked (MySQL).
    pub sees_other_logins: Option<bool>,
}

/// Options for opening a connector.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Most connections kept open (1 for a site).
    pub max_connections: u32,
    /// Time allowed for one connection attempt.
    pub connect_timeout: Duration,
    /// Time a task may wait for a free connection of the pool (long for
    /// the master, whose pool is shared by many site tasks).
    pub acquire_timeout: Duration,
    /// Longest one statement (or transaction step) may take; `None`: no limit.
    pub statement_timeout: Option<Duration>,
    /// SQLite only: create the file if it is missing (the master and the
    /// demo; never a site, whose missing file is an error).
    pub create_if_missing: bool,
}

/// A column of a table as the database describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnInfo {
    /// Exact column name.
    pub name: String,
    /// Declared type (`format_type()` on PostgreSQL, the declared type text
    /// on SQLite, possibly empty, `COLUMN_TYPE` on MySQL: `decimal(12,2)`,
    /// `tinyint(1)`, `bigint(20) unsigned`).
    pub data_type: String,
    /// The type values are cast to before the insert: on PostgreSQL the
    /// schema-qualified type name without modifiers (`pg_catalog.varchar`),
    /// so that the assignment to the column applies the modifier and an
    /// over-long text is refused rather than truncated by an explicit
    /// `CAST(.. AS varchar(20))`. Equal to `data_type` on SQLite and MySQL.
    pub cast_type: String,
    /// `NOT NULL` with no default that fills it: no default expression, not
    /// an identity, generated or auto-increment column (nor SQLite's rowid
    /// alias). An insert that leaves it out is refused (unless a trigger
    /// fills it).
    pub required: bool,
}

/// A table's columns and unique keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableInfo {
    /// Columns in table order.
    pub columns: Vec<ColumnInfo>,
    /// Column lists of the primary key and of every unique index without a
    /// predicate.
    pub unique_keys: Vec<Vec<String>>,
    /// Column names match whatever their case (MySQL/MariaDB); exact
    /// elsewhere (PostgreSQL quotes identifiers; SQLite is matched exactly).
    pub case_insensitive_names: bool,
}

impl TableInfo {
    fn same_name(&self, a: &str, b: &str) -> bool {
        a == b || (self.case_insensitive_names && a.eq_ignore_ascii_case(b))
    }

    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns
            .iter()
            .find(|c| c.name == name)
            .or_else(|| self.columns.iter().find(|c| self.same_name(&c.name, name)))
    }

    /// True if some unique key has exactly the columns of `key` (any order).
    pub fn has_unique_key(&self, key: &[String]) -> bool {
        self.unique_keys.iter().any(|k| {
            k.len() == key.len()
                && key
                    .iter()
                    .all(|c| k.iter().any(|unique| self.same_name(unique, c)))
        })
    }
}

/// A connection pool to one database, with the time each statement may
/// take.
pub struct Connector {
    pool: Pool,
    statement_timeout: Option<Duration>,
}

/// The per-dialect pool: a closed set, dispatched by `match`.
enum Pool {
    Postgres(PgConnector),
    Sqlite(SqliteConnector),
    MySql(MySqlConnector),
}

/// Bounds one database operation by `timeout`; an operation that does not
/// finish in time is dropped (its connection is discarded by the driver).
/// Where [`Connector::query_batches`] sends its batches.
pub(crate) struct BatchSink {
    batch_size: usize,
    timeout: Option<Duration>,
    sender: tokio::sync::mpsc::Sender<Result<Batch>>,
}

impl BatchSink {
    /// Drains `rows` into batches sent to the receiver; `decode` turns a
    /// driver row into values (column names come from the first row).
    pub(crate) async fn drain<R, S>(self, mut rows: S, decode: fn(&R) -> Result<Vec<Value>>)
    where
        R: sqlx::Row,
        S: futures::Stream<Item = std::result::Result<R, sqlx::Error>> + Unpin,
    {
        use futures::TryStreamExt;
        use sqlx::Column as _;
        let mut names: Vec<String> = Vec::new();
        loop {
            // Read the next batch only once the channel has room for it: with
            // the batch being applied, at most two batches are in memory.
            let Ok(slot) = self.sender.reserve().await else {
                return;
            };
            let fill = async {
                let mut batch = Batch {
                    columns: names.clone(),
                    rows: Vec::with_capacity(self.batch_size.min(16_384)),
                };
                while batch.rows.len() < self.batch_size {
                    match rows.try_next().await.map_err(db_error)? {
                        Some(row) => {
                            if batch.columns.is_empty() {
                                batch.columns =
                                    row.columns().iter().map(|c| c.name().to_string()).collect();
                            }
                            batch.rows.push(decode(&row)?);
                        }
                        None => break,
                    }
                }
                Ok(batch)
            };
            let filled = match self.timeout {
                None => fill.await,
                Some(limit) => tokio::time::timeout(limit, fill).await.unwrap_or(Err(
                    ConnectorError::Timeout {
                        seconds: limit.as_secs(),
                    },
                )),
            };
            let last = match &filled {
                Ok(batch) => batch.rows.len() < self.batch_size,
                Err(_) => true,
            };
            if let Ok(batch) = &filled {
                if batch.rows.is_empty() {
                    return;
                }
                if names.is_empty() {
                    names = batch.columns.clone();
                }
            }
            slot.send(filled);
            if last {
                return;
            }
        }
    }

    /// Sends an error (the query could not start).
    pub(crate) async fn fail(self, error: ConnectorError) {
        let _ = self.sender.send(Err(error)).await;
    }
}

/// Takes an idle connection of `pool` and checks it still answers: its
/// prepared statements are dropped first (a statement prepared in an earlier
/// run fails once the table under it changed, "cached plan must not change
/// result type" after a column was added, while a new one sees the new
/// columns), then one ping. False if the pool holds no idle connection or
/// either step fails.
async fn ping_idle<DB: sqlx::Database + sqlx::database::HasStatementCache>(
    pool: &sqlx::Pool<DB>,
) -> bool {
    match pool.try_acquire() {
        Some(mut conn) => {
            sqlx::Connection::clear_cached_statements(&mut *conn)
                .await
                .is_ok()
                && sqlx::Connection::ping(&mut *conn).await.is_ok()
        }
        None => false,
    }
}

/// Statements (round trips: queries, writes, BEGIN/COMMIT) sent by every
/// connector of this process; see [`statements_sent`].
static STATEMENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many statements (round trips) all connectors of this process have
/// sent so far; `hubsync bench` reports its difference per site.
pub fn statements_sent() -> u64 {
    STATEMENTS.load(std::sync::atomic::Ordering::Relaxed)
}

async fn timed<T>(
    timeout: Option<Duration>,
    operation: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    STATEMENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match timeout {
        None => operation.await,
        Some(limit) => {
            tokio::time::timeout(limit, operation)
                .await
                .unwrap_or(Err(ConnectorError::Timeout {
                    seconds: limit.as_secs(),
                }))
        }
    }
}

impl Connector {
    /// Opens a pool to `url` and checks one connection works.
    ///
    /// Errors: [`ConnectorError::Connect`] / [`ConnectorError::ConnectTimeout`]
    /// naming the redacted URL.
    pub async fn connect(url: &DbUrl, options: &ConnectOptions) -> Result<Connector> {
        let connecting = async {
            match url {
                DbUrl::Postgres { .. } => {
                    PgConnector::connect(url, options).await.map(Pool::Postgres)
                }
                DbUrl::Sqlite { path } => SqliteConnector::connect(path, options)
                    .await
                    .map(Pool::Sqlite),
                DbUrl::MySql { .. } => MySqlConnector::connect(url, options).await.map(Pool::MySql),
            }
        };
        // The pool's own acquire timeout covers later acquisitions; this
        // bounds the first connection, DNS and TLS included.
        match tokio::time::timeout(options.connect_timeout + Duration::from_secs(1), connecting)
            .await
        {
            Ok(result) => result.map(|pool| Connector {
                pool,
                statement_timeout: options.statement_timeout,
            }),
            Err(_) => Err(ConnectorError::ConnectTimeout {
                url: url.redacted(),
                seconds: options.connect_timeout.as_secs(),
            }),
        }
    }

    /// The dialect of this database.
    pub fn dialect(&self) -> Dialect {
        match self.pool {
            Pool::Postgres(_) => Dialect::Postgres,
            Pool::Sqlite(_) => Dialect::Sqlite,
            Pool::MySql(_) => Dialect::MySql,
        }
    }

    /// Runs a query and returns all its rows (used for bounded keyset
    /// pages and small state queries; memory is the page size).
    pub async fn query(&self, sql: &str, params: &[Value]) -> Result<Batch> {
        timed(self.statement_timeout, async {
            match &self.pool {
                Pool::Postgres(c) => c.query(sql, params).await,
                Pool::Sqlite(c) => c.query(sql, params).await,
                Pool::MySql(c) => c.query(sql, params).await,
            }
        })
        .await
    }

    /// Runs a query and streams its rows to `sender` in batches of at most
    /// `batch_size` rows, as they arrive: one query for a whole keyset read,
    /// with the database sending rows while the hub applies earlier
    /// batches. The bounded channel is the backpressure: when it is full the
    /// hub stops reading the socket and the database waits, so memory stays
    /// at a few batches whatever the table size.
    ///
    /// The statement timeout applies to each batch (the wait for its rows),
    /// not to the whole read. An error is sent as the last item. Returns
    /// when the rows are exhausted, on error, or as soon as the receiver is
    /// gone (it stopped early).
    pub async fn query_batches(
        &self,
        sql: &str,
        params: &[Value],
        batch_size: usize,
        sender: tokio::sync::mpsc::Sender<Result<Batch>>,
    ) {
        STATEMENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let batches = BatchSink {
            batch_size: batch_size.max(1),
            timeout: self.statement_timeout,
            sender,
        };
        match &self.pool {
            Pool::Postgres(c) => c.query_batches(sql, params, batches).await,
            Pool::Sqlite(c) => c.query_batches(sql, params, batches).await,
            Pool::MySql(c) => c.query_batches(sql, params, batches).await,
        }
    }

    /// Runs a statement outside any explicit transaction; returns rows
    /// affected.
    pub async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64> {
        timed(self.statement_timeout, async {
            match &self.pool {
                Pool::Postgres(c) => c.execute(sql, params).await,
                Pool::Sqlite(c) => c.execute(sql, params).await,
                Pool::MySql(c) => c.execute(sql, params).await,
            }
        })
        .await
    }

    /// Runs several statements (no parameters) in order, as a migration does.
    pub async fn execute_script(&self, sql: &str) -> Result<()> {
        timed(self.statement_timeout, async {
            match &self.pool {
                Pool::Postgres(c) => c.execute_script(sql).await,
                Pool::Sqlite(c) => c.execute_script(sql).await,
                Pool::MySql(c) => c.execute_script(sql).await,
            }
        })
        .await
    }

    /// Describes table `table` (as written in config); `None` if it does
    /// not exist.
    pub async fn describe_table(&self, table: &str) -> Result<Option<TableInfo>> {
        timed(self.statement_timeout, async {
            match &self.pool {
                Pool::Postgres(c) => c.describe_table(table).await,
                Pool::Sqlite(c) => c.describe_table(table).await,
                Pool::MySql(c) => c.describe_table(table).await,
            }
        })
        .await
    }

    /// Names and type names of the columns a query would return, found by
    /// preparing it (nothing is read). Type names are the driver's
    /// (`INT4`, `NUMERIC`, `INT4[]` on PostgreSQL; declared types on SQLite).
    pub async fn describe_query(&self, sql: &str) -> Result<Vec<(String, String)>> {
        timed(self.statement_timeout, async {
            match &self.pool {
                Pool::Postgres(c) => c.describe_query(sql).await,
                Pool::Sqlite(c) => c.describe_query(sql).await,
                Pool::MySql(c) => c.describe_query(sql).await,
            }
        })
        .await
    }

    /// SQLite: the declared type of column `column` of query `sql`, as
    /// written in `CREATE TABLE` (the driver's type names keep only a few),
    /// found through the table the column comes from; `None` for an
    /// expression column, and on PostgreSQL and MySQL, whose
    /// [`Connector::describe_query`] names types exactly.
    pub async fn declared_type(&self, sql: &str, column: &str) -> Result<Option<String>> {
        timed(self.statement_timeout, async {
            match &self.pool {
                Pool::Sqlite(c) => c.declared_type(sql, column).await,
                Pool::Postgres(_) | Pool::MySql(_) => Ok(None),
            }
        })
        .await
    }

    /// True if values of a column of this type are decoded natively; other
    /// types must be read as text (`CAST(c AS text)`), which the target then
    /// parses back (arrays, intervals, enums... on PostgreSQL). SQLite and
    /// MySQL read every type natively.
    pub fn decodes_natively(&self, type_name: &str) -> bool {
        match self.pool {
            Pool::Postgres(_) => postgres::DECODED_TYPES.contains(&type_name),
            Pool::Sqlite(_) | Pool::MySql(_) => true,
        }
    }

    /// The database's clock, the start of its oldest open transaction and
    /// its snapshot (see `Dialect::visibility_sql`); `None` where the
    /// dialect cannot tell (SQLite).
    ///
    /// Errors: the statement failed.
    pub async fn visibility(&self) -> Result<Option<SourceClock>> {
        let Some(sql) = self.dialect().visibility_sql() else {
            return Ok(None);
        };
        let batch = self.query(sql, &[]).await?;
        let Some(row) = batch.rows.first() else {
            return Ok(None);
        };
        let now = match row.first() {
            Some(Value::TimestampTz(now)) => *now,
            // MySQL's `UTC_TIMESTAMP(6)` is a DATETIME holding UTC.
            Some(Value::Timestamp(now)) => now.and_utc(),
            _ => return Ok(None),
        };
        let oldest_open = match row.get(1) {
            Some(Value::TimestampTz(oldest)) => Some(*oldest),
            _ => None,
        };
        let snapshot = match row.get(2) {
            Some(Value::Text(text)) => crate::capture::Snapshot::parse(text),
            _ => None,
        };
        let sees_other_logins = match row.get(3) {
            Some(Value::Bool(sees)) => Some(*sees),
            _ => None,
        };
        Ok(Some(SourceClock {
            now,
            oldest_open,
            snapshot,
            sees_other_logins,
        }))
    }

    /// Starts a transaction.
    pub async fn begin(&self) -> Result<Tx> {
        let inner = timed(self.statement_timeout, async {
            match &self.pool {
                Pool::Postgres(c) => c.begin().await.map(TxInner::Postgres),
                Pool::Sqlite(c) => c.begin().await.map(TxInner::Sqlite),
                Pool::MySql(c) => c.begin().await.map(TxInner::MySql),
            }
        })
        .await?;
        let (max_statement_bytes, json_equals) = match &self.pool {
            Pool::MySql(c) => (c.max_statement_bytes(), c.json_equals()),
            Pool::Postgres(_) | Pool::Sqlite(_) => (usize::MAX, false),
        };
        Ok(Tx {
            inner,
            statement_timeout: self.statement_timeout,
            max_statement_bytes,
            json_equals,
        })
    }

    /// How many of `rows` an upsert into `spec` would insert or change, read
    /// without writing (PostgreSQL: `Dialect::pg_changed_rows`); `None` on
    /// SQLite and MySQL, where the upsert itself is the cheapest way to know.
    /// Lets a pull skip the write transaction of a batch that changes
    /// nothing (the overlap re-read of a no-op run).
    pub async fn changed_rows(
        &self,
        spec: &UpsertSpec<'_>,
        rows: &[Vec<Value>],
    ) -> Result<Option<u64>> {
        match &self.pool {
            Pool::Postgres(c) => timed(self.statement_timeout, c.changed_rows(spec, rows))
                .await
                .map(Some),
            Pool::Sqlite(_) | Pool::MySql(_) => Ok(None),
        }
    }

    /// True if the pool holds an idle connection that answers a ping
    /// within `timeout` (one round trip, no statement, plus one to drop the
    /// statements it prepared, which a schema change since may have made
    /// invalid): checked before a connection kept from an earlier run is
    /// used again, so that a site restarted in between costs a new login
    /// rather than a failed run.
    /// False for SQLite, whose connections are not kept between runs.
    pub async fn idle_alive(&self, timeout: Duration) -> bool {
        let ping = async {
            match &self.pool {
                Pool::Postgres(c) => c.ping_idle().await,
                Pool::MySql(c) => c.ping_idle().await,
                Pool::Sqlite(_) => false,
            }
        };
        tokio::time::timeout(timeout, ping).await.unwrap_or(false)
    }

    /// Closes every connection of the pool (waiting at most 2 s).
    pub async fn close(&self) {
        // A connection stuck in a statement that timed out would make the
        // pool wait for it forever; it is abandoned after a short grace.
        let closing = async {
            match &self.pool {
                Pool::Postgres(c) => c.close().await,
                Pool::Sqlite(c) => c.close().await,
                Pool::MySql(c) => c.close().await,
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
    }
}

/// An open transaction; dropped without [`Tx::commit`] it rolls back. Each
/// operation is bounded by the connector's statement timeout.
pub struct Tx {
    inner: TxInner,
    statement_timeout: Option<Duration>,
    /// MySQL: bytes of bound values one upsert statement may carry.
    max_statement_bytes: usize,
    /// MariaDB 10.7+: compare JSON columns with `JSON_EQUALS`.
    json_equals: bool,
}

enum TxInner {
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    MySql(sqlx::Transaction<'static, sqlx::MySql>),
}

/// What to do with the transaction's one savepoint ([`Tx::savepoint`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Savepoint {
    /// `SAVEPOINT`: mark the point (before one row's write).
    Set,
    /// `RELEASE SAVEPOINT`: keep what was done since.
    Release,
    /// `ROLLBACK TO SAVEPOINT`: undo what was done since, keep the
    /// transaction.
    RollBack,
}

impl Tx {
    /// Sets, releases or rolls back to the transaction's savepoint
    /// (`hubsync_row`; the same SQL in every dialect hubsync speaks: SQL
    /// standard savepoints). Used to apply rows one by one and keep the
    /// ones the database accepts.
    ///
    /// Errors: the statement failed.
    pub async fn savepoint(&mut self, action: Savepoint) -> Result<()> {
        let sql = match action {
            Savepoint::Set => "SAVEPOINT hubsync_row",
            Savepoint::Release => "RELEASE SAVEPOINT hubsync_row",
            Savepoint::RollBack => "ROLLBACK TO SAVEPOINT hubsync_row",
        };
        self.execute(sql, &[]).await.map(|_| ())
    }

    /// Runs a statement; returns rows affected.
    pub async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let timeout = self.statement_timeout;
        timed(timeout, async {
            match &mut self.inner {
                TxInner::Postgres(tx) => postgres::execute_on(tx, sql, params).await,
                TxInner::Sqlite(tx) => sqlite::execute_on(tx, sql, params).await,
                TxInner::MySql(tx) => mysql::execute_on(tx, sql, params).await,
            }
        })
        .await
    }

    /// Runs a query; returns its rows.
    pub async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Batch> {
        let timeout = self.statement_timeout;
        timed(timeout, async {
            match &mut self.inner {
                TxInner::Postgres(tx) => postgres::query_on(tx, sql, params).await,
                TxInner::Sqlite(tx) => sqlite::query_on(tx, sql, params).await,
                TxInner::MySql(tx) => mysql::query_on(tx, sql, params).await,
            }
        })
        .await
    }

    /// Inserts `rows` with no conflict handling where the dialect has a
    /// faster path for it (PostgreSQL `COPY ... FROM STDIN`, MySQL plain
    /// multi-row `INSERT`s without the existing-key count and collation
    /// check of its upsert), for a target
    /// known to hold none of their keys (a site's initial load); elsewhere
    /// the same as [`Tx::upsert`]. Returns rows written.
    ///
    /// Errors: a refused value, or a key already present (a unique
    /// violation, kind `data`): nothing of `rows` is written.
    pub async fn copy_in(&mut self, spec: &UpsertSpec<'_>, rows: &[Vec<Value>]) -> Result<u64> {
        let timeout = self.statement_timeout;
        match &mut self.inner {
            TxInner::Postgres(tx) => timed(timeout, postgres::copy_in_on(tx, spec, rows)).await,
            TxInner::MySql(tx) => {
                let max_bytes = self.max_statement_bytes;
                timed(timeout, mysql::insert_on(tx, spec, rows, max_bytes)).await
            }
            TxInner::Sqlite(_) => self.upsert(spec, rows).await,
        }
    }

    /// Upserts `rows` (each with `spec.columns.len()` values in that order);
    /// returns rows actually inserted or changed (unchanged rows count 0).
    /// Splits into several statements when the dialect's bind-parameter
    /// limit requires it (and on MySQL, to keep each statement's bound values
    /// under half the server's `max_allowed_packet`).
    pub async fn upsert(&mut self, spec: &UpsertSpec<'_>, rows: &[Vec<Value>]) -> Result<u64> {
        let timeout = self.statement_timeout;
        let max_bytes = self.max_statement_bytes;
        let json_equals = self.json_equals;
        timed(timeout, async {
            match &mut self.inner {
                TxInner::Postgres(tx) => postgres::upsert_on(tx, spec, rows).await,
                TxInner::Sqlite(tx) => sqlite::upsert_on(tx, spec, rows).await,
                TxInner::MySql(tx) => {
                    mysql::upsert_on(tx, spec, rows, max_bytes, json_equals).await
                }
            }
        })
        .await
    }

    /// Deletes the rows whose key is one of `keys` (each with
    /// `spec.columns.len()` values: the key columns, in that order; for
    /// PostgreSQL `spec.column_types` gives their types); returns rows
    /// deleted.
    pub async fn delete_keys(&mut self, spec: &UpsertSpec<'_>, keys: &[Vec<Value>]) -> Result<u64> {
        let timeout = self.statement_timeout;
        timed(timeout, async {
            match &mut self.inner {
                TxInner::Postgres(tx) => postgres::delete_on(tx, spec, keys).await,
                TxInner::Sqlite(tx) => sqlite::delete_on(tx, spec, keys).await,
                TxInner::MySql(tx) => mysql::delete_on(tx, spec, keys).await,
            }
        })
        .await
    }

    /// Commits.
    pub async fn commit(self) -> Result<()> {
        timed(self.statement_timeout, async {
            match self.inner {
                TxInner::Postgres(tx) => tx.commit().await,
                TxInner::Sqlite(tx) => tx.commit().await,
                TxInner::MySql(tx) => tx.commit().await,
            }
            .map_err(db_error)
        })
        .await
    }
}
