//! Discovery, errors, authentication, permissions and the server/user endpoints of the
//! `immich` dialect.

mod common;

use common::*;
use immish_testserver::{Dialect, TestServer};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn discovery_and_the_spa_quirk() {
    let server = TestServer::start(Dialect::Immich).await;
    let http = client();
    let base = server.base_url();

    let wk: serde_json::Value = http
        .get(format!("{base}/.well-known/immich"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(wk, json!({ "api": { "endpoint": "/api" } }));

    let (status, body) = json_of(
        http.get(format!("{base}/api/server/ping"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "res": "pong" }));

    // Without /api: the web app's HTML, with 200.
    let resp = http
        .get(format!("{base}/server/ping"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(resp.text().await.unwrap().contains("<html"));
    assert_eq!(server.requests("GET /server/ping (web)"), 1);
    assert_eq!(server.requests_with_status("GET /server/ping", 200), 1);

    // Unknown /api route: 404 JSON, Nest style, with the correlation id echoed.
    let resp = http
        .get(format!("{base}/api/nope"))
        .header("x-immich-cid", "cid-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-immich-cid"], "cid-123");
    let (status, body) = json_of(resp).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({
            "message": "Cannot GET /api/nope",
            "error": "Not Found",
            "statusCode": 404,
            "correlationId": "cid-123",
        })
    );

    // GET /api/assets?updatedAfter= does not exist in v2.7.5 (only POST and DELETE do).
    let (status, body) = get(&server, "/assets?updatedAfter=2024-01-01T00:00:00Z").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "Cannot GET /api/assets");
    // Non-API POSTs are not the SPA.
    let resp = http.post(format!("{base}/assets")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn credentials_are_resolved_like_immich() {
    let server = TestServer::start(Dialect::Immich).await;
    let http = client();
    let me = format!("{}/users/me", server.api_url());

    let (status, body) = json_of(http.get(&me).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["message"], "Authentication required");
    assert_eq!(body["error"], "Unauthorized");
    assert_eq!(body["statusCode"], 401);
    assert!(body["correlationId"].is_string());

    // An API key sent as a Bearer token is taken as a session token.
    let (status, body) = json_of(
        http.get(&me)
            .bearer_auth(server.api_key())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["message"], "Invalid user token");

    let (status, body) = json_of(
        http.get(&me)
            .header("x-api-key", "wrong")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["message"], "Invalid API key");

    // A stale bearer token shadows a good x-api-key: no fallback.
    let (status, _) = json_of(
        http.get(&me)
            .bearer_auth("stale")
            .header("x-api-key", server.api_key())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // ?apiKey= works for REST.
    let (status, body) = json_of(
        http.get(format!("{me}?apiKey={}", server.api_key()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["email"], "admin@example.com");
}

#[tokio::test]
async fn login_sessions_and_logout() {
    let server = TestServer::start(Dialect::Immich).await;
    let http = client();
    let api = server.api_url();

    let (status, body) = json_of(
        http.post(format!("{api}/auth/login"))
            .json(&json!({ "email": "ADMIN@example.com", "password": "nope" }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["message"], "Incorrect email or password");

    let resp = http
        .post(format!("{api}/auth/login"))
        .json(&json!({ "email": "ADMIN@example.com", "password": "admin-password" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let cookies: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(cookies
        .iter()
        .any(|c| c.starts_with("immich_access_token=")));
    let body: serde_json::Value = resp.json().await.unwrap();
    let token = body["accessToken"].as_str().unwrap().to_string();
    assert_eq!(body["userId"], server.admin_id());
    assert_eq!(body["userEmail"], "admin@example.com");
    assert_eq!(body["isAdmin"], true);
    // Opaque, not a JWT.
    assert!(!token.contains('.') && token.len() >= 30, "{token}");

    for (name, value) in [
        ("authorization", format!("Bearer {token}")),
        ("x-immich-user-token", token.clone()),
        ("cookie", format!("immich_access_token={token}")),
    ] {
        let (status, body) = json_of(
            http.post(format!("{api}/auth/validateToken"))
                .header(name, value)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{name}");
        assert_eq!(body, json!({ "authStatus": true }));
    }

    // /api-keys/me is for API keys.
    let (status, _) = json_of(
        http.get(format!("{api}/api-keys/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, body) = json_of(
        http.post(format!("{api}/auth/logout"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["successful"], true);
    let (status, body) = json_of(
        http.post(format!("{api}/auth/validateToken"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["message"], "Invalid user token");
}

#[tokio::test]
async fn api_key_permissions() {
    let server = TestServer::start(Dialect::Immich).await;
    let key = server.create_api_key(&server.admin_id(), &["asset.upload", "asset.read"]);

    let (status, body) = json_of(
        keyed(
            client().get(format!("{}/api-keys/me", server.api_url())),
            &key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["permissions"], json!(["asset.upload", "asset.read"]));

    let (status, body) = json_of(
        keyed(client().get(format!("{}/users/me", server.api_url())), &key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["message"], "Missing required permission: user.read");
    assert_eq!(body["error"], "Forbidden");

    // Granted routes work; `@Authenticated()` routes need `all`.
    let (status, _) = upload_with_key(&server, &key, "a.jpg", b"perm").await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = post_with_key(&server, &key, "/search/metadata", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = post_with_key(&server, &key, "/auth/logout", json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["message"], "Missing required permission: all");
    let (status, body) = post_with_key(&server, &key, "/albums", json!({ "albumName": "x" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["message"], "Missing required permission: album.create");
    // validateToken needs no permission at all.
    let (status, _) = post_with_key(&server, &key, "/auth/validateToken", json!({})).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn server_and_user_endpoints() {
    let server = TestServer::start(Dialect::Immich).await;

    let (_, v) = get(&server, "/server/version").await;
    assert_eq!(v, json!({ "major": 2, "minor": 7, "patch": 5 }));
    let (_, about) = get(&server, "/server/about").await;
    assert_eq!(about["version"], "v2.7.5");
    let (_, features) = get(&server, "/server/features").await;
    assert_eq!(features["trash"], true);
    assert!(features.get("smartSearch").is_some());
    assert!(features.get("clipEncode").is_none());
    let (_, config) = get(&server, "/server/config").await;
    assert_eq!(config["trashDays"], 30);
    let (_, storage) = get(&server, "/server/storage").await;
    assert!(storage["diskSize"].is_string());
    assert!(storage["diskSizeRaw"].is_u64());
    let (_, media) = get(&server, "/server/media-types").await;
    let images: Vec<&str> = media["image"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(images.contains(&".heic") && images.contains(&".jpg"));
    assert!(!images.contains(&".mpo"));
    assert_eq!(media["sidecar"], json!([".xmp"]));

    // The storage endpoint needs server.storage; ping and media types need nothing.
    let key = server.create_api_key(&server.admin_id(), &["asset.read"]);
    let (status, _) = json_of(
        keyed(
            client().get(format!("{}/server/storage", server.api_url())),
            &key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let status = client()
        .get(format!("{}/server/media-types", server.api_url()))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK);

    server.set_quota(&server.admin_id(), 1000);
    upload(&server, "q.jpg", &[7u8; 100]).await;
    let (_, me) = get(&server, "/users/me").await;
    assert_eq!(me["id"], server.admin_id());
    assert_eq!(me["email"], server.admin_email());
    assert_eq!(me["quotaSizeInBytes"], 1000);
    assert_eq!(me["quotaUsageInBytes"], 100);
    server.set_quota(&server.admin_id(), None);
    let (_, me) = get(&server, "/users/me").await;
    assert!(me["quotaSizeInBytes"].is_null());
}

#[tokio::test]
async fn users_are_separate() {
    let server = TestServer::start(Dialect::Immich).await;
    let bob = server.add_user("bob@example.com", "bob-password");
    let bob_key = server.create_api_key(&bob, &["all"]);
    let (status, body) = json_of(
        keyed(
            client().get(format!("{}/users/me", server.api_url())),
            &bob_key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["id"], bob);
    assert_eq!(body["isAdmin"], false);
    let token = login(&server, "bob@example.com", "bob-password").await;
    assert!(!token.is_empty());
    assert_eq!(server.login("bob@example.com", "wrong"), None);
}
