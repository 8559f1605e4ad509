-- One row per chat request that reached an upstream (or was refused by it), written in batches
-- off the request path. Money in micro-dollars, times in unix milliseconds.
CREATE TABLE usage (
    id             INTEGER PRIMARY KEY,
    at_ms          INTEGER NOT NULL,          -- when the request arrived
    site_id        TEXT,                      -- the caller: a site ...
    key_id         TEXT,                      -- ... or a secret key
    visitor        TEXT,                      -- HMAC of the visitor's id or IP (never in clear)
    model          TEXT NOT NULL,
    upstream       TEXT NOT NULL,
    input_tokens   INTEGER NOT NULL,
    output_tokens  INTEGER NOT NULL,
    estimated      INTEGER NOT NULL,          -- 1: the upstream reported no usage
    cost_micros    INTEGER NOT NULL,
    first_token_ms INTEGER,                   -- latency to the first streamed text
    total_ms       INTEGER NOT NULL,
    outcome        TEXT NOT NULL              -- completed | interrupted | upstream_error
) STRICT;
CREATE INDEX usage_by_time ON usage(at_ms);
CREATE INDEX usage_by_site ON usage(site_id, at_ms);
CREATE INDEX usage_by_key ON usage(key_id, at_ms);

-- Per-site limits and budgets (NULL: unlimited, or the [visitors] default for visitor limits),
-- and visitor verification.
ALTER TABLE sites ADD COLUMN rpm INTEGER;
ALTER TABLE sites ADD COLUMN rpd INTEGER;
ALTER TABLE sites ADD COLUMN tpm INTEGER;
ALTER TABLE sites ADD COLUMN monthly_budget_micros INTEGER;
ALTER TABLE sites ADD COLUMN daily_budget_micros INTEGER;
ALTER TABLE sites ADD COLUMN visitor_rpm INTEGER;
ALTER TABLE sites ADD COLUMN visitor_rpd INTEGER;

-- Secrets the relay makes for itself on first start (the salt of visitor hashes).
CREATE TABLE relay_secrets (
    name  TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
) STRICT;
