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

/// docs/RELIABILITY.md#the-state-disk-is-full: the disk of the state directory fills up while
/// the daemon runs. It does not exit: it says so once, pauses, and when space returns every
/// file goes up. The state directory is a small tmpfs in a private mount namespace
/// (`unshare -m`, root only; the test is skipped where that is not possible). The daemon's
/// retry wait is its default, 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_state_disk_pauses_the_daemon_until_space_returns() {
    let probe = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs -o size=64k tmpfs /mnt")
        .status();
    if !matches!(probe, Ok(s) if s.success()) {
        eprintln!("skipped: cannot mount a tmpfs in a private mount namespace here");
        return;
    }
    let mut w = World::new(Dialect::Immich).await;
    w.extra = "[scan]\ninterval = \"300ms\"\n[watch]\nmode = \"off\"\nsettle = \"0s\"\n".into();
    w.write("IMG_seed.jpg", &jpeg("seed"));
    w.write_config();
    std::fs::create_dir_all(w.state_dir()).unwrap();
    let dir = w.dir.path().to_path_buf();
    let script = r#"
        mount -t tmpfs -o size=16m tmpfs "$STATE" || exit 90
        "$BIN" --config "$CONF" run 2> "$DIR/daemon.err" &
        pid=$!
        echo $pid > "$DIR/daemon.pid"
        while [ ! -e "$DIR/fill-now" ]; do sleep 0.05; done
        dd if=/dev/zero of="$STATE/filler" bs=4k 2>/dev/null
        touch "$DIR/filled"
        while [ ! -e "$DIR/free-now" ]; do sleep 0.05; done
        rm -f "$STATE/filler"
        wait $pid
        echo $? > "$DIR/daemon.rc"
    "#;
    let mut shell = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script])
        .env("STATE", w.state_dir())
        .env("BIN", BIN)
        .env("CONF", w.config_path())
        .env("DIR", &dir)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let (server, admin) = (&w.server, w.server.admin_id());
    assert!(
        eventually(Duration::from_secs(30), || server.assets(&admin).len() == 1).await,
        "the daemon never started: {}",
        std::fs::read_to_string(dir.join("daemon.err")).unwrap_or_default()
    );
    let pid: i32 = std::fs::read_to_string(dir.join("daemon.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    std::fs::write(dir.join("fill-now"), b"").unwrap();
    assert!(eventually(Duration::from_secs(30), || dir.join("filled").exists()).await);
    for i in 0..30 {
        w.write(
            format!("new/IMG_{i}.jpg"),
            &jpeg(&format!("while full {i}")),
        );
    }
    let err_path = dir.join("daemon.err");
    assert!(
        eventually(Duration::from_secs(30), || {
            std::fs::read_to_string(&err_path).is_ok_and(|e| e.contains("probably full"))
        })
        .await,
        "the daemon says why it pauses: {}",
        std::fs::read_to_string(&err_path).unwrap_or_default()
    );
    // SAFETY: kill with signal 0 only checks that the process exists.
    assert_eq!(unsafe { libc::kill(pid, 0) }, 0, "the daemon did not exit");

    std::fs::write(dir.join("free-now"), b"").unwrap();
    assert!(
        eventually(Duration::from_secs(90), || server.assets(&admin).len()
            == 31)
        .await,
        "every file goes up once space returns: {} of 31\n{}",
        server.assets(&admin).len(),
        std::fs::read_to_string(&err_path).unwrap_or_default()
    );
    // SAFETY: sending SIGTERM to the daemon we started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let _ = shell.wait();
    let rc = std::fs::read_to_string(dir.join("daemon.rc")).unwrap_or_default();
    assert_eq!(rc.trim(), "0", "a clean stop after the pause");
    let errors = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert_eq!(
        errors.matches("probably full").count(),
        1,
        "said once: {errors}"
    );
}
