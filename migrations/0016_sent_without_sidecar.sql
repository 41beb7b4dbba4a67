-- immish-sync state: no `sidecars` row for a photo that went up without a sidecar (issue 12;
-- measured in docs/BENCHMARKS.md, "Session 9"). Append-only, like the others.
--
-- 0007 wrote a `sidecars` row for every photo we uploaded, with a NULL path when it went up
-- without a sidecar (nearly every photo: about 20 bytes a file), so that a scan can tell
-- "went up without one" (a sidecar that shows up later is reported) from "went up before
-- the table existed" or "not uploaded by us" (not compared). From here on that fact is one
-- bit of the file's row: `files.sent` is 1 once the file went up by our upload since 0007,
-- and its `sidecars` row, if any, says with which sidecar; no row: without one. A row is
-- kept when it says more than that: a sidecar path, or a late sidecar reported
-- (`reported_ms`, counted by `status`). The `sent_ms` of a dropped row (the upload's time,
-- written and never read) goes with it; a row written later for a photo that went up
-- without a sidecar (a late one reported) has none (NULL).
ALTER TABLE files ADD COLUMN sent INTEGER;
UPDATE files SET sent = 1 WHERE id IN (SELECT file_id FROM sidecars);

-- The rows that say more, in a table as 0007 and 0009 made it but for `sent_ms` that may be
-- NULL now.
CREATE TABLE sidecars_0016 (
    file_id     INTEGER PRIMARY KEY REFERENCES files(id) ON DELETE CASCADE,
    path        BLOB,
    size        INTEGER,
    mtime_ns    INTEGER,
    sent_ms     INTEGER,
    reported_ms INTEGER
);
INSERT INTO sidecars_0016 (file_id, path, size, mtime_ns, sent_ms, reported_ms)
    SELECT file_id, path, size, mtime_ns, sent_ms, reported_ms FROM sidecars
    WHERE path IS NOT NULL OR reported_ms IS NOT NULL
    ORDER BY file_id;
DROP TABLE sidecars;
ALTER TABLE sidecars_0016 RENAME TO sidecars;
CREATE INDEX sidecars_by_path ON sidecars(path) WHERE path IS NOT NULL;
