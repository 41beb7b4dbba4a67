//! The socket.io endpoint: handshake, auth, ping/pong, events, and the socket faults.

mod common;

use std::time::{Duration, Instant};

use common::*;
use immish_testserver::{AssetUpdate, Dialect, TestServer, Visibility};
use reqwest::StatusCode;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn handshake_and_server_version() {
    let server = TestServer::start(Dialect::Immich).await;
    let key = server.api_key();
    let mut ws = ws_open(&server.socket_url(), &[("x-api-key", &key)]).await;
    let open = ws_text(&mut ws, WAIT).await.unwrap();
    let open: Value = serde_json::from_str(open.strip_prefix('0').unwrap()).unwrap();
    assert_eq!(open["upgrades"], json!([]));
    assert_eq!(open["pingInterval"], 25000);
    assert_eq!(open["pingTimeout"], 20000);
    assert_eq!(open["maxPayload"], 1000000);
    assert!(open["sid"].is_string());
    // Not in a room before the namespace connect.
    assert_eq!(server.websocket_count(), 0);

    ws_send(&mut ws, "40").await;
    let ack = ws_text(&mut ws, WAIT).await.unwrap();
    let ack: Value = serde_json::from_str(ack.strip_prefix("40").unwrap()).unwrap();
    assert!(ack["sid"].is_string());
    let (name, payload) = ws_event(&mut ws, WAIT).await.unwrap();
    assert_eq!(name, "on_server_version");
    // The whole `SemVer` object, as socket.io serialises it.
    assert_eq!(
        payload,
        json!({
            "options": {}, "loose": false, "includePrerelease": false, "raw": "2.7.5",
            "major": 2, "minor": 7, "patch": 5, "prerelease": [], "build": [],
            "version": "2.7.5",
        })
    );
    assert!(server.wait_for_websockets(1, WAIT).await);
}

#[tokio::test]
async fn auth_failures_and_protocol_checks() {
    let server = TestServer::builder()
        .ping_interval(Duration::from_millis(200))
        .start()
        .await;

    // A key without `all`: the namespace connect is acked, then `error` and `41`; the
    // WebSocket stays open (the next frame is the engine.io ping), in no user's room.
    let narrow = server.create_api_key(&server.admin_id(), &["asset.read", "asset.upload"]);
    for headers in [vec![("x-api-key", narrow.as_str())], vec![]] {
        let mut ws = ws_open(&server.socket_url(), &headers).await;
        assert!(ws_text(&mut ws, WAIT).await.unwrap().starts_with('0'));
        ws_send(&mut ws, "40").await;
        assert!(ws_text(&mut ws, WAIT).await.unwrap().starts_with("40{"));
        assert_eq!(
            ws_text(&mut ws, WAIT).await.unwrap(),
            "42[\"error\",\"unauthorized\"]"
        );
        assert_eq!(ws_text(&mut ws, WAIT).await.unwrap(), "41");
        assert_eq!(ws_text(&mut ws, WAIT).await.as_deref(), Some("2"));
    }
    assert_eq!(server.websocket_count(), 0);

    // ?apiKey= is not read by the socket.
    let url = format!("{}&apiKey={}", server.socket_url(), server.api_key());
    let mut ws = ws_open(&url, &[]).await;
    ws_text(&mut ws, WAIT).await.unwrap();
    ws_send(&mut ws, "40").await;
    ws_text(&mut ws, WAIT).await.unwrap();
    assert_eq!(
        ws_text(&mut ws, WAIT).await.unwrap(),
        "42[\"error\",\"unauthorized\"]"
    );

    // A session works as Bearer, x-immich-user-token and cookie.
    let token = login(&server, "admin@example.com", "admin-password").await;
    let cookie = format!("immich_access_token={token}");
    let bearer = format!("Bearer {token}");
    for (name, value) in [
        ("authorization", bearer.as_str()),
        ("x-immich-user-token", token.as_str()),
        ("cookie", cookie.as_str()),
    ] {
        let mut ws = ws_open(&server.socket_url(), &[(name, value)]).await;
        ws_text(&mut ws, WAIT).await.unwrap();
        ws_send(&mut ws, "40").await;
        ws_text(&mut ws, WAIT).await.unwrap();
        let (event, _) = ws_event(&mut ws, WAIT).await.unwrap();
        assert_eq!(event, "on_server_version", "{name}");
    }

    // EIO=3 and polling are refused over plain HTTP.
    let api = server.api_url();
    let resp = client()
        .get(format!("{api}/socket.io/?EIO=3&transport=websocket"))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({ "code": 5, "message": "Unsupported protocol version" })
    );
    let resp = client()
        .get(format!("{api}/socket.io/?EIO=4&transport=polling"))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], 0);
}

#[tokio::test]
async fn ping_pong_and_timeout() {
    let server = TestServer::builder()
        .ping_interval(Duration::from_millis(150))
        .ping_timeout(Duration::from_millis(150))
        .start()
        .await;
    let mut ws = ws_connected(&server).await;
    assert!(server.wait_for_websockets(1, WAIT).await);

    // Answering pings keeps the socket open.
    for _ in 0..3 {
        assert_eq!(ws_text(&mut ws, WAIT).await.unwrap(), "2");
        ws_send(&mut ws, "3").await;
    }
    assert_eq!(server.websocket_count(), 1);

    // Not answering: closed after the ping timeout.
    assert_eq!(ws_text(&mut ws, WAIT).await.unwrap(), "2");
    let started = Instant::now();
    assert_eq!(ws_text(&mut ws, WAIT).await, None);
    assert!(started.elapsed() >= Duration::from_millis(100));
    let handle = server.handle();
    eventually("socket removed", WAIT, || handle.websocket_count() == 0).await;
}

#[tokio::test]
async fn events_reach_the_owner_only() {
    let server = TestServer::start(Dialect::Immich).await;
    let mut ws = ws_connected(&server).await;
    let mut ws2 = ws_connected(&server).await;
    let bob = server.add_user("bob@example.com", "pw-bob-123");
    let bob_key = server.create_api_key(&bob, &["all"]);
    let mut bob_ws = ws_open(&server.socket_url(), &[("x-api-key", &bob_key)]).await;
    ws_text(&mut bob_ws, WAIT).await.unwrap();
    ws_send(&mut bob_ws, "40").await;
    ws_text(&mut bob_ws, WAIT).await.unwrap();
    ws_event(&mut bob_ws, WAIT).await.unwrap();
    assert!(server.wait_for_websockets(3, WAIT).await);

    // Upload over HTTP: the event comes after the 201, not with it.
    let (status, body) = upload(&server, "a.jpg", b"event").await;
    let sent = Instant::now();
    assert_eq!(status, StatusCode::CREATED);
    let id = body["id"].as_str().unwrap().to_string();
    let (name, payload) = ws_event(&mut ws, WAIT).await.unwrap();
    assert!(
        sent.elapsed() >= Duration::from_millis(50),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(name, "on_upload_success");
    assert_eq!(payload["id"], id.as_str());
    assert_eq!(payload["checksum"], sha1_b64(b"event"));
    // The metadata job ran before the thumbnails: without EXIF the form's date stands.
    assert_eq!(payload["exifInfo"]["dateTimeOriginal"], DATE);
    // Then the sync-shaped announcement of the same asset.
    let (name, payload) = ws_event(&mut ws, WAIT).await.unwrap();
    assert_eq!(name, "AssetUploadReadyV1");
    assert_eq!(payload["asset"]["id"], id.as_str());
    assert_eq!(payload["asset"]["checksum"], sha1_b64(b"event"));
    assert_eq!(payload["exif"]["assetId"], id.as_str());
    assert_eq!(payload["exif"]["fileSizeInByte"], 5);
    let (name, _) = ws_event(&mut ws2, WAIT).await.unwrap();
    assert_eq!(name, "on_upload_success");

    // Hidden uploads emit nothing; the next event is the trash.
    let hidden = server.upload_as(&server.admin_id(), "h.jpg", b"hidden", Visibility::Hidden);
    let resp = client()
        .delete(format!("{}/assets", server.api_url()))
        .header("x-api-key", server.api_key())
        .json(&json!({ "ids": [id, hidden] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (name, payload) = ws_event(&mut ws, WAIT).await.unwrap();
    assert_eq!(name, "on_asset_trash");
    assert_eq!(payload, json!([id, hidden]));

    let (_, body) = post(&server, "/trash/restore/assets", json!({ "ids": [id] })).await;
    assert_eq!(body["count"], 1);
    let (name, payload) = ws_event(&mut ws, WAIT).await.unwrap();
    assert_eq!(name, "on_asset_restore");
    assert_eq!(payload, json!([id]));

    assert!(server.update(
        &id,
        AssetUpdate {
            is_favorite: Some(true),
            ..Default::default()
        }
    ));
    assert!(server.update(
        &id,
        AssetUpdate {
            description: Some("d".into()),
            ..Default::default()
        }
    ));
    let (name, payload) = ws_event(&mut ws, WAIT).await.unwrap();
    assert_eq!(name, "on_asset_update");
    assert_eq!(payload["isFavorite"], true);

    assert_eq!(server.delete_permanently([&id, &hidden]), 2);
    let (name, payload) = ws_event(&mut ws, WAIT).await.unwrap();
    assert_eq!((name.as_str(), payload), ("on_asset_delete", json!(id)));
    let (name, payload) = ws_event(&mut ws, WAIT).await.unwrap();
    assert_eq!((name.as_str(), payload), ("on_asset_delete", json!(hidden)));

    // Bob saw none of it; his own upload reaches him.
    let bob_asset = server.upload_as(&bob, "b.jpg", b"bob", Visibility::Archive);
    let (name, payload) = ws_event(&mut bob_ws, WAIT).await.unwrap();
    assert_eq!(name, "on_upload_success");
    assert_eq!(payload["id"], bob_asset.as_str());
}

#[tokio::test]
async fn close_and_reject() {
    let server = TestServer::start(Dialect::Immich).await;
    let mut ws = ws_connected(&server).await;
    assert!(server.wait_for_websockets(1, WAIT).await);
    server.close_websockets();
    assert_eq!(ws_text(&mut ws, WAIT).await, None);
    let handle = server.handle();
    eventually("socket removed", WAIT, || handle.websocket_count() == 0).await;

    server.reject_websockets(true);
    let err = tokio_tungstenite::connect_async(server.socket_url())
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 503),
        other => panic!("expected an HTTP error, got {other:?}"),
    }
    assert_eq!(server.requests_with_status("GET /socket.io", 503), 1);
    server.reject_websockets(false);
    let _ws = ws_connected(&server).await;
    assert!(server.wait_for_websockets(1, WAIT).await);

    // The unauthorized switch also fails the socket's auth.
    server.unauthorized(true);
    let key = server.api_key();
    let mut ws = ws_open(&server.socket_url(), &[("x-api-key", &key)]).await;
    ws_text(&mut ws, WAIT).await.unwrap();
    ws_send(&mut ws, "40").await;
    ws_text(&mut ws, WAIT).await.unwrap();
    assert_eq!(
        ws_text(&mut ws, WAIT).await.unwrap(),
        "42[\"error\",\"unauthorized\"]"
    );
}

#[tokio::test]
async fn dropping_the_server_closes_sockets() {
    let server = TestServer::start(Dialect::Immich).await;
    let mut ws = ws_connected(&server).await;
    drop(server);
    assert_eq!(ws_text(&mut ws, WAIT).await, None);
}
