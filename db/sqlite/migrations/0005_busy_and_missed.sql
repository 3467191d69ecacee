-- 0005: busy detection and missed calls.

-- busy is 1 while the user is accepted in a started call: the invitation's
-- busy check ("which of these invitees are accepted in another started
-- call", busyPolicy) reads it. A column rather than a join on calls.state,
-- because accepted rows stay accepted in ended calls (a general call ends
-- with its accepted users as they were) and the check would otherwise walk
-- the invitee's whole call history. Save writes it with every user row and
-- clears it for all the call's users when the call ends (db/tx.go).
ALTER TABLE call_users ADD COLUMN busy INTEGER NOT NULL DEFAULT 0;

-- When the call.missed webhook was produced for this user in this call
-- (0: never): it is sent at most once per invitee per call.
ALTER TABLE call_users ADD COLUMN missed_time INTEGER NOT NULL DEFAULT 0;

-- Backfill the users accepted in the calls started now: the subquery walks
-- calls_started_by_caller (0001), the update the call_users primary key.
UPDATE call_users SET busy = 1
WHERE state = 'accepted' AND call_seq IN (SELECT seq FROM calls WHERE state = 'started');

-- The busy check: an index lookup per invitee. Partial on busy = 1, so it
-- holds only the users in a live call, however long the history grows.
-- Queries must spell the literal u.busy = 1 for SQLite to use it.
CREATE INDEX call_users_busy ON call_users (user_id) WHERE busy = 1;
