//! Reading, trashing and deleting assets, albums, and `POST /search/metadata`.

mod common;

use std::collections::HashSet;

use common::*;
use immish_testserver::{AssetUpdate, Dialect, NewAsset, TestServer, Visibility};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn ids(page: &Value) -> Vec<String> {
    page["assets"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn read_trash_restore_delete() {
    let server = TestServer::start(Dialect::Immich).await;
    let (_, body) = upload(&server, "a.jpg", b"aaa").await;
    let id = body["id"].as_str().unwrap().to_string();

    let (status, body) = get(&server, "/assets/not-a-uuid").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], json!(["id must be a UUID"]));

    // Someone else's asset looks exactly like a missing one: 400, not 404.
    let bob = server.add_user("bob@example.com", "pw-bob-123");
    let bob_asset = server.upload_as(&bob, "bob.jpg", b"bob", Visibility::Timeline);
    let (status, body) = get(&server, &format!("/assets/{bob_asset}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "Not found or no asset.read access");

    // Trash.
    let before = server.asset(&id).unwrap().updated_at;
    let resp = client()
        .delete(format!("{}/assets", server.api_url()))
        .header("x-api-key", server.api_key())
        .json(&json!({ "ids": [id] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let a = server.asset(&id).unwrap();
    assert!(a.trashed);
    assert!(a.updated_at > before);
    let (status, body) = get(&server, &format!("/assets/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["isTrashed"], true);

    // Deleting someone else's asset fails as a whole.
    let resp = client()
        .delete(format!("{}/assets", server.api_url()))
        .header("x-api-key", server.api_key())
        .json(&json!({ "ids": [bob_asset], "force": true }))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "Not found or no asset.delete access");
    assert!(server.asset(&bob_asset).is_some());

    // Restore.
    let (status, body) = post(&server, "/trash/restore/assets", json!({ "ids": [id] })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "count": 1 }));
    // Not in the trash any more: Immich still counts the ids it was sent (measured).
    let (_, body) = post(&server, "/trash/restore/assets", json!({ "ids": [id] })).await;
    assert_eq!(body, json!({ "count": 1 }));
    assert!(!server.asset(&id).unwrap().trashed);

    // Force delete: gone, and a 400 afterwards.
    let resp = client()
        .delete(format!("{}/assets", server.api_url()))
        .header("x-api-key", server.api_key())
        .json(&json!({ "ids": [id], "force": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(server.asset(&id).is_none());
    let (status, body) = get(&server, &format!("/assets/{id}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "Not found or no asset.read access");
    let (_, body) = post(
        &server,
        "/assets/bulk-upload-check",
        json!({ "assets": [{ "id": "x", "checksum": sha1_hex(b"aaa") }] }),
    )
    .await;
    assert_eq!(body["results"][0]["action"], "accept");

    let key = server.create_api_key(&server.admin_id(), &["asset.read"]);
    let resp = client()
        .delete(format!("{}/assets", server.api_url()))
        .header("x-api-key", key)
        .json(&json!({ "ids": [bob_asset] }))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["message"], "Missing required permission: asset.delete");
}

#[tokio::test]
async fn albums() {
    let server = TestServer::start(Dialect::Immich).await;
    let a = server.upload_as(&server.admin_id(), "a.jpg", b"a", Visibility::Timeline);
    let b = server.upload_as(&server.admin_id(), "b.jpg", b"b", Visibility::Timeline);
    let bob = server.add_user("bob@example.com", "pw-bob-123");
    let bob_asset = server.upload_as(&bob, "bob.jpg", b"bob", Visibility::Timeline);

    let (status, album) = post(
        &server,
        "/albums",
        json!({ "albumName": "Trip", "assetIds": [a, bob_asset] }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(album["albumName"], "Trip");
    assert_eq!(album["ownerId"], server.admin_id());
    // Bob's asset was dropped silently.
    assert_eq!(album["assetCount"], 1);
    let album_id = album["id"].as_str().unwrap().to_string();

    let resp = client()
        .put(format!("{}/albums/{album_id}/assets", server.api_url()))
        .header("x-api-key", server.api_key())
        .json(&json!({ "ids": [a, b, bob_asset] }))
        .send()
        .await
        .unwrap();
    let (status, results) = json_of(resp).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        results,
        json!([
            { "id": a, "success": false, "error": "duplicate" },
            { "id": b, "success": true },
            { "id": bob_asset, "success": false, "error": "no_permission" },
        ])
    );

    let (status, list) = get(&server, "/albums").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["assetCount"], 2);
    assert_eq!(list[0]["assets"], json!([]));
    let (_, one) = get(&server, &format!("/albums/{album_id}")).await;
    assert_eq!(one["assets"].as_array().unwrap().len(), 2);
    let (_, shared) = get(&server, "/albums?shared=true").await;
    assert_eq!(shared, json!([]));

    // Bob cannot see or fill the admin's album; names are not unique.
    let bob_key = server.create_api_key(&bob, &["all"]);
    let resp = client()
        .put(format!("{}/albums/{album_id}/assets", server.api_url()))
        .header("x-api-key", &bob_key)
        .json(&json!({ "ids": [bob_asset] }))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "Not found or no albumAsset.create access");
    let (status, _) =
        post_with_key(&server, &bob_key, "/albums", json!({ "albumName": "Trip" })).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, list) = get(&server, "/albums").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn search_paging_order_and_limits() {
    let server = TestServer::start(Dialect::Immich).await;
    let admin = server.admin_id();
    let all = server.insert_many(&admin, 600, Visibility::Timeline);

    let mut seen = Vec::new();
    let mut page = 1;
    loop {
        let (status, body) = post(
            &server,
            "/search/metadata",
            json!({ "page": page, "order": "asc" }),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let items = ids(&body);
        assert_eq!(body["assets"]["count"], items.len());
        assert_eq!(body["assets"]["total"], items.len());
        assert_eq!(body["albums"]["items"], json!([]));
        seen.extend(items);
        match body["assets"]["nextPage"].as_str() {
            Some(next) => {
                assert_eq!(next, (page + 1).to_string());
                assert_eq!(body["assets"]["count"], 250);
                page += 1;
            }
            None => {
                assert!(body["assets"]["nextPage"].is_null());
                break;
            }
        }
    }
    assert_eq!(page, 3);
    // Ascending by fileCreatedAt = insertion order here.
    assert_eq!(seen, all);

    // Default order is desc; size 1000 is the maximum.
    let (_, body) = post(&server, "/search/metadata", json!({ "size": 1000 })).await;
    let desc = ids(&body);
    assert_eq!(desc.len(), 600);
    assert_eq!(desc.first(), all.last());
    assert!(body["assets"]["nextPage"].is_null());

    for (query, message) in [
        (
            json!({ "size": 1001 }),
            "size must not be greater than 1000",
        ),
        (json!({ "size": 0 }), "size must not be less than 1"),
        (json!({ "page": 0 }), "page must not be less than 1"),
        (
            json!({ "order": "up" }),
            "order must be one of the following values: asc, desc",
        ),
    ] {
        let (status, body) = post(&server, "/search/metadata", query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["message"], json!([message]));
    }
    let (status, body) = post(
        &server,
        "/search/metadata",
        json!({ "visibility": "locked" }),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["message"], "Elevated permission is required");
}

#[tokio::test]
async fn search_ties_are_broken_by_id() {
    let server = TestServer::start(Dialect::Immich).await;
    let admin = server.admin_id();
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(server.insert(
            &admin,
            NewAsset::new(format!("t{i}.jpg"), format!("tie {i}")).file_created_at(DATE),
        ));
    }
    created.sort();
    assert_eq!(paged(&server, 2, "asc").await, created);
    // Newest first, the ties by id the other way round, page by page.
    created.reverse();
    assert_eq!(paged(&server, 3, "desc").await, created);
}

/// The ids of pages 1 to 4 of a search of everything, `size` a page, in `order`.
async fn paged(server: &TestServer, size: u32, order: &str) -> Vec<String> {
    let mut all = Vec::new();
    for page in 1..=4 {
        let (_, body) = post(
            server,
            "/search/metadata",
            json!({ "size": size, "page": page, "order": order }),
        )
        .await;
        all.extend(ids(&body));
    }
    all
}

#[tokio::test]
async fn search_filters_visibility_trash_and_partners() {
    let server = TestServer::start(Dialect::Immich).await;
    let admin = server.admin_id();
    let t = server.upload_as(&admin, "IMG_Beach.jpg", b"t", Visibility::Timeline);
    let arch = server.upload_as(&admin, "arch.jpg", b"a", Visibility::Archive);
    let hidden = server.upload_as(&admin, "hidden.mp4", b"h", Visibility::Hidden);
    let trashed = server.upload_as(&admin, "trashed.jpg", b"x", Visibility::Timeline);
    server.trash([&trashed]);

    let search = |q: Value| post(&server, "/search/metadata", q);
    let set = |v: &Value| ids(v).into_iter().collect::<HashSet<_>>();

    let (_, body) = search(json!({})).await;
    assert_eq!(ids(&body), vec![t.clone()]);
    let (_, body) = search(json!({ "withDeleted": true })).await;
    assert_eq!(set(&body), HashSet::from([t.clone(), trashed.clone()]));
    let (_, body) = search(json!({ "visibility": "archive" })).await;
    assert_eq!(ids(&body), vec![arch.clone()]);
    let (_, body) = search(json!({ "visibility": "hidden", "withDeleted": true })).await;
    assert_eq!(ids(&body), vec![hidden.clone()]);
    let (_, body) = search(json!({ "trashedAfter": "2000-01-01T00:00:00.000Z" })).await;
    assert_eq!(ids(&body), vec![trashed.clone()]);

    // Checksum (hex or base64) and file name filters.
    let (_, body) = search(json!({ "checksum": sha1_hex(b"t") })).await;
    assert_eq!(ids(&body), vec![t.clone()]);
    let (_, body) = search(json!({ "checksum": sha1_b64(b"t") })).await;
    assert_eq!(ids(&body), vec![t.clone()]);
    let (_, body) = search(json!({ "originalFileName": "beach" })).await;
    assert_eq!(ids(&body), vec![t.clone()]);
    let (_, body) = search(json!({ "originalFileName": "nothing" })).await;
    assert_eq!(ids(&body), Vec::<String>::new());

    // Partner assets are mixed in, only when shared in the timeline.
    let carol = server.add_user("carol@example.com", "pw-carol-1");
    let carol_asset = server.upload_as(&carol, "carol.jpg", b"c", Visibility::Timeline);
    server.add_partner_with(&carol, &admin, false);
    let (_, body) = search(json!({})).await;
    assert_eq!(ids(&body), vec![t.clone()]);
    server.add_partner(&carol, &admin);
    let (_, body) = search(json!({})).await;
    assert_eq!(set(&body), HashSet::from([t.clone(), carol_asset.clone()]));
    let carol_item = body["assets"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == carol_asset.as_str())
        .unwrap()
        .clone();
    assert_eq!(carol_item["ownerId"], carol.as_str());
    // ...and are readable, but not the other way round.
    let (status, _) = get(&server, &format!("/assets/{carol_asset}")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn search_updated_after_is_inclusive() {
    let server = TestServer::start(Dialect::Immich).await;
    let admin = server.admin_id();
    let a = server.upload_as(&admin, "a.jpg", b"1", Visibility::Timeline);
    let b = server.upload_as(&admin, "b.jpg", b"2", Visibility::Timeline);
    let a_at = server.asset(&a).unwrap().updated_at;
    let b_at = server.asset(&b).unwrap().updated_at;
    assert!(b_at > a_at, "updatedAt must be strictly increasing");

    let (_, body) = post(&server, "/search/metadata", json!({ "updatedAfter": b_at })).await;
    assert_eq!(ids(&body), vec![b.clone()]);
    let (_, body) = post(
        &server,
        "/search/metadata",
        json!({ "updatedAfter": a_at, "updatedBefore": a_at }),
    )
    .await;
    assert_eq!(ids(&body), vec![a.clone()]);

    // Any change bumps updatedAt: a favourite toggle moves `a` past the watermark.
    assert!(server.update(
        &a,
        AssetUpdate {
            is_favorite: Some(true),
            ..Default::default()
        }
    ));
    let (_, body) = post(
        &server,
        "/search/metadata",
        json!({ "updatedAfter": b_at, "order": "asc" }),
    )
    .await;
    let got: HashSet<String> = ids(&body).into_iter().collect();
    assert_eq!(got, HashSet::from([a.clone(), b.clone()]));
    let (_, body) = post(&server, "/search/metadata", json!({ "isFavorite": true })).await;
    assert_eq!(ids(&body), vec![a]);

    let (status, body) = post(
        &server,
        "/search/metadata",
        json!({ "updatedAfter": "yesterday" }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        json!(["updatedAfter must be a Date instance"])
    );
}

#[tokio::test]
async fn statistics_and_put_asset() {
    let server = TestServer::start(Dialect::Immich).await;
    let admin = server.admin_id();
    let img = server.upload_as(&admin, "a.jpg", b"1", Visibility::Timeline);
    server.upload_as(&admin, "b.mp4", b"2", Visibility::Timeline);
    let (_, stats) = get(&server, "/assets/statistics").await;
    assert_eq!(stats, json!({ "images": 1, "videos": 1, "total": 2 }));

    let resp = client()
        .put(format!("{}/assets/{img}", server.api_url()))
        .header("x-api-key", server.api_key())
        .json(&json!({ "isFavorite": true, "visibility": "archive", "description": "sea" }))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["isFavorite"], true);
    assert_eq!(body["visibility"], "archive");
    assert_eq!(body["isArchived"], true);
    assert_eq!(body["exifInfo"]["description"], "sea");
}
