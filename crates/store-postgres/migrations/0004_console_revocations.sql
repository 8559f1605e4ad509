-- Console sessions logged out (issue 14): the cookie is signed, so every relay sharing this
-- database accepts it; a logout is written here so that every relay refuses it too, until it
-- would have expired anyway (`expires_at`, unix seconds; older rows are deleted at the next
-- logout).
CREATE TABLE console_revocations (
    id TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
