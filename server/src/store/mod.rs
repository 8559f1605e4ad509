//! Storage: the `confab-store` seam (the `Store` trait, its types, and the in-memory directory
//! layered over an engine), re-exported so the relay's modules say `crate::store::Site`, and
//! [`open`], the one place that picks the engine from `database.url`.

use std::sync::Arc;

pub use confab_store::*;
pub use confab_store_sqlite::SqliteStore;

use crate::config::DatabaseConfig;

/// The store `database.url` names, behind the in-memory directory, with migrations run. A
/// failed migration is an error: the relay does not start on a schema it does not know.
pub async fn open(config: &DatabaseConfig) -> Result<Arc<dyn Store>, StoreError> {
    let engine = SqliteStore::open(&config.url, config.max_connections).await?;
    Ok(Arc::new(Cached::new(engine, config.directory_max_stale())))
}
