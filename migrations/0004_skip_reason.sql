-- immish-sync state, version 4: why a file is skipped, as a stable code. Append-only, like
-- 0001.
--
-- Up to version 3 a skipped job's `reason` held the sentence shown to people, and the code
-- found held-back files by matching that sentence: rewording it would have lost them. From
-- version 4 `skip_reason` holds the code (src/model.rs SkipReason) and is what queries
-- match; `reason` keeps only the last error of failed and retrying jobs, and the sentence
-- of a skip is rendered from the code when shown.
ALTER TABLE jobs ADD COLUMN skip_reason TEXT;

-- Every sentence version 3 wrote for a skip, verbatim. A skipped job with any other text
-- keeps it in `reason` (shown as it is) and gets no code.
UPDATE jobs SET skip_reason = CASE reason
        WHEN 'deleted on the server by the user; not uploaded again (set mirror.reupload_deleted = true to change that)'
            THEN 'deleted_on_server'
        WHEN 'the server has this photo in its trash; not uploaded again'
            THEN 'trashed_on_server'
        WHEN 'no longer a regular file' THEN 'not_a_regular_file'
        WHEN 'empty file' THEN 'empty_file'
        WHEN 'file vanished before it was backed up' THEN 'vanished'
    END
WHERE state = 'skipped';
UPDATE jobs SET reason = NULL WHERE skip_reason IS NOT NULL;
