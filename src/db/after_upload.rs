//! What was done to local files after their upload (`after_upload` of a root, migration
//! 0009; docs/ARCHITECTURE.md#after-upload): which files may be acted on now, the intent
//! written before an action, and its end.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};

use super::ids::{self, IdRef};
use crate::model::Checksum;

/// A file the server holds verified, not trashed, sorted into its albums and groups: what
/// the after-upload task may act on once it has looked again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub file_id: i64,
    pub path: Vec<u8>,
    pub checksum: Checksum,
    pub asset_id: String,
    /// The stat its checksum belongs to: `(dev, ino, size, mtime_ns, ctime_ns)`.
    pub stat: (i64, i64, i64, i64, i64),
}

/// An action recorded before it was taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intent {
    pub id: i64,
    pub file_id: Option<i64>,
    pub path: Vec<u8>,
    /// `archive` or `delete`.
    pub action: String,
    pub target: Option<Vec<u8>>,
    pub checksum: Checksum,
    pub asset_id: String,
}

/// The conditions every file acted on meets, on `f` (files) and `j` (jobs): its job is
/// `done`, the server's checksum of its asset was compared with ours (`verified_at`; a file
/// whose checksum has no `known_assets` row says that itself since migration 0015), the
/// mirror holds the asset live, its content has no tombstone, and the library has sorted it
/// (its albums and groups were decided with it present).
const SAFE: &str = "j.state = 'done' AND f.missing = 0 AND f.checksum IS NOT NULL
    AND (EXISTS (SELECT 1 FROM known_assets k WHERE k.checksum = f.checksum
                 AND k.asset_id = f.asset_id AND k.verified_at IS NOT NULL)
         OR NOT EXISTS (SELECT 1 FROM known_assets k WHERE k.checksum = f.checksum))
    AND EXISTS (SELECT 1 FROM remote_assets r WHERE r.id = f.asset_id
                AND r.is_trashed = 0 AND r.deleted_at IS NULL)
    AND NOT EXISTS (SELECT 1 FROM tombstones t WHERE t.checksum = f.checksum)
    AND NOT EXISTS (SELECT 1 FROM library_todo l WHERE l.file_id = f.id)";

/// Up to `limit` files of `root` that may be acted on: safe (see [`SAFE`]), uploaded by us
/// (or only linked, with `linked`), with no intent open and not held back until later.
/// Pages through the catalogue by file id: those after `after_id`.
pub fn candidates(
    conn: &Connection,
    root: &[u8],
    linked: bool,
    now_ms: i64,
    after_id: i64,
    limit: usize,
) -> rusqlite::Result<Vec<Candidate>> {
    let sql = format!(
        "SELECT f.id, f.path, f.checksum, f.asset_id, f.dev, f.ino, f.size, f.mtime_ns,
                f.ctime_ns
         FROM files f JOIN jobs j ON j.file_id = f.id
         WHERE f.root_id = (SELECT id FROM roots WHERE path = ?1) AND f.id > ?5 AND (j.outcome = 'uploaded' OR ?2) AND {SAFE}
           AND NOT EXISTS (SELECT 1 FROM after_upload a WHERE a.file_id = f.id
                           AND (a.state = 'intent' OR a.retry_at > ?3))
         ORDER BY f.id LIMIT ?4"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![root, linked, now_ms, limit as i64, after_id], |r| {
        let sum: Vec<u8> = r.get(2)?;
        Ok((
            Candidate {
                file_id: r.get(0)?,
                path: r.get(1)?,
                checksum: Checksum([0; 20]),
                asset_id: ids::id(r, 3)?,
                stat: (r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?),
            },
            sum,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (mut c, sum) = row?;
        // A stored checksum of another length is not ours to act on.
        let Ok(sum) = <[u8; 20]>::try_from(sum.as_slice()) else {
            continue;
        };
        c.checksum = Checksum(sum);
        out.push(c);
    }
    Ok(out)
}

/// Whether the file `file_id` is safe on the server (see [`SAFE`]), whatever its outcome:
/// what a Live Photo or stack partner must be before the other half is acted on.
pub fn is_safe(conn: &Connection, file_id: i64) -> rusqlite::Result<bool> {
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM files f JOIN jobs j ON j.file_id = f.id
                        WHERE f.id = ?1 AND {SAFE})"
    );
    conn.prepare_cached(&sql)?
        .query_row([file_id], |r| r.get(0))
}

/// Records the intent to act on `c` (in one transaction with the others of a batch): any
/// earlier hold of the file is replaced. Returns the intent's id.
pub fn record_intent(
    conn: &Connection,
    c: &Candidate,
    root: &[u8],
    action: &str,
    target: Option<&[u8]>,
    now_ms: i64,
) -> rusqlite::Result<i64> {
    conn.prepare_cached("DELETE FROM after_upload WHERE file_id = ?1 AND state = 'held'")?
        .execute([c.file_id])?;
    conn.prepare_cached(
        "INSERT INTO after_upload(file_id, root, path, action, target, checksum, asset_id,
                                  state, noted_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'intent', ?8)",
    )?
    .execute(params![
        c.file_id,
        root,
        c.path,
        action,
        target,
        &c.checksum.0[..],
        IdRef(&c.asset_id),
        now_ms
    ])?;
    Ok(conn.last_insert_rowid())
}

/// The archive target chosen at the moment of the move (the planned one was taken).
pub fn set_target(conn: &Connection, id: i64, target: &[u8]) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE after_upload SET target = ?2 WHERE id = ?1")?
        .execute(params![id, target])?;
    Ok(())
}

/// Not acted on, for `reason`; looked at again from `retry_at`.
pub fn hold(conn: &Connection, id: i64, reason: &str, retry_at: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE after_upload SET state = 'held', reason = ?2, retry_at = ?3 WHERE id = ?1",
    )?
    .execute(params![id, reason, retry_at])?;
    Ok(())
}

/// An intent dropped without a decision (the file is looked at anew later).
pub fn drop_intent(conn: &Connection, id: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM after_upload WHERE id = ?1 AND state = 'intent'")?
        .execute([id])?;
    Ok(())
}

/// The action was taken: recorded as done, and the file leaves the catalogue (a new file
/// at the same path is a new file), in one transaction.
pub fn finish(conn: &mut Connection, id: i64, now_ms: i64) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let file: Option<Option<i64>> = tx
        .prepare_cached("SELECT file_id FROM after_upload WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    tx.prepare_cached(
        "UPDATE after_upload SET state = 'done', file_id = NULL, reason = NULL,
             retry_at = NULL, done_at = ?2
         WHERE id = ?1",
    )?
    .execute(params![id, now_ms])?;
    if let Some(Some(file_id)) = file {
        tx.prepare_cached("DELETE FROM files WHERE id = ?1")?
            .execute([file_id])?;
    }
    tx.commit()
}

/// Every intent left open (by a crash or a stop between the intent and its end).
pub fn open_intents(conn: &Connection) -> rusqlite::Result<Vec<Intent>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, file_id, path, action, target, checksum, asset_id FROM after_upload
         WHERE state = 'intent' ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        let sum: Vec<u8> = r.get(5)?;
        Ok((
            Intent {
                id: r.get(0)?,
                file_id: r.get(1)?,
                path: r.get(2)?,
                action: r.get(3)?,
                target: r.get(4)?,
                checksum: Checksum([0; 20]),
                asset_id: ids::id(r, 6)?,
            },
            sum,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (mut i, sum) = row?;
        if let Ok(sum) = <[u8; 20]>::try_from(sum.as_slice()) {
            i.checksum = Checksum(sum);
        }
        out.push(i);
    }
    Ok(out)
}

/// A reader of a database an older daemon holds sees no table: nothing was done.
fn has_table(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'after_upload')",
    )?
    .query_row([], |r| r.get(0))
}

/// For `status`: files moved to an archive, files deleted, files looked at and held back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub archived: i64,
    pub deleted: i64,
    pub held: i64,
}

pub fn counts(conn: &Connection) -> rusqlite::Result<Counts> {
    if !has_table(conn)? {
        return Ok(Counts::default());
    }
    conn.prepare_cached(
        "SELECT COALESCE(SUM(state = 'done' AND action = 'archive'), 0),
                COALESCE(SUM(state = 'done' AND action = 'delete'), 0),
                COALESCE(SUM(state = 'held'), 0)
         FROM after_upload",
    )?
    .query_row([], |r| {
        Ok(Counts {
            archived: r.get(0)?,
            deleted: r.get(1)?,
            held: r.get(2)?,
        })
    })
}

/// Assets whose local file was archived or deleted after upload: asset id → (action, the
/// path the file had), for `diff`.
pub fn released(conn: &Connection) -> rusqlite::Result<HashMap<String, (String, Vec<u8>)>> {
    if !has_table(conn)? {
        return Ok(HashMap::new());
    }
    let mut stmt =
        conn.prepare("SELECT asset_id, action, path FROM after_upload WHERE state = 'done'")?;
    let rows = stmt.query_map([], |r| Ok((ids::id(r, 0)?, (r.get(1)?, r.get(2)?))))?;
    rows.collect()
}
