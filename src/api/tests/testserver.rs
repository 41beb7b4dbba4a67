//! Against the in-repo test server, in every dialect it speaks.

use super::*;
use immish_testserver::{Dialect as Ts, Failure, TestServer};

const ALL: [Ts; 3] = [Ts::Immich, Ts::ImmichNext, Ts::Seed];

async fn start(dialect: Ts) -> TestServer {
    TestServer::builder()
        .dialect(dialect)
        .keep_bytes(true)
        .start()
        .await
}

fn admin_key(server: &TestServer) -> Credentials {
    Credentials::ApiKey(Secret::new(server.api_key()))
}

async fn connect(server: &TestServer) -> ApiClient {
    ApiClient::connect(&options(&server.base_url(), admin_key(server)))
        .await
        .expect("connect")
}

#[tokio::test]
async fn connects_with_a_key_or_a_password_in_every_dialect() {
    for ts in ALL {
        let server = start(ts).await;
        let api = connect(&server).await;
        let want = if ts == Ts::Seed {
            Dialect::Seed
        } else {
            Dialect::Immich
        };
        assert_eq!(api.dialect(), want, "{ts}");
        assert_eq!(api.api_root(), server.api_url(), "{ts}");
        assert_eq!(api.ws_url(), server.socket_url(), "{ts}");
        assert_eq!(api.user_id(), server.admin_id(), "{ts}");
        assert!(api.can_open_websocket(), "{ts}: the admin key has `all`");
        api.validate().await.expect("validate");
        let version = api.server_version().await.expect("version");
        let want_version = match ts {
            Ts::Immich => "2.7.5",
            Ts::ImmichNext => "2.7.5",
            Ts::Seed => "1.105.1",
        };
        assert_eq!(version, want_version, "{ts}");
        let media = api.media_types().await.expect("media types");
        assert!(media.is_supported(b"IMG.HEIC") && media.is_supported(b"clip.mp4"));
        assert!(!media.is_supported(b"IMG.xmp") && !media.is_supported(b"notes.txt"));
        assert_eq!(media.is_supported(b"x.mpo"), ts == Ts::ImmichNext, "{ts}");

        // Also through the user-facing spellings of the URL.
        let url = format!("  {}/api/ ", server.base_url());
        let again = ApiClient::connect(&options(&url, admin_key(&server)))
            .await
            .expect("connect via /api/");
        assert_eq!(again.api_root(), server.api_url());

        let session = ApiClient::connect(&options(
            &server.base_url(),
            Credentials::Password {
                email: server.admin_email().to_owned(),
                password: Secret::new(server.admin_password()),
            },
        ))
        .await
        .expect("password login");
        assert!(session.is_session(), "{ts}");
        assert_eq!(session.user_id(), server.admin_id(), "{ts}");
        session.validate().await.expect("validate session");

        let wrong = ApiClient::connect(&options(
            &server.base_url(),
            Credentials::Password {
                email: server.admin_email().to_owned(),
                password: Secret::new("not-the-password"),
            },
        ))
        .await
        .expect_err("wrong password");
        assert_eq!(wrong.class(), ErrorClass::Auth, "{ts}: {wrong}");
        assert!(!wrong.to_string().contains("not-the-password"));
    }
}

#[tokio::test]
async fn an_upload_is_created_then_a_duplicate_in_every_dialect() {
    for ts in ALL {
        let server = start(ts).await;
        let api = connect(&server).await;
        let f = test_file("café 写真.jpg", 300_000, 11);

        let first = api.upload(&f.req).await.expect("first upload");
        assert!(!first.duplicate, "{ts}");
        let stored = server.asset(&first.asset_id.0).expect("stored");
        assert_eq!(stored.checksum_hex, f.req.checksum.to_hex(), "{ts}");
        assert_eq!(stored.size, f.req.size);
        assert_eq!(stored.data.as_deref(), Some(&f.data[..]), "{ts}: the bytes");
        assert_eq!(stored.original_file_name, "café 写真.jpg", "{ts}");
        assert_eq!(stored.owner_id, server.admin_id());
        assert_eq!(stored.file_modified_at, "1969-12-31T23:59:59.999Z", "{ts}");
        if ts != Ts::ImmichNext {
            assert_eq!(
                stored.device_asset_id.as_deref(),
                Some("café 写真.jpg-300000")
            );
            assert_eq!(stored.device_id.as_deref(), Some("immish-sync-test"));
        }

        let bodies = server.upload_bodies();
        let second = api.upload(&f.req).await.expect("second upload");
        assert!(second.duplicate, "{ts}");
        assert_eq!(second.asset_id, first.asset_id, "{ts}");
        if ts != Ts::Seed {
            assert_eq!(
                server.upload_bodies(),
                bodies,
                "{ts}: x-immich-checksum answered before the body was read"
            );
        }
        assert_eq!(server.asset_count(&server.admin_id()), 1, "{ts}");

        let remote = api
            .get_asset(&first.asset_id)
            .await
            .expect("get asset")
            .expect("exists");
        assert_eq!(remote.checksum, Some(f.req.checksum), "{ts}");
        assert_eq!(remote.original_file_name, "café 写真.jpg");
        let unknown = AssetId("0f1e2d3c-4b5a-4978-8877-665544332211".into());
        assert_eq!(
            api.get_asset(&unknown).await.expect("get unknown"),
            None,
            "{ts}"
        );
    }
}

#[tokio::test]
async fn bulk_check_finds_what_is_there_by_hex_or_base64() {
    for ts in ALL {
        let server = start(ts).await;
        let api = connect(&server).await;
        let f = test_file("a.jpg", 10_000, 12);
        let id = api.upload(&f.req).await.expect("upload").asset_id;
        // The server reports checksums in base64; that parses to the same digest.
        let remote = api.get_asset(&id).await.expect("get").expect("exists");
        let from_base64 =
            Checksum::parse(&server.asset(&id.0).expect("a").checksum_base64).expect("base64");
        assert_eq!(remote.checksum, Some(from_base64));
        let other = test_file("b.jpg", 10_000, 13);
        let items = vec![
            ("local-1".to_owned(), f.req.checksum),
            ("local-2".to_owned(), other.req.checksum),
            ("local-3".to_owned(), from_base64),
        ];
        let answers = api.bulk_upload_check(&items).await.expect("bulk check");
        let dup = CheckResult::Duplicate {
            asset_id: Some(id.clone()),
            is_trashed: false,
        };
        let want = vec![
            ("local-1".to_owned(), dup.clone()),
            ("local-2".to_owned(), CheckResult::Accept),
            ("local-3".to_owned(), dup),
        ];
        if ts == Ts::Seed {
            // The seed's answer has no assetId / isTrashed.
            assert!(
                matches!(answers[0].1, CheckResult::Duplicate { .. }),
                "{answers:?}"
            );
            assert_eq!(answers[1].1, CheckResult::Accept);
        } else {
            assert_eq!(answers, want, "{ts}");
            assert_eq!(server.trash([id.0.clone()]), 1);
            let answers = api
                .bulk_upload_check(&items[..1])
                .await
                .expect("bulk check");
            assert_eq!(
                answers[0].1,
                CheckResult::Duplicate {
                    asset_id: Some(id.clone()),
                    is_trashed: true
                },
                "{ts}"
            );
        }
    }
}

/// docs/RELIABILITY.md#a-file-that-changes-while-it-is-uploaded against the test server: the
/// file shrinks while the server reads slowly; no asset is created, and a retry of the
/// restored file succeeds.
#[tokio::test]
async fn a_file_that_changes_during_upload_creates_no_asset() {
    for ts in [Ts::Immich, Ts::Seed] {
        let server = start(ts).await;
        let api = connect(&server).await;
        let f = test_file("changing.mp4", 24 << 20, 14);
        server.slow_body(8 << 20);
        let (size, path) = (f.req.size, f.req.path.clone());
        let handle = server.handle();
        let truncate = tokio::spawn(async move {
            while handle.upload_body_bytes() < size / 4 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .expect("open");
            file.set_len(size / 5).expect("truncate");
        });
        let e = api.upload(&f.req).await.expect_err("must abort");
        truncate.await.expect("truncate task");
        assert_eq!(e.class(), ErrorClass::FileChanged, "{ts}: {e}");
        assert!(e.to_string().contains("changing.mp4"), "{e}");
        assert_eq!(
            server.asset_count(&server.admin_id()),
            0,
            "{ts}: nothing stored"
        );
        assert!(server.upload_body_bytes() < size, "{ts}");

        // Same size, other content: also aborted before the end.
        server.slow_body(0);
        let mut other = f.data.clone();
        other[size as usize - 1] ^= 0xff;
        std::fs::write(&f.req.path, &other).expect("rewrite");
        let e = api.upload(&f.req).await.expect_err("must abort");
        assert_eq!(e.class(), ErrorClass::FileChanged, "{ts}: {e}");
        assert_eq!(
            server.asset_count(&server.admin_id()),
            0,
            "{ts}: nothing stored"
        );

        std::fs::write(&f.req.path, &f.data).expect("restore");
        let out = api.upload(&f.req).await.expect("retry succeeds");
        assert!(!out.duplicate);
        let stored = server.asset(&out.asset_id.0).expect("stored");
        assert_eq!(stored.checksum_hex, f.req.checksum.to_hex());
    }
}

#[tokio::test]
async fn a_proxy_413_is_permanent_after_one_attempt() {
    let server = start(Ts::Immich).await;
    let api = connect(&server).await;
    server.fail_with("POST /assets", 1, Failure::nginx_413());
    let f = test_file("huge.mov", 8 << 20, 15);
    let e = api.upload(&f.req).await.expect_err("413");
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
    assert_eq!(e.status(), Some(413));
    let text = e.to_string();
    assert!(
        text.contains("huge.mov") && text.contains("8.0 MiB"),
        "{text}"
    );
    assert!(
        text.contains("client_max_body_size") && text.contains("Cloudflare"),
        "{text}"
    );
    assert_eq!(server.requests("POST /assets"), 1);
    assert_eq!(server.asset_count(&server.admin_id()), 0);
}

#[tokio::test]
async fn a_500_with_retry_after_is_transient_with_the_delay() {
    let server = start(Ts::Immich).await;
    let api = connect(&server).await;
    server.fail_with("POST /assets", 1, Failure::new(500).retry_after("3"));
    let f = test_file("a.jpg", 50_000, 16);
    let e = api.upload(&f.req).await.expect_err("500");
    assert_eq!(e.class(), ErrorClass::Transient, "{e}");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
    server.fail_with("POST /assets/bulk-upload-check", 1, Failure::new(503));
    let e = api
        .bulk_upload_check(&[("x".to_owned(), f.req.checksum)])
        .await
        .expect_err("503");
    assert_eq!(e.class(), ErrorClass::Transient, "{e}");
    // Then it works.
    assert!(!api.upload(&f.req).await.expect("retry").duplicate);
}

#[tokio::test]
async fn a_key_without_upload_permission_is_named_at_connect() {
    let server = start(Ts::Immich).await;
    let key = server.create_api_key(&server.admin_id(), &["asset.read", "user.read"]);
    let e = ApiClient::connect(&options(
        &server.base_url(),
        Credentials::ApiKey(Secret::new(key.clone())),
    ))
    .await
    .expect_err("missing asset.upload");
    assert_eq!(e.class(), ErrorClass::Permanent);
    match &e {
        ApiError::MissingPermissions { missing, .. } => assert_eq!(missing, &["asset.upload"]),
        other => panic!("{other:?}"),
    }
    assert!(!e.to_string().contains(&key));

    let key = server.create_api_key(&server.admin_id(), &["album.read"]);
    let e = ApiClient::connect(&options(
        &server.base_url(),
        Credentials::ApiKey(Secret::new(key)),
    ))
    .await
    .expect_err("missing both");
    assert!(
        e.to_string()
            .contains("lacks the permissions asset.upload, asset.read"),
        "{e}"
    );

    // The minimal key works; without `user.read` the user id is unknown, not an error.
    let key = server.create_api_key(&server.admin_id(), &["asset.upload", "asset.read"]);
    let api = ApiClient::connect(&options(
        &server.base_url(),
        Credentials::ApiKey(Secret::new(key)),
    ))
    .await
    .expect("minimal key");
    assert_eq!(api.user_id(), "");
    assert!(!api.can_open_websocket());
    let f = test_file("a.jpg", 1000, 17);
    api.upload(&f.req)
        .await
        .expect("upload with the minimal key");
}

#[tokio::test]
async fn auth_capacity_and_type_errors_are_classified() {
    let server = start(Ts::Immich).await;
    let api = connect(&server).await;
    let f = test_file("a.jpg", 20_000, 18);

    server.unauthorized(true);
    let e = api.upload(&f.req).await.expect_err("401");
    assert_eq!(e.class(), ErrorClass::Auth, "{e}");
    assert_eq!(
        api.validate().await.expect_err("401").class(),
        ErrorClass::Auth
    );
    server.unauthorized(false);
    api.validate().await.expect("valid again");

    server.storage_full(true);
    let e = api.upload(&f.req).await.expect_err("507");
    assert_eq!(e.class(), ErrorClass::Capacity, "{e}");
    server.storage_full(false);

    server.set_quota(&server.admin_id(), 100);
    let e = api.upload(&f.req).await.expect_err("quota");
    assert_eq!(e.class(), ErrorClass::Capacity, "{e}");
    assert!(e.to_string().contains("quota"), "{e}");
    server.set_quota(&server.admin_id(), None);

    let t = test_file("notes.txt", 100, 19);
    let e = api.upload(&t.req).await.expect_err("unsupported");
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
    assert!(e.to_string().contains("Unsupported file type"), "{e}");

    server.drop_after_bytes("POST /assets", 5000, 1);
    let e = api.upload(&f.req).await.expect_err("dropped");
    assert_eq!(e.class(), ErrorClass::Transient, "{e}");

    server.fail_next("POST /assets", 1, 200, Some("<html>Login</html>"), None);
    let e = api.upload(&f.req).await.expect_err("html");
    assert_eq!(e.class(), ErrorClass::Transient, "{e}");
    assert!(e.to_string().contains("did not answer JSON"), "{e}");

    assert!(!api.upload(&f.req).await.expect("finally").duplicate);
}

/// docs/RELIABILITY.md#stored-then-the-reply-was-lost: the server stores the asset, then never
/// answers; the stall timeout ends the request, and a bulk check (not a second body) finds the
/// asset.
#[tokio::test]
async fn a_lost_reply_is_a_stall_and_the_check_finds_the_asset() {
    let server = start(Ts::Immich).await;
    let api = connect(&server).await;
    server.stall_after_store(1);
    let f = test_file("a.mov", 1 << 20, 20);
    let e = api.upload(&f.req).await.expect_err("stall");
    assert!(matches!(e, ApiError::Stalled { .. }), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Transient);
    let answers = api
        .bulk_upload_check(&[("f".to_owned(), f.req.checksum)])
        .await
        .expect("check");
    assert!(matches!(answers[0].1, CheckResult::Duplicate { .. }));
    assert_eq!(server.upload_bodies(), 1);
}
