//! Walking the roots and bringing the catalogue up to date.
//!
//! Owns: which files are candidates (regular files only, symlinks never followed, one
//! filesystem, no hidden or temporary names unless configured, supported media types, the
//! root's include/exclude globs, never a 0-byte file), the comparison with the catalogue
//! by `(dev, ino, size, mtime_ns, ctime_ns)`, and the structural check of a new or changed
//! file before it is queued ([`structure`]; a scan cannot see closes, so structure and a
//! recent mtime are what tell it a file is unfinished). An unchanged file costs one `lstat`.
//!
//! Must not: hash, talk to the server, or treat a missing or empty root as "everything was
//! deleted": such a root is reported as paused and its catalogue is left alone.
//!
//! Blocking: the walks ([`scan_root`], [`scan_subtree`]) run on the blocking pool;
//! [`Scanner`], the pass over every root that `scan` and the daemon run, puts them there.

use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::complete::Completeness;
use crate::config::{RootConfig, ScanConfig, WatchConfig};
use crate::dates::Dating;
use crate::db::catalogue::{self, FileStat, KnownFile};
use crate::db::meta::{self, RootState, SkippedEntries};
use crate::db::sidecars::{self, SeenSidecar};
use crate::db::waiting::{self, WaitKind, Waiting};
use crate::db::{now_ms, Db, DbError};
use crate::filter::{DirLook, Entry, Filter, FilterConfig, Levels, Skip};
use crate::model::MediaTypes;

/// Catalogue writes are committed this many files at a time.
const WRITE_BATCH: usize = 1000;
/// Unreadable entries logged one by one per root and pass; the rest are counted.
const ERRORS_LOGGED: usize = 5;

/// A root with its filters compiled ([`Filter`], the one decision the scanner and the
/// watcher share) and how its files are dated.
#[derive(Clone, Debug)]
pub struct Root {
    pub path: PathBuf,
    pub recursive: bool,
    pub filter: Filter,
    pub dating: Dating,
    /// Its files are archived or deleted after upload (docs/ARCHITECTURE.md#after-upload),
    /// so an empty root is its normal state, not an unmounted disk.
    pub empties: bool,
}

impl Root {
    /// Compiles the root's patterns. The config was validated already, so a bad one here is
    /// reported as an error string rather than trusted to be impossible.
    pub fn new(cfg: &RootConfig) -> Result<Root, String> {
        Ok(Root {
            path: cfg.path.clone(),
            recursive: cfg.recursive,
            filter: Filter::new(&FilterConfig {
                root: &cfg.path,
                hidden: cfg.hidden,
                skip_junk: cfg.skip_junk,
                junk_extra: &cfg.junk_extra,
                include: &cfg.include,
                exclude: &cfg.exclude,
            })?,
            dating: Dating {
                from_names: cfg.dates_from_names,
                timezone: cfg.timezone.clone(),
            },
            empties: cfg.after_upload.removes(),
        })
    }

    /// [`probe_root`], with an empty folder taken as it is for a root that [`Self::empties`].
    pub fn probe(&self) -> Result<std::fs::Metadata, String> {
        probe_root_with(&self.path, self.empties)
    }

    pub fn path_bytes(&self) -> &[u8] {
        self.path.as_os_str().as_bytes()
    }

    /// Whether a walk of this root would look inside the directory `dir`, by its path
    /// alone: the root itself, or (for a recursive root) a folder under it reached through
    /// no skipped folder. Whether it is a directory on this filesystem, and what ignore files
    /// say ([`Filter::skipped_on_disk`]), is the caller's part.
    pub fn may_hold(&self, dir: &Path) -> bool {
        let Ok(rel) = dir.strip_prefix(&self.path) else {
            return false;
        };
        if rel.components().next().is_none() {
            return true;
        }
        self.recursive && self.filter.may_enter(dir)
    }

    /// Whether a file at `path` is a candidate by its path alone, by the rules of a walk: in
    /// a folder the walk reaches, and not skipped by [`Filter::skip`]. The rest (a regular
    /// file, not empty, on the root's filesystem, not under an ignore file or `.nomedia`)
    /// needs the disk.
    pub fn is_candidate(&self, path: &Path, media: &MediaTypes) -> bool {
        let Some(dir) = path.parent() else {
            return false;
        };
        self.may_hold(dir) && self.filter.skip(path, Entry::File(media), &[]).is_none()
    }
}

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

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("scan cancelled")]
    Cancelled,
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

/// What a walk of one folder under a root found, before anything is written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subtree {
    /// Candidate files with the stat the walk saw.
    pub files: Vec<(PathBuf, FileStat)>,
    /// Entries that could not be read.
    pub errors: Vec<String>,
}

/// Whether a root is there to be walked: a readable directory with something in it. `Err`
/// says why not, for the "paused" report: a missing or empty root is most likely an
/// unmounted disk, and its files must not be taken for deleted.
pub fn probe_root(path: &Path) -> Result<std::fs::Metadata, String> {
    probe_root_with(path, false)
}

fn probe_root_with(path: &Path, empty_ok: bool) -> Result<std::fs::Metadata, String> {
    let meta = match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => m,
        Ok(_) => return Err("not a directory".into()),
        Err(e) => return Err(format!("cannot read it ({e})")),
    };
    match std::fs::read_dir(path).map(|mut d| d.next().is_none()) {
        Ok(true) if !empty_ok => Err("it is empty (an unmounted disk?)".into()),
        Ok(_) => Ok(meta),
        Err(e) => Err(format!("cannot list it ({e})")),
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
        let walked = walk(
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

/// Walks one folder under a root (or the root itself) by the same rules as [`scan_root`]
/// and returns the candidate files with their stat.
///
/// Writes nothing. It never marks a file missing (a part of the tree cannot say what is gone
/// elsewhere) and never queues one: the watcher uses it for a folder that just appeared or
/// was moved in, which is exactly where files are still being written, so what it finds goes
/// through the watcher's settle check like any event. A `dir` the root's walk would not
/// enter (outside the root, under a hidden or temporary name, below a non-recursive root, a
/// symlink, another filesystem) gives an empty result.
pub fn scan_subtree(
    root: &Root,
    dir: &Path,
    media: &MediaTypes,
    cancel: &CancellationToken,
) -> Result<Subtree, ScanError> {
    let mut out = Subtree::default();
    if !root.may_hold(dir) {
        return Ok(out);
    }
    let root_dev = match std::fs::metadata(&root.path) {
        Ok(m) if m.is_dir() => m.dev(),
        Ok(_) => return Ok(out),
        Err(e) => {
            out.errors.push(format!("{}: {e}", root.path.display()));
            return Ok(out);
        }
    };
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() && m.dev() == root_dev => {}
        Ok(_) => return Ok(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => {
            out.errors.push(format!("{}: {e}", dir.display()));
            return Ok(out);
        }
    }
    // The ignore files and `.nomedia` of the folders above, and of `dir` itself.
    let Ok(levels) = root.filter.levels_to(dir) else {
        return Ok(out);
    };
    let files = &mut out.files;
    // The watcher does not report what it passes over; the scans count it.
    let mut skipped = SkippedEntries::default();
    walk(
        root,
        (dir, Some(levels)),
        root_dev,
        media,
        cancel,
        (&mut out.errors, &mut skipped),
        &mut Tally::default(),
        |path, stat| {
            files.push((path, stat));
            Ok(())
        },
    )?;
    Ok(out)
}

/// What a walk passed over on purpose, for the scan summary.
#[derive(Debug, Default)]
struct Tally {
    junk: u64,
    ignored: u64,
    /// Per `exclude` pattern: whether it matched anything.
    matched: Vec<bool>,
    /// The XMP sidecars seen (never assets; compared with what their photos went up with).
    sidecars: Vec<SeenSidecar>,
}

fn name_of(path: &Path) -> &[u8] {
    path.file_name().map_or(&[], |n| n.as_bytes())
}

impl Tally {
    fn note(&mut self, why: Skip) {
        match why {
            Skip::Junk => self.junk += 1,
            Skip::Excluded(i) => {
                if let Some(m) = self.matched.get_mut(i) {
                    *m = true;
                }
                self.ignored += 1;
            }
            w if w.counts_as_ignored() => self.ignored += 1,
            _ => {}
        }
    }
}

/// The walk shared by [`scan_root`] and [`scan_subtree`]: every folder from `start` down
/// (only `start` itself below a non-recursive root), symlinks never followed, other
/// filesystems not entered, and what [`Filter::skip`] skips not looked into; a folder
/// holding `.nomedia` is not read, and one holding an `.immishignore` adds its lines for
/// everything below it. `start_levels` are the ignore files that apply in `start` when the
/// caller read them already (a folder under the root). Calls `found` with each candidate
/// file; unreadable entries go to `errors`, and symlinks, FIFOs, sockets and device nodes
/// are counted in `skipped` (so that a tree of symlinks does not look like an empty backup).
#[allow(clippy::too_many_arguments)]
fn walk(
    root: &Root,
    (start, start_levels): (&Path, Option<Levels>),
    root_dev: u64,
    media: &MediaTypes,
    cancel: &CancellationToken,
    (errors, skipped): (&mut Vec<String>, &mut SkippedEntries),
    tally: &mut Tally,
    mut found: impl FnMut(PathBuf, FileStat) -> Result<(), ScanError>,
) -> Result<(), ScanError> {
    let looked = start_levels.is_some();
    let mut stack: Vec<(PathBuf, Levels, bool)> = vec![(
        start.to_path_buf(),
        start_levels.unwrap_or_default(),
        looked,
    )];
    while let Some((dir, levels, looked)) = stack.pop() {
        if cancel.is_cancelled() {
            return Err(ScanError::Cancelled);
        }
        let levels = if looked {
            levels
        } else {
            match root.filter.look_dir(&dir, &levels) {
                DirLook::NoMedia => {
                    tally.note(Skip::NoMedia);
                    continue;
                }
                DirLook::Walk(l) => l,
            }
        };
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                errors.push(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        // In name order, and the subfolders in name order after the files: a first scan
        // then writes the catalogue in path order, which fills the pages of the path's
        // unique index (split by inserts in readdir's order, it was 68 % full: 95 bytes a
        // file instead of 75; docs/BENCHMARKS.md, "Session 8").
        let mut names = Vec::new();
        for entry in entries {
            match entry {
                Ok(e) => names.push(e),
                Err(e) => errors.push(format!("{}: {e}", dir.display())),
            }
        }
        // Byte order (an `OsString`'s), each name taken once.
        names.sort_by_cached_key(std::fs::DirEntry::file_name);
        let mut subdirs = Vec::new();
        for entry in names {
            let path = entry.path();
            // lstat: a symlink is seen as a symlink and never followed. By the name in the
            // open directory (`fstatat` with `AT_SYMLINK_NOFOLLOW`, as `find` does), not by the
            // full path: the kernel's lookup of every component of the path again per entry
            // was a third of an unchanged re-scan's CPU (docs/BENCHMARKS.md, "Session 8").
            let meta = match entry.metadata() {
                Ok(m) => m,
                // Vanished between readdir and lstat: nothing to do.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    errors.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                Entry::Dir
            } else if ft.is_file() {
                Entry::File(media)
            } else {
                Entry::Other
            };
            if let Some(why) = root.filter.skip(&path, kind, &levels) {
                tally.note(why);
                if why == Skip::NotMedia && crate::sidecar::is_sidecar_name(name_of(&path)) {
                    let stat = FileStat::from_metadata(&meta);
                    tally.sidecars.push(SeenSidecar {
                        path: path.into_os_string().into_vec(),
                        size: stat.size,
                        mtime_ns: stat.mtime_ns,
                    });
                }
                continue;
            }
            if ft.is_dir() {
                if root.recursive && meta.dev() == root_dev {
                    subdirs.push(path);
                }
                continue;
            }
            if !ft.is_file() {
                skipped.count(&ft);
                continue;
            }
            if meta.len() == 0 {
                continue;
            }
            found(path, FileStat::from_metadata(&meta))?;
        }
        // The stack gives the last pushed first: pushed in reverse, walked in name order.
        for path in subdirs.into_iter().rev() {
            stack.push((path, levels.clone(), false));
        }
    }
    Ok(())
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

    #[test]
    fn event_paths_follow_the_rules_of_the_walk() {
        let cfg = |recursive| RootConfig {
            recursive,
            exclude: vec!["private/**".into()],
            ..RootConfig::at("/photos")
        };
        let (deep, flat) = (
            Root::new(&cfg(true)).unwrap(),
            Root::new(&cfg(false)).unwrap(),
        );
        let media = MediaTypes::builtin();
        assert!(deep.may_hold(Path::new("/photos")));
        assert!(deep.may_hold(Path::new("/photos/2024/summer")));
        assert!(!deep.may_hold(Path::new("/photos/.thumbnails")));
        assert!(!deep.may_hold(Path::new("/photos/2024/.cache/x")));
        assert!(!deep.may_hold(Path::new("/photos/2024/@eaDir/x")), "junk");
        assert!(!deep.may_hold(Path::new("/elsewhere")));
        assert!(flat.may_hold(Path::new("/photos")));
        assert!(!flat.may_hold(Path::new("/photos/2024")));

        assert!(deep.is_candidate(Path::new("/photos/2024/IMG_1.jpg"), &media));
        assert!(flat.is_candidate(Path::new("/photos/IMG_1.jpg"), &media));
        assert!(!flat.is_candidate(Path::new("/photos/2024/IMG_1.jpg"), &media));
        for no in [
            "/photos/2024/IMG_1.jpg.part",
            "/photos/.IMG_1.jpg.a1B2c3",
            "/photos/.hidden.jpg",
            "/photos/.cache/IMG_1.jpg",
            "/photos/notes.txt",
            "/photos/private/IMG_1.jpg",
            "/photos/@eaDir/IMG_1.jpg",
            "/photos/2024/._IMG_1.jpg",
            "/elsewhere/IMG_1.jpg",
        ] {
            assert!(!deep.is_candidate(Path::new(no), &media), "{no}");
        }
    }

    /// The walk goes in path order (names sorted, a folder's files before its subfolders),
    /// whatever order the directory lists them in: a first scan writes the catalogue in
    /// path order, which keeps the pages of the path's index full (docs/BENCHMARKS.md,
    /// "Session 8").
    #[test]
    fn the_walk_finds_files_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("photos");
        // Created out of order (a directory lists its entries in an order of its own:
        // creation, a hash of the name, ...).
        for folder in ["2021", "2019", "2020/b", "2020/a"] {
            std::fs::create_dir_all(top.join(folder)).unwrap();
            for i in [7, 3, 11, 0, 5, 9, 1, 10, 2, 8, 4, 6] {
                std::fs::write(top.join(folder).join(format!("IMG_{i:02}.jpg")), b"x").unwrap();
            }
        }
        let root = Root::new(&RootConfig::at(&top)).unwrap();
        let found = scan_subtree(
            &root,
            &top,
            &MediaTypes::builtin(),
            &CancellationToken::new(),
        )
        .unwrap();
        let paths: Vec<PathBuf> = found.files.into_iter().map(|(p, _)| p).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths.len(), 48);
        assert_eq!(paths, sorted);
    }

    #[test]
    fn patterns_match_relative_to_the_root() {
        let root = Root::new(&RootConfig {
            include: vec!["**/*.jpg".into()],
            exclude: vec!["private/**".into(), "@eaDir".into()],
            skip_junk: false,
            ..RootConfig::at("/photos")
        })
        .unwrap();
        let media = MediaTypes::builtin();
        let wants = |p: &str| root.is_candidate(Path::new(p), &media);
        assert!(wants("/photos/2024/a.jpg"));
        assert!(!wants("/photos/private/a.jpg"));
        assert!(!wants("/photos/2024/a.mp4"));
        assert!(
            !wants("/photos/2024/@eaDir/a.jpg"),
            "a bare name at any depth"
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
