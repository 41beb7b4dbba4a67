//! Crashes: the real binary killed with SIGKILL mid-run, then run again.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use immish_testserver::Dialect;

use crate::common::{eventually, jpeg, sha1_hex, World};

const BIN: &str = env!("CARGO_BIN_EXE_immish-sync");

fn scan_cmd(w: &World) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--config")
        .arg(w.config_path())
        .arg("scan")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_uploads_then_scan_leaves_every_file_on_the_server_once() {
    let w = World::new(Dialect::Immich).await;
    let n = 120;
    let mut expected = BTreeSet::new();
    for i in 0..n {
        let b = jpeg(&format!("crash-{i}"));
        expected.insert(sha1_hex(&b));
        w.write(format!("d{}/IMG_{i}.jpg", i % 7), &b);
    }
    w.write_config();
    // Slow uploads down so the kill lands while requests are in flight.
    w.server.delay("POST /assets", Duration::from_millis(40));

    // Kill while it starts up, hashes and checks (fixed delays after the start), then at
    // several depths into the uploads.
    for delay_ms in [0u64, 30, 120] {
        let mut child = scan_cmd(&w).spawn().expect("start immish-sync");
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        child.kill().expect("SIGKILL");
        let _ = child.wait();
    }
    for kill_after in [5u64, 15, 30, 45, 60, 80, 100] {
        let mut child = scan_cmd(&w).spawn().expect("start immish-sync");
        let server = &w.server;
        let reached = eventually(Duration::from_secs(60), || {
            server.upload_bodies() >= kill_after
        })
        .await;
        child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on unix
        let _ = child.wait();
        assert!(reached, "uploads never reached {kill_after}");
    }

    w.server.delay("POST /assets", Duration::ZERO);
    let out = scan_cmd(&w).output().expect("run immish-sync");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "final scan must succeed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("all files are backed up"), "{stdout}");

    let assets = w.server.assets(&w.server.admin_id());
    let got: BTreeSet<String> = assets.iter().map(|a| a.checksum_hex.clone()).collect();
    assert_eq!(assets.len(), n, "one asset per file");
    assert_eq!(got, expected);
    // At most the requests in flight at each kill were sent twice (4 uploads at a time).
    assert!(
        w.server.upload_bodies() <= n as u64 + 10 * 4,
        "bodies: {}",
        w.server.upload_bodies()
    );

    let db = w.db();
    let ok: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let not_done: i64 = db
        .query_row("SELECT COUNT(*) FROM jobs WHERE state != 'done'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(not_done, 0, "the queue drained");
}

// Multi-threaded: the test blocks on child processes while the server serves them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_state_dir_exits_at_once() {
    let w = World::new(Dialect::Immich).await;
    w.write("IMG_1.jpg", &jpeg("lock"));
    w.write_config();
    let mut first = Command::new(BIN)
        .arg("--config")
        .arg(w.config_path())
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = &w.server;
    assert!(eventually(Duration::from_secs(30), || server.upload_bodies() >= 1).await);

    let second = Command::new(BIN)
        .arg("--config")
        .arg(w.config_path())
        .arg("run")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("already using the state directory"),
        "{stderr}"
    );

    // A killed holder never blocks a restart.
    first.kill().unwrap();
    let _ = first.wait();
    let out = scan_cmd(&w).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
