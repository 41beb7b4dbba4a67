-- immish-sync state: fewer bytes a mirrored asset and a known one (issue 12; measured in
-- docs/BENCHMARKS.md, "Session 5"). Append-only, like the others.

-- The owner and device ids of the mirror's rows, each written once. A mirror holds the
-- user's own assets, nearly all uploaded by a handful of devices: every row repeated the
-- same 36-byte owner id and a 48-byte device id (about 85 bytes a file). Rows are never
-- deleted (a few dozen at most; `forget_server` may leave some unused, which is harmless).
CREATE TABLE remote_ids (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
INSERT OR IGNORE INTO remote_ids(name) SELECT owner_id FROM remote_assets;
INSERT OR IGNORE INTO remote_ids(name)
    SELECT device_id FROM remote_assets WHERE device_id IS NOT NULL;

-- `remote_assets` as 0002 made it, with `owner` and `device` as `remote_ids` rows, the
-- server's `updatedAt` as unix ms (it is only ever compared, and was parsed to ms for that:
-- 7 bytes instead of 24), and without `device_asset_id`: it was written on every row and
-- read by nothing (about 33 bytes a file; the daemon matches its uploads by checksum,
-- never by that id).
CREATE TABLE remote_assets_0012 (
    id                 TEXT PRIMARY KEY,
    -- remote_ids.id of the owner's user id
    owner              INTEGER NOT NULL,
    checksum           BLOB,
    original_file_name TEXT NOT NULL DEFAULT '',
    file_created_at    TEXT,
    -- The server's `updatedAt` in unix ms (server clock); NULL when not said or unreadable.
    updated_at         INTEGER,
    visibility         TEXT,
    is_trashed         INTEGER NOT NULL DEFAULT 0,
    -- remote_ids.id of the uploading client's `deviceId`; NULL when the server did not say
    device             INTEGER,
    deleted_at         INTEGER,
    synced_at          INTEGER NOT NULL
);
INSERT INTO remote_assets_0012 (id, owner, checksum, original_file_name, file_created_at,
        updated_at, visibility, is_trashed, device, deleted_at, synced_at)
    SELECT r.id, (SELECT o.id FROM remote_ids o WHERE o.name = r.owner_id), r.checksum,
           r.original_file_name, r.file_created_at,
           CAST(round((julianday(r.updated_at) - 2440587.5) * 86400000) AS INTEGER),
           r.visibility, r.is_trashed,
           (SELECT d.id FROM remote_ids d WHERE d.name = r.device_id), r.deleted_at,
           r.synced_at
    FROM remote_assets r ORDER BY r.rowid;
DROP TABLE remote_assets;
ALTER TABLE remote_assets_0012 RENAME TO remote_assets;
CREATE INDEX remote_assets_checksum ON remote_assets(checksum) WHERE checksum IS NOT NULL;

-- `known_assets.created_at` was written once and never read (about 7 bytes a file).
ALTER TABLE known_assets DROP COLUMN created_at;

-- Each file named its root by the root's whole path (about 25 bytes a file); it names it by
-- a `roots` row now. `first_seen` was written once and never read (about 7 bytes a file).
CREATE TABLE roots (
    id   INTEGER PRIMARY KEY,
    path BLOB NOT NULL UNIQUE
);
INSERT OR IGNORE INTO roots(path) SELECT root FROM files ORDER BY id;
ALTER TABLE files ADD COLUMN root_id INTEGER NOT NULL DEFAULT 0;
UPDATE files SET root_id = (SELECT r.id FROM roots r WHERE r.path = files.root);
ALTER TABLE files DROP COLUMN root;
ALTER TABLE files DROP COLUMN first_seen;
