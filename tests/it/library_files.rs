//! What of a library goes up, and with what: junk, `.nomedia`, `.immishignore` and `exclude`
//! (docs/ARCHITECTURE.md#filters), the date the daemon sends (docs/ARCHITECTURE.md#dates),
//! and XMP sidecars (docs/ARCHITECTURE.md#sidecars). Dates are asserted on the form field the
//! daemon sent, as the test server recorded it, never on the date the server derived itself.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use immish_testserver::fixtures::{xmp_sidecar, Photo};
use immish_testserver::{Dialect, UploadRecord};

use crate::common::{eventually, jpeg, World};

/// The `filename="…"` of every asset the server was sent.
fn sent_names(w: &World) -> BTreeSet<String> {
    w.server
        .uploads()
        .iter()
        .filter_map(|u| u.file_name().map(str::to_string))
        .collect()
}

fn upload_of(w: &World, name: &str) -> UploadRecord {
    w.server
        .uploads()
        .into_iter()
        .find(|u| u.file_name() == Some(name))
        .unwrap_or_else(|| panic!("no upload of {name}: {:?}", sent_names(w)))
}

fn set_mtime(path: &std::path::Path, unix_secs: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(unix_secs))
        .unwrap();
}

#[tokio::test]
async fn junk_nomedia_and_ignore_files_leave_only_the_right_files() {
    let mut w = World::new(Dialect::Immich).await;
    // Hidden files are taken here, so `._a.jpg` and `.DS_Store` are skipped as junk alone.
    w.extra = "hidden = true\n".into();
    w.write("keep/IMG_1.jpg", &jpeg("keep"));
    w.write("@eaDir/x.jpg", &jpeg("nas thumb"));
    w.write(
        "2024/@eaDir/IMG_1.jpg/SYNOPHOTO_THUMB_XL.jpg",
        &jpeg("nas thumb 2"),
    );
    w.write("._a.jpg", &jpeg("apple double"));
    w.write("#recycle/old.jpg", &jpeg("recycled"));
    w.write("quiet/.nomedia", b"");
    w.write("quiet/IMG_2.jpg", &jpeg("nomedia"));
    w.write("quiet/deeper/IMG_3.jpg", &jpeg("nomedia below"));
    w.write(
        "ig/.immishignore",
        b"# everything but keep_*\n*.jpg\n!keep_*.jpg\nsub/private/\n",
    );
    w.write("ig/drop.jpg", &jpeg("ignored"));
    w.write("ig/keep_me.jpg", &jpeg("re-included"));
    w.write("ig/sub/drop2.jpg", &jpeg("ignored below"));
    w.write("ig/sub/keep_2.jpg", &jpeg("re-included below"));
    w.write("ig/sub/private/keep_3.jpg", &jpeg("in an ignored folder"));
    w.write("other/drop.jpg", &jpeg("outside the ignore file's folder"));

    let summary = w.scan().await;
    assert!(summary.is_complete(), "{summary:?}");
    let want: BTreeSet<String> = ["IMG_1.jpg", "keep_me.jpg", "keep_2.jpg", "drop.jpg"]
        .map(String::from)
        .into();
    assert_eq!(sent_names(&w), want);
    assert_eq!(w.server.asset_count(&w.server.admin_id()), 4);
    let scanned = summary.scanned();
    // @eaDir twice, ._a.jpg, #recycle.
    assert_eq!(scanned.junk, 4, "{scanned:?}");
    // quiet/ (.nomedia), ig/drop.jpg, ig/sub/drop2.jpg, ig/sub/private/.
    assert_eq!(scanned.ignored, 4, "{scanned:?}");
}

#[tokio::test]
async fn junk_is_uploaded_when_switched_off_and_extended_by_junk_extra() {
    let mut w = World::new(Dialect::Immich).await;
    w.extra = "skip_junk = false\n".into();
    w.write("@eaDir/x.jpg", &jpeg("nas thumb"));
    w.write("Cache/c.jpg", &jpeg("cache"));
    w.scan().await;
    assert_eq!(sent_names(&w), ["c.jpg", "x.jpg"].map(String::from).into());

    let mut w = World::new(Dialect::Immich).await;
    w.extra = "junk_extra = [\"cache\"]\n".into();
    w.write("@eaDir/x.jpg", &jpeg("nas thumb"));
    w.write("Cache/c.jpg", &jpeg("cache"));
    w.write("IMG_1.jpg", &jpeg("photo"));
    w.scan().await;
    assert_eq!(sent_names(&w), ["IMG_1.jpg"].map(String::from).into());
}

#[tokio::test]
async fn a_bare_exclude_name_matches_at_any_depth_and_an_unmatched_one_is_reported() {
    let mut w = World::new(Dialect::Immich).await;
    // Junk off: the exclude alone must keep the NAS thumbnails out.
    w.extra = "skip_junk = false\nexclude = [\"@eaDir\", \"Privat\"]\n".into();
    w.write("@eaDir/x.jpg", &jpeg("top"));
    w.write("2024/05/@eaDir/y.jpg", &jpeg("deep"));
    w.write("2024/05/IMG_1.jpg", &jpeg("photo"));
    let summary = w.scan().await;
    assert!(summary.is_complete(), "{summary:?}");
    assert_eq!(sent_names(&w), ["IMG_1.jpg"].map(String::from).into());
    let scanned = summary.scanned();
    assert_eq!(scanned.unmatched, ["Privat"], "{scanned:?}");
    assert_eq!(scanned.ignored, 2);

    // The binary says so in its summary.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_immish-sync"))
        .args(["--config"])
        .arg(w.write_config())
        .arg("scan")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("root ") && text.contains("exclude pattern \"Privat\" matched nothing"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("passed over: 0 junk (skip_junk), 2 by exclude"),
        "{text}"
    );
}

#[tokio::test]
async fn the_date_sent_is_the_capture_time_else_the_name_else_the_mtime() {
    let mut w = World::new(Dialect::Immich).await;
    w.extra = "timezone = \"Europe/Berlin\"\n".into();
    let offset = Photo::new("offset")
        .taken("2019:07:04 18:30:00", Some("-05:00"))
        .jpeg();
    let local = Photo::new("local")
        .taken("2020:01:15 10:00:00", None)
        .subsec("250")
        .jpeg();
    for (name, bytes) in [
        ("exif_offset.jpg", offset),
        // A name date too: the capture time wins.
        ("IMG_20240501_123456_exif_local.jpg", local),
        ("IMG_20240501_123456.jpg", jpeg("named")),
        ("Screenshot_2023-12-24-18-00-05.png", jpeg("screenshot")),
        ("plain.jpg", jpeg("plain")),
    ] {
        let p = w.write(name, &bytes);
        set_mtime(&p, 1_614_834_367); // 2021-03-04T05:06:07Z
    }
    w.scan().await;
    let created = |name: &str| {
        upload_of(&w, name)
            .field("fileCreatedAt")
            .map(str::to_string)
    };
    assert_eq!(
        created("exif_offset.jpg").as_deref(),
        Some("2019-07-04T23:30:00.000Z")
    );
    // Berlin in January is +01:00.
    assert_eq!(
        created("IMG_20240501_123456_exif_local.jpg").as_deref(),
        Some("2020-01-15T09:00:00.250Z")
    );
    // Berlin in May is +02:00.
    assert_eq!(
        created("IMG_20240501_123456.jpg").as_deref(),
        Some("2024-05-01T10:34:56.000Z")
    );
    assert_eq!(
        created("Screenshot_2023-12-24-18-00-05.png").as_deref(),
        Some("2023-12-24T17:00:05.000Z")
    );
    assert_eq!(
        created("plain.jpg").as_deref(),
        Some("2021-03-04T05:06:07.000Z")
    );
    assert_eq!(
        upload_of(&w, "plain.jpg").field("fileModifiedAt"),
        Some("2021-03-04T05:06:07.000Z")
    );
}

#[tokio::test]
async fn dates_from_names_can_be_turned_off() {
    let mut w = World::new(Dialect::Immich).await;
    w.extra = "dates_from_names = false\ntimezone = \"UTC\"\n".into();
    let p = w.write("IMG_20240501_123456.jpg", &jpeg("named"));
    set_mtime(&p, 1_614_834_367);
    w.scan().await;
    assert_eq!(
        upload_of(&w, "IMG_20240501_123456.jpg").field("fileCreatedAt"),
        Some("2021-03-04T05:06:07.000Z")
    );
}

#[tokio::test]
async fn a_sidecar_goes_up_with_its_photo_before_the_filename_field() {
    let w = World::new(Dialect::Immich).await;
    let full = xmp_sidecar(Some("the specific one"), None);
    let stem = xmp_sidecar(Some("the stem one"), None);
    w.write("IMG_1.jpg", &Photo::new("one").jpeg());
    w.write("IMG_1.jpg.xmp", full.as_bytes());
    w.write("IMG_1.xmp", stem.as_bytes());
    w.write("IMG_2.jpg", &Photo::new("two").jpeg());
    w.write("IMG_2.XMP", stem.as_bytes());
    w.write("IMG_3.jpg", &Photo::new("three").jpeg());
    let summary = w.scan().await;
    assert!(summary.is_complete(), "{summary:?}");

    // Three assets; a sidecar is never one.
    assert_eq!(
        sent_names(&w),
        ["IMG_1.jpg", "IMG_2.jpg", "IMG_3.jpg"]
            .map(String::from)
            .into()
    );
    assert_eq!(w.server.asset_count(&w.server.admin_id()), 3);

    let one = upload_of(&w, "IMG_1.jpg");
    assert_eq!(one.status, 201, "{one:?}");
    let part = one.parts.iter().find(|p| p.name == "sidecarData").unwrap();
    assert_eq!(part.file_name.as_deref(), Some("IMG_1.jpg.xmp"));
    assert_eq!(part.size, full.len() as u64);
    let names = one.names();
    let at = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(
        at("sidecarData") < at("filename") && at("filename") < at("assetData"),
        "{names:?}"
    );

    let two = upload_of(&w, "IMG_2.jpg");
    assert_eq!(two.status, 201, "{two:?}");
    let part = two.parts.iter().find(|p| p.name == "sidecarData").unwrap();
    assert_eq!(part.file_name.as_deref(), Some("IMG_2.XMP"));

    let three = upload_of(&w, "IMG_3.jpg");
    assert!(!three.has_sidecar(), "{three:?}");
}

#[tokio::test]
async fn a_sidecar_edited_or_added_later_is_reported_once_and_uploads_nothing() {
    let w = World::new(Dialect::Immich).await;
    w.write("IMG_1.jpg", &Photo::new("one").jpeg());
    let xmp1 = w.write("IMG_1.jpg.xmp", xmp_sidecar(Some("first"), None).as_bytes());
    w.write("IMG_2.jpg", &Photo::new("two").jpeg());
    let first = w.scan().await;
    assert_eq!(first.scanned().late_sidecars, 0);
    assert_eq!(w.server.uploads().len(), 2);

    // Edited (an mtime the first one did not have) and added.
    std::fs::write(&xmp1, xmp_sidecar(Some("edited"), None)).unwrap();
    set_mtime(&xmp1, 1_700_000_000);
    w.write("IMG_2.xmp", xmp_sidecar(Some("late"), None).as_bytes());
    let second = w.scan().await;
    assert!(second.is_complete(), "{second:?}");
    assert_eq!(second.scanned().late_sidecars, 2, "{:?}", second.scanned());
    assert_eq!(
        w.server.uploads().len(),
        2,
        "the photos are not uploaded again"
    );
    assert_eq!(w.server.asset_count(&w.server.admin_id()), 2);

    let third = w.scan().await;
    assert_eq!(
        third.scanned().late_sidecars,
        0,
        "each change is reported once"
    );
}

/// The watcher decides as the scanner does, and reads ignore files and `.nomedia` as they are
/// when it looks: created while the daemon runs, in a new folder and in one it watched already.
#[tokio::test]
async fn the_watcher_honours_junk_nomedia_and_ignore_files_created_while_it_runs() {
    let mut w = World::new(Dialect::Immich).await;
    w.extra = "[watch]\nmode = \"auto\"\nsettle = \"300ms\"\npoll_settle = \"300ms\"\n\
               [scan]\ninterval = \"1h\"\n"
        .into();
    w.write("seed.jpg", &jpeg("seed"));
    std::fs::create_dir_all(w.root().join("old")).unwrap();
    let running = w.start_daemon();
    let uploaded = |name: &str| sent_names(&w).contains(name);
    assert!(eventually(Duration::from_secs(30), || uploaded("seed.jpg")).await);

    // A folder the watcher knew, then ignore rules in it and at the root.
    w.write("old/.immishignore", b"drop_*\n");
    w.write(".immishignore", b"/root_drop.jpg\n");
    w.write(".nomedia_is_not_here.jpg", &jpeg("hidden"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    w.write("old/drop_1.jpg", &jpeg("ignored in a watched folder"));
    w.write("root_drop.jpg", &jpeg("ignored at the root"));
    // New folders: a .nomedia one, a junk one, one with its own ignore file.
    w.write("quiet/.nomedia", b"");
    w.write("quiet/IMG_q.jpg", &jpeg("nomedia"));
    w.write("@eaDir/x.jpg", &jpeg("junk"));
    w.write("new/.immishignore", b"*.jpg\n!keep*.jpg\n");
    w.write("new/drop.jpg", &jpeg("ignored in a new folder"));
    w.write("new/keep_1.jpg", &jpeg("kept in a new folder"));
    w.write("old/keep_2.jpg", &jpeg("kept in a watched folder"));
    w.write("last.jpg", &jpeg("written last"));

    assert!(
        eventually(Duration::from_secs(30), || [
            "keep_1.jpg",
            "keep_2.jpg",
            "last.jpg"
        ]
        .iter()
        .all(|n| uploaded(n)))
        .await,
        "{:?}",
        sent_names(&w)
    );
    // The skipped ones were written before these and settle as fast; give them as long again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let want: BTreeSet<String> = ["seed.jpg", "keep_1.jpg", "keep_2.jpg", "last.jpg"]
        .map(String::from)
        .into();
    assert_eq!(sent_names(&w), want);
    running.stop().await;
}

/// A sidecar edited while the daemon runs: the watcher compares it with the one the photo
/// went up with, `status` counts it (with no scan in between), and the photo is not
/// uploaded again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_edited_while_the_daemon_runs_is_counted_and_uploads_nothing() {
    let mut w = World::new(Dialect::Immich).await;
    w.extra = "[watch]\nmode = \"notify\"\nsettle = \"300ms\"\n[scan]\ninterval = \"1h\"\n".into();
    w.write("IMG_1.jpg", &Photo::new("one").jpeg());
    let xmp = w.write("IMG_1.jpg.xmp", xmp_sidecar(Some("first"), None).as_bytes());
    let running = w.start_daemon();
    assert!(eventually(Duration::from_secs(60), || w.server.uploads().len() == 1).await);
    let status = || immish_sync::status::read(&w.state_dir()).unwrap().unwrap();
    let photo = w.root().join("IMG_1.jpg");
    assert!(
        eventually(Duration::from_secs(60), || w.state_of(&photo).as_deref()
            == Some("done"))
        .await
    );
    assert_eq!(status().late_sidecars, 0);

    std::fs::write(
        &xmp,
        xmp_sidecar(Some("edited in the running daemon"), None),
    )
    .unwrap();
    set_mtime(&xmp, 1_700_000_000);
    assert!(
        eventually(Duration::from_secs(60), || status().late_sidecars == 1).await,
        "the watcher reports the edited sidecar"
    );
    assert!(
        status().render().contains("  sidecars   1 (XMP sidecars"),
        "{}",
        status().render()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        w.server.uploads().len(),
        1,
        "the photo is not uploaded again"
    );
    running.stop().await;
}
