//! A pass over the roots: each root walked ([`walk`]), what the walk found compared with the
//! catalogue, and new and changed files queued.
//!
//! Owns: the comparison with the catalogue by `(dev, ino, size, mtime_ns, ctime_ns)`, the
//! structural check of a new or changed file before it is queued ([`structure`]; a scan
//! cannot see closes, so structure and a recent mtime are what tell it a file is
//! unfinished), what a complete walk did not see (gone locally), and the pass over every
//! root with each root's state for `status` ([`Scanner`]). An unchanged file costs one
//! `lstat`. Which files are candidates (regular files only, symlinks never followed, one
//! filesystem, no hidden or temporary names unless configured, supported media types, the
//! root's include/exclude globs, never a 0-byte file) is the walk's ([`walk`]).
//!
//! Must not: hash, talk to the server, or treat a missing or empty root as "everything was
//! deleted": such a root is reported as paused and its catalogue is left alone.
//!
//! Blocking: [`scan_root`] runs on the blocking pool; [`Scanner`], the pass over every root
//! that `scan` and the daemon run, puts it there.

use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::complete::Completeness;
use crate::config::{ScanConfig, WatchConfig};
use crate::db::catalogue::{self, FileStat, KnownFile};
use crate::db::meta::{self, RootState, SkippedEntries};
use crate::db::sidecars;
use crate::db::waiting::{self, WaitKind, Waiting};
use crate::db::{now_ms, Db, DbError};
use crate::model::MediaTypes;

pub mod walk;

use walk::{Root, ScanError, Tally};

/// Catalogue writes are committed this many files at a time.
const WRITE_BATCH: usize = 1000;
/// Unreadable entries logged one by one per root and pass; the rest are counted.
const ERRORS_LOGGED: usize = 5;

/// What a scan of one root found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RootScan {
    /// Candidate files seen.
    pub files: u64,
    /// New or changed files queued.
    pub queued: u64,
    /// Files the catalogue knew that are gone now.
    pub missing: u64,
    /// New or changed files left alone because they changed within the settle period:
    /// probably still being written. The watcher or the next scan takes them.
    pub fresh: u64,
    /// New or changed files left alone because they look unfinished: cut short
    /// ([`structure`]), or open for writing as the watcher saw. Taken once whole, or after
    /// `watch.incomplete_limit`.
    pub waiting: Vec<WaitingFile>,
    /// Entries that could not be read (permission denied, vanished mid-walk...).
    pub errors: Vec<String>,
    /// Symlinks, FIFOs, sockets and device nodes passed over (never followed or read).
    pub skipped: SkippedEntries,
    /// Files and folders skipped as junk (`skip_junk`, `junk_extra`).
    pub junk: u64,
    /// Files and folders skipped by `exclude`, an `.immishignore` or a `.nomedia`.
    pub ignored: u64,
    /// The root's `exclude` patterns that matched nothing in this scan.
    pub unmatched: Vec<String>,
    /// XMP sidecars created or edited after their photo was uploaded (reported once each).
    pub late_sidecars: u64,
}

/// A file a scan left alone for looking unfinished, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitingFile {
    pub path: PathBuf,
    pub reason: String,
}

/// The result of scanning one root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootOutcome {
    Scanned(RootScan),
    /// Missing, not a directory, unreadable or empty: probably an unmounted disk. Nothing
    /// in the catalogue is touched.
    Paused {
        reason: String,
    },
}

/// Why a [`Scanner`] pass stopped (a cancel is not an error: the pass ends early).
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Db(#[from] DbError),
    /// A walk's task on the blocking pool panicked or was dropped.
    #[error("the scan task failed: {0}")]
    Task(String),
}

/// The pass over every root that `scan` runs once and the daemon every `scan.interval`:
/// each root walked on the blocking pool ([`scan_root`]), its state recorded for `status`,
/// one log line per root. Cheap to clone.
#[derive(Clone)]
pub struct Scanner {
    db: Db,
    roots: Vec<Root>,
    media: MediaTypes,
    /// `watch.settle`: a scan leaves a file that changed more recently for later, as the
    /// watcher does.
    settle: Duration,
    /// `scan.interval`.
    interval: Duration,
    /// `watch.incomplete_limit`: a file that stays cut short this long is taken anyway.
    incomplete_limit: Duration,
    /// `exclude` patterns already reported as matching nothing, per root: each is warned
    /// about once per process, not at every rescan.
    warned: Arc<Mutex<HashSet<(PathBuf, String)>>>,
}

impl Scanner {
    /// The scanner of `roots`, with the settings of its config sections.
    pub fn new(
        db: Db,
        roots: Vec<Root>,
        media: MediaTypes,
        scan: &ScanConfig,
        watch: &WatchConfig,
    ) -> Scanner {
        Scanner {
            db,
            roots,
            media,
            settle: watch.settle,
            interval: scan.interval,
            incomplete_limit: watch.incomplete_limit,
            warned: Arc::default(),
        }
    }

    /// Warns once about each `exclude` pattern of `root` that matched nothing in a scan
    /// (a pattern that never matches is most likely a mistake, e.g. a path with a typo).
    fn warn_unmatched(&self, root: &Path, unmatched: &[String]) {
        let Ok(mut warned) = self.warned.lock() else {
            return;
        };
        for pattern in unmatched {
            if warned.insert((root.to_path_buf(), pattern.clone())) {
                tracing::warn!(
                    root = %root.display(),
                    "exclude pattern {pattern:?} matched nothing in this scan (it is a \
                     gitignore line relative to the root: a bare name matches at any depth, \
                     a slash anchors it)"
                );
            }
        }
    }

    /// How long a new or changed file must have been left alone to be taken.
    pub fn settle(&self) -> Duration {
        self.settle
    }

    /// The same scanner over only those of its roots that are in `roots`.
    pub fn only(&self, roots: &[PathBuf]) -> Scanner {
        Scanner {
            roots: self
                .roots
                .iter()
                .filter(|r| roots.contains(&r.path))
                .cloned()
                .collect(),
            ..self.clone()
        }
    }

    /// The period of the daemon's full rescans.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Scans every root once and records each root's state. `scanned` is called after each
    /// root (the engine's wake-up: its files are queued). A cancel ends the pass early with
    /// the roots done so far.
    pub async fn scan_all(
        &self,
        scanned: impl Fn(),
        cancel: &CancellationToken,
    ) -> Result<Vec<(PathBuf, RootOutcome)>, PassError> {
        let mut out = Vec::new();
        for root in &self.roots {
            let (db, root2, media, cancel2) = (
                self.db.clone(),
                root.clone(),
                self.media.clone(),
                cancel.clone(),
            );
            let wait = Unfinished {
                settle: self.settle,
                incomplete_limit: self.incomplete_limit,
            };
            let res =
                tokio::task::spawn_blocking(move || scan_root(&db, &root2, &media, wait, &cancel2))
                    .await
                    .map_err(|e| PassError::Task(e.to_string()))?;
            let outcome = match res {
                Ok(o) => o,
                Err(ScanError::Cancelled) => break,
                Err(ScanError::Db(e)) => return Err(e.into()),
            };
            let state = match &outcome {
                RootOutcome::Scanned(s) => {
                    for err in s.errors.iter().take(ERRORS_LOGGED) {
                        tracing::warn!("scan: {err}");
                    }
                    if s.errors.len() > ERRORS_LOGGED {
                        tracing::warn!(
                            "scan: {} more unreadable entries",
                            s.errors.len() - ERRORS_LOGGED
                        );
                    }
                    tracing::info!(
                        root = %root.path.display(),
                        files = s.files,
                        queued = s.queued,
                        gone = s.missing,
                        still_changing = s.fresh,
                        unfinished = s.waiting.len(),
                        skipped = %s.skipped,
                        junk = s.junk,
                        ignored = s.ignored,
                        "scanned"
                    );
                    self.warn_unmatched(&root.path, &s.unmatched);
                    RootState::Ok {
                        at_ms: Some(now_ms()),
                    }
                }
                RootOutcome::Paused { reason } => {
                    tracing::warn!(root = %root.path.display(), "root paused: {reason}; its files are left as they are");
                    RootState::Paused {
                        reason: reason.clone(),
                    }
                }
            };
            let path = root.path.clone();
            // What was passed over is recorded with the root's state, for `status`; a
            // paused root keeps the count of its last walk.
            let skipped = match &outcome {
                RootOutcome::Scanned(s) => Some(s.skipped),
                RootOutcome::Paused { .. } => None,
            };
            self.db
                .call(move |c| {
                    meta::set_root_state(c, &path, &state)?;
                    match skipped {
                        Some(k) => meta::set_root_skipped(c, &path, &k),
                        None => Ok(()),
                    }
                })
                .await?;
            scanned();
            out.push((root.path.clone(), outcome));
        }
        // The walks read every root's catalogue whole: what that left in SQLite's page cache
        // and in the heap goes back, or the daemon would hold it until the next pass.
        self.db.shrink().await?;
        Ok(out)
    }
}

/// Whether a file modified at `mtime_ns` may still be being written, `settle` after that.
/// A modification time in the future (a camera with a wrong clock) does not count as fresh.
pub fn is_fresh(mtime_ns: i64, settle: Duration) -> bool {
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let age = now_ns - mtime_ns;
    (0..settle.as_nanos() as i64).contains(&age)
}

/// What the structure of a file says, for the verdict and for scans.
pub enum Structure {
    /// Whole, or a format whose structure cannot tell (the quiet period decides).
    Done,
    /// Cut short: what is missing, for people.
    Incomplete(String),
    /// Shorter than the `len` it was seen with: it changed, look again.
    Changed,
}

/// Checks the first `len` bytes of `path` (blocking: it reads box headers, or for a JPEG
/// the entropy-coded data once). A file that cannot be read is left to the hash step, which
/// reports it.
pub fn structure(path: &Path, len: u64) -> Structure {
    match crate::complete::check_file(path, len) {
        Ok(Completeness::Incomplete(why)) => Structure::Incomplete(why.to_string()),
        Ok(Completeness::Complete | Completeness::Unknown(_)) => Structure::Done,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Structure::Changed,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Structure::Changed,
        Err(_) => Structure::Done,
    }
}

/// How a scan tells a file that may still be being written.
#[derive(Clone, Copy, Debug)]
pub struct Unfinished {
    /// `watch.settle`: a file modified more recently is left for later.
    pub settle: Duration,
    /// `watch.incomplete_limit`: a file cut short and not modified for this long is taken
    /// anyway (it was truncated for good).
    pub incomplete_limit: Duration,
}

/// Walks one root and records new and changed files as queued jobs.
///
/// A new or changed file modified less than `settle` ago is left for later (counted in
/// [`RootScan::fresh`]): the scan has no quiet period of its own to prove that a copy into
/// the root has finished. One that is structurally cut short ([`structure`]), or that the
/// watcher has waiting as still open for writing, is left too ([`RootScan::waiting`], and
/// the `waiting` table for `status`), until it has not changed for `incomplete_limit`.
///
/// The root's catalogue is read on a second thread while the walk begins: the files the
/// walk finds meanwhile wait in a list, compared once the catalogue is there. The two took
/// turns before, and the read was a fifth of an unchanged re-scan (docs/BENCHMARKS.md,
/// "Session 8").
pub fn scan_root(
    db: &Db,
    root: &Root,
    media: &MediaTypes,
    wait: Unfinished,
    cancel: &CancellationToken,
) -> Result<RootOutcome, ScanError> {
    let root_meta = match root.probe() {
        Ok(m) => m,
        Err(reason) => return Ok(RootOutcome::Paused { reason }),
    };
    let root_dev = root_meta.dev();

    let root_bytes = root.path_bytes().to_vec();
    // The watcher sees closes, a scan does not: what it has waiting as open stays its own.
    let open = db.call_blocking(|c| waiting::open_paths(c, &root_bytes))?;
    let mut report = RootScan::default();
    let mut skipped = SkippedEntries::default();
    let mut tally = Tally {
        matched: vec![false; root.filter.exclude().len()],
        ..Tally::default()
    };
    let mut judge = Judge {
        db,
        root: &root_bytes,
        wait,
        open: &open,
        known: HashMap::new(),
        files: 0,
        fresh: 0,
        queued: 0,
        waiting: Vec::new(),
        unfinished: Vec::new(),
        batch: Vec::new(),
    };
    std::thread::scope(|scope| -> Result<(), ScanError> {
        let mut loading =
            Some(scope.spawn(|| db.call_blocking(|c| catalogue::load_root(c, &root_bytes))));
        // Found while the catalogue was being read.
        let mut early: Vec<(Vec<u8>, FileStat)> = Vec::new();
        let walked = walk::walk(
            root,
            (&root.path, None),
            root_dev,
            media,
            cancel,
            (&mut report.errors, &mut skipped),
            &mut tally,
            |path, stat| {
                let path = path.into_os_string().into_vec();
                if loading
                    .as_ref()
                    .is_some_and(|l| !l.is_finished() || read_after_walk())
                {
                    early.push((path, stat));
                    return Ok(());
                }
                if let Some(l) = loading.take() {
                    judge.known = joined(l)?;
                    for (p, s) in std::mem::take(&mut early) {
                        judge.see(p, s)?;
                    }
                }
                judge.see(path, stat)
            },
        );
        // The walk ended (or failed) before the read: wait for it.
        if let Some(l) = loading.take() {
            judge.known = joined(l)?;
        }
        walked?;
        for (p, s) in early {
            judge.see(p, s)?;
        }
        Ok(())
    })?;
    let root_bytes = &root_bytes;
    report.files = judge.files;
    report.fresh = judge.fresh;
    report.waiting = std::mem::take(&mut judge.waiting);
    let unfinished = std::mem::take(&mut judge.unfinished);
    let known = std::mem::take(&mut judge.known);
    report.queued = judge.queued + flush(db, root_bytes, &mut judge.batch)?;
    db.call_blocking(|c| waiting::replace_incomplete(c, root_bytes, &unfinished))?;
    report.skipped = skipped;
    let seen = std::mem::take(&mut tally.sidecars);
    for late in db.call_blocking(move |c| sidecars::late(c, &seen))? {
        report.late_sidecars += 1;
        sidecars::tell(&late);
    }
    report.junk = tally.junk;
    report.ignored = tally.ignored;
    report.unmatched = tally
        .matched
        .iter()
        .enumerate()
        .filter(|(_, m)| !**m)
        .map(|(i, _)| root.filter.exclude().pattern(i).to_string())
        .collect();

    // What the catalogue knew and the walk did not see is gone locally. Only a complete
    // walk may say so; an unreadable subdirectory hides its files, so skip the marking then.
    if report.errors.is_empty() {
        let gone: Vec<i64> = known
            .values()
            .filter(|k| !k.missing)
            .map(|k| k.id)
            .collect();
        report.missing = gone.len() as u64;
        if !gone.is_empty() {
            db.call_blocking(move |c| catalogue::record_missing(c, &gone, now_ms()))?;
        }
    }
    Ok(RootOutcome::Scanned(report))
}

#[cfg(test)]
thread_local! {
    /// Tests: this thread's walks take every file as found before the catalogue was read.
    static READ_AFTER_WALK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn read_after_walk() -> bool {
    #[cfg(test)]
    return READ_AFTER_WALK.with(|f| f.get());
    #[cfg(not(test))]
    false
}

/// The catalogue a scan's second thread read ([`scan_root`]); a panic there is the scan's.
fn joined(
    l: std::thread::ScopedJoinHandle<'_, Result<HashMap<Vec<u8>, KnownFile>, DbError>>,
) -> Result<HashMap<Vec<u8>, KnownFile>, ScanError> {
    match l.join() {
        Ok(known) => Ok(known?),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// A walk's verdict on each candidate file, against the root's catalogue ([`scan_root`]).
struct Judge<'a> {
    db: &'a Db,
    root: &'a [u8],
    wait: Unfinished,
    /// Paths the watcher has waiting as still open for writing.
    open: &'a HashSet<Vec<u8>>,
    /// The catalogue of the root; what is left in it after the walk was not seen.
    known: HashMap<Vec<u8>, KnownFile>,
    files: u64,
    fresh: u64,
    queued: u64,
    waiting: Vec<WaitingFile>,
    unfinished: Vec<Waiting>,
    /// New or changed files to record, written [`WRITE_BATCH`] at a time.
    batch: Vec<(Vec<u8>, FileStat)>,
}

impl Judge<'_> {
    fn see(&mut self, path_bytes: Vec<u8>, stat: FileStat) -> Result<(), ScanError> {
        self.files += 1;
        match self.known.remove(&path_bytes) {
            Some(k) if k.stat == stat && !k.missing => {}
            _ if is_fresh(stat.mtime_ns, self.wait.settle) => self.fresh += 1,
            _ if self.open.contains(&path_bytes) => {
                let path = PathBuf::from(std::ffi::OsString::from_vec(path_bytes));
                self.waiting.push(WaitingFile {
                    path,
                    reason: "still open for writing, as the watcher saw".into(),
                });
            }
            _ => match structure(
                Path::new(std::ffi::OsStr::from_bytes(&path_bytes)),
                stat.size,
            ) {
                Structure::Done => self.batch.push((path_bytes, stat)),
                Structure::Changed => self.fresh += 1,
                Structure::Incomplete(reason) => {
                    let path = PathBuf::from(std::ffi::OsString::from_vec(path_bytes));
                    if is_fresh(stat.mtime_ns, self.wait.incomplete_limit) {
                        self.unfinished.push(Waiting {
                            root: self.root.to_vec(),
                            path: path.as_os_str().as_bytes().to_vec(),
                            kind: WaitKind::Incomplete,
                            reason: reason.clone(),
                            since_ms: now_ms(),
                        });
                        self.waiting.push(WaitingFile { path, reason });
                    } else {
                        tracing::warn!(
                            path = %path.display(),
                            "taking a file that still looks unfinished after \
                             watch.incomplete_limit: {reason}"
                        );
                        self.batch.push((path.into_os_string().into_vec(), stat));
                    }
                }
            },
        }
        if self.batch.len() >= WRITE_BATCH {
            self.queued += flush(self.db, self.root, &mut self.batch)?;
        }
        Ok(())
    }
}

/// Writes a batch of new or changed files and returns how many were queued. Each is
/// compared again as it is written ([`catalogue::record_scan_batch`]): the watcher may have
/// recorded the same change since this scan loaded its snapshot, and a change is queued once.
fn flush(db: &Db, root: &[u8], batch: &mut Vec<(Vec<u8>, FileStat)>) -> Result<u64, DbError> {
    if batch.is_empty() {
        return Ok(0);
    }
    let items = std::mem::take(batch);
    db.call_blocking(|c| catalogue::record_scan_batch(c, root, &items, now_ms()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RootConfig;

    #[test]
    fn only_a_recent_past_mtime_is_fresh() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        let s = 1_000_000_000i64;
        let settle = Duration::from_secs(3);
        assert!(is_fresh(now - s, settle), "written a second ago");
        assert!(!is_fresh(now - 10 * s, settle), "settled");
        assert!(
            !is_fresh(now + 86_400 * s, settle),
            "a wrong clock in the future is not fresh"
        );
        assert!(
            !is_fresh(now, Duration::ZERO),
            "settle 0 turns the check off"
        );
    }

    fn cache_used(db: &Db) -> i64 {
        db.call_blocking(|c| Ok(crate::db::cache_used(c))).unwrap()
    }

    /// `<dir>/photos` with `folders` folders of `files` photos each, photo `i` of a folder
    /// holding `body(i)`.
    fn photo_tree(dir: &Path, folders: u32, files: u32, body: impl Fn(u32) -> Vec<u8>) -> PathBuf {
        let photos = dir.join("photos");
        for f in 0..folders {
            let d = photos.join(format!("{f:02}"));
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..files {
                std::fs::write(d.join(format!("IMG_{i:04}.jpg")), body(i)).unwrap();
            }
        }
        photos
    }

    /// A pass reads each root's catalogue whole through SQLite's page cache (16 MB, full at
    /// 100,000 files); an idle daemon held it until the next pass, an hour later. After the
    /// pass it is given back (docs/BENCHMARKS.md, "Session 8").
    #[tokio::test]
    async fn a_pass_gives_the_page_cache_back() {
        let dir = tempfile::tempdir().unwrap();
        let photos = photo_tree(dir.path(), 20, 100, |_| b"bench".to_vec());
        let db = Db::open(&dir.path().join("state.sqlite3")).unwrap();
        let root = Root::new(&RootConfig::at(&photos)).unwrap();
        let watch = WatchConfig {
            mode: crate::config::WatchMode::Off,
            settle: Duration::ZERO,
            poll_interval: Duration::from_secs(3600),
            poll_settle: Duration::from_secs(30),
            incomplete_limit: Duration::from_secs(3600),
        };
        let scan = ScanConfig {
            interval: Duration::from_secs(3600),
        };
        let scanner = Scanner::new(db.clone(), vec![root], MediaTypes::builtin(), &scan, &watch);
        let cancel = CancellationToken::new();
        // What a plain read of the whole catalogue leaves in the cache, for comparison.
        let full = |db: &Db| {
            db.call_blocking(|c| {
                c.query_row("SELECT SUM(length(path) + size) FROM files", [], |r| {
                    r.get::<_, i64>(0)
                })
            })
            .unwrap();
            cache_used(db)
        };
        for pass in ["first", "unchanged"] {
            let out = scanner.scan_all(|| {}, &cancel).await.unwrap();
            let RootOutcome::Scanned(s) = &out[0].1 else {
                panic!("{pass} pass: {out:?}");
            };
            assert_eq!(s.files, 2000, "{pass} pass");
            let left = cache_used(&db);
            let full = full(&db);
            assert!(
                full > 100_000,
                "a read of the catalogue filled {full} bytes"
            );
            assert!(
                left < full / 10,
                "{pass} pass: the page cache holds {left} bytes after it (a read of the \
                 catalogue: {full})"
            );
        }
    }

    /// The files a walk finds before the root's catalogue is read (on its second thread)
    /// are judged as those found after: the same new, changed, unchanged and gone files.
    #[test]
    fn files_found_before_the_catalogue_is_read_are_judged_alike() {
        let outcome = |read_after: bool| {
            let dir = tempfile::tempdir().unwrap();
            let photos = photo_tree(dir.path(), 5, 40, |i| format!("x{i}").into_bytes());
            let db = Db::open(&dir.path().join("state.sqlite3")).unwrap();
            let root = Root::new(&RootConfig::at(&photos)).unwrap();
            let wait = Unfinished {
                settle: Duration::ZERO,
                incomplete_limit: Duration::from_secs(3600),
            };
            let cancel = CancellationToken::new();
            let media = MediaTypes::builtin();
            let scan = || match scan_root(&db, &root, &media, wait, &cancel).unwrap() {
                RootOutcome::Scanned(s) => s,
                o => panic!("{o:?}"),
            };
            READ_AFTER_WALK.with(|f| f.set(read_after));
            let first = scan();
            // 3 changed, 2 new, 4 gone, the other 193 as they were.
            for i in 0..3 {
                std::fs::write(photos.join(format!("01/IMG_{i:04}.jpg")), b"changed!").unwrap();
            }
            for i in 0..2 {
                std::fs::write(photos.join(format!("02/NEW_{i}.jpg")), b"new").unwrap();
            }
            for i in 0..4 {
                std::fs::remove_file(photos.join(format!("03/IMG_{i:04}.jpg"))).unwrap();
            }
            let second = scan();
            let third = scan();
            READ_AFTER_WALK.with(|f| f.set(false));
            let counts = |s: &RootScan| (s.files, s.queued, s.missing, s.fresh);
            (counts(&first), counts(&second), counts(&third))
        };
        let expected = ((200, 200, 0, 0), (198, 5, 4, 0), (198, 0, 0, 0));
        assert_eq!(outcome(false), expected, "the catalogue read first");
        assert_eq!(outcome(true), expected, "every file found before the read");
    }
}
