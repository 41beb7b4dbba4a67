//! The daemon's HTTP endpoint (`[metrics] listen`, docs/STATUS.md#http-endpoint):
//! `/healthz` for a supervisor, `/metrics` for Prometheus, `/status.json` (what
//! `status --json` prints) and `/`, a status page for people.
//!
//! Owns: the listener, the connections (bounded, each with a time limit), the bearer-token
//! check, and the routes. Every answer is built from the state database (read-only, as
//! `status` reads it) and the daemon's live numbers ([`Live`]). Must not: write to the
//! database, or answer anything but GET and HEAD.
//!
//! Built on hyper's HTTP/1 server directly: four routes do not need a framework.

mod metrics;
mod page;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Secret};
use crate::db::meta::ConnectionState;
use crate::db::DbError;
use crate::human::ago;
use crate::live::Live;
use crate::status::{self, Status};

pub use metrics::render as render_metrics;
pub use page::render as render_page;

/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 16;
/// The longest one connection may stay open (a client that sends nothing must not hold a
/// slot for good).
const CONNECTION_LIMIT: Duration = Duration::from_secs(30);

/// A bound endpoint, served by [`Endpoint::serve`].
pub struct Endpoint {
    listener: TcpListener,
    addr: SocketAddr,
    ctx: Arc<Ctx>,
}

struct Ctx {
    state_dir: PathBuf,
    live: Arc<Live>,
    token: Option<Secret>,
}

impl Endpoint {
    /// Binds `addr` (port 0: one the system picks).
    pub async fn bind(
        addr: SocketAddr,
        config: &Config,
        live: Arc<Live>,
    ) -> std::io::Result<Endpoint> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        Ok(Endpoint {
            listener,
            addr,
            ctx: Arc::new(Ctx {
                state_dir: config.state.dir.clone(),
                live,
                token: config.metrics.token.clone(),
            }),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown`; connections still open then are closed gracefully.
    pub async fn serve(self, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => return,
                p = slots.clone().acquire_owned() => p,
            };
            let Ok(permit) = permit else { return };
            let stream = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.listener.accept() => match r {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, mostly: wait a little rather than spin.
                        tracing::warn!(error = %e, "the HTTP endpoint cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                },
            };
            let ctx = self.ctx.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let service = hyper::service::service_fn(move |req| {
                    let ctx = ctx.clone();
                    async move { Ok::<_, Infallible>(ctx.answer(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                let limit = tokio::time::sleep(CONNECTION_LIMIT);
                tokio::pin!(limit);
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "an HTTP connection ended with an error");
                        }
                    }
                    _ = &mut limit => {}
                    _ = shutdown.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
                    }
                }
            });
        }
    }
}

type Answer = Response<Full<Bytes>>;

fn answer(code: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

const TEXT: &str = "text/plain; charset=utf-8";

impl Ctx {
    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let Some(given) = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        // Compared in time independent of where they differ.
        let (a, b) = (given.trim().as_bytes(), token.expose().as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// The state as `status` reads it, with the daemon's own fresher numbers.
    async fn status(&self) -> Result<Option<Status>, DbError> {
        let dir = self.state_dir.clone();
        let read = tokio::task::spawn_blocking(move || status::read(&dir))
            .await
            .map_err(|e| DbError::Join(e.to_string()))?;
        read.map(|s| {
            s.map(|mut s| {
                s.set_live(self.live.snapshot());
                // Each account's own numbers, and whether it stopped (its database may be
                // what broke). An account's folder whose account this daemon does not run
                // (removed from the config by a SIGHUP) is not shown: its state stays on
                // disk for `status`, docs/ARCHITECTURE.md#accounts.
                let running = self.live.accounts();
                s.accounts
                    .retain(|a| running.iter().any(|(name, _)| *name == a.name));
                for (name, live) in running {
                    if let Some(a) = s.accounts.iter_mut().find(|a| a.name == name) {
                        a.status.set_live(live.snapshot());
                    }
                }
                // An account that could not even open its state has no folder to read.
                s.mark_failed(&self.live.snapshot().stopped_accounts);
                s
            })
        })
    }

    async fn answer(&self, req: Request<Incoming>) -> Answer {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = answer(
                StatusCode::METHOD_NOT_ALLOWED,
                TEXT,
                "only GET and HEAD are served\n",
            );
            r.headers_mut()
                .insert(hyper::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        if !self.authorized(&req) {
            let mut r = answer(
                StatusCode::UNAUTHORIZED,
                TEXT,
                "send the token of metrics.token_file as \"Authorization: Bearer <token>\"\n",
            );
            r.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        let path = req.uri().path().to_owned();
        let known = matches!(
            path.as_str(),
            "/" | "/healthz" | "/metrics" | "/status.json"
        );
        if !known {
            return answer(
                StatusCode::NOT_FOUND,
                TEXT,
                "not found: try /, /healthz, /metrics or /status.json\n",
            );
        }
        let status = self.status().await;
        let stalled = crate::service::stalled_loops();
        match path.as_str() {
            "/healthz" => match health(&status, &stalled) {
                Ok(line) => answer(StatusCode::OK, TEXT, format!("{line}\n")),
                Err(why) => answer(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("{why}\n")),
            },
            _ => {
                let status = match status {
                    Ok(Some(s)) => s,
                    Ok(None) => {
                        return answer(
                            StatusCode::SERVICE_UNAVAILABLE,
                            TEXT,
                            "starting: no state database yet\n",
                        )
                    }
                    Err(e) => {
                        return answer(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            TEXT,
                            format!("database error: {e}\n"),
                        )
                    }
                };
                match path.as_str() {
                    "/metrics" => answer(
                        StatusCode::OK,
                        "text/plain; version=0.0.4; charset=utf-8",
                        metrics::render(
                            &status,
                            health(&Ok(Some(status.clone())), &stalled).is_ok(),
                        ),
                    ),
                    "/status.json" => match serde_json::to_vec_pretty(&status) {
                        Ok(json) => answer(StatusCode::OK, "application/json", json),
                        Err(e) => answer(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            TEXT,
                            format!("cannot write the status as JSON: {e}\n"),
                        ),
                    },
                    _ => answer(
                        StatusCode::OK,
                        "text/html; charset=utf-8",
                        page::render(&status),
                    ),
                }
            }
        }
    }
}

/// `/healthz`: `Ok(line)` while the daemon works (a pause on purpose is work), else why
/// not (docs/STATUS.md#healthz).
pub fn health(
    status: &Result<Option<Status>, DbError>,
    stalled: &[&'static str],
) -> Result<String, String> {
    let s = match status {
        Err(e) => return Err(format!("database error: {e}")),
        Ok(None) => return Err("starting: no state database yet".to_owned()),
        Ok(Some(s)) => s,
    };
    if !stalled.is_empty() {
        return Err(format!(
            "engine not making progress: the {} loop has not moved in time",
            stalled.join(", ")
        ));
    }
    // One account that stopped is a daemon that does not back everything up
    // (docs/STATUS.md#healthz).
    let failed: Vec<String> = s
        .each_account()
        .into_iter()
        .filter_map(|(name, a)| Some(format!("account {name} stopped: {}", a.failed.as_ref()?)))
        .collect();
    if !failed.is_empty() {
        return Err(failed.join("; "));
    }
    match &s.connection {
        Some(ConnectionState::Unreachable {
            since_ms, error, ..
        }) => {
            return Err(format!(
                "outage: the server is unreachable since {}: {error}",
                ago(*since_ms)
            ))
        }
        Some(ConnectionState::Refused {
            since_ms, error, ..
        }) => {
            return Err(format!(
                "the server refuses the credentials since {}: {error}",
                ago(*since_ms)
            ))
        }
        _ => {}
    }
    if let Some(a) = &s.activity {
        if a.stale {
            return Err(format!("engine not making progress: {}", a.doing));
        }
        return Ok(format!("ok: {}", a.doing));
    }
    Ok("ok".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(connection: Option<ConnectionState>) -> Status {
        let mut s = Status::empty();
        s.connection = connection;
        s
    }

    #[test]
    fn health_names_why_the_daemon_is_not_healthy() {
        let connected = Some(ConnectionState::Connected { since_ms: 0 });
        assert!(health(&Ok(Some(status(connected.clone()))), &[]).is_ok());
        let e = health(&Ok(Some(status(connected.clone()))), &["engine"]).unwrap_err();
        assert!(e.starts_with("engine not making progress"), "{e}");
        let e = health(&Ok(None), &[]).unwrap_err();
        assert!(e.starts_with("starting"), "{e}");
        let out = Some(ConnectionState::Unreachable {
            since_ms: 0,
            next_try_ms: None,
            error: "timed out".into(),
        });
        let e = health(&Ok(Some(status(out))), &[]).unwrap_err();
        assert!(e.starts_with("outage") && e.contains("timed out"), "{e}");
        // A pause on purpose (the server is full) is alive.
        let paused = Some(ConnectionState::Paused {
            since_ms: 0,
            until_ms: None,
            reason: "full".into(),
        });
        assert!(health(&Ok(Some(status(paused))), &[]).is_ok());
        let e = health(&Err(DbError::Join("gone".into())), &[]).unwrap_err();
        assert!(e.starts_with("database error"), "{e}");
        // A daemon whose live record stopped moving hangs.
        let mut s = status(connected);
        s.set_live(crate::db::meta::LiveState {
            at_ms: 0,
            ..Default::default()
        });
        let e = health(&Ok(Some(s)), &[]).unwrap_err();
        assert!(e.starts_with("engine not making progress"), "{e}");
    }
}
