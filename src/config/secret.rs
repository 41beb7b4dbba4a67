//! Secrets: the [`Secret`] type, where a credential comes from (systemd credential, key
//! file, environment, inline), and the permission checks that keep it private.
//!
//! Owns: the order of the API key's sources, the rule "exactly one way to log in", reading
//! the small secret files, and refusing a secret that other users can read: a config file
//! holding one inline, or an `api_key_file`/`password_file` (a systemd credential is exempt). Must not: show a secret in any message or `Debug`, or know which
//! table it resolves: [`credentials`] takes one [`CredentialTable`], so each of several
//! accounts can be resolved the same way.

use std::fmt;
use std::io::Read;
use std::path::Path;

use super::env::env_get;
use super::locate::{key_name, Located, Origin, Seg};
use super::raw::{RawSecret, RawServer};
use super::resolve::{Resolver, SERVER};
use super::{ConfigError, Credentials, API_KEY_CREDENTIAL};

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

/// The credential keys of one table: `[server]` today. The names are the same in every
/// table that can hold credentials, so that a later `[[accounts]]` table is resolved by the
/// same [`credentials`] call.
pub(super) struct CredentialTable<'a> {
    /// Where the table is, e.g. `[K("server")]`; every key named in an error is under it.
    pub(super) path: &'a [Seg<'a>],
    pub(super) api_key: Option<&'a RawSecret>,
    pub(super) api_key_file: Option<&'a str>,
    pub(super) email: Option<&'a str>,
    pub(super) password: Option<&'a RawSecret>,
    pub(super) password_file: Option<&'a str>,
    /// The systemd credential (in `$CREDENTIALS_DIRECTORY`) that, when loaded, is this
    /// table's API key before any other source.
    pub(super) systemd_credential: Option<&'a str>,
}

impl<'a> CredentialTable<'a> {
    pub(super) fn server(s: &'a RawServer) -> CredentialTable<'a> {
        CredentialTable {
            path: &SERVER,
            api_key: s.api_key.as_ref(),
            api_key_file: s.api_key_file.as_deref(),
            email: s.email.as_deref(),
            password: s.password.as_ref(),
            password_file: s.password_file.as_deref(),
            systemd_credential: Some(API_KEY_CREDENTIAL),
        }
    }

    /// The path of the key `name` in this table.
    fn key(&self, name: &'a str) -> Vec<Seg<'a>> {
        let mut path = self.path.to_vec();
        path.push(Seg::Key(name));
        path
    }
}

/// Exactly one way to log in; for an API key the first source present wins: the table's
/// systemd credential, `api_key_file`, the `IMMISH_SYNC__…__API_KEY` variable, `api_key`.
pub(super) fn credentials(
    r: &Resolver<'_>,
    t: &CredentialTable<'_>,
) -> Result<Credentials, ConfigError> {
    let systemd = t.systemd_credential.and_then(|name| {
        env_get(r.env, "CREDENTIALS_DIRECTORY")
            .map(|dir| (name, Path::new(dir).join(name)))
            .filter(|(_, p)| p.exists())
    });
    let (api_key, api_key_file) = (t.key("api_key"), t.key("api_key_file"));
    let (email, password, password_file) =
        (t.key("email"), t.key("password"), t.key("password_file"));
    let key_given = t.api_key.is_some() || t.api_key_file.is_some();
    let login_key = [
        (&email, t.email.is_some()),
        (&password, t.password.is_some()),
        (&password_file, t.password_file.is_some()),
    ]
    .into_iter()
    .find_map(|(path, given)| given.then_some(path));

    if let Some(login_key) = login_key {
        if key_given {
            return Err(r.invalid(
                login_key,
                "an API key (api_key or api_key_file) is set too; set either an API key \
                 or a login (email + password_file), not both",
            ));
        }
        if let Some((name, _)) = systemd {
            return Err(r.invalid(
                login_key,
                format!(
                    "a systemd credential {name} (an API key) is loaded too; remove \
                     LoadCredential= from the unit, or remove the login keys"
                ),
            ));
        }
        let email = match t.email.map(str::trim) {
            Some(email) if !email.is_empty() => email.to_owned(),
            _ => {
                return Err(r.invalid(
                    &email,
                    "missing; a password login needs email and password_file (or password)",
                ))
            }
        };
        return Ok(Credentials::Password {
            email,
            password: login_password(r, t)?,
        });
    }

    // Two inline-or-file sources in the same file are a mistake; across layers, the order
    // above decides.
    if r.file.has(&api_key) && r.file.has(&api_key_file) && !r.set_by_env(&api_key) {
        return Err(r.invalid(
            &api_key,
            "set only one of api_key and api_key_file (api_key_file is better: it keeps \
             the key out of this file)",
        ));
    }
    let key = if let Some((name, path)) = systemd {
        let origin = Origin::Env {
            var: "CREDENTIALS_DIRECTORY".to_owned(),
        };
        let key = format!("systemd credential {name}");
        let text = read_secret(origin.clone(), &key, &path)?;
        nonempty_secret(text.trim(), || ConfigError::Invalid {
            origin,
            key,
            message: format!("{} is empty", path.display()),
        })?
    } else if let Some(file) = t.api_key_file {
        let path = r.absolute(&api_key_file, file)?;
        let text = read_secret_file(r, &api_key_file, &path)?;
        nonempty_secret(text.trim(), || {
            r.invalid(
                &api_key_file,
                format!("{} is empty; put the API key in it", path.display()),
            )
        })?
    } else if let Some(inline) = t.api_key {
        nonempty_secret(inline.0.trim(), || r.invalid(&api_key, "is empty"))?
    } else {
        return Err(r.invalid(t.path, no_credentials(t)));
    };
    Ok(Credentials::ApiKey(key))
}

/// What to write when a table has no credentials at all.
fn no_credentials(t: &CredentialTable<'_>) -> String {
    let env_var = env_var_name(&t.key("api_key"));
    let systemd = match t.systemd_credential {
        Some(name) => format!(", or load a systemd credential named {name}"),
        None => String::new(),
    };
    format!(
        "no credentials; under [{}] set api_key_file = \"/etc/immish-sync/api-key\" (or \
         api_key, or email + password_file), or set {env_var}{systemd}",
        key_name(t.path)
    )
}

/// The `IMMISH_SYNC__…` variable that sets `key` (`IMMISH_SYNC__SERVER__API_KEY`).
fn env_var_name(key: &[Seg<'_>]) -> String {
    let parts: Vec<String> = key
        .iter()
        .map(|seg| match seg {
            Seg::Key(k) => k.to_ascii_uppercase(),
            Seg::Index(i) => i.to_string(),
        })
        .collect();
    format!("{}{}", super::ENV_PREFIX, parts.join("__"))
}

/// The password of a login: `password_file`, else `password`.
fn login_password(r: &Resolver<'_>, t: &CredentialTable<'_>) -> Result<Secret, ConfigError> {
    let (password, password_file) = (t.key("password"), t.key("password_file"));
    if r.file.has(&password) && r.file.has(&password_file) && !r.set_by_env(&password) {
        return Err(r.invalid(
            &password,
            "set only one of password and password_file (password_file is better: it \
             keeps the password out of this file)",
        ));
    }
    if let Some(file) = t.password_file {
        let path = r.absolute(&password_file, file)?;
        let text = read_secret_file(r, &password_file, &path)?;
        // Only the line ending an editor adds is removed: a password may well start or
        // end with a space.
        let value = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text);
        return nonempty_secret(value, || {
            r.invalid(&password_file, format!("{} is empty", path.display()))
        });
    }
    match t.password {
        Some(inline) => nonempty_secret(&inline.0, || r.invalid(&password, "is empty")),
        None => Err(r.invalid(
            &password_file,
            "missing; a password login needs password_file (or password)",
        )),
    }
}

/// Reads a secret file the config names at `key` (`api_key_file`, `password_file`). Like a
/// config file holding the secret inline, it must not be open to users other than its
/// owner; a systemd credential is exempt, because systemd itself keeps it private to the
/// service (and decides its mode).
pub(super) fn read_secret_file(
    r: &Resolver<'_>,
    key: &[Seg<'_>],
    path: &Path,
) -> Result<String, ConfigError> {
    let origin = r.origin(key);
    let name = key_name(key);
    let unreadable = |error| ConfigError::SecretFile {
        origin: origin.clone(),
        key: name.clone(),
        path: path.to_owned(),
        error,
    };
    // The mode is read from the open file, so that it is the mode of what is read.
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    if !is_systemd_credential(r.env, path) {
        let metadata = file.metadata().map_err(unreadable)?;
        if let Some(mode) = open_to_others(&metadata) {
            return Err(ConfigError::InsecureSecretFile {
                origin,
                key: name,
                path: path.to_owned(),
                mode,
            });
        }
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(unreadable)?;
    Ok(text)
}

/// Whether `path` is inside `$CREDENTIALS_DIRECTORY` (after resolving symlinks and `..`).
fn is_systemd_credential(env: &[(String, String)], path: &Path) -> bool {
    let Some(dir) = env_get(env, "CREDENTIALS_DIRECTORY") else {
        return false;
    };
    match (std::fs::canonicalize(dir), std::fs::canonicalize(path)) {
        (Ok(dir), Ok(path)) => path.starts_with(dir),
        _ => false,
    }
}

/// The permission bits of a regular file that group or others have any access to. (A
/// directory is left for the read to refuse, with its own message.)
#[cfg(unix)]
fn open_to_others(metadata: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode();
    (metadata.is_file() && mode & 0o077 != 0).then_some(mode & 0o7777)
}

#[cfg(not(unix))]
fn open_to_others(_metadata: &std::fs::Metadata) -> Option<u32> {
    None
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

// ---------------------------------------------------------------------------------------------
// The config file's own permissions
// ---------------------------------------------------------------------------------------------

/// Refuses a config file that holds `api_key` or `password` inline in the table at `table`
/// when users other than its owner can read it.
pub(super) fn check_inline_secrets(
    file: &Located<'_>,
    table: &[Seg<'_>],
) -> Result<(), ConfigError> {
    let inline = ["api_key", "password"].into_iter().find(|name| {
        let mut path = table.to_vec();
        path.push(Seg::Key(name));
        file.has(&path)
    });
    let Some(name) = inline else { return Ok(()) };
    check_private(file.path, format!("{}.{name}", key_name(table)))
}

#[cfg(unix)]
fn check_private(path: &Path, key: String) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|error| ConfigError::SecretFile {
            origin: Origin::File {
                path: path.to_owned(),
                position: None,
            },
            key: key.clone(),
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
fn check_private(_path: &Path, _key: String) -> Result<(), ConfigError> {
    Ok(())
}
