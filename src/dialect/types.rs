//! The type map per dialect (pure, no I/O): what logical type (see
//! `docs/types.md`) a source or target column holds, which pairs cannot
//! carry values (the schema check of a run and of `hubsync check`), and the
//! DDL of a target table made from a source's columns (`create_target`).
//!
//! Source types are the names `Connector::describe_query` reports (sqlx's
//! names on PostgreSQL, `connector/mysql.rs` `type_name` on MySQL, declared
//! types on SQLite); target types are `describe_table`'s `data_type`
//! (`format_type()`, MySQL `COLUMN_TYPE`, SQLite declared types).

use super::Dialect;

/// The logical types of `docs/types.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logical {
    /// Boolean.
    Bool,
    /// 16-bit integer.
    Int16,
    /// 32-bit integer.
    Int32,
    /// 64-bit integer.
    Int64,
    /// Exact decimal.
    Decimal,
    /// Floating point.
    Float,
    /// Unicode text.
    Text,
    /// Bytes.
    Bytes,
    /// Calendar date.
    Date,
    /// Time of day.
    Time,
    /// Date-time without zone.
    Timestamp,
    /// Instant.
    TimestampTz,
    /// JSON document.
    Json,
    /// UUID.
    Uuid,
    /// Anything else (carried as text; the target parses it).
    Other,
}

impl Logical {
    fn is_number(self) -> bool {
        matches!(
            self,
            Logical::Bool
                | Logical::Int16
                | Logical::Int32
                | Logical::Int64
                | Logical::Decimal
                | Logical::Float
        )
    }

    fn is_temporal(self) -> bool {
        matches!(
            self,
            Logical::Date | Logical::Time | Logical::Timestamp | Logical::TimestampTz
        )
    }
}

/// The numbers between the first parentheses of a declared column type,
/// as catalogs spell it: `numeric(14,4)` -> [14, 4], `varchar(8)` -> [8],
/// `datetime(6)` -> [6], `integer` -> []. Used by the PostgreSQL and MySQL
/// value checks and by `hubsync check`'s narrowing warnings.
pub fn type_modifiers(column_type: &str) -> Vec<u32> {
    column_type
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(inside, _)| {
            inside
                .split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The logical type of a source column from its reported type name.
pub fn source_logical(dialect: Dialect, type_name: &str) -> Logical {
    let upper = type_name.to_ascii_uppercase();
    match dialect {
        Dialect::Postgres => match upper.as_str() {
            "BOOL" => Logical::Bool,
            "INT2" => Logical::Int16,
            "INT4" | "OID" => Logical::Int32,
            "INT8" => Logical::Int64,
            "NUMERIC" => Logical::Decimal,
            "FLOAT4" | "FLOAT8" => Logical::Float,
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" => Logical::Text,
            "BYTEA" => Logical::Bytes,
            "DATE" => Logical::Date,
            "TIME" => Logical::Time,
            "TIMESTAMP" => Logical::Timestamp,
            "TIMESTAMPTZ" => Logical::TimestampTz,
            "JSON" | "JSONB" => Logical::Json,
            "UUID" => Logical::Uuid,
            _ => Logical::Other,
        },
        Dialect::MySql => match upper.as_str() {
            // TINYINT(1) holds -128..127: a small integer, not a boolean.
            "TINYINT(1)" | "TINYINT" | "SMALLINT" | "TINYINT UNSIGNED" | "YEAR" => Logical::Int16,
            "MEDIUMINT" | "INT" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" => Logical::Int32,
            "BIGINT" | "INT UNSIGNED" | "BIT" => Logical::Int64,
            "BIGINT UNSIGNED" | "DECIMAL" => Logical::Decimal,
            "FLOAT" | "DOUBLE" => Logical::Float,
            "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM"
            | "SET" => Logical::Text,
            "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB"
            | "GEOMETRY" => Logical::Bytes,
            "DATE" => Logical::Date,
            "TIME" => Logical::Time,
            "DATETIME" => Logical::Timestamp,
            "TIMESTAMP" => Logical::TimestampTz,
            "JSON" => Logical::Json,
            _ => Logical::Other,
        },
        // SQLite values carry their storage class: only these are certain.
        Dialect::Sqlite => match upper.as_str() {
            "BOOLEAN" => Logical::Bool,
            "INTEGER" | "INT8" => Logical::Int64,
            "REAL" => Logical::Float,
            "BLOB" => Logical::Bytes,
            _ => Logical::Text,
        },
    }
}

/// The logical type of a target column from its declared type; `Other`
/// where the type accepts many kinds (SQLite, unknown types).
pub fn target_logical(dialect: Dialect, data_type: &str) -> Logical {
    let lower = data_type.to_ascii_lowercase();
    let base = lower.split(['(', ' ']).next().unwrap_or_default();
    match dialect {
        Dialect::Postgres => match base {
            "boolean" => Logical::Bool,
            "smallint" => Logical::Int16,
            "integer" => Logical::Int32,
            "bigint" => Logical::Int64,
            "numeric" => Logical::Decimal,
            "real" | "double" => Logical::Float,
            "text" | "character" => Logical::Text,
            "bytea" => Logical::Bytes,
            "date" => Logical::Date,
            "time" if lower.contains("without") || !lower.contains("with") => Logical::Time,
            "timestamp" if lower.contains("with time zone") && !lower.contains("without") => {
                Logical::TimestampTz
            }
            "timestamp" => Logical::Timestamp,
            "json" | "jsonb" => Logical::Json,
            "uuid" => Logical::Uuid,
            _ => Logical::Other,
        },
        Dialect::MySql => match base {
            "tinyint" | "smallint" | "year" => Logical::Int16,
            "mediumint" | "int" | "integer" => Logical::Int32,
            "bigint" | "bit" => Logical::Int64,
            "decimal" | "numeric" => Logical::Decimal,
            "float" | "double" | "real" => Logical::Float,
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum"
            | "set" => Logical::Text,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
                Logical::Bytes
            }
            "date" => Logical::Date,
            "time" => Logical::Time,
            "datetime" => Logical::Timestamp,
            "timestamp" => Logical::TimestampTz,
            "json" => Logical::Json,
            _ => Logical::Other,
        },
        Dialect::Sqlite => match base {
            "blob" => Logical::Bytes,
            _ => Logical::Other,
        },
    }
}

/// Why values of `source` cannot go to a column of `target` (a problem:
/// `check` reports it and the run stops before reading), or `None`.
/// Text and unknown types are never refused here: the target parses each
/// value and refuses bad ones itself.
pub fn incompatibility(source: Logical, target: Logical) -> Option<&'static str> {
    use Logical::*;
    if matches!(source, Text | Other) || target == Other {
        return None;
    }
    match (source, target) {
        // Into text, bytes would arrive as `\x..` hex (PostgreSQL) or be
        // refused as invalid UTF-8 (MySQL): never the same value.
        (Bytes, t) if t != Bytes => {
            Some("bytes can only be written to a bytes column (`bytea`, `BLOB`)")
        }
        (s, Bytes) if s != Bytes => Some("only bytes (or text) can be written to a bytes column"),
        (s, t) if s.is_number() && (t.is_temporal() || t == Uuid) => {
            Some("a number cannot become a date, time or UUID")
        }
        (s, t) if s.is_temporal() && (t.is_number() || t == Uuid || t == Json) => {
            Some("a date or time cannot become a number, UUID or JSON")
        }
        (Timestamp | TimestampTz, Date) => Some("the time of day would be dropped"),
        (Date, Time) | (Time, Date | Timestamp | TimestampTz) => {
            Some("a date and a time of day are different things")
        }
        (Uuid, t) if !matches!(t, Uuid | Text) => {
            Some("a UUID can only go to a UUID or text column")
        }
        _ => None,
    }
}

/// The column type `create_target` uses for `logical` in `dialect`; key
/// columns get an indexable type on MySQL (`VARCHAR(191)`, `VARBINARY(255)`).
pub fn column_type(dialect: Dialect, logical: Logical, is_key: bool) -> &'static str {
    use Logical::*;
    match dialect {
        Dialect::Postgres => match logical {
            Bool => "boolean",
            Int16 => "smallint",
            Int32 => "integer",
            Int64 => "bigint",
            Decimal => "numeric",
            Float => "double precision",
            Text | Other => "text",
            Bytes => "bytea",
            Date => "date",
            Time => "time",
            Timestamp => "timestamp",
            TimestampTz => "timestamptz",
            Json => "jsonb",
            Uuid => "uuid",
        },
        Dialect::MySql => match logical {
            Bool => "TINYINT(1)",
            Int16 => "SMALLINT",
            Int32 => "INT",
            Int64 => "BIGINT",
            Decimal => "DECIMAL(65,30)",
            Float => "DOUBLE",
            Text | Other if is_key => "VARCHAR(191)",
            Text | Other => "LONGTEXT",
            Bytes if is_key => "VARBINARY(255)",
            Bytes => "LONGBLOB",
            Date => "DATE",
            Time => "TIME(6)",
            Timestamp => "DATETIME(6)",
            // Not TIMESTAMP: it ends in 2038. Instants are stored as their
            // UTC reading (the session is UTC).
            TimestampTz => "DATETIME(6)",
            Json => "JSON",
            Uuid => "CHAR(36)",
        },
        // The SQLite storage rule (`connector/sqlite.rs`).
        Dialect::Sqlite => match logical {
            Bool => "BOOLEAN",
            Int16 | Int32 | Int64 => "INTEGER",
            Float => "REAL",
            Bytes => "BLOB",
            _ => "TEXT",
        },
    }
}

/// `CREATE TABLE IF NOT EXISTS` for `table` with `columns` (name, logical
/// type), `NOT NULL` key columns and a primary key on `key`.
pub fn create_table_sql(
    dialect: Dialect,
    table: &str,
    columns: &[(String, Logical)],
    key: &[String],
) -> String {
    let mut parts: Vec<String> = columns
        .iter()
        .map(|(name, logical)| {
            let is_key = key.contains(name);
            format!(
                "{} {}{}",
                dialect.quote_ident(name),
                column_type(dialect, *logical, is_key),
                if is_key { " NOT NULL" } else { "" }
            )
        })
        .collect();
    let key_list: Vec<String> = key.iter().map(|k| dialect.quote_ident(k)).collect();
    parts.push(format!("PRIMARY KEY ({})", key_list.join(", ")));
    let options = if dialect == Dialect::MySql {
        " DEFAULT CHARSET=utf8mb4"
    } else {
        ""
    };
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({}){options}",
        dialect.quote_table(table),
        parts.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_tinyint1_is_a_small_integer_and_timestamp_an_instant() {
        assert_eq!(source_logical(Dialect::MySql, "TINYINT(1)"), Logical::Int16);
        assert_eq!(
            source_logical(Dialect::MySql, "TIMESTAMP"),
            Logical::TimestampTz
        );
        assert_eq!(
            target_logical(Dialect::MySql, "timestamp(6)"),
            Logical::TimestampTz
        );
        assert_eq!(
            target_logical(Dialect::Postgres, "timestamp(3) without time zone"),
            Logical::Timestamp
        );
        assert_eq!(
            target_logical(Dialect::Postgres, "time without time zone"),
            Logical::Time
        );
    }

    #[test]
    fn incompatible_pairs_are_named() {
        assert_eq!(
            incompatibility(Logical::Int32, Logical::Date),
            Some("a number cannot become a date, time or UUID")
        );
        assert_eq!(
            incompatibility(Logical::TimestampTz, Logical::Date),
            Some("the time of day would be dropped")
        );
        assert_eq!(incompatibility(Logical::Text, Logical::Date), None);
        assert_eq!(incompatibility(Logical::Int16, Logical::Bool), None);
        assert_eq!(incompatibility(Logical::Decimal, Logical::Float), None);
        assert_eq!(incompatibility(Logical::Uuid, Logical::Text), None);
        assert!(incompatibility(Logical::Uuid, Logical::Int64).is_some());
    }

    #[test]
    fn created_tables_follow_each_dialect_s_rules() {
        let columns = vec![
            ("site".to_string(), Logical::Text),
            ("id".to_string(), Logical::Int64),
            ("price".to_string(), Logical::Decimal),
            ("sold_at".to_string(), Logical::TimestampTz),
        ];
        let key = vec!["site".to_string(), "id".to_string()];
        assert_eq!(
            create_table_sql(Dialect::MySql, "sales", &columns, &key),
            "CREATE TABLE IF NOT EXISTS `sales` (`site` VARCHAR(191) NOT NULL, `id` BIGINT NOT NULL, \
             `price` DECIMAL(65,30), `sold_at` DATETIME(6), PRIMARY KEY (`site`, `id`)) DEFAULT CHARSET=utf8mb4"
        );
        assert_eq!(
            create_table_sql(Dialect::Sqlite, "sales", &columns, &key),
            "CREATE TABLE IF NOT EXISTS \"sales\" (\"site\" TEXT NOT NULL, \"id\" INTEGER NOT NULL, \
             \"price\" TEXT, \"sold_at\" TEXT, PRIMARY KEY (\"site\", \"id\"))"
        );
        assert_eq!(
            create_table_sql(Dialect::Postgres, "s.sales", &columns, &key),
            "CREATE TABLE IF NOT EXISTS \"s\".\"sales\" (\"site\" text NOT NULL, \"id\" bigint NOT NULL, \
             \"price\" numeric, \"sold_at\" timestamptz, PRIMARY KEY (\"site\", \"id\"))"
        );
    }
}
