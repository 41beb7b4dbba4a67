//! The notify bridge: notify's callback thread → a bounded channel → the watcher task.
//!
//! Owns: the notify watcher of one root and its callback (which event kinds cross; a full
//! channel, a kernel queue overflow or a read error becoming a rescan flag of the root; the
//! watch-limit flag; the count of losses each event carries, so that a write whose close
//! may have been lost is not taken for a file still open), and what each kind of event
//! means for the task ([`classify`]).
//!
//! Must not: block, or look at the filesystem. The callback runs on notify's own thread,
//! which also reads the kernel's queue: a callback that waited would make the kernel drop
//! events, so it only filters and `try_send`s, and anything it cannot pass on becomes a
//! walk of the root instead.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RenameMode};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::{mpsc, Notify};

use super::settle::News;
use crate::scan::walk::Root;

/// What notify's thread tells the task besides events, per root. Set by the callback,
/// taken by the task after a wake-up.
#[derive(Default)]
struct RootFlags {
    /// Events were lost (the kernel's queue overflowed, or our channel was full).
    rescan: AtomicBool,
    /// Adding a watch for a new folder failed at the inotify watch limit.
    limit: AtomicBool,
    /// How many times events were lost, ever. An event carries the count as it was when
    /// it crossed: if the count moved since, a close that followed it may be among the
    /// lost ones.
    losses: AtomicU64,
}

/// The flags of every root, and the wake-up that tells the task to look at them.
pub(super) struct Shared {
    flags: Vec<RootFlags>,
    pub(super) wake: Notify,
}

impl Shared {
    pub(super) fn new(roots: usize) -> Shared {
        Shared {
            flags: (0..roots).map(|_| RootFlags::default()).collect(),
            wake: Notify::new(),
        }
    }

    fn raise(&self, flag: impl Fn(&RootFlags) -> &AtomicBool, root: usize) {
        if let Some(f) = self.flags.get(root) {
            flag(f).store(true, Ordering::SeqCst);
            self.wake.notify_one();
        }
    }

    /// Events of `root` were lost: the root is walked again, and writes seen before count
    /// no more as open files (their close may be what was lost).
    fn lose(&self, root: usize) {
        if let Some(f) = self.flags.get(root) {
            f.losses.fetch_add(1, Ordering::SeqCst);
        }
        self.raise(|f| &f.rescan, root);
    }

    /// How many times events of `root` were lost so far.
    pub(super) fn losses(&self, root: usize) -> u64 {
        self.flags
            .get(root)
            .map_or(0, |f| f.losses.load(Ordering::SeqCst))
    }

    /// Whether events of `root` were lost since the last call (clears the flag).
    pub(super) fn take_rescan(&self, root: usize) -> bool {
        self.flags
            .get(root)
            .is_some_and(|f| f.rescan.swap(false, Ordering::SeqCst))
    }

    /// Whether `root` hit the inotify watch limit since the last call (clears the flag).
    pub(super) fn take_limit(&self, root: usize) -> bool {
        self.flags
            .get(root)
            .is_some_and(|f| f.limit.swap(false, Ordering::SeqCst))
    }
}

/// One event as it crosses from notify's thread.
pub(super) struct RawEvent {
    pub(super) root: usize,
    pub(super) kind: EventKind,
    pub(super) paths: Vec<PathBuf>,
    /// [`Shared::losses`] of its root when it crossed.
    pub(super) losses: u64,
}

impl RawEvent {
    /// The paths the event is news about.
    pub(super) fn changed_paths(&self) -> &[PathBuf] {
        match self.kind {
            // notify reports both ends of a rename it could pair; the new name is the news.
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                self.paths.get(1..).unwrap_or(&[])
            }
            _ => &self.paths,
        }
    }

    /// The event may mean that its path was removed or moved away (for a root: look at
    /// it now rather than at the next check).
    pub(super) fn may_remove(&self) -> bool {
        matches!(
            self.kind,
            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
        )
    }
}

/// What an event says about each of its paths (other than the root itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Change {
    /// A folder appeared: it is walked, since inotify misses files created in it before
    /// its watch was added.
    NewFolder,
    /// The path (re)starts its settle wait.
    News(News),
    /// No news for the server.
    Nothing,
}

/// The meaning of an event kind for the task.
pub(super) fn classify(kind: &EventKind) -> Change {
    match kind {
        EventKind::Create(CreateKind::Folder) => Change::NewFolder,
        EventKind::Create(_)
        | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any | ModifyKind::Other) => {
            Change::News(News::Written)
        }
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Change::News(News::Finished),
        // A rename into place is a new file under its final name (or a folder moved in);
        // the old name is simply no longer seen.
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => Change::Nothing,
        EventKind::Modify(ModifyKind::Name(_)) => Change::News(News::Finished),
        EventKind::Modify(ModifyKind::Metadata(_)) => Change::News(News::Metadata),
        // Deletes are never news for the server; the periodic scan notes them.
        EventKind::Remove(_) | EventKind::Access(_) | EventKind::Any | EventKind::Other => {
            Change::Nothing
        }
    }
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
                shared.lose(root);
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
                losses: shared.losses(root),
            };
            if tx.try_send(raw).is_err() {
                shared.lose(root);
            }
        }
        Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
            shared.raise(|f| &f.limit, root)
        }
        Err(e) => {
            // An error reading events: whatever they were, a walk finds it.
            tracing::debug!(error = %e, "watch error; the root is walked again");
            shared.lose(root);
        }
    }
}

/// A notify watcher on one root (blocking: a recursive watch walks the tree). Symlinks are
/// not followed, as in the scanner.
pub(super) fn start_watcher(
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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use notify::event::{DataChange, MetadataKind, RemoveKind};
    use tokio::sync::oneshot;
    use tokio::time::Instant;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::api::MediaTypes;
    use crate::config::{WatchConfig, WatchMode};
    use crate::db::Db;
    use crate::pipeline::Waker;
    use crate::watch::{WatchError, Watcher};

    #[test]
    fn a_paired_rename_is_news_about_its_new_name_only() {
        let ev = RawEvent {
            root: 0,
            kind: EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            paths: vec![PathBuf::from("/r/.tmp123"), PathBuf::from("/r/IMG_1.jpg")],
            losses: 0,
        };
        assert_eq!(ev.changed_paths(), [PathBuf::from("/r/IMG_1.jpg")]);
        assert_eq!(classify(&ev.kind), Change::News(News::Finished));
        let from = EventKind::Modify(ModifyKind::Name(RenameMode::From));
        assert_eq!(classify(&from), Change::Nothing);
    }

    #[test]
    fn event_kinds_mean_what_settling_expects() {
        let cases = [
            (EventKind::Create(CreateKind::Folder), Change::NewFolder),
            (
                EventKind::Create(CreateKind::File),
                Change::News(News::Written),
            ),
            (
                EventKind::Modify(ModifyKind::Data(DataChange::Content)),
                Change::News(News::Written),
            ),
            (
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                Change::News(News::Finished),
            ),
            (
                EventKind::Modify(ModifyKind::Metadata(MetadataKind::WriteTime)),
                Change::News(News::Metadata),
            ),
            (
                EventKind::Access(AccessKind::Open(AccessMode::Read)),
                Change::Nothing,
            ),
            (EventKind::Remove(RemoveKind::File), Change::Nothing),
        ];
        for (kind, want) in cases {
            assert_eq!(classify(&kind), want, "{kind:?}");
        }
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
        let root = Root::new(&crate::config::RootConfig::at(dir.join("photos"))).unwrap();
        let cfg = WatchConfig {
            mode: WatchMode::Notify,
            settle: Duration::from_millis(100),
            poll_interval: Duration::from_secs(3600),
            poll_settle: Duration::from_secs(30),
            incomplete_limit: Duration::from_secs(3600),
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
}
