//! The target table of a stream at one site: described before reading, or
//! created from the source's columns when missing and the stream says
//! `create_target = true` (types mapped by `schema.rs`).

use super::context::StreamRun;
use super::error::RunError;
use super::leg::Leg;
use super::source::ResolvedSource;
use crate::config::Direction;
use crate::connector::{Connector, TableInfo};
use crate::dialect::types::{Logical, create_table_sql, source_logical};

impl StreamRun<'_> {
    /// The target's description as read at the target (`None`: no such
    /// table), to be passed to [`StreamRun::target_or_create`].
    ///
    /// Errors: the target cannot be described (the message names it).
    pub(super) async fn read_target(&self, leg: &Leg<'_>) -> Result<Option<TableInfo>, RunError> {
        let target_place = &leg.target_place;
        leg.target
            .describe_table(&self.stream.target)
            .await
            .map_err(|e| RunError::connector(format_args!("cannot describe {target_place}"), &e))
    }

    /// The target's description `described` (from [`StreamRun::read_target`]);
    /// a missing table is created from the source's columns with
    /// `create_target` (not in a dry run), else an error saying how to fix
    /// it.
    pub(super) async fn target_or_create(
        &self,
        leg: &Leg<'_>,
        resolved: &ResolvedSource,
        described: Option<TableInfo>,
    ) -> Result<TableInfo, RunError> {
        let target_place = &leg.target_place;
        match described {
            Some(info) => Ok(info),
            None if self.stream.create_target && !self.options.dry_run => Ok(self
                .create_target(
                    leg.direction,
                    leg.source_statements,
                    leg.target,
                    resolved,
                    target_place,
                )
                .await?),
            None => Err(format!(
                "{target_place} does not exist; create it, or set `create_target = true`"
            )
            .into()),
        }
    }

    /// Creates the missing target table from the source's columns (see
    /// `dialect/types.rs`): for a pull, `site_column` (text) first; the
    /// primary key is the conflict key. Returns its description.
    async fn create_target(
        &self,
        direction: Direction,
        source: &Connector,
        target: &Connector,
        resolved: &ResolvedSource,
        target_place: &str,
    ) -> Result<TableInfo, RunError> {
        let mut columns: Vec<(String, Logical)> = Vec::new();
        let mut key: Vec<String> = Vec::new();
        if direction == Direction::Pull
            && let Some(site_column) = &self.stream.site_column
        {
            columns.push((site_column.clone(), Logical::Text));
            key.push(site_column.clone());
        }
        let logical_of = |source_column: &str| {
            resolved
                .described
                .iter()
                .find(|(name, _)| name == source_column)
                .map_or(Logical::Other, |(_, ty)| {
                    if self.stream.booleans.iter().any(|b| b == source_column) {
                        Logical::Bool
                    } else {
                        source_logical(source.dialect(), ty)
                    }
                })
        };
        match &self.stream.columns {
            Some(pairs) => {
                for (target_column, source_column) in pairs {
                    columns.push((target_column.clone(), logical_of(source_column)));
                }
            }
            None => {
                for (name, _) in &resolved.described {
                    if direction == Direction::Pull
                        && self.stream.site_column.as_ref() == Some(name)
                    {
                        continue;
                    }
                    columns.push((name.clone(), logical_of(name)));
                }
            }
        }
        key.extend(self.stream.primary_key.iter().cloned());
        let sql = create_table_sql(target.dialect(), &self.stream.target, &columns, &key);
        target.execute_script(&sql).await.map_err(|e| {
            RunError::connector(
                format_args!("creating {target_place} (`create_target`)"),
                &e,
            )
        })?;
        target
            .describe_table(&self.stream.target)
            .await
            .map_err(|e| RunError::connector(format_args!("cannot describe {target_place}"), &e))?
            .ok_or_else(|| {
                RunError::from(format!(
                    "{target_place} was created but cannot be found; check the table name"
                ))
            })
    }
}
