//! Start-up, shared by `scan` and `run` (docs/ARCHITECTURE.md#start-up): the local half
//! (roots, state directory, lock, database, recovery of in-flight jobs, control socket) and
//! the half that connects (the server, its identity and version, the device id).
//!
//! Owns: the order of start-up and waiting for a server that is down at boot. Must not:
//! start the task tree (the daemon does, once this returns).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, ApiError, ErrorClass};
use crate::backoff::Backoff;
use crate::config::{Config, StateConfig};
use crate::control::{self, Control, Rescans};
use crate::db::meta::{self, ConnectionState, ServerIdentity};
use crate::db::queue;
use crate::db::{self, now_ms, Db};
use crate::lock::StateLock;
use crate::model::MediaTypes;
use crate::pipeline::{self, Hold, PauseTimes, Waker};
use crate::scan::walk::Root;
use crate::scan::Scanner;
use crate::service;

use super::error::DaemonError;
use super::tuning::Tuning;

/// The first wait after a failed connect; it doubles up to [`Tuning::connect_retry_max`].
const CONNECT_RETRY_INITIAL: Duration = Duration::from_secs(2);

/// Everything a started daemon holds.
pub(super) struct Started {
    /// `None` for `[server]`'s account under `accounts::run_all`, which holds the state
    /// directory's lock itself for as long as any account runs.
    pub(super) _lock: Option<StateLock>,
    pub(super) db: Db,
    pub(super) api: ApiClient,
    pub(super) roots: Vec<Root>,
    pub(super) media: MediaTypes,
    pub(super) pipeline: pipeline::Settings,
    pub(super) scanner: Scanner,
    /// The user's pauses, the engine's waker and the rescans asked for: what the control
    /// socket reaches, across generations (docs/ARCHITECTURE.md#control).
    pub(super) control: Control,
    /// The daemon's control socket task, and what stops it (the daemon only, not `scan`).
    pub(super) control_socket: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl Started {
    /// Stops listening for commands and removes the socket (before the lock goes).
    pub(super) async fn close_control(&mut self) {
        if let Some((stop, task)) = self.control_socket.take() {
            stop.cancel();
            let _ = task.await;
        }
    }
}

/// Creates the state directory (private to the user) and takes its lock.
pub(super) fn open_state(state: &StateConfig) -> Result<(StateLock, Db), DaemonError> {
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
pub(super) async fn start(
    config: &Config,
    tuning: &Tuning,
    retry_connect: bool,
    shutdown: &CancellationToken,
) -> Result<Option<Started>, DaemonError> {
    let opened = open(config, retry_connect, shutdown).await?;
    finish(opened, config, tuning, retry_connect, shutdown).await
}

/// What start-up holds before it connects.
pub(super) struct Opened {
    pub(super) lock: Option<StateLock>,
    db: Db,
    roots: Vec<Root>,
    hold: Hold,
    control: Control,
    control_socket: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

/// The local half of start-up: roots, state directory, lock, database, control socket.
pub(super) async fn open(
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
pub(super) async fn finish(
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

pub(super) async fn connect(
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
