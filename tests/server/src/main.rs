//! Standalone immish-testserver: for benchmarks, demos and trying the daemon without an
//! Immich server. Parses flags, starts the server, prints how to reach it, and runs until
//! Ctrl-C. Control it through the `/__admin/` routes (see the crate docs).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use immish_testserver::{Dialect, TestServer};

#[derive(Parser, Debug)]
#[command(
    name = "immish-testserver",
    about = "In-memory Immich-compatible server for immish-sync's tests, benchmarks and demos"
)]
struct Args {
    /// Port to listen on (0 picks a free one). Not Immich's own 2283, which a real server on
    /// the same machine holds.
    #[arg(long, default_value_t = 3283)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Server to imitate: immich (v2.7.5), immich-next or seed.
    #[arg(long, default_value = "immich")]
    dialect: Dialect,
    /// Keep uploaded bytes in memory (GET /api/assets/:id/original works).
    #[arg(long)]
    keep_bytes: bool,
    /// Use this API key for the admin user instead of a random one.
    #[arg(long)]
    api_key: Option<String>,
    /// Engine.IO ping interval in milliseconds.
    #[arg(long, default_value_t = 25_000)]
    ping_interval_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let addr = SocketAddr::new(args.host, args.port);
    let mut builder = TestServer::builder()
        .dialect(args.dialect)
        .bind(addr)
        .keep_bytes(args.keep_bytes)
        .ping_interval(Duration::from_millis(args.ping_interval_ms));
    if let Some(key) = args.api_key {
        builder = builder.admin_api_key(key);
    }
    let server = builder
        .try_start()
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    println!(
        "immish-testserver listening on {} (dialect {})",
        server.base_url(),
        server.dialect()
    );
    println!(
        "user: {} / password: {}",
        server.admin_email(),
        server.admin_password()
    );
    println!("api key: {}", server.api_key());
    println!("admin routes: {}/__admin/info", server.base_url());
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = server.stopped() => {}
    }
    Ok(())
}
