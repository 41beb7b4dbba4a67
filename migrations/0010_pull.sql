-- immish-sync state: the copies of the server's originals kept in `[[pull]]` folders
-- (docs/ARCHITECTURE.md#pull). Append-only, like the others. (Numbered 0010: 0009 is the
-- library's; the merge renumbers if needed.)

-- One row per pull folder and asset of the mirror that the folder holds or will hold. The
-- relative path is chosen once, before the download, and never changes afterwards: a date
-- or album edit on the server does not move a copy already laid out, and a name collision
-- is settled the same way on every run.
CREATE TABLE pulled (
    -- The pull folder's path, as configured (bytes).
    folder          BLOB NOT NULL,
    asset_id        TEXT NOT NULL,
    -- Below the folder (bytes).
    rel_path        BLOB NOT NULL,
    -- pending | pulled | failed | kept (deleted on the server, the copy stays)
    -- | moved (deleted on the server, the copy is in .deleted/) | removed (its time in
    -- .deleted/ ran out)
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- Why the last attempt failed, in words for `status`.
    error           TEXT,
    -- Unix ms (local clock): when a failed download is tried again.
    next_attempt_at INTEGER,
    -- Unix ms (local clock): when the copy went to .deleted/.
    moved_at        INTEGER,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (folder, asset_id)
);
CREATE UNIQUE INDEX pulled_path ON pulled(folder, rel_path);
CREATE INDEX pulled_state ON pulled(folder, state);
