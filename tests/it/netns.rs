//! Issue 13, a bad network with real packets: two network namespaces made for the test, joined
//! by a veth pair, the test server in one and the daemon (`run`, the binary) in the other.
//! nftables in the server's namespace drops 10% of the TCP packets both ways, then every
//! packet of the server's port for a while (a blackhole: dropped, not refused, so no RST and
//! no ICMP tells the daemon anything). The stall timeout fires, the uploads resume when the
//! packets flow again, and every file arrives once.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables); skipped with a message otherwise. The
//! blackhole lasts 20 s here and 60 s with `IMMISH_NETNS=full`.
//!
//! The test server runs in this process, on a thread that entered the server's namespace
//! before it bound its socket (a socket stays in the namespace it was made in), so the test
//! reads its counters directly; nothing listens in the machine's own namespace.

use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use immish_testserver::{Dialect, ServerHandle, TestServer};

use crate::common::{eventually, sha1_hex, BIN};

const DAEMON_IP: &str = "10.77.0.1";
const SERVER_IP: &str = "10.77.0.2";

/// Runs `ip`/`nft` and says what failed.
fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The two namespaces; deleting them removes the veth pair and the rules.
struct Namespaces {
    daemon: String,
    server: String,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.daemon]);
        let _ = sh(&["ip", "netns", "del", &self.server]);
    }
}

impl Namespaces {
    fn create() -> Result<Namespaces, String> {
        let id = std::process::id();
        let ns = Namespaces {
            daemon: format!("immish-d{id}"),
            server: format!("immish-s{id}"),
        };
        let (va, vb) = (format!("imd{id}"), format!("ims{id}"));
        sh(&["ip", "netns", "add", &ns.daemon])?;
        sh(&["ip", "netns", "add", &ns.server])?;
        sh(&[
            "ip", "link", "add", &va, "netns", &ns.daemon, "type", "veth", "peer", "name", &vb,
            "netns", &ns.server,
        ])?;
        for (n, dev, ip) in [(&ns.daemon, &va, DAEMON_IP), (&ns.server, &vb, SERVER_IP)] {
            sh(&[
                "ip",
                "-n",
                n,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                dev,
            ])?;
            sh(&["ip", "-n", n, "link", "set", dev, "up"])?;
            sh(&["ip", "-n", n, "link", "set", "lo", "up"])?;
        }
        Ok(ns)
    }

    /// Replaces the server namespace's rules with `rules` (nft syntax, inside `table inet
    /// immish`).
    fn rules(&self, rules: &str) -> Result<(), String> {
        let _ = sh(&[
            "ip",
            "netns",
            "exec",
            &self.server,
            "nft",
            "delete",
            "table",
            "inet",
            "immish",
        ]);
        let script = format!("table inet immish {{\n{rules}\n}}\n");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.server, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("nft: {e}"))?;
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .map_err(|e| format!("nft: {e}"))?;
        let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "nft -f: {}\n{script}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

fn loss(port: u16, percent: u32) -> String {
    format!(
        "chain input {{ type filter hook input priority 0; tcp dport {port} numgen random mod 100 < {percent} drop; }}\n\
         chain output {{ type filter hook output priority 0; tcp sport {port} numgen random mod 100 < {percent} drop; }}"
    )
}

fn blackhole(port: u16) -> String {
    format!(
        "chain input {{ type filter hook input priority 0; tcp dport {port} drop; }}\n\
         chain output {{ type filter hook output priority 0; tcp sport {port} drop; }}"
    )
}

/// Starts the test server on a thread inside namespace `ns`; it stops when the returned
/// sender is dropped.
fn server_in(ns: &str) -> Result<(ServerHandle, std::sync::mpsc::Sender<()>), String> {
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        // SAFETY: setns(2) on this thread only, with an open namespace file.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            let _ = tx.send(Err(format!("setns: {}", std::io::Error::last_os_error())));
            return;
        }
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Err(format!("runtime: {e}")));
                return;
            }
        };
        rt.block_on(async move {
            let server = TestServer::builder()
                .dialect(Dialect::Immich)
                .bind(format!("{SERVER_IP}:0").parse().expect("address"))
                .try_start()
                .await;
            match server {
                Err(e) => {
                    let _ = tx.send(Err(format!("bind: {e}")));
                }
                Ok(server) => {
                    let _ = tx.send(Ok(server.handle()));
                    // Serve until the test drops its sender.
                    let _ = tokio::task::spawn_blocking(move || {
                        let _ = stop_rx.recv();
                    })
                    .await;
                    drop(server);
                }
            }
        });
    });
    let handle = rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|e| format!("server thread: {e}"))??;
    Ok((handle, stop_tx))
}

fn jpeg_of(tag: &str, size: usize) -> Vec<u8> {
    let mut b = crate::common::jpeg(tag);
    let eoi = b.split_off(b.len() - 2);
    let mut x = 0x2545_f491u32 ^ tag.len() as u32 ^ (tag.bytes().map(u32::from).sum::<u32>() << 8);
    while b.len() < size - 2 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        b.push((x as u8) & 0x7F);
    }
    b.extend_from_slice(&eoi);
    b
}

fn write_config(dir: &Path, server: &ServerHandle) -> std::path::PathBuf {
    let text = format!(
        "[server]\nurl = \"{}\"\napi_key = \"{}\"\nstall_timeout = \"5s\"\nconnect_timeout = \"3s\"\n\
         [state]\ndir = \"{}\"\n[upload]\nretry_initial = \"200ms\"\nretry_max = \"3s\"\n\
         [[roots]]\npath = \"{}\"\n[watch]\nsettle = \"0s\"\n",
        server.base_url(),
        server.api_key(),
        dir.join("state").display(),
        dir.join("photos").display(),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packet_loss_then_a_blackhole_lose_and_double_nothing() {
    let is_root = unsafe { libc::geteuid() } == 0;
    if !is_root {
        eprintln!("skipped: network namespaces and nftables need root");
        return;
    }
    for tool in ["ip", "nft"] {
        if sh(&["sh", "-c", &format!("command -v {tool}")]).is_err() {
            eprintln!("skipped: `{tool}` is not installed (iproute2, nftables)");
            return;
        }
    }
    let ns = match Namespaces::create() {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("skipped: cannot make network namespaces here: {e}");
            return;
        }
    };
    let (server, _stop) = server_in(&ns.server).expect("the test server in its namespace");
    let port = server.addr().port();
    if let Err(e) = ns.rules(&loss(port, 10)) {
        eprintln!("skipped: nftables does not work here: {e}");
        return;
    }
    let full = std::env::var("IMMISH_NETNS").is_ok_and(|v| v == "full");
    let hole = Duration::from_secs(if full { 60 } else { 20 });

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("photos")).unwrap();
    let files = 40;
    let mut expected = BTreeSet::new();
    for i in 0..files {
        let b = jpeg_of(&format!("netns-{i}"), 192 << 10);
        expected.insert(sha1_hex(&b));
        std::fs::write(dir.path().join(format!("photos/IMG_{i:02}.jpg")), &b).unwrap();
    }
    let config = write_config(dir.path(), &server);
    // Each upload is answered a while after its body, so the blackhole finds some waiting.
    server.delay("POST /assets", Duration::from_millis(300));
    let log = dir.path().join("daemon.log");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.daemon, BIN, "--config"])
        .arg(&config)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start the daemon in its namespace");
    let admin = server.admin_id();
    let started = eventually(Duration::from_secs(120), || {
        server.asset_count(&admin) >= files / 4
    })
    .await;

    let before = server.asset_count(&admin);
    ns.rules(&blackhole(port)).expect("blackhole rules");
    tokio::time::sleep(hole).await;
    let during = server.asset_count(&admin);
    ns.rules(&loss(port, 10)).expect("loss rules again");
    let db_file = dir.path().join("state/state.sqlite3");
    let not_done = || -> Option<i64> {
        let db = rusqlite::Connection::open(&db_file).ok()?;
        db.query_row("SELECT COUNT(*) FROM jobs WHERE state != 'done'", [], |r| {
            r.get(0)
        })
        .ok()
    };
    // Every file on the server and known to be there: the replies lost in the blackhole
    // leave assets the daemon has yet to find.
    let done = eventually(Duration::from_secs(240), || {
        server.asset_count(&admin) >= files && not_done() == Some(0)
    })
    .await;
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on our own child (`ip netns exec` execs the daemon in place).
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = child.wait().expect("wait for the daemon");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let tail = {
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    assert!(started, "uploads never started under 10% loss\n{tail}");
    assert!(
        before < files,
        "the blackhole must land before the end ({before} of {files})"
    );
    assert!(
        done,
        "not every file arrived: {} of {files}, {:?} jobs not done\n{tail}",
        server.asset_count(&admin),
        not_done()
    );
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM ends the daemon cleanly\n{tail}"
    );
    assert!(
        text.contains("no progress for 5 s"),
        "the stall timeout fired during the blackhole\n{tail}"
    );
    eprintln!(
        "netns: {before} assets before a {hole:?} blackhole, {during} at its end; {} bodies for {files} files",
        server.upload_bodies()
    );

    let assets = server.assets(&admin);
    let got: BTreeSet<String> = assets.iter().map(|a| a.checksum_hex.clone()).collect();
    assert_eq!(assets.len(), files, "one asset per file");
    assert_eq!(got, expected, "every file's bytes");
    assert_eq!(not_done(), Some(0), "the queue drained");
}
