//! Issue 10, upload time windows (`[upload] windows`, docs/ARCHITECTURE.md#upload-windows),
//! with the real clock: a window computed from now.

use std::time::Duration;

use immish_testserver::Dialect;

use crate::common::{eventually, jpeg, run, World};

/// `HH:MM` of local time `minutes` from now.
fn local_in(minutes: i64) -> String {
    let t = jiff::ZonedDateTime::now()
        .checked_add(jiff::SignedDuration::from_mins(minutes))
        .expect("a time");
    format!("{:02}:{:02}", t.hour(), t.minute())
}

fn status_json(w: &World) -> serde_json::Value {
    let out = run(w, &["status", "--json"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("status --json")
}

/// The file was hashed and its duplicate check answered: by the server's bulk check, or by
/// the fresh and complete mirror (the job then waits as `uploading`, accepted for upload).
fn checked(w: &World, file: &std::path::Path) -> bool {
    w.server.requests("POST /assets/bulk-upload-check") > 0
        || w.state_of(file).as_deref() == Some("uploading")
}

/// Outside every window the file is hashed and checked but not uploaded, and `status`
/// (text and JSON) says when uploads resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_the_windows_nothing_uploads_and_status_says_when_it_resumes() {
    let mut w = World::new(Dialect::Immich).await;
    let (start, end) = (local_in(2), local_in(3));
    w.upload = format!("windows = [\"{start}-{end}\"]\n");
    let file = w.write("IMG_1.jpg", &jpeg("window-closed"));
    let d = w.start_daemon();

    let mut last = serde_json::Value::Null;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut told = false;
    while !told && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        last = status_json(&w);
        told = last["activity"]["uploads_resume_at"] == start.as_str();
    }
    assert!(told, "status --json never named {start}: {last}");
    assert!(
        last["activity"]["uploads_resume_ms"].as_i64().is_some(),
        "{last}"
    );
    let text = String::from_utf8_lossy(&run(&w, &["status"]).stdout).into_owned();
    assert!(
        text.contains(&format!(
            "outside the upload windows; uploads resume at {start}"
        )),
        "{text}"
    );

    // Hashing and the dedup check go on: the file waits for an upload slot, not a hash.
    // The check is the server's bulk check, or the fresh and complete mirror's answer
    // (the job then waits as `uploading`, accepted for upload).
    let checked = eventually(Duration::from_secs(30), || checked(&w, &file)).await;
    assert!(
        checked,
        "the file was never checked: {:?}",
        w.state_of(&file)
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(w.server.requests("POST /assets"), 0, "an upload started");
    assert_eq!(w.server.asset_count(&w.server.admin_id()), 0);
    d.stop().await;
}

/// Inside a window (one of several) uploads go, and `status` names no resume time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_a_window_uploads_go() {
    let mut w = World::new(Dialect::Immich).await;
    w.upload = format!(
        "windows = [\"{}-{}\", \"{}-{}\"]\n",
        local_in(120),
        local_in(130),
        local_in(-1),
        local_in(10)
    );
    w.write("IMG_1.jpg", &jpeg("window-open"));
    let d = w.start_daemon();
    let admin = w.server.admin_id();
    assert!(
        eventually(Duration::from_secs(60), || w.server.asset_count(&admin)
            == 1)
        .await,
        "the upload never went"
    );
    let s = status_json(&w);
    assert!(s["activity"].get("uploads_resume_at").is_none(), "{s}");
    d.stop().await;
}

/// A window that is not `HH:MM-HH:MM` is a config error naming the file, line and key.
#[test]
fn a_bad_window_is_refused_naming_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[server]\nurl = \"http://127.0.0.1:1\"\napi_key = \"k\"\n[state]\ndir = \"/tmp/x\"\n\
         [upload]\nwindows = [\"01:00-07:00\", \"25:00-02:00\"]\n[[roots]]\npath = \"/tmp\"\n",
    )
    .unwrap();
    let e = immish_sync::config::load(&path).unwrap_err().to_string();
    assert!(
        e.contains("windows") && e.contains("c.toml:7:") && e.contains("invalid upload window"),
        "{e}"
    );
}

/// SIGHUP applies `upload.windows` and `upload.max_rate` to the running daemon: a file
/// held back by a closed window goes up once the new config opens one, at the new cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_new_windows_and_a_new_rate() {
    let mut w = World::new(Dialect::Immich).await;
    w.upload = format!("windows = [\"{}-{}\"]\n", local_in(2), local_in(3));
    let mut big = jpeg("hup-window");
    big.resize(600_000, b'x');
    let big_path = w.write("IMG_big.jpg", &big);
    w.write_config();
    let log = w.dir.path().join("daemon.log");
    let mut child = std::process::Command::new(crate::common::BIN)
        .arg("--config")
        .arg(w.config_path())
        .arg("run")
        .env_remove("NOTIFY_SOCKET")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start immish-sync");
    let admin = w.server.admin_id();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut waiting = false;
    while !waiting && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        waiting =
            status_json(&w)["activity"]["uploads_resume_at"].is_string() && checked(&w, &big_path);
    }
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(waiting, "never held back by the window: {}", text());
    assert_eq!(w.server.asset_count(&admin), 0);

    // 600 kB at 200 kB/s take at least ~2.75 s (the bucket saves up a quarter second);
    // uncapped, loopback takes well under one.
    w.upload = format!(
        "windows = [\"{}-{}\"]\nmax_rate = \"200kB/s\"\n",
        local_in(-1),
        local_in(10)
    );
    w.write_config();
    let t0 = std::time::Instant::now();
    // SAFETY: a signal to our own child.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGHUP) },
        0
    );
    let went = eventually(Duration::from_secs(60), || {
        w.server.asset_count(&admin) == 1
    })
    .await;
    let took = t0.elapsed();
    assert!(went, "the upload never went after SIGHUP: {}", text());
    assert!(
        took >= Duration::from_millis(2500),
        "600 kB at 200 kB/s arrived in {took:?}: {}",
        text()
    );
    let _ = child.kill();
    let _ = child.wait();
}
