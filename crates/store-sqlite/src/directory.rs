//! Loads the in-memory directory (`confab_store::directory`) in one read transaction, with the change
//! counter that `migrations/sqlite/0007_directory_version.sql` keeps.

use confab_store::{Directory, StoreError, StoredKey, StoredSite};
use sqlx::Row;
use sqlx::sqlite::SqlitePool;

use super::{api_keys, site_from_row};

const VERSION: &str = "SELECT version FROM directory_version WHERE id = 1";

pub async fn version(pool: &SqlitePool) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(VERSION).fetch_one(pool).await?)
}

/// Everything the directory holds, in one read transaction.
pub async fn load(pool: &SqlitePool) -> Result<Directory, StoreError> {
    let mut tx = pool.begin().await?;
    let version: i64 = sqlx::query_scalar(VERSION).fetch_one(&mut *tx).await?;
    let site_rows = sqlx::query(super::select_sites!("")).fetch_all(&mut *tx).await?;
    let origin_rows = sqlx::query("SELECT site_id, origin FROM site_origins ORDER BY rowid")
        .fetch_all(&mut *tx)
        .await?;
    let key_rows = sqlx::query(api_keys::select_keys!(
        ", key_hash, previous_key_hash FROM api_keys WHERE revoked_at IS NULL"
    ))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;

    let origins = origin_rows
        .iter()
        .map(|row| Ok((row.try_get("site_id")?, row.try_get("origin")?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let sites = site_rows
        .iter()
        .map(|row| {
            Ok(StoredSite {
                site: site_from_row(row)?,
                key_hash: row.try_get("key_hash")?,
                previous_key_hash: row.try_get("previous_key_hash")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let keys = key_rows
        .iter()
        .map(|row| {
            Ok(StoredKey {
                key: api_keys::key_from_row(row)?,
                key_hash: row.try_get("key_hash")?,
                previous_key_hash: row.try_get("previous_key_hash")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Directory::assemble(version, sites, origins, keys))
}
