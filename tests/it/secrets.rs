//! Secrets (issue 13): a whole `run` at TRACE, with the HTTP, TLS and WebSocket crates' own
//! logs on, once with an API key and once with a password login. Neither the key, nor the
//! password, nor any session token the server handed out appears in anything a user or a
//! log collector sees: the daemon's stdout and stderr, `check-config`, `doctor`, `status`
//! (text and JSON), the control commands and raw control-socket answers, or the bytes of
//! every file in the state directory.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use immish_testserver::{Dialect, TestServer};

use crate::common::{eventually, jpeg, World, BIN};

enum Login {
    Key,
    Password,
}

/// The secrets of one run and where they were looked for.
struct Seen {
    /// (what, text) of every output.
    outputs: Vec<(String, Vec<u8>)>,
}

impl Seen {
    fn add(&mut self, what: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.outputs.push((what.into(), bytes.into()));
    }

    fn assert_none_of(&self, secrets: &BTreeSet<String>) {
        for secret in secrets {
            assert!(
                secret.len() >= 12,
                "a secret too short to look for: {secret:?}"
            );
            for (what, bytes) in &self.outputs {
                let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
                assert!(
                    !found,
                    "a secret ({}…) is in {what}:\n{}",
                    &secret[..4],
                    excerpt(bytes, secret)
                );
            }
        }
    }
}

/// The line holding `secret`, with the secret masked, for the failure message.
fn excerpt(bytes: &[u8], secret: &str) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| l.contains(secret))
        .take(3)
        .map(|l| l.replace(secret, "<SECRET>"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn command(w: &World, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--config")
        .arg(w.config_path())
        .args(args)
        .stdin(Stdio::null())
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "trace");
    c
}

fn output_of(w: &World, args: &[&str], seen: &mut Seen) {
    let out = command(w, args).output().expect("run immish-sync");
    let mut all = out.stdout;
    all.extend_from_slice(&out.stderr);
    seen.add(format!("`{}`", args.join(" ")), all);
}

/// Every file under `dir`, recursively (the database, its WAL, the lock, the socket's peers).
fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => files_under(&p, out),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
}

/// One raw request line on the control socket, and the answer.
fn ask_socket(state: &Path, line: &[u8]) -> Vec<u8> {
    let Ok(mut s) = UnixStream::connect(state.join("control.sock")) else {
        return b"(no socket)".to_vec();
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(line);
    let mut answer = Vec::new();
    let _ = BufReader::new(s).read_until(b'\n', &mut answer);
    answer
}

async fn whole_run_at_trace(login: Login) {
    let server = TestServer::builder()
        .dialect(Dialect::Immich)
        .admin_api_key(format!("key-{}", uuid::Uuid::new_v4().simple()))
        .start()
        .await;
    let w = World::with_server(server);
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let email = "secrets@example.com";
    let user = w.server.add_user(email, &password);
    let mut secrets = BTreeSet::new();
    let (creds, owner) = match login {
        Login::Key => {
            secrets.insert(w.server.api_key());
            (
                format!("api_key = \"{}\"", w.server.api_key()),
                w.server.admin_id(),
            )
        }
        Login::Password => {
            secrets.insert(password.clone());
            (
                format!("email = \"{email}\"\npassword = \"{password}\""),
                user,
            )
        }
    };
    let text = format!(
        "[server]\nurl = \"{}\"\n{creds}\n[state]\ndir = \"{}\"\n\
         [upload]\nretry_initial = \"50ms\"\nretry_max = \"1s\"\n\
         [watch]\nsettle = \"0s\"\n[log]\nlevel = \"trace\"\n[[roots]]\npath = \"{}\"\n",
        w.server.base_url(),
        w.state_dir().display(),
        w.root().display(),
    );
    std::fs::write(w.config_path(), text).unwrap();
    std::fs::set_permissions(w.config_path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    for i in 0..3 {
        w.write(format!("IMG_{i}.jpg"), &jpeg(&format!("secret-{i}")));
    }

    let mut seen = Seen {
        outputs: Vec::new(),
    };
    output_of(&w, &["check-config"], &mut seen);
    output_of(&w, &["-vv", "doctor"], &mut seen);

    let stderr = w.dir.path().join("run.stderr");
    let stdout = w.dir.path().join("run.stdout");
    let mut child = command(&w, &["-vv", "run"])
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("start immish-sync run");
    let mut tokens = BTreeSet::new();
    let collect = |tokens: &mut BTreeSet<String>| tokens.extend(w.server.session_tokens());
    let uploaded = eventually(Duration::from_secs(90), || {
        collect(&mut tokens);
        w.server.asset_count(&owner) >= 3
    })
    .await;
    assert!(
        uploaded,
        "{}",
        std::fs::read_to_string(&stderr).unwrap_or_default()
    );
    // Live events: the socket's handshake carries the credential too.
    assert!(
        w.server
            .wait_for_websockets(1, Duration::from_secs(60))
            .await,
        "the live-event socket connects"
    );
    // A file the watcher sees while running.
    w.write("later/IMG_9.jpg", &jpeg("secret-later"));
    let watched = eventually(Duration::from_secs(60), || {
        collect(&mut tokens);
        w.server.asset_count(&owner) >= 4
    })
    .await;
    assert!(
        watched,
        "{}",
        std::fs::read_to_string(&stderr).unwrap_or_default()
    );

    for args in [
        &["status"][..],
        &["status", "--json"],
        &["pause"],
        &["resume"],
        &["rescan"],
        &["retry"],
        &["mirror"],
        &["diff"],
    ] {
        output_of(&w, args, &mut seen);
    }
    let img = w.root().join("IMG_0.jpg");
    output_of(&w, &["explain", img.to_str().unwrap()], &mut seen);
    for line in [
        &b"{\"op\":\"retry\"}\n"[..],
        b"{\"op\":\"pauses\"}\n",
        b"{\"op\":\"rescan\"}\n",
        b"not json\n",
        b"{\"op\":\"secrets\"}\n",
    ] {
        let answer = ask_socket(&w.state_dir(), line);
        seen.add(
            format!(
                "the control socket's answer to {:?}",
                String::from_utf8_lossy(line)
            ),
            answer,
        );
    }
    collect(&mut tokens);

    // SAFETY: a signal to our own child.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let mut status = None;
    let stopped = eventually(Duration::from_secs(30), || {
        status = child.try_wait().unwrap();
        status.is_some()
    })
    .await;
    if !stopped {
        let _ = child.kill();
    }
    assert!(stopped, "stops on SIGTERM");
    output_of(&w, &["status", "--json"], &mut seen);

    let log = std::fs::read(&stderr).unwrap();
    let text = String::from_utf8_lossy(&log);
    // The run really was at TRACE, with the other crates' own logs in it.
    assert!(text.contains("TRACE"), "not a trace log:\n{text}");
    assert!(
        text.contains("Client handshake") || text.contains("connecting to"),
        "the HTTP and WebSocket crates' own logs are in it"
    );
    seen.add("the daemon's stderr", log);
    seen.add("the daemon's stdout", std::fs::read(&stdout).unwrap());
    let mut files = Vec::new();
    files_under(&w.state_dir(), &mut files);
    assert!(!files.is_empty(), "the state directory holds files");
    for f in files {
        if let Ok(bytes) = std::fs::read(&f) {
            seen.add(format!("state file {}", f.display()), bytes);
        }
    }
    if matches!(login, Login::Password) {
        assert!(!tokens.is_empty(), "the daemon logged in with a session");
    }
    secrets.extend(tokens);
    seen.assert_none_of(&secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_appears_in_no_output_even_at_trace() {
    whole_run_at_trace(Login::Key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_and_its_session_token_appear_in_no_output_even_at_trace() {
    whole_run_at_trace(Login::Password).await;
}
