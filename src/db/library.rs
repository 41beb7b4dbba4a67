//! The library's state (migration 0006): which backed-up files are still to be sorted into
//! albums and groups (`library_todo`, filled by a trigger whenever a job becomes `done`), the
//! album cache, the memberships and groups decided and whether the server has them, and how
//! long a Live Photo's still has waited for its video.
//!
//! Must not: decide album names or what forms a group (that is `src/library/`); every
//! function here is one query or one transaction.

use rusqlite::{params, Connection, OptionalExtension};

use super::ids::{self, IdRef};

/// A backed-up file the library has not sorted yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TodoFile {
    pub file_id: i64,
    pub root: Vec<u8>,
    pub path: Vec<u8>,
    /// `None` when the job is no longer `done` (changed again meanwhile) or the server
    /// gave no id: nothing to sort then.
    pub asset_id: Option<String>,
}

/// A present file beside another with the same stem (`IMG_1.HEIC` for `IMG_1.MOV`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sibling {
    pub file_id: i64,
    pub path: Vec<u8>,
    /// Set only when its job is `done`.
    pub asset_id: Option<String>,
    /// Its job's state (`queued`, `done`…).
    pub state: String,
}

/// A Live Photo or a stack as it should be on the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// `live` or `stack`.
    pub kind: String,
    /// The folder and stem the members share (`/photos/2024/IMG_1`).
    pub stem: Vec<u8>,
    /// The still then its video, or the primary then the others.
    pub assets: Vec<String>,
}

/// Up to `limit` files waiting to be sorted.
pub fn todo(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<TodoFile>> {
    let mut stmt = conn.prepare_cached(
        "SELECT t.file_id, r.path, f.path, CASE WHEN j.state = 'done' THEN f.asset_id END
         FROM library_todo t JOIN files f ON f.id = t.file_id JOIN roots r ON r.id = f.root_id
              JOIN jobs j ON j.file_id = t.file_id
         ORDER BY t.file_id LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit as i64], |r| {
        Ok(TodoFile {
            file_id: r.get(0)?,
            root: r.get(1)?,
            path: r.get(2)?,
            asset_id: ids::opt_id(r, 3)?,
        })
    })?;
    rows.collect()
}

/// Every present file whose path starts with `prefix` (`/photos/IMG_1.`), the caller keeps
/// those with one extension after it. A range on the unique path index.
pub fn with_prefix(conn: &Connection, prefix: &[u8]) -> rusqlite::Result<Vec<Sibling>> {
    let Some((&last, head)) = prefix.split_last() else {
        return Ok(Vec::new());
    };
    let mut upper = head.to_vec();
    if last == u8::MAX {
        return Ok(Vec::new());
    }
    upper.push(last + 1);
    let mut stmt = conn.prepare_cached(
        "SELECT f.id, f.path, CASE WHEN j.state = 'done' THEN f.asset_id END, j.state
         FROM files f JOIN jobs j ON j.file_id = f.id
         WHERE f.path >= ?1 AND f.path < ?2 AND f.missing = 0",
    )?;
    let rows = stmt.query_map(params![prefix, upper], |r| {
        Ok(Sibling {
            file_id: r.get(0)?,
            path: r.get(1)?,
            asset_id: ids::opt_id(r, 2)?,
            state: r.get(3)?,
        })
    })?;
    rows.collect()
}

/// Every present file directly in `folder` (with its slash) whose name holds `token`: the
/// frames of one burst (docs/ARCHITECTURE.md#library). A range on the unique path index.
pub fn in_folder_with(
    conn: &Connection,
    folder: &[u8],
    token: &[u8],
) -> rusqlite::Result<Vec<Sibling>> {
    let Some((&last, head)) = folder.split_last() else {
        return Ok(Vec::new());
    };
    let mut upper = head.to_vec();
    upper.push(last.saturating_add(1));
    let mut stmt = conn.prepare_cached(
        "SELECT f.id, f.path, CASE WHEN j.state = 'done' THEN f.asset_id END, j.state
         FROM files f JOIN jobs j ON j.file_id = f.id
         WHERE f.path >= ?1 AND f.path < ?2 AND f.missing = 0
           AND instr(substr(f.path, ?3), ?4) > 0 AND instr(substr(f.path, ?3), X'2F') = 0",
    )?;
    let rows = stmt.query_map(
        params![folder, upper, folder.len() as i64 + 1, token],
        |r| {
            Ok(Sibling {
                file_id: r.get(0)?,
                path: r.get(1)?,
                asset_id: ids::opt_id(r, 2)?,
                state: r.get(3)?,
            })
        },
    )?;
    rows.collect()
}

/// What sorting a batch of files decided, written in one transaction with the removal of
/// their notes: album memberships (name, asset) and groups.
pub fn record_sorted(
    conn: &mut Connection,
    file_ids: &[i64],
    members: &[(String, String)],
    groups: &[Group],
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut add = tx.prepare_cached(
            "INSERT OR IGNORE INTO album_members(name, asset_id) VALUES (?1, ?2)",
        )?;
        for (name, asset) in members {
            add.execute(params![name, IdRef(asset)])?;
        }
        let mut group = tx.prepare_cached(
            "INSERT INTO library_groups(kind, stem, assets) VALUES (?1, ?2, ?3)
             ON CONFLICT(kind, stem) DO UPDATE SET assets = excluded.assets",
        )?;
        for g in groups {
            group.execute(params![g.kind, g.stem, g.assets.join(" ")])?;
        }
        let mut done = tx.prepare_cached("DELETE FROM library_todo WHERE file_id = ?1")?;
        let mut waited = tx.prepare_cached("DELETE FROM pair_waits WHERE file_id = ?1")?;
        for id in file_ids {
            done.execute([id])?;
            waited.execute([id])?;
        }
    }
    tx.commit()
}

/// Memberships not yet sent, up to `limit`, grouped by album name (in name order).
pub fn unsent_members(
    conn: &Connection,
    limit: usize,
) -> rusqlite::Result<Vec<(String, Vec<String>)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, asset_id FROM album_members WHERE sent_at IS NULL
         ORDER BY name, asset_id LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit as i64], |r| {
        Ok((r.get::<_, String>(0)?, ids::id(r, 1)?))
    })?;
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for row in rows {
        let (name, asset) = row?;
        match out.last_mut() {
            Some((n, assets)) if *n == name => assets.push(asset),
            _ => out.push((name, vec![asset])),
        }
    }
    Ok(out)
}

/// The server answered for these members of album `name`.
pub fn mark_members_sent(
    conn: &mut Connection,
    name: &str,
    assets: &[String],
    now_ms: i64,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "UPDATE album_members SET sent_at = ?3 WHERE name = ?1 AND asset_id = ?2",
        )?;
        for a in assets {
            stmt.execute(params![name, IdRef(a), now_ms])?;
        }
    }
    tx.commit()
}

/// The album chosen for `name` before, if any.
pub fn album_id(conn: &Connection, name: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT album_id FROM albums WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()
}

pub fn set_album_id(conn: &Connection, name: &str, id: &str, now_ms: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO albums(name, album_id, found_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(name) DO UPDATE SET album_id = excluded.album_id, found_at = excluded.found_at",
    )?
    .execute(params![name, id, now_ms])?;
    Ok(())
}

/// The album cached for `name` is gone from the server.
pub fn forget_album(conn: &Connection, name: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM albums WHERE name = ?1")?
        .execute([name])?;
    Ok(())
}

/// Groups whose assets the server does not hold as decided yet.
pub fn unsent_groups(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<Group>> {
    let mut stmt = conn.prepare_cached(
        "SELECT kind, stem, assets FROM library_groups WHERE sent IS NOT assets
         ORDER BY kind, stem LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit as i64], |r| {
        let assets: String = r.get(2)?;
        Ok(Group {
            kind: r.get(0)?,
            stem: r.get(1)?,
            assets: assets.split(' ').map(str::to_owned).collect(),
        })
    })?;
    rows.collect()
}

/// The server accepted `group` as it is (also for a Live Photo linked at its upload).
pub fn mark_group_sent(conn: &Connection, group: &Group) -> rusqlite::Result<()> {
    let assets = group.assets.join(" ");
    conn.prepare_cached(
        "INSERT INTO library_groups(kind, stem, assets, sent) VALUES (?1, ?2, ?3, ?3)
         ON CONFLICT(kind, stem) DO UPDATE SET sent = excluded.sent",
    )?
    .execute(params![group.kind, group.stem, assets])?;
    Ok(())
}

/// Since when (unix ms) the still `file_id` has waited for its video; starts the wait now
/// when it had not.
pub fn pair_wait_since(conn: &Connection, file_id: i64, now_ms: i64) -> rusqlite::Result<i64> {
    conn.prepare_cached("INSERT OR IGNORE INTO pair_waits(file_id, since_ms) VALUES (?1, ?2)")?
        .execute(params![file_id, now_ms])?;
    conn.prepare_cached("SELECT since_ms FROM pair_waits WHERE file_id = ?1")?
        .query_row([file_id], |r| r.get(0))
}

/// Puts a job back to wait until `at_ms` without counting an attempt: waiting for a Live
/// Photo's video is not a failure of the still.
pub fn defer(
    conn: &Connection,
    file_id: i64,
    at_ms: i64,
    reason: &str,
    now_ms: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE jobs SET state = 'retry', next_attempt_at = ?2, reason = ?3, skip_reason = NULL,
             updated_at = ?4 WHERE file_id = ?1",
    )?
    .execute(params![file_id, at_ms, reason, now_ms])?;
    Ok(())
}

/// Compares a root's album and stack settings with those its files were sorted with; when
/// they differ, every backed-up file of the root is noted to be sorted again. Returns how
/// many were noted.
pub fn adopt_root_settings(
    conn: &mut Connection,
    root: &[u8],
    settings: &str,
) -> rusqlite::Result<usize> {
    let tx = conn.transaction()?;
    let old: Option<String> = tx
        .query_row(
            "SELECT settings FROM library_roots WHERE root = ?1",
            [root],
            |r| r.get(0),
        )
        .optional()?;
    let mut n = 0;
    if old.as_deref() != Some(settings) {
        n = tx.execute(
            "INSERT OR IGNORE INTO library_todo(file_id)
             SELECT f.id FROM files f JOIN jobs j ON j.file_id = f.id
             WHERE f.root_id = (SELECT id FROM roots WHERE path = ?1) AND j.state = 'done'",
            [root],
        )?;
        tx.execute(
            "INSERT INTO library_roots(root, settings) VALUES (?1, ?2)
             ON CONFLICT(root) DO UPDATE SET settings = excluded.settings",
            params![root, settings],
        )?;
    }
    tx.commit()?;
    Ok(n)
}

/// What is left for the library to do: (files to sort, memberships to send, groups to send).
pub fn pending(conn: &Connection) -> rusqlite::Result<(i64, i64, i64)> {
    conn.query_row(
        "SELECT (SELECT COUNT(*) FROM library_todo),
                (SELECT COUNT(*) FROM album_members WHERE sent_at IS NULL),
                (SELECT COUNT(*) FROM library_groups WHERE sent IS NOT assets)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
}

/// Another server or user: its albums and groups mean nothing there. The files are sorted
/// again as they are backed up anew.
pub fn forget_server(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "DELETE FROM albums; DELETE FROM album_members; DELETE FROM library_groups;
         DELETE FROM pair_waits; DELETE FROM library_todo;",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("s.sqlite3")).unwrap();
        (dir, db)
    }

    fn add_file(c: &Connection, id: i64, path: &[u8], state: &str, asset: Option<&str>) {
        c.execute(
            "INSERT OR IGNORE INTO roots(id, path) VALUES (1, X'2F72')",
            [],
        )
        .unwrap();
        c.execute(
            "INSERT INTO files(id, path, root_id, dev, ino, size, mtime_ns, ctime_ns, asset_id,
                 last_seen) VALUES (?1, ?2, 1, 1, ?1, 1, 1, 1, ?3, 0)",
            params![id, path, asset],
        )
        .unwrap();
        c.execute(
            "INSERT INTO jobs(file_id, state, updated_at) VALUES (?1, 'queued', 0)",
            [id],
        )
        .unwrap();
        c.execute(
            "UPDATE jobs SET state = ?2 WHERE file_id = ?1",
            params![id, state],
        )
        .unwrap();
    }

    /// A job that becomes `done` is noted for sorting by the trigger, once; sorting it
    /// removes the note and keeps what was decided.
    #[test]
    fn done_jobs_are_noted_and_sorting_records_once() {
        let (_d, db) = db();
        db.call_blocking(|c| {
            add_file(c, 1, b"/r/a/IMG_1.HEIC", "done", Some("s"));
            add_file(c, 2, b"/r/a/IMG_1.MOV", "queued", None);
            c.execute("UPDATE jobs SET state='done' WHERE file_id = 1", [])?;
            let todo = todo(c, 10)?;
            assert_eq!(todo.len(), 1);
            assert_eq!(todo[0].asset_id.as_deref(), Some("s"));
            let members = vec![("a".to_string(), "s".to_string())];
            record_sorted(c, &[1], &members, &[])?;
            record_sorted(c, &[], &members, &[])?;
            assert!(super::todo(c, 10)?.is_empty());
            assert_eq!(pending(c)?, (0, 1, 0));
            assert_eq!(unsent_members(c, 10)?, vec![("a".into(), vec!["s".into()])]);
            mark_members_sent(c, "a", &["s".into()], 5)?;
            assert_eq!(pending(c)?, (0, 0, 0));
            Ok(())
        })
        .unwrap();
    }

    /// Siblings are found by their shared stem, a longer name with the same start is not.
    #[test]
    fn prefix_finds_same_stem_only_by_range() {
        let (_d, db) = db();
        db.call_blocking(|c| {
            add_file(c, 1, b"/r/a/IMG_1.HEIC", "done", Some("s"));
            add_file(c, 2, b"/r/a/IMG_1.MOV", "queued", None);
            add_file(c, 3, b"/r/a/IMG_10.MOV", "done", Some("x"));
            add_file(c, 4, b"/r/a/IMG_1/b.jpg", "done", Some("y"));
            let s = with_prefix(c, b"/r/a/IMG_1.")?;
            let mut ids: Vec<i64> = s.iter().map(|s| s.file_id).collect();
            ids.sort();
            assert_eq!(ids, vec![1, 2]);
            // The queued video has no asset yet.
            assert!(s.iter().any(|s| s.file_id == 2 && s.asset_id.is_none()));
            Ok(())
        })
        .unwrap();
    }

    /// A group is resent when its members change, and not when they stay the same.
    #[test]
    fn groups_are_pending_until_sent_as_they_are() {
        let (_d, db) = db();
        db.call_blocking(|c| {
            let g = Group {
                kind: "stack".into(),
                stem: b"/r/IMG_1".to_vec(),
                assets: vec!["j".into(), "r".into()],
            };
            record_sorted(c, &[], &[], std::slice::from_ref(&g))?;
            assert_eq!(unsent_groups(c, 10)?, vec![g.clone()]);
            mark_group_sent(c, &g)?;
            record_sorted(c, &[], &[], std::slice::from_ref(&g))?;
            assert!(unsent_groups(c, 10)?.is_empty());
            let bigger = Group {
                assets: vec!["j".into(), "r".into(), "h".into()],
                ..g
            };
            record_sorted(c, &[], &[], std::slice::from_ref(&bigger))?;
            assert_eq!(unsent_groups(c, 10)?, vec![bigger]);
            Ok(())
        })
        .unwrap();
    }
}
