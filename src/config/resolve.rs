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
use super::raw::{RawAlerts, RawConfig, RawDuration, RawMetrics, RawRoot, RawServer};
use super::secret::{self, CredentialTable};
use super::url::ServerUrl;
use super::{
    default_state_dir_in, is_root, AfterUpload, AfterUploadAction, AfterUploadConfig, AlertsConfig,
    Config, ConfigError, HashConfig, LibraryConfig, LogConfig, MetricsConfig, MirrorConfig,
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
        let accounts = self.accounts(&raw.accounts, &server)?;
        self.root_accounts(&roots, &accounts)?;

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

        let metrics = self.metrics(&raw.metrics)?;
        let alerts = self.alerts(&raw.alerts)?;
        let pull = self.pulls(raw.pull, &roots, &accounts)?;

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
                max_rate: u.max_rate.map(|r| r.0),
                windows: crate::windows::Windows(u.windows.iter().map(|w| w.0).collect()),
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
            metrics,
            alerts,
            accounts,
            pull,
        })
    }

    /// `[metrics]`: a loopback address, or any address with `allow_remote` and a token
    /// (the status page names the files backed up: not for the whole network by accident).
    fn metrics(&self, m: &RawMetrics) -> Result<MetricsConfig, ConfigError> {
        let listen_key = [K("metrics"), K("listen")];
        let token_key = [K("metrics"), K("token_file")];
        let token = self.token_file(&token_key, m.token_file.as_deref())?;
        let Some(text) = m.listen.as_deref() else {
            return Ok(MetricsConfig {
                listen: None,
                token,
            });
        };
        let listen: std::net::SocketAddr = text.trim().parse().map_err(|_| {
            self.invalid(
                &listen_key,
                format!(
                    "{text:?} is not an address and port; write e.g. \"127.0.0.1:9464\" \
                     (or \"[::1]:9464\")"
                ),
            )
        })?;
        if !listen.ip().is_loopback() {
            if !m.allow_remote {
                return Err(self.invalid(
                    &listen_key,
                    format!(
                        "{listen} is reachable from other machines, and the status page names \
                         your files; listen on 127.0.0.1, or set metrics.allow_remote = true \
                         together with metrics.token_file"
                    ),
                ));
            }
            if token.is_none() {
                return Err(self.invalid(
                    &token_key,
                    format!(
                        "missing: listening on {listen} (metrics.allow_remote = true) needs a \
                         bearer token; put one in a file (mode 0600) and name it here"
                    ),
                ));
            }
        }
        Ok(MetricsConfig {
            listen: Some(listen),
            token,
        })
    }

    /// `[alerts]`: the URL must be http(s).
    fn alerts(&self, a: &RawAlerts) -> Result<AlertsConfig, ConfigError> {
        let url_key = [K("alerts"), K("url")];
        let url = match a.url.as_deref().map(str::trim) {
            None => None,
            Some(text) => {
                let url = reqwest::Url::parse(text)
                    .map_err(|e| self.invalid(&url_key, format!("{text:?} is not a URL: {e}")))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(self.invalid(
                        &url_key,
                        format!("{text:?}: only http:// and https:// URLs can be notified"),
                    ));
                }
                Some(url)
            }
        };
        Ok(AlertsConfig {
            url,
            kind: a.kind,
            token: self.token_file(&[K("alerts"), K("token_file")], a.token_file.as_deref())?,
            outage_after: self.nonzero(&[K("alerts"), K("outage_after")], a.outage_after)?,
            stalled_after: self.nonzero(&[K("alerts"), K("stalled_after")], a.stalled_after)?,
        })
    }

    /// A token read from a private file (trailing newline dropped); `None` without a file.
    fn token_file(
        &self,
        key: &[Seg<'_>],
        file: Option<&str>,
    ) -> Result<Option<super::Secret>, ConfigError> {
        let Some(file) = file else { return Ok(None) };
        let path = self.absolute(key, file)?;
        let text = secret::read_secret_file(self, key, &path)?;
        let token = text.trim();
        if token.is_empty() {
            return Err(self.invalid(key, format!("{} is empty", path.display())));
        }
        Ok(Some(super::Secret::new(token)))
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
            Some(f) => Some(self.ca_file(&[K("server"), K("ca_file")], f)?),
        };
        Ok(ServerConfig {
            table: key_name(&SERVER),
            url,
            credentials,
            ca_file,
            allow_insecure_http: s.allow_insecure_http,
            connect_timeout: self
                .nonzero(&[K("server"), K("connect_timeout")], s.connect_timeout)?,
            stall_timeout: self.nonzero(&[K("server"), K("stall_timeout")], s.stall_timeout)?,
        })
    }

    /// A `ca_file` (of `[server]` or an `[[accounts]]` table): an absolute path to a file
    /// that exists (its certificates are read when connecting).
    pub(super) fn ca_file(&self, key: &[Seg<'_>], value: &str) -> Result<PathBuf, ConfigError> {
        let ca = self.absolute(key, value)?;
        if !ca.is_file() {
            return Err(self.invalid(
                key,
                format!(
                    "{} does not exist or is not a file; point it at your CA's PEM \
                     certificate, or remove the key",
                    ca.display()
                ),
            ));
        }
        Ok(ca)
    }

    /// A root's album and stack keys: a separator and a fixed album name must say
    /// something, since an album named by blanks is one nobody would find.
    fn library(&self, i: usize, r: &RawRoot) -> Result<LibraryConfig, ConfigError> {
        if r.album_separator.is_empty() {
            return Err(self.invalid(
                &[K("roots"), I(i), K("album_separator")],
                "empty; folder names need something between them, e.g. \" / \"",
            ));
        }
        let album_name = match r.album_name.as_deref().map(str::trim) {
            Some("") => {
                return Err(self.invalid(
                    &[K("roots"), I(i), K("album_name")],
                    "blank; name the album, or leave the key out",
                ))
            }
            Some(n) => Some(n.to_owned()),
            None => None,
        };
        Ok(LibraryConfig {
            album: r.album,
            album_separator: r.album_separator.clone(),
            album_name,
            stacks: r.stacks,
            stack_primary: r.stack_primary,
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
            let library = self.library(i, &r)?;
            let after_upload = self.after_upload(i, &r)?;
            roots.push(RootConfig {
                path,
                recursive: r.recursive,
                include: r.include,
                exclude: r.exclude,
                hidden: r.hidden,
                library,
                skip_junk: r.skip_junk,
                junk_extra: r.junk_extra,
                dates_from_names: r.dates_from_names,
                timezone,
                account: r.account.map(|a| a.trim().to_owned()),
                after_upload,
            });
        }
        for (i, root) in roots.iter().enumerate() {
            if let AfterUploadAction::Archive(dir) = &root.after_upload.action {
                self.archive_outside_roots(i, dir, &roots)?;
            }
        }
        Ok(roots)
    }

    /// A root's `after_upload`, `archive_dir` and `after_upload_linked`
    /// (docs/ARCHITECTURE.md#after-upload).
    fn after_upload(&self, i: usize, r: &RawRoot) -> Result<AfterUploadConfig, ConfigError> {
        let dir_key = [K("roots"), I(i), K("archive_dir")];
        let dir = match r.archive_dir.as_deref().map(str::trim) {
            None => None,
            Some("") => {
                return Err(self.invalid(
                    &dir_key,
                    "blank; name the folder files are moved to, or leave the key out",
                ))
            }
            Some(d) => Some(self.absolute(&dir_key, d)?),
        };
        let action = match (r.after_upload, dir) {
            (AfterUpload::Archive, Some(d)) => AfterUploadAction::Archive(d),
            (AfterUpload::Archive, None) => {
                return Err(self.invalid(
                    &[K("roots"), I(i), K("after_upload")],
                    "\"archive\" needs archive_dir = \"/absolute/folder\" in the same root, \
                     the folder backed-up files are moved to",
                ))
            }
            (other, Some(_)) => {
                return Err(self.invalid(
                    &dir_key,
                    format!(
                        "set, but after_upload is {:?}; archive_dir is only used with \
                         after_upload = \"archive\"",
                        format!("{other:?}").to_ascii_lowercase()
                    ),
                ))
            }
            (AfterUpload::Keep, None) => AfterUploadAction::Keep,
            (AfterUpload::Delete, None) => AfterUploadAction::Delete,
        };
        Ok(AfterUploadConfig {
            action,
            linked: r.after_upload_linked,
        })
    }

    /// An archive folder the scan would walk would have its files found and backed up
    /// again: it must lie outside every root, or inside its own root in a folder the root
    /// does not walk (excluded, hidden, junk). Nor may it hold a root.
    fn archive_outside_roots(
        &self,
        i: usize,
        dir: &Path,
        roots: &[RootConfig],
    ) -> Result<(), ConfigError> {
        let key = [K("roots"), I(i), K("archive_dir")];
        let real = real_path(dir);
        for (j, root) in roots.iter().enumerate() {
            let root_real = real_path(&root.path);
            let holds = root.path.starts_with(dir) || root_real.starts_with(&real);
            if holds {
                return Err(self.invalid(
                    &key,
                    format!(
                        "{} contains roots[{j}] ({}): files moved there could land in a root \
                         and be backed up again; choose a folder outside every root",
                        dir.display(),
                        root.path.display()
                    ),
                ));
            }
            // The path as written, else as resolved (a symlink into the root).
            let rel = dir
                .strip_prefix(&root.path)
                .or_else(|_| real.strip_prefix(&root_real))
                .map(Path::to_path_buf);
            let Ok(rel) = rel else {
                continue;
            };
            let walked = crate::scan::walk::Root::new(root)
                .map_or(true, |r| r.may_hold(&root.path.join(&rel)));
            if walked || j != i {
                return Err(self.invalid(
                    &key,
                    format!(
                        "{} is inside roots[{j}] ({}), whose scan would back its files up \
                         again; choose a folder outside every root, or exclude it in its own \
                         root (exclude = [\"/{}/\"])",
                        dir.display(),
                        root.path.display(),
                        rel.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `[[pull]]` tables (docs/ARCHITECTURE.md#pull): an absolute folder that overlaps no
    /// root (its copies would be uploaded again, or a root's files overwritten) and no other
    /// pull folder, an account this config has, and a layout that names each file.
    fn pulls(
        &self,
        raw: Vec<super::raw::RawPull>,
        roots: &[RootConfig],
        accounts: &[super::AccountConfig],
    ) -> Result<Vec<super::PullConfig>, ConfigError> {
        let mut pulls: Vec<super::PullConfig> = Vec::with_capacity(raw.len());
        for (i, p) in raw.into_iter().enumerate() {
            let key = [K("pull"), I(i), K("path")];
            let path = match p.path.as_deref() {
                Some(v) if !v.trim().is_empty() => self.absolute(&key, v)?,
                _ => {
                    return Err(self.invalid(
                        &key,
                        "missing; every [[pull]] needs path = \"/absolute/folder\"",
                    ))
                }
            };
            let account = match p.account.as_deref().map(str::trim) {
                None | Some("default") => None,
                Some(name) if accounts.iter().any(|a| a.name == name) => Some(name.to_owned()),
                Some(name) => {
                    let known: Vec<String> =
                        accounts.iter().map(|a| format!("{:?}", a.name)).collect();
                    return Err(self.invalid(
                        &[K("pull"), I(i), K("account")],
                        format!(
                            "{name:?} is not an account of this config; the accounts are \
                             \"default\" ([server]'s){}{}",
                            if known.is_empty() { "" } else { ", " },
                            known.join(", ")
                        ),
                    ));
                }
            };
            let layout = crate::originals::layout::Layout::parse(&p.layout)
                .map_err(|e| self.invalid(&[K("pull"), I(i), K("layout")], e))?;
            let real = real_path(&path);
            let through = |other: &Path, other_real: &Path| {
                let inside = |a: &Path, b: &Path| a.starts_with(b) || b.starts_with(a);
                if inside(&path, other) {
                    Some(String::new())
                } else if inside(&real, other_real) {
                    Some(format!(
                        " (through a symlink: they resolve to {} and {})",
                        real.display(),
                        other_real.display()
                    ))
                } else {
                    None
                }
            };
            for (j, root) in roots.iter().enumerate() {
                if let Some(how) = through(&root.path, &real_path(&root.path)) {
                    return Err(self.invalid(
                        &key,
                        format!(
                            "{} overlaps roots[{j}] ({}){how}: the copies it pulls would be \
                             uploaded again, or a backed-up folder written into; choose a \
                             folder outside every root",
                            path.display(),
                            root.path.display()
                        ),
                    ));
                }
            }
            for (j, other) in pulls.iter().enumerate() {
                if let Some(how) = through(&other.path, &real_path(&other.path)) {
                    return Err(self.invalid(
                        &key,
                        format!(
                            "{} overlaps pull[{j}] ({}){how}: two pulls would write the same \
                             files; give each its own folder",
                            path.display(),
                            other.path.display()
                        ),
                    ));
                }
            }
            pulls.push(super::PullConfig {
                path,
                account,
                layout,
                on_server_delete: p.on_server_delete,
                deleted_keep: Duration::from_secs(u64::from(p.deleted_keep_days) * 86_400),
                max_rate: p.max_rate.map(|r| r.0),
            });
        }
        Ok(pulls)
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

    pub(super) fn nonzero(&self, key: &[Seg<'_>], d: RawDuration) -> Result<Duration, ConfigError> {
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
