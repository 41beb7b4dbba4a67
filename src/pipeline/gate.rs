//! The gate in front of all network work: the global pauses (credentials rejected, server
//! full, a problem only the user can fix, an outage) and the circuit breaker that opens one
//! after too many transient failures in a row.
//!
//! Owns: which pause is on, until when, and how each kind ends — one row per kind in
//! [`RULES`]. Must not: touch the database or the network itself; the engine runs the probe
//! the gate asks for and tells it the answer. Each engine owns its gate (a value, not a
//! global), so that a second account can have its own pauses.

use std::time::{Duration, Instant};

use crate::api::ApiError;
use crate::backoff::Backoff;

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
    /// When a probe (`validateToken`) succeeds; one is sent every wait.
    Probe,
    /// When the wait is over (work is tried again; it may pause again).
    Timer,
}

/// Which wait a pause uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    AuthProbe,
    Capacity,
    /// The job backoff, one step further for every failure past the breaker's threshold.
    Backoff,
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
    // A scan waits an outage out: the retries it needs are already scheduled.
    Rule {
        kind: Kind::Outage,
        ends: Ends::Timer,
        wait: Wait::Backoff,
        stops_scan: false,
        warn_only: true,
        says: "pausing uploads for",
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
    backoff: Backoff,
    pause: Option<Pause>,
    until: Option<Instant>,
    consecutive_failures: u32,
    probe_in_flight: bool,
}

impl Gate {
    /// A gate whose outages back off like job retries (`backoff`).
    pub fn new(times: PauseTimes, backoff: Backoff) -> Gate {
        Gate {
            times,
            backoff,
            pause: None,
            until: None,
            consecutive_failures: 0,
            probe_in_flight: false,
        }
    }

    pub fn is_open(&self) -> bool {
        self.pause.is_none()
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

    pub fn probe_done(&mut self, res: Result<(), ApiError>, now: Instant) {
        self.probe_in_flight = false;
        match res {
            Ok(()) => {
                tracing::info!("the server accepts the credentials again");
                self.reopen();
            }
            Err(e) => {
                tracing::debug!(error = %e, "credentials still rejected");
                self.until = Some(now + self.times.auth_probe_interval);
            }
        }
    }

    /// What a finished task's result means for the gate.
    pub fn apply(&mut self, signal: Signal, now: Instant) {
        match signal {
            Signal::Ok => self.consecutive_failures = 0,
            Signal::Transient(msg) => {
                self.consecutive_failures += 1;
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
        let wait = self.wait(r.wait);
        let line = format!("{lead}; {} {}s", r.says, wait.as_secs());
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
            Wait::Backoff => {
                let past = self.consecutive_failures.saturating_sub(BREAKER_THRESHOLD);
                self.backoff.delay(past + 1)
            }
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
    };

    fn gate() -> Gate {
        Gate::new(
            TIMES,
            Backoff::new(Duration::from_secs(1), Duration::from_secs(8)),
        )
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
        // The first outage waits the backoff's first step (1s, the upper half random).
        let until = g.wake_at().expect("timed");
        assert!(until >= t0 + Duration::from_millis(500) && until <= t0 + Duration::from_secs(1));
        // A success resets the count, not the pause.
        g.apply(Signal::Ok, t0);
        assert!(!g.is_open());
        assert_eq!(g.consecutive_failures, 0);
    }
}
