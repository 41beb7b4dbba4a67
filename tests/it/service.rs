//! Under a service manager: the sd_notify messages the real binary sends to a
//! `NOTIFY_SOCKET` this test listens on, the watchdog that stops when a loop stalls, the log
//! format for journald and pipes, and the units `service install` writes.

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use immish_testserver::{Dialect, TestServer};

use crate::common::jpeg;

const BIN: &str = env!("CARGO_BIN_EXE_immish-sync");
const KEY: &str = "service-test-key";
/// `WatchdogSec=4s`: pings every 2 s. Several seconds, as a real unit has (60 s): a loaded
/// test machine must not make a healthy loop look stalled.
const WATCHDOG_USEC: &str = "4000000";
/// Over this span a live daemon pings at least twice (it pings every half timeout).
const PING_SPAN: Duration = Duration::from_secs(6);

/// A photo root, a state dir and a config for a server on `port` (which may not be up).
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    fn new(port: u16) -> Setup {
        Setup::with(port, "")
    }

    /// [`Setup::new`] with `extra` appended to the config (a `[metrics]` section).
    fn with(port: u16, extra: &str) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let photos = dir.path().join("photos");
        std::fs::create_dir_all(&photos).unwrap();
        std::fs::write(photos.join("a.jpg"), jpeg("service-a")).unwrap();
        let config = dir.path().join("config.toml");
        let text = format!(
            "[server]\nurl = \"http://127.0.0.1:{port}\"\napi_key = \"{KEY}\"\n\
             [state]\ndir = \"{}\"\n[watch]\nsettle = \"0s\"\n{extra}[[roots]]\npath = \"{}\"\n",
            dir.path().join("state").display(),
            photos.display()
        );
        std::fs::write(&config, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
        Setup { dir, config }
    }

    /// Starts `immish-sync run` with `NOTIFY_SOCKET` at a socket this test reads.
    fn run_notified(&self, env: &[(&str, &str)]) -> (Child, Notifications) {
        let path = self.dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        // systemd sets WATCHDOG_PID to the service's pid, and sd_notify accepts the watchdog
        // only for that pid: a shell that `exec`s the daemon knows its pid beforehand.
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("WATCHDOG_PID=$$ exec \"$0\" --config \"$1\" run")
            .arg(BIN)
            .arg(&self.config)
            .env("NOTIFY_SOCKET", &path)
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start immish-sync");
        (
            child,
            Notifications {
                socket,
                seen: Vec::new(),
            },
        )
    }
}

/// What arrived on the notify socket, in order, one datagram's lines each.
struct Notifications {
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl Notifications {
    /// Reads datagrams until one has a line for which `want` holds, or `within` passes.
    fn wait_for(&mut self, within: Duration, want: impl Fn(&str) -> bool) -> Option<String> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            let mut buf = [0u8; 4096];
            if let Ok(n) = self.socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                for line in text.lines() {
                    self.seen.push(line.to_owned());
                    if want(line) {
                        return Some(line.to_owned());
                    }
                }
            }
        }
        None
    }

    /// Counts `WATCHDOG=1` over `span`.
    fn count_pings(&mut self, span: Duration) -> usize {
        let before = self.pings();
        let _ = self.wait_for(span, |_| false);
        self.pings() - before
    }

    fn pings(&self) -> usize {
        self.seen.iter().filter(|l| *l == "WATCHDOG=1").count()
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().unwrap().port()
}

fn sigterm(child: &Child) {
    // SAFETY: kill(2) on a child this test started and has not reaped.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0, "SIGTERM");
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// READY=1 comes while the server is still down (so before any upload is possible),
/// STATUS= says since when it waits; once the server is up the file goes up, the watchdog
/// is fed repeatedly, and SIGTERM brings STOPPING=1 and a clean exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_comes_before_the_server_then_status_pings_and_stopping() {
    let port = free_port();
    let s = Setup::new(port);
    let (mut child, mut n) = s.run_notified(&[("WATCHDOG_USEC", WATCHDOG_USEC)]);

    let ready = n.wait_for(Duration::from_secs(20), |l| l == "READY=1");
    assert!(
        ready.is_some(),
        "READY=1 with the server down: {:?}",
        n.seen
    );
    let waiting = n.wait_for(Duration::from_secs(5), |l| {
        l.starts_with("STATUS=waiting for the server since ")
    });
    assert!(waiting.is_some(), "a STATUS= waiting line: {:?}", n.seen);
    // Waiting for the server is waiting on purpose: the daemon is alive.
    assert!(n.count_pings(PING_SPAN) >= 2, "{:?}", n.seen);

    let server = TestServer::builder()
        .dialect(Dialect::Immich)
        .bind(([127, 0, 0, 1], port).into())
        .admin_api_key(KEY)
        .start()
        .await;
    assert_eq!(server.asset_count(&server.admin_id()), 0);
    let connected = n.wait_for(Duration::from_secs(30), |l| {
        l.starts_with("STATUS=connected to ")
    });
    assert!(connected.is_some(), "{:?}", n.seen);
    let uploaded = n.wait_for(Duration::from_secs(30), |l| {
        l.starts_with("STATUS=") && l.contains("uploaded 1 ")
    });
    assert!(uploaded.is_some(), "a progress line: {:?}", n.seen);
    assert_eq!(server.asset_count(&server.admin_id()), 1);
    assert!(n.count_pings(PING_SPAN) >= 2, "{:?}", n.seen);

    sigterm(&child);
    let stopping = n.wait_for(Duration::from_secs(10), |l| l == "STOPPING=1");
    assert!(stopping.is_some(), "STOPPING=1 on SIGTERM: {:?}", n.seen);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "clean exit: {status:?}"
    );
}

/// A loop whose thread blocks for good (the debug-build hook stalls the real watcher loop
/// at a tick) stops the watchdog pings, while the runtime itself goes on; the status says
/// which loop.
#[cfg(debug_assertions)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_loop_stops_the_watchdog_pings() {
    let server = TestServer::builder()
        .dialect(Dialect::Immich)
        .admin_api_key(KEY)
        .start()
        .await;
    let s = Setup::new(server.addr().port());
    let (mut child, mut n) = s.run_notified(&[
        ("WATCHDOG_USEC", WATCHDOG_USEC),
        ("IMMISH_SYNC_TEST_STALL", "watcher:6"),
    ]);
    assert!(
        n.wait_for(Duration::from_secs(20), |l| l == "READY=1")
            .is_some(),
        "{:?}",
        n.seen
    );
    // Alive before the stall...
    assert!(n
        .wait_for(Duration::from_secs(5), |l| l == "WATCHDOG=1")
        .is_some());
    let stalled = n.wait_for(Duration::from_secs(60), |l| {
        l.starts_with("STATUS=stalled: ") && l.contains("watcher")
    });
    assert!(stalled.is_some(), "the stalled loop named: {:?}", n.seen);
    // ...and no ping after it, over several watchdog periods.
    assert_eq!(n.count_pings(PING_SPAN * 2), 0, "{:?}", n.seen);
    let _ = child.kill();
    let _ = child.wait();
}

/// The address the daemon's HTTP endpoint listens on, once it has recorded it.
#[cfg(debug_assertions)]
fn endpoint(state: &Path) -> Option<std::net::SocketAddr> {
    immish_sync::status::read(state)
        .ok()
        .flatten()
        .and_then(|s| s.activity)
        .and_then(|a| a.live.http)
        .and_then(|h| h.parse().ok())
}

/// `GET /healthz`: the status code and the body.
#[cfg(debug_assertions)]
async fn healthz(addr: std::net::SocketAddr) -> Option<(u16, String)> {
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    let code = resp.status().as_u16();
    Some((code, resp.text().await.unwrap_or_default()))
}

/// The engine's loop blocking its thread for good (the debug-build hook stalls the real
/// claim/dispatch loop at a tick, as a step stuck in a blocking call would) stops the
/// watchdog pings, and `/healthz` answers 503 naming the engine.
#[cfg(debug_assertions)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_engine_stops_the_pings_and_fails_healthz() {
    let server = TestServer::builder()
        .dialect(Dialect::Immich)
        .admin_api_key(KEY)
        .start()
        .await;
    let s = Setup::with(
        server.addr().port(),
        "[metrics]\nlisten = \"127.0.0.1:0\"\n",
    );
    let (mut child, mut n) = s.run_notified(&[
        ("WATCHDOG_USEC", WATCHDOG_USEC),
        ("IMMISH_SYNC_TEST_STALL", "engine:8"),
    ]);
    assert!(
        n.wait_for(Duration::from_secs(30), |l| l == "READY=1")
            .is_some(),
        "{:?}",
        n.seen
    );
    let state = s.dir.path().join("state");
    let mut addr = None;
    let end = Instant::now() + Duration::from_secs(30);
    while addr.is_none() && Instant::now() < end {
        addr = endpoint(&state);
        std::thread::sleep(Duration::from_millis(100));
    }
    let addr = addr.expect("the daemon recorded its HTTP address");
    // Healthy before the stall: the file went up, pings came.
    let uploaded = n.wait_for(Duration::from_secs(30), |l| {
        l.starts_with("STATUS=") && l.contains("uploaded 1 ")
    });
    assert!(uploaded.is_some(), "{:?}", n.seen);
    assert!(n.pings() >= 1, "{:?}", n.seen);
    let stalled = n.wait_for(Duration::from_secs(60), |l| {
        l.starts_with("STATUS=stalled: ") && l.contains("engine")
    });
    assert!(stalled.is_some(), "the engine named: {:?}", n.seen);
    assert_eq!(n.count_pings(PING_SPAN * 2), 0, "{:?}", n.seen);
    let mut last = None;
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        last = healthz(addr).await;
        if last.as_ref().is_some_and(|(c, _)| *c == 503) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, body) = last.expect("/healthz answers");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("not making progress") && body.contains("engine"),
        "{body}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// A 20 s outage of the server is a deliberate wait: the engine meets it with new files
/// queued, waits for its probes, and the pings go on all along; when the server is back the
/// files go up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pings_go_on_through_a_server_outage() {
    let server = TestServer::builder()
        .dialect(Dialect::Immich)
        .admin_api_key(KEY)
        .start()
        .await;
    let s = Setup::new(server.addr().port());
    let (mut child, mut n) = s.run_notified(&[("WATCHDOG_USEC", WATCHDOG_USEC)]);
    let uploaded = n.wait_for(Duration::from_secs(60), |l| {
        l.starts_with("STATUS=") && l.contains("uploaded 1 ")
    });
    assert!(uploaded.is_some(), "{:?}", n.seen);
    let admin = server.admin_id();
    assert_eq!(server.asset_count(&admin), 1);

    server.offline(true);
    let photos = s.dir.path().join("photos");
    for i in 0..3 {
        std::fs::write(
            photos.join(format!("b{i}.jpg")),
            jpeg(&format!("outage-{i}")),
        )
        .unwrap();
    }
    // WatchdogSec=4s pings every 2 s: about ten in 20 s; five leave room for a loaded box.
    let pings = n.count_pings(Duration::from_secs(20));
    assert!(pings >= 5, "{pings} pings in the outage: {:?}", n.seen);
    assert!(
        !n.seen.iter().any(|l| l.starts_with("STATUS=stalled")),
        "{:?}",
        n.seen
    );
    assert_eq!(
        server.asset_count(&admin),
        1,
        "nothing went up while offline"
    );

    server.offline(false);
    let end = Instant::now() + Duration::from_secs(90);
    while server.asset_count(&admin) < 4 && Instant::now() < end {
        let _ = n.wait_for(Duration::from_millis(500), |_| false);
    }
    assert_eq!(server.asset_count(&admin), 4, "{:?}", n.seen);
    assert!(n.count_pings(PING_SPAN) >= 2, "{:?}", n.seen);
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

/// Log lines on a pipe carry no ANSI escapes; on the journal's stream (JOURNAL_STREAM naming
/// stderr's device and inode) they start with the syslog priority and have no timestamp.
#[test]
fn logs_have_no_colour_on_a_pipe_and_priorities_on_the_journal() {
    let s = Setup::new(free_port());
    let run_for_a_moment = |stderr: Stdio, journal: Option<String>| {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(&s.config)
            .arg("run")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("NO_COLOR")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if let Some(j) = journal {
            cmd.env("JOURNAL_STREAM", j);
        }
        let child = cmd.spawn().expect("start");
        // The server is down: the daemon logs the failed connect at once, then waits.
        std::thread::sleep(Duration::from_millis(1500));
        sigterm(&child);
        child
    };

    let mut piped = run_for_a_moment(Stdio::piped(), None);
    let _ = wait_exit(&mut piped, Duration::from_secs(20));
    let mut err = String::new();
    use std::io::Read;
    piped
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("cannot connect to the server"), "{err}");
    assert!(!err.contains('\x1b'), "no ANSI on a pipe: {err:?}");
    assert!(err.contains(" ERROR "), "the level in plain text: {err}");

    let log = s.dir.path().join("journal.log");
    let file = std::fs::File::create(&log).unwrap();
    let meta = file.metadata().unwrap();
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let mut child = run_for_a_moment(Stdio::from(file), Some(stream));
    let _ = wait_exit(&mut child, Duration::from_secs(20));
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<3>cannot connect to the server")),
        "error as <3>: {text}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("<6>SIGTERM: stopping")),
        "info as <6>: {text}"
    );
    assert!(
        lines.iter().all(|l| l.starts_with('<')),
        "every line prefixed: {text}"
    );
    assert!(!text.contains('\x1b'), "no ANSI in the journal: {text:?}");
    // No timestamp of our own: journald adds one.
    assert!(!text.contains("Z "), "no timestamp: {text}");
}

/// `service install --user` writes the unit for this config: the binary, the config path,
/// the roots read-only and the state directory writable, and prints the enable commands.
#[test]
fn service_install_writes_the_unit_for_this_machine() {
    let s = Setup::new(free_port());
    let home = s.dir.path().join("home");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&s.config)
        .args(["service", "install", "--user"])
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit_path = home.join(".config/systemd/user/immish-sync.service");
    let unit = std::fs::read_to_string(&unit_path).expect("unit written");
    let exe = Path::new(BIN).canonicalize().unwrap();
    let config = s.config.canonicalize().unwrap();
    assert!(
        unit.contains(&format!(
            "\nExecStart={} run --config {}\n",
            exe.display(),
            config.display()
        )),
        "{unit}"
    );
    let photos = s.dir.path().join("photos");
    assert!(
        unit.contains(&format!("\nReadOnlyPaths=-{}\n", photos.display())),
        "{unit}"
    );
    let state = s.dir.path().join("state");
    assert!(
        unit.contains(&format!("\nReadWritePaths={}\n", state.display())),
        "{unit}"
    );
    assert!(
        state.is_dir(),
        "the state dir a user unit grants must exist"
    );
    assert!(
        stdout.contains("systemctl --user daemon-reload"),
        "{stdout}"
    );
    assert!(
        stdout.contains("systemctl --user enable --now immish-sync"),
        "{stdout}"
    );
}

/// The units `service install` renders pass `systemd-analyze verify`, checked against an
/// installed copy of the binary (ExecStart= must exist). Skipped where systemd-analyze is
/// not installed.
#[test]
fn the_units_pass_systemd_analyze_verify() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped: systemd-analyze is not installed (apt-get install systemd)");
        return;
    };
    assert!(probe.status.success());
    let s = Setup::new(free_port());
    let bin = s.dir.path().join("bin/immish-sync");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(BIN, &bin).unwrap();
    for user in [false, true] {
        let mut args = vec!["service", "install", "--dry-run"];
        if user {
            args.push("--user");
        }
        let out = Command::new(&bin)
            .arg("--config")
            .arg(&s.config)
            .args(&args)
            .output()
            .expect("run");
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!(
            "ExecStart={}",
            bin.canonicalize().unwrap().display()
        )));
        let dir = s.dir.path().join(if user { "user" } else { "system" });
        std::fs::create_dir_all(&dir).unwrap();
        let unit = dir.join("immish-sync.service");
        std::fs::write(&unit, text.as_bytes()).unwrap();
        let mut verify = Command::new("systemd-analyze");
        if user {
            // The user manager wants its runtime directory, which no login made here.
            let runtime = s.dir.path().join("runtime");
            std::fs::create_dir_all(&runtime).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
            verify.arg("--user").env("XDG_RUNTIME_DIR", &runtime);
        }
        // --man=no: the man page of Documentation= comes with the .deb, not with a build.
        let v = verify
            .args(["verify", "--man=no"])
            .arg(&unit)
            .output()
            .expect("verify");
        let err = String::from_utf8_lossy(&v.stderr);
        // Only complaints about this unit count: a machine without a booted systemd warns
        // about its own environment (no D-Bus, no user manager).
        let ours: Vec<&str> = err.lines().filter(|l| l.contains("immish-sync")).collect();
        assert!(
            v.status.success() && ours.is_empty(),
            "systemd-analyze verify ({}):\n{err}\n{text}",
            if user { "user" } else { "system" }
        );
    }
}
