//! The sync API (docs/SERVER-API.md#10-sync-stream): `POST /sync/stream` with per-session,
//! per-type checkpoints set by `/sync/ack`, and v2.7.5's legacy `full-sync` / `delta-sync`.
//!
//! The stream is built in memory and sent as one JSON-lines body. Rows are ordered by their
//! `updateId`, which increases strictly with every change (see `state::Clock`), and only rows
//! after the acked checkpoint of their type are sent. Hard deletes come from the audit list
//! the state keeps (`AssetDeleteV1`), before the upserts, as the real server does.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::auth::{authenticate, Auth, Creds};
use crate::error::{invalid, opt_bool, ApiError, JsonBody};
use crate::state::{is_uuid, now_ms, parse_date, parse_update_id, App, State as Db, Visibility};
use crate::{dto, Dialect};

/// Request types the real server accepts (`SyncRequestType`).
const REQUEST_TYPES: &[&str] = &[
    "AlbumsV1",
    "AlbumUsersV1",
    "AlbumToAssetsV1",
    "AlbumAssetsV1",
    "AlbumAssetExifsV1",
    "AssetsV1",
    "AssetExifsV1",
    "AssetEditsV1",
    "AssetMetadataV1",
    "AuthUsersV1",
    "MemoriesV1",
    "MemoryToAssetsV1",
    "PartnersV1",
    "PartnerAssetsV1",
    "PartnerAssetExifsV1",
    "PartnerStacksV1",
    "StacksV1",
    "UsersV1",
    "PeopleV1",
    "AssetFacesV1",
    "AssetFacesV2",
    "UserMetadataV1",
];

/// Entity types this server produces, and so accepts in acks.
const ACK_TYPES: &[&str] = &[
    "AuthUserV1",
    "AssetV1",
    "AssetDeleteV1",
    "AssetExifV1",
    "SyncCompleteV1",
    "SyncResetV1",
];

const CONTENT_TYPE: &str = "application/jsonlines+json";
const MAX_ACKS: usize = 1000;

/// Sync refuses API keys outright, after the permission check.
fn session_only(db: &Db, creds: &Creds, perm: &'static str) -> Result<String, ApiError> {
    let auth = authenticate(db, creds, Some(perm))?;
    auth.session
        .ok_or_else(|| ApiError::forbidden("Sync endpoints cannot be used with API keys"))
}

fn checkpoint(db: &Db, token: &str, kind: &str) -> u128 {
    db.sessions
        .iter()
        .find(|s| s.token == token)
        .and_then(|s| s.checkpoints.get(kind))
        .map(|(id, _)| *id)
        .unwrap_or(0)
}

pub(crate) async fn stream(
    State(app): State<App>,
    creds: Creds,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let mut db = app.lock();
    let token = session_only(&db, &creds, "sync.stream")?;
    let types: Vec<String> = match body.get("types").and_then(Value::as_array) {
        Some(list) => {
            let mut out = Vec::new();
            for t in list {
                match t.as_str() {
                    Some(s) if REQUEST_TYPES.contains(&s) => out.push(s.to_string()),
                    _ => {
                        return Err(ApiError::validation(vec![invalid(
                            "types",
                            &format!(
                                "each value in types must be one of the following values: {}",
                                REQUEST_TYPES.join(", ")
                            ),
                            "Invalid option",
                        )]))
                    }
                }
            }
            out
        }
        None => {
            return Err(ApiError::validation(vec![invalid(
                "types",
                "types must be an array",
                "Invalid input: expected array, received undefined",
            )]))
        }
    };
    let reset = opt_bool(&body, "reset")?.unwrap_or(false);
    let Some(session) = db.session_mut(&token) else {
        return Err(ApiError::unauthorized("Invalid user token"));
    };
    if reset {
        session.checkpoints.clear();
        session.pending_reset = false;
    }
    if session.pending_reset {
        let line = dto::sync_line("SyncResetV1", json!({}), "SyncResetV1|reset");
        return Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], line).into_response());
    }
    let user_id = session.user_id.clone();
    let wants = |t: &str| types.iter().any(|x| x == t);
    let mut out = String::new();

    if wants("AuthUsersV1") {
        let since = checkpoint(&db, &token, "AuthUserV1");
        if let Some(u) = db.user(&user_id).filter(|u| u.update_id > since) {
            let data = dto::sync_auth_user(u, db.usage(&u.id));
            out.push_str(&dto::sync_line(
                "AuthUserV1",
                data,
                &dto::ack("AuthUserV1", u.update_id),
            ));
        }
    }
    if wants("AssetsV1") {
        let since = checkpoint(&db, &token, "AssetDeleteV1");
        let mut deletes: Vec<_> = db
            .deleted
            .iter()
            .filter(|d| d.owner_id == user_id && d.update_id > since)
            .collect();
        deletes.sort_by_key(|d| d.update_id);
        for d in deletes {
            out.push_str(&dto::sync_line(
                "AssetDeleteV1",
                json!({ "assetId": d.asset_id }),
                &dto::ack("AssetDeleteV1", d.update_id),
            ));
        }
        let since = checkpoint(&db, &token, "AssetV1");
        let mut upserts: Vec<_> = db
            .assets
            .values()
            .filter(|a| a.owner_id == user_id && a.update_id > since)
            .collect();
        upserts.sort_by_key(|a| a.update_id);
        for a in upserts {
            out.push_str(&dto::sync_line(
                "AssetV1",
                dto::sync_asset(a),
                &dto::ack("AssetV1", a.update_id),
            ));
        }
    }
    if wants("AssetExifsV1") {
        let since = checkpoint(&db, &token, "AssetExifV1");
        let mut rows: Vec<_> = db
            .assets
            .values()
            .filter(|a| a.owner_id == user_id && a.exif_update_id > since)
            .collect();
        rows.sort_by_key(|a| a.exif_update_id);
        for a in rows {
            out.push_str(&dto::sync_line(
                "AssetExifV1",
                dto::sync_exif(a),
                &dto::ack("AssetExifV1", a.exif_update_id),
            ));
        }
    }
    let now_id = db.clock.update_id();
    out.push_str(&dto::sync_line(
        "SyncCompleteV1",
        json!({}),
        &dto::ack("SyncCompleteV1", now_id),
    ));
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], out).into_response())
}

pub(crate) async fn ack_post(
    State(app): State<App>,
    creds: Creds,
    JsonBody(body): JsonBody<Value>,
) -> Result<StatusCode, ApiError> {
    let mut db = app.lock();
    let token = session_only(&db, &creds, "syncCheckpoint.update")?;
    let Some(acks) = body.get("acks").and_then(Value::as_array) else {
        return Err(ApiError::validation(vec![invalid(
            "acks",
            "acks must be an array",
            "Invalid input: expected array, received undefined",
        )]));
    };
    if acks.len() > MAX_ACKS {
        return Err(ApiError::validation(vec![invalid(
            "acks",
            &format!("acks must contain no more than {MAX_ACKS} elements"),
            &format!("Too big: expected array to have <={MAX_ACKS} items"),
        )]));
    }
    let mut parsed = Vec::new();
    for ack in acks {
        let raw = ack.as_str().unwrap_or_default();
        let mut parts = raw.split('|');
        let kind = parts.next().unwrap_or_default();
        let id = parts.next().unwrap_or_default();
        if !ACK_TYPES.contains(&kind) {
            return Err(ApiError::bad_request(format!("Invalid ack type: {kind}")));
        }
        if kind == "SyncResetV1" {
            parsed.push((kind.to_string(), 0, raw.to_string()));
            continue;
        }
        let Some(update_id) = parse_update_id(id) else {
            return Err(ApiError::bad_request(format!("Invalid ack: {raw}")));
        };
        parsed.push((kind.to_string(), update_id, raw.to_string()));
    }
    let session = db
        .session_mut(&token)
        .ok_or_else(|| ApiError::unauthorized("Invalid user token"))?;
    for (kind, update_id, raw) in parsed {
        if kind == "SyncResetV1" {
            session.checkpoints.clear();
            session.pending_reset = false;
        } else {
            // One checkpoint per type; the last one in the request wins.
            session.checkpoints.insert(kind, (update_id, raw));
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn ack_get(State(app): State<App>, creds: Creds) -> Result<Json<Value>, ApiError> {
    let mut db = app.lock();
    let token = session_only(&db, &creds, "syncCheckpoint.read")?;
    let session = db
        .session_mut(&token)
        .ok_or_else(|| ApiError::unauthorized("Invalid user token"))?;
    let list: Vec<Value> = session
        .checkpoints
        .iter()
        .map(|(kind, (_, raw))| json!({ "type": kind, "ack": raw }))
        .collect();
    Ok(Json(Value::Array(list)))
}

pub(crate) async fn ack_delete(
    State(app): State<App>,
    creds: Creds,
    JsonBody(body): JsonBody<Value>,
) -> Result<StatusCode, ApiError> {
    let mut db = app.lock();
    let token = session_only(&db, &creds, "syncCheckpoint.delete")?;
    let types: Option<BTreeSet<String>> = body.get("types").and_then(Value::as_array).map(|l| {
        l.iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    });
    let session = db
        .session_mut(&token)
        .ok_or_else(|| ApiError::unauthorized("Invalid user token"))?;
    match types {
        Some(types) => session.checkpoints.retain(|k, _| !types.contains(k)),
        None => session.checkpoints.clear(),
    }
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// Legacy sync (v2.7.5 only)

fn legacy_auth(db: &Db, creds: &Creds) -> Result<Auth, ApiError> {
    authenticate(db, creds, Some("all"))
}

/// Users whose assets `user_id` may sync: itself and every partner sharing with it.
fn partner_ids(db: &Db, user_id: &str) -> BTreeSet<String> {
    let mut ids: BTreeSet<String> = db
        .partners
        .iter()
        .filter(|p| p.shared_with_id == user_id)
        .map(|p| p.sharer_id.clone())
        .collect();
    ids.insert(user_id.to_string());
    ids
}

pub(crate) async fn full_sync(
    State(app): State<App>,
    creds: Creds,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let db = app.lock();
    let auth = legacy_auth(&db, &creds)?;
    let until = body
        .get("updatedUntil")
        .and_then(Value::as_str)
        .and_then(|s| parse_date(s, false));
    let limit = body.get("limit").and_then(Value::as_u64).filter(|l| *l > 0);
    let (Some(until), Some(limit)) = (until, limit) else {
        return Err(ApiError::validation(vec![
            "updatedUntil must be a Date instance".to_string(),
            "limit must be a positive number".to_string(),
        ]));
    };
    let last_id = body.get("lastId").and_then(Value::as_str).unwrap_or("");
    let owner = match body.get("userId").and_then(Value::as_str) {
        Some(u) if is_uuid(u) => {
            if !partner_ids(&db, &auth.user_id).contains(u) {
                return Err(ApiError::no_access("timeline.read"));
            }
            u.to_string()
        }
        _ => auth.user_id.clone(),
    };
    let mut rows: Vec<_> = db
        .assets
        .values()
        .filter(|a| a.owner_id == owner)
        .filter(|a| a.id.as_str() > last_id && a.updated_at <= until.utc_ms)
        .filter(|a| a.visibility != Visibility::Hidden)
        .collect();
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    let items = rows
        .into_iter()
        .take(limit as usize)
        .map(|a| dto::asset(a, Dialect::Immich, true))
        .collect();
    Ok(Json(Value::Array(items)))
}

/// How far back delta sync goes before it asks for a full sync.
const DELTA_MAX_AGE_MS: i64 = 100 * 24 * 3600 * 1000;
const DELTA_MAX_CHANGES: usize = 10_000;

pub(crate) async fn delta_sync(
    State(app): State<App>,
    creds: Creds,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let db = app.lock();
    let auth = legacy_auth(&db, &creds)?;
    let after = body
        .get("updatedAfter")
        .and_then(Value::as_str)
        .and_then(|s| parse_date(s, false));
    let user_ids: Option<BTreeSet<String>> =
        body.get("userIds").and_then(Value::as_array).map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        });
    let (Some(after), Some(user_ids)) = (after, user_ids) else {
        return Err(ApiError::validation(vec![
            "updatedAfter must be a Date instance".to_string(),
            "each value in userIds must be a UUID".to_string(),
        ]));
    };
    let full = json!({ "needsFullSync": true, "upserted": [], "deleted": [] });
    if after.utc_ms < now_ms() - DELTA_MAX_AGE_MS || user_ids != partner_ids(&db, &auth.user_id) {
        return Ok(Json(full));
    }
    let mut rows: Vec<_> = db
        .assets
        .values()
        .filter(|a| user_ids.contains(&a.owner_id))
        .filter(|a| a.updated_at > after.utc_ms && a.visibility != Visibility::Hidden)
        .collect();
    if rows.len() >= DELTA_MAX_CHANGES {
        return Ok(Json(full));
    }
    rows.sort_by_key(|a| (a.updated_at, a.seq));
    let upserted: Vec<Value> = rows
        .into_iter()
        .map(|a| dto::asset(a, Dialect::Immich, true))
        .collect();
    // v2.7.5 reads a table nothing writes any more, so `deleted` is always empty.
    Ok(Json(
        json!({ "needsFullSync": false, "upserted": upserted, "deleted": [] }),
    ))
}
