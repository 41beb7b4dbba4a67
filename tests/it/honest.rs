//! Issue 13 §3–§5: `status` and `scan` say what is wrong, since when and what happens next,
//! and "all backed up" only when it is. The process boundary matters for several (a kill -9,
//! a closed pipe), so those drive the real binary.

use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use immish_sync::config;
use immish_sync::daemon;
use immish_sync::db::meta::{ConnectionState, SkippedEntries};
use immish_sync::model::JobState;
use immish_sync::status;
use immish_testserver::Dialect;
use tokio_util::sync::CancellationToken;

use crate::common::{eventually, jpeg, run, sha1_hex, World, BIN};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn asset_of(w: &World, bytes: &[u8]) -> String {
    let sum = sha1_hex(bytes);
    w.server
        .assets(&w.server.admin_id())
        .into_iter()
        .find(|a| a.checksum_hex == sum)
        .expect("uploaded")
        .id
}

// --- §3: status names the trouble ---------------------------------------------------------

/// After a kill -9 mid-upload, `status` must not show "uploading 123" for a daemon that is
/// not running: those jobs are queued, and resume when a daemon starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_status_shows_interrupted_uploads_as_queued_not_live() {
    let w = World::new(Dialect::Immich).await;
    for i in 0..12 {
        w.write(format!("IMG_{i}.jpg"), &jpeg(&format!("killed-{i}")));
    }
    w.write_config();
    // Uploads hang long enough for the kill to find them in flight.
    w.server.delay("POST /assets", Duration::from_secs(30));
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(w.config_path())
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the daemon");
    let db_file = w.state_dir().join("state.sqlite3");
    let uploading = || {
        db_file.exists()
            && w.db()
                .query_row(
                    "SELECT COUNT(*) FROM jobs WHERE state = 'uploading'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .is_ok_and(|n| n > 0)
    };
    let reached = eventually(Duration::from_secs(30), uploading).await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert!(reached, "the daemon never started an upload");

    let out = run(&w, &["status"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("daemon:       not running"), "{text}");
    assert!(!text.contains("uploading"), "no live work shown: {text}");
    assert!(
        text.contains("(interrupted; resumes when the daemon starts)"),
        "{text}"
    );
}

/// A daemon against a port nobody listens on holds its lock ("running"), and `status` must
/// say the server is unreachable, since when, and when it tries again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_dead_port_status_says_unreachable_since_and_the_next_try() {
    let w = World::new(Dialect::Immich).await;
    w.write("IMG_1.jpg", &jpeg("dead-port"));
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let text = std::fs::read_to_string(w.write_config())
        .unwrap()
        .replace(&w.server.base_url(), &format!("http://127.0.0.1:{dead}"));
    std::fs::write(w.config_path(), text).unwrap();
    let cfg = config::load(&w.config_path()).expect("config");
    let mut tuning = World::tuning();
    // Long enough that "next try in" is in the future when status reads it.
    tuning.connect_retry_max = Duration::from_secs(20);
    let token = CancellationToken::new();
    let daemon = tokio::spawn(daemon::run_with(cfg, tuning, token.clone()));

    let state = w.state_dir();
    let unreachable = || {
        status::read(&state).ok().flatten().is_some_and(|s| {
            matches!(s.connection, Some(ConnectionState::Unreachable { .. })) && s.daemon.is_some()
        })
    };
    assert!(eventually(Duration::from_secs(20), unreachable).await);
    let s = status::read(&state).unwrap().unwrap();
    let text = s.render();
    assert!(text.contains("daemon:       running"), "{text}");
    assert!(
        text.contains("connection:   server unreachable since"),
        "{text}"
    );
    assert!(text.contains("next try in"), "{text}");

    token.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(20), daemon)
        .await
        .expect("stops");
}

/// A file gone locally is not "done": it is counted apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_gone_locally_are_counted_apart_not_as_done() {
    let w = World::new(Dialect::Immich).await;
    w.write("a.jpg", &jpeg("kept"));
    let gone = w.write("b.jpg", &jpeg("gone"));
    assert!(w.scan().await.is_complete());
    std::fs::remove_file(&gone).unwrap();
    w.scan().await;
    let s = status::read(&w.state_dir()).unwrap().unwrap();
    assert_eq!(s.missing_files, 1);
    assert_eq!(s.count(JobState::Done), 1, "only the present file is done");
    assert!(
        s.render().contains("  missing    1 (gone"),
        "{}",
        s.render()
    );
}

// --- §4: "all backed up" only when it is ----------------------------------------------------

/// A photo trashed a minute ago (the last pull younger than `pull_interval`) is seen by the
/// next `scan`, which fails (exit 1) and names it, until it is restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_only_in_the_trash_fails_the_scan_until_restored() {
    let w = World::new(Dialect::Immich).await;
    let bytes = jpeg("trashed");
    let path = w.write("trashed.jpg", &bytes);
    assert!(w.scan().await.is_complete());
    let id = asset_of(&w, &bytes);
    assert_eq!(w.server.trash([&id]), 1);

    let s = w.scan().await;
    assert!(!s.is_complete(), "{s:?}");
    assert_eq!(s.trash_only_total, 1);
    assert_eq!(s.trash_only, vec![path.as_os_str().as_bytes().to_vec()]);

    let out = run(&w, &["scan"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("in the server's trash only"), "{text}");
    assert!(text.contains("trashed.jpg"), "{text}");
    assert!(!text.contains("all files are backed up"), "{text}");
    let st = status::read(&w.state_dir()).unwrap().unwrap();
    assert_eq!(st.in_trash_only, 1);

    assert_eq!(w.server.restore([&id]), 1);
    let out = run(&w, &["scan"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("all files are backed up"), "{text}");
}

// --- §5: the small ones ---------------------------------------------------------------------

/// `status | head -1`: the reader goes away before the output is written. No panic, no 101.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_into_a_closed_pipe_never_panics() {
    let w = World::new(Dialect::Immich).await;
    w.write("a.jpg", &jpeg("pipe"));
    assert!(w.scan().await.is_complete());
    for args in [
        &["status"][..],
        &["check-config", "--offline"][..],
        &["mirror"][..],
        &["diff"][..],
    ] {
        let rounds = if args[0] == "status" { 50 } else { 5 };
        for _ in 0..rounds {
            let mut child = Command::new(BIN)
                .arg("--config")
                .arg(w.config_path())
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn");
            // The read end closes before the child writes anything.
            drop(child.stdout.take());
            let out = child.wait_with_output().expect("wait");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_ne!(out.status.code(), Some(101), "{args:?}: {err}");
            assert!(!err.contains("panicked"), "{args:?}: {err}");
            assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_that_is_a_file_is_reported_as_not_a_directory() {
    let w = World::new(Dialect::Immich).await;
    std::fs::remove_dir(w.root()).unwrap();
    std::fs::write(w.root(), b"not a folder").unwrap();
    w.write_config();
    let out = run(&w, &["check-config", "--offline"]);
    let text = stdout(&out);
    assert!(text.contains("(is not a directory"), "{text}");
    assert!(!text.contains("not found"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roots_overlapping_through_a_symlink_are_a_config_error_naming_both() {
    let mut w = World::new(Dialect::Immich).await;
    let link = w.dir.path().join("link");
    std::os::unix::fs::symlink(w.root().join("2024"), &link).unwrap();
    std::fs::create_dir_all(w.root().join("2024")).unwrap();
    w.extra = format!("[[roots]]\npath = \"{}\"\n", link.display());
    w.write_config();
    let err = config::load(&w.config_path())
        .expect_err("overlap")
        .to_string();
    assert!(err.contains(&link.display().to_string()), "{err}");
    assert!(err.contains(&w.root().display().to_string()), "{err}");
    assert!(err.contains("through a symlink"), "{err}");
    assert_eq!(
        run(&w, &["check-config", "--offline"]).status.code(),
        Some(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_without_state_says_there_is_nothing_to_retry() {
    let w = World::new(Dialect::Immich).await;
    w.write_config();
    let out = run(&w, &["retry"]);
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("nothing to retry: no state yet at"), "{text}");
    assert!(!w.state_dir().exists(), "retry creates no state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_fifos_and_sockets_are_counted_in_the_summary_and_status() {
    let w = World::new(Dialect::Immich).await;
    let real = w.write("real.jpg", &jpeg("real"));
    std::os::unix::fs::symlink(&real, w.root().join("link.jpg")).unwrap();
    std::os::unix::fs::symlink("/nowhere", w.root().join("dangling.jpg")).unwrap();
    let fifo = w.root().join("pipe.jpg");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let _socket = std::os::unix::net::UnixListener::bind(w.root().join("sock.jpg")).unwrap();

    let s = w.scan().await;
    assert!(s.is_complete(), "{s:?}");
    assert_eq!(
        s.scanned().skipped,
        SkippedEntries {
            symlinks: 2,
            fifos: 1,
            sockets: 1,
            devices: 0
        }
    );
    let st = status::read(&w.state_dir()).unwrap().unwrap();
    let text = st.render();
    assert!(
        text.contains("(skipped: 2 symlinks, 1 FIFO, 1 socket)"),
        "{text}"
    );
    let out = run(&w, &["scan"]);
    assert!(
        stdout(&out).contains("skipped: 2 symlinks, 1 FIFO, 1 socket"),
        "{}",
        stdout(&out)
    );
}
