//! The embedded default: SQLite through sqlx, one pool, WAL mode, migrations embedded in the binary.

use crate::config_base::ClientInstructions;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, migrate::Migrator};

mod api_keys;
mod usage;
mod webhooks;

use super::directory::{DEFAULT_MAX_STALE, Directory, DirectoryCache};

use super::{
    ApiKey, ApiKeyCredentials, CallerLimits, NewApiKey, NewSite, Site, SiteCredentials,
    SiteSettings, SiteWidget, Store, StoreError, UsageGroup, UsageRecord, Verification,
    VisitorLimits,
};

use super::{NewWebhookDelivery, WebhookDelivery, WebhookEvent};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// One connection of its own for usage records, the one write every request makes (its
    /// pending row, by group commit). Through the shared pool each commit landed on the next
    /// idle connection, whose page cache the previous commit (on another one) had made stale,
    /// so every write began by reading its pages back from the WAL.
    usage_pool: SqlitePool,
    /// Sites, origins and active keys in memory, for the per-request lookups, and where they
    /// are loaded from.
    directory: Arc<DirectoryCache>,
    directory_source: SqliteDirectory,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` and runs pending migrations. A failed
    /// migration is an error: the relay does not start on a schema it does not know.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&pool).await?;
        let usage_pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
        let directory_source = SqliteDirectory(pool.clone());
        let directory = Arc::new(DirectoryCache::new(DEFAULT_MAX_STALE));
        Ok(Self { pool, usage_pool, directory, directory_source })
    }

    /// Refuses keys once the in-memory directory could not be checked against the database for
    /// `max_stale` (`database.directory_max_stale_ms`). Call before the store is used.
    #[must_use]
    pub fn with_directory_max_stale(mut self, max_stale: Duration) -> Self {
        self.directory = Arc::new(DirectoryCache::new(max_stale));
        self
    }

    async fn directory(&self) -> Result<Arc<Directory>, StoreError> {
        self.directory.get(&self.directory_source).await
    }

    /// After a write to sites, origins or keys: the in-memory copy is reloaded before the write
    /// returns.
    async fn directory_changed(&self) {
        self.directory.changed(&self.directory_source).await;
    }

    async fn origins_of(&self, site_id: &str) -> Result<Vec<String>, StoreError> {
        let origins =
            sqlx::query_scalar("SELECT origin FROM site_origins WHERE site_id = ? ORDER BY rowid")
                .bind(site_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(origins)
    }

    async fn with_origins(&self, row: &SqliteRow) -> Result<Site, StoreError> {
        let mut site = site_from_row(row)?;
        site.settings.origins = self.origins_of(&site.id).await?;
        Ok(site)
    }
}

/// `SELECT <every site column> <tail>` as one static string, so no SQL is ever built at run time.
macro_rules! select_sites {
    ($tail:literal) => {
        concat!(
            "SELECT id, name, key_prefix, allow_no_origin, models, system_prompt, max_tokens, ",
            "temperature_max, context_messages, is_demo, created_at, key_hash, widget_title, ",
            "widget_greeting, widget_suggestions, widget_primary_color, rpm, rpd, tpm, ",
            "monthly_budget_micros, daily_budget_micros, visitor_rpm, visitor_rpd, ",
            "visitor_secret, require_verified_visitor, visitor_token_mode, verified_rpm, ",
            "verified_rpd, client_instructions, previous_key_prefix, previous_key_hash, ",
            "previous_expires_at FROM sites ",
            $tail
        )
    };
}
use select_sites;

mod directory;
use directory::SqliteDirectory;

fn site_from_row(row: &SqliteRow) -> Result<Site, StoreError> {
    let models: String = row.try_get("models")?;
    let models: Vec<String> = serde_json::from_str(&models)
        .map_err(|e| StoreError::Corrupt(format!("sites.models is not a JSON list: {e}")))?;
    let as_u32 = |column: &str| -> Result<Option<u32>, StoreError> {
        let value: Option<i64> = row.try_get(column)?;
        value
            .map(|v| {
                u32::try_from(v)
                    .map_err(|_| StoreError::Corrupt(format!("sites.{column} is out of range")))
            })
            .transpose()
    };
    let as_u64 = |column: &str| -> Result<Option<u64>, StoreError> {
        let value: Option<i64> = row.try_get(column)?;
        value
            .map(|v| {
                u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("sites.{column} < 0")))
            })
            .transpose()
    };
    let temperature_max: Option<f64> = row.try_get("temperature_max")?;
    let suggestions: Option<String> = row.try_get("widget_suggestions")?;
    let suggestions = suggestions
        .map(|s| serde_json::from_str::<Vec<String>>(&s))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("sites.widget_suggestions is not a list: {e}")))?;
    Ok(Site {
        id: row.try_get("id")?,
        key_lookup_id: row.try_get("key_prefix")?,
        settings: SiteSettings {
            name: row.try_get("name")?,
            // In a table of their own: `with_origins` reads them.
            origins: Vec::new(),
            allow_no_origin: row.try_get("allow_no_origin")?,
            models,
            system_prompt: row.try_get("system_prompt")?,
            max_tokens: as_u32("max_tokens")?,
            #[expect(clippy::cast_possible_truncation, reason = "stored from an f32")]
            temperature_max: temperature_max.map(|t| t as f32),
            context_messages: as_u32("context_messages")?,
            client_instructions: {
                let setting: Option<String> = row.try_get("client_instructions")?;
                match setting {
                    None => None,
                    Some(name) => Some(ClientInstructions::from_name(&name).ok_or_else(|| {
                        StoreError::Corrupt(format!("sites.client_instructions `{name}`"))
                    })?),
                }
            },
            widget: SiteWidget {
                title: row.try_get("widget_title")?,
                greeting: row.try_get("widget_greeting")?,
                suggestions,
                primary_color: row.try_get("widget_primary_color")?,
            },
            limits: CallerLimits {
                rpm: as_u32("rpm")?,
                rpd: as_u32("rpd")?,
                tpm: as_u32("tpm")?,
                monthly_budget_micros: as_u64("monthly_budget_micros")?,
                daily_budget_micros: as_u64("daily_budget_micros")?,
            },
            visitor_limits: VisitorLimits {
                rpm: as_u32("visitor_rpm")?,
                rpd: as_u32("visitor_rpd")?,
                verified_rpm: as_u32("verified_rpm")?,
                verified_rpd: as_u32("verified_rpd")?,
            },
        },
        is_demo: row.try_get("is_demo")?,
        verification: Verification {
            secret: row.try_get("visitor_secret")?,
            required: row.try_get("require_verified_visitor")?,
            mode: {
                let mode: String = row.try_get("visitor_token_mode")?;
                mode.parse()
                    .map_err(|e| StoreError::Corrupt(format!("sites.visitor_token_mode: {e}")))?
            },
        },
        created_at: row.try_get("created_at")?,
        previous_key_lookup_id: row.try_get("previous_key_prefix")?,
        previous_key_expires_at: row.try_get("previous_expires_at")?,
    })
}

/// Micro-dollars as SQLite integers (which are signed).
fn money_column(value: Option<u64>) -> Result<Option<i64>, StoreError> {
    value
        .map(|v| i64::try_from(v).map_err(|_| StoreError::Corrupt("budget too large".into())))
        .transpose()
}

fn encode_suggestions(widget: &SiteWidget) -> Result<Option<String>, StoreError> {
    widget
        .suggestions
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("cannot encode suggestions: {e}")))
}

fn new_site_id() -> String {
    use rand::Rng;
    let suffix: String =
        rand::rng().sample_iter(rand::distr::Alphanumeric).take(10).map(char::from).collect();
    format!("site_{suffix}")
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_site(&self, new: NewSite) -> Result<Site, StoreError> {
        let site = Site {
            id: new_site_id(),
            key_lookup_id: new.key_lookup_id,
            settings: new.settings,
            is_demo: new.is_demo,
            verification: Verification::default(),
            created_at: crate::unix_now_i64(),
            previous_key_lookup_id: None,
            previous_key_expires_at: None,
        };
        let settings = &site.settings;
        let models = serde_json::to_string(&settings.models)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode models: {e}")))?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO sites (id, name, key_prefix, key_hash, allow_no_origin, models, \
             system_prompt, max_tokens, temperature_max, context_messages, is_demo, created_at, \
             widget_title, widget_greeting, widget_suggestions, widget_primary_color, rpm, rpd, \
             tpm, monthly_budget_micros, daily_budget_micros, visitor_rpm, visitor_rpd, \
             verified_rpm, verified_rpd, client_instructions) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&site.id)
        .bind(&settings.name)
        .bind(&site.key_lookup_id)
        .bind(&new.key_hash[..])
        .bind(settings.allow_no_origin)
        .bind(&models)
        .bind(&settings.system_prompt)
        .bind(settings.max_tokens.map(i64::from))
        .bind(settings.temperature_max.map(f64::from))
        .bind(settings.context_messages.map(i64::from))
        .bind(site.is_demo)
        .bind(site.created_at)
        .bind(&settings.widget.title)
        .bind(&settings.widget.greeting)
        .bind(encode_suggestions(&settings.widget)?)
        .bind(&settings.widget.primary_color)
        .bind(settings.limits.rpm.map(i64::from))
        .bind(settings.limits.rpd.map(i64::from))
        .bind(settings.limits.tpm.map(i64::from))
        .bind(money_column(settings.limits.monthly_budget_micros)?)
        .bind(money_column(settings.limits.daily_budget_micros)?)
        .bind(settings.visitor_limits.rpm.map(i64::from))
        .bind(settings.visitor_limits.rpd.map(i64::from))
        .bind(settings.visitor_limits.verified_rpm.map(i64::from))
        .bind(settings.visitor_limits.verified_rpd.map(i64::from))
        .bind(settings.client_instructions.map(ClientInstructions::as_str))
        .execute(&mut *tx)
        .await?;
        for origin in &settings.origins {
            sqlx::query("INSERT OR IGNORE INTO site_origins (site_id, origin) VALUES (?, ?)")
                .bind(&site.id)
                .bind(origin)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.directory_changed().await;
        Ok(site)
    }

    async fn list_sites(&self) -> Result<Vec<Site>, StoreError> {
        let rows =
            sqlx::query(select_sites!("ORDER BY created_at, id")).fetch_all(&self.pool).await?;
        let mut sites = Vec::with_capacity(rows.len());
        for row in &rows {
            sites.push(self.with_origins(row).await?);
        }
        Ok(sites)
    }

    async fn site(&self, id: &str) -> Result<Option<Site>, StoreError> {
        let row =
            sqlx::query(select_sites!("WHERE id = ?")).bind(id).fetch_optional(&self.pool).await?;
        match row {
            Some(row) => Ok(Some(self.with_origins(&row).await?)),
            None => Ok(None),
        }
    }

    async fn delete_site(&self, id: &str) -> Result<bool, StoreError> {
        let done =
            sqlx::query("DELETE FROM sites WHERE id = ?").bind(id).execute(&self.pool).await?;
        self.directory_changed().await;
        Ok(done.rows_affected() > 0)
    }

    async fn site_by_key(
        &self,
        lookup_id: &str,
        now: i64,
    ) -> Result<Option<SiteCredentials>, StoreError> {
        Ok(self.directory().await?.site_by_key(lookup_id, now))
    }

    async fn rekey_site(
        &self,
        id: &str,
        lookup_id: &str,
        key_hash: &[u8; 32],
        previous_expires_at: Option<i64>,
    ) -> Result<bool, StoreError> {
        // The current key becomes the previous one only when it is to keep working; otherwise
        // any previous key is forgotten with it.
        let done = sqlx::query(
            "UPDATE sites SET \
             previous_key_prefix = CASE WHEN ?1 IS NULL THEN NULL ELSE key_prefix END, \
             previous_key_hash = CASE WHEN ?1 IS NULL THEN NULL ELSE key_hash END, \
             previous_expires_at = ?1, key_prefix = ?2, key_hash = ?3 WHERE id = ?4",
        )
        .bind(previous_expires_at)
        .bind(lookup_id)
        .bind(&key_hash[..])
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.directory_changed().await;
        Ok(done.rows_affected() > 0)
    }

    async fn set_site_widget(&self, id: &str, widget: &SiteWidget) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sites SET widget_title = ?, widget_greeting = ?, widget_suggestions = ?, \
             widget_primary_color = ? WHERE id = ?",
        )
        .bind(&widget.title)
        .bind(&widget.greeting)
        .bind(encode_suggestions(widget)?)
        .bind(&widget.primary_color)
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.directory_changed().await;
        Ok(done.rows_affected() > 0)
    }

    async fn set_site_origins(&self, id: &str, origins: &[String]) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM sites WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Ok(false);
        }
        sqlx::query("DELETE FROM site_origins WHERE site_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        for origin in origins {
            sqlx::query("INSERT OR IGNORE INTO site_origins (site_id, origin) VALUES (?, ?)")
                .bind(id)
                .bind(origin)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.directory_changed().await;
        Ok(true)
    }

    async fn origin_is_registered(&self, origin: &str) -> Result<bool, StoreError> {
        Ok(self.directory().await?.origin_is_registered(origin))
    }

    async fn set_site_limits(
        &self,
        id: &str,
        limits: &CallerLimits,
        visitor_limits: &VisitorLimits,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE sites SET rpm = ?, rpd = ?, tpm = ?, monthly_budget_micros = ?, \
             daily_budget_micros = ?, visitor_rpm = ?, visitor_rpd = ?, verified_rpm = ?, \
             verified_rpd = ? WHERE id = ?",
        )
        .bind(limits.rpm.map(i64::from))
        .bind(limits.rpd.map(i64::from))
        .bind(limits.tpm.map(i64::from))
        .bind(money_column(limits.monthly_budget_micros)?)
        .bind(money_column(limits.daily_budget_micros)?)
        .bind(visitor_limits.rpm.map(i64::from))
        .bind(visitor_limits.rpd.map(i64::from))
        .bind(visitor_limits.verified_rpm.map(i64::from))
        .bind(visitor_limits.verified_rpd.map(i64::from))
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.directory_changed().await;
        Ok(updated.rows_affected() > 0)
    }

    async fn set_site_client_instructions(
        &self,
        id: &str,
        setting: Option<ClientInstructions>,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query("UPDATE sites SET client_instructions = ? WHERE id = ?")
            .bind(setting.map(ClientInstructions::as_str))
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.directory_changed().await;
        Ok(updated.rows_affected() > 0)
    }

    async fn set_site_verification(
        &self,
        id: &str,
        verification: &Verification,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE sites SET visitor_secret = ?, require_verified_visitor = ?, \
             visitor_token_mode = ? WHERE id = ?",
        )
        .bind(&verification.secret)
        .bind(verification.required)
        .bind(verification.mode.as_str())
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.directory_changed().await;
        Ok(updated.rows_affected() > 0)
    }

    async fn record_usage(&self, records: &[UsageRecord]) -> Result<(), StoreError> {
        usage::record(&self.usage_pool, records).await
    }

    async fn settle_pending_usage(&self) -> Result<u64, StoreError> {
        usage::settle_pending(&self.pool).await
    }

    async fn usage_since(
        &self,
        since_ms: i64,
        site_id: Option<&str>,
        key_id: Option<&str>,
    ) -> Result<Vec<UsageRecord>, StoreError> {
        usage::since(&self.pool, since_ms, site_id, key_id).await
    }

    async fn usage_totals(
        &self,
        since_ms: i64,
        site_id: Option<&str>,
        key_id: Option<&str>,
    ) -> Result<Vec<UsageGroup>, StoreError> {
        usage::totals(&self.pool, since_ms, site_id, key_id).await
    }

    async fn relay_secret(&self, name: &str, len: usize) -> Result<Vec<u8>, StoreError> {
        let fresh: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
        // Insert-if-missing then read: two relays starting at once agree on one value.
        sqlx::query("INSERT OR IGNORE INTO relay_secrets (name, value) VALUES (?, ?)")
            .bind(name)
            .bind(&fresh)
            .execute(&self.pool)
            .await?;
        let value = sqlx::query_scalar("SELECT value FROM relay_secrets WHERE name = ?")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(value)
    }

    async fn create_api_key(&self, key: NewApiKey) -> Result<ApiKey, StoreError> {
        let created = api_keys::create(&self.pool, key).await?;
        self.directory_changed().await;
        Ok(created)
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        api_keys::list(&self.pool).await
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        api_keys::get(&self.pool, id).await
    }

    async fn api_key_by_lookup(
        &self,
        lookup_id: &str,
        now: i64,
    ) -> Result<Option<ApiKeyCredentials>, StoreError> {
        Ok(self.directory().await?.api_key_by_lookup(lookup_id, now))
    }

    async fn rotate_api_key(
        &self,
        id: &str,
        lookup_id: &str,
        key_hash: &[u8; 32],
        previous_expires_at: i64,
    ) -> Result<Option<ApiKey>, StoreError> {
        let rotated =
            api_keys::rotate(&self.pool, id, lookup_id, key_hash, previous_expires_at).await?;
        self.directory_changed().await;
        Ok(rotated)
    }

    async fn revoke_api_key(&self, id: &str, at: i64) -> Result<bool, StoreError> {
        let revoked = api_keys::revoke(&self.pool, id, at).await?;
        self.directory_changed().await;
        Ok(revoked)
    }

    async fn touch_api_keys(&self, used: &[(String, i64)]) -> Result<(), StoreError> {
        api_keys::touch(&self.pool, used).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn directory_stale_since(&self) -> Option<i64> {
        self.directory.stale_since()
    }

    async fn add_webhook_events(&self, events: &[WebhookEvent]) -> Result<(), StoreError> {
        webhooks::add_events(&self.pool, events).await
    }

    async fn undispatched_webhook_events(
        &self,
        limit: u32,
    ) -> Result<Vec<WebhookEvent>, StoreError> {
        webhooks::undispatched(&self.pool, limit).await
    }

    async fn dispatch_webhook_event(
        &self,
        event_id: &str,
        deliveries: &[NewWebhookDelivery],
        due_ms: i64,
    ) -> Result<bool, StoreError> {
        webhooks::dispatch(&self.pool, event_id, deliveries, due_ms).await
    }

    async fn webhook_delivered(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        webhooks::delivered(&self.pool, id, at_ms).await
    }

    async fn webhook_attempt_failed(
        &self,
        id: &str,
        error: &str,
        at_ms: i64,
        retry_at_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        webhooks::attempt_failed(&self.pool, id, error, at_ms, retry_at_ms).await
    }

    async fn webhook_deliveries(&self, limit: u32) -> Result<Vec<WebhookDelivery>, StoreError> {
        webhooks::list(&self.pool, limit).await
    }

    async fn prune_webhook_events(&self, before_ms: i64) -> Result<u64, StoreError> {
        webhooks::prune(&self.pool, before_ms).await
    }

    async fn claim_webhook_deliveries_to(
        &self,
        endpoint: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        webhooks::claim_to(&self.pool, endpoint, now_ms, lease_until_ms, limit).await
    }

    async fn give_up_webhook_deliveries_except(
        &self,
        endpoints: &[String],
        error: &str,
        at_ms: i64,
    ) -> Result<u64, StoreError> {
        webhooks::give_up_except(&self.pool, endpoints, error, at_ms).await
    }

    async fn webhook_backlog(&self) -> Result<u64, StoreError> {
        webhooks::backlog(&self.pool).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sitekey::{KeyKind, NewKey};
    use crate::store::directory::Source;

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        (dir, SqliteStore::open(&url, 2).await.unwrap())
    }

    fn new_site(key: &NewKey) -> NewSite {
        NewSite {
            settings: SiteSettings {
                name: "Shop".into(),
                origins: vec!["https://shop.example".into(), "https://www.shop.example".into()],
                models: vec!["m1".into(), "m2".into()],
                system_prompt: Some("Be brief.".into()),
                max_tokens: Some(200),
                temperature_max: Some(0.5),
                widget: SiteWidget {
                    title: Some("Shop help".into()),
                    greeting: None,
                    suggestions: Some(vec!["Where is my order?".into()]),
                    primary_color: Some("#123abc".into()),
                },
                ..SiteSettings::default()
            },
            is_demo: false,
            key_lookup_id: key.lookup_id.clone(),
            key_hash: key.hash,
        }
    }

    #[tokio::test]
    async fn a_created_site_reads_back_identically() {
        let (_dir, store) = store().await;
        let key = NewKey::generate(KeyKind::Site);
        let created = store.create_site(new_site(&key)).await.unwrap();
        assert_eq!(store.site(&created.id).await.unwrap(), Some(created.clone()));
        let found = store.site_by_key(&key.lookup_id, 0).await.unwrap().unwrap();
        assert_eq!(*found.site, created);
        assert_eq!(found.key_hash, key.hash);
        assert!(store.origin_is_registered("https://www.shop.example").await.unwrap());
        assert!(!store.origin_is_registered("https://evil.example").await.unwrap());
    }

    #[tokio::test]
    async fn deleting_a_site_removes_its_origins() {
        let (_dir, store) = store().await;
        let created = store.create_site(new_site(&NewKey::generate(KeyKind::Site))).await.unwrap();
        assert!(store.delete_site(&created.id).await.unwrap());
        assert!(!store.delete_site(&created.id).await.unwrap());
        assert!(!store.origin_is_registered("https://shop.example").await.unwrap());
        assert!(store.list_sites().await.unwrap().is_empty());
    }

    fn new_key(key: &NewKey) -> NewApiKey {
        NewApiKey {
            name: "backend".into(),
            scopes: vec![crate::store::Scope::Chat],
            models: vec![],
            limits: CallerLimits::default(),
            lookup_id: key.lookup_id.clone(),
            key_hash: key.hash,
        }
    }

    async fn version(store: &SqliteStore) -> i64 {
        store.directory_source.version().await.unwrap()
    }

    #[tokio::test]
    async fn a_change_made_through_the_store_is_seen_by_its_next_lookup() {
        let (_dir, store) = store().await;
        let site_key = NewKey::generate(KeyKind::Site);
        let site = store.create_site(new_site(&site_key)).await.unwrap();
        let secret = NewKey::generate(KeyKind::Secret);
        let key = store.create_api_key(new_key(&secret)).await.unwrap();
        // Both are in memory now.
        assert!(store.site_by_key(&site_key.lookup_id, 0).await.unwrap().is_some());
        assert!(store.api_key_by_lookup(&secret.lookup_id, 0).await.unwrap().is_some());

        store.set_site_origins(&site.id, &["https://new.example".into()]).await.unwrap();
        assert!(!store.origin_is_registered("https://shop.example").await.unwrap());
        assert!(store.origin_is_registered("https://new.example").await.unwrap());
        let found = store.site_by_key(&site_key.lookup_id, 0).await.unwrap().unwrap();
        assert_eq!(found.site.settings.origins, ["https://new.example"]);

        let rotated = NewKey::generate(KeyKind::Secret);
        store.rotate_api_key(&key.id, &rotated.lookup_id, &rotated.hash, 1_000).await.unwrap();
        let previous = store.api_key_by_lookup(&secret.lookup_id, 999).await.unwrap().unwrap();
        assert_eq!(previous.key_hash, secret.hash);
        assert!(store.api_key_by_lookup(&secret.lookup_id, 1_000).await.unwrap().is_none());
        let current = store.api_key_by_lookup(&rotated.lookup_id, 0).await.unwrap().unwrap();
        assert_eq!(current.key_hash, rotated.hash);

        assert!(store.revoke_api_key(&key.id, 5).await.unwrap());
        assert!(store.api_key_by_lookup(&rotated.lookup_id, 0).await.unwrap().is_none());
        assert!(store.delete_site(&site.id).await.unwrap());
        assert!(store.site_by_key(&site_key.lookup_id, 0).await.unwrap().is_none());
        assert!(!store.origin_is_registered("https://new.example").await.unwrap());
    }

    #[tokio::test]
    async fn a_change_made_by_another_process_is_seen_after_a_poll() {
        let (dir, relay) = store().await;
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let cli = SqliteStore::open(&url, 1).await.unwrap();
        let secret = NewKey::generate(KeyKind::Secret);
        let key = cli.create_api_key(new_key(&secret)).await.unwrap();
        // The relay loads its copy after the key exists, and holds it.
        assert!(relay.api_key_by_lookup(&secret.lookup_id, 0).await.unwrap().is_some());
        let site_key = NewKey::generate(KeyKind::Site);
        cli.create_site(new_site(&site_key)).await.unwrap();
        assert!(cli.revoke_api_key(&key.id, 5).await.unwrap());
        // Until the relay's next poll, it may still answer from its copy; after it, not.
        let waited = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                let revoked =
                    relay.api_key_by_lookup(&secret.lookup_id, 0).await.unwrap().is_none();
                let site = relay.site_by_key(&site_key.lookup_id, 0).await.unwrap().is_some();
                if revoked && site {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "the relay never saw the other process's changes");
    }

    #[tokio::test]
    async fn recording_when_a_key_was_used_does_not_count_as_a_change() {
        let (_dir, store) = store().await;
        let key = store.create_api_key(new_key(&NewKey::generate(KeyKind::Secret))).await.unwrap();
        let before = version(&store).await;
        store.touch_api_keys(&[(key.id.clone(), 42)]).await.unwrap();
        assert_eq!(version(&store).await, before);
        assert!(store.revoke_api_key(&key.id, 43).await.unwrap());
        assert!(version(&store).await > before);
    }
}
