//! Master protection: the hard limit on concurrent master write
//! transactions (with an in-flight gauge and its high-water mark, so tests
//! and operators can see the limit held) and the optional rows-per-second
//! budget (`hub.max_rows_per_second`, a token bucket from `governor`).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{Semaphore, SemaphorePermit};

/// Gate for writes to the master; shared by every flow and site of a hub.
pub struct MasterWrites {
    slots: Semaphore,
    in_flight: AtomicUsize,
    high_water: AtomicUsize,
    rate: Option<(DefaultDirectRateLimiter, NonZeroU32)>,
}

/// One master write transaction in flight; dropping it frees the slot.
pub struct MasterWritePermit<'a> {
    _permit: SemaphorePermit<'a>,
    gate: &'a MasterWrites,
}

impl Drop for MasterWritePermit<'_> {
    fn drop(&mut self) {
        self.gate.in_flight.fetch_sub(1, Ordering::SeqCst);
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
        }
    }

    /// Waits for a write slot; hold the permit for the whole transaction.
    pub async fn acquire(&self) -> MasterWritePermit<'_> {
        let permit = self
            .slots
            .acquire()
            .await
            .expect("the master write semaphore is never closed");
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.high_water.fetch_max(now, Ordering::SeqCst);
        MasterWritePermit {
            _permit: permit,
            gate: self,
        }
    }

    /// Waits until `rows` more rows may move through the master under
    /// `max_rows_per_second` (returns at once without a limit). Call it
    /// before taking a write slot, so waiting does not hold one.
    pub async fn throttle(&self, rows: usize) {
        let Some((limiter, burst)) = &self.rate else {
            return;
        };
        let mut left = rows;
        while left > 0 {
            let n = left.min(burst.get() as usize);
            let cells = NonZeroU32::new(n as u32).expect("n > 0");
            // `n` never exceeds the burst, so capacity is always sufficient.
            let _ = limiter.until_n_ready(cells).await;
            left -= n;
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
