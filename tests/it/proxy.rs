//! Issue 13, a bad network rather than a dead one: a TCP relay between the daemon and the test
//! server, on 127.0.0.1, with switchable faults (this kernel has no `netem`):
//!
//! - **latency**: every chunk is delivered this long after it was read, in both directions;
//! - **bandwidth cap**: bytes per second, per direction, shared by all connections (a link);
//! - **stall**: a connection stops forwarding after N bytes from the client, in both
//!   directions, and stays open (no FIN, no RST: what a dead middlebox looks like);
//! - **reset mid-body**: a connection is reset (RST on both sides, `SO_LINGER` 0) after N bytes
//!   from the client;
//! - **accept and never answer**: new connections are accepted and read, and nothing is ever
//!   sent back or forwarded.
//!
//! The tests below run the daemon through it. docs/RELIABILITY.md#a-bad-network lists them.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use immish_testserver::Dialect;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use crate::common::{eventually, jpeg, run, sha1_hex, World, BIN};

/// Faults that strike one connection once it carried `after` bytes from the client, for the
/// next `times` connections that get that far.
#[derive(Clone, Copy, Debug, Default)]
struct Strike {
    after: u64,
    times: u32,
}

#[derive(Default)]
struct Faults {
    latency: Duration,
    /// Bytes per second and direction; 0 is no cap.
    rate: u64,
    stall: Option<Strike>,
    reset: Option<Strike>,
    blackhole: bool,
    /// When the capped link is next free, per direction (0 up, 1 down).
    link_free: [Option<Instant>; 2],
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    stalled: AtomicU64,
    resets: AtomicU64,
    blackholed: AtomicU64,
    /// Bytes the client sent on connections the proxy black-holed (read, never answered).
    swallowed: AtomicU64,
}

struct Shared {
    upstream: SocketAddr,
    faults: Mutex<Faults>,
    counters: Counters,
}

/// The relay. Dropping it stops accepting; connections it holds end with the test.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FaultProxy {
    /// A relay on 127.0.0.1 (an OS-picked port) to `upstream`, with no fault switched on.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream,
            faults: Mutex::new(Faults::default()),
            counters: Counters::default(),
        });
        let s = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, s.clone()));
            }
        });
        FaultProxy {
            addr,
            shared,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.shared.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn latency(&self, d: Duration) {
        self.faults().latency = d;
    }

    pub fn rate(&self, bytes_per_sec: u64) {
        self.faults().rate = bytes_per_sec;
    }

    /// The next `times` connections stop forwarding after `after` bytes from the client.
    pub fn stall_after(&self, after: u64, times: u32) {
        self.faults().stall = Some(Strike { after, times });
    }

    /// The next `times` connections are reset after `after` bytes from the client.
    pub fn reset_after(&self, after: u64, times: u32) {
        self.faults().reset = Some(Strike { after, times });
    }

    pub fn blackhole(&self, on: bool) {
        self.faults().blackhole = on;
    }

    pub fn connections(&self) -> u64 {
        self.shared.counters.connections.load(Relaxed)
    }
    pub fn stalled(&self) -> u64 {
        self.shared.counters.stalled.load(Relaxed)
    }
    pub fn resets(&self) -> u64 {
        self.shared.counters.resets.load(Relaxed)
    }
    pub fn blackholed(&self) -> u64 {
        self.shared.counters.blackholed.load(Relaxed)
    }
    pub fn swallowed(&self) -> u64 {
        self.shared.counters.swallowed.load(Relaxed)
    }
}

/// What happens to one connection.
struct Conn {
    shared: Arc<Shared>,
    up_bytes: AtomicU64,
    /// Set when a fault struck: `stall` stops both pumps, `reset` also ends the connection.
    stop: Notify,
    stopped: Mutex<Option<Strikes>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Strikes {
    Stall,
    Reset,
}

impl Conn {
    fn struck(&self) -> Option<Strikes> {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many of the `n` bytes just read from the client may pass before a fault strikes
    /// (all of them when none does).
    fn admit(&self, n: usize) -> usize {
        let before = self.up_bytes.fetch_add(n as u64, Relaxed);
        let after = before + n as u64;
        let mut guard = self.shared.faults.lock().unwrap_or_else(|p| p.into_inner());
        let f = &mut *guard;
        for (kind, slot) in [
            (Strikes::Reset, &mut f.reset),
            (Strikes::Stall, &mut f.stall),
        ] {
            let Some(strike) = slot.as_mut() else {
                continue;
            };
            if strike.times == 0 || after < strike.after {
                continue;
            }
            strike.times -= 1;
            let pass = strike.after.saturating_sub(before) as usize;
            *self.stopped.lock().unwrap_or_else(|p| p.into_inner()) = Some(kind);
            let counter = match kind {
                Strikes::Reset => &self.shared.counters.resets,
                Strikes::Stall => &self.shared.counters.stalled,
            };
            counter.fetch_add(1, Relaxed);
            self.stop.notify_waiters();
            return pass.min(n);
        }
        n
    }
}

async fn relay(mut client: TcpStream, shared: Arc<Shared>) {
    shared.counters.connections.fetch_add(1, Relaxed);
    let blackhole = shared
        .faults
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .blackhole;
    if blackhole {
        shared.counters.blackholed.fetch_add(1, Relaxed);
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = client.read(&mut buf).await {
            if n == 0 {
                break;
            }
            shared.counters.swallowed.fetch_add(n as u64, Relaxed);
        }
        return;
    }
    let Ok(server) = TcpStream::connect(shared.upstream).await else {
        return;
    };
    let fds = [client.as_raw_fd(), server.as_raw_fd()];
    let conn = Arc::new(Conn {
        shared,
        up_bytes: AtomicU64::new(0),
        stop: Notify::new(),
        stopped: Mutex::new(None),
    });
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let mut up = tokio::spawn(pump(cr, sw, conn.clone(), 0));
    let down = tokio::spawn(pump(sr, cw, conn.clone(), 1));
    let reset = async {
        loop {
            let notified = conn.stop.notified();
            if conn.struck() == Some(Strikes::Reset) {
                return;
            }
            notified.await;
        }
    };
    tokio::select! {
        () = reset => {
            // Both sockets are still open (their halves live in the pumps): closing them with
            // a zero linger sends RST instead of FIN.
            for fd in fds {
                set_linger_zero(fd);
            }
            up.abort();
            down.abort();
        }
        _ = &mut up => {
            // The client is gone or sent its last byte; the answer may still be coming.
            let _ = down.await;
        }
    }
}

fn set_linger_zero(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `fd` is an open socket owned by a live TcpStream half; the option is plain data.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Forwards one direction: reads, holds each chunk for the latency, spends the bandwidth
/// cap, writes. A fault that strikes stops it (the socket stays open).
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, conn: Arc<Conn>, dir: usize) {
    // A bounded queue: a slow writer holds the reader back, as a full window would. Eight
    // reads (up to 512 KiB), not 64 (4 MiB): what the client has handed over but the link has
    // not carried is time with no progress the client can see; 4 MiB of it at a share of
    // 2 MiB/s outlasted a 10 s stall timeout once under load, and resent a body.
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(8);
    let reader = {
        let conn = conn.clone();
        async move {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                if conn.struck().is_some() {
                    return;
                }
                let n = match from.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let n = if dir == 0 { conn.admit(n) } else { n };
                if n > 0 {
                    let latency = conn
                        .shared
                        .faults
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .latency;
                    if tx
                        .send((Instant::now() + latency, buf[..n].to_vec()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    let writer = async {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            let wait = {
                let mut f = conn.shared.faults.lock().unwrap_or_else(|p| p.into_inner());
                if f.rate == 0 {
                    None
                } else {
                    let now = Instant::now();
                    let start = f.link_free[dir].map_or(now, |t| t.max(now));
                    let end = start + Duration::from_secs_f64(chunk.len() as f64 / f.rate as f64);
                    f.link_free[dir] = Some(end);
                    Some(end)
                }
            };
            if let Some(end) = wait {
                tokio::time::sleep_until(end).await;
            }
            if conn.struck() == Some(Strikes::Stall) && dir == 1 {
                break;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        if conn.struck().is_some() {
            // Stalled (or about to be reset): keep the socket open, send nothing more.
            std::future::pending::<()>().await;
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

// --- the daemon through the proxy -----------------------------------------------------------

/// A world whose config points at the proxy instead of the server.
async fn world_behind(proxy_upstream: Option<SocketAddr>) -> (World, FaultProxy) {
    let w = World::new(Dialect::Immich).await;
    let proxy = FaultProxy::start(proxy_upstream.unwrap_or_else(|| w.server.addr())).await;
    (w, proxy)
}

/// Writes the world's config with the proxy in place of the server and the given stall
/// timeout, and loads it.
fn config_via(w: &World, proxy: &FaultProxy, stall: Duration) -> immish_sync::config::Config {
    w.write_config();
    let text = std::fs::read_to_string(w.config_path()).unwrap();
    let text = text.replace(&w.server.base_url(), &proxy.url()).replacen(
        "[server]\n",
        &format!("[server]\nstall_timeout = \"{}s\"\n", stall.as_secs()),
        1,
    );
    std::fs::write(w.config_path(), text).unwrap();
    immish_sync::config::load(&w.config_path()).expect("the proxied config loads")
}

fn big_jpeg(tag: &str, size: usize) -> Vec<u8> {
    let mut b = jpeg(tag);
    let eoi = b.split_off(b.len() - 2);
    let mut x = tag.len() as u32 ^ 0x9e37_79b9;
    while b.len() < size - 2 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        // Bytes of 0xFF would start markers; keep them out of the filler.
        b.push((x as u8) & 0x7F);
    }
    b.extend_from_slice(&eoi);
    b
}

fn assert_each_once(w: &World, files: &[Vec<u8>]) {
    let assets = w.server.assets(&w.server.admin_id());
    let mut got: Vec<String> = assets.iter().map(|a| a.checksum_hex.clone()).collect();
    got.sort();
    let mut want: Vec<String> = files.iter().map(|b| sha1_hex(b)).collect();
    want.sort();
    assert_eq!(got, want, "every file on the server once, byte for byte");
}

async fn scan(config: immish_sync::config::Config) -> immish_sync::daemon::ScanSummary {
    let fut = immish_sync::daemon::scan_with(config, World::tuning(), Default::default());
    tokio::time::timeout(Duration::from_secs(240), fut)
        .await
        .expect("the scan must end")
        .unwrap_or_else(|e| panic!("scan failed: {e:#}"))
}

/// A connection that stops forwarding in the middle of an upload body, and stays open. The
/// daemon's no-progress timeout ends the request (its log says so), the file is sent again on
/// a new connection and arrives once. The binary's `scan`, so that the log is what a user sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_mid_upload_fires_the_stall_timeout_and_the_file_arrives_once() {
    let (w, proxy) = world_behind(None).await;
    // Far more than the socket buffers on both sides of the proxy hold, so the daemon's
    // writes really block.
    let file = big_jpeg("stalled", 40 << 20);
    w.write("IMG_stall.jpg", &file);
    let _ = config_via(&w, &proxy, Duration::from_secs(3));
    proxy.stall_after(2 << 20, 1);

    let out = tokio::task::spawn_blocking({
        let config = w.config_path();
        move || {
            Command::new(BIN)
                .arg("--config")
                .arg(config)
                .arg("scan")
                .stdin(Stdio::null())
                .output()
                .expect("run immish-sync scan")
        }
    });
    let out = tokio::time::timeout(Duration::from_secs(240), out)
        .await
        .expect("the scan must end")
        .expect("scan task");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(proxy.stalled(), 1, "the stall struck");
    assert!(
        stderr.contains("no progress for 3 s"),
        "the stall timeout ended the stalled upload: {stderr}"
    );
    assert_each_once(&w, &[file]);
    // The stalled body never completed; the second one did. No third.
    assert!(
        w.server.upload_bodies() <= 2,
        "bodies: {}",
        w.server.upload_bodies()
    );
    assert_eq!(
        w.state_of(&w.root().join("IMG_stall.jpg")).as_deref(),
        Some("done")
    );
}

/// Connections reset (RST) in the middle of upload bodies, several times over: every file
/// arrives once, none is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_mid_body_lose_and_double_nothing() {
    let (w, proxy) = world_behind(None).await;
    let files: Vec<Vec<u8>> = (0..6)
        .map(|i| big_jpeg(&format!("reset-{i}"), 3 << 20))
        .collect();
    for (i, b) in files.iter().enumerate() {
        w.write(format!("IMG_{i}.jpg"), b);
    }
    let config = config_via(&w, &proxy, Duration::from_secs(20));
    // Each of the next four connections is cut 1 MiB into what the client sent.
    proxy.reset_after(1 << 20, 4);

    let s = scan(config).await;
    assert!(s.is_complete(), "{s:?}");
    assert_eq!(proxy.resets(), 4, "every reset struck");
    assert_each_once(&w, &files);
    let states = w.job_states();
    assert!(states.iter().all(|(_, s)| s == "done"), "{states:?}");
}

/// 200 ms of latency each way and a 2 MiB/s link: a 20-file backup completes, each once. One
/// file of 24 MiB takes at least 12 s on that link, longer than the 10 s stall timeout: an
/// upload that keeps moving is never taken for a stall, however long it takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_a_bandwidth_cap_slow_a_backup_but_it_completes_once_each() {
    let (w, proxy) = world_behind(None).await;
    let files: Vec<Vec<u8>> = (0..20)
        .map(|i| {
            big_jpeg(
                &format!("slow-{i}"),
                if i == 0 { 24 << 20 } else { 256 << 10 },
            )
        })
        .collect();
    for (i, b) in files.iter().enumerate() {
        w.write(format!("IMG_{i:02}.jpg"), b);
    }
    let config = config_via(&w, &proxy, Duration::from_secs(10));
    proxy.latency(Duration::from_millis(200));
    proxy.rate(2 << 20);

    let started = std::time::Instant::now();
    let s = scan(config).await;
    eprintln!(
        "20 files through 200 ms and 2 MiB/s in {:?}",
        started.elapsed()
    );
    assert!(s.is_complete(), "{s:?}");
    assert_each_once(&w, &files);
    assert_eq!(w.server.upload_bodies(), 20, "no body sent twice");
}

/// A peer that accepts connections and never answers (a firewall that takes the SYN, a hung
/// proxy): even the small requests of connecting have a deadline, the no-progress timeout,
/// and `status` says the server is unreachable and when the next try is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_accepts_and_never_answers_is_unreachable_in_status() {
    let (w, proxy) = world_behind(None).await;
    w.write("IMG_1.jpg", &jpeg("never-answered"));
    let _ = config_via(&w, &proxy, Duration::from_secs(2));
    proxy.blackhole(true);

    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(w.config_path())
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the daemon");
    // At least two requests were swallowed: the first timed out and another try followed.
    let retried = eventually(Duration::from_secs(60), || proxy.blackholed() >= 2).await;
    let mut last = String::new();
    let said = eventually(Duration::from_secs(60), || {
        let out = run(&w, &["status"]);
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        last.contains("server unreachable since") && last.contains("next try in")
    })
    .await;
    child.kill().expect("SIGKILL");
    let out = child.wait_with_output().expect("daemon output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(retried, "the daemon never tried again\n{stderr}");
    assert!(said, "status must say unreachable: {last}\n{stderr}");
    assert!(proxy.swallowed() > 0, "requests were sent and swallowed");
    assert!(
        last.contains("no progress for 2 s"),
        "status names the timeout: {last}"
    );
    assert_eq!(w.server.requests("POST /assets"), 0);
}
