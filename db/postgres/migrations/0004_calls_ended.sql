-- 0004: the retention of ended calls (CALLSIG_CALL_RETENTION).

-- Ended calls by when they ended: the pruner deletes the oldest a batch at
-- a time, a range of this index, never a scan of the table.
CREATE INDEX calls_ended ON calls (end_time) WHERE state = 'ended';
