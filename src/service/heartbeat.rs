//! Heartbeats: each long-running loop of the daemon holds one and ticks it every turn and
//! before every deliberate wait, naming the wait's deadline. The watchdog feeds systemd only
//! while every registered heartbeat is fresh, so a loop that is deadlocked, or whose thread
//! is stuck in a blocking call, makes the pings stop and systemd restarts the daemon; a loop
//! that sleeps through an outage, a pause or a long hash on purpose has said how long it
//! will sleep and stays alive.
//!
//! Adding a loop is one line to register and one call per turn:
//!
//! ```ignore
//! let beat = crate::service::heartbeat("engine");
//! loop {
//!     let deadline = beat.wait_until(next_deadline); // before the loop's select!
//!     ...
//! }
//! ```
//!
//! Without a watchdog (no `WATCHDOG_USEC`, or not under systemd) [`heartbeat`] hands out a
//! disabled heartbeat: every call returns at once and [`Heartbeat::wait_until`] returns the
//! deadline it was given, so unsupervised loops keep their timing exactly.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::time::Instant;

/// How the watchdog judges heartbeats, fixed when supervision starts.
#[derive(Clone, Copy, Debug)]
struct Timing {
    /// How long a loop may work between two ticks before it counts as stalled.
    budget: Duration,
    /// The longest a loop waits without a deadline of its own before it ticks again.
    max_wait: Duration,
}

static TIMING: OnceLock<Timing> = OnceLock::new();
/// Every live heartbeat. Weak, so that a loop that ended (and dropped its heartbeat) stops
/// counting; a generation of the task tree that is restarted registers anew.
static REGISTRY: Mutex<Vec<Weak<Slot>>> = Mutex::new(Vec::new());

/// Turns heartbeats on for this process, with `timeout` being systemd's `WatchdogSec`.
/// Only the first call counts (a process has one service manager).
pub(super) fn enable(timeout: Duration) {
    let _ = TIMING.set(Timing {
        budget: timeout,
        max_wait: timeout / 2,
    });
}

/// The names of the registered heartbeats that are overdue, in registration order.
pub(super) fn overdue() -> Vec<&'static str> {
    let now = Instant::now();
    let mut registry = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    registry.retain(|w| w.strong_count() > 0);
    registry
        .iter()
        .filter_map(Weak::upgrade)
        .filter(|s| s.due() < now)
        .map(|s| s.name)
        .collect()
}

/// Registers a heartbeat for the loop `name` (a short name for the log: "watcher").
pub fn heartbeat(name: &'static str) -> Heartbeat {
    let Some(timing) = TIMING.get().copied() else {
        return Heartbeat { slot: None };
    };
    let slot = Arc::new(Slot {
        name,
        timing,
        due: Mutex::new(Instant::now() + timing.budget),
        stall_at: test_hook::stall_at(name),
    });
    REGISTRY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Arc::downgrade(&slot));
    Heartbeat { slot: Some(slot) }
}

/// One loop's heartbeat (see the module docs). Dropping it unregisters the loop.
#[derive(Debug)]
pub struct Heartbeat {
    slot: Option<Arc<Slot>>,
}

#[derive(Debug)]
struct Slot {
    name: &'static str,
    timing: Timing,
    /// The loop promised to tick again by then.
    due: Mutex<Instant>,
    /// Debug builds only: when the test hook stalls this loop (always `None` in a release
    /// build, where the hook is compiled out and nothing reads it).
    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    stall_at: Option<Instant>,
}

impl Slot {
    fn due(&self) -> Instant {
        *self.due.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn promise(&self, until: Instant) {
        test_hook::maybe_stall(self);
        *self.due.lock().unwrap_or_else(|p| p.into_inner()) = until + self.timing.budget;
    }
}

impl Heartbeat {
    /// The loop made progress; it ticks again within the watchdog's budget.
    pub fn tick(&self) {
        if let Some(s) = &self.slot {
            s.promise(Instant::now());
        }
    }

    /// The loop starts work that may take up to `max` without a tick (a full pull, a walk),
    /// then ticks again.
    pub fn busy_for(&self, max: Duration) {
        if let Some(s) = &self.slot {
            s.promise(Instant::now() + max);
        }
    }

    /// The loop waits on purpose for `wait` (a backoff, an interval), then ticks again.
    pub fn wait_for(&self, wait: Duration) {
        self.busy_for(wait);
    }

    /// The loop is about to wait until `deadline` (or for events, with `None`). Returns the
    /// deadline to sleep until: unchanged without a watchdog; under one, `None` or a far
    /// deadline becomes at most half the watchdog timeout away, so that an idle loop still
    /// ticks in time. A loop wakes up a little more often then, and does nothing new.
    pub fn wait_until(&self, deadline: Option<Instant>) -> Option<Instant> {
        let Some(s) = &self.slot else {
            return deadline;
        };
        let cap = Instant::now() + s.timing.max_wait;
        let until = deadline.map_or(cap, |d| d.min(cap));
        s.promise(until);
        Some(until)
    }

    /// Runs `work` (a request bounded by its own timeouts, a task of the engine), ticking
    /// while it is polled and pending: the loop is alive as long as its task is not stuck
    /// in a blocking call. Without a watchdog it is `work.await`.
    pub async fn alive_while<F: std::future::Future>(&self, work: F) -> F::Output {
        if self.slot.is_none() {
            return work.await;
        }
        tokio::pin!(work);
        loop {
            let until = self.wait_until(None);
            tokio::select! {
                biased;
                out = &mut work => return out,
                _ = sleep_until(until) => {}
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// `IMMISH_SYNC_TEST_STALL=<loop>:<seconds>` (debug builds only): the named loop's thread
/// blocks for good at its first tick after that many seconds, as a loop stuck in a blocking
/// call would. The tests use it to show that a stalled loop stops the watchdog pings; it is
/// the real loop that stops, not only its heartbeat.
#[cfg(debug_assertions)]
mod test_hook {
    use super::{Instant, Slot};
    use std::time::Duration;

    pub(super) const VAR: &str = "IMMISH_SYNC_TEST_STALL";

    pub(super) fn stall_at(name: &str) -> Option<Instant> {
        let v = std::env::var(VAR).ok()?;
        let (who, secs) = v.split_once(':')?;
        let secs: f64 = secs.parse().ok()?;
        (who == name).then(|| Instant::now() + Duration::from_secs_f64(secs))
    }

    pub(super) fn maybe_stall(slot: &Slot) {
        let Some(at) = slot.stall_at else { return };
        if Instant::now() < at {
            return;
        }
        tracing::warn!(
            "{VAR}: the {} loop blocks its thread for good now",
            slot.name
        );
        let block = || loop {
            std::thread::park();
        };
        // On a multi-threaded runtime the worker hands its other tasks to a new thread
        // first, so that only this loop stops, as with a blocking call on a hung mount.
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(block),
            _ => block(),
        }
    }
}

#[cfg(not(debug_assertions))]
mod test_hook {
    use super::{Instant, Slot};

    pub(super) fn stall_at(_: &str) -> Option<Instant> {
        None
    }

    pub(super) fn maybe_stall(_: &Slot) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(budget: Duration) -> Heartbeat {
        Heartbeat {
            slot: Some(Arc::new(Slot {
                name: "t",
                timing: Timing {
                    budget,
                    max_wait: budget / 2,
                },
                due: Mutex::new(Instant::now() + budget),
                stall_at: None,
            })),
        }
    }

    fn due(b: &Heartbeat) -> Instant {
        b.slot.as_ref().map(|s| s.due()).expect("enabled")
    }

    #[test]
    fn a_disabled_heartbeat_leaves_the_deadline_alone() {
        let b = Heartbeat { slot: None };
        assert_eq!(b.wait_until(None), None);
        let d = Instant::now() + Duration::from_secs(3600);
        assert_eq!(b.wait_until(Some(d)), Some(d));
    }

    #[test]
    fn a_wait_without_deadline_is_capped_at_half_the_budget() {
        let b = slot(Duration::from_secs(10));
        let before = Instant::now();
        let until = b.wait_until(None).expect("capped");
        assert!(until <= before + Duration::from_secs(5) + Duration::from_millis(100));
        assert!(until >= before + Duration::from_secs(5));
        // The loop is fresh until its wake-up plus the budget.
        assert_eq!(due(&b), until + Duration::from_secs(10));
    }

    #[test]
    fn a_near_deadline_is_kept() {
        let b = slot(Duration::from_secs(10));
        let d = Instant::now() + Duration::from_secs(1);
        assert_eq!(b.wait_until(Some(d)), Some(d));
    }

    #[test]
    fn a_declared_long_wait_stays_fresh_past_the_budget() {
        let b = slot(Duration::from_secs(1));
        b.wait_for(Duration::from_secs(600));
        assert!(due(&b) > Instant::now() + Duration::from_secs(599));
        b.tick();
        assert!(due(&b) < Instant::now() + Duration::from_secs(2));
    }
}
