-- A site re-keyed with a grace period (`confab sites rekey ID --grace SECS`) keeps its previous key
-- working until `previous_expires_at` (unix seconds), so the pages that embed it can be updated
-- first. Like `api_keys`, only the previous key's public lookup id and the SHA-256 of its secret
-- are kept. The `sites_changed` trigger (0007) fires on any update of `sites`, so a re-key from
-- the CLI reaches running relays like every other change.
ALTER TABLE sites ADD COLUMN previous_key_prefix TEXT;
ALTER TABLE sites ADD COLUMN previous_key_hash BLOB;
ALTER TABLE sites ADD COLUMN previous_expires_at INTEGER;
