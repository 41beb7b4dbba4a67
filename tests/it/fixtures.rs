//! Old state databases: a database written by an earlier immish-sync must keep working after
//! an upgrade. Every migration is checked against the committed fixtures here.
//!
//! `tests/fixtures/state-v3.sqlite` was made by [`make_state_fixture`] with the code of
//! schema version 3 (migrations 0001–0003). After adding a migration, run
//! `cargo test --test it make_state_fixture -- --ignored` to write the fixture of the new
//! version the same way (the generator uses the db functions, so it writes what that version
//! writes), commit it, and add a test like [`state_v3_opens_with_every_file_as_it_was`]
//! for it. Never regenerate an old version's fixture: it stands for databases users have.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use immish_sync::db::catalogue::{self, FileStat};
use immish_sync::db::ids::IdRef;
use immish_sync::db::mirror::{self, Applied, Change, Policy};
use immish_sync::db::queue::{self, Outcome};
use immish_sync::db::sidecars::{self, SeenSidecar};
use immish_sync::db::waiting::{self, WaitKind, Waiting};
use immish_sync::db::Db;
use immish_sync::db::{after_upload, library, pull};
use immish_sync::model::{AssetId, Checksum, JobState, SkipReason};
use immish_sync::originals::layout::Layout;
use rusqlite::{params, Connection};

/// The time every fixture row is written at (unix ms): fixed, so the file is reproducible.
const T0: i64 = 1_700_000_000_000;
const ROOT: &[u8] = b"/photos";
const OWNER: &str = "6f1c9a54-0000-4000-8000-000000000001";
const PARTNER: &str = "6f1c9a54-0000-4000-8000-000000000002";
const DEVICE: &str = "immish-sync-0b6e2c1e-7f0a-4d38-9a47-5a1f4b0c9e11";

// The sentences schema version 3 stored as skip reasons, verbatim: what old databases hold,
// whatever today's code says to people.
const V3_SKIPS: [(&str, SkipReason); 5] = [
    (
        "deleted on the server by the user; not uploaded again \
         (set mirror.reupload_deleted = true to change that)",
        SkipReason::DeletedOnServer,
    ),
    (
        "the server has this photo in its trash; not uploaded again",
        SkipReason::TrashedOnServer,
    ),
    ("no longer a regular file", SkipReason::NotRegularFile),
    ("empty file", SkipReason::EmptyFile),
    (
        "file vanished before it was backed up",
        SkipReason::Vanished,
    ),
];

const UPLOAD_413: &str = "upload refused: the server (or a proxy in front of it) refused the \
                          request as too large (HTTP 413): raise the proxy's body limit, e.g. \
                          nginx client_max_body_size";
const ALERT: &str = "ALERT: the server stored different bytes (asset a-alert, server checksum \
                     1111111111111111111111111111111111111111, local \
                     2222222222222222222222222222222222222222); not marked as backed up, check \
                     the server's storage";
const CANNOT_READ: &str = "cannot read /photos/locked.jpg: Permission denied (os error 13); \
                           will try again when it changes";
const RETRY_UPLOAD: &str = "upload failed: connection reset by the server";
const RETRY_CHANGED: &str = "the file changed while it was read";

fn fixture(version: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("state-v{version}.sqlite"))
}

fn sum(n: u8) -> Checksum {
    Checksum([n; 20])
}

fn stat(n: u64) -> FileStat {
    FileStat {
        dev: 2049,
        ino: 1000 + n,
        size: 100_000 + n,
        mtime_ns: 1_690_000_000_000_000_000 + n as i64,
        ctime_ns: 1_690_000_000_000_000_000 + n as i64,
    }
}

fn path(name: &str) -> Vec<u8> {
    [ROOT, b"/", name.as_bytes()].concat()
}

/// The server's id of the fixture's asset `name`. Schema 3's fixture holds the names
/// themselves; from schema 12's on, the generator writes UUIDs as the server hands them out,
/// but for two kept as a seed-style server's ids and one UUID in upper case (migration 0013
/// stores a canonical UUID in 16 bytes and any other id as its text).
fn asset(name: &str) -> String {
    const NAMES: [&str; 10] = [
        "a-uploaded",
        "a-duplicate",
        "a-trashed",
        "a-deleted",
        "a-gone",
        "a-in-trash",
        "a-edited",
        "a-archived",
        "a-removed",
        "a-pending",
    ];
    match NAMES.iter().position(|n| *n == name) {
        Some(i) => format!("5e1d0c3a-0000-4000-8000-{:012x}", i + 1),
        None if name == "a-phone" => "5E1D0C3A-0000-4000-8000-0000000000AA".to_owned(),
        None => name.to_owned(),
    }
}

/// A remote asset row as a pull writes it (in today's schema: migration 0012 keeps the owner
/// and device ids in `remote_ids`).
fn remote(c: &Connection, id: &str, owner: &str, s: Option<Checksum>, trashed: bool) {
    let id = asset(id);
    let id = id.as_str();
    let device = (owner == OWNER).then_some(DEVICE);
    for name in [Some(owner), device].into_iter().flatten() {
        c.execute("INSERT OR IGNORE INTO remote_ids(name) VALUES (?1)", [name])
            .unwrap();
    }
    c.execute(
        "INSERT INTO remote_assets(id, owner, checksum, original_file_name, file_created_at,
             updated_at, visibility, is_trashed, device, deleted_at, synced_at)
         VALUES (?1, (SELECT id FROM remote_ids WHERE name = ?2), ?3, ?4,
                 '2023-07-22T04:26:40.000Z', 1700000000000, 'timeline', ?5,
                 (SELECT id FROM remote_ids WHERE name = ?6), NULL, ?7)",
        params![
            IdRef(id),
            owner,
            s.map(|s| s.0.to_vec()),
            format!("{id}.jpg"),
            trashed,
            device,
            T0
        ],
    )
    .unwrap();
}

/// Writes the fixture of the current schema version. Run by hand (see the module docs).
#[test]
#[ignore = "writes tests/fixtures/state-v<N>.sqlite; run by hand after adding a migration"]
fn make_state_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("state.sqlite3");
    let db = Db::open(&work).unwrap();
    db.call_blocking(|c| {
        let tx = c.transaction()?;
        let c = &*tx;
        let queue_file = |name: &str, n: u64| -> i64 {
            catalogue::upsert_and_queue(c, ROOT, &path(name), &stat(n), T0).unwrap()
        };
        let hashed = |name: &str, n: u64| -> i64 {
            let f = queue_file(name, n);
            queue::record_hash(c, f, &stat(n), &sum(n as u8), T0).unwrap();
            f
        };
        let done = |name: &str, n: u64, asset: Option<&str>, how: Outcome| -> i64 {
            let f = hashed(name, n);
            let asset = asset.map(|a| AssetId(crate::fixtures::asset(a)));
            let verified = how != Outcome::Linked;
            queue::finish_done(c, f, &sum(n as u8), asset.as_ref(), how, verified, T0).unwrap();
            f
        };
        let apply = |change: Change| {
            let mut out = Applied::default();
            mirror::apply(c, &change, Policy::default(), T0, &mut out).unwrap();
        };

        // Every job state. The in-flight ones are what a crash leaves behind.
        queue_file("queued.jpg", 1);
        let f = queue_file("hashing.jpg", 2);
        queue::set_state(c, f, JobState::Hashing, T0).unwrap();
        hashed("checking.jpg", 3);
        let f = hashed("uploading.jpg", 4);
        queue::set_state(c, f, JobState::Uploading, T0).unwrap();
        let f = hashed("verifying.heic", 5);
        queue::set_state(c, f, JobState::Verifying, T0).unwrap();

        // Done, each outcome; the uploaded ones are live assets in the mirror.
        done("uploaded.jpg", 10, Some("a-uploaded"), Outcome::Uploaded);
        remote(c, "a-uploaded", OWNER, Some(sum(10)), false);
        done("duplicate.mp4", 11, Some("a-duplicate"), Outcome::Duplicate);
        remote(c, "a-duplicate", OWNER, Some(sum(11)), false);
        // Linked from a seed-style server that gave no asset id.
        done("linked.jpg", 12, None, Outcome::Linked);

        // Held back: ours, trashed on the server (tombstone `trashed`).
        done(
            "trashed-by-user.jpg",
            20,
            Some("a-trashed"),
            Outcome::Uploaded,
        );
        remote(c, "a-trashed", OWNER, Some(sum(20)), false);
        apply(Change::Trashed(AssetId(asset("a-trashed"))));
        // Held back: ours, deleted for good (tombstone `deleted`).
        done(
            "deleted-by-user.jpg",
            21,
            Some("a-deleted"),
            Outcome::Uploaded,
        );
        remote(c, "a-deleted", OWNER, Some(sum(21)), false);
        apply(Change::Deleted {
            id: AssetId(asset("a-deleted")),
            checksum: None,
        });
        // Held back, and since gone locally too (not counted as held back).
        let f = done(
            "deleted-then-gone.jpg",
            22,
            Some("a-gone"),
            Outcome::Uploaded,
        );
        remote(c, "a-gone", OWNER, Some(sum(22)), false);
        apply(Change::Trashed(AssetId(asset("a-gone"))));
        catalogue::mark_missing(c, &[f], T0).unwrap();

        // Skipped by the pipeline: bulk-upload-check found the content in the trash.
        let f = hashed("in-server-trash.jpg", 30);
        remote(c, "a-in-trash", OWNER, Some(sum(30)), true);
        queue::skip(c, f, SkipReason::TrashedOnServer, T0).unwrap();
        let f = queue_file("fifo", 31);
        queue::skip(c, f, SkipReason::NotRegularFile, T0).unwrap();
        let f = queue_file("empty.jpg", 32);
        queue::skip(c, f, SkipReason::EmptyFile, T0).unwrap();
        let f = queue_file("vanished.jpg", 33);
        catalogue::mark_missing(c, &[f], T0).unwrap();

        // Waiting to retry.
        let f = hashed("retry-upload.jpg", 40);
        queue::schedule_retry(c, f, 2, T0 + 60_000, RETRY_UPLOAD, T0).unwrap();
        let f = queue_file("retry-changed.jpg", 41);
        queue::schedule_retry(c, f, 1, T0 + 2_000, RETRY_CHANGED, T0).unwrap();

        // Failed.
        let f = hashed("too-large.mp4", 50);
        queue::fail(c, f, UPLOAD_413, T0).unwrap();
        let f = hashed("alert.jpg", 51);
        queue::fail(c, f, ALERT, T0).unwrap();
        let f = queue_file("locked.jpg", 52);
        queue::fail(c, f, CANNOT_READ, T0).unwrap();

        // The mirror beyond our files: the user's asset from another device, and a partner's.
        remote(c, "a-phone", OWNER, Some(sum(60)), false);
        remote(c, "a-partner", PARTNER, Some(sum(61)), false);
        remote(c, "a-no-checksum", OWNER, None, false);

        // The meta values in use, in the formats schema version 3 writes.
        let meta = |k: &str, v: &str| {
            c.execute(
                "INSERT INTO meta(key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [k, v],
            )
            .unwrap();
        };
        meta(
            "server_identity",
            &format!("http://127.0.0.1:2283/api {OWNER}"),
        );
        meta("device_id", DEVICE);
        meta("last_success_ms", &T0.to_string());
        meta("root:/photos", &format!("ok {T0}"));
        meta("root:/mnt/usb", "paused the folder is gone (unmounted?)");
        meta("mirror.watermark_ms", &(T0 - 1_000).to_string());
        meta("mirror.last_pull", &format!("{T0} full 8 sync-stream"));
        meta("mirror.last_full_ms", &T0.to_string());
        meta(
            "mirror.last_error",
            &format!("{T0} HTTP 502 from the server"),
        );
        meta(
            "mirror.acks",
            "AssetV1|019b2d4e-aaaa AssetDeleteV1|019b2d4e-bbbb",
        );
        meta("mirror.socket", &format!("{T0} connected"));
        tx.commit()
    })
    .unwrap();
    // From schema 12's fixture on: a row in every table that names an asset (migration 0013
    // rewrote each of them), written by the functions that write them.
    fn done(c: &Connection, name: &str, n: u64, id: &str) -> rusqlite::Result<i64> {
        let f = catalogue::upsert_and_queue(c, ROOT, &path(name), &stat(n), T0)?;
        queue::record_hash(c, f, &stat(n), &sum(n as u8), T0)?;
        let id = AssetId(asset(id));
        queue::finish_done(c, f, &sum(n as u8), Some(&id), Outcome::Uploaded, true, T0)?;
        Ok(f)
    }
    db.call_blocking(|c| {
        // Backed up, then its bytes changed: the old asset is noted as edited.
        done(c, "edited.jpg", 70, "a-edited")?;
        remote(c, "a-edited", OWNER, Some(sum(70)), false);
        catalogue::upsert_and_queue(c, ROOT, &path("edited.jpg"), &stat(71), T0)?;
        // Moved to the archive after upload, and deleted after upload; one more looked at
        // and held.
        for (name, n, id, action) in [
            ("archived.jpg", 72, "a-archived", "archive"),
            ("removed.jpg", 73, "a-removed", "delete"),
            ("held.jpg", 74, "a-pending", "delete"),
        ] {
            let f = done(c, name, n, id)?;
            remote(c, id, OWNER, Some(sum(n as u8)), false);
            let cand = after_upload::Candidate {
                file_id: f,
                path: path(name),
                checksum: sum(n as u8),
                asset_id: asset(id),
                stat: (0, 0, 0, 0, 0),
            };
            let target = (action == "archive").then(|| b"/archive/archived.jpg".to_vec());
            let intent =
                after_upload::record_intent(c, &cand, ROOT, action, target.as_deref(), T0)?;
            if name == "held.jpg" {
                after_upload::hold(c, intent, "a Live Photo partner is not safe yet", T0)?;
            } else {
                after_upload::finish(c, intent, T0)?;
            }
        }
        // Albums and groups, one membership sent.
        let members: Vec<(String, String)> = ["a-uploaded", "a-duplicate", "a-phone"]
            .iter()
            .map(|a| ("Trip".to_owned(), asset(a)))
            .collect();
        let group = library::Group {
            kind: "live".into(),
            stem: path("IMG_1"),
            assets: vec![asset("a-uploaded"), asset("a-duplicate")],
        };
        library::record_sorted(c, &[], &members, std::slice::from_ref(&group))?;
        library::mark_members_sent(c, "Trip", &[asset("a-uploaded")], T0)?;
        // A pull folder with every live asset planned, one pulled and one failed.
        let folder = Path::new("/srv/pull");
        let layout = Layout::parse("{year}/{filename}").unwrap();
        pull::plan(c, folder, &layout, T0)?;
        pull::mark_pulled(c, folder, &AssetId(asset("a-uploaded")), T0)?;
        pull::mark_failed(
            c,
            folder,
            &AssetId(asset("a-phone")),
            "HTTP 502",
            T0 + 1,
            T0,
        )?;
        // From schema 14's fixture on: a row in every table. A photo sent with its
        // sidecar and one sent without, a file still open for writing, an album's id, a
        // still waiting for its video, a root's library settings.
        let file = |c: &Connection, name: &str| -> rusqlite::Result<i64> {
            c.query_row("SELECT id FROM files WHERE path = ?1", [path(name)], |r| {
                r.get(0)
            })
        };
        let sidecar = SeenSidecar {
            path: path("uploaded.jpg.xmp"),
            size: 512,
            mtime_ns: 1_690_000_000_000_000_010,
        };
        sidecars::record(c, file(c, "uploaded.jpg")?, Some(&sidecar), T0)?;
        sidecars::record(c, file(c, "duplicate.mp4")?, None, T0)?;
        waiting::note(
            c,
            &[Waiting {
                root: ROOT.to_vec(),
                path: path("copying.mp4"),
                kind: WaitKind::Open,
                reason: "still open for writing".into(),
                since_ms: T0,
            }],
        )?;
        library::set_album_id(c, "Trip", "a1b2c3d4-0000-4000-8000-00000000a1b0", T0)?;
        library::pair_wait_since(c, file(c, "retry-upload.jpg")?, T0)?;
        library::adopt_root_settings(c, b"/mnt/usb", "albums=folders stacks=on")?;
        Ok(())
    })
    .unwrap();
    let version: u32 = db
        .call_blocking(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
        .unwrap();
    drop(db);

    // One self-contained, compact file: no WAL beside it.
    let c = Connection::open(&work).unwrap();
    let _: String = c
        .query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))
        .unwrap();
    c.execute_batch("VACUUM").unwrap();
    drop(c);
    let out = fixture(version);
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::copy(&work, &out).unwrap();
    println!("wrote {}", out.display());
}

/// What the server holds as what, as `known_assets` said it before migration 0015 (every
/// fact a row): (checksum, asset id, verified), in checksum order.
type Known = Vec<(Vec<u8>, Option<String>, bool)>;

/// The rows of `known_assets`, read as they are stored (for a database before 0015).
fn known_rows(c: &Connection) -> Known {
    let mut stmt = c
        .prepare(
            "SELECT checksum, asset_id, verified_at IS NOT NULL FROM known_assets
             ORDER BY checksum",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok((r.get(0)?, immish_sync::db::ids::opt_id(r, 1)?, r.get(2)?))
    })
    .unwrap()
    .collect::<rusqlite::Result<_>>()
    .unwrap()
}

/// The same facts through today's reader: the rows of `known_assets` and what backed-up
/// files say (migration 0015).
fn known_facts(c: &Connection) -> Known {
    catalogue::known_assets(c)
        .unwrap()
        .into_iter()
        .map(|(sum, id, verified)| (sum, id.map(|i| i.0), verified))
        .collect()
}

/// A copy of a fixture in a tempdir.
fn copy(version: u32) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("state.sqlite3");
    std::fs::copy(fixture(version), &copy).unwrap();
    (dir, copy)
}

/// A job as a user reads it: state, reason shown, and the skip it stands for.
type Job = (JobState, Option<String>, Option<SkipReason>);

/// Path → job for every file of the fixture.
fn jobs(c: &Connection) -> BTreeMap<String, Job> {
    let mut out = BTreeMap::new();
    for st in JobState::ALL {
        for j in queue::recent(c, &[st], 1000).unwrap() {
            out.insert(
                String::from_utf8(j.path).unwrap(),
                (j.state, j.reason, j.skip),
            );
        }
    }
    out
}

fn is(state: JobState, reason: Option<&str>) -> Job {
    (state, reason.map(str::to_owned), None)
}

fn skipped(why: SkipReason) -> Job {
    (
        JobState::Skipped,
        Some(why.describe().to_owned()),
        Some(why),
    )
}

fn name(n: &str) -> String {
    String::from_utf8(path(n)).unwrap()
}

/// What a user of a v3 database reads, before (through a read-only open, as `status`,
/// `mirror` and `diff` do while a daemon of the old version still runs) and after the
/// upgrade: every file as it was, the counts, the reasons, the mirror and the meta values.
fn reads_as_it_was(c: &Connection) {
    use JobState::*;
    let want: BTreeMap<String, Job> = [
        ("queued.jpg", is(Queued, None)),
        ("hashing.jpg", is(Hashing, None)),
        ("checking.jpg", is(Checking, None)),
        ("uploading.jpg", is(Uploading, None)),
        ("verifying.heic", is(Verifying, None)),
        ("uploaded.jpg", is(Done, None)),
        ("duplicate.mp4", is(Done, None)),
        ("linked.jpg", is(Done, None)),
        ("trashed-by-user.jpg", skipped(SkipReason::DeletedOnServer)),
        ("deleted-by-user.jpg", skipped(SkipReason::DeletedOnServer)),
        (
            "deleted-then-gone.jpg",
            skipped(SkipReason::DeletedOnServer),
        ),
        ("in-server-trash.jpg", skipped(SkipReason::TrashedOnServer)),
        ("fifo", skipped(SkipReason::NotRegularFile)),
        ("empty.jpg", skipped(SkipReason::EmptyFile)),
        ("vanished.jpg", skipped(SkipReason::Vanished)),
        ("retry-upload.jpg", is(Retry, Some(RETRY_UPLOAD))),
        ("retry-changed.jpg", is(Retry, Some(RETRY_CHANGED))),
        ("too-large.mp4", is(Failed, Some(UPLOAD_413))),
        ("alert.jpg", is(Failed, Some(ALERT))),
        ("locked.jpg", is(Failed, Some(CANNOT_READ))),
    ]
    .into_iter()
    .map(|(n, v)| (name(n), v))
    .collect();
    assert_eq!(jobs(c), want);

    // The counts `status` prints: present files per state, and the files gone locally (two
    // skipped ones in the fixture) apart.
    let counts: BTreeMap<&str, i64> = catalogue::counts_by_state(c)
        .unwrap()
        .into_iter()
        .map(|(s, n)| (s.as_str(), n))
        .collect();
    let expect: BTreeMap<&str, i64> = [
        ("queued", 1),
        ("hashing", 1),
        ("checking", 1),
        ("uploading", 1),
        ("verifying", 1),
        ("done", 3),
        ("skipped", 5),
        ("retry", 2),
        ("failed", 3),
    ]
    .into_iter()
    .collect();
    assert_eq!(counts, expect);
    assert_eq!(catalogue::missing_files(c).unwrap(), 2);
    assert_eq!(queue::pending_counts(c).unwrap(), (5, 2));
    // What the progress lines count: every `done` and `failed` job, present or not.
    assert_eq!(queue::done_and_failed(c).unwrap(), (3, 3));
    // The retry keeps its schedule and attempts.
    let retry = queue::recent(c, &[Retry], 10).unwrap();
    let r = retry
        .iter()
        .find(|j| j.path == path("retry-upload.jpg"))
        .unwrap();
    assert_eq!((r.attempts, r.next_attempt_at_ms), (2, Some(T0 + 60_000)));

    // The mirror and its tombstones, as `immish-sync mirror` counts them.
    let m = mirror::counts(c).unwrap();
    assert_eq!((m.live, m.trashed, m.deleted), (5, 3, 1));
    assert_eq!(m.tombstones, 3);
    // Two files present locally are held back; the third is gone locally.
    assert_eq!((m.held_back, mirror::held_back(c).unwrap()), (2, 2));
    assert_eq!(
        mirror::tombstone(c, &sum(21)).unwrap().map(|t| t.1),
        Some("deleted".to_owned())
    );

    // `diff` shows why a local file is not on the server.
    let local_only = mirror::diff(c, OWNER, DEVICE).unwrap().local_only;
    let state_of = |n: &str| {
        local_only
            .iter()
            .find(|l| l.path == path(n))
            .map(|l| l.state.clone())
    };
    for (n, why) in [
        ("trashed-by-user.jpg", SkipReason::DeletedOnServer),
        ("empty.jpg", SkipReason::EmptyFile),
    ] {
        assert_eq!(state_of(n), Some(format!("skipped: {}", why.describe())));
    }

    // The meta values start-up and `status` read, as stored.
    let meta = |k: &str| -> Option<String> {
        c.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
            .ok()
    };
    assert_eq!(
        meta("server_identity"),
        Some(format!("http://127.0.0.1:2283/api {OWNER}"))
    );
    assert_eq!(meta("device_id").as_deref(), Some(DEVICE));
    assert_eq!(meta("last_success_ms"), Some(T0.to_string()));
}

/// A v3 database upgraded by today's code: read as it was, its skip sentences turned into
/// codes, and its held-back files still held back and released by a restore on the server.
#[test]
fn state_v3_opens_with_every_file_as_it_was() {
    use JobState::*;
    let (_dir, copy) = copy(3);
    // 0011 rebuilds `known_assets`, 0015 keeps in it only what no file says: every fact
    // comes through, ids and verification as they were.
    let known_before = known_rows(&Connection::open(&copy).unwrap());
    assert!(!known_before.is_empty());
    // 0012 rebuilds `remote_assets` with its owner and device ids in `remote_ids`: every row
    // comes through with every field the daemon reads (its `device_asset_id` was never read).
    let mirrored = "SELECT id, {owner}, checksum, original_file_name, {created},
                        {updated}, {visibility}, is_trashed, {device}, deleted_at, synced_at
                    FROM remote_assets ORDER BY id";
    let mirror_rows = |c: &Connection, sql: &str| -> Vec<String> {
        let mut stmt = c.prepare(sql).unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |r| {
            (0..n)
                .map(|i| {
                    r.get::<_, rusqlite::types::Value>(i)
                        .map(|v| format!("{v:?}"))
                })
                .collect::<rusqlite::Result<Vec<_>>>()
                .map(|v| v.join(" "))
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
    };
    let mirror_before = mirror_rows(
        &Connection::open(&copy).unwrap(),
        &mirrored
            .replace("{owner}", "owner_id")
            .replace("{device}", "device_id")
            .replace("{created}", "file_created_at")
            .replace("{visibility}", "visibility")
            .replace("{updated}", "updated_at"),
    );
    assert!(mirror_before.len() >= 5 && mirror_before.iter().any(|r| r.contains(DEVICE)));
    let mirrored_now = mirrored
        .replace("{owner}", "(SELECT name FROM remote_ids WHERE id = owner)")
        .replace(
            "{device}",
            "(SELECT name FROM remote_ids WHERE id = device)",
        )
        // The server's `updatedAt` is kept as unix ms: the fixture's, written back as text.
        .replace(
            "{updated}",
            "strftime('%Y-%m-%dT%H:%M:%fZ', updated_at / 1000.0, 'unixepoch')",
        )
        // So is the file's date in the server's form, and the visibility a code (0017):
        // read back as their text.
        .replace(
            "{created}",
            &immish_sync::db::fields::date_text_sql("file_created_at"),
        )
        .replace(
            "{visibility}",
            &immish_sync::db::fields::visibility_text_sql("visibility"),
        );
    let db = Db::open(&copy).unwrap_or_else(|e| panic!("a v3 database must open: {e}"));
    db.call_blocking(move |c| {
        assert_eq!(known_facts(c), known_before);
        assert_eq!(mirror_rows(c, &mirrored_now), mirror_before);
        reads_as_it_was(c);
        // Today's schema: 0005 added the table of waiting files, 0006 the library's, 0007 the
        // sidecars, 0008 the edited files', 0009 what was done after upload, 0010 the pull
        // folders', 0011 rebuilt `known_assets` smaller, 0012 `remote_assets` (owner and
        // device ids once each, in `remote_ids`), 0013 stored asset ids in 16 bytes (the
        // fixture's are not UUIDs: they stay text), 0014 left `done` jobs out of the queue's
        // index and keeps their count, 0015 keeps in `known_assets` only what no file says,
        // 0016 keeps no `sidecars` row for a photo sent without one, 0017 a mirrored asset's
        // file date in unix ms.
        assert_eq!(
            c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?,
            17
        );
        let pulled: i64 = c.query_row("SELECT COUNT(*) FROM pulled", [], |r| r.get(0))?;
        assert_eq!(pulled, 0, "an upgrade pulls nothing by itself");
        // The upgrade notes nothing by itself; the first start sorts the root's backed-up
        // files (its settings are new), once.
        assert!(immish_sync::db::library::todo(c, 100)?.is_empty());
        let done: i64 = c.query_row(
            "SELECT COUNT(*) FROM jobs j JOIN files f ON f.id = j.file_id
             WHERE j.state = 'done' AND f.root_id = (SELECT id FROM roots WHERE path = ?1)",
            [ROOT],
            |r| r.get(0),
        )?;
        assert!(done > 0);
        let noted = immish_sync::db::library::adopt_root_settings(c, ROOT, "defaults")?;
        assert_eq!(noted as i64, done);
        assert_eq!(
            immish_sync::db::library::adopt_root_settings(c, ROOT, "defaults")?,
            0
        );
        c.execute("DELETE FROM library_todo", [])?;
        c.execute("DELETE FROM library_roots", [])?;
        // Every sentence became its code; the sentence itself is no longer stored.
        let stored: Vec<(String, Option<String>, Option<String>)> = c
            .prepare(
                "SELECT f.path, j.skip_reason, j.reason FROM jobs j
                 JOIN files f ON f.id = j.file_id WHERE j.state = 'skipped' ORDER BY f.path",
            )?
            .query_map([], |r| {
                Ok((
                    String::from_utf8_lossy(&r.get::<_, Vec<u8>>(0)?).into_owned(),
                    r.get(1)?,
                    r.get(2)?,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        assert_eq!(stored.len(), 7);
        for (p, code, reason) in &stored {
            assert!(
                code.is_some() && reason.is_none(),
                "{p}: {code:?} {reason:?}"
            );
        }
        let codes: std::collections::BTreeSet<&str> =
            stored.iter().filter_map(|s| s.1.as_deref()).collect();
        let all: std::collections::BTreeSet<&str> =
            V3_SKIPS.iter().map(|(_, why)| why.code()).collect();
        assert_eq!(codes, all, "every v3 skip sentence is in the fixture");

        // A restore on the server releases what it held back: ours (tombstone), and the
        // file the pipeline skipped because the content was in the trash.
        let tx = c.transaction()?;
        let mut out = Applied::default();
        for id in ["a-trashed", "a-in-trash"] {
            mirror::apply(
                &tx,
                &Change::Restored(AssetId(id.into())),
                Policy::default(),
                T0 + 1,
                &mut out,
            )?;
        }
        assert_eq!((out.restored, out.released), (2, 2));
        let after = jobs(&tx);
        for n in ["trashed-by-user.jpg", "in-server-trash.jpg"] {
            assert_eq!(after[&name(n)], is(Done, None), "{n}");
        }
        // Skips a restore does not concern stay.
        assert_eq!(after[&name("empty.jpg")], skipped(SkipReason::EmptyFile));
        assert_eq!(
            after[&name("deleted-by-user.jpg")],
            skipped(SkipReason::DeletedOnServer)
        );
        assert_eq!(mirror::held_back(&tx)?, 1);
        assert!(mirror::tombstone(&tx, &sum(20))?.is_none());
        tx.commit()
    })
    .unwrap();
}

/// `status`, `mirror` and `diff` open the database read-only and so do not migrate it: a v3
/// database (a daemon of the previous version still running) reads the same as upgraded.
#[test]
fn state_v3_reads_the_same_before_its_upgrade() {
    let (_dir, copy) = copy(3);
    let db = Db::open_readonly(&copy).unwrap();
    db.call_blocking(|c| {
        reads_as_it_was(c);
        c.query_row("PRAGMA main.user_version", [], |r| r.get::<_, i64>(0))
    })
    .map(|v| assert_eq!(v, 3, "a read-only open must not migrate"))
    .unwrap();
    // The fixture holds every sentence v3 wrote for a skip, as v3 wrote it.
    let raw = Connection::open(&copy).unwrap();
    let mut stmt = raw
        .prepare("SELECT DISTINCT reason FROM jobs WHERE state = 'skipped' ORDER BY 1")
        .unwrap();
    let held: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let mut v3: Vec<String> = V3_SKIPS.iter().map(|(s, _)| s.to_string()).collect();
    v3.sort();
    assert_eq!(held, v3);
}

/// The tables that name an asset, with the columns that hold an asset id.
const ID_TABLES: [(&str, &[&str]); 9] = [
    ("files", &["asset_id"]),
    ("remote_assets", &["id"]),
    ("known_assets", &["asset_id"]),
    ("tombstones", &["asset_id"]),
    ("edited", &["old_asset_id"]),
    ("after_upload", &["asset_id"]),
    ("pulled", &["asset_id"]),
    ("album_members", &["asset_id"]),
    ("library_groups", &[]),
];

/// Every row of the tables that name an asset, each value written out and each asset id as
/// its text (read through `db::ids`, which reads the text of schema 12 and the stored form
/// of 13 alike), sorted: what must come through an upgrade unchanged.
fn rows_with_ids(c: &Connection) -> BTreeMap<&'static str, Vec<String>> {
    let mut out = BTreeMap::new();
    for (table, id_cols) in ID_TABLES {
        let mut stmt = c.prepare(&format!("SELECT * FROM main.{table}")).unwrap();
        let names: Vec<String> = stmt.column_names().iter().map(|n| n.to_string()).collect();
        let mut rows: Vec<String> = stmt
            .query_map([], |r| {
                let mut cells = Vec::new();
                for (i, n) in names.iter().enumerate() {
                    let value = r.get::<_, rusqlite::types::Value>(i)?;
                    // 0016's `files.sent`: NULL for every file of a fixture without
                    // `sidecars` rows (nothing sent since 0007 that the file knows of).
                    if n == "sent" && value == rusqlite::types::Value::Null {
                        continue;
                    }
                    let cell = if id_cols.contains(&n.as_str()) {
                        format!("{:?}", immish_sync::db::ids::opt_id(r, i)?)
                    } else if n == "file_created_at" {
                        // Unix ms or text since 0017, read as the server's text.
                        format!("{:?}", immish_sync::db::fields::date_read(r, i)?)
                    } else if table == "remote_assets" && n == "visibility" {
                        // A code or text since 0017, read as the server's text.
                        format!("{:?}", immish_sync::db::fields::visibility_read(r, i)?)
                    } else {
                        format!("{value:?}")
                    };
                    cells.push(format!("{n}={cell}"));
                }
                Ok(cells.join(" "))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        rows.sort();
        out.insert(table, rows);
    }
    out
}

/// What the readers (`status`, `mirror`, `diff`, `explain`) and the daemon's look-ups by
/// asset id answer on the v12 fixture, written out: the same before its upgrade (a
/// read-only open) and after.
fn v12_answers(c: &Connection) -> Vec<String> {
    let uploaded = asset("a-uploaded");
    let mut diff = mirror::diff(c, OWNER, DEVICE).unwrap();
    let ids = |l: &mut Vec<mirror::RemoteOnly>| {
        let mut v: Vec<(String, Option<Vec<u8>>)> = l.drain(..).map(|r| (r.id.0, r.path)).collect();
        v.sort();
        v
    };
    let mut released: Vec<_> = after_upload::released(c).unwrap().into_iter().collect();
    released.sort();
    vec![
        format!("{:?}", jobs(c)),
        format!("{:?}", catalogue::counts_by_state(c).unwrap()),
        format!("{:?}", catalogue::linked_files(c).unwrap()),
        format!("{:?}", catalogue::known_asset(c, &sum(10)).unwrap()),
        format!("{:?}", catalogue::known_asset(c, &sum(12)).unwrap()),
        format!("{:?}", mirror::counts(c).unwrap()),
        format!("{:?}", mirror::asset_seen(c, &uploaded).unwrap()),
        format!("{:?}", mirror::asset_seen(c, &asset("a-deleted")).unwrap()),
        format!("{:?}", mirror::asset_seen(c, &asset("a-phone")).unwrap()),
        format!("{:?}", mirror::asset_seen(c, "a-partner").unwrap()),
        format!("{:?}", mirror::own_live_asset(c, &sum(10), OWNER).unwrap()),
        format!("{:?}", mirror::tombstone(c, &sum(21)).unwrap()),
        format!("{:?}", ids(&mut diff.remote_only)),
        format!("{:?}", ids(&mut diff.changed)),
        format!("{:?}", ids(&mut diff.archived)),
        format!("{:?}", ids(&mut diff.removed)),
        format!("{:?}", after_upload::counts(c).unwrap()),
        format!("{released:?}"),
        format!("{:?}", immish_sync::db::edited::changed_assets(c).unwrap()),
        format!("{:?}", library::unsent_members(c, 100).unwrap()),
        format!("{:?}", library::unsent_groups(c, 100).unwrap()),
        format!("{:?}", pull::counts(c).unwrap()),
        // The progress lines' counts (0014 keeps the `done` one).
        format!("{:?}", queue::done_and_failed(c).unwrap()),
        format!("{:?}", queue::pending_work(c).unwrap()),
    ]
}

/// A v12 database (asset ids as text) upgraded by today's code (0013: ids in 16 bytes):
/// every row of every table that names an asset comes through with the same ids, the
/// canonical UUIDs now 16-byte blobs and the other ids still their text; readers answer as
/// before the upgrade; and the daemon's look-ups by id find the converted rows.
#[test]
fn state_v12_opens_with_every_asset_id_as_it_was() {
    let (_dir, copy) = copy(12);
    let mut rows_before = rows_with_ids(&Connection::open(&copy).unwrap());
    for (table, rows) in &rows_before {
        assert!(!rows.is_empty(), "the fixture has rows in {table}");
    }
    // 0015 keeps in `known_assets` only what no file says: its facts are compared instead.
    rows_before.remove("known_assets");
    let known_before = known_rows(&Connection::open(&copy).unwrap());
    let answers_before = {
        let db = Db::open_readonly(&copy).unwrap();
        let answers = db.call_blocking(|c| Ok(v12_answers(c))).unwrap();
        let version: i64 = db
            .call_blocking(|c| c.query_row("PRAGMA main.user_version", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(version, 12, "a read-only open must not migrate");
        answers
    };
    // What the fixture's readers found, so that "the same after" means something.
    assert!(answers_before[6].contains("Live"), "{}", answers_before[6]);
    assert!(answers_before[10].contains(&asset("a-uploaded")));
    assert!(answers_before[17].contains(&asset("a-archived")));
    assert!(answers_before[18].contains(&asset("a-edited")));

    let db = Db::open(&copy).unwrap_or_else(|e| panic!("a v12 database must open: {e}"));
    db.call_blocking(move |c| {
        assert_eq!(
            c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?,
            17
        );
        let mut rows = rows_with_ids(c);
        rows.remove("known_assets");
        assert_eq!(rows, rows_before);
        assert_eq!(known_facts(c), known_before);
        assert_eq!(v12_answers(c), answers_before);
        // Stored as 0013 says: canonical UUIDs in 16 bytes, the others as text.
        let mut forms: Vec<(String, String, i64)> = c
            .prepare("SELECT hex(id), typeof(id), length(CAST(id AS BLOB)) FROM remote_assets")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        forms.sort();
        let texts: Vec<&(String, String, i64)> = forms.iter().filter(|f| f.1 == "text").collect();
        assert_eq!(
            texts.len(),
            3,
            "a-partner, a-no-checksum, the upper-case UUID: {forms:?}"
        );
        assert!(forms.iter().filter(|f| f.1 == "blob").all(|f| f.2 == 16));
        for (table, col) in [
            ("files", "asset_id"),
            ("known_assets", "asset_id"),
            ("tombstones", "asset_id"),
            ("edited", "old_asset_id"),
            ("after_upload", "asset_id"),
            ("pulled", "asset_id"),
            ("album_members", "asset_id"),
        ] {
            let uuids_as_text: i64 = c.query_row(
                &format!(
                    "SELECT COUNT(*) FROM {table} WHERE typeof({col}) = 'text'
                         AND {col} GLOB '5e1d0c3a-*'"
                ),
                [],
                |r| r.get(0),
            )?;
            assert_eq!(
                uuids_as_text, 0,
                "{table}.{col}: every canonical UUID is 16 bytes"
            );
        }
        // The daemon's look-ups by id find the converted rows: the user trashes an asset of
        // ours on the server, and its file is held back.
        let tx = c.transaction()?;
        let mut out = Applied::default();
        mirror::apply(
            &tx,
            &Change::Trashed(AssetId(asset("a-uploaded"))),
            Policy::default(),
            T0 + 1,
            &mut out,
        )?;
        assert_eq!((out.trashed, out.tombstoned, out.held_back), (1, 1, 1));
        assert_eq!(
            jobs(&tx)[&name("uploaded.jpg")],
            skipped(SkipReason::DeletedOnServer)
        );
        tx.commit()
    })
    .unwrap();
}

/// Every row of every table of the file, each value written out, sorted, by table.
fn all_rows(c: &Connection) -> BTreeMap<String, Vec<String>> {
    let tables: Vec<String> = c
        .prepare(
            "SELECT name FROM main.sqlite_schema WHERE type = 'table'
             AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let mut out = BTreeMap::new();
    for table in tables {
        let mut stmt = c.prepare(&format!("SELECT * FROM main.{table}")).unwrap();
        let names: Vec<String> = stmt.column_names().iter().map(|n| n.to_string()).collect();
        let mut rows: Vec<String> = stmt
            .query_map([], |r| {
                (0..names.len())
                    .map(|i| match names[i].as_str() {
                        // Unix ms or text since 0017, read as the server's text.
                        "file_created_at" => {
                            Ok(format!("{:?}", immish_sync::db::fields::date_read(r, i)?))
                        }
                        // A code or text since 0017, read as the server's text.
                        "visibility" if table == "remote_assets" => Ok(format!(
                            "{:?}",
                            immish_sync::db::fields::visibility_read(r, i)?
                        )),
                        _ => Ok(format!("{:?}", r.get::<_, rusqlite::types::Value>(i)?)),
                    })
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map(|cells| cells.join(" "))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        rows.sort();
        out.insert(table, rows);
    }
    out
}

/// A v14 database (every backed-up file's checksum and asset also a `known_assets` row)
/// upgraded by today's code (0015: `known_assets` keeps only what no file says; 0016: no
/// `sidecars` row for a photo sent without one; 0017: file dates in ms and visibilities as
/// codes, read back as the same text): every row of every other table comes
/// through unchanged, every fact `known_assets` held is still answered (by its row or by the
/// file that says it), readers answer as before the upgrade, a file that stops saying its
/// fact (changed, removed) hands it back to the table, and a sidecar that shows up or
/// changes after its photo went up is reported as before the upgrade: for a photo sent with
/// one or without, never for one that went up before the table (or was linked).
#[test]
fn state_v14_opens_with_every_row_and_every_known_asset() {
    let (_dir, copy) = copy(14);
    let mut rows_before = all_rows(&Connection::open(&copy).unwrap());
    for (table, rows) in &rows_before {
        assert!(!rows.is_empty(), "the fixture has rows in {table}");
    }
    let known_before = known_rows(&Connection::open(&copy).unwrap());
    assert_eq!(known_before.len(), 7, "{known_before:?}");
    let known_rows_before = rows_before.remove("known_assets").unwrap();
    let answers_before = {
        let db = Db::open_readonly(&copy).unwrap();
        let answers = db.call_blocking(|c| Ok(v12_answers(c))).unwrap();
        let version: i64 = db
            .call_blocking(|c| c.query_row("PRAGMA main.user_version", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(version, 14, "a read-only open must not migrate");
        assert_eq!(
            db.call_blocking(|c| Ok(known_facts(c))).unwrap(),
            known_before,
            "a reader of the old file reads the same facts"
        );
        answers
    };
    assert!(answers_before[10].contains(&asset("a-uploaded")));
    assert!(answers_before[17].contains(&asset("a-archived")));

    let db = Db::open(&copy).unwrap_or_else(|e| panic!("a v14 database must open: {e}"));
    db.call_blocking(move |c| {
        assert_eq!(
            c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?,
            17
        );
        let mut rows = all_rows(c);
        let known_rows_after = rows.remove("known_assets").unwrap();
        // 0016: each file's row gains `sent` (its last value), 1 for the two photos that
        // have a `sidecars` row in the fixture; the row of the one sent without a sidecar
        // goes.
        let mut sent = Vec::new();
        let files: Vec<String> = rows["files"]
            .iter()
            .map(|row| {
                let (rest, last) = row.rsplit_once(' ').unwrap();
                if last != "Null" {
                    sent.push((rest.split(' ').next().unwrap().to_owned(), last.to_owned()));
                }
                rest.to_owned()
            })
            .collect();
        rows.insert("files".into(), files);
        let file = |c: &Connection, name: &str| -> rusqlite::Result<i64> {
            c.query_row("SELECT id FROM files WHERE path = ?1", [path(name)], |r| {
                r.get(0)
            })
        };
        let mut want = Vec::new();
        for name in ["uploaded.jpg", "duplicate.mp4"] {
            want.push((
                format!("Integer({})", file(c, name)?),
                "Integer(1)".to_owned(),
            ));
        }
        sent.sort();
        want.sort();
        assert_eq!(sent, want);
        let sidecars_before = rows_before.get_mut("sidecars").unwrap();
        assert_eq!(sidecars_before.len(), 2, "{sidecars_before:?}");
        sidecars_before.retain(|row| !row.contains(" Null Null Null "));
        assert_eq!(
            sidecars_before.len(),
            1,
            "the row of the photo sent without"
        );
        assert_eq!(rows, rows_before);
        assert_eq!(known_facts(c), known_before);
        assert_eq!(v12_answers(c), answers_before);
        // 0017: every file date of the mirror, in the server's form, is kept in unix ms, and
        // every visibility (`timeline`) as its code (read above as the text it was).
        let kinds: Vec<(String, String, i64)> = c
            .prepare(
                "SELECT typeof(file_created_at), quote(visibility), COUNT(*)
                 FROM remote_assets GROUP BY 1, 2 ORDER BY 1, 2",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        assert_eq!(kinds, [("integer".to_owned(), "0".to_owned(), 13)]);

        // Sidecars as before 0016: the one sent with uploaded.jpg is edited, duplicate.mp4
        // (sent without) gets one, and linked.jpg (linked, not sent) and trashed-by-user.jpg
        // (uploaded before the fixture's sidecars table knew of it) get one each: reported
        // for the first two, once.
        assert_eq!(
            sidecars::sent_with(c, file(c, "uploaded.jpg")?)?,
            Some(Some(path("uploaded.jpg.xmp")))
        );
        assert_eq!(
            sidecars::sent_with(c, file(c, "duplicate.mp4")?)?,
            Some(None)
        );
        assert_eq!(sidecars::sent_with(c, file(c, "linked.jpg")?)?, None);
        let seen: Vec<SeenSidecar> = [
            "uploaded.jpg.xmp",
            "duplicate.mp4.xmp",
            "linked.jpg.xmp",
            "trashed-by-user.jpg.xmp",
        ]
        .iter()
        .map(|name| SeenSidecar {
            path: path(name),
            size: 700,
            mtime_ns: 1_690_000_000_000_000_020,
        })
        .collect();
        let late: Vec<(Vec<u8>, Vec<u8>, bool)> = sidecars::late(c, &seen)?
            .into_iter()
            .map(|l| (l.sidecar, l.photo, l.added))
            .collect();
        assert_eq!(
            late,
            [
                (path("uploaded.jpg.xmp"), path("uploaded.jpg"), false),
                (path("duplicate.mp4.xmp"), path("duplicate.mp4"), true),
            ]
        );
        assert!(sidecars::late(c, &seen)?.is_empty(), "reported once");
        assert_eq!(sidecars::reported(c)?, 2);
        assert_eq!(
            sidecars::sent_with(c, file(c, "duplicate.mp4")?)?,
            Some(Some(path("duplicate.mp4.xmp")))
        );
        // The three facts a backed-up file says left the table (uploaded.jpg,
        // duplicate.mp4, held.jpg); the seed server's, the edited file's and the two acted on
        // after upload stay.
        assert_eq!(
            (known_rows_before.len(), known_rows_after.len()),
            (7, 4),
            "{known_rows_after:?}"
        );
        for n in [10u8, 11, 74] {
            let row: i64 = c.query_row(
                "SELECT COUNT(*) FROM known_assets WHERE checksum = ?1",
                [&sum(n).0[..]],
                |r| r.get(0),
            )?;
            assert_eq!(row, 0, "the file says the fact of checksum {n}");
        }
        // A file that stops saying its fact hands it back: its bytes change, or it leaves
        // the catalogue.
        let duplicate = AssetId(asset("a-duplicate"));
        let uploaded = AssetId(asset("a-uploaded"));
        catalogue::upsert_and_queue(c, ROOT, &path("duplicate.mp4"), &stat(99), T0 + 1)?;
        c.execute("DELETE FROM files WHERE path = ?1", [path("uploaded.jpg")])?;
        assert_eq!(
            catalogue::known_asset(c, &sum(11))?,
            Some(Some(duplicate.clone()))
        );
        assert_eq!(
            catalogue::known_asset(c, &sum(10))?,
            Some(Some(uploaded.clone()))
        );
        assert_eq!(
            known_facts(c),
            known_before,
            "the same facts, as rows again"
        );
        // Forgetting is deliberate: the user deletes held.jpg's asset on the server, and the
        // fact its file said goes with the file's link.
        let tx = c.transaction()?;
        let mut out = Applied::default();
        mirror::apply(
            &tx,
            &Change::Deleted {
                id: AssetId(asset("a-pending")),
                checksum: None,
            },
            Policy::default(),
            T0 + 2,
            &mut out,
        )?;
        assert_eq!((out.tombstoned, out.held_back), (1, 1));
        assert_eq!(catalogue::known_asset(&tx, &sum(74))?, None);
        tx.commit()
    })
    .unwrap();
}
