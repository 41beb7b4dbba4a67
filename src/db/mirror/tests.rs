//! Tests of `db::mirror`.

use super::*;
use crate::db::catalogue::{self, FileStat};
use crate::db::Db;
use crate::model::JobState;

fn asset(id: &str, sum: Checksum, trashed: bool, updated: &str) -> RemoteAsset {
    RemoteAsset {
        id: AssetId(id.into()),
        owner_id: "me".into(),
        checksum: Some(sum),
        original_file_name: format!("{id}.jpg"),
        file_created_at: None,
        updated_at: Some(updated.into()),
        visibility: Some("timeline".into()),
        is_trashed: trashed,
        device_id: None,
        device_asset_id: None,
    }
}

fn setup() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("s.sqlite3")).unwrap();
    (dir, db)
}

/// A file backed up as `id` (done, linked), like the pipeline leaves it.
fn backed_up(c: &Connection, path: &str, sum: Checksum, id: &str) -> i64 {
    let stat = FileStat {
        dev: 1,
        ino: path.len() as u64,
        size: 10,
        mtime_ns: 1,
        ctime_ns: 1,
    };
    let f = catalogue::upsert_and_queue(c, b"/r", path.as_bytes(), &stat, 1).unwrap();
    queue::record_hash(c, f, &stat, &sum, 1).unwrap();
    queue::finish_done(
        c,
        f,
        &sum,
        Some(&AssetId(id.into())),
        Outcome::Uploaded,
        true,
        1,
    )
    .unwrap();
    f
}

/// A job's state and the reason people read.
fn job(c: &Connection, f: i64) -> (String, Option<String>) {
    c.query_row(
        "SELECT state, reason, skip_reason FROM jobs WHERE file_id = ?1",
        [f],
        |r| {
            let skip = queue::skip_reason_of(r.get(2)?);
            Ok((r.get(0)?, queue::shown_reason(skip, r.get(1)?)))
        },
    )
    .unwrap()
}

fn run(c: &Connection, ch: Change, policy: Policy) -> Applied {
    let mut out = Applied::default();
    apply(c, &ch, policy, 100, &mut out).unwrap();
    out
}

#[test]
fn trash_of_ours_holds_back_and_restore_releases() {
    let (_d, db) = setup();
    db.call_blocking(|c| {
        let sum = Checksum([1; 20]);
        let f = backed_up(c, "/r/a.jpg", sum, "A");
        let p = Policy::default();
        run(
            c,
            Change::Upsert(asset("A", sum, false, "2024-01-01T00:00:00.000Z")),
            p,
        );
        assert_eq!(job(c, f).0, "done");

        let out = run(c, Change::Trashed(AssetId("A".into())), p);
        assert_eq!((out.trashed, out.tombstoned, out.held_back), (1, 1, 1));
        assert_eq!(
            job(c, f),
            (
                "skipped".into(),
                Some(SkipReason::DeletedOnServer.describe().into())
            )
        );
        assert!(tombstone(c, &sum).unwrap().is_some());
        assert_eq!(catalogue::known_asset(c, &sum).unwrap(), None);
        // The same news again changes nothing more.
        let again = run(c, Change::Trashed(AssetId("A".into())), p);
        assert_eq!((again.tombstoned, again.held_back), (0, 0));

        let out = run(c, Change::Restored(AssetId("A".into())), p);
        assert_eq!(out.released, 1);
        assert_eq!(job(c, f).0, "done");
        assert!(tombstone(c, &sum).unwrap().is_none());
        assert_eq!(
            catalogue::known_asset(c, &sum).unwrap(),
            Some(Some(AssetId("A".into())))
        );
        Ok(())
    })
    .unwrap();
}

#[test]
fn delete_of_an_asset_the_mirror_never_held_is_found_through_the_catalogue() {
    let (_d, db) = setup();
    db.call_blocking(|c| {
        let sum = Checksum([2; 20]);
        let f = backed_up(c, "/r/b.jpg", sum, "B");
        let out = run(
            c,
            Change::Deleted {
                id: AssetId("B".into()),
                checksum: None,
            },
            Policy::default(),
        );
        assert_eq!(out.held_back, 1);
        assert_eq!(job(c, f).0, "skipped");
        assert_eq!(tombstone(c, &sum).unwrap().unwrap().1, "deleted");
        Ok(())
    })
    .unwrap();
}

#[test]
fn reupload_deleted_queues_the_files_again() {
    let (_d, db) = setup();
    db.call_blocking(|c| {
        let sum = Checksum([3; 20]);
        let f = backed_up(c, "/r/c.jpg", sum, "C");
        let out = run(
            c,
            Change::Deleted {
                id: AssetId("C".into()),
                checksum: None,
            },
            Policy {
                reupload_deleted: true,
            },
        );
        assert_eq!((out.requeued, out.held_back), (1, 0));
        assert_eq!(job(c, f).0, JobState::Queued.as_str());
        Ok(())
    })
    .unwrap();
}

#[test]
fn assets_of_others_and_stale_pages_change_nothing_of_ours() {
    let (_d, db) = setup();
    db.call_blocking(|c| {
        let p = Policy::default();
        // Not ours: no tombstone.
        let out = run(
            c,
            Change::Upsert(asset(
                "X",
                Checksum([4; 20]),
                true,
                "2024-01-01T00:00:00.000Z",
            )),
            p,
        );
        assert_eq!((out.upserted, out.tombstoned), (1, 0));
        // A page older than what the mirror holds is ignored.
        run(
            c,
            Change::Upsert(asset(
                "Y",
                Checksum([5; 20]),
                true,
                "2024-02-01T00:00:00.000Z",
            )),
            p,
        );
        let out = run(
            c,
            Change::Upsert(asset(
                "Y",
                Checksum([5; 20]),
                false,
                "2024-01-01T00:00:00.000Z",
            )),
            p,
        );
        assert_eq!(out.stale, 1);
        let trashed: bool = c.query_row(
            "SELECT is_trashed FROM remote_assets WHERE id = 'Y'",
            [],
            |r| r.get(0),
        )?;
        assert!(trashed);
        assert_eq!(own_live_asset(c, &Checksum([5; 20]), "me").unwrap(), None);
        assert_eq!(counts(c).unwrap().trashed, 2);
        Ok(())
    })
    .unwrap();
}

#[test]
fn server_times_parse_with_and_without_fractions() {
    assert_eq!(server_time_ms("1970-01-01T00:00:01.500Z"), Some(1500));
    assert_eq!(server_time_ms("1970-01-01T00:00:02Z"), Some(2000));
    assert_eq!(server_time_ms("1970-01-01T01:00:00+01:00"), Some(0));
    assert_eq!(server_time_ms("yesterday"), None);
}

/// Migration 0012 keeps each owner and device id once (`remote_ids`): what `diff` and the
/// dedup look-up answer from them is as before, for any number of rows that share them.
#[test]
fn owner_and_device_ids_are_kept_once_and_answer_as_before() {
    let (_d, db) = setup();
    db.call_blocking(|c| {
        let p = Policy::default();
        let mut rows = Vec::new();
        for i in 0..50u8 {
            let mut a = asset(
                &format!("mine-{i:02}"),
                Checksum([i; 20]),
                false,
                "2024-01-01T00:00:00Z",
            );
            a.device_id = Some("immish-sync-here".into());
            rows.push(a);
        }
        // Another device of the same owner, another owner, and a record without a device
        // (the sync stream's) that must keep the device an earlier pull told.
        let mut other_device = asset("phone", Checksum([100; 20]), false, "2024-01-01T00:00:00Z");
        other_device.device_id = Some("phone-app".into());
        let mut other_owner = asset("theirs", Checksum([101; 20]), false, "2024-01-01T00:00:00Z");
        other_owner.owner_id = "someone-else".into();
        other_owner.device_id = Some("immish-sync-here".into());
        let mut no_device = rows[0].clone();
        no_device.device_id = None;
        no_device.updated_at = Some("2024-01-02T00:00:00Z".into());
        for a in rows
            .into_iter()
            .chain([other_device, other_owner, no_device])
        {
            run(c, Change::Upsert(a), p);
        }
        let ids: i64 = c.query_row("SELECT COUNT(*) FROM remote_ids", [], |r| r.get(0))?;
        assert_eq!(ids, 4, "me, someone-else, immish-sync-here, phone-app");

        // `diff`: none of these has a local copy; those of this device and owner are listed
        // as gone locally (all 50, `mine-00` too: its device was kept), the phone's and the
        // other owner's are not.
        let d = diff(c, "me", "immish-sync-here")?;
        let gone: Vec<String> = d.remote_only.iter().map(|r| r.id.0.clone()).collect();
        let want: Vec<String> = (0..50).map(|i| format!("mine-{i:02}")).collect();
        assert_eq!(gone, want);
        assert!(diff(c, "nobody", "immish-sync-here")?
            .remote_only
            .is_empty());
        // Dedup asks for the owner's own assets only.
        assert_eq!(
            own_live_asset(c, &Checksum([7; 20]), "me")?,
            Some(AssetId("mine-07".into()))
        );
        assert_eq!(own_live_asset(c, &Checksum([101; 20]), "me")?, None);
        assert_eq!(
            own_live_asset(c, &Checksum([101; 20]), "someone-else")?,
            Some(AssetId("theirs".into()))
        );
        assert_eq!(own_live_asset(c, &Checksum([7; 20]), "unknown-user")?, None);
        Ok(())
    })
    .unwrap();
}
