//! The messages to systemd (`sd_notify`) and the watchdog task that sends `WATCHDOG=1`.
//!
//! The ping is sent by a task on the daemon's runtime, never by a thread of its own: a
//! runtime whose workers are all blocked cannot run that task, so the pings stop, as they
//! must. The task pings only while every heartbeat is fresh ([`super::heartbeat`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use super::heartbeat;

/// How often `STATUS=` is refreshed when there is no watchdog to time it.
const STATUS_EVERY: Duration = Duration::from_secs(5);

type ProgressFn = Box<dyn Fn() -> String + Send + Sync>;

/// This process's link to its service manager; set once, by [`supervise`].
struct Manager {
    ready: AtomicBool,
    stopping: AtomicBool,
    /// What the daemon says it is doing ("waiting for the server since …").
    phase: Mutex<String>,
    /// Counts appended to the phase (uploads so far), read at each refresh.
    progress: Mutex<Option<ProgressFn>>,
    /// The last `STATUS=` sent, so that an unchanged line is not sent again.
    sent: Mutex<String>,
}

static MANAGER: OnceLock<Manager> = OnceLock::new();

fn send(states: &[NotifyState]) {
    // A manager that went away is not the daemon's problem: it keeps backing up.
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "cannot notify the service manager");
    }
}

/// The watchdog task of [`supervise`]; it ends with the daemon's shutdown.
pub struct Supervision {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Supervision {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts talking to the service manager when there is one (`NOTIFY_SOCKET` is set): the
/// watchdog (when `WATCHDOG_USEC` is set for this process), `STATUS=` refreshes, and
/// `STOPPING=1` as soon as `shutdown` is cancelled. Returns `None`, and does nothing, when
/// there is no manager. Must be called on the daemon's runtime.
pub fn supervise(shutdown: &CancellationToken) -> Option<Supervision> {
    std::env::var_os("NOTIFY_SOCKET")?;
    let mut usec = 0;
    let watchdog =
        sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec));
    if let Some(timeout) = watchdog {
        heartbeat::enable(timeout);
    }
    let manager = MANAGER.get_or_init(|| Manager {
        ready: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
        phase: Mutex::new("starting".to_owned()),
        progress: Mutex::new(None),
        sent: Mutex::new(String::new()),
    });
    let every = watchdog.map_or(STATUS_EVERY, |t| t / 2);
    let shutdown = shutdown.clone();
    let task = tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported: Vec<&'static str> = Vec::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    stopping();
                    return;
                }
                _ = interval.tick() => {}
            }
            refresh_status(manager);
            if watchdog.is_none() {
                continue;
            }
            let overdue = heartbeat::overdue();
            if overdue.is_empty() {
                send(&[NotifyState::Watchdog]);
            } else if overdue != reported {
                // Said once per change: systemd restarts the daemon after `WatchdogSec`
                // without a ping, and this line tells why.
                tracing::error!(
                    loops = ?overdue,
                    "a loop of the daemon has stopped making progress; no more watchdog \
                     pings, so the service manager will restart the daemon"
                );
                send(&[NotifyState::Status(&format!(
                    "stalled: {}",
                    overdue.join(", ")
                ))]);
            }
            reported = overdue;
        }
    });
    Some(Supervision { task })
}

fn refresh_status(m: &Manager) {
    let mut line = m.phase.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(progress) = &*m.progress.lock().unwrap_or_else(|p| p.into_inner()) {
        let p = progress();
        if !p.is_empty() {
            line = format!("{line}; {p}");
        }
    }
    let mut sent = m.sent.lock().unwrap_or_else(|p| p.into_inner());
    if *sent != line {
        send(&[NotifyState::Status(&line)]);
        *sent = line;
    }
}

/// `READY=1`, once: local start-up is done. Later calls do nothing.
pub fn ready() {
    if let Some(m) = MANAGER.get() {
        if !m.ready.swap(true, Ordering::SeqCst) {
            send(&[NotifyState::Ready]);
        }
    }
}

/// What the daemon is doing now, for `systemctl status`; sent at once if it changed.
pub fn status(phase: impl Into<String>) {
    if let Some(m) = MANAGER.get() {
        *m.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase.into();
        refresh_status(m);
    }
}

/// A source of counts appended to the status line at each refresh ("uploaded 12 files").
pub fn progress(f: impl Fn() -> String + Send + Sync + 'static) {
    if let Some(m) = MANAGER.get() {
        *m.progress.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(f));
    }
}

/// `STOPPING=1`, once: the daemon is shutting down.
pub fn stopping() {
    if let Some(m) = MANAGER.get() {
        if !m.stopping.swap(true, Ordering::SeqCst) {
            send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
        }
    }
}
