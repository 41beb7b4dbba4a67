//! `immish-sync init` and `immish-sync doctor`, the real binary against the test server.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use immish_testserver::Dialect;

use crate::common::World;

const BIN: &str = env!("CARGO_BIN_EXE_immish-sync");

/// Runs the binary with `stdin` as its input (not a terminal, so nothing is asked).
fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("IMMISH_SYNC_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run immish-sync");
    let mut input = child.stdin.take().unwrap();
    // A command that stops before reading its input (an existing config) closes the pipe
    // first: that is not the test's failure.
    if let Err(e) = input.write_all(stdin.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// `init` with every value as a flag: `config/` and its parents do not exist yet.
fn init_args<'a>(w: &'a World, config: &'a str, url: &'a str, state: &'a str) -> Vec<String> {
    vec![
        "init".into(),
        "--config".into(),
        config.into(),
        "--url".into(),
        url.into(),
        "--root".into(),
        w.root().display().to_string(),
        "--state-dir".into(),
        state.into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_checks_the_key_then_writes_a_private_config_that_loads() {
    let w = World::new(Dialect::Immich).await;
    let config = w.dir.path().join("etc/immish-sync/config.toml");
    let (cfg, state) = (
        config.display().to_string(),
        w.state_dir().display().to_string(),
    );
    let mut args = init_args(&w, &cfg, &w.server.base_url(), &state);
    args.extend(["--api-key-file".into(), "-".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&args, &format!("{}\n", w.server.api_key()));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");

    assert_eq!(mode(&config), 0o600, "the config is private");
    let key_file = config.with_file_name("api-key");
    assert_eq!(mode(&key_file), 0o600, "the key file is private");
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap().trim(),
        w.server.api_key()
    );
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(
        !written.contains(&w.server.api_key()),
        "the key is referenced, not inline: {written}"
    );
    let loaded = immish_sync::config::load(&config).expect("the written config loads");
    assert_eq!(loaded.roots[0].path, w.root());
    assert_eq!(loaded.state.dir, w.state_dir());
    match &loaded.server.credentials {
        immish_sync::config::Credentials::ApiKey(k) => assert_eq!(k.expose(), w.server.api_key()),
        other => panic!("expected the API key, got {other:?}"),
    }

    for next in [
        "check-config",
        "immish-sync",
        "run",
        "service install",
        "doctor",
    ] {
        assert!(
            stdout.contains(next),
            "names `{next}` as a next step: {stdout}"
        );
    }
    assert!(
        stdout.contains(&cfg),
        "the next steps carry --config: {stdout}"
    );
    // The default test key has `all`: the trade-off is said, here.
    assert!(stdout.contains("live events"), "{stdout}");
    assert!(!stdout.contains(&w.server.api_key()) && !stderr.contains(&w.server.api_key()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_references_an_existing_key_file_as_it_is() {
    let w = World::new(Dialect::Immich).await;
    let key = w.dir.path().join("my-key");
    std::fs::write(&key, w.server.api_key()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = w.config_path();
    let (cfg, state) = (
        config.display().to_string(),
        w.state_dir().display().to_string(),
    );
    let mut args = init_args(&w, &cfg, &w.server.base_url(), &state);
    args.extend(["--api-key-file".into(), key.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&args, "");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(std::fs::read_to_string(&config)
        .unwrap()
        .contains(&key.display().to_string()));
    assert!(!config.with_file_name("api-key").exists(), "no copy made");
    immish_sync::config::load(&config).expect("loads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_with_a_refused_key_exits_3_and_writes_nothing() {
    let w = World::new(Dialect::Immich).await;
    let config = w.dir.path().join("new/config.toml");
    let (cfg, state) = (
        config.display().to_string(),
        w.state_dir().display().to_string(),
    );
    let mut args = init_args(&w, &cfg, &w.server.base_url(), &state);
    args.extend(["--api-key-file".into(), "-".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&args, "not-a-key-the-server-knows\n");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    assert!(stderr.contains("refused the API key"), "{stderr}");
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert!(!w.dir.path().join("new").exists(), "not even the folder");
    assert!(!w.state_dir().exists());

    // A key without a permission the daemon needs is refused the same way, naming it.
    let narrow = w
        .server
        .create_api_key(&w.server.admin_id(), &["asset.read", "user.read"]);
    let out = run(&args, &narrow);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("asset.upload"), "{stderr}");
    assert!(!w.dir.path().join("new").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_keeps_an_existing_config_unless_forced() {
    let w = World::new(Dialect::Immich).await;
    let config = w.config_path();
    std::fs::write(&config, "# mine\n").unwrap();
    let (cfg, state) = (
        config.display().to_string(),
        w.state_dir().display().to_string(),
    );
    let mut args = init_args(&w, &cfg, &w.server.base_url(), &state);
    args.extend(["--api-key-file".into(), "-".into()]);
    let key = format!("{}\n", w.server.api_key());

    let plain: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&plain, &key);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("already exists") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# mine\n");
    assert!(!config.with_file_name("api-key").exists());

    args.push("--force".into());
    let forced: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&forced, &key);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert_ne!(std::fs::read_to_string(&config).unwrap(), "# mine\n");
    assert_eq!(mode(&config), 0o600);
    immish_sync::config::load(&config).expect("the replacement loads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_without_a_terminal_names_the_missing_flag() {
    let w = World::new(Dialect::Immich).await;
    let cfg = w.config_path().display().to_string();
    let out = run(
        &["init", "--config", &cfg, "--url", &w.server.base_url()],
        "",
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--api-key-file"), "{stderr}");
    assert!(!w.config_path().exists());
}

fn doctor(w: &World) -> (Option<i32>, String) {
    let cfg = w.config_path().display().to_string();
    let out = run(&["doctor", "--config", &cfg], "");
    let (stdout, stderr) = text(&out);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stdout.contains('\x1b'), "no colour into a pipe: {stdout}");
    (out.status.code(), stdout)
}

fn lines_at<'a>(report: &'a str, level: &str) -> Vec<&'a str> {
    report
        .lines()
        .filter(|l| l.starts_with(&format!("{level} ")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_on_a_good_setup_fails_nothing_and_exits_0() {
    let w = World::new(Dialect::Immich).await;
    w.write_config();
    let (code, report) = doctor(&w);
    assert_eq!(code, Some(0), "{report}");
    assert!(lines_at(&report, "fail").is_empty(), "{report}");
    for subject in [
        "config:", "server:", "key:", "clock:", "state ", "root ", "daemon:",
    ] {
        assert!(
            report.lines().any(|l| l.contains(subject)),
            "a line about {subject}: {report}"
        );
    }
    let server = report.lines().find(|l| l.contains("server:")).unwrap();
    assert!(server.starts_with("ok "), "{server}");
    assert!(
        server.contains("Immich dialect") && server.contains("version"),
        "{server}"
    );
    assert!(
        report.contains("ok    clock:"),
        "the test server's clock is ours: {report}"
    );
    // Said once, as info, not as a warning.
    let advice: Vec<_> = report.lines().filter(|l| l.contains("`all`")).collect();
    assert_eq!(advice.len(), 1, "{report}");
    assert!(advice[0].starts_with("info "), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_a_wrong_key_and_exits_1() {
    let w = World::new(Dialect::Immich).await;
    w.write_config();
    let text = std::fs::read_to_string(w.config_path()).unwrap();
    let text = text.replace(&w.server.api_key(), "revoked-key-0000");
    std::fs::write(w.config_path(), text).unwrap();
    let (code, report) = doctor(&w);
    assert_eq!(code, Some(1), "{report}");
    let fails = lines_at(&report, "fail");
    assert!(
        fails
            .iter()
            .any(|l| l.contains("key:") && l.contains("refused the API key") && l.contains("fix:")),
        "{report}"
    );
    assert!(
        !report.contains("revoked-key-0000"),
        "the key is never shown"
    );
    // The local checks still run.
    assert!(report.contains("root "), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_a_missing_root_and_a_file_given_as_root() {
    let mut w = World::new(Dialect::Immich).await;
    let missing = w.dir.path().join("not-mounted");
    let file = w.dir.path().join("a-file.jpg");
    std::fs::write(&file, b"x").unwrap();
    w.extra = format!(
        "[[roots]]\npath = \"{}\"\n[[roots]]\npath = \"{}\"\n",
        missing.display(),
        file.display()
    );
    w.write_config();
    let (code, report) = doctor(&w);
    assert_eq!(code, Some(1), "{report}");
    let fails = lines_at(&report, "fail");
    assert!(
        fails
            .iter()
            .any(|l| l.contains(&format!("root {}: not found", missing.display()))),
        "{report}"
    );
    assert!(
        fails
            .iter()
            .any(|l| l.contains(&format!("root {}: is not a directory", file.display()))),
        "{report}"
    );
    assert!(
        report.contains(&format!("ok    root {}: readable", w.root().display())),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_on_a_broken_config_exits_2_naming_the_key() {
    let mut w = World::new(Dialect::Immich).await;
    w.extra = "[hash]\nconcurency = 4\n".into();
    w.write_config();
    let (code, report) = doctor(&w);
    assert_eq!(code, Some(2), "{report}");
    let fail = lines_at(&report, "fail");
    assert!(
        fail.len() == 1 && fail[0].contains("concurency") && fail[0].contains("config.toml:"),
        "{report}"
    );
}

/// `doctor | head -1`: the reader goes away after a line; no panic, no error message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_stops_quietly_when_the_pipe_closes() {
    let w = World::new(Dialect::Immich).await;
    w.write_config();
    // The server checks come after the reader has gone, so the next line meets a closed
    // pipe (and does not just fill the pipe's buffer).
    w.server
        .delay("GET /api-keys/me", std::time::Duration::from_millis(500));
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(w.config_path())
        .arg("doctor")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is dropped here, before the server checks print.
    assert!(first.starts_with("ok    config:"), "{first}");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
