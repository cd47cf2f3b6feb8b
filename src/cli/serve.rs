//! `hubsync serve`: the HTTP API and dashboard without the scheduler.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::EXIT_OK;
use super::output::FleetProgress;
use crate::api::{self, ApiState};
use crate::config::Config;
use crate::flow::Hub;

pub(super) async fn run(config: Arc<Config>, cancel: CancellationToken) -> anyhow::Result<u8> {
    let api_config = config.api.clone().unwrap_or_default();
    let hub = Arc::new(Hub::open(config.clone(), cancel.clone()).await?);
    let deliverer = crate::events::Deliverer::new(hub.clone()).map_err(anyhow::Error::msg)?;
    let listener = api::bind(api_config.listen).await?;
    let state = ApiState::new(
        hub.clone(),
        &api_config,
        Arc::new(FleetProgress::new_lines()),
    );
    let pruning = tokio::spawn(api::prune_history(hub.clone(), cancel.clone()));
    let delivering = tokio::spawn(deliverer.run(cancel.clone()));
    api::serve(listener, state, cancel).await?;
    let _ = pruning.await;
    let _ = delivering.await;
    hub.close().await;
    eprintln!("hubsync stopped cleanly");
    Ok(EXIT_OK)
}
