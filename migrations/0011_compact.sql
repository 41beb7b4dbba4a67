-- immish-sync state: the same facts in fewer bytes a file (issue 12). Append-only, like the
-- others. (Numbered 0011: 0009 and 0010 are other changes'; the merge renumbers if needed.)

-- `known_assets` is looked up by its checksum alone: kept in the order of its key (WITHOUT
-- ROWID) it needs no second copy of every checksum in an index (about 35 bytes a file).
CREATE TABLE known_assets_0011 (
    checksum    BLOB PRIMARY KEY,
    asset_id    TEXT,
    verified_at INTEGER,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO known_assets_0011 (checksum, asset_id, verified_at, created_at)
    SELECT checksum, asset_id, verified_at, created_at FROM known_assets
    WHERE checksum IS NOT NULL;
DROP TABLE known_assets;
ALTER TABLE known_assets_0011 RENAME TO known_assets;

-- `jobs_state` held every job, the `done` ones too (most of a catalogue), by state and retry
-- time; `jobs_queue` (state, updated_at) answers every state's counts and claims, and only
-- the jobs waiting to retry need their due time in order (about 19 bytes a file).
DROP INDEX jobs_state;
CREATE INDEX jobs_retry ON jobs(next_attempt_at) WHERE state = 'retry';

-- A move is found by its inode; the rest of the stat is compared on the row it finds
-- (about 16 bytes a file).
DROP INDEX files_inode;
CREATE INDEX files_inode ON files(ino);
