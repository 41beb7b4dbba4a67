//! The daemon against the peer as the real servers behave (issue 9): what it must never send
//! (an empty bulk check, which both Immich dialects answer 500), what it sends in an upload
//! (read from the server's upload records, not from what the server derived), that it works
//! with the next major although that build reports 2.7.5, and that the server's metadata job
//! rewriting an upload's dates does not make the daemon upload again.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use immish_testserver::fixtures::Photo;
use immish_testserver::{Dialect, TestServer, UploadRecord};
use time::macros::format_description;

use crate::common::{eventually, jpeg, mp4, World};

const BULK_CHECK: &str = "POST /assets/bulk-upload-check";

/// Nothing empty was sent, and so nothing was answered 500.
fn assert_no_empty_bulk_check(w: &World, after: &str) {
    assert_eq!(
        w.server.empty_bulk_checks(),
        0,
        "{after}: the daemon sent a bulk-upload-check with no assets (real servers answer 500)"
    );
    assert_eq!(w.server.requests_with_status(BULK_CHECK, 500), 0, "{after}");
}

async fn never_sends_an_empty_bulk_check(dialect: Dialect) {
    let w = World::new(dialect).await;

    // An empty root is paused (an unmounted disk?), not an error; nothing to check either way.
    let s = w.scan().await;
    assert_eq!(s.failed_total, 0, "{s:?}");
    assert_no_empty_bulk_check(&w, "a scan of an empty root");

    w.write("notes.txt", b"not media");
    w.write("empty.jpg", b"");
    w.write(".hidden.jpg", &jpeg("hidden"));
    assert!(w.scan().await.is_complete());
    assert_no_empty_bulk_check(&w, "a scan of files that are not media");

    w.write("a/IMG_1.jpg", &jpeg("one"));
    w.write("a/IMG_2.jpg", &jpeg("two"));
    w.write("b/clip.mp4", &mp4("clip"));
    assert!(w.scan().await.is_complete());
    assert_eq!(w.server.asset_count(&w.server.admin_id()), 3);
    let checks = w.server.requests(BULK_CHECK);
    assert!(checks >= 1, "new files are checked before they are sent");
    assert_no_empty_bulk_check(&w, "a first scan");

    let s = w.scan().await;
    assert!(s.is_complete(), "{s:?}");
    assert_eq!(s.scanned().queued, 0);
    assert_no_empty_bulk_check(&w, "a re-scan of files the catalogue knows");

    // Touched but unchanged: hashed again, then checked (with one asset) or linked.
    let p = w.root().join("a/IMG_1.jpg");
    let f = std::fs::File::options().append(true).open(&p).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    drop(f);
    assert!(w.scan().await.is_complete());
    assert_no_empty_bulk_check(&w, "a re-scan after a touch");

    // The daemon: start-up scan, live events, a new file through the watcher, the mirror.
    let daemon = w.start_daemon();
    assert!(
        w.server
            .wait_for_websockets(1, Duration::from_secs(20))
            .await,
        "the daemon connects its socket"
    );
    w.write("c/IMG_3.jpg", &jpeg("three"));
    let server = w.server.handle();
    let admin = w.server.admin_id();
    assert!(
        eventually(Duration::from_secs(30), || server.asset_count(&admin) == 4).await,
        "the running daemon uploads a new file"
    );
    daemon.stop().await;
    assert_no_empty_bulk_check(&w, "a daemon run");
}

#[tokio::test]
async fn the_daemon_never_sends_an_empty_bulk_check_immich() {
    never_sends_an_empty_bulk_check(Dialect::Immich).await;
}

#[tokio::test]
async fn the_daemon_never_sends_an_empty_bulk_check_immich_next() {
    never_sends_an_empty_bulk_check(Dialect::ImmichNext).await;
}

/// `YYYY-MM-DDTHH:MM:SS.sssZ`: what both dialects accept (docs/SERVER-API.md#dates).
fn is_z_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 24
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && s.ends_with('Z')
        && time::PrimitiveDateTime::parse(
            &s[..23],
            format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]"
            ),
        )
        .is_ok()
}

fn position(r: &UploadRecord, name: &str) -> usize {
    r.names()
        .iter()
        .position(|n| *n == name)
        .unwrap_or_else(|| panic!("no {name} part in {:?}", r.names()))
}

#[tokio::test]
async fn what_an_upload_carries() {
    let w = World::new(Dialect::Immich).await;
    let bytes = jpeg("carried");
    let p = w.write("2024/IMG_0042.jpg", &bytes);
    assert!(w.scan().await.is_complete());

    let uploads = w.server.uploads();
    assert_eq!(uploads.len(), 1, "{uploads:?}");
    let r = &uploads[0];
    assert_eq!(r.status, 201);
    for field in ["deviceAssetId", "deviceId"] {
        assert!(
            r.field(field).is_some_and(|v| !v.is_empty()),
            "{field}: {r:?}"
        );
    }
    // The dates: the file's mtime as fileModifiedAt, nothing later as fileCreatedAt.
    let meta = std::fs::metadata(&p).unwrap();
    let mtime_ms = meta.mtime() * 1000 + meta.mtime_nsec() / 1_000_000;
    let mtime = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(mtime_ms) * 1_000_000)
        .unwrap()
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        ))
        .unwrap();
    assert_eq!(r.field("fileModifiedAt"), Some(mtime.as_str()));
    let created = r.field("fileCreatedAt").unwrap();
    assert!(is_z_timestamp(created), "{created}");
    assert!(created <= mtime.as_str(), "{created} after {mtime}");
    assert_eq!(r.field("isFavorite"), Some("false"));
    // `filename` before the file part, or the server checks the part's name instead.
    assert_eq!(r.field("filename"), Some("IMG_0042.jpg"));
    assert!(position(r, "filename") < position(r, "assetData"));
    assert_eq!(r.parts[position(r, "assetData")].size, bytes.len() as u64);
    // Nothing the daemon does not do yet.
    assert_eq!(r.field("livePhotoVideoId"), None);
    assert!(!r.has_sidecar());
}

/// The next major calls itself 2.7.5 (docs/SERVER-API.md#1-dialects). What its paths need from
/// a client — `Z` dates, lowercase booleans, no device-id reliance, no legacy sync — must come
/// from the daemon's behaviour, since the version cannot tell it which server this is.
/// (Mirroring against it, by key and by session, is covered in `mirror.rs`'s `_immich_next`
/// tests.)
#[tokio::test]
async fn against_the_next_major_reporting_2_7_5() {
    let w = World::new(Dialect::ImmichNext).await;
    w.write("IMG_1.jpg", &jpeg("next one"));
    w.write("clip.mp4", &mp4("next clip"));
    assert!(w.scan().await.is_complete());

    let version = reqwest::get(format!("{}/server/version", w.server.api_url()))
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(version["major"], 2, "the peer imitates main's 2.7.5");

    let uploads = w.server.uploads();
    assert_eq!(uploads.len(), 2);
    for r in &uploads {
        assert_eq!(r.status, 201, "{r:?}");
        for field in ["fileCreatedAt", "fileModifiedAt"] {
            let v = r.field(field).unwrap_or_default();
            assert!(
                is_z_timestamp(v),
                "{field} = {v:?}: main accepts only Z dates"
            );
        }
        assert_eq!(r.field("isFavorite"), Some("false"));
    }
    assert_eq!(w.server.asset_count(&w.server.admin_id()), 2);
    for legacy in ["POST /sync/full-sync", "POST /sync/delta-sync"] {
        assert_eq!(w.server.requests(legacy), 0, "{legacy} is gone in main");
    }
    // A second scan: everything known, nothing sent, nothing refused.
    assert!(w.scan().await.is_complete());
    assert_eq!(w.server.uploads().len(), 2);
    let refused: u64 = w
        .server
        .request_counts()
        .values()
        .flat_map(|by_status| by_status.iter())
        .filter(|(status, _)| **status >= 400)
        .map(|(_, n)| *n)
        .sum();
    assert_eq!(refused, 0, "{:?}", w.server.request_counts());
}

/// The server's metadata job replaces `fileCreatedAt` with the EXIF date after the upload;
/// the daemon's mirror sees the asset change. Neither may look like a new or changed file.
#[tokio::test]
async fn dates_the_server_rewrites_do_not_cause_a_reupload() {
    let server = TestServer::builder()
        .metadata_delay(Duration::from_millis(20))
        .start()
        .await;
    let w = World::with_server(server);
    let photo = Photo::new("exif dated")
        .taken("2015:06:01 12:00:00", Some("+02:00"))
        .camera("Canon", "EOS 5D")
        .size(3000, 2000)
        .jpeg();
    w.write("IMG_2015.jpg", &photo);
    assert!(w.scan().await.is_complete());
    let admin = w.server.admin_id();
    let id = w.server.assets(&admin)[0].id.clone();
    assert!(
        w.server
            .wait_for_metadata(&id, Duration::from_secs(5))
            .await
    );
    assert_eq!(
        w.server.asset(&id).unwrap().file_created_at,
        "2015-06-01T10:00:00.000Z",
        "the peer rewrote the date"
    );

    let daemon = w.start_daemon();
    let server = w.server.handle();
    assert!(
        eventually(Duration::from_secs(20), || server
            .requests("POST /search/metadata")
            >= 1)
        .await,
        "the daemon's mirror pulls"
    );
    daemon.stop().await;
    let bodies = w.server.upload_bodies();
    let s = w.scan().await;
    assert!(s.is_complete(), "{s:?}");
    assert_eq!(w.server.upload_bodies(), bodies, "no body sent again");
    assert_eq!(w.server.asset_count(&admin), 1);
}
