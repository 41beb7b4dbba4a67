//! Live watching: notify events → a bounded channel → coalescing → the settle check → the
//! catalogue; polling where events cannot be had; pausing roots that went away.
//!
//! Owns: one notify watcher per watched root (inotify on Linux, recursive where the root is);
//! the choice between events and polling for each root (`watch.mode`, network and FUSE
//! filesystems, the inotify watch limit); the settle check (a file is queued only after its
//! size and mtime stayed the same across `watch.settle`, measured on the monotonic clock);
//! walks of folders that appear (inotify misses files created right after their folder,
//! MEASUREMENTS.md); and the liveness of every root (missing or empty = paused and reported,
//! never "deleted"; when it is back it is watched and walked again).
//!
//! Must not: hash, upload, mark a file missing or delete anything (a local delete or rename
//! is never news for the server; only the periodic full scan marks files missing), or block
//! a runtime thread: `lstat`s, walks and SQLite run on the blocking pool. The notify callback
//! runs on notify's own thread and only `try_send`s into a bounded channel; when that is
//! full, or the kernel says it dropped events, the root is walked again instead, so no file
//! is lost.
//!
//! Every discovery goes through the settle check, a walk's included: a file found by a walk
//! is stat'ed again `settle` later and queued only if nothing changed. A close-after-write
//! or a rename into place shortens that quiet period to [`AFTER_CLOSE_QUIET`], never to zero.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RenameMode};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::MediaTypes;
use crate::config::{WatchConfig, WatchMode};
use crate::db::catalogue::{self, FileStat};
use crate::db::{self, now_ms, Db, DbError};
use crate::pipeline::Waker;
use crate::scan::{self, Root, ScanError};

/// Events buffered between notify's thread and the watcher task. When it is full the
/// callback drops the event and marks its root for a rescan instead.
pub const EVENT_CHANNEL_CAPACITY: usize = 4096;
/// Events for one path closer together than this are one change: a copy writes thousands
/// of times a second, and the first `lstat` waits until they pause.
const COALESCE: Duration = Duration::from_millis(50);
/// The quiet period after a close-after-write or a rename into place (or `settle`, if
/// shorter). The stability check is still made: a writer that reopens the file within it
/// is seen in time.
pub const AFTER_CLOSE_QUIET: Duration = Duration::from_millis(500);
/// A new folder is walked at once and again this much later: files created while notify
/// was still adding the folder's watch raise no event at all.
const NEW_DIR_SECOND_LOOK: Duration = Duration::from_secs(1);
/// Paused roots are looked at this often, or every `poll_interval` if that is shorter.
const PAUSED_RECHECK_MAX: Duration = Duration::from_secs(10);
/// Two walks of a root asked for by lost events are at least this far apart (an event
/// storm must not turn into back-to-back walks).
const RESCAN_MIN_GAP: Duration = Duration::from_secs(1);
/// Paths waiting to settle, at most. Beyond it events are dropped and their root is walked
/// again once the backlog has drained to half.
const PENDING_MAX: usize = 100_000;
/// Folders waiting for a walk, at most; beyond it the whole root is walked instead.
const DIR_QUEUE_MAX: usize = 1024;
/// Paths looked at in one blocking job.
const STAT_BATCH: usize = 2048;
/// Blocking jobs of each kind in flight at once (stat batches; walks).
const STAT_JOBS_MAX: usize = 2;
const WALK_JOBS_MAX: usize = 2;
/// Events taken from the channel per turn of the loop.
const EVENT_BATCH: usize = 1024;
/// How long in-flight blocking work may take to finish after a stop was asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// The value suggested for `fs.inotify.max_user_watches`, and the packaged file setting it.
const SUGGESTED_MAX_WATCHES: u32 = 524_288;
const SYSCTL_SNIPPET: &str = "packaging/sysctl/60-immish-sync-inotify.conf";

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("watcher task failed: {0}")]
    Task(String),
}

/// The watcher of all roots: build it with [`Watcher::new`], then [`Watcher::run`] it as one
/// task of the daemon.
pub struct Watcher {
    cfg: WatchConfig,
    /// [`EVENT_CHANNEL_CAPACITY`]; tests shrink it to force the full-channel path.
    capacity: usize,
    db: Db,
    roots: Vec<Root>,
    media: MediaTypes,
    waker: Waker,
}

impl Watcher {
    pub fn new(
        cfg: WatchConfig,
        db: Db,
        roots: Vec<Root>,
        media: MediaTypes,
        waker: Waker,
    ) -> Watcher {
        Watcher {
            cfg,
            capacity: EVENT_CHANNEL_CAPACITY,
            db,
            roots,
            media,
            waker,
        }
    }

    /// Watches until `cancel`. `ready` is sent once every root is watched, polled or known
    /// to be paused: a full scan started after that misses nothing written meanwhile.
    /// Returns an error only when the state database fails.
    pub async fn run(
        self,
        ready: oneshot::Sender<()>,
        cancel: CancellationToken,
    ) -> Result<(), WatchError> {
        let (tx, mut rx) = mpsc::channel(self.capacity);
        let mut w = State::new(self, tx);
        let mut ready = Some(ready);
        let mut tasks: JoinSet<Result<Done, WatchError>> = JoinSet::new();
        let outcome = loop {
            let now = Instant::now();
            w.take_flags(now);
            w.start_work(now, &mut tasks, &cancel);
            if ready.is_some() && w.roots.iter().all(|r| r.started) {
                w.say_how_roots_are_watched();
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
            }
            let deadline = w.next_deadline();
            tokio::select! {
                _ = cancel.cancelled() => break Ok(()),
                Some(first) = rx.recv() => {
                    let now = Instant::now();
                    w.on_event(first, now);
                    for _ in 1..EVENT_BATCH {
                        match rx.try_recv() {
                            Ok(ev) => w.on_event(ev, now),
                            Err(_) => break,
                        }
                    }
                }
                _ = w.shared.wake.notified() => {}
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    let done = match done {
                        Ok(Ok(d)) => d,
                        Ok(Err(e)) => break Err(e),
                        Err(e) => break Err(WatchError::Task(e.to_string())),
                    };
                    w.on_done(done, Instant::now());
                }
                _ = sleep_until(deadline), if deadline.is_some() => {}
            }
        };
        // Walks stop at the cancellation; stat batches are short. Wait for them so that no
        // write to the state database happens after the daemon returned.
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        // Dropping the notify watchers stops their threads and frees the kernel's watches.
        drop(w);
        outcome
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// What notify's thread tells the task besides events, per root. Set by the callback,
/// taken by the task after a wake-up.
#[derive(Default)]
struct RootFlags {
    /// Events were lost (the kernel's queue overflowed, or our channel was full).
    rescan: AtomicBool,
    /// Adding a watch for a new folder failed at the inotify watch limit.
    limit: AtomicBool,
}

struct Shared {
    flags: Vec<RootFlags>,
    wake: Notify,
}

impl Shared {
    fn raise(&self, flag: impl Fn(&RootFlags) -> &AtomicBool, root: usize) {
        if let Some(f) = self.flags.get(root) {
            flag(f).store(true, Ordering::SeqCst);
            self.wake.notify_one();
        }
    }
}

/// One event as it crosses from notify's thread.
struct RawEvent {
    root: usize,
    kind: EventKind,
    paths: Vec<PathBuf>,
}

/// The notify callback of one root. It runs on notify's thread, so it only filters, and
/// `try_send`s: a full channel must never block the kernel's event reader, and a lost
/// event becomes a rescan of the root.
fn event_handler(
    root: usize,
    tx: mpsc::Sender<RawEvent>,
    shared: Arc<Shared>,
) -> impl FnMut(notify::Result<notify::Event>) + Send + 'static {
    move |res| match res {
        Ok(ev) => {
            if ev.need_rescan() {
                shared.raise(|f| &f.rescan, root);
                return;
            }
            match ev.kind {
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
                // Opens and reads, ours included (hashing opens every file): never news.
                EventKind::Access(_) => return,
                _ => {}
            }
            let raw = RawEvent {
                root,
                kind: ev.kind,
                paths: ev.paths,
            };
            if tx.try_send(raw).is_err() {
                shared.raise(|f| &f.rescan, root);
            }
        }
        Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
            shared.raise(|f| &f.limit, root)
        }
        Err(e) => {
            // An error reading events: whatever they were, a walk finds it.
            tracing::debug!(error = %e, "watch error; the root is walked again");
            shared.raise(|f| &f.rescan, root);
        }
    }
}

/// How a root is followed while it is there.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Method {
    Events,
    /// Walked every `poll_interval`, for the reason given (said once in the log).
    Poll(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Liveness {
    /// Not looked at yet.
    Unknown,
    /// There, with the `(dev, ino)` of its directory (a remount changes it).
    Live {
        dev: u64,
        ino: u64,
    },
    Paused(String),
}

struct RootState {
    root: Arc<Root>,
    method: Method,
    /// The reason for polling last said in the log.
    told: Option<String>,
    watcher: Option<RecommendedWatcher>,
    live: Liveness,
    /// Its first check (and watch set-up) is done.
    started: bool,
    checking: bool,
    /// A notify watcher is to be set up (it is, when `setting_up`).
    needs_watch: bool,
    setting_up: bool,
    walking: bool,
    next_check: Instant,
    /// For a polled root: when its next walk is due.
    next_poll: Option<Instant>,
    /// A walk of the whole root is wanted (lost events, resumed, limit fallback).
    rescan: bool,
    last_rescan: Option<Instant>,
}

impl RootState {
    fn dev(&self) -> Option<u64> {
        match self.live {
            Liveness::Live { dev, .. } => Some(dev),
            _ => None,
        }
    }
}

/// A path waiting for its stat to settle.
struct Pending {
    root: usize,
    /// Its name makes it a candidate file; otherwise only a folder is of interest.
    candidate: bool,
    /// Bumped by every event; a stat taken for an older generation is out of date.
    gen: u64,
    /// The last stat, and when it was taken.
    seen: Option<Seen>,
    /// The last news was a close-after-write or a rename into place.
    finished: bool,
    /// Its key in the timer, when it waits for one.
    due: Option<(Instant, u64)>,
    /// In a stat batch right now.
    in_flight: bool,
}

#[derive(Clone, Copy, Debug)]
struct Seen {
    stat: FileStat,
    at: Instant,
}

/// What kind of news an event brings about a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum News {
    Written,
    /// Closed after writing, or renamed into place: probably complete.
    Finished,
    /// Attributes only (e.g. `cp -p` setting the mtime after the close).
    Metadata,
}

/// A folder to walk.
#[derive(Clone, Debug)]
struct DirWalk {
    root: usize,
    dir: PathBuf,
    /// This is the second look at a new folder.
    second: bool,
}

/// A finished blocking job.
enum Done {
    Checked {
        root: usize,
        health: Result<Health, String>,
    },
    WatchSet {
        root: usize,
        result: Result<RecommendedWatcher, notify::Error>,
    },
    Stated {
        results: Vec<(PathBuf, u64, Verdict)>,
        queued: u64,
    },
    Walked {
        root: usize,
        /// `None`: the whole root.
        dir: Option<DirWalk>,
        found: Vec<(PathBuf, FileStat)>,
        at: Instant,
    },
    /// A root's line for `status` was written.
    Noted,
}

/// A root that is there.
struct Health {
    dev: u64,
    ino: u64,
    /// The network or FUSE filesystem it is on, if any.
    remote_fs: Option<&'static str>,
}

/// What one `lstat` said about a pending path.
#[derive(Clone, Copy, Debug)]
enum Verdict {
    /// Gone, unreadable, or not a candidate after all: forget it.
    Drop,
    /// A folder the root's walk would enter: walk it.
    Dir,
    /// Looked at; wait for the quiet period and look again.
    Seen(Seen),
    /// Unchanged across the quiet period: recorded in the catalogue.
    Taken,
}

/// One path of a stat batch.
struct Probe {
    path: PathBuf,
    gen: u64,
    root: Arc<Root>,
    root_dev: u64,
    candidate: bool,
    seen: Option<Seen>,
    quiet: Duration,
}

struct State {
    cfg: WatchConfig,
    db: Db,
    media: MediaTypes,
    waker: Waker,
    tx: mpsc::Sender<RawEvent>,
    shared: Arc<Shared>,
    roots: Vec<RootState>,
    pending: HashMap<PathBuf, Pending>,
    timer: BTreeMap<(Instant, u64), PathBuf>,
    seq: u64,
    dir_walks: VecDeque<DirWalk>,
    second_looks: VecDeque<(Instant, DirWalk)>,
    stat_jobs: usize,
    walk_jobs: usize,
    /// `status` lines of roots to write (`root:<path>` → `ok …` / `paused …`).
    notes: Vec<(String, String)>,
    /// The inotify limit warnings were given (once per run each).
    limit_warned: bool,
    instances_warned: bool,
}

impl State {
    fn new(w: Watcher, tx: mpsc::Sender<RawEvent>) -> State {
        let now = Instant::now();
        let shared = Arc::new(Shared {
            flags: w.roots.iter().map(|_| RootFlags::default()).collect(),
            wake: Notify::new(),
        });
        let method = match w.cfg.mode {
            WatchMode::Poll => Method::Poll("watch.mode = \"poll\"".into()),
            _ => Method::Events,
        };
        let roots = w
            .roots
            .into_iter()
            .map(|root| RootState {
                root: Arc::new(root),
                method: method.clone(),
                told: None,
                watcher: None,
                live: Liveness::Unknown,
                started: false,
                checking: false,
                needs_watch: false,
                setting_up: false,
                walking: false,
                next_check: now,
                next_poll: None,
                rescan: false,
                last_rescan: None,
            })
            .collect();
        State {
            cfg: w.cfg,
            db: w.db,
            media: w.media,
            waker: w.waker,
            tx,
            shared,
            roots,
            pending: HashMap::new(),
            timer: BTreeMap::new(),
            seq: 0,
            dir_walks: VecDeque::new(),
            second_looks: VecDeque::new(),
            stat_jobs: 0,
            walk_jobs: 0,
            notes: Vec::new(),
            limit_warned: false,
            instances_warned: false,
        }
    }

    fn settle(&self) -> Duration {
        self.cfg.settle
    }

    fn paused_recheck(&self) -> Duration {
        self.cfg.poll_interval.min(PAUSED_RECHECK_MAX)
    }

    fn quiet(&self, finished: bool) -> Duration {
        if finished {
            AFTER_CLOSE_QUIET.min(self.settle())
        } else {
            self.settle()
        }
    }

    // ----- the timer of pending paths -----

    fn schedule(&mut self, path: &Path, at: Instant) {
        let Some(p) = self.pending.get_mut(path) else {
            return;
        };
        if let Some(old) = p.due.take() {
            self.timer.remove(&old);
        }
        self.seq += 1;
        let key = (at, self.seq);
        p.due = Some(key);
        self.timer.insert(key, path.to_path_buf());
    }

    fn forget(&mut self, path: &Path) {
        if let Some(p) = self.pending.remove(path) {
            if let Some(key) = p.due {
                self.timer.remove(&key);
            }
        }
    }

    // ----- news from notify -----

    fn take_flags(&mut self, now: Instant) {
        let shared = self.shared.clone();
        for (i, f) in shared.flags.iter().enumerate() {
            if f.limit.swap(false, Ordering::SeqCst) {
                self.on_watch_limit(i, now);
            }
            if f.rescan.swap(false, Ordering::SeqCst) {
                tracing::debug!(root = %self.roots[i].root.path.display(), "events were lost; walking the root again");
                self.roots[i].rescan = true;
            }
        }
    }

    fn on_event(&mut self, ev: RawEvent, now: Instant) {
        let Some(rs) = self.roots.get_mut(ev.root) else {
            return;
        };
        if !matches!(rs.live, Liveness::Live { .. }) {
            return;
        }
        let root_path = rs.root.path.clone();
        let paths: &[PathBuf] = match ev.kind {
            // notify reports both ends of a rename it could pair; the new name is the news.
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                ev.paths.get(1..).unwrap_or(&[])
            }
            _ => &ev.paths,
        };
        for path in paths {
            if *path == root_path {
                // The root itself was removed or moved away (or something replaced it):
                // look at it now rather than at the next check.
                if matches!(
                    ev.kind,
                    EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
                ) {
                    self.roots[ev.root].next_check = now;
                }
                continue;
            }
            match ev.kind {
                EventKind::Create(CreateKind::Folder) => {
                    self.note_dir(ev.root, path.clone(), false)
                }
                EventKind::Create(_)
                | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any | ModifyKind::Other) => {
                    self.note_path(ev.root, path, News::Written, now)
                }
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                    self.note_path(ev.root, path, News::Finished, now)
                }
                // A rename into place is a new file under its final name (or a folder moved
                // in); the old name is simply no longer seen.
                EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {}
                EventKind::Modify(ModifyKind::Name(_)) => {
                    self.note_path(ev.root, path, News::Finished, now)
                }
                EventKind::Modify(ModifyKind::Metadata(_)) => {
                    self.note_path(ev.root, path, News::Metadata, now)
                }
                // Deletes are never news for the server; the periodic scan notes them.
                EventKind::Remove(_) | EventKind::Access(_) | EventKind::Any | EventKind::Other => {
                }
            }
        }
    }

    /// Something happened to `path`: (re)start its settle wait.
    fn note_path(&mut self, root: usize, path: &Path, news: News, now: Instant) {
        let r = &self.roots[root].root;
        let candidate = r.is_candidate(path, &self.media);
        if !candidate {
            // A folder moved in arrives as a rename of its path; only its lstat tells.
            let maybe_dir = news == News::Finished && r.recursive && r.may_hold(path);
            if !maybe_dir {
                return;
            }
        }
        match self.pending.get_mut(path) {
            Some(p) => {
                p.gen += 1;
                p.seen = None;
                p.finished = match news {
                    News::Written => false,
                    News::Finished => true,
                    News::Metadata => p.finished,
                };
                p.candidate |= candidate;
            }
            None => {
                if self.pending.len() >= PENDING_MAX {
                    self.roots[root].rescan = true;
                    return;
                }
                self.pending.insert(
                    path.to_path_buf(),
                    Pending {
                        root,
                        candidate,
                        gen: 0,
                        seen: None,
                        finished: news == News::Finished,
                        due: None,
                        in_flight: false,
                    },
                );
            }
        }
        self.schedule(path, now + COALESCE);
    }

    /// A folder appeared under a root: walk it now (and once more a little later).
    fn note_dir(&mut self, root: usize, dir: PathBuf, second: bool) {
        let r = &self.roots[root].root;
        if !r.recursive || !r.may_hold(&dir) {
            return;
        }
        // A walk of a folder already waiting covers its subfolders.
        if self
            .dir_walks
            .iter()
            .any(|d| d.root == root && d.second == second && dir.starts_with(&d.dir))
        {
            return;
        }
        if self.dir_walks.len() >= DIR_QUEUE_MAX {
            self.roots[root].rescan = true;
            return;
        }
        self.dir_walks.push_back(DirWalk { root, dir, second });
    }

    /// A folder that appeared could not be watched: the whole root is polled from now on
    /// (a root half watched would miss files silently).
    fn on_watch_limit(&mut self, root: usize, now: Instant) {
        if self.roots[root].watcher.take().is_none() {
            return;
        }
        self.fall_back_to_polling(root, WatchFailure::Limit);
        let rs = &mut self.roots[root];
        // Folders that could not be watched may already hold files.
        rs.rescan = true;
        rs.next_poll = Some(now + self.cfg.poll_interval);
    }

    // ----- starting blocking work -----

    fn start_work(
        &mut self,
        now: Instant,
        tasks: &mut JoinSet<Result<Done, WatchError>>,
        cancel: &CancellationToken,
    ) {
        for (key, value) in self.notes.drain(..) {
            let db = self.db.clone();
            tasks.spawn_blocking(move || {
                db.call_blocking(|c| db::meta_set(c, &key, &value))?;
                Ok(Done::Noted)
            });
        }
        for i in 0..self.roots.len() {
            let rs = &mut self.roots[i];
            if rs.needs_watch && !rs.setting_up && !rs.checking {
                rs.needs_watch = false;
                rs.setting_up = true;
                let (root, tx, shared) = (rs.root.clone(), self.tx.clone(), self.shared.clone());
                // Setting a recursive watch up walks every folder of the root: blocking work.
                tasks.spawn_blocking(move || {
                    let result = start_watcher(&root, i, tx, shared);
                    Ok(Done::WatchSet { root: i, result })
                });
            }
            if !rs.checking && !rs.setting_up && now >= rs.next_check {
                rs.checking = true;
                let root = rs.root.clone();
                let auto = self.cfg.mode == WatchMode::Auto;
                tasks.spawn_blocking(move || {
                    let health = scan::probe_root(&root.path).map(|m| Health {
                        dev: m.dev(),
                        ino: m.ino(),
                        remote_fs: if auto {
                            remote_filesystem(&root.path)
                        } else {
                            None
                        },
                    });
                    Ok(Done::Checked { root: i, health })
                });
            }
        }
        while self.walk_jobs < WALK_JOBS_MAX {
            if let Some(i) = (0..self.roots.len())
                .find(|&i| self.root_walk_due(i, now).is_some_and(|t| t <= now))
            {
                let rs = &mut self.roots[i];
                rs.walking = true;
                rs.rescan = false;
                rs.last_rescan = Some(now);
                if let Method::Poll(_) = rs.method {
                    rs.next_poll = None;
                }
                self.spawn_walk(i, None, tasks, cancel);
                continue;
            }
            while let Some((t, _)) = self.second_looks.front() {
                if *t > now {
                    break;
                }
                if let Some((_, d)) = self.second_looks.pop_front() {
                    self.note_dir(d.root, d.dir, true);
                }
            }
            let Some(d) = self.dir_walks.pop_front() else {
                break;
            };
            if self.roots[d.root].dev().is_none() {
                continue;
            }
            let root = d.root;
            self.spawn_walk(root, Some(d), tasks, cancel);
        }
        while self.stat_jobs < STAT_JOBS_MAX {
            let batch = self.due_probes(now);
            if batch.is_empty() {
                break;
            }
            self.stat_jobs += 1;
            let db = self.db.clone();
            tasks.spawn_blocking(move || stat_batch(&db, batch));
        }
    }

    /// When root `i` wants a walk of the whole root (`None`: not now, or it cannot have one
    /// before something else happens).
    fn root_walk_due(&self, i: usize, now: Instant) -> Option<Instant> {
        let rs = &self.roots[i];
        if rs.walking || rs.setting_up || rs.needs_watch || rs.dev().is_none() {
            return None;
        }
        let rescan = if rs.rescan && self.pending.len() < PENDING_MAX / 2 {
            Some(rs.last_rescan.map_or(now, |t| t + RESCAN_MIN_GAP))
        } else {
            None
        };
        match (rescan, rs.next_poll) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn spawn_walk(
        &mut self,
        i: usize,
        dir: Option<DirWalk>,
        tasks: &mut JoinSet<Result<Done, WatchError>>,
        cancel: &CancellationToken,
    ) {
        self.walk_jobs += 1;
        let root = self.roots[i].root.clone();
        let (db, media, cancel) = (self.db.clone(), self.media.clone(), cancel.clone());
        tasks.spawn_blocking(move || {
            let start = dir
                .as_ref()
                .map_or(root.path.as_path(), |d| d.dir.as_path());
            let walked = match scan::scan_subtree(&root, start, &media, &cancel) {
                Ok(w) => w,
                Err(ScanError::Cancelled) => Default::default(),
                Err(ScanError::Db(e)) => return Err(e.into()),
            };
            let at = Instant::now();
            for e in walked.errors.iter().take(3) {
                tracing::debug!("walk: {e}");
            }
            let mut found = walked.files;
            // Only what the catalogue does not hold as it is now is news.
            if dir.is_none() {
                let rb = root.path_bytes().to_vec();
                let known = db.call_blocking(move |c| catalogue::load_root(c, &rb))?;
                found.retain(|(p, s)| match known.get(p.as_os_str().as_bytes()) {
                    Some(k) => k.stat != *s || k.missing,
                    None => true,
                });
            } else if !found.is_empty() {
                found = db.call_blocking(move |c| {
                    let mut news = Vec::new();
                    for (p, s) in found {
                        if !catalogue::is_current(c, p.as_os_str().as_bytes(), &s)? {
                            news.push((p, s));
                        }
                    }
                    Ok(news)
                })?;
            }
            Ok(Done::Walked {
                root: i,
                dir,
                found,
                at,
            })
        });
    }

    /// Takes the pending paths whose time has come, up to a batch.
    fn due_probes(&mut self, now: Instant) -> Vec<Probe> {
        let mut batch = Vec::new();
        let mut busy = Vec::new();
        while batch.len() < STAT_BATCH {
            let Some(entry) = self.timer.first_entry() else {
                break;
            };
            if entry.key().0 > now {
                break;
            }
            let path = entry.remove();
            let Some(p) = self.pending.get_mut(&path) else {
                continue;
            };
            p.due = None;
            if p.in_flight {
                // Its last stat is still out; look again after it.
                busy.push(path);
                continue;
            }
            let rs = &self.roots[p.root];
            let Some(root_dev) = rs.dev() else {
                self.pending.remove(&path);
                continue;
            };
            p.in_flight = true;
            batch.push(Probe {
                gen: p.gen,
                root: rs.root.clone(),
                root_dev,
                candidate: p.candidate,
                seen: p.seen,
                quiet: if p.finished {
                    AFTER_CLOSE_QUIET.min(self.cfg.settle)
                } else {
                    self.cfg.settle
                },
                path,
            });
        }
        for path in busy {
            self.schedule(&path, now + COALESCE);
        }
        batch
    }

    /// The next moment something is due that this loop, not a finishing job, must start.
    fn next_deadline(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for (i, rs) in self.roots.iter().enumerate() {
            if !rs.checking && !rs.setting_up {
                consider(Some(rs.next_check));
            }
            if self.walk_jobs < WALK_JOBS_MAX {
                consider(self.root_walk_due(i, now));
            }
        }
        if self.walk_jobs < WALK_JOBS_MAX {
            consider(self.second_looks.front().map(|(t, _)| *t));
            if !self.dir_walks.is_empty() {
                consider(Some(now));
            }
        }
        if self.stat_jobs < STAT_JOBS_MAX {
            consider(self.timer.keys().next().map(|k| k.0));
        }
        next
    }

    // ----- finished jobs -----

    fn on_done(&mut self, done: Done, now: Instant) {
        match done {
            Done::Checked { root, health } => {
                self.roots[root].checking = false;
                match health {
                    Ok(h) => self.on_root_there(root, h, now),
                    Err(reason) => self.on_root_gone(root, reason, now),
                }
            }
            Done::WatchSet { root, result } => {
                let rs = &mut self.roots[root];
                rs.setting_up = false;
                rs.started = true;
                match result {
                    Ok(w) if rs.dev().is_some() => rs.watcher = Some(w),
                    // Paused while its watch was being set up.
                    Ok(_) => {}
                    Err(e) => self.on_watch_failed(root, e, now),
                }
            }
            Done::Stated { results, queued } => {
                self.stat_jobs -= 1;
                if queued > 0 {
                    self.waker.wake();
                }
                for (path, gen, verdict) in results {
                    self.on_verdict(path, gen, verdict);
                }
            }
            Done::Walked {
                root,
                dir,
                found,
                at,
            } => {
                self.walk_jobs -= 1;
                let settle = self.settle();
                let mut full = false;
                for (path, stat) in found {
                    if self.pending.contains_key(&path) {
                        continue;
                    }
                    if self.pending.len() >= PENDING_MAX {
                        full = true;
                        break;
                    }
                    self.pending.insert(
                        path.clone(),
                        Pending {
                            root,
                            candidate: true,
                            gen: 0,
                            seen: Some(Seen { stat, at }),
                            finished: false,
                            due: None,
                            in_flight: false,
                        },
                    );
                    self.schedule(&path, at + settle);
                }
                let rs = &mut self.roots[root];
                rs.rescan |= full;
                match dir {
                    None => {
                        rs.walking = false;
                        if let Method::Poll(_) = rs.method {
                            rs.next_poll = Some(now + self.cfg.poll_interval);
                        }
                    }
                    Some(d) if !d.second => {
                        self.second_looks
                            .push_back((now + NEW_DIR_SECOND_LOOK, DirWalk { second: true, ..d }));
                    }
                    Some(_) => {}
                }
            }
            Done::Noted => {}
        }
    }

    fn on_verdict(&mut self, path: PathBuf, gen: u64, verdict: Verdict) {
        let (root, current, finished) = match self.pending.get_mut(&path) {
            Some(p) => {
                p.in_flight = false;
                (p.root, p.gen == gen, p.finished)
            }
            None => return,
        };
        if !current {
            // Newer news arrived meanwhile; its own wait is already scheduled.
            return;
        }
        match verdict {
            Verdict::Drop | Verdict::Taken => self.forget(&path),
            Verdict::Dir => {
                self.forget(&path);
                self.note_dir(root, path, false);
            }
            Verdict::Seen(seen) => {
                if let Some(p) = self.pending.get_mut(&path) {
                    p.seen = Some(seen);
                }
                let at = seen.at + self.quiet(finished);
                self.schedule(&path, at);
            }
        }
    }

    fn on_root_there(&mut self, i: usize, h: Health, now: Instant) {
        let poll_interval = self.cfg.poll_interval;
        let rs = &mut self.roots[i];
        rs.next_check = now + poll_interval;
        if rs.live
            == (Liveness::Live {
                dev: h.dev,
                ino: h.ino,
            })
        {
            return;
        }
        let first = rs.live == Liveness::Unknown;
        match &rs.live {
            Liveness::Paused(_) => {
                tracing::info!(root = %rs.root.path.display(), "root is back: watching it again and looking for new files");
                self.notes.push((
                    format!("root:{}", rs.root.path.display()),
                    format!("ok {}", now_ms()),
                ));
            }
            Liveness::Live { .. } => {
                tracing::info!(root = %rs.root.path.display(), "root was replaced (remounted?): watching it anew");
            }
            Liveness::Unknown => {}
        }
        rs.watcher = None;
        rs.live = Liveness::Live {
            dev: h.dev,
            ino: h.ino,
        };
        // The full scan at start-up covers a root seen for the first time; one that came
        // back (or was replaced) is walked once it is watched.
        rs.rescan = !first;
        // Decided again each time the root appears: a remount may bring another filesystem,
        // and a raised inotify limit is tried again.
        rs.method = match (self.cfg.mode, h.remote_fs) {
            (WatchMode::Poll, _) => Method::Poll("watch.mode = \"poll\"".into()),
            (WatchMode::Auto, Some(fs)) => Method::Poll(format!(
                "it is on a {fs} filesystem, where inotify does not see changes made by other machines"
            )),
            _ => Method::Events,
        };
        match rs.method {
            Method::Events => rs.needs_watch = true,
            Method::Poll(_) => {
                rs.started = true;
                rs.next_poll = Some(now + poll_interval);
                self.tell_polling(i);
            }
        }
    }

    fn on_root_gone(&mut self, i: usize, reason: String, now: Instant) {
        let recheck = self.paused_recheck();
        let rs = &mut self.roots[i];
        rs.next_check = now + recheck;
        rs.started = true;
        rs.watcher = None;
        rs.needs_watch = false;
        rs.next_poll = None;
        rs.rescan = false;
        if matches!(rs.live, Liveness::Paused(_)) {
            return;
        }
        tracing::warn!(
            root = %rs.root.path.display(),
            "root paused: {reason}; its files are left as they are, and it is watched again when it is back"
        );
        self.notes.push((
            format!("root:{}", rs.root.path.display()),
            format!("paused {reason}"),
        ));
        rs.live = Liveness::Paused(reason);
    }

    fn on_watch_failed(&mut self, i: usize, e: notify::Error, now: Instant) {
        let failure = match &e.kind {
            notify::ErrorKind::MaxFilesWatch => WatchFailure::Limit,
            notify::ErrorKind::Io(io) if io.raw_os_error() == Some(libc::ENOSPC) => {
                WatchFailure::Limit
            }
            notify::ErrorKind::Io(io) if io.raw_os_error() == Some(libc::EMFILE) => {
                WatchFailure::Instances
            }
            notify::ErrorKind::PathNotFound => {
                self.on_root_gone(i, "cannot read it (it vanished)".into(), now);
                return;
            }
            notify::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
                self.on_root_gone(i, "cannot read it (it vanished)".into(), now);
                return;
            }
            _ => WatchFailure::Other(e.to_string()),
        };
        self.fall_back_to_polling(i, failure);
        let rs = &mut self.roots[i];
        rs.next_poll = Some(now + self.cfg.poll_interval);
    }

    fn fall_back_to_polling(&mut self, i: usize, failure: WatchFailure) {
        let path = self.roots[i].root.path.display().to_string();
        let every = self.cfg.poll_interval;
        let reason = match failure {
            WatchFailure::Limit => {
                if !self.limit_warned {
                    self.limit_warned = true;
                    tracing::warn!(
                        root = %path,
                        "inotify watch limit reached ({}): polling this root every {:?} instead. \
                         Raise the limit with `sysctl fs.inotify.max_user_watches={SUGGESTED_MAX_WATCHES}` (to keep it, \
                         install {SYSCTL_SNIPPET} in /etc/sysctl.d/) and restart immish-sync, or set watch.mode = \"poll\"",
                        inotify_limit("watches"),
                        every,
                    );
                }
                "the inotify watch limit was reached".to_string()
            }
            WatchFailure::Instances => {
                if !self.instances_warned {
                    self.instances_warned = true;
                    tracing::warn!(
                        root = %path,
                        "too many inotify instances ({}): polling this root every {:?} \
                         instead. Raise the limit with `sysctl fs.inotify.max_user_instances=1024` (to keep it, install \
                         {SYSCTL_SNIPPET} in /etc/sysctl.d/) and restart immish-sync, or set watch.mode = \"poll\"",
                        inotify_limit("instances"),
                        every,
                    );
                }
                "inotify instances ran out".to_string()
            }
            WatchFailure::Other(e) => {
                tracing::warn!(root = %path, error = %e, "cannot watch this root; polling it every {every:?} instead");
                format!("it cannot be watched ({e})")
            }
        };
        self.roots[i].method = Method::Poll(reason);
        self.tell_polling(i);
    }

    /// Says once per root (and reason) why it is polled.
    fn tell_polling(&mut self, i: usize) {
        let every = self.cfg.poll_interval;
        let rs = &mut self.roots[i];
        let Method::Poll(reason) = &rs.method else {
            return;
        };
        if self.cfg.mode == WatchMode::Poll || rs.told.as_ref() == Some(reason) {
            return;
        }
        tracing::info!(root = %rs.root.path.display(), "polling this root every {every:?}: {reason}");
        rs.told = Some(reason.clone());
    }

    fn say_how_roots_are_watched(&self) {
        let (mut events, mut polled, mut paused) = (0, 0, 0);
        for rs in &self.roots {
            match (&rs.live, &rs.method) {
                (Liveness::Live { .. }, Method::Events) => events += 1,
                (Liveness::Live { .. }, Method::Poll(_)) => polled += 1,
                _ => paused += 1,
            }
        }
        tracing::info!(
            inotify = events,
            polled,
            paused,
            settle = ?self.cfg.settle,
            poll_interval = ?self.cfg.poll_interval,
            "roots watched: {}",
            self.roots.len()
        );
    }
}

/// Why a root could not have a notify watcher.
enum WatchFailure {
    /// `fs.inotify.max_user_watches` reached.
    Limit,
    /// `fs.inotify.max_user_instances` reached.
    Instances,
    Other(String),
}

/// A notify watcher on one root (blocking: a recursive watch walks the tree). Symlinks are
/// not followed, as in the scanner.
fn start_watcher(
    root: &Root,
    i: usize,
    tx: mpsc::Sender<RawEvent>,
    shared: Arc<Shared>,
) -> notify::Result<RecommendedWatcher> {
    let config = notify::Config::default().with_follow_symlinks(false);
    let mut w = RecommendedWatcher::new(event_handler(i, tx, shared), config)?;
    let mode = if root.recursive {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    };
    w.watch(&root.path, mode)?;
    Ok(w)
}

/// Looks at a batch of pending paths and records the ones that settled (blocking).
fn stat_batch(db: &Db, probes: Vec<Probe>) -> Result<Done, WatchError> {
    let mut results = Vec::with_capacity(probes.len());
    let mut settled = Vec::new();
    for p in probes {
        let verdict = look(&p);
        if let Verdict::Seen(seen) = verdict {
            let unchanged = p.seen.is_some_and(|old| {
                same_content(&old.stat, &seen.stat) && seen.at.duration_since(old.at) >= p.quiet
            });
            if unchanged {
                settled.push((
                    p.root.path_bytes().to_vec(),
                    p.path.as_os_str().as_bytes().to_vec(),
                    seen.stat,
                ));
                results.push((p.path, p.gen, Verdict::Taken));
                continue;
            }
        }
        results.push((p.path, p.gen, verdict));
    }
    let queued = if settled.is_empty() {
        0
    } else {
        db.call_blocking(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let now = now_ms();
            let mut queued = 0u64;
            for (root, path, stat) in &settled {
                // Compared inside the transaction: a scan may have recorded it meanwhile.
                if !catalogue::is_current(&tx, path, stat)? {
                    catalogue::upsert_and_queue(&tx, root, path, stat, now)?;
                    queued += 1;
                    tracing::debug!(path = %Path::new(std::ffi::OsStr::from_bytes(path)).display(), "settled; queued");
                }
            }
            tx.commit()?;
            Ok(queued)
        })?
    };
    Ok(Done::Stated { results, queued })
}

/// One `lstat` of a pending path, by the scanner's rules.
fn look(p: &Probe) -> Verdict {
    let at = Instant::now();
    let Ok(meta) = std::fs::symlink_metadata(&p.path) else {
        // Gone (a temporary name renamed away, a delete) or unreadable: the periodic scan
        // reports what it cannot read.
        return Verdict::Drop;
    };
    if meta.is_dir() {
        return if meta.dev() == p.root_dev && p.root.recursive && p.root.may_hold(&p.path) {
            Verdict::Dir
        } else {
            Verdict::Drop
        };
    }
    if !p.candidate || !meta.is_file() || meta.len() == 0 || meta.dev() != p.root_dev {
        return Verdict::Drop;
    }
    Verdict::Seen(Seen {
        stat: FileStat::from_metadata(&meta),
        at,
    })
}

/// The same file with the same content as far as `lstat` can tell (the ctime also moves on
/// `chmod` or a rename, which change no byte).
fn same_content(a: &FileStat, b: &FileStat) -> bool {
    a.dev == b.dev && a.ino == b.ino && a.size == b.size && a.mtime_ns == b.mtime_ns
}

/// The inotify limit `max_user_<what>` as a message shows it: the system-wide sysctl, and
/// the user namespace's own limit when that is lower (containers).
fn inotify_limit(what: &str) -> String {
    let read = |p: String| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    let global = read(format!("/proc/sys/fs/inotify/max_user_{what}"));
    let userns = read(format!("/proc/sys/user/max_inotify_{what}"));
    let shown = global.map_or_else(|| "unknown".to_string(), |g| g.to_string());
    match (global, userns) {
        (Some(g), Some(u)) if u < g => {
            format!("fs.inotify.max_user_{what}={shown}, and user.max_inotify_{what}={u} in this user namespace")
        }
        _ => format!("fs.inotify.max_user_{what}={shown}"),
    }
}

/// Filesystems where inotify sees only the changes made through this machine's kernel
/// (network, cluster and FUSE filesystems, VM shared folders), by `statfs` `f_type`.
const REMOTE_FILESYSTEMS: &[(u32, &str)] = &[
    (0x6969, "NFS"),
    (0xFF53_4D42, "CIFS/SMB"),
    (0xFE53_4D42, "SMB2"),
    (0x517B, "SMB"),
    (0x6573_5546, "FUSE"),
    (0x0102_1997, "9p"),
    (0x00C3_6400, "Ceph"),
    (0x5346_414F, "AFS"),
    (0x6B41_4653, "AFS"),
    (0x7375_7245, "Coda"),
    (0x564C, "NCP"),
    (0x0BD0_0BD0, "Lustre"),
    (0x0116_1970, "GFS2"),
    (0x7461_636F, "OCFS2"),
    (0x4750_4653, "GPFS"),
    (0x1983_0326, "BeeGFS"),
    (0x1366_1366, "OrangeFS"),
    (0x786F_4256, "VirtualBox shared folder"),
    (0x7C7C_6673, "Parallels shared folder"),
];

fn remote_filesystem_name(magic: u32) -> Option<&'static str> {
    REMOTE_FILESYSTEMS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, name)| *name)
}

/// The network or FUSE filesystem `path` is on, if it is one (blocking).
#[cfg(target_os = "linux")]
fn remote_filesystem(path: &Path) -> Option<&'static str> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `statfs` only writes into the struct it is given; all-zero is a valid value
    // of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid, writable `statfs`.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    // `f_type` is signed or unsigned, 32 or 64 bits, depending on the target; the magic
    // numbers are 32-bit patterns.
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as u32;
    remote_filesystem_name(magic)
}

#[cfg(not(target_os = "linux"))]
fn remote_filesystem(_path: &Path) -> Option<&'static str> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_and_fuse_filesystems_are_recognised() {
        assert_eq!(remote_filesystem_name(0x6969), Some("NFS"));
        assert_eq!(remote_filesystem_name(0xFF53_4D42), Some("CIFS/SMB"));
        assert_eq!(remote_filesystem_name(0x6573_5546), Some("FUSE"));
        // ext4, btrfs, xfs, tmpfs, overlayfs
        for local in [0xEF53, 0x9123_683E, 0x5846_5342, 0x0102_1994, 0x794C_7630] {
            assert_eq!(remote_filesystem_name(local), None, "{local:#x}");
        }
    }

    #[test]
    fn a_local_directory_is_not_remote() {
        let dir = tempfile::tempdir().unwrap();
        // Whatever the test machine's /tmp is, it is not a network filesystem here.
        assert_eq!(remote_filesystem(dir.path()), None);
    }

    /// A watcher on a fresh catalogue, without a server: what it queues is what it found.
    async fn watcher_on(
        dir: &Path,
        capacity: usize,
    ) -> (
        Db,
        CancellationToken,
        tokio::task::JoinHandle<Result<(), WatchError>>,
    ) {
        let db = Db::open(&dir.join("state.sqlite3")).unwrap();
        let root = Root::new(&crate::config::RootConfig {
            path: dir.join("photos"),
            recursive: true,
            include: vec![],
            exclude: vec![],
            hidden: false,
        })
        .unwrap();
        let cfg = WatchConfig {
            mode: WatchMode::Notify,
            settle: Duration::from_millis(100),
            poll_interval: Duration::from_secs(3600),
        };
        let mut w = Watcher::new(
            cfg,
            db.clone(),
            vec![root],
            MediaTypes::builtin(),
            Waker::default(),
        );
        w.capacity = capacity;
        let (ready_tx, ready) = oneshot::channel();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(w.run(ready_tx, cancel.clone()));
        tokio::time::timeout(Duration::from_secs(10), ready)
            .await
            .unwrap()
            .unwrap();
        (db, cancel, task)
    }

    async fn queued_within(db: &Db, n: i64, limit: Duration) -> i64 {
        let deadline = Instant::now() + limit;
        loop {
            let got: i64 = db
                .call(|c| {
                    c.query_row(
                        "SELECT COUNT(*) FROM jobs WHERE state = 'queued'",
                        [],
                        |r| r.get(0),
                    )
                })
                .await
                .unwrap();
            if got >= n || Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_event_channel_means_a_rescan_not_a_lost_file() {
        let dir = tempfile::tempdir().unwrap();
        let photos = dir.path().join("photos");
        std::fs::create_dir_all(&photos).unwrap();
        std::fs::write(
            photos.join("seed.txt"),
            b"keeps the root from looking unmounted",
        )
        .unwrap();
        // Four events of room for thousands: nearly every event is dropped at the channel.
        let (db, cancel, task) = watcher_on(dir.path(), 4).await;
        let n = 2000;
        for i in 0..n {
            let sub = photos.join(format!("d{}", i % 10));
            std::fs::create_dir_all(&sub).unwrap();
            std::fs::write(sub.join(format!("IMG_{i}.jpg")), format!("photo {i}")).unwrap();
        }
        let got = queued_within(&db, n, Duration::from_secs(30)).await;
        assert_eq!(got, n, "every file is queued, once");
        cancel.cancel();
        task.await.unwrap().unwrap();
    }

    #[test]
    fn same_content_ignores_the_ctime_only() {
        let a = FileStat {
            dev: 1,
            ino: 2,
            size: 3,
            mtime_ns: 4,
            ctime_ns: 5,
        };
        assert!(same_content(&a, &FileStat { ctime_ns: 9, ..a }));
        assert!(!same_content(&a, &FileStat { size: 4, ..a }));
        assert!(!same_content(&a, &FileStat { mtime_ns: 5, ..a }));
        assert!(!same_content(&a, &FileStat { ino: 7, ..a }));
    }
}
