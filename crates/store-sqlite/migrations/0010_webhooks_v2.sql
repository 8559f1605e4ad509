-- Webhook deliveries are attempted per endpoint (so that one slow or dead endpoint holds up
-- only its own): each endpoint's delivery loop looks for its due deliveries with this index.
CREATE INDEX webhook_deliveries_due_by_endpoint ON webhook_deliveries(endpoint, next_attempt_at_ms)
    WHERE delivered_at_ms IS NULL AND failed_at_ms IS NULL;

-- The backlog (`webhooks.max_backlog`) counts the events with a delivery still to make.
CREATE INDEX webhook_deliveries_pending_by_event ON webhook_deliveries(event_id)
    WHERE delivered_at_ms IS NULL AND failed_at_ms IS NULL;
