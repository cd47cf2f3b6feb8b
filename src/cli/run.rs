//! `hubsync run`: the scheduler daemon.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::output::FleetProgress;
use super::{EXIT_OK, UsageError};
use crate::config::Config;
use crate::flow::Hub;
use crate::scheduler::run_schedules;

pub(super) async fn run(config: Arc<Config>, cancel: CancellationToken) -> anyhow::Result<u8> {
    let scheduled: Vec<&str> = config
        .flows
        .iter()
        .filter(|f| f.schedule.is_some())
        .map(|f| f.name.as_str())
        .collect();
    if scheduled.is_empty() {
        return Err(UsageError(
            "no flow has a `schedule`; add e.g. `schedule = \"every 5m\"` to a `[[flow]]`, or use `hubsync sync`".into(),
        )
        .into());
    }
    let hub = Arc::new(Hub::open(config.clone(), cancel.clone()).await?);
    eprintln!(
        "hubsync running {} ({}) over {}; master {}; stop with Ctrl-C or SIGTERM",
        super::plural(scheduled.len() as u64, "scheduled flow"),
        scheduled.join(", "),
        super::plural(config.sites.len() as u64, "site"),
        config.master.redacted()
    );
    // One line per finished site run (no bars in a daemon).
    let progress = Arc::new(FleetProgress::new_lines());
    run_schedules(hub.clone(), progress, cancel).await;
    hub.master().close().await;
    eprintln!("hubsync stopped cleanly: every committed batch is kept");
    Ok(EXIT_OK)
}
