//! Issue 10, limits people set on a home line: the bandwidth cap (`upload.max_rate`) across
//! all concurrent uploads (docs/ARCHITECTURE.md#bandwidth-cap).

use std::time::{Duration, Instant};

use immish_testserver::Dialect;

use crate::common::{jpeg, World};

#[tokio::test]
async fn the_bandwidth_cap_holds_all_concurrent_uploads_to_the_rate_together() {
    let mut w = World::new(Dialect::Immich).await;
    // 6 files of 500 kB, 4 at a time, capped at 1 MB/s: 3 MB take at least ~2.75 s (the
    // bucket saves up a quarter of a second at most). Uncapped, loopback takes well under 1 s.
    w.upload = "concurrency = 4\nmax_rate = \"1MB/s\"\n".to_owned();
    for i in 0..6 {
        let mut v = jpeg(&format!("c{i}"));
        v.resize(500_000, b'x');
        w.write(format!("c{i}.jpg"), &v);
    }
    let t0 = Instant::now();
    let summary = w.scan().await;
    let took = t0.elapsed();
    assert!(summary.is_complete(), "{summary:?}");
    let h = w.server.handle();
    assert_eq!(w.server.asset_count(&w.server.admin_id()), 6);
    assert!(
        h.upload_body_bytes() >= 3_000_000,
        "{}",
        h.upload_body_bytes()
    );
    assert!(
        took >= Duration::from_millis(2500),
        "3 MB at 1 MB/s arrived in {took:?}"
    );
}

#[test]
fn a_bad_rate_is_refused_naming_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[server]\nurl = \"http://127.0.0.1:1\"\napi_key = \"k\"\n[state]\ndir = \"/tmp/x\"\n\
         [upload]\nmax_rate = \"fast\"\n[[roots]]\npath = \"/tmp\"\n",
    )
    .unwrap();
    let e = immish_sync::config::load(&path).unwrap_err().to_string();
    assert!(
        e.contains("max_rate") && e.contains("c.toml:7:") && e.contains("invalid rate"),
        "{e}"
    );
}
