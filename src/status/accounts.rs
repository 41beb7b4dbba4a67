//! The other accounts in `status` (docs/STATUS.md#accounts): each `[[accounts]]` entry with
//! state under `<state dir>/accounts/<name>/` is read like the state directory itself.

use std::fmt::Write;
use std::path::Path;

use serde::Serialize;

use super::Status;
use crate::db::DbError;

/// One other account's status: its name, and every field of [`Status`] for its state.
#[derive(Clone, Debug, Serialize)]
pub struct AccountStatus {
    pub name: String,
    #[serde(flatten)]
    pub status: Status,
}

/// The accounts with state under `state_dir`, by name.
pub(super) fn read(state_dir: &Path) -> Result<Vec<AccountStatus>, DbError> {
    let dir = state_dir.join(crate::daemon::ACCOUNTS_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        if let Some(status) = super::read(&dir.join(&name))? {
            out.push(AccountStatus { name, status });
        }
    }
    Ok(out)
}

/// Each account's text after `[server]`'s, indented under its name.
pub(super) fn render(accounts: &[AccountStatus], out: &mut String) {
    for a in accounts {
        let _ = writeln!(out, "\naccount {}:", a.name);
        for line in a.status.render().lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
}
