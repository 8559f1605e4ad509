//! The embedded default engine: SQLite through sqlx, one pool, WAL mode, migrations embedded in
//! the binary. Used through `confab_store::Cached`, which keeps the sites and keys every request
//! reads in memory and polls [`Store::directory_version`] for changes made by other processes.

use std::str::FromStr;
use std::time::Duration;

use confab_store::{ClientInstructions, Directory, Grounding, grounding_column, new_id};

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, migrate::Migrator};

mod api_keys;
mod conversations;
mod knowledge;
mod usage;
mod webhooks;

use confab_store::{
    ApiKey, CallerLimits, NewApiKey, NewSite, Site, SiteSettings, SiteWidget, Store, StoreError,
    UsageGroup, UsageRecord, Verification, VisitorLimits,
};
use confab_store::{
    Conversation, ConversationFilter, ConversationSettings, Conversations, Feedback, Holder,
    Message, NewMessage, Turn,
};

use confab_store::{
    Knowledge, KnowledgeCaps, KnowledgeDocument, KnowledgeVersion, NewDocument, Passage,
    PassageEmbedding, PutOutcome,
};
use confab_store::{NewWebhookDelivery, WebhookDelivery, WebhookEvent};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// One connection of its own for usage records, the one write every request makes (its
    /// pending row, by group commit). Through the shared pool each commit landed on the next
    /// idle connection, whose page cache the previous commit (on another one) had made stale,
    /// so every write began by reading its pages back from the WAL.
    usage_pool: SqlitePool,
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
        Ok(Self { pool, usage_pool })
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
            "previous_expires_at, conversations, grounding FROM sites ",
            $tail
        )
    };
}
use select_sites;

mod directory;

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
            conversations: {
                let column: Option<String> = row.try_get("conversations")?;
                ConversationSettings::from_column(column.as_deref())?
            },
            grounding: grounding_column(row.try_get("grounding")?)?,
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

/// Seconds since the Unix epoch, as the rows store them.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

#[async_trait]
impl Conversations for SqliteStore {
    async fn record_turns(&self, turns: &[Turn]) -> Result<(), StoreError> {
        conversations::record_turns(&self.pool, turns).await
    }

    async fn add_message(&self, message: &NewMessage) -> Result<Option<Message>, StoreError> {
        conversations::add_message(&self.pool, message).await
    }

    async fn set_holder(&self, id: &str, holder: Holder, at_ms: i64) -> Result<bool, StoreError> {
        conversations::set_holder(&self.pool, id, holder, at_ms).await
    }

    async fn open_conversation(
        &self,
        id: &str,
        site_id: &str,
        visitor: Option<&str>,
        page_url: Option<&str>,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        conversations::open(&self.pool, id, site_id, visitor, page_url, at_ms).await
    }

    async fn conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        conversations::conversation(&self.pool, id).await
    }

    async fn messages(
        &self,
        id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError> {
        conversations::messages(&self.pool, id, after_seq, limit).await
    }

    async fn list_conversations(
        &self,
        filter: &ConversationFilter,
    ) -> Result<Vec<Conversation>, StoreError> {
        conversations::list(&self.pool, filter).await
    }

    async fn record_feedback(&self, feedback: &Feedback) -> Result<(), StoreError> {
        conversations::record_feedback(&self.pool, feedback).await
    }

    async fn delete_conversation(&self, id: &str) -> Result<bool, StoreError> {
        conversations::delete_conversation(&self.pool, id).await
    }

    async fn delete_visitor(
        &self,
        visitor: &str,
        site_id: Option<&str>,
    ) -> Result<u64, StoreError> {
        conversations::delete_visitor(&self.pool, visitor, site_id).await
    }

    async fn prune_conversations(&self, site_id: &str, before_ms: i64) -> Result<u64, StoreError> {
        conversations::prune(&self.pool, site_id, before_ms).await
    }
}

#[async_trait]
impl Knowledge for SqliteStore {
    async fn put_document(
        &self,
        document: &NewDocument,
        caps: KnowledgeCaps,
    ) -> Result<PutOutcome, StoreError> {
        knowledge::put_document(&self.pool, document, caps).await
    }

    async fn knowledge_documents(
        &self,
        site_id: &str,
    ) -> Result<Vec<KnowledgeDocument>, StoreError> {
        knowledge::documents(&self.pool, site_id).await
    }

    async fn remove_document(&self, site_id: &str, id: i64) -> Result<bool, StoreError> {
        knowledge::remove_document(&self.pool, site_id, id).await
    }

    async fn site_passages(&self, site_id: &str) -> Result<Vec<Passage>, StoreError> {
        knowledge::site_passages(&self.pool, site_id).await
    }

    async fn passages(&self, site_id: &str, ids: &[i64]) -> Result<Vec<Passage>, StoreError> {
        knowledge::passages(&self.pool, site_id, ids).await
    }

    async fn knowledge_versions(&self) -> Result<Vec<KnowledgeVersion>, StoreError> {
        knowledge::versions(&self.pool).await
    }

    async fn put_embeddings(
        &self,
        site_id: &str,
        model: &str,
        embeddings: &[PassageEmbedding],
    ) -> Result<u64, StoreError> {
        knowledge::put_embeddings(&self.pool, site_id, model, embeddings).await
    }

    async fn site_embeddings(
        &self,
        site_id: &str,
        model: &str,
    ) -> Result<Vec<PassageEmbedding>, StoreError> {
        knowledge::site_embeddings(&self.pool, site_id, model).await
    }

    async fn passages_without_embedding(
        &self,
        site_id: &str,
        model: &str,
        limit: usize,
    ) -> Result<Vec<Passage>, StoreError> {
        knowledge::passages_without_embedding(&self.pool, site_id, model, limit).await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_site(&self, new: NewSite) -> Result<Site, StoreError> {
        let site = Site {
            id: new_id("site"),
            key_lookup_id: new.key_lookup_id,
            settings: new.settings,
            is_demo: new.is_demo,
            verification: Verification::default(),
            created_at: unix_now(),
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
             verified_rpm, verified_rpd, client_instructions, conversations, grounding) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .bind(settings.conversations.to_column())
        .bind(settings.grounding.as_str())
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
        let mut tx = self.pool.begin().await?;
        // A deleted site's conversations go with it.
        sqlx::query("DELETE FROM conversation_feedback WHERE site_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM conversations WHERE site_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        knowledge::delete_site(&mut tx, id).await?;
        let done = sqlx::query("DELETE FROM sites WHERE id = ?").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_site_conversations(
        &self,
        id: &str,
        settings: &ConversationSettings,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE sites SET conversations = ? WHERE id = ?")
            .bind(settings.to_column())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
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
        Ok(done.rows_affected() > 0)
    }

    async fn set_site_origins(&self, id: &str, origins: &[String]) -> Result<bool, StoreError> {
        // Reads, then writes: taken as a writer from the start, or SQLite refuses the upgrade at
        // once (SQLITE_BUSY, no busy wait) while another writer holds the database.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
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
        Ok(true)
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
        Ok(updated.rows_affected() > 0)
    }

    async fn set_site_grounding(&self, id: &str, grounding: Grounding) -> Result<bool, StoreError> {
        let updated = sqlx::query("UPDATE sites SET grounding = ? WHERE id = ?")
            .bind(grounding.as_str())
            .bind(id)
            .execute(&self.pool)
            .await?;
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
        Ok(updated.rows_affected() > 0)
    }

    async fn record_usage(&self, records: &[UsageRecord]) -> Result<(), StoreError> {
        usage::record(&self.usage_pool, records).await
    }

    async fn recover_usage(&self, records: &[UsageRecord]) -> Result<u64, StoreError> {
        usage::recover(&self.usage_pool, records).await
    }

    async fn prune_usage(&self, before_ms: i64) -> Result<u64, StoreError> {
        usage::prune(&self.usage_pool, before_ms).await
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

    async fn revoke_console_session(
        &self,
        id: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM console_revocations WHERE expires_at <= ?")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT OR IGNORE INTO console_revocations (id, expires_at) VALUES (?, ?)")
            .bind(id)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn console_session_revoked(&self, id: &str) -> Result<bool, StoreError> {
        let found = sqlx::query_scalar::<_, i64>("SELECT 1 FROM console_revocations WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    async fn create_api_key(&self, key: NewApiKey) -> Result<ApiKey, StoreError> {
        let created = api_keys::create(&self.pool, key).await?;
        Ok(created)
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        api_keys::list(&self.pool).await
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        api_keys::get(&self.pool, id).await
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
        Ok(rotated)
    }

    async fn revoke_api_key(&self, id: &str, at: i64) -> Result<bool, StoreError> {
        let revoked = api_keys::revoke(&self.pool, id, at).await?;
        Ok(revoked)
    }

    async fn touch_api_keys(&self, used: &[(String, i64)]) -> Result<(), StoreError> {
        api_keys::touch(&self.pool, used).await
    }

    async fn directory_version(&self) -> Result<i64, StoreError> {
        directory::version(&self.pool).await
    }

    async fn load_directory(&self) -> Result<Directory, StoreError> {
        directory::load(&self.pool).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
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

    async fn redeliver_webhook(
        &self,
        id: &str,
        due_ms: i64,
    ) -> Result<Option<WebhookDelivery>, StoreError> {
        webhooks::redeliver(&self.pool, id, due_ms).await
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
