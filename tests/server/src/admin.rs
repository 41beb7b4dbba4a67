//! `/__admin/` routes: the [`ServerHandle`] over HTTP, for the standalone binary. JSON in and
//! out, no authentication, never counted and never subject to faults. The daemon never calls
//! them.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, JsonBody};
use crate::faults::Failure;
use crate::handle::{AssetUpdate, NewAsset, ServerHandle};
use crate::state::{App, Visibility};

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/__admin/info", get(info))
        .route("/__admin/fault", post(set_fault).delete(clear_faults))
        .route("/__admin/counters", get(counters).delete(reset_counters))
        .route("/__admin/assets", get(list_assets))
        .route("/__admin/uploads", get(list_uploads))
        .route("/__admin/users", get(list_users).post(add_user))
        .route("/__admin/api-keys", post(add_api_key))
        .route("/__admin/partners", post(add_partner))
        .route("/__admin/sync-reset", post(sync_reset))
        .route("/__admin/actions/upload", post(upload))
        .route("/__admin/actions/insert-many", post(insert_many))
        .route("/__admin/actions/trash", post(trash))
        .route("/__admin/actions/restore", post(restore))
        .route("/__admin/actions/delete", post(delete))
        .route("/__admin/actions/update", post(update))
        .route("/__admin/actions/backdate", post(backdate))
}

fn handle(app: App) -> ServerHandle {
    ServerHandle { app }
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(e.to_string())
}

async fn info(State(app): State<App>) -> Json<Value> {
    let h = handle(app);
    Json(json!({
        "url": h.base_url(),
        "apiUrl": h.api_url(),
        "dialect": h.dialect().as_str(),
        "adminId": h.admin_id(),
        "adminEmail": h.admin_email(),
        "adminPassword": h.admin_password(),
        "apiKey": h.api_key(),
    }))
}

fn one() -> u32 {
    1
}

/// `POST /__admin/fault` bodies, selected by `kind`.
#[derive(Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
enum FaultRequest {
    FailNext {
        route: String,
        #[serde(default = "one")]
        times: u32,
        status: u16,
        #[serde(default)]
        body: Option<String>,
        #[serde(default)]
        content_type: Option<String>,
        #[serde(default)]
        retry_after: Option<String>,
    },
    DropAfterBytes {
        route: String,
        bytes: u64,
        #[serde(default = "one")]
        times: u32,
    },
    Delay {
        route: String,
        ms: u64,
    },
    SlowBody {
        bytes_per_sec: u64,
    },
    StallAfterStore {
        #[serde(default = "one")]
        times: u32,
    },
    CorruptUploads {
        on: bool,
    },
    CorruptDownloads {
        on: bool,
    },
    Unauthorized {
        on: bool,
    },
    StorageFull {
        on: bool,
    },
    Offline {
        on: bool,
    },
    RejectWebsockets {
        on: bool,
    },
    CloseWebsockets,
    HugeReply {
        route: String,
        bytes: u64,
        #[serde(default = "one")]
        times: u32,
    },
    TrickleReply {
        route: String,
        bytes_per_sec: u64,
        #[serde(default = "one")]
        times: u32,
    },
    NonUuidIds {
        on: bool,
    },
    DuplicateRows {
        on: bool,
    },
    UpgradeTo {
        major: u32,
        minor: u32,
        patch: u32,
    },
    /// `immich`, `immich-next` or `seed`.
    RestartAs {
        dialect: String,
    },
    Quota {
        #[serde(default)]
        user_id: Option<String>,
        bytes: Option<u64>,
    },
    Clear,
}

async fn set_fault(
    State(app): State<App>,
    JsonBody(req): JsonBody<Value>,
) -> Result<StatusCode, ApiError> {
    let req: FaultRequest = serde_json::from_value(req).map_err(bad)?;
    let h = handle(app);
    match req {
        FaultRequest::FailNext {
            route,
            times,
            status,
            body,
            content_type,
            retry_after,
        } => h.fail_with(
            &route,
            times,
            Failure {
                status,
                body,
                content_type,
                retry_after,
            },
        ),
        FaultRequest::DropAfterBytes {
            route,
            bytes,
            times,
        } => h.drop_after_bytes(&route, bytes, times),
        FaultRequest::Delay { route, ms } => h.delay(&route, Duration::from_millis(ms)),
        FaultRequest::SlowBody { bytes_per_sec } => h.slow_body(bytes_per_sec),
        FaultRequest::StallAfterStore { times } => h.stall_after_store(times),
        FaultRequest::CorruptUploads { on } => h.corrupt_uploads(on),
        FaultRequest::CorruptDownloads { on } => h.corrupt_downloads(on),
        FaultRequest::Unauthorized { on } => h.unauthorized(on),
        FaultRequest::StorageFull { on } => h.storage_full(on),
        FaultRequest::RejectWebsockets { on } => h.reject_websockets(on),
        FaultRequest::Offline { on } => h.offline(on),
        FaultRequest::CloseWebsockets => h.close_websockets(),
        FaultRequest::HugeReply {
            route,
            bytes,
            times,
        } => h.huge_reply(&route, bytes, times),
        FaultRequest::TrickleReply {
            route,
            bytes_per_sec,
            times,
        } => h.trickle_reply(&route, bytes_per_sec, times),
        FaultRequest::NonUuidIds { on } => h.non_uuid_ids(on),
        FaultRequest::DuplicateRows { on } => h.duplicate_rows(on),
        FaultRequest::UpgradeTo {
            major,
            minor,
            patch,
        } => h.upgrade_to(major, minor, patch),
        FaultRequest::RestartAs { dialect } => h.restart_as(dialect.parse().map_err(bad)?),
        FaultRequest::Quota { user_id, bytes } => {
            let user = user_id.unwrap_or_else(|| h.admin_id());
            h.set_quota(&user, bytes);
        }
        FaultRequest::Clear => h.clear_faults(),
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn clear_faults(State(app): State<App>) -> StatusCode {
    handle(app).clear_faults();
    StatusCode::NO_CONTENT
}

async fn counters(State(app): State<App>) -> Json<Value> {
    let h = handle(app.clone());
    let requests: BTreeMap<String, Value> = {
        let db = app.lock();
        db.requests
            .iter()
            .map(|(route, c)| {
                let by_status: BTreeMap<String, u64> = c
                    .by_status
                    .iter()
                    .map(|(s, n)| (s.to_string(), *n))
                    .collect();
                (
                    route.clone(),
                    json!({ "total": c.total, "byStatus": by_status }),
                )
            })
            .collect()
    };
    let per_user: BTreeMap<String, usize> = {
        let db = app.lock();
        db.users
            .iter()
            .map(|u| {
                let n = db.assets.values().filter(|a| a.owner_id == u.id).count();
                (u.id.clone(), n)
            })
            .collect()
    };
    Json(json!({
        "requests": requests,
        "uploadBodies": h.upload_bodies(),
        "uploadBodyBytes": h.upload_body_bytes(),
        "uploadFileBytes": h.upload_file_bytes(),
        "emptyBulkChecks": h.empty_bulk_checks(),
        "assetsPerUser": per_user,
        "websockets": h.websocket_count(),
    }))
}

async fn reset_counters(State(app): State<App>) -> StatusCode {
    handle(app).reset_counters();
    StatusCode::NO_CONTENT
}

async fn list_assets(
    State(app): State<App>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Json<Value> {
    let h = handle(app);
    let list = match q.get("userId") {
        Some(user) => h.assets(user),
        None => h.all_assets(),
    };
    Json(serde_json::to_value(list).unwrap_or_default())
}

/// `GET /__admin/uploads`: every upload's form parts, status and asset, oldest first.
async fn list_uploads(State(app): State<App>) -> Json<Value> {
    Json(serde_json::to_value(handle(app).uploads()).unwrap_or_default())
}

async fn list_users(State(app): State<App>) -> Json<Value> {
    let db = app.lock();
    let users: Vec<Value> = db
        .users
        .iter()
        .map(|u| {
            json!({
                "id": u.id,
                "email": u.email,
                "name": u.name,
                "isAdmin": u.is_admin,
                "quotaSizeInBytes": u.quota,
            })
        })
        .collect();
    Json(Value::Array(users))
}

#[derive(Deserialize)]
struct NewUser {
    email: String,
    password: String,
}

async fn add_user(
    State(app): State<App>,
    JsonBody(req): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let req: NewUser = serde_json::from_value(req).map_err(bad)?;
    let id = handle(app).add_user(&req.email, &req.password);
    Ok(Json(json!({ "id": id })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewKey {
    user_id: String,
    permissions: Vec<String>,
}

async fn add_api_key(
    State(app): State<App>,
    JsonBody(req): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let req: NewKey = serde_json::from_value(req).map_err(bad)?;
    let perms: Vec<&str> = req.permissions.iter().map(String::as_str).collect();
    let key = handle(app).create_api_key(&req.user_id, &perms);
    Ok(Json(json!({ "key": key })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewPartner {
    sharer_id: String,
    shared_with_id: String,
    #[serde(default = "yes")]
    in_timeline: bool,
}

fn yes() -> bool {
    true
}

async fn add_partner(
    State(app): State<App>,
    JsonBody(req): JsonBody<Value>,
) -> Result<StatusCode, ApiError> {
    let req: NewPartner = serde_json::from_value(req).map_err(bad)?;
    handle(app).add_partner_with(&req.sharer_id, &req.shared_with_id, req.in_timeline);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct SyncReset {
    token: String,
}

async fn sync_reset(
    State(app): State<App>,
    JsonBody(req): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let req: SyncReset = serde_json::from_value(req).map_err(bad)?;
    Ok(Json(
        json!({ "found": handle(app).force_sync_reset(&req.token) }),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Upload {
    #[serde(default)]
    user_id: Option<String>,
    file_name: String,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    data_base64: Option<String>,
    #[serde(default)]
    visibility: Option<Visibility>,
    #[serde(default)]
    file_created_at: Option<String>,
}

async fn upload(
    State(app): State<App>,
    JsonBody(req): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let req: Upload = serde_json::from_value(req).map_err(bad)?;
    let data = match (req.data, req.data_base64) {
        (_, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(bad)?,
        (Some(d), None) => d.into_bytes(),
        (None, None) => return Err(bad("data or dataBase64 is required")),
    };
    let h = handle(app);
    let user = req.user_id.unwrap_or_else(|| h.admin_id());
    let mut asset = NewAsset::new(req.file_name, data)
        .visibility(req.visibility.unwrap_or(Visibility::Timeline));
    asset.file_created_at = req.file_created_at;
    Ok(Json(json!({ "id": h.insert(&user, asset) })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InsertMany {
    #[serde(default)]
    user_id: Option<String>,
    count: usize,
    #[serde(default)]
    visibility: Option<Visibility>,
}

async fn insert_many(
    State(app): State<App>,
    JsonBody(req): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let req: InsertMany = serde_json::from_value(req).map_err(bad)?;
    let h = handle(app);
    let user = req.user_id.unwrap_or_else(|| h.admin_id());
    let ids = h.insert_many(
        &user,
        req.count,
        req.visibility.unwrap_or(Visibility::Timeline),
    );
    Ok(Json(json!({ "ids": ids })))
}

#[derive(Deserialize)]
struct Ids {
    ids: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Backdate {
    #[serde(default)]
    user_id: Option<String>,
    seconds: u64,
}

/// `POST /__admin/actions/backdate {"seconds": N, "userId"?}`: moves a user's assets (the
/// admin's by default) N seconds into the past ([`ServerHandle::backdate`]), so that a bench
/// sees a library last changed that long ago without waiting for it.
async fn backdate(
    State(app): State<App>,
    JsonBody(req): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let req: Backdate = serde_json::from_value(req).map_err(bad)?;
    let h = handle(app);
    let user = req.user_id.unwrap_or_else(|| h.admin_id());
    let n = h.backdate(&user, std::time::Duration::from_secs(req.seconds));
    Ok(Json(json!({ "count": n })))
}

async fn trash(
    State(app): State<App>,
    JsonBody(req): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let req: Ids = serde_json::from_value(req).map_err(bad)?;
    Ok(Json(json!({ "count": handle(app).trash(&req.ids) })))
}

async fn restore(
    State(app): State<App>,
    JsonBody(req): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let req: Ids = serde_json::from_value(req).map_err(bad)?;
    Ok(Json(json!({ "count": handle(app).restore(&req.ids) })))
}

async fn delete(
    State(app): State<App>,
    JsonBody(req): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let req: Ids = serde_json::from_value(req).map_err(bad)?;
    Ok(Json(
        json!({ "count": handle(app).delete_permanently(&req.ids) }),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Update {
    id: String,
    #[serde(default)]
    is_favorite: Option<bool>,
    #[serde(default)]
    visibility: Option<Visibility>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    file_created_at: Option<String>,
}

async fn update(
    State(app): State<App>,
    JsonBody(req): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let req: Update = serde_json::from_value(req).map_err(bad)?;
    let found = handle(app).update(
        &req.id,
        AssetUpdate {
            is_favorite: req.is_favorite,
            visibility: req.visibility,
            description: req.description,
            file_created_at: req.file_created_at,
        },
    );
    Ok(Json(json!({ "found": found })))
}
