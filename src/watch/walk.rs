//! Walks: of a folder that appeared (at once, and again [`NEW_DIR_SECOND_LOOK`] later), and
//! of a whole root when [`Roots`] says one is due (events were lost, the root came back, it
//! is polled).
//!
//! Owns: the queue of folders waiting for a walk, their second looks, the walk jobs on the
//! blocking pool, and which of the files found are news (not in the catalogue with that
//! stat). inotify misses files created in a folder before its watch was added, so a new
//! folder is always walked.
//!
//! Must not: queue a job or write to the catalogue (what a walk finds goes through the
//! settle check like any event), or decide when a whole root is due.

use std::collections::VecDeque;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::roots::Roots;
use super::{Done, Full, Jobs};
use crate::api::MediaTypes;
use crate::db::catalogue::{self, FileStat};
use crate::db::Db;
use crate::scan::walk::{scan_subtree, Root, ScanError};

/// A new folder is walked at once and again this much later: files created while notify
/// was still adding the folder's watch raise no event at all.
const NEW_DIR_SECOND_LOOK: Duration = Duration::from_secs(1);
/// Folders waiting for a walk, at most; beyond it the whole root is walked instead.
const DIR_QUEUE_MAX: usize = 1024;
/// Walks in flight at once.
const WALK_JOBS_MAX: usize = 2;

/// A folder to walk.
#[derive(Clone, Debug)]
pub(super) struct DirWalk {
    root: usize,
    dir: PathBuf,
    /// This is the second look at a new folder.
    second: bool,
}

/// A finished walk.
pub(super) struct Walked {
    pub(super) root: usize,
    /// `None`: the whole root.
    pub(super) dir: Option<DirWalk>,
    /// The files that are news, with the stat the walk saw.
    pub(super) found: Vec<(PathBuf, FileStat)>,
    /// When the walk ended.
    pub(super) at: Instant,
}

/// The folders waiting for a walk, and the walks in flight.
pub(super) struct Walks {
    db: Db,
    media: MediaTypes,
    queue: VecDeque<DirWalk>,
    second_looks: VecDeque<(Instant, DirWalk)>,
    jobs: usize,
}

impl Walks {
    pub(super) fn new(db: Db, media: MediaTypes) -> Walks {
        Walks {
            db,
            media,
            queue: VecDeque::new(),
            second_looks: VecDeque::new(),
            jobs: 0,
        }
    }

    /// A folder appeared under root `root` (`r`): walk it now (and once more a little
    /// later).
    pub(super) fn note_dir(
        &mut self,
        root: usize,
        r: &Root,
        dir: PathBuf,
        second: bool,
    ) -> Result<(), Full> {
        if !r.recursive || !r.may_hold(&dir) {
            return Ok(());
        }
        // A walk of a folder already waiting covers its subfolders.
        if self
            .queue
            .iter()
            .any(|d| d.root == root && d.second == second && dir.starts_with(&d.dir))
        {
            return Ok(());
        }
        if self.queue.len() >= DIR_QUEUE_MAX {
            return Err(Full);
        }
        self.queue.push_back(DirWalk { root, dir, second });
        Ok(())
    }

    /// Starts the walks that are due: whole roots first, then waiting folders.
    pub(super) fn start(
        &mut self,
        now: Instant,
        roots: &mut Roots,
        backlog_low: bool,
        tasks: &mut Jobs,
        cancel: &CancellationToken,
    ) {
        while self.jobs < WALK_JOBS_MAX {
            if let Some(i) = (0..roots.len()).find(|&i| {
                roots
                    .walk_due(i, now, backlog_low)
                    .is_some_and(|t| t <= now)
            }) {
                roots.begin_walk(i, now);
                self.spawn(i, roots.root(i).clone(), None, tasks, cancel);
                continue;
            }
            while let Some((t, _)) = self.second_looks.front() {
                if *t > now {
                    break;
                }
                if let Some((_, d)) = self.second_looks.pop_front() {
                    let root = d.root;
                    if self.note_dir(root, roots.root(root), d.dir, true).is_err() {
                        roots.want_rescan(root);
                    }
                }
            }
            let Some(d) = self.queue.pop_front() else {
                break;
            };
            if roots.dev(d.root).is_none() {
                continue;
            }
            let root = roots.root(d.root).clone();
            self.spawn(d.root, root, Some(d), tasks, cancel);
        }
    }

    /// A walk of root `i` (all of it, or the folder `dir`) on the blocking pool.
    fn spawn(
        &mut self,
        i: usize,
        root: Arc<Root>,
        dir: Option<DirWalk>,
        tasks: &mut Jobs,
        cancel: &CancellationToken,
    ) {
        self.jobs += 1;
        let (db, media, cancel) = (self.db.clone(), self.media.clone(), cancel.clone());
        tasks.spawn_blocking(move || {
            let start = dir
                .as_ref()
                .map_or(root.path.as_path(), |d| d.dir.as_path());
            let walked = match scan_subtree(&root, start, &media, &cancel) {
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
            Ok(Done::Walked(Walked {
                root: i,
                dir,
                found,
                at,
            }))
        });
    }

    /// A walk finished: a new folder gets its second look.
    pub(super) fn finished(&mut self, dir: Option<DirWalk>, now: Instant) {
        self.jobs -= 1;
        if let Some(d) = dir {
            if !d.second {
                self.second_looks
                    .push_back((now + NEW_DIR_SECOND_LOOK, DirWalk { second: true, ..d }));
            }
        }
    }

    /// When the next walk is due (`None`: none is, or as many as may run are).
    pub(super) fn next_due(
        &self,
        now: Instant,
        roots: &Roots,
        backlog_low: bool,
    ) -> Option<Instant> {
        if self.jobs >= WALK_JOBS_MAX {
            return None;
        }
        let whole_roots = (0..roots.len()).filter_map(|i| roots.walk_due(i, now, backlog_low));
        let second_look = self.second_looks.front().map(|(t, _)| *t);
        let waiting = (!self.queue.is_empty()).then_some(now);
        whole_roots.chain(second_look).chain(waiting).min()
    }
}
