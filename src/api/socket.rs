//! The live-event socket: a socket.io client (Engine.IO v4, Socket.IO v5) over a plain
//! WebSocket, as Immich serves it (docs/SERVER-API.md#12-live-events), yielding typed
//! [`ServerEvent`]s.
//!
//! Flow: connect to `{api}/socket.io/?EIO=4&transport=websocket` with the credential in a
//! header (never `?apiKey=`, which the server ignores) and the client's TLS trust; receive
//! the open packet `0{…}` (ping interval and timeout); join the root namespace with `40`;
//! the server answers `40{sid}` and then authenticates, emitting `42["error","unauthorized"]`
//! and disconnecting on failure, `on_server_version` on success. Pings (`2`) are answered
//! with pongs (`3`); a server silent for longer than ping interval + ping timeout is taken
//! for gone.
//!
//! Owns: the handshake, the framing, ping/pong, telling a refusal of the credentials from a
//! lost connection, and when a joined socket counts as connected. Must not: decide what an
//! event means for the mirror, or when to reconnect (that is `mirror::socket`); put a secret
//! in a URL or a message.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::{dto, ApiClient};
use crate::model::{AssetId, RemoteAsset};

/// A joined socket that has not been refused within this long (or that got its first
/// event or ping) counts as connected.
const CONFIRM_AFTER: Duration = Duration::from_secs(2);
/// socket.io's defaults, for an open packet that does not say.
const DEFAULT_PING_INTERVAL: Duration = Duration::from_millis(25_000);
const DEFAULT_PING_TIMEOUT: Duration = Duration::from_millis(20_000);
/// The longest ping interval or timeout believed from a server (issue 13, fuzzing).
const MAX_PING: Duration = Duration::from_secs(10 * 60);
/// Largest frame accepted (the server's `maxHttpBufferSize` is 1 MB).
const MAX_MESSAGE: usize = 4 << 20;
/// How long leaving politely may take before the connection is just dropped.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the server told us, as far as a backup client cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerEvent {
    /// `on_upload_success`: an asset was created (by any client of the user). Boxed: an
    /// asset is ten times the size of the other variants.
    UploadSuccess(Box<RemoteAsset>),
    /// `on_asset_update`: an asset changed.
    AssetUpdate(Box<RemoteAsset>),
    /// `on_asset_trash`: assets went to the trash.
    Trash(Vec<AssetId>),
    /// `on_asset_restore`: assets came back from the trash.
    Restore(Vec<AssetId>),
    /// `on_asset_delete`: assets were deleted permanently.
    Delete(Vec<AssetId>),
    /// `on_server_version` (sent once authenticated): `major.minor.patch`.
    ServerVersion(String),
    /// Any other event, or one whose payload could not be read; by name.
    Other(String),
}

impl ServerEvent {
    /// Reads an event from its name and payload (the second item of `42["name", payload]`).
    pub(crate) fn parse(name: &str, payload: Value) -> ServerEvent {
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
        let other = || ServerEvent::Other(name.to_owned());
        match name {
            "on_upload_success" => dto::asset_from_json(payload)
                .map_or_else(other, |a| Self::UploadSuccess(Box::new(a))),
            "on_asset_update" => {
                dto::asset_from_json(payload).map_or_else(other, |a| Self::AssetUpdate(Box::new(a)))
            }
            "on_asset_trash" => ServerEvent::Trash(ids(&payload)),
            "on_asset_restore" => ServerEvent::Restore(ids(&payload)),
            "on_asset_delete" => ServerEvent::Delete(ids(&payload)),
            "on_server_version" => serde_json::from_value::<dto::ServerVersion>(payload)
                .map_or_else(
                    |_| other(),
                    |v| ServerEvent::ServerVersion(format!("{}.{}.{}", v.major, v.minor, v.patch)),
                ),
            _ => other(),
        }
    }
}

/// Why a socket is not (or no longer) usable. The texts are short reasons for a log line and
/// the recorded socket state; they never hold a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SocketError {
    /// Lost or never made; worth reconnecting.
    #[error("{0}")]
    Lost(String),
    /// The server refused the credentials: live events need an `all` key or a session.
    #[error("{0}")]
    Unauthorized(String),
}

/// What [`EventSocket::next`] yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// The socket is confirmed up (once per socket, before any event).
    Connected,
    Event(ServerEvent),
}

/// One live-event connection, from a completed handshake to its end.
pub struct EventSocket {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Silence longer than this means the server is gone.
    silence: Duration,
    last_heard: Instant,
    /// When a joined socket counts as connected if nothing refused it before.
    confirm_at: Option<Instant>,
    up: bool,
    /// An event that arrived before the socket was confirmed: yielded after `Connected`.
    pending: Option<ServerEvent>,
}

impl ApiClient {
    /// Opens the live-event socket: the WebSocket handshake (with the credential header and
    /// the client's TLS trust, each step within the connect timeout), the open packet, and
    /// the namespace join. The socket is not confirmed yet: [`EventSocket::next`] says when.
    pub async fn open_events(&self) -> Result<EventSocket, SocketError> {
        let url = self.ws_url();
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| SocketError::Lost(format!("bad socket URL: {e}")))?;
        for (name, value) in self.auth_headers().iter() {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        let connector = if url.starts_with("wss://") {
            Connector::Rustls(self.inner.tls.clone())
        } else {
            Connector::Plain
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
        let timeout = self.inner.connect_timeout;
        let (mut ws, _) = match tokio::time::timeout(timeout, connect).await {
            Err(_) => return Err(SocketError::Lost("timed out connecting".to_owned())),
            Ok(Err(e)) => return Err(connect_error(e)),
            Ok(Ok(pair)) => pair,
        };

        // The open packet says how often the server pings.
        let open = match tokio::time::timeout(timeout, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => parse_packet(t.as_str()),
            Ok(Some(Ok(other))) => {
                return Err(SocketError::Lost(format!(
                    "unexpected first frame {other:?}"
                )))
            }
            Ok(Some(Err(e))) => return Err(SocketError::Lost(e.to_string())),
            Ok(None) => {
                return Err(SocketError::Lost(
                    "closed before the open packet".to_owned(),
                ))
            }
            Err(_) => return Err(SocketError::Lost("no open packet".to_owned())),
        };
        let Packet::Open(info) = open else {
            return Err(SocketError::Lost(
                "the server did not open an Engine.IO session".to_owned(),
            ));
        };
        let silence = silence_of(&info);
        ws.send(Message::text("40"))
            .await
            .map_err(|e| SocketError::Lost(e.to_string()))?;
        Ok(EventSocket {
            ws,
            silence,
            last_heard: Instant::now(),
            confirm_at: None,
            up: false,
            pending: None,
        })
    }
}

impl EventSocket {
    /// The next thing worth knowing: the socket confirmed up, or an event; an error ends
    /// the socket. Answers pings on the way. Cancel-safe: what was read and not yet
    /// yielded is kept for the next call.
    pub async fn next(&mut self) -> Result<Incoming, SocketError> {
        if self.up {
            if let Some(event) = self.pending.take() {
                return Ok(Incoming::Event(event));
            }
        }
        loop {
            let mut deadline = self.last_heard + self.silence;
            if let (false, Some(t)) = (self.up, self.confirm_at) {
                deadline = deadline.min(t);
            }
            let msg = tokio::select! {
                () = tokio::time::sleep_until(deadline) => {
                    if Instant::now() >= self.last_heard + self.silence {
                        return Err(SocketError::Lost(format!(
                            "no ping from the server for {}s",
                            self.silence.as_secs()
                        )));
                    }
                    if let Some(up) = self.confirm() {
                        return Ok(up);
                    }
                    continue;
                }
                m = self.ws.next() => m,
            };
            let text = match msg {
                None => return Err(lost("the server closed the connection")),
                Some(Err(e)) => return Err(SocketError::Lost(e.to_string())),
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(_))) => {
                    return Err(lost("the server closed the connection"))
                }
                Some(Ok(_)) => {
                    self.last_heard = Instant::now();
                    continue;
                }
            };
            self.last_heard = Instant::now();
            match parse_packet(text.as_str()) {
                Packet::Ping => {
                    self.ws
                        .send(Message::text("3"))
                        .await
                        .map_err(|e| SocketError::Lost(e.to_string()))?;
                    if self.confirm_at.is_some() {
                        if let Some(up) = self.confirm() {
                            return Ok(up);
                        }
                    }
                }
                Packet::Joined => self.confirm_at = Some(Instant::now() + CONFIRM_AFTER),
                Packet::ConnectError(m) => {
                    return Err(if m.to_ascii_lowercase().contains("auth") {
                        SocketError::Unauthorized(m)
                    } else {
                        SocketError::Lost(format!("the server refused the connection: {m}"))
                    });
                }
                Packet::Disconnected => return Err(lost("the server ended the session")),
                Packet::Close => return Err(lost("the server closed the session")),
                Packet::Event(name, payload) => {
                    if name == "error" {
                        let detail = payload.as_str().unwrap_or("error").to_owned();
                        return Err(if detail.to_ascii_lowercase().contains("unauthorized") {
                            SocketError::Unauthorized(detail)
                        } else {
                            SocketError::Lost(format!("the server sent an error: {detail}"))
                        });
                    }
                    // An event means the server accepted us: confirm first.
                    let event = ServerEvent::parse(&name, payload);
                    if let Some(up) = self.confirm() {
                        self.pending = Some(event);
                        return Ok(up);
                    }
                    return Ok(Incoming::Event(event));
                }
                Packet::Open(_) | Packet::Other => {}
            }
        }
    }

    /// Leaves politely (`41`, then a close frame), but never lets a stuck peer hold up a
    /// stop for more than [`LEAVE_TIMEOUT`].
    pub async fn leave(mut self) {
        let bye = async {
            let _ = self.ws.send(Message::text("41")).await;
            let _ = self.ws.close(None).await;
        };
        let _ = tokio::time::timeout(LEAVE_TIMEOUT, bye).await;
    }

    /// `Connected`, the first time only.
    fn confirm(&mut self) -> Option<Incoming> {
        if self.up {
            return None;
        }
        self.up = true;
        Some(Incoming::Connected)
    }
}

fn lost(reason: &str) -> SocketError {
    SocketError::Lost(reason.to_owned())
}

/// The error for a failed handshake; 401/403 are a refusal of the credentials.
fn connect_error(e: tungstenite::Error) -> SocketError {
    match &e {
        tungstenite::Error::Http(resp) if matches!(resp.status().as_u16(), 401 | 403) => {
            SocketError::Unauthorized(format!("HTTP {}", resp.status().as_u16()))
        }
        tungstenite::Error::Http(resp) => SocketError::Lost(format!("HTTP {}", resp.status())),
        _ => SocketError::Lost(e.to_string()),
    }
}

/// How long a server may stay silent before it is taken for gone: its ping interval and
/// timeout from the open packet (socket.io's defaults where it does not say), and a second.
/// Each is capped at [`MAX_PING`]: a server announcing a ping every thousand years would
/// otherwise never be found dead.
pub(super) fn silence_of(open: &Value) -> Duration {
    let ms = |key: &str, default: Duration| {
        open.get(key)
            .and_then(Value::as_u64)
            .map_or(default, Duration::from_millis)
            .min(MAX_PING)
    };
    ms("pingInterval", DEFAULT_PING_INTERVAL)
        + ms("pingTimeout", DEFAULT_PING_TIMEOUT)
        + Duration::from_secs(1)
}

/// One Engine.IO / Socket.IO packet, as far as a listening client cares.
#[derive(Debug, PartialEq)]
pub(super) enum Packet {
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

pub(super) fn parse_packet(text: &str) -> Packet {
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
    fn events_are_typed_by_name_and_payload() {
        let id = |s: &str| AssetId(s.into());
        assert_eq!(
            ServerEvent::parse("on_asset_trash", json!(["a", "b"])),
            ServerEvent::Trash(vec![id("a"), id("b")])
        );
        assert_eq!(
            ServerEvent::parse("on_asset_delete", json!("a")),
            ServerEvent::Delete(vec![id("a")])
        );
        assert_eq!(
            ServerEvent::parse("on_asset_restore", json!([1, "b"])),
            ServerEvent::Restore(vec![id("b")])
        );
        let asset = json!({"id": "a", "ownerId": "me", "checksum": "qZk+NkcGgWq6PiVxeFDCbJzQ2J0="});
        assert!(matches!(
            ServerEvent::parse("on_upload_success", asset.clone()),
            ServerEvent::UploadSuccess(a) if a.id == id("a") && a.checksum.is_some()
        ));
        assert!(matches!(
            ServerEvent::parse("on_asset_update", asset),
            ServerEvent::AssetUpdate(a) if a.owner_id == "me"
        ));
        assert_eq!(
            ServerEvent::parse("on_upload_success", json!({"no": "id"})),
            ServerEvent::Other("on_upload_success".into())
        );
        assert_eq!(
            ServerEvent::parse(
                "on_server_version",
                json!({"major": 2, "minor": 7, "patch": 5})
            ),
            ServerEvent::ServerVersion("2.7.5".into())
        );
        assert_eq!(
            ServerEvent::parse("on_config_update", Value::Null),
            ServerEvent::Other("on_config_update".into())
        );
    }
}
