-- Usage reports and the budgets' start-up sums read this daily rollup, never a scan of the raw
-- `usage` table (which took 1.4 s at 786,631 records). It is maintained in the same transaction
-- as every batch of usage records, and kept when raw records are pruned after
-- `usage.retention_days`. One row per UTC day, caller and model; '' for no site or no key (a
-- NULL in a primary key would make every such row distinct). Sums saturate at the largest
-- integer rather than overflow.
CREATE TABLE usage_daily (
    day_start     INTEGER NOT NULL,   -- unix seconds at 00:00 UTC
    site_id       TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    model         TEXT NOT NULL,
    requests      INTEGER NOT NULL,
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_micros   INTEGER NOT NULL,
    PRIMARY KEY (day_start, site_id, key_id, model)
) STRICT, WITHOUT ROWID;

INSERT INTO usage_daily
SELECT (at_ms / 86400000) * 86400, COALESCE(site_id, ''), COALESCE(key_id, ''), model, COUNT(*),
       CAST(MIN(TOTAL(input_tokens), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(output_tokens), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(cost_micros), 9223372036854775807) AS INTEGER)
FROM usage GROUP BY 1, 2, 3, 4;

-- A request's worst case is no longer a `pending` row replaced in place by its final record
-- (it is a line in the relay's reservation journal), so request ids need not be unique: a
-- trusted proxy may send the same X-Request-Id twice, and the second request's record must not
-- be lost. Keeping a unique index on random ids also cost every batch a write to pages all over
-- that index. Rows left `pending` by earlier versions are still settled at start-up.
DROP INDEX usage_by_request;
