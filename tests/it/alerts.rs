//! Issue 10: alerts (docs/STATUS.md#alerts). A local listener stands in for the webhook,
//! ntfy or Gotify: each incident reaches it once, and once more when it is resolved; a
//! listener that fails is tried again, and never stops the backup.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use immish_testserver::{Dialect, Failure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::common::{account_table, break_until, eventually, jpeg, sha1_hex, World};

/// One request the listener received.
#[derive(Clone, Debug)]
struct Received {
    head: String,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// A tiny HTTP listener on loopback that records every request and answers the first
/// `fail_first` of them with 500, the others with 200.
struct Listener {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Listener {
    async fn start(fail_first: usize) -> Listener {
        Listener::start_at("127.0.0.1:0", fail_first).await
    }

    async fn start_at(addr: &str, fail_first: usize) -> Listener {
        let l = TcpListener::bind(addr).await.unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let record = got.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then as much body as Content-Length says.
                let (head, body_len, body_at) = loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        break (String::new(), 0, 0);
                    };
                    if n == 0 {
                        break (String::new(), 0, 0);
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        let len = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        break (head, len, end + 4);
                    }
                };
                while buf.len() < body_at + body_len {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = String::from_utf8_lossy(&buf[body_at.min(buf.len())..]).into_owned();
                let n = {
                    let mut g = record.lock().unwrap();
                    g.push(Received { head, body });
                    g.len()
                };
                let status = if n <= fail_first {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        Listener { url, got }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }
}

/// Checks the daemon makes meanwhile: the test tuning looks every 200 ms, so this is many.
const QUIET: Duration = Duration::from_secs(2);

/// The server goes away for longer than `outage_after`: one `incident` message while it
/// lasts (not one per check), one `resolved` when it is back, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_alerted_once_and_resolved_once() {
    let hook = Listener::start(0).await;
    let mut w = World::new(Dialect::Immich).await;
    w.extra = format!("[alerts]\nurl = \"{}\"\noutage_after = \"1s\"\n", hook.url);
    w.write("IMG_0.jpg", &jpeg("alert-0"));
    let d = w.start_daemon();
    let admin = w.server.admin_id();
    assert!(
        eventually(Duration::from_secs(30), || w.server.asset_count(&admin)
            == 1)
        .await
    );
    assert_eq!(
        hook.count(),
        0,
        "nothing to tell yet: {:?}",
        hook.received()
    );

    w.server.offline(true);
    for i in 1..6 {
        w.write(format!("IMG_{i}.jpg"), &jpeg(&format!("alert-{i}")));
    }
    assert!(
        eventually(Duration::from_secs(30), || hook.count() >= 1).await,
        "no alert for the outage"
    );
    tokio::time::sleep(QUIET).await;
    let got = hook.received();
    assert_eq!(got.len(), 1, "one message per incident: {got:?}");
    let m = got[0].json();
    assert_eq!(m["schema"], 1);
    assert_eq!(m["event"], "incident");
    assert_eq!(m["incident"], "outage");
    assert!(
        m["message"]
            .as_str()
            .is_some_and(|t| t.contains("unreachable")),
        "{m:#}"
    );
    assert!(got[0]
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json")));

    w.server.offline(false);
    assert!(
        eventually(Duration::from_secs(60), || hook.count() >= 2).await,
        "no resolve"
    );
    assert!(
        eventually(Duration::from_secs(60), || w.server.asset_count(&admin)
            == 6)
        .await
    );
    tokio::time::sleep(QUIET).await;
    let got = hook.received();
    assert_eq!(got.len(), 2, "{got:?}");
    let m = got[1].json();
    assert_eq!(m["event"], "resolved");
    assert_eq!(m["incident"], "outage");
    d.stop().await;
}

/// A file the server refuses for good is told once, ntfy style with the token; the first
/// delivery fails (500) and is tried again; the backup goes on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_file_is_alerted_once_even_when_the_first_delivery_fails() {
    let hook = Listener::start(1).await;
    let mut w = World::new(Dialect::Immich).await;
    let token = w.dir.path().join("alert-token");
    std::fs::write(&token, "tk-123\n").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    w.upload = "concurrency = 1".into();
    w.extra = format!(
        "[alerts]\nurl = \"{}\"\nkind = \"ntfy\"\ntoken_file = \"{}\"\n",
        hook.url,
        token.display()
    );
    for i in 0..3 {
        w.write(format!("IMG_{i}.jpg"), &jpeg(&format!("ntfy-{i}")));
    }
    w.server.fail_with("POST /assets", 1, Failure::nginx_413());
    let d = w.start_daemon();
    let admin = w.server.admin_id();
    assert!(
        eventually(Duration::from_secs(30), || w.server.asset_count(&admin)
            == 2)
        .await
    );
    assert!(
        eventually(Duration::from_secs(30), || hook.count() >= 2).await,
        "the failed delivery is tried again: {:?}",
        hook.received()
    );
    tokio::time::sleep(QUIET).await;
    let got = hook.received();
    assert_eq!(
        got.len(),
        2,
        "one failed delivery, one that got through: {got:?}"
    );
    for r in &got {
        assert_eq!(r.header("authorization").as_deref(), Some("Bearer tk-123"));
        assert_eq!(r.header("priority").as_deref(), Some("high"));
        assert!(
            r.header("title").is_some_and(|t| t.contains("failed")),
            "{r:?}"
        );
        assert!(r.body.contains("1 files failed"), "{}", r.body);
        assert!(r.body.contains("413"), "the reason: {}", r.body);
    }
    d.stop().await;
}

/// An alert URL where nothing listens yet is tried again at every check, without stopping
/// the backup; once something listens there, the incident arrives, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_url_nobody_answers_yet_does_not_stop_the_backup() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut w = World::new(Dialect::Immich).await;
    w.upload = "concurrency = 1".into();
    w.extra = format!("[alerts]\nurl = \"http://{closed}/hook\"\n");
    for i in 0..3 {
        w.write(format!("IMG_{i}.jpg"), &jpeg(&format!("closed-{i}")));
    }
    w.server.fail_with("POST /assets", 1, Failure::nginx_413());
    let d = w.start_daemon();
    let admin = w.server.admin_id();
    assert!(
        eventually(Duration::from_secs(30), || w.server.asset_count(&admin)
            == 2)
        .await
    );
    // Several checks meet the closed port meanwhile.
    tokio::time::sleep(QUIET).await;
    w.write("IMG_late.jpg", &jpeg("closed-late"));
    assert!(
        eventually(Duration::from_secs(30), || w.server.asset_count(&admin)
            == 3)
        .await
    );

    let hook = Listener::start_at(&closed.to_string(), 0).await;
    assert!(
        eventually(Duration::from_secs(30), || hook.count() >= 1).await,
        "the alert never arrived once the URL answered"
    );
    tokio::time::sleep(QUIET).await;
    let got = hook.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].json()["incident"], "failed");
    d.stop().await;
}

/// Ann's state database breaks while the daemon runs: her account stops, and the agent
/// (her account's own alerts stop with it) sends one `account_stopped` incident whose title
/// names her and the error; Ben's files go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_account_that_stops_is_alerted_once() {
    let hook = Listener::start(0).await;
    let mut w = World::new(Dialect::Immich).await;
    let (ann, ann_key) = w.user_with_root("ann");
    let (ben, ben_key) = w.user_with_root("ben");
    let root = |who: &str| w.dir.path().join(who);
    let extra = format!(
        "[alerts]\nurl = \"{}\"\n\
         [[accounts]]\nname = \"ann\"\napi_key = \"{ann_key}\"\n\
         [[accounts]]\nname = \"ben\"\napi_key = \"{ben_key}\"\n\
         [[roots]]\npath = \"{}\"\naccount = \"ann\"\n\
         [[roots]]\npath = \"{}\"\naccount = \"ben\"\n",
        hook.url,
        root("ann").display(),
        root("ben").display(),
    );
    w.extra = extra;
    let has = |user: &str, bytes: &[u8]| {
        let want = sha1_hex(bytes);
        w.server.assets(user).iter().any(|a| a.checksum_hex == want)
    };
    let (a1, b1) = (jpeg("stop ann 1"), jpeg("stop ben 1"));
    std::fs::write(root("ann").join("1.jpg"), &a1).unwrap();
    std::fs::write(root("ben").join("1.jpg"), &b1).unwrap();
    let d = w.start_daemon();
    assert!(
        eventually(Duration::from_secs(90), || has(&ann, &a1) && has(&ben, &b1)).await,
        "the first files must arrive"
    );
    let stops = || {
        hook.received()
            .into_iter()
            .filter(|r| r.body.contains("account_stopped"))
            .collect::<Vec<_>>()
    };
    let ann_dir = w.state_dir().join("accounts").join("ann");
    assert!(
        break_until(&ann_dir, &root("ann"), Duration::from_secs(90), || !stops()
            .is_empty())
        .await,
        "no alert for the account that stopped: {:?}",
        hook.received()
    );
    tokio::time::sleep(QUIET).await;
    let got = stops();
    assert_eq!(got.len(), 1, "one message per stop: {got:?}");
    let m = got[0].json();
    assert_eq!(m["schema"], 1);
    assert_eq!(m["event"], "incident");
    assert_eq!(m["incident"], "account_stopped");
    assert_eq!(m["account"], "ann");
    let title = m["title"].as_str().unwrap_or_default();
    assert!(
        title.contains("account ann stopped: state database"),
        "the title names the account and the error: {m:#}"
    );
    // Ben's account goes on.
    let b2 = jpeg("stop ben 2");
    std::fs::write(root("ben").join("2.jpg"), &b2).unwrap();
    assert!(
        eventually(Duration::from_secs(90), || has(&ben, &b2)).await,
        "Ben's files go on arriving"
    );
    d.token.cancel();
    let r = tokio::time::timeout(Duration::from_secs(20), d.handle)
        .await
        .expect("the daemon must stop within 20 s")
        .expect("the daemon task must not panic");
    let e = r.expect_err("a daemon with a failed account stops with an error");
    assert!(e.to_string().starts_with("account ann stopped"), "{e}");
    assert_eq!(stops().len(), 1, "the stop sends nothing more");
}

/// `[alerts]` set by a SIGHUP is taken by the agent and by every account that runs on:
/// the SIGHUP that adds the URL also adds Ben, whose state cannot be opened (a file where
/// his folder goes), and his `account_stopped` reaches the new URL. Once the file is gone
/// a SIGHUP that changes nothing starts him again: one `resolved` for his stop, and his
/// files arrive. Ann's account, running since before, then alerts an outage at that URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alerts_set_by_a_sighup_tell_a_stop_its_resolve_and_an_outage() {
    let hook = Listener::start(0).await;
    let mut w = World::new(Dialect::Immich).await;
    let (ann, ann_key) = w.user_with_root("ann");
    let (ben, ben_key) = w.user_with_root("ben");
    let root = |who: &str| w.dir.path().join(who);
    let has = |user: &str, bytes: &[u8]| {
        let want = sha1_hex(bytes);
        w.server.assets(user).iter().any(|a| a.checksum_hex == want)
    };
    let ann_part = account_table("ann", &ann_key, &root("ann"));
    w.extra = ann_part.clone();
    let d = w.start_reloading();
    let a1 = jpeg("reload alerts ann 1");
    std::fs::write(root("ann").join("1.jpg"), &a1).unwrap();
    assert!(
        eventually(Duration::from_secs(90), || has(&ann, &a1)).await,
        "Ann's first file"
    );
    let of = |event: &str, incident: &str| {
        hook.received()
            .into_iter()
            .map(|r| r.json())
            .filter(|m| m["event"] == event && m["incident"] == incident)
            .collect::<Vec<_>>()
    };

    std::fs::write(w.state_dir().join("accounts").join("ben"), b"not a folder").unwrap();
    w.extra = format!(
        "[alerts]\nurl = \"{}\"\noutage_after = \"1s\"\n{ann_part}{}",
        hook.url,
        account_table("ben", &ben_key, &root("ben"))
    );
    w.sighup(&d).await;
    assert!(
        eventually(Duration::from_secs(90), || !of(
            "incident",
            "account_stopped"
        )
        .is_empty())
        .await,
        "the new URL hears of Ben's stop: {:?}",
        hook.received()
    );
    let stop = &of("incident", "account_stopped")[0];
    assert_eq!(stop["account"], "ben", "{stop:#}");

    std::fs::remove_file(w.state_dir().join("accounts").join("ben")).unwrap();
    let b1 = jpeg("reload alerts ben 1");
    std::fs::write(root("ben").join("1.jpg"), &b1).unwrap();
    w.sighup(&d).await;
    assert!(
        eventually(Duration::from_secs(90), || has(&ben, &b1)).await,
        "Ben's account runs again"
    );
    assert!(
        eventually(Duration::from_secs(30), || !of(
            "resolved",
            "account_stopped"
        )
        .is_empty())
        .await,
        "no resolve of Ben's stop: {:?}",
        hook.received()
    );
    tokio::time::sleep(QUIET).await;
    let resolved = of("resolved", "account_stopped");
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    assert_eq!(resolved[0]["account"], "ben");
    assert!(
        resolved[0]["title"]
            .as_str()
            .is_some_and(|t| t.ends_with("resolved (account ben runs again)")),
        "{:#}",
        resolved[0]
    );
    assert_eq!(
        of("incident", "account_stopped").len(),
        1,
        "one stop, told once"
    );

    w.server.offline(true);
    // Enough failed uploads for the engine to call it an outage.
    for i in 2..7 {
        std::fs::write(
            root("ann").join(format!("{i}.jpg")),
            jpeg(&format!("reload alerts ann {i}")),
        )
        .unwrap();
    }
    assert!(
        eventually(Duration::from_secs(60), || of("incident", "outage")
            .iter()
            .any(|m| m["account"] == "ann"))
        .await,
        "Ann's account, running since before the SIGHUP, alerts at its URL: {:?}",
        hook.received()
    );
    w.server.offline(false);
    d.daemon.stop().await;
}
