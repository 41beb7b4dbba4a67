//! Hostile and broken answers (issue 13): what a misbehaving server or a proxy in front of one
//! sends instead of a good reply. The switches live in [`crate::faults::Faults`] and are
//! applied by its middleware: [`before`] may answer in place of the handler, [`after`]
//! rewrites the handler's answer.
//!
//! * `huge_reply(route, bytes, times)`: a 200 `application/json` body of `bytes` bytes,
//!   generated while it is sent (never held in memory), before auth, like a broken proxy.
//! * `trickle_reply(route, bytes_per_sec, times)`: the real answer, sent at that rate (1 is a
//!   byte a second): every chunk arrives well within any stall timeout, the whole never does.
//! * `non_uuid_ids(on)`: asset ids in the answers of the asset routes (`id`, `assetId`,
//!   `livePhotoVideoId`) that are UUIDs are replaced by `asset-<first 8 hex digits>`, in JSON
//!   answers and sync-stream lines alike.
//! * `duplicate_rows(on)`: every asset of a search page (`assets.items`), of a seed listing
//!   and every `AssetV1` line of the sync stream is sent twice in a row.
//!
//! Malformed JSON and a proxy's HTML login page with status 200 are canned replies:
//! [`crate::Failure::malformed_json`], [`crate::Failure::proxy_login_page`].

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;

use crate::faults::Failure;
use crate::state::{is_uuid, App};
use crate::{Dialect, ServerHandle};

/// The largest answer [`after`] buffers to rewrite; larger ones pass unchanged.
const REWRITE_LIMIT: usize = 64 << 20;

/// Routes whose answers carry asset ids.
const ASSET_ROUTES: [&str; 6] = [
    "POST /assets",
    "POST /assets/bulk-upload-check",
    "GET /assets/:id",
    "POST /search/metadata",
    "GET /assets",
    "POST /sync/stream",
];

/// Keys whose UUID values `non_uuid_ids` replaces.
const ID_KEYS: [&str; 3] = ["id", "assetId", "livePhotoVideoId"];

#[derive(Debug, Default)]
pub(crate) struct Hostile {
    /// route → (times left, body bytes).
    pub huge: HashMap<String, (u32, u64)>,
    /// route → (times left, bytes per second).
    pub trickle: HashMap<String, (u32, u64)>,
    pub non_uuid_ids: bool,
    pub duplicate_rows: bool,
    /// The version reported after [`ServerHandle::upgrade_to`].
    pub version: Option<(u32, u32, u32)>,
}

fn take(map: &mut HashMap<String, (u32, u64)>, route: &str) -> Option<u64> {
    let (left, value) = map.get_mut(route)?;
    let out = *value;
    *left = left.saturating_sub(1);
    if *left == 0 {
        map.remove(route);
    }
    Some(out)
}

impl Failure {
    /// A 200 whose body is JSON cut off in the middle, as a crashed upstream leaves it.
    pub fn malformed_json() -> Failure {
        Failure::new(200)
            .body(r#"{"results":[{"id":"1","action":"accept"},{"id":"2","act"#)
            .content_type("application/json")
    }

    /// A 200 with a single-sign-on proxy's login page (Authelia, oauth2-proxy and the like
    /// answer API calls of a client without their cookie this way).
    pub fn proxy_login_page() -> Failure {
        Failure::new(200)
            .body(
                "<!DOCTYPE html>\n<html><head><title>Sign in - Authelia</title></head>\n\
                 <body><form method=\"post\" action=\"/api/firstfactor\">\
                 <input name=\"username\"><input name=\"password\" type=\"password\">\
                 </form></body></html>\n",
            )
            .content_type("text/html; charset=utf-8")
    }
}

/// An answer in place of the handler's, or `None`.
pub(crate) fn before(app: &App, route: &str) -> Option<Response> {
    let bytes = take(&mut app.lock().faults.hostile.huge, route)?;
    Some(huge_body(bytes))
}

/// What the trickle switch and the rewriting switches do to the handler's answer.
pub(crate) async fn after(app: &App, route: &str, resp: Response) -> Response {
    let (trickle, ids, dups) = {
        let mut st = app.lock();
        let h = &mut st.faults.hostile;
        (
            take(&mut h.trickle, route),
            h.non_uuid_ids,
            h.duplicate_rows,
        )
    };
    let rewrite = (ids || dups) && ASSET_ROUTES.contains(&route);
    if trickle.is_none() && !rewrite {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let Ok(mut bytes) = axum::body::to_bytes(body, REWRITE_LIMIT).await else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "answer too large to rewrite",
        )
            .into_response();
    };
    if rewrite && parts.status.is_success() {
        bytes = Bytes::from(rewrite_body(&bytes, route, ids, dups));
    }
    let mut parts = parts;
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = match trickle {
        Some(rate) => trickled(bytes, rate),
        None => Body::from(bytes),
    };
    Response::from_parts(parts, body)
}

/// `{"filler":"aaaa…"}` of exactly `total` bytes (at least the 14 of its frame).
fn huge_body(total: u64) -> Response {
    const CHUNK: usize = 64 << 10;
    static FILL: [u8; CHUNK] = [b'a'; CHUNK];
    let head: &'static [u8] = b"{\"filler\":\"";
    let tail: &'static [u8] = b"\"}";
    let mut left = total.saturating_sub((head.len() + tail.len()) as u64);
    let mut state = 0u8; // 0 head, 1 filler, 2 tail, 3 done
    let stream = futures_util::stream::poll_fn(move |_| {
        let item = match state {
            0 => {
                state = 1;
                Some(Bytes::from_static(head))
            }
            1 if left > 0 => {
                let n = left.min(CHUNK as u64) as usize;
                left -= n as u64;
                Some(Bytes::from_static(&FILL[..n]))
            }
            1 | 2 => {
                state = 3;
                Some(Bytes::from_static(tail))
            }
            _ => None,
        };
        std::task::Poll::Ready(item.map(Ok::<_, std::convert::Infallible>))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// `bytes`, handed out at `rate` bytes a second (at least one byte per chunk).
fn trickled(bytes: Bytes, rate: u64) -> Body {
    let rate = rate.max(1);
    // Up to ten chunks a second.
    let step = (rate / 10).max(1) as usize;
    let pause = Duration::from_secs_f64(step as f64 / rate as f64);
    let stream = futures_util::stream::unfold((bytes, true), move |(mut rest, first)| async move {
        if rest.is_empty() {
            return None;
        }
        if !first {
            tokio::time::sleep(pause).await;
        }
        let chunk = rest.split_to(step.min(rest.len()));
        Some((Ok::<_, std::convert::Infallible>(chunk), (rest, false)))
    });
    Body::from_stream(stream)
}

fn rewrite_body(bytes: &[u8], route: &str, ids: bool, dups: bool) -> Vec<u8> {
    if route == "POST /sync/stream" {
        let mut out = Vec::with_capacity(bytes.len() * 2);
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(mut v) = serde_json::from_slice::<Value>(line) else {
                out.extend_from_slice(line);
                out.push(b'\n');
                continue;
            };
            if ids {
                replace_ids(&mut v);
            }
            let text = v.to_string();
            let twice = dups && v.get("type").and_then(Value::as_str) == Some("AssetV1");
            for _ in 0..if twice { 2 } else { 1 } {
                out.extend_from_slice(text.as_bytes());
                out.push(b'\n');
            }
        }
        return out;
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(bytes) else {
        return bytes.to_vec();
    };
    if dups {
        let list = match &mut v {
            Value::Array(items) => Some(items),
            Value::Object(o) => o
                .get_mut("assets")
                .and_then(|a| a.get_mut("items"))
                .and_then(Value::as_array_mut),
            _ => None,
        };
        if let Some(items) = list {
            *items = items.iter().flat_map(|i| [i.clone(), i.clone()]).collect();
        }
    }
    if ids {
        replace_ids(&mut v);
    }
    v.to_string().into_bytes()
}

fn replace_ids(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, val) in o.iter_mut() {
                match val {
                    Value::String(s) if ID_KEYS.contains(&k.as_str()) && is_uuid(s) => {
                        *s = format!("asset-{}", &s[..8]);
                    }
                    other => replace_ids(other),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(replace_ids),
        _ => {}
    }
}

impl ServerHandle {
    /// The next `times` requests on `route` get a 200 JSON answer of `bytes` bytes,
    /// generated as it is sent (see the module docs).
    pub fn huge_reply(&self, route: &str, bytes: u64, times: u32) {
        let mut st = self.app.lock();
        if times == 0 {
            st.faults.hostile.huge.remove(route);
        } else {
            st.faults.hostile.huge.insert(route.into(), (times, bytes));
        }
    }

    /// The next `times` answers on `route` are sent at `bytes_per_sec`.
    pub fn trickle_reply(&self, route: &str, bytes_per_sec: u64, times: u32) {
        let mut st = self.app.lock();
        if times == 0 {
            st.faults.hostile.trickle.remove(route);
        } else {
            st.faults
                .hostile
                .trickle
                .insert(route.into(), (times, bytes_per_sec));
        }
    }

    /// While on, asset ids in answers are not UUIDs.
    pub fn non_uuid_ids(&self, on: bool) {
        self.app.lock().faults.hostile.non_uuid_ids = on;
    }

    /// An upgrade in place, as a restarted Immich on the same port with the same database:
    /// every connection and socket is dropped, and from now on `/server/version` and the
    /// socket's `on_server_version` report `major.minor.patch`.
    pub fn upgrade_to(&self, major: u32, minor: u32, patch: u32) {
        self.app.lock().faults.hostile.version = Some((major, minor, patch));
        self.app.drop_connections();
    }

    /// A restart on the same port with the same state into another dialect (another API
    /// root and routes: an upgrade across a major, or a proxy put in front): every connection
    /// and socket is dropped, and from now on requests are answered as `dialect` answers them.
    /// The version reported stays.
    pub fn restart_as(&self, dialect: Dialect) {
        self.app.set_dialect(dialect);
        self.app.drop_connections();
    }

    /// While on, every asset of a page or stream is sent twice.
    pub fn duplicate_rows(&self, on: bool) {
        self.app.lock().faults.hostile.duplicate_rows = on;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_replaced_and_rows_doubled() {
        let id = "0f1e2d3c-4b5a-4978-8877-665544332211";
        let page = format!(r#"{{"assets":{{"items":[{{"id":"{id}","ownerId":"{id}"}}]}}}}"#);
        let out = rewrite_body(page.as_bytes(), "POST /search/metadata", true, true);
        let v: Value = serde_json::from_slice(&out).unwrap();
        let items = v["assets"]["items"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0]["id"], "asset-0f1e2d3c");
        assert_eq!(items[0]["ownerId"], id, "user ids stay");
        let stream = format!(
            "{{\"type\":\"AssetV1\",\"data\":{{\"id\":\"{id}\"}}}}\n{{\"type\":\"SyncCompleteV1\"}}\n"
        );
        let out = rewrite_body(stream.as_bytes(), "POST /sync/stream", false, true);
        assert_eq!(String::from_utf8(out).unwrap().lines().count(), 3);
    }
}
