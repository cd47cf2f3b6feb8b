//! `hubsync reset`: forget checkpoints so the next run backfills.

use std::sync::Arc;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{EXIT_OK, UsageError};
use crate::config::Config;
use crate::flow::Hub;

/// Arguments of `hubsync reset`.
#[derive(Debug, Args)]
pub struct ResetArgs {
    /// The flow whose checkpoints to forget.
    #[arg(long)]
    pub flow: String,
    /// Only this stream of the flow.
    #[arg(long)]
    pub stream: Option<String>,
    /// Only this site.
    #[arg(long)]
    pub site: Option<String>,
}

pub(super) async fn run(config: Arc<Config>, args: ResetArgs) -> anyhow::Result<u8> {
    let flow = config.flow(&args.flow).ok_or_else(|| {
        let known: Vec<&str> = config.flows.iter().map(|f| f.name.as_str()).collect();
        UsageError(format!(
            "no flow `{}` in the config; flows: {}",
            args.flow,
            known.join(", ")
        ))
    })?;
    if let Some(stream) = &args.stream
        && !flow.streams.iter().any(|s| &s.name == stream)
    {
        let known: Vec<&str> = flow.streams.iter().map(|s| s.name.as_str()).collect();
        return Err(UsageError(format!(
            "flow `{}` has no stream `{stream}`; streams: {}",
            flow.name,
            known.join(", ")
        ))
        .into());
    }
    let hub = Hub::open(config.clone(), CancellationToken::new()).await?;
    let removed = hub
        .state()
        .delete_checkpoints(
            hub.master(),
            &flow.name,
            args.stream.as_deref(),
            args.site.as_deref(),
        )
        .await?;
    hub.master().close().await;
    println!(
        "forgot {removed} checkpoint(s) of flow `{}`{}{}; the next run backfills them",
        flow.name,
        args.stream
            .as_ref()
            .map(|s| format!(" stream `{s}`"))
            .unwrap_or_default(),
        args.site
            .as_ref()
            .map(|s| format!(" site `{s}`"))
            .unwrap_or_default(),
    );
    Ok(EXIT_OK)
}
