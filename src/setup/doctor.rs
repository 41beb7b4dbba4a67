//! `immish-sync doctor`: every check an operator would otherwise make by hand, one line each,
//! `ok`, `info`, `warn` or `fail`, with the fix on the line.
//!
//! The checks: the config loads; the server answers (its version and the dialect in use);
//! the key's permissions; the clock against the server's `Date`; the state directory
//! (writable, free space, whether a daemon holds it); the inotify limits against the number
//! of folders to watch; every root. Exit: 0 when nothing failed, 1 when something did, 2
//! when the config itself is broken (nothing else can be checked then).
//!
//! Must not: start anything, create the state directory, or change the server. The only
//! write is a probe file in an existing state directory, removed at once.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;

use crate::api::{ApiClient, ApiError, ErrorClass};
use crate::config::{self, Config, WatchMode};
use crate::{human, lock};

use super::term::{self, Lines};
use super::{key_power_advice, missing_least_privilege};

/// A clock this far from the server's is worth a warning (timestamps, TLS, tokens).
pub const CLOCK_WARN: Duration = Duration::from_secs(60);
/// This far off, certificates and sessions start to fail.
pub const CLOCK_FAIL: Duration = Duration::from_secs(60 * 60);
/// Less free space than this in the state directory is a warning (the database grows
/// with the catalogue, and SQLite needs room for its journal).
pub const MIN_FREE_BYTES: u64 = 1 << 30;
/// The folder count stops here: the point is the order of magnitude against the inotify
/// limit, and a walk of a huge tree must not make `doctor` slow.
pub const MAX_DIRS_COUNTED: u64 = 1_000_000;
/// The value suggested for `fs.inotify.max_user_watches`, as the watcher's own message.
const SUGGESTED_MAX_WATCHES: u64 = 524_288;
/// The packaged sysctl snippet setting it, as the watcher's own message names it.
const SYSCTL_SNIPPET: &str = "packaging/sysctl/60-immish-sync-inotify.conf";

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Info,
    Warn,
    Fail,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Fail => "fail",
        }
    }

    /// ANSI colour for a terminal: green, plain, yellow, red.
    fn colour(self) -> &'static str {
        match self {
            Level::Ok => "\x1b[32m",
            Level::Info => "",
            Level::Warn => "\x1b[33m",
            Level::Fail => "\x1b[31m",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub level: Level,
    /// What was checked: `config`, `server`, `root /srv/photos`…
    pub subject: String,
    pub message: String,
    /// What to do about it, for `warn` and `fail`.
    pub fix: Option<String>,
}

impl Check {
    fn new(level: Level, subject: impl Into<String>, message: impl Into<String>) -> Check {
        Check {
            level,
            subject: subject.into(),
            message: message.into(),
            fix: None,
        }
    }

    fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }

    fn render(&self, colour: bool) -> String {
        let word = self.level.word();
        let level = if colour && !self.level.colour().is_empty() {
            format!("{}{word:<4}\x1b[0m", self.level.colour())
        } else {
            format!("{word:<4}")
        };
        match &self.fix {
            Some(fix) => format!("{level}  {}: {}; fix: {fix}", self.subject, self.message),
            None => format!("{level}  {}: {}", self.subject, self.message),
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}

/// Runs every check for the config at `path`, printing each line as it is known, and
/// returns the exit code (0, 1, or 2 for a broken config).
pub async fn run(path: &Path) -> u8 {
    let mut out = Lines::new(std::io::stdout().lock());
    let colour = term::stdout_wants_colour();
    let mut worst = Level::Ok;
    let mut emit = |c: Check| {
        worst = worst.max(c.level);
        out.line(&c.render(colour));
    };
    let config = match config::load(path) {
        Ok(c) => {
            emit(Check::new(
                Level::Ok,
                "config",
                format!("{} loads", path.display()),
            ));
            c
        }
        Err(e) => {
            emit(
                Check::new(Level::Fail, "config", e.to_string())
                    .fix("correct the file (or run `immish-sync init`); nothing else is checked"),
            );
            return 2;
        }
    };
    for c in server_checks(&config).await {
        emit(c);
    }
    // Each [[accounts]] table's server and key, named (docs/ARCHITECTURE.md#accounts).
    for account in &config.accounts {
        let mut own = config.clone();
        own.server = account.server.clone();
        for mut c in server_checks(&own).await {
            c.subject = format!("{} (account {})", c.subject, account.name);
            emit(c);
        }
    }
    for c in local_checks(&config) {
        emit(c);
    }
    u8::from(worst == Level::Fail)
}

/// The checks that talk to the server: reachable, version and dialect, the key, the clock.
pub async fn server_checks(config: &Config) -> Vec<Check> {
    let mut checks = Vec::new();
    let url = config.server.url.to_string();
    let api = match ApiClient::connect(&config.server).await {
        Ok(api) => api,
        Err(e) => {
            checks.push(connect_failure(&url, &config.server.table, &e));
            return checks;
        }
    };
    let version = api
        .server_version()
        .await
        .unwrap_or_else(|e| format!("unknown ({e})"));
    checks.push(Check::new(
        Level::Ok,
        "server",
        format!(
            "{} answers: version {version}, {:?} dialect",
            api.api_root(),
            api.dialect()
        ),
    ));
    checks.extend(key_checks(&api, config));
    checks.push(clock_check(&api).await);
    checks
}

/// `table` is where the server's settings are written (`server`, `accounts[N]`), for the fix.
fn connect_failure(url: &str, table: &str, e: &ApiError) -> Check {
    let section = if table == "server" {
        "[server]".to_owned()
    } else {
        table.to_owned()
    };
    match (e, e.class()) {
        (ApiError::MissingPermissions { .. }, _) => Check::new(Level::Fail, "key", e.to_string())
            .fix("edit the key's permissions in Immich (Account settings → API keys), or create a new one"),
        (_, ErrorClass::Auth) => Check::new(
            Level::Fail,
            "key",
            format!("the server at {url} refused the API key: {e}"),
        )
        .fix(format!(
            "the key is wrong, revoked or of another server: create one in Immich (Account \
             settings → API keys) and put it in the file named by {table}.api_key_file"
        )),
        _ if e.status() == Some(403) => Check::new(Level::Fail, "key", e.to_string())
            .fix("give the key the permission named, or use a password login"),
        (ApiError::Config { .. }, _) => {
            Check::new(Level::Fail, "server", e.to_string())
                .fix(format!("correct {section} in the config"))
        }
        _ => Check::new(Level::Fail, "server", format!("{url}: {e}"))
            .fix(format!(
                "check {table}.url, that the server runs, and the network (DNS, firewall, proxy)"
            )),
    }
}

fn key_checks(api: &ApiClient, config: &Config) -> Vec<Check> {
    let mut checks = Vec::new();
    if api.is_session() {
        checks.push(Check::new(
            Level::Ok,
            "credentials",
            "password login: a session, which live events and the sync stream can use",
        ));
        return checks;
    }
    let Some(perms) = api.api_key_permissions() else {
        checks.push(Check::new(
            Level::Info,
            "key",
            "accepted; the server does not say what it may do (no /api-keys/me)",
        ));
        return checks;
    };
    let missing = missing_least_privilege(perms);
    if missing.is_empty() {
        checks.push(Check::new(
            Level::Ok,
            "key",
            format!("accepted, with {}", perms.join(", ")),
        ));
    } else {
        checks.push(
            Check::new(
                Level::Warn,
                "key",
                format!(
                    "accepted, but lacks {}: partner assets cannot be told from the user's own \
                     in the mirror",
                    missing.join(", ")
                ),
            )
            .fix(format!("add {} to the key in Immich", missing.join(", "))),
        );
    }
    if let Some(advice) = key_power_advice(perms) {
        checks.push(Check::new(Level::Info, "key", advice));
    }
    let library = crate::setup::missing_for_library(perms, &config.roots);
    if !library.is_empty() {
        let names: Vec<&str> = library.iter().map(|(p, _)| *p).collect();
        let uses: Vec<String> = library
            .iter()
            .map(|(p, why)| format!("{p} ({why})"))
            .collect();
        checks.push(
            Check::new(
                Level::Warn,
                "library",
                format!(
                    "the key lacks {}: uploads work, but these are left undone",
                    uses.join(", ")
                ),
            )
            .fix(format!(
                "add {} to the key in Immich, or turn the feature off for the root",
                names.join(", ")
            )),
        );
    }
    // docs/ARCHITECTURE.md#pull
    if !config.pull.is_empty()
        && !perms
            .iter()
            .any(|p| p == "all" || p == crate::originals::PERMISSION)
    {
        let folders: Vec<String> = config
            .pull
            .iter()
            .map(|p| p.path.display().to_string())
            .collect();
        checks.push(
            Check::new(
                Level::Warn,
                "pull",
                format!(
                    "the key lacks {}: no original is downloaded into {} (backups work)",
                    crate::originals::PERMISSION,
                    folders.join(", ")
                ),
            )
            .fix(format!(
                "add {} to the key in Immich",
                crate::originals::PERMISSION
            )),
        );
    }
    if config.mirror.events && !api.can_open_websocket() {
        checks.push(Check::new(
            Level::Info,
            "live events",
            format!(
                "off: they need a key with `all` or a password login; changes on the server \
                 are seen at each pull (every {})",
                human::duration(config.mirror.pull_interval)
            ),
        ));
    }
    checks
}

async fn clock_check(api: &ApiClient) -> Check {
    let date = match api.server_clock().await {
        Ok(clock) => clock
            .date
            .as_deref()
            .and_then(parse_http_date)
            .map(|d| (d, clock.sent, clock.received)),
        Err(_) => None,
    };
    match date {
        Some((date, sent, received)) => judge_clock(clock_offset(date, sent, received)),
        None => Check::new(
            Level::Info,
            "clock",
            "not checked: the server's answer had no usable Date header",
        ),
    }
}

/// Parses an HTTP `Date` (IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn parse_http_date(value: &str) -> Option<OffsetDateTime> {
    let imf = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(value.trim(), &imf)
        .ok()
        .map(|t| t.assume_utc())
}

/// The server's clock minus ours, in seconds, taking the server's `Date` as read halfway
/// through the round trip. `Date` has one-second resolution, truncated, so half a second is
/// added to its value to centre the estimate.
pub fn clock_offset(server: OffsetDateTime, sent: SystemTime, received: SystemTime) -> f64 {
    let secs = |t: SystemTime| match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    };
    let local = (secs(sent) + secs(received)) / 2.0;
    let server = server.unix_timestamp() as f64 + 0.5;
    server - local
}

/// The clock line for an offset in seconds (positive: the server is ahead).
pub fn judge_clock(offset: f64) -> Check {
    let off = offset.abs();
    let side = if offset > 0.0 { "behind" } else { "ahead of" };
    // `Date` has one-second resolution: beyond two minutes, the nearest minute is what is
    // known (two days read `48h`, not `172801s`).
    let shown_secs = if off >= 120.0 {
        (off / 60.0).round() * 60.0
    } else {
        off
    };
    let shown = human::duration(Duration::from_secs_f64(shown_secs.min(1e12)));
    let message = format!("this machine's clock is {shown} {side} the server's");
    let fix = "synchronise the clock with NTP (`timedatectl set-ntp true`, or chrony) on this \
               machine and on the server";
    if off > CLOCK_FAIL.as_secs_f64() {
        Check::new(Level::Fail, "clock", message).fix(fix)
    } else if off > CLOCK_WARN.as_secs_f64() {
        Check::new(Level::Warn, "clock", message).fix(fix)
    } else {
        Check::new(
            Level::Ok,
            "clock",
            format!("within {shown} of the server's"),
        )
    }
}

/// The checks that need no server: the state directory, the roots, the inotify limits.
pub fn local_checks(config: &Config) -> Vec<Check> {
    let mut checks = state_checks(&config.state.dir);
    let mut dirs = 0u64;
    let mut counted_all = true;
    for root in &config.roots {
        let (check, count) = root_check(root);
        checks.push(check);
        if let Some((n, complete)) = count {
            dirs += n;
            counted_all &= complete;
        }
    }
    if matches!(config.watch.mode, WatchMode::Auto | WatchMode::Notify) {
        checks.extend(inotify_checks(
            read_limit("max_user_watches"),
            read_limit("max_user_instances"),
            dirs,
            counted_all,
            config.watch.mode,
        ));
    }
    checks
}

fn state_checks(dir: &Path) -> Vec<Check> {
    let subject = format!("state {}", dir.display());
    let mut checks = Vec::new();
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            checks.push(
                Check::new(Level::Fail, subject, "is not a directory")
                    .fix("point [state] dir at a directory, or move the file away"),
            );
            return checks;
        }
        Ok(_) => match probe_writable(dir) {
            Ok(()) => checks.push(Check::new(Level::Ok, subject.clone(), "writable")),
            Err(e) => checks.push(
                Check::new(Level::Fail, subject.clone(), format!("not writable: {e}"))
                    .fix("give the daemon's user write access to it, or set [state] dir"),
            ),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match nearest_existing(dir) {
                Some(parent) if probe_writable(&parent).is_ok() => checks.push(Check::new(
                    Level::Ok,
                    subject.clone(),
                    "not there yet; the daemon creates it",
                )),
                Some(parent) => checks.push(
                    Check::new(
                        Level::Fail,
                        subject.clone(),
                        format!("missing, and {} is not writable to create it", parent.display()),
                    )
                    .fix("create it for the daemon's user (systemd: StateDirectory=), or set [state] dir"),
                ),
                None => checks.push(
                    Check::new(Level::Fail, subject.clone(), "missing, and no parent exists")
                        .fix("set [state] dir to an absolute path"),
                ),
            }
        }
        Err(e) => {
            checks.push(
                Check::new(Level::Fail, subject, format!("cannot look at it: {e}"))
                    .fix("give the daemon's user access to it, or set [state] dir"),
            );
            return checks;
        }
    }
    if let Some(parent) = nearest_existing(dir) {
        match free_bytes(&parent) {
            Some(free) => checks.push(judge_free_space(&subject, free)),
            None => checks.push(Check::new(
                Level::Info,
                subject.clone(),
                "free space unknown",
            )),
        }
    }
    checks.push(match lock::holder(dir) {
        Some(h) => Check::new(
            Level::Info,
            "daemon",
            match h.pid {
                Some(pid) => format!("running (pid {pid}), holding {}", dir.display()),
                None => format!("running, holding {}", dir.display()),
            },
        ),
        None => Check::new(Level::Info, "daemon", "not running on this state directory"),
    });
    checks
}

/// The free-space line for `free` bytes.
pub fn judge_free_space(subject: &str, free: u64) -> Check {
    let shown = human::size(free);
    if free < MIN_FREE_BYTES {
        Check::new(Level::Warn, subject, format!("only {shown} free"))
            .fix("free some space on that filesystem, or move [state] dir")
    } else {
        Check::new(Level::Ok, subject, format!("{shown} free"))
    }
}

/// Creates and removes a file in `dir`: the only honest test of "writable" (permissions,
/// ACLs, read-only mounts and quotas all have a say).
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".immish-sync-doctor-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

fn nearest_existing(dir: &Path) -> Option<PathBuf> {
    dir.ancestors().find(|a| a.is_dir()).map(Path::to_path_buf)
}

fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the struct for a NUL-terminated path; both outlive the call.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)] // the field widths differ between platforms
    Some(s.f_bavail as u64 * s.f_frsize as u64)
}

/// The line for a root and, when it can be walked, the folders under it (the count, and
/// whether it is complete).
fn root_check(root: &config::RootConfig) -> (Check, Option<(u64, bool)>) {
    let path = &root.path;
    let subject = format!("root {}", path.display());
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return (
                Check::new(Level::Fail, subject, "not found (the daemon pauses it)")
                    .fix("create it, mount it, or remove it from the config"),
                None,
            )
        }
        Err(e) => {
            return (
                Check::new(Level::Fail, subject, format!("cannot look at it: {e}"))
                    .fix("give the daemon's user access to it (x on every parent folder)"),
                None,
            )
        }
    };
    if !meta.is_dir() {
        return (
            Check::new(Level::Fail, subject, "is not a directory")
                .fix("point roots.path at the folder that holds the photos"),
            None,
        );
    }
    if let Err(e) = std::fs::read_dir(path) {
        return (
            Check::new(Level::Fail, subject, format!("not readable: {e}"))
                .fix("give the daemon's user read access to it (r and x)"),
            None,
        );
    }
    let (n, complete) = count_dirs(path, root.recursive, root.hidden, MAX_DIRS_COUNTED);
    let more = if complete { "" } else { "at least " };
    (
        Check::new(Level::Ok, subject, format!("readable, {more}{n} folders")),
        Some((n, complete)),
    )
}

/// Counts the directories a watcher would watch under `root` (itself included), without
/// following symbolic links, skipping hidden ones unless `hidden`, and stopping at `limit`.
/// Unreadable folders are counted and not entered.
pub fn count_dirs(root: &Path, recursive: bool, hidden: bool, limit: u64) -> (u64, bool) {
    let mut count = 1u64;
    if !recursive {
        return (count, true);
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if !is_dir {
                continue;
            }
            if !hidden && entry.file_name().as_encoded_bytes().first() == Some(&b'.') {
                continue;
            }
            if count >= limit {
                return (count, false);
            }
            count += 1;
            stack.push(entry.path());
        }
    }
    (count, true)
}

fn read_limit(name: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/sys/fs/inotify/{name}"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// The inotify lines: the watch limit against the folders to watch (each folder is one
/// watch), and the instance limit (the daemon needs one per root).
pub fn inotify_checks(
    watches: Option<u64>,
    instances: Option<u64>,
    dirs: u64,
    complete: bool,
    mode: WatchMode,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let raise = format!(
        "`sudo sysctl fs.inotify.max_user_watches={SUGGESTED_MAX_WATCHES}`, and to keep it \
         install {SYSCTL_SNIPPET} in /etc/sysctl.d/ (or set watch.mode = \"poll\")"
    );
    let more = if complete { "" } else { "at least " };
    match watches {
        None => checks.push(Check::new(
            Level::Info,
            "inotify",
            "no /proc/sys/fs/inotify (not Linux?): watch limits not checked",
        )),
        Some(max) if dirs > max => {
            let level = if mode == WatchMode::Notify {
                Level::Fail
            } else {
                Level::Warn
            };
            let then = if mode == WatchMode::Notify {
                "watching will fail"
            } else {
                "the roots past the limit are polled instead"
            };
            checks.push(
                Check::new(
                    level,
                    "inotify",
                    format!(
                        "fs.inotify.max_user_watches={max} but the roots hold {more}{dirs} \
                         folders: {then}"
                    ),
                )
                .fix(raise),
            );
        }
        // Other programs of the same user (editors, sync tools) use watches too.
        Some(max) if dirs > max / 5 * 4 => checks.push(
            Check::new(
                Level::Warn,
                "inotify",
                format!(
                    "fs.inotify.max_user_watches={max} for {more}{dirs} folders leaves little \
                     for other programs"
                ),
            )
            .fix(raise),
        ),
        Some(max) => checks.push(Check::new(
            Level::Ok,
            "inotify",
            format!("fs.inotify.max_user_watches={max} for {more}{dirs} folders"),
        )),
    }
    match instances {
        Some(0) => checks.push(
            Check::new(
                Level::Fail,
                "inotify",
                "fs.inotify.max_user_instances=0: no watcher can start",
            )
            .fix("`sudo sysctl fs.inotify.max_user_instances=128`, or set watch.mode = \"poll\""),
        ),
        Some(n) if n < 8 => checks.push(
            Check::new(
                Level::Warn,
                "inotify",
                format!(
                    "fs.inotify.max_user_instances={n} is low; other programs of this user may \
                     use them all"
                ),
            )
            .fix("`sudo sysctl fs.inotify.max_user_instances=128`"),
        ),
        Some(n) => checks.push(Check::new(
            Level::Ok,
            "inotify",
            format!("fs.inotify.max_user_instances={n}"),
        )),
        None => {}
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix: i64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(unix as u64)
    }

    #[test]
    fn http_dates_parse() {
        let d = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(d.unix_timestamp(), 784_111_777);
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[test]
    fn the_offset_is_taken_at_the_middle_of_the_round_trip() {
        let server = OffsetDateTime::from_unix_timestamp(1_000_100).unwrap();
        // Sent at 1_000_000, answered 2 s later: local midpoint 1_000_001.
        let off = clock_offset(server, at(1_000_000), at(1_000_002));
        assert!((off - 99.5).abs() < 1e-6, "{off}");
        let off = clock_offset(server, at(1_000_100), at(1_000_100));
        assert!((off - 0.5).abs() < 1e-6, "{off}");
        let behind = OffsetDateTime::from_unix_timestamp(1_000_000 - 7200).unwrap();
        assert!(clock_offset(behind, at(1_000_000), at(1_000_000)) < -7000.0);
    }

    #[test]
    fn clock_levels_follow_the_thresholds() {
        assert_eq!(judge_clock(0.5).level, Level::Ok);
        assert_eq!(judge_clock(-59.0).level, Level::Ok);
        let w = judge_clock(120.0);
        assert_eq!(w.level, Level::Warn);
        assert!(w.message.contains("behind"), "{w}");
        assert!(w.fix.as_deref().unwrap().contains("NTP"), "{w}");
        let f = judge_clock(-7200.0);
        assert_eq!(f.level, Level::Fail);
        assert!(f.message.contains("ahead of"), "{f}");
        // Two days, as a `Date` header with its one-second resolution measures them.
        for off in [172_799.4, 172_800.0, 172_801.3] {
            let d = judge_clock(-off);
            assert!(d.message.contains("48h ahead of"), "{d}");
        }
    }

    #[test]
    fn free_space_below_a_gib_warns() {
        assert_eq!(judge_free_space("state", 10 << 30).level, Level::Ok);
        assert_eq!(judge_free_space("state", 100 << 20).level, Level::Warn);
    }

    #[test]
    fn folders_are_counted_as_the_watcher_sees_them() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["a/b/c", "d", ".hidden/x"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("a/file.jpg"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("link")).unwrap();
        assert_eq!(count_dirs(dir.path(), true, false, 100), (5, true));
        assert_eq!(count_dirs(dir.path(), true, true, 100), (7, true));
        assert_eq!(count_dirs(dir.path(), false, false, 100), (1, true));
        assert_eq!(count_dirs(dir.path(), true, false, 3), (3, false));
    }

    #[test]
    fn inotify_limits_are_judged_against_the_folders() {
        let lvl = |w, d, m| inotify_checks(Some(w), Some(128), d, true, m)[0].level;
        assert_eq!(lvl(8192, 100, WatchMode::Auto), Level::Ok);
        assert_eq!(lvl(8192, 7000, WatchMode::Auto), Level::Warn);
        assert_eq!(lvl(8192, 9000, WatchMode::Auto), Level::Warn);
        assert_eq!(lvl(8192, 9000, WatchMode::Notify), Level::Fail);
        let c = &inotify_checks(Some(8192), Some(128), 9000, false, WatchMode::Notify)[0];
        assert!(c.message.contains("at least 9000"), "{c}");
        let fix = c.fix.as_deref().unwrap();
        assert!(fix.contains("fs.inotify.max_user_watches=524288"), "{fix}");
        assert!(fix.contains(SYSCTL_SNIPPET), "{fix}");
        let inst = inotify_checks(Some(8192), Some(0), 1, true, WatchMode::Auto);
        assert_eq!(inst[1].level, Level::Fail);
    }

    #[test]
    fn lines_are_plain_unless_coloured() {
        let c = Check::new(Level::Fail, "root /x", "not found").fix("mount it");
        assert_eq!(c.render(false), "fail  root /x: not found; fix: mount it");
        assert!(c.render(true).starts_with("\x1b[31mfail\x1b[0m  root /x"));
        assert!(!Check::new(Level::Info, "a", "b")
            .render(true)
            .contains('\x1b'));
    }
}
