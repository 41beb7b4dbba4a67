//! Walking the roots and bringing the catalogue up to date.
//!
//! Owns: which files are candidates (regular files only, symlinks never followed, one
//! filesystem, no hidden or temporary names unless configured, supported media types, the
//! root's include/exclude globs, never a 0-byte file), and the comparison with the catalogue
//! by `(dev, ino, size, mtime_ns, ctime_ns)`. An unchanged file costs one `lstat`.
//!
//! Must not: hash, talk to the server, or treat a missing or empty root as "everything was
//! deleted": such a root is reported as paused and its catalogue is left alone.
//!
//! Blocking: run it on the blocking pool.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
use tokio_util::sync::CancellationToken;

use crate::api::MediaTypes;
use crate::config::RootConfig;
use crate::db::catalogue::{self, FileStat};
use crate::db::{now_ms, Db, DbError};

/// Catalogue writes are committed in transactions of this many files.
const WRITE_BATCH: usize = 1000;

/// A root with its filters compiled.
#[derive(Clone, Debug)]
pub struct Root {
    pub path: PathBuf,
    pub recursive: bool,
    pub hidden: bool,
    include: Option<GlobSet>,
    exclude: GlobSet,
}

impl Root {
    /// Compiles the root's globs. The config was validated already, so a bad glob here is
    /// reported as an error string rather than trusted to be impossible.
    pub fn new(cfg: &RootConfig) -> Result<Root, String> {
        let build = |globs: &[String]| -> Result<GlobSet, String> {
            let mut b = GlobSetBuilder::new();
            for g in globs {
                b.add(Glob::new(g).map_err(|e| format!("glob {g:?}: {e}"))?);
            }
            b.build().map_err(|e| e.to_string())
        };
        Ok(Root {
            path: cfg.path.clone(),
            recursive: cfg.recursive,
            hidden: cfg.hidden,
            include: if cfg.include.is_empty() {
                None
            } else {
                Some(build(&cfg.include)?)
            },
            exclude: build(&cfg.exclude)?,
        })
    }

    pub fn path_bytes(&self) -> &[u8] {
        self.path.as_os_str().as_bytes()
    }

    /// Whether a path under this root passes the include/exclude globs (matched against the
    /// path relative to the root).
    pub fn wants(&self, path: &Path) -> bool {
        let rel = path.strip_prefix(&self.path).unwrap_or(path);
        if self.exclude.is_match(rel) {
            return false;
        }
        self.include.as_ref().is_none_or(|inc| inc.is_match(rel))
    }

    /// Whether a directory entry name is skipped before looking further (hidden, temporary).
    pub fn skips_name(&self, name: &[u8]) -> bool {
        (!self.hidden && name.first() == Some(&b'.')) || is_temp_name(name)
    }
}

/// Names that copy tools use while a file is still being written: never uploaded.
///
/// `*.part`, `*.crdownload`, `*.tmp`, Syncthing's `.syncthing.*.tmp` and `~syncthing~*`, and
/// rsync's `.name.XXXXXX` (a dot, the final name, a dot and six random characters).
pub fn is_temp_name(name: &[u8]) -> bool {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(b".part") || lower.ends_with(b".crdownload") || lower.ends_with(b".tmp") {
        return true;
    }
    if name.starts_with(b"~syncthing~") || name.starts_with(b".syncthing.") {
        return true;
    }
    // rsync: ".IMG_1.jpg.a1B2c3"
    if name.first() == Some(&b'.') && name.len() > 8 {
        let (head, tail) = name.split_at(name.len() - 7);
        if tail[0] == b'.'
            && tail[1..].iter().all(|c| c.is_ascii_alphanumeric())
            && head.len() > 1
        {
            return true;
        }
    }
    false
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
    /// Entries that could not be read (permission denied, vanished mid-walk...).
    pub errors: Vec<String>,
}

/// The result of scanning one root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootOutcome {
    Scanned(RootScan),
    /// Missing, not a directory, unreadable or empty: probably an unmounted disk. Nothing
    /// in the catalogue is touched.
    Paused { reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("scan cancelled")]
    Cancelled,
}

/// Walks one root and records new and changed files as queued jobs.
pub fn scan_root(
    db: &Db,
    root: &Root,
    media: &MediaTypes,
    cancel: &CancellationToken,
) -> Result<RootOutcome, ScanError> {
    let root_meta = match std::fs::metadata(&root.path) {
        Ok(m) if m.is_dir() => m,
        Ok(_) => {
            return Ok(RootOutcome::Paused {
                reason: "not a directory".into(),
            })
        }
        Err(e) => {
            return Ok(RootOutcome::Paused {
                reason: format!("cannot read it ({e})"),
            })
        }
    };
    match std::fs::read_dir(&root.path).map(|mut d| d.next().is_none()) {
        Ok(true) => {
            return Ok(RootOutcome::Paused {
                reason: "it is empty (an unmounted disk?)".into(),
            })
        }
        Ok(false) => {}
        Err(e) => {
            return Ok(RootOutcome::Paused {
                reason: format!("cannot list it ({e})"),
            })
        }
    }
    let root_dev = {
        use std::os::unix::fs::MetadataExt;
        root_meta.dev()
    };

    let root_bytes = root.path_bytes().to_vec();
    let mut known = {
        let rb = root_bytes.clone();
        db.call_blocking(move |c| catalogue::load_root(c, &rb))?
    };
    let mut report = RootScan::default();
    let mut batch: Vec<(Vec<u8>, FileStat)> = Vec::new();
    let mut stack = vec![root.path.clone()];

    while let Some(dir) = stack.pop() {
        if cancel.is_cancelled() {
            return Err(ScanError::Cancelled);
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                report.errors.push(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    report.errors.push(format!("{}: {e}", dir.display()));
                    continue;
                }
            };
            let name = entry.file_name();
            if root.skips_name(name.as_bytes()) {
                continue;
            }
            let path = entry.path();
            // lstat: a symlink is seen as a symlink and never followed.
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                // Vanished between readdir and lstat: nothing to do.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    report.errors.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                use std::os::unix::fs::MetadataExt;
                if root.recursive && meta.dev() == root_dev {
                    stack.push(path);
                }
                continue;
            }
            if !ft.is_file() || meta.len() == 0 {
                continue;
            }
            if !media.is_supported(name.as_bytes()) || !root.wants(&path) {
                continue;
            }
            report.files += 1;
            let stat = FileStat::from_metadata(&meta);
            let path_bytes = OsStr::as_bytes(path.as_os_str()).to_vec();
            match known.remove(&path_bytes) {
                Some(k) if k.stat == stat && !k.missing => {}
                _ => batch.push((path_bytes, stat)),
            }
            if batch.len() >= WRITE_BATCH {
                report.queued += flush(db, &root_bytes, &mut batch)?;
            }
        }
    }
    report.queued += flush(db, &root_bytes, &mut batch)?;

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
            db.call_blocking(move |c| {
                let tx = c.transaction()?;
                catalogue::mark_missing(&tx, &gone, now_ms())?;
                tx.commit()
            })?;
        }
    }
    Ok(RootOutcome::Scanned(report))
}

fn flush(db: &Db, root: &[u8], batch: &mut Vec<(Vec<u8>, FileStat)>) -> Result<u64, DbError> {
    if batch.is_empty() {
        return Ok(0);
    }
    let items = std::mem::take(batch);
    let n = items.len() as u64;
    db.call_blocking(|c| {
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let now = now_ms();
        for (path, stat) in &items {
            catalogue::upsert_and_queue(&tx, root, path, stat, now)?;
        }
        tx.commit()
    })?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_recognised() {
        for n in [
            "IMG_1.jpg.part",
            "a.crdownload",
            "x.TMP",
            ".syncthing.IMG_1.jpg.tmp",
            "~syncthing~IMG_1.jpg",
            ".IMG_1.jpg.a1B2c3",
        ] {
            assert!(is_temp_name(n.as_bytes()), "{n}");
        }
        for n in ["IMG_1.jpg", "holiday.mp4", ".hidden.jpg", "a.b.jpeg"] {
            assert!(!is_temp_name(n.as_bytes()), "{n}");
        }
    }

    #[test]
    fn globs_match_relative_to_the_root() {
        let root = Root::new(&RootConfig {
            path: "/photos".into(),
            recursive: true,
            include: vec!["**/*.jpg".into()],
            exclude: vec!["private/**".into()],
            hidden: false,
        })
        .unwrap();
        assert!(root.wants(Path::new("/photos/2024/a.jpg")));
        assert!(!root.wants(Path::new("/photos/private/a.jpg")));
        assert!(!root.wants(Path::new("/photos/2024/a.mp4")));
    }
}
