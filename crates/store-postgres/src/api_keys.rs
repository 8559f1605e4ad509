//! `api_keys`: secret API keys for server-side callers.

use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};

use confab_store::{ApiKey, NewApiKey, Scope, StoreError};

use crate::{caller_limits, money_column};

/// `SELECT <every column but the hashes> <tail>` as one static string.
macro_rules! select_keys {
    ($($tail:literal),*) => {
        concat!(
            "SELECT id, name, key_prefix, scopes, models, rpm, rpd, tpm, monthly_budget_micros, ",
            "daily_budget_micros, created_at, last_used_at, revoked_at, previous_key_prefix, ",
            "previous_expires_at", $($tail),*
        )
    };
}
pub(crate) use select_keys;

pub(crate) fn key_from_row(row: &PgRow) -> Result<ApiKey, StoreError> {
    let scopes: Vec<String> = row.try_get("scopes")?;
    let scopes = scopes
        .iter()
        .map(|s| {
            Scope::from_name(s)
                .ok_or_else(|| StoreError::Corrupt(format!("api_keys.scopes: unknown `{s}`")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ApiKey {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        lookup_id: row.try_get("key_prefix")?,
        scopes,
        models: row.try_get("models")?,
        limits: caller_limits(row, "api_keys")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
        previous_lookup_id: row.try_get("previous_key_prefix")?,
        previous_expires_at: row.try_get("previous_expires_at")?,
    })
}

pub async fn create(pool: &PgPool, new: NewApiKey) -> Result<ApiKey, StoreError> {
    let key = ApiKey {
        id: confab_store::new_id("key"),
        name: new.name,
        lookup_id: new.lookup_id,
        scopes: new.scopes,
        models: new.models,
        limits: new.limits,
        created_at: crate::unix_now(),
        last_used_at: None,
        revoked_at: None,
        previous_lookup_id: None,
        previous_expires_at: None,
    };
    let scopes: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
    sqlx::query(
        "INSERT INTO api_keys (id, name, key_prefix, key_hash, scopes, models, rpm, rpd, tpm, \
         monthly_budget_micros, daily_budget_micros, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&key.id)
    .bind(&key.name)
    .bind(&key.lookup_id)
    .bind(&new.key_hash[..])
    .bind(&scopes)
    .bind(&key.models)
    .bind(key.limits.rpm.map(i64::from))
    .bind(key.limits.rpd.map(i64::from))
    .bind(key.limits.tpm.map(i64::from))
    .bind(money_column(key.limits.monthly_budget_micros)?)
    .bind(money_column(key.limits.daily_budget_micros)?)
    .bind(key.created_at)
    .execute(pool)
    .await?;
    Ok(key)
}

pub async fn list(pool: &PgPool) -> Result<Vec<ApiKey>, StoreError> {
    let rows =
        sqlx::query(select_keys!(" FROM api_keys ORDER BY created_at, id")).fetch_all(pool).await?;
    rows.iter().map(key_from_row).collect()
}

pub async fn get(pool: &PgPool, id: &str) -> Result<Option<ApiKey>, StoreError> {
    let row = sqlx::query(select_keys!(" FROM api_keys WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(key_from_row).transpose()
}

pub async fn rotate(
    pool: &PgPool,
    id: &str,
    lookup_id: &str,
    key_hash: &[u8; 32],
    previous_expires_at: i64,
) -> Result<Option<ApiKey>, StoreError> {
    let row = sqlx::query(concat!(
        "WITH rotated AS (UPDATE api_keys SET previous_key_prefix = key_prefix, \
         previous_key_hash = key_hash, previous_expires_at = $1, key_prefix = $2, key_hash = $3 \
         WHERE id = $4 AND revoked_at IS NULL RETURNING *) ",
        select_keys!(" FROM rotated")
    ))
    .bind(previous_expires_at)
    .bind(lookup_id)
    .bind(&key_hash[..])
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(key_from_row).transpose()
}

pub async fn revoke(pool: &PgPool, id: &str, at: i64) -> Result<bool, StoreError> {
    let updated =
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(at)
            .bind(id)
            .execute(pool)
            .await?;
    Ok(updated.rows_affected() > 0)
}

pub async fn touch(pool: &PgPool, used: &[(String, i64)]) -> Result<(), StoreError> {
    if used.is_empty() {
        return Ok(());
    }
    let (ids, times): (Vec<&str>, Vec<i64>) =
        used.iter().map(|(id, at)| (id.as_str(), *at)).unzip();
    let mut tx = pool.begin().await?;
    // Rows are locked in one order (by id) before they are written, so that two relays writing
    // the same keys at once wait for each other instead of deadlocking.
    sqlx::query("SELECT 1 FROM api_keys WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE api_keys SET last_used_at = GREATEST(COALESCE(last_used_at, 0), used.at) \
         FROM (SELECT id, MAX(at) AS at FROM UNNEST($1::text[], $2::bigint[]) AS u(id, at) \
         GROUP BY id) AS used WHERE api_keys.id = used.id",
    )
    .bind(&ids)
    .bind(&times)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}
