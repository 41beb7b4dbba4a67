//! `immish-sync status`: what the queue holds, what failed and why, and whether a daemon is
//! running, read from the state database without disturbing a running daemon.
//!
//! [`Status`] is plain data, printed as JSON by `status --json` and served as
//! `/status.json` (docs/STATUS.md#status-json): its fields are an interface people script
//! against, so a change adds a field and never renames or repurposes one.
//!
//! Trouble comes first and says since when and what happens next: the connection state the
//! daemon recorded, work a dead daemon left half-done (shown as queued, not as live), files
//! gone locally (apart from the backed-up ones), files whose only server copy is in the trash.
//!
//! Must not: write to the database or take the daemon's lock for longer than a probe.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Serialize, Serializer};

use crate::db::meta::{
    self, ConnectionState, LastPull, LiveState, PullError, RootState, ServerInfo, SkippedEntries,
    UserPause,
};
use crate::db::queue::{self, JobReport};
use crate::db::{self, catalogue, Db, DbError};
use crate::human::ago;
use crate::lock::{self, Holder};
use crate::model::JobState;

/// The version of the shape of [`Status`] as JSON (docs/STATUS.md#status-json). Fields are
/// only ever added; this changes only if one had to change its meaning.
pub const SCHEMA: u32 = 1;

/// A daemon whose live record is older than this is shown as not answering.
pub const LIVE_STALE_MS: i64 = 30_000;

mod accounts;

/// Everything `status` shows.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// [`SCHEMA`].
    pub schema: u32,
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
    /// How the daemon last found the server (it may be stale when no daemon runs).
    pub connection: Option<ConnectionState>,
    /// Files gone from their root; not in [`Status::counts`].
    pub missing_files: i64,
    /// Present files whose only server copy is in the server's trash (not backed up).
    pub in_trash_only: i64,
    /// What the user paused with `immish-sync pause` (whole agent, roots), since when.
    pub user_paused: meta::UserPauses,
    /// The server's dialect and version as last connected.
    pub server_info: Option<ServerInfo>,
    /// The last pull of the server's assets that completed, and the error of a later one.
    pub last_pull: Option<LastPull>,
    pub last_pull_error: Option<PullError>,
    /// Uploads paused by the user (`immish-sync pause`); `null` when not.
    pub paused: Option<UserPause>,
    /// What the running daemon is doing; `null` when no daemon runs.
    pub activity: Option<Activity>,
    /// Files whose changed bytes went up as a new asset beside the old one
    /// (docs/ARCHITECTURE.md#edited-files).
    pub edited_files: i64,
    /// The other `[[accounts]]` with state here, each with the fields above for its own
    /// state (docs/STATUS.md#accounts); empty without them. The fields above are
    /// `[server]`'s account.
    pub accounts: Vec<accounts::AccountStatus>,
    /// Files archived or deleted locally after upload, and files held back from it
    /// (docs/ARCHITECTURE.md#after-upload).
    pub after_upload: crate::db::after_upload::Counts,
    /// Photos whose XMP sidecar was created or edited after they went up (reported, not
    /// sent again; docs/ARCHITECTURE.md#sidecars).
    pub late_sidecars: i64,
    /// `[[pull]]` folders and their copies (docs/STATUS.md#status-json); empty when none
    /// ever pulled.
    pub pull: Vec<crate::db::pull::FolderCounts>,
    /// Why this account stopped while the agent's other accounts go on (its state broken:
    /// docs/ARCHITECTURE.md#accounts); `null` while it runs, or with no daemon.
    pub failed: Option<String>,
    /// Why this account's state could not be read (only in `accounts`; the other fields
    /// are then empty); `null` when it was read.
    pub error: Option<String>,
}

/// What the running daemon is doing (docs/STATUS.md#daemon).
#[derive(Clone, Debug, Serialize)]
pub struct Activity {
    /// One line for people: `uploading 3 files`, `idle, watching for new files`…
    pub doing: String,
    /// The daemon has not refreshed its record for [`LIVE_STALE_MS`]: it hangs.
    pub stale: bool,
    #[serde(flatten)]
    pub live: LiveState,
}

/// A root as its last scan or the watcher left it.
#[derive(Clone, Debug, Serialize)]
pub struct RootStatus {
    /// As displayed (lossy for a path that is not UTF-8).
    pub path: String,
    #[serde(flatten)]
    pub state: RootState,
    /// What its last walk passed over (symlinks, FIFOs…), when a walk recorded it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<SkippedEntries>,
    /// Missing, empty or unreadable: its files are left alone until it is back.
    pub paused: bool,
    #[serde(flatten)]
    pub files: RootFiles,
}

/// What one root holds (files present locally).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct RootFiles {
    /// Files known (every state).
    pub files: i64,
    pub backed_up: i64,
    /// Not backed up yet: queued, in flight, or waiting to retry.
    pub queued: i64,
    pub failed: i64,
    /// Not uploaded because their photo was deleted or trashed on the server.
    pub held_back: i64,
    /// Files not taken yet because they look unfinished.
    pub waiting: i64,
    /// Size of the files known, and of those backed up.
    pub bytes: i64,
    pub backed_up_bytes: i64,
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

/// `None` when there is no state yet. With `[[accounts]]`, a `[server]`'s database that
/// cannot be read is this account's `error`, and the other accounts are shown all the same
/// (docs/STATUS.md#accounts); without them it is the error.
pub fn read(state_dir: &Path) -> Result<Option<Status>, DbError> {
    if !state_dir.join(db::DB_FILE).exists() {
        return Ok(None);
    }
    let others = accounts::read(state_dir);
    let mut status = match read_one(state_dir) {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(None),
        Err(e) if !others.is_empty() => Status {
            daemon: lock::holder(state_dir),
            ..accounts::unreadable(&e)
        },
        Err(e) => return Err(e),
    };
    status.accounts = others;
    // Which accounts stopped, from the freshest record of a running account: the stopped
    // one's own may be what broke, or is no longer written (docs/STATUS.md#accounts).
    let stopped = status.stopped_accounts();
    if let Some(why) = stopped.get(crate::config::DEFAULT_ACCOUNT) {
        status.failed = Some(why.clone());
        status.refresh_doing();
    }
    status.mark_failed(&stopped);
    Ok(Some(status))
}

/// One state directory's status, `[server]`'s or an account's, without the other accounts.
fn read_one(state_dir: &Path) -> Result<Option<Status>, DbError> {
    let path = state_dir.join(db::DB_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let status = read_own(&path)?;
    let mut status = Status {
        daemon: lock::holder(state_dir),
        ..status
    };
    // A root is paused by its watcher (gone, unreadable) or by the user's pause of it or of
    // the whole agent (docs/STATUS.md#status-json).
    let user = status.user_paused.clone();
    for r in &mut status.roots {
        r.paused |= user.all_since_ms.is_some() || user.root_since(&r.path).is_some();
    }
    if status.daemon.is_none() {
        // The record of a daemon that stopped says nothing about now.
        status.activity = None;
    }
    if let Some(live) = status.activity.as_ref().map(|a| a.live.clone()) {
        status.set_live(live);
    }
    Ok(Some(status))
}

/// The state database's own part of a [`Status`] (no daemon, no other accounts).
fn read_own(path: &Path) -> Result<Status, DbError> {
    let db = Db::open_readonly(path)?;
    let status = db.call_blocking(|c| {
        let counts = catalogue::root_counts(c)?;
        let waiting = crate::db::waiting::count_by_root(c)?;
        let files_of = |path: &str| {
            let mut f = RootFiles::default();
            if let Some(r) = counts
                .iter()
                .find(|r| String::from_utf8_lossy(&r.root) == path)
            {
                f = RootFiles {
                    files: r.files,
                    backed_up: r.backed_up,
                    queued: r.queued,
                    failed: r.failed,
                    held_back: r.held_back,
                    waiting: 0,
                    bytes: r.bytes,
                    backed_up_bytes: r.backed_up_bytes,
                };
            }
            f.waiting = waiting
                .iter()
                .filter(|(root, _)| String::from_utf8_lossy(root) == path)
                .map(|(_, n)| n)
                .sum();
            f
        };
        Ok(Status {
            schema: SCHEMA,
            daemon: None,
            server: meta::server_identity(c)?.map(|id| id.api_root),
            last_success_ms: meta::last_success_ms(c)?,
            roots: meta::root_states(c)?
                .into_iter()
                .map(|(path, state)| {
                    let skipped = meta::root_skipped(c, &path)?;
                    let files = files_of(&path);
                    Ok(RootStatus {
                        paused: matches!(state, RootState::Paused { .. }),
                        path,
                        state,
                        skipped,
                        files,
                    })
                })
                .collect::<rusqlite::Result<_>>()?,
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
            connection: meta::connection(c)?,
            missing_files: catalogue::missing_files(c)?,
            in_trash_only: crate::db::mirror::trash_only(c, 0)?.0,
            user_paused: meta::user_pauses(c)?,
            server_info: meta::server_info(c)?,
            last_pull: meta::last_pull(c)?,
            last_pull_error: meta::last_pull_error(c)?,
            paused: meta::paused_by_user(c)?,
            activity: meta::live_state(c)?.map(|live| Activity {
                doing: String::new(),
                stale: false,
                live,
            }),
            edited_files: crate::db::edited::count(c)?,
            accounts: Vec::new(),
            after_upload: crate::db::after_upload::counts(c)?,
            late_sidecars: crate::db::sidecars::reported(c)?,
            pull: crate::db::pull::counts(c)?,
            failed: None,
            error: None,
        })
    })?;
    Ok(status)
}

impl Status {
    /// The accounts in `failed` (name → why, `[server]`'s not among them) as stopped; one
    /// without any state to read (it could not even open it) is listed, empty, with why.
    pub fn mark_failed(&mut self, failed: &std::collections::BTreeMap<String, String>) {
        for a in &mut self.accounts {
            if let Some(why) = failed.get(&a.name) {
                a.status.failed = Some(why.clone());
                a.status.refresh_doing();
            }
        }
        for (name, why) in failed {
            if name == crate::config::DEFAULT_ACCOUNT
                || self.accounts.iter().any(|a| a.name == *name)
            {
                continue;
            }
            let mut status = Status::empty();
            status.server = None;
            status.failed = Some(why.clone());
            self.accounts.push(accounts::AccountStatus {
                name: name.clone(),
                status,
            });
        }
        self.accounts.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// `doing` again, after what it depends on changed (an account found stopped).
    fn refresh_doing(&mut self) {
        if let Some(mut activity) = self.activity.take() {
            activity.doing = self.doing(&activity);
            self.activity = Some(activity);
        }
    }

    /// The accounts that stopped with an error (name → why, `default` for `[server]`'s),
    /// as the freshest record of a running account tells: every account records every
    /// other's (docs/STATUS.md#daemon).
    fn stopped_accounts(&self) -> std::collections::BTreeMap<String, String> {
        let freshest = self
            .each_account()
            .into_iter()
            .filter(|(_, s)| s.daemon.is_some())
            .filter_map(|(name, s)| Some((name, &s.activity.as_ref()?.live)))
            .max_by_key(|(_, live)| live.at_ms);
        let Some((name, live)) = freshest else {
            return Default::default();
        };
        let mut all = live.stopped_accounts.clone();
        if let Some(why) = &live.stopped {
            all.insert(name.to_owned(), why.clone());
        }
        all
    }

    /// Every account's status, `[server]`'s (`default`) first.
    pub fn each_account(&self) -> Vec<(&str, &Status)> {
        std::iter::once((crate::config::DEFAULT_ACCOUNT, self))
            .chain(self.accounts.iter().map(|a| (a.name.as_str(), &a.status)))
            .collect()
    }

    /// A state with nothing in it (for tests of what reads a status, and an account whose
    /// state cannot be read).
    pub(crate) fn empty() -> Status {
        Status {
            schema: SCHEMA,
            daemon: None,
            server: Some("http://h/api".into()),
            last_success_ms: None,
            roots: vec![],
            counts: JobState::ALL
                .iter()
                .map(|&state| StateCount { state, count: 0 })
                .collect(),
            failures: vec![],
            held_back_deleted: 0,
            waiting: WaitingFiles::default(),
            connection: None,
            missing_files: 0,
            in_trash_only: 0,
            user_paused: meta::UserPauses::default(),
            edited_files: 0,
            after_upload: Default::default(),
            late_sidecars: 0,
            pull: vec![],
            server_info: None,
            last_pull: None,
            last_pull_error: None,
            paused: None,
            activity: None,
            accounts: Vec::new(),
            failed: None,
            error: None,
        }
    }

    /// Shows `live` as what the daemon does now (the daemon's own, fresher numbers, for
    /// the HTTP endpoint; or the record read from the database).
    pub fn set_live(&mut self, live: LiveState) {
        let stale = db::now_ms() - live.at_ms > LIVE_STALE_MS;
        if live.stopped.is_some() {
            self.failed = live.stopped.clone();
        }
        let mut activity = Activity {
            doing: String::new(),
            stale,
            live,
        };
        activity.doing = self.doing(&activity);
        self.activity = Some(activity);
    }

    /// One line for people of what the daemon is doing (docs/STATUS.md#daemon); outside
    /// the upload windows it ends with when uploads resume.
    fn doing(&self, a: &Activity) -> String {
        let line = self.doing_now(a);
        match (&a.live.uploads_resume_at, a.stale) {
            // Uploads in flight when a window closed finish; a pause or an outage is said
            // first.
            (Some(at), false)
                if a.live.sending_files > 0
                    || self.paused.is_some()
                    || matches!(
                        self.connection,
                        Some(
                            ConnectionState::Unreachable { .. }
                                | ConnectionState::Refused { .. }
                                | ConnectionState::Paused { .. }
                        )
                    ) =>
            {
                format!("{line}; uploads resume at {at}")
            }
            (Some(at), false) => format!("outside the upload windows; uploads resume at {at}"),
            _ => line,
        }
    }

    fn doing_now(&self, a: &Activity) -> String {
        if let Some(why) = &self.failed {
            return format!("stopped: {why}");
        }
        if a.stale {
            return format!(
                "not answering: its last sign of life was {}",
                ago(a.live.at_ms)
            );
        }
        match &self.connection {
            Some(ConnectionState::Unreachable { since_ms, .. }) => {
                return format!("waiting for the server since {}", ago(*since_ms))
            }
            Some(ConnectionState::Refused { .. }) => {
                return "waiting for the server to accept the credentials".to_owned()
            }
            Some(ConnectionState::Paused { reason, .. }) => {
                return format!("uploads paused: {reason}")
            }
            _ => {}
        }
        if let Some(p) = &self.paused {
            return format!("uploads paused by the user since {}", ago(p.since_ms));
        }
        let n = |st: JobState| self.count(st);
        let plural = |k: i64| if k == 1 { "file" } else { "files" };
        let sending = n(JobState::Uploading) + n(JobState::Verifying);
        let hashing = n(JobState::Hashing) + n(JobState::Checking);
        if sending > 0 && a.live.sending_total_bytes > 0 {
            format!(
                "uploading {sending} {} ({} of {} sent)",
                plural(sending),
                crate::human::megabytes(a.live.sending_bytes),
                crate::human::megabytes(a.live.sending_total_bytes)
            )
        } else if sending > 0 {
            format!("uploading {sending} {}", plural(sending))
        } else if hashing > 0 {
            format!("checking {hashing} {}", plural(hashing))
        } else if a.live.phase == "scanning" {
            "scanning the roots".to_owned()
        } else if a.live.phase == "connecting" {
            "connecting to the server".to_owned()
        } else if n(JobState::Queued) > 0 {
            let q = n(JobState::Queued);
            format!("{q} {} queued", plural(q))
        } else if n(JobState::Retry) > 0 {
            "waiting to retry failed uploads".to_owned()
        } else {
            "idle, watching for new files".to_owned()
        }
    }

    /// Bytes sent so far of the uploads in flight, as the daemon last recorded them (0
    /// without a running daemon).
    pub fn bytes_in_flight(&self) -> u64 {
        self.activity.as_ref().map_or(0, |a| a.live.sending_bytes)
    }

    /// Files not backed up yet (queued, in flight, or waiting to retry).
    pub fn queue_depth(&self) -> i64 {
        self.counts
            .iter()
            .filter(|c| {
                c.state.is_in_flight() || matches!(c.state, JobState::Queued | JobState::Retry)
            })
            .map(|c| c.count)
            .sum()
    }
}

impl Status {
    /// `server unreachable since 5m ago; next try in 30s: <error>`, or as it was when the
    /// daemon last ran.
    fn connection_line(&self, c: &ConnectionState) -> String {
        let now = db::now_ms();
        let next = |at: &Option<i64>, what: &str| match (at, &self.daemon) {
            (_, None) => String::new(),
            (Some(t), Some(_)) if *t > now => format!("; {what} in {}s", (t - now + 999) / 1000),
            (Some(_), Some(_)) => format!("; {what} now"),
            (None, Some(_)) => String::new(),
        };
        let line = match c {
            ConnectionState::Connected { since_ms } => {
                format!("connected since {}", ago(*since_ms))
            }
            ConnectionState::Unreachable {
                since_ms,
                next_try_ms,
                error,
            } => format!(
                "server unreachable since {}{}: {error}",
                ago(*since_ms),
                next(next_try_ms, "next try")
            ),
            ConnectionState::Refused {
                since_ms,
                next_try_ms,
                error,
            } => format!(
                "the server refuses the credentials since {}{}: {error}",
                ago(*since_ms),
                next(next_try_ms, "next try")
            ),
            ConnectionState::Paused {
                since_ms,
                until_ms,
                reason,
            } => format!(
                "uploads paused since {}{}: {reason}",
                ago(*since_ms),
                next(until_ms, "resuming")
            ),
        };
        if self.daemon.is_none() {
            format!("{line} (when the daemon last ran)")
        } else {
            line
        }
    }

    pub fn count(&self, state: JobState) -> i64 {
        self.counts
            .iter()
            .find(|c| c.state == state)
            .map_or(0, |c| c.count)
    }

    /// When the config now names another server than the one this state belongs to: the
    /// sentence that says its "backed up" counts are the old server's
    /// (docs/RELIABILITY.md#another-server-or-user-configured).
    pub fn other_server_note(&self, configured: &str) -> Option<String> {
        let recorded = self.server.as_deref()?;
        let base = configured.trim_end_matches('/');
        let same = recorded == base
            || recorded
                .strip_prefix(base)
                .is_some_and(|rest| rest.starts_with('/'));
        if same {
            return None;
        }
        Some(format!(
            "NOT backed up to {base}: this state belongs to {recorded}, and the files counted \
             as backed up above are on that server; the next `scan` or `run` checks every file \
             against {base} and uploads what it lacks"
        ))
    }

    /// The text `status` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = match &self.daemon {
            Some(Holder { pid: Some(pid) }) => writeln!(out, "daemon:       running (pid {pid})"),
            Some(Holder { pid: None }) => writeln!(out, "daemon:       running"),
            None => writeln!(out, "daemon:       not running"),
        };
        if let Some(why) = &self.failed {
            // `[server]`'s account, above the others, says its name.
            let this = if self.accounts.is_empty() {
                "this account".to_owned()
            } else {
                format!("this account ({})", crate::config::DEFAULT_ACCOUNT)
            };
            let _ = writeln!(
                out,
                "FAILED:       {this} stopped: {why}; the other accounts go on, a restart of \
                 the daemon tries it again"
            );
        }
        if let Some(why) = &self.error {
            let _ = writeln!(out, "ERROR:        cannot read this account's state: {why}");
        }
        if let Some(since) = self.user_paused.all_since_ms {
            let _ = writeln!(
                out,
                "paused:       uploads paused by the user since {} (`immish-sync resume` lifts it)",
                ago(since)
            );
        }
        if let Some(api) = &self.server {
            let _ = match &self.server_info {
                Some(ServerInfo {
                    dialect,
                    version: Some(v),
                }) => writeln!(out, "server:       {api} ({dialect} {v})"),
                _ => writeln!(out, "server:       {api}"),
            };
        }
        if let Some(a) = &self.activity {
            let _ = writeln!(out, "doing:        {}", a.doing);
            if let Some(http) = &a.live.http {
                let _ = writeln!(out, "status page:  http://{http}/");
            }
        }
        if let Some(c) = &self.connection {
            let _ = writeln!(out, "connection:   {}", self.connection_line(c));
        }
        let _ = match self.last_success_ms {
            Some(ms) => writeln!(out, "last backup:  {}", ago(ms)),
            None => writeln!(out, "last backup:  never"),
        };
        for root in &self.roots {
            let skipped = match root.skipped {
                Some(k) if k.total() > 0 => format!(" (skipped: {k})"),
                _ => String::new(),
            };
            let held = match self.user_paused.root_since(&root.path) {
                Some(since) => format!(" (uploads paused by the user since {})", ago(since)),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "root:         {}: {}{skipped}{held}",
                root.path, root.state
            );
        }
        // A root paused before any walk recorded it.
        for r in &self.user_paused.roots {
            if !self.roots.iter().any(|x| x.path == r.path) {
                let _ = writeln!(
                    out,
                    "root:         {}: uploads paused by the user since {}",
                    r.path,
                    ago(r.since_ms)
                );
            }
        }
        let _ = writeln!(out, "files:");
        // Without a daemon nothing is hashing or uploading: a job in such a state was
        // interrupted (a kill, a crash) and starts over when a daemon or scan starts.
        let interrupted: i64 = if self.daemon.is_none() {
            self.counts
                .iter()
                .filter(|c| c.state.is_in_flight())
                .map(|c| c.count)
                .sum()
        } else {
            0
        };
        for &StateCount { state, count: n } in &self.counts {
            if self.daemon.is_none() && state.is_in_flight() {
                continue;
            }
            if n > 0 || matches!(state, JobState::Done | JobState::Failed | JobState::Queued) {
                let _ = writeln!(out, "  {:<10} {n}", state.as_str());
            }
        }
        if interrupted > 0 {
            let _ = writeln!(
                out,
                "  {:<10} {interrupted} (interrupted; resumes when the daemon starts)",
                JobState::Queued.as_str()
            );
        }
        if self.missing_files > 0 {
            let _ = writeln!(
                out,
                "  {:<10} {} (gone from their root locally; not counted as backed up)",
                "missing", self.missing_files
            );
        }
        if self.edited_files > 0 {
            let _ = writeln!(
                out,
                "  {:<10} {} (changed after upload: the new version went up as a new asset, \
                 the old one stays on the server)",
                "edited", self.edited_files
            );
        }
        if self.late_sidecars > 0 {
            let _ = writeln!(
                out,
                "  {:<10} {} (XMP sidecars created or edited after their photo went up: not \
                 sent again, the server keeps what it read at the upload)",
                "sidecars", self.late_sidecars
            );
        }
        let au = &self.after_upload;
        for (n, label, what) in [
            (
                au.archived,
                "archived",
                "moved to the archive folder after upload",
            ),
            (
                au.deleted,
                "removed",
                "deleted locally after upload; the server holds them",
            ),
            (
                au.held,
                "kept",
                "not archived or deleted after upload yet: see the log for why",
            ),
        ] {
            if n > 0 {
                let _ = writeln!(out, "  {label:<10} {n} ({what})");
            }
        }
        if self.in_trash_only > 0 {
            let _ = writeln!(
                out,
                "NOT backed up: {} files are in the server's trash only: restore them on the \
                 server or they will be lost when the trash empties",
                self.in_trash_only
            );
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
        for p in &self.pull {
            render_pull(p, &mut out);
        }
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
        accounts::render(&self.accounts, &mut out);
        out
    }
}

/// One `[[pull]]` folder's line (docs/STATUS.md#pull).
fn render_pull(p: &crate::db::pull::FolderCounts, out: &mut String) {
    let mut line = format!(
        "pull:         {}: {} pulled, {} pending, {} failed",
        p.path, p.pulled, p.pending, p.failed
    );
    if p.kept > 0 {
        line.push_str(&format!(", {} kept after deletion on the server", p.kept));
    }
    if p.moved > 0 {
        line.push_str(&format!(", {} moved to .deleted/", p.moved));
    }
    let _ = writeln!(out, "{line}");
    if let (true, Some(e)) = (p.failed > 0, &p.last_error) {
        let _ = writeln!(out, "  last failure: {e}");
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
            schema: SCHEMA,
            server_info: None,
            last_pull: None,
            last_pull_error: None,
            paused: None,
            activity: None,
            edited_files: 0,
            accounts: Vec::new(),
            after_upload: Default::default(),
            late_sidecars: 0,
            pull: vec![],
            failed: None,
            error: None,
            daemon: Some(Holder { pid: Some(42) }),
            server: Some("http://h:2283/api".into()),
            last_success_ms: None,
            roots: vec![
                RootStatus {
                    path: "/photos".into(),
                    state: RootState::Ok { at_ms: Some(7) },
                    skipped: None,
                    paused: false,
                    files: RootFiles::default(),
                },
                RootStatus {
                    path: "/usb".into(),
                    state: RootState::Paused {
                        reason: "it is empty (an unmounted disk?)".into(),
                    },
                    skipped: None,
                    paused: true,
                    files: RootFiles::default(),
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
            connection: None,
            missing_files: 0,
            in_trash_only: 0,
            user_paused: meta::UserPauses::default(),
        }
    }

    /// Trouble says what, since when and what next; a dead daemon's half-done work is
    /// queued, not live.
    #[test]
    fn trouble_is_named_with_its_start_and_next_step() {
        let now = db::now_ms();
        let mut s = sample();
        s.connection = Some(ConnectionState::Unreachable {
            since_ms: now - 300_000,
            next_try_ms: Some(now + 30_000),
            error: "connection refused".into(),
        });
        s.roots[0].skipped = Some(SkippedEntries {
            symlinks: 3,
            fifos: 1,
            sockets: 0,
            devices: 0,
        });
        s.missing_files = 2;
        s.in_trash_only = 1;
        for c in &mut s.counts {
            if c.state == JobState::Uploading {
                c.count = 123;
            }
        }
        let text = s.render();
        for want in [
            "connection:   server unreachable since 5m ago; next try in 30s: connection refused\n",
            "root:         /photos: ok (skipped: 3 symlinks, 1 FIFO)\n",
            "  uploading  123\n",
            "  missing    2 (gone",
            "in the server's trash only",
        ] {
            assert!(text.contains(want), "{want:?} in\n{text}");
        }
        s.daemon = None;
        let text = s.render();
        assert!(!text.contains("uploading"), "{text}");
        assert!(
            text.contains("  queued     123 (interrupted; resumes when the daemon starts)\n"),
            "{text}"
        );
        assert!(
            text.contains("connection refused (when the daemon last ran)\n"),
            "{text}"
        );
        assert!(!text.contains("next try"), "{text}");
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
            serde_json::json!({
                "path": "/photos", "state": "ok", "at_ms": 7, "paused": false,
                "files": 0, "backed_up": 0, "queued": 0, "failed": 0, "held_back": 0,
                "waiting": 0, "bytes": 0, "backed_up_bytes": 0,
            })
        );
        assert_eq!(v["schema"], SCHEMA);
        assert_eq!(v["roots"][1]["paused"], true);
        assert_eq!(v["roots"][1]["state"], "paused");
        assert_eq!(
            v["counts"][5],
            serde_json::json!({"state": "done", "count": 3})
        );
        assert_eq!(v["held_back_deleted"], 0);
        assert_eq!(v["waiting"]["count"], 0);
    }

    /// A running daemon's live record becomes one line of what it does, and the address of
    /// its status page; a record that stopped moving says the daemon does not answer.
    #[test]
    fn the_text_says_what_the_daemon_is_doing() {
        let mut s = sample();
        for c in &mut s.counts {
            if c.state == JobState::Uploading {
                c.count = 2;
            }
        }
        s.set_live(LiveState {
            at_ms: db::now_ms(),
            phase: "watching".into(),
            http: Some("127.0.0.1:9464".into()),
            ..Default::default()
        });
        let text = s.render();
        assert!(text.contains("doing:        uploading 2 files\n"), "{text}");
        assert!(
            text.contains("status page:  http://127.0.0.1:9464/\n"),
            "{text}"
        );
        s.set_live(LiveState {
            at_ms: db::now_ms() - 2 * LIVE_STALE_MS,
            ..Default::default()
        });
        assert!(
            s.render().contains("doing:        not answering"),
            "{}",
            s.render()
        );
        assert_eq!(serde_json::to_value(&s).unwrap()["activity"]["stale"], true);
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
