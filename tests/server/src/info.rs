//! Discovery and server information (docs/SERVER-API.md#2-discovery,
//! docs/SERVER-API.md#8-server-information), the seed's `/server/info`, and the
//! fallback that answers unknown routes: the web app's HTML for non-API GETs in the Immich
//! dialects (status 200, the SPA quirk), a Nest-style 404 JSON otherwise.

use axum::extract::{OriginalUri, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::assets::media_types as media_type_lists;
use crate::auth::{check, Creds};
use crate::error::ApiError;
use crate::state::{fmt_ts, App};
use crate::Dialect;

/// The version each dialect reports. The next major's main build still says 2.7.5
/// everywhere (docs/SERVER-API.md#1-dialects), so a client must tell the two apart by
/// behaviour.
pub(crate) fn version(dialect: Dialect) -> (u32, u32, u32) {
    match dialect {
        Dialect::Immich | Dialect::ImmichNext => (2, 7, 5),
        Dialect::Seed => (1, 105, 1),
    }
}

/// The version this server reports now: its dialect's, unless an upgrade
/// ([`crate::ServerHandle::upgrade_to`]) replaced it.
pub(crate) fn reported(app: &App) -> (u32, u32, u32) {
    app.lock()
        .faults
        .hostile
        .version
        .unwrap_or_else(|| version(app.dialect()))
}

/// `on_server_version`'s payload: a `semver` `SemVer` object as `JSON.stringify` writes it.
pub(crate) fn semver_json(app: &App) -> Value {
    let (major, minor, patch) = reported(app);
    let v = format!("{major}.{minor}.{patch}");
    json!({
        "options": {},
        "loose": false,
        "includePrerelease": false,
        "raw": v,
        "major": major,
        "minor": minor,
        "patch": patch,
        "prerelease": [],
        "build": [],
        "version": v,
    })
}

/// `sourceRef` and `sourceCommit` of the build each Immich dialect stands for
/// (docs/SERVER-API.md#1-dialects).
fn source(dialect: Dialect) -> (&'static str, &'static str) {
    match dialect {
        Dialect::ImmichNext => ("main", "9263e2f2e"),
        _ => ("v2.7.5", "95e57a24c"),
    }
}

fn version_string(dialect: Dialect) -> String {
    let (major, minor, patch) = version(dialect);
    format!("{major}.{minor}.{patch}")
}

const SPA_HTML: &str = "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
<title>Immich</title></head>\n<body><div id=\"app\"></div>\
<script type=\"module\" src=\"/_app/immutable/entry/start.js\"></script></body>\n</html>\n";

const DISK_SIZE: u64 = 100 * 1024 * 1024 * 1024;
const DISK_USE: u64 = 40 * 1024 * 1024 * 1024;

pub(crate) async fn well_known() -> Json<Value> {
    Json(json!({ "api": { "endpoint": "/api" } }))
}

pub(crate) async fn ping() -> Json<Value> {
    Json(json!({ "res": "pong" }))
}

pub(crate) async fn server_version(State(app): State<App>) -> Json<Value> {
    let (major, minor, patch) = reported(&app);
    Json(json!({ "major": major, "minor": minor, "patch": patch }))
}

pub(crate) async fn version_history(State(app): State<App>) -> Json<Value> {
    Json(json!([{
        "id": "0b0a0e57-0000-4000-8000-000000000001",
        "createdAt": fmt_ts(0),
        "version": version_string(app.dialect()),
    }]))
}

pub(crate) async fn about(State(app): State<App>, creds: Creds) -> Result<Json<Value>, ApiError> {
    check(&app, &creds, Some("server.about"))?;
    let v = version_string(app.dialect());
    let (source_ref, source_commit) = source(app.dialect());
    Ok(Json(json!({
        "version": format!("v{v}"),
        "versionUrl": format!("https://github.com/immich-app/immich/releases/tag/v{v}"),
        "licensed": false,
        "repository": "immich-app/immich",
        "repositoryUrl": "https://github.com/immich-app/immich",
        "sourceRef": source_ref,
        "sourceCommit": source_commit,
        "sourceUrl": format!("https://github.com/immich-app/immich/commit/{source_commit}"),
        "build": "immish-testserver",
        "nodejs": "v22.14.0",
        "ffmpeg": "7.0.2-9",
        "imagemagick": "7.1.1-47",
        "libvips": "8.16.1",
        "exiftool": "13.25",
    })))
}

pub(crate) async fn features(State(app): State<App>) -> Json<Value> {
    if app.dialect() == Dialect::Seed {
        return Json(json!({
            "clipEncode": false,
            "facialRecognition": false,
            "map": false,
            "trash": true,
            "oauth": false,
            "oauthAutoLaunch": false,
            "passwordLogin": true,
        }));
    }
    Json(json!({
        "smartSearch": false,
        "duplicateDetection": false,
        "configFile": false,
        "facialRecognition": false,
        "map": false,
        "trash": true,
        "reverseGeocoding": false,
        "importFaces": false,
        "oauth": false,
        "oauthAutoLaunch": false,
        "passwordLogin": true,
        "sidecar": true,
        "search": true,
        "email": false,
        "ocr": false,
    }))
}

pub(crate) async fn config() -> Json<Value> {
    Json(json!({
        "oauthButtonText": "Login with OAuth",
        "loginPageMessage": "",
        "trashDays": 30,
        "userDeleteDelay": 7,
        "isInitialized": true,
        "isOnboarded": true,
        "externalDomain": "",
        "publicUsers": true,
        "mapDarkStyleUrl": "",
        "mapLightStyleUrl": "",
        "maintenanceMode": false,
    }))
}

fn disk_json() -> Value {
    let available = DISK_SIZE - DISK_USE;
    json!({
        "diskSize": "100.0 GiB",
        "diskUse": "40.0 GiB",
        "diskAvailable": "60.0 GiB",
        "diskSizeRaw": DISK_SIZE,
        "diskUseRaw": DISK_USE,
        "diskAvailableRaw": available,
        "diskUsagePercentage": 40.0,
    })
}

pub(crate) async fn storage(State(app): State<App>, creds: Creds) -> Result<Json<Value>, ApiError> {
    check(&app, &creds, Some("server.storage"))?;
    Ok(Json(disk_json()))
}

pub(crate) async fn media_types(State(app): State<App>) -> Json<Value> {
    Json(media_type_lists(app.dialect()))
}

pub(crate) async fn theme() -> Json<Value> {
    Json(json!({ "customCss": "" }))
}

/// The seed's `GET /server/info`.
pub(crate) async fn seed_info(
    State(app): State<App>,
    creds: Creds,
) -> Result<Json<Value>, ApiError> {
    check(&app, &creds, None)?;
    let mut v = disk_json();
    v["version"] = json!(version_string(Dialect::Seed));
    Ok(Json(v))
}

fn is_api_path(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// Unknown routes and unsupported methods.
///
/// `OriginalUri`, because inside the nested `/api` router the URI has lost its prefix.
pub(crate) async fn fallback(
    State(app): State<App>,
    method: Method,
    OriginalUri(uri): OriginalUri,
) -> Response {
    let path = uri.path();
    let web = app.dialect() != Dialect::Seed
        && method == Method::GET
        && !is_api_path(path)
        && !path.starts_with("/__admin");
    if web {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            SPA_HTML,
        )
            .into_response();
    }
    ApiError::no_route(method.as_str(), path).into_response()
}
