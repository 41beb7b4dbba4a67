//! Authentication: the API key (checked for the permissions the daemon needs) or a password
//! login for a session token, the credential header of every request, and the probe that
//! tells whether the credentials still work (logging in again when a session was revoked).
//!
//! Must not: let a secret reach a log line or an error (header values are marked sensitive
//! and every secret is registered with the transport for redaction).

use std::sync::RwLock;

use reqwest::header::{HeaderMap, HeaderName, AUTHORIZATION};
use reqwest::Method;

use super::client::Inner;
use super::dto;
use super::transport::{header_value, Transport};
use super::{ApiClient, ApiError, Result, REQUIRED_PERMISSIONS};
use crate::config::Secret;

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The credential in use.
pub(super) enum Auth {
    ApiKey(Secret),
    Session {
        email: String,
        password: Secret,
        /// Replaced when `validate` logs in again after the session was revoked. A std lock:
        /// held only to clone or swap the value, never across an `.await`.
        token: RwLock<Secret>,
    },
}

impl ApiClient {
    /// `POST /auth/validateToken`: the probe while paused on a 401. With password
    /// credentials, a rejected session is replaced by logging in again.
    pub async fn validate(&self) -> Result<()> {
        let (rb, info) = self.request(Method::POST, "/auth/validateToken");
        let result = self
            .inner
            .transport
            .json::<dto::ValidateToken>(rb, &info)
            .await
            .and_then(|v| {
                if v.auth_status {
                    Ok(())
                } else {
                    Err(ApiError::Http {
                        request: Box::new(info.clone()),
                        status: 401,
                        message: "authStatus is false".to_owned(),
                        retry_after: None,
                        location: None,
                    })
                }
            });
        match (result, &self.inner.auth) {
            (
                Err(e),
                Auth::Session {
                    email,
                    password,
                    token,
                },
            ) if e.status() == Some(401) => {
                let fresh =
                    login(&self.inner.transport, &self.inner.api_text, email, password).await?;
                self.inner.transport.add_secret(fresh.token.clone());
                if let Ok(mut t) = token.write() {
                    *t = fresh.token;
                }
                tracing::info!("the session was rejected; logged in again");
                Ok(())
            }
            (result, _) => result,
        }
    }
}

pub(super) struct Login {
    pub(super) token: Secret,
    pub(super) user_id: Option<String>,
}

/// `POST /auth/login` (201, or 200 on older servers) for a session token.
pub(super) async fn login(
    t: &Transport,
    api: &str,
    email: &str,
    password: &Secret,
) -> Result<Login> {
    let (rb, info) = t.request(Method::POST, &format!("{api}/auth/login"));
    let body = dto::LoginRequest {
        email,
        password: password.expose(),
    };
    let answer: dto::LoginResponse = t.json(rb.json(&body), &info).await?;
    if answer.access_token.is_empty() {
        return Err(ApiError::BadAnswer {
            request: Box::new(info),
            detail: "the login answer has no accessToken".to_owned(),
        });
    }
    header_value(
        &format!("Bearer {}", answer.access_token),
        "the session token",
    )?;
    Ok(Login {
        token: Secret::new(answer.access_token),
        user_id: answer.user_id.filter(|s| !s.is_empty()),
    })
}

impl Inner {
    pub(super) fn auth_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        match &self.auth {
            Auth::ApiKey(key) => {
                if let Ok(v) = header_value(key.expose(), "the API key") {
                    headers.insert(X_API_KEY, v);
                }
            }
            Auth::Session { token, .. } => {
                let token = read_token(token);
                if let Ok(v) = header_value(&format!("Bearer {}", token.expose()), "the token") {
                    headers.insert(AUTHORIZATION, v);
                }
            }
        }
        headers
    }

    /// `GET /api-keys/me`: the key must have `all` or every required permission. `None`
    /// when the server lacks the route (seed).
    pub(super) async fn check_key_permissions(&self) -> Result<Option<Vec<String>>> {
        let (rb, info) = self.request(Method::GET, "/api-keys/me");
        let me = match self.transport.json::<dto::ApiKeyMe>(rb, &info).await {
            Ok(me) => me,
            Err(e) if e.status() == Some(404) => {
                tracing::debug!("no /api-keys/me on this server; permissions not checked");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let has = |p: &str| me.permissions.iter().any(|q| q == p || q == "all");
        let missing: Vec<String> = REQUIRED_PERMISSIONS
            .iter()
            .filter(|p| !has(p))
            .map(|p| (*p).to_owned())
            .collect();
        if !missing.is_empty() {
            return Err(ApiError::MissingPermissions {
                key_name: me.name,
                missing,
            });
        }
        // Said once, with its trade-off, by `init` and `doctor` (setup::key_power_advice):
        // the `all` key that live events need can delete too, and a warning on every start
        // would only teach people to ignore warnings.
        if has("asset.delete") {
            tracing::debug!("the API key can delete assets (`all` or `asset.delete`)");
        }
        Ok(Some(me.permissions))
    }

    /// `GET /users/me`. `None` on a server without it (404) or a key without `user.read`.
    pub(super) async fn fetch_user_id(&self) -> Result<Option<String>> {
        let (rb, info) = self.request(Method::GET, "/users/me");
        match self.transport.json::<dto::UserMe>(rb, &info).await {
            Ok(me) => Ok(Some(me.id)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) if e.status() == Some(403) => {
                tracing::warn!(
                    "the API key lacks `user.read`: partner assets cannot be told apart from \
                     the user's own in the mirror; add that permission to the key"
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

fn read_token(token: &RwLock<Secret>) -> Secret {
    match token.read() {
        Ok(t) => t.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}
