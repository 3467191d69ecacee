-- 0007: the calls their caller's presence can change (calls.PresenceMatters).

-- A stream opening or closing reads its user's calls that presence can
-- change: started, no invitee accepted, and tracked, armed or with an
-- invitee pending. Read through calls_started_by_caller, that walked every
-- started call of the caller, and an advanced call whose invitees all
-- timed out stays started with its caller alone in it: one user could
-- pile up thousands, each open and close a scan of them on the writer.
-- Save writes presence_matters with every call row (and rewrites the row
-- when it changes), so this index holds only the calls presence can
-- change, and the scan is as long as the work.
ALTER TABLE calls ADD COLUMN presence_matters INTEGER NOT NULL DEFAULT 0;

UPDATE calls SET presence_matters = 1
WHERE state = 'started'
  AND NOT EXISTS (SELECT 1 FROM call_users u
      WHERE u.call_seq = calls.seq AND u.user_id <> calls.caller AND u.accept_time > 0)
  AND (caller_tracked = 1 OR caller_offline_at > 0 OR EXISTS (SELECT 1 FROM call_users p
      WHERE p.call_seq = calls.seq AND p.user_id <> calls.caller
        AND p.state IN ('inviting', 'received', 'notYetReceived')));

CREATE INDEX calls_presence ON calls (caller, seq) WHERE presence_matters = 1;
