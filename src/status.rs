//! `immish-sync status`: what the queue holds, what failed and why, and whether a daemon is
//! running, read from the state database without disturbing a running daemon.
//!
//! Must not: write to the database or take the daemon's lock for longer than a probe.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use crate::db::queue::{self, JobReport};
use crate::db::{self, catalogue, Db, DbError};
use crate::model::JobState;

/// Everything `status` shows.
#[derive(Debug)]
pub struct Status {
    pub daemon_pid: Option<String>,
    pub counts: Vec<(JobState, i64)>,
    pub failures: Vec<JobReport>,
    pub last_success_ms: Option<i64>,
    pub server: Option<String>,
    pub roots: Vec<(String, String)>,
    /// Files not uploaded because their asset was trashed or deleted on the server.
    pub held_back_deleted: i64,
}

/// Whether a daemon holds the state directory's lock, and its pid.
fn daemon_pid(state_dir: &Path) -> Option<String> {
    let path = state_dir.join("lock");
    let file = OpenOptions::new().read(true).open(&path).ok()?;
    // SAFETY: flock on a descriptor we own. A shared, non-blocking probe: it fails only
    // while a daemon holds the exclusive lock, and is released when `file` drops.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    if rc == 0 {
        return None;
    }
    let pid = std::fs::read_to_string(&path).unwrap_or_default();
    Some(pid.trim().to_string())
}

pub fn read(state_dir: &Path) -> Result<Option<Status>, DbError> {
    let path = state_dir.join(db::DB_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let db = Db::open_readonly(&path)?;
    let status = db.call_blocking(|c| {
        let counts = catalogue::counts_by_state(c)?;
        let failures = queue::recent(c, &[JobState::Failed, JobState::Retry], 10)?;
        let last_success_ms = db::meta_get(c, "last_success_ms")?.and_then(|v| v.parse().ok());
        let server = db::meta_get(c, "server_identity")?;
        let mut stmt =
            c.prepare("SELECT key, value FROM meta WHERE key LIKE 'root:%' ORDER BY key")?;
        let roots = stmt
            .query_map([], |r| {
                let k: String = r.get(0)?;
                Ok((k.trim_start_matches("root:").to_string(), r.get(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Status {
            daemon_pid: None,
            counts,
            failures,
            last_success_ms,
            server,
            roots,
            held_back_deleted: crate::db::mirror::held_back(c)?,
        })
    })?;
    Ok(Some(Status {
        daemon_pid: daemon_pid(state_dir),
        ..status
    }))
}

/// `12s ago`, `5m ago`, `3h ago`, `2d ago`.
pub(crate) fn ago(ms: i64) -> String {
    let secs = ((db::now_ms() - ms) / 1000).max(0);
    match secs {
        0..=119 => format!("{secs}s ago"),
        120..=7199 => format!("{}m ago", secs / 60),
        7200..=172_799 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

impl Status {
    pub fn count(&self, state: JobState) -> i64 {
        self.counts
            .iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| *n)
    }

    /// The text `status` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = match &self.daemon_pid {
            Some(pid) if !pid.is_empty() => writeln!(out, "daemon:       running (pid {pid})"),
            Some(_) => writeln!(out, "daemon:       running"),
            None => writeln!(out, "daemon:       not running"),
        };
        if let Some(server) = &self.server {
            let api = server.split_whitespace().next().unwrap_or(server);
            let _ = writeln!(out, "server:       {api}");
        }
        let _ = match self.last_success_ms {
            Some(ms) => writeln!(out, "last backup:  {}", ago(ms)),
            None => writeln!(out, "last backup:  never"),
        };
        for (root, state) in &self.roots {
            let shown = if state.starts_with("ok") {
                "ok".to_string()
            } else {
                state.clone()
            };
            let _ = writeln!(out, "root:         {root}: {shown}");
        }
        let _ = writeln!(out, "files:");
        for (state, n) in &self.counts {
            if *n > 0 || matches!(state, JobState::Done | JobState::Failed | JobState::Queued) {
                let _ = writeln!(out, "  {:<10} {n}", state.as_str());
            }
        }
        if self.held_back_deleted > 0 {
            let _ = writeln!(
                out,
                "held back:    {} files: their photos were deleted or trashed on the server by \
                 the user, so they are not uploaded again (mirror.reupload_deleted = true \
                 changes that; `immish-sync diff` lists them)",
                self.held_back_deleted
            );
        }
        if !self.failures.is_empty() {
            let _ = writeln!(out, "recent problems:");
            for f in &self.failures {
                let path = String::from_utf8_lossy(&f.path);
                let reason = f.reason.as_deref().unwrap_or("no reason recorded");
                let when = match (f.state, f.next_attempt_at_ms) {
                    (JobState::Retry, Some(at)) if at > db::now_ms() => {
                        format!(
                            "retry #{} in {}s",
                            f.attempts + 1,
                            (at - db::now_ms()) / 1000
                        )
                    }
                    (JobState::Retry, _) => format!("retry #{} due", f.attempts + 1),
                    _ => format!("failed {}", ago(f.updated_at_ms)),
                };
                let _ = writeln!(out, "  {path}\n    {when}: {reason}");
            }
            if self.count(JobState::Failed) > 0 {
                let _ = writeln!(
                    out,
                    "failed files are tried again when they change, or now with `immish-sync retry`"
                );
            }
        }
        out
    }
}
