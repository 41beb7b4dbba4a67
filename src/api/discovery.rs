//! Discovery: where the API of the configured server is, and which dialect it speaks,
//! found by how the server behaves (docs/SERVER-API.md#2-discovery), never by its version
//! number.
//!
//! `/.well-known/immich` names the API root; `{base}/api` is tried next; both must answer
//! `server/ping` with JSON `{"res":"pong"}` to count as Immich. A server that answers the
//! ping at `{base}` itself is seed-style. Real Immich v2.x and the next major (which still
//! reports 2.7.5) are told apart later, by the shape of each answer, not here.
//!
//! Must not: send credentials (nothing here is authenticated) or follow a well-known answer
//! to another host.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Url};
use serde::de::DeserializeOwned;

use super::dto;
use super::endpoint;
use super::transport::Progress;
use super::transport::{content_type, parse_json, short, strip_query, Transport, MAX_ERROR_BODY};
use super::{ApiError, Dialect, RequestInfo, Result};
use crate::config::ServerUrl;

/// How long discovery waits for `/.well-known/immich`
/// (docs/SERVER-API.md#finding-the-api-root).
const WELL_KNOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Finds the API root and dialect (docs/SERVER-API.md#finding-the-api-root):
/// `/.well-known/immich`, then `{base}/api`, each verified with `server/ping` answering JSON
/// `{"res":"pong"}`, then `{base}` itself (seed-style paths).
pub(super) async fn discover(t: &Transport, base: &ServerUrl) -> Result<(Url, Dialect)> {
    let mut attempts = Vec::new();
    let mut first_down: Option<ApiError> = None;
    let mut candidates: Vec<Url> = Vec::new();

    let (rb, info) = t.request(Method::GET, &base.join("/.well-known/immich"));
    match probe::<dto::WellKnown>(t, rb.timeout(WELL_KNOWN_TIMEOUT), &info).await {
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
    let seed = base.url().clone();
    let tries = candidates
        .into_iter()
        .map(|u| (u, Dialect::Immich))
        .chain(std::iter::once((seed, Dialect::Seed)));
    for (root, dialect) in tries {
        let ping = format!("{}/server/ping", endpoint::root_text(&root));
        let (rb, info) = t.request(Method::GET, &ping);
        match probe::<dto::Ping>(t, rb, &info).await {
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
        base: base.as_str().to_owned(),
        attempts,
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

/// Like [`Transport::json`], but how it went, never a status error.
async fn probe<T: DeserializeOwned>(
    t: &Transport,
    rb: RequestBuilder,
    info: &RequestInfo,
) -> Probe<T> {
    let progress = Progress::new();
    let resp = match t.send(rb, info, &progress).await {
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
    match t.read_body(resp, info, MAX_ERROR_BODY).await {
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
