//! Several accounts on one agent (issue 14, docs/ARCHITECTURE.md#accounts): one daemon, one
//! state directory, and each root's files in the library of the account it names.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use immish_sync::config;
use immish_sync::daemon;
use immish_testserver::{Dialect, TestServer};
use tokio_util::sync::CancellationToken;

use crate::common::{eventually, jpeg, sha1_hex, World, BIN};

/// Generous: the machine running the tests is heavily loaded.
const DEADLINE: Duration = Duration::from_secs(90);

/// One server with the seeded admin (`[server]`'s account) and two users, Ann and Ben,
/// each with a key of their own and a root of their own.
struct Family {
    w: World,
    ann: String,
    ben: String,
    ann_key: String,
}

impl Family {
    async fn new() -> Family {
        Family::with(World::new(Dialect::Immich).await)
    }

    /// The family on a server built for the test (one that keeps the bytes, for a pull).
    fn with(w: World) -> Family {
        let ann = w.server.add_user("ann@example.com", "pw-ann");
        let ben = w.server.add_user("ben@example.com", "pw-ben");
        let ann_key = w.server.create_api_key(&ann, &["all"]);
        let ben_key = w.server.create_api_key(&ben, &["all"]);
        for d in ["ann", "ben"] {
            std::fs::create_dir_all(w.dir.path().join(d)).unwrap();
        }
        let mut f = Family {
            w,
            ann,
            ben,
            ann_key,
        };
        f.w.extra = format!(
            "[[accounts]]\nname = \"ann\"\napi_key = \"{}\"\n\
             [[accounts]]\nname = \"ben\"\napi_key = \"{ben_key}\"\n\
             [[roots]]\npath = \"{}\"\naccount = \"ann\"\n\
             [[roots]]\npath = \"{}\"\naccount = \"ben\"\n",
            f.ann_key,
            f.root_of("ann").display(),
            f.root_of("ben").display(),
        );
        f
    }

    fn root_of(&self, who: &str) -> PathBuf {
        self.w.dir.path().join(who)
    }

    fn put(&self, who: &str, name: &str, bytes: &[u8]) {
        std::fs::write(self.root_of(who).join(name), bytes).unwrap();
    }

    /// The checksums of a user's assets on the server.
    fn checksums(&self, user: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .w
            .server
            .assets(user)
            .iter()
            .map(|a| a.checksum_hex.clone())
            .collect();
        v.sort();
        v
    }

    fn has(&self, user: &str, bytes: &[u8]) -> bool {
        self.checksums(user).contains(&sha1_hex(bytes))
    }

    fn status_json(&self) -> serde_json::Value {
        let out = std::process::Command::new(BIN)
            .arg("--config")
            .arg(self.w.config_path())
            .args(["status", "--json"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run immish-sync status");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }

    fn status_text(&self) -> String {
        let out = crate::common::run(&self.w, &["status"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn account<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["accounts"]
        .as_array()
        .expect("status --json has an accounts array")
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no account {name} in {status:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_root_goes_to_the_library_of_its_account() {
    let f = Family::new().await;
    let (admin, a, b) = (jpeg("admin's"), jpeg("ann's"), jpeg("ben's"));
    f.w.write("admin.jpg", &admin);
    f.put("ann", "a.jpg", &a);
    f.put("ben", "b.jpg", &b);
    let d = f.w.start_daemon();
    let admin_id = f.w.server.admin_id();
    assert!(
        eventually(DEADLINE, || {
            f.has(&admin_id, &admin) && f.has(&f.ann, &a) && f.has(&f.ben, &b)
        })
        .await,
        "each file must reach its own account: admin {:?}, ann {:?}, ben {:?}",
        f.checksums(&admin_id),
        f.checksums(&f.ann),
        f.checksums(&f.ben)
    );
    d.stop().await;
    // Nobody's file went to another library.
    assert_eq!(f.checksums(&admin_id), vec![sha1_hex(&admin)]);
    assert_eq!(f.checksums(&f.ann), vec![sha1_hex(&a)]);
    assert_eq!(f.checksums(&f.ben), vec![sha1_hex(&b)]);
    // `[server]`'s account keeps the state directory itself; the others live below it.
    let state = f.w.state_dir();
    assert!(state.join("state.sqlite3").is_file());
    for who in ["ann", "ben"] {
        assert!(state
            .join("accounts")
            .join(who)
            .join("state.sqlite3")
            .is_file());
    }
    let mode = std::fs::metadata(state.join("accounts"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the accounts' state is private: {mode:o}");
    // `status` tells each account's roots apart.
    let s = f.status_json();
    let ann = account(&s, "ann");
    assert_eq!(
        ann["roots"][0]["path"],
        f.root_of("ann").display().to_string()
    );
    assert_eq!(ann["roots"].as_array().unwrap().len(), 1);
    assert_eq!(s["roots"].as_array().unwrap().len(), 1, "{s:#}");
    let text = f.status_text();
    assert!(
        text.contains("account ann:") && text.contains("account ben:"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_photo_in_two_accounts_roots_goes_to_both() {
    let f = Family::new().await;
    let same = jpeg("the family photo");
    f.put("ann", "family.jpg", &same);
    f.put("ben", "family.jpg", &same);
    let d = f.w.start_daemon();
    assert!(
        eventually(DEADLINE, || f.has(&f.ann, &same) && f.has(&f.ben, &same)).await,
        "the photo must reach both: ann {:?}, ben {:?}",
        f.checksums(&f.ann),
        f.checksums(&f.ben)
    );
    d.stop().await;
    assert_eq!(f.checksums(&f.ann), vec![sha1_hex(&same)]);
    assert_eq!(f.checksums(&f.ben), vec![sha1_hex(&same)]);
    assert_eq!(f.checksums(&f.w.server.admin_id()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_key_pauses_only_its_accounts_roots() {
    let f = Family::new().await;
    let (a1, b1) = (jpeg("ann 1"), jpeg("ben 1"));
    f.put("ann", "1.jpg", &a1);
    f.put("ben", "1.jpg", &b1);
    let d = f.w.start_daemon();
    assert!(
        eventually(DEADLINE, || f.has(&f.ann, &a1) && f.has(&f.ben, &b1)).await,
        "the first files must arrive"
    );
    assert!(f.w.server.revoke_api_key(&f.ann_key));
    let (a2, b2) = (jpeg("ann 2"), jpeg("ben 2"));
    f.put("ann", "2.jpg", &a2);
    f.put("ben", "2.jpg", &b2);
    assert!(
        eventually(DEADLINE, || f.has(&f.ben, &b2)).await,
        "Ben's files keep arriving while Ann's key is revoked: {:?}",
        f.checksums(&f.ben)
    );
    // Ann's account says it is refused; Ben's and `[server]`'s do not.
    let refused = |s: &serde_json::Value| account(s, "ann")["connection"]["state"] == "refused";
    let mut s = f.status_json();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !refused(&s) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        s = f.status_json();
    }
    assert!(
        refused(&s),
        "Ann's account must show the refused key: {s:#}"
    );
    assert_eq!(
        account(&s, "ben")["connection"]["state"],
        "connected",
        "{s:#}"
    );
    assert_eq!(s["connection"]["state"], "connected", "{s:#}");
    let text = f.status_text();
    let ann_part = text.split("account ann:").nth(1).unwrap_or_default();
    let ann_part = ann_part.split("account ben:").next().unwrap_or_default();
    assert!(ann_part.contains("refuses the credentials"), "{text}");
    d.stop().await;
    assert!(
        !f.has(&f.ann, &a2),
        "nothing of Ann's goes up with a revoked key"
    );
    assert_eq!(f.checksums(&f.ben).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_without_accounts_behaves_as_before() {
    let w = World::new(Dialect::Immich).await;
    let photo = jpeg("solo");
    w.write("solo.jpg", &photo);
    let summary = w.scan().await;
    assert!(summary.is_complete());
    let ids: Vec<String> = w
        .server
        .assets(&w.server.admin_id())
        .iter()
        .map(|a| a.checksum_hex.clone())
        .collect();
    assert_eq!(ids, vec![sha1_hex(&photo)]);
    assert!(!w.state_dir().join("accounts").exists());
    let out = crate::common::run(&w, &["status", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["accounts"], serde_json::json!([]));
    assert_eq!(s["roots"][0]["path"], w.root().display().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_takes_every_account() {
    let f = Family::new().await;
    let (admin, a, b) = (jpeg("admin scans"), jpeg("ann scans"), jpeg("ben scans"));
    f.w.write("admin.jpg", &admin);
    f.put("ann", "a.jpg", &a);
    f.put("ben", "b.jpg", &b);
    let fut = daemon::scan_with(f.w.config(), World::tuning(), CancellationToken::new());
    let summary = tokio::time::timeout(Duration::from_secs(120), fut)
        .await
        .expect("scan must finish")
        .expect("scan must succeed");
    assert!(summary.is_complete(), "{summary:?}");
    assert_eq!(summary.roots.len(), 3);
    assert_eq!(
        summary
            .stats
            .uploaded
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    assert!(f.has(&f.w.server.admin_id(), &admin) && f.has(&f.ann, &a) && f.has(&f.ben, &b));
}

fn write_config(dir: &std::path::Path, server: &TestServer, tail: &str) -> PathBuf {
    let text = format!(
        "[server]\nurl = \"{}\"\napi_key = \"{}\"\n[state]\ndir = \"{}\"\n\
         [[roots]]\npath = \"{}\"\n{tail}",
        server.base_url(),
        server.api_key(),
        dir.join("state").display(),
        dir.join("photos").display(),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[tokio::test]
async fn a_root_naming_an_unknown_account_is_a_config_error() {
    let server = TestServer::start(Dialect::Immich).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &server,
        "[[accounts]]\nname = \"ann\"\napi_key = \"k\"\n\
         [[roots]]\npath = \"/srv/ben\"\naccount = \"bne\"\n",
    );
    let e = config::load(&path)
        .expect_err("an unknown account must be refused")
        .to_string();
    for part in [
        &format!("{}:13:", path.display()),
        "roots[1].account",
        "\"bne\" is not the name of an [[accounts]] table",
        "ann",
    ] {
        assert!(e.contains(part), "{part:?} missing in: {e}");
    }
    // `check-config` says the same, and fails.
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .args(["check-config", "--offline"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("roots[1].account"));
}

#[tokio::test]
async fn an_accounts_key_comes_from_its_own_sources() {
    let server = TestServer::start(Dialect::Immich).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &server, "[[accounts]]\nname = \"ann\"\n");
    let text = std::fs::read_to_string(&path).unwrap();
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    // No key at all: the error names the table and the account's own variable and credential.
    let e = config::load_from_str(&text, &path, &[])
        .unwrap_err()
        .to_string();
    for part in [
        "accounts[0]",
        "IMMISH_SYNC__ACCOUNTS__0__API_KEY",
        "immish-sync-api-key-ann",
    ] {
        assert!(e.contains(part), "{part:?} missing in: {e}");
    }
    // The environment.
    let c = config::load_from_str(
        &text,
        &path,
        &env(&[("IMMISH_SYNC__ACCOUNTS__0__API_KEY", "from-env")]),
    )
    .unwrap();
    assert_eq!(
        c.accounts[0].server.credentials,
        config::Credentials::ApiKey(config::Secret::new("from-env"))
    );
    assert_eq!(
        c.accounts[0].server.url, c.server.url,
        "the url defaults to [server]'s"
    );
    // A systemd credential named after the account wins over the variable.
    let creds = dir.path().join("creds");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join("immish-sync-api-key-ann"), "from-systemd\n").unwrap();
    let c = config::load_from_str(
        &text,
        &path,
        &env(&[
            ("IMMISH_SYNC__ACCOUNTS__0__API_KEY", "from-env"),
            ("CREDENTIALS_DIRECTORY", creds.to_str().unwrap()),
        ]),
    )
    .unwrap();
    assert_eq!(
        c.accounts[0].server.credentials,
        config::Credentials::ApiKey(config::Secret::new("from-systemd"))
    );
    // Two accounts of one name are refused.
    let path = write_config(
        dir.path(),
        &server,
        "[[accounts]]\nname = \"ann\"\napi_key = \"a\"\n[[accounts]]\nname = \"ann\"\napi_key = \"b\"\n",
    );
    let e = config::load(&path).unwrap_err().to_string();
    assert!(
        e.contains("accounts[1].name") && e.contains("earlier account"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_each_accounts_key() {
    let f = Family::new().await;
    f.w.write_config();
    assert!(f.w.server.revoke_api_key(&f.ann_key));
    let out = crate::common::run(&f.w, &["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a revoked key fails doctor: {text}");
    let line = |who: &str| {
        text.lines()
            .find(|l| l.contains(&format!("(account {who})")) && l.contains("key"))
            .unwrap_or_else(|| panic!("no key line for {who} in:\n{text}"))
            .to_owned()
    };
    assert!(line("ann").starts_with("fail"), "{text}");
    assert!(!line("ben").starts_with("fail"), "{text}");
}

/// A `[[pull]]` naming an account copies that account's originals (a phone upload of Ann's
/// too), and nothing of `[server]`'s account; `[server]`'s account does not pull into it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pull_for_an_account_copies_only_that_accounts_originals() {
    let server = TestServer::builder()
        .dialect(Dialect::Immich)
        .keep_bytes(true)
        .start()
        .await;
    let mut f = Family::with(World::with_server(server));
    let copy = f.w.dir.path().join("ann-copy");
    f.w.extra.push_str(&format!(
        "[[pull]]\npath = \"{}\"\naccount = \"ann\"\nlayout = \"{{filename}}\"\n",
        copy.display()
    ));
    let admin = f.w.server.admin_id();
    let (phone, admins) = (jpeg("ann's phone"), jpeg("the admin's phone"));
    f.w.server.insert(
        &f.ann,
        immish_testserver::NewAsset::new("PXL_1.jpg", phone.clone()),
    );
    f.w.server.insert(
        &admin,
        immish_testserver::NewAsset::new("ADMIN_1.jpg", admins.clone()),
    );
    let d = f.w.start_daemon();
    let got = eventually(DEADLINE, || {
        std::fs::read(copy.join("PXL_1.jpg")).is_ok_and(|b| b == phone)
    })
    .await;
    // Give a wrong pull (by [server]'s account) time to show itself too: past its first
    // look at the mirror and the next (every 5 s when idle).
    tokio::time::sleep(Duration::from_secs(12)).await;
    let s = f.status_json();
    d.stop().await;
    assert!(
        got,
        "Ann's original must be copied into her pull folder: {:#}",
        f.status_json()
    );
    let names: Vec<String> = std::fs::read_dir(&copy)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(
        names,
        vec!["PXL_1.jpg".to_owned()],
        "only Ann's assets: {s:#}"
    );
}
