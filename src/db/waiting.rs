//! Files that wait because they look unfinished: still open for writing (the watcher saw a
//! write and no close since) or structurally incomplete (`crate::complete`).
//!
//! Owns: the `waiting` table (migration 0005), written by the watcher's stat batches and by
//! scans, read by `status`. A row says why a file is not taken yet and since when; it is
//! removed when the file settles, is taken anyway after `watch.incomplete_limit`, or is gone.
//! Must not: decide whether a file is finished (that is `watch/settle.rs::verdict` and the
//! scan), or touch the catalogue or the queue.

use std::collections::HashSet;

use rusqlite::{params, Connection, OptionalExtension};

/// Why a file waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WaitKind {
    /// The watcher saw a write and no close after it.
    Open,
    /// Its structure is cut short.
    Incomplete,
}

impl WaitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitKind::Open => "open",
            WaitKind::Incomplete => "incomplete",
        }
    }

    fn parse(s: &str) -> WaitKind {
        // Only this module writes the column; anything else reads as the general case.
        if s == "open" {
            WaitKind::Open
        } else {
            WaitKind::Incomplete
        }
    }
}

/// One waiting file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub root: Vec<u8>,
    pub path: Vec<u8>,
    pub kind: WaitKind,
    /// For people: what is missing.
    pub reason: String,
    /// When it began to wait (unix ms).
    pub since_ms: i64,
}

/// Records files that wait. A file already waiting for the same kind of reason keeps its
/// `since_ms` (it has waited since then); its reason is updated.
pub fn note(conn: &mut Connection, files: &[Waiting]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    note_in(&tx, files)?;
    tx.commit()
}

/// Forgets files that no longer wait.
pub fn clear(conn: &mut Connection, paths: &[&[u8]]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut del = tx.prepare_cached("DELETE FROM waiting WHERE path = ?1")?;
        for p in paths {
            del.execute([p])?;
        }
    }
    tx.commit()
}

/// Forgets every file the watcher had waiting: at its start its pending set is empty, and
/// what still waits is found again by its walks and the first scan.
pub fn clear_all(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM waiting", []).map(|_| ())
}

/// A scan of `root` saw these files incomplete: they replace the root's incomplete rows of
/// before (what the scan no longer sees incomplete was taken, changed or is gone). Rows for
/// files open for writing are the watcher's and stay.
pub fn replace_incomplete(
    conn: &mut Connection,
    root: &[u8],
    files: &[Waiting],
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let keep: HashSet<&[u8]> = files.iter().map(|f| f.path.as_slice()).collect();
        let mut old =
            tx.prepare_cached("SELECT path FROM waiting WHERE root = ?1 AND kind = 'incomplete'")?;
        let gone: Vec<Vec<u8>> = old
            .query_map([root], |r| r.get::<_, Vec<u8>>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?
            .into_iter()
            .filter(|p| !keep.contains(p.as_slice()))
            .collect();
        let mut del = tx.prepare_cached("DELETE FROM waiting WHERE path = ?1")?;
        for p in &gone {
            del.execute([p])?;
        }
    }
    note_in(&tx, files)?;
    tx.commit()
}

fn note_in(tx: &rusqlite::Transaction<'_>, files: &[Waiting]) -> rusqlite::Result<()> {
    let mut put = tx.prepare_cached(
        "INSERT INTO waiting (path, root, kind, reason, since_ms) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (path) DO UPDATE SET
             root = excluded.root,
             reason = excluded.reason,
             since_ms = CASE WHEN kind = excluded.kind THEN since_ms ELSE excluded.since_ms END,
             kind = excluded.kind",
    )?;
    for f in files {
        put.execute(params![
            f.path,
            f.root,
            f.kind.as_str(),
            f.reason,
            f.since_ms
        ])?;
    }
    Ok(())
}

/// The files of `root` the watcher has waiting as open for writing: a scan, which cannot see
/// closes, leaves them to the watcher.
pub fn open_paths(conn: &Connection, root: &[u8]) -> rusqlite::Result<HashSet<Vec<u8>>> {
    let mut q =
        conn.prepare_cached("SELECT path FROM waiting WHERE root = ?1 AND kind = 'open'")?;
    let rows = q.query_map([root], |r| r.get::<_, Vec<u8>>(0))?;
    rows.collect()
}

/// How many files wait per root (roots with none are left out).
pub fn count_by_root(conn: &Connection) -> rusqlite::Result<Vec<(Vec<u8>, i64)>> {
    let exists: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'waiting'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    let mut q = conn.prepare_cached("SELECT root, COUNT(*) FROM waiting GROUP BY root")?;
    let rows = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// How many files wait, and up to `limit` of them, the longest waiting first. A database
/// Whether the table exists (a read-only open of a database older than version 5 lacks it).
fn has_table(conn: &Connection) -> rusqlite::Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'waiting'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .is_some())
}

fn waiting_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Waiting> {
    Ok(Waiting {
        root: r.get(0)?,
        path: r.get(1)?,
        kind: WaitKind::parse(&r.get::<_, String>(2)?),
        reason: r.get(3)?,
        since_ms: r.get(4)?,
    })
}

/// older than migration 0005 (read while an older daemon holds it) has none.
pub fn list(conn: &Connection, limit: usize) -> rusqlite::Result<(i64, Vec<Waiting>)> {
    if !has_table(conn)? {
        return Ok((0, Vec::new()));
    }
    let count: i64 = conn.query_row("SELECT COUNT(*) FROM waiting", [], |r| r.get(0))?;
    let mut q = conn.prepare_cached(
        "SELECT root, path, kind, reason, since_ms FROM waiting
         ORDER BY since_ms, path LIMIT ?1",
    )?;
    let rows = q.query_map([limit as i64], waiting_from_row)?;
    Ok((count, rows.collect::<rusqlite::Result<Vec<_>>>()?))
}

/// The file at `path`, if it waits.
pub fn get(conn: &Connection, path: &[u8]) -> rusqlite::Result<Option<Waiting>> {
    if !has_table(conn)? {
        return Ok(None);
    }
    conn.prepare_cached("SELECT root, path, kind, reason, since_ms FROM waiting WHERE path = ?1")?
        .query_row([path], waiting_from_row)
        .optional()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;

    fn w(path: &str, kind: WaitKind, since_ms: i64) -> Waiting {
        Waiting {
            root: b"/r".to_vec(),
            path: path.as_bytes().to_vec(),
            kind,
            reason: format!("{} {since_ms}", kind.as_str()),
            since_ms,
        }
    }

    #[test]
    fn a_row_keeps_its_start_until_its_kind_changes_and_a_scan_replaces_only_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.sqlite3")).unwrap();
        db.call_blocking(|c| {
            note(c, &[w("/r/a.mp4", WaitKind::Incomplete, 10)])?;
            note(c, &[w("/r/a.mp4", WaitKind::Incomplete, 20)])?;
            let (n, rows) = list(c, 10)?;
            assert_eq!((n, rows[0].since_ms), (1, 10), "still waiting since 10");
            assert_eq!(rows[0].reason, "incomplete 20", "the newest reason");
            note(c, &[w("/r/a.mp4", WaitKind::Open, 30)])?;
            assert_eq!(
                list(c, 10)?.1[0].since_ms,
                30,
                "a new kind of wait starts anew"
            );

            note(
                c,
                &[
                    w("/r/b.jpg", WaitKind::Incomplete, 5),
                    w("/r/c.jpg", WaitKind::Incomplete, 6),
                ],
            )?;
            replace_incomplete(c, b"/r", &[w("/r/c.jpg", WaitKind::Incomplete, 7)])?;
            let paths: Vec<_> = list(c, 10)?.1.into_iter().map(|r| r.path).collect();
            assert_eq!(paths, [b"/r/c.jpg".to_vec(), b"/r/a.mp4".to_vec()]);
            assert_eq!(open_paths(c, b"/r")?, HashSet::from([b"/r/a.mp4".to_vec()]));
            clear(c, &[b"/r/c.jpg"])?;
            assert_eq!(list(c, 10)?.0, 1);
            clear_all(c)?;
            assert_eq!(list(c, 10)?.0, 0);
            Ok(())
        })
        .unwrap();
    }
}
