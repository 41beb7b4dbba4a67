//! `POST /assets` and `POST /assets/bulk-upload-check` in the `immich` dialect.

mod common;

use common::*;
use immish_testserver::{Dialect, TestServer, Visibility};
use reqwest::multipart::{Form, Part};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn created_then_duplicate_with_real_checksums() {
    let server = TestServer::builder().keep_bytes(true).start().await;
    let data = b"hello photo".to_vec();

    let (status, body) = upload(&server, "IMG_0001.JPG", &data).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["status"], "created");
    let id = body["id"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok());

    let stored = server.assets(&server.admin_id());
    assert_eq!(stored.len(), 1);
    let a = &stored[0];
    assert_eq!(a.id, id);
    assert_eq!(a.checksum_hex, sha1_hex(&data));
    assert_eq!(a.size, data.len() as u64);
    assert_eq!(a.original_file_name, "IMG_0001.JPG");
    assert_eq!(a.device_asset_id.as_deref(), Some("IMG_0001.JPG-11"));
    assert_eq!(a.device_id.as_deref(), Some("test"));
    assert_eq!(a.file_created_at, DATE);
    assert_eq!(a.visibility, Visibility::Timeline);
    assert_eq!(a.data.as_deref(), Some(&data[..]));
    assert_eq!(a.asset_type, "IMAGE");

    let (_, json) = get(&server, &format!("/assets/{id}")).await;
    assert_eq!(json["checksum"], sha1_b64(&data));
    assert_eq!(json["originalFileName"], "IMG_0001.JPG");
    assert_eq!(json["deviceAssetId"], "IMG_0001.JPG-11");
    assert_eq!(json["isTrashed"], false);
    assert_eq!(json["visibility"], "timeline");
    assert_eq!(json["type"], "IMAGE");
    assert_eq!(json["exifInfo"]["fileSizeInByte"], 11);

    // Same bytes again: the body is read, then 200 duplicate with the existing id.
    let (status, body) = upload(&server, "copy.jpg", &data).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "id": id, "status": "duplicate" }));
    assert_eq!(server.upload_bodies(), 2);
    assert_eq!(server.asset_count(&server.admin_id()), 1);
    assert_eq!(server.requests_with_status("POST /assets", 201), 1);
    assert_eq!(server.requests_with_status("POST /assets", 200), 1);
    assert!(server.upload_body_bytes() > 2 * data.len() as u64);
    assert_eq!(server.upload_file_bytes(), 2 * data.len() as u64);

    // Another user may store the same bytes.
    let bob = server.add_user("bob@example.com", "pw-bob-123");
    let bob_key = server.create_api_key(&bob, &["asset.upload"]);
    let (status, _) = upload_with_key(&server, &bob_key, "x.jpg", &data).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn checksum_header_answers_before_the_body() {
    let server = TestServer::start(Dialect::Immich).await;
    let data = vec![42u8; 4096];
    let (_, body) = upload(&server, "a.jpg", &data).await;
    let id = body["id"].as_str().unwrap().to_string();
    server.reset_counters();

    for header in [
        sha1_hex(&data),
        sha1_hex(&data).to_uppercase(),
        sha1_b64(&data),
    ] {
        let resp = client()
            .post(format!("{}/assets", server.api_url()))
            .header("x-api-key", server.api_key())
            .header("x-immich-checksum", header)
            .multipart(upload_form("a.jpg", data.clone()))
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(resp).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({ "status": "duplicate", "id": id }));
    }
    // A 20 MiB streamed body: the reply still arrives, and none of it is read.
    let resp = client()
        .post(format!("{}/assets", server.api_url()))
        .header("x-api-key", server.api_key())
        .header("x-immich-checksum", sha1_hex(&data))
        .multipart(streamed_form("big.mp4", 20 << 20))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Not a single byte of any body was read.
    assert_eq!(server.upload_bodies(), 0);
    assert_eq!(server.upload_body_bytes(), 0);

    // A checksum that matches nothing: the upload proceeds normally.
    let other = b"other".to_vec();
    let resp = client()
        .post(format!("{}/assets", server.api_url()))
        .header("x-api-key", server.api_key())
        .header("x-immich-checksum", sha1_hex(b"something else"))
        .multipart(upload_form("b.jpg", other))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(server.upload_bodies(), 1);

    // The header is checked after auth.
    let resp = client()
        .post(format!("{}/assets", server.api_url()))
        .header("x-immich-checksum", sha1_hex(&data))
        .multipart(upload_form("a.jpg", data.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn validation_errors() {
    let server = TestServer::start(Dialect::Immich).await;
    let send = |form: Form| {
        let server_url = server.api_url();
        let key = server.api_key();
        async move {
            json_of(
                client()
                    .post(format!("{server_url}/assets"))
                    .header("x-api-key", key)
                    .multipart(form)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };

    // No file part.
    let (status, body) = send(Form::new().text("deviceAssetId", "x")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "Field(s) assetData should not be empty");

    // Missing fields: class-validator messages, as an array.
    let form = Form::new().part("assetData", Part::bytes(b"x".to_vec()).file_name("a.jpg"));
    let (status, body) = send(form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let messages: Vec<&str> = body["message"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    for expected in [
        "deviceAssetId should not be empty",
        "deviceId should not be empty",
        "fileCreatedAt must be a Date instance",
        "fileModifiedAt must be a Date instance",
    ] {
        assert!(messages.contains(&expected), "{messages:?}");
    }
    assert_eq!(body["error"], "Bad Request");

    // v2.7.5 accepts offsets in dates.
    let form = Form::new()
        .text("deviceAssetId", "d")
        .text("deviceId", "dev")
        .text("fileCreatedAt", "2024-05-01T12:00:00+02:00")
        .text("fileModifiedAt", "2024-05-01T12:00:00+02:00")
        .part(
            "assetData",
            Part::bytes(b"offset".to_vec()).file_name("a.jpg"),
        );
    let (status, body) = send(form).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, a) = get(
        &server,
        &format!("/assets/{}", body["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(a["fileCreatedAt"], "2024-05-01T10:00:00.000Z");
    // Without EXIF, v2.7.5 keeps the instant and loses the offset (docs/SERVER-API.md#dates).
    assert_eq!(a["localDateTime"], "2024-05-01T10:00:00.000Z");

    // Bad visibility.
    let form = upload_form("v.jpg", b"vis".to_vec()).text("visibility", "public");
    let (status, body) = send(form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"][0]
        .as_str()
        .unwrap()
        .starts_with("visibility must be one of"));
    assert_eq!(server.asset_count(&server.admin_id()), 1);
}

#[tokio::test]
async fn file_type_check_and_filename_order() {
    let server = TestServer::start(Dialect::Immich).await;
    let send = |form: Form| {
        let url = format!("{}/assets", server.api_url());
        let key = server.api_key();
        async move {
            json_of(
                client()
                    .post(url)
                    .header("x-api-key", key)
                    .multipart(form)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };

    let (status, body) = send(upload_form("notes.txt", b"text".to_vec())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "Unsupported file type notes.txt");
    assert_eq!(server.upload_bodies(), 0);

    // `filename` sent before the file part drives the check...
    let form = Form::new()
        .text("deviceAssetId", "d")
        .text("deviceId", "dev")
        .text("fileCreatedAt", DATE)
        .text("fileModifiedAt", DATE)
        .text("filename", "real.heic")
        .part(
            "assetData",
            Part::bytes(b"one".to_vec()).file_name("blob.bin"),
        );
    let (status, body) = send(form).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(server.asset(&id).unwrap().original_file_name, "real.heic");

    // ...but after the file part it does not (yet still names the asset).
    let form = Form::new()
        .text("deviceAssetId", "d")
        .text("deviceId", "dev")
        .text("fileCreatedAt", DATE)
        .text("fileModifiedAt", DATE)
        .part(
            "assetData",
            Part::bytes(b"two".to_vec()).file_name("blob.bin"),
        )
        .text("filename", "real.heic");
    let (status, body) = send(form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "Unsupported file type blob.bin");

    let form = Form::new()
        .text("deviceAssetId", "d")
        .text("deviceId", "dev")
        .text("fileCreatedAt", DATE)
        .text("fileModifiedAt", DATE)
        .part(
            "assetData",
            Part::bytes(b"three".to_vec()).file_name("clip.MOV"),
        )
        .text("filename", "renamed.mov");
    let (status, body) = send(form).await;
    assert_eq!(status, StatusCode::CREATED);
    let a = server.asset(body["id"].as_str().unwrap()).unwrap();
    assert_eq!(a.original_file_name, "renamed.mov");
    assert_eq!(a.asset_type, "VIDEO");

    // The sidecar gotcha: `filename=IMG.jpg` before the sidecar gets it rejected.
    let form = Form::new()
        .text("deviceAssetId", "d")
        .text("deviceId", "dev")
        .text("fileCreatedAt", DATE)
        .text("fileModifiedAt", DATE)
        .text("filename", "IMG.jpg")
        .part(
            "assetData",
            Part::bytes(b"four".to_vec()).file_name("IMG.jpg"),
        )
        .part(
            "sidecarData",
            Part::bytes(b"<x/>".to_vec()).file_name("IMG.jpg.xmp"),
        );
    let (status, body) = send(form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "Unsupported file type IMG.jpg");
}

#[tokio::test]
async fn raw_utf8_file_names_are_preserved() {
    let server = TestServer::start(Dialect::Immich).await;
    let name = "Été à Zürich — 写真.jpg";
    let form = Form::new()
        .percent_encode_noop()
        .text("deviceAssetId", "d")
        .text("deviceId", "dev")
        .text("fileCreatedAt", DATE)
        .text("fileModifiedAt", DATE)
        .part("assetData", Part::bytes(b"utf8".to_vec()).file_name(name));
    let resp = client()
        .post(format!("{}/assets", server.api_url()))
        .header("x-api-key", server.api_key())
        .multipart(form)
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, a) = get(
        &server,
        &format!("/assets/{}", body["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(a["originalFileName"], name);
}

#[tokio::test]
async fn quota_and_storage_full() {
    let server = TestServer::start(Dialect::Immich).await;
    server.set_quota(&server.admin_id(), 150);
    let (status, _) = upload(&server, "a.jpg", &[1u8; 100]).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = upload(&server, "b.jpg", &[2u8; 100]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "Quota has been exceeded!");
    // The body was read before the quota check.
    assert_eq!(server.upload_bodies(), 2);
    assert_eq!(server.asset_count(&server.admin_id()), 1);

    server.set_quota(&server.admin_id(), None);
    server.storage_full(true);
    let (status, body) = upload(&server, "b.jpg", &[2u8; 100]).await;
    assert_eq!(status.as_u16(), 507);
    assert_eq!(body["statusCode"], 507);
    server.storage_full(false);
    let (status, _) = upload(&server, "b.jpg", &[2u8; 100]).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn bulk_upload_check_hex_base64_and_trash() {
    let server = TestServer::start(Dialect::Immich).await;
    let a = b"first".to_vec();
    let b = b"second".to_vec();
    let (_, body) = upload(&server, "a.jpg", &a).await;
    let a_id = body["id"].as_str().unwrap().to_string();
    let (_, body) = upload(&server, "b.jpg", &b).await;
    let b_id = body["id"].as_str().unwrap().to_string();
    assert_eq!(server.trash([&b_id]), 1);

    let (status, body) = post(
        &server,
        "/assets/bulk-upload-check",
        json!({ "assets": [
            { "id": "one", "checksum": sha1_hex(&a) },
            { "id": "two", "checksum": sha1_b64(&b) },
            { "id": "three", "checksum": sha1_hex(b"new") },
            { "id": "four", "checksum": "not-a-checksum" },
        ]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({ "results": [
            { "id": "one", "action": "reject", "reason": "duplicate", "assetId": a_id, "isTrashed": false },
            { "id": "two", "action": "reject", "reason": "duplicate", "assetId": b_id, "isTrashed": true },
            { "id": "three", "action": "accept" },
            { "id": "four", "action": "accept" },
        ]})
    );

    // A trashed asset still makes an upload a duplicate.
    let (status, body) = upload(&server, "b.jpg", &b).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["id"], b_id.as_str());

    // Another user's assets never match.
    let bob = server.add_user("bob@example.com", "pw-bob-123");
    let bob_key = server.create_api_key(&bob, &["asset.upload"]);
    let (_, body) = post_with_key(
        &server,
        &bob_key,
        "/assets/bulk-upload-check",
        json!({ "assets": [{ "id": "one", "checksum": sha1_hex(&a) }] }),
    )
    .await;
    assert_eq!(body["results"][0]["action"], "accept");
    let (status, body) =
        post_with_key(&server, &bob_key, "/assets/bulk-upload-check", json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].is_array());
}

#[tokio::test]
async fn visibility_and_favorite_fields() {
    let server = TestServer::start(Dialect::Immich).await;
    let form = upload_form("h.jpg", b"hidden".to_vec())
        .text("visibility", "hidden")
        .text("isFavorite", "true");
    let resp = client()
        .post(format!("{}/assets", server.api_url()))
        .header("x-api-key", server.api_key())
        .multipart(form)
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_eq!(status, StatusCode::CREATED);
    let a = server.asset(body["id"].as_str().unwrap()).unwrap();
    assert_eq!(a.visibility, Visibility::Hidden);
    assert!(a.is_favorite);
    // Old fields are stripped in v2.7.5.
    let form = upload_form("arch.jpg", b"archived?".to_vec()).text("isArchived", "true");
    let resp = client()
        .post(format!("{}/assets", server.api_url()))
        .header("x-api-key", server.api_key())
        .multipart(form)
        .send()
        .await
        .unwrap();
    let (_, body) = json_of(resp).await;
    let a = server.asset(body["id"].as_str().unwrap()).unwrap();
    assert_eq!(a.visibility, Visibility::Timeline);
}

#[tokio::test]
async fn large_uploads_have_no_size_limit() {
    let server = TestServer::start(Dialect::Immich).await;
    let len = 24 << 20;
    let resp = client()
        .post(format!("{}/assets", server.api_url()))
        .header("x-api-key", server.api_key())
        .multipart(streamed_form("big.mp4", len))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let a = &server.assets(&server.admin_id())[0];
    assert_eq!(a.size, len as u64);
    let full: Vec<u8> = (0..len.div_ceil(65536))
        .flat_map(|i| vec![(i % 251) as u8; 65536.min(len - i * 65536)])
        .collect();
    assert_eq!(a.checksum_hex, sha1_hex(&full));
    assert_eq!(a.data, None);
    assert_eq!(server.upload_file_bytes(), len as u64);
}
