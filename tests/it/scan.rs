//! `immish-sync scan`: the core pipeline, in both dialects.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;

use immish_testserver::{Dialect, Failure, Visibility};

use crate::common::{jpeg, mp4, sha1_hex, World};

/// The tree every scan test starts from: media in nested folders, a unicode and a non-UTF-8
/// name, and things that must not be uploaded (empty, text, hidden, temporary).
fn photo_tree(w: &World) -> BTreeMap<String, Vec<u8>> {
    let mut media = BTreeMap::new();
    let mut put = |rel: &str, bytes: Vec<u8>| {
        w.write(rel, &bytes);
        media.insert(rel.to_string(), bytes);
    };
    put("2024/IMG_0001.jpg", jpeg("one"));
    put("2024/IMG_0002.JPG", jpeg("two"));
    put("2024/summer/été à la plage.jpg", jpeg("unicode"));
    put("videos/clip.mp4", mp4("clip"));
    put("top.jpeg", jpeg("top"));
    // Not media, empty, hidden, temporary: never uploaded.
    w.write("notes.txt", b"not a photo");
    w.write("empty.jpg", b"");
    w.write(".hidden.jpg", &jpeg("hidden"));
    w.write("2024/IMG_0003.jpg.part", &jpeg("partial"));
    media
}

/// A non-UTF-8 name (`IMG_\xff.jpg`), written with raw bytes.
fn non_utf8_file(w: &World) -> (PathBuf, Vec<u8>) {
    let name = std::ffi::OsStr::from_bytes(b"IMG_\xff.jpg");
    let p = w.root().join(name);
    let bytes = jpeg("non-utf8");
    std::fs::write(&p, &bytes).unwrap();
    (p, bytes)
}

async fn first_scan_uploads_every_media_file_once(dialect: Dialect) {
    let w = World::new(dialect).await;
    let media = photo_tree(&w);
    let (odd_path, odd_bytes) = non_utf8_file(&w);

    let summary = w.scan().await;
    assert!(
        summary.is_complete(),
        "scan must report all backed up: {summary:?}"
    );

    let assets = w.server.assets(&w.server.admin_id());
    let mut on_server: BTreeMap<String, usize> = BTreeMap::new();
    for a in &assets {
        *on_server.entry(a.checksum_hex.clone()).or_default() += 1;
    }
    let mut expected: Vec<String> = media.values().map(|b| sha1_hex(b)).collect();
    expected.push(sha1_hex(&odd_bytes));
    expected.sort();
    let got: Vec<String> = on_server.keys().cloned().collect();
    assert_eq!(
        got, expected,
        "exactly the media files' bytes reach the server"
    );
    assert!(
        on_server.values().all(|n| *n == 1),
        "each once: {on_server:?}"
    );
    assert_eq!(
        w.server.upload_bodies(),
        expected.len() as u64,
        "one body per media file"
    );

    // Names arrive as the user sees them; the non-UTF-8 one as a lossy display name.
    let names: Vec<&str> = assets
        .iter()
        .map(|a| a.original_file_name.as_str())
        .collect();
    assert!(names.contains(&"été à la plage.jpg"), "{names:?}");
    assert!(names.contains(&"IMG_\u{FFFD}.jpg"), "{names:?}");

    // The catalogue holds every media file as done, and nothing else.
    let states = w.job_states();
    assert_eq!(states.len(), expected.len(), "{states:?}");
    assert!(states.iter().all(|(_, s)| s == "done"), "{states:?}");
    assert_eq!(w.state_of(&odd_path).as_deref(), Some("done"));
}

#[tokio::test]
async fn first_scan_uploads_every_media_file_once_immich() {
    first_scan_uploads_every_media_file_once(Dialect::Immich).await;
}

#[tokio::test]
async fn first_scan_uploads_every_media_file_once_seed() {
    first_scan_uploads_every_media_file_once(Dialect::Seed).await;
}

#[tokio::test]
async fn first_scan_uploads_every_media_file_once_immich_next() {
    first_scan_uploads_every_media_file_once(Dialect::ImmichNext).await;
}

async fn second_scan_sends_no_body_and_hashes_nothing(dialect: Dialect) {
    let w = World::new(dialect).await;
    let media = photo_tree(&w);
    assert!(w.scan().await.is_complete());
    let bodies = w.server.upload_bodies();
    let checks = w.server.requests("POST /assets/bulk-upload-check");
    assert_eq!(bodies, media.len() as u64);

    let again = w.scan().await;
    assert!(again.is_complete());
    assert_eq!(again.scanned().files, media.len() as u64);
    assert_eq!(again.scanned().queued, 0, "unchanged files are not queued");
    assert_eq!(
        again.stats.hashed.load(Relaxed),
        0,
        "unchanged files are not hashed"
    );
    assert_eq!(w.server.upload_bodies(), bodies, "no body sent again");
    assert_eq!(
        w.server.requests("POST /assets/bulk-upload-check"),
        checks,
        "no check either"
    );
}

#[tokio::test]
async fn second_scan_sends_no_body_and_hashes_nothing_immich() {
    second_scan_sends_no_body_and_hashes_nothing(Dialect::Immich).await;
}

#[tokio::test]
async fn second_scan_sends_no_body_and_hashes_nothing_seed() {
    second_scan_sends_no_body_and_hashes_nothing(Dialect::Seed).await;
}

#[tokio::test]
async fn a_moved_file_is_not_uploaded_again() {
    let w = World::new(Dialect::Immich).await;
    photo_tree(&w);
    assert!(w.scan().await.is_complete());
    let bodies = w.server.upload_bodies();
    let assets = w.server.assets(&w.server.admin_id()).len();

    std::fs::create_dir_all(w.root().join("sorted")).unwrap();
    let to = w.root().join("sorted/first.jpg");
    std::fs::rename(w.root().join("2024/IMG_0001.jpg"), &to).unwrap();

    let s = w.scan().await;
    assert!(s.is_complete(), "{s:?}");
    assert_eq!(s.scanned().queued, 1, "the new path is news");
    assert_eq!(
        s.stats.hashed.load(Relaxed),
        0,
        "same inode and mtime: checksum reused"
    );
    assert_eq!(w.server.upload_bodies(), bodies, "no body for a moved file");
    assert_eq!(w.server.assets(&w.server.admin_id()).len(), assets);
    assert_eq!(w.state_of(&to).as_deref(), Some("done"));
}

#[tokio::test]
async fn a_file_already_on_the_server_is_linked_without_a_body() {
    let w = World::new(Dialect::Immich).await;
    let bytes = jpeg("already there");
    let existing = w.server.upload_as(
        &w.server.admin_id(),
        "phone-copy.jpg",
        &bytes,
        Visibility::Timeline,
    );
    let p = w.write("camera/IMG_9.jpg", &bytes);
    w.write("camera/IMG_10.jpg", &jpeg("new one"));

    let s = w.scan().await;
    assert!(s.is_complete(), "{s:?}");
    assert_eq!(w.server.upload_bodies(), 1, "only the new file's body");
    assert_eq!(s.stats.linked.load(Relaxed), 1);
    let asset_id: String = w
        .db()
        .query_row(
            "SELECT asset_id FROM files WHERE path = ?1",
            [p.as_os_str().as_bytes()],
            |r| immish_sync::db::ids::id(r, 0),
        )
        .unwrap();
    assert_eq!(asset_id, existing, "linked to the server's asset");
}

#[tokio::test]
async fn a_500_is_retried_and_then_succeeds() {
    let w = World::new(Dialect::Immich).await;
    let bytes = jpeg("retry me");
    w.write("IMG_1.jpg", &bytes);
    w.server.fail_with("POST /assets", 2, Failure::new(500));

    let s = w.scan().await;
    assert!(s.is_complete(), "{s:?}");
    assert_eq!(w.server.requests_with_status("POST /assets", 500), 2);
    assert_eq!(w.server.requests_with_status("POST /assets", 201), 1);
    let assets = w.server.assets(&w.server.admin_id());
    assert_eq!(assets.len(), 1);
    assert_eq!(assets[0].checksum_hex, sha1_hex(&bytes));
    assert_eq!(s.stats.retries.load(Relaxed), 2);
}

#[tokio::test]
async fn a_413_from_a_proxy_fails_only_that_file() {
    let mut w = World::new(Dialect::Immich).await;
    // One upload at a time, so the first request is the one that meets the proxy.
    w.upload = "concurrency = 1".into();
    let files: Vec<Vec<u8>> = (0..4).map(|i| jpeg(&format!("f{i}"))).collect();
    for (i, b) in files.iter().enumerate() {
        w.write(format!("IMG_{i}.jpg"), b);
    }
    w.server.fail_with("POST /assets", 1, Failure::nginx_413());

    let s = w.scan().await;
    assert!(!s.is_complete());
    assert_eq!(s.failed_total, 1, "{s:?}");
    assert_eq!(
        w.server.requests_with_status("POST /assets", 413),
        1,
        "no retry loop"
    );
    assert_eq!(
        w.server.assets(&w.server.admin_id()).len(),
        3,
        "the others went up"
    );
    let reason = s.failed[0].reason.clone().unwrap_or_default();
    assert!(reason.contains("413"), "{reason}");
    assert!(
        reason.contains("client_max_body_size") || reason.contains("proxy"),
        "{reason}"
    );

    // A second scan does not hammer the proxy with the same file.
    let again = w.scan().await;
    assert_eq!(again.failed_total, 1);
    assert_eq!(w.server.requests_with_status("POST /assets", 413), 1);
}

/// Password login instead of an API key: the session token does the same work.
#[tokio::test]
async fn a_password_login_backs_up_like_a_key() {
    let w = World::new(Dialect::Immich).await;
    let media = photo_tree(&w);
    let pw = w.dir.path().join("password");
    std::fs::write(&pw, format!("{}\n", w.server.admin_password())).unwrap();
    // A password file others can read is refused, like the password inline in such a config.
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let text = format!(
        "[server]\nurl = \"{}\"\nemail = \"{}\"\npassword_file = \"{}\"\n[state]\ndir = \"{}\"\n\
         [watch]\nsettle = \"0s\"\n[[roots]]\npath = \"{}\"\n",
        w.server.base_url(),
        w.server.admin_email(),
        pw.display(),
        w.state_dir().display(),
        w.root().display()
    );
    std::fs::write(w.config_path(), text).unwrap();
    let config = immish_sync::config::load(&w.config_path()).unwrap();
    let s = immish_sync::daemon::scan_with(config, World::tuning(), Default::default())
        .await
        .unwrap();
    assert!(s.is_complete(), "{s:?}");
    assert_eq!(w.server.requests_with_status("POST /auth/login", 201), 1);
    assert_eq!(w.server.assets(&w.server.admin_id()).len(), media.len());
}

/// docs/RELIABILITY.md#half-written-files, for the scan path: a file that keeps changing may
/// still be being copied; `scan` waits for it to settle a few times, then leaves it (and says
/// so) instead of uploading half of it. Once it has settled it goes up, once, with its final
/// bytes. docs/RELIABILITY.md#files-with-a-wrong-date: a file dated next year is not "still
/// changing" forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_still_changing_is_left_for_later_and_a_future_date_is_not() {
    let mut w = World::new(Dialect::Immich).await;
    w.extra = "[watch]\nmode = \"off\"\nsettle = \"1s\"\n".into();
    let copying = w.write("IMG_copying.jpg", &jpeg("being copied"));
    let future = w.write("IMG_future.jpg", &jpeg("camera clock in 2027"));
    let next_year = std::time::SystemTime::now() + std::time::Duration::from_secs(365 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&future)
        .unwrap()
        .set_modified(next_year)
        .unwrap();
    // A slow copy: a chunk every 200 ms for 5 s, longer than the scan waits.
    let writer = {
        let p = copying.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            for i in 0..25 {
                let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
                f.write_all(&[i as u8; 4096]).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        })
    };

    let s = w.scan().await;
    assert_eq!(s.scanned().fresh, 1, "{s:?}");
    assert!(
        !s.is_complete(),
        "a file left for later is not backed up yet"
    );
    let names: Vec<String> = w
        .server
        .assets(&w.server.admin_id())
        .into_iter()
        .map(|a| a.original_file_name)
        .collect();
    assert_eq!(
        names,
        vec!["IMG_future.jpg".to_string()],
        "only the settled file went up"
    );

    writer.join().unwrap();
    let final_bytes = std::fs::read(&copying).unwrap();
    let s = w.scan().await;
    assert!(s.is_complete(), "{s:?}");
    assert_eq!(
        w.server.upload_bodies(),
        2,
        "no half-copied body was ever sent"
    );
    let sums: Vec<String> = w
        .server
        .assets(&w.server.admin_id())
        .into_iter()
        .map(|a| a.checksum_hex)
        .collect();
    assert!(sums.contains(&sha1_hex(&final_bytes)), "the final bytes");
}

// --- verification in batches (issue 12) -------------------------------------------------------

/// Uploads are verified by one `bulk-upload-check` of their checksums per batch, not by
/// reading every new asset back: the server holds each file's bytes once, as the asset the
/// upload named, every job is `done` as uploaded and verified, and no `GET /assets/:id` was
/// needed (docs/ARCHITECTURE.md#verification).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_verified_in_batches_by_their_checksums() {
    const N: usize = 40;
    let w = World::new(Dialect::Immich).await;
    let mut sums = Vec::new();
    for i in 0..N {
        let bytes = jpeg(&format!("batch {i}"));
        sums.push(sha1_hex(&bytes));
        w.write(format!("{:02}/IMG_{i:03}.jpg", i % 4), &bytes);
    }
    let summary = w.scan().await;
    assert!(summary.is_complete(), "{summary:?}");
    assert_eq!(summary.stats.uploaded.load(Relaxed), N as u64);

    let assets = w.server.assets(&w.server.admin_id());
    let mut on_server: Vec<String> = assets.iter().map(|a| a.checksum_hex.clone()).collect();
    on_server.sort();
    sums.sort();
    assert_eq!(on_server, sums, "each file's bytes once on the server");
    assert_eq!(w.server.upload_bodies(), N as u64);

    let db = w.db();
    let (done, linked_to_server): (i64, i64) = db
        .query_row(
            "SELECT
                (SELECT COUNT(*) FROM jobs WHERE state = 'done' AND outcome = 'uploaded'),
                (SELECT COUNT(*) FROM files f JOIN remote_assets r ON r.id = f.asset_id
                 WHERE r.checksum = f.checksum)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    // What the server holds as what: `known_assets` and what backed-up files say (0015).
    let known = immish_sync::db::catalogue::known_assets(&db).unwrap();
    let verified = known.iter().filter(|k| k.2).count();
    assert_eq!(done, N as i64, "every job done as uploaded");
    assert_eq!(verified, N, "every checksum verified");
    assert_eq!(
        linked_to_server, N as i64,
        "each file is backed up as an asset the mirror holds with its checksum"
    );
    for a in &assets {
        let sum = immish_sync::model::Checksum::parse(&a.checksum_hex).unwrap();
        let id = immish_sync::db::catalogue::known_asset(&db, &sum).unwrap();
        assert_eq!(
            id.flatten().map(|i| i.0),
            Some(a.id.clone()),
            "remembered as the asset the server holds"
        );
    }
    assert_eq!(
        w.server.requests("GET /assets/:id"),
        0,
        "no asset read back one by one: {:?}",
        w.server.request_counts()
    );
    let checks = w.server.requests("POST /assets/bulk-upload-check");
    assert!(
        checks < N as u64,
        "{checks} bulk checks for {N} files: dedup and verification go in batches"
    );
}

/// Issue 12: with a fresh, complete mirror (the scan's own first pull, just finished) the
/// mirror answers for every checksum: no `bulk-upload-check` is made before the upload,
/// and content the server already holds (live or trashed) is still not uploaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_complete_mirror_answers_without_a_bulk_check_before_upload() {
    let w = World::new(Dialect::Immich).await;
    let user = w.server.admin_id();
    let (held, trashed, new) = (jpeg("held elsewhere"), jpeg("in the trash"), jpeg("new"));
    w.server
        .upload_as(&user, "other.jpg", &held, Visibility::Timeline);
    let t = w
        .server
        .upload_as(&user, "gone.jpg", &trashed, Visibility::Timeline);
    assert_eq!(w.server.trash([&t]), 1);
    w.write("a/held.jpg", &held);
    w.write("a/trashed.jpg", &trashed);
    w.write("a/new.jpg", &new);

    let summary = w.scan().await;
    assert_eq!(
        (summary.pending, summary.failed_total),
        (0, 0),
        "{summary:?}"
    );
    assert_eq!(
        summary.trash_only_total, 1,
        "the trashed content is reported as such"
    );
    assert_eq!(w.server.upload_bodies(), 1, "only the new content is sent");
    assert_eq!(
        w.server.requests("POST /assets/bulk-upload-check"),
        1,
        "one bulk check: the verification of the upload, none before it"
    );
    let states: BTreeMap<String, String> = w
        .job_states()
        .into_iter()
        .map(|(p, s)| (String::from_utf8_lossy(&p).into_owned(), s))
        .collect();
    let state = |name: &str| {
        states
            .iter()
            .find(|(p, _)| p.ends_with(name))
            .map(|(_, s)| s.clone())
    };
    assert_eq!(state("held.jpg").as_deref(), Some("done"));
    assert_eq!(state("new.jpg").as_deref(), Some("done"));
    assert_eq!(state("trashed.jpg").as_deref(), Some("skipped"));
}
