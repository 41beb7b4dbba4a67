-- immish-sync state: what we uploaded or linked, said once (issue 12; measured in
-- docs/BENCHMARKS.md, "Session 8"). Append-only, like the others.
--
-- `known_assets` held, for nearly every backed-up file, the checksum and asset id its
-- `files` row holds too (about 55 bytes a file). From here on a `files` row whose
-- `asset_id` is set says the same as a `known_assets` row would: the server holds the
-- file's checksum as that asset, verified. `known_assets` keeps only what no file says: an
-- asset whose files changed, left or were archived, one of a seed-style server (no id), one
-- not verified, and a checksum that files name with more than one asset. The fact a
-- checksum stands for is its `known_assets` row if it has one, else its files' asset
-- (`catalogue::known_asset`; docs/ARCHITECTURE.md, "State database").

-- The rows a file says exactly: verified, with an id, and every file of that checksum
-- that names an asset names this one.
DELETE FROM known_assets
WHERE asset_id IS NOT NULL AND verified_at IS NOT NULL
  AND EXISTS (SELECT 1 FROM files f
              WHERE f.checksum = known_assets.checksum AND f.asset_id = known_assets.asset_id)
  AND NOT EXISTS (SELECT 1 FROM files f
                  WHERE f.checksum = known_assets.checksum AND f.asset_id IS NOT NULL
                    AND f.asset_id IS NOT known_assets.asset_id);

-- A file that stops saying it (its bytes changed, it was unlinked or removed from the
-- catalogue) hands the fact to `known_assets` in the same statement, unless another file
-- still says one for that checksum or a row already does (INSERT OR IGNORE keeps it). What
-- it said was verified (an unverified fact always has its row). Code that means to forget
-- a fact (an asset deleted on the server, another server) unlinks the files first and then
-- deletes the row.
CREATE TRIGGER known_assets_from_changed_file
AFTER UPDATE OF checksum, asset_id ON files
WHEN OLD.asset_id IS NOT NULL AND OLD.checksum IS NOT NULL
     AND (NEW.asset_id IS NULL OR NEW.checksum IS NOT OLD.checksum)
BEGIN
    INSERT OR IGNORE INTO known_assets(checksum, asset_id, verified_at)
    SELECT OLD.checksum, OLD.asset_id,
           CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
    WHERE NOT EXISTS (SELECT 1 FROM files f
                      WHERE f.checksum = OLD.checksum AND f.asset_id IS NOT NULL);
END;
CREATE TRIGGER known_assets_from_removed_file
AFTER DELETE ON files
WHEN OLD.asset_id IS NOT NULL AND OLD.checksum IS NOT NULL
BEGIN
    INSERT OR IGNORE INTO known_assets(checksum, asset_id, verified_at)
    SELECT OLD.checksum, OLD.asset_id,
           CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
    WHERE NOT EXISTS (SELECT 1 FROM files f
                      WHERE f.checksum = OLD.checksum AND f.asset_id IS NOT NULL);
END;
