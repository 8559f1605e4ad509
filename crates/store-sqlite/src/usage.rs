//! `usage`: one row per chat request (see `migrations/sqlite/0004_usage_and_limits.sql`).

use sqlx::Row;
use sqlx::sqlite::{SqlitePool, SqliteRow};

use confab_store::{Outcome, StoreError, UsageGroup, UsageRecord};

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

/// Appends the records, all or none (one transaction). They travel to SQLite as JSON arrays, one
/// bound value per 256 records, which `json_each` turns back into rows: a statement per record
/// cost a round trip to sqlx's connection thread each, for every request the relay serves.
pub async fn record(pool: &SqlitePool, records: &[UsageRecord]) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
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
                    i64::from(r.estimated),
                    int(r.cost_micros),
                    r.first_token_ms.map(int),
                    int(r.total_ms),
                    r.outcome.as_str(),
                )
            })
            .collect();
        let rows = serde_json::to_string(&rows)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode usage records: {e}")))?;
        sqlx::query(
            // `WHERE true` is SQLite's rule for an upsert after a SELECT (it tells the parser the
            // ON CONFLICT belongs to the INSERT). A final record replaces its pending row; a
            // pending record never replaces anything.
            "INSERT INTO usage (request_id, at_ms, site_id, key_id, visitor, model, upstream, \
             input_tokens, output_tokens, estimated, cost_micros, first_token_ms, total_ms, \
             outcome) \
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, \
             value ->> 5, value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10, \
             value ->> 11, value ->> 12, value ->> 13 FROM json_each(?) WHERE true ORDER BY key \
             ON CONFLICT(request_id) DO UPDATE SET input_tokens = excluded.input_tokens, \
             output_tokens = excluded.output_tokens, estimated = excluded.estimated, \
             cost_micros = excluded.cost_micros, first_token_ms = excluded.first_token_ms, \
             total_ms = excluded.total_ms, outcome = excluded.outcome \
             WHERE usage.outcome = 'pending' AND excluded.outcome <> 'pending'",
        )
        .bind(rows)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
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
         output_tokens, estimated, cost_micros, first_token_ms, total_ms, outcome FROM usage \
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
         TOTAL(input_tokens) AS input_tokens, TOTAL(output_tokens) AS output_tokens, \
         TOTAL(cost_micros) AS cost_micros FROM usage \
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
                input_tokens: total(row, "input_tokens")?,
                output_tokens: total(row, "output_tokens")?,
                cost_micros: total(row, "cost_micros")?,
            })
        })
        .collect()
}

/// A sum read from `TOTAL()`, which never fails the way `SUM()` does when integers overflow
/// (two absurd rows once kept the relay from starting): past `u64::MAX` it saturates. It is a
/// float, exact up to 2^53 (9 billion dollars in micro-dollars), which is far beyond any real
/// group; the float-to-integer conversion saturates and maps NaN to 0.
fn total(row: &SqliteRow, column: &str) -> Result<u64, StoreError> {
    let value: f64 = row.try_get(column)?;
    if value < 0.0 {
        return Err(StoreError::Corrupt(format!("usage.{column} sums below 0")));
    }
    Ok(value as u64)
}

#[cfg(test)]
mod tests {
    use crate::SqliteStore;
    use confab_store::{Outcome, Store, UsageRecord};

    fn record(at_ms: i64, visitor: Option<&str>, outcome: Outcome) -> UsageRecord {
        UsageRecord {
            request_id: format!("req_{at_ms}_{}", visitor.unwrap_or("none")),
            at_ms,
            site_id: Some("site_a".into()),
            key_id: None,
            visitor: visitor.map(str::to_owned),
            model: "m \"quoted\" ü".into(),
            upstream: "up".into(),
            input_tokens: 12,
            output_tokens: u64::MAX,
            estimated: true,
            cost_micros: 0,
            first_token_ms: None,
            total_ms: 7,
            outcome,
        }
    }

    #[tokio::test]
    async fn records_written_together_read_back_identically_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = SqliteStore::open(&url, 1).await.unwrap();
        let mut records = vec![
            record(3, Some("v1"), Outcome::Completed),
            record(3, None, Outcome::Interrupted),
            record(1, Some("v\u{0}2"), Outcome::UpstreamError),
        ];
        records[1].key_id = Some("key_b".into());
        records[1].site_id = None;
        records[1].estimated = false;
        records[1].first_token_ms = Some(4);
        // More than one statement's worth, written in order after the three above.
        let many: Vec<_> =
            (0..600).map(|i| record(10 + i, Some("many"), Outcome::Completed)).collect();
        records.extend(many);
        store.record_usage(&records).await.unwrap();
        store.record_usage(&[]).await.unwrap();
        let mut expected = records.clone();
        // Stored counts are SQLite integers: a count past i64::MAX is kept as i64::MAX.
        for r in &mut expected {
            r.output_tokens = i64::MAX as u64;
        }
        let read = store.usage_since(0, None, None).await.unwrap();
        assert_eq!(read[..3], [expected[2].clone(), expected[0].clone(), expected[1].clone()]);
        assert_eq!(read[3..], expected[3..]);
    }
}
