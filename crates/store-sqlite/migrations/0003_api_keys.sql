-- Secret API keys for server-side callers. As for sites, only the public lookup id and the
-- SHA-256 of the secret part are stored. Rotation keeps the previous secret valid until
-- `previous_expires_at`.
CREATE TABLE api_keys (
    id                    TEXT PRIMARY KEY NOT NULL,
    name                  TEXT NOT NULL,
    key_prefix            TEXT NOT NULL UNIQUE,
    key_hash              BLOB NOT NULL,
    scopes                TEXT NOT NULL,          -- JSON array: "chat", "models", "usage"
    models                TEXT NOT NULL,          -- JSON array; empty: every model the relay serves
    rpm                   INTEGER,                -- NULL: unlimited
    rpd                   INTEGER,
    tpm                   INTEGER,
    monthly_budget_micros INTEGER,                -- micro-dollars; NULL: no budget
    daily_budget_micros   INTEGER,
    created_at            INTEGER NOT NULL,       -- unix seconds
    last_used_at          INTEGER,
    revoked_at            INTEGER,
    previous_key_prefix   TEXT UNIQUE,
    previous_key_hash     BLOB,
    previous_expires_at   INTEGER
) STRICT;
