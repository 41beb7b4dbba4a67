//! `sidecars`: the XMP sidecar each uploaded photo went up with, and the comparison that
//! finds one created or edited since (docs/ARCHITECTURE.md#sidecars).

use rusqlite::{params, Connection, OptionalExtension};

/// A sidecar file as a scan saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenSidecar {
    pub path: Vec<u8>,
    pub size: u64,
    pub mtime_ns: i64,
}

/// A sidecar that changed after its photo went up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LateSidecar {
    pub sidecar: Vec<u8>,
    pub photo: Vec<u8>,
    /// `false`: edited; `true`: the photo went up without a sidecar and this one came later.
    pub added: bool,
}

/// Records what photo `file_id` was uploaded with (`None`: no sidecar). The file's row says
/// that it went up (`files.sent`, migration 0016); a `sidecars` row is written only for a
/// sidecar sent, or kept when it counts a late sidecar reported (`reported_ms`): no row of a
/// sent file means it went up without one.
pub fn record(
    c: &Connection,
    file_id: i64,
    sent: Option<&SeenSidecar>,
    now_ms: i64,
) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE files SET sent = 1 WHERE id = ?1 AND sent IS NOT 1")?
        .execute([file_id])?;
    match sent {
        Some(s) => {
            c.prepare_cached(
                "INSERT INTO sidecars (file_id, path, size, mtime_ns, sent_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(file_id) DO UPDATE SET path = excluded.path, size = excluded.size,
                     mtime_ns = excluded.mtime_ns, sent_ms = excluded.sent_ms",
            )?
            .execute(params![file_id, s.path, s.size as i64, s.mtime_ns, now_ms])?;
        }
        None => {
            c.prepare_cached("DELETE FROM sidecars WHERE file_id = ?1 AND reported_ms IS NULL")?
                .execute([file_id])?;
            c.prepare_cached(
                "UPDATE sidecars SET path = NULL, size = NULL, mtime_ns = NULL, sent_ms = ?2
                 WHERE file_id = ?1",
            )?
            .execute(params![file_id, now_ms])?;
        }
    }
    Ok(())
}

/// The photos a sidecar path can belong to: `IMG_1.jpg.xmp` → `IMG_1.jpg`; `IMG_1.xmp` →
/// `IMG_1.<any extension>` in the same folder. Each with its row, if it has one.
fn photos_of(c: &Connection, sidecar: &[u8]) -> rusqlite::Result<Vec<(i64, Vec<u8>, Row)>> {
    let base = &sidecar[..sidecar.len().saturating_sub(4)];
    let mut out = Vec::new();
    let mut exact = c.prepare_cached(
        "SELECT f.id, f.path, f.sent IS NOT NULL, s.path, s.size, s.mtime_ns
         FROM files f LEFT JOIN sidecars s ON s.file_id = f.id WHERE f.path = ?1",
    )?;
    let rows = exact.query_map([base], row)?;
    for r in rows {
        out.push(r?);
    }
    // `IMG_1.` up to `IMG_1/` ('/' follows '.'): the names with that stem and any extension.
    let mut lo = base.to_vec();
    lo.push(b'.');
    let mut hi = base.to_vec();
    hi.push(b'/');
    let mut stem = c.prepare_cached(
        "SELECT f.id, f.path, f.sent IS NOT NULL, s.path, s.size, s.mtime_ns
         FROM files f LEFT JOIN sidecars s ON s.file_id = f.id
         WHERE f.path > ?1 AND f.path < ?2",
    )?;
    let rows = stem.query_map([lo, hi], row)?;
    for r in rows {
        let r = r?;
        // Only a direct extension: `IMG_1.jpg`, not `IMG_1.jpg.mov` (that one's stem
        // sidecar is `IMG_1.jpg.xmp`).
        let ext = &r.1[base.len() + 1..];
        if !ext.contains(&b'.') && !out.iter().any(|o| o.0 == r.0) {
            out.push(r);
        }
    }
    Ok(out)
}

/// (went up by our upload since 0007, the sidecar it went up with or was reported with: path,
/// size, mtime).
type Row = (bool, Option<Vec<u8>>, Option<i64>, Option<i64>);

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, Vec<u8>, Row)> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        (r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?),
    ))
}

/// Compares the sidecars a scan saw with what their photos went up with: a sidecar whose
/// stat differs from the one sent, or one that came after a photo that went up without any,
/// is returned and written as the photo's sidecar now, so that each change is reported
/// once. Photos uploaded before this table existed (or only linked by dedup) are not sent
/// (`files.sent` NULL) and are not compared.
pub fn late(c: &mut Connection, seen: &[SeenSidecar]) -> rusqlite::Result<Vec<LateSidecar>> {
    let tx = c.transaction()?;
    let mut out = Vec::new();
    for s in seen {
        for (file_id, photo, (has_row, path, size, mtime)) in photos_of(&tx, &s.path)? {
            if !has_row {
                continue;
            }
            let added = match &path {
                None => true,
                Some(p) if *p == s.path => {
                    if size == Some(s.size as i64) && mtime == Some(s.mtime_ns) {
                        continue;
                    }
                    false
                }
                // Went up with another sidecar (the more specific one wins): not this one.
                Some(_) => continue,
            };
            // A photo sent without a sidecar has no row yet: it gets one now (no `sent_ms`:
            // migration 0016 keeps no time for an upload without a sidecar).
            tx.execute(
                "INSERT INTO sidecars (file_id, path, size, mtime_ns, reported_ms)
                 VALUES (?1, ?2, ?3, ?4, CAST(strftime('%s', 'now') AS INTEGER) * 1000)
                 ON CONFLICT(file_id) DO UPDATE SET path = excluded.path, size = excluded.size,
                     mtime_ns = excluded.mtime_ns, reported_ms = excluded.reported_ms",
                params![file_id, s.path, s.size as i64, s.mtime_ns],
            )?;
            out.push(LateSidecar {
                sidecar: s.path.clone(),
                photo,
                added,
            });
        }
    }
    tx.commit()?;
    Ok(out)
}

/// The sidecar photo `file_id` went up with, if it went up by our upload since migration 0007
/// (`Some(None)`: without one; for tests and `status`). After a late one was reported, that
/// one.
pub fn sent_with(c: &Connection, file_id: i64) -> rusqlite::Result<Option<Option<Vec<u8>>>> {
    c.query_row(
        "SELECT f.sent IS NOT NULL, s.path
         FROM files f LEFT JOIN sidecars s ON s.file_id = f.id WHERE f.id = ?1",
        [file_id],
        |r| Ok(r.get::<_, bool>(0)?.then_some(r.get(1)?)),
    )
    .optional()
    .map(Option::flatten)
}

/// How many photos had their sidecar created or edited after they went up (each reported
/// once per change), for `status`. 0 on a database an older daemon holds.
pub fn reported(c: &Connection) -> rusqlite::Result<i64> {
    let has: bool = c
        .prepare_cached(
            "SELECT EXISTS(SELECT 1 FROM pragma_table_info('sidecars') WHERE name = 'reported_ms')",
        )?
        .query_row([], |r| r.get(0))?;
    if !has {
        return Ok(0);
    }
    c.prepare_cached("SELECT COUNT(*) FROM sidecars WHERE reported_ms IS NOT NULL")?
        .query_row([], |r| r.get(0))
}

/// Says what [`late`] found: one warning per sidecar, naming both files.
pub fn tell(late: &LateSidecar) {
    tracing::warn!(
        sidecar = %String::from_utf8_lossy(&late.sidecar),
        photo = %String::from_utf8_lossy(&late.photo),
        "{} after its photo was uploaded: the photo is not uploaded again for it, and the \
         server keeps what it read at the upload",
        if late.added { "sidecar added" } else { "sidecar changed" }
    );
}
