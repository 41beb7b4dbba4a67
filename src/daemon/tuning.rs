//! The tunables of `scan` and `run` that are not in the config file ([`Tuning`]): waits and
//! periods that tests shorten.

use std::time::Duration;

use crate::backoff::Backoff;
use crate::pipeline;

/// Tunables that are not in the config file (tests shorten them).
#[derive(Clone, Debug)]
pub struct Tuning {
    /// After the state database could not be written (disk full), how long to wait before
    /// trying again.
    pub storage_retry: Duration,
    pub auth_probe_interval: Duration,
    pub capacity_pause: Duration,
    /// Waits between connection attempts of the daemon when the server is unreachable.
    pub connect_retry_max: Duration,
    /// Waits between the probes of an outage (first step, cap).
    pub outage_probe: Backoff,
    /// How often the alerts look for incidents (docs/STATUS.md#alerts).
    pub alert_check: Duration,
    /// How often a progress line is logged while files wait (docs/ARCHITECTURE.md#progress).
    pub progress_every: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            storage_retry: Duration::from_secs(30),
            auth_probe_interval: Duration::from_secs(60),
            capacity_pause: Duration::from_secs(600),
            connect_retry_max: Duration::from_secs(300),
            outage_probe: pipeline::OUTAGE_PROBE,
            alert_check: Duration::from_secs(30),
            progress_every: Duration::from_secs(30),
        }
    }
}
