-- 0002: find a user's pending invitations directly.
--
-- A stream opened without Last-Event-ID starts with the invitations still
-- pending for its user. Finding each one's callInvitationReceived event by
-- walking the user's events cost pending calls x the user's events. Instead
-- the row keeps the id of that event, written in the same transaction as the
-- event itself (db/tx.go Save), and a partial index lists a user's live
-- invitations newest first.
ALTER TABLE call_users ADD COLUMN invitation_event_id INTEGER NOT NULL DEFAULT 0; -- newest callInvitationReceived to this user in this call, 0: none

-- Backfill only the live invitations (timeout_at > 0, see below): the others
-- are never looked up again. Runs once, over the few rows pending now.
UPDATE call_users SET invitation_event_id = COALESCE((
    SELECT e.id FROM events e JOIN calls c ON c.id = e.call_id
    WHERE c.seq = call_users.call_seq AND e.user_id = call_users.user_id
      AND e.type = 'callInvitationReceived'
    ORDER BY e.id DESC LIMIT 1), 0)
WHERE timeout_at > 0;

-- A user's live invitations by event id: the newest N in one backward range
-- scan. Partial on timeout_at > 0, which holds exactly while an invitation is
-- pending in a started call (an invitation always gets a timeout; answering,
-- timing out, cancelling and ending the call all clear it), so invitations
-- left 'inviting' in an ended advanced call, and the whole history, stay out
-- and cost nothing to skip. Queries must spell u.timeout_at > 0.
CREATE INDEX call_users_invitations ON call_users (user_id, invitation_event_id) WHERE timeout_at > 0;
