-- 0012: call.missed settled for the users who answered before answers
-- settled it.
--
-- call.missed is settled by missed_time alone (calls/missed.go): set when
-- the webhook is produced, or when the user accepts, joins or rejects, so
-- none follows. Until 2026-12-03 an answer did not set it (0005 added the
-- column as 0 for every row), so a user who had answered in a call still
-- started at the upgrade, invited again and left unanswered, got a
-- call.missed the rule forbids (found by review). An answer shows in the
-- row as accept_time (accepting or joining; the caller's is the call's
-- creation, which is no answer) or as the state rejected; a rejection
-- followed by a new invitation left no trace and cannot be recovered.
-- Started calls only (through calls_started, 0011): an ended call sends
-- no more webhooks. PostgreSQL's 0010 is the same.
UPDATE call_users SET missed_time = max(update_time, accept_time, 1)
WHERE missed_time = 0
  AND (state = 'rejected' OR accept_time > 0)
  AND call_seq IN (SELECT seq FROM calls WHERE state = 'started')
  AND user_id <> (SELECT caller FROM calls WHERE calls.seq = call_users.call_seq);
