//! Pure SQL generation per dialect: quoting, placeholders, keyset SELECT and
//! idempotent upsert. No I/O happens here; every generator is
//! snapshot-tested below, so a change to generated SQL is a visible diff.
//!
//! Invariants:
//! - Identifiers from config are always quoted (`"name"` on PostgreSQL and
//!   SQLite, `` `name` `` on MySQL/MariaDB, inner quotes doubled), never
//!   spliced raw; values are always bound parameters.
//! - Keyset reads order by (cursor, primary key...) and resume strictly after
//!   a position, so rows sharing a cursor value can span batches.
//! - Upserts rewrite a row only when some non-key value differs, so applying
//!   the same batch twice writes nothing the second time.

pub mod keys;
pub mod params;
pub mod types;

use std::fmt::Write as _;

use crate::value::Value;

/// The SQL dialects hubsync speaks. A closed set: dispatch is a `match`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// PostgreSQL 12 or newer.
    Postgres,
    /// SQLite 3.35 or newer (row values, `UPSERT`, `RETURNING`).
    Sqlite,
    /// MySQL 8 or MariaDB 10.5 or newer (tested on MariaDB 10.11).
    MySql,
}

/// Where a keyset read takes its rows from.
#[derive(Clone, Copy, Debug)]
pub enum SelectFrom<'a> {
    /// A table name as written in config (`table` or `schema.table`).
    Table(&'a str),
    /// A user query, already rewritten by [`params::bind_site_placeholders`];
    /// it becomes a derived table.
    Query(&'a str),
}

/// A keyset-paged read: `SELECT cols FROM src WHERE cursor IS NOT NULL
/// [AND (order_by) > (params)] ORDER BY order_by [LIMIT limit]`.
#[derive(Clone, Debug)]
pub struct KeysetSelect<'a> {
    /// The source.
    pub from: SelectFrom<'a>,
    /// Columns to select by source name; `None` selects `*`.
    pub columns: Option<&'a [String]>,
    /// Columns of `columns` to read as text (`CAST("c" AS text) AS "c"`),
    /// for types the connector cannot decode; the target parses the text.
    pub text_columns: &'a [String],
    /// The keyset: cursor column first, then the primary key columns.
    pub order_by: &'a [String],
    /// The position to resume after (one value per `order_by` column, bound
    /// as parameters numbered from `first_param`); `None` reads from the start.
    pub after: Option<&'a [Value]>,
    /// Instead of `after`: read rows whose cursor is at or above this value
    /// (bound as parameter `first_param`), to re-read the late-commit overlap.
    pub from_cursor: Option<&'a Value>,
    /// Number of the first keyset parameter (1-based); earlier numbers
    /// belong to `:site.*` placeholders of a query.
    pub first_param: usize,
    /// Maximum rows returned; `None`: every row after the position (a
    /// streamed read).
    pub limit: Option<usize>,
    /// SQLite: the cursor is a date/time column whose values may be text,
    /// Julian-day REALs or unix-second INTEGERs, so it is ordered and
    /// compared by the instant each stands for (see
    /// [`Dialect::sqlite_instant`]), not by its storage; rows whose cursor
    /// is no date-time at all come first, so that the reader refuses them
    /// instead of skipping them. Ignored by other dialects.
    pub cursor_by_instant: bool,
}

/// An idempotent write of many rows into one table.
#[derive(Clone, Debug)]
pub struct UpsertSpec<'a> {
    /// Target table as written in config.
    pub table: &'a str,
    /// Target columns, in the order values are supplied.
    pub columns: &'a [String],
    /// For PostgreSQL, each column's type as `format_type()` spells it
    /// (`numeric(12,2)`, `timestamp with time zone`); values travel as text
    /// arrays and are cast to these. For MySQL, `COLUMN_TYPE` as
    /// `information_schema` spells it (`decimal(12,2)`, `datetime(6)`), used
    /// to refuse values the column would round or clip. Ignored by SQLite.
    pub column_types: &'a [String],
    /// Conflict key columns (a subset of `columns` with a unique index).
    pub key: &'a [String],
}

/// PostgreSQL types (as `StreamPlan` cast types spell them) that have no
/// `=` operator, so `IS DISTINCT FROM` cannot compare them directly; the
/// upsert compares their text forms instead.
const PG_TYPES_WITHOUT_EQUALITY: &[&str] = &[
    "pg_catalog.xml",
    "pg_catalog.point",
    "pg_catalog.line",
    "pg_catalog.lseg",
    "pg_catalog.box",
    "pg_catalog.path",
    "pg_catalog.polygon",
    "pg_catalog.circle",
];

impl Dialect {
    /// Lowercase name used in messages (`postgres`, `sqlite`).
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Postgres => "postgres",
            Dialect::Sqlite => "sqlite",
            Dialect::MySql => "mysql",
        }
    }

    /// Quotes one identifier: `order` -> `"order"`, `a"b` -> `"a""b"` on
    /// PostgreSQL and SQLite (the SQL standard double quote); `` `order` ``,
    /// `` a`b `` -> `` `a``b` `` on MySQL (backticks work whatever the
    /// server's `sql_mode`, unlike double quotes).
    pub fn quote_ident(self, name: &str) -> String {
        match self {
            Dialect::MySql => format!("`{}`", name.replace('`', "``")),
            Dialect::Postgres | Dialect::Sqlite => {
                format!("\"{}\"", name.replace('"', "\"\""))
            }
        }
    }

    /// Quotes a table name as written in config; `schema.table` is split at
    /// the first dot and each part quoted.
    pub fn quote_table(self, name: &str) -> String {
        match name.split_once('.') {
            Some((schema, table)) => {
                format!("{}.{}", self.quote_ident(schema), self.quote_ident(table))
            }
            None => self.quote_ident(name),
        }
    }

    /// The n-th (1-based) bound parameter: `$n` on PostgreSQL, `?n` on
    /// SQLite, `?` on MySQL (whose parameters are positional only: they are
    /// bound in the order they appear in the SQL text).
    pub fn placeholder(self, n: usize) -> String {
        match self {
            Dialect::Postgres => format!("${n}"),
            Dialect::Sqlite => format!("?{n}"),
            Dialect::MySql => "?".to_string(),
        }
    }

    /// A placeholder for `value`. PostgreSQL binds every parameter as text,
    /// so the placeholder carries a cast to the value's type (`$2::numeric`);
    /// SQLite compares bound values natively.
    pub fn typed_placeholder(self, n: usize, value: &Value) -> String {
        match self {
            Dialect::Postgres => {
                let pg_type = match value {
                    Value::Null | Value::Text(_) => "text",
                    Value::Bool(_) => "boolean",
                    Value::Int(_) => "bigint",
                    Value::Float(_) => "double precision",
                    Value::Numeric(_) => "numeric",
                    Value::Bytes(_) => "bytea",
                    Value::Date(_) => "date",
                    Value::Time(_) => "time",
                    Value::Timestamp(_) => "timestamp",
                    Value::TimestampTz(_) => "timestamptz",
                    Value::Json(_) => "jsonb",
                    Value::Uuid(_) => "uuid",
                };
                format!("${n}::{pg_type}")
            }
            Dialect::Sqlite => self.placeholder(n),
            // MySQL compares a string parameter with a DECIMAL column as
            // doubles; the cast keeps a 38-digit cursor exact.
            Dialect::MySql => match value {
                Value::Numeric(_) => "CAST(? AS DECIMAL(65,30))".to_string(),
                _ => "?".to_string(),
            },
        }
    }

    /// Most bound parameters one statement may carry: 65,535 for PostgreSQL
    /// (the wire protocol's 16-bit count), 32,766 for SQLite
    /// (`SQLITE_MAX_VARIABLE_NUMBER` since 3.32), 65,535 for MySQL (a
    /// prepared statement's 16-bit parameter count).
    pub fn max_bind_params(self) -> usize {
        match self {
            Dialect::Postgres | Dialect::MySql => 65_535,
            Dialect::Sqlite => 32_766,
        }
    }

    /// Most rows one upsert statement may carry for `column_count` columns.
    /// PostgreSQL binds one array per column, so only the batch bounds it.
    pub fn max_rows_per_upsert(self, column_count: usize) -> usize {
        match self {
            Dialect::Postgres => usize::MAX,
            Dialect::Sqlite | Dialect::MySql => {
                (self.max_bind_params() / column_count.max(1)).max(1)
            }
        }
    }

    /// SQL returning the source's clock, the start of its oldest open
    /// transaction in this database (other sessions; NULL if none or not
    /// visible to the login) and its snapshot as text (PostgreSQL's
    /// `pg_current_snapshot()`, NULL elsewhere), whether the login sees other
    /// logins' sessions (PostgreSQL: `pg_read_all_stats`, which superusers
    /// have; NULL elsewhere), or `None` where the dialect cannot tell
    /// (SQLite). Used for the late-commit floor (`crate::capture`).
    /// MySQL returns its UTC clock only (a `DATETIME(6)`; open transactions
    /// are in `information_schema.INNODB_TRX`, which needs the `PROCESS`
    /// privilege, so they are not consulted).
    pub fn visibility_sql(self) -> Option<&'static str> {
        match self {
            Dialect::Postgres => Some(
                // `pg_stat_activity`'s own function, without the view's joins
                // to `pg_database` and `pg_authid`: the same rows and the same
                // per-role visibility, but planning it on a new connection took
                // half the time (0.5-0.7 ms instead of 1.0-1.7 ms, measured),
                // paid by every site of a hub's first cycle.
                "SELECT statement_timestamp(), (SELECT min(s.xact_start) FROM pg_stat_get_activity(NULL) s \
                 WHERE s.datid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                 AND s.pid <> pg_backend_pid() AND s.backend_type = 'client backend' \
                 AND s.xact_start IS NOT NULL), pg_current_snapshot()::text, \
                 pg_has_role('pg_read_all_stats', 'USAGE')",
            ),
            Dialect::Sqlite => None,
            Dialect::MySql => Some("SELECT UTC_TIMESTAMP(6), NULL, NULL, NULL"),
        }
    }

    /// The type a column is cast to when it is read as text: `text`, or
    /// `CHAR` on MySQL (which has no `CAST(.. AS text)`).
    fn text_type(self) -> &'static str {
        match self {
            Dialect::MySql => "CHAR",
            Dialect::Postgres | Dialect::Sqlite => "text",
        }
    }

    /// The select list of a read: `*`, or the quoted columns with the
    /// text-read ones cast (`CAST("c" AS text) AS "c"`).
    fn select_list(self, spec: &KeysetSelect<'_>) -> String {
        match spec.columns {
            Some(columns) => columns
                .iter()
                .map(|c| {
                    let quoted = self.quote_ident(c);
                    if spec.text_columns.contains(c) {
                        format!("CAST({quoted} AS {}) AS {quoted}", self.text_type())
                    } else {
                        quoted
                    }
                })
                .collect::<Vec<_>>()
                .join(", "),
            None => "*".to_string(),
        }
    }

    /// SQLite: the instant `operand` (a column or a parameter) stands for,
    /// as a Julian day: `julianday()` reads text, and a number (INTEGER or
    /// REAL) with the `'auto'` modifier: a Julian day from 0 to below
    /// 5,373,484.5, unix seconds otherwise (SQLite 3.38+, "Date And Time
    /// Functions"; the same rule as `connector::sqlite::read_instant`).
    /// Text that spells a number is left to `julianday()` alone (hubsync
    /// refuses it). NULL for a value that is no date-time.
    pub fn sqlite_instant(operand: &str) -> String {
        format!(
            "(CASE WHEN typeof({operand}) IN ('integer', 'real') THEN julianday({operand}, 'auto') \
             ELSE julianday({operand}) END)"
        )
    }

    /// SQL for one keyset page (see [`KeysetSelect`]).
    pub fn keyset_select(self, spec: &KeysetSelect<'_>) -> String {
        let select_list = self.select_list(spec);
        let from = self.source_clause(spec.from);
        let cursor = self.quote_ident(&spec.order_by[0]);
        let by_instant = spec.cursor_by_instant && self == Dialect::Sqlite;
        // The cursor as ordered and compared, and the keyset with it.
        let (ordered, keyset) = if by_instant {
            let instant = Dialect::sqlite_instant(&cursor);
            let mut keyset = vec![instant.clone()];
            keyset.extend(spec.order_by[1..].iter().map(|c| self.quote_ident(c)));
            (instant, keyset.join(", "))
        } else {
            (cursor.clone(), self.ident_list(spec.order_by))
        };
        // Rows whose cursor is no date-time are read (first), to be refused.
        let or_not_instant = if by_instant {
            format!(" OR {ordered} IS NULL")
        } else {
            String::new()
        };
        let mut sql = format!("SELECT {select_list} FROM {from} WHERE {cursor} IS NOT NULL");
        if let Some(value) = spec.from_cursor {
            let mut bound = self.typed_placeholder(spec.first_param, value);
            if by_instant {
                bound = Dialect::sqlite_instant(&bound);
            }
            let _ = if by_instant {
                write!(sql, " AND ({ordered} >= {bound}{or_not_instant})")
            } else {
                write!(sql, " AND {ordered} >= {bound}")
            };
        } else if let Some(position) = spec.after {
            let mut placeholders: Vec<String> = position
                .iter()
                .enumerate()
                .map(|(i, value)| self.typed_placeholder(spec.first_param + i, value))
                .collect();
            if by_instant && let Some(first) = placeholders.first_mut() {
                *first = Dialect::sqlite_instant(first);
            }
            let _ = if by_instant {
                write!(
                    sql,
                    " AND (({keyset}) > ({}){or_not_instant})",
                    placeholders.join(", ")
                )
            } else {
                write!(sql, " AND ({keyset}) > ({})", placeholders.join(", "))
            };
        }
        let _ = write!(sql, " ORDER BY {keyset}");
        if let Some(limit) = spec.limit {
            let _ = write!(sql, " LIMIT {limit}");
        }
        sql
    }

    /// SQL reading every row whose cursor (`order_by[0]`) is NULL, ordered
    /// by the key (`order_by[1..]`): the rows a keyset read never returns.
    /// `after`, `from_cursor` and `limit` of `spec` are ignored.
    pub fn null_cursor_select(self, spec: &KeysetSelect<'_>) -> String {
        let order = if spec.order_by.len() > 1 {
            self.ident_list(&spec.order_by[1..])
        } else {
            self.quote_ident(&spec.order_by[0])
        };
        format!(
            "SELECT {} FROM {} WHERE {} IS NULL ORDER BY {order}",
            self.select_list(spec),
            self.source_clause(spec.from),
            self.quote_ident(&spec.order_by[0]),
        )
    }

    /// PostgreSQL, table sources only: SQL reading the rows written by
    /// transactions `seen` may not have seen (every id at or after its
    /// `xmin`: its in-progress transactions, their subtransactions, and all
    /// later ones; see `crate::capture`) whose cursor is below
    /// `spec.from_cursor` (bound as parameter `first_param`; rows at or
    /// above it are the cursor read's), in no particular order (the rows
    /// do not move the checkpoint; sorting them would tempt the planner
    /// into a full index scan).
    ///
    /// `xmin` is a 32-bit id that wraps, so it is compared by age, not by
    /// value: `age(xmin) <= age(xmax)` holds for ids at or after `xmax`
    /// (within 2^31 ids; a frozen row's age is the largest integer). The
    /// snapshot's 64-bit id is cut to its low 32 bits. Rows of transactions
    /// that had committed between `xmin` and `xmax` are read again too
    /// (the upsert leaves them unchanged). The transaction test comes first: it needs no column of the row, so most rows are
    /// dropped before their columns are read. Measured on a 1M-row table,
    /// about 2x cheaper than widening `xmin` to 64 bits through text (and
    /// it does not take parallel workers from the site). Sources: PostgreSQL
    /// manual, "System Columns" and "Transaction ID and Snapshot Information
    /// Functions" (`age(xid)`). `None` for other dialects, a query source,
    /// or no `from_cursor`.
    pub fn late_commit_select(
        self,
        spec: &KeysetSelect<'_>,
        seen: &crate::capture::Snapshot,
    ) -> Option<String> {
        let (Dialect::Postgres, SelectFrom::Table(table), Some(below)) =
            (self, spec.from, spec.from_cursor)
        else {
            return None;
        };
        // Every id below the snapshot's `xmin` had finished; anything at or
        // after it may not have been seen, subtransactions included (a
        // row's `xmin` is its subtransaction's id, which the snapshot's
        // in-progress list never holds; it is assigned after its parent's,
        // so it is at or after `xmin` too).
        let unseen = format!("age(xmin) <= age('{}'::xid)", seen.xmin % (1 << 32));
        let cursor = self.quote_ident(&spec.order_by[0]);
        Some(format!(
            "SELECT {} FROM {} WHERE ({unseen}) AND {cursor} IS NOT NULL AND {cursor} < {}",
            self.select_list(spec),
            self.quote_table(table),
            self.typed_placeholder(spec.first_param, below),
        ))
    }

    /// PostgreSQL: `COPY "table" ("c1", ...) FROM STDIN (FORMAT binary)`
    /// (or `text`), the statement of an initial load (see
    /// `connector/postgres.rs` `copy_in_on`).
    pub fn copy_in(self, table: &str, columns: &[String], binary: bool) -> String {
        format!(
            "COPY {} ({}) FROM STDIN (FORMAT {})",
            self.quote_table(table),
            self.ident_list(columns),
            if binary { "binary" } else { "text" }
        )
    }

    /// A plain multi-row insert of `rows` rows into `columns` of `table`
    /// with positional placeholders (`INSERT INTO t (a, b) VALUES (?, ?),
    /// (?, ?)` on MySQL, `?n` on SQLite, `$n` on PostgreSQL): an initial load's
    /// statement where the dialect has no COPY.
    pub fn insert_rows(self, table: &str, columns: &[String], rows: usize) -> String {
        use std::fmt::Write as _;
        // Written into one string: a 1,000-row statement has thousands of
        // placeholders, built once per statement.
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES ",
            self.quote_table(table),
            self.ident_list(columns)
        );
        let mut n = 0;
        for row in 0..rows {
            sql.push_str(if row == 0 { "(" } else { ", (" });
            for column in 0..columns.len() {
                n += 1;
                if column > 0 {
                    sql.push_str(", ");
                }
                match self {
                    Dialect::Postgres => write!(sql, "${n}").expect("writing to a String"),
                    Dialect::Sqlite => write!(sql, "?{n}").expect("writing to a String"),
                    Dialect::MySql => sql.push('?'),
                }
            }
            sql.push(')');
        }
        sql
    }

    /// SQL returning one row if `table` holds any row, none otherwise.
    pub fn any_row(self, table: &str) -> String {
        match self {
            Dialect::Postgres | Dialect::Sqlite | Dialect::MySql => {
                format!("SELECT 1 FROM {} LIMIT 1", self.quote_table(table))
            }
        }
    }

    /// SQL returning one row if `table` holds any row whose `column` is
    /// parameter 1 (a site's rows in a pull's master table), none otherwise.
    pub fn any_row_where(self, table: &str, column: &str) -> String {
        let limit = match self {
            Dialect::Postgres | Dialect::Sqlite | Dialect::MySql => "LIMIT 1",
        };
        format!(
            "SELECT 1 FROM {} WHERE {} = {} {limit}",
            self.quote_table(table),
            self.quote_ident(column),
            self.placeholder(1)
        )
    }

    /// SQL telling whether the login may SELECT, INSERT, UPDATE and DELETE
    /// rows of the table named by parameter 1 (its quoted name, see
    /// [`Dialect::quote_table`]): one row of four booleans (NULL when the
    /// table is not found). `None` where hubsync does not ask: MySQL (the
    /// grants are spread over several `information_schema` tables and roles)
    /// and SQLite (no privileges; the file's permissions decide).
    pub fn table_privileges_sql(self) -> Option<&'static str> {
        match self {
            Dialect::Postgres => Some(
                "SELECT has_table_privilege(to_regclass($1::text), 'SELECT'), \
                 has_table_privilege(to_regclass($1::text), 'INSERT'), \
                 has_table_privilege(to_regclass($1::text), 'UPDATE'), \
                 has_table_privilege(to_regclass($1::text), 'DELETE')",
            ),
            Dialect::MySql | Dialect::Sqlite => None,
        }
    }

    /// SQL counting the rows of `from` whose `column` is NULL (rows a
    /// keyset read on that cursor never returns).
    pub fn null_count(self, from: SelectFrom<'_>, column: &str) -> String {
        format!(
            "SELECT count(*) FROM {} WHERE {} IS NULL",
            self.source_clause(from),
            self.quote_ident(column)
        )
    }

    /// A table, or a query wrapped as a derived table.
    fn source_clause(self, from: SelectFrom<'_>) -> String {
        match from {
            SelectFrom::Table(table) => self.quote_table(table),
            // A trailing `;` (with comments after it) would end the statement
            // early; the newline before `)` ends any comment left inside.
            SelectFrom::Query(query) => format!(
                "(\n{}\n) AS hubsync_src",
                params::trim_statement_end(query, self)
            ),
        }
    }

    /// SQL for an upsert of `rows` rows (see [`UpsertSpec`]).
    ///
    /// PostgreSQL: `INSERT ... SELECT ... FROM UNNEST($1::text[], ...)` with a
    /// cast per column and `ON CONFLICT DO UPDATE ... WHERE (old) IS DISTINCT
    /// FROM (new)`; it always takes `columns.len()` parameters, whatever
    /// `rows` is. SQLite: a multi-row `VALUES` list with `rows *
    /// columns.len()` anonymous `?` parameters (bound in row order) and
    /// `WHERE old IS NOT new OR ...`.
    pub fn upsert(self, spec: &UpsertSpec<'_>, rows: usize) -> String {
        self.upsert_with_arrays(spec, rows, &[])
    }

    /// [`Dialect::upsert`], where on PostgreSQL parameter `n` is bound as an
    /// array of `array_types[n - 1]` (`int8`, `timestamptz`...: values sent
    /// in binary, nothing for the server to parse) instead of `text`;
    /// columns beyond `array_types` are text arrays.
    pub fn upsert_with_arrays(
        self,
        spec: &UpsertSpec<'_>,
        rows: usize,
        array_types: &[&str],
    ) -> String {
        match self {
            // No `ON CONFLICT` on MySQL: `ON DUPLICATE KEY UPDATE`.
            Dialect::MySql => return self.mysql_upsert(spec, rows, &[]),
            Dialect::Postgres | Dialect::Sqlite => {}
        }
        let table = self.quote_table(spec.table);
        let columns = self.ident_list(spec.columns);
        let key = self.ident_list(spec.key);
        let non_key: Vec<&String> = spec
            .columns
            .iter()
            .filter(|c| !spec.key.contains(c))
            .collect();
        let mut sql = format!("INSERT INTO {table} AS hubsync_t ({columns}) ");
        match self {
            Dialect::Postgres => {
                sql.push_str(&self.unnest_select(spec, array_types));
            }
            Dialect::Sqlite | Dialect::MySql => {
                // Anonymous `?` placeholders bound in order: SQLite resolves
                // a numbered `?NNN` by walking a list, which made binding
                // thousands of them quadratic (60% of a pull's CPU, measured).
                let tuple = format!("({})", vec!["?"; spec.columns.len()].join(", "));
                let tuples = vec![tuple; rows];
                let _ = write!(sql, "VALUES {}", tuples.join(", "));
            }
        }
        if non_key.is_empty() {
            let _ = write!(sql, " ON CONFLICT ({key}) DO NOTHING");
            return sql;
        }
        let sets: Vec<String> = non_key
            .iter()
            .map(|c| {
                let q = self.quote_ident(c);
                format!("{q} = excluded.{q}")
            })
            .collect();
        let _ = write!(
            sql,
            " ON CONFLICT ({key}) DO UPDATE SET {} WHERE ",
            sets.join(", ")
        );
        match self {
            Dialect::Postgres => {
                let _ = write!(
                    sql,
                    "({}) IS DISTINCT FROM ({})",
                    pg_compared(spec, &non_key, "hubsync_t"),
                    pg_compared(spec, &non_key, "excluded")
                );
            }
            Dialect::Sqlite | Dialect::MySql => {
                let differs: Vec<String> = non_key
                    .iter()
                    .map(|c| {
                        let q = self.quote_ident(c);
                        format!("hubsync_t.{q} IS NOT excluded.{q}")
                    })
                    .collect();
                sql.push_str(&differs.join(" OR "));
            }
        }
        sql
    }

    /// MySQL: `INSERT INTO t (cols) VALUES (?, ..), .. ON DUPLICATE KEY
    /// UPDATE c = VALUES(c), ..` with `rows * columns.len()` anonymous `?`
    /// parameters bound in row order. `VALUES(c)` works on MariaDB and MySQL
    /// 8 (which deprecates it in favour of a row alias MariaDB lacks). MySQL
    /// itself leaves a row whose values are all equal untouched, so applying a
    /// batch twice changes nothing. A key-only table gets a no-op update (not
    /// `INSERT IGNORE`, which would also turn bad values into warnings).
    /// Columns flagged in `json_by_meaning` (by position in `spec.columns`)
    /// keep their stored document when MariaDB's `JSON_EQUALS` finds the new
    /// one equal: `c = IF(JSON_EQUALS(c, VALUES(c)) <=> 1, c, VALUES(c))`.
    pub fn mysql_upsert(
        self,
        spec: &UpsertSpec<'_>,
        rows: usize,
        json_by_meaning: &[bool],
    ) -> String {
        let tuple = format!("({})", vec!["?"; spec.columns.len()].join(", "));
        let tuples = vec![tuple; rows];
        let non_key: Vec<&String> = spec
            .columns
            .iter()
            .filter(|c| !spec.key.contains(c))
            .collect();
        let updated: Vec<&String> = if non_key.is_empty() {
            spec.key.iter().take(1).collect()
        } else {
            non_key
        };
        let sets: Vec<String> = updated
            .iter()
            .map(|c| {
                let q = self.quote_ident(c);
                let json = spec
                    .columns
                    .iter()
                    .position(|x| x == *c)
                    .and_then(|i| json_by_meaning.get(i))
                    .copied()
                    .unwrap_or(false);
                if json {
                    format!("{q} = IF(JSON_EQUALS({q}, VALUES({q})) <=> 1, {q}, VALUES({q}))")
                } else {
                    format!("{q} = VALUES({q})")
                }
            })
            .collect();
        format!(
            "INSERT INTO {} ({}) VALUES {} ON DUPLICATE KEY UPDATE {}",
            self.quote_table(spec.table),
            self.ident_list(spec.columns),
            tuples.join(", "),
            sets.join(", ")
        )
    }

    /// SQL returning the `key` columns of the rows of `table` whose key
    /// equals one of `rows` key tuples (`rows * key.len()` anonymous
    /// parameters, in row order), compared as the table's collation does.
    /// MySQL only: it tells inserted rows from updated ones, which
    /// `ON DUPLICATE KEY UPDATE`'s affected-row count cannot, and shows
    /// target keys that a differently spelled source key would overwrite.
    pub fn existing_keys(self, table: &str, key: &[String], rows: usize) -> String {
        let tuple = format!("({})", vec!["?"; key.len()].join(", "));
        format!(
            "SELECT {} FROM {} WHERE ({}) IN ({})",
            self.ident_list(key),
            self.quote_table(table),
            self.ident_list(key),
            vec![tuple; rows].join(", ")
        )
    }

    /// MySQL: SQL finding two of `rows` key tuples that are equal under the
    /// given per-column collations (`Some((charset, collation))` for text
    /// columns, `None` compares as is). Parameters, per row: its index, then
    /// its key values. Returns one row (lowest index, highest index) of a
    /// merged group, or none. Charset and collation names come from the
    /// database catalog and must be plain identifiers (checked by the caller).
    pub fn merged_keys(self, collations: &[Option<(String, String)>], rows: usize) -> String {
        let columns: Vec<String> = (0..collations.len())
            .map(|i| format!("? AS hubsync_k{i}"))
            .collect();
        let first = format!("SELECT ? AS hubsync_n, {}", columns.join(", "));
        let rest = format!("SELECT ?{}", ", ?".repeat(collations.len()));
        let mut union = vec![first];
        union.extend(std::iter::repeat_n(rest, rows.saturating_sub(1)));
        let group: Vec<String> = collations
            .iter()
            .enumerate()
            .map(|(i, collation)| match collation {
                Some((charset, name)) => {
                    format!("CONVERT(hubsync_k{i} USING {charset}) COLLATE {name}")
                }
                None => format!("hubsync_k{i}"),
            })
            .collect();
        format!(
            "SELECT MIN(hubsync_n), MAX(hubsync_n) FROM ({}) AS hubsync_b GROUP BY {} HAVING COUNT(*) > 1 LIMIT 1",
            union.join(" UNION ALL "),
            group.join(", ")
        )
    }

    /// `"a", "b"`: a quoted, comma-separated identifier list.
    /// PostgreSQL: `SELECT CAST(hubsync_u."c" AS type), .. FROM UNNEST($1::text[], ..)
    /// AS hubsync_u("c", ..)`: the rows of `spec.columns`, one text-array
    /// parameter per column, each value cast to its column's type.
    /// PostgreSQL: how many of the rows bound as for [`Dialect::upsert`]
    /// (one text array per column) the upsert would insert or change:
    /// `SELECT count(*)` of the same cast rows left-joined to the table on
    /// the conflict key, where the key is missing or the non-key columns are
    /// `IS DISTINCT FROM` the stored ones, compared exactly as the upsert's
    /// `WHERE` compares them. A read: zero means the upsert can be skipped.
    pub fn pg_changed_rows(self, spec: &UpsertSpec<'_>) -> String {
        let non_key: Vec<&String> = spec
            .columns
            .iter()
            .filter(|c| !spec.key.contains(c))
            .collect();
        let join: Vec<String> = spec
            .key
            .iter()
            .map(|k| {
                let q = self.quote_ident(k);
                format!("hubsync_t.{q} = hubsync_n.{q}")
            })
            .collect();
        let first_key = self.quote_ident(&spec.key[0]);
        let mut sql = format!(
            "SELECT count(*) FROM ({}) AS hubsync_n({}) LEFT JOIN {} AS hubsync_t ON {} \
             WHERE hubsync_t.{first_key} IS NULL",
            self.unnest_select(spec, &[]),
            self.ident_list(spec.columns),
            self.quote_table(spec.table),
            join.join(" AND "),
        );
        if !non_key.is_empty() {
            let _ = write!(
                sql,
                " OR ({}) IS DISTINCT FROM ({})",
                pg_compared(spec, &non_key, "hubsync_t"),
                pg_compared(spec, &non_key, "hubsync_n")
            );
        }
        sql
    }

    fn unnest_select(self, spec: &UpsertSpec<'_>, array_types: &[&str]) -> String {
        let casts: Vec<String> = spec
            .columns
            .iter()
            .zip(spec.column_types)
            .map(|(c, t)| format!("CAST(hubsync_u.{} AS {t})", self.quote_ident(c)))
            .collect();
        let arrays: Vec<String> = (1..=spec.columns.len())
            .map(|n| format!("${n}::{}[]", array_types.get(n - 1).unwrap_or(&"text")))
            .collect();
        format!(
            "SELECT {} FROM UNNEST({}) AS hubsync_u({})",
            casts.join(", "),
            arrays.join(", "),
            self.ident_list(spec.columns)
        )
    }

    fn ident_list(self, names: &[String]) -> String {
        names
            .iter()
            .map(|n| self.quote_ident(n))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The non-key columns of `spec` as the PostgreSQL upsert compares them
/// under table alias `prefix`: json has no equality operator (compared as
/// jsonb, by meaning); xml and the geometric types compare as text.
fn pg_compared(spec: &UpsertSpec<'_>, non_key: &[&String], prefix: &str) -> String {
    non_key
        .iter()
        .map(|c| {
            let q = format!("{prefix}.{}", Dialect::Postgres.quote_ident(c));
            let ty = spec
                .columns
                .iter()
                .position(|x| x == *c)
                .and_then(|i| spec.column_types.get(i))
                .map(String::as_str);
            match ty {
                Some("json" | "pg_catalog.json") => format!("{q}::jsonb"),
                Some(t) if PG_TYPES_WITHOUT_EQUALITY.contains(&t) => format!("{q}::text"),
                _ => q,
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn quoting_doubles_inner_quotes_and_splits_schema() {
        let d = Dialect::Postgres;
        assert_eq!(d.quote_ident("order"), "\"order\"");
        assert_eq!(d.quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(d.quote_table("pos.Sales Lines"), "\"pos\".\"Sales Lines\"");
    }

    #[test]
    fn keyset_first_page_and_resume() {
        let order = strings(&["updated_at", "id"]);
        let first = Dialect::Postgres.keyset_select(&KeysetSelect {
            from: SelectFrom::Table("sales"),
            columns: None,
            text_columns: &[],
            order_by: &order,
            after: None,
            from_cursor: None,
            first_param: 1,
            limit: Some(500),
            cursor_by_instant: false,
        });
        assert_eq!(
            first,
            "SELECT * FROM \"sales\" WHERE \"updated_at\" IS NOT NULL \
             ORDER BY \"updated_at\", \"id\" LIMIT 500"
        );
        let cols = strings(&["id", "qty", "updated_at"]);
        let resume = Dialect::Sqlite.keyset_select(&KeysetSelect {
            from: SelectFrom::Query("SELECT * FROM v WHERE z = ?1 -- zone\n;\n"),
            columns: Some(&cols),
            text_columns: &[],
            order_by: &order,
            after: Some(&[Value::Text("t".into()), Value::Int(1)]),
            from_cursor: None,
            first_param: 2,
            limit: Some(10),
            cursor_by_instant: false,
        });
        assert_eq!(
            resume,
            "SELECT \"id\", \"qty\", \"updated_at\" FROM (\nSELECT * FROM v WHERE z = ?1\n) AS hubsync_src \
             WHERE \"updated_at\" IS NOT NULL AND (\"updated_at\", \"id\") > (?2, ?3) \
             ORDER BY \"updated_at\", \"id\" LIMIT 10"
        );
    }

    #[test]
    fn postgres_keyset_casts_text_parameters() {
        let order = strings(&["updated_at", "id"]);
        let position = [Value::Numeric("1.5".into()), Value::Int(7)];
        let sql = Dialect::Postgres.keyset_select(&KeysetSelect {
            from: SelectFrom::Table("s.t"),
            columns: None,
            text_columns: &[],
            order_by: &order,
            after: Some(&position),
            from_cursor: None,
            first_param: 1,
            limit: Some(3),
            cursor_by_instant: false,
        });
        assert!(sql.contains("> ($1::numeric, $2::bigint)"), "{sql}");
    }

    #[test]
    fn overlap_reads_start_at_a_cursor_value() {
        let order = strings(&["updated_at", "id"]);
        let resume = Value::Timestamp(chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap().into());
        let sql = Dialect::Postgres.keyset_select(&KeysetSelect {
            from: SelectFrom::Table("sales"),
            columns: None,
            text_columns: &[],
            order_by: &order,
            after: None,
            from_cursor: Some(&resume),
            first_param: 1,
            limit: Some(5),
            cursor_by_instant: false,
        });
        assert_eq!(
            sql,
            "SELECT * FROM \"sales\" WHERE \"updated_at\" IS NOT NULL AND \"updated_at\" >= $1::timestamp \
             ORDER BY \"updated_at\", \"id\" LIMIT 5"
        );
    }

    #[test]
    fn late_commits_are_read_by_transaction_age_from_the_snapshot_xmin() {
        let order = strings(&["updated_at", "id"]);
        let resume =
            Value::TimestampTz(chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap());
        let spec = KeysetSelect {
            from: SelectFrom::Table("sales"),
            columns: None,
            text_columns: &[],
            order_by: &order,
            after: None,
            from_cursor: Some(&resume),
            first_param: 1,
            limit: None,
            cursor_by_instant: false,
        };
        // Epoch 1: 64-bit ids cut to their low 32 bits (2^32 + 748 -> 748).
        let seen = crate::capture::Snapshot {
            xmin: (1 << 32) + 748,
            xmax: (1 << 32) + 752,
            xip: vec![(1 << 32) + 748, (1 << 32) + 750],
        };
        assert_eq!(
            Dialect::Postgres.late_commit_select(&spec, &seen).unwrap(),
            "SELECT * FROM \"sales\" WHERE (age(xmin) <= age('748'::xid)) \
             AND \"updated_at\" IS NOT NULL AND \"updated_at\" < $1::timestamptz"
        );
        let idle = crate::capture::Snapshot {
            xmin: 9,
            xmax: 9,
            xip: Vec::new(),
        };
        assert_eq!(
            Dialect::Postgres.late_commit_select(&spec, &idle).unwrap(),
            "SELECT * FROM \"sales\" WHERE (age(xmin) <= age('9'::xid)) \
             AND \"updated_at\" IS NOT NULL AND \"updated_at\" < $1::timestamptz"
        );
        // Only PostgreSQL tables, and only once there is a cursor to stay below.
        assert_eq!(Dialect::MySql.late_commit_select(&spec, &idle), None);
        let query = KeysetSelect {
            from: SelectFrom::Query("SELECT 1"),
            ..spec
        };
        assert_eq!(Dialect::Postgres.late_commit_select(&query, &idle), None);
    }

    #[test]
    fn a_sqlite_date_time_cursor_is_ordered_and_compared_by_instant() {
        let order = strings(&["updated_at", "id"]);
        let resume = Value::Text("2026-11-29T09:59:55".into());
        let mut spec = KeysetSelect {
            from: SelectFrom::Table("sales"),
            columns: None,
            text_columns: &[],
            order_by: &order,
            after: None,
            from_cursor: Some(&resume),
            first_param: 1,
            limit: None,
            cursor_by_instant: true,
        };
        let instant = |operand: &str| {
            format!(
                "(CASE WHEN typeof({operand}) IN ('integer', 'real') THEN julianday({operand}, 'auto') \
                 ELSE julianday({operand}) END)"
            )
        };
        let cursor = instant("\"updated_at\"");
        assert_eq!(
            Dialect::Sqlite.keyset_select(&spec),
            format!(
                "SELECT * FROM \"sales\" WHERE \"updated_at\" IS NOT NULL AND ({cursor} >= {} OR {cursor} IS NULL) \
                 ORDER BY {cursor}, \"id\"",
                instant("?1")
            )
        );
        let position = [Value::Int(1_795_960_800), Value::Int(4)];
        spec.from_cursor = None;
        spec.after = Some(&position);
        assert_eq!(
            Dialect::Sqlite.keyset_select(&spec),
            format!(
                "SELECT * FROM \"sales\" WHERE \"updated_at\" IS NOT NULL AND (({cursor}, \"id\") > ({}, ?2) \
                 OR {cursor} IS NULL) ORDER BY {cursor}, \"id\"",
                instant("?1")
            )
        );
        // Other dialects order by the column as it is.
        assert_eq!(
            Dialect::Postgres.keyset_select(&spec),
            "SELECT * FROM \"sales\" WHERE \"updated_at\" IS NOT NULL AND (\"updated_at\", \"id\") > ($1::bigint, $2::bigint) \
             ORDER BY \"updated_at\", \"id\""
        );
    }

    #[test]
    fn postgres_upsert_unnests_text_arrays_and_skips_unchanged_rows() {
        let columns = strings(&["store_id", "id", "price", "doc"]);
        let types = strings(&["text", "bigint", "numeric(12,2)", "json"]);
        let key = strings(&["store_id", "id"]);
        let sql = Dialect::Postgres.upsert(
            &UpsertSpec {
                table: "sales",
                columns: &columns,
                column_types: &types,
                key: &key,
            },
            1000,
        );
        assert_eq!(
            sql,
            "INSERT INTO \"sales\" AS hubsync_t (\"store_id\", \"id\", \"price\", \"doc\") \
             SELECT CAST(hubsync_u.\"store_id\" AS text), CAST(hubsync_u.\"id\" AS bigint), \
             CAST(hubsync_u.\"price\" AS numeric(12,2)), CAST(hubsync_u.\"doc\" AS json) \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) \
             AS hubsync_u(\"store_id\", \"id\", \"price\", \"doc\") \
             ON CONFLICT (\"store_id\", \"id\") DO UPDATE SET \"price\" = excluded.\"price\", \
             \"doc\" = excluded.\"doc\" WHERE (hubsync_t.\"price\", hubsync_t.\"doc\"::jsonb) \
             IS DISTINCT FROM (excluded.\"price\", excluded.\"doc\"::jsonb)"
        );
    }

    #[test]
    fn postgres_upsert_binds_typed_arrays_where_told() {
        let columns = strings(&["id", "sold_at", "sku"]);
        let types = strings(&[
            "pg_catalog.int4",
            "pg_catalog.timestamptz",
            "pg_catalog.text",
        ]);
        let key = strings(&["id"]);
        let sql = Dialect::Postgres.upsert_with_arrays(
            &UpsertSpec {
                table: "sales",
                columns: &columns,
                column_types: &types,
                key: &key,
            },
            10,
            &["int8", "timestamptz"],
        );
        assert!(
            sql.contains(
                "SELECT CAST(hubsync_u.\"id\" AS pg_catalog.int4), CAST(hubsync_u.\"sold_at\" AS pg_catalog.timestamptz), \
                 CAST(hubsync_u.\"sku\" AS pg_catalog.text) FROM UNNEST($1::int8[], $2::timestamptz[], $3::text[])"
            ),
            "{sql}"
        );
    }

    #[test]
    fn postgres_changed_rows_compares_as_the_upsert_does() {
        let columns = strings(&["store_id", "id", "price", "doc"]);
        let types = strings(&["text", "bigint", "numeric(12,2)", "json"]);
        let key = strings(&["store_id", "id"]);
        let spec = UpsertSpec {
            table: "sales",
            columns: &columns,
            column_types: &types,
            key: &key,
        };
        assert_eq!(
            Dialect::Postgres.pg_changed_rows(&spec),
            "SELECT count(*) FROM (SELECT CAST(hubsync_u.\"store_id\" AS text), CAST(hubsync_u.\"id\" AS bigint), \
             CAST(hubsync_u.\"price\" AS numeric(12,2)), CAST(hubsync_u.\"doc\" AS json) \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) \
             AS hubsync_u(\"store_id\", \"id\", \"price\", \"doc\")) \
             AS hubsync_n(\"store_id\", \"id\", \"price\", \"doc\") \
             LEFT JOIN \"sales\" AS hubsync_t ON hubsync_t.\"store_id\" = hubsync_n.\"store_id\" \
             AND hubsync_t.\"id\" = hubsync_n.\"id\" WHERE hubsync_t.\"store_id\" IS NULL \
             OR (hubsync_t.\"price\", hubsync_t.\"doc\"::jsonb) IS DISTINCT FROM (hubsync_n.\"price\", hubsync_n.\"doc\"::jsonb)"
        );
        // A key-only table: only missing keys are changes.
        let key_only = UpsertSpec {
            table: "tags",
            columns: &key,
            column_types: &types[..2],
            key: &key,
        };
        assert!(
            Dialect::Postgres
                .pg_changed_rows(&key_only)
                .ends_with("WHERE hubsync_t.\"store_id\" IS NULL")
        );
    }

    #[test]
    fn sqlite_upsert_numbers_every_value() {
        let columns = strings(&["sku", "price"]);
        let key = strings(&["sku"]);
        let sql = Dialect::Sqlite.upsert(
            &UpsertSpec {
                table: "prices",
                columns: &columns,
                column_types: &[],
                key: &key,
            },
            2,
        );
        assert_eq!(
            sql,
            "INSERT INTO \"prices\" AS hubsync_t (\"sku\", \"price\") VALUES (?, ?), (?, ?) \
             ON CONFLICT (\"sku\") DO UPDATE SET \"price\" = excluded.\"price\" \
             WHERE hubsync_t.\"price\" IS NOT excluded.\"price\""
        );
    }

    #[test]
    fn key_only_tables_do_nothing_on_conflict() {
        let columns = strings(&["a", "b"]);
        let sql = Dialect::Sqlite.upsert(
            &UpsertSpec {
                table: "t",
                columns: &columns,
                column_types: &[],
                key: &columns,
            },
            1,
        );
        assert!(
            sql.ends_with("ON CONFLICT (\"a\", \"b\") DO NOTHING"),
            "{sql}"
        );
    }

    #[test]
    fn mysql_quotes_with_backticks_and_binds_positionally() {
        let d = Dialect::MySql;
        assert_eq!(d.quote_ident("order"), "`order`");
        assert_eq!(d.quote_ident("a`b"), "`a``b`");
        assert_eq!(d.quote_table("pos.Sales Lines"), "`pos`.`Sales Lines`");
        let order = strings(&["updated_at", "id"]);
        let position = [Value::Numeric("1.5".into()), Value::Int(7)];
        let columns = strings(&["id", "big"]);
        let sql = d.keyset_select(&KeysetSelect {
            from: SelectFrom::Table("sales"),
            columns: Some(&columns),
            text_columns: &strings(&["big"]),
            order_by: &order,
            after: Some(&position),
            from_cursor: None,
            first_param: 1,
            limit: Some(3),
            cursor_by_instant: false,
        });
        assert_eq!(
            sql,
            "SELECT `id`, CAST(`big` AS CHAR) AS `big` FROM `sales` WHERE `updated_at` IS NOT NULL \
             AND (`updated_at`, `id`) > (CAST(? AS DECIMAL(65,30)), ?) ORDER BY `updated_at`, `id` LIMIT 3"
        );
    }

    #[test]
    fn insert_rows_lists_one_tuple_per_row() {
        let columns = strings(&["sku", "price"]);
        assert_eq!(
            Dialect::MySql.insert_rows("prices", &columns, 2),
            "INSERT INTO `prices` (`sku`, `price`) VALUES (?, ?), (?, ?)"
        );
        assert_eq!(
            Dialect::Postgres.insert_rows("prices", &columns, 2),
            "INSERT INTO \"prices\" (\"sku\", \"price\") VALUES ($1, $2), ($3, $4)"
        );
    }

    #[test]
    fn mysql_upsert_updates_on_duplicate_key() {
        let columns = strings(&["store_id", "id", "price"]);
        let key = strings(&["store_id", "id"]);
        let spec = UpsertSpec {
            table: "sales",
            columns: &columns,
            column_types: &[],
            key: &key,
        };
        assert_eq!(
            Dialect::MySql.upsert(&spec, 2),
            "INSERT INTO `sales` (`store_id`, `id`, `price`) VALUES (?, ?, ?), (?, ?, ?) \
             ON DUPLICATE KEY UPDATE `price` = VALUES(`price`)"
        );
        let key_only = UpsertSpec {
            table: "t",
            columns: &key,
            column_types: &[],
            key: &key,
        };
        assert_eq!(
            Dialect::MySql.upsert(&key_only, 1),
            "INSERT INTO `t` (`store_id`, `id`) VALUES (?, ?) ON DUPLICATE KEY UPDATE `store_id` = VALUES(`store_id`)"
        );
        let with_json = strings(&["id", "doc"]);
        let json_spec = UpsertSpec {
            table: "t",
            columns: &with_json,
            column_types: &[],
            key: &with_json[..1],
        };
        assert_eq!(
            Dialect::MySql.mysql_upsert(&json_spec, 1, &[false, true]),
            "INSERT INTO `t` (`id`, `doc`) VALUES (?, ?) ON DUPLICATE KEY UPDATE \
             `doc` = IF(JSON_EQUALS(`doc`, VALUES(`doc`)) <=> 1, `doc`, VALUES(`doc`))"
        );
        assert_eq!(
            Dialect::MySql.existing_keys("sales", &key, 2),
            "SELECT `store_id`, `id` FROM `sales` WHERE (`store_id`, `id`) IN ((?, ?), (?, ?))"
        );
        let collations = [
            Some(("utf8mb4".to_string(), "utf8mb4_unicode_ci".to_string())),
            None,
        ];
        assert_eq!(
            Dialect::MySql.merged_keys(&collations, 2),
            "SELECT MIN(hubsync_n), MAX(hubsync_n) FROM (SELECT ? AS hubsync_n, ? AS hubsync_k0, ? AS hubsync_k1 \
             UNION ALL SELECT ?, ?, ?) AS hubsync_b GROUP BY CONVERT(hubsync_k0 USING utf8mb4) COLLATE \
             utf8mb4_unicode_ci, hubsync_k1 HAVING COUNT(*) > 1 LIMIT 1"
        );
    }

    #[test]
    fn bind_limits_cap_sqlite_statements() {
        assert_eq!(Dialect::Sqlite.max_rows_per_upsert(7), 4680);
        assert_eq!(Dialect::Postgres.max_rows_per_upsert(7), usize::MAX);
    }
}
