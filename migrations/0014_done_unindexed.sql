-- immish-sync state: the jobs of backed-up files leave the queue's index (issue 12; measured
-- in docs/BENCHMARKS.md, "Session 7"). Append-only, like the others.
--
-- Nearly every job of a catalogue is `done`, and `jobs_queue` held an entry for each (about
-- 31 bytes a file) that only the count of `done` jobs read: claims, the engine's counts and
-- `status`'s lists walk the unfinished states. The index keeps the other states; a query
-- that walks it says `state <> 'done'` (the planner uses a partial index only for a query
-- whose WHERE holds its condition).
DROP INDEX jobs_queue;
CREATE INDEX jobs_queue ON jobs(state, updated_at, file_id) WHERE state <> 'done';

-- How many jobs are `done` (the progress lines and the line that ends a batch read it), kept
-- by the triggers below in the transaction of every change: one row, read in O(1). Counting
-- through the index cost a walk of every `done` entry each time.
CREATE TABLE jobs_done (
    n INTEGER NOT NULL
);
INSERT INTO jobs_done(n) SELECT COUNT(*) FROM jobs WHERE state = 'done';
CREATE TRIGGER jobs_done_insert AFTER INSERT ON jobs
WHEN NEW.state = 'done'
BEGIN
    UPDATE jobs_done SET n = n + 1;
END;
CREATE TRIGGER jobs_done_delete AFTER DELETE ON jobs
WHEN OLD.state = 'done'
BEGIN
    UPDATE jobs_done SET n = n - 1;
END;
CREATE TRIGGER jobs_done_update AFTER UPDATE OF state ON jobs
WHEN (OLD.state = 'done') <> (NEW.state = 'done')
BEGIN
    UPDATE jobs_done SET n = n + (NEW.state = 'done') - (OLD.state = 'done');
END;
