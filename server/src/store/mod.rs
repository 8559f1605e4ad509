//! Storage: the `confab-store` seam (the `Store` trait, its types, and the in-memory directory
//! layered over an engine), re-exported so the relay's modules say `crate::store::Site`, and
//! [`open`], the one place that picks the engine from `database.url`.

use std::sync::Arc;

pub use confab_store::*;
pub use confab_store_postgres::PgStore;
pub use confab_store_sqlite::SqliteStore;

use crate::config::DatabaseConfig;

/// The engines a `database.url` can name, by its scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// `sqlite:`: one file, one relay (and the CLI beside it).
    Sqlite,
    /// `postgres://` or `postgresql://`: one database for any number of relays.
    Postgres,
}

impl Engine {
    /// The engine `url` names; `None` for any other scheme.
    pub fn of(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }
}

/// The store `database.url` names, behind the in-memory directory, with migrations run. A
/// failed migration is an error: the relay does not start on a schema it does not know.
pub async fn open(config: &DatabaseConfig) -> Result<Arc<dyn Store>, StoreError> {
    let (url, max_stale) = (config.url.as_str(), config.directory_max_stale());
    let store: Arc<dyn Store> = match Engine::of(url) {
        Some(Engine::Sqlite) => {
            Arc::new(Cached::new(SqliteStore::open(url, config.max_connections).await?, max_stale))
        }
        Some(Engine::Postgres) => {
            Arc::new(Cached::new(PgStore::open(url, config.max_connections).await?, max_stale))
        }
        None => {
            let problem = "database.url names no engine: use sqlite: or postgres://";
            return Err(StoreError::Database(problem.into()));
        }
    };
    Ok(store)
}

/// `url` fit to print: a password in it (`user:password@`, or a `password=` parameter) is
/// replaced by `***`. A URL that does not parse is not shown at all, since where a password
/// would be in it cannot be told.
pub fn redacted_url(url: &str) -> String {
    const HIDDEN: &str = "***";
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "(a URL that does not parse, not shown)".to_owned();
    };
    let in_query = parsed.query_pairs().any(|(name, _)| name == "password");
    if parsed.password().is_none() && !in_query {
        return url.to_owned();
    }
    if parsed.password().is_some() {
        // Fails only for URLs that cannot have a password, which this one has.
        let _ = parsed.set_password(Some(HIDDEN));
    }
    if in_query {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let value = if name == "password" { HIDDEN.into() } else { value.into_owned() };
                (name.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_is_chosen_by_the_scheme() {
        assert_eq!(Engine::of("sqlite://confab.db"), Some(Engine::Sqlite));
        assert_eq!(Engine::of("sqlite::memory:"), Some(Engine::Sqlite));
        assert_eq!(Engine::of("postgres://db/confab"), Some(Engine::Postgres));
        assert_eq!(Engine::of("postgresql://db/confab"), Some(Engine::Postgres));
        assert_eq!(Engine::of("mysql://db/confab"), None);
        assert_eq!(Engine::of("confab.db"), None);
    }

    #[test]
    fn a_password_in_a_database_url_is_never_shown() {
        assert_eq!(
            redacted_url("postgres://confab:s3cr%40t@db.example:5432/confab?sslmode=require"),
            "postgres://confab:***@db.example:5432/confab?sslmode=require"
        );
        assert_eq!(
            redacted_url("postgresql://db.example/confab?user=confab&password=s3cret&x=1"),
            "postgresql://db.example/confab?user=confab&password=***&x=1"
        );
        assert_eq!(
            redacted_url("postgres://confab@db.example/c"),
            "postgres://confab@db.example/c"
        );
        assert_eq!(redacted_url("sqlite://confab.db"), "sqlite://confab.db");
        assert_eq!(redacted_url("postgres://u:pw@[::1"), "(a URL that does not parse, not shown)");
    }
}
