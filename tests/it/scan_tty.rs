//! Issue 10: `scan` on a terminal shows a progress bar (files, bytes, rate, time left), and
//! nothing of it when its output is not a terminal.

use std::process::{Command, Stdio};

use immish_testserver::Dialect;

use crate::common::{jpeg, run, World, BIN};

async fn world() -> World {
    let w = World::new(Dialect::Immich).await;
    for i in 0..3 {
        w.write(format!("IMG_{i}.jpg"), &jpeg(&format!("tty-{i}")));
    }
    w.write_config();
    w
}

/// Piped, `scan` prints no bar and no escape codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_on_a_pipe_shows_no_bar() {
    let w = world().await;
    let out = run(&w, &["scan"]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert_eq!(w.server.asset_count(&w.server.admin_id()), 3);
    assert!(!all.contains('\x1b') && !all.contains('\r'), "{all:?}");
    assert!(!all.contains("/3 files ["), "no bar: {all}");
}

/// On a terminal (a pty made by util-linux's `script`), `scan` draws the bar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_on_a_terminal_shows_a_progress_bar() {
    let has_script = Command::new("script")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_script {
        eprintln!(
            "\n\n!!! SKIPPED scan_on_a_terminal_shows_a_progress_bar: no `script` \
             (apt-get install util-linux) !!!\n\n"
        );
        return;
    }
    let w = world().await;
    let cmd = format!("'{BIN}' --config '{}' scan", w.config_path().display());
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .output()
        .expect("run script");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert_eq!(w.server.asset_count(&w.server.admin_id()), 3);
    assert!(
        text.contains("/3 files ["),
        "a bar with the files: {text:?}"
    );
    assert!(text.contains(" left"), "the time left: {text:?}");
}
