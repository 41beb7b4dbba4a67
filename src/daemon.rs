//! `scan` and `run`: putting the parts together, and taking them apart in order.
//!
//! Owns: the commands' entry points (`run` and its variants, `scan`, `retry`), the choice
//! between one account and several, and the connection state `status` shows for the
//! engine's pauses. The parts are children that import each other one way only, each what
//! stands below it: the errors (`error.rs`) and tunables (`tuning.rs`) at the bottom, then
//! start-up and what a started daemon holds (`startup.rs`), the side services (`side.rs`),
//! `scan`'s passes and summary (`scan_command.rs`), the API moving (`moved.rs`), one account's
//! task tree and its generations (`tree.rs`), and several accounts (`accounts.rs`) on top.
//!
//! Must not: parse the command line or print (main does), exit the process, or talk to the
//! state database other than through the units of work of [`crate::db`].

use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db::meta::ConnectionState;
use crate::db::queue;
use crate::db::{self, now_ms, Db};
use crate::live::Live;
use crate::pipeline::Pause;
use crate::service;

mod accounts;
mod error;
mod moved;
mod scan_command;
mod side;
mod startup;
mod tree;
mod tuning;

pub use accounts::{account_dir, project, ACCOUNTS_DIR};
pub use error::DaemonError;
pub use scan_command::ScanSummary;
use startup::{open, record_connection};
pub use tuning::Tuning;

/// `immish-sync run`: the daemon. Scans at start and then every `scan.interval` (with
/// jitter), uploads continuously, and stops cleanly when `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), DaemonError> {
    run_reloading_default(config, shutdown, None).await
}

/// [`run`], taking new configs from `reloads` (SIGHUP, docs/ARCHITECTURE.md#reload).
pub async fn run_reloading_default(
    config: Config,
    shutdown: CancellationToken,
    reloads: Option<tokio::sync::mpsc::Receiver<Reloaded>>,
) -> Result<(), DaemonError> {
    // Under systemd: READY/STATUS/WATCHDOG/STOPPING (nothing without NOTIFY_SOCKET).
    let _supervision = service::supervise(&shutdown);
    let result = run_reloading(config, Tuning::default(), shutdown, reloads).await;
    service::stopping();
    result
}

pub async fn run_with(
    config: Config,
    tuning: Tuning,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    run_reloading(config, tuning, shutdown, None).await
}

/// A config read again (SIGHUP): the new one, or why it is refused (file, line, key).
pub use crate::control::reload::Reloaded;

/// [`run_with`], taking new configs from `reloads` while it runs
/// (docs/ARCHITECTURE.md#reload).
pub async fn run_reloading(
    config: Config,
    tuning: Tuning,
    shutdown: CancellationToken,
    reloads: Option<tokio::sync::mpsc::Receiver<Reloaded>>,
) -> Result<(), DaemonError> {
    let live = Live::new();
    // The endpoint, progress lines and alerts (docs/ARCHITECTURE.md#task-tree).
    let _side = side::start(&config, &live, &shutdown).await?;
    // A daemon that takes SIGHUPs runs its accounts as a set that a new config can add to
    // and take from (docs/ARCHITECTURE.md#accounts), even while `[server]`'s is the only one.
    let result = if config.accounts.is_empty() && reloads.is_none() {
        let opened = open(&config, true, &shutdown).await?;
        tree::run_account(opened, config, tuning, live, shutdown, reloads, None).await
    } else {
        accounts::run_all(config, tuning, live, shutdown, reloads).await
    };
    if result.is_ok() {
        tracing::info!("stopped");
    }
    result
}

/// `immish-sync scan`: one pass over the roots, then upload until nothing is left to do
/// now. Returns `Ok(None)` when cancelled before it connected.
pub async fn scan(config: Config, shutdown: CancellationToken) -> Result<ScanSummary, DaemonError> {
    scan_with(config, Tuning::default(), shutdown).await
}

pub async fn scan_with(
    config: Config,
    tuning: Tuning,
    shutdown: CancellationToken,
) -> Result<ScanSummary, DaemonError> {
    if config.accounts.is_empty() {
        return scan_command::scan_one(config, tuning, shutdown).await;
    }
    accounts::scan_all(config, tuning, shutdown).await
}

/// `immish-sync retry`: puts failed jobs back in the queue (the daemon picks them up at its
/// next wake; `scan` at once). `None` when there is no state yet: nothing can have failed,
/// and creating a state directory here would only hide a wrong `[state] dir`.
pub fn retry_failed(state_dir: &Path, root: Option<&Path>) -> Result<Option<usize>, DaemonError> {
    use std::os::unix::ffi::OsStrExt;
    let path = state_dir.join(db::DB_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let db = Db::open(&path)?;
    let root = root.map(|r| r.as_os_str().as_bytes().to_vec());
    Ok(Some(db.call_blocking(move |c| {
        queue::retry_failed(c, now_ms(), root.as_deref())
    })?))
}

impl Pause {
    /// The exit code of a `scan` stopped by this pause.
    pub fn is_auth(&self) -> bool {
        matches!(self, Pause::Auth(_))
    }

    /// The connection state `status` shows for this pause, begun now, lifted `until` from
    /// now (when the engine knows).
    fn connection_state(&self, until: Option<Duration>) -> ConnectionState {
        let now = now_ms();
        let next = until.map(|d| now + d.as_millis() as i64);
        let text = self.message().to_owned();
        match self {
            Pause::Outage(_) => ConnectionState::Unreachable {
                since_ms: now,
                next_try_ms: next,
                error: text,
            },
            Pause::Auth(_) => ConnectionState::Refused {
                since_ms: now,
                next_try_ms: next,
                error: text,
            },
            Pause::Capacity(_) | Pause::Blocked(_) => ConnectionState::Paused {
                since_ms: now,
                until_ms: next,
                reason: text,
            },
        }
    }
}

/// Records the engine's global pause (or its end, `None`) as the connection state, for
/// `status`: the engine knows of an outage that starts after the daemon connected.
pub(crate) async fn record_pause(db: &Db, pause: Option<&Pause>, until: Option<Duration>) {
    let state = match pause {
        Some(p) => p.connection_state(until),
        None => ConnectionState::Connected { since_ms: now_ms() },
    };
    record_connection(db, state).await;
}
