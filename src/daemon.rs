//! `scan` and `run`: putting the parts together, and taking them apart in order.
//!
//! Owns: the commands' entry points (`run` and its variants, `scan`) and the choice between
//! one account and several. The parts are children that import each other one way only,
//! each what stands below it: the errors (`error.rs`) and tunables (`tuning.rs`) at the
//! bottom, then start-up and what a started daemon holds (`startup.rs`), the side services
//! (`side.rs`), `scan`'s passes and summary (`scan_command.rs`), the API moving
//! (`moved.rs`), one account's task tree and its generations (`tree.rs`), and several
//! accounts (`accounts.rs`) on top.
//!
//! Must not: parse the command line or print (main does), exit the process, or talk to the
//! state database other than through the units of work of [`crate::db`].

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::live::Live;
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
use startup::open;
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
