//! # immish-testserver: an in-memory, Immich-compatible server
//!
//! The peer every immish-sync test, benchmark and demo runs against. It follows
//! `docs/SERVER-API.md` (the server contract), quirks included, keeps everything in memory,
//! and adds fault switches and counters that tests assert on. It is a faithful peer, not a
//! stub: where it and docs/SERVER-API.md disagree, the document wins and this crate has a bug.
//!
//! ## Three ways to use it
//!
//! * **In-process** from tests: [`TestServer::start`] (or [`TestServer::builder`]) binds
//!   `127.0.0.1:0` before spawning anything, so the server is usable as soon as the call
//!   returns; no sleeps. Dropping the [`TestServer`] shuts it down (every connection and
//!   socket included). It derefs to a [`ServerHandle`], which can be cloned into tasks.
//! * **Standalone**: `cargo run -p immish-testserver -- --port 3283 [--dialect
//!   immich|immich-next|seed] [--host 127.0.0.1] [--keep-bytes]` prints the URL, the seeded
//!   user (`admin@example.com` / `admin-password`) and an API key with every permission.
//! * **Remote control** of the standalone server through `/__admin/` (JSON, no auth, never
//!   counted, never faulted, never called by the daemon): `GET /__admin/info`,
//!   `POST|DELETE /__admin/fault`, `GET|DELETE /__admin/counters`, `GET /__admin/assets
//!   [?userId=]`, `GET /__admin/uploads`, `GET|POST /__admin/users`, `POST /__admin/api-keys`,
//!   `POST /__admin/partners`, `POST /__admin/sync-reset`, and
//!   `POST /__admin/actions/{upload,insert-many,trash,restore,delete,update,backdate}`. Fault bodies
//!   are tagged by `kind`, e.g. `{"kind":"fail_next","route":"POST /assets","times":1,
//!   "status":413,"body":"<html>…","contentType":"text/html","retryAfter":"5"}`; the kinds
//!   are `fail_next`, `drop_after_bytes {route, bytes, times}`, `delay {route, ms}`,
//!   `slow_body {bytesPerSec}`, `stall_after_store {times}`, `corrupt_uploads {on}`,
//!   `corrupt_downloads {on}`,
//!   `unauthorized {on}`, `storage_full {on}`, `reject_websockets {on}`, `offline {on}`,
//!   `close_websockets`, `quota {userId?, bytes|null}`, `huge_reply {route, bytes, times}`,
//!   `trickle_reply {route, bytesPerSec, times}`, `non_uuid_ids {on}`, `duplicate_rows {on}`,
//!   `upgrade_to {major, minor, patch}`, `restart_as {dialect}` and `clear`.
//!
//! ## Dialects ([`Dialect`])
//!
//! * `immich` (default): v2.7.5. Everything under `/api`; `GET /.well-known/immich` gives
//!   `{"api":{"endpoint":"/api"}}`. Any other GET outside `/api` answers the web app's HTML
//!   with **200** (check you got JSON); unknown `/api` routes and wrong methods answer a Nest
//!   404 JSON (`Cannot GET /api/...`), so `GET /api/assets` is a 404. Reports version 2.7.5.
//!   Has the legacy `POST /sync/full-sync` and `/sync/delta-sync` (`deleted` always empty).
//! * `immich-next`: the next major (build `9263e2f2e`; docs/SERVER-API.md#1-dialects), which
//!   **also reports 2.7.5** (`/server/version`, `/server/about`, the socket's
//!   `on_server_version`): a client must tell it apart by behaviour. `deviceAssetId` and
//!   `deviceId` are ignored (not required, not stored, not returned); dates must be full ISO
//!   date-times ending in `Z`, and validation errors are zod-style
//!   (`["[fileCreatedAt] Invalid input: expected ISO 8601 datetime string, received
//!   string"]`); no legacy sync, no `/server/theme`; albums have no `ownerId`, `owner` or
//!   `assets` (the owner is the `albumUsers` entry with role `owner`); `.mpo` is a supported
//!   image type. `/server/about` says `sourceRef: "main"`.
//! * `seed`: the seed reference taken literally. No `/api` prefix and no
//!   `/.well-known/immich` (404, like every unknown route: no HTML fallback); the upload
//!   answer is `{id, duplicate: bool}` (201 / 200) and the `x-immich-checksum` header is
//!   ignored; `isArchived`/`isVisible` upload fields are honoured; `GET /assets?updatedAfter=
//!   &updatedBefore=[&skip=&take=]` lists the caller's assets (trashed included, bounds
//!   inclusive on `updatedAt`); `GET /server/info` exists, `/server/media-types` does not
//!   (404: clients must use their built-in list); `/server/features` has `clipEncode`;
//!   logout answers 204; no `/sync/*` routes. The socket lives at `/socket.io/`. Version
//!   1.105.1. Error bodies have no `correlationId`.
//!
//! ## Endpoints (Immich dialects, under `/api`)
//!
//! Auth: `x-api-key` (or `?apiKey=`), or a session token from `POST /auth/login` (201, an
//! opaque token; also set as cookies) sent as `Authorization: Bearer`, `x-immich-user-token`,
//! `x-immich-session-token`, `?sessionKey=` or the `immich_access_token` cookie. The first
//! credential found decides: a Bearer API key is 401 `Invalid user token`, a bad key 401
//! `Invalid API key`, none 401 `Authentication required`. API keys need the route's
//! permission (docs/SERVER-API.md#permissions; `all` where the route names none), else 403
//! `Missing required permission: <perm>`. Routes: `POST /auth/login`, `/auth/validateToken`,
//! `/auth/logout` (200), `GET /auth/status`, `GET /api-keys/me` (403 with a session),
//! `GET /users/me`,
//! `GET /server/{ping,version,version-history,about,features,config,storage,media-types}`,
//! `POST /assets` (multipart), `POST /assets/bulk-upload-check`, `GET /assets/statistics`,
//! `GET|PUT /assets/:id`, `GET /assets/:id/original` (only with `keep_bytes`),
//! `DELETE /assets {ids, force}` (204), `POST /trash/restore/assets` (`{count}`: the number
//! of ids sent, restored or not), `GET|POST /albums`, `GET|PATCH|DELETE /albums/:id`,
//! `PUT|DELETE /albums/:id/assets`, `POST /search/metadata`, `GET|POST|DELETE /stacks`,
//! `GET|PUT|DELETE /stacks/:id`, `DELETE /stacks/:id/assets/:assetId`, `GET|POST /api-keys`
//! (a key may only grant what its creator has), `DELETE /api-keys/:id`, `GET|POST
//! /admin/users` (admins only: 403 `Forbidden`; new users are not onboarded),
//! `POST /sync/stream`, `GET|POST|DELETE /sync/ack`, and the socket. `/server/about` has
//! `sourceRef`, `sourceCommit` and the tool versions (`ffmpeg`, `libvips`, `exiftool`, ...).
//! Errors are `{message, error, statusCode, correlationId}`; `x-immich-cid` is echoed.
//! "Not found or not yours" is 400 `Not found or no <perm> access`, as in Immich.
//!
//! ## Behaviour worth knowing
//!
//! * **Uploads** check auth, then `x-immich-checksum` (hex or base64 SHA-1): on a match they
//!   answer 200 `{"status":"duplicate","id"}` without reading the body (the connection is
//!   then closed, so a client still writing may see a reset). Otherwise the multipart body is
//!   streamed: the SHA-1 is computed while receiving and the bytes are only kept with
//!   [`Builder::keep_bytes`]. The file type is checked from `filename` if that field came
//!   *before* the file part, else from the part's file name (400 `Unsupported file type
//!   <name>`); raw UTF-8 in `Content-Disposition` is kept as `originalFileName`. Then: 400
//!   `Field(s) assetData should not be empty`, 400 validation messages for
//!   `deviceAssetId`/`deviceId`/`fileCreatedAt`/`fileModifiedAt` (v2.7.5: an unparsable date
//!   is the single string `fileCreatedAt must be a date string`; a missing one gives `…
//!   should not be empty` and `… must be a Date instance`), `isFavorite` exactly `true` or
//!   `false`, `livePhotoVideoId` a UUID (`["livePhotoVideoId must be a UUID"]`), 507 when
//!   storage is full, 400 `Quota has been exceeded!`, the Live Photo link (400 `Live photo
//!   video not found` / `must be a video` / `does not belong to the user`; a `timeline` video
//!   becomes `hidden` and `on_asset_hidden` fires, even when the photo then turns out to be a
//!   duplicate), 200 duplicate (owner + checksum, trashed included) or 201 created. A form's
//!   offset is lost at once (`localDateTime` starts as the UTC instant). Every upload that
//!   reaches the handler is recorded: [`ServerHandle::uploads`], `GET /__admin/uploads`.
//! * **The metadata job** ([`Builder::metadata_delay`], default 50 ms after the 201): reads
//!   EXIF (`kamadak-exif`; the daemon uses another crate) from the file's first 512 KiB and an
//!   XMP sidecar (`sidecarData`). `DateTimeOriginal` (else `DateTimeDigitized`) with
//!   `OffsetTimeOriginal` and sub-seconds, or the sidecar's `exif:DateTimeOriginal` /
//!   `xmp:CreateDate` (which win), replaces `fileCreatedAt` and `exifInfo.dateTimeOriginal`
//!   (the instant) and `localDateTime` (the wall time), and sets `timeZone` (`UTC+2`).
//!   Without a date, the earlier of `fileCreatedAt` and `fileModifiedAt` becomes all three.
//!   It fills `width`/`height` (frame size, swapped for orientations 5 to 8),
//!   `exifImageWidth`/`Height`, make, model, lens, orientation, exposure, and `description`
//!   (EXIF `ImageDescription`, else the sidecar's `dc:description`). The write bumps
//!   `updatedAt` and the sync cursors. Until it has run `exifInfo.dateTimeOriginal` is null.
//!   [`ServerHandle::wait_for_metadata`] waits for it; [`ServerHandle::insert`] and
//!   [`ServerHandle::upload_as`] run it at once. Not in the seed dialect.
//! * **Upload events** come at [`Builder::upload_event_delay`] (default 100 ms), never before
//!   the metadata job: `on_upload_success` then `AssetUploadReadyV1 {asset, exif}`, for
//!   `timeline`/`archive` assets only, so a Live Photo video hidden meanwhile gets neither.
//! * **Live Photos**: `livePhotoVideoId` on upload or `PUT /assets/:id` (`null` unlinks: the
//!   video takes the photo's visibility again and gets its `on_upload_success`). A hidden
//!   video is out of the default search and of `/assets/statistics` (which counts timeline
//!   and archive unless asked for a visibility). Deleting the photo for good deletes its
//!   video unless another photo uses it.
//! * **Stacks**: `POST /stacks {assetIds}` (≥ 2, all the caller's; the first is the primary)
//!   answers 201 `{id, primaryAssetId, assets}` (primary first); a stack whose primary is
//!   listed is dissolved into the new one. Assets show `stack {id, primaryAssetId,
//!   assetCount}` in `GET /assets/:id` (and in search with `withStacked`), `stackId` in the
//!   sync stream. Every change emits `on_asset_stack_update` (no payload); a hard delete
//!   promotes a new primary or dissolves a stack left with one member.
//! * **Bulk check** with an empty `assets` list: 500 `Failed to check bulk upload` in both
//!   Immich dialects (the real SQL is `IN ()`); counted by [`ServerHandle::empty_bulk_checks`].
//! * **Search** (`POST /search/metadata`): `updatedAfter`/`updatedBefore` inclusive on
//!   `updatedAt`; trashed excluded unless `withDeleted`; `visibility` defaults to `timeline`,
//!   `locked` is 401 `Elevated permission is required`; `size` 1..=1000 (default 250), `page`
//!   ≥ 1 (numeric strings such as `"2"` are numbers); ordered by `fileCreatedAt` (then id)
//!   `desc` by default; `nextPage` is a string or
//!   null; `total` and `count` are the page's length (as in Immich); partner assets (partners
//!   sharing with the caller `inTimeline`) are mixed in. Filters: `checksum`,
//!   `originalFileName` (case-insensitive substring), `id`, `deviceId`, `deviceAssetId`,
//!   `type`, `isFavorite`, `albumIds`, `taken*`, `created*`, `trashed*`, `withExif`.
//! * **Time**: `updatedAt` comes from a clock that never repeats a millisecond, and is bumped
//!   by every change (favourite, visibility, trash, restore, description, date). Sync cursors
//!   (`updateId`) are UUIDv7-shaped and strictly increasing.
//! * **Sync stream** (sessions only; an API key gets 403 `Sync endpoints cannot be used with
//!   API keys`): JSON lines (`application/jsonlines+json`); for `AssetsV1`, `AssetDeleteV1`
//!   rows for hard deletes after the `AssetDeleteV1` checkpoint, then `AssetV1` rows (all
//!   visibilities, trash as `deletedAt`) after the `AssetV1` checkpoint, by `updateId`; also
//!   `AuthUsersV1` and `AssetExifsV1`; always ending with `SyncCompleteV1`. Acks
//!   (`<Type>|<updateId>`) set one checkpoint per type per session.
//!   [`ServerHandle::force_sync_reset`] makes the next stream a lone `SyncResetV1`.
//! * **Socket** at `{api}/socket.io/?EIO=4&transport=websocket`: see the `socket` module. A
//!   failed auth is `42["error","unauthorized"]` then `41`, and the WebSocket stays open.
//!   Events go to every socket of the asset's owner: `on_server_version` (on connect; the
//!   whole `SemVer` object: `raw`, `version`, `major`, ...), `on_upload_success`,
//!   `AssetUploadReadyV1`, `on_asset_hidden` (the video's id), `on_asset_stack_update`,
//!   `on_asset_trash` (ids), `on_asset_restore` (ids), `on_asset_delete` (one id per event),
//!   `on_asset_update` (description or date changes only).
//!
//! ## Faults and counters
//!
//! Routes are named by a *route key*: method and path without `/api`, UUID segments as
//! `:id`, no trailing slash: `"POST /assets"`, `"POST /assets/bulk-upload-check"`,
//! `"GET /assets/:id"`, `"GET /server/ping"`, `"GET /socket.io"`. Non-API paths of the Immich
//! dialects get a ` (web)` suffix (`"GET /server/ping (web)"`). Fault switches, all on
//! [`ServerHandle`] (and `/__admin/fault`); [`ServerHandle::clear_faults`] turns them off:
//!
//! * `fail_next(route, n, status, body, content_type)` / `fail_with(route, n, Failure)`: the
//!   next `n` requests get a canned reply (e.g. [`Failure::nginx_413`], optionally with
//!   `Retry-After`) before auth and before the body is read, like a proxy; the body is
//!   drained in the background so the client reads the reply rather than a reset.
//! * `drop_after_bytes(route, n, times)`: read `n` body bytes, then close the TCP connection
//!   with no HTTP reply at all (counted as status 0). A body no longer than `n` is cut
//!   short of its last 256 bytes, so the request never completes.
//! * `cut_downloads(n, times)`: the next `times` replies of `GET /assets/:id/original` send
//!   their headers and `n` body bytes, then the connection is closed (counted by
//!   [`ServerHandle::original_bytes_served`]). Originals honour `Range`/`If-Range` as
//!   Express's `send` does: 206 with `Content-Range`, 416 past the end, a weak `ETag`.
//! * `delay(route, d)`: wait `d` before handling every request on the route.
//! * `slow_body(bytes_per_sec)`: read upload bodies at that rate (0 = off).
//! * `stall_after_store(times)`: store the next uploads, then never answer (the "reply lost"
//!   case); the client's timeout fires while the asset exists.
//! * `corrupt_uploads(on)`: store checksum and size of the body minus its last byte.
//! * `corrupt_downloads(on)`: `GET /assets/:id/original` serves the stored bytes with the
//!   middle one flipped (the stored checksum no longer matches what arrives).
//! * `unauthorized(on)`: every authenticated request (and socket) gets 401.
//! * `storage_full(on)`: uploads answer 507 after the body; `set_quota(user, bytes)`: 400
//!   `Quota has been exceeded!` when the upload would go over.
//! * `close_websockets()`, `reject_websockets(on)` (503 on the upgrade).
//! * Hostile answers (`hostile` module): `huge_reply(route, bytes, times)` (a JSON body of
//!   that size, generated as it is sent), `trickle_reply(route, bytes_per_sec, times)`,
//!   `non_uuid_ids(on)`, `duplicate_rows(on)`, `upgrade_to(major, minor, patch)` (a restart
//!   in place that reports another version; `clear_faults` undoes it), `restart_as(dialect)`
//!   (a restart in place into another dialect: another API root and routes, the same state;
//!   every connection and socket dropped); canned [`Failure::malformed_json`] and
//!   [`Failure::proxy_login_page`] (an HTML 200) for `fail_with`.
//! * `offline(on)`: the server is down (an upgrade, a restart): turning it on drops every
//!   open connection and socket; while on, each request is counted (status 0) and its
//!   connection closed unanswered. State is kept, as a restarted Immich keeps its database.
//!
//! Counters: [`ServerHandle::requests`] and [`ServerHandle::requests_with_status`] per route
//! key, [`ServerHandle::upload_bodies`] (uploads whose file part was read at all),
//! [`ServerHandle::upload_body_bytes`] (raw body bytes received on `POST /assets`),
//! [`ServerHandle::upload_file_bytes`], [`ServerHandle::empty_bulk_checks`],
//! [`ServerHandle::uploads`] (each upload's form parts in order: text values, file names and
//! sizes, never bytes; its status and asset), [`ServerHandle::asset_count`],
//! [`ServerHandle::assets`] (public [`AssetView`]s), [`ServerHandle::websocket_count`];
//! [`ServerHandle::reset_counters`] zeroes them and forgets the upload records. Server-side actions as another client would
//! do them, bumping `updatedAt` and emitting their events: [`ServerHandle::upload_as`],
//! [`ServerHandle::insert`], [`ServerHandle::trash`], [`ServerHandle::restore`],
//! [`ServerHandle::delete_permanently`], [`ServerHandle::update`]; and
//! [`ServerHandle::insert_many`] to seed thousands of assets at once (no events). Users:
//! [`ServerHandle::add_user`], [`ServerHandle::create_api_key`],
//! [`ServerHandle::add_partner`], [`ServerHandle::login`],
//! [`ServerHandle::force_sync_reset`] (or the API: `POST /admin/users`, `POST /api-keys`).
//! Handle methods are synchronous (a std mutex, never held across an await). Test media:
//! [`fixtures`] (a JPEG with chosen EXIF tags, laid out by hand; an XMP sidecar; an MP4).
//!
//! ## Not implemented
//!
//! Shared links (any share credential is 401), album sharing, OAuth, PIN elevation (so
//! `locked` search is always 401), thumbnails, thumbhash and video playback, GPS and video
//! probing in the metadata job, Live Photo matching by content identifier (only explicit
//! `livePhotoVideoId` links), the `metadata` upload field, the deprecated
//! `PUT /assets/:id/original` (`replaced`), and sync types other than `AuthUsersV1`,
//! `AssetsV1` and `AssetExifsV1` (accepted, but they produce no rows; `StacksV1` included).

mod accounts;
mod admin;
mod albums;
mod assets;
mod auth;
mod dto;
mod error;
mod faults;
pub mod fixtures;
mod handle;
mod hostile;
mod info;
mod metadata;
mod net;
mod search;
mod socket;
mod stacks;
mod state;
mod sync;
mod tls;

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use faults::Failure;
pub use handle::{AlbumView, AssetUpdate, AssetView, NewAsset, ServerHandle};
pub use state::{FormPart, UploadRecord, Visibility};

use state::{App, Config, Shared, State};

/// Which server the test server imitates. See the crate docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// Immich v2.7.5.
    #[default]
    Immich,
    /// The next Immich major (docs/SERVER-API.md#1-dialects).
    ImmichNext,
    /// The seed API reference, taken literally.
    Seed,
}

impl Dialect {
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Immich => "immich",
            Dialect::ImmichNext => "immich-next",
            Dialect::Seed => "seed",
        }
    }
}

impl std::str::FromStr for Dialect {
    type Err = String;

    fn from_str(s: &str) -> Result<Dialect, String> {
        match s {
            "immich" => Ok(Dialect::Immich),
            "immich-next" => Ok(Dialect::ImmichNext),
            "seed" => Ok(Dialect::Seed),
            other => Err(format!(
                "unknown dialect {other:?}: use immich, immich-next or seed"
            )),
        }
    }
}

impl std::fmt::Display for Dialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// JSON bodies may be this large, like Immich's body-parser limit.
const JSON_LIMIT: usize = 10 * 1024 * 1024;

/// Configures and starts a [`TestServer`].
#[derive(Clone, Debug)]
pub struct Builder {
    dialect: Dialect,
    bind: SocketAddr,
    keep_bytes: bool,
    ping_interval: Duration,
    ping_timeout: Duration,
    upload_event_delay: Duration,
    metadata_delay: Duration,
    admin_email: String,
    admin_password: String,
    admin_api_key: Option<String>,
    tls: bool,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            dialect: Dialect::Immich,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            keep_bytes: false,
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            upload_event_delay: Duration::from_millis(100),
            metadata_delay: Duration::from_millis(50),
            admin_email: "admin@example.com".to_string(),
            admin_password: "admin-password".to_string(),
            admin_api_key: None,
            tls: false,
        }
    }
}

impl Builder {
    pub fn dialect(mut self, dialect: Dialect) -> Builder {
        self.dialect = dialect;
        self
    }

    /// Address to bind; default `127.0.0.1:0` (a free port).
    pub fn bind(mut self, addr: SocketAddr) -> Builder {
        self.bind = addr;
        self
    }

    /// Keep uploaded bytes (visible in [`AssetView::data`] and `GET /assets/:id/original`).
    /// Off by default: only the checksum and the length are kept.
    pub fn keep_bytes(mut self, on: bool) -> Builder {
        self.keep_bytes = on;
        self
    }

    /// Engine.IO ping interval (default 25 s, as socket.io's default).
    pub fn ping_interval(mut self, d: Duration) -> Builder {
        self.ping_interval = d;
        self
    }

    /// How long the server waits for a pong before closing the socket (default 20 s).
    pub fn ping_timeout(mut self, d: Duration) -> Builder {
        self.ping_timeout = d;
        self
    }

    /// How long after a 201 `on_upload_success` and `AssetUploadReadyV1` are emitted (default
    /// 100 ms), or right after the metadata job when that comes later.
    pub fn upload_event_delay(mut self, d: Duration) -> Builder {
        self.upload_event_delay = d;
        self
    }

    /// How long after a 201 the metadata job replaces the form's dates with the file's (default
    /// 50 ms; the real job takes a few seconds). The upload events come after it in any case.
    pub fn metadata_delay(mut self, d: Duration) -> Builder {
        self.metadata_delay = d;
        self
    }

    /// Use this secret for the admin's all-permission API key instead of a random one.
    pub fn admin_api_key(mut self, key: impl Into<String>) -> Builder {
        self.admin_api_key = Some(key.into());
        self
    }

    /// Serve HTTPS (and `wss`) with a certificate from a CA made at start: see the `tls`
    /// module and [`ServerHandle::tls_ca_pem`].
    pub fn tls(mut self, on: bool) -> Builder {
        self.tls = on;
        self
    }

    /// Binds, seeds the admin user and its key, and spawns the server on the current tokio
    /// runtime. The server accepts connections as soon as this returns.
    pub async fn try_start(self) -> std::io::Result<TestServer> {
        let listener = TcpListener::bind(self.bind).await?;
        let addr = listener.local_addr()?;
        let mut state = State::default();
        let admin_id = state.add_user(&self.admin_email, &self.admin_password, "Admin", true);
        if let Some(admin) = state.user_mut(&admin_id) {
            admin.is_onboarded = true;
        }
        let admin_key = match self.admin_api_key {
            Some(secret) => {
                state.create_api_key(&admin_id, "immish-testserver", &["all"]);
                if let Some(k) = state.api_keys.last_mut() {
                    k.secret = secret.clone();
                }
                secret
            }
            None => state.create_api_key(&admin_id, "immish-testserver", &["all"]),
        };
        let tls = if self.tls {
            Some(tls::make().map_err(std::io::Error::other)?)
        } else {
            None
        };
        let cfg = Config {
            tls_ca_pem: tls.as_ref().map(|t| t.ca_pem.clone()),
            dialect: self.dialect,
            keep_bytes: self.keep_bytes,
            ping_interval: self.ping_interval,
            ping_timeout: self.ping_timeout,
            upload_event_delay: self.upload_event_delay,
            metadata_delay: self.metadata_delay,
            admin_email: self.admin_email,
            admin_password: self.admin_password,
        };
        let shutdown = CancellationToken::new();
        let app: App = Arc::new(Shared::new(
            state,
            cfg,
            shutdown.clone(),
            tokio::runtime::Handle::current(),
            addr,
            admin_id,
            admin_key,
        ));
        let routers = Routers {
            immich: router(app.clone(), Dialect::Immich),
            next: router(app.clone(), Dialect::ImmichNext),
            seed: router(app.clone(), Dialect::Seed),
        };
        let acceptor = tls.map(|t| t.acceptor);
        tokio::spawn(net::serve(
            listener,
            routers,
            shutdown,
            app.clone(),
            acceptor,
        ));
        tracing::debug!(%addr, dialect = %self.dialect, "test server started");
        Ok(TestServer {
            handle: ServerHandle { app },
        })
    }

    /// [`Builder::try_start`], panicking if the address cannot be bound (fine in tests).
    pub async fn start(self) -> TestServer {
        let bind = self.bind;
        match self.try_start().await {
            Ok(server) => server,
            Err(e) => panic!("immish-testserver: cannot bind {bind}: {e}"),
        }
    }
}

/// A running server. Dropping it stops the server.
pub struct TestServer {
    handle: ServerHandle,
}

impl TestServer {
    /// Starts a server of this dialect on a free loopback port, with the seeded admin.
    pub async fn start(dialect: Dialect) -> TestServer {
        TestServer::builder().dialect(dialect).start().await
    }

    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A cloneable handle that does not own the server.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Resolves when the server has been asked to stop (never, unless it is dropped
    /// elsewhere); for binaries that want to wait on it.
    pub async fn stopped(&self) {
        self.handle.app.shutdown.cancelled().await;
    }
}

impl Deref for TestServer {
    type Target = ServerHandle;

    fn deref(&self) -> &ServerHandle {
        &self.handle
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.app.shutdown.cancel();
    }
}

/// The routes of one dialect, relative to the API root.
fn api_routes(dialect: Dialect) -> Router<App> {
    let r = Router::new()
        .route("/auth/login", post(auth::login))
        .route("/auth/validateToken", post(auth::validate_token))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/status", get(auth::status))
        .route("/api-keys/me", get(auth::api_key_me))
        .route(
            "/api-keys",
            get(accounts::list_keys).post(accounts::create_key),
        )
        .route("/api-keys/{id}", delete(accounts::delete_key))
        .route(
            "/admin/users",
            get(accounts::list_users).post(accounts::create_user),
        )
        .route("/users/me", get(auth::users_me))
        .route("/server/ping", get(info::ping))
        .route("/server/version", get(info::server_version))
        .route("/server/version-history", get(info::version_history))
        .route("/server/about", get(info::about))
        .route("/server/features", get(info::features))
        .route("/server/config", get(info::config))
        .route("/server/storage", get(info::storage))
        .route("/assets/bulk-upload-check", post(assets::bulk_upload_check))
        .route("/assets/statistics", get(assets::statistics))
        .route(
            "/assets/{id}",
            get(assets::get_asset).put(assets::update_asset),
        )
        .route("/assets/{id}/original", get(assets::original))
        .route("/trash/restore/assets", post(assets::restore_assets))
        .route("/albums", get(albums::list).post(albums::create))
        .route(
            "/albums/{id}",
            get(albums::get)
                .patch(albums::update)
                .delete(albums::delete),
        )
        .route(
            "/albums/{id}/assets",
            put(albums::add_assets).delete(albums::remove_assets),
        )
        .route("/search/metadata", post(search::metadata))
        .route(
            "/stacks",
            get(stacks::list)
                .post(stacks::create)
                .delete(stacks::delete_many),
        )
        .route(
            "/stacks/{id}",
            get(stacks::get).put(stacks::update).delete(stacks::delete),
        )
        .route(
            "/stacks/{id}/assets/{asset_id}",
            delete(stacks::remove_asset),
        )
        .route("/socket.io/", get(socket::endpoint));
    match dialect {
        Dialect::Seed => r
            .route(
                "/assets",
                get(assets::seed_list)
                    .post(assets::upload)
                    .delete(assets::delete_assets),
            )
            .route("/server/info", get(info::seed_info)),
        Dialect::Immich | Dialect::ImmichNext => {
            let r = r
                .route(
                    "/assets",
                    post(assets::upload).delete(assets::delete_assets),
                )
                .route("/server/media-types", get(info::media_types))
                .route("/sync/stream", post(sync::stream))
                .route(
                    "/sync/ack",
                    get(sync::ack_get)
                        .post(sync::ack_post)
                        .delete(sync::ack_delete),
                );
            if dialect == Dialect::Immich {
                r.route("/sync/full-sync", post(sync::full_sync))
                    .route("/sync/delta-sync", post(sync::delta_sync))
                    .route("/server/theme", get(info::theme))
            } else {
                r
            }
        }
    }
}

/// The routes of every dialect, built once; each request takes those of the dialect served
/// when it arrives.
#[derive(Clone)]
pub(crate) struct Routers {
    immich: Router,
    next: Router,
    seed: Router,
}

impl Routers {
    pub(crate) fn pick(&self, dialect: Dialect) -> Router {
        match dialect {
            Dialect::Immich => self.immich.clone(),
            Dialect::ImmichNext => self.next.clone(),
            Dialect::Seed => self.seed.clone(),
        }
    }
}

fn router(app: App, dialect: Dialect) -> Router {
    let api = api_routes(dialect).method_not_allowed_fallback(info::fallback);
    let root = match dialect {
        Dialect::Seed => api,
        Dialect::Immich | Dialect::ImmichNext => Router::new()
            .nest("/api", api)
            .route("/.well-known/immich", get(info::well_known)),
    };
    root.merge(admin::routes())
        .fallback(info::fallback)
        .method_not_allowed_fallback(info::fallback)
        .layer(DefaultBodyLimit::max(JSON_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            faults::middleware,
        ))
        .with_state(app)
}
