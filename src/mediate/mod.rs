//! The mapping plan: how one stream's source rows become target rows at
//! one site, built once per (stream, site) from the stream's config and the
//! source's described columns, and used by every stage that needs to know
//! which target columns are written, the conflict key, the keyset
//! positions and the per-dialect value fixes (MySQL zero dates, 0/1
//! booleans, a site's local time zone, PostgreSQL rounding checks, SQLite
//! date-time cursors). Nothing here does I/O.
//!
//! Invariants: the conflict key is `site_column` (pull) followed by
//! `primary_key`, and every one of its columns is written; a row is mapped
//! by moving values out of the source row (a source column feeding several
//! target columns is copied for all but its last use); a refused value
//! names the row's key and the column ([`MapError::Row`]).

pub(crate) mod expr;

use crate::config::{Direction, Stream, ZeroDates};
use crate::connector::TableInfo;
use crate::dialect::Dialect;
use crate::dialect::UpsertSpec;
use crate::value::{Batch, Value};

/// Why a stream cannot be mapped, or why a row cannot be.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The mapping cannot be built against these columns (a missing column,
    /// a key column not written): the config or a table must change.
    #[error("{0}")]
    Plan(String),
    /// A row's value cannot be carried exactly; the message names the row's
    /// key, the column and the value, and says what to do.
    #[error("{0}")]
    Row(String),
}

/// The per-dialect value fixes a batch goes through, fixed for a stream
/// run: which dialects are read and written, the source's described
/// columns, and the stream's and site's rules.
pub(crate) struct ValueFixes<'a> {
    /// Pull or push (a site's time zone works one way or the other).
    pub(crate) direction: Direction,
    /// The source's dialect (MySQL zero dates come from MySQL only).
    pub(crate) source_dialect: Dialect,
    /// The source's (name, type) pairs.
    pub(crate) described: &'a [(String, String)],
    /// A SQLite cursor declared this date/time type: read by instant.
    pub(crate) cursor_date_time: Option<&'a str>,
    /// The target's dialect (PostgreSQL rounding checks, zero dates kept
    /// for MySQL).
    pub(crate) target_dialect: Dialect,
    /// The target table.
    pub(crate) target: &'a TableInfo,
    /// The stream's `zero_dates` rule.
    pub(crate) zero_dates: ZeroDates,
    /// The stream's `booleans` (source column names).
    pub(crate) booleans: &'a [String],
    /// The site's `timezone` tag.
    pub(crate) site_zone: Option<chrono_tz::Tz>,
}

/// A batch mapped to target rows and checked, ready to write.
pub(crate) struct MappedBatch {
    /// Rows to upsert, in `target_columns` order.
    pub(crate) rows: Vec<Vec<Value>>,
    /// Conflict keys of rows whose soft-delete flag is set.
    pub(crate) deleted_keys: Vec<Vec<Value>>,
    /// The keyset position of the batch's last row (when asked for), with a
    /// SQLite date-time cursor as its instant.
    pub(crate) end: Option<Vec<Value>>,
    /// Source rows in the batch.
    pub(crate) read: u64,
    /// Rows refused here, as (target row, reason), set aside by
    /// [`MappingPlan::map_batch_sparing`] (empty from `map_batch`).
    pub(crate) refused: Vec<(Vec<Value>, String)>,
    /// Source rows the stream's `filter` dropped (counted in `read`, not
    /// written; the end position still covers them).
    pub(crate) filtered: u64,
}

/// A batch's target rows after the stream's filter and computations
/// ([`MappingPlan::transform_and_map`]).
struct TransformedRows {
    /// Target rows, in `target_columns` order.
    rows: Vec<Vec<Value>>,
    /// Their soft-delete flags (`None` without `delete_column`).
    flags: Option<Vec<bool>>,
    /// Source rows the filter dropped.
    filtered: u64,
}

/// Where a target value comes from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum MapSource {
    /// The site id (pull `site_column`).
    SiteId,
    /// A column of the source batch, by index.
    Column(usize),
    /// A `compute` expression, by index in the stream's `compute` (its
    /// value is appended to the source row before mapping).
    Computed(usize),
}

/// A stream's `compute` and `filter`, compiled against the source's
/// described columns for one stream run at one site
/// ([`MappingPlan::with_transforms`]).
#[derive(Debug)]
pub(crate) struct Transforms {
    /// `(target column, expression)`, in the stream's `compute` order.
    computed: Vec<(String, expr::Expr)>,
    /// The row filter: a row it rejects is not written.
    filter: Option<expr::Expr>,
    /// `site` and `run` for the expressions.
    scope: expr::ExprScope,
    /// Values in a source row (computed values are appended after them).
    source_width: usize,
}

impl Transforms {
    /// Compiles `stream`'s `compute` and `filter` against `sides` (the
    /// source's described columns in row order, the target table); `None`
    /// when the stream has neither. Every
    /// expression is compiled and every problem reported, one per line:
    /// besides [`expr::Expr::compile`]'s, a computed column missing at the
    /// target, a result type the target column cannot take
    /// ([`expr::Ty::fits`]), a site tag the scope's site lacks.
    ///
    /// Errors: [`MapError::Plan`], each line starting with
    /// `compute.<column>` or `filter`.
    pub(crate) fn compile(
        stream: &Stream,
        sides: &TransformSides<'_>,
        scope: expr::ExprScope,
    ) -> Result<Option<Transforms>, MapError> {
        if stream.compute.is_empty() && stream.filter.is_none() {
            return Ok(None);
        }
        let described = sides.typed_columns(&stream.booleans);
        let described = described.as_slice();
        let target = sides.target;
        let mut problems = Vec::new();
        let mut computed = Vec::with_capacity(stream.compute.len());
        for (column, text) in &stream.compute {
            let place = format!("`compute.{column}`");
            match expr::Expr::compile_typed(text, described, &place) {
                Ok(compiled) => {
                    problems.extend(target_problem(
                        &place,
                        column,
                        &compiled,
                        target,
                        sides.target_dialect,
                    ));
                    problems.extend(tag_problems(&place, &compiled, &scope));
                    computed.push((column.clone(), compiled));
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        let mut filter = None;
        if let Some(text) = &stream.filter {
            match expr::Expr::compile_typed(text, described, "`filter`") {
                Ok(compiled) if !matches!(compiled.ty(), expr::Ty::Bool | expr::Ty::Dyn) => {
                    problems.push(format!(
                        "`filter`: expression `{text}` gives a {}, not a bool",
                        compiled.ty()
                    ));
                }
                Ok(compiled) => {
                    problems.extend(tag_problems("`filter`", &compiled, &scope));
                    filter = Some(compiled);
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        if !problems.is_empty() {
            return Err(MapError::Plan(problems.join("\n")));
        }
        // Bound to this (run, site): its `site.*`/`run.*` parts are
        // evaluated once here, not at each row.
        let computed = computed
            .into_iter()
            .map(|(column, compiled)| (column, compiled.bound(&scope)))
            .collect();
        let filter = filter.map(|compiled| compiled.bound(&scope));
        Ok(Some(Transforms {
            computed,
            filter,
            scope,
            source_width: described.len(),
        }))
    }
}

/// What a stream's expressions are compiled against: the source's
/// described (name, type) columns in row order and its dialect, the
/// target table and its dialect.
pub(crate) struct TransformSides<'a> {
    /// The source's (name, type) pairs, in row order.
    pub(crate) described: &'a [(String, String)],
    /// The source's dialect (what its type names mean).
    pub(crate) source_dialect: Dialect,
    /// The target table.
    pub(crate) target: &'a TableInfo,
    /// The target's dialect.
    pub(crate) target_dialect: Dialect,
}

impl TransformSides<'_> {
    /// The source columns with their expression types; a column listed in
    /// the stream's `booleans` is a bool.
    fn typed_columns(&self, booleans: &[String]) -> Vec<(String, expr::Ty)> {
        self.described
            .iter()
            .map(|(name, type_name)| {
                let ty = if booleans.contains(name) {
                    expr::Ty::Bool
                } else {
                    expr::Ty::of_source(self.source_dialect, type_name)
                };
                (name.clone(), ty)
            })
            .collect()
    }
}

/// Why computed column `column` cannot be written to `target`, if so.
fn target_problem(
    place: &str,
    column: &str,
    compiled: &expr::Expr,
    target: &TableInfo,
    target_dialect: Dialect,
) -> Option<String> {
    let Some(info) = target.column(column) else {
        return Some(format!(
            "{place}: the target has no column `{column}`; add it, or compute another column"
        ));
    };
    let wanted = expr::Ty::of_target(target_dialect, &info.data_type);
    (!compiled.ty().fits(wanted)).then(|| {
        format!(
            "{place}: expression `{}` gives a {}, which column `{column}` (`{}`) cannot take; convert it (`decimal()`, `int()`, `string()`, `timestamp()`)",
            compiled.text(),
            compiled.ty(),
            info.data_type
        )
    })
}

/// The site tags `compiled` reads that the scope's site lacks.
fn tag_problems(place: &str, compiled: &expr::Expr, scope: &expr::ExprScope) -> Vec<String> {
    compiled
        .tags()
        .iter()
        .filter(|tag| !scope.site_tags.contains_key(*tag))
        .map(|tag| {
            format!(
                "{place}: expression `{}` reads `site.tags.{tag}`, which site `{}` lacks; add the tag to the site",
                compiled.text(),
                scope.site_id
            )
        })
        .collect()
}

/// How source rows become target rows, resolved from the first batch's
/// column names.
#[derive(Debug)]
pub(crate) struct MappingPlan {
    /// Target columns written, in order (pull: `site_column` first).
    pub(crate) target_columns: Vec<String>,
    /// Each target column's cast type (`TableInfo` `cast_type`).
    pub(crate) column_types: Vec<String>,
    /// Where each target column's value comes from.
    pub(crate) sources: Vec<MapSource>,
    /// The upsert's conflict key ([`MappingPlan::conflict_key_of`]).
    pub(crate) conflict_key: Vec<String>,
    /// Indexes in the source row of the keyset (cursor, key...).
    pub(crate) keyset_indexes: Vec<usize>,
    /// Indexes (in `keyset_indexes`) of primary key columns, never NULL.
    key_names: Vec<String>,
    /// Index in the source batch of the soft-delete flag (`delete_column`).
    delete_index: Option<usize>,
    /// The stream's `compute` and `filter`, once compiled
    /// ([`MappingPlan::with_transforms`]).
    transforms: Option<Transforms>,
}

impl MappingPlan {
    /// The upsert's conflict key of `stream` in `direction`, as target
    /// column names: `site_column` first for a pull, then `primary_key`.
    /// The target needs a unique key on exactly these columns.
    pub(crate) fn conflict_key_of(stream: &Stream, direction: Direction) -> Vec<String> {
        let mut key: Vec<String> = Vec::new();
        if direction == Direction::Pull {
            key.extend(stream.site_column.iter().cloned());
        }
        key.extend(stream.primary_key.iter().cloned());
        key
    }

    /// The (target, source) column pairs `stream` writes besides a pull's
    /// `site_column`: the `columns` mapping, or every source column under
    /// its own name, except one named like a pull's `site_column` (the site
    /// id replaces it: that is what the column means at the master) and the
    /// soft-delete flag where the target does not keep it, a column the
    /// stream computes (`compute`), and a column only its expressions read
    /// that the target lacks (`amount_cents` feeding `amount`). Computed
    /// columns are not in the list. Used by [`MappingPlan::build`], the
    /// schema check and `hubsync check`, so all three agree on what is
    /// copied.
    pub(crate) fn written_columns(
        stream: &Stream,
        direction: Direction,
        source_columns: &[String],
        target: &TableInfo,
    ) -> Vec<(String, String)> {
        let read_by_expressions = stream.expression_columns();
        match &stream.columns {
            Some(pairs) => pairs.clone(),
            None => source_columns
                .iter()
                .filter(|c| direction == Direction::Push || stream.site_column.as_ref() != Some(*c))
                .filter(|c| stream.delete_column.as_ref() != Some(*c) || target.column(c).is_some())
                .filter(|c| !stream.compute.iter().any(|(computed, _)| computed == *c))
                .filter(|c| !read_by_expressions.contains(c) || target.column(c).is_some())
                .map(|c| (c.clone(), c.clone()))
                .collect(),
        }
    }

    /// Builds the plan of `stream` in `direction` for a source returning
    /// `source_columns` (names, in order) into the table `target`
    /// (`target_place` names it in messages).
    ///
    /// Errors ([`MapError::Plan`]): a mapped, cursor, key or `delete_column`
    /// source column the source does not return; a written column missing
    /// at the target; a conflict key column not written.
    pub(crate) fn build(
        stream: &Stream,
        direction: Direction,
        source_columns: &[String],
        target: &TableInfo,
        target_place: &str,
    ) -> Result<MappingPlan, MapError> {
        let find_source = |name: &str| -> Result<usize, MapError> {
            source_columns
                .iter()
                .position(|c| c == name)
                .ok_or_else(|| {
                    MapError::Plan(format!(
                        "source column `{name}` not found; the source returns: {}",
                        quoted_list(source_columns)
                    ))
                })
        };
        let mut target_columns = Vec::new();
        let mut sources = Vec::new();
        if direction == Direction::Pull
            && let Some(site_column) = &stream.site_column
        {
            target_columns.push(site_column.clone());
            sources.push(MapSource::SiteId);
        }
        for (target_column, source_column) in
            MappingPlan::written_columns(stream, direction, source_columns, target)
        {
            sources.push(MapSource::Column(find_source(&source_column)?));
            target_columns.push(target_column);
        }
        for (at, (computed, _)) in stream.compute.iter().enumerate() {
            sources.push(MapSource::Computed(at));
            target_columns.push(computed.clone());
        }
        let mut column_types = Vec::with_capacity(target_columns.len());
        for column in &target_columns {
            match target.column(column) {
                Some(info) => column_types.push(info.cast_type.clone()),
                None => {
                    return Err(MapError::Plan(format!(
                        "column `{column}` is missing in {target_place}; add it, or select and rename columns with `columns = {{ target = \"source\" }}`"
                    )));
                }
            }
        }
        let conflict_key = MappingPlan::conflict_key_of(stream, direction);
        for key in &conflict_key {
            if !target_columns.contains(key) {
                return Err(MapError::Plan(format!(
                    "primary key column `{key}` is not among the columns written to {target_place}"
                )));
            }
        }
        let keyset_indexes = stream
            .keyset_source_columns()
            .iter()
            .map(|c| find_source(c))
            .collect::<Result<Vec<_>, _>>()?;
        let delete_index = stream
            .delete_column
            .as_deref()
            .map(|flag| {
                find_source(flag).map_err(|e| {
                    MapError::Plan(format!("{e} (it is the stream's `delete_column`)"))
                })
            })
            .transpose()?;
        Ok(MappingPlan {
            target_columns,
            column_types,
            sources,
            conflict_key,
            keyset_indexes,
            key_names: stream.keyset_source_columns(),
            delete_index,
            transforms: None,
        })
    }

    /// The plan with `stream`'s `compute` and `filter` compiled against
    /// `sides` (the source's described columns, in the order of the
    /// `source_columns` the plan was built from, and the target table),
    /// evaluated in `scope`. Needed before mapping a batch of a stream
    /// that has them.
    ///
    /// Errors: [`Transforms::compile`]'s.
    pub(crate) fn with_transforms(
        mut self,
        stream: &Stream,
        sides: &TransformSides<'_>,
        scope: expr::ExprScope,
    ) -> Result<MappingPlan, MapError> {
        self.transforms = Transforms::compile(stream, sides, scope)?;
        Ok(self)
    }

    /// Target rows of `batch` through the stream's filter and
    /// computations, in one pass and one new vector per kept row (as
    /// [`MappingPlan::map_rows`]): a row the filter rejects is dropped; a
    /// kept row's computed values are evaluated into a buffer reused for
    /// the whole batch, then moved with its source values into the target
    /// row. Returns the target rows, their soft-delete flags as
    /// [`MappingPlan::deleted_flags`] gives them, and the rows dropped.
    ///
    /// Errors: [`MapError::Plan`] if the stream computes columns but
    /// [`MappingPlan::with_transforms`] was not called;
    /// [`MapError::Row`] naming the row's key, the expression and why.
    fn transform_and_map(&self, batch: Batch, site_id: &str) -> Result<TransformedRows, MapError> {
        let Some(transforms) = &self.transforms else {
            if self.computed_count() > 0 {
                return Err(MapError::Plan(
                    "the stream's expressions were not compiled before mapping".into(),
                ));
            }
            let flags = self.deleted_flags(&batch);
            let rows = self.map_rows(batch, site_id);
            return Ok(TransformedRows {
                rows,
                flags,
                filtered: 0,
            });
        };
        let last_use = self.last_uses();
        let before = batch.rows.len();
        let mut rows = Vec::with_capacity(before);
        let mut flags = self.delete_index.map(|_| Vec::with_capacity(before));
        let mut computed: Vec<Value> = Vec::with_capacity(transforms.computed.len());
        for mut row in batch.rows {
            if let Some(filter) = &transforms.filter {
                match filter.test(&row, &transforms.scope) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => return Err(self.expression_error(&row, site_id, "`filter`", &e)),
                }
            }
            computed.clear();
            for (column, compiled) in &transforms.computed {
                match compiled.eval(&row[..transforms.source_width], &transforms.scope) {
                    Ok(value) => computed.push(value),
                    Err(e) => {
                        let what = format!("`compute.{column}`");
                        return Err(self.expression_error(&row, site_id, &what, &e));
                    }
                }
            }
            if let (Some(flags), Some(at)) = (&mut flags, self.delete_index) {
                flags.push(row[at].marks_deleted());
            }
            rows.push(self.target_row(&mut row, &mut computed, &last_use, site_id));
        }
        let filtered = (before - rows.len()) as u64;
        Ok(TransformedRows {
            rows,
            flags,
            filtered,
        })
    }

    /// One target row, its values moved out of `row` (a source column's
    /// last use) and `computed` (the row's computed values, in `compute`
    /// order).
    fn target_row(
        &self,
        row: &mut [Value],
        computed: &mut [Value],
        last_use: &[bool],
        site_id: &str,
    ) -> Vec<Value> {
        self.sources
            .iter()
            .zip(last_use)
            .map(|(source, last)| match source {
                MapSource::SiteId => Value::Text(site_id.to_string()),
                MapSource::Column(i) if *last => std::mem::replace(&mut row[*i], Value::Null),
                MapSource::Column(i) => row[*i].clone(),
                MapSource::Computed(at) => std::mem::replace(&mut computed[*at], Value::Null),
            })
            .collect()
    }

    /// For each entry of `sources`, whether it is its source column's last
    /// use (the value moves instead of being copied).
    fn last_uses(&self) -> Vec<bool> {
        self.sources
            .iter()
            .enumerate()
            .map(|(at, source)| match source {
                MapSource::SiteId | MapSource::Computed(_) => false,
                MapSource::Column(i) => !self.sources[at + 1..]
                    .iter()
                    .any(|later| matches!(later, MapSource::Column(j) if j == i)),
            })
            .collect()
    }

    /// A row's expression failure: "row (k) = (v): `compute.amount`:
    /// expression `...`: why".
    fn expression_error(
        &self,
        row: &[Value],
        site_id: &str,
        what: &str,
        error: &expr::EvalError,
    ) -> MapError {
        MapError::Row(format!(
            "row {}: {what}: {error}; correct the row at the source, or the expression",
            self.source_key_of(row, site_id)
        ))
    }

    /// The target row of a source row refused by an expression, for the
    /// quarantine: computed values that fail are NULL.
    fn refused_target_row(
        &self,
        mut row: Vec<Value>,
        columns: &[String],
        site_id: &str,
    ) -> Vec<Value> {
        if let Some(transforms) = &self.transforms {
            row.truncate(transforms.source_width);
            for (_, compiled) in &transforms.computed {
                let value = compiled
                    .eval(&row, &transforms.scope)
                    .unwrap_or(Value::Null);
                row.push(value);
            }
        }
        let one = Batch {
            columns: columns.to_vec(),
            rows: vec![row],
        };
        self.map_rows(one, site_id).pop().unwrap_or_default()
    }

    /// Maps `batch` (read at site `site_id`) to target rows and runs every
    /// value fix of `fixes`, in order: SQLite date-time cursors read by
    /// instant, the batch's end position (when `with_end`), soft-delete
    /// flags, the mapping itself, unique conflict keys, MySQL zero dates,
    /// 0/1 booleans, booleans into integer columns as 1/0, the site's time
    /// zone, PostgreSQL text date-times and
    /// rounding checks; then splits off soft-deleted rows. Nothing is
    /// written; a refused value fails the whole batch.
    ///
    /// Errors: [`MapError::Row`] naming the row's key, the column and the
    /// value.
    pub(crate) fn map_batch(
        &self,
        mut batch: Batch,
        site_id: &str,
        fixes: &ValueFixes<'_>,
        with_end: bool,
    ) -> Result<MappedBatch, MapError> {
        let last_instant = match fixes.cursor_date_time {
            Some(declared) => self.read_cursor_instants(&mut batch.rows, site_id, declared)?,
            None => None,
        };
        let end = match batch.rows.last() {
            Some(last) if with_end => Some(self.end_position(last, last_instant)?),
            _ => None,
        };
        let source_rows = batch.rows.len() as u64;
        // `booleans` names source columns; the batch moves into `rows`.
        let source_columns = if fixes.booleans.is_empty() {
            Vec::new()
        } else {
            batch.columns.clone()
        };
        let TransformedRows {
            mut rows,
            flags,
            filtered,
        } = self.transform_and_map(batch, site_id)?;
        self.check_unique_keys(&rows)?;
        let zero_date_columns = self.zero_date_columns(fixes.source_dialect, fixes.described);
        if !zero_date_columns.is_empty() {
            self.handle_zero_dates(
                &mut rows,
                &zero_date_columns,
                fixes.zero_dates,
                fixes.target_dialect,
                fixes.target,
            )?;
        }
        if !fixes.booleans.is_empty() {
            self.apply_booleans(&mut rows, &source_columns, fixes.booleans)?;
        }
        self.booleans_as_integers(&mut rows, fixes.target_dialect, fixes.target);
        if fixes.source_dialect == Dialect::Sqlite && fixes.target_dialect != Dialect::Sqlite {
            self.sqlite_number_datetimes(&mut rows, fixes.target);
        }
        if let Some(zone) = fixes.site_zone {
            self.apply_site_zone(&mut rows, fixes, zone)?;
        }
        if fixes.target_dialect == Dialect::Postgres {
            self.parse_text_datetimes(&mut rows, fixes.target);
            self.check_postgres_values(&rows, fixes.target)?;
        }
        let (rows, deleted_keys) = self.split_deleted(flags, rows);
        Ok(MappedBatch {
            rows,
            deleted_keys,
            end,
            read: source_rows,
            refused: Vec::new(),
            filtered,
        })
    }

    /// Like [`MappingPlan::map_batch`], row by row, for a stream that
    /// quarantines refused rows (`on_error = "quarantine"`): a row whose
    /// value is refused here is set aside as (its target row, the reason)
    /// instead of failing the batch; the others are mapped as usual. The
    /// end position is the last source row's, refused or not (it is read
    /// past, and quarantined).
    ///
    /// Errors: [`MapError::Plan`]; a [`MapError::Row`] of the end position
    /// itself (a NULL key), which no quarantine can keep.
    pub(crate) fn map_batch_sparing(
        &self,
        batch: Batch,
        site_id: &str,
        fixes: &ValueFixes<'_>,
        with_end: bool,
    ) -> Result<MappedBatch, MapError> {
        let end = match batch.rows.last() {
            Some(last) if with_end => {
                let mut last = vec![last.clone()];
                let instant = match fixes.cursor_date_time {
                    Some(declared) => self.read_cursor_instants(&mut last, site_id, declared)?,
                    None => None,
                };
                Some(self.end_position(&last[0], instant)?)
            }
            _ => None,
        };
        let mut mapped = MappedBatch {
            rows: Vec::with_capacity(batch.rows.len()),
            deleted_keys: Vec::new(),
            end,
            read: 0,
            refused: Vec::new(),
            filtered: 0,
        };
        let columns = batch.columns;
        for row in batch.rows {
            let one = Batch {
                columns: columns.clone(),
                rows: vec![row.clone()],
            };
            match self.map_batch(one, site_id, fixes, false) {
                Ok(good) => {
                    mapped.rows.extend(good.rows);
                    mapped.deleted_keys.extend(good.deleted_keys);
                    mapped.read += good.read;
                    mapped.filtered += good.filtered;
                }
                Err(MapError::Row(why)) => {
                    let target_row = self.refused_target_row(row, &columns, site_id);
                    mapped.refused.push((target_row, why));
                    mapped.read += 1;
                }
                Err(plan) => return Err(plan),
            }
        }
        Ok(mapped)
    }

    /// The keyset position of a batch's last source row `last`, with the
    /// cursor's `instant` in place of its stored form where it was read by
    /// instant (a SQLite date-time cursor): the checkpoint holds the
    /// instant, whatever form the value had.
    ///
    /// Errors: a NULL key column ([`MappingPlan::position`]).
    fn end_position(&self, last: &[Value], instant: Option<Value>) -> Result<Vec<Value>, MapError> {
        let mut position = self.position(last)?;
        if let Some(instant) = instant {
            position[0] = instant;
        }
        Ok(position)
    }

    /// The keyset position of `batch`'s last row as [`MappingPlan::map_batch`]
    /// computes it (a SQLite date-time cursor as its instant), without
    /// mapping the batch: for a batch whose rows are selected (a push's
    /// `when`) after it was read, whose checkpoint still moves past every
    /// row read. `None` for an empty batch.
    ///
    /// Errors: as `map_batch`'s end (a NULL key, a cursor that is no
    /// date-time).
    pub(crate) fn batch_end(
        &self,
        batch: &Batch,
        site_id: &str,
        cursor_date_time: Option<&str>,
    ) -> Result<Option<Vec<Value>>, MapError> {
        let Some(last) = batch.rows.last() else {
            return Ok(None);
        };
        let instant = match cursor_date_time {
            Some(declared) => self.read_cursor_instants(&mut [last.clone()], site_id, declared)?,
            None => None,
        };
        self.end_position(last, instant).map(Some)
    }

    /// Indexes in `target_columns` of the conflict key columns.
    pub(crate) fn key_indexes(&self) -> Vec<usize> {
        self.conflict_key
            .iter()
            .filter_map(|k| self.target_columns.iter().position(|c| c == k))
            .collect()
    }

    /// The upsert of mapped rows into `table`: the written columns, their
    /// types and the conflict key (the row shape [`MappingPlan::map_batch`]
    /// produces).
    pub(crate) fn upsert_spec<'a>(&'a self, table: &'a str) -> UpsertSpec<'a> {
        UpsertSpec {
            table,
            columns: &self.target_columns,
            column_types: &self.column_types,
            key: &self.conflict_key,
        }
    }

    /// The conflict key's columns and types, for deleting by key.
    pub(crate) fn delete_spec<'a>(
        &'a self,
        table: &'a str,
        key_types: &'a [String],
    ) -> UpsertSpec<'a> {
        UpsertSpec {
            table,
            columns: &self.conflict_key,
            column_types: key_types,
            key: &self.conflict_key,
        }
    }

    /// Types of the conflict key columns, in `conflict_key` order.
    pub(crate) fn key_types(&self) -> Vec<String> {
        self.key_indexes()
            .iter()
            .map(|i| self.column_types[*i].clone())
            .collect()
    }

    /// Splits mapped `rows` into rows to upsert and the conflict keys of
    /// rows whose soft-delete flag is set (`flags`, from
    /// [`MappingPlan::deleted_flags`]), to delete.
    pub(crate) fn split_deleted(
        &self,
        flags: Option<Vec<bool>>,
        rows: Vec<Vec<Value>>,
    ) -> (Vec<Vec<Value>>, Vec<Vec<Value>>) {
        let Some(flags) = flags else {
            return (rows, Vec::new());
        };
        let key_indexes = self.key_indexes();
        let mut live = Vec::with_capacity(rows.len());
        let mut deleted = Vec::new();
        for (deleted_at_source, row) in flags.into_iter().zip(rows) {
            if deleted_at_source {
                deleted.push(key_indexes.iter().map(|i| row[*i].clone()).collect());
            } else {
                live.push(row);
            }
        }
        (live, deleted)
    }

    /// Target rows of a batch, in `target_columns` order. Values move out
    /// of the batch (a source column feeding several target columns is
    /// copied for all but its last use), so a batch is not held twice.
    pub(crate) fn map_rows(&self, batch: Batch, site_id: &str) -> Vec<Vec<Value>> {
        // Every source column in target order, nothing added (a push of
        // the master's columns as they are): the rows are the target rows.
        let identity = self
            .sources
            .iter()
            .enumerate()
            .all(|(i, source)| matches!(source, MapSource::Column(j) if *j == i));
        if identity && batch.rows.iter().all(|row| row.len() == self.sources.len()) {
            return batch.rows;
        }
        let last_use = self.last_uses();
        let computed = self.computed_count();
        batch
            .rows
            .into_iter()
            .map(|mut row| {
                self.sources
                    .iter()
                    .zip(&last_use)
                    .map(|(source, last)| match source {
                        MapSource::SiteId => Value::Text(site_id.to_string()),
                        MapSource::Column(i) if *last => {
                            std::mem::replace(&mut row[*i], Value::Null)
                        }
                        MapSource::Column(i) => row[*i].clone(),
                        MapSource::Computed(at) => {
                            let width = row.len() - computed;
                            std::mem::replace(&mut row[width + *at], Value::Null)
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// For each source row of `batch`, whether its soft-delete flag is set;
    /// `None` without `delete_column`.
    pub(crate) fn deleted_flags(&self, batch: &Batch) -> Option<Vec<bool>> {
        let flag = self.delete_index?;
        Some(
            batch
                .rows
                .iter()
                .map(|row| row[flag].marks_deleted())
                .collect(),
        )
    }

    /// Errors if two rows of one batch have the same conflict key: the
    /// source's key is not unique, and one row would silently replace the
    /// other (or PostgreSQL would refuse the whole batch without saying why).
    pub(crate) fn check_unique_keys(&self, rows: &[Vec<Value>]) -> Result<(), MapError> {
        let key_indexes = self.key_indexes();
        let mut seen = std::collections::HashSet::with_capacity(rows.len());
        for row in rows {
            let key: Vec<Option<std::borrow::Cow<'_, str>>> =
                key_indexes.iter().map(|i| row[*i].pg_text()).collect();
            if !seen.insert(key) {
                let shown: Vec<String> = key_indexes.iter().map(|i| row[*i].to_string()).collect();
                return Err(MapError::Row(format!(
                    "two source rows have the same key ({}) = ({}); `primary_key` must identify one row at the source \
                     (add the missing key column, or de-duplicate in a `query`)",
                    self.conflict_key.join(", "),
                    shown.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Target column indexes whose source column is a MySQL `DATE`,
    /// `DATETIME` or `TIMESTAMP` (`described`: the source's (name, type)
    /// pairs), where zero dates can come from. Empty for other sources.
    pub(crate) fn zero_date_columns(
        &self,
        source_dialect: crate::dialect::Dialect,
        described: &[(String, String)],
    ) -> Vec<usize> {
        if source_dialect != crate::dialect::Dialect::MySql {
            return Vec::new();
        }
        self.sources
            .iter()
            .enumerate()
            .filter_map(|(target_index, source)| match source {
                MapSource::Column(i) => described
                    .get(*i)
                    .filter(|(_, ty)| matches!(ty.as_str(), "DATE" | "DATETIME" | "TIMESTAMP"))
                    .map(|_| target_index),
                MapSource::SiteId | MapSource::Computed(_) => None,
            })
            .collect()
    }

    /// The stream's `booleans` (source column names): 0/1 integers become
    /// booleans; any other value stops the batch, naming row key, column
    /// and value.
    pub(crate) fn apply_booleans(
        &self,
        rows: &mut [Vec<Value>],
        source_columns: &[String],
        booleans: &[String],
    ) -> Result<(), MapError> {
        let columns: Vec<usize> = self
            .sources
            .iter()
            .enumerate()
            .filter_map(|(target_index, source)| match source {
                MapSource::Column(i) if booleans.contains(&source_columns[*i]) => {
                    Some(target_index)
                }
                _ => None,
            })
            .collect();
        for row in rows.iter_mut() {
            for column in &columns {
                row[*column] = match &row[*column] {
                    Value::Int(0) => Value::Bool(false),
                    Value::Int(1) => Value::Bool(true),
                    Value::Null | Value::Bool(_) => continue,
                    other => {
                        return Err(MapError::Row(format!(
                            "row {}: column `{}`: value `{other}` ({}) is not a boolean (0 or 1), and the stream \
                             lists it in `booleans`",
                            self.key_of(row),
                            self.target_columns[*column],
                            other.kind()
                        )));
                    }
                };
            }
        }
        Ok(())
    }

    /// "(k1, k2) = (v1, v2)": a target row's conflict key, for messages.
    pub(crate) fn key_of(&self, row: &[Value]) -> String {
        let values: Vec<String> = self
            .conflict_key
            .iter()
            .filter_map(|k| self.target_columns.iter().position(|c| c == k))
            .map(|i| row[i].to_string())
            .collect();
        format!(
            "({}) = ({})",
            self.conflict_key.join(", "),
            values.join(", ")
        )
    }

    /// PostgreSQL targets: date-times that arrive as ISO 8601 text (SQLite
    /// stores them so) become typed values for `timestamp` columns, so that
    /// an offset is honoured (`10:00+02:00` is 08:00 UTC, which PostgreSQL's
    /// own cast to `timestamp` would drop) and fractions the column would
    /// round are refused by [`MappingPlan::check_postgres_values`]. Text that
    /// is not such a date-time is left to the database.
    pub(crate) fn parse_text_datetimes(&self, rows: &mut [Vec<Value>], target: &TableInfo) {
        let columns = self.target_columns_where(target, |t| {
            t.starts_with("timestamp") && !t.contains("with time zone")
        });
        for row in rows.iter_mut() {
            for i in &columns {
                let Value::Text(text) = &row[*i] else {
                    continue;
                };
                let text = text.trim();
                let parsed = chrono::DateTime::parse_from_rfc3339(text)
                    .map(|ts| ts.naive_utc())
                    .or_else(|_| {
                        chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                    })
                    .or_else(|_| {
                        chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                    });
                if let Ok(naive) = parsed {
                    row[*i] = Value::Timestamp(naive);
                }
            }
        }
    }

    /// Refuses, before anything is written, a value a PostgreSQL target
    /// column would silently round (`connector::pg_check_value`), naming
    /// row key, column, value and both types.
    pub(crate) fn check_postgres_values(
        &self,
        rows: &[Vec<Value>],
        target: &TableInfo,
    ) -> Result<(), MapError> {
        let checked: Vec<(usize, &str)> = self
            .target_columns
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                let data_type = target.column(name)?.data_type.as_str();
                (data_type.starts_with("numeric(")
                    || data_type.starts_with("timestamp(")
                    || data_type.starts_with("time("))
                .then_some((i, data_type))
            })
            .collect();
        if checked.is_empty() {
            return Ok(());
        }
        for row in rows {
            for (i, data_type) in &checked {
                if let Err(why) = crate::connector::pg_check_value(data_type, &row[*i]) {
                    return Err(MapError::Row(format!(
                        "row {}: column `{}`: {why}",
                        self.key_of(row),
                        self.target_columns[*i]
                    )));
                }
            }
        }
        Ok(())
    }

    /// Positions (in `target_columns`) of the written columns whose type in
    /// `target` (its `data_type` text, as described) satisfies `keep`.
    fn target_columns_where(&self, target: &TableInfo, keep: impl Fn(&str) -> bool) -> Vec<usize> {
        (self.target_columns.iter().enumerate())
            .filter(|(_, name)| target.column(name).is_some_and(|c| keep(&c.data_type)))
            .map(|(i, _)| i)
            .collect()
    }

    /// Booleans bound for an integer column (PostgreSQL `smallint`,
    /// `integer`, `bigint`; MySQL `TINYINT`..`BIGINT`, `TINYINT(1)`
    /// included; a SQLite column of integer affinity, whose declared type
    /// contains `INT`) are written as 1 and 0, MySQL's `TINYINT(1)`
    /// convention: PostgreSQL refuses its own `t`/`f` text in an integer
    /// column (a trial saw a PostgreSQL site's `boolean` fail every run into
    /// the `smallint` a MariaDB site's `TINYINT(1)` had created at the
    /// master), and all three dialects then hold the same numbers.
    pub(crate) fn booleans_as_integers(
        &self,
        rows: &mut [Vec<Value>],
        target_dialect: Dialect,
        target: &TableInfo,
    ) {
        let columns = self.target_columns_where(target, |t| is_integer_type(target_dialect, t));
        if columns.is_empty() {
            return;
        }
        for row in rows.iter_mut() {
            for column in &columns {
                if let Value::Bool(flag) = row[*column] {
                    row[*column] = Value::Int(i64::from(flag));
                }
            }
        }
    }

    /// A SQLite source's date-time column may hold numbers, which SQLite's
    /// date functions read as Julian days or unix seconds (`'auto'`, see
    /// `connector::sqlite_instant`); bound for a date-time column of
    /// another database (`timestamp...`, `datetime...`), such a
    /// number is written as the instant it stands for instead of a number
    /// the target refuses (a trial saw `2461193.25` fail the stream with
    /// PostgreSQL's "invalid input syntax"). A number that is no time value
    /// (out of range) is left for the target to refuse.
    pub(crate) fn sqlite_number_datetimes(&self, rows: &mut [Vec<Value>], target: &TableInfo) {
        let columns = self.target_columns_where(target, |t| {
            let t = t.to_ascii_lowercase();
            t.starts_with("timestamp") || t.starts_with("datetime")
        });
        if columns.is_empty() {
            return;
        }
        for row in rows.iter_mut() {
            for column in &columns {
                if matches!(row[*column], Value::Int(_) | Value::Float(_))
                    && let Some(instant) = crate::connector::sqlite_instant(&row[*column])
                {
                    row[*column] = instant;
                }
            }
        }
    }

    /// With a site `timezone` tag: a pull turns the site's local date-times
    /// (`timestamp without time zone`, MySQL `DATETIME`, and a SQLite
    /// site's date-time text without offset, `2026-01-01 12:01:00`, in any
    /// form SQLite's date functions read) into instants where the master
    /// column has a zone (`timestamp with time zone`, MySQL `TIMESTAMP`); a
    /// push turns instants into the site's local time where the site column
    /// has none. SQLite text with an offset is that instant already. A local
    /// time that happens twice (clocks go back) is taken as its first
    /// occurrence; one that does not exist (clocks go forward) stops the
    /// batch, naming row key, column and value.
    pub(crate) fn apply_site_zone(
        &self,
        rows: &mut [Vec<Value>],
        fixes: &ValueFixes<'_>,
        zone: chrono_tz::Tz,
    ) -> Result<(), MapError> {
        use chrono::TimeZone as _;
        let (direction, target) = (fixes.direction, fixes.target);
        let sqlite_text = direction == Direction::Pull && fixes.source_dialect == Dialect::Sqlite;
        let zoned = |data_type: &str| {
            let t = data_type.to_ascii_lowercase();
            // PostgreSQL `timestamp(3) with time zone`; MySQL `timestamp(6)`.
            t.contains("with time zone")
                || (t.starts_with("timestamp") && !t.contains("without time zone"))
        };
        let zone_less = |data_type: &str| {
            let t = data_type.to_ascii_lowercase();
            t.contains("without time zone") || t.starts_with("datetime")
        };
        let columns = self.target_columns_where(target, |t| match direction {
            Direction::Pull => zoned(t),
            Direction::Push => zone_less(t),
        });
        for row in rows.iter_mut() {
            for column in &columns {
                let local = match (&row[*column], direction) {
                    (Value::Timestamp(local), Direction::Pull) => *local,
                    (Value::Text(_), Direction::Pull) if sqlite_text => {
                        match crate::connector::sqlite_instant(&row[*column]) {
                            Some(Value::Timestamp(local)) => local,
                            Some(instant @ Value::TimestampTz(_)) => {
                                row[*column] = instant;
                                continue;
                            }
                            // Not date-time text: written as it is (the
                            // master's column decides).
                            _ => continue,
                        }
                    }
                    (Value::TimestampTz(instant), Direction::Push) => {
                        row[*column] = Value::Timestamp(instant.with_timezone(&zone).naive_local());
                        continue;
                    }
                    _ => continue,
                };
                let Some(instant) = zone.from_local_datetime(&local).earliest() else {
                    return Err(MapError::Row(format!(
                        "row {}: column `{}`: local time `{local}` does not exist in the site's \
                         time zone `{zone}` (the clocks went forward over it); correct it at the source",
                        self.key_of(row),
                        self.target_columns[*column]
                    )));
                };
                row[*column] = Value::TimestampTz(instant.with_timezone(&chrono::Utc));
            }
        }
        Ok(())
    }

    /// MySQL zero dates (read as their text, `0000-00-00`) in the given
    /// target columns: NULL with `zero_dates = "null"`; otherwise kept for a
    /// MySQL target (whose sql_mode decides) and an error naming row key,
    /// column, value and both types for any other target, before anything
    /// of the batch is written.
    pub(crate) fn handle_zero_dates(
        &self,
        rows: &mut [Vec<Value>],
        columns: &[usize],
        rule: ZeroDates,
        target_dialect: crate::dialect::Dialect,
        target: &TableInfo,
    ) -> Result<(), MapError> {
        for row in rows.iter_mut() {
            for column in columns {
                let Value::Text(text) = &row[*column] else {
                    continue;
                };
                if rule == ZeroDates::Null {
                    row[*column] = Value::Null;
                    continue;
                }
                if target_dialect == crate::dialect::Dialect::MySql {
                    continue;
                }
                let name = &self.target_columns[*column];
                let target_type = target.column(name).map_or("?", |c| c.data_type.as_str());
                let key: Vec<String> = self
                    .conflict_key
                    .iter()
                    .filter_map(|k| self.target_columns.iter().position(|c| c == k))
                    .map(|i| row[i].to_string())
                    .collect();
                return Err(MapError::Row(format!(
                    "row ({}) = ({}): column `{name}`: MySQL zero date `{text}` has no {} form (target type `{target_type}`); \
                     set `zero_dates = \"null\"` on the stream to write NULL instead",
                    self.conflict_key.join(", "),
                    key.join(", "),
                    target_dialect.name()
                )));
            }
        }
        Ok(())
    }

    /// For a SQLite cursor declared the date/time type `declared`: reads
    /// each source row's cursor value as the instant it stands for
    /// ([`crate::connector::sqlite_instant`]), the way the keyset read
    /// orders them. A Julian-day REAL or unix-second INTEGER is replaced by
    /// that instant, so the target receives a date-time; text stays as
    /// written (every target parses it). Returns the last row's instant
    /// (`None` for no rows), for the checkpoint. A value that is no
    /// date-time stops the batch, naming row key, column and value.
    pub(crate) fn read_cursor_instants(
        &self,
        rows: &mut [Vec<Value>],
        site_id: &str,
        declared: &str,
    ) -> Result<Option<Value>, MapError> {
        let cursor = self.keyset_indexes[0];
        let mut last = None;
        for row in rows.iter_mut() {
            let Some(instant) = crate::connector::sqlite_instant(&row[cursor]) else {
                return Err(MapError::Row(format!(
                    "row {}: column `{}`: value `{}` ({}) is not a date-time; a cursor declared `{declared}` is read \
                     by instant and must hold {}; correct the value at the source",
                    self.source_key_of(row, site_id),
                    self.key_names[0],
                    row[cursor],
                    row[cursor].kind(),
                    crate::connector::SQLITE_INSTANT_FORMS
                )));
            };
            if matches!(row[cursor], Value::Int(_) | Value::Float(_)) {
                row[cursor] = instant.clone();
            }
            last = Some(instant);
        }
        Ok(last)
    }

    /// "(k1, k2) = (v1, v2)": the conflict key of a source row (before
    /// [`MappingPlan::map_rows`]), for messages.
    pub(crate) fn source_key_of(&self, row: &[Value], site_id: &str) -> String {
        let values: Vec<String> = self
            .conflict_key
            .iter()
            .filter_map(|k| self.target_columns.iter().position(|c| c == k))
            .map(|target| match self.sources[target] {
                MapSource::SiteId => site_id.to_string(),
                MapSource::Column(i) => row[i].to_string(),
                // Key columns are never computed (the config refuses it).
                MapSource::Computed(_) => "?".to_string(),
            })
            .collect();
        format!(
            "({}) = ({})",
            self.conflict_key.join(", "),
            values.join(", ")
        )
    }

    /// Computed target columns (values appended to each source row).
    fn computed_count(&self) -> usize {
        self.sources
            .iter()
            .filter(|s| matches!(s, MapSource::Computed(_)))
            .count()
    }

    /// The cursor column's index in a source row as read.
    pub(crate) fn cursor_index(&self) -> usize {
        self.keyset_indexes[0]
    }

    /// The keyset position of a row; errors if a key column is NULL, since
    /// a NULL in the position would make the next read skip rows.
    pub(crate) fn position(&self, row: &[Value]) -> Result<Vec<Value>, MapError> {
        let position: Vec<Value> = self
            .keyset_indexes
            .iter()
            .map(|i| row[*i].clone())
            .collect();
        if let Some(at) = position.iter().position(Value::is_null) {
            return Err(MapError::Row(format!(
                "key column `{}` is NULL in a source row; keys must not be NULL",
                self.key_names[at]
            )));
        }
        Ok(position)
    }
}

/// Whether a column of `data_type` (as [`crate::connector::ColumnInfo`]
/// describes it in `dialect`) holds integers: PostgreSQL `smallint`,
/// `integer`, `bigint`; MySQL `tinyint`, `smallint`, `mediumint`, `int`,
/// `bigint` with any display width or `unsigned`; SQLite any declared type
/// containing `INT` (its integer affinity rule, sqlite.org/datatype3.html
/// 3.1 rule 1).
fn is_integer_type(dialect: Dialect, data_type: &str) -> bool {
    let lower = data_type.to_ascii_lowercase();
    if dialect == Dialect::Sqlite {
        return lower.contains("int");
    }
    let name = lower
        .split(|c: char| c == '(' || c.is_whitespace())
        .next()
        .unwrap_or_default();
    matches!(
        name,
        "smallint" | "integer" | "bigint" | "tinyint" | "mediumint" | "int"
    )
}

pub(crate) fn quoted_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, data_type: &str) -> crate::connector::ColumnInfo {
        crate::connector::ColumnInfo {
            name: name.into(),
            data_type: data_type.into(),
            cast_type: data_type.into(),
            required: false,
        }
    }

    fn stream(extra: &str) -> Stream {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[master]\nurl = \"sqlite://master.db\"\n[[site]]\nid = \"s1\"\nurl = \"sqlite://s1.db\"\n\
             [[flow]]\nname = \"f\"\ndirection = \"pull\"\n  [[flow.stream]]\n  source = \"sales\"\n  \
             target = \"sales\"\n  primary_key = [\"id\"]\n  cursor = \"updated_at\"\n  site_column = \"store_id\"\n  {extra}\n"
        );
        let config =
            crate::config::Config::parse(&text, &dir.path().join("h.toml"), dir.path(), &|_| None)
                .unwrap();
        config.flows[0].streams[0].clone()
    }

    fn master_sales(with_deleted: bool) -> TableInfo {
        let mut columns = vec![
            column("store_id", "text"),
            column("id", "integer"),
            column("qty", "integer"),
            column("updated_at", "text"),
        ];
        if with_deleted {
            columns.push(column("deleted", "integer"));
        }
        TableInfo {
            columns,
            unique_keys: vec![vec!["store_id".into(), "id".into()]],
            case_insensitive_names: false,
        }
    }

    fn fixes<'a>(target: &'a TableInfo, described: &'a [(String, String)]) -> ValueFixes<'a> {
        ValueFixes {
            direction: Direction::Pull,
            source_dialect: Dialect::Sqlite,
            described,
            cursor_date_time: None,
            target_dialect: Dialect::Sqlite,
            target,
            zero_dates: ZeroDates::Error,
            booleans: &[],
            site_zone: None,
        }
    }

    #[test]
    fn integer_types_per_dialect_take_booleans_as_1_and_0() {
        for (dialect, data_type, integer) in [
            (Dialect::Postgres, "smallint", true),
            (Dialect::Postgres, "integer", true),
            (Dialect::Postgres, "bigint", true),
            (Dialect::Postgres, "interval", false),
            (Dialect::Postgres, "boolean", false),
            (Dialect::Postgres, "numeric(5,0)", false),
            (Dialect::MySql, "tinyint(1)", true),
            (Dialect::MySql, "int(10) unsigned", true),
            (Dialect::MySql, "mediumint(9)", true),
            (Dialect::MySql, "varchar(10)", false),
            (Dialect::Sqlite, "INTEGER", true),
            (Dialect::Sqlite, "UNSIGNED BIG INT", true),
            (Dialect::Sqlite, "BOOLEAN", false),
            (Dialect::Sqlite, "", false),
        ] {
            assert_eq!(
                is_integer_type(dialect, data_type),
                integer,
                "{dialect:?} {data_type}"
            );
        }
        let stream = stream("");
        let source = ["id", "qty", "updated_at"].map(String::from);
        let target = master_sales(false);
        let plan = MappingPlan::build(&stream, Direction::Pull, &source, &target, "t").unwrap();
        let mut rows = vec![
            vec![
                Value::Text("s1".into()),
                Value::Int(1),
                Value::Bool(true),
                Value::Bool(false),
            ],
            vec![
                Value::Text("s1".into()),
                Value::Int(2),
                Value::Bool(false),
                Value::Null,
            ],
        ];
        plan.booleans_as_integers(&mut rows, Dialect::Sqlite, &target);
        // `qty` is `integer`: 1/0; `updated_at` is `text`: the boolean stays.
        assert_eq!(rows[0][2], Value::Int(1));
        assert_eq!(rows[0][3], Value::Bool(false));
        assert_eq!(rows[1][2], Value::Int(0));
        assert_eq!(rows[1][3], Value::Null);
    }

    #[test]
    fn a_pull_batch_gets_the_site_id_and_its_soft_deletes_split_off() {
        let stream = stream("delete_column = \"deleted\"");
        let source = ["id", "qty", "updated_at", "deleted"].map(String::from);
        let target = master_sales(false);
        let plan = MappingPlan::build(&stream, Direction::Pull, &source, &target, "t").unwrap();
        // The flag column is not copied: the master has none.
        assert_eq!(plan.target_columns, ["store_id", "id", "qty", "updated_at"]);
        assert_eq!(plan.conflict_key, ["store_id", "id"]);
        let row = |id: i64, deleted: Value| {
            vec![
                Value::Int(id),
                Value::Int(10 * id),
                Value::Text(format!("2026-01-0{id}")),
                deleted,
            ]
        };
        let batch = Batch {
            columns: source.to_vec(),
            rows: vec![
                row(1, Value::Null),
                row(2, Value::Int(1)),
                row(3, Value::Int(0)),
            ],
        };
        let described: Vec<(String, String)> = Vec::new();
        let mapped = plan
            .map_batch(batch, "s1", &fixes(&target, &described), true)
            .unwrap();
        assert_eq!(mapped.read, 3);
        let site = Value::Text("s1".into());
        assert_eq!(
            mapped.rows,
            vec![
                vec![
                    site.clone(),
                    Value::Int(1),
                    Value::Int(10),
                    Value::Text("2026-01-01".into())
                ],
                vec![
                    site.clone(),
                    Value::Int(3),
                    Value::Int(30),
                    Value::Text("2026-01-03".into())
                ],
            ]
        );
        assert_eq!(mapped.deleted_keys, vec![vec![site, Value::Int(2)]]);
        // The end is the last source row's (cursor, key).
        assert_eq!(
            mapped.end,
            Some(vec![Value::Text("2026-01-03".into()), Value::Int(3)])
        );
    }

    #[test]
    fn computed_columns_and_a_filter_map_in_one_pass() {
        let stream = stream(
            "filter = \"row.qty > 0\"\n  compute = { total = \"decimal(row.qty) * decimal('0.25')\", region = \"site.tags.region\" }",
        );
        let source = ["id", "qty", "updated_at"].map(String::from);
        let mut target = master_sales(false);
        target.columns.push(column("total", "numeric(12,2)"));
        target.columns.push(column("region", "text"));
        let described: Vec<(String, String)> = vec![
            ("id".into(), "INTEGER".into()),
            ("qty".into(), "INTEGER".into()),
            ("updated_at".into(), "TEXT".into()),
        ];
        let sides = TransformSides {
            described: &described,
            source_dialect: Dialect::Sqlite,
            target: &target,
            target_dialect: Dialect::Postgres,
        };
        let scope = expr::ExprScope {
            site_id: "s1".into(),
            site_tags: [("region".to_string(), "north".to_string())].into(),
            ..Default::default()
        };
        let plan = MappingPlan::build(&stream, Direction::Pull, &source, &target, "t")
            .unwrap()
            .with_transforms(&stream, &sides, scope)
            .unwrap();
        assert_eq!(
            plan.target_columns,
            // `compute` in target-name order.
            ["store_id", "id", "qty", "updated_at", "region", "total"]
        );
        let row = |id: i64, qty: Value| vec![Value::Int(id), qty, Value::Text(format!("t{id}"))];
        let batch = |rows| Batch {
            columns: source.to_vec(),
            rows,
        };
        let mapped = plan
            .map_batch(
                batch(vec![row(1, Value::Int(3)), row(2, Value::Int(0))]),
                "s1",
                &fixes(&target, &described),
                true,
            )
            .unwrap();
        // Row 2 fails the filter: read, not written, still the batch's end.
        assert_eq!((mapped.read, mapped.filtered), (2, 1));
        assert_eq!(
            mapped.end,
            Some(vec![Value::Text("t2".into()), Value::Int(2)])
        );
        // 3 x 0.25 = 0.75.
        let s1 = Value::Text("s1".into());
        assert_eq!(
            mapped.rows,
            vec![vec![
                s1.clone(),
                Value::Int(1),
                Value::Int(3),
                Value::Text("t1".into()),
                Value::Text("north".into()),
                Value::Numeric("0.75".into())
            ]]
        );
        // A NULL qty fails the filter's `>`: the batch is refused naming the
        // key; spared, the row is set aside with what could be computed.
        let failing = batch(vec![row(1, Value::Int(3)), row(5, Value::Null)]);
        let Err(MapError::Row(why)) =
            plan.map_batch(failing.clone(), "s1", &fixes(&target, &described), true)
        else {
            panic!("a NULL in `>` must fail the row");
        };
        assert_eq!(
            why,
            "row (store_id, id) = (s1, 5): `filter`: expression `row.qty > 0`: column `qty` is NULL where a value \
             is needed; correct the row at the source, or the expression"
        );
        let spared = plan
            .map_batch_sparing(failing, "s1", &fixes(&target, &described), true)
            .unwrap();
        assert_eq!(spared.rows.len(), 1);
        assert_eq!(spared.refused.len(), 1);
        assert_eq!(
            spared.refused[0].0,
            vec![
                s1,
                Value::Int(5),
                Value::Null,
                Value::Text("t5".into()),
                Value::Text("north".into()),
                Value::Null
            ]
        );
        // Not compiled: refused, not a panic.
        let bare = MappingPlan::build(&stream, Direction::Pull, &source, &target, "t").unwrap();
        assert!(matches!(
            bare.map_batch(
                batch(vec![row(1, Value::Int(1))]),
                "s1",
                &fixes(&target, &described),
                true
            ),
            Err(MapError::Plan(_))
        ));
    }

    #[test]
    fn a_plan_names_what_is_missing_and_a_row_names_its_key() {
        let stream = stream("");
        let target = master_sales(false);
        let missing = MappingPlan::build(
            &stream,
            Direction::Pull,
            &["id", "qty", "updated_at", "note"].map(String::from),
            &target,
            "master table `sales`",
        )
        .unwrap_err();
        assert_eq!(
            missing,
            MapError::Plan(
                "column `note` is missing in master table `sales`; add it, or select and rename columns \
                 with `columns = { target = \"source\" }`"
                    .into()
            )
        );
        let source = ["id", "qty", "updated_at"].map(String::from);
        let plan = MappingPlan::build(&stream, Direction::Pull, &source, &target, "t").unwrap();
        let twice = Batch {
            columns: source.to_vec(),
            rows: vec![
                vec![Value::Int(4), Value::Int(1), Value::Text("a".into())],
                vec![Value::Int(4), Value::Int(2), Value::Text("b".into())],
            ],
        };
        let described: Vec<(String, String)> = Vec::new();
        let Err(MapError::Row(message)) =
            plan.map_batch(twice, "s1", &fixes(&target, &described), true)
        else {
            panic!("a duplicate key must be refused");
        };
        assert!(
            message.starts_with("two source rows have the same key (store_id, id) = (s1, 4)"),
            "{message}"
        );
        // A NULL key cannot be a position.
        let null_key = Batch {
            columns: source.to_vec(),
            rows: vec![vec![Value::Null, Value::Int(1), Value::Text("a".into())]],
        };
        assert_eq!(
            plan.map_batch(null_key, "s1", &fixes(&target, &described), true)
                .err(),
            Some(MapError::Row(
                "key column `id` is NULL in a source row; keys must not be NULL".into()
            ))
        );
    }
}
