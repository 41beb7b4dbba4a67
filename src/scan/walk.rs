//! The walk of a root: which folders are entered and which entries are candidate files.
//!
//! Owns: the walk itself ([`scan_subtree`] for a folder, and the walk under the pass's
//! `scan_root`): every folder from a start down, in name order (a folder's files before its
//! subfolders), symlinks never followed, one filesystem, each entry stat'ed by its name in the
//! open directory; what [`Filter`] skips, folders holding `.nomedia` and the lines of
//! `.immishignore` files applied as it goes; a [`Root`] with its filters compiled, and whether
//! a root is there to be walked ([`probe_root`]).
//!
//! Must not: read or write the catalogue, queue anything, or judge whether a file is
//! finished: what it finds goes to its caller (the pass in the parent module, or the
//! watcher's walks, which settle it like any event).
//!
//! Blocking: the walks ([`scan_subtree`], and the pass's) and [`probe_root`] read the disk:
//! callers run them on the blocking pool. A [`Root`]'s path checks read nothing.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::config::RootConfig;
use crate::dates::Dating;
use crate::db::catalogue::FileStat;
use crate::db::meta::SkippedEntries;
use crate::db::sidecars::SeenSidecar;
use crate::db::DbError;
use crate::filter::{DirLook, Entry, Filter, FilterConfig, Levels, Skip};
use crate::model::MediaTypes;

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

/// Why a walk stopped: cancelled, or the caller's work on a file it found failed.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("scan cancelled")]
    Cancelled,
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

/// Walks one folder under a root (or the root itself) by the same rules as
/// `scan::scan_root` and returns the candidate files with their stat.
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
pub(super) struct Tally {
    pub(super) junk: u64,
    pub(super) ignored: u64,
    /// Per `exclude` pattern: whether it matched anything.
    pub(super) matched: Vec<bool>,
    /// The XMP sidecars seen (never assets; compared with what their photos went up with).
    pub(super) sidecars: Vec<SeenSidecar>,
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

/// The walk shared by `scan::scan_root` and [`scan_subtree`]: every folder from `start` down
/// (only `start` itself below a non-recursive root), symlinks never followed, other
/// filesystems not entered, and what [`Filter::skip`] skips not looked into; a folder
/// holding `.nomedia` is not read, and one holding an `.immishignore` adds its lines for
/// everything below it. `start_levels` are the ignore files that apply in `start` when the
/// caller read them already (a folder under the root). Calls `found` with each candidate
/// file; unreadable entries go to `errors`, and symlinks, FIFOs, sockets and device nodes
/// are counted in `skipped` (so that a tree of symlinks does not look like an empty backup).
#[allow(clippy::too_many_arguments)]
pub(super) fn walk(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
