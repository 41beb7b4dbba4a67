//! Issue 13, TLS (docs/RELIABILITY.md#plain-http-and-tls): the test server in its HTTPS mode
//! (a CA made at start, `wss` for the socket). `server.ca_file` makes HTTP and the socket
//! work; without it the error names `ca_file`; plain http to a host that is not local is
//! refused before any request unless `server.allow_insecure_http`.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use immish_testserver::TestServer;

use crate::common::{eventually, jpeg, run, sha1_hex, World};

async fn https_world() -> World {
    let server = TestServer::builder().tls(true).start().await;
    assert!(server.base_url().starts_with("https://127.0.0.1:"));
    World::with_server(server)
}

/// Writes the world's config with `lines` added to its `[server]` section.
fn config_with_server_lines(w: &World, lines: &str) -> PathBuf {
    let path = w.write_config();
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "[server]\n",
        &format!("[server]\n{lines}\n"),
        1,
    );
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn write_ca(w: &World) -> PathBuf {
    let ca = w.dir.path().join("home-ca.pem");
    std::fs::write(&ca, w.server.tls_ca_pem().expect("the HTTPS mode has a CA")).unwrap();
    ca
}

/// With `ca_file`, a `run` backs up over HTTPS and its live-event socket connects over
/// `wss` (the upload of another client arrives by live event, not by a pull).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_ca_file_https_and_wss_work() {
    let mut w = https_world().await;
    w.extra = "[scan]\ninterval = \"1h\"\n[mirror]\npull_interval = \"1h\"\n".into();
    let files: Vec<Vec<u8>> = (0..3).map(|i| jpeg(&format!("tls-{i}"))).collect();
    for (i, f) in files.iter().enumerate() {
        w.write(format!("IMG_{i}.jpg"), f);
    }
    let ca = write_ca(&w);
    let path = config_with_server_lines(&w, &format!("ca_file = \"{}\"", ca.display()));
    let cfg = immish_sync::config::load(&path).unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let handle = tokio::spawn(immish_sync::daemon::run_with(
        cfg,
        World::tuning(),
        token.clone(),
    ));
    assert!(
        w.server
            .wait_for_websockets(1, Duration::from_secs(30))
            .await,
        "the live-event socket never connected over wss"
    );
    let admin = w.server.admin_id();
    assert!(
        eventually(Duration::from_secs(60), || w.server.asset_count(&admin)
            == 3)
        .await,
        "the files never arrived over https"
    );
    let mut got: Vec<String> = w
        .server
        .assets(&admin)
        .iter()
        .map(|a| a.checksum_hex.clone())
        .collect();
    let mut want: Vec<String> = files.iter().map(|f| sha1_hex(f)).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    // Another client's upload reaches the mirror by live event (pulls are an hour apart).
    let other = jpeg("tls-by-another-client");
    let id = w.server.upload_as(
        &admin,
        "other.jpg",
        &other,
        immish_testserver::Visibility::Timeline,
    );
    let state = w.state_dir().join("state.sqlite3");
    assert!(
        eventually(Duration::from_secs(30), || {
            rusqlite::Connection::open(&state)
                .and_then(|db| {
                    db.query_row(
                        "SELECT count(*) FROM remote_assets WHERE id = ?1",
                        [immish_sync::db::ids::IdRef(&id)],
                        |r| r.get::<_, i64>(0),
                    )
                })
                .unwrap_or(0)
                == 1
        })
        .await,
        "the live event over wss never reached the mirror"
    );
    token.cancel();
    let res = tokio::time::timeout(Duration::from_secs(20), handle)
        .await
        .expect("stops")
        .unwrap();
    assert!(res.is_ok(), "{res:?}");
}

/// Without `ca_file` the server's certificate is unknown: `scan` fails to connect, names
/// `server.ca_file` as the fix, and no request got through TLS to the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ca_file_the_error_names_ca_file() {
    let w = https_world().await;
    w.write("IMG_0.jpg", &jpeg("tls-no-ca"));
    w.write_config();
    let out = tokio::task::spawn_blocking({
        let w_path = w.config_path();
        move || {
            std::process::Command::new(crate::common::BIN)
                .arg("--config")
                .arg(w_path)
                .arg("scan")
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "cannot connect: {stderr}");
    assert!(stderr.contains("server.ca_file"), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    let total: u64 = w
        .server
        .request_counts()
        .values()
        .flat_map(|by| by.values())
        .sum();
    assert_eq!(total, 0, "no request got past the handshake");
    assert_eq!(w.server.upload_bodies(), 0);
}

/// Plain http to a public name is refused before any connection (the name is never even
/// resolved), and the message names `allow_insecure_http`; with it set, the config is
/// accepted (nothing is connected to: only loopback may be reached from tests).
#[tokio::test]
async fn plain_http_to_a_public_host_is_refused_unless_allowed() {
    let w = World::new(immish_testserver::Dialect::Immich).await;
    w.write("IMG_0.jpg", &jpeg("plain-http"));
    let path = w.write_config();
    let public = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&w.server.base_url(), "http://photos.example.com:2283");
    std::fs::write(&path, &public).unwrap();
    let out = run(&w, &["scan"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("refusing plain http://")
            && stderr.contains("photos.example.com")
            && stderr.contains("server.allow_insecure_http"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("could not talk"),
        "refused before any connection: {stderr}"
    );

    let allowed = public.replacen("[server]\n", "[server]\nallow_insecure_http = true\n", 1);
    std::fs::write(&path, allowed).unwrap();
    let out = run(&w, &["check-config", "--offline"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "allowed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An account's own `ca_file` (docs/ARCHITECTURE.md#accounts): Ben's server is an HTTPS test
/// server with its own CA, `[server]`'s is plain http on loopback with no `ca_file`. Without
/// Ben's `ca_file` the daemon backs up `[server]`'s files and reports Ben's certificate
/// failure, naming `accounts[0].ca_file`, with nothing of Ben's sent; with it, Ben's files
/// reach Ben's server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accounts_own_ca_file_reaches_its_https_server() {
    let mut w = World::new(immish_testserver::Dialect::Immich).await;
    let ben_server = TestServer::builder().tls(true).start().await;
    let ben_root = w.dir.path().join("ben");
    std::fs::create_dir_all(&ben_root).unwrap();
    let (mine, bens) = (jpeg("default's over http"), jpeg("ben's over https"));
    w.write("mine.jpg", &mine);
    std::fs::write(ben_root.join("ben.jpg"), &bens).unwrap();
    let ben_ca = w.dir.path().join("ben-ca.pem");
    std::fs::write(&ben_ca, ben_server.tls_ca_pem().expect("a CA")).unwrap();
    let accounts = |ca_line: &str| {
        format!(
            "[[accounts]]\nname = \"ben\"\nurl = \"{}\"\napi_key = \"{}\"\n{ca_line}\n\
             [[roots]]\npath = \"{}\"\naccount = \"ben\"\n",
            ben_server.base_url(),
            ben_server.api_key(),
            ben_root.display()
        )
    };

    // Without Ben's ca_file.
    w.extra = accounts("");
    let d = w.start_daemon();
    let admin = w.server.admin_id();
    let mine_arrived = eventually(Duration::from_secs(90), || {
        w.server.asset_count(&admin) == 1
    })
    .await;
    let bens_error = |s: &serde_json::Value| {
        s["accounts"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["name"] == "ben"))
            .filter(|b| b["connection"]["state"] == "unreachable")
            .and_then(|b| b["connection"]["error"].as_str())
            .map(str::to_owned)
    };
    let status = || {
        let out = run(&w, &["status", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("status --json")
    };
    let mut s = status();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while bens_error(&s).is_none() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        s = status();
    }
    d.stop().await;
    assert!(
        mine_arrived,
        "[server]'s file must arrive while Ben's server fails"
    );
    assert_eq!(
        w.server.assets(&admin)[0].checksum_hex,
        sha1_hex(&mine),
        "[server]'s file, on [server]'s server"
    );
    let error = bens_error(&s).unwrap_or_else(|| panic!("Ben's failure is reported: {s:#}"));
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    assert!(error.contains("set accounts[0].ca_file"), "{error}");
    assert_eq!(s["connection"]["state"], "connected", "{s:#}");
    let past_handshake: u64 = ben_server
        .request_counts()
        .values()
        .flat_map(|by| by.values())
        .sum();
    assert_eq!(past_handshake, 0, "no request got past Ben's handshake");
    assert_eq!(ben_server.upload_bodies(), 0);

    // With it: Ben's file reaches Ben's server, over HTTPS.
    w.extra = accounts(&format!("ca_file = \"{}\"", ben_ca.display()));
    let summary = w.scan().await;
    assert!(summary.is_complete(), "{summary:?}");
    let ben_admin = ben_server.admin_id();
    let on_ben: Vec<String> = ben_server
        .assets(&ben_admin)
        .iter()
        .map(|a| a.checksum_hex.clone())
        .collect();
    assert_eq!(on_ben, vec![sha1_hex(&bens)], "Ben's file, on Ben's server");
    assert_eq!(
        w.server.asset_count(&admin),
        1,
        "nothing of Ben's on [server]'s"
    );
}
