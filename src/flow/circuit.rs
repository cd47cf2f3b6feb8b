//! Circuit breaker: a (flow, site) that keeps failing is skipped for a
//! cool-down that grows, then tried again automatically.
//!
//! Rule: after `failures` consecutive failed runs the circuit is open for
//! `cooldown` after the newest failure; each further failure doubles it, up
//! to one hour. State is the run history itself (no extra table), so every
//! hub sharing the master sees the same circuits and `status` can show them.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Longest cool-down of an open circuit.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(3600);

/// When an open circuit closes again: `None` if it is closed now.
///
/// `streak` is the number of consecutive failed runs and `last_failure`
/// when the newest of them started; `failures` the threshold (0 disables the
/// breaker) and `cooldown` the first cool-down.
pub fn open_until(
    streak: u32,
    last_failure: DateTime<Utc>,
    failures: usize,
    cooldown: Duration,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if failures == 0 || (streak as usize) < failures {
        return None;
    }
    let doublings = (streak as usize - failures).min(16) as u32;
    let wait = cooldown
        .saturating_mul(2u32.saturating_pow(doublings))
        .min(MAX_COOLDOWN);
    let until = last_failure + chrono::Duration::from_std(wait).ok()?;
    (now < until).then_some(until)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn opens_after_the_threshold_and_the_cooldown_doubles() {
        let minute = Duration::from_secs(60);
        // Two failures, threshold 3: closed.
        assert_eq!(open_until(2, at(0), 3, minute, at(1)), None);
        // Three: open for one minute after the newest failure.
        assert_eq!(open_until(3, at(0), 3, minute, at(30)), Some(at(60)));
        assert_eq!(open_until(3, at(0), 3, minute, at(60)), None);
        // Five: 1 min * 2^2 = 4 min.
        assert_eq!(open_until(5, at(0), 3, minute, at(200)), Some(at(240)));
        // Many: capped at one hour.
        assert_eq!(open_until(40, at(0), 3, minute, at(10)), Some(at(3600)));
        // Disabled.
        assert_eq!(open_until(40, at(0), 0, minute, at(10)), None);
    }
}
