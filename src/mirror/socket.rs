//! The live-event listener: a socket.io client (Engine.IO v4, Socket.IO v5) over a plain
//! WebSocket, as Immich serves it (API.md §6).
//!
//! Flow: connect to `{api}/socket.io/?EIO=4&transport=websocket` with the credential in a
//! header (never `?apiKey=`, which the server ignores); receive the open packet `0{…}` (ping
//! interval and timeout); join the root namespace with `40`; the server answers `40{sid}`
//! and then authenticates, emitting `42["error","unauthorized"]` and disconnecting on
//! failure, `on_server_version` on success. Pings (`2`) are answered with pongs (`3`); a
//! server silent for longer than ping interval + ping timeout is taken for gone.
//!
//! Events become mirror [`Change`]s on a bounded channel; when it is full the event is
//! dropped and a pull is asked for instead, since a pull recovers anything missed. Every
//! (re)connect asks for a pull too, for the same reason. Reconnects back off (capped,
//! jittered). A refusal of the credentials is said once: live events then need an `all` key
//! or a password login, and the mirror runs on pulls alone (retrying the socket rarely).
//!
//! Must not: put a secret in a URL or a log line, or stop the daemon.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::Value;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::Connector;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, RemoteAsset};
use crate::db::mirror::Change;
use crate::db::{self, now_ms, Db};
use crate::model::AssetId;

use super::{humanize, META_SOCKET};

/// The first wait before a reconnect; it doubles up to [`RECONNECT_MAX`].
const RECONNECT_INITIAL: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(60);
/// After the server refused the credentials, the socket is tried again this rarely (a key
/// may gain `all`, a session may be renewed by a new login).
const UNAUTHORIZED_RETRY: Duration = Duration::from_secs(15 * 60);
/// A joined socket that has not been refused within this long (or that got its first
/// event or ping) counts as connected.
const CONFIRM_AFTER: Duration = Duration::from_secs(2);
/// socket.io's defaults, for an open packet that does not say.
const DEFAULT_PING_INTERVAL: Duration = Duration::from_millis(25_000);
const DEFAULT_PING_TIMEOUT: Duration = Duration::from_millis(20_000);
/// Largest frame accepted (the server's `maxHttpBufferSize` is 1 MB).
const MAX_MESSAGE: usize = 4 << 20;

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct SocketConfig {
    /// `ws(s)://…/socket.io/?EIO=4&transport=websocket` ([`ApiClient::ws_url`]).
    pub url: String,
    /// Extra CA for `wss://`, as the HTTP client trusts it.
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    /// For the message when the socket cannot be used.
    pub pull_interval: Duration,
}

/// A TLS configuration with the trust of the HTTP client: the webpki roots (reqwest's
/// `rustls-tls`) plus the certificates of `ca_file`.
pub fn tls_config(ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("server.ca_file {}: {e}", path.display()))?;
        let mut n = 0;
        for cert in certs {
            let cert = cert.map_err(|e| format!("server.ca_file {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("server.ca_file {}: {e}", path.display()))?;
            n += 1;
        }
        if n == 0 {
            return Err(format!(
                "server.ca_file {}: holds no PEM certificate",
                path.display()
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// How one connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Cancelled,
    /// Lost or never made; worth reconnecting.
    Lost(String),
    /// The server refused the credentials.
    Unauthorized(String),
}

/// One Engine.IO / Socket.IO packet, as far as a listening client cares.
#[derive(Debug, PartialEq)]
enum Packet {
    /// `0{…}`
    Open(Value),
    /// `1`
    Close,
    /// `2`
    Ping,
    /// `40{…}`
    Joined,
    /// `41`
    Disconnected,
    /// `44{…}`
    ConnectError(String),
    /// `42["name", payload]`
    Event(String, Value),
    Other,
}

fn parse_packet(text: &str) -> Packet {
    match text.as_bytes().first() {
        Some(b'0') => Packet::Open(serde_json::from_str(&text[1..]).unwrap_or(Value::Null)),
        Some(b'1') => Packet::Close,
        Some(b'2') => Packet::Ping,
        Some(b'4') => {
            let rest = &text[1..];
            match rest.as_bytes().first() {
                Some(b'0') => Packet::Joined,
                Some(b'1') => Packet::Disconnected,
                Some(b'4') => {
                    let v: Value = serde_json::from_str(&rest[1..]).unwrap_or(Value::Null);
                    let msg = v
                        .get("message")
                        .and_then(Value::as_str)
                        .map_or_else(|| rest[1..].to_owned(), str::to_owned);
                    Packet::ConnectError(msg)
                }
                Some(b'2') => {
                    // An event may carry an ack id before the array: `42<id>[...]`.
                    let body = rest[1..].trim_start_matches(|c: char| c.is_ascii_digit());
                    match serde_json::from_str::<Value>(body) {
                        Ok(Value::Array(mut items)) if !items.is_empty() => {
                            let payload = if items.len() > 1 {
                                items.swap_remove(1)
                            } else {
                                Value::Null
                            };
                            match items.first().and_then(Value::as_str) {
                                Some(name) => Packet::Event(name.to_owned(), payload),
                                None => Packet::Other,
                            }
                        }
                        _ => Packet::Other,
                    }
                }
                _ => Packet::Other,
            }
        }
        _ => Packet::Other,
    }
}

/// The mirror changes an event means (`me` filters out anything not the user's own).
fn changes_of(name: &str, payload: Value, me: &str) -> Vec<Change> {
    let ids = |v: &Value| -> Vec<AssetId> {
        match v {
            Value::Array(list) => list
                .iter()
                .filter_map(Value::as_str)
                .map(|s| AssetId(s.to_owned()))
                .collect(),
            Value::String(s) => vec![AssetId(s.clone())],
            _ => Vec::new(),
        }
    };
    match name {
        "on_upload_success" | "on_asset_update" => match RemoteAsset::from_json(payload) {
            Some(a) if me.is_empty() || a.owner_id.is_empty() || a.owner_id == me => {
                vec![Change::Upsert(a)]
            }
            _ => Vec::new(),
        },
        "on_asset_trash" => ids(&payload).into_iter().map(Change::Trashed).collect(),
        "on_asset_restore" => ids(&payload).into_iter().map(Change::Restored).collect(),
        "on_asset_delete" => ids(&payload)
            .into_iter()
            .map(|id| Change::Deleted { id, checksum: None })
            .collect(),
        _ => Vec::new(),
    }
}

struct Ctx {
    api: ApiClient,
    cfg: SocketConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    tx: mpsc::Sender<Change>,
    pull_now: Arc<Notify>,
    db: Db,
}

impl Ctx {
    async fn record(&self, state: &str) {
        let v = format!("{} {state}", now_ms());
        if let Err(e) = self
            .db
            .call(move |c| db::meta_set(c, META_SOCKET, &v))
            .await
        {
            tracing::debug!(error = %e, "cannot record the socket state");
        }
    }
}

/// Runs the listener until `shutdown`, reconnecting as needed. Changes go to `tx`; pulls
/// are asked for through `pull_now`.
pub async fn run(
    api: ApiClient,
    cfg: SocketConfig,
    db: Db,
    tx: mpsc::Sender<Change>,
    pull_now: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let tls = if cfg.url.starts_with("wss://") {
        match tls_config(cfg.ca_file.as_deref()) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!("live events are off: {e}");
                return;
            }
        }
    } else {
        None
    };
    let ctx = Ctx {
        api,
        cfg,
        tls,
        tx,
        pull_now,
        db,
    };
    let mut attempt = 0u32;
    let mut told_unauthorized = false;
    loop {
        let mut was_up = false;
        let end = session(&ctx, &shutdown, &mut was_up).await;
        let wait = match end {
            End::Cancelled => {
                ctx.record("down stopped").await;
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
                ctx.record(&format!("down {reason}")).await;
                attempt += 1;
                backoff(attempt)
            }
            End::Unauthorized(detail) => {
                if !told_unauthorized {
                    told_unauthorized = true;
                    tracing::warn!(
                        "the server refused live events ({detail}): they need an API key with \
                         the `all` permission or a password login; the mirror is updated by \
                         pulls every {}",
                        humanize(ctx.cfg.pull_interval)
                    );
                }
                ctx.record(&format!("unauthorized {detail}")).await;
                attempt = 0;
                jitter(UNAUTHORIZED_RETRY)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => {
                ctx.record("down stopped").await;
                return;
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// `RECONNECT_INITIAL · 2^(attempt-1)`, capped, of which the upper half is random.
fn backoff(attempt: u32) -> Duration {
    let base = RECONNECT_INITIAL
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(RECONNECT_MAX);
    jitter(base)
}

fn jitter(base: Duration) -> Duration {
    let half = base / 2;
    half + rand::rng().random_range(Duration::ZERO..=half)
}

/// The `Lost` reason for a failed handshake; 401/403 are a refusal of the credentials.
fn connect_error(e: tungstenite::Error) -> End {
    match &e {
        tungstenite::Error::Http(resp) if matches!(resp.status().as_u16(), 401 | 403) => {
            End::Unauthorized(format!("HTTP {}", resp.status().as_u16()))
        }
        tungstenite::Error::Http(resp) => End::Lost(format!("HTTP {}", resp.status())),
        _ => End::Lost(e.to_string()),
    }
}

/// One connection, from the handshake to its end. `up` is set once it is connected.
async fn session(ctx: &Ctx, shutdown: &CancellationToken, up: &mut bool) -> End {
    let mut request = match ctx.cfg.url.as_str().into_client_request() {
        Ok(r) => r,
        Err(e) => return End::Lost(format!("bad socket URL: {e}")),
    };
    for (name, value) in ctx.api.auth_headers().iter() {
        request.headers_mut().insert(name.clone(), value.clone());
    }
    let connector = match &ctx.tls {
        Some(t) => Connector::Rustls(t.clone()),
        None => Connector::Plain,
    };
    let ws_config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(ws_config),
        true,
        Some(connector),
    );
    let (mut ws, _) = tokio::select! {
        _ = shutdown.cancelled() => return End::Cancelled,
        r = tokio::time::timeout(ctx.cfg.connect_timeout, connect) => match r {
            Err(_) => return End::Lost("timed out connecting".to_owned()),
            Ok(Err(e)) => return connect_error(e),
            Ok(Ok(pair)) => pair,
        },
    };

    // The open packet says how often the server pings.
    let first = tokio::select! {
        _ = shutdown.cancelled() => return End::Cancelled,
        r = tokio::time::timeout(ctx.cfg.connect_timeout, ws.next()) => r,
    };
    let open = match first {
        Ok(Some(Ok(Message::Text(t)))) => parse_packet(t.as_str()),
        Ok(Some(Ok(other))) => return End::Lost(format!("unexpected first frame {other:?}")),
        Ok(Some(Err(e))) => return End::Lost(e.to_string()),
        Ok(None) => return End::Lost("closed before the open packet".to_owned()),
        Err(_) => return End::Lost("no open packet".to_owned()),
    };
    let Packet::Open(info) = open else {
        return End::Lost("the server did not open an Engine.IO session".to_owned());
    };
    let ms = |key: &str, default: Duration| {
        info.get(key)
            .and_then(Value::as_u64)
            .map_or(default, Duration::from_millis)
    };
    let silence = ms("pingInterval", DEFAULT_PING_INTERVAL)
        + ms("pingTimeout", DEFAULT_PING_TIMEOUT)
        + Duration::from_secs(1);
    if let Err(e) = ws.send(Message::text("40")).await {
        return End::Lost(e.to_string());
    }

    let me = ctx.api.user_id().to_owned();
    let mut last_heard = Instant::now();
    let mut confirm_at: Option<Instant> = None;
    loop {
        let mut deadline = last_heard + silence;
        if let (false, Some(t)) = (*up, confirm_at) {
            deadline = deadline.min(t);
        }
        let msg = tokio::select! {
            _ = shutdown.cancelled() => {
                // Leave politely, but never let a stuck peer hold up the stop.
                let bye = async {
                    let _ = ws.send(Message::text("41")).await;
                    let _ = ws.close(None).await;
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
                return End::Cancelled;
            }
            _ = tokio::time::sleep_until(deadline) => {
                if Instant::now() >= last_heard + silence {
                    return End::Lost(format!(
                        "no ping from the server for {}s",
                        silence.as_secs()
                    ));
                }
                connected(ctx, up).await;
                continue;
            }
            m = ws.next() => m,
        };
        let text = match msg {
            None => return End::Lost("the server closed the connection".to_owned()),
            Some(Err(e)) => return End::Lost(e.to_string()),
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) => {
                return End::Lost("the server closed the connection".to_owned())
            }
            Some(Ok(_)) => {
                last_heard = Instant::now();
                continue;
            }
        };
        last_heard = Instant::now();
        match parse_packet(text.as_str()) {
            Packet::Ping => {
                if let Err(e) = ws.send(Message::text("3")).await {
                    return End::Lost(e.to_string());
                }
                if confirm_at.is_some() {
                    connected(ctx, up).await;
                }
            }
            Packet::Joined => confirm_at = Some(Instant::now() + CONFIRM_AFTER),
            Packet::ConnectError(m) => {
                return if m.to_ascii_lowercase().contains("auth") {
                    End::Unauthorized(m)
                } else {
                    End::Lost(format!("the server refused the connection: {m}"))
                };
            }
            Packet::Disconnected => return End::Lost("the server ended the session".to_owned()),
            Packet::Close => return End::Lost("the server closed the session".to_owned()),
            Packet::Event(name, payload) => {
                if name == "error" {
                    let detail = payload.as_str().unwrap_or("error").to_owned();
                    return if detail.to_ascii_lowercase().contains("unauthorized") {
                        End::Unauthorized(detail)
                    } else {
                        End::Lost(format!("the server sent an error: {detail}"))
                    };
                }
                connected(ctx, up).await;
                for change in changes_of(&name, payload, &me) {
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
            Packet::Open(_) | Packet::Other => {}
        }
    }
}

/// The socket is up: say so, record it, and ask for a pull (events may have been missed
/// while it was down).
async fn connected(ctx: &Ctx, up: &mut bool) {
    if *up {
        return;
    }
    *up = true;
    tracing::info!("live events connected");
    ctx.record("connected").await;
    ctx.pull_now.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn packets_of_a_session() {
        assert!(matches!(
            parse_packet(r#"0{"sid":"x","pingInterval":25000,"pingTimeout":20000}"#),
            Packet::Open(v) if v["pingInterval"] == 25000
        ));
        assert_eq!(parse_packet("2"), Packet::Ping);
        assert_eq!(parse_packet(r#"40{"sid":"y"}"#), Packet::Joined);
        assert_eq!(parse_packet("41"), Packet::Disconnected);
        assert_eq!(
            parse_packet(r#"44{"message":"Invalid namespace"}"#),
            Packet::ConnectError("Invalid namespace".into())
        );
        assert_eq!(
            parse_packet(r#"42["on_asset_trash",["a","b"]]"#),
            Packet::Event("on_asset_trash".into(), json!(["a", "b"]))
        );
        assert_eq!(
            parse_packet(r#"4217["on_asset_delete","a"]"#),
            Packet::Event("on_asset_delete".into(), json!("a"))
        );
        assert_eq!(
            parse_packet(r#"42["on_config_update"]"#),
            Packet::Event("on_config_update".into(), Value::Null)
        );
        assert_eq!(parse_packet("42not json"), Packet::Other);
        assert_eq!(parse_packet(""), Packet::Other);
    }

    #[test]
    fn events_become_mirror_changes() {
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
            let d = backoff(attempt);
            assert!(d <= RECONNECT_MAX, "{attempt}: {d:?}");
            assert!(d >= RECONNECT_INITIAL / 2, "{attempt}: {d:?}");
        }
        assert!(backoff(30) >= RECONNECT_MAX / 2);
    }

    #[test]
    fn tls_trust_is_webpki_plus_the_configured_ca() {
        assert!(tls_config(None).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = tls_config(Some(&empty)).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        assert!(tls_config(Some(&dir.path().join("missing.pem"))).is_err());
    }
}
