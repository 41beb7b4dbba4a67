-- immish-sync state: the XMP sidecar each uploaded photo went up with. Append-only, like
-- 0001.
--
-- One row per photo uploaded since this version: the sidecar sent with it (NULL path: it
-- went up without one) and that sidecar's stat. A scan compares the sidecars it sees with
-- these rows to report one created or edited after its photo went up (the photo is not
-- uploaded again for it); a reported change is written here, so it is reported once.
CREATE TABLE sidecars (
    file_id  INTEGER PRIMARY KEY REFERENCES files(id) ON DELETE CASCADE,
    path     BLOB,
    size     INTEGER,
    mtime_ns INTEGER,
    sent_ms  INTEGER NOT NULL
);
CREATE INDEX sidecars_by_path ON sidecars(path) WHERE path IS NOT NULL;
