//! The mirror's tables: the user's own assets on the server (`remote_assets`) and the
//! tombstones of assets of ours that the user trashed or deleted there (`tombstones`).
//!
//! Every change the mirror learns of, from a pull or a live event, goes through [`apply`],
//! which also settles what it means for our files, in the same transaction:
//!
//! - an asset of ours (its checksum is in `known_assets`, or a file is backed up as it or
//!   with its checksum) that is trashed or deleted gets a tombstone, leaves `known_assets`
//!   (after its files are unlinked: they hand what they said to it), and its files' `done`
//!   jobs become `skipped` with [`SkipReason::DeletedOnServer`] (or are queued again with
//!   `reupload_deleted`);
//! - a live asset whose checksum has a tombstone (a restore, or the same photo uploaded again
//!   by another client) removes the tombstone and makes the held-back files `done` again.
//!
//! Both rules look at the state a change leaves, not at the transition, so applying the same
//! change twice, or a pull after the live event that told the same, changes nothing more.
//! Held-back files are found by their skip code, never by the sentence people read.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};

use super::queue::{self, Outcome};
use crate::model::{AssetId, Checksum, RemoteAsset, SkipReason};

/// What [`apply`] does about assets of ours that went away.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Queue the files again instead of holding them back.
    pub reupload_deleted: bool,
}

/// One thing the mirror learned about the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The whole record (a pull, `on_upload_success`, `on_asset_update`).
    Upsert(RemoteAsset),
    /// Moved to the trash (`on_asset_trash`).
    Trashed(AssetId),
    /// Back from the trash (`on_asset_restore`).
    Restored(AssetId),
    /// Deleted for good (`AssetDeleteV1`, `on_asset_delete`, a full reconcile). `checksum`
    /// helps when the mirror never held the asset; `id` may be empty when only the
    /// checksum is known.
    Deleted {
        id: AssetId,
        checksum: Option<Checksum>,
    },
}

/// What [`apply`] did, summed over changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Upserts written (a new asset, or a record that differs from the stored one).
    pub upserted: u64,
    /// Upserts equal to the stored record: nothing was written.
    pub unchanged: u64,
    /// Upserts ignored because the mirror holds a newer `updatedAt`.
    pub stale: u64,
    pub trashed: u64,
    pub restored: u64,
    pub deleted: u64,
    /// Events about assets the mirror does not hold: a pull should fill them in.
    pub unknown: u64,
    /// Tombstones written.
    pub tombstoned: u64,
    /// Files whose `done` job became `skipped` (deleted on the server).
    pub held_back: u64,
    /// Files whose job was queued again (`reupload_deleted`).
    pub requeued: u64,
    /// Held-back files made `done` again (restored on the server).
    pub released: u64,
}

impl Applied {
    pub fn add(&mut self, o: &Applied) {
        self.upserted += o.upserted;
        self.unchanged += o.unchanged;
        self.stale += o.stale;
        self.trashed += o.trashed;
        self.restored += o.restored;
        self.deleted += o.deleted;
        self.unknown += o.unknown;
        self.tombstoned += o.tombstoned;
        self.held_back += o.held_back;
        self.requeued += o.requeued;
        self.released += o.released;
    }
}

/// Parses a server timestamp (ISO 8601 / RFC 3339, e.g. `2024-05-01T10:00:00.123Z`) to
/// unix milliseconds.
pub fn server_time_ms(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

struct Row {
    checksum: Option<Checksum>,
    /// The server's `updatedAt` in unix ms (migration 0012 stores it so).
    updated_ms: Option<i64>,
}

fn row(conn: &Connection, id: &AssetId) -> rusqlite::Result<Option<Row>> {
    conn.prepare_cached("SELECT checksum, updated_at FROM remote_assets WHERE id = ?1")?
        .query_row([id], |r| {
            Ok(Row {
                checksum: r
                    .get::<_, Option<Vec<u8>>>(0)?
                    .as_deref()
                    .and_then(Checksum::from_slice),
                updated_ms: r.get(1)?,
            })
        })
        .optional()
}

/// The `remote_ids` row of an owner or device id, written the first time it is seen
/// (migration 0012: the few ids every mirrored row repeats are stored once).
fn remote_id(conn: &Connection, name: &str) -> rusqlite::Result<i64> {
    let found = conn
        .prepare_cached("SELECT id FROM remote_ids WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    match found {
        Some(id) => Ok(id),
        None => {
            conn.prepare_cached("INSERT INTO remote_ids(name) VALUES (?1)")?
                .execute([name])?;
            Ok(conn.last_insert_rowid())
        }
    }
}

/// For a read-only open of a database of schema `version` before migration 0013 (a daemon
/// of an earlier version may hold it, so it is not migrated): shows `remote_assets` (and,
/// before 0012, `remote_ids`) as 0013 has them, through temporary views over the real
/// table, so that `status`, `mirror` and `diff` read the same. Before 0012 each owner or
/// device id stands for itself (`remote_ids.id` is the id's own text), which is all the
/// readers' joins need; the asset ids are shown in their stored form
/// ([`super::ids::stored_id_sql`]). Writes nothing (TEMP objects).
pub(super) fn read_old_mirror_as_v13(conn: &Connection, version: i64) -> rusqlite::Result<()> {
    let id = super::ids::stored_id_sql("id");
    if version < 12 {
        conn.execute_batch(&format!(
            "CREATE TEMP VIEW remote_ids AS
             SELECT owner_id AS id, owner_id AS name FROM main.remote_assets
             UNION SELECT device_id, device_id FROM main.remote_assets
                 WHERE device_id IS NOT NULL;
             CREATE TEMP VIEW remote_assets AS
             SELECT {id} AS id, owner_id AS owner, checksum, original_file_name,
                    file_created_at,
                    CAST(round((julianday(updated_at) - 2440587.5) * 86400000) AS INTEGER)
                        AS updated_at,
                    visibility, is_trashed, device_id AS device, deleted_at, synced_at
             FROM main.remote_assets;"
        ))
    } else {
        conn.execute_batch(&format!(
            "CREATE TEMP VIEW remote_assets AS
             SELECT {id} AS id, owner, checksum, original_file_name, file_created_at,
                    updated_at, visibility, is_trashed, device, deleted_at, synced_at
             FROM main.remote_assets;"
        ))
    }
}

/// The checksum of an asset: from the mirror, else from what we uploaded or linked.
fn checksum_of(conn: &Connection, id: &AssetId) -> rusqlite::Result<Option<Checksum>> {
    if id.0.is_empty() {
        return Ok(None);
    }
    if let Some(r) = row(conn, id)? {
        if r.checksum.is_some() {
            return Ok(r.checksum);
        }
    }
    let from = |sql: &str| -> rusqlite::Result<Option<Checksum>> {
        conn.prepare_cached(sql)?
            .query_row([id], |r| r.get::<_, Vec<u8>>(0))
            .optional()
            .map(|o| o.as_deref().and_then(Checksum::from_slice))
    };
    match from("SELECT checksum FROM known_assets WHERE asset_id = ?1 LIMIT 1")? {
        Some(c) => Ok(Some(c)),
        None => {
            from("SELECT checksum FROM files WHERE asset_id = ?1 AND checksum IS NOT NULL LIMIT 1")
        }
    }
}

/// Applies one change inside the caller's transaction.
pub fn apply(
    conn: &Connection,
    change: &Change,
    policy: Policy,
    now_ms: i64,
    out: &mut Applied,
) -> rusqlite::Result<()> {
    match change {
        Change::Upsert(a) => {
            let updated_ms = a.updated_at.as_deref().and_then(server_time_ms);
            if let (Some(p), Some(n)) = (row(conn, &a.id)?.and_then(|r| r.updated_ms), updated_ms) {
                if n < p {
                    // A page fetched before a change we already applied.
                    out.stale += 1;
                    return Ok(());
                }
            }
            let owner = remote_id(conn, &a.owner_id)?;
            let device = match &a.device_id {
                Some(d) => Some(remote_id(conn, d)?),
                None => None,
            };
            // A record equal to the stored one writes nothing (the `WHERE` of the update;
            // docs/ARCHITECTURE.md, "A pull of what the mirror holds writes nothing"): a
            // full pull or the overlap of an incremental one re-reads thousands of them.
            // `synced_at` then keeps the time of the row's last write; the reconcile reads
            // it together with its own pull's seen ids ([`live_rows_before`]).
            let written = conn
                .prepare_cached(
                    "INSERT INTO remote_assets(id, owner, checksum, original_file_name,
                     file_created_at, updated_at, visibility, is_trashed, device, deleted_at,
                     synced_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, ?10)
                 ON CONFLICT(id) DO UPDATE SET
                     owner = excluded.owner,
                     checksum = COALESCE(excluded.checksum, remote_assets.checksum),
                     original_file_name = excluded.original_file_name,
                     file_created_at = COALESCE(excluded.file_created_at,
                                                remote_assets.file_created_at),
                     updated_at = COALESCE(excluded.updated_at, remote_assets.updated_at),
                     visibility = COALESCE(excluded.visibility, remote_assets.visibility),
                     is_trashed = excluded.is_trashed,
                     device = COALESCE(excluded.device, remote_assets.device),
                     deleted_at = NULL,
                     synced_at = excluded.synced_at
                 WHERE remote_assets.deleted_at IS NOT NULL
                    OR remote_assets.owner IS NOT excluded.owner
                    OR remote_assets.checksum IS NOT
                           COALESCE(excluded.checksum, remote_assets.checksum)
                    OR remote_assets.original_file_name IS NOT excluded.original_file_name
                    OR remote_assets.file_created_at IS NOT
                           COALESCE(excluded.file_created_at, remote_assets.file_created_at)
                    OR remote_assets.updated_at IS NOT
                           COALESCE(excluded.updated_at, remote_assets.updated_at)
                    OR remote_assets.visibility IS NOT
                           COALESCE(excluded.visibility, remote_assets.visibility)
                    OR remote_assets.is_trashed IS NOT excluded.is_trashed
                    OR remote_assets.device IS NOT
                           COALESCE(excluded.device, remote_assets.device)",
                )?
                .execute(params![
                    &a.id,
                    owner,
                    a.checksum.as_ref().map(|c| &c.0[..]),
                    a.original_file_name,
                    super::fields::date_bind(a.file_created_at.as_deref()),
                    updated_ms,
                    super::fields::visibility_bind(a.visibility.as_deref()),
                    a.is_trashed,
                    device,
                    now_ms
                ])?;
            if written == 0 {
                out.unchanged += 1;
            } else {
                out.upserted += 1;
            }
            let sum = match a.checksum {
                Some(c) => Some(c),
                None => checksum_of(conn, &a.id)?,
            };
            if let Some(sum) = sum {
                if a.is_trashed {
                    gone(conn, &a.id, &sum, "trashed", policy, now_ms, out)?;
                } else {
                    live(conn, &a.id, &sum, now_ms, out)?;
                }
            }
        }
        Change::Trashed(id) => {
            let n = conn
                .prepare_cached(
                    "UPDATE remote_assets SET is_trashed = 1, synced_at = ?2 WHERE id = ?1",
                )?
                .execute(params![id, now_ms])?;
            if n == 0 {
                out.unknown += 1;
            } else {
                out.trashed += 1;
            }
            if let Some(sum) = checksum_of(conn, id)? {
                gone(conn, id, &sum, "trashed", policy, now_ms, out)?;
            }
        }
        Change::Restored(id) => {
            let n = conn
                .prepare_cached(
                    "UPDATE remote_assets SET is_trashed = 0, deleted_at = NULL, synced_at = ?2
                     WHERE id = ?1",
                )?
                .execute(params![id, now_ms])?;
            if n == 0 {
                out.unknown += 1;
            } else {
                out.restored += 1;
            }
            if let Some(sum) = checksum_of(conn, id)? {
                live(conn, id, &sum, now_ms, out)?;
            }
        }
        Change::Deleted { id, checksum } => {
            let n = conn
                .prepare_cached(
                    "UPDATE remote_assets SET deleted_at = COALESCE(deleted_at, ?2),
                         synced_at = ?2
                     WHERE id = ?1",
                )?
                .execute(params![id, now_ms])?;
            out.deleted += n as u64;
            let sum = match checksum_of(conn, id)? {
                Some(c) => Some(c),
                None => *checksum,
            };
            if let Some(sum) = sum {
                gone(conn, id, &sum, "deleted", policy, now_ms, out)?;
            }
        }
    }
    Ok(())
}

/// Applies `changes` in one transaction ([`apply`] for each) and returns what they did.
pub fn apply_changes(
    conn: &mut Connection,
    changes: &[Change],
    policy: Policy,
    now_ms: i64,
) -> rusqlite::Result<Applied> {
    let tx = conn.transaction()?;
    let mut out = Applied::default();
    for ch in changes {
        apply(&tx, ch, policy, now_ms, &mut out)?;
    }
    tx.commit()?;
    Ok(out)
}

/// What a full reconcile suspects, before the server is asked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Candidates {
    /// Mirrored assets held as existing that the pull did not see and whose row was last
    /// written before the pull began ([`live_rows_before`]).
    pub stale_rows: Vec<(AssetId, Option<Checksum>)>,
    /// Assets we uploaded or linked that the mirror does not hold as existing
    /// ([`known_without_live_row`]).
    pub unmirrored: Vec<(Checksum, Option<AssetId>)>,
}

/// The suspects of a full reconcile of a pull that began at `started_ms` and saw the
/// assets for which `seen` is true.
///
/// A row is a suspect when both say it may be gone: the pull did not see it, and nothing
/// (a live event, an upload) wrote it since the pull began. A pull that saw a record equal to
/// the stored one does not write it ([`apply`]), so after a quiet full pull nearly every row
/// is older than the pull: `seen` is applied here, row by row, so that only the few unseen
/// ones are collected.
pub fn reconcile_candidates(
    conn: &Connection,
    started_ms: i64,
    seen: impl Fn(&str) -> bool,
) -> rusqlite::Result<Candidates> {
    // Both read their whole table, through a small page cache.
    super::with_small_cache(conn, || {
        Ok(Candidates {
            stale_rows: live_rows_before(conn, started_ms, &seen)?,
            unmirrored: known_without_live_row(conn)?,
        })
    })
}

/// Whether the schema has the mirror's tables (a database of an older immish-sync that was
/// only read since, never opened for writing, has not).
pub fn has_tables(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'remote_assets')",
        [],
        |r| r.get(0),
    )
}

/// Files whose content is `sum`, or that are backed up as `id`.
fn files_of(conn: &Connection, id: &AssetId, sum: &Checksum) -> rusqlite::Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM files WHERE checksum = ?1
         UNION SELECT id FROM files WHERE asset_id = ?2",
    )?;
    let rows = stmt.query_map(params![&sum.0[..], id], |r| r.get(0))?;
    rows.collect()
}

/// An asset with content `sum` was trashed or deleted. When it is ours, remember that (a
/// tombstone) and hold its files back, or queue them again with `reupload_deleted`.
fn gone(
    conn: &Connection,
    id: &AssetId,
    sum: &Checksum,
    reason: &str,
    policy: Policy,
    now_ms: i64,
    out: &mut Applied,
) -> rusqlite::Result<()> {
    // A live asset of ours with this content (the user uploaded the photo again from
    // another client) means the content is still on the server.
    let other_live: Option<AssetId> = conn
        .prepare_cached(
            "SELECT id FROM remote_assets WHERE checksum = ?1 AND id <> ?2
                 AND is_trashed = 0 AND deleted_at IS NULL LIMIT 1",
        )?
        .query_row(params![&sum.0[..], id], |r| r.get(0))
        .optional()?;
    if let Some(other) = other_live {
        // Our files are backed up as that one now.
        conn.prepare_cached("UPDATE known_assets SET asset_id = ?2 WHERE checksum = ?1")?
            .execute(params![&sum.0[..], &other])?;
        if !id.0.is_empty() {
            conn.prepare_cached("UPDATE files SET asset_id = ?2 WHERE asset_id = ?1")?
                .execute(params![id, &other])?;
        }
        return Ok(());
    }
    let ours: bool = conn
        .prepare_cached(
            "SELECT EXISTS(SELECT 1 FROM known_assets WHERE checksum = ?1)
                 OR EXISTS(SELECT 1 FROM tombstones WHERE checksum = ?1)
                 OR EXISTS(SELECT 1 FROM files WHERE asset_id = ?2)
                 OR EXISTS(SELECT 1 FROM files WHERE checksum = ?1 AND asset_id IS NOT NULL)",
        )?
        .query_row(params![&sum.0[..], id], |r| r.get(0))?;
    if !ours {
        return Ok(());
    }
    let asset = (!id.0.is_empty()).then_some(id);
    let written = conn
        .prepare_cached(
            "INSERT INTO tombstones(checksum, asset_id, reason, at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(checksum) DO UPDATE SET
                 reason = excluded.reason,
                 asset_id = COALESCE(excluded.asset_id, tombstones.asset_id),
                 at = excluded.at
             WHERE tombstones.reason = 'trashed' AND excluded.reason = 'deleted'",
        )?
        .execute(params![&sum.0[..], asset, reason, now_ms])?;
    out.tombstoned += written as u64;
    let files = files_of(conn, id, sum)?;
    let mut job = if policy.reupload_deleted {
        conn.prepare_cached(
            "UPDATE jobs SET state = 'queued', attempts = 0, next_attempt_at = NULL,
                 reason = NULL, skip_reason = NULL, outcome = NULL, updated_at = ?2
             WHERE file_id = ?1 AND state = 'done'",
        )?
    } else {
        conn.prepare_cached(
            "UPDATE jobs SET state = 'skipped', skip_reason = ?3, reason = NULL,
                 outcome = NULL, next_attempt_at = NULL, updated_at = ?2
             WHERE file_id = ?1 AND state = 'done'",
        )?
    };
    let mut unlink = conn.prepare_cached("UPDATE files SET asset_id = NULL WHERE id = ?1")?;
    for f in files {
        let n = if policy.reupload_deleted {
            job.execute(params![f, now_ms])?
        } else {
            job.execute(params![f, now_ms, SkipReason::DeletedOnServer.code()])?
        };
        if n > 0 {
            unlink.execute([f])?;
            if policy.reupload_deleted {
                out.requeued += 1;
            } else {
                out.held_back += 1;
            }
        }
    }
    // After the files are unlinked: each hands what it said to `known_assets` (migration
    // 0015's triggers), which is forgotten here with the rest.
    conn.prepare_cached("DELETE FROM known_assets WHERE checksum = ?1")?
        .execute([&sum.0[..]])?;
    Ok(())
}

/// An asset with content `sum` exists (not trashed). If that content was held back as
/// deleted, it is on the server again: drop the tombstone and make its files `done`.
fn live(
    conn: &Connection,
    id: &AssetId,
    sum: &Checksum,
    now_ms: i64,
    out: &mut Applied,
) -> rusqlite::Result<()> {
    let n = conn
        .prepare_cached("DELETE FROM tombstones WHERE checksum = ?1")?
        .execute([&sum.0[..]])?;
    let [r1, r2] = SkipReason::RELEASED_BY_RESTORE.map(SkipReason::code);
    let held: Vec<i64> = {
        let mut stmt = conn.prepare_cached(
            "SELECT f.id FROM files f JOIN jobs j ON j.file_id = f.id
             WHERE f.checksum = ?1 AND f.missing = 0 AND j.state = 'skipped'
                   AND j.skip_reason IN (?2, ?3)",
        )?;
        let rows = stmt.query_map(params![&sum.0[..], r1, r2], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    if n == 0 && held.is_empty() {
        return Ok(());
    }
    super::catalogue::remember_asset(conn, sum, Some(id), true, now_ms)?;
    let mut file = conn.prepare_cached("UPDATE files SET asset_id = ?2 WHERE id = ?1")?;
    let mut job = conn.prepare_cached(
        "UPDATE jobs SET state = 'done', outcome = 'linked', reason = NULL, skip_reason = NULL,
             updated_at = ?2
         WHERE file_id = ?1",
    )?;
    for f in held {
        file.execute(params![f, id])?;
        job.execute(params![f, now_ms])?;
        out.released += 1;
    }
    Ok(())
}

/// One upload the server confirmed (its bulk check named our asset for our checksum, or the
/// asset read back carries our checksum), for [`record_verified_uploads`]. The job becomes
/// `done`, and the record goes into the mirror at once, in the same transaction: it is as
/// fresh as a pull would make it, and `diff` and dedup need no pull to know it. The catalogue
/// counts it as verified when the record carries the checksum (seed servers leave it out).
#[derive(Clone, Debug)]
pub struct VerifiedUpload {
    pub file_id: i64,
    pub checksum: Checksum,
    pub asset_id: AssetId,
    /// What the mirror holds for the asset from now on (its checksum is ours: the server
    /// confirmed it).
    pub record: RemoteAsset,
    pub outcome: Outcome,
    /// The sidecar it went up with (`None`: none), recorded with it (docs/ARCHITECTURE.md#sidecars).
    pub sidecar: Option<super::sidecars::SeenSidecar>,
}

/// Records verified uploads (one, or a batch that one `bulk-upload-check` confirmed), in one
/// transaction.
pub fn record_verified_uploads(
    conn: &mut Connection,
    uploads: Vec<VerifiedUpload>,
    now_ms: i64,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for u in uploads {
        super::sidecars::record(&tx, u.file_id, u.sidecar.as_ref(), now_ms)?;
        verified_upload(
            &tx,
            u.file_id,
            &u.checksum,
            &u.asset_id,
            u.record,
            u.outcome,
            now_ms,
        )?;
    }
    tx.commit()
}

fn verified_upload(
    tx: &Connection,
    file_id: i64,
    checksum: &Checksum,
    asset_id: &AssetId,
    record: RemoteAsset,
    outcome: Outcome,
    now_ms: i64,
) -> rusqlite::Result<()> {
    let verified = record.checksum.is_some();
    queue::finish_done(
        tx,
        file_id,
        checksum,
        Some(asset_id),
        outcome,
        verified,
        now_ms,
    )?;
    let mut applied = Applied::default();
    apply(
        tx,
        &Change::Upsert(record),
        Policy::default(),
        now_ms,
        &mut applied,
    )
}

/// The tombstone for a checksum: (asset id, `trashed` | `deleted`).
pub fn tombstone(
    conn: &Connection,
    sum: &Checksum,
) -> rusqlite::Result<Option<(Option<AssetId>, String)>> {
    conn.prepare_cached("SELECT asset_id, reason FROM tombstones WHERE checksum = ?1")?
        .query_row([&sum.0[..]], |r| {
            Ok((r.get::<_, Option<AssetId>>(0)?, r.get(1)?))
        })
        .optional()
}

/// An asset of `owner` with this checksum that exists and is not in the trash.
pub fn own_live_asset(
    conn: &Connection,
    sum: &Checksum,
    owner: &str,
) -> rusqlite::Result<Option<AssetId>> {
    own_asset(conn, sum, owner, false)
}

/// An asset of `owner` with this checksum that is in the trash (and none that is not: the
/// caller asked [`own_live_asset`] first). For the dedup check with a complete mirror.
pub fn own_trashed_asset(
    conn: &Connection,
    sum: &Checksum,
    owner: &str,
) -> rusqlite::Result<Option<AssetId>> {
    own_asset(conn, sum, owner, true)
}

/// An asset of `owner` with this checksum, not deleted for good, in the trash or not.
fn own_asset(
    conn: &Connection,
    sum: &Checksum,
    owner: &str,
    trashed: bool,
) -> rusqlite::Result<Option<AssetId>> {
    if owner.is_empty() {
        return Ok(None);
    }
    conn.prepare_cached(
        "SELECT id FROM remote_assets
         WHERE checksum = ?1 AND owner = (SELECT id FROM remote_ids WHERE name = ?2)
               AND is_trashed = ?3 AND deleted_at IS NULL
         LIMIT 1",
    )?
    .query_row(params![&sum.0[..], owner, trashed], |r| {
        r.get::<_, AssetId>(0)
    })
    .optional()
}

/// Assets the mirror holds as existing whose row was last written before `before_ms` and
/// for which `seen` is false: the suspects of a full reconcile that did not see them.
pub fn live_rows_before(
    conn: &Connection,
    before_ms: i64,
    seen: impl Fn(&str) -> bool,
) -> rusqlite::Result<Vec<(AssetId, Option<Checksum>)>> {
    let mut stmt = conn.prepare(
        "SELECT id, checksum FROM remote_assets WHERE deleted_at IS NULL AND synced_at < ?1",
    )?;
    let mut rows = stmt.query([before_ms])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        // Borrowed from the row (a UUID decoded on the stack): a seen id (nearly all of
        // them) costs no allocation.
        let Some(id) = super::ids::with_id_text(r.get_ref(0)?, |id| {
            (!seen(id)).then(|| AssetId(id.to_owned()))
        })?
        else {
            continue;
        };
        out.push((
            id,
            r.get::<_, Option<Vec<u8>>>(1)?
                .as_deref()
                .and_then(Checksum::from_slice),
        ));
    }
    Ok(out)
}

/// Assets we uploaded or linked (`known_assets`, and what backed-up files say since
/// migration 0015) that the mirror does not hold as existing:
/// after a full pull, these were deleted while nobody was looking (or predate the mirror).
pub fn known_without_live_row(
    conn: &Connection,
) -> rusqlite::Result<Vec<(Checksum, Option<AssetId>)>> {
    let mut stmt = conn.prepare(
        "SELECT k.checksum, k.asset_id FROM known_assets k
         WHERE NOT EXISTS (SELECT 1 FROM remote_assets r
                           WHERE r.checksum = k.checksum AND r.deleted_at IS NULL)
         UNION
         SELECT f.checksum, f.asset_id FROM files f
         WHERE f.asset_id IS NOT NULL AND f.checksum IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM known_assets k WHERE k.checksum = f.checksum)
           AND NOT EXISTS (SELECT 1 FROM remote_assets r
                           WHERE r.checksum = f.checksum AND r.deleted_at IS NULL)",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Option<AssetId>>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (sum, id) = row?;
        if let Some(sum) = Checksum::from_slice(&sum) {
            out.push((sum, id));
        }
    }
    Ok(out)
}

/// Forgets every mirrored asset (a `SyncResetV1`); tombstones stay, they are ours.
pub fn wipe(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM remote_assets", [])?;
    Ok(())
}

/// What `immish-sync mirror` counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Existing, not in the trash, per visibility.
    pub by_visibility: Vec<(String, i64)>,
    pub live: i64,
    pub trashed: i64,
    pub deleted: i64,
    pub tombstones: i64,
    /// Files held back because their asset was deleted on the server.
    pub held_back: i64,
}

pub fn counts(conn: &Connection) -> rusqlite::Result<Counts> {
    let mut c = Counts::default();
    // Grouped and sorted by the visibility's text, whatever its stored form (migration 0017).
    let mut stmt = conn.prepare(&format!(
        "SELECT COALESCE({}, 'unknown'), COUNT(*) FROM remote_assets
         WHERE deleted_at IS NULL AND is_trashed = 0 GROUP BY 1 ORDER BY 1",
        super::fields::visibility_text_sql("visibility")
    ))?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (v, n) = row?;
        c.live += n;
        c.by_visibility.push((v, n));
    }
    (c.trashed, c.deleted) = conn.query_row(
        "SELECT COALESCE(SUM(deleted_at IS NULL AND is_trashed = 1), 0),
                COALESCE(SUM(deleted_at IS NOT NULL), 0)
         FROM remote_assets",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    c.tombstones = conn.query_row("SELECT COUNT(*) FROM tombstones", [], |r| r.get(0))?;
    c.held_back = held_back(conn)?;
    Ok(c)
}

/// Files (still present locally) held back because their asset was deleted on the server.
pub fn held_back(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT COUNT(*) FROM jobs j JOIN files f ON f.id = j.file_id
         WHERE j.state = 'skipped' AND j.state <> 'done' AND j.skip_reason = ?1
               AND f.missing = 0",
        [SkipReason::DeletedOnServer.code()],
        |r| r.get(0),
    )
}

/// Present local files whose only server copy is in the server's trash: held back as
/// trashed (a tombstone that says `trashed`, or the duplicate check's "in the trash"). The
/// trash empties itself, so these are not backed up. Returns the total and the first
/// `limit` paths, in path order.
pub fn trash_only(conn: &Connection, limit: usize) -> rusqlite::Result<(i64, Vec<Vec<u8>>)> {
    let sql = "FROM jobs j JOIN files f ON f.id = j.file_id
         LEFT JOIN tombstones t ON t.checksum = f.checksum
         WHERE j.state = 'skipped' AND j.state <> 'done' AND f.missing = 0
               AND ((j.skip_reason = ?1 AND t.reason = 'trashed') OR j.skip_reason = ?2)";
    let (deleted, trashed) = (
        SkipReason::DeletedOnServer.code(),
        SkipReason::TrashedOnServer.code(),
    );
    let total = conn
        .prepare_cached(&format!("SELECT COUNT(*) {sql}"))?
        .query_row(params![deleted, trashed], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(&format!("SELECT f.path {sql} ORDER BY f.path LIMIT ?3"))?;
    let paths = stmt
        .query_map(params![deleted, trashed, limit as i64], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok((total, paths))
}

/// A local file the server does not have, for `immish-sync diff`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalOnly {
    pub path: Vec<u8>,
    /// The job's state and reason, e.g. `queued` or `skipped: deleted on the server…`.
    pub state: String,
}

/// A server asset that came from this machine whose file is gone locally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteOnly {
    pub id: AssetId,
    pub original_file_name: String,
    /// The path it was backed up from, when the catalogue still knows it.
    pub path: Option<Vec<u8>>,
}

/// What [`diff`] found: the two lists of `immish-sync diff`, and assets of files whose bytes
/// changed since (present locally as a newer version).
pub struct Diff {
    pub local_only: Vec<LocalOnly>,
    pub remote_only: Vec<RemoteOnly>,
    pub changed: Vec<RemoteOnly>,
    /// Assets whose local file was moved to the archive, or deleted, after upload
    /// (docs/ARCHITECTURE.md#after-upload): not "gone".
    pub archived: Vec<RemoteOnly>,
    pub removed: Vec<RemoteOnly>,
}

/// The two lists of `immish-sync diff`: local files whose content is neither an existing
/// asset of `owner` in the mirror nor one we uploaded or linked, and existing assets that came from this machine
/// (`device_id`, or backed up from one of our files) whose every local copy is gone.
pub fn diff(conn: &Connection, owner: &str, device_id: &str) -> rusqlite::Result<Diff> {
    // Content the server holds: own existing assets of the mirror, and what we uploaded or
    // linked (the mirror may not have pulled our latest uploads yet; what the user deleted
    // has left `known_assets`).
    let mut on_server: HashMap<Vec<u8>, ()> = HashMap::new();
    {
        let mut stmt = conn.prepare(
            "SELECT checksum FROM remote_assets
             WHERE checksum IS NOT NULL AND deleted_at IS NULL AND is_trashed = 0
                   AND (?1 = '' OR owner = (SELECT id FROM remote_ids WHERE name = ?1))
             UNION SELECT checksum FROM known_assets
             UNION SELECT checksum FROM files WHERE asset_id IS NOT NULL AND checksum IS NOT NULL",
        )?;
        for sum in stmt.query_map([owner], |r| r.get::<_, Vec<u8>>(0))? {
            on_server.insert(sum?, ());
        }
    }
    let mut local_only = Vec::new();
    // Local content: checksum -> a present path; asset id -> the last path backed up as it.
    let mut present: HashMap<Vec<u8>, ()> = HashMap::new();
    let mut backed_up_as: HashMap<String, Vec<u8>> = HashMap::new();
    let mut path_of_sum: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    {
        let mut stmt = conn.prepare(
            "SELECT f.path, f.checksum, f.asset_id, f.missing, j.state, j.reason, j.skip_reason
             FROM files f LEFT JOIN jobs j ON j.file_id = f.id ORDER BY f.path",
        )?;
        let rows = stmt.query_map([], |r| {
            let skip = queue::skip_reason_of(r.get(6)?);
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Option<Vec<u8>>>(1)?,
                super::ids::opt_id(r, 2)?,
                r.get::<_, i64>(3)? != 0,
                r.get::<_, Option<String>>(4)?,
                queue::shown_reason(skip, r.get(5)?),
            ))
        })?;
        for row in rows {
            let (path, sum, asset, missing, state, reason) = row?;
            if let Some(a) = asset {
                backed_up_as.insert(a, path.clone());
            }
            if let Some(s) = &sum {
                path_of_sum.entry(s.clone()).or_insert_with(|| path.clone());
            }
            if missing {
                continue;
            }
            match &sum {
                Some(s) if on_server.contains_key(s) => {
                    present.insert(s.clone(), ());
                }
                _ => {
                    if let Some(s) = &sum {
                        present.insert(s.clone(), ());
                    }
                    let state = match (state, reason) {
                        (Some(s), Some(r)) => format!("{s}: {r}"),
                        (Some(s), None) if sum.is_none() => format!("{s}, not hashed yet"),
                        (Some(s), None) => s,
                        (None, _) => "not queued".to_owned(),
                    };
                    local_only.push(LocalOnly { path, state });
                }
            }
        }
    }
    let mut remote_only = Vec::new();
    // Old assets of files whose bytes changed since (docs/ARCHITECTURE.md#edited-files).
    let changed: HashMap<String, Vec<u8>> =
        super::edited::changed_assets(conn)?.into_iter().collect();
    let mut changed_list = Vec::new();
    let released = super::after_upload::released(conn)?;
    let (mut archived, mut removed) = (Vec::new(), Vec::new());
    let mut stmt = conn.prepare(
        "SELECT r.id, r.checksum, r.original_file_name, d.name
         FROM remote_assets r LEFT JOIN remote_ids d ON d.id = r.device
         WHERE r.deleted_at IS NULL
               AND (?1 = '' OR r.owner = (SELECT id FROM remote_ids WHERE name = ?1))
         ORDER BY r.original_file_name, r.id",
    )?;
    let rows = stmt.query_map([owner], |r| {
        Ok((
            super::ids::id(r, 0)?,
            r.get::<_, Option<Vec<u8>>>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
        ))
    })?;
    for row in rows {
        let (id, sum, name, device) = row?;
        let from_here_path = backed_up_as
            .get(&id)
            .cloned()
            .or_else(|| sum.as_ref().and_then(|s| path_of_sum.get(s).cloned()));
        let from_here = from_here_path.is_some()
            || (!device_id.is_empty() && device.as_deref() == Some(device_id));
        if !from_here {
            continue;
        }
        let still_here = sum.as_ref().is_some_and(|s| present.contains_key(s));
        if let (false, Some((action, p))) = (still_here, released.get(&id)) {
            let a = RemoteOnly {
                id: AssetId(id),
                original_file_name: name,
                path: Some(p.clone()),
            };
            if action == "archive" {
                archived.push(a);
            } else {
                removed.push(a);
            }
        } else if let (false, Some(p)) = (still_here, changed.get(&id)) {
            changed_list.push(RemoteOnly {
                id: AssetId(id),
                original_file_name: name,
                path: Some(p.clone()),
            });
        } else if !still_here {
            remote_only.push(RemoteOnly {
                id: AssetId(id),
                original_file_name: name,
                path: from_here_path,
            });
        }
    }
    Ok(Diff {
        local_only,
        remote_only,
        changed: changed_list,
        archived,
        removed,
    })
}

#[cfg(test)]
mod tests;

/// How the mirror last saw one asset, for `explain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssetSeen {
    Live,
    Trashed,
    /// Deleted for good; when we learned it (unix ms).
    Deleted(i64),
}

/// The mirror's view of asset `id`; `None` when it has no row for it.
pub fn asset_seen(conn: &Connection, id: &str) -> rusqlite::Result<Option<AssetSeen>> {
    conn.prepare_cached("SELECT is_trashed, deleted_at FROM remote_assets WHERE id = ?1")?
        .query_row([super::ids::IdRef(id)], |r| {
            let trashed: i64 = r.get(0)?;
            let deleted: Option<i64> = r.get(1)?;
            Ok(match (deleted, trashed) {
                (Some(at), _) => AssetSeen::Deleted(at),
                (None, 0) => AssetSeen::Live,
                (None, _) => AssetSeen::Trashed,
            })
        })
        .optional()
}
