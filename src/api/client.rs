//! [`ApiClient`]: connect (URL normalisation, discovery, dialect, authentication) and the
//! endpoint calls the daemon makes, each with stall detection and errors mapped to
//! [`ApiError`].
//!
//! Timeouts: a connect timeout on the client and no whole-request timeout (a video may take
//! hours). Instead, a request that makes no progress for `stall_timeout` fails as transient:
//! the wait for response headers and every response body chunk are bounded, and during an
//! upload every body chunk handed to hyper counts as progress.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::multipart::{Form, Part};
use reqwest::{Body, Method, RequestBuilder, Response, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

use super::dto;
use super::endpoint::{self, BaseUrl};
use super::error::{parse_retry_after, server_message};
use super::upload::{
    parse_upload_answer, part_file_name, verified_file_stream, Progress, StopOnDrop, StopSending,
};
use super::{
    format_timestamp, ApiError, CheckResult, ConnectOptions, CredentialsKind, Dialect, MediaTypes,
    RemoteAsset, RequestInfo, Result, UploadOutcome, UploadRequest, REQUIRED_PERMISSIONS,
};
use crate::config::{Credentials, Secret};
use crate::model::{AssetId, Checksum};

/// How long discovery waits for `/.well-known/immich` (API.md §1).
const WELL_KNOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// The most ids per `bulk-upload-check` request (the CLI's batch; API.md §4).
pub const BULK_CHECK_BATCH: usize = 5000;
/// The largest JSON answer read (a 5000-item bulk check is about 1 MB).
const MAX_JSON_BODY: usize = 32 << 20;
/// How much of an error body is read for its message.
const MAX_ERROR_BODY: usize = 64 << 10;
/// Idle pooled connections are dropped before Node's default 5 s keep-alive closes them
/// server-side, so a request is never written into a connection the server is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const X_IMMICH_CID: HeaderName = HeaderName::from_static("x-immich-cid");
const X_IMMICH_CHECKSUM: HeaderName = HeaderName::from_static("x-immich-checksum");

/// A connected, authenticated client. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct ApiClient {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Transport,
    base: BaseUrl,
    api_root: Url,
    /// `api_root` without the trailing slash, for `format!("{api}/assets")`.
    api_text: String,
    dialect: Dialect,
    auth: Auth,
    user_id: Option<String>,
    key_permissions: Option<Vec<String>>,
}

enum Auth {
    ApiKey(Secret),
    Session {
        email: String,
        password: Secret,
        /// Replaced when `validate` logs in again after the session was revoked. A std lock:
        /// held only to clone or swap the value, never across an `.await`.
        token: RwLock<Secret>,
    },
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("api_root", &self.inner.api_text)
            .field("dialect", &self.inner.dialect)
            .field("credentials", &self.device_credentials_kind())
            .field("user_id", &self.inner.user_id)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// Normalises the URL, refuses plain `http://` to public hosts (unless allowed), finds
    /// the API root and dialect, and authenticates: an API key is checked for the
    /// [`REQUIRED_PERMISSIONS`]; email + password are exchanged for a session token.
    pub async fn connect(opts: ConnectOptions) -> Result<ApiClient> {
        let base =
            endpoint::normalise(&opts.url).map_err(|message| ApiError::Config { message })?;
        if base.url.scheme() == "http" && !endpoint::is_local_host(base.host()) {
            if !opts.allow_insecure_http {
                return Err(ApiError::Config {
                    message: format!(
                        "refusing plain http:// to {}, which is not a loopback, private or \
                         .local address: the credentials and photos would cross the network \
                         unencrypted; use https://, or set server.allow_insecure_http = true \
                         if the network path is trusted",
                        base.host()
                    ),
                });
            }
            tracing::warn!(
                host = base.host(),
                "server.allow_insecure_http is set: credentials and photos go over plain http"
            );
        }

        // A credential that cannot be sent is a configuration error; say so before any
        // network work.
        match &opts.credentials {
            Credentials::ApiKey(key) if key.expose().trim().is_empty() => {
                return Err(ApiError::Config {
                    message: "the API key is empty: set server.api_key or api_key_file".to_owned(),
                })
            }
            Credentials::ApiKey(key) => {
                header_value(key.expose(), "the API key")?;
            }
            Credentials::Password { .. } => {}
        }
        let secrets = match &opts.credentials {
            Credentials::ApiKey(key) => vec![key.clone()],
            Credentials::Password { password, .. } => vec![password.clone()],
        };
        let transport = Transport {
            http: build_http_client(&opts)?,
            stall: opts.stall_timeout,
            secrets: RwLock::new(secrets),
        };

        let (api_root, dialect) = discover(&transport, &base).await?;
        let api_text = endpoint::root_text(&api_root);
        tracing::debug!(api_root = %api_text, ?dialect, "server found");

        let mut inner = Inner {
            transport,
            base,
            api_root,
            api_text,
            dialect,
            auth: Auth::ApiKey(Secret::new(String::new())),
            user_id: None,
            key_permissions: None,
        };
        match opts.credentials {
            Credentials::ApiKey(key) => {
                inner.auth = Auth::ApiKey(key);
                inner.key_permissions = inner.check_key_permissions().await?;
                inner.user_id = inner.fetch_user_id().await?;
            }
            Credentials::Password { email, password } => {
                let login = login(&inner.transport, &inner.api_text, &email, &password).await?;
                inner.transport.add_secret(login.token.clone());
                inner.auth = Auth::Session {
                    email,
                    password,
                    token: RwLock::new(login.token),
                };
                inner.user_id = match login.user_id {
                    Some(id) => Some(id),
                    None => inner.fetch_user_id().await?,
                };
            }
        }
        Ok(ApiClient {
            inner: Arc::new(inner),
        })
    }

    /// Which API shape the server speaks.
    pub fn dialect(&self) -> Dialect {
        self.inner.dialect
    }

    /// The API root without a trailing slash, e.g. `https://photos.example.com/api`
    /// (seed-style: the base itself).
    pub fn api_root(&self) -> &str {
        &self.inner.api_text
    }

    /// [`api_root`](Self::api_root) as a parsed URL.
    pub fn api_root_url(&self) -> &Url {
        &self.inner.api_root
    }

    /// The normalised base URL the user configured (without `/api`).
    pub fn base_url(&self) -> &Url {
        &self.inner.base.url
    }

    /// `{api root}{path}`; `path` starts with `/` (e.g. `/search/metadata`).
    pub fn endpoint_url(&self, path: &str) -> String {
        format!("{}{path}", self.inner.api_text)
    }

    /// The server's id of the authenticated user: from the login answer, or `GET /users/me`.
    /// Empty when the server did not say: it has no such route (seed), or the API key lacks
    /// `user.read` (a warning is logged at connect).
    pub fn user_id(&self) -> &str {
        self.inner.user_id.as_deref().unwrap_or("")
    }

    /// API key or session token.
    pub fn device_credentials_kind(&self) -> CredentialsKind {
        match self.inner.auth {
            Auth::ApiKey(_) => CredentialsKind::ApiKey,
            Auth::Session { .. } => CredentialsKind::Session,
        }
    }

    /// Logged in with a password (a session token): the sync stream is available.
    pub fn is_session(&self) -> bool {
        self.device_credentials_kind() == CredentialsKind::Session
    }

    /// The API key's permissions, when it is a key and the server told us (`/api-keys/me`).
    pub fn api_key_permissions(&self) -> Option<&[String]> {
        self.inner.key_permissions.as_deref()
    }

    /// Whether live events can work: a session, or a key with `all` (API.md §2.4, §6). For a
    /// key whose permissions are unknown (seed), `true`: the socket will tell.
    pub fn can_open_websocket(&self) -> bool {
        if self.is_session() {
            return true;
        }
        match &self.inner.key_permissions {
            Some(p) => p.iter().any(|p| p == "all"),
            None => true,
        }
    }

    /// The HTTP client: rustls with the configured CA, no redirects, the connect timeout, the
    /// user agent. It carries no credentials: add [`auth_headers`](Self::auth_headers).
    pub fn http(&self) -> &reqwest::Client {
        &self.inner.transport.http
    }

    /// The credential header (`x-api-key`, or `Authorization: Bearer` for a session), marked
    /// sensitive so that it is never logged.
    pub fn auth_headers(&self) -> HeaderMap {
        self.inner.auth_headers()
    }

    /// The socket.io WebSocket URL (`ws(s)://host[:port]{api path}/socket.io/?EIO=4&…`).
    pub fn ws_url(&self) -> String {
        endpoint::ws_url(&self.inner.api_root)
    }

    /// Supported extensions: `GET /server/media-types`, or the built-in v2.7.5 lists on a
    /// seed-style server or when the route is missing (404).
    pub async fn media_types(&self) -> Result<MediaTypes> {
        if self.inner.dialect == Dialect::Seed {
            return Ok(MediaTypes::builtin());
        }
        let (rb, info) = self.request(Method::GET, "/server/media-types");
        match self
            .inner
            .transport
            .json::<dto::MediaTypesDto>(rb, &info)
            .await
        {
            // An empty answer would skip every file; trust the built-in lists instead.
            Ok(m) if m.image.is_empty() && m.video.is_empty() => Ok(MediaTypes::builtin()),
            Ok(m) => Ok(MediaTypes::from_lists(m.image, m.video, m.sidecar)),
            Err(e) if e.status() == Some(404) => Ok(MediaTypes::builtin()),
            Err(e) => Err(e),
        }
    }

    /// `POST /assets/bulk-upload-check` in batches of at most [`BULK_CHECK_BATCH`], with hex
    /// checksums. Answers come back in the order of `items`, matched by the echoed id (the
    /// ids should be unique).
    pub async fn bulk_upload_check(
        &self,
        items: &[(String, Checksum)],
    ) -> Result<Vec<(String, CheckResult)>> {
        let mut out = Vec::with_capacity(items.len());
        for batch in items.chunks(BULK_CHECK_BATCH) {
            let body = dto::BulkCheckRequest {
                assets: batch
                    .iter()
                    .map(|(id, sum)| dto::BulkCheckItem {
                        id,
                        checksum: sum.to_hex(),
                    })
                    .collect(),
            };
            let (rb, info) = self.request(Method::POST, "/assets/bulk-upload-check");
            let answer: dto::BulkCheckResponse =
                self.inner.transport.json(rb.json(&body), &info).await?;
            let mut by_id = std::collections::HashMap::with_capacity(answer.results.len());
            for r in answer.results {
                let result = match (r.action.as_str(), r.reason.as_deref()) {
                    ("accept", _) => CheckResult::Accept,
                    ("reject", None | Some("duplicate")) => CheckResult::Duplicate {
                        asset_id: r.asset_id.filter(|s| !s.is_empty()).map(AssetId),
                        is_trashed: r.is_trashed,
                    },
                    // `unsupported-format` is never produced by Immich (API.md §4); if a
                    // server does, the upload answers with the precise error.
                    ("reject", Some(reason)) => {
                        tracing::debug!(id = %r.id, reason, "bulk check rejected; will upload");
                        CheckResult::Accept
                    }
                    (other, _) => {
                        return Err(ApiError::BadAnswer {
                            request: Box::new(info),
                            detail: format!("unknown bulk-check action {other:?}"),
                        })
                    }
                };
                by_id.insert(r.id, result);
            }
            for (id, _) in batch {
                let Some(result) = by_id.get(id) else {
                    return Err(ApiError::BadAnswer {
                        request: Box::new(info),
                        detail: format!("no result for id {id:?}"),
                    });
                };
                out.push((id.clone(), result.clone()));
            }
        }
        Ok(out)
    }

    /// Uploads one file (API.md §3), streamed from disk in 256 KiB chunks with an explicit
    /// Content-Length. The body is verified as it goes (size and SHA-1 against `req`); if
    /// the file changed, the request is aborted before its last byte and the error's class
    /// is `FileChanged`. A 200 `duplicate` answered before the body was sent is a success.
    pub async fn upload(&self, req: &UploadRequest) -> Result<UploadOutcome> {
        let local = |source| ApiError::LocalFile {
            file: req.path.clone(),
            source,
        };
        let file = tokio::fs::File::open(&req.path).await.map_err(local)?;
        let len = file.metadata().await.map_err(local)?.len();
        if len != req.size {
            return Err(ApiError::FileChanged {
                file: req.path.clone(),
                reason: format!("it is {len} bytes now, {} when hashed", req.size),
            });
        }

        let progress = Arc::new(Progress::new());
        let abort = super::upload::AbortSlot::default();
        let stop = StopSending::default();
        let _stop_when_done = StopOnDrop(stop.clone());
        let stream = verified_file_stream(
            file,
            req.size,
            req.checksum,
            Arc::clone(&progress),
            Arc::clone(&abort),
            stop,
        );
        let part = Part::stream_with_length(Body::wrap_stream(stream), req.size)
            .file_name(part_file_name(&req.file_name))
            .mime_str("application/octet-stream")
            .map_err(|e| ApiError::Config {
                message: format!("internal: bad MIME type: {e}"),
            })?;
        // Field order matters: `filename` must precede the file part for the server's
        // extension check to use it (API.md §3.4).
        let mut form = Form::new()
            .percent_encode_noop()
            .text("deviceAssetId", req.device_asset_id.clone())
            .text("deviceId", req.device_id.clone())
            .text("fileCreatedAt", format_timestamp(req.file_created_ns))
            .text("fileModifiedAt", format_timestamp(req.file_modified_ns))
            .text("isFavorite", "false");
        if self.inner.dialect == Dialect::Seed {
            // The seed's form lists these; real Immich strips them (API.md §3.1).
            form = form.text("isArchived", "false").text("isVisible", "true");
        }
        let form = form
            .text("filename", req.file_name.clone())
            .part("assetData", part);

        let (rb, mut info) = self.request(Method::POST, "/assets");
        info.file = Some(req.path.clone());
        info.file_size = Some(req.size);
        let checksum =
            HeaderValue::from_str(&req.checksum.to_hex()).map_err(|_| ApiError::Config {
                message: "internal: checksum is not a header value".to_owned(),
            })?;
        let rb = rb.header(X_IMMICH_CHECKSUM, checksum).multipart(form);

        progress.touch();
        let sent = self.inner.transport.send(rb, &info, &progress).await;
        let aborted = abort.lock().ok().and_then(|slot| slot.clone());
        let resp = match sent {
            Ok(resp) => resp,
            Err(_) if aborted.is_some() => {
                return Err(ApiError::FileChanged {
                    file: req.path.clone(),
                    reason: aborted.unwrap_or_default(),
                })
            }
            // Only when a connection was made: a refused connect has no lost answer.
            Err(e @ ApiError::Network { .. }) if !is_connect_failure(&e) => {
                return match self.duplicate_after_send_error(req).await {
                    Some(outcome) => Ok(outcome),
                    None => Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let status = resp.status().as_u16();
        if status != 200 && status != 201 {
            return Err(self.inner.transport.http_error(resp, &info).await);
        }
        let content_type = content_type(&resp);
        let body = match self
            .inner
            .transport
            .read_body(resp, &info, MAX_JSON_BODY)
            .await
        {
            Ok(body) => body,
            // The answer's body was cut off by the reset that follows an early answer.
            Err(e @ ApiError::Network { .. }) => {
                return match self.duplicate_after_send_error(req).await {
                    Some(outcome) => Ok(outcome),
                    None => Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let outcome = parse_upload_answer(status, &body).map_err(|detail| {
            if serde_json::from_slice::<serde_json::Value>(&body).is_ok() {
                ApiError::BadAnswer {
                    request: Box::new(info.clone()),
                    detail,
                }
            } else {
                ApiError::NotJson {
                    request: Box::new(info.clone()),
                    status,
                    content_type,
                }
            }
        })?;
        if let Some(reason) = aborted {
            if !outcome.duplicate {
                // The server says it stored an asset although we never completed the body:
                // whatever it holds is not this file. Report the change; verification of the
                // next attempt will tell the truth.
                tracing::warn!(
                    path = %req.path.display(),
                    asset_id = %outcome.asset_id,
                    "server answered `created` to an aborted upload"
                );
                return Err(ApiError::FileChanged {
                    file: req.path.clone(),
                    reason,
                });
            }
        }
        Ok(outcome)
    }

    /// After the connection failed mid-upload: does the server have this checksum? It
    /// answers an `x-immich-checksum` match with an early 200 `duplicate` and then closes
    /// the connection, and when the client is still writing, hyper reports the failed write
    /// instead of that answer (a race, seen with the test server). One small check turns
    /// that back into the truth. A server that stored our complete body and lost the reply
    /// is reported the same way (`duplicate: true`): either way the asset with these bytes
    /// is there. `None` when it is not, or the check fails too.
    async fn duplicate_after_send_error(&self, req: &UploadRequest) -> Option<UploadOutcome> {
        let answers = self
            .bulk_upload_check(&[(req.device_asset_id.clone(), req.checksum)])
            .await
            .ok()?;
        match answers.into_iter().next()?.1 {
            CheckResult::Duplicate {
                asset_id: Some(asset_id),
                ..
            } => {
                tracing::debug!(
                    path = %req.path.display(),
                    %asset_id,
                    "upload connection failed, but the server has the checksum"
                );
                Some(UploadOutcome {
                    asset_id,
                    duplicate: true,
                })
            }
            _ => None,
        }
    }

    /// `GET /assets/:id`. `None` when the server does not have it (Immich answers 400 `Not
    /// found or no asset.read access`; others 404).
    pub async fn get_asset(&self, id: &AssetId) -> Result<Option<RemoteAsset>> {
        let mut url = self.inner.api_root.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push("assets").push(&id.0);
        }
        let (rb, info) = self.request_url(Method::GET, url.as_str());
        match self.inner.transport.json::<dto::AssetDto>(rb, &info).await {
            Ok(dto) => Ok(Some(dto.into_remote())),
            Err(e) if matches!(e.status(), Some(400 | 404)) => Ok(None),
            Err(e) => Err(e),
        }
    }

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

    /// The server's version: `GET /server/version` (`major.minor.patch`), or the seed's
    /// `GET /server/info` `version`.
    pub async fn server_version(&self) -> Result<String> {
        let (first, second) = match self.inner.dialect {
            Dialect::Immich => ("/server/version", "/server/info"),
            Dialect::Seed => ("/server/info", "/server/version"),
        };
        match self.version_from(first).await {
            Err(e) if e.status() == Some(404) => self.version_from(second).await,
            other => other,
        }
    }

    async fn version_from(&self, path: &str) -> Result<String> {
        let (rb, info) = self.request(Method::GET, path);
        if path == "/server/info" {
            let v: dto::SeedServerInfo = self.inner.transport.json(rb, &info).await?;
            Ok(v.version)
        } else {
            let v: dto::ServerVersion = self.inner.transport.json(rb, &info).await?;
            Ok(format!("{}.{}.{}", v.major, v.minor, v.patch))
        }
    }

    /// `GET {api}{path}` with credentials, stall detection and error mapping; for callers
    /// outside this module (the mirror).
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let (rb, info) = self.request(Method::GET, path);
        self.inner.transport.json(rb, &info).await
    }

    /// `POST {api}{path}` with a JSON body; see [`get_json`](Self::get_json).
    pub async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let (rb, info) = self.request(Method::POST, path);
        self.inner.transport.json(rb.json(body), &info).await
    }

    /// `POST {api}{path}` with a JSON body, for answers that are not one JSON document (the
    /// sync stream's JSON lines, a 204): the response once its status is 2xx, with the
    /// request it answers (for errors while reading the body). Waiting for the headers is
    /// bounded by the stall timeout and error statuses are mapped as for every other call;
    /// reading the body is the caller's, within [`stall_timeout`](Self::stall_timeout) per
    /// chunk.
    pub async fn post_for_response<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<(Response, RequestInfo)> {
        let (rb, info) = self.request(Method::POST, path);
        let progress = Progress::new();
        let resp = self
            .inner
            .transport
            .send(rb.json(body), &info, &progress)
            .await?;
        if !resp.status().is_success() {
            return Err(self.inner.transport.http_error(resp, &info).await);
        }
        Ok((resp, info))
    }

    /// How long a request may make no progress before it is abandoned.
    pub fn stall_timeout(&self) -> Duration {
        self.inner.transport.stall
    }

    fn request(&self, method: Method, path: &str) -> (RequestBuilder, RequestInfo) {
        self.inner.request(method, path)
    }

    fn request_url(&self, method: Method, url: &str) -> (RequestBuilder, RequestInfo) {
        self.inner.request_url(method, url)
    }
}

impl Inner {
    fn request(&self, method: Method, path: &str) -> (RequestBuilder, RequestInfo) {
        self.request_url(method, &format!("{}{path}", self.api_text))
    }

    fn request_url(&self, method: Method, url: &str) -> (RequestBuilder, RequestInfo) {
        let (rb, info) = self.transport.request(method, url);
        (rb.headers(self.auth_headers()), info)
    }

    fn auth_headers(&self) -> HeaderMap {
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
    async fn check_key_permissions(&self) -> Result<Option<Vec<String>>> {
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
        if has("asset.delete") {
            tracing::warn!(
                "the API key can delete assets (`all` or `asset.delete`); immish-sync never \
                 deletes, so a key without that permission is safer"
            );
        }
        Ok(Some(me.permissions))
    }

    /// `GET /users/me`. `None` on a server without it (404) or a key without `user.read`.
    async fn fetch_user_id(&self) -> Result<Option<String>> {
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

/// A sensitive header value; the error never shows the value.
fn header_value(value: &str, what: &str) -> Result<HeaderValue> {
    let mut v = HeaderValue::from_str(value).map_err(|_| ApiError::Config {
        message: format!(
            "{what} contains characters that cannot be sent in an HTTP header (a line break \
             or a non-ASCII character?); check the key or its file"
        ),
    })?;
    v.set_sensitive(true);
    Ok(v)
}

fn build_http_client(opts: &ConnectOptions) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("immish-sync/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(opts.connect_timeout)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .tcp_keepalive(Duration::from_secs(60));
    if let Some(path) = &opts.ca_file {
        let pem = std::fs::read(path).map_err(|e| ApiError::Config {
            message: format!("server.ca_file {}: cannot read it: {e}", path.display()),
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ApiError::Config {
            message: format!(
                "server.ca_file {}: not a PEM certificate file: {e}",
                path.display()
            ),
        })?;
        if certs.is_empty() {
            return Err(ApiError::Config {
                message: format!(
                    "server.ca_file {}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    path.display()
                ),
            });
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| ApiError::Config {
        message: format!("cannot set up the HTTP client: {}", error_chain(&e)),
    })
}

/// Finds the API root and dialect (API.md §1): `/.well-known/immich`, then `{base}/api`,
/// each verified with `server/ping` answering JSON `{"res":"pong"}`, then `{base}` itself
/// (seed-style paths).
async fn discover(t: &Transport, base: &BaseUrl) -> Result<(Url, Dialect)> {
    let mut attempts = Vec::new();
    let mut first_down: Option<ApiError> = None;
    let mut candidates: Vec<Url> = Vec::new();

    let (rb, info) = t.request(Method::GET, &base.join("/.well-known/immich"));
    match t
        .probe::<dto::WellKnown>(rb.timeout(WELL_KNOWN_TIMEOUT), &info)
        .await
    {
        Probe::Found(wk) => match endpoint::resolve_endpoint(base, &wk.api.endpoint) {
            Some(url) => candidates.push(url),
            None => attempts.push(format!(
                "{} {} names {:?}, which is not on this host (ignored)",
                info.method, info.path, wk.api.endpoint
            )),
        },
        Probe::Miss(m) => attempts.push(m),
        Probe::Down(e) => {
            attempts.push(format!("{} {}: {}", info.method, info.path, short(&e)));
            first_down.get_or_insert(e);
        }
    }
    if let Ok(default) = Url::parse(&base.join("/api")) {
        if !candidates.contains(&default) {
            candidates.push(default);
        }
    }
    let seed = base.url.clone();
    let tries = candidates
        .into_iter()
        .map(|u| (u, Dialect::Immich))
        .chain(std::iter::once((seed, Dialect::Seed)));
    for (root, dialect) in tries {
        let ping = format!("{}/server/ping", endpoint::root_text(&root));
        let (rb, info) = t.request(Method::GET, &ping);
        match t.probe::<dto::Ping>(rb, &info).await {
            Probe::Found(p) if p.res == "pong" => return Ok((root, dialect)),
            Probe::Found(p) => attempts.push(format!(
                "{} {} answered res={:?}, not \"pong\"",
                info.method, info.path, p.res
            )),
            Probe::Miss(m) => attempts.push(m),
            Probe::Down(e) => {
                attempts.push(format!("{} {}: {}", info.method, info.path, short(&e)));
                first_down.get_or_insert(e);
            }
        }
    }
    // A server that could not be reached is a transient condition (it may be starting);
    // one that answered, but not like Immich, is a wrong URL.
    if let Some(e) = first_down {
        return Err(e);
    }
    Err(ApiError::NoServer {
        base: base.text.clone(),
        attempts,
    })
}

/// `error_chain` starts with this for errors of the connect phase.
const CONNECT_FAILED: &str = "connection failed";

fn is_connect_failure(e: &ApiError) -> bool {
    matches!(e, ApiError::Network { detail, .. } if detail.starts_with(CONNECT_FAILED))
}

fn short(e: &ApiError) -> String {
    match e {
        ApiError::Network { detail, .. } => detail.clone(),
        other => other.to_string(),
    }
}

struct Login {
    token: Secret,
    user_id: Option<String>,
}

/// `POST /auth/login` (201, or 200 on older servers) for a session token.
async fn login(t: &Transport, api: &str, email: &str, password: &Secret) -> Result<Login> {
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

enum Probe<T> {
    /// Answered JSON of the expected shape.
    Found(T),
    /// Answered, but not with it; how, for the "no server found" message.
    Miss(String),
    /// Did not answer.
    Down(ApiError),
}

/// The HTTP plumbing shared by connect (before the client exists) and the endpoint calls.
struct Transport {
    http: reqwest::Client,
    stall: Duration,
    /// Values redacted from anything that goes into an error (server messages included).
    /// Grows when a session token is issued; the lock is never held across an `.await`.
    secrets: RwLock<Vec<Secret>>,
}

impl Transport {
    /// A request with a fresh correlation id and no credentials.
    fn request(&self, method: Method, url: &str) -> (RequestBuilder, RequestInfo) {
        let cid = uuid::Uuid::new_v4().to_string();
        let parsed = Url::parse(url).ok();
        let path = parsed
            .as_ref()
            .map_or_else(|| "?".to_owned(), |u| u.path().to_owned());
        let host = parsed.as_ref().map_or_else(String::new, |u| {
            let host = u.host_str().unwrap_or("");
            match u.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            }
        });
        let info = RequestInfo {
            method: method.as_str().to_owned(),
            host,
            path,
            correlation_id: cid.clone(),
            file: None,
            file_size: None,
        };
        let mut rb = self.http.request(method, url);
        if let Ok(v) = HeaderValue::from_str(&cid) {
            rb = rb.header(X_IMMICH_CID, v);
        }
        (rb, info)
    }

    /// Sends and waits for the response headers, failing as `Stalled` once `progress` has
    /// not moved for the stall timeout (an upload body moves it; otherwise it is the start).
    async fn send(
        &self,
        rb: RequestBuilder,
        info: &RequestInfo,
        progress: &Progress,
    ) -> Result<Response> {
        let send = rb.send();
        tokio::pin!(send);
        loop {
            let deadline = progress.last() + self.stall;
            tokio::select! {
                r = &mut send => return r.map_err(|e| self.network_error(&e, info)),
                () = tokio::time::sleep_until(deadline) => {
                    if progress.last() + self.stall <= Instant::now() {
                        return Err(ApiError::Stalled { request: Box::new(info.clone()), after: self.stall });
                    }
                }
            }
        }
    }

    /// Reads a body, chunk by chunk, each within the stall timeout; more than `limit`
    /// bytes is an error.
    async fn read_body(
        &self,
        mut resp: Response,
        info: &RequestInfo,
        limit: usize,
    ) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            match tokio::time::timeout(self.stall, resp.chunk()).await {
                Err(_) => {
                    return Err(ApiError::Stalled {
                        request: Box::new(info.clone()),
                        after: self.stall,
                    })
                }
                Ok(Err(e)) => return Err(self.network_error(&e, info)),
                Ok(Ok(None)) => return Ok(body),
                Ok(Ok(Some(chunk))) => {
                    if body.len() + chunk.len() > limit {
                        return Err(ApiError::BadAnswer {
                            request: Box::new(info.clone()),
                            detail: format!("the answer is larger than {limit} bytes"),
                        });
                    }
                    body.extend_from_slice(&chunk);
                }
            }
        }
    }

    /// Sends, expects 2xx and JSON of shape `T`.
    async fn json<T: DeserializeOwned>(&self, rb: RequestBuilder, info: &RequestInfo) -> Result<T> {
        let progress = Progress::new();
        let resp = self.send(rb, info, &progress).await?;
        if !resp.status().is_success() {
            return Err(self.http_error(resp, info).await);
        }
        let status = resp.status().as_u16();
        let content_type = content_type(&resp);
        let body = self.read_body(resp, info, MAX_JSON_BODY).await?;
        parse_json(&body, status, content_type, info)
    }

    /// Like `json`, but for discovery: how it went, never a status error.
    async fn probe<T: DeserializeOwned>(&self, rb: RequestBuilder, info: &RequestInfo) -> Probe<T> {
        let progress = Progress::new();
        let resp = match self.send(rb, info, &progress).await {
            Ok(r) => r,
            Err(e) => return Probe::Down(e),
        };
        let status = resp.status().as_u16();
        let what = format!("{} {}", info.method, info.path);
        if !resp.status().is_success() {
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(strip_query);
            return Probe::Miss(match location {
                Some(l) => format!("{what} redirected (HTTP {status}) to {l}"),
                None => format!("{what} answered HTTP {status}"),
            });
        }
        let content_type = content_type(&resp);
        match self.read_body(resp, info, MAX_ERROR_BODY).await {
            Err(ApiError::BadAnswer { .. }) => {
                Probe::Miss(format!("{what} answered a large non-API page"))
            }
            Err(e) => Probe::Down(e),
            Ok(body) => match parse_json::<T>(&body, status, content_type.clone(), info) {
                Ok(v) => Probe::Found(v),
                Err(ApiError::NotJson { .. }) => Probe::Miss(format!(
                    "{what} answered {}, not JSON",
                    if content_type.contains("html") {
                        "an HTML page (the web app?)".to_owned()
                    } else {
                        format!("{content_type:?}")
                    }
                )),
                Err(_) => Probe::Miss(format!("{what} answered JSON of another shape")),
            },
        }
    }

    /// The error for a non-2xx answer: the server's message (secrets redacted),
    /// `Retry-After`, and for a redirect where it pointed.
    async fn http_error(&self, resp: Response, info: &RequestInfo) -> ApiError {
        let status = resp.status().as_u16();
        let headers = resp.headers();
        let retry_after = headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, time::OffsetDateTime::now_utc()));
        let location = headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(strip_query);
        let body = self.read_error_body(resp).await;
        ApiError::Http {
            request: Box::new(info.clone()),
            status,
            message: self.redact(server_message(&body)),
            retry_after,
            location: location.map(|l| self.redact(l)),
        }
    }

    /// Up to `MAX_ERROR_BODY` bytes of an error body; whatever arrived if it fails or stalls
    /// (the status already says what matters).
    async fn read_error_body(&self, mut resp: Response) -> Vec<u8> {
        let mut body = Vec::new();
        while body.len() < MAX_ERROR_BODY {
            match tokio::time::timeout(self.stall, resp.chunk()).await {
                Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        body.truncate(MAX_ERROR_BODY);
        body
    }

    fn network_error(&self, e: &reqwest::Error, info: &RequestInfo) -> ApiError {
        let mut detail = error_chain(e);
        if e.is_timeout() && !detail.contains("timed out") {
            detail = format!("timed out: {detail}");
        }
        if detail.to_ascii_lowercase().contains("certificate") {
            detail.push_str(
                " (if the server's certificate comes from your own CA, set server.ca_file to \
                 that CA's PEM file)",
            );
        }
        ApiError::Network {
            request: Box::new(info.clone()),
            detail: self.redact(detail),
        }
    }

    fn add_secret(&self, secret: Secret) {
        if let Ok(mut list) = self.secrets.write() {
            list.push(secret);
        }
    }

    fn redact(&self, mut text: String) -> String {
        let list = match self.secrets.read() {
            Ok(list) => list,
            Err(poisoned) => poisoned.into_inner(),
        };
        for s in list.iter() {
            let v = s.expose();
            // Very short values would redact ordinary words; real keys and tokens are long.
            if v.len() >= 8 && text.contains(v) {
                text = text.replace(v, "***");
            }
        }
        text
    }
}

fn parse_json<T: DeserializeOwned>(
    body: &[u8],
    status: u16,
    content_type: String,
    info: &RequestInfo,
) -> Result<T> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Err(_) => Err(ApiError::NotJson {
            request: Box::new(info.clone()),
            status,
            content_type,
        }),
        Ok(value) => serde_json::from_value(value).map_err(|e| ApiError::BadAnswer {
            request: Box::new(info.clone()),
            detail: e.to_string(),
        }),
    }
}

fn content_type(resp: &Response) -> String {
    resp.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

fn strip_query(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or("").to_owned()
}

/// The causes of an error, outermost first, without reqwest's own message (which names the
/// full URL): e.g. `connection failed: client error (Connect): tcp connect error: Connection
/// refused (os error 111)`.
fn error_chain(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    if e.is_connect() {
        parts.push(CONNECT_FAILED.to_owned());
    } else if e.is_timeout() {
        parts.push("timed out".to_owned());
    } else if e.is_body() || e.is_request() {
        parts.push("the request failed".to_owned());
    } else if e.is_decode() {
        parts.push("the answer could not be read".to_owned());
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    if parts.is_empty() {
        parts.push("unknown error".to_owned());
    }
    parts.join(": ")
}
