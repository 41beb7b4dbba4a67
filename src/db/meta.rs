//! The small facts of the `meta` table, typed: the device id, the server identity, the last
//! success, each root's state, and the mirror's watermark, pulls, errors, acks and socket.
//!
//! Owns: every `meta` key and the text of its value. Values are written exactly as earlier
//! versions wrote them (`"ok <ms>"`, `"<api root> <user id>"`, `"<ms> full <n> <source>"`…),
//! so that a database of an older immish-sync reads the same, and an older immish-sync can
//! still read ours. Must not: be bypassed. Code that needs a new fact adds a key and a typed
//! getter and setter here rather than a string elsewhere.
//!
//! Two kinds of facts live here. Those of this installation (the device id, the roots, the
//! last success) and those of the server account (its identity, and everything of the
//! mirror of it). There is one account today; its keys are kept together, and
//! [`forget_account`] clears exactly them, so that a second account can get keys of its own
//! without touching the rest.

use std::fmt;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

// ----- keys of this installation --------------------------------------------------------------

const DEVICE_ID: &str = "device_id";
const LAST_SUCCESS: &str = "last_success_ms";
/// One key per root: `root:<path as displayed>`.
const ROOT_PREFIX: &str = "root:";
/// What the last walk of a root passed over: `skipped:<path as displayed>`.
const SKIPPED_PREFIX: &str = "skipped:";
/// How the daemon last found the server: `"<since ms> <state> …"` ([`ConnectionState`]).
const CONNECTION: &str = "server.connection";
/// The user's pause of the whole agent (`immish-sync pause`): `"<since ms>"`.
const USER_PAUSE: &str = "user_pause";
/// The user's pause of one root (`pause --root`): `user_pause:<path as displayed>`.
const USER_PAUSE_PREFIX: &str = "user_pause:";
/// What the running daemon is doing, refreshed every few seconds: `"<ms> <json>"`
/// ([`LiveState`]).
const LIVE: &str = "daemon.live";
/// The alert incidents notified and not resolved yet: `"<name>:<since ms> …"`.
const ALERTS_OPEN: &str = "alerts.open";

// ----- keys of the server account -------------------------------------------------------------

const SERVER_IDENTITY: &str = "server_identity";
/// The server's dialect and version as last connected: `"<dialect> <version or ->"`.
const SERVER_INFO: &str = "server.info";
/// Every key of the mirror of the account starts with this.
const MIRROR_PREFIX: &str = "mirror.";
const WATERMARK: &str = "mirror.watermark_ms";
const LAST_PULL: &str = "mirror.last_pull";
const LAST_FULL: &str = "mirror.last_full_ms";
const LAST_ERROR: &str = "mirror.last_error";
const SYNC_ACKS: &str = "mirror.acks";
const SOCKET: &str = "mirror.socket";

fn get(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()
}

fn set(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?
    .execute([key, value])?;
    Ok(())
}

fn delete(conn: &Connection, key: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM meta WHERE key = ?1")?
        .execute([key])?;
    Ok(())
}

/// Every key starting with `prefix`, in key order, as (the rest of the key, value).
fn prefixed(conn: &Connection, prefix: &str) -> rusqlite::Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT key, value FROM meta WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key",
    )?;
    let rows = stmt.query_map([prefix], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    rows.map(|row| {
        let (key, value) = row?;
        Ok((key.strip_prefix(prefix).unwrap_or(&key).to_owned(), value))
    })
    .collect()
}

fn get_ms(conn: &Connection, key: &str) -> rusqlite::Result<Option<i64>> {
    Ok(get(conn, key)?.and_then(|v| v.trim().parse().ok()))
}

/// `(unix ms, rest)` of a value written as `"<ms> <rest>"` (the rest may be empty).
fn stamped(v: &str) -> Option<(i64, &str)> {
    let (ms, rest) = v.split_once(' ').unwrap_or((v, ""));
    Some((ms.parse().ok()?, rest))
}

// ----- this installation ----------------------------------------------------------------------

/// The device id uploads are made under, once generated.
pub fn device_id(conn: &Connection) -> rusqlite::Result<Option<String>> {
    get(conn, DEVICE_ID)
}

pub fn set_device_id(conn: &Connection, id: &str) -> rusqlite::Result<()> {
    set(conn, DEVICE_ID, id)
}

/// When a file was last backed up (unix ms).
pub fn last_success_ms(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    get_ms(conn, LAST_SUCCESS)
}

pub fn set_last_success_ms(conn: &Connection, ms: i64) -> rusqlite::Result<()> {
    set(conn, LAST_SUCCESS, &ms.to_string())
}

/// A root as its last scan or the watcher left it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum RootState {
    /// Scanned (or back after a pause) at `at_ms`.
    Ok { at_ms: Option<i64> },
    /// Missing, empty or unreadable: its files are left as they are.
    Paused { reason: String },
    /// A value this version does not know, shown as it is.
    Other { value: String },
}

impl RootState {
    fn parse(v: &str) -> RootState {
        if let Some(rest) = v.strip_prefix("ok") {
            RootState::Ok {
                at_ms: rest.trim().parse().ok(),
            }
        } else if let Some(reason) = v.strip_prefix("paused") {
            RootState::Paused {
                reason: reason.strip_prefix(' ').unwrap_or(reason).to_owned(),
            }
        } else {
            RootState::Other {
                value: v.to_owned(),
            }
        }
    }

    fn to_value(&self) -> String {
        match self {
            RootState::Ok { at_ms: Some(ms) } => format!("ok {ms}"),
            RootState::Ok { at_ms: None } => "ok".to_owned(),
            RootState::Paused { reason } => format!("paused {reason}"),
            RootState::Other { value } => value.clone(),
        }
    }
}

/// As `status` shows it: `ok`, `paused <reason>`, or the unknown value.
impl fmt::Display for RootState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootState::Ok { .. } => f.write_str("ok"),
            RootState::Paused { reason } if reason.is_empty() => f.write_str("paused"),
            RootState::Paused { reason } => write!(f, "paused {reason}"),
            RootState::Other { value } => f.write_str(value),
        }
    }
}

fn root_key(root: &Path) -> String {
    format!("{ROOT_PREFIX}{}", root.display())
}

pub fn set_root_state(conn: &Connection, root: &Path, state: &RootState) -> rusqlite::Result<()> {
    set(conn, &root_key(root), &state.to_value())
}

/// Every root ever recorded, by path (as displayed), in path order.
pub fn root_states(conn: &Connection) -> rusqlite::Result<Vec<(String, RootState)>> {
    Ok(prefixed(conn, ROOT_PREFIX)?
        .into_iter()
        .map(|(path, value)| (path, RootState::parse(&value)))
        .collect())
}

/// What the user paused with `immish-sync pause` (docs/ARCHITECTURE.md#control), each with
/// since when (unix ms). It stays until `resume`, across restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UserPauses {
    /// The whole agent.
    pub all_since_ms: Option<i64>,
    /// Single roots (as displayed), in path order.
    pub roots: Vec<UserPausedRoot>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserPausedRoot {
    pub path: String,
    pub since_ms: i64,
}

impl UserPauses {
    pub fn is_empty(&self) -> bool {
        self.all_since_ms.is_none() && self.roots.is_empty()
    }

    /// Since when `root` (as displayed) is paused by its own pause, if it is.
    pub fn root_since(&self, root: &str) -> Option<i64> {
        self.roots
            .iter()
            .find(|r| r.path == root)
            .map(|r| r.since_ms)
    }
}

fn user_pause_key(root: Option<&Path>) -> String {
    match root {
        None => USER_PAUSE.to_owned(),
        Some(r) => format!("{USER_PAUSE_PREFIX}{}", r.display()),
    }
}

pub fn user_pauses(conn: &Connection) -> rusqlite::Result<UserPauses> {
    let all_since_ms = get_ms(conn, USER_PAUSE)?;
    let roots = prefixed(conn, USER_PAUSE_PREFIX)?
        .into_iter()
        .map(|(path, value)| UserPausedRoot {
            path,
            since_ms: value.trim().parse().unwrap_or(0),
        })
        .collect();
    Ok(UserPauses {
        all_since_ms,
        roots,
    })
}

/// Pauses the whole agent (`None`) or one root. Returns `false` when it was paused already
/// (its "since" stays).
pub fn set_user_pause(
    conn: &Connection,
    root: Option<&Path>,
    now_ms: i64,
) -> rusqlite::Result<bool> {
    let key = user_pause_key(root);
    if get(conn, &key)?.is_some() {
        return Ok(false);
    }
    set(conn, &key, &now_ms.to_string())?;
    Ok(true)
}

/// Lifts the pause of one root, or (`None`) every pause: the whole agent's and every
/// root's. Returns how many pauses it lifted.
pub fn clear_user_pause(conn: &Connection, root: Option<&Path>) -> rusqlite::Result<usize> {
    match root {
        Some(_) => {
            let key = user_pause_key(root);
            let had = get(conn, &key)?.is_some();
            delete(conn, &key)?;
            Ok(usize::from(had))
        }
        None => conn
            .prepare_cached("DELETE FROM meta WHERE key = ?1 OR substr(key, 1, length(?2)) = ?2")?
            .execute([USER_PAUSE, USER_PAUSE_PREFIX]),
    }
}

/// Directory entries a walk passes over without a word otherwise: they are never followed
/// or read, and a tree made of them would look like an empty backup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SkippedEntries {
    pub symlinks: u64,
    pub fifos: u64,
    pub sockets: u64,
    /// Block and character devices.
    pub devices: u64,
}

impl SkippedEntries {
    /// Counts one entry that is not a regular file or a directory.
    pub fn count(&mut self, ft: &std::fs::FileType) {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_symlink() {
            self.symlinks += 1;
        } else if ft.is_fifo() {
            self.fifos += 1;
        } else if ft.is_socket() {
            self.sockets += 1;
        } else {
            self.devices += 1;
        }
    }

    pub fn total(&self) -> u64 {
        self.symlinks + self.fifos + self.sockets + self.devices
    }

    pub fn add(&mut self, o: &SkippedEntries) {
        self.symlinks += o.symlinks;
        self.fifos += o.fifos;
        self.sockets += o.sockets;
        self.devices += o.devices;
    }

    fn parse(v: &str) -> Option<SkippedEntries> {
        let mut n = v.split_whitespace().map(|w| w.parse::<u64>().ok());
        Some(SkippedEntries {
            symlinks: n.next()??,
            fifos: n.next()??,
            sockets: n.next()??,
            devices: n.next()??,
        })
    }

    fn to_value(self) -> String {
        format!(
            "{} {} {} {}",
            self.symlinks, self.fifos, self.sockets, self.devices
        )
    }
}

/// `3 symlinks, 1 FIFO` (empty when nothing was skipped).
impl fmt::Display for SkippedEntries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (n, one, many) in [
            (self.symlinks, "symlink", "symlinks"),
            (self.fifos, "FIFO", "FIFOs"),
            (self.sockets, "socket", "sockets"),
            (self.devices, "device node", "device nodes"),
        ] {
            if n == 0 {
                continue;
            }
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{n} {}", if n == 1 { one } else { many })?;
        }
        Ok(())
    }
}

pub fn set_root_skipped(
    conn: &Connection,
    root: &Path,
    skipped: &SkippedEntries,
) -> rusqlite::Result<()> {
    set(
        conn,
        &format!("{SKIPPED_PREFIX}{}", root.display()),
        &skipped.to_value(),
    )
}

/// What the last walk of the root displayed as `root` passed over.
pub fn root_skipped(conn: &Connection, root: &str) -> rusqlite::Result<Option<SkippedEntries>> {
    Ok(get(conn, &format!("{SKIPPED_PREFIX}{root}"))?
        .as_deref()
        .and_then(SkippedEntries::parse))
}

/// How the daemon last found the server, and what it does next. Times are unix ms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum ConnectionState {
    /// Answering since `since_ms`.
    Connected { since_ms: i64 },
    /// Not answering since `since_ms` (refused, timed out, DNS); tried again at
    /// `next_try_ms`.
    Unreachable {
        since_ms: i64,
        next_try_ms: Option<i64>,
        error: String,
    },
    /// Answering, but refusing the credentials since `since_ms`.
    Refused {
        since_ms: i64,
        next_try_ms: Option<i64>,
        error: String,
    },
    /// Uploads held by the daemon itself (the server is full, a permission is missing).
    Paused {
        since_ms: i64,
        until_ms: Option<i64>,
        reason: String,
    },
}

impl ConnectionState {
    pub fn since_ms(&self) -> i64 {
        match self {
            ConnectionState::Connected { since_ms }
            | ConnectionState::Unreachable { since_ms, .. }
            | ConnectionState::Refused { since_ms, .. }
            | ConnectionState::Paused { since_ms, .. } => *since_ms,
        }
    }

    /// The same kind of trouble (so that `since` is kept across attempts).
    pub fn same_kind(&self, other: &ConnectionState) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }

    fn parse(v: &str) -> Option<ConnectionState> {
        let mut w = v.splitn(4, ' ');
        let since_ms = w.next()?.parse().ok()?;
        let kind = w.next()?;
        if kind == "connected" {
            return Some(ConnectionState::Connected { since_ms });
        }
        let next = match w.next()? {
            "-" => None,
            t => Some(t.parse().ok()?),
        };
        let text = w.next().unwrap_or("").to_owned();
        Some(match kind {
            "unreachable" => ConnectionState::Unreachable {
                since_ms,
                next_try_ms: next,
                error: text,
            },
            "refused" => ConnectionState::Refused {
                since_ms,
                next_try_ms: next,
                error: text,
            },
            "paused" => ConnectionState::Paused {
                since_ms,
                until_ms: next,
                reason: text,
            },
            _ => return None,
        })
    }

    fn to_value(&self) -> String {
        let at = |t: &Option<i64>| t.map_or("-".to_owned(), |t| t.to_string());
        match self {
            ConnectionState::Connected { since_ms } => format!("{since_ms} connected"),
            ConnectionState::Unreachable {
                since_ms,
                next_try_ms,
                error,
            } => format!("{since_ms} unreachable {} {error}", at(next_try_ms)),
            ConnectionState::Refused {
                since_ms,
                next_try_ms,
                error,
            } => format!("{since_ms} refused {} {error}", at(next_try_ms)),
            ConnectionState::Paused {
                since_ms,
                until_ms,
                reason,
            } => format!("{since_ms} paused {} {reason}", at(until_ms)),
        }
    }
}

pub fn connection(conn: &Connection) -> rusqlite::Result<Option<ConnectionState>> {
    Ok(get(conn, CONNECTION)?
        .as_deref()
        .and_then(ConnectionState::parse))
}

/// Records `state`. Trouble of the kind already recorded keeps its first `since`: an outage
/// is as old as its first failed attempt, not its latest.
pub fn record_connection(conn: &mut Connection, state: &ConnectionState) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let mut state = state.clone();
    if let Some(old) = connection(&tx)? {
        if old.same_kind(&state) && !matches!(state, ConnectionState::Connected { .. }) {
            let since = old.since_ms();
            match &mut state {
                ConnectionState::Unreachable { since_ms, .. }
                | ConnectionState::Refused { since_ms, .. }
                | ConnectionState::Paused { since_ms, .. } => *since_ms = since,
                ConnectionState::Connected { .. } => {}
            }
        }
    }
    set(&tx, CONNECTION, &state.to_value())?;
    tx.commit()
}

/// What the running daemon records about itself for `status` and the status page
/// (docs/STATUS.md#daemon). Counts are since the daemon started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveState {
    /// When this record was written (unix ms); a record that stops being refreshed belongs
    /// to a daemon that hangs or died.
    pub at_ms: i64,
    /// When the daemon started (unix ms).
    pub started_ms: i64,
    /// `connecting`, `scanning` or `watching`.
    pub phase: String,
    pub uploaded_files: u64,
    pub uploaded_bytes: u64,
    /// Files found already on the server (not sent again).
    pub duplicates: u64,
    pub failed: u64,
    pub retries: u64,
    /// The address of the HTTP endpoint (`[metrics] listen`), once bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// Uploads in flight now: how many, bytes of them sent so far, and their total size
    /// (docs/STATUS.md#daemon).
    #[serde(default)]
    pub sending_files: u64,
    #[serde(default)]
    pub sending_bytes: u64,
    #[serde(default)]
    pub sending_total_bytes: u64,
    /// Outside the upload windows: when the next one opens (unix ms, and `HH:MM` in local
    /// time); absent while uploads may start (docs/STATUS.md#daemon).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploads_resume_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploads_resume_at: Option<String>,
    /// Why this account stopped while the agent's other accounts go on
    /// (docs/ARCHITECTURE.md#accounts); absent while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// On `[server]`'s record: the `[[accounts]]` entries that stopped, each with why
    /// (their own databases may be what broke).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub stopped_accounts: std::collections::BTreeMap<String, String>,
}

pub fn live_state(conn: &Connection) -> rusqlite::Result<Option<LiveState>> {
    Ok(get(conn, LIVE)?.as_deref().and_then(|v| {
        let (_, json) = stamped(v)?;
        serde_json::from_str(json).ok()
    }))
}

pub fn set_live_state(conn: &Connection, live: &LiveState) -> rusqlite::Result<()> {
    let json = serde_json::to_string(live)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    set(conn, LIVE, &format!("{} {json}", live.at_ms))
}

/// Uploads paused by the user (`immish-sync pause`), with since when and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserPause {
    pub since_ms: i64,
    pub reason: String,
}

/// Whether the user paused the whole agent (`immish-sync pause`), from [`user_pauses`]:
/// the shape `status --json` prints as `paused` (docs/STATUS.md#status-json).
pub fn paused_by_user(conn: &Connection) -> rusqlite::Result<Option<UserPause>> {
    Ok(user_pauses(conn)?.all_since_ms.map(|since_ms| UserPause {
        since_ms,
        reason: "immish-sync pause".to_owned(),
    }))
}

/// The alert incidents notified and not resolved yet, by name, with since when (unix ms).
pub fn open_alerts(conn: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    Ok(get(conn, ALERTS_OPEN)?
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|w| {
            let (name, since) = w.rsplit_once(':')?;
            Some((name.to_owned(), since.parse().ok()?))
        })
        .collect())
}

pub fn set_open_alerts(conn: &Connection, open: &[(String, i64)]) -> rusqlite::Result<()> {
    let v: Vec<String> = open.iter().map(|(n, s)| format!("{n}:{s}")).collect();
    set(conn, ALERTS_OPEN, &v.join(" "))
}

// ----- the server account ---------------------------------------------------------------------

/// The server and user the catalogue's "already uploaded" answers belong to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServerIdentity {
    pub api_root: String,
    /// Empty when the server did not say (a seed-style server).
    pub user_id: String,
}

impl ServerIdentity {
    fn parse(v: &str) -> ServerIdentity {
        let mut words = v.split_whitespace();
        ServerIdentity {
            api_root: words.next().unwrap_or("").to_owned(),
            user_id: words.next().unwrap_or("").to_owned(),
        }
    }

    fn to_value(&self) -> String {
        format!("{} {}", self.api_root, self.user_id)
    }
}

pub fn server_identity(conn: &Connection) -> rusqlite::Result<Option<ServerIdentity>> {
    Ok(get(conn, SERVER_IDENTITY)?.map(|v| ServerIdentity::parse(&v)))
}

pub fn set_server_identity(conn: &Connection, id: &ServerIdentity) -> rusqlite::Result<()> {
    set(conn, SERVER_IDENTITY, &id.to_value())
}

/// What the daemon learned of the server when it last connected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServerInfo {
    /// `immich` or `seed` (docs/SERVER-API.md#2-discovery).
    pub dialect: String,
    /// `major.minor.patch`, when the server said.
    pub version: Option<String>,
}

pub fn server_info(conn: &Connection) -> rusqlite::Result<Option<ServerInfo>> {
    Ok(get(conn, SERVER_INFO)?.map(|v| {
        let (dialect, version) = v.split_once(' ').unwrap_or((&v, "-"));
        ServerInfo {
            dialect: dialect.to_owned(),
            version: (version != "-" && !version.is_empty()).then(|| version.to_owned()),
        }
    }))
}

pub fn set_server_info(conn: &Connection, info: &ServerInfo) -> rusqlite::Result<()> {
    let version = info.version.as_deref().unwrap_or("-");
    set(conn, SERVER_INFO, &format!("{} {version}", info.dialect))
}

/// Forgets what the mirror recorded about the account (watermark, pulls, acks, socket):
/// another server or user is configured now. The identity itself is the caller's to replace.
pub fn forget_account(conn: &Connection) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM meta WHERE substr(key, 1, length(?1)) = ?1")?
        .execute([MIRROR_PREFIX])?;
    Ok(())
}

/// The largest server `updatedAt` pulled (unix ms, server clock).
pub fn watermark_ms(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    get_ms(conn, WATERMARK)
}

/// When the last full pull began (unix ms, local clock).
pub fn last_full_ms(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    get_ms(conn, LAST_FULL)
}

/// The last pull that completed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LastPull {
    /// When it began (unix ms, local clock): whatever changed on the server after that may
    /// be missing.
    pub at_ms: i64,
    /// A full inventory (with a reconcile), not an incremental pull.
    pub full: bool,
    /// Distinct assets the server sent.
    pub seen: u64,
    /// Where it read from (`sync stream`, `search`, `asset list`).
    pub source: String,
}

impl LastPull {
    /// `full` or `incremental`.
    pub fn kind(&self) -> &'static str {
        if self.full {
            "full"
        } else {
            "incremental"
        }
    }

    fn parse(v: &str) -> Option<LastPull> {
        let (at_ms, rest) = stamped(v)?;
        let mut parts = rest.splitn(3, ' ');
        let full = match parts.next()? {
            "full" => true,
            "incremental" => false,
            _ => return None,
        };
        let seen = parts.next()?.parse().ok()?;
        let source = parts.next().unwrap_or("").to_owned();
        Some(LastPull {
            at_ms,
            full,
            seen,
            source,
        })
    }

    fn to_value(&self) -> String {
        format!(
            "{} {} {} {}",
            self.at_ms,
            self.kind(),
            self.seen,
            self.source
        )
    }
}

pub fn last_pull(conn: &Connection) -> rusqlite::Result<Option<LastPull>> {
    Ok(get(conn, LAST_PULL)?.as_deref().and_then(LastPull::parse))
}

/// Records a completed pull, in one transaction: the pull, the new watermark (when the pull
/// saw one), the last full pull (when it was one), and the end of the last error.
pub fn record_pull(
    conn: &mut Connection,
    pull: &LastPull,
    watermark_ms: Option<i64>,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    if let Some(wm) = watermark_ms {
        set(&tx, WATERMARK, &wm.to_string())?;
    }
    set(&tx, LAST_PULL, &pull.to_value())?;
    if pull.full {
        set(&tx, LAST_FULL, &pull.at_ms.to_string())?;
    }
    delete(&tx, LAST_ERROR)?;
    tx.commit()
}

/// Why the last pull failed, when it did (cleared by the next that completes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PullError {
    pub at_ms: i64,
    pub message: String,
}

pub fn last_pull_error(conn: &Connection) -> rusqlite::Result<Option<PullError>> {
    Ok(get(conn, LAST_ERROR)?.as_deref().and_then(|v| {
        let (at_ms, message) = stamped(v)?;
        Some(PullError {
            at_ms,
            message: message.to_owned(),
        })
    }))
}

pub fn set_last_pull_error(conn: &Connection, err: &PullError) -> rusqlite::Result<()> {
    set(conn, LAST_ERROR, &format!("{} {}", err.at_ms, err.message))
}

/// The sync stream's last acknowledgements (kept for diagnosis; the server holds the
/// checkpoints).
pub fn set_sync_acks(conn: &Connection, acks: &[String]) -> rusqlite::Result<()> {
    set(conn, SYNC_ACKS, &acks.join(" "))
}

/// The live-event socket, as it last recorded itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum SocketState {
    Connected,
    /// Lost or never connected; reconnecting with backoff (or `stopped`).
    Down {
        reason: String,
    },
    /// The server refused the credentials for the socket.
    Unauthorized {
        detail: String,
    },
    /// Turned off by the config.
    Off {
        why: String,
    },
    /// The credentials cannot open it.
    Unavailable {
        why: String,
    },
    /// A state this version does not know, shown as it is.
    Other {
        value: String,
    },
}

impl SocketState {
    fn parse(v: &str) -> SocketState {
        let (state, detail) = v.split_once(' ').unwrap_or((v, ""));
        let detail = detail.to_owned();
        match state {
            "connected" => SocketState::Connected,
            "down" => SocketState::Down { reason: detail },
            "unauthorized" => SocketState::Unauthorized { detail },
            "off" => SocketState::Off { why: detail },
            "unavailable" => SocketState::Unavailable { why: detail },
            _ => SocketState::Other {
                value: v.to_owned(),
            },
        }
    }

    fn to_value(&self) -> String {
        match self {
            SocketState::Connected => "connected".to_owned(),
            SocketState::Down { reason } => format!("down {reason}"),
            SocketState::Unauthorized { detail } => format!("unauthorized {detail}"),
            SocketState::Off { why } => format!("off {why}"),
            SocketState::Unavailable { why } => format!("unavailable {why}"),
            SocketState::Other { value } => value.clone(),
        }
    }
}

/// [`SocketState`] with when it was recorded (unix ms).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SocketRecord {
    pub at_ms: i64,
    pub state: SocketState,
}

pub fn socket(conn: &Connection) -> rusqlite::Result<Option<SocketRecord>> {
    Ok(get(conn, SOCKET)?.as_deref().and_then(|v| {
        let (at_ms, rest) = stamped(v)?;
        Some(SocketRecord {
            at_ms,
            state: SocketState::parse(rest),
        })
    }))
}

pub fn set_socket(conn: &Connection, rec: &SocketRecord) -> rusqlite::Result<()> {
    set(
        conn,
        SOCKET,
        &format!("{} {}", rec.at_ms, rec.state.to_value()),
    )
}

// ----- units of work --------------------------------------------------------------------------

/// What [`adopt_server`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Adopted {
    /// The device id to upload under: the configured one, else the recorded one, else a new
    /// one (recorded now).
    pub device_id: String,
    /// Another server or user was recorded before: every server-side fact was forgotten.
    pub forgot_previous: bool,
}

/// Makes `identity` the account of this state, in one transaction. A different server or
/// user than the recorded one makes the catalogue's "already uploaded" answers wrong, so
/// they are forgotten ([`super::catalogue::forget_server`]).
pub fn adopt_server(
    conn: &mut Connection,
    identity: &ServerIdentity,
    device_override: Option<&str>,
    now_ms: i64,
) -> rusqlite::Result<Adopted> {
    let tx = conn.transaction()?;
    let forgot_previous = match server_identity(&tx)? {
        Some(old) if old != *identity => {
            super::catalogue::forget_server(&tx, now_ms)?;
            forget_account(&tx)?;
            true
        }
        _ => false,
    };
    set_server_identity(&tx, identity)?;
    let device_id = match (device_override, device_id(&tx)?) {
        (Some(d), _) => d.to_owned(),
        (None, Some(d)) => d,
        (None, None) => {
            let d = format!("immish-sync-{}", uuid::Uuid::new_v4());
            set_device_id(&tx, &d)?;
            d
        }
    };
    tx.commit()?;
    Ok(Adopted {
        device_id,
        forgot_previous,
    })
}

#[cfg(test)]
mod tests;
