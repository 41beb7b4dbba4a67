//! Every fault switch, through the handle and through `/__admin/`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use immish_testserver::{Dialect, Failure, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn fail_next_sends_a_proxy_reply_before_the_body() {
    let server = TestServer::start(Dialect::Immich).await;
    server.fail_with("POST /assets", 1, Failure::nginx_413());

    // A 20 MiB body: the client still reads the 413 (the body is drained meanwhile).
    let resp = client()
        .post(format!("{}/assets", server.api_url()))
        .header("x-api-key", server.api_key())
        .multipart(streamed_form("big.mp4", 20 * 1024 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(resp.headers()["content-type"], "text/html");
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("413 Request Entity Too Large"));
    assert_eq!(server.requests_with_status("POST /assets", 413), 1);
    assert_eq!(server.upload_bodies(), 0);

    // Only once.
    let (status, _) = upload(&server, "a.jpg", b"after").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(server.requests("POST /assets"), 2);
}

#[tokio::test]
async fn fail_next_with_default_body_and_retry_after() {
    let server = TestServer::start(Dialect::Immich).await;
    server.fail_with("GET /server/ping", 2, Failure::new(503).retry_after("7"));
    for _ in 0..2 {
        let resp = client()
            .get(format!("{}/server/ping", server.api_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["retry-after"], "7");
        let (status, body) = json_of(resp).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["statusCode"], 503);
        assert_eq!(body["message"], "Service Unavailable");
    }
    let (status, _) = get(&server, "/server/ping").await;
    assert_eq!(status, StatusCode::OK);

    server.fail_next(
        "POST /assets/bulk-upload-check",
        1,
        502,
        Some("bad gateway"),
        Some("text/plain"),
    );
    let resp = client()
        .post(format!("{}/assets/bulk-upload-check", server.api_url()))
        .header("x-api-key", server.api_key())
        .json(&json!({ "assets": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(resp.text().await.unwrap(), "bad gateway");
    assert_eq!(
        server.requests_with_status("POST /assets/bulk-upload-check", 502),
        1
    );
}

#[tokio::test]
async fn drop_after_bytes_closes_without_a_reply() {
    let server = TestServer::start(Dialect::Immich).await;
    server.drop_after_bytes("POST /assets", 1000, 1);

    let err = client()
        .post(format!("{}/assets", server.api_url()))
        .header("x-api-key", server.api_key())
        .multipart(streamed_form("a.jpg", 200_000))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_status(), "{err}");
    assert_eq!(server.asset_count(&server.admin_id()), 0);
    assert_eq!(server.requests_with_status("POST /assets", 0), 1);
    assert!(server.upload_body_bytes() <= 1000);

    // The next attempt goes through.
    let resp = client()
        .post(format!("{}/assets", server.api_url()))
        .header("x-api-key", server.api_key())
        .multipart(streamed_form("a.jpg", 200_000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(server.asset_count(&server.admin_id()), 1);
    assert_eq!(server.assets(&server.admin_id())[0].size, 200_000);

    // A body shorter than the limit: dropped at its end, nothing stored.
    server.drop_after_bytes("POST /assets", 10_000_000, 1);
    let before = server.asset_count(&server.admin_id());
    let res = client()
        .post(format!("{}/assets", server.api_url()))
        .header("x-api-key", server.api_key())
        .multipart(upload_form("small.jpg", b"small".to_vec()))
        .send()
        .await;
    assert!(res.is_err());
    assert_eq!(server.asset_count(&server.admin_id()), before);
}

#[tokio::test]
async fn drop_is_a_raw_tcp_close() {
    let server = TestServer::start(Dialect::Immich).await;
    server.drop_after_bytes("GET /server/ping", 0, 1);
    let mut tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    tcp.write_all(b"GET /api/server/ping HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "got a reply: {:?}", String::from_utf8_lossy(&buf));
    assert_eq!(server.requests_with_status("GET /server/ping", 0), 1);
    // The switch was for one request only.
    let (status, _) = get(&server, "/server/ping").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn delay_and_slow_body() {
    let server = TestServer::start(Dialect::Immich).await;
    server.delay("GET /server/ping", Duration::from_millis(300));
    let t = Instant::now();
    let (status, _) = get(&server, "/server/ping").await;
    assert_eq!(status, StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_millis(300));
    server.delay("GET /server/ping", Duration::ZERO);
    let t = Instant::now();
    get(&server, "/server/ping").await;
    assert!(t.elapsed() < Duration::from_millis(300));

    // 100 KiB at 200 KiB/s: about half a second.
    server.slow_body(200 * 1024);
    let t = Instant::now();
    let (status, _) = upload(&server, "slow.jpg", &vec![3u8; 100 * 1024]).await;
    assert_eq!(status, StatusCode::CREATED);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(400), "{took:?}");
    server.slow_body(0);
    let t = Instant::now();
    upload(&server, "fast.jpg", &vec![4u8; 100 * 1024]).await;
    assert!(t.elapsed() < Duration::from_millis(400));
}

#[tokio::test]
async fn stall_after_store_loses_the_reply() {
    let server = TestServer::start(Dialect::Immich).await;
    server.stall_after_store(1);
    let data = b"stalled".to_vec();
    let err = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap()
        .post(format!("{}/assets", server.api_url()))
        .header("x-api-key", server.api_key())
        .multipart(upload_form("s.jpg", data.clone()))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    // Stored all the same: a check now finds it, and a re-upload is a duplicate.
    assert_eq!(server.asset_count(&server.admin_id()), 1);
    let (_, body) = post(
        &server,
        "/assets/bulk-upload-check",
        json!({ "assets": [{ "id": "s", "checksum": sha1_hex(&data) }] }),
    )
    .await;
    assert_eq!(body["results"][0]["action"], "reject");
    let (status, _) = upload(&server, "s.jpg", &data).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn corrupt_uploads_drop_the_last_byte() {
    let server = TestServer::builder().keep_bytes(true).start().await;
    server.corrupt_uploads(true);
    let data = b"0123456789".to_vec();
    let (status, body) = upload(&server, "c.jpg", &data).await;
    assert_eq!(status, StatusCode::CREATED);
    let a = server.asset(body["id"].as_str().unwrap()).unwrap();
    assert_eq!(a.size, 9);
    assert_eq!(a.checksum_hex, sha1_hex(&data[..9]));
    assert_ne!(a.checksum_hex, sha1_hex(&data));
    assert_eq!(a.data.as_deref(), Some(&data[..9]));

    // Large bodies arrive in many chunks; still exactly one byte short.
    let resp = client()
        .post(format!("{}/assets", server.api_url()))
        .header("x-api-key", server.api_key())
        .multipart(streamed_form("big.mp4", 300_000))
        .send()
        .await
        .unwrap();
    let (_, body) = json_of(resp).await;
    let a = server.asset(body["id"].as_str().unwrap()).unwrap();
    assert_eq!(a.size, 299_999);
    let full: Vec<u8> = (0..300_000usize.div_ceil(65536))
        .flat_map(|i| vec![(i % 251) as u8; 65536.min(300_000 - i * 65536)])
        .collect();
    assert_eq!(a.checksum_hex, sha1_hex(&full[..299_999]));

    server.corrupt_uploads(false);
    let (_, body) = upload(&server, "ok.jpg", b"fine").await;
    assert_eq!(server.asset(body["id"].as_str().unwrap()).unwrap().size, 4);
}

#[tokio::test]
async fn unauthorized_until_switched_back() {
    let server = TestServer::start(Dialect::Immich).await;
    server.unauthorized(true);
    let (status, body) = get(&server, "/users/me").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["message"], "Invalid API key");
    let (status, _) = upload(&server, "a.jpg", b"a").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Public routes still answer.
    let (status, _) = get(&server, "/server/ping").await;
    assert_eq!(status, StatusCode::OK);
    server.unauthorized(false);
    let (status, _) = get(&server, "/users/me").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.requests_with_status("GET /users/me", 401), 1);
    assert_eq!(server.requests_with_status("GET /users/me", 200), 1);
}

#[tokio::test]
async fn admin_routes_drive_the_same_switches() {
    let server = TestServer::start(Dialect::Immich).await;
    let http = client();
    let admin = format!("{}/__admin", server.base_url());

    let info: Value = http
        .get(format!("{admin}/info"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["apiKey"], server.api_key());
    assert_eq!(info["dialect"], "immich");

    let resp = http
        .post(format!("{admin}/fault"))
        .json(&json!({ "kind": "fail_next", "route": "GET /server/ping", "status": 502, "retryAfter": "1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (status, _) = get(&server, "/server/ping").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let (status, _) = get(&server, "/server/ping").await;
    assert_eq!(status, StatusCode::OK);

    http.post(format!("{admin}/fault"))
        .json(&json!({ "kind": "unauthorized", "on": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(get(&server, "/users/me").await.0, StatusCode::UNAUTHORIZED);
    http.delete(format!("{admin}/fault")).send().await.unwrap();
    assert_eq!(get(&server, "/users/me").await.0, StatusCode::OK);

    let resp = http
        .post(format!("{admin}/fault"))
        .json(&json!({ "kind": "quota", "bytes": 3 }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (status, body) = upload(&server, "q.jpg", b"four").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "Quota has been exceeded!");
    let resp = http
        .post(format!("{admin}/fault"))
        .json(&json!({ "kind": "no_such_fault" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    http.post(format!("{admin}/fault"))
        .json(&json!({ "kind": "quota", "bytes": null }))
        .send()
        .await
        .unwrap();

    let resp: Value = http
        .post(format!("{admin}/actions/upload"))
        .json(&json!({ "fileName": "x.jpg", "data": "bytes" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = resp["id"].as_str().unwrap().to_string();
    let assets: Value = http
        .get(format!("{admin}/assets"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(assets[0]["id"], id.as_str());
    assert_eq!(assets[0]["checksumHex"], sha1_hex(b"bytes"));
    let n: Value = http
        .post(format!("{admin}/actions/trash"))
        .json(&json!({ "ids": [id] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(n["count"], 1);
    assert!(server.asset(&id).unwrap().trashed);

    let counters: Value = http
        .get(format!("{admin}/counters"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        counters["requests"]["GET /server/ping"]["byStatus"]["502"],
        1
    );
    assert_eq!(counters["requests"]["POST /assets"]["byStatus"]["400"], 1);
    assert_eq!(counters["uploadBodies"], 1);
    assert_eq!(counters["assetsPerUser"][server.admin_id()], 1);
    // Admin routes are not counted.
    assert!(counters["requests"]
        .as_object()
        .unwrap()
        .keys()
        .all(|k| !k.contains("__admin")));
    http.delete(format!("{admin}/counters"))
        .send()
        .await
        .unwrap();
    assert_eq!(server.requests("GET /server/ping"), 0);
}
