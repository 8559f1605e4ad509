//! `usage`: one row per chat request (see `migrations/sqlite/0004_usage_and_limits.sql`).

use sqlx::Row;
use sqlx::sqlite::{SqlitePool, SqliteRow};

use crate::store::{Outcome, StoreError, UsageGroup, UsageRecord};

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn count(row: &SqliteRow, column: &str) -> Result<u64, StoreError> {
    let value: i64 = row.try_get(column)?;
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("usage.{column} < 0")))
}

pub async fn record(pool: &SqlitePool, records: &[UsageRecord]) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    for r in records {
        sqlx::query(
            "INSERT INTO usage (at_ms, site_id, key_id, visitor, model, upstream, input_tokens, \
             output_tokens, estimated, cost_micros, first_token_ms, total_ms, outcome) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(r.at_ms)
        .bind(&r.site_id)
        .bind(&r.key_id)
        .bind(&r.visitor)
        .bind(&r.model)
        .bind(&r.upstream)
        .bind(int(r.input_tokens))
        .bind(int(r.output_tokens))
        .bind(r.estimated)
        .bind(int(r.cost_micros))
        .bind(r.first_token_ms.map(int))
        .bind(int(r.total_ms))
        .bind(r.outcome.as_str())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub async fn since(
    pool: &SqlitePool,
    since_ms: i64,
    site_id: Option<&str>,
    key_id: Option<&str>,
) -> Result<Vec<UsageRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT at_ms, site_id, key_id, visitor, model, upstream, input_tokens, output_tokens, \
         estimated, cost_micros, first_token_ms, total_ms, outcome FROM usage \
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
            Ok(UsageRecord {
                at_ms: row.try_get("at_ms")?,
                site_id: row.try_get("site_id")?,
                key_id: row.try_get("key_id")?,
                visitor: row.try_get("visitor")?,
                model: row.try_get("model")?,
                upstream: row.try_get("upstream")?,
                input_tokens: count(row, "input_tokens")?,
                output_tokens: count(row, "output_tokens")?,
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
    let rows = sqlx::query(
        "SELECT at_ms / 86400000 AS day, site_id, key_id, model, COUNT(*) AS requests, \
         SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens, \
         SUM(cost_micros) AS cost_micros FROM usage \
         WHERE at_ms >= ?1 AND (?2 IS NULL OR site_id = ?2) AND (?3 IS NULL OR key_id = ?3) \
         GROUP BY day, site_id, key_id, model ORDER BY day",
    )
    .bind(since_ms)
    .bind(site_id)
    .bind(key_id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(UsageGroup {
                day_start: count(row, "day")?.saturating_mul(86_400),
                site_id: row.try_get("site_id")?,
                key_id: row.try_get("key_id")?,
                model: row.try_get("model")?,
                requests: count(row, "requests")?,
                input_tokens: count(row, "input_tokens")?,
                output_tokens: count(row, "output_tokens")?,
                cost_micros: count(row, "cost_micros")?,
            })
        })
        .collect()
}
