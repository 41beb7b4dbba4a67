//! The server client: URL normalisation and discovery, authentication, the dialect in use,
//! and the handful of endpoints the daemon calls, with every failure mapped to an
//! [`ApiError`] that says whether to retry.
//!
//! Owns: reqwest, headers (secrets marked sensitive), DTOs, error mapping. Must not: touch
//! SQLite or decide job states (the pipeline does that from [`ApiError::class`]).
//!
//! Layout: [`client`] (connect, discovery, auth, the endpoint calls, stall timeouts),
//! [`error`] (the error type and its classification), `endpoint` (URL normalisation, the
//! plain-http policy, the WebSocket URL), `upload` (the verifying file stream and the upload
//! answer), `dto` (wire shapes). The server contract is `shared/docs/API.md`.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::Credentials;
use crate::model::{AssetId, Checksum};

mod dto;
mod endpoint;
mod upload;

#[cfg(test)]
mod tests;

pub use self::error::RequestInfo;

/// API-key permissions the daemon cannot work without (upload + duplicate check, and reading
/// an asset back to verify it). `connect` names every one that is missing.
pub const REQUIRED_PERMISSIONS: [&str; 2] = ["asset.upload", "asset.read"];

/// The key the documentation recommends (API.md §2.4); used in error messages.
pub const RECOMMENDED_PERMISSIONS: [&str; 6] = [
    "asset.upload",
    "asset.read",
    "user.read",
    "album.read",
    "album.create",
    "albumAsset.create",
];

/// Which API shape the server speaks; found at connect time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// Real Immich (v1.106+, v2.x, next major): `/api` root, `{id, status}` upload answer.
    Immich,
    /// The seed reference taken literally: no `/api`, `{id, duplicate}` upload answer,
    /// `GET /assets?updatedAfter=` listing.
    Seed,
}

/// How to reach the server. `credentials` holds secrets; its `Debug` is redacted.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    pub url: String,
    pub credentials: Credentials,
    pub ca_file: Option<PathBuf>,
    pub allow_insecure_http: bool,
    pub connect_timeout: Duration,
    pub stall_timeout: Duration,
}

/// What the pipeline should do about an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Network trouble, 5xx, timeouts: retry this item later with backoff.
    Transient,
    /// This file can never go up as it is (413, unsupported type, bad request): `failed`.
    Permanent,
    /// Credentials rejected (401): pause all network work, probe slowly.
    Auth,
    /// Server disk full (507) or quota exceeded: pause all uploads with a long backoff.
    Capacity,
    /// The local file changed or vanished while being sent: re-queue it.
    FileChanged,
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

pub use self::error::ApiError;
pub mod error;

/// One `bulk-upload-check` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    Accept,
    /// The server has an asset with this checksum already.
    Duplicate {
        asset_id: Option<AssetId>,
        is_trashed: bool,
    },
}

/// Everything one upload needs. The file is streamed from `path`; never read whole.
#[derive(Clone, Debug)]
pub struct UploadRequest {
    pub path: PathBuf,
    /// The size the file had when hashed; exactly this many bytes are sent
    /// (explicit Content-Length), and a short read aborts the request.
    pub size: u64,
    /// The SHA-1 of the file when hashed; sent as `x-immich-checksum` and compared with the
    /// bytes actually streamed (a mismatch aborts the request before its last byte).
    pub checksum: Checksum,
    /// Display name (raw UTF-8; lossy for non-UTF-8 names).
    pub file_name: String,
    pub device_asset_id: String,
    pub device_id: String,
    /// Unix nanoseconds; sent as `YYYY-MM-DDTHH:MM:SS.sssZ`.
    pub file_created_ns: i64,
    pub file_modified_ns: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadOutcome {
    pub asset_id: AssetId,
    /// `true` when the server already had it (200 `duplicate`, or seed `duplicate: true`).
    pub duplicate: bool,
}

/// How the client proves who it is, as far as the rest of the daemon needs to know (the sync
/// stream needs a session; live events need a session or an `all` key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialsKind {
    /// `x-api-key`.
    ApiKey,
    /// A session token from `POST /auth/login`, sent as `Authorization: Bearer`.
    Session,
}

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

impl RemoteAsset {
    /// Reads an `AssetResponseDto` (either dialect), as returned by `GET /assets/:id` and in
    /// `/search/metadata` pages. `None` when it has no `id`.
    pub fn from_json(value: serde_json::Value) -> Option<RemoteAsset> {
        serde_json::from_value::<dto::AssetDto>(value)
            .ok()
            .map(dto::AssetDto::into_remote)
    }
}

/// Supported file extensions (lower case, with the dot), from `GET /server/media-types` or
/// the built-in list for servers that lack it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaTypes {
    pub image: Vec<String>,
    pub video: Vec<String>,
    pub sidecar: Vec<String>,
}

impl MediaTypes {
    /// The lists of Immich v2.7.5 (`server/src/utils/mime-types.ts`, API.md §3.4), for
    /// servers without `GET /server/media-types` (seed-style).
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

/// Formats Unix nanoseconds as `YYYY-MM-DDTHH:MM:SS.sssZ` (UTC, milliseconds truncated
/// towards the past), the one date format both v2.7.5 and the next major accept.
///
/// Every `i64` is in range (1677..2262), so this cannot fail.
pub fn format_timestamp(unix_ns: i64) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000);
    let millis = unix_ns.rem_euclid(1_000_000_000) / 1_000_000;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day); Howard Hinnant's
/// `civil_from_days`, exact for the whole `i64`-nanosecond range.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

pub mod client;
pub use client::ApiClient;

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_milliseconds_with_z() {
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_timestamp(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123Z"
        );
        // Leap day.
        assert_eq!(
            format_timestamp(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn timestamps_before_1970_round_towards_the_past() {
        assert_eq!(format_timestamp(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_timestamp(-1_000_000), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_timestamp(-1_000_001), "1969-12-31T23:59:59.998Z");
        assert_eq!(
            format_timestamp(-2_208_988_800_000_000_000),
            "1900-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn timestamps_at_the_ends_of_i64() {
        assert_eq!(format_timestamp(i64::MIN), "1677-09-21T00:12:43.145Z");
        assert_eq!(format_timestamp(i64::MAX), "2262-04-11T23:47:16.854Z");
        assert_eq!(
            format_timestamp(4_102_444_800_000_000_000),
            "2100-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn timestamps_agree_with_the_time_crate() {
        let fmt = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        let mut ns: i64 = -9_000_000_000_000_000_000;
        while ns < 9_000_000_000_000_000_000 {
            let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns)).unwrap();
            assert_eq!(format_timestamp(ns), t.format(&fmt).unwrap(), "ns = {ns}");
            ns += 7_777_777_777_777_777;
        }
    }

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
