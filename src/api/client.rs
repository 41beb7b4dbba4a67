//! [`ApiClient`]: connecting (URL normalisation, the plain-http policy, discovery, TLS,
//! authentication) and what a connected client knows about its server. The calls it makes
//! live next to their subject: `assets`, `server`, `upload`, `sync`, `socket`; the HTTP
//! plumbing under them is `transport`.
//!
//! Must not: decide what a failure means for the daemon (callers read [`ApiError::class`]).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, Response, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::auth::{login, Auth};
use super::discovery::discover;
use super::endpoint;
use super::transport::Progress;
use super::transport::{build_http_client, header_value, Transport};
use super::{tls, ApiError, CredentialsKind, Dialect, RequestInfo, Result};
use crate::config::ServerUrl;
use crate::config::{Credentials, Secret, ServerConfig};

/// A connected, authenticated client. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct ApiClient {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) transport: Transport,
    pub(super) base: ServerUrl,
    pub(super) api_root: Url,
    /// `api_root` without the trailing slash, for `format!("{api}/assets")`.
    pub(super) api_text: String,
    pub(super) dialect: Dialect,
    pub(super) auth: Auth,
    pub(super) user_id: Option<String>,
    pub(super) key_permissions: Option<Vec<String>>,
    /// The trust of the HTTP client, for the live-event socket.
    pub(super) tls: Arc<rustls::ClientConfig>,
    /// `server.connect_timeout`, for the live-event socket (reqwest has its own copy).
    pub(super) connect_timeout: Duration,
    /// Bytes in flight and the bandwidth cap of this client's uploads.
    pub(super) meter: Arc<super::UploadMeter>,
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
    /// Refuses plain `http://` to public hosts (unless allowed), finds
    /// the API root and dialect, and authenticates: an API key is checked for the
    /// [`REQUIRED_PERMISSIONS`](super::REQUIRED_PERMISSIONS); email + password are exchanged for a session token.
    pub async fn connect(server: &ServerConfig) -> Result<ApiClient> {
        // Parsed and normalised once, in config; only the plain-http policy is decided here.
        let base = server.url.clone();
        if !base.is_https() && !base.is_local() {
            if !server.allow_insecure_http {
                return Err(ApiError::Config {
                    message: format!(
                        "refusing plain http:// to {}, which is not a loopback, private or \
                         .local address: the credentials and photos would cross the network \
                         unencrypted; use https://, or set {}.allow_insecure_http = true \
                         if the network path is trusted",
                        base.host(),
                        server.table
                    ),
                });
            }
            tracing::warn!(
                host = base.host(),
                "{}.allow_insecure_http is set: credentials and photos go over plain http",
                server.table
            );
        }

        // A credential that cannot be sent is a configuration error; say so before any
        // network work.
        match &server.credentials {
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
        let secrets = match &server.credentials {
            Credentials::ApiKey(key) => vec![key.clone()],
            Credentials::Password { password, .. } => vec![password.clone()],
        };
        let tls = tls::client_config(
            server.ca_file.as_deref(),
            &format!("{}.ca_file", server.table),
        )?;
        let transport = Transport {
            http: build_http_client(server, &tls)?,
            stall: server.stall_timeout,
            table: server.table.clone(),
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
            tls,
            connect_timeout: server.connect_timeout,
            meter: Arc::default(),
        };
        match server.credentials.clone() {
            Credentials::ApiKey(key) => {
                inner.auth = Auth::ApiKey(key);
                // Two independent requests, sent together (a round trip less to connect);
                // the key's own answer is looked at first, so a refused key is reported as
                // it was when they went one after the other.
                let (permissions, user) =
                    tokio::join!(inner.check_key_permissions(), inner.fetch_user_id());
                inner.key_permissions = permissions?;
                inner.user_id = user?;
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

    /// What the uploads are sending now, and their shared cap (`upload.max_rate`).
    pub fn upload_meter(&self) -> &super::UploadMeter {
        &self.inner.meter
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
        self.inner.base.url()
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

    /// Whether live events can work: a session, or a key with `all`
    /// (docs/SERVER-API.md#permissions, docs/SERVER-API.md#connecting). For a key whose
    /// permissions are unknown (seed), `true`: the socket will tell.
    pub fn can_open_websocket(&self) -> bool {
        if self.is_session() {
            return true;
        }
        match &self.inner.key_permissions {
            Some(p) => p.iter().any(|p| p == "all"),
            None => true,
        }
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

    /// `GET {api}{path}` with credentials, stall detection and error mapping.
    pub(super) async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let (rb, info) = self.request(Method::GET, path);
        self.inner.transport.json(rb, &info).await
    }

    /// `POST {api}{path}` with a JSON body; see [`get_json`](Self::get_json).
    pub(super) async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
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
    /// reading the body is the caller's, within the stall timeout per chunk.
    pub(super) async fn post_for_response<B: Serialize + ?Sized>(
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
    pub(super) fn stall_timeout(&self) -> Duration {
        self.inner.transport.stall
    }

    pub(super) fn request(&self, method: Method, path: &str) -> (RequestBuilder, RequestInfo) {
        self.inner.request(method, path)
    }

    pub(super) fn request_url(&self, method: Method, url: &str) -> (RequestBuilder, RequestInfo) {
        self.inner.request_url(method, url)
    }
}

impl Inner {
    /// A request to `{api}{path}` with the credential header.
    pub(super) fn request(&self, method: Method, path: &str) -> (RequestBuilder, RequestInfo) {
        self.request_url(method, &format!("{}{path}", self.api_text))
    }

    pub(super) fn request_url(&self, method: Method, url: &str) -> (RequestBuilder, RequestInfo) {
        let (rb, info) = self.transport.request(method, url);
        (rb.headers(self.auth_headers()), info)
    }
}
