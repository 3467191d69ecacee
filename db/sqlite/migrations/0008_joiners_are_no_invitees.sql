-- 0008: a user who joined a call uninvited is no invitee
-- (calls.CallerOfflineApplies): his accepting no longer switches the
-- caller-offline rule off. Calls in which only such users accepted were
-- saved with presence_matters = 0 by the versions before; they are marked
-- as Save now derives it (0007's backfill, counting only invitees: users
-- someone else invited).
UPDATE calls SET presence_matters = 1
WHERE state = 'started' AND presence_matters = 0
  AND NOT EXISTS (SELECT 1 FROM call_users u
      WHERE u.call_seq = calls.seq AND u.user_id <> calls.caller AND u.inviter <> u.user_id AND u.accept_time > 0)
  AND (caller_tracked = 1 OR caller_offline_at > 0 OR EXISTS (SELECT 1 FROM call_users p
      WHERE p.call_seq = calls.seq AND p.user_id <> calls.caller
        AND p.state IN ('inviting', 'received', 'notYetReceived')));
