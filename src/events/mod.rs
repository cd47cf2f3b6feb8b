//! Delivery of follow-up events from the master's outbox (see
//! `state/outbox.rs` for the table and `flow/events.rs` for what raises
//! them): webhooks, data service operations and chained flows.
//!
//! A pass claims due events, at most [`CLAIM_LIMIT`] at once, and delivers
//! them [`CONCURRENCY`] at a time. Each claimed event holds a lease (its
//! handler's timeout plus a margin) in `next_attempt_at`; a hub that dies
//! mid-delivery leaves it to be claimed again when the lease ends. After a
//! failed attempt the event is due again after an exponential backoff with
//! jitter (1 s, 2 s, 4 s... at most 5 min; `backon`), and after the
//! handler's `max_attempts` it becomes a dead letter, kept until replayed
//! (`hubsync events replay`, `POST /api/v1/events/{id}/replay`).
//!
//! Delivery is at least once: an event is marked delivered only after its
//! handler took it, so a hub killed in between delivers it again, under the
//! same event id.

pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::BackoffBuilder as _;
use chrono::Utc;
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, EventAction, EventHandler, Flow, ServiceTarget, SiteSelector};
use crate::flow::{Hub, NoProgress, SyncOptions};
use crate::service::ParamInput;
use crate::state::{OutboxRecord, RunStatus};

/// Most events claimed by one pass.
pub const CLAIM_LIMIT: usize = 32;

/// Events delivered at once within a pass.
pub const CONCURRENCY: usize = 8;

/// How long the daemon's worker sleeps when nothing was due.
pub const IDLE_POLL: Duration = Duration::from_secs(1);

/// Attempts of an event whose flow or handler this hub's config does not
/// have before it is a dead letter. Hubs sharing a master may run different
/// configs for a while (a rolling change that adds a handler): a hub that
/// cannot deliver an event leaves it to be retried, with backoff, by one
/// that can, instead of making it a dead letter at once (a trial saw an
/// old `serve` dead-letter a new config's webhook events).
const UNKNOWN_TARGET_ATTEMPTS: u32 = 8;

/// Attempts of a chained flow's run before it is a dead letter.
pub const CHAINED_FLOW_ATTEMPTS: u32 = 8;

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Events claimed.
    pub claimed: usize,
    /// Delivered.
    pub delivered: usize,
    /// Failed, due again later.
    pub retried: usize,
    /// Failed for the last time: now dead letters.
    pub dead: usize,
}

/// Who delivers an event: a `[[flow.on]]` handler or a chained flow.
enum Target<'c> {
    Handler(&'c EventHandler),
    Flow(&'c Flow),
}

/// The target of `record` in `config`. Errors: the flow or handler is no
/// longer in the config.
fn target<'c>(config: &'c Config, record: &OutboxRecord) -> Result<Target<'c>, String> {
    if let Some(name) = record.handler.strip_prefix("flow:") {
        return config
            .flow(name)
            .map(Target::Flow)
            .ok_or_else(|| format!("chained flow `{name}` is no longer in the config"));
    }
    config
        .flow(&record.flow)
        .and_then(|flow| flow.on.iter().find(|h| h.name == record.handler))
        .map(Target::Handler)
        .ok_or_else(|| {
            format!(
                "flow `{}` has no handler `{}` any more",
                record.flow, record.handler
            )
        })
}

/// How long a claim of `record` lasts: its handler's longest attempt plus
/// 10 s (webhooks), or 10 min (services and chained flows, bounded by
/// their statement timeouts and the run's own protection against twins).
fn lease(config: &Config, record: &OutboxRecord) -> Duration {
    match target(config, record) {
        Ok(Target::Handler(EventHandler {
            action: EventAction::Webhook { timeout, .. },
            ..
        })) => *timeout + Duration::from_secs(10),
        Ok(_) => Duration::from_secs(600),
        Err(_) => Duration::from_secs(10),
    }
}

/// The wait before attempt `attempts + 1` after `attempts` failed ones:
/// exponential from 1 s, doubling, at most 5 min, with jitter.
pub fn retry_delay(attempts: u32) -> Duration {
    let mut delays = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(300))
        .with_factor(2.0)
        .with_max_times(attempts as usize)
        .with_jitter()
        .build();
    let nth = (attempts.max(1) - 1) as usize;
    delays.nth(nth).unwrap_or(Duration::from_secs(300))
}

/// Delivers follow-up events for one hub.
#[derive(Clone)]
pub struct Deliverer {
    hub: Arc<Hub>,
    client: reqwest::Client,
}

impl Deliverer {
    /// A deliverer for `hub`'s outbox.
    ///
    /// Errors: the HTTP client cannot be built (no TLS roots).
    pub fn new(hub: Arc<Hub>) -> Result<Deliverer, String> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("hubsync/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the webhook HTTP client: {e}"))?;
        Ok(Deliverer { hub, client })
    }

    /// One pass: claims due events and delivers them.
    ///
    /// Errors: the master refused the claim (nothing was attempted).
    pub async fn pass(&self) -> Result<PassReport, crate::state::StateError> {
        let config = self.hub.config();
        let claimed = (self.hub.state())
            .claim_events(self.hub.master(), CLAIM_LIMIT, Utc::now(), &|r| {
                lease(config, r)
            })
            .await?;
        let mut report = PassReport {
            claimed: claimed.len(),
            ..PassReport::default()
        };
        let mut attempts = Vec::with_capacity(claimed.len());
        for record in claimed {
            attempts.push(self.attempt(record));
        }
        let outcomes: Vec<Outcome> = futures::stream::iter(attempts)
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for outcome in outcomes {
            match outcome {
                Outcome::Delivered => report.delivered += 1,
                Outcome::Retry => report.retried += 1,
                Outcome::Dead => report.dead += 1,
            }
        }
        Ok(report)
    }

    /// Delivers claimed `record` once and records the outcome.
    async fn attempt(&self, record: OutboxRecord) -> Outcome {
        let config = self.hub.config();
        let (result, max_attempts) = match target(config, &record) {
            Ok(Target::Handler(handler)) => {
                (self.deliver(handler, &record).await, handler.max_attempts)
            }
            Ok(Target::Flow(flow)) => {
                (self.run_chained(flow, &record).await, CHAINED_FLOW_ATTEMPTS)
            }
            // Another hub (a newer config during a rolling change) may
            // know the handler: retried with the usual backoff, a dead
            // letter only after `UNKNOWN_TARGET_ATTEMPTS`.
            Err(e) => (Err(e), UNKNOWN_TARGET_ATTEMPTS),
        };
        let state = self.hub.state();
        let master = self.hub.master();
        let attempt = u32::try_from(record.attempts).unwrap_or(u32::MAX);
        let retry_at = (attempt < max_attempts).then(|| {
            Utc::now() + chrono::Duration::from_std(retry_delay(attempt)).unwrap_or_default()
        });
        crate::telemetry::event_attempted(&crate::telemetry::EventAttempt {
            event_id: &record.event_id,
            flow: &record.flow,
            site: &record.site,
            handler: &record.handler,
            attempt,
            max_attempts,
            failure: result
                .as_ref()
                .err()
                .map(|e| (e.as_str(), retry_at.is_some())),
        });
        let (outcome, recorded) = match result {
            Ok(()) => (
                Outcome::Delivered,
                state
                    .event_delivered(master, &record.event_id)
                    .await
                    .map(drop),
            ),
            Err(error) => {
                let outcome = if retry_at.is_some() {
                    Outcome::Retry
                } else {
                    Outcome::Dead
                };
                let failed = state.event_failed(master, &record.event_id, &error, retry_at);
                (outcome, failed.await)
            }
        };
        if let Err(e) = recorded {
            tracing::error!(event_id = %record.event_id, "cannot record the delivery of a follow-up event: {e}");
        }
        outcome
    }

    /// Delivers `record` through `handler`.
    async fn deliver(&self, handler: &EventHandler, record: &OutboxRecord) -> Result<(), String> {
        match &handler.action {
            EventAction::Webhook {
                url,
                secret,
                timeout,
            } => {
                webhook::post(
                    &self.client,
                    url,
                    secret.as_ref(),
                    *timeout,
                    &record.event_id,
                    &record.payload,
                )
                .await
            }
            EventAction::Service {
                service,
                operation,
                params,
            } => self.call_service(service, operation, params, record).await,
        }
    }

    /// Runs a data service operation for `record`: fixed `params`, and the
    /// event's fields for declared parameters named as in
    /// [`crate::config::events::EVENT_PARAMS`]; on the event's site for a
    /// site service.
    async fn call_service(
        &self,
        service: &str,
        operation: &str,
        params: &BTreeMap<String, String>,
        record: &OutboxRecord,
    ) -> Result<(), String> {
        let config = self.hub.config();
        let declared = config
            .service(service)
            .and_then(|s| s.operation(operation))
            .ok_or_else(|| format!("service `{service}` operation `{operation}` is gone"))?;
        let body: serde_json::Value = serde_json::from_str(&record.payload)
            .map_err(|e| format!("event body is not JSON: {e}"))?;
        let mut inputs: BTreeMap<String, ParamInput> = params
            .iter()
            .map(|(k, v)| (k.clone(), ParamInput::Text(v.clone())))
            .collect();
        for (name, field) in crate::config::events::EVENT_PARAMS {
            let value = &body["data"][field];
            if declared.params.iter().any(|p| p.name == name)
                && !inputs.contains_key(name)
                && !value.is_null()
            {
                inputs.insert(name.to_string(), ParamInput::Json(value.clone()));
            }
        }
        let on_site = config.service(service).map(|s| s.on) == Some(ServiceTarget::Site);
        let selector = on_site.then(|| SiteSelector::Ids(vec![record.site.clone()]));
        let call = crate::service::prepare(config, service, operation, &inputs, selector.as_ref())
            .map_err(|e| e.to_string())?;
        let results = crate::service::execute(config, &call, Some(self.hub.master())).await;
        match results.into_iter().find_map(|r| r.outcome.err()) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Runs chained `flow` at the event's site. Its run, whatever its
    /// outcome, is in the run history; only a run that did not start
    /// (skipped: another run of the pair alive, outside its window, a stop)
    /// is attempted again.
    async fn run_chained(&self, flow: &Flow, record: &OutboxRecord) -> Result<(), String> {
        let config = self.hub.config();
        let site = config
            .site(&record.site)
            .ok_or_else(|| format!("site `{}` is no longer in the config", record.site))?;
        let reports = (self.hub)
            .sync_flow(flow, &[site], SyncOptions::default(), &NoProgress)
            .await;
        match reports.first() {
            Some(report) if report.status == RunStatus::Skipped => Err(format!(
                "chained flow `{}` at site `{}` was not run: {}",
                flow.name,
                site.id,
                report
                    .error
                    .as_deref()
                    .or(report.note.as_deref())
                    .unwrap_or("skipped")
            )),
            _ => Ok(()),
        }
    }

    /// The daemon's worker: passes until `cancel` fires, sleeping
    /// [`IDLE_POLL`] when nothing was due. A master that refuses the claim
    /// is logged and tried again on the next poll.
    pub async fn run(self, cancel: CancellationToken) {
        while !cancel.is_cancelled() {
            let claimed = match self.pass().await {
                Ok(report) => report.claimed,
                Err(e) => {
                    tracing::warn!("follow-up events: cannot claim due events: {e}");
                    0
                }
            };
            if claimed == 0 {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                }
            }
        }
    }

    /// Passes while events are due, for at most `budget` (`hubsync sync`
    /// delivers what its runs raised before it exits; events whose retry
    /// falls later are left to `hubsync run`). Returns the sum of the passes.
    ///
    /// Errors: the master refused a claim.
    pub async fn drain(&self, budget: Duration) -> Result<PassReport, crate::state::StateError> {
        let started = Instant::now();
        let mut total = PassReport::default();
        while started.elapsed() < budget {
            let pass = self.pass().await?;
            total.claimed += pass.claimed;
            total.delivered += pass.delivered;
            total.retried += pass.retried;
            total.dead += pass.dead;
            if pass.claimed == 0 {
                break;
            }
        }
        Ok(total)
    }
}

/// How one attempt ended.
enum Outcome {
    Delivered,
    Retry,
    Dead,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_with_jitter_and_a_ceiling() {
        for _ in 0..50 {
            // backon's jitter adds up to one more delay: [d, 2d).
            let first = retry_delay(1);
            assert!(
                first >= Duration::from_secs(1) && first < Duration::from_secs(2),
                "{first:?}"
            );
            let third = retry_delay(3);
            assert!(
                third >= Duration::from_secs(4) && third < Duration::from_secs(8),
                "{third:?}"
            );
            let late = retry_delay(30);
            assert!(
                late >= Duration::from_secs(300) && late < Duration::from_secs(600),
                "{late:?}"
            );
        }
    }
}
