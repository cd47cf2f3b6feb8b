//! Errors of the I/O layer, classified by the database's own code.
//!
//! A driver error keeps the database's code (PostgreSQL SQLSTATE, MySQL
//! error number, SQLite extended result code) and gets an [`ErrorKind`]
//! from it, so the layers above decide by kind, never by message text:
//! a deadlock is retried, a refused value may be quarantined, a refused
//! login is not retried like a refused connection.
//!
//! Sources of the codes: PostgreSQL manual, appendix A "PostgreSQL Error
//! Codes"; MariaDB knowledge base "MariaDB Error Codes" (the same numbers
//! as MySQL's "Server Error Message Reference"); SQLite "Result and Error
//! Codes" (<https://sqlite.org/rescode.html>).

/// What kind of failure an error is; decides retries, quarantine and the
/// run history's `error_kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The database could not be reached, or a connection broke in use
    /// (refused, no answer, network cut, server shutting down, too many
    /// connections). Transient: retried with backoff.
    Connection,
    /// The database refused the login: wrong password or user, unknown
    /// database, a file that is no SQLite database. Not retried: it will
    /// not fix itself. (A missing SQLite file is [`ErrorKind::Connection`]:
    /// a share being remounted brings it back.)
    Login,
    /// A deadlock or serialization failure: the database rolled the
    /// transaction back and it may be run again as is. Retried at once
    /// (with a short backoff) by the batch that met it.
    Conflict,
    /// The statement was cancelled: a statement timeout (ours or the
    /// server's) or an operator's cancel. Fails the site's run.
    Canceled,
    /// The login lacks a privilege (`permission denied`). Fails the site's
    /// run; never quarantines rows.
    Permission,
    /// The database refused a value or a row (constraint, out of range,
    /// invalid text for the type), or hubsync refused one it cannot carry
    /// exactly. Only these may be quarantined (`on_error = "quarantine"`).
    Data,
    /// Anything else (a missing table or column, a syntax error): fails the
    /// run.
    Other,
    /// The hub itself cut the work short (a stop signal, a later run of the
    /// same pair took over, the hub died): says nothing about the site and
    /// never counts toward its circuit breaker. Never made by a connector.
    Interrupted,
}

impl ErrorKind {
    /// The name stored in the run history (`runs.error_kind`) and shown by
    /// the API: `connection`, `login`, `conflict`, `canceled`,
    /// `permission`, `data`, `other`, `interrupted`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connection => "connection",
            ErrorKind::Login => "login",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Canceled => "canceled",
            ErrorKind::Permission => "permission",
            ErrorKind::Data => "data",
            ErrorKind::Other => "other",
            ErrorKind::Interrupted => "interrupted",
        }
    }

    /// Kind of a PostgreSQL SQLSTATE (five characters).
    pub fn from_sqlstate(code: &str) -> ErrorKind {
        match code {
            // serialization_failure, deadlock_detected
            "40001" | "40P01" => ErrorKind::Conflict,
            // query_canceled (statement_timeout, pg_cancel_backend)
            "57014" => ErrorKind::Canceled,
            // insufficient_privilege
            "42501" => ErrorKind::Permission,
            // invalid_authorization_specification, invalid_password,
            // invalid_catalog_name (no such database)
            "28000" | "28P01" | "3D000" => ErrorKind::Login,
            // admin_shutdown, crash_shutdown, cannot_connect_now,
            // too_many_connections, idle_session_timeout
            "57P01" | "57P02" | "57P03" | "53300" | "57P05" => ErrorKind::Connection,
            // class 08: connection exception
            code if code.starts_with("08") => ErrorKind::Connection,
            // class 22: data exception; class 23: integrity constraint
            // violation
            code if code.starts_with("22") || code.starts_with("23") => ErrorKind::Data,
            _ => ErrorKind::Other,
        }
    }

    /// Kind of a MySQL/MariaDB error number.
    pub fn from_mysql(number: u16) -> ErrorKind {
        match number {
            // ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT
            1213 | 1205 => ErrorKind::Conflict,
            // ER_QUERY_INTERRUPTED, ER_QUERY_TIMEOUT (MySQL
            // max_execution_time), ER_STATEMENT_TIMEOUT (MariaDB
            // max_statement_time)
            1317 | 3024 | 1969 => ErrorKind::Canceled,
            // ER_DBACCESS_DENIED_ERROR, ER_TABLEACCESS_DENIED_ERROR,
            // ER_COLUMNACCESS_DENIED_ERROR, ER_SPECIFIC_ACCESS_DENIED_ERROR,
            // ER_PROCACCESS_DENIED_ERROR
            1044 | 1142 | 1143 | 1227 | 1370 => ErrorKind::Permission,
            // ER_ACCESS_DENIED_ERROR, ER_BAD_DB_ERROR,
            // ER_ACCESS_DENIED_NO_PASSWORD_ERROR
            1045 | 1049 | 1698 => ErrorKind::Login,
            // ER_CON_COUNT_ERROR, ER_SERVER_SHUTDOWN, ER_TOO_MANY_USER_CONNECTIONS
            1040 | 1053 | 1203 => ErrorKind::Connection,
            // ER_BAD_NULL_ERROR, ER_DUP_ENTRY, ER_DATA_TOO_LONG,
            // ER_WARN_DATA_OUT_OF_RANGE, WARN_DATA_TRUNCATED,
            // ER_TRUNCATED_WRONG_VALUE, ER_TRUNCATED_WRONG_VALUE_FOR_FIELD,
            // ER_NO_REFERENCED_ROW(_2), ER_ROW_IS_REFERENCED(_2),
            // ER_DATA_OUT_OF_RANGE, ER_INVALID_JSON_TEXT(MySQL),
            // ER_CONSTRAINT_FAILED (MariaDB CHECK), ER_CHECK_CONSTRAINT_VIOLATED
            // (MySQL), ER_DIVISION_BY_ZERO, ER_INVALID_CHARACTER_STRING,
            // ER_WRONG_VALUE_FOR_TYPE
            1048 | 1062 | 1406 | 1264 | 1265 | 1292 | 1366 | 1216 | 1217 | 1451 | 1452 | 1690
            | 3140 | 4025 | 3819 | 1365 | 1300 | 1411 => ErrorKind::Data,
            _ => ErrorKind::Other,
        }
    }

    /// Kind of a SQLite extended result code (the primary code is its low
    /// byte).
    pub fn from_sqlite(code: i32) -> ErrorKind {
        match code & 0xff {
            // SQLITE_TOOBIG (18), SQLITE_CONSTRAINT (19, all extended
            // forms), SQLITE_MISMATCH (20)
            18..=20 => ErrorKind::Data,
            // SQLITE_BUSY, SQLITE_LOCKED: another writer holds the file;
            // the transaction may be run again
            5 | 6 => ErrorKind::Conflict,
            // SQLITE_INTERRUPT
            9 => ErrorKind::Canceled,
            // SQLITE_PERM, SQLITE_READONLY, SQLITE_AUTH
            3 | 8 | 23 => ErrorKind::Permission,
            // SQLITE_CANTOPEN, SQLITE_NOTADB
            14 | 26 => ErrorKind::Login,
            _ => ErrorKind::Other,
        }
    }
}

/// Errors of the I/O layer. Messages never contain passwords.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The database could not be reached.
    #[error("cannot connect to {url}: {message}")]
    Connect {
        /// Redacted URL.
        url: String,
        /// Driver message.
        message: String,
    },
    /// The database answered and refused the login (wrong password or user,
    /// unknown database): not retried.
    #[error("cannot connect to {url}: {message}")]
    Login {
        /// Redacted URL.
        url: String,
        /// The database's message.
        message: String,
    },
    /// Connecting took longer than the configured `connect_timeout`.
    #[error("cannot connect to {url}: no answer within {seconds} s")]
    ConnectTimeout {
        /// Redacted URL.
        url: String,
        /// The timeout, in seconds.
        seconds: u64,
    },
    /// A statement took longer than the statement timeout.
    #[error(
        "no answer within {seconds} s (`statement_timeout`); the database is overloaded or unreachable"
    )]
    Timeout {
        /// The timeout, in seconds.
        seconds: u64,
    },
    /// An open connection broke while in use (network cut, server restart):
    /// the statement and its transaction did not complete.
    #[error(
        "the connection was lost ({0}); nothing it had not committed is kept, the next run redoes it"
    )]
    ConnectionLost(String),
    /// A statement failed at the database, with the database's own code
    /// (SQLSTATE, MySQL error number, SQLite extended result code) where it
    /// gave one, and the kind that code means.
    #[error("{message}{}", code.as_ref().map(|c| format!(" (code {c})")).unwrap_or_default())]
    Database {
        /// What the code means for retries and quarantine.
        kind: ErrorKind,
        /// The database's code, as it gave it.
        code: Option<String>,
        /// The database's message.
        message: String,
    },
    /// A column holds a value hubsync cannot carry exactly.
    #[error("column `{column}`: {message}")]
    Type {
        /// Column name as the source returned it.
        column: String,
        /// What is wrong and what to do.
        message: String,
    },
}

impl ConnectorError {
    /// A statement failure of kind [`ErrorKind::Other`] with no code: a
    /// limit of hubsync's own, worded for the user.
    pub fn other(message: String) -> ConnectorError {
        ConnectorError::Database {
            kind: ErrorKind::Other,
            code: None,
            message,
        }
    }

    /// The kind of this error (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            ConnectorError::Connect { .. }
            | ConnectorError::ConnectTimeout { .. }
            | ConnectorError::ConnectionLost(_) => ErrorKind::Connection,
            ConnectorError::Login { .. } => ErrorKind::Login,
            ConnectorError::Timeout { .. } => ErrorKind::Canceled,
            ConnectorError::Database { kind, .. } => *kind,
            ConnectorError::Type { .. } => ErrorKind::Data,
        }
    }

    /// True for failures worth retrying with backoff: connection trouble
    /// and conflicts (deadlock, serialization failure), not a refused login,
    /// a wrong query or a bad value.
    pub fn is_transient(&self) -> bool {
        matches!(self.kind(), ErrorKind::Connection | ErrorKind::Conflict)
    }

    /// True for a unique or primary-key violation: PostgreSQL SQLSTATE
    /// `23505`, MySQL error 1062, SQLite extended result codes 1555
    /// (`SQLITE_CONSTRAINT_PRIMARYKEY`) and 2067 (`SQLITE_CONSTRAINT_UNIQUE`).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self.code(), Some("23505" | "1062" | "1555" | "2067"))
    }

    /// The database's code, if the database gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ConnectorError::Database { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

/// Maps a driver error to [`ConnectorError`]: a database error keeps its
/// message and code and gets the kind of its code per dialect; I/O and
/// protocol failures are a lost connection; pool and TLS failures a
/// connect error.
pub(crate) fn db_error(error: sqlx::Error) -> ConnectorError {
    match &error {
        sqlx::Error::Database(db) => {
            // MySQL's own error number is what its manual and users know;
            // sqlx's `code()` gives the coarser SQLSTATE.
            let code = match db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                Some(my) => Some(my.number().to_string()),
                None => db.code().map(|c| c.into_owned()),
            };
            ConnectorError::Database {
                kind: database_kind(db.as_ref()),
                code,
                message: db.message().to_string(),
            }
        }
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => {
            ConnectorError::ConnectionLost(error.to_string())
        }
        sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            ConnectorError::Connect {
                url: "the database".into(),
                message: error.to_string(),
            }
        }
        _ => ConnectorError::other(error.to_string()),
    }
}

/// The kind of a database error from its code, read per driver (sqlx
/// gives MySQL's SQLSTATE as `code()`, so its error number is read from the
/// MySQL error itself).
pub(crate) fn database_kind(db: &dyn sqlx::error::DatabaseError) -> ErrorKind {
    if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return ErrorKind::from_mysql(my.number());
    }
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        return ErrorKind::from_sqlstate(pg.code());
    }
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        return db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .map_or(ErrorKind::Other, ErrorKind::from_sqlite);
    }
    ErrorKind::Other
}

/// A failed connect attempt as a [`ConnectorError`]: [`ConnectorError::Login`]
/// when the database answered with a login refusal (its code says so),
/// else [`ConnectorError::Connect`]. `message` is what to show (already
/// stripped of any URL).
pub(crate) fn connect_failure(url: String, error: &sqlx::Error, message: String) -> ConnectorError {
    match error {
        sqlx::Error::Database(db) if database_kind(db.as_ref()) == ErrorKind::Login => {
            ConnectorError::Login { url, message }
        }
        _ => ConnectorError::Connect { url, message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_codes_map_to_kinds() {
        assert_eq!(ErrorKind::from_sqlstate("40P01"), ErrorKind::Conflict);
        assert_eq!(ErrorKind::from_sqlstate("40001"), ErrorKind::Conflict);
        assert_eq!(ErrorKind::from_sqlstate("57014"), ErrorKind::Canceled);
        assert_eq!(ErrorKind::from_sqlstate("42501"), ErrorKind::Permission);
        assert_eq!(ErrorKind::from_sqlstate("28P01"), ErrorKind::Login);
        assert_eq!(ErrorKind::from_sqlstate("3D000"), ErrorKind::Login);
        assert_eq!(ErrorKind::from_sqlstate("08006"), ErrorKind::Connection);
        assert_eq!(ErrorKind::from_sqlstate("57P01"), ErrorKind::Connection);
        // not_null_violation, unique_violation, numeric_value_out_of_range,
        // invalid_text_representation
        for code in ["23502", "23505", "22003", "22P02"] {
            assert_eq!(ErrorKind::from_sqlstate(code), ErrorKind::Data, "{code}");
        }
        // undefined_column, syntax_error
        assert_eq!(ErrorKind::from_sqlstate("42703"), ErrorKind::Other);
        assert_eq!(ErrorKind::from_sqlstate("42601"), ErrorKind::Other);
    }

    #[test]
    fn mysql_numbers_map_to_kinds() {
        assert_eq!(ErrorKind::from_mysql(1213), ErrorKind::Conflict);
        assert_eq!(ErrorKind::from_mysql(1205), ErrorKind::Conflict);
        assert_eq!(ErrorKind::from_mysql(1969), ErrorKind::Canceled);
        assert_eq!(ErrorKind::from_mysql(1142), ErrorKind::Permission);
        assert_eq!(ErrorKind::from_mysql(1045), ErrorKind::Login);
        assert_eq!(ErrorKind::from_mysql(1062), ErrorKind::Data);
        assert_eq!(ErrorKind::from_mysql(1264), ErrorKind::Data);
        // ER_BAD_FIELD_ERROR (unknown column)
        assert_eq!(ErrorKind::from_mysql(1054), ErrorKind::Other);
    }

    #[test]
    fn sqlite_codes_map_to_kinds() {
        // SQLITE_CONSTRAINT_NOTNULL (1299), SQLITE_CONSTRAINT_PRIMARYKEY (1555)
        assert_eq!(ErrorKind::from_sqlite(1299), ErrorKind::Data);
        assert_eq!(ErrorKind::from_sqlite(1555), ErrorKind::Data);
        assert_eq!(ErrorKind::from_sqlite(5), ErrorKind::Conflict);
        assert_eq!(ErrorKind::from_sqlite(8), ErrorKind::Permission);
        // SQLITE_ERROR (no such column)
        assert_eq!(ErrorKind::from_sqlite(1), ErrorKind::Other);
    }

    #[test]
    fn kinds_decide_retries() {
        let deadlock = ConnectorError::Database {
            kind: ErrorKind::Conflict,
            code: Some("40P01".into()),
            message: "deadlock detected".into(),
        };
        assert!(deadlock.is_transient());
        assert_eq!(deadlock.to_string(), "deadlock detected (code 40P01)");
        let login = ConnectorError::Login {
            url: "postgres://hub@db/x".into(),
            message: "password authentication failed for user \"hub\"".into(),
        };
        assert!(!login.is_transient());
        assert!(
            ConnectorError::Connect {
                url: "u".into(),
                message: "refused".into()
            }
            .is_transient()
        );
        assert!(!ConnectorError::Timeout { seconds: 5 }.is_transient());
        assert_eq!(ConnectorError::other("x".into()).to_string(), "x");
    }
}
