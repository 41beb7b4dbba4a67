//! `pulled`: which asset each pull folder holds, where, and in what state
//! (docs/ARCHITECTURE.md#pull).
//!
//! Owns: choosing an asset's relative path once (the layout, then the collision name),
//! the queries of what is due, gone or back, and the counts for `status`. Must not: touch
//! the files of a pull folder (the engine in `crate::originals` does, then records here).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::ids::{self, IdRef};
use crate::model::{AssetId, Checksum};
use crate::originals::layout::{collision_name, Layout, Placed};

/// How many assets one planning transaction lays out.
pub const PLAN_BATCH: usize = 1000;

/// A row's state (stored as its lower-case name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullState {
    Pending,
    Pulled,
    Failed,
    Kept,
    Moved,
    Removed,
}

impl PullState {
    pub fn as_str(self) -> &'static str {
        match self {
            PullState::Pending => "pending",
            PullState::Pulled => "pulled",
            PullState::Failed => "failed",
            PullState::Kept => "kept",
            PullState::Moved => "moved",
            PullState::Removed => "removed",
        }
    }
}

fn bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

fn path(b: Vec<u8>) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(&b))
}

/// A live asset of the mirror (not trashed, not deleted, with a checksum).
const LIVE: &str = "r.deleted_at IS NULL AND r.is_trashed = 0 AND r.checksum IS NOT NULL";

/// Gives every live asset the folder has no row for its relative path (state `pending`),
/// at most [`PLAN_BATCH`] in one transaction; returns how many. The path is the layout's,
/// or, when another asset of the folder has it, [`collision_name`]'s; assets are taken in
/// the order of their date and id, so that which of two namesakes keeps the plain name does
/// not depend on when each was seen.
pub fn plan(
    c: &mut Connection,
    folder: &Path,
    layout: &Layout,
    now: i64,
) -> rusqlite::Result<usize> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let todo: Vec<(String, String, Option<String>)> = {
        // In the order of the dates' text, as before migration 0017 kept most of them as
        // milliseconds (src/db/fields.rs).
        let mut st = tx.prepare(&format!(
            "SELECT r.id, r.original_file_name, r.file_created_at FROM remote_assets r
             WHERE {LIVE} AND NOT EXISTS
               (SELECT 1 FROM pulled p WHERE p.folder = ?1 AND p.asset_id = r.id)
             ORDER BY {}, r.id LIMIT ?2",
            super::fields::date_text_sql("r.file_created_at")
        ))?;
        let rows = st.query_map(params![bytes(folder), PLAN_BATCH as i64], |r| {
            Ok((ids::id(r, 0)?, r.get(1)?, super::fields::date_read(r, 2)?))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    {
        let mut taken = tx.prepare("SELECT 1 FROM pulled WHERE folder = ?1 AND rel_path = ?2")?;
        let mut insert = tx.prepare(
            "INSERT INTO pulled (folder, asset_id, rel_path, state, updated_at)
             VALUES (?1, ?2, ?3, 'pending', ?4)",
        )?;
        for (id, name, created) in &todo {
            let plain = layout.render(&Placed {
                id,
                file_name: name,
                created_at: created.as_deref(),
            });
            let mut rel = plain.clone();
            for long in [false, true] {
                if !taken.exists(params![bytes(folder), bytes(&rel)])? {
                    break;
                }
                rel = collision_name(&plain, id, long);
            }
            insert.execute(params![bytes(folder), IdRef(id), bytes(&rel), now])?;
        }
    }
    tx.commit()?;
    Ok(todo.len())
}

/// A download to do.
#[derive(Clone, Debug)]
pub struct Due {
    pub asset_id: AssetId,
    pub rel_path: PathBuf,
    pub checksum: Checksum,
    pub attempts: u32,
    /// A photo by its name's extension, and not hidden: it may be a Live Photo's still.
    pub is_image: bool,
}

/// Pending rows, and failed ones due by `now`, of live assets: at most `limit`. Hidden
/// assets (the videos of Live Photos) only when nothing else is due, so that each still has
/// placed its video beside it ([`place_beside`]) before the video is downloaded.
pub fn due(c: &Connection, folder: &Path, now: i64, limit: usize) -> rusqlite::Result<Vec<Due>> {
    let first = due_of(c, folder, now, limit, false)?;
    if !first.is_empty() {
        return Ok(first);
    }
    due_of(c, folder, now, limit, true)
}

fn due_of(
    c: &Connection,
    folder: &Path,
    now: i64,
    limit: usize,
    hidden: bool,
) -> rusqlite::Result<Vec<Due>> {
    let mut st = c.prepare(&format!(
        "SELECT p.asset_id, p.rel_path, r.checksum, p.attempts, r.original_file_name
         FROM pulled p
         JOIN remote_assets r ON r.id = p.asset_id
         WHERE p.folder = ?1 AND {LIVE}
           AND (p.state = 'pending' OR (p.state = 'failed' AND p.next_attempt_at <= ?2))
           AND (coalesce({}, '') = 'hidden') = ?4
         ORDER BY p.state = 'failed', p.next_attempt_at, p.rowid LIMIT ?3",
        super::fields::visibility_text_sql("r.visibility")
    ))?;
    let rows = st.query_map(params![bytes(folder), now, limit as i64, hidden], |r| {
        let sum: Vec<u8> = r.get(2)?;
        Ok((
            r.get::<_, AssetId>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            sum,
            r.get::<_, u32>(3)?,
            r.get::<_, String>(4)?,
        ))
    })?;
    let images = crate::model::MediaTypes::builtin().image;
    let mut out = Vec::new();
    for row in rows {
        let (id, rel, sum, attempts, name) = row?;
        let ext = name
            .rfind('.')
            .map(|at| name[at..].to_ascii_lowercase())
            .unwrap_or_default();
        // A checksum that is not 20 bytes cannot be verified against: such a row is never
        // due (the mirror only stores SHA-1s).
        if let Some(checksum) = Checksum::from_slice(&sum) {
            out.push(Due {
                asset_id: id,
                rel_path: path(rel),
                checksum,
                attempts,
                is_image: !hidden && images.contains(&ext),
            });
        }
    }
    Ok(out)
}

/// The copy is in place with the server's checksum.
pub fn mark_pulled(c: &Connection, folder: &Path, id: &AssetId, now: i64) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE pulled SET state = 'pulled', error = NULL, next_attempt_at = NULL,
             updated_at = ?3
         WHERE folder = ?1 AND asset_id = ?2",
        params![bytes(folder), id, now],
    )?;
    Ok(())
}

/// The attempt failed; tried again at `next_at`.
pub fn mark_failed(
    c: &Connection,
    folder: &Path,
    id: &AssetId,
    error: &str,
    next_at: i64,
    now: i64,
) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE pulled SET state = 'failed', attempts = attempts + 1, error = ?3,
             next_attempt_at = ?4, updated_at = ?5
         WHERE folder = ?1 AND asset_id = ?2",
        params![bytes(folder), id, error, next_at, now],
    )?;
    Ok(())
}

/// A file that is not this asset's is at the asset's place on disk: the asset takes its
/// collision name instead (or the long one). Returns the new relative path, `None` when
/// both are taken too.
pub fn relocate(
    c: &Connection,
    folder: &Path,
    id: &AssetId,
    rel: &Path,
    on_disk: impl Fn(&Path) -> bool,
) -> rusqlite::Result<Option<PathBuf>> {
    for long in [false, true] {
        let new = collision_name(rel, &id.0, long);
        if new == rel || on_disk(&new) {
            continue;
        }
        if path_taken(c, folder, &new)? {
            continue;
        }
        move_row(c, folder, id, &new)?;
        return Ok(Some(new));
    }
    Ok(None)
}

/// Whether an asset of `folder` already has the relative path `rel`.
fn path_taken(c: &Connection, folder: &Path, rel: &Path) -> rusqlite::Result<bool> {
    Ok(c.query_row(
        "SELECT 1 FROM pulled WHERE folder = ?1 AND rel_path = ?2",
        params![bytes(folder), bytes(rel)],
        |_| Ok(true),
    )
    .optional()?
    .unwrap_or(false))
}

/// Gives the asset `id` of `folder` the relative path `rel`.
fn move_row(c: &Connection, folder: &Path, id: &AssetId, rel: &Path) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE pulled SET rel_path = ?3 WHERE folder = ?1 AND asset_id = ?2",
        params![bytes(folder), id, bytes(rel)],
    )?;
    Ok(())
}

/// A Live Photo's video goes beside its still: the still's path with the video's
/// extension (`2024/03/IMG_1.HEIC` → `2024/03/IMG_1.MOV`), while the video is not pulled
/// yet and that path is free. Returns the video's path when it moved.
pub fn place_beside(
    c: &Connection,
    folder: &Path,
    still_rel: &Path,
    video: &AssetId,
) -> rusqlite::Result<Option<PathBuf>> {
    let row: Option<(Vec<u8>, String)> = c
        .query_row(
            "SELECT rel_path, state FROM pulled WHERE folder = ?1 AND asset_id = ?2",
            params![bytes(folder), video],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((rel, state)) = row else {
        return Ok(None);
    };
    if state != PullState::Pending.as_str() && state != PullState::Failed.as_str() {
        return Ok(None);
    }
    let rel = path(rel);
    let Some(ext) = rel.extension() else {
        return Ok(None);
    };
    let new = still_rel.with_extension(ext);
    if new == rel {
        return Ok(None);
    }
    if path_taken(c, folder, &new)? {
        return Ok(None);
    }
    move_row(c, folder, video, &new)?;
    Ok(Some(new))
}

/// A row whose asset the server deleted for good (or that left the mirror).
#[derive(Clone, Debug)]
pub struct Gone {
    pub asset_id: AssetId,
    pub rel_path: PathBuf,
    pub state: String,
}

/// Rows in `states` whose asset the mirror knows was deleted for good (`deleted_at`). A
/// trashed asset is not gone (the trash can be restored), and neither is one the mirror
/// has no row for: the mirror is emptied when the configured server or user changes, and
/// that must not send a whole folder to `.deleted/`.
pub fn gone(c: &Connection, folder: &Path, states: &[PullState]) -> rusqlite::Result<Vec<Gone>> {
    rows_where(c, folder, states, "r.deleted_at IS NOT NULL")
}

/// Rows in `states` whose asset is live again (the mirror sees it after it was gone).
pub fn back(c: &Connection, folder: &Path, states: &[PullState]) -> rusqlite::Result<Vec<Gone>> {
    rows_where(c, folder, states, LIVE)
}

/// Rows of `folder` in `states` whose mirror row (`r`) meets `mirror_cond`.
fn rows_where(
    c: &Connection,
    folder: &Path,
    states: &[PullState],
    mirror_cond: &str,
) -> rusqlite::Result<Vec<Gone>> {
    let list = states
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(",");
    let mut st = c.prepare(&format!(
        "SELECT p.asset_id, p.rel_path, p.state FROM pulled p
         JOIN remote_assets r ON r.id = p.asset_id
         WHERE p.folder = ?1 AND p.state IN ({list}) AND {mirror_cond}"
    ))?;
    let rows = st.query_map(params![bytes(folder)], |r| {
        Ok(Gone {
            asset_id: r.get(0)?,
            rel_path: path(r.get(1)?),
            state: r.get(2)?,
        })
    })?;
    rows.collect()
}

/// Sets a row's state; `moved_at` is set for `moved` and cleared otherwise.
pub fn set_state(
    c: &Connection,
    folder: &Path,
    id: &AssetId,
    state: PullState,
    now: i64,
) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE pulled SET state = ?3, updated_at = ?4,
             moved_at = CASE WHEN ?3 = 'moved' THEN ?4 ELSE NULL END
         WHERE folder = ?1 AND asset_id = ?2",
        params![bytes(folder), id, state.as_str(), now],
    )?;
    Ok(())
}

/// Forgets a row (a pending download whose asset went away before it was pulled).
pub fn forget(c: &Connection, folder: &Path, id: &AssetId) -> rusqlite::Result<()> {
    c.execute(
        "DELETE FROM pulled WHERE folder = ?1 AND asset_id = ?2",
        params![bytes(folder), id],
    )?;
    Ok(())
}

/// Copies moved to `.deleted/` before `before` (unix ms).
pub fn expired(c: &Connection, folder: &Path, before: i64) -> rusqlite::Result<Vec<Gone>> {
    let mut st = c.prepare(
        "SELECT asset_id, rel_path, state FROM pulled
         WHERE folder = ?1 AND state = 'moved' AND moved_at < ?2",
    )?;
    let rows = st.query_map(params![bytes(folder), before], |r| {
        Ok(Gone {
            asset_id: r.get(0)?,
            rel_path: path(r.get(1)?),
            state: r.get(2)?,
        })
    })?;
    rows.collect()
}

/// The rows of a folder that were left `pending` (a download may have been cut short):
/// their temporary files are removed before anything else runs.
pub fn pending(c: &Connection, folder: &Path) -> rusqlite::Result<Vec<Gone>> {
    let mut st = c.prepare(
        "SELECT asset_id, rel_path, state FROM pulled
         WHERE folder = ?1 AND state IN ('pending', 'failed')",
    )?;
    let rows = st.query_map(params![bytes(folder)], |r| {
        Ok(Gone {
            asset_id: r.get(0)?,
            rel_path: path(r.get(1)?),
            state: r.get(2)?,
        })
    })?;
    rows.collect()
}

/// One pull folder in `status` (docs/STATUS.md#status-json).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FolderCounts {
    /// Lossy for a path that is not UTF-8.
    pub path: String,
    /// Copies in place with the server's checksum.
    pub pulled: i64,
    /// Live assets of the mirror without a copy yet (failed ones not counted).
    pub pending: i64,
    /// Downloads that failed and wait to be tried again.
    pub failed: i64,
    /// Copies of assets deleted on the server: kept in place, or moved to `.deleted/`.
    pub kept: i64,
    pub moved: i64,
    /// The last failure's reason, when some failed.
    pub last_error: Option<String>,
}

/// Every folder that has a row, in path order.
pub fn counts(c: &Connection) -> rusqlite::Result<Vec<FolderCounts>> {
    let folders: Vec<Vec<u8>> = {
        let mut st = c.prepare("SELECT DISTINCT folder FROM pulled ORDER BY folder")?;
        let rows = st.query_map([], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let live: i64 = c.query_row(
        &format!("SELECT count(*) FROM remote_assets r WHERE {LIVE}"),
        [],
        |r| r.get(0),
    )?;
    let mut out = Vec::new();
    for folder in folders {
        let mut f = FolderCounts {
            path: String::from_utf8_lossy(&folder).into_owned(),
            ..FolderCounts::default()
        };
        let mut st =
            c.prepare("SELECT state, count(*) FROM pulled WHERE folder = ?1 GROUP BY state")?;
        let rows = st.query_map(params![folder], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))?;
        for row in rows {
            let (state, n): (String, i64) = row?;
            match state.as_str() {
                "pulled" => f.pulled = n,
                "failed" => f.failed = n,
                "kept" => f.kept = n,
                "moved" => f.moved = n,
                _ => {}
            }
        }
        // Of the live assets, those neither pulled nor failed in this folder.
        let done_live: i64 = c.query_row(
            &format!(
                "SELECT count(*) FROM pulled p JOIN remote_assets r ON r.id = p.asset_id
                 WHERE p.folder = ?1 AND p.state IN ('pulled', 'failed', 'kept') AND {LIVE}"
            ),
            params![folder],
            |r| r.get(0),
        )?;
        f.pending = (live - done_live).max(0);
        f.last_error = c
            .query_row(
                "SELECT error FROM pulled WHERE folder = ?1 AND state = 'failed'
                 ORDER BY updated_at DESC LIMIT 1",
                params![folder],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        out.push(f);
    }
    Ok(out)
}
