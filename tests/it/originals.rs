//! Issue 14, pull: `[[pull]]` folders that hold a verified copy of every original of the
//! account, downloaded from the test server (docs/ARCHITECTURE.md#pull).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use immish_testserver::{AssetUpdate, NewAsset, TestServer, Visibility};

use crate::common::{eventually, jpeg, run, sha1_hex, World, BIN};

/// A world whose server keeps the bytes it is sent (so originals can be downloaded), with
/// `pulls` as the `[[pull]]` tables (each a list of extra lines) below `<tmp>/copies/N`.
async fn world(pulls: &[&str]) -> World {
    let server = TestServer::builder().keep_bytes(true).start().await;
    let mut w = World::with_server(server);
    for (i, lines) in pulls.iter().enumerate() {
        let path = w.dir.path().join("copies").join(i.to_string());
        w.extra.push_str(&format!(
            "\n[[pull]]\npath = \"{}\"\n{lines}\n",
            path.display()
        ));
    }
    w.extra.push_str("\n[mirror]\npull_interval = \"1s\"\n");
    w
}

fn copy_dir(w: &World, i: usize) -> PathBuf {
    w.dir.path().join("copies").join(i.to_string())
}

/// Every file below `dir` (relative path → bytes), `.deleted/` included, temporary
/// downloads not.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut all = all_files(dir);
    all.retain(|p, _| !p.to_string_lossy().contains(".immish-pull-"));
    all
}

/// Every file below `dir`, temporary downloads too.
fn all_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.insert(p.strip_prefix(base).unwrap().to_path_buf(), bytes);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    all_files(dir)
        .into_keys()
        .filter(|p| p.to_string_lossy().contains(".immish-pull-"))
        .collect()
}

fn status_json(w: &World) -> serde_json::Value {
    let out = run(w, &["status", "--json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn daemon_cmd(w: &World) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--config")
        .arg(w.config_path())
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

const ORIGINAL: &str = "GET /assets/:id/original";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_of_500_assets_killed_midway_ends_with_each_original_once_and_no_temp_file() {
    let w = world(&[""]).await;
    let admin = w.server.admin_id();
    w.server.insert_many(&admin, 500, Visibility::Timeline);
    let want: BTreeSet<String> = w
        .server
        .assets(&admin)
        .iter()
        .map(|a| a.checksum_hex.clone())
        .collect();
    assert_eq!(want.len(), 500);
    w.write_config();
    let copies = copy_dir(&w, 0);

    // Slow downloads, so that the kill lands among them.
    w.server.delay(ORIGINAL, Duration::from_millis(30));
    let mut child = daemon_cmd(&w).spawn().expect("start immish-sync");
    let server = &w.server;
    let reached = eventually(Duration::from_secs(120), || {
        server.requests(ORIGINAL) >= 150
    })
    .await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert!(reached, "downloads never reached 150");
    let midway = files(&copies).len();
    assert!(
        midway < 500,
        "the kill came too late to test anything ({midway} files)"
    );

    w.server.delay(ORIGINAL, Duration::ZERO);
    let mut child = daemon_cmd(&w).spawn().expect("start immish-sync again");
    let done = eventually(Duration::from_secs(180), || {
        let f = files(&copies);
        f.len() == 500 && temp_files(&copies).is_empty()
    })
    .await;
    // What `status` says, read while the daemon runs.
    let st = eventually(Duration::from_secs(60), || {
        let s = status_json(&w);
        s["pull"][0]["pulled"] == 500
    })
    .await;
    let status = status_json(&w);
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert!(
        done,
        "not every original arrived: {} files",
        files(&copies).len()
    );
    assert!(st, "status: {}", status["pull"]);
    assert_eq!(status["pull"][0]["pending"], 0, "{}", status["pull"]);
    assert_eq!(status["pull"][0]["failed"], 0, "{}", status["pull"]);

    let got = files(&copies);
    assert!(temp_files(&copies).is_empty(), "{:?}", temp_files(&copies));
    let sums: BTreeSet<String> = got.values().map(|b| sha1_hex(b)).collect();
    assert_eq!(sums, want, "each asset's exact bytes, once");
    for rel in got.keys() {
        assert!(
            rel.starts_with("2020/01"),
            "laid out by date: {}",
            rel.display()
        );
    }
    // Incremental: what was in place before the kill was not fetched again (at most the
    // downloads in flight at the kill were).
    assert!(
        w.server.requests(ORIGINAL) <= 500 + 4,
        "downloads: {}",
        w.server.requests(ORIGINAL)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_download_is_never_renamed_into_place_and_is_tried_again() {
    let w = world(&[""]).await;
    let admin = w.server.admin_id();
    let bytes = jpeg("corrupt-me");
    w.server.corrupt_downloads(true);
    w.server.insert(
        &admin,
        NewAsset::new("IMG_0001.jpg", bytes.clone()).file_created_at("2024-03-09T10:00:00.000Z"),
    );
    let copies = copy_dir(&w, 0);
    let d = w.start_daemon();
    let server = &w.server;
    let retried = eventually(Duration::from_secs(90), || server.requests(ORIGINAL) >= 3).await;
    assert!(retried, "downloads: {}", server.requests(ORIGINAL));
    assert!(
        files(&copies).is_empty(),
        "nothing is kept of a download whose checksum is wrong: {:?}",
        files(&copies).keys().collect::<Vec<_>>()
    );
    let status = status_json(&w);
    assert_eq!(status["pull"][0]["failed"], 1, "{}", status["pull"]);
    let reason = status["pull"][0]["last_error"].as_str().unwrap_or_default();
    assert!(reason.contains("SHA-1"), "{reason}");
    let text = String::from_utf8_lossy(&run(&w, &["status"]).stdout).into_owned();
    assert!(text.contains("1 failed"), "{text}");

    w.server.corrupt_downloads(false);
    let target = copies.join("2024/03/IMG_0001.jpg");
    let fixed = eventually(Duration::from_secs(90), || {
        std::fs::read(&target).ok().as_deref() == Some(bytes.as_slice())
    })
    .await;
    d.stop().await;
    assert!(
        fixed,
        "the good download must land: {:?}",
        files(&copies).keys()
    );
    assert_eq!(files(&copies).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asset_deleted_on_the_server_stays_or_with_move_goes_to_deleted() {
    let w = world(&["", "on_server_delete = \"move\""]).await;
    let admin = w.server.admin_id();
    let (a, b) = (jpeg("stays"), jpeg("goes"));
    let date = "2024-05-01T08:00:00.000Z";
    let trashed = w.server.insert(
        &admin,
        NewAsset::new("A.jpg", a.clone()).file_created_at(date),
    );
    let deleted = w.server.insert(
        &admin,
        NewAsset::new("B.jpg", b.clone()).file_created_at(date),
    );
    let d = w.start_daemon();
    let (keep, mv) = (copy_dir(&w, 0), copy_dir(&w, 1));
    let all = eventually(Duration::from_secs(90), || {
        files(&keep).len() == 2 && files(&mv).len() == 2
    })
    .await;
    assert!(all, "{:?} {:?}", files(&keep).keys(), files(&mv).keys());

    w.server.trash([&trashed]);
    w.server.delete_permanently([&deleted]);
    let moved = eventually(Duration::from_secs(90), || {
        mv.join(".deleted/2024/05/B.jpg").exists()
    })
    .await;
    // The keep folder's next look at the mirror records its copy as kept.
    let seen = eventually(Duration::from_secs(60), || {
        status_json(&w)["pull"][0]["kept"] == 1
    })
    .await;
    d.stop().await;
    assert!(seen, "{}", status_json(&w)["pull"]);
    assert!(moved, "{:?}", files(&mv).keys());
    let kept = files(&keep);
    assert_eq!(
        kept.get(Path::new("2024/05/A.jpg")),
        Some(&a),
        "trashed: stays"
    );
    assert_eq!(
        kept.get(Path::new("2024/05/B.jpg")),
        Some(&b),
        "deleted: stays"
    );
    let m = files(&mv);
    assert_eq!(
        m.get(Path::new("2024/05/A.jpg")),
        Some(&a),
        "trashed: stays"
    );
    assert_eq!(m.get(Path::new(".deleted/2024/05/B.jpg")), Some(&b));
    assert_eq!(m.len(), 2, "{:?}", m.keys());
    let status = status_json(&w);
    assert_eq!(status["pull"][0]["kept"], 1, "{}", status["pull"]);
    assert_eq!(status["pull"][1]["moved"], 1, "{}", status["pull"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colliding_names_get_the_asset_id_and_a_date_edit_moves_nothing() {
    let w = world(&[""]).await;
    let admin = w.server.admin_id();
    let date = "2024-03-09T10:00:00.000Z";
    let (one, two) = (jpeg("first"), jpeg("second"));
    let first = w.server.insert(
        &admin,
        NewAsset::new("IMG_0001.jpg", one.clone()).file_created_at(date),
    );
    let second = w.server.insert(
        &admin,
        NewAsset::new("IMG_0001.jpg", two.clone()).file_created_at(date),
    );
    let copies = copy_dir(&w, 0);
    let d = w.start_daemon();
    let both = eventually(Duration::from_secs(90), || files(&copies).len() == 2).await;
    d.stop().await;
    assert!(both, "{:?}", files(&copies).keys());
    // The one first in (date, id) order keeps the plain name.
    let (plain, other, plain_bytes, other_bytes) = if first < second {
        (&first, &second, &one, &two)
    } else {
        (&second, &first, &two, &one)
    };
    let suffixed = format!("2024/03/IMG_0001~{}.jpg", &other[..8]);
    let before = files(&copies);
    assert_eq!(
        before.get(Path::new("2024/03/IMG_0001.jpg")),
        Some(plain_bytes)
    );
    assert_eq!(
        before.get(Path::new(&suffixed)),
        Some(other_bytes),
        "{:?}",
        before.keys()
    );

    // A date edit on the server, then a new asset: the new one arrives, the old ones stay.
    assert!(w.server.update(
        plain,
        AssetUpdate {
            file_created_at: Some("2019-12-24T18:00:00.000Z".into()),
            ..Default::default()
        }
    ));
    let three = jpeg("third");
    w.server.insert(
        &admin,
        NewAsset::new("IMG_0001.jpg", three.clone()).file_created_at("2019-12-24T18:00:00.000Z"),
    );
    let d = w.start_daemon();
    let third = eventually(Duration::from_secs(90), || files(&copies).len() == 3).await;
    d.stop().await;
    let after = files(&copies);
    assert!(third, "{:?}", after.keys());
    assert_eq!(
        after.get(Path::new("2024/03/IMG_0001.jpg")),
        Some(plain_bytes)
    );
    assert_eq!(after.get(Path::new(&suffixed)), Some(other_bytes));
    assert_eq!(after.get(Path::new("2019/12/IMG_0001.jpg")), Some(&three));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phones_uploads_and_our_own_are_both_pulled() {
    let w = world(&[""]).await;
    let admin = w.server.admin_id();
    let phone = jpeg("from the phone");
    w.server.insert(
        &admin,
        NewAsset::new("PXL_20240101.jpg", phone.clone())
            .file_created_at("2024-01-01T12:00:00.000Z")
            .device("Pixel 8", "phone-asset-1"),
    );
    let ours = jpeg("from our root");
    w.write("holiday/DSC_1.jpg", &ours);
    let copies = copy_dir(&w, 0);
    let d = w.start_daemon();
    let both = eventually(Duration::from_secs(90), || files(&copies).len() == 2).await;
    d.stop().await;
    let got = files(&copies);
    assert!(both, "{:?}", got.keys());
    assert_eq!(got.get(Path::new("2024/01/PXL_20240101.jpg")), Some(&phone));
    assert!(
        got.iter()
            .any(|(p, b)| p.ends_with("DSC_1.jpg") && b == &ours),
        "{:?}",
        got.keys()
    );
    // Nothing pulled went up again: the server holds the two assets only.
    assert_eq!(w.server.assets(&admin).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_folder_overlapping_a_root_is_a_config_error_naming_both() {
    let w = world(&[]).await;
    let root = w.root();
    let outside = w.dir.path().join("elsewhere");
    std::fs::create_dir_all(&outside).unwrap();
    let link = w.dir.path().join("link-to-photos");
    std::os::unix::fs::symlink(&root, &link).unwrap();
    let cases = [
        (root.join("copies"), "inside the root"),
        (w.dir.path().to_path_buf(), "around the root"),
        (link.join("sub"), "through a symlink"),
    ];
    let base = w.extra.clone();
    for (pull, what) in cases {
        let mut w2 = World::with_server(TestServer::builder().start().await);
        std::fs::create_dir_all(&pull).ok();
        w2.extra = format!("{base}\n[[pull]]\npath = \"{}\"\n", pull.display());
        // The same root as `w`, so that the paths are the ones created above.
        let text = std::fs::read_to_string(w2.write_config()).unwrap().replace(
            &w2.root().display().to_string(),
            &root.display().to_string(),
        );
        std::fs::write(w2.config_path(), text).unwrap();
        let out = run(&w2, &["check-config", "--offline"]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert!(err.contains("pull[0].path"), "{what}: {err}");
        assert!(err.contains(&pull.display().to_string()), "{what}: {err}");
        assert!(err.contains(&root.display().to_string()), "{what}: {err}");
    }
    // A folder beside the root is fine.
    let mut ok = World::with_server(TestServer::builder().start().await);
    ok.extra = format!("{base}\n[[pull]]\npath = \"{}\"\n", outside.display());
    ok.write_config();
    let out = run(&ok, &["check-config", "--offline"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_the_config_does_not_have_is_a_config_error() {
    let mut w = World::with_server(TestServer::builder().start().await);
    let copy = w.dir.path().join("copy");
    w.extra = format!(
        "\n[[pull]]\npath = \"{}\"\naccount = \"ann\"\n",
        copy.display()
    );
    w.write_config();
    let out = run(&w, &["check-config", "--offline"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("pull[0].account"), "{err}");
    assert!(err.contains("is not an account of this config"), "{err}");
    w.extra = format!(
        "\n[[pull]]\npath = \"{}\"\naccount = \"default\"\n",
        copy.display()
    );
    w.write_config();
    assert!(run(&w, &["check-config", "--offline"]).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_photos_video_is_laid_out_beside_its_still() {
    let w = world(&[""]).await;
    let admin = w.server.admin_id();
    // The phone named the halves apart and dated the video a month off: the pair still
    // lands side by side, by the still's place.
    let video = crate::common::mp4("live");
    let video_id = w.server.insert(
        &admin,
        NewAsset::new("VID_0009.MOV", video.clone()).file_created_at("2024-02-29T23:59:59.000Z"),
    );
    let still = jpeg("live still");
    w.server.insert(
        &admin,
        NewAsset::new("IMG_0009.jpg", still.clone())
            .file_created_at("2024-03-01T00:00:01.000Z")
            .live_photo_video(&video_id),
    );
    assert_eq!(
        w.server.asset(&video_id).map(|a| a.visibility),
        Some(Visibility::Hidden),
        "the test server links the pair"
    );
    let copies = copy_dir(&w, 0);
    let d = w.start_daemon();
    let both = eventually(Duration::from_secs(90), || files(&copies).len() == 2).await;
    d.stop().await;
    let got = files(&copies);
    assert!(both, "{:?}", got.keys());
    assert_eq!(got.get(Path::new("2024/03/IMG_0009.jpg")), Some(&still));
    assert_eq!(
        got.get(Path::new("2024/03/IMG_0009.MOV")),
        Some(&video),
        "{:?}",
        got.keys()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_without_asset_download_is_named_once_and_backups_go_on() {
    let w = world(&[""]).await;
    let admin = w.server.admin_id();
    w.server.insert(
        &admin,
        NewAsset::new("PXL_1.jpg", jpeg("phone")).file_created_at("2024-01-01T00:00:00Z"),
    );
    let narrow = w
        .server
        .create_api_key(&admin, &["asset.upload", "asset.read", "user.read"]);
    let text = std::fs::read_to_string(w.write_config())
        .unwrap()
        .replace(&w.server.api_key(), &narrow);
    std::fs::write(w.config_path(), text).unwrap();
    let ours = jpeg("ours");
    w.write("a/DSC_2.jpg", &ours);

    let doctor = run(&w, &["doctor"]);
    let report = String::from_utf8_lossy(&doctor.stdout).into_owned();
    assert!(
        report.contains("asset.download"),
        "doctor names it: {report}"
    );

    let log = w.dir.path().join("daemon.log");
    let mut child = daemon_cmd(&w)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start immish-sync");
    let server = &w.server;
    let want = sha1_hex(&ours);
    let uploaded = eventually(Duration::from_secs(90), || {
        server.assets(&admin).iter().any(|a| a.checksum_hex == want)
    })
    .await;
    // Both assets in the mirror, and then more than one idle look of the pull (5 s) later:
    // a download would have been tried by now.
    let mirrored = eventually(Duration::from_secs(60), || {
        w.db()
            .query_row("SELECT count(*) FROM remote_assets", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap_or(0)
            >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(uploaded, "backups go on: {text}");
    assert!(mirrored, "the mirror must hold both assets");
    assert_eq!(w.server.requests(ORIGINAL), 0, "no download is tried");
    assert_eq!(
        text.matches("lacks asset.download").count(),
        1,
        "said once: {text}"
    );
    assert!(files(&copy_dir(&w, 0)).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_rate_bounds_what_a_pull_downloads() {
    // 8 originals of 100 kB at 200 kB/s: at least 3.75 s (the bucket saves up a quarter
    // second). Only a lower bound is asserted: a loaded machine can only make it slower.
    let w = world(&["max_rate = 200000"]).await;
    let admin = w.server.admin_id();
    let mut total = 0;
    for i in 0..8 {
        let mut bytes = jpeg(&format!("big {i}"));
        bytes.resize(100_000, i as u8);
        total += bytes.len();
        w.server.insert(
            &admin,
            NewAsset::new(format!("BIG_{i}.jpg"), bytes).file_created_at("2024-06-01T00:00:00Z"),
        );
    }
    let copies = copy_dir(&w, 0);
    let d = w.start_daemon();
    let server = &w.server;
    assert!(eventually(Duration::from_secs(60), || server.requests(ORIGINAL) >= 1).await);
    let started = std::time::Instant::now();
    let all = eventually(Duration::from_secs(120), || files(&copies).len() == 8).await;
    let took = started.elapsed();
    d.stop().await;
    assert!(all, "{:?}", files(&copies).keys());
    let floor = Duration::from_secs_f64(total as f64 / 200_000.0 - 0.25 - 0.6);
    assert!(
        took >= floor,
        "{total} bytes in {took:?}, under the cap's {floor:?}"
    );
    eprintln!("max_rate 200000: {total} bytes in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_cut_short_resumes_with_a_range_and_the_prefix_is_sent_once() {
    let w = world(&[""]).await;
    let admin = w.server.admin_id();
    let mut bytes = jpeg("resume-me");
    bytes.extend((0..300_000u32).map(|i| (i * 7 % 251) as u8));
    let len = bytes.len() as u64;
    w.server.insert(
        &admin,
        NewAsset::new("IMG_0002.jpg", bytes.clone()).file_created_at("2024-03-09T10:00:00.000Z"),
    );
    // The first reply is cut after 100 000 bytes, as by a reset.
    w.server.cut_downloads(100_000, 1);
    let copies = copy_dir(&w, 0);
    let d = w.start_daemon();
    let target = copies.join("2024/03/IMG_0002.jpg");
    let done = eventually(Duration::from_secs(90), || {
        std::fs::read(&target).ok().as_deref() == Some(bytes.as_slice())
    })
    .await;
    d.stop().await;
    assert!(
        done,
        "the copy never verified: {:?}",
        all_files(&copies).keys()
    );
    assert_eq!(w.server.requests(ORIGINAL), 2, "one cut reply, one resume");
    assert_eq!(
        w.server.requests_with_status(ORIGINAL, 206),
        1,
        "the second asked for the rest"
    );
    assert_eq!(
        w.server.original_bytes_served(),
        len,
        "the kept prefix is not sent again"
    );
    assert!(temp_files(&copies).is_empty(), "{:?}", temp_files(&copies));
    assert_eq!(sha1_hex(&std::fs::read(&target).unwrap()), sha1_hex(&bytes));
}

/// `scan` brings the pull folder up to date after its uploads, as `run`'s pull task does
/// (docs/ARCHITECTURE.md#commands): the phone's assets and what this scan uploaded, each
/// verified and in place; `scan --no-pull` downloads nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_pulls_the_new_originals_and_no_pull_does_not() {
    let w = world(&[""]).await;
    let admin = w.server.admin_id();
    let phone: Vec<(&str, Vec<u8>)> = vec![
        ("PXL_20240101.jpg", jpeg("phone one")),
        ("PXL_20240102.jpg", jpeg("phone two")),
    ];
    for (i, (name, bytes)) in phone.iter().enumerate() {
        w.server.insert(
            &admin,
            NewAsset::new(*name, bytes.clone())
                .file_created_at(format!("2024-01-0{}T12:00:00.000Z", i + 1))
                .device("Pixel 8", format!("phone-asset-{i}")),
        );
    }
    let first = jpeg("ours, first scan");
    w.write("DSC_1.jpg", &first);
    w.write_config();
    let copies = copy_dir(&w, 0);

    let out = run(&w, &["scan", "--no-pull"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("pulled"), "{stdout}");
    assert_eq!(
        w.server.requests(ORIGINAL),
        0,
        "--no-pull downloads nothing"
    );
    assert!(
        all_files(&copies).is_empty(),
        "{:?}",
        all_files(&copies).keys()
    );

    // A file new to this scan: uploaded, then pulled back by the same scan.
    let second = jpeg("ours, second scan");
    w.write("DSC_2.jpg", &second);
    let out = run(&w, &["scan"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("pulled 4 originals into {}", copies.display())),
        "{stdout}"
    );
    assert!(!stdout.contains("not pulled yet"), "{stdout}");
    let got = files(&copies);
    for (name, bytes) in &phone {
        assert_eq!(
            got.get(&Path::new("2024/01").join(name)),
            Some(bytes),
            "{:?}",
            got.keys()
        );
    }
    for (name, bytes) in [("DSC_1.jpg", &first), ("DSC_2.jpg", &second)] {
        assert!(
            got.iter().any(|(p, b)| p.ends_with(name) && b == bytes),
            "{name}: {:?}",
            got.keys()
        );
    }
    assert_eq!(got.len(), 4, "{:?}", got.keys());
    assert!(temp_files(&copies).is_empty(), "{:?}", temp_files(&copies));
    assert_eq!(w.server.requests(ORIGINAL), 4, "each original once");
    // Nothing pulled went up again.
    assert_eq!(w.server.assets(&admin).len(), 4);
}
