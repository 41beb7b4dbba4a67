//! The job engine: takes queued files through hash → dedup → upload → verify, with
//! retries, backoff and global pauses.
//!
//! Owns: scheduling (how many hashes, checks and uploads run at once), the in-memory list of
//! jobs accepted for upload, the gate that pauses all network work (401, server full, an
//! outage), and what each step's result does to a job's state.
//!
//! Must not: walk directories (the scanner and watcher queue files), or mark a job `done`
//! before the server confirmed the asset's checksum. Every step is safe to repeat: a job
//! caught in flight by a crash goes back to `queued` on start, and the checksum identifies
//! the asset, so a repeated step finds what the earlier one did.
//!
//! Dedup order (DESIGN.md): ① no network: the tombstones of assets of ours the user deleted
//! on the server (skipped), the catalogue of assets we uploaded or linked, and the mirror of
//! the user's assets on the server; ② `bulk-upload-check` in batches; ③ the upload itself
//! with `x-immich-checksum`.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, ApiError, CheckResult, ErrorClass, UploadRequest};
use crate::db::catalogue::{self, FileStat};
use crate::db::mirror;
use crate::db::queue::{self, ClaimedJob, Outcome};
use crate::db::{now_ms, Db, DbError};
use crate::hash::{hash_file, HashError};
use crate::model::{Checksum, JobState};

/// Largest `bulk-upload-check` request (the Immich CLI's batch; the real limit is the 10 MB
/// JSON body cap).
pub const CHECK_BATCH: usize = 5000;
/// Jobs accepted by dedup and waiting for an upload slot, at most. Bounds memory and keeps
/// the dedup answer fresh.
const UPLOAD_BACKLOG: usize = 1000;
/// Consecutive transient failures that open the circuit breaker (pause all network work).
const BREAKER_THRESHOLD: u32 = 5;
/// How long in-flight work may take to finish after a stop was asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an idle engine looks at the queue without being woken.
const IDLE_LOOK: Duration = Duration::from_secs(30);
/// Delay before a file that changed under us is looked at again.
const CHANGED_DELAY: Duration = Duration::from_secs(2);
/// Why a file is skipped when `bulk-upload-check` finds its content in the server's trash.
pub const TRASHED_REASON: &str = "the server has this photo in its trash; not uploaded again";

/// What the engine needs to know, resolved from the config.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub hash_concurrency: usize,
    pub upload_concurrency: usize,
    pub device_id: String,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// After a 401, how often to ask the server whether the credentials work again.
    pub auth_probe_interval: Duration,
    /// After "server full" (507, quota), how long to wait before trying again.
    pub capacity_pause: Duration,
    /// Upload files whose asset the user trashed or deleted on the server (ignore the
    /// tombstones); `mirror.reupload_deleted`.
    pub reupload_deleted: bool,
}

/// Whether the engine returns when the queue is empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `immish-sync scan`: return when nothing is left to do now, waiting for retries of
    /// jobs that have used fewer than `max_attempts`; stop at a global pause.
    UntilIdle { max_attempts: u32 },
    /// The daemon: run until cancelled.
    Forever,
}

/// Counters of what this engine did, for summaries and tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub hashed: AtomicU64,
    pub hashed_bytes: AtomicU64,
    pub uploaded: AtomicU64,
    pub uploaded_bytes: AtomicU64,
    pub duplicates: AtomicU64,
    pub linked: AtomicU64,
    pub skipped: AtomicU64,
    pub failed: AtomicU64,
    pub retries: AtomicU64,
}

impl Stats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Why all network work is paused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pause {
    /// The server rejected the credentials; probing slowly until they work.
    Auth(String),
    /// The server is full (disk or quota).
    Capacity(String),
    /// Too many transient failures in a row: the server or network is down.
    Outage(String),
    /// A problem no retry fixes (e.g. the key lacks a permission); the daemon waits for the
    /// user.
    Blocked(String),
}

impl Pause {
    pub fn message(&self) -> &str {
        match self {
            Pause::Auth(m) | Pause::Capacity(m) | Pause::Outage(m) | Pause::Blocked(m) => m,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Db(#[from] DbError),
}

/// How the engine stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineEnd {
    /// Nothing left to do (only in `UntilIdle`).
    Idle,
    /// Stopped at a global pause (only in `UntilIdle`).
    Paused(Pause),
    /// Cancelled.
    Cancelled,
}

/// Wakes the engine when new work is queued, and tells it whether more may still come.
#[derive(Clone, Default)]
pub struct Waker {
    notify: Arc<Notify>,
    feeders: Arc<std::sync::atomic::AtomicUsize>,
}

impl Waker {
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// While the returned guard lives, an `UntilIdle` engine does not stop at an empty
    /// queue (a walk is still feeding it).
    pub fn feeding(&self) -> FeedGuard {
        self.feeders.fetch_add(1, Ordering::SeqCst);
        FeedGuard(self.clone())
    }

    fn is_fed(&self) -> bool {
        self.feeders.load(Ordering::SeqCst) > 0
    }
}

/// See [`Waker::feeding`].
pub struct FeedGuard(Waker);

impl Drop for FeedGuard {
    fn drop(&mut self) {
        self.0.feeders.fetch_sub(1, Ordering::SeqCst);
        self.0.wake();
    }
}

pub struct Engine {
    db: Db,
    api: ApiClient,
    cfg: PipelineConfig,
    waker: Waker,
    stats: Arc<Stats>,
}

/// What a finished task tells the engine.
enum Done {
    Hash,
    Check {
        accepted: Vec<ClaimedJob>,
        signal: Signal,
        unchecked: usize,
    },
    Upload {
        job: Box<ClaimedJob>,
        signal: Signal,
    },
    Probe(Result<(), ApiError>),
}

/// A task's effect on the gate.
enum Signal {
    Ok,
    /// A transient failure (the job has been scheduled for a retry already).
    Transient(String),
    /// Needs a global pause; the job (if any) was not charged and goes back to waiting.
    Pause(Pause),
}

/// The gate in front of all network work.
struct Gate {
    pause: Option<Pause>,
    until: Option<Instant>,
    consecutive_failures: u32,
    probe_in_flight: bool,
}

impl Gate {
    fn is_open(&self, now: Instant) -> bool {
        match (&self.pause, self.until) {
            (None, _) => true,
            // An auth pause opens only when a probe succeeds.
            (Some(Pause::Auth(_)), _) => false,
            (Some(_), Some(t)) => now >= t,
            (Some(_), None) => false,
        }
    }
}

impl Engine {
    pub fn new(db: Db, api: ApiClient, cfg: PipelineConfig) -> Engine {
        Engine {
            db,
            api,
            cfg,
            waker: Waker::default(),
            stats: Arc::new(Stats::default()),
        }
    }

    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Runs until idle (per `mode`) or cancelled. On return no job is left in an in-flight
    /// state by this engine.
    pub async fn run(
        &self,
        mode: Mode,
        shutdown: CancellationToken,
    ) -> Result<EngineEnd, EngineError> {
        let mut tasks: JoinSet<Done> = JoinSet::new();
        let mut backlog: VecDeque<ClaimedJob> = VecDeque::new();
        let mut hashing = 0usize;
        let mut uploading = 0usize;
        let mut checking = false;
        let mut gate = Gate {
            pause: None,
            until: None,
            consecutive_failures: 0,
            probe_in_flight: false,
        };
        // Cancels hashing between chunks when we stop.
        let hash_cancel = shutdown.child_token();
        // The pause `status` was last told of (recorded as the connection state).
        let mut shown_pause: Option<Pause> = None;

        let end = loop {
            if shutdown.is_cancelled() {
                break EngineEnd::Cancelled;
            }
            let now = Instant::now();
            if gate.pause.is_some() && gate.is_open(now) {
                tracing::info!("resuming network work");
                gate.pause = None;
                gate.until = None;
            }
            let open = gate.pause.is_none();
            if gate.pause != shown_pause {
                shown_pause = gate.pause.clone();
                let until = gate.until.map(|t| t.saturating_duration_since(now));
                crate::daemon::record_pause(&self.db, shown_pause.as_ref(), until).await;
            }

            // In scan mode a global pause ends the run: the user is told why.
            if let (Mode::UntilIdle { .. }, Some(p)) = (mode, &gate.pause) {
                if !matches!(p, Pause::Outage(_)) {
                    break EngineEnd::Paused(p.clone());
                }
            }

            // ① hashing
            if hashing < self.cfg.hash_concurrency {
                let want = self.cfg.hash_concurrency - hashing;
                let jobs = self
                    .db
                    .call(move |c| queue::claim_for_hash(c, want, now_ms()))
                    .await?;
                for job in jobs {
                    hashing += 1;
                    let db = self.db.clone();
                    let stats = self.stats.clone();
                    let cancel = hash_cancel.clone();
                    tasks.spawn_blocking(move || {
                        hash_step(&db, &stats, job, &cancel);
                        Done::Hash
                    });
                }
            }

            // ② dedup, one batch at a time
            if open && !checking && backlog.len() < UPLOAD_BACKLOG {
                let room = (UPLOAD_BACKLOG - backlog.len()).min(CHECK_BATCH);
                let jobs = self
                    .db
                    .call(move |c| queue::claim_for_check(c, room))
                    .await?;
                if !jobs.is_empty() {
                    checking = true;
                    let db = self.db.clone();
                    let api = self.api.clone();
                    let stats = self.stats.clone();
                    let retry = self.retry_policy();
                    let reupload = self.cfg.reupload_deleted;
                    tasks.spawn(async move {
                        check_step(&db, &api, &stats, &retry, reupload, jobs).await
                    });
                }
            }

            // ③ uploads
            while open && uploading < self.cfg.upload_concurrency {
                let Some(job) = backlog.pop_front() else {
                    break;
                };
                uploading += 1;
                let db = self.db.clone();
                let api = self.api.clone();
                let stats = self.stats.clone();
                let retry = self.retry_policy();
                let device_id = self.cfg.device_id.clone();
                tasks.spawn(async move {
                    let signal = upload_step(&db, &api, &stats, &retry, &device_id, &job).await;
                    Done::Upload {
                        job: Box::new(job),
                        signal,
                    }
                });
            }

            // 401 probe
            if matches!(gate.pause, Some(Pause::Auth(_)))
                && !gate.probe_in_flight
                && gate.until.is_none_or(|t| now >= t)
            {
                gate.probe_in_flight = true;
                let api = self.api.clone();
                tasks.spawn(async move { Done::Probe(api.validate().await) });
            }

            // Idle?
            let busy = hashing > 0 || uploading > 0 || checking || !backlog.is_empty();
            let mut wake_at: Option<Instant> = gate.until;
            if !busy {
                let max_attempts = match mode {
                    Mode::UntilIdle { max_attempts } => Some(max_attempts),
                    Mode::Forever => None,
                };
                let (active, next_retry) = self
                    .db
                    .call(move |c| {
                        Ok((
                            queue::pending_counts(c)?.0,
                            queue::next_retry_due(c, max_attempts)?,
                        ))
                    })
                    .await?;
                if active == 0 {
                    match (mode, next_retry) {
                        (Mode::UntilIdle { .. }, None) if open && !self.waker.is_fed() => {
                            break EngineEnd::Idle
                        }
                        (_, Some(at)) => {
                            let wait = Duration::from_millis((at - now_ms()).max(0) as u64);
                            let t = now + wait;
                            wake_at = Some(wake_at.map_or(t, |w| w.min(t)));
                        }
                        _ => {}
                    }
                } else if !open {
                    // Queued work waits for the gate; nothing to poll until it opens.
                } else {
                    // Work exists that nothing above could start (e.g. a concurrent writer
                    // queued it between our queries): look again shortly.
                    let t = now + Duration::from_millis(200);
                    wake_at = Some(wake_at.map_or(t, |w| w.min(t)));
                }
            }

            // Even with nothing due, look at the queue now and then: another process (the
            // `retry` command) may have queued work without a way to wake us.
            let sleep_until = wake_at.unwrap_or(now + IDLE_LOOK);
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = self.waker.notify.notified() => {}
                _ = tokio::time::sleep_until(sleep_until.into()) => {}
                Some(res) = tasks.join_next(), if !tasks.is_empty() => {
                    let done = match res {
                        Ok(d) => d,
                        Err(e) => {
                            // A task panicked: its job stays in flight and is recovered on
                            // the next start. Count it as a transient failure.
                            tracing::error!(error = %e, "a pipeline task failed");
                            continue;
                        }
                    };
                    match done {
                        Done::Hash => hashing -= 1,
                        Done::Check { accepted, signal, unchecked } => {
                            checking = false;
                            backlog.extend(accepted);
                            if unchecked > 0 {
                                tracing::debug!(unchecked, "dedup batch left jobs unchecked");
                            }
                            self.apply(&mut gate, signal);
                        }
                        Done::Upload { job, signal } => {
                            uploading -= 1;
                            if matches!(signal, Signal::Pause(_)) {
                                backlog.push_front(*job);
                            }
                            self.apply(&mut gate, signal);
                        }
                        Done::Probe(res) => {
                            gate.probe_in_flight = false;
                            match res {
                                Ok(()) => {
                                    tracing::info!("the server accepts the credentials again");
                                    gate.pause = None;
                                    gate.until = None;
                                }
                                Err(e) => {
                                    tracing::debug!(error = %e, "credentials still rejected");
                                    gate.until = Some(Instant::now() + self.cfg.auth_probe_interval);
                                }
                            }
                        }
                    }
                }
            }
        };

        // Stop: take no new work, let what runs finish for a moment, then abandon it.
        hash_cancel.cancel();
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        // Jobs accepted but not started, or abandoned mid-step, go back to `queued`: the
        // queue is consistent for the next start.
        let n = self
            .db
            .call(|c| queue::recover_in_flight(c, now_ms()))
            .await?;
        if n > 0 {
            tracing::debug!(jobs = n, "in-flight jobs returned to the queue");
        }
        Ok(end)
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            initial: self.cfg.retry_initial,
            max: self.cfg.retry_max,
        }
    }

    fn apply(&self, gate: &mut Gate, signal: Signal) {
        match signal {
            Signal::Ok => gate.consecutive_failures = 0,
            Signal::Transient(msg) => {
                gate.consecutive_failures += 1;
                if gate.consecutive_failures >= BREAKER_THRESHOLD && gate.pause.is_none() {
                    let n = gate.consecutive_failures - BREAKER_THRESHOLD;
                    let wait = self.retry_policy().delay(n + 1);
                    tracing::warn!(
                        "{} failures in a row, the last: {msg}; pausing uploads for {}s",
                        gate.consecutive_failures,
                        wait.as_secs()
                    );
                    gate.pause = Some(Pause::Outage(msg));
                    gate.until = Some(Instant::now() + wait);
                }
            }
            Signal::Pause(p) => {
                if gate.pause.as_ref() == Some(&p) {
                    return;
                }
                match &p {
                    Pause::Auth(m) => {
                        tracing::error!(
                            "{m}; pausing all uploads and checking again every {}s",
                            self.cfg.auth_probe_interval.as_secs()
                        );
                        gate.until = Some(Instant::now() + self.cfg.auth_probe_interval);
                    }
                    Pause::Capacity(m) => {
                        tracing::error!(
                            "{m}; pausing uploads for {}s",
                            self.cfg.capacity_pause.as_secs()
                        );
                        gate.until = Some(Instant::now() + self.cfg.capacity_pause);
                    }
                    Pause::Blocked(m) => {
                        // Nothing tells us when the user fixes it (validateToken passes for
                        // any valid key), so try again now and then.
                        tracing::error!(
                            "{m}; uploads are paused, trying again in {}s",
                            self.cfg.capacity_pause.as_secs()
                        );
                        gate.until = Some(Instant::now() + self.cfg.capacity_pause);
                    }
                    Pause::Outage(m) => {
                        tracing::error!("{m}; uploads are paused");
                        gate.until = None;
                    }
                }
                gate.pause = Some(p);
            }
        }
    }
}

/// Exponential backoff with jitter.
#[derive(Clone, Copy, Debug)]
struct RetryPolicy {
    initial: Duration,
    max: Duration,
}

impl RetryPolicy {
    /// The wait before attempt `attempt` (1-based): `initial · 2^(attempt-1)`, capped at
    /// `max`, of which the upper half is random so that many clients do not retry in step.
    fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let base = self
            .initial
            .saturating_mul(1u32 << exp)
            .min(self.max)
            .max(Duration::from_millis(10));
        let half = base / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }
}

fn path_of(bytes: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(bytes))
}

fn display(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Logs a database failure inside a task. The job stays in its state and is recovered on the
/// next start; there is nothing better a task can do with it.
fn log_db(res: Result<(), DbError>) {
    if let Err(e) = res {
        tracing::error!(error = %e, "could not record a job's progress");
    }
}

/// ① Hash one file (blocking). Re-stats after hashing: a file that changed meanwhile is
/// re-queued, never recorded with a stale checksum.
fn hash_step(db: &Db, stats: &Stats, job: ClaimedJob, cancel: &CancellationToken) {
    let path = path_of(&job.path);
    let now = now_ms();
    let id = job.file_id;
    // The ways this step ends a job without a checksum.
    let end = |state: JobState, reason: &str| {
        if state == JobState::Failed {
            Stats::add(&stats.failed, 1);
        }
        log_db(db.call_blocking(|c| queue::finish_with(c, id, state, reason, now)));
    };
    // Deleted or moved away before we got to it: drop quietly; a rescan or the watcher will
    // find it under its new name.
    let vanished = || log_db(db.call_blocking(|c| catalogue::mark_missing(c, &[id], now)));

    let stat_now = match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => FileStat::from_metadata(&m),
        Ok(_) => return end(JobState::Skipped, "no longer a regular file"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return vanished(),
        Err(e) => {
            let reason = format!(
                "cannot read {}: {e}; will try again when it changes",
                path.display()
            );
            return end(JobState::Failed, &reason);
        }
    };
    if stat_now.size == 0 {
        return end(JobState::Skipped, "empty file");
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
                let at = now_ms() + CHANGED_DELAY.as_millis() as i64;
                log_db(db.call_blocking(|c| {
                    queue::requeue_changed(c, id, after.as_ref(), now)?;
                    queue::schedule_retry(
                        c,
                        id,
                        job.attempts + 1,
                        at,
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
            end(JobState::Failed, &reason);
        }
    }
}

/// ② Dedup one batch: tombstones, the catalogue and the mirror first, then
/// `bulk-upload-check` for the rest.
async fn check_step(
    db: &Db,
    api: &ApiClient,
    stats: &Stats,
    retry: &RetryPolicy,
    reupload_deleted: bool,
    jobs: Vec<ClaimedJob>,
) -> Done {
    // ① no network. The tombstone comes first: content the user deleted on the server is
    // never uploaded again, and is not reported as backed up either.
    let owner = api.user_id().to_owned();
    let res = db
        .call(move |c| {
            let tx = c.transaction()?;
            let mut rest = Vec::new();
            let (mut linked, mut skipped) = (0u64, 0u64);
            for job in jobs {
                let Some(sum) = job.checksum else { continue };
                if !reupload_deleted && mirror::tombstone(&tx, &sum)?.is_some() {
                    queue::finish_with(
                        &tx,
                        job.file_id,
                        JobState::Skipped,
                        mirror::DELETED_REASON,
                        now_ms(),
                    )?;
                    skipped += 1;
                    continue;
                }
                if let Some(asset) = catalogue::known_asset(&tx, &sum)? {
                    queue::finish_done(
                        &tx,
                        job.file_id,
                        &sum,
                        asset.as_ref(),
                        Outcome::Linked,
                        false,
                        now_ms(),
                    )?;
                    linked += 1;
                    continue;
                }
                // The mirror holds the server's checksum of an existing asset of the user:
                // that is the verification.
                match mirror::own_live_asset(&tx, &sum, &owner)? {
                    Some(asset) => {
                        queue::finish_done(
                            &tx,
                            job.file_id,
                            &sum,
                            Some(&asset),
                            Outcome::Linked,
                            true,
                            now_ms(),
                        )?;
                        linked += 1;
                    }
                    None => rest.push(job),
                }
            }
            tx.commit()?;
            Ok((rest, linked, skipped))
        })
        .await;
    let (rest, linked, skipped) = match res {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "dedup: cannot read the catalogue");
            return Done::Check {
                accepted: Vec::new(),
                signal: Signal::Ok,
                unchecked: 0,
            };
        }
    };
    Stats::add(&stats.linked, linked);
    Stats::add(&stats.skipped, skipped);
    if rest.is_empty() {
        return Done::Check {
            accepted: Vec::new(),
            signal: Signal::Ok,
            unchecked: 0,
        };
    }

    // ② ask the server.
    let items: Vec<(String, Checksum)> = rest
        .iter()
        .filter_map(|j| j.checksum.map(|s| (j.file_id.to_string(), s)))
        .collect();
    let answers = match api.bulk_upload_check(&items).await {
        Ok(a) => a,
        Err(e) => {
            let n = rest.len();
            return match e.class() {
                ErrorClass::Transient => {
                    let msg = format!("duplicate check failed: {e}");
                    let wait = e.retry_after();
                    let now = now_ms();
                    let retry = *retry;
                    let m = msg.clone();
                    log_db(
                        db.call(move |c| {
                            let tx = c.transaction()?;
                            for j in &rest {
                                let attempts = j.attempts + 1;
                                let d = retry.delay(attempts).max(wait.unwrap_or_default());
                                queue::schedule_retry(
                                    &tx,
                                    j.file_id,
                                    attempts,
                                    now + d.as_millis() as i64,
                                    &m,
                                    now,
                                )?;
                            }
                            tx.commit()
                        })
                        .await,
                    );
                    Stats::add(&stats.retries, n as u64);
                    Done::Check {
                        accepted: Vec::new(),
                        signal: Signal::Transient(msg),
                        unchecked: n,
                    }
                }
                class => Done::Check {
                    accepted: Vec::new(),
                    signal: Signal::Pause(pause_for(class, &e)),
                    unchecked: n,
                },
            };
        }
    };

    let mut by_id: std::collections::HashMap<String, CheckResult> = answers.into_iter().collect();
    let res = db
        .call(move |c| {
            let tx = c.transaction()?;
            let now = now_ms();
            let mut accepted = Vec::new();
            let (mut linked, mut skipped) = (0u64, 0u64);
            for job in rest {
                let Some(sum) = job.checksum else { continue };
                match by_id.remove(&job.file_id.to_string()) {
                    Some(CheckResult::Duplicate {
                        is_trashed: true, ..
                    }) => {
                        queue::finish_with(
                            &tx,
                            job.file_id,
                            JobState::Skipped,
                            TRASHED_REASON,
                            now,
                        )?;
                        skipped += 1;
                    }
                    Some(CheckResult::Duplicate { asset_id, .. }) => {
                        queue::finish_done(
                            &tx,
                            job.file_id,
                            &sum,
                            asset_id.as_ref(),
                            Outcome::Linked,
                            true,
                            now,
                        )?;
                        linked += 1;
                    }
                    // No answer for an id counts as "not there": the upload's own duplicate
                    // check is the last line of defence.
                    Some(CheckResult::Accept) | None => {
                        queue::set_state(&tx, job.file_id, JobState::Uploading, now)?;
                        accepted.push(job);
                    }
                }
            }
            tx.commit()?;
            Ok((accepted, linked, skipped))
        })
        .await;
    match res {
        Ok((accepted, linked, skipped)) => {
            Stats::add(&stats.linked, linked);
            Stats::add(&stats.skipped, skipped);
            Done::Check {
                accepted,
                signal: Signal::Ok,
                unchecked: 0,
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "dedup: cannot record the answers");
            Done::Check {
                accepted: Vec::new(),
                signal: Signal::Ok,
                unchecked: 0,
            }
        }
    }
}

fn pause_for(class: ErrorClass, e: &ApiError) -> Pause {
    match class {
        ErrorClass::Auth => Pause::Auth(format!("the server rejected the credentials: {e}")),
        ErrorClass::Capacity => Pause::Capacity(format!("the server is full: {e}")),
        _ => Pause::Blocked(format!("the server refused the duplicate check: {e}")),
    }
}

/// The names and ids the server sees for a file.
fn upload_request(job: &ClaimedJob, sum: Checksum, device_id: &str) -> UploadRequest {
    let path = path_of(&job.path);
    let file_name = path
        .file_name()
        .map(|n| String::from_utf8_lossy(n.as_bytes()).into_owned())
        .unwrap_or_else(|| "unnamed".into());
    // Birth time where the filesystem keeps it; Immich takes min(created, mtime) anyway.
    let created_ns = std::fs::symlink_metadata(&path)
        .ok()
        .and_then(|m| m.created().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i64)
        .map_or(job.stat.mtime_ns, |c| c.min(job.stat.mtime_ns));
    UploadRequest {
        path,
        size: job.stat.size,
        checksum: sum,
        file_name,
        device_asset_id: device_asset_id(&job.path),
        device_id: device_id.to_string(),
        file_created_ns: created_ns,
        file_modified_ns: job.stat.mtime_ns,
    }
}

/// A stable id per file path (the same after a restart or a lost state directory).
pub fn device_asset_id(path: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(path);
    let name = Path::new(OsStr::from_bytes(path))
        .file_name()
        .map(|n| String::from_utf8_lossy(n.as_bytes()).into_owned())
        .unwrap_or_default();
    format!("{name}-{}", &hex::encode(digest)[..16])
}

/// ③ Upload one file and ④ verify the server's copy.
async fn upload_step(
    db: &Db,
    api: &ApiClient,
    stats: &Stats,
    retry: &RetryPolicy,
    device_id: &str,
    job: &ClaimedJob,
) -> Signal {
    let Some(sum) = job.checksum else {
        return Signal::Ok;
    };
    let file_id = job.file_id;
    let req = upload_request(job, sum, device_id);
    let outcome = match api.upload(&req).await {
        Ok(o) => o,
        Err(e) => return job_error(db, stats, retry, job, "upload", e).await,
    };
    if outcome.duplicate {
        Stats::add(&stats.duplicates, 1);
    } else {
        Stats::add(&stats.uploaded, 1);
        Stats::add(&stats.uploaded_bytes, job.stat.size);
    }
    log_db(
        db.call(move |c| queue::set_state(c, file_id, JobState::Verifying, now_ms()))
            .await,
    );

    // ④ The job is done only when the server's checksum for the asset is ours.
    let asset_id = outcome.asset_id.clone();
    match api.get_asset(&asset_id).await {
        Ok(Some(remote)) => match remote.checksum {
            Some(theirs) if theirs != sum => {
                let reason = format!(
                    "ALERT: the server stored different bytes (asset {asset_id}, server checksum \
                     {theirs}, local {sum}); not marked as backed up, check the server's storage"
                );
                tracing::error!(path = %req.path.display(), "{reason}");
                Stats::add(&stats.failed, 1);
                log_db(
                    db.call(move |c| {
                        queue::finish_with(c, file_id, JobState::Failed, &reason, now_ms())
                    })
                    .await,
                );
                Signal::Ok
            }
            theirs => {
                let verified = theirs.is_some();
                let how = if outcome.duplicate {
                    Outcome::Duplicate
                } else {
                    Outcome::Uploaded
                };
                // The verified record goes into the mirror at once: it is as fresh as a
                // pull would make it, and `diff` and dedup need no pull to know it.
                let change = crate::db::mirror::Change::Upsert(remote);
                log_db(
                    db.call(move |c| {
                        let tx = c.transaction()?;
                        let now = now_ms();
                        queue::finish_done(
                            &tx,
                            file_id,
                            &sum,
                            Some(&asset_id),
                            how,
                            verified,
                            now,
                        )?;
                        let mut applied = crate::db::mirror::Applied::default();
                        crate::db::mirror::apply(
                            &tx,
                            &change,
                            crate::db::mirror::Policy::default(),
                            now,
                            &mut applied,
                        )?;
                        tx.commit()
                    })
                    .await,
                );
                Signal::Ok
            }
        },
        Ok(None) => {
            let e = format!("asset {asset_id} was not found right after its upload");
            schedule(db, stats, retry, job, &e, None).await;
            Signal::Transient(e)
        }
        Err(e) => job_error(db, stats, retry, job, "verify", e).await,
    }
}

async fn schedule(
    db: &Db,
    stats: &Stats,
    retry: &RetryPolicy,
    job: &ClaimedJob,
    reason: &str,
    at_least: Option<Duration>,
) {
    let attempts = job.attempts + 1;
    let wait = retry.delay(attempts).max(at_least.unwrap_or_default());
    let now = now_ms();
    let file_id = job.file_id;
    let reason = reason.to_string();
    Stats::add(&stats.retries, 1);
    log_db(
        db.call(move |c| {
            queue::schedule_retry(
                c,
                file_id,
                attempts,
                now + wait.as_millis() as i64,
                &reason,
                now,
            )
        })
        .await,
    );
}

/// Records what an API error means for this job and tells the engine what it means for the
/// gate.
async fn job_error(
    db: &Db,
    stats: &Stats,
    retry: &RetryPolicy,
    job: &ClaimedJob,
    step: &str,
    e: ApiError,
) -> Signal {
    let path = display(&job.path);
    let file_id = job.file_id;
    match e.class() {
        ErrorClass::Transient => {
            let msg = format!("{step} failed: {e}");
            tracing::warn!(path = %path, "{msg}; will retry");
            schedule(db, stats, retry, job, &msg, e.retry_after()).await;
            Signal::Transient(msg)
        }
        // A 403 is the key lacking a permission: every file would meet it, so it pauses
        // everything instead of failing files one by one.
        ErrorClass::Permanent if e.status() == Some(403) => Signal::Pause(Pause::Blocked(format!(
            "the server refused the {step} for lack of a permission: {e}"
        ))),
        ErrorClass::Permanent => {
            let reason = format!("{step} refused: {e}");
            tracing::warn!(path = %path, "{reason}; not retried until the file changes");
            Stats::add(&stats.failed, 1);
            log_db(
                db.call(move |c| {
                    queue::finish_with(c, file_id, JobState::Failed, &reason, now_ms())
                })
                .await,
            );
            Signal::Ok
        }
        ErrorClass::FileChanged => {
            tracing::debug!(path = %path, "file changed during upload; looking again later");
            let attempts = job.attempts + 1;
            let now = now_ms();
            let at = now + CHANGED_DELAY.as_millis() as i64;
            log_db(
                db.call(move |c| {
                    queue::requeue_changed(c, file_id, None, now)?;
                    queue::schedule_retry(
                        c,
                        file_id,
                        attempts,
                        at,
                        "the file changed while it was sent",
                        now,
                    )
                })
                .await,
            );
            Signal::Ok
        }
        ErrorClass::Auth | ErrorClass::Capacity => Signal::Pause(pause_for(e.class(), &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(600),
        };
        for attempt in 1..=40 {
            let d = p.delay(attempt);
            let base =
                Duration::from_secs(1u64 << (attempt - 1).min(30)).min(Duration::from_secs(600));
            assert!(
                d >= base / 2 && d <= base,
                "attempt {attempt}: {d:?} vs {base:?}"
            );
        }
    }

    #[test]
    fn device_asset_id_is_stable_and_keeps_the_name() {
        let a = device_asset_id(b"/photos/IMG_1.jpg");
        assert_eq!(a, device_asset_id(b"/photos/IMG_1.jpg"));
        assert!(a.starts_with("IMG_1.jpg-"), "{a}");
        assert_ne!(a, device_asset_id(b"/photos/2/IMG_1.jpg"));
        // Non-UTF-8 names still give an id.
        assert!(device_asset_id(b"/p/IMG_\xff.jpg").starts_with("IMG_"));
    }
}
