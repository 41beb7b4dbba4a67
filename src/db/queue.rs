//! The persistent job queue: claiming work and recording each step's result.
//!
//! A job is `done` only after the server confirmed the asset and its checksum. Every
//! transition is one short write; the engine keeps which jobs are in flight in memory, and a
//! restart sends every job caught in an in-flight state back to `queued` (re-running a step
//! is harmless because the checksum identifies the asset).
//!
//! A skipped job carries a [`SkipReason`] code in `skip_reason` (never a sentence: queries
//! match on the code); `reason` is the last error of a failed or retrying job, as people
//! read it.

use rusqlite::{params, Connection, OptionalExtension};

use super::catalogue::FileStat;
use crate::model::{AssetId, Checksum, JobState, SkipReason};

/// A job taken for work, with what the worker needs to know about its file.
#[derive(Clone, Debug)]
pub struct ClaimedJob {
    pub file_id: i64,
    pub path: Vec<u8>,
    pub stat: FileStat,
    /// The cached checksum, valid for `stat`.
    pub checksum: Option<Checksum>,
    pub attempts: u32,
}

/// Sends jobs caught in flight by a crash or a stop back to `queued`. Returns how many.
pub fn recover_in_flight(conn: &Connection, now_ms: i64) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE jobs SET state='queued', updated_at=?1
         WHERE state IN ('hashing', 'checking', 'uploading', 'verifying') AND state <> 'done'",
        [now_ms],
    )
}

/// The condition of the `jobs_queue` index (migration 0014: it holds every job not `done`),
/// added to each query that walks it: SQLite uses a partial index only for a query whose
/// `WHERE` states the index's condition.
const UNFINISHED: &str = "j.state <> 'done'";

const CLAIM_COLUMNS: &str = "f.id, f.path, f.dev, f.ino, f.size, f.mtime_ns, f.ctime_ns, \
                             f.checksum, j.attempts";

fn claimed_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ClaimedJob> {
    let checksum: Option<Vec<u8>> = r.get(7)?;
    Ok(ClaimedJob {
        file_id: r.get(0)?,
        path: r.get(1)?,
        stat: FileStat {
            dev: r.get::<_, i64>(2)? as u64,
            ino: r.get::<_, i64>(3)? as u64,
            size: r.get::<_, i64>(4)? as u64,
            mtime_ns: r.get(5)?,
            ctime_ns: r.get(6)?,
        },
        checksum: checksum.as_deref().and_then(Checksum::from_slice),
        attempts: r.get::<_, i64>(8)? as u32,
    })
}

/// Takes up to `limit` jobs that are `queued`, or in `retry` and due, and marks them
/// `hashing`. Oldest first. Stops early once the files taken hold `max_bytes` (by their
/// catalogued sizes; at least one job is taken), so that one claim of many small files does
/// not also take a row of large ones.
pub fn claim_for_hash(
    conn: &mut Connection,
    limit: usize,
    max_bytes: u64,
    now_ms: i64,
) -> rusqlite::Result<Vec<ClaimedJob>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut jobs = Vec::new();
    let mut bytes = 0u64;
    let full = |jobs: &Vec<ClaimedJob>, bytes: u64| jobs.len() >= limit || bytes >= max_bytes;
    // Two index walks (jobs_queue, jobs_retry) rather than one OR query, which SQLite can
    // only answer by sorting every waiting job.
    {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT {CLAIM_COLUMNS} FROM jobs j JOIN files f ON f.id = j.file_id
             WHERE j.state = 'queued' AND {UNFINISHED}
             ORDER BY j.updated_at, j.file_id"
        ))?;
        // No `LIMIT ?`: SQLite prepares a statement again each time a LIMIT parameter is
        // bound (docs/BENCHMARKS.md, "Session 7"); the index gives the order, so stepping
        // stops where the claim is full.
        let mut rows = stmt.query_map([], claimed_from_row)?;
        while !full(&jobs, bytes) {
            let Some(job) = rows.next().transpose()? else {
                break;
            };
            bytes += job.stat.size;
            jobs.push(job);
        }
    }
    if !full(&jobs, bytes) {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT {CLAIM_COLUMNS} FROM jobs j JOIN files f ON f.id = j.file_id
             WHERE j.state = 'retry' AND j.next_attempt_at <= ?1
             ORDER BY j.next_attempt_at"
        ))?;
        let mut rows = stmt.query_map(params![now_ms], claimed_from_row)?;
        while !full(&jobs, bytes) {
            let Some(job) = rows.next().transpose()? else {
                break;
            };
            bytes += job.stat.size;
            jobs.push(job);
        }
    }
    {
        let mut upd =
            tx.prepare_cached("UPDATE jobs SET state='hashing', updated_at=?2 WHERE file_id=?1")?;
        for j in &jobs {
            upd.execute(params![j.file_id, now_ms])?;
        }
    }
    tx.commit()?;
    Ok(jobs)
}

/// Takes up to `limit` jobs waiting in `checking` (hashed, not yet deduplicated).
///
/// They stay `checking` while the engine works on them; only one check runs at a time.
pub fn claim_for_check(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<ClaimedJob>> {
    claim_for_check_outside(conn, limit, &[])
}

/// `f.root_id NOT IN (the roots ?N, ?N+1, …)` for `held` roots, their parameters numbered
/// from `first`, or nothing.
fn outside(held: &[Vec<u8>], first: usize) -> String {
    if held.is_empty() {
        return String::new();
    }
    let marks: Vec<String> = (0..held.len()).map(|i| format!("?{}", i + first)).collect();
    format!(
        " AND f.root_id NOT IN (SELECT id FROM roots WHERE path IN ({}))",
        marks.join(",")
    )
}

/// [`claim_for_check`], leaving the jobs of the `held` roots (paused by the user,
/// docs/ARCHITECTURE.md#control) where they are.
pub fn claim_for_check_outside(
    conn: &Connection,
    limit: usize,
    held: &[Vec<u8>],
) -> rusqlite::Result<Vec<ClaimedJob>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {CLAIM_COLUMNS} FROM jobs j JOIN files f ON f.id = j.file_id
         WHERE j.state = 'checking' AND {UNFINISHED} AND f.checksum IS NOT NULL{}
         ORDER BY j.updated_at, j.file_id",
        outside(held, 1)
    ))?;
    // No `LIMIT ?` (see `claim_for_hash`): the first `limit` rows in the index's order.
    let args: Vec<&dyn rusqlite::ToSql> = held.iter().map(|h| h as &dyn rusqlite::ToSql).collect();
    let rows = stmt.query_map(args.as_slice(), claimed_from_row)?;
    rows.take(limit).collect()
}

/// Jobs with work to do now, outside the `held` roots: what the engine can still start.
pub fn active_outside(conn: &Connection, held: &[Vec<u8>]) -> rusqlite::Result<i64> {
    if held.is_empty() {
        return Ok(pending_counts(conn)?.0);
    }
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT COUNT(*) FROM jobs j JOIN files f ON f.id = j.file_id
         WHERE j.state IN ('queued','hashing','checking','uploading','verifying')
           AND {UNFINISHED}{}",
        outside(held, 1)
    ))?;
    let args: Vec<&dyn rusqlite::ToSql> = held.iter().map(|h| h as &dyn rusqlite::ToSql).collect();
    stmt.query_row(args.as_slice(), |r| r.get(0))
}

/// Moves a job to a state that needs no extra data (queued, checking, uploading, verifying).
pub fn set_state(
    conn: &Connection,
    file_id: i64,
    state: JobState,
    now_ms: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE jobs SET state=?2, updated_at=?3 WHERE file_id=?1")?
        .execute(params![file_id, state.as_str(), now_ms])?;
    Ok(())
}

/// Records a fresh checksum for the file's current stat and moves the job to `checking`.
pub fn record_hash(
    conn: &Connection,
    file_id: i64,
    stat: &FileStat,
    checksum: &Checksum,
    now_ms: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE files SET checksum=?2, dev=?3, ino=?4, size=?5, mtime_ns=?6, ctime_ns=?7
         WHERE id=?1",
    )?
    .execute(params![
        file_id,
        &checksum.0[..],
        stat.dev as i64,
        stat.ino as i64,
        stat.size as i64,
        stat.mtime_ns,
        stat.ctime_ns
    ])?;
    set_state(conn, file_id, JobState::Checking, now_ms)
}

/// The file changed under us: store its new stat, drop the cached checksum, and queue it
/// again (without counting an attempt: nothing failed).
pub fn requeue_changed(
    conn: &Connection,
    file_id: i64,
    stat: Option<&FileStat>,
    now_ms: i64,
) -> rusqlite::Result<()> {
    match stat {
        Some(s) => conn
            .prepare_cached(
                "UPDATE files SET checksum=NULL, dev=?2, ino=?3, size=?4, mtime_ns=?5,
                     ctime_ns=?6 WHERE id=?1",
            )?
            .execute(params![
                file_id,
                s.dev as i64,
                s.ino as i64,
                s.size as i64,
                s.mtime_ns,
                s.ctime_ns
            ])?,
        None => conn
            .prepare_cached("UPDATE files SET checksum=NULL WHERE id=?1")?
            .execute([file_id])?,
    };
    set_state(conn, file_id, JobState::Queued, now_ms)
}

/// What hashing one claimed job came to, recorded with the rest of its batch by
/// [`record_hash_results`].
#[derive(Clone, Debug)]
pub enum HashResult {
    /// A checksum for exactly `stat` (hashed, or the cached one still matches): the job
    /// goes on to `checking`.
    Hashed {
        file_id: i64,
        stat: FileStat,
        checksum: Checksum,
    },
    /// The file changed while it was read: its new stat (when known) is stored, the cached
    /// checksum dropped, and it is looked at again at `retry.at_ms`.
    Changed {
        retry: RetryAt,
        stat: Option<FileStat>,
        reason: &'static str,
    },
    Skipped {
        file_id: i64,
        why: SkipReason,
    },
    Failed {
        file_id: i64,
        reason: String,
    },
    /// Deleted or moved away before it was read: the file is marked missing.
    Vanished {
        file_id: i64,
    },
}

/// Records a batch of hashing results in one transaction (one commit for many small files
/// instead of one each).
pub fn record_hash_results(
    conn: &mut Connection,
    results: &[HashResult],
    now_ms: i64,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for r in results {
        match r {
            HashResult::Hashed {
                file_id,
                stat,
                checksum,
            } => record_hash(&tx, *file_id, stat, checksum, now_ms)?,
            HashResult::Changed {
                retry,
                stat,
                reason,
            } => {
                requeue_changed(&tx, retry.file_id, stat.as_ref(), now_ms)?;
                schedule_retry(
                    &tx,
                    retry.file_id,
                    retry.attempts,
                    retry.at_ms,
                    reason,
                    now_ms,
                )?;
            }
            HashResult::Skipped { file_id, why } => skip(&tx, *file_id, *why, now_ms)?,
            HashResult::Failed { file_id, reason } => fail(&tx, *file_id, reason, now_ms)?,
            HashResult::Vanished { file_id } => {
                super::catalogue::mark_missing(&tx, &[*file_id], now_ms)?
            }
        }
    }
    tx.commit()
}

/// Moves every job of `file_ids` to `state` (one that needs no extra data), in one
/// transaction.
pub fn set_states(
    conn: &mut Connection,
    file_ids: &[i64],
    state: JobState,
    now_ms: i64,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for id in file_ids {
        set_state(&tx, *id, state, now_ms)?;
    }
    tx.commit()
}

/// How a `done` job got there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// We sent the bytes and the server created the asset.
    Uploaded,
    /// We sent the request and the server said it had the asset already.
    Duplicate,
    /// No body sent: the catalogue or `bulk-upload-check` knew the asset.
    Linked,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Uploaded => "uploaded",
            Outcome::Duplicate => "duplicate",
            Outcome::Linked => "linked",
        }
    }
}

/// The server holds this file's content: the job is `done`.
pub fn finish_done(
    conn: &Connection,
    file_id: i64,
    checksum: &Checksum,
    asset_id: Option<&AssetId>,
    outcome: Outcome,
    verified: bool,
    now_ms: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE files SET asset_id=?2 WHERE id=?1")?
        .execute(params![file_id, asset_id])?;
    conn.prepare_cached(
        "UPDATE jobs SET state='done', outcome=?2, reason=NULL, skip_reason=NULL,
             next_attempt_at=NULL, updated_at=?3 WHERE file_id=?1",
    )?
    .execute(params![file_id, outcome.as_str(), now_ms])?;
    super::catalogue::remember_asset(conn, checksum, asset_id, verified, now_ms)?;
    super::meta::set_last_success_ms(conn, now_ms)
}

/// Ends a job in `skipped`: not uploaded, for `why`.
pub fn skip(conn: &Connection, file_id: i64, why: SkipReason, now_ms: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE jobs SET state='skipped', skip_reason=?2, reason=NULL, next_attempt_at=NULL,
             updated_at=?3
         WHERE file_id=?1",
    )?
    .execute(params![file_id, why.code(), now_ms])?;
    Ok(())
}

/// Ends a job in `failed` with the reason the user will read; it is not tried again until
/// the file changes or the user asks (`retry`).
pub fn fail(conn: &Connection, file_id: i64, reason: &str, now_ms: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE jobs SET state='failed', reason=?2, skip_reason=NULL, next_attempt_at=NULL,
             updated_at=?3
         WHERE file_id=?1",
    )?
    .execute(params![file_id, reason, now_ms])?;
    Ok(())
}

/// A transient failure: try again at `next_at_ms`, counting one more attempt.
pub fn schedule_retry(
    conn: &Connection,
    file_id: i64,
    attempts: u32,
    next_at_ms: i64,
    reason: &str,
    now_ms: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE jobs SET state='retry', attempts=?2, next_attempt_at=?3, reason=?4,
             skip_reason=NULL, updated_at=?5 WHERE file_id=?1",
    )?
    .execute(params![file_id, attempts, next_at_ms, reason, now_ms])?;
    Ok(())
}

/// When a job waiting to retry is tried again, and how many attempts that makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryAt {
    pub file_id: i64,
    pub attempts: u32,
    pub at_ms: i64,
}

/// Schedules a retry of every job in `jobs` for the same transient failure (a batch whose
/// duplicate check failed), in one transaction.
pub fn schedule_retries(
    conn: &mut Connection,
    jobs: &[RetryAt],
    reason: &str,
    now_ms: i64,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for j in jobs {
        schedule_retry(&tx, j.file_id, j.attempts, j.at_ms, reason, now_ms)?;
    }
    tx.commit()
}

/// Makes due now every job waiting to retry after a failure recorded since `since_ms` (an
/// outage that just ended: those failures were the server's, not the files'). The attempts
/// stay counted. Returns how many jobs were moved.
pub fn retry_now_since(conn: &Connection, since_ms: i64, now_ms: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "UPDATE jobs SET next_attempt_at=?2
         WHERE state='retry' AND updated_at >= ?1 AND next_attempt_at > ?2",
    )?
    .execute(params![since_ms, now_ms])
}

/// The file changed while a step read or sent it: store its new stat (when known), drop the
/// cached checksum and look at it again at `retry.at_ms`. One transaction, so that a crash
/// cannot leave the job queued with the old checksum gone but no retry scheduled.
pub fn retry_after_change(
    conn: &mut Connection,
    retry: RetryAt,
    stat: Option<&FileStat>,
    reason: &str,
    now_ms: i64,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    requeue_changed(&tx, retry.file_id, stat, now_ms)?;
    schedule_retry(
        &tx,
        retry.file_id,
        retry.attempts,
        retry.at_ms,
        reason,
        now_ms,
    )?;
    tx.commit()
}

/// What the duplicate check found for one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckAnswer {
    /// Not uploaded (a tombstone, or the content is in the server's trash).
    Skip(SkipReason),
    /// The server holds the content already: `done` without sending it. `verified` when
    /// the server's checksum for the asset is known to be ours (the mirror or
    /// `bulk-upload-check` said so, not only our own catalogue).
    Linked {
        asset: Option<AssetId>,
        verified: bool,
    },
    /// Not on the server: the job goes on to `uploading`.
    Upload,
}

/// A job's answer from the duplicate check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub file_id: i64,
    pub checksum: Checksum,
    pub answer: CheckAnswer,
}

/// Records the duplicate check's answers for a batch, in one transaction.
pub fn record_check_answers(
    conn: &mut Connection,
    answers: &[Checked],
    now_ms: i64,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    write_check_answers(&tx, answers, now_ms)?;
    tx.commit()
}

/// [`record_check_answers`] inside a transaction the caller holds (the local dedup stages
/// read and answer a batch in one).
pub fn write_check_answers(
    tx: &Connection,
    answers: &[Checked],
    now_ms: i64,
) -> rusqlite::Result<()> {
    for a in answers {
        match &a.answer {
            CheckAnswer::Skip(why) => skip(tx, a.file_id, *why, now_ms)?,
            CheckAnswer::Linked { asset, verified } => finish_done(
                tx,
                a.file_id,
                &a.checksum,
                asset.as_ref(),
                Outcome::Linked,
                *verified,
                now_ms,
            )?,
            CheckAnswer::Upload => set_state(tx, a.file_id, JobState::Uploading, now_ms)?,
        }
    }
    Ok(())
}

/// When the next `retry` job becomes due (unix ms), ignoring jobs that have used up
/// `max_attempts` when one is given.
pub fn next_retry_due(
    conn: &Connection,
    max_attempts: Option<u32>,
) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached(
        "SELECT MIN(next_attempt_at) FROM jobs WHERE state='retry' AND (?1 IS NULL OR attempts < ?1)",
    )?
    .query_row([max_attempts.map(i64::from)], |r| r.get(0))
    .optional()
    .map(Option::flatten)
}

/// Jobs that still have work to do now or later: (active, waiting to retry).
///
/// Counted through the `jobs_queue` index, so the cost follows the jobs not yet finished,
/// not the whole catalogue (the engine asks each time it runs out of work).
pub fn pending_counts(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    let p = pending(conn, false)?;
    Ok((p.active, p.retry))
}

/// The unfinished jobs: with work to do now, waiting to retry, and the catalogued bytes of
/// both (0 unless `bytes` is asked for, which reads their `files` rows too).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    pub active: i64,
    pub retry: i64,
    pub bytes: i64,
}

/// The states of a job with work to do now.
const ACTIVE_STATES: [JobState; 5] = [
    JobState::Queued,
    JobState::Hashing,
    JobState::Checking,
    JobState::Uploading,
    JobState::Verifying,
];

/// One pass over the `jobs_queue` index for the unfinished states, counted per state (the
/// sizes joined from `files` by rowid only when asked for).
const PENDING_COUNTS: &str = "SELECT j.state, COUNT(*) FROM jobs j
     WHERE j.state IN ('queued','hashing','checking','uploading','verifying','retry')
         AND j.state <> 'done'
     GROUP BY j.state";
const PENDING_BYTES: &str = "SELECT j.state, COUNT(*), COALESCE(SUM(f.size), 0)
     FROM jobs j JOIN files f ON f.id = j.file_id
     WHERE j.state IN ('queued','hashing','checking','uploading','verifying','retry')
         AND j.state <> 'done'
     GROUP BY j.state";

/// [`Pending`], its bytes only when `bytes` (the progress lines want them, the engine not).
pub fn pending(conn: &Connection, bytes: bool) -> rusqlite::Result<Pending> {
    let mut stmt = conn.prepare_cached(if bytes { PENDING_BYTES } else { PENDING_COUNTS })?;
    let mut rows = stmt.query([])?;
    let mut p = Pending::default();
    while let Some(r) = rows.next()? {
        let state: String = r.get(0)?;
        let n: i64 = r.get(1)?;
        if state == JobState::Retry.as_str() {
            p.retry += n;
        } else if ACTIVE_STATES.iter().any(|s| s.as_str() == state) {
            p.active += n;
        }
        if bytes {
            p.bytes += r.get::<_, i64>(2)?;
        }
    }
    Ok(p)
}

/// Puts every `failed` job (or only those of the files of `root`, as its files record it)
/// back in the queue.
pub fn retry_failed(
    conn: &Connection,
    now_ms: i64,
    root: Option<&[u8]>,
) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE jobs SET state='queued', attempts=0, next_attempt_at=NULL, reason=NULL,
             skip_reason=NULL, updated_at=?1 WHERE state IN ('failed', 'retry') AND state <> 'done'
             AND (?2 IS NULL OR file_id IN
                  (SELECT f.id FROM files f JOIN roots r ON r.id = f.root_id WHERE r.path = ?2))",
        rusqlite::params![now_ms, root],
    )
}

/// A job as `status` shows it.
#[derive(Clone, Debug)]
pub struct JobReport {
    pub path: Vec<u8>,
    pub state: JobState,
    /// Why it is skipped, failed or waiting, as people read it.
    pub reason: Option<String>,
    /// Why it is skipped, when it is and this version knows the code.
    pub skip: Option<SkipReason>,
    pub attempts: u32,
    pub updated_at_ms: i64,
    pub next_attempt_at_ms: Option<i64>,
}

/// The most recent jobs in one of `states`, newest first.
pub fn recent(
    conn: &Connection,
    states: &[JobState],
    limit: usize,
) -> rusqlite::Result<Vec<JobReport>> {
    let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
    let placeholders = vec!["?"; names.len()].join(",");
    // Without `done` among them, through `jobs_queue` (migration 0014).
    let unfinished = if states.contains(&JobState::Done) {
        String::new()
    } else {
        format!(" AND {UNFINISHED}")
    };
    let sql = format!(
        "SELECT f.path, j.state, j.reason, j.attempts, j.updated_at, j.next_attempt_at,
                j.skip_reason
         FROM jobs j JOIN files f ON f.id = j.file_id
         WHERE j.state IN ({placeholders}){unfinished} ORDER BY j.updated_at DESC LIMIT {limit}"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(names.iter()), |r| {
        let state: String = r.get(1)?;
        let skip = skip_reason_of(r.get(6)?);
        Ok(JobReport {
            path: r.get(0)?,
            state: JobState::parse(&state).unwrap_or(JobState::Failed),
            reason: shown_reason(skip, r.get(2)?),
            skip,
            attempts: r.get::<_, i64>(3)? as u32,
            updated_at_ms: r.get(4)?,
            next_attempt_at_ms: r.get(5)?,
        })
    })?;
    rows.collect()
}

/// What is not backed up yet, as the end of a `scan` reports it.
#[derive(Clone, Debug)]
pub struct Backlog {
    /// Jobs still `queued`…`verifying` or waiting to `retry`.
    pub pending: i64,
    /// Jobs that `failed`.
    pub failed_total: i64,
    /// The most recent `failed` and `retry` jobs, newest first.
    pub recent_problems: Vec<JobReport>,
}

/// [`Backlog`], with at most `limit` recent problems.
pub fn backlog(conn: &Connection, limit: usize) -> rusqlite::Result<Backlog> {
    let (active, retry) = pending_counts(conn)?;
    let failed_total = conn
        .prepare_cached("SELECT COUNT(*) FROM jobs WHERE state = 'failed' AND state <> 'done'")?
        .query_row([], |r| r.get(0))?;
    Ok(Backlog {
        pending: active + retry,
        failed_total,
        recent_problems: recent(conn, &[JobState::Failed, JobState::Retry], limit)?,
    })
}

/// The skip reason of a stored code (`None` when absent, or from a newer version).
pub(super) fn skip_reason_of(code: Option<String>) -> Option<SkipReason> {
    code.as_deref().and_then(SkipReason::from_code)
}

/// The reason people read for a job: the sentence of its skip code, else the stored text
/// (an error, or a skip sentence no migration knew).
pub(super) fn shown_reason(skip: Option<SkipReason>, reason: Option<String>) -> Option<String> {
    skip.map(|s| s.describe().to_owned()).or(reason)
}

/// For a read-only connection to a database still at schema version 3 (only a read-write
/// open migrates, and a daemon of the previous version may be holding it): shows `jobs` as
/// version 4 has it, through a temporary view over the real table, so that `status`,
/// `mirror` and `diff` keep working across an upgrade. Writes nothing: TEMP objects live in
/// the connection's own temporary schema, which is searched before `main`. The mapping is
/// migration 0004's.
pub(super) fn read_v3_jobs_as_v4(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TEMP VIEW jobs AS
         SELECT file_id, state, attempts, next_attempt_at,
                CASE WHEN code IS NULL THEN reason END AS reason,
                outcome, updated_at, code AS skip_reason
         FROM (SELECT j.*, CASE WHEN j.state = 'skipped' THEN CASE j.reason
                   WHEN 'deleted on the server by the user; not uploaded again (set mirror.reupload_deleted = true to change that)'
                       THEN 'deleted_on_server'
                   WHEN 'the server has this photo in its trash; not uploaded again'
                       THEN 'trashed_on_server'
                   WHEN 'no longer a regular file' THEN 'not_a_regular_file'
                   WHEN 'empty file' THEN 'empty_file'
                   WHEN 'file vanished before it was backed up' THEN 'vanished'
               END END AS code
               FROM main.jobs j)",
    )
}

/// What is left to back up, for the progress lines (docs/ARCHITECTURE.md#progress): files
/// still `queued`…`verifying` or waiting to `retry`, their bytes, and the files `done`, read
/// in one transaction so that a file is never counted as both.
pub fn pending_work(conn: &Connection) -> rusqlite::Result<(i64, i64, i64)> {
    let tx = conn.unchecked_transaction()?;
    let p = pending(&tx, true)?;
    let done = done_count(&tx)?;
    tx.commit()?;
    Ok((p.active + p.retry, p.bytes, done))
}

/// Files backed up (`done`) and files that `failed`, for the line that ends a batch.
pub fn done_and_failed(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    let failed = conn
        .prepare_cached("SELECT COUNT(*) FROM jobs WHERE state = 'failed' AND state <> 'done'")?
        .query_row([], |r| r.get(0))?;
    Ok((done_count(conn)?, failed))
}

/// How many jobs are `done`: the row migration 0014's triggers keep (the `done` jobs are not
/// in `jobs_queue`, so counting them would read every job).
pub fn done_count(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT n FROM jobs_done")?
        .query_row([], |r| r.get(0))
}

/// For a read-only open of a database from before migration 0014: `jobs_done` as a
/// temporary view that counts (a daemon of an earlier version keeps no count). Writes
/// nothing (TEMP objects).
pub(super) fn read_old_jobs_as_v14(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TEMP VIEW jobs_done AS SELECT COUNT(*) AS n FROM jobs WHERE state = 'done';",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{catalogue, Db};

    #[test]
    fn the_backlog_counts_what_is_not_backed_up() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("s.sqlite3")).unwrap();
        db.call_blocking(|c| {
            let mut ids = Vec::new();
            for i in 0..4u64 {
                let stat = FileStat {
                    dev: 1,
                    ino: i,
                    size: 10,
                    mtime_ns: 1,
                    ctime_ns: 1,
                };
                let path = format!("/r/{i}.jpg");
                ids.push(catalogue::upsert_and_queue(
                    c,
                    b"/r",
                    path.as_bytes(),
                    &stat,
                    1,
                )?);
            }
            fail(c, ids[0], "unreadable", 2)?;
            skip(c, ids[1], SkipReason::EmptyFile, 2)?;
            schedule_retry(c, ids[2], 1, 10, "503", 3)?;
            let b = backlog(c, 20)?;
            assert_eq!(
                (b.pending, b.failed_total),
                (2, 1),
                "queued and retry; failed"
            );
            let states: Vec<JobState> = b.recent_problems.iter().map(|j| j.state).collect();
            assert_eq!(states, [JobState::Retry, JobState::Failed], "newest first");
            assert_eq!(backlog(c, 1)?.recent_problems.len(), 1);
            Ok(())
        })
        .unwrap();
    }

    fn queue_files(c: &Connection, sizes: &[u64]) -> rusqlite::Result<Vec<i64>> {
        let mut ids = Vec::new();
        for (i, size) in sizes.iter().enumerate() {
            let stat = FileStat {
                dev: 1,
                ino: i as u64,
                size: *size,
                mtime_ns: 1,
                ctime_ns: 1,
            };
            let path = format!("/r/{i}.jpg");
            ids.push(catalogue::upsert_and_queue(
                c,
                b"/r",
                path.as_bytes(),
                &stat,
                1,
            )?);
        }
        Ok(ids)
    }

    /// One claim takes many small files, but stops at the byte bound, so that a hashing
    /// task is not handed a row of large files with them; it always takes one.
    #[test]
    fn a_claim_stops_at_its_byte_bound_and_takes_at_least_one_job() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("s.sqlite3")).unwrap();
        db.call_blocking(|c| {
            let ids = queue_files(c, &[10, 10, 100, 1000, 10])?;
            let first = claim_for_hash(c, 64, 120, 5)?;
            let got: Vec<i64> = first.iter().map(|j| j.file_id).collect();
            assert_eq!(got, ids[..3], "oldest first, until 120 bytes are held");
            let second = claim_for_hash(c, 64, 120, 5)?;
            assert_eq!(
                second.len(),
                1,
                "a file larger than the bound is taken alone"
            );
            assert_eq!(second[0].file_id, ids[3]);
            let third = claim_for_hash(c, 64, 120, 5)?;
            assert_eq!(
                third.iter().map(|j| j.file_id).collect::<Vec<_>>(),
                [ids[4]]
            );
            assert!(claim_for_hash(c, 64, 120, 5)?.is_empty());
            let (active, _) = pending_counts(c)?;
            assert_eq!(active, 5, "all five hashing");
            Ok(())
        })
        .unwrap();
    }

    /// The engine counts what is left each time it runs out of work: that must walk the
    /// index of unfinished states, never every job of the catalogue.
    #[test]
    fn counting_pending_jobs_does_not_scan_the_whole_queue() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("s.sqlite3")).unwrap();
        db.call_blocking(|c| {
            for sql in [PENDING_COUNTS, PENDING_BYTES] {
                let plan = crate::db::plans::query_plan(c, sql)?;
                assert!(
                    plan.iter()
                        .all(|step| !step.starts_with("SCAN j") && !step.starts_with("SCAN f")),
                    "{sql}: {plan:?}"
                );
            }
            let ids = queue_files(c, &[1, 2, 3])?;
            schedule_retry(c, ids[0], 1, 10, "503", 2)?;
            assert_eq!(pending_counts(c)?, (2, 1));
            assert_eq!(pending_work(c)?, (3, 6, 0), "three pending of 1+2+3 bytes");
            Ok(())
        })
        .unwrap();
    }
}

/// What the catalogue and the queue know of one file, for `explain`.
#[derive(Clone, Debug)]
pub struct FileFacts {
    pub size: u64,
    pub mtime_ns: i64,
    pub asset_id: Option<String>,
    pub missing: bool,
    pub last_seen_ms: i64,
    /// The job, when the file has one.
    pub job: Option<JobReport>,
    /// How a `done` job got there: uploaded, duplicate, linked.
    pub outcome: Option<String>,
}

/// [`FileFacts`] of the file at `path`, if the catalogue has it.
pub fn file_facts(conn: &Connection, path: &[u8]) -> rusqlite::Result<Option<FileFacts>> {
    conn.prepare_cached(
        "SELECT f.size, f.mtime_ns, f.asset_id, f.missing, f.last_seen,
                j.state, j.reason, j.attempts, j.updated_at, j.next_attempt_at, j.skip_reason,
                j.outcome
         FROM files f LEFT JOIN jobs j ON j.file_id = f.id WHERE f.path = ?1",
    )?
    .query_row([path], |r| {
        let state: Option<String> = r.get(5)?;
        let skip = skip_reason_of(r.get(10)?);
        let job = match state {
            Some(state) => Some(JobReport {
                path: path.to_vec(),
                state: JobState::parse(&state).unwrap_or(JobState::Failed),
                reason: shown_reason(skip, r.get(6)?),
                skip,
                attempts: r.get::<_, i64>(7)? as u32,
                updated_at_ms: r.get(8)?,
                next_attempt_at_ms: r.get(9)?,
            }),
            None => None,
        };
        Ok(FileFacts {
            size: r.get::<_, i64>(0)? as u64,
            mtime_ns: r.get(1)?,
            asset_id: super::ids::opt_id(r, 2)?,
            missing: r.get::<_, i64>(3)? != 0,
            last_seen_ms: r.get(4)?,
            job,
            outcome: r.get(11)?,
        })
    })
    .optional()
}
