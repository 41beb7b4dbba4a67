-- immish-sync state: a mirrored asset's file date and visibility in fewer bytes (issue 12;
-- measured in docs/BENCHMARKS.md, "Session 9"). Append-only, like the others.
--
-- `remote_assets.file_created_at` held the date the server gives for every asset of the
-- user (ours and every other device's) as text, `2024-05-01T10:00:00.000Z`: 24 bytes. A
-- date in exactly that form, in years 1678 to 2261, is kept from here on as its unix
-- milliseconds (an INTEGER) when those milliseconds written back in that form give the same
-- text; any other text stays as it is. The visibility (`timeline` on nearly every row, 8
-- bytes) is kept as a code when it is one of the four the server names today (0 timeline,
-- 1 archive, 2 hidden, 3 locked: 0 and 1 cost no byte beyond their type's), any other as its
-- text. An INTEGER never equals a TEXT, and each reads back as the server wrote it
-- (src/db/fields.rs converts at the boundary; the CASEs below are the twins of its binds,
-- and a test there runs this file to check that they agree).
--
-- Both columns are declared without a type: under 0002's `TEXT` SQLite would turn every
-- INTEGER written into them into its digits' text. So the table is rebuilt, as 0013 made it
-- but for those two columns, with its rowids, in their order.
CREATE TABLE remote_assets_0017 (
    id                 BLOB PRIMARY KEY,
    owner              INTEGER NOT NULL,
    checksum           BLOB,
    original_file_name TEXT NOT NULL DEFAULT '',
    -- The file's date as the server wrote it, in its stored form (src/db/fields.rs): unix
    -- ms (INTEGER) or the server's text (TEXT); NULL when not said.
    file_created_at,
    updated_at         INTEGER,
    -- The visibility in its stored form (src/db/fields.rs): a code (INTEGER) or the
    -- server's text; NULL when not said.
    visibility,
    is_trashed         INTEGER NOT NULL DEFAULT 0,
    device             INTEGER,
    deleted_at         INTEGER,
    synced_at          INTEGER NOT NULL
);
INSERT INTO remote_assets_0017 (rowid, id, owner, checksum, original_file_name,
        file_created_at, updated_at, visibility, is_trashed, device, deleted_at, synced_at)
    SELECT rowid, id, owner, checksum, original_file_name,
           CASE WHEN typeof(file_created_at) = 'text'
                 AND file_created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9]Z'
                 AND substr(file_created_at, 1, 4) BETWEEN '1678' AND '2261'
                 AND strftime('%Y-%m-%dT%H:%M:%fZ', file_created_at) IS file_created_at
                THEN CAST(round((julianday(file_created_at) - 2440587.5) * 86400000) AS INTEGER)
                ELSE file_created_at END,
           updated_at,
           CASE visibility WHEN 'timeline' THEN 0 WHEN 'archive' THEN 1 WHEN 'hidden' THEN 2
                           WHEN 'locked' THEN 3 ELSE visibility END,
           is_trashed, device, deleted_at, synced_at
    FROM remote_assets ORDER BY rowid;
DROP TABLE remote_assets;
ALTER TABLE remote_assets_0017 RENAME TO remote_assets;
CREATE INDEX remote_assets_checksum ON remote_assets(checksum) WHERE checksum IS NOT NULL;
