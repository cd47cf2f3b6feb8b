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
use crate::config::{Direction, Route};
use crate::connector::{Connector, ConnectorError, TableInfo};
use crate::dialect::UpsertSpec;
use crate::mediate::{MappingPlan, ValueFixes};
use crate::value::Batch;

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
/// the same type check as the master's target.
pub(super) fn route_mappings(
    routes: &[Route],
    described_targets: &[TableInfo],
    source_dialect: crate::dialect::Dialect,
    described: &[(String, String)],
    system_dialect: &dyn Fn(&str) -> crate::dialect::Dialect,
) -> Result<Vec<MappingPlan>, RunError> {
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
        mappings.push(mapping);
    }
    Ok(mappings)
}

impl StreamRun<'_> {
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
            let rows = batch.clone();
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
    let spec = UpsertSpec {
        table,
        columns: &mapping.target_columns,
        column_types: &mapping.column_types,
        key: &mapping.conflict_key,
    };
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
