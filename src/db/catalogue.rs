//! The local catalogue: which files exist under the roots, their stat, and the checksum that
//! belongs to exactly that stat (the hash cache).
//!
//! A file whose `(dev, ino, size, mtime_ns, ctime_ns)` is unchanged costs a `stat` and a map
//! lookup on a rescan, nothing more. A change clears the cached checksum and re-opens the
//! file's job. A file seen under a new path with the same inode, size and mtime (a move or
//! rename) inherits the checksum of its old row, so it is neither hashed nor uploaded again.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};

use crate::model::{AssetId, Checksum, JobState, SkipReason};

/// The part of `lstat` that tells whether a file's content may have changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl FileStat {
    #[cfg(unix)]
    pub fn from_metadata(m: &std::fs::Metadata) -> FileStat {
        use std::os::unix::fs::MetadataExt;
        FileStat {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        }
    }
}

/// What the catalogue holds about one path, as a scan compares it.
#[derive(Clone, Copy, Debug)]
pub struct KnownFile {
    pub id: i64,
    pub stat: FileStat,
    pub missing: bool,
}

fn stat_from_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<FileStat> {
    Ok(FileStat {
        dev: r.get::<_, i64>(at)? as u64,
        ino: r.get::<_, i64>(at + 1)? as u64,
        size: r.get::<_, i64>(at + 2)? as u64,
        mtime_ns: r.get(at + 3)?,
        ctime_ns: r.get(at + 4)?,
    })
}

/// For a read-only open of a database of schema `version` before migration 0013 (a daemon
/// of an earlier version may hold it, so it is not migrated): shows `files` (and, before
/// 0012, `roots`) as 0013 has them, through temporary views over the real table, so that
/// `status`, `diff` and `explain` read the same. Before 0012 each root stands for itself
/// (`roots.id` is the root's own path); the asset ids are shown in their stored form
/// ([`super::ids::stored_id_sql`]). Writes nothing (TEMP objects).
pub(super) fn read_old_files_as_v13(conn: &Connection, version: i64) -> rusqlite::Result<()> {
    let asset = super::ids::stored_id_sql("asset_id");
    if version < 12 {
        conn.execute_batch(&format!(
            "CREATE TEMP VIEW roots AS SELECT root AS id, root AS path FROM main.files
                 GROUP BY root;
             CREATE TEMP VIEW files AS
             SELECT id, path, root AS root_id, dev, ino, size, mtime_ns, ctime_ns, checksum,
                    {asset} AS asset_id, last_seen, missing
             FROM main.files;"
        ))
    } else {
        conn.execute_batch(&format!(
            "CREATE TEMP VIEW files AS
             SELECT id, path, root_id, dev, ino, size, mtime_ns, ctime_ns, checksum,
                    {asset} AS asset_id, last_seen, missing
             FROM main.files;"
        ))
    }
}

/// The `roots` row of a root's path, written the first time a file of it is catalogued
/// (migration 0012: each file names its root by this id instead of repeating the path).
fn root_id(conn: &Connection, root: &[u8]) -> rusqlite::Result<i64> {
    let found = conn
        .prepare_cached("SELECT id FROM roots WHERE path = ?1")?
        .query_row([root], |r| r.get(0))
        .optional()?;
    match found {
        Some(id) => Ok(id),
        None => {
            conn.prepare_cached("INSERT INTO roots(path) VALUES (?1)")?
                .execute([root])?;
            Ok(conn.last_insert_rowid())
        }
    }
}

/// Every file known under `root`, keyed by path bytes. A read of the whole table, through a
/// small page cache ([`super::with_small_cache`]).
pub fn load_root(conn: &Connection, root: &[u8]) -> rusqlite::Result<HashMap<Vec<u8>, KnownFile>> {
    super::with_small_cache(conn, || load_root_rows(conn, root))
}

fn load_root_rows(conn: &Connection, root: &[u8]) -> rusqlite::Result<HashMap<Vec<u8>, KnownFile>> {
    let mut stmt = conn.prepare_cached(
        "SELECT path, id, dev, ino, size, mtime_ns, ctime_ns, missing FROM files
         WHERE root_id = (SELECT id FROM roots WHERE path = ?1)",
    )?;
    let rows = stmt.query_map([root], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            KnownFile {
                id: r.get(1)?,
                stat: stat_from_row(r, 2)?,
                missing: r.get::<_, i64>(7)? != 0,
            },
        ))
    })?;
    rows.collect()
}

/// Whether the catalogue already holds `path` with exactly this stat and not marked missing,
/// so that seeing the file again is no news. Writers that compare against an older snapshot
/// (a scan's `load_root`) or against nothing (the watcher) ask this inside their write
/// transaction, so that two of them finding the same change queue it once.
pub fn is_current(conn: &Connection, path: &[u8], stat: &FileStat) -> rusqlite::Result<bool> {
    let row: Option<(FileStat, bool)> = conn
        .prepare_cached(
            "SELECT dev, ino, size, mtime_ns, ctime_ns, missing FROM files WHERE path = ?1",
        )?
        .query_row([path], |r| {
            Ok((stat_from_row(r, 0)?, r.get::<_, i64>(5)? != 0))
        })
        .optional()?;
    Ok(matches!(row, Some((known, false)) if known == *stat))
}

/// Records a new or changed file and (re-)opens its job as `queued`.
///
/// Returns the file id. An unchanged stat keeps the cached checksum (the job is re-opened all
/// the same: the caller only calls this when something about the file is news).
pub fn upsert_and_queue(
    conn: &Connection,
    root: &[u8],
    path: &[u8],
    stat: &FileStat,
    now_ms: i64,
) -> rusqlite::Result<i64> {
    let existing: Option<(i64, FileStat, Option<AssetId>)> = conn
        .prepare_cached(
            "SELECT id, dev, ino, size, mtime_ns, ctime_ns, asset_id FROM files WHERE path = ?1",
        )?
        .query_row([path], |r| Ok((r.get(0)?, stat_from_row(r, 1)?, r.get(6)?)))
        .optional()?;
    let id = match existing {
        Some((id, old, asset)) => {
            if old != *stat {
                if let Some(asset) = asset {
                    super::edited::note(conn, id, &asset.0, now_ms)?;
                }
                let root = root_id(conn, root)?;
                conn.prepare_cached(
                    "UPDATE files SET dev=?2, ino=?3, size=?4, mtime_ns=?5, ctime_ns=?6,
                         checksum=NULL, asset_id=NULL, last_seen=?7, missing=0, root_id=?8
                     WHERE id=?1",
                )?
                .execute(params![
                    id,
                    stat.dev as i64,
                    stat.ino as i64,
                    stat.size as i64,
                    stat.mtime_ns,
                    stat.ctime_ns,
                    now_ms,
                    root
                ])?;
            } else {
                conn.prepare_cached("UPDATE files SET last_seen=?2, missing=0 WHERE id=?1")?
                    .execute(params![id, now_ms])?;
            }
            id
        }
        None => {
            // A move or rename keeps inode, size and mtime: reuse that content's checksum.
            let inherited: Option<Vec<u8>> = conn
                .prepare_cached(
                    "SELECT checksum FROM files
                     WHERE dev=?1 AND ino=?2 AND size=?3 AND mtime_ns=?4 AND checksum IS NOT NULL
                     LIMIT 1",
                )?
                .query_row(
                    params![
                        stat.dev as i64,
                        stat.ino as i64,
                        stat.size as i64,
                        stat.mtime_ns
                    ],
                    |r| r.get(0),
                )
                .optional()?;
            let root = root_id(conn, root)?;
            conn.prepare_cached(
                "INSERT INTO files(path, root_id, dev, ino, size, mtime_ns, ctime_ns, checksum,
                                   last_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                path,
                root,
                stat.dev as i64,
                stat.ino as i64,
                stat.size as i64,
                stat.mtime_ns,
                stat.ctime_ns,
                inherited,
                now_ms
            ])?;
            conn.last_insert_rowid()
        }
    };
    conn.prepare_cached(
        "INSERT INTO jobs(file_id, state, attempts, updated_at) VALUES (?1, 'queued', 0, ?2)
         ON CONFLICT(file_id) DO UPDATE SET state='queued', attempts=0, next_attempt_at=NULL,
             reason=NULL, skip_reason=NULL, outcome=NULL, updated_at=excluded.updated_at",
    )?
    .execute(params![id, now_ms])?;
    Ok(id)
}

/// A file the watcher saw settle: its root and path (bytes) and the stat that stayed the same.
pub struct Settled {
    pub root: Vec<u8>,
    pub path: Vec<u8>,
    pub stat: FileStat,
}

/// Records files the watcher saw settle, in one write transaction, and (re-)opens the job of
/// each that is news. Returns the indices into `files` of those queued.
///
/// The catalogue is compared inside the transaction: a scan may have recorded the same
/// change meanwhile, and then it is queued once, not twice.
pub fn record_settled(
    conn: &mut Connection,
    files: &[Settled],
    now_ms: i64,
) -> rusqlite::Result<Vec<usize>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut queued = Vec::new();
    for (i, f) in files.iter().enumerate() {
        if !is_current(&tx, &f.path, &f.stat)? {
            upsert_and_queue(&tx, &f.root, &f.path, &f.stat, now_ms)?;
            queued.push(i);
        }
    }
    tx.commit()?;
    Ok(queued)
}

/// Marks files a complete scan did not find. Their unfinished jobs are dropped to
/// `skipped` ("vanished"); finished ones keep their state. Nothing on the server changes.
pub fn mark_missing(conn: &Connection, ids: &[i64], now_ms: i64) -> rusqlite::Result<()> {
    let mut file = conn.prepare_cached("UPDATE files SET missing=1 WHERE id=?1")?;
    let mut job = conn.prepare_cached(
        "UPDATE jobs SET state='skipped', skip_reason=?3, reason=NULL, updated_at=?2
         WHERE file_id=?1 AND state NOT IN ('done', 'skipped', 'failed')",
    )?;
    for id in ids {
        file.execute([id])?;
        job.execute(params![id, now_ms, SkipReason::Vanished.code()])?;
    }
    Ok(())
}

/// Records a batch of new or changed files a walk found and queues them, in one write
/// transaction; returns how many were queued.
///
/// Each is compared again inside the transaction ([`is_current`]): the watcher may have
/// recorded the same change since the walk loaded its snapshot, and a change is queued once.
/// `IMMEDIATE`, so that the comparison and the write see the same state.
pub fn record_scan_batch(
    conn: &mut Connection,
    root: &[u8],
    files: &[(Vec<u8>, FileStat)],
    now_ms: i64,
) -> rusqlite::Result<u64> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut queued = 0;
    for (path, stat) in files {
        if !is_current(&tx, path, stat)? {
            upsert_and_queue(&tx, root, path, stat, now_ms)?;
            queued += 1;
        }
    }
    tx.commit()?;
    Ok(queued)
}

/// A complete walk's verdict on the files it did not see: [`mark_missing`] for all of them,
/// in one transaction.
pub fn record_missing(conn: &mut Connection, ids: &[i64], now_ms: i64) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    mark_missing(&tx, ids, now_ms)?;
    tx.commit()
}

/// The asset we already know for this checksum (uploaded or linked by us), if any.
/// `Some(None)` means "on the server, id unknown" (a seed-style server that gave no id).
///
/// Its `known_assets` row if it has one, else the asset a file of that content is backed up
/// as: since migration 0015 a backed-up file's row says what a `known_assets` row said, and
/// the table keeps only what no file says (docs/ARCHITECTURE.md, "State database").
pub fn known_asset(
    conn: &Connection,
    checksum: &Checksum,
) -> rusqlite::Result<Option<Option<AssetId>>> {
    Ok(known_row(conn, checksum)?
        .map(|(id, _)| id)
        .or(said_by_files(conn, checksum)?.map(Some)))
}

/// The `known_assets` row of `checksum`: (asset id, when verified).
fn known_row(
    conn: &Connection,
    checksum: &Checksum,
) -> rusqlite::Result<Option<(Option<AssetId>, Option<i64>)>> {
    conn.prepare_cached("SELECT asset_id, verified_at FROM known_assets WHERE checksum = ?1")?
        .query_row([&checksum.0[..]], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

/// The asset a file with this content is backed up as, if one is.
fn said_by_files(conn: &Connection, checksum: &Checksum) -> rusqlite::Result<Option<AssetId>> {
    conn.prepare_cached(
        "SELECT asset_id FROM files WHERE checksum = ?1 AND asset_id IS NOT NULL LIMIT 1",
    )?
    .query_row([&checksum.0[..]], |r| r.get(0))
    .optional()
}

/// Whether the files of this content that are backed up all name `asset_id` (and one does).
fn files_say_only(
    conn: &Connection,
    checksum: &Checksum,
    asset_id: &AssetId,
) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT COUNT(*) > 0 AND MIN(asset_id) = ?2 AND MAX(asset_id) = ?2 FROM files
         WHERE checksum = ?1 AND asset_id IS NOT NULL",
    )?
    .query_row(params![&checksum.0[..], asset_id], |r| r.get(0))
}

/// Remembers that the server holds `checksum` as `asset_id` (`None`: it did not say; an id
/// known already stays), verified now or not (a verification known already stays).
///
/// What a file says ([`known_asset`]) counts as a row: when the fact, merged, is verified,
/// has an id and is what the checksum's backed-up files say, it needs no row and its row
/// goes (the caller links the file first, as [`super::queue::finish_done`] does);
/// otherwise it is written.
pub fn remember_asset(
    conn: &Connection,
    checksum: &Checksum,
    asset_id: Option<&AssetId>,
    verified: bool,
    now_ms: i64,
) -> rusqlite::Result<()> {
    let (known_id, known_verified) = match known_row(conn, checksum)? {
        Some(row) => row,
        None => match said_by_files(conn, checksum)? {
            Some(id) => (Some(id), Some(now_ms)),
            None => (None, None),
        },
    };
    let asset_id = asset_id.cloned().or(known_id);
    let verified_at = verified.then_some(now_ms).or(known_verified);
    if let (Some(id), Some(_)) = (&asset_id, verified_at) {
        if files_say_only(conn, checksum, id)? {
            conn.prepare_cached("DELETE FROM known_assets WHERE checksum = ?1")?
                .execute([&checksum.0[..]])?;
            return Ok(());
        }
    }
    conn.prepare_cached(
        "INSERT INTO known_assets(checksum, asset_id, verified_at)
         VALUES (?1, ?2, ?3)
         ON CONFLICT(checksum) DO UPDATE SET
             asset_id = excluded.asset_id, verified_at = excluded.verified_at",
    )?
    .execute(params![&checksum.0[..], asset_id, verified_at])?;
    Ok(())
}

/// What the server holds as what: (checksum, asset id, verified).
pub type KnownFact = (Vec<u8>, Option<AssetId>, bool);

/// Every fact [`known_asset`] answers from, as (checksum, asset id, verified): the rows of
/// `known_assets` and what backed-up files say for the checksums without one. For tests and
/// upgrades; reads both tables whole.
pub fn known_assets(conn: &Connection) -> rusqlite::Result<Vec<KnownFact>> {
    let mut stmt = conn.prepare(
        "SELECT checksum, asset_id, verified_at IS NOT NULL FROM known_assets
         UNION
         SELECT f.checksum, f.asset_id, 1 FROM files f
         WHERE f.asset_id IS NOT NULL AND f.checksum IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM known_assets k WHERE k.checksum = f.checksum)
         ORDER BY 1, 2",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    rows.collect()
}

/// Forgets every server-side fact (another server or user is configured now): all files
/// are checked again, but their checksums stay cached. The mirror and its tombstones belong
/// to the old server and go too (its `meta` facts are [`super::meta::adopt_server`]'s).
pub fn forget_server(conn: &Connection, now_ms: i64) -> rusqlite::Result<()> {
    conn.execute_batch(
        "UPDATE files SET asset_id = NULL; DELETE FROM known_assets;
         DELETE FROM remote_assets; DELETE FROM tombstones; DELETE FROM edited;",
    )?;
    super::library::forget_server(conn)?;
    conn.execute(
        "UPDATE jobs SET state='queued', attempts=0, next_attempt_at=NULL, reason=NULL,
             skip_reason=NULL, outcome=NULL, updated_at=?1
         WHERE file_id IN (SELECT id FROM files WHERE missing = 0)",
        [now_ms],
    )?;
    Ok(())
}

/// Files a complete scan no longer found in their root (whatever their job's state).
pub fn missing_files(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT COUNT(*) FROM files WHERE missing = 1")?
        .query_row([], |r| r.get(0))
}

/// Number of jobs per state (every state present, zero when none).
///
/// Only files still present locally: a file gone from its root is not "done" any more, nor
/// waiting; [`missing_files`] counts those apart.
pub fn counts_by_state(conn: &Connection) -> rusqlite::Result<Vec<(JobState, i64)>> {
    let mut counts: HashMap<String, i64> = HashMap::new();
    let mut stmt = conn.prepare(
        "SELECT j.state, COUNT(*) FROM jobs j JOIN files f ON f.id = j.file_id
         WHERE f.missing = 0 GROUP BY j.state",
    )?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (s, n) = row?;
        counts.insert(s, n);
    }
    Ok(JobState::ALL
        .iter()
        .map(|st| (*st, counts.get(st.as_str()).copied().unwrap_or(0)))
        .collect())
}

/// Present files linked to a server asset, as (path, asset id), in path order: what
/// `immish-sync demo` reports as it appears.
pub fn linked_files(conn: &Connection) -> rusqlite::Result<Vec<(Vec<u8>, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT path, asset_id FROM files WHERE asset_id IS NOT NULL AND missing = 0
         ORDER BY path",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, super::ids::id(r, 1)?)))?;
    rows.collect()
}

/// What one root holds, for `status --json` and the status page (present files only).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RootCounts {
    /// The root as the files table records it.
    pub root: Vec<u8>,
    pub files: i64,
    pub backed_up: i64,
    /// Not backed up yet: queued, in flight, or waiting to retry.
    pub queued: i64,
    pub failed: i64,
    /// Not uploaded because their photo was deleted or trashed on the server.
    pub held_back: i64,
    pub bytes: i64,
    pub backed_up_bytes: i64,
}

/// [`RootCounts`] of every root that has files, in root order.
pub fn root_counts(conn: &Connection) -> rusqlite::Result<Vec<RootCounts>> {
    let mut stmt = conn.prepare_cached(
        "SELECT r.path, COUNT(*),
                COALESCE(SUM(j.state = 'done'), 0),
                COALESCE(SUM(j.state IN ('queued', 'hashing', 'checking', 'uploading',
                                         'verifying', 'retry')), 0),
                COALESCE(SUM(j.state = 'failed'), 0),
                COALESCE(SUM(j.state = 'skipped' AND j.skip_reason IN (?1, ?2)), 0),
                COALESCE(SUM(f.size), 0),
                COALESCE(SUM(CASE WHEN j.state = 'done' THEN f.size ELSE 0 END), 0)
         FROM files f JOIN roots r ON r.id = f.root_id LEFT JOIN jobs j ON j.file_id = f.id
         WHERE f.missing = 0 GROUP BY r.path ORDER BY r.path",
    )?;
    let rows = stmt.query_map(
        [
            crate::model::SkipReason::DeletedOnServer.code(),
            crate::model::SkipReason::TrashedOnServer.code(),
        ],
        |r| {
            Ok(RootCounts {
                root: r.get(0)?,
                files: r.get(1)?,
                backed_up: r.get(2)?,
                queued: r.get(3)?,
                failed: r.get(4)?,
                held_back: r.get(5)?,
                bytes: r.get(6)?,
                backed_up_bytes: r.get(7)?,
            })
        },
    )?;
    rows.collect()
}

/// What `scan --dry-run` asks of one catalogued file.
#[derive(Clone, Debug)]
pub struct DryRunFile {
    pub size: u64,
    pub mtime_ns: i64,
    /// Valid for the stat above.
    pub checksum: Option<Checksum>,
    /// Its job is `done` (uploaded or linked).
    pub done: bool,
}

/// Every catalogued file under `root` with its checksum and whether it is backed up.
pub fn dry_run_root(
    conn: &Connection,
    root: &[u8],
) -> rusqlite::Result<HashMap<Vec<u8>, DryRunFile>> {
    let mut stmt = conn.prepare_cached(
        "SELECT f.path, f.size, f.mtime_ns, f.checksum, j.state = 'done'
         FROM files f LEFT JOIN jobs j ON j.file_id = f.id
         WHERE f.root_id = (SELECT id FROM roots WHERE path = ?1)",
    )?;
    let rows = stmt.query_map([root], |r| {
        let sum: Option<Vec<u8>> = r.get(3)?;
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            DryRunFile {
                size: r.get::<_, i64>(1)? as u64,
                mtime_ns: r.get(2)?,
                checksum: sum.as_deref().and_then(Checksum::from_slice),
                done: r.get::<_, Option<bool>>(4)?.unwrap_or(false),
            },
        ))
    })?;
    rows.collect()
}

/// Whether the server holds `sum` as far as this state knows: an asset we uploaded or
/// linked, or a live asset of `owner` in the mirror.
pub fn known_on_server(conn: &Connection, sum: &Checksum, owner: &str) -> rusqlite::Result<bool> {
    Ok(known_asset(conn, sum)?.is_some()
        || super::mirror::own_live_asset(conn, sum, owner)?.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{queue, Db};

    fn stat(ino: u64, mtime_ns: i64) -> FileStat {
        FileStat {
            dev: 1,
            ino,
            size: 10,
            mtime_ns,
            ctime_ns: mtime_ns,
        }
    }

    /// What the server holds as what is said once (migration 0015): by the backed-up file
    /// when the file says it, by a `known_assets` row otherwise, and a link that is not
    /// verified neither adds a row nor takes the verification of what a file says.
    #[test]
    fn a_known_asset_is_said_once_and_kept_when_its_file_stops_saying_it() {
        use crate::model::Checksum;
        use queue::Outcome;
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("s.sqlite3")).unwrap();
        db.call_blocking(|c| {
            let rows = |c: &Connection| -> rusqlite::Result<i64> {
                c.query_row("SELECT COUNT(*) FROM known_assets", [], |r| r.get(0))
            };
            let (sum, seed) = (Checksum([7; 20]), Checksum([8; 20]));
            let a = AssetId("5e1d0c3a-0000-4000-8000-000000000001".into());
            let batch = vec![
                (b"/r/a.jpg".to_vec(), stat(1, 5)),
                (b"/r/copy-of-a.jpg".to_vec(), stat(2, 5)),
                (b"/r/seed.jpg".to_vec(), stat(3, 5)),
            ];
            record_scan_batch(c, b"/r", &batch, 1)?;
            let id = |c: &Connection, p: &[u8]| -> rusqlite::Result<i64> {
                c.query_row("SELECT id FROM files WHERE path = ?1", [p], |r| r.get(0))
            };
            let (fa, fcopy, fseed) = (
                id(c, b"/r/a.jpg")?,
                id(c, b"/r/copy-of-a.jpg")?,
                id(c, b"/r/seed.jpg")?,
            );
            for (f, st, s) in [
                (fa, stat(1, 5), sum),
                (fcopy, stat(2, 5), sum),
                (fseed, stat(3, 5), seed),
            ] {
                queue::record_hash(c, f, &st, &s, 2)?;
            }
            queue::finish_done(c, fa, &sum, Some(&a), Outcome::Uploaded, true, 2)?;
            assert_eq!(rows(c)?, 0, "the file says it");
            assert_eq!(known_asset(c, &sum)?, Some(Some(a.clone())));
            // Linked by the catalogue's word, not verified: still said by the files only,
            // still verified.
            queue::finish_done(c, fcopy, &sum, Some(&a), Outcome::Linked, false, 3)?;
            // A seed-style server gives no id: only a row can say that.
            queue::finish_done(c, fseed, &seed, None, Outcome::Linked, false, 3)?;
            assert_eq!(rows(c)?, 1);
            assert_eq!(
                known_assets(c)?,
                vec![
                    (sum.0.to_vec(), Some(a.clone()), true),
                    (seed.0.to_vec(), None, false)
                ]
            );
            // Both files change: the fact goes back to a row, verified, once.
            let changed = vec![
                (b"/r/a.jpg".to_vec(), stat(1, 9)),
                (b"/r/copy-of-a.jpg".to_vec(), stat(2, 9)),
            ];
            record_scan_batch(c, b"/r", &changed, 4)?;
            assert_eq!(rows(c)?, 2);
            assert_eq!(known_asset(c, &sum)?, Some(Some(a.clone())));
            assert!(known_assets(c)?.contains(&(sum.0.to_vec(), Some(a.clone()), true)));
            // Another server: nothing is known any more (the files unlinked first, so that
            // they hand nothing back).
            queue::record_hash(c, fa, &stat(1, 9), &sum, 5)?;
            queue::finish_done(c, fa, &sum, Some(&a), Outcome::Uploaded, true, 5)?;
            assert_eq!(rows(c)?, 1, "said by the file again");
            forget_server(c, 6)?;
            assert_eq!(known_assets(c)?, vec![]);
            Ok(())
        })
        .unwrap();
    }

    /// The scan and the watcher may both find one change; it is queued once.
    #[test]
    fn a_change_recorded_twice_is_queued_once_and_a_gone_file_stops_its_job() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("s.sqlite3")).unwrap();
        db.call_blocking(|c| {
            let batch = vec![
                (b"/r/a.jpg".to_vec(), stat(1, 5)),
                (b"/r/b.jpg".to_vec(), stat(2, 5)),
            ];
            assert_eq!(record_scan_batch(c, b"/r", &batch, 1)?, 2);
            assert_eq!(record_scan_batch(c, b"/r", &batch, 2)?, 0, "no news");
            let changed = vec![(b"/r/a.jpg".to_vec(), stat(1, 6))];
            assert_eq!(record_scan_batch(c, b"/r", &changed, 3)?, 1);

            let known = load_root(c, b"/r")?;
            let b = known[&b"/r/b.jpg".to_vec()].id;
            record_missing(c, &[b], 4)?;
            assert!(load_root(c, b"/r")?[&b"/r/b.jpg".to_vec()].missing);
            let skipped = queue::recent(c, &[JobState::Skipped], 10)?;
            assert_eq!(skipped.len(), 1);
            assert_eq!(skipped[0].path, b"/r/b.jpg");
            // Seen again, it is news again.
            assert_eq!(record_scan_batch(c, b"/r", &batch[1..], 5)?, 1);
            Ok(())
        })
        .unwrap();
    }

    /// `load_root` reads the whole table in order: through a small page cache, which it
    /// leaves as big as it was set (docs/BENCHMARKS.md, "Session 8").
    ///
    /// Checked in a process of its own: the bundled SQLite is built with
    /// `SQLITE_ENABLE_MEMORY_MANAGEMENT`, so every connection's page cache is one group for
    /// the process, and a cache at its size takes the group's oldest page, another
    /// connection's, instead of one of its own. Beside the other tests' connections it then
    /// grows past its size (seen: 471 KB of a 256 KiB cache).
    #[test]
    fn loading_a_root_leaves_the_page_cache_small() {
        let name = "db::catalogue::tests::load_root_through_a_small_cache_alone";
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--ignored", "--test-threads=1"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    #[ignore = "run alone, in a process of its own, by loading_a_root_leaves_the_page_cache_small"]
    fn load_root_through_a_small_cache_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("s.sqlite3")).unwrap();
        db.call_blocking(|c| {
            let batch: Vec<(Vec<u8>, FileStat)> = (0..10_000u64)
                .map(|i| {
                    let path = format!("/r/{:02}/summer-in-the-mountains-{i:05}.jpg", i % 50);
                    (path.into_bytes(), stat(i, 5))
                })
                .collect();
            record_scan_batch(c, b"/r", &batch, 1)?;
            let size: i64 = c.query_row("PRAGMA cache_size", [], |r| r.get(0))?;
            super::super::shrink(c)?;
            assert_eq!(load_root(c, b"/r")?.len(), 10_000);
            let after = crate::db::cache_used(c);
            assert_eq!(
                c.query_row("PRAGMA cache_size", [], |r| r.get::<_, i64>(0))?,
                size,
                "the cache size is set back"
            );
            c.query_row("SELECT SUM(length(path) + size) FROM files", [], |r| {
                r.get::<_, i64>(0)
            })?;
            let plain = crate::db::cache_used(c);
            assert!(
                plain > 600_000,
                "a plain read of the table cached {plain} bytes"
            );
            assert!(
                after <= 300 * 1024,
                "load_root left {after} bytes in the cache (a plain read: {plain})"
            );
            Ok(())
        })
        .unwrap();
    }
}
