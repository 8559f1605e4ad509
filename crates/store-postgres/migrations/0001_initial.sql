-- The schema SQLite reached in its migrations 0001 to 0012 (crates/store-sqlite/migrations), in
-- one step and in PostgreSQL's types. The column names are SQLite's, so that the two engines
-- read alike; the comments there say what each column means. What differs:
--
-- - Integers are BIGINT (u32 limits and micro-dollar amounts do not fit in INTEGER), flags are
--   BOOLEAN, hashes and secrets BYTEA.
-- - Lists of names (models, scopes, widget suggestions) are TEXT[] instead of JSON text: the
--   database keeps them as lists and sqlx reads them as `Vec<String>`, with nothing to parse.
-- - A webhook payload stays TEXT, never JSONB: it is signed and sent byte for byte as stored.
-- - `usage.request_id` is NOT NULL (there are no rows from before request ids here), and not
--   unique, as in SQLite since 0012: two requests may carry one X-Request-Id.
-- - The triggers that move `directory_version` also NOTIFY `confab_directory`, so that other
--   relays reload at once instead of at their next poll.

CREATE TABLE sites (
    id                       TEXT PRIMARY KEY,
    name                     TEXT NOT NULL,
    key_prefix               TEXT NOT NULL UNIQUE,
    key_hash                 BYTEA NOT NULL,
    allow_no_origin          BOOLEAN NOT NULL DEFAULT FALSE,
    models                   TEXT[] NOT NULL,   -- the first is the site's default model
    system_prompt            TEXT,
    max_tokens               BIGINT,            -- NULL: the [policy] default from the config
    temperature_max          REAL,
    context_messages         BIGINT,
    is_demo                  BOOLEAN NOT NULL DEFAULT FALSE,
    created_at               BIGINT NOT NULL,   -- unix seconds
    widget_title             TEXT,
    widget_greeting          TEXT,
    widget_suggestions       TEXT[],
    widget_primary_color     TEXT,
    rpm                      BIGINT,
    rpd                      BIGINT,
    tpm                      BIGINT,
    monthly_budget_micros    BIGINT,
    daily_budget_micros      BIGINT,
    visitor_rpm              BIGINT,
    visitor_rpd              BIGINT,
    visitor_secret           TEXT,
    require_verified_visitor BOOLEAN NOT NULL DEFAULT FALSE,
    verified_rpm             BIGINT,
    verified_rpd             BIGINT,
    client_instructions      TEXT,
    visitor_token_mode       TEXT NOT NULL DEFAULT 'hmac'
        CHECK (visitor_token_mode IN ('hmac', 'jwt')),
    previous_key_prefix      TEXT,
    previous_key_hash        BYTEA,
    previous_expires_at      BIGINT
);

-- `seq` keeps a site's origins in the order they were given (SQLite's rowid does that).
CREATE TABLE site_origins (
    site_id  TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    origin   TEXT NOT NULL,
    seq      BIGINT GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (site_id, origin)
);
CREATE INDEX site_origins_by_origin ON site_origins(origin);

CREATE TABLE api_keys (
    id                    TEXT PRIMARY KEY,
    name                  TEXT NOT NULL,
    key_prefix            TEXT NOT NULL UNIQUE,
    key_hash              BYTEA NOT NULL,
    scopes                TEXT[] NOT NULL,   -- "chat", "models", "usage"
    models                TEXT[] NOT NULL,   -- empty: every model the relay serves
    rpm                   BIGINT,
    rpd                   BIGINT,
    tpm                   BIGINT,
    monthly_budget_micros BIGINT,
    daily_budget_micros   BIGINT,
    created_at            BIGINT NOT NULL,
    last_used_at          BIGINT,
    revoked_at            BIGINT,
    previous_key_prefix   TEXT UNIQUE,
    previous_key_hash     BYTEA,
    previous_expires_at   BIGINT
);

CREATE TABLE usage (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id     TEXT NOT NULL,
    at_ms          BIGINT NOT NULL,
    site_id        TEXT,
    key_id         TEXT,
    visitor        TEXT,
    model          TEXT NOT NULL,
    upstream       TEXT NOT NULL,
    input_tokens   BIGINT NOT NULL,
    output_tokens  BIGINT NOT NULL,
    estimated      BOOLEAN NOT NULL,
    cost_micros    BIGINT NOT NULL,
    first_token_ms BIGINT,
    total_ms       BIGINT NOT NULL,
    outcome        TEXT NOT NULL   -- completed | interrupted | upstream_error | pending
);
CREATE INDEX usage_by_time ON usage(at_ms);
CREATE INDEX usage_by_site ON usage(site_id, at_ms);
CREATE INDEX usage_by_key ON usage(key_id, at_ms);
CREATE INDEX usage_pending ON usage(outcome) WHERE outcome = 'pending';

-- The daily rollup that reports and budgets read, added to in the same transaction as every
-- batch of records and kept when they are pruned. '' for no site or no key, as in SQLite (a
-- primary key cannot hold a NULL). Sums saturate at the largest BIGINT.
CREATE TABLE usage_daily (
    day_start     BIGINT NOT NULL,   -- unix seconds at 00:00 UTC
    site_id       TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    model         TEXT NOT NULL,
    requests      BIGINT NOT NULL,
    input_tokens  BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost_micros   BIGINT NOT NULL,
    PRIMARY KEY (day_start, site_id, key_id, model)
);

CREATE TABLE relay_secrets (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE webhook_events (
    id            TEXT PRIMARY KEY,
    type          TEXT NOT NULL,
    site_id       TEXT,
    payload       TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    dispatched    BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX webhook_events_undispatched ON webhook_events(created_at_ms) WHERE NOT dispatched;
CREATE INDEX webhook_events_by_time ON webhook_events(created_at_ms);

CREATE TABLE webhook_deliveries (
    id                 TEXT PRIMARY KEY,
    event_id           TEXT NOT NULL REFERENCES webhook_events(id) ON DELETE CASCADE,
    endpoint           TEXT NOT NULL,
    attempts           BIGINT NOT NULL DEFAULT 0,
    next_attempt_at_ms BIGINT NOT NULL,
    delivered_at_ms    BIGINT,
    failed_at_ms       BIGINT,
    last_error         TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at_ms)
    WHERE delivered_at_ms IS NULL AND failed_at_ms IS NULL;
CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries(event_id);
CREATE INDEX webhook_deliveries_due_by_endpoint ON webhook_deliveries(endpoint, next_attempt_at_ms)
    WHERE delivered_at_ms IS NULL AND failed_at_ms IS NULL;
CREATE INDEX webhook_deliveries_pending_by_event ON webhook_deliveries(event_id)
    WHERE delivered_at_ms IS NULL AND failed_at_ms IS NULL;

-- The counter of changes to what relays keep in memory (sites, their origins, secret keys), as
-- in SQLite's 0007: every insert, update and delete of those rows moves it, except an update of
-- `api_keys` that touches only `last_used_at` (written in batches all the time; nothing in memory
-- depends on it). A migration that adds a column to `api_keys` which the relay reads must add it
-- to `api_keys_changed` too.
--
-- The same triggers NOTIFY `confab_directory`. PostgreSQL delivers a notification when the
-- transaction commits (none if it rolls back) and sends one per transaction however many rows
-- changed, so a listening relay reloads once per committed change; the poll of the counter stays
-- as the backstop for a listener that is reconnecting.
CREATE TABLE directory_version (
    id      SMALLINT PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO directory_version (id, version) VALUES (1, 1);

CREATE FUNCTION directory_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE directory_version SET version = version + 1 WHERE id = 1;
    PERFORM pg_notify('confab_directory', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER sites_changed AFTER INSERT OR UPDATE OR DELETE ON sites
    FOR EACH ROW EXECUTE FUNCTION directory_changed();
CREATE TRIGGER site_origins_changed AFTER INSERT OR UPDATE OR DELETE ON site_origins
    FOR EACH ROW EXECUTE FUNCTION directory_changed();
CREATE TRIGGER api_keys_inserted_or_deleted AFTER INSERT OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION directory_changed();
CREATE TRIGGER api_keys_changed AFTER UPDATE OF
    id, name, key_prefix, key_hash, scopes, models, rpm, rpd, tpm, monthly_budget_micros,
    daily_budget_micros, created_at, revoked_at, previous_key_prefix, previous_key_hash,
    previous_expires_at
ON api_keys
    FOR EACH ROW EXECUTE FUNCTION directory_changed();
