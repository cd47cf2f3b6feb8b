//! `:site.<tag>` placeholders in user SQL, rewritten to bound parameters.
//!
//! A flow's `query` may say `WHERE zone = :site.price_zone`; each site runs the
//! query with its own tag value bound as a text parameter. Nothing from a tag
//! is ever spliced into SQL text. The scanner is a small lexer that knows
//! where a placeholder cannot be: inside `'string'` literals (with `''`
//! escapes, and `E'..'` backslash escapes), `"quoted identifiers"`,
//! `$tag$ dollar-quoted $tag$` bodies, `-- line` and `/* block */` comments
//! (nested, as PostgreSQL allows), and after a `::` cast. On MySQL,
//! backslash escapes apply in every `'..'` and `".."` string (the server's
//! default), `#` starts a line comment, and `` `quoted` `` names are skipped.

use super::Dialect;

/// A user query with its `:site.*` placeholders replaced by numbered dialect
/// placeholders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteBoundSql {
    /// The rewritten SQL.
    pub sql: String,
    /// For each placeholder, in parameter order, the site attribute it binds:
    /// `"id"` for `:site.id`, otherwise a tag name.
    pub params: Vec<String>,
}

/// Rewrites every `:site.<name>` in `sql` into the dialect's numbered
/// placeholder, numbering from `first_param` (1-based). On PostgreSQL the
/// placeholder is typed `$n::text`: the value is sent as text, and without
/// the cast the server would infer the parameter's type from its context
/// (`CAST(:site.zone AS int)` makes it an int4) and misread the text bytes.
///
/// Returns the rewritten SQL and the attribute names in parameter order. An
/// unterminated string, identifier or comment is an error (the text names
/// what is unterminated), since the query would fail at the database anyway
/// and the scan could otherwise miss a placeholder.
pub fn bind_site_placeholders(
    sql: &str,
    dialect: Dialect,
    first_param: usize,
) -> Result<SiteBoundSql, String> {
    let mut params = Vec::new();
    let sql = scan_placeholders(sql, dialect, false, |placeholder| {
        let NamedParam::Site(name) = placeholder else {
            unreachable!("only :site.* placeholders are scanned here")
        };
        let text = dialect.typed_placeholder(
            first_param + params.len(),
            &crate::value::Value::Text(String::new()),
        );
        params.push(name);
        text
    })?;
    Ok(SiteBoundSql { sql, params })
}

/// One `:name` placeholder of a data service operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamedParam {
    /// `:name`: an operation parameter.
    Param(String),
    /// `:site.<name>`: the site's id (`id`) or one of its tags.
    Site(String),
}

/// An operation's SQL with its `:name` placeholders replaced by numbered
/// dialect placeholders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedBoundSql {
    /// The rewritten SQL.
    pub sql: String,
    /// What each placeholder binds, in parameter order (a name used twice
    /// appears twice).
    pub params: Vec<NamedParam>,
}

/// Rewrites every `:name` and `:site.<name>` in `sql` into the dialect's
/// numbered placeholder (`$1::bigint`, `?1`), numbering from 1. `sample`
/// gives, for each placeholder, a value of the type it will be bound with;
/// on PostgreSQL that picks the cast (values travel as text, see
/// [`Dialect::typed_placeholder`]). Names are `[A-Za-z_][A-Za-z0-9_]*`; a
/// `:` preceded by a name character or another `:` (`a::int`, `x:y` inside
/// an identifier) is not a placeholder, and neither is anything inside
/// strings, quoted identifiers, comments or dollar quotes.
///
/// Errors: an unterminated string, identifier or comment (named in the text).
pub fn bind_named_placeholders(
    sql: &str,
    dialect: Dialect,
    sample: &dyn Fn(&NamedParam) -> crate::value::Value,
) -> Result<NamedBoundSql, String> {
    let mut params = Vec::new();
    let sql = scan_placeholders(sql, dialect, true, |placeholder| {
        let text = dialect.typed_placeholder(params.len() + 1, &sample(&placeholder));
        params.push(placeholder);
        text
    })?;
    Ok(NamedBoundSql { sql, params })
}

/// The lexer behind both binders: copies `sql`, replacing each placeholder
/// by what `replace` returns. With `named` false only `:site.<name>` is a
/// placeholder; with `named` true `:name` is too.
fn scan_placeholders(
    sql: &str,
    dialect: Dialect,
    named: bool,
    mut replace: impl FnMut(NamedParam) -> String,
) -> Result<String, String> {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    let mut copied_to = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\'' => {
                let backslash_escapes = dialect == Dialect::MySql
                    || (i > 0
                        && matches!(bytes[i - 1], b'E' | b'e')
                        && (i < 2 || !is_ident_byte(bytes[i - 2])));
                i = skip_quoted(bytes, i, b'\'', backslash_escapes)
                    .ok_or("unterminated string literal")?;
            }
            b'"' => {
                i = skip_quoted(bytes, i, b'"', dialect == Dialect::MySql)
                    .ok_or("unterminated quoted identifier")?;
            }
            b'#' if dialect == Dialect::MySql => {
                i = sql[i..].find('\n').map_or(bytes.len(), |n| i + n + 1);
            }
            b'`' => {
                i = skip_quoted(bytes, i, b'`', false).ok_or("unterminated quoted identifier")?;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = sql[i..].find('\n').map_or(bytes.len(), |n| i + n + 1);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = skip_block_comment(bytes, i).ok_or("unterminated /* comment")?;
            }
            b'$' if dialect == Dialect::Postgres => {
                i = match dollar_tag(bytes, i) {
                    Some(tag) => {
                        let body_start = i + tag.len();
                        let end = sql[body_start..]
                            .find(tag)
                            .ok_or("unterminated dollar-quoted string")?;
                        body_start + end + tag.len()
                    }
                    None => i + 1,
                };
            }
            b':' if bytes.get(i + 1) == Some(&b':') => i += 2,
            b':' if sql[i + 1..].starts_with("site.") => {
                let name_start = i + 1 + "site.".len();
                let name_len = bytes[name_start..]
                    .iter()
                    .take_while(|c| is_ident_byte(**c))
                    .count();
                let starts_ok = bytes
                    .get(name_start)
                    .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_');
                let preceded_by_ident = i > 0 && is_ident_byte(bytes[i - 1]);
                if !starts_ok || preceded_by_ident {
                    i += 1;
                    continue;
                }
                out.push_str(&sql[copied_to..i]);
                out.push_str(&replace(NamedParam::Site(
                    sql[name_start..name_start + name_len].to_string(),
                )));
                i = name_start + name_len;
                copied_to = i;
            }
            b':' if named => {
                let name_start = i + 1;
                let name_len = bytes[name_start..]
                    .iter()
                    .take_while(|c| is_ident_byte(**c))
                    .count();
                let starts_ok = bytes
                    .get(name_start)
                    .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_');
                let preceded_by_ident = i > 0 && is_ident_byte(bytes[i - 1]);
                if !starts_ok || preceded_by_ident {
                    i += 1;
                    continue;
                }
                out.push_str(&sql[copied_to..i]);
                out.push_str(&replace(NamedParam::Param(
                    sql[name_start..name_start + name_len].to_string(),
                )));
                i = name_start + name_len;
                copied_to = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied_to..]);
    Ok(out)
}

/// `sql` (one statement returning `columns`) wrapped so that the columns
/// in `text_columns` are read as text:
/// `WITH hubsync_op AS (<sql>) SELECT "a", CAST("b" AS text) AS "b" FROM hubsync_op`.
/// A common table expression rather than a derived table, so that a
/// PostgreSQL `INSERT/UPDATE/DELETE ... RETURNING` can be wrapped too. Used
/// by data services for column types the connector does not decode natively
/// (PostgreSQL arrays, intervals, enums...).
pub fn select_with_text_columns(
    dialect: Dialect,
    sql: &str,
    columns: &[String],
    text_columns: &[String],
) -> String {
    let list: Vec<String> = columns
        .iter()
        .map(|c| {
            let quoted = dialect.quote_ident(c);
            if text_columns.contains(c) {
                format!("CAST({quoted} AS text) AS {quoted}")
            } else {
                quoted
            }
        })
        .collect();
    format!(
        "WITH hubsync_op AS ({}) SELECT {} FROM hubsync_op",
        trim_statement_end(sql, dialect),
        list.join(", ")
    )
}

/// `sql` without what follows its last significant token: trailing
/// whitespace, comments and statement-ending `;` are cut, so the query can
/// be wrapped as a derived table. Strings, quoted identifiers, comments and
/// dollar quotes are skipped as in [`bind_site_placeholders`]; if one is
/// unterminated only trailing whitespace is cut (the database reports it).
pub fn trim_statement_end(sql: &str, dialect: Dialect) -> &str {
    match scan_statement(sql, dialect) {
        Some((end, _)) => &sql[..end],
        None => sql.trim_end(),
    }
}

/// Whether `sql` holds more than one statement: a `;` outside strings,
/// quoted identifiers, comments and dollar quotes, followed by more SQL.
/// (SQLite runs every statement of such a text, so a data service refuses
/// it.) An unterminated quote counts as one statement (the database
/// reports it).
pub fn has_several_statements(sql: &str, dialect: Dialect) -> bool {
    scan_statement(sql, dialect).is_some_and(|(_, several)| several)
}

/// (end of the last significant token, whether a top-level `;` comes
/// before it); `None` for an unterminated quote or comment.
fn scan_statement(sql: &str, dialect: Dialect) -> Option<(usize, bool)> {
    let bytes = sql.as_bytes();
    let mut end = 0;
    let mut semicolon: Option<usize> = None;
    let mut i = 0;
    while i < bytes.len() {
        let next = match bytes[i] {
            b if b.is_ascii_whitespace() || b == b';' => {
                if b == b';' && semicolon.is_none() {
                    semicolon = Some(i);
                }
                i += 1;
                continue;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = sql[i..].find('\n').map_or(bytes.len(), |n| i + n + 1);
                continue;
            }
            b'#' if dialect == Dialect::MySql => {
                i = sql[i..].find('\n').map_or(bytes.len(), |n| i + n + 1);
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => match skip_block_comment(bytes, i) {
                Some(after) => {
                    i = after;
                    continue;
                }
                None => return None,
            },
            quote @ (b'\'' | b'"' | b'`') => {
                let backslash_escapes = (dialect == Dialect::MySql && quote != b'`')
                    || (quote == b'\''
                        && i > 0
                        && matches!(bytes[i - 1], b'E' | b'e')
                        && (i < 2 || !is_ident_byte(bytes[i - 2])));
                skip_quoted(bytes, i, quote, backslash_escapes)
            }
            b'$' if dialect == Dialect::Postgres => match dollar_tag(bytes, i) {
                Some(tag) => sql[i + tag.len()..]
                    .find(tag)
                    .map(|n| i + tag.len() + n + tag.len()),
                None => Some(i + 1),
            },
            _ => Some(i + 1),
        };
        match next {
            Some(after) => {
                end = after;
                i = after;
            }
            None => return None,
        }
    }
    Some((end, semicolon.is_some_and(|at| at < end)))
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Index just past the closing quote of a quoted run starting at `start`;
/// a doubled quote is an escaped quote.
fn skip_quoted(bytes: &[u8], start: usize, quote: u8, backslash_escapes: bool) -> Option<usize> {
    let mut i = start + 1;
    while i < bytes.len() {
        let b = bytes[i];
        if backslash_escapes && b == b'\\' {
            i += 2;
            continue;
        }
        if b == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// Index just past a (possibly nested) `/* ... */` comment at `start`.
fn skip_block_comment(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i + 1 < bytes.len() {
        if bytes[i] == b'/' && bytes[i + 1] == b'*' {
            depth += 1;
            i += 2;
        } else if bytes[i] == b'*' && bytes[i + 1] == b'/' {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Some(i);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// The opening `$tag$` of a dollar-quoted string at `start`, if there is one
/// (and not a positional parameter such as `$1`).
fn dollar_tag(bytes: &[u8], start: usize) -> Option<&str> {
    if start > 0 && is_ident_byte(bytes[start - 1]) {
        return None;
    }
    let rest = &bytes[start + 1..];
    let tag_len = rest.iter().take_while(|c| is_ident_byte(**c)).count();
    if rest.first().is_some_and(|c| c.is_ascii_digit()) || rest.get(tag_len) != Some(&b'$') {
        return None;
    }
    std::str::from_utf8(&bytes[start..start + tag_len + 2]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_statements_are_found_outside_quotes_and_comments() {
        let several = |sql: &str| has_several_statements(sql, Dialect::Postgres);
        assert!(several("SELECT 1; DELETE FROM stock"));
        assert!(several("UPDATE a SET x = 1;\n  DELETE FROM b;"));
        assert!(!several("SELECT 1;"));
        assert!(!several("SELECT 1; -- trailing comment"));
        assert!(!several("SELECT 'a;b', \"c;d\" FROM t /* ; */"));
        assert!(!several("SELECT $$;$$"));
        assert!(!several("SELECT 1 -- ; DELETE\n"));
        assert!(has_several_statements(
            "SELECT 1 # c\n; SELECT 2",
            Dialect::MySql
        ));
    }

    fn pg(sql: &str) -> SiteBoundSql {
        bind_site_placeholders(sql, Dialect::Postgres, 1).unwrap()
    }

    #[test]
    fn binds_tags_in_order() {
        let bound = pg("SELECT * FROM prices WHERE zone = :site.price_zone AND store = :site.id");
        assert_eq!(
            bound.sql,
            "SELECT * FROM prices WHERE zone = $1::text AND store = $2::text"
        );
        assert_eq!(bound.params, vec!["price_zone", "id"]);
    }

    #[test]
    fn leaves_literals_comments_and_casts_alone() {
        let sql = "SELECT ':site.a', \":site.b\", x::site, $q$ :site.c $q$, E'\\' :site.d' -- :site.e\n\
                   /* :site.f /* nested */ :site.g */ FROM t WHERE z = :site.zone";
        let bound = pg(sql);
        assert_eq!(bound.params, vec!["zone"]);
        assert!(bound.sql.ends_with("WHERE z = $1::text"));
        assert!(bound.sql.contains("':site.a'"));
        assert!(bound.sql.contains("x::site"));
    }

    #[test]
    fn sqlite_numbers_from_first_param() {
        let bound =
            bind_site_placeholders("SELECT 1 WHERE a = :site.region", Dialect::Sqlite, 3).unwrap();
        assert_eq!(bound.sql, "SELECT 1 WHERE a = ?3");
        assert_eq!(bound.params, vec!["region"]);
    }

    #[test]
    fn mysql_placeholders_are_positional_and_skip_backslash_strings() {
        let sql = "SELECT * FROM `p:site.x` WHERE a = 'it\\'s :site.no' # :site.comment\n\
                   AND zone = :site.zone AND b = \"q\\\" :site.no2\" AND s = :site.id;";
        let bound = bind_site_placeholders(sql, Dialect::MySql, 1).unwrap();
        assert_eq!(bound.params, vec!["zone", "id"]);
        assert!(bound.sql.contains("AND zone = ? AND b"), "{}", bound.sql);
        assert!(bound.sql.ends_with("AND s = ?;"), "{}", bound.sql);
        assert_eq!(
            trim_statement_end("SELECT 1; # done", Dialect::MySql),
            "SELECT 1"
        );
    }

    #[test]
    fn positional_parameters_are_not_dollar_quotes() {
        let bound = pg("SELECT $1, :site.id");
        assert_eq!(bound.sql, "SELECT $1, $1::text");
    }

    #[test]
    fn statement_ends_are_trimmed_for_wrapping() {
        let t = |sql| trim_statement_end(sql, Dialect::Postgres);
        assert_eq!(t("SELECT 1; -- done\n"), "SELECT 1");
        assert_eq!(t("SELECT 1 -- c ; \n ;; /* x; */ \n"), "SELECT 1");
        assert_eq!(t("SELECT ';' ;"), "SELECT ';'");
        assert_eq!(t("SELECT $$;$$"), "SELECT $$;$$");
        assert_eq!(t("SELECT a -- trailing"), "SELECT a");
        assert_eq!(t("SELECT 'open"), "SELECT 'open");
    }

    #[test]
    fn unterminated_string_is_an_error() {
        let err = bind_site_placeholders("SELECT 'abc", Dialect::Sqlite, 1).unwrap_err();
        assert_eq!(err, "unterminated string literal");
    }

    fn sample(param: &NamedParam) -> crate::value::Value {
        match param {
            NamedParam::Param(name) if name == "qty" => crate::value::Value::Int(0),
            _ => crate::value::Value::Text(String::new()),
        }
    }

    #[test]
    fn columns_are_read_as_text_through_a_common_table_expression() {
        let columns = ["id".to_string(), "span".to_string()];
        assert_eq!(
            select_with_text_columns(
                Dialect::Postgres,
                "UPDATE t SET n = n + 1 RETURNING id, span; -- done",
                &columns,
                &columns[1..]
            ),
            "WITH hubsync_op AS (UPDATE t SET n = n + 1 RETURNING id, span) \
             SELECT \"id\", CAST(\"span\" AS text) AS \"span\" FROM hubsync_op"
        );
    }

    #[test]
    fn named_parameters_are_bound_in_order_with_their_casts() {
        let bound = bind_named_placeholders(
            "SELECT sku, qty FROM stock WHERE sku = :sku AND qty >= :qty AND store = :site.id \
             AND note <> ':nope' AND x::int > 0 AND sku <> :sku",
            Dialect::Postgres,
            &sample,
        )
        .unwrap();
        assert_eq!(
            bound.sql,
            "SELECT sku, qty FROM stock WHERE sku = $1::text AND qty >= $2::bigint AND store = $3::text \
             AND note <> ':nope' AND x::int > 0 AND sku <> $4::text"
        );
        assert_eq!(
            bound.params,
            [
                NamedParam::Param("sku".into()),
                NamedParam::Param("qty".into()),
                NamedParam::Site("id".into()),
                NamedParam::Param("sku".into()),
            ]
        );
        let sqlite =
            bind_named_placeholders("UPDATE t SET a = :a -- :b\n", Dialect::Sqlite, &sample)
                .unwrap();
        assert_eq!(sqlite.sql, "UPDATE t SET a = ?1 -- :b\n");
        assert_eq!(sqlite.params, [NamedParam::Param("a".into())]);
    }
}
