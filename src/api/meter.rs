//! What the uploads of one client are sending now, and the bandwidth cap they share
//! (`upload.max_rate`, docs/ARCHITECTURE.md#bandwidth-cap).
//!
//! Every upload body passes through [`metered`]: it counts the bytes handed to hyper (so
//! `status` can show a large upload while it is in flight) and, with a cap set, takes them
//! from one token bucket shared by all concurrent uploads first, so that together they send
//! at most `max_rate` bytes per second.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::transport::Progress;

/// The most a bucket may save up: a quarter of a second of the cap, so that a pause does
/// not turn into a burst above it.
const BURST: f64 = 0.25;

/// The longest single wait for tokens; the stall watchdog is told the upload is alive in
/// between (waiting on our own cap is not the network stalling).
const MAX_WAIT: Duration = Duration::from_secs(1);

/// See the module docs. One per [`super::ApiClient`].
#[derive(Debug, Default)]
pub struct UploadMeter {
    /// Bytes sent so far of the uploads in flight, and their sizes.
    sent: AtomicU64,
    size: AtomicU64,
    files: AtomicU64,
    /// Bytes per second; 0 = no cap.
    rate: AtomicU64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Default for Bucket {
    fn default() -> Self {
        Bucket {
            tokens: 0.0,
            at: Instant::now(),
        }
    }
}

/// The uploads in flight: how many, bytes sent of them, and their total size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InFlight {
    pub files: u64,
    pub sent: u64,
    pub size: u64,
}

impl UploadMeter {
    /// Sets or lifts (`None`) the cap, in bytes per second.
    pub fn set_max_rate(&self, bytes_per_second: Option<u64>) {
        self.rate.store(bytes_per_second.unwrap_or(0), Relaxed);
    }

    pub fn in_flight(&self) -> InFlight {
        InFlight {
            files: self.files.load(Relaxed),
            sent: self.sent.load(Relaxed),
            size: self.size.load(Relaxed),
        }
    }

    /// Takes `n` bytes from the bucket; returns how long to wait before sending them
    /// (zero without a cap). The bucket may go into debt: the wait pays it back.
    pub(crate) fn take(&self, n: u64) -> Duration {
        let rate = self.rate.load(Relaxed);
        if rate == 0 {
            return Duration::ZERO;
        }
        let rate = rate as f64;
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(b.at).as_secs_f64() * rate;
        b.tokens = (b.tokens + refill).min(rate * BURST);
        b.at = now;
        b.tokens -= n as f64;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / rate)
        }
    }
}

/// One upload in flight, counted in its meter until dropped.
struct Sending {
    meter: Arc<UploadMeter>,
    sent: AtomicU64,
    size: u64,
}

impl Drop for Sending {
    fn drop(&mut self) {
        let m = &self.meter;
        m.sent.fetch_sub(self.sent.load(Relaxed), Relaxed);
        m.size.fetch_sub(self.size, Relaxed);
        m.files.fetch_sub(1, Relaxed);
    }
}

/// The upload body `body` of `size` bytes, metered and capped (see the module docs). It
/// counts as in flight until it is dropped.
pub(super) fn metered(
    body: impl Stream<Item = io::Result<Bytes>> + Send + 'static,
    size: u64,
    meter: Arc<UploadMeter>,
    progress: Arc<Progress>,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    meter.size.fetch_add(size, Relaxed);
    meter.files.fetch_add(1, Relaxed);
    let sending = Arc::new(Sending {
        meter,
        sent: AtomicU64::new(0),
        size,
    });
    body.then(move |item| {
        let (sending, progress) = (Arc::clone(&sending), Arc::clone(&progress));
        async move {
            if let Ok(chunk) = &item {
                let n = chunk.len() as u64;
                let mut wait = sending.meter.take(n);
                while !wait.is_zero() {
                    let step = wait.min(MAX_WAIT);
                    tokio::time::sleep(step).await;
                    progress.touch();
                    wait -= step;
                }
                sending.sent.fetch_add(n, Relaxed);
                sending.meter.sent.fetch_add(n, Relaxed);
            }
            item
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_makes_senders_wait_for_what_they_take_beyond_the_cap() {
        let m = UploadMeter::default();
        assert_eq!(m.take(1 << 20), Duration::ZERO, "no cap: no wait");
        m.set_max_rate(Some(1_000_000));
        // An empty bucket: 500 kB at 1 MB/s is half a second of debt, and the next 500 kB
        // wait behind it.
        let first = m.take(500_000);
        let second = m.take(500_000);
        assert!(first >= Duration::from_millis(450), "{first:?}");
        assert!(second >= first + Duration::from_millis(450), "{second:?}");
    }
}
