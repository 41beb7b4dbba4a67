//! Asset routes: upload (docs/SERVER-API.md#5-upload), bulk-upload-check
//! (docs/SERVER-API.md#6-bulk-upload-check), read, update, trash, restore, delete, statistics,
//! the original, and the seed dialect's `GET /assets` listing. Also the asset actions shared
//! with the test handle, which emit the socket events.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};

use crate::auth::{authenticate, check, Creds};
use crate::error::{invalid, opt_bool, opt_str, uuid_list, ApiError, JsonBody};
use crate::faults::drain_in_background;
use crate::metadata::{self, Extracted, HEAD_BYTES, MAX_SIDECAR};
use crate::state::{
    decode_checksum, is_uuid, now_ms, parse_date, App, Asset, AssetInput, AssetType, FormPart,
    State as Db, UploadRecord, Visibility,
};
use crate::{dto, Dialect};

// ---------------------------------------------------------------------------------------------
// File types (docs/SERVER-API.md#multipart-fields, docs/SERVER-API.md#8-server-information)

const IMAGE_EXTS: &[&str] = &[
    "avif", "bmp", "gif", "jpeg", "jpg", "png", "webp", "3fr", "ari", "arw", "cap", "cin", "cr2",
    "cr3", "crw", "dcr", "dng", "erf", "fff", "iiq", "k25", "kdc", "mrw", "nef", "nrw", "orf",
    "ori", "pef", "psd", "raf", "raw", "rw2", "rwl", "sr2", "srf", "srw", "x3f", "heic", "heif",
    "hif", "insp", "jp2", "jpe", "jxl", "svg", "tif", "tiff",
];
/// Added by the next major.
const IMAGE_EXTS_NEXT: &[&str] = &["mpo"];
const VIDEO_EXTS: &[&str] = &[
    "3gp", "3gpp", "avi", "flv", "insv", "m2t", "m2ts", "m4v", "mkv", "mov", "mp4", "mpe", "mpeg",
    "mpg", "mts", "mxf", "ts", "vob", "webm", "wmv",
];
const SIDECAR_EXTS: &[&str] = &["xmp"];

fn extension(name: &str) -> Option<String> {
    // Like Node's `extname`: the part after the last dot, unless the dot starts the name.
    let base = name.rsplit('/').next().unwrap_or(name);
    let (stem, ext) = base.rsplit_once('.')?;
    (!stem.is_empty()).then(|| ext.to_ascii_lowercase())
}

pub(crate) fn image_exts(dialect: Dialect) -> Vec<&'static str> {
    let mut v = IMAGE_EXTS.to_vec();
    if dialect == Dialect::ImmichNext {
        v.extend_from_slice(IMAGE_EXTS_NEXT);
    }
    v
}

pub(crate) fn media_types(dialect: Dialect) -> Value {
    let dot = |v: &[&str]| v.iter().map(|e| format!(".{e}")).collect::<Vec<_>>();
    json!({
        "image": dot(&image_exts(dialect)),
        "video": dot(VIDEO_EXTS),
        "sidecar": dot(SIDECAR_EXTS),
    })
}

fn is_asset_file(name: &str, dialect: Dialect) -> bool {
    extension(name).is_some_and(|e| {
        image_exts(dialect).contains(&e.as_str()) || VIDEO_EXTS.contains(&e.as_str())
    })
}

fn is_sidecar_file(name: &str) -> bool {
    extension(name).is_some_and(|e| SIDECAR_EXTS.contains(&e.as_str()))
}

/// IMAGE or VIDEO from the extension; unknown extensions (only possible through the handle)
/// count as images.
pub(crate) fn asset_type(name: &str) -> AssetType {
    match extension(name) {
        Some(e) if VIDEO_EXTS.contains(&e.as_str()) => AssetType::Video,
        _ => AssetType::Image,
    }
}

// ---------------------------------------------------------------------------------------------
// Actions shared by the routes and the test handle

/// Trashes assets and emits `on_asset_trash` (one array per owner).
pub(crate) fn trash(db: &mut Db, ids: &[String]) -> Vec<String> {
    let done = db.trash(ids);
    emit_grouped(db, &done, "on_asset_trash");
    done
}

/// Restores trashed assets and emits `on_asset_restore` (one array per owner).
pub(crate) fn restore(db: &mut Db, ids: &[String]) -> Vec<String> {
    let done = db.restore(ids);
    emit_grouped(db, &done, "on_asset_restore");
    done
}

/// Deletes assets for good and emits `on_asset_delete` once per asset.
pub(crate) fn delete_permanently(db: &mut Db, ids: &[String]) -> Vec<String> {
    let done = db.hard_delete(ids);
    for (id, owner) in &done {
        db.emit(owner, "on_asset_delete", json!(id));
    }
    done.into_iter().map(|(id, _)| id).collect()
}

fn emit_grouped(db: &mut Db, ids: &[String], event: &str) {
    let mut by_owner: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for id in ids {
        if let Some(a) = db.assets.get(id) {
            by_owner
                .entry(a.owner_id.clone())
                .or_default()
                .push(id.clone());
        }
    }
    for (owner, ids) in by_owner {
        db.emit(&owner, event, json!(ids));
    }
}

/// The metadata job and the thumbnail events of one new asset, as Immich runs them after an
/// upload: after `metadata_delay` the extracted metadata replaces the form's dates (see
/// [`apply_metadata`]); at `upload_event_delay` after the upload (never before the metadata)
/// `on_upload_success` and then `AssetUploadReadyV1` go to the owner, for `timeline` and
/// `archive` assets only, so a Live Photo video hidden meanwhile gets neither. The seed dialect
/// extracts nothing and sends only `on_upload_success`.
pub(crate) fn schedule_after_upload(app: &App, asset_id: String, metadata: Option<Extracted>) {
    let metadata_delay = app.cfg.metadata_delay;
    let event_delay = app.cfg.upload_event_delay;
    let app2 = app.clone();
    app.runtime.spawn(async move {
        let started = tokio::time::Instant::now();
        let dialect = app2.dialect();
        if let Some(m) = metadata.filter(|_| dialect != Dialect::Seed) {
            tokio::select! {
                _ = tokio::time::sleep(metadata_delay) => {}
                _ = app2.shutdown.cancelled() => return,
            }
            let mut db = app2.lock();
            run_metadata_job(&mut db, &asset_id, &m);
        }
        tokio::select! {
            _ = tokio::time::sleep_until(started + event_delay) => {}
            _ = app2.shutdown.cancelled() => return,
        }
        let mut db = app2.lock();
        let Some(asset) = db.assets.get(&asset_id) else {
            return;
        };
        if matches!(asset.visibility, Visibility::Timeline | Visibility::Archive) {
            let owner = asset.owner_id.clone();
            let payload = dto::asset(asset, dialect, true);
            let ready = json!({ "asset": dto::sync_asset(asset), "exif": dto::sync_exif(asset) });
            db.emit(&owner, "on_upload_success", payload);
            if dialect != Dialect::Seed {
                db.emit(&owner, "AssetUploadReadyV1", ready);
            }
        }
    });
}

/// Applies a metadata job's result and, when anything a client can see changed, bumps
/// `updatedAt` and the sync cursors (the real job's update fires the `updatedAt` trigger too).
pub(crate) fn run_metadata_job(db: &mut Db, asset_id: &str, m: &Extracted) {
    let now = db.clock.tick();
    let update_id = db.clock.update_id();
    if let Some(a) = db.assets.get_mut(asset_id) {
        if apply_metadata(a, m) {
            a.updated_at = now;
            a.update_id = update_id;
            a.exif_update_id = update_id;
        }
    }
}

/// What Immich's `handleMetadataExtraction` writes, from what the file said. With a capture
/// date: `fileCreatedAt` and `exifInfo.dateTimeOriginal` become its instant, `localDateTime` its
/// wall time, `timeZone` its offset. Without one: the earliest of `fileCreatedAt` and the
/// file's mtime (`fileModifiedAt`) becomes all three, so an offset sent in the form is lost
/// (`localDateTime` is the UTC instant). Dimensions are swapped for sideways orientations.
/// Returns whether anything changed.
pub(crate) fn apply_metadata(a: &mut Asset, m: &Extracted) -> bool {
    let before = a.clone();
    match m.date {
        Some(d) => {
            a.file_created_at = d.utc_ms;
            a.local_date_time = d.local_ms;
            a.exif.date_time_original = Some(d.utc_ms);
            a.exif.time_zone = d.time_zone();
        }
        None => {
            let earliest = a.file_created_at.min(a.file_modified_at);
            a.file_created_at = earliest;
            a.local_date_time = earliest;
            a.exif.date_time_original = Some(earliest);
            a.exif.time_zone = None;
        }
    }
    a.exif.make = m.make.clone();
    a.exif.model = m.model.clone();
    a.exif.lens_model = m.lens_model.clone();
    a.exif.orientation = m.orientation.map(|o| o.to_string());
    a.exif.width = m.width;
    a.exif.height = m.height;
    a.exif.f_number = m.f_number;
    a.exif.focal_length = m.focal_length;
    a.exif.iso = m.iso;
    a.exif.exposure_time = m.exposure_time.clone();
    let sideways = matches!(m.orientation, Some(5..=8));
    (a.width, a.height) = if sideways {
        (m.height, m.width)
    } else {
        (m.width, m.height)
    };
    a.description = m.description.clone();
    a.metadata_extracted = true;
    a.file_created_at != before.file_created_at
        || a.local_date_time != before.local_date_time
        || a.exif != before.exif
        || (a.width, a.height) != (before.width, before.height)
        || a.description != before.description
        || !before.metadata_extracted
}

/// Links a Live Photo video the way `onBeforeLink` does: it must exist, be a video and be the
/// caller's; a `timeline` video becomes `hidden` and `on_asset_hidden` fires.
pub(crate) fn link_live_photo(db: &mut Db, user_id: &str, video_id: &str) -> Result<(), ApiError> {
    let video = db
        .assets
        .get(video_id)
        .ok_or_else(|| ApiError::bad_request("Live photo video not found"))?;
    if video.kind != AssetType::Video {
        return Err(ApiError::bad_request("Live photo video must be a video"));
    }
    if video.owner_id != user_id {
        return Err(ApiError::bad_request(
            "Live photo video does not belong to the user",
        ));
    }
    if video.visibility == Visibility::Timeline {
        let now = db.clock.tick();
        let update_id = db.clock.update_id();
        if let Some(v) = db.assets.get_mut(video_id) {
            v.visibility = Visibility::Hidden;
            v.updated_at = now;
            v.update_id = update_id;
        }
        db.emit(user_id, "on_asset_hidden", json!(video_id));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Upload

#[derive(Default)]
struct Form {
    fields: BTreeMap<String, String>,
    /// Every part as received, for the upload record.
    parts: Vec<FormPart>,
    file: Option<FilePart>,
    sidecar: Option<Vec<u8>>,
}

struct FilePart {
    part_file_name: String,
    checksum: [u8; 20],
    size: u64,
    data: Option<Vec<u8>>,
    /// The first bytes, for the metadata job when `data` is not kept.
    head: Vec<u8>,
}

/// Reads every remaining part, discarding it, so an early error reply is not followed by a
/// reset while the client is still writing (Node drains such requests too).
async fn drain_form(mut mp: multer::Multipart<'_>) {
    while let Ok(Some(mut field)) = mp.next_field().await {
        while let Ok(Some(_)) = field.chunk().await {}
    }
}

fn upload_failed() -> ApiError {
    ApiError::new(500, "Failed to upload asset")
}

fn file_record(name: &str, file_name: &str, size: u64) -> FormPart {
    FormPart {
        name: name.to_string(),
        value: None,
        file_name: Some(file_name.to_string()),
        size,
    }
}

async fn read_form(
    app: &App,
    body: Body,
    boundary: String,
    corrupt: bool,
    form: &mut Form,
) -> Result<(), ApiError> {
    let dialect = app.dialect();
    let mut mp = multer::Multipart::new(body.into_data_stream(), boundary);
    loop {
        let mut field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "bad multipart body");
                return Err(upload_failed());
            }
        };
        let name = field.name().unwrap_or_default().to_string();
        let Some(part_file_name) = field.file_name().map(str::to_string) else {
            let value = field.text().await.map_err(|_| upload_failed())?;
            form.parts.push(FormPart {
                name: name.clone(),
                value: Some(value.clone()),
                file_name: None,
                size: 0,
            });
            form.fields.insert(name, value);
            continue;
        };
        let duplicate_part = match name.as_str() {
            "assetData" => form.file.is_some(),
            "sidecarData" => form.sidecar.is_some(),
            _ => true,
        };
        if duplicate_part {
            form.parts.push(file_record(&name, &part_file_name, 0));
            drop(field);
            drain_form(mp).await;
            return Err(ApiError::bad_request("Unexpected field"));
        }
        // `body.filename` only counts for the type check if it arrived before this part.
        let checked_name = form
            .fields
            .get("filename")
            .filter(|f| !f.is_empty())
            .cloned()
            .unwrap_or_else(|| part_file_name.clone());
        let allowed = if name == "assetData" {
            is_asset_file(&checked_name, dialect)
        } else {
            is_sidecar_file(&checked_name)
        };
        if !allowed {
            form.parts.push(file_record(&name, &part_file_name, 0));
            drop(field);
            drain_form(mp).await;
            return Err(ApiError::bad_request(format!(
                "Unsupported file type {checked_name}"
            )));
        }
        if name == "sidecarData" {
            let mut sidecar = Vec::new();
            let mut size = 0u64;
            while let Some(chunk) = field.chunk().await.map_err(|_| upload_failed())? {
                size += chunk.len() as u64;
                let room = MAX_SIDECAR.saturating_sub(sidecar.len());
                sidecar.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            form.parts.push(file_record(&name, &part_file_name, size));
            form.sidecar = Some(sidecar);
            continue;
        }

        app.upload_bodies.fetch_add(1, Ordering::Relaxed);
        let mut hasher = Sha1::new();
        let mut data = app.cfg.keep_bytes.then(Vec::new);
        let mut head = Vec::new();
        let mut size = 0u64;
        // In `corrupt` mode the last byte is held back and finally dropped.
        let mut held: Option<u8> = None;
        while let Some(chunk) = field.chunk().await.map_err(|_| upload_failed())? {
            if chunk.is_empty() {
                continue;
            }
            app.upload_file_bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            let room = HEAD_BYTES.saturating_sub(head.len());
            head.extend_from_slice(&chunk[..chunk.len().min(room)]);
            let usable: &[u8] = if corrupt {
                if let Some(b) = held.take() {
                    hasher.update([b]);
                    size += 1;
                    if let Some(d) = data.as_mut() {
                        d.push(b);
                    }
                }
                held = chunk.last().copied();
                &chunk[..chunk.len() - 1]
            } else {
                &chunk
            };
            hasher.update(usable);
            size += usable.len() as u64;
            if let Some(d) = data.as_mut() {
                d.extend_from_slice(usable);
            }
        }
        form.parts.push(file_record(
            &name,
            &part_file_name,
            size + u64::from(held.is_some()),
        ));
        form.file = Some(FilePart {
            part_file_name,
            checksum: hasher.finalize().into(),
            size,
            data,
            head,
        });
    }
    Ok(())
}

/// The upload DTO after validation.
struct UploadFields {
    device_asset_id: Option<String>,
    device_id: Option<String>,
    file_created_at: crate::state::ParsedDate,
    file_modified_at: i64,
    visibility: Visibility,
    is_favorite: bool,
    duration: Option<String>,
    filename: Option<String>,
    live_photo_video_id: Option<String>,
}

fn validate_upload(
    fields: &BTreeMap<String, String>,
    dialect: Dialect,
) -> Result<UploadFields, ApiError> {
    let next = dialect == Dialect::ImmichNext;
    // v2.7.5 converts dates while transforming the DTO, before validating it: an unparsable
    // one ends the request at once with a single string message.
    if dialect == Dialect::Immich {
        for field in ["fileCreatedAt", "fileModifiedAt"] {
            if let Some(v) = fields.get(field) {
                if parse_date(v, false).is_none() {
                    return Err(ApiError::bad_request(format!(
                        "{field} must be a date string"
                    )));
                }
            }
        }
    }
    let mut errors = Vec::new();
    let mut device = |field: &str| -> Option<String> {
        if next {
            // Removed in the next major; unknown fields are stripped.
            return None;
        }
        match fields.get(field) {
            Some(v) if !v.is_empty() => Some(v.clone()),
            Some(_) => {
                errors.push(format!("{field} should not be empty"));
                None
            }
            None => {
                errors.push(format!("{field} must be a string"));
                errors.push(format!("{field} should not be empty"));
                None
            }
        }
    };
    let device_asset_id = device("deviceAssetId");
    let device_id = device("deviceId");
    let mut date = |field: &str| match fields.get(field) {
        Some(v) => {
            let parsed = parse_date(v, next);
            if parsed.is_none() {
                errors.push(invalid(
                    field,
                    &format!("{field} must be a Date instance"),
                    "Invalid input: expected ISO 8601 datetime string, received string",
                ));
            }
            parsed
        }
        None => {
            if dialect == Dialect::Immich {
                errors.push(format!("{field} should not be empty"));
            }
            errors.push(invalid(
                field,
                &format!("{field} must be a Date instance"),
                "Invalid input: expected string, received undefined",
            ));
            None
        }
    };
    let created = date("fileCreatedAt");
    let modified = date("fileModifiedAt");
    let is_favorite = match fields.get("isFavorite").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        // The seed reference says nothing about case; only Immich's `ValidateBoolean` is
        // known to map exactly `true` and `false`.
        Some(v) if dialect == Dialect::Seed && v.eq_ignore_ascii_case("true") => true,
        Some(v) if dialect == Dialect::Seed && v.eq_ignore_ascii_case("false") => false,
        Some(_) => {
            errors.push(invalid(
                "isFavorite",
                "isFavorite must be a boolean value",
                "Invalid input: expected boolean",
            ));
            false
        }
    };
    let mut visibility = match fields.get("visibility") {
        None => Visibility::Timeline,
        Some(v) => Visibility::parse(v).unwrap_or_else(|| {
            errors.push(invalid(
                "visibility",
                "visibility must be one of the following values: archive, timeline, hidden, locked",
                "Invalid option: expected one of \"archive\"|\"timeline\"|\"hidden\"|\"locked\"",
            ));
            Visibility::Timeline
        }),
    };
    let live_photo_video_id = match fields.get("livePhotoVideoId") {
        Some(v) if dialect != Dialect::Seed => {
            if !is_uuid(v) {
                errors.push(invalid(
                    "livePhotoVideoId",
                    "livePhotoVideoId must be a UUID",
                    "Invalid UUID",
                ));
            }
            Some(v.clone())
        }
        _ => None,
    };
    if dialect == Dialect::Seed {
        // The seed's pre-v1.133 fields.
        if fields.get("isArchived").map(String::as_str) == Some("true") {
            visibility = Visibility::Archive;
        }
        if fields.get("isVisible").map(String::as_str) == Some("false") {
            visibility = Visibility::Hidden;
        }
    }
    match (created, modified, errors.is_empty()) {
        (Some(mut created), Some(modified), true) => {
            if dialect != Dialect::Seed {
                // class-transformer turns the field into a `Date`: the offset is gone, and
                // `localDateTime` starts as the UTC instant.
                created.local_ms = created.utc_ms;
            }
            Ok(UploadFields {
                device_asset_id,
                device_id,
                file_created_at: created,
                file_modified_at: modified.utc_ms,
                visibility,
                is_favorite,
                duration: fields.get("duration").filter(|d| !d.is_empty()).cloned(),
                filename: fields.get("filename").filter(|f| !f.is_empty()).cloned(),
                live_photo_video_id,
            })
        }
        _ => Err(ApiError::validation(errors)),
    }
}

/// `{id, status}` (201 created / 200 duplicate), or the seed's `{id, duplicate}`.
fn upload_reply(dialect: Dialect, id: &str, created: bool) -> Response {
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = match dialect {
        Dialect::Seed => json!({ "id": id, "duplicate": !created }),
        _ => json!({ "id": id, "status": if created { "created" } else { "duplicate" } }),
    };
    (status, Json(body)).into_response()
}

/// How an upload ended, before it is recorded.
struct Answer {
    response: Response,
    asset_id: Option<String>,
    /// Hold the reply (`stall_after_store`).
    stall: bool,
}

/// `POST /assets`. Every request that reaches the handler is recorded (its form parts, the
/// status, the asset, the API key it carried) for [`crate::ServerHandle::uploads`].
pub(crate) async fn upload(State(app): State<App>, creds: Creds, req: Request) -> Response {
    let mut form = Form::default();
    let answer = match receive(&app, &creds, req, &mut form).await {
        Ok(answer) => answer,
        Err(e) => Answer {
            response: e.into_response(),
            asset_id: None,
            stall: false,
        },
    };
    app.lock().uploads.push(UploadRecord {
        parts: form.parts,
        status: answer.response.status().as_u16(),
        asset_id: answer.asset_id.clone(),
        api_key: creds.api_key.clone(),
    });
    if answer.stall {
        tracing::debug!(asset_id = ?answer.asset_id, "stored; holding the reply (stall_after_store)");
        app.shutdown.cancelled().await;
        return ApiError::new(503, "Server shutting down").into_response();
    }
    answer.response
}

async fn receive(
    app: &App,
    creds: &Creds,
    req: Request,
    form: &mut Form,
) -> Result<Answer, ApiError> {
    let dialect = app.dialect();
    let auth = check(app, creds, Some("asset.upload"))?;
    let (parts, body) = req.into_parts();
    let done = |response: Response, id: &str| Answer {
        response,
        asset_id: Some(id.to_string()),
        stall: false,
    };

    // The checksum header is checked after auth and before the body is read
    // (docs/SERVER-API.md#early-duplicate-answer).
    // The seed reference has no such header.
    if dialect != Dialect::Seed {
        let header_sum = parts
            .headers
            .get("x-immich-checksum")
            .and_then(|v| v.to_str().ok())
            .and_then(decode_checksum);
        if let Some(sum) = header_sum {
            let existing = app
                .lock()
                .find_by_checksum(&auth.user_id, &sum)
                .map(|a| a.id.clone());
            if let Some(id) = existing {
                // The body is dropped unread: hyper closes the connection after the reply.
                drop(body);
                return Ok(done(upload_reply(dialect, &id, false), &id));
            }
        }
    }

    let corrupt = app.lock().faults.corrupt_uploads;
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match multer::parse_boundary(content_type) {
        Ok(boundary) => read_form(app, body, boundary, corrupt, form).await?,
        Err(_) => {
            // Not multipart: multer ignores the body, so no file arrives.
            drain_in_background(app, body);
        }
    }
    let Some(file) = form.file.take() else {
        return Err(ApiError::bad_request(
            "Field(s) assetData should not be empty",
        ));
    };
    let fields = validate_upload(&form.fields, dialect)?;
    let metadata = metadata::extract(
        file.data.as_deref().unwrap_or(&file.head),
        form.sidecar.as_deref(),
    );
    match store(app, &auth.user_id, file, fields)? {
        Stored::Duplicate(id) => Ok(done(upload_reply(dialect, &id, false), &id)),
        Stored::Created { id, stall } => {
            schedule_after_upload(app, id.clone(), Some(metadata));
            Ok(Answer {
                response: upload_reply(dialect, &id, true),
                asset_id: Some(id),
                stall,
            })
        }
    }
}

enum Stored {
    Duplicate(String),
    Created { id: String, stall: bool },
}

/// The part of an upload after the body: storage and quota checks, the duplicate check on
/// the unique (owner, checksum) pair, and the insert. Synchronous, so the lock is never held
/// across an await.
fn store(
    app: &App,
    user_id: &str,
    file: FilePart,
    fields: UploadFields,
) -> Result<Stored, ApiError> {
    let mut db = app.lock();
    if db.faults.storage_full {
        return Err(ApiError::new(507, "Insufficient Storage"));
    }
    let quota = db
        .user(user_id)
        .ok_or_else(|| ApiError::unauthorized("Invalid user token"))?
        .quota;
    if let Some(quota) = quota {
        if db.usage(user_id) + file.size > quota {
            return Err(ApiError::bad_request("Quota has been exceeded!"));
        }
    }
    // Linked (and the video hidden) before the insert, so even an upload that turns out to be
    // a duplicate hides the video, as `uploadAsset` does.
    if let Some(video) = &fields.live_photo_video_id {
        link_live_photo(&mut db, user_id, video)?;
    }
    if let Some(existing) = db.find_by_checksum(user_id, &file.checksum) {
        return Ok(Stored::Duplicate(existing.id.clone()));
    }
    let now = db.clock.tick();
    let id = db.insert_asset(
        AssetInput {
            owner_id: user_id.to_string(),
            checksum: file.checksum,
            size: file.size,
            original_file_name: fields.filename.unwrap_or(file.part_file_name),
            device_asset_id: fields.device_asset_id,
            device_id: fields.device_id,
            file_created_at: fields.file_created_at,
            file_modified_at: fields.file_modified_at,
            visibility: fields.visibility,
            is_favorite: fields.is_favorite,
            duration: fields.duration,
            live_photo_video_id: fields.live_photo_video_id,
            data: file.data,
        },
        now,
    );
    let stall = db.faults.stall_after_store > 0;
    if stall {
        db.faults.stall_after_store -= 1;
    }
    Ok(Stored::Created { id, stall })
}

// ---------------------------------------------------------------------------------------------
// Bulk upload check

pub(crate) async fn bulk_upload_check(
    State(app): State<App>,
    creds: Creds,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let db = app.lock();
    let auth = authenticate(&db, &creds, Some("asset.upload"))?;
    let Some(items) = body.get("assets").and_then(Value::as_array) else {
        return Err(ApiError::validation(vec![invalid(
            "assets",
            "assets must be an array",
            "Invalid input: expected array, received undefined",
        )]));
    };
    if items.is_empty() && app.dialect() != Dialect::Seed {
        // Immich builds `... WHERE checksum IN ()`, which the database refuses
        // (docs/SERVER-API.md#6-bulk-upload-check).
        app.empty_bulk_checks.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::new(500, "Failed to check bulk upload"));
    }
    let mut results = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let id = item.get("id").and_then(Value::as_str);
        let checksum = item.get("checksum").and_then(Value::as_str);
        let (Some(id), Some(checksum)) = (id, checksum) else {
            return Err(ApiError::validation(vec![invalid(
                &format!("assets.{i}"),
                &format!("assets.{i}.id must be a string, assets.{i}.checksum must be a string"),
                "Invalid input: expected string, received undefined",
            )]));
        };
        let found =
            decode_checksum(checksum).and_then(|sum| db.find_by_checksum(&auth.user_id, &sum));
        results.push(match found {
            Some(a) => json!({
                "id": id,
                "action": "reject",
                "reason": "duplicate",
                "assetId": a.id,
                "isTrashed": a.deleted_at.is_some(),
            }),
            None => json!({ "id": id, "action": "accept" }),
        });
    }
    Ok(Json(json!({ "results": results })))
}

// ---------------------------------------------------------------------------------------------
// Single asset

fn check_id(id: &str) -> Result<(), ApiError> {
    if is_uuid(id) {
        Ok(())
    } else {
        Err(ApiError::validation(vec![invalid(
            "id",
            "id must be a UUID",
            "Invalid UUID",
        )]))
    }
}

pub(crate) async fn get_asset(
    State(app): State<App>,
    creds: Creds,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let db = app.lock();
    let auth = authenticate(&db, &creds, Some("asset.read"))?;
    check_id(&id)?;
    let asset = db
        .assets
        .get(&id)
        .filter(|a| db.can_read(&auth.user_id, a))
        .ok_or_else(|| ApiError::no_access("asset.read"))?;
    Ok(Json(dto::asset_with_stack(&db, asset, app.dialect(), true)))
}

pub(crate) async fn original(
    State(app): State<App>,
    creds: Creds,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let mut db = app.lock();
    let auth = authenticate(&db, &creds, Some("asset.download"))?;
    check_id(&id)?;
    let asset = db
        .assets
        .get(&id)
        .filter(|a| db.can_read(&auth.user_id, a))
        .ok_or_else(|| ApiError::no_access("asset.download"))?;
    let Some(mut data) = asset.data.clone() else {
        return Err(ApiError::new(
            404,
            "Asset media not found (the test server keeps bytes only with keep_bytes)",
        ));
    };
    // Express's `send` (behind Immich's `sendFile`) tags the file with a weak ETag of its
    // size and mtime; the asset's checksum stands in for the mtime here.
    let etag = format!(
        "W/\"{:x}-{}\"",
        data.len(),
        asset.checksum[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    if db.faults.corrupt_downloads && !data.is_empty() {
        let middle = data.len() / 2;
        data[middle] ^= 0xFF;
    }
    let content_type = dto::asset(asset, app.dialect(), false)["originalMimeType"]
        .as_str()
        .unwrap_or("application/octet-stream")
        .to_string();
    // Like Immich (`sendFile` with `Content-Disposition: attachment`), the original name is
    // offered as the file name.
    let disposition = format!(
        "attachment; filename=\"{}\"",
        asset
            .original_file_name
            .replace(['"', '\\', '\r', '\n'], "_")
    );
    let cut = match &mut db.faults.cut_downloads {
        Some((times, n)) => {
            let n = *n;
            *times -= 1;
            if *times == 0 {
                db.faults.cut_downloads = None;
            }
            Some(n)
        }
        None => None,
    };
    drop(db);
    let len = data.len() as u64;
    // `Range: bytes=N-` / `bytes=N-M` / `bytes=-N`, honoured the way `send` does: one range
    // (a list is served whole), 416 with `Content-Range: bytes */len` when it starts past the
    // end, and ignored (200, the whole file) when `If-Range` names another ETag.
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .filter(|v| !v.contains(','));
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.contains(etag.as_str()));
    let mut status = StatusCode::OK;
    let mut content_range = None;
    let mut body = data;
    if let (Some(spec), true) = (range, if_range_ok) {
        let (a, b) = spec.split_once('-').unwrap_or((spec, ""));
        let parsed = match (a.trim(), b.trim()) {
            ("", suffix) => suffix
                .parse::<u64>()
                .ok()
                .map(|n| (len.saturating_sub(n), len.saturating_sub(1))),
            (start, "") => start
                .parse::<u64>()
                .ok()
                .map(|s| (s, len.saturating_sub(1))),
            (start, end) => match (start.parse::<u64>(), end.parse::<u64>()) {
                (Ok(s), Ok(e)) if s <= e => Some((s, e.min(len.saturating_sub(1)))),
                _ => None,
            },
        };
        if let Some((start, end)) = parsed {
            if start >= len {
                return Ok((
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [
                        (header::CONTENT_RANGE, format!("bytes */{len}")),
                        (header::ACCEPT_RANGES, "bytes".to_string()),
                    ],
                    "Range Not Satisfiable",
                )
                    .into_response());
            }
            status = StatusCode::PARTIAL_CONTENT;
            content_range = Some(format!("bytes {start}-{end}/{len}"));
            body = body[start as usize..=end as usize].to_vec();
        }
    }
    let total = body.len() as u64;
    let served = app.clone();
    let body = match cut {
        // Headers promise the whole length; the connection goes after `n` bytes.
        Some(n) => {
            let head = bytes::Bytes::from(body).slice(..(n.min(total) as usize));
            served
                .original_bytes_served
                .fetch_add(head.len() as u64, Ordering::Relaxed);
            // The error comes a moment after the bytes, so that hyper has written them out
            // (an error polled at once would drop them still in its buffer).
            use futures_util::StreamExt;
            let head = futures_util::stream::iter([Ok::<_, std::io::Error>(head)]);
            let drop = futures_util::stream::once(async {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                Err(std::io::Error::other("cut_downloads: connection dropped"))
            });
            Body::from_stream(head.chain(drop))
        }
        None => {
            served
                .original_bytes_served
                .fetch_add(total, Ordering::Relaxed);
            Body::from(body)
        }
    };
    let mut resp = (
        status,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_DISPOSITION, disposition),
            (header::ACCEPT_RANGES, "bytes".to_string()),
            (header::ETAG, etag),
            (header::CONTENT_LENGTH, total.to_string()),
        ],
        body,
    )
        .into_response();
    if let Some(cr) = content_range {
        if let Ok(v) = cr.parse() {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(resp)
}

/// `PUT /assets/:id`: favourite, visibility, description, date. Like the real server, only a
/// description or date change emits `on_asset_update` (it rewrites the sidecar).
pub(crate) async fn update_asset(
    State(app): State<App>,
    creds: Creds,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let dialect = app.dialect();
    let mut db = app.lock();
    let auth = authenticate(&db, &creds, Some("asset.update"))?;
    check_id(&id)?;
    let owned = db.assets.get(&id).map(|a| a.owner_id == auth.user_id);
    if owned != Some(true) {
        return Err(ApiError::no_access("asset.update"));
    }
    let mut change = crate::AssetUpdate {
        is_favorite: opt_bool(&body, "isFavorite")?,
        description: opt_str(&body, "description")?.map(str::to_string),
        ..Default::default()
    };
    if let Some(v) = opt_str(&body, "visibility")? {
        change.visibility = Some(Visibility::parse(v).ok_or_else(|| {
            ApiError::validation(vec![invalid(
                "visibility",
                "visibility must be one of the following values: archive, timeline, hidden, locked",
                "Invalid option",
            )])
        })?);
    }
    if dialect == Dialect::Seed && opt_bool(&body, "isArchived")? == Some(true) {
        change.visibility = Some(Visibility::Archive);
    }
    if let Some(d) = opt_str(&body, "dateTimeOriginal")? {
        if parse_date(d, dialect == Dialect::ImmichNext).is_none() {
            return Err(ApiError::validation(vec![invalid(
                "dateTimeOriginal",
                "dateTimeOriginal must be a valid ISO 8601 date string",
                "Invalid ISO datetime",
            )]));
        }
        change.file_created_at = Some(d.to_string());
    }
    match body.get("livePhotoVideoId") {
        None => {}
        Some(Value::Null) => unlink_live_photo(&mut db, &id, dialect),
        Some(Value::String(video)) if is_uuid(video) => {
            link_live_photo(&mut db, &auth.user_id, video)?;
            if let Some(a) = db.assets.get_mut(&id) {
                a.live_photo_video_id = Some(video.clone());
            }
        }
        Some(_) => {
            return Err(ApiError::validation(vec![invalid(
                "livePhotoVideoId",
                "livePhotoVideoId must be a UUID",
                "Invalid UUID",
            )]))
        }
    }
    apply_update(&mut db, &id, &change, dialect);
    let asset = db
        .assets
        .get(&id)
        .ok_or_else(|| ApiError::no_access("asset.update"))?;
    Ok(Json(dto::asset_with_stack(&db, asset, dialect, true)))
}

/// `livePhotoVideoId: null`: the video takes the photo's visibility again and, shown again,
/// gets its thumbnails' `on_upload_success` (Immich's `onAfterUnlink` → `AssetShow`).
fn unlink_live_photo(db: &mut Db, photo_id: &str, dialect: Dialect) {
    let Some(photo) = db.assets.get_mut(photo_id) else {
        return;
    };
    let Some(video_id) = photo.live_photo_video_id.take() else {
        return;
    };
    let visibility = photo.visibility;
    let now = db.clock.tick();
    let update_id = db.clock.update_id();
    let Some(video) = db.assets.get_mut(&video_id) else {
        return;
    };
    video.visibility = visibility;
    video.updated_at = now;
    video.update_id = update_id;
    if matches!(visibility, Visibility::Timeline | Visibility::Archive) {
        let owner = video.owner_id.clone();
        let payload = dto::asset(video, dialect, true);
        db.emit(&owner, "on_upload_success", payload);
    }
}

/// Applies a change, bumps `updatedAt` and the sync cursor, and emits `on_asset_update` when
/// the description or date changed. Returns false when the asset does not exist.
pub(crate) fn apply_update(
    db: &mut Db,
    id: &str,
    change: &crate::AssetUpdate,
    dialect: Dialect,
) -> bool {
    let now = db.clock.tick();
    let update_id = db.clock.update_id();
    let Some(a) = db.assets.get_mut(id) else {
        return false;
    };
    if let Some(f) = change.is_favorite {
        a.is_favorite = f;
    }
    if let Some(v) = change.visibility {
        a.visibility = v;
    }
    let mut metadata = false;
    if let Some(d) = &change.description {
        a.description = d.clone();
        metadata = true;
    }
    if let Some(d) = change
        .file_created_at
        .as_deref()
        .and_then(|d| parse_date(d, false))
    {
        a.file_created_at = d.utc_ms;
        a.local_date_time = d.local_ms;
        metadata = true;
    }
    a.updated_at = now;
    a.update_id = update_id;
    if metadata {
        a.exif_update_id = update_id;
        let owner = a.owner_id.clone();
        let payload = dto::asset(a, dialect, true);
        db.emit(&owner, "on_asset_update", payload);
    }
    true
}

// ---------------------------------------------------------------------------------------------
// Trash, restore, delete

/// Every id must be the caller's own asset, else the whole request fails (`requireAccess`).
fn require_owned(db: &Db, user_id: &str, ids: &[String], permission: &str) -> Result<(), ApiError> {
    if ids
        .iter()
        .all(|id| db.assets.get(id).is_some_and(|a| a.owner_id == user_id))
    {
        Ok(())
    } else {
        Err(ApiError::no_access(permission))
    }
}

pub(crate) async fn delete_assets(
    State(app): State<App>,
    creds: Creds,
    JsonBody(body): JsonBody<Value>,
) -> Result<StatusCode, ApiError> {
    let mut db = app.lock();
    let auth = authenticate(&db, &creds, Some("asset.delete"))?;
    let ids = uuid_list(&body, "ids", true)?;
    let force = opt_bool(&body, "force")?.unwrap_or(false);
    require_owned(&db, &auth.user_id, &ids, "asset.delete")?;
    if force {
        delete_permanently(&mut db, &ids);
    } else {
        trash(&mut db, &ids);
    }
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn restore_assets(
    State(app): State<App>,
    creds: Creds,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let mut db = app.lock();
    let auth = authenticate(&db, &creds, Some("asset.delete"))?;
    let ids = uuid_list(&body, "ids", true)?;
    require_owned(&db, &auth.user_id, &ids, "asset.delete")?;
    restore(&mut db, &ids);
    // Immich counts the ids it was given, restored or not (measured on both Immich versions).
    Ok(Json(json!({ "count": ids.len() })))
}

// ---------------------------------------------------------------------------------------------
// Statistics and the seed listing

pub(crate) async fn statistics(
    State(app): State<App>,
    creds: Creds,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let db = app.lock();
    let auth = authenticate(&db, &creds, Some("asset.statistics"))?;
    let trashed = q.get("isTrashed").map(String::as_str) == Some("true");
    let visibility = q.get("visibility").and_then(|v| Visibility::parse(v));
    let favorite = q.get("isFavorite").map(|v| v == "true");
    let (mut images, mut videos) = (0u64, 0u64);
    for a in db.assets.values() {
        // Without `visibility`, Immich counts timeline and archive (`withDefaultVisibility`):
        // hidden Live Photo videos and locked assets are not in the numbers.
        let shown = match visibility {
            Some(v) => v == a.visibility,
            None => matches!(a.visibility, Visibility::Timeline | Visibility::Archive),
        };
        if a.owner_id != auth.user_id
            || a.deleted_at.is_some() != trashed
            || !shown
            || favorite.is_some_and(|f| f != a.is_favorite)
        {
            continue;
        }
        match a.kind {
            AssetType::Image => images += 1,
            AssetType::Video => videos += 1,
        }
    }
    Ok(Json(
        json!({ "images": images, "videos": videos, "total": images + videos }),
    ))
}

/// The seed's `GET /assets?updatedAfter=&updatedBefore=`: the caller's assets (trashed
/// included, with `isTrashed`), bounds inclusive, oldest change first, with the old
/// `skip`/`take` paging.
pub(crate) async fn seed_list(
    State(app): State<App>,
    creds: Creds,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let db = app.lock();
    let auth = authenticate(&db, &creds, Some("asset.read"))?;
    let bound = |field: &str| -> Result<Option<i64>, ApiError> {
        match q.get(field) {
            None => Ok(None),
            Some(v) => parse_date(v, false).map(|d| Some(d.utc_ms)).ok_or_else(|| {
                ApiError::validation(vec![format!("{field} must be a Date instance")])
            }),
        }
    };
    let after = bound("updatedAfter")?;
    let before = bound("updatedBefore")?;
    let number = |field: &str| q.get(field).and_then(|v| v.parse::<usize>().ok());
    let mut assets: Vec<_> = db
        .assets
        .values()
        .filter(|a| a.owner_id == auth.user_id)
        .filter(|a| after.is_none_or(|t| a.updated_at >= t))
        .filter(|a| before.is_none_or(|t| a.updated_at <= t))
        .collect();
    assets.sort_by_key(|a| (a.updated_at, a.seq));
    let items: Vec<Value> = assets
        .into_iter()
        .skip(number("skip").unwrap_or(0))
        .take(number("take").unwrap_or(usize::MAX))
        .map(|a| dto::asset(a, Dialect::Seed, true))
        .collect();
    Ok(Json(Value::Array(items)))
}

/// Used by the handle: the time to stamp a synthetic asset's dates with.
pub(crate) fn default_file_date() -> crate::state::ParsedDate {
    let ms = now_ms();
    crate::state::ParsedDate {
        utc_ms: ms,
        local_ms: ms,
    }
}
