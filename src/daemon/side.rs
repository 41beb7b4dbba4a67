//! The daemon's optional side services: the HTTP endpoint (`[metrics]`), the live state it
//! shows, the progress lines and the alerts (`[alerts]`). None of them is critical: they
//! stop with the daemon, and none stops it.
//!
//! Owns: starting them, in the order the daemon needs. The endpoint (one for the agent)
//! answers from the start (a server down at boot is what `/healthz` is for); what reads a
//! state database or the server starts per account, once that account has connected.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use super::error::DaemonError;
use super::tuning::Tuning;
use crate::api::ApiClient;
use crate::config::{AlertsConfig, Config};
use crate::db::Db;
use crate::live::Live;
use crate::service;

/// How long a loop of the daemon may go without a heartbeat before `/healthz` says it
/// stopped making progress (when no systemd watchdog sets its own budget).
const HEALTH_LOOP_BUDGET: Duration = Duration::from_secs(120);

/// The running side services: dropped, they stop.
pub(super) struct Side {
    _http: Option<AbortOnDropHandle<()>>,
}

/// One account's side services (progress lines, live record, alerts): dropped, they stop.
pub(super) struct AccountSide {
    _progress: AbortOnDropHandle<()>,
    _recorder: AbortOnDropHandle<()>,
    alerts: Option<AbortOnDropHandle<()>>,
    /// What a new `[alerts]` (SIGHUP) starts the alerts again with.
    db: Db,
    state_dir: std::path::PathBuf,
    every: std::time::Duration,
    account: Option<String>,
    shutdown: CancellationToken,
}

impl AccountSide {
    /// The account's alerts as `config` says (none without a URL), in place of the running
    /// ones (docs/ARCHITECTURE.md#reload). The record of incidents told is in the account's
    /// database, so an open incident is not told again, and its resolve goes to the new URL.
    pub(super) fn set_alerts(&mut self, config: &AlertsConfig) {
        self.alerts =
            crate::alerts::Alerts::new(config, self.db.clone(), self.state_dir.clone(), self.every)
                .map(|a| {
                    AbortOnDropHandle::new(tokio::spawn(
                        a.for_account(self.account.clone())
                            .run(self.shutdown.clone())
                            .in_current_span(),
                    ))
                });
    }
}

/// Starts the agent's endpoint at once (a server down at boot is what `/healthz` is for);
/// each account starts its own [`account`] services once connected.
pub(super) async fn start(
    config: &Config,
    live: &Arc<Live>,
    shutdown: &CancellationToken,
) -> Result<Side, DaemonError> {
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
    Ok(Side { _http: http })
}

/// The side services of one connected account (`config` its projection, `live` its own):
/// its progress lines, its live record in its own database, its alerts
/// (docs/ARCHITECTURE.md#accounts).
pub(super) fn account(
    config: &Config,
    tuning: &Tuning,
    live: &Arc<Live>,
    account: Option<&str>,
    db: Db,
    api: ApiClient,
    shutdown: &CancellationToken,
) -> AccountSide {
    let mut side = AccountSide {
        _progress: AbortOnDropHandle::new(tokio::spawn(
            crate::progress::report(
                db.clone(),
                live.stats(),
                api,
                tuning.progress_every,
                shutdown.clone(),
            )
            .in_current_span(),
        )),
        _recorder: AbortOnDropHandle::new(tokio::spawn(
            live.clone()
                .record(db.clone(), shutdown.clone())
                .in_current_span(),
        )),
        alerts: None,
        db,
        state_dir: config.state.dir.clone(),
        every: tuning.alert_check,
        account: account.map(str::to_owned),
        shutdown: shutdown.clone(),
    };
    side.set_alerts(&config.alerts);
    side
}
