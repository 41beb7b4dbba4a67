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

/// The accounts with state under `state_dir`, by name. One whose state cannot be read (its
/// database broken) is there with its `error`: one account's trouble is its own.
pub(super) fn read(state_dir: &Path) -> Vec<AccountStatus> {
    let dir = state_dir.join(crate::daemon::ACCOUNTS_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        match super::read_one(&dir.join(&name)) {
            Ok(Some(status)) => out.push(AccountStatus { name, status }),
            Ok(None) => {}
            Err(e) => out.push(AccountStatus {
                name,
                status: unreadable(&e),
            }),
        }
    }
    out
}

/// The status of an account whose state could not be read: empty, with why.
pub(super) fn unreadable(e: &DbError) -> Status {
    let mut s = Status::empty();
    s.server = None;
    s.error = Some(e.to_string());
    s
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
