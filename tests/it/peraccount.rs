//! Issue 14, per account: `/metrics` labelled with each account, and `pause`, `resume`,
//! `rescan` and `retry` addressing one account (`--account`, `--root`) or every one
//! (docs/ARCHITECTURE.md#accounts).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use immish_testserver::Dialect;

use crate::common::{break_until, endpoint, eventually, get, jpeg, run, sha1_hex, World};

/// Generous: the machine running the tests is heavily loaded.
const DEADLINE: Duration = Duration::from_secs(90);

/// The seeded admin (`[server]`'s account, the world's root) and two users, Ann and Ben,
/// each with a key and a root of their own.
struct Family {
    w: World,
    ann: String,
    ben: String,
}

impl Family {
    async fn new(extra: &str) -> Family {
        let mut w = World::new(Dialect::Immich).await;
        let ann = w.server.add_user("ann@example.com", "pw-ann");
        let ben = w.server.add_user("ben@example.com", "pw-ben");
        let ann_key = w.server.create_api_key(&ann, &["all"]);
        let ben_key = w.server.create_api_key(&ben, &["all"]);
        for d in ["ann", "ben"] {
            std::fs::create_dir_all(w.dir.path().join(d)).unwrap();
        }
        w.extra = format!(
            "{extra}\n[[accounts]]\nname = \"ann\"\napi_key = \"{ann_key}\"\n\
             [[accounts]]\nname = \"ben\"\napi_key = \"{ben_key}\"\n\
             [[roots]]\npath = \"{}\"\naccount = \"ann\"\n\
             [[roots]]\npath = \"{}\"\naccount = \"ben\"\n",
            w.dir.path().join("ann").display(),
            w.dir.path().join("ben").display(),
        );
        Family { w, ann, ben }
    }

    fn root_of(&self, who: &str) -> PathBuf {
        self.w.dir.path().join(who)
    }

    fn put(&self, who: &str, name: &str, bytes: &[u8]) {
        std::fs::write(self.root_of(who).join(name), bytes).unwrap();
    }

    fn has(&self, user: &str, bytes: &[u8]) -> bool {
        let want = sha1_hex(bytes);
        self.w
            .server
            .assets(user)
            .iter()
            .any(|a| a.checksum_hex == want)
    }

    /// Runs a control command; it must succeed. Its output.
    fn command(&self, args: &[&str]) -> String {
        let out = run(&self.w, args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }
}

/// `/metrics` as `name{labels}` → value (one sample per line, comments skipped).
async fn metrics(addr: SocketAddr) -> BTreeMap<String, f64> {
    let body = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("the endpoint answers")
        .text()
        .await
        .unwrap_or_default();
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Each account's files reach the metrics from its own database: two files of Ann's, one
/// of Ben's, none of `[server]`'s, each counted under its account and its root.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_each_accounts_files() {
    let f = Family::new("[metrics]\nlisten = \"127.0.0.1:0\"\n").await;
    let (a1, a2, b1) = (jpeg("m ann 1"), jpeg("m ann 2"), jpeg("m ben 1"));
    f.put("ann", "1.jpg", &a1);
    f.put("ann", "2.jpg", &a2);
    f.put("ben", "1.jpg", &b1);
    let d = f.w.start_daemon();
    let addr = endpoint(&f.w).await;
    let done = |acct: &str| format!("immish_sync_files{{account=\"{acct}\",state=\"done\"}}");
    let mut m = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while tokio::time::Instant::now() < deadline {
        m = metrics(addr).await;
        if m.get(&done("ann")) == Some(&2.0) && m.get(&done("ben")) == Some(&1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(m.get(&done("ann")), Some(&2.0), "{m:#?}");
    assert_eq!(m.get(&done("ben")), Some(&1.0), "{m:#?}");
    assert_eq!(m.get(&done("default")), Some(&0.0), "{m:#?}");
    // What the metrics say is what the server holds.
    assert!(f.has(&f.ann, &a1) && f.has(&f.ann, &a2) && f.has(&f.ben, &b1));
    let backed = |acct: &str, who: &str| {
        format!(
            "immish_sync_root_backed_up_files{{account=\"{acct}\",root=\"{}\"}}",
            f.root_of(who).display()
        )
    };
    assert_eq!(m.get(&backed("ann", "ann")), Some(&2.0), "{m:#?}");
    assert_eq!(m.get(&backed("ben", "ben")), Some(&1.0), "{m:#?}");
    for acct in ["default", "ann", "ben"] {
        assert_eq!(
            m.get(&format!("immish_sync_connected{{account=\"{acct}\"}}")),
            Some(&1.0),
            "{m:#?}"
        );
    }
    d.stop().await;
}

/// `pause --account ann` holds Ann's uploads only; Ben's files keep arriving; `resume`
/// (every account) lets Ann's go.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pausing_one_account_holds_only_its_files() {
    let f = Family::new("").await;
    let (a1, b1) = (jpeg("p ann 1"), jpeg("p ben 1"));
    f.put("ann", "1.jpg", &a1);
    f.put("ben", "1.jpg", &b1);
    let d = f.w.start_daemon();
    assert!(
        eventually(DEADLINE, || f.has(&f.ann, &a1) && f.has(&f.ben, &b1)).await,
        "the first files must arrive"
    );
    let said = f.command(&["pause", "--account", "ann"]);
    assert!(said.contains("account ann: uploads are paused"), "{said}");
    assert!(
        said.contains("the running daemon stopped starting uploads"),
        "Ann's daemon got the message on its own socket: {said}"
    );
    assert!(!said.contains("account ben"), "{said}");
    let (a2, b2) = (jpeg("p ann 2"), jpeg("p ben 2"));
    f.put("ann", "2.jpg", &a2);
    f.put("ben", "2.jpg", &b2);
    assert!(
        eventually(DEADLINE, || f.has(&f.ben, &b2)).await,
        "Ben's files arrive while Ann's account is paused"
    );
    // Time for Ann's file to have gone too, had the pause not held it.
    let b3 = jpeg("p ben 3");
    f.put("ben", "3.jpg", &b3);
    assert!(eventually(DEADLINE, || f.has(&f.ben, &b3)).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!f.has(&f.ann, &a2), "nothing of Ann's goes up while paused");

    let said = f.command(&["resume"]);
    assert!(said.contains("account ann: uploads resumed"), "{said}");
    assert!(said.contains("account ben: nothing was paused"), "{said}");
    assert!(
        eventually(DEADLINE, || f.has(&f.ann, &a2)).await,
        "Ann's file goes up after resume"
    );
    d.stop().await;
}

/// `pause` with neither flag pauses every account; `--root` picks the root's account; a
/// wrong `--account` is an error that names the accounts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commands_find_the_account() {
    let f = Family::new("").await;
    f.w.write_config();
    let ben_root = f.root_of("ben").display().to_string();
    let said = f.command(&["pause", "--root", &ben_root]);
    assert!(
        said.starts_with(&format!("account ben: uploads from {ben_root} are paused")),
        "{said}"
    );
    assert!(!said.contains("account ann"), "{said}");
    let said = f.command(&["pause"]);
    for acct in ["default", "ann", "ben"] {
        assert!(
            said.contains(&format!("account {acct}: uploads are paused")),
            "{said}"
        );
    }
    // A paused account's pause is in its own database, read by `status`.
    let out = run(&f.w, &["status", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let paused = |name: &str| {
        s["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .map(|a| !a["paused"].is_null())
    };
    assert_eq!(paused("ann"), Some(true), "{s:#}");
    assert!(!s["paused"].is_null(), "{s:#}");

    let out = run(&f.w, &["pause", "--account", "carl"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("carl is not an account") && err.contains("default, ann, ben"),
        "{err}"
    );
    let out = run(&f.w, &["pause", "--account", "ann", "--root", &ben_root]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is a root of account ben"), "{err}");
}

/// A sample of `/metrics`, 0 when absent.
fn sample(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

/// One account's entry in a status document.
fn entry<'a>(s: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    s["accounts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["name"] == name))
        .unwrap_or(&serde_json::Value::Null)
}

/// Each account's counters since start are its own: Ann uploads two files (a third is
/// already in her library, so not sent), Ben uploads one, `[server]`'s account nothing. `/metrics`
/// (`account` label), `/status.json`, and `status --json` (each account's live record in
/// its own database) all say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_accounts_counters_are_its_own() {
    let f = Family::new("[metrics]\nlisten = \"127.0.0.1:0\"\n").await;
    let (a1, a2, a3, b1) = (
        jpeg("c ann 1"),
        jpeg("c ann 2"),
        jpeg("c ann 3"),
        jpeg("c ben 1"),
    );
    // Already in Ann's library: found, not sent.
    f.w.server.upload_as(
        &f.ann,
        "a3.jpg",
        &a3,
        immish_testserver::Visibility::Timeline,
    );
    f.put("ann", "1.jpg", &a1);
    f.put("ann", "2.jpg", &a2);
    f.put("ann", "3.jpg", &a3);
    f.put("ben", "1.jpg", &b1);
    let d = f.w.start_daemon();
    let addr = endpoint(&f.w).await;
    let up = |a: &str| format!("immish_sync_uploaded_files_total{{account=\"{a}\"}}");
    let bytes = |a: &str| format!("immish_sync_uploaded_bytes_total{{account=\"{a}\"}}");
    let mut m = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while tokio::time::Instant::now() < deadline {
        m = metrics(addr).await;
        if sample(&m, &up("ann")) == 2.0 && sample(&m, &up("ben")) == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(m.get(&up("ann")), Some(&2.0), "{m:#?}");
    assert_eq!(m.get(&up("ben")), Some(&1.0), "{m:#?}");
    assert_eq!(m.get(&up("default")), Some(&0.0), "{m:#?}");
    assert_eq!(
        m.get(&bytes("ann")),
        Some(&((a1.len() + a2.len()) as f64)),
        "{m:#?}"
    );
    assert_eq!(m.get(&bytes("ben")), Some(&(b1.len() as f64)), "{m:#?}");
    assert_eq!(m.get(&bytes("default")), Some(&0.0), "{m:#?}");
    // What the counters say is what the server holds, once each.
    assert_eq!(f.w.server.assets(&f.ann).len(), 3);
    assert_eq!(f.w.server.assets(&f.ben).len(), 1);

    let (_, body) = get(addr, "/status.json").await;
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["activity"]["uploaded_files"], 0, "{s:#}");
    assert_eq!(entry(&s, "ann")["activity"]["uploaded_files"], 2, "{s:#}");
    assert_eq!(entry(&s, "ben")["activity"]["uploaded_files"], 1, "{s:#}");

    // `status --json`, another process, reads each account's own record.
    let mut s = serde_json::Value::Null;
    let recorded = eventually(DEADLINE, || {
        let out = run(&f.w, &["status", "--json"]);
        s = serde_json::from_slice(&out.stdout).unwrap_or_default();
        entry(&s, "ann")["activity"]["uploaded_files"] == 2
            && entry(&s, "ben")["activity"]["uploaded_files"] == 1
    })
    .await;
    assert!(recorded, "{s:#}");
    assert_eq!(s["activity"]["uploaded_files"], 0, "{s:#}");
    d.stop().await;
}

/// Ann's state database is overwritten with garbage while the daemon runs: Ann's account
/// stops (shown as failed, with why, in `/healthz`, `/metrics` and `/status.json`), Ben's
/// goes on and his next file arrives once; at the stop the daemon's error names Ann.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_account_stops_alone() {
    let f = Family::new("[metrics]\nlisten = \"127.0.0.1:0\"\n").await;
    let (a1, b1) = (jpeg("x ann 1"), jpeg("x ben 1"));
    f.put("ann", "1.jpg", &a1);
    f.put("ben", "1.jpg", &b1);
    let d = f.w.start_daemon();
    let addr = endpoint(&f.w).await;
    assert!(
        eventually(DEADLINE, || f.has(&f.ann, &a1) && f.has(&f.ben, &b1)).await,
        "the first files must arrive"
    );
    // Garbage in place of Ann's database, in the files the daemon holds open (with its
    // write-ahead log and its shared index, else SQLite goes on from what it cached), as a
    // failing disk or a stray `dd` would leave them.
    // A checkpoint running between two of these writes can copy good pages back from the
    // log: the disk goes on failing, so the garbage is written again while Ann's account
    // has not stopped.
    let ann_dir = f.w.state_dir().join("accounts").join("ann");
    let break_ann = || crate::common::garble_db(&ann_dir);
    break_ann();
    // Ann's engine notices at its next write: a file of hers gives it one.
    f.put("ann", "2.jpg", &jpeg("x ann 2"));
    let mut health = (0, String::new());
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut round = 0u32;
    while tokio::time::Instant::now() < deadline {
        health = get(addr, "/healthz").await;
        if health.0 == 503 && health.1.contains("account ann stopped") {
            break;
        }
        round += 1;
        if round.is_multiple_of(10) {
            break_ann();
            f.put(
                "ann",
                format!("{round}.jpg").as_str(),
                &jpeg(&format!("x ann {round}")),
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        health.0 == 503 && health.1.contains("account ann stopped: state database"),
        "Ann's account must show as stopped: {health:?}"
    );
    // Ben's account goes on: his next file arrives, once.
    let b2 = jpeg("x ben 2");
    f.put("ben", "2.jpg", &b2);
    assert!(
        eventually(DEADLINE, || f.has(&f.ben, &b2)).await,
        "Ben's files go on arriving while Ann's state is broken"
    );
    let want = sha1_hex(&b2);
    let copies =
        f.w.server
            .assets(&f.ben)
            .iter()
            .filter(|a| a.checksum_hex == want)
            .count();
    assert_eq!(copies, 1);
    let m = metrics(addr).await;
    assert_eq!(
        m.get("immish_sync_account_failed{account=\"ann\"}"),
        Some(&1.0),
        "{m:#?}"
    );
    assert_eq!(
        m.get("immish_sync_account_failed{account=\"ben\"}"),
        Some(&0.0),
        "{m:#?}"
    );
    let (_, body) = get(addr, "/status.json").await;
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(entry(&s, "ann")["failed"].is_string(), "{s:#}");
    assert!(entry(&s, "ben")["failed"].is_null(), "{s:#}");
    // The status page's table of accounts says it too.
    let (_, page) = get(addr, "/").await;
    assert!(
        page.contains("<td>ann</td><td class=\"bad\">stopped: state database"),
        "{page}"
    );
    // The text `status` (another process) says it too, from `[server]`'s record.
    let mut text = String::new();
    let said = eventually(DEADLINE, || {
        text = String::from_utf8_lossy(&run(&f.w, &["status"]).stdout).into_owned();
        text.contains("FAILED:       this account stopped")
    })
    .await;
    assert!(said, "{text}");

    // The stop is an error naming Ann, so that a service manager restarts the daemon.
    d.token.cancel();
    let r = tokio::time::timeout(Duration::from_secs(20), d.handle)
        .await
        .expect("the daemon must stop within 20 s")
        .expect("the daemon task must not panic");
    let e = r.expect_err("a daemon with a failed account stops with an error");
    assert!(e.to_string().starts_with("account ann stopped"), "{e}");
}

/// `[server]`'s own state database is overwritten with garbage while Ann's and Ben's
/// accounts run: `status --json` and `status` say the daemon runs, that `[server]`'s
/// account (`default`) stopped and why, and show Ann's and Ben's accounts as running;
/// Ben's next file still arrives, and the stop is an error naming `default`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_tells_when_servers_own_account_stopped() {
    let f = Family::new("").await;
    let admin = f.w.server.admin_id();
    let (d1, b1) = (jpeg("s default 1"), jpeg("s ben 1"));
    f.w.write("1.jpg", &d1);
    f.put("ben", "1.jpg", &b1);
    let d = f.w.start_daemon();
    assert!(
        eventually(DEADLINE, || f.has(&admin, &d1) && f.has(&f.ben, &b1)).await,
        "the first files must arrive"
    );
    let mut s = serde_json::Value::Null;
    let stopped = break_until(&f.w.state_dir(), &f.w.root(), DEADLINE, || {
        let out = run(&f.w, &["status", "--json"]);
        s = serde_json::from_slice(&out.stdout).unwrap_or_default();
        out.status.success() && s["failed"].is_string()
    })
    .await;
    assert!(stopped, "status --json must say default stopped: {s:#}");
    assert!(s["daemon"]["pid"].is_number(), "the daemon runs: {s:#}");
    assert!(
        s["failed"]
            .as_str()
            .is_some_and(|why| why.contains("state database")),
        "{s:#}"
    );
    for who in ["ann", "ben"] {
        assert!(entry(&s, who)["failed"].is_null(), "{who}: {s:#}");
        assert!(entry(&s, who)["daemon"]["pid"].is_number(), "{who}: {s:#}");
    }
    let out = run(&f.w, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (own, others) = text.split_once("\naccount ann:").unwrap_or((&text, ""));
    assert!(own.starts_with("daemon:       running (pid "), "{text}");
    assert!(
        own.contains("FAILED:       this account (default) stopped: state database"),
        "{text}"
    );
    assert!(!text.contains("not answering"), "{text}");
    assert!(others.contains("account ben:"), "{text}");
    assert!(!others.contains("FAILED"), "{text}");

    let b2 = jpeg("s ben 2");
    f.put("ben", "2.jpg", &b2);
    assert!(
        eventually(DEADLINE, || f.has(&f.ben, &b2)).await,
        "Ben's files go on arriving while [server]'s state is broken"
    );
    d.token.cancel();
    let r = tokio::time::timeout(Duration::from_secs(20), d.handle)
        .await
        .expect("the daemon must stop within 20 s")
        .expect("the daemon task must not panic");
    let e = r.expect_err("a daemon with a failed account stops with an error");
    assert!(e.to_string().starts_with("account default stopped"), "{e}");
}

/// `retry --root` queues again the failed files of that root only, in its account's state:
/// Ann's file and the files of Ben's two roots all failed; after `retry --root <Ben's
/// first>` a scan sends that root's file, and the others stay failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_of_one_root_takes_only_its_failed_files() {
    let mut f = Family::new("").await;
    let ben2 = f.w.dir.path().join("ben2");
    std::fs::create_dir_all(&ben2).unwrap();
    f.w.extra.push_str(&format!(
        "[[roots]]\npath = \"{}\"\naccount = \"ben\"\n",
        ben2.display()
    ));
    f.w.write_config();
    let (a1, b1, b2) = (jpeg("r ann 1"), jpeg("r ben 1"), jpeg("r ben 2"));
    f.put("ann", "1.jpg", &a1);
    f.put("ben", "1.jpg", &b1);
    std::fs::write(ben2.join("2.jpg"), &b2).unwrap();
    f.w.server
        .fail_with("POST /assets", 3, immish_testserver::Failure::nginx_413());
    run(&f.w, &["scan"]);
    assert!(
        !f.has(&f.ann, &a1) && !f.has(&f.ben, &b1) && !f.has(&f.ben, &b2),
        "all failed"
    );

    let ben_root = f.root_of("ben").display().to_string();
    let said = f.command(&["retry", "--root", &ben_root]);
    assert!(
        said.starts_with(&format!("account ben: 1 files of {ben_root} queued again")),
        "{said}"
    );
    assert!(!said.contains("account ann"), "{said}");
    run(&f.w, &["scan"]);
    assert!(
        f.has(&f.ben, &b1),
        "the root's failed file goes up after the retry"
    );
    assert!(!f.has(&f.ben, &b2), "Ben's other root was not asked for");
    assert!(!f.has(&f.ann, &a1), "Ann's was not asked for");
    let s: serde_json::Value =
        serde_json::from_slice(&run(&f.w, &["status", "--json"]).stdout).unwrap();
    let failed = |who: &str| {
        entry(&s, who)["counts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["state"] == "failed")
            .map(|c| c["count"].clone())
    };
    assert_eq!(failed("ann"), Some(serde_json::json!(1)), "{s:#}");
    assert_eq!(failed("ben"), Some(serde_json::json!(1)), "{s:#}");
}
