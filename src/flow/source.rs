//! The source of a stream at one site, resolved once per run
//! ([`ResolvedSource`]): `:site.*` bound, the select list chosen by
//! preparing the first read (which proves it valid before anything is
//! read), and how the cursor is ordered. Used by runs and by `check`.

use super::error::RunError;
use super::shared::SharedDescribes;
use crate::config::{Site, Source, Stream};
use crate::connector::Connector;
use crate::dialect::params::bind_site_placeholders;
use crate::dialect::{KeysetSelect, SelectFrom};
use crate::value::Value;

/// The source side of a stream at one site, resolved once per run: the
/// query with `:site.*` bound, and the select list, found by preparing the
/// first page's SQL (which also proves it is valid before anything is read).
#[derive(Clone, Debug)]
pub(crate) struct ResolvedSource {
    /// The table, or the query rewritten with numbered placeholders.
    from: Source,
    /// `(attribute, value)` bound to the query's placeholders, in order.
    pub site_params: Vec<(String, String)>,
    /// Explicit select list (source names), or `None` for `*`.
    columns: Option<Vec<String>>,
    /// Columns read as text because the connector cannot decode their type.
    text_columns: Vec<String>,
    /// Every column the source returns, as (name, type name).
    pub described: Vec<(String, String)>,
    /// SQLite sources whose cursor is declared a date or date-time type
    /// (`DATETIME`, `TIMESTAMP`, `DATE`...): that declared type. Such a
    /// cursor may hold text, Julian-day REALs and unix-second INTEGERs; it
    /// is ordered by instant and each value read as one
    /// ([`crate::connector::sqlite_instant`]).
    pub cursor_date_time: Option<String>,
}

impl ResolvedSource {
    /// Binds `:site.*`, prepares the first page and chooses the select list.
    /// With `describes` (a push: the master's statement is the same for
    /// every site of a pass), the first page is prepared once per pass and
    /// statement.
    ///
    /// Errors (one line, for a message prefixed with the place): a missing
    /// tag, a query that does not prepare, a cursor or key column whose type
    /// can only be read as text (its order would change).
    pub(crate) async fn resolve(
        stream: &Stream,
        site: &Site,
        source: &Connector,
        describes: Option<&SharedDescribes>,
        batch_size: usize,
    ) -> Result<ResolvedSource, RunError> {
        let mut resolved = ResolvedSource {
            from: stream.source.clone(),
            site_params: Vec::new(),
            columns: stream.select_columns(),
            text_columns: Vec::new(),
            described: Vec::new(),
            cursor_date_time: None,
        };
        match &stream.source {
            Source::Table(_) => {}
            Source::Query(query) => {
                let bound = bind_site_placeholders(query, source.dialect(), 1)
                    .map_err(|e| RunError::from(format!("`query`: {e}")))?;
                for name in &bound.params {
                    let value = site.attribute(name).ok_or_else(|| {
                        RunError::from(format!(
                            "site has no tag `{name}` used by `:site.{name}` in `query`"
                        ))
                    })?;
                    resolved.site_params.push((name.clone(), value.to_string()));
                }
                resolved.from = Source::Query(bound.sql);
            }
        }
        let keyset = stream.keyset_source_columns();
        let probe = resolved.keyset_select(source.dialect(), &keyset, None, None, Some(batch_size));
        let what = match &stream.source {
            Source::Table(table) => format!("table `{table}`"),
            Source::Query(_) => "`query`".to_string(),
        };
        let described = match describes {
            Some(describes) => describes.describe(source, &probe).await,
            None => source.describe_query(&probe).await,
        };
        resolved.described = described.map_err(|e| RunError::connector(&what, &e))?;
        if source.dialect() == crate::dialect::Dialect::Sqlite {
            resolved.drop_sqlite_literal_columns();
        }
        let text_columns: Vec<String> = resolved
            .described
            .iter()
            .filter(|(_, type_name)| !source.decodes_natively(type_name))
            .map(|(name, _)| name.clone())
            .collect();
        if let Some(column) = keyset.iter().find(|c| text_columns.contains(c)) {
            let type_name = &resolved
                .described
                .iter()
                .find(|(n, _)| n == column)
                .expect("described")
                .1;
            return Err(format!(
                "cursor or key column `{column}` has type `{type_name}`, which hubsync cannot order by; use another column or cast it in a `query`"
            )
            .into());
        }
        if !text_columns.is_empty() {
            resolved.columns = Some(resolved.described.iter().map(|(n, _)| n.clone()).collect());
            resolved.text_columns = text_columns;
        }
        if source.dialect() == crate::dialect::Dialect::Sqlite {
            resolved.cursor_date_time = resolved
                .sqlite_date_time_cursor(stream, source, &probe)
                .await
                .map_err(|e| RunError::connector(&what, &e))?;
        }
        Ok(resolved)
    }

    /// SQLite takes a double-quoted name that is no column of the source
    /// for a text literal (<https://sqlite.org/quirks.html#dblquote>) and
    /// names that result column by its quoted text: a selected name the
    /// source lacks comes back as a column `"name"` whose every value is
    /// the text `name`. Drops each such name from the select list and the
    /// described columns, so that whatever reads it (a `columns` mapping,
    /// an expression) reports the column as missing, listing only the
    /// columns the source has, instead of reading the name as a value.
    fn drop_sqlite_literal_columns(&mut self) {
        let Some(columns) = &mut self.columns else {
            return;
        };
        let described_names: Vec<&str> = self.described.iter().map(|(n, _)| n.as_str()).collect();
        let literals: Vec<(String, String)> = columns
            .iter()
            .map(|name| (name.clone(), format!("\"{}\"", name.replace('"', "\"\""))))
            .filter(|(name, quoted)| {
                !described_names.contains(&name.as_str())
                    && described_names.contains(&quoted.as_str())
            })
            .collect();
        columns.retain(|name| !literals.iter().any(|(missing, _)| missing == name));
        self.described
            .retain(|(name, _)| !literals.iter().any(|(_, quoted)| quoted == name));
    }

    /// SQLite: the cursor's declared type if it is a date/time type, found
    /// through the column's table where it comes from one, else the
    /// driver's name (`DATETIME` for `datetime` and `timestamp`).
    async fn sqlite_date_time_cursor(
        &self,
        stream: &Stream,
        source: &Connector,
        probe: &str,
    ) -> Result<Option<String>, crate::connector::ConnectorError> {
        let declared = match source.declared_type(probe, &stream.cursor).await? {
            Some(declared) => Some(declared),
            None => self
                .described
                .iter()
                .find(|(name, _)| *name == stream.cursor)
                .map(|(_, type_name)| type_name.clone()),
        };
        Ok(declared.filter(|d| crate::connector::sqlite_is_date_time_type(d)))
    }

    /// SQL counting the source rows whose `cursor` is NULL (bound with the
    /// same `:site.*` parameters as the pages).
    pub(crate) fn null_cursor_count(
        &self,
        dialect: crate::dialect::Dialect,
        cursor: &str,
    ) -> String {
        dialect.null_count(self.select_from(), cursor)
    }

    pub(crate) fn select_from(&self) -> SelectFrom<'_> {
        match &self.from {
            Source::Table(table) => SelectFrom::Table(table),
            Source::Query(sql) => SelectFrom::Query(sql),
        }
    }

    /// The read of a run: every row whose cursor is at or above
    /// `from_cursor` (`None`: every row), in keyset order, streamed.
    pub(crate) fn read_spec<'a>(
        &'a self,
        keyset: &'a [String],
        from_cursor: Option<&'a Value>,
    ) -> KeysetSelect<'a> {
        KeysetSelect {
            from: self.select_from(),
            columns: self.columns.as_deref(),
            text_columns: &self.text_columns,
            order_by: keyset,
            after: None,
            from_cursor,
            first_param: self.site_params.len() + 1,
            limit: None,
            cursor_by_instant: self.cursor_date_time.is_some(),
        }
    }

    /// SQL of the keyset read after `position` (`None`: from the start), at
    /// most `limit` rows (`None`: all, streamed).
    pub(crate) fn keyset_select(
        &self,
        dialect: crate::dialect::Dialect,
        keyset: &[String],
        position: Option<&[Value]>,
        from_cursor: Option<&Value>,
        limit: Option<usize>,
    ) -> String {
        dialect.keyset_select(&KeysetSelect {
            from: self.select_from(),
            columns: self.columns.as_deref(),
            text_columns: &self.text_columns,
            order_by: keyset,
            after: position,
            from_cursor,
            first_param: self.site_params.len() + 1,
            limit,
            cursor_by_instant: self.cursor_date_time.is_some(),
        })
    }
}
