//! The mirror of the user's own assets on the server: pulls (per dialect), live events
//! (socket.io), and a full reconcile now and then, all written to `remote_assets` through
//! [`crate::db::mirror::apply`], which also holds back files whose asset the user trashed or
//! deleted on the server.
//!
//! Owns: when to pull and what kind of pull (incremental from the watermark, or full with a
//! reconcile), the watermark (the largest server `updatedAt` seen; never the local clock),
//! the sync-stream acknowledgements, the socket task and the task that applies its events.
//!
//! A successful pull and a socket connect tell the engine that the server answers (so an
//! outage of the uploads ends at once).
//!
//! Must not: stop or slow uploads. A failing pull is logged and tried again later; a lost
//! socket reconnects with backoff; both only ever write the mirror and job states, never
//! the server. Pulls and event batches are applied one at a time (`apply_lock`), so an
//! event that arrives during a pull is applied after the pull's pages, never under them.
//!
//! Sources (the policy: docs/ARCHITECTURE.md#the-mirror; the wire:
//! docs/SERVER-API.md#10-sync-stream, docs/SERVER-API.md#9-search-pulls,
//! docs/SERVER-API.md#11-seed-listing, docs/SERVER-API.md#12-live-events):
//! - password session: `POST /sync/stream` (`AuthUsersV1`, `AssetsV1`) with acks; a stream
//!   without an `AssetV1` checkpoint (a new session: every daemon start) is complete, so it
//!   is also a full reconcile; the periodic one asks for `reset: true`;
//! - API key: `POST /search/metadata {updatedAfter: watermark − 5 min, withDeleted}` per
//!   visibility (timeline, archive, hidden), paged, own assets only;
//! - seed-style servers: `GET /assets?updatedAfter=` with `skip`/`take`.
//!
//! A full pull cannot show what is gone, only what is there, so a full reconcile suspects
//! every mirrored asset it did not see (and every asset we uploaded that the mirror lacks)
//! and confirms each with `bulk-upload-check` (or `GET /assets/:id`) before calling it
//! deleted: offset paging may skip a row, and `locked` assets are invisible to an API key.

mod pull;
pub mod report;
pub mod socket;
mod upgrade;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Mutex, Notify};
use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, ApiError, CheckResult, Dialect, BULK_CHECK_BATCH};
use crate::backoff::{self, Backoff};
use crate::config::MirrorConfig;
use crate::db::meta::{self, LastPull, PullError, SocketRecord, SocketState};
use crate::db::mirror::{self as store, server_time_ms};
use crate::db::{now_ms, Db, DbError};
use crate::human;
use crate::model::{AssetId, Checksum, RemoteAsset};
use crate::pipeline::Waker;

pub use crate::db::mirror::{Applied, Change, Policy};

/// How far before the watermark an incremental pull starts, so that a change committed
/// late at a page or clock boundary is not missed (docs/ARCHITECTURE.md#the-mirror).
pub const OVERLAP: Duration = Duration::from_secs(5 * 60);
/// Rows per page of `/search/metadata` (its maximum) and of the seed listing.
const PAGE_SIZE: usize = 1000;
/// Changes of a pull applied (and committed) together.
const APPLY_BATCH: usize = 1000;
/// Live events queued for the applier; when full, events are dropped and a pull recovers.
const EVENT_QUEUE: usize = 1024;
/// Live events applied (and committed) together.
const EVENT_BATCH: usize = 256;
/// Suspects of a full reconcile without a checksum, checked one by one, at most.
const MAX_SINGLE_CHECKS: usize = 1000;
/// The longest one pull may take before the watchdog counts the pull loop as stalled: a
/// full pull of a large library is a few hundred pages, each bounded by the stall timeout.
const PULL_BUDGET: Duration = Duration::from_secs(30 * 60);
/// The first wait after a failed pull; it doubles up to `pull_interval`.
const PULL_RETRY_INITIAL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Db(#[from] DbError),
    /// The server answered something the protocol does not allow.
    #[error("{0}")]
    Protocol(String),
}

/// What a pull should be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullKind {
    /// Incremental, unless nothing was pulled yet or the full reconcile is due.
    Auto,
    /// The whole inventory, then a reconcile that finds permanent deletes.
    Full,
}

/// Where a pull read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    SyncStream,
    Search,
    SeedList,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::SyncStream => "sync stream",
            Source::Search => "search",
            Source::SeedList => "asset list",
        }
    }
}

/// What one pull did.
#[derive(Clone, Debug)]
pub struct PullReport {
    pub source: Source,
    /// A full inventory (followed by a reconcile).
    pub full: bool,
    /// Distinct assets the server sent.
    pub seen: usize,
    pub applied: Applied,
    /// Assets the reconcile confirmed deleted.
    pub reconciled_deleted: usize,
    pub elapsed: Duration,
}

/// The mirror of one server account. Cheap to clone.
#[derive(Clone)]
pub struct Mirror {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    api: ApiClient,
    config: MirrorConfig,
    /// Asks the pull loop for a pull now (a socket (re)connect, missed events).
    pull_now: Arc<Notify>,
    /// One pull or event batch at a time; held across awaits, hence tokio's mutex.
    apply_lock: Mutex<()>,
    waker: Option<Waker>,
    /// Cancelled when the server's API root or dialect moved from the one `api` uses
    /// (docs/RELIABILITY.md#the-server-is-upgraded-while-the-daemon-runs): the daemon then
    /// connects again.
    moved: CancellationToken,
}

impl Mirror {
    /// The mirror of the account `api` is logged in to, as `config` (`[mirror]`) says; the
    /// live-event socket reaches the server through `api`, with the HTTP client's trust and
    /// timeouts. `waker` is the engine's, woken when files are queued again
    /// (`reupload_deleted`).
    pub fn new(db: Db, api: ApiClient, config: &MirrorConfig, waker: Option<Waker>) -> Mirror {
        Mirror {
            inner: Arc::new(Inner {
                db,
                api,
                config: config.clone(),
                pull_now: Arc::new(Notify::new()),
                apply_lock: Mutex::new(()),
                waker,
                moved: CancellationToken::new(),
            }),
        }
    }

    /// Cancels `moved` when the live-event socket finds that the server's API root or dialect
    /// moved: its caller then connects again (`crate::daemon`'s generations).
    pub fn with_moved(mut self, moved: CancellationToken) -> Mirror {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.moved = moved;
        }
        self
    }

    fn policy(&self) -> Policy {
        Policy {
            reupload_deleted: self.inner.config.reupload_deleted,
        }
    }

    /// The source this server and these credentials allow.
    pub fn source(&self) -> Source {
        match (self.inner.api.dialect(), self.inner.api.is_session()) {
            (Dialect::Seed, _) => Source::SeedList,
            (Dialect::Immich, true) => Source::SyncStream,
            (Dialect::Immich, false) => Source::Search,
        }
    }

    /// Asks the running pull loop for a pull as soon as possible.
    pub fn request_pull(&self) {
        self.inner.pull_now.notify_one();
    }

    /// Applies changes all together ([`store::apply_changes`]). The caller holds
    /// `apply_lock`.
    async fn apply_locked(&self, changes: Vec<Change>) -> Result<Applied, DbError> {
        if changes.is_empty() {
            return Ok(Applied::default());
        }
        let policy = self.policy();
        let applied = self
            .inner
            .db
            .call(move |c| store::apply_changes(c, &changes, policy, now_ms()))
            .await?;
        if applied.requeued > 0 {
            if let Some(w) = &self.inner.waker {
                w.wake();
            }
        }
        if applied.held_back > 0 {
            tracing::info!(
                files = applied.held_back,
                "assets were trashed or deleted on the server by the user; their files are not \
                 uploaded again"
            );
        }
        if applied.released > 0 {
            tracing::info!(
                files = applied.released,
                "assets were restored on the server; their files count as backed up again"
            );
        }
        Ok(applied)
    }

    /// Applies changes (as live events are), after any pull in progress.
    pub async fn apply(&self, changes: Vec<Change>) -> Result<Applied, DbError> {
        let _g = self.inner.apply_lock.lock().await;
        self.apply_locked(changes).await
    }

    /// One pull. Failures are recorded in `meta` and returned; nothing is acknowledged or
    /// advanced unless the pull completed.
    pub async fn pull(&self, kind: PullKind) -> Result<PullReport, MirrorError> {
        let _g = self.inner.apply_lock.lock().await;
        let t0 = Instant::now();
        let started_ms = now_ms();
        let (watermark, last_full) = self
            .inner
            .db
            .call(|c| Ok((meta::watermark_ms(c)?, meta::last_full_ms(c)?)))
            .await?;
        let interval = self.inner.config.full_reconcile_interval.as_millis() as i64;
        // A clock that went back past the last full pull makes it due too (it schedules;
        // it is never a watermark).
        let due = last_full.is_none_or(|t| started_ms - t >= interval || started_ms < t);
        let source = self.source();
        let mut run = PullRun {
            mirror: self,
            full: kind == PullKind::Full
                || due
                || (watermark.is_none() && source != Source::SyncStream),
            seen: SeenIds::default(),
            max_updated_ms: None,
            applied: Applied::default(),
            batch: Vec::new(),
        };
        // The server's clock as the listing starts (its `Date`), for the watermark below;
        // the sync stream keeps its place by acks instead.
        let server_start_ms = match source {
            Source::SyncStream => None,
            Source::Search | Source::SeedList => self.server_now_ms().await,
        };
        let res = match source {
            Source::SyncStream => pull::sync_stream(&mut run).await,
            Source::Search => pull::search(&mut run, watermark).await,
            Source::SeedList => pull::seed_list(&mut run, watermark).await,
        };
        let seen_count = run.seen.len();
        let res = match res {
            Ok(()) if run.full => {
                let seen = Arc::new(std::mem::take(&mut run.seen));
                self.reconcile(seen, started_ms).await.map(Some)
            }
            Ok(()) => Ok(None),
            Err(e) => Err(e),
        };
        let reconciled = match res {
            Ok(n) => n,
            Err(e) => {
                let err = PullError {
                    at_ms: now_ms(),
                    message: e.to_string(),
                };
                let _ = self
                    .inner
                    .db
                    .call(move |c| meta::set_last_pull_error(c, &err))
                    .await;
                return Err(e);
            }
        };
        let report = PullReport {
            source,
            full: run.full,
            seen: seen_count,
            applied: run.applied,
            reconciled_deleted: reconciled.unwrap_or(0),
            elapsed: t0.elapsed(),
        };
        let new_wm = match (watermark, run.max_updated_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        // A quiet server must not be listed whole again and again: the largest `updatedAt`
        // seen stops moving when nothing changes, and every pull would re-read everything
        // changed in the overlap before it (after a first backup: the whole library). A pull
        // that completed saw every change visible when it started, so one overlap before its
        // start (server clock) is as safe a watermark as the largest `updatedAt`: a change
        // it missed became visible later, and the next pull starts one more overlap back.
        let new_wm = match (new_wm, server_start_ms) {
            (Some(w), Some(s)) => Some(w.max(s - OVERLAP.as_millis() as i64)),
            (w, _) => w,
        };
        // Stamped with its start: whatever changed on the server after that may be missing.
        let done = LastPull {
            at_ms: started_ms,
            full: report.full,
            seen: report.seen as u64,
            source: source.as_str().to_owned(),
        };
        self.inner
            .db
            .call(move |c| meta::record_pull(c, &done, new_wm))
            .await?;
        if report.full {
            // A full pull held every id of the library and read the mirror whole: give
            // back what that left (docs/BENCHMARKS.md, "Session 8").
            self.inner.db.shrink().await?;
        }
        Ok(report)
    }

    /// The server's clock now (Unix ms, from its `Date` header), or `None` when it does not
    /// answer with one; the pull then keeps the watermark rule it had.
    async fn server_now_ms(&self) -> Option<i64> {
        let clock = self.inner.api.server_clock().await.ok()?;
        let date = crate::setup::doctor::parse_http_date(clock.date.as_deref()?)?;
        Some((date.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    /// After a complete full pull: every mirrored asset it did not see, and every asset we
    /// uploaded that the mirror lacks, is a suspect; the server confirms which are gone.
    /// Returns how many were confirmed deleted.
    async fn reconcile(&self, seen: Arc<SeenIds>, started_ms: i64) -> Result<usize, MirrorError> {
        let store::Candidates {
            stale_rows: mut suspects,
            unmirrored: known,
        } = {
            let seen = seen.clone();
            self.inner
                .db
                .call(move |c| store::reconcile_candidates(c, started_ms, |id| seen.contains(id)))
                .await?
        };
        let mut sums: HashSet<Checksum> = suspects.iter().filter_map(|(_, s)| *s).collect();
        for (sum, id) in known {
            if id.as_ref().is_some_and(|i| seen.contains(&i.0)) {
                continue;
            }
            if sums.insert(sum) {
                suspects.push((id.unwrap_or_else(|| AssetId(String::new())), Some(sum)));
            }
        }
        if suspects.is_empty() {
            return Ok(0);
        }
        tracing::debug!(
            suspects = suspects.len(),
            "full reconcile: confirming assets the pull did not see"
        );
        let api = &self.inner.api;
        let me = api.user_id().to_owned();
        let mut changes = Vec::new();
        let (with_sum, without): (Vec<_>, Vec<_>) =
            suspects.into_iter().partition(|(_, s)| s.is_some());
        for chunk in with_sum.chunks(BULK_CHECK_BATCH) {
            let items: Vec<(String, Checksum)> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, (_, s))| s.map(|s| (i.to_string(), s)))
                .collect();
            let answers: HashMap<String, CheckResult> =
                api.bulk_upload_check(&items).await?.into_iter().collect();
            for (i, (id, sum)) in chunk.iter().enumerate() {
                match answers.get(&i.to_string()) {
                    // The server has no asset of ours with this content.
                    Some(CheckResult::Accept) => changes.push(Change::Deleted {
                        id: id.clone(),
                        checksum: *sum,
                    }),
                    Some(CheckResult::Duplicate {
                        asset_id,
                        is_trashed,
                    }) => {
                        let current = asset_id.clone().unwrap_or_else(|| id.clone());
                        if !id.0.is_empty() && current != *id {
                            // Our asset is gone, but the content lives on as another asset
                            // (uploaded again by another client): mirror that one first, so
                            // that the content is not taken for deleted.
                            if let Ok(Some(a)) = api.get_asset(&current).await {
                                if me.is_empty() || a.owner_id == me {
                                    changes.push(Change::Upsert(a));
                                }
                            }
                            changes.push(Change::Deleted {
                                id: id.clone(),
                                checksum: *sum,
                            });
                        } else if *is_trashed && !current.0.is_empty() {
                            changes.push(Change::Trashed(current));
                        }
                        // Otherwise it exists (e.g. `locked`, which an API key cannot list).
                    }
                    None => {}
                }
            }
        }
        for (id, _) in without.into_iter().take(MAX_SINGLE_CHECKS) {
            match api.get_asset(&id).await? {
                None => changes.push(Change::Deleted { id, checksum: None }),
                Some(a) if me.is_empty() || a.owner_id == me => changes.push(Change::Upsert(a)),
                Some(_) => {}
            }
        }
        let deleted = changes
            .iter()
            .filter(|c| matches!(c, Change::Deleted { .. }))
            .count();
        self.apply_locked(changes).await?;
        if deleted > 0 {
            tracing::info!(
                assets = deleted,
                "full reconcile: assets were deleted on the server"
            );
        }
        Ok(deleted)
    }

    /// `scan`: one pull before the engine starts, so that tombstones apply. A failure is
    /// logged: the scan goes on without it.
    pub async fn pull_for_scan(&self, shutdown: &CancellationToken) {
        // Always at least an incremental pull, however young the last one: it costs a page
        // per 1,000 recently changed assets, and a photo trashed a minute ago must be seen
        // before the scan says whether everything is backed up.
        tokio::select! {
            _ = shutdown.cancelled() => {}
            r = self.pull(PullKind::Auto) => match r {
                Ok(rep) => log_pull(&rep),
                Err(e) => tracing::warn!(
                    "cannot update the mirror of the server ({e}); going on without it"
                ),
            }
        }
    }

    /// The daemon's part: periodic pulls, the socket, and the applier of its events, until
    /// `shutdown`. Never fails: problems are logged and retried.
    pub async fn run(self, shutdown: CancellationToken) {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let socket = self.socket_task(tx, shutdown.clone());
        let applier = self.apply_events(rx, shutdown.clone());
        let puller = self.pull_loop(shutdown.clone());
        tokio::join!(socket, applier, puller);
    }

    async fn socket_task(&self, tx: mpsc::Sender<Change>, shutdown: CancellationToken) {
        let api = &self.inner.api;
        let config = &self.inner.config;
        let every = human::duration(config.pull_interval);
        let state = if !config.events {
            tracing::info!("mirror.events = false: the mirror is updated by pulls every {every}");
            Some(SocketState::Off {
                why: "mirror.events = false".to_owned(),
            })
        } else if !api.can_open_websocket() {
            tracing::info!(
                "live events need an API key with the `all` permission or a password login; \
                 the mirror is updated by pulls every {every}"
            );
            Some(SocketState::Unavailable {
                why: "the API key lacks the `all` permission".to_owned(),
            })
        } else {
            None
        };
        if let Some(state) = state {
            let rec = SocketRecord {
                at_ms: now_ms(),
                state,
            };
            let _ = self.inner.db.call(move |c| meta::set_socket(c, &rec)).await;
            drop(tx);
            return;
        }
        let ctx = socket::Ctx {
            api: api.clone(),
            pull_interval: config.pull_interval,
            db: self.inner.db.clone(),
            tx,
            pull_now: self.inner.pull_now.clone(),
            engine: self.inner.waker.clone(),
            moved: self.inner.moved.clone(),
        };
        socket::run(ctx, shutdown).await;
    }

    async fn apply_events(&self, mut rx: mpsc::Receiver<Change>, shutdown: CancellationToken) {
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = rx.recv() => match c {
                    Some(c) => c,
                    None => {
                        // No socket: wait for the stop.
                        shutdown.cancelled().await;
                        return;
                    }
                },
            };
            let mut batch = vec![first];
            while batch.len() < EVENT_BATCH {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            let n = batch.len();
            let res = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.apply(batch) => r,
            };
            match res {
                Ok(a) => {
                    tracing::debug!(events = n, ?a, "live events applied");
                    if a.unknown > 0 {
                        // Trash or restore of an asset the mirror does not hold yet.
                        self.request_pull();
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot record live events ({e}); a pull will catch up");
                    self.request_pull();
                }
            }
        }
    }

    async fn pull_loop(&self, shutdown: CancellationToken) {
        let interval = self.inner.config.pull_interval;
        let retry_wait = Backoff::new(PULL_RETRY_INITIAL, interval);
        let mut failures = 0u32;
        let beat = crate::service::heartbeat("mirror pull");
        loop {
            beat.busy_for(PULL_BUDGET);
            let res = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.pull(PullKind::Auto) => r,
            };
            let wait = match res {
                Ok(rep) => {
                    if failures > 0 {
                        tracing::info!("the mirror is up to date again");
                    }
                    // The server answers: an outage of the uploads need not wait for its
                    // next probe.
                    if let Some(w) = &self.inner.waker {
                        w.server_answered();
                    }
                    failures = 0;
                    log_pull(&rep);
                    // Spread so that many agents on one server do not pull in step.
                    backoff::spread(interval)
                }
                Err(e) => {
                    failures += 1;
                    let wait = retry_wait.delay(failures);
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::warn!(
                            "cannot update the mirror of the server ({e}); uploads go on; \
                             trying again in {}",
                            human::duration(wait)
                        );
                    }
                    wait
                }
            };
            beat.wait_for(wait);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.pull_now.notified() => {}
            }
        }
    }
}

fn log_pull(rep: &PullReport) {
    let a = &rep.applied;
    if rep.full {
        tracing::info!(
            source = rep.source.as_str(),
            assets = rep.seen,
            deleted = rep.reconciled_deleted + a.deleted as usize,
            ms = rep.elapsed.as_millis() as u64,
            "mirror: full pull done"
        );
    } else if rep.seen > 0 || a.deleted > 0 {
        tracing::debug!(
            source = rep.source.as_str(),
            changed = rep.seen,
            deleted = a.deleted,
            ms = rep.elapsed.as_millis() as u64,
            "mirror: pulled changes"
        );
    }
}

/// The asset ids a pull saw, each with the server `updatedAt` (ms) it came with. A full pull
/// holds every id of the library until its reconcile: a UUID in its canonical text (every id
/// Immich hands out) is kept as its 16 bytes, 32 bytes a table slot, where a `String` key
/// was 40 bytes a slot and a heap block of 48 more (100,000 assets: 4 MiB instead of 11).
/// Any other id is kept as its text.
#[derive(Debug, Default)]
pub(crate) struct SeenIds {
    uuids: HashMap<[u8; 16], Option<i64>>,
    other: HashMap<String, Option<i64>>,
}

impl SeenIds {
    pub(crate) fn get(&self, id: &str) -> Option<Option<i64>> {
        match crate::db::ids::uuid_bytes(id) {
            Some(b) => self.uuids.get(&b).copied(),
            None => self.other.get(id).copied(),
        }
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    pub(crate) fn insert(&mut self, id: &str, updated: Option<i64>) {
        match crate::db::ids::uuid_bytes(id) {
            Some(b) => self.uuids.insert(b, updated),
            None => self.other.insert(id.to_owned(), updated),
        };
    }

    pub(crate) fn len(&self) -> usize {
        self.uuids.len() + self.other.len()
    }

    pub(crate) fn clear(&mut self) {
        *self = SeenIds::default();
    }
}

/// One pull in progress: what it saw, and the changes waiting to be applied.
pub(crate) struct PullRun<'a> {
    mirror: &'a Mirror,
    /// The pull is (or became) a full inventory.
    pub(crate) full: bool,
    /// Asset ids seen, with the server `updatedAt` (ms) they came with.
    pub(crate) seen: SeenIds,
    /// The largest server `updatedAt` seen: the next watermark.
    pub(crate) max_updated_ms: Option<i64>,
    pub(crate) applied: Applied,
    batch: Vec<Change>,
}

impl PullRun<'_> {
    pub(crate) fn api(&self) -> &ApiClient {
        &self.mirror.inner.api
    }

    /// An asset as the server listed it. The same id with the same `updatedAt` (offset
    /// paging repeats rows when data changes mid-pull) is taken once.
    pub(crate) async fn upsert(&mut self, asset: RemoteAsset) -> Result<(), MirrorError> {
        let updated = asset.updated_at.as_deref().and_then(server_time_ms);
        if let Some(u) = updated {
            self.max_updated_ms = Some(self.max_updated_ms.map_or(u, |m| m.max(u)));
        }
        match self.seen.get(&asset.id.0) {
            Some(prev) if prev == updated && updated.is_some() => return Ok(()),
            _ => {}
        }
        self.seen.insert(&asset.id.0, updated);
        self.push(Change::Upsert(asset)).await
    }

    pub(crate) async fn push(&mut self, change: Change) -> Result<(), MirrorError> {
        self.batch.push(change);
        if self.batch.len() >= APPLY_BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    pub(crate) async fn flush(&mut self) -> Result<(), MirrorError> {
        let batch = std::mem::take(&mut self.batch);
        let a = self.mirror.apply_locked(batch).await?;
        self.applied.add(&a);
        Ok(())
    }

    /// `SyncResetV1`: forget the mirrored assets (tombstones stay) and start over.
    pub(crate) async fn wipe(&mut self) -> Result<(), MirrorError> {
        self.batch.clear();
        self.seen.clear();
        self.mirror.inner.db.call(|c| store::wipe(c)).await?;
        Ok(())
    }

    pub(crate) async fn record_acks(&self, acks: &[String]) -> Result<(), MirrorError> {
        let acks = acks.to_vec();
        self.mirror
            .inner
            .db
            .call(move |c| meta::set_sync_acks(c, &acks))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::SeenIds;

    /// The ids a full pull holds until its reconcile: UUIDs as 16 bytes, anything else as
    /// its text, each found again by the text the server sent, never by another's.
    #[test]
    fn seen_ids_keep_uuids_as_bytes_and_find_every_id_by_its_text() {
        let mut seen = SeenIds::default();
        let ids: Vec<String> = (0..1000u32)
            .map(|i| format!("6f1c9a54-0000-4000-8000-{i:012x}"))
            .collect();
        for (i, id) in ids.iter().enumerate() {
            seen.insert(id, Some(i as i64));
        }
        seen.insert("a-uploaded", None);
        let upper = "6F1C9A54-0000-4000-8000-000000000001";
        seen.insert(upper, Some(-1));
        assert_eq!(seen.len(), 1002);
        assert_eq!(
            seen.uuids.len(),
            1000,
            "every canonical UUID kept as its bytes"
        );
        assert_eq!(seen.other.len(), 2);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(seen.get(id), Some(Some(i as i64)), "{id}");
        }
        assert_eq!(seen.get("a-uploaded"), Some(None));
        // An upper-case UUID is another id (stored as text, as the database does).
        assert_eq!(seen.get(upper), Some(Some(-1)));
        assert_eq!(seen.get(&upper.to_lowercase()), Some(Some(1)));
        assert!(!seen.contains("6f1c9a54-0000-4000-8000-00000000ffff"));
        assert!(!seen.contains("a-uploaded-2"));
        seen.clear();
        assert_eq!(seen.len(), 0);
    }
}
