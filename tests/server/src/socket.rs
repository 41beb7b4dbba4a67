//! The socket.io endpoint (docs/SERVER-API.md#12-live-events): Engine.IO v4 over a plain
//! WebSocket at `{api}/socket.io/?EIO=4&transport=websocket`.
//!
//! The flow mirrors a socket.io 4 server with Immich's gateway: after the upgrade the server
//! sends the open packet `0{"sid",...}`; the client joins the root namespace with `40`; the
//! server acknowledges with `40{"sid"}` and only then authenticates from the upgrade request's
//! headers (never the query). On failure it emits `42["error","unauthorized"]` and the
//! disconnect packet `41`, and leaves the WebSocket itself open (as both real servers do); on
//! success it emits `on_server_version` (the whole `SemVer` object) and the socket joins its
//! user's room. A socket that failed auth stays in no room: it gets pings, never events.
//! The server pings (`2`) every ping interval and closes the socket when no pong (`3`)
//! arrives within the ping timeout. EIO=3 and transports other than `websocket` are refused
//! with engine.io's 400 JSON errors.

use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use crate::auth::{authenticate, url_param, Creds};
use crate::error::ApiError;
use crate::info::semver_json;
use crate::state::{random_secret, App, SocketCmd, SocketEntry};

/// Events queued for one socket before it misses some.
const SOCKET_QUEUE: usize = 256;
const MAX_PAYLOAD: u64 = 1_000_000;

fn engine_error(code: u8, message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "code": code, "message": message })),
    )
        .into_response()
}

fn short_id() -> String {
    random_secret().chars().take(20).collect()
}

pub(crate) async fn endpoint(
    State(app): State<App>,
    headers: HeaderMap,
    uri: Uri,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let query = uri.query().unwrap_or_default();
    if url_param(query, "transport").as_deref() != Some("websocket") {
        return engine_error(0, "Transport unknown");
    }
    if url_param(query, "EIO").as_deref() != Some("4") {
        return engine_error(5, "Unsupported protocol version");
    }
    let Ok(ws) = ws else {
        return engine_error(3, "Bad request");
    };
    if app.lock().faults.reject_websockets {
        return ApiError::new(
            503,
            "WebSocket connections are rejected (test server fault)",
        )
        .into_response();
    }
    // Header credentials only: `?apiKey=` does not work on the socket.
    let creds = Creds::from_request(&headers, None);
    ws.on_upgrade(move |socket| run(app, socket, creds))
}

async fn send(socket: &mut WebSocket, text: String) -> bool {
    socket.send(Message::Text(text.into())).await.is_ok()
}

async fn run(app: App, mut socket: WebSocket, creds: Creds) {
    let interval = app.cfg.ping_interval;
    let timeout = app.cfg.ping_timeout;
    let open = json!({
        "sid": short_id(),
        "upgrades": [],
        "pingInterval": interval.as_millis() as u64,
        "pingTimeout": timeout.as_millis() as u64,
        "maxPayload": MAX_PAYLOAD,
    });
    if !send(&mut socket, format!("0{open}")).await {
        return;
    }
    let (tx, mut rx) = mpsc::channel(SOCKET_QUEUE);
    let key = {
        let mut db = app.lock();
        db.next_socket += 1;
        let key = db.next_socket;
        db.sockets.insert(key, SocketEntry { user_id: None, tx });
        key
    };
    // `offline` drops the socket with its connection, without a close frame.
    let gone = app.connection_token();
    tokio::select! {
        _ = serve(&app, &mut socket, &mut rx, key, &creds, interval, timeout) => {}
        _ = gone.cancelled() => {}
    }
    app.lock().sockets.remove(&key);
}

async fn serve(
    app: &App,
    socket: &mut WebSocket,
    rx: &mut mpsc::Receiver<SocketCmd>,
    key: u64,
    creds: &Creds,
    interval: Duration,
    timeout: Duration,
) {
    let mut next_ping = Instant::now() + interval;
    let mut pong_deadline: Option<Instant> = None;
    loop {
        let wake = pong_deadline.unwrap_or(next_ping);
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = sleep_until(wake) => {
                if pong_deadline.is_some() {
                    tracing::debug!("socket ping timeout");
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
                if !send(socket, "2".to_string()).await {
                    return;
                }
                pong_deadline = Some(Instant::now() + timeout);
            }
            cmd = rx.recv() => match cmd {
                Some(SocketCmd::Send(frame)) => {
                    if !send(socket, frame).await {
                        return;
                    }
                }
                Some(SocketCmd::Close) | None => {
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
            },
            msg = socket.recv() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                    Some(Ok(_)) => continue,
                };
                let text = text.as_str();
                if text == "3" {
                    pong_deadline = None;
                    next_ping = Instant::now() + interval;
                } else if text == "1" || text.starts_with("41") {
                    return;
                } else if let Some(rest) = text.strip_prefix("40") {
                    if rest.starts_with('/') {
                        // Only the root namespace exists.
                        let ns = rest.split(',').next().unwrap_or(rest);
                        if !send(socket, format!("44{ns},{{\"message\":\"Invalid namespace\"}}")).await {
                            return;
                        }
                        continue;
                    }
                    if !connect(app, socket, key, creds).await {
                        return;
                    }
                }
                // Client events (`42[...]`) are ignored: the server only pushes.
            }
        }
    }
}

/// Handles the namespace connect: ack, then authenticate like Immich's gateway does.
async fn connect(app: &App, socket: &mut WebSocket, key: u64, creds: &Creds) -> bool {
    let sid = short_id();
    if !send(socket, format!("40{}", json!({ "sid": sid }))).await {
        return false;
    }
    let user = {
        let mut db = app.lock();
        // `all` is the default permission of the socket's authentication.
        let user = authenticate(&db, creds, Some("all"))
            .ok()
            .map(|a| a.user_id);
        if let (Some(user), Some(entry)) = (&user, db.sockets.get_mut(&key)) {
            entry.user_id = Some(user.clone());
        }
        user
    };
    if user.is_none() {
        // socket.io disconnects the namespace; the engine.io connection stays open until the
        // client closes it.
        return send(socket, "42[\"error\",\"unauthorized\"]".to_string()).await
            && send(socket, "41".to_string()).await;
    }
    let event = json!(["on_server_version", semver_json(app)]);
    send(socket, format!("42{event}")).await
}
