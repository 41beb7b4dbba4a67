//! Live watching: notify events → a bounded channel → coalescing → the settle check → the
//! catalogue; polling where events cannot be had; pausing roots that went away.
//!
//! Owns: one notify watcher per watched root (inotify on Linux, recursive where the root is);
//! the choice between events and polling for each root (`watch.mode`, network and FUSE
//! filesystems, the inotify watch limit); the settle check (a file is queued only after its
//! size and mtime stayed the same across `watch.settle`, measured on the monotonic clock,
//! and it is neither still open for writing nor structurally incomplete, up to
//! `watch.incomplete_limit`); walks of folders that appear (inotify misses files created
//! right after their folder, in 9 runs of 10 with notify 8 and 9:
//! docs/RELIABILITY.md#files-in-new-folders); and the liveness of every root (missing or
//! empty = paused and reported, never "deleted"; when it is back it is watched and walked
//! again).
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
//!
//! Parts, each owning one thing, so that one is changed without reading the others:
//! - `bridge`: notify's callback → the bounded channel; which events cross, what each kind
//!   means, and a lost event becoming a rescan of its root.
//! - `settle`: the pending paths, their timer, the stat batches and the verdict on a probe.
//! - `walk`: walks of new folders (at once and a second later) and of whole roots.
//! - `roots`: each root's liveness (missing or empty = paused), events or polling, the
//!   inotify limits and their hint, remote filesystems.
//!
//! This module is the public face and the task's loop, which only routes: events, flags and
//! finished jobs to the part they concern.

mod bridge;
mod roots;
mod settle;
mod walk;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::RecommendedWatcher;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::MediaTypes;
use crate::config::WatchConfig;
use crate::db::{Db, DbError};
use crate::pipeline::Waker;
use crate::scan::walk::Root;
use bridge::{Change, RawEvent, Shared};
use roots::{Health, Roots};
use settle::{News, Settling, Stated};
use walk::{Walked, Walks};

/// Sidecar paths waiting to be compared with what their photos went up with (beyond it,
/// the next scan finds the change).
const SIDECARS_PENDING_MAX: usize = 4096;
/// A sidecar is compared this long after its last event, so that one save is one report.
const SIDECAR_QUIET: Duration = Duration::from_secs(1);

/// Events buffered between notify's thread and the watcher task. When it is full the
/// callback drops the event and marks its root for a rescan instead.
pub const EVENT_CHANNEL_CAPACITY: usize = 4096;
/// The quiet period after a close-after-write or a rename into place (or `settle`, if
/// shorter). The stability check is still made: a writer that reopens the file within it
/// is seen in time.
pub const AFTER_CLOSE_QUIET: Duration = Duration::from_millis(500);
/// Events taken from the channel per turn of the loop.
const EVENT_BATCH: usize = 1024;
/// How long in-flight blocking work may take to finish after a stop was asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

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
        // The files that waited for looking unfinished were the last run's pending set,
        // which is gone: its walks and the first scan find what still waits.
        self.db.call(|c| crate::db::waiting::clear_all(c)).await?;
        let (tx, mut rx) = mpsc::channel(self.capacity);
        let mut w = State::new(self, tx);
        let mut ready = Some(ready);
        let mut tasks: Jobs = JoinSet::new();
        let beat = crate::service::heartbeat("watcher");
        let outcome = loop {
            beat.tick();
            let now = Instant::now();
            w.take_flags(now);
            w.start_work(now, &mut tasks, &cancel);
            if ready.is_some() && w.roots.all_started() {
                w.roots.say_how_roots_are_watched();
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
            }
            let deadline = beat.wait_until(w.next_deadline());
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

/// The blocking jobs in flight, each ending in a [`Done`].
type Jobs = JoinSet<Result<Done, WatchError>>;

/// A finished blocking job.
enum Done {
    /// A root was looked at.
    Checked {
        root: usize,
        health: Result<Health, String>,
    },
    /// A root's notify watcher was set up (or could not be).
    WatchSet {
        root: usize,
        result: notify::Result<RecommendedWatcher>,
    },
    Stated(Stated),
    Walked(Walked),
    /// A root's line for `status` was written.
    Noted,
}

/// A bounded queue was full: what did not fit is found by a walk of its whole root instead.
#[derive(Debug)]
struct Full;

/// The watcher task's state: its parts, and what routes between them.
struct State {
    media: MediaTypes,
    waker: Waker,
    shared: Arc<Shared>,
    roots: Roots,
    settling: Settling,
    walks: Walks,
    db: Db,
    /// XMP sidecars that changed, and when they are due to be compared
    /// (docs/ARCHITECTURE.md#sidecars).
    sidecars: std::collections::HashMap<PathBuf, Instant>,
}

impl State {
    fn new(w: Watcher, tx: mpsc::Sender<RawEvent>) -> State {
        let shared = Arc::new(Shared::new(w.roots.len()));
        State {
            db: w.db.clone(),
            sidecars: std::collections::HashMap::new(),
            settling: Settling::new(&w.cfg, w.db.clone()),
            walks: Walks::new(w.db.clone(), w.media.clone()),
            roots: Roots::new(w.roots, w.cfg, w.db, tx, shared.clone()),
            media: w.media,
            waker: w.waker,
            shared,
        }
    }

    /// Takes what notify's thread raised for each root since the last turn.
    fn take_flags(&mut self, now: Instant) {
        for i in 0..self.roots.len() {
            if self.shared.take_limit(i) {
                self.roots.on_watch_limit(i, now);
            }
            if self.shared.take_rescan(i) {
                self.roots.on_lost_events(i);
            }
        }
    }

    fn on_event(&mut self, ev: RawEvent, now: Instant) {
        if self.roots.dev(ev.root).is_none() {
            return;
        }
        let root = self.roots.root(ev.root).clone();
        let change = bridge::classify(&ev.kind);
        for path in ev.changed_paths() {
            if *path == root.path {
                // The root itself was removed or moved away (or something replaced it):
                // look at it now rather than at the next check.
                if ev.may_remove() {
                    self.roots.check_now(ev.root, now);
                }
                continue;
            }
            match change {
                Change::NewFolder => self.note_dir(ev.root, path.clone()),
                Change::News(news) => self.note_path(ev.root, path, news, ev.losses, now),
                Change::Nothing => {}
            }
        }
    }

    /// Something happened to `path`: (re)start its settle wait.
    fn note_path(&mut self, root: usize, path: &Path, news: News, losses: u64, now: Instant) {
        let r = self.roots.root(root);
        // A sidecar is never an asset; a change to one is compared with what its photo
        // went up with, and reported.
        let name = path
            .file_name()
            .map(|n| n.as_encoded_bytes())
            .unwrap_or_default();
        if crate::sidecar::is_sidecar_name(name)
            && path.parent().is_some_and(|d| r.may_hold(d))
            && (self.sidecars.len() < SIDECARS_PENDING_MAX || self.sidecars.contains_key(path))
        {
            self.sidecars
                .insert(path.to_path_buf(), now + SIDECAR_QUIET);
            return;
        }
        if let Err(Full) = self
            .settling
            .note((root, r), &self.media, path, (news, losses), now)
        {
            self.roots.want_rescan(root);
        }
    }

    /// A folder appeared under a root: walk it now (and once more a little later).
    fn note_dir(&mut self, root: usize, dir: PathBuf) {
        let r = self.roots.root(root);
        if let Err(Full) = self.walks.note_dir(root, r, dir, false) {
            self.roots.want_rescan(root);
        }
    }

    /// Starts the blocking work that is due, part by part: the roots' checks and watch
    /// set-ups, walks, then stat batches.
    fn start_work(&mut self, now: Instant, tasks: &mut Jobs, cancel: &CancellationToken) {
        self.roots.start_work(now, tasks);
        self.compare_sidecars(now, tasks);
        let backlog_low = self.settling.backlog_low();
        self.walks
            .start(now, &mut self.roots, backlog_low, tasks, cancel);
        let (roots, shared) = (&self.roots, &self.shared);
        self.settling.start(
            now,
            |i| {
                roots.dev(i).map(|dev| settle::RootNow {
                    root: roots.root(i).clone(),
                    dev,
                    polled: roots.polled(i),
                    losses: shared.losses(i),
                })
            },
            tasks,
        );
    }

    /// Sidecars quiet for [`SIDECAR_QUIET`]: their stat compared, on the blocking pool, with
    /// the one their photo went up with; a change is logged and counted for `status` (the
    /// photo is not uploaded again: its bytes did not change).
    fn compare_sidecars(&mut self, now: Instant, tasks: &mut Jobs) {
        let due: Vec<PathBuf> = self
            .sidecars
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(p, _)| p.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        for p in &due {
            self.sidecars.remove(p);
        }
        let db = self.db.clone();
        tasks.spawn_blocking(move || {
            use std::os::unix::ffi::OsStringExt;
            let seen: Vec<crate::db::sidecars::SeenSidecar> = due
                .into_iter()
                .filter_map(|p| {
                    let m = std::fs::symlink_metadata(&p).ok().filter(|m| m.is_file())?;
                    let st = crate::db::catalogue::FileStat::from_metadata(&m);
                    Some(crate::db::sidecars::SeenSidecar {
                        path: p.into_os_string().into_vec(),
                        size: st.size,
                        mtime_ns: st.mtime_ns,
                    })
                })
                .collect();
            for late in db.call_blocking(move |c| crate::db::sidecars::late(c, &seen))? {
                crate::db::sidecars::tell(&late);
            }
            Ok(Done::Noted)
        });
    }

    /// The next moment something is due that this loop, not a finishing job, must start.
    fn next_deadline(&self) -> Option<Instant> {
        let now = Instant::now();
        let backlog_low = self.settling.backlog_low();
        [
            self.roots.next_check(),
            self.walks.next_due(now, &self.roots, backlog_low),
            self.settling.next_due(),
            self.sidecars.values().min().copied(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn on_done(&mut self, done: Done, now: Instant) {
        match done {
            Done::Checked { root, health } => self.roots.on_checked(root, health, now),
            Done::WatchSet { root, result } => self.roots.on_watch_set(root, result, now),
            Done::Stated(stated) => {
                if stated.queued > 0 {
                    self.waker.wake();
                }
                for (root, dir) in self.settling.on_stated(stated) {
                    self.note_dir(root, dir);
                }
            }
            Done::Walked(Walked {
                root,
                dir,
                found,
                at,
            }) => {
                if let Err(Full) = self.settling.found(root, found, at) {
                    self.roots.want_rescan(root);
                }
                let whole_root = dir.is_none();
                self.walks.finished(dir, now);
                if whole_root {
                    self.roots.end_walk(root, now);
                }
            }
            Done::Noted => {}
        }
    }
}
