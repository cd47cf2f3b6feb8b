//! `hubsync events`: the outbox of follow-up events; list them (dead
//! letters by default), replay dead ones, or deliver what is due now.

use std::sync::Arc;

use clap::{Args, Subcommand};
use comfy_table::{Table, presets};

use super::{EXIT_FAILED, EXIT_OK, UsageError};
use crate::config::Config;
use crate::flow::Hub;
use crate::state::DeliveryState;

/// Arguments of `hubsync events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// What to do; default: list the dead letters.
    #[command(subcommand)]
    pub action: Option<EventsAction>,
}

/// `hubsync events` subcommands.
#[derive(Debug, Subcommand)]
pub enum EventsAction {
    /// List outbox events, newest first.
    List {
        /// Only events in this state: `pending`, `delivered`, `dead` or `all`.
        #[arg(long, default_value = "dead")]
        state: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Deliver dead (or delivered) events again, under their own ids.
    Replay {
        /// Event ids (from `hubsync events list`).
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Deliver the events due now (what the daemon does every second).
    Deliver,
}

pub(super) async fn run(config: Arc<Config>, args: EventsArgs) -> anyhow::Result<u8> {
    let action = args.action.unwrap_or(EventsAction::List {
        state: "dead".into(),
        limit: 100,
    });
    let state_filter = match &action {
        EventsAction::List { state, .. } if state == "all" => None,
        EventsAction::List { state, .. } => Some(DeliveryState::parse(state).ok_or_else(|| {
            UsageError(format!(
                "`--state {state}`: use `pending`, `delivered`, `dead` or `all`"
            ))
        })?),
        _ => None,
    };
    let hub = Arc::new(Hub::open_existing(config).await?);
    let code = match action {
        EventsAction::List { limit, .. } => list(&hub, state_filter, limit).await?,
        EventsAction::Replay { ids } => replay(&hub, &ids).await?,
        EventsAction::Deliver => {
            let deliverer =
                crate::events::Deliverer::new(hub.clone()).map_err(anyhow::Error::msg)?;
            let pass = deliverer.drain(std::time::Duration::from_secs(60)).await?;
            println!(
                "{} delivered, {} to retry later, {} now dead letters",
                pass.delivered, pass.retried, pass.dead
            );
            if pass.retried + pass.dead > 0 {
                EXIT_FAILED
            } else {
                EXIT_OK
            }
        }
    };
    hub.close().await;
    Ok(code)
}

async fn list(hub: &Hub, state: Option<DeliveryState>, limit: usize) -> anyhow::Result<u8> {
    let events = hub.state().events(hub.master(), state, limit).await?;
    let (pending, delivered, dead) = hub.state().event_counts(hub.master()).await?;
    let mut table = Table::new();
    table.load_preset(presets::UTF8_BORDERS_ONLY);
    table.set_header([
        "event id",
        "flow",
        "site",
        "event",
        "handler",
        "state",
        "attempts",
        "created",
        "last error",
    ]);
    for event in &events {
        table.add_row([
            event.event_id.clone(),
            event.flow.clone(),
            event.site.clone(),
            event.event.clone(),
            event.handler.clone(),
            event.state.as_str().to_string(),
            event.attempts.to_string(),
            event.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            event.last_error.clone().unwrap_or_default(),
        ]);
    }
    let what = state.map_or("events", DeliveryState::as_str);
    if events.is_empty() {
        println!("no {what} events");
    } else {
        println!("{table}");
    }
    println!(
        "outbox: {pending} pending, {delivered} delivered, {dead} dead{}",
        if dead > 0 {
            "; replay with `hubsync events replay <event id>...`"
        } else {
            ""
        }
    );
    Ok(EXIT_OK)
}

/// Replays the dead or delivered events `ids` (each id once). Every id is
/// checked first: if one names no such event, nothing is re-queued and the
/// usage error names them all.
async fn replay(hub: &Hub, ids: &[String]) -> anyhow::Result<u8> {
    let mut seen = std::collections::HashSet::new();
    let ids: Vec<String> = (ids.iter())
        .filter(|id| seen.insert(id.as_str()))
        .cloned()
        .collect();
    let replayable = hub.state().replayable_events(hub.master(), &ids).await?;
    let missing: Vec<&str> = (ids.iter())
        .filter(|id| !replayable.contains(*id))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(UsageError(format!(
            "no dead or delivered event with id {}; nothing was replayed; see `hubsync events list --state all`",
            missing.join(", ")
        ))
        .into());
    }
    let mut raced = Vec::new();
    for id in &ids {
        if hub.state().replay_event(hub.master(), id).await? {
            println!(
                "event {id}: pending again; `hubsync run` or `hubsync events deliver` delivers it"
            );
        } else {
            // Replayed (or deleted) by another process since the check.
            raced.push(id.as_str());
        }
    }
    if raced.is_empty() {
        return Ok(EXIT_OK);
    }
    Err(UsageError(format!(
        "no dead or delivered event with id {} any more (another process replayed or pruned it); see `hubsync events list --state all`",
        raced.join(", ")
    ))
    .into())
}
