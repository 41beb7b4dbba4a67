//! Talking to the running daemon (docs/ARCHITECTURE.md#control): `pause`, `resume`,
//! `rescan` and `retry` from the binary reach a daemon at once; a pause persists; SIGHUP
//! reloads the config; `explain` and `scan --dry-run`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use immish_testserver::{Dialect, Failure};

use crate::common::{eventually, jpeg, run, World, BIN};

/// Runs the binary; returns (exit code, stdout + stderr).
fn cli(w: &World, args: &[&str]) -> (Option<i32>, String) {
    let o = run(w, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code(), text)
}

/// Waits for the daemon's control socket (its start-up is done).
async fn socket_ready(w: &World) {
    let sock = w.state_dir().join("control.sock");
    assert!(
        eventually(Duration::from_secs(20), || sock.exists()).await,
        "the daemon listens on {}",
        sock.display()
    );
}

fn uploaded(w: &World) -> usize {
    w.server.assets(&w.server.admin_id()).len()
}

/// Waits until every job of the listed files has been hashed (the daemon saw them) and
/// none is further than `checking`: what a paused agent does with new files.
async fn hashed_and_held(w: &World, files: &[&Path]) -> bool {
    eventually(Duration::from_secs(20), || {
        files
            .iter()
            .all(|f| w.state_of(f).as_deref() == Some("checking"))
    })
    .await
}

/// Pause, then drop files: they are seen and hashed but nothing reaches the server and
/// `status` says paused; `resume` sends them within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_new_files_back_and_resume_sends_them() {
    let w = World::new(Dialect::Immich).await;
    w.write("IMG_0.jpg", &jpeg("before-pause"));
    let d = w.start_daemon();
    socket_ready(&w).await;
    assert!(eventually(Duration::from_secs(20), || uploaded(&w) == 1).await);

    let (code, out) = cli(&w, &["pause"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("uploads are paused"), "{out}");
    assert!(
        out.contains("the running daemon stopped starting uploads"),
        "{out}"
    );
    let a = w.write("IMG_1.jpg", &jpeg("paused-1"));
    let b = w.write("sub/IMG_2.jpg", &jpeg("paused-2"));
    assert!(hashed_and_held(&w, &[&a, &b]).await, "{:?}", w.job_states());
    // The engine had every chance to go on: one more idle round of the watcher.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(uploaded(&w), 1, "nothing is uploaded while paused");
    assert_eq!(w.server.upload_bodies(), 1);

    let (code, out) = cli(&w, &["status"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("paused:       uploads paused by the user since"),
        "{out}"
    );

    let (code, out) = cli(&w, &["resume"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("uploads resumed"), "{out}");
    assert!(
        out.contains("the running daemon is uploading again"),
        "{out}"
    );
    assert!(
        eventually(Duration::from_secs(5), || uploaded(&w) == 3).await,
        "resume sends them within seconds: {:?}",
        w.job_states()
    );
    let (_, out) = cli(&w, &["status"]);
    assert!(!out.contains("paused by the user"), "{out}");
    d.stop().await;
}

/// A pause recorded with no daemon running holds from the daemon's start and across a
/// restart, until `resume`. A stale socket file (a daemon killed with -9) does not stop the
/// next one from listening; the socket is the user's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_persists_across_restarts_until_resume() {
    let w = World::new(Dialect::Immich).await;
    w.write_config();
    let (code, out) = cli(&w, &["pause"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("no daemon is running; it takes effect at the next start"),
        "{out}"
    );
    // What a kill -9 leaves: a socket file nobody listens on.
    let sock = w.state_dir().join("control.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());

    let a = w.write("IMG_1.jpg", &jpeg("persist-1"));
    let d = w.start_daemon();
    // The new daemon replaced the stale socket and answers on it.
    let mut last = String::new();
    let answered = eventually(Duration::from_secs(20), || {
        last = cli(&w, &["pause"]).1;
        last.contains("the running daemon")
    })
    .await;
    assert!(answered, "{last}");
    assert!(last.contains("already"), "{last}");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the control socket is the user's alone");
    assert!(hashed_and_held(&w, &[&a]).await, "{:?}", w.job_states());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(w.server.upload_bodies(), 0, "paused from the first start");
    d.stop().await;

    assert!(!sock.exists(), "a clean stop removes the socket");
    let d = w.start_daemon();
    socket_ready(&w).await;
    let b = w.write("IMG_2.jpg", &jpeg("persist-2"));
    assert!(hashed_and_held(&w, &[&a, &b]).await, "{:?}", w.job_states());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(w.server.upload_bodies(), 0, "still paused after a restart");

    let (code, out) = cli(&w, &["resume"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        eventually(Duration::from_secs(5), || uploaded(&w) == 2).await,
        "{:?}",
        w.job_states()
    );
    d.stop().await;
    assert!(!sock.exists(), "a clean stop removes the socket");
}

/// `pause --root` holds one root back while the other goes on; `status` names it; a path
/// that is not a root is refused (exit 2) naming the roots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_of_one_root_leaves_the_others_going() {
    let mut w = World::new(Dialect::Immich).await;
    let other = w.dir.path().join("phone");
    std::fs::create_dir_all(&other).unwrap();
    w.extra = format!("[[roots]]\npath = \"{}\"\n", other.display());
    w.write_config();
    let d = w.start_daemon();
    socket_ready(&w).await;

    let (code, out) = cli(&w, &["pause", "--root", "/nowhere"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("/nowhere is not a root"), "{out}");
    assert!(out.contains(&other.display().to_string()), "{out}");

    let (code, out) = cli(&w, &["pause", "--root", other.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("uploads from {} are paused", other.display())));
    let held = other.join("IMG_phone.jpg");
    std::fs::write(&held, jpeg("phone")).unwrap();
    let sent = w.write("IMG_cam.jpg", &jpeg("camera"));
    assert!(
        eventually(Duration::from_secs(20), || uploaded(&w) == 1).await,
        "{:?}",
        w.job_states()
    );
    assert!(hashed_and_held(&w, &[&held]).await, "{:?}", w.job_states());
    assert!(
        eventually(Duration::from_secs(5), || w.state_of(&sent).as_deref()
            == Some("done"))
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(uploaded(&w), 1, "the paused root's file stays");
    let (_, out) = cli(&w, &["status"]);
    let line = out
        .lines()
        .find(|l| l.contains(&other.display().to_string()))
        .unwrap_or("");
    assert!(line.contains("uploads paused by the user since"), "{out}");

    let (code, out) = cli(&w, &["resume", "--root", other.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        eventually(Duration::from_secs(5), || uploaded(&w) == 2).await,
        "{:?}",
        w.job_states()
    );
    d.stop().await;
}

/// A file failed by the server goes up within seconds of `retry` (the old command only
/// wrote the queue and waited for the engine's 30 s idle look).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_reaches_the_daemon_at_once() {
    let mut w = World::new(Dialect::Immich).await;
    w.extra = "[watch]\nmode = \"off\"\nsettle = \"0s\"\n".into();
    let f = w.write("IMG_1.jpg", &jpeg("retry"));
    w.write_config();
    w.server.fail_with("POST /assets", 1, Failure::nginx_413());
    let d = w.start_daemon();
    socket_ready(&w).await;
    assert!(
        eventually(Duration::from_secs(20), || w.state_of(&f).as_deref()
            == Some("failed"))
        .await,
        "{:?}",
        w.job_states()
    );
    // Let the engine settle into its idle wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(uploaded(&w), 0);

    let (code, out) = cli(&w, &["retry"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1 files queued again"), "{out}");
    assert!(
        out.contains("the running daemon is taking them now"),
        "{out}"
    );
    // Generous, and far below the 30 s idle look the old `retry` depended on.
    assert!(
        eventually(Duration::from_secs(5), || uploaded(&w) == 1).await,
        "{:?}",
        w.job_states()
    );
    d.stop().await;
}

/// `rescan` walks the roots now: with watching off and an hour between scans, a file
/// dropped after the first walk goes up within seconds of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescan_walks_now() {
    let mut w = World::new(Dialect::Immich).await;
    w.extra = "[scan]\ninterval = \"1h\"\n[watch]\nmode = \"off\"\nsettle = \"0s\"\n".into();
    w.write("IMG_0.jpg", &jpeg("first"));
    w.write_config();
    let d = w.start_daemon();
    socket_ready(&w).await;
    assert!(eventually(Duration::from_secs(20), || uploaded(&w) == 1).await);
    w.write("IMG_1.jpg", &jpeg("later"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(uploaded(&w), 1, "nothing watches");

    let (code, out) = cli(&w, &["rescan", "--root", w.root().to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("is walking"), "{out}");
    assert!(
        eventually(Duration::from_secs(5), || uploaded(&w) == 2).await,
        "{:?}",
        w.job_states()
    );
    d.stop().await;
    let (code, out) = cli(&w, &["rescan"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("no daemon is running"), "{out}");
}

/// A `run` process of the binary, its log in a file.
struct Daemon {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(w: &World) -> Daemon {
        let log = w.dir.path().join("daemon.log");
        let child = Command::new(BIN)
            .arg("--config")
            .arg(w.config_path())
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .env("NO_COLOR", "1")
            .spawn()
            .expect("start immish-sync run");
        Daemon { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: a signal to our own child.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as libc::pid_t, sig) },
            0
        );
    }

    async fn stop(mut self) {
        self.signal(libc::SIGTERM);
        let mut status = None;
        let stopped = eventually(Duration::from_secs(20), || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        })
        .await;
        if !stopped {
            let _ = self.child.kill();
        }
        assert!(stopped, "stops on SIGTERM: {}", self.log());
        assert!(status.unwrap().success(), "{}", self.log());
    }
}

/// SIGHUP reads the config again: a broken one is refused naming the key (the old roots
/// keep working); a new root is watched and walked at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_a_root_and_refuses_a_broken_config() {
    let mut w = World::new(Dialect::Immich).await;
    w.write("IMG_0.jpg", &jpeg("hup-0"));
    w.write_config();
    let d = Daemon::start(&w);
    socket_ready(&w).await;
    assert!(
        eventually(Duration::from_secs(20), || uploaded(&w) == 1).await,
        "{}",
        d.log()
    );

    // A typo: refused, with the file, line and key in the log.
    let good = std::fs::read_to_string(w.config_path()).unwrap();
    std::fs::write(w.config_path(), format!("{good}\n[hash]\nconcurency = 4\n")).unwrap();
    d.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(10), || d.log().contains("refused")).await,
        "{}",
        d.log()
    );
    let log = d.log();
    let refused = log.lines().find(|l| l.contains("refused")).unwrap();
    assert!(refused.contains("concurency"), "names the key: {refused}");
    assert!(
        refused.contains(&w.config_path().display().to_string()),
        "names the file: {refused}"
    );
    w.write("IMG_1.jpg", &jpeg("hup-1"));
    assert!(
        eventually(Duration::from_secs(10), || uploaded(&w) == 2).await,
        "the running config still works: {}",
        d.log()
    );

    // A second root: watched and walked without a restart.
    let phone = w.dir.path().join("phone");
    std::fs::create_dir_all(&phone).unwrap();
    std::fs::write(phone.join("IMG_old.jpg"), jpeg("hup-old")).unwrap();
    w.extra = format!("[[roots]]\npath = \"{}\"\n", phone.display());
    w.write_config();
    d.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(10), || uploaded(&w) == 3).await,
        "the new root's file is walked: {}",
        d.log()
    );
    assert!(d.log().contains("roots added"), "{}", d.log());
    std::fs::write(phone.join("IMG_new.jpg"), jpeg("hup-new")).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || uploaded(&w) == 4).await,
        "the new root is watched: {}",
        d.log()
    );
    assert!(!d.log().contains("panicked"), "{}", d.log());
    d.stop().await;
}

/// `explain PATH` gives one answer per case, exit 0 only for a file on the server, and
/// works while the daemon runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_answers_why_a_file_is_not_on_the_server() {
    let mut w = World::new(Dialect::Immich).await;
    w.upload = "concurrency = 1".into();
    w.extra = "[watch]\nmode = \"off\"\nsettle = \"0s\"\n".into();
    // `[[roots]]` keys go right after the root's path: the exclude pattern is the root's.
    let failed = w.write("IMG_fail.jpg", &jpeg("explain-fail"));
    w.write_config();
    let text = std::fs::read_to_string(w.config_path()).unwrap().replace(
        &format!("path = \"{}\"\n", w.root().display()),
        &format!(
            "path = \"{}\"\nexclude = [\"skip/**\"]\n",
            w.root().display()
        ),
    );
    std::fs::write(w.config_path(), text).unwrap();
    w.server.fail_with("POST /assets", 1, Failure::nginx_413());
    let cfg = immish_sync::config::load(&w.config_path()).unwrap();
    let scan = |cfg: immish_sync::config::Config| {
        immish_sync::daemon::scan_with(
            cfg,
            World::tuning(),
            tokio_util::sync::CancellationToken::new(),
        )
    };
    scan(cfg.clone()).await.unwrap();
    let ok = w.write("IMG_ok.jpg", &jpeg("explain-ok"));
    let hidden = w.write(".secret/IMG_h.jpg", &jpeg("explain-hidden"));
    let skipped = w.write("skip/IMG_s.jpg", &jpeg("explain-skip"));
    let text_file = w.write("notes.txt", b"not a photo");
    scan(cfg.clone()).await.unwrap();
    let unseen = w.write("IMG_new.jpg", &jpeg("explain-new"));
    let explain = |p: &Path| cli(&w, &["explain", p.to_str().unwrap()]);

    let (code, out) = explain(&ok);
    assert_eq!(code, Some(0), "{out}");
    let id = &w.server.assets(&w.server.admin_id())[0].id;
    assert!(out.contains("on the server: uploaded as asset"), "{out}");
    assert!(out.contains(id.as_str()), "names the asset {id}: {out}");

    let (code, out) = explain(&failed);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("failed"), "{out}");
    assert!(out.contains("413"), "the last error: {out}");
    assert!(out.contains("immish-sync retry"), "{out}");

    let (code, out) = explain(&hidden);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("excluded: hidden"), "{out}");

    let (code, out) = explain(&skipped);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("exclude = \"skip/**\""),
        "names the pattern: {out}"
    );

    let (code, out) = explain(&text_file);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("not a photo or video type"), "{out}");

    let (code, out) = explain(&unseen);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("not seen yet"), "{out}");

    let elsewhere = w.dir.path().join("IMG_elsewhere.jpg");
    std::fs::write(&elsewhere, jpeg("elsewhere")).unwrap();
    let (code, out) = explain(&elsewhere);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("not under any root"), "{out}");

    // While the daemon runs (and holds the lock), with the agent paused.
    let (code, out) = cli(&w, &["pause"]);
    assert_eq!(code, Some(0), "{out}");
    let d = w.start_daemon();
    socket_ready(&w).await;
    let (code, out) = explain(&ok);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        eventually(Duration::from_secs(20), || w.state_of(&unseen).as_deref()
            == Some("checking"))
        .await
    );
    let (code, out) = explain(&unseen);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("queued (checking"), "{out}");
    assert!(out.contains("paused by the user"), "{out}");
    d.stop().await;
}

/// `scan --dry-run` says what a backup would send, per root, and sends nothing: no upload
/// reaches the server, no state is created or changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_reports_counts_and_sends_nothing() {
    let mut w = World::new(Dialect::Immich).await;
    w.extra = "[watch]\nmode = \"off\"\nsettle = \"0s\"\n".into();
    let (a, b) = (jpeg("dry-a"), jpeg("dry-b"));
    w.write("IMG_a.jpg", &a);
    w.write("sub/IMG_b.jpg", &b);
    w.write("notes.txt", b"not a photo");
    w.write(".hidden/IMG_h.jpg", &jpeg("dry-h"));
    w.write_config();

    let (code, out) = cli(&w, &["scan", "--dry-run", "--list"]);
    assert_eq!(code, Some(0), "{out}");
    let root = w.root().display().to_string();
    let line = out.lines().find(|l| l.starts_with("root ")).unwrap_or("");
    assert!(
        line.starts_with(&format!(
            "root {root}: would upload 2 files ({})",
            immish_sync::human::size((a.len() + b.len()) as u64)
        )),
        "{out}"
    );
    assert!(
        line.contains("excluded 1 files, 1 folders not entered"),
        "{out}"
    );
    assert!(
        out.contains(&format!("  {root}/sub/IMG_b.jpg")),
        "--list: {out}"
    );
    assert_eq!(w.server.upload_bodies(), 0, "nothing sent");
    assert!(!w.state_dir().exists(), "no state created");

    // Another client put `d` on the server; a real scan sends `a` and `b` and its pull
    // mirrors `d`. Then `c` is new and `d` is local too.
    let d = jpeg("dry-d");
    w.server.insert(
        &w.server.admin_id(),
        immish_testserver::NewAsset::new("IMG_d.jpg", d.clone()),
    );
    let (code, out) = cli(&w, &["scan"]);
    assert_eq!(code, Some(0), "{out}");
    let uploads = w.server.upload_bodies();
    assert_eq!(uploads, 2);
    w.write("IMG_c.jpg", &jpeg("dry-c"));
    w.write("IMG_d.jpg", &d);
    let jobs = w.job_states();

    let (code, out) = cli(&w, &["scan", "--dry-run"]);
    assert_eq!(code, Some(0), "{out}");
    let line = out.lines().find(|l| l.starts_with("root ")).unwrap_or("");
    assert!(line.contains("would upload 1 files"), "c: {out}");
    assert!(line.contains("already backed up 2"), "a, b: {out}");
    assert!(
        line.contains("already on the server 1"),
        "d, by the mirror: {out}"
    );
    assert_eq!(w.server.upload_bodies(), uploads, "nothing sent");
    assert_eq!(w.job_states(), jobs, "the queue is as it was");
}
