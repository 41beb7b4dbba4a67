//! The progress of long work (docs/ARCHITECTURE.md#progress): under `scan` on a terminal a
//! progress bar ([`bar`]); under `run`, and under `scan` when stderr is not a terminal, an INFO line every [`crate::daemon::Tuning`]'s
//! `progress_every` while files wait ("uploaded 120/300 files, 1.2/3.4 GB, 25.0 MB/s, about
//! 2 min left"), and one line when the batch is over ("all 300 files backed up").
//!
//! Owns: when a batch starts and ends, and what its lines say. Must not: decide anything;
//! it reads the engine's counters, the queue and the upload meter.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::api::ApiClient;
use crate::db::{queue, Db};
use crate::pipeline::Stats;

/// How often the queue is looked at (the "all backed up" line comes this late at most).
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Files finished (any way) and bytes uploaded, since the daemon started: a change says
/// work happened even between two looks at the queue.
fn finished(st: &Stats) -> (u64, u64) {
    let files = st.uploaded.load(Relaxed)
        + st.duplicates.load(Relaxed)
        + st.linked.load(Relaxed)
        + st.skipped.load(Relaxed)
        + st.failed.load(Relaxed);
    (files, st.uploaded_bytes.load(Relaxed))
}

struct Batch {
    since: Instant,
    files0: u64,
    bytes0: u64,
    last_line: Instant,
}

/// One progress line: `uploaded 120/300 files, 1.2/3.4 GB, 25.0 MB/s, about 2 min left`.
pub fn line(done: u64, total: u64, sent: u64, total_bytes: u64, elapsed: Duration) -> String {
    let gb = |n: u64| n as f64 / 1e9;
    let (sent_s, total_s) = if total_bytes >= 1_000_000_000 {
        (
            format!("{:.1}", gb(sent)),
            format!("{:.1} GB", gb(total_bytes)),
        )
    } else {
        (
            format!("{:.1}", sent as f64 / 1e6),
            format!("{:.1} MB", total_bytes as f64 / 1e6),
        )
    };
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = sent as f64 / secs;
    let left = if rate >= 1.0 && total_bytes > sent {
        let s = Duration::from_secs_f64(((total_bytes - sent) as f64 / rate).min(1e9));
        format!(", about {} left", about(s))
    } else {
        String::new()
    };
    format!(
        "uploaded {done}/{total} files, {sent_s}/{total_s}, {:.1} MB/s{left}",
        rate / 1e6
    )
}

/// `about 2 min`, `40 s`, `3 h 10 min`.
fn about(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min", s.div_ceil(60))
    } else {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    }
}

/// Logs the progress lines until `shutdown` (see the module docs).
pub async fn report(
    db: Db,
    stats: Arc<Stats>,
    api: ApiClient,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(LOOK_EVERY.min(every));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch: Option<Batch> = None;
    let mut before = finished(&stats);
    // Files `done` in the queue at the last look: a batch counts from there.
    let mut done_before = db
        .call(|c| queue::pending_work(c))
        .await
        .map_or(0, |(_, _, d)| d.max(0) as u64);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Idle (no batch, nothing finished since the last look): the unfinished jobs alone
        // say whether a batch starts. Counting the `done` files would walk an index entry
        // per catalogued file every second, at 1,000,000 files for nothing; what they were
        // at the last look still holds.
        if batch.is_none() && finished(&stats) == before {
            match db.call(|c| queue::pending_counts(c)).await {
                Ok((0, 0)) | Err(_) => continue,
                Ok(_) => {}
            }
        }
        let Ok((pending, pending_bytes, done_now)) = db.call(|c| queue::pending_work(c)).await
        else {
            continue;
        };
        let now = finished(&stats);
        let (pending, pending_bytes) = (pending.max(0) as u64, pending_bytes.max(0) as u64);
        let done_now = done_now.max(0) as u64;
        if batch.is_none() && (pending > 0 || now != before) {
            let at = Instant::now();
            batch = Some(Batch {
                since: at,
                files0: done_before,
                bytes0: before.1,
                last_line: at,
            });
        }
        before = now;
        done_before = done_now;
        let Some(b) = &mut batch else { continue };
        if pending == 0 {
            if let Ok((done, failed)) = db.call(|c| queue::done_and_failed(c)).await {
                if failed > 0 {
                    tracing::info!(
                        "{done} files backed up; {failed} failed (see `immish-sync status`)"
                    );
                } else {
                    tracing::info!("all {done} files backed up");
                }
            }
            batch = None;
            continue;
        }
        if b.last_line.elapsed() >= every {
            b.last_line = Instant::now();
            let flight = api.upload_meter().in_flight();
            let done = done_now.saturating_sub(b.files0);
            let sent = now.1 - b.bytes0 + flight.sent;
            let total_bytes = sent + pending_bytes.saturating_sub(flight.sent);
            tracing::info!(
                "{}",
                line(done, done + pending, sent, total_bytes, b.since.elapsed())
            );
        }
    }
}

/// `scan` on a terminal: instead of the INFO lines, one progress bar on stderr (files,
/// bytes, rate, time left), redrawn a few times a second until `shutdown`, then left as it
/// ended. Nothing of it reaches a pipe or a file: the caller picks [`report`] there.
pub async fn bar(db: Db, stats: Arc<Stats>, api: ApiClient, shutdown: CancellationToken) {
    let style = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes}, {bytes_per_sec}, {eta} left",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    let pb = indicatif::ProgressBar::with_draw_target(
        Some(0),
        indicatif::ProgressDrawTarget::stderr_with_hz(4),
    )
    .with_style(style);
    let done0 = db
        .call(|c| queue::pending_work(c))
        .await
        .map_or(0, |(_, _, d)| d.max(0) as u64);
    let bytes0 = stats.uploaded_bytes.load(Relaxed);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stop = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tick.tick() => false,
        };
        if let Ok((pending, pending_bytes, done_now)) = db.call(|c| queue::pending_work(c)).await {
            let flight = api.upload_meter().in_flight();
            let done = (done_now.max(0) as u64).saturating_sub(done0);
            let pending = pending.max(0) as u64;
            let sent = stats.uploaded_bytes.load(Relaxed) - bytes0 + flight.sent;
            let total = sent + (pending_bytes.max(0) as u64).saturating_sub(flight.sent);
            pb.set_length(total);
            pb.set_position(sent);
            pb.set_message(format!("{done}/{} files", done + pending));
        }
        if stop {
            pb.abandon();
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_files_bytes_rate_and_time_left() {
        let l = line(
            120,
            300,
            1_200_000_000,
            3_400_000_000,
            Duration::from_secs(48),
        );
        assert_eq!(
            l,
            "uploaded 120/300 files, 1.2/3.4 GB, 25.0 MB/s, about 2 min left"
        );
        assert_eq!(
            line(1, 3, 0, 3_000_000, Duration::from_secs(1)),
            "uploaded 1/3 files, 0.0/3.0 MB, 0.0 MB/s"
        );
    }
}
