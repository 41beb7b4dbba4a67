//! What the daemon survives (docs/RELIABILITY.md), each against the test server's
//! fault switches.

use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use immish_sync::pipeline::{EngineEnd, Pause};
use immish_testserver::Dialect;

use crate::common::{eventually, jpeg, sha1_hex, World};

/// docs/RELIABILITY.md#the-state-directory-is-lost: the state directory is lost; nothing
/// already on the server is sent again.
#[tokio::test]
async fn losing_the_state_directory_sends_no_body_twice() {
    let w = World::new(Dialect::Immich).await;
    for i in 0..60 {
        w.write(format!("a/IMG_{i}.jpg"), &jpeg(&format!("state-{i}")));
    }
    assert!(w.scan().await.is_complete());
    assert_eq!(w.server.upload_bodies(), 60);

    std::fs::remove_dir_all(w.state_dir()).unwrap();
    let s = w.scan().await;
    assert!(s.is_complete(), "{s:?}");
    assert_eq!(w.server.upload_bodies(), 60, "no body sent again");
    assert_eq!(
        s.stats.linked.load(Relaxed),
        60,
        "every file linked by the duplicate check"
    );
    assert_eq!(w.server.assets(&w.server.admin_id()).len(), 60);
}

/// docs/RELIABILITY.md#a-file-that-changes-while-it-is-uploaded: the file shrinks while it is
/// sent. The request is aborted before its last byte (no asset from the half-sent file), and
/// the file goes up later with its new bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_truncated_during_upload_never_becomes_a_wrong_asset() {
    let w = World::new(Dialect::Immich).await;
    // Much larger than what loopback socket buffers hold (~10 MiB), so the client cannot
    // have read the whole file before it shrinks.
    let mut big = jpeg("truncate-me");
    big.resize(48 * 1024 * 1024, 7);
    let p = w.write("IMG_big.jpg", &big);
    // 16 MiB/s: the upload takes about three seconds.
    w.server.slow_body(16 * 1024 * 1024);

    let scan = tokio::spawn({
        let config = w.config();
        async move { immish_sync::daemon::scan_with(config, World::tuning(), Default::default()).await }
    });
    let server = &w.server;
    assert!(
        eventually(Duration::from_secs(20), || server.upload_body_bytes()
            > 2 * 1024 * 1024)
        .await,
        "the upload never started"
    );
    // Truncate to 30 %.
    let short = big[..big.len() * 3 / 10].to_vec();
    std::fs::write(&p, &short).unwrap();

    let s = tokio::time::timeout(Duration::from_secs(60), scan)
        .await
        .expect("scan ends")
        .unwrap()
        .unwrap();
    assert!(s.is_complete(), "{s:?}");
    let assets = w.server.assets(&w.server.admin_id());
    let sums: Vec<&str> = assets.iter().map(|a| a.checksum_hex.as_str()).collect();
    assert_eq!(
        sums,
        vec![sha1_hex(&short).as_str()],
        "only the final bytes, once"
    );
    w.server.slow_body(0);
}

/// docs/RELIABILITY.md#stored-then-the-reply-was-lost: the server stores the asset but the
/// reply never comes. The retry asks first, so the body is not sent twice.
#[tokio::test]
async fn a_lost_reply_is_not_answered_with_a_second_body() {
    let w = World::new(Dialect::Immich).await;
    let bytes = jpeg("stall");
    w.write("IMG_1.jpg", &bytes);
    w.server.stall_after_store(1);
    // A short stall timeout so the test does not wait two minutes.
    let mut config = w.config();
    config.server.stall_timeout = Duration::from_millis(700);
    let s = immish_sync::daemon::scan_with(config, World::tuning(), Default::default())
        .await
        .unwrap();
    assert!(s.is_complete(), "{s:?}");
    assert_eq!(w.server.upload_bodies(), 1, "one body in all");
    let assets = w.server.assets(&w.server.admin_id());
    assert_eq!(assets.len(), 1);
    assert_eq!(assets[0].checksum_hex, sha1_hex(&bytes));
}

/// docs/RELIABILITY.md#the-server-is-full-507-and-the-quota: the server's disk is full. `scan`
/// stops at once and says why, without a hot loop and without failing the files; when space
/// returns they go up.
#[tokio::test]
async fn a_full_server_pauses_instead_of_failing_files() {
    let w = World::new(Dialect::Immich).await;
    for i in 0..5 {
        w.write(format!("IMG_{i}.jpg"), &jpeg(&format!("full-{i}")));
    }
    w.server.storage_full(true);
    let s = w.scan().await;
    assert!(
        matches!(s.end, EngineEnd::Paused(Pause::Capacity(_))),
        "{:?}",
        s.end
    );
    assert!(!s.is_complete());
    assert_eq!(s.failed_total, 0, "no file is failed for a full server");
    assert!(
        w.server.requests("POST /assets") <= 4,
        "no hot loop: {}",
        w.server.requests("POST /assets")
    );

    w.server.storage_full(false);
    let s = w.scan().await;
    assert!(s.is_complete(), "{s:?}");
    assert_eq!(w.server.assets(&w.server.admin_id()).len(), 5);
}

/// docs/RELIABILITY.md#401-the-credentials-are-revoked: the key is revoked while the daemon
/// runs. Uploads pause (nothing lost, probes at the configured pace), and resume when the key
/// works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_pauses_the_daemon_and_it_resumes_when_the_key_works() {
    let mut w = World::new(Dialect::Immich).await;
    w.extra = "[scan]\ninterval = \"300ms\"\n[watch]\nmode = \"off\"\nsettle = \"0s\"\n".into();
    w.write("IMG_0.jpg", &jpeg("before"));
    let d = w.start_daemon();
    let (server, admin) = (&w.server, w.server.admin_id());
    assert!(eventually(Duration::from_secs(20), || server.assets(&admin).len() == 1).await);

    w.server.unauthorized(true);
    for i in 1..4 {
        w.write(format!("IMG_{i}.jpg"), &jpeg(&format!("during-{i}")));
    }
    // The rescan finds them; their check (or upload) meets the 401 and everything pauses.
    let refused = || {
        server.requests_with_status("POST /assets/bulk-upload-check", 401)
            + server.requests_with_status("POST /assets", 401)
    };
    assert!(
        eventually(Duration::from_secs(30), || refused() >= 1).await,
        "the new files never reached the server: {:?}",
        server.request_counts()
    );
    let t0 = std::time::Instant::now();
    let before = server.requests("POST /auth/validateToken");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let probes = server.requests("POST /auth/validateToken") - before;
    // Probe interval in the tests is 200 ms: at most one probe per interval.
    let allowed = (t0.elapsed().as_millis() / 200) as u64 + 1;
    assert!(probes <= allowed, "{probes} probes in {:?}", t0.elapsed());
    assert_eq!(
        server.assets(&admin).len(),
        1,
        "nothing uploaded while refused"
    );
    // No upload storm: the uploads in flight when the key was revoked meet the 401 (with a
    // fresh, complete mirror no duplicate check goes first: up to all three files, within
    // upload.concurrency), and none starts while the daemon is paused.
    let refused_uploads = server.requests_with_status("POST /assets", 401);
    assert!(refused_uploads <= 3, "no upload storm: {refused_uploads}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        server.requests_with_status("POST /assets", 401),
        refused_uploads,
        "no upload while paused"
    );

    w.server.unauthorized(false);
    assert!(
        eventually(Duration::from_secs(20), || server.assets(&admin).len() == 4).await,
        "all files arrive after the key works again"
    );
    d.stop().await;
    let failed: i64 = w
        .db()
        .query_row(
            "SELECT COUNT(*) FROM jobs WHERE state = 'failed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(failed, 0);
}

/// docs/RELIABILITY.md#symlinks-fifos-and-other-filesystems: symlink loops, links out of the
/// tree, FIFOs: never followed or read, and the scan ends.
#[tokio::test]
async fn links_fifos_and_loops_are_never_followed() {
    let w = World::new(Dialect::Immich).await;
    let real = w.write("real.jpg", &jpeg("real"));
    let outside = w.dir.path().join("outside.jpg");
    std::fs::write(&outside, jpeg("outside")).unwrap();
    std::os::unix::fs::symlink("..", w.root().join("loop")).unwrap();
    std::os::unix::fs::symlink("/etc", w.root().join("etc")).unwrap();
    std::os::unix::fs::symlink(&outside, w.root().join("link.jpg")).unwrap();
    let fifo = w.root().join("pipe.jpg");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);

    let s = w.scan().await;
    assert!(s.is_complete(), "{s:?}");
    let assets = w.server.assets(&w.server.admin_id());
    assert_eq!(assets.len(), 1, "only the real file");
    assert_eq!(
        assets[0].checksum_hex,
        sha1_hex(&std::fs::read(real).unwrap())
    );
}

/// docs/RELIABILITY.md#names-that-are-not-utf-8: a non-UTF-8 name survives a restart without a
/// second upload.
#[tokio::test]
async fn a_non_utf8_name_is_not_uploaded_again_after_a_restart() {
    let w = World::new(Dialect::Immich).await;
    let p = w
        .root()
        .join(std::ffi::OsStr::from_bytes(b"IMG_\xff\xfe.jpg"));
    std::fs::write(&p, jpeg("bytes")).unwrap();
    assert!(w.scan().await.is_complete());
    let s = w.scan().await;
    assert!(s.is_complete());
    assert_eq!(s.scanned().queued, 0);
    assert_eq!(w.server.upload_bodies(), 1);
}

/// docs/RELIABILITY.md#the-database-is-busy: another process holds the database's write lock
/// for 3 s while a scan runs. The daemon waits (busy_timeout) and loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_held_busy_for_three_seconds_loses_nothing() {
    let w = World::new(Dialect::Immich).await;
    for i in 0..200 {
        w.write(format!("b/IMG_{i}.jpg"), &jpeg(&format!("busy-{i}")));
    }
    // Create the state first, so the other connection has a database to lock.
    w.write("first.jpg", &jpeg("first"));
    assert!(w.scan().await.is_complete());

    let db_path = w.state_dir().join("state.sqlite3");
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let c = rusqlite::Connection::open(db_path).unwrap();
        c.execute_batch("BEGIN IMMEDIATE; UPDATE meta SET value = value;")
            .unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_secs(3));
        c.execute_batch("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();
    for i in 200..220 {
        w.write(format!("b/IMG_{i}.jpg"), &jpeg(&format!("busy-{i}")));
    }
    let s = w.scan().await;
    holder.join().unwrap();
    assert!(s.is_complete(), "{s:?}");
    assert_eq!(w.server.assets(&w.server.admin_id()).len(), 221);
}

/// docs/RELIABILITY.md#5xx-resets-and-restarts: the connection drops mid-body three times (a
/// restarting server or proxy); the fourth attempt succeeds, and exactly one asset exists.
#[tokio::test]
async fn connections_dropped_mid_body_are_retried_until_one_succeeds() {
    let w = World::new(Dialect::Immich).await;
    let mut bytes = jpeg("dropped");
    bytes.resize(256 * 1024, 3);
    w.write("IMG_1.jpg", &bytes);
    w.server.drop_after_bytes("POST /assets", 64 * 1024, 3);

    let s = w.scan().await;
    assert!(s.is_complete(), "{s:?}");
    assert_eq!(
        w.server.requests_with_status("POST /assets", 0),
        3,
        "three drops"
    );
    let assets = w.server.assets(&w.server.admin_id());
    assert_eq!(assets.len(), 1);
    assert_eq!(assets[0].checksum_hex, sha1_hex(&bytes));
}

/// docs/RELIABILITY.md#unreadable-files: a file the daemon may not read fails alone, with a
/// reason, and goes up once its permissions are fixed. Runs the binary as `nobody` (the test
/// runs as root in CI, where permission bits do not stop reads); skipped where `setpriv`
/// cannot drop privileges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_file_fails_alone_and_goes_up_when_readable() {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to run the daemon as another user");
        return;
    }
    let probe = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
        .status();
    if !matches!(probe, Ok(s) if s.success()) {
        eprintln!("skipped: setpriv cannot drop privileges here");
        return;
    }
    let w = World::new(Dialect::Immich).await;
    w.write("IMG_ok.jpg", &jpeg("readable"));
    let locked = w.write("IMG_locked.jpg", &jpeg("locked"));
    w.write_config();
    // nobody may read the tree, the config and its own state dir; not the locked file.
    for p in [w.dir.path().to_path_buf(), w.root()] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::create_dir(w.state_dir()).unwrap();
    let chown = |p: &std::path::Path| {
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: chown with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::chown(c.as_ptr(), 65534, 65534) }, 0);
    };
    chown(&w.state_dir());
    chown(&w.config_path());

    let run_as_nobody = || {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_immish-sync"))
            .arg("--config")
            .arg(w.config_path())
            .arg("scan")
            .env("HOME", w.dir.path())
            .output()
            .unwrap()
    };
    let out = run_as_nobody();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("IMG_locked.jpg"),
        "names the file: {stdout}"
    );
    assert!(
        stdout.to_lowercase().contains("permission denied"),
        "says why: {stdout}"
    );
    assert_eq!(
        w.server.assets(&w.server.admin_id()).len(),
        1,
        "the other file went up"
    );

    // Fixed permissions change the file's ctime: the next scan takes it.
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run_as_nobody();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(w.server.assets(&w.server.admin_id()).len(), 2);
}
