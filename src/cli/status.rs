//! `hubsync status`: checkpoints and the last run per flow and site.

use std::sync::Arc;

use chrono::Utc;
use comfy_table::{Table, presets};
use tokio_util::sync::CancellationToken;

use super::EXIT_OK;
use super::output::thousands;
use crate::config::Config;
use crate::flow::Hub;
use crate::state::{RunStatus, format_position};

pub(super) async fn run(config: Arc<Config>) -> anyhow::Result<u8> {
    let hub = Hub::open(config.clone(), CancellationToken::new()).await?;
    let runs = hub.state().last_runs(hub.master()).await?;
    let checkpoints = hub.state().checkpoints(hub.master()).await?;
    hub.master().close().await;
    let now = Utc::now();

    let mut table = Table::new();
    table.load_preset(presets::UTF8_BORDERS_ONLY);
    table.set_header([
        "flow",
        "site",
        "last run",
        "result",
        "rows read",
        "rows written",
        "error",
    ]);
    let mut failing = 0;
    for flow in &config.flows {
        for site in &config.sites {
            match runs
                .iter()
                .find(|r| r.flow == flow.name && r.site == site.id)
            {
                Some(run) => {
                    if matches!(run.status, RunStatus::Failed | RunStatus::Skipped) {
                        failing += 1;
                    }
                    let ago = (now - run.started_at).num_seconds().max(0);
                    table.add_row([
                        flow.name.clone(),
                        site.id.clone(),
                        format!(
                            "{} ({})",
                            run.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                            ago_text(ago)
                        ),
                        run.status.as_str().to_string(),
                        thousands(run.rows_read as u64),
                        thousands(run.rows_written as u64),
                        run.error
                            .clone()
                            .or_else(|| run.note.clone())
                            .unwrap_or_default(),
                    ]);
                }
                None => {
                    table.add_row([
                        flow.name.clone(),
                        site.id.clone(),
                        "never".into(),
                        "-".into(),
                        String::new(),
                        String::new(),
                        String::new(),
                    ]);
                }
            }
        }
    }
    println!("Last runs\n{table}");

    let mut table = Table::new();
    table.load_preset(presets::UTF8_BORDERS_ONLY);
    table.set_header([
        "flow",
        "stream",
        "site",
        "checkpoint (cursor, key)",
        "moved",
    ]);
    for checkpoint in &checkpoints {
        let ago = (now - checkpoint.updated_at).num_seconds().max(0);
        table.add_row([
            checkpoint.key.flow.clone(),
            checkpoint.key.stream.clone(),
            checkpoint.key.site.clone(),
            format_position(&checkpoint.position),
            ago_text(ago),
        ]);
    }
    if checkpoints.is_empty() {
        println!("\nCheckpoints: none yet (the first run of each stream backfills)");
    } else {
        println!("\nCheckpoints\n{table}");
    }
    if failing > 0 {
        println!("\n{failing} flow/site pair(s) failed their last run; the error column says why");
    }
    Ok(EXIT_OK)
}

/// `42 s ago`, `5 min ago`, `3 h ago`, `2 d ago`.
fn ago_text(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s} s ago"),
        s if s < 7200 => format!("{} min ago", s / 60),
        s if s < 172_800 => format!("{} h ago", s / 3600),
        s => format!("{} d ago", s / 86_400),
    }
}
