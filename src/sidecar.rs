//! XMP sidecars: the file beside a photo that is sent with it as `sidecarData`
//! (docs/ARCHITECTURE.md#sidecars).
//!
//! Owns: which file is a photo's sidecar (`IMG_1.jpg.xmp` before `IMG_1.xmp`, the extension
//! in either case) and reading it, bounded. A sidecar is never an asset of its own: `.xmp`
//! is not a media type ([`crate::model::MediaTypes::is_supported`]), so no walk or event
//! ever queues one.
//!
//! Must not: talk to the server or write the database.

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A sidecar larger than this is not sent (with a warning): XMP is text, and a real one is
/// a few KiB.
pub const SIDECAR_MAX: u64 = 4 << 20;

/// A sidecar read for one upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sidecar {
    pub path: PathBuf,
    /// Its name, for the part's `filename` (the server checks its extension).
    pub file_name: String,
    pub data: Vec<u8>,
    /// Its size and mtime when read, recorded with the upload (a later change is reported).
    pub size: u64,
    pub mtime_ns: i64,
}

/// The sidecar paths of the photo at `path`, the more specific first: `IMG_1.jpg.xmp`,
/// `IMG_1.jpg.XMP`, then `IMG_1.xmp`, `IMG_1.XMP`.
pub fn candidates(path: &Path) -> Vec<PathBuf> {
    let Some(name) = path.file_name() else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(4);
    for ext in [".xmp", ".XMP"] {
        let mut n = name.to_os_string();
        n.push(ext);
        out.push(path.with_file_name(n));
    }
    if path.extension().is_some() {
        if let Some(stem) = path.file_stem() {
            for ext in [".xmp", ".XMP"] {
                let mut n = stem.to_os_string();
                n.push(ext);
                out.push(path.with_file_name(n));
            }
        }
    }
    out
}

/// Blocking: the sidecar of the photo at `path`, if one is there (a regular file, not a
/// symlink, not larger than [`SIDECAR_MAX`]).
pub fn find(path: &Path) -> Option<Sidecar> {
    for c in candidates(path) {
        let Ok(meta) = std::fs::symlink_metadata(&c) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if meta.len() > SIDECAR_MAX {
            tracing::warn!(
                sidecar = %c.display(),
                "not sent: larger than {SIDECAR_MAX} bytes ({} bytes)",
                meta.len()
            );
            return None;
        }
        let mut data = Vec::new();
        let read = std::fs::File::open(&c).and_then(|f| f.take(SIDECAR_MAX).read_to_end(&mut data));
        if let Err(e) = read {
            tracing::warn!(sidecar = %c.display(), "not sent: cannot read it ({e})");
            return None;
        }
        let file_name = c
            .file_name()
            .map(|n| String::from_utf8_lossy(n.as_bytes()).into_owned())
            .unwrap_or_default();
        return Some(Sidecar {
            path: c,
            file_name,
            data,
            size: meta.len(),
            mtime_ns: crate::db::catalogue::FileStat::from_metadata(&meta).mtime_ns,
        });
    }
    None
}

/// Whether a file name is an XMP sidecar's (`.xmp`, in any case).
pub fn is_sidecar_name(name: &[u8]) -> bool {
    name.len() > 4 && name[name.len() - 4..].eq_ignore_ascii_case(b".xmp")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_more_specific_name_wins() {
        let dir = tempfile::tempdir().unwrap();
        let photo = dir.path().join("IMG_1.jpg");
        std::fs::write(&photo, b"jpg").unwrap();
        assert_eq!(find(&photo), None);
        std::fs::write(dir.path().join("IMG_1.xmp"), b"stem").unwrap();
        let s = find(&photo).unwrap();
        assert_eq!(
            (s.file_name.as_str(), &s.data[..]),
            ("IMG_1.xmp", &b"stem"[..])
        );
        std::fs::write(dir.path().join("IMG_1.jpg.xmp"), b"full").unwrap();
        let s = find(&photo).unwrap();
        assert_eq!(
            (s.file_name.as_str(), &s.data[..]),
            ("IMG_1.jpg.xmp", &b"full"[..])
        );
        assert!(is_sidecar_name(b"IMG_1.JPG.XMP") && !is_sidecar_name(b"IMG_1.jpg"));
    }
}
