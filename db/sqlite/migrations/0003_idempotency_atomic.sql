-- Idempotency-Key records are now written in the transaction of the change
-- they guard, complete with their response: there is no "in flight" record
-- (status 0) any more. Rows of that kind left by an older version (a request
-- cut short by a crash) would block their key; drop them so the key can be
-- used again. Every remaining row has a response (status > 0).
DELETE FROM idempotency_keys WHERE status = 0;

-- The calls the caller-offline rule is re-armed on at start: started and
-- caller-tracked, paged by seq. Partial, so it holds only the live tracked
-- calls however long the history grows. Queries must spell the literals
-- state = 'started' AND caller_tracked = 1 for SQLite to use it.
CREATE INDEX calls_tracked_started ON calls (seq) WHERE state = 'started' AND caller_tracked = 1;
