//! Schedule triggers for `hubsync run`.
//!
//! Each scheduled flow gets one task that sleeps until its next due time,
//! runs one pass over every site, and repeats. A flow never overlaps
//! itself: a pass that outlasts its interval delays the next one. Due times
//! get a random delay (up to 10% of an interval, at most 30 s; up to 30 s
//! for cron) so that many flows or hubs do not hit the master at the same
//! second. `every` flows run once at start-up; cron flows wait for their
//! first match.

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
        let sites: Vec<_> = hub.config().sites.iter().collect();
        let reports = hub
            .sync_flow(flow, &sites, SyncOptions::default(), progress)
            .await;
        let failed = reports.iter().filter(|r| r.error.is_some()).count();
        tracing::info!(flow = %flow.name, sites = reports.len(), failed, "pass finished");
        if cancel.is_cancelled() {
            return;
        }
    }
}

/// Time to wait before the next pass, jitter included.
fn next_delay(schedule: &Schedule, first: bool) -> Option<Duration> {
    let mut rng = rand::rng();
    match schedule {
        Schedule::Every(interval) => {
            let max_jitter = (interval.as_millis() as u64 / 10).min(30_000);
            let jitter = Duration::from_millis(rng.random_range(0..=max_jitter));
            Some(if first { jitter } else { *interval + jitter })
        }
        Schedule::Cron { .. } => {
            let now = Utc::now();
            let next = schedule.next_after(now)?;
            let wait = (next - now).to_std().unwrap_or_default();
            Some(wait + Duration::from_millis(rng.random_range(0..=30_000)))
        }
    }
}
