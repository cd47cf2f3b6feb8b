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
//! Site files are opened without changing their journal mode, and every read
//! is one short autocommit statement, so a site's own writers are not held
//! up.

use std::path::Path;

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
                "SELECT name, type, pk FROM pragma_table_info(?1, ?2) ORDER BY cid",
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
