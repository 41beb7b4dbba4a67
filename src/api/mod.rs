//! The server client: URL normalisation and discovery, authentication, the dialect in use,
//! the calls the daemon makes (uploads, the duplicate check, listings, the sync stream) and
//! the live-event socket, with every failure mapped to an [`ApiError`] that says whether to
//! retry.
//!
//! Owns: the wire protocol, all of it: reqwest and tokio-tungstenite, TLS, headers (secrets
//! marked sensitive), DTOs, JSON lines, socket.io framing, error mapping. Everything it hands
//! out is typed ([`RemoteAsset`], [`SyncRow`], [`ServerEvent`], …). Must not: touch SQLite or
//! decide job states or mirror changes (the pipeline and the mirror do that from what it
//! returns and from [`ApiError::class`]).
//!
//! Layout: [`client`] (connect, and what a connected client knows), `discovery` (API root
//! and dialect), `auth` (API key check, password login, the credential header), `transport`
//! (requests, stall timeouts, JSON, error mapping), `tls` (the CA trust shared by HTTP and
//! the socket), `endpoint` (URL normalisation, the plain-http policy, the WebSocket URL);
//! the calls: `assets` (bulk check, one asset, listings), `server` (media types, version),
//! `upload` (the verifying file stream and the upload call), [`sync`] (the sync stream),
//! [`socket`] (socket.io events); [`error`] (the error type and its classification), `dto`
//! (wire shapes). The server contract is `docs/SERVER-API.md`.

use std::path::PathBuf;

use crate::model::{AssetId, Checksum};

pub use meter::{InFlight, UploadMeter};

mod albums;
mod assets;
mod auth;
pub mod client;
mod discovery;
mod download;
mod dto;
mod endpoint;
pub mod error;
mod limits;
mod meter;
mod reread;
mod server;
pub mod socket;
mod stacks;
pub mod sync;
mod tls;
mod transport;
mod upload;
pub(crate) use self::upload::SMALL_BODY;

#[cfg(test)]
mod tests;

pub use self::albums::{Album, AlbumAdd};
pub use self::assets::{AssetPage, Visibility, BULK_CHECK_BATCH};
pub use self::client::ApiClient;
pub use self::download::Download;
pub use self::error::ApiError;
pub use self::socket::{EventSocket, Incoming, ServerEvent, SocketError};
pub use self::sync::{SyncAck, SyncAcks, SyncLine, SyncRow, SyncStream};
// Moved to the domain model; re-exported while callers still name them here.
pub use self::error::RequestInfo;
pub use crate::dates::format_timestamp;
pub use crate::model::{MediaTypes, RemoteAsset};

/// API-key permissions the daemon cannot work without (upload + duplicate check, and reading
/// an asset back to verify it). `connect` names every one that is missing.
pub const REQUIRED_PERMISSIONS: [&str; 2] = ["asset.upload", "asset.read"];

/// The key the documentation recommends (docs/SERVER-API.md#permissions); used in error
/// messages.
pub const RECOMMENDED_PERMISSIONS: [&str; 8] = [
    "asset.upload",
    "asset.read",
    "user.read",
    "album.read",
    "album.create",
    "albumAsset.create",
    "asset.update",
    "stack.create",
];

/// Which API shape the server speaks; found at connect time by how the server answers,
/// never by its version number (builds of the next major report 2.7.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// Real Immich (v1.106+, v2.x, next major): `/api` root, `{id, status}` upload answer.
    Immich,
    /// The seed reference taken literally: no `/api`, `{id, duplicate}` upload answer,
    /// `GET /assets?updatedAfter=` listing.
    Seed,
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

/// Everything one upload needs. The file is streamed from `path`, or sent from `body` when
/// it is small.
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
    /// A Live Photo's still: its video, uploaded already (`livePhotoVideoId`).
    pub live_photo_video_id: Option<AssetId>,
    /// The XMP sidecar sent with the file as `sidecarData`, if it has one.
    pub sidecar: Option<crate::sidecar::Sidecar>,
    /// The whole file, already read and checked against `size` and `checksum` (a small
    /// file, read once for its date and its body: docs/ARCHITECTURE.md#upload); `None`: the
    /// upload reads it from `path`.
    pub body: Option<CheckedBody>,
}

/// A file's bytes read whole and found to be exactly what was hashed
/// ([`CheckedBody::read`]): what an upload of it sends.
#[derive(Clone)]
pub struct CheckedBody(pub(crate) bytes::Bytes);

impl std::fmt::Debug for CheckedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CheckedBody({} bytes)", self.0.len())
    }
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
}
