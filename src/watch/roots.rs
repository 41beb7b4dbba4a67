//! Roots: whether each root is there, and how it is followed while it is.
//!
//! Owns: the liveness of every root (missing or empty = paused and reported in `status`,
//! never "deleted"; when it is back, or was replaced by a remount, it is watched and walked
//! again), the choice between events and polling for each root (`watch.mode`, network and
//! FUSE filesystems found by `statfs`, the inotify limits with the hint to raise them), the
//! notify watcher of each root, and when a walk of a whole root is due (lost events, a root
//! back, the poll interval).
//!
//! Must not: look at pending paths or walk anything itself (a walk is done by the walks
//! part when [`Roots::walk_due`] says so), or block a runtime thread: the checks of a root
//! (`lstat`, `statfs`) and setting a watch up run on the blocking pool.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::RecommendedWatcher;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::bridge::{self, RawEvent, Shared};
use super::{Done, Jobs};
use crate::config::{WatchConfig, WatchMode};
use crate::db::{self, now_ms, Db};
use crate::scan::walk::Root;

/// Paused roots are looked at this often, or every `poll_interval` if that is shorter.
const PAUSED_RECHECK_MAX: Duration = Duration::from_secs(10);
/// Two walks of a root asked for by lost events are at least this far apart (an event
/// storm must not turn into back-to-back walks).
const RESCAN_MIN_GAP: Duration = Duration::from_secs(1);
/// The value suggested for `fs.inotify.max_user_watches`, and the packaged file setting it.
const SUGGESTED_MAX_WATCHES: u32 = 524_288;
const SYSCTL_SNIPPET: &str = "packaging/sysctl/60-immish-sync-inotify.conf";

/// How a root is followed while it is there.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Method {
    Events,
    /// Walked every `poll_interval`, for the reason given (said once in the log).
    Poll(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Liveness {
    /// Not looked at yet.
    Unknown,
    /// There, with the `(dev, ino)` of its directory (a remount changes it).
    Live {
        dev: u64,
        ino: u64,
    },
    Paused(String),
}

struct RootState {
    root: Arc<Root>,
    method: Method,
    /// The reason for polling last said in the log.
    told: Option<String>,
    watcher: Option<RecommendedWatcher>,
    live: Liveness,
    /// Its first check (and watch set-up) is done.
    started: bool,
    checking: bool,
    /// A notify watcher is to be set up (it is, when `setting_up`).
    needs_watch: bool,
    setting_up: bool,
    walking: bool,
    next_check: Instant,
    /// For a polled root: when its next walk is due.
    next_poll: Option<Instant>,
    /// A walk of the whole root is wanted (lost events, resumed, limit fallback).
    rescan: bool,
    last_rescan: Option<Instant>,
}

impl RootState {
    fn dev(&self) -> Option<u64> {
        match self.live {
            Liveness::Live { dev, .. } => Some(dev),
            _ => None,
        }
    }
}

/// A root that is there.
pub(super) struct Health {
    dev: u64,
    ino: u64,
    /// The network or FUSE filesystem it is on, if any.
    remote_fs: Option<&'static str>,
}

/// Why a root could not have a notify watcher.
enum WatchFailure {
    /// `fs.inotify.max_user_watches` reached.
    Limit,
    /// `fs.inotify.max_user_instances` reached.
    Instances,
    Other(String),
}

/// Every root, by its index in the configuration.
pub(super) struct Roots {
    cfg: WatchConfig,
    db: Db,
    /// What a notify watcher needs to send its events to the task.
    tx: mpsc::Sender<RawEvent>,
    shared: Arc<Shared>,
    list: Vec<RootState>,
    /// Root states to record for `status` (written by [`db::meta::set_root_state`]).
    notes: Vec<(PathBuf, db::meta::RootState)>,
    /// The inotify limit warnings were given (once per run each).
    limit_warned: bool,
    instances_warned: bool,
}

impl Roots {
    pub(super) fn new(
        roots: Vec<Root>,
        cfg: WatchConfig,
        db: Db,
        tx: mpsc::Sender<RawEvent>,
        shared: Arc<Shared>,
    ) -> Roots {
        let now = Instant::now();
        let method = match cfg.mode {
            WatchMode::Poll => Method::Poll("watch.mode = \"poll\"".into()),
            _ => Method::Events,
        };
        let list = roots
            .into_iter()
            .map(|root| RootState {
                root: Arc::new(root),
                method: method.clone(),
                told: None,
                watcher: None,
                live: Liveness::Unknown,
                started: false,
                checking: false,
                needs_watch: false,
                setting_up: false,
                walking: false,
                next_check: now,
                next_poll: None,
                rescan: false,
                last_rescan: None,
            })
            .collect();
        Roots {
            cfg,
            db,
            tx,
            shared,
            list,
            notes: Vec::new(),
            limit_warned: false,
            instances_warned: false,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.list.len()
    }

    pub(super) fn root(&self, i: usize) -> &Arc<Root> {
        &self.list[i].root
    }

    /// The device of root `i` while it is there (`None`: paused, or not looked at yet).
    pub(super) fn dev(&self, i: usize) -> Option<u64> {
        self.list.get(i).and_then(RootState::dev)
    }

    /// Root `i` is walked every `poll_interval` rather than followed by events: no close
    /// is ever seen there.
    pub(super) fn polled(&self, i: usize) -> bool {
        self.list
            .get(i)
            .is_some_and(|r| matches!(r.method, Method::Poll(_)))
    }

    /// Every root is watched, polled or known to be paused.
    pub(super) fn all_started(&self) -> bool {
        self.list.iter().all(|r| r.started)
    }

    /// Root `i` may have gone: look at it now rather than at its next check.
    pub(super) fn check_now(&mut self, i: usize, now: Instant) {
        self.list[i].next_check = now;
    }

    /// Something about root `i` could not be followed (a queue was full): walk it again.
    pub(super) fn want_rescan(&mut self, i: usize) {
        self.list[i].rescan = true;
    }

    /// Events of root `i` were lost.
    pub(super) fn on_lost_events(&mut self, i: usize) {
        tracing::debug!(root = %self.list[i].root.path.display(), "events were lost; walking the root again");
        self.list[i].rescan = true;
    }

    // ----- starting blocking work -----

    /// Writes the `status` lines due, and starts the watch set-ups and checks of roots
    /// that are due.
    pub(super) fn start_work(&mut self, now: Instant, tasks: &mut Jobs) {
        for (root, state) in self.notes.drain(..) {
            let db = self.db.clone();
            tasks.spawn_blocking(move || {
                db.call_blocking(|c| db::meta::set_root_state(c, &root, &state))?;
                Ok(Done::Noted)
            });
        }
        for i in 0..self.list.len() {
            let rs = &mut self.list[i];
            if rs.needs_watch && !rs.setting_up && !rs.checking {
                rs.needs_watch = false;
                rs.setting_up = true;
                let (root, tx, shared) = (rs.root.clone(), self.tx.clone(), self.shared.clone());
                // Setting a recursive watch up walks every folder of the root: blocking work.
                tasks.spawn_blocking(move || {
                    let result = bridge::start_watcher(&root, i, tx, shared);
                    Ok(Done::WatchSet { root: i, result })
                });
            }
            if !rs.checking && !rs.setting_up && now >= rs.next_check {
                rs.checking = true;
                let root = rs.root.clone();
                let auto = self.cfg.mode == WatchMode::Auto;
                tasks.spawn_blocking(move || {
                    let health = health(&root, auto);
                    Ok(Done::Checked { root: i, health })
                });
            }
        }
    }

    /// The next check of a root this loop must start (`None`: every root is being looked
    /// at).
    pub(super) fn next_check(&self) -> Option<Instant> {
        self.list
            .iter()
            .filter(|rs| !rs.checking && !rs.setting_up)
            .map(|rs| rs.next_check)
            .min()
    }

    // ----- walks of whole roots -----

    /// When root `i` wants a walk of the whole root (`None`: not now, or it cannot have one
    /// before something else happens). A walk asked for by lost events waits while many
    /// paths are pending (`backlog_low` false).
    pub(super) fn walk_due(&self, i: usize, now: Instant, backlog_low: bool) -> Option<Instant> {
        let rs = &self.list[i];
        if rs.walking || rs.setting_up || rs.needs_watch || rs.dev().is_none() {
            return None;
        }
        let rescan = if rs.rescan && backlog_low {
            Some(rs.last_rescan.map_or(now, |t| t + RESCAN_MIN_GAP))
        } else {
            None
        };
        match (rescan, rs.next_poll) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A walk of the whole root `i` starts.
    pub(super) fn begin_walk(&mut self, i: usize, now: Instant) {
        let rs = &mut self.list[i];
        rs.walking = true;
        rs.rescan = false;
        rs.last_rescan = Some(now);
        if let Method::Poll(_) = rs.method {
            rs.next_poll = None;
        }
    }

    /// The walk of the whole root `i` ended: a polled root is walked again a poll interval
    /// later.
    pub(super) fn end_walk(&mut self, i: usize, now: Instant) {
        let rs = &mut self.list[i];
        rs.walking = false;
        if let Method::Poll(_) = rs.method {
            rs.next_poll = Some(now + self.cfg.poll_interval);
        }
    }

    // ----- finished jobs -----

    /// The check of root `i` finished.
    pub(super) fn on_checked(&mut self, i: usize, health: Result<Health, String>, now: Instant) {
        self.list[i].checking = false;
        match health {
            Ok(h) => self.on_root_there(i, h, now),
            Err(reason) => self.on_root_gone(i, reason, now),
        }
    }

    /// Setting up the notify watcher of root `i` finished.
    pub(super) fn on_watch_set(
        &mut self,
        i: usize,
        result: notify::Result<RecommendedWatcher>,
        now: Instant,
    ) {
        let rs = &mut self.list[i];
        rs.setting_up = false;
        rs.started = true;
        match result {
            Ok(w) if rs.dev().is_some() => rs.watcher = Some(w),
            // Paused while its watch was being set up.
            Ok(_) => {}
            Err(e) => self.on_watch_failed(i, e, now),
        }
    }

    /// A folder that appeared under root `i` could not be watched: the whole root is
    /// polled from now on (a root half watched would miss files silently).
    pub(super) fn on_watch_limit(&mut self, i: usize, now: Instant) {
        if self.list[i].watcher.take().is_none() {
            return;
        }
        self.fall_back_to_polling(i, WatchFailure::Limit);
        let rs = &mut self.list[i];
        // Folders that could not be watched may already hold files.
        rs.rescan = true;
        rs.next_poll = Some(now + self.cfg.poll_interval);
    }

    fn paused_recheck(&self) -> Duration {
        self.cfg.poll_interval.min(PAUSED_RECHECK_MAX)
    }

    fn on_root_there(&mut self, i: usize, h: Health, now: Instant) {
        let poll_interval = self.cfg.poll_interval;
        let rs = &mut self.list[i];
        rs.next_check = now + poll_interval;
        if rs.live
            == (Liveness::Live {
                dev: h.dev,
                ino: h.ino,
            })
        {
            return;
        }
        let first = rs.live == Liveness::Unknown;
        match &rs.live {
            Liveness::Paused(_) => {
                tracing::info!(root = %rs.root.path.display(), "root is back: watching it again and looking for new files");
                self.notes.push((
                    rs.root.path.clone(),
                    db::meta::RootState::Ok {
                        at_ms: Some(now_ms()),
                    },
                ));
            }
            Liveness::Live { .. } => {
                tracing::info!(root = %rs.root.path.display(), "root was replaced (remounted?): watching it anew");
            }
            Liveness::Unknown => {}
        }
        rs.watcher = None;
        rs.live = Liveness::Live {
            dev: h.dev,
            ino: h.ino,
        };
        // The full scan at start-up covers a root seen for the first time; one that came
        // back (or was replaced) is walked once it is watched.
        rs.rescan = !first;
        // Decided again each time the root appears: a remount may bring another filesystem,
        // and a raised inotify limit is tried again.
        rs.method = match (self.cfg.mode, h.remote_fs) {
            (WatchMode::Poll, _) => Method::Poll("watch.mode = \"poll\"".into()),
            (WatchMode::Auto, Some(fs)) => Method::Poll(format!(
                "it is on a {fs} filesystem, where inotify does not see changes made by other machines"
            )),
            _ => Method::Events,
        };
        match rs.method {
            Method::Events => rs.needs_watch = true,
            Method::Poll(_) => {
                rs.started = true;
                rs.next_poll = Some(now + poll_interval);
                self.tell_polling(i);
            }
        }
    }

    fn on_root_gone(&mut self, i: usize, reason: String, now: Instant) {
        let recheck = self.paused_recheck();
        let rs = &mut self.list[i];
        rs.next_check = now + recheck;
        rs.started = true;
        rs.watcher = None;
        rs.needs_watch = false;
        rs.next_poll = None;
        rs.rescan = false;
        if matches!(rs.live, Liveness::Paused(_)) {
            return;
        }
        tracing::warn!(
            root = %rs.root.path.display(),
            "root paused: {reason}; its files are left as they are, and it is watched again when it is back"
        );
        self.notes.push((
            rs.root.path.clone(),
            db::meta::RootState::Paused {
                reason: reason.clone(),
            },
        ));
        rs.live = Liveness::Paused(reason);
    }

    fn on_watch_failed(&mut self, i: usize, e: notify::Error, now: Instant) {
        let failure = match &e.kind {
            notify::ErrorKind::MaxFilesWatch => WatchFailure::Limit,
            notify::ErrorKind::Io(io) if io.raw_os_error() == Some(libc::ENOSPC) => {
                WatchFailure::Limit
            }
            notify::ErrorKind::Io(io) if io.raw_os_error() == Some(libc::EMFILE) => {
                WatchFailure::Instances
            }
            notify::ErrorKind::PathNotFound => {
                self.on_root_gone(i, "cannot read it (it vanished)".into(), now);
                return;
            }
            notify::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
                self.on_root_gone(i, "cannot read it (it vanished)".into(), now);
                return;
            }
            _ => WatchFailure::Other(e.to_string()),
        };
        self.fall_back_to_polling(i, failure);
        let rs = &mut self.list[i];
        rs.next_poll = Some(now + self.cfg.poll_interval);
    }

    fn fall_back_to_polling(&mut self, i: usize, failure: WatchFailure) {
        let path = self.list[i].root.path.display().to_string();
        let every = self.cfg.poll_interval;
        let reason = match failure {
            WatchFailure::Limit => {
                if !self.limit_warned {
                    self.limit_warned = true;
                    tracing::warn!(
                        root = %path,
                        "inotify watch limit reached ({}): polling this root every {:?} instead. \
                         Raise the limit with `sysctl fs.inotify.max_user_watches={SUGGESTED_MAX_WATCHES}` (to keep it, \
                         install {SYSCTL_SNIPPET} in /etc/sysctl.d/) and restart immish-sync, or set watch.mode = \"poll\"",
                        inotify_limit("watches"),
                        every,
                    );
                }
                "the inotify watch limit was reached".to_string()
            }
            WatchFailure::Instances => {
                if !self.instances_warned {
                    self.instances_warned = true;
                    tracing::warn!(
                        root = %path,
                        "too many inotify instances ({}): polling this root every {:?} \
                         instead. Raise the limit with `sysctl fs.inotify.max_user_instances=1024` (to keep it, install \
                         {SYSCTL_SNIPPET} in /etc/sysctl.d/) and restart immish-sync, or set watch.mode = \"poll\"",
                        inotify_limit("instances"),
                        every,
                    );
                }
                "inotify instances ran out".to_string()
            }
            WatchFailure::Other(e) => {
                tracing::warn!(root = %path, error = %e, "cannot watch this root; polling it every {every:?} instead");
                format!("it cannot be watched ({e})")
            }
        };
        self.list[i].method = Method::Poll(reason);
        self.tell_polling(i);
    }

    /// Says once per root (and reason) why it is polled.
    fn tell_polling(&mut self, i: usize) {
        let every = self.cfg.poll_interval;
        let rs = &mut self.list[i];
        let Method::Poll(reason) = &rs.method else {
            return;
        };
        if self.cfg.mode == WatchMode::Poll || rs.told.as_ref() == Some(reason) {
            return;
        }
        tracing::info!(root = %rs.root.path.display(), "polling this root every {every:?}: {reason}");
        rs.told = Some(reason.clone());
    }

    pub(super) fn say_how_roots_are_watched(&self) {
        let (mut events, mut polled, mut paused) = (0, 0, 0);
        for rs in &self.list {
            match (&rs.live, &rs.method) {
                (Liveness::Live { .. }, Method::Events) => events += 1,
                (Liveness::Live { .. }, Method::Poll(_)) => polled += 1,
                _ => paused += 1,
            }
        }
        tracing::info!(
            inotify = events,
            polled,
            paused,
            settle = ?self.cfg.settle,
            poll_interval = ?self.cfg.poll_interval,
            "roots watched: {}",
            self.list.len()
        );
    }
}

/// Whether `root` is there, and on what (blocking). `remote`: find out whether it is on a
/// network or FUSE filesystem (only `watch.mode = "auto"` acts on it).
fn health(root: &Root, remote: bool) -> Result<Health, String> {
    root.probe().map(|m| Health {
        dev: m.dev(),
        ino: m.ino(),
        remote_fs: if remote {
            remote_filesystem(&root.path)
        } else {
            None
        },
    })
}

/// The inotify limit `max_user_<what>` as a message shows it: the system-wide sysctl, and
/// the user namespace's own limit when that is lower (containers).
fn inotify_limit(what: &str) -> String {
    let read = |p: String| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    let global = read(format!("/proc/sys/fs/inotify/max_user_{what}"));
    let userns = read(format!("/proc/sys/user/max_inotify_{what}"));
    let shown = global.map_or_else(|| "unknown".to_string(), |g| g.to_string());
    match (global, userns) {
        (Some(g), Some(u)) if u < g => {
            format!("fs.inotify.max_user_{what}={shown}, and user.max_inotify_{what}={u} in this user namespace")
        }
        _ => format!("fs.inotify.max_user_{what}={shown}"),
    }
}

/// Filesystems where inotify sees only the changes made through this machine's kernel
/// (network, cluster and FUSE filesystems, VM shared folders), by `statfs` `f_type`.
const REMOTE_FILESYSTEMS: &[(u32, &str)] = &[
    (0x6969, "NFS"),
    (0xFF53_4D42, "CIFS/SMB"),
    (0xFE53_4D42, "SMB2"),
    (0x517B, "SMB"),
    (0x6573_5546, "FUSE"),
    (0x0102_1997, "9p"),
    (0x00C3_6400, "Ceph"),
    (0x5346_414F, "AFS"),
    (0x6B41_4653, "AFS"),
    (0x7375_7245, "Coda"),
    (0x564C, "NCP"),
    (0x0BD0_0BD0, "Lustre"),
    (0x0116_1970, "GFS2"),
    (0x7461_636F, "OCFS2"),
    (0x4750_4653, "GPFS"),
    (0x1983_0326, "BeeGFS"),
    (0x1366_1366, "OrangeFS"),
    (0x786F_4256, "VirtualBox shared folder"),
    (0x7C7C_6673, "Parallels shared folder"),
];

fn remote_filesystem_name(magic: u32) -> Option<&'static str> {
    REMOTE_FILESYSTEMS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, name)| *name)
}

/// The network or FUSE filesystem `path` is on, if it is one (blocking).
#[cfg(target_os = "linux")]
fn remote_filesystem(path: &Path) -> Option<&'static str> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `statfs` only writes into the struct it is given; all-zero is a valid value
    // of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid, writable `statfs`.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    // `f_type` is signed or unsigned, 32 or 64 bits, depending on the target; the magic
    // numbers are 32-bit patterns.
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as u32;
    remote_filesystem_name(magic)
}

#[cfg(not(target_os = "linux"))]
fn remote_filesystem(_path: &Path) -> Option<&'static str> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_and_fuse_filesystems_are_recognised() {
        assert_eq!(remote_filesystem_name(0x6969), Some("NFS"));
        assert_eq!(remote_filesystem_name(0xFF53_4D42), Some("CIFS/SMB"));
        assert_eq!(remote_filesystem_name(0x6573_5546), Some("FUSE"));
        // ext4, btrfs, xfs, tmpfs, overlayfs
        for local in [0xEF53, 0x9123_683E, 0x5846_5342, 0x0102_1994, 0x794C_7630] {
            assert_eq!(remote_filesystem_name(local), None, "{local:#x}");
        }
    }

    #[test]
    fn a_local_directory_is_not_remote() {
        let dir = tempfile::tempdir().unwrap();
        // Whatever the test machine's /tmp is, it is not a network filesystem here.
        assert_eq!(remote_filesystem(dir.path()), None);
    }
}
