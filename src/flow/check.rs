//! Connectivity and schema checks behind `hubsync check`.
//!
//! For every stream: the source (table or query) is readable at each place
//! it is read and returns the cursor, key and mapped columns; the target
//! table exists with every written column; and the target has a unique key
//! on exactly the conflict key ((site_column, primary key...) on the master
//! for a pull, the primary key at each site for a push), without which an
//! upsert cannot work.

use std::time::Duration;

use crate::config::{Config, Direction, Flow, Site, Source, Stream};
use crate::connector::{ConnectOptions, Connector, TableInfo};
use crate::dialect::params::bind_site_placeholders;

/// One finding of `check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where: `master`, `site `s1``, `flow `f` stream `s` site `s1``.
    pub place: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.place, self.message)
    }
}

/// Result of a check: problems, and how many places answered.
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    /// Every problem found.
    pub problems: Vec<Problem>,
    /// Databases that were reached (master included).
    pub reachable: usize,
    /// Stream/site combinations whose tables and columns checked out.
    pub streams_ok: usize,
}

/// Connects to the master and every site (at most `max_concurrent_sites` at
/// once) and checks every stream. Never fails: unreachable databases are
/// problems in the report.
pub async fn check(config: &Config) -> CheckReport {
    let mut report = CheckReport::default();
    let options = |create: bool| ConnectOptions {
        max_connections: 1,
        connect_timeout: config.hub.connect_timeout,
        acquire_timeout: config.hub.connect_timeout + Duration::from_secs(1),
        create_if_missing: create,
    };
    let master = match Connector::connect(&config.master, &options(false)).await {
        Ok(master) => {
            report.reachable += 1;
            Some(master)
        }
        Err(e) => {
            report.problems.push(Problem {
                place: "master".into(),
                message: e.to_string(),
            });
            None
        }
    };
    let semaphore = tokio::sync::Semaphore::new(config.hub.max_concurrent_sites);
    let site_checks = config.sites.iter().map(|site| {
        let semaphore = &semaphore;
        let master = master.as_ref();
        let options = options(false);
        async move {
            let _slot = semaphore
                .acquire()
                .await
                .expect("semaphore is never closed");
            check_site(config, site, master, &options).await
        }
    });
    for (reachable, problems, ok) in futures::future::join_all(site_checks).await {
        report.reachable += usize::from(reachable);
        report.problems.extend(problems);
        report.streams_ok += ok;
    }
    if let Some(master) = master {
        master.close().await;
    }
    report
}

async fn check_site(
    config: &Config,
    site: &Site,
    master: Option<&Connector>,
    options: &ConnectOptions,
) -> (bool, Vec<Problem>, usize) {
    let mut problems = Vec::new();
    let site_conn = match Connector::connect(&site.url, options).await {
        Ok(conn) => conn,
        Err(e) => {
            problems.push(Problem {
                place: format!("site `{}`", site.id),
                message: e.to_string(),
            });
            return (false, problems, 0);
        }
    };
    let mut ok = 0;
    for flow in &config.flows {
        for stream in &flow.streams {
            let place = format!(
                "flow `{}` stream `{}` site `{}`",
                flow.name, stream.name, site.id
            );
            let (source, target) = match flow.direction {
                Direction::Pull => (Some(&site_conn), master),
                Direction::Push => (master, Some(&site_conn)),
            };
            let (Some(source), Some(target)) = (source, target) else {
                continue;
            };
            match check_stream(flow, stream, site, source, target).await {
                Ok(()) => ok += 1,
                Err(messages) => problems.extend(messages.into_iter().map(|message| Problem {
                    place: place.clone(),
                    message,
                })),
            }
        }
    }
    site_conn.close().await;
    (true, problems, ok)
}

async fn check_stream(
    flow: &Flow,
    stream: &Stream,
    site: &Site,
    source: &Connector,
    target: &Connector,
) -> Result<(), Vec<String>> {
    let (source_side, target_side) = match flow.direction {
        Direction::Pull => ("site", "master"),
        Direction::Push => ("master", "site"),
    };
    let mut messages = Vec::new();
    let source_columns = match source_columns(stream, site, source).await {
        Ok(columns) => columns,
        Err(e) => return Err(vec![format!("{source_side} source: {e}")]),
    };
    let target_info = match target.describe_table(&stream.target).await {
        Ok(Some(info)) => info,
        Ok(None) => {
            return Err(vec![format!(
                "{target_side} table `{}` does not exist; create it",
                stream.target
            )]);
        }
        Err(e) => {
            return Err(vec![format!(
                "{target_side} table `{}`: {e}",
                stream.target
            )]);
        }
    };
    for column in stream.keyset_source_columns() {
        if !source_columns.contains(&column) {
            messages.push(format!(
                "{source_side} source has no column `{column}` (cursor or key); it returns {}",
                list(&source_columns)
            ));
        }
    }
    let written: Vec<(String, String)> = match &stream.columns {
        Some(pairs) => pairs.clone(),
        None => source_columns
            .iter()
            .map(|c| (c.clone(), c.clone()))
            .collect(),
    };
    for (target_column, source_column) in &written {
        if !source_columns.contains(source_column) {
            messages.push(format!(
                "{source_side} source has no column `{source_column}` (mapped to `{target_column}`)"
            ));
        }
        if target_info.column(target_column).is_none() {
            messages.push(format!(
                "{target_side} table `{}` has no column `{target_column}`; add it or map columns with `columns`",
                stream.target
            ));
        }
    }
    let mut conflict_key: Vec<String> = Vec::new();
    if flow.direction == Direction::Pull {
        conflict_key.extend(stream.site_column.iter().cloned());
    }
    conflict_key.extend(stream.primary_key.iter().cloned());
    for column in &conflict_key {
        if target_info.column(column).is_none() && !written.iter().any(|(t, _)| t == column) {
            messages.push(format!(
                "{target_side} table `{}` has no key column `{column}`",
                stream.target
            ));
        }
    }
    if !target_info.has_unique_key(&conflict_key) {
        messages.push(missing_key_message(
            target_side,
            &stream.target,
            &conflict_key,
            &target_info,
        ));
    }
    if messages.is_empty() {
        Ok(())
    } else {
        Err(messages)
    }
}

fn missing_key_message(side: &str, table: &str, key: &[String], info: &TableInfo) -> String {
    let quoted: Vec<String> = key.iter().map(|k| format!("\"{k}\"")).collect();
    format!(
        "{side} table `{table}` has no unique key on ({}) (its unique keys: {}); upserts need one: \
         CREATE UNIQUE INDEX ON \"{table}\" ({})",
        key.join(", "),
        if info.unique_keys.is_empty() {
            "none".to_string()
        } else {
            info.unique_keys
                .iter()
                .map(|k| format!("({})", k.join(", ")))
                .collect::<Vec<_>>()
                .join(", ")
        },
        quoted.join(", ")
    )
}

fn list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Column names the stream's source returns at `source`.
async fn source_columns(
    stream: &Stream,
    site: &Site,
    source: &Connector,
) -> Result<Vec<String>, String> {
    match &stream.source {
        Source::Table(table) => match source.describe_table(table).await {
            Ok(Some(info)) => Ok(info.columns.into_iter().map(|c| c.name).collect()),
            Ok(None) => Err(format!("table `{table}` does not exist")),
            Err(e) => Err(format!("table `{table}`: {e}")),
        },
        Source::Query(query) => {
            let bound = bind_site_placeholders(query, source.dialect(), 1)
                .map_err(|e| format!("`query`: {e}"))?;
            if let Some(missing) = bound.params.iter().find(|p| site.attribute(p).is_none()) {
                return Err(format!("site has no tag `{missing}` used in `query`"));
            }
            source
                .query_columns(&bound.sql)
                .await
                .map_err(|e| format!("`query` does not prepare: {e}"))
        }
    }
}
