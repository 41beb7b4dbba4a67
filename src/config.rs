//! Configuration: defaults → TOML file → `IMMISH_SYNC__*` environment, validated once into
//! a resolved [`Config`] that the rest of the daemon reads and never re-checks.
//!
//! Owns: the raw TOML shapes (`deny_unknown_fields`), the defaults (in one place), the
//! secret sources, and errors that name the file, line and key. Must not: touch the network
//! or the state directory. It does read the small secret files (`api_key_file`,
//! `password_file`, the systemd credential) and `stat`s the config file and `ca_file`.
//!
//! How a value is found, in order of strength:
//! 1. the defaults in [`RawConfig`]'s `Default` impls (the only place defaults live);
//! 2. the TOML file;
//! 3. `IMMISH_SYNC__SECTION__KEY=value` environment variables (see [`ENV_PREFIX`]).
//!
//! The API key has its own order (RELIABILITY.md, Security): a systemd credential named
//! [`API_KEY_CREDENTIAL`], then `api_key_file`, then `IMMISH_SYNC__SERVER__API_KEY`, then
//! `api_key` in the file.
//!
//! The file is deserialised twice on purpose: once straight from its text, so that a typo or
//! a wrong type is reported with toml's line and column; then, only if environment overrides
//! exist, from the merged table, one variable at a time, so that an error there names the
//! variable. Both are microseconds for a file this size.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use toml::de::{DeTable, DeValue};

/// Environment variables starting with this (case-insensitive) override file values:
/// `IMMISH_SYNC__UPLOAD__CONCURRENCY=8`, `IMMISH_SYNC__SERVER__URL=https://…`, and for the
/// list of roots `IMMISH_SYNC__ROOTS__0__PATH=/photos`.
pub const ENV_PREFIX: &str = "IMMISH_SYNC__";

/// The environment variable naming the config file when `--config` is not given.
pub const CONFIG_PATH_VAR: &str = "IMMISH_SYNC_CONFIG";

/// The name of the systemd credential (`LoadCredential=immish-sync-api-key:…`) holding the
/// API key; it is read from `$CREDENTIALS_DIRECTORY`.
pub const API_KEY_CREDENTIAL: &str = "immish-sync-api-key";

/// Upper bound of `upload.concurrency` and `hash.concurrency`. More parallel streams do not
/// make one home server faster, and each costs memory and file descriptors.
pub const MAX_CONCURRENCY: usize = 64;

/// A secret (API key, password, session token). Its `Debug`/`Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The value itself, for the one place that must send it (an HTTP header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How the daemon proves who it is to the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// Sent as `x-api-key` (never as `Authorization: Bearer`, which Immich reads as a session).
    ApiKey(Secret),
    /// `POST /auth/login`, then the session token as `Authorization: Bearer`.
    Password { email: String, password: Secret },
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from, if any (for messages).
    pub source: Option<PathBuf>,
    pub server: ServerConfig,
    pub state: StateConfig,
    pub roots: Vec<RootConfig>,
    pub upload: UploadConfig,
    pub hash: HashConfig,
    pub scan: ScanConfig,
    pub watch: WatchConfig,
    pub mirror: MirrorConfig,
    pub log: LogConfig,
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// As the user wrote it; normalised and discovered at connect time. Checked here only
    /// for shape: scheme `http`/`https` or none, a host, an optional port, no user name or
    /// password, no query or fragment.
    pub url: String,
    pub credentials: Credentials,
    /// Extra PEM CA certificates to trust (a home CA). Checked to exist.
    pub ca_file: Option<PathBuf>,
    /// Allow plain `http://` to hosts that are not loopback, private or `.local`.
    pub allow_insecure_http: bool,
    pub connect_timeout: Duration,
    /// A request that moves no bytes for this long is abandoned (there is no whole-request
    /// timeout: a large video may take hours).
    pub stall_timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct StateConfig {
    /// Absolute; not created here (the daemon creates and locks it).
    pub dir: PathBuf,
}

#[derive(Clone, Debug)]
pub struct RootConfig {
    /// Absolute. Not required to exist: a missing root means "unmounted", which pauses it.
    pub path: PathBuf,
    pub recursive: bool,
    /// Globs relative to the root; empty = everything. Each is known to compile with
    /// `globset::Glob::new`.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Include hidden (dot) files and folders.
    pub hidden: bool,
}

#[derive(Clone, Debug)]
pub struct UploadConfig {
    /// 1..=[`MAX_CONCURRENCY`].
    pub concurrency: usize,
    /// Overrides the generated per-install device id.
    pub device_id: Option<String>,
    /// First retry delay after a transient error; it doubles (with jitter) up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// `scan` gives up waiting on a file after this many attempts (the daemon keeps trying).
    pub scan_max_attempts: u32,
}

#[derive(Clone, Debug)]
pub struct HashConfig {
    /// 1..=[`MAX_CONCURRENCY`].
    pub concurrency: usize,
}

#[derive(Clone, Debug)]
pub struct ScanConfig {
    /// Full rescan period of the daemon (a safety net under the watcher).
    pub interval: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchMode {
    /// inotify/FSEvents where it works, polling where it cannot (network shares, FUSE).
    Auto,
    Notify,
    Poll,
    Off,
}

#[derive(Clone, Debug)]
pub struct WatchConfig {
    pub mode: WatchMode,
    /// A file is taken only after its size and mtime stayed the same this long. Scans
    /// leave a file modified less than this long ago for later.
    pub settle: Duration,
    pub poll_interval: Duration,
}

#[derive(Clone, Debug)]
pub struct MirrorConfig {
    /// Upload again files whose asset the user trashed or deleted on the server.
    pub reupload_deleted: bool,
    pub pull_interval: Duration,
    pub full_reconcile_interval: Duration,
    /// Listen to the server's socket.io events.
    pub events: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug)]
pub struct LogConfig {
    /// A tracing-subscriber EnvFilter directive, e.g. `info` or `immish_sync=debug`.
    pub level: String,
    pub format: LogFormat,
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// A 1-based line and column (in characters) in the config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// Where an offending value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The config file, at the key's position when it could be found.
    File {
        path: PathBuf,
        position: Option<Position>,
    },
    /// An environment variable (`IMMISH_SYNC__…`, or `CREDENTIALS_DIRECTORY`).
    Env { var: String },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File {
                path,
                position: Some(p),
            } => write!(f, "{}:{}:{}", path.display(), p.line, p.column),
            Origin::File {
                path,
                position: None,
            } => write!(f, "{}", path.display()),
            Origin::Env { var } => write!(f, "environment variable {var}"),
        }
    }
}

/// Why the configuration was refused. Every message names where (file:line:column or the
/// environment variable), which key, and the fix where there is an obvious one; it never
/// contains a secret. The `Display` text is complete on its own (no `source()` chain to
/// print), so `{}` and `{:#}` print the same thing. Exit code 2 is the caller's job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file itself could not be read.
    #[error("{}: cannot read config file: {error}{}", .path.display(), read_hint(.error))]
    Read { path: PathBuf, error: io::Error },

    /// The file is not valid TOML.
    #[error("{origin}: invalid TOML: {message}")]
    Syntax { origin: Origin, message: String },

    /// A key is unknown, has the wrong type or an invalid value, is missing, or conflicts
    /// with another.
    #[error("{origin}: {key}: {message}")]
    Invalid {
        origin: Origin,
        /// Dotted path as the user would write it, e.g. `upload.concurrency`, `roots[1].path`.
        key: String,
        message: String,
    },

    /// A file holding a secret (`api_key_file`, `password_file`, the systemd credential)
    /// could not be read.
    #[error("{origin}: {key}: cannot read {}: {error}", .path.display())]
    SecretFile {
        origin: Origin,
        key: String,
        path: PathBuf,
        error: io::Error,
    },

    /// The config file holds a secret inline but other users can read it.
    #[error(
        "{}: holds server.{key} inline but its mode is {mode:04o}, so other users can read \
         it; run `chmod 600 {}`, or better, move the secret into a file named by \
         server.{key}_file",
        .path.display(),
        .path.display()
    )]
    InsecurePermissions {
        path: PathBuf,
        key: &'static str,
        mode: u32,
    },
}

fn read_hint(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::NotFound => {
            "; create it from config.example.toml, or pass --config PATH \
             (or set IMMISH_SYNC_CONFIG)"
        }
        io::ErrorKind::PermissionDenied => {
            "; the daemon's user must be able to read it (keep secrets out of it with \
             api_key_file or a systemd credential, and make it readable)"
        }
        io::ErrorKind::InvalidData => "; the file must be UTF-8 text",
        _ => "",
    }
}

// ---------------------------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------------------------

/// Reads, parses and validates the config file at `path`, with the process environment's
/// `IMMISH_SYNC__*` overrides and secret sources applied.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_owned(),
        error,
    })?;
    load_from_str(&text, path, &process_env())
}

/// Parses and validates `text` as if read from `origin`, with `env` standing in for the
/// process environment. `origin` names the file in messages and in [`Config::source`], and
/// when `text` holds `api_key` or `password` inline, `origin` must exist and be private
/// (its mode is checked). Secret files named by the config are read from disk.
pub fn load_from_str(
    text: &str,
    origin: &Path,
    env: &[(String, String)],
) -> Result<Config, ConfigError> {
    let doc = DeTable::parse(text).map_err(|e| ConfigError::Syntax {
        origin: file_origin(origin, text, e.span()),
        message: syntax_message(text, &e),
    })?;
    let doc = doc.get_ref();
    let file = Located {
        path: origin,
        text,
        doc,
    };

    // The file on its own: errors carry toml's position.
    let from_file: RawConfig = toml::from_str(text).map_err(|e| file.deserialize_error(&e))?;
    check_inline_secrets(&file)?;

    let overrides = env_overrides(env)?;
    // Which keys came from which variable, to name the variable in validation errors; a
    // root that only the environment defines is claimed whole.
    let file_roots = from_file.roots.len();
    let mut env_keys = BTreeMap::new();
    for o in &overrides {
        env_keys.insert(o.key_name(), o.var.clone());
        if let Some(i) = o.index.filter(|&i| i >= file_roots) {
            env_keys
                .entry(format!("roots[{i}]"))
                .or_insert(o.var.clone());
        }
    }
    let raw = if overrides.is_empty() {
        from_file
    } else {
        apply_overrides(&file, from_file, &overrides)?
    };
    Resolver {
        file,
        env,
        env_keys,
    }
    .resolve(raw)
}

/// toml's message, with the key named when toml only says "duplicate key".
fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message();
    match e.span().and_then(|s| text.get(s)) {
        Some(key) if message == "duplicate key" && !key.is_empty() => format!(
            "duplicate key `{key}`; each key and each [section] may appear once (a list of \
             folders is written as several [[roots]] tables)"
        ),
        _ => message.to_owned(),
    }
}

/// Where the config is looked for without `--config`: `$IMMISH_SYNC_CONFIG`; for root
/// `/etc/immish-sync/config.toml`; else `$XDG_CONFIG_HOME/immish-sync/config.toml` or
/// `~/.config/immish-sync/config.toml`.
pub fn default_config_path() -> PathBuf {
    default_config_path_in(&process_env(), is_root())
}

/// Where the state (database, lock) lives when `[state] dir` is not set: `$STATE_DIRECTORY`
/// under systemd (`StateDirectory=`); for root `/var/lib/immish-sync`; else
/// `$XDG_STATE_HOME/immish-sync` or `~/.local/state/immish-sync`.
pub fn default_state_dir() -> PathBuf {
    default_state_dir_in(&process_env(), is_root())
}

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

/// The process environment as UTF-8 pairs. `std::env::vars()` panics on a non-UTF-8
/// variable; such variables cannot be ours, so they are skipped.
fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

fn env_get<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    // The last one wins, like a shell assignment after an inherited value.
    env.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

#[cfg(unix)]
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(not(unix))]
fn is_root() -> bool {
    false
}

/// An absolute directory from an XDG variable, which the spec says to ignore when relative.
fn xdg_dir(env: &[(String, String)], var: &str, fallback_under_home: &str) -> Option<PathBuf> {
    if let Some(dir) = env_get(env, var).map(PathBuf::from) {
        if dir.is_absolute() {
            return Some(dir);
        }
    }
    env_get(env, "HOME").map(|home| Path::new(home).join(fallback_under_home))
}

fn default_config_path_in(env: &[(String, String)], root: bool) -> PathBuf {
    const SYSTEM: &str = "/etc/immish-sync/config.toml";
    if let Some(path) = env_get(env, CONFIG_PATH_VAR) {
        return PathBuf::from(path);
    }
    if root {
        return PathBuf::from(SYSTEM);
    }
    match xdg_dir(env, "XDG_CONFIG_HOME", ".config") {
        Some(dir) => dir.join("immish-sync").join("config.toml"),
        // No home at all (a bare service account): the system location is the only sane one.
        None => PathBuf::from(SYSTEM),
    }
}

fn default_state_dir_in(env: &[(String, String)], root: bool) -> PathBuf {
    const SYSTEM: &str = "/var/lib/immish-sync";
    // systemd sets a colon-separated list when a unit has several StateDirectory= entries.
    if let Some(first) = env_get(env, "STATE_DIRECTORY").and_then(|v| v.split(':').next()) {
        if !first.is_empty() {
            return PathBuf::from(first);
        }
    }
    if root {
        return PathBuf::from(SYSTEM);
    }
    match xdg_dir(env, "XDG_STATE_HOME", ".local/state") {
        Some(dir) => dir.join("immish-sync"),
        None => PathBuf::from(SYSTEM),
    }
}

// ---------------------------------------------------------------------------------------------
// Raw shapes: exactly what the TOML may hold. Unknown keys are errors; missing keys take the
// defaults below.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    state: RawState,
    roots: Vec<RawRoot>,
    upload: RawUpload,
    hash: RawHash,
    scan: RawScan,
    watch: RawWatch,
    mirror: RawMirror,
    log: RawLog,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawServer {
    url: Option<String>,
    api_key: Option<RawSecret>,
    api_key_file: Option<String>,
    email: Option<String>,
    password: Option<RawSecret>,
    password_file: Option<String>,
    ca_file: Option<String>,
    allow_insecure_http: bool,
    connect_timeout: RawDuration,
    stall_timeout: RawDuration,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawState {
    /// `None` = [`default_state_dir`], which depends on the environment, so it is resolved
    /// in [`Resolver::resolve`] rather than here.
    dir: Option<String>,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawRoot {
    path: Option<String>,
    recursive: bool,
    include: Vec<String>,
    exclude: Vec<String>,
    hidden: bool,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawUpload {
    #[serde(deserialize_with = "concurrency")]
    concurrency: usize,
    device_id: Option<String>,
    retry_initial: RawDuration,
    retry_max: RawDuration,
    #[serde(deserialize_with = "positive_u32")]
    scan_max_attempts: u32,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawHash {
    #[serde(deserialize_with = "concurrency")]
    concurrency: usize,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawScan {
    interval: RawDuration,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawWatch {
    mode: WatchMode,
    settle: RawDuration,
    poll_interval: RawDuration,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawMirror {
    reupload_deleted: bool,
    pull_interval: RawDuration,
    full_reconcile_interval: RawDuration,
    events: bool,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLog {
    level: String,
    format: LogFormat,
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
struct RawDuration(Duration);

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
struct RawSecret(String);

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

// ---------------------------------------------------------------------------------------------
// Positions: from toml's spans to "file:line:col" and a dotted key.
// ---------------------------------------------------------------------------------------------

/// One step of a key path: a table key or an index into an array (of `[[roots]]`).
#[derive(Clone, Copy, Debug)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// `roots[1].path`, the way a user would name the key.
fn key_name(path: &[Seg<'_>]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn position_of(text: &str, offset: usize) -> Position {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Position {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    }
}

fn file_origin(path: &Path, text: &str, span: Option<Range<usize>>) -> Origin {
    Origin::File {
        path: path.to_owned(),
        position: span.map(|s| position_of(text, s.start)),
    }
}

fn span_contains(span: &Range<usize>, offset: usize) -> bool {
    span.contains(&offset) || (span.is_empty() && span.start == offset)
}

/// The config file: its path, its text and its parse tree (with spans).
struct Located<'a> {
    path: &'a Path,
    text: &'a str,
    doc: &'a DeTable<'a>,
}

impl Located<'_> {
    /// Turns an error from deserialising the file's text into one naming the key at the
    /// error's position.
    fn deserialize_error(&self, e: &toml::de::Error) -> ConfigError {
        let key = e
            .span()
            .and_then(|s| key_at(self.doc, s.start, ""))
            .unwrap_or_else(|| "(top level)".to_owned());
        ConfigError::Invalid {
            origin: file_origin(self.path, self.text, e.span()),
            message: explain(&key, e.message(), None),
            key,
        }
    }

    /// The span of the key at `path`, or of the deepest table on the way to it that exists
    /// (so a missing key points at its section's header).
    fn locate(&self, path: &[Seg<'_>]) -> Option<Range<usize>> {
        self.walk(path).0
    }

    /// Whether the file itself (not the environment) sets the key at `path`.
    fn has(&self, path: &[Seg<'_>]) -> bool {
        self.walk(path).1
    }

    /// The deepest span found along `path`, and whether all of `path` was found.
    fn walk(&self, path: &[Seg<'_>]) -> (Option<Range<usize>>, bool) {
        let mut table = self.doc;
        let mut found = None;
        let mut i = 0;
        while i < path.len() {
            let Seg::Key(name) = path[i] else {
                return (found, false);
            };
            let Some((key, mut value)) = table.iter().find(|(k, _)| k.get_ref() == name) else {
                return (found, false);
            };
            found = Some(key.span());
            if let Some(Seg::Index(n)) = path.get(i + 1) {
                let Some(item) = value.get_ref().as_array().and_then(|a| a.get(*n)) else {
                    return (found, false);
                };
                found = Some(item.span());
                value = item;
                i += 1;
            }
            i += 1;
            if i == path.len() {
                return (found, true);
            }
            match value.get_ref().as_table() {
                Some(t) => table = t,
                None => return (found, false),
            }
        }
        (found, path.is_empty())
    }
}

/// The dotted key whose name or value covers `offset`.
fn key_at(table: &DeTable<'_>, offset: usize, prefix: &str) -> Option<String> {
    for (key, value) in table.iter() {
        let name = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        if span_contains(&key.span(), offset) {
            return Some(name);
        }
        // A table's own span is only its header; its keys may be anywhere below, so look
        // inside before deciding.
        match value.get_ref() {
            DeValue::Table(t) => {
                if let Some(found) = key_at(t, offset, &name) {
                    return Some(found);
                }
            }
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let item_name = format!("{name}[{i}]");
                    if let DeValue::Table(t) = item.get_ref() {
                        if let Some(found) = key_at(t, offset, &item_name) {
                            return Some(found);
                        }
                    }
                    if span_contains(&item.span(), offset) {
                        return Some(item_name);
                    }
                }
            }
            _ => {}
        }
        if span_contains(&value.span(), offset) {
            return Some(name);
        }
    }
    None
}

const SECTIONS: [&str; 8] = [
    "server", "state", "upload", "hash", "scan", "watch", "mirror", "log",
];

/// Rewrites serde's wording for people who write TOML, and adds the likely fix.
/// `env_var` is set when the value came from the environment.
fn explain(key: &str, message: &str, env_var: Option<&str>) -> String {
    if message.starts_with("invalid type") {
        // `[[upload]]` reports as `upload[0]`.
        let section = key.split('[').next().unwrap_or(key);
        if SECTIONS.contains(&section) {
            return format!("must be a table, written [{section}] on a line of its own");
        }
        if key == "roots" {
            return "must be a list of tables, each written [[roots]] (double brackets)".to_owned();
        }
    }
    let mut out = message.to_owned();
    for (from, to) in [
        ("expected i64", "expected an integer"),
        ("expected u64", "expected an integer"),
        ("expected usize", "expected an integer"),
        ("expected u32", "expected an integer"),
        ("expected a sequence", "expected an array"),
        ("invalid type: sequence", "invalid type: array"),
        ("invalid type: map", "invalid type: table"),
    ] {
        out = out.replace(from, to);
    }
    if let Some(i) = out.find("expected struct ") {
        out.truncate(i);
        out.push_str("expected a table");
    }
    if let Some(better) = did_you_mean(message) {
        out.push_str(&format!("; did you mean `{better}`?"));
    }
    if env_var.is_some() && out.contains("expected an array") {
        out.push_str("; write the value in TOML syntax, e.g. [\"*.tmp\", \"*.part\"]");
    }
    out
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" (or "unknown variant"), the
/// expected name closest to the one written, if it is close enough to be a typo.
fn did_you_mean(message: &str) -> Option<&str> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let end = rest.find('`')?;
    let written = rest[..end].to_lowercase();
    let (distance, best) = rest[end + 1..]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|candidate| (edit_distance(&written, candidate), candidate))
        .min()?;
    (distance <= (written.chars().count() / 3).max(1)).then_some(best)
}

/// Levenshtein distance with adjacent transpositions counted as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j] = distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

// ---------------------------------------------------------------------------------------------
// The config file's own permissions
// ---------------------------------------------------------------------------------------------

/// Refuses a config file that holds `api_key` or `password` inline when users other than
/// its owner can read it.
fn check_inline_secrets(file: &Located<'_>) -> Result<(), ConfigError> {
    let inline = ["api_key", "password"]
        .into_iter()
        .find(|key| file.has(&[Seg::Key("server"), Seg::Key(key)]));
    let Some(key) = inline else { return Ok(()) };
    check_private(file.path, key)
}

#[cfg(unix)]
fn check_private(path: &Path, key: &'static str) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|error| ConfigError::SecretFile {
            origin: Origin::File {
                path: path.to_owned(),
                position: None,
            },
            key: format!("server.{key}"),
            path: path.to_owned(),
            error,
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(ConfigError::InsecurePermissions {
            path: path.to_owned(),
            key,
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _key: &'static str) -> Result<(), ConfigError> {
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Environment overrides
// ---------------------------------------------------------------------------------------------

/// One `IMMISH_SYNC__…` variable, understood.
#[derive(Debug)]
struct EnvOverride {
    var: String,
    /// Lower-cased section (`upload`, `roots`).
    section: String,
    /// For `roots`: which one.
    index: Option<usize>,
    /// Lower-cased key within the section.
    key: String,
    value: String,
}

impl EnvOverride {
    fn key_name(&self) -> String {
        match self.index {
            Some(i) => format!("{}[{i}].{}", self.section, self.key),
            None => format!("{}.{}", self.section, self.key),
        }
    }

    fn error(&self, message: String) -> ConfigError {
        ConfigError::Invalid {
            origin: Origin::Env {
                var: self.var.clone(),
            },
            key: self.key_name(),
            message,
        }
    }
}

/// The `IMMISH_SYNC__*` variables in `env`, in the order they are applied: by section, root
/// index and key, so that `ROOTS__0__…` comes before `ROOTS__1__…` whatever the
/// environment's order.
fn env_overrides(env: &[(String, String)]) -> Result<Vec<EnvOverride>, ConfigError> {
    let mut out = Vec::new();
    for (var, value) in env {
        let Some(rest) = var
            .get(..ENV_PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
            .map(|_| &var[ENV_PREFIX.len()..])
        else {
            continue;
        };
        let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        let malformed = |why: &str| ConfigError::Invalid {
            origin: Origin::Env { var: var.clone() },
            key: parts.join("."),
            message: format!(
                "{why}; name overrides IMMISH_SYNC__SECTION__KEY, e.g. \
                 IMMISH_SYNC__UPLOAD__CONCURRENCY=8, or IMMISH_SYNC__ROOTS__0__PATH=/photos \
                 for a root"
            ),
        };
        if parts.iter().any(String::is_empty) {
            return Err(malformed("empty name part"));
        }
        let (section, index, key) = match parts.as_slice() {
            [roots, index, key] if roots == "roots" => match index.parse::<usize>() {
                Ok(i) => (roots.clone(), Some(i), key.clone()),
                Err(_) => return Err(malformed("the root's index must be a number")),
            },
            [roots, _] if roots == "roots" => {
                return Err(malformed("roots is a list, so the variable needs an index"))
            }
            [section, key] => (section.clone(), None, key.clone()),
            _ => return Err(malformed("expected a section and a key")),
        };
        out.push(EnvOverride {
            var: var.clone(),
            section,
            index,
            key,
            value: value.clone(),
        });
    }
    out.sort_by(|a, b| {
        (&a.section, a.index, &a.key, &a.var).cmp(&(&b.section, b.index, &b.key, &b.var))
    });
    Ok(out)
}

/// A variable's value as TOML (`8`, `true`, `["*.tmp"]`, `"quoted"`), or else as the
/// string it is (`https://…`, `5m`).
fn env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .filter(|t| t.len() == 1)
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

/// Applies `overrides` onto the file's table one at a time, deserialising after each so that
/// an error names the variable that caused it. (The file alone has already deserialised into
/// `from_file`, so the first failure is the variable's fault.)
fn apply_overrides(
    file: &Located<'_>,
    from_file: RawConfig,
    overrides: &[EnvOverride],
) -> Result<RawConfig, ConfigError> {
    let mut table: toml::Table = file.text.parse().map_err(|e: toml::de::Error| {
        // Unreachable in practice: the same text parsed a moment ago.
        ConfigError::Syntax {
            origin: file_origin(file.path, file.text, e.span()),
            message: e.message().to_owned(),
        }
    })?;
    let mut raw = from_file;
    for o in overrides {
        let value = env_value(&o.value);
        let attempt = set_override(&table, o, value.clone())?;
        (table, raw) = match attempt.clone().try_into::<RawConfig>() {
            Ok(parsed) => (attempt, parsed),
            Err(first) => {
                // `IMMISH_SYNC__SERVER__API_KEY=12345` is a string to the user even though
                // it parses as an integer: try the value as text before giving up, and
                // report the first error if that fails too.
                let retry = match value {
                    toml::Value::String(_) => None,
                    _ => Some(set_override(
                        &table,
                        o,
                        toml::Value::String(o.value.clone()),
                    )?),
                };
                match retry.and_then(|t| Some((t.clone(), t.try_into::<RawConfig>().ok()?))) {
                    Some(ok) => ok,
                    None => {
                        let key = o.key_name();
                        return Err(o.error(explain(&key, first.message(), Some(&o.var))));
                    }
                }
            }
        };
    }
    Ok(raw)
}

/// A copy of `table` with the override's key set to `value`.
fn set_override(
    table: &toml::Table,
    o: &EnvOverride,
    value: toml::Value,
) -> Result<toml::Table, ConfigError> {
    let mut table = table.clone();
    let section = table
        .entry(o.section.clone())
        .or_insert_with(|| match o.index {
            Some(_) => toml::Value::Array(Vec::new()),
            None => toml::Value::Table(toml::Table::new()),
        });
    let target = match (o.index, section) {
        (None, toml::Value::Table(t)) => t,
        (Some(i), toml::Value::Array(roots)) => {
            if i > roots.len() {
                return Err(o.error(format!(
                    "there is no root {i}: the file and earlier variables define {} \
                     root(s), so use an index from 0 to {}",
                    roots.len(),
                    roots.len()
                )));
            }
            if i == roots.len() {
                roots.push(toml::Value::Table(toml::Table::new()));
            }
            match &mut roots[i] {
                toml::Value::Table(t) => t,
                _ => return Err(o.error("roots must be written [[roots]]".to_owned())),
            }
        }
        _ => {
            return Err(o.error(format!(
                "[{}] has a different shape in the file; check the variable's name",
                o.section
            )))
        }
    };
    target.insert(o.key.clone(), value);
    Ok(table)
}

// ---------------------------------------------------------------------------------------------
// Validation: raw → resolved
// ---------------------------------------------------------------------------------------------

use Seg::{Index as I, Key as K};

const SERVER: [Seg<'static>; 1] = [K("server")];
const URL: [Seg<'static>; 2] = [K("server"), K("url")];
const API_KEY: [Seg<'static>; 2] = [K("server"), K("api_key")];
const API_KEY_FILE: [Seg<'static>; 2] = [K("server"), K("api_key_file")];
const EMAIL: [Seg<'static>; 2] = [K("server"), K("email")];
const PASSWORD: [Seg<'static>; 2] = [K("server"), K("password")];
const PASSWORD_FILE: [Seg<'static>; 2] = [K("server"), K("password_file")];

/// Checks the raw values that serde cannot check alone (presence, paths, cross-key rules,
/// secret sources) and names the file position or variable of each offending key.
struct Resolver<'a> {
    file: Located<'a>,
    env: &'a [(String, String)],
    /// Dotted key → the `IMMISH_SYNC__…` variable that set it.
    env_keys: BTreeMap<String, String>,
}

impl Resolver<'_> {
    fn resolve(self, raw: RawConfig) -> Result<Config, ConfigError> {
        let server = self.server(&raw.server)?;
        let state = StateConfig {
            dir: match &raw.state.dir {
                Some(dir) => self.absolute(&[K("state"), K("dir")], dir)?,
                None => default_state_dir_in(self.env, is_root()),
            },
        };
        let roots = self.roots(raw.roots)?;

        let u = raw.upload;
        let device_id = match u.device_id {
            Some(id) if id.trim().is_empty() => {
                return Err(self.invalid(
                    &[K("upload"), K("device_id")],
                    "is empty; remove it to use the id generated for this install",
                ))
            }
            other => other,
        };
        let retry_initial = self.nonzero(&[K("upload"), K("retry_initial")], u.retry_initial)?;
        let retry_max = self.nonzero(&[K("upload"), K("retry_max")], u.retry_max)?;
        if retry_initial > retry_max {
            return Err(self.invalid(
                &[K("upload"), K("retry_initial")],
                format!(
                    "({retry_initial:?}) must not be longer than upload.retry_max ({retry_max:?})"
                ),
            ));
        }

        let log = LogConfig {
            level: self.log_level(raw.log.level)?,
            format: raw.log.format,
        };

        Ok(Config {
            source: Some(self.file.path.to_owned()),
            server,
            state,
            roots,
            upload: UploadConfig {
                concurrency: u.concurrency,
                device_id,
                retry_initial,
                retry_max,
                scan_max_attempts: u.scan_max_attempts,
            },
            hash: HashConfig {
                concurrency: raw.hash.concurrency,
            },
            scan: ScanConfig {
                interval: self.nonzero(&[K("scan"), K("interval")], raw.scan.interval)?,
            },
            watch: WatchConfig {
                mode: raw.watch.mode,
                // Zero is allowed (tests, trusted writers); it is the user's call.
                settle: raw.watch.settle.0,
                poll_interval: self
                    .nonzero(&[K("watch"), K("poll_interval")], raw.watch.poll_interval)?,
            },
            mirror: MirrorConfig {
                reupload_deleted: raw.mirror.reupload_deleted,
                pull_interval: self
                    .nonzero(&[K("mirror"), K("pull_interval")], raw.mirror.pull_interval)?,
                full_reconcile_interval: self.nonzero(
                    &[K("mirror"), K("full_reconcile_interval")],
                    raw.mirror.full_reconcile_interval,
                )?,
                events: raw.mirror.events,
            },
            log,
        })
    }

    fn server(&self, s: &RawServer) -> Result<ServerConfig, ConfigError> {
        let url = match s.url.as_deref().map(str::trim) {
            Some(url) if !url.is_empty() => url,
            _ => {
                return Err(self.invalid(
                    &URL,
                    "missing; set the server's base URL under [server], e.g. \
                     url = \"https://photos.example.com\" (or IMMISH_SYNC__SERVER__URL)",
                ))
            }
        };
        check_url(url).map_err(|m| self.invalid(&URL, m))?;
        let credentials = self.credentials(s)?;
        let ca_file = match &s.ca_file {
            None => None,
            Some(f) => {
                let path = [K("server"), K("ca_file")];
                let ca = self.absolute(&path, f)?;
                if !ca.is_file() {
                    return Err(self.invalid(
                        &path,
                        format!(
                            "{} does not exist or is not a file; point it at your CA's PEM \
                             certificate, or remove the key",
                            ca.display()
                        ),
                    ));
                }
                Some(ca)
            }
        };
        Ok(ServerConfig {
            url: url.to_owned(),
            credentials,
            ca_file,
            allow_insecure_http: s.allow_insecure_http,
            connect_timeout: self
                .nonzero(&[K("server"), K("connect_timeout")], s.connect_timeout)?,
            stall_timeout: self.nonzero(&[K("server"), K("stall_timeout")], s.stall_timeout)?,
        })
    }

    /// Exactly one way to log in; for an API key the first source present wins:
    /// systemd credential, `api_key_file`, `IMMISH_SYNC__SERVER__API_KEY`, `api_key`.
    fn credentials(&self, s: &RawServer) -> Result<Credentials, ConfigError> {
        let systemd = env_get(self.env, "CREDENTIALS_DIRECTORY")
            .map(|dir| Path::new(dir).join(API_KEY_CREDENTIAL))
            .filter(|p| p.exists());
        let key_given = s.api_key.is_some() || s.api_key_file.is_some();
        let login_key = [
            (&EMAIL, s.email.is_some()),
            (&PASSWORD, s.password.is_some()),
            (&PASSWORD_FILE, s.password_file.is_some()),
        ]
        .into_iter()
        .find_map(|(path, given)| given.then_some(path));

        if let Some(login_key) = login_key {
            if key_given {
                return Err(self.invalid(
                    login_key,
                    "an API key (api_key or api_key_file) is set too; set either an API key \
                     or a login (email + password_file), not both",
                ));
            }
            if systemd.is_some() {
                return Err(self.invalid(
                    login_key,
                    format!(
                        "a systemd credential {API_KEY_CREDENTIAL} (an API key) is loaded too; \
                         remove LoadCredential= from the unit, or remove the login keys"
                    ),
                ));
            }
            let email = match s.email.as_deref().map(str::trim) {
                Some(email) if !email.is_empty() => email.to_owned(),
                _ => {
                    return Err(self.invalid(
                        &EMAIL,
                        "missing; a password login needs email and password_file (or password)",
                    ))
                }
            };
            return Ok(Credentials::Password {
                email,
                password: self.password(s)?,
            });
        }

        // Two inline-or-file sources in the same file are a mistake; across layers, the order
        // above decides.
        if self.file.has(&API_KEY) && self.file.has(&API_KEY_FILE) && !self.set_by_env(&API_KEY) {
            return Err(self.invalid(
                &API_KEY,
                "set only one of api_key and api_key_file (api_key_file is better: it keeps \
                 the key out of this file)",
            ));
        }
        let key = if let Some(path) = systemd {
            let origin = Origin::Env {
                var: "CREDENTIALS_DIRECTORY".to_owned(),
            };
            let key = format!("systemd credential {API_KEY_CREDENTIAL}");
            let text = read_secret(origin.clone(), &key, &path)?;
            nonempty_secret(text.trim(), || ConfigError::Invalid {
                origin,
                key,
                message: format!("{} is empty", path.display()),
            })?
        } else if let Some(file) = &s.api_key_file {
            let path = self.absolute(&API_KEY_FILE, file)?;
            let text = read_secret(self.origin(&API_KEY_FILE), &key_name(&API_KEY_FILE), &path)?;
            nonempty_secret(text.trim(), || {
                self.invalid(
                    &API_KEY_FILE,
                    format!("{} is empty; put the API key in it", path.display()),
                )
            })?
        } else if let Some(inline) = &s.api_key {
            nonempty_secret(inline.0.trim(), || self.invalid(&API_KEY, "is empty"))?
        } else {
            return Err(self.invalid(
                &SERVER,
                format!(
                    "no credentials; under [server] set api_key_file = \
                     \"/etc/immish-sync/api-key\" (or api_key, or email + password_file), or \
                     set IMMISH_SYNC__SERVER__API_KEY, or load a systemd credential named \
                     {API_KEY_CREDENTIAL}"
                ),
            ));
        };
        Ok(Credentials::ApiKey(key))
    }

    fn password(&self, s: &RawServer) -> Result<Secret, ConfigError> {
        if self.file.has(&PASSWORD) && self.file.has(&PASSWORD_FILE) && !self.set_by_env(&PASSWORD)
        {
            return Err(self.invalid(
                &PASSWORD,
                "set only one of password and password_file (password_file is better: it \
                 keeps the password out of this file)",
            ));
        }
        if let Some(file) = &s.password_file {
            let path = self.absolute(&PASSWORD_FILE, file)?;
            let text = read_secret(
                self.origin(&PASSWORD_FILE),
                &key_name(&PASSWORD_FILE),
                &path,
            )?;
            // Only the line ending an editor adds is removed: a password may well start or
            // end with a space.
            let password = text
                .strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(&text);
            return nonempty_secret(password, || {
                self.invalid(&PASSWORD_FILE, format!("{} is empty", path.display()))
            });
        }
        match &s.password {
            Some(inline) => nonempty_secret(&inline.0, || self.invalid(&PASSWORD, "is empty")),
            None => Err(self.invalid(
                &PASSWORD_FILE,
                "missing; a password login needs password_file (or password)",
            )),
        }
    }

    fn roots(&self, raw: Vec<RawRoot>) -> Result<Vec<RootConfig>, ConfigError> {
        if raw.is_empty() {
            return Err(self.invalid(
                &[K("roots")],
                "no folders to back up; add at least one [[roots]] table with \
                 path = \"/srv/photos\"",
            ));
        }
        let mut roots: Vec<RootConfig> = Vec::with_capacity(raw.len());
        for (i, r) in raw.into_iter().enumerate() {
            let key = [K("roots"), I(i), K("path")];
            let path = match r.path.as_deref() {
                Some(p) if !p.trim().is_empty() => self.absolute(&key, p)?,
                _ => {
                    return Err(self.invalid(
                        &key,
                        "missing; every [[roots]] needs path = \"/absolute/folder\"",
                    ))
                }
            };
            for (name, globs) in [("include", &r.include), ("exclude", &r.exclude)] {
                for glob in globs {
                    if let Err(e) = globset::Glob::new(glob) {
                        return Err(self.invalid(
                            &[K("roots"), I(i), K(name)],
                            format!("invalid glob {glob:?}: {}", e.kind()),
                        ));
                    }
                }
            }
            // Overlapping roots would see the same files twice, under two sets of filters.
            for (j, earlier) in roots.iter().enumerate() {
                let clash = if path == earlier.path {
                    Some("is the same folder as")
                } else if earlier.recursive && path.starts_with(&earlier.path) {
                    Some("is inside, and already covered by,")
                } else if r.recursive && earlier.path.starts_with(&path) {
                    Some("contains")
                } else {
                    None
                };
                if let Some(clash) = clash {
                    return Err(self.invalid(
                        &key,
                        format!(
                            "{} {clash} roots[{j}] ({}); merge them into one root",
                            path.display(),
                            earlier.path.display()
                        ),
                    ));
                }
            }
            roots.push(RootConfig {
                path,
                recursive: r.recursive,
                include: r.include,
                exclude: r.exclude,
                hidden: r.hidden,
            });
        }
        Ok(roots)
    }

    fn log_level(&self, level: String) -> Result<String, ConfigError> {
        const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
        let path = [K("log"), K("level")];
        let trimmed = level.trim();
        // A bare word that is not a level would be read by EnvFilter as a target name and
        // silently log nothing, so it is checked here; directives go to EnvFilter.
        if trimmed.contains(['=', ',']) {
            if let Err(e) = tracing_subscriber::EnvFilter::try_new(trimmed) {
                return Err(self.invalid(&path, format!("invalid filter {trimmed:?}: {e}")));
            }
        } else if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(trimmed)) {
            return Err(self.invalid(
                &path,
                format!(
                    "unknown level {trimmed:?}; use one of {}, or a filter like \
                     \"info,immish_sync=debug\"",
                    LEVELS.join(", ")
                ),
            ));
        }
        Ok(trimmed.to_owned())
    }

    /// A path as written, with a leading `~/` taken as `$HOME/`; it must then be absolute.
    fn absolute(&self, key: &[Seg<'_>], value: &str) -> Result<PathBuf, ConfigError> {
        let home = || env_get(self.env, "HOME");
        let path = match value.strip_prefix("~/") {
            Some(rest) => match home() {
                Some(home) => Path::new(home).join(rest),
                None => {
                    return Err(self.invalid(
                        key,
                        format!(
                            "{value:?} starts with ~/ but $HOME is not set; write the full path"
                        ),
                    ))
                }
            },
            None => PathBuf::from(value),
        };
        if !path.is_absolute() {
            return Err(self.invalid(
                key,
                format!(
                    "{value:?} must be absolute (start with / or ~/); relative paths are not \
                     resolved against the config file's directory"
                ),
            ));
        }
        Ok(path)
    }

    fn nonzero(&self, key: &[Seg<'_>], d: RawDuration) -> Result<Duration, ConfigError> {
        if d.0.is_zero() {
            return Err(self.invalid(key, "must be longer than 0"));
        }
        Ok(d.0)
    }

    fn set_by_env(&self, key: &[Seg<'_>]) -> bool {
        self.env_keys.contains_key(&key_name(key))
    }

    /// The variable that set `key` (or the root containing it), else the file position of
    /// the key, or of its section when the key is missing.
    fn origin(&self, key: &[Seg<'_>]) -> Origin {
        for n in (1..=key.len()).rev() {
            if let Some(var) = self.env_keys.get(&key_name(&key[..n])) {
                return Origin::Env { var: var.clone() };
            }
        }
        file_origin(self.file.path, self.file.text, self.file.locate(key))
    }

    fn invalid(&self, key: &[Seg<'_>], message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin(key),
            key: key_name(key),
            message: message.into(),
        }
    }
}

fn read_secret(origin: Origin, key: &str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError::SecretFile {
        origin,
        key: key.to_owned(),
        path: path.to_owned(),
        error,
    })
}

fn nonempty_secret(
    value: &str,
    empty: impl FnOnce() -> ConfigError,
) -> Result<Secret, ConfigError> {
    if value.is_empty() {
        return Err(empty());
    }
    Ok(Secret::new(value))
}

/// The shape of a base URL; the connect code does the real parsing and discovery.
fn check_url(url: &str) -> Result<(), String> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{url:?} must not contain spaces"));
    }
    let rest = match url.find("://") {
        Some(i) => {
            let scheme = url[..i].to_ascii_lowercase();
            if scheme != "http" && scheme != "https" {
                return Err(format!(
                    "unsupported scheme `{scheme}`; use https:// or http://"
                ));
            }
            &url[i + 3..]
        }
        None => url,
    };
    if rest.contains(['?', '#']) {
        return Err(
            "must not contain a query (?…) or fragment (#…); give the server's base URL".to_owned(),
        );
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(
            "must not contain a user name or password; use api_key_file, or email \
                    and password_file"
                .to_owned(),
        );
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let Some((host, after)) = v6.split_once(']') else {
                return Err("has an unclosed [ in its IPv6 address".to_owned());
            };
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(format!("has {after:?} after the IPv6 address")),
                },
            }
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err("has no host name; e.g. https://photos.example.com".to_owned());
    }
    if let Some(bad) = host
        .chars()
        .find(|&c| !(c.is_alphanumeric() || matches!(c, '-' | '.' | '_' | ':')))
    {
        return Err(format!("host {host:?} contains {bad:?}"));
    }
    if let Some(port) = port {
        if !port.parse::<u16>().is_ok_and(|p| p != 0) {
            return Err(format!("port {port:?} must be a number from 1 to 65535"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The minimal config of issue 3, verbatim.
    const MINIMAL: &str = r#"[server]
url = "http://127.0.0.1:2283"     # base URL; /api is discovered
api_key = "…"                      # or api_key_file = "…", or email = "…" + password_file = "…"
[state]
dir = "/var/lib/immish-sync"
[[roots]]
path = "/srv/photos"
"#;

    /// A config with no secret in it, to which tests add what they exercise.
    const BASE: &str = r#"[server]
url = "https://photos.example.com"

[[roots]]
path = "/srv/photos"
"#;

    const EXAMPLE: &str = include_str!("../config.example.toml");

    struct Dir(tempfile::TempDir);

    impl Dir {
        fn new() -> Dir {
            Dir(tempfile::tempdir().expect("tempdir"))
        }

        fn write(&self, name: &str, text: &str, mode: u32) -> PathBuf {
            let path = self.0.path().join(name);
            std::fs::write(&path, text).expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            path
        }

        /// Writes `text` as a private config file and loads it with `env`.
        fn load(&self, text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
            let path = self.write("config.toml", text, 0o600);
            load_from_str(text, &path, &vars(env))
        }

        fn error(&self, text: &str, env: &[(&str, &str)]) -> String {
            match self.load(text, env) {
                Ok(config) => panic!("expected an error, got {config:?}"),
                Err(e) => e.to_string(),
            }
        }

        fn config_path(&self) -> String {
            self.0.path().join("config.toml").display().to_string()
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn api_key(config: &Config) -> &str {
        match &config.server.credentials {
            Credentials::ApiKey(key) => key.expose(),
            other => panic!("expected an API key, got {other:?}"),
        }
    }

    fn assert_contains(message: &str, parts: &[&str]) {
        for part in parts {
            assert!(
                message.contains(part),
                "{message:?} should contain {part:?}"
            );
        }
    }

    #[test]
    fn minimal_config_from_the_issue_parses_with_all_defaults() {
        let dir = Dir::new();
        let c = dir.load(MINIMAL, &[]).expect("minimal config");
        assert_eq!(c.server.url, "http://127.0.0.1:2283");
        assert_eq!(api_key(&c), "…");
        assert_eq!(c.server.ca_file, None);
        assert!(!c.server.allow_insecure_http);
        assert_eq!(c.server.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.server.stall_timeout, Duration::from_secs(120));
        assert_eq!(c.state.dir, Path::new("/var/lib/immish-sync"));
        assert_eq!(c.roots.len(), 1);
        let root = &c.roots[0];
        assert_eq!(root.path, Path::new("/srv/photos"));
        assert!(root.recursive && !root.hidden);
        assert!(root.include.is_empty() && root.exclude.is_empty());
        assert_eq!(c.upload.concurrency, 4);
        assert_eq!(c.upload.device_id, None);
        assert_eq!(c.upload.retry_initial, Duration::from_secs(1));
        assert_eq!(c.upload.retry_max, Duration::from_secs(600));
        assert_eq!(c.upload.scan_max_attempts, 5);
        assert_eq!(c.hash.concurrency, 2);
        assert_eq!(c.scan.interval, Duration::from_secs(3600));
        assert_eq!(c.watch.mode, WatchMode::Auto);
        assert_eq!(c.watch.settle, Duration::from_secs(3));
        assert_eq!(c.watch.poll_interval, Duration::from_secs(60));
        assert!(!c.mirror.reupload_deleted && c.mirror.events);
        assert_eq!(c.mirror.pull_interval, Duration::from_secs(300));
        assert_eq!(c.mirror.full_reconcile_interval, Duration::from_secs(86400));
        assert_eq!(c.log.level, "info");
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.source.as_deref(), Some(Path::new(&dir.config_path())));
    }

    #[test]
    fn typo_in_a_key_names_the_key_its_line_and_the_fix() {
        let dir = Dir::new();
        let text = format!("{BASE}\n[upload]\nconcurency = 8\n");
        let e = dir.error(&text, &[]);
        assert_contains(
            &e,
            &[
                &format!("{}:8:1: upload.concurency:", dir.config_path()),
                "unknown field `concurency`",
                "did you mean `concurrency`?",
            ],
        );
    }

    #[test]
    fn typo_in_a_section_name_is_caught_too() {
        let e = Dir::new().error(&format!("{BASE}[uplaod]\nconcurrency = 8\n"), &[]);
        assert_contains(&e, &[":6:2: uplaod:", "did you mean `upload`?"]);
    }

    #[test]
    fn wrong_type_names_the_key_and_its_line() {
        let dir = Dir::new();
        let e = dir.error(&format!("{BASE}[upload]\nconcurrency = \"four\"\n"), &[]);
        assert_contains(
            &e,
            &[
                &format!("{}:7:15: upload.concurrency:", dir.config_path()),
                "invalid type: string \"four\", expected an integer",
            ],
        );
    }

    #[test]
    fn out_of_range_values_name_the_key_and_the_limits() {
        let e = Dir::new().error(&format!("{BASE}[hash]\nconcurrency = 100\n"), &[]);
        assert_contains(
            &e,
            &[":7:15: hash.concurrency: must be between 1 and 64, got 100"],
        );
        let e = Dir::new().error(&format!("{BASE}[upload]\nscan_max_attempts = 0\n"), &[]);
        assert_contains(
            &e,
            &["upload.scan_max_attempts: must be a whole number of at least 1"],
        );
    }

    #[test]
    fn syntax_errors_carry_the_position() {
        let dir = Dir::new();
        let e = dir.error("[server\nurl = 1\n", &[]);
        assert_contains(&e, &[&format!("{}:1:", dir.config_path()), "invalid TOML"]);
    }

    #[test]
    fn repeated_keys_and_sections_are_named() {
        let e = Dir::new().error(&format!("{BASE}[server]\nurl = \"x\"\n"), &[]);
        assert_contains(&e, &[":6:2: invalid TOML: duplicate key `server`"]);
        let e = Dir::new().error(&format!("{BASE}[[upload]]\nconcurrency = 1\n"), &[]);
        assert_contains(&e, &[":6:1: upload[0]: must be a table, written [upload]"]);
    }

    #[test]
    fn enum_values_list_the_choices() {
        let e = Dir::new().error(&format!("{BASE}[watch]\nmode = \"inotify\"\n"), &[]);
        assert_contains(
            &e,
            &[
                ":7:8: watch.mode: unknown variant `inotify`",
                "`notify`",
                "`poll`",
            ],
        );
        let e = Dir::new().error(&format!("{BASE}[log]\nformat = \"JSON\"\n"), &[]);
        assert_contains(
            &e,
            &["log.format: unknown variant `JSON`", "did you mean `json`?"],
        );
    }

    #[test]
    fn single_bracket_roots_gets_a_hint() {
        let text = "[server]\nurl = \"https://x\"\n[roots]\npath = \"/p\"\n";
        let e = Dir::new().error(text, &[]);
        assert_contains(&e, &[":3:1: roots: must be a list of tables", "[[roots]]"]);
    }

    #[test]
    fn missing_server_url_names_the_key_and_the_fix() {
        let dir = Dir::new();
        let text = "[server]\napi_key_file = \"/k\"\n\n[[roots]]\npath = \"/p\"\n";
        let e = dir.error(text, &[]);
        assert_contains(
            &e,
            &[
                &format!("{}:1:2: server.url: missing", dir.config_path()),
                "url = \"https://photos.example.com\"",
            ],
        );
        // With no [server] at all there is no line to point at, but the key is named.
        let e = dir.error("[[roots]]\npath = \"/p\"\n", &[]);
        assert_contains(
            &e,
            &[&format!("{}: server.url: missing", dir.config_path())],
        );
    }

    #[test]
    fn bad_urls_are_refused() {
        let dir = Dir::new();
        for (url, expected) in [
            ("ftp://photos", "unsupported scheme `ftp`"),
            (
                "https://user:pw@photos",
                "must not contain a user name or password",
            ),
            ("https://photos/api?apiKey=x", "must not contain a query"),
            ("https://:2283", "has no host name"),
            (
                "photos:99999",
                "port \"99999\" must be a number from 1 to 65535",
            ),
        ] {
            let text = format!("[server]\nurl = \"{url}\"\n[[roots]]\npath = \"/p\"\n");
            let e = dir.error(&text, &[("IMMISH_SYNC__SERVER__API_KEY", "k")]);
            assert_contains(&e, &[":2:1: server.url: ", expected]);
            assert!(!e.contains("pw@"), "{e}");
        }
        for url in [
            "localhost:2283",
            "http://[::1]:2283/",
            "https://photos.example.com/immich",
        ] {
            let text = format!("[server]\nurl = \"{url}\"\n[[roots]]\npath = \"/p\"\n");
            let c = dir.load(&text, &[("IMMISH_SYNC__SERVER__API_KEY", "k")]);
            assert!(c.is_ok(), "{url}: {:?}", c.err());
        }
    }

    #[test]
    fn env_overrides_win_over_the_file() {
        let dir = Dir::new();
        let text = format!("{BASE}[upload]\nconcurrency = 2\n[watch]\nmode = \"notify\"\n");
        let c = dir
            .load(
                &text,
                &[
                    ("IMMISH_SYNC__UPLOAD__CONCURRENCY", "8"),
                    ("immish_sync__watch__mode", "poll"),
                    ("IMMISH_SYNC__Server__Url", "http://10.0.0.2:2283"),
                    ("IMMISH_SYNC__SCAN__INTERVAL", "30m"),
                    ("IMMISH_SYNC__MIRROR__EVENTS", "false"),
                    ("IMMISH_SYNC__ROOTS__0__EXCLUDE", "[\"*.tmp\"]"),
                    ("IMMISH_SYNC__ROOTS__1__PATH", "/mnt/phone"),
                    ("IMMISH_SYNC__SERVER__API_KEY", "from-env"),
                    // Not ours: a single underscore, and an unrelated prefix.
                    ("IMMISH_SYNC_CONFIG", "/elsewhere.toml"),
                    ("IMMISH_SYNCX__A__B", "1"),
                ],
            )
            .expect("config with overrides");
        assert_eq!(c.upload.concurrency, 8);
        assert_eq!(c.watch.mode, WatchMode::Poll);
        assert_eq!(c.server.url, "http://10.0.0.2:2283");
        assert_eq!(c.scan.interval, Duration::from_secs(1800));
        assert!(!c.mirror.events);
        assert_eq!(c.roots[0].exclude, ["*.tmp"]);
        assert_eq!(c.roots[1].path, Path::new("/mnt/phone"));
        assert_eq!(api_key(&c), "from-env");
    }

    #[test]
    fn a_numeric_looking_secret_from_env_stays_a_string() {
        let c = Dir::new()
            .load(BASE, &[("IMMISH_SYNC__SERVER__API_KEY", "0123456789")])
            .expect("numeric key");
        assert_eq!(api_key(&c), "0123456789");
    }

    #[test]
    fn a_bad_env_value_names_the_variable() {
        let dir = Dir::new();
        let e = dir.error(
            BASE,
            &[
                ("IMMISH_SYNC__SERVER__API_KEY", "k"),
                ("IMMISH_SYNC__UPLOAD__CONCURRENCY", "four"),
            ],
        );
        assert_contains(
            &e,
            &[
                "environment variable IMMISH_SYNC__UPLOAD__CONCURRENCY: upload.concurrency:",
                "invalid type: string \"four\", expected an integer",
            ],
        );
        let e = dir.error(BASE, &[("IMMISH_SYNC__UPLOAD__CONCURENCY", "8")]);
        assert_contains(
            &e,
            &[
                "IMMISH_SYNC__UPLOAD__CONCURENCY: upload.concurency:",
                "did you mean `concurrency`?",
            ],
        );
        let e = dir.error(BASE, &[("IMMISH_SYNC__SERVER__URL", "ftp://x")]);
        assert_contains(
            &e,
            &["IMMISH_SYNC__SERVER__URL: server.url: unsupported scheme"],
        );
        let e = dir.error(BASE, &[("IMMISH_SYNC__ROOTS__3__PATH", "/x")]);
        assert_contains(
            &e,
            &["IMMISH_SYNC__ROOTS__3__PATH: roots[3].path: there is no root 3"],
        );
        let e = dir.error(BASE, &[("IMMISH_SYNC__CONCURRENCY", "8")]);
        assert_contains(
            &e,
            &["IMMISH_SYNC__CONCURRENCY", "IMMISH_SYNC__SECTION__KEY"],
        );
        let e = dir.error(
            BASE,
            &[
                ("IMMISH_SYNC__SERVER__API_KEY", "k"),
                ("IMMISH_SYNC__ROOTS__1__PATH", "rel"),
            ],
        );
        assert_contains(
            &e,
            &["IMMISH_SYNC__ROOTS__1__PATH: roots[1].path: \"rel\" must be absolute"],
        );
    }

    #[test]
    fn inline_api_key_in_a_readable_file_is_refused() {
        let dir = Dir::new();
        let text = BASE.replace("[server]\n", "[server]\napi_key = \"secret-value\"\n");
        let path = dir.write("config.toml", &text, 0o644);
        let e = load_from_str(&text, &path, &[])
            .expect_err("0644 with a key")
            .to_string();
        assert_contains(
            &e,
            &[
                &path.display().to_string(),
                "holds server.api_key inline",
                "its mode is 0644",
                &format!("chmod 600 {}", path.display()),
                "server.api_key_file",
            ],
        );
        assert!(!e.contains("secret-value"), "{e}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let c = load_from_str(&text, &path, &[]).expect("0600 with a key");
        assert_eq!(api_key(&c), "secret-value");
    }

    #[test]
    fn inline_password_in_a_group_readable_file_is_refused() {
        let dir = Dir::new();
        let text = BASE.replace(
            "[server]\n",
            "[server]\nemail = \"a@b.c\"\npassword = \"pw\"\n",
        );
        let path = dir.write("config.toml", &text, 0o640);
        let e = load_from_str(&text, &path, &[])
            .expect_err("0640 with a password")
            .to_string();
        assert_contains(&e, &["holds server.password inline", "chmod 600"]);
    }

    #[test]
    fn a_readable_file_without_secrets_is_fine() {
        let dir = Dir::new();
        let key = dir.write("key", "k\n", 0o600);
        let text = BASE.replace(
            "[server]\n",
            &format!("[server]\napi_key_file = \"{}\"\n", key.display()),
        );
        let path = dir.write("config.toml", &text, 0o644);
        assert!(load_from_str(&text, &path, &[]).is_ok());
    }

    #[test]
    fn api_key_file_is_read_and_trimmed() {
        let dir = Dir::new();
        let key = dir.write("api-key", "  abc123\n\n", 0o600);
        let text = BASE.replace(
            "[server]\n",
            &format!("[server]\napi_key_file = \"{}\"\n", key.display()),
        );
        let c = dir.load(&text, &[]).expect("key file");
        assert_eq!(api_key(&c), "abc123");
    }

    #[test]
    fn a_missing_or_empty_key_file_names_the_path() {
        let dir = Dir::new();
        let missing = dir.0.path().join("nope");
        let text = BASE.replace(
            "[server]\n",
            &format!("[server]\napi_key_file = \"{}\"\n", missing.display()),
        );
        let e = dir.error(&text, &[]);
        assert_contains(
            &e,
            &[
                ":2:1: server.api_key_file: cannot read",
                &missing.display().to_string(),
            ],
        );
        let empty = dir.write("empty", "\n", 0o600);
        let text = BASE.replace(
            "[server]\n",
            &format!("[server]\napi_key_file = \"{}\"\n", empty.display()),
        );
        let e = dir.error(&text, &[]);
        assert_contains(&e, &["server.api_key_file:", "is empty"]);
    }

    #[test]
    fn api_key_sources_follow_the_documented_order() {
        let dir = Dir::new();
        let creds = tempfile::tempdir().expect("tempdir");
        std::fs::write(creds.path().join(API_KEY_CREDENTIAL), "from-systemd\n").expect("write");
        let key = dir.write("api-key", "from-file\n", 0o600);
        let with_file = BASE.replace(
            "[server]\n",
            &format!("[server]\napi_key_file = \"{}\"\n", key.display()),
        );
        let inline = BASE.replace("[server]\n", "[server]\napi_key = \"from-config\"\n");
        let systemd = (
            "CREDENTIALS_DIRECTORY",
            creds.path().to_str().expect("utf-8"),
        );
        let env_key = ("IMMISH_SYNC__SERVER__API_KEY", "from-env");

        let c = dir.load(&with_file, &[systemd, env_key]).expect("systemd");
        assert_eq!(api_key(&c), "from-systemd");
        let c = dir.load(&with_file, &[env_key]).expect("api_key_file");
        assert_eq!(api_key(&c), "from-file");
        let c = dir.load(&inline, &[env_key]).expect("env");
        assert_eq!(api_key(&c), "from-env");
        let c = dir.load(&inline, &[]).expect("inline");
        assert_eq!(api_key(&c), "from-config");
        // A CREDENTIALS_DIRECTORY without our credential (another unit's) is not a source.
        let other = tempfile::tempdir().expect("tempdir");
        let c = dir
            .load(
                &inline,
                &[(
                    "CREDENTIALS_DIRECTORY",
                    other.path().to_str().expect("utf-8"),
                )],
            )
            .expect("inline");
        assert_eq!(api_key(&c), "from-config");
    }

    #[test]
    fn api_key_and_api_key_file_in_the_same_file_is_an_error() {
        let text = BASE.replace(
            "[server]\n",
            "[server]\napi_key = \"a\"\napi_key_file = \"/k\"\n",
        );
        let e = Dir::new().error(&text, &[]);
        assert_contains(
            &e,
            &[":2:1: server.api_key: set only one of api_key and api_key_file"],
        );
    }

    #[test]
    fn an_api_key_and_an_email_is_an_error() {
        let text = BASE.replace(
            "[server]\n",
            "[server]\napi_key = \"a\"\nemail = \"me@x.org\"\n",
        );
        let e = Dir::new().error(&text, &[]);
        assert_contains(
            &e,
            &[
                ":3:1: server.email: an API key (api_key or api_key_file) is set too",
                "not both",
            ],
        );
    }

    #[test]
    fn password_login_reads_password_file() {
        let dir = Dir::new();
        let pw = dir.write("pw", " spaced pw \n", 0o600);
        let text = BASE.replace(
            "[server]\n",
            &format!(
                "[server]\nemail = \"me@x.org\"\npassword_file = \"{}\"\n",
                pw.display()
            ),
        );
        let c = dir.load(&text, &[]).expect("login");
        match c.server.credentials {
            Credentials::Password { email, password } => {
                assert_eq!(email, "me@x.org");
                assert_eq!(password.expose(), " spaced pw ");
            }
            other => panic!("expected a login, got {other:?}"),
        }
        let text = BASE.replace("[server]\n", "[server]\nemail = \"me@x.org\"\n");
        let e = dir.error(&text, &[]);
        assert_contains(&e, &["server.password_file: missing"]);
    }

    #[test]
    fn no_credentials_at_all_says_how_to_give_one() {
        let e = Dir::new().error(BASE, &[]);
        assert_contains(
            &e,
            &[
                ":1:2: server: no credentials",
                "api_key_file",
                "IMMISH_SYNC__SERVER__API_KEY",
            ],
        );
    }

    #[test]
    fn relative_root_path_names_the_root() {
        let dir = Dir::new();
        let text = format!("{BASE}\n[[roots]]\npath = \"photos/phone\"\n");
        let e = dir.error(&text, &[("IMMISH_SYNC__SERVER__API_KEY", "k")]);
        assert_contains(
            &e,
            &[
                &format!(
                    "{}:8:1: roots[1].path: \"photos/phone\" must be absolute",
                    dir.config_path()
                ),
                "not resolved against the config file's directory",
            ],
        );
    }

    #[test]
    fn tilde_is_home() {
        let text = BASE.replace("/srv/photos", "~/Pictures");
        let c = Dir::new()
            .load(
                &text,
                &[("IMMISH_SYNC__SERVER__API_KEY", "k"), ("HOME", "/home/ann")],
            )
            .expect("tilde");
        assert_eq!(c.roots[0].path, Path::new("/home/ann/Pictures"));
    }

    #[test]
    fn no_roots_and_overlapping_roots_are_errors() {
        let dir = Dir::new();
        let key = [("IMMISH_SYNC__SERVER__API_KEY", "k")];
        let e = dir.error("[server]\nurl = \"https://x\"\n", &key);
        assert_contains(&e, &["roots: no folders to back up", "[[roots]]"]);
        let text = format!("{BASE}[[roots]]\npath = \"/srv/photos/2024\"\n");
        let e = dir.error(&text, &key);
        assert_contains(
            &e,
            &[
                ":7:1: roots[1].path: /srv/photos/2024 is inside",
                "roots[0]",
            ],
        );
        let text = format!("{BASE}[[roots]]\npath = \"/srv/photos/\"\n");
        let e = dir.error(&text, &key);
        assert_contains(
            &e,
            &["roots[1].path: /srv/photos/ is the same folder as roots[0]"],
        );
    }

    #[test]
    fn a_bad_glob_names_the_glob_and_the_key() {
        let text = format!("{BASE}exclude = [\"*.tmp\", \"[abc\"]\n");
        let e = Dir::new().error(&text, &[("IMMISH_SYNC__SERVER__API_KEY", "k")]);
        assert_contains(
            &e,
            &[":6:1: roots[0].exclude: invalid glob \"[abc\": unclosed character class"],
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration(" 90 "), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2 m"), Ok(Duration::from_secs(120)));
        for bad in ["", "m", "1.5h", "10x", "-1s", "1h30m"] {
            let e = parse_duration(bad).expect_err(bad);
            assert_contains(&e, &["invalid duration", "\"10s\""]);
        }
        assert!(parse_duration("99999999999999999999d").is_err());

        let text = format!(
            "{BASE}[watch]\nsettle = \"500ms\"\npoll_interval = 90\n[mirror]\npull_interval = \"1d\"\n"
        );
        let c = Dir::new()
            .load(&text, &[("IMMISH_SYNC__SERVER__API_KEY", "k")])
            .expect("durations");
        assert_eq!(c.watch.settle, Duration::from_millis(500));
        assert_eq!(c.watch.poll_interval, Duration::from_secs(90));
        assert_eq!(c.mirror.pull_interval, Duration::from_secs(86400));

        let e = Dir::new().error(&format!("{BASE}[scan]\ninterval = \"1 hour\"\n"), &[]);
        assert_contains(&e, &[":7:12: scan.interval: invalid duration \"1 hour\""]);
        let e = Dir::new().error(
            &format!("{BASE}[scan]\ninterval = 0\n"),
            &[("IMMISH_SYNC__SERVER__API_KEY", "k")],
        );
        assert_contains(&e, &[":7:1: scan.interval: must be longer than 0"]);
        let e = Dir::new().error(
            &format!("{BASE}[upload]\nretry_initial = \"1h\"\nretry_max = \"1m\"\n"),
            &[("IMMISH_SYNC__SERVER__API_KEY", "k")],
        );
        assert_contains(
            &e,
            &["upload.retry_initial: (3600s) must not be longer than upload.retry_max (60s)"],
        );
    }

    #[test]
    fn ca_file_must_exist() {
        let dir = Dir::new();
        let text = BASE.replace("[server]\n", "[server]\nca_file = \"/no/such/ca.pem\"\n");
        let e = dir.error(&text, &[("IMMISH_SYNC__SERVER__API_KEY", "k")]);
        assert_contains(
            &e,
            &[":2:1: server.ca_file: /no/such/ca.pem does not exist"],
        );
        let ca = dir.write("ca.pem", "-----BEGIN CERTIFICATE-----\n", 0o644);
        let text = BASE.replace(
            "[server]\n",
            &format!("[server]\nca_file = \"{}\"\n", ca.display()),
        );
        let c = dir
            .load(&text, &[("IMMISH_SYNC__SERVER__API_KEY", "k")])
            .expect("ca");
        assert_eq!(c.server.ca_file, Some(ca));
    }

    #[test]
    fn log_level_is_checked() {
        let key = [("IMMISH_SYNC__SERVER__API_KEY", "k")];
        let e = Dir::new().error(&format!("{BASE}[log]\nlevel = \"verbose\"\n"), &key);
        assert_contains(&e, &[":7:1: log.level: unknown level \"verbose\""]);
        let c = Dir::new()
            .load(
                &format!("{BASE}[log]\nlevel = \"info,immish_sync=debug\"\nformat = \"json\"\n"),
                &key,
            )
            .expect("directive");
        assert_eq!(c.log.level, "info,immish_sync=debug");
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn secrets_never_appear_in_debug_or_errors() {
        let dir = Dir::new();
        let text = BASE.replace("[server]\n", "[server]\napi_key = \"s3cr3t-k3y\"\n");
        let c = dir.load(&text, &[]).expect("config");
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cr3t-k3y"), "{debug}");
        assert!(debug.contains("Secret(***)"), "{debug}");
        let login = Credentials::Password {
            email: "me@x.org".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{login:?}").contains("hunter2"));
        assert_eq!(Secret::new("hunter2").to_string(), "***");

        // A secret of the wrong type is not echoed back.
        let text = BASE.replace("[server]\n", "[server]\napi_key = 987654321\n");
        let e = dir.error(&text, &[]);
        assert_contains(
            &e,
            &[":2:11: server.api_key: must be a string (in quotes), not an integer"],
        );
        assert!(!e.contains("987654321"), "{e}");
        let e = dir.error(
            BASE,
            &[
                ("IMMISH_SYNC__SERVER__API_KEY", "k"),
                ("IMMISH_SYNC__SERVER__PASSWORD", "[1, 2]"),
            ],
        );
        assert!(!e.contains("[1, 2]"), "{e}");
    }

    #[test]
    fn a_missing_config_file_says_how_to_make_one() {
        let dir = Dir::new();
        let path = dir.0.path().join("absent.toml");
        let e = load(&path).expect_err("missing").to_string();
        assert_contains(
            &e,
            &[
                &path.display().to_string(),
                "cannot read config file",
                "config.example.toml",
                "--config",
            ],
        );
    }

    #[test]
    fn default_locations() {
        let env = vars(&[("HOME", "/home/ann")]);
        assert_eq!(
            default_config_path_in(&env, false),
            Path::new("/home/ann/.config/immish-sync/config.toml")
        );
        assert_eq!(
            default_state_dir_in(&env, false),
            Path::new("/home/ann/.local/state/immish-sync")
        );
        assert_eq!(
            default_config_path_in(&env, true),
            Path::new("/etc/immish-sync/config.toml")
        );
        assert_eq!(
            default_state_dir_in(&env, true),
            Path::new("/var/lib/immish-sync")
        );

        let env = vars(&[
            ("HOME", "/home/ann"),
            ("XDG_CONFIG_HOME", "/xdg/config"),
            ("XDG_STATE_HOME", "relative/is/ignored"),
        ]);
        assert_eq!(
            default_config_path_in(&env, false),
            Path::new("/xdg/config/immish-sync/config.toml")
        );
        assert_eq!(
            default_state_dir_in(&env, false),
            Path::new("/home/ann/.local/state/immish-sync")
        );

        let env = vars(&[
            ("IMMISH_SYNC_CONFIG", "/opt/c.toml"),
            ("STATE_DIRECTORY", "/var/lib/immish-sync:/var/lib/other"),
        ]);
        assert_eq!(default_config_path_in(&env, true), Path::new("/opt/c.toml"));
        assert_eq!(
            default_state_dir_in(&env, true),
            Path::new("/var/lib/immish-sync")
        );
        assert_eq!(
            default_state_dir_in(&env, false),
            Path::new("/var/lib/immish-sync")
        );

        // Without [state] dir the environment decides.
        let c = Dir::new()
            .load(
                BASE,
                &[
                    ("IMMISH_SYNC__SERVER__API_KEY", "k"),
                    ("STATE_DIRECTORY", "/run/st"),
                ],
            )
            .expect("config");
        assert_eq!(c.state.dir, Path::new("/run/st"));
    }

    /// The example with every `# key = value` line switched on.
    fn example_uncommented() -> String {
        EXAMPLE
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest)
                    if rest.split_once(" = ").is_some_and(|(k, _)| {
                        !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    }) =>
                {
                    rest
                }
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_example_config_loads() {
        let dir = Dir::new();
        let key = dir.write("api-key", "example-key\n", 0o600);
        let text = EXAMPLE.replace("/etc/immish-sync/api-key", &key.display().to_string());
        assert_ne!(
            text, EXAMPLE,
            "the example should set api_key_file = \"/etc/immish-sync/api-key\""
        );
        let c = dir.load(&text, &[]).expect("config.example.toml");
        assert_eq!(api_key(&c), "example-key");
        assert_eq!(c.roots[0].path, Path::new("/srv/photos"));
        assert_eq!(c.state.dir, Path::new("/var/lib/immish-sync"));
    }

    #[test]
    fn the_example_documents_every_key_with_its_real_default() {
        let text = example_uncommented();
        let raw: RawConfig =
            toml::from_str(&text).unwrap_or_else(|e| panic!("uncommented example: {e}"));
        // Every key exists (deny_unknown_fields) and appears; the defaults shown are the
        // defaults in the code (keys whose example shows a non-default value are reset).
        let server = RawServer {
            url: None,
            api_key: None,
            api_key_file: None,
            email: None,
            password: None,
            password_file: None,
            ca_file: None,
            ..raw.server
        };
        assert!(raw.server.url.is_some() && raw.server.api_key.is_some());
        assert!(raw.server.api_key_file.is_some() && raw.server.email.is_some());
        assert!(raw.server.password.is_some() && raw.server.password_file.is_some());
        assert!(raw.server.ca_file.is_some() && raw.state.dir.is_some());
        assert_eq!(server, RawServer::default());
        let root = RawRoot {
            path: None,
            ..raw.roots.into_iter().next().expect("a root")
        };
        assert_eq!(root, RawRoot::default());
        assert!(raw.upload.device_id.is_some());
        assert_eq!(
            RawUpload {
                device_id: None,
                ..raw.upload
            },
            RawUpload::default()
        );
        assert_eq!(raw.hash, RawHash::default());
        assert_eq!(raw.scan, RawScan::default());
        assert_eq!(raw.watch, RawWatch::default());
        assert_eq!(raw.mirror, RawMirror::default());
        assert_eq!(raw.log, RawLog::default());
    }

    #[test]
    fn the_example_starts_with_the_minimal_config() {
        let head: String = EXAMPLE.lines().take(40).collect::<Vec<_>>().join("\n");
        for key in [
            "url = \"http://127.0.0.1:2283\"",
            "api_key",
            "dir = \"/var/lib/immish-sync\"",
            "path = \"/srv/photos\"",
        ] {
            assert!(
                head.contains(key),
                "the top of config.example.toml should show {key}"
            );
        }
    }
}
