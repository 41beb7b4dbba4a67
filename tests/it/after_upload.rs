//! What happens to a local file after its upload (issue 11): edited files go up as a new
//! asset beside the old one (docs/ARCHITECTURE.md#edited-files); `after_upload` archives or
//! deletes a root's files once the server holds them (docs/ARCHITECTURE.md#after-upload).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use immish_sync::mirror;
use immish_sync::status;
use immish_testserver::{Dialect, NewAsset, TestServer};

use crate::common::{eventually, jpeg, mp4, run, sha1_hex, World};

const BIN: &str = env!("CARGO_BIN_EXE_immish-sync");

/// Rewriting a file after its upload (an exiftool bulk edit) uploads the new bytes as a new
/// asset; the old asset stays, the log says so, `status` counts it and `diff` calls the old
/// asset "local file changed", not "local file gone".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_file_goes_up_as_a_new_asset_and_the_old_one_stays() {
    let server = TestServer::builder()
        .dialect(Dialect::Immich)
        .upload_event_delay(Duration::ZERO)
        .start()
        .await;
    let w = World::with_server(server);
    let v1 = jpeg("first version");
    let path = w.write("IMG_1.jpg", &v1);
    assert!(w.scan().await.is_complete());
    let admin = w.server.admin_id();
    let before = w.server.assets(&admin);
    assert_eq!(before.len(), 1);
    let old_id = before[0].id.clone();

    let v2 = jpeg("second version, edited by exiftool");
    std::fs::write(&path, &v2).unwrap();
    w.write_config();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(w.config_path())
        .arg("scan")
        .stdin(Stdio::null())
        .output()
        .expect("run immish-sync scan");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");

    let after = w.server.assets(&admin);
    assert_eq!(after.len(), 2, "old and new version: {after:?}");
    let sums: Vec<&str> = after.iter().map(|a| a.checksum_hex.as_str()).collect();
    assert!(sums.contains(&sha1_hex(&v1).as_str()), "old bytes kept");
    assert!(sums.contains(&sha1_hex(&v2).as_str()), "new bytes uploaded");
    let old = w.server.asset(&old_id).expect("the old asset stays");
    assert!(!old.trashed, "nothing deleted or trashed on the server");
    assert!(
        err.contains(&format!(
            "IMG_1.jpg changed since it was uploaded as asset {old_id}; uploading the new \
             version as a new asset"
        )),
        "{err}"
    );

    let s = status::read(&w.state_dir()).unwrap().unwrap();
    assert_eq!(s.edited_files, 1);
    assert!(
        s.render().contains("  edited     1 (changed after upload"),
        "{}",
        s.render()
    );
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["edited_files"], 1);

    let diff = mirror::report::diff(&w.state_dir(), None).unwrap().unwrap();
    assert!(diff.remote_only.is_empty(), "{:?}", diff.remote_only);
    assert_eq!(diff.changed.len(), 1, "{:?}", diff.changed);
    assert_eq!(diff.changed[0].id.0, old_id);
    let text = diff.render();
    assert!(text.contains("local file changed: 1"), "{text}");
    assert!(text.contains("local file gone: 0"), "{text}");
}

/// The archive folder of a world: beside its root, outside it.
fn archive(w: &World) -> PathBuf {
    w.dir.path().join("archive")
}

/// The root's `after_upload` keys, as the generated config's root table takes them.
fn after_upload(w: &mut World, action: &str, linked: bool) {
    w.extra = match action {
        "archive" => format!(
            "after_upload = \"archive\"\narchive_dir = \"{}\"\nafter_upload_linked = {linked}\n",
            archive(w).display()
        ),
        other => format!("after_upload = \"{other}\"\nafter_upload_linked = {linked}\n"),
    };
}

fn status_of(w: &World) -> status::Status {
    status::read(&w.state_dir()).unwrap().unwrap()
}

/// How many intents are open in the state database (0 before the table exists).
fn open_intents(w: &World) -> i64 {
    let Ok(db) = rusqlite::Connection::open_with_flags(
        w.state_dir().join("state.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return 0;
    };
    db.query_row(
        "SELECT COUNT(*) FROM after_upload WHERE state = 'intent'",
        [],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

fn spawn(w: &World, args: &[&str]) -> std::process::Child {
    Command::new(BIN)
        .arg("--config")
        .arg(w.config_path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start immish-sync")
}

fn read(p: &Path) -> Option<Vec<u8>> {
    std::fs::read(p).ok()
}

/// `after_upload = "archive"`: once the server's checksum of the upload was verified, the
/// file moves under `archive_dir` with its path below the root; `status` counts it and
/// `diff` calls it archived, not gone; the next scan uploads nothing from the archive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_moves_a_verified_upload_with_its_path_below_the_root() {
    let mut w = World::new(Dialect::Immich).await;
    after_upload(&mut w, "archive", false);
    let bytes = jpeg("to archive");
    let src = w.write("2024/May/IMG_1.jpg", &bytes);
    let summary = w.scan().await;
    assert!(summary.is_complete());

    let dst = archive(&w).join("2024/May/IMG_1.jpg");
    assert_eq!(read(&dst), Some(bytes.clone()), "moved into the archive");
    assert!(!src.exists(), "gone from the root");
    let assets = w.server.assets(&w.server.admin_id());
    assert_eq!(assets.len(), 1);
    assert_eq!(assets[0].checksum_hex, sha1_hex(&bytes));

    let s = status_of(&w);
    assert_eq!((s.after_upload.archived, s.after_upload.deleted), (1, 0));
    assert_eq!(s.missing_files, 0, "not counted as gone locally");
    assert!(
        s.render()
            .contains("  archived   1 (moved to the archive folder"),
        "{}",
        s.render()
    );
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["after_upload"]["archived"], 1);

    let diff = mirror::report::diff(&w.state_dir(), None).unwrap().unwrap();
    assert!(
        diff.remote_only.is_empty(),
        "not 'gone': {:?}",
        diff.remote_only
    );
    assert_eq!(diff.archived.len(), 1);
    assert_eq!(diff.archived[0].id.0, assets[0].id);
    assert!(
        diff.render()
            .contains("local file archived after upload: 1"),
        "{}",
        diff.render()
    );

    // Another scan finds nothing to do: the archive is not a root.
    w.server.reset_counters();
    assert!(w.scan().await.is_complete());
    assert_eq!(w.server.requests("POST /assets"), 0);
    assert_eq!(read(&dst), Some(bytes));
}

/// A server that stores a corrupt copy fails verification: nothing is deleted. Once a
/// sound copy is verified, `after_upload = "delete"` deletes the file, and `status` and
/// `diff` say "removed after upload".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_waits_for_a_verified_copy_and_never_follows_a_corrupt_one() {
    let mut w = World::new(Dialect::Immich).await;
    after_upload(&mut w, "delete", false);
    let bytes = jpeg("to delete");
    let src = w.write("IMG_2.jpg", &bytes);
    w.server.corrupt_uploads(true);
    let summary = w.scan().await;
    assert!(
        !summary.is_complete(),
        "the corrupt copy fails verification"
    );
    assert_eq!(
        read(&src),
        Some(bytes.clone()),
        "not deleted: the server's copy is corrupt"
    );
    assert_eq!(status_of(&w).after_upload.deleted, 0);

    w.server.corrupt_uploads(false);
    w.write_config();
    let out = run(&w, &["retry"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(w.scan().await.is_complete());
    assert!(!src.exists(), "deleted once a sound copy was verified");
    let good = w
        .server
        .assets(&w.server.admin_id())
        .into_iter()
        .find(|a| a.checksum_hex == sha1_hex(&bytes))
        .expect("the sound copy is on the server");
    let s = status_of(&w);
    assert_eq!(s.after_upload.deleted, 1);
    assert!(
        s.render().contains("  removed    1 (deleted locally"),
        "{}",
        s.render()
    );
    let diff = mirror::report::diff(&w.state_dir(), None).unwrap().unwrap();
    // The corrupt copy is gone locally (no file has its bytes); the sound one was removed.
    assert!(
        diff.remote_only.iter().all(|a| a.id.0 != good.id),
        "{:?}",
        diff.remote_only
    );
    assert_eq!(diff.removed.len(), 1);
    assert_eq!(diff.removed[0].id.0, good.id);
}

/// The fresh look: an asset the user trashed between its verification and the action
/// (the mirror does not know yet) keeps its file where it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_whose_asset_was_trashed_just_before_the_action_is_kept() {
    let mut w = World::new(Dialect::Immich).await;
    let bytes = jpeg("trashed meanwhile");
    let src = w.write("IMG_3.jpg", &bytes);
    assert!(w.scan().await.is_complete(), "backed up, kept");
    let id = w.server.assets(&w.server.admin_id())[0].id.clone();

    after_upload(&mut w, "archive", false);
    w.write_config();
    // The fresh look is held at the server long enough to trash the asset under it.
    w.server
        .delay("POST /assets/bulk-upload-check", Duration::from_secs(15));
    let child = spawn(&w, &["scan"]);
    let seen = eventually(Duration::from_secs(60), || open_intents(&w) > 0).await;
    assert!(seen, "the intent is recorded before the fresh look");
    assert_eq!(w.server.trash([&id]), 1);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(read(&src), Some(bytes), "kept: {err}");
    assert!(!archive(&w).join("IMG_3.jpg").exists());
    assert!(err.contains("its asset is in the server's trash"), "{err}");
    let s = status_of(&w);
    assert_eq!((s.after_upload.archived, s.after_upload.held), (0, 1));
}

/// A file only linked by dedup (its bytes were on the server before: another client's
/// upload) is kept, unless `after_upload_linked = true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_only_linked_by_dedup_is_kept_unless_configured() {
    let mut w = World::new(Dialect::Immich).await;
    let bytes = jpeg("from the phone");
    w.server.insert(
        &w.server.admin_id(),
        NewAsset::new("IMG_4.jpg", bytes.clone()),
    );
    after_upload(&mut w, "archive", false);
    let src = w.write("IMG_4.jpg", &bytes);
    assert!(w.scan().await.is_complete());
    assert_eq!(w.server.requests("POST /assets"), 0, "linked, not uploaded");
    assert_eq!(read(&src), Some(bytes.clone()), "a linked file is kept");
    assert_eq!(status_of(&w).after_upload.archived, 0);

    after_upload(&mut w, "archive", true);
    assert!(w.scan().await.is_complete());
    assert!(!src.exists());
    assert_eq!(read(&archive(&w).join("IMG_4.jpg")), Some(bytes));
}

/// A Live Photo's still is not archived while its video is not safe on the server (its
/// upload was refused); once the video is verified, both go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_photo_still_waits_for_its_video_to_be_safe() {
    let mut w = World::new(Dialect::Immich).await;
    after_upload(&mut w, "archive", false);
    let (still, video) = (jpeg("live still"), mp4("live video"));
    let s_path = w.write("IMG_5.HEIC", &still);
    let v_path = w.write("IMG_5.MOV", &video);
    // The video goes up first (the still waits for it) and is refused for good.
    w.server.fail_next("POST /assets", 1, 400, None, None);
    w.scan().await;
    let ups: Vec<String> = w
        .server
        .assets(&w.server.admin_id())
        .into_iter()
        .map(|a| a.checksum_hex)
        .collect();
    assert_eq!(
        ups,
        vec![sha1_hex(&still)],
        "the still alone is on the server"
    );
    assert_eq!(
        read(&s_path),
        Some(still.clone()),
        "the still stays: its video is not safe"
    );
    assert_eq!(read(&v_path), Some(video.clone()));

    let out = run(&w, &["retry"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(w.scan().await.is_complete());
    assert!(!s_path.exists() && !v_path.exists());
    assert_eq!(read(&archive(&w).join("IMG_5.HEIC")), Some(still));
    assert_eq!(read(&archive(&w).join("IMG_5.MOV")), Some(video));
    assert_eq!(status_of(&w).after_upload.archived, 2);
}

/// `kill -9` after the intent was recorded and before the action: the next run looks
/// again and archives the file; nothing is lost or uploaded twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_intent_and_action_loses_nothing() {
    let mut w = World::new(Dialect::Immich).await;
    let bytes = jpeg("killed");
    let src = w.write("IMG_6.jpg", &bytes);
    assert!(w.scan().await.is_complete());
    after_upload(&mut w, "archive", false);
    w.write_config();
    w.server
        .delay("POST /assets/bulk-upload-check", Duration::from_secs(120));
    let mut child = spawn(&w, &["run"]);
    let seen = eventually(Duration::from_secs(60), || open_intents(&w) > 0).await;
    child.kill().expect("kill -9");
    let _ = child.wait();
    assert!(seen, "the intent was recorded");
    assert_eq!(
        read(&src),
        Some(bytes.clone()),
        "not acted on before the fresh look"
    );

    w.server
        .delay("POST /assets/bulk-upload-check", Duration::ZERO);
    w.server.reset_counters();
    assert!(w.scan().await.is_complete());
    assert!(!src.exists());
    assert_eq!(read(&archive(&w).join("IMG_6.jpg")), Some(bytes));
    assert_eq!(
        w.server.requests("POST /assets"),
        0,
        "nothing uploaded again"
    );
    assert_eq!(w.server.assets(&w.server.admin_id()).len(), 1);
    assert_eq!(open_intents(&w), 0);
    assert_eq!(status_of(&w).after_upload.archived, 1);
}

/// A crash after the move and before it was recorded: the next start finds the file in the
/// archive with its bytes and records the move as done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_done_before_a_crash_is_recorded_at_the_next_start() {
    let mut w = World::new(Dialect::Immich).await;
    let bytes = jpeg("moved then crashed");
    let src = w.write("IMG_7.jpg", &bytes);
    assert!(w.scan().await.is_complete());
    let dst = archive(&w).join("IMG_7.jpg");
    {
        use std::os::unix::ffi::OsStrExt;
        let db = w.db();
        let (file_id, sum, asset): (i64, Vec<u8>, immish_sync::model::AssetId) = db
            .query_row(
                "SELECT id, checksum, asset_id FROM files WHERE path = ?1",
                [src.as_os_str().as_bytes()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        db.execute(
            "INSERT INTO after_upload(file_id, root, path, action, target, checksum, asset_id,
                                      state, noted_at)
             VALUES (?1, ?2, ?3, 'archive', ?4, ?5, ?6, 'intent', 0)",
            rusqlite::params![
                file_id,
                w.root().as_os_str().as_bytes(),
                src.as_os_str().as_bytes(),
                dst.as_os_str().as_bytes(),
                sum,
                asset
            ],
        )
        .unwrap();
    }
    std::fs::create_dir_all(archive(&w)).unwrap();
    std::fs::rename(&src, &dst).unwrap();
    after_upload(&mut w, "archive", false);
    assert!(w.scan().await.is_complete());
    assert_eq!(read(&dst), Some(bytes));
    assert_eq!(open_intents(&w), 0);
    let s = status_of(&w);
    assert_eq!((s.after_upload.archived, s.missing_files), (1, 0));
    let diff = mirror::report::diff(&w.state_dir(), None).unwrap().unwrap();
    assert!(diff.remote_only.is_empty(), "{:?}", diff.remote_only);
}

/// `service install` grants write access to exactly the root that archives and its archive
/// folder; another root stays read-only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_install_grants_the_archiving_root_and_its_archive() {
    let mut w = World::new(Dialect::Immich).await;
    std::fs::create_dir_all(archive(&w)).unwrap();
    let other = w.dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    after_upload(&mut w, "archive", false);
    w.extra
        .push_str(&format!("[[roots]]\npath = \"{}\"\n", other.display()));
    w.write_config();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(w.config_path())
        .args(["service", "install", "--dry-run"])
        .env("XDG_CONFIG_HOME", w.dir.path().join("xdg"))
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let unit = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{unit} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        unit.contains(&format!("\nReadWritePaths=-{}\n", w.root().display())),
        "{unit}"
    );
    assert!(
        unit.contains(&format!("\nReadWritePaths=-{}\n", archive(&w).display())),
        "{unit}"
    );
    assert!(
        !unit.contains(&format!("ReadOnlyPaths=-{}\n", w.root().display())),
        "{unit}"
    );
    assert!(
        unit.contains(&format!("\nReadOnlyPaths=-{}\n", other.display())),
        "{unit}"
    );
}
