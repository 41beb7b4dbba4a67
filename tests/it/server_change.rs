//! Issue 13, the server changes under the daemon
//! (docs/RELIABILITY.md#another-server-or-user-configured): a config pointed at another server
//! never reports files backed up from the old one's catalogue.

use std::os::unix::fs::PermissionsExt;

use immish_testserver::{Dialect, TestServer};

use crate::common::{jpeg, run, sha1_hex, World};

/// Backs up to server A, then points the config at server B (another URL, another user id):
/// `status` says the counts are A's, the next `scan` says the server changed, uploads every
/// file to B (none is linked from A's catalogue) and A gets nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_server_never_inherits_the_old_ones_backups() {
    let w = World::new(Dialect::Immich).await;
    let files: Vec<Vec<u8>> = (0..3).map(|i| jpeg(&format!("moved-{i}"))).collect();
    for (i, f) in files.iter().enumerate() {
        w.write(format!("IMG_{i}.jpg"), f);
    }
    w.write_config();
    let out = run(&w, &["scan"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a_admin = w.server.admin_id();
    assert_eq!(w.server.asset_count(&a_admin), 3);
    let a_bodies = w.server.upload_bodies();

    let b = TestServer::start(Dialect::Immich).await;
    let text = std::fs::read_to_string(w.config_path())
        .unwrap()
        .replace(&w.server.base_url(), &b.base_url())
        .replace(&w.server.api_key(), &b.api_key());
    std::fs::write(w.config_path(), text).unwrap();
    std::fs::set_permissions(w.config_path(), std::fs::Permissions::from_mode(0o600)).unwrap();

    let status = run(&w, &["status"]);
    let said = String::from_utf8_lossy(&status.stdout);
    assert!(
        said.contains(&format!("NOT backed up to {}", b.base_url()))
            && said.contains(&w.server.base_url()),
        "status must not pass A's backups off as B's: {said}"
    );

    let out = run(&w, &["scan"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("the configured server or user changed"),
        "the user is told: {stderr}"
    );
    let mut got: Vec<String> = b
        .assets(&b.admin_id())
        .iter()
        .map(|a| a.checksum_hex.clone())
        .collect();
    let mut want: Vec<String> = files.iter().map(|f| sha1_hex(f)).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "every file went up to the new server");
    assert_eq!(b.upload_bodies(), 3);
    assert_eq!(
        w.server.upload_bodies(),
        a_bodies,
        "nothing more to the old one"
    );

    let status = run(&w, &["status"]);
    let said = String::from_utf8_lossy(&status.stdout);
    assert!(!said.contains("NOT backed up to"), "{said}");
}

/// The server is upgraded in place while the daemon runs (a restart on the same port with the
/// same state, reporting 2.8.0): the live-event socket reconnects, its `on_server_version`
/// is noticed, the API is read again (discovery) and `status` shows the new version; uploads
/// go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_mid_run_is_noticed_and_the_api_read_again() {
    let mut w = World::new(Dialect::Immich).await;
    w.extra = "[scan]\ninterval = \"1s\"\n[watch]\nmode = \"off\"\nsettle = \"0s\"\n".into();
    w.write("IMG_0.jpg", &jpeg("before-upgrade"));
    let d = w.start_daemon();
    assert!(
        w.server
            .wait_for_websockets(1, std::time::Duration::from_secs(30))
            .await,
        "the socket never connected"
    );
    let admin = w.server.admin_id();
    assert!(
        crate::common::eventually(std::time::Duration::from_secs(30), || w
            .server
            .asset_count(&admin)
            == 1)
        .await
    );
    let status = run(&w, &["status"]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("(immich 2.7.5)"),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    let discoveries = w.server.requests("GET /.well-known/immich");

    w.server.upgrade_to(2, 8, 0);
    let server = &w.server;
    let cfg_path = w.config_path();
    assert!(
        crate::common::eventually(std::time::Duration::from_secs(60), || {
            let out = std::process::Command::new(crate::common::BIN)
                .arg("--config")
                .arg(&cfg_path)
                .arg("status")
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).contains("(immich 2.8.0)")
        })
        .await,
        "status never showed the upgraded version"
    );
    assert!(
        server.requests("GET /.well-known/immich") > discoveries,
        "the API was read again after the upgrade"
    );
    w.write("IMG_1.jpg", &jpeg("after-upgrade"));
    assert!(
        crate::common::eventually(std::time::Duration::from_secs(60), || w
            .server
            .asset_count(&admin)
            == 2)
        .await,
        "uploads go on after the upgrade"
    );
    d.stop().await;
}

/// `status`'s server line, from the binary.
fn status_of(cfg: &std::path::Path) -> String {
    let out = std::process::Command::new(crate::common::BIN)
        .arg("--config")
        .arg(cfg)
        .arg("status")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The server restarts on the same port with the same state into another dialect (the
/// seed's API at the root instead of under `/api`), reporting the same version: the socket
/// cannot reconnect at the old root, discovery finds the API moved, and the daemon connects
/// again by itself. `status` shows the new dialect; a file written afterwards goes up exactly
/// once, through the seed's routes, and nothing earlier is sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_into_another_dialect_is_applied() {
    restart_into(Dialect::Immich, Dialect::Seed, "POST /api/assets").await;
}

/// The other way: from the seed's API at the root to Immich's under `/api` (the seed's
/// `/socket.io` is gone then, as its `POST /assets` at the root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_from_the_seed_into_immich_is_applied() {
    restart_into(Dialect::Seed, Dialect::Immich, "POST /assets (web)").await;
}

/// Runs `from`, restarts the server as `to` (the version pinned at 2.7.5) and checks the
/// daemon follows; `old_upload` is the route key of an upload sent to the old root.
async fn restart_into(from: Dialect, to: Dialect, old_upload: &str) {
    let mut w = World::new(from).await;
    w.extra = "[scan]\ninterval = \"1s\"\n[watch]\nmode = \"off\"\nsettle = \"0s\"\n".into();
    let before = jpeg("before-move");
    w.write("IMG_0.jpg", &before);
    // The version stays 2.7.5 across the restart: no `on_server_version` tells of it.
    w.server.upgrade_to(2, 7, 5);
    let d = w.start_daemon();
    let long = std::time::Duration::from_secs(60);
    assert!(
        w.server.wait_for_websockets(1, long).await,
        "the socket never connected"
    );
    let admin = w.server.admin_id();
    assert!(crate::common::eventually(long, || w.server.asset_count(&admin) == 1).await);
    let cfg = w.config_path();
    assert!(
        status_of(&cfg).contains(&format!("({} 2.7.5)", name(from))),
        "{}",
        status_of(&cfg)
    );
    let bodies = w.server.upload_bodies();
    let created = w.server.requests_with_status("POST /assets", 201);
    assert_eq!(created, 1);

    w.server.restart_as(to);
    assert!(
        crate::common::eventually(std::time::Duration::from_secs(90), || {
            let said = status_of(&cfg);
            said.contains(&format!("({} 2.7.5)", name(to)))
        })
        .await,
        "the daemon never connected again in the new dialect: {}",
        status_of(&cfg)
    );

    let after = jpeg("after-move");
    w.write("IMG_1.jpg", &after);
    assert!(
        crate::common::eventually(long, || w.server.asset_count(&admin) == 2).await,
        "uploads go on in the new dialect"
    );
    let mut got: Vec<String> = w
        .server
        .assets(&admin)
        .iter()
        .map(|a| a.checksum_hex.clone())
        .collect();
    got.sort();
    let mut want = vec![sha1_hex(&before), sha1_hex(&after)];
    want.sort();
    assert_eq!(got, want, "one asset per file");
    assert_eq!(
        w.server.upload_bodies(),
        bodies + 1,
        "one body, the new file's"
    );
    assert_eq!(
        w.server.requests_with_status("POST /assets", 201),
        created + 1,
        "the new file went up through the new dialect's `POST /assets`"
    );
    assert_eq!(
        w.server.requests(old_upload),
        0,
        "nothing was sent to the old root after the move"
    );
    d.stop().await;
}

/// How `status` names the daemon's dialect for the test server's.
fn name(d: Dialect) -> &'static str {
    match d {
        Dialect::Seed => "seed",
        Dialect::Immich | Dialect::ImmichNext => "immich",
    }
}
