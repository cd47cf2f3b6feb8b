//! PostgreSQL I/O: typed reads into [`Value`], text-array upserts.
//!
//! Reads decode the binary wire format per column type; `NUMERIC` is decoded
//! from its base-10000 digits with its display scale (`dscale`), so
//! `12.50` stays `12.50` and 38-digit values, `NaN` and `±Infinity` arrive
//! exactly (format: PostgreSQL `src/backend/utils/adt/numeric.c`,
//! `numeric_send`). Parameters are bound as text and cast by the SQL.

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use futures::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{
    AssertSqlSafe, Column, ConnectOptions as _, Executor, PgConnection, PgPool, Row, TypeInfo,
    ValueRef,
};

use super::{BatchSink, ColumnInfo, ConnectOptions, ConnectorError, Result, TableInfo, db_error};
use crate::config::DbUrl;
use crate::dialect::{Dialect, UpsertSpec};
use crate::value::{Batch, Value};

/// A pool of PostgreSQL connections.
pub struct PgConnector {
    pool: PgPool,
}

impl PgConnector {
    /// Opens a pool (session time zone UTC) and checks one connection.
    pub async fn connect(url: &DbUrl, options: &ConnectOptions) -> Result<PgConnector> {
        let DbUrl::Postgres {
            url: text,
            password,
        } = url
        else {
            unreachable!("PgConnector::connect called with a non-postgres URL")
        };
        let connect_error = |message: String| ConnectorError::Connect {
            url: url.redacted(),
            message,
        };
        let mut connect_options = PgConnectOptions::from_str(text)
            .map_err(|e| connect_error(strip_url(&e.to_string())))?;
        // `hubsync` in `pg_stat_activity`, unless the URL names itself (e.g.
        // one name per hub replica: `?application_name=hubsync-r2`).
        if !text.contains("application_name=") {
            connect_options = connect_options.application_name("hubsync");
        }
        let mut connect_options = connect_options
            .options([
                ("TimeZone", "UTC"),
                ("DateStyle", "ISO"),
                ("client_min_messages", "warning"),
            ])
            .disable_statement_logging();
        if let Some(password) = password {
            connect_options = connect_options.password(password.expose());
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .min_connections(0)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(connect_options.clone());
        super::check_first_connection(
            &pool,
            &connect_options,
            url,
            options.connect_timeout,
            connect_message,
        )
        .await?;
        Ok(PgConnector { pool })
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
        let rows = bind_all(sql, params).fetch(&mut *conn);
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
        let quoted = Value::Text(Dialect::Postgres.quote_table(table));
        let columns = self
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), \
                 format('%I.%I', n.nspname, t.typname), \
                 a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = '' \
                 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
                 JOIN pg_namespace n ON n.oid = t.typnamespace \
                 WHERE a.attrelid = to_regclass($1::text) \
                 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                std::slice::from_ref(&quoted),
            )
            .await?;
        if columns.is_empty() {
            return Ok(None);
        }
        let keys = self
            .query(
                "SELECT string_agg(a.attname::text, chr(31) ORDER BY k.ord) \
                 FROM pg_index i \
                 CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                 WHERE i.indrelid = to_regclass($1::text) AND i.indisunique AND i.indpred IS NULL \
                 GROUP BY i.indexrelid",
                &[quoted],
            )
            .await?;
        Ok(Some(TableInfo {
            columns: columns
                .rows
                .into_iter()
                .map(|row| ColumnInfo {
                    name: text_of(&row[0]),
                    data_type: text_of(&row[1]),
                    cast_type: text_of(&row[2]),
                    required: row[3] == Value::Bool(true),
                })
                .collect(),
            case_insensitive_names: false,
            unique_keys: keys
                .rows
                .iter()
                .map(|row| {
                    text_of(&row[0])
                        .split('\u{1f}')
                        .map(str::to_string)
                        .collect()
                })
                .collect(),
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

    pub(super) async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.pool.begin().await.map_err(db_error)
    }

    /// How many of `rows` an upsert into `spec` would insert or change (see
    /// `Dialect::pg_changed_rows`), read on a pooled connection.
    pub(super) async fn changed_rows(
        &self,
        spec: &UpsertSpec<'_>,
        rows: &[Vec<Value>],
    ) -> Result<u64> {
        let query = bind_text_arrays(Dialect::Postgres.pg_changed_rows(spec), spec, rows)?;
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        let row = query.fetch_one(&mut *conn).await.map_err(db_error)?;
        let count: i64 = row.try_get(0).map_err(db_error)?;
        Ok(count.max(0) as u64)
    }

    /// Pings an idle connection of the pool (see [`super::ping_idle`]).
    pub(super) async fn ping_idle(&self) -> bool {
        super::ping_idle(&self.pool).await
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }
}

/// The server's own message for a refused login or a missing database
/// (without sqlx's "error returned from database" wrapper and source line),
/// otherwise the driver's message.
fn connect_message(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => db.message().to_string(),
        other => strip_url(&other.to_string()),
    }
}

/// sqlx's connect errors may echo the URL; keep only the first line and
/// never a password (the caller adds the redacted URL).
fn strip_url(message: &str) -> String {
    crate::config::url::redact_url_text(message.lines().next().unwrap_or(message))
}

fn text_of(value: &Value) -> String {
    match value {
        Value::Text(s) => s.clone(),
        other => other.to_string(),
    }
}

fn bind_all<'q>(
    sql: &str,
    params: &'q [Value],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let mut query = sqlx::query(AssertSqlSafe(sql.to_string()));
    for param in params {
        query = query.bind(param.to_pg_text());
    }
    query
}

pub(super) async fn execute_on(
    conn: &mut PgConnection,
    sql: &str,
    params: &[Value],
) -> Result<u64> {
    let result = bind_all(sql, params)
        .execute(conn)
        .await
        .map_err(db_error)?;
    Ok(result.rows_affected())
}

pub(super) async fn query_on(
    conn: &mut PgConnection,
    sql: &str,
    params: &[Value],
) -> Result<Batch> {
    let mut rows = bind_all(sql, params).fetch(conn);
    let mut batch = Batch::default();
    while let Some(row) = rows.try_next().await.map_err(db_error)? {
        if batch.columns.is_empty() {
            batch.columns = row.columns().iter().map(|c| c.name().to_string()).collect();
        }
        batch.rows.push(decode_row(&row)?);
    }
    Ok(batch)
}

/// Appends `text` to `out` escaped for COPY's text format: backslash,
/// newline, carriage return and tab (the column delimiter) become `\\`,
/// `\n`, `\r` and `\t`. Source: PostgreSQL manual, "COPY", "Text Format".
fn copy_escape(text: &str, out: &mut Vec<u8>) {
    for byte in text.bytes() {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            other => out.push(other),
        }
    }
}

/// `rows` in COPY's text format: columns separated by a tab, NULL as
/// `\N`, one line per row; each value as PostgreSQL's own text input form
/// ([`Value::pg_text`]), which the column's type parses.
fn copy_text(rows: &[Vec<Value>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() * 64);
    for row in rows {
        for (i, value) in row.iter().enumerate() {
            if i > 0 {
                out.push(b'\t');
            }
            match value.pg_text() {
                Some(text) => copy_escape(&text, &mut out),
                None => out.extend_from_slice(b"\\N"),
            }
        }
        out.push(b'\n');
    }
    out
}

/// Inserts `rows` into `spec.table` (`spec.columns`) with `COPY ... FROM
/// STDIN`: no conflict handling, for a target known to hold none of these
/// keys (a site's initial load). Binary format where every column and value
/// has an encoding ([`super::pg_binary::encode`], by `spec.column_types`),
/// else text format. Returns rows copied.
///
/// Errors: a value the column refuses, or a key already present (unique
/// violation), as a database error of kind `data`; nothing is written.
pub(super) async fn copy_in_on(
    conn: &mut PgConnection,
    spec: &UpsertSpec<'_>,
    rows: &[Vec<Value>],
) -> Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    let (body, binary) = match super::pg_binary::encode(spec.column_types, rows) {
        Some(body) => (body, true),
        None => (copy_text(rows), false),
    };
    let sql = Dialect::Postgres.copy_in(spec.table, spec.columns, binary);
    let mut copy = conn.copy_in_raw(&sql).await.map_err(db_error)?;
    let sent = copy.send(body).await.map(|_| ());
    match sent {
        Ok(()) => copy.finish().await.map_err(db_error),
        Err(e) => {
            let _ = copy.abort("hubsync: sending the rows failed").await;
            Err(db_error(e))
        }
    }
}

pub(super) async fn upsert_on(
    conn: &mut PgConnection,
    spec: &UpsertSpec<'_>,
    rows: &[Vec<Value>],
) -> Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    let kinds: Vec<ArrayKind> = (0..spec.columns.len())
        .map(|column| ArrayKind::of(spec.column_types.get(column), rows, column))
        .collect();
    let array_types: Vec<&str> = kinds.iter().map(|k| k.pg_type()).collect();
    let sql = Dialect::Postgres.upsert_with_arrays(spec, rows.len(), &array_types);
    if kinds.iter().all(|k| *k == ArrayKind::Text) {
        return execute_with_text_arrays(conn, sql, spec, rows).await;
    }
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for (column, kind) in kinds.iter().enumerate() {
        let values = rows.iter().map(|row| &row[column]);
        query = match kind {
            ArrayKind::Int8 => query.bind(collect_array(values, |v| match v {
                Value::Int(i) => Some(*i),
                _ => None,
            })),
            ArrayKind::Float8 => query.bind(collect_array(values, |v| match v {
                Value::Float(f) => Some(*f),
                _ => None,
            })),
            ArrayKind::Bool => query.bind(collect_array(values, |v| match v {
                Value::Bool(b) => Some(*b),
                _ => None,
            })),
            ArrayKind::TimestampTz => query.bind(collect_array(values, |v| match v {
                Value::TimestampTz(t) => Some(*t),
                _ => None,
            })),
            ArrayKind::Timestamp => query.bind(collect_array(values, |v| match v {
                Value::Timestamp(t) => Some(*t),
                _ => None,
            })),
            ArrayKind::Date => query.bind(collect_array(values, |v| match v {
                Value::Date(d) => Some(*d),
                _ => None,
            })),
            ArrayKind::Uuid => query.bind(collect_array(values, |v| match v {
                Value::Uuid(u) => Some(*u),
                _ => None,
            })),
            ArrayKind::Text => query.bind(text_array(spec, rows, column)?),
        };
    }
    let result = query.execute(conn).await.map_err(db_error)?;
    Ok(result.rows_affected())
}

/// How one column of an upsert batch is bound: as a binary array of its
/// type when the target's cast type is that type and every value of the
/// column is of the matching variant (or NULL), so the master parses
/// nothing (a `timestamptz` from text costs it about 0.7 µs per value,
/// measured); otherwise as text, cast by the SQL. Values are exactly the
/// same either way: the text form of an instant also has 6 fraction digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ArrayKind {
    Text,
    Int8,
    Float8,
    Bool,
    TimestampTz,
    Timestamp,
    Date,
    Uuid,
}

impl ArrayKind {
    fn of(cast_type: Option<&String>, rows: &[Vec<Value>], column: usize) -> ArrayKind {
        let Some(cast_type) = cast_type else {
            return ArrayKind::Text;
        };
        let base = cast_type.strip_prefix("pg_catalog.").unwrap_or(cast_type);
        let (kind, fits): (ArrayKind, fn(&Value) -> bool) = match base {
            // int2/int4 columns get int8 values through the cast, which
            // refuses an out-of-range one as the text cast does.
            "int8" | "int4" | "int2" | "bigint" | "integer" | "smallint" => {
                (ArrayKind::Int8, |v| matches!(v, Value::Int(_)))
            }
            "float8" | "double precision" => (ArrayKind::Float8, |v| matches!(v, Value::Float(_))),
            "bool" | "boolean" => (ArrayKind::Bool, |v| matches!(v, Value::Bool(_))),
            "timestamptz" => (
                ArrayKind::TimestampTz,
                |v| matches!(v, Value::TimestampTz(t) if t.timestamp_subsec_nanos() % 1000 == 0),
            ),
            "timestamp" => (
                ArrayKind::Timestamp,
                |v| matches!(v, Value::Timestamp(t) if t.and_utc().timestamp_subsec_nanos() % 1000 == 0),
            ),
            "date" => (ArrayKind::Date, |v| matches!(v, Value::Date(_))),
            "uuid" => (ArrayKind::Uuid, |v| matches!(v, Value::Uuid(_))),
            _ => return ArrayKind::Text,
        };
        if rows
            .iter()
            .all(|row| row[column].is_null() || fits(&row[column]))
        {
            kind
        } else {
            ArrayKind::Text
        }
    }

    /// The array element type in the SQL (`$n::int8[]`).
    fn pg_type(self) -> &'static str {
        match self {
            ArrayKind::Text => "text",
            ArrayKind::Int8 => "int8",
            ArrayKind::Float8 => "float8",
            ArrayKind::Bool => "bool",
            ArrayKind::TimestampTz => "timestamptz",
            ArrayKind::Timestamp => "timestamp",
            ArrayKind::Date => "date",
            ArrayKind::Uuid => "uuid",
        }
    }
}

/// One column's values as an array of `T` (NULL stays NULL); `pick` maps
/// the variant [`ArrayKind::of`] checked.
fn collect_array<'v, T>(
    values: impl Iterator<Item = &'v Value>,
    pick: impl Fn(&Value) -> Option<T>,
) -> Vec<Option<T>> {
    values.map(pick).collect()
}

/// Deletes the rows whose key (`spec.columns`, all of them key columns) is
/// one of `rows`; returns rows deleted.
pub(super) async fn delete_on(
    conn: &mut PgConnection,
    spec: &UpsertSpec<'_>,
    rows: &[Vec<Value>],
) -> Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    let sql = Dialect::Postgres.delete_keys(spec, rows.len());
    execute_with_text_arrays(conn, sql, spec, rows).await
}

/// Runs `sql`, binding one text array per column of `spec` (the column's
/// values over `rows`, as PostgreSQL text); returns rows affected. Errors
/// with [`ConnectorError::Type`] for text holding a NUL byte.
async fn execute_with_text_arrays(
    conn: &mut PgConnection,
    sql: String,
    spec: &UpsertSpec<'_>,
    rows: &[Vec<Value>],
) -> Result<u64> {
    let query = bind_text_arrays(sql, spec, rows)?;
    let result = query.execute(conn).await.map_err(db_error)?;
    Ok(result.rows_affected())
}

/// `sql` with one text array bound per column of `spec` (the column's
/// values over `rows`, as PostgreSQL text). Errors with
/// [`ConnectorError::Type`] for text holding a NUL byte.
fn bind_text_arrays<'q>(
    sql: String,
    spec: &UpsertSpec<'_>,
    rows: &'q [Vec<Value>],
) -> Result<sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>> {
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for column in 0..spec.columns.len() {
        query = query.bind(text_array(spec, rows, column)?);
    }
    Ok(query)
}

/// Column `column` of `rows` as PostgreSQL text (NULL stays NULL). Errors
/// with [`ConnectorError::Type`] for text holding a NUL byte.
fn text_array<'q>(
    spec: &UpsertSpec<'_>,
    rows: &'q [Vec<Value>],
    column: usize,
) -> Result<Vec<Option<std::borrow::Cow<'q, str>>>> {
    let mut array = Vec::with_capacity(rows.len());
    for row in rows {
        let text = row[column].pg_text();
        if let Some(t) = &text
            && t.contains('\0')
        {
            return Err(ConnectorError::Type {
                column: spec.columns[column].clone(),
                message: "text contains a NUL byte, which PostgreSQL text cannot store; \
                          use a bytea column or strip it at the source"
                    .into(),
            });
        }
        array.push(text);
    }
    Ok(array)
}

/// Why PostgreSQL would silently change `value` in a column of type
/// `data_type` (`format_type()` spelling, e.g. `numeric(12,2)`,
/// `timestamp(0) without time zone`), or `Ok`: a decimal with more fraction
/// digits than the column's scale (PostgreSQL rounds it), or more integer
/// digits than it holds (refused anyway, but without naming the column),
/// and fractional seconds beyond a `time(n)`/`timestamp(n)` precision
/// (rounded). The message names the value, its hubsync type and the column
/// type.
pub fn check_value(data_type: &str, value: &Value) -> std::result::Result<(), String> {
    let lower = data_type.to_ascii_lowercase();
    let modifiers = crate::dialect::types::type_modifiers(&lower);
    let refuse = |why: String| {
        Err(format!(
            "value `{value}` ({}) cannot be stored in PostgreSQL `{data_type}`: {why}",
            value.kind()
        ))
    };
    if lower.starts_with("numeric(") {
        let text = match value {
            Value::Numeric(t) | Value::Text(t) => t.clone(),
            Value::Int(i) => i.to_string(),
            _ => return Ok(()),
        };
        let precision = modifiers.first().copied().unwrap_or(1000);
        let scale = modifiers.get(1).copied().unwrap_or(0);
        if let Some((int_digits, frac_digits)) = crate::value::decimal_digits(&text) {
            if frac_digits > scale {
                return refuse(format!(
                    "{} and the column keeps {scale}; PostgreSQL would round it",
                    crate::value::fraction_digits_text(&text, frac_digits)
                ));
            }
            if int_digits + scale > precision {
                return refuse(format!(
                    "it has {int_digits} digits before the point and the column holds {}",
                    precision - scale
                ));
            }
        }
        return Ok(());
    }
    let fsp = match modifiers.first() {
        Some(n) if lower.starts_with("timestamp(") || lower.starts_with("time(") => *n,
        _ => return Ok(()),
    };
    let micros = match value {
        Value::Timestamp(ts) => chrono::Timelike::nanosecond(ts) / 1000,
        Value::TimestampTz(ts) => chrono::Timelike::nanosecond(ts) / 1000,
        Value::Time(t) => chrono::Timelike::nanosecond(t) / 1000,
        _ => return Ok(()),
    };
    if micros % 10u32.pow(6 - fsp.min(6)) != 0 {
        return refuse(format!(
            "it has fractional seconds beyond the column's {fsp} digits; PostgreSQL would round them"
        ));
    }
    Ok(())
}

/// PostgreSQL types (sqlx type names) that [`decode_row`] reads natively.
/// Columns of any other type are selected as `CAST(c AS text)` by the flow.
pub(crate) const DECODED_TYPES: &[&str] = &[
    "BOOL",
    "INT2",
    "INT4",
    "INT8",
    "OID",
    "FLOAT4",
    "FLOAT8",
    "NUMERIC",
    "TEXT",
    "VARCHAR",
    "BPCHAR",
    "NAME",
    "CHAR",
    "BYTEA",
    "DATE",
    "TIME",
    "TIMESTAMP",
    "TIMESTAMPTZ",
    "JSON",
    "JSONB",
    "UUID",
];

/// Decodes one row into values, per column type.
fn decode_row(row: &PgRow) -> Result<Vec<Value>> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let type_error = |message: String| ConnectorError::Type {
            column: column.name().to_string(),
            message,
        };
        let raw = row.try_get_raw(i).map_err(db_error)?;
        if raw.is_null() {
            values.push(Value::Null);
            continue;
        }
        let type_name = column.type_info().name();
        let decode_failed = |e: sqlx::Error| type_error(format!("cannot decode {type_name}: {e}"));
        let value = match type_name {
            "BOOL" => Value::Bool(row.try_get::<bool, _>(i).map_err(decode_failed)?),
            "INT2" => Value::Int(row.try_get::<i16, _>(i).map_err(decode_failed)?.into()),
            "INT4" => Value::Int(row.try_get::<i32, _>(i).map_err(decode_failed)?.into()),
            "INT8" => Value::Int(row.try_get::<i64, _>(i).map_err(decode_failed)?),
            "OID" => Value::Int(
                row.try_get::<sqlx::postgres::types::Oid, _>(i)
                    .map_err(decode_failed)?
                    .0
                    .into(),
            ),
            "FLOAT4" => Value::Float(row.try_get::<f32, _>(i).map_err(decode_failed)?.into()),
            "FLOAT8" => Value::Float(row.try_get::<f64, _>(i).map_err(decode_failed)?),
            "NUMERIC" => {
                let bytes = raw.as_bytes().map_err(|e| type_error(e.to_string()))?;
                Value::Numeric(decode_numeric(bytes).map_err(type_error)?)
            }
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" => Value::Text(
                row.try_get_unchecked::<String, _>(i)
                    .map_err(decode_failed)?,
            ),
            "BYTEA" => Value::Bytes(row.try_get::<Vec<u8>, _>(i).map_err(decode_failed)?),
            // Dates and times are decoded from the wire here, not by the
            // driver: its conversion panics on `infinity` and on years past
            // chrono's range, and turns `24:00:00` into `00:00:00`.
            "DATE" | "TIME" | "TIMESTAMP" | "TIMESTAMPTZ" => {
                let bytes = raw.as_bytes().map_err(|e| type_error(e.to_string()))?;
                decode_datetime(type_name, bytes).map_err(type_error)?
            }
            "JSON" | "JSONB" => {
                let bytes = raw.as_bytes().map_err(|e| type_error(e.to_string()))?;
                // Binary jsonb starts with a version byte (1); json is plain text.
                let text = if type_name == "JSONB" {
                    bytes.get(1..).unwrap_or_default()
                } else {
                    bytes
                };
                Value::Json(
                    String::from_utf8(text.to_vec())
                        .map_err(|e| type_error(format!("invalid JSON text: {e}")))?,
                )
            }
            "UUID" => Value::Uuid(row.try_get::<uuid::Uuid, _>(i).map_err(decode_failed)?),
            other => {
                return Err(type_error(format!(
                    "type `{other}` is not supported yet; cast it in a `query` (e.g. `{}::text`)",
                    column.name()
                )));
            }
        };
        values.push(value);
    }
    Ok(values)
}

/// Microseconds from the Unix epoch to PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Decodes PostgreSQL's binary `date` (i32 days since 2000-01-01), `time`
/// (i64 microseconds since midnight) and `timestamp`/`timestamptz` (i64
/// microseconds since 2000-01-01, UTC for `timestamptz`), per PostgreSQL's
/// `date_send`/`time_send`/`timestamp_send`.
///
/// Values with no chrono form travel as the text PostgreSQL itself accepts
/// back: `infinity`, `-infinity` and `24:00:00`. A value outside chrono's
/// range (beyond year 262,143) is an error, never a panic.
pub(crate) fn decode_datetime(type_name: &str, bytes: &[u8]) -> std::result::Result<Value, String> {
    let out_of_range = || {
        format!(
            "{type_name} value is outside the range hubsync can carry (years -262143 to 262143)"
        )
    };
    match type_name {
        "DATE" => {
            let days = i32::from_be_bytes(
                bytes
                    .try_into()
                    .map_err(|_| "truncated date value".to_string())?,
            );
            match days {
                i32::MAX => Ok(Value::Text("infinity".into())),
                i32::MIN => Ok(Value::Text("-infinity".into())),
                _ => NaiveDate::from_ymd_opt(2000, 1, 1)
                    .and_then(|epoch| {
                        epoch.checked_add_signed(chrono::Duration::days(i64::from(days)))
                    })
                    .map(Value::Date)
                    .ok_or_else(out_of_range),
            }
        }
        "TIME" => {
            let micros = i64::from_be_bytes(
                bytes
                    .try_into()
                    .map_err(|_| "truncated time value".to_string())?,
            );
            if micros == 86_400_000_000 {
                return Ok(Value::Text("24:00:00".into()));
            }
            let seconds =
                u32::try_from(micros.div_euclid(1_000_000)).map_err(|_| out_of_range())?;
            let nanos =
                u32::try_from(micros.rem_euclid(1_000_000) * 1_000).map_err(|_| out_of_range())?;
            NaiveTime::from_num_seconds_from_midnight_opt(seconds, nanos)
                .map(Value::Time)
                .ok_or_else(out_of_range)
        }
        "TIMESTAMP" | "TIMESTAMPTZ" => {
            let micros = i64::from_be_bytes(
                bytes
                    .try_into()
                    .map_err(|_| "truncated timestamp value".to_string())?,
            );
            match micros {
                i64::MAX => return Ok(Value::Text("infinity".into())),
                i64::MIN => return Ok(Value::Text("-infinity".into())),
                _ => {}
            }
            let instant = micros
                .checked_add(PG_EPOCH_MICROS)
                .and_then(DateTime::<Utc>::from_timestamp_micros)
                .ok_or_else(out_of_range)?;
            Ok(if type_name == "TIMESTAMP" {
                Value::Timestamp(instant.naive_utc())
            } else {
                Value::TimestampTz(instant)
            })
        }
        other => Err(format!("not a date/time type: {other}")),
    }
}

/// Decodes PostgreSQL's binary NUMERIC into exact decimal text with the
/// value's display scale. Layout: `ndigits i16, weight i16, sign u16,
/// dscale u16, digits [i16; ndigits]` in base 10,000; `weight` is the
/// base-10,000 exponent of the first digit.
pub(crate) fn decode_numeric(bytes: &[u8]) -> std::result::Result<String, String> {
    let word = |at: usize| -> std::result::Result<u16, String> {
        bytes
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated NUMERIC value".to_string())
    };
    let ndigits = word(0)? as usize;
    let weight = word(2)? as i16 as i64;
    let sign = word(4)?;
    let dscale = word(6)? as usize;
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        0x0000 | 0x4000 => {}
        other => return Err(format!("invalid NUMERIC sign word {other:#x}")),
    }
    let digits: Vec<u16> = (0..ndigits)
        .map(|i| word(8 + 2 * i))
        .collect::<std::result::Result<_, _>>()?;
    let digit_at = |index: i64| -> u16 {
        if index < 0 {
            0
        } else {
            digits.get(index as usize).copied().unwrap_or(0)
        }
    };
    let mut text = String::new();
    if sign == 0x4000 {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        for index in 0..=weight {
            let d = digit_at(index);
            if index == 0 {
                text.push_str(&d.to_string());
            } else {
                text.push_str(&format!("{d:04}"));
            }
        }
    }
    if dscale > 0 {
        let mut fraction = String::with_capacity(dscale + 4);
        let mut index = weight + 1;
        while fraction.len() < dscale {
            fraction.push_str(&format!("{:04}", digit_at(index)));
            index += 1;
        }
        fraction.truncate(dscale);
        text.push('.');
        text.push_str(&fraction);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::{ArrayKind, check_value, copy_text, decode_numeric};
    use crate::value::Value as CopyValue;

    /// Regression (fresh-user trial): the refusal said "it has 9 digits
    /// after the point" beside `0.4566666660`, which shows 10 (the 9 left
    /// out its trailing zero, which needs no room in the column).
    #[test]
    fn a_rounding_refusal_counts_the_digits_it_shows() {
        let refused = |ty: &str, text: &str| check_value(ty, &CopyValue::Numeric(text.into()));
        assert_eq!(
            refused("numeric(12,4)", "0.4566666660").unwrap_err(),
            "value `0.4566666660` (numeric) cannot be stored in PostgreSQL `numeric(12,4)`: it has 10 digits \
             after the point (9 without its trailing zeros) and the column keeps 4; PostgreSQL would round it"
        );
        assert_eq!(
            refused("numeric(12,2)", "12.345").unwrap_err(),
            "value `12.345` (numeric) cannot be stored in PostgreSQL `numeric(12,2)`: it has 3 digits \
             after the point and the column keeps 2; PostgreSQL would round it"
        );
        // Fits once its trailing zeros are dropped: not refused.
        assert_eq!(refused("numeric(12,9)", "0.4566666660"), Ok(()));
        assert_eq!(refused("numeric(12,2)", "12.500000"), Ok(()));
        assert_eq!(refused("numeric(12,2)", "-0.10"), Ok(()));
    }

    #[test]
    fn copy_text_escapes_what_the_format_reserves_and_marks_null() {
        let rows = vec![
            vec![
                CopyValue::Text("a\tb\nc\\d\re".into()),
                CopyValue::Null,
                CopyValue::Int(7),
            ],
            vec![
                CopyValue::Bytes(vec![0, 255]),
                CopyValue::Text(String::new()),
                CopyValue::Bool(true),
            ],
        ];
        assert_eq!(
            String::from_utf8(copy_text(&rows)).unwrap(),
            "a\\tb\\nc\\\\d\\re\t\\N\t7\n\\\\x00ff\t\tt\n"
        );
    }

    fn encode(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut out = Vec::new();
        for w in [ndigits, weight as u16, sign, dscale] {
            out.extend_from_slice(&w.to_be_bytes());
        }
        for d in digits {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out
    }

    #[test]
    fn dates_and_times_decode_without_panics() {
        use super::decode_datetime;
        use crate::value::Value;
        let ts = |micros: i64| micros.to_be_bytes().to_vec();
        // 2000-01-01 00:00:00.000001
        assert_eq!(
            decode_datetime("TIMESTAMPTZ", &ts(1)).unwrap().to_string(),
            "2000-01-01T00:00:00.000001Z"
        );
        assert_eq!(
            decode_datetime("TIMESTAMP", &ts(i64::MAX)).unwrap(),
            Value::Text("infinity".into())
        );
        assert_eq!(
            decode_datetime("TIMESTAMPTZ", &ts(i64::MIN)).unwrap(),
            Value::Text("-infinity".into())
        );
        // About year 287,000 (PostgreSQL allows up to 294,276) is beyond chrono:
        // an error, not a panic.
        assert!(decode_datetime("TIMESTAMP", &ts(9_000_000_000_000_000_000)).is_err());
        assert_eq!(
            decode_datetime("TIME", &ts(86_400_000_000)).unwrap(),
            Value::Text("24:00:00".into())
        );
        assert_eq!(
            decode_datetime("TIME", &ts(3_600_000_001))
                .unwrap()
                .to_string(),
            "01:00:00.000001"
        );
        assert_eq!(
            decode_datetime("DATE", &i32::MAX.to_be_bytes()).unwrap(),
            Value::Text("infinity".into())
        );
        // -1 day: 1999-12-31.
        assert_eq!(
            decode_datetime("DATE", &(-1i32).to_be_bytes())
                .unwrap()
                .to_string(),
            "1999-12-31"
        );
    }

    #[test]
    fn numeric_keeps_scale_and_digits() {
        // 12.50: digits [12, 5000], weight 0, dscale 2.
        assert_eq!(
            decode_numeric(&encode(2, 0, 0, 2, &[12, 5000])).unwrap(),
            "12.50"
        );
        // -0.0001: digits [1], weight -1, dscale 4.
        assert_eq!(
            decode_numeric(&encode(1, -1, 0x4000, 4, &[1])).unwrap(),
            "-0.0001"
        );
        // 10000 (trailing zero digit groups are omitted on the wire): [1], weight 1.
        assert_eq!(decode_numeric(&encode(1, 1, 0, 0, &[1])).unwrap(), "10000");
        // 0 with scale 3: no digits.
        assert_eq!(decode_numeric(&encode(0, 0, 0, 3, &[])).unwrap(), "0.000");
        // 0.00000123 : weight -2 ([0123] in the second fractional group), dscale 8.
        assert_eq!(
            decode_numeric(&encode(1, -2, 0, 8, &[123])).unwrap(),
            "0.00000123"
        );
        assert_eq!(
            decode_numeric(&encode(0, 0, 0xC000, 0, &[])).unwrap(),
            "NaN"
        );
        assert_eq!(
            decode_numeric(&encode(0, 0, 0xF000, 0, &[])).unwrap(),
            "-Infinity"
        );
    }

    #[test]
    fn a_column_is_bound_binary_only_when_every_value_fits_its_type() {
        use crate::value::Value;
        use chrono::TimeZone as _;
        let ty = |t: &str| t.to_string();
        let at = |micros: i64| Value::TimestampTz(chrono::Utc.timestamp_micros(micros).unwrap());
        let rows = vec![
            vec![
                Value::Int(7),
                at(1_000_001),
                Value::Text("x".into()),
                Value::Float(0.5),
            ],
            vec![
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Float(f64::NAN),
            ],
        ];
        let kind = |t: &str, column| ArrayKind::of(Some(&ty(t)), &rows, column);
        assert_eq!(kind("pg_catalog.int8", 0), ArrayKind::Int8);
        assert_eq!(kind("pg_catalog.int4", 0), ArrayKind::Int8);
        assert_eq!(kind("pg_catalog.timestamptz", 1), ArrayKind::TimestampTz);
        assert_eq!(kind("pg_catalog.float8", 3), ArrayKind::Float8);
        // Text values, another target type, or no type: text.
        assert_eq!(kind("pg_catalog.int8", 2), ArrayKind::Text);
        assert_eq!(kind("pg_catalog.numeric", 0), ArrayKind::Text);
        assert_eq!(kind("pg_catalog.timestamp", 1), ArrayKind::Text);
        assert_eq!(ArrayKind::of(None, &rows, 0), ArrayKind::Text);
        // An instant finer than a microsecond stays text, rounded by the
        // server as before (the binary form would cut it).
        let fine = vec![vec![Value::TimestampTz(
            chrono::Utc.timestamp_nanos(1_000_000_500),
        )]];
        assert_eq!(
            ArrayKind::of(Some(&ty("pg_catalog.timestamptz")), &fine, 0),
            ArrayKind::Text
        );
    }
}
