//! `immish-sync mirror` and `immish-sync diff`: what the mirror knows, read from the state
//! database without disturbing a running daemon.
//!
//! Must not: write to the database or call the server (both views show the mirror as the
//! last pull or event left it, and say when that was).

use std::fmt::Write as _;
use std::path::Path;

use crate::db::meta::{self, LastPull, PullError, SocketRecord, SocketState};
use crate::db::mirror::{self as store, Counts, LocalOnly, RemoteOnly};
use crate::db::{self, Db, DbError};
use crate::human::{self, ago};

/// Everything `immish-sync mirror` shows.
#[derive(Debug)]
pub struct MirrorReport {
    /// `{api root}` of the server the mirror belongs to.
    pub server: Option<String>,
    pub counts: Counts,
    pub last_pull: Option<LastPull>,
    pub last_full_ms: Option<i64>,
    /// The largest server `updatedAt` pulled (unix ms, server clock).
    pub watermark_ms: Option<i64>,
    pub last_error: Option<PullError>,
    /// As the socket last recorded itself.
    pub socket: Option<SocketRecord>,
}

fn open(state_dir: &Path) -> Result<Option<Db>, DbError> {
    let path = state_dir.join(db::DB_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let db = Db::open_readonly(&path)?;
    if !db.call_blocking(|c| store::has_tables(c))? {
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
        Ok(Some(MirrorReport {
            server: meta::server_identity(c)?.map(|id| id.api_root),
            counts: store::counts(c)?,
            last_pull: meta::last_pull(c)?,
            last_full_ms: meta::last_full_ms(c)?,
            watermark_ms: meta::watermark_ms(c)?,
            last_error: meta::last_pull_error(c)?,
            socket: meta::socket(c)?,
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
            Some(p) => {
                let _ = writeln!(
                    out,
                    "last pull:     {} ({}, {}, {} assets received)",
                    ago(p.at_ms),
                    p.kind(),
                    p.source,
                    p.seen
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
            let _ = writeln!(out, "watermark:     {} (server time)", human::timestamp(ms));
        }
        if let Some(e) = &self.last_error {
            let _ = writeln!(out, "last error:    {} : {}", ago(e.at_ms), e.message);
        }
        let socket = match &self.socket {
            None => "never started".to_owned(),
            Some(SocketRecord { at_ms, state }) => match state {
                SocketState::Connected => format!("connected ({})", ago(*at_ms)),
                SocketState::Down { reason } => {
                    format!("down since {}: {reason}", ago(*at_ms))
                }
                SocketState::Unauthorized { detail } => format!(
                    "refused by the server ({detail}, {}); live events need an API key \
                     with `all` or a password login",
                    ago(*at_ms)
                ),
                SocketState::Off { why } | SocketState::Unavailable { why } => {
                    format!("not used: {why}")
                }
                SocketState::Other { value } => value.clone(),
            },
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
    /// Assets of files whose bytes changed since they were backed up: the new version is
    /// (or will be) another asset; the old one stays (docs/ARCHITECTURE.md#edited-files).
    pub changed: Vec<RemoteOnly>,
    /// Assets whose local file was archived, or deleted, after upload
    /// (docs/ARCHITECTURE.md#after-upload).
    pub archived: Vec<RemoteOnly>,
    pub removed: Vec<RemoteOnly>,
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
        let owner = meta::server_identity(c)?
            .map(|id| id.user_id)
            .unwrap_or_default();
        let device = match device_id {
            Some(d) => d,
            None => meta::device_id(c)?.unwrap_or_default(),
        };
        let pulled = meta::last_pull(c)?.is_some();
        let d = store::diff(c, &owner, &device)?;
        Ok(Some(Diff {
            local_only: d.local_only,
            remote_only: d.remote_only,
            changed: d.changed,
            archived: d.archived,
            removed: d.removed,
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
        if !self.changed.is_empty() {
            let _ = writeln!(
                out,
                "on the server from this machine, local file changed: {}",
                self.changed.len()
            );
            for a in &self.changed {
                let now = a
                    .path
                    .as_deref()
                    .map(|p| format!(", now {}", String::from_utf8_lossy(p)))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {}  (asset {}, the old version{now})",
                    a.original_file_name, a.id
                );
            }
        }
        for (list, what) in [
            (&self.archived, "archived after upload"),
            (&self.removed, "removed after upload"),
        ] {
            if list.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "on the server from this machine, local file {what}: {}",
                list.len()
            );
            for a in list {
                let was = a
                    .path
                    .as_deref()
                    .map(|p| format!(", was {}", String::from_utf8_lossy(p)))
                    .unwrap_or_default();
                let _ = writeln!(out, "  {}  (asset {}{was})", a.original_file_name, a.id);
            }
        }
        out
    }
}
