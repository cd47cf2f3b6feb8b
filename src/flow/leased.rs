//! Leased runs: several hub replicas sharing one fleet (`hub.leases`, a
//! PostgreSQL master; the table and its rules are in `state/leases.rs`).
//!
//! Each (flow, site) of a scheduled flow is one lease row with its next due
//! time. A replica claims due pairs for its free site slots, runs each like
//! any site run (`site_run.rs`) with the lease attached: every master write
//! of the run checks the lease in its transaction, its heartbeat renews it,
//! and its end releases it with the pair's next due time, computed here from
//! the flow's schedule. Schedules are thus state in the master, not timers
//! in a process: a new replica takes its share of due pairs at its next
//! poll, and a pair runs once per due time whichever replica runs it.

use chrono::{DateTime, Utc};

use super::{Hub, Progress, SiteReport, SyncOptions, plan_streams, site_run};
use crate::config::{Flow, Schedule};
use crate::connector::ErrorKind;
use crate::dialect::Dialect;
use crate::state::{Claim, NextDue, StateError};

/// When a pair of `flow` is due after a run that ended with `error_kind`,
/// at `now`: at once for any replica after an interrupted run (it did not
/// do its work: a stop, a lost lease); 5 s after a conflict (another writer
/// moved the checkpoint, nothing was written; at most the `every`
/// interval); else the next time the schedule says
/// (an `every` interval after the master's `now()`, or the next cron match;
/// a cron without one, or a flow without a schedule, in 100 years).
pub fn next_due(flow: &Flow, error_kind: Option<ErrorKind>, now: DateTime<Utc>) -> NextDue {
    const NEVER: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);
    if error_kind == Some(ErrorKind::Interrupted) {
        return NextDue::Keep;
    }
    // A conflict with another writer (a checkpoint moved by the replica
    // that held the lease before) wrote nothing: run the pair again within
    // seconds, not at the next scheduled time (an hour for `every 1h`).
    const AFTER_CONFLICT: std::time::Duration = std::time::Duration::from_secs(5);
    if error_kind == Some(ErrorKind::Conflict) {
        return NextDue::After(match &flow.schedule {
            Some(Schedule::Every(interval)) => (*interval).min(AFTER_CONFLICT),
            _ => AFTER_CONFLICT,
        });
    }
    match &flow.schedule {
        Some(Schedule::Every(interval)) => NextDue::After(*interval),
        Some(schedule @ Schedule::Cron { .. }) => schedule
            .next_after(now)
            .map_or(NextDue::After(NEVER), NextDue::At),
        None => NextDue::After(NEVER),
    }
}

/// The first due time of a pair of `flow` at `site`, seeded at `now`: for
/// an `every` schedule now plus the site's splay offset (the first pass
/// runs at start-up, as a single hub's does), for cron the next match.
fn first_due(flow: &Flow, site: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match flow.schedule.as_ref()? {
        Schedule::Every(_) => {
            let offset = flow
                .splay
                .map(|splay| super::splay_offset(&flow.name, site, splay))
                .unwrap_or_default();
            Some(now + chrono::Duration::from_std(offset).unwrap_or_default())
        }
        schedule @ Schedule::Cron { .. } => schedule.next_after(now),
    }
}

impl Hub {
    /// True when this hub runs leased: `hub.leases` and a PostgreSQL master.
    pub fn leased(&self) -> bool {
        self.config.hub.leases && self.master.dialect() == Dialect::Postgres
    }

    /// This replica's id (`hub.replica_id`, else `host/pid`).
    pub fn replica_id(&self) -> String {
        (self.config.hub.replica_id.clone()).unwrap_or_else(crate::state::default_replica_id)
    }

    /// Puts every (scheduled flow, site) of the fleet into the lease table
    /// (pairs already there are kept as they are). The fleet is the
    /// config's `[[site]]`s plus, with `[inventory]`, the sites of the last
    /// inventory read ([`Hub::sites`]).
    ///
    /// Errors: the master refused ([`StateError`]).
    pub async fn seed_leases(&self) -> Result<(), StateError> {
        let now = Utc::now();
        let mut pairs = Vec::new();
        let fleet = self.sites();
        for flow in &self.config.flows {
            for site in fleet.iter() {
                if let Some(due) = first_due(flow, &site.id, now) {
                    pairs.push((flow.name.as_str(), site.id.as_str(), due));
                }
            }
        }
        self.state.seed_leases(&self.master, &pairs).await
    }

    /// Claims at most `limit` due pairs of this config's scheduled flows
    /// and sites for this replica (see [`crate::state::StateStore::claim_due`]).
    ///
    /// Errors: the master refused ([`StateError`]).
    pub async fn claim_due(&self, limit: usize) -> Result<Vec<Claim>, StateError> {
        let flows: Vec<&str> = (self.config.flows.iter())
            .filter(|flow| flow.schedule.is_some())
            .map(|flow| flow.name.as_str())
            .collect();
        let fleet = self.sites();
        let sites: Vec<&str> = fleet.iter().map(|s| s.id.as_str()).collect();
        if limit == 0 || flows.is_empty() || sites.is_empty() {
            return Ok(Vec::new());
        }
        let period = self.config.hub.lease_period;
        (self.state)
            .claim_due(
                &self.master,
                &flows,
                &sites,
                &self.replica_id(),
                period,
                limit,
            )
            .await
    }

    /// Runs the claimed pair: a site slot, then the site run with its lease
    /// attached (fenced writes, renewal, the release with the next due
    /// time). A run refused before it started (a stop, its window, an open
    /// circuit) releases the lease here.
    pub async fn run_leased(&self, claim: &Claim, progress: &dyn Progress) -> Option<SiteReport> {
        let lease = &claim.lease;
        let flow = self.config.flow(&lease.flow)?;
        let fleet = self.sites();
        let site = fleet.iter().find(|s| s.id == lease.site)?;
        if let Some(from) = &claim.taken_from {
            tracing::info!(flow = %flow.name, site = %site.id, token = lease.token, "took over the lease of replica `{from}`, which expired");
        }
        let plans = plan_streams(self, flow).await;
        let _slot = self.site_slots.acquire().await.expect("never closed");
        let run = site_run::SiteRun {
            hub: self,
            flow,
            site,
            plans: &plans,
            options: SyncOptions::default(),
            progress,
            lease: Some(lease),
        };
        let report = Box::pin(run.run(None)).await;
        if report.run_id.is_none() {
            let due = next_due(flow, report.error_kind, Utc::now());
            if let Err(e) = self.state.release_lease(&self.master, lease, due).await {
                tracing::warn!(flow = %flow.name, site = %site.id, "cannot release the lease: {e}");
            }
        }
        Some(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(schedule: &str, splay: Option<&str>) -> Flow {
        let dir = std::path::Path::new("/");
        let splay = splay.map_or(String::new(), |s| format!("splay = \"{s}\"\n"));
        let text = format!(
            "[master]\nurl = \"sqlite://m.db\"\n[[flow]]\nname = \"f\"\ndirection = \"pull\"\n\
             schedule = \"{schedule}\"\n{splay}  [[flow.stream]]\n  source = \"t\"\n  target = \"t\"\n  \
             primary_key = [\"id\"]\n  cursor = \"u\"\n  site_column = \"site\"\n"
        );
        let config = crate::config::Config::parse(&text, &dir.join("h.toml"), dir, &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        config.flows[0].clone()
    }

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn a_pair_is_due_again_after_its_interval_or_its_next_cron_match() {
        let now = utc("2026-07-01T10:17:00Z");
        let every = flow("every 5m", None);
        assert_eq!(
            next_due(&every, None, now),
            NextDue::After(std::time::Duration::from_secs(300))
        );
        // A failed run waits for the next cycle like a good one.
        assert_eq!(
            next_due(&every, Some(ErrorKind::Connection), now),
            NextDue::After(std::time::Duration::from_secs(300))
        );
        // An interrupted run did not do its work: due at once, for anyone.
        assert_eq!(
            next_due(&every, Some(ErrorKind::Interrupted), now),
            NextDue::Keep
        );
        // A checkpoint another writer moved: again within 5 s.
        assert_eq!(
            next_due(&every, Some(ErrorKind::Conflict), now),
            NextDue::After(std::time::Duration::from_secs(5))
        );
        let cron = flow("0 2 * * *", None);
        assert_eq!(
            next_due(&cron, None, now),
            NextDue::At(utc("2026-07-02T02:00:00Z"))
        );
    }

    #[test]
    fn a_pair_is_first_due_at_start_up_plus_its_splay_offset() {
        let now = utc("2026-07-01T10:17:00Z");
        assert_eq!(first_due(&flow("every 5m", None), "s1", now), Some(now));
        let splayed = flow("every 5m", Some("2m"));
        let offset = super::super::splay_offset("f", "s1", std::time::Duration::from_secs(120));
        assert_eq!(
            first_due(&splayed, "s1", now),
            Some(now + chrono::Duration::from_std(offset).unwrap())
        );
        assert_eq!(
            first_due(&flow("0 2 * * *", None), "s1", now),
            Some(utc("2026-07-02T02:00:00Z"))
        );
    }
}
