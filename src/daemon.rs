//! `scan` and `run`: putting the parts together, and taking them apart in order.
//!
//! Owns: start-up (state directory, lock, database, recovery of in-flight jobs, connecting,
//! the server identity and device id), the task tree of the daemon under one cancellation
//! root, and the final summary of a `scan`.
//!
//! Settings go one way: each stage is handed its own section of the resolved [`Config`]
//! (`&config.state` to the database, `&config.mirror` to the mirror, `&config.scan` to the
//! scanner…), and this module only wires the stages together.
//!
//! Must not: parse the command line or print (main does), exit the process, or talk to the
//! state database other than through the units of work of [`crate::db`].

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::api::{ApiClient, ApiError, ErrorClass};
use crate::backoff::{self, Backoff};
use crate::config::{Config, StateConfig, WatchMode};
use crate::control::{self, reload, Control, RescanOf, Rescans};
use crate::db::meta::{self, ConnectionState, ServerIdentity};
use crate::db::queue::{self, JobReport};
use crate::db::{self, now_ms, Db, DbError};
use crate::library::Library;
use crate::live::Live;
use crate::lock::{LockError, StateLock};
use crate::mirror::Mirror;
use crate::model::MediaTypes;
use crate::pipeline::{
    self, Engine, EngineEnd, EngineError, Hold, Mode, Pause, PauseTimes, Stats, Waker,
};
use crate::scan::{PassError, Root, RootOutcome, RootScan, Scanner};
use crate::service;
use crate::watch::{WatchError, Watcher};

mod accounts;
mod moved;
mod side;

pub use accounts::{account_dir, project, ACCOUNTS_DIR};

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

/// Creates the state directory (private to the user) and takes its lock.
fn open_state(state: &StateConfig) -> Result<(StateLock, Db), DaemonError> {
    let dir = &state.dir;
    let io = |source| DaemonError::StateDir {
        path: dir.clone(),
        source,
    };
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(io)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    let lock = StateLock::acquire(dir)?;
    let db = Db::open(&dir.join(db::DB_FILE))?;
    Ok((lock, db))
}

/// Start-up shared by `scan` and `run`. With `retry_connect` an unreachable server is
/// waited for (the daemon); without, it is an error at once (`scan`).
async fn start(
    config: &Config,
    tuning: &Tuning,
    retry_connect: bool,
    shutdown: &CancellationToken,
) -> Result<Option<Started>, DaemonError> {
    let opened = open(config, retry_connect, shutdown).await?;
    finish(opened, config, tuning, retry_connect, shutdown).await
}

/// What start-up holds before it connects.
struct Opened {
    lock: Option<StateLock>,
    db: Db,
    roots: Vec<Root>,
    hold: Hold,
    control: Control,
    control_socket: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

/// The local half of start-up: roots, state directory, lock, database, control socket.
async fn open(
    config: &Config,
    retry_connect: bool,
    shutdown: &CancellationToken,
) -> Result<Opened, DaemonError> {
    let roots = config
        .roots
        .iter()
        .map(|r| {
            Root::new(r).map_err(|message| DaemonError::Root {
                path: r.path.clone(),
                message,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (lock, db) = open_state(&config.state)?;
    let recovered = db.call(|c| queue::recover_in_flight(c, now_ms())).await?;
    if recovered > 0 {
        tracing::info!(
            jobs = recovered,
            "jobs interrupted by the last stop are queued again"
        );
    }

    let hold = Hold::default();
    let control = Control {
        db: db.clone(),
        hold: hold.clone(),
        waker: Waker::default(),
        rescans: Rescans::default(),
    };
    let pauses = control.load_pauses().await?;
    // The daemon listens for commands from here, before it connects: a server down at
    // boot must not keep `pause` from it.
    let control_socket = retry_connect.then(|| {
        let stop = shutdown.child_token();
        let task = tokio::spawn(control::serve(
            config.state.dir.clone(),
            control.clone(),
            stop.clone(),
        ));
        (stop, task)
    });
    if let Some(since) = pauses.all_since_ms {
        tracing::warn!(
            "uploads are paused since {} (`immish-sync resume` lifts it)",
            crate::human::timestamp(since)
        );
    }
    for r in &pauses.roots {
        tracing::warn!(
            root = %r.path,
            "uploads from this root are paused since {} (`immish-sync resume --root` lifts it)",
            crate::human::timestamp(r.since_ms)
        );
    }
    Ok(Opened {
        lock: Some(lock),
        db,
        roots,
        hold,
        control,
        control_socket,
    })
}

/// The other half of start-up: connecting, and what the server tells.
async fn finish(
    opened: Opened,
    config: &Config,
    tuning: &Tuning,
    retry_connect: bool,
    shutdown: &CancellationToken,
) -> Result<Option<Started>, DaemonError> {
    let Opened {
        lock,
        db,
        roots,
        hold,
        control,
        control_socket,
    } = opened;
    let Some(api) = connect(config, tuning, &db, retry_connect, shutdown).await? else {
        if let Some((stop, task)) = control_socket {
            stop.cancel();
            let _ = task.await;
        }
        return Ok(None);
    };

    // A different server or user makes our catalogue's "already uploaded" answers wrong.
    let identity = ServerIdentity {
        api_root: api.api_root().to_owned(),
        user_id: api.user_id().to_owned(),
    };
    let device_override = config.upload.device_id.clone();
    let meta::Adopted {
        device_id,
        forgot_previous,
    } = db
        .call(move |c| meta::adopt_server(c, &identity, device_override.as_deref(), now_ms()))
        .await?;
    if forgot_previous {
        tracing::warn!(
            "the configured server or user changed: every file is checked against it again"
        );
    }

    // The dialect and version, for `status`; a server that does not say is no reason to
    // stop. Asked together with the media types (independent requests: a round trip less).
    let (version, media) = tokio::join!(api.server_version(), api.media_types());
    let info = meta::ServerInfo {
        dialect: format!("{:?}", api.dialect()).to_lowercase(),
        version: match version {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the server's version");
                None
            }
        },
    };
    if let Err(e) = db.call(move |c| meta::set_server_info(c, &info)).await {
        tracing::debug!(error = %e, "cannot record the server's version");
    }

    let media = match media {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the server's media types; using the built-in list");
            MediaTypes::builtin()
        }
    };
    let pipeline = pipeline::Settings {
        hold: hold.clone(),
        hash: config.hash.clone(),
        upload: config.upload.clone(),
        mirror: config.mirror.clone(),
        device_id,
        pauses: PauseTimes {
            auth_probe_interval: tuning.auth_probe_interval,
            capacity_pause: tuning.capacity_pause,
            outage_probe: tuning.outage_probe,
        },
        dating: roots
            .iter()
            .map(|r| (r.path.clone(), r.dating.clone()))
            .collect(),
    };
    let scanner = Scanner::new(
        db.clone(),
        roots.clone(),
        media.clone(),
        &config.scan,
        &config.watch,
    );
    // docs/ARCHITECTURE.md#bandwidth-cap
    api.upload_meter().set_max_rate(config.upload.max_rate);
    Ok(Some(Started {
        control,
        control_socket,
        _lock: lock,
        db,
        api,
        roots,
        media,
        pipeline,
        scanner,
    }))
}

/// Records how the server answered, for `status`. A state database that cannot take the
/// write does not stop the connecting: the next unit of work meets it and says so.
async fn record_connection(db: &Db, state: ConnectionState) {
    if let Err(e) = db.call(move |c| meta::record_connection(c, &state)).await {
        tracing::debug!(error = %e, "cannot record the connection state");
    }
}

async fn connect(
    config: &Config,
    tuning: &Tuning,
    db: &Db,
    retry: bool,
    shutdown: &CancellationToken,
) -> Result<Option<ApiClient>, DaemonError> {
    let retry_wait = Backoff::new(CONNECT_RETRY_INITIAL, tuning.connect_retry_max);
    let mut attempt = 0u32;
    let since = now_ms();
    // Waiting for a server down at boot is waiting on purpose (docs/ARCHITECTURE.md#watchdog).
    let beat = service::heartbeat("connect");
    loop {
        let result = beat.alive_while(ApiClient::connect(&config.server)).await;
        // What `status` shows: since when the server is unreachable or refuses us, and when
        // the next attempt is (none for `scan`, which gives up at once).
        let now = now_ms();
        let wait = match &result {
            Err(e) if retry && !matches!(e, ApiError::Config { .. }) => {
                Some(if e.class() == ErrorClass::Auth {
                    tuning.auth_probe_interval
                } else {
                    retry_wait.delay(attempt + 1)
                })
            }
            _ => None,
        };
        let state = match &result {
            Ok(_) => ConnectionState::Connected { since_ms: now },
            Err(e) => {
                let next = wait.map(|w| now + w.as_millis() as i64);
                if e.class() == ErrorClass::Auth {
                    ConnectionState::Refused {
                        since_ms: now,
                        next_try_ms: next,
                        error: e.to_string(),
                    }
                } else {
                    ConnectionState::Unreachable {
                        since_ms: now,
                        next_try_ms: next,
                        error: e.to_string(),
                    }
                }
            }
        };
        record_connection(db, state).await;
        match result {
            Ok(api) => {
                tracing::info!(api = api.api_root(), dialect = ?api.dialect(), "connected");
                service::status(format!("connected to {}", api.api_root()));
                return Ok(Some(api));
            }
            // The daemon waits for the server rather than exit: a service manager would only
            // restart it into the same wall. A broken config is the exception.
            Err(e) if wait.is_some() => {
                attempt += 1;
                let wait = wait.unwrap_or(CONNECT_RETRY_INITIAL);
                // Local start-up is done: a server down at boot must not hold the boot up.
                service::ready();
                service::status(format!(
                    "waiting for the server since {} ({e})",
                    crate::human::timestamp(since)
                ));
                if attempt == 1 {
                    tracing::error!(
                        "cannot connect to the server: {e}; trying again in {}s",
                        wait.as_secs()
                    );
                } else if attempt.is_power_of_two() {
                    tracing::warn!("still cannot connect to the server ({attempt} attempts): {e}");
                }
                beat.wait_for(wait);
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Err(e) => return Err(DaemonError::Connect(e)),
        }
    }
}

/// How many more times `scan` waits for files that were still changing.
const SCAN_SETTLE_PASSES: usize = 2;
/// Files not backed up that the summary of a `scan` names.
const SUMMARY_PROBLEMS: usize = 20;

fn fresh_count(outcomes: &[(PathBuf, RootOutcome)]) -> u64 {
    outcomes
        .iter()
        .map(|(_, o)| match o {
            RootOutcome::Scanned(s) => s.fresh,
            RootOutcome::Paused { .. } => 0,
        })
        .sum()
}

/// One report for two passes over the same roots: what was queued adds up; what is still
/// changing, missing or paused is as the later pass saw it.
fn merge_passes(
    first: Vec<(PathBuf, RootOutcome)>,
    again: Vec<(PathBuf, RootOutcome)>,
) -> Vec<(PathBuf, RootOutcome)> {
    // What was queued, and the late sidecars (each reported by one pass only), add up.
    let queued_before: std::collections::HashMap<PathBuf, (u64, u64)> = first
        .into_iter()
        .filter_map(|(p, o)| match o {
            RootOutcome::Scanned(s) => Some((p, (s.queued, s.late_sidecars))),
            RootOutcome::Paused { .. } => None,
        })
        .collect();
    again
        .into_iter()
        .map(|(p, o)| match o {
            RootOutcome::Scanned(mut s) => {
                let (queued, late) = queued_before.get(&p).copied().unwrap_or_default();
                s.queued += queued;
                s.late_sidecars += late;
                (p, RootOutcome::Scanned(s))
            }
            paused => (p, paused),
        })
        .collect()
}

/// What one `scan` did, for the user.
#[derive(Debug)]
pub struct ScanSummary {
    pub roots: Vec<(PathBuf, RootOutcome)>,
    pub end: EngineEnd,
    pub stats: Arc<Stats>,
    pub elapsed: Duration,
    /// Jobs still `queued`…`verifying` or `retry` (not backed up yet).
    pub pending: i64,
    pub failed: Vec<JobReport>,
    pub failed_total: i64,
    /// The settle period files had to be unchanged for to be taken (`watch.settle`).
    pub settle: Duration,
    /// Files whose only server copy is in the server's trash: not backed up (the trash
    /// empties itself). The total, and the first paths.
    pub trash_only_total: i64,
    pub trash_only: Vec<Vec<u8>>,
    /// Files held back because the user deleted their photos on the server for good: a
    /// deliberate deletion, noted but not a failure.
    pub deleted_held_back: i64,
    /// Roots the user paused (`pause --root`): walked and hashed, not uploaded.
    pub held_roots: Vec<String>,
    /// What the `[[pull]]` folders got after the uploads (docs/ARCHITECTURE.md#pull);
    /// `None` without `[[pull]]` or with `--no-pull`. Not part of [`Self::is_complete`]:
    /// a copy not pulled yet leaves no local file without a backup.
    pub pull: Option<crate::originals::PullSummary>,
}

impl ScanSummary {
    /// All candidate files are on the server (or deliberately skipped).
    pub fn is_complete(&self) -> bool {
        self.end == EngineEnd::Idle
            && self.pending == 0
            && self.scanned().fresh == 0
            && self.scanned().waiting.is_empty()
            && self.failed_total == 0
            && self.trash_only_total == 0
            && self
                .roots
                .iter()
                .all(|(_, o)| matches!(o, RootOutcome::Scanned(_)))
    }

    pub fn scanned(&self) -> RootScan {
        let mut total = RootScan::default();
        for (_, o) in &self.roots {
            if let RootOutcome::Scanned(s) = o {
                total.files += s.files;
                total.queued += s.queued;
                total.missing += s.missing;
                total.fresh += s.fresh;
                total.waiting.extend(s.waiting.iter().cloned());
                total.skipped.add(&s.skipped);
                total.junk += s.junk;
                total.ignored += s.ignored;
                total.unmatched.extend(s.unmatched.iter().cloned());
                total.late_sidecars += s.late_sidecars;
            }
        }
        total
    }
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
        return scan_one(config, tuning, shutdown).await;
    }
    accounts::scan_all(config, tuning, shutdown).await
}

/// One account's `scan`.
async fn scan_one(
    config: Config,
    tuning: Tuning,
    shutdown: CancellationToken,
) -> Result<ScanSummary, DaemonError> {
    let t0 = Instant::now();
    let Some(s) = start(&config, &tuning, false, &shutdown).await? else {
        return Err(DaemonError::Task("cancelled".into()));
    };
    // A paused agent stays paused for `scan` too (docs/ARCHITECTURE.md#control).
    let pauses = s.db.call(|c| meta::user_pauses(c)).await?;
    if let Some(since) = pauses.all_since_ms {
        return Err(DaemonError::Paused {
            since: crate::human::timestamp(since),
        });
    }
    // One pull first, so that what the user deleted on the server is known (tombstones)
    // before any file is checked.
    Mirror::new(s.db.clone(), s.api.clone(), &config.mirror, None)
        .pull_for_scan(&shutdown)
        .await;
    let engine = Engine::new(s.db.clone(), s.api.clone(), s.pipeline.clone());
    let waker = engine.waker();
    let held_roots = pauses.roots.into_iter().map(|r| r.path).collect();
    // The engine runs while the walk feeds it, so uploads start before the walk ends.
    let feed = waker.feeding();
    let settle = s.scanner.settle();
    let walk = async {
        let pass = || s.scanner.scan_all(|| waker.wake(), &shutdown);
        let mut outcomes = pass().await;
        // Files that changed within the settle period may still be being copied: wait for
        // them to settle and look again, a few times, rather than upload half of one.
        for _ in 0..SCAN_SETTLE_PASSES {
            let fresh = match &outcomes {
                Ok(o) => fresh_count(o),
                Err(_) => 0,
            };
            if fresh == 0 || shutdown.is_cancelled() {
                break;
            }
            tracing::info!("{fresh} files are still changing; looking again in {settle:?}");
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(settle) => {}
            }
            outcomes = match (outcomes, pass().await) {
                (Ok(first), Ok(again)) => Ok(merge_passes(first, again)),
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
        }
        drop(feed);
        outcomes
    };
    let mode = Mode::UntilIdle {
        max_attempts: config.upload.scan_max_attempts,
    };
    let progress_done = shutdown.child_token();
    // A bar on a terminal, lines elsewhere (docs/ARCHITECTURE.md#progress).
    let progress = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        tokio::spawn(crate::progress::bar(
            s.db.clone(),
            engine.stats(),
            s.api.clone(),
            progress_done.clone(),
        ))
    } else {
        tokio::spawn(crate::progress::report(
            s.db.clone(),
            engine.stats(),
            s.api.clone(),
            tuning.progress_every,
            progress_done.clone(),
        ))
    };
    let progress = AbortOnDropHandle::new(progress);
    let (roots, end) = tokio::join!(walk, engine.run(mode, shutdown.clone()));
    progress_done.cancel();
    // The bar draws its last state before the summary is printed.
    let _ = progress.await;
    let (roots, end) = (roots?, end?);
    // What the server holds now joins its albums and groups before `scan` returns.
    Library::new(s.db.clone(), s.api.clone(), &config.roots)
        .drain(&shutdown)
        .await?;
    // Then, for roots that ask for it, backed-up files are archived or deleted
    // (docs/ARCHITECTURE.md#after-upload).
    crate::after_upload::AfterUpload::new(s.db.clone(), s.api.clone(), &config.roots)
        .drain(&shutdown)
        .await?;
    // Last, the [[pull]] folders, by the rounds of `run`'s pull task, from the mirror that
    // the verified uploads joined too (docs/ARCHITECTURE.md#pull); `scan --no-pull` leaves
    // `config.pull` empty.
    let pull = if config.pull.is_empty() || shutdown.is_cancelled() {
        None
    } else {
        let originals =
            crate::originals::Originals::from_config(s.db.clone(), s.api.clone(), &config);
        Some(originals.once(&shutdown).await)
    };
    let backlog = s.db.call(|c| queue::backlog(c, SUMMARY_PROBLEMS)).await?;
    let ((trash_only_total, trash_only), held_back) =
        s.db.call(|c| {
            Ok((
                db::mirror::trash_only(c, SUMMARY_PROBLEMS)?,
                db::mirror::held_back(c)?,
            ))
        })
        .await?;
    Ok(ScanSummary {
        held_roots,
        trash_only_total,
        trash_only,
        // `held_back` counts every file held back as deleted, the trashed ones too.
        deleted_held_back: held_back.saturating_sub(trash_only_total).max(0),
        roots,
        end,
        stats: engine.stats(),
        elapsed: t0.elapsed(),
        pending: backlog.pending,
        failed: backlog.recent_problems,
        failed_total: backlog.failed_total,
        settle,
        pull,
    })
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
