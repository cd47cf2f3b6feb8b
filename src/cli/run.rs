//! `hubsync run`: the scheduler daemon.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::output::FleetProgress;
use super::{EXIT_OK, UsageError};
use crate::api::{self, ApiState};
use crate::config::Config;
use crate::flow::Hub;
use crate::scheduler::{run_leased_schedules, run_schedules};

pub(super) async fn run(config: Arc<Config>, cancel: CancellationToken) -> anyhow::Result<u8> {
    let scheduled: Vec<&str> = config
        .flows
        .iter()
        .filter(|f| f.schedule.is_some())
        .map(|f| f.name.as_str())
        .collect();
    // With `[api]` the daemon is useful without schedules (syncs on request).
    if scheduled.is_empty() && config.api.is_none() {
        return Err(UsageError(
            "no flow has a `schedule`; add e.g. `schedule = \"every 5m\"` to a `[[flow]]`, or use `hubsync sync`".into(),
        )
        .into());
    }
    let hub = Arc::new(Hub::open(config.clone(), cancel.clone()).await?);
    let deliverer = crate::events::Deliverer::new(hub.clone()).map_err(anyhow::Error::msg)?;
    let flows = if scheduled.is_empty() {
        "no scheduled flow (syncs on request through the API)".to_string()
    } else {
        format!(
            "{} ({})",
            super::plural(scheduled.len() as u64, "scheduled flow"),
            scheduled.join(", ")
        )
    };
    let sites = match &config.inventory {
        // Read again before each pass (`scheduler::pass_sites`).
        Some(_) => format!(
            "{} and the `[inventory]` query's (read before every pass)",
            super::plural(config.sites.len() as u64, "static site")
        ),
        None => super::plural(config.sites.len() as u64, "site"),
    };
    eprintln!(
        "hubsync running {flows} over {sites}; master {}; stop with Ctrl-C or SIGTERM",
        config.master.redacted()
    );
    eprintln!("{}", mode_line(&hub));
    // One line per finished site run (no bars in a daemon).
    let progress = Arc::new(FleetProgress::new_lines());
    let server = match &config.api {
        Some(api_config) => {
            let listener = api::bind(api_config.listen).await?;
            let state = ApiState::new(hub.clone(), api_config, progress.clone());
            Some(tokio::spawn(api::serve(listener, state, cancel.clone())))
        }
        None => None,
    };
    let pruning = tokio::spawn(api::prune_history(hub.clone(), cancel.clone()));
    let delivering = tokio::spawn(deliverer.run(cancel.clone()));
    if hub.leased() {
        run_leased_schedules(hub.clone(), progress, cancel).await;
    } else {
        run_schedules(hub.clone(), progress, cancel).await;
    }
    if let Some(server) = server {
        match server.await {
            Ok(Err(e)) => tracing::error!("the HTTP API stopped with an error: {e}"),
            Err(e) => tracing::error!("the HTTP API task failed: {e}"),
            Ok(Ok(())) => {}
        }
    }
    let _ = pruning.await;
    let _ = delivering.await;
    hub.close().await;
    eprintln!("hubsync stopped cleanly: every committed batch is kept");
    Ok(EXIT_OK)
}

/// The start-up line saying how this hub shares the fleet: as replica
/// `id` through leases, or alone (and why, when leases were asked for on a
/// master that cannot hold them).
fn mode_line(hub: &Hub) -> String {
    let hub_config = &hub.config().hub;
    if hub.leased() {
        format!(
            "replica `{}`: sharing the fleet with other replicas through leases in the master \
             (lease {:.1} s, renewed every {:.1} s)",
            hub.replica_id(),
            hub_config.lease_period.as_secs_f64(),
            hub_config.lease_heartbeat.as_secs_f64()
        )
    } else if hub_config.leases {
        format!(
            "single-hub mode: `hub.leases` needs a PostgreSQL master and this master is {}; \
             run only one hub against it",
            hub.master().dialect().name()
        )
    } else {
        "single-hub mode: this hub runs every flow at every site (set `hub.leases = true` on a \
         PostgreSQL master to run several replicas)"
            .to_string()
    }
}
