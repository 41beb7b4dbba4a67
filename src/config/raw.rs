//! The raw TOML shapes: exactly what the config file may hold, with `deny_unknown_fields`,
//! and the defaults, written here and nowhere else.
//!
//! Owns: the `Raw*` structs, their `Default` impls, and the value types that parse
//! themselves (durations, inline secrets, bounded integers) so that toml reports a bad value
//! with its position. Must not: validate across keys, look at the file system or the
//! environment (that is `resolve`), or hold a secret anywhere its `Debug` could show it.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::{
    AfterUpload, AlbumMode, AlertKind, LogFormat, StackPrimary, WatchMode, MAX_CONCURRENCY,
};

/// Parses a duration as written in the config: integer seconds (`"90"`) or a whole number
/// with one unit: `"500ms"`, `"10s"`, `"5m"`, `"1h"`, `"1d"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let millis_per_unit: u64 = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => 0,
    };
    let bad = || {
        format!(
            "invalid duration {s:?}: write integer seconds or a whole number with a unit, \
             e.g. \"500ms\", \"10s\", \"5m\", \"1h\" or \"1d\""
        )
    };
    if number.is_empty() || millis_per_unit == 0 {
        return Err(bad());
    }
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(millis_per_unit))
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {s:?} is too large"))
}

// ---------------------------------------------------------------------------------------------
// Raw shapes: exactly what the TOML may hold. Unknown keys are errors; missing keys take the
// defaults below.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) server: RawServer,
    pub(super) state: RawState,
    pub(super) roots: Vec<RawRoot>,
    pub(super) upload: RawUpload,
    pub(super) hash: RawHash,
    pub(super) scan: RawScan,
    pub(super) watch: RawWatch,
    pub(super) mirror: RawMirror,
    pub(super) log: RawLog,
    pub(super) metrics: RawMetrics,
    pub(super) alerts: RawAlerts,
    /// `[[accounts]]`: more users of the server (docs/ARCHITECTURE.md#accounts).
    pub(super) accounts: Vec<RawAccount>,
    /// `[[pull]]`: local copies of the server's originals (docs/ARCHITECTURE.md#pull).
    pub(super) pull: Vec<RawPull>,
}

/// `[[accounts]]`: another user, with the credential keys of `[server]`, and its own URL,
/// TLS trust and timeouts; each of those left out is `[server]`'s (so no default here).
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawAccount {
    pub(super) name: Option<String>,
    pub(super) url: Option<String>,
    pub(super) api_key: Option<RawSecret>,
    pub(super) api_key_file: Option<String>,
    pub(super) email: Option<String>,
    pub(super) password: Option<RawSecret>,
    pub(super) password_file: Option<String>,
    pub(super) ca_file: Option<String>,
    pub(super) allow_insecure_http: Option<bool>,
    pub(super) connect_timeout: Option<RawDuration>,
    pub(super) stall_timeout: Option<RawDuration>,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) url: Option<String>,
    pub(super) api_key: Option<RawSecret>,
    pub(super) api_key_file: Option<String>,
    pub(super) email: Option<String>,
    pub(super) password: Option<RawSecret>,
    pub(super) password_file: Option<String>,
    pub(super) ca_file: Option<String>,
    pub(super) allow_insecure_http: bool,
    pub(super) connect_timeout: RawDuration,
    pub(super) stall_timeout: RawDuration,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawState {
    /// `None` = [`super::default_state_dir`], which depends on the environment, so it is
    /// resolved during validation rather than here.
    pub(super) dir: Option<String>,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawRoot {
    pub(super) path: Option<String>,
    pub(super) recursive: bool,
    pub(super) include: Vec<String>,
    pub(super) exclude: Vec<String>,
    pub(super) hidden: bool,
    pub(super) album: AlbumMode,
    pub(super) album_separator: String,
    pub(super) album_name: Option<String>,
    pub(super) stacks: bool,
    pub(super) stack_primary: StackPrimary,
    pub(super) skip_junk: bool,
    pub(super) junk_extra: Vec<String>,
    pub(super) dates_from_names: bool,
    pub(super) timezone: Option<String>,
    /// The `[[accounts]]` name its files belong to; `None` = `[server]`'s.
    pub(super) account: Option<String>,
    /// docs/ARCHITECTURE.md#after-upload
    pub(super) after_upload: AfterUpload,
    pub(super) archive_dir: Option<String>,
    pub(super) after_upload_linked: bool,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawUpload {
    #[serde(deserialize_with = "concurrency")]
    pub(super) concurrency: usize,
    pub(super) device_id: Option<String>,
    pub(super) retry_initial: RawDuration,
    pub(super) retry_max: RawDuration,
    #[serde(deserialize_with = "positive_u32")]
    pub(super) scan_max_attempts: u32,
    /// docs/ARCHITECTURE.md#bandwidth-cap
    pub(super) max_rate: Option<RawRate>,
    /// docs/ARCHITECTURE.md#upload-windows
    pub(super) windows: Vec<RawWindow>,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawHash {
    #[serde(deserialize_with = "concurrency")]
    pub(super) concurrency: usize,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawScan {
    pub(super) interval: RawDuration,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawWatch {
    pub(super) mode: WatchMode,
    pub(super) settle: RawDuration,
    pub(super) poll_interval: RawDuration,
    pub(super) poll_settle: RawDuration,
    pub(super) incomplete_limit: RawDuration,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawMirror {
    pub(super) reupload_deleted: bool,
    pub(super) pull_interval: RawDuration,
    pub(super) full_reconcile_interval: RawDuration,
    pub(super) events: bool,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) level: String,
    pub(super) format: LogFormat,
}

/// `[metrics]`: the daemon's HTTP endpoint (docs/STATUS.md#http-endpoint).
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawMetrics {
    /// `None` = off.
    pub(super) listen: Option<String>,
    pub(super) allow_remote: bool,
    pub(super) token_file: Option<String>,
}

/// `[alerts]`: notifications of incidents (docs/STATUS.md#alerts).
#[derive(Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawAlerts {
    /// `None` = off.
    pub(super) url: Option<String>,
    pub(super) kind: AlertKind,
    pub(super) token_file: Option<String>,
    pub(super) outage_after: RawDuration,
    pub(super) stalled_after: RawDuration,
}

/// One `[[pull]]` table: a folder that keeps the original of every asset of an account.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawPull {
    pub(super) path: Option<String>,
    pub(super) account: Option<String>,
    pub(super) layout: String,
    pub(super) on_server_delete: super::OnServerDelete,
    #[serde(deserialize_with = "positive_u32")]
    pub(super) deleted_keep_days: u32,
    pub(super) max_rate: Option<RawRate>,
}

// ---------------------------------------------------------------------------------------------
// Defaults: the only place they are written. config.example.toml repeats them for readers, and
// a test keeps the two in step.
// ---------------------------------------------------------------------------------------------

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            url: None,
            api_key: None,
            api_key_file: None,
            email: None,
            password: None,
            password_file: None,
            ca_file: None,
            allow_insecure_http: false,
            connect_timeout: RawDuration::secs(10),
            stall_timeout: RawDuration::secs(120),
        }
    }
}

impl Default for RawRoot {
    fn default() -> Self {
        RawRoot {
            path: None,
            recursive: true,
            include: Vec::new(),
            exclude: Vec::new(),
            hidden: false,
            album: AlbumMode::None,
            album_separator: " / ".into(),
            album_name: None,
            stacks: true,
            stack_primary: StackPrimary::Jpeg,
            skip_junk: true,
            junk_extra: Vec::new(),
            dates_from_names: true,
            timezone: None,
            account: None,
            after_upload: AfterUpload::Keep,
            archive_dir: None,
            after_upload_linked: false,
        }
    }
}

impl Default for RawUpload {
    fn default() -> Self {
        RawUpload {
            concurrency: 4,
            device_id: None,
            retry_initial: RawDuration::secs(1),
            retry_max: RawDuration::secs(10 * 60),
            scan_max_attempts: 5,
            max_rate: None,
            windows: Vec::new(),
        }
    }
}

impl Default for RawHash {
    fn default() -> Self {
        RawHash { concurrency: 2 }
    }
}

impl Default for RawScan {
    fn default() -> Self {
        RawScan {
            interval: RawDuration::secs(60 * 60),
        }
    }
}

impl Default for RawWatch {
    fn default() -> Self {
        RawWatch {
            mode: WatchMode::Auto,
            settle: RawDuration::secs(3),
            poll_interval: RawDuration::secs(60),
            poll_settle: RawDuration::secs(30),
            incomplete_limit: RawDuration::secs(60 * 60),
        }
    }
}

impl Default for RawMirror {
    fn default() -> Self {
        RawMirror {
            reupload_deleted: false,
            pull_interval: RawDuration::secs(5 * 60),
            full_reconcile_interval: RawDuration::secs(24 * 60 * 60),
            events: true,
        }
    }
}

impl Default for RawAlerts {
    fn default() -> Self {
        RawAlerts {
            url: None,
            kind: AlertKind::Webhook,
            token_file: None,
            outage_after: RawDuration::secs(15 * 60),
            stalled_after: RawDuration::secs(6 * 60 * 60),
        }
    }
}

impl Default for RawPull {
    fn default() -> Self {
        RawPull {
            path: None,
            account: None,
            layout: "{year}/{month}/{filename}".into(),
            on_server_delete: super::OnServerDelete::Keep,
            deleted_keep_days: 30,
            max_rate: None,
        }
    }
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Value types with their own parsing, so that a bad value is reported by toml with its
// position (or, for an environment value, with its variable).
// ---------------------------------------------------------------------------------------------

/// A duration written as integer seconds or a string like `"5m"` ([`parse_duration`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RawDuration(pub(super) Duration);

impl RawDuration {
    const fn secs(s: u64) -> RawDuration {
        RawDuration(Duration::from_secs(s))
    }
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a duration: integer seconds or a string like \"500ms\", \"10s\", \"5m\", \
                     \"1h\" or \"1d\"",
                )
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawDuration, E> {
                u64::try_from(v)
                    .map(RawDuration::secs)
                    .map_err(|_| E::custom(format!("duration must not be negative, got {v}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawDuration, E> {
                Ok(RawDuration::secs(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                parse_duration(v).map(RawDuration).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// An inline secret. Unlike `String`, a value of the wrong type is not echoed in the error
/// (`api_key = 12345` must not print the digits), and `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct RawSecret(pub(super) String);

impl fmt::Debug for RawSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawSecret(***)")
    }
}

impl<'de> Deserialize<'de> for RawSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(d)? {
            toml::Value::String(s) => Ok(RawSecret(s)),
            other => Err(de::Error::custom(format!(
                "must be a string (in quotes), not {} (value not shown: it is a secret)",
                article(other.type_str())
            ))),
        }
    }
}

fn article(type_name: &str) -> String {
    match type_name.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {type_name}"),
        _ => format!("a {type_name}"),
    }
}

fn concurrency<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = i64::deserialize(d)?;
    match usize::try_from(n) {
        Ok(n) if (1..=MAX_CONCURRENCY).contains(&n) => Ok(n),
        _ => Err(de::Error::custom(format!(
            "must be between 1 and {MAX_CONCURRENCY}, got {n}"
        ))),
    }
}

fn positive_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = i64::deserialize(d)?;
    match u32::try_from(n) {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(de::Error::custom(format!(
            "must be a whole number of at least 1, got {n}"
        ))),
    }
}

/// A rate in bytes per second: an integer, or a string like `"2MB/s"`, `"500 KiB/s"`
/// ([`parse_rate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RawRate(pub(super) u64);

/// Bytes per second from `"2MB/s"`, `"1.5 MiB/s"`, `"800kB/s"` or `"100000"` (decimal units
/// are powers of 1000, binary ones of 1024; the `/s` may be left out). Zero is refused: a cap
/// of nothing would stop every upload.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "invalid rate {s:?}: expected bytes per second like \"2MB/s\", \"500KiB/s\" or \
             \"1000000\""
        )
    };
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t).trim_end();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let rate = num * mult;
    if !rate.is_finite() || rate < 1.0 || rate > u64::MAX as f64 {
        return Err(format!(
            "invalid rate {s:?}: must be at least 1 byte per second"
        ));
    }
    Ok(rate as u64)
}

impl<'de> Deserialize<'de> for RawRate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = RawRate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a rate: integer bytes per second or a string like \"2MB/s\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawRate, E> {
                match u64::try_from(v) {
                    Ok(n) if n > 0 => Ok(RawRate(n)),
                    _ => Err(E::custom(format!("rate must be positive, got {v}"))),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawRate, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawRate, E> {
                parse_rate(v).map(RawRate).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// An upload window, `"HH:MM-HH:MM"` ([`crate::windows::parse_window`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RawWindow(pub(super) crate::windows::Window);

impl<'de> Deserialize<'de> for RawWindow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        crate::windows::parse_window(&s)
            .map(RawWindow)
            .map_err(de::Error::custom)
    }
}
