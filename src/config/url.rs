//! Database URLs: parsing, the separate `password` key, and redaction.
//!
//! Supported forms: `sqlite://relative/path.db` (relative to the config
//! file's folder), `sqlite:///absolute/path.db`, `postgres://` or
//! `postgresql://` URLs with their usual parameters (`sslmode`, ...), and
//! `mysql://` or `mariadb://` URLs (`ssl-mode`, ...; both speak the MySQL
//! protocol).
//! A URL is only ever displayed through [`DbUrl::redacted`], which masks the
//! password.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::dialect::Dialect;

/// A secret string whose `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret itself, for handing to a driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a database lives and how to reach it.
#[derive(Clone, PartialEq, Eq)]
pub enum DbUrl {
    /// A SQLite file.
    Sqlite {
        /// The database file: as written if absolute, else joined to the
        /// config file's folder (an absolute folder when loaded by
        /// `Config::load`, so messages show the full path).
        path: PathBuf,
    },
    /// A PostgreSQL server.
    Postgres {
        /// The URL as written, password included if it had one.
        url: String,
        /// A password given by the separate `password` key; it overrides one
        /// in the URL and needs no percent-encoding.
        password: Option<Secret>,
    },
    /// A MySQL or MariaDB server.
    MySql {
        /// The URL as written (`mysql://` or `mariadb://`), password included
        /// if it had one.
        url: String,
        /// A password given by the separate `password` key; it overrides one
        /// in the URL and needs no percent-encoding.
        password: Option<Secret>,
    },
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl DbUrl {
    /// Parses a URL from config; `base_dir` resolves relative SQLite paths.
    /// Errors are one-line messages naming what is wrong and the supported
    /// forms; the URL in them is redacted.
    pub fn parse(text: &str, password: Option<String>, base_dir: &Path) -> Result<DbUrl, String> {
        if let Some(rest) = text.strip_prefix("sqlite://") {
            if password.is_some() {
                return Err("`password` does not apply to a sqlite URL".into());
            }
            let file = rest.split_once('?').map_or(rest, |(file, _)| file);
            if file.is_empty() {
                return Err("sqlite URL has no file path; write `sqlite://path/to/file.db`".into());
            }
            let path = Path::new(file);
            let path = if path.is_absolute() {
                path.to_path_buf()
            } else {
                base_dir.join(path)
            };
            return Ok(DbUrl::Sqlite { path });
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            let parsed = url::Url::parse(text)
                .map_err(|e| format!("invalid postgres URL `{}`: {e}", redact_url_text(text)))?;
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err(format!(
                    "postgres URL `{}` has no host",
                    redact_url_text(text)
                ));
            }
            return Ok(DbUrl::Postgres {
                url: text.to_string(),
                password: password.map(Secret::new),
            });
        }
        if text.starts_with("mysql://") || text.starts_with("mariadb://") {
            let parsed = url::Url::parse(text)
                .map_err(|e| format!("invalid mysql URL `{}`: {e}", redact_url_text(text)))?;
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err(format!("mysql URL `{}` has no host", redact_url_text(text)));
            }
            if parsed.path().trim_start_matches('/').is_empty() {
                return Err(format!(
                    "mysql URL `{}` names no database; write `mysql://user@host/database`",
                    redact_url_text(text)
                ));
            }
            return Ok(DbUrl::MySql {
                url: text.to_string(),
                password: password.map(Secret::new),
            });
        }
        let scheme = text.split_once("://").map_or(text, |(s, _)| s);
        Err(format!(
            "unsupported database URL scheme `{}`; use `sqlite://path.db`, `sqlite:///abs/path.db`, `postgres://user@host/db` or `mysql://user@host/db`",
            redact_url_text(scheme)
        ))
    }

    /// The dialect spoken at this URL.
    pub fn dialect(&self) -> Dialect {
        match self {
            DbUrl::Sqlite { .. } => Dialect::Sqlite,
            DbUrl::Postgres { .. } => Dialect::Postgres,
            DbUrl::MySql { .. } => Dialect::MySql,
        }
    }

    /// The URL with any password replaced by `***`, safe for logs, errors
    /// and the API.
    pub fn redacted(&self) -> String {
        match self {
            DbUrl::Sqlite { path } => format!("sqlite://{}", path.display()),
            DbUrl::Postgres { url, .. } | DbUrl::MySql { url, .. } => redact_url_text(url),
        }
    }
}

/// Masks the password of a URL given as text; text that does not parse as a
/// URL is masked between `:` and `@` of its authority, if any.
pub fn redact_url_text(text: &str) -> String {
    if let Ok(mut parsed) = url::Url::parse(text) {
        if parsed.password().is_some() {
            let _ = parsed.set_password(Some("***"));
        }
        // libpq-style URLs may also carry `?password=...`.
        if parsed.query_pairs().any(|(k, _)| k == "password") {
            let pairs: Vec<(String, String)> = parsed
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "password" {
                        "***".to_string()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            parsed.query_pairs_mut().clear().extend_pairs(pairs);
        }
        return parsed.to_string();
    }
    match (text.find("://"), text.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let authority = &text[scheme_end + 3..at];
            match authority.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &text[..scheme_end + 3], &text[at..]),
                None => text.to_string(),
            }
        }
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths_resolve_against_the_config_folder() {
        let base = Path::new("/etc/hubsync");
        assert_eq!(
            DbUrl::parse("sqlite://stores/s1.db", None, base).unwrap(),
            DbUrl::Sqlite {
                path: PathBuf::from("/etc/hubsync/stores/s1.db")
            }
        );
        assert_eq!(
            DbUrl::parse("sqlite:///var/s1.db", None, base).unwrap(),
            DbUrl::Sqlite {
                path: PathBuf::from("/var/s1.db")
            }
        );
    }

    #[test]
    fn passwords_never_show() {
        let url = DbUrl::parse(
            "postgres://hub:pa55@db.example:5432/hq?sslmode=require",
            None,
            Path::new("."),
        )
        .unwrap();
        assert_eq!(
            url.redacted(),
            "postgres://hub:***@db.example:5432/hq?sslmode=require"
        );
        assert_eq!(format!("{url:?}"), url.redacted());
        assert_eq!(
            redact_url_text("postgres://u:p@ss@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            redact_url_text("postgres://u@h/db?sslmode=require&password=hunter2"),
            "postgres://u@h/db?sslmode=require&password=***"
        );
        let with_key =
            DbUrl::parse("postgres://hub@h/db", Some("p@ss".into()), Path::new(".")).unwrap();
        assert!(!format!("{with_key:?}").contains("p@ss"));
    }

    #[test]
    fn mysql_and_mariadb_urls_parse_and_redact() {
        let url = DbUrl::parse(
            "mariadb://pos:s3cret@10.1.2.3:3307/pos",
            None,
            Path::new("."),
        )
        .unwrap();
        assert_eq!(url.dialect(), Dialect::MySql);
        assert_eq!(url.redacted(), "mariadb://pos:***@10.1.2.3:3307/pos");
        let err = DbUrl::parse("mysql://pos@host", None, Path::new(".")).unwrap_err();
        assert_eq!(
            err,
            "mysql URL `mysql://pos@host` names no database; write `mysql://user@host/database`"
        );
    }

    #[test]
    fn unknown_schemes_are_refused() {
        let err = DbUrl::parse("oracle://x", None, Path::new(".")).unwrap_err();
        assert!(
            err.starts_with("unsupported database URL scheme `oracle`"),
            "{err}"
        );
    }
}
