//! `usage`: one row per chat request.

use std::collections::HashMap;

use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};

use confab_store::{Outcome, StoreError, UsageGroup, UsageRecord};

/// Counts are stored as BIGINT: one past `i64::MAX` is kept as `i64::MAX` (as in SQLite).
fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn count(row: &PgRow, column: &str) -> Result<u64, StoreError> {
    let value: i64 = row.try_get(column)?;
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("usage.{column} < 0")))
}

/// What writing `records` one after the other does to the rows they name, as one record per
/// request id, in the order each id first appears.
///
/// A single `INSERT … ON CONFLICT DO UPDATE` may not touch one row twice, so records of the same
/// request in one batch are merged first, by the rule the upsert applies to stored rows: a final
/// record settles a pending one (its tokens, cost, timings and outcome replace the pending
/// row's), and nothing else replaces anything. Applying the merged record to the stored row gives
/// what applying each in turn would.
fn merged(records: &[UsageRecord]) -> Vec<UsageRecord> {
    let mut merged: Vec<UsageRecord> = Vec::with_capacity(records.len());
    let mut by_request: HashMap<&str, usize> = HashMap::new();
    for record in records {
        match by_request.get(record.request_id.as_str()) {
            None => {
                by_request.insert(&record.request_id, merged.len());
                merged.push(record.clone());
            }
            Some(&at) => {
                let first = &mut merged[at];
                if first.outcome == Outcome::Pending && record.outcome != Outcome::Pending {
                    first.input_tokens = record.input_tokens;
                    first.output_tokens = record.output_tokens;
                    first.estimated = record.estimated;
                    first.cost_micros = record.cost_micros;
                    first.first_token_ms = record.first_token_ms;
                    first.total_ms = record.total_ms;
                    first.outcome = record.outcome;
                }
            }
        }
    }
    merged
}

/// Appends the records, all or none, in one statement: the batch travels as one array per
/// column, which `UNNEST` turns back into rows in their order.
pub async fn record(pool: &PgPool, records: &[UsageRecord]) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let records = merged(records);
    let column = |value: fn(&UsageRecord) -> i64| records.iter().map(value).collect::<Vec<_>>();
    let text = |value: fn(&UsageRecord) -> &str| records.iter().map(value).collect::<Vec<_>>();
    let optional =
        |value: fn(&UsageRecord) -> Option<&str>| records.iter().map(value).collect::<Vec<_>>();
    sqlx::query(
        // A final record replaces its pending row; a pending record never replaces anything.
        "INSERT INTO usage (request_id, at_ms, site_id, key_id, visitor, model, upstream, \
         input_tokens, output_tokens, estimated, cost_micros, first_token_ms, total_ms, \
         outcome) \
         SELECT request_id, at_ms, site_id, key_id, visitor, model, upstream, input_tokens, \
         output_tokens, estimated, cost_micros, first_token_ms, total_ms, outcome \
         FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], \
         $7::text[], $8::bigint[], $9::bigint[], $10::boolean[], $11::bigint[], $12::bigint[], \
         $13::bigint[], $14::text[]) WITH ORDINALITY AS r(request_id, at_ms, site_id, key_id, \
         visitor, model, upstream, input_tokens, output_tokens, estimated, cost_micros, \
         first_token_ms, total_ms, outcome, n) ORDER BY n \
         ON CONFLICT (request_id) DO UPDATE SET input_tokens = excluded.input_tokens, \
         output_tokens = excluded.output_tokens, estimated = excluded.estimated, \
         cost_micros = excluded.cost_micros, first_token_ms = excluded.first_token_ms, \
         total_ms = excluded.total_ms, outcome = excluded.outcome \
         WHERE usage.outcome = 'pending' AND excluded.outcome <> 'pending'",
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
    .bind(records.iter().map(|r| r.estimated).collect::<Vec<_>>())
    .bind(column(|r| int(r.cost_micros)))
    .bind(records.iter().map(|r| r.first_token_ms.map(int)).collect::<Vec<_>>())
    .bind(column(|r| int(r.total_ms)))
    .bind(text(|r| r.outcome.as_str()))
    .execute(pool)
    .await?;
    Ok(())
}

/// The condition of a usage query: from `$1` (unix ms) on, of the site `$2` and the key `$3` if
/// they are given.
macro_rules! usage_filter {
    () => {
        "WHERE at_ms >= $1 AND ($2::text IS NULL OR site_id = $2) \
         AND ($3::text IS NULL OR key_id = $3)"
    };
}

/// The rows of `sql`, a query filtered by [`usage_filter`].
async fn filtered(
    pool: &PgPool,
    sql: &'static str,
    since_ms: i64,
    site_id: Option<&str>,
    key_id: Option<&str>,
) -> Result<Vec<PgRow>, StoreError> {
    let rows = sqlx::query(sql).bind(since_ms).bind(site_id).bind(key_id).fetch_all(pool).await?;
    Ok(rows)
}

/// Settles what a previous run left pending as interrupted, at the worst case the rows hold.
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
         output_tokens, estimated, cost_micros, first_token_ms, total_ms, outcome FROM usage ",
        usage_filter!(),
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
    pool: &PgPool,
    since_ms: i64,
    site_id: Option<&str>,
    key_id: Option<&str>,
) -> Result<Vec<UsageGroup>, StoreError> {
    // `SUM` of BIGINT is NUMERIC, which cannot overflow (SQLite's `SUM` could, and two absurd
    // rows once kept the relay from starting); each sum is capped at `u64::MAX` and read as
    // text, since sqlx reads NUMERIC only through another crate.
    let sql = concat!(
        "SELECT at_ms / 86400000 AS day, site_id, key_id, model, COUNT(*) AS requests, \
         LEAST(SUM(input_tokens), 18446744073709551615)::text AS input_tokens, \
         LEAST(SUM(output_tokens), 18446744073709551615)::text AS output_tokens, \
         LEAST(SUM(cost_micros), 18446744073709551615)::text AS cost_micros FROM usage ",
        usage_filter!(),
        " GROUP BY day, site_id, key_id, model \
         ORDER BY day, site_id NULLS FIRST, key_id NULLS FIRST, model"
    );
    let rows = filtered(pool, sql, since_ms, site_id, key_id).await?;
    rows.iter()
        .map(|row| {
            Ok(UsageGroup {
                day_start: count(row, "day")?.saturating_mul(86_400),
                site_id: row.try_get("site_id")?,
                key_id: row.try_get("key_id")?,
                model: row.try_get("model")?,
                requests: count(row, "requests")?,
                input_tokens: sum(row, "input_tokens")?,
                output_tokens: sum(row, "output_tokens")?,
                cost_micros: sum(row, "cost_micros")?,
            })
        })
        .collect()
}

/// A sum read as the text of a NUMERIC.
fn sum(row: &PgRow, column: &str) -> Result<u64, StoreError> {
    let value: String = row.try_get(column)?;
    value.parse().map_err(|_| StoreError::Corrupt(format!("usage.{column} sums to {value}")))
}

#[cfg(test)]
mod tests {
    use super::merged;
    use confab_store::{Outcome, UsageRecord};

    fn record(request_id: &str, cost_micros: u64, outcome: Outcome) -> UsageRecord {
        UsageRecord {
            request_id: request_id.into(),
            at_ms: 1,
            site_id: Some("site_a".into()),
            key_id: None,
            visitor: None,
            model: "m".into(),
            upstream: "up".into(),
            input_tokens: 1,
            output_tokens: 2,
            estimated: outcome == Outcome::Pending,
            cost_micros,
            first_token_ms: None,
            total_ms: 3,
            outcome,
        }
    }

    #[test]
    fn a_final_record_settles_a_pending_one_of_the_same_batch() {
        let pending = record("a", 100, Outcome::Pending);
        let mut done = record("a", 40, Outcome::Completed);
        done.at_ms = 2;
        done.model = "other".into();
        let other = record("b", 7, Outcome::Completed);
        let merged = merged(&[pending.clone(), other.clone(), done]);
        // The pending row keeps who and when; the final record brings what it cost and how.
        let expected = UsageRecord {
            cost_micros: 40,
            estimated: false,
            outcome: Outcome::Completed,
            ..pending
        };
        assert_eq!(merged, [expected, other]);
    }

    #[test]
    fn nothing_replaces_a_final_record_of_the_same_batch() {
        let done = record("a", 40, Outcome::Completed);
        let merged = merged(&[
            done.clone(),
            record("a", 100, Outcome::Pending),
            record("a", 50, Outcome::Interrupted),
        ]);
        assert_eq!(merged, [done]);
    }
}
