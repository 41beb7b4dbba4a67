//! SIGHUP: what a new config changes in a running daemon (docs/ARCHITECTURE.md#reload).
//!
//! Owns: comparing the running config with the new one, section by section, into what the
//! daemon applies by starting a new generation of its task tree (roots and their globs,
//! `[scan]`, `[watch]`, `[hash]`, `[upload]` but its device id, `[mirror]`, `[alerts]`) and
//! what only a restart applies (`[server]`, `[state]`, `[log]`, `[[pull]]`, `[metrics]`,
//! `upload.device_id`); deciding, with a log
//! line, whether a config read again is taken; and taking it into the running config and the
//! engine's settings.
//!
//! Must not: read the file (main does, with the same checks as at start, so a broken file
//! is refused before it gets here), or start and stop the running parts (the daemon does,
//! between generations).

use crate::config::{Config, RootConfig};
use crate::pipeline;
use crate::scan::walk::Root;

/// A config read again (SIGHUP): the new one, or why it is refused (file, line, key).
pub type Reloaded = Result<Config, String>;

/// The next config read again, or never without a channel.
pub async fn next(reloads: &mut Option<tokio::sync::mpsc::Receiver<Reloaded>>) -> Reloaded {
    if let Some(r) = reloads {
        if let Some(new) = r.recv().await {
            return new;
        }
    }
    std::future::pending().await
}

/// Checks a config read again against the running one: `Some` when the new generation
/// should take it. Logs what is refused, what applies and what needs a restart.
pub fn consider(running: &Config, new: Reloaded) -> Option<(Config, Vec<Root>)> {
    let new = match new {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("SIGHUP: the new config is refused, the running one is kept: {e}");
            return None;
        }
    };
    let plan = match plan(running, &new) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("SIGHUP: the new config is refused, the running one is kept: {e}");
            return None;
        }
    };
    if !plan.needs_restart.is_empty() {
        tracing::warn!(
            "SIGHUP: {} changed in the config: that takes effect only after a restart; the \
             running values are kept",
            plan.needs_restart.join(", ")
        );
    }
    if plan.applies.is_empty() {
        tracing::info!("SIGHUP: config read again; nothing that applies without a restart changed");
        return None;
    }
    tracing::info!(
        "SIGHUP: applying the new config ({}): restarting the watcher, scanner and engine",
        plan.applies.join("; ")
    );
    Some((new, plan.roots))
}

/// Takes the reloadable parts of `new` into the running `config` and the engine's
/// `settings` (the server, state and log settings and the device id stay as they are).
pub fn apply(config: &mut Config, settings: &mut pipeline::Settings, new: Config) {
    settings.hash = new.hash.clone();
    let device_id = settings.upload.device_id.clone();
    settings.upload = new.upload.clone();
    settings.upload.device_id = device_id;
    settings.mirror = new.mirror.clone();
    config.roots = new.roots;
    config.scan = new.scan;
    config.watch = new.watch;
    config.hash = new.hash;
    let device_id = config.upload.device_id.clone();
    config.upload = new.upload;
    config.upload.device_id = device_id;
    config.mirror = new.mirror;
    config.alerts = new.alerts;
}

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

/// Differences as their `Debug` text: the sections hold no floats. A secret's `Debug` is
/// redacted, so `[server]` is compared with [`crate::config::ServerConfig::same_as`].
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
        ("[alerts]", !old.alerts.same_as(&new.alerts)),
    ] {
        if d {
            applies.push(format!("{name} changed"));
        }
    }
    let mut needs_restart = Vec::new();
    for (name, d) in [
        ("[server]", !old.server.same_as(&new.server)),
        ("[state] dir", old.state.dir != new.state.dir),
        ("[log]", differs(&old.log, &new.log)),
        // A new folder needs the unit's write access (`service install`) and a restart
        // (docs/ARCHITECTURE.md#pull).
        ("[[pull]]", differs(&old.pull, &new.pull)),
        (
            "[metrics]",
            // The token by value: its `Debug` is redacted.
            old.metrics.listen != new.metrics.listen || old.metrics.token != new.metrics.token,
        ),
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
