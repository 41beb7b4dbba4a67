//! Albums, Live Photos and stacks (issue 11): what the server holds after a scan or while the
//! daemon runs, and what the daemon sent (the test server records each upload's form fields
//! and counts each route).

use std::process::{Command, Stdio};
use std::time::Duration;

use immish_testserver::{AssetView, Dialect, UploadRecord, Visibility};

use crate::common::{eventually, jpeg, mp4, sha1_hex, World};

const BIN: &str = env!("CARGO_BIN_EXE_immish-sync");

/// The server's asset holding these bytes.
fn asset_of(w: &World, bytes: &[u8]) -> AssetView {
    let sum = sha1_hex(bytes);
    w.server
        .all_assets()
        .into_iter()
        .find(|a| a.checksum_hex == sum)
        .unwrap_or_else(|| panic!("no asset with checksum {sum}"))
}

/// The upload request that sent this file name (the first one).
fn upload_named(w: &World, name: &str) -> UploadRecord {
    w.server
        .uploads()
        .into_iter()
        .find(|u| u.field("filename") == Some(name))
        .unwrap_or_else(|| panic!("no upload of {name}"))
}

/// Album name → its asset ids, for the admin user.
fn albums(w: &World) -> Vec<(String, Vec<String>)> {
    w.server
        .albums(&w.server.admin_id())
        .into_iter()
        .map(|a| (a.name, a.asset_ids))
        .collect()
}

fn album<'a>(all: &'a [(String, Vec<String>)], name: &str) -> &'a [String] {
    let found: Vec<_> = all.iter().filter(|(n, _)| n == name).collect();
    assert_eq!(found.len(), 1, "exactly one album {name:?}: {all:?}");
    &found[0].1
}

/// Folder albums are created once, across two runs and across two roots that both hold a
/// folder of that name; the second run adds only the new file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_albums_are_created_once_across_runs_and_roots() {
    let mut w = World::new(Dialect::Immich).await;
    let more = w.dir.path().join("more");
    w.extra = format!(
        "album = \"folder\"\n[[roots]]\npath = \"{}\"\nalbum = \"folder\"\n",
        more.display()
    );
    let (a, b, c, d) = (jpeg("a"), jpeg("b"), jpeg("c"), jpeg("d"));
    w.write("Summer/a.jpg", &a);
    w.write("Winter/b.jpg", &b);
    std::fs::create_dir_all(more.join("Summer")).unwrap();
    std::fs::write(more.join("Summer/c.jpg"), &c).unwrap();
    w.scan().await;

    let all = albums(&w);
    let mut summer = album(&all, "Summer").to_vec();
    summer.sort();
    let mut want = vec![asset_of(&w, &a).id, asset_of(&w, &c).id];
    want.sort();
    assert_eq!(summer, want);
    assert_eq!(album(&all, "Winter"), [asset_of(&w, &b).id]);
    assert_eq!(w.server.requests("POST /albums"), 2);

    w.write("Summer/d.jpg", &d);
    w.scan().await;
    let all = albums(&w);
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(album(&all, "Summer").len(), 3);
    assert!(album(&all, "Summer").contains(&asset_of(&w, &d).id));
    assert_eq!(
        w.server.requests("POST /albums"),
        2,
        "no album created twice"
    );
    // The second run sent only the new membership.
    assert_eq!(w.server.requests("PUT /albums/:id/assets"), 3);
}

/// A file moved to another folder joins that folder's album, and stays in the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_file_joins_its_new_album_and_keeps_the_old() {
    let mut w = World::new(Dialect::Immich).await;
    w.extra = "album = \"folder\"\n".into();
    let x = jpeg("moved");
    let old = w.write("Trip/x.jpg", &x);
    w.scan().await;
    let id = asset_of(&w, &x).id;
    assert_eq!(album(&albums(&w), "Trip"), std::slice::from_ref(&id));

    std::fs::create_dir_all(w.root().join("Best")).unwrap();
    std::fs::rename(&old, w.root().join("Best/x.jpg")).unwrap();
    w.scan().await;
    let all = albums(&w);
    assert_eq!(album(&all, "Best"), std::slice::from_ref(&id));
    assert_eq!(album(&all, "Trip"), [id], "the old membership stays");
    assert_eq!(
        w.server.requests("POST /assets"),
        1,
        "the move uploads nothing"
    );
}

/// `album = "path"` names an album by the folder path below the root, joined with the
/// separator; a file at the top takes the root's name; `album_name` adds every file to one
/// more album.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_albums_join_folders_and_a_fixed_album_takes_everything() {
    let mut w = World::new(Dialect::Immich).await;
    w.extra = "album = \"path\"\nalbum_separator = \" > \"\nalbum_name = \"From the NAS\"\n".into();
    let (deep, top) = (jpeg("deep"), jpeg("top"));
    w.write("2024/Summer/a.jpg", &deep);
    w.write("b.jpg", &top);
    w.scan().await;
    let all = albums(&w);
    let (deep, top) = (asset_of(&w, &deep).id, asset_of(&w, &top).id);
    assert_eq!(album(&all, "2024 > Summer"), std::slice::from_ref(&deep));
    assert_eq!(album(&all, "photos"), std::slice::from_ref(&top));
    let mut fixed = album(&all, "From the NAS").to_vec();
    fixed.sort();
    let mut want = vec![deep, top];
    want.sort();
    assert_eq!(fixed, want);
    assert_eq!(all.len(), 3, "{all:?}");
}

/// Names are not unique on the server: the oldest album of the name is used (the same one
/// every time), not a new one; an album the user deleted is created again for new files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_album_of_a_name_is_used_and_a_deleted_one_is_made_again() {
    let mut w = World::new(Dialect::Immich).await;
    w.extra = "album = \"folder\"\n".into();
    let me = w.server.admin_id();
    let oldest = w.server.create_album(&me, "Summer");
    let newer = w.server.create_album(&me, "Summer");
    let a = jpeg("a");
    w.write("Summer/a.jpg", &a);
    w.scan().await;
    let by_id = |id: &str| {
        w.server
            .albums(&me)
            .into_iter()
            .find(|x| x.id == id)
            .map(|x| x.asset_ids)
    };
    assert_eq!(by_id(&oldest), Some(vec![asset_of(&w, &a).id]));
    assert_eq!(by_id(&newer), Some(vec![]));
    assert_eq!(w.server.requests("POST /albums"), 0);

    assert!(w.server.delete_album(&oldest));
    let b = jpeg("b");
    w.write("Summer/b.jpg", &b);
    w.scan().await;
    // The newer album of that name is the oldest now.
    assert_eq!(by_id(&newer), Some(vec![asset_of(&w, &b).id]));
    assert!(w.server.delete_album(&newer));
    let c = jpeg("c");
    w.write("Summer/c.jpg", &c);
    w.scan().await;
    assert_eq!(album(&albums(&w), "Summer"), [asset_of(&w, &c).id]);
    assert_eq!(w.server.requests("POST /albums"), 1);
}

/// Still and video found together: the video goes up first and the still names it in its
/// upload (`livePhotoVideoId`); the server hides the video; nothing is linked afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_photo_found_whole_is_uploaded_video_first_and_linked_in_the_upload() {
    let w = World::new(Dialect::Immich).await;
    let (still, video) = (jpeg("live still"), mp4("live video"));
    // The still is written first, so it is the first one found and queued.
    w.write("IMG_0001.HEIC", &still);
    w.write("IMG_0001.MOV", &video);
    w.scan().await;
    let (s, v) = (asset_of(&w, &still), asset_of(&w, &video));
    assert_eq!(
        upload_named(&w, "IMG_0001.HEIC").field("livePhotoVideoId"),
        Some(v.id.as_str())
    );
    assert_eq!(
        upload_named(&w, "IMG_0001.MOV").field("livePhotoVideoId"),
        None
    );
    assert_eq!(s.live_photo_video_id.as_deref(), Some(v.id.as_str()));
    assert_eq!(v.visibility, Visibility::Hidden);
    assert_eq!(w.server.requests("PUT /assets/:id"), 0);
    assert_eq!(w.server.requests("POST /assets"), 2);
}

/// The still backed up in an earlier run, the video arriving later: the two are linked with
/// `PUT /assets/:id` once the video is up; a video whose still comes later is linked by the
/// still's own upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_photo_halves_arriving_apart_are_linked_in_either_order() {
    let w = World::new(Dialect::Immich).await;
    let (still, video) = (jpeg("still first"), mp4("video later"));
    w.write("IMG_0002.HEIC", &still);
    w.scan().await;
    assert_eq!(
        upload_named(&w, "IMG_0002.HEIC").field("livePhotoVideoId"),
        None
    );
    w.write("IMG_0002.MOV", &video);
    w.scan().await;
    let (s, v) = (asset_of(&w, &still), asset_of(&w, &video));
    assert_eq!(s.live_photo_video_id.as_deref(), Some(v.id.as_str()));
    assert_eq!(v.visibility, Visibility::Hidden);
    assert_eq!(w.server.requests("PUT /assets/:id"), 1);

    let (still, video) = (jpeg("still later"), mp4("video first"));
    w.write("IMG_0003.MP4", &video);
    w.scan().await;
    assert_eq!(
        asset_of(&w, &video).visibility,
        Visibility::Timeline,
        "alone, a normal video"
    );
    w.write("IMG_0003.JPG", &still);
    w.scan().await;
    let v = asset_of(&w, &video);
    assert_eq!(
        upload_named(&w, "IMG_0003.JPG").field("livePhotoVideoId"),
        Some(v.id.as_str())
    );
    assert_eq!(v.visibility, Visibility::Hidden);
    assert_eq!(
        w.server.requests("PUT /assets/:id"),
        1,
        "no link needed afterwards"
    );
}

/// While the daemon runs (Syncthing delivers the MOV a moment after the HEIC): the still is
/// uploaded alone, the video when it comes, and then they are linked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_links_a_video_that_arrives_after_its_still() {
    let mut w = World::new(Dialect::Immich).await;
    w.extra = "album = \"folder\"\n".into();
    let (still, video) = (jpeg("syncthing still"), mp4("syncthing video"));
    let d = w.start_daemon();
    w.write("Phone/IMG_0004.HEIC", &still);
    let sum = sha1_hex(&still);
    let up = eventually(Duration::from_secs(30), || {
        w.server.all_assets().iter().any(|a| a.checksum_hex == sum)
    })
    .await;
    assert!(
        up,
        "the still is uploaded without waiting for a video that is not there"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    w.write("Phone/IMG_0004.MOV", &video);
    let linked = eventually(Duration::from_secs(30), || {
        let s = asset_of(&w, &still);
        s.live_photo_video_id.is_some()
    })
    .await;
    d.stop().await;
    assert!(linked, "the still is linked to its video");
    let (s, v) = (asset_of(&w, &still), asset_of(&w, &video));
    assert_eq!(s.live_photo_video_id.as_deref(), Some(v.id.as_str()));
    assert_eq!(v.visibility, Visibility::Hidden);
    // The still joins its album; the hidden video does not.
    assert_eq!(album(&albums(&w), "Phone"), [s.id]);
}

/// A RAW and its JPEG become one stack with the JPEG on top; `stack_primary = "raw"` puts the
/// RAW on top; `stacks = false` leaves them apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_and_jpeg_are_stacked_with_the_configured_primary() {
    for (extra, top) in [
        ("", "jpeg"),
        ("stack_primary = \"raw\"\n", "raw"),
        ("stacks = false\n", ""),
    ] {
        let mut w = World::new(Dialect::Immich).await;
        w.extra = extra.into();
        let (raw, jpg) = (jpeg("raw half"), jpeg("jpeg half"));
        w.write("DSC_0001.NEF", &raw);
        w.write("DSC_0001.JPG", &jpg);
        w.scan().await;
        let (r, j) = (asset_of(&w, &raw), asset_of(&w, &jpg));
        if top.is_empty() {
            assert_eq!((r.stack_id, j.stack_id), (None, None));
            assert_eq!(w.server.requests("POST /stacks"), 0);
            continue;
        }
        let stack = r.stack_id.clone().expect("the RAW is stacked");
        assert_eq!(j.stack_id.as_deref(), Some(stack.as_str()));
        let want = if top == "jpeg" { &j.id } else { &r.id };
        assert_eq!(
            w.server.stack_primary(&stack).as_ref(),
            Some(want),
            "{top} on top"
        );
        assert_eq!(w.server.requests("POST /stacks"), 1);
        // A second run sends nothing again.
        w.scan().await;
        assert_eq!(w.server.requests("POST /stacks"), 1);
    }
}

/// A key without album, stack or asset.update permissions: every file is still uploaded, and
/// each missing permission is told once, not once per file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_without_library_permissions_is_told_once_and_uploads_go_on() {
    let mut w = World::new(Dialect::Immich).await;
    w.extra = "album = \"folder\"\n".into();
    let key = w.server.create_api_key(
        &w.server.admin_id(),
        &["asset.upload", "asset.read", "user.read"],
    );
    let files: Vec<(String, Vec<u8>)> = vec![
        ("A/one.jpg".into(), jpeg("one")),
        ("B/two.jpg".into(), jpeg("two")),
        ("C/three.jpg".into(), jpeg("three")),
        ("C/DSC_1.NEF".into(), jpeg("nef")),
        ("C/DSC_1.JPG".into(), jpeg("nef jpg")),
        ("C/DSC_2.NEF".into(), jpeg("nef 2")),
        ("C/DSC_2.JPG".into(), jpeg("nef jpg 2")),
        ("IMG_5.HEIC".into(), jpeg("apart still")),
        ("IMG_6.HEIC".into(), jpeg("apart still 2")),
    ];
    for (rel, bytes) in &files {
        w.write(rel, bytes);
    }
    let config = w.write_config();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace(&w.server.api_key(), &key)).unwrap();
    let scan = |w: &World| {
        Command::new(BIN)
            .arg("--config")
            .arg(w.config_path())
            .arg("scan")
            .stdin(Stdio::null())
            .output()
            .expect("run immish-sync")
    };
    let out = scan(&w);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{err}");
    // The video of the Live Photo comes in a second run, so that linking needs asset.update.
    w.write("IMG_5.MOV", &mp4("apart video"));
    w.write("IMG_6.MOV", &mp4("apart video 2"));
    let out = scan(&w);
    let err2 = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{err2}");

    assert_eq!(
        w.server.all_assets().len(),
        files.len() + 2,
        "every file is uploaded"
    );
    assert!(w.server.albums(&w.server.admin_id()).is_empty());
    let told = |s: &str, what: &str| s.matches(what).count();
    assert_eq!(
        told(&err, "not put in albums"),
        1,
        "albums told once per run: {err}"
    );
    assert_eq!(
        told(&err, "Missing required permission: album.read"),
        1,
        "{err}"
    );
    assert_eq!(
        told(&err, "pairs are not stacked"),
        1,
        "stacks told once: {err}"
    );
    assert_eq!(
        told(&err2, "uploaded apart stay two assets"),
        1,
        "live link told once: {err2}"
    );
    assert_eq!(
        told(&err2, "Missing required permission: asset.update"),
        1,
        "{err2}"
    );
}

/// A link that fails (the server answers 503 between the two halves) is not lost: the
/// decision is in the state database, and the next run links the pair without uploading
/// anything again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_that_failed_is_made_by_the_next_run() {
    let w = World::new(Dialect::Immich).await;
    let (still, video) = (jpeg("heal still"), mp4("heal video"));
    w.write("IMG_0007.HEIC", &still);
    w.scan().await;
    w.write("IMG_0007.MOV", &video);
    w.server.fail_next(
        "PUT /assets/:id",
        1,
        503,
        Some("{\"message\":\"busy\"}"),
        Some("application/json"),
    );
    w.scan().await;
    assert_eq!(
        asset_of(&w, &still).live_photo_video_id,
        None,
        "the link failed"
    );
    assert_eq!(w.server.requests("PUT /assets/:id"), 1);
    w.scan().await;
    let (s, v) = (asset_of(&w, &still), asset_of(&w, &video));
    assert_eq!(s.live_photo_video_id.as_deref(), Some(v.id.as_str()));
    assert_eq!(w.server.requests("PUT /assets/:id"), 2);
    assert_eq!(
        w.server.requests("POST /assets"),
        2,
        "nothing uploaded twice"
    );
}

/// The next major's albums have no `ownerId` (the owner is an `albumUsers` entry): the
/// user's album of that name is still read and used, not created again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn albums_are_found_again_on_the_next_major_without_owner_id() {
    let mut w = World::new(Dialect::ImmichNext).await;
    w.extra = "album = \"folder\"\n".into();
    let me = w.server.admin_id();
    let existing = w.server.create_album(&me, "Trip");
    let (a, b) = (jpeg("next a"), jpeg("next b"));
    w.write("Trip/a.jpg", &a);
    w.write("Trip/b.jpg", &b);
    w.scan().await;
    let all = albums(&w);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(w.server.albums(&me)[0].id, existing);
    assert_eq!(album(&all, "Trip").len(), 2);
    assert_eq!(w.server.requests("POST /albums"), 0);
}

/// Burst frames (Google Camera / Pixel names: one `BURST<digits>` id) become one stack with
/// the `_COVER` frame on top; another burst in the same folder and a look-alike name stay
/// apart; `stacks = false` leaves them all apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_frames_are_stacked_with_the_cover_on_top() {
    for extra in ["", "stacks = false\n"] {
        let mut w = World::new(Dialect::Immich).await;
        w.extra = extra.into();
        let frames: Vec<Vec<u8>> = (0..3).map(|i| jpeg(&format!("frame {i}"))).collect();
        w.write("2024/00000IMG_00000_BURST20240501123456.jpg", &frames[0]);
        w.write(
            "2024/00001IMG_00001_BURST20240501123456_COVER.jpg",
            &frames[1],
        );
        w.write("2024/00002IMG_00002_BURST20240501123456.jpg", &frames[2]);
        let other = jpeg("another burst");
        w.write("2024/00000IMG_00000_BURST20240501999999.jpg", &other);
        let lookalike = jpeg("look-alike");
        w.write("2024/MYBURST20240501123456.jpg", &lookalike);
        w.scan().await;
        let ids: Vec<AssetView> = frames.iter().map(|f| asset_of(&w, f)).collect();
        assert_eq!(asset_of(&w, &other).stack_id, None);
        assert_eq!(asset_of(&w, &lookalike).stack_id, None);
        if !extra.is_empty() {
            assert!(ids.iter().all(|a| a.stack_id.is_none()));
            assert_eq!(w.server.requests("POST /stacks"), 0);
            continue;
        }
        let stack = ids[0].stack_id.clone().expect("the frames are stacked");
        assert!(ids
            .iter()
            .all(|a| a.stack_id.as_deref() == Some(stack.as_str())));
        assert_eq!(
            w.server.stack_primary(&stack).as_ref(),
            Some(&ids[1].id),
            "the cover on top"
        );
    }
}
