//! `immish-sync explain PATH`: "why isn't this file on the server?", one answer.
//!
//! Owns: the order of the questions (is it under a root; would a walk take it, and which
//! rule says no; has the daemon seen it; what its job says; what the mirror says of its
//! asset) and the sentence of each answer. Reads the state database read-only, like
//! `status`, so it works while the daemon runs. Media types are the built-in list (the
//! server's own list is not stored); a type the server takes beyond it shows as not
//! supported here.
//!
//! Must not: write to the database, call the server, or take the daemon's lock.

use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::config::{Config, RootConfig};
use crate::db::mirror::AssetSeen;
use crate::db::{self, meta, queue, waiting, Db, DbError};
use crate::filter::{Entry, Skip};
use crate::human::{ago, duration, timestamp};
use crate::model::{JobState, MediaTypes, SkipReason};
use crate::scan::walk::Root;

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// On the server (uploaded or linked, and not trashed or deleted there as far as the
    /// mirror knows): exit 0.
    pub on_server: bool,
    /// The lines to print: the verdict first, then details and what to do.
    pub lines: Vec<String>,
}

impl Explanation {
    fn no(lines: Vec<String>) -> Explanation {
        Explanation {
            on_server: false,
            lines,
        }
    }
}

/// Why a walk would not take `path` under `root`, or `None` when it would: the scan's own
/// filter ([`crate::filter::Filter`]) asked folder by folder, then for the file.
fn excluded(cfg: &RootConfig, root: &Root, path: &Path, media: &MediaTypes) -> Option<String> {
    let rel = path.strip_prefix(&cfg.path).unwrap_or(path);
    let depth = rel
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count();
    if depth > 1 && !cfg.recursive {
        return Some(format!(
            "excluded: it is in a subfolder and the root {} has recursive = false",
            cfg.path.display()
        ));
    }
    // The folders on its path, from the root down, then the file itself.
    let mut dirs: Vec<&Path> = path
        .ancestors()
        .skip(1)
        .take_while(|d| d.starts_with(&cfg.path) && *d != cfg.path)
        .collect();
    dirs.reverse();
    for dir in dirs {
        if let Some(why) = root.filter.skip(dir, Entry::Dir, &[]) {
            return Some(describe(cfg, why, "a folder on its path"));
        }
        if let Some(why) = root.filter.skipped_on_disk(dir, true) {
            return Some(describe(cfg, why, "a folder on its path"));
        }
    }
    root.filter
        .skip(path, Entry::File(media), &[])
        .or_else(|| root.filter.skipped_on_disk(path, false))
        .map(|why| describe(cfg, why, "its name"))
}

/// One sentence for a [`Skip`] of the file or of `what` on its path.
fn describe(cfg: &RootConfig, why: Skip, what: &str) -> String {
    let root = cfg.path.display();
    match why {
        Skip::Temp => format!(
            "excluded: {what} looks like a file still being copied (a temporary name: *.part, \
             *.tmp, *.crdownload, rsync or Syncthing)"
        ),
        Skip::Hidden => format!(
            "excluded: hidden ({what} starts with a dot; set hidden = true on the root to back \
             up hidden files)"
        ),
        Skip::Junk => format!(
            "excluded: {what} is on the junk list (NAS thumbnails, trash, desktop files; \
             skip_junk = false on the root {root} turns it off)"
        ),
        Skip::Excluded(i) => match cfg.exclude.get(i) {
            Some(g) => format!("excluded by the pattern exclude = {g:?} of the root {root}"),
            None => format!("excluded by an exclude pattern of the root {root}"),
        },
        Skip::Ignored => "excluded by a line of an .immishignore file on its path".to_owned(),
        Skip::NoMedia => "excluded: a folder on its path holds .nomedia".to_owned(),
        Skip::NotIncluded => format!(
            "excluded: no include pattern of the root {root} matches it (include = {:?})",
            cfg.include
        ),
        Skip::NotMedia => {
            "excluded: not a photo or video type the server takes (by its extension)".to_owned()
        }
    }
}

/// Explains `path` against `config` and its state directory.
pub fn explain(config: &Config, path: &Path) -> Result<Explanation, DbError> {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    // A path through a symlink, or with `..`, names the file its root holds.
    let path = match (
        path.parent().and_then(|p| p.canonicalize().ok()),
        path.file_name(),
    ) {
        (Some(dir), Some(name)) => dir.join(name),
        _ => path,
    };
    let Some(cfg) = config.roots.iter().find(|r| {
        path.starts_with(&r.path)
            || r.path
                .canonicalize()
                .is_ok_and(|c| path.starts_with(&c) && c != r.path)
    }) else {
        let roots: Vec<String> = config
            .roots
            .iter()
            .map(|r| r.path.display().to_string())
            .collect();
        return Ok(Explanation::no(vec![
            format!("{}: not under any root", path.display()),
            format!("the roots are: {}", roots.join(", ")),
        ]));
    };
    // The file as the catalogue names it: under the root's path as configured.
    let path: PathBuf = match cfg.path.canonicalize() {
        Ok(c) if c != cfg.path => path
            .strip_prefix(&c)
            .map(|rel| cfg.path.join(rel))
            .unwrap_or(path),
        _ => path,
    };
    let shown = path.display().to_string();
    let root = match Root::new(cfg) {
        Ok(r) => r,
        Err(e) => return Ok(Explanation::no(vec![format!("{shown}: root: {e}")])),
    };
    let stat = std::fs::symlink_metadata(&path);
    if let Some(why) = excluded(cfg, &root, &path, &MediaTypes::builtin()) {
        return Ok(Explanation::no(vec![format!("{shown}: {why}")]));
    }
    match &stat {
        Ok(m) if m.file_type().is_symlink() => {
            return Ok(Explanation::no(vec![format!(
                "{shown}: a symbolic link: never followed (only regular files are backed up)"
            )]))
        }
        Ok(m) if !m.is_file() => {
            return Ok(Explanation::no(vec![format!(
                "{shown}: not a regular file"
            )]))
        }
        _ => {}
    }

    let db_path = config.state.dir.join(db::DB_FILE);
    if !db_path.exists() {
        return Ok(Explanation::no(vec![
            format!(
                "{shown}: not seen yet: there is no state in {}",
                config.state.dir.display()
            ),
            "start the daemon or run `immish-sync scan`".into(),
        ]));
    }
    let db = Db::open_readonly(&db_path)?;
    let key = path.as_os_str().as_bytes().to_vec();
    let (facts, wait, pauses, seen, last_pull) = db.call_blocking(move |c| {
        let facts = queue::file_facts(c, &key)?;
        let wait = waiting::get(c, &key)?;
        let pauses = meta::user_pauses(c)?;
        // A held-back file is unlinked from its asset; the tombstone of its bytes still
        // names the asset, so the mirror can say whether it is in the trash or gone.
        let asset = match facts.as_ref().and_then(|f| f.asset_id.clone()) {
            Some(id) => Some(id),
            None => tombstoned_asset(c, &key)?,
        };
        let seen = match &asset {
            Some(id) => db::mirror::asset_seen(c, id)?,
            None => None,
        };
        let facts = facts.map(|mut f| {
            if f.asset_id.is_none() && matches!(seen, Some(AssetSeen::Trashed)) {
                f.asset_id = asset;
            }
            f
        });
        Ok((facts, wait, pauses, seen, meta::last_pull(c)?))
    })?;

    let paused = pauses
        .all_since_ms
        .or_else(|| pauses.root_since(&cfg.path.display().to_string()))
        .map(|since| {
            format!(
                "uploads are paused by the user since {} (`immish-sync resume`)",
                timestamp(since)
            )
        });
    let settle = config.watch.settle;
    let Some(facts) = facts else {
        if let Some(w) = wait {
            let limit = config.watch.incomplete_limit;
            return Ok(Explanation::no(vec![
                format!("{shown}: waiting: {} (since {})", w.reason, ago(w.since_ms)),
                format!(
                    "it is taken once it is whole, or anyway at {} (watch.incomplete_limit = {})",
                    timestamp(w.since_ms + limit.as_millis() as i64),
                    duration(limit)
                ),
            ]));
        }
        if stat.is_err() {
            return Ok(Explanation::no(vec![format!(
                "{shown}: no such file, and the state has no record of it"
            )]));
        }
        let fresh = stat
            .as_ref()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < settle);
        if fresh {
            return Ok(Explanation::no(vec![format!(
                "{shown}: waiting to settle: it changed less than watch.settle = {} ago; it is \
                 taken once it has been left alone that long",
                duration(settle)
            )]));
        }
        return Ok(Explanation::no(vec![
            format!("{shown}: not seen yet by a scan or the watcher"),
            "is the daemon running? `immish-sync rescan` walks the roots now".into(),
        ]));
    };

    let mut lines = Vec::new();
    let Some(job) = facts.job.clone() else {
        return Ok(Explanation::no(vec![format!(
            "{shown}: in the catalogue but without a job: the next scan queues it"
        )]));
    };
    let mut on_server = false;
    match job.state {
        JobState::Done => {
            let id = facts.asset_id.clone().unwrap_or_else(|| "?".into());
            let how = match facts.outcome.as_deref() {
                Some("uploaded") => "uploaded",
                Some("duplicate") => "already on the server (linked to its copy)",
                Some(_) | None => "linked to the server's copy",
            };
            let since = timestamp(job.updated_at_ms);
            match seen {
                Some(AssetSeen::Live) | None => {
                    on_server = true;
                    lines.push(format!(
                        "{shown}: on the server: {how} as asset {id} ({since})"
                    ));
                    lines.push(match (seen, &last_pull) {
                        (Some(_), Some(p)) => {
                            format!("the mirror saw it at its last pull ({})", ago(p.at_ms))
                        }
                        (Some(_), None) => "the mirror knows it".into(),
                        (None, _) => "the mirror has not seen it (yet)".into(),
                    });
                }
                Some(AssetSeen::Trashed) => lines.push(format!(
                    "{shown}: asset {id} ({how}, {since}) is in the server's trash: restore it \
                     there, or it is lost when the trash empties"
                )),
                Some(AssetSeen::Deleted(at)) => lines.push(format!(
                    "{shown}: asset {id} ({how}, {since}) was deleted on the server ({})",
                    ago(at)
                )),
            }
        }
        JobState::Skipped => match job.skip {
            // Held back because its asset is in the trash, not gone: say so, since a
            // restore on the server brings it back (and emptying the trash loses it).
            Some(SkipReason::DeletedOnServer) | Some(SkipReason::TrashedOnServer)
                if matches!(seen, Some(AssetSeen::Trashed)) =>
            {
                let id = facts.asset_id.clone().unwrap_or_else(|| "?".into());
                lines.push(format!(
                    "{shown}: held back: asset {id} is in the server's trash: restore it \
                     there, or it is lost when the trash empties"
                ));
                lines.push("to upload it again instead: set mirror.reupload_deleted = true".into());
            }
            Some(SkipReason::DeletedOnServer) | Some(SkipReason::TrashedOnServer) => {
                lines.push(format!(
                    "{shown}: held back: {}",
                    job.reason.as_deref().unwrap_or("deleted on the server")
                ));
                lines.push(
                    "to upload it again: restore it on the server, or set \
                     mirror.reupload_deleted = true"
                        .into(),
                );
            }
            _ => lines.push(format!(
                "{shown}: skipped: {}",
                job.reason.as_deref().unwrap_or("no reason recorded")
            )),
        },
        JobState::Failed => {
            lines.push(format!(
                "{shown}: failed {} after {} attempts: {}",
                ago(job.updated_at_ms),
                job.attempts,
                job.reason.as_deref().unwrap_or("no reason recorded")
            ));
            lines.push("it is tried again when it changes, or now with `immish-sync retry`".into());
        }
        JobState::Retry => {
            lines.push(format!(
                "{shown}: failed {} times, trying again{}: {}",
                job.attempts,
                job.next_attempt_at_ms
                    .map_or(String::new(), |t| format!(" at {}", timestamp(t))),
                job.reason.as_deref().unwrap_or("no reason recorded")
            ));
        }
        state => {
            lines.push(format!(
                "{shown}: queued ({}, {} attempts so far, since {})",
                state.as_str(),
                job.attempts,
                ago(job.updated_at_ms)
            ));
        }
    }
    if !on_server {
        if let Some(p) = paused {
            lines.push(p);
        }
    }
    if facts.missing {
        lines.push(format!(
            "the last complete scan did not find the file (last seen {})",
            ago(facts.last_seen_ms)
        ));
    } else if let Ok(m) = &stat {
        use std::os::unix::fs::MetadataExt;
        let mtime_ns = m.mtime() * 1_000_000_000 + m.mtime_nsec();
        if m.len() != facts.size || mtime_ns != facts.mtime_ns {
            lines.push(
                "the file changed since it was last seen: it is taken again once it settles".into(),
            );
            on_server = false;
        }
    }
    Ok(Explanation { on_server, lines })
}

/// The asset named by the tombstone of the bytes the file at `path` last had, if any.
fn tombstoned_asset(c: &rusqlite::Connection, path: &[u8]) -> rusqlite::Result<Option<String>> {
    use rusqlite::OptionalExtension;
    c.prepare_cached(
        "SELECT t.asset_id FROM files f JOIN tombstones t ON t.checksum = f.checksum
         WHERE f.path = ?1",
    )?
    .query_row([path], |r| crate::db::ids::opt_id(r, 0))
    .optional()
    .map(Option::flatten)
}
