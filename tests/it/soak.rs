//! The soak (issue 13): the real binary under `run` while files keep arriving and the server
//! keeps failing at random (5xx answers, connections dropped mid-body, offline for a few
//! seconds). Every file arrives exactly once, and the daemon's resident memory (VmRSS) and
//! open file descriptors stay flat: the second half of the run is compared with the first.
//!
//! CI runs 60 s; `IMMISH_SOAK_SECS=1800 cargo test --test it soak -- --nocapture` runs the
//! 30 minutes of the issue. The numbers are printed either way.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use immish_testserver::Dialect;
use rand::Rng;

use crate::common::{eventually, jpeg, sha1_hex, World, BIN};

fn soak_secs() -> u64 {
    std::env::var("IMMISH_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}

/// (VmRSS in KiB, open fds) of a process, from /proc.
fn sample(pid: u32) -> Option<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss, fds))
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrivals_with_random_faults_arrive_once_with_flat_memory_and_fds() {
    let secs = soak_secs();
    let w = World::new(Dialect::Immich).await;
    let text = format!(
        "[server]\nurl = \"{}\"\napi_key = \"{}\"\n[state]\ndir = \"{}\"\n\
         [upload]\nretry_initial = \"50ms\"\nretry_max = \"2s\"\n\
         [watch]\nsettle = \"0s\"\n[[roots]]\npath = \"{}\"\n",
        w.server.base_url(),
        w.server.api_key(),
        w.state_dir().display(),
        w.root().display(),
    );
    std::fs::write(w.config_path(), text).unwrap();
    std::fs::set_permissions(w.config_path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let log = w.dir.path().join("run.log");
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(w.config_path())
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .env("NO_COLOR", "1")
        .spawn()
        .expect("start immish-sync run");
    let pid = child.id();

    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut written: HashMap<String, String> = HashMap::new(); // sha1 -> name
    let mut samples: Vec<(f64, u64, usize)> = Vec::new();
    let mut faults = HashMap::<&str, u32>::new();
    let mut next_sample = start;
    let mut next_fault = start + Duration::from_secs(3);
    let mut offline_until: Option<Instant> = None;
    let mut n = 0u64;
    while Instant::now() < end {
        let now = Instant::now();
        // One to three new files every ~150 ms, some in new folders.
        let burst = rand::rng().random_range(1..=3);
        for _ in 0..burst {
            let name = format!("d{}/IMG_{n:06}.jpg", n / 50);
            let bytes = jpeg(&format!("soak-{n}"));
            written.insert(sha1_hex(&bytes), name.clone());
            w.write(&name, &bytes);
            n += 1;
        }
        if let Some(t) = offline_until {
            if now >= t {
                w.server.offline(false);
                offline_until = None;
            }
        }
        if now >= next_fault && offline_until.is_none() {
            match rand::rng().random_range(0..4) {
                0 => {
                    let status = [500, 502, 503][rand::rng().random_range(0..3)];
                    w.server.fail_next(
                        "POST /assets",
                        rand::rng().random_range(1..5),
                        status,
                        None,
                        None,
                    );
                    *faults.entry("5xx").or_default() += 1;
                }
                1 => {
                    w.server.drop_after_bytes(
                        "POST /assets",
                        rand::rng().random_range(0..3000),
                        rand::rng().random_range(1..3),
                    );
                    *faults.entry("drop mid-body").or_default() += 1;
                }
                2 => {
                    w.server.offline(true);
                    offline_until =
                        Some(now + Duration::from_millis(rand::rng().random_range(1000..4000)));
                    *faults.entry("offline").or_default() += 1;
                }
                _ => {
                    w.server
                        .fail_next("POST /assets/bulk-upload-check", 1, 503, None, None);
                    *faults.entry("bulk check 503").or_default() += 1;
                }
            }
            next_fault = now + Duration::from_millis(rand::rng().random_range(2000..6000));
        }
        if now >= next_sample {
            if let Some((rss, fds)) = sample(pid) {
                samples.push((now.duration_since(start).as_secs_f64(), rss, fds));
            }
            next_sample = now + Duration::from_secs(1);
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    w.server.offline(false);
    w.server.clear_faults();

    let owner = w.server.admin_id();
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let all = eventually(Duration::from_secs(180), || {
        w.server.asset_count(&owner) >= written.len()
    })
    .await;
    let assets = w.server.assets(&owner);
    // SAFETY: a signal to our own child.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
    let stopped = eventually(Duration::from_secs(30), || {
        child.try_wait().unwrap().is_some()
    })
    .await;
    if !stopped {
        let _ = child.kill();
    }
    let tail: String = {
        let t = log_text();
        t.lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        all,
        "{} of {} files arrived; log tail:\n{tail}",
        assets.len(),
        written.len()
    );
    assert!(stopped, "stops on SIGTERM");

    // Once each: one asset per file, no asset that is not one of them.
    let mut by_sum: HashMap<&str, usize> = HashMap::new();
    for a in &assets {
        *by_sum.entry(a.checksum_hex.as_str()).or_default() += 1;
    }
    let doubled: Vec<_> = by_sum.iter().filter(|(_, &c)| c > 1).collect();
    assert!(doubled.is_empty(), "files went up twice: {doubled:?}");
    assert_eq!(assets.len(), written.len(), "one asset per file");
    for sum in by_sum.keys() {
        assert!(
            written.contains_key(*sum),
            "an asset that is no file: {sum}"
        );
    }

    // Flat: the second half against the first.
    let half = secs as f64 / 2.0;
    let (first, second): (Vec<&(f64, u64, usize)>, Vec<_>) =
        samples.iter().partition(|(t, _, _)| *t < half);
    assert!(
        first.len() >= 5 && second.len() >= 5,
        "samples: {samples:?}"
    );
    let rss1 = median(first.iter().map(|s| s.1).collect());
    let rss2 = median(second.iter().map(|s| s.1).collect());
    let fd1 = first.iter().map(|s| s.2).max().unwrap_or(0);
    let fd2 = second.iter().map(|s| s.2).max().unwrap_or(0);
    let rss_max = samples.iter().map(|s| s.1).max().unwrap_or(0);
    eprintln!(
        "soak {secs}s: {} files, faults {faults:?}; VmRSS median {rss1} KiB (first half) -> \
         {rss2} KiB (second half), max {rss_max} KiB; open fds max {fd1} -> {fd2}; requests {:?}",
        written.len(),
        w.server.request_counts()
    );
    assert!(
        rss2 <= rss1 + rss1 / 4 + 4096,
        "memory grew: {rss1} KiB -> {rss2} KiB; samples {samples:?}"
    );
    assert!(
        fd2 <= fd1 + 8,
        "file descriptors grew: {fd1} -> {fd2}; samples {samples:?}"
    );
}
