//! Alerts (`[alerts]`, docs/STATUS.md#alerts): a message to a URL when backups fail, once
//! per incident, and one more when it is resolved.
//!
//! Owns: what counts as an incident (an outage longer than `outage_after`, files failed
//! for good, files whose only server copy is in the trash, nothing backed up for
//! `stalled_after` while files wait), the record of incidents already told (in `meta`, so
//! that a restart does not tell them again), the agent's own alert of an account that
//! stopped with an error ([`account_stopped`]), and the three message shapes (webhook,
//! ntfy, Gotify). Must not: stop or slow the daemon: a notification that cannot be
//! delivered is logged and tried again at the next check, and nothing here returns an
//! error.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{AlertKind, AlertsConfig, Secret};
use crate::db::meta::{self, ConnectionState};
use crate::db::{now_ms, Db};
use crate::human::{ago, timestamp};
use crate::model::JobState;
use crate::status::{self, Status};

/// How long one notification may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(15);

/// Something wrong that people should hear of, as found by one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incident {
    /// `outage`, `failed`, `trash_only` or `stalled` (docs/STATUS.md#alerts).
    pub name: &'static str,
    pub since_ms: i64,
    /// One sentence for people.
    pub message: String,
}

/// The incidents of `s` at `now_ms` (an outage counts once older than `outage_after`;
/// "nothing backed up" counts from the last backup, or from `started_ms` for a daemon
/// that never backed anything up).
pub fn incidents(
    s: &Status,
    outage_after: Duration,
    stalled_after: Duration,
    started_ms: i64,
    now_ms: i64,
) -> Vec<Incident> {
    let mut found = Vec::new();
    let server = s.server.as_deref().unwrap_or("the server");
    match &s.connection {
        Some(ConnectionState::Unreachable {
            since_ms, error, ..
        })
        | Some(ConnectionState::Refused {
            since_ms, error, ..
        }) if now_ms - since_ms >= outage_after.as_millis() as i64 => {
            let what = if matches!(s.connection, Some(ConnectionState::Refused { .. })) {
                "refuses the credentials"
            } else {
                "is unreachable"
            };
            found.push(Incident {
                name: "outage",
                since_ms: *since_ms,
                message: format!(
                    "{server} {what} since {} ({}): nothing is backed up meanwhile. The last \
                     error: {error}",
                    timestamp(*since_ms),
                    ago(*since_ms)
                ),
            });
        }
        _ => {}
    }
    let failed = s.count(JobState::Failed);
    if failed > 0 {
        let first = s
            .failures
            .iter()
            .find(|f| f.state == JobState::Failed)
            .map(|f| {
                format!(
                    "; the latest: {}: {}",
                    f.path,
                    f.reason.as_deref().unwrap_or("no reason recorded")
                )
            })
            .unwrap_or_default();
        found.push(Incident {
            name: "failed",
            since_ms: now_ms,
            message: format!(
                "{failed} files failed and are not backed up{first}. `immish-sync status` \
                 lists them; `immish-sync retry` tries them again"
            ),
        });
    }
    if s.in_trash_only > 0 {
        found.push(Incident {
            name: "trash_only",
            since_ms: now_ms,
            message: format!(
                "{} files are NOT backed up: their only copy on the server is in its trash, \
                 which empties itself. Restore them on the server",
                s.in_trash_only
            ),
        });
    }
    let waiting = s.queue_depth() + s.waiting.count;
    // A daemon that just started gets the whole period before it is blamed.
    let since = s.last_success_ms.unwrap_or(started_ms).max(started_ms);
    if waiting > 0 && now_ms - since >= stalled_after.as_millis() as i64 {
        let last = match s.last_success_ms {
            Some(ms) => format!("since {} ({})", timestamp(ms), ago(ms)),
            None => format!("since the daemon started {}", ago(started_ms)),
        };
        found.push(Incident {
            name: "stalled",
            since_ms: since,
            message: format!("nothing was backed up {last}, and {waiting} files wait"),
        });
    }
    found
}

/// What a resolved incident says.
fn resolved_message(name: &str, since_ms: i64) -> String {
    let what = match name {
        "outage" => "the server answers again",
        "failed" => "no file is failed any more",
        "trash_only" => "no file depends on the server's trash any more",
        "stalled" => "files are being backed up again",
        _ => "the problem is gone",
    };
    format!(
        "resolved: {what} (the incident began {})",
        timestamp(since_ms)
    )
}

/// The webhook's JSON document (docs/STATUS.md#alerts).
#[derive(Debug, Serialize)]
struct Webhook<'a> {
    schema: u32,
    /// `incident` or `resolved`.
    event: &'a str,
    incident: &'a str,
    title: &'a str,
    message: &'a str,
    host: &'a str,
    since_ms: i64,
    at_ms: i64,
    /// The `[[accounts]]` entry whose backups this is about; absent for `[server]`'s.
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<&'a str>,
}

/// Where alerts go and in which shape (`[alerts]` `url`, `kind`, `token_file`): what an
/// account's [`Alerts`] and the agent's [`account_stopped`] send with.
#[derive(Clone)]
pub struct Notifier {
    url: reqwest::Url,
    kind: AlertKind,
    token: Option<Secret>,
    http: reqwest::Client,
    host: String,
}

impl Notifier {
    /// `None` when no `alerts.url` is set.
    pub fn new(config: &AlertsConfig) -> Option<Notifier> {
        let url = config.url.clone()?;
        let http = match reqwest::Client::builder().timeout(SEND_TIMEOUT).build() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot set up the alerts' HTTP client; no alerts will be sent");
                return None;
            }
        };
        Some(Notifier {
            url,
            kind: config.kind,
            token: config.token.clone(),
            http,
            host: hostname(),
        })
    }
}

/// The alert task of a daemon.
pub struct Alerts {
    db: Db,
    state_dir: PathBuf,
    notify: Notifier,
    outage_after: Duration,
    stalled_after: Duration,
    every: Duration,
    /// The `[[accounts]]` entry these alerts are about (`None`: `[server]`'s).
    account: Option<String>,
}

impl Alerts {
    /// `None` when no `alerts.url` is set.
    pub fn new(
        config: &AlertsConfig,
        db: Db,
        state_dir: PathBuf,
        every: Duration,
    ) -> Option<Alerts> {
        Some(Alerts {
            db,
            state_dir,
            notify: Notifier::new(config)?,
            outage_after: config.outage_after,
            stalled_after: config.stalled_after,
            every,
            account: None,
        })
    }

    /// The alerts of the `[[accounts]]` entry `account` (its own state directory and
    /// database): every title and message names it (docs/STATUS.md#alerts).
    pub fn for_account(mut self, account: Option<String>) -> Alerts {
        self.account = account;
        self
    }

    /// ` (account ann)` after a title, nothing for `[server]`'s account.
    fn whose(&self) -> String {
        self.account
            .as_deref()
            .map(|a| format!(" (account {a})"))
            .unwrap_or_default()
    }

    /// Checks every `every` until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let started_ms = now_ms();
        let mut open = match self.db.call(|c| meta::open_alerts(c)).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the alerts already sent");
                Vec::new()
            }
        };
        let mut failing = false;
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let dir = self.state_dir.clone();
            let status = match tokio::task::spawn_blocking(move || status::read(&dir)).await {
                Ok(Ok(Some(s))) => s,
                Ok(Ok(None)) => continue,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "alerts: cannot read the state");
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "alerts: the state read failed");
                    continue;
                }
            };
            let now = now_ms();
            let found = incidents(
                &status,
                self.outage_after,
                self.stalled_after,
                started_ms,
                now,
            );
            let before = open.clone();
            for inc in &found {
                if open.iter().any(|(n, _)| n == inc.name) {
                    continue;
                }
                let title = format!(
                    "immish-sync on {}: backups failing ({}){}",
                    self.notify.host,
                    inc.name,
                    self.whose()
                );
                match self
                    .send("incident", inc.name, &title, &inc.message, inc.since_ms)
                    .await
                {
                    Ok(()) => {
                        tracing::warn!(incident = inc.name, "alert sent: {}", inc.message);
                        open.push((inc.name.to_owned(), inc.since_ms));
                        failing = false;
                    }
                    Err(e) => self.cannot_send(&mut failing, &e),
                }
            }
            let cleared: Vec<(String, i64)> = open
                .iter()
                .filter(|(n, _)| !found.iter().any(|i| i.name == n))
                .cloned()
                .collect();
            for (name, since) in cleared {
                let title = format!(
                    "immish-sync on {}: resolved ({name}){}",
                    self.notify.host,
                    self.whose()
                );
                let message = resolved_message(&name, since);
                match self.send("resolved", &name, &title, &message, since).await {
                    Ok(()) => {
                        tracing::info!(incident = %name, "alert sent: {message}");
                        open.retain(|(n, _)| *n != name);
                        failing = false;
                    }
                    Err(e) => self.cannot_send(&mut failing, &e),
                }
            }
            if open != before {
                let record = open.clone();
                if let Err(e) = self
                    .db
                    .call(move |c| meta::set_open_alerts(c, &record))
                    .await
                {
                    tracing::debug!(error = %e, "cannot record the alerts sent");
                }
            }
        }
    }

    /// Logs a failed notification: a warning the first time, then quietly until one gets
    /// through (it is tried again at every check).
    fn cannot_send(&self, failing: &mut bool, e: &str) {
        self.notify.cannot_send(failing, e);
    }

    async fn send(
        &self,
        event: &str,
        incident: &str,
        title: &str,
        message: &str,
        since_ms: i64,
    ) -> Result<(), String> {
        self.notify
            .send(
                event,
                incident,
                title,
                message,
                since_ms,
                self.account.as_deref(),
            )
            .await
    }
}

impl Notifier {
    /// Logs a failed notification: a warning the first time, then quietly until one gets
    /// through (it is tried again at every check).
    fn cannot_send(&self, failing: &mut bool, e: &str) {
        if *failing {
            tracing::debug!("still cannot send an alert to {}: {e}", self.url);
        } else {
            tracing::warn!(
                "cannot send an alert to {}: {e}; trying again at the next check",
                self.url
            );
            *failing = true;
        }
    }

    /// One message in the configured shape; `account` is the `[[accounts]]` entry it is
    /// about (`None`: `[server]`'s).
    async fn send(
        &self,
        event: &str,
        incident: &str,
        title: &str,
        message: &str,
        since_ms: i64,
        account: Option<&str>,
    ) -> Result<(), String> {
        let req = self.http.post(self.url.clone());
        let req = match self.kind {
            AlertKind::Webhook => req.json(&Webhook {
                schema: 1,
                event,
                incident,
                title,
                message,
                host: &self.host,
                since_ms,
                at_ms: now_ms(),
                account,
            }),
            AlertKind::Ntfy => req
                .header("Title", header_safe(title))
                .header(
                    "Priority",
                    if event == "incident" {
                        "high"
                    } else {
                        "default"
                    },
                )
                .header(
                    "Tags",
                    if event == "incident" {
                        "warning"
                    } else {
                        "white_check_mark"
                    },
                )
                .body(message.to_owned()),
            AlertKind::Gotify => req.json(&serde_json::json!({
                "title": title,
                "message": message,
                "priority": if event == "incident" { 8 } else { 4 },
            })),
        };
        let req = match (&self.token, self.kind) {
            (Some(t), AlertKind::Gotify) => req.header("X-Gotify-Key", t.expose()),
            (Some(t), _) => req.bearer_auth(t.expose()),
            (None, _) => req,
        };
        let resp = req.send().await.map_err(|e| {
            // Without the URL: it may carry a token (Gotify's ?token=).
            e.without_url().to_string()
        })?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("it answered {}", resp.status()))
        }
    }
}

/// An account that stopped with an error, for [`account_stopped`].
#[derive(Clone, Debug)]
pub struct Stopped {
    /// The `[[accounts]]` name; `None` for `[server]`'s.
    pub account: Option<String>,
    /// Why it stopped.
    pub error: String,
    /// When (unix ms).
    pub since_ms: i64,
}

/// What the agent tells [`account_stopped`] of its accounts.
#[derive(Clone, Debug)]
pub enum AccountEvent {
    /// An account stopped with an error: an incident.
    Stopped(Stopped),
    /// An account that had stopped runs again (a SIGHUP started it) or has left the
    /// config: its incident is resolved.
    Resolved {
        account: Option<String>,
        /// When it had stopped (unix ms).
        since_ms: i64,
        /// `true`: it runs again; `false`: it is no longer in the config.
        running: bool,
    },
}

impl AccountEvent {
    fn account(&self) -> Option<&str> {
        match self {
            AccountEvent::Stopped(s) => s.account.as_deref(),
            AccountEvent::Resolved { account, .. } => account.as_deref(),
        }
    }
}

/// The event (`incident` or `resolved`), title and message of an `account_stopped`
/// message (docs/STATUS.md#alerts).
fn account_text(host: &str, e: &AccountEvent) -> (&'static str, String, String) {
    let name = e.account().unwrap_or(crate::config::DEFAULT_ACCOUNT);
    match e {
        AccountEvent::Stopped(s) => (
            "incident",
            format!("immish-sync on {host}: account {name} stopped: {}", s.error),
            format!(
                "account {name} stopped with an error at {}: {}. Its files are not backed up \
                 until the daemon is restarted or reloaded (SIGHUP) with the cause fixed; the \
                 other accounts go on",
                timestamp(s.since_ms),
                s.error
            ),
        ),
        AccountEvent::Resolved {
            since_ms, running, ..
        } => {
            let what = if *running {
                "runs again"
            } else {
                "is no longer in the config"
            };
            (
                "resolved",
                format!("immish-sync on {host}: resolved (account {name} {what})"),
                format!(
                    "resolved: account {name} {what} (it had stopped at {})",
                    timestamp(*since_ms)
                ),
            )
        }
    }
}

/// Takes `e` into the messages waiting to be sent: a resolve whose incident was never
/// delivered cancels it (nothing is left to tell), any other event waits its turn.
fn queue_account_event(pending: &mut Vec<AccountEvent>, e: AccountEvent) {
    if let AccountEvent::Resolved { account, .. } = &e {
        let before = pending.len();
        pending.retain(|p| !matches!(p, AccountEvent::Stopped(s) if s.account == *account));
        if pending.len() < before {
            return;
        }
    }
    pending.push(e);
}

/// The agent's alerts of accounts that stopped with an error (docs/STATUS.md#alerts): one
/// `account_stopped` incident per stop, and one `resolved` when a SIGHUP starts the account
/// again or takes it out of the config, from this task of the agent, since an account's
/// own [`Alerts`] stop with it. A message that cannot be delivered is tried again every
/// `every`; once `events` closes (the daemon stops, or a SIGHUP changed `[alerts]`), what
/// is left gets one more try.
pub async fn account_stopped(
    notify: Notifier,
    mut events: tokio::sync::mpsc::UnboundedReceiver<AccountEvent>,
    every: Duration,
) {
    let mut pending: Vec<AccountEvent> = Vec::new();
    let mut failing = false;
    let mut open = true;
    while open || !pending.is_empty() {
        if pending.is_empty() {
            match events.recv().await {
                Some(e) => queue_account_event(&mut pending, e),
                None => return,
            }
        } else if open {
            tokio::select! {
                e = events.recv() => match e {
                    Some(e) => queue_account_event(&mut pending, e),
                    None => open = false,
                },
                _ = tokio::time::sleep(every) => {}
            }
        }
        let mut left = Vec::new();
        for e in pending.drain(..) {
            let (event, title, message) = account_text(&notify.host, &e);
            let since_ms = match &e {
                AccountEvent::Stopped(s) => s.since_ms,
                AccountEvent::Resolved { since_ms, .. } => *since_ms,
            };
            match notify
                .send(
                    event,
                    "account_stopped",
                    &title,
                    &message,
                    since_ms,
                    e.account(),
                )
                .await
            {
                Ok(()) => {
                    tracing::warn!(incident = "account_stopped", "alert sent: {message}");
                    failing = false;
                }
                Err(err) => {
                    notify.cannot_send(&mut failing, &err);
                    left.push(e);
                }
            }
        }
        pending = left;
        if !open {
            // The daemon stops: one last try, and no waiting for the next.
            return;
        }
    }
}

/// `text` as an HTTP header value can carry it (ntfy's `Title`): printable ASCII, other
/// characters as `?`, no line breaks.
fn header_safe(text: &str) -> String {
    text.chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect()
}

/// This machine's name, for the messages (several machines may alert one topic).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "this machine".to_owned();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const NOW: i64 = 1_000 * MIN;

    fn status() -> Status {
        Status::empty()
    }

    fn names(s: &Status, started_ms: i64) -> Vec<&'static str> {
        incidents(
            s,
            Duration::from_secs(15 * 60),
            Duration::from_secs(6 * 3600),
            started_ms,
            NOW,
        )
        .into_iter()
        .map(|i| i.name)
        .collect()
    }

    fn set(s: &mut Status, state: JobState, n: i64) {
        for c in &mut s.counts {
            if c.state == state {
                c.count = n;
            }
        }
    }

    #[test]
    fn an_outage_is_an_incident_only_once_it_lasted_outage_after() {
        let mut s = status();
        s.connection = Some(ConnectionState::Unreachable {
            since_ms: NOW - 14 * MIN,
            next_try_ms: None,
            error: "connection refused".into(),
        });
        assert!(names(&s, 0).is_empty());
        s.connection = Some(ConnectionState::Unreachable {
            since_ms: NOW - 16 * MIN,
            next_try_ms: None,
            error: "connection refused".into(),
        });
        let found = incidents(
            &s,
            Duration::from_secs(15 * 60),
            Duration::from_secs(6 * 3600),
            0,
            NOW,
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "outage");
        assert_eq!(found[0].since_ms, NOW - 16 * MIN);
        assert!(found[0].message.contains("connection refused"), "{found:?}");
        // A pause of the daemon's own (the server is full) is not an outage.
        s.connection = Some(ConnectionState::Paused {
            since_ms: 0,
            until_ms: None,
            reason: "full".into(),
        });
        assert!(names(&s, 0).is_empty());
    }

    #[test]
    fn nothing_backed_up_while_files_wait_counts_from_the_later_of_backup_and_start() {
        let mut s = status();
        s.last_success_ms = Some(NOW - 7 * 60 * MIN);
        // Nothing waits: no incident, however old the last backup.
        assert!(names(&s, 0).is_empty());
        set(&mut s, JobState::Queued, 3);
        assert_eq!(names(&s, 0), ["stalled"]);
        // A daemon started an hour ago gets its six hours.
        assert!(names(&s, NOW - 60 * MIN).is_empty());
        s.last_success_ms = Some(NOW - MIN);
        assert!(names(&s, 0).is_empty());
        // Unfinished files wait too.
        set(&mut s, JobState::Queued, 0);
        s.last_success_ms = None;
        s.waiting.count = 1;
        assert_eq!(names(&s, NOW - 7 * 60 * MIN), ["stalled"]);
    }

    #[test]
    fn a_stopped_account_is_named_in_the_title_and_ntfy_gets_a_header_it_can_carry() {
        let stop = |account: Option<&str>| {
            AccountEvent::Stopped(Stopped {
                account: account.map(str::to_owned),
                error: "state database /s/ä.sqlite3: file is not a database".into(),
                since_ms: NOW,
            })
        };
        let (event, title, message) = account_text("nas", &stop(Some("ann")));
        assert_eq!(event, "incident");
        assert_eq!(
            title,
            "immish-sync on nas: account ann stopped: state database /s/ä.sqlite3: file is \
             not a database"
        );
        assert!(
            message.contains(
                "until the daemon is restarted or reloaded (SIGHUP) with the cause \
                 fixed; the other accounts go on"
            ),
            "{message}"
        );
        let (_, title, _) = account_text("nas", &stop(None));
        assert!(title.contains("account default stopped"), "{title}");
        let header = header_safe(&title);
        assert!(header.contains("/s/?.sqlite3"), "{header}");
        assert!(reqwest::header::HeaderValue::from_str(&header).is_ok());
    }

    #[test]
    fn failed_files_and_trash_only_copies_are_incidents() {
        let mut s = status();
        set(&mut s, JobState::Failed, 2);
        s.in_trash_only = 1;
        assert_eq!(names(&s, NOW), ["failed", "trash_only"]);
        // Done files are no incident at all.
        let mut s = status();
        set(&mut s, JobState::Done, 100);
        assert!(names(&s, NOW).is_empty());
    }

    #[test]
    fn a_resolve_is_told_after_its_incident_and_cancels_one_never_delivered() {
        let stop = |account: &str| {
            AccountEvent::Stopped(Stopped {
                account: Some(account.to_owned()),
                error: "broken".into(),
                since_ms: NOW,
            })
        };
        let resolve = |account: &str, running: bool| AccountEvent::Resolved {
            account: Some(account.to_owned()),
            since_ms: NOW,
            running,
        };
        let (event, title, message) = account_text("nas", &resolve("ann", true));
        assert_eq!(event, "resolved");
        assert_eq!(
            title,
            "immish-sync on nas: resolved (account ann runs again)"
        );
        assert!(message.starts_with("resolved: account ann runs again (it had stopped at "));
        let (_, title, _) = account_text("nas", &resolve("ben", false));
        assert_eq!(
            title,
            "immish-sync on nas: resolved (account ben is no longer in the config)"
        );
        // Ann's stop still waits to be delivered: her resolve takes it away, and nothing is
        // told of her; Ben's stop, not resolved, stays.
        let mut pending = Vec::new();
        queue_account_event(&mut pending, stop("ann"));
        queue_account_event(&mut pending, stop("ben"));
        queue_account_event(&mut pending, resolve("ann", true));
        assert_eq!(pending.len(), 1, "{pending:?}");
        assert_eq!(pending[0].account(), Some("ben"));
        assert!(matches!(pending[0], AccountEvent::Stopped(_)));
        // Once delivered (nothing pending), a resolve is a message of its own.
        let mut pending = Vec::new();
        queue_account_event(&mut pending, resolve("ann", true));
        assert!(matches!(pending[..], [AccountEvent::Resolved { .. }]));
    }
}
