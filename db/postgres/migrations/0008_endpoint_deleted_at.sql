-- 0008: when an endpoint was deleted (Unix ms; 0: not deleted, or deleted
-- before this column). The retention purges a deleted endpoint only once
-- it has been deleted a while: a Save that read it as live before its
-- deletion, not committed yet, would otherwise add a delivery to an
-- endpoint no longer there, which nothing would fail. See SQLite's 0010.
ALTER TABLE webhook_endpoints ADD COLUMN deleted_at BIGINT NOT NULL DEFAULT 0;
