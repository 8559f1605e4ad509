//! The shared engine: PostgreSQL through sqlx, so that several relays (and the CLI, and the
//! admin API of any of them) work on one database. Migrations are embedded from `migrations/`.
//!
//! It keeps the semantics of `confab-store-sqlite` method by method; what differs is what sharing
//! needs:
//!
//! - **Webhook claims** lock the due rows `FOR UPDATE SKIP LOCKED` and lease them in the same
//!   statement, so two relays never claim one delivery, and neither waits for the other.
//! - **Directory changes** move `directory_version` (as in SQLite) and also NOTIFY
//!   `confab_directory`; [`Store::directory_changes`] listens for them (see `directory`), so a
//!   change made through any relay or the CLI reaches every relay at once, with the 250 ms poll of
//!   the counter in `confab_store::Cached` as the backstop.
//!
//! Like every engine it is used through `confab_store::Cached`, which answers the per-request
//! lookups from memory: this engine does not implement them.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Row};
use tokio::sync::watch;

use confab_store::{
    ApiKey, CallerLimits, ClientInstructions, Directory, Grounding, NewApiKey, NewSite,
    NewWebhookDelivery, Site, SiteWidget, Store, StoreError, UsageGroup, UsageRecord, Verification,
    VisitorLimits, WebhookDelivery, WebhookEvent,
};
use confab_store::{
    Conversation, ConversationFilter, ConversationSettings, Conversations, Feedback, Holder,
    Message, NewMessage, Turn,
};
use confab_store::{
    Knowledge, KnowledgeCaps, KnowledgeDocument, KnowledgeVersion, NewDocument, Passage,
    PassageEmbedding, PutOutcome,
};

mod api_keys;
mod conversations;
mod directory;
mod knowledge;
mod options;
mod sites;
mod usage;
mod webhooks;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// A PostgreSQL database shared by any number of relays; clones share one pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Announces the changes other processes make to sites and keys; the listener behind it
    /// starts on first use (a CLI command never needs it).
    changes: Arc<OnceLock<watch::Receiver<()>>>,
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://` or `postgresql://`) with a pool of up to
    /// `max_connections`, and runs pending migrations (under sqlx's advisory lock, so relays
    /// starting together migrate once). A failed migration is an error: the relay does not
    /// start on a schema it does not know.
    ///
    /// TLS follows the URL's `sslmode` and `sslrootcert` as libpq reads them (see `options`),
    /// for example `?sslmode=verify-full&sslrootcert=/etc/confab/db-ca.pem`.
    ///
    /// An error never contains the URL, which may hold a password.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options = options::from_url(url)?;
        // One connection first, so that a database that cannot be reached says why at once: the
        // pool retries a refused connection for 30 s, then reports only that it timed out.
        PgConnection::connect_with(&options).await.map_err(naming_tls)?.close().await?;
        let pool =
            PgPoolOptions::new().max_connections(max_connections).connect_with(options).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool, changes: Arc::default() })
    }
}

/// `error`, saying so when it is a failed TLS handshake: sqlx reports a certificate that fails
/// verification as an I/O error ("error communicating with database: invalid peer
/// certificate: UnknownIssuer"), which does not name TLS.
fn naming_tls(error: sqlx::Error) -> StoreError {
    if let sqlx::Error::Io(io) = &error
        && let Some(tls) = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        return StoreError::Database(
            format!("the TLS handshake with the database failed: {tls}").into(),
        );
    }
    error.into()
}

/// Seconds since the Unix epoch, as the rows store them.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// A stored limit, which must fit a `u32`; `None` is unlimited (or the default).
fn limit_column(row: &PgRow, table: &str, column: &str) -> Result<Option<u32>, StoreError> {
    let value: Option<i64> = row.try_get(column)?;
    value
        .map(|v| {
            u32::try_from(v)
                .map_err(|_| StoreError::Corrupt(format!("{table}.{column} is out of range")))
        })
        .transpose()
}

/// The request limits and budgets that sites and keys both have, in columns of the same names.
fn caller_limits(row: &PgRow, table: &str) -> Result<CallerLimits, StoreError> {
    let amount = |column: &str| -> Result<Option<u64>, StoreError> {
        let value: Option<i64> = row.try_get(column)?;
        value
            .map(|v| {
                u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{table}.{column} < 0")))
            })
            .transpose()
    };
    Ok(CallerLimits {
        rpm: limit_column(row, table, "rpm")?,
        rpd: limit_column(row, table, "rpd")?,
        tpm: limit_column(row, table, "tpm")?,
        monthly_budget_micros: amount("monthly_budget_micros")?,
        daily_budget_micros: amount("daily_budget_micros")?,
    })
}

/// Micro-dollars as PostgreSQL's BIGINT (which is signed).
fn money_column(value: Option<u64>) -> Result<Option<i64>, StoreError> {
    value
        .map(|v| i64::try_from(v).map_err(|_| StoreError::Corrupt("budget too large".into())))
        .transpose()
}

#[async_trait]
impl Knowledge for PgStore {
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
impl Conversations for PgStore {
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
impl Store for PgStore {
    async fn create_site(&self, site: NewSite) -> Result<Site, StoreError> {
        sites::create(&self.pool, site).await
    }

    async fn list_sites(&self) -> Result<Vec<Site>, StoreError> {
        sites::list(&self.pool).await
    }

    async fn site(&self, id: &str) -> Result<Option<Site>, StoreError> {
        sites::get(&self.pool, id).await
    }

    async fn delete_site(&self, id: &str) -> Result<bool, StoreError> {
        sites::delete(&self.pool, id).await
    }

    async fn rekey_site(
        &self,
        id: &str,
        lookup_id: &str,
        key_hash: &[u8; 32],
        previous_expires_at: Option<i64>,
    ) -> Result<bool, StoreError> {
        sites::rekey(&self.pool, id, lookup_id, key_hash, previous_expires_at).await
    }

    async fn set_site_widget(&self, id: &str, widget: &SiteWidget) -> Result<bool, StoreError> {
        sites::set_widget(&self.pool, id, widget).await
    }

    async fn set_site_conversations(
        &self,
        id: &str,
        settings: &ConversationSettings,
    ) -> Result<bool, StoreError> {
        sites::set_conversations(&self.pool, id, settings).await
    }

    async fn set_site_limits(
        &self,
        id: &str,
        limits: &CallerLimits,
        visitor_limits: &VisitorLimits,
    ) -> Result<bool, StoreError> {
        sites::set_limits(&self.pool, id, limits, visitor_limits).await
    }

    async fn set_site_client_instructions(
        &self,
        id: &str,
        setting: Option<ClientInstructions>,
    ) -> Result<bool, StoreError> {
        sites::set_client_instructions(&self.pool, id, setting).await
    }

    async fn set_site_grounding(&self, id: &str, grounding: Grounding) -> Result<bool, StoreError> {
        sites::set_grounding(&self.pool, id, grounding).await
    }

    async fn set_site_verification(
        &self,
        id: &str,
        verification: &Verification,
    ) -> Result<bool, StoreError> {
        sites::set_verification(&self.pool, id, verification).await
    }

    async fn set_site_origins(&self, id: &str, origins: &[String]) -> Result<bool, StoreError> {
        sites::set_origins(&self.pool, id, origins).await
    }

    async fn create_api_key(&self, key: NewApiKey) -> Result<ApiKey, StoreError> {
        api_keys::create(&self.pool, key).await
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
        api_keys::rotate(&self.pool, id, lookup_id, key_hash, previous_expires_at).await
    }

    async fn revoke_api_key(&self, id: &str, at: i64) -> Result<bool, StoreError> {
        api_keys::revoke(&self.pool, id, at).await
    }

    async fn touch_api_keys(&self, used: &[(String, i64)]) -> Result<(), StoreError> {
        api_keys::touch(&self.pool, used).await
    }

    async fn record_usage(&self, records: &[UsageRecord]) -> Result<(), StoreError> {
        usage::record(&self.pool, records).await
    }

    async fn recover_usage(&self, records: &[UsageRecord]) -> Result<u64, StoreError> {
        usage::recover(&self.pool, records).await
    }

    async fn settle_pending_usage(&self) -> Result<u64, StoreError> {
        usage::settle_pending(&self.pool).await
    }

    async fn prune_usage(&self, before_ms: i64) -> Result<u64, StoreError> {
        usage::prune(&self.pool, before_ms).await
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
        sqlx::query(
            "INSERT INTO relay_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(&fresh)
        .execute(&self.pool)
        .await?;
        let value = sqlx::query_scalar("SELECT value FROM relay_secrets WHERE name = $1")
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
        sqlx::query("DELETE FROM console_revocations WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO console_revocations (id, expires_at) VALUES ($1, $2) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn console_session_revoked(&self, id: &str) -> Result<bool, StoreError> {
        let found = sqlx::query_scalar::<_, i32>("SELECT 1 FROM console_revocations WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn directory_version(&self) -> Result<i64, StoreError> {
        directory::version(&self.pool).await
    }

    async fn load_directory(&self) -> Result<Directory, StoreError> {
        directory::load(&self.pool).await
    }

    fn directory_changes(&self) -> Option<watch::Receiver<()>> {
        let changes = self.changes.get_or_init(|| directory::listen(&self.pool));
        Some(changes.clone())
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
