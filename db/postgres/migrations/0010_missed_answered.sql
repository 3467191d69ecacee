-- 0010: call.missed settled for the users who answered before answers
-- settled it: SQLite's 0012, which says why. Started calls only, joined
-- through the primary keys.
UPDATE call_users u SET missed_time = GREATEST(u.update_time, u.accept_time, 1)
FROM calls c
WHERE c.seq = u.call_seq AND c.state = 'started'
  AND u.missed_time = 0
  AND (u.state = 'rejected' OR u.accept_time > 0)
  AND u.user_id <> c.caller;
