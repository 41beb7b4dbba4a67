//! The accept loop: one hyper HTTP/1 connection per accepted socket, with upgrades (for the
//! WebSocket) and a per-connection abort token.
//!
//! `axum::serve` cannot drop a connection in the middle of a request, which the
//! `drop_after_bytes` fault needs, so connections are served by hand: every request carries a
//! [`ConnAbort`] extension, and cancelling it drops the connection future, which closes the
//! socket without writing a reply. The tokens descend from the server's shutdown token, so
//! shutting the server down closes every connection too (and `offline` closes them all).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::faults::ConnAbort;
use crate::state::App;

pub(crate) async fn serve(
    listener: TcpListener,
    routers: crate::Routers,
    shutdown: CancellationToken,
    app: App,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.cancelled() => return,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Usually EMFILE; back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let token = app.connection_token();
        let routers = routers.clone();
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => connection(TokioIo::new(stream), routers, app, token).await,
                Some(acceptor) => {
                    let handshake = tokio::select! {
                        r = acceptor.accept(stream) => r,
                        _ = token.cancelled() => return,
                    };
                    match handshake {
                        Ok(stream) => connection(TokioIo::new(stream), routers, app, token).await,
                        Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
                    }
                }
            }
        });
    }
}

/// Serves one connection (plain or TLS) until it ends or its token is cancelled.
/// Each request is routed by the dialect served when it arrives (it may change while the
/// server runs: `ServerHandle::restart_as`).
async fn connection<I>(io: I, routers: crate::Routers, app: App, token: CancellationToken)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let abort = ConnAbort(token.clone());
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(abort.clone());
        let router: Router = routers.pick(app.dialect());
        async move { Ok::<_, Infallible>(router.oneshot(req).await.unwrap_or_else(|e| match e {})) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(io, service)
        .with_upgrades();
    tokio::select! {
        r = conn => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = token.cancelled() => {}
    }
}
