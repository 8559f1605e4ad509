-- Conversations kept on the server (issue 14), for sites that turn transcripts on.
-- A site's conversation settings (transcripts, retention, masking, notice, hand-off) as one
-- JSON object; NULL: every setting at its default (transcripts off).
ALTER TABLE sites ADD COLUMN conversations TEXT;

-- One row per conversation. Its id is chosen by the visitor's browser (a random capability),
-- so it is bound to the site that first used it. Sums saturate at the largest integer.
CREATE TABLE conversations (
    id             TEXT PRIMARY KEY,
    site_id        TEXT NOT NULL,
    visitor        TEXT,
    page_url       TEXT,
    model          TEXT,
    started_at_ms  INTEGER NOT NULL,
    updated_at_ms  INTEGER NOT NULL,
    messages       INTEGER NOT NULL DEFAULT 0,
    input_tokens   INTEGER NOT NULL DEFAULT 0,
    output_tokens  INTEGER NOT NULL DEFAULT 0,
    cost_micros    INTEGER NOT NULL DEFAULT 0,
    outcome        TEXT,
    holder         TEXT NOT NULL DEFAULT 'bot',
    handoff_at_ms  INTEGER
) STRICT;
CREATE INDEX conversations_by_update ON conversations (updated_at_ms, id);
CREATE INDEX conversations_by_site ON conversations (site_id, updated_at_ms);
CREATE INDEX conversations_by_visitor ON conversations (visitor);

CREATE TABLE conversation_messages (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    at_ms           INTEGER NOT NULL,
    author          TEXT NOT NULL,
    content         TEXT NOT NULL,
    request_id      TEXT,
    PRIMARY KEY (conversation_id, seq)
) STRICT, WITHOUT ROWID;

-- Feedback may arrive before its answer's turn is written (turns are written in batches), so
-- it is keyed by the answer's request id, not by a message row; and by site, since ids are
-- chosen by browsers: another site naming the conversation cannot touch its feedback.
CREATE TABLE conversation_feedback (
    conversation_id TEXT NOT NULL,
    request_id      TEXT NOT NULL,
    site_id         TEXT NOT NULL,
    rating          TEXT NOT NULL,
    comment         TEXT,
    at_ms           INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, request_id, site_id)
) STRICT, WITHOUT ROWID;
