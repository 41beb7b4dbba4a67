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
use serde::Serialize;

// ----- keys of this installation --------------------------------------------------------------

const DEVICE_ID: &str = "device_id";
const LAST_SUCCESS: &str = "last_success_ms";
/// One key per root: `root:<path as displayed>`.
const ROOT_PREFIX: &str = "root:";
/// What the last walk of a root passed over: `skipped:<path as displayed>`.
const SKIPPED_PREFIX: &str = "skipped:";
/// How the daemon last found the server: `"<since ms> <state> …"` ([`ConnectionState`]).
const CONNECTION: &str = "server.connection";

// ----- keys of the server account -------------------------------------------------------------

const SERVER_IDENTITY: &str = "server_identity";
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
    let mut stmt = conn.prepare_cached(
        "SELECT key, value FROM meta WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key",
    )?;
    let rows = stmt.query_map([ROOT_PREFIX], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (key, value) = row?;
        let path = key.strip_prefix(ROOT_PREFIX).unwrap_or(&key).to_owned();
        out.push((path, RootState::parse(&value)));
    }
    Ok(out)
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
mod tests {
    use super::*;
    use crate::db::Db;

    fn setup() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("s.sqlite3")).unwrap();
        (dir, db)
    }

    /// The values as earlier versions wrote them, key by key: each must read as the typed
    /// value, and writing the typed value must give the same text back.
    #[test]
    fn todays_stored_formats_read_and_write_back_the_same() {
        let (_d, db) = setup();
        db.call_blocking(|c| {
            let raw = [
                (SERVER_IDENTITY, "http://h:2283/api 0b5d-user"),
                (DEVICE_ID, "immish-sync-1234"),
                (LAST_SUCCESS, "1700000000000"),
                ("root:/photos", "ok 1700000000001"),
                ("root:/usb", "paused it is empty (an unmounted disk?)"),
                (WATERMARK, "1700000000002"),
                (LAST_FULL, "1700000000003"),
                (LAST_PULL, "1700000000004 full 2500 sync stream"),
                (LAST_ERROR, "1700000000005 server said no (503)"),
                (SOCKET, "1700000000006 down connection reset by peer"),
            ];
            for (k, v) in raw {
                set(c, k, v)?;
            }
            let id = server_identity(c)?.unwrap();
            assert_eq!(
                id,
                ServerIdentity {
                    api_root: "http://h:2283/api".into(),
                    user_id: "0b5d-user".into()
                }
            );
            assert_eq!(device_id(c)?.as_deref(), Some("immish-sync-1234"));
            assert_eq!(last_success_ms(c)?, Some(1_700_000_000_000));
            assert_eq!(
                root_states(c)?,
                vec![
                    (
                        "/photos".to_owned(),
                        RootState::Ok {
                            at_ms: Some(1_700_000_000_001)
                        }
                    ),
                    (
                        "/usb".to_owned(),
                        RootState::Paused {
                            reason: "it is empty (an unmounted disk?)".into()
                        }
                    ),
                ]
            );
            assert_eq!(watermark_ms(c)?, Some(1_700_000_000_002));
            assert_eq!(last_full_ms(c)?, Some(1_700_000_000_003));
            let pull = last_pull(c)?.unwrap();
            assert_eq!(
                pull,
                LastPull {
                    at_ms: 1_700_000_000_004,
                    full: true,
                    seen: 2500,
                    source: "sync stream".into()
                }
            );
            let err = last_pull_error(c)?.unwrap();
            assert_eq!(err.message, "server said no (503)");
            let sock = socket(c)?.unwrap();
            assert_eq!(
                sock.state,
                SocketState::Down {
                    reason: "connection reset by peer".into()
                }
            );

            // Written back through the typed setters, the text is what it was.
            set_server_identity(c, &id)?;
            set_root_state(
                c,
                Path::new("/photos"),
                &RootState::Ok {
                    at_ms: Some(1_700_000_000_001),
                },
            )?;
            set_root_state(
                c,
                Path::new("/usb"),
                &RootState::Paused {
                    reason: "it is empty (an unmounted disk?)".into(),
                },
            )?;
            set_last_pull_error(c, &err)?;
            set_socket(c, &sock)?;
            record_pull(c, &pull, Some(1_700_000_000_002))?;
            // record_pull ends the error; write it back for the comparison.
            set_last_pull_error(c, &err)?;
            set(c, LAST_FULL, "1700000000003")?;
            for (k, v) in raw {
                assert_eq!(get(c, k)?.as_deref(), Some(v), "{k}");
            }
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn connection_states_and_skipped_entries_round_trip_and_trouble_keeps_its_start() {
        let (_d, db) = setup();
        db.call_blocking(|c| {
            for st in [
                ConnectionState::Connected { since_ms: 1 },
                ConnectionState::Unreachable {
                    since_ms: 2,
                    next_try_ms: Some(3),
                    error: "connection refused (os error 111)".into(),
                },
                ConnectionState::Refused {
                    since_ms: 4,
                    next_try_ms: None,
                    error: "401".into(),
                },
                ConnectionState::Paused {
                    since_ms: 5,
                    until_ms: Some(6),
                    reason: "the server is full".into(),
                },
            ] {
                assert_eq!(ConnectionState::parse(&st.to_value()), Some(st.clone()));
            }
            let down = |since_ms, next| ConnectionState::Unreachable {
                since_ms,
                next_try_ms: Some(next),
                error: "e".into(),
            };
            record_connection(c, &down(10, 12))?;
            record_connection(c, &down(20, 24))?;
            assert_eq!(connection(c)?, Some(down(10, 24)), "the outage began at 10");
            record_connection(c, &ConnectionState::Connected { since_ms: 30 })?;
            record_connection(c, &down(40, 41))?;
            assert_eq!(connection(c)?, Some(down(40, 41)), "a new outage");

            let k = SkippedEntries {
                symlinks: 3,
                fifos: 1,
                sockets: 0,
                devices: 0,
            };
            set_root_skipped(c, Path::new("/photos"), &k)?;
            assert_eq!(root_skipped(c, "/photos")?, Some(k));
            assert_eq!(k.to_string(), "3 symlinks, 1 FIFO");
            assert_eq!(SkippedEntries::default().to_string(), "");
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn every_socket_state_round_trips() {
        for state in [
            SocketState::Connected,
            SocketState::Down {
                reason: "stopped".into(),
            },
            SocketState::Unauthorized {
                detail: "401 invalid token".into(),
            },
            SocketState::Off {
                why: "mirror.events = false".into(),
            },
            SocketState::Unavailable {
                why: "the API key lacks the `all` permission".into(),
            },
            SocketState::Other {
                value: "sleeping soundly".into(),
            },
        ] {
            assert_eq!(SocketState::parse(&state.to_value()), state);
        }
    }

    #[test]
    fn odd_values_do_not_pass_for_good_ones() {
        assert_eq!(LastPull::parse("not-a-time full 1 x"), None);
        assert_eq!(LastPull::parse("1 sideways 1 x"), None);
        assert_eq!(LastPull::parse("1 full many x"), None);
        assert_eq!(
            LastPull::parse("1 incremental 0").map(|p| (p.full, p.source)),
            Some((false, String::new()))
        );
        assert_eq!(
            RootState::parse("okay then"),
            RootState::Ok { at_ms: None },
            "status always showed anything starting with `ok` as ok"
        );
        assert_eq!(RootState::parse("ok").to_string(), "ok");
        assert_eq!(RootState::parse("paused").to_string(), "paused");
        assert_eq!(
            RootState::parse("scanning").to_string(),
            "scanning",
            "an unknown state is shown as it is"
        );
        // A seed-style server gives no user id: the identity ends in a space.
        let seed = ServerIdentity::parse("http://h/api ");
        assert_eq!(seed.user_id, "");
        assert_eq!(seed.to_value(), "http://h/api ");
    }

    #[test]
    fn a_new_server_forgets_the_old_ones_facts_and_keeps_the_device() {
        let (_d, db) = setup();
        db.call_blocking(|c| {
            let a = ServerIdentity {
                api_root: "http://a/api".into(),
                user_id: "u1".into(),
            };
            let first = adopt_server(c, &a, None, 1)?;
            assert!(!first.forgot_previous);
            assert!(first.device_id.starts_with("immish-sync-"));
            set(c, WATERMARK, "5")?;
            set_root_state(c, Path::new("/p"), &RootState::Ok { at_ms: Some(1) })?;

            let again = adopt_server(c, &a, None, 2)?;
            assert_eq!(again.device_id, first.device_id);
            assert!(!again.forgot_previous);
            assert_eq!(watermark_ms(c)?, Some(5));

            let b = ServerIdentity {
                api_root: "http://a/api".into(),
                user_id: "u2".into(),
            };
            let moved = adopt_server(c, &b, Some("mine"), 3)?;
            assert!(moved.forgot_previous);
            assert_eq!(moved.device_id, "mine");
            assert_eq!(
                watermark_ms(c)?,
                None,
                "the mirror's facts are the account's"
            );
            assert_eq!(server_identity(c)?, Some(b));
            assert_eq!(root_states(c)?.len(), 1, "the roots are this machine's");
            assert_eq!(
                device_id(c)?,
                Some(first.device_id),
                "the override is not stored"
            );
            Ok(())
        })
        .unwrap();
    }
}
