//! Clock skew (issue 13): the real binary under libfaketime, its wall clock two days ahead
//! and two days behind the test server's. Uploads go once, `doctor` reports the offset,
//! nothing retries in a tight loop, and pulls still see assets that arrive on the server
//! (the pull watermark is the server's `updatedAt`, never the local clock).
//!
//! Needs libfaketime (Debian `faketime`, installed by .ci/run); skips with a message where it
//! is missing. Only the wall clock is moved (`FAKETIME_DONT_FAKE_MONOTONIC=1`): timers run
//! on the monotonic clock, which a skewed wall clock does not touch.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use immish_testserver::{Dialect, NewAsset};

use crate::common::{eventually, jpeg, World, BIN};

/// libfaketime's multi-threaded library, where Debian puts it.
fn libfaketime() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/faketime/libfaketimeMT.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

fn skewed(lib: &PathBuf, offset: &str, w: &World, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--config")
        .arg(w.config_path())
        .args(args)
        .stdin(Stdio::null())
        .env("NO_COLOR", "1")
        .env("LD_PRELOAD", lib)
        .env("FAKETIME", offset)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("FAKETIME_DONT_RESET", "1");
    c
}

fn write_config(w: &World) {
    let text = format!(
        "[server]\nurl = \"{}\"\napi_key = \"{}\"\n[state]\ndir = \"{}\"\n\
         [upload]\nretry_initial = \"50ms\"\nretry_max = \"1s\"\n\
         [watch]\nsettle = \"0s\"\n\
         [mirror]\nevents = false\npull_interval = \"1s\"\n[[roots]]\npath = \"{}\"\n",
        w.server.base_url(),
        w.server.api_key(),
        w.state_dir().display(),
        w.root().display(),
    );
    std::fs::write(w.config_path(), text).unwrap();
    std::fs::set_permissions(w.config_path(), std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn total_requests(w: &World) -> u64 {
    w.server
        .request_counts()
        .values()
        .flat_map(|by_status| by_status.values())
        .sum()
}

fn mirrored(w: &World, id: &str) -> bool {
    w.db()
        .query_row(
            "SELECT COUNT(*) FROM remote_assets WHERE id = ?1",
            [immish_sync::db::ids::IdRef(id)],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n == 1)
        .unwrap_or(false)
}

async fn a_run_with_the_clock_off_by(offset: &str, side: &str) {
    let Some(lib) = libfaketime() else {
        eprintln!(
            "SKIPPED: libfaketime is not installed (apt-get install faketime): the clock-skew \
             test did not run"
        );
        return;
    };
    let w = World::new(Dialect::Immich).await;
    write_config(&w);
    for i in 0..3 {
        w.write(format!("IMG_{i}.jpg"), &jpeg(&format!("skew-{offset}-{i}")));
    }

    // The process really runs on a skewed clock, and doctor says by how much.
    let out = skewed(&lib, offset, &w, &["doctor"]).output().unwrap();
    let doctor =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let clock_line = doctor
        .lines()
        .find(|l| l.contains("clock"))
        .unwrap_or_else(|| panic!("doctor has a clock line:\n{doctor}"));
    assert!(
        clock_line.contains(side) && clock_line.contains("48h"),
        "doctor names a two-day offset ({side} the server's): {clock_line}\n{doctor}"
    );
    assert!(doctor.contains("NTP"), "and the fix:\n{doctor}");

    let log = w.dir.path().join("run.log");
    let mut child = skewed(&lib, offset, &w, &["run"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start immish-sync run");
    let owner = w.server.admin_id();
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let uploaded = eventually(Duration::from_secs(90), || {
        w.server.asset_count(&owner) >= 3
    })
    .await;
    assert!(uploaded, "uploads go up on a skewed clock:\n{}", log_text());

    // A pull after an asset arrives from another client sees it.
    let first_pull = eventually(Duration::from_secs(60), || {
        w.server.requests("POST /search/metadata") > 0
    })
    .await;
    assert!(first_pull, "the mirror pulls:\n{}", log_text());
    let id = w.server.insert(
        &owner,
        NewAsset::new("phone.jpg", jpeg(&format!("phone-{offset}"))),
    );
    let seen = eventually(Duration::from_secs(60), || mirrored(&w, &id)).await;
    assert!(
        seen,
        "a pull sees an asset that arrived on the server after the first pull:\n{}",
        log_text()
    );

    // Settled: the request rate is that of an idle daemon (a pull a second), not a loop.
    let before = total_requests(&w);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let during = total_requests(&w) - before;
    assert!(
        during <= 60,
        "{during} requests in 5 s of idling: {:?}\n{}",
        w.server.request_counts(),
        log_text()
    );

    // SAFETY: a signal to our own child.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let mut status = None;
    let stopped = eventually(Duration::from_secs(30), || {
        status = child.try_wait().unwrap();
        status.is_some()
    })
    .await;
    if !stopped {
        let _ = child.kill();
    }
    assert!(stopped, "stops on SIGTERM");

    // Once each: three bodies, three assets.
    assert_eq!(
        w.server.upload_bodies(),
        3,
        "{:?}",
        w.server.request_counts()
    );
    assert_eq!(w.server.asset_count(&owner), 4);
    eprintln!("clock {offset}: {during} requests in 5 s idle; doctor: {clock_line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_days_ahead_uploads_once_and_pulls_see_new_assets() {
    // The machine ahead: the server is behind it.
    a_run_with_the_clock_off_by("+2d", "ahead of").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_days_behind_uploads_once_and_pulls_see_new_assets() {
    a_run_with_the_clock_off_by("-2d", "behind").await;
}
