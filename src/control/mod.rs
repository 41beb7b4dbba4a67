//! Talking to the running daemon: `pause`, `resume`, `rescan` and `retry`
//! (docs/ARCHITECTURE.md#control).
//!
//! Owns: the control socket (`<state dir>/control.sock`, mode 0600, one JSON line asked and
//! one answered), what the daemon does on each message, and the commands' side of it. The
//! state database is the truth: a command writes its change there itself (so that it holds
//! with no daemon running, and after a restart), then tells a running daemon over the
//! socket to look again now. A daemon that cannot be reached still picks the change up at
//! its next start (a pause) or within its idle look (`retry`, 30 s).
//!
//! Must not: hold any state of its own that the database does not also have, or let a
//! client that sends nothing, or garbage, hold up or stop the daemon.

pub mod accounts;
pub mod reload;

use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db::{self, meta, now_ms, Db, DbError};
use crate::lock;
use crate::pipeline::{Hold, Holds, Waker};

/// The socket's file name in the state directory.
pub const SOCKET_FILE: &str = "control.sock";
/// The longest request line read.
const MAX_LINE: u64 = 64 * 1024;
/// How long either side waits for the other.
const TALK_TIMEOUT: Duration = Duration::from_secs(5);

/// One request on the socket.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// The user's pauses changed in the database: read them again.
    Pauses,
    /// Jobs were queued again: look at the queue now.
    Retry,
    /// Walk every root, or one, now.
    Rescan {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        root: Option<PathBuf>,
    },
}

/// The daemon's answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    pub message: String,
}

/// Rescans asked for and not started yet: every root (`all`) or some.
#[derive(Debug, Default)]
struct Asked {
    all: bool,
    roots: Vec<PathBuf>,
}

/// Rescans asked for over the socket; the daemon's scanner loop waits on them beside its
/// interval. Cheap to clone; outlives the daemon's generations.
#[derive(Clone, Debug, Default)]
pub struct Rescans {
    asked: Arc<Mutex<Asked>>,
    notify: Arc<Notify>,
}

/// Which roots a rescan was asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum RescanOf {
    All,
    Roots(Vec<PathBuf>),
}

impl Rescans {
    pub fn ask(&self, root: Option<PathBuf>) {
        {
            let mut a = self.asked.lock().unwrap_or_else(|p| p.into_inner());
            match root {
                None => a.all = true,
                Some(r) if !a.roots.contains(&r) => a.roots.push(r),
                Some(_) => {}
            }
        }
        self.notify.notify_one();
    }

    /// Waits until a rescan is asked for, and takes it.
    pub async fn asked(&self) -> RescanOf {
        loop {
            if let Some(r) = self.take() {
                return r;
            }
            self.notify.notified().await;
        }
    }

    fn take(&self) -> Option<RescanOf> {
        let mut a = self.asked.lock().unwrap_or_else(|p| p.into_inner());
        let taken = std::mem::take(&mut *a);
        if taken.all {
            Some(RescanOf::All)
        } else if !taken.roots.is_empty() {
            Some(RescanOf::Roots(taken.roots))
        } else {
            None
        }
    }
}

/// The engine's holds for the user's pauses as stored.
pub fn holds_of(p: &meta::UserPauses) -> Holds {
    Holds {
        all: p.all_since_ms.is_some(),
        roots: p.roots.iter().map(|r| r.path.as_bytes().to_vec()).collect(),
    }
}

/// What the daemon's side of the socket acts on.
#[derive(Clone)]
pub struct Control {
    pub db: Db,
    pub hold: Hold,
    pub waker: Waker,
    pub rescans: Rescans,
}

impl Control {
    /// Reads the user's pauses from the database into the engine's holds.
    pub async fn load_pauses(&self) -> Result<meta::UserPauses, DbError> {
        let pauses = self.db.call(|c| meta::user_pauses(c)).await?;
        self.hold.set(holds_of(&pauses));
        Ok(pauses)
    }

    async fn handle(&self, req: Request) -> Reply {
        match req {
            Request::Pauses => match self.load_pauses().await {
                Ok(p) => {
                    self.waker.wake();
                    let message = if p.is_empty() {
                        "uploads resumed".to_owned()
                    } else {
                        "paused".to_owned()
                    };
                    Reply { ok: true, message }
                }
                Err(e) => Reply {
                    ok: false,
                    message: format!("cannot read the pauses: {e}"),
                },
            },
            Request::Retry => {
                self.waker.wake();
                Reply {
                    ok: true,
                    message: "looking at the queue now".into(),
                }
            }
            Request::Rescan { root } => {
                self.rescans.ask(root);
                Reply {
                    ok: true,
                    message: "rescan started".into(),
                }
            }
        }
    }
}

/// The daemon's end: listens on `<state dir>/control.sock` until `cancel`, then removes
/// it. Must be called with the state lock held: a socket file left there is then a stale
/// one (a `kill -9`) and is replaced. A socket that cannot be made (a path too long for
/// `sun_path`) is logged and the daemon runs without it.
pub async fn serve(state_dir: PathBuf, control: Control, cancel: CancellationToken) {
    let path = state_dir.join(SOCKET_FILE);
    let listener = match bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(
                "cannot listen on {}: {e}; pause, resume, rescan and retry reach this daemon \
                 only at its next start or idle look (30 s)",
                path.display()
            );
            return;
        }
    };
    tracing::debug!(socket = %path.display(), "listening for commands");
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let control = control.clone();
                    tokio::spawn(async move { answer(stream, &control).await });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = std::fs::remove_file(&path);
}

fn bind(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::debug!("removed a stale control socket"),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    // The state directory is 0700 already; the socket is the user's alone all the same.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// One connection: one request line, one answer line.
async fn answer(stream: UnixStream, control: &Control) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_LINE));
    let reply = match tokio::time::timeout(TALK_TIMEOUT, reader.read_line(&mut line)).await {
        Ok(Ok(_)) => match serde_json::from_str::<Request>(line.trim()) {
            Ok(req) => {
                tracing::info!(request = ?req, "control request");
                control.handle(req).await
            }
            Err(e) => Reply {
                ok: false,
                message: format!("not a request: {e}"),
            },
        },
        Ok(Err(e)) => Reply {
            ok: false,
            message: format!("cannot read the request: {e}"),
        },
        Err(_) => return,
    };
    let mut text = serde_json::to_string(&reply).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    let _ = tokio::time::timeout(TALK_TIMEOUT, write.write_all(text.as_bytes())).await;
}

/// How a command's message reached (or did not reach) a daemon.
#[derive(Debug)]
pub enum Delivery {
    /// The daemon answered.
    Answered(Reply),
    /// No daemon holds the state directory.
    NoDaemon,
    /// A daemon holds it but did not answer on the socket (`why`).
    Unanswered { pid: Option<u32>, why: String },
}

/// Sends `req` to the daemon of `state_dir`, if one runs.
pub async fn send(state_dir: &Path, req: &Request) -> Delivery {
    let path = state_dir.join(SOCKET_FILE);
    let talk = async {
        let stream = UnixStream::connect(&path).await?;
        let (read, mut write) = stream.into_split();
        let mut text = serde_json::to_string(req).map_err(std::io::Error::other)?;
        text.push('\n');
        write.write_all(text.as_bytes()).await?;
        let mut line = String::new();
        BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_LINE))
            .read_line(&mut line)
            .await?;
        serde_json::from_str::<Reply>(line.trim()).map_err(std::io::Error::other)
    };
    let result = tokio::time::timeout(TALK_TIMEOUT, talk).await;
    match result {
        Ok(Ok(reply)) => Delivery::Answered(reply),
        other => match lock::holder(state_dir) {
            None => Delivery::NoDaemon,
            Some(h) => Delivery::Unanswered {
                pid: h.pid,
                why: match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {}s", TALK_TIMEOUT.as_secs()),
                },
            },
        },
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0} is not a root of the config ({1}); the roots are: {2}")]
    NotARoot(String, String, String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0} is not an account of the config ({1}); the accounts are: {2}")]
    NotAnAccount(String, String, String),
    #[error("{0} is a root of account {1}, not of account {2}")]
    OtherAccount(String, String, String),
    #[error("cannot create the state directory {0}: {1}")]
    StateDir(String, std::io::Error),
}

impl CommandError {
    /// 2 for a wrong argument, 1 otherwise (main's table).
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::NotARoot(..)
            | CommandError::NotAnAccount(..)
            | CommandError::OtherAccount(..) => 2,
            _ => 1,
        }
    }
}

/// The configured root `given` names (as typed, relative, or through a symlink).
pub fn configured_root(config: &Config, given: &Path) -> Result<PathBuf, CommandError> {
    let absolute = std::path::absolute(given).unwrap_or_else(|_| given.to_path_buf());
    let canonical = given.canonicalize().ok();
    for r in &config.roots {
        if r.path == absolute
            || r.path == given
            || canonical.is_some() && r.path.canonicalize().ok() == canonical
        {
            return Ok(r.path.clone());
        }
    }
    let names: Vec<String> = config
        .roots
        .iter()
        .map(|r| r.path.display().to_string())
        .collect();
    Err(CommandError::NotARoot(
        given.display().to_string(),
        config
            .source
            .as_ref()
            .map_or("no file".to_owned(), |p| p.display().to_string()),
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        },
    ))
}

/// The state database for writing, created (mode 0700 directory) when there is none yet: a
/// pause must hold from the daemon's first start.
fn open_state(state_dir: &Path) -> Result<Db, CommandError> {
    if !state_dir.exists() {
        std::fs::create_dir_all(state_dir)
            .and_then(|()| {
                std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700))
            })
            .map_err(|e| CommandError::StateDir(state_dir.display().to_string(), e))?;
    }
    Ok(Db::open(&state_dir.join(db::DB_FILE))?)
}

/// The sentence about the daemon after a command.
pub fn delivery_line(d: &Delivery, done_now: &str, later: &str) -> String {
    match d {
        Delivery::Answered(r) if r.ok => format!("the running daemon {done_now}"),
        Delivery::Answered(r) => format!("the running daemon refused it: {}", r.message),
        Delivery::NoDaemon => format!("no daemon is running; {later}"),
        Delivery::Unanswered { pid, why } => format!(
            "a daemon{} runs but did not answer on {SOCKET_FILE} ({why}); {}",
            pid.map_or(String::new(), |p| format!(" (pid {p})")),
            "it sees the change at its next start, or within 30 s for `retry`"
        ),
    }
}

/// `immish-sync pause [--root PATH]`: the lines to print.
pub async fn pause(config: &Config, root: Option<&Path>) -> Result<Vec<String>, CommandError> {
    let root = root.map(|r| configured_root(config, r)).transpose()?;
    let db = open_state(&config.state.dir)?;
    let key = root.clone();
    let (new, pauses) = db
        .call(move |c| {
            Ok((
                meta::set_user_pause(c, key.as_deref(), now_ms())?,
                meta::user_pauses(c)?,
            ))
        })
        .await?;
    drop(db);
    let what = match &root {
        None => "uploads are paused".to_owned(),
        Some(r) => format!("uploads from {} are paused", r.display()),
    };
    let since = match &root {
        None => pauses.all_since_ms,
        Some(r) => pauses.root_since(&r.display().to_string()),
    };
    let mut lines = vec![if new {
        format!(
            "{what}: no new upload starts; one in flight finishes; watching and hashing go on \
             (`immish-sync resume{}` lifts it)",
            root.as_ref()
                .map_or(String::new(), |r| format!(" --root {}", r.display()))
        )
    } else {
        format!(
            "{what} already (since {})",
            since.map_or("?".into(), crate::human::timestamp)
        )
    }];
    let d = send(&config.state.dir, &Request::Pauses).await;
    lines.push(delivery_line(
        &d,
        "stopped starting uploads",
        "it takes effect at the next start",
    ));
    Ok(lines)
}

/// `immish-sync resume [--root PATH]`: the lines to print.
pub async fn resume(config: &Config, root: Option<&Path>) -> Result<Vec<String>, CommandError> {
    let root = root.map(|r| configured_root(config, r)).transpose()?;
    let db = open_state(&config.state.dir)?;
    let key = root.clone();
    let (lifted, left) = db
        .call(move |c| {
            Ok((
                meta::clear_user_pause(c, key.as_deref())?,
                meta::user_pauses(c)?,
            ))
        })
        .await?;
    drop(db);
    let mut lines = vec![match (&root, lifted) {
        (_, 0) => "nothing was paused".to_owned(),
        (None, _) => "uploads resumed".to_owned(),
        (Some(r), _) => format!("uploads from {} resumed", r.display()),
    }];
    if root.is_some() && left.all_since_ms.is_some() {
        lines.push(
            "the whole agent is still paused: `immish-sync resume` (without --root) lifts it"
                .into(),
        );
    }
    let d = send(&config.state.dir, &Request::Pauses).await;
    lines.push(delivery_line(
        &d,
        "is uploading again",
        "it takes effect at the next start",
    ));
    Ok(lines)
}

/// `immish-sync rescan [--root PATH]`: the lines to print.
pub async fn rescan(config: &Config, root: Option<&Path>) -> Result<Vec<String>, CommandError> {
    let root = root.map(|r| configured_root(config, r)).transpose()?;
    let d = send(&config.state.dir, &Request::Rescan { root: root.clone() }).await;
    Ok(vec![delivery_line(
        &d,
        &match &root {
            None => "is walking every root now".to_owned(),
            Some(r) => format!("is walking {} now", r.display()),
        },
        "every root is walked at the next start (or run `immish-sync scan`)",
    )])
}

/// `immish-sync retry`: failed jobs back to the queue, and the daemon told. `None` when
/// there is no state yet.
pub async fn retry(config: &Config, root: Option<&Path>) -> Result<Option<Vec<String>>, DbError> {
    let Some(n) = retry_failed(&config.state.dir, root)? else {
        return Ok(None);
    };
    let mut lines = vec![match root {
        Some(r) => format!("{n} files of {} queued again", r.display()),
        None => format!("{n} files queued again"),
    }];
    if n > 0 {
        let d = send(&config.state.dir, &Request::Retry).await;
        lines.push(delivery_line(
            &d,
            "is taking them now",
            "it takes effect at the next start (or run `immish-sync scan`)",
        ));
    }
    Ok(Some(lines))
}

/// `immish-sync retry`: puts failed jobs back in the queue (the daemon picks them up at its
/// next wake; `scan` at once). `None` when there is no state yet: nothing can have failed,
/// and creating a state directory here would only hide a wrong `[state] dir`.
fn retry_failed(state_dir: &Path, root: Option<&Path>) -> Result<Option<usize>, DbError> {
    use std::os::unix::ffi::OsStrExt;
    let path = state_dir.join(db::DB_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let db = Db::open(&path)?;
    let root = root.map(|r| r.as_os_str().as_bytes().to_vec());
    db.call_blocking(move |c| crate::db::queue::retry_failed(c, now_ms(), root.as_deref()))
        .map(Some)
}
