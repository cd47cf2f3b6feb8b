//! `hubsync status`: checkpoints and the last run per flow and site.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use comfy_table::{Table, presets};

use super::output::thousands;
use super::{EXIT_OK, plural};
use crate::config::Config;
use crate::flow::{Hub, circuit};
use crate::state::{RunRecord, RunStatus, format_position};

pub(super) async fn run(config: Arc<Config>) -> anyhow::Result<u8> {
    let hub = Hub::open_existing(config.clone()).await?;
    let runs = hub.state().last_runs(hub.master()).await?;
    let checkpoints = hub.state().checkpoints(hub.master()).await?;
    let streaks = hub.state().failure_streaks(hub.master(), None).await?;
    let (pending_events, _, dead_events) = hub.state().event_counts(hub.master()).await?;
    hub.close().await;
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
        "note",
        "circuit",
        "error",
    ]);
    let mut failing = 0;
    for flow in &config.flows {
        for site in &config.sites {
            let run = runs
                .iter()
                .find(|r| r.flow == flow.name && r.site == site.id);
            if run.is_some_and(|r| matches!(r.status, RunStatus::Failed | RunStatus::Skipped)) {
                failing += 1;
            }
            let circuit = streaks
                .get(&(flow.name.clone(), site.id.clone()))
                .and_then(|(streak, last)| {
                    circuit::open_until(
                        *streak,
                        *last,
                        config.hub.circuit_breaker_failures,
                        config.hub.circuit_breaker_cooldown,
                        now,
                    )
                    .map(|until| {
                        format!(
                            "open until {} ({streak} failures)",
                            until.format("%H:%M:%S UTC")
                        )
                    })
                })
                .unwrap_or_else(|| "closed".to_string());
            let mut row = last_run_row(&flow.name, &site.id, run, now).to_vec();
            row.insert(row.len() - 1, circuit);
            table.add_row(row);
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
    if pending_events + dead_events > 0 {
        println!(
            "\nFollow-up events: {pending_events} pending, {dead_events} dead letters{}",
            if dead_events > 0 {
                " (list: `hubsync events`; replay: `hubsync events replay <event id>`)"
            } else {
                ""
            }
        );
    }
    if failing > 0 {
        println!(
            "\n{} failed {} last run; the error column says why",
            plural(failing, "flow/site pair"),
            if failing == 1 { "its" } else { "their" }
        );
    }
    Ok(EXIT_OK)
}

/// One row of the last-runs table: flow, site, last run, result, rows
/// read, rows written, note, error. A succeeded run's note (e.g. why a
/// stream backfilled) is not an error, so each has its own column.
fn last_run_row(
    flow: &str,
    site: &str,
    run: Option<&RunRecord>,
    now: DateTime<Utc>,
) -> [String; 8] {
    match run {
        Some(run) => {
            let ago = (now - run.started_at).num_seconds().max(0);
            [
                flow.to_string(),
                site.to_string(),
                format!(
                    "{} ({})",
                    run.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    ago_text(ago)
                ),
                run.status.as_str().to_string(),
                thousands(run.rows_read.max(0) as u64),
                thousands(run.rows_written.max(0) as u64),
                run.note.clone().unwrap_or_default(),
                run.error.clone().unwrap_or_default(),
            ]
        }
        None => [
            flow.to_string(),
            site.to_string(),
            "never".into(),
            "-".into(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ],
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: RunStatus, note: Option<&str>, error: Option<&str>) -> RunRecord {
        let started_at = DateTime::parse_from_rfc3339("2026-07-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        RunRecord {
            run_id: "r1".into(),
            flow: "sales".into(),
            site: "s1".into(),
            started_at,
            finished_at: Some(started_at),
            rows_read: 1200,
            rows_written: 1000,
            status,
            error: error.map(Into::into),
            error_kind: None,
            note: note.map(Into::into),
        }
    }

    /// Regression: a succeeded run's "backfilling from the start" note was
    /// shown in the `error` column.
    #[test]
    fn a_note_is_not_an_error() {
        let now = DateTime::parse_from_rfc3339("2026-07-01T12:05:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let succeeded = run(
            RunStatus::Succeeded,
            Some("backfilling from the start"),
            None,
        );
        let row = last_run_row("sales", "s1", Some(&succeeded), now);
        assert_eq!(row[1], "s1");
        assert_eq!(row[2], "2026-07-01 12:00:00 UTC (5 min ago)");
        assert_eq!(row[3], "succeeded");
        assert_eq!(row[4], "1,200");
        assert_eq!(row[6], "backfilling from the start");
        assert_eq!(row[7], "");
        let failed = run(RunStatus::Failed, None, Some("site `s1`: timed out"));
        let row = last_run_row("sales", "s1", Some(&failed), now);
        assert_eq!(
            (row[6].as_str(), row[7].as_str()),
            ("", "site `s1`: timed out")
        );
        let never = last_run_row("sales", "s2", None, now);
        assert_eq!((never[2].as_str(), never[3].as_str()), ("never", "-"));
    }
}
