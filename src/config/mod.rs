//! Configuration: defaults → TOML file → `IMMISH_SYNC__*` environment, validated once into
//! a resolved [`Config`] that the rest of the daemon reads and never re-checks.
//!
//! Owns: the raw TOML shapes (`deny_unknown_fields`), the defaults (in one place), the
//! secret sources, and errors that name the file, line and key. Must not: touch the network
//! or the state directory. It does read the small secret files (`api_key_file`,
//! `password_file`, the systemd credential) and `stat`s the config file and `ca_file`.
//!
//! How a value is found, in order of strength:
//! 1. the defaults in the `Default` impls of the raw shapes (the only place defaults live);
//! 2. the TOML file;
//! 3. `IMMISH_SYNC__SECTION__KEY=value` environment variables (see [`ENV_PREFIX`]).
//!
//! The API key has its own order (docs/RELIABILITY.md#secrets): a systemd credential named
//! [`API_KEY_CREDENTIAL`], then `api_key_file`, then `IMMISH_SYNC__SERVER__API_KEY`, then
//! `api_key` in the file.
//!
//! The file is deserialised twice on purpose: once straight from its text, so that a typo or
//! a wrong type is reported with toml's line and column; then, only if environment overrides
//! exist, from the merged table, one variable at a time, so that an error there names the
//! variable. Both are microseconds for a file this size.
//!
//! The parts, each a module of its own:
//! - `raw`: the TOML shapes and the defaults;
//! - `env`: the `IMMISH_SYNC__*` layer;
//! - `locate`: positions and wording of errors (`file:line:column`, did-you-mean);
//! - `resolve`: validation, raw → [`Config`];
//! - `secret`: where a credential comes from, and the permission checks;
//! - `url`: [`ServerUrl`], the server's URL, parsed once.

mod accounts;
mod env;
mod locate;
mod raw;
mod resolve;
mod secret;
mod url;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::de::DeTable;

use env::{apply_overrides, claimed_keys, env_get, env_overrides, process_env};
use locate::{file_origin, syntax_message, Located};
use raw::RawConfig;
use resolve::{Resolver, SERVER};

pub use accounts::DEFAULT_ACCOUNT;
pub use locate::{Origin, Position};
pub use raw::parse_duration;
pub use secret::Secret;
pub use url::{Scheme, ServerUrl, UrlError};

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
    pub metrics: MetricsConfig,
    pub alerts: AlertsConfig,
    /// `[[accounts]]`: the users besides `[server]`'s (docs/ARCHITECTURE.md#accounts).
    pub accounts: Vec<AccountConfig>,
    /// `[[pull]]`: folders that keep a verified copy of the server's originals
    /// (docs/ARCHITECTURE.md#pull); empty = off.
    pub pull: Vec<PullConfig>,
}

/// One `[[accounts]]` table: a name and how to reach and log in as that user.
#[derive(Clone, Debug)]
pub struct AccountConfig {
    /// Unique, made of `[A-Za-z0-9_-]` (it names a folder under the state directory).
    pub name: String,
    /// This account's URL and credentials, and its `ca_file`, `allow_insecure_http`,
    /// `connect_timeout` and `stall_timeout`, each `[server]`'s when the table leaves it out.
    pub server: ServerConfig,
}

/// The prefix of an account's systemd credential: `immish-sync-api-key-<name>`.
pub const ACCOUNT_KEY_CREDENTIAL_PREFIX: &str = "immish-sync-api-key-";

/// How to reach and log in to one server: `[server]`, or an `[[accounts]]` table with
/// `[server]`'s values for the keys it leaves out (docs/ARCHITECTURE.md#accounts).
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where these settings are written, for messages that name a key: `server`, or
    /// `accounts[N]` (N counts the `[[accounts]]` tables from 0).
    pub table: String,
    /// The base URL, checked and normalised here ([`ServerUrl`]); the API root under it is
    /// discovered at connect time.
    pub url: ServerUrl,
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

impl ServerConfig {
    /// Whether `other` reaches the same server as the same user: the URL, the credentials
    /// (their values compared, never shown: a secret's `Debug` is redacted), the CA file
    /// and the other connection settings. A SIGHUP restarts an `[[accounts]]` entry whose
    /// part differs (docs/ARCHITECTURE.md#reload).
    pub fn same_as(&self, other: &ServerConfig) -> bool {
        // Every field named, so that a new one is not forgotten here.
        let ServerConfig {
            // Only where messages say the keys are: an account moved up a table is the
            // same account.
            table: _,
            url,
            credentials,
            ca_file,
            allow_insecure_http,
            connect_timeout,
            stall_timeout,
        } = self;
        url.as_str() == other.url.as_str()
            && *credentials == other.credentials
            && *ca_file == other.ca_file
            && *allow_insecure_http == other.allow_insecure_http
            && *connect_timeout == other.connect_timeout
            && *stall_timeout == other.stall_timeout
    }
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
    /// Albums, Live Photos and stacks for this root's files (issue 11).
    pub library: LibraryConfig,
    /// What happens to a local file once the server holds its verified bytes
    /// (docs/ARCHITECTURE.md#after-upload).
    pub after_upload: AfterUploadConfig,
    /// Skip the built-in junk list (`crate::filter::JUNK`) and `junk_extra`.
    pub skip_junk: bool,
    /// More junk names (gitignore lines), when `skip_junk`.
    pub junk_extra: Vec<String>,
    /// Take a date from the file name when the file has no capture time.
    pub dates_from_names: bool,
    /// The zone a capture time without an offset is read in (`timezone`, default the
    /// machine's).
    pub timezone: jiff::tz::TimeZone,
    /// `account`: the `[[accounts]]` name its files belong to; `None` = `[server]`'s.
    pub account: Option<String>,
}

/// Which album a file joins by where it lies (`album` of a root).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlbumMode {
    /// No album from the folder.
    None,
    /// The name of the file's folder.
    Folder,
    /// The file's folder path below the root, joined with `album_separator`.
    Path,
}

/// Which member of a RAW + JPEG/HEIC pair the timeline shows (`stack_primary`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StackPrimary {
    Jpeg,
    Raw,
}

/// A root's album and stack settings (src/library/).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LibraryConfig {
    pub album: AlbumMode,
    /// Between the folder names of `album = "path"`; not empty.
    pub album_separator: String,
    /// One album every file of the root joins too; not blank.
    pub album_name: Option<String>,
    /// RAW + JPEG/HEIC of the same stem become a stack.
    pub stacks: bool,
    pub stack_primary: StackPrimary,
}

impl Default for LibraryConfig {
    /// No albums, stacks on with the JPEG on top: the defaults of `[[roots]]`.
    fn default() -> Self {
        LibraryConfig {
            album: AlbumMode::None,
            album_separator: " / ".into(),
            album_name: None,
            stacks: true,
            stack_primary: StackPrimary::Jpeg,
        }
    }
}

impl LibraryConfig {
    /// The settings as one line, to notice when they change between runs.
    pub fn fingerprint(&self) -> String {
        format!(
            "album={:?} sep={:?} name={:?} stacks={} primary={:?}",
            self.album, self.album_separator, self.album_name, self.stacks, self.stack_primary
        )
    }
}

impl RootConfig {
    /// A root at `path` with every other key at its default, dates read in UTC (for tests
    /// and tools that build a root without a file).
    pub fn at(path: impl Into<PathBuf>) -> RootConfig {
        let d = raw::RawRoot::default();
        RootConfig {
            path: path.into(),
            recursive: d.recursive,
            include: d.include,
            exclude: d.exclude,
            hidden: d.hidden,
            skip_junk: d.skip_junk,
            junk_extra: d.junk_extra,
            dates_from_names: d.dates_from_names,
            timezone: jiff::tz::TimeZone::UTC,
            library: LibraryConfig::default(),
            account: None,
            after_upload: AfterUploadConfig::default(),
        }
    }
}

/// `after_upload` of a root, as written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AfterUpload {
    /// Leave the file where it is (the default).
    #[default]
    Keep,
    /// Move it under `archive_dir`, keeping its path below the root.
    Archive,
    /// Delete it.
    Delete,
}

/// What happens to a root's files once the server holds their verified bytes
/// (docs/ARCHITECTURE.md#after-upload).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AfterUploadConfig {
    pub action: AfterUploadAction,
    /// Also for files only linked by dedup to an asset already on the server
    /// (`after_upload_linked`).
    pub linked: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AfterUploadAction {
    #[default]
    Keep,
    /// Absolute; outside every root's walk (checked by the config).
    Archive(PathBuf),
    Delete,
}

impl AfterUploadConfig {
    /// Whether the daemon ever removes a file of this root (and needs write access to it).
    pub fn removes(&self) -> bool {
        self.action != AfterUploadAction::Keep
    }
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
    /// `upload.max_rate`: bytes per second across all uploads (docs/ARCHITECTURE.md#bandwidth-cap).
    pub max_rate: Option<u64>,
    /// `upload.windows`: when new uploads may start (docs/ARCHITECTURE.md#upload-windows).
    pub windows: crate::windows::Windows,
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
    /// The quiet period of a file under a polled root (a network mount shows no close, so
    /// a paused writer is told from a finished one by time alone). The longer of this and
    /// `settle` applies.
    pub poll_settle: Duration,
    /// How long a file that looks unfinished (still open for writing, or structurally
    /// incomplete) waits while unchanged before it is taken anyway, with a warning: some
    /// real files are truncated for good.
    pub incomplete_limit: Duration,
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

/// `[metrics]`: the daemon's HTTP endpoint for `/healthz`, `/metrics` and the status page
/// (docs/STATUS.md#http-endpoint).
#[derive(Clone, Debug, Default)]
pub struct MetricsConfig {
    /// Where to listen; `None` (the default) serves nothing. Port 0 lets the system pick
    /// one (recorded for `status`).
    pub listen: Option<std::net::SocketAddr>,
    /// Every request must carry `Authorization: Bearer <token>`. Required, with
    /// `allow_remote`, for an address that is not loopback.
    pub token: Option<Secret>,
}

/// How an alert is sent (docs/STATUS.md#alerts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertKind {
    /// A JSON document POSTed as it is.
    Webhook,
    /// ntfy: the message as the body, the title and priority as headers.
    Ntfy,
    /// Gotify: `{title, message, priority}` POSTed to `…/message`.
    Gotify,
}

/// `[alerts]`: who is told when backups fail, once per incident (docs/STATUS.md#alerts).
#[derive(Clone, Debug)]
pub struct AlertsConfig {
    /// `None` (the default) sends nothing. `http://` or `https://`.
    pub url: Option<reqwest::Url>,
    pub kind: AlertKind,
    /// Sent as `Authorization: Bearer` (webhook, ntfy) or `X-Gotify-Key` (Gotify).
    pub token: Option<Secret>,
    /// The server unreachable (or refusing the key) this long is an incident.
    pub outage_after: Duration,
    /// Files waiting while nothing was backed up for this long is an incident.
    pub stalled_after: Duration,
}

impl AlertsConfig {
    /// Whether `other` sends the same alerts the same way, its token compared by value (a
    /// secret's `Debug` is redacted), for a SIGHUP (docs/ARCHITECTURE.md#reload).
    pub fn same_as(&self, other: &AlertsConfig) -> bool {
        // Every field named, so that a new one is not forgotten here.
        let AlertsConfig {
            url,
            kind,
            token,
            outage_after,
            stalled_after,
        } = self;
        url.as_ref().map(reqwest::Url::as_str) == other.url.as_ref().map(reqwest::Url::as_str)
            && *kind == other.kind
            && *token == other.token
            && *outage_after == other.outage_after
            && *stalled_after == other.stalled_after
    }
}

/// What a pull folder does with its copy of an asset deleted on the server
/// (`on_server_delete`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnServerDelete {
    /// The copy stays where it is: the server deleting an asset never deletes a local copy.
    Keep,
    /// The copy goes to `<path>/.deleted/`, same relative path, and is removed after
    /// `deleted_keep_days`.
    Move,
}

/// One `[[pull]]` folder (docs/ARCHITECTURE.md#pull).
#[derive(Clone, Debug)]
pub struct PullConfig {
    /// Absolute; overlaps no root and no other pull folder (checked as written and through
    /// symlinks). Created when missing.
    pub path: PathBuf,
    /// The account whose assets it holds; `None` = `[server]`'s.
    pub account: Option<String>,
    /// Where each asset goes below `path`.
    pub layout: crate::originals::layout::Layout,
    pub on_server_delete: OnServerDelete,
    /// How long a copy moved to `.deleted/` is kept.
    pub deleted_keep: Duration,
    /// Bytes per second for this folder's downloads; `None` = no cap.
    pub max_rate: Option<u64>,
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why the configuration was refused. Every message names where (file:line:column or the
/// environment variable), which key, and the fix where there is an obvious one; it never
/// contains a secret. The `Display` text is complete on its own: a cause (an `io::Error`,
/// a [`UrlError`]) is written into the message and never also returned by `source()`, so
/// `{}` and `{:#}` print it once and the same (the tests check every error they produce).
/// Exit code 2 is the caller's job.
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

    /// A file holding a secret (`api_key_file`, `password_file`) is open to users other than
    /// its owner. A systemd credential is not checked: systemd keeps it private.
    #[error(
        "{origin}: {key}: {} has mode {mode:04o}, so other users can read the secret in it; \
         run `chmod 600 {}`",
        .path.display(),
        .path.display()
    )]
    InsecureSecretFile {
        origin: Origin,
        key: String,
        path: PathBuf,
        mode: u32,
    },

    /// The config file holds a secret inline but other users can read it.
    #[error(
        "{}: holds {key} inline but its mode is {mode:04o}, so other users can read it; \
         run `chmod 600 {}`, or better, move the secret into a file named by {key}_file",
        .path.display(),
        .path.display()
    )]
    InsecurePermissions {
        path: PathBuf,
        /// Dotted, e.g. `server.api_key`.
        key: String,
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
    secret::check_inline_secrets(&file, &SERVER)?;
    for i in 0..from_file.accounts.len() {
        secret::check_inline_secrets(
            &file,
            &[locate::Seg::Key("accounts"), locate::Seg::Index(i)],
        )?;
    }

    let overrides = env_overrides(env)?;
    let env_keys = claimed_keys(&overrides, from_file.roots.len());
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

// ---------------------------------------------------------------------------------------------
// Default locations
// ---------------------------------------------------------------------------------------------

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
