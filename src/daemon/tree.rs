//! One account's daemon, from its opened state to its stop: connect, then the task tree
//! (engine, scanner, watcher, mirror, library, after-upload, pull) under one cancellation
//! root, in generations: a generation ends for storage trouble (the state database cannot be
//! written), a reload, or the server's API moving, and the next one starts
//! (docs/ARCHITECTURE.md#task-tree).
//!
//! Settings go one way: each stage is handed its own section of the resolved [`Config`]
//! (`&config.state` to the database, `&config.mirror` to the mirror, `&config.scan` to the
//! scanner…), and this module only wires the stages together.
//!
//! Must not: parse the command line, print, or exit the process; open the state directory
//! or the database (start-up does, and `Started` holds them).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::error::DaemonError;
use super::scan_command::fresh_count;
use super::startup::{finish, Opened, Started};
use super::tuning::Tuning;
use super::{moved, side};
use crate::backoff;
use crate::config::{Config, WatchMode};
use crate::control::reload::{self, Reloaded};
use crate::control::RescanOf;
use crate::db::queue;
use crate::db::{now_ms, DbError};
use crate::library::Library;
use crate::live::Live;
use crate::mirror::Mirror;
use crate::pipeline::{Engine, Mode, Waker};
use crate::scan::walk::Root;
use crate::scan::Scanner;
use crate::service;
use crate::watch::Watcher;

/// How long the first scan waits for the watcher to have every root watched.
const WATCH_READY_MAX: Duration = Duration::from_secs(60);

/// One account's daemon, from its opened state to its stop: connect, then the task tree
/// in generations. `live` is the account's own (its counters); `account` its name
/// (`None`: `[server]`'s), for its alerts.
pub(super) async fn run_account(
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
