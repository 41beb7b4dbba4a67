//! Measurements of the live watcher, not a timed test: `cargo bench --bench watch`.
//!
//! 1. Latency from a file's last write to the asset being on the server, with
//!    `watch.settle = "2s"`: 100 files each for three ways of writing (write then close, as
//!    `cp`; a temporary name renamed into place, as rsync and Syncthing; and a writer that
//!    keeps the file open after its last write, where only the full settle applies).
//! 2. The memory of the daemon watching 2,000 folders: its RSS (and peak) with
//!    `watch.mode = "notify"` next to `"off"` on the same tree, and the watches it holds.
//!
//! Runs the release binary against the in-process test server over loopback. The machines
//! are shared and noisy: compare numbers taken in one run.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use immish_testserver::{Dialect, TestServer};
use sha1::{Digest, Sha1};

const BIN: &str = env!("CARGO_BIN_EXE_immish-sync");
const FILES: usize = 100;
const FOLDERS: usize = 2000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let server = TestServer::start(Dialect::Immich).await;
    println!("immish-sync watcher measurements ({BIN})\n");
    latency(&server).await;
    println!();
    memory(&server).await;
}

fn config(server: &TestServer, dir: &Path, root: &Path, watch: &str) -> PathBuf {
    let text = format!(
        "[server]\nurl = \"{}\"\napi_key = \"{}\"\n[state]\ndir = \"{}\"\n\
         [scan]\ninterval = \"1h\"\n[watch]\n{watch}\n[[roots]]\npath = \"{}\"\n",
        server.base_url(),
        server.api_key(),
        dir.join("state").display(),
        root.display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn start(config: &Path, log: &Path) -> Child {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start immish-sync")
}

fn stop(mut child: Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

/// A unique file of `len` bytes that the server takes as a JPEG.
fn photo(tag: &str, len: usize) -> Vec<u8> {
    let mut v = vec![0xFF, 0xD8, 0xFF, 0xFE];
    v.extend_from_slice(tag.as_bytes());
    v.resize(len - 2, tag.len() as u8);
    v.extend_from_slice(&[0xFF, 0xD9]);
    v
}

fn sha1_hex(b: &[u8]) -> String {
    hex::encode(Sha1::digest(b))
}

async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

#[derive(Clone, Copy, Debug)]
enum Writer {
    /// Write, then close at once (`cp`, a camera import).
    Close,
    /// Write under a temporary name, close, rename into place (rsync, Syncthing).
    Rename,
    /// Write and keep the file open: no close event, only the full settle.
    KeepOpen,
}

async fn latency(server: &TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("photos");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("seed.jpg"), photo("seed", 4096)).unwrap();
    let cfg = config(server, dir.path(), &root, "settle = \"2s\"");
    let child = start(&cfg, &dir.path().join("daemon.log"));
    let admin = server.admin_id();
    assert!(
        wait_for(Duration::from_secs(30), || !server
            .assets(&admin)
            .is_empty())
        .await,
        "the daemon did not start"
    );

    // First sight of each checksum on the server, polled every 2 ms from a thread.
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (seen, done, handle, admin) =
            (seen.clone(), done.clone(), server.handle(), admin.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let now = Instant::now();
                let assets = handle.assets(&admin);
                let mut s = seen.lock().unwrap();
                for a in assets {
                    s.entry(a.checksum_hex).or_insert(now);
                }
                drop(s);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };

    println!("latency, last write → asset on the server (settle 2 s, {FILES} files of 256 KiB, 50 ms apart)");
    println!(
        "  {:<28} {:>8} {:>8} {:>8} {:>8}",
        "writer", "min", "median", "p90", "max"
    );
    for writer in [Writer::Close, Writer::Rename, Writer::KeepOpen] {
        let mut written: Vec<(String, Instant)> = Vec::new();
        let mut open_files = Vec::new();
        for i in 0..FILES {
            let bytes = photo(&format!("{writer:?}-{i}"), 256 * 1024);
            let name = root.join(format!("{writer:?}_{i:03}.jpg"));
            let last_write = match writer {
                Writer::Close => {
                    let mut f = std::fs::File::create(&name).unwrap();
                    f.write_all(&bytes).unwrap();
                    let t = Instant::now();
                    drop(f);
                    t
                }
                Writer::Rename => {
                    let tmp = root.join(format!(".{writer:?}_{i:03}.jpg.a1B2c3"));
                    std::fs::write(&tmp, &bytes).unwrap();
                    std::fs::rename(&tmp, &name).unwrap();
                    Instant::now()
                }
                Writer::KeepOpen => {
                    let mut f = std::fs::File::create(&name).unwrap();
                    f.write_all(&bytes).unwrap();
                    let t = Instant::now();
                    open_files.push(f);
                    t
                }
            };
            written.push((sha1_hex(&bytes), last_write));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let all = wait_for(Duration::from_secs(60), || {
            let s = seen.lock().unwrap();
            written.iter().all(|(c, _)| s.contains_key(c))
        })
        .await;
        drop(open_files);
        let s = seen.lock().unwrap();
        let mut lat: Vec<Duration> = written
            .iter()
            .filter_map(|(c, t)| s.get(c).map(|seen| seen.saturating_duration_since(*t)))
            .collect();
        drop(s);
        lat.sort();
        let pick = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
        let label = match writer {
            Writer::Close => "write + close (cp)",
            Writer::Rename => "temp name + rename (rsync)",
            Writer::KeepOpen => "kept open (settle only)",
        };
        let ms = |d: Duration| format!("{} ms", d.as_millis());
        println!(
            "  {label:<28} {:>8} {:>8} {:>8} {:>8}{}",
            ms(pick(0.0)),
            ms(pick(0.5)),
            ms(pick(0.9)),
            ms(pick(1.0)),
            if all {
                String::new()
            } else {
                format!("  ({} never arrived)", FILES - lat.len())
            }
        );
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = poller.join();
    stop(child);
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// inotify watches held by a process (`inotify wd:` lines of its fdinfo).
fn watches_of(pid: u32) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0;
    };
    fds.flatten()
        .map(|fd| {
            std::fs::read_to_string(fd.path())
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count()
        })
        .sum()
}

async fn memory(server: &TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("photos");
    // 40 year-like folders of 49 subfolders each: 2,000 folders under the root.
    let mut folders = 0;
    for y in 0..40 {
        for m in 0..49 {
            std::fs::create_dir_all(root.join(format!("{}/{m:02}", 1990 + y))).unwrap();
            folders += 1;
        }
        folders += 1;
    }
    assert_eq!(folders, FOLDERS);
    println!("memory of the daemon on a root of {FOLDERS} folders (after start-up, idle)");
    println!(
        "  {:<10} {:>9} {:>9} {:>8}",
        "watch.mode", "RSS", "peak", "watches"
    );
    for (i, mode) in ["off", "poll", "notify"].iter().enumerate() {
        // A file of its own each time, so that every run uploads one and is known started.
        let seed = photo(&format!("memory-seed-{mode}"), 4096);
        std::fs::write(root.join(format!("seed-{i}.jpg")), &seed).unwrap();
        let state = dir.path().join("state");
        let _ = std::fs::remove_dir_all(&state);
        let cfg = config(server, dir.path(), &root, &format!("mode = \"{mode}\""));
        let child = start(&cfg, &dir.path().join(format!("daemon-{mode}.log")));
        let want = sha1_hex(&seed);
        let admin = server.admin_id();
        let up = wait_for(Duration::from_secs(60), || {
            server.assets(&admin).iter().any(|a| a.checksum_hex == want)
        })
        .await;
        // Let the first scan's work settle.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let pid = child.id();
        let (rss, peak) = rss_kib(pid);
        let watches = watches_of(pid);
        println!(
            "  {mode:<10} {:>6.1} MiB {:>6.1} MiB {watches:>8}{}",
            rss as f64 / 1024.0,
            peak as f64 / 1024.0,
            if up { "" } else { "  (did not start in time)" }
        );
        stop(child);
    }
}
