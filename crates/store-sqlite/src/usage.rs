//! `usage`: one row per chat request (see `migrations/sqlite/0004_usage_and_limits.sql`).

use std::collections::HashSet;

use sqlx::sqlite::{Sqlite, SqlitePool, SqliteRow};
use sqlx::{Row, Transaction};

use confab_store::{Outcome, StoreError, UsageGroup, UsageRecord, daily_rollup};

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn count(row: &SqliteRow, column: &str) -> Result<u64, StoreError> {
    let value: i64 = row.try_get(column)?;
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("usage.{column} < 0")))
}

/// Records per `INSERT`: large enough that the per-statement cost vanishes, small enough that a
/// second's worth of records under load (thousands) never becomes one multi-megabyte string.
const RECORDS_PER_STATEMENT: usize = 256;

/// Appends the records and adds them to the daily rollup, all or none (one transaction). They
/// travel to SQLite as JSON arrays, one bound value per 256 records, which `json_each` turns back
/// into rows: a statement per record cost a round trip to sqlx's connection thread each, for
/// every request the relay serves.
pub async fn record(pool: &SqlitePool, records: &[UsageRecord]) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    insert(&mut tx, records).await?;
    tx.commit().await?;
    Ok(())
}

/// Records what a crashed run left unsettled, but for the requests whose record it did write.
pub async fn recover(pool: &SqlitePool, records: &[UsageRecord]) -> Result<u64, StoreError> {
    let Some(oldest) = records.iter().map(|r| r.at_ms).min() else { return Ok(0) };
    // Reads, then writes: a writer from the start (see `set_site_origins`).
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let written: HashSet<String> = sqlx::query_scalar(
        "SELECT request_id FROM usage WHERE at_ms >= ? AND request_id IS NOT NULL",
    )
    .bind(oldest)
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

/// `column = column + excluded.column`, saturating at the largest integer.
macro_rules! saturating_add {
    ($column:ident) => {
        concat!(
            stringify!($column),
            " = CASE WHEN ",
            stringify!($column),
            " > 9223372036854775807 - excluded.",
            stringify!($column),
            " THEN 9223372036854775807 ELSE ",
            stringify!($column),
            " + excluded.",
            stringify!($column),
            " END"
        )
    };
}

async fn insert(
    tx: &mut Transaction<'_, Sqlite>,
    records: &[UsageRecord],
) -> Result<(), StoreError> {
    for chunk in records.chunks(RECORDS_PER_STATEMENT) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|r| {
                (
                    &r.request_id,
                    r.at_ms,
                    &r.site_id,
                    &r.key_id,
                    &r.visitor,
                    &r.model,
                    &r.upstream,
                    int(r.input_tokens),
                    int(r.output_tokens),
                    int(r.cache_read_tokens),
                    int(r.cache_write_tokens),
                    i64::from(r.estimated),
                    int(r.cost_micros),
                    r.first_token_ms.map(int),
                    int(r.total_ms),
                    r.outcome.as_str(),
                )
            })
            .collect();
        sqlx::query(
            "INSERT INTO usage (request_id, at_ms, site_id, key_id, visitor, model, upstream, \
             input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, estimated, \
             cost_micros, first_token_ms, total_ms, outcome) \
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, \
             value ->> 5, value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10, \
             value ->> 11, value ->> 12, value ->> 13, value ->> 14, value ->> 15 \
             FROM json_each(?) ORDER BY key",
        )
        .bind(json(&rows)?)
        .execute(&mut **tx)
        .await?;
    }
    let groups: Vec<_> = daily_rollup(records)
        .into_iter()
        .map(|g| {
            (
                int(g.day_start),
                g.site_id.unwrap_or_default(),
                g.key_id.unwrap_or_default(),
                g.model,
                int(g.requests),
                int(g.input_tokens),
                int(g.output_tokens),
                int(g.cache_read_tokens),
                int(g.cache_write_tokens),
                int(g.cost_micros),
            )
        })
        .collect();
    for chunk in groups.chunks(RECORDS_PER_STATEMENT) {
        // `WHERE true` is SQLite's rule for an upsert after a SELECT (it tells the parser the
        // ON CONFLICT belongs to the INSERT). Sums saturate at the largest integer.
        sqlx::query(concat!(
            "INSERT INTO usage_daily (day_start, site_id, key_id, model, requests, input_tokens, ",
            "output_tokens, cache_read_tokens, cache_write_tokens, cost_micros) ",
            "SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, ",
            "value ->> 5, value ->> 6, value ->> 7, value ->> 8, value ->> 9 ",
            "FROM json_each(?) WHERE true ",
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
        .bind(json(&chunk)?)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

fn json(rows: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(rows)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode usage records: {e}")))
}

/// Deletes the records that arrived before `before_ms`, a batch at a time (so no transaction
/// holds the writer for long); the daily rollup keeps their sums.
pub async fn prune(pool: &SqlitePool, before_ms: i64) -> Result<u64, StoreError> {
    const BATCH: i64 = 10_000;
    let mut deleted = 0;
    loop {
        let done = sqlx::query(
            "DELETE FROM usage WHERE id IN \
             (SELECT id FROM usage WHERE at_ms < ? ORDER BY at_ms LIMIT ?)",
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

/// Settles what a previous run left pending as interrupted, at the worst case the rows hold.
pub async fn settle_pending(pool: &SqlitePool) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE usage SET outcome = 'interrupted', estimated = 1 WHERE outcome = 'pending'",
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

pub async fn since(
    pool: &SqlitePool,
    since_ms: i64,
    site_id: Option<&str>,
    key_id: Option<&str>,
) -> Result<Vec<UsageRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT request_id, at_ms, site_id, key_id, visitor, model, upstream, input_tokens, \
         output_tokens, cache_read_tokens, cache_write_tokens, estimated, cost_micros, \
         first_token_ms, total_ms, outcome FROM usage \
         WHERE at_ms >= ?1 AND (?2 IS NULL OR site_id = ?2) AND (?3 IS NULL OR key_id = ?3) \
         ORDER BY at_ms, id",
    )
    .bind(since_ms)
    .bind(site_id)
    .bind(key_id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let outcome: String = row.try_get("outcome")?;
            let first_token_ms: Option<i64> = row.try_get("first_token_ms")?;
            let request_id: Option<String> = row.try_get("request_id")?;
            Ok(UsageRecord {
                request_id: request_id.unwrap_or_default(),
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

pub async fn totals(
    pool: &SqlitePool,
    since_ms: i64,
    site_id: Option<&str>,
    key_id: Option<&str>,
) -> Result<Vec<UsageGroup>, StoreError> {
    let since_day = since_ms.div_euclid(86_400_000) * 86_400;
    let rows = sqlx::query(
        "SELECT day_start, site_id, key_id, model, requests, input_tokens, output_tokens, \
         cache_read_tokens, cache_write_tokens, cost_micros FROM usage_daily \
         WHERE day_start >= ?1 AND (?2 IS NULL OR site_id = ?2) AND (?3 IS NULL OR key_id = ?3) \
         ORDER BY day_start",
    )
    .bind(since_day)
    .bind(site_id)
    .bind(key_id)
    .fetch_all(pool)
    .await?;
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
