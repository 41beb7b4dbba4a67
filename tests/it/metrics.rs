//! Issue 10: `status --json`, and the daemon's HTTP endpoint (`[metrics] listen`):
//! `/metrics` read as Prometheus text, `/healthz` through an outage, the status page in a
//! real headless Chromium, and the rules for listening beyond loopback
//! (docs/STATUS.md#http-endpoint).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use immish_testserver::{Dialect, Failure};

use crate::common::{jpeg, RunningDaemon, World};

const BIN: &str = env!("CARGO_BIN_EXE_immish-sync");

/// The endpoint on a port the system picks; `status` learns it from the daemon.
const LISTEN: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";

fn status_json(w: &World) -> serde_json::Value {
    let out = Command::new(BIN)
        .arg("--config")
        .arg(w.config_path())
        .args(["status", "--json"])
        .stdin(Stdio::null())
        .output()
        .expect("run immish-sync");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("status --json: {e}\n{stdout}"))
}

/// Polls `cond` (async) every 100 ms until it holds or `limit` passes.
async fn until<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The address the running daemon's endpoint is bound to, as `status --json` tells it.
async fn endpoint(w: &World) -> SocketAddr {
    let mut addr = None;
    // Generous: the live record starts after the daemon connected, on a loaded machine.
    let found = until(Duration::from_secs(90), || {
        let v = immish_sync::status::read(&w.state_dir()).ok().flatten();
        addr = v
            .and_then(|s| s.activity)
            .and_then(|a| a.live.http)
            .and_then(|h| h.parse().ok());
        std::future::ready(addr.is_some())
    })
    .await;
    assert!(found, "the daemon never recorded its HTTP address");
    addr.unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut req = client().get(format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("the endpoint answers");
    let code = resp.status().as_u16();
    (code, resp.text().await.unwrap_or_default())
}

/// The Prometheus text format, read strictly enough to catch a broken exposition: every
/// sample's family has `# TYPE` before it, names and label values are well formed, values
/// are numbers, and no sample appears twice. Keyed by `name{labels}` as written.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let at = || format!("line {}: {line:?}", i + 1);
        if line.is_empty() || line.starts_with("# HELP ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("{}", at()));
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{}",
                at()
            );
            assert!(
                types.insert(name.into(), kind.into()).is_none(),
                "TYPE twice: {}",
                at()
            );
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment {}", at());
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{}", at()));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value: {}", at()));
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "name: {}",
            at()
        );
        assert!(name.starts_with("immish_sync_"), "prefix: {}", at());
        let family = name
            .strip_suffix("_total")
            .filter(|f| types.contains_key(*f));
        assert!(
            types.contains_key(name) || family.is_some(),
            "a sample before its # TYPE: {}",
            at()
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                let inner = labels
                    .strip_prefix('{')
                    .and_then(|l| l.strip_suffix('}'))
                    .unwrap_or_else(|| panic!("labels: {}", at()));
                for pair in split_labels(inner) {
                    let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{}", at()));
                    assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                    assert!(
                        v.starts_with('"') && v.ends_with('"') && v.len() >= 2,
                        "{}",
                        at()
                    );
                }
            }
        }
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "sample twice: {}",
            at()
        );
    }
    samples
}

/// `a="x",b="y, z"` → the pairs, commas inside quotes kept.
fn split_labels(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut escaped) = (Vec::new(), String::new(), false, false);
    for c in s.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

async fn metrics(addr: SocketAddr) -> BTreeMap<String, f64> {
    let (code, text) = get(addr, "/metrics", None).await;
    assert_eq!(code, 200, "{text}");
    parse_prometheus(&text)
}

/// Three photos and one that the server refuses for good: `status --json` shows them per
/// root and in total, with the failure's reason, the server's version, and the last pull.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_describes_a_known_state() {
    let mut w = World::new(Dialect::Immich).await;
    w.upload = "concurrency = 1".into();
    let mut bytes = 0;
    for i in 0..4 {
        bytes += w
            .write(format!("IMG_{i}.jpg"), &jpeg(&format!("json-{i}")))
            .metadata()
            .unwrap()
            .len();
    }
    w.write_config();
    w.server.fail_with("POST /assets", 1, Failure::nginx_413());
    let out = Command::new(BIN)
        .arg("--config")
        .arg(w.config_path())
        .arg("scan")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "one file failed");

    let v = status_json(&w);
    assert_eq!(v["schema"], 1);
    assert!(v["daemon"].is_null(), "{v:#}");
    assert!(v["activity"].is_null(), "no daemon, nothing live: {v:#}");
    assert_eq!(v["server"], w.server.api_url());
    assert_eq!(v["server_info"]["dialect"], "immich");
    assert!(v["server_info"]["version"].as_str().is_some(), "{v:#}");
    assert_eq!(v["connection"]["state"], "connected");
    assert!(v["last_pull"]["at_ms"].as_i64().is_some(), "{v:#}");
    assert!(v["last_success_ms"].as_i64().is_some());
    assert!(v["paused"].is_null());
    let root = &v["roots"][0];
    assert_eq!(root["path"], w.root().display().to_string());
    assert_eq!(root["paused"], false);
    assert_eq!(root["state"], "ok");
    assert_eq!(root["files"], 4, "{root:#}");
    assert_eq!(root["backed_up"], 3, "{root:#}");
    assert_eq!(root["failed"], 1, "{root:#}");
    assert_eq!(root["queued"], 0);
    assert_eq!(root["held_back"], 0);
    assert_eq!(root["waiting"], 0);
    assert_eq!(root["bytes"], bytes);
    assert_eq!(root["backed_up_bytes"].as_u64().unwrap(), bytes / 4 * 3);
    let failure = &v["failures"][0];
    assert_eq!(failure["state"], "failed");
    assert!(
        failure["reason"]
            .as_str()
            .is_some_and(|r| r.contains("413")),
        "{failure:#}"
    );
    let counts: BTreeMap<String, i64> = v["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["state"].as_str().unwrap().to_owned(),
                c["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counts["done"], 3);
    assert_eq!(counts["failed"], 1);

    // A running daemon says what it does, where its endpoint is, and since when it runs.
    w.extra = LISTEN.into();
    let d = w.start_daemon();
    let addr = endpoint(&w).await;
    let v = status_json(&w);
    assert_eq!(v["daemon"]["pid"], std::process::id());
    assert_eq!(v["activity"]["http"], addr.to_string());
    assert_eq!(v["activity"]["stale"], false);
    assert!(v["activity"]["doing"]
        .as_str()
        .is_some_and(|d| !d.is_empty()));
    let (code, body) = get(addr, "/status.json", None).await;
    assert_eq!(code, 200);
    let served: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(served["roots"][0]["backed_up"], 3);
    d.stop().await;
}

/// `/metrics` counts exactly what reached the server: files, bytes, states and the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_was_uploaded() {
    let mut w = World::new(Dialect::Immich).await;
    w.extra = LISTEN.into();
    let mut bytes = 0;
    for i in 0..3 {
        bytes += w
            .write(format!("a/IMG_{i}.jpg"), &jpeg(&format!("metrics-{i}")))
            .metadata()
            .unwrap()
            .len();
    }
    let d = w.start_daemon();
    let addr = endpoint(&w).await;
    let admin = w.server.admin_id();
    let root_key = format!(
        "immish_sync_root_files{{account=\"default\",root=\"{}\"}}",
        w.root().display()
    );
    let done = until(Duration::from_secs(30), || async {
        let m = metrics(addr).await;
        m.get("immish_sync_uploaded_files_total{account=\"default\"}") == Some(&3.0)
            && m.get("immish_sync_queue_depth{account=\"default\"}") == Some(&0.0)
    })
    .await;
    assert!(done, "never counted 3 uploads: {:?}", metrics(addr).await);
    assert_eq!(w.server.asset_count(&admin), 3);
    let m = metrics(addr).await;
    assert_eq!(
        m["immish_sync_uploaded_bytes_total{account=\"default\"}"],
        bytes as f64
    );
    assert_eq!(
        m["immish_sync_uploaded_bytes_total{account=\"default\"}"],
        w.server.upload_file_bytes() as f64,
        "the bytes the server stored"
    );
    assert_eq!(
        m["immish_sync_files{account=\"default\",state=\"done\"}"],
        3.0
    );
    assert_eq!(
        m["immish_sync_files{account=\"default\",state=\"failed\"}"],
        0.0
    );
    assert_eq!(m[&root_key], 3.0);
    assert_eq!(
        m["immish_sync_errors_total{account=\"default\",kind=\"permanent\"}"],
        0.0
    );
    assert_eq!(m["immish_sync_healthy"], 1.0);
    assert_eq!(m["immish_sync_outage{account=\"default\"}"], 0.0);
    assert_eq!(
        m["immish_sync_paused{account=\"default\",by=\"user\"}"],
        0.0
    );
    let last = m["immish_sync_last_success_timestamp_seconds{account=\"default\"}"];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(last > now - 120.0 && last <= now + 1.0, "{last} vs {now}");
    d.stop().await;
}

async fn health(addr: SocketAddr) -> (u16, String) {
    get(addr, "/healthz", None).await
}

/// Polls `/healthz` until it answers `code` or `limit` passes; returns the last answer.
async fn health_becomes(addr: SocketAddr, code: u16, limit: Duration) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let last = health(addr).await;
        if last.0 == code || tokio::time::Instant::now() >= deadline {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `/healthz` is 200 while the daemon backs up, 503 naming the outage while the server is
/// offline, and 200 again when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_503_while_the_server_is_offline() {
    let mut w = World::new(Dialect::Immich).await;
    w.extra = LISTEN.into();
    w.write("IMG_0.jpg", &jpeg("health-0"));
    let d = w.start_daemon();
    let addr = endpoint(&w).await;
    let admin = w.server.admin_id();
    assert!(
        until(Duration::from_secs(30), || async {
            w.server.asset_count(&admin) == 1
        })
        .await
    );
    let (code, body) = health(addr).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("ok"), "{body}");

    w.server.offline(true);
    // New files make the engine meet the outage.
    for i in 1..6 {
        w.write(format!("IMG_{i}.jpg"), &jpeg(&format!("health-{i}")));
    }
    let last = health_becomes(addr, 503, Duration::from_secs(30)).await;
    assert_eq!(last.0, 503, "healthz never said 503: {last:?}");
    assert!(last.1.contains("outage"), "the reason is named: {}", last.1);
    assert_eq!(
        metrics(addr).await["immish_sync_outage{account=\"default\"}"],
        1.0
    );

    w.server.offline(false);
    let last = health_becomes(addr, 200, Duration::from_secs(60)).await;
    assert_eq!(last.0, 200, "healthz never recovered: {last:?}");
    assert!(
        until(Duration::from_secs(60), || async {
            w.server.asset_count(&admin) == 6
        })
        .await
    );
    d.stop().await;
}

/// Chromium, if installed (Debian's `chromium`; `.ci/run` installs it).
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// The status page, rendered by a real browser, shows the counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_counts_in_chromium() {
    let Some(browser) = chromium() else {
        eprintln!(
            "\n\n!!! SKIPPED the_status_page_shows_the_counts_in_chromium: no chromium \
             installed (apt-get install chromium) !!!\n\n"
        );
        return;
    };
    let mut w = World::new(Dialect::Immich).await;
    w.extra = LISTEN.into();
    w.upload = "concurrency = 1".into();
    for i in 0..3 {
        w.write(format!("IMG_{i}.jpg"), &jpeg(&format!("page-{i}")));
    }
    w.server.fail_with("POST /assets", 1, Failure::nginx_413());
    let d: RunningDaemon = w.start_daemon();
    let addr = endpoint(&w).await;
    let settled = until(Duration::from_secs(30), || async {
        let m = metrics(addr).await;
        m.get("immish_sync_files{account=\"default\",state=\"done\"}") == Some(&2.0)
            && m.get("immish_sync_files{account=\"default\",state=\"failed\"}") == Some(&1.0)
    })
    .await;
    assert!(settled, "{:?}", metrics(addr).await);

    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{addr}/");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--virtual-time-budget=2000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--dump-dom")
            .arg(&url)
            .stdin(Stdio::null())
            .output()
    })
    .await
    .unwrap()
    .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && dom.contains("<title>immish-sync status</title>"),
        "chromium: {}\n{dom}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (id, n) in [("backed_up", 2), ("failed", 1), ("queued", 0)] {
        let cell = dom
            .split(&format!("id=\"{id}\""))
            .nth(1)
            .and_then(|rest| rest.split('>').nth(1))
            .and_then(|t| t.split('<').next())
            .unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"));
        assert_eq!(cell.trim(), n.to_string(), "#{id} in\n{dom}");
    }
    assert!(dom.contains(&w.root().display().to_string()), "{dom}");
    assert!(dom.contains("413"), "the failure's reason: {dom}");
    assert!(dom.contains("http-equiv=\"refresh\""), "{dom}");
    d.stop().await;
}

fn load_with(w: &World, extra: &str) -> Result<immish_sync::config::Config, String> {
    let mut text = std::fs::read_to_string(w.config_path()).unwrap();
    text.push_str(extra);
    let path = w.dir.path().join("remote.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    immish_sync::config::load(&path).map_err(|e| e.to_string())
}

fn write_token(dir: &Path, token: &str) -> String {
    let p = dir.join("metrics-token");
    std::fs::write(&p, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.display().to_string()
}

/// An address beyond loopback is refused without `allow_remote`, and without a token even
/// with it; the error names the key. With a token, a request without it gets 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_listen_needs_allow_remote_and_a_token() {
    let mut w = World::new(Dialect::Immich).await;
    w.write_config();
    let e = load_with(&w, "[metrics]\nlisten = \"0.0.0.0:9464\"\n").unwrap_err();
    assert!(
        e.contains("metrics.listen") && e.contains("allow_remote"),
        "{e}"
    );
    assert!(e.contains("remote.toml:"), "names the file and line: {e}");
    let e = load_with(
        &w,
        "[metrics]\nlisten = \"0.0.0.0:9464\"\nallow_remote = true\n",
    )
    .unwrap_err();
    assert!(e.contains("metrics.token_file"), "{e}");
    let e = load_with(&w, "[metrics]\nlisten = \"not an address\"\n").unwrap_err();
    assert!(e.contains("metrics.listen"), "{e}");
    let token = write_token(w.dir.path(), "s3cret-token");
    let c = load_with(
        &w,
        &format!(
            "[metrics]\nlisten = \"0.0.0.0:9464\"\nallow_remote = true\ntoken_file = \"{token}\"\n"
        ),
    )
    .expect("remote with a token is allowed");
    assert_eq!(c.metrics.listen.unwrap().to_string(), "0.0.0.0:9464");

    // The token is asked for on loopback too once set.
    w.extra = format!("[metrics]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{token}\"\n");
    let d = w.start_daemon();
    let addr = endpoint(&w).await;
    for path in ["/", "/metrics", "/healthz", "/status.json"] {
        assert_eq!(get(addr, path, None).await.0, 401, "{path}");
        assert_eq!(get(addr, path, Some("wrong")).await.0, 401, "{path}");
    }
    let (code, body) = get(addr, "/metrics", Some("s3cret-token")).await;
    assert_eq!(code, 200, "{body}");
    parse_prometheus(&body);
    d.stop().await;
}
