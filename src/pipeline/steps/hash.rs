//! ① Hashing one file, on the blocking pool.
//!
//! Re-stats after hashing: a file that changed meanwhile is queued again, never recorded
//! with a stale checksum. Must not: talk to the server.

use tokio_util::sync::CancellationToken;

use super::{changed_retry, log_db, path_of};
use crate::db::catalogue::{self, FileStat};
use crate::db::queue::{self, ClaimedJob};
use crate::db::{now_ms, Db};
use crate::hash::{hash_file, HashError};
use crate::model::SkipReason;
use crate::pipeline::Stats;

/// Hashes one file (blocking) and records the checksum, or why there is none.
pub(crate) fn hash(db: &Db, stats: &Stats, job: ClaimedJob, cancel: &CancellationToken) {
    let path = path_of(&job.path);
    let now = now_ms();
    let id = job.file_id;
    // The ways this step ends a job without a checksum.
    let skip = |why: SkipReason| log_db(db.call_blocking(|c| queue::skip(c, id, why, now)));
    let fail = |reason: &str| {
        Stats::add(&stats.failed, 1);
        log_db(db.call_blocking(|c| queue::fail(c, id, reason, now)));
    };
    // Deleted or moved away before we got to it: drop quietly; a rescan or the watcher will
    // find it under its new name.
    let vanished = || log_db(db.call_blocking(|c| catalogue::mark_missing(c, &[id], now)));

    let stat_now = match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => FileStat::from_metadata(&m),
        Ok(_) => return skip(SkipReason::NotRegularFile),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return vanished(),
        Err(e) => {
            return fail(&format!(
                "cannot read {}: {e}; will try again when it changes",
                path.display()
            ));
        }
    };
    if stat_now.size == 0 {
        return skip(SkipReason::EmptyFile);
    }
    if let (Some(sum), true) = (job.checksum, stat_now == job.stat) {
        log_db(db.call_blocking(|c| queue::record_hash(c, id, &stat_now, &sum, now)));
        return;
    }
    match hash_file(&path, cancel) {
        Ok((sum, n)) => {
            let after = std::fs::symlink_metadata(&path)
                .ok()
                .map(|m| FileStat::from_metadata(&m));
            if after != Some(stat_now) || n != stat_now.size {
                tracing::debug!(path = %path.display(), "file changed while hashing; looking again later");
                let retry = changed_retry(&job, now_ms());
                log_db(db.call_blocking(|c| {
                    queue::retry_after_change(
                        c,
                        retry,
                        after.as_ref(),
                        "the file changed while it was read",
                        now,
                    )
                }));
                return;
            }
            Stats::add(&stats.hashed, 1);
            Stats::add(&stats.hashed_bytes, n);
            log_db(db.call_blocking(|c| queue::record_hash(c, id, &stat_now, &sum, now_ms())));
        }
        Err(HashError::Cancelled) => {}
        Err(e) if e.is_not_found() => vanished(),
        Err(e) => {
            let reason = format!("{e}; will try again when the file changes");
            tracing::warn!(path = %path.display(), "{reason}");
            fail(&reason);
        }
    }
}
