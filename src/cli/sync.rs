//! `hubsync sync`: one pass of the chosen flows over the chosen sites now.

use std::collections::HashSet;
use std::sync::Arc;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::output::{FleetProgress, error_lines, failures, summary_table};
use super::{EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UsageError, known_names, plural};
use crate::config::{Config, Flow, Site};
use crate::flow::{Hub, SiteReport, SyncOptions};

/// Arguments of `hubsync sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Only this flow (repeatable); default: every flow, in config order,
    /// except chained ones (`after`), which run after their predecessor.
    #[arg(long = "flow", value_name = "FLOW")]
    pub flows: Vec<String>,
    /// Only this site (repeatable); default: every site.
    #[arg(long = "site", value_name = "SITE")]
    pub sites: Vec<String>,
    /// Read and count what would move, write nothing (no rows, no checkpoints).
    #[arg(long)]
    pub dry_run: bool,
    /// Also work sites outside a flow's `window` (by default they are
    /// skipped, which is not a failure).
    #[arg(long)]
    pub ignore_window: bool,
    /// Also work flow/site pairs whose circuit breaker is open (after
    /// fixing what made them fail; by default they are skipped until the
    /// cool-down ends). A success closes the circuit.
    #[arg(long)]
    pub ignore_circuit: bool,
}

/// Chooses flows and sites by name; unknown names are usage errors that list
/// the known ones. A name given twice is used once, where it first appears,
/// so no flow/site pair runs twice in one pass.
pub fn select<'c>(
    config: &'c Config,
    flow_names: &[String],
    site_ids: &[String],
) -> Result<(Vec<&'c Flow>, Vec<&'c Site>), UsageError> {
    let flows = if flow_names.is_empty() {
        // A chained flow (`after`) runs right after its predecessor at each
        // site, through the outbox; named with `--flow` it runs directly.
        config.flows.iter().filter(|f| f.after.is_none()).collect()
    } else {
        first_seen(flow_names)
            .map(|name| {
                config.flow(name).ok_or_else(|| {
                    UsageError(format!(
                        "no flow `{name}` in the config; flows: {}",
                        known_names(config.flows.iter().map(|f| f.name.as_str()))
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    let sites = if site_ids.is_empty() {
        config.sites.iter().collect()
    } else {
        first_seen(site_ids)
            .map(|id| config.site(id).ok_or_else(|| unknown_site(config, id)))
            .collect::<Result<Vec<_>, _>>()?
    };
    Ok((flows, sites))
}

/// The usage error for a `--site` that names no site of the config.
pub(super) fn unknown_site(config: &Config, id: &str) -> UsageError {
    UsageError(format!(
        "no site `{id}` in the config; sites: {}",
        known_names(config.sites.iter().map(|s| s.id.as_str()))
    ))
}

/// `names` without repeats, in the order each first appears.
fn first_seen(names: &[String]) -> impl Iterator<Item = &str> {
    let mut seen = HashSet::new();
    names
        .iter()
        .map(String::as_str)
        .filter(move |name| seen.insert(*name))
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

/// How long `sync` delivers the follow-up events due after its runs
/// before it exits (the rest is left to `hubsync run`).
const EVENTS_BUDGET: std::time::Duration = std::time::Duration::from_secs(60);

/// Delivers the follow-up events due now (those the pass raised, and any
/// left over), for at most [`EVENTS_BUDGET`]; prints one line when there
/// were any. A failure is reported, not fatal: the events stay pending.
async fn deliver_events(hub: &Arc<Hub>) {
    let config = hub.config();
    if config
        .flows
        .iter()
        .all(|f| f.on.is_empty() && f.after.is_none())
    {
        return;
    }
    let deliverer = match crate::events::Deliverer::new(hub.clone()) {
        Ok(deliverer) => deliverer,
        Err(e) => return eprintln!("follow-up events not delivered: {e}"),
    };
    match deliverer.drain(EVENTS_BUDGET).await {
        Ok(pass) if pass.claimed > 0 => eprintln!(
            "follow-up events: {} delivered, {} to retry later (`hubsync run` delivers them), {} dead letters (`hubsync events`)",
            pass.delivered, pass.retried, pass.dead
        ),
        Ok(_) => {}
        Err(e) => eprintln!("follow-up events not delivered (they stay in the outbox): {e}"),
    }
}

/// Printed after a dry run's table. A dry run reads every row a real run
/// would, but the upsert then skips unchanged rows, so `rows read` is an
/// upper bound on what a real run rewrites.
const DRY_RUN_FOOTER: &str = "dry run: nothing was written (no rows, checkpoints or run history); \
     `rows read` counts the rows a real run would read and upsert (unchanged ones are not rewritten); \
     `rows written` the rows it would insert, change or soft-delete at a PostgreSQL target (compared in \
     one read; not predicted at MySQL or SQLite targets, where it counts soft deletes only; hard deletes \
     are not predicted)";

/// The closing line when `failed` of `total` site runs failed. A dry run
/// records no run history, so it does not point to `hubsync status`.
fn failed_line(failed: usize, total: u64, dry_run: bool) -> String {
    let runs = plural(total, "site run");
    if dry_run {
        format!(
            "{failed} of {runs} did not succeed (failed, skipped or partial); see the errors above"
        )
    } else {
        format!(
            "{failed} of {runs} did not succeed (failed, skipped or partial); see the errors above or `hubsync status`"
        )
    }
}

pub(super) async fn run(
    config: Arc<Config>,
    args: SyncArgs,
    cancel: CancellationToken,
) -> anyhow::Result<u8> {
    // With `[inventory]`, the sites are those of the master's table now:
    // the hub opens first. Without, usage errors come before connecting.
    let (hub, fleet) = match &config.inventory {
        Some(_) => {
            let hub = Hub::open(config.clone(), cancel.clone()).await?;
            let read = hub.refresh_inventory().await?;
            for warning in &read.warnings {
                eprintln!("warning: {warning}");
            }
            let fleet = Arc::new(Config {
                sites: read.sites,
                ..(*config).clone()
            });
            (Some(hub), fleet)
        }
        None => (None, config.clone()),
    };
    let (flows, sites) = select(&fleet, &args.flows, &args.sites)?;
    if flows.is_empty() {
        return Err(UsageError("the config has no flows; add a `[[flow]]`".into()).into());
    }
    if sites.is_empty() {
        return Err(UsageError(
            "the config has no sites; add a `[[site]]`, or rows to the `[inventory]` query's table"
                .into(),
        )
        .into());
    }
    let hub = Arc::new(match hub {
        Some(hub) => hub,
        None => Hub::open(config.clone(), cancel.clone()).await?,
    });
    let progress = FleetProgress::new();
    let options = SyncOptions {
        dry_run: args.dry_run,
        ignore_window: args.ignore_window,
        ignore_circuit: args.ignore_circuit,
        splay: false,
    };
    let reports = sync_flows(&hub, &flows, &sites, options, &progress).await;
    tracing::info!(
        high_water = hub.master_write_high_water(),
        limit = config.hub.master_write_concurrency,
        "master write transactions in flight at once, at most"
    );
    if !args.dry_run && !cancel.is_cancelled() {
        deliver_events(&hub).await;
    }
    hub.close().await;
    println!("{}", summary_table(&reports));
    for line in error_lines(&reports) {
        println!("{line}");
    }
    let failed = failures(&reports);
    if args.dry_run {
        println!("{DRY_RUN_FOOTER}");
    }
    if cancel.is_cancelled() {
        eprintln!(
            "interrupted: committed batches are kept; the next sync resumes from the checkpoints"
        );
        return Ok(EXIT_INTERRUPTED);
    }
    if failed > 0 {
        eprintln!(
            "{}",
            failed_line(failed, reports.len() as u64, args.dry_run)
        );
        return Ok(EXIT_FAILED);
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
pub(super) mod tests {
    use std::path::Path;

    use super::*;

    /// A config with flows `up` and `down` and sites `s1` to `s{sites}`.
    pub(in crate::cli) fn fleet_config(sites: usize) -> Config {
        let mut text = String::from("[master]\nurl = \"sqlite://master.db\"\n");
        for n in 1..=sites {
            text.push_str(&format!(
                "[[site]]\nid = \"s{n}\"\nurl = \"sqlite://s{n}.db\"\n"
            ));
        }
        text.push_str(
            "[[flow]]\nname = \"up\"\ndirection = \"pull\"\n\
             [[flow.stream]]\nsource = \"sales\"\ntarget = \"sales\"\nprimary_key = [\"id\"]\n\
             cursor = \"updated_at\"\nsite_column = \"site\"\n\
             [[flow]]\nname = \"down\"\ndirection = \"push\"\n\
             [[flow.stream]]\nsource = \"prices\"\ntarget = \"prices\"\nprimary_key = [\"sku\"]\n\
             cursor = \"updated_at\"\n",
        );
        Config::parse(&text, Path::new("hubsync.toml"), Path::new("/cfg"), &|_| {
            None
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// Regression: `--flow up --flow up` ran every site of `up` twice.
    #[test]
    fn repeated_names_run_once_in_first_seen_order() {
        let config = fleet_config(3);
        let (flows, sites) = select(
            &config,
            &strings(&["down", "up", "down"]),
            &strings(&["s3", "s1", "s3", "s1"]),
        )
        .unwrap();
        let flows: Vec<&str> = flows.iter().map(|f| f.name.as_str()).collect();
        let sites: Vec<&str> = sites.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(flows, ["down", "up"]);
        assert_eq!(sites, ["s3", "s1"]);
        let (flows, sites) = select(&config, &[], &[]).unwrap();
        assert_eq!((flows.len(), sites.len()), (2, 3));
    }

    /// Regression: the dry-run footer said `rows read` is "what a real run
    /// would apply" and a failed dry run pointed to `hubsync status`, which
    /// records nothing for dry runs.
    #[test]
    fn dry_run_footer_and_failure_line_say_what_happened() {
        assert_eq!(
            DRY_RUN_FOOTER,
            "dry run: nothing was written (no rows, checkpoints or run history); `rows read` counts the rows a real run \
             would read and upsert (unchanged ones are not rewritten); `rows written` the rows it would insert, change \
             or soft-delete at a PostgreSQL target (compared in one read; not predicted at MySQL or SQLite targets, \
             where it counts soft deletes only; hard deletes are not predicted)"
        );
        assert_eq!(
            failed_line(1, 3, true),
            "1 of 3 site runs did not succeed (failed, skipped or partial); see the errors above"
        );
        assert_eq!(
            failed_line(2, 3, false),
            "2 of 3 site runs did not succeed (failed, skipped or partial); see the errors above or `hubsync status`"
        );
    }

    /// Regression: `--site nope` said "run `hubsync status` to list sites".
    #[test]
    fn unknown_site_lists_the_known_ones() {
        let error = select(&fleet_config(2), &[], &strings(&["nope"])).unwrap_err();
        assert_eq!(error.0, "no site `nope` in the config; sites: s1, s2");
        let error = select(&fleet_config(25), &[], &strings(&["s1", "nope"])).unwrap_err();
        assert!(error.0.ends_with(", s19, s20 … and 5 more"), "{}", error.0);
        let error = select(&fleet_config(2), &strings(&["side"]), &[]).unwrap_err();
        assert_eq!(error.0, "no flow `side` in the config; flows: up, down");
    }
}
