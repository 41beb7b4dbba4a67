//! The control commands with `[[accounts]]` (docs/ARCHITECTURE.md#accounts): which
//! accounts' state and sockets `pause`, `resume`, `rescan` and `retry` address. With
//! `--root`, the root's account; with `--account`, that one; with neither, every account.
//! Each account is then told exactly as a single-account daemon is (its own state database
//! and `control.sock`), and its lines are named after it.

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{configured_root, CommandError};
use crate::config::{Config, DEFAULT_ACCOUNT};
use crate::daemon::{project, ACCOUNTS_DIR};

/// One account a command goes to.
#[derive(Debug)]
pub struct Target {
    /// The account's name when the config has `[[accounts]]` (`default` for `[server]`'s);
    /// `None` without them, so that a single-account config prints what it printed before.
    pub label: Option<String>,
    /// The account's view of the config: its state directory and its roots.
    pub config: Config,
    /// The configured root asked for, if one was.
    pub root: Option<PathBuf>,
}

impl Target {
    /// `lines`, each named after the account when there are several.
    pub fn name_lines(&self, lines: Vec<String>) -> Vec<String> {
        match &self.label {
            None => lines,
            Some(a) => lines
                .into_iter()
                .map(|l| format!("account {a}: {l}"))
                .collect(),
        }
    }
}

/// `--account` as the projection names it: `None` for `[server]`'s.
fn account_of(config: &Config, name: &str) -> Result<Option<String>, CommandError> {
    if name == DEFAULT_ACCOUNT {
        return Ok(None);
    }
    if config.accounts.iter().any(|a| a.name == name) {
        return Ok(Some(name.to_owned()));
    }
    let known: Vec<&str> = std::iter::once(DEFAULT_ACCOUNT)
        .chain(config.accounts.iter().map(|a| a.name.as_str()))
        .collect();
    Err(CommandError::NotAnAccount(
        name.to_owned(),
        source_of(config),
        known.join(", "),
    ))
}

fn source_of(config: &Config) -> String {
    config
        .source
        .as_ref()
        .map_or("no file".to_owned(), |p| p.display().to_string())
}

/// The accounts `--account` and `--root` pick out of `config` (see the module docs).
pub fn targets(
    config: &Config,
    account: Option<&str>,
    root: Option<&Path>,
) -> Result<Vec<Target>, CommandError> {
    let asked = account.map(|a| account_of(config, a)).transpose()?;
    let root = root.map(|r| configured_root(config, r)).transpose()?;
    let names: Vec<Option<String>> = match (&root, asked) {
        (Some(r), asked) => {
            let of_root = config
                .roots
                .iter()
                .find(|c| &c.path == r)
                .and_then(|c| c.account.clone());
            if let Some(asked) = asked {
                if asked != of_root {
                    return Err(CommandError::OtherAccount(
                        r.display().to_string(),
                        of_root.as_deref().unwrap_or(DEFAULT_ACCOUNT).to_owned(),
                        asked.as_deref().unwrap_or(DEFAULT_ACCOUNT).to_owned(),
                    ));
                }
            }
            vec![of_root]
        }
        (None, Some(asked)) => vec![asked],
        (None, None) => std::iter::once(None)
            .chain(config.accounts.iter().map(|a| Some(a.name.clone())))
            .collect(),
    };
    let several = !config.accounts.is_empty();
    Ok(names
        .into_iter()
        .filter_map(|name| {
            let c = project(config, name.as_deref())?;
            Some(Target {
                label: several.then(|| name.unwrap_or_else(|| DEFAULT_ACCOUNT.to_owned())),
                config: c,
                root: root.clone(),
            })
        })
        .collect())
}

/// The folder of the other accounts' state, made as private as the daemon makes it, before
/// a command writes an account's pause there ahead of its daemon's first start.
fn accounts_folder(config: &Config) -> Result<(), CommandError> {
    if config.accounts.is_empty() {
        return Ok(());
    }
    let dir = config.state.dir.join(ACCOUNTS_DIR);
    if dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::set_permissions(&dir, Permissions::from_mode(0o700)))
        .map_err(|e| CommandError::StateDir(dir.display().to_string(), e))
}

/// Runs one single-account command for each account it goes to, and names each account's
/// lines.
async fn each<F, Fut>(
    config: &Config,
    account: Option<&str>,
    root: Option<&Path>,
    command: F,
) -> Result<Vec<String>, CommandError>
where
    F: Fn(Config, Option<PathBuf>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<String>, CommandError>>,
{
    let mut lines = Vec::new();
    for t in targets(config, account, root)? {
        let l = command(t.config.clone(), t.root.clone()).await?;
        lines.extend(t.name_lines(l));
    }
    Ok(lines)
}

/// `pause [--account NAME] [--root PATH]`: the lines to print.
pub async fn pause(
    config: &Config,
    account: Option<&str>,
    root: Option<&Path>,
) -> Result<Vec<String>, CommandError> {
    accounts_folder(config)?;
    each(config, account, root, |c, r| async move {
        super::pause(&c, r.as_deref()).await
    })
    .await
}

/// `resume [--account NAME] [--root PATH]`: the lines to print.
pub async fn resume(
    config: &Config,
    account: Option<&str>,
    root: Option<&Path>,
) -> Result<Vec<String>, CommandError> {
    accounts_folder(config)?;
    each(config, account, root, |c, r| async move {
        super::resume(&c, r.as_deref()).await
    })
    .await
}

/// `rescan [--account NAME] [--root PATH]`: the lines to print.
pub async fn rescan(
    config: &Config,
    account: Option<&str>,
    root: Option<&Path>,
) -> Result<Vec<String>, CommandError> {
    each(config, account, root, |c, r| async move {
        super::rescan(&c, r.as_deref()).await
    })
    .await
}
