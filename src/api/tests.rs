//! Tests of the client over loopback.
//!
//! `raw`: a scripted HTTP/1.1 peer on a raw socket, for what a well-behaved server cannot
//! do on request: answer before reading the body and reset, stall, read slowly, send nginx
//! HTML. `testserver`: the in-repo Immich-compatible server, in both dialects.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::config::{Credentials, Secret};
use crate::model::{AssetId, Checksum};

const KEY: &str = "test-key-0123456789abcdef";

fn options(url: &str, credentials: Credentials) -> ConnectOptions {
    ConnectOptions {
        url: url.to_owned(),
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
        },
        data,
    }
}

mod raw {
    use super::*;

    /// One request as the peer saw it.
    #[derive(Clone, Debug, Default)]
    pub struct Seen {
        pub method: String,
        /// Path and query, as sent.
        pub target: String,
        pub headers: Vec<(String, String)>,
        pub content_length: Option<u64>,
        pub body: Vec<u8>,
    }

    impl Seen {
        pub fn path(&self) -> &str {
            self.target.split('?').next().unwrap_or("")
        }

        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    pub enum Action {
        /// Read the whole body, then answer.
        Answer(u16, Vec<(&'static str, String)>, String),
        /// Answer right after the head without reading the body, then close: the client
        /// sees the answer mid-upload and then a reset.
        AnswerEarly(u16, Vec<(&'static str, String)>, String),
        /// Answer right after the head, then keep reading (and counting) the body until
        /// the client stops sending, as a server that drains a request it does not need.
        AnswerEarlyThenDrain(u16, String),
        /// Read the head, then reset the connection without an answer.
        Reset,
        /// Read the head, then nothing, ever.
        Stall,
        /// Read the body `chunk` bytes every `every`, then answer 201 `created`.
        SlowRead { chunk: usize, every: Duration },
        /// Read the whole body, then decide (for routes that look at the body).
        AfterBody(Box<dyn FnOnce(&Seen) -> Action + Send>),
    }

    pub fn after_body(f: impl FnOnce(&Seen) -> Action + Send + 'static) -> Action {
        Action::AfterBody(Box::new(f))
    }

    pub fn json(status: u16, body: &str) -> Action {
        Action::Answer(status, Vec::new(), body.to_owned())
    }

    /// The routes every connect needs, Immich style, with an `all` key.
    pub fn immich_basics(s: &Seen) -> Option<Action> {
        Some(match (s.method.as_str(), s.path()) {
            ("GET", "/.well-known/immich") => json(200, r#"{"api":{"endpoint":"/api"}}"#),
            ("GET", "/api/server/ping") => json(200, r#"{"res":"pong"}"#),
            ("GET", "/api/api-keys/me") => json(
                200,
                r#"{"id":"k1","name":"test","createdAt":"x","updatedAt":"x","permissions":["all"]}"#,
            ),
            ("GET", "/api/users/me") => json(200, r#"{"id":"user-1","email":"a@example.com"}"#),
            _ => return None,
        })
    }

    pub fn not_found() -> Action {
        json(
            404,
            r#"{"message":"Cannot GET","error":"Not Found","statusCode":404}"#,
        )
    }

    pub const EARLY_CLOSE_DELAY_MS: u64 = 20;

    type Route = dyn Fn(&Seen) -> Action + Send + Sync;

    pub struct RawServer {
        pub base: String,
        pub seen: Arc<Mutex<Vec<Seen>>>,
        /// Body bytes read so far by `SlowRead`.
        pub received: Arc<AtomicU64>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for RawServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl RawServer {
        pub fn seen(&self) -> Vec<Seen> {
            self.seen.lock().expect("seen lock").clone()
        }

        pub fn seen_path(&self, path: &str) -> Vec<Seen> {
            self.seen()
                .into_iter()
                .filter(|s| s.path() == path)
                .collect()
        }
    }

    pub async fn start(route: impl Fn(&Seen) -> Action + Send + Sync + 'static) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let received = Arc::new(AtomicU64::new(0));
        let route: Arc<Route> = Arc::new(route);
        let (seen2, received2) = (seen.clone(), received.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (route, seen, received) = (route.clone(), seen2.clone(), received2.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, &*route, &seen, &received).await;
                });
            }
        });
        RawServer {
            base: format!("http://{addr}"),
            seen,
            received,
            task,
        }
    }

    async fn serve(
        mut stream: TcpStream,
        route: &Route,
        seen: &Mutex<Vec<Seen>>,
        received: &AtomicU64,
    ) -> std::io::Result<()> {
        let mut buf = Vec::new();
        let head_end = loop {
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let mut s = Seen {
            method: first.next().unwrap_or("").to_owned(),
            target: first.next().unwrap_or("").to_owned(),
            ..Seen::default()
        };
        for line in lines.filter(|l| !l.is_empty()) {
            if let Some((n, v)) = line.split_once(':') {
                s.headers
                    .push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        s.content_length = s.header("content-length").and_then(|v| v.parse().ok());
        let mut body = buf[head_end..].to_vec();
        let want = s.content_length.unwrap_or(0) as usize;

        let mut action = route(&s);
        if let Action::AfterBody(decide) = action {
            while body.len() < want {
                let mut chunk = vec![0u8; 256 * 1024];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
            s.body = body.clone();
            action = decide(&s);
        }
        match action {
            Action::AfterBody(_) => unreachable!("decided above"),
            Action::Answer(status, headers, text) => {
                while body.len() < want {
                    let mut chunk = vec![0u8; 256 * 1024];
                    let n = stream.read(&mut chunk).await?;
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
                s.body = body;
                seen.lock().expect("seen lock").push(s);
                respond(&mut stream, status, &headers, &text).await?;
                stream.shutdown().await?;
            }
            Action::AnswerEarly(status, headers, text) => {
                seen.lock().expect("seen lock").push(s);
                respond(&mut stream, status, &headers, &text).await?;
                // Closed with unread data: the kernel answers the rest with a reset. The
                // pause lets the answer leave first (a close discards unsent data).
                tokio::time::sleep(Duration::from_millis(EARLY_CLOSE_DELAY_MS)).await;
            }
            Action::AnswerEarlyThenDrain(status, text) => {
                respond(&mut stream, status, &[], &text).await?;
                let mut total = body.len() as u64;
                let mut chunk = vec![0u8; 256 * 1024];
                loop {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => total += n as u64,
                    }
                    received.store(total, Ordering::SeqCst);
                }
                received.store(total, Ordering::SeqCst);
                seen.lock().expect("seen lock").push(s);
            }
            Action::Reset => {
                seen.lock().expect("seen lock").push(s);
                #[allow(deprecated)] // SO_LINGER 0 does not block on drop: it resets at once
                stream.set_linger(Some(Duration::ZERO))?;
            }
            Action::Stall => {
                seen.lock().expect("seen lock").push(s);
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Action::SlowRead { chunk, every } => {
                received.store(body.len() as u64, Ordering::SeqCst);
                let mut eof = false;
                while body.len() < want {
                    tokio::time::sleep(every).await;
                    let mut c = vec![0u8; chunk];
                    let n = stream.read(&mut c).await.unwrap_or(0);
                    if n == 0 {
                        eof = true;
                        break;
                    }
                    body.extend_from_slice(&c[..n]);
                    received.store(body.len() as u64, Ordering::SeqCst);
                }
                s.body = body;
                seen.lock().expect("seen lock").push(s);
                if !eof {
                    respond(
                        &mut stream,
                        201,
                        &[],
                        r#"{"id":"slow-1","status":"created"}"#,
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    async fn respond(
        stream: &mut TcpStream,
        status: u16,
        headers: &[(&'static str, String)],
        body: &str,
    ) -> std::io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
            body.len()
        );
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        {
            let ct = if body.starts_with('<') {
                "text/html"
            } else {
                "application/json; charset=utf-8"
            };
            head.push_str(&format!("content-type: {ct}\r\n"));
        }
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        head.push_str(body);
        // One write, so that the whole answer leaves in one segment.
        stream.write_all(head.as_bytes()).await?;
        stream.flush().await
    }

    /// The parts of a multipart body: (Content-Disposition line, content).
    pub fn multipart_parts(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
        let boundary = content_type
            .split("boundary=")
            .nth(1)
            .expect("a boundary")
            .trim();
        let delim = format!("--{boundary}");
        let mut parts = Vec::new();
        let mut rest = body;
        while let Some(start) = find(rest, delim.as_bytes()) {
            rest = &rest[start + delim.len()..];
            if rest.starts_with(b"--") {
                break;
            }
            rest = &rest[2..]; // CRLF after the delimiter
            let head_end = find(rest, b"\r\n\r\n").expect("part head");
            let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
            let content_start = head_end + 4;
            let next = find(&rest[content_start..], delim.as_bytes()).expect("next delimiter");
            let content = rest[content_start..content_start + next - 2].to_vec(); // minus CRLF
            parts.push((head, content));
            rest = &rest[content_start + next..];
        }
        parts
    }

    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }
}

use raw::{json, Action};

async fn connect_raw(
    route: impl Fn(&raw::Seen) -> Action + Send + Sync + 'static,
) -> (raw::RawServer, ApiClient) {
    let server = raw::start(route).await;
    let client = ApiClient::connect(options(&server.base, key()))
        .await
        .expect("connect");
    (server, client)
}

fn basics_then(
    route: impl Fn(&raw::Seen) -> Action + Send + Sync + 'static,
) -> impl Fn(&raw::Seen) -> Action + Send + Sync + 'static {
    move |s| raw::immich_basics(s).unwrap_or_else(|| route(s))
}

#[tokio::test]
async fn connect_finds_the_api_behind_the_web_app() {
    // Like real Immich: no well-known here (proxy), the SPA answers HTML 200 everywhere
    // outside /api.
    let server = raw::start(|s| match s.path() {
        "/api/server/ping" => json(200, r#"{"res":"pong"}"#),
        "/api/api-keys/me" => json(200, r#"{"permissions":["asset.upload","asset.read"]}"#),
        "/api/users/me" => json(200, r#"{"id":"user-9"}"#),
        p if p.starts_with("/api/") => raw::not_found(),
        _ => Action::Answer(200, vec![], "<!doctype html><title>Immich</title>".into()),
    })
    .await;
    let api = ApiClient::connect(options(&format!("{}/api/", server.base), key()))
        .await
        .expect("connect");
    assert_eq!(api.dialect(), Dialect::Immich);
    assert_eq!(api.api_root(), format!("{}/api", server.base));
    assert_eq!(api.user_id(), "user-9");
    assert!(!api.is_session());
    assert!(
        !api.can_open_websocket(),
        "only an `all` key may open the socket"
    );
    assert_eq!(
        api.ws_url(),
        format!(
            "{}/api/socket.io/?EIO=4&transport=websocket",
            server.base.replace("http://", "ws://")
        )
    );

    // Every request carried a fresh correlation id and the user agent; only
    // authenticated routes got the key, as a sensitive header.
    let seen = server.seen();
    let cids: std::collections::HashSet<_> = seen
        .iter()
        .filter_map(|s| s.header("x-immich-cid"))
        .collect();
    assert_eq!(cids.len(), seen.len());
    for s in &seen {
        assert!(s
            .header("user-agent")
            .unwrap_or("")
            .starts_with("immish-sync/"));
        let authed = s.path() == "/api/api-keys/me" || s.path() == "/api/users/me";
        assert_eq!(s.header("x-api-key").is_some(), authed, "{}", s.path());
        assert!(s.header("authorization").is_none());
    }
    assert!(api.auth_headers()["x-api-key"].is_sensitive());
    assert!(!format!("{api:?}").contains(KEY));
}

#[tokio::test]
async fn connect_follows_the_well_known_endpoint() {
    let server = raw::start(|s| match s.path() {
        "/.well-known/immich" => json(200, r#"{"api":{"endpoint":"/custom/api"}}"#),
        "/custom/api/server/ping" => json(200, r#"{"res":"pong"}"#),
        "/custom/api/api-keys/me" => json(200, r#"{"permissions":["all"]}"#),
        "/custom/api/users/me" => json(200, r#"{"id":"u"}"#),
        _ => raw::not_found(),
    })
    .await;
    let api = ApiClient::connect(options(&server.base, key()))
        .await
        .expect("connect");
    assert_eq!(api.dialect(), Dialect::Immich);
    assert_eq!(api.api_root(), format!("{}/custom/api", server.base));
    assert!(api.can_open_websocket());
    assert!(api.api_key_permissions().is_some());
}

#[tokio::test]
async fn connect_falls_back_to_seed_paths() {
    let server = raw::start(|s| match s.path() {
        "/server/ping" => json(200, r#"{"res":"pong"}"#),
        "/server/info" => json(200, r#"{"version":"1.2.3","diskSize":"100 GB"}"#),
        _ => raw::not_found(),
    })
    .await;
    let api = ApiClient::connect(options(&server.base, key()))
        .await
        .expect("connect");
    assert_eq!(api.dialect(), Dialect::Seed);
    assert_eq!(api.api_root(), server.base);
    assert_eq!(api.user_id(), "", "the seed has no /users/me");
    assert_eq!(api.api_key_permissions(), None);
    assert_eq!(
        api.media_types().await.expect("media"),
        MediaTypes::builtin()
    );
    assert_eq!(api.server_version().await.expect("version"), "1.2.3");
    assert_eq!(
        api.ws_url(),
        format!(
            "{}/socket.io/?EIO=4&transport=websocket",
            server.base.replace("http://", "ws://")
        )
    );
}

#[tokio::test]
async fn connect_to_something_that_is_not_immich_says_what_it_found() {
    let server = raw::start(|s| match s.path() {
        "/.well-known/immich" => raw::not_found(),
        _ => Action::Answer(200, vec![], "<html><title>My NAS</title></html>".into()),
    })
    .await;
    let e = ApiClient::connect(options(&server.base, key()))
        .await
        .expect_err("not immich");
    assert_eq!(e.class(), ErrorClass::Permanent);
    let text = e.to_string();
    assert!(text.contains("no Immich server API found"), "{text}");
    assert!(
        text.contains("GET /api/server/ping answered an HTML page"),
        "{text}"
    );
    assert!(
        text.contains("GET /server/ping answered an HTML page"),
        "{text}"
    );
    assert!(
        server
            .seen()
            .iter()
            .all(|s| s.header("x-api-key").is_none()),
        "the key is never sent to a server that has not proven to be Immich"
    );
}

#[tokio::test]
async fn redirects_are_not_followed_and_are_explained() {
    let server = raw::start(|s| match s.path() {
        "/.well-known/immich" => raw::not_found(),
        _ => Action::Answer(
            301,
            vec![(
                "location",
                format!("https://photos.example.com{}?token=abc", s.path()),
            )],
            String::new(),
        ),
    })
    .await;
    let e = ApiClient::connect(options(&server.base, key()))
        .await
        .expect_err("redirect");
    assert_eq!(e.class(), ErrorClass::Permanent);
    let text = e.to_string();
    assert!(
        text.contains("redirected (HTTP 301) to https://photos.example.com/api/server/ping"),
        "{text}"
    );
    assert!(!text.contains("token=abc"), "{text}");
    assert_eq!(
        server.seen().len(),
        3,
        "each redirect was answered, none followed"
    );
}

#[tokio::test]
async fn a_ca_file_without_certificates_is_a_config_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, "not a certificate\n").expect("write");
    let e = ApiClient::connect(ConnectOptions {
        ca_file: Some(path.clone()),
        ..options("https://photos.example.com", key())
    })
    .await
    .expect_err("bad ca file");
    assert_eq!(e.class(), ErrorClass::Permanent);
    assert!(
        e.to_string()
            .contains(&format!("server.ca_file {}", path.display())),
        "{e}"
    );
}

#[tokio::test]
async fn connect_to_a_closed_port_is_transient() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let e = ApiClient::connect(options(&format!("http://127.0.0.1:{port}"), key()))
        .await
        .expect_err("closed");
    assert_eq!(e.class(), ErrorClass::Transient, "{e}");
    assert!(e.to_string().contains("onnection refused"), "{e}");
}

#[tokio::test]
async fn plain_http_to_a_public_host_is_refused_before_any_request() {
    let e = ApiClient::connect(options("http://photos.example.com", key()))
        .await
        .expect_err("insecure");
    assert_eq!(e.class(), ErrorClass::Permanent);
    assert!(e.to_string().contains("server.allow_insecure_http"), "{e}");
    let e = ApiClient::connect(ConnectOptions {
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..options("https://photos.example.com", key())
    })
    .await
    .expect_err("ca");
    assert!(
        e.to_string().contains("server.ca_file /nonexistent/ca.pem"),
        "{e}"
    );
    let e = ApiClient::connect(options(
        "https://photos.example.com",
        Credentials::ApiKey(Secret::new(" ")),
    ))
    .await
    .expect_err("empty key");
    assert!(e.to_string().contains("the API key is empty"), "{e}");
    let e = ApiClient::connect(options(
        "https://photos.example.com",
        Credentials::ApiKey(Secret::new("secret-key-value\n")),
    ))
    .await
    .expect_err("newline");
    assert!(
        e.to_string().contains("cannot be sent in an HTTP header"),
        "{e}"
    );
    assert!(!e.to_string().contains("secret-key-value"), "{e}");
}

#[tokio::test]
async fn a_key_without_upload_permission_is_refused_naming_it() {
    let server = raw::start(|s| match s.path() {
        "/api/server/ping" => json(200, r#"{"res":"pong"}"#),
        "/api/api-keys/me" => json(
            200,
            r#"{"name":"viewer","permissions":["asset.read","asset.view"]}"#,
        ),
        _ => raw::not_found(),
    })
    .await;
    let e = ApiClient::connect(options(&server.base, key()))
        .await
        .expect_err("missing permission");
    assert_eq!(e.class(), ErrorClass::Permanent);
    match &e {
        ApiError::MissingPermissions { missing, .. } => assert_eq!(missing, &["asset.upload"]),
        other => panic!("{other:?}"),
    }
    assert!(
        e.to_string().contains("lacks the permission asset.upload"),
        "{e}"
    );
}

#[tokio::test]
async fn a_rejected_key_is_an_auth_error_without_the_key() {
    let server = raw::start(|s| match s.path() {
        "/api/server/ping" => json(200, r#"{"res":"pong"}"#),
        // A (hypothetical) server that echoes the credential back.
        _ => json(
            401,
            &format!(r#"{{"message":"Invalid API key {KEY}","statusCode":401}}"#),
        ),
    })
    .await;
    let e = ApiClient::connect(options(&server.base, key()))
        .await
        .expect_err("401");
    assert_eq!(e.class(), ErrorClass::Auth);
    let text = format!("{e} {e:?}");
    assert!(!text.contains(KEY), "{text}");
    assert!(text.contains("Invalid API key ***"), "{text}");
}

#[tokio::test]
async fn password_login_uses_a_bearer_session_and_logs_in_again_on_401() {
    let logins = Arc::new(AtomicUsize::new(0));
    let l2 = logins.clone();
    let server = raw::start(move |s| match (s.method.as_str(), s.path()) {
        ("GET", "/api/server/ping") => json(200, r#"{"res":"pong"}"#),
        ("POST", "/api/auth/login") => {
            let n = l2.fetch_add(1, Ordering::SeqCst) + 1;
            json(
                201,
                &format!(
                    r#"{{"accessToken":"session-token-{n}","userId":"user-7","userEmail":"a@b.c"}}"#
                ),
            )
        }
        ("POST", "/api/auth/validateToken") => {
            if s.header("authorization") == Some("Bearer session-token-2") {
                json(200, r#"{"authStatus":true}"#)
            } else {
                json(401, r#"{"message":"Invalid user token"}"#)
            }
        }
        _ => raw::not_found(),
    })
    .await;
    let api = ApiClient::connect(options(
        &server.base,
        Credentials::Password {
            email: "a@b.c".into(),
            password: Secret::new("hunter2hunter2"),
        },
    ))
    .await
    .expect("connect");
    assert!(api.is_session());
    assert_eq!(api.device_credentials_kind(), CredentialsKind::Session);
    assert_eq!(api.user_id(), "user-7");
    let login = &server.seen_path("/api/auth/login")[0];
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&login.body).expect("json"),
        serde_json::json!({"email": "a@b.c", "password": "hunter2hunter2"})
    );
    // The first session is rejected: validate logs in again and the new token is used.
    api.validate().await.expect("validate after re-login");
    assert_eq!(logins.load(Ordering::SeqCst), 2);
    let auth = api.auth_headers();
    assert_eq!(auth["authorization"], "Bearer session-token-2");
    assert!(auth["authorization"].is_sensitive());
    assert!(auth.get("x-api-key").is_none());
}

#[tokio::test]
async fn upload_sends_the_documented_request() {
    let (server, api) = connect_raw(basics_then(|s| match s.path() {
        "/api/assets" => json(201, r#"{"id":"asset-1","status":"created"}"#),
        _ => raw::not_found(),
    }))
    .await;
    let f = test_file("café 写真 \"1\".jpg", 600_000, 1);
    let outcome = api.upload(&f.req).await.expect("upload");
    assert_eq!(
        outcome,
        UploadOutcome {
            asset_id: AssetId("asset-1".into()),
            duplicate: false
        }
    );
    let s = &server.seen_path("/api/assets")[0];
    assert_eq!(s.method, "POST");
    assert_eq!(
        s.header("x-immich-checksum"),
        Some(&*f.req.checksum.to_hex())
    );
    assert_eq!(s.header("x-api-key"), Some(KEY));
    assert_eq!(
        s.content_length,
        Some(s.body.len() as u64),
        "explicit Content-Length"
    );
    let parts = raw::multipart_parts(s.header("content-type").expect("ct"), &s.body);
    let names: Vec<&str> = parts
        .iter()
        .map(|(h, _)| {
            h.split("name=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
        })
        .collect();
    assert_eq!(
        names,
        [
            "deviceAssetId",
            "deviceId",
            "fileCreatedAt",
            "fileModifiedAt",
            "isFavorite",
            "filename",
            "assetData"
        ]
    );
    let text = |i: usize| String::from_utf8(parts[i].1.clone()).expect("utf8");
    assert_eq!(text(0), "café 写真 \"1\".jpg-600000");
    assert_eq!(text(1), "immish-sync-test");
    assert_eq!(text(2), "2023-11-14T22:13:20.123Z");
    assert_eq!(text(3), "1969-12-31T23:59:59.999Z");
    assert_eq!(text(4), "false");
    assert_eq!(text(5), "café 写真 \"1\".jpg", "the exact name, raw UTF-8");
    assert!(
        parts[6].0.contains("filename=\"café 写真 _1_.jpg\""),
        "raw UTF-8, not percent-encoded: {}",
        parts[6].0
    );
    assert!(parts[6].1 == f.data, "the file, byte for byte");
}

#[tokio::test]
async fn seed_uploads_accept_the_old_answer_shape() {
    let server = raw::start(|s| match s.path() {
        "/server/ping" => json(200, r#"{"res":"pong"}"#),
        "/assets" => json(201, r#"{"id":"seed-1","duplicate":false}"#),
        _ => raw::not_found(),
    })
    .await;
    let api = ApiClient::connect(options(&server.base, key()))
        .await
        .expect("connect");
    let f = test_file("a.jpg", 1000, 2);
    let out = api.upload(&f.req).await.expect("upload");
    assert_eq!(out.asset_id, AssetId("seed-1".into()));
    assert!(!out.duplicate);
    let s = &server.seen_path("/assets")[0];
    let parts = raw::multipart_parts(s.header("content-type").expect("ct"), &s.body);
    assert!(parts
        .iter()
        .any(|(h, v)| h.contains("\"isVisible\"") && v == b"true"));
}

/// RELIABILITY.md row 5: the `x-immich-checksum` duplicate answer arrives while the body is
/// still being sent, and the server then resets the connection.
#[tokio::test]
async fn an_early_duplicate_answer_is_success_despite_the_reset() {
    let (server, api) = connect_raw(basics_then(|s| match s.path() {
        "/api/assets" => Action::AnswerEarly(
            200,
            vec![],
            r#"{"status":"duplicate","id":"existing-1"}"#.into(),
        ),
        _ => raw::not_found(),
    }))
    .await;
    let f = test_file("big.mov", 48 << 20, 3);
    for _ in 0..5 {
        let out = api
            .upload(&f.req)
            .await
            .expect("early duplicate is success");
        assert_eq!(out.asset_id, AssetId("existing-1".into()));
        assert!(out.duplicate);
    }
    assert_eq!(server.seen_path("/api/assets").len(), 5);
}

/// After an early answer from a server that keeps reading, the rest of the file is not
/// streamed into the connection in the background.
#[tokio::test]
async fn after_an_early_answer_the_rest_of_the_body_is_not_sent() {
    let (server, api) = connect_raw(basics_then(|s| match s.path() {
        "/api/assets" => {
            Action::AnswerEarlyThenDrain(200, r#"{"status":"duplicate","id":"existing-2"}"#.into())
        }
        _ => raw::not_found(),
    }))
    .await;
    let f = test_file("long.mov", 128 << 20, 10);
    let out = api.upload(&f.req).await.expect("early duplicate");
    assert!(out.duplicate);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.seen_path("/api/assets").is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = server.received.load(Ordering::SeqCst);
    assert!(
        !server.seen_path("/api/assets").is_empty(),
        "the client closed"
    );
    assert!(
        got < f.req.size / 2,
        "{got} of {} bytes were sent",
        f.req.size
    );
}

/// When the connection breaks mid-upload with no answer, one bulk check tells whether the
/// server has the file after all (its early duplicate answer may have been lost to the
/// reset); if not, the network error stands.
#[tokio::test]
async fn a_reset_upload_is_resolved_by_a_checksum_check() {
    let known = Arc::new(Mutex::new(String::new()));
    let k2 = known.clone();
    let (server, api) = connect_raw(basics_then(move |s| match s.path() {
        "/api/assets" => Action::Reset,
        "/api/assets/bulk-upload-check" => {
            let known = k2.lock().expect("lock").clone();
            raw::after_body(move |s| {
                let req: serde_json::Value = serde_json::from_slice(&s.body).expect("json");
                let item = &req["assets"][0];
                let answer = if item["checksum"] == known.as_str() {
                    serde_json::json!({"id": item["id"], "action": "reject",
                        "reason": "duplicate", "assetId": "there-1", "isTrashed": false})
                } else {
                    serde_json::json!({"id": item["id"], "action": "accept"})
                };
                json(200, &serde_json::json!({ "results": [answer] }).to_string())
            })
        }
        _ => raw::not_found(),
    }))
    .await;
    let f = test_file("a.jpg", 4 << 20, 21);
    let e = api.upload(&f.req).await.expect_err("not on the server");
    assert_eq!(e.class(), ErrorClass::Transient, "{e}");
    assert!(matches!(e, ApiError::Network { .. }), "{e:?}");

    *known.lock().expect("lock") = f.req.checksum.to_hex();
    let out = api.upload(&f.req).await.expect("the server has it");
    assert_eq!(
        out,
        UploadOutcome {
            asset_id: AssetId("there-1".into()),
            duplicate: true
        }
    );
    assert_eq!(server.seen_path("/api/assets/bulk-upload-check").len(), 2);
}

/// RELIABILITY.md row 9: nginx refuses after the headers with an HTML page.
#[tokio::test]
async fn an_early_413_from_a_proxy_is_permanent_and_names_the_limit() {
    let (_server, api) = connect_raw(basics_then(|s| match s.path() {
        "/api/assets" => Action::AnswerEarly(
            413,
            vec![],
            "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n\
             <center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx\
             </center>\r\n</body>\r\n</html>\r\n"
                .into(),
        ),
        _ => raw::not_found(),
    }))
    .await;
    let f = test_file("huge.mp4", 48 << 20, 4);
    for _ in 0..3 {
        let e = api.upload(&f.req).await.expect_err("413");
        assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
        let text = e.to_string();
        assert!(text.contains("huge.mp4"), "{text}");
        assert!(text.contains("50331648 bytes, 48.0 MiB"), "{text}");
        assert!(text.contains("client_max_body_size"), "{text}");
        assert!(text.contains("413 Request Entity Too Large"), "{text}");
    }
}

fn status_for_file(s: &raw::Seen) -> Action {
    let name = String::from_utf8_lossy(&s.body).into_owned();
    let has = |n: &str| name.contains(n);
    if has("retry-secs.jpg") {
        Action::Answer(
            500,
            vec![("retry-after", "7".into())],
            r#"{"message":"Failed to upload asset"}"#.into(),
        )
    } else if has("retry-date.jpg") {
        let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(120);
        let fmt = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        Action::Answer(
            503,
            vec![("retry-after", at.format(&fmt).expect("fmt"))],
            String::new(),
        )
    } else if has("quota.jpg") {
        json(
            400,
            r#"{"message":"Quota has been exceeded!","error":"Bad Request","statusCode":400}"#,
        )
    } else if has("full.jpg") {
        json(507, r#"{"message":"Insufficient Storage"}"#)
    } else if has("type.jpg") {
        json(
            400,
            r#"{"message":"Unsupported file type type.jpg","statusCode":400}"#,
        )
    } else if has("invalid.jpg") {
        json(
            400,
            r#"{"message":["[fileCreatedAt] Invalid ISO datetime"],"statusCode":400}"#,
        )
    } else if has("auth.jpg") {
        json(401, r#"{"message":"Invalid API key"}"#)
    } else if has("perm.jpg") {
        json(
            403,
            r#"{"message":"Missing required permission: asset.upload"}"#,
        )
    } else if has("html.jpg") {
        Action::Answer(200, vec![], "<html><title>Sign in</title></html>".into())
    } else if has("busy.jpg") {
        Action::Answer(429, vec![("retry-after", "30".into())], String::new())
    } else {
        json(201, r#"{"id":"x","status":"created"}"#)
    }
}

#[tokio::test]
async fn error_statuses_map_to_classes() {
    let (_server, api) = connect_raw(basics_then(|s| {
        if s.path() != "/api/assets" {
            return raw::not_found();
        }
        raw::after_body(status_for_file)
    }))
    .await;
    let cases: &[(&str, ErrorClass, Option<u64>, &str)] = &[
        (
            "retry-secs.jpg",
            ErrorClass::Transient,
            Some(7),
            "Failed to upload asset",
        ),
        (
            "retry-date.jpg",
            ErrorClass::Transient,
            Some(120),
            "HTTP 503",
        ),
        ("quota.jpg", ErrorClass::Capacity, None, "quota"),
        ("full.jpg", ErrorClass::Capacity, None, "disk is full"),
        (
            "type.jpg",
            ErrorClass::Permanent,
            None,
            "Unsupported file type type.jpg",
        ),
        (
            "invalid.jpg",
            ErrorClass::Permanent,
            None,
            "Invalid ISO datetime",
        ),
        (
            "auth.jpg",
            ErrorClass::Auth,
            None,
            "rejected the credentials",
        ),
        (
            "perm.jpg",
            ErrorClass::Permanent,
            None,
            "Missing required permission: asset.upload",
        ),
        (
            "html.jpg",
            ErrorClass::Transient,
            None,
            "did not answer JSON (a proxy?)",
        ),
        ("busy.jpg", ErrorClass::Transient, Some(30), "slow down"),
    ];
    for (name, class, retry, text) in cases {
        let f = test_file(name, 2000, 5);
        let e = api.upload(&f.req).await.expect_err(name);
        assert_eq!(e.class(), *class, "{name}: {e}");
        match (retry, e.retry_after()) {
            (Some(want), Some(got)) => {
                assert!(
                    got.as_secs() <= *want && got.as_secs() + 5 >= *want,
                    "{name}: {got:?}"
                )
            }
            (None, None) => {}
            (want, got) => panic!("{name}: retry_after {got:?}, want {want:?}"),
        }
        assert!(e.to_string().contains(text), "{name}: {e}");
        assert!(e.to_string().contains(name), "{name}: names the file: {e}");
    }
}

/// RELIABILITY.md row 3: the file shrinks while the server reads slowly; the request is
/// aborted and the server never receives a complete body.
#[tokio::test]
async fn a_file_truncated_during_upload_is_aborted_before_its_end() {
    let (server, api) = connect_raw(basics_then(|s| match s.path() {
        "/api/assets" => Action::SlowRead {
            chunk: 512 * 1024,
            every: Duration::from_millis(10),
        },
        _ => raw::not_found(),
    }))
    .await;
    let f = test_file("growing.mp4", 64 << 20, 6);
    let size = f.req.size;
    let path = f.req.path.clone();
    let received = server.received.clone();
    let truncate = tokio::spawn(async move {
        while received.load(Ordering::SeqCst) < size / 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        file.set_len(size / 4).expect("truncate");
    });
    let e = api.upload(&f.req).await.expect_err("must abort");
    truncate.await.expect("truncate task");
    assert_eq!(e.class(), ErrorClass::FileChanged, "{e}");
    assert!(e.to_string().contains("shorter"), "{e}");
    // Let the peer notice the abort.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.seen_path("/api/assets").is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = &server.seen_path("/api/assets")[0];
    assert!(
        (s.body.len() as u64) < s.content_length.expect("length"),
        "the server got {} of {:?} bytes",
        s.body.len(),
        s.content_length
    );
}

#[tokio::test]
async fn a_file_changed_since_hashing_is_not_sent_at_all() {
    let (server, api) = connect_raw(basics_then(|_| raw::not_found())).await;
    let mut f = test_file("a.jpg", 5000, 7);
    f.req.size = 4999;
    let e = api.upload(&f.req).await.expect_err("size differs");
    assert_eq!(e.class(), ErrorClass::FileChanged);
    f.req.size = 5000;
    f.req.path = f.req.path.with_file_name("vanished.jpg");
    let e = api.upload(&f.req).await.expect_err("missing");
    assert_eq!(e.class(), ErrorClass::FileChanged);
    assert!(e.to_string().contains("vanished.jpg"), "{e}");
    assert!(server.seen_path("/api/assets").is_empty());
}

/// RELIABILITY.md row 6: no whole-request timeout, but a stall is detected.
#[tokio::test]
async fn a_stalled_server_is_a_transient_error() {
    let (_server, api) = connect_raw(basics_then(|s| match s.path() {
        "/api/assets" | "/api/assets/a1" => Action::Stall,
        _ => raw::not_found(),
    }))
    .await;
    let started = std::time::Instant::now();
    let e = api
        .get_asset(&AssetId("a1".into()))
        .await
        .expect_err("stall");
    assert!(matches!(e, ApiError::Stalled { .. }), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Transient);
    assert!(started.elapsed() < Duration::from_secs(6));

    let f = test_file("stuck.mov", 48 << 20, 8);
    let started = std::time::Instant::now();
    let e = api.upload(&f.req).await.expect_err("stall");
    assert!(matches!(e, ApiError::Stalled { .. }), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Transient);
    assert!(e.to_string().contains("stuck.mov"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

/// A slow but moving upload is not a stall, however long it takes in total.
#[tokio::test]
async fn a_slow_upload_that_keeps_moving_is_not_a_stall() {
    let (_server, api) = connect_raw(basics_then(|s| match s.path() {
        "/api/assets" => Action::SlowRead {
            chunk: 256 * 1024,
            every: Duration::from_millis(50),
        },
        _ => raw::not_found(),
    }))
    .await;
    // ~16 MiB at ~5 MiB/s, longer than the 2 s stall timeout.
    let f = test_file("slow.mov", 16 << 20, 9);
    let out = api.upload(&f.req).await.expect("slow but steady");
    assert_eq!(out.asset_id, AssetId("slow-1".into()));
}

fn bulk_answer(s: &raw::Seen) -> Action {
    let req: serde_json::Value = serde_json::from_slice(&s.body).expect("json");
    let mut results: Vec<serde_json::Value> = req["assets"]
        .as_array()
        .expect("assets")
        .iter()
        .map(|a| {
            let id = a["id"].as_str().expect("id");
            let n: usize = id[2..].parse().expect("n");
            if n % 3 == 0 {
                serde_json::json!({"id": id, "action": "reject", "reason": "duplicate",
                                   "assetId": format!("asset-{n}"), "isTrashed": n % 2 == 0})
            } else {
                serde_json::json!({"id": id, "action": "accept"})
            }
        })
        .collect();
    results.reverse();
    json(200, &serde_json::json!({ "results": results }).to_string())
}

#[tokio::test]
async fn bulk_check_batches_and_matches_by_id() {
    let (server, api) = connect_raw(basics_then(|s| {
        if s.path() != "/api/assets/bulk-upload-check" {
            return raw::not_found();
        }
        raw::after_body(bulk_answer)
    }))
    .await;
    let items: Vec<(String, Checksum)> = (0..12_001)
        .map(|n| {
            let digest: [u8; 20] = Sha1::digest(format!("{n}").as_bytes()).into();
            (format!("f-{n}"), Checksum(digest))
        })
        .collect();
    let out = api.bulk_upload_check(&items).await.expect("bulk check");
    assert_eq!(out.len(), items.len());
    for (n, ((id, result), (want_id, _))) in out.iter().zip(&items).enumerate() {
        assert_eq!(id, want_id);
        if n % 3 == 0 {
            assert_eq!(
                result,
                &CheckResult::Duplicate {
                    asset_id: Some(AssetId(format!("asset-{n}"))),
                    is_trashed: n % 2 == 0
                }
            );
        } else {
            assert_eq!(result, &CheckResult::Accept);
        }
    }
    let batches = server.seen_path("/api/assets/bulk-upload-check");
    let sizes: Vec<usize> = batches
        .iter()
        .map(|s| {
            let v: serde_json::Value = serde_json::from_slice(&s.body).expect("json");
            v["assets"].as_array().expect("assets").len()
        })
        .collect();
    assert_eq!(sizes, [5000, 5000, 2001]);
    let first: serde_json::Value = serde_json::from_slice(&batches[0].body).expect("json");
    assert_eq!(first["assets"][0]["checksum"], items[0].1.to_hex());
}

#[tokio::test]
async fn assets_are_read_and_missing_ones_are_none() {
    let (_server, api) = connect_raw(basics_then(|s| match s.path() {
        "/api/assets/a1" => json(
            200,
            r#"{"id":"a1","ownerId":"user-1","checksum":"qZk+NkcGgWq6PiVxeFDCbJzQ2J0=",
                "originalFileName":"x.jpg","visibility":"timeline","isTrashed":false}"#,
        ),
        "/api/assets/gone" => json(400, r#"{"message":"Not found or no asset.read access"}"#),
        "/api/server/media-types" => json(
            200,
            r#"{"image":[".jpg"],"video":[".mp4"],"sidecar":[".xmp"]}"#,
        ),
        "/api/server/version" => json(200, r#"{"major":2,"minor":7,"patch":5}"#),
        "/api/auth/validateToken" => json(200, r#"{"authStatus":true}"#),
        _ => raw::not_found(),
    }))
    .await;
    let a = api
        .get_asset(&AssetId("a1".into()))
        .await
        .expect("get")
        .expect("some");
    assert_eq!(a.owner_id, "user-1");
    assert_eq!(
        a.checksum.expect("checksum").to_hex(),
        "a9993e364706816aba3e25717850c26c9cd0d89d"
    );
    assert_eq!(
        api.get_asset(&AssetId("gone".into())).await.expect("get"),
        None
    );
    assert_eq!(
        api.get_asset(&AssetId("nope".into())).await.expect("get"),
        None
    );
    let m = api.media_types().await.expect("media");
    assert!(m.is_supported(b"A.JPG") && !m.is_supported(b"a.png"));
    assert_eq!(api.server_version().await.expect("version"), "2.7.5");
    api.validate().await.expect("validate");
}

/// Against the in-repo test server, in every dialect it speaks.
mod testserver {
    use super::*;
    use immish_testserver::{Dialect as Ts, Failure, TestServer};

    const ALL: [Ts; 3] = [Ts::Immich, Ts::ImmichNext, Ts::Seed];

    async fn start(dialect: Ts) -> TestServer {
        TestServer::builder()
            .dialect(dialect)
            .keep_bytes(true)
            .start()
            .await
    }

    fn admin_key(server: &TestServer) -> Credentials {
        Credentials::ApiKey(Secret::new(server.api_key()))
    }

    async fn connect(server: &TestServer) -> ApiClient {
        ApiClient::connect(options(&server.base_url(), admin_key(server)))
            .await
            .expect("connect")
    }

    #[tokio::test]
    async fn connects_with_a_key_or_a_password_in_every_dialect() {
        for ts in ALL {
            let server = start(ts).await;
            let api = connect(&server).await;
            let want = if ts == Ts::Seed {
                Dialect::Seed
            } else {
                Dialect::Immich
            };
            assert_eq!(api.dialect(), want, "{ts}");
            assert_eq!(api.api_root(), server.api_url(), "{ts}");
            assert_eq!(api.ws_url(), server.socket_url(), "{ts}");
            assert_eq!(api.user_id(), server.admin_id(), "{ts}");
            assert!(api.can_open_websocket(), "{ts}: the admin key has `all`");
            api.validate().await.expect("validate");
            let version = api.server_version().await.expect("version");
            let want_version = match ts {
                Ts::Immich => "2.7.5",
                Ts::ImmichNext => "3.0.0",
                Ts::Seed => "1.105.1",
            };
            assert_eq!(version, want_version, "{ts}");
            let media = api.media_types().await.expect("media types");
            assert!(media.is_supported(b"IMG.HEIC") && media.is_supported(b"clip.mp4"));
            assert!(!media.is_supported(b"IMG.xmp") && !media.is_supported(b"notes.txt"));
            assert_eq!(media.is_supported(b"x.mpo"), ts == Ts::ImmichNext, "{ts}");

            // Also through the user-facing spellings of the URL.
            let url = format!("  {}/api/ ", server.base_url());
            let again = ApiClient::connect(options(&url, admin_key(&server)))
                .await
                .expect("connect via /api/");
            assert_eq!(again.api_root(), server.api_url());

            let session = ApiClient::connect(options(
                &server.base_url(),
                Credentials::Password {
                    email: server.admin_email().to_owned(),
                    password: Secret::new(server.admin_password()),
                },
            ))
            .await
            .expect("password login");
            assert!(session.is_session(), "{ts}");
            assert_eq!(session.user_id(), server.admin_id(), "{ts}");
            session.validate().await.expect("validate session");

            let wrong = ApiClient::connect(options(
                &server.base_url(),
                Credentials::Password {
                    email: server.admin_email().to_owned(),
                    password: Secret::new("not-the-password"),
                },
            ))
            .await
            .expect_err("wrong password");
            assert_eq!(wrong.class(), ErrorClass::Auth, "{ts}: {wrong}");
            assert!(!wrong.to_string().contains("not-the-password"));
        }
    }

    #[tokio::test]
    async fn an_upload_is_created_then_a_duplicate_in_every_dialect() {
        for ts in ALL {
            let server = start(ts).await;
            let api = connect(&server).await;
            let f = test_file("café 写真.jpg", 300_000, 11);

            let first = api.upload(&f.req).await.expect("first upload");
            assert!(!first.duplicate, "{ts}");
            let stored = server.asset(&first.asset_id.0).expect("stored");
            assert_eq!(stored.checksum_hex, f.req.checksum.to_hex(), "{ts}");
            assert_eq!(stored.size, f.req.size);
            assert_eq!(stored.data.as_deref(), Some(&f.data[..]), "{ts}: the bytes");
            assert_eq!(stored.original_file_name, "café 写真.jpg", "{ts}");
            assert_eq!(stored.owner_id, server.admin_id());
            assert_eq!(stored.file_modified_at, "1969-12-31T23:59:59.999Z", "{ts}");
            if ts != Ts::ImmichNext {
                assert_eq!(
                    stored.device_asset_id.as_deref(),
                    Some("café 写真.jpg-300000")
                );
                assert_eq!(stored.device_id.as_deref(), Some("immish-sync-test"));
            }

            let bodies = server.upload_bodies();
            let second = api.upload(&f.req).await.expect("second upload");
            assert!(second.duplicate, "{ts}");
            assert_eq!(second.asset_id, first.asset_id, "{ts}");
            if ts != Ts::Seed {
                assert_eq!(
                    server.upload_bodies(),
                    bodies,
                    "{ts}: x-immich-checksum answered before the body was read"
                );
            }
            assert_eq!(server.asset_count(&server.admin_id()), 1, "{ts}");

            let remote = api
                .get_asset(&first.asset_id)
                .await
                .expect("get asset")
                .expect("exists");
            assert_eq!(remote.checksum, Some(f.req.checksum), "{ts}");
            assert_eq!(remote.original_file_name, "café 写真.jpg");
            let unknown = AssetId("0f1e2d3c-4b5a-4978-8877-665544332211".into());
            assert_eq!(
                api.get_asset(&unknown).await.expect("get unknown"),
                None,
                "{ts}"
            );
        }
    }

    #[tokio::test]
    async fn bulk_check_finds_what_is_there_by_hex_or_base64() {
        for ts in ALL {
            let server = start(ts).await;
            let api = connect(&server).await;
            let f = test_file("a.jpg", 10_000, 12);
            let id = api.upload(&f.req).await.expect("upload").asset_id;
            // The server reports checksums in base64; that parses to the same digest.
            let remote = api.get_asset(&id).await.expect("get").expect("exists");
            let from_base64 =
                Checksum::parse(&server.asset(&id.0).expect("a").checksum_base64).expect("base64");
            assert_eq!(remote.checksum, Some(from_base64));
            let other = test_file("b.jpg", 10_000, 13);
            let items = vec![
                ("local-1".to_owned(), f.req.checksum),
                ("local-2".to_owned(), other.req.checksum),
                ("local-3".to_owned(), from_base64),
            ];
            let answers = api.bulk_upload_check(&items).await.expect("bulk check");
            let dup = CheckResult::Duplicate {
                asset_id: Some(id.clone()),
                is_trashed: false,
            };
            let want = vec![
                ("local-1".to_owned(), dup.clone()),
                ("local-2".to_owned(), CheckResult::Accept),
                ("local-3".to_owned(), dup),
            ];
            if ts == Ts::Seed {
                // The seed's answer has no assetId / isTrashed.
                assert!(
                    matches!(answers[0].1, CheckResult::Duplicate { .. }),
                    "{answers:?}"
                );
                assert_eq!(answers[1].1, CheckResult::Accept);
            } else {
                assert_eq!(answers, want, "{ts}");
                assert_eq!(server.trash([id.0.clone()]), 1);
                let answers = api
                    .bulk_upload_check(&items[..1])
                    .await
                    .expect("bulk check");
                assert_eq!(
                    answers[0].1,
                    CheckResult::Duplicate {
                        asset_id: Some(id.clone()),
                        is_trashed: true
                    },
                    "{ts}"
                );
            }
        }
    }

    /// RELIABILITY.md row 3 against the test server: the file shrinks while the server reads
    /// slowly; no asset is created, and a retry of the restored file succeeds.
    #[tokio::test]
    async fn a_file_that_changes_during_upload_creates_no_asset() {
        for ts in [Ts::Immich, Ts::Seed] {
            let server = start(ts).await;
            let api = connect(&server).await;
            let f = test_file("changing.mp4", 24 << 20, 14);
            server.slow_body(8 << 20);
            let (size, path) = (f.req.size, f.req.path.clone());
            let handle = server.handle();
            let truncate = tokio::spawn(async move {
                while handle.upload_body_bytes() < size / 4 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .expect("open");
                file.set_len(size / 5).expect("truncate");
            });
            let e = api.upload(&f.req).await.expect_err("must abort");
            truncate.await.expect("truncate task");
            assert_eq!(e.class(), ErrorClass::FileChanged, "{ts}: {e}");
            assert!(e.to_string().contains("changing.mp4"), "{e}");
            assert_eq!(
                server.asset_count(&server.admin_id()),
                0,
                "{ts}: nothing stored"
            );
            assert!(server.upload_body_bytes() < size, "{ts}");

            // Same size, other content: also aborted before the end.
            server.slow_body(0);
            let mut other = f.data.clone();
            other[size as usize - 1] ^= 0xff;
            std::fs::write(&f.req.path, &other).expect("rewrite");
            let e = api.upload(&f.req).await.expect_err("must abort");
            assert_eq!(e.class(), ErrorClass::FileChanged, "{ts}: {e}");
            assert_eq!(
                server.asset_count(&server.admin_id()),
                0,
                "{ts}: nothing stored"
            );

            std::fs::write(&f.req.path, &f.data).expect("restore");
            let out = api.upload(&f.req).await.expect("retry succeeds");
            assert!(!out.duplicate);
            let stored = server.asset(&out.asset_id.0).expect("stored");
            assert_eq!(stored.checksum_hex, f.req.checksum.to_hex());
        }
    }

    #[tokio::test]
    async fn a_proxy_413_is_permanent_after_one_attempt() {
        let server = start(Ts::Immich).await;
        let api = connect(&server).await;
        server.fail_with("POST /assets", 1, Failure::nginx_413());
        let f = test_file("huge.mov", 8 << 20, 15);
        let e = api.upload(&f.req).await.expect_err("413");
        assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
        assert_eq!(e.status(), Some(413));
        let text = e.to_string();
        assert!(
            text.contains("huge.mov") && text.contains("8.0 MiB"),
            "{text}"
        );
        assert!(
            text.contains("client_max_body_size") && text.contains("Cloudflare"),
            "{text}"
        );
        assert_eq!(server.requests("POST /assets"), 1);
        assert_eq!(server.asset_count(&server.admin_id()), 0);
    }

    #[tokio::test]
    async fn a_500_with_retry_after_is_transient_with_the_delay() {
        let server = start(Ts::Immich).await;
        let api = connect(&server).await;
        server.fail_with("POST /assets", 1, Failure::new(500).retry_after("3"));
        let f = test_file("a.jpg", 50_000, 16);
        let e = api.upload(&f.req).await.expect_err("500");
        assert_eq!(e.class(), ErrorClass::Transient, "{e}");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        server.fail_with("POST /assets/bulk-upload-check", 1, Failure::new(503));
        let e = api
            .bulk_upload_check(&[("x".to_owned(), f.req.checksum)])
            .await
            .expect_err("503");
        assert_eq!(e.class(), ErrorClass::Transient, "{e}");
        // Then it works.
        assert!(!api.upload(&f.req).await.expect("retry").duplicate);
    }

    #[tokio::test]
    async fn a_key_without_upload_permission_is_named_at_connect() {
        let server = start(Ts::Immich).await;
        let key = server.create_api_key(&server.admin_id(), &["asset.read", "user.read"]);
        let e = ApiClient::connect(options(
            &server.base_url(),
            Credentials::ApiKey(Secret::new(key.clone())),
        ))
        .await
        .expect_err("missing asset.upload");
        assert_eq!(e.class(), ErrorClass::Permanent);
        match &e {
            ApiError::MissingPermissions { missing, .. } => assert_eq!(missing, &["asset.upload"]),
            other => panic!("{other:?}"),
        }
        assert!(!e.to_string().contains(&key));

        let key = server.create_api_key(&server.admin_id(), &["album.read"]);
        let e = ApiClient::connect(options(
            &server.base_url(),
            Credentials::ApiKey(Secret::new(key)),
        ))
        .await
        .expect_err("missing both");
        assert!(
            e.to_string()
                .contains("lacks the permissions asset.upload, asset.read"),
            "{e}"
        );

        // The minimal key works; without `user.read` the user id is unknown, not an error.
        let key = server.create_api_key(&server.admin_id(), &["asset.upload", "asset.read"]);
        let api = ApiClient::connect(options(
            &server.base_url(),
            Credentials::ApiKey(Secret::new(key)),
        ))
        .await
        .expect("minimal key");
        assert_eq!(api.user_id(), "");
        assert!(!api.can_open_websocket());
        let f = test_file("a.jpg", 1000, 17);
        api.upload(&f.req)
            .await
            .expect("upload with the minimal key");
    }

    #[tokio::test]
    async fn auth_capacity_and_type_errors_are_classified() {
        let server = start(Ts::Immich).await;
        let api = connect(&server).await;
        let f = test_file("a.jpg", 20_000, 18);

        server.unauthorized(true);
        let e = api.upload(&f.req).await.expect_err("401");
        assert_eq!(e.class(), ErrorClass::Auth, "{e}");
        assert_eq!(
            api.validate().await.expect_err("401").class(),
            ErrorClass::Auth
        );
        server.unauthorized(false);
        api.validate().await.expect("valid again");

        server.storage_full(true);
        let e = api.upload(&f.req).await.expect_err("507");
        assert_eq!(e.class(), ErrorClass::Capacity, "{e}");
        server.storage_full(false);

        server.set_quota(&server.admin_id(), 100);
        let e = api.upload(&f.req).await.expect_err("quota");
        assert_eq!(e.class(), ErrorClass::Capacity, "{e}");
        assert!(e.to_string().contains("quota"), "{e}");
        server.set_quota(&server.admin_id(), None);

        let t = test_file("notes.txt", 100, 19);
        let e = api.upload(&t.req).await.expect_err("unsupported");
        assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
        assert!(e.to_string().contains("Unsupported file type"), "{e}");

        server.drop_after_bytes("POST /assets", 5000, 1);
        let e = api.upload(&f.req).await.expect_err("dropped");
        assert_eq!(e.class(), ErrorClass::Transient, "{e}");

        server.fail_next("POST /assets", 1, 200, Some("<html>Login</html>"), None);
        let e = api.upload(&f.req).await.expect_err("html");
        assert_eq!(e.class(), ErrorClass::Transient, "{e}");
        assert!(e.to_string().contains("did not answer JSON"), "{e}");

        assert!(!api.upload(&f.req).await.expect("finally").duplicate);
    }

    /// RELIABILITY.md row 6: the server stores the asset, then never answers; the stall
    /// timeout ends the request, and a bulk check (not a second body) finds the asset.
    #[tokio::test]
    async fn a_lost_reply_is_a_stall_and_the_check_finds_the_asset() {
        let server = start(Ts::Immich).await;
        let api = connect(&server).await;
        server.stall_after_store(1);
        let f = test_file("a.mov", 1 << 20, 20);
        let e = api.upload(&f.req).await.expect_err("stall");
        assert!(matches!(e, ApiError::Stalled { .. }), "{e:?}");
        assert_eq!(e.class(), ErrorClass::Transient);
        let answers = api
            .bulk_upload_check(&[("f".to_owned(), f.req.checksum)])
            .await
            .expect("check");
        assert!(matches!(answers[0].1, CheckResult::Duplicate { .. }));
        assert_eq!(server.upload_bodies(), 1);
    }
}
