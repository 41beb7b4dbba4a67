//! Credentials, API-key permissions, and the `/auth`, `/api-keys/me` and `/users/me` routes.
//!
//! Resolution follows docs/SERVER-API.md#3-authentication: a shared-link credential wins (and
//! is refused here: the test server has no shared links), then a session token from
//! `x-immich-user-token`, `x-immich-session-token`, `?sessionKey=`, `Authorization: Bearer` or
//! the `immich_access_token` cookie, then an API key from `x-api-key` or `?apiKey=`. The first
//! credential found decides; there is no fallback, so a Bearer API key is a 401.

use std::convert::Infallible;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::error::{invalid, ApiError, JsonBody};
use crate::state::{fmt_ts, App, State as Db};
use crate::Dialect;

/// The credentials a request carries, before they are checked.
#[derive(Clone, Debug, Default)]
pub(crate) struct Creds {
    pub share: bool,
    pub session: Option<String>,
    pub api_key: Option<String>,
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = header_str(headers, "authorization")?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

impl Creds {
    /// Reads credentials from headers and, when given, the query string.
    pub fn from_request(headers: &HeaderMap, query: Option<&str>) -> Creds {
        let q = |name: &str| -> Option<String> {
            let query = query?;
            url_param(query, name)
        };
        let share = header_str(headers, "x-immich-share-key").is_some()
            || header_str(headers, "x-immich-share-slug").is_some()
            || q("key").is_some()
            || q("slug").is_some();
        let session = header_str(headers, "x-immich-user-token")
            .or_else(|| header_str(headers, "x-immich-session-token"))
            .or_else(|| q("sessionKey"))
            .or_else(|| bearer(headers))
            .or_else(|| cookie(headers, "immich_access_token"));
        let api_key = header_str(headers, "x-api-key").or_else(|| q("apiKey"));
        Creds {
            share,
            session,
            api_key,
        }
    }
}

/// One query parameter, percent-decoded.
pub(crate) fn url_param(query: &str, name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded_pairs(query);
    pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

fn serde_urlencoded_pairs(query: &str) -> Vec<(String, String)> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
        &format!("/?{query}").parse().unwrap_or_default(),
    )
    .map(|q| q.0)
    .unwrap_or_default()
}

impl<S: Send + Sync> FromRequestParts<S> for Creds {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(Creds::from_request(&parts.headers, parts.uri.query()))
    }
}

/// A checked identity.
#[derive(Clone, Debug)]
pub(crate) struct Auth {
    pub user_id: String,
    /// The session token, for session logins.
    pub session: Option<String>,
    /// The API key id, for API-key logins.
    pub api_key_id: Option<String>,
}

/// What a route needs from an API key: nothing (`@Authenticated({permission: false})`) or a
/// permission. `@Authenticated()` without one means `all`.
pub(crate) type Perm = Option<&'static str>;

pub(crate) fn granted(permissions: &[String], needed: &str) -> bool {
    permissions.iter().any(|p| p == "all" || p == needed)
}

/// Checks credentials against the state. Session logins have every permission.
pub(crate) fn authenticate(db: &Db, creds: &Creds, perm: Perm) -> Result<Auth, ApiError> {
    if creds.share {
        return Err(ApiError::unauthorized("Invalid share key"));
    }
    if let Some(token) = &creds.session {
        let session = db
            .sessions
            .iter()
            .find(|s| &s.token == token)
            .filter(|_| !db.faults.unauthorized)
            .ok_or_else(|| ApiError::unauthorized("Invalid user token"))?;
        return Ok(Auth {
            user_id: session.user_id.clone(),
            session: Some(token.clone()),
            api_key_id: None,
        });
    }
    if let Some(secret) = &creds.api_key {
        let key = db
            .api_keys
            .iter()
            .find(|k| &k.secret == secret)
            .filter(|_| !db.faults.unauthorized)
            .ok_or_else(|| ApiError::unauthorized("Invalid API key"))?;
        if let Some(needed) = perm {
            if !granted(&key.permissions, needed) {
                return Err(ApiError::forbidden(&format!(
                    "Missing required permission: {needed}"
                )));
            }
        }
        return Ok(Auth {
            user_id: key.user_id.clone(),
            session: None,
            api_key_id: Some(key.id.clone()),
        });
    }
    Err(ApiError::unauthorized("Authentication required"))
}

/// Locks the state and authenticates; the common first line of a handler.
pub(crate) fn check(app: &App, creds: &Creds, perm: Perm) -> Result<Auth, ApiError> {
    authenticate(&app.lock(), creds, perm)
}

// ---------------------------------------------------------------------------------------------
// Routes

pub(crate) async fn login(
    State(app): State<App>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let email = body.get("email").and_then(Value::as_str);
    let password = body.get("password").and_then(Value::as_str);
    let (Some(email), Some(password)) = (email, password) else {
        let mut msgs = Vec::new();
        if email.is_none() {
            msgs.push(invalid(
                "email",
                "email must be an email",
                "Invalid input: expected string, received undefined",
            ));
        }
        if password.is_none() {
            msgs.push(invalid(
                "password",
                "password must be a string",
                "Invalid input: expected string, received undefined",
            ));
        }
        return Err(ApiError::validation(msgs));
    };
    let email = email.trim().to_lowercase();
    let mut st = app.lock();
    let user = st
        .users
        .iter()
        .find(|u| u.email == email && u.password == password)
        .cloned()
        .ok_or_else(|| ApiError::unauthorized("Incorrect email or password"))?;
    let token = st.create_session(&user.id);
    drop(st);
    let body = json!({
        "accessToken": token,
        "userId": user.id,
        "userEmail": user.email,
        "name": user.name,
        "profileImagePath": "",
        "isAdmin": user.is_admin,
        "shouldChangePassword": false,
        "isOnboarded": user.is_onboarded,
    });
    let cookie_attrs = "Path=/; Max-Age=34560000; SameSite=Lax";
    let cookies = [
        format!("immich_access_token={token}; {cookie_attrs}; HttpOnly"),
        format!("immich_auth_type=password; {cookie_attrs}; HttpOnly"),
        format!("immich_is_authenticated=true; {cookie_attrs}"),
    ];
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    for c in cookies {
        if let Ok(v) = c.parse() {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    Ok(resp)
}

pub(crate) async fn validate_token(
    State(app): State<App>,
    creds: Creds,
) -> Result<Json<Value>, ApiError> {
    check(&app, &creds, None)?;
    Ok(Json(json!({ "authStatus": true })))
}

pub(crate) async fn logout(State(app): State<App>, creds: Creds) -> Result<Response, ApiError> {
    let auth = check(&app, &creds, Some("all"))?;
    if let Some(token) = &auth.session {
        app.lock().sessions.retain(|s| &s.token != token);
    }
    if app.dialect() == Dialect::Seed {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let mut resp = Json(json!({
        "successful": true,
        "redirectUri": "/auth/login?autoLaunch=0",
    }))
    .into_response();
    for name in [
        "immich_access_token",
        "immich_auth_type",
        "immich_is_authenticated",
    ] {
        if let Ok(v) = format!("{name}=; Path=/; Max-Age=0").parse() {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    Ok(resp)
}

pub(crate) async fn status(State(app): State<App>, creds: Creds) -> Result<Json<Value>, ApiError> {
    check(&app, &creds, Some("all"))?;
    Ok(Json(
        json!({ "pinCode": false, "password": true, "isElevated": false }),
    ))
}

pub(crate) async fn api_key_me(
    State(app): State<App>,
    creds: Creds,
) -> Result<Json<Value>, ApiError> {
    let st = app.lock();
    let auth = authenticate(&st, &creds, None)?;
    let key = auth
        .api_key_id
        .and_then(|id| st.api_keys.iter().find(|k| k.id == id))
        .ok_or_else(|| ApiError::forbidden("Not authenticated with an API Key"))?;
    Ok(Json(json!({
        "id": key.id,
        "name": key.name,
        "createdAt": fmt_ts(key.created_at),
        "updatedAt": fmt_ts(key.created_at),
        "permissions": key.permissions,
    })))
}

pub(crate) async fn users_me(
    State(app): State<App>,
    creds: Creds,
) -> Result<Json<Value>, ApiError> {
    let st = app.lock();
    let auth = authenticate(&st, &creds, Some("user.read"))?;
    let user = st
        .user(&auth.user_id)
        .ok_or_else(|| ApiError::unauthorized("Invalid user token"))?;
    Ok(Json(crate::dto::user_admin(user, st.usage(&user.id))))
}
