//! Validation: the raw values (file and environment merged) into the resolved [`Config`].
//!
//! Owns: what serde cannot check alone: presence, absolute paths, globs, cross-key rules
//! (retry bounds, overlapping roots), the log filter, and the position or variable each
//! error names. Must not: parse TOML or the environment (`raw`, `env`), or decide where a
//! secret comes from (`secret`); it asks those parts and reports in their words.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::env::env_get;
use super::locate::{file_origin, key_name, Located, Origin, Seg};
use super::raw::{RawConfig, RawDuration, RawRoot, RawServer};
use super::secret::{self, CredentialTable};
use super::url::ServerUrl;
use super::{
    default_state_dir_in, is_root, Config, ConfigError, HashConfig, LogConfig, MirrorConfig,
    RootConfig, ScanConfig, ServerConfig, StateConfig, UploadConfig, WatchConfig,
};

use Seg::{Index as I, Key as K};

/// The `[server]` table, which holds the server's address and one set of credentials.
pub(super) const SERVER: [Seg<'static>; 1] = [K("server")];
const URL: [Seg<'static>; 2] = [K("server"), K("url")];

/// Checks the raw values that serde cannot check alone (presence, paths, cross-key rules,
/// secret sources) and names the file position or variable of each offending key.
pub(super) struct Resolver<'a> {
    pub(super) file: Located<'a>,
    pub(super) env: &'a [(String, String)],
    /// Dotted key → the `IMMISH_SYNC__…` variable that set it.
    pub(super) env_keys: BTreeMap<String, String>,
}

impl Resolver<'_> {
    pub(super) fn resolve(self, raw: RawConfig) -> Result<Config, ConfigError> {
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
                // Zero is allowed here too: a polled root then settles like any other.
                poll_settle: raw.watch.poll_settle.0,
                incomplete_limit: self.nonzero(
                    &[K("watch"), K("incomplete_limit")],
                    raw.watch.incomplete_limit,
                )?,
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
        let url = ServerUrl::parse(url).map_err(|e| self.invalid(&URL, e.to_string()))?;
        let credentials = secret::credentials(self, &CredentialTable::server(s))?;
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
            url,
            credentials,
            ca_file,
            allow_insecure_http: s.allow_insecure_http,
            connect_timeout: self
                .nonzero(&[K("server"), K("connect_timeout")], s.connect_timeout)?,
            stall_timeout: self.nonzero(&[K("server"), K("stall_timeout")], s.stall_timeout)?,
        })
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
            for glob in &r.include {
                if let Err(e) = globset::Glob::new(glob) {
                    return Err(self.invalid(
                        &[K("roots"), I(i), K("include")],
                        format!("invalid glob {glob:?}: {}", e.kind()),
                    ));
                }
            }
            // gitignore lines (docs/ARCHITECTURE.md#filters).
            for (name, lines) in [("exclude", &r.exclude), ("junk_extra", &r.junk_extra)] {
                if let Err(e) = crate::filter::Rules::new(lines) {
                    return Err(self.invalid(&[K("roots"), I(i), K(name)], e));
                }
            }
            let timezone = match r.timezone.as_deref().map(str::trim) {
                None | Some("") => crate::dates::local_zone(),
                Some(name) => jiff::tz::TimeZone::get(name).map_err(|e| {
                    self.invalid(
                        &[K("roots"), I(i), K("timezone")],
                        format!(
                            "unknown time zone {name:?} ({e}); use a name such as \
                             \"Europe/Berlin\" or \"UTC\""
                        ),
                    )
                })?,
            };
            // Overlapping roots would see the same files twice, under two sets of filters.
            // They are compared as written and as resolved, since a symlink can make two
            // different names one folder (a root that does not exist yet resolves to itself).
            let real = real_path(&path);
            for (j, earlier) in roots.iter().enumerate() {
                let earlier_real = real_path(&earlier.path);
                let overlap = |a: &Path, b: &Path| {
                    if a == b {
                        Some("is the same folder as")
                    } else if earlier.recursive && a.starts_with(b) {
                        Some("is inside, and already covered by,")
                    } else if r.recursive && b.starts_with(a) {
                        Some("contains")
                    } else {
                        None
                    }
                };
                let (clash, through) = match overlap(&path, &earlier.path) {
                    Some(c) => (Some(c), String::new()),
                    None => (
                        overlap(&real, &earlier_real),
                        format!(
                            " (through a symlink: they resolve to {} and {})",
                            real.display(),
                            earlier_real.display()
                        ),
                    ),
                };
                if let Some(clash) = clash {
                    return Err(self.invalid(
                        &key,
                        format!(
                            "{} {clash} roots[{j}] ({}){through}; merge them into one root",
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
                skip_junk: r.skip_junk,
                junk_extra: r.junk_extra,
                dates_from_names: r.dates_from_names,
                timezone,
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
    pub(super) fn absolute(&self, key: &[Seg<'_>], value: &str) -> Result<PathBuf, ConfigError> {
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

    pub(super) fn set_by_env(&self, key: &[Seg<'_>]) -> bool {
        self.env_keys.contains_key(&key_name(key))
    }

    /// The variable that set `key` (or the root containing it), else the file position of
    /// the key, or of its section when the key is missing.
    pub(super) fn origin(&self, key: &[Seg<'_>]) -> Origin {
        for n in (1..=key.len()).rev() {
            if let Some(var) = self.env_keys.get(&key_name(&key[..n])) {
                return Origin::Env { var: var.clone() };
            }
        }
        file_origin(self.file.path, self.file.text, self.file.locate(key))
    }

    pub(super) fn invalid(&self, key: &[Seg<'_>], message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin(key),
            key: key_name(key),
            message: message.into(),
        }
    }
}

/// `path` with its symlinks resolved, for the overlap check; as written when it cannot be
/// resolved (not there yet: it is paused at run time, and overlaps only by its name).
fn real_path(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}
