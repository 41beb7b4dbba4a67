//! `immish-sync demo [FOLDER]`: the real daemon ([`crate::daemon::run`], what `run` runs)
//! against the in-repo test server started in this process on 127.0.0.1 (an OS-picked port),
//! with a generated config (mode 0600) and state in a fresh temporary directory.
//!
//! It backs up FOLDER, or a sample library it writes ([`sample`]), and prints what reached
//! the server as it arrives: each file's asset id, size, and whether the checksum the server
//! computed from the bytes it received equals the local file's SHA-1 (hashed again here, not
//! taken from the daemon). Then it keeps watching until SIGINT or SIGTERM and ends with a
//! summary; the counts of uploads come from the server's own records.
//!
//! Must not: reach anything but its own server (the generated config is loaded without the
//! `IMMISH_SYNC__*` environment, and a non-loopback URL is refused), write inside a FOLDER the
//! user named (the daemon opens roots read-only; the state lives in the temporary directory),
//! or delete a file it did not write (files the user dropped into the sample folder stay).

pub mod sample;

use std::collections::HashSet;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use immish_testserver::{ServerHandle, TestServer};
use tokio_util::sync::CancellationToken;

use crate::config::{self, ConfigError};
use crate::daemon::{self, DaemonError};
use crate::db::{self, catalogue, Db};
use crate::human;
use crate::model::JobState;
use crate::status;

/// How often the report looks at the server and the catalogue.
const TICK: Duration = Duration::from_millis(250);

/// What `demo` was asked to back up.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The user's folder; `None` writes the sample library.
    pub folder: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{}: {message}", path.display())]
    Folder { path: PathBuf, message: String },
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the demo server on 127.0.0.1: {0}")]
    Server(#[source] std::io::Error),
    #[error("the demo's generated config is refused: {0}")]
    Config(#[from] ConfigError),
    #[error("the demo server's URL {0} is not a loopback address: refusing to run")]
    NotLoopback(String),
    #[error(transparent)]
    Daemon(#[from] DaemonError),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DemoError {
    let path = path.to_path_buf();
    move |source| DemoError::Io { what, path, source }
}

/// Runs the demo until `shutdown` is cancelled (or the daemon stops with an error), printing
/// through `say` (whole lines, each ending in a newline).
pub async fn run(
    options: Options,
    say: &dyn Fn(&str),
    shutdown: CancellationToken,
) -> Result<(), DemoError> {
    let scratch = Scratch::create()?;
    let result = run_in(&scratch, options, say, shutdown).await;
    say(&scratch.remove());
    result
}

/// The temporary directory: config, state, and the sample library when there is one.
struct Scratch {
    dir: PathBuf,
    /// The files of the sample library, to remove at the end (only those).
    sample: std::sync::Mutex<Vec<PathBuf>>,
}

impl Scratch {
    /// `$TMPDIR/immish-sync-demo-XXXXXXXX`, private to the user.
    fn create() -> Result<Scratch, DemoError> {
        let base = std::env::temp_dir();
        loop {
            let dir = base.join(format!("immish-sync-demo-{:08x}", rand::random::<u32>()));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    return Ok(Scratch {
                        dir,
                        sample: Default::default(),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io("create a temporary directory in", &base)(e)),
            }
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    fn library(&self) -> PathBuf {
        self.dir.join("photos")
    }

    /// Removes what the demo wrote and says what is left.
    fn remove(&self) -> String {
        let _ = std::fs::remove_dir_all(self.state());
        let _ = std::fs::remove_file(self.config());
        let sample = std::mem::take(&mut *self.sample.lock().unwrap_or_else(|e| e.into_inner()));
        for f in &sample {
            let _ = std::fs::remove_file(f);
            // Folders of the library, once empty; a folder holding the user's files stays.
            let mut dir = f.parent();
            while let Some(d) = dir.filter(|d| d.starts_with(self.library())) {
                if std::fs::remove_dir(d).is_err() {
                    break;
                }
                dir = d.parent();
            }
        }
        if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
            format!(
                "removed {} (config, state, sample library)\n",
                self.dir.display()
            )
        } else {
            format!(
                "left {}: it holds files you added (the demo removes only what it wrote)\n",
                self.library().display()
            )
        }
    }
}

async fn run_in(
    scratch: &Scratch,
    options: Options,
    say: &dyn Fn(&str),
    shutdown: CancellationToken,
) -> Result<(), DemoError> {
    let started = Instant::now();
    let started_ms = db::now_ms();
    let (folder, own) = match &options.folder {
        Some(f) => (user_folder(f)?, true),
        None => (scratch.library(), false),
    };
    let server = TestServer::builder()
        .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .try_start()
        .await
        .map_err(DemoError::Server)?;
    let config = write_config(scratch, &server, &folder)?;

    say(&format!(
        "immish-sync demo: the real daemon (what `immish-sync run` runs) backs up a folder to \
         an Immich-compatible test server inside this process; nothing leaves this machine.\n\
         \x20 server: {url}  (immish-testserver, `{dialect}` dialect, in memory: gone when the \
         demo stops)\n\
         \x20         user {email} / {password}; see what it holds: curl -s {url}/__admin/assets\n\
         \x20 state:  {state}  (the daemon's catalogue and queue; removed at the end)\n",
        url = server.base_url(),
        dialect = server.dialect(),
        email = server.admin_email(),
        password = server.admin_password(),
        state = scratch.state().display(),
    ));
    if own {
        say(&format!(
            "  folder: {}  (yours: read only, nothing in it is changed, moved or deleted)\n",
            folder.display()
        ));
    } else {
        std::fs::create_dir(&folder).map_err(io("create", &folder))?;
        let files = sample::write(&folder).map_err(io("write the sample library in", &folder))?;
        *scratch.sample.lock().unwrap_or_else(|e| e.into_inner()) = files;
        let (photos, videos) = sample::counts();
        say(&format!(
            "  folder: {}  (a sample library written just now: {photos} JPEG photos with EXIF \
             dates, {videos} short video)\n",
            folder.display()
        ));
    }
    say(&format!("backing up {} ...\n", folder.display()));

    let daemon = tokio::spawn(daemon::run(config, shutdown.clone()));
    tokio::pin!(daemon);
    let mut report = Report::new(server.handle(), server.admin_id(), folder.clone(), scratch);
    let mut tick = tokio::time::interval(TICK);
    let ended_early = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break None,
            r = &mut daemon => break Some(r),
            _ = tick.tick() => {
                report.tick(say).await;
                report.first_pass(say, started_ms);
            }
        }
    };
    let ended = match ended_early {
        Some(r) => r,
        None => {
            say("stopping: the daemon finishes what it is doing ...\n");
            daemon.await
        }
    };
    // What arrived while stopping.
    report.tick(say).await;
    match ended {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => return Err(DaemonError::Task(e.to_string()).into()),
    }
    say(&report.summary(started.elapsed(), own));
    Ok(())
}

/// The folder the user named, as an absolute path, checked to be a readable directory.
fn user_folder(path: &Path) -> Result<PathBuf, DemoError> {
    let bad = |message: String| DemoError::Folder {
        path: path.to_path_buf(),
        message,
    };
    let abs = path
        .canonicalize()
        .map_err(|e| bad(format!("cannot use this folder: {e}")))?;
    if !abs.is_dir() {
        return Err(bad(
            "is not a folder: name a folder of photos and videos".into()
        ));
    }
    std::fs::read_dir(&abs).map_err(|e| bad(format!("cannot read this folder: {e}")))?;
    if abs.to_str().is_none() {
        return Err(bad(
            "the demo writes its config as TOML, which needs a UTF-8 path: name another folder"
                .into(),
        ));
    }
    Ok(abs)
}

/// A TOML string literal.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Writes the config (mode 0600: it holds the key) and loads it as the daemon would, but
/// without the process environment, so that no `IMMISH_SYNC__SERVER__URL` can point the demo
/// at a real server.
fn write_config(
    scratch: &Scratch,
    server: &TestServer,
    folder: &Path,
) -> Result<config::Config, DemoError> {
    let path = scratch.config();
    let state = scratch.state();
    let text = format!(
        "# Written by `immish-sync demo` for its in-process test server; removed when it stops.\n\
         [server]\nurl = {}\napi_key = {}\n\n[state]\ndir = {}\n\n[[roots]]\npath = {}\n",
        toml_str(&server.base_url()),
        toml_str(&server.api_key()),
        toml_str(&state.to_string_lossy()),
        toml_str(&folder.to_string_lossy()),
    );
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io("write", &path))?;
    file.write_all(text.as_bytes())
        .map_err(io("write", &path))?;
    let config = config::load_from_str(&text, &path, &[])?;
    if !config.server.url.is_loopback() {
        return Err(DemoError::NotLoopback(config.server.url.to_string()));
    }
    Ok(config)
}

/// What the demo has seen reach the server.
struct Report {
    server: ServerHandle,
    owner: String,
    folder: PathBuf,
    state_dir: PathBuf,
    db: Option<Db>,
    /// (path, asset id) pairs reported.
    seen: HashSet<(Vec<u8>, String)>,
    /// Assets reported as uploaded.
    assets: HashSet<String>,
    uploaded_bytes: u64,
    /// Files reported whose checksum matched the server's / did not.
    matched: usize,
    mismatched: usize,
    /// Files linked to an asset another file had uploaded.
    linked: usize,
    first_pass_said: bool,
    paused_said: bool,
}

impl Report {
    fn new(server: ServerHandle, owner: String, folder: PathBuf, scratch: &Scratch) -> Report {
        Report {
            server,
            owner,
            folder,
            state_dir: scratch.state(),
            db: None,
            seen: HashSet::new(),
            assets: HashSet::new(),
            uploaded_bytes: 0,
            matched: 0,
            mismatched: 0,
            linked: 0,
            first_pass_said: false,
            paused_said: false,
        }
    }

    /// Reports every file newly linked to an asset, with what the server holds for it.
    async fn tick(&mut self, say: &dyn Fn(&str)) {
        if self.db.is_none() {
            let path = self.state_dir.join(db::DB_FILE);
            if !path.exists() {
                return;
            }
            match Db::open_readonly(&path) {
                Ok(d) => self.db = Some(d),
                Err(e) => {
                    tracing::debug!(error = %e, "the state database is not readable yet");
                    return;
                }
            }
        }
        let Some(db) = &self.db else { return };
        let linked = match db.call(|c| catalogue::linked_files(c)).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the catalogue");
                return;
            }
        };
        for (path, id) in linked {
            let key = (path, id);
            if self.seen.contains(&key) {
                continue;
            }
            // The daemon's word is not enough: the asset must be on the server.
            let Some(asset) = self.server.asset(&key.1) else {
                continue;
            };
            let local = PathBuf::from(std::ffi::OsStr::from_bytes(&key.0));
            let shown = local
                .strip_prefix(&self.folder)
                .unwrap_or(&local)
                .display()
                .to_string();
            let check = {
                let local = local.clone();
                tokio::task::spawn_blocking(move || {
                    crate::hash::hash_file(&local, &CancellationToken::new())
                })
                .await
            };
            let verdict = match check {
                Ok(Ok((sum, _))) if sum.to_hex() == asset.checksum_hex => {
                    self.matched += 1;
                    "checksum matches the local file".to_string()
                }
                Ok(Ok((sum, _))) => {
                    self.mismatched += 1;
                    format!(
                        "CHECKSUM DIFFERS: the server has {}, the local file is {sum} now",
                        asset.checksum_hex
                    )
                }
                Ok(Err(e)) => format!("cannot read the local file again: {e}"),
                Err(e) => format!("cannot hash the local file: {e}"),
            };
            if self.assets.insert(asset.id.clone()) {
                self.uploaded_bytes += asset.size;
                let name = if local.file_name().map(|n| n.as_bytes())
                    == Some(asset.original_file_name.as_bytes())
                {
                    String::new()
                } else {
                    format!(", named {:?} there", asset.original_file_name)
                };
                say(&format!(
                    "uploaded {shown} → asset {} ({}{name}; {verdict})\n",
                    asset.id,
                    human::size(asset.size)
                ));
            } else {
                self.linked += 1;
                say(&format!(
                    "{shown}: the same bytes are already on the server as asset {}: linked, \
                     not uploaded again ({verdict})\n",
                    asset.id
                ));
            }
            self.seen.insert(key);
        }
    }

    /// Once the first scan is over and nothing waits, says so and how to go on.
    fn first_pass(&mut self, say: &dyn Fn(&str), started_ms: i64) {
        if self.first_pass_said {
            return;
        }
        let Ok(Some(st)) = status::read(&self.state_dir) else {
            return;
        };
        let root = st.roots.iter().find(|r| Path::new(&r.path) == self.folder);
        match root.map(|r| &r.state) {
            Some(db::meta::RootState::Paused { reason }) if !self.paused_said => {
                self.paused_said = true;
                say(&format!(
                    "the daemon paused {}: {reason} (an empty or missing folder looks like an \
                     unmounted disk; drop a file in and it resumes)\n",
                    self.folder.display()
                ));
                return;
            }
            Some(db::meta::RootState::Ok { at_ms: Some(at) }) if *at >= started_ms => {}
            _ => return,
        }
        let pending: i64 = [
            JobState::Queued,
            JobState::Hashing,
            JobState::Checking,
            JobState::Uploading,
            JobState::Verifying,
            JobState::Retry,
        ]
        .iter()
        .map(|s| st.count(*s))
        .sum();
        let done = st.count(JobState::Done);
        if pending > 0 || done > self.seen.len() as i64 {
            return;
        }
        self.first_pass_said = true;
        let skipped = st.count(JobState::Skipped);
        let failed = st.count(JobState::Failed);
        let mut line = format!(
            "first pass done: {} files on the server ({} assets), {failed} failed",
            done,
            self.server.asset_count(&self.owner),
        );
        if skipped > 0 {
            line.push_str(&format!(", {skipped} skipped (not photos or videos)"));
        }
        line.push('\n');
        for f in &st.failures {
            line.push_str(&format!(
                "  failed: {}: {}\n",
                f.path,
                f.reason.as_deref().unwrap_or("no reason recorded")
            ));
        }
        line.push_str(&format!(
            "watching {}: drop a photo or video into it (or a folder of them) and it goes up \
             once it has stopped changing for a few seconds. Ctrl-C stops the demo.\n",
            self.folder.display()
        ));
        say(&line);
    }

    /// The closing summary: what the server holds and received, against what was reported.
    fn summary(&self, elapsed: Duration, own: bool) -> String {
        let uploads = self.server.uploads();
        let created = uploads.iter().filter(|u| u.status == 201).count();
        let assets = self.server.asset_count(&self.owner);
        let mut out = format!(
            "demo stopped after {}.\n  the server holds {assets} assets ({}), from {created} \
             uploads: ",
            human::duration(elapsed),
            human::size(self.uploaded_bytes),
        );
        out.push_str(if created == assets {
            "each file went up once\n"
        } else {
            "not one upload per asset (see above)\n"
        });
        out.push_str(&format!(
            "  checksums matching the local files: {} of {}\n",
            self.matched,
            self.matched + self.mismatched
        ));
        if self.linked > 0 {
            out.push_str(&format!(
                "  files with the same bytes as another, linked without a second upload: {}\n",
                self.linked
            ));
        }
        if let Ok(Some(st)) = status::read(&self.state_dir) {
            let queued = st.count(JobState::Queued) + st.count(JobState::Retry);
            out.push_str(&format!(
                "  not on the server: {} failed, {} skipped (not photos or videos), {queued} \
                 still queued\n",
                st.count(JobState::Failed),
                st.count(JobState::Skipped),
            ));
        }
        if own {
            out.push_str(&format!(
                "  {} was only read; nothing in it was changed\n",
                self.folder.display()
            ));
        }
        out.push_str(
            "to back up to your own server: `immish-sync init`, then `immish-sync run` \
             (README.md, \"Setting up\")\n",
        );
        out
    }
}
