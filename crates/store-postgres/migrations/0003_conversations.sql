-- Conversations kept on the server (issue 14), for sites that turn transcripts on; the same
-- tables as SQLite's 0014_conversations.sql in PostgreSQL's types.
ALTER TABLE sites ADD COLUMN conversations TEXT;

CREATE TABLE conversations (
    id             TEXT PRIMARY KEY,
    site_id        TEXT NOT NULL,
    visitor        TEXT,
    page_url       TEXT,
    model          TEXT,
    started_at_ms  BIGINT NOT NULL,
    updated_at_ms  BIGINT NOT NULL,
    messages       BIGINT NOT NULL DEFAULT 0,
    input_tokens   BIGINT NOT NULL DEFAULT 0,
    output_tokens  BIGINT NOT NULL DEFAULT 0,
    cost_micros    BIGINT NOT NULL DEFAULT 0,
    outcome        TEXT,
    holder         TEXT NOT NULL DEFAULT 'bot',
    handoff_at_ms  BIGINT
);
CREATE INDEX conversations_by_update ON conversations (updated_at_ms, id);
CREATE INDEX conversations_by_site ON conversations (site_id, updated_at_ms);
CREATE INDEX conversations_by_visitor ON conversations (visitor);

CREATE TABLE conversation_messages (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             BIGINT NOT NULL,
    at_ms           BIGINT NOT NULL,
    author          TEXT NOT NULL,
    content         TEXT NOT NULL,
    request_id      TEXT,
    PRIMARY KEY (conversation_id, seq)
);

CREATE TABLE conversation_feedback (
    conversation_id TEXT NOT NULL,
    request_id      TEXT NOT NULL,
    site_id         TEXT NOT NULL,
    rating          TEXT NOT NULL,
    comment         TEXT,
    at_ms           BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, request_id, site_id)
);
