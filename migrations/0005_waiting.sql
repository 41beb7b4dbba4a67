-- immish-sync state, version 5: files that wait because they look unfinished. Append-only,
-- like 0001.
--
-- The watcher's pending set lives in memory; the files in it that wait for a reason other
-- than the quiet period (still open for writing, structurally incomplete), and those a scan
-- left alone for being incomplete, are written here so that `status` can name them. A row
-- is removed when its file settles or is taken anyway.
CREATE TABLE waiting (
    path     BLOB PRIMARY KEY,
    root     BLOB NOT NULL,
    -- 'open' (the watcher saw a write and no close since) or 'incomplete' (the structure
    -- is cut short).
    kind     TEXT NOT NULL,
    reason   TEXT NOT NULL,
    since_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX waiting_by_root ON waiting(root);
