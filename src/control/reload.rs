//! SIGHUP: what a new config changes in a running daemon (docs/ARCHITECTURE.md#reload).
//!
//! Owns: comparing the running config with the new one, section by section, into what the
//! daemon applies by starting a new generation of its task tree (roots and their globs,
//! `[scan]`, `[watch]`, `[hash]`, `[upload]` but its device id, `[mirror]`) and what only a
//! restart applies (`[server]`, `[state]`, `[log]`, `upload.device_id`).
//!
//! Must not: read the file (main does, with the same checks as at start, so a broken file
//! is refused before it gets here) or touch the running parts.

use crate::config::{Config, RootConfig};
use crate::scan::Root;

/// What a new config would do.
#[derive(Debug)]
pub struct Plan {
    /// The new roots, compiled (only when the plan applies).
    pub roots: Vec<Root>,
    /// What the new generation takes, for the log (empty: nothing to apply).
    pub applies: Vec<String>,
    /// Settings that changed but need a restart.
    pub needs_restart: Vec<&'static str>,
}

/// Differences as their `Debug` text: the sections hold no floats, and a secret's `Debug`
/// is redacted, so a changed key is not seen here (it needs a restart anyway).
fn differs<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

fn root_names(roots: &[RootConfig]) -> Vec<String> {
    roots.iter().map(|r| r.path.display().to_string()).collect()
}

/// Compares `old` (running) with `new`. An error names the root whose globs do not
/// compile (the config checks make that unlikely).
pub fn plan(old: &Config, new: &Config) -> Result<Plan, String> {
    let roots = new
        .roots
        .iter()
        .map(|r| Root::new(r).map_err(|e| format!("root {}: {e}", r.path.display())))
        .collect::<Result<Vec<_>, _>>()?;
    let mut applies = Vec::new();
    let (before, after) = (root_names(&old.roots), root_names(&new.roots));
    let added: Vec<&String> = after.iter().filter(|r| !before.contains(r)).collect();
    let removed: Vec<&String> = before.iter().filter(|r| !after.contains(r)).collect();
    let changed: Vec<String> = new
        .roots
        .iter()
        .filter(|n| old.roots.iter().any(|o| o.path == n.path && differs(o, *n)))
        .map(|r| r.path.display().to_string())
        .collect();
    let list = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
    if !added.is_empty() {
        applies.push(format!("roots added: {}", list(&added)));
    }
    if !removed.is_empty() {
        applies.push(format!("roots removed: {}", list(&removed)));
    }
    if !changed.is_empty() {
        applies.push(format!(
            "roots changed (include, exclude, hidden, recursive): {}",
            changed.join(", ")
        ));
    }
    let mut upload_old = old.upload.clone();
    upload_old.device_id = new.upload.device_id.clone();
    for (name, d) in [
        ("[scan]", differs(&old.scan, &new.scan)),
        ("[watch]", differs(&old.watch, &new.watch)),
        ("[hash]", differs(&old.hash, &new.hash)),
        ("[upload]", differs(&upload_old, &new.upload)),
        ("[mirror]", differs(&old.mirror, &new.mirror)),
    ] {
        if d {
            applies.push(format!("{name} changed"));
        }
    }
    let mut needs_restart = Vec::new();
    for (name, d) in [
        ("[server]", differs(&old.server, &new.server)),
        ("[state] dir", old.state.dir != new.state.dir),
        ("[log]", differs(&old.log, &new.log)),
        (
            "upload.device_id",
            old.upload.device_id != new.upload.device_id,
        ),
    ] {
        if d {
            needs_restart.push(name);
        }
    }
    Ok(Plan {
        roots,
        applies,
        needs_restart,
    })
}
