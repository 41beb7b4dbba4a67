//! API keys and users made through the API, the way a person sets up a real server:
//! `POST|GET /api-keys`, `DELETE /api-keys/:id` (docs/SERVER-API.md#permissions) and
//! `POST|GET /admin/users`.
//!
//! A key can only be given permissions its creator has (`Cannot grant permissions you do not
//! have`, as Immich's `ApiKeyService`); admin routes need an admin (403 `Forbidden`) as well as
//! the `adminUser.*` permission.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::auth::{authenticate, granted, Auth, Creds};
use crate::error::{invalid, opt_bool, opt_str, ApiError, JsonBody};
use crate::state::{fmt_ts, is_uuid, App, State as Db};

/// Immich's `Permission` enum (v2.7.5 and the next major together).
pub(crate) const PERMISSIONS: &[&str] = &[
    "all",
    "activity.create",
    "activity.read",
    "activity.update",
    "activity.delete",
    "activity.statistics",
    "apiKey.create",
    "apiKey.read",
    "apiKey.update",
    "apiKey.delete",
    "asset.read",
    "asset.update",
    "asset.delete",
    "asset.statistics",
    "asset.share",
    "asset.view",
    "asset.download",
    "asset.upload",
    "asset.replace",
    "asset.copy",
    "asset.derive",
    "asset.edit.get",
    "asset.edit.create",
    "asset.edit.delete",
    "album.create",
    "album.read",
    "album.update",
    "album.delete",
    "album.statistics",
    "album.share",
    "album.download",
    "albumAsset.create",
    "albumAsset.delete",
    "albumUser.create",
    "albumUser.update",
    "albumUser.delete",
    "auth.changePassword",
    "authDevice.delete",
    "archive.read",
    "backup.list",
    "backup.download",
    "backup.upload",
    "backup.delete",
    "duplicate.read",
    "duplicate.delete",
    "face.create",
    "face.read",
    "face.update",
    "face.delete",
    "folder.read",
    "job.create",
    "job.read",
    "library.create",
    "library.read",
    "library.update",
    "library.delete",
    "library.statistics",
    "timeline.read",
    "timeline.download",
    "maintenance",
    "map.read",
    "map.search",
    "memory.create",
    "memory.read",
    "memory.update",
    "memory.delete",
    "memory.statistics",
    "memoryAsset.create",
    "memoryAsset.delete",
    "notification.create",
    "notification.read",
    "notification.update",
    "notification.delete",
    "partner.create",
    "partner.read",
    "partner.update",
    "partner.delete",
    "person.create",
    "person.read",
    "person.update",
    "person.delete",
    "person.statistics",
    "person.merge",
    "person.reassign",
    "pinCode.create",
    "pinCode.update",
    "pinCode.delete",
    "plugin.create",
    "plugin.read",
    "plugin.update",
    "plugin.delete",
    "server.about",
    "server.apkLinks",
    "server.storage",
    "server.statistics",
    "server.versionCheck",
    "serverLicense.read",
    "serverLicense.update",
    "serverLicense.delete",
    "session.create",
    "session.read",
    "session.update",
    "session.delete",
    "session.lock",
    "sharedLink.create",
    "sharedLink.read",
    "sharedLink.update",
    "sharedLink.delete",
    "stack.create",
    "stack.read",
    "stack.update",
    "stack.delete",
    "sync.stream",
    "syncCheckpoint.read",
    "syncCheckpoint.update",
    "syncCheckpoint.delete",
    "systemConfig.read",
    "systemConfig.update",
    "systemMetadata.read",
    "systemMetadata.update",
    "tag.create",
    "tag.read",
    "tag.update",
    "tag.delete",
    "tag.asset",
    "user.read",
    "user.update",
    "userLicense.create",
    "userLicense.read",
    "userLicense.update",
    "userLicense.delete",
    "userOnboarding.read",
    "userOnboarding.update",
    "userOnboarding.delete",
    "userPreference.read",
    "userPreference.update",
    "userProfileImage.create",
    "userProfileImage.read",
    "userProfileImage.update",
    "userProfileImage.delete",
    "queue.read",
    "queue.update",
    "queueJob.create",
    "queueJob.read",
    "queueJob.update",
    "queueJob.delete",
    "workflow.create",
    "workflow.read",
    "workflow.update",
    "workflow.delete",
    "adminUser.create",
    "adminUser.read",
    "adminUser.update",
    "adminUser.delete",
    "adminSession.read",
    "adminAuth.unlinkAll",
];

fn key_json(k: &crate::state::ApiKey) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "createdAt": fmt_ts(k.created_at),
        "updatedAt": fmt_ts(k.created_at),
        "permissions": k.permissions,
    })
}

/// The permissions of the credential in use: everything for a session, the key's list for a
/// key.
fn caller_permissions(db: &Db, auth: &Auth) -> Vec<String> {
    match &auth.api_key_id {
        Some(id) => db
            .api_keys
            .iter()
            .find(|k| &k.id == id)
            .map(|k| k.permissions.clone())
            .unwrap_or_default(),
        None => vec!["all".to_string()],
    }
}

/// `POST /api-keys {name?, permissions}`: 201 `{secret, apiKey}`.
pub(crate) async fn create_key(
    State(app): State<App>,
    creds: Creds,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let mut db = app.lock();
    let auth = authenticate(&db, &creds, Some("apiKey.create"))?;
    let name = opt_str(&body, "name")?.unwrap_or("API Key").to_string();
    let list = body.get("permissions").and_then(Value::as_array);
    let mut permissions = Vec::new();
    for p in list.into_iter().flatten() {
        match p.as_str() {
            Some(p) if PERMISSIONS.contains(&p) => permissions.push(p.to_string()),
            _ => {
                return Err(ApiError::validation(vec![invalid(
                    "permissions",
                    &format!(
                        "each value in permissions must be one of the following values: {}",
                        PERMISSIONS.join(", ")
                    ),
                    "Invalid option",
                )]))
            }
        }
    }
    if permissions.is_empty() {
        return Err(ApiError::validation(vec![invalid(
            "permissions",
            "permissions must contain at least 1 elements",
            "Too small: expected array to have >=1 items",
        )]));
    }
    let mine = caller_permissions(&db, &auth);
    if !permissions.iter().all(|p| granted(&mine, p)) {
        return Err(ApiError::bad_request(
            "Cannot grant permissions you do not have",
        ));
    }
    let perms: Vec<&str> = permissions.iter().map(String::as_str).collect();
    let secret = db.create_api_key(&auth.user_id, &name, &perms);
    let key = db
        .api_keys
        .last()
        .map(key_json)
        .ok_or_else(|| ApiError::new(500, "Failed to create api key"))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "secret": secret, "apiKey": key })),
    )
        .into_response())
}

/// `GET /api-keys`: the caller's keys.
pub(crate) async fn list_keys(
    State(app): State<App>,
    creds: Creds,
) -> Result<Json<Value>, ApiError> {
    let db = app.lock();
    let auth = authenticate(&db, &creds, Some("apiKey.read"))?;
    let keys: Vec<Value> = db
        .api_keys
        .iter()
        .filter(|k| k.user_id == auth.user_id)
        .map(key_json)
        .collect();
    Ok(Json(Value::Array(keys)))
}

/// `DELETE /api-keys/:id`: 204; someone else's key is 400 like a missing one.
pub(crate) async fn delete_key(
    State(app): State<App>,
    creds: Creds,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut db = app.lock();
    let auth = authenticate(&db, &creds, Some("apiKey.delete"))?;
    if !is_uuid(&id) {
        return Err(ApiError::validation(vec![invalid(
            "id",
            "id must be a UUID",
            "Invalid UUID",
        )]));
    }
    let before = db.api_keys.len();
    db.api_keys
        .retain(|k| !(k.id == id && k.user_id == auth.user_id));
    if db.api_keys.len() == before {
        return Err(ApiError::no_access("apiKey.delete"));
    }
    Ok(StatusCode::NO_CONTENT)
}

fn require_admin(db: &Db, auth: &Auth) -> Result<(), ApiError> {
    match db.user(&auth.user_id) {
        Some(u) if u.is_admin => Ok(()),
        _ => Err(ApiError::forbidden("Forbidden")),
    }
}

/// `POST /admin/users {email, password, name, isAdmin?, quotaSizeInBytes?}`: 201
/// `UserAdminResponseDto`. The new user has not been onboarded.
pub(crate) async fn create_user(
    State(app): State<App>,
    creds: Creds,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let mut db = app.lock();
    let auth = authenticate(&db, &creds, Some("adminUser.create"))?;
    require_admin(&db, &auth)?;
    let email = opt_str(&body, "email")?;
    let password = opt_str(&body, "password")?;
    let name = opt_str(&body, "name")?;
    let mut errors = Vec::new();
    if !email.is_some_and(|e| e.contains('@')) {
        errors.push(invalid(
            "email",
            "email must be an email",
            "Invalid email address",
        ));
    }
    if password.is_none() {
        errors.push(invalid(
            "password",
            "password must be a string",
            "Invalid input: expected string, received undefined",
        ));
    }
    if name.is_none() {
        errors.push(invalid(
            "name",
            "name must be a string",
            "Invalid input: expected string, received undefined",
        ));
    }
    let (Some(email), Some(password), Some(name), true) =
        (email, password, name, errors.is_empty())
    else {
        return Err(ApiError::validation(errors));
    };
    let email = email.trim().to_lowercase();
    if db.users.iter().any(|u| u.email == email) {
        return Err(ApiError::bad_request("User exists"));
    }
    let is_admin = opt_bool(&body, "isAdmin")?.unwrap_or(false);
    let quota = body.get("quotaSizeInBytes").and_then(Value::as_u64);
    let id = db.add_user(&email, password, name, is_admin);
    if let Some(u) = db.user_mut(&id) {
        u.quota = quota;
    }
    let user = db
        .user(&id)
        .ok_or_else(|| ApiError::new(500, "Failed to create user"))?;
    let value = crate::dto::user_admin(user, 0);
    Ok((StatusCode::CREATED, Json(value)).into_response())
}

/// `GET /admin/users`: every user, admins only.
pub(crate) async fn list_users(
    State(app): State<App>,
    creds: Creds,
) -> Result<Json<Value>, ApiError> {
    let db = app.lock();
    let auth = authenticate(&db, &creds, Some("adminUser.read"))?;
    require_admin(&db, &auth)?;
    let users: Vec<Value> = db
        .users
        .iter()
        .map(|u| crate::dto::user_admin(u, db.usage(&u.id)))
        .collect();
    Ok(Json(Value::Array(users)))
}
