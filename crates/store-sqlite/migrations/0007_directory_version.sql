-- A counter of changes to what the relay keeps in memory for every request (sites, their
-- origins, secret keys; see `store/directory.rs`). Triggers bump it on every such change, from
-- this process or any other (the CLI), and a running relay polls it to know when to reload.
-- `api_keys.last_used_at` is left out on purpose: it is written in batches all the time and
-- nothing in memory depends on it. A migration that adds a column to `api_keys` which the
-- relay reads must add it to `api_keys_changed` too.
CREATE TABLE directory_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
) STRICT;
INSERT INTO directory_version (id, version) VALUES (1, 1);

CREATE TRIGGER sites_inserted AFTER INSERT ON sites
BEGIN UPDATE directory_version SET version = version + 1; END;
CREATE TRIGGER sites_changed AFTER UPDATE ON sites
BEGIN UPDATE directory_version SET version = version + 1; END;
CREATE TRIGGER sites_deleted AFTER DELETE ON sites
BEGIN UPDATE directory_version SET version = version + 1; END;

CREATE TRIGGER site_origins_inserted AFTER INSERT ON site_origins
BEGIN UPDATE directory_version SET version = version + 1; END;
CREATE TRIGGER site_origins_changed AFTER UPDATE ON site_origins
BEGIN UPDATE directory_version SET version = version + 1; END;
CREATE TRIGGER site_origins_deleted AFTER DELETE ON site_origins
BEGIN UPDATE directory_version SET version = version + 1; END;

CREATE TRIGGER api_keys_inserted AFTER INSERT ON api_keys
BEGIN UPDATE directory_version SET version = version + 1; END;
CREATE TRIGGER api_keys_changed AFTER UPDATE OF
    id, name, key_prefix, key_hash, scopes, models, rpm, rpd, tpm, monthly_budget_micros,
    daily_budget_micros, created_at, revoked_at, previous_key_prefix, previous_key_hash,
    previous_expires_at
ON api_keys
BEGIN UPDATE directory_version SET version = version + 1; END;
CREATE TRIGGER api_keys_deleted AFTER DELETE ON api_keys
BEGIN UPDATE directory_version SET version = version + 1; END;
