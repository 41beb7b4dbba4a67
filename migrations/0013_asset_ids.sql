-- immish-sync state: asset ids in 16 bytes (issue 12; measured in docs/BENCHMARKS.md,
-- "Session 7"). Append-only, like the others.
--
-- The server's asset ids are UUIDs, written as 36 characters of text; every table that names
-- an asset held that text, and a backed-up file's id was stored five times (`files.asset_id`
-- and its index, `remote_assets.id` and its key, `known_assets.asset_id`). From here on an
-- id in the canonical lower-case UUID form is stored as its 16 bytes (a BLOB), and any other
-- id (a UUID in upper case, or one an older version stored before the client checked the
-- server's ids) as its text, unchanged: a TEXT value
-- never equals a BLOB, so the two cannot be mistaken for each other, and each reads back
-- exactly as the server wrote it. src/db/ids.rs converts at the boundary; the CASE below is
-- its SQL twin (`stored_id_sql`), applied to every row already stored.
--
-- `library_groups.assets` (a list of ids, one row per Live Photo or stack, not per file) and
-- `albums.album_id` (not an asset id) stay text.

-- The mirror: rebuilt, so that its rows and key are written compactly.
CREATE TABLE remote_assets_0013 (
    -- The asset id in its stored form (src/db/ids.rs).
    id                 BLOB PRIMARY KEY,
    owner              INTEGER NOT NULL,
    checksum           BLOB,
    original_file_name TEXT NOT NULL DEFAULT '',
    file_created_at    TEXT,
    updated_at         INTEGER,
    visibility         TEXT,
    is_trashed         INTEGER NOT NULL DEFAULT 0,
    device             INTEGER,
    deleted_at         INTEGER,
    synced_at          INTEGER NOT NULL
);
INSERT INTO remote_assets_0013 (rowid, id, owner, checksum, original_file_name,
        file_created_at, updated_at, visibility, is_trashed, device, deleted_at, synced_at)
    SELECT rowid, CASE WHEN id GLOB '[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]'
        THEN unhex(replace(id, '-', '')) ELSE id END, owner, checksum, original_file_name, file_created_at,
           updated_at, visibility, is_trashed, device, deleted_at, synced_at
    FROM remote_assets ORDER BY rowid;
DROP TABLE remote_assets;
ALTER TABLE remote_assets_0013 RENAME TO remote_assets;
CREATE INDEX remote_assets_checksum ON remote_assets(checksum) WHERE checksum IS NOT NULL;

-- What we uploaded or linked: rebuilt the same way (in its key's order, as 0011 made it).
CREATE TABLE known_assets_0013 (
    checksum    BLOB PRIMARY KEY,
    -- The asset id in its stored form; NULL: on the server, id unknown (a seed server).
    asset_id    BLOB,
    verified_at INTEGER
) WITHOUT ROWID;
INSERT INTO known_assets_0013 (checksum, asset_id, verified_at)
    SELECT checksum, CASE WHEN asset_id GLOB '[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]'
        THEN unhex(replace(asset_id, '-', '')) ELSE asset_id END, verified_at
    FROM known_assets;
DROP TABLE known_assets;
ALTER TABLE known_assets_0013 RENAME TO known_assets;

-- The catalogue is referenced by the queue and others (ON DELETE CASCADE): it is changed in
-- place, never dropped. Its index follows the update.
UPDATE files SET asset_id = CASE WHEN asset_id GLOB '[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]'
        THEN unhex(replace(asset_id, '-', '')) ELSE asset_id END
WHERE asset_id IS NOT NULL;

-- The small tables, in place (their declared TEXT type does not change a BLOB value).
UPDATE tombstones SET asset_id = CASE WHEN asset_id GLOB '[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]'
        THEN unhex(replace(asset_id, '-', '')) ELSE asset_id END
WHERE asset_id IS NOT NULL;
UPDATE edited SET old_asset_id = CASE WHEN old_asset_id GLOB '[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]'
        THEN unhex(replace(old_asset_id, '-', '')) ELSE old_asset_id END;
UPDATE after_upload SET asset_id = CASE WHEN asset_id GLOB '[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]'
        THEN unhex(replace(asset_id, '-', '')) ELSE asset_id END;
UPDATE pulled SET asset_id = CASE WHEN asset_id GLOB '[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]'
        THEN unhex(replace(asset_id, '-', '')) ELSE asset_id END;
UPDATE album_members SET asset_id = CASE WHEN asset_id GLOB '[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]'
        THEN unhex(replace(asset_id, '-', '')) ELSE asset_id END;
