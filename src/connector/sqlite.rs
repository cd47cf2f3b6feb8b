//! SQLite I/O.
//!
//! Storage rule (SQLite has no exact decimal, boolean, date or JSON type):
//! exact decimals, dates, times, JSON and UUIDs are stored as TEXT;
//! instants as RFC 3339 text in UTC with six fractional digits and `Z`
//! (text order is time order); local date-times as `YYYY-MM-DD
//! HH:MM:SS.ffffff`; booleans as 0/1; bytes as BLOB. Reads return each
//! value by its storage class (INTEGER, REAL, TEXT, BLOB), except that a
//! column declared `BOOLEAN` reads as a boolean.
//!
//! A column declared a date or date-time type ([`is_date_time_type`]) may
//! hold any form SQLite's date functions read: text with or without `T`,
//! fraction or offset, a number (a Julian day below 5373484.5, else unix
//! seconds, as SQLite's `'auto'` reads it). Such a
//! cursor is ordered by instant (`Dialect::keyset_select`) and each of its
//! values read as one ([`read_instant`]).
//!
//! Site files are opened without changing their journal mode, and every read
//! is one short autocommit statement, so a site's own writers are not held
//! up.

use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow};
use sqlx::{
    AssertSqlSafe, Column, ConnectOptions as _, Executor, Row, SqliteConnection, SqlitePool,
    TypeInfo, ValueRef,
};

use super::{
    BatchSink, ColumnInfo, ConnectOptions, ConnectorError, Result, TableInfo, connect_failure,
    db_error,
};
use crate::dialect::{Dialect, UpsertSpec};
use crate::value::{Batch, TIMESTAMP_TEXT_FORMAT, TIMESTAMPTZ_TEXT_FORMAT, Value};

/// A pool of SQLite connections to one file.
pub struct SqliteConnector {
    pool: SqlitePool,
}

impl SqliteConnector {
    /// Opens `path`. With `create_if_missing` the file is created (and put in
    /// WAL mode, for a master); otherwise a missing file is a connect error.
    pub async fn connect(path: &Path, options: &ConnectOptions) -> Result<SqliteConnector> {
        if !options.create_if_missing && !path.exists() {
            // Retried like a refused connection: a site's file on a share
            // is missing while the share is remounted.
            return Err(ConnectorError::Connect {
                url: format!("sqlite://{}", path.display()),
                message: "the database file does not exist".into(),
            });
        }
        let mut connect_options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(options.create_if_missing)
            .busy_timeout(std::time::Duration::from_secs(30))
            .disable_statement_logging();
        if options.create_if_missing {
            connect_options = connect_options.journal_mode(SqliteJournalMode::Wal);
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .min_connections(0)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect_options)
            .await
            .map_err(|e| {
                connect_failure(format!("sqlite://{}", path.display()), &e, e.to_string())
            })?;
        Ok(SqliteConnector { pool })
    }

    pub(super) async fn query(&self, sql: &str, params: &[Value]) -> Result<Batch> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        query_on(&mut conn, sql, params).await
    }

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
        conn.execute(AssertSqlSafe(sql.to_string()))
            .await
            .map_err(db_error)?;
        Ok(())
    }

    pub(super) async fn describe_table(&self, table: &str) -> Result<Option<TableInfo>> {
        let (schema, name) = match table.split_once('.') {
            Some((schema, name)) => (schema.to_string(), name.to_string()),
            None => ("main".to_string(), table.to_string()),
        };
        let params = [Value::Text(name), Value::Text(schema)];
        let columns = self
            .query(
                "SELECT name, type, pk, \"notnull\" AND dflt_value IS NULL \
                 AND NOT (pk > 0 AND upper(type) = 'INTEGER') FROM pragma_table_info(?1, ?2) ORDER BY cid",
                &params,
            )
            .await?;
        if columns.is_empty() {
            return Ok(None);
        }
        let mut primary_key: Vec<(i64, String)> = columns
            .rows
            .iter()
            .filter_map(|row| match (&row[2], &row[0]) {
                (Value::Int(pk), Value::Text(name)) if *pk > 0 => Some((*pk, name.clone())),
                _ => None,
            })
            .collect();
        primary_key.sort();
        let mut unique_keys = Vec::new();
        if !primary_key.is_empty() {
            unique_keys.push(primary_key.into_iter().map(|(_, name)| name).collect());
        }
        let indexes = self
            .query(
                "SELECT il.name, ii.name FROM pragma_index_list(?1, ?2) AS il \
                 JOIN pragma_index_info(il.name, ?2) AS ii \
                 WHERE il.\"unique\" = 1 AND il.partial = 0 ORDER BY il.name, ii.seqno",
                &params,
            )
            .await?;
        let mut current: Option<(String, Vec<String>)> = None;
        for row in indexes.rows {
            let (Value::Text(index), Value::Text(column)) = (&row[0], &row[1]) else {
                continue;
            };
            match &mut current {
                Some((name, cols)) if name == index => cols.push(column.clone()),
                _ => {
                    if let Some((_, cols)) = current.take() {
                        unique_keys.push(cols);
                    }
                    current = Some((index.clone(), vec![column.clone()]));
                }
            }
        }
        if let Some((_, cols)) = current {
            unique_keys.push(cols);
        }
        Ok(Some(TableInfo {
            columns: columns
                .rows
                .into_iter()
                .map(|row| {
                    let declared = match &row[1] {
                        Value::Text(t) => t.clone(),
                        _ => String::new(),
                    };
                    ColumnInfo {
                        name: row[0].to_string(),
                        data_type: declared.clone(),
                        cast_type: declared,
                        required: row[3] == Value::Int(1),
                    }
                })
                .collect(),
            case_insensitive_names: false,
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
            .map(|c| (c.name().to_string(), c.type_info().name().to_string()))
            .collect())
    }

    /// The declared type of column `column` of query `sql` (`DATETIME`,
    /// `timestamp(6)`, as written in `CREATE TABLE`), found through the
    /// table the column comes from; `None` for an expression or a column
    /// the query does not return.
    pub(super) async fn declared_type(&self, sql: &str, column: &str) -> Result<Option<String>> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        let statement = conn
            .prepare(sqlx::SqlSafeStr::into_sql_str(AssertSqlSafe(
                sql.to_string(),
            )))
            .await
            .map_err(db_error)?;
        let origin = sqlx::Statement::columns(&statement)
            .iter()
            .find(|c| c.name() == column)
            .map(Column::origin);
        let Some(sqlx::ColumnOrigin::Table(origin)) = origin else {
            return Ok(None);
        };
        // sqlx names a table of an attached database `schema.table`.
        let (schema, table) = match origin.table.split_once('.') {
            Some((schema, table)) => (schema.to_string(), table.to_string()),
            None => ("main".to_string(), origin.table.to_string()),
        };
        let found = query_on(
            &mut conn,
            "SELECT type FROM pragma_table_info(?1, ?2) WHERE name = ?3",
            &[
                Value::Text(table),
                Value::Text(schema),
                Value::Text(origin.name.to_string()),
            ],
        )
        .await?;
        Ok(match found.rows.first().and_then(|row| row.first()) {
            Some(Value::Text(declared)) => Some(declared.clone()),
            _ => None,
        })
    }

    pub(super) async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.pool.begin().await.map_err(db_error)
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

/// Binds one value by the storage rule in the module docs.
fn bind_value<'q>(query: SqliteQuery<'q>, value: &Value) -> SqliteQuery<'q> {
    match value {
        Value::Null => query.bind(None::<i64>),
        Value::Bool(b) => query.bind(i64::from(*b)),
        Value::Int(i) => query.bind(*i),
        Value::Float(f) => query.bind(*f),
        Value::Numeric(s) | Value::Text(s) | Value::Json(s) => query.bind(s.clone()),
        Value::Bytes(b) => query.bind(b.clone()),
        Value::Date(d) => query.bind(d.format("%Y-%m-%d").to_string()),
        Value::Time(t) => query.bind(t.format("%H:%M:%S%.6f").to_string()),
        Value::Timestamp(ts) => query.bind(ts.format(TIMESTAMP_TEXT_FORMAT).to_string()),
        Value::TimestampTz(ts) => query.bind(ts.format(TIMESTAMPTZ_TEXT_FORMAT).to_string()),
        Value::Uuid(u) => query.bind(u.hyphenated().to_string()),
    }
}

fn bind_all<'q>(sql: String, params: &[Value]) -> SqliteQuery<'q> {
    params
        .iter()
        .fold(sqlx::query(AssertSqlSafe(sql)), bind_value)
}

pub(super) async fn execute_on(
    conn: &mut SqliteConnection,
    sql: &str,
    params: &[Value],
) -> Result<u64> {
    let result = bind_all(sql.to_string(), params)
        .execute(conn)
        .await
        .map_err(db_error)?;
    Ok(result.rows_affected())
}

pub(super) async fn query_on(
    conn: &mut SqliteConnection,
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

/// Rows per SQLite upsert statement: large enough to amortise sqlx's
/// per-statement hand-off to its SQLite worker thread, small enough that
/// parsing stays cheap; full chunks reuse one cached prepared statement.
const SQLITE_ROWS_PER_STATEMENT: usize = 500;

/// Refuses the batch if any float is NaN: SQLite stores a bound NaN as NULL,
/// which would silently lose the value (and fail a NOT NULL column with a
/// misleading message). ±Infinity are stored as REAL and read back as is.
fn refuse_nan(columns: &[String], rows: &[Vec<Value>]) -> Result<()> {
    for row in rows {
        for (position, value) in row.iter().enumerate() {
            if let Value::Float(f) = value
                && f.is_nan()
            {
                return Err(ConnectorError::Type {
                    column: columns
                        .get(position)
                        .cloned()
                        .unwrap_or_else(|| format!("#{position}")),
                    message: "NaN cannot be stored in SQLite (it would become NULL); map it to NULL or a text column at the source".into(),
                });
            }
        }
    }
    Ok(())
}

/// A column's type affinity from its declared type, by SQLite's rules
/// (<https://sqlite.org/datatype3.html>, section 3.1, in that order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Affinity {
    Integer,
    Text,
    Blob,
    Real,
    Numeric,
}

fn affinity(declared: &str) -> Affinity {
    let upper = declared.to_ascii_uppercase();
    if upper.contains("INT") {
        Affinity::Integer
    } else if upper.contains("CHAR") || upper.contains("CLOB") || upper.contains("TEXT") {
        Affinity::Text
    } else if upper.contains("BLOB") || upper.trim().is_empty() {
        Affinity::Blob
    } else if upper.contains("REAL") || upper.contains("FLOA") || upper.contains("DOUB") {
        Affinity::Real
    } else {
        Affinity::Numeric
    }
}

/// Why SQLite would not keep `value` exactly in a column declared
/// `declared` (`None` if it would): a decimal with more digits than a
/// float holds, into a column whose affinity makes it a float; a 64-bit
/// integer beyond 2^53 into a REAL column; a float into a TEXT column
/// (SQLite writes it with 15 significant digits).
fn rounding(declared: &str, value: &Value) -> Option<String> {
    let affinity = affinity(declared);
    match (value, affinity) {
        (Value::Numeric(text), Affinity::Integer | Affinity::Real | Affinity::Numeric) => {
            if affinity != Affinity::Real && text.parse::<i64>().is_ok() {
                return None;
            }
            let float: f64 = text.parse().ok()?;
            let exact = crate::value::compare_decimal_text(&format!("{float:?}"), text)
                == Some(std::cmp::Ordering::Equal)
                || (float.is_finite() && format!("{float:?}").contains('e'))
                    && crate::value::compare_decimal_text(&format!("{float}"), text)
                        == Some(std::cmp::Ordering::Equal);
            (!exact).then(|| {
                format!(
                    "SQLite would turn it into the float {float:?} ({affinity:?} affinity); declare the column TEXT \
                     to keep exact decimals"
                )
            })
        }
        (Value::Int(i), Affinity::Real) if (*i as f64) as i64 != *i || i.unsigned_abs() > 1 << 53 => Some(
            "a REAL column holds integers exactly only up to 2^53; declare it INTEGER".to_string(),
        ),
        (Value::Float(f), Affinity::Text) if format!("{f:.14e}").parse::<f64>().ok() != Some(*f) => {
            Some("SQLite writes a float into a TEXT column with 15 significant digits; declare it REAL".to_string())
        }
        _ => None,
    }
}

/// Refuses the batch if a value would not be stored exactly (see
/// [`rounding`]), naming the column, the value and the declared type.
fn refuse_rounding(spec: &UpsertSpec<'_>, rows: &[Vec<Value>]) -> Result<()> {
    for row in rows {
        for (position, value) in row.iter().enumerate() {
            let declared = spec.column_types.get(position).map_or("", String::as_str);
            if let Some(why) = rounding(declared, value) {
                return Err(ConnectorError::Type {
                    column: spec.columns[position].clone(),
                    message: format!(
                        "value `{value}` ({}) cannot be stored exactly in SQLite `{declared}`: {why}",
                        value.kind()
                    ),
                });
            }
        }
    }
    Ok(())
}

pub(super) async fn upsert_on(
    conn: &mut SqliteConnection,
    spec: &UpsertSpec<'_>,
    rows: &[Vec<Value>],
) -> Result<u64> {
    refuse_nan(spec.columns, rows)?;
    refuse_rounding(spec, rows)?;
    let per_statement = Dialect::Sqlite
        .max_rows_per_upsert(spec.columns.len())
        .min(SQLITE_ROWS_PER_STATEMENT);
    let mut written = 0;
    for chunk in rows.chunks(per_statement) {
        let sql = Dialect::Sqlite.upsert(spec, chunk.len());
        let query = chunk
            .iter()
            .flatten()
            .fold(sqlx::query(AssertSqlSafe(sql)), bind_value);
        written += query
            .execute(&mut *conn)
            .await
            .map_err(db_error)?
            .rows_affected();
    }
    Ok(written)
}

/// Deletes the rows whose key (`spec.columns`, all of them key columns) is
/// one of `rows`, at most [`SQLITE_ROWS_PER_STATEMENT`] keys per statement;
/// returns rows deleted.
pub(super) async fn delete_on(
    conn: &mut SqliteConnection,
    spec: &UpsertSpec<'_>,
    rows: &[Vec<Value>],
) -> Result<u64> {
    let mut deleted = 0;
    for chunk in rows.chunks(SQLITE_ROWS_PER_STATEMENT) {
        let sql = Dialect::Sqlite.delete_keys(spec, chunk.len());
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

/// The forms [`read_instant`] accepts, for messages.
pub const INSTANT_FORMS: &str = "`YYYY-MM-DD[ HH:MM[:SS[.SSS]]]` text (a space or `T` before the time, \
     optionally `Z` or `±HH:MM` after it), or a number (a Julian day below 5373484.5, unix seconds above)";

/// True if a column declared `declared` holds dates or date-times: the
/// declared type contains `DATE` (`DATE`, `DATETIME`) or starts with
/// `TIMESTAMP` (`TIMESTAMP`, `TIMESTAMPTZ`, `timestamp(6)`), any case. A
/// cursor of such a column is ordered and read by instant. `TIME` alone
/// (a time of day) is not one.
pub fn is_date_time_type(declared: &str) -> bool {
    let upper = declared.trim().to_ascii_uppercase();
    upper.contains("DATE") || upper.starts_with("TIMESTAMP")
}

/// Julian day number of 1970-01-01 00:00 UTC, in milliseconds (SQLite's
/// `iJD` unit).
const UNIX_EPOCH_JD_MS: i64 = 210_866_760_000_000;

/// The largest `iJD` SQLite accepts: 9999-12-31 23:59:59.999 UTC.
const MAX_JD_MS: i64 = 464_269_060_799_999;

/// The instant a value of a date/time column stands for, read as SQLite's
/// date and time functions read it (<https://sqlite.org/lang_datefunc.html>,
/// "Time Values"), so that it agrees with `julianday()`:
///
/// - text `YYYY-MM-DD`, `YYYY-MM-DD HH:MM`, `YYYY-MM-DD HH:MM:SS` or
///   `YYYY-MM-DD HH:MM:SS.SSS` (any number of fraction digits; beyond
///   nanoseconds they are cut), with `T` instead of the space if wanted,
///   and after a time optionally `Z` or `±HH:MM`: a [`Value::Timestamp`]
///   without an offset (SQLite takes it as UTC), a [`Value::TimestampTz`]
///   with one;
/// - a number (INTEGER or REAL) as SQLite's `'auto'` modifier reads it: from
///   0 to below 5,373,484.5 a Julian day number, otherwise unix seconds
///   (from -210,866,760,000 to 253,402,300,799), to the millisecond as
///   SQLite keeps it. A column of `NUMERIC` affinity (`DATETIME` is one)
///   stores a Julian-day REAL without fraction (`2461042.0`) as an INTEGER,
///   so reading every INTEGER as unix seconds would put such a row in
///   January 1970, behind any checkpoint;
///
/// each within years 0000 to 9999 (Julian days from 0, in 4713 BC). NULL
/// stays NULL. `None` for anything else: other text (`yesterday`, `now`, a
/// time without date, a number written as text), bytes, numbers out of
/// range.
pub fn read_instant(value: &Value) -> Option<Value> {
    match value {
        Value::Null => Some(Value::Null),
        Value::Text(text) => text_instant(text),
        Value::Float(number) => number_instant(*number),
        // Every integer of either range is exact as a double.
        Value::Int(number) => number_instant(*number as f64),
        _ => None,
    }
}

/// A numeric time value read with SQLite's `'auto'` modifier (SQLite
/// `date.c`, `setRawDateNumber` and the `auto` case of `parseModifier`):
/// a Julian day if `0 <= number < 5373484.5`, `iJD = (i64)(number *
/// 86400000.0 + 0.5)`; otherwise unix seconds within years 0000-9999,
/// `iJD = (i64)(number * 1000.0 + 210866760000000.0 + 0.5)`.
fn number_instant(number: f64) -> Option<Value> {
    let jd_millis = if (0.0..5_373_484.5).contains(&number) {
        (number * 86_400_000.0 + 0.5) as i64
    } else if (-(UNIX_EPOCH_JD_MS as f64) / 1000.0..=253_402_300_799.0).contains(&number) {
        (number * 1000.0 + UNIX_EPOCH_JD_MS as f64 + 0.5) as i64
    } else {
        return None;
    };
    if !(0..=MAX_JD_MS).contains(&jd_millis) {
        return None;
    }
    DateTime::<Utc>::from_timestamp_millis(jd_millis - UNIX_EPOCH_JD_MS).map(Value::TimestampTz)
}

/// The text forms of [`read_instant`].
fn text_instant(text: &str) -> Option<Value> {
    let bytes = text.as_bytes();
    let number = |from: usize, len: usize| -> Option<u32> {
        let digits = bytes.get(from..from + len)?;
        digits
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let at = |i: usize, c: u8| bytes.get(i) == Some(&c);
    if !(at(4, b'-') && at(7, b'-')) {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(number(0, 4)? as i32, number(5, 2)?, number(8, 2)?)?;
    if bytes.len() == 10 {
        return Some(Value::Timestamp(date.and_hms_opt(0, 0, 0)?));
    }
    if !(at(10, b' ') || at(10, b'T')) || !at(13, b':') {
        return None;
    }
    let (hour, minute) = (number(11, 2)?, number(14, 2)?);
    let mut rest = 16;
    let mut second = 0;
    let mut nanos = 0;
    if at(rest, b':') {
        second = number(rest + 1, 2)?;
        rest += 3;
        if at(rest, b'.') {
            let digits = bytes[rest + 1..]
                .iter()
                .take_while(|d| d.is_ascii_digit())
                .count();
            if digits == 0 {
                return None;
            }
            let kept = digits.min(9);
            nanos = number(rest + 1, kept)? * 10u32.pow(9 - kept as u32);
            rest += 1 + digits;
        }
    }
    let local = date.and_hms_nano_opt(hour, minute, second, nanos)?;
    let offset_minutes: i64 = match &bytes[rest..] {
        [] => return Some(Value::Timestamp(local)),
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (hours, minutes) = (number(rest + 1, 2)?, number(rest + 4, 2)?);
            if hours > 14 || minutes > 59 {
                return None;
            }
            let minutes = i64::from(hours * 60 + minutes);
            if *sign == b'-' { -minutes } else { minutes }
        }
        _ => return None,
    };
    let utc = local - chrono::Duration::minutes(offset_minutes);
    Some(Value::TimestampTz(DateTime::from_naive_utc_and_offset(
        utc, Utc,
    )))
}

fn decode_row(row: &SqliteRow) -> Result<Vec<Value>> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i).map_err(db_error)?;
        if raw.is_null() {
            values.push(Value::Null);
            continue;
        }
        let storage = raw.type_info().name().to_string();
        let declared_boolean = column.type_info().name() == "BOOLEAN";
        let decode_failed = |e: sqlx::Error| ConnectorError::Type {
            column: column.name().to_string(),
            message: format!("cannot decode {storage}: {e}"),
        };
        let value = match storage.as_str() {
            "INTEGER" | "BOOLEAN" => {
                let i = row.try_get_unchecked::<i64, _>(i).map_err(decode_failed)?;
                if declared_boolean && (i == 0 || i == 1) {
                    Value::Bool(i == 1)
                } else {
                    Value::Int(i)
                }
            }
            "REAL" => Value::Float(row.try_get_unchecked::<f64, _>(i).map_err(decode_failed)?),
            "BLOB" => Value::Bytes(
                row.try_get_unchecked::<Vec<u8>, _>(i)
                    .map_err(decode_failed)?,
            ),
            _ => Value::Text(
                row.try_get_unchecked::<String, _>(i)
                    .map_err(decode_failed)?,
            ),
        };
        values.push(value);
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// Regression: a NaN bound to SQLite was stored as NULL without a word.
    #[test]
    fn nan_is_refused_with_its_column() {
        let columns = columns(&["id", "ratio"]);
        let rows = vec![
            vec![Value::Int(1), Value::Float(0.5)],
            vec![Value::Int(2), Value::Float(f64::NAN)],
        ];
        let error = refuse_nan(&columns, &rows).unwrap_err();
        assert_eq!(
            error.to_string(),
            "column `ratio`: NaN cannot be stored in SQLite (it would become NULL); map it to NULL or a text column at the source"
        );
    }

    #[test]
    fn values_sqlite_would_round_are_refused() {
        let big = Value::Numeric("12345678901234567890123456789.0123456789".into());
        let why = rounding("NUMERIC(38,10)", &big).unwrap();
        assert!(
            why.starts_with("SQLite would turn it into the float 1.2345678901234568e28"),
            "{why}"
        );
        assert!(rounding("TEXT", &big).is_none());
        assert!(rounding("", &big).is_none());
        // Values a float keeps exactly pass: 12.50 is 12.5.
        assert!(rounding("NUMERIC", &Value::Numeric("12.50".into())).is_none());
        assert!(rounding("INTEGER", &Value::Numeric("-9223372036854775808".into())).is_none());
        assert!(rounding("DECIMAL(10,2)", &Value::Numeric("0.1".into())).is_none());
        assert!(rounding("REAL", &Value::Int(1 << 53)).is_none());
        assert!(rounding("REAL", &Value::Int((1 << 53) + 1)).is_some());
        assert!(rounding("TEXT", &Value::Float(0.1)).is_none());
        assert!(rounding("TEXT", &Value::Float(f64::MAX)).is_some());
    }

    fn utc(text: &str) -> Value {
        Value::TimestampTz(
            DateTime::parse_from_rfc3339(text)
                .unwrap()
                .with_timezone(&Utc),
        )
    }

    fn local(text: &str) -> Value {
        Value::Timestamp(
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").unwrap(),
        )
    }

    #[test]
    fn date_time_values_are_read_in_every_form_sqlite_reads() {
        let text = |t: &str| read_instant(&Value::Text(t.into()));
        assert_eq!(text("2026-11-29"), Some(local("2026-11-29 00:00:00")));
        assert_eq!(text("2026-11-29 11:05"), Some(local("2026-11-29 11:05:00")));
        assert_eq!(
            text("2026-11-29T11:05:07"),
            Some(local("2026-11-29 11:05:07"))
        );
        assert_eq!(
            text("2026-11-29 11:05:07.123456789123"),
            Some(local("2026-11-29 11:05:07.123456789"))
        );
        assert_eq!(
            text("2026-11-29T10:05:00.000Z"),
            Some(utc("2026-11-29T10:05:00Z"))
        );
        assert_eq!(text("2026-11-29 10:05z"), Some(utc("2026-11-29T10:05:00Z")));
        assert_eq!(
            text("2026-11-29T00:30:00+02:00"),
            Some(utc("2026-11-28T22:30:00Z"))
        );
        assert_eq!(
            text("2026-11-29T23:30:00.5-05:30"),
            Some(utc("2026-11-30T05:00:00.5Z"))
        );
        // Julian day 2461374.0625 and unix 1795960800: 13:30 and 14:00 UTC.
        assert_eq!(
            read_instant(&Value::Float(2_461_374.062_5)),
            Some(utc("2026-11-29T13:30:00Z"))
        );
        assert_eq!(
            read_instant(&Value::Int(1_795_960_800)),
            Some(utc("2026-11-29T14:00:00Z"))
        );
        assert_eq!(
            read_instant(&Value::Int(-1)),
            Some(utc("1969-12-31T23:59:59Z"))
        );
        // Numbers as SQLite's 'auto' reads them: below 5,373,484.5 a Julian
        // day (also when NUMERIC affinity made `2461042.0` an INTEGER),
        // unix seconds otherwise.
        assert_eq!(
            read_instant(&Value::Int(2_461_042)),
            Some(utc("2026-01-01T12:00:00Z"))
        );
        assert_eq!(
            read_instant(&Value::Float(5_373_484.5)),
            Some(utc("1970-03-04T04:38:04.500Z"))
        );
        assert_eq!(
            read_instant(&Value::Float(-1.0)),
            Some(utc("1969-12-31T23:59:59Z"))
        );
        assert_eq!(read_instant(&Value::Null), Some(Value::Null));
        for refused in [
            "yesterday",
            "now",
            "11:05:00",
            "2461374.0625",
            "2026-02-30",
            "2026-11-29 24:00:00",
            "2026-11-29 11:05:",
            "2026-11-29 11:05:00.",
            "2026-11-29T11",
            "2026-11-29Z",
            "2026-11-29 11:05:00+0200",
            "2026-11-29 11:05:00 +02:00",
            "2026-11-29 11:05:00+15:00",
            "26-11-29",
            " 2026-11-29",
            "",
        ] {
            assert_eq!(text(refused), None, "{refused:?}");
        }
        for refused in [
            Value::Float(f64::NAN),
            Value::Float(-210_866_760_001.0),
            Value::Int(253_402_300_800),
            Value::Int(i64::MAX),
            Value::Bytes(b"2026-11-29".to_vec()),
        ] {
            assert_eq!(read_instant(&refused), None, "{refused:?}");
        }
        assert!(is_date_time_type("DATETIME"));
        assert!(is_date_time_type("date"));
        assert!(is_date_time_type("timestamp(6)"));
        assert!(is_date_time_type("TIMESTAMPTZ"));
        assert!(!is_date_time_type("TIME"));
        assert!(!is_date_time_type("TEXT"));
        assert!(!is_date_time_type("INTEGER"));
    }

    /// A new SQLite file in a temporary folder (kept while the folder lives).
    async fn scratch_db() -> (tempfile::TempDir, SqliteConnector) {
        let dir = tempfile::tempdir().unwrap();
        let options = ConnectOptions {
            max_connections: 1,
            connect_timeout: std::time::Duration::from_secs(5),
            acquire_timeout: std::time::Duration::from_secs(5),
            statement_timeout: None,
            create_if_missing: true,
        };
        let db = SqliteConnector::connect(&dir.path().join("t.db"), &options)
            .await
            .unwrap();
        (dir, db)
    }

    /// Every instant `read_instant` reads is the one SQLite's own
    /// `julianday()` reads (to its millisecond), so the keyset read's order
    /// and the checkpoint agree; every value it refuses but one is NULL
    /// there too.
    #[tokio::test]
    async fn instants_agree_with_sqlite_julianday() {
        let (_dir, db) = scratch_db().await;
        let sql = format!("SELECT {}", Dialect::sqlite_instant("?1"));
        let values = [
            Value::Text("2026-11-29".into()),
            Value::Text("2026-11-29 11:05".into()),
            Value::Text("2026-11-29T11:05:07.123456".into()),
            Value::Text("2026-11-29T10:05:00.000Z".into()),
            Value::Text("2026-11-29T00:30:00+02:00".into()),
            Value::Text("1000-01-01 00:00:00-14:00".into()),
            Value::Text("9999-12-31 23:59:59.999".into()),
            Value::Float(2_461_374.062_5),
            Value::Float(0.0),
            // A Julian day stored as an INTEGER (NUMERIC affinity): 2026-01-01 12:00.
            Value::Int(2_461_042),
            Value::Int(5_373_484),
            // Past the Julian range: unix seconds (1970-03-04 04:38:05).
            Value::Int(5_373_485),
            // Unix seconds with a fraction, as a REAL.
            Value::Float(1_767_225_600.25),
            Value::Int(1_795_960_800),
            Value::Int(-210_866_760_000),
            Value::Int(253_402_300_799),
            Value::Text("yesterday".into()),
            Value::Text("2026-11-29 24:00:00".into()),
            Value::Float(-1.0),
            Value::Int(253_402_300_800),
        ];
        for value in values {
            let read = db.query(&sql, std::slice::from_ref(&value)).await.unwrap();
            let julian = match &read.rows[0][0] {
                Value::Float(day) => Some((day * 86_400_000.0).round() as i64),
                Value::Null => None,
                other => panic!("{other:?}"),
            };
            let ours = read_instant(&value).map(|instant| {
                let millis = match instant {
                    Value::TimestampTz(t) => t.timestamp_millis(),
                    Value::Timestamp(t) => t.and_utc().timestamp_millis(),
                    other => panic!("{other:?}"),
                };
                millis + UNIX_EPOCH_JD_MS
            });
            // SQLite reads 24:00 as the next midnight; hubsync refuses it.
            if value == Value::Text("2026-11-29 24:00:00".into()) {
                assert!(julian.is_some() && ours.is_none());
                continue;
            }
            assert_eq!(ours, julian, "{value:?}");
        }
    }

    /// The declared type of a cursor is found through its table, even where
    /// the driver has no name for it (`timestamp(6)`), and through a query.
    #[tokio::test]
    async fn declared_types_are_found_through_the_table() {
        let (_dir, db) = scratch_db().await;
        db.execute_script("CREATE TABLE t (id INTEGER PRIMARY KEY, at timestamp(6), note TEXT);")
            .await
            .unwrap();
        let declared = |sql: &'static str, column: &'static str| {
            let db = &db;
            async move { db.declared_type(sql, column).await.unwrap() }
        };
        assert_eq!(
            declared("SELECT * FROM t", "at").await.as_deref(),
            Some("timestamp(6)")
        );
        assert_eq!(
            declared(
                "SELECT * FROM (SELECT id, at AS stamp FROM t) AS s",
                "stamp"
            )
            .await
            .as_deref(),
            Some("timestamp(6)")
        );
        assert_eq!(
            declared("SELECT * FROM t", "note").await.as_deref(),
            Some("TEXT")
        );
        assert_eq!(declared("SELECT id, 'x' AS at FROM t", "at").await, None);
        assert_eq!(declared("SELECT * FROM t", "missing").await, None);
    }

    #[test]
    fn infinities_and_nulls_pass() {
        let columns = columns(&["id", "ratio"]);
        let rows = vec![
            vec![Value::Int(1), Value::Float(f64::INFINITY)],
            vec![Value::Int(2), Value::Float(f64::NEG_INFINITY)],
            vec![Value::Int(3), Value::Null],
        ];
        assert!(refuse_nan(&columns, &rows).is_ok());
        assert!(refuse_nan(&columns, &[]).is_ok());
    }
}
