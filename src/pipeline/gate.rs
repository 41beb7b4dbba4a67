//! The gate in front of all network work: the global pauses (credentials rejected, server
//! full, a problem only the user can fix, an outage) and the circuit breaker that opens one
//! after too many transient failures in a row.
//!
//! Owns: which pause is on, until when, and how each kind ends — one row per kind in
//! [`RULES`]. An outage is counted once, not once per failed request: the failures of the
//! requests in flight when the server went away open it together, nothing escalates it while
//! it is on, and it ends when one cheap probe (sent on its own backoff) gets an answer, or
//! when another part of the daemon saw the server answer ([`Gate::server_answered`]).
//!
//! Must not: touch the database or the network itself; the engine runs the probe the gate
//! asks for and tells it the answer. Each engine owns its gate (a value, not a global), so
//! that a second account can have its own pauses.

use std::time::{Duration, Instant};

use crate::api::ApiError;
use crate::backoff::Backoff;
use crate::windows::Windows;

/// Consecutive transient failures that open the circuit breaker (pause all network work).
pub const BREAKER_THRESHOLD: u32 = 5;

/// Why all network work is paused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pause {
    /// The server rejected the credentials; probing slowly until they work.
    Auth(String),
    /// The server is full (disk or quota).
    Capacity(String),
    /// Too many transient failures in a row: the server or network is down.
    Outage(String),
    /// A problem no retry fixes (e.g. the key lacks a permission); the daemon waits for the
    /// user.
    Blocked(String),
}

impl Pause {
    /// The exit code of a `scan` stopped by this pause.
    pub fn is_auth(&self) -> bool {
        matches!(self, Pause::Auth(_))
    }

    pub fn message(&self) -> &str {
        match self {
            Pause::Auth(m) | Pause::Capacity(m) | Pause::Outage(m) | Pause::Blocked(m) => m,
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Pause::Auth(_) => Kind::Auth,
            Pause::Capacity(_) => Kind::Capacity,
            Pause::Outage(_) => Kind::Outage,
            Pause::Blocked(_) => Kind::Blocked,
        }
    }
}

/// How long the timed pauses last (the daemon's tuning; tests shorten them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PauseTimes {
    /// After a 401, how often to ask the server whether the credentials work again.
    pub auth_probe_interval: Duration,
    /// After "server full" (507, quota) or a refusal only the user can fix, how long to
    /// wait before trying again.
    pub capacity_pause: Duration,
    /// During an outage, the waits between probes: from the first step up to the cap, with
    /// jitter. The cap is how late, at worst, uploads resume after the server is back when
    /// nothing else (the live-event socket, a pull) noticed it first.
    pub outage_probe: Backoff,
}

/// The daemon's outage probes: one after about a second, doubling up to 30 s.
pub const OUTAGE_PROBE: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));

/// An outage as the gate sees it, for `status` and logs (see [`Gate::outage`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outage {
    /// When the first failure of the outage landed.
    pub since: Instant,
    /// When the next probe is due (or was: it may be in flight).
    pub next_probe_at: Instant,
    /// The last failure's message.
    pub reason: String,
}

/// A task's effect on the gate.
pub(crate) enum Signal {
    Ok,
    /// A transient failure (the job has been scheduled for a retry already).
    Transient(String),
    /// Needs a global pause; the job (if any) was not charged and goes back to waiting.
    Pause(Pause),
}

/// The kinds of pause, in the order of their rows in [`RULES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Auth,
    Capacity,
    Blocked,
    Outage,
}

/// How a pause ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ends {
    /// When a probe (`validateToken`) succeeds; one is sent every wait (for an outage, also
    /// at once when the server was seen answering elsewhere).
    Probe,
    /// When the wait is over (work is tried again; it may pause again).
    Timer,
}

/// Which wait a pause uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    AuthProbe,
    Capacity,
    /// [`PauseTimes::outage_probe`], one step further for every probe that got no answer.
    OutageProbe,
}

/// What a kind of pause does.
struct Rule {
    kind: Kind,
    ends: Ends,
    wait: Wait,
    /// Whether `immish-sync scan` stops at it and tells the user, rather than waiting.
    stops_scan: bool,
    /// Logged at WARN rather than ERROR (it fixes itself, usually).
    warn_only: bool,
    /// What the log line says after the pause's message, before the wait in seconds.
    says: &'static str,
}

/// One row per kind of pause, in the order of [`Kind`].
const RULES: [Rule; 4] = [
    Rule {
        kind: Kind::Auth,
        ends: Ends::Probe,
        wait: Wait::AuthProbe,
        stops_scan: true,
        warn_only: false,
        says: "pausing all uploads and checking again every",
    },
    Rule {
        kind: Kind::Capacity,
        ends: Ends::Timer,
        wait: Wait::Capacity,
        stops_scan: true,
        warn_only: false,
        says: "pausing uploads for",
    },
    // Nothing tells us when the user fixes it (validateToken passes for any valid key), so
    // it is tried again now and then.
    Rule {
        kind: Kind::Blocked,
        ends: Ends::Timer,
        wait: Wait::Capacity,
        stops_scan: true,
        warn_only: false,
        says: "uploads are paused, trying again in",
    },
    // A scan waits an outage out: the retries it needs are already scheduled. No upload is
    // tried while it lasts; one probe per wait asks whether the server is back.
    Rule {
        kind: Kind::Outage,
        ends: Ends::Probe,
        wait: Wait::OutageProbe,
        stops_scan: false,
        warn_only: true,
        says: "pausing uploads until it answers again; next check in",
    },
];

fn rule(kind: Kind) -> &'static Rule {
    let r = &RULES[kind as usize];
    debug_assert_eq!(r.kind, kind, "RULES is in the order of Kind");
    r
}

/// The gate: open, or paused for one reason until a time or a successful probe.
pub(crate) struct Gate {
    times: PauseTimes,
    pause: Option<Pause>,
    until: Option<Instant>,
    consecutive_failures: u32,
    /// When the first of `consecutive_failures` landed: the start of an outage it opens.
    failing_since: Option<Instant>,
    /// Probes of the current outage that got no answer.
    probe_failures: u32,
    probe_in_flight: bool,
    /// `upload.windows` (docs/ARCHITECTURE.md#upload-windows).
    windows: Windows,
}

impl Gate {
    pub fn new(times: PauseTimes) -> Gate {
        Gate {
            times,
            pause: None,
            until: None,
            consecutive_failures: 0,
            failing_since: None,
            probe_failures: 0,
            probe_in_flight: false,
            windows: Windows::default(),
        }
    }

    /// The outage going on, if one is.
    pub fn outage(&self) -> Option<Outage> {
        match (&self.pause, self.until) {
            (Some(Pause::Outage(reason)), Some(next)) => Some(Outage {
                since: self.failing_since.unwrap_or(next),
                next_probe_at: next,
                reason: reason.clone(),
            }),
            _ => None,
        }
    }

    /// Another part of the daemon got an answer from the server (the live-event socket
    /// connected, a pull succeeded): an outage's probe is due at once, rather than at the
    /// end of its wait.
    pub fn server_answered(&mut self, now: Instant) {
        if matches!(self.pause, Some(Pause::Outage(_))) && !self.probe_in_flight {
            self.until = Some(now);
        }
    }

    pub fn is_open(&self) -> bool {
        self.pause.is_none()
    }

    /// The upload windows this gate keeps (`upload.windows`; none for `scan`).
    pub fn with_windows(mut self, windows: Windows) -> Gate {
        self.windows = windows;
        self
    }

    pub fn windows(&self) -> &Windows {
        &self.windows
    }

    /// Beside the pauses, the one thing that stops only new uploads: outside every upload
    /// window, when the next one opens (`now` is local time). Hashing, dedup checks,
    /// verification and uploads in flight go on.
    pub fn uploads_closed_until(&self, now: &jiff::ZonedDateTime) -> Option<jiff::ZonedDateTime> {
        self.windows.closed_until(now)
    }

    /// The pause that is on, if any.
    pub fn pause(&self) -> Option<&Pause> {
        self.pause.as_ref()
    }

    /// The pause a `scan` stops at, if one is on.
    pub fn stops_scan(&self) -> Option<&Pause> {
        self.pause.as_ref().filter(|p| rule(p.kind()).stops_scan)
    }

    /// When the gate wants to be looked at again (a timed pause ends, a probe is due).
    pub fn wake_at(&self) -> Option<Instant> {
        self.until
    }

    /// Ends a timed pause whose time has come.
    pub fn reopen_if_due(&mut self, now: Instant) {
        let Some(p) = &self.pause else { return };
        if rule(p.kind()).ends == Ends::Timer && self.until.is_some_and(|t| now >= t) {
            tracing::info!("resuming network work");
            self.reopen();
        }
    }

    /// Whether a probe should be sent now; the caller sends it and reports with
    /// [`Gate::probe_done`].
    pub fn take_probe(&mut self, now: Instant) -> bool {
        let due = self
            .pause
            .as_ref()
            .is_some_and(|p| rule(p.kind()).ends == Ends::Probe)
            && !self.probe_in_flight
            && self.until.is_none_or(|t| now >= t);
        if due {
            self.probe_in_flight = true;
        }
        due
    }

    /// Takes in a probe's answer. When it ends an outage, returns when the outage began, so
    /// that the engine can retry at once the jobs that failed in it.
    pub fn probe_done(&mut self, res: Result<(), ApiError>, now: Instant) -> Option<Instant> {
        self.probe_in_flight = false;
        let outage = matches!(self.pause, Some(Pause::Outage(_)));
        match res {
            Ok(()) if outage => {
                let since = self.failing_since.unwrap_or(now);
                tracing::info!(
                    "the server answers again after {}s; resuming uploads",
                    now.saturating_duration_since(since).as_secs()
                );
                self.consecutive_failures = 0;
                self.failing_since = None;
                self.reopen();
                Some(since)
            }
            Ok(()) => {
                tracing::info!("the server accepts the credentials again");
                self.reopen();
                None
            }
            // The server is back, but it no longer takes the credentials: the outage turns
            // into the pause for that.
            Err(e) if outage && e.class() == crate::api::ErrorClass::Auth => {
                let p = Pause::Auth(format!("the server rejected the credentials: {e}"));
                let lead = p.message().to_owned();
                self.enter(p, &lead, now);
                None
            }
            Err(e) if outage => {
                self.probe_failures += 1;
                let wait = self.wait(Wait::OutageProbe);
                tracing::debug!(error = %e, wait_ms = wait.as_millis() as u64, "the server still does not answer");
                self.until = Some(now + wait);
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "credentials still rejected");
                self.until = Some(now + self.times.auth_probe_interval);
                None
            }
        }
    }

    /// What a finished task's result means for the gate.
    pub fn apply(&mut self, signal: Signal, now: Instant) {
        match signal {
            Signal::Ok => {
                self.consecutive_failures = 0;
                self.failing_since = None;
            }
            // Requests that were in flight when the outage began fail after it was opened:
            // they belong to it and change nothing (no new pause, no longer wait).
            Signal::Transient(msg) if matches!(self.pause, Some(Pause::Outage(_))) => {
                tracing::debug!("{msg} (during the outage)");
            }
            Signal::Transient(msg) => {
                self.consecutive_failures += 1;
                self.failing_since.get_or_insert(now);
                if self.consecutive_failures >= BREAKER_THRESHOLD && self.pause.is_none() {
                    let lead = format!(
                        "{} failures in a row, the last: {msg}",
                        self.consecutive_failures
                    );
                    self.enter(Pause::Outage(msg), &lead, now);
                }
            }
            Signal::Pause(p) => {
                if self.pause.as_ref() != Some(&p) {
                    let lead = p.message().to_owned();
                    self.enter(p, &lead, now);
                }
            }
        }
    }

    fn enter(&mut self, p: Pause, lead: &str, now: Instant) {
        let r = rule(p.kind());
        self.probe_failures = 0;
        let wait = self.wait(r.wait);
        let line = match r.wait {
            Wait::OutageProbe => format!("{lead}; {} {}", r.says, crate::human::duration(wait)),
            _ => format!("{lead}; {} {}s", r.says, wait.as_secs()),
        };
        if r.warn_only {
            tracing::warn!("{line}");
        } else {
            tracing::error!("{line}");
        }
        self.until = Some(now + wait);
        self.pause = Some(p);
    }

    fn wait(&self, w: Wait) -> Duration {
        match w {
            Wait::AuthProbe => self.times.auth_probe_interval,
            Wait::Capacity => self.times.capacity_pause,
            Wait::OutageProbe => self.times.outage_probe.delay(self.probe_failures + 1),
        }
    }

    fn reopen(&mut self) {
        self.pause = None;
        self.until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMES: PauseTimes = PauseTimes {
        auth_probe_interval: Duration::from_secs(60),
        capacity_pause: Duration::from_secs(600),
        outage_probe: Backoff::new(Duration::from_secs(1), Duration::from_secs(8)),
    };

    fn gate() -> Gate {
        Gate::new(TIMES)
    }

    fn down() -> ApiError {
        ApiError::Network {
            request: Box::new(crate::api::RequestInfo {
                method: "POST".into(),
                host: "127.0.0.1:1".into(),
                path: "/api/auth/validateToken".into(),
                correlation_id: "cid".into(),
                file: None,
                file_size: None,
            }),
            detail: "connection refused".into(),
        }
    }

    /// An outage from `BREAKER_THRESHOLD` failures at `t0`.
    fn in_outage(t0: Instant) -> Gate {
        let mut g = gate();
        for i in 0..BREAKER_THRESHOLD {
            g.apply(Signal::Transient(format!("refused {i}")), t0);
        }
        assert!(g.outage().is_some());
        g
    }

    /// Issue 13 §2: the failures of requests in flight when the server went away landed
    /// together and each made the pause longer ("0s / 2s / 25s / 225s").
    #[test]
    fn failures_during_an_outage_neither_escalate_nor_extend_it() {
        let t0 = Instant::now();
        let mut g = in_outage(t0);
        let first = g.wake_at().expect("a probe is scheduled");
        for i in 0..100 {
            g.apply(Signal::Transient(format!("in flight {i}")), t0);
        }
        assert_eq!(g.wake_at(), Some(first), "late failures change nothing");
        assert_eq!(g.outage().map(|o| o.since), Some(t0));
        // Time alone does not end it: only an answer does.
        g.reopen_if_due(t0 + Duration::from_secs(3600));
        assert!(!g.is_open());
    }

    #[test]
    fn outage_probes_back_off_to_their_cap_one_at_a_time() {
        let t0 = Instant::now();
        let mut g = in_outage(t0);
        let mut now = g.wake_at().expect("scheduled");
        assert!(
            !g.take_probe(now - Duration::from_millis(1)),
            "not before its time"
        );
        for step in 1..20u32 {
            assert!(g.take_probe(now), "probe {step} is due");
            assert!(!g.take_probe(now), "one probe at a time");
            assert_eq!(g.probe_done(Err(down()), now), None);
            let wait = g.wake_at().expect("next probe") - now;
            let base = TIMES.outage_probe.base(step + 1);
            assert!(wait >= base / 2 && wait <= base, "step {step}: {wait:?}");
            assert!(wait <= TIMES.outage_probe.max);
            now += wait;
        }
        assert!(!g.is_open());
        // The server answers: the gate opens and says since when it was down.
        assert!(g.take_probe(now));
        assert_eq!(g.probe_done(Ok(()), now), Some(t0));
        assert!(g.is_open());
        assert_eq!(g.outage(), None);
        // The next outage starts from the first step again.
        let mut g2 = in_outage(now);
        let wait = g2.wake_at().expect("scheduled") - now;
        assert!(wait <= TIMES.outage_probe.initial);
        assert!(g2.take_probe(now + wait));
    }

    #[test]
    fn the_server_seen_answering_elsewhere_makes_the_probe_due_at_once() {
        let t0 = Instant::now();
        let mut g = in_outage(t0);
        let later = t0 + Duration::from_millis(100);
        assert!(g.take_probe(g.wake_at().expect("scheduled")));
        g.probe_done(Err(down()), later);
        assert!(!g.take_probe(later), "waits its backoff");
        g.server_answered(later);
        assert!(g.take_probe(later), "due now");
        // Outside an outage it means nothing.
        let mut open = gate();
        open.server_answered(t0);
        assert!(open.is_open() && !open.take_probe(t0));
        let mut full = gate();
        full.apply(Signal::Pause(Pause::Capacity("full".into())), t0);
        full.server_answered(t0);
        assert!(!full.take_probe(t0));
    }

    #[test]
    fn an_outage_whose_probe_is_refused_the_credentials_becomes_an_auth_pause() {
        let t0 = Instant::now();
        let mut g = in_outage(t0);
        let at = g.wake_at().expect("scheduled");
        assert!(g.take_probe(at));
        let refused = ApiError::Http {
            request: Box::new(crate::api::RequestInfo {
                method: "POST".into(),
                host: "h".into(),
                path: "/api/auth/validateToken".into(),
                correlation_id: "c".into(),
                file: None,
                file_size: None,
            }),
            status: 401,
            message: "Invalid API key".into(),
            retry_after: None,
            location: None,
        };
        assert_eq!(g.probe_done(Err(refused), at), None);
        assert!(matches!(g.stops_scan(), Some(Pause::Auth(_))));
    }

    #[test]
    fn every_kind_of_pause_has_its_own_row() {
        for kind in [Kind::Auth, Kind::Capacity, Kind::Blocked, Kind::Outage] {
            assert_eq!(rule(kind).kind, kind);
        }
    }

    #[test]
    fn an_auth_pause_ends_only_with_a_successful_probe() {
        let mut g = gate();
        let t0 = Instant::now();
        g.apply(Signal::Pause(Pause::Auth("401".into())), t0);
        assert_eq!(g.stops_scan(), Some(&Pause::Auth("401".into())));
        assert!(!g.take_probe(t0), "the first probe waits one interval");
        let later = t0 + TIMES.auth_probe_interval;
        g.reopen_if_due(later + Duration::from_secs(3600));
        assert!(!g.is_open(), "time alone does not end it");
        assert!(g.take_probe(later));
        assert!(!g.take_probe(later), "one probe at a time");
        g.probe_done(
            Err(ApiError::Config {
                message: "still 401".into(),
            }),
            later,
        );
        assert_eq!(g.wake_at(), Some(later + TIMES.auth_probe_interval));
        assert!(g.take_probe(later + TIMES.auth_probe_interval));
        g.probe_done(Ok(()), later);
        assert!(g.is_open());
    }

    #[test]
    fn timed_pauses_end_at_their_time_and_an_outage_does_not_stop_a_scan() {
        let mut g = gate();
        let t0 = Instant::now();
        g.apply(Signal::Pause(Pause::Capacity("full".into())), t0);
        assert!(!g.take_probe(t0), "capacity is not probed");
        g.reopen_if_due(t0 + TIMES.capacity_pause - Duration::from_millis(1));
        assert!(!g.is_open());
        g.reopen_if_due(t0 + TIMES.capacity_pause);
        assert!(g.is_open());

        for i in 1..BREAKER_THRESHOLD {
            g.apply(Signal::Transient(format!("e{i}")), t0);
            assert!(g.is_open(), "{i} failures");
        }
        g.apply(Signal::Transient("down".into()), t0);
        assert_eq!(g.pause, Some(Pause::Outage("down".into())));
        assert_eq!(g.stops_scan(), None);
        // The first probe of an outage waits the probe backoff's first step (1s, the upper
        // half random).
        let until = g.wake_at().expect("timed");
        assert!(until >= t0 + Duration::from_millis(500) && until <= t0 + Duration::from_secs(1));
        // A success resets the count, not the pause.
        g.apply(Signal::Ok, t0);
        assert!(!g.is_open());
        assert_eq!(g.consecutive_failures, 0);
    }
}
