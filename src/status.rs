//! `immish-sync status`: what the queue holds, what failed and why, and whether a daemon is
//! running, read from the state database without disturbing a running daemon.
//!
//! [`Status`] is plain data, meant to be printed as JSON one day (`status --json`): its
//! fields are an interface, so a change adds a field and never renames or repurposes one.
//!
//! Must not: write to the database or take the daemon's lock for longer than a probe.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Serialize, Serializer};

use crate::db::meta::{self, RootState};
use crate::db::queue::{self, JobReport};
use crate::db::{self, catalogue, Db, DbError};
use crate::human::ago;
use crate::lock::{self, Holder};
use crate::model::JobState;

/// Everything `status` shows.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// The daemon holding the state directory; `None` when none runs.
    pub daemon: Option<Holder>,
    /// The API root of the server the state belongs to.
    pub server: Option<String>,
    /// When a file was last backed up (unix ms).
    pub last_success_ms: Option<i64>,
    /// Every root ever recorded, in path order.
    pub roots: Vec<RootStatus>,
    /// Jobs per state, every state present.
    pub counts: Vec<StateCount>,
    /// The most recent failed jobs and jobs waiting to retry, newest first.
    pub failures: Vec<Problem>,
    /// Files not uploaded because their asset was trashed or deleted on the server.
    pub held_back_deleted: i64,
    /// Files not taken yet because they look unfinished.
    pub waiting: WaitingFiles,
}

/// A root as its last scan or the watcher left it.
#[derive(Clone, Debug, Serialize)]
pub struct RootStatus {
    /// As displayed (lossy for a path that is not UTF-8).
    pub path: String,
    #[serde(flatten)]
    pub state: RootState,
}

/// How many jobs are in one state.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct StateCount {
    #[serde(serialize_with = "state_name")]
    pub state: JobState,
    pub count: i64,
}

/// A job that failed or waits to retry.
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    /// The file (lossy for a path that is not UTF-8).
    pub path: String,
    #[serde(serialize_with = "state_name")]
    pub state: JobState,
    pub reason: Option<String>,
    pub attempts: u32,
    pub updated_at_ms: i64,
    /// When the next attempt is due (unix ms), for `retry`.
    pub next_attempt_at_ms: Option<i64>,
}

impl From<JobReport> for Problem {
    fn from(j: JobReport) -> Problem {
        Problem {
            path: String::from_utf8_lossy(&j.path).into_owned(),
            state: j.state,
            reason: j.reason,
            attempts: j.attempts,
            updated_at_ms: j.updated_at_ms,
            next_attempt_at_ms: j.next_attempt_at_ms,
        }
    }
}

/// A job state as the database and the text output name it (`queued`, `failed`…).
fn state_name<S: Serializer>(state: &JobState, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(state.as_str())
}

/// `None` when there is no state yet.
pub fn read(state_dir: &Path) -> Result<Option<Status>, DbError> {
    let path = state_dir.join(db::DB_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let db = Db::open_readonly(&path)?;
    let status = db.call_blocking(|c| {
        Ok(Status {
            daemon: None,
            server: meta::server_identity(c)?.map(|id| id.api_root),
            last_success_ms: meta::last_success_ms(c)?,
            roots: meta::root_states(c)?
                .into_iter()
                .map(|(path, state)| RootStatus { path, state })
                .collect(),
            counts: catalogue::counts_by_state(c)?
                .into_iter()
                .map(|(state, count)| StateCount { state, count })
                .collect(),
            failures: queue::recent(c, &[JobState::Failed, JobState::Retry], 10)?
                .into_iter()
                .map(Problem::from)
                .collect(),
            held_back_deleted: crate::db::mirror::held_back(c)?,
            waiting: WaitingFiles::read(c)?,
        })
    })?;
    Ok(Some(Status {
        daemon: lock::holder(state_dir),
        ..status
    }))
}

impl Status {
    pub fn count(&self, state: JobState) -> i64 {
        self.counts
            .iter()
            .find(|c| c.state == state)
            .map_or(0, |c| c.count)
    }

    /// The text `status` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = match &self.daemon {
            Some(Holder { pid: Some(pid) }) => writeln!(out, "daemon:       running (pid {pid})"),
            Some(Holder { pid: None }) => writeln!(out, "daemon:       running"),
            None => writeln!(out, "daemon:       not running"),
        };
        if let Some(api) = &self.server {
            let _ = writeln!(out, "server:       {api}");
        }
        let _ = match self.last_success_ms {
            Some(ms) => writeln!(out, "last backup:  {}", ago(ms)),
            None => writeln!(out, "last backup:  never"),
        };
        for root in &self.roots {
            let _ = writeln!(out, "root:         {}: {}", root.path, root.state);
        }
        let _ = writeln!(out, "files:");
        for &StateCount { state, count: n } in &self.counts {
            if n > 0 || matches!(state, JobState::Done | JobState::Failed | JobState::Queued) {
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
        self.waiting.render(&mut out);
        if !self.failures.is_empty() {
            let _ = writeln!(out, "recent problems:");
            for f in &self.failures {
                let path = &f.path;
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

/// Files that wait because they look unfinished (still open for writing, or cut short):
/// how many, and the longest waiting of them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WaitingFiles {
    pub count: i64,
    /// Up to [`WAITING_SHOWN`], the longest waiting first.
    pub files: Vec<WaitingFile>,
}

/// One file that waits.
#[derive(Clone, Debug, Serialize)]
pub struct WaitingFile {
    /// Lossy for a path that is not UTF-8.
    pub path: String,
    pub kind: crate::db::waiting::WaitKind,
    pub reason: String,
    /// Since when (unix ms).
    pub since_ms: i64,
}

/// Waiting files `status` names one by one.
pub const WAITING_SHOWN: usize = 10;

impl WaitingFiles {
    fn read(c: &rusqlite::Connection) -> rusqlite::Result<WaitingFiles> {
        let (count, rows) = crate::db::waiting::list(c, WAITING_SHOWN)?;
        Ok(WaitingFiles {
            count,
            files: rows
                .into_iter()
                .map(|w| WaitingFile {
                    path: String::from_utf8_lossy(&w.path).into_owned(),
                    kind: w.kind,
                    reason: w.reason,
                    since_ms: w.since_ms,
                })
                .collect(),
        })
    }

    fn render(&self, out: &mut String) {
        if self.count == 0 {
            return;
        }
        let _ = writeln!(
            out,
            "waiting:      {} files look unfinished and are not taken yet (taken once \
             whole, or after watch.incomplete_limit)",
            self.count
        );
        for f in &self.files {
            let _ = writeln!(
                out,
                "  {}\n    since {}: {}",
                f.path,
                ago(f.since_ms),
                f.reason
            );
        }
        let more = self.count - self.files.len() as i64;
        if more > 0 {
            let _ = writeln!(out, "  and {more} more");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        Status {
            daemon: Some(Holder { pid: Some(42) }),
            server: Some("http://h:2283/api".into()),
            last_success_ms: None,
            roots: vec![
                RootStatus {
                    path: "/photos".into(),
                    state: RootState::Ok { at_ms: Some(7) },
                },
                RootStatus {
                    path: "/usb".into(),
                    state: RootState::Paused {
                        reason: "it is empty (an unmounted disk?)".into(),
                    },
                },
            ],
            counts: JobState::ALL
                .iter()
                .map(|&state| StateCount {
                    state,
                    count: i64::from(state == JobState::Done) * 3,
                })
                .collect(),
            failures: vec![],
            held_back_deleted: 0,
            waiting: WaitingFiles::default(),
        }
    }

    #[test]
    fn the_text_names_the_daemon_the_server_and_each_root() {
        let text = sample().render();
        for line in [
            "daemon:       running (pid 42)\n",
            "server:       http://h:2283/api\n",
            "last backup:  never\n",
            "root:         /photos: ok\n",
            "root:         /usb: paused it is empty (an unmounted disk?)\n",
            "  done       3\n",
            "  failed     0\n",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
        assert!(!text.contains("hashing"), "{text}");
    }

    /// The shape `status --json` will print: named fields, states by their names.
    #[test]
    fn the_report_serializes_as_plain_data() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["daemon"]["pid"], 42);
        assert_eq!(v["server"], "http://h:2283/api");
        assert_eq!(
            v["roots"][0],
            serde_json::json!({"path": "/photos", "state": "ok", "at_ms": 7})
        );
        assert_eq!(v["roots"][1]["state"], "paused");
        assert_eq!(
            v["counts"][5],
            serde_json::json!({"state": "done", "count": 3})
        );
        assert_eq!(v["held_back_deleted"], 0);
        assert_eq!(v["waiting"]["count"], 0);
    }

    #[test]
    fn waiting_files_are_counted_and_named_with_their_reason() {
        let mut s = sample();
        s.waiting = WaitingFiles {
            count: 12,
            files: vec![WaitingFile {
                path: "/photos/stall.mp4".into(),
                kind: crate::db::waiting::WaitKind::Incomplete,
                reason: "MP4/MOV: box 'mdat' ends at byte 9 but the file has 5 bytes".into(),
                since_ms: db::now_ms(),
            }],
        };
        let text = s.render();
        for want in [
            "waiting:      12 files",
            "/photos/stall.mp4\n",
            "box 'mdat'",
            "and 11 more",
        ] {
            assert!(text.contains(want), "{want:?} in\n{text}");
        }
        assert!(!sample().render().contains("waiting:"));
    }
}
