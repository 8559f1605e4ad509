-- Prompt-cache tokens (issue 13): of a request's input tokens, those the provider read from
-- its prompt cache and those it wrote to it, as Anthropic and OpenAI report them. Priced
-- separately where the price table says so; kept per record and summed in the daily rollup.
-- Rows from before this migration had no cache counts: 0.
ALTER TABLE usage ADD COLUMN cache_read_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_daily ADD COLUMN cache_read_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_daily ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
