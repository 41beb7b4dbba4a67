//! Albums (docs/SERVER-API.md#albums): list, create, read, rename, delete, add and remove
//! assets. Albums are only ever owned by their creator here; there is no album sharing.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::auth::{authenticate, Creds};
use crate::dto;
use crate::error::{invalid, opt_str, uuid_list, ApiError, JsonBody};
use crate::state::{is_uuid, new_id, Album, App, State as Db};

fn owned_album<'a>(
    db: &'a Db,
    user_id: &str,
    id: &str,
    permission: &str,
) -> Result<&'a Album, ApiError> {
    if !is_uuid(id) {
        return Err(ApiError::validation(vec![invalid(
            "id",
            "id must be a UUID",
            "Invalid UUID",
        )]));
    }
    db.albums
        .iter()
        .find(|a| a.id == id && a.owner_id == user_id)
        .ok_or_else(|| ApiError::no_access(permission))
}

fn album_mut<'a>(db: &'a mut Db, id: &str) -> Option<&'a mut Album> {
    db.albums.iter_mut().find(|a| a.id == id)
}

pub(crate) async fn list(
    State(app): State<App>,
    creds: Creds,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let db = app.lock();
    let auth = authenticate(&db, &creds, Some("album.read"))?;
    // Nothing is ever shared, so `shared=true` lists nothing.
    let shared = q.get("shared").map(String::as_str) == Some("true");
    let asset_id = q.get("assetId");
    let items: Vec<Value> = db
        .albums
        .iter()
        .filter(|a| !shared && a.owner_id == auth.user_id)
        .filter(|a| asset_id.is_none_or(|id| a.asset_ids.contains(id)))
        .map(|a| dto::album(&db, a, app.dialect(), false))
        .collect();
    Ok(Json(Value::Array(items)))
}

pub(crate) async fn create(
    State(app): State<App>,
    creds: Creds,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let mut db = app.lock();
    let auth = authenticate(&db, &creds, Some("album.create"))?;
    let Some(name) = opt_str(&body, "albumName")? else {
        return Err(ApiError::validation(vec![invalid(
            "albumName",
            "albumName must be a string",
            "Invalid input: expected string, received undefined",
        )]));
    };
    let description = opt_str(&body, "description")?
        .unwrap_or_default()
        .to_string();
    let requested = uuid_list(&body, "assetIds", false)?;
    // Assets the caller cannot share are dropped silently.
    let mut asset_ids: Vec<String> = Vec::new();
    for id in requested {
        let ok = db
            .assets
            .get(&id)
            .is_some_and(|a| db.can_read(&auth.user_id, a));
        if ok && !asset_ids.contains(&id) {
            asset_ids.push(id);
        }
    }
    let now = db.clock.tick();
    let album = Album {
        id: new_id(),
        owner_id: auth.user_id.clone(),
        name: name.to_string(),
        description,
        created_at: now,
        updated_at: now,
        thumbnail: asset_ids.first().cloned(),
        asset_ids,
    };
    let value = dto::album(&db, &album, app.dialect(), true);
    db.albums.push(album);
    Ok((StatusCode::CREATED, Json(value)).into_response())
}

pub(crate) async fn get(
    State(app): State<App>,
    creds: Creds,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let db = app.lock();
    let auth = authenticate(&db, &creds, Some("album.read"))?;
    let album = owned_album(&db, &auth.user_id, &id, "album.read")?;
    let with_assets = q.get("withoutAssets").map(String::as_str) != Some("true");
    Ok(Json(dto::album(&db, album, app.dialect(), with_assets)))
}

pub(crate) async fn update(
    State(app): State<App>,
    creds: Creds,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let mut db = app.lock();
    let auth = authenticate(&db, &creds, Some("album.update"))?;
    owned_album(&db, &auth.user_id, &id, "album.update")?;
    let name = opt_str(&body, "albumName")?.map(str::to_string);
    let description = opt_str(&body, "description")?.map(str::to_string);
    let thumbnail = opt_str(&body, "albumThumbnailAssetId")?.map(str::to_string);
    let now = db.clock.tick();
    if let Some(album) = album_mut(&mut db, &id) {
        if let Some(n) = name {
            album.name = n;
        }
        if let Some(d) = description {
            album.description = d;
        }
        if let Some(t) = thumbnail {
            album.thumbnail = Some(t);
        }
        album.updated_at = now;
    }
    let album = owned_album(&db, &auth.user_id, &id, "album.update")?;
    Ok(Json(dto::album(&db, album, app.dialect(), false)))
}

pub(crate) async fn delete(
    State(app): State<App>,
    creds: Creds,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut db = app.lock();
    let auth = authenticate(&db, &creds, Some("album.delete"))?;
    owned_album(&db, &auth.user_id, &id, "album.delete")?;
    db.albums.retain(|a| a.id != id);
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /albums/:id/assets`: per-id results; ids already present are `duplicate`.
pub(crate) async fn add_assets(
    State(app): State<App>,
    creds: Creds,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let mut db = app.lock();
    let auth = authenticate(&db, &creds, Some("albumAsset.create"))?;
    let existing = owned_album(&db, &auth.user_id, &id, "albumAsset.create")?
        .asset_ids
        .clone();
    let ids = uuid_list(&body, "ids", true)?;
    let mut results = Vec::with_capacity(ids.len());
    let mut added = Vec::new();
    for asset_id in ids {
        if existing.contains(&asset_id) || added.contains(&asset_id) {
            results.push(json!({ "id": asset_id, "success": false, "error": "duplicate" }));
            continue;
        }
        let allowed = db
            .assets
            .get(&asset_id)
            .is_some_and(|a| db.can_read(&auth.user_id, a));
        if !allowed {
            results.push(json!({ "id": asset_id, "success": false, "error": "no_permission" }));
            continue;
        }
        results.push(json!({ "id": asset_id, "success": true }));
        added.push(asset_id);
    }
    if !added.is_empty() {
        let now = db.clock.tick();
        if let Some(album) = album_mut(&mut db, &id) {
            if album.thumbnail.is_none() {
                album.thumbnail = added.first().cloned();
            }
            album.asset_ids.extend(added);
            album.updated_at = now;
        }
    }
    Ok(Json(Value::Array(results)))
}

/// `DELETE /albums/:id/assets`: per-id results; ids not in the album are `not_found`.
pub(crate) async fn remove_assets(
    State(app): State<App>,
    creds: Creds,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let mut db = app.lock();
    let auth = authenticate(&db, &creds, Some("albumAsset.delete"))?;
    owned_album(&db, &auth.user_id, &id, "albumAsset.delete")?;
    let ids = uuid_list(&body, "ids", true)?;
    let now = db.clock.tick();
    let Some(album) = album_mut(&mut db, &id) else {
        return Err(ApiError::no_access("albumAsset.delete"));
    };
    let mut results = Vec::with_capacity(ids.len());
    for asset_id in ids {
        if let Some(pos) = album.asset_ids.iter().position(|x| *x == asset_id) {
            album.asset_ids.remove(pos);
            album.updated_at = now;
            results.push(json!({ "id": asset_id, "success": true }));
        } else {
            results.push(json!({ "id": asset_id, "success": false, "error": "not_found" }));
        }
    }
    if album
        .thumbnail
        .as_ref()
        .is_some_and(|t| !album.asset_ids.contains(t))
    {
        album.thumbnail = album.asset_ids.first().cloned();
    }
    Ok(Json(Value::Array(results)))
}
