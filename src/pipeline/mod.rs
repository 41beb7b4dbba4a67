//! The job engine: takes queued files through hash → dedup → upload → verify, with
//! retries, backoff and global pauses.
//!
//! Owns: scheduling (how many hashes, checks and uploads run at once), the in-memory list of
//! jobs accepted for upload, the [`gate`] that pauses all network work (401, server full, an
//! outage), and what each step's result does to a job's state ([`steps`]). Every write goes
//! through a named unit of work of `db/`; a global pause (or its end) is recorded as the
//! connection state `status` shows. When an outage ends, the jobs that failed in it are
//! due at once: their own retry backoff is for failures of one file, not of the server.
//!
//! Must not: walk directories (the scanner and watcher queue files), or mark a job `done`
//! before the server confirmed the asset's checksum. Every step is safe to repeat: a job
//! caught in flight by a crash goes back to `queued` on start, and the checksum identifies
//! the asset, so a repeated step finds what the earlier one did.
//!
//! Dedup order (docs/ARCHITECTURE.md#dedup-order): ① no network: the tombstones of assets of
//! ours the user deleted on the server (skipped), the catalogue of assets we uploaded or
//! linked, and the mirror of the user's assets on the server; ② `bulk-upload-check` in
//! batches; ③ the upload itself with `x-immich-checksum`.

mod gate;
mod steps;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, ApiError};
use crate::backoff::Backoff;
use crate::config::{HashConfig, MirrorConfig, UploadConfig};
use crate::db::meta::{self, ConnectionState};
use crate::db::queue::{self, ClaimedJob};
use crate::db::{now_ms, Db, DbError};
use gate::{Gate, Signal};
use steps::Ctx;

pub use gate::{Outage, Pause, PauseTimes, BREAKER_THRESHOLD, OUTAGE_PROBE};
pub use steps::upload::device_asset_id;

/// Largest `bulk-upload-check` request (the Immich CLI's batch; the real limit is the 10 MB
/// JSON body cap).
pub const CHECK_BATCH: usize = 5000;
/// Jobs accepted by dedup and waiting for an upload slot, at most. Bounds memory and keeps
/// the dedup answer fresh.
const UPLOAD_BACKLOG: usize = 1000;
/// Jobs one hashing task takes at most, and the bytes it takes at most (at least one job):
/// small files are hashed and recorded many to a task, not one each.
const HASH_BATCH: usize = 64;
const HASH_BATCH_BYTES: u64 = 16 * 1024 * 1024;
/// A verification batch starts once this many uploads wait, when no upload is in flight, or
/// when the oldest has waited [`VERIFY_WAIT`]: one bulk check for many uploads, and no upload
/// waits long for its verdict behind a large one still being sent.
const VERIFY_BATCH: usize = 64;
const VERIFY_WAIT: Duration = Duration::from_millis(500);
/// How long in-flight work may take to finish after a stop was asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an idle engine looks at the queue without being woken.
const IDLE_LOOK: Duration = Duration::from_secs(30);
/// How soon to look again at work that exists but that nothing could start.
const RELOOK: Duration = Duration::from_millis(200);
/// How long before an outage's first failure the failures that end in its retries may have
/// been recorded (a task records its job's retry before the engine hears of it).
const OUTAGE_MARGIN: Duration = Duration::from_secs(1);

/// What the engine is given: its sections of the resolved config, and what start-up
/// settled.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `hash.concurrency`.
    pub hash: HashConfig,
    /// `upload.concurrency`, and the job retry backoff (`retry_initial`, `retry_max`).
    pub upload: UploadConfig,
    /// `mirror.reupload_deleted`: upload files whose asset the user trashed or deleted on
    /// the server (ignore the tombstones).
    pub mirror: MirrorConfig,
    /// The device id the server sees (the config's, or the one generated at first start).
    pub device_id: String,
    pub pauses: PauseTimes,
    /// The user's pauses (`immish-sync pause`), changed while the engine runs.
    pub hold: Hold,
    /// How each root dates its files (`dates_from_names`, `timezone`), by root path.
    pub dating: Vec<(PathBuf, crate::dates::Dating)>,
}

/// What the user paused (docs/ARCHITECTURE.md#control): with `all`, no check or upload
/// starts; otherwise none of a file under one of `roots` (root paths as stored in
/// `files.root`). Hashing goes on; work in flight finishes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holds {
    pub all: bool,
    pub roots: Vec<Vec<u8>>,
}

impl Holds {
    /// Whether a job of the file at `path` may be checked or uploaded now.
    fn lets(&self, path: &[u8]) -> bool {
        !self.all
            && !self.roots.iter().any(|r| {
                path.starts_with(r) && (path.len() == r.len() || path.get(r.len()) == Some(&b'/'))
            })
    }
}

/// [`Holds`] shared between the engine and whoever changes them (the control socket).
#[derive(Clone, Debug, Default)]
pub struct Hold(Arc<std::sync::RwLock<Holds>>);

impl Hold {
    pub fn set(&self, holds: Holds) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = holds;
    }

    pub fn get(&self) -> Holds {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The wait before a job's next attempt after a transient failure.
fn retry_backoff(upload: &UploadConfig) -> Backoff {
    Backoff::new(upload.retry_initial, upload.retry_max)
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
    /// Outside the upload windows: when the next opens (unix ms); 0 while uploads may start.
    pub uploads_resume_ms: AtomicI64,
}

impl Stats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
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
    feeders: Arc<AtomicUsize>,
    /// Set by [`Waker::server_answered`], taken by the engine's loop.
    answered: Arc<AtomicBool>,
}

impl Waker {
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// The server just answered another part of the daemon (the live-event socket
    /// connected, a pull succeeded): an outage's probe is sent at once, so that uploads
    /// resume without waiting out the probe's backoff.
    pub fn server_answered(&self) {
        self.answered.store(true, Ordering::SeqCst);
        self.wake();
    }

    fn take_answered(&self) -> bool {
        self.answered.swap(false, Ordering::SeqCst)
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
    settings: Settings,
    waker: Waker,
    stats: Arc<Stats>,
    /// The outage going on, if one is (for `status`); `None` while the server answers.
    outage: watch::Sender<Option<Outage>>,
}

/// What a finished task tells the engine.
pub(crate) enum Done {
    Hash,
    Check {
        accepted: Vec<ClaimedJob>,
        signal: Signal,
        unchecked: usize,
    },
    Upload {
        job: Box<ClaimedJob>,
        signal: Signal,
        /// What the server answered, for verification.
        uploaded: Option<Box<steps::verify::Uploaded>>,
    },
    Verify {
        signal: Signal,
        /// Uploads met by a pause, to verify once the gate opens.
        again: Vec<steps::verify::Uploaded>,
    },
    Probe(Result<(), ApiError>),
}

impl Done {
    fn checked(accepted: Vec<ClaimedJob>, signal: Signal, unchecked: usize) -> Done {
        Done::Check {
            accepted,
            signal,
            unchecked,
        }
    }
}

/// What the loop does after starting what it could.
enum Next {
    /// Nothing left to do: an `UntilIdle` run ends.
    Idle,
    /// Wait for a task, a wake-up or this time.
    SleepUntil(Instant),
}

impl Engine {
    pub fn new(db: Db, api: ApiClient, settings: Settings) -> Engine {
        Engine {
            db,
            api,
            settings,
            waker: Waker::default(),
            stats: Arc::new(Stats::default()),
            outage: watch::Sender::new(None),
        }
    }

    /// The engine woken by `waker` (one that outlives this engine: the control socket
    /// keeps it across the daemon's generations).
    pub fn with_waker(mut self, waker: Waker) -> Engine {
        self.waker = waker;
        self
    }

    /// The outage going on (since when, when the next probe is due), updated as it changes;
    /// `None` while the server answers.
    pub fn outage(&self) -> watch::Receiver<Option<Outage>> {
        self.outage.subscribe()
    }

    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }

    /// Counts into `stats`, shared with the daemon's live state (its counts since it
    /// started, across restarts of the task tree).
    pub fn with_stats(mut self, stats: Arc<Stats>) -> Engine {
        self.stats = stats;
        self
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
        let mut run = Run::new(self, mode, &shutdown);
        // The pause `status` was last told of (recorded as the connection state).
        let mut shown_pause: Option<Pause> = None;
        // The watchdog's view of this loop (docs/ARCHITECTURE.md#watchdog): it ticks every
        // turn and names the deadline of its wait, so a pause or an outage is alive and a
        // loop stuck in a step misses its pings.
        let beat = crate::service::heartbeat("engine");
        let end = loop {
            beat.tick();
            if shutdown.is_cancelled() {
                break EngineEnd::Cancelled;
            }
            let now = Instant::now();
            if self.waker.take_answered() {
                run.gate.server_answered(now);
            }
            run.gate.reopen_if_due(now);
            if run.gate.pause() != shown_pause.as_ref() {
                shown_pause = run.gate.pause().cloned();
                let until = run.gate.wake_at().map(|t| t.saturating_duration_since(now));
                record_pause(&self.db, shown_pause.as_ref(), until).await;
            }
            let outage = run.gate.outage();
            self.outage.send_if_modified(|o| {
                let changed = *o != outage;
                *o = outage;
                changed
            });
            // In scan mode a global pause ends the run: the user is told why.
            if let (Mode::UntilIdle { .. }, Some(p)) = (mode, run.gate.stops_scan()) {
                break EngineEnd::Paused(p.clone());
            }

            run.check_window(now);
            run.start_hashing(now).await?;
            run.start_check(now).await?;
            run.start_uploads();
            run.start_verify(now);
            run.start_probe(now);
            let sleep_until = match run.next(now).await? {
                Next::Idle => break EngineEnd::Idle,
                Next::SleepUntil(t) => t,
            };
            let sleep_until = beat
                .wait_until(Some(sleep_until.into()))
                .map_or(sleep_until, |t| t.into_std());

            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = self.waker.notify.notified() => run.news(),
                _ = tokio::time::sleep_until(sleep_until.into()) => {}
                Some(res) = run.tasks.join_next(), if !run.tasks.is_empty() => run.finished(res).await?,
            }
        };
        // Draining waits at most DRAIN_TIMEOUT, then the queue is put right.
        beat.busy_for(DRAIN_TIMEOUT * 2);
        run.stop().await?;
        self.outage.send_replace(None);
        self.stats.uploads_resume_ms.store(0, Ordering::Relaxed);
        Ok(end)
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            db: self.db.clone(),
            api: self.api.clone(),
            stats: self.stats.clone(),
            retry: retry_backoff(&self.settings.upload),
            dating: Arc::new(self.settings.dating.clone()),
        }
    }
}

/// One [`Engine::run`]: the tasks in flight, the jobs accepted for upload, and the gate.
struct Run<'e> {
    engine: &'e Engine,
    mode: Mode,
    tasks: JoinSet<Done>,
    backlog: VecDeque<ClaimedJob>,
    /// Uploads the server answered, waiting for the next verification batch.
    to_verify: Vec<steps::verify::Uploaded>,
    /// When the oldest of `to_verify` came.
    to_verify_since: Option<Instant>,
    /// Hashing tasks (each a batch of jobs) in flight.
    hashing: usize,
    uploading: usize,
    checking: bool,
    verifying: bool,
    /// After a claim found less than it could take: no claim of that kind before this time
    /// unless news comes (a wake-up, hashed jobs for the check), so that finishing uploads
    /// do not cost an empty query each.
    hash_dry_until: Option<Instant>,
    check_dry_until: Option<Instant>,
    gate: Gate,
    /// Outside the upload windows: when the next one opens (no upload starts before).
    window_opens: Option<Instant>,
    /// Cancels hashing between chunks when we stop.
    hash_cancel: CancellationToken,
}

impl<'e> Run<'e> {
    fn new(engine: &'e Engine, mode: Mode, shutdown: &CancellationToken) -> Run<'e> {
        let s = &engine.settings;
        Run {
            engine,
            mode,
            tasks: JoinSet::new(),
            backlog: VecDeque::new(),
            to_verify: Vec::new(),
            to_verify_since: None,
            hashing: 0,
            uploading: 0,
            checking: false,
            verifying: false,
            hash_dry_until: None,
            check_dry_until: None,
            // Windows are the daemon's: `scan` is the user asking for uploads now.
            gate: Gate::new(s.pauses).with_windows(match mode {
                Mode::Forever => s.upload.windows.clone(),
                Mode::UntilIdle { .. } => Default::default(),
            }),
            window_opens: None,
            hash_cancel: shutdown.child_token(),
        }
    }

    /// New work may be queued: claims look again at once.
    fn news(&mut self) {
        self.hash_dry_until = None;
        self.check_dry_until = None;
    }

    /// ① Hashing needs no network: it runs whatever the gate says. Each task hashes a batch
    /// (up to [`HASH_BATCH`] jobs or [`HASH_BATCH_BYTES`]); the tasks run in parallel.
    async fn start_hashing(&mut self, now: Instant) -> Result<(), DbError> {
        let limit = self.engine.settings.hash.concurrency;
        if self.hashing >= limit || self.hash_dry_until.is_some_and(|t| now < t) {
            return Ok(());
        }
        let want = limit - self.hashing;
        let (max_jobs, max_bytes) = (want * HASH_BATCH, want as u64 * HASH_BATCH_BYTES);
        let jobs = self
            .engine
            .db
            .call(move |c| queue::claim_for_hash(c, max_jobs, max_bytes, now_ms()))
            .await?;
        let bytes: u64 = jobs.iter().map(|j| j.stat.size).sum();
        self.hash_dry_until = (jobs.len() < max_jobs && bytes < max_bytes).then_some(now + RELOOK);
        for batch in split_batches(jobs, want) {
            self.hashing += 1;
            let (db, stats) = (self.engine.db.clone(), self.engine.stats.clone());
            let (cancel, waker) = (self.hash_cancel.clone(), self.engine.waker.clone());
            self.tasks.spawn_blocking(move || {
                steps::hash::hash_batch(&db, &stats, batch, &cancel, &waker);
                Done::Hash
            });
        }
        Ok(())
    }

    /// ② Dedup, one batch at a time, while the backlog has room.
    async fn start_check(&mut self, now: Instant) -> Result<(), DbError> {
        if !self.gate.is_open()
            || self.checking
            || self.backlog.len() >= UPLOAD_BACKLOG
            || self.check_dry_until.is_some_and(|t| now < t)
        {
            return Ok(());
        }
        let holds = self.engine.settings.hold.get();
        if holds.all {
            return Ok(());
        }
        let room = (UPLOAD_BACKLOG - self.backlog.len()).min(CHECK_BATCH);
        let jobs = self
            .engine
            .db
            .call(move |c| queue::claim_for_check_outside(c, room, &holds.roots))
            .await?;
        self.check_dry_until = (jobs.len() < room).then_some(now + RELOOK);
        if !jobs.is_empty() {
            self.checking = true;
            let ctx = self.engine.ctx();
            let mirror = &self.engine.settings.mirror;
            let (reupload, interval) = (mirror.reupload_deleted, mirror.pull_interval);
            self.tasks.spawn(async move {
                let work = steps::check::check(&ctx, reupload, interval, jobs);
                alive("dedup check", work).await
            });
        }
        Ok(())
    }

    /// Whether new uploads may start now (`upload.windows`, docs/ARCHITECTURE.md#upload-windows);
    /// says so when that changes and keeps the next opening for `status`.
    fn check_window(&mut self, now: Instant) {
        let local = jiff::ZonedDateTime::now();
        let closed = self.gate.uploads_closed_until(&local);
        let ms = closed
            .as_ref()
            .map_or(0, |z| z.timestamp().as_millisecond());
        let before = self
            .engine
            .stats
            .uploads_resume_ms
            .swap(ms, Ordering::Relaxed);
        if before != ms {
            match &closed {
                Some(z) => tracing::info!(
                    "outside the upload windows ({}): uploads resume at {:02}:{:02}; \
                     watching and hashing go on",
                    self.gate.windows(),
                    z.hour(),
                    z.minute()
                ),
                None if before > 0 => tracing::info!("an upload window is open: uploads start"),
                None => {}
            }
        }
        let wait = (ms - local.timestamp().as_millisecond()).max(0) as u64;
        self.window_opens = closed.map(|_| now + Duration::from_millis(wait));
    }

    /// ③ Uploads (each verified after) from the backlog, up to the concurrency.
    fn start_uploads(&mut self) {
        let holds = self.engine.settings.hold.get();
        while self.window_opens.is_none()
            && self.gate.is_open()
            && self.uploading < self.engine.settings.upload.concurrency
        {
            // Jobs of a root the user paused stay in the backlog, in order, until `resume`.
            let Some(at) = self.backlog.iter().position(|j| holds.lets(&j.path)) else {
                break;
            };
            let Some(job) = self.backlog.remove(at) else {
                break;
            };
            self.uploading += 1;
            let ctx = self.engine.ctx();
            let device_id = self.engine.settings.device_id.clone();
            self.tasks.spawn(async move {
                let work = steps::upload::upload(&ctx, &device_id, &job);
                let (signal, uploaded) = alive("upload", work).await;
                Done::Upload {
                    job: Box::new(job),
                    signal,
                    uploaded: uploaded.map(Box::new),
                }
            });
        }
    }

    /// ④ Verification of what the server answered, one batch at a time: whatever waits
    /// when the last batch is done goes in the next (docs/ARCHITECTURE.md#verification).
    fn start_verify(&mut self, now: Instant) {
        if !self.gate.is_open() || self.verifying || self.to_verify.is_empty() {
            return;
        }
        let due = self
            .to_verify_since
            .is_none_or(|t| now.saturating_duration_since(t) >= VERIFY_WAIT);
        if self.to_verify.len() < VERIFY_BATCH && self.uploading > 0 && !due {
            return;
        }
        let n = self.to_verify.len().min(CHECK_BATCH);
        let batch: Vec<_> = self.to_verify.drain(..n).collect();
        self.to_verify_since = (!self.to_verify.is_empty()).then_some(now);
        self.verifying = true;
        let ctx = self.engine.ctx();
        self.tasks
            .spawn(async move { alive("verify", steps::verify::verify_batch(&ctx, batch)).await });
    }

    /// The probe a paused gate asks for (are the credentials accepted again? does the
    /// server answer again?).
    fn start_probe(&mut self, now: Instant) {
        if self.gate.take_probe(now) {
            let api = self.engine.api.clone();
            self.tasks
                .spawn(async move { Done::Probe(alive("probe", api.validate()).await) });
        }
    }

    /// Whether an `UntilIdle` run is over, else until when to wait at most.
    async fn next(&self, now: Instant) -> Result<Next, DbError> {
        let busy = self.hashing > 0
            || self.uploading > 0
            || self.checking
            || self.verifying
            || !self.to_verify.is_empty();
        let mut wake_at = self.gate.wake_at();
        let mut wake_by = |t: Instant| wake_at = Some(wake_at.map_or(t, |w| w.min(t)));
        if let (Some(since), false) = (self.to_verify_since, self.verifying) {
            wake_by(since + VERIFY_WAIT);
        }
        if let Some(t) = self.window_opens {
            wake_by(t);
        }
        let holds = self.engine.settings.hold.get();
        let backlog_held =
            self.window_opens.is_some() || self.backlog.iter().all(|j| !holds.lets(&j.path));
        if !busy && backlog_held {
            let max_attempts = match self.mode {
                Mode::UntilIdle { max_attempts } => Some(max_attempts),
                Mode::Forever => None,
            };
            let held = holds.roots.clone();
            let (active, next_retry) = self
                .engine
                .db
                .call(move |c| {
                    Ok((
                        queue::active_outside(c, &held)?,
                        queue::next_retry_due(c, max_attempts)?,
                    ))
                })
                .await?;
            // Work the user paused is not polled for: `resume` wakes the engine.
            let open = self.gate.is_open() && !holds.all && self.window_opens.is_none();
            if active == 0 {
                match (self.mode, next_retry) {
                    (Mode::UntilIdle { .. }, None) if open && !self.engine.waker.is_fed() => {
                        return Ok(Next::Idle)
                    }
                    (_, Some(at)) => {
                        let wait = Duration::from_millis((at - now_ms()).max(0) as u64);
                        wake_by(now + wait);
                    }
                    _ => {}
                }
            } else if open {
                // Work exists that nothing above could start (e.g. a concurrent writer
                // queued it between our queries): look again shortly. While the gate is
                // closed, queued work waits for it and there is nothing to poll.
                wake_by(now + RELOOK);
            }
        }
        // Even with nothing due, look at the queue now and then: another process (the
        // `retry` command) may have queued work without a way to wake us.
        Ok(Next::SleepUntil(wake_at.unwrap_or(now + IDLE_LOOK)))
    }

    /// Takes in what a finished task reports.
    async fn finished(&mut self, res: Result<Done, JoinError>) -> Result<(), DbError> {
        let done = match res {
            Ok(d) => d,
            Err(e) => {
                // A task panicked: its job stays in flight and is recovered on the next
                // start.
                tracing::error!(error = %e, "a pipeline task failed");
                return Ok(());
            }
        };
        match done {
            Done::Hash => {
                self.hashing -= 1;
                // Hashed jobs wait in `checking`; a file that changed may be due soon.
                self.news();
            }
            Done::Check {
                accepted,
                signal,
                unchecked,
            } => {
                self.checking = false;
                self.backlog.extend(accepted);
                if unchecked > 0 {
                    tracing::debug!(unchecked, "dedup batch left jobs unchecked");
                }
                self.gate.apply(signal, Instant::now());
            }
            Done::Upload {
                job,
                signal,
                uploaded,
            } => {
                self.uploading -= 1;
                if matches!(signal, Signal::Pause(_)) {
                    self.backlog.push_front(*job);
                }
                if let Some(u) = uploaded {
                    self.to_verify_since.get_or_insert_with(Instant::now);
                    self.to_verify.push(*u);
                }
                self.gate.apply(signal, Instant::now());
            }
            Done::Verify { signal, again } => {
                self.verifying = false;
                if !again.is_empty() {
                    self.to_verify_since.get_or_insert_with(Instant::now);
                    self.to_verify.extend(again);
                }
                self.gate.apply(signal, Instant::now());
            }
            Done::Probe(res) => {
                let now = Instant::now();
                if let Some(since) = self.gate.probe_done(res, now) {
                    // The jobs that failed since the outage began wait for the server, not
                    // for their own backoff: they are due now.
                    let ago = now.saturating_duration_since(since) + OUTAGE_MARGIN;
                    let now_ms = now_ms();
                    let since_ms = now_ms - ago.as_millis() as i64;
                    let n = self
                        .engine
                        .db
                        .call(move |c| queue::retry_now_since(c, since_ms, now_ms))
                        .await?;
                    if n > 0 {
                        tracing::debug!(jobs = n, "jobs that failed in the outage are due now");
                    }
                }
            }
        }
        Ok(())
    }

    /// Stop: take no new work, let what runs finish for a moment, then abandon it.
    async fn stop(mut self) -> Result<(), DbError> {
        self.hash_cancel.cancel();
        let tasks = &mut self.tasks;
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
        // Jobs accepted but not started, or abandoned mid-step, go back to `queued`: the
        // queue is consistent for the next start.
        let n = self
            .engine
            .db
            .call(|c| queue::recover_in_flight(c, now_ms()))
            .await?;
        if n > 0 {
            tracing::debug!(jobs = n, "in-flight jobs returned to the queue");
        }
        Ok(())
    }
}

/// `work`, a task of the engine, under a heartbeat of its own named `name`: a task whose
/// thread blocks (a hung mount, a deadlock in a blocking call) stops the watchdog pings.
/// Requests are bounded by the transport's stall timeout, so a slow server is not a stall.
async fn alive<F: std::future::Future>(name: &'static str, work: F) -> F::Output {
    crate::service::heartbeat(name).alive_while(work).await
}

/// Splits claimed jobs into at most `parts` runs of about equal bytes, in claim order.
fn split_batches(jobs: Vec<ClaimedJob>, parts: usize) -> Vec<Vec<ClaimedJob>> {
    let total: u64 = jobs.iter().map(|j| j.stat.size.max(1)).sum();
    let share = total.div_ceil(parts.max(1) as u64);
    let mut out = Vec::with_capacity(parts);
    let (mut run, mut bytes) = (Vec::new(), 0u64);
    for job in jobs {
        bytes += job.stat.size.max(1);
        run.push(job);
        if bytes >= share && out.len() + 1 < parts {
            out.push(std::mem::take(&mut run));
            bytes = 0;
        }
    }
    if !run.is_empty() {
        out.push(run);
    }
    out
}

impl Pause {
    /// The connection state `status` shows for this pause, begun now, lifted `until` from
    /// now (when the engine knows).
    fn connection_state(&self, until: Option<Duration>) -> ConnectionState {
        let now = now_ms();
        let next = until.map(|d| now + d.as_millis() as i64);
        let text = self.message().to_owned();
        match self {
            Pause::Outage(_) => ConnectionState::Unreachable {
                since_ms: now,
                next_try_ms: next,
                error: text,
            },
            Pause::Auth(_) => ConnectionState::Refused {
                since_ms: now,
                next_try_ms: next,
                error: text,
            },
            Pause::Capacity(_) | Pause::Blocked(_) => ConnectionState::Paused {
                since_ms: now,
                until_ms: next,
                reason: text,
            },
        }
    }
}

/// Records the engine's global pause (or its end, `None`) as the connection state, for
/// `status`: the engine knows of an outage that starts after the daemon connected.
async fn record_pause(db: &Db, pause: Option<&Pause>, until: Option<Duration>) {
    let state = match pause {
        Some(p) => p.connection_state(until),
        None => ConnectionState::Connected { since_ms: now_ms() },
    };
    if let Err(e) = db.call(move |c| meta::record_connection(c, &state)).await {
        tracing::debug!(error = %e, "cannot record the connection state");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The job retries follow `upload.retry_initial` and `upload.retry_max`.
    #[test]
    fn retry_backoff_grows_is_capped_and_jittered() {
        let upload = UploadConfig {
            concurrency: 1,
            device_id: None,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(600),
            scan_max_attempts: 3,
            max_rate: None,
            windows: Default::default(),
        };
        let p = retry_backoff(&upload);
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

    fn job(id: i64, size: u64) -> ClaimedJob {
        ClaimedJob {
            file_id: id,
            path: format!("/r/{id}.jpg").into_bytes(),
            stat: crate::db::catalogue::FileStat {
                dev: 1,
                ino: id as u64,
                size,
                mtime_ns: 1,
                ctime_ns: 1,
            },
            checksum: None,
            attempts: 0,
        }
    }

    /// A claim is shared among the hashing tasks by bytes, in order, every job once.
    #[test]
    fn a_claim_is_split_into_runs_of_about_equal_bytes() {
        let ids = |b: &Vec<Vec<ClaimedJob>>| -> Vec<Vec<i64>> {
            b.iter()
                .map(|r| r.iter().map(|j| j.file_id).collect())
                .collect()
        };
        let jobs: Vec<_> = (0..8).map(|i| job(i, 100)).collect();
        assert_eq!(
            ids(&split_batches(jobs, 2)),
            [vec![0, 1, 2, 3], vec![4, 5, 6, 7]]
        );
        let jobs = vec![job(0, 1000), job(1, 10), job(2, 10), job(3, 10)];
        assert_eq!(
            ids(&split_batches(jobs, 2)),
            [vec![0], vec![1, 2, 3]],
            "a large file is a run of its own"
        );
        assert_eq!(ids(&split_batches(vec![job(0, 5)], 2)), [vec![0]]);
        assert!(split_batches(Vec::new(), 2).is_empty());
    }
}
