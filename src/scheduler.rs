//! Schedule triggers for `hubsync run`.
//!
//! Each scheduled flow gets one task that sleeps until its next due time,
//! runs one pass over every site, and repeats. A flow never overlaps
//! itself: a pass that outlasts its interval delays the next one. Due times
//! get a random delay (up to 10% of an interval, at most 30 s; up to 30 s
//! for cron) so that many flows or hubs do not hit the master at the same
//! second. `every` flows run their first pass right after start-up (within
//! 1 s of jitter, so a user who starts the daemon sees it work at once);
//! cron flows wait for their first match. With `[inventory]` each pass
//! reads the site list again (`pass_sites`).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::config::{Flow, Schedule};
use crate::flow::{Hub, Progress, SyncOptions};

/// Runs every flow that has a schedule until `cancel` fires; returns when
/// all flow tasks have stopped (a running pass finishes its current batch
/// first).
pub async fn run_schedules(hub: Arc<Hub>, progress: Arc<dyn Progress>, cancel: CancellationToken) {
    let mut tasks = Vec::new();
    for flow in hub.config().flows.iter().filter(|f| f.schedule.is_some()) {
        let hub = hub.clone();
        let progress = progress.clone();
        let cancel = cancel.clone();
        let flow = flow.clone();
        tasks.push(tokio::spawn(async move {
            run_flow_schedule(&hub, &flow, progress.as_ref(), &cancel).await
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

async fn run_flow_schedule(
    hub: &Hub,
    flow: &Flow,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) {
    let Some(schedule) = &flow.schedule else {
        return;
    };
    let mut first = true;
    loop {
        let delay = match next_delay(schedule, first) {
            Some(delay) => delay,
            None => {
                tracing::error!(flow = %flow.name, "schedule has no future occurrence; the flow will not run again");
                return;
            }
        };
        first = false;
        tracing::info!(flow = %flow.name, "next run in {:.0} s", delay.as_secs_f64());
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        let current = pass_sites(hub, flow).await;
        let sites: Vec<_> = current.iter().collect();
        let reports = hub
            .sync_flow(
                flow,
                &sites,
                SyncOptions {
                    splay: true,
                    ..SyncOptions::default()
                },
                progress,
            )
            .await;
        let failed = reports.iter().filter(|r| r.error.is_some()).count();
        tracing::info!(flow = %flow.name, sites = reports.len(), failed, "pass finished");
        if cancel.is_cancelled() {
            return;
        }
    }
}

/// The sites of the next pass of `flow`: with `[inventory]`, read again
/// from the master (sites added or removed since the last pass are worked,
/// or not, without a restart; rows left out are logged as warnings); if
/// that read fails, the last list read, with an error logged.
pub async fn pass_sites(hub: &Hub, flow: &Flow) -> Arc<Vec<crate::config::Site>> {
    refresh_inventory(hub, Some(&flow.name)).await;
    hub.sites()
}

/// How often a replica of several reads `[inventory]` again
/// ([`run_leased_schedules`]).
const LEASED_INVENTORY_EVERY: Duration = Duration::from_secs(5);

/// Reads `[inventory]` again, if there is one; its warnings and a failed
/// read are logged (with `flow`, the flow whose pass asked), and the last
/// list read stays.
async fn refresh_inventory(hub: &Hub, flow: Option<&str>) {
    if hub.config().inventory.is_none() {
        return;
    }
    let flow = flow.unwrap_or("-");
    match hub.refresh_inventory().await {
        Ok(read) => {
            for warning in &read.warnings {
                tracing::warn!(flow, "{warning}");
            }
        }
        Err(e) => tracing::error!(flow, "{e}; the sites of the last inventory read are worked"),
    }
}

/// Runs every scheduled flow as one replica of several (`hub.leases`, a
/// PostgreSQL master) until `cancel` fires: seeds the lease table with the
/// config's (flow, site) pairs, then polls for due pairs every `poll` (at
/// most 1 s, at most the lease heartbeat), claims as many as it has free
/// site slots and runs each in its own task. On `cancel` it stops claiming
/// and waits for its running pairs (each stops after its current batch and
/// releases its lease, due at once for another replica).
pub async fn run_leased_schedules(
    hub: Arc<Hub>,
    progress: Arc<dyn Progress>,
    cancel: CancellationToken,
) {
    refresh_inventory(&hub, None).await;
    if let Err(e) = hub.seed_leases().await {
        tracing::error!("cannot enter the fleet into the master's lease table: {e}");
        cancel.cancelled().await;
        return;
    }
    let poll = hub.config().hub.lease_heartbeat.min(Duration::from_secs(1));
    let slots = hub.config().hub.max_concurrent_sites;
    let mut running = tokio::task::JoinSet::new();
    let mut inventory_read = tokio::time::Instant::now();
    while !cancel.is_cancelled() {
        while running.try_join_next().is_some() {}
        // Sites added to the inventory are entered into the lease table
        // (removed ones are no longer claimed: claims take the current list).
        if hub.config().inventory.is_some() && inventory_read.elapsed() >= LEASED_INVENTORY_EVERY {
            inventory_read = tokio::time::Instant::now();
            refresh_inventory(&hub, None).await;
            if let Err(e) = hub.seed_leases().await {
                tracing::warn!(
                    "cannot enter the inventory's sites into the master's lease table: {e}"
                );
            }
        }
        match hub.claim_due(slots.saturating_sub(running.len())).await {
            Ok(claims) => {
                for claim in claims {
                    let hub = hub.clone();
                    let progress = progress.clone();
                    running.spawn(async move { hub.run_leased(&claim, progress.as_ref()).await });
                }
            }
            Err(e) => tracing::warn!("cannot claim due work from the master: {e}"),
        }
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
    while running.join_next().await.is_some() {}
}

/// Largest jitter on any due time.
const MAX_JITTER: Duration = Duration::from_secs(30);

/// Largest jitter on the first pass of an `every` flow: enough to spread
/// flows that start together, short enough to look immediate.
const MAX_FIRST_PASS_JITTER: Duration = Duration::from_secs(1);

/// Upper bound of the random delay added to a due time: 10% of an interval
/// (at most 30 s, at most 1 s before the first pass), 30 s for cron.
fn max_jitter(schedule: &Schedule, first: bool) -> Duration {
    match schedule {
        Schedule::Every(interval) => {
            let bound = (*interval / 10).min(MAX_JITTER);
            if first {
                bound.min(MAX_FIRST_PASS_JITTER)
            } else {
                bound
            }
        }
        Schedule::Cron { .. } => MAX_JITTER,
    }
}

/// Time to wait before the next pass, jitter included; `None` when a cron
/// schedule has no future occurrence.
fn next_delay(schedule: &Schedule, first: bool) -> Option<Duration> {
    let max_millis = max_jitter(schedule, first).as_millis() as u64;
    let jitter = Duration::from_millis(rand::rng().random_range(0..=max_millis));
    match schedule {
        Schedule::Every(interval) => Some(if first { jitter } else { *interval + jitter }),
        Schedule::Cron { .. } => {
            let now = Utc::now();
            let next = schedule.next_after(now)?;
            let wait = (next - now).to_std().unwrap_or_default();
            Some(wait + jitter)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every(text: &str) -> Schedule {
        Schedule::parse(&format!("every {text}"), None).unwrap()
    }

    /// Regression: `every 5m` waited up to 30 s (a user saw 28 s) before the
    /// first pass.
    #[test]
    fn first_pass_of_an_interval_comes_within_a_second() {
        for text in ["1s", "30s", "5m", "1h", "1d"] {
            let schedule = every(text);
            assert!(
                max_jitter(&schedule, true) <= Duration::from_secs(1),
                "{text}"
            );
            for _ in 0..200 {
                assert!(
                    next_delay(&schedule, true).unwrap() <= Duration::from_secs(1),
                    "{text}"
                );
            }
        }
        assert_eq!(max_jitter(&every("5m"), true), Duration::from_secs(1));
        assert_eq!(max_jitter(&every("1s"), true), Duration::from_millis(100));
    }

    #[test]
    fn splay_spreads_a_fleet_evenly_and_keeps_each_site_in_place() {
        let splay = Duration::from_secs(300);
        let offsets: Vec<Duration> = (0..1000)
            .map(|i| crate::flow::splay_offset("sales", &format!("store-{i:04}"), splay))
            .collect();
        assert!(offsets.iter().all(|o| *o < splay));
        // Same site, same offset; another flow, another phase.
        assert_eq!(
            crate::flow::splay_offset("sales", "store-0001", splay),
            offsets[1]
        );
        assert_ne!(
            crate::flow::splay_offset("prices", "store-0001", splay),
            offsets[1]
        );
        // 1,000 sites over 5 minutes: every 30 s slice holds 100 ± 40.
        for slice in 0..10 {
            let from = Duration::from_secs(slice * 30);
            let n = offsets
                .iter()
                .filter(|o| **o >= from && **o < from + Duration::from_secs(30))
                .count();
            assert!((60..=140).contains(&n), "slice {slice}: {n}");
        }
    }

    #[test]
    fn later_passes_keep_their_jitter() {
        assert_eq!(max_jitter(&every("5m"), false), Duration::from_secs(30));
        assert_eq!(max_jitter(&every("1m"), false), Duration::from_secs(6));
        assert_eq!(max_jitter(&every("1h"), false), Duration::from_secs(30));
        let five_minutes = every("5m");
        for _ in 0..200 {
            let delay = next_delay(&five_minutes, false).unwrap();
            assert!(delay >= Duration::from_secs(300) && delay <= Duration::from_secs(330));
        }
        let cron = Schedule::parse("0 2 * * *", None).unwrap();
        assert_eq!(max_jitter(&cron, true), Duration::from_secs(30));
    }
}
