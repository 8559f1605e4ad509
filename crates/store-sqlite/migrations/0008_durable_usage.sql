-- Crash accounting: a request's worst case is written as a `pending` usage row before its
-- upstream call, and settled in place (same `request_id`) when it ends. After a crash, the rows
-- still pending are settled at start-up as `interrupted` at that worst case, so the budgets
-- reloaded from this table keep counting what the crashed relay had let run.
-- Rows written before this migration have no request id (NULLs are distinct in a UNIQUE index).
ALTER TABLE usage ADD COLUMN request_id TEXT;
CREATE UNIQUE INDEX usage_by_request ON usage(request_id);
CREATE INDEX usage_pending ON usage(outcome) WHERE outcome = 'pending';

-- What happens to a visitor's own system/developer messages: layer (under the site's prompt,
-- within the context limits), drop, or reject. NULL: the [policy] default.
ALTER TABLE sites ADD COLUMN client_instructions TEXT;
