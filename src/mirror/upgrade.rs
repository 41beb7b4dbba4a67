//! The server reports another version than the one recorded at connect (its socket's
//! `on_server_version`, sent on every connect): it was upgraded, or another server answers
//! at the address. The new version is recorded (for `status`), discovery runs again and the
//! user is told whether the API stayed the same
//! (docs/RELIABILITY.md#the-server-is-upgraded-while-the-daemon-runs). When it moved (another
//! API root or dialect), the caller has the daemon connect again; so too when the socket
//! cannot reconnect and discovery finds the API elsewhere ([`api_moved`]), whatever version
//! the server reports.
//!
//! Must not: speak the wire protocol (discovery is `api`'s), or stop the daemon.

use crate::api::{ApiClient, Dialect};
use crate::db::meta::{self, ServerInfo};
use crate::db::Db;

/// What a version report leads to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The version recorded already.
    Same,
    /// Another version; the API was read again and is the one in use.
    Upgraded { from: Option<String> },
    /// Another version, and the API root or dialect differs from the one in use.
    Moved {
        from: Option<String>,
        api_root: String,
        dialect: Dialect,
    },
    /// Another version; reading the API again failed (it is tried at the next report).
    Unread { from: Option<String> },
}

pub(crate) async fn server_version(db: &Db, api: &ApiClient, reported: &str) -> Verdict {
    let recorded = db.call(|c| meta::server_info(c)).await.ok().flatten();
    let from = recorded.as_ref().and_then(|i| i.version.clone());
    if from.as_deref() == Some(reported) {
        return Verdict::Same;
    }
    let was = from.as_deref().unwrap_or("unknown");
    let verdict = match api.rediscover().await {
        Ok(found) if found.unchanged => {
            tracing::warn!(
                "the server now reports version {reported} (was {was}): it was upgraded while \
                 the daemon ran; its API was read again and is unchanged ({:?} at {})",
                found.dialect,
                found.api_root
            );
            Verdict::Upgraded { from }
        }
        Ok(found) => {
            tracing::error!(
                "the server now reports version {reported} (was {was}) and its API moved: \
                 {:?} at {} instead of {:?} at {}; connecting again to re-read it (work in \
                 flight goes back to the queue; nothing is marked done on the old API's \
                 answers)",
                found.dialect,
                found.api_root,
                api.dialect(),
                api.api_root()
            );
            Verdict::Moved {
                from,
                api_root: found.api_root,
                dialect: found.dialect,
            }
        }
        Err(e) => {
            tracing::warn!(
                "the server now reports version {reported} (was {was}); reading its API \
                 again failed: {e}"
            );
            // Not recorded, so the next report tries again.
            return Verdict::Unread { from };
        }
    };
    let info = ServerInfo {
        dialect: match &verdict {
            Verdict::Moved { dialect, .. } => format!("{dialect:?}").to_lowercase(),
            _ => format!("{:?}", api.dialect()).to_lowercase(),
        },
        version: Some(reported.to_owned()),
    };
    if let Err(e) = db.call(move |c| meta::set_server_info(c, &info)).await {
        tracing::debug!(error = %e, "cannot record the server's version");
    }
    verdict
}

/// Whether discovery now finds the API at another root or in another dialect than `api`
/// uses (said in the log). A server that cannot be reached is no answer: `false`.
pub(crate) async fn api_moved(api: &ApiClient) -> bool {
    match api.rediscover().await {
        Ok(found) if !found.unchanged => {
            tracing::error!(
                "the server came back with its API moved: {:?} at {} instead of {:?} at {}; \
                 connecting again to re-read it (work in flight goes back to the queue)",
                found.dialect,
                found.api_root,
                api.dialect(),
                api.api_root()
            );
            true
        }
        Ok(_) => false,
        Err(e) => {
            tracing::debug!(error = %e, "reading the server's API again failed");
            false
        }
    }
}
