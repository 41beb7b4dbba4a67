//! The behaviour measured on real Immich servers (issue 9; docs/SERVER-API.md#dates,
//! docs/SERVER-API.md#15-live-photos-sidecars-stacks-and-albums, docs/SERVER-API.md#events),
//! one test per area where the test server used to differ: Live Photos, stacks, dates and
//! metadata, the empty bulk check, the next major's version, validation texts, the small
//! differences, and the record of what each upload carried.

mod common;

use std::time::Duration;

use common::*;
use immish_testserver::fixtures::{mp4, xmp_sidecar, Photo};
use immish_testserver::{Dialect, TestServer};
use reqwest::multipart::{Form, Part};
use reqwest::StatusCode;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(5);

async fn send_form(server: &TestServer, form: Form) -> (StatusCode, Value) {
    let resp = client()
        .post(format!("{}/assets", server.api_url()))
        .header("x-api-key", server.api_key())
        .multipart(form)
        .send()
        .await
        .unwrap();
    json_of(resp).await
}

async fn put(server: &TestServer, path: &str, body: Value) -> (StatusCode, Value) {
    let resp = client()
        .put(format!("{}{path}", server.api_url()))
        .header("x-api-key", server.api_key())
        .json(&body)
        .send()
        .await
        .unwrap();
    json_of(resp).await
}

fn id_of(body: &Value) -> String {
    body["id"].as_str().expect("id").to_string()
}

fn search_ids(body: &Value) -> Vec<String> {
    body["assets"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect()
}

/// Every event arriving within `window`, answering pings.
async fn events_within(ws: &mut Ws, window: Duration) -> Vec<(String, Value)> {
    let deadline = tokio::time::Instant::now() + window;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return out;
        }
        match ws_event(ws, left).await {
            Some(e) => out.push(e),
            None => return out,
        }
    }
}

#[tokio::test]
async fn live_photos_link_hide_and_refuse() {
    // A long event delay, so the photo is linked well before the video's thumbnails are "done".
    let server = TestServer::builder()
        .upload_event_delay(Duration::from_millis(800))
        .start()
        .await;
    let mut ws = ws_connected(&server).await;
    let (status, video) = send_form(&server, upload_form("IMG_0001.MOV", mp4("live"))).await;
    assert_eq!(status, StatusCode::CREATED);
    let video_id = id_of(&video);

    // Not a UUID; an image as the video.
    let form = upload_form("IMG_0001.HEIC", b"photo".to_vec()).text("livePhotoVideoId", "nope");
    let (status, body) = send_form(&server, form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], json!(["livePhotoVideoId must be a UUID"]));
    let image = server.upload_as(
        &server.admin_id(),
        "still.jpg",
        b"still",
        immish_testserver::Visibility::Timeline,
    );
    let form =
        upload_form("IMG_0001.HEIC", b"photo".to_vec()).text("livePhotoVideoId", image.clone());
    let (status, body) = send_form(&server, form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "Live photo video must be a video");
    assert_eq!(
        server.asset(&video_id).unwrap().visibility.as_str(),
        "timeline"
    );

    // The photo with its video: linked, the video hidden.
    let form =
        upload_form("IMG_0001.HEIC", b"photo".to_vec()).text("livePhotoVideoId", video_id.clone());
    let (status, photo) = send_form(&server, form).await;
    assert_eq!(status, StatusCode::CREATED, "{photo}");
    let photo_id = id_of(&photo);
    assert_eq!(
        server
            .asset(&photo_id)
            .unwrap()
            .live_photo_video_id
            .as_deref(),
        Some(video_id.as_str())
    );
    let (_, a) = get(&server, &format!("/assets/{photo_id}")).await;
    assert_eq!(a["livePhotoVideoId"], video_id.as_str());
    let (_, v) = get(&server, &format!("/assets/{video_id}")).await;
    assert_eq!(v["visibility"], "hidden");

    // Out of the timeline search and the statistics.
    let (_, found) = post(&server, "/search/metadata", json!({})).await;
    let found = search_ids(&found);
    assert!(
        found.contains(&photo_id) && !found.contains(&video_id),
        "{found:?}"
    );
    let (_, stats) = get(&server, "/assets/statistics").await;
    assert_eq!(stats, json!({ "images": 2, "videos": 0, "total": 2 }));

    // `on_asset_hidden` for the video; `on_upload_success` for the photos, never the video.
    let events = events_within(&mut ws, Duration::from_millis(1500)).await;
    assert!(
        events.contains(&("on_asset_hidden".to_string(), json!(video_id))),
        "{events:?}"
    );
    let uploaded: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "on_upload_success" || n == "AssetUploadReadyV1")
        .map(|(_, p)| p.get("asset").unwrap_or(p))
        .map(|a| &a["id"])
        .collect();
    assert!(uploaded.contains(&&json!(photo_id)), "{events:?}");
    assert!(!uploaded.contains(&&json!(video_id)), "{events:?}");

    // `PUT /assets/:id`: unlink (the video comes back), then link again.
    let (status, body) = put(
        &server,
        &format!("/assets/{photo_id}"),
        json!({ "livePhotoVideoId": null }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["livePhotoVideoId"].is_null());
    assert_eq!(
        server.asset(&video_id).unwrap().visibility.as_str(),
        "timeline"
    );
    let (status, body) = put(
        &server,
        &format!("/assets/{photo_id}"),
        json!({ "livePhotoVideoId": video_id }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["livePhotoVideoId"], video_id.as_str());
    assert_eq!(
        server.asset(&video_id).unwrap().visibility.as_str(),
        "hidden"
    );
    let (status, body) = put(
        &server,
        &format!("/assets/{photo_id}"),
        json!({ "livePhotoVideoId": image }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "Live photo video must be a video");
    let (status, body) = put(
        &server,
        &format!("/assets/{photo_id}"),
        json!({ "livePhotoVideoId": 7 }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], json!(["livePhotoVideoId must be a UUID"]));

    // Deleting the photo for good takes its video along.
    assert_eq!(server.delete_permanently([&photo_id]), 2);
    assert!(server.asset(&video_id).is_none());
}

#[tokio::test]
async fn stacks_create_read_and_merge() {
    let server = TestServer::start(Dialect::Immich).await;
    let admin = server.admin_id();
    let up = |name: &str| {
        server.upload_as(
            &admin,
            name,
            name.as_bytes(),
            immish_testserver::Visibility::Timeline,
        )
    };
    let (raw, jpeg, other) = (up("a.dng"), up("a.jpg"), up("b.jpg"));
    let mut ws = ws_connected(&server).await;

    let (status, stack) = post(&server, "/stacks", json!({ "assetIds": [jpeg, raw] })).await;
    assert_eq!(status, StatusCode::CREATED, "{stack}");
    let stack_id = id_of(&stack);
    assert_eq!(stack["primaryAssetId"], jpeg.as_str());
    let members: Vec<&str> = stack["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(members, vec![jpeg.as_str(), raw.as_str()]);
    // (The uploads' own events may come first.)
    let events = events_within(&mut ws, Duration::from_millis(500)).await;
    assert!(
        events.contains(&("on_asset_stack_update".to_string(), Value::Null)),
        "{events:?}"
    );

    let (_, a) = get(&server, &format!("/assets/{raw}")).await;
    assert_eq!(
        a["stack"],
        json!({ "id": stack_id, "primaryAssetId": jpeg, "assetCount": 2 })
    );
    assert_eq!(
        server.asset(&raw).unwrap().stack_id.as_deref(),
        Some(stack_id.as_str())
    );
    let (_, list) = get(&server, "/stacks").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (_, list) = get(&server, &format!("/stacks?primaryAssetId={raw}")).await;
    assert_eq!(list, json!([]));
    let (status, _) = get(&server, &format!("/stacks/{stack_id}")).await;
    assert_eq!(status, StatusCode::OK);

    // A new stack that lists the old stack's primary absorbs the old stack.
    let (status, merged) = post(&server, "/stacks", json!({ "assetIds": [other, jpeg] })).await;
    assert_eq!(status, StatusCode::CREATED);
    let merged_id = id_of(&merged);
    assert_eq!(merged["primaryAssetId"], other.as_str());
    assert_eq!(merged["assets"].as_array().unwrap().len(), 3);
    let (status, body) = get(&server, &format!("/stacks/{stack_id}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "Not found or no stack.read access");
    assert_eq!(
        server.asset(&raw).unwrap().stack_id.as_deref(),
        Some(merged_id.as_str())
    );

    // Changing the primary, refusals, and permissions.
    let bob = server.add_user("bob@example.com", "pw-bob-123");
    let bob_asset = server.upload_as(
        &bob,
        "bob.jpg",
        b"bob",
        immish_testserver::Visibility::Timeline,
    );
    let (status, body) = put(
        &server,
        &format!("/stacks/{merged_id}"),
        json!({ "primaryAssetId": bob_asset }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "Primary asset must be in the stack");
    let (status, body) = put(
        &server,
        &format!("/stacks/{merged_id}"),
        json!({ "primaryAssetId": raw }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["assets"][0]["id"], raw.as_str());
    let (status, body) = post(&server, "/stacks", json!({ "assetIds": [raw, bob_asset] })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "Not found or no asset.update access");
    let (status, body) = post(&server, "/stacks", json!({ "assetIds": [raw] })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        json!(["assetIds must contain at least 2 elements"])
    );
    let key = server.create_api_key(&admin, &["asset.read"]);
    let (status, body) =
        post_with_key(&server, &key, "/stacks", json!({ "assetIds": [raw, jpeg] })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["message"], "Missing required permission: stack.create");

    // Removing: a member, then the whole stack.
    let resp = client()
        .delete(format!(
            "{}/stacks/{merged_id}/assets/{jpeg}",
            server.api_url()
        ))
        .header("x-api-key", server.api_key())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(server.asset(&jpeg).unwrap().stack_id, None);
    let resp = client()
        .delete(format!("{}/stacks/{merged_id}", server.api_url()))
        .header("x-api-key", server.api_key())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(server.asset(&raw).unwrap().stack_id, None);
    let (_, a) = get(&server, &format!("/assets/{raw}")).await;
    assert!(a["stack"].is_null());
}

#[tokio::test]
async fn the_metadata_job_replaces_dates_and_fills_exif() {
    let server = TestServer::builder()
        .metadata_delay(Duration::from_millis(1000))
        .start()
        .await;
    let photo = Photo::new("exif")
        .taken("2019:07:04 18:30:00", Some("+02:00"))
        .camera("Canon", "EOS R5")
        .size(6000, 4000)
        .orientation(6)
        .jpeg();
    let (status, body) = send_form(&server, upload_form("IMG_0002.JPG", photo)).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = id_of(&body);

    // Right after the upload the form's date stands and nothing is extracted yet.
    let (_, before) = get(&server, &format!("/assets/{id}")).await;
    assert_eq!(before["fileCreatedAt"], DATE);
    assert!(before["exifInfo"]["dateTimeOriginal"].is_null());
    assert!(before["width"].is_null());

    assert!(server.wait_for_metadata(&id, WAIT).await);
    let (_, a) = get(&server, &format!("/assets/{id}")).await;
    assert_eq!(a["fileCreatedAt"], "2019-07-04T16:30:00.000Z");
    assert_eq!(a["localDateTime"], "2019-07-04T18:30:00.000Z");
    assert_eq!(a["fileModifiedAt"], DATE);
    let exif = &a["exifInfo"];
    assert_eq!(exif["dateTimeOriginal"], "2019-07-04T16:30:00.000Z");
    assert_eq!(exif["timeZone"], "UTC+2");
    assert_eq!(exif["make"], "Canon");
    assert_eq!(exif["model"], "EOS R5");
    assert_eq!(exif["orientation"], "6");
    assert_eq!(
        (
            exif["exifImageWidth"].clone(),
            exif["exifImageHeight"].clone()
        ),
        (json!(6000), json!(4000))
    );
    // Rotated 90°: shown portrait.
    assert_eq!(
        (a["width"].clone(), a["height"].clone()),
        (json!(4000), json!(6000))
    );
    // The job's write bumps updatedAt, as the real trigger does.
    assert!(a["updatedAt"].as_str() > before["updatedAt"].as_str());

    // An XMP sidecar's description (no `filename` field before it: the sidecar gotcha).
    let form = Form::new()
        .text("deviceAssetId", "side")
        .text("deviceId", "test")
        .text("fileCreatedAt", DATE)
        .text("fileModifiedAt", DATE)
        .part(
            "assetData",
            Part::bytes(Photo::new("side").jpeg()).file_name("IMG_0003.JPG"),
        )
        .part(
            "sidecarData",
            Part::bytes(xmp_sidecar(Some("by the sea"), None).into_bytes())
                .file_name("IMG_0003.JPG.xmp"),
        );
    let (status, body) = send_form(&server, form).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let side = id_of(&body);
    assert!(server.wait_for_metadata(&side, WAIT).await);
    let (_, a) = get(&server, &format!("/assets/{side}")).await;
    assert_eq!(a["exifInfo"]["description"], "by the sea");
    assert_eq!(a["fileCreatedAt"], DATE);

    // No EXIF and an offset in the form: the UTC instant becomes localDateTime; the earlier of
    // fileCreatedAt and fileModifiedAt wins.
    let form = Form::new()
        .text("deviceAssetId", "off")
        .text("deviceId", "test")
        .text("fileCreatedAt", "2024-05-01T12:00:00+02:00")
        .text("fileModifiedAt", "2024-05-01T09:00:00Z")
        .part(
            "assetData",
            Part::bytes(b"no exif".to_vec()).file_name("x.jpg"),
        );
    let (_, body) = send_form(&server, form).await;
    let plain = id_of(&body);
    assert!(server.wait_for_metadata(&plain, WAIT).await);
    let (_, a) = get(&server, &format!("/assets/{plain}")).await;
    assert_eq!(a["fileCreatedAt"], "2024-05-01T09:00:00.000Z");
    assert_eq!(a["localDateTime"], "2024-05-01T09:00:00.000Z");
    assert!(a["exifInfo"]["timeZone"].is_null());
}

#[tokio::test]
async fn an_empty_bulk_check_is_a_500_on_both_immich_dialects() {
    for dialect in [Dialect::Immich, Dialect::ImmichNext] {
        let server = TestServer::start(dialect).await;
        let resp = client()
            .post(format!("{}/assets/bulk-upload-check", server.api_url()))
            .header("x-api-key", server.api_key())
            .header("x-immich-cid", "cid-empty")
            .json(&json!({ "assets": [] }))
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(resp).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{dialect}");
        assert_eq!(
            body,
            json!({
                "message": "Failed to check bulk upload",
                "error": "Internal Server Error",
                "statusCode": 500,
                "correlationId": "cid-empty",
            }),
            "{dialect}"
        );
        assert_eq!(server.empty_bulk_checks(), 1, "{dialect}");
        // A non-empty one is counted as such: not at all.
        let (status, _) = post(
            &server,
            "/assets/bulk-upload-check",
            json!({ "assets": [{ "id": "x", "checksum": sha1_hex(b"x") }] }),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(server.empty_bulk_checks(), 1, "{dialect}");
    }
}

#[tokio::test]
async fn the_next_major_reports_2_7_5_everywhere() {
    let server = TestServer::start(Dialect::ImmichNext).await;
    let (_, v) = get(&server, "/server/version").await;
    assert_eq!(v, json!({ "major": 2, "minor": 7, "patch": 5 }));
    let (_, about) = get(&server, "/server/about").await;
    assert_eq!(about["version"], "v2.7.5");
    assert_eq!(about["sourceRef"], "main");
    let (_, history) = get(&server, "/server/version-history").await;
    assert_eq!(history[0]["version"], "2.7.5");
    let key = server.api_key();
    let mut ws = ws_open(&server.socket_url(), &[("x-api-key", &key)]).await;
    ws_text(&mut ws, WAIT).await.unwrap();
    ws_send(&mut ws, "40").await;
    ws_text(&mut ws, WAIT).await.unwrap();
    let (name, payload) = ws_event(&mut ws, WAIT).await.unwrap();
    assert_eq!(name, "on_server_version");
    assert_eq!(payload["raw"], "2.7.5");
    assert_eq!(payload["version"], "2.7.5");
    assert_eq!(payload["major"], 2);
    // What still tells it apart: behaviour (no legacy sync, zod messages, `Z` dates only).
    let (status, _) = post(&server, "/sync/full-sync", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn validation_messages_as_measured() {
    let server = TestServer::start(Dialect::Immich).await;
    // Exactly lowercase booleans.
    let form = upload_form("a.jpg", b"fav".to_vec()).text("isFavorite", "TRUE");
    let (status, body) = send_form(&server, form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        json!(["isFavorite must be a boolean value"])
    );
    // A garbage date: one string, not an array.
    let form = Form::new()
        .text("deviceAssetId", "d")
        .text("deviceId", "dev")
        .text("fileCreatedAt", "yesterday")
        .text("fileModifiedAt", DATE)
        .part("assetData", Part::bytes(b"g".to_vec()).file_name("g.jpg"));
    let (status, body) = send_form(&server, form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "fileCreatedAt must be a date string");
    // A missing date: two messages.
    let form = Form::new()
        .text("deviceAssetId", "d")
        .text("deviceId", "dev")
        .text("fileModifiedAt", DATE)
        .part("assetData", Part::bytes(b"m".to_vec()).file_name("m.jpg"));
    let (status, body) = send_form(&server, form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        json!([
            "fileCreatedAt should not be empty",
            "fileCreatedAt must be a Date instance"
        ])
    );

    // The next major: zod's text.
    let next = TestServer::start(Dialect::ImmichNext).await;
    let form = Form::new()
        .text("fileCreatedAt", "yesterday")
        .text("fileModifiedAt", DATE)
        .part("assetData", Part::bytes(b"z".to_vec()).file_name("z.jpg"));
    let (status, body) = send_form(&next, form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        json!([
            "[fileCreatedAt] Invalid input: expected ISO 8601 datetime string, received string"
        ])
    );
}

#[tokio::test]
async fn the_small_differences() {
    let server = TestServer::start(Dialect::Immich).await;
    let admin = server.admin_id();
    server.insert_many(&admin, 3, immish_testserver::Visibility::Timeline);

    // A numeric string is a page number.
    let (status, body) = post(
        &server,
        "/search/metadata",
        json!({ "page": "2", "size": "2" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(search_ids(&body).len(), 1);

    // About: where the build came from, and the tools' versions.
    let (_, about) = get(&server, "/server/about").await;
    for field in [
        "sourceRef",
        "sourceCommit",
        "ffmpeg",
        "libvips",
        "exiftool",
        "imagemagick",
    ] {
        assert!(about[field].is_string(), "{field}: {about}");
    }
    assert_eq!(about["sourceRef"], "v2.7.5");

    // Users and keys the real way.
    let (status, user) = post(
        &server,
        "/admin/users",
        json!({ "email": "Carol@Example.com", "password": "pw-carol-1", "name": "Carol" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    assert_eq!(user["email"], "carol@example.com");
    assert_eq!(user["isAdmin"], false);
    let (status, body) = post(
        &server,
        "/admin/users",
        json!({ "email": "carol@example.com", "password": "x", "name": "Carol" }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "User exists");
    let token = login(&server, "carol@example.com", "pw-carol-1").await;
    let resp = client()
        .post(format!("{}/auth/login", server.api_url()))
        .json(&json!({ "email": "carol@example.com", "password": "pw-carol-1" }))
        .send()
        .await
        .unwrap();
    let (_, session) = json_of(resp).await;
    assert_eq!(session["isOnboarded"], false);

    // Carol (a session) makes herself a narrow key; it works for what it was given only.
    let resp = client()
        .post(format!("{}/api-keys", server.api_url()))
        .bearer_auth(&token)
        .json(&json!({ "name": "backup", "permissions": ["asset.upload", "apiKey.create"] }))
        .send()
        .await
        .unwrap();
    let (status, created) = json_of(resp).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["apiKey"]["name"], "backup");
    assert_eq!(
        created["apiKey"]["permissions"],
        json!(["asset.upload", "apiKey.create"])
    );
    let key = created["secret"].as_str().unwrap().to_string();
    let (status, _) = upload_with_key(&server, &key, "c.jpg", b"carol").await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = post_with_key(&server, &key, "/search/metadata", json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["message"], "Missing required permission: asset.read");
    // A key cannot hand out more than it has; nor can a non-admin create users.
    let (status, body) = post_with_key(
        &server,
        &key,
        "/api-keys",
        json!({ "permissions": ["asset.read"] }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "Cannot grant permissions you do not have");
    let carol_all = server.create_api_key(user["id"].as_str().unwrap(), &["all"]);
    let (status, body) = post_with_key(
        &server,
        &carol_all,
        "/admin/users",
        json!({ "email": "dave@example.com", "password": "pw", "name": "Dave" }),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["message"], "Forbidden");
}

#[tokio::test]
async fn uploads_record_what_the_client_sent() {
    let server = TestServer::start(Dialect::Immich).await;
    let video = server.upload_as(
        &server.admin_id(),
        "v.mov",
        b"vid",
        immish_testserver::Visibility::Timeline,
    );
    let form = Form::new()
        .text("deviceAssetId", "dev-asset-1")
        .text("deviceId", "phone")
        .text("fileCreatedAt", DATE)
        .text("fileModifiedAt", DATE)
        .text("livePhotoVideoId", video.clone())
        .part(
            "sidecarData",
            Part::bytes(xmp_sidecar(Some("d"), None).into_bytes()).file_name("p.heic.xmp"),
        )
        .text("filename", "p.heic")
        .part(
            "assetData",
            Part::bytes(b"heic!".to_vec()).file_name("blob"),
        );
    let (status, body) = send_form(&server, form).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Refused uploads are recorded too.
    let (status, _) = send_form(&server, upload_form("notes.txt", b"t".to_vec())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let uploads = server.uploads();
    assert_eq!(uploads.len(), 2);
    let first = &uploads[0];
    assert_eq!(
        first.names(),
        vec![
            "deviceAssetId",
            "deviceId",
            "fileCreatedAt",
            "fileModifiedAt",
            "livePhotoVideoId",
            "sidecarData",
            "filename",
            "assetData"
        ]
    );
    assert_eq!(first.field("deviceAssetId"), Some("dev-asset-1"));
    assert_eq!(first.field("fileCreatedAt"), Some(DATE));
    assert_eq!(first.field("livePhotoVideoId"), Some(video.as_str()));
    assert!(first.has_sidecar());
    assert_eq!(first.file_name(), Some("blob"));
    assert_eq!(first.status, 201);
    assert_eq!(first.asset_id.as_deref(), body["id"].as_str());
    assert_eq!(first.parts.last().unwrap().size, 5);
    assert_eq!(uploads[1].status, 400);
    assert!(!uploads[1].has_sidecar());

    // The same over /__admin/.
    let list: Value = client()
        .get(format!("{}/__admin/uploads", server.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list[0]["parts"][4],
        json!({ "name": "livePhotoVideoId", "value": video, "fileName": null, "size": 0 })
    );
    assert_eq!(list[0]["status"], 201);
    let counters: Value = client()
        .get(format!("{}/__admin/counters", server.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counters["emptyBulkChecks"], 0);
}
