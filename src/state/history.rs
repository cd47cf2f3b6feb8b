//! Reading and pruning the run history: filtered, keyset-paged listings
//! (newest first) for the HTTP API and dashboard, the last success per
//! (flow, site) for freshness metrics, and retention (`run_history_days`).

use chrono::{DateTime, Utc};

use super::{
    HEARTBEAT_EXPIRY, Result, RunRecord, StateStore, holder_is_dead, run_record, text, timestamp,
};
use crate::connector::Connector;
use crate::value::Value;

/// Which runs to list.
#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    /// Only this flow.
    pub flow: Option<String>,
    /// Only this site.
    pub site: Option<String>,
    /// Only this status (`running`, `succeeded`, `failed`, `skipped`,
    /// `partial`) as shown: a dead hub's `running` run counts as `failed`.
    pub status: Option<String>,
    /// Only runs started at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Keyset cursor: only runs strictly older than this (started_at, run_id).
    pub before: Option<(DateTime<Utc>, String)>,
}

impl StateStore {
    /// Runs matching `filter`, newest first (by start, then run id), at most
    /// `limit` of them; a dead hub's run shows as interrupted (see
    /// `run_record`). Page on with `before` = the last run's
    /// (started_at, run_id).
    pub async fn list_runs(
        &self,
        master: &Connector,
        filter: &RunFilter,
        limit: usize,
    ) -> Result<Vec<RunRecord>> {
        let mut params = Vec::new();
        let mut conditions = Vec::new();
        let push = |params: &mut Vec<Value>, value: Value| {
            params.push(value);
            self.dialect
                .typed_placeholder(params.len(), params.last().expect("just pushed"))
        };
        for (column, value) in [("flow", &filter.flow), ("site", &filter.site)] {
            if let Some(value) = value {
                let p = push(&mut params, Value::Text(value.clone()));
                conditions.push(format!("{column} = {p}"));
            }
        }
        if let Some(status) = &filter.status {
            // As shown: a `running` row silent for `HEARTBEAT_EXPIRY` is a
            // dead hub's run, listed as `failed` (see `run_record`).
            let p = push(&mut params, Value::Text(status.clone()));
            let cutoff = Utc::now()
                - chrono::Duration::from_std(HEARTBEAT_EXPIRY)
                    .expect("30 s fits a chrono duration");
            let c = push(&mut params, Value::TimestampTz(cutoff));
            let last_beat = "coalesce(heartbeat_at, started_at)";
            conditions.push(match status.as_str() {
                "running" => format!("(status = {p} AND {last_beat} > {c})"),
                "failed" => {
                    format!("(status = {p} OR (status = 'running' AND {last_beat} <= {c}))")
                }
                _ => format!("status = {p}"),
            });
        }
        if let Some(since) = filter.since {
            let p = push(&mut params, Value::TimestampTz(since));
            conditions.push(format!("started_at >= {p}"));
        }
        if let Some((started_at, run_id)) = &filter.before {
            let p1 = push(&mut params, Value::TimestampTz(*started_at));
            let p2 = push(&mut params, Value::Text(run_id.clone()));
            conditions.push(format!("(started_at, run_id) < ({p1}, {p2})"));
        }
        let limit_placeholder = push(&mut params, Value::Int(limit as i64));
        let where_clause = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT run_id, flow, site, started_at, finished_at, rows_read, rows_written, status, error, error_kind, note, \
             heartbeat_at FROM {}{where_clause} ORDER BY started_at DESC, run_id DESC LIMIT {limit_placeholder}",
            self.table("runs")
        );
        let batch = master.query(&sql, &params).await?;
        batch
            .rows
            .iter()
            .map(|row| run_record(&batch, row))
            .collect()
    }

    /// When each (flow, site) last finished a run with status `succeeded`
    /// (or `partial`: it completed), keyed by (flow, site).
    pub async fn last_successes(
        &self,
        master: &Connector,
    ) -> Result<std::collections::HashMap<(String, String), DateTime<Utc>>> {
        let sql = format!(
            "SELECT flow, site, max(finished_at) FROM {} WHERE status IN ('succeeded', 'partial') \
             AND finished_at IS NOT NULL GROUP BY flow, site",
            self.table("runs")
        );
        let batch = master.query(&sql, &[]).await?;
        let mut out = std::collections::HashMap::new();
        for row in &batch.rows {
            if row[2].is_null() {
                continue;
            }
            out.insert((text(&row[0]), text(&row[1])), timestamp(&row[2])?);
        }
        Ok(out)
    }

    /// Rows written by runs started in each interval `[bounds[i], bounds[i+1])`
    /// (so `bounds.len() - 1` sums, oldest first), over every flow and site,
    /// computed by the master in one query (the dashboard's chart). The SQL
    /// only compares timestamps, so it reads the same on every dialect.
    pub async fn rows_written_between(
        &self,
        master: &Connector,
        bounds: &[DateTime<Utc>],
    ) -> Result<Vec<i64>> {
        if bounds.len() < 2 {
            return Ok(Vec::new());
        }
        let params: Vec<Value> = bounds.iter().map(|b| Value::TimestampTz(*b)).collect();
        let p: Vec<String> = params
            .iter()
            .enumerate()
            .map(|(i, v)| self.dialect.typed_placeholder(i + 1, v))
            .collect();
        let sums: Vec<String> = (0..bounds.len() - 1)
            .map(|i| {
                format!(
                    "sum(CASE WHEN started_at >= {} AND started_at < {} THEN rows_written ELSE 0 END)",
                    p[i],
                    p[i + 1]
                )
            })
            .collect();
        let sql = format!(
            "SELECT {} FROM {} WHERE started_at >= {} AND started_at < {}",
            sums.join(", "),
            self.table("runs"),
            p[0],
            p[bounds.len() - 1]
        );
        let batch = master.query(&sql, &params).await?;
        let Some(row) = batch.rows.first() else {
            return Ok(vec![0; bounds.len() - 1]);
        };
        row.iter()
            .map(|value| match value {
                Value::Null => Ok(0),
                Value::Int(n) => Ok(*n),
                // PostgreSQL's sum(bigint) is numeric.
                Value::Numeric(text) => text
                    .parse::<i64>()
                    .map_err(|e| super::StateError::Corrupt(format!("row sum `{text}`: {e}"))),
                other => Err(super::StateError::Corrupt(format!(
                    "row sum of unexpected type {}",
                    other.kind()
                ))),
            })
            .collect()
    }

    /// The live runs of `flow`, by site: `running` rows whose heartbeat is
    /// younger than [`HEARTBEAT_EXPIRY`] and whose holder is not a dead
    /// process of this host (the rule [`StateStore::start_run`] applies; this
    /// read is not serialised, so `start_run` still has the last word).
    pub async fn live_runs(
        &self,
        master: &Connector,
        flow: &str,
    ) -> Result<std::collections::HashMap<String, String>> {
        let params = [Value::Text(flow.to_string())];
        let sql = format!(
            "SELECT site, run_id, coalesce(heartbeat_at, started_at), holder FROM {} \
             WHERE flow = {} AND status = 'running'",
            self.table("runs"),
            self.dialect.typed_placeholder(1, &params[0])
        );
        let batch = master.query(&sql, &params).await?;
        let now = Utc::now();
        let mut live = std::collections::HashMap::new();
        for row in &batch.rows {
            let age = (now - timestamp(&row[2])?).to_std().unwrap_or_default();
            let holder_dead = matches!(&row[3], Value::Text(holder) if holder_is_dead(holder));
            if age < HEARTBEAT_EXPIRY && !holder_dead {
                live.insert(text(&row[0]), text(&row[1]));
            }
        }
        Ok(live)
    }

    /// Deletes finished runs that started before `older_than`; returns how
    /// many were removed. Running rows are never removed, whatever their age.
    pub async fn prune_runs(&self, master: &Connector, older_than: DateTime<Utc>) -> Result<u64> {
        let params = [Value::TimestampTz(older_than)];
        let sql = format!(
            "DELETE FROM {} WHERE started_at < {} AND status <> 'running'",
            self.table("runs"),
            self.dialect.typed_placeholder(1, &params[0])
        );
        Ok(master.execute(&sql, &params).await?)
    }
}
