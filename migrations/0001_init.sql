-- immish-sync state, version 1. Append-only: never edit a migration once shipped;
-- add 0002_….sql instead. Applied in one exclusive transaction, tracked by user_version.

-- The local catalogue: one row per regular media file seen under a root, with the stat
-- that its cached checksum belongs to. Paths are raw bytes so that any filename works.
CREATE TABLE files (
    id         INTEGER PRIMARY KEY,
    path       BLOB NOT NULL UNIQUE,
    root       BLOB NOT NULL,
    dev        INTEGER NOT NULL,
    ino        INTEGER NOT NULL,
    size       INTEGER NOT NULL,
    mtime_ns   INTEGER NOT NULL,
    ctime_ns   INTEGER NOT NULL,
    -- SHA-1 of the content for exactly the stat above; NULL until hashed, cleared on change.
    checksum   BLOB,
    -- The server asset this file is backed up as (uploaded or linked).
    asset_id   TEXT,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    -- 1 when the last complete scan of its root did not find it (the file is gone locally;
    -- nothing is ever deleted on the server because of this).
    missing    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX files_checksum ON files(checksum) WHERE checksum IS NOT NULL;
CREATE INDEX files_inode ON files(dev, ino, size, mtime_ns);

-- The persistent job queue: at most one job per file. States: queued, hashing, checking,
-- uploading, verifying, done, skipped, retry, failed (see src/model.rs JobState).
CREATE TABLE jobs (
    file_id         INTEGER PRIMARY KEY REFERENCES files(id) ON DELETE CASCADE,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- unix ms; only for state = 'retry'
    next_attempt_at INTEGER,
    -- why it is skipped, failed or waiting to retry (the last error)
    reason          TEXT,
    -- for done: uploaded | duplicate | linked
    outcome         TEXT,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX jobs_state ON jobs(state, next_attempt_at);

-- Assets of ours on the server by checksum: what we uploaded, or found already there and
-- linked. Dedup step 1 answers from here with no network.
CREATE TABLE known_assets (
    checksum    BLOB PRIMARY KEY,
    asset_id    TEXT,
    verified_at INTEGER,
    created_at  INTEGER NOT NULL
);

-- Small facts: device id, server identity, media-type cache, last success.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
