//! `immish-sync init`: the server URL, the API key and the folders, asked on a terminal or
//! taken from flags; checked against the server; then the config written, private and
//! atomically, with the key in a file of its own.
//!
//! Order matters: nothing is written until the server has accepted the key (a refused key
//! leaves the disk as it was), and an existing config is replaced only with `--force`.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::api::{ApiClient, ApiError, ErrorClass};
use crate::config::{self, ConfigError, ServerUrl, ENV_PREFIX};

use super::term::{self, Ask};
use super::{key_power_advice, missing_least_privilege};

/// The name of the key file written beside the config when the key was typed or piped.
pub const KEY_FILE_NAME: &str = "api-key";

/// What `init` was given on the command line.
#[derive(Clone, Debug, Default)]
pub struct InitArgs {
    /// Where to write the config.
    pub config: PathBuf,
    pub url: Option<String>,
    /// A file holding the key, referenced as it is; `-` reads the key from stdin and copies
    /// it beside the config.
    pub api_key_file: Option<PathBuf>,
    pub roots: Vec<PathBuf>,
    pub state_dir: Option<PathBuf>,
    /// Replace an existing config (and key file).
    pub force: bool,
}

/// Why `init` wrote nothing, or could not finish writing.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(
        "{} already exists; it is left as it is. Pass --force to replace it, or --config \
         PATH to write another",
        .0.display()
    )]
    Exists(PathBuf),
    #[error("no {what} given: pass {flag} (stdin is not a terminal, so init cannot ask)")]
    Missing {
        what: &'static str,
        flag: &'static str,
    },
    #[error("{flag}: {message}")]
    Invalid { flag: &'static str, message: String },
    /// The settings do not make a valid config (overlapping roots, a key file open to
    /// others…); the message is config's own.
    #[error("the settings do not make a valid config: {0}")]
    Config(Box<ConfigError>),
    #[error("cannot read the answer: {0}")]
    Ask(io::Error),
    #[error("the server refused the API key, so nothing was written: {0}")]
    Refused(Box<ApiError>),
    #[error("cannot reach the server, so nothing was written: {0}")]
    Unreachable(Box<ApiError>),
    #[error("cannot write {}: {source}", .path.display())]
    Write { path: PathBuf, source: io::Error },
    /// The config was written but does not load: a bug, said as such.
    #[error("wrote {} but it does not load (please report this): {error}", .path.display())]
    Verify {
        path: PathBuf,
        error: Box<ConfigError>,
    },
}

impl InitError {
    /// The process exit code: 3 when the server refused or was not reached (as for every
    /// command), 2 for a missing or invalid setting, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            InitError::Refused(_) | InitError::Unreachable(_) => 3,
            InitError::Missing { .. } | InitError::Invalid { .. } | InitError::Config(_) => 2,
            _ => 1,
        }
    }
}

/// Where the key comes from.
enum KeySource {
    /// A file the user already has: referenced as it is.
    File(PathBuf),
    /// Typed or piped: copied into a private file beside the config.
    Given(String),
}

/// Runs `init`: asks what is missing (when stdin is a terminal), checks the server and the
/// key, writes the config and tells what to run next on `out`.
pub async fn run(args: InitArgs, out: &mut dyn Write) -> Result<(), InitError> {
    let interactive = term::stdin_is_terminal();
    let config_path = absolute(&args.config, "--config")?;
    let config_dir = config_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    if config_path.exists() && !args.force {
        return Err(InitError::Exists(config_path));
    }

    let mut ask = Ask {
        input: io::stdin().lock(),
        out: io::stderr(),
    };

    let url = match &args.url {
        Some(u) => parse_url(u)?,
        None if interactive => loop {
            let answer = ask
                .line("Server URL (the address of the Immich web page)", None)
                .map_err(InitError::Ask)?;
            match parse_url(&answer) {
                Ok(url) => break url,
                Err(e) => {
                    let _ = writeln!(ask.out, "  {e}");
                }
            }
        },
        None => {
            return Err(InitError::Missing {
                what: "server URL",
                flag: "--url",
            })
        }
    };

    let key = match &args.api_key_file {
        Some(p) if p.as_os_str() == "-" => {
            let mut text = String::new();
            // Through the lock `ask` already holds: stdin's lock is not reentrant.
            ask.input
                .read_to_string(&mut text)
                .map_err(InitError::Ask)?;
            KeySource::Given(nonempty_key(text.trim(), "--api-key-file -")?)
        }
        Some(p) => KeySource::File(absolute(p, "--api-key-file")?),
        None if interactive => {
            let typed = term::read_secret_line(
                &mut ask.input,
                "API key (Immich: Account settings → API keys; not shown as you type)",
            )
            .map_err(InitError::Ask)?;
            KeySource::Given(nonempty_key(&typed, "the API key")?)
        }
        None => {
            return Err(InitError::Missing {
                what: "API key",
                flag: "--api-key-file PATH (or - to read it from stdin)",
            })
        }
    };
    let key_file = match &key {
        KeySource::File(p) => p.clone(),
        KeySource::Given(_) => config_dir.join(KEY_FILE_NAME),
    };
    if matches!(key, KeySource::Given(_)) && key_file.exists() && !args.force {
        return Err(InitError::Exists(key_file));
    }

    let roots = if !args.roots.is_empty() {
        args.roots.clone()
    } else if interactive {
        ask.list(
            "Folder to back up (absolute path)",
            "Another folder (Enter when done)",
        )
        .map_err(InitError::Ask)?
        .into_iter()
        .map(PathBuf::from)
        .collect()
    } else {
        return Err(InitError::Missing {
            what: "folder to back up",
            flag: "--root PATH (repeatable)",
        });
    };
    let roots = roots
        .iter()
        .map(|r| absolute(&expand_home(r), "--root"))
        .collect::<Result<Vec<_>, _>>()?;

    let state_dir = match &args.state_dir {
        Some(d) => Some(absolute(&expand_home(d), "--state-dir")?),
        None if interactive => {
            let default = config::default_state_dir();
            let answer = ask
                .line(
                    "State directory (the database)",
                    Some(&default.display().to_string()),
                )
                .map_err(InitError::Ask)?;
            let chosen = absolute(&expand_home(Path::new(&answer)), "--state-dir")?;
            // The default is left out of the file, so that a service manager's
            // StateDirectory= still decides it.
            (chosen != default).then_some(chosen)
        }
        None => None,
    };

    // The config as it will be, checked by config itself before anything is written. A
    // typed key is not on disk yet, so the draft takes it from the variable config reads
    // anyway; the process's own IMMISH_SYNC__* variables are left out (they are not part
    // of what is written).
    let final_text = render(&url, &key_file, state_dir.as_deref(), &roots);
    let (draft_text, key_env) = match &key {
        KeySource::File(_) => (final_text.clone(), None),
        KeySource::Given(k) => (
            render_without_key(&url, state_dir.as_deref(), &roots),
            Some(k.clone()),
        ),
    };
    let draft = config::load_from_str(&draft_text, &config_path, &draft_env(key_env)).map_err(
        |e| match e {
            ConfigError::Invalid { ref key, .. } if key == "server.url" => InitError::Invalid {
                flag: "--url",
                message: e.to_string(),
            },
            e => InitError::Config(Box::new(e)),
        },
    )?;

    let _ = writeln!(ask.out, "checking {} …", draft.server.url);
    let api = ApiClient::connect(&draft.server).await.map_err(classify)?;
    let version = api
        .server_version()
        .await
        .unwrap_or_else(|_| "unknown version".to_owned());

    // Only now, with the key accepted, is anything written.
    create_parent(&config_path)?;
    let mut wrote_key = false;
    if let KeySource::Given(k) = &key {
        write_private(&key_file, format!("{k}\n").as_bytes())?;
        wrote_key = true;
    }
    write_private(&config_path, final_text.as_bytes())?;
    let written = config::load(&config_path).map_err(|error| InitError::Verify {
        path: config_path.clone(),
        error: Box::new(error),
    })?;

    let say = |out: &mut dyn Write, s: String| {
        let _ = writeln!(out, "{s}");
    };
    say(
        out,
        format!(
            "server {} (version {version}, {:?} dialect): the key is accepted",
            api.api_root(),
            api.dialect()
        ),
    );
    match api.api_key_permissions() {
        Some(p) => {
            if let Some(advice) = key_power_advice(p) {
                say(out, format!("note: {advice}"));
            }
            let library = crate::setup::missing_for_library(p, &written.roots);
            if !library.is_empty() {
                let uses: Vec<String> = library
                    .iter()
                    .map(|(p, why)| format!("{p} ({why})"))
                    .collect();
                say(
                    out,
                    format!(
                        "note: the key lacks {}: uploads work, but these are left undone; \
                         add them to the key",
                        uses.join(", ")
                    ),
                );
            }
            let missing = missing_least_privilege(p);
            if !missing.is_empty() {
                say(
                    out,
                    format!(
                        "note: the key lacks {}: partner assets cannot be told from your own \
                         in the mirror; add it to the key",
                        missing.join(", ")
                    ),
                );
            }
        }
        None => say(
            out,
            "note: the server does not say what the key may do; immish-sync will find out"
                .to_owned(),
        ),
    }
    say(out, format!("wrote {} (mode 0600)", config_path.display()));
    if wrote_key {
        say(
            out,
            format!("wrote the API key to {} (mode 0600)", key_file.display()),
        );
    }
    for r in &roots {
        if !r.is_dir() {
            say(
                out,
                format!(
                    "note: {} is not a folder (yet); it is paused until it is there",
                    r.display()
                ),
            );
        }
    }
    let flag = if config_path == config::default_config_path() {
        String::new()
    } else {
        format!(" --config {}", config_path.display())
    };
    say(out, "next:".to_owned());
    say(
        out,
        format!("  immish-sync{flag} check-config      # what it will back up, and where"),
    );
    say(
        out,
        format!("  immish-sync{flag} scan              # a first backup, then exit"),
    );
    say(
        out,
        format!("  immish-sync{flag} run               # keep watching, in the foreground"),
    );
    say(
        out,
        format!("  immish-sync{flag} service install   # or start it at boot (--user for yours)"),
    );
    say(
        out,
        format!("  immish-sync{flag} doctor            # if anything looks wrong"),
    );
    Ok(())
}

fn classify(e: ApiError) -> InitError {
    match (&e, e.class()) {
        (ApiError::Config { .. }, _) => InitError::Invalid {
            flag: "--url",
            message: e.to_string(),
        },
        (ApiError::MissingPermissions { .. }, _) | (_, ErrorClass::Auth) => {
            InitError::Refused(Box::new(e))
        }
        _ if e.status() == Some(403) => InitError::Refused(Box::new(e)),
        _ => InitError::Unreachable(Box::new(e)),
    }
}

fn parse_url(text: &str) -> Result<ServerUrl, InitError> {
    ServerUrl::parse(text).map_err(|e| InitError::Invalid {
        flag: "--url",
        message: format!("{text:?} {e}"),
    })
}

fn nonempty_key(key: &str, what: &'static str) -> Result<String, InitError> {
    if key.is_empty() {
        return Err(InitError::Invalid {
            flag: what,
            message: "the API key is empty".to_owned(),
        });
    }
    Ok(key.to_owned())
}

/// `~/x` as `$HOME/x`, as the config reads it.
fn expand_home(p: &Path) -> PathBuf {
    match (p.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => Path::new(&home).join(rest),
        _ => p.to_path_buf(),
    }
}

/// A path made absolute against the working directory (the config only takes absolute
/// paths, and a relative one typed at a prompt means "here").
fn absolute(p: &Path, flag: &'static str) -> Result<PathBuf, InitError> {
    std::path::absolute(p).map_err(|e| InitError::Invalid {
        flag,
        message: format!("{}: {e}", p.display()),
    })
}

/// The environment the draft is checked with: the process's, minus what would change the
/// answer without being written (`IMMISH_SYNC__*`, a systemd credential), plus the typed key.
fn draft_env(key: Option<String>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| {
            !k.to_ascii_uppercase().starts_with(ENV_PREFIX) && k != "CREDENTIALS_DIRECTORY"
        })
        .collect();
    if let Some(key) = key {
        env.push((format!("{ENV_PREFIX}SERVER__API_KEY"), key));
    }
    env
}

/// A TOML basic string, escaped.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn render(url: &ServerUrl, key_file: &Path, state: Option<&Path>, roots: &[PathBuf]) -> String {
    render_with(url, Some(key_file), state, roots)
}

fn render_without_key(url: &ServerUrl, state: Option<&Path>, roots: &[PathBuf]) -> String {
    render_with(url, None, state, roots)
}

fn render_with(
    url: &ServerUrl,
    key_file: Option<&Path>,
    state: Option<&Path>,
    roots: &[PathBuf],
) -> String {
    let mut t = String::from(
        "# Written by `immish-sync init`. Every key not set here takes its default; \
         config.example.toml lists them all.\n\n[server]\n",
    );
    t.push_str(&format!("url = {}\n", quote(&url.to_string())));
    if let Some(k) = key_file {
        t.push_str(&format!("api_key_file = {}\n", quote(&k.to_string_lossy())));
    }
    if let Some(s) = state {
        t.push_str(&format!(
            "\n[state]\ndir = {}\n",
            quote(&s.to_string_lossy())
        ));
    }
    for r in roots {
        t.push_str(&format!(
            "\n[[roots]]\npath = {}\n",
            quote(&r.to_string_lossy())
        ));
    }
    t
}

fn create_parent(path: &Path) -> Result<(), InitError> {
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    std::fs::create_dir_all(dir).map_err(|source| InitError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `bytes` to `path` with mode 0600 from the first byte: a temporary file beside it,
/// synced, then renamed over it, so that a reader sees the old file or the new one, never
/// half of one, and never a moment where the secret is readable by others.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), InitError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| InitError::Write {
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename is durable once the directory is synced.
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_text_escapes_paths_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k\"ey");
        std::fs::write(&key, "secret\n").unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let url = ServerUrl::parse("http://127.0.0.1:1/api/").unwrap();
        let root = dir.path().join("photos \\ \"2024\"");
        let text = render(
            &url,
            &key,
            Some(&dir.path().join("state")),
            std::slice::from_ref(&root),
        );
        let c = config::load_from_str(&text, &dir.path().join("config.toml"), &[]).unwrap();
        assert_eq!(c.roots[0].path, root);
        assert_eq!(c.state.dir, dir.path().join("state"));
        assert_eq!(c.server.url.to_string(), "http://127.0.0.1:1");
    }

    #[test]
    fn private_writes_replace_atomically_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, "old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&p, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left behind");
    }
}
