//! ① Hashing a batch of files, on the blocking pool.
//!
//! Re-stats after hashing: a file that changed meanwhile is queued again, never recorded
//! with a stale checksum. The results of a batch are recorded together, in one transaction
//! (small files cost a commit per batch, not one each); a large file is recorded on its own,
//! so that the files hashed before it go on to dedup without waiting for it. Must not: talk
//! to the server.

use tokio_util::sync::CancellationToken;

use super::{changed_retry, log_db, path_of};
use crate::db::catalogue::FileStat;
use crate::db::queue::{self, ClaimedJob, HashResult};
use crate::db::{now_ms, Db};
use crate::hash::{hash_file_ticking, HashError};
use crate::model::SkipReason;
use crate::pipeline::{Stats, Waker};
use crate::service::Heartbeat;

/// Results waiting to be recorded are written before a file at least this large is read.
const FLUSH_BEFORE: u64 = 8 * 1024 * 1024;

/// Hashes the jobs of one batch in order (blocking) and records what each came to.
pub(crate) fn hash_batch(
    db: &Db,
    stats: &Stats,
    jobs: Vec<ClaimedJob>,
    cancel: &CancellationToken,
    waker: &Waker,
) {
    let mut buf = Vec::new();
    let mut results = Vec::with_capacity(jobs.len());
    // Ticks before every file and every chunk read: a long hash is alive, a read stuck on a
    // hung mount is not (docs/ARCHITECTURE.md#watchdog).
    let beat = crate::service::heartbeat("hashing");
    let record = |results: &mut Vec<HashResult>| {
        beat.tick();
        if !results.is_empty() {
            log_db(db.call_blocking(|c| queue::record_hash_results(c, results, now_ms())));
            results.clear();
        }
    };
    for job in jobs {
        if job.stat.size >= FLUSH_BEFORE && !results.is_empty() {
            record(&mut results);
            waker.wake();
        }
        beat.tick();
        match hash_one(stats, &job, cancel, &mut buf, &beat) {
            Some(r) => results.push(r),
            // Cancelled: the jobs not recorded stay `hashing` and go back to `queued` when
            // the engine stops.
            None => break,
        }
    }
    record(&mut results);
}

/// Hashes one file; `None` when cancelled.
fn hash_one(
    stats: &Stats,
    job: &ClaimedJob,
    cancel: &CancellationToken,
    buf: &mut Vec<u8>,
    beat: &Heartbeat,
) -> Option<HashResult> {
    let path = path_of(&job.path);
    let file_id = job.file_id;
    // The ways this step ends a job without a checksum.
    let skip = |why: SkipReason| Some(HashResult::Skipped { file_id, why });
    let fail = |reason: String| {
        Stats::add(&stats.failed, 1);
        Some(HashResult::Failed { file_id, reason })
    };
    // Deleted or moved away before we got to it: drop quietly; a rescan or the watcher will
    // find it under its new name.
    let vanished = Some(HashResult::Vanished { file_id });

    let stat_now = match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => FileStat::from_metadata(&m),
        Ok(_) => return skip(SkipReason::NotRegularFile),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return vanished,
        Err(e) => {
            return fail(format!(
                "cannot read {}: {e}; will try again when it changes",
                path.display()
            ));
        }
    };
    if stat_now.size == 0 {
        return skip(SkipReason::EmptyFile);
    }
    if let (Some(checksum), true) = (job.checksum, stat_now == job.stat) {
        return Some(HashResult::Hashed {
            file_id,
            stat: stat_now,
            checksum,
        });
    }
    match hash_file_ticking(&path, cancel, buf, &mut || beat.tick()) {
        Ok((checksum, n)) => {
            let after = std::fs::symlink_metadata(&path)
                .ok()
                .map(|m| FileStat::from_metadata(&m));
            if after != Some(stat_now) || n != stat_now.size {
                tracing::debug!(path = %path.display(), "file changed while hashing; looking again later");
                return Some(HashResult::Changed {
                    retry: changed_retry(job, now_ms()),
                    stat: after,
                    reason: "the file changed while it was read",
                });
            }
            Stats::add(&stats.hashed, 1);
            Stats::add(&stats.hashed_bytes, n);
            Some(HashResult::Hashed {
                file_id,
                stat: stat_now,
                checksum,
            })
        }
        Err(HashError::Cancelled) => None,
        Err(e) if e.is_not_found() => vanished,
        Err(e) => {
            let reason = format!("{e}; will try again when the file changes");
            tracing::warn!(path = %path.display(), "{reason}");
            fail(reason)
        }
    }
}
