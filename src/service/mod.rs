//! Life under a service manager: systemd's notify protocol (READY, STATUS, WATCHDOG,
//! STOPPING), the heartbeats that decide whether the watchdog is fed, the log format the
//! journal wants, and the unit files `service install` writes.
//!
//! Owns: the one connection of this process to its service manager (`NOTIFY_SOCKET`, which
//! is per process, so the state here is process-wide like the tracing subscriber's), the
//! registry of heartbeats, and the text of the systemd units.
//!
//! Must not: decide anything about the daemon's work. The daemon says when it is ready and
//! what it is doing; its loops tick their heartbeats; this module only relays. Nothing here
//! does anything when `NOTIFY_SOCKET` is unset: every call is then a cheap no-op, and loops
//! keep exactly their unsupervised timing.
//!
//! Parts:
//! - `notify`: the messages to the manager and the watchdog task.
//! - `heartbeat`: what a loop calls to say it is alive or waiting on purpose.
//! - `journal`: the log line format for journald (`<N>` priority prefixes, no timestamps).
//! - `unit`: the systemd units (system and `--user`) for this machine's config.

mod heartbeat;
pub mod journal;
mod notify;
pub mod unit;

pub use heartbeat::{heartbeat, Heartbeat};

/// Turns the heartbeats on without a watchdog, with `budget` as the time a loop may work
/// between ticks, so that `/healthz` can tell a loop that stopped making progress
/// (docs/STATUS.md#healthz). A systemd watchdog that came first keeps its own budget.
pub fn watch_loops(budget: std::time::Duration) {
    heartbeat::enable(budget);
}

/// The loops whose heartbeat is overdue (empty when heartbeats are off).
pub fn stalled_loops() -> Vec<&'static str> {
    heartbeat::overdue()
}
pub use notify::{progress, ready, status, stopping, supervise, Supervision};
