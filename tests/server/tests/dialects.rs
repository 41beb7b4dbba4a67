//! What differs in the `immich-next` and `seed` dialects.

mod common;

use std::time::Duration;

use common::*;
use immish_testserver::{Dialect, TestServer, Visibility};
use reqwest::multipart::{Form, Part};
use reqwest::StatusCode;
use serde_json::json;

async fn send_form(server: &TestServer, form: Form) -> (StatusCode, serde_json::Value) {
    let resp = client()
        .post(format!("{}/assets", server.api_url()))
        .header("x-api-key", server.api_key())
        .multipart(form)
        .send()
        .await
        .unwrap();
    json_of(resp).await
}

#[tokio::test]
async fn next_ignores_device_ids_and_wants_z_dates() {
    let server = TestServer::start(Dialect::ImmichNext).await;
    // The next major's build still calls itself 2.7.5 (docs/SERVER-API.md#1-dialects).
    let (_, v) = get(&server, "/server/version").await;
    assert_eq!(v, json!({ "major": 2, "minor": 7, "patch": 5 }));

    // No device ids needed, and any sent are dropped.
    let form = Form::new()
        .text("deviceAssetId", "ignored")
        .text("fileCreatedAt", DATE)
        .text("fileModifiedAt", DATE)
        .part(
            "assetData",
            Part::bytes(b"next".to_vec()).file_name("a.jpg"),
        );
    let (status, body) = send_form(&server, form).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "created");
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(server.asset(&id).unwrap().device_asset_id, None);
    let (_, a) = get(&server, &format!("/assets/{id}")).await;
    assert!(a.get("deviceAssetId").is_none());
    assert!(a.get("deviceId").is_none());

    // Offsets are rejected with zod-style messages.
    let form = Form::new()
        .text("fileCreatedAt", "2024-05-01T12:00:00+02:00")
        .text("fileModifiedAt", DATE)
        .part(
            "assetData",
            Part::bytes(b"offset".to_vec()).file_name("b.jpg"),
        );
    let (status, body) = send_form(&server, form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        json!([
            "[fileCreatedAt] Invalid input: expected ISO 8601 datetime string, received string"
        ])
    );
    let (status, body) = post(&server, "/search/metadata", json!({ "size": 5000 })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        json!(["[size] Too big: expected number to be <=1000"])
    );

    // `isFavorite` is exact.
    let form = upload_form("c.jpg", b"fav".to_vec()).text("isFavorite", "TRUE");
    let (status, _) = send_form(&server, form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Legacy sync is gone; `.mpo` is new.
    let (status, _) = post(&server, "/sync/full-sync", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = post(&server, "/sync/delta-sync", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, media) = get(&server, "/server/media-types").await;
    assert!(media["image"].as_array().unwrap().contains(&json!(".mpo")));
    let (status, _) = upload(&server, "p.MPO", b"mpo").await;
    assert_eq!(status, StatusCode::CREATED);

    // Albums: no ownerId/owner/assets; the owner is an albumUsers entry.
    let (status, album) = post(
        &server,
        "/albums",
        json!({ "albumName": "A", "assetIds": [id] }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(album.get("ownerId").is_none());
    assert!(album.get("assets").is_none());
    assert_eq!(album["albumUsers"][0]["role"], "owner");
    assert_eq!(album["albumUsers"][0]["user"]["id"], server.admin_id());
}

#[tokio::test]
async fn seed_paths_and_upload_answer() {
    let server = TestServer::start(Dialect::Seed).await;
    assert_eq!(server.api_url(), server.base_url());
    let http = client();
    let base = server.base_url();

    let status = http
        .get(format!("{base}/.well-known/immich"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = json_of(
        http.get(format!("{base}/server/ping"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "res": "pong" }));
    // No /api prefix, no SPA: unknown paths are JSON 404s.
    let (status, body) = json_of(
        http.get(format!("{base}/api/server/ping"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.get("correlationId").is_none());
    assert_eq!(body["statusCode"], 404);
    let status = http
        .get(format!("{base}/server/media-types"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, features) = get(&server, "/server/features").await;
    assert!(features.get("clipEncode").is_some());
    let (status, info) = get(&server, "/server/info").await;
    assert_eq!(status, StatusCode::OK);
    assert!(info["version"].is_string());
    assert!(info["diskUsagePercentage"].is_number());

    let (status, body) = upload(&server, "a.jpg", b"seed").await;
    assert_eq!(status, StatusCode::CREATED);
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(body, json!({ "id": id, "duplicate": false }));
    // The checksum header means nothing here: the body is read, then a duplicate.
    let resp = http
        .post(format!("{base}/assets"))
        .header("x-api-key", server.api_key())
        .header("x-immich-checksum", sha1_hex(b"seed"))
        .multipart(upload_form("a.jpg", b"seed".to_vec()))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "id": id, "duplicate": true }));
    assert_eq!(server.upload_bodies(), 2);

    // isArchived still means something in the seed.
    let form = upload_form("b.jpg", b"arch".to_vec()).text("isArchived", "true");
    let (status, body) = send_form(&server, form).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        server
            .asset(body["id"].as_str().unwrap())
            .unwrap()
            .visibility,
        Visibility::Archive
    );

    // Sync stream does not exist; logout is 204.
    let (status, _) = post(&server, "/sync/stream", json!({ "types": ["AssetsV1"] })).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let token = login(&server, "admin@example.com", "admin-password").await;
    let status = http
        .post(format!("{base}/auth/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn seed_listing_by_updated_at() {
    let server = TestServer::start(Dialect::Seed).await;
    let admin = server.admin_id();
    let a = server.upload_as(&admin, "a.jpg", b"a", Visibility::Timeline);
    let b = server.upload_as(&admin, "b.jpg", b"b", Visibility::Timeline);
    let bob = server.add_user("bob@example.com", "pw-bob-123");
    server.upload_as(&bob, "bob.jpg", b"bob", Visibility::Timeline);
    server.trash([&a]);
    let a_at = server.asset(&a).unwrap().updated_at;
    let b_at = server.asset(&b).unwrap().updated_at;

    let (status, list) = get(&server, "/assets").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    // Oldest change first: b, then the trashed a.
    assert_eq!(ids, vec![b.as_str(), a.as_str()]);
    assert_eq!(list[1]["isTrashed"], true);
    assert_eq!(list[1]["isArchived"], false);
    assert_eq!(list[1]["checksum"], sha1_b64(b"a"));

    let (_, list) = get(&server, &format!("/assets?updatedAfter={a_at}")).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], a.as_str());
    let (_, list) = get(
        &server,
        &format!("/assets?updatedAfter={b_at}&updatedBefore={b_at}"),
    )
    .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], b.as_str());
    let (status, _) = get(&server, "/assets?updatedAfter=garbage").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn seed_socket_lives_at_the_root() {
    let server = TestServer::builder().dialect(Dialect::Seed).start().await;
    assert!(server
        .socket_url()
        .starts_with(&format!("ws://{}/socket.io/", server.addr())));
    let mut ws = ws_connected(&server).await;
    server.upload_as(&server.admin_id(), "a.jpg", b"a", Visibility::Timeline);
    let (name, _) = ws_event(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!(name, "on_upload_success");
}
