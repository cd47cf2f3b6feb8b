//! `hubsync status`: checkpoints and the last run per flow and site.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use comfy_table::{Table, presets};

use super::output::thousands;
use super::{EXIT_OK, plural};
use crate::config::Config;
use crate::flow::{Hub, circuit};
use crate::state::{CheckpointRecord, RunRecord, RunStatus, format_position};

/// Arguments of `hubsync status`: filters for large fleets (all pairs
/// without them).
#[derive(clap::Args, Debug, Default)]
pub struct StatusArgs {
    /// Only this flow.
    #[arg(long)]
    pub flow: Option<String>,
    /// Only pairs whose last run is `running`, `succeeded`, `failed`,
    /// `skipped` or `partial`, that never ran (`never`), or whose circuit is
    /// open (`circuit_open`).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(crate::api::fleet::STATES))]
    pub state: Option<String>,
    /// Only sites whose id contains this text (any case).
    #[arg(long, value_name = "TEXT")]
    pub site: Option<String>,
    /// Only sites with this tag value, `name:value` (e.g. `region:north`).
    #[arg(long, value_name = "NAME:VALUE")]
    pub tag: Option<String>,
    /// Print at most this many pairs and checkpoints (the summary counts all).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

impl StatusArgs {
    /// True if the pair passes the filters (`open`: its circuit is open).
    fn keeps(
        &self,
        flow: &str,
        site: &crate::config::Site,
        run: Option<&RunRecord>,
        open: bool,
    ) -> bool {
        let state = run.map_or("never", |r| r.status.as_str());
        let state_ok = match self.state.as_deref() {
            None => true,
            Some("circuit_open") => open,
            Some(wanted) => wanted == state,
        };
        let tag_ok = self.tag.as_deref().is_none_or(|tag| {
            tag.split_once(':')
                .is_some_and(|(name, value)| site.tags.get(name).is_some_and(|v| v == value))
        });
        state_ok
            && tag_ok
            && self.flow.as_deref().is_none_or(|f| f == flow)
            && (self.site.as_deref())
                .is_none_or(|q| site.id.to_lowercase().contains(&q.to_lowercase()))
    }
}

pub(super) async fn run(config: Arc<Config>, args: StatusArgs) -> anyhow::Result<u8> {
    if let Some(tag) = &args.tag
        && !tag.contains(':')
    {
        return Err(super::UsageError(format!(
            "`--tag {tag}` is not `name:value` (e.g. `--tag region:north`)"
        ))
        .into());
    }
    if let Some(flow) = &args.flow
        && config.flow(flow).is_none()
    {
        return Err(super::UsageError(format!(
            "no flow `{flow}` in the config; flows: {}",
            super::known_names(config.flows.iter().map(|f| f.name.as_str()))
        ))
        .into());
    }
    let hub = Hub::open_existing(config.clone()).await?;
    let (fleet, inventory_note) = fleet_sites(&hub).await;
    let runs = hub.state().last_runs(hub.master()).await?;
    let checkpoints = hub.state().checkpoints(hub.master()).await?;
    let streaks = hub.state().failure_streaks(hub.master(), None).await?;
    let quarantined = hub.state().quarantine_counts(hub.master()).await?;
    let quarantine_table = hub.state().table_name("quarantine");
    let (pending_events, _, dead_events) = hub.state().event_counts(hub.master()).await?;
    let leases = match hub.leased() {
        true => Some(hub.state().leases(hub.master()).await?),
        false => None,
    };
    hub.close().await;
    let now = Utc::now();
    let runs: HashMap<(&str, &str), &RunRecord> = runs
        .iter()
        .map(|r| ((r.flow.as_str(), r.site.as_str()), r))
        .collect();
    let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
    let mut open_circuits = 0;
    let mut kept: HashSet<(&str, &str)> = HashSet::new();
    let limit = args.limit.unwrap_or(usize::MAX);

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
        for site in fleet.iter() {
            let run = runs.get(&(flow.name.as_str(), site.id.as_str())).copied();
            *by_state
                .entry(run.map_or("never", |r| r.status.as_str()))
                .or_default() += 1;
            if run.is_some_and(|r| matches!(r.status, RunStatus::Failed | RunStatus::Skipped)) {
                failing += 1;
            }
            let circuit = circuit_text(&config, &streaks, &flow.name, &site.id, now);
            let open = circuit != "closed";
            open_circuits += u64::from(open);
            if !args.keeps(&flow.name, site, run, open) || kept.len() >= limit {
                continue;
            }
            kept.insert((flow.name.as_str(), site.id.as_str()));
            let mut row = last_run_row(&flow.name, &site.id, run, now).to_vec();
            row.insert(row.len() - 1, circuit);
            table.add_row(row);
        }
    }
    println!("{}", fleet_line(fleet.len(), &by_state, open_circuits));
    if let Some(note) = &inventory_note {
        println!("{note}");
    }
    if let Some(line) = quarantine_line(&quarantined, &quarantine_table) {
        println!("{line}");
    }
    if let Some(leases) = &leases {
        println!("{}", leases_line(leases, now));
    }
    println!("Last runs\n{table}");
    // Without filters every checkpoint shows, also of sites no longer in the config.
    let unfiltered = args.flow.is_none()
        && args.state.is_none()
        && args.site.is_none()
        && args.tag.is_none()
        && args.limit.is_none();
    match checkpoints_table(&checkpoints, (!unfiltered).then_some(&kept), limit, now) {
        Some(table) => println!("\nCheckpoints\n{table}"),
        None => println!("\nCheckpoints: none yet (the first run of each stream backfills)"),
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

/// The fleet's sites as `hubsync sync` reads them: the static `[[site]]`s,
/// plus, with `[inventory]`, the rows of its query on the master now. When
/// that query fails: the static sites and a note saying why (`Inventory:
/// not read (...); only the static sites show`).
async fn fleet_sites(hub: &Hub) -> (Arc<Vec<crate::config::Site>>, Option<String>) {
    if hub.config().inventory.is_none() {
        return (hub.sites(), None);
    }
    match hub.refresh_inventory().await {
        Ok(_) => (hub.sites(), None),
        Err(e) => (
            hub.sites(),
            Some(format!(
                "Inventory: not read ({e}); only the static sites show"
            )),
        ),
    }
}

/// `open until 10:05:00 UTC (3 failures)`, or `closed`.
fn circuit_text(
    config: &Config,
    streaks: &HashMap<(String, String), (u32, DateTime<Utc>)>,
    flow: &str,
    site: &str,
    now: DateTime<Utc>,
) -> String {
    streaks
        .get(&(flow.to_string(), site.to_string()))
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
        .unwrap_or_else(|| "closed".to_string())
}

/// The checkpoints of the `kept` pairs (all without), at most `limit`, or
/// `None` when there are none.
fn checkpoints_table(
    checkpoints: &[CheckpointRecord],
    kept: Option<&HashSet<(&str, &str)>>,
    limit: usize,
    now: DateTime<Utc>,
) -> Option<Table> {
    let mut table = Table::new();
    table.load_preset(presets::UTF8_BORDERS_ONLY);
    table.set_header([
        "flow",
        "stream",
        "site",
        "checkpoint (cursor, key)",
        "moved",
    ]);
    let shown = (checkpoints.iter())
        .filter(|c| {
            kept.is_none_or(|kept| kept.contains(&(c.key.flow.as_str(), c.key.site.as_str())))
        })
        .take(limit);
    let mut any = false;
    for checkpoint in shown {
        any = true;
        let ago = (now - checkpoint.updated_at).num_seconds().max(0);
        table.add_row([
            checkpoint.key.flow.clone(),
            checkpoint.key.stream.clone(),
            checkpoint.key.site.clone(),
            format_position(&checkpoint.position),
            ago_text(ago),
        ]);
    }
    any.then_some(table)
}

/// `Fleet: 1,000 sites, 2,000 flow/site pairs: 10 failed, 1,990 succeeded; 2 with a tripped circuit`
/// (the states of the pairs' last runs, `never` for none).
fn fleet_line(sites: usize, by_state: &BTreeMap<&str, u64>, open: u64) -> String {
    let pairs: u64 = by_state.values().sum();
    let states: Vec<String> = (by_state.iter())
        .map(|(state, n)| format!("{} {state}", thousands(*n)))
        .collect();
    format!(
        "Fleet: {}, {}: {}; {open} with a tripped circuit",
        plural(sites as u64, "site"),
        plural(pairs, "flow/site pair"),
        states.join(", "),
    )
}

/// Pairs named in the quarantine line; the rest are counted.
const QUARANTINE_PAIRS_SHOWN: usize = 5;

/// `Quarantine: 49 rows (sales/s1: 49); each is retried when it changes at
/// the source; list them: SELECT * FROM hubsync.quarantine`, the pairs with
/// the most rows first (at most [`QUARANTINE_PAIRS_SHOWN`], then `N more
/// pairs`); `None` when the quarantine (`table`) is empty.
fn quarantine_line(counts: &HashMap<(String, String), u64>, table: &str) -> Option<String> {
    let total: u64 = counts.values().sum();
    if total == 0 {
        return None;
    }
    let mut pairs: Vec<(&(String, String), &u64)> = counts.iter().collect();
    pairs.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let mut shown: Vec<String> = (pairs.iter().take(QUARANTINE_PAIRS_SHOWN))
        .map(|((flow, site), rows)| format!("{flow}/{site}: {}", thousands(**rows)))
        .collect();
    if pairs.len() > QUARANTINE_PAIRS_SHOWN {
        shown.push(plural(
            (pairs.len() - QUARANTINE_PAIRS_SHOWN) as u64,
            "more pair",
        ));
    }
    Some(format!(
        "Quarantine: {} ({}); each is retried when it changes at the source; list them: SELECT * FROM {table}",
        plural(total, "row"),
        shown.join(", ")
    ))
}

/// `Leases: 12 held (r1: 5, r2: 7), 30 due now, 1,958 waiting`.
fn leases_line(leases: &[crate::state::LeaseRecord], now: DateTime<Utc>) -> String {
    let mut holders: std::collections::BTreeMap<&str, u64> = Default::default();
    for lease in leases {
        if let Some(holder) = &lease.holder {
            *holders.entry(holder).or_default() += 1;
        }
    }
    let held: u64 = holders.values().sum();
    let due = (leases.iter())
        .filter(|l| l.holder.is_none() && l.next_due <= now)
        .count() as u64;
    let by_holder: Vec<String> = holders.iter().map(|(h, n)| format!("{h}: {n}")).collect();
    format!(
        "Leases: {} held{}, {} due now, {} waiting",
        thousands(held),
        if by_holder.is_empty() {
            String::new()
        } else {
            format!(" ({})", by_holder.join(", "))
        },
        thousands(due),
        thousands(leases.len() as u64 - held - due)
    )
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

    #[test]
    fn the_fleet_and_lease_lines_count_every_pair() {
        let by_state = [("failed", 10), ("never", 2), ("succeeded", 1990)]
            .into_iter()
            .collect();
        assert_eq!(
            fleet_line(1000, &by_state, 2),
            "Fleet: 1,000 sites, 2,002 flow/site pairs: 10 failed, 2 never, 1,990 succeeded; 2 with a tripped circuit"
        );
        let now: DateTime<Utc> = "2026-07-01T10:00:00Z".parse().unwrap();
        let lease = |holder: Option<&str>, due: &str| crate::state::LeaseRecord {
            flow: "f".into(),
            site: "s".into(),
            holder: holder.map(str::to_string),
            token: 1,
            next_due: due.parse().unwrap(),
        };
        let leases = [
            lease(Some("r2"), "2026-07-01T09:59:00Z"),
            lease(Some("r1"), "2026-07-01T09:59:00Z"),
            lease(Some("r2"), "2026-07-01T09:58:00Z"),
            lease(None, "2026-07-01T09:59:00Z"),
            lease(None, "2026-07-01T11:00:00Z"),
        ];
        assert_eq!(
            leases_line(&leases, now),
            "Leases: 3 held (r1: 1, r2: 2), 1 due now, 1 waiting"
        );
        assert_eq!(
            leases_line(&[], now),
            "Leases: 0 held, 0 due now, 0 waiting"
        );
    }

    #[test]
    fn the_quarantine_line_names_the_biggest_pairs() {
        let counts = |pairs: &[(&str, &str, u64)]| -> HashMap<(String, String), u64> {
            (pairs.iter())
                .map(|(f, s, n)| ((f.to_string(), s.to_string()), *n))
                .collect()
        };
        assert_eq!(quarantine_line(&counts(&[]), "hubsync.quarantine"), None);
        assert_eq!(
            quarantine_line(&counts(&[("sales", "s1", 49)]), "hubsync.quarantine").as_deref(),
            Some(
                "Quarantine: 49 rows (sales/s1: 49); each is retried when it changes at the source; list them: SELECT * FROM hubsync.quarantine"
            )
        );
        // 7 pairs, 1 + 2 + 3 + 4 + 5 + 7 + 7 = 29 rows: the 5 biggest, ties by name.
        let seven = counts(&[
            ("a", "s1", 1),
            ("a", "s2", 2),
            ("a", "s3", 3),
            ("a", "s4", 4),
            ("a", "s5", 5),
            ("b", "s1", 7),
            ("a", "s6", 7),
        ]);
        assert_eq!(
            quarantine_line(&seven, "hubsync_quarantine").as_deref(),
            Some(
                "Quarantine: 29 rows (a/s6: 7, b/s1: 7, a/s5: 5, a/s4: 4, a/s3: 3, 2 more pairs); each is retried when it changes at the source; list them: SELECT * FROM hubsync_quarantine"
            )
        );
    }

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
