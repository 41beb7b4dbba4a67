//! The `immish-sync` binary as a user meets it: config errors, status, exit codes.

use std::process::{Command, Output, Stdio};

use immish_testserver::{Dialect, Failure};

use crate::common::{jpeg, run, World, BIN};

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// docs/RELIABILITY.md#typos-and-wrong-values: a typo'd key is named with its file and line,
/// exit code 2, nothing started (no state directory created).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typo_in_the_config_names_file_line_and_key_and_exits_2() {
    let mut w = World::new(Dialect::Immich).await;
    w.extra = "[hash]\nconcurency = 4\n".into();
    w.write_config();
    let out = run(&w, &["scan"]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let path = w.config_path().display().to_string();
    assert!(err.contains(&path), "names the file: {err}");
    assert!(err.contains("concurency"), "names the key: {err}");
    let line = std::fs::read_to_string(w.config_path())
        .unwrap()
        .lines()
        .position(|l| l.starts_with("concurency"))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!(":{line}:")),
        "names line {line}: {err}"
    );
    assert!(!w.state_dir().exists(), "nothing started");
}

/// A key without `asset.upload` is refused at connect, naming the permission (exit 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_missing_a_permission_is_named_at_start() {
    let w = World::new(Dialect::Immich).await;
    let key = w
        .server
        .create_api_key(&w.server.admin_id(), &["asset.read", "user.read"]);
    w.write("IMG_1.jpg", &jpeg("perm"));
    let cfg = format!(
        "[server]\nurl = \"{}\"\napi_key = \"{key}\"\n[state]\ndir = \"{}\"\n[[roots]]\npath = \"{}\"\n",
        w.server.base_url(),
        w.state_dir().display(),
        w.root().display()
    );
    std::fs::write(w.config_path(), cfg).unwrap();
    std::fs::set_permissions(
        w.config_path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let out = run(&w, &["scan"]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("asset.upload"), "{err}");
    assert!(
        !err.contains(&key),
        "the key never appears in a message: {err}"
    );
    assert_eq!(w.server.upload_bodies(), 0);
}

/// `scan` exits non-zero and lists the file that failed; `status` shows the counts and the
/// reason, and `retry` queues it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_counts_and_the_reason_of_a_failure() {
    let mut w = World::new(Dialect::Immich).await;
    w.upload = "concurrency = 1".into();
    for i in 0..3 {
        w.write(format!("IMG_{i}.jpg"), &jpeg(&format!("status-{i}")));
    }
    w.write_config();
    w.server.fail_with("POST /assets", 1, Failure::nginx_413());

    let out = run(&w, &["scan"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("NOT backed up: 1 failed"), "{stdout}");
    assert!(stdout.contains("413"), "{stdout}");

    let out = run(&w, &["status"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("daemon:       not running"), "{stdout}");
    let done = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("done"))
        .unwrap_or("");
    assert!(done.ends_with(" 2"), "{stdout}");
    let failed = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("failed"))
        .unwrap_or("");
    assert!(failed.ends_with(" 1"), "{stdout}");
    assert!(
        stdout.contains("client_max_body_size"),
        "the reason names the proxy setting: {stdout}"
    );

    let out = run(&w, &["retry"]);
    assert!(out.status.success());
    let out = run(&w, &["scan"]);
    let (stdout, _) = text(&out);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(w.server.assets(&w.server.admin_id()).len(), 3);
}

/// `status` reads the state while a daemon holds it, and says that one is running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_works_while_the_daemon_runs() {
    let mut w = World::new(Dialect::Immich).await;
    w.extra = "[watch]\nmode = \"off\"\nsettle = \"0s\"\n".into();
    w.write("IMG_1.jpg", &jpeg("running"));
    let d = w.start_daemon();
    let (server, admin) = (&w.server, w.server.admin_id());
    assert!(
        crate::common::eventually(std::time::Duration::from_secs(20), || server
            .assets(&admin)
            .len()
            == 1)
        .await
    );
    // The asset is on the server as soon as its body arrived; the daemon records the backup
    // only after verifying it, so `status` may say "never" for a moment: ask until it doesn't.
    let mut out = run(&w, &["status"]);
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while text(&out).0.contains("last backup:  never") && std::time::Instant::now() < give_up {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        out = run(&w, &["status"]);
    }
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains(&format!(
            "daemon:       running (pid {})",
            std::process::id()
        )),
        "{stdout}"
    );
    assert!(stdout.contains("last backup:  "), "{stdout}");
    assert!(!stdout.contains("last backup:  never"), "{stdout}");
    d.stop().await;
    let out = run(&w, &["status"]);
    assert!(text(&out).0.contains("daemon:       not running"));
}

/// Issue 13 §5: `url = "127.0.0.1:2284"` passed `check-config --offline` and was then
/// silently taken as https. It is a config error (exit 2) naming the file, the line, the key
/// and both ways to write it.
#[test]
fn check_config_offline_refuses_a_url_without_a_scheme() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[server]\nurl = \"127.0.0.1:2284\"\napi_key = \"k\"\n[[roots]]\npath = \"/srv/photos\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["check-config", "--offline"])
        .stdin(Stdio::null())
        .output()
        .expect("run immish-sync");
    let (stdout, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{err}");
    assert!(
        err.contains(&format!("{}:2:1: server.url:", config.display())),
        "names the file, line and key: {err}"
    );
    assert!(
        err.contains("http://127.0.0.1:2284") && err.contains("https://127.0.0.1:2284"),
        "names both choices: {err}"
    );
}
