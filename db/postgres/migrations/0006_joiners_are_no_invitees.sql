-- 0006: a user who joined a call uninvited is no invitee
-- (calls.CallerOfflineApplies): his accepting no longer switches the
-- caller-offline rule off. Calls in which only such users accepted were
-- saved with presence_matters = false by the versions before; they are
-- marked as Save now derives it (0005's backfill, counting only invitees:
-- users someone else invited). See SQLite's 0008.
UPDATE calls SET presence_matters = true
WHERE state = 'started' AND NOT presence_matters
  AND NOT EXISTS (SELECT 1 FROM call_users u
      WHERE u.call_seq = calls.seq AND u.user_id <> calls.caller AND u.inviter <> u.user_id AND u.accept_time > 0)
  AND (caller_tracked OR caller_offline_at > 0 OR EXISTS (SELECT 1 FROM call_users p
      WHERE p.call_seq = calls.seq AND p.user_id <> calls.caller
        AND p.state IN ('inviting', 'received', 'notYetReceived')));
