//! Stacks (docs/SERVER-API.md#stacks): `POST /stacks` (the first id is the primary; a stack
//! whose primary is given again is merged into the new one), `GET /stacks[?primaryAssetId=]`,
//! `GET|PUT|DELETE /stacks/:id`, `DELETE /stacks {ids}` and
//! `DELETE /stacks/:id/assets/:assetId`. Every change emits `on_asset_stack_update` (no
//! payload) and bumps the members' `updatedAt`, as Immich's stack repository does.
//!
//! A stack lives in `State::stacks`; membership is each asset's `stack_id`. Stacks are only
//! ever the caller's own: there is no shared access here.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use crate::auth::{authenticate, Creds};
use crate::dto;
use crate::error::{invalid, opt_str, uuid_list, ApiError, JsonBody};
use crate::state::{is_uuid, new_id, App, Stack, State as Db};

fn check_uuid(field: &str, id: &str) -> Result<(), ApiError> {
    if is_uuid(id) {
        Ok(())
    } else {
        Err(ApiError::validation(vec![invalid(
            field,
            &format!("{field} must be a UUID"),
            "Invalid UUID",
        )]))
    }
}

fn owned_stack<'a>(
    db: &'a Db,
    user_id: &str,
    id: &str,
    permission: &str,
) -> Result<&'a Stack, ApiError> {
    check_uuid("id", id)?;
    db.stacks
        .iter()
        .find(|s| s.id == id && s.owner_id == user_id)
        .ok_or_else(|| ApiError::no_access(permission))
}

/// Points `ids` at `stack_id` (or at nothing) and bumps them.
fn set_stack(db: &mut Db, ids: &[String], stack_id: Option<&str>) {
    let now = db.clock.tick();
    for id in ids {
        let update_id = db.clock.update_id();
        if let Some(a) = db.assets.get_mut(id) {
            a.stack_id = stack_id.map(str::to_string);
            a.updated_at = now;
            a.update_id = update_id;
        }
    }
}

pub(crate) async fn create(
    State(app): State<App>,
    creds: Creds,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let dialect = app.dialect();
    let mut db = app.lock();
    let auth = authenticate(&db, &creds, Some("stack.create"))?;
    let ids = uuid_list(&body, "assetIds", true)?;
    if ids.len() < 2 {
        return Err(ApiError::validation(vec![invalid(
            "assetIds",
            "assetIds must contain at least 2 elements",
            "Too small: expected array to have >=2 items",
        )]));
    }
    // `requireAccess(AssetUpdate)` on every id: all of them must be the caller's.
    let all_owned = ids.iter().all(|id| {
        db.assets
            .get(id)
            .is_some_and(|a| a.owner_id == auth.user_id)
    });
    if !all_owned {
        return Err(ApiError::no_access("asset.update"));
    }
    // Stacks whose primary is among the ids are dissolved into the new one.
    let merged: Vec<String> = db
        .stacks
        .iter()
        .filter(|s| s.owner_id == auth.user_id && ids.contains(&s.primary_asset_id))
        .map(|s| s.id.clone())
        .collect();
    let mut members = ids.clone();
    for stack_id in &merged {
        for a in db.assets.values() {
            if a.stack_id.as_deref() == Some(stack_id.as_str())
                && a.deleted_at.is_none()
                && !members.contains(&a.id)
            {
                members.push(a.id.clone());
            }
        }
    }
    db.stacks.retain(|s| !merged.contains(&s.id));
    let stack = Stack {
        id: new_id(),
        owner_id: auth.user_id.clone(),
        primary_asset_id: ids[0].clone(),
    };
    db.stacks.push(stack.clone());
    set_stack(&mut db, &members, Some(&stack.id));
    db.emit_bare(&auth.user_id, "on_asset_stack_update");
    let value = dto::stack(&db, &stack, dialect);
    Ok((StatusCode::CREATED, Json(value)).into_response())
}

pub(crate) async fn list(
    State(app): State<App>,
    creds: Creds,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let db = app.lock();
    let auth = authenticate(&db, &creds, Some("stack.read"))?;
    let primary = q.get("primaryAssetId");
    if let Some(p) = primary {
        check_uuid("primaryAssetId", p)?;
    }
    let items: Vec<Value> = db
        .stacks
        .iter()
        .filter(|s| s.owner_id == auth.user_id)
        .filter(|s| primary.is_none_or(|p| *p == s.primary_asset_id))
        .map(|s| dto::stack(&db, s, app.dialect()))
        .collect();
    Ok(Json(Value::Array(items)))
}

pub(crate) async fn get(
    State(app): State<App>,
    creds: Creds,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let db = app.lock();
    let auth = authenticate(&db, &creds, Some("stack.read"))?;
    let stack = owned_stack(&db, &auth.user_id, &id, "stack.read")?;
    Ok(Json(dto::stack(&db, stack, app.dialect())))
}

pub(crate) async fn update(
    State(app): State<App>,
    creds: Creds,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let mut db = app.lock();
    let auth = authenticate(&db, &creds, Some("stack.update"))?;
    owned_stack(&db, &auth.user_id, &id, "stack.update")?;
    if let Some(primary) = opt_str(&body, "primaryAssetId")? {
        check_uuid("primaryAssetId", primary)?;
        let member = db.stack_members(&id).iter().any(|a| a.id == primary);
        if !member {
            return Err(ApiError::bad_request("Primary asset must be in the stack"));
        }
        let primary = primary.to_string();
        if let Some(s) = db.stacks.iter_mut().find(|s| s.id == id) {
            s.primary_asset_id = primary;
        }
    }
    db.emit_bare(&auth.user_id, "on_asset_stack_update");
    let stack = owned_stack(&db, &auth.user_id, &id, "stack.update")?;
    Ok(Json(dto::stack(&db, stack, app.dialect())))
}

pub(crate) async fn delete(
    State(app): State<App>,
    creds: Creds,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut db = app.lock();
    let auth = authenticate(&db, &creds, Some("stack.delete"))?;
    owned_stack(&db, &auth.user_id, &id, "stack.delete")?;
    db.dissolve_stack(&id);
    db.emit_bare(&auth.user_id, "on_asset_stack_update");
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn delete_many(
    State(app): State<App>,
    creds: Creds,
    JsonBody(body): JsonBody<Value>,
) -> Result<StatusCode, ApiError> {
    let mut db = app.lock();
    let auth = authenticate(&db, &creds, Some("stack.delete"))?;
    let ids = uuid_list(&body, "ids", true)?;
    let all_owned = ids.iter().all(|id| {
        db.stacks
            .iter()
            .any(|s| &s.id == id && s.owner_id == auth.user_id)
    });
    if !all_owned {
        return Err(ApiError::no_access("stack.delete"));
    }
    for id in &ids {
        db.dissolve_stack(id);
    }
    db.emit_bare(&auth.user_id, "on_asset_stack_update");
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn remove_asset(
    State(app): State<App>,
    creds: Creds,
    Path((id, asset_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let mut db = app.lock();
    let auth = authenticate(&db, &creds, Some("stack.update"))?;
    check_uuid("assetId", &asset_id)?;
    let primary = owned_stack(&db, &auth.user_id, &id, "stack.update")?
        .primary_asset_id
        .clone();
    let in_stack = db
        .assets
        .get(&asset_id)
        .is_some_and(|a| a.stack_id.as_deref() == Some(id.as_str()));
    if !in_stack {
        return Err(ApiError::bad_request("Asset not in stack"));
    }
    if primary == asset_id {
        return Err(ApiError::bad_request("Cannot remove stack's primary asset"));
    }
    set_stack(&mut db, &[asset_id], None);
    db.emit_bare(&auth.user_id, "on_asset_stack_update");
    Ok(StatusCode::NO_CONTENT)
}
