-- 0005: the calls their caller's presence can change (calls.PresenceMatters);
-- see SQLite's 0007 for why. Save writes the column with every call row.
ALTER TABLE calls ADD COLUMN presence_matters BOOLEAN NOT NULL DEFAULT false;

UPDATE calls SET presence_matters = true
WHERE state = 'started'
  AND NOT EXISTS (SELECT 1 FROM call_users u
      WHERE u.call_seq = calls.seq AND u.user_id <> calls.caller AND u.accept_time > 0)
  AND (caller_tracked OR caller_offline_at > 0 OR EXISTS (SELECT 1 FROM call_users p
      WHERE p.call_seq = calls.seq AND p.user_id <> calls.caller
        AND p.state IN ('inviting', 'received', 'notYetReceived')));

CREATE INDEX calls_presence ON calls (caller, seq) WHERE presence_matters;
