//! Domain types shared by every part of the daemon: checksums, asset ids, job states and
//! skip reasons.
//!
//! These are the names the rest of the code speaks in. They carry no I/O.

use std::fmt;

use base64::Engine as _;

/// A SHA-1 digest of a file's bytes: the identity of an asset on an Immich server.
///
/// Immich sends it base64-encoded (28 chars) in asset objects and accepts hex (40 chars) or
/// base64 in `x-immich-checksum` and `bulk-upload-check`; `parse` takes either, like the
/// server's `fromChecksum`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Checksum(pub [u8; 20]);

impl Checksum {
    /// Parses hex (40 chars) or base64 (28 chars). Anything else is `None`.
    pub fn parse(s: &str) -> Option<Checksum> {
        let bytes = if s.len() == 28 {
            base64::engine::general_purpose::STANDARD.decode(s).ok()?
        } else if s.len() == 40 {
            hex::decode(s).ok()?
        } else {
            return None;
        };
        Self::from_slice(&bytes)
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Checksum> {
        <[u8; 20]>::try_from(bytes).ok().map(Checksum)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }
}

impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Checksum({})", self.to_hex())
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The server's id of an asset (a UUID in Immich; opaque to us).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AssetId(pub String);

impl fmt::Debug for AssetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AssetId({})", self.0)
    }
}

impl fmt::Display for AssetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a file's job stands. Stored in SQLite as the lower-case name.
///
/// `Queued → Hashing → Checking → Uploading → Verifying → Done`, with the side exits
/// `Skipped`, `Retry` and `Failed` (see docs/ARCHITECTURE.md#job-states).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobState {
    Queued,
    Hashing,
    Checking,
    Uploading,
    Verifying,
    Done,
    Skipped,
    Retry,
    Failed,
}

impl JobState {
    pub const ALL: [JobState; 9] = [
        JobState::Queued,
        JobState::Hashing,
        JobState::Checking,
        JobState::Uploading,
        JobState::Verifying,
        JobState::Done,
        JobState::Skipped,
        JobState::Retry,
        JobState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Hashing => "hashing",
            JobState::Checking => "checking",
            JobState::Uploading => "uploading",
            JobState::Verifying => "verifying",
            JobState::Done => "done",
            JobState::Skipped => "skipped",
            JobState::Retry => "retry",
            JobState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// States a crash can leave a job in; they go back to `Queued` on start.
    pub fn is_in_flight(self) -> bool {
        matches!(
            self,
            JobState::Hashing | JobState::Checking | JobState::Uploading | JobState::Verifying
        )
    }

    /// States that need no more work until the file changes or the user asks.
    pub fn is_settled(self) -> bool {
        matches!(self, JobState::Done | JobState::Skipped | JobState::Failed)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a file is `skipped`: not uploaded, though nothing failed.
///
/// Stored in `jobs.skip_reason` as [`SkipReason::code`], which never changes once shipped
/// (SQL finds held-back files by it); [`SkipReason::describe`] is the sentence people read,
/// rendered when shown, so it may be reworded freely.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// The user trashed or deleted our asset on the server (there is a tombstone).
    DeletedOnServer,
    /// `bulk-upload-check` found the content in the server's trash.
    TrashedOnServer,
    /// The path is no longer a regular file.
    NotRegularFile,
    /// The file is empty.
    EmptyFile,
    /// The file disappeared before it was backed up.
    Vanished,
}

impl SkipReason {
    pub const ALL: [SkipReason; 5] = [
        SkipReason::DeletedOnServer,
        SkipReason::TrashedOnServer,
        SkipReason::NotRegularFile,
        SkipReason::EmptyFile,
        SkipReason::Vanished,
    ];

    /// The stable code stored in the database.
    pub const fn code(self) -> &'static str {
        match self {
            SkipReason::DeletedOnServer => "deleted_on_server",
            SkipReason::TrashedOnServer => "trashed_on_server",
            SkipReason::NotRegularFile => "not_a_regular_file",
            SkipReason::EmptyFile => "empty_file",
            SkipReason::Vanished => "vanished",
        }
    }

    /// The reason for a stored code; `None` for a code this version does not know.
    pub fn from_code(code: &str) -> Option<SkipReason> {
        SkipReason::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The sentence shown to people (`status`, `diff`).
    pub const fn describe(self) -> &'static str {
        match self {
            SkipReason::DeletedOnServer => {
                "deleted on the server by the user; not uploaded again \
                 (set mirror.reupload_deleted = true to change that)"
            }
            SkipReason::TrashedOnServer => {
                "the server has this photo in its trash; not uploaded again"
            }
            SkipReason::NotRegularFile => "no longer a regular file",
            SkipReason::EmptyFile => "empty file",
            SkipReason::Vanished => "file vanished before it was backed up",
        }
    }

    /// The skips that end when the content shows up live on the server again (a restore
    /// from the trash, or the same photo uploaded by another client): the file is backed up
    /// after all.
    pub const RELEASED_BY_RESTORE: [SkipReason; 2] =
        [SkipReason::DeletedOnServer, SkipReason::TrashedOnServer];

    /// Whether this skip is one of [`SkipReason::RELEASED_BY_RESTORE`].
    pub fn released_by_restore(self) -> bool {
        SkipReason::RELEASED_BY_RESTORE.contains(&self)
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_parses_hex_and_base64_of_the_same_digest() {
        // SHA-1 of "abc".
        let hex = "a9993e364706816aba3e25717850c26c9cd0d89d";
        let b64 = "qZk+NkcGgWq6PiVxeFDCbJzQ2J0=";
        let a = Checksum::parse(hex).expect("hex");
        let b = Checksum::parse(b64).expect("base64");
        assert_eq!(a, b);
        assert_eq!(a.to_hex(), hex);
        assert_eq!(a.to_base64(), b64);
        assert_eq!(Checksum::parse("abc"), None);
        assert_eq!(Checksum::parse(&"z".repeat(40)), None);
    }

    #[test]
    fn job_state_names_round_trip() {
        for st in JobState::ALL {
            assert_eq!(JobState::parse(st.as_str()), Some(st));
        }
        assert!(JobState::Uploading.is_in_flight());
        assert!(!JobState::Retry.is_in_flight());
    }

    #[test]
    fn skip_reason_codes_round_trip_and_are_distinct() {
        let mut codes = std::collections::HashSet::new();
        for r in SkipReason::ALL {
            assert_eq!(SkipReason::from_code(r.code()), Some(r));
            assert!(codes.insert(r.code()), "{} twice", r.code());
            assert_eq!(r.to_string(), r.describe());
        }
        assert_eq!(SkipReason::from_code("no such code"), None);
        // Only skips about the server's copy end when the content is back on the server.
        let released: Vec<_> = SkipReason::ALL
            .into_iter()
            .filter(|r| r.released_by_restore())
            .collect();
        assert_eq!(
            released,
            [SkipReason::DeletedOnServer, SkipReason::TrashedOnServer]
        );
    }
}

// --- What the server holds: its assets and the file types it takes --------------------------
//
// Plain data read from the server by `api` and stored by `db` and `scan`; how they travel on
// the wire (field names, dialects) is `api`'s business alone.

/// The fields of a server asset the daemon cares about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteAsset {
    pub id: AssetId,
    pub owner_id: String,
    pub checksum: Option<Checksum>,
    pub original_file_name: String,
    pub file_created_at: Option<String>,
    pub updated_at: Option<String>,
    /// `timeline`, `archive`, `hidden` or `locked`; derived from `isArchived` on servers
    /// that predate `visibility` (seed).
    pub visibility: Option<String>,
    pub is_trashed: bool,
    /// The uploading client's `deviceId` and `deviceAssetId` (absent on the next major).
    pub device_id: Option<String>,
    pub device_asset_id: Option<String>,
}

/// Supported file extensions (lower case, with the dot), from the server or the built-in
/// list for servers that cannot say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaTypes {
    pub image: Vec<String>,
    pub video: Vec<String>,
    pub sidecar: Vec<String>,
}

impl MediaTypes {
    /// The lists of Immich v2.7.5 (`server/src/utils/mime-types.ts`,
    /// docs/SERVER-API.md#8-server-information), for servers without
    /// `GET /server/media-types` (seed-style).
    pub fn builtin() -> MediaTypes {
        let list = |exts: &[&str]| exts.iter().map(|e| (*e).to_owned()).collect();
        MediaTypes {
            image: list(&BUILTIN_IMAGE),
            video: list(&BUILTIN_VIDEO),
            sidecar: list(&[".xmp"]),
        }
    }

    /// Builds the lists from what a server sent: lower-cased, with a leading dot.
    pub fn from_lists(image: Vec<String>, video: Vec<String>, sidecar: Vec<String>) -> Self {
        let norm = |v: Vec<String>| {
            v.into_iter()
                .map(|e| {
                    let e = e.trim().to_ascii_lowercase();
                    if e.starts_with('.') {
                        e
                    } else {
                        format!(".{e}")
                    }
                })
                .filter(|e| e.len() > 1)
                .collect()
        };
        MediaTypes {
            image: norm(image),
            video: norm(video),
            sidecar: norm(sidecar),
        }
    }

    /// Whether a file of this name is an asset the server takes (an image or a video;
    /// sidecars are not assets). Only the extension counts, case-insensitively, as on the
    /// server (`extname`, so `.jpg` alone has no extension). Accepts a bare name or a path.
    pub fn is_supported(&self, file_name: &[u8]) -> bool {
        let name = match file_name.iter().rposition(|&b| b == b'/') {
            Some(i) => &file_name[i + 1..],
            None => file_name,
        };
        let Some(dot) = name.iter().rposition(|&b| b == b'.') else {
            return false;
        };
        if dot == 0 {
            return false;
        }
        let ext = &name[dot..];
        let matches = |list: &[String]| list.iter().any(|e| e.as_bytes().eq_ignore_ascii_case(ext));
        matches(&self.image) || matches(&self.video)
    }
}

const BUILTIN_IMAGE: [&str; 47] = [
    ".avif", ".bmp", ".gif", ".jpeg", ".jpg", ".png", ".webp", ".3fr", ".ari", ".arw", ".cap",
    ".cin", ".cr2", ".cr3", ".crw", ".dcr", ".dng", ".erf", ".fff", ".iiq", ".k25", ".kdc", ".mrw",
    ".nef", ".nrw", ".orf", ".ori", ".pef", ".psd", ".raf", ".raw", ".rw2", ".rwl", ".sr2", ".srf",
    ".srw", ".x3f", ".heic", ".heif", ".hif", ".insp", ".jp2", ".jpe", ".jxl", ".svg", ".tif",
    ".tiff",
];

const BUILTIN_VIDEO: [&str; 20] = [
    ".3gp", ".3gpp", ".avi", ".flv", ".insv", ".m2t", ".m2ts", ".m4v", ".mkv", ".mov", ".mp4",
    ".mpe", ".mpeg", ".mpg", ".mts", ".mxf", ".ts", ".vob", ".webm", ".wmv",
];

#[cfg(test)]
mod media_type_tests {
    use super::*;

    #[test]
    fn media_types_match_on_the_extension_only() {
        let mt = MediaTypes::builtin();
        assert!(mt.is_supported(b"IMG_0001.JPG"));
        assert!(mt.is_supported(b"clip.MoV"));
        assert!(mt.is_supported(b"/photos/2024/a.b.heic"));
        assert!(mt.is_supported(b"IMG_\xff.jpg"));
        assert!(mt.is_supported(b"caf\xc3\xa9.dng"));
        assert!(
            !mt.is_supported(b"IMG_0001.jpg.xmp"),
            "sidecars are not assets"
        );
        assert!(!mt.is_supported(b"notes.txt"));
        assert!(!mt.is_supported(b".jpg"), "a dot file has no extension");
        assert!(!mt.is_supported(b"jpg"));
        assert!(!mt.is_supported(b"photo."));
        assert!(!mt.is_supported(b"dir.jpg/file"));
        assert!(!mt.is_supported(b""));
        assert!(!mt.is_supported(b"a.mpo"), "v2.7.5 does not list .mpo");
    }

    #[test]
    fn media_types_from_a_server_are_normalised() {
        let mt = MediaTypes::from_lists(
            vec![".JPG".into(), "png".into(), " ".into()],
            vec![".mp4".into()],
            vec![".xmp".into()],
        );
        assert_eq!(mt.image, vec![".jpg", ".png"]);
        assert!(mt.is_supported(b"x.PNG"));
        assert!(mt.is_supported(b"x.mp4"));
        assert!(!mt.is_supported(b"x.xmp"));
    }

    #[test]
    fn builtin_lists_have_no_duplicates() {
        let mt = MediaTypes::builtin();
        let mut all: Vec<_> = mt.image.iter().chain(&mt.video).collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
        assert_eq!(n, 67);
    }
}
