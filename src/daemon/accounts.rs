//! Several accounts on one agent (docs/ARCHITECTURE.md#accounts): one process and one
//! state-directory lock, and for each account its own state database, connection, engine,
//! watcher, scanner, mirror and library, so that one account's pause (a revoked key, a
//! full quota, an outage of its server) holds only its own roots.
//!
//! Owns: the view of the config each account runs with ([`project`]), where an account's
//! state lives ([`account_dir`]), running the accounts side by side, adding, removing and
//! restarting them as the configs a SIGHUP reads again say (and sharing out the rest of
//! those configs), the alert of an account that stopped, and adding up their `scan`s.

use std::collections::HashMap;
use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::error::DaemonError;
use super::scan_command::{scan_one, ScanSummary};
use super::startup::{open, Opened};
use super::tree::run_account;
use super::tuning::Tuning;
use crate::alerts;
use crate::config::Config;
use crate::control::reload::{self, Reloaded};
use crate::live::Live;
use crate::lock::StateLock;
use crate::pipeline::{EngineEnd, Stats};

/// The folder under the state directory that holds the other accounts' state.
pub const ACCOUNTS_DIR: &str = "accounts";

/// Where the state of the `[[accounts]]` entry `name` lives; `[server]`'s account keeps the
/// state directory itself, so that a state directory from before keeps working.
pub fn account_dir(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join(ACCOUNTS_DIR).join(name)
}

/// The config one account runs with: its server and credentials, its own state directory,
/// and only the roots that name it (`None` = `[server]`'s account). `None` when `config`
/// has no such account.
pub fn project(config: &Config, name: Option<&str>) -> Option<Config> {
    let mut c = config.clone();
    if let Some(name) = name {
        let account = config.accounts.iter().find(|a| a.name == name)?;
        c.server = account.server.clone();
        c.state.dir = account_dir(&config.state.dir, name);
    }
    c.roots.retain(|r| r.account.as_deref() == name);
    c.pull.retain(|p| p.account.as_deref() == name);
    Some(c)
}

/// The accounts of `config`, `[server]`'s first.
fn names(config: &Config) -> Vec<Option<String>> {
    std::iter::once(None)
        .chain(config.accounts.iter().map(|a| Some(a.name.clone())))
        .collect()
}

/// How many configs read again may wait for one account (SIGHUPs are few and far between).
const RELOADS_QUEUED: usize = 4;
/// How long a stopping daemon gives its last `account_stopped` alerts to get through.
const LAST_ALERTS: std::time::Duration = std::time::Duration::from_secs(20);

/// One running account of [`run_all`].
struct Running {
    /// Its task in [`Agent::tasks`].
    id: tokio::task::Id,
    /// Stops this account alone (a child of every account's token).
    stop: CancellationToken,
    /// Its part of each config a SIGHUP reads again.
    reloads: mpsc::Sender<Reloaded>,
}

/// The accounts of a running agent, as SIGHUPs add, remove and restart them
/// (docs/ARCHITECTURE.md#accounts).
struct Agent {
    tuning: Tuning,
    /// The agent's (`[server]`'s account's); each other account's is under it.
    live: Arc<Live>,
    shutdown: CancellationToken,
    /// Every account's token, under `shutdown`.
    all: CancellationToken,
    tasks: JoinSet<Result<(), DaemonError>>,
    /// Whose task each is (`None`: `[server]`'s).
    whose: HashMap<tokio::task::Id, Option<String>>,
    running: HashMap<Option<String>, Running>,
    /// The accounts that stopped with an error, in order.
    failed: Vec<Failure>,
    /// The state directory's lock, taken by `[server]`'s account and held here for as long
    /// as any account runs, so that `status` sees the daemon and a second one cannot start
    /// even when `[server]`'s account has stopped.
    lock: Option<StateLock>,
    /// The agent's `account_stopped` alerts.
    alerts: StopAlerts,
    /// Whether the running config has `[[accounts]]`. Without, `[server]`'s account is the
    /// single-account daemon it always was: its error is the daemon's, and its lines
    /// carry no span.
    with_accounts: bool,
}

/// The agent's `account_stopped` alerts (docs/STATUS.md#alerts): the channel to the task
/// that sends them, as `[alerts]` says, across the SIGHUPs that change it.
struct StopAlerts {
    /// How often the alerts look for incidents (`Tuning::alert_check`).
    check: std::time::Duration,
    /// To the running task, when `[alerts]` has a URL.
    stops: Option<mpsc::UnboundedSender<alerts::AccountEvent>>,
    /// The `account_stopped` tasks: the running one, and those a new `[alerts]` (SIGHUP)
    /// replaced, which finish what they were sending.
    alerting: Vec<tokio::task::JoinHandle<()>>,
}

impl StopAlerts {
    /// The agent's `account_stopped` alerts as `config` says (none without a URL); the
    /// task of the config before finishes what it was sending (docs/ARCHITECTURE.md#reload).
    fn set(&mut self, config: &crate::config::AlertsConfig) {
        self.stops = alerts::Notifier::new(config).map(|notify| {
            let (tx, rx) = mpsc::unbounded_channel();
            self.alerting.push(tokio::spawn(
                alerts::account_stopped(notify, rx, self.check).in_current_span(),
            ));
            tx
        });
    }

    /// Tells the agent's alerts of an account.
    fn tell(&self, event: alerts::AccountEvent) {
        if let Some(stops) = &self.stops {
            let _ = stops.send(event);
        }
    }

    /// The last alerts get their chance (at most [`LAST_ALERTS`]); nothing more is sent.
    async fn finish(&mut self) {
        drop(self.stops.take());
        let alerting = futures_util::future::join_all(std::mem::take(&mut self.alerting));
        let _ = tokio::time::timeout(LAST_ALERTS, alerting).await;
    }
}

/// An account that stopped with an error.
struct Failure {
    /// `None`: `[server]`'s.
    name: Option<String>,
    error: DaemonError,
    /// When (unix ms).
    since_ms: i64,
}

/// What [`JoinSet::join_next_with_id`] gives for an account's task.
type Joined = Result<(tokio::task::Id, Result<(), DaemonError>), tokio::task::JoinError>;

/// A finished task as its id and result (a panic is the account's error).
fn unpack(done: Joined) -> (tokio::task::Id, Result<(), DaemonError>) {
    match done {
        Ok((id, r)) => (id, r),
        Err(e) => (e.id(), Err(DaemonError::Task(e.to_string()))),
    }
}

/// The name `status`, the logs and the alerts give an account.
fn shown(name: &Option<String>) -> &str {
    name.as_deref().unwrap_or(crate::config::DEFAULT_ACCOUNT)
}

impl Agent {
    /// Takes the account `name` out of the failed ones, if it is one: its stop's time.
    fn unfail(&mut self, name: &Option<String>) -> Option<i64> {
        let at = self.failed.iter().position(|f| f.name == *name)?;
        Some(self.failed.remove(at).since_ms)
    }

    /// Starts again, with `c`, an account that is not running (added, re-keyed, or failed
    /// and tried again by a SIGHUP). One that had failed and starts is a resolved
    /// `account_stopped`; one that cannot start has failed (again).
    async fn restart(&mut self, name: Option<String>, c: Config) {
        self.live_of(&name).restarting();
        let was = self.unfail(&name);
        let state_dir = c.state.dir.clone();
        if name.is_none() {
            // `[server]`'s account takes the state directory's lock as it opens.
            drop(self.lock.take());
        }
        match self.start(name.clone(), c).await {
            Ok(()) => {
                if let Some(since_ms) = was {
                    tracing::info!(account = shown(&name), "SIGHUP: the account runs again");
                    self.alerts.tell(alerts::AccountEvent::Resolved {
                        account: name,
                        since_ms,
                        running: true,
                    });
                }
            }
            Err(e) => {
                if name.is_none() && self.lock.is_none() {
                    // Held again for the other accounts, so that `status` sees the daemon.
                    self.lock = StateLock::acquire(&state_dir).ok();
                }
                self.stopped(name, e);
            }
        }
    }

    fn live_of(&self, name: &Option<String>) -> Arc<Live> {
        match name {
            None => self.live.clone(),
            Some(n) => self.live.account(n),
        }
    }

    /// Opens an account's local state (its folder, lock, database and control socket)
    /// and starts it (docs/ARCHITECTURE.md#start-up); `c` is its projection.
    async fn start(&mut self, name: Option<String>, c: Config) -> Result<(), DaemonError> {
        if name.is_some() {
            // The accounts' folder is as private as the state directory around it.
            let dir = c
                .state
                .dir
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| c.state.dir.clone());
            if let Err(source) = std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::set_permissions(&dir, Permissions::from_mode(0o700)))
            {
                return Err(DaemonError::StateDir { path: dir, source });
            }
        }
        let stop = self.all.child_token();
        let mut opened = open(&c, true, &stop).await?;
        if name.is_none() {
            self.lock = opened.lock.take();
        }
        self.spawn(name, c, opened, stop);
        Ok(())
    }

    fn spawn(&mut self, name: Option<String>, c: Config, o: Opened, stop: CancellationToken) {
        let mine = self.live_of(&name);
        let (tx, rx) = mpsc::channel(RELOADS_QUEUED);
        // Every log line of an account names it.
        let span = if name.is_some() || self.with_accounts {
            span_of(name.as_deref())
        } else {
            tracing::Span::current()
        };
        let (tuning, token, task_name) = (self.tuning.clone(), stop.clone(), name.clone());
        let handle =
            self.tasks.spawn(
                async move {
                    run_account(o, c, tuning, mine, token, Some(rx), task_name.as_deref()).await
                }
                .instrument(span),
            );
        self.whose.insert(handle.id(), name.clone());
        self.running.insert(
            name,
            Running {
                id: handle.id(),
                stop,
                reloads: tx,
            },
        );
    }

    /// An account's task ended by itself: with an error, that account stopped alone.
    fn ended(&mut self, id: tokio::task::Id, r: Result<(), DaemonError>) {
        let Some(name) = self.whose.remove(&id) else {
            return;
        };
        if self.running.get(&name).is_some_and(|run| run.id == id) {
            self.running.remove(&name);
        }
        if let Err(e) = r {
            self.stopped(name, e);
        }
    }

    /// Records that the account `name` stopped with `e` (or could not start): logged with
    /// its name, its `Live` `failed`, and an alert (with `[[accounts]]`; a single-account
    /// daemon just ends with it).
    fn stopped(&mut self, name: Option<String>, e: DaemonError) {
        let who = shown(&name);
        if !self.with_accounts {
            // A single-account daemon ends with this error, which main prints, as it
            // always did.
        } else if self.shutdown.is_cancelled() {
            tracing::error!(account = who, "{e}");
        } else {
            tracing::error!(
                account = who,
                "{e}; this account stopped, the other accounts go on (a restart of the \
                 daemon, or a SIGHUP, tries it again)"
            );
        }
        let since_ms = crate::db::now_ms();
        if self.with_accounts && !self.shutdown.is_cancelled() {
            self.alerts
                .tell(alerts::AccountEvent::Stopped(alerts::Stopped {
                    account: name.clone(),
                    error: e.to_string(),
                    since_ms,
                }));
        }
        self.live_of(&name).set_failed(e.to_string());
        self.failed.push(Failure {
            name,
            error: e,
            since_ms,
        });
    }

    /// Stops the running accounts among `names` the way a shutdown stops them (drain,
    /// control socket, lock) and waits for them; the others' ends meanwhile count as usual.
    async fn stop(&mut self, names: &[Option<String>]) {
        let mut waiting = std::collections::HashSet::new();
        for n in names {
            if let Some(run) = self.running.get(n) {
                run.stop.cancel();
                waiting.insert(run.id);
            }
        }
        while !waiting.is_empty() {
            let Some(done) = self.tasks.join_next_with_id().await else {
                break;
            };
            let (id, r) = unpack(done);
            if !waiting.remove(&id) {
                self.ended(id, r);
                continue;
            }
            let name = self.whose.remove(&id).flatten();
            if let Err(e) = r {
                tracing::warn!(
                    account = shown(&name),
                    "the account stopped with an error: {e}"
                );
            }
            self.running.remove(&name);
        }
    }

    /// A config read again (SIGHUP): accounts added are started, accounts removed stopped
    /// (their state stays), accounts whose server part changed restarted alone, and every
    /// other running account takes its part by the reload rules (docs/ARCHITECTURE.md#reload).
    async fn reload(&mut self, running: &mut Config, new: Reloaded) {
        let mut new = match new {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("SIGHUP: the new config is refused, the running one is kept: {e}");
                return;
            }
        };
        if !running.alerts.same_as(&new.alerts) {
            self.alerts.set(&new.alerts);
        }
        // `[server]`'s account keeps its rules, a new `[state] dir` included (a restart).
        let default_part = project(&new, None);
        // The other accounts live in the state directory the daemon started with.
        new.state.dir = running.state.dir.clone();
        let before: Vec<&str> = running.accounts.iter().map(|a| a.name.as_str()).collect();
        let after: Vec<&str> = new.accounts.iter().map(|a| a.name.as_str()).collect();
        let removed: Vec<String> = before
            .iter()
            .filter(|n| !after.contains(n))
            .map(|n| n.to_string())
            .collect();
        let added: Vec<String> = after
            .iter()
            .filter(|n| !before.contains(n))
            .map(|n| n.to_string())
            .collect();
        let changed: Vec<String> = after
            .iter()
            .filter(|n| before.contains(n))
            .filter(|n| {
                let part = |c: &Config| project(c, Some(n)).map(|p| p.server);
                match (part(running), part(&new)) {
                    (Some(old), Some(now)) => !old.same_as(&now),
                    _ => false,
                }
            })
            .map(|n| n.to_string())
            .collect();
        for n in &removed {
            tracing::info!(
                account = n.as_str(),
                "SIGHUP: the account is no longer in the config: stopping it; its state \
                 stays in {}",
                account_dir(&running.state.dir, n).display()
            );
        }
        for n in &changed {
            tracing::info!(
                account = n.as_str(),
                "SIGHUP: the account's server or credentials changed: restarting it alone"
            );
        }
        let going: Vec<Option<String>> = removed
            .iter()
            .chain(&changed)
            .map(|n| Some(n.clone()))
            .collect();
        self.stop(&going).await;
        for n in &removed {
            self.live.remove_account(n);
            let name = Some(n.clone());
            if let Some(since_ms) = self.unfail(&name) {
                self.alerts.tell(alerts::AccountEvent::Resolved {
                    account: name,
                    since_ms,
                    running: false,
                });
            }
        }
        self.with_accounts = !new.accounts.is_empty();
        // An account that stopped with an error is tried again by any SIGHUP (the cause,
        // a broken state database say, may have been fixed meanwhile).
        let retried: Vec<Option<String>> = self
            .failed
            .iter()
            .map(|f| f.name.clone())
            .filter(|n| !self.running.contains_key(n))
            .filter(|n| match n {
                None => true,
                Some(n) => {
                    after.contains(&n.as_str()) && !added.contains(n) && !changed.contains(n)
                }
            })
            .collect();
        for n in &retried {
            tracing::info!(
                account = shown(n),
                "SIGHUP: the account had stopped with an error: starting it again"
            );
        }
        let starting: Vec<&String> = after
            .iter()
            .filter_map(|n| {
                added
                    .iter()
                    .chain(&changed)
                    .chain(retried.iter().flatten())
                    .find(|a| a.as_str() == *n)
            })
            .collect();
        if retried.contains(&None) {
            if let Some(c) = project(&new, None) {
                self.restart(None, c).await;
            }
        }
        for n in &starting {
            let Some(c) = project(&new, Some(n)) else {
                continue;
            };
            if added.contains(n) {
                tracing::info!(
                    account = n.as_str(),
                    "SIGHUP: account added to the config: starting it"
                );
            }
            self.restart(Some((*n).clone()), c).await;
        }
        for (name, run) in &self.running {
            let fresh = match name {
                None => retried.contains(&None),
                Some(n) => starting.contains(&n),
            };
            if fresh {
                continue;
            }
            let part = match name {
                None => default_part.clone(),
                Some(n) => project(&new, Some(n)),
            };
            let Some(part) = part else { continue };
            if let Err(e) = run.reloads.try_send(Ok(part)) {
                tracing::warn!(
                    account = shown(name),
                    "SIGHUP: the account has not taken the last config yet; this one is \
                     dropped ({e})"
                );
            }
        }
        *running = new;
    }
}

/// `run` with `[[accounts]]` (and every daemon that takes SIGHUPs): every account's local
/// state is opened first, in order (`[server]`'s takes the state directory's lock), then
/// the accounts run side by side, each with its own [`Live`] (counters, phase, connection)
/// under the agent's `live`. A SIGHUP's config adds, removes and restarts accounts
/// ([`Agent::reload`]).
///
/// One account that fails (its state database broken, a critical task gone) stops alone:
/// its error is logged with its name, shown as its `failed` (status, `/healthz`,
/// `/metrics`) and alerted (`account_stopped`), and the others go on. The daemon ends when
/// every account has ended: `Ok` when none failed, else [`DaemonError::AccountsStopped`]
/// naming the failed ones, so that a service manager's `Restart=on-failure` tries them
/// again (docs/ARCHITECTURE.md#accounts). Without `[[accounts]]` the one error is returned
/// as it is.
pub(super) async fn run_all(
    config: Config,
    tuning: Tuning,
    live: Arc<Live>,
    shutdown: CancellationToken,
    mut reloads: Option<mpsc::Receiver<Reloaded>>,
) -> Result<(), DaemonError> {
    let all = shutdown.child_token();
    let alerts = StopAlerts {
        check: tuning.alert_check,
        stops: None,
        alerting: Vec::new(),
    };
    let mut agent = Agent {
        tuning,
        live,
        shutdown,
        all: all.clone(),
        tasks: JoinSet::new(),
        whose: HashMap::new(),
        running: HashMap::new(),
        failed: Vec::new(),
        lock: None,
        alerts,
        with_accounts: !config.accounts.is_empty(),
    };
    agent.alerts.set(&config.alerts);
    for name in names(&config) {
        let Some(c) = project(&config, name.as_deref()) else {
            continue;
        };
        if let Err(e) = agent.start(name, c).await {
            // A state that cannot be opened at start stops the start; the control sockets
            // opened so far go with the others.
            all.cancel();
            while agent.tasks.join_next().await.is_some() {}
            return Err(e);
        }
    }
    let mut running = config;
    loop {
        enum Event {
            Ended(Option<Joined>),
            Reload(Box<Reloaded>),
        }
        let event = tokio::select! {
            done = agent.tasks.join_next_with_id() => Event::Ended(done),
            new = reload::next(&mut reloads) => Event::Reload(Box::new(new)),
        };
        match event {
            Event::Ended(None) => break,
            Event::Ended(Some(done)) => {
                let (id, r) = unpack(done);
                agent.ended(id, r);
            }
            Event::Reload(new) => agent.reload(&mut running, *new).await,
        }
    }
    all.cancel();
    // The last alerts get their chance; nothing more is sent.
    agent.alerts.finish().await;
    drop(agent.lock.take());
    let mut failed = std::mem::take(&mut agent.failed);
    if failed.is_empty() {
        return Ok(());
    }
    if !agent.with_accounts && failed.len() == 1 {
        return Err(failed.swap_remove(0).error);
    }
    let names = failed
        .iter()
        .map(|f| shown(&f.name))
        .collect::<Vec<_>>()
        .join(", ");
    let first = failed.swap_remove(0).error;
    Err(DaemonError::AccountsStopped {
        names,
        first: Box::new(first),
    })
}

/// The span of an account's work: `account{name=ann}` before each of its log lines.
fn span_of(name: Option<&str>) -> tracing::Span {
    tracing::info_span!(
        "account",
        name = name.unwrap_or(crate::config::DEFAULT_ACCOUNT)
    )
}

/// `scan` with `[[accounts]]`: one account after the other, in one summary.
pub(super) async fn scan_all(
    config: Config,
    tuning: Tuning,
    shutdown: CancellationToken,
) -> Result<ScanSummary, DaemonError> {
    let mut total: Option<ScanSummary> = None;
    for name in names(&config) {
        let Some(c) = project(&config, name.as_deref()) else {
            continue;
        };
        let s = scan_one(c, tuning.clone(), shutdown.clone())
            .instrument(span_of(name.as_deref()))
            .await?;
        total = Some(match total {
            None => s,
            Some(t) => add(t, s),
        });
    }
    total.ok_or_else(|| DaemonError::Task("no account to scan".into()))
}

/// Two summaries as one.
fn add(mut a: ScanSummary, b: ScanSummary) -> ScanSummary {
    let stats = Stats::default();
    for st in [&a.stats, &b.stats] {
        for (to, from) in [
            (&stats.hashed, &st.hashed),
            (&stats.hashed_bytes, &st.hashed_bytes),
            (&stats.uploaded, &st.uploaded),
            (&stats.uploaded_bytes, &st.uploaded_bytes),
            (&stats.duplicates, &st.duplicates),
            (&stats.linked, &st.linked),
            (&stats.skipped, &st.skipped),
            (&stats.failed, &st.failed),
            (&stats.retries, &st.retries),
        ] {
            to.fetch_add(from.load(Relaxed), Relaxed);
        }
    }
    a.stats = Arc::new(stats);
    a.roots.extend(b.roots);
    if a.end == EngineEnd::Idle {
        a.end = b.end;
    }
    a.elapsed += b.elapsed;
    a.pending += b.pending;
    a.failed.extend(b.failed);
    a.failed_total += b.failed_total;
    a.settle = a.settle.max(b.settle);
    a.trash_only_total += b.trash_only_total;
    a.trash_only.extend(b.trash_only);
    a.deleted_held_back += b.deleted_held_back;
    a.held_roots.extend(b.held_roots);
    a.pull = match (a.pull, b.pull) {
        (Some(x), Some(y)) => Some(x.and(y)),
        (x, y) => x.or(y),
    };
    a
}
