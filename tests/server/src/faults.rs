//! Fault switches and request counters, applied by one middleware in front of every route
//! except `/__admin/`.
//!
//! The middleware names each request by its *route key* (method and path without the `/api`
//! prefix, UUID segments replaced by `:id`, e.g. `PUT /albums/:id/assets`), counts it, and
//! then applies, in this order: an armed `fail_next` (answered at once, like a proxy would, with
//! the body drained in the background so the client reads the reply instead of a reset), a
//! `delay`, and a body tap that implements `drop_after_bytes`, `slow_body` and the upload byte
//! counter. Dropping a connection needs the per-connection [`ConnAbort`] token that the accept
//! loop (`net.rs`) puts into every request: cancelling it makes the connection task drop the
//! socket with no HTTP response at all.
//!
//! While `offline` is on, every request (but `/__admin/`) is counted with status 0 and its
//! connection dropped before anything else happens: the server looks stopped, and tests can
//! still count what a client tried meanwhile.
//!
//! Switches that belong to one handler (`stall_after_store`, `corrupt_uploads`,
//! `corrupt_downloads`,
//! `storage_full`, `unauthorized`, `reject_websockets`) are only stored here and read by it.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::error::{ApiError, RequestInfo, REQUEST};
use crate::state::{is_uuid, new_id, App};
use crate::Dialect;

/// The route key of uploads.
pub(crate) const UPLOAD_ROUTE: &str = "POST /assets";

/// Bytes held back by `drop_after_bytes` when the whole body is shorter than its limit:
/// more than a multipart closing boundary.
const DROP_TAIL: u64 = 256;

/// How long a drained body (after an early reply) may keep a connection busy.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

/// A canned reply for [`crate::ServerHandle::fail_with`]: what a proxy or a failing server
/// would send instead of the real answer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// HTTP status, e.g. 502 or 413.
    pub status: u16,
    /// Body to send. `None` sends an Immich-shaped JSON error for the status.
    #[serde(default)]
    pub body: Option<String>,
    /// Content type of `body`; `text/html` when a body is given without one.
    #[serde(default)]
    pub content_type: Option<String>,
    /// Value of a `Retry-After` header, e.g. `"3"`.
    #[serde(default)]
    pub retry_after: Option<String>,
}

impl Failure {
    pub fn new(status: u16) -> Failure {
        Failure {
            status,
            body: None,
            content_type: None,
            retry_after: None,
        }
    }

    pub fn body(mut self, body: impl Into<String>) -> Failure {
        self.body = Some(body.into());
        self
    }

    pub fn content_type(mut self, content_type: impl Into<String>) -> Failure {
        self.content_type = Some(content_type.into());
        self
    }

    pub fn retry_after(mut self, value: impl Into<String>) -> Failure {
        self.retry_after = Some(value.into());
        self
    }

    /// nginx's reply to a body over `client_max_body_size`.
    pub fn nginx_413() -> Failure {
        Failure::new(413).body(
            "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n\
             <center><h1>413 Request Entity Too Large</h1></center>\r\n\
             <hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
        )
    }

    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut resp = match self.body {
            Some(body) => {
                let ct = self.content_type.unwrap_or_else(|| "text/html".to_string());
                (status, [(header::CONTENT_TYPE, ct)], body).into_response()
            }
            None => ApiError {
                status,
                message: status.canonical_reason().unwrap_or("Error").into(),
            }
            .into_response(),
        };
        if let Some(v) = self
            .retry_after
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// All fault switches. Route-keyed ones are maps from route key to setting.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub fail: HashMap<String, (u32, Failure)>,
    /// route → (times left, bytes to read before dropping).
    pub drop_after: HashMap<String, (u32, u64)>,
    pub delay: HashMap<String, Duration>,
    pub slow_body: Option<u64>,
    pub stall_after_store: u32,
    pub corrupt_uploads: bool,
    /// `GET /assets/:id/original` serves the stored bytes with one flipped: bytes other
    /// than the stored checksum's.
    pub corrupt_downloads: bool,
    /// (times left, bytes): the next replies of `GET /assets/:id/original` send that many
    /// body bytes, then the connection is dropped.
    pub cut_downloads: Option<(u32, u64)>,
    pub unauthorized: bool,
    pub storage_full: bool,
    pub reject_websockets: bool,
    /// The server is "down": every request's connection is dropped unanswered.
    pub offline: bool,
    /// Hostile answers (`hostile.rs`).
    pub hostile: crate::hostile::Hostile,
}

/// Decrements a "next N" counter and says whether it fired.
fn take<T: Clone>(map: &mut HashMap<String, (u32, T)>, route: &str) -> Option<T> {
    let (left, value) = map.get_mut(route)?;
    let out = value.clone();
    *left -= 1;
    if *left == 0 {
        map.remove(route);
    }
    Some(out)
}

/// The per-connection abort signal. Cancelling it makes the accept loop drop the connection.
#[derive(Clone, Debug)]
pub(crate) struct ConnAbort(pub CancellationToken);

/// Names a request for counters and faults. See the module docs.
pub(crate) fn route_key(method: &Method, path: &str, dialect: Dialect) -> String {
    let api_path = match dialect {
        Dialect::Seed => Some(path),
        _ => path
            .strip_prefix("/api")
            .filter(|rest| rest.is_empty() || rest.starts_with('/')),
    };
    let (p, web) = match api_path {
        Some(p) => (p, false),
        None => (path, path != "/.well-known/immich"),
    };
    let mut norm = p
        .split('/')
        .map(|seg| if is_uuid(seg) { ":id" } else { seg })
        .collect::<Vec<_>>()
        .join("/");
    while norm.len() > 1 && norm.ends_with('/') {
        norm.pop();
    }
    if norm.is_empty() {
        norm.push('/');
    }
    if web {
        format!("{method} {norm} (web)")
    } else {
        format!("{method} {norm}")
    }
}

/// Records `status` for `route` and cancels the connection.
fn drop_connection(app: &App, route: &str, abort: &ConnAbort) {
    {
        let mut st = app.lock();
        *st.requests
            .entry(route.to_string())
            .or_default()
            .by_status
            .entry(0)
            .or_default() += 1;
    }
    tracing::debug!(route, "dropping connection without a reply");
    abort.0.cancel();
}

/// Keeps reading a body after an early reply, so the client's writes do not meet a reset
/// before it has read the reply (nginx's "lingering close").
pub(crate) fn drain_in_background(app: &App, body: Body) {
    let shutdown = app.shutdown.clone();
    tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        let drain = async { while let Some(Ok(_)) = stream.next().await {} };
        tokio::select! {
            _ = drain => {}
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(DRAIN_LIMIT) => {}
        }
    });
}

/// The counter, fault and correlation-id middleware.
pub(crate) async fn middleware(State(app): State<App>, req: Request, next: Next) -> Response {
    let dialect = app.dialect();
    let cid = req
        .headers()
        .get("x-immich-cid")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(new_id);
    let info = RequestInfo {
        cid: cid.clone(),
        dialect,
    };
    if req.uri().path().starts_with("/__admin") {
        return REQUEST.scope(info, next.run(req)).await;
    }
    let route = route_key(req.method(), req.uri().path(), dialect);
    tracing::debug!(route, "request");

    let offline = {
        let mut st = app.lock();
        st.requests.entry(route.clone()).or_default().total += 1;
        st.faults.offline
    };
    if offline {
        if let Some(abort) = req.extensions().get::<ConnAbort>() {
            drop_connection(&app, &route, abort);
            std::future::pending::<()>().await;
        }
    }
    let (fail, drop_at, delay, rate) = {
        let mut st = app.lock();
        let fail = take(&mut st.faults.fail, &route);
        let drop_at = if fail.is_none() {
            take(&mut st.faults.drop_after, &route)
        } else {
            None
        };
        let delay = st.faults.delay.get(&route).copied();
        let rate = if route == UPLOAD_ROUTE {
            st.faults.slow_body
        } else {
            None
        };
        (fail, drop_at, delay, rate)
    };

    let app2 = app.clone();
    let route2 = route.clone();
    let mut resp = REQUEST
        .scope(info, async move {
            let app = app2;
            let route = route2;
            if let Some(failure) = fail {
                drain_in_background(&app, req.into_body());
                return failure.into_response();
            }
            if let Some(resp) = crate::hostile::before(&app, &route) {
                drain_in_background(&app, req.into_body());
                return resp;
            }
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            let abort = req.extensions().get::<ConnAbort>().cloned();
            // When the whole body fits under the limit, hold back its tail: a multipart parser
            // is done once it has seen the closing boundary, before the stream ends, so
            // dropping "at the end" would come too late to keep the upload from landing.
            let body_len = req.body().size_hint().exact();
            let drop_at = drop_at.filter(|_| abort.is_some()).map(|n| match body_len {
                Some(len) if len <= n => len.saturating_sub(DROP_TAIL),
                _ => n,
            });
            if let (Some(n), Some(abort)) = (drop_at, abort.as_ref()) {
                if n == 0 || req.body().is_end_stream() {
                    drop_connection(&app, &route, abort);
                    std::future::pending::<()>().await;
                }
            }
            let is_upload = route == UPLOAD_ROUTE;
            let req = if drop_at.is_some() || rate.is_some() || is_upload {
                let (parts, body) = req.into_parts();
                let tap = BodyTap {
                    inner: body.into_data_stream(),
                    pending: Bytes::new(),
                    seen: 0,
                    drop_at,
                    rate,
                    count_upload: is_upload,
                    app: app.clone(),
                    route: route.clone(),
                    abort: abort.clone(),
                };
                Request::from_parts(parts, tap.into_body())
            } else {
                req
            };
            let resp = next.run(req).await;
            if let (Some(_), Some(abort)) = (drop_at, abort.as_ref()) {
                // The handler answered before reading up to the drop point (an early reply):
                // the reply is lost all the same.
                drop_connection(&app, &route, abort);
                std::future::pending::<()>().await;
            }
            crate::hostile::after(&app, &route, resp).await
        })
        .await;

    {
        let mut st = app.lock();
        *st.requests
            .entry(route)
            .or_default()
            .by_status
            .entry(resp.status().as_u16())
            .or_default() += 1;
    }
    if let Ok(v) = HeaderValue::from_str(&cid) {
        resp.headers_mut().insert("x-immich-cid", v);
    }
    resp
}

/// Wraps a request body: counts upload bytes, throttles (`slow_body`) and drops the
/// connection after `drop_at` bytes or at the end of a shorter body.
struct BodyTap {
    inner: axum::body::BodyDataStream,
    pending: Bytes,
    seen: u64,
    drop_at: Option<u64>,
    rate: Option<u64>,
    count_upload: bool,
    app: App,
    route: String,
    abort: Option<ConnAbort>,
}

impl BodyTap {
    fn into_body(self) -> Body {
        Body::from_stream(futures_util::stream::unfold(self, |mut tap| async move {
            tap.next_chunk().await.map(|item| (item, tap))
        }))
    }

    /// Drops the connection. The caller then never yields again; the connection task drops
    /// this stream along with everything else.
    fn hang_up(&self) -> bool {
        match &self.abort {
            Some(abort) => {
                drop_connection(&self.app, &self.route, abort);
                true
            }
            None => false,
        }
    }

    async fn next_chunk(&mut self) -> Option<Result<Bytes, axum::Error>> {
        while self.pending.is_empty() {
            match self.inner.next().await {
                Some(Ok(chunk)) => self.pending = chunk,
                Some(Err(e)) => return Some(Err(e)),
                None => {
                    if self.drop_at.is_some() && self.hang_up() {
                        std::future::pending::<()>().await;
                    }
                    return None;
                }
            }
        }
        let mut n = self.pending.len() as u64;
        if let Some(rate) = self.rate {
            // Hand out at most 1/20 s worth at a time so the rate is smooth.
            n = n.min((rate / 20).max(1));
        }
        if let Some(limit) = self.drop_at {
            let left = limit.saturating_sub(self.seen);
            if left == 0 {
                if self.hang_up() {
                    std::future::pending::<()>().await;
                }
                return None;
            }
            n = n.min(left);
        }
        let chunk = self.pending.split_to(n as usize);
        self.seen += n;
        if self.count_upload {
            self.app
                .upload_body_bytes
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(rate) = self.rate {
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate.max(1) as f64)).await;
        }
        Some(Ok(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_keys() {
        let id = "0f1e2d3c-4b5a-4978-8877-665544332211";
        let k = |m: Method, p: &str, d| route_key(&m, p, d);
        assert_eq!(
            k(Method::POST, "/api/assets", Dialect::Immich),
            "POST /assets"
        );
        assert_eq!(
            k(
                Method::PUT,
                &format!("/api/albums/{id}/assets"),
                Dialect::Immich
            ),
            "PUT /albums/:id/assets"
        );
        assert_eq!(
            k(Method::GET, "/api/socket.io/", Dialect::Immich),
            "GET /socket.io"
        );
        assert_eq!(
            k(Method::GET, "/server/ping", Dialect::Immich),
            "GET /server/ping (web)"
        );
        assert_eq!(
            k(Method::GET, "/.well-known/immich", Dialect::ImmichNext),
            "GET /.well-known/immich"
        );
        assert_eq!(
            k(Method::GET, &format!("/assets/{id}"), Dialect::Seed),
            "GET /assets/:id"
        );
        assert_eq!(
            k(Method::GET, "/apiary", Dialect::Immich),
            "GET /apiary (web)"
        );
    }
}
