//! Tests of the client over loopback.
//!
//! `raw`: a scripted HTTP/1.1 peer on a raw socket, for what a well-behaved server cannot
//! do on request: answer before reading the body and reset, stall, read slowly, send nginx
//! HTML; `connect`, `upload` and `assets` use it. `testserver`, `sync` and `socket`: the
//! in-repo Immich-compatible server, in its dialects.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::config::{Credentials, Secret, ServerConfig};
use crate::model::{AssetId, Checksum};

const KEY: &str = "test-key-0123456789abcdef";

fn options(url: &str, credentials: Credentials) -> ServerConfig {
    ServerConfig {
        table: "server".into(),
        url: crate::config::ServerUrl::parse(url).expect("a test URL"),
        credentials,
        ca_file: None,
        allow_insecure_http: false,
        connect_timeout: Duration::from_secs(5),
        stall_timeout: Duration::from_secs(2),
    }
}

fn key() -> Credentials {
    Credentials::ApiKey(Secret::new(KEY))
}

/// A file in a fresh temp dir, and the request to upload it.
struct TestFile {
    _dir: tempfile::TempDir,
    req: UploadRequest,
    data: Vec<u8>,
}

fn test_file(name: &str, len: usize, seed: u8) -> TestFile {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    std::fs::write(&path, &data).expect("write test file");
    let digest: [u8; 20] = Sha1::digest(&data).into();
    TestFile {
        _dir: dir,
        req: UploadRequest {
            path,
            size: len as u64,
            checksum: Checksum(digest),
            file_name: name.to_owned(),
            device_asset_id: format!("{name}-{len}"),
            device_id: "immish-sync-test".to_owned(),
            file_created_ns: 1_700_000_000_123_456_789,
            file_modified_ns: -1,
            live_photo_video_id: None,
            sidecar: None,
            body: None,
        },
        data,
    }
}

mod raw;

mod assets;
mod connect;
mod fuzz;
mod socket;
mod sync;
mod testserver;
mod upload;

use raw::{json, Action};

async fn connect_raw(
    route: impl Fn(&raw::Seen) -> Action + Send + Sync + 'static,
) -> (raw::RawServer, ApiClient) {
    let server = raw::start(route).await;
    let client = ApiClient::connect(&options(&server.base, key()))
        .await
        .expect("connect");
    (server, client)
}

fn basics_then(
    route: impl Fn(&raw::Seen) -> Action + Send + Sync + 'static,
) -> impl Fn(&raw::Seen) -> Action + Send + Sync + 'static {
    move |s| raw::immich_basics(s).unwrap_or_else(|| route(s))
}
