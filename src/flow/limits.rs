//! Master protection: the hard limit on concurrent master write
//! transactions (with an in-flight gauge and its high-water mark, so tests
//! and operators can see the limit held) and the optional rows-per-second
//! budget (`hub.max_rows_per_second`, a token bucket from `governor`).
//!
//! With `hub.leases` on a PostgreSQL master both limits hold across all
//! replicas together ([`FleetLimits`]): a write also claims one of
//! `master_write_concurrency` slot rows in the master (`SKIP LOCKED`, until
//! a deadline, so a dead replica's slot comes back), and rows are taken
//! from one shared token bucket row (`StateStore::take_rows`). If the
//! master cannot answer those, the process's own limits still hold.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::connector::Connector;
use crate::state::StateStore;

/// The master write limits shared by every replica (`hub.leases`).
pub struct FleetLimits {
    /// A small pool of its own to the master: claiming and freeing slots
    /// never waits for the write pool.
    pub master: Arc<Connector>,
    /// The state tables.
    pub state: StateStore,
    /// This replica's id (slot holders are `<replica>/<uuid>`).
    pub replica: String,
    /// `hub.master_write_concurrency`: slot rows 1..=this.
    pub slots: usize,
    /// How long a claimed slot lasts without being freed (the lease period).
    pub hold: Duration,
}

/// How often a writer asks again for a fleet slot while all are busy.
const SLOT_POLL: Duration = Duration::from_millis(20);

/// Gate for writes to the master; shared by every flow and site of a hub.
pub struct MasterWrites {
    slots: Semaphore,
    in_flight: AtomicUsize,
    high_water: AtomicUsize,
    rate: Option<(DefaultDirectRateLimiter, NonZeroU32)>,
    fleet: Option<FleetLimits>,
}

/// One master write transaction in flight; dropping it frees the slot (a
/// fleet slot is freed by a task of its own).
pub struct MasterWritePermit<'a> {
    _permit: SemaphorePermit<'a>,
    gate: &'a MasterWrites,
    fleet_slot: Option<(i64, String)>,
}

impl Drop for MasterWritePermit<'_> {
    fn drop(&mut self) {
        self.gate.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let (Some((slot, claim)), Some(fleet)) = (self.fleet_slot.take(), &self.gate.fleet) {
            let (master, state) = (fleet.master.clone(), fleet.state.clone());
            tokio::spawn(async move {
                if let Err(e) = state.release_write_slot(&master, slot, &claim).await {
                    tracing::warn!(
                        "cannot free master write slot {slot} (it frees itself at its deadline): {e}"
                    );
                }
            });
        }
    }
}

impl MasterWrites {
    /// At most `concurrency` write transactions at once (at least 1), and at
    /// most `rows_per_second` rows through the master (burst: one second's
    /// worth).
    pub fn new(concurrency: usize, rows_per_second: Option<NonZeroU32>) -> MasterWrites {
        MasterWrites {
            slots: Semaphore::new(concurrency.max(1)),
            in_flight: AtomicUsize::new(0),
            high_water: AtomicUsize::new(0),
            rate: rows_per_second.map(|rate| (RateLimiter::direct(Quota::per_second(rate)), rate)),
            fleet: None,
        }
    }

    /// The same gate, whose limits also hold across every replica sharing
    /// `fleet`'s master.
    pub fn with_fleet(mut self, fleet: FleetLimits) -> MasterWrites {
        self.fleet = Some(fleet);
        self
    }

    /// Claims a fleet-wide write slot, waiting while all are busy; `None`
    /// without fleet limits or when the master does not answer (logged).
    async fn fleet_slot(&self) -> Option<(i64, String)> {
        let fleet = self.fleet.as_ref()?;
        let claim = format!("{}/{}", fleet.replica, uuid::Uuid::new_v4());
        loop {
            match (fleet.state)
                .claim_write_slot(&fleet.master, fleet.slots, &claim, fleet.hold)
                .await
            {
                Ok(Some(slot)) => return Some((slot, claim)),
                Ok(None) => tokio::time::sleep(SLOT_POLL).await,
                Err(e) => {
                    tracing::warn!(
                        "cannot claim a fleet-wide master write slot; this process's limit holds: {e}"
                    );
                    return None;
                }
            }
        }
    }

    /// Waits for a write slot; hold the permit for the whole transaction.
    pub async fn acquire(&self) -> MasterWritePermit<'_> {
        let permit = self
            .slots
            .acquire()
            .await
            .expect("the master write semaphore is never closed");
        let fleet_slot = self.fleet_slot().await;
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.high_water.fetch_max(now, Ordering::SeqCst);
        MasterWritePermit {
            _permit: permit,
            gate: self,
            fleet_slot,
        }
    }

    /// Waits until `rows` more rows may move through the master under
    /// `max_rows_per_second` (returns at once without a limit). Call it
    /// before taking a write slot, so waiting does not hold one.
    pub async fn throttle(&self, rows: usize) {
        let Some((limiter, burst)) = &self.rate else {
            return;
        };
        if let Some(fleet) = &self.fleet
            && rows > 0
        {
            match fleet
                .state
                .take_rows(&fleet.master, rows, burst.get())
                .await
            {
                Ok(wait) => return tokio::time::sleep(wait).await,
                Err(e) => tracing::warn!(
                    "cannot take rows from the fleet-wide budget; this process's budget holds: {e}"
                ),
            }
        }
        let mut left = rows;
        while left > 0 {
            let n = left.min(burst.get() as usize);
            let cells = NonZeroU32::new(n as u32).expect("n > 0");
            // `n` never exceeds the burst, so capacity is always sufficient.
            let _ = limiter.until_n_ready(cells).await;
            left -= n;
        }
    }

    /// Closes the fleet limits' own master pool (if any).
    pub async fn close(&self) {
        if let Some(fleet) = &self.fleet {
            fleet.master.close().await;
        }
    }

    /// Most write transactions that were in flight at once since the hub
    /// opened.
    pub fn high_water(&self) -> usize {
        self.high_water.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_gauge_counts_permits_and_keeps_its_high_water_mark() {
        let gate = MasterWrites::new(2, None);
        let a = gate.acquire().await;
        let b = gate.acquire().await;
        assert_eq!(gate.high_water(), 2);
        assert!(gate.slots.try_acquire().is_err(), "a third write must wait");
        drop(a);
        let _c = gate.acquire().await;
        drop(b);
        assert_eq!(gate.high_water(), 2);
        assert_eq!(gate.in_flight.load(Ordering::SeqCst), 1);
    }
}
