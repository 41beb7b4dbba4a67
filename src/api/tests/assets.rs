//! The duplicate check and asset reads against the scripted peer.

use super::*;

fn bulk_answer(s: &raw::Seen) -> Action {
    let req: serde_json::Value = serde_json::from_slice(&s.body).expect("json");
    let mut results: Vec<serde_json::Value> = req["assets"]
        .as_array()
        .expect("assets")
        .iter()
        .map(|a| {
            let id = a["id"].as_str().expect("id");
            let n: usize = id[2..].parse().expect("n");
            if n.is_multiple_of(3) {
                serde_json::json!({"id": id, "action": "reject", "reason": "duplicate",
                                   "assetId": format!("00000000-0000-4000-8000-{n:012}"), "isTrashed": n.is_multiple_of(2)})
            } else {
                serde_json::json!({"id": id, "action": "accept"})
            }
        })
        .collect();
    results.reverse();
    json(200, &serde_json::json!({ "results": results }).to_string())
}

#[tokio::test]
async fn bulk_check_batches_and_matches_by_id() {
    let (server, api) = connect_raw(basics_then(|s| {
        if s.path() != "/api/assets/bulk-upload-check" {
            return raw::not_found();
        }
        raw::after_body(bulk_answer)
    }))
    .await;
    let items: Vec<(String, Checksum)> = (0..12_001)
        .map(|n| {
            let digest: [u8; 20] = Sha1::digest(format!("{n}").as_bytes()).into();
            (format!("f-{n}"), Checksum(digest))
        })
        .collect();
    let out = api.bulk_upload_check(&items).await.expect("bulk check");
    assert_eq!(out.len(), items.len());
    for (n, ((id, result), (want_id, _))) in out.iter().zip(&items).enumerate() {
        assert_eq!(id, want_id);
        if n.is_multiple_of(3) {
            assert_eq!(
                result,
                &CheckResult::Duplicate {
                    asset_id: Some(AssetId(format!("00000000-0000-4000-8000-{n:012}"))),
                    is_trashed: n % 2 == 0
                }
            );
        } else {
            assert_eq!(result, &CheckResult::Accept);
        }
    }
    let batches = server.seen_path("/api/assets/bulk-upload-check");
    let sizes: Vec<usize> = batches
        .iter()
        .map(|s| {
            let v: serde_json::Value = serde_json::from_slice(&s.body).expect("json");
            v["assets"].as_array().expect("assets").len()
        })
        .collect();
    assert_eq!(sizes, [5000, 5000, 2001]);
    let first: serde_json::Value = serde_json::from_slice(&batches[0].body).expect("json");
    assert_eq!(first["assets"][0]["checksum"], items[0].1.to_hex());
}

#[tokio::test]
async fn assets_are_read_and_missing_ones_are_none() {
    let (_server, api) = connect_raw(basics_then(|s| match s.path() {
        "/api/assets/a1" => json(
            200,
            r#"{"id":"a1","ownerId":"user-1","checksum":"qZk+NkcGgWq6PiVxeFDCbJzQ2J0=",
                "originalFileName":"x.jpg","visibility":"timeline","isTrashed":false}"#,
        ),
        "/api/assets/gone" => json(400, r#"{"message":"Not found or no asset.read access"}"#),
        "/api/server/media-types" => json(
            200,
            r#"{"image":[".jpg"],"video":[".mp4"],"sidecar":[".xmp"]}"#,
        ),
        "/api/server/version" => json(200, r#"{"major":2,"minor":7,"patch":5}"#),
        "/api/auth/validateToken" => json(200, r#"{"authStatus":true}"#),
        _ => raw::not_found(),
    }))
    .await;
    let a = api
        .get_asset(&AssetId("a1".into()))
        .await
        .expect("get")
        .expect("some");
    assert_eq!(a.owner_id, "user-1");
    assert_eq!(
        a.checksum.expect("checksum").to_hex(),
        "a9993e364706816aba3e25717850c26c9cd0d89d"
    );
    assert_eq!(
        api.get_asset(&AssetId("gone".into())).await.expect("get"),
        None
    );
    assert_eq!(
        api.get_asset(&AssetId("nope".into())).await.expect("get"),
        None
    );
    let m = api.media_types().await.expect("media");
    assert!(m.is_supported(b"A.JPG") && !m.is_supported(b"a.png"));
    assert_eq!(api.server_version().await.expect("version"), "2.7.5");
    api.validate().await.expect("validate");
}
