//! MySQL and MariaDB I/O: typed reads into [`Value`], multi-row
//! `INSERT ... ON DUPLICATE KEY UPDATE` upserts capped by rows and bytes.
//!
//! Session rules, set on every connection: `time_zone = '+00:00'` (so
//! `TIMESTAMP` columns read and write UTC instants), `NAMES utf8mb4` (4-byte
//! characters such as emoji survive), `STRICT_ALL_TABLES` added to the
//! server's `sql_mode` (an over-long text or an out-of-range number is an
//! error, not a warning), `||` left as the server means it, and the statement
//! timeout as `max_statement_time` (MariaDB, seconds) or
//! `max_execution_time` (MySQL 8, milliseconds, reads only), and isolation
//! `READ COMMITTED` (as PostgreSQL; InnoDB's default REPEATABLE READ takes
//! gap locks that deadlock concurrent state-table inserts).
//!
//! Reads use the binary protocol (prepared statements). Types are told apart
//! by the column definition: `TINYINT(1)` is a small integer (MySQL has no
//! boolean; a boolean target column accepts its 0/1), the other unsigned
//! integers (`TINYINT(1) UNSIGNED` included) are read unsigned, `BIGINT
//! UNSIGNED` is an exact decimal (it exceeds `i64`), `DECIMAL` is read as its exact text,
//! `TIMESTAMP` as a UTC instant, `DATETIME` as a local date-time, and a
//! string column is bytes only when its character set is `binary` (collation
//! 63), not merely because the protocol's `BINARY` flag is set (a `_bin`
//! collation sets it too). Zero dates (`0000-00-00`) have no calendar form:
//! they are read as the text MySQL spells them, and the flow decides (see
//! `docs/types.md`).
//!
//! Writes bind each value natively and first check it against the target
//! column's declared type ([`check_value`]): values MySQL would round, clip
//! or refuse without naming them (NaN, ±Infinity, a decimal with too many
//! digits, fractional seconds beyond the column's precision, years before 1,
//! a `TIMESTAMP` outside 1970–2038, PostgreSQL's `infinity`) stop the batch
//! before anything is written.

use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use futures::TryStreamExt;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions, MySqlRow};
use sqlx::{
    AssertSqlSafe, Column, ConnectOptions as _, Executor, MySqlConnection, MySqlPool, Row,
    TypeInfo, ValueRef,
};

use super::{BatchSink, ColumnInfo, ConnectOptions, ConnectorError, Result, TableInfo, db_error};
use crate::config::DbUrl;
use crate::dialect::{Dialect, UpsertSpec};
use crate::value::{Batch, Value, decimal_digits};

/// A pool of MySQL/MariaDB connections.
pub struct MySqlConnector {
    pool: MySqlPool,
    /// Largest upsert statement sent, in bytes of bound values (half the
    /// server's `max_allowed_packet`, at most 16 MiB).
    max_statement_bytes: usize,
    /// MariaDB 10.7 or newer: `JSON` columns (`LONGTEXT` with a
    /// `json_valid` check) are compared by meaning with `JSON_EQUALS`.
    json_equals: bool,
}

/// Rows per upsert statement at most (fewer when the bytes cap or the
/// 65,535-parameter limit bites first).
const MYSQL_ROWS_PER_STATEMENT: usize = 1000;

impl MySqlConnector {
    /// Opens a pool (UTC session, utf8mb4, strict mode, statement timeout)
    /// and checks one connection; learns `max_allowed_packet` and whether the
    /// server is MariaDB.
    ///
    /// Errors: [`ConnectorError::Connect`] naming the redacted URL and the
    /// server's message (refused); [`ConnectorError::ConnectTimeout`] when
    /// nothing answers within the connect timeout; [`ConnectorError::Login`] for
    /// a bad password or an unknown database (not retried).
    pub async fn connect(url: &DbUrl, options: &ConnectOptions) -> Result<MySqlConnector> {
        let DbUrl::MySql {
            url: text,
            password,
        } = url
        else {
            unreachable!("MySqlConnector::connect called with a non-mysql URL")
        };
        let connect_error = |message: String| ConnectorError::Connect {
            url: url.redacted(),
            message,
        };
        // sqlx knows the `mysql` scheme only; MariaDB speaks the same protocol.
        let driver_url = match text.strip_prefix("mariadb://") {
            Some(rest) => format!("mysql://{rest}"),
            None => text.clone(),
        };
        // sqlx's own session `SET` (time zone, names, sql_mode) is off:
        // `session_sql` sends it with the rest in one round trip.
        let mut connect_options = MySqlConnectOptions::from_str(&driver_url)
            .map_err(|e| connect_error(first_line(&e.to_string())))?
            .charset("utf8mb4")
            .timezone(None)
            .set_names(false)
            .pipes_as_concat(false)
            .no_engine_substitution(false)
            .disable_statement_logging();
        if let Some(password) = password {
            connect_options = connect_options.password(password.expose());
        }
        // The server's version and packet limit, read by the first
        // connection's `after_connect` and kept for the run.
        let facts: Arc<OnceLock<(String, u64)>> = Arc::new(OnceLock::new());
        let known = Arc::clone(&facts);
        let session = session_sql(options.statement_timeout);
        let pool = MySqlPoolOptions::new()
            .max_connections(options.max_connections)
            .min_connections(0)
            .acquire_timeout(options.acquire_timeout)
            .after_connect(move |conn, _meta| {
                let known = Arc::clone(&known);
                let session = session.clone();
                Box::pin(async move {
                    // One round trip (the text protocol runs `;`-separated
                    // statements; every result is drained and the first
                    // error fails the connection).
                    let rows = sqlx::raw_sql(AssertSqlSafe(session))
                        .fetch_all(&mut *conn)
                        .await?;
                    if known.get().is_none()
                        && let Some(row) = rows.last()
                    {
                        let _ = known.set(server_facts(row));
                    }
                    Ok(())
                })
            })
            .connect_lazy_with(connect_options.clone());
        // The pool's first connection, checked now and kept for the run:
        // one login per site, which also reads the facts above.
        super::check_first_connection(
            &pool,
            &connect_options,
            url,
            options.connect_timeout,
            connect_message,
        )
        .await?;
        let (version, max_allowed_packet) =
            facts.get().cloned().unwrap_or((String::new(), 4 << 20));
        let is_mariadb = version.contains("MariaDB");
        Ok(MySqlConnector {
            pool,
            max_statement_bytes: (max_allowed_packet as usize / 2).clamp(64 << 10, 16 << 20),
            json_equals: is_mariadb && mariadb_at_least(&version, 10, 7),
        })
    }

    /// Bytes of bound values one upsert statement may carry.
    pub(super) fn max_statement_bytes(&self) -> usize {
        self.max_statement_bytes
    }

    /// True on MariaDB 10.7+, whose `JSON_EQUALS` compares JSON by meaning.
    pub(super) fn json_equals(&self) -> bool {
        self.json_equals
    }

    pub(super) async fn query(&self, sql: &str, params: &[Value]) -> Result<Batch> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        query_on(&mut conn, sql, params).await
    }

    /// One query's rows in batches as they arrive (see
    /// `Connector::query_batches`). The server streams a result set and
    /// waits while the hub applies earlier batches, up to the session's
    /// `net_write_timeout` (set to 10 minutes per session).
    pub(super) async fn query_batches(&self, sql: &str, params: &[Value], sink: BatchSink) {
        let mut conn = match self.pool.acquire().await {
            Ok(conn) => conn,
            Err(e) => return sink.fail(db_error(e)).await,
        };
        let rows = bind_all(sql.to_string(), params).fetch(&mut *conn);
        sink.drain(rows, decode_row).await;
    }

    pub(super) async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        execute_on(&mut conn, sql, params).await
    }

    pub(super) async fn execute_script(&self, sql: &str) -> Result<()> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        // The text protocol runs `;`-separated statements in one call
        // (sqlx enables multi-statements); drain every result.
        let mut results = conn.execute_many(AssertSqlSafe(sql.to_string()));
        while results.try_next().await.map_err(db_error)?.is_some() {}
        Ok(())
    }

    /// The table's columns, unique keys and (MariaDB) JSON columns, from
    /// one catalog query (one round trip per stream and site; the three
    /// catalog tables are read as one `UNION ALL`, sorted here).
    pub(super) async fn describe_table(&self, table: &str) -> Result<Option<TableInfo>> {
        let (schema, name) = match table.split_once('.') {
            Some((schema, name)) => (Value::Text(schema.into()), Value::Text(name.into())),
            None => (Value::Null, Value::Text(table.into())),
        };
        // kind, name, detail, flag, position: `c` a column (name, type,
        // required, ordinal), `k` a unique index's column (index, column,
        // primary, sequence), `j` a MariaDB check clause (JSON columns).
        let mut sql = String::from(
            "SELECT 'c', COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE = 'NO' AND COLUMN_DEFAULT IS NULL \
             AND EXTRA NOT LIKE '%auto_increment%' AND EXTRA NOT LIKE '%GENERATED%', ORDINAL_POSITION \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = coalesce(?, DATABASE()) AND TABLE_NAME = ? \
             UNION ALL SELECT 'k', INDEX_NAME, COLUMN_NAME, INDEX_NAME = 'PRIMARY', SEQ_IN_INDEX \
             FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = coalesce(?, DATABASE()) AND TABLE_NAME = ? AND NON_UNIQUE = 0",
        );
        let mut params = vec![schema.clone(), name.clone(), schema.clone(), name.clone()];
        // MariaDB's JSON is LONGTEXT with a `json_valid(`c`)` check: call
        // it `json`, as MySQL 8 does (MySQL 8's catalog has no TABLE_NAME
        // there, so only MariaDB is asked).
        if self.json_equals {
            sql.push_str(
                " UNION ALL SELECT 'j', CHECK_CLAUSE, '', 0, 0 FROM information_schema.CHECK_CONSTRAINTS \
                 WHERE CONSTRAINT_SCHEMA = coalesce(?, DATABASE()) AND TABLE_NAME = ?",
            );
            params.extend([schema, name]);
        }
        let rows = self.query(&sql, &params).await?.rows;
        let number = |value: &Value| text_of(value).parse::<u64>().unwrap_or(0);
        let flag = |value: &Value| number(value) == 1;
        let of_kind = |kind: &str| -> Vec<&Vec<Value>> {
            rows.iter().filter(|row| text_of(&row[0]) == kind).collect()
        };
        let mut columns = of_kind("c");
        if columns.is_empty() {
            return Ok(None);
        }
        columns.sort_by_key(|row| number(&row[4]));
        let mut keys = of_kind("k");
        // The primary key first, then by index name, each in its order.
        keys.sort_by(|a, b| {
            (!flag(&a[3]), text_of(&a[1]), number(&a[4])).cmp(&(
                !flag(&b[3]),
                text_of(&b[1]),
                number(&b[4]),
            ))
        });
        let mut unique_keys: Vec<Vec<String>> = Vec::new();
        let mut current: Option<String> = None;
        for row in keys {
            let index = text_of(&row[1]);
            if current.as_ref() != Some(&index) {
                unique_keys.push(Vec::new());
                current = Some(index);
            }
            unique_keys
                .last_mut()
                .expect("pushed above")
                .push(text_of(&row[2]));
        }
        let json_columns: Vec<String> = (of_kind("j").into_iter())
            .filter_map(|row| {
                let clause = text_of(&row[1]);
                clause
                    .strip_prefix("json_valid(`")
                    .and_then(|rest| rest.strip_suffix("`)"))
                    .map(|column| column.replace("``", "`"))
            })
            .collect();
        Ok(Some(TableInfo {
            columns: columns
                .into_iter()
                .map(|row| {
                    let column_type = if json_columns.contains(&text_of(&row[1])) {
                        "json".to_string()
                    } else {
                        text_of(&row[2])
                    };
                    ColumnInfo {
                        name: text_of(&row[1]),
                        data_type: column_type.clone(),
                        cast_type: column_type,
                        required: flag(&row[3]),
                    }
                })
                .collect(),
            case_insensitive_names: true,
            unique_keys,
        }))
    }

    pub(super) async fn describe_query(&self, sql: &str) -> Result<Vec<(String, String)>> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        let statement = conn
            .prepare(sqlx::SqlSafeStr::into_sql_str(AssertSqlSafe(
                sql.to_string(),
            )))
            .await
            .map_err(db_error)?;
        Ok(sqlx::Statement::columns(&statement)
            .iter()
            .map(|c| (c.name().to_string(), type_name(c.type_info()).to_string()))
            .collect())
    }

    pub(super) async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::MySql>> {
        self.pool.begin().await.map_err(db_error)
    }

    /// Pings an idle connection of the pool (see [`super::ping_idle`]).
    pub(super) async fn ping_idle(&self) -> bool {
        super::ping_idle(&self.pool).await
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }
}

/// True if a MariaDB `VERSION()` string (`10.11.14-MariaDB-0+deb12u2`) is
/// at least `major.minor`.
fn mariadb_at_least(version: &str, major: u32, minor: u32) -> bool {
    let mut parts = version
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}

/// The server's `VERSION()` and `max_allowed_packet` (4 MiB if
/// unreadable), from the last row [`session_sql`] returns.
fn server_facts(row: &MySqlRow) -> (String, u64) {
    let version: String = row.try_get(0).unwrap_or_default();
    let max_allowed_packet: u64 = row
        .try_get::<u64, _>(1)
        .or_else(|_| row.try_get::<i64, _>(1).map(|v| v.max(0) as u64))
        .unwrap_or(4 << 20);
    (version, max_allowed_packet)
}

/// The statements every new connection runs, in one round trip: the
/// session's settings (UTC, utf8mb4, strict mode, a 10-minute
/// `net_write_timeout` for a streamed keyset read that waits while the hub
/// applies earlier batches), READ COMMITTED (PostgreSQL's default, no gap
/// locks, so two hubs or two sites' runs inserting state rows side by side
/// do not deadlock as they do under REPEATABLE READ), the statement timeout
/// under its server's name (MariaDB's `max_statement_time` in seconds,
/// MySQL's `max_execution_time` in milliseconds, chosen by the server from
/// its `VERSION()` through a prepared `SET`), then `SELECT VERSION(),
/// @@max_allowed_packet`.
fn session_sql(statement_timeout: Option<std::time::Duration>) -> String {
    let mut sql =
        "SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_ENGINE_SUBSTITUTION,STRICT_ALL_TABLES'), \
                   time_zone = '+00:00', NAMES utf8mb4, net_write_timeout = 600; \
                   SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED; "
            .to_string();
    if let Some(limit) = statement_timeout {
        sql.push_str(&format!(
            "SET @hubsync_timeout = IF(VERSION() LIKE '%MariaDB%', \
             'SET SESSION max_statement_time = {}', 'SET SESSION max_execution_time = {}'); \
             PREPARE hubsync_timeout FROM @hubsync_timeout; EXECUTE hubsync_timeout; \
             DEALLOCATE PREPARE hubsync_timeout; SET @hubsync_timeout = NULL; ",
            limit.as_secs_f64(),
            limit.as_millis()
        ));
    }
    sql.push_str("SELECT VERSION(), @@max_allowed_packet");
    sql
}

fn first_line(message: &str) -> String {
    crate::config::url::redact_url_text(message.lines().next().unwrap_or(message))
}

/// The server's own message for a refused login or an unknown database,
/// otherwise the driver's.
fn connect_message(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => db.message().to_string(),
        other => first_line(&other.to_string()),
    }
}

fn text_of(value: &Value) -> String {
    match value {
        Value::Text(s) => s.clone(),
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        other => other.to_string(),
    }
}

/// The column's type name: sqlx's, except that a signed `TINYINT(1)` is
/// called so and an unsigned one `TINYINT UNSIGNED` (sqlx says `BOOLEAN` for
/// any `TINYINT` of display width 1, and decoding it as signed would read
/// 255 as -1), and a string column whose character set is not `binary` is
/// text even when the protocol flags it binary (`_bin` collations do).
pub(crate) fn type_name(info: &sqlx::mysql::MySqlTypeInfo) -> &'static str {
    let name = sqlx_type_name(info);
    if name == "BOOLEAN" {
        // `u8`'s compatibility check is the UNSIGNED flag of an integer
        // column (the flag itself is private to sqlx).
        return if <u8 as sqlx::Type<sqlx::MySql>>::compatible(info) {
            "TINYINT UNSIGNED"
        } else {
            "TINYINT(1)"
        };
    }
    // sqlx keeps the collation private; its Debug form shows it.
    let binary_charset = format!("{info:?}").contains("Collation(63)");
    match name {
        "BINARY" if !binary_charset => "CHAR",
        "VARBINARY" if !binary_charset => "VARCHAR",
        "TINYBLOB" if !binary_charset => "TINYTEXT",
        "BLOB" if !binary_charset => "TEXT",
        "MEDIUMBLOB" if !binary_charset => "MEDIUMTEXT",
        "LONGBLOB" if !binary_charset => "LONGTEXT",
        other => other,
    }
}

/// sqlx's name as a `'static` string (its names are all literals).
fn sqlx_type_name(info: &sqlx::mysql::MySqlTypeInfo) -> &'static str {
    const NAMES: &[&str] = &[
        "BOOLEAN",
        "TINYINT UNSIGNED",
        "SMALLINT UNSIGNED",
        "INT UNSIGNED",
        "MEDIUMINT UNSIGNED",
        "BIGINT UNSIGNED",
        "TINYINT",
        "SMALLINT",
        "INT",
        "MEDIUMINT",
        "BIGINT",
        "FLOAT",
        "DOUBLE",
        "NULL",
        "TIMESTAMP",
        "DATE",
        "TIME",
        "DATETIME",
        "YEAR",
        "BIT",
        "ENUM",
        "SET",
        "DECIMAL",
        "GEOMETRY",
        "JSON",
        "BINARY",
        "VARBINARY",
        "CHAR",
        "VARCHAR",
        "TINYBLOB",
        "TINYTEXT",
        "BLOB",
        "TEXT",
        "MEDIUMBLOB",
        "MEDIUMTEXT",
        "LONGBLOB",
        "LONGTEXT",
    ];
    let name = info.name();
    NAMES
        .iter()
        .copied()
        .find(|n| *n == name)
        .unwrap_or("UNKNOWN")
}

type MySqlQuery<'q> = sqlx::query::Query<'q, sqlx::MySql, sqlx::mysql::MySqlArguments>;

/// Binds one value natively (instants as their UTC date-time: the session
/// time zone is UTC). Text and bytes are bound by reference: the arguments
/// encode each value into their buffer at once, so no copy is made.
fn bind_value<'q>(query: MySqlQuery<'q>, value: &'q Value) -> MySqlQuery<'q> {
    match value {
        Value::Null => query.bind(None::<&str>),
        Value::Bool(b) => query.bind(*b),
        Value::Int(i) => query.bind(*i),
        Value::Float(f) => query.bind(*f),
        Value::Numeric(s) | Value::Text(s) | Value::Json(s) => query.bind(s.as_str()),
        Value::Bytes(b) => query.bind(b.as_slice()),
        Value::Date(d) => query.bind(*d),
        Value::Time(t) => query.bind(*t),
        Value::Timestamp(ts) => query.bind(*ts),
        Value::TimestampTz(ts) => query.bind(ts.naive_utc()),
        Value::Uuid(u) => query.bind(u.hyphenated().to_string()),
    }
}

fn bind_all<'q>(sql: String, params: &'q [Value]) -> MySqlQuery<'q> {
    params
        .iter()
        .fold(sqlx::query(AssertSqlSafe(sql)), bind_value)
}

pub(super) async fn execute_on(
    conn: &mut MySqlConnection,
    sql: &str,
    params: &[Value],
) -> Result<u64> {
    // Without parameters, the text protocol: transaction control, savepoints
    // and DDL are not all allowed as prepared statements.
    let result = if params.is_empty() {
        conn.execute(AssertSqlSafe(sql.to_string()))
            .await
            .map_err(db_error)?
    } else {
        bind_all(sql.to_string(), params)
            .execute(conn)
            .await
            .map_err(db_error)?
    };
    Ok(result.rows_affected())
}

pub(super) async fn query_on(
    conn: &mut MySqlConnection,
    sql: &str,
    params: &[Value],
) -> Result<Batch> {
    let mut rows = bind_all(sql.to_string(), params).fetch(conn);
    let mut batch = Batch::default();
    while let Some(row) = rows.try_next().await.map_err(db_error)? {
        if batch.columns.is_empty() {
            batch.columns = row.columns().iter().map(|c| c.name().to_string()).collect();
        }
        batch.rows.push(decode_row(&row)?);
    }
    Ok(batch)
}

/// Bytes a bound value takes in a prepared statement's packet (an upper
/// estimate: payload plus a length prefix).
fn bound_size(value: &Value) -> usize {
    match value {
        Value::Numeric(s) | Value::Text(s) | Value::Json(s) => s.len() + 9,
        Value::Bytes(b) => b.len() + 9,
        _ => 16,
    }
}

/// Upserts `rows` in statements of at most [`MYSQL_ROWS_PER_STATEMENT`]
/// rows, 65,535 parameters and `max_bytes` of bound values; returns rows
/// inserted or changed. Every value is first checked against its column's
/// declared type (`spec.column_types`). Rows already present are counted
/// before each statement: MySQL reports 1 per inserted or unchanged row and
/// 2 per changed row, so changed + inserted = affected - existing.
pub(super) async fn upsert_on(
    conn: &mut MySqlConnection,
    spec: &UpsertSpec<'_>,
    rows: &[Vec<Value>],
    max_bytes: usize,
    json_equals: bool,
) -> Result<u64> {
    let coerced = coerce_rows(spec, rows);
    let rows: &[Vec<Value>] = coerced.as_deref().unwrap_or(rows);
    let max_rows = checked_rows_per_statement(spec, rows)?;
    let key_indexes: Vec<usize> = spec
        .key
        .iter()
        .filter_map(|k| spec.columns.iter().position(|c| c == k))
        .collect();
    let collations = key_collations(conn, spec).await?;
    // MariaDB JSON columns: an equal document spelled differently is not
    // a change (MySQL 8's JSON type compares by meaning itself).
    let by_meaning: Vec<bool> = spec
        .column_types
        .iter()
        .map(|t| json_equals && t.eq_ignore_ascii_case("json"))
        .collect();
    let check_merges = collations.iter().any(Option::is_some);
    let mut written = 0;
    let mut start = 0;
    while start < rows.len() {
        let end = chunk_end(rows, start, max_rows, max_bytes)?;
        let chunk = &rows[start..end];
        let existing_sql = Dialect::MySql.existing_keys(spec.table, spec.key, chunk.len());
        let key_values: Vec<Value> = chunk
            .iter()
            .flat_map(|row| key_indexes.iter().map(|i| row[*i].clone()))
            .collect();
        let existing = query_on(conn, &existing_sql, &key_values).await?;
        if check_merges {
            check_merged_keys(conn, spec, chunk, &key_indexes, &existing, &collations).await?;
        }
        let existing = existing.len() as u64;
        let sql = Dialect::MySql.mysql_upsert(spec, chunk.len(), &by_meaning);
        let query = chunk
            .iter()
            .flatten()
            .fold(sqlx::query(AssertSqlSafe(sql)), bind_value);
        let affected = query
            .execute(&mut *conn)
            .await
            .map_err(db_error)?
            .rows_affected();
        written += affected.saturating_sub(existing);
        start = end;
    }
    Ok(written)
}

/// Checks every value of `rows` (text date-times already made typed by
/// `coerce_rows`, so the checks see their fractions) against its column's
/// declared type; returns the rows one statement may carry (the
/// bind-parameter limit, at most [`MYSQL_ROWS_PER_STATEMENT`]).
fn checked_rows_per_statement(spec: &UpsertSpec<'_>, rows: &[Vec<Value>]) -> Result<usize> {
    check_rows(spec, rows)?;
    Ok(Dialect::MySql
        .max_rows_per_upsert(spec.columns.len())
        .min(MYSQL_ROWS_PER_STATEMENT))
}

/// The end (exclusive) of the statement that starts at row `start`: at
/// most `max_rows` rows and `max_bytes` of bound values. Errors when the
/// row at `start` alone needs more than `max_bytes`.
fn chunk_end(
    rows: &[Vec<Value>],
    start: usize,
    max_rows: usize,
    max_bytes: usize,
) -> Result<usize> {
    let mut end = start;
    let mut bytes = 0;
    while end < rows.len() && end - start < max_rows {
        let row_bytes: usize = rows[end].iter().map(bound_size).sum();
        if end > start && bytes + row_bytes > max_bytes {
            break;
        }
        bytes += row_bytes;
        end += 1;
    }
    if bytes > max_bytes {
        return Err(ConnectorError::other(format!(
            "one row needs {bytes} bytes, more than hubsync sends in one statement \
             ({max_bytes} bytes: half of the server's `max_allowed_packet`, leaving room for the \
             statement); raise `max_allowed_packet` at the target"
        )));
    }
    Ok(end)
}

/// Inserts `rows` with plain multi-row `INSERT`s (no `ON DUPLICATE KEY`),
/// sized as [`upsert_on`]'s statements, after the same value checks: the
/// initial load of a table known to hold none of their keys, which needs
/// neither the count of existing keys nor the collation merge check. A key
/// already present, or two rows whose keys are equal under the target's
/// collation, fail with MySQL error 1062 (the caller then upserts, which
/// names the merged keys). Returns rows inserted.
pub(super) async fn insert_on(
    conn: &mut MySqlConnection,
    spec: &UpsertSpec<'_>,
    rows: &[Vec<Value>],
    max_bytes: usize,
) -> Result<u64> {
    let coerced = coerce_rows(spec, rows);
    let rows: &[Vec<Value>] = coerced.as_deref().unwrap_or(rows);
    let max_rows = checked_rows_per_statement(spec, rows)?;
    let mut written = 0;
    let mut start = 0;
    while start < rows.len() {
        let end = chunk_end(rows, start, max_rows, max_bytes)?;
        let sql = Dialect::MySql.insert_rows(spec.table, spec.columns, end - start);
        let query = rows[start..end]
            .iter()
            .flatten()
            .fold(sqlx::query(AssertSqlSafe(sql)), bind_value);
        written += query
            .execute(&mut *conn)
            .await
            .map_err(db_error)?
            .rows_affected();
        start = end;
    }
    Ok(written)
}

/// Deletes the rows whose key (all of `spec.columns`) is one of `rows`, in
/// statements of at most [`MYSQL_ROWS_PER_STATEMENT`] keys; returns rows
/// deleted.
pub(super) async fn delete_on(
    conn: &mut MySqlConnection,
    spec: &UpsertSpec<'_>,
    rows: &[Vec<Value>],
) -> Result<u64> {
    let per_statement = Dialect::MySql
        .max_rows_per_upsert(spec.columns.len())
        .min(MYSQL_ROWS_PER_STATEMENT);
    let mut deleted = 0;
    for chunk in rows.chunks(per_statement) {
        let sql = Dialect::MySql.delete_keys(spec, chunk.len());
        let query = chunk
            .iter()
            .flatten()
            .fold(sqlx::query(AssertSqlSafe(sql)), bind_value);
        deleted += query
            .execute(&mut *conn)
            .await
            .map_err(db_error)?
            .rows_affected();
    }
    Ok(deleted)
}

/// Per key column of `spec`: its (character set, collation) at the target
/// if it is a text column, else `None`. Names are checked to be plain
/// identifiers, since they are written into SQL.
async fn key_collations(
    conn: &mut MySqlConnection,
    spec: &UpsertSpec<'_>,
) -> Result<Vec<Option<(String, String)>>> {
    let (schema, name) = match spec.table.split_once('.') {
        Some((schema, name)) => (Value::Text(schema.into()), Value::Text(name.into())),
        None => (Value::Null, Value::Text(spec.table.into())),
    };
    let catalog = query_on(
        conn,
        "SELECT COLUMN_NAME, CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = coalesce(?, DATABASE()) AND TABLE_NAME = ? AND COLLATION_NAME IS NOT NULL",
        &[schema, name],
    )
    .await?;
    let plain =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    Ok(spec
        .key
        .iter()
        .map(|key| {
            catalog
                .rows
                .iter()
                .find(|row| text_of(&row[0]) == *key)
                .map(|row| (text_of(&row[1]), text_of(&row[2])))
                .filter(|(charset, collation)| plain(charset) && plain(collation))
        })
        .collect())
}

/// `(a, b)`: a key tuple for messages.
fn key_text(values: &[Value]) -> String {
    let parts: Vec<String> = values.iter().map(ToString::to_string).collect();
    format!("({})", parts.join(", "))
}

/// Fails when two rows of `chunk` have keys that differ but are equal under
/// the target's collation (`'ABC'`, `'abc'`, `'abc '` under a
/// case-insensitive, pad-space collation), or when a row's key matched an
/// existing target row (`existing`, found by the collation) whose key is
/// spelled differently: either way one row would silently overwrite
/// another. Both keys are named.
async fn check_merged_keys(
    conn: &mut MySqlConnection,
    spec: &UpsertSpec<'_>,
    chunk: &[Vec<Value>],
    key_indexes: &[usize],
    existing: &Batch,
    collations: &[Option<(String, String)>],
) -> Result<()> {
    let key_of =
        |row: &[Value]| -> Vec<Value> { key_indexes.iter().map(|i| row[*i].clone()).collect() };
    // Only text columns can merge; other key columns may come back in
    // another spelling (an instant read as a local date-time) and are
    // equal by value already.
    let spelled = |values: &[Value]| -> Vec<Option<String>> {
        values
            .iter()
            .zip(collations)
            .filter(|(_, collation)| collation.is_some())
            .map(|(v, _)| v.to_pg_text())
            .collect()
    };
    let collation_names: Vec<String> = collations
        .iter()
        .flatten()
        .map(|(_, collation)| format!("`{collation}`"))
        .collect();
    let merged = |a: &[Value], b: &[Value], how: &str| ConnectorError::Type {
        column: spec.key.join(", "),
        message: format!(
            "{how}: keys {} and {} are equal under the target's collation {}; make the target's key columns \
             case- and space-sensitive (e.g. `COLLATE utf8mb4_bin`) or make the keys unique at the source",
            key_text(a),
            key_text(b),
            collation_names.join(", ")
        ),
    };
    if chunk.len() > 1 {
        let sql = Dialect::MySql.merged_keys(collations, chunk.len());
        let mut params = Vec::with_capacity(chunk.len() * (key_indexes.len() + 1));
        for (n, row) in chunk.iter().enumerate() {
            params.push(Value::Int(n as i64));
            params.extend(key_of(row));
        }
        let groups = query_on(conn, &sql, &params).await?;
        if let Some(row) = groups.rows.first()
            && let (Value::Int(a), Value::Int(b)) = (&row[0], &row[1])
        {
            return Err(merged(
                &key_of(&chunk[*a as usize]),
                &key_of(&chunk[*b as usize]),
                "two source rows would land on one target row",
            ));
        }
    }
    let incoming: std::collections::HashSet<Vec<Option<String>>> =
        chunk.iter().map(|row| spelled(&key_of(row))).collect();
    for target_key in &existing.rows {
        if incoming.contains(&spelled(target_key)) {
            continue;
        }
        // Which source key matched it: the one equal ignoring case and
        // trailing spaces (the usual collation merge), else the first.
        let loose = |values: &[Value]| -> Vec<String> {
            values
                .iter()
                .map(|v| v.to_string().to_lowercase().trim_end().to_string())
                .collect()
        };
        let source_key = chunk
            .iter()
            .map(|row| key_of(row))
            .find(|k| loose(k) == loose(target_key))
            .unwrap_or_else(|| key_of(&chunk[0]));
        return Err(merged(
            &source_key,
            target_key,
            "a source row would overwrite a target row with a differently spelled key",
        ));
    }
    Ok(())
}

/// Instants held as RFC 3339 text (SQLite's storage form,
/// `2026-01-02T09:00:00.000000Z`) going into a MySQL `DATETIME` or
/// `TIMESTAMP` column become instants: MySQL refuses the offset suffix.
/// `None` when no value needs it (the usual case: no copy is made).
fn coerce_rows(spec: &UpsertSpec<'_>, rows: &[Vec<Value>]) -> Option<Vec<Vec<Value>>> {
    let temporal: Vec<usize> = spec
        .column_types
        .iter()
        .enumerate()
        .filter(|(_, t)| {
            let t = t.to_ascii_lowercase();
            t.starts_with("datetime") || t.starts_with("timestamp")
        })
        .map(|(i, _)| i)
        .collect();
    let instant = |value: &Value| match value {
        Value::Text(t) => chrono::DateTime::parse_from_rfc3339(t.trim())
            .ok()
            .map(|ts| Value::TimestampTz(ts.with_timezone(&chrono::Utc)))
            .or_else(|| {
                ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
                    .iter()
                    .find_map(|format| chrono::NaiveDateTime::parse_from_str(t.trim(), format).ok())
                    .map(Value::Timestamp)
            }),
        _ => None,
    };
    let needed = rows
        .iter()
        .any(|row| temporal.iter().any(|i| instant(&row[*i]).is_some()));
    if !needed {
        return None;
    }
    Some(
        rows.iter()
            .map(|row| {
                let mut row = row.clone();
                for i in &temporal {
                    if let Some(converted) = instant(&row[*i]) {
                        row[*i] = converted;
                    }
                }
                row
            })
            .collect(),
    )
}

/// Checks every value of `rows` against its column's declared MySQL type;
/// the first value that cannot be stored exactly is an error naming the
/// column, the value and both types.
fn check_rows(spec: &UpsertSpec<'_>, rows: &[Vec<Value>]) -> Result<()> {
    let types: Vec<ColumnType<'_>> = (0..spec.columns.len())
        .map(|position| {
            ColumnType::parse(
                spec.column_types
                    .get(position)
                    .map(String::as_str)
                    .unwrap_or(""),
            )
        })
        .collect();
    for row in rows {
        for (position, value) in row.iter().enumerate() {
            let Some(column_type) = types.get(position) else {
                continue;
            };
            if let Err(message) = column_type.check(value) {
                return Err(ConnectorError::Type {
                    column: spec.columns[position].clone(),
                    message,
                });
            }
        }
    }
    Ok(())
}

/// Why `value` cannot be stored exactly in a MySQL column of type
/// `column_type` (`COLUMN_TYPE` spelling, e.g. `decimal(12,2)`,
/// `datetime(6)`, `timestamp`, `int(11) unsigned`); `Ok` if it can, or if the
/// server itself refuses it with a clear error in strict mode (an over-long
/// text, an out-of-range integer, text that is not a number).
///
/// The message names the value, its hubsync type and the column type.
pub fn check_value(column_type: &str, value: &Value) -> std::result::Result<(), String> {
    ColumnType::parse(column_type).check(value)
}

/// A MySQL column type as [`check_value`] reads it, parsed once per column
/// (not once per value) by [`check_rows`].
struct ColumnType<'a> {
    /// As the catalog spells it (for messages).
    column_type: &'a str,
    /// The base type in lower case: `decimal`, `datetime`, `int`...
    base: String,
    /// The numbers between the first parentheses (`decimal(12,2)`: 12, 2).
    modifiers: Vec<u32>,
}

impl<'a> ColumnType<'a> {
    fn parse(column_type: &'a str) -> ColumnType<'a> {
        let lower = column_type.to_ascii_lowercase();
        let base = lower
            .split(['(', ' '])
            .next()
            .unwrap_or_default()
            .to_string();
        ColumnType {
            column_type,
            base,
            modifiers: crate::dialect::types::type_modifiers(&lower),
        }
    }

    /// See [`check_value`].
    fn check(&self, value: &Value) -> std::result::Result<(), String> {
        let (column_type, base) = (self.column_type, &self.base);
        let refuse = |why: &str| {
            Err(format!(
                "value `{value}` ({}) cannot be stored in MySQL `{column_type}`: {why}",
                value.kind()
            ))
        };
        let is_temporal = matches!(base.as_str(), "date" | "datetime" | "timestamp");
        match value {
            Value::Float(f) if !f.is_finite() => {
                refuse("MySQL has no NaN or infinity; map it to NULL at the source")
            }
            Value::Float(f) if base == "float" && f64::from(*f as f32) != *f => refuse(
                "MySQL FLOAT keeps a 4-byte float and would round this double; declare the column DOUBLE",
            ),
            Value::Numeric(n) if matches!(n.as_str(), "NaN" | "Infinity" | "-Infinity") => {
                refuse("MySQL has no NaN or infinity; map it to NULL at the source")
            }
            // A decimal into a binary float column: refused unless the float
            // reads back as the same decimal (trial 4: 1234567.89 into FLOAT
            // was stored as 1234570, and the next run saw no change).
            Value::Numeric(n)
                if matches!(base.as_str(), "float" | "double" | "real")
                    && !float_keeps(n, base == "float") =>
            {
                refuse(&format!(
                    "MySQL {} keeps a {}-byte binary float and would round this decimal; declare the column \
                     DECIMAL with the source's precision and scale",
                    base.to_ascii_uppercase(),
                    if base == "float" { 4 } else { 8 }
                ))
            }
            Value::Numeric(n) | Value::Text(n) if base == "decimal" || base == "numeric" => {
                let modifiers = &self.modifiers;
                let precision = modifiers.first().copied().unwrap_or(10);
                let scale = modifiers.get(1).copied().unwrap_or(0);
                match decimal_digits(n) {
                    Some((int_digits, frac_digits)) => {
                        if frac_digits > scale {
                            refuse(&format!(
                                "{} and the column keeps {scale}; MySQL would round it",
                                crate::value::fraction_digits_text(n, frac_digits)
                            ))
                        } else if int_digits + scale > precision {
                            refuse(&format!(
                                "it has {int_digits} digits before the point and the column holds {}",
                                precision - scale
                            ))
                        } else {
                            Ok(())
                        }
                    }
                    None if matches!(value, Value::Numeric(_)) => {
                        refuse("not a plain decimal number")
                    }
                    None => Ok(()),
                }
            }
            Value::Numeric(n) | Value::Text(n)
                if matches!(
                    base.as_str(),
                    "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint"
                ) =>
            {
                match decimal_digits(n) {
                    Some(_)
                        if n.split_once('.')
                            .is_some_and(|(_, f)| !f.trim_end_matches('0').is_empty()) =>
                    {
                        refuse(
                            "it has a fraction and the column holds integers; MySQL would round it",
                        )
                    }
                    _ => Ok(()),
                }
            }
            Value::Text(t) if is_temporal && t.ends_with("infinity") => {
                refuse("MySQL dates have no infinity; map it to NULL or a far date at the source")
            }
            Value::Date(d) if is_temporal && !(1..=9999).contains(&d.year()) => {
                refuse("MySQL dates run from year 1 to 9999 (BC dates have no MySQL form)")
            }
            Value::Timestamp(_) | Value::TimestampTz(_) if base == "date" => {
                let time = match value {
                    Value::Timestamp(ts) => ts.time(),
                    Value::TimestampTz(ts) => ts.time(),
                    _ => unreachable!(),
                };
                if time == NaiveTime::MIN {
                    Ok(())
                } else {
                    refuse("a DATE column would drop its time of day; declare it DATETIME(6)")
                }
            }
            Value::Timestamp(_) | Value::TimestampTz(_) | Value::Time(_) => {
                let (naive_year, micros) = match value {
                    Value::Timestamp(ts) => (Some(ts.year()), ts.nanosecond() / 1000),
                    Value::TimestampTz(ts) => (Some(ts.year()), ts.nanosecond() / 1000),
                    Value::Time(t) => (None, t.nanosecond() / 1000),
                    _ => unreachable!(),
                };
                if is_temporal
                    && let Some(year) = naive_year
                    && !(1..=9999).contains(&year)
                {
                    return refuse(
                        "MySQL dates run from year 1 to 9999 (BC dates have no MySQL form)",
                    );
                }
                if base == "timestamp"
                    && let Value::Timestamp(ts) = value
                    && !timestamp_range(ts)
                {
                    return refuse(
                        "MySQL TIMESTAMP holds 1970-01-01 00:00:01 to 2038-01-19 03:14:07 UTC; use DATETIME",
                    );
                }
                if base == "timestamp"
                    && let Value::TimestampTz(ts) = value
                    && !timestamp_range(&ts.naive_utc())
                {
                    return refuse(
                        "MySQL TIMESTAMP holds 1970-01-01 00:00:01 to 2038-01-19 03:14:07 UTC; use DATETIME",
                    );
                }
                if matches!(base.as_str(), "datetime" | "timestamp" | "time") {
                    let fsp = self.modifiers.first().copied().unwrap_or(0);
                    let kept = 10u32.pow(6 - fsp.min(6));
                    if micros % kept != 0 {
                        return refuse(&format!(
                            "it has fractional seconds beyond the column's {fsp} digits; MySQL would round or cut them \
                         (declare it `{base}(6)`)"
                        ));
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// True if the decimal text `n` reads back as the same number from a
/// 4-byte (`single`) or 8-byte binary float: the float's shortest decimal
/// form (Rust's `Display`, which round-trips) equals `n` once both are
/// normalized (sign, leading and trailing zeros). Text that is no number
/// is left to the server (strict mode refuses it).
fn float_keeps(n: &str, single: bool) -> bool {
    let normalize = |text: &str| -> String {
        let text = text.trim().trim_start_matches('+');
        let (sign, digits) = match text.strip_prefix('-') {
            Some(rest) => ("-", rest),
            None => ("", text),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let int = int.trim_start_matches('0');
        let frac = frac.trim_end_matches('0');
        let body = match (int.is_empty(), frac.is_empty()) {
            (true, true) => return "0".to_string(),
            (_, true) => int.to_string(),
            (true, false) => format!("0.{frac}"),
            (false, false) => format!("{int}.{frac}"),
        };
        format!("{sign}{body}")
    };
    let back = if single {
        n.trim().parse::<f32>().map(|f| f.to_string())
    } else {
        n.trim().parse::<f64>().map(|f| f.to_string())
    };
    match back {
        Ok(back) => normalize(&back) == normalize(n),
        Err(_) => true,
    }
}

/// True if a UTC date-time fits MySQL's `TIMESTAMP` range.
fn timestamp_range(ts: &NaiveDateTime) -> bool {
    let low = NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 1))
        .expect("valid");
    let high = NaiveDate::from_ymd_opt(2038, 1, 19)
        .and_then(|d| d.and_hms_micro_opt(3, 14, 7, 999_999))
        .expect("valid");
    *ts >= low && *ts <= high
}

/// Decodes one row into values, per column type (see the module docs).
fn decode_row(row: &MySqlRow) -> Result<Vec<Value>> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let type_error = |message: String| ConnectorError::Type {
            column: column.name().to_string(),
            message,
        };
        let raw = row.try_get_raw(i).map_err(db_error)?;
        let name = type_name(column.type_info());
        if raw.is_null() {
            // sqlx reports a zero date (a binary value of length 0) as NULL;
            // it is not NULL, and the flow must decide what it becomes.
            if matches!(name, "DATE" | "DATETIME" | "TIMESTAMP")
                && let Ok(bytes) = row.try_get_unchecked::<&[u8], _>(i)
                && bytes.first() == Some(&0)
            {
                values.push(decode_temporal(name, bytes).map_err(type_error)?);
                continue;
            }
            values.push(Value::Null);
            continue;
        }
        let decode_failed = |e: sqlx::Error| type_error(format!("cannot decode MySQL {name}: {e}"));
        let value = match name {
            "TINYINT(1)" | "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => {
                Value::Int(row.try_get_unchecked::<i64, _>(i).map_err(decode_failed)?)
            }
            "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED" => {
                Value::Int(row.try_get_unchecked::<u64, _>(i).map_err(decode_failed)? as i64)
            }
            // Beyond i64: always an exact decimal, so one column has one type.
            "BIGINT UNSIGNED" => Value::Numeric(
                row.try_get_unchecked::<u64, _>(i)
                    .map_err(decode_failed)?
                    .to_string(),
            ),
            "FLOAT" => Value::Float(
                row.try_get_unchecked::<f32, _>(i)
                    .map_err(decode_failed)?
                    .into(),
            ),
            "DOUBLE" => Value::Float(row.try_get_unchecked::<f64, _>(i).map_err(decode_failed)?),
            "DECIMAL" => Value::Numeric(
                row.try_get_unchecked::<String, _>(i)
                    .map_err(decode_failed)?,
            ),
            "DATE" | "DATETIME" | "TIMESTAMP" | "TIME" => {
                let bytes = row
                    .try_get_unchecked::<&[u8], _>(i)
                    .map_err(decode_failed)?;
                decode_temporal(name, bytes).map_err(type_error)?
            }
            "BIT" => {
                let bytes = row
                    .try_get_unchecked::<&[u8], _>(i)
                    .map_err(decode_failed)?;
                if bytes.len() > 8 {
                    return Err(type_error("BIT wider than 64 bits".into()));
                }
                let bits = bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
                match i64::try_from(bits) {
                    Ok(v) => Value::Int(v),
                    Err(_) => Value::Numeric(bits.to_string()),
                }
            }
            "JSON" => Value::Json(
                row.try_get_unchecked::<String, _>(i)
                    .map_err(decode_failed)?,
            ),
            "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM"
            | "SET" => Value::Text(
                row.try_get_unchecked::<String, _>(i)
                    .map_err(decode_failed)?,
            ),
            "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB"
            | "GEOMETRY" => Value::Bytes(
                row.try_get_unchecked::<Vec<u8>, _>(i)
                    .map_err(decode_failed)?,
            ),
            other => {
                return Err(type_error(format!(
                    "MySQL type `{other}` is not supported; cast it in a `query` (e.g. `CAST({} AS CHAR)`)",
                    column.name()
                )));
            }
        };
        values.push(value);
    }
    Ok(values)
}

/// Decodes a MySQL `DATE`, `DATETIME`, `TIMESTAMP` or `TIME` value, in the
/// binary protocol's form (a length byte, then `year u16, month, day, hour,
/// minute, second, micros u32` little-endian as far as the length goes; for
/// `TIME`: `negative, days u32, hour, minute, second, micros u32`) or as
/// text. `TIMESTAMP` is a UTC instant (the session time zone is UTC).
///
/// Values with no calendar form are returned as MySQL's own text: zero
/// dates (`0000-00-00`, `2026-00-15`) and durations outside a day
/// (`-01:00:00`, `838:59:59`).
pub(crate) fn decode_temporal(type_name: &str, bytes: &[u8]) -> std::result::Result<Value, String> {
    let binary = bytes.first().is_some_and(|b| *b < 0x20);
    if !binary {
        let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
        return parse_temporal_text(type_name, text);
    }
    let len = bytes[0] as usize;
    let body = bytes
        .get(1..1 + len)
        .ok_or_else(|| format!("truncated MySQL {type_name} value"))?;
    if type_name == "TIME" {
        let (negative, days, h, m, s, micros) = match len {
            0 => (false, 0, 0, 0, 0, 0),
            8 | 12 => (
                body[0] == 1,
                u32::from_le_bytes([body[1], body[2], body[3], body[4]]),
                u32::from(body[5]),
                u32::from(body[6]),
                u32::from(body[7]),
                if len == 12 {
                    u32::from_le_bytes([body[8], body[9], body[10], body[11]])
                } else {
                    0
                },
            ),
            other => return Err(format!("unexpected MySQL TIME length {other}")),
        };
        if !negative && days == 0 {
            return NaiveTime::from_hms_micro_opt(h, m, s, micros)
                .map(Value::Time)
                .ok_or_else(|| format!("invalid MySQL TIME {h}:{m}:{s}.{micros}"));
        }
        let hours = days * 24 + h;
        let sign = if negative { "-" } else { "" };
        let fraction = if micros > 0 {
            format!(".{micros:06}")
        } else {
            String::new()
        };
        return Ok(Value::Text(format!(
            "{sign}{hours:02}:{m:02}:{s:02}{fraction}"
        )));
    }
    let (year, month, day) = match len {
        0 => (0, 0, 0),
        4 | 7 | 11 => (
            i32::from(u16::from_le_bytes([body[0], body[1]])),
            u32::from(body[2]),
            u32::from(body[3]),
        ),
        other => return Err(format!("unexpected MySQL {type_name} length {other}")),
    };
    let (h, m, s) = if len >= 7 {
        (u32::from(body[4]), u32::from(body[5]), u32::from(body[6]))
    } else {
        (0, 0, 0)
    };
    let micros = if len == 11 {
        u32::from_le_bytes([body[7], body[8], body[9], body[10]])
    } else {
        0
    };
    let Some(date) = NaiveDate::from_ymd_opt(year, month, day) else {
        // A zero date, or a date with a zero month or day (allowed unless
        // the server's sql_mode has NO_ZERO_IN_DATE): MySQL's own spelling.
        let date_text = format!("{year:04}-{month:02}-{day:02}");
        return Ok(Value::Text(if type_name == "DATE" {
            date_text
        } else {
            format!("{date_text} {h:02}:{m:02}:{s:02}")
        }));
    };
    if type_name == "DATE" {
        return Ok(Value::Date(date));
    }
    let naive = date
        .and_hms_micro_opt(h, m, s, micros)
        .ok_or_else(|| format!("invalid MySQL {type_name} time {h}:{m}:{s}.{micros}"))?;
    Ok(if type_name == "TIMESTAMP" {
        Value::TimestampTz(naive.and_utc())
    } else {
        Value::Timestamp(naive)
    })
}

/// The text-protocol form of [`decode_temporal`].
fn parse_temporal_text(type_name: &str, text: &str) -> std::result::Result<Value, String> {
    let parsed = match type_name {
        "DATE" => NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .map(Value::Date),
        "TIME" => NaiveTime::parse_from_str(text, "%H:%M:%S%.f")
            .ok()
            .filter(|_| !text.starts_with('-') && text.len() >= 8 && &text[2..3] == ":")
            .map(Value::Time),
        _ => NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
            .ok()
            .map(|naive| {
                if type_name == "TIMESTAMP" {
                    Value::TimestampTz(naive.and_utc())
                } else {
                    Value::Timestamp(naive)
                }
            }),
    };
    Ok(parsed.unwrap_or_else(|| Value::Text(text.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_versions_compare_by_number() {
        assert!(mariadb_at_least("10.11.14-MariaDB-0+deb12u2", 10, 7));
        assert!(mariadb_at_least("11.4.2-MariaDB", 10, 7));
        assert!(!mariadb_at_least("10.6.18-MariaDB-log", 10, 7));
    }

    #[test]
    fn binary_dates_and_times_decode() {
        // 2026-03-29 01:30:00.000250 as DATETIME: len 11.
        let mut dt = vec![11u8];
        dt.extend_from_slice(&2026u16.to_le_bytes());
        dt.extend_from_slice(&[3, 29, 1, 30, 0]);
        dt.extend_from_slice(&250u32.to_le_bytes());
        assert_eq!(
            decode_temporal("DATETIME", &dt).unwrap().to_string(),
            "2026-03-29 01:30:00.000250"
        );
        assert_eq!(
            decode_temporal("TIMESTAMP", &dt).unwrap().to_string(),
            "2026-03-29T01:30:00.000250Z"
        );
        // Zero dates come back as MySQL spells them.
        assert_eq!(
            decode_temporal("DATE", &[0]).unwrap(),
            Value::Text("0000-00-00".into())
        );
        assert_eq!(
            decode_temporal("DATETIME", &[0]).unwrap(),
            Value::Text("0000-00-00 00:00:00".into())
        );
        // TIME -1 day 01:00:00 (i.e. -25:00:00): negative, days 1, 01:00:00.
        let time = [8u8, 1, 1, 0, 0, 0, 1, 0, 0];
        assert_eq!(
            decode_temporal("TIME", &time).unwrap(),
            Value::Text("-25:00:00".into())
        );
        assert_eq!(
            decode_temporal("TIME", b"12:34:56.5").unwrap().to_string(),
            "12:34:56.500000"
        );
    }

    #[test]
    fn decimals_a_binary_float_would_round_are_refused() {
        // 1234567.89 as a 4-byte float is 1234567.875, shown 1234567.9.
        let refused = check_value("float", &Value::Numeric("1234567.89".into())).unwrap_err();
        assert_eq!(
            refused,
            "value `1234567.89` (numeric) cannot be stored in MySQL `float`: MySQL FLOAT keeps a 4-byte binary \
             float and would round this decimal; declare the column DECIMAL with the source's precision and scale"
        );
        // 8 bytes keep it; 20 significant digits they do not.
        assert_eq!(
            check_value("double", &Value::Numeric("1234567.89".into())),
            Ok(())
        );
        assert!(check_value("double", &Value::Numeric("0.12345678901234567890".into())).is_err());
        // Values a float reads back exactly, however spelled.
        for n in ["1.50", "-2.25", "0", "0.000", "+3", "007.5", "0.1"] {
            assert_eq!(
                check_value("float", &Value::Numeric(n.into())),
                Ok(()),
                "{n}"
            );
        }
    }

    #[test]
    fn values_mysql_would_bend_are_refused() {
        let refused = |ty: &str, v: Value| check_value(ty, &v).unwrap_err();
        assert_eq!(
            refused("decimal(12,2)", Value::Numeric("12.345".into())),
            "value `12.345` (numeric) cannot be stored in MySQL `decimal(12,2)`: it has 3 digits after the point \
             and the column keeps 2; MySQL would round it"
        );
        assert!(check_value("decimal(12,2)", &Value::Numeric("-0.10".into())).is_ok());
        // Regression (fresh-user trial): "it has 9 digits after the point"
        // beside `0.4566666660`, which shows 10; trailing zeros need no room.
        assert_eq!(
            refused("decimal(12,4)", Value::Numeric("0.4566666660".into())),
            "value `0.4566666660` (numeric) cannot be stored in MySQL `decimal(12,4)`: it has 10 digits after the \
             point (9 without its trailing zeros) and the column keeps 4; MySQL would round it"
        );
        assert!(check_value("decimal(12,9)", &Value::Numeric("0.4566666660".into())).is_ok());
        assert!(check_value("decimal(12,2)", &Value::Numeric("12.500000".into())).is_ok());
        assert_eq!(
            refused("decimal(38,0)", Value::Numeric("1".repeat(39))),
            format!(
                "value `{}` (numeric) cannot be stored in MySQL `decimal(38,0)`: it has 39 digits before the point \
                 and the column holds 38",
                "1".repeat(39)
            )
        );
        assert!(refused("double", Value::Float(f64::NAN)).contains("MySQL has no NaN"));
        assert!(refused("decimal(10,0)", Value::Numeric("NaN".into())).contains("no NaN"));
        let bc = NaiveDate::from_ymd_opt(0, 1, 1).unwrap();
        assert!(refused("date", Value::Date(bc)).contains("BC dates"));
        assert!(refused("datetime(6)", Value::Text("infinity".into())).contains("no infinity"));
        let half_second = NaiveDate::from_ymd_opt(2026, 1, 1)
            .unwrap()
            .and_hms_micro_opt(0, 0, 0, 500_000)
            .unwrap();
        assert!(refused("datetime", Value::Timestamp(half_second)).contains("fractional seconds"));
        assert!(check_value("datetime(6)", &Value::Timestamp(half_second)).is_ok());
        assert!(check_value("datetime(1)", &Value::Timestamp(half_second)).is_ok());
        let late = NaiveDate::from_ymd_opt(2040, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        assert!(refused("timestamp", Value::TimestampTz(late.and_utc())).contains("2038"));
        assert!(refused("int(11)", Value::Numeric("1.5".into())).contains("fraction"));
        assert!(check_value("bigint(20)", &Value::Numeric("15.000".into())).is_ok());
    }
}
