//! `usage`: one row per chat request, and `usage_daily`, their sums per UTC day, caller and model,
//! which reports and budgets read.

use std::collections::HashSet;

use sqlx::postgres::{PgPool, PgRow};
use sqlx::{PgTransaction, Row};

use confab_store::{Outcome, StoreError, UsageGroup, UsageRecord, daily_rollup};

/// Counts are stored as BIGINT: one past `i64::MAX` is kept as `i64::MAX` (as in SQLite).
fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn count(row: &PgRow, column: &str) -> Result<u64, StoreError> {
    let value: i64 = row.try_get(column)?;
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("usage.{column} < 0")))
}

/// Appends the records and adds them to the daily rollup, all or none (one transaction).
pub async fn record(pool: &PgPool, records: &[UsageRecord]) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    insert(&mut tx, records).await?;
    tx.commit().await?;
    Ok(())
}

/// Records what a crashed run left unsettled, but for the requests whose record it did write
/// (looked for among the records since the oldest of them).
pub async fn recover(pool: &PgPool, records: &[UsageRecord]) -> Result<u64, StoreError> {
    let Some(oldest) = records.iter().map(|r| r.at_ms).min() else { return Ok(0) };
    let ids: Vec<&str> = records.iter().map(|r| r.request_id.as_str()).collect();
    let mut tx = pool.begin().await?;
    let written: HashSet<String> = sqlx::query_scalar(
        "SELECT request_id FROM usage WHERE at_ms >= $1 AND request_id = ANY($2)",
    )
    .bind(oldest)
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let missing: Vec<UsageRecord> =
        records.iter().filter(|r| !written.contains(&r.request_id)).cloned().collect();
    insert(&mut tx, &missing).await?;
    tx.commit().await?;
    Ok(u64::try_from(missing.len()).unwrap_or(u64::MAX))
}

/// `column = column + excluded.column` for `usage_daily`, saturating at the largest BIGINT.
macro_rules! saturating_add {
    ($column:ident) => {
        concat!(
            stringify!($column),
            " = LEAST(usage_daily.",
            stringify!($column),
            "::numeric + excluded.",
            stringify!($column),
            ", 9223372036854775807)::bigint"
        )
    };
}

/// Appends the records (the batch travels as one array per column, which `UNNEST` turns back
/// into rows in their order) and adds their sums to the daily rollup.
async fn insert(tx: &mut PgTransaction<'_>, records: &[UsageRecord]) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let column = |value: fn(&UsageRecord) -> i64| records.iter().map(value).collect::<Vec<_>>();
    let text = |value: fn(&UsageRecord) -> &str| records.iter().map(value).collect::<Vec<_>>();
    let optional =
        |value: fn(&UsageRecord) -> Option<&str>| records.iter().map(value).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO usage (request_id, at_ms, site_id, key_id, visitor, model, upstream, \
         input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, estimated, \
         cost_micros, first_token_ms, total_ms, outcome) \
         SELECT request_id, at_ms, site_id, key_id, visitor, model, upstream, input_tokens, \
         output_tokens, cache_read_tokens, cache_write_tokens, estimated, cost_micros, \
         first_token_ms, total_ms, outcome \
         FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], \
         $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::boolean[], \
         $13::bigint[], $14::bigint[], $15::bigint[], $16::text[]) WITH ORDINALITY AS \
         r(request_id, at_ms, site_id, key_id, visitor, model, upstream, input_tokens, \
         output_tokens, cache_read_tokens, cache_write_tokens, estimated, cost_micros, \
         first_token_ms, total_ms, outcome, n) ORDER BY n",
    )
    .bind(text(|r| &r.request_id))
    .bind(column(|r| r.at_ms))
    .bind(optional(|r| r.site_id.as_deref()))
    .bind(optional(|r| r.key_id.as_deref()))
    .bind(optional(|r| r.visitor.as_deref()))
    .bind(text(|r| &r.model))
    .bind(text(|r| &r.upstream))
    .bind(column(|r| int(r.input_tokens)))
    .bind(column(|r| int(r.output_tokens)))
    .bind(column(|r| int(r.cache_read_tokens)))
    .bind(column(|r| int(r.cache_write_tokens)))
    .bind(records.iter().map(|r| r.estimated).collect::<Vec<_>>())
    .bind(column(|r| int(r.cost_micros)))
    .bind(records.iter().map(|r| r.first_token_ms.map(int)).collect::<Vec<_>>())
    .bind(column(|r| int(r.total_ms)))
    .bind(text(|r| r.outcome.as_str()))
    .execute(&mut **tx)
    .await?;

    let groups = daily_rollup(records);
    let sums =
        |value: fn(&UsageGroup) -> u64| groups.iter().map(|g| int(value(g))).collect::<Vec<_>>();
    let callers = |value: fn(&UsageGroup) -> &Option<String>| {
        groups.iter().map(|g| value(g).as_deref().unwrap_or_default()).collect::<Vec<_>>()
    };
    sqlx::query(concat!(
        // '' for no site or no key, as in SQLite: a primary key cannot hold a NULL. Every relay
        // adds to the same rows (today's, per site and model): sorted, each batch takes their
        // locks in one order, so that two batches wait for each other instead of deadlocking.
        "INSERT INTO usage_daily (day_start, site_id, key_id, model, requests, input_tokens, ",
        "output_tokens, cache_read_tokens, cache_write_tokens, cost_micros) ",
        "SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], ",
        "$5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[]) ",
        "AS g(day_start, site_id, key_id, model, requests, input_tokens, output_tokens, ",
        "cache_read_tokens, cache_write_tokens, cost_micros) ",
        "ORDER BY day_start, site_id, key_id, model ",
        "ON CONFLICT (day_start, site_id, key_id, model) DO UPDATE SET ",
        saturating_add!(requests),
        ", ",
        saturating_add!(input_tokens),
        ", ",
        saturating_add!(output_tokens),
        ", ",
        saturating_add!(cache_read_tokens),
        ", ",
        saturating_add!(cache_write_tokens),
        ", ",
        saturating_add!(cost_micros),
    ))
    .bind(sums(|g| g.day_start))
    .bind(callers(|g| &g.site_id))
    .bind(callers(|g| &g.key_id))
    .bind(groups.iter().map(|g| g.model.as_str()).collect::<Vec<_>>())
    .bind(sums(|g| g.requests))
    .bind(sums(|g| g.input_tokens))
    .bind(sums(|g| g.output_tokens))
    .bind(sums(|g| g.cache_read_tokens))
    .bind(sums(|g| g.cache_write_tokens))
    .bind(sums(|g| g.cost_micros))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Deletes the records that arrived before `before_ms`, a batch at a time (so that no
/// transaction holds many rows for long); the daily rollup keeps their sums.
pub async fn prune(pool: &PgPool, before_ms: i64) -> Result<u64, StoreError> {
    const BATCH: i64 = 10_000;
    let mut deleted = 0;
    loop {
        let done = sqlx::query(
            "DELETE FROM usage WHERE id IN \
             (SELECT id FROM usage WHERE at_ms < $1 ORDER BY at_ms LIMIT $2)",
        )
        .bind(before_ms)
        .bind(BATCH)
        .execute(pool)
        .await?;
        deleted += done.rows_affected();
        if done.rows_affected() < BATCH.unsigned_abs() {
            return Ok(deleted);
        }
    }
}

/// The condition on the caller of a usage query: the site `$2` and the key `$3` if they are
/// given (`$1` is the time it starts from).
macro_rules! caller_filter {
    () => {
        "($2::text IS NULL OR site_id = $2) AND ($3::text IS NULL OR key_id = $3)"
    };
}

/// The rows of `sql`, a query from `$1` on, filtered by `caller_filter!`.
async fn filtered(
    pool: &PgPool,
    sql: &'static str,
    since: i64,
    site_id: Option<&str>,
    key_id: Option<&str>,
) -> Result<Vec<PgRow>, StoreError> {
    let rows = sqlx::query(sql).bind(since).bind(site_id).bind(key_id).fetch_all(pool).await?;
    Ok(rows)
}

/// Settles what versions before the reservation journal left pending as interrupted, at the
/// worst case the rows hold.
pub async fn settle_pending(pool: &PgPool) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE usage SET outcome = 'interrupted', estimated = TRUE WHERE outcome = 'pending'",
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

pub async fn since(
    pool: &PgPool,
    since_ms: i64,
    site_id: Option<&str>,
    key_id: Option<&str>,
) -> Result<Vec<UsageRecord>, StoreError> {
    let sql = concat!(
        "SELECT request_id, at_ms, site_id, key_id, visitor, model, upstream, input_tokens, \
         output_tokens, cache_read_tokens, cache_write_tokens, estimated, cost_micros, \
         first_token_ms, total_ms, outcome FROM usage WHERE at_ms >= $1 AND ",
        caller_filter!(),
        " ORDER BY at_ms, id"
    );
    let rows = filtered(pool, sql, since_ms, site_id, key_id).await?;
    rows.iter()
        .map(|row| {
            let outcome: String = row.try_get("outcome")?;
            let first_token_ms: Option<i64> = row.try_get("first_token_ms")?;
            Ok(UsageRecord {
                request_id: row.try_get("request_id")?,
                at_ms: row.try_get("at_ms")?,
                site_id: row.try_get("site_id")?,
                key_id: row.try_get("key_id")?,
                visitor: row.try_get("visitor")?,
                model: row.try_get("model")?,
                upstream: row.try_get("upstream")?,
                input_tokens: count(row, "input_tokens")?,
                output_tokens: count(row, "output_tokens")?,
                cache_read_tokens: count(row, "cache_read_tokens")?,
                cache_write_tokens: count(row, "cache_write_tokens")?,
                estimated: row.try_get("estimated")?,
                cost_micros: count(row, "cost_micros")?,
                first_token_ms: first_token_ms.and_then(|v| u64::try_from(v).ok()),
                total_ms: count(row, "total_ms")?,
                outcome: Outcome::from_name(&outcome)
                    .ok_or_else(|| StoreError::Corrupt(format!("usage.outcome `{outcome}`")))?,
            })
        })
        .collect()
}

/// The daily rollup from the UTC day of `since_ms` on.
pub async fn totals(
    pool: &PgPool,
    since_ms: i64,
    site_id: Option<&str>,
    key_id: Option<&str>,
) -> Result<Vec<UsageGroup>, StoreError> {
    let since_day = since_ms.div_euclid(86_400_000) * 86_400;
    let sql = concat!(
        "SELECT day_start, site_id, key_id, model, requests, input_tokens, output_tokens, \
         cache_read_tokens, cache_write_tokens, cost_micros FROM usage_daily WHERE day_start >= $1 AND ",
        caller_filter!(),
        " ORDER BY day_start, site_id, key_id, model"
    );
    let rows = filtered(pool, sql, since_day, site_id, key_id).await?;
    let none_if_empty = |value: String| (!value.is_empty()).then_some(value);
    rows.iter()
        .map(|row| {
            Ok(UsageGroup {
                day_start: count(row, "day_start")?,
                site_id: none_if_empty(row.try_get("site_id")?),
                key_id: none_if_empty(row.try_get("key_id")?),
                model: row.try_get("model")?,
                requests: count(row, "requests")?,
                input_tokens: count(row, "input_tokens")?,
                output_tokens: count(row, "output_tokens")?,
                cache_read_tokens: count(row, "cache_read_tokens")?,
                cache_write_tokens: count(row, "cache_write_tokens")?,
                cost_micros: count(row, "cost_micros")?,
            })
        })
        .collect()
}
