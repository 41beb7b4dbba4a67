//! The daemon's optional side services: the HTTP endpoint (`[metrics]`), the live state it
//! shows, the progress lines and the alerts (`[alerts]`). None of them is critical: they
//! stop with the daemon, and none stops it.
//!
//! Owns: starting them, in the order the daemon needs. The endpoint answers from the start
//! (a server down at boot is what `/healthz` is for); what reads the state database or the
//! server starts once the daemon has connected.

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::{DaemonError, Tuning, HEALTH_LOOP_BUDGET};
use crate::api::ApiClient;
use crate::config::Config;
use crate::db::Db;
use crate::live::Live;
use crate::service;

/// The running side services: dropped, they stop.
pub(super) struct Side {
    _http: Option<AbortOnDropHandle<()>>,
    _connected: AbortOnDropHandle<()>,
}

/// What the daemon hands the side services once it has connected.
pub(super) type Connected = oneshot::Sender<(Db, ApiClient)>;

/// Starts the side services: the endpoint at once, the rest when the daemon sends its
/// database and connection on the returned [`Connected`] (never, if it stops first).
pub(super) async fn start(
    config: &Config,
    tuning: &Tuning,
    live: &Arc<Live>,
    shutdown: &CancellationToken,
) -> Result<(Side, Connected), DaemonError> {
    // Its tasks end with `shutdown`, like every other.
    let http = match config.metrics.listen {
        Some(addr) => {
            // /healthz tells a loop that stopped making progress (docs/STATUS.md#healthz).
            service::watch_loops(HEALTH_LOOP_BUDGET);
            let endpoint = crate::http::Endpoint::bind(addr, config, live.clone())
                .await
                .map_err(|source| DaemonError::Listen { addr, source })?;
            live.set_http(endpoint.local_addr());
            tracing::info!(
                "status page at http://{}/ (/metrics, /healthz, /status.json)",
                endpoint.local_addr()
            );
            Some(AbortOnDropHandle::new(tokio::spawn(
                endpoint.serve(shutdown.clone()),
            )))
        }
        None => None,
    };
    let (connected, started) = oneshot::channel::<(Db, ApiClient)>();
    let (live, shutdown) = (live.clone(), shutdown.clone());
    let (alerts_config, state_dir) = (config.alerts.clone(), config.state.dir.clone());
    let (progress_every, alert_check) = (tuning.progress_every, tuning.alert_check);
    let after_connect = async move {
        let Ok((db, api)) = started.await else {
            return;
        };
        let _progress = AbortOnDropHandle::new(tokio::spawn(crate::progress::report(
            db.clone(),
            live.stats(),
            api,
            progress_every,
            shutdown.clone(),
        )));
        let _recorder = AbortOnDropHandle::new(tokio::spawn(
            live.clone().record(db.clone(), shutdown.clone()),
        ));
        let _alerts = crate::alerts::Alerts::new(&alerts_config, db, state_dir, alert_check)
            .map(|a| AbortOnDropHandle::new(tokio::spawn(a.run(shutdown.clone()))));
        shutdown.cancelled().await;
    };
    Ok((
        Side {
            _http: http,
            _connected: AbortOnDropHandle::new(tokio::spawn(after_connect)),
        },
        connected,
    ))
}
