-- immish-sync state, version 2: the mirror of the user's own assets on the server, and the
-- tombstones of assets of ours the user trashed or deleted there. Append-only, like 0001.

-- One row per asset of the user's own on the server, as the last pull or live event told
-- it. Rows of assets deleted for good stay, with `deleted_at` set, so that the mirror can
-- say what went away; a pull that sees the asset again clears it.
CREATE TABLE remote_assets (
    id                 TEXT PRIMARY KEY,
    owner_id           TEXT NOT NULL,
    -- SHA-1 of the server's copy (20 bytes); NULL when the server did not say.
    checksum           BLOB,
    original_file_name TEXT NOT NULL DEFAULT '',
    file_created_at    TEXT,
    -- The server's own `updatedAt`, as it wrote it (server clock; NULL from the sync stream,
    -- which does not carry it).
    updated_at         TEXT,
    -- timeline | archive | hidden | locked
    visibility         TEXT,
    -- In the server's trash (`isTrashed`, or `deletedAt` in the sync stream).
    is_trashed         INTEGER NOT NULL DEFAULT 0,
    -- The uploading client's ids (absent on the next major and in the sync stream).
    device_id          TEXT,
    device_asset_id    TEXT,
    -- Unix ms (local clock) when we learned it was deleted for good; NULL while it exists.
    deleted_at         INTEGER,
    -- Unix ms (local clock) of the last write to this row; a full reconcile only suspects
    -- rows it wrote before that reconcile began.
    synced_at          INTEGER NOT NULL
);
CREATE INDEX remote_assets_checksum ON remote_assets(checksum) WHERE checksum IS NOT NULL;

-- Assets that came from our files and that the user trashed or deleted on the server: the
-- checksum is never uploaded again (unless mirror.reupload_deleted). `reason` is `trashed`
-- or `deleted`; `at` is unix ms (local clock) when we learned it.
CREATE TABLE tombstones (
    checksum BLOB PRIMARY KEY,
    asset_id TEXT,
    reason   TEXT NOT NULL,
    at       INTEGER NOT NULL
);

-- The mirror asks "which of our files is backed up as this asset?" on every trash, restore
-- and delete it learns of.
CREATE INDEX files_asset ON files(asset_id) WHERE asset_id IS NOT NULL;
