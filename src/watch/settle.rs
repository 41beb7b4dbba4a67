//! Settling: a path brought by an event or a walk waits here until it is done: its stat
//! stayed the same across its quiet period, it is not open for writing, and its structure
//! is whole (`crate::complete`); then it is recorded in the catalogue and its job is queued.
//!
//! Owns: the pending paths and their timer (events for one path are coalesced, and every
//! event restarts the wait), the stat batches on the blocking pool, and the verdict on one
//! probe ([`verdict`], the only place where a pending file is declared done). The quiet
//! period is `watch.settle` (the longer `watch.poll_settle` under a polled root, where no
//! close is ever seen), measured on the monotonic clock, shortened to [`AFTER_CLOSE_QUIET`]
//! after a close-after-write or a rename into place, never to zero. A file whose last write
//! had no close after it is open, and one whose structure is cut short is incomplete: either
//! waits, unchanged, up to `watch.incomplete_limit`, then is taken anyway with a warning.
//! The files that wait for such a reason are written to the `waiting` table for `status`,
//! and removed from it when they settle or are dropped.
//!
//! Must not: walk folders, or know how a root is followed (events or polling) or why it is
//! paused: of a root it needs only its device and whether it is polled, and a path of a
//! paused root is dropped. A full set of pending paths is said to the caller ([`Full`]), who
//! has the root walked again later.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Done, Full, Jobs, WatchError, AFTER_CLOSE_QUIET};
use crate::api::MediaTypes;
use crate::config::WatchConfig;
use crate::db::catalogue::{self, FileStat};
use crate::db::waiting::{self, WaitKind, Waiting};
use crate::db::{now_ms, Db};
use crate::scan::walk::Root;
use crate::scan::{structure, Structure};

/// Events for one path closer together than this are one change: a copy writes thousands
/// of times a second, and the first `lstat` waits until they pause.
const COALESCE: Duration = Duration::from_millis(50);
/// Paths waiting to settle, at most. Beyond it events are dropped and their root is walked
/// again once the backlog has drained to half.
const PENDING_MAX: usize = 100_000;
/// Paths looked at in one blocking job.
const STAT_BATCH: usize = 2048;
/// Stat batches in flight at once.
const STAT_JOBS_MAX: usize = 2;

/// What kind of news an event brings about a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum News {
    Written,
    /// Closed after writing, or renamed into place: probably complete.
    Finished,
    /// Attributes only (e.g. `cp -p` setting the mtime after the close).
    Metadata,
}

/// What settling needs to know of a root that is there, as of now.
pub(super) struct RootNow {
    pub(super) root: Arc<Root>,
    pub(super) dev: u64,
    /// Walked every `poll_interval`: no close is ever seen.
    pub(super) polled: bool,
    /// How many times its events were lost so far.
    pub(super) losses: u64,
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
    /// The last write seen had no close after it: a writer may still have the file open.
    /// It holds the losses count its event carried; if events of the root were lost since,
    /// the close may have been among them, and the file no longer counts as open.
    open: Option<u64>,
    /// Its root is polled (as of its last probe): the longer quiet period applies.
    polled: bool,
    /// The kind of wait last written to the `waiting` table for it, if any.
    recorded: Option<WaitKind>,
    /// Its key in the timer, when it waits for one.
    due: Option<(Instant, u64)>,
    /// In a stat batch right now.
    in_flight: bool,
}

#[derive(Clone, Debug)]
pub(super) struct Seen {
    stat: FileStat,
    at: Instant,
    /// Since when the content has been this (`at` of the first look that saw it): the
    /// incomplete limit counts from there.
    since: Instant,
    /// Why this content is not done although unchanged, once known. Kept with the stat so
    /// that an incomplete file is not read again until it changes.
    hold: Option<Hold>,
}

/// Why a file unchanged across its quiet period is not done yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Hold {
    kind: WaitKind,
    reason: String,
}

/// The verdict on one pending path.
#[derive(Clone, Debug)]
pub(super) enum Verdict {
    /// Gone, unreadable, or not a candidate after all: forget it.
    Drop,
    /// A folder the root's walk would enter: walk it.
    Dir,
    /// Looked at; wait for the quiet period and look again.
    Wait(Seen),
    /// Done: unchanged across the quiet period. Recorded in the catalogue (and queued if
    /// that is news).
    Settled(FileStat),
}

/// One path of a stat batch.
pub(super) struct Probe {
    path: PathBuf,
    gen: u64,
    root: Arc<Root>,
    root_dev: u64,
    candidate: bool,
    seen: Option<Seen>,
    quiet: Duration,
    /// The watcher saw a write and no close after it.
    open: bool,
    /// How long an unfinished file waits, unchanged, before it is taken anyway.
    limit: Duration,
    recorded: Option<WaitKind>,
}

/// A finished stat batch: per path, its generation, the verdict, and what the `waiting`
/// table now holds for it.
pub(super) struct Stated {
    results: Vec<(PathBuf, u64, Verdict, Option<WaitKind>)>,
    /// Jobs it queued.
    pub(super) queued: u64,
}

/// The paths waiting to settle.
pub(super) struct Settling {
    db: Db,
    settle: Duration,
    poll_settle: Duration,
    incomplete_limit: Duration,
    pending: HashMap<PathBuf, Pending>,
    /// Pending paths by when they are to be looked at; the `u64` keeps equal instants apart.
    timer: BTreeMap<(Instant, u64), PathBuf>,
    seq: u64,
    /// Stat batches in flight.
    jobs: usize,
}

impl Settling {
    pub(super) fn new(cfg: &WatchConfig, db: Db) -> Settling {
        Settling {
            db,
            settle: cfg.settle,
            poll_settle: cfg.poll_settle,
            incomplete_limit: cfg.incomplete_limit,
            pending: HashMap::new(),
            timer: BTreeMap::new(),
            seq: 0,
            jobs: 0,
        }
    }

    /// Few enough paths wait that a walk of a whole root (which may add many) may start.
    pub(super) fn backlog_low(&self) -> bool {
        self.pending.len() < PENDING_MAX / 2
    }

    fn quiet(&self, finished: bool, polled: bool) -> Duration {
        if polled {
            // Polling sees no close, and a paused writer looks like a finished one: only a
            // longer quiet period tells them apart.
            self.settle.max(self.poll_settle)
        } else if finished {
            AFTER_CLOSE_QUIET.min(self.settle)
        } else {
            self.settle
        }
    }

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

    /// Something happened to `path` under root `root` (`r`): (re)start its settle wait.
    /// The news comes with the losses count its event carried ([`super::bridge`]).
    pub(super) fn note(
        &mut self,
        (root, r): (usize, &Root),
        media: &MediaTypes,
        path: &Path,
        (news, losses): (News, u64),
        now: Instant,
    ) -> Result<(), Full> {
        let candidate = r.is_candidate(path, media);
        if !candidate {
            // A folder moved in arrives as a rename of its path; only its lstat tells.
            let maybe_dir = news == News::Finished && r.recursive && r.may_hold(path);
            if !maybe_dir {
                return Ok(());
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
                p.open = match news {
                    News::Written => Some(losses),
                    News::Finished => None,
                    News::Metadata => p.open,
                };
                p.candidate |= candidate;
            }
            None => {
                if self.pending.len() >= PENDING_MAX {
                    return Err(Full);
                }
                self.pending.insert(
                    path.to_path_buf(),
                    Pending {
                        root,
                        candidate,
                        gen: 0,
                        seen: None,
                        finished: news == News::Finished,
                        open: (news == News::Written).then_some(losses),
                        polled: false,
                        recorded: None,
                        due: None,
                        in_flight: false,
                    },
                );
            }
        }
        self.schedule(path, now + COALESCE);
        Ok(())
    }

    /// Files a walk of root `root` found (stat'ed at `at`) wait too: they are stat'ed
    /// again `settle` later and taken only if nothing changed.
    pub(super) fn found(
        &mut self,
        root: usize,
        found: Vec<(PathBuf, FileStat)>,
        at: Instant,
    ) -> Result<(), Full> {
        for (path, stat) in found {
            if self.pending.contains_key(&path) {
                continue;
            }
            if self.pending.len() >= PENDING_MAX {
                return Err(Full);
            }
            self.pending.insert(
                path.clone(),
                Pending {
                    root,
                    candidate: true,
                    gen: 0,
                    seen: Some(Seen {
                        stat,
                        at,
                        since: at,
                        hold: None,
                    }),
                    finished: false,
                    // A walk cannot see whether a writer has the file open; the quiet
                    // period and the structure decide.
                    open: None,
                    polled: false,
                    recorded: None,
                    due: None,
                    in_flight: false,
                },
            );
            self.schedule(&path, at + self.settle);
        }
        Ok(())
    }

    /// Starts stat batches of the paths whose time has come. `root` gives a root and its
    /// device, or `None` while it is paused (its paths are forgotten).
    pub(super) fn start(
        &mut self,
        now: Instant,
        root: impl Fn(usize) -> Option<RootNow>,
        tasks: &mut Jobs,
    ) {
        while self.jobs < STAT_JOBS_MAX {
            let batch = self.due_probes(now, &root);
            if batch.is_empty() {
                break;
            }
            self.jobs += 1;
            let db = self.db.clone();
            tasks.spawn_blocking(move || stat_batch(&db, batch).map(Done::Stated));
        }
    }

    /// Takes the pending paths whose time has come, up to a batch.
    fn due_probes(&mut self, now: Instant, root: &impl Fn(usize) -> Option<RootNow>) -> Vec<Probe> {
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
            let Some(RootNow {
                root: r,
                dev: root_dev,
                polled,
                losses,
            }) = root(p.root)
            else {
                // Its root is paused. A row in `waiting` stays until the watcher starts
                // again or the file is seen again; the root's pause is what `status` says.
                self.pending.remove(&path);
                continue;
            };
            p.in_flight = true;
            p.polled = polled;
            // Under a polled root no close is ever seen, so nothing there counts as open;
            // nor does a write whose close may have been lost with other events.
            let open = p.open == Some(losses) && !polled;
            let (gen, candidate, seen, finished, recorded) =
                (p.gen, p.candidate, p.seen.clone(), p.finished, p.recorded);
            let quiet = self.quiet(finished, polled);
            batch.push(Probe {
                gen,
                root: r,
                root_dev,
                candidate,
                seen,
                quiet,
                open,
                limit: self.incomplete_limit,
                recorded,
                path,
            });
        }
        for path in busy {
            self.schedule(&path, now + COALESCE);
        }
        batch
    }

    /// When the next stat batch is due (`None`: none waits, or as many as may run are).
    pub(super) fn next_due(&self) -> Option<Instant> {
        if self.jobs < STAT_JOBS_MAX {
            self.timer.keys().next().map(|k| k.0)
        } else {
            None
        }
    }

    /// A stat batch finished. Returns the folders found among its paths, to be walked.
    pub(super) fn on_stated(&mut self, stated: Stated) -> Vec<(usize, PathBuf)> {
        self.jobs -= 1;
        let mut dirs = Vec::new();
        for (path, gen, verdict, recorded) in stated.results {
            let (root, current, finished, polled) = match self.pending.get_mut(&path) {
                Some(p) => {
                    p.in_flight = false;
                    // What the table holds, whichever generation wrote it.
                    p.recorded = recorded;
                    (p.root, p.gen == gen, p.finished, p.polled)
                }
                None => continue,
            };
            if !current {
                // Newer news arrived meanwhile; its own wait is already scheduled.
                continue;
            }
            match verdict {
                Verdict::Drop | Verdict::Settled(_) => self.forget(&path),
                Verdict::Dir => {
                    self.forget(&path);
                    dirs.push((root, path));
                }
                Verdict::Wait(seen) => {
                    let at = seen.at + self.quiet(finished, polled);
                    if let Some(p) = self.pending.get_mut(&path) {
                        p.seen = Some(seen);
                    }
                    self.schedule(&path, at);
                }
            }
        }
        dirs
    }
}

/// Looks at a batch of pending paths and records the ones that settled (blocking).
fn stat_batch(db: &Db, probes: Vec<Probe>) -> Result<Stated, WatchError> {
    let mut results = Vec::with_capacity(probes.len());
    let mut settled = Vec::new();
    // Rows of the `waiting` table to write and to remove: only when the kind of wait
    // changes, so that a file waiting an hour costs one write, not one per look.
    let (mut hold, mut unhold) = (Vec::new(), Vec::new());
    let now = now_ms();
    for p in probes {
        let verdict = verdict(&p);
        let mut recorded = p.recorded;
        match &verdict {
            Verdict::Settled(stat) => {
                settled.push(catalogue::Settled {
                    root: p.root.path_bytes().to_vec(),
                    path: p.path.as_os_str().as_bytes().to_vec(),
                    stat: *stat,
                });
            }
            Verdict::Wait(Seen { hold: Some(h), .. }) if p.recorded != Some(h.kind) => {
                hold.push(Waiting {
                    root: p.root.path_bytes().to_vec(),
                    path: p.path.as_os_str().as_bytes().to_vec(),
                    kind: h.kind,
                    reason: h.reason.clone(),
                    since_ms: now,
                });
                recorded = Some(h.kind);
            }
            // A file that waits for its quiet period again (it was written to) keeps its
            // row: it still is what it was, until it settles.
            Verdict::Wait(_) => {}
            Verdict::Drop | Verdict::Dir => {}
        }
        if recorded.is_some() && !matches!(verdict, Verdict::Wait(_)) {
            unhold.push(p.path.as_os_str().as_bytes().to_vec());
            recorded = None;
        }
        results.push((p.path, p.gen, verdict, recorded));
    }
    if !hold.is_empty() {
        db.call_blocking(|c| waiting::note(c, &hold))?;
    }
    if !unhold.is_empty() {
        let paths: Vec<&[u8]> = unhold.iter().map(Vec::as_slice).collect();
        db.call_blocking(|c| waiting::clear(c, &paths))?;
    }
    let queued = if settled.is_empty() {
        0
    } else {
        let queued = db.call_blocking(|c| catalogue::record_settled(c, &settled, now_ms()))?;
        for &i in &queued {
            let path = Path::new(std::ffi::OsStr::from_bytes(&settled[i].path));
            tracing::debug!(path = %path.display(), "settled; queued");
        }
        queued.len() as u64
    };
    Ok(Stated { results, queued })
}

/// The verdict on one probe: the only place where a pending file is declared done. Any
/// further condition for "done" belongs here, answering [`Verdict::Wait`] while it does not
/// hold (the path is then looked at again after another quiet period).
///
/// Done means: unchanged across the quiet period, and then neither open for writing (the
/// watcher saw a write and no close after it) nor structurally incomplete
/// ([`structure`]; a format it cannot tell relies on the quiet period alone).
/// A file that stays open or incomplete while unchanged for the probe's limit is taken
/// anyway, with a warning: some real files are truncated for good.
fn verdict(p: &Probe) -> Verdict {
    let mut seen = match look(p) {
        Verdict::Wait(seen) => seen,
        other => return other,
    };
    let Some(old) = p
        .seen
        .as_ref()
        .filter(|old| same_content(&old.stat, &seen.stat))
    else {
        return Verdict::Wait(seen);
    };
    seen.since = old.since;
    if seen.at.duration_since(old.at) < p.quiet {
        seen.hold = old.hold.clone();
        return Verdict::Wait(seen);
    }
    let hold = if p.open {
        Some(Hold {
            kind: WaitKind::Open,
            reason: "still open for writing: a write was seen and no close after it".into(),
        })
    } else {
        match &old.hold {
            // Known incomplete for this very content: no need to read it again.
            Some(h) if h.kind == WaitKind::Incomplete => Some(h.clone()),
            _ => match structure(&p.path, seen.stat.size) {
                Structure::Done => None,
                Structure::Incomplete(reason) => Some(Hold {
                    kind: WaitKind::Incomplete,
                    reason,
                }),
                // It shrank between the lstat and the read: look again.
                Structure::Changed => return Verdict::Wait(seen),
            },
        }
    };
    let Some(hold) = hold else {
        return Verdict::Settled(seen.stat);
    };
    let waited = seen.at.duration_since(seen.since);
    if waited >= p.limit {
        tracing::warn!(
            path = %p.path.display(),
            waited = ?waited,
            "taking a file that still looks unfinished after watch.incomplete_limit: {}",
            hold.reason
        );
        return Verdict::Settled(seen.stat);
    }
    seen.hold = Some(hold);
    Verdict::Wait(seen)
}

/// One `lstat` of a pending path, by the scanner's rules: [`Verdict::Wait`] for a file to
/// look at again, never [`Verdict::Settled`].
fn look(p: &Probe) -> Verdict {
    let at = Instant::now();
    let Ok(meta) = std::fs::symlink_metadata(&p.path) else {
        // Gone (a temporary name renamed away, a delete) or unreadable: the periodic scan
        // reports what it cannot read.
        return Verdict::Drop;
    };
    if meta.is_dir() {
        // The walk of the folder reads the ignore files and `.nomedia` on its way down.
        return if meta.dev() == p.root_dev && p.root.recursive && p.root.may_hold(&p.path) {
            Verdict::Dir
        } else {
            Verdict::Drop
        };
    }
    if !p.candidate || !meta.is_file() || meta.len() == 0 || meta.dev() != p.root_dev {
        return Verdict::Drop;
    }
    // What the path alone said was asked when the event came; the ignore files and the
    // `.nomedia` of its folders are read here, on the blocking pool, as they are now.
    if p.root.filter.skipped_on_disk(&p.path, false).is_some() {
        return Verdict::Drop;
    }
    Verdict::Wait(Seen {
        stat: FileStat::from_metadata(&meta),
        at,
        since: at,
        hold: None,
    })
}

/// The same file with the same content as far as `lstat` can tell (the ctime also moves on
/// `chmod` or a rename, which change no byte).
fn same_content(a: &FileStat, b: &FileStat) -> bool {
    a.dev == b.dev && a.ino == b.ino && a.size == b.size && a.mtime_ns == b.mtime_ns
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(root: &Arc<Root>, path: PathBuf, seen: Option<Seen>, quiet: Duration) -> Probe {
        let root_dev = std::fs::metadata(&root.path).unwrap().dev();
        Probe {
            path,
            gen: 0,
            root: root.clone(),
            root_dev,
            candidate: true,
            seen,
            quiet,
            open: false,
            limit: Duration::from_secs(3600),
            recorded: None,
        }
    }

    #[test]
    fn a_file_settles_only_unchanged_across_its_quiet_period_and_is_queued_once() {
        let dir = tempfile::tempdir().unwrap();
        let photos = dir.path().join("photos");
        std::fs::create_dir_all(photos.join("sub")).unwrap();
        let db = Db::open(&dir.path().join("state.sqlite3")).unwrap();
        let root = Arc::new(Root::new(&crate::config::RootConfig::at(photos.clone())).unwrap());
        let file = photos.join("IMG_1.jpg");
        std::fs::write(&file, b"first").unwrap();
        let hour = Duration::from_secs(3600);

        let Verdict::Wait(first) = verdict(&probe(&root, file.clone(), None, hour)) else {
            panic!("a first look waits");
        };
        // Unchanged, but not for the whole quiet period yet.
        let v = verdict(&probe(&root, file.clone(), Some(first.clone()), hour));
        assert!(matches!(v, Verdict::Wait(_)), "{v:?}");
        std::fs::write(&file, b"second, longer").unwrap();
        let v = verdict(&probe(&root, file.clone(), Some(first), Duration::ZERO));
        assert!(matches!(v, Verdict::Wait(_)), "a changed file waits: {v:?}");
        let Verdict::Wait(again) = verdict(&probe(&root, file.clone(), None, hour)) else {
            panic!("a first look waits");
        };
        let v = verdict(&probe(
            &root,
            file.clone(),
            Some(again.clone()),
            Duration::ZERO,
        ));
        assert!(matches!(v, Verdict::Settled(s) if s == again.stat), "{v:?}");
        let v = verdict(&probe(&root, photos.join("sub"), None, hour));
        assert!(matches!(v, Verdict::Dir), "{v:?}");
        let v = verdict(&probe(&root, photos.join("gone.jpg"), None, hour));
        assert!(matches!(v, Verdict::Drop), "{v:?}");

        // Recorded and queued once: the second batch finds the catalogue current.
        let settled = || {
            vec![probe(
                &root,
                file.clone(),
                Some(again.clone()),
                Duration::ZERO,
            )]
        };
        assert_eq!(stat_batch(&db, settled()).unwrap().queued, 1);
        assert_eq!(stat_batch(&db, settled()).unwrap().queued, 0);
    }

    fn photos_root(dir: &Path) -> Arc<Root> {
        let photos = dir.join("photos");
        std::fs::create_dir_all(&photos).unwrap();
        Arc::new(Root::new(&crate::config::RootConfig::at(photos)).unwrap())
    }

    /// Looks twice, the quiet period (zero) apart: the verdict of the second look.
    fn settle_twice(p: impl Fn(Option<Seen>) -> Probe) -> Verdict {
        let Verdict::Wait(first) = verdict(&p(None)) else {
            panic!("a first look waits");
        };
        verdict(&p(Some(first)))
    }

    #[test]
    fn an_unchanged_file_still_open_or_cut_short_waits_until_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.sqlite3")).unwrap();
        let root = photos_root(dir.path());
        let jpeg = root.path.join("IMG_1.jpg");
        // A JPEG without its end-of-image marker: a copy that paused.
        std::fs::write(
            &jpeg,
            [0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0, 0, 0xFF, 0xDA],
        )
        .unwrap();
        let cut = |limit| {
            let jpeg = jpeg.clone();
            let root = root.clone();
            move |seen| Probe {
                limit,
                ..probe(&root, jpeg.clone(), seen, Duration::ZERO)
            }
        };
        let hour = Duration::from_secs(3600);
        let v = settle_twice(cut(hour));
        let Verdict::Wait(Seen { hold: Some(h), .. }) = &v else {
            panic!("a cut-short file waits: {v:?}");
        };
        assert_eq!(h.kind, WaitKind::Incomplete);
        assert!(h.reason.contains("JPEG"), "{}", h.reason);
        let v = settle_twice(cut(Duration::ZERO));
        assert!(matches!(v, Verdict::Settled(_)), "after the limit: {v:?}");

        // Written, no close seen: waits although whole and unchanged.
        let whole = root.path.join("IMG_2.jpg");
        std::fs::write(&whole, b"no structure to tell").unwrap();
        let open = |limit| {
            let (whole, root) = (whole.clone(), root.clone());
            move |seen| Probe {
                open: true,
                limit,
                ..probe(&root, whole.clone(), seen, Duration::ZERO)
            }
        };
        let v = settle_twice(open(hour));
        assert!(
            matches!(&v, Verdict::Wait(Seen { hold: Some(h), .. }) if h.kind == WaitKind::Open),
            "{v:?}"
        );
        assert!(matches!(
            settle_twice(open(Duration::ZERO)),
            Verdict::Settled(_)
        ));

        // The batch writes the waiting file for `status`, once, and clears it when it goes.
        let Verdict::Wait(first) = verdict(&cut(hour)(None)) else {
            panic!("a first look waits");
        };
        let stated = stat_batch(&db, vec![cut(hour)(Some(first.clone()))]).unwrap();
        assert_eq!(stated.results[0].3, Some(WaitKind::Incomplete));
        let rows = || db.call_blocking(|c| waiting::list(c, 10)).unwrap();
        assert_eq!(rows().0, 1);
        let stated = stat_batch(
            &db,
            vec![Probe {
                recorded: Some(WaitKind::Incomplete),
                ..cut(Duration::ZERO)(Some(first))
            }],
        )
        .unwrap();
        assert_eq!((stated.queued, stated.results[0].3), (1, None));
        assert_eq!(rows().0, 0, "taken: no longer waiting");
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
