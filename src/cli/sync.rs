//! `hubsync sync`: one pass of the chosen flows over the chosen sites now.

use std::sync::Arc;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::output::{FleetProgress, failures, summary_table};
use super::{EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UsageError};
use crate::config::{Config, Flow, Site};
use crate::flow::{Hub, SiteReport, SyncOptions};

/// Arguments of `hubsync sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Only this flow (repeatable); default: every flow, in config order.
    #[arg(long = "flow", value_name = "FLOW")]
    pub flows: Vec<String>,
    /// Only this site (repeatable); default: every site.
    #[arg(long = "site", value_name = "SITE")]
    pub sites: Vec<String>,
    /// Read and count what would move, write nothing (no rows, no checkpoints).
    #[arg(long)]
    pub dry_run: bool,
}

/// Chooses flows and sites by name; unknown names are usage errors that list
/// the known ones.
pub fn select<'c>(
    config: &'c Config,
    flow_names: &[String],
    site_ids: &[String],
) -> Result<(Vec<&'c Flow>, Vec<&'c Site>), UsageError> {
    let flows = if flow_names.is_empty() {
        config.flows.iter().collect()
    } else {
        flow_names
            .iter()
            .map(|name| {
                config.flow(name).ok_or_else(|| {
                    let known: Vec<&str> = config.flows.iter().map(|f| f.name.as_str()).collect();
                    UsageError(format!(
                        "no flow `{name}` in the config; flows: {}",
                        known.join(", ")
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    let sites = if site_ids.is_empty() {
        config.sites.iter().collect()
    } else {
        site_ids
            .iter()
            .map(|id| {
                config.site(id).ok_or_else(|| {
                    UsageError(format!(
                        "no site `{id}` in the config; run `hubsync status` to list sites"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    Ok((flows, sites))
}

/// Runs `flows` over `sites` in order, showing `progress`; returns every
/// site report.
pub async fn sync_flows(
    hub: &Hub,
    flows: &[&Flow],
    sites: &[&Site],
    options: SyncOptions,
    progress: &FleetProgress,
) -> Vec<SiteReport> {
    let mut reports = Vec::new();
    for flow in flows {
        progress.start_flow(&flow.name, sites.len());
        reports.extend(hub.sync_flow(flow, sites, options, progress).await);
    }
    progress.finish();
    reports
}

pub(super) async fn run(
    config: Arc<Config>,
    args: SyncArgs,
    cancel: CancellationToken,
) -> anyhow::Result<u8> {
    let (flows, sites) = select(&config, &args.flows, &args.sites)?;
    if flows.is_empty() {
        return Err(UsageError("the config has no flows; add a `[[flow]]`".into()).into());
    }
    if sites.is_empty() {
        return Err(UsageError("the config has no sites; add a `[[site]]`".into()).into());
    }
    let hub = Hub::open(config.clone(), cancel.clone()).await?;
    let progress = FleetProgress::new();
    let options = SyncOptions {
        dry_run: args.dry_run,
    };
    let reports = sync_flows(&hub, &flows, &sites, options, &progress).await;
    hub.master().close().await;
    println!("{}", summary_table(&reports));
    let failed = failures(&reports);
    if args.dry_run {
        println!("dry run: nothing was written; `rows read` is what a real run would apply");
    }
    if cancel.is_cancelled() {
        eprintln!(
            "interrupted: committed batches are kept; the next sync resumes from the checkpoints"
        );
        return Ok(EXIT_INTERRUPTED);
    }
    if failed > 0 {
        eprintln!(
            "{failed} of {} site runs failed; see the table above or `hubsync status`",
            reports.len()
        );
        return Ok(EXIT_FAILED);
    }
    Ok(EXIT_OK)
}
