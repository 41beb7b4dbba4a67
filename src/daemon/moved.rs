//! The server's API moved while the daemon ran (another API root or dialect: an upgrade
//! across a major, a restart behind a proxy): the generation has ended, and the daemon connects
//! again, as at start-up, so that discovery re-reads the root and dialect and every task of the
//! next generation uses the new client
//! (docs/RELIABILITY.md#the-server-is-upgraded-while-the-daemon-runs).
//!
//! Must not: forget the catalogue for the same account (it is the same server, reached at a
//! new root), or lose a job in flight (they go back to the queue, as on any restart of a
//! generation).

use tokio_util::sync::CancellationToken;

use super::error::DaemonError;
use super::startup::{connect, Started};
use super::tuning::Tuning;
use crate::config::Config;
use crate::db::meta::{self, ServerIdentity};
use crate::db::{now_ms, queue};
use crate::scan::Scanner;

/// Connects again and puts the new client in `s`. `Ok(false)` when stopped first.
pub(super) async fn reconnect(
    config: &Config,
    tuning: &Tuning,
    s: &mut Started,
    shutdown: &CancellationToken,
) -> Result<bool, DaemonError> {
    tracing::warn!("the server's API moved: connecting again to re-read it");
    let recovered = s.db.call(|c| queue::recover_in_flight(c, now_ms())).await;
    if let Err(e) = recovered {
        tracing::debug!(error = %e, "cannot send the jobs in flight back to the queue");
    }
    let Some(api) = connect(config, tuning, &s.db, true, shutdown).await? else {
        return Ok(false);
    };
    let identity = ServerIdentity {
        api_root: api.api_root().to_owned(),
        user_id: api.user_id().to_owned(),
    };
    let device_override = config.upload.device_id.clone();
    let forgot =
        s.db.call(move |c| {
            let same_user =
                meta::server_identity(c)?.is_some_and(|o| o.user_id == identity.user_id);
            if same_user {
                meta::set_server_identity(c, &identity)?;
                return Ok(false);
            }
            meta::adopt_server(c, &identity, device_override.as_deref(), now_ms())
                .map(|a| a.forgot_previous)
        })
        .await?;
    if forgot {
        tracing::warn!(
            "the configured server or user changed: every file is checked against it again"
        );
    }
    let info = meta::ServerInfo {
        dialect: format!("{:?}", api.dialect()).to_lowercase(),
        version: api.server_version().await.ok(),
    };
    if let Err(e) = s.db.call(move |c| meta::set_server_info(c, &info)).await {
        tracing::debug!(error = %e, "cannot record the server's version");
    }
    let media = match api.media_types().await {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the server's media types; keeping the known list");
            s.media.clone()
        }
    };
    if media != s.media {
        s.scanner = Scanner::new(
            s.db.clone(),
            s.roots.clone(),
            media.clone(),
            &config.scan,
            &config.watch,
        );
        s.media = media;
    }
    api.upload_meter().set_max_rate(config.upload.max_rate);
    tracing::info!(
        "the server's API was re-read: {:?} at {}",
        api.dialect(),
        api.api_root()
    );
    s.api = api;
    Ok(true)
}
