//! `immish-sync demo` as a newcomer meets it: the binary, its own test server inside it, a
//! folder (theirs or the sample library), the report on stdout, a file dropped in while it
//! watches, Ctrl-C (SIGINT) or SIGTERM. What reached the server is read from the demo's
//! server through its `/__admin/` routes, not from what the demo prints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::{jpeg, mp4, sha1_hex};

const BIN: &str = env!("CARGO_BIN_EXE_immish-sync");

/// How long any one expected line may take (the first pass of a debug build on a busy
/// 2-core machine included).
const LIMIT: Duration = Duration::from_secs(90);

/// The demo binary running, its stdout read line by line.
struct Demo {
    child: tokio::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    /// Every line read so far.
    out: Vec<String>,
    stderr: PathBuf,
}

impl Demo {
    /// Starts `demo [folder]` with its temporary directory under `tmp`. The environment
    /// points the config at a dead loopback port: the demo must not read it.
    fn start(tmp: &Path, folder: Option<&Path>) -> Demo {
        let stderr = tmp.join("demo.stderr");
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg("demo")
            .args(folder)
            .env("TMPDIR", tmp)
            .env("IMMISH_SYNC__SERVER__URL", "http://127.0.0.1:1")
            .env("IMMISH_SYNC__STATE__DIR", tmp.join("not-the-demo-state"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("start immish-sync demo");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Demo {
            child,
            lines,
            out: Vec::new(),
            stderr,
        }
    }

    fn transcript(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.out.join("\n"),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    /// Waits for a line of stdout that starts with `prefix` (seen before or coming).
    async fn line(&mut self, prefix: &str) -> String {
        if let Some(l) = self.out.iter().find(|l| l.starts_with(prefix)) {
            return l.clone();
        }
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(l)) => {
                    self.out.push(l.clone());
                    if l.starts_with(prefix) {
                        return l;
                    }
                }
                Ok(None) => panic!(
                    "the demo ended before printing {prefix:?}\n{}",
                    self.transcript()
                ),
                Err(_) => panic!("no {prefix:?} within {LIMIT:?}\n{}", self.transcript()),
            }
        }
    }

    /// The value after `  label: ` in the banner, up to the first blank.
    async fn banner(&mut self, label: &str) -> String {
        let line = self.line(&format!("  {label}: ")).await;
        line.split_whitespace().nth(1).unwrap().to_string()
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.child.id().expect("the demo is running") as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    /// Waits for the exit (and the end of stdout), returning the status.
    async fn finish(&mut self) -> ExitStatus {
        let status = tokio::time::timeout(LIMIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the demo must stop\n{}", self.transcript()))
            .unwrap();
        while let Ok(Some(l)) = tokio::time::timeout(LIMIT, self.lines.recv()).await {
            self.out.push(l);
        }
        status
    }
}

/// `GET {url}/__admin/{route}` as JSON.
async fn admin(url: &str, route: &str) -> Value {
    reqwest::get(format!("{url}/__admin/{route}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The asset id in `uploaded X → asset ID (...)`.
fn asset_id(line: &str) -> String {
    line.split("→ asset ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no asset id in {line:?}"))
        .to_string()
}

/// Every file under `dir` with its bytes and modification time.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = std::fs::metadata(&p).unwrap();
        out.insert(
            p.clone(),
            (std::fs::read(&p).unwrap(), m.modified().unwrap()),
        );
    }
    out
}

/// Writes a file whose modification time is a minute ago, as a copied-in photo has: it is
/// settled when the daemon first sees it.
fn put_old(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(60))
        .unwrap();
}

/// No `immish-sync-demo-*` directory is left under `tmp`.
fn scratch_dirs(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("immish-sync-demo-")
        })
        .collect()
}

/// The user's folder with two files: both are reported with their asset ids; a third dropped
/// in while the demo watches goes up once and is reported; SIGINT ends it with exit 0 and a
/// summary counting three uploads; the folder is as it was, plus the dropped file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_backs_up_a_folder_then_reports_a_dropped_file_and_stops_on_sigint() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("my photos");
    std::fs::create_dir(&folder).unwrap();
    put_old(&folder.join("a.jpg"), &jpeg("demo a"));
    put_old(&folder.join("b.mp4"), &mp4("demo b"));
    let before = snapshot(&folder);

    let mut demo = Demo::start(tmp.path(), Some(&folder));
    let url = demo.banner("server").await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let shown = demo.line("  folder: ").await;
    assert!(
        shown.contains(&folder.canonicalize().unwrap().display().to_string()),
        "says where the folder is: {shown}"
    );
    let a = asset_id(&demo.line("uploaded a.jpg → asset ").await);
    let b = asset_id(&demo.line("uploaded b.mp4 → asset ").await);
    demo.line("watching ").await;

    let c_bytes = jpeg("demo c, dropped in");
    std::fs::write(folder.join("c.jpg"), &c_bytes).unwrap();
    let line = demo.line("uploaded c.jpg → asset ").await;
    assert!(line.contains("checksum matches the local file"), "{line}");
    let c = asset_id(&line);

    // The server's own records: c.jpg went up once, as the asset the demo named, with the
    // dropped file's bytes; a and b are there as reported.
    let uploads = admin(&url, "uploads").await;
    let of_c: Vec<&Value> = uploads
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| {
            u["parts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["fileName"] == "c.jpg")
        })
        .collect();
    assert_eq!(of_c.len(), 1, "c.jpg is uploaded exactly once: {uploads:#}");
    assert_eq!(of_c[0]["status"], 201);
    assert_eq!(of_c[0]["assetId"], c.as_str());
    let assets = admin(&url, "assets").await;
    let by_name: BTreeMap<String, &Value> = assets
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["originalFileName"].as_str().unwrap().to_string(), a))
        .collect();
    assert_eq!(
        by_name.keys().collect::<Vec<_>>(),
        ["a.jpg", "b.mp4", "c.jpg"],
        "{assets:#}"
    );
    assert_eq!(by_name["a.jpg"]["id"], a.as_str());
    assert_eq!(by_name["b.mp4"]["id"], b.as_str());
    assert_eq!(by_name["c.jpg"]["id"], c.as_str());
    assert_eq!(by_name["c.jpg"]["checksumHex"], sha1_hex(&c_bytes).as_str());

    demo.signal(libc::SIGINT);
    let status = demo.finish().await;
    assert_eq!(status.code(), Some(0), "{}", demo.transcript());
    let all = demo.out.join("\n");
    assert!(all.contains("demo stopped after"), "{all}");
    assert!(
        all.contains("the server holds 3 assets") && all.contains("from 3 uploads"),
        "the summary counts what the server holds: {all}"
    );
    assert!(
        all.contains("checksums matching the local files: 3 of 3"),
        "{all}"
    );

    let mut after = snapshot(&folder);
    let dropped = after.remove(&folder.join("c.jpg")).expect("c.jpg is left");
    assert_eq!(dropped.0, c_bytes);
    assert_eq!(after, before, "the user's files are untouched");
    assert!(
        scratch_dirs(tmp.path()).is_empty(),
        "the temporary config and state are removed"
    );
    assert!(
        !tmp.path().join("not-the-demo-state").exists(),
        "the environment's state dir is not used"
    );
}

/// Without a folder: the generated JPEGs (640x480, EXIF dates the server reads) and the
/// shipped video reach the server, each once; a file the user drops into the sample folder
/// goes up too, and is left there after SIGTERM while the generated files are removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_uploads_the_sample_library_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let mut demo = Demo::start(tmp.path(), None);
    let url = demo.banner("server").await;
    let folder = PathBuf::from(demo.banner("folder").await);
    demo.line("first pass done: 7 files on the server").await;
    let uploaded = demo
        .out
        .iter()
        .filter(|l| l.starts_with("uploaded "))
        .count();
    assert_eq!(uploaded, 7, "{}", demo.transcript());

    let video = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo/sample.mp4"))
        .unwrap();
    // The metadata job runs shortly after each upload: wait until it has for all of them.
    let mut assets = Value::Null;
    for _ in 0..200 {
        assets = admin(&url, "assets").await;
        let list = assets.as_array().unwrap();
        if list.len() == 7 && list.iter().all(|a| a["metadataExtracted"] == true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let list = assets.as_array().unwrap();
    assert_eq!(list.len(), 7, "{assets:#}");
    let (videos, photos): (Vec<&Value>, Vec<&Value>) =
        list.iter().partition(|a| a["assetType"] == "VIDEO");
    assert_eq!(videos.len(), 1, "{assets:#}");
    assert_eq!(videos[0]["size"], video.len() as u64);
    assert_eq!(videos[0]["checksumHex"], sha1_hex(&video).as_str());
    assert_eq!(photos.len(), 6, "{assets:#}");
    for p in &photos {
        assert_eq!(
            (&p["width"], &p["height"]),
            (&640.into(), &480.into()),
            "{p:#}"
        );
    }
    let lake = photos
        .iter()
        .find(|p| p["originalFileName"] == "IMG_0001.jpg")
        .expect("IMG_0001.jpg is on the server");
    assert_eq!(
        lake["fileCreatedAt"], "2019-07-04T16:30:00.000Z",
        "the server read the EXIF date (18:30 at +02:00): {lake:#}"
    );
    let uploads = admin(&url, "uploads").await;
    assert_eq!(
        uploads.as_array().unwrap().len(),
        7,
        "one upload each: {uploads:#}"
    );

    let mine = folder.join("mine.jpg");
    std::fs::write(&mine, jpeg("the user's own")).unwrap();
    demo.line("uploaded mine.jpg → asset ").await;

    demo.signal(libc::SIGTERM);
    let status = demo.finish().await;
    assert_eq!(status.code(), Some(0), "{}", demo.transcript());
    let all = demo.out.join("\n");
    assert!(all.contains("the server holds 8 assets"), "{all}");
    assert!(mine.exists(), "the user's file stays: {all}");
    let left: Vec<PathBuf> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        left,
        std::slice::from_ref(&mine),
        "the generated files and folders are gone"
    );
    assert!(
        all.contains(&format!("left {}", folder.display())),
        "says what it left: {all}"
    );
}

/// A folder that does not exist: exit 1, the path named, nothing left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_of_a_missing_folder_names_it_and_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no such folder");
    let out = std::process::Command::new(BIN)
        .arg("demo")
        .arg(&missing)
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(scratch_dirs(tmp.path()).is_empty());
}

/// The shipped video is small and whole by the daemon's own completeness check.
#[test]
fn the_demo_video_is_small_and_complete() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo/sample.mp4");
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len < 200 * 1024, "{len} bytes");
    assert_eq!(
        immish_sync::complete::check_file(&path, len).unwrap(),
        immish_sync::complete::Completeness::Complete
    );
}
