//! What the running daemon is doing, in memory and in the state database: its phase
//! (connecting, scanning, watching), its counts since it started, and the address of its
//! HTTP endpoint.
//!
//! Owns: the one [`Live`] of a daemon, shared by the engine (its counters, across the
//! generations of the task tree), the HTTP endpoint (fresh numbers), and the task that
//! records it every [`RECORD_EVERY`] in `meta` so that `status`, another process, can read
//! it (docs/STATUS.md#daemon). Must not: decide anything; it only reports.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::db::meta::{self, LiveState};
use crate::db::{now_ms, Db};
use crate::pipeline::Stats;

/// How often the live record is written. `status` calls a record older than
/// [`crate::status::LIVE_STALE_MS`] stale.
pub const RECORD_EVERY: Duration = Duration::from_secs(2);

/// See the module docs.
#[derive(Debug)]
pub struct Live {
    started_ms: i64,
    stats: Arc<Stats>,
    phase: Mutex<&'static str>,
    /// The agent's endpoint: one for every account.
    http: Arc<OnceLock<SocketAddr>>,
    /// The connected client, whose upload meter says what is in flight (a new one when
    /// the account is started again with new credentials).
    api: Mutex<Option<crate::api::ApiClient>>,
    /// On the agent's (`[server]`'s) `Live`: each `[[accounts]]` entry's own, by name
    /// (docs/ARCHITECTURE.md#accounts).
    accounts: Mutex<Vec<(String, Arc<Live>)>>,
    /// This account's name (`default` for `[server]`'s).
    name: String,
    /// Every account that stopped with an error while the others go on, name → why: one
    /// map for the agent, shared by every account's `Live`, so that each account's record
    /// tells of the others (`[server]`'s own database may be what broke).
    stopped: Arc<Mutex<BTreeMap<String, String>>>,
    /// An `[[accounts]]` entry's (not the agent's, `[server]`'s).
    of_account: bool,
}

/// The counters of every account added up (the one line of systemd's `STATUS=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub uploaded: u64,
    pub uploaded_bytes: u64,
    pub duplicates: u64,
    pub failed: u64,
}

impl Live {
    pub fn new() -> Arc<Live> {
        Arc::new(Live {
            started_ms: now_ms(),
            stats: Arc::new(Stats::default()),
            phase: Mutex::new("connecting"),
            http: Arc::new(OnceLock::new()),
            api: Mutex::new(None),
            accounts: Mutex::new(Vec::new()),
            name: crate::config::DEFAULT_ACCOUNT.to_owned(),
            stopped: Arc::default(),
            of_account: false,
        })
    }

    /// The `Live` of the `[[accounts]]` entry `name`, made on first use: its own counters,
    /// phase and connection, the agent's start time and endpoint.
    pub fn account(&self, name: &str) -> Arc<Live> {
        let mut all = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, l)) = all.iter().find(|(n, _)| n == name) {
            return l.clone();
        }
        let l = Arc::new(Live {
            started_ms: self.started_ms,
            stats: Arc::new(Stats::default()),
            phase: Mutex::new("connecting"),
            http: self.http.clone(),
            api: Mutex::new(None),
            accounts: Mutex::new(Vec::new()),
            name: name.to_owned(),
            stopped: self.stopped.clone(),
            of_account: true,
        });
        all.push((name.to_owned(), l.clone()));
        l
    }

    /// Forgets the `[[accounts]]` entry `name` (removed from the config by a SIGHUP): the
    /// endpoint and `/metrics` no longer show it, and no record names it as stopped.
    pub fn remove_account(&self, name: &str) {
        self.accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(n, _)| n != name);
        self.stopped_map().remove(name);
    }

    /// The `[[accounts]]` entries' `Live`s, by name, in the order they started.
    pub fn accounts(&self) -> Vec<(String, Arc<Live>)> {
        self.accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether this is an `[[accounts]]` entry's `Live` (else the agent's).
    pub fn of_account(&self) -> bool {
        self.of_account
    }

    /// This account's counters and every other account's, added up.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        let own = std::iter::once(self.stats.clone());
        for st in own.chain(self.accounts().into_iter().map(|(_, l)| l.stats.clone())) {
            t.uploaded += st.uploaded.load(Relaxed);
            t.uploaded_bytes += st.uploaded_bytes.load(Relaxed);
            t.duplicates += st.duplicates.load(Relaxed);
            t.failed += st.failed.load(Relaxed);
        }
        t
    }

    fn stopped_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.stopped.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This account stopped with `reason` (docs/ARCHITECTURE.md#accounts).
    pub fn set_failed(&self, reason: String) {
        self.stopped_map().insert(self.name.clone(), reason);
        self.set_phase("failed");
    }

    /// This account starts again (a SIGHUP changed its server or credentials): not
    /// stopped any more, connecting. Its counters since the start stay.
    pub fn restarting(&self) {
        self.stopped_map().remove(&self.name);
        self.set_phase("connecting");
    }

    /// Why this account stopped, if it stopped with an error.
    pub fn failed(&self) -> Option<String> {
        self.stopped_map().get(&self.name).cloned()
    }

    /// The engine's counters, kept across restarts of the task tree.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// `connecting`, `scanning` or `watching`.
    pub fn set_phase(&self, phase: &'static str) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase;
    }

    pub fn set_http(&self, addr: SocketAddr) {
        let _ = self.http.set(addr);
    }

    pub fn set_api(&self, api: crate::api::ApiClient) {
        *self.api.lock().unwrap_or_else(|p| p.into_inner()) = Some(api);
    }

    pub fn snapshot(&self) -> LiveState {
        let st = &self.stats;
        let flight = self
            .api
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|a| a.upload_meter().in_flight())
            .unwrap_or_default();
        let resume_ms = Some(st.uploads_resume_ms.load(Relaxed)).filter(|&ms| ms > 0);
        LiveState {
            at_ms: now_ms(),
            started_ms: self.started_ms,
            phase: (*self.phase.lock().unwrap_or_else(|p| p.into_inner())).to_owned(),
            uploaded_files: st.uploaded.load(Relaxed),
            uploaded_bytes: st.uploaded_bytes.load(Relaxed),
            duplicates: st.duplicates.load(Relaxed),
            failed: st.failed.load(Relaxed),
            retries: st.retries.load(Relaxed),
            http: self.http.get().map(|a| a.to_string()),
            sending_files: flight.files,
            sending_bytes: flight.sent,
            sending_total_bytes: flight.size,
            uploads_resume_ms: resume_ms,
            uploads_resume_at: resume_ms.map(crate::windows::local_hh_mm),
            stopped: self.failed(),
            // Every other account's, `[server]`'s too: any running account's record tells
            // `status` which stopped.
            stopped_accounts: self
                .stopped_map()
                .iter()
                .filter(|(n, _)| **n != self.name)
                .map(|(n, why)| (n.clone(), why.clone()))
                .collect(),
        }
    }

    /// Records the snapshot every [`RECORD_EVERY`] until `shutdown`. A database that
    /// cannot take the write is the engine's to report; this only tries again.
    pub async fn record(self: Arc<Live>, db: Db, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(RECORD_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let snap = self.snapshot();
            if let Err(e) = db.call(move |c| meta::set_live_state(c, &snap)).await {
                tracing::debug!(error = %e, "cannot record the daemon's live state");
            }
        }
    }
}
