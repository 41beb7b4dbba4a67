//! [`ServerHandle`]: what tests (and the `/__admin/` routes) use to set up users, flip fault
//! switches, read counters and act on the server as another client would.
//!
//! Every method is synchronous: it takes the state lock, does its work and releases it, so a
//! test can call it from anywhere, inside or outside the runtime, without awaiting.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sha1::{Digest, Sha1};

use crate::assets;
use crate::faults::Failure;
use crate::metadata;
use crate::state::{
    b64, fmt_ts, hex, parse_date, App, Asset, AssetInput, ParsedDate, Partner, SocketCmd,
    UploadRecord, Visibility,
};
use crate::Dialect;

/// A cloneable handle on a running server. Dropping it does not stop the server; dropping the
/// [`crate::TestServer`] does.
#[derive(Clone)]
pub struct ServerHandle {
    pub(crate) app: App,
}

/// A stored asset, as tests see it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AssetView {
    pub id: String,
    pub owner_id: String,
    /// SHA-1 of the stored bytes, lowercase hex.
    pub checksum_hex: String,
    /// The same checksum in base64, as the API reports it.
    pub checksum_base64: String,
    pub size: u64,
    pub original_file_name: String,
    pub device_asset_id: Option<String>,
    pub device_id: Option<String>,
    pub file_created_at: String,
    pub file_modified_at: String,
    /// The wall-clock capture time as if it were UTC (Immich's `localDateTime`).
    pub local_date_time: String,
    pub updated_at: String,
    pub trashed: bool,
    pub visibility: Visibility,
    pub is_favorite: bool,
    /// `IMAGE` or `VIDEO`.
    pub asset_type: String,
    pub description: String,
    /// On a Live Photo's photo: its video.
    pub live_photo_video_id: Option<String>,
    pub stack_id: Option<String>,
    /// Display size, filled by the metadata job.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// The metadata job has run (see [`ServerHandle::wait_for_metadata`]).
    pub metadata_extracted: bool,
    /// The uploaded bytes, only with `Builder::keep_bytes(true)`.
    #[serde(skip)]
    pub data: Option<Vec<u8>>,
}

impl AssetView {
    fn of(a: &Asset) -> AssetView {
        AssetView {
            id: a.id.clone(),
            owner_id: a.owner_id.clone(),
            checksum_hex: hex(&a.checksum),
            checksum_base64: b64(&a.checksum),
            size: a.size,
            original_file_name: a.original_file_name.clone(),
            device_asset_id: a.device_asset_id.clone(),
            device_id: a.device_id.clone(),
            file_created_at: fmt_ts(a.file_created_at),
            file_modified_at: fmt_ts(a.file_modified_at),
            local_date_time: fmt_ts(a.local_date_time),
            updated_at: fmt_ts(a.updated_at),
            trashed: a.deleted_at.is_some(),
            visibility: a.visibility,
            is_favorite: a.is_favorite,
            asset_type: a.kind.as_str().to_string(),
            description: a.description.clone(),
            live_photo_video_id: a.live_photo_video_id.clone(),
            stack_id: a.stack_id.clone(),
            width: a.width,
            height: a.height,
            metadata_extracted: a.metadata_extracted,
            data: a.data.clone(),
        }
    }
}

/// An album, as tests see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlbumView {
    pub id: String,
    pub name: String,
    pub created_at: String,
    /// In the order they were added.
    pub asset_ids: Vec<String>,
}

/// An asset to create through the handle, as if another client had uploaded it.
#[derive(Clone, Debug)]
pub struct NewAsset {
    pub file_name: String,
    pub data: Vec<u8>,
    pub visibility: Visibility,
    /// ISO-8601; default: now.
    pub file_created_at: Option<String>,
    pub is_favorite: bool,
    pub device_asset_id: Option<String>,
    pub device_id: Option<String>,
    /// An XMP sidecar uploaded with it.
    pub sidecar: Option<Vec<u8>>,
    /// Link to this (existing, own) video as a Live Photo; ignored when the link would be
    /// refused.
    pub live_photo_video_id: Option<String>,
}

impl NewAsset {
    pub fn new(file_name: impl Into<String>, data: impl Into<Vec<u8>>) -> NewAsset {
        NewAsset {
            file_name: file_name.into(),
            data: data.into(),
            visibility: Visibility::Timeline,
            file_created_at: None,
            is_favorite: false,
            device_asset_id: None,
            device_id: None,
            sidecar: None,
            live_photo_video_id: None,
        }
    }

    pub fn sidecar(mut self, xmp: impl Into<Vec<u8>>) -> NewAsset {
        self.sidecar = Some(xmp.into());
        self
    }

    pub fn live_photo_video(mut self, video_id: impl Into<String>) -> NewAsset {
        self.live_photo_video_id = Some(video_id.into());
        self
    }

    pub fn visibility(mut self, v: Visibility) -> NewAsset {
        self.visibility = v;
        self
    }

    pub fn file_created_at(mut self, date: impl Into<String>) -> NewAsset {
        self.file_created_at = Some(date.into());
        self
    }

    pub fn favorite(mut self, on: bool) -> NewAsset {
        self.is_favorite = on;
        self
    }

    pub fn device(
        mut self,
        device_id: impl Into<String>,
        device_asset_id: impl Into<String>,
    ) -> NewAsset {
        self.device_id = Some(device_id.into());
        self.device_asset_id = Some(device_asset_id.into());
        self
    }
}

/// A change made through [`ServerHandle::update`]; `None` leaves a field alone.
#[derive(Clone, Debug, Default)]
pub struct AssetUpdate {
    pub is_favorite: Option<bool>,
    pub visibility: Option<Visibility>,
    pub description: Option<String>,
    /// ISO-8601.
    pub file_created_at: Option<String>,
}

fn id_list<I>(ids: I) -> Vec<String>
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    ids.into_iter().map(|s| s.as_ref().to_string()).collect()
}

impl ServerHandle {
    // --- addresses and the seeded admin ----------------------------------------------------

    pub fn addr(&self) -> SocketAddr {
        self.app.addr
    }

    /// `http://127.0.0.1:PORT` (`https://` in the HTTPS mode), without the `/api` prefix.
    pub fn base_url(&self) -> String {
        let scheme = if self.app.cfg.tls_ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.app.addr)
    }

    /// The PEM of the CA that signed the HTTPS mode's certificate (what a user puts in
    /// `server.ca_file`); `None` for plain http.
    pub fn tls_ca_pem(&self) -> Option<String> {
        self.app.cfg.tls_ca_pem.clone()
    }

    /// Where the API lives in this dialect: `{base}/api`, or `{base}` for the seed.
    pub fn api_url(&self) -> String {
        match self.app.dialect() {
            Dialect::Seed => self.base_url(),
            _ => format!("{}/api", self.base_url()),
        }
    }

    /// The WebSocket URL of the socket.io endpoint.
    pub fn socket_url(&self) -> String {
        let api = self.api_url().replacen("http", "ws", 1);
        format!("{api}/socket.io/?EIO=4&transport=websocket")
    }

    pub fn dialect(&self) -> Dialect {
        self.app.dialect()
    }

    /// The seeded admin's API key, with the `all` permission.
    pub fn api_key(&self) -> String {
        self.app.admin_key.clone()
    }

    pub fn admin_email(&self) -> &str {
        &self.app.cfg.admin_email
    }

    pub fn admin_password(&self) -> &str {
        &self.app.cfg.admin_password
    }

    pub fn admin_id(&self) -> String {
        self.app.admin_id.clone()
    }

    // --- users, keys, sessions, partners ---------------------------------------------------

    /// Adds a (non-admin) user; returns its id.
    pub fn add_user(&self, email: &str, password: &str) -> String {
        let name = email.split('@').next().unwrap_or(email).to_string();
        self.app.lock().add_user(email, password, &name, false)
    }

    /// Creates an API key for a user with exactly these permissions (e.g. `["asset.upload"]`,
    /// or `["all"]`); returns the secret.
    pub fn create_api_key(&self, user_id: &str, permissions: &[&str]) -> String {
        self.app
            .lock()
            .create_api_key(user_id, "test key", permissions)
    }

    /// Deletes the API key with this secret, like `DELETE /api-keys/:id`: requests with it
    /// answer 401 from then on. Returns false for an unknown secret.
    pub fn revoke_api_key(&self, secret: &str) -> bool {
        let mut db = self.app.lock();
        let before = db.api_keys.len();
        db.api_keys.retain(|k| k.secret != secret);
        db.api_keys.len() != before
    }

    /// `sharer_id` shares its library with `shared_with_id`, shown in the timeline: the
    /// sharer's assets then appear in `shared_with_id`'s `/search/metadata` results.
    pub fn add_partner(&self, sharer_id: &str, shared_with_id: &str) {
        self.add_partner_with(sharer_id, shared_with_id, true);
    }

    /// Like [`ServerHandle::add_partner`], choosing `inTimeline`.
    pub fn add_partner_with(&self, sharer_id: &str, shared_with_id: &str, in_timeline: bool) {
        let mut db = self.app.lock();
        db.partners
            .retain(|p| !(p.sharer_id == sharer_id && p.shared_with_id == shared_with_id));
        db.partners.push(Partner {
            sharer_id: sharer_id.to_string(),
            shared_with_id: shared_with_id.to_string(),
            in_timeline,
        });
    }

    /// Logs in like `POST /auth/login`; returns the session token.
    pub fn login(&self, email: &str, password: &str) -> Option<String> {
        let mut db = self.app.lock();
        let email = email.to_lowercase();
        let user_id = db
            .users
            .iter()
            .find(|u| u.email == email && u.password == password)?
            .id
            .clone();
        Some(db.create_session(&user_id))
    }

    /// Every live session token (logins by any client), for tests that look for them where
    /// they must not be.
    pub fn session_tokens(&self) -> Vec<String> {
        self.app
            .lock()
            .sessions
            .iter()
            .map(|s| s.token.clone())
            .collect()
    }

    /// Makes the session's next `/sync/stream` a lone `SyncResetV1`, until it is acked or a
    /// stream is requested with `reset: true`. Returns false for an unknown token.
    pub fn force_sync_reset(&self, session_token: &str) -> bool {
        match self.app.lock().session_mut(session_token) {
            Some(s) => {
                s.pending_reset = true;
                true
            }
            None => false,
        }
    }

    /// Sets (or with `None` clears) a user's storage quota in bytes. Uploads that would go
    /// over it answer 400 `Quota has been exceeded!` after the body is read.
    pub fn set_quota(&self, user_id: &str, bytes: impl Into<Option<u64>>) {
        let mut db = self.app.lock();
        let now = db.clock.tick();
        let update_id = db.clock.update_id();
        if let Some(u) = db.user_mut(user_id) {
            u.quota = bytes.into();
            u.updated_at = now;
            u.update_id = update_id;
        }
    }

    // --- counters --------------------------------------------------------------------------

    /// Requests received on a route key (e.g. `"POST /assets"`), whatever their outcome.
    pub fn requests(&self, route: &str) -> u64 {
        self.app
            .lock()
            .requests
            .get(route)
            .map(|c| c.total)
            .unwrap_or(0)
    }

    /// Requests on a route answered with `status`. Status 0 counts connections dropped
    /// without a reply.
    pub fn requests_with_status(&self, route: &str, status: u16) -> u64 {
        self.app
            .lock()
            .requests
            .get(route)
            .and_then(|c| c.by_status.get(&status).copied())
            .unwrap_or(0)
    }

    /// Every route key seen, with its count per status.
    pub fn request_counts(&self) -> BTreeMap<String, BTreeMap<u16, u64>> {
        self.app
            .lock()
            .requests
            .iter()
            .map(|(k, v)| (k.clone(), v.by_status.clone()))
            .collect()
    }

    /// Upload requests whose `assetData` part was read at all (an early duplicate reply or a
    /// rejected file type does not count).
    pub fn upload_bodies(&self) -> u64 {
        self.app.upload_bodies.load(Ordering::Relaxed)
    }

    /// Raw request-body bytes received on `POST /assets`, multipart framing included.
    pub fn upload_body_bytes(&self) -> u64 {
        self.app.upload_body_bytes.load(Ordering::Relaxed)
    }

    /// Bytes of `assetData` file parts received.
    pub fn upload_file_bytes(&self) -> u64 {
        self.app.upload_file_bytes.load(Ordering::Relaxed)
    }

    /// `POST /assets/bulk-upload-check` requests with an empty `assets` list (the real servers
    /// answer them 500; a client must never send one).
    pub fn empty_bulk_checks(&self) -> u64 {
        self.app.empty_bulk_checks.load(Ordering::Relaxed)
    }

    /// Every `POST /assets` that reached the handler, oldest first: the form parts in the order
    /// they arrived (text values, file names and sizes; never file bytes), the status and the
    /// asset id. What the client *sent*, as opposed to what the server derived.
    pub fn uploads(&self) -> Vec<UploadRecord> {
        self.app.lock().uploads.clone()
    }

    /// Zeroes the request and upload counters and forgets the upload records.
    pub fn reset_counters(&self) {
        self.app.lock().requests.clear();
        self.app.lock().uploads.clear();
        self.app.empty_bulk_checks.store(0, Ordering::Relaxed);
        self.app.upload_bodies.store(0, Ordering::Relaxed);
        self.app.upload_body_bytes.store(0, Ordering::Relaxed);
        self.app.upload_file_bytes.store(0, Ordering::Relaxed);
    }

    /// Assets stored for a user, trashed ones included.
    pub fn asset_count(&self, user_id: &str) -> usize {
        self.app
            .lock()
            .assets
            .values()
            .filter(|a| a.owner_id == user_id)
            .count()
    }

    /// A user's assets (trashed included), oldest first.
    pub fn assets(&self, user_id: &str) -> Vec<AssetView> {
        let db = self.app.lock();
        let mut list: Vec<&Asset> = db
            .assets
            .values()
            .filter(|a| a.owner_id == user_id)
            .collect();
        list.sort_by_key(|a| a.seq);
        list.into_iter().map(AssetView::of).collect()
    }

    /// Every stored asset, oldest first.
    pub fn all_assets(&self) -> Vec<AssetView> {
        let db = self.app.lock();
        let mut list: Vec<&Asset> = db.assets.values().collect();
        list.sort_by_key(|a| a.seq);
        list.into_iter().map(AssetView::of).collect()
    }

    pub fn asset(&self, id: &str) -> Option<AssetView> {
        self.app.lock().assets.get(id).map(AssetView::of)
    }

    /// The albums `user_id` owns, oldest first.
    pub fn albums(&self, user_id: &str) -> Vec<AlbumView> {
        let db = self.app.lock();
        let mut list: Vec<AlbumView> = db
            .albums
            .iter()
            .filter(|a| a.owner_id == user_id)
            .map(|a| AlbumView {
                id: a.id.clone(),
                name: a.name.clone(),
                created_at: fmt_ts(a.created_at),
                asset_ids: a.asset_ids.clone(),
            })
            .collect();
        list.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        list
    }

    /// Creates an album for `user_id` as another client would; returns its id.
    pub fn create_album(&self, user_id: &str, name: &str) -> String {
        let mut db = self.app.lock();
        let now = db.clock.tick();
        let id = crate::state::new_id();
        db.albums.push(crate::state::Album {
            id: id.clone(),
            owner_id: user_id.to_owned(),
            name: name.to_owned(),
            description: String::new(),
            created_at: now,
            updated_at: now,
            asset_ids: Vec::new(),
            thumbnail: None,
        });
        id
    }

    /// Deletes an album as its owner would in the web app (the assets stay).
    pub fn delete_album(&self, id: &str) -> bool {
        let mut db = self.app.lock();
        let before = db.albums.len();
        db.albums.retain(|a| a.id != id);
        db.albums.len() != before
    }

    /// The primary asset of a stack, if the stack exists.
    pub fn stack_primary(&self, stack_id: &str) -> Option<String> {
        let db = self.app.lock();
        db.stacks
            .iter()
            .find(|s| s.id == stack_id)
            .map(|s| s.primary_asset_id.clone())
    }

    /// Waits until the metadata job of an asset has run; false on timeout or when the asset
    /// does not exist.
    pub async fn wait_for_metadata(&self, id: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.asset(id).is_some_and(|a| a.metadata_extracted) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Sockets that joined the namespace and authenticated.
    pub fn websocket_count(&self) -> usize {
        self.app
            .lock()
            .sockets
            .values()
            .filter(|s| s.user_id.is_some())
            .count()
    }

    /// Waits until at least `n` authenticated sockets are connected; false on timeout.
    pub async fn wait_for_websockets(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.websocket_count() >= n {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    // --- faults ----------------------------------------------------------------------------

    /// The next `n` requests on `route` are answered at once with `status` and `body`
    /// (`None`: an Immich-shaped JSON error). A body without a content type is sent as
    /// `text/html`.
    pub fn fail_next(
        &self,
        route: &str,
        n: u32,
        status: u16,
        body: Option<&str>,
        content_type: Option<&str>,
    ) {
        let failure = Failure {
            status,
            body: body.map(str::to_string),
            content_type: content_type.map(str::to_string),
            retry_after: None,
        };
        self.fail_with(route, n, failure);
    }

    /// Like [`ServerHandle::fail_next`] with a full [`Failure`] (e.g. with `Retry-After`).
    pub fn fail_with(&self, route: &str, n: u32, failure: Failure) {
        let mut db = self.app.lock();
        if n == 0 {
            db.faults.fail.remove(route);
        } else {
            db.faults.fail.insert(route.to_string(), (n, failure));
        }
    }

    /// The next `times` requests on `route` have `n_bytes` of their body read, then the TCP
    /// connection is dropped with no reply. When the handler would answer before reading that
    /// far, the reply is dropped instead. When the body (of known length) is not longer than
    /// `n_bytes`, its last 256 bytes are never read, so the request never completes and an
    /// upload is never stored; `0` drops right after the headers.
    pub fn drop_after_bytes(&self, route: &str, n_bytes: u64, times: u32) {
        let mut db = self.app.lock();
        if times == 0 {
            db.faults.drop_after.remove(route);
        } else {
            db.faults
                .drop_after
                .insert(route.to_string(), (times, n_bytes));
        }
    }

    /// Delays every request on `route` by `d` before handling it (nothing of the body is
    /// read meanwhile); `Duration::ZERO` clears.
    pub fn delay(&self, route: &str, d: Duration) {
        let mut db = self.app.lock();
        if d.is_zero() {
            db.faults.delay.remove(route);
        } else {
            db.faults.delay.insert(route.to_string(), d);
        }
    }

    /// Reads upload bodies at about this many bytes per second; 0 turns it off.
    pub fn slow_body(&self, bytes_per_sec: u64) {
        self.app.lock().faults.slow_body = (bytes_per_sec > 0).then_some(bytes_per_sec);
    }

    /// The next `times` successful uploads are stored, then the reply is held until the
    /// client goes away or the server stops (the "reply lost" case).
    pub fn stall_after_store(&self, times: u32) {
        self.app.lock().faults.stall_after_store = times;
    }

    /// Stores uploads without their last byte (checksum and size of the truncated body).
    pub fn corrupt_uploads(&self, on: bool) {
        self.app.lock().faults.corrupt_uploads = on;
    }

    /// Serves originals with their middle byte flipped: same length, bytes other than the
    /// stored checksum's (what a failing disk or a broken proxy cache delivers).
    pub fn corrupt_downloads(&self, on: bool) {
        self.app.lock().faults.corrupt_downloads = on;
    }

    /// The next `times` replies of `GET /assets/:id/original` send their headers (the whole
    /// length) and `n_bytes` of the body, then the TCP connection is closed: a download cut
    /// short, as by a reset or a proxy timeout.
    pub fn cut_downloads(&self, n_bytes: u64, times: u32) {
        self.app.lock().faults.cut_downloads = (times > 0).then_some((times, n_bytes));
    }

    /// Body bytes of originals served so far (`GET /assets/:id/original`, ranges and cut
    /// replies counted by what was sent).
    pub fn original_bytes_served(&self) -> u64 {
        self.app.original_bytes_served.load(Ordering::Relaxed)
    }

    /// Every authenticated request answers 401 while on.
    pub fn unauthorized(&self, on: bool) {
        self.app.lock().faults.unauthorized = on;
    }

    /// Uploads answer 507 (after the body is read) while on.
    pub fn storage_full(&self, on: bool) {
        self.app.lock().faults.storage_full = on;
    }

    /// Closes every open socket (a close frame, then the connection ends).
    pub fn close_websockets(&self) {
        for entry in self.app.lock().sockets.values() {
            let _ = entry.tx.try_send(SocketCmd::Close);
        }
    }

    /// While on, the server is down: every open connection and socket is dropped when it is
    /// turned on, and every request then loses its connection unanswered (counted with
    /// status 0 under its route). Turning it off is the server answering again.
    pub fn offline(&self, on: bool) {
        self.app.lock().faults.offline = on;
        if on {
            self.app.drop_connections();
        }
    }

    /// Refuses socket.io upgrades with 503 while on.
    pub fn reject_websockets(&self, on: bool) {
        self.app.lock().faults.reject_websockets = on;
    }

    /// Turns every fault off (quotas are kept; clear them with `set_quota(user, None)`).
    pub fn clear_faults(&self) {
        self.app.lock().faults = Default::default();
    }

    // --- actions as another client ---------------------------------------------------------

    /// Uploads an asset for `user_id` as another client would (emits `on_upload_success`
    /// shortly after). A duplicate returns the existing id.
    pub fn upload_as(
        &self,
        user_id: &str,
        file_name: &str,
        bytes: impl AsRef<[u8]>,
        visibility: Visibility,
    ) -> String {
        self.insert(
            user_id,
            NewAsset::new(file_name, bytes.as_ref()).visibility(visibility),
        )
    }

    /// Like [`ServerHandle::upload_as`] with more control over the record. The metadata job
    /// has already run when this returns (in the Immich dialects), so the record is final; the
    /// upload events follow after the usual delay.
    pub fn insert(&self, user_id: &str, asset: NewAsset) -> String {
        let checksum: [u8; 20] = Sha1::digest(&asset.data).into();
        let dialect = self.app.dialect();
        let metadata = metadata::extract(&asset.data, asset.sidecar.as_deref());
        let mut db = self.app.lock();
        if let Some(existing) = db.find_by_checksum(user_id, &checksum) {
            return existing.id.clone();
        }
        let live = asset.live_photo_video_id.filter(|video| {
            let linked = assets::link_live_photo(&mut db, user_id, video);
            if let Err(e) = &linked {
                tracing::debug!(video, error = ?e.message, "live photo link refused");
            }
            linked.is_ok()
        });
        let created = asset
            .file_created_at
            .as_deref()
            .and_then(|d| parse_date(d, false))
            .unwrap_or_else(assets::default_file_date);
        let now = db.clock.tick();
        let input = AssetInput {
            owner_id: user_id.to_string(),
            checksum,
            size: asset.data.len() as u64,
            original_file_name: asset.file_name,
            device_asset_id: asset.device_asset_id,
            device_id: asset.device_id,
            file_created_at: created,
            file_modified_at: created.utc_ms,
            visibility: asset.visibility,
            is_favorite: asset.is_favorite,
            duration: None,
            live_photo_video_id: live,
            data: self.app.cfg.keep_bytes.then_some(asset.data),
        };
        let id = db.insert_asset(input, now);
        if dialect != Dialect::Seed {
            if let Some(a) = db.assets.get_mut(&id) {
                // Part of the creation here: no separate `updatedAt` bump.
                assets::apply_metadata(a, &metadata);
            }
        }
        drop(db);
        assets::schedule_after_upload(&self.app, id.clone(), None);
        id
    }

    /// Seeds `n` small distinct assets (`IMG_000000.jpg`, ...) for a user in one go, like one
    /// database transaction: they share one `updatedAt`, `fileCreatedAt` is one minute apart
    /// from 2020-01-01, and no events are emitted. Returns their ids in order.
    pub fn insert_many(&self, user_id: &str, n: usize, visibility: Visibility) -> Vec<String> {
        const BASE_MS: i64 = 1_577_836_800_000; // 2020-01-01T00:00:00Z
        let keep = self.app.cfg.keep_bytes;
        let mut db = self.app.lock();
        let now = db.clock.tick();
        let salt = db.clock.update_id();
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let data = format!("immish-testserver seed {user_id} {salt} {i}").into_bytes();
            let checksum: [u8; 20] = Sha1::digest(&data).into();
            let at = BASE_MS + i as i64 * 60_000;
            let input = AssetInput {
                owner_id: user_id.to_string(),
                checksum,
                size: data.len() as u64,
                original_file_name: format!("IMG_{i:06}.jpg"),
                device_asset_id: Some(format!("seed-{i}")),
                device_id: Some("immish-testserver".to_string()),
                file_created_at: ParsedDate {
                    utc_ms: at,
                    local_ms: at,
                },
                file_modified_at: at,
                visibility,
                is_favorite: false,
                duration: None,
                live_photo_video_id: None,
                data: keep.then_some(data),
            };
            let id = db.insert_asset(input, now);
            if let Some(a) = db.assets.get_mut(&id) {
                // Seeded as if their metadata job had run long ago.
                a.exif.date_time_original = Some(at);
                a.metadata_extracted = true;
            }
            ids.push(id);
        }
        ids
    }

    /// Trashes assets (emits `on_asset_trash`); returns how many existed.
    pub fn trash<I>(&self, ids: I) -> usize
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        assets::trash(&mut self.app.lock(), &id_list(ids)).len()
    }

    /// Moves the `updatedAt` (and `createdAt`) of every asset of `user_id` `by` into the
    /// past, as if they were uploaded and last changed that long ago; returns how many. No
    /// event: nothing changed on the server, only when it happened.
    pub fn backdate(&self, user_id: &str, by: std::time::Duration) -> usize {
        let by = by.as_millis() as i64;
        let mut db = self.app.lock();
        let mut n = 0;
        for a in db.assets.values_mut().filter(|a| a.owner_id == user_id) {
            a.updated_at -= by;
            a.created_at -= by;
            n += 1;
        }
        n
    }

    /// Restores trashed assets (emits `on_asset_restore`); returns how many were restored.
    pub fn restore<I>(&self, ids: I) -> usize
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        assets::restore(&mut self.app.lock(), &id_list(ids)).len()
    }

    /// Deletes assets for good (emits `on_asset_delete` per asset, records `AssetDeleteV1`);
    /// returns how many existed.
    pub fn delete_permanently<I>(&self, ids: I) -> usize
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        assets::delete_permanently(&mut self.app.lock(), &id_list(ids)).len()
    }

    /// Changes an asset and bumps its `updatedAt`. A description or date change emits
    /// `on_asset_update`, as on the real server. False when the asset does not exist.
    pub fn update(&self, id: &str, change: AssetUpdate) -> bool {
        let dialect = self.app.dialect();
        assets::apply_update(&mut self.app.lock(), id, &change, dialect)
    }
}
