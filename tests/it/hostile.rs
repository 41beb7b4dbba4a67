//! Issue 13, hostile or broken servers (docs/RELIABILITY.md#hostile-answers-huge-trickled-or-malformed):
//! malformed JSON, a proxy's HTML login page with status 200, a 1 GB JSON answer, an answer
//! trickled at a byte a second, asset ids that are not UUIDs, the same asset twice in a page.
//! Each test asserts what reached the server, what the queue holds and what the user is told;
//! nothing is ever marked done on a bad answer.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use immish_sync::config;
use immish_testserver::{Dialect, Failure};

use crate::common::{eventually, jpeg, sha1_hex, World, BIN};

const BULK_CHECK: &str = "POST /assets/bulk-upload-check";
const UPLOAD: &str = "POST /assets";

/// Jobs and their last error, as `status` shows them.
fn jobs(w: &World) -> Vec<(String, Option<String>)> {
    let db = w.db();
    let mut stmt = db
        .prepare("SELECT state, reason FROM jobs ORDER BY file_id")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    rows
}

fn done_jobs(w: &World) -> usize {
    jobs(w).iter().filter(|(s, _)| s == "done").count()
}

fn write_files(w: &World, n: usize, tag: &str) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let bytes = jpeg(&format!("{tag}-{i}"));
            w.write(format!("IMG_{i}.jpg"), &bytes);
            bytes
        })
        .collect()
}

/// Every file is on the server exactly once, with its bytes.
fn assert_each_once(w: &World, files: &[Vec<u8>]) {
    let assets = w.server.assets(&w.server.admin_id());
    let mut got: Vec<String> = assets.iter().map(|a| a.checksum_hex.clone()).collect();
    let mut want: Vec<String> = files.iter().map(|f| sha1_hex(f)).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "one asset per file");
}

/// Runs the daemon while `fault` holds, checks that nothing is done and the queue says why
/// (`told` in every waiting job's reason), then lifts the fault and checks that every file
/// ends up done, once, with at most one body per file.
async fn nothing_done_while(
    w: &mut World,
    files: usize,
    route: &str,
    fault: impl FnOnce(&World),
    lift: impl FnOnce(&World),
    told: &[&str],
) {
    w.extra = "[scan]\ninterval = \"1h\"\n[watch]\nmode = \"off\"\nsettle = \"0s\"\n".into();
    w.upload = "retry_initial = \"200ms\"\nretry_max = \"1s\"\n".into();
    let bytes = write_files(w, files, route);
    fault(w);
    let d = w.start_daemon();
    let w_ref = &*w;
    assert!(
        eventually(Duration::from_secs(60), || w_ref.server.requests(route)
            >= 3
            && jobs(w_ref).iter().all(|(_, r)| r.is_some()))
        .await,
        "the bad answers never came: {} requests, jobs {:?}",
        w.server.requests(route),
        jobs(w)
    );
    let now = jobs(w);
    assert_eq!(now.len(), files, "{now:?}");
    for (state, reason) in &now {
        assert_ne!(state, "done", "nothing is done on a bad answer: {now:?}");
        let reason = reason.as_deref().unwrap_or("");
        for t in told {
            assert!(reason.contains(t), "the queue says {reason:?}, not {t:?}");
        }
    }
    lift(w);
    let w_ref = &*w;
    assert!(
        eventually(Duration::from_secs(60), || done_jobs(w_ref) == files).await,
        "once the server behaves every file is done: {:?}",
        jobs(w)
    );
    d.stop().await;
    assert_each_once(w, &bytes);
    assert!(
        w.server.upload_bodies() <= files as u64,
        "no body twice: {}",
        w.server.upload_bodies()
    );
}

/// A crashed upstream's half JSON answering the duplicate check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_marks_nothing_done_and_says_which_route() {
    let mut w = World::new(Dialect::Immich).await;
    nothing_done_while(
        &mut w,
        3,
        BULK_CHECK,
        |w| {
            // The upstream answers every route with half JSON, the mirror's pulls too: a
            // mirror whose last pull failed is not current, so the duplicate check is asked
            // of the server (with a fresh, complete mirror it is not asked at all).
            for route in [BULK_CHECK, "POST /sync/stream", "POST /search/metadata"] {
                w.server.fail_with(route, 1000, Failure::malformed_json());
            }
        },
        |w| w.server.clear_faults(),
        &[
            "duplicate check failed",
            "POST /api/assets/bulk-upload-check",
            "did not answer JSON",
        ],
    )
    .await;
    assert_eq!(w.server.upload_bodies(), 3);
}

/// A single-sign-on proxy answering the upload with its login page and status 200: the
/// upload is not taken for a success (the server never saw it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_page_with_200_is_not_an_upload() {
    let mut w = World::new(Dialect::Immich).await;
    nothing_done_while(
        &mut w,
        3,
        UPLOAD,
        |w| {
            w.server
                .fail_with(UPLOAD, 1000, Failure::proxy_login_page())
        },
        |w| w.server.clear_faults(),
        &[
            "upload failed",
            "POST /api/assets",
            "did not answer JSON",
            "text/html",
        ],
    )
    .await;
}

/// Asset ids that are not UUIDs, in the upload answer and the duplicate check: never
/// remembered as the file's asset. The first attempts stored the assets, so once the ids are
/// good the duplicate check links them: no second body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_are_not_uuids_are_never_taken() {
    let mut w = World::new(Dialect::Immich).await;
    nothing_done_while(
        &mut w,
        3,
        UPLOAD,
        |w| w.server.non_uuid_ids(true),
        |w| w.server.non_uuid_ids(false),
        &["is not a UUID", "asset-"],
    )
    .await;
    assert_eq!(w.server.upload_bodies(), 3, "one body per file in all");
    let db = w.db();
    let bad: i64 = db
        .query_row(
            "SELECT count(*) FROM files WHERE asset_id LIKE 'asset-%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(bad, 0, "no bad id remembered");
}

/// The same assets twice in every search page (key) and sync stream (session): each is
/// mirrored once, the files are linked to them, nothing is uploaded.
async fn duplicate_rows_are_taken_once(password: bool) {
    let w = World::new(Dialect::Immich).await;
    let bytes = write_files(&w, 4, "dup-rows");
    let admin = w.server.admin_id();
    for (i, b) in bytes.iter().enumerate() {
        w.server.insert(
            &admin,
            immish_testserver::NewAsset::new(format!("IMG_{i}.jpg"), b.clone()),
        );
    }
    w.server.duplicate_rows(true);
    w.write_config();
    let mut config_text = std::fs::read_to_string(w.config_path()).unwrap();
    if password {
        config_text = config_text.replace(
            &format!("api_key = \"{}\"", w.server.api_key()),
            &format!(
                "email = \"{}\"\npassword = \"{}\"",
                w.server.admin_email(),
                w.server.admin_password()
            ),
        );
    }
    std::fs::write(w.config_path(), config_text).unwrap();
    std::fs::set_permissions(w.config_path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = config::load(&w.config_path()).unwrap();
    let s = tokio::time::timeout(
        Duration::from_secs(120),
        immish_sync::daemon::scan_with(cfg, World::tuning(), Default::default()),
    )
    .await
    .expect("scan ends")
    .unwrap();
    assert!(s.is_complete(), "{s:?}");
    let route = if password {
        "POST /sync/stream"
    } else {
        "POST /search/metadata"
    };
    assert!(
        w.server.requests(route) >= 1,
        "the mirror pulled by {route}"
    );
    assert_eq!(
        w.server.upload_bodies(),
        0,
        "every file linked, none uploaded"
    );
    let mirrored: i64 = w
        .db()
        .query_row("SELECT count(*) FROM remote_assets", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mirrored, 4, "each asset mirrored once");
    assert_eq!(done_jobs(&w), 4);
    assert_each_once(&w, &bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_asset_twice_in_a_search_page_is_taken_once() {
    duplicate_rows_are_taken_once(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_asset_twice_in_the_sync_stream_is_taken_once() {
    duplicate_rows_are_taken_once(true).await;
}

/// Runs `immish-sync scan` as a child, sampling its peak RSS (VmHWM) until it exits.
/// Returns (exit code, stderr, peak KiB).
fn scan_child(config: &Path) -> (Option<i32>, String, u64) {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("scan")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn immish-sync");
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let start = Instant::now();
    let code = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            if let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kb);
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if start.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            panic!("the scan did not end within 180 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (code, reader.join().unwrap(), peak)
}

/// A 1 GB JSON answer to the duplicate check: read up to the cap, refused with a message that
/// names the route, retried; the daemon's peak memory stays far below the answer's size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_gb_answer_is_refused_at_the_cap_with_bounded_memory() {
    let w = World::new(Dialect::Immich).await;
    let bytes = write_files(&w, 3, "huge");
    w.write_config();
    w.server.huge_reply(BULK_CHECK, 1 << 30, 1);
    let config = w.config_path();
    let (code, stderr, peak_kib) = tokio::task::spawn_blocking(move || scan_child(&config))
        .await
        .unwrap();
    eprintln!("peak RSS of the scan with a 1 GB answer: {peak_kib} KiB");
    assert_eq!(code, Some(0), "the retry succeeds: {stderr}");
    assert!(
        stderr.contains("POST /api/assets/bulk-upload-check")
            && stderr.contains("larger than 32768 KiB")
            && stderr.contains("will retry"),
        "the user is told which route, what and what next: {stderr}"
    );
    assert!(
        peak_kib < 200 * 1024,
        "memory is bounded: {peak_kib} KiB for a 1 GB answer"
    );
    assert_each_once(&w, &bytes);
    assert_eq!(w.server.upload_bodies(), 3);
}

/// An answer trickled at a byte a second: every byte comes well within the stall timeout, so
/// only the whole-answer deadline (5 × stall for a list route) ends it. The retry succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_trickled_at_a_byte_a_second_meets_its_deadline() {
    let w = World::new(Dialect::Immich).await;
    let bytes = write_files(&w, 3, "trickle");
    let mut cfg = w.config();
    cfg.server.stall_timeout = Duration::from_secs(2);
    w.server.trickle_reply(BULK_CHECK, 1, 1);
    let started = Instant::now();
    let s = tokio::time::timeout(
        Duration::from_secs(60),
        immish_sync::daemon::scan_with(cfg, World::tuning(), Default::default()),
    )
    .await
    .expect("the trickled answer is given up on long before it would end (~150 s)")
    .unwrap();
    assert!(s.is_complete(), "{s:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "the deadline is 10 s, not the 2 s stall timeout: {:?}",
        started.elapsed()
    );
    assert!(
        w.server.requests(BULK_CHECK) >= 2,
        "given up, then asked again"
    );
    assert_each_once(&w, &bytes);
    assert_eq!(w.server.upload_bodies(), 3);
}
