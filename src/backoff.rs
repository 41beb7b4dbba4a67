//! Exponential backoff with jitter: the one formula every retry loop of the daemon uses
//! (connecting, job retries, mirror pulls, socket reconnects).
//!
//! A wait is `initial · 2^(attempt-1)`, capped at `max`, of which the upper half is random,
//! so that many agents behind one server do not retry in step. The module owns only the
//! arithmetic; when to count an attempt, and when to start over, stays with each caller.

use std::time::Duration;

use rand::Rng;

/// The shortest wait ever returned, so that a zero `initial` cannot spin.
const FLOOR: Duration = Duration::from_millis(10);

/// A backoff schedule: the first wait and the cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max }
    }

    /// The un-jittered wait before attempt `attempt` (1-based; 0 counts as 1).
    pub fn base(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        self.initial
            .saturating_mul(1u32 << exp)
            .min(self.max)
            .max(FLOOR)
    }

    /// The wait before attempt `attempt`: [`Backoff::base`] with its upper half random.
    pub fn delay(&self, attempt: u32) -> Duration {
        jitter(self.base(attempt))
    }
}

/// `base` with its upper half random: somewhere in `[base/2, base]`.
pub fn jitter(base: Duration) -> Duration {
    let half = base / 2;
    half + rand::rng().random_range(Duration::ZERO..=half)
}

/// `interval` spread by ±10 %, for periodic work (pulls, rescans) that many agents share a
/// server for.
pub fn spread(interval: Duration) -> Duration {
    interval.mul_f64(rand::rng().random_range(0.9..1.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_doubles_is_capped_and_jittered() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(600));
        for attempt in 1..40u32 {
            let base = Duration::from_secs(1u64 << (attempt - 1).min(30)).min(b.max);
            assert_eq!(b.base(attempt), base, "attempt {attempt}");
            for _ in 0..20 {
                let d = b.delay(attempt);
                assert!(
                    d >= base / 2 && d <= base,
                    "attempt {attempt}: {d:?} vs {base:?}"
                );
            }
        }
        assert_eq!(b.base(0), b.base(1));
    }

    #[test]
    fn a_zero_initial_still_waits() {
        let b = Backoff::new(Duration::ZERO, Duration::from_secs(5));
        assert!(b.base(1) >= FLOOR);
    }

    #[test]
    fn spread_stays_within_ten_percent() {
        for _ in 0..100 {
            let d = spread(Duration::from_secs(100));
            assert!(
                d >= Duration::from_secs(90) && d <= Duration::from_secs(110),
                "{d:?}"
            );
        }
    }
}
