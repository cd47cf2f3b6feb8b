//! What a flow's streams need once per pass, and what decides a stream's
//! backfill: the pass's [`StreamPlan`]s (a pull's master table described
//! once for every site), the stream's [`fingerprint`] for one site, and the
//! type check of the columns a stream writes ([`schema_problems`]).

use sha2::{Digest, Sha256};

use super::Hub;
use super::error::RunError;
use crate::config::{Direction, Flow, Source, Stream};
use crate::connector::TableInfo;
use crate::dialect::types::{Logical, incompatibility, source_logical, target_logical};
use crate::mediate::MappingPlan;

/// What a stream needs that is the same for every site, found once per
/// pass: for a pull, the master target table's description.
#[derive(Clone, Debug, Default)]
pub struct StreamPlan {
    /// The master target (pull only; a push describes each site's table).
    pub master_target: Option<TableInfo>,
    /// The table of each of the stream's routes, in route order (pull
    /// only), described in its `[[system]]`.
    pub route_targets: Vec<TableInfo>,
    /// The pass's shared push reads of this stream (`shared.rs`).
    pub(crate) shared_reads: super::shared::SharedReads,
    /// The pass's shared describes of the master's source (push only).
    pub(crate) shared_describes: super::shared::SharedDescribes,
    /// Why this push's delete detection is left out at every site, if it
    /// is (`reconcile::predicate_key_problem`: a `when`/`filter` over a
    /// `primary_key` the master repeats); found once per pass.
    pub(crate) detect_refused: Option<String>,
}

/// Builds the plan of every stream of `flow`; a stream whose plan fails
/// carries the message, and every site's run of it fails with it.
pub async fn plan_streams(hub: &Hub, flow: &Flow) -> Vec<Result<StreamPlan, RunError>> {
    let mut plans = Vec::with_capacity(flow.streams.len());
    for stream in &flow.streams {
        let plan = match flow.direction {
            Direction::Push => Ok(StreamPlan {
                detect_refused: super::reconcile::predicate_key_problem(
                    stream,
                    Direction::Push,
                    hub.master(),
                )
                .await,
                ..StreamPlan::default()
            }),
            Direction::Pull => match hub.master().describe_table(&stream.target).await {
                Ok(Some(info)) => Ok(StreamPlan {
                    master_target: Some(info),
                    ..StreamPlan::default()
                }),
                // The first site's run creates it from its source's columns.
                Ok(None) if stream.create_target => Ok(StreamPlan::default()),
                Ok(None) => Err(RunError::from(format!(
                    "master table `{}` does not exist; create it with the source's columns plus `{}`, \
                     or set `create_target = true`",
                    stream.target,
                    stream.site_column.as_deref().unwrap_or("site_id")
                ))),
                Err(e) => Err(RunError::connector(
                    format_args!("cannot describe master table `{}`", stream.target),
                    &e,
                )),
            },
        };
        // Routes to systems: described once per pass, like the master's.
        let plan = match plan {
            Ok(plan) if !stream.routes.is_empty() => {
                super::route::describe_routes(hub, &stream.routes)
                    .await
                    .map(|route_targets| StreamPlan {
                        route_targets,
                        ..plan
                    })
            }
            other => other,
        };
        plans.push(plan);
    }
    plans
}

/// A hex SHA-256 of everything that defines `stream` of `flow` for one site:
/// direction, source or query text, target, key, cursor, site column,
/// column mapping, the `:site.*` values bound for that site, and the
/// source's columns when all of them are copied. When it
/// changes, the stream restarts with a backfill for that site.
///
/// `source_columns` are the (name, type) pairs the source returns; they
/// count only when the stream has no `columns` mapping (then every source
/// column is copied, so a column added at the source must be backfilled).
/// `cursor_by_instant`: a SQLite date/time cursor ordered by instant
/// (`ResolvedSource::cursor_date_time`); it counts only when set, so that
/// checkpoints saved while such a cursor was ordered as stored (which
/// skipped rows) are replaced by one backfill, and no other stream's
/// fingerprint changes. A stream's `compute` and `filter` count too (only
/// when set): a changed rule is applied to every row again.
pub fn fingerprint(
    flow: &Flow,
    stream: &Stream,
    site_params: &[(String, String)],
    expression_tags: &[(String, Option<String>)],
    source_columns: &[(String, String)],
    cursor_by_instant: bool,
) -> String {
    let copied_columns = if stream.columns.is_none() {
        source_columns
    } else {
        &[]
    };
    let mut definition = serde_json::json!({
        "direction": flow.direction.as_str(),
        "source": match &stream.source {
            Source::Table(t) => format!("table:{t}"),
            Source::Query(q) => format!("query:{q}"),
        },
        "target": stream.target,
        "primary_key": stream.primary_key,
        "cursor": stream.cursor,
        "site_column": stream.site_column,
        "columns": stream.columns,
        "site_params": site_params,
        "source_columns": copied_columns,
    });
    if cursor_by_instant {
        definition["cursor_order"] = serde_json::json!("instant");
    }
    if let Some(when) = &stream.when {
        definition["when"] = serde_json::json!(when);
    }
    // Only when there are routes, so no other stream's fingerprint changes:
    // a route added later gets the stream's rows from the start.
    if !stream.routes.is_empty() {
        definition["routes"] = stream
            .routes
            .iter()
            .map(|route| {
                serde_json::json!({
                    "system": route.system,
                    "target": route.stream.target,
                    "columns": route.stream.columns,
                    "primary_key": route.stream.primary_key,
                    "when": route.when,
                })
            })
            .collect();
    }
    // Only when set, so streams without transforms keep their checkpoints.
    if !stream.compute.is_empty() {
        definition["compute"] = serde_json::json!(stream.compute);
    }
    if let Some(filter) = &stream.filter {
        definition["filter"] = serde_json::json!(filter);
    }
    // Only when an expression reads a tag, so other streams keep theirs.
    if !expression_tags.is_empty() {
        definition["expression_tags"] = serde_json::json!(expression_tags);
    }
    let digest = Sha256::digest(definition.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The site's tag values that `stream`'s expressions read (`compute`,
/// `filter`, `when`, the routes' `when`), as (tag, value) pairs sorted by
/// tag, a missing tag as `None`: part of the fingerprint, so that a tag
/// change that moves rows in or out of what the site gets (or changes a
/// computed value) backfills, as a changed `:site.*` parameter of a
/// `query` does. Which tags an expression reads:
/// `crate::mediate::expr::referenced_tags` (any other use of `site.tags`
/// reads every tag).
pub(crate) fn expression_tags(
    stream: &Stream,
    tags: &std::collections::BTreeMap<String, String>,
) -> Vec<(String, Option<String>)> {
    let texts = (stream.compute.iter().map(|(_, e)| e.as_str()))
        .chain(stream.filter.as_deref())
        .chain(stream.when.as_deref())
        .chain(stream.routes.iter().filter_map(|r| r.when.as_deref()));
    let mut names: Vec<String> = Vec::new();
    for text in texts {
        // A text that is no CEL was refused when the config loaded.
        match crate::mediate::expr::referenced_tags(text) {
            Ok(Some(found)) => names.extend(found),
            Ok(None) | Err(_) => names.extend(tags.keys().cloned()),
        }
    }
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let value = tags.get(&name).cloned();
            (name, value)
        })
        .collect()
}

/// Columns written by `stream` whose source type cannot carry values into
/// the target column's type, one message each ("column `x`: source type
/// `INT4` cannot go to `date`: a number cannot become ..."). `described`:
/// the source's (name, type) pairs.
pub(crate) fn schema_problems(
    stream: &Stream,
    direction: Direction,
    source_dialect: crate::dialect::Dialect,
    described: &[(String, String)],
    target_dialect: crate::dialect::Dialect,
    target: &TableInfo,
) -> Vec<String> {
    let source_columns: Vec<String> = described.iter().map(|(name, _)| name.clone()).collect();
    let written = MappingPlan::written_columns(stream, direction, &source_columns, target);
    let mut problems = Vec::new();
    for (target_column, source_column) in written {
        let (Some((_, source_type)), Some(target_info)) = (
            described.iter().find(|(name, _)| *name == source_column),
            target.column(&target_column),
        ) else {
            continue;
        };
        let source = if stream.booleans.contains(&source_column) {
            Logical::Bool
        } else {
            source_logical(source_dialect, source_type)
        };
        let why = incompatibility(
            source,
            target_logical(target_dialect, &target_info.data_type),
        );
        if let Some(why) = why {
            problems.push(format!(
                "column `{target_column}`: source type `{source_type}` ({}) cannot go to `{}` ({}): {why}",
                source_dialect.name(),
                target_info.data_type,
                target_dialect.name()
            ));
        }
    }
    problems
}
