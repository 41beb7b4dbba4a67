//! `immish-sync run` watching its roots: settling, temporary names, bursts, new folders,
//! polling, paused roots, moves. Each test runs the real daemon (`run_with`) against the
//! test server, with the full periodic scan set to an hour so that only the watcher can be
//! what finds a new file.

use std::collections::{BTreeSet, HashSet};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use immish_testserver::Dialect;

use crate::common::{eventually, jpeg, sha1_hex, RunningDaemon, World};

/// `[watch]` and `[scan]` for the tests: short settle and poll (a polled root's own quiet
/// period, 30 s by default, as short as `settle`), the full scan out of the way.
fn watch_config(w: &mut World, mode: &str, settle: &str) {
    w.extra = format!(
        "[watch]\nmode = \"{mode}\"\nsettle = \"{settle}\"\npoll_settle = \"{settle}\"\n\
         poll_interval = \"500ms\"\n[scan]\ninterval = \"1h\"\n"
    );
}

/// Starts the daemon on a root holding one file and waits until that file is on the server
/// (by then the watches are in place: the first scan waits for them).
async fn start(w: &World) -> RunningDaemon {
    w.write("seed.jpg", &jpeg("seed"));
    let running = w.start_daemon();
    let server = &w.server;
    let admin = server.admin_id();
    assert!(
        eventually(Duration::from_secs(30), || !server
            .assets(&admin)
            .is_empty())
        .await,
        "the seed file must be uploaded by the first scan"
    );
    running
}

fn checksums(w: &World) -> BTreeSet<String> {
    w.server
        .assets(&w.server.admin_id())
        .into_iter()
        .map(|a| a.checksum_hex)
        .collect()
}

fn names(w: &World) -> BTreeSet<String> {
    w.server
        .assets(&w.server.admin_id())
        .into_iter()
        .map(|a| a.original_file_name)
        .collect()
}

/// Nothing was ever deleted or trashed on the server.
fn assert_nothing_deleted(w: &World) {
    let routes = w.server.request_counts();
    assert!(
        routes.keys().all(|r| !r.starts_with("DELETE")),
        "no delete request may reach the server: {routes:?}"
    );
    assert!(w
        .server
        .assets(&w.server.admin_id())
        .iter()
        .all(|a| !a.trashed));
}

/// Inode numbers watched by any inotify instance of this process (from
/// `/proc/self/fdinfo`: one `inotify wd:… ino:<hex> …` line per watch).
fn watched_inodes() -> HashSet<u64> {
    let mut out = HashSet::new();
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return out;
    };
    for fd in fds.flatten() {
        let is_inotify = std::fs::read_link(fd.path())
            .map(|t| t.to_string_lossy().contains("inotify"))
            .unwrap_or(false);
        if !is_inotify {
            continue;
        }
        let info = std::fs::read_to_string(Path::new("/proc/self/fdinfo").join(fd.file_name()))
            .unwrap_or_default();
        for line in info.lines().filter(|l| l.starts_with("inotify wd:")) {
            if let Some(hex) = line.split_whitespace().find_map(|f| f.strip_prefix("ino:")) {
                if let Ok(ino) = u64::from_str_radix(hex, 16) {
                    out.insert(ino);
                }
            }
        }
    }
    out
}

fn inode(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().ino()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_slowly_is_uploaded_once_with_its_final_bytes() {
    let mut w = World::new(Dialect::Immich).await;
    // The writer pauses 200 ms between chunks; a settle of 1 s leaves room for a loaded
    // test machine without letting a pause pass for the end of the file.
    watch_config(&mut w, "auto", "1s");
    let daemon = start(&w).await;

    let path = w.root().join("slow.jpg");
    let writer = tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::create(&path).unwrap();
        let mut all = jpeg("slow");
        f.write_all(&all).unwrap();
        // 50 chunks of 256 KiB, one every 200 ms: ~10 s, 12.5 MiB, the file open throughout.
        for i in 0..50u32 {
            std::thread::sleep(Duration::from_millis(200));
            let chunk = vec![(i % 251) as u8; 256 * 1024];
            f.write_all(&chunk).unwrap();
            f.flush().unwrap();
            all.extend_from_slice(&chunk);
        }
        all
    });
    let all = writer.await.unwrap();
    let want = sha1_hex(&all);

    let final_path = w.root().join("slow.jpg");
    assert!(
        eventually(Duration::from_secs(30), || w
            .state_of(&final_path)
            .as_deref()
            == Some("done"))
        .await,
        "the finished file must be backed up: {:?}",
        w.state_of(&final_path)
    );
    assert!(
        checksums(&w).contains(&want),
        "the server holds the final bytes"
    );
    assert_eq!(
        w.server.assets(&w.server.admin_id()).len(),
        2,
        "no partial version was uploaded"
    );
    assert_eq!(
        w.server.upload_bodies(),
        2,
        "seed + one body for the slow file"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temp_file_renamed_into_place_is_uploaded_once_under_its_final_name() {
    let mut w = World::new(Dialect::Immich).await;
    watch_config(&mut w, "auto", "300ms");
    let daemon = start(&w).await;

    // rsync, browsers/curl, Syncthing.
    let copies = [
        (".IMG_0001.jpg.a1B2c3", "IMG_0001.jpg"),
        ("IMG_0002.jpg.part", "IMG_0002.jpg"),
        (".syncthing.IMG_0003.jpg.tmp", "IMG_0003.jpg"),
    ];
    let mut want = BTreeSet::new();
    for (tmp, fin) in copies {
        let bytes = jpeg(fin);
        want.insert(sha1_hex(&bytes));
        let tmp = w.root().join(tmp);
        // Written in two steps with a pause longer than the settle: the temporary name alone
        // must keep it from being taken.
        let mut f = std::fs::File::create(&tmp).unwrap();
        f.write_all(&bytes[..100]).unwrap();
        f.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        f.write_all(&bytes[100..]).unwrap();
        drop(f);
        std::fs::rename(&tmp, w.root().join(fin)).unwrap();
    }

    let all_there = eventually(Duration::from_secs(30), || {
        copies
            .iter()
            .all(|(_, fin)| w.state_of(&w.root().join(fin)).as_deref() == Some("done"))
    })
    .await;
    assert!(
        all_there,
        "every renamed copy must be backed up: {:?}",
        w.job_states()
    );
    let got = checksums(&w);
    assert!(want.is_subset(&got), "{want:?} ⊄ {got:?}");
    let names = names(&w);
    for (_, fin) in copies {
        assert!(
            names.contains(fin),
            "{fin} must arrive under its final name: {names:?}"
        );
    }
    assert_eq!(
        w.server.assets(&w.server.admin_id()).len(),
        4,
        "seed + 3, no temp name"
    );
    assert_eq!(w.server.upload_bodies(), 4, "one body per file");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_5000_files_all_arrive() {
    let mut w = World::new(Dialect::Immich).await;
    watch_config(&mut w, "auto", "300ms");
    let daemon = start(&w).await;

    let n = 5000;
    let mut want = BTreeSet::new();
    let root = w.root();
    // Half in the watched root, half in a folder that appears during the burst.
    for i in 0..n {
        let rel = if i % 2 == 0 {
            format!("IMG_{i:05}.jpg")
        } else {
            format!("burst/IMG_{i:05}.jpg")
        };
        let bytes = jpeg(&format!("burst-{i}"));
        want.insert(sha1_hex(&bytes));
        let p = root.join(rel);
        if i == 1 {
            std::fs::create_dir(p.parent().unwrap()).unwrap();
        }
        std::fs::write(&p, &bytes).unwrap();
    }

    let server = &w.server;
    let admin = server.admin_id();
    // Not a timing test: wait as long as files keep arriving (a loaded CI machine uploads
    // 5,000 files slowly), and fail only when nothing new arrived for a whole minute.
    let mut seen = 0;
    let mut last_progress = std::time::Instant::now();
    let arrived = loop {
        let now = server.assets(&admin).len();
        if now > n {
            break true;
        }
        if now > seen {
            seen = now;
            last_progress = std::time::Instant::now();
        } else if last_progress.elapsed() > Duration::from_secs(60) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let got = checksums(&w);
    let missing = want.difference(&got).count();
    assert!(
        arrived && missing == 0,
        "{missing} of {n} files never arrived"
    );
    assert_eq!(server.assets(&admin).len(), n + 1, "each file once");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_folder_tree_is_picked_up_and_watched() {
    let mut w = World::new(Dialect::Immich).await;
    watch_config(&mut w, "auto", "300ms");
    let daemon = start(&w).await;

    // Files created right after their folders: inotify alone misses most of them. Several
    // trees, so that a watcher without the walk of new folders loses at least one file.
    let mut want = BTreeSet::new();
    for t in 0..5 {
        std::fs::create_dir_all(w.root().join(format!("t{t}/a/b/c"))).unwrap();
        for dir in ["a", "a/b", "a/b/c"] {
            for i in 0..5 {
                let bytes = jpeg(&format!("t{t}/{dir}-{i}"));
                want.insert(sha1_hex(&bytes));
                std::fs::write(w.root().join(format!("t{t}/{dir}/IMG_{i}.jpg")), &bytes).unwrap();
            }
        }
    }
    let all = eventually(Duration::from_secs(30), || want.is_subset(&checksums(&w))).await;
    assert!(all, "every file of the new trees must arrive");

    let deep = w.root().join("t0/a/b/c");
    // The new folders are watched now: a later file there is seen by its events (the full
    // scan is an hour away).
    let (a, b, c) = (
        inode(&w.root().join("t0/a")),
        inode(&w.root().join("t0/a/b")),
        inode(&deep),
    );
    assert!(
        eventually(Duration::from_secs(10), || {
            let watched = watched_inodes();
            [a, b, c].iter().all(|i| watched.contains(i))
        })
        .await,
        "notify must watch the new folders"
    );
    let late = jpeg("late");
    std::fs::write(deep.join("late.jpg"), &late).unwrap();
    assert!(
        eventually(Duration::from_secs(15), || checksums(&w)
            .contains(&sha1_hex(&late)))
        .await,
        "a file written later in the new folder must arrive"
    );

    // A folder moved out of the root stops being watched (its inode lives on elsewhere).
    let outside = w.dir.path().join("moved-out");
    std::fs::rename(w.root().join("t0/a/b"), &outside).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            let watched = watched_inodes();
            !watched.contains(&b) && !watched.contains(&c)
        })
        .await,
        "folders moved out of the root must not stay watched"
    );
    assert!(
        watched_inodes().contains(&a),
        "the rest of the tree stays watched"
    );
    assert_nothing_deleted(&w);
    assert_eq!(
        w.server.assets(&w.server.admin_id()).len(),
        77,
        "seed + 75 + late"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_poll_mode_a_new_file_is_found_within_the_poll_interval() {
    let mut w = World::new(Dialect::Immich).await;
    watch_config(&mut w, "poll", "300ms");
    let daemon = start(&w).await;

    let root_ino = inode(&w.root());
    assert!(
        !watched_inodes().contains(&root_ino),
        "poll mode sets no inotify watch"
    );
    let bytes = jpeg("polled");
    w.write("sub/polled.jpg", &bytes);
    let t0 = tokio::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(15), || checksums(&w)
            .contains(&sha1_hex(&bytes)))
        .await,
        "a new file must be found by polling"
    );
    // Poll 500 ms + settle 300 ms + upload, with room for a loaded machine.
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(5), "found after {took:?}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_moved_away_and_back_is_paused_then_resumed_without_losing_a_file() {
    let mut w = World::new(Dialect::Immich).await;
    watch_config(&mut w, "auto", "300ms");
    let daemon = start(&w).await;
    let seed = w.root().join("seed.jpg");
    assert!(
        eventually(Duration::from_secs(10), || w.state_of(&seed).as_deref()
            == Some("done"))
        .await
    );

    let key = format!("root:{}", w.root().display());
    let root_status = |w: &World| -> String {
        w.db()
            .query_row("SELECT value FROM meta WHERE key = ?1", [&key], |r| {
                r.get(0)
            })
            .unwrap_or_default()
    };

    // Unmounted, as far as the daemon can tell.
    let away = w.dir.path().join("photos.away");
    std::fs::rename(w.root(), &away).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || root_status(&w)
            .starts_with("paused"))
        .await,
        "the root must be reported paused: {:?}",
        root_status(&w)
    );
    // Written while the root is away.
    let new = jpeg("while-away");
    std::fs::write(away.join("while-away.jpg"), &new).unwrap();
    std::fs::rename(&away, w.root()).unwrap();

    assert!(
        eventually(Duration::from_secs(15), || checksums(&w)
            .contains(&sha1_hex(&new)))
        .await,
        "the file written while the root was away must arrive once it is back"
    );
    assert!(
        eventually(Duration::from_secs(10), || root_status(&w)
            .starts_with("ok"))
        .await,
        "the root must be reported back: {:?}",
        root_status(&w)
    );
    // Watched again: a file written now arrives by its events.
    let after = jpeg("after");
    w.write("after.jpg", &after);
    assert!(
        eventually(Duration::from_secs(15), || checksums(&w)
            .contains(&sha1_hex(&after)))
        .await
    );

    let missing: i64 = w
        .db()
        .query_row("SELECT COUNT(*) FROM files WHERE missing = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(missing, 0, "a paused root never marks its files missing");
    assert_eq!(w.state_of(&seed).as_deref(), Some("done"));
    assert_eq!(w.server.assets(&w.server.admin_id()).len(), 3);
    assert_eq!(w.server.upload_bodies(), 3, "nothing uploaded twice");
    assert_nothing_deleted(&w);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_root_is_paused_not_deleted() {
    let mut w = World::new(Dialect::Immich).await;
    watch_config(&mut w, "auto", "300ms");
    let daemon = start(&w).await;
    let seed = w.root().join("seed.jpg");
    assert!(
        eventually(Duration::from_secs(10), || w.state_of(&seed).as_deref()
            == Some("done"))
        .await
    );

    let key = format!("root:{}", w.root().display());
    let root_status = |w: &World| -> String {
        w.db()
            .query_row("SELECT value FROM meta WHERE key = ?1", [&key], |r| {
                r.get(0)
            })
            .unwrap_or_default()
    };
    let aside = w.dir.path().join("seed.jpg");
    std::fs::rename(&seed, &aside).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || root_status(&w)
            .contains("empty"))
        .await,
        "an empty root must be reported paused: {:?}",
        root_status(&w)
    );
    std::fs::rename(&aside, &seed).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || root_status(&w)
            .starts_with("ok"))
        .await
    );
    let after = jpeg("after-empty");
    w.write("after.jpg", &after);
    assert!(
        eventually(Duration::from_secs(15), || checksums(&w)
            .contains(&sha1_hex(&after)))
        .await
    );
    assert_eq!(w.state_of(&seed).as_deref(), Some("done"));
    assert_eq!(
        w.server.upload_bodies(),
        2,
        "the seed was not uploaded again"
    );
    assert_nothing_deleted(&w);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_or_deleted_file_is_not_uploaded_again_nor_deleted() {
    let mut w = World::new(Dialect::Immich).await;
    watch_config(&mut w, "auto", "300ms");
    std::fs::create_dir_all(w.root().join("sorted")).unwrap();
    w.write("other.jpg", &jpeg("other"));
    let daemon = start(&w).await;
    let (seed, other) = (w.root().join("seed.jpg"), w.root().join("other.jpg"));
    assert!(
        eventually(Duration::from_secs(15), || {
            w.state_of(&seed).as_deref() == Some("done")
                && w.state_of(&other).as_deref() == Some("done")
        })
        .await
    );
    let bodies = w.server.upload_bodies();
    assert_eq!(bodies, 2);

    let moved = w.root().join("sorted/renamed.jpg");
    std::fs::rename(&seed, &moved).unwrap();
    std::fs::remove_file(&other).unwrap();
    assert!(
        eventually(Duration::from_secs(15), || w.state_of(&moved).as_deref()
            == Some("done"))
        .await,
        "the moved file must be seen under its new name: {:?}",
        w.job_states()
    );
    assert_eq!(w.server.upload_bodies(), bodies, "a move uploads nothing");
    assert_eq!(w.server.assets(&w.server.admin_id()).len(), 2);
    assert_nothing_deleted(&w);
    daemon.stop().await;
}

/// Runs `cmd` in a new user namespace whose inotify watch limit is `limit` (only this
/// process tree is affected). `None` when user namespaces are not available here.
fn in_userns_with_watch_limit(limit: u32) -> Option<std::process::Command> {
    let probe = std::process::Command::new("unshare")
        .args(["-U", "-r", "sh", "-c"])
        .arg(format!("echo {limit} > /proc/sys/user/max_inotify_watches"))
        .stderr(std::process::Stdio::null())
        .status();
    if !matches!(probe, Ok(s) if s.success()) {
        return None;
    }
    let mut c = std::process::Command::new("unshare");
    c.args(["-U", "-r", "sh", "-c"]).arg(format!(
        "echo {limit} > /proc/sys/user/max_inotify_watches && exec \"$0\" \"$@\""
    ));
    Some(c)
}

/// The daemon (the binary) at an inotify watch limit of `limit`, on a root of 40 folders
/// into which 400 files then arrive in 40 new folders.
async fn at_a_watch_limit_the_root_is_polled_said_once_and_nothing_is_lost(limit: u32) {
    let Some(mut cmd) = in_userns_with_watch_limit(limit) else {
        eprintln!("skipped: unprivileged user namespaces are not available to lower the limit");
        return;
    };
    let mut w = World::new(Dialect::Immich).await;
    watch_config(&mut w, "notify", "300ms");
    for d in 0..40 {
        w.write(format!("d{d:02}/IMG_0.jpg"), &jpeg(&format!("limit-{d}")));
    }
    let config = w.write_config();
    let log_path = w.dir.path().join("daemon.log");
    let mut child = cmd
        .arg(env!("CARGO_BIN_EXE_immish-sync"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("start immish-sync");
    let server = &w.server;
    let admin = server.admin_id();
    let first = eventually(Duration::from_secs(60), || {
        server.assets(&admin).len() == 40
    })
    .await;

    // A burst into new and old folders: found by polling, since nothing is watched.
    let mut want = BTreeSet::new();
    if first {
        for i in 0..400 {
            let bytes = jpeg(&format!("limit-burst-{i}"));
            want.insert(sha1_hex(&bytes));
            w.write(format!("d{:02}/new/IMG_{i}.jpg", i % 40), &bytes);
        }
    }
    let all = first && eventually(Duration::from_secs(60), || want.is_subset(&checksums(&w))).await;

    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait for immish-sync");
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(first, "the first scan must upload every file:\n{log}");
    assert!(
        all,
        "every file of the burst must arrive by polling:\n{log}"
    );
    assert!(
        status.success(),
        "a clean stop on SIGTERM: {status:?}\n{log}"
    );
    let warnings = log.matches("inotify watch limit reached").count();
    assert_eq!(warnings, 1, "the limit is said once:\n{log}");
    assert!(
        log.contains(&format!("user.max_inotify_watches={limit}")),
        "{log}"
    );
    assert!(
        log.contains("sysctl fs.inotify.max_user_watches=524288"),
        "{log}"
    );
    assert!(log.contains("60-immish-sync-inotify.conf"), "{log}");
    assert_eq!(server.assets(&admin).len(), 440, "each file once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_inotify_watch_limit_at_start_the_root_is_polled_and_nothing_is_lost() {
    // 41 folders, 20 watches: the first watch set-up fails.
    at_a_watch_limit_the_root_is_polled_said_once_and_nothing_is_lost(20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_inotify_watch_limit_later_the_root_is_polled_and_nothing_is_lost() {
    // 41 folders watched of 60; the new folders of the burst run past the limit.
    at_a_watch_limit_the_root_is_polled_said_once_and_nothing_is_lost(60).await;
}
