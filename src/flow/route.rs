//! Routes of a pull stream to `[[system]]` databases: each batch read at a
//! site is, besides the master, upserted into every route's table (its own
//! [`MappingPlan`], the rows its `when` predicate keeps), BEFORE the
//! master write that carries the batch's checkpoint.
//!
//! Why that order: a system is another database, so its write cannot share
//! the master's transaction. Written first and committed, then master +
//! checkpoint in one transaction: a failure or crash between the two leaves
//! the checkpoint where it was, and the next run reads the batch again and
//! upserts it again into the system (a no-op for rows already there, as
//! upserts skip unchanged rows). A route can thus receive a batch more than
//! once, never lose one.

use super::StreamReport;
use super::apply::refused_row;
use super::context::StreamRun;
use super::error::RunError;
use super::leg::RunPlace;
use crate::config::{Direction, Route, Site};
use crate::connector::{Connector, ConnectorError, TableInfo};
use crate::mediate::expr::{Expr, ExprScope, Ty};
use crate::mediate::{MappingPlan, ValueFixes};
use crate::value::Batch;

/// What a batch whose rows a push's `when` selected must still carry: the
/// end position and the count of every row read.
pub(super) struct ReadPastSelection {
    /// The keyset position of the batch's last row read (`None`: not a
    /// cursor read, or no rows).
    pub(super) end: Option<Vec<crate::value::Value>>,
    /// Rows read, selected or not.
    pub(super) read: u64,
}

/// A route's mapping plan and compiled `when`, built once per (stream run,
/// site) from the source's described columns.
pub(super) struct PreparedRoute {
    /// How source rows become the route's rows.
    pub(super) mapping: MappingPlan,
    /// The route's predicate (`None`: every row).
    pub(super) when: Option<Expr>,
}

/// Compiles a `when` predicate against the source's `described` columns
/// (`place` starts its messages: "flow `f`, stream `s`, route to system
/// `erp` table `returns`, `when`") and checks that `site` has every tag it
/// reads, before any row is read.
///
/// Errors: the predicate does not parse or type-check (naming the
/// expression and the column), its type can never be a bool, or the site
/// lacks a tag it reads.
pub(super) fn compile_when(
    text: Option<&str>,
    described: &[(String, String)],
    site: &Site,
    place: &str,
) -> Result<Option<Expr>, RunError> {
    let Some(text) = text else {
        return Ok(None);
    };
    let expr = Expr::compile(text, described, place)?;
    if !matches!(expr.ty(), Ty::Bool | Ty::Dyn) {
        return Err(RunError::from(format!(
            "{place}: expression `{text}` gives {}, not a bool; write a condition, e.g. `row.qty < 0`",
            expr.ty()
        )));
    }
    if let Some(tag) = expr.tags().iter().find(|tag| !site.tags.contains_key(*tag)) {
        return Err(RunError::from(format!(
            "{place}: the site has no tag `{tag}` read by `site.tags.{tag}` in `{text}`; add it to the site's tags"
        )));
    }
    Ok(Some(expr))
}

/// The rows of `batch` for which `when` is true (all of them for `None`),
/// in order. `key_of` names a row whose predicate fails to evaluate.
///
/// Errors: a row the predicate cannot be evaluated on (a NULL operand, a
/// division by zero...), naming the row's key and the expression.
pub(super) fn select_rows(
    when: Option<&Expr>,
    batch: &Batch,
    scope: &ExprScope,
    key_of: &dyn Fn(&[crate::value::Value]) -> String,
) -> Result<Batch, RunError> {
    let Some(when) = when else {
        return Ok(batch.clone());
    };
    let mut rows = Vec::new();
    for row in &batch.rows {
        match when.test(row, scope) {
            Ok(true) => rows.push(row.clone()),
            Ok(false) => {}
            Err(e) => {
                return Err(RunError::from(format!("row {}: {e}", key_of(row))));
            }
        }
    }
    Ok(Batch {
        columns: batch.columns.clone(),
        rows,
    })
}

/// One route of a stream run at one site, fixed before the first read.
pub(super) struct RouteRun<'a> {
    /// The route's config (its `stream` is the parent as the route writes it).
    pub(super) route: &'a Route,
    /// The system's pool.
    pub(super) connector: &'a Connector,
    /// The route's table, described once per pass.
    pub(super) target_info: &'a TableInfo,
    /// How source rows become the route's rows.
    pub(super) mapping: &'a MappingPlan,
    /// The route's predicate (`None`: every row).
    pub(super) when: Option<&'a Expr>,
    /// "system `erp` table `returns`", for messages.
    pub(super) place: String,
}

/// The place of a route in messages: "system `erp` table `returns`".
pub(super) fn route_place(route: &Route) -> String {
    format!("system `{}` table `{}`", route.system, route.stream.target)
}

/// Describes every route's table of a pull stream (in its system), once per
/// pass. Errors name the system and table: an unreachable system, a missing
/// table (routes never create one).
pub(super) async fn describe_routes(
    hub: &super::Hub,
    routes: &[Route],
) -> Result<Vec<TableInfo>, RunError> {
    let mut described = Vec::with_capacity(routes.len());
    for route in routes {
        let place = route_place(route);
        let connector = hub.system(&route.system).await?;
        match connector.describe_table(&route.stream.target).await {
            Ok(Some(info)) => described.push(info),
            Ok(None) => {
                return Err(RunError::from(format!(
                    "{place} does not exist; create it with the columns the route writes (a route does not create tables)"
                )));
            }
            Err(e) => {
                return Err(RunError::connector(
                    format_args!("cannot describe {place}"),
                    &e,
                ));
            }
        }
    }
    Ok(described)
}

/// Builds each route's mapping plan against the source's columns, after
/// the same type check as the master's target, and compiles its `when`
/// (see [`compile_when`]); `stream_place` is "flow `f`, stream `s`".
pub(super) fn prepare_routes(
    routes: &[Route],
    described_targets: &[TableInfo],
    source_dialect: crate::dialect::Dialect,
    described: &[(String, String)],
    system_dialect: &dyn Fn(&str) -> crate::dialect::Dialect,
    site: &Site,
    stream_place: &str,
) -> Result<Vec<PreparedRoute>, RunError> {
    let source_columns: Vec<String> = described.iter().map(|(name, _)| name.clone()).collect();
    let mut mappings = Vec::with_capacity(routes.len());
    for (route, target) in routes.iter().zip(described_targets) {
        let place = route_place(route);
        if let Some(problem) = super::plan::schema_problems(
            &route.stream,
            Direction::Pull,
            source_dialect,
            described,
            system_dialect(&route.system),
            target,
        )
        .into_iter()
        .next()
        {
            return Err(format!("{place}: {problem}").into());
        }
        let mapping = MappingPlan::build(
            &route.stream,
            Direction::Pull,
            &source_columns,
            target,
            &place,
        )
        .map_err(|e| RunError::from(format!("{place}: {e}")))?;
        let when = compile_when(
            route.when.as_deref(),
            described,
            site,
            &format!("{stream_place}, route to {place}, `when`"),
        )?;
        mappings.push(PreparedRoute { mapping, when });
    }
    Ok(mappings)
}

impl<'a> StreamRun<'a> {
    /// The routes of this run at this site: each route's system pool
    /// (connected at first use), its table as described for the pass, its
    /// mapping plan and `when`.
    ///
    /// Errors: a system that cannot be reached, naming it.
    pub(super) async fn route_runs<'p>(
        &self,
        prepared: &'p [PreparedRoute],
    ) -> Result<Vec<RouteRun<'p>>, RunError>
    where
        'a: 'p,
    {
        let mut runs = Vec::with_capacity(prepared.len());
        for ((route, prepared), target_info) in self
            .stream
            .routes
            .iter()
            .zip(prepared)
            .zip(&self.plan.route_targets)
        {
            runs.push(RouteRun {
                route,
                connector: self.hub.system(&route.system).await?,
                target_info,
                mapping: &prepared.mapping,
                when: prepared.when.as_ref(),
                place: route_place(route),
            });
        }
        Ok(runs)
    }

    /// A push's `when` applied to a batch read from the master: the rows
    /// this site receives, and, when rows were selected, the batch's end
    /// position (when `with_end`) and the number of rows read, which the
    /// mapped batch must carry instead of its own (the checkpoint moves
    /// past rows the site does not receive). Without `when`: the batch
    /// as is, `None`.
    ///
    /// Errors: a row the predicate cannot be evaluated on, naming its key.
    pub(super) fn select_for_site(
        &self,
        place: &RunPlace<'_>,
        batch: Batch,
        with_end: bool,
    ) -> Result<(Batch, Option<ReadPastSelection>), RunError> {
        let Some(when) = place.site_when else {
            return Ok((batch, None));
        };
        let end = if with_end {
            place.mapping.batch_end(
                &batch,
                &self.site.id,
                place.resolved.cursor_date_time.as_deref(),
            )?
        } else {
            None
        };
        let key_of = |row: &[crate::value::Value]| place.mapping.source_key_of(row, &self.site.id);
        let selected = select_rows(Some(when), &batch, place.expr_scope, &key_of)
            .map_err(|e| e.at("`when`"))?;
        let read = batch.rows.len() as u64;
        Ok((selected, Some(ReadPastSelection { end, read })))
    }

    /// What `when` predicates see besides the row: the site's id and
    /// tags, the flow, and the run's start (now, at the stream's start).
    pub(super) fn expr_scope(&self) -> ExprScope {
        ExprScope {
            site_id: self.site.id.clone(),
            site_tags: self.site.tags.clone(),
            run_started_at: Some(chrono::Utc::now()),
            flow: self.flow.name.clone(),
        }
    }

    /// Upserts `batch` (as read at the site) into every route's table, each
    /// in its own committed transaction, before the master write of the
    /// same batch (see the module docs). Returns rows written over all
    /// routes (inserted, changed or deleted). Nothing in a dry run.
    ///
    /// Errors: the first route whose write fails, naming its system, table
    /// and (for a refused value) the row; the batch's checkpoint then stays.
    pub(super) async fn write_routes(
        &self,
        place: &RunPlace<'_>,
        batch: &Batch,
        report: &mut StreamReport,
    ) -> Result<u64, RunError> {
        let mut written = 0;
        for route in place.routes {
            let key_of =
                |row: &[crate::value::Value]| route.mapping.source_key_of(row, &self.site.id);
            let rows = select_rows(route.when, batch, place.expr_scope, &key_of)
                .map_err(|e| e.at(format_args!("route to {}", route.place)))?;
            if rows.rows.is_empty() {
                continue;
            }
            let fixes = ValueFixes {
                direction: Direction::Pull,
                source_dialect: place.leg.source.dialect(),
                described: &place.resolved.described,
                cursor_date_time: place.resolved.cursor_date_time.as_deref(),
                target_dialect: route.connector.dialect(),
                target: route.target_info,
                zero_dates: route.route.stream.zero_dates,
                booleans: &route.route.stream.booleans,
                site_zone: self.site.timezone,
            };
            let mapped = route
                .mapping
                .map_batch(rows, &self.site.id, &fixes, false)
                .map_err(|e| RunError::from(format!("{}: {e}", route.place)))?;
            written += write_route_batch(route, &mapped.rows, &mapped.deleted_keys).await?;
        }
        report.rows_routed += written;
        Ok(written)
    }
}

/// One route's upsert and deletes in one committed transaction at its
/// system; returns rows written.
async fn write_route_batch(
    route: &RouteRun<'_>,
    rows: &[Vec<crate::value::Value>],
    deleted_keys: &[Vec<crate::value::Value>],
) -> Result<u64, RunError> {
    let mapping = route.mapping;
    let table = &route.route.stream.target;
    let spec = mapping.upsert_spec(table);
    let key_types = mapping.key_types();
    let delete = mapping.delete_spec(table, &key_types);
    let attempt = async {
        let mut tx = route.connector.begin().await?;
        let upserted = tx.upsert(&spec, rows).await?;
        let deleted = tx.delete_keys(&delete, deleted_keys).await?;
        tx.commit().await?;
        Ok::<u64, ConnectorError>(upserted + deleted)
    };
    match attempt.await {
        Ok(written) => Ok(written),
        Err(error) => {
            let kind = error.kind();
            let message = refused_row(route.connector, &spec, rows, error).await;
            Err(RunError::new(
                kind,
                format!("writing to {}: {message}", route.place),
            ))
        }
    }
}
