-- immish-sync state, version 9: what happens to a local file after its upload (issue 11,
-- `after_upload` of a root). Append-only, like 0001.
--
-- The only way the daemon ever removes a local file. Each action is recorded here before it
-- is taken (`intent`), then marked `done`, so that a crash between the two is finished or
-- checked again at the next start (docs/ARCHITECTURE.md#after-upload). A row is written
-- for a file only once the server holds its verified bytes; the file's catalogue row goes
-- when the action is done (a new file at the same path is a new file), so this table is
-- what `status` and `diff` read to say "archived" or "removed after upload" instead of
-- "gone locally".
--
-- `state`: `intent` (about to act), `done` (moved to `target` or deleted), `held` (looked at
-- and not acted on, with `reason`; looked at again from `retry_at`).
CREATE TABLE after_upload (
    id        INTEGER PRIMARY KEY,
    -- The catalogue row while it exists (none after `done`).
    file_id   INTEGER,
    root      BLOB NOT NULL,
    path      BLOB NOT NULL,
    -- 'archive' | 'delete'
    action    TEXT NOT NULL,
    -- archive: where the file goes
    target    BLOB,
    checksum  BLOB NOT NULL,
    asset_id  TEXT NOT NULL,
    state     TEXT NOT NULL,
    reason    TEXT,
    retry_at  INTEGER,
    noted_at  INTEGER NOT NULL,
    done_at   INTEGER
);
CREATE UNIQUE INDEX after_upload_file ON after_upload(file_id) WHERE state <> 'done';
CREATE INDEX after_upload_asset ON after_upload(asset_id);

-- When a sidecar's change after its photo went up was reported (by a scan or the watcher),
-- so that `status` can count them (docs/ARCHITECTURE.md#sidecars).
ALTER TABLE sidecars ADD COLUMN reported_ms INTEGER;
