-- The webhook outbox. An event is recorded once (by the relay, or by `confab keys revoke` with no
-- relay running); the relay's delivery worker then dispatches it: one delivery per configured
-- endpoint that wants it, in the same transaction that marks the event dispatched. Deliveries are
-- retried with backoff until one is accepted (2xx) or the attempts run out; either way the row is
-- kept (as a record, or as a dead letter with its last error) until the retention period ends.
-- Times in unix milliseconds.
CREATE TABLE webhook_events (
    id            TEXT PRIMARY KEY NOT NULL,   -- evt_...; the body's "id"
    type          TEXT NOT NULL,               -- budget.threshold | key.revoked | request.completed
    site_id       TEXT,                        -- the site it concerns (for site-scoped endpoints)
    payload       TEXT NOT NULL,               -- the exact JSON body that is signed and sent
    created_at_ms INTEGER NOT NULL,
    dispatched    INTEGER NOT NULL DEFAULT 0   -- 1 once its deliveries exist
) STRICT;
CREATE INDEX webhook_events_undispatched ON webhook_events(created_at_ms) WHERE dispatched = 0;
CREATE INDEX webhook_events_by_time ON webhook_events(created_at_ms);

CREATE TABLE webhook_deliveries (
    id                 TEXT PRIMARY KEY NOT NULL,   -- whd_...; the Confab-Delivery header
    event_id           TEXT NOT NULL REFERENCES webhook_events(id) ON DELETE CASCADE,
    endpoint           TEXT NOT NULL,               -- the endpoint's URL, as configured
    attempts           INTEGER NOT NULL DEFAULT 0,  -- attempts that got an answer or an error
    next_attempt_at_ms INTEGER NOT NULL,            -- due time, or the lease of an attempt under way
    delivered_at_ms    INTEGER,                     -- accepted with a 2xx
    failed_at_ms       INTEGER,                     -- given up: attempts ran out (dead letter)
    last_error         TEXT                         -- never the URL nor the response body
) STRICT;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at_ms)
    WHERE delivered_at_ms IS NULL AND failed_at_ms IS NULL;
CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries(event_id);
