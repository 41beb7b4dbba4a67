//! `/sync/stream` and `/sync/ack`, and the legacy full/delta sync of v2.7.5.

mod common;

use common::*;
use immish_testserver::{Dialect, TestServer, Visibility};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn stream(server: &TestServer, token: &str, body: Value) -> (StatusCode, Vec<Value>) {
    let resp = client()
        .post(format!("{}/sync/stream", server.api_url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    if status == StatusCode::OK {
        assert_eq!(resp.headers()["content-type"], "application/jsonlines+json");
    }
    let text = resp.text().await.unwrap();
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or(Value::String(l.to_string())))
        .collect();
    (status, lines)
}

async fn ack(server: &TestServer, token: &str, acks: Vec<String>) {
    let resp = client()
        .post(format!("{}/sync/ack", server.api_url()))
        .bearer_auth(token)
        .json(&json!({ "acks": acks }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
}

fn types(lines: &[Value]) -> Vec<&str> {
    lines.iter().map(|l| l["type"].as_str().unwrap()).collect()
}

/// The last ack of each type, as a client should send them.
fn last_acks(lines: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in lines {
        let ack = l["ack"].as_str().unwrap().to_string();
        let kind = ack.split('|').next().unwrap().to_string();
        out.retain(|a| !a.starts_with(&format!("{kind}|")));
        out.push(ack);
    }
    out
}

#[tokio::test]
async fn api_keys_are_refused() {
    let server = TestServer::start(Dialect::Immich).await;
    let (status, body) = post(&server, "/sync/stream", json!({ "types": ["AssetsV1"] })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["message"],
        "Sync endpoints cannot be used with API keys"
    );
    let (status, body) = post(&server, "/sync/ack", json!({ "acks": [] })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["message"],
        "Sync endpoints cannot be used with API keys"
    );
}

#[tokio::test]
async fn stream_checkpoints_trash_and_deletes() {
    let server = TestServer::start(Dialect::Immich).await;
    let admin = server.admin_id();
    let token = login(&server, "admin@example.com", "admin-password").await;
    let a = server.upload_as(&admin, "a.jpg", b"a", Visibility::Timeline);
    let b = server.upload_as(&admin, "b.jpg", b"b", Visibility::Hidden);
    let c = server.upload_as(&admin, "c.jpg", b"c", Visibility::Locked);
    let bob = server.add_user("bob@example.com", "pw-bob-123");
    server.upload_as(&bob, "bob.jpg", b"bob", Visibility::Timeline);

    let (status, lines) = stream(
        &server,
        &token,
        json!({ "types": ["AuthUsersV1", "AssetsV1"] }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        types(&lines),
        vec![
            "AuthUserV1",
            "AssetV1",
            "AssetV1",
            "AssetV1",
            "SyncCompleteV1"
        ]
    );
    // Every visibility, in change order, only the caller's.
    let asset_ids: Vec<&str> = lines[1..4]
        .iter()
        .map(|l| l["data"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(asset_ids, vec![a.as_str(), b.as_str(), c.as_str()]);
    let first = &lines[1]["data"];
    assert_eq!(first["checksum"], sha1_b64(b"a"));
    assert_eq!(first["ownerId"], admin.as_str());
    assert!(first["deletedAt"].is_null());
    assert_eq!(first["type"], "IMAGE");
    assert_eq!(lines[2]["data"]["visibility"], "hidden");
    // Acks carry increasing update ids.
    let update_ids: Vec<&str> = lines[1..4]
        .iter()
        .map(|l| l["ack"].as_str().unwrap().split('|').nth(1).unwrap())
        .collect();
    let mut sorted = update_ids.clone();
    sorted.sort();
    assert_eq!(update_ids, sorted);
    assert!(lines[1]["ack"].as_str().unwrap().starts_with("AssetV1|"));
    assert!(lines[4]["ack"]
        .as_str()
        .unwrap()
        .starts_with("SyncCompleteV1|"));

    // Without acks, the same rows come again.
    let (_, again) = stream(&server, &token, json!({ "types": ["AssetsV1"] })).await;
    assert_eq!(
        types(&again),
        vec!["AssetV1", "AssetV1", "AssetV1", "SyncCompleteV1"]
    );

    ack(&server, &token, last_acks(&lines)).await;
    let (_, lines) = stream(
        &server,
        &token,
        json!({ "types": ["AuthUsersV1", "AssetsV1"] }),
    )
    .await;
    assert_eq!(types(&lines), vec!["SyncCompleteV1"]);

    // Trash is an upsert with deletedAt; a hard delete is an AssetDeleteV1 first.
    server.trash([&a]);
    server.delete_permanently([&b]);
    let (_, lines) = stream(&server, &token, json!({ "types": ["AssetsV1"] })).await;
    assert_eq!(
        types(&lines),
        vec!["AssetDeleteV1", "AssetV1", "SyncCompleteV1"]
    );
    assert_eq!(lines[0]["data"], json!({ "assetId": b }));
    assert!(lines[0]["ack"]
        .as_str()
        .unwrap()
        .starts_with("AssetDeleteV1|"));
    assert_eq!(lines[1]["data"]["id"], a.as_str());
    assert!(lines[1]["data"]["deletedAt"].is_string());
    ack(&server, &token, last_acks(&lines)).await;

    let resp = client()
        .get(format!("{}/sync/ack", server.api_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let (status, list) = json_of(resp).await;
    assert_eq!(status, StatusCode::OK);
    let kinds: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["type"].as_str().unwrap())
        .collect();
    for k in ["AssetDeleteV1", "AssetV1", "AuthUserV1", "SyncCompleteV1"] {
        assert!(kinds.contains(&k), "{kinds:?}");
    }

    // Checkpoints are per session.
    let other = login(&server, "admin@example.com", "admin-password").await;
    let (_, lines) = stream(&server, &other, json!({ "types": ["AssetsV1"] })).await;
    assert_eq!(
        types(&lines),
        vec!["AssetDeleteV1", "AssetV1", "AssetV1", "SyncCompleteV1"]
    );

    // Deleting the checkpoints replays everything.
    let resp = client()
        .delete(format!("{}/sync/ack", server.api_url()))
        .bearer_auth(&token)
        .json(&json!({ "types": ["AssetV1"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (_, lines) = stream(&server, &token, json!({ "types": ["AssetsV1"] })).await;
    assert_eq!(types(&lines), vec!["AssetV1", "AssetV1", "SyncCompleteV1"]);
}

#[tokio::test]
async fn exif_rows_and_validation() {
    let server = TestServer::start(Dialect::Immich).await;
    let token = login(&server, "admin@example.com", "admin-password").await;
    let a = server.upload_as(&server.admin_id(), "a.jpg", [9u8; 33], Visibility::Timeline);
    let (_, lines) = stream(&server, &token, json!({ "types": ["AssetExifsV1"] })).await;
    assert_eq!(types(&lines), vec!["AssetExifV1", "SyncCompleteV1"]);
    assert_eq!(lines[0]["data"]["assetId"], a.as_str());
    assert_eq!(lines[0]["data"]["fileSizeInByte"], 33);

    let (status, _) = stream(&server, &token, json!({ "types": ["Bogus"] })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let resp = client()
        .post(format!("{}/sync/ack", server.api_url()))
        .bearer_auth(&token)
        .json(&json!({ "acks": ["Nope|x"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn forced_reset() {
    let server = TestServer::start(Dialect::Immich).await;
    let token = login(&server, "admin@example.com", "admin-password").await;
    server.upload_as(&server.admin_id(), "a.jpg", b"a", Visibility::Timeline);
    let (_, lines) = stream(&server, &token, json!({ "types": ["AssetsV1"] })).await;
    ack(&server, &token, last_acks(&lines)).await;

    assert!(server.force_sync_reset(&token));
    assert!(!server.force_sync_reset("unknown"));
    let (status, lines) = stream(&server, &token, json!({ "types": ["AssetsV1"] })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        lines,
        vec![json!({ "type": "SyncResetV1", "data": {}, "ack": "SyncResetV1|reset" })]
    );
    // Still pending until acked.
    let (_, lines) = stream(&server, &token, json!({ "types": ["AssetsV1"] })).await;
    assert_eq!(types(&lines), vec!["SyncResetV1"]);
    ack(&server, &token, vec!["SyncResetV1|reset".to_string()]).await;
    // The ack cleared every checkpoint: a full replay.
    let (_, lines) = stream(&server, &token, json!({ "types": ["AssetsV1"] })).await;
    assert_eq!(types(&lines), vec!["AssetV1", "SyncCompleteV1"]);

    // `reset: true` does the same in one go.
    ack(&server, &token, last_acks(&lines)).await;
    server.force_sync_reset(&token);
    let (_, lines) = stream(
        &server,
        &token,
        json!({ "types": ["AssetsV1"], "reset": true }),
    )
    .await;
    assert_eq!(types(&lines), vec!["AssetV1", "SyncCompleteV1"]);
}

#[tokio::test]
async fn legacy_full_and_delta_sync() {
    let server = TestServer::start(Dialect::Immich).await;
    let admin = server.admin_id();
    let a = server.upload_as(&admin, "a.jpg", b"a", Visibility::Timeline);
    server.upload_as(&admin, "h.jpg", b"h", Visibility::Hidden);
    let t = server.upload_as(&admin, "t.jpg", b"t", Visibility::Timeline);
    server.trash([&t]);

    let (status, list) = post(
        &server,
        "/sync/full-sync",
        json!({ "updatedUntil": "2100-01-01T00:00:00.000Z", "limit": 10 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let mut got: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    let mut want = vec![a.as_str(), t.as_str()];
    want.sort();
    got.sort();
    assert_eq!(got, want);

    let since = server.asset(&a).unwrap().updated_at;
    let (status, body) = post(
        &server,
        "/sync/delta-sync",
        json!({ "updatedAfter": since, "userIds": [admin] }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["needsFullSync"], false);
    assert_eq!(body["deleted"], json!([]));
    let upserted: Vec<&str> = body["upserted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(upserted, vec![t.as_str()]);
    let (_, body) = post(
        &server,
        "/sync/delta-sync",
        json!({ "updatedAfter": "2000-01-01T00:00:00.000Z", "userIds": [admin] }),
    )
    .await;
    assert_eq!(body["needsFullSync"], true);

    // Legacy sync is `@Authenticated()`: API keys need `all`.
    let key = server.create_api_key(&admin, &["asset.read"]);
    let (status, _) = post_with_key(&server, &key, "/sync/full-sync", json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
