//! `api_keys`: secret API keys (see `migrations/sqlite/0003_api_keys.sql`).

use sqlx::Row;
use sqlx::sqlite::{SqlitePool, SqliteRow};

use confab_store::{ApiKey, CallerLimits, NewApiKey, Scope, StoreError};

/// `SELECT <every column but the hashes> <tail>` as one static string (sqlx runs no SQL built
/// at run time).
macro_rules! select_keys {
    ($($tail:literal),*) => {
        concat!(
            "SELECT id, name, key_prefix, scopes, models, rpm, rpd, tpm, monthly_budget_micros, ",
            "daily_budget_micros, created_at, last_used_at, revoked_at, previous_key_prefix, ",
            "previous_expires_at", $($tail),*
        )
    };
}
pub(super) use select_keys;

fn corrupt(column: &str, problem: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("api_keys.{column}: {problem}"))
}

pub(super) fn key_from_row(row: &SqliteRow) -> Result<ApiKey, StoreError> {
    let scopes: String = row.try_get("scopes")?;
    let scopes: Vec<String> = serde_json::from_str(&scopes).map_err(|e| corrupt("scopes", e))?;
    let scopes = scopes
        .iter()
        .map(|s| Scope::from_name(s).ok_or_else(|| corrupt("scopes", format!("unknown `{s}`"))))
        .collect::<Result<Vec<_>, _>>()?;
    let models: String = row.try_get("models")?;
    let models = serde_json::from_str(&models).map_err(|e| corrupt("models", e))?;
    let small = |column: &str| -> Result<Option<u32>, StoreError> {
        let value: Option<i64> = row.try_get(column)?;
        value.map(|v| u32::try_from(v).map_err(|_| corrupt(column, "out of range"))).transpose()
    };
    let money = |column: &str| -> Result<Option<u64>, StoreError> {
        let value: Option<i64> = row.try_get(column)?;
        value.map(|v| u64::try_from(v).map_err(|_| corrupt(column, "negative"))).transpose()
    };
    Ok(ApiKey {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        lookup_id: row.try_get("key_prefix")?,
        scopes,
        models,
        limits: CallerLimits {
            rpm: small("rpm")?,
            rpd: small("rpd")?,
            tpm: small("tpm")?,
            monthly_budget_micros: money("monthly_budget_micros")?,
            daily_budget_micros: money("daily_budget_micros")?,
        },
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
        previous_lookup_id: row.try_get("previous_key_prefix")?,
        previous_expires_at: row.try_get("previous_expires_at")?,
    })
}

fn encode<T: serde::Serialize>(column: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| corrupt(column, e))
}

fn money_column(value: Option<u64>) -> Result<Option<i64>, StoreError> {
    value.map(|v| i64::try_from(v).map_err(|_| corrupt("budget", "too large"))).transpose()
}

pub async fn create(pool: &SqlitePool, new: NewApiKey) -> Result<ApiKey, StoreError> {
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
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&key.id)
    .bind(&key.name)
    .bind(&key.lookup_id)
    .bind(&new.key_hash[..])
    .bind(encode("scopes", &scopes)?)
    .bind(encode("models", &key.models)?)
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

pub async fn list(pool: &SqlitePool) -> Result<Vec<ApiKey>, StoreError> {
    let rows =
        sqlx::query(select_keys!(" FROM api_keys ORDER BY created_at, id")).fetch_all(pool).await?;
    rows.iter().map(key_from_row).collect()
}

pub async fn get(pool: &SqlitePool, id: &str) -> Result<Option<ApiKey>, StoreError> {
    let row = sqlx::query(select_keys!(" FROM api_keys WHERE id = ?"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(key_from_row).transpose()
}

pub async fn rotate(
    pool: &SqlitePool,
    id: &str,
    lookup_id: &str,
    key_hash: &[u8; 32],
    previous_expires_at: i64,
) -> Result<Option<ApiKey>, StoreError> {
    let updated = sqlx::query(
        "UPDATE api_keys SET previous_key_prefix = key_prefix, previous_key_hash = key_hash, \
         previous_expires_at = ?, key_prefix = ?, key_hash = ? \
         WHERE id = ? AND revoked_at IS NULL",
    )
    .bind(previous_expires_at)
    .bind(lookup_id)
    .bind(&key_hash[..])
    .bind(id)
    .execute(pool)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(None);
    }
    get(pool, id).await
}

pub async fn revoke(pool: &SqlitePool, id: &str, at: i64) -> Result<bool, StoreError> {
    let updated =
        sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
            .bind(at)
            .bind(id)
            .execute(pool)
            .await?;
    Ok(updated.rows_affected() > 0)
}

pub async fn touch(pool: &SqlitePool, used: &[(String, i64)]) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    for (id, at) in used {
        sqlx::query(
            "UPDATE api_keys SET last_used_at = MAX(COALESCE(last_used_at, 0), ?) WHERE id = ?",
        )
        .bind(at)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
