//! The live-event listener: keeps the socket of [`crate::api::socket`] open and turns its
//! typed events into mirror [`Change`]s.
//!
//! Events become changes on a bounded channel; when it is full the event is dropped and a
//! pull is asked for instead, since a pull recovers anything missed. Every (re)connect asks
//! for a pull too, for the same reason. Reconnects back off (capped, jittered). A refusal of
//! the credentials is said once: live events then need an `all` key or a password login,
//! and the mirror runs on pulls alone (retrying the socket rarely).
//!
//! A connect also tells the engine that the server answers ([`Waker::server_answered`]), so
//! that an outage of the uploads ends at once rather than at its next probe.
//!
//! Owns: reconnect policy, what an event means for the mirror, recording the socket state.
//! Must not: speak the wire protocol (that is `crate::api`), put a secret in a log line, or
//! stop the daemon.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, EventSocket, Incoming, ServerEvent, SocketError};
use crate::backoff::{jitter, Backoff};
use crate::db::mirror::Change;
use crate::db::{now_ms, Db};
use crate::pipeline::Waker;

use crate::db::meta::{self, SocketRecord, SocketState};
use crate::human;

/// Reconnects wait 500 ms, doubling up to a minute.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
/// After the server refused the credentials, the socket is tried again this rarely (a key
/// may gain `all`, a session may be renewed by a new login).
const UNAUTHORIZED_RETRY: Duration = Duration::from_secs(15 * 60);

/// How one connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Cancelled,
    /// Lost or never made; worth reconnecting.
    Lost(String),
    /// The server refused the credentials.
    Unauthorized(String),
}

impl From<SocketError> for End {
    fn from(e: SocketError) -> End {
        match e {
            SocketError::Lost(reason) => End::Lost(reason),
            SocketError::Unauthorized(detail) => End::Unauthorized(detail),
        }
    }
}

/// The mirror changes an event means (`me` filters out anything not the user's own).
fn changes_of(event: ServerEvent, me: &str) -> Vec<Change> {
    match event {
        ServerEvent::UploadSuccess(a) | ServerEvent::AssetUpdate(a)
            if me.is_empty() || a.owner_id.is_empty() || a.owner_id == me =>
        {
            vec![Change::Upsert(*a)]
        }
        ServerEvent::Trash(ids) => ids.into_iter().map(Change::Trashed).collect(),
        ServerEvent::Restore(ids) => ids.into_iter().map(Change::Restored).collect(),
        ServerEvent::Delete(ids) => ids
            .into_iter()
            .map(|id| Change::Deleted { id, checksum: None })
            .collect(),
        ServerEvent::UploadSuccess(_)
        | ServerEvent::AssetUpdate(_)
        | ServerEvent::ServerVersion(_)
        | ServerEvent::Other(_) => Vec::new(),
    }
}

/// What the listener works with: changes go to `tx`; pulls are asked for through
/// `pull_now`; `engine` is told each connect; `pull_interval` is for the message when the
/// socket cannot be used.
pub(super) struct Ctx {
    pub(super) api: ApiClient,
    pub(super) pull_interval: Duration,
    pub(super) tx: mpsc::Sender<Change>,
    pub(super) pull_now: Arc<Notify>,
    pub(super) db: Db,
    /// The engine's, told when the socket connects.
    pub(super) engine: Option<Waker>,
    /// Cancelled when the API root or dialect moved ([`super::upgrade`]): the daemon then
    /// ends the generation (and this listener with it) and connects again.
    pub(super) moved: CancellationToken,
}

impl Ctx {
    async fn record(&self, state: SocketState) {
        let rec = SocketRecord {
            at_ms: now_ms(),
            state,
        };
        if let Err(e) = self.db.call(move |c| meta::set_socket(c, &rec)).await {
            tracing::debug!(error = %e, "cannot record the socket state");
        }
    }
}

/// Runs the listener until `shutdown`, reconnecting as needed.
pub(super) async fn run(ctx: Ctx, shutdown: CancellationToken) {
    let mut attempt = 0u32;
    let mut told_unauthorized = false;
    loop {
        let mut was_up = false;
        let end = session(&ctx, &shutdown, &mut was_up).await;
        let wait = match end {
            End::Cancelled => {
                ctx.record(SocketState::Down {
                    reason: "stopped".to_owned(),
                })
                .await;
                return;
            }
            End::Lost(reason) => {
                if was_up {
                    attempt = 0;
                    tracing::warn!("live events interrupted: {reason}; reconnecting");
                } else if attempt == 0 {
                    tracing::warn!("live events: cannot connect: {reason}; trying again");
                } else {
                    tracing::debug!("live events: cannot connect: {reason}");
                }
                ctx.record(SocketState::Down { reason }).await;
                attempt += 1;
                // A socket that was up and now cannot connect again may have moved with the
                // API (a restart into another dialect, the same version or not): discovery
                // says, one request per failed attempt, spaced by the backoff.
                if attempt >= 2 && super::upgrade::api_moved(&ctx.api).await {
                    ctx.moved.cancel();
                }
                RECONNECT.delay(attempt)
            }
            End::Unauthorized(detail) => {
                if !told_unauthorized {
                    told_unauthorized = true;
                    tracing::warn!(
                        "the server refused live events ({detail}): they need an API key with \
                         the `all` permission or a password login; the mirror is updated by \
                         pulls every {}",
                        human::duration(ctx.pull_interval)
                    );
                }
                ctx.record(SocketState::Unauthorized { detail }).await;
                attempt = 0;
                jitter(UNAUTHORIZED_RETRY)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => {
                ctx.record(SocketState::Down {
                    reason: "stopped".to_owned(),
                })
                .await;
                return;
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One connection, from the handshake to its end. `up` is set once it is connected.
async fn session(ctx: &Ctx, shutdown: &CancellationToken, up: &mut bool) -> End {
    let mut socket: EventSocket = tokio::select! {
        _ = shutdown.cancelled() => return End::Cancelled,
        r = ctx.api.open_events() => match r {
            Ok(s) => s,
            Err(e) => return e.into(),
        },
    };
    let me = ctx.api.user_id().to_owned();
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => {
                socket.leave().await;
                return End::Cancelled;
            }
            r = socket.next() => r,
        };
        match incoming {
            Err(e) => return e.into(),
            Ok(Incoming::Connected) => connected(ctx, up).await,
            Ok(Incoming::Event(event)) => {
                if let ServerEvent::ServerVersion(v) = &event {
                    let verdict = super::upgrade::server_version(&ctx.db, &ctx.api, v).await;
                    if matches!(verdict, super::upgrade::Verdict::Moved { .. }) {
                        ctx.moved.cancel();
                    }
                }
                for change in changes_of(event, &me) {
                    match ctx.tx.try_send(change) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            // Dropped; the pull asked for here brings it back.
                            ctx.pull_now.notify_one();
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return End::Cancelled,
                    }
                }
            }
        }
    }
}

/// The socket is up: say so, tell the engine the server answers, record it, and ask for a
/// pull (events may have been missed while it was down).
async fn connected(ctx: &Ctx, up: &mut bool) {
    if *up {
        return;
    }
    *up = true;
    tracing::info!("live events connected");
    if let Some(w) = &ctx.engine {
        w.server_answered();
    }
    ctx.record(SocketState::Connected).await;
    ctx.pull_now.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AssetId;
    use serde_json::{json, Value};

    /// The changes of an event as the server sends it (name and payload).
    fn changes(name: &str, payload: Value, me: &str) -> Vec<Change> {
        changes_of(ServerEvent::parse(name, payload), me)
    }

    #[test]
    fn events_become_mirror_changes() {
        let changes_of = changes;
        let id = |s: &str| AssetId(s.into());
        assert_eq!(
            changes_of("on_asset_trash", json!(["a", "b"]), "me"),
            vec![Change::Trashed(id("a")), Change::Trashed(id("b"))]
        );
        assert_eq!(
            changes_of("on_asset_restore", json!(["a"]), "me"),
            vec![Change::Restored(id("a"))]
        );
        assert_eq!(
            changes_of("on_asset_delete", json!("a"), "me"),
            vec![Change::Deleted {
                id: id("a"),
                checksum: None
            }]
        );
        let asset = json!({"id": "a", "ownerId": "me", "checksum": "qZk+NkcGgWq6PiVxeFDCbJzQ2J0="});
        assert!(matches!(
            changes_of("on_upload_success", asset.clone(), "me").as_slice(),
            [Change::Upsert(a)] if a.id == id("a")
        ));
        assert!(changes_of("on_upload_success", asset, "someone else").is_empty());
        assert!(changes_of("on_server_version", json!({"major": 2}), "me").is_empty());
    }

    #[test]
    fn reconnects_back_off_to_a_cap() {
        for attempt in 1..30 {
            let d = RECONNECT.delay(attempt);
            assert!(d <= RECONNECT.max, "{attempt}: {d:?}");
            assert!(d >= RECONNECT.initial / 2, "{attempt}: {d:?}");
        }
        assert!(RECONNECT.delay(30) >= RECONNECT.max / 2);
    }
}
