//! Helpers shared by the test server's own tests: an HTTP client, upload forms, and a small
//! socket.io client over tokio-tungstenite.

#![allow(dead_code)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use immish_testserver::TestServer;
use reqwest::multipart::{Form, Part};
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::Value;
use sha1::{Digest, Sha1};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const DATE: &str = "2024-05-01T10:00:00.000Z";

pub fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

pub fn sha1_hex(data: &[u8]) -> String {
    Sha1::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn sha1_b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(Sha1::digest(data))
}

/// A complete, valid upload form in the order the CLI sends it.
pub fn upload_form(file_name: &str, data: Vec<u8>) -> Form {
    Form::new()
        .text("deviceAssetId", format!("{file_name}-{}", data.len()))
        .text("deviceId", "test")
        .text("fileCreatedAt", DATE)
        .text("fileModifiedAt", DATE)
        .text("isFavorite", "false")
        .part(
            "assetData",
            Part::bytes(data).file_name(file_name.to_string()),
        )
}

/// A multipart upload whose file part is streamed in 64 KiB chunks.
pub fn streamed_form(file_name: &str, len: usize) -> Form {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..len.div_ceil(65536))
        .map(|i| Ok(vec![(i % 251) as u8; 65536.min(len - i * 65536)]))
        .collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    Form::new()
        .text("deviceAssetId", "big")
        .text("deviceId", "test")
        .text("fileCreatedAt", DATE)
        .text("fileModifiedAt", DATE)
        .part(
            "assetData",
            Part::stream_with_length(body, len as u64).file_name(file_name.to_string()),
        )
}

/// Adds the admin key.
pub fn keyed(rb: RequestBuilder, key: &str) -> RequestBuilder {
    rb.header("x-api-key", key)
}

pub async fn json_of(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// Uploads with the admin key; returns status and JSON.
pub async fn upload(server: &TestServer, file_name: &str, data: &[u8]) -> (StatusCode, Value) {
    upload_with_key(server, &server.api_key(), file_name, data).await
}

pub async fn upload_with_key(
    server: &TestServer,
    key: &str,
    file_name: &str,
    data: &[u8],
) -> (StatusCode, Value) {
    let resp = client()
        .post(format!("{}/assets", server.api_url()))
        .header("x-api-key", key)
        .multipart(upload_form(file_name, data.to_vec()))
        .send()
        .await
        .expect("upload request");
    json_of(resp).await
}

pub async fn get(server: &TestServer, path: &str) -> (StatusCode, Value) {
    let resp = client()
        .get(format!("{}{path}", server.api_url()))
        .header("x-api-key", server.api_key())
        .send()
        .await
        .expect("request");
    json_of(resp).await
}

pub async fn post(server: &TestServer, path: &str, body: Value) -> (StatusCode, Value) {
    post_with_key(server, &server.api_key(), path, body).await
}

pub async fn post_with_key(
    server: &TestServer,
    key: &str,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let resp = client()
        .post(format!("{}{path}", server.api_url()))
        .header("x-api-key", key)
        .json(&body)
        .send()
        .await
        .expect("request");
    json_of(resp).await
}

pub async fn login(server: &TestServer, email: &str, password: &str) -> String {
    let resp = client()
        .post(format!("{}/auth/login", server.api_url()))
        .json(&serde_json::json!({ "email": email, "password": password }))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body: Value = resp.json().await.expect("json");
    body["accessToken"].as_str().expect("token").to_string()
}

/// Waits for a condition with a deadline (no fixed sleeps).
pub async fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// --- socket.io client ---------------------------------------------------------------------

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub async fn ws_open(url: &str, headers: &[(&str, &str)]) -> Ws {
    let mut req = url.into_client_request().expect("ws request");
    for (k, v) in headers {
        req.headers_mut().insert(
            reqwest::header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("ws connect");
    ws
}

/// The next text frame, or None when the socket closes or nothing arrives in time.
pub async fn ws_text(ws: &mut Ws, timeout: Duration) -> Option<String> {
    loop {
        match tokio::time::timeout(timeout, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Some(t.to_string()),
            Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => return None,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

pub async fn ws_send(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.to_string().into()))
        .await
        .expect("ws send");
}

/// Opens the socket with the admin key and completes the socket.io connect; returns the
/// socket after `on_server_version` was received.
pub async fn ws_connected(server: &TestServer) -> Ws {
    let key = server.api_key();
    let mut ws = ws_open(&server.socket_url(), &[("x-api-key", &key)]).await;
    let open = ws_text(&mut ws, Duration::from_secs(5))
        .await
        .expect("open");
    assert!(open.starts_with("0{"), "open packet: {open}");
    ws_send(&mut ws, "40").await;
    let ack = ws_text(&mut ws, Duration::from_secs(5)).await.expect("40");
    assert!(ack.starts_with("40{\"sid\":"), "connect ack: {ack}");
    let version = ws_text(&mut ws, Duration::from_secs(5))
        .await
        .expect("version");
    assert!(version.starts_with("42[\"on_server_version\""), "{version}");
    ws
}

/// Waits for the next `42[...]` event, skipping pings; returns (name, payload).
pub async fn ws_event(ws: &mut Ws, timeout: Duration) -> Option<(String, Value)> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let text = ws_text(ws, left).await?;
        if text == "2" {
            ws_send(ws, "3").await;
            continue;
        }
        if let Some(rest) = text.strip_prefix("42") {
            let v: Value = serde_json::from_str(rest).expect("event json");
            return Some((v[0].as_str().unwrap_or_default().to_string(), v[1].clone()));
        }
    }
}
