//! The HTTP plumbing under every call: one request with a correlation id, the stall
//! watchdog, bounded body reads, JSON parsing, and the mapping of every failure to an
//! [`ApiError`] with the server's own words and no secret in it.
//!
//! Timeouts: a connect timeout on the client and no whole-request timeout (a video may take
//! hours). Instead, a request that makes no progress for `stall_timeout` fails as transient:
//! the wait for response headers and every response body chunk are bounded, and during an
//! upload every body chunk handed to hyper counts as progress.
//!
//! Owns: the reqwest client and its settings, header values, redaction. Must not: know any
//! endpoint or credential scheme (the callers add paths and auth headers).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder, Response, Url};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::error::{parse_retry_after, server_message};
use super::limits::ReplyClass;
use super::{ApiError, RequestInfo, Result};
use crate::config::{Secret, ServerConfig};

/// The largest JSON answer read (a 5000-item bulk check is about 1 MB).
pub(super) const MAX_JSON_BODY: usize = 32 << 20;
/// How much of an error body is read for its message.
pub(super) const MAX_ERROR_BODY: usize = 64 << 10;
/// Idle pooled connections are dropped before Node's default 5 s keep-alive closes them
/// server-side, so a request is never written into a connection the server is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

const X_IMMICH_CID: HeaderName = HeaderName::from_static("x-immich-cid");

/// `error_chain` starts with this for errors of the connect phase.
const CONNECT_FAILED: &str = "connection failed";

/// Whether the request never reached the server (refused, unreachable): no answer was lost.
pub(super) fn is_connect_failure(e: &ApiError) -> bool {
    matches!(e, ApiError::Network { detail, .. } if detail.starts_with(CONNECT_FAILED))
}

/// An error, short, for a list of attempts.
pub(super) fn short(e: &ApiError) -> String {
    match e {
        ApiError::Network { detail, .. } => detail.clone(),
        other => other.to_string(),
    }
}

/// The HTTP plumbing shared by connect (before the client exists) and the endpoint calls.
pub(super) struct Transport {
    pub(super) http: reqwest::Client,
    pub(super) stall: Duration,
    /// The config table of the server's settings (`server`, `accounts[N]`), to name the
    /// key a certificate failure needs.
    pub(super) table: String,
    /// Values redacted from anything that goes into an error (server messages included).
    /// Grows when a session token is issued; the lock is never held across an `.await`.
    pub(super) secrets: RwLock<Vec<Secret>>,
}

impl Transport {
    /// A request with a fresh correlation id and no credentials.
    pub(super) fn request(&self, method: Method, url: &str) -> (RequestBuilder, RequestInfo) {
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
    pub(super) async fn send(
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
    /// bytes (or than the route class allows, `limits.rs`) is an error, and so is a body that
    /// keeps moving but is not complete by the class's deadline.
    pub(super) async fn read_body(
        &self,
        mut resp: Response,
        info: &RequestInfo,
        limit: usize,
    ) -> Result<Vec<u8>> {
        let class = ReplyClass::of(&info.method, &info.path);
        let limit = limit.min(class.max_bytes());
        let whole = class.deadline(self.stall);
        let deadline = Instant::now() + whole;
        let mut body = Vec::new();
        loop {
            let wait = self
                .stall
                .min(deadline.saturating_duration_since(Instant::now()));
            match tokio::time::timeout(wait, resp.chunk()).await {
                Err(_) if Instant::now() >= deadline => {
                    return Err(ApiError::BadAnswer {
                        request: Box::new(info.clone()),
                        detail: format!(
                            "the answer was still incomplete after {} s ({} bytes so far); \
                             the connection was dropped",
                            whole.as_secs(),
                            body.len()
                        ),
                    })
                }
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
                            detail: format!(
                                "the answer is larger than {} KiB, the most read for this \
                                 route; the connection was dropped",
                                limit >> 10
                            ),
                        });
                    }
                    body.extend_from_slice(&chunk);
                }
            }
        }
    }

    /// Sends, expects 2xx and JSON of shape `T`.
    pub(super) async fn json<T: DeserializeOwned>(
        &self,
        rb: RequestBuilder,
        info: &RequestInfo,
    ) -> Result<T> {
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

    /// The error for a non-2xx answer: the server's message (secrets redacted),
    /// `Retry-After`, and for a redirect where it pointed.
    pub(super) async fn http_error(&self, resp: Response, info: &RequestInfo) -> ApiError {
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
    pub(super) async fn read_error_body(&self, mut resp: Response) -> Vec<u8> {
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

    pub(super) fn network_error(&self, e: &reqwest::Error, info: &RequestInfo) -> ApiError {
        let mut detail = error_chain(e);
        if e.is_timeout() && !detail.contains("timed out") {
            detail = format!("timed out: {detail}");
        }
        if detail.to_ascii_lowercase().contains("certificate") {
            detail.push_str(&format!(
                " (if the server's certificate comes from your own CA, set {}.ca_file to \
                 that CA's PEM file)",
                self.table
            ));
        }
        ApiError::Network {
            request: Box::new(info.clone()),
            detail: self.redact(detail),
        }
    }

    pub(super) fn add_secret(&self, secret: Secret) {
        if let Ok(mut list) = self.secrets.write() {
            list.push(secret);
        }
    }

    pub(super) fn redact(&self, mut text: String) -> String {
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

pub(super) fn parse_json<T: DeserializeOwned>(
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

pub(super) fn content_type(resp: &Response) -> String {
    resp.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

pub(super) fn strip_query(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or("").to_owned()
}

/// The causes of an error, outermost first, without reqwest's own message (which names the
/// full URL): e.g. `connection failed: client error (Connect): tcp connect error: Connection
/// refused (os error 111)`.
pub(super) fn error_chain(e: &reqwest::Error) -> String {
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

/// A sensitive header value; the error never shows the value.
pub(super) fn header_value(value: &str, what: &str) -> Result<HeaderValue> {
    let mut v = HeaderValue::from_str(value).map_err(|_| ApiError::Config {
        message: format!(
            "{what} contains characters that cannot be sent in an HTTP header (a line break \
             or a non-ASCII character?); check the key or its file"
        ),
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// The HTTP client: rustls with the shared trust (`tls`), no redirects, the connect
/// timeout, the user agent. It carries no credentials.
pub(super) fn build_http_client(
    server: &ServerConfig,
    tls: &rustls::ClientConfig,
) -> Result<reqwest::Client> {
    let mut tls = tls.clone();
    // What reqwest's own rustls set-up asks for (no `http2` feature is enabled).
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .user_agent(concat!("immish-sync/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(server.connect_timeout)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .tcp_keepalive(Duration::from_secs(60))
        .use_preconfigured_tls(tls)
        .build()
        .map_err(|e| ApiError::Config {
            message: format!("cannot set up the HTTP client: {}", error_chain(&e)),
        })
}

/// When a request last moved: the upload body stream touches it on every chunk it hands to
/// hyper, and the stall watchdog reads it.
pub(crate) struct Progress {
    origin: Instant,
    last_ms: AtomicU64,
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    pub fn touch(&self) {
        let ms = self.origin.elapsed().as_millis();
        self.last_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}
