//! Issue 14 and SIGHUP (docs/ARCHITECTURE.md#reload): `[[accounts]]` added to the config
//! start while the others go on, removed ones stop (their state stays), and an account
//! whose key changed is restarted alone with the new one; one that stopped with an error
//! is tried again by the next SIGHUP.

use std::path::PathBuf;
use std::time::Duration;

use immish_testserver::Dialect;

use crate::common::{account_table as account, endpoint, eventually, get, jpeg, sha1_hex, World};

/// Generous: the machine running the tests is heavily loaded.
const DEADLINE: Duration = Duration::from_secs(90);

fn has(w: &World, user: &str, bytes: &[u8]) -> bool {
    let want = sha1_hex(bytes);
    w.server.assets(user).iter().any(|a| a.checksum_hex == want)
}

/// The API keys that uploaded the file named `name` (successful uploads only).
fn keys_of(w: &World, name: &str) -> Vec<Option<String>> {
    w.server
        .uploads()
        .iter()
        .filter(|u| u.file_name() == Some(name) && (200..300).contains(&u.status))
        .map(|u| u.api_key.clone())
        .collect()
}

/// Starts with `[server]`'s account and Ann's. A SIGHUP adding Ben: his files reach his
/// library under his key while Ann's keep arriving. A SIGHUP removing Ann: her account
/// lets go of its lock and socket, her state stays, her new files stay local, and the
/// daemon stays healthy. A SIGHUP with a new key for Ben (the old one revoked): his next
/// file goes up with the new key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_adds_removes_and_rekeys_accounts() {
    let mut w = World::new(Dialect::Immich).await;
    let ann = w.server.add_user("ann@example.com", "pw-ann");
    let ben = w.server.add_user("ben@example.com", "pw-ben");
    let ann_key = w.server.create_api_key(&ann, &["all"]);
    let ben_old = w.server.create_api_key(&ben, &["all"]);
    let ben_new = w.server.create_api_key(&ben, &["all"]);
    let top = w.dir.path().to_path_buf();
    let root = |who: &str| -> PathBuf { top.join(who) };
    for who in ["ann", "ben"] {
        std::fs::create_dir_all(root(who)).unwrap();
    }
    let put = |who: &str, name: &str, bytes: &[u8]| {
        std::fs::write(root(who).join(name), bytes).unwrap();
    };
    let metrics = "[metrics]\nlisten = \"127.0.0.1:0\"\n";
    let ann_part = account("ann", &ann_key, &root("ann"));
    w.extra = format!("{metrics}{ann_part}");
    let d = w.start_reloading();
    let a1 = jpeg("reload ann 1");
    put("ann", "a1.jpg", &a1);
    assert!(
        eventually(DEADLINE, || has(&w, &ann, &a1)).await,
        "Ann's first file"
    );

    // Ben joins.
    w.extra = format!(
        "{metrics}{ann_part}{}",
        account("ben", &ben_old, &root("ben"))
    );
    w.sighup(&d).await;
    let (a2, b1) = (jpeg("reload ann 2"), jpeg("reload ben 1"));
    put("ben", "b1.jpg", &b1);
    put("ann", "a2.jpg", &a2);
    assert!(
        eventually(DEADLINE, || has(&w, &ben, &b1) && has(&w, &ann, &a2)).await,
        "Ben's file reaches his library and Ann's goes on: ben {:?}, ann {:?}",
        w.server.assets(&ben),
        w.server.assets(&ann)
    );
    assert_eq!(keys_of(&w, "b1.jpg"), vec![Some(ben_old.clone())]);
    let ben_dir = w.state_dir().join("accounts").join("ben");
    assert!(ben_dir.join("state.sqlite3").is_file());

    // Ann leaves.
    w.extra = format!("{metrics}{}", account("ben", &ben_old, &root("ben")));
    w.sighup(&d).await;
    let ann_dir = w.state_dir().join("accounts").join("ann");
    assert!(
        eventually(DEADLINE, || {
            immish_sync::lock::holder(&ann_dir).is_none() && !ann_dir.join("control.sock").exists()
        })
        .await,
        "Ann's account lets go of its lock and control socket"
    );
    assert!(
        ann_dir.join("state.sqlite3").is_file(),
        "Ann's state stays on disk"
    );
    let a3 = jpeg("reload ann 3");
    put("ann", "a3.jpg", &a3);

    // Ben's key changes; the old one no longer works anywhere.
    assert!(w.server.revoke_api_key(&ben_old));
    w.extra = format!("{metrics}{}", account("ben", &ben_new, &root("ben")));
    w.sighup(&d).await;
    let b2 = jpeg("reload ben 2");
    put("ben", "b2.jpg", &b2);
    assert!(
        eventually(DEADLINE, || has(&w, &ben, &b2)).await,
        "Ben's next file goes up with his new key: {:?}",
        w.server
            .uploads()
            .iter()
            .map(|u| (u.file_name().map(str::to_owned), u.status))
            .collect::<Vec<_>>()
    );
    assert_eq!(keys_of(&w, "b2.jpg"), vec![Some(ben_new.clone())]);

    // Healthy, and only the accounts it runs are shown as its own.
    let addr = endpoint(&w).await;
    let (code, body) = get(addr, "/healthz").await;
    assert_eq!(code, 200, "{body}");
    let (_, metrics) = get(addr, "/metrics").await;
    assert!(!metrics.contains("account=\"ann\""), "{metrics}");
    assert!(
        metrics.contains("immish_sync_account_failed{account=\"ben\"} 0"),
        "{metrics}"
    );
    let (_, body) = get(addr, "/status.json").await;
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = s["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(names, ["ben"], "{s:#}");

    d.daemon.stop().await;
    // Ann's file written after she left stayed local.
    assert!(
        !has(&w, &ann, &a3),
        "nothing of Ann's goes up once she left"
    );
    assert_eq!(w.server.assets(&ann).len(), 2);
}

/// An account a SIGHUP adds whose state cannot be opened (a file where its folder should
/// be) is that account's failure, named in `/healthz` and `/metrics`; Ann's account goes
/// on. Once the file is gone, a SIGHUP that changes nothing starts Ben's account: his
/// files arrive, the daemon is healthy again and stops without an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_added_account_that_cannot_open_its_state_fails_alone_until_a_sighup() {
    let mut w = World::new(Dialect::Immich).await;
    let ann = w.server.add_user("ann@example.com", "pw-ann");
    let ben = w.server.add_user("ben@example.com", "pw-ben");
    let ann_key = w.server.create_api_key(&ann, &["all"]);
    let ben_key = w.server.create_api_key(&ben, &["all"]);
    let top = w.dir.path().to_path_buf();
    for who in ["ann", "ben"] {
        std::fs::create_dir_all(top.join(who)).unwrap();
    }
    let metrics = "[metrics]\nlisten = \"127.0.0.1:0\"\n";
    let ann_part = account("ann", &ann_key, &top.join("ann"));
    w.extra = format!("{metrics}{ann_part}");
    let d = w.start_reloading();
    let addr = endpoint(&w).await;
    // Where Ben's state folder would go, a file.
    std::fs::write(w.state_dir().join("accounts").join("ben"), b"not a folder").unwrap();
    w.extra = format!(
        "{metrics}{ann_part}{}",
        account("ben", &ben_key, &top.join("ben"))
    );
    w.sighup(&d).await;
    let mut health = (0, String::new());
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while tokio::time::Instant::now() < deadline {
        health = get(addr, "/healthz").await;
        if health.1.contains("account ben stopped") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(health.0, 503, "{health:?}");
    assert!(
        health
            .1
            .contains("account ben stopped: cannot create the lock file"),
        "{health:?}"
    );
    let (_, m) = get(addr, "/metrics").await;
    assert!(
        m.contains("immish_sync_account_failed{account=\"ben\"} 1"),
        "{m}"
    );
    let a1 = jpeg("open ann 1");
    std::fs::write(top.join("ann").join("a1.jpg"), &a1).unwrap();
    assert!(
        eventually(DEADLINE, || has(&w, &ann, &a1)).await,
        "Ann's account goes on"
    );

    // The cause goes, and a SIGHUP with the same config starts Ben's account again.
    std::fs::remove_file(w.state_dir().join("accounts").join("ben")).unwrap();
    let b1 = jpeg("open ben 1");
    std::fs::write(top.join("ben").join("b1.jpg"), &b1).unwrap();
    w.sighup(&d).await;
    assert!(
        eventually(DEADLINE, || has(&w, &ben, &b1)).await,
        "Ben's account runs again after the SIGHUP: {:?}",
        w.server.assets(&ben)
    );
    let (code, body) = get(addr, "/healthz").await;
    assert_eq!(code, 200, "{body}");
    let (_, m) = get(addr, "/metrics").await;
    assert!(
        m.contains("immish_sync_account_failed{account=\"ben\"} 0"),
        "{m}"
    );
    // Nothing failed is left: the daemon stops cleanly.
    d.daemon.stop().await;
}

/// `[server]`'s own account stops (its state database turned to garbage) while Ben's runs.
/// The user moves the broken database away and sends a SIGHUP that changes nothing: the
/// account starts again with a new database (the agent hands it the state directory's
/// lock and takes it back), its next file arrives, and the daemon is healthy and stops
/// without an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servers_own_account_that_stopped_runs_again_after_a_sighup() {
    let mut w = World::new(Dialect::Immich).await;
    let admin = w.server.admin_id();
    let ben = w.server.add_user("ben@example.com", "pw-ben");
    let ben_key = w.server.create_api_key(&ben, &["all"]);
    let ben_root = w.dir.path().join("ben");
    std::fs::create_dir_all(&ben_root).unwrap();
    w.extra = format!(
        "[metrics]\nlisten = \"127.0.0.1:0\"\n{}",
        account("ben", &ben_key, &ben_root)
    );
    let (d1, b1) = (jpeg("own default 1"), jpeg("own ben 1"));
    w.write("1.jpg", &d1);
    std::fs::write(ben_root.join("1.jpg"), &b1).unwrap();
    let d = w.start_reloading();
    assert!(
        eventually(DEADLINE, || has(&w, &admin, &d1) && has(&w, &ben, &b1)).await,
        "the first files must arrive"
    );
    let addr = endpoint(&w).await;
    let mut health = (0, String::new());
    let stopped = crate::common::break_until(&w.state_dir(), &w.root(), DEADLINE, || {
        let out = crate::common::run(&w, &["status", "--json"]);
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        s["failed"].is_string()
    })
    .await;
    assert!(stopped, "[server]'s account never stopped");
    for _ in 0..50 {
        health = get(addr, "/healthz").await;
        if health.1.contains("account default stopped") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(health.0, 503, "{health:?}");

    for name in ["state.sqlite3", "state.sqlite3-wal", "state.sqlite3-shm"] {
        let _ = std::fs::remove_file(w.state_dir().join(name));
    }
    let d2 = jpeg("own default 2");
    w.write("2.jpg", &d2);
    w.sighup(&d).await;
    assert!(
        eventually(DEADLINE, || has(&w, &admin, &d2)).await,
        "[server]'s account runs again after the SIGHUP"
    );
    let (code, body) = get(addr, "/healthz").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        immish_sync::lock::holder(&w.state_dir()),
        Some(immish_sync::lock::Holder {
            pid: Some(std::process::id())
        }),
        "the daemon holds the state directory's lock again"
    );
    d.daemon.stop().await;
}
