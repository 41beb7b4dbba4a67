//! `immish-sync mirror` and `immish-sync diff`: what the mirror knows, read from the state
//! database without disturbing a running daemon.
//!
//! Must not: write to the database or call the server (both views show the mirror as the
//! last pull or event left it, and say when that was).

use std::fmt::Write as _;
use std::path::Path;

use super::{META_LAST_ERROR, META_LAST_FULL, META_LAST_PULL, META_SOCKET, META_WATERMARK};
use crate::db::mirror::{self as store, Counts, LocalOnly, RemoteOnly};
use crate::db::{self, Db, DbError};
use crate::status::ago;

/// Everything `immish-sync mirror` shows.
#[derive(Debug)]
pub struct MirrorReport {
    /// `{api root}` of the server the mirror belongs to.
    pub server: Option<String>,
    pub counts: Counts,
    /// (unix ms, `full` | `incremental`, assets seen, source).
    pub last_pull: Option<(i64, String, u64, String)>,
    pub last_full_ms: Option<i64>,
    /// The largest server `updatedAt` pulled (unix ms, server clock).
    pub watermark_ms: Option<i64>,
    pub last_error: Option<(i64, String)>,
    /// (unix ms, state and detail) as the socket last recorded it.
    pub socket: Option<(i64, String)>,
}

/// `(unix ms, rest)` of a `meta` value written as `"{ms} {rest}"`.
fn stamped(v: &str) -> Option<(i64, String)> {
    let (ms, rest) = v.split_once(' ').unwrap_or((v, ""));
    Some((ms.parse().ok()?, rest.to_owned()))
}

fn has_mirror(c: &rusqlite::Connection) -> rusqlite::Result<bool> {
    c.query_row(
        "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'remote_assets')",
        [],
        |r| r.get(0),
    )
}

fn open(state_dir: &Path) -> Result<Option<Db>, DbError> {
    let path = state_dir.join(db::DB_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let db = Db::open_readonly(&path)?;
    if !db.call_blocking(|c| has_mirror(c))? {
        // A database of an older immish-sync that has not been upgraded yet.
        return Ok(None);
    }
    Ok(Some(db))
}

/// `None` when there is no state yet (or it predates the mirror).
pub fn read(state_dir: &Path) -> Result<Option<MirrorReport>, DbError> {
    let Some(db) = open(state_dir)? else {
        return Ok(None);
    };
    db.call_blocking(|c| {
        let meta = |k: &str| db::meta_get(c, k);
        let last_pull = meta(META_LAST_PULL)?.and_then(|v| {
            let (ms, rest) = stamped(&v)?;
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next()?.to_owned();
            let seen = parts.next()?.parse().ok()?;
            let source = parts.next().unwrap_or("").to_owned();
            Some((ms, kind, seen, source))
        });
        Ok(Some(MirrorReport {
            server: meta("server_identity")?
                .map(|s| s.split_whitespace().next().unwrap_or("").to_owned()),
            counts: store::counts(c)?,
            last_pull,
            last_full_ms: meta(META_LAST_FULL)?.and_then(|v| v.parse().ok()),
            watermark_ms: meta(META_WATERMARK)?.and_then(|v| v.parse().ok()),
            last_error: meta(META_LAST_ERROR)?.as_deref().and_then(stamped),
            socket: meta(META_SOCKET)?.as_deref().and_then(stamped),
        }))
    })
}

impl MirrorReport {
    /// The text `immish-sync mirror` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let c = &self.counts;
        if let Some(s) = &self.server {
            let _ = writeln!(out, "server:        {s}");
        }
        let parts: Vec<String> = c
            .by_visibility
            .iter()
            .map(|(v, n)| format!("{v} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "assets:        {} on the server{}",
            c.live,
            if parts.is_empty() {
                String::new()
            } else {
                format!(" ({})", parts.join(", "))
            }
        );
        let _ = writeln!(out, "in the trash:  {}", c.trashed);
        let _ = writeln!(
            out,
            "deleted:       {} (seen going since the mirror began)",
            c.deleted
        );
        let _ = writeln!(
            out,
            "tombstones:    {} (ours, trashed or deleted by the user; never uploaded again)",
            c.tombstones
        );
        let _ = writeln!(out, "held back:     {} local files", c.held_back);
        match &self.last_pull {
            Some((ms, kind, seen, source)) => {
                let _ = writeln!(
                    out,
                    "last pull:     {} ({kind}, {source}, {seen} assets received)",
                    ago(*ms)
                );
            }
            None => {
                let _ = writeln!(out, "last pull:     never");
            }
        }
        if let Some(ms) = self.last_full_ms {
            let _ = writeln!(out, "last full:     {}", ago(ms));
        }
        if let Some(ms) = self.watermark_ms {
            let _ = writeln!(
                out,
                "watermark:     {} (server time)",
                crate::api::format_timestamp(ms.saturating_mul(1_000_000))
            );
        }
        if let Some((ms, e)) = &self.last_error {
            let _ = writeln!(out, "last error:    {} : {e}", ago(*ms));
        }
        let socket = match &self.socket {
            None => "never started".to_owned(),
            Some((ms, s)) => {
                let (state, detail) = s.split_once(' ').unwrap_or((s.as_str(), ""));
                match state {
                    "connected" => format!("connected ({})", ago(*ms)),
                    "down" => format!("down since {}: {detail}", ago(*ms)),
                    "unauthorized" => format!(
                        "refused by the server ({detail}, {}); live events need an API key \
                         with `all` or a password login",
                        ago(*ms)
                    ),
                    "off" | "unavailable" => format!("not used: {detail}"),
                    _ => s.clone(),
                }
            }
        };
        let _ = writeln!(out, "live events:   {socket} (as last recorded)");
        out
    }
}

/// What `immish-sync diff` lists.
#[derive(Debug)]
pub struct Diff {
    pub local_only: Vec<LocalOnly>,
    pub remote_only: Vec<RemoteOnly>,
    /// The mirror has been filled at least once (else the lists mean nothing).
    pub pulled: bool,
}

/// `device_id` overrides the one recorded in the state (`upload.device_id`).
pub fn diff(state_dir: &Path, device_id: Option<&str>) -> Result<Option<Diff>, DbError> {
    let Some(db) = open(state_dir)? else {
        return Ok(None);
    };
    let device_id = device_id.map(str::to_owned);
    db.call_blocking(move |c| {
        let owner = db::meta_get(c, "server_identity")?
            .and_then(|s| s.split_whitespace().nth(1).map(str::to_owned))
            .unwrap_or_default();
        let device = match device_id {
            Some(d) => d,
            None => db::meta_get(c, "device_id")?.unwrap_or_default(),
        };
        let pulled = db::meta_get(c, META_LAST_PULL)?.is_some();
        let (local_only, remote_only) = store::diff(c, &owner, &device)?;
        Ok(Some(Diff {
            local_only,
            remote_only,
            pulled,
        }))
    })
}

impl Diff {
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.pulled {
            let _ = writeln!(
                out,
                "the mirror of the server is empty: start the daemon or run `immish-sync scan` \
                 once, then try again"
            );
            return out;
        }
        let _ = writeln!(
            out,
            "local files not on the server: {}",
            self.local_only.len()
        );
        for f in &self.local_only {
            let _ = writeln!(out, "  {}  ({})", String::from_utf8_lossy(&f.path), f.state);
        }
        let _ = writeln!(
            out,
            "on the server from this machine, local file gone: {}",
            self.remote_only.len()
        );
        for a in &self.remote_only {
            let was = a
                .path
                .as_deref()
                .map(|p| format!(", was {}", String::from_utf8_lossy(p)))
                .unwrap_or_default();
            let _ = writeln!(out, "  {}  (asset {}{was})", a.original_file_name, a.id);
        }
        out
    }
}
