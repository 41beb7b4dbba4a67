//! Edited files: the asset a file was backed up as before its bytes changed
//! (docs/ARCHITECTURE.md#edited-files). The new version goes up as a new asset; the old one
//! stays on the server.

use rusqlite::{params, Connection, OptionalExtension};

use super::ids::{self, IdRef};

/// The file's stat changed while it was backed up as `old_asset`: remember that asset.
/// Called by the catalogue inside the transaction that clears the file's `asset_id`.
pub fn note(conn: &Connection, file_id: i64, old_asset: &str, now_ms: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO edited(file_id, old_asset_id, noted_at) VALUES (?1, ?2, ?3)")?
        .execute(params![file_id, IdRef(old_asset), now_ms])?;
    Ok(())
}

/// The asset this file was backed up as before it changed, when its new version has not gone
/// up yet (the newest such note).
pub fn pending(conn: &Connection, file_id: i64) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(
        "SELECT old_asset_id FROM edited WHERE file_id = ?1 AND uploaded_at IS NULL
         ORDER BY id DESC LIMIT 1",
    )?
    .query_row([file_id], |r| ids::id(r, 0))
    .optional()
}

/// The new version of the file went up as a new asset: its pending notes are edits now.
pub fn uploaded(conn: &Connection, file_id: i64, now_ms: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE edited SET uploaded_at = ?2 WHERE file_id = ?1 AND uploaded_at IS NULL",
    )?
    .execute(params![file_id, now_ms])?;
    Ok(())
}

/// A reader of a database an older daemon still holds sees no `edited` table: no edits.
fn has_table(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'edited')",
    )?
    .query_row([], |r| r.get(0))
}

/// How many times a file's new bytes went up as a new asset beside the old one.
pub fn count(conn: &Connection) -> rusqlite::Result<i64> {
    if !has_table(conn)? {
        return Ok(0);
    }
    conn.prepare_cached("SELECT COUNT(*) FROM edited WHERE uploaded_at IS NOT NULL")?
        .query_row([], |r| r.get(0))
}

/// Old assets of files still present locally whose bytes changed since: asset id → the path.
pub fn changed_assets(conn: &Connection) -> rusqlite::Result<Vec<(String, Vec<u8>)>> {
    if !has_table(conn)? {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(
        "SELECT e.old_asset_id, f.path FROM edited e JOIN files f ON f.id = e.file_id
         WHERE f.missing = 0",
    )?;
    let rows = stmt.query_map([], |r| Ok((ids::id(r, 0)?, r.get(1)?)))?;
    rows.collect()
}
