-- immish-sync state, version 12: edited files (issue 11). Append-only, like 0001.
--
-- A file whose stat changes after it was backed up loses its `asset_id` (its bytes may be
-- new); the asset it was backed up as is noted here so that the upload of the new version
-- can say so and `diff` can call the old asset "local file changed" rather than "gone".
-- `uploaded_at` is set when the new bytes went up as a new asset (a touch that left the
-- bytes alone never sets it). Nothing on the server is ever deleted because of an edit
-- (docs/ARCHITECTURE.md#edited-files).
CREATE TABLE edited (
    id           INTEGER PRIMARY KEY,
    file_id      INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    old_asset_id TEXT NOT NULL,
    noted_at     INTEGER NOT NULL,
    uploaded_at  INTEGER
);
CREATE INDEX edited_file ON edited(file_id);
CREATE INDEX edited_old_asset ON edited(old_asset_id);
