-- immish-sync state, version 6: albums, Live Photos and stacks (issue 11). Append-only,
-- like 0001.
--
-- The pipeline knows nothing of albums or groups. Every time a job becomes `done` (uploaded,
-- a duplicate, or linked by dedup), a trigger notes its file in `library_todo`, in the same
-- transaction; the library task (src/library/) takes those notes, works out the albums and
-- groups the file belongs to, writes them below and only then deletes the note. A crash at
-- any point leaves either the note or the rows, never neither.
CREATE TABLE library_todo (
    file_id INTEGER PRIMARY KEY REFERENCES files(id) ON DELETE CASCADE
);
CREATE TRIGGER library_todo_on_done AFTER UPDATE OF state ON jobs
WHEN NEW.state = 'done'
BEGIN
    INSERT OR IGNORE INTO library_todo(file_id) VALUES (NEW.file_id);
END;

-- The albums found or created on the server, by name (names are not unique on the server;
-- this is the one we chose). A cache: a row whose album the server no longer has is dropped
-- and the name is looked up again.
CREATE TABLE albums (
    name     TEXT PRIMARY KEY,
    album_id TEXT NOT NULL,
    found_at INTEGER NOT NULL
) WITHOUT ROWID;

-- One row per album and asset the daemon decided belongs together; `sent_at` once the
-- server answered for it (added, or already there). Never deleted when a file moves.
CREATE TABLE album_members (
    name     TEXT NOT NULL,
    asset_id TEXT NOT NULL,
    sent_at  INTEGER,
    PRIMARY KEY (name, asset_id)
) WITHOUT ROWID;
CREATE INDEX album_members_unsent ON album_members(name) WHERE sent_at IS NULL;

-- Live Photos ('live': the still, then its video) and stacks ('stack': the primary first),
-- keyed by the folder and the file stem they share. `assets` is what should hold on the
-- server (asset ids, space-separated); `sent` what the server last accepted.
CREATE TABLE library_groups (
    kind   TEXT NOT NULL,
    stem   BLOB NOT NULL,
    assets TEXT NOT NULL,
    sent   TEXT,
    PRIMARY KEY (kind, stem)
) WITHOUT ROWID;
CREATE INDEX library_groups_unsent ON library_groups(kind) WHERE sent IS NOT assets;

-- Since when a Live Photo's still has waited for its video to be uploaded (bounded; see
-- src/library/pairs.rs). Kept across restarts so that the bound holds over a crash.
CREATE TABLE pair_waits (
    file_id  INTEGER PRIMARY KEY REFERENCES files(id) ON DELETE CASCADE,
    since_ms INTEGER NOT NULL
);

-- The album and stack settings each root's files were last sorted with. When they change
-- (album mode, name, stacks...), that root's backed-up files are sorted again.
CREATE TABLE library_roots (
    root     BLOB PRIMARY KEY,
    settings TEXT NOT NULL
) WITHOUT ROWID;
