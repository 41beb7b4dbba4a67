//! Issue 10, interactive runs and logs: the daemon's INFO progress lines during a long
//! upload, the line when everything is backed up, and the bytes of an upload in flight in
//! `status` (docs/ARCHITECTURE.md#progress).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use immish_testserver::Dialect;

use crate::common::{eventually, jpeg, World};

/// The log lines of this thread's tasks (a `#[tokio::test]` runs the daemon on it).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A JPEG of about `size` bytes (the fixture padded with a trailing comment-like tail).
fn big_jpeg(tag: &str, size: usize) -> Vec<u8> {
    let mut v = jpeg(tag);
    v.resize(size.max(v.len()), b'x');
    v
}

#[tokio::test]
async fn a_long_upload_logs_progress_lines_and_says_when_all_is_backed_up() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // Another test's thread (no subscriber) may have had the daemon's callsites cached as
    // never enabled before this one existed.
    tracing::callsite::rebuild_interest_cache();

    let mut w = World::new(Dialect::Immich).await;
    // 30 files of 100 kB at 1 MB/s: about 3 s, long enough for several lines 300 ms apart.
    w.upload = "max_rate = \"1MB/s\"\n".to_owned();
    for i in 0..30 {
        w.write(format!("p{i}.jpg"), &big_jpeg(&format!("p{i}"), 100_000));
    }
    let d = w.start_daemon();
    let done = eventually(Duration::from_secs(60), || {
        tracing::callsite::rebuild_interest_cache();
        logs.text().contains("all 30 files backed up")
    })
    .await;
    d.stop().await;
    let text = logs.text();
    assert!(done, "no \"all 30 files backed up\" line; logs:\n{text}");
    let progress: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("uploaded ") && l.contains(" files, "))
        .collect();
    assert!(
        progress.len() >= 2,
        "expected progress lines during the upload; logs:\n{text}"
    );
    // Not a line per file, and each says files, bytes, rate and what is left.
    assert!(progress.len() < 30, "{progress:#?}");
    let first = progress[0];
    assert!(
        first.contains("/30 files") && first.contains(" MB, ") && first.contains("MB/s"),
        "{first}"
    );
    assert!(progress.iter().any(|l| l.contains("left")), "{progress:#?}");
    assert_eq!(w.server.asset_count(&w.server.admin_id()), 30);
}

#[tokio::test]
async fn status_shows_the_bytes_of_a_large_upload_while_it_is_in_flight() {
    let mut w = World::new(Dialect::Immich).await;
    // 4 MB at 1 MB/s: in flight for about 4 s; the daemon records every 2 s.
    w.upload = "max_rate = \"1MB/s\"\n".to_owned();
    let size = 4_000_000u64;
    w.write("big.jpg", &big_jpeg("big", size as usize));
    let d = w.start_daemon();
    let state = w.state_dir();
    let mut seen = None;
    let ok = eventually(Duration::from_secs(30), || {
        let Ok(Some(st)) = immish_sync::status::read(&state) else {
            return false;
        };
        let sent = st.bytes_in_flight();
        if sent > 0 && sent < size {
            seen = Some((sent, st.activity.map(|a| a.doing)));
            true
        } else {
            false
        }
    })
    .await;
    d.stop().await;
    assert!(ok, "status never showed the bytes of the upload in flight");
    let (sent, doing) = seen.unwrap();
    let doing = doing.unwrap_or_default();
    assert!(
        doing.contains("uploading 1 file (") && doing.contains("of 4.0 MB sent"),
        "{sent} bytes in flight, but status says: {doing}"
    );
}
