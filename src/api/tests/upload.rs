//! Uploads against the scripted peer: the request as sent, early answers, resets, files
//! that change, stalls and proxy refusals.

use super::*;

#[tokio::test]
async fn upload_sends_the_documented_request() {
    let (server, api) = connect_raw(basics_then(|s| match s.path() {
        "/api/assets" => json(
            201,
            r#"{"id":"00000000-0000-4000-8000-0000000000a1","status":"created"}"#,
        ),
        _ => raw::not_found(),
    }))
    .await;
    let f = test_file("café 写真 \"1\".jpg", 600_000, 1);
    let outcome = api.upload(&f.req).await.expect("upload");
    assert_eq!(
        outcome,
        UploadOutcome {
            asset_id: AssetId("00000000-0000-4000-8000-0000000000a1".into()),
            duplicate: false
        }
    );
    let s = &server.seen_path("/api/assets")[0];
    assert_eq!(s.method, "POST");
    assert_eq!(
        s.header("x-immich-checksum"),
        Some(&*f.req.checksum.to_hex())
    );
    assert_eq!(s.header("x-api-key"), Some(KEY));
    assert_eq!(
        s.content_length,
        Some(s.body.len() as u64),
        "explicit Content-Length"
    );
    let parts = raw::multipart_parts(s.header("content-type").expect("ct"), &s.body);
    let names: Vec<&str> = parts
        .iter()
        .map(|(h, _)| {
            h.split("name=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
        })
        .collect();
    assert_eq!(
        names,
        [
            "deviceAssetId",
            "deviceId",
            "fileCreatedAt",
            "fileModifiedAt",
            "isFavorite",
            "filename",
            "assetData"
        ]
    );
    let text = |i: usize| String::from_utf8(parts[i].1.clone()).expect("utf8");
    assert_eq!(text(0), "café 写真 \"1\".jpg-600000");
    assert_eq!(text(1), "immish-sync-test");
    assert_eq!(text(2), "2023-11-14T22:13:20.123Z");
    assert_eq!(text(3), "1969-12-31T23:59:59.999Z");
    assert_eq!(text(4), "false");
    assert_eq!(text(5), "café 写真 \"1\".jpg", "the exact name, raw UTF-8");
    assert!(
        parts[6].0.contains("filename=\"café 写真 _1_.jpg\""),
        "raw UTF-8, not percent-encoded: {}",
        parts[6].0
    );
    assert!(parts[6].1 == f.data, "the file, byte for byte");
}

#[tokio::test]
async fn seed_uploads_accept_the_old_answer_shape() {
    let server = raw::start(|s| match s.path() {
        "/server/ping" => json(200, r#"{"res":"pong"}"#),
        "/assets" => json(
            201,
            r#"{"id":"00000000-0000-4000-8000-0000000000e1","duplicate":false}"#,
        ),
        _ => raw::not_found(),
    })
    .await;
    let api = ApiClient::connect(&options(&server.base, key()))
        .await
        .expect("connect");
    let f = test_file("a.jpg", 1000, 2);
    let out = api.upload(&f.req).await.expect("upload");
    assert_eq!(
        out.asset_id,
        AssetId("00000000-0000-4000-8000-0000000000e1".into())
    );
    assert!(!out.duplicate);
    let s = &server.seen_path("/assets")[0];
    let parts = raw::multipart_parts(s.header("content-type").expect("ct"), &s.body);
    assert!(parts
        .iter()
        .any(|(h, v)| h.contains("\"isVisible\"") && v == b"true"));
}

/// docs/RELIABILITY.md#the-early-duplicate-answer: the `x-immich-checksum` duplicate answer
/// arrives while the body is still being sent, and the server then resets the connection.
#[tokio::test]
async fn an_early_duplicate_answer_is_success_despite_the_reset() {
    let (server, api) = connect_raw(basics_then(|s| match s.path() {
        "/api/assets" => Action::AnswerEarly(
            200,
            vec![],
            r#"{"status":"duplicate","id":"00000000-0000-4000-8000-0000000000e2"}"#.into(),
        ),
        _ => raw::not_found(),
    }))
    .await;
    let f = test_file("big.mov", 48 << 20, 3);
    for _ in 0..5 {
        let out = api
            .upload(&f.req)
            .await
            .expect("early duplicate is success");
        assert_eq!(
            out.asset_id,
            AssetId("00000000-0000-4000-8000-0000000000e2".into())
        );
        assert!(out.duplicate);
    }
    assert_eq!(server.seen_path("/api/assets").len(), 5);
}

/// After an early answer from a server that keeps reading, the rest of the file is not
/// streamed into the connection in the background.
#[tokio::test]
async fn after_an_early_answer_the_rest_of_the_body_is_not_sent() {
    let (server, api) = connect_raw(basics_then(|s| match s.path() {
        "/api/assets" => Action::AnswerEarlyThenDrain(
            200,
            r#"{"status":"duplicate","id":"00000000-0000-4000-8000-0000000000e3"}"#.into(),
        ),
        _ => raw::not_found(),
    }))
    .await;
    let f = test_file("long.mov", 128 << 20, 10);
    let out = api.upload(&f.req).await.expect("early duplicate");
    assert!(out.duplicate);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.seen_path("/api/assets").is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = server.received.load(Ordering::SeqCst);
    assert!(
        !server.seen_path("/api/assets").is_empty(),
        "the client closed"
    );
    assert!(
        got < f.req.size / 2,
        "{got} of {} bytes were sent",
        f.req.size
    );
}

/// When the connection breaks mid-upload with no answer, one bulk check tells whether the
/// server has the file after all (its early duplicate answer may have been lost to the
/// reset); if not, the network error stands.
#[tokio::test]
async fn a_reset_upload_is_resolved_by_a_checksum_check() {
    let known = Arc::new(Mutex::new(String::new()));
    let k2 = known.clone();
    let (server, api) = connect_raw(basics_then(move |s| match s.path() {
        "/api/assets" => Action::Reset,
        "/api/assets/bulk-upload-check" => {
            let known = k2.lock().expect("lock").clone();
            raw::after_body(move |s| {
                let req: serde_json::Value = serde_json::from_slice(&s.body).expect("json");
                let item = &req["assets"][0];
                let answer = if item["checksum"] == known.as_str() {
                    serde_json::json!({"id": item["id"], "action": "reject",
                        "reason": "duplicate", "assetId": "00000000-0000-4000-8000-000000000001", "isTrashed": false})
                } else {
                    serde_json::json!({"id": item["id"], "action": "accept"})
                };
                json(200, &serde_json::json!({ "results": [answer] }).to_string())
            })
        }
        _ => raw::not_found(),
    }))
    .await;
    let f = test_file("a.jpg", 4 << 20, 21);
    let e = api.upload(&f.req).await.expect_err("not on the server");
    assert_eq!(e.class(), ErrorClass::Transient, "{e}");
    assert!(matches!(e, ApiError::Network { .. }), "{e:?}");

    *known.lock().expect("lock") = f.req.checksum.to_hex();
    let out = api.upload(&f.req).await.expect("the server has it");
    assert_eq!(
        out,
        UploadOutcome {
            asset_id: AssetId("00000000-0000-4000-8000-000000000001".into()),
            duplicate: true
        }
    );
    assert_eq!(server.seen_path("/api/assets/bulk-upload-check").len(), 2);
}

/// docs/RELIABILITY.md#413-from-a-proxy: nginx refuses after the headers with an HTML page.
#[tokio::test]
async fn an_early_413_from_a_proxy_is_permanent_and_names_the_limit() {
    let (_server, api) = connect_raw(basics_then(|s| match s.path() {
        "/api/assets" => Action::AnswerEarly(
            413,
            vec![],
            "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n\
             <center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx\
             </center>\r\n</body>\r\n</html>\r\n"
                .into(),
        ),
        _ => raw::not_found(),
    }))
    .await;
    let f = test_file("huge.mp4", 48 << 20, 4);
    for _ in 0..3 {
        let e = api.upload(&f.req).await.expect_err("413");
        assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
        let text = e.to_string();
        assert!(text.contains("huge.mp4"), "{text}");
        assert!(text.contains("50331648 bytes, 48.0 MiB"), "{text}");
        assert!(text.contains("client_max_body_size"), "{text}");
        assert!(text.contains("413 Request Entity Too Large"), "{text}");
    }
}

fn status_for_file(s: &raw::Seen) -> Action {
    let name = String::from_utf8_lossy(&s.body).into_owned();
    let has = |n: &str| name.contains(n);
    if has("retry-secs.jpg") {
        Action::Answer(
            500,
            vec![("retry-after", "7".into())],
            r#"{"message":"Failed to upload asset"}"#.into(),
        )
    } else if has("retry-date.jpg") {
        let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(120);
        let fmt = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        Action::Answer(
            503,
            vec![("retry-after", at.format(&fmt).expect("fmt"))],
            String::new(),
        )
    } else if has("quota.jpg") {
        json(
            400,
            r#"{"message":"Quota has been exceeded!","error":"Bad Request","statusCode":400}"#,
        )
    } else if has("full.jpg") {
        json(507, r#"{"message":"Insufficient Storage"}"#)
    } else if has("type.jpg") {
        json(
            400,
            r#"{"message":"Unsupported file type type.jpg","statusCode":400}"#,
        )
    } else if has("invalid.jpg") {
        json(
            400,
            r#"{"message":["[fileCreatedAt] Invalid ISO datetime"],"statusCode":400}"#,
        )
    } else if has("auth.jpg") {
        json(401, r#"{"message":"Invalid API key"}"#)
    } else if has("perm.jpg") {
        json(
            403,
            r#"{"message":"Missing required permission: asset.upload"}"#,
        )
    } else if has("html.jpg") {
        Action::Answer(200, vec![], "<html><title>Sign in</title></html>".into())
    } else if has("busy.jpg") {
        Action::Answer(429, vec![("retry-after", "30".into())], String::new())
    } else {
        json(
            201,
            r#"{"id":"00000000-0000-4000-8000-00000000000f","status":"created"}"#,
        )
    }
}

#[tokio::test]
async fn error_statuses_map_to_classes() {
    let (_server, api) = connect_raw(basics_then(|s| {
        if s.path() != "/api/assets" {
            return raw::not_found();
        }
        raw::after_body(status_for_file)
    }))
    .await;
    let cases: &[(&str, ErrorClass, Option<u64>, &str)] = &[
        (
            "retry-secs.jpg",
            ErrorClass::Transient,
            Some(7),
            "Failed to upload asset",
        ),
        (
            "retry-date.jpg",
            ErrorClass::Transient,
            Some(120),
            "HTTP 503",
        ),
        ("quota.jpg", ErrorClass::Capacity, None, "quota"),
        ("full.jpg", ErrorClass::Capacity, None, "disk is full"),
        (
            "type.jpg",
            ErrorClass::Permanent,
            None,
            "Unsupported file type type.jpg",
        ),
        (
            "invalid.jpg",
            ErrorClass::Permanent,
            None,
            "Invalid ISO datetime",
        ),
        (
            "auth.jpg",
            ErrorClass::Auth,
            None,
            "rejected the credentials",
        ),
        (
            "perm.jpg",
            ErrorClass::Permanent,
            None,
            "Missing required permission: asset.upload",
        ),
        (
            "html.jpg",
            ErrorClass::Transient,
            None,
            "did not answer JSON (a proxy?)",
        ),
        ("busy.jpg", ErrorClass::Transient, Some(30), "slow down"),
    ];
    for (name, class, retry, text) in cases {
        let f = test_file(name, 2000, 5);
        let e = api.upload(&f.req).await.expect_err(name);
        assert_eq!(e.class(), *class, "{name}: {e}");
        match (retry, e.retry_after()) {
            (Some(want), Some(got)) => {
                assert!(
                    got.as_secs() <= *want && got.as_secs() + 5 >= *want,
                    "{name}: {got:?}"
                )
            }
            (None, None) => {}
            (want, got) => panic!("{name}: retry_after {got:?}, want {want:?}"),
        }
        assert!(e.to_string().contains(text), "{name}: {e}");
        assert!(e.to_string().contains(name), "{name}: names the file: {e}");
    }
}

/// docs/RELIABILITY.md#a-file-that-changes-while-it-is-uploaded: the file shrinks while the
/// server reads slowly; the request is aborted and the server never receives a complete body.
#[tokio::test]
async fn a_file_truncated_during_upload_is_aborted_before_its_end() {
    let (server, api) = connect_raw(basics_then(|s| match s.path() {
        "/api/assets" => Action::SlowRead {
            chunk: 512 * 1024,
            every: Duration::from_millis(10),
        },
        _ => raw::not_found(),
    }))
    .await;
    let f = test_file("growing.mp4", 64 << 20, 6);
    let size = f.req.size;
    let path = f.req.path.clone();
    let received = server.received.clone();
    let truncate = tokio::spawn(async move {
        while received.load(Ordering::SeqCst) < size / 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        file.set_len(size / 4).expect("truncate");
    });
    let e = api.upload(&f.req).await.expect_err("must abort");
    truncate.await.expect("truncate task");
    assert_eq!(e.class(), ErrorClass::FileChanged, "{e}");
    assert!(e.to_string().contains("shorter"), "{e}");
    // Let the peer notice the abort.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.seen_path("/api/assets").is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = &server.seen_path("/api/assets")[0];
    assert!(
        (s.body.len() as u64) < s.content_length.expect("length"),
        "the server got {} of {:?} bytes",
        s.body.len(),
        s.content_length
    );
}

#[tokio::test]
async fn a_file_changed_since_hashing_is_not_sent_at_all() {
    let (server, api) = connect_raw(basics_then(|_| raw::not_found())).await;
    let mut f = test_file("a.jpg", 5000, 7);
    f.req.size = 4999;
    let e = api.upload(&f.req).await.expect_err("size differs");
    assert_eq!(e.class(), ErrorClass::FileChanged);
    f.req.size = 5000;
    // Same size, other bytes: a small file is read whole and checked before sending.
    let hashed = f.req.checksum;
    f.req.checksum.0[0] ^= 1;
    let e = api.upload(&f.req).await.expect_err("content differs");
    assert_eq!(e.class(), ErrorClass::FileChanged);
    assert!(e.to_string().contains("other SHA-1"), "{e}");
    f.req.checksum = hashed;
    f.req.path = f.req.path.with_file_name("vanished.jpg");
    let e = api.upload(&f.req).await.expect_err("missing");
    assert_eq!(e.class(), ErrorClass::FileChanged);
    assert!(e.to_string().contains("vanished.jpg"), "{e}");
    assert!(server.seen_path("/api/assets").is_empty());
}

/// docs/RELIABILITY.md#a-stalled-server-and-very-large-uploads: no whole-request timeout, but
/// a stall is detected.
#[tokio::test]
async fn a_stalled_server_is_a_transient_error() {
    let (_server, api) = connect_raw(basics_then(|s| match s.path() {
        "/api/assets" | "/api/assets/a1" => Action::Stall,
        _ => raw::not_found(),
    }))
    .await;
    let started = std::time::Instant::now();
    let e = api
        .get_asset(&AssetId("a1".into()))
        .await
        .expect_err("stall");
    assert!(matches!(e, ApiError::Stalled { .. }), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Transient);
    assert!(started.elapsed() < Duration::from_secs(6));

    let f = test_file("stuck.mov", 48 << 20, 8);
    let started = std::time::Instant::now();
    let e = api.upload(&f.req).await.expect_err("stall");
    assert!(matches!(e, ApiError::Stalled { .. }), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Transient);
    assert!(e.to_string().contains("stuck.mov"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

/// A slow but moving upload is not a stall, however long it takes in total.
#[tokio::test]
async fn a_slow_upload_that_keeps_moving_is_not_a_stall() {
    let (_server, api) = connect_raw(basics_then(|s| match s.path() {
        "/api/assets" => Action::SlowRead {
            chunk: 256 * 1024,
            every: Duration::from_millis(50),
        },
        _ => raw::not_found(),
    }))
    .await;
    // ~16 MiB at ~5 MiB/s, longer than the 2 s stall timeout.
    let f = test_file("slow.mov", 16 << 20, 9);
    let out = api.upload(&f.req).await.expect("slow but steady");
    assert_eq!(
        out.asset_id,
        AssetId("00000000-0000-4000-8000-0000000000e4".into())
    );
}
