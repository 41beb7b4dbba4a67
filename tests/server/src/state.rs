//! The in-memory data model: users, keys, sessions, partners, assets, albums, the audit trail of
//! hard deletes, the server clock, and the connected sockets.
//!
//! Everything lives in one [`State`] behind a `std::sync::Mutex` (see [`Shared::lock`]). The
//! guard is never held across an `.await`: handlers lock, mutate, unlock, and only then await.
//! That keeps the test handle synchronous and the server free of lock-order puzzles.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::faults::Faults;
use crate::Dialect;

/// Everything the handlers, the socket tasks and the test handle share.
pub(crate) type App = Arc<Shared>;

pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) cfg: Config,
    pub(crate) shutdown: CancellationToken,
    /// The parent of every connection's abort token and of every socket's, a child of
    /// `shutdown`: cancelled (and replaced) to drop them all at once (`offline`).
    connections: Mutex<CancellationToken>,
    /// The dialect served now: `cfg.dialect` at start, changed by
    /// [`crate::ServerHandle::restart_as`].
    dialect_now: Mutex<Dialect>,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) addr: SocketAddr,
    pub(crate) admin_id: String,
    pub(crate) admin_key: String,
    /// Raw request-body bytes received on `POST /assets` (multipart framing included).
    pub(crate) upload_body_bytes: AtomicU64,
    /// Bytes of `assetData` file parts received.
    pub(crate) upload_file_bytes: AtomicU64,
    /// Upload requests whose `assetData` part was read at all.
    pub(crate) upload_bodies: AtomicU64,
    /// `bulk-upload-check` requests whose `assets` list was empty.
    pub(crate) empty_bulk_checks: AtomicU64,
    /// Body bytes of `GET /assets/:id/original` replies handed to the connection (a reply
    /// cut short by `cut_downloads` counts what was sent).
    pub(crate) original_bytes_served: AtomicU64,
}

impl Shared {
    pub(crate) fn new(
        state: State,
        cfg: Config,
        shutdown: CancellationToken,
        runtime: tokio::runtime::Handle,
        addr: SocketAddr,
        admin_id: String,
        admin_key: String,
    ) -> Shared {
        Shared {
            state: Mutex::new(state),
            connections: Mutex::new(shutdown.child_token()),
            dialect_now: Mutex::new(cfg.dialect),
            cfg,
            shutdown,
            runtime,
            addr,
            admin_id,
            admin_key,
            upload_body_bytes: AtomicU64::new(0),
            upload_file_bytes: AtomicU64::new(0),
            upload_bodies: AtomicU64::new(0),
            empty_bulk_checks: AtomicU64::new(0),
            original_bytes_served: AtomicU64::new(0),
        }
    }

    /// Locks the state. A panic in another holder cannot leave the maps half-written in a way
    /// that matters to a test server, so a poisoned lock is simply taken over.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A token for a new connection or socket, cancelled by [`Shared::drop_connections`] or
    /// at shutdown.
    pub(crate) fn connection_token(&self) -> CancellationToken {
        self.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .child_token()
    }

    /// Drops every open connection and socket, with no reply or close frame.
    pub(crate) fn drop_connections(&self) {
        let mut parent = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        parent.cancel();
        *parent = self.shutdown.child_token();
    }

    pub(crate) fn dialect(&self) -> Dialect {
        *self.dialect_now.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_dialect(&self, dialect: Dialect) {
        *self.dialect_now.lock().unwrap_or_else(|e| e.into_inner()) = dialect;
    }
}

/// Settings fixed at start.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub dialect: Dialect,
    pub keep_bytes: bool,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub upload_event_delay: Duration,
    pub metadata_delay: Duration,
    pub admin_email: String,
    pub admin_password: String,
    /// The CA of the HTTPS mode (PEM), `None` for plain http.
    pub tls_ca_pem: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Time

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Formats like a JavaScript `Date.toISOString()`: `2024-01-15T10:30:00.000Z`.
pub(crate) fn fmt_ts(ms: i64) -> String {
    let dt = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    dt.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_default()
}

/// A date received from a client: the instant, and the wall-clock time it named (what Immich
/// calls `localDateTime`, stored as if it were UTC).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ParsedDate {
    pub utc_ms: i64,
    pub local_ms: i64,
}

/// Parses a client date. `strict` is the next major's zod `z.iso.datetime()`: a full date-time
/// ending in `Z`. Otherwise it is v2.7.5's lenient `isDateString`: RFC 3339 with any offset, a
/// date-time without offset (taken as UTC, like a server running in UTC), or a bare date.
pub(crate) fn parse_date(s: &str, strict: bool) -> Option<ParsedDate> {
    let s = s.trim();
    if strict && !s.ends_with('Z') {
        return None;
    }
    if let Ok(dt) = OffsetDateTime::parse(s, &Rfc3339) {
        let utc_ms = (dt.unix_timestamp_nanos() / 1_000_000) as i64;
        let offset_ms = i64::from(dt.offset().whole_seconds()) * 1000;
        return Some(ParsedDate {
            utc_ms,
            local_ms: utc_ms + offset_ms,
        });
    }
    if strict {
        return None;
    }
    let naive = format_description!(
        "[year]-[month]-[day]T[hour]:[minute][optional [:[second][optional [.[subsecond]]]]]"
    );
    if let Ok(dt) = PrimitiveDateTime::parse(s, naive) {
        let ms = (dt.assume_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        return Some(ParsedDate {
            utc_ms: ms,
            local_ms: ms,
        });
    }
    if let Ok(d) = time::Date::parse(s, format_description!("[year]-[month]-[day]")) {
        let ms = d.midnight().assume_utc().unix_timestamp() * 1000;
        return Some(ParsedDate {
            utc_ms: ms,
            local_ms: ms,
        });
    }
    None
}

/// The server clock. `updatedAt` values come from [`Clock::tick`], which never returns the same
/// millisecond twice, so a client that asks for `updatedAfter = <last seen updatedAt>`
/// (inclusive) sees each change exactly at or after its watermark. `updateId`s (the sync
/// stream's cursor) are UUIDv7-shaped and strictly increasing as strings and as numbers.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    last_ms: i64,
    seq: u64,
}

impl Clock {
    pub fn tick(&mut self) -> i64 {
        self.last_ms = now_ms().max(self.last_ms + 1);
        self.last_ms
    }

    pub fn update_id(&mut self) -> u128 {
        self.seq += 1;
        let ms = self.last_ms.max(now_ms()).max(0) as u128;
        // Keep the millisecond part monotonic too, so ids built later never sort earlier.
        self.last_ms = ms as i64;
        (ms << 80) | (0x7u128 << 76) | (0b10u128 << 62) | (u128::from(self.seq) & ((1 << 62) - 1))
    }
}

pub(crate) fn fmt_update_id(id: u128) -> String {
    uuid::Uuid::from_u128(id).to_string()
}

pub(crate) fn parse_update_id(s: &str) -> Option<u128> {
    uuid::Uuid::parse_str(s).ok().map(|u| u.as_u128())
}

// ---------------------------------------------------------------------------------------------
// Small shared helpers

pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An opaque secret shaped like Immich's `randomBytesAsText(32)`: base64 with the non-word
/// characters removed.
pub(crate) fn random_secret() -> String {
    let mut bytes = Vec::with_capacity(32);
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    base64::engine::general_purpose::STANDARD
        .encode(bytes)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes a checksum the way Immich's `fromChecksum` does: 28 characters are base64,
/// anything else is hex. Values that do not decode to 20 bytes never match anything.
pub(crate) fn decode_checksum(s: &str) -> Option<[u8; 20]> {
    let bytes = if s.len() == 28 {
        base64::engine::general_purpose::STANDARD.decode(s).ok()?
    } else {
        if !s.len().is_multiple_of(2) {
            return None;
        }
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?
    };
    bytes.try_into().ok()
}

pub(crate) fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok() && s.len() == 36
}

// ---------------------------------------------------------------------------------------------
// Enums

/// Asset visibility, as in Immich's `AssetVisibility`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Timeline,
    Archive,
    Hidden,
    Locked,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Timeline => "timeline",
            Visibility::Archive => "archive",
            Visibility::Hidden => "hidden",
            Visibility::Locked => "locked",
        }
    }

    pub fn parse(s: &str) -> Option<Visibility> {
        match s {
            "timeline" => Some(Visibility::Timeline),
            "archive" => Some(Visibility::Archive),
            "hidden" => Some(Visibility::Hidden),
            "locked" => Some(Visibility::Locked),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AssetType {
    Image,
    Video,
}

impl AssetType {
    pub fn as_str(self) -> &'static str {
        match self {
            AssetType::Image => "IMAGE",
            AssetType::Video => "VIDEO",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Records

#[derive(Clone, Debug)]
pub(crate) struct User {
    pub id: String,
    pub email: String,
    pub password: String,
    pub name: String,
    pub is_admin: bool,
    /// The seeded admin has been through onboarding; users created later have not.
    pub is_onboarded: bool,
    pub quota: Option<u64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub update_id: u128,
}

#[derive(Clone, Debug)]
pub(crate) struct ApiKey {
    pub id: String,
    pub name: String,
    pub secret: String,
    pub user_id: String,
    pub permissions: Vec<String>,
    pub created_at: i64,
}

#[derive(Clone, Debug)]
pub(crate) struct Session {
    pub token: String,
    pub user_id: String,
    /// The next `/sync/stream` answers a single `SyncResetV1` until it is acked.
    pub pending_reset: bool,
    /// Sync checkpoints: entity type → (updateId, the ack string as received).
    pub checkpoints: BTreeMap<String, (u128, String)>,
}

#[derive(Clone, Debug)]
pub(crate) struct Partner {
    pub sharer_id: String,
    pub shared_with_id: String,
    pub in_timeline: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct Asset {
    pub id: String,
    pub owner_id: String,
    pub checksum: [u8; 20],
    pub size: u64,
    pub original_file_name: String,
    pub device_asset_id: Option<String>,
    pub device_id: Option<String>,
    pub file_created_at: i64,
    pub file_modified_at: i64,
    pub local_date_time: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub visibility: Visibility,
    pub is_favorite: bool,
    pub deleted_at: Option<i64>,
    pub kind: AssetType,
    pub duration: Option<String>,
    pub description: String,
    /// The linked Live Photo video (set on the photo).
    pub live_photo_video_id: Option<String>,
    pub stack_id: Option<String>,
    /// Display dimensions (`width`/`height`): the pixel size, swapped for sideways
    /// orientations. Filled by the metadata job.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// The `exifInfo` fields the metadata job fills.
    pub exif: ExifInfo,
    /// The metadata job has run.
    pub metadata_extracted: bool,
    pub update_id: u128,
    pub exif_update_id: u128,
    pub data: Option<Vec<u8>>,
    /// Insertion order, for stable listings.
    pub seq: u64,
}

/// `exifInfo` as the metadata job leaves it (`fileSizeInByte` and `description` live on the
/// asset). Empty until the job runs, as on the real server.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ExifInfo {
    pub date_time_original: Option<i64>,
    pub time_zone: Option<String>,
    pub make: Option<String>,
    pub model: Option<String>,
    pub lens_model: Option<String>,
    /// As Immich stores it: the number as a string.
    pub orientation: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub f_number: Option<f64>,
    pub focal_length: Option<f64>,
    pub iso: Option<u32>,
    pub exposure_time: Option<String>,
}

/// A stack (docs/SERVER-API.md#stacks): its members point at it through `Asset::stack_id`.
#[derive(Clone, Debug)]
pub(crate) struct Stack {
    pub id: String,
    pub owner_id: String,
    pub primary_asset_id: String,
}

/// One part of a recorded upload form, in the order it arrived.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FormPart {
    /// The part's field name (`deviceAssetId`, `assetData`, `sidecarData`, ...).
    pub name: String,
    /// A text field's value; `None` for file parts.
    pub value: Option<String>,
    /// A file part's `filename="..."`; `None` for text fields.
    pub file_name: Option<String>,
    /// A file part's length in bytes as received (0 for text fields).
    pub size: u64,
}

/// What one `POST /assets` carried and how it was answered. Uploads answered before the body
/// was read (the `x-immich-checksum` duplicate) carry no parts.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadRecord {
    pub parts: Vec<FormPart>,
    /// The HTTP status answered (0 when the connection was dropped by a fault).
    pub status: u16,
    /// The created or duplicate asset, when the answer named one.
    pub asset_id: Option<String>,
    /// The `x-api-key` the request carried (`None` for a session login): which key
    /// uploaded it.
    pub api_key: Option<String>,
}

impl UploadRecord {
    /// The value of a text field (the first one of that name).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.parts
            .iter()
            .find(|p| p.name == name && p.value.is_some())
            .and_then(|p| p.value.as_deref())
    }

    /// The part names in order (file parts included).
    pub fn names(&self) -> Vec<&str> {
        self.parts.iter().map(|p| p.name.as_str()).collect()
    }

    /// The `filename="..."` of the `assetData` part.
    pub fn file_name(&self) -> Option<&str> {
        self.file_part("assetData")
            .and_then(|p| p.file_name.as_deref())
    }

    /// Whether a `sidecarData` part was sent.
    pub fn has_sidecar(&self) -> bool {
        self.file_part("sidecarData").is_some()
    }

    fn file_part(&self, name: &str) -> Option<&FormPart> {
        self.parts
            .iter()
            .find(|p| p.name == name && p.file_name.is_some())
    }
}

/// A hard delete, kept for `AssetDeleteV1` rows.
#[derive(Clone, Debug)]
pub(crate) struct DeletedAsset {
    pub asset_id: String,
    pub owner_id: String,
    pub update_id: u128,
}

#[derive(Clone, Debug)]
pub(crate) struct Album {
    pub id: String,
    pub owner_id: String,
    pub name: String,
    pub description: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub asset_ids: Vec<String>,
    pub thumbnail: Option<String>,
}

/// Everything needed to create an asset, from an upload or from the handle.
#[derive(Clone, Debug)]
pub(crate) struct AssetInput {
    pub owner_id: String,
    pub checksum: [u8; 20],
    pub size: u64,
    pub original_file_name: String,
    pub device_asset_id: Option<String>,
    pub device_id: Option<String>,
    pub file_created_at: ParsedDate,
    pub file_modified_at: i64,
    pub visibility: Visibility,
    pub is_favorite: bool,
    pub duration: Option<String>,
    pub live_photo_video_id: Option<String>,
    pub data: Option<Vec<u8>>,
}

/// A command for one socket task.
#[derive(Debug)]
pub(crate) enum SocketCmd {
    /// A text frame, already framed (`42[...]`).
    Send(String),
    /// Close the socket.
    Close,
}

#[derive(Debug)]
pub(crate) struct SocketEntry {
    /// Set once the socket has joined the root namespace and authenticated.
    pub user_id: Option<String>,
    pub tx: mpsc::Sender<SocketCmd>,
}

/// Request counts for one route key.
#[derive(Clone, Debug, Default)]
pub(crate) struct RouteCount {
    pub total: u64,
    pub by_status: BTreeMap<u16, u64>,
}

// ---------------------------------------------------------------------------------------------
// State

#[derive(Default)]
pub(crate) struct State {
    pub users: Vec<User>,
    pub api_keys: Vec<ApiKey>,
    pub sessions: Vec<Session>,
    pub partners: Vec<Partner>,
    pub assets: HashMap<String, Asset>,
    /// (owner, checksum) → asset id; Immich's `UQ_assets_owner_checksum`.
    pub by_checksum: HashMap<(String, [u8; 20]), String>,
    pub deleted: Vec<DeletedAsset>,
    pub albums: Vec<Album>,
    pub stacks: Vec<Stack>,
    /// Every upload's form, oldest first.
    pub uploads: Vec<UploadRecord>,
    pub clock: Clock,
    next_seq: u64,
    pub faults: Faults,
    pub requests: BTreeMap<String, RouteCount>,
    pub sockets: HashMap<u64, SocketEntry>,
    pub next_socket: u64,
}

impl State {
    pub fn user(&self, id: &str) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }

    pub fn user_mut(&mut self, id: &str) -> Option<&mut User> {
        self.users.iter_mut().find(|u| u.id == id)
    }

    pub fn add_user(&mut self, email: &str, password: &str, name: &str, is_admin: bool) -> String {
        let now = self.clock.tick();
        let update_id = self.clock.update_id();
        let id = new_id();
        self.users.push(User {
            id: id.clone(),
            email: email.to_lowercase(),
            password: password.to_string(),
            name: name.to_string(),
            is_admin,
            is_onboarded: false,
            quota: None,
            created_at: now,
            updated_at: now,
            update_id,
        });
        id
    }

    pub fn create_api_key(&mut self, user_id: &str, name: &str, permissions: &[&str]) -> String {
        let secret = random_secret();
        let created_at = self.clock.tick();
        self.api_keys.push(ApiKey {
            id: new_id(),
            name: name.to_string(),
            secret: secret.clone(),
            user_id: user_id.to_string(),
            permissions: permissions.iter().map(|p| p.to_string()).collect(),
            created_at,
        });
        secret
    }

    pub fn create_session(&mut self, user_id: &str) -> String {
        let token = random_secret();
        self.sessions.push(Session {
            token: token.clone(),
            user_id: user_id.to_string(),
            pending_reset: false,
            checkpoints: BTreeMap::new(),
        });
        token
    }

    pub fn session_mut(&mut self, token: &str) -> Option<&mut Session> {
        self.sessions.iter_mut().find(|s| s.token == token)
    }

    /// Bytes counted against the user's quota: every stored asset, trashed ones included.
    pub fn usage(&self, user_id: &str) -> u64 {
        self.assets
            .values()
            .filter(|a| a.owner_id == user_id)
            .map(|a| a.size)
            .sum()
    }

    /// The owners whose assets appear in `user_id`'s timeline search: the user and every
    /// partner sharing with them with `inTimeline`.
    pub fn timeline_owner_ids(&self, user_id: &str) -> Vec<String> {
        let mut ids = vec![user_id.to_string()];
        for p in &self.partners {
            if p.shared_with_id == user_id && p.in_timeline && !ids.contains(&p.sharer_id) {
                ids.push(p.sharer_id.clone());
            }
        }
        ids
    }

    /// Read access as `requireAccess(AssetRead)` grants it: the owner, or a partner the owner
    /// shares with.
    pub fn can_read(&self, user_id: &str, asset: &Asset) -> bool {
        asset.owner_id == user_id
            || self
                .partners
                .iter()
                .any(|p| p.sharer_id == asset.owner_id && p.shared_with_id == user_id)
    }

    /// A stack's members as `StackResponseDto` lists them: not trashed, timeline or archive,
    /// the primary first, then by insertion.
    pub fn stack_members(&self, stack_id: &str) -> Vec<&Asset> {
        let primary = self
            .stacks
            .iter()
            .find(|s| s.id == stack_id)
            .map(|s| s.primary_asset_id.as_str());
        let mut members: Vec<&Asset> = self
            .assets
            .values()
            .filter(|a| a.stack_id.as_deref() == Some(stack_id) && a.deleted_at.is_none())
            .filter(|a| matches!(a.visibility, Visibility::Timeline | Visibility::Archive))
            .collect();
        members.sort_by_key(|a| (Some(a.id.as_str()) != primary, a.seq));
        members
    }

    pub fn find_by_checksum(&self, owner_id: &str, checksum: &[u8; 20]) -> Option<&Asset> {
        let id = self.by_checksum.get(&(owner_id.to_string(), *checksum))?;
        self.assets.get(id)
    }

    /// Stores a new asset. The caller has checked the checksum is new for this owner.
    pub fn insert_asset(&mut self, input: AssetInput, now: i64) -> String {
        let id = new_id();
        let update_id = self.clock.update_id();
        self.next_seq += 1;
        let kind = crate::assets::asset_type(&input.original_file_name);
        let duration = match kind {
            AssetType::Video => Some(
                input
                    .duration
                    .clone()
                    .unwrap_or_else(|| "0:00:00.000000".to_string()),
            ),
            AssetType::Image => input.duration.clone(),
        };
        self.by_checksum
            .insert((input.owner_id.clone(), input.checksum), id.clone());
        self.assets.insert(
            id.clone(),
            Asset {
                id: id.clone(),
                owner_id: input.owner_id,
                checksum: input.checksum,
                size: input.size,
                original_file_name: input.original_file_name,
                device_asset_id: input.device_asset_id,
                device_id: input.device_id,
                file_created_at: input.file_created_at.utc_ms,
                file_modified_at: input.file_modified_at,
                local_date_time: input.file_created_at.local_ms,
                created_at: now,
                updated_at: now,
                visibility: input.visibility,
                is_favorite: input.is_favorite,
                deleted_at: None,
                kind,
                duration,
                description: String::new(),
                live_photo_video_id: input.live_photo_video_id,
                stack_id: None,
                width: None,
                height: None,
                exif: ExifInfo::default(),
                metadata_extracted: false,
                update_id,
                exif_update_id: update_id,
                data: input.data,
                seq: self.next_seq,
            },
        );
        id
    }

    /// Moves assets to the trash (or re-stamps `deletedAt` on already trashed ones, as the real
    /// server does). Returns the ids that exist.
    pub fn trash(&mut self, ids: &[String]) -> Vec<String> {
        let now = self.clock.tick();
        let mut done = Vec::new();
        for id in ids {
            let update_id = self.clock.update_id();
            if let Some(a) = self.assets.get_mut(id) {
                a.deleted_at = Some(now);
                a.updated_at = now;
                a.update_id = update_id;
                done.push(id.clone());
            }
        }
        done
    }

    /// Restores trashed assets; returns the ids actually restored.
    pub fn restore(&mut self, ids: &[String]) -> Vec<String> {
        let now = self.clock.tick();
        let mut done = Vec::new();
        for id in ids {
            let update_id = self.clock.update_id();
            if let Some(a) = self.assets.get_mut(id) {
                if a.deleted_at.is_some() {
                    a.deleted_at = None;
                    a.updated_at = now;
                    a.update_id = update_id;
                    done.push(id.clone());
                }
            }
        }
        done
    }

    /// Removes assets for good and records them for `AssetDeleteV1`. Returns the removed
    /// assets' (id, owner) pairs.
    pub fn hard_delete(&mut self, ids: &[String]) -> Vec<(String, String)> {
        let mut done = Vec::new();
        let mut queue: Vec<String> = ids.to_vec();
        let mut i = 0;
        while i < queue.len() {
            let id = queue[i].clone();
            i += 1;
            if let Some(a) = self.assets.remove(&id) {
                self.leave_stack(&a);
                // A photo's Live Photo video goes with it unless another photo still uses it
                // (Immich's `handleAssetDeletion`); a deleted video unlinks its photos.
                if let Some(video) = &a.live_photo_video_id {
                    let used = self
                        .assets
                        .values()
                        .any(|o| o.live_photo_video_id.as_ref() == Some(video));
                    if !used && !queue.contains(video) {
                        queue.push(video.clone());
                    }
                }
                for other in self.assets.values_mut() {
                    if other.live_photo_video_id.as_deref() == Some(id.as_str()) {
                        other.live_photo_video_id = None;
                    }
                }
                self.by_checksum.remove(&(a.owner_id.clone(), a.checksum));
                for album in &mut self.albums {
                    album.asset_ids.retain(|x| *x != id);
                    if album.thumbnail.as_deref() == Some(id.as_str()) {
                        album.thumbnail = album.asset_ids.first().cloned();
                    }
                }
                let update_id = self.clock.update_id();
                self.deleted.push(DeletedAsset {
                    asset_id: a.id.clone(),
                    owner_id: a.owner_id.clone(),
                    update_id,
                });
                done.push((a.id, a.owner_id));
            }
        }
        done
    }

    /// Takes a hard-deleted asset out of its stack: a stack left with fewer than two members is
    /// dissolved, a deleted primary hands over to the next member (`handleAssetDeletion`).
    fn leave_stack(&mut self, gone: &Asset) {
        let Some(stack_id) = gone.stack_id.clone() else {
            return;
        };
        let remaining: Vec<String> = self
            .stack_members(&stack_id)
            .into_iter()
            .map(|a| a.id.clone())
            .collect();
        if remaining.len() < 2 {
            self.dissolve_stack(&stack_id);
        } else if let Some(stack) = self.stacks.iter_mut().find(|s| s.id == stack_id) {
            if stack.primary_asset_id == gone.id {
                stack.primary_asset_id = remaining[0].clone();
            }
        }
    }

    /// Deletes a stack; its members' `stackId` becomes null (the foreign key's `SET NULL`).
    pub fn dissolve_stack(&mut self, stack_id: &str) {
        self.stacks.retain(|s| s.id != stack_id);
        let now = self.clock.tick();
        let ids: Vec<String> = self
            .assets
            .values()
            .filter(|a| a.stack_id.as_deref() == Some(stack_id))
            .map(|a| a.id.clone())
            .collect();
        for id in ids {
            let update_id = self.clock.update_id();
            if let Some(a) = self.assets.get_mut(&id) {
                a.stack_id = None;
                a.updated_at = now;
                a.update_id = update_id;
            }
        }
    }

    /// Sends a socket.io event to every connected socket of `user_id`. A socket whose queue is
    /// full misses the event, which is what a slow real client would see as well.
    pub fn emit(&mut self, user_id: &str, event: &str, payload: Value) {
        self.emit_frame(user_id, Value::Array(vec![Value::from(event), payload]));
    }

    /// An event without a payload (`42["on_asset_stack_update"]`).
    pub fn emit_bare(&mut self, user_id: &str, event: &str) {
        self.emit_frame(user_id, Value::Array(vec![Value::from(event)]));
    }

    fn emit_frame(&mut self, user_id: &str, array: Value) {
        let frame = format!("42{array}");
        for entry in self.sockets.values() {
            if entry.user_id.as_deref() == Some(user_id) {
                let _ = entry.tx.try_send(SocketCmd::Send(frame.clone()));
            }
        }
    }
}
