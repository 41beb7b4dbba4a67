-- Claiming the next jobs walks this index in order instead of sorting every waiting job on
-- each claim (which made a 20k-file first scan quadratic).
CREATE INDEX jobs_queue ON jobs(state, updated_at, file_id);
