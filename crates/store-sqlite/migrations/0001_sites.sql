-- Sites: one per website that embeds the widget. The site key itself is never stored: only its
-- public lookup id (`key_prefix`) and the SHA-256 of its secret part.
CREATE TABLE sites (
    id               TEXT PRIMARY KEY NOT NULL,
    name             TEXT NOT NULL,
    key_prefix       TEXT NOT NULL UNIQUE,
    key_hash         BLOB NOT NULL,
    allow_no_origin  INTEGER NOT NULL DEFAULT 0,
    models           TEXT NOT NULL,          -- JSON array; the first is the site's default model
    system_prompt    TEXT,
    max_tokens       INTEGER,                -- NULL: the [policy] default from the config
    temperature_max  REAL,
    context_messages INTEGER,
    is_demo          INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL        -- unix seconds
) STRICT;

CREATE TABLE site_origins (
    site_id TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    origin  TEXT NOT NULL,
    PRIMARY KEY (site_id, origin)
) STRICT;

CREATE INDEX site_origins_by_origin ON site_origins(origin);
