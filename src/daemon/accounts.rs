//! Several accounts on one agent (docs/ARCHITECTURE.md#accounts): one process and one
//! state-directory lock, and for each account its own state database, connection, engine,
//! watcher, scanner, mirror and library, so that one account's pause (a revoked key, a
//! full quota, an outage of its server) holds only its own roots.
//!
//! Owns: the view of the config each account runs with ([`project`]), where an account's
//! state lives ([`account_dir`]), running the accounts side by side, sharing out the
//! configs a SIGHUP reads again, and adding up their `scan`s.

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{open, run_account, scan_one, DaemonError, Reloaded, ScanSummary, Tuning};
use crate::config::Config;
use crate::live::Live;
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

/// Hands each account the part of a config read again that is its own. Accounts added or
/// removed take a restart (logged); the others take the rest.
fn share_reloads(
    running: &Config,
    reloads: Option<mpsc::Receiver<Reloaded>>,
) -> Vec<Option<mpsc::Receiver<Reloaded>>> {
    let names = names(running);
    let Some(mut reloads) = reloads else {
        return names.iter().map(|_| None).collect();
    };
    let (senders, receivers): (Vec<_>, Vec<_>) = names
        .iter()
        .map(|_| {
            let (tx, rx) = mpsc::channel::<Reloaded>(1);
            (tx, Some(rx))
        })
        .unzip();
    tokio::spawn(async move {
        while let Some(new) = reloads.recv().await {
            if let Ok(c) = &new {
                if self::names(c) != names {
                    tracing::warn!(
                        "SIGHUP: [[accounts]] changed in the config: accounts are added or \
                         removed only by a restart"
                    );
                }
            }
            for (name, tx) in names.iter().zip(&senders) {
                let mine = match &new {
                    Err(e) => Err(e.clone()),
                    Ok(c) => match project(c, name.as_deref()) {
                        Some(c) => Ok(c),
                        None => continue,
                    },
                };
                // An account that stopped takes no more configs.
                let _ = tx.send(mine).await;
            }
        }
    });
    receivers
}

/// `run` with `[[accounts]]`: every account's local state is opened first, in order
/// (`[server]`'s takes the state directory's lock), then the accounts run side by side,
/// each with its own [`Live`] (counters, phase, connection) under the agent's `live`.
///
/// One account that fails (its state database broken, a critical task gone) stops alone:
/// its error is logged with its name and shown as its `failed` (status, `/healthz`,
/// `/metrics`), and the others go on. The daemon ends when every account has ended: `Ok`
/// when none failed, else [`DaemonError::AccountsStopped`] naming the failed ones, so that
/// a service manager's `Restart=on-failure` tries them again (docs/ARCHITECTURE.md#accounts).
pub(super) async fn run_all(
    config: Config,
    tuning: Tuning,
    live: Arc<Live>,
    shutdown: CancellationToken,
    reloads: Option<mpsc::Receiver<Reloaded>>,
) -> Result<(), DaemonError> {
    let all = shutdown.child_token();
    let mut opened = Vec::new();
    for name in names(&config) {
        let Some(c) = project(&config, name.as_deref()) else {
            continue;
        };
        if name.is_some() {
            // The accounts' folder is as private as the state directory around it.
            let dir = config.state.dir.join(ACCOUNTS_DIR);
            if let Err(source) = std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::set_permissions(&dir, Permissions::from_mode(0o700)))
            {
                all.cancel();
                return Err(DaemonError::StateDir { path: dir, source });
            }
        }
        match open(&c, true, &all).await {
            Ok(o) => opened.push((name, c, o)),
            Err(e) => {
                // The control sockets opened so far go with the others.
                all.cancel();
                return Err(e);
            }
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    let mut whose = std::collections::HashMap::new();
    for ((name, c, o), rx) in opened.into_iter().zip(share_reloads(&config, reloads)) {
        let mine = match &name {
            None => live.clone(),
            Some(n) => live.account(n),
        };
        let (tuning, all) = (tuning.clone(), all.clone());
        // Every log line of an account names it.
        let span = span_of(name.as_deref());
        let task_name = name.clone();
        let mine_too = mine.clone();
        let handle = tasks.spawn(
            async move {
                let r = run_account(o, c, tuning, mine_too, all, rx, task_name.as_deref()).await;
                (task_name, r)
            }
            .instrument(span),
        );
        whose.insert(handle.id(), (name, mine));
    }
    let mut failed: Vec<(String, DaemonError)> = Vec::new();
    while let Some(done) = tasks.join_next_with_id().await {
        let (id, r) = match done {
            Ok((id, (_, r))) => (id, r),
            Err(e) => (e.id(), Err(DaemonError::Task(e.to_string()))),
        };
        let Err(e) = r else { continue };
        let Some((name, mine)) = whose.get(&id) else {
            continue;
        };
        let shown = name.as_deref().unwrap_or(crate::config::DEFAULT_ACCOUNT);
        if shutdown.is_cancelled() {
            tracing::error!(account = shown, "{e}");
        } else {
            tracing::error!(
                account = shown,
                "{e}; this account stopped, the other accounts go on (a restart of the \
                 daemon tries it again)"
            );
        }
        mine.set_failed(e.to_string());
        failed.push((shown.to_owned(), e));
    }
    all.cancel();
    if failed.is_empty() {
        return Ok(());
    }
    let names = failed
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let (_, first) = failed.swap_remove(0);
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
