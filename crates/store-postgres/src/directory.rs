//! What `confab_store::Cached` keeps in memory: the change counter, the consistent load, and the
//! listener that hears of changes as they commit.
//!
//! The triggers of `migrations/0001_initial.sql` move `directory_version` and NOTIFY
//! `confab_directory` on every change to sites, their origins or keys. [`listen`] holds one
//! connection that LISTENs on that channel and turns each notification into a tick of a `watch`
//! channel, which `Cached` awaits beside its poll. A notification sent while the listener is
//! (re)connecting is lost, so every (re)connection ticks once as well: the cache then checks the
//! counter, which misses nothing.

use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::sync::watch;

use confab_store::{Directory, StoreError, StoredKey, StoredSite};

use crate::api_keys::{key_from_row, select_keys};
use crate::sites::{select_sites, site_from_row};

const VERSION: &str = "SELECT version FROM directory_version WHERE id = 1";

/// The channel the triggers NOTIFY.
const CHANNEL: &str = "confab_directory";

/// How long the listener waits before connecting again after a failure.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

pub async fn version(pool: &PgPool) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(VERSION).fetch_one(pool).await?)
}

/// Everything the directory holds, read in one snapshot (a REPEATABLE READ transaction), so the
/// counter matches the rows.
pub async fn load(pool: &PgPool) -> Result<Directory, StoreError> {
    let mut tx = pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
    let version: i64 = sqlx::query_scalar(VERSION).fetch_one(&mut *tx).await?;
    let site_rows = sqlx::query(select_sites!("")).fetch_all(&mut *tx).await?;
    let origin_rows = sqlx::query("SELECT site_id, origin FROM site_origins ORDER BY seq")
        .fetch_all(&mut *tx)
        .await?;
    let key_rows = sqlx::query(select_keys!(
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
                key: key_from_row(row)?,
                key_hash: row.try_get("key_hash")?,
                previous_key_hash: row.try_get("previous_key_hash")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Directory::assemble(version, sites, origins, keys))
}

/// Starts listening for changes on a connection of its own (not one of `pool`'s, which serve
/// queries); the receiver ticks at each one. The listener stops once every receiver is dropped.
pub fn listen(pool: &PgPool) -> watch::Receiver<()> {
    let (changes, receiver) = watch::channel(());
    // A pool of one connection that never expires: sqlx's listener reconnects through it.
    let connection = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .acquire_timeout(RECONNECT_AFTER.saturating_mul(5))
        .connect_lazy_with((*pool.connect_options()).clone());
    tokio::spawn(async move {
        tokio::select! {
            () = forward(&connection, &changes) => {}
            () = changes.closed() => {}
        }
        connection.close().await;
    });
    receiver
}

/// Forwards notifications as ticks, reconnecting after a failure, forever.
async fn forward(connection: &PgPool, changes: &watch::Sender<()>) {
    loop {
        let mut listener = match subscribe(connection).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for changes to sites and keys; polling for them meanwhile");
                tokio::time::sleep(RECONNECT_AFTER).await;
                continue;
            }
        };
        // Whatever changed while there was no listener.
        changes.send_replace(());
        loop {
            match listener.try_recv().await {
                Ok(Some(_)) => {}
                // The connection was lost and made again (and LISTEN with it): anything may
                // have been missed in between.
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, "lost the connection that listens for changes to sites and keys; polling for them meanwhile");
                    break;
                }
            }
            changes.send_replace(());
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

async fn subscribe(connection: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(connection).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
