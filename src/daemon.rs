//! `scan` and `run`: putting the parts together, and taking them apart in order.
//!
//! Owns: the task tree of the daemon under one cancellation root, its generations (a
//! storage restart, a reload), and the errors and tunables of both commands. Start-up is
//! in `startup.rs`, `scan`'s passes and summary in `scan_command.rs`, several accounts in
//! `accounts.rs`.
//!
//! Settings go one way: each stage is handed its own section of the resolved [`Config`]
//! (`&config.state` to the database, `&config.mirror` to the mirror, `&config.scan` to the
//! scanner…), and this module only wires the stages together.
//!
//! Must not: parse the command line or print (main does), exit the process, or talk to the
//! state database other than through the units of work of [`crate::db`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, ApiError};
use crate::backoff::{self, Backoff};
use crate::config::{Config, WatchMode};
use crate::control::{reload, Control, RescanOf};
use crate::db::meta::ConnectionState;
use crate::db::queue;
use crate::db::{self, now_ms, Db, DbError};
use crate::library::Library;
use crate::live::Live;
use crate::lock::{LockError, StateLock};
use crate::mirror::Mirror;
use crate::model::MediaTypes;
use crate::pipeline::{self, Engine, EngineError, Mode, Pause, Waker};
use crate::scan::walk::Root;
use crate::scan::{PassError, Scanner};
use crate::service;
use crate::watch::{WatchError, Watcher};

mod accounts;
mod moved;
mod scan_command;
mod side;
mod startup;

pub use accounts::{account_dir, project, ACCOUNTS_DIR};
use scan_command::fresh_count;
pub use scan_command::{scan, scan_with, ScanSummary};
use startup::{finish, open, record_connection, Opened};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("cannot use the state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to the server: {0}")]
    Connect(#[source] ApiError),
    #[error("root {path}: {message}")]
    Root { path: PathBuf, message: String },
    #[error("a daemon task failed: {0}")]
    Task(String),
    /// With `[[accounts]]`: accounts that stopped with an error, the first one's error
    /// (docs/ARCHITECTURE.md#accounts).
    #[error("account {names} stopped: {first}")]
    AccountsStopped {
        names: String,
        #[source]
        first: Box<DaemonError>,
    },
    #[error("uploads are paused (since {since}): `immish-sync resume` lifts the pause")]
    Paused { since: String },
    #[error("metrics.listen: cannot listen on {addr}: {source}; choose another port, or remove [metrics] listen")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl From<WatchError> for DaemonError {
    fn from(e: WatchError) -> Self {
        match e {
            WatchError::Db(d) => DaemonError::Db(d),
            WatchError::Task(t) => DaemonError::Task(t),
        }
    }
}

impl From<PassError> for DaemonError {
    fn from(e: PassError) -> Self {
        match e {
            PassError::Db(d) => DaemonError::Db(d),
            PassError::Task(t) => DaemonError::Task(t),
        }
    }
}

impl From<EngineError> for DaemonError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Db(d) => DaemonError::Db(d),
        }
    }
}

/// Everything a started daemon holds.
struct Started {
    /// `None` for `[server]`'s account under [`accounts::run_all`], which holds the state
    /// directory's lock itself for as long as any account runs.
    _lock: Option<StateLock>,
    db: Db,
    api: ApiClient,
    roots: Vec<Root>,
    media: MediaTypes,
    pipeline: pipeline::Settings,
    scanner: Scanner,
    /// The user's pauses, the engine's waker and the rescans asked for: what the control
    /// socket reaches, across generations (docs/ARCHITECTURE.md#control).
    control: Control,
    /// The daemon's control socket task, and what stops it (the daemon only, not `scan`).
    control_socket: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl Started {
    /// Stops listening for commands and removes the socket (before the lock goes).
    async fn close_control(&mut self) {
        if let Some((stop, task)) = self.control_socket.take() {
            stop.cancel();
            let _ = task.await;
        }
    }
}

/// How long a loop of the daemon may go without a heartbeat before `/healthz` says it
/// stopped making progress (when no systemd watchdog sets its own budget).
const HEALTH_LOOP_BUDGET: Duration = Duration::from_secs(120);
/// How long the first scan waits for the watcher to have every root watched.
const WATCH_READY_MAX: Duration = Duration::from_secs(60);
/// The first wait after a failed connect; it doubles up to [`Tuning::connect_retry_max`].
const CONNECT_RETRY_INITIAL: Duration = Duration::from_secs(2);

/// Tunables that are not in the config file (tests shorten them).
#[derive(Clone, Debug)]
pub struct Tuning {
    /// After the state database could not be written (disk full), how long to wait before
    /// trying again.
    pub storage_retry: Duration,
    pub auth_probe_interval: Duration,
    pub capacity_pause: Duration,
    /// Waits between connection attempts of the daemon when the server is unreachable.
    pub connect_retry_max: Duration,
    /// Waits between the probes of an outage (first step, cap).
    pub outage_probe: Backoff,
    /// How often the alerts look for incidents (docs/STATUS.md#alerts).
    pub alert_check: Duration,
    /// How often a progress line is logged while files wait (docs/ARCHITECTURE.md#progress).
    pub progress_every: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            storage_retry: Duration::from_secs(30),
            auth_probe_interval: Duration::from_secs(60),
            capacity_pause: Duration::from_secs(600),
            connect_retry_max: Duration::from_secs(300),
            outage_probe: pipeline::OUTAGE_PROBE,
            alert_check: Duration::from_secs(30),
            progress_every: Duration::from_secs(30),
        }
    }
}

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
        run_account(opened, config, tuning, live, shutdown, reloads, None).await
    } else {
        accounts::run_all(config, tuning, live, shutdown, reloads).await
    };
    if result.is_ok() {
        tracing::info!("stopped");
    }
    result
}

/// One account's daemon, from its opened state to its stop: connect, then the task tree
/// in generations. `live` is the account's own (its counters); `account` its name
/// (`None`: `[server]`'s), for its alerts.
async fn run_account(
    opened: Opened,
    config: Config,
    tuning: Tuning,
    live: Arc<Live>,
    shutdown: CancellationToken,
    reloads: Option<tokio::sync::mpsc::Receiver<Reloaded>>,
    account: Option<&str>,
) -> Result<(), DaemonError> {
    let Some(mut s) = finish(opened, &config, &tuning, true, &shutdown).await? else {
        return Ok(());
    };
    live.set_phase("watching");
    live.set_api(s.api.clone());
    // Its progress lines, live record and alerts, from its own counters and database.
    let mut side = side::account(
        &config,
        &tuning,
        &live,
        account,
        s.db.clone(),
        s.api.clone(),
        &shutdown,
    );
    // `pause`, `resume`, `rescan` and `retry` reach the daemon whatever generation runs
    // (docs/ARCHITECTURE.md#control); the socket goes before the lock.
    let result = run_generations(
        config, &tuning, &mut s, &mut side, &live, &shutdown, reloads,
    )
    .await;
    s.close_control().await;
    result
}

/// Takes the reloadable parts of `new` into the started daemon (the server, state and
/// log settings stay as they are; docs/ARCHITECTURE.md#reload).
fn apply_reload(config: &mut Config, s: &mut Started, new: Config, roots: Vec<Root>) {
    // The windows come with the upload settings; the cap lives in the client's meter.
    s.api.upload_meter().set_max_rate(new.upload.max_rate);
    reload::apply(config, &mut s.pipeline, new);
    s.scanner = Scanner::new(
        s.db.clone(),
        roots.clone(),
        s.media.clone(),
        &config.scan,
        &config.watch,
    );
    s.roots = roots;
}

async fn run_generations(
    mut config: Config,
    tuning: &Tuning,
    s: &mut Started,
    side: &mut side::AccountSide,
    live: &Arc<Live>,
    shutdown: &CancellationToken,
    mut reloads: Option<tokio::sync::mpsc::Receiver<Reloaded>>,
) -> Result<(), DaemonError> {
    // The task tree runs in generations. When the state database cannot be written (its disk
    // is full, or failing), a generation ends with that error: SQLite rolled back whatever
    // was half-written, so the daemon waits, sends in-flight jobs back to the queue and
    // starts the tree again, rather than exit and leave the backup to a service manager.
    let mut reported = false;
    loop {
        let generation = shutdown.child_token();
        let mut reload = None;
        // Cancelled by the mirror when the server's API moved (docs/RELIABILITY.md).
        let api_moved = CancellationToken::new();
        let mut reconnect = false;
        let result = {
            let tree = run_tree(&config, s, live, generation.clone(), api_moved.clone());
            tokio::pin!(tree);
            loop {
                tokio::select! {
                    r = &mut tree => break r,
                    _ = api_moved.cancelled(), if !reconnect => {
                        reconnect = true;
                        generation.cancel();
                    }
                    new = reload::next(&mut reloads) => {
                        if let Some(taken) = reload::consider(&config, new) {
                            reload = Some(taken);
                            generation.cancel();
                        }
                    }
                }
            }
        };
        generation.cancel();
        if reconnect && result.is_ok() && !shutdown.is_cancelled() {
            if !moved::reconnect(&config, tuning, s, shutdown).await? {
                return Ok(());
            }
            if reload.is_none() {
                continue;
            }
        }
        if let Some((new, roots)) = reload {
            if !config.alerts.same_as(&new.alerts) {
                side.set_alerts(&new.alerts);
            }
            apply_reload(&mut config, s, new, roots);
            if result.is_ok() && !shutdown.is_cancelled() {
                continue;
            }
        }
        match result {
            Err(e) if is_storage_trouble(&e) && !shutdown.is_cancelled() => {
                if !reported {
                    tracing::error!(
                        "{e}; the state directory {} is probably full: pausing all work and \
                         trying again every {}s (nothing queued is lost)",
                        config.state.dir.display(),
                        tuning.storage_retry.as_secs()
                    );
                    reported = true;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(tuning.storage_retry) => {}
                }
                let recovered = s.db.call(|c| queue::recover_in_flight(c, now_ms())).await;
                if let Err(e) = recovered {
                    tracing::debug!(error = %e, "the state database is still not writable");
                }
            }
            other => return other,
        }
        if shutdown.is_cancelled() {
            return Ok(());
        }
        if reported {
            tracing::info!("trying again with the state database");
        }
    }
}

/// Whether an error comes from the state database being unwritable (disk full, I/O error):
/// conditions that end by themselves or by the user freeing space.
fn is_storage_trouble(e: &DaemonError) -> bool {
    let DaemonError::Db(DbError::Sqlite { source, .. }) = e else {
        return false;
    };
    matches!(
        source,
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure)
    )
}

/// One generation of the daemon's task tree: engine, scanner, watcher and mirror under
/// `shutdown`; the first critical failure stops the others and is returned.
async fn run_tree(
    config: &Config,
    s: &Started,
    live: &Arc<Live>,
    shutdown: CancellationToken,
    api_moved: CancellationToken,
) -> Result<(), DaemonError> {
    let engine = Engine::new(s.db.clone(), s.api.clone(), s.pipeline.clone())
        .with_waker(s.control.waker.clone())
        .with_stats(live.stats());
    let waker = engine.waker();

    let (watch_ready, watching) = tokio::sync::oneshot::channel();
    let watcher = watch_roots(config, s, waker.clone(), watch_ready, shutdown.clone());
    let scanner = {
        let (scanner, cancel, live) = (s.scanner.clone(), shutdown.clone(), live.clone());
        let rescans = s.control.rescans.clone();
        async move {
            // The first scan starts once the watches are in place, so that a file written
            // between the two is seen by one of them. A watcher that failed to start closes
            // the channel, and a root that hangs (a dead network mount) must not hold the
            // others back: the scan goes ahead all the same then.
            tokio::select! {
                _ = cancel.cancelled() => return Ok::<(), DaemonError>(()),
                _ = watching => {}
                _ = tokio::time::sleep(WATCH_READY_MAX) => {
                    tracing::warn!("the watches are not all in place after {WATCH_READY_MAX:?}; scanning anyway");
                }
            }
            service::ready();
            let mut only: Option<Scanner> = None;
            loop {
                let pass = only.take().unwrap_or_else(|| scanner.clone());
                live.set_phase("scanning");
                let outcomes = pass.scan_all(|| waker.wake(), &cancel).await;
                live.set_phase("watching");
                let outcomes = outcomes?;
                let fresh = fresh_count(&outcomes);
                // Spread so that many agents on one server do not rescan in step. Files that
                // were still changing are looked at again once they may have settled.
                let jitter = backoff::spread(scanner.interval());
                let jitter = if fresh > 0 {
                    jitter.min(scanner.settle() + Duration::from_secs(1))
                } else {
                    jitter
                };
                tokio::select! {
                    _ = cancel.cancelled() => return Ok::<(), DaemonError>(()),
                    _ = tokio::time::sleep(jitter) => {}
                    // `immish-sync rescan`: the next walk now, of the roots asked for.
                    asked = rescans.asked() => {
                        if let RescanOf::Roots(roots) = asked {
                            only = Some(scanner.only(&roots));
                        }
                    }
                }
            }
        }
    };
    // systemd's one `STATUS=` line: every account's counters added up.
    if !live.of_account() {
        let live = live.clone();
        service::progress(move || progress_line(live.totals()));
    }
    let engine_run = engine.run(Mode::Forever, shutdown.clone());
    // A failed critical part stops the daemon with its error rather than limping on; the
    // first error is the one reported.
    tokio::pin!(scanner);
    tokio::pin!(engine_run);
    tokio::pin!(watcher);
    // The mirror (pulls, live events) never fails the daemon: it logs and retries. It stops
    // with the others, under the same root.
    let mirror = Mirror::new(
        s.db.clone(),
        s.api.clone(),
        &config.mirror,
        Some(engine.waker()),
    )
    .with_moved(api_moved);
    let mirror = tokio::spawn(mirror.run(shutdown.clone()));
    // Albums, Live Photos and stacks follow the uploads; like the mirror, they never fail
    // the daemon.
    let library = Library::new(s.db.clone(), s.api.clone(), &config.roots);
    let library = tokio::spawn(library.run(shutdown.clone()));
    let after_upload =
        crate::after_upload::AfterUpload::new(s.db.clone(), s.api.clone(), &config.roots);
    let after_upload = tokio::spawn(after_upload.run(shutdown.clone()));
    // docs/ARCHITECTURE.md#pull: copies of the server's originals; never fails the daemon.
    let pull = tokio::spawn(
        crate::originals::Originals::from_config(s.db.clone(), s.api.clone(), config)
            .run(shutdown.clone()),
    );
    let result = tokio::select! {
        r = &mut scanner => {
            shutdown.cancel();
            let (e, w) = tokio::join!(&mut engine_run, &mut watcher);
            r.and(e.map(|_| ()).map_err(Into::into)).and(w)
        }
        r = &mut engine_run => {
            shutdown.cancel();
            let w = watcher.await;
            r.map(|_| ()).map_err(Into::into).and(w)
        }
        r = &mut watcher => {
            shutdown.cancel();
            let (sc, e) = tokio::join!(&mut scanner, &mut engine_run);
            r.and(sc).and(e.map(|_| ()).map_err(Into::into))
        }
    };
    shutdown.cancel();
    if let Err(e) = mirror.await {
        tracing::error!(error = %e, "the mirror task failed");
    }
    if let Err(e) = library.await {
        tracing::error!(error = %e, "the library task failed");
    }
    if let Err(e) = after_upload.await {
        tracing::error!(error = %e, "the after-upload task failed");
    }
    if let Err(e) = pull.await {
        tracing::error!(error = %e, "the pull task failed");
    }
    if result.is_ok() {
        tracing::debug!("the task tree stopped");
    }
    result
}

/// The counts `systemctl status` shows after what the daemon is doing.
fn progress_line(t: crate::live::Totals) -> String {
    format!(
        "uploaded {} ({}), already on the server {}, failed {}",
        t.uploaded,
        crate::human::megabytes(t.uploaded_bytes),
        t.duplicates,
        t.failed
    )
}

/// The live watcher of the roots, as a task of the daemon. With `watch.mode = "off"` it
/// only waits for the stop: the periodic scan is then the only way files are found.
async fn watch_roots(
    config: &Config,
    s: &Started,
    waker: Waker,
    ready: tokio::sync::oneshot::Sender<()>,
    cancel: CancellationToken,
) -> Result<(), DaemonError> {
    if config.watch.mode == WatchMode::Off {
        tracing::info!(
            "watch.mode = \"off\": new files are found by the scan every {:?}",
            config.scan.interval
        );
        let _ = ready.send(());
        cancel.cancelled().await;
        return Ok(());
    }
    let watcher = Watcher::new(
        config.watch.clone(),
        s.db.clone(),
        s.roots.clone(),
        s.media.clone(),
        waker,
    );
    Ok(watcher.run(ready, cancel).await?)
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
