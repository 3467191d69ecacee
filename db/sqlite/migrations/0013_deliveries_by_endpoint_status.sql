-- 0013: an endpoint's deliveries by status, newest first
-- (db.DeliveriesQuery): GET /webhooks/{id}/deliveries?status=failed walked
-- webhook_deliveries_by_endpoint back from the newest and filtered every
-- row, so an endpoint with millions of deliveries kept within the
-- retention, nearly all delivered, took seconds (19 s for 2 million)
-- holding a read connection. PostgreSQL's 0011 is the same.
CREATE INDEX webhook_deliveries_by_endpoint_status ON webhook_deliveries (endpoint_id, status, id);
