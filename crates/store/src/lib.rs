//! Confab's storage seam: the [`Store`] trait every engine implements (SQLite in
//! `confab-store-sqlite`, PostgreSQL in `confab-store-postgres`, each with its own migrations),
//! the types it stores, and [`Cached`], the in-memory directory of sites and keys layered over
//! any engine for the per-request lookups.
//!
//! Nothing public here names an engine's types: [`StoreError`] carries a database failure as an
//! opaque source. The `sqlx` feature only adds `From<sqlx::Error>` for the engines.

pub mod conversations;
pub mod directory;
pub mod knowledge;
mod settings;
mod time;

use std::sync::Arc;

use async_trait::async_trait;

pub use conversations::{
    Author, Conversation, ConversationFilter, ConversationSettings, Conversations, Feedback,
    Holder, Message, NewMessage, Rating, Turn,
};
pub use directory::{Cached, Directory, StoredKey, StoredSite};
pub use knowledge::{
    Knowledge, KnowledgeCaps, KnowledgeDocument, KnowledgeVersion, NewDocument, NewPassage,
    Passage, PassageEmbedding, PutOutcome,
};
pub use settings::{ClientInstructions, Grounding, TokenMode, UnknownTokenMode, grounding_column};
pub use time::rfc3339;

/// A website that embeds the widget, and the policy it runs under.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    pub id: String,
    /// The public lookup id of the site key (never the key itself).
    pub key_lookup_id: String,
    /// What the operator chose for the site.
    pub settings: SiteSettings,
    pub is_demo: bool,
    /// Visitor verification: the secret of the site's visitor tokens, and whether unverified
    /// visitors are refused.
    pub verification: Verification,
    /// Unix seconds.
    pub created_at: i64,
    /// After a re-key with a grace period: the previous key's lookup id, and when it stops
    /// working (unix seconds).
    pub previous_key_lookup_id: Option<String>,
    pub previous_key_expires_at: Option<i64>,
}

/// What an operator chooses for a site: declared once, asked for at creation (`SiteSpec`),
/// stored (`NewSite`) and read back (`Site`). Its key, verification and bookkeeping are not
/// settings: the relay makes them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SiteSettings {
    /// A name for people (shown in listings).
    pub name: String,
    /// Origins (`scheme://host[:port]`) the site's key may be used from.
    pub origins: Vec<String>,
    /// Accept calls without an `Origin` header (native apps).
    pub allow_no_origin: bool,
    /// Models the site may use; the first is its default.
    pub models: Vec<String>,
    pub system_prompt: Option<String>,
    /// Per-site overrides of the `[policy]` defaults.
    pub max_tokens: Option<u32>,
    pub temperature_max: Option<f32>,
    pub context_messages: Option<u32>,
    /// `None`: `policy.client_instructions`.
    pub client_instructions: Option<ClientInstructions>,
    /// What the widget shows; unset fields fall back to the `[widget]` defaults.
    pub widget: SiteWidget,
    /// The site's own request limits and budgets (all visitors together).
    pub limits: CallerLimits,
    /// Limits per visitor; unset ones fall back to the `[visitors]` defaults.
    pub visitor_limits: VisitorLimits,
    /// Transcripts, their retention and privacy, and hand-off to a person.
    pub conversations: ConversationSettings,
    /// How a site with knowledge answers (`prefer` its sources, or `strict`ly from them).
    pub grounding: Grounding,
}

/// How a site verifies its visitors.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Verification {
    /// Hex text (see `visitor::VisitorSecret`); `None`: tokens are not accepted.
    pub secret: Option<String>,
    /// Refuse visitors without a valid token.
    pub required: bool,
    /// The one form of visitor token the site accepts.
    pub mode: TokenMode,
}

impl std::fmt::Debug for Verification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verification")
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("required", &self.required)
            .field("mode", &self.mode)
            .finish()
    }
}

/// Requests one visitor of a site may make; `None`: the `[visitors]` default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VisitorLimits {
    pub rpm: Option<u32>,
    pub rpd: Option<u32>,
    /// For verified visitors (with a valid visitor token).
    pub verified_rpm: Option<u32>,
    pub verified_rpd: Option<u32>,
}

/// A site's own widget settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SiteWidget {
    pub title: Option<String>,
    pub greeting: Option<String>,
    pub suggestions: Option<Vec<String>>,
    pub primary_color: Option<String>,
}

impl SiteSettings {
    pub fn default_model(&self) -> &str {
        self.models.first().map(String::as_str).unwrap_or_default()
    }
}

/// Everything needed to create a site; the key hash comes from `sitekey::NewKey`.
#[derive(Debug, Clone)]
pub struct NewSite {
    pub settings: SiteSettings,
    pub is_demo: bool,
    pub key_lookup_id: String,
    pub key_hash: [u8; 32],
}

/// A site found by its key's lookup id, with the hash to verify the presented secret against.
#[derive(Debug, Clone)]
pub struct SiteCredentials {
    pub site: Arc<Site>,
    pub key_hash: Vec<u8>,
}

/// What a secret API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `GET /v1/models`.
    Models,
    /// `GET /v1/usage` (the key's own usage).
    Usage,
    /// With `chat`: function calling and structured output in chat requests (`tools`,
    /// `tool_choice`, `parallel_tool_calls`, `response_format`, messages with `tool_calls` and
    /// `tool` messages). Never given unless asked for; site keys can never have it.
    Tools,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Chat, Scope::Models, Scope::Usage, Scope::Tools];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Chat => "chat",
            Scope::Models => "models",
            Scope::Usage => "usage",
            Scope::Tools => "tools",
        }
    }

    /// Every scope's name, for messages: `chat, models, usage, tools`.
    pub fn names() -> String {
        Scope::ALL.map(Scope::as_str).join(", ")
    }

    pub fn from_name(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// Request and spending limits of a caller (a secret key or a site); `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallerLimits {
    pub rpm: Option<u32>,
    pub rpd: Option<u32>,
    pub tpm: Option<u32>,
    /// Micro-dollars per calendar month (UTC).
    pub monthly_budget_micros: Option<u64>,
    /// Micro-dollars per day (UTC).
    pub daily_budget_micros: Option<u64>,
}

/// A secret API key for server-side callers (the secret itself is never stored).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    /// The public lookup id of the current secret.
    pub lookup_id: String,
    pub scopes: Vec<Scope>,
    /// Models the key may use; empty: every model the relay serves.
    pub models: Vec<String>,
    pub limits: CallerLimits,
    /// Unix seconds.
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// After a rotation: the previous secret's lookup id and when it stops working.
    pub previous_lookup_id: Option<String>,
    pub previous_expires_at: Option<i64>,
}

impl ApiKey {
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }

    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// Everything needed to create a key; the hash comes from `sitekey::NewKey`.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub name: String,
    pub scopes: Vec<Scope>,
    pub models: Vec<String>,
    pub limits: CallerLimits,
    pub lookup_id: String,
    pub key_hash: [u8; 32],
}

/// An active key found by one of its lookup ids, with the hash of that secret.
#[derive(Debug, Clone)]
pub struct ApiKeyCredentials {
    pub key: Arc<ApiKey>,
    pub key_hash: Vec<u8>,
}

/// What one chat request cost and how it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    /// The request's id (`X-Request-Id`): a record written again with the same id settles the
    /// earlier one in place (a `Pending` row becomes the request's final record).
    pub request_id: String,
    /// When the request arrived, unix milliseconds.
    pub at_ms: i64,
    pub site_id: Option<String>,
    pub key_id: Option<String>,
    /// The visitor's id or IP, hashed.
    pub visitor: Option<String>,
    pub model: String,
    pub upstream: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Of the input tokens, those the provider read from its prompt cache (priced as cache
    /// reads where the price table says so).
    pub cache_read_tokens: u64,
    /// Of the input tokens, those the provider wrote to its prompt cache.
    pub cache_write_tokens: u64,
    /// The upstream reported no usage; the tokens are the relay's estimate.
    pub estimated: bool,
    pub cost_micros: u64,
    pub first_token_ms: Option<u64>,
    pub total_ms: u64,
    pub outcome: Outcome,
}

/// Usage records of one UTC day, one caller and one model, summed: a row of the daily rollup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageGroup {
    /// Unix seconds at the start of the day.
    pub day_start: u64,
    pub site_id: Option<String>,
    pub key_id: Option<String>,
    pub model: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub cost_micros: u64,
}

/// How a chat request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The whole answer was delivered.
    Completed,
    /// The client went away (or stopped the answer) before the end.
    Interrupted,
    /// The upstream failed, before or during the answer.
    UpstreamError,
    /// Still running: the row holds the request's worst case, written before its upstream call
    /// and replaced by the final record when it ends (or settled as `Interrupted` at start-up,
    /// after a crash).
    Pending,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Interrupted => "interrupted",
            Outcome::UpstreamError => "upstream_error",
            Outcome::Pending => "pending",
        }
    }

    pub fn from_name(name: &str) -> Option<Outcome> {
        [Outcome::Completed, Outcome::Interrupted, Outcome::UpstreamError, Outcome::Pending]
            .into_iter()
            .find(|o| o.as_str() == name)
    }
}

/// A failure of the database under an engine, whatever the engine (its own error as the source).
pub type DatabaseError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage failure: {0}")]
    Database(#[source] DatabaseError),
    #[error("migration failure: {0}")]
    Migration(#[source] DatabaseError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// Refused, nothing changed: what was asked to be stored cannot be (an empty embedding, say).
    /// The caller's mistake, not the database's.
    #[error("refused by the store: {0}")]
    Invalid(String),
    /// The in-memory directory could not be checked against the database for longer than
    /// `database.directory_max_stale_ms`: it may still hold a revoked key, so it is not used.
    #[error("sites and keys could not be refreshed since {} (unix ms {since_ms})", rfc3339(since_ms / 1000))]
    DirectoryStale { since_ms: i64 },
}

#[cfg(feature = "sqlx")]
impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(Box::new(error))
    }
}

#[cfg(feature = "sqlx")]
impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        Self::Migration(Box::new(error))
    }
}

/// `records` summed by UTC day, caller and model (saturating), as the daily rollup adds them.
pub fn daily_rollup(records: &[UsageRecord]) -> Vec<UsageGroup> {
    let mut groups: std::collections::HashMap<_, UsageGroup> = std::collections::HashMap::new();
    for record in records {
        let day_start = u64::try_from(record.at_ms.div_euclid(86_400_000)).unwrap_or(0) * 86_400;
        let key = (day_start, &record.site_id, &record.key_id, &record.model);
        let group = groups.entry(key).or_insert_with(|| UsageGroup {
            day_start,
            site_id: record.site_id.clone(),
            key_id: record.key_id.clone(),
            model: record.model.clone(),
            requests: 0,
            input_tokens: 0,
            output_tokens: 0,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            cost_micros: 0,
        });
        group.requests = group.requests.saturating_add(1);
        group.input_tokens = group.input_tokens.saturating_add(record.input_tokens);
        group.output_tokens = group.output_tokens.saturating_add(record.output_tokens);
        group.cache_read_tokens = group.cache_read_tokens.saturating_add(record.cache_read_tokens);
        group.cache_write_tokens =
            group.cache_write_tokens.saturating_add(record.cache_write_tokens);
        group.cost_micros = group.cost_micros.saturating_add(record.cost_micros);
    }
    groups.into_values().collect()
}

/// A new id for a stored row: `prefix_` and ten random alphanumerics (`site_4fK2…`).
pub fn new_id(prefix: &str) -> String {
    use rand::Rng;
    let suffix: String =
        rand::rng().sample_iter(rand::distr::Alphanumeric).take(10).map(char::from).collect();
    format!("{prefix}_{suffix}")
}

/// The relay's persistent state.
///
/// The three lookups every request makes (`site_by_key`, `api_key_by_lookup`,
/// `origin_is_registered`) have default implementations that load the whole directory: correct
/// but slow, so an engine is always used through [`Cached`], which answers them from memory.
#[async_trait]
pub trait Store: Conversations + Knowledge + Send + Sync + std::fmt::Debug + 'static {
    async fn create_site(&self, site: NewSite) -> Result<Site, StoreError>;
    async fn list_sites(&self) -> Result<Vec<Site>, StoreError>;
    async fn site(&self, id: &str) -> Result<Option<Site>, StoreError>;
    /// Deletes a site; `false` when there was none.
    async fn delete_site(&self, id: &str) -> Result<bool, StoreError>;
    /// The site whose current key, or whose previous key still in its grace period at `now`, has
    /// this lookup id.
    async fn site_by_key(
        &self,
        lookup_id: &str,
        now: i64,
    ) -> Result<Option<SiteCredentials>, StoreError> {
        Ok(self.load_directory().await?.site_by_key(lookup_id, now))
    }
    /// Gives a site a new key. With `previous_expires_at` the current key keeps working until
    /// then; without, it stops at once (and any earlier previous key with it). `false` when
    /// there is no such site.
    async fn rekey_site(
        &self,
        id: &str,
        lookup_id: &str,
        key_hash: &[u8; 32],
        previous_expires_at: Option<i64>,
    ) -> Result<bool, StoreError>;
    /// Replaces a site's widget settings; `false` when there is no such site.
    async fn set_site_widget(&self, id: &str, widget: &SiteWidget) -> Result<bool, StoreError>;
    /// Replaces a site's limits and budgets; `false` when there is no such site.
    async fn set_site_limits(
        &self,
        id: &str,
        limits: &CallerLimits,
        visitor_limits: &VisitorLimits,
    ) -> Result<bool, StoreError>;
    /// Sets what happens to a site's clients' own instructions (`None`: the `[policy]`
    /// default); `false` when there is no such site.
    async fn set_site_client_instructions(
        &self,
        id: &str,
        setting: Option<ClientInstructions>,
    ) -> Result<bool, StoreError>;
    /// Replaces a site's visitor verification; `false` when there is no such site.
    async fn set_site_verification(
        &self,
        id: &str,
        verification: &Verification,
    ) -> Result<bool, StoreError>;
    /// Replaces a site's conversation settings; `false` when there is no such site.
    async fn set_site_conversations(
        &self,
        id: &str,
        settings: &ConversationSettings,
    ) -> Result<bool, StoreError>;
    /// Sets how a site with knowledge answers; `false` when there is no such site.
    async fn set_site_grounding(&self, id: &str, grounding: Grounding) -> Result<bool, StoreError>;
    /// Replaces a site's origins; `false` when there is no such site.
    async fn set_site_origins(&self, id: &str, origins: &[String]) -> Result<bool, StoreError>;
    /// True when at least one site lists this origin (answers CORS preflights, which carry no key).
    async fn origin_is_registered(&self, origin: &str) -> Result<bool, StoreError> {
        Ok(self.load_directory().await?.origin_is_registered(origin))
    }
    async fn create_api_key(&self, key: NewApiKey) -> Result<ApiKey, StoreError>;
    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError>;
    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError>;
    /// The active (not revoked) key whose current secret, or whose previous secret still in its
    /// grace period at `now`, has this lookup id.
    async fn api_key_by_lookup(
        &self,
        lookup_id: &str,
        now: i64,
    ) -> Result<Option<ApiKeyCredentials>, StoreError> {
        Ok(self.load_directory().await?.api_key_by_lookup(lookup_id, now))
    }
    /// Gives an active key a new secret; the current one stays valid until `previous_expires_at`.
    /// `None` when there is no such active key.
    async fn rotate_api_key(
        &self,
        id: &str,
        lookup_id: &str,
        key_hash: &[u8; 32],
        previous_expires_at: i64,
    ) -> Result<Option<ApiKey>, StoreError>;
    /// Revokes a key at `at`; `false` when there is no such active key.
    async fn revoke_api_key(&self, id: &str, at: i64) -> Result<bool, StoreError>;
    /// Records when keys were last used (batched by the caller).
    async fn touch_api_keys(&self, used: &[(String, i64)]) -> Result<(), StoreError>;
    /// Appends usage records and adds them to the daily rollup that [`Store::usage_totals`]
    /// reads, in one transaction.
    async fn record_usage(&self, records: &[UsageRecord]) -> Result<(), StoreError>;
    /// Records the worst cases of requests a crashed run left unsettled (from its reservation
    /// journal), like [`Store::record_usage`], but for the requests whose own record that run
    /// did write (found by request id among the records since the oldest of them). Returns how
    /// many were recorded.
    async fn recover_usage(&self, records: &[UsageRecord]) -> Result<u64, StoreError>;
    /// Settles the rows that versions before the reservation journal left `Pending` as
    /// `Interrupted`, at the worst case they hold; returns how many there were.
    async fn settle_pending_usage(&self) -> Result<u64, StoreError>;
    /// Deletes the raw records that arrived before `before_ms` (the rollup keeps their sums);
    /// returns how many.
    async fn prune_usage(&self, before_ms: i64) -> Result<u64, StoreError>;
    /// Usage records from `since_ms` on, optionally of one site or one key, oldest first.
    async fn usage_since(
        &self,
        since_ms: i64,
        site_id: Option<&str>,
        key_id: Option<&str>,
    ) -> Result<Vec<UsageRecord>, StoreError>;
    /// Usage from the UTC day of `since_ms` on, summed per day, caller and model (optionally of
    /// one site or one key), read from the daily rollup: what reports and budgets need, without
    /// reading every record, and still there once the records are pruned.
    async fn usage_totals(
        &self,
        since_ms: i64,
        site_id: Option<&str>,
        key_id: Option<&str>,
    ) -> Result<Vec<UsageGroup>, StoreError>;
    /// A secret the relay keeps for itself, created (`len` random bytes) on first use.
    async fn relay_secret(&self, name: &str, len: usize) -> Result<Vec<u8>, StoreError>;
    /// Remembers that console session `id` was logged out, so that every relay on this store
    /// refuses its cookie until it expires at `expires_at` (unix seconds); revocations expired
    /// by `now` are forgotten. Revoking again changes nothing.
    async fn revoke_console_session(
        &self,
        id: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<(), StoreError>;
    /// Whether console session `id` was logged out (on any relay).
    async fn console_session_revoked(&self, id: &str) -> Result<bool, StoreError>;
    /// A cheap round trip for health checks.
    async fn ping(&self) -> Result<(), StoreError>;
    /// When the in-memory directory has not been confirmed current for longer than its maximum
    /// staleness (so keys are refused): when it last was, in unix milliseconds. An engine keeps
    /// no directory: [`Cached`] does.
    fn directory_stale_since(&self) -> Option<i64> {
        None
    }
    /// The counter that every change to sites, their origins or keys moves (from any process).
    async fn directory_version(&self) -> Result<i64, StoreError>;
    /// For an engine that hears of changes as they commit (PostgreSQL's NOTIFY): a receiver that
    /// ticks when sites, their origins or keys may have changed, in any process, so that
    /// [`Cached`] checks [`Store::directory_version`] at once instead of at its next poll. A tick
    /// carries nothing (the counter says what changed), and several may come as one. `None` (the
    /// default) for an engine that does not: [`Cached`] then relies on its poll alone. Called
    /// inside a Tokio runtime.
    fn directory_changes(&self) -> Option<tokio::sync::watch::Receiver<()>> {
        None
    }
    /// Every site (with its origins and key hashes) and every active key, read consistently,
    /// with the counter's value at that moment.
    async fn load_directory(&self) -> Result<Directory, StoreError>;
    /// Records webhook events in the outbox (one transaction); the delivery worker dispatches
    /// them.
    async fn add_webhook_events(&self, events: &[WebhookEvent]) -> Result<(), StoreError>;
    /// Events not dispatched yet, oldest first.
    async fn undispatched_webhook_events(
        &self,
        limit: u32,
    ) -> Result<Vec<WebhookEvent>, StoreError>;
    /// Creates an event's deliveries, due at `due_ms`, and marks the event dispatched, in one
    /// transaction; `false` (and nothing created) when it was dispatched already.
    async fn dispatch_webhook_event(
        &self,
        event_id: &str,
        deliveries: &[NewWebhookDelivery],
        due_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Records an attempt the endpoint accepted.
    async fn webhook_delivered(&self, id: &str, at_ms: i64) -> Result<(), StoreError>;
    /// Records an attempt that failed: the delivery is due again at `retry_at_ms`, or given up
    /// (kept as a dead letter with its error) when that is `None`.
    async fn webhook_attempt_failed(
        &self,
        id: &str,
        error: &str,
        at_ms: i64,
        retry_at_ms: Option<i64>,
    ) -> Result<(), StoreError>;
    /// Deliveries, newest first, at most `limit`.
    async fn webhook_deliveries(&self, limit: u32) -> Result<Vec<WebhookDelivery>, StoreError>;
    /// Makes a delivery due again at `due_ms` as a new series of attempts (delivered or given
    /// up before, or not): an operator's redelivery. The delivery as it is then; `None` when
    /// there is no such delivery.
    async fn redeliver_webhook(
        &self,
        id: &str,
        due_ms: i64,
    ) -> Result<Option<WebhookDelivery>, StoreError>;
    /// Deletes the events recorded before `before_ms` whose deliveries are all over (accepted
    /// or given up), with those deliveries; returns how many events were deleted.
    async fn prune_webhook_events(&self, before_ms: i64) -> Result<u64, StoreError>;
    /// Claims up to `limit` deliveries to one endpoint (its URL, as configured) due at `now_ms`
    /// for an attempt: each is leased until `lease_until_ms` (not due again before then), so
    /// that no other worker attempts it meanwhile and one whose attempt never ended (the process
    /// stopped) is retried later. Each endpoint is attempted on its own, so that one that is slow
    /// or down holds up nobody else's deliveries.
    async fn claim_webhook_deliveries_to(
        &self,
        endpoint: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, StoreError>;
    /// Gives up (as dead letters with `error`) the deliveries still to make to any endpoint not
    /// in `endpoints`: nobody attempts those any more. Returns how many were given up.
    async fn give_up_webhook_deliveries_except(
        &self,
        endpoints: &[String],
        error: &str,
        at_ms: i64,
    ) -> Result<u64, StoreError>;
    /// The webhook backlog: events not dispatched yet, plus events with a delivery still to make
    /// (each counted once, however many of its deliveries are pending).
    async fn webhook_backlog(&self) -> Result<u64, StoreError>;
}

/// A webhook event in the outbox (see `webhooks` for the kinds and the payloads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    /// `evt_...`, also the body's `id`.
    pub id: String,
    /// `budget.threshold`, `key.revoked` or `request.completed`.
    pub kind: String,
    /// The site the event concerns: endpoints scoped to another site do not receive it.
    pub site_id: Option<String>,
    /// The JSON body sent to endpoints, byte for byte as it is signed.
    pub payload: String,
    /// Unix milliseconds.
    pub created_at_ms: i64,
}

/// A delivery of an event to one endpoint, as the dispatcher creates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhookDelivery {
    /// `whd_...`, sent as `Confab-Delivery` at every attempt so that receivers can deduplicate.
    pub id: String,
    /// The endpoint's URL, as configured.
    pub endpoint: String,
}

/// A delivery with its event's kind and payload; times in unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDelivery {
    pub id: String,
    pub event_id: String,
    pub kind: String,
    pub payload: String,
    pub endpoint: String,
    /// Attempts made so far that got an answer or an error.
    pub attempts: u32,
    pub created_at_ms: i64,
    pub delivered_at_ms: Option<i64>,
    /// When it was given up (a dead letter).
    pub failed_at_ms: Option<i64>,
    pub last_error: Option<String>,
}
