//! Shared fixtures: a test server, a photo tree in a tempdir, and a config pointing at both.

#![allow(dead_code)]

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use immish_sync::config::{self, Config};
use immish_sync::daemon::{self, ScanSummary, Tuning};
use immish_testserver::{Dialect, TestServer};
use sha1::{Digest, Sha1};
use tokio_util::sync::CancellationToken;

/// A test world: one server, one photo root, one state directory.
pub struct World {
    pub server: TestServer,
    pub dir: tempfile::TempDir,
    /// Extra lines inside the generated `[upload]` section.
    pub upload: String,
    /// Extra config sections appended to the generated config (TOML).
    pub extra: String,
}

impl World {
    pub async fn new(dialect: Dialect) -> World {
        let server = TestServer::start(dialect).await;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("photos")).unwrap();
        World {
            server,
            dir,
            upload: String::new(),
            extra: String::new(),
        }
    }

    /// A world around a server the test built itself (e.g. with another event delay).
    pub fn with_server(server: TestServer) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("photos")).unwrap();
        World {
            server,
            dir,
            upload: String::new(),
            extra: String::new(),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("photos")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// Writes the config file (mode 0600, since it holds the key) and returns its path.
    pub fn write_config(&self) -> PathBuf {
        // A test that sets its own retry backoff in `upload` gets it instead of the fast one.
        let retry = if self.upload.contains("retry_initial") {
            ""
        } else {
            "retry_initial = \"50ms\"\nretry_max = \"1s\"\n"
        };
        let text = format!(
            "[server]\nurl = \"{}\"\napi_key = \"{}\"\n[state]\ndir = \"{}\"\n\
             [upload]\n{retry}{}\n\
             [[roots]]\npath = \"{}\"\n{}",
            self.server.base_url(),
            self.server.api_key(),
            self.state_dir().display(),
            self.upload,
            self.root().display(),
            watch_defaults(&self.extra)
        );
        let path = self.config_path();
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    pub fn config(&self) -> Config {
        let path = self.write_config();
        config::load(&path).unwrap_or_else(|e| panic!("test config must load: {e}"))
    }

    pub fn tuning() -> Tuning {
        Tuning {
            storage_retry: Duration::from_millis(300),
            auth_probe_interval: Duration::from_millis(200),
            capacity_pause: Duration::from_millis(200),
            connect_retry_max: Duration::from_millis(500),
            outage_probe: immish_sync::backoff::Backoff::new(
                Duration::from_millis(500),
                Duration::from_secs(2),
            ),
            alert_check: Duration::from_millis(200),
            progress_every: Duration::from_millis(300),
        }
    }

    /// Runs one `scan` to its end (bounded: a hang fails the test instead of CI).
    pub async fn scan(&self) -> ScanSummary {
        let fut = daemon::scan_with(self.config(), Self::tuning(), CancellationToken::new());
        tokio::time::timeout(Duration::from_secs(120), fut)
            .await
            .expect("scan must finish")
            .unwrap_or_else(|e| panic!("scan failed: {e:#}"))
    }

    /// Writes a file under the root (creating folders) and returns its path.
    pub fn write(&self, rel: impl AsRef<Path>, bytes: &[u8]) -> PathBuf {
        let p = self.root().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// Opens the daemon's state database for assertions.
    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.state_dir().join("state.sqlite3")).unwrap()
    }

    /// Job states per path (lossy for display).
    pub fn job_states(&self) -> Vec<(Vec<u8>, String)> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT f.path, j.state FROM jobs j JOIN files f ON f.id = j.file_id ORDER BY f.path")
            .unwrap();
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
            })
            .unwrap();
        rows.map(|r| r.unwrap()).collect()
    }

    pub fn state_of(&self, path: &Path) -> Option<String> {
        let want = path.as_os_str().as_bytes();
        self.job_states()
            .into_iter()
            .find(|(p, _)| p == want)
            .map(|(_, s)| s)
    }
}

/// A small but real JPEG: SOI, a comment segment carrying `tag` (so every file differs),
/// a minimal JFIF APP0, EOI.
pub fn jpeg(tag: &str) -> Vec<u8> {
    let mut v = vec![0xFF, 0xD8];
    // APP0 JFIF
    v.extend_from_slice(&[
        0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0,
    ]);
    let comment = format!("immish-sync test {tag}");
    let len = (comment.len() + 2) as u16;
    v.extend_from_slice(&[0xFF, 0xFE]);
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(comment.as_bytes());
    // Some payload so files have a realistic-ish size.
    v.extend(std::iter::repeat_n(tag.len() as u8, 4096));
    v.extend_from_slice(&[0xFF, 0xD9]);
    v
}

/// A small MP4: an `ftyp` box, an `mdat` box carrying `tag`, and an (empty) `moov` box
/// after it, where a camera writes it: a whole video by its structure.
pub fn mp4(tag: &str) -> Vec<u8> {
    let mut v = Vec::new();
    let ftyp: &[u8] = b"ftypisom\x00\x00\x02\x00isomiso2avc1mp41";
    v.extend_from_slice(&((ftyp.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(ftyp);
    let payload = format!("immish-sync test video {tag}").repeat(64);
    v.extend_from_slice(&((payload.len() + 8) as u32).to_be_bytes());
    v.extend_from_slice(b"mdat");
    v.extend_from_slice(payload.as_bytes());
    v.extend_from_slice(&8u32.to_be_bytes());
    v.extend_from_slice(b"moov");
    v
}

pub fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(Sha1::digest(bytes))
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A daemon (`run_with`) running in this process against the world's config.
pub struct RunningDaemon {
    pub token: CancellationToken,
    pub handle: tokio::task::JoinHandle<Result<(), daemon::DaemonError>>,
}

impl World {
    /// Starts the daemon and returns at once (readiness is for the caller to poll).
    pub fn start_daemon(&self) -> RunningDaemon {
        let token = CancellationToken::new();
        let handle = tokio::spawn(daemon::run_with(
            self.config(),
            Self::tuning(),
            token.clone(),
        ));
        RunningDaemon { token, handle }
    }
}

impl RunningDaemon {
    /// Stops the daemon and asserts that it stopped cleanly and in time.
    pub async fn stop(self) {
        self.token.cancel();
        let res = tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .expect("the daemon must stop within 20 s")
            .expect("the daemon task must not panic");
        if let Err(e) = res {
            panic!("the daemon must stop without an error: {e:#}");
        }
    }
}

/// The test config's `[watch]`: files written just before a scan are taken at once
/// (`settle = "0s"`) unless a test sets its own `[watch]` section.
fn watch_defaults(extra: &str) -> String {
    if extra.contains("[watch]") {
        extra.to_string()
    } else {
        format!("{extra}\n[watch]\nsettle = \"0s\"\n")
    }
}

/// The daemon's binary, as cargo built it for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_immish-sync");

/// Runs the binary with the world's config and `args`, stdin closed.
pub fn run(w: &World, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--config")
        .arg(w.config_path())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run immish-sync")
}

/// Overwrites the state database in `dir` with garbage, in the files a daemon holds open
/// (its write-ahead log and shared index too, else SQLite goes on from what it cached), as
/// a failing disk or a stray `dd` would leave them.
pub fn garble_db(dir: &Path) {
    for name in ["state.sqlite3-wal", "state.sqlite3-shm", "state.sqlite3"] {
        let path = dir.join(name);
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len > 0 {
            // Over the bytes in place, never truncated first: SQLite maps the `-shm` file,
            // and a mapped page past a file's end is a SIGBUS for the whole test process.
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.write_all(&vec![0x5a; len as usize]).unwrap();
        }
    }
}

/// Breaks the state database in `dir` until `stopped` says its account stopped: a
/// checkpoint between two writes can copy good pages back from the log, so the garbage is
/// written again (and the account given a write, a file in `root`) every 2 s while it
/// goes on. False if it never stopped within `limit`.
pub async fn break_until(
    dir: &Path,
    root: &Path,
    limit: Duration,
    mut stopped: impl FnMut() -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let mut round = 0u32;
    while tokio::time::Instant::now() < deadline {
        if round.is_multiple_of(10) {
            garble_db(dir);
            // The account notices at its next write: a new file gives it one.
            std::fs::write(
                root.join(format!("garble-{round}.jpg")),
                jpeg(&format!("garble {round}")),
            )
            .unwrap();
        }
        if stopped() {
            return true;
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// A daemon that takes configs read again, the way main hands them over on SIGHUP.
pub struct ReloadingDaemon {
    pub daemon: RunningDaemon,
    pub reloads: tokio::sync::mpsc::Sender<daemon::Reloaded>,
}

impl World {
    /// Starts the daemon (`run_reloading`) taking SIGHUPs from [`World::sighup`].
    pub fn start_reloading(&self) -> ReloadingDaemon {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let token = CancellationToken::new();
        let handle = tokio::spawn(daemon::run_reloading(
            self.config(),
            Self::tuning(),
            token.clone(),
            Some(rx),
        ));
        ReloadingDaemon {
            daemon: RunningDaemon { token, handle },
            reloads: tx,
        }
    }

    /// Writes the world's config and hands it to the daemon the way main does on SIGHUP
    /// (`config::load`, its error as text).
    pub async fn sighup(&self, d: &ReloadingDaemon) {
        let path = self.write_config();
        d.reloads
            .send(config::load(&path).map_err(|e| e.to_string()))
            .await
            .expect("the daemon takes configs");
    }
}

impl World {
    /// A user `<who>@example.com` of the server with a key of every permission, and a
    /// folder `<who>` beside the world's root for that user's photos: (user id, key).
    pub fn user_with_root(&self, who: &str) -> (String, String) {
        let user = self
            .server
            .add_user(&format!("{who}@example.com"), &format!("pw-{who}"));
        let key = self.server.create_api_key(&user, &["all"]);
        std::fs::create_dir_all(self.dir.path().join(who)).unwrap();
        (user, key)
    }
}

/// An `[[accounts]]` table and a root of that account.
pub fn account_table(name: &str, key: &str, root: &Path) -> String {
    format!(
        "[[accounts]]\nname = \"{name}\"\napi_key = \"{key}\"\n\
         [[roots]]\npath = \"{}\"\naccount = \"{name}\"\n",
        root.display()
    )
}

/// The address of the daemon's endpoint (`[metrics] listen`), once it has recorded it.
pub async fn endpoint(w: &World) -> std::net::SocketAddr {
    let mut addr = None;
    // Generous: the live record starts after the daemon connected, on a loaded machine.
    let found = eventually(Duration::from_secs(90), || {
        addr = immish_sync::status::read(&w.state_dir())
            .ok()
            .flatten()
            .and_then(|s| s.activity)
            .and_then(|a| a.live.http)
            .and_then(|h| h.parse().ok());
        addr.is_some()
    })
    .await;
    assert!(found, "the daemon never recorded its HTTP address");
    addr.unwrap()
}

/// What the endpoint answers on `path`: its status code and body.
pub async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let r = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .expect("the endpoint answers");
    let code = r.status().as_u16();
    (code, r.text().await.unwrap_or_default())
}
