-- 0010: when an endpoint was deleted (Unix ms; 0: not deleted, or deleted
-- before this column). The retention purges a deleted endpoint only once
-- it has been deleted a while, past any write that read it as live.
ALTER TABLE webhook_endpoints ADD COLUMN deleted_at INTEGER NOT NULL DEFAULT 0;
