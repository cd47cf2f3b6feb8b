//! SQL over primary keys only: deleting a set of keys, and the key-range
//! reads and digests that delete detection (`flow/reconcile.rs`) compares.
//!
//! A key range is the rows of one table or query whose key is after an
//! exclusive lower bound and up to an inclusive upper bound, in key order,
//! optionally restricted to one site (`site_column = $site`) and to a
//! cursor window (`cursor >= $since`).

use std::fmt::Write as _;

use super::{Dialect, SelectFrom, UpsertSpec};
use crate::value::Value;

/// Separates the key columns of one row inside a digest (ASCII unit
/// separator); [`ROW_SEPARATOR`] separates rows. Neither occurs in keys
/// that people type, and a collision can only make two ranges look
/// different (a wasted key comparison), never alike.
pub const COLUMN_SEPARATOR: char = '\u{1f}';
/// Separates rows inside a digest (ASCII record separator).
pub const ROW_SEPARATOR: char = '\u{1e}';

/// One key range of a table or query (see the module docs).
#[derive(Clone, Debug)]
pub struct KeyRange<'a> {
    /// The rows.
    pub from: SelectFrom<'a>,
    /// Key column names (source names for the source, target names for the
    /// target), in key order.
    pub key: &'a [String],
    /// Exclusive lower bound, one value per key column; `None`: from the start.
    pub after: Option<&'a [Value]>,
    /// Inclusive upper bound; `None`: to the end.
    pub up_to: Option<&'a [Value]>,
    /// `(column, value)`: only rows where the column equals the value (a
    /// pull target's `site_column` and the site id).
    pub only: Option<(&'a str, &'a Value)>,
    /// `(column, value)`: only rows whose column is at or after the value
    /// (the cursor window).
    pub since: Option<(&'a str, &'a Value)>,
    /// Parameters already taken by the query's `:site.*` values; this
    /// range's parameters are numbered after them.
    pub params_before: usize,
    /// At most this many keys (the first in key order); `None`: all.
    pub limit: Option<usize>,
}

impl KeyRange<'_> {
    /// The `WHERE` clause and its parameters, in placeholder order.
    fn filter(&self, dialect: Dialect) -> (String, Vec<Value>) {
        let mut params: Vec<Value> = Vec::new();
        let next = |value: &Value, params: &mut Vec<Value>| {
            params.push(value.clone());
            dialect.typed_placeholder(self.params_before + params.len(), value)
        };
        let key = dialect.ident_list(self.key);
        let mut sql = format!("{} IS NOT NULL", dialect.quote_ident(&self.key[0]));
        if let Some((column, value)) = self.only {
            let p = next(value, &mut params);
            let _ = write!(sql, " AND {} = {p}", dialect.quote_ident(column));
        }
        if let Some((column, value)) = self.since {
            let p = next(value, &mut params);
            let _ = write!(sql, " AND {} >= {p}", dialect.quote_ident(column));
        }
        if let Some(after) = self.after {
            let ps: Vec<String> = after.iter().map(|v| next(v, &mut params)).collect();
            let _ = write!(sql, " AND ({key}) > ({})", ps.join(", "));
        }
        if let Some(up_to) = self.up_to {
            let ps: Vec<String> = up_to.iter().map(|v| next(v, &mut params)).collect();
            let _ = write!(sql, " AND ({key}) <= ({})", ps.join(", "));
        }
        (sql, params)
    }

    /// `SELECT key FROM .. WHERE .. ORDER BY key [LIMIT n]`.
    fn select(&self, dialect: Dialect) -> (String, Vec<Value>) {
        let (filter, params) = self.filter(dialect);
        let key = dialect.ident_list(self.key);
        let mut sql = format!(
            "SELECT {key} FROM {} WHERE {filter} ORDER BY {key}",
            dialect.source_clause(self.from)
        );
        if let Some(limit) = self.limit {
            let _ = write!(sql, " LIMIT {limit}");
        }
        (sql, params)
    }
}

impl Dialect {
    /// The keys of a range in key order: SQL and its parameters (to bind
    /// after the query's own `:site.*` values). Returns one row per key.
    pub fn key_range_select(self, range: &KeyRange<'_>) -> (String, Vec<Value>) {
        range.select(self)
    }

    /// PostgreSQL only: a range summarised in the database, so an unchanged
    /// range costs one small row instead of its keys. Returns zero rows for
    /// an empty range, else one row: the last key's columns (native types),
    /// then `count(*)` (bigint), then the digest (text): the hex SHA-256
    /// (FIPS 180-4, PostgreSQL's `sha256()`) of the keys' text forms, columns
    /// joined by [`COLUMN_SEPARATOR`] and rows by [`ROW_SEPARATOR`] in key
    /// order; the hub computes the same digest from `Value::to_pg_text` for
    /// keys it reads itself.
    pub fn key_range_digest(self, range: &KeyRange<'_>) -> (String, Vec<Value>) {
        debug_assert_eq!(self, Dialect::Postgres);
        let (chunk, params) = range.select(self);
        let key = self.ident_list(range.key);
        let descending: Vec<String> = range
            .key
            .iter()
            .map(|k| format!("{} DESC", self.quote_ident(k)))
            .collect();
        let texts: Vec<String> = range
            .key
            .iter()
            .map(|k| format!("{}::text", self.quote_ident(k)))
            .collect();
        let sql = format!(
            "WITH hubsync_c AS ({chunk}) \
             SELECT hubsync_l.*, (SELECT count(*) FROM hubsync_c), \
             (SELECT encode(sha256(convert_to(coalesce(string_agg(concat_ws(chr(31), {}), chr(30) ORDER BY {key}), ''), 'UTF8')), 'hex') FROM hubsync_c) \
             FROM (SELECT {key} FROM hubsync_c ORDER BY {} LIMIT 1) AS hubsync_l",
            texts.join(", "),
            descending.join(", ")
        );
        (sql, params)
    }

    /// Which of `keys` exist in `from`: `SELECT key FROM .. WHERE (key) IN
    /// ((..), ..)`, one row per key found. Parameters are numbered after
    /// `params_before`; `keys` should be at most a few hundred.
    pub fn key_lookup(
        self,
        from: SelectFrom<'_>,
        key: &[String],
        keys: &[Vec<Value>],
        params_before: usize,
    ) -> (String, Vec<Value>) {
        let mut params = Vec::with_capacity(keys.len() * key.len());
        let tuples: Vec<String> = keys
            .iter()
            .map(|row| {
                let ps: Vec<String> = row
                    .iter()
                    .map(|v| {
                        params.push(v.clone());
                        self.typed_placeholder(params_before + params.len(), v)
                    })
                    .collect();
                format!("({})", ps.join(", "))
            })
            .collect();
        let key_list = self.ident_list(key);
        let sql = format!(
            "SELECT {key_list} FROM {} WHERE ({key_list}) IN ({})",
            self.source_clause(from),
            tuples.join(", ")
        );
        (sql, params)
    }

    /// SQL deleting the rows whose `spec.key` (all of `spec.columns`) is one
    /// of `rows` keys.
    ///
    /// PostgreSQL: `DELETE .. WHERE (key) IN (SELECT CAST(..) FROM UNNEST($1::text[], ..))`,
    /// one text-array parameter per key column whatever `rows` is (bound
    /// like the upsert's). SQLite: `DELETE .. WHERE (key) IN (VALUES (?, ..), ..)`
    /// with `rows * key.len()` anonymous parameters in row order; MySQL the
    /// same with `IN ((?, ..), ..)`.
    pub fn delete_keys(self, spec: &UpsertSpec<'_>, rows: usize) -> String {
        let table = self.quote_table(spec.table);
        let key = self.ident_list(spec.columns);
        match self {
            Dialect::Postgres => {
                format!(
                    "DELETE FROM {table} WHERE ({key}) IN ({})",
                    self.unnest_select(spec, &[])
                )
            }
            Dialect::Sqlite => {
                let row = format!("({})", vec!["?"; spec.columns.len()].join(", "));
                format!(
                    "DELETE FROM {table} WHERE ({key}) IN (VALUES {})",
                    vec![row; rows].join(", ")
                )
            }
            // MySQL has no `IN (VALUES ..)`; a list of row constructors works.
            Dialect::MySql => {
                let row = format!("({})", vec!["?"; spec.columns.len()].join(", "));
                format!(
                    "DELETE FROM {table} WHERE ({key}) IN ({})",
                    vec![row; rows].join(", ")
                )
            }
        }
    }
}

/// The digest [`Dialect::key_range_digest`] computes, over keys the hub read
/// itself (each row's values in key order, rows in the order given).
pub fn digest_keys(rows: &[Vec<Value>]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            hasher.update([ROW_SEPARATOR as u8]);
        }
        for (j, value) in row.iter().enumerate() {
            if j > 0 {
                hasher.update([COLUMN_SEPARATOR as u8]);
            }
            if let Some(text) = value.to_pg_text() {
                hasher.update(text.as_bytes());
            }
        }
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_no_keys_is_sha256_of_empty_text() {
        // sha256("") per FIPS 180-4 test vectors.
        assert_eq!(
            digest_keys(&[]),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn digest_joins_columns_and_rows_with_separators() {
        // sha256("abc") per FIPS 180-4 test vectors: one row, one column.
        assert_eq!(
            digest_keys(&[vec![Value::Text("abc".into())]]),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // Rows and columns are separated, so (1,23) and (12,3) differ.
        assert_ne!(
            digest_keys(&[vec![Value::Int(1), Value::Int(23)]]),
            digest_keys(&[vec![Value::Int(12), Value::Int(3)]])
        );
    }

    #[test]
    fn sqlite_delete_lists_row_values() {
        let columns = vec!["store".to_string(), "id".to_string()];
        let spec = UpsertSpec {
            table: "sales",
            columns: &columns,
            column_types: &[],
            key: &columns,
        };
        assert_eq!(
            Dialect::Sqlite.delete_keys(&spec, 2),
            r#"DELETE FROM "sales" WHERE ("store", "id") IN (VALUES (?, ?), (?, ?))"#
        );
    }

    #[test]
    fn key_range_numbers_parameters_after_the_query() {
        let key = vec!["id".to_string()];
        let range = KeyRange {
            from: SelectFrom::Query("SELECT * FROM s WHERE r = ?1"),
            key: &key,
            after: Some(&[Value::Int(10)]),
            up_to: Some(&[Value::Int(20)]),
            only: None,
            since: None,
            params_before: 1,
            limit: Some(5),
        };
        let (sql, params) = Dialect::Sqlite.key_range_select(&range);
        assert_eq!(
            sql,
            "SELECT \"id\" FROM (\nSELECT * FROM s WHERE r = ?1\n) AS hubsync_src WHERE \"id\" IS NOT NULL \
             AND (\"id\") > (?2) AND (\"id\") <= (?3) ORDER BY \"id\" LIMIT 5"
        );
        assert_eq!(params, vec![Value::Int(10), Value::Int(20)]);
    }
}
