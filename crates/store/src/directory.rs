//! The directory: an in-memory copy of what every request reads, namely the sites by their key,
//! the origins some site lists (CORS), and the active secret keys by their key. [`Cached`] layers
//! it over any engine.
//!
//! Reading these from SQLite on every request cost about 115 µs of CPU (two or three queries,
//! each handed to sqlx's connection thread and back), several times what the rest of the relay
//! spends on a request; a lookup here is a hash-map probe.
//!
//! **Freshness.** A write through the store reloads the copy before the write returns, so the
//! admin API (and anything else in the same process) sees its change at once. A write from
//! another process (the `confab` CLI next to a running relay) bumps `directory_version` through
//! SQL triggers, and the relay polls that one-row table every [`POLL`]: a revoked key or a removed
//! origin stops working there within a quarter of a second. An engine that hears of changes as
//! they commit ([`Store::directory_changes`]: PostgreSQL's NOTIFY) makes the relay check at once;
//! the poll is then the backstop for notifications lost while its listener reconnects.
//!
//! **Failing closed.** A failed poll keeps the copy it has, but only for so long: once the copy
//! has not been confirmed current for `max_stale` (`database.directory_max_stale_ms`), lookups
//! fail with [`StoreError::DirectoryStale`] (a 503 for site and secret keys alike, since a key
//! revoked or a site deleted meanwhile must not keep working), until a poll succeeds again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{
    ApiKey, ApiKeyCredentials, Conversation, ConversationFilter, ConversationSettings,
    Conversations, Feedback, Holder, Message, NewApiKey, NewMessage, NewSite, NewWebhookDelivery,
    Site, SiteCredentials, SiteWidget, Store, StoreError, Turn, UsageGroup, UsageRecord,
    Verification, VisitorLimits, WebhookDelivery, WebhookEvent,
};
use crate::knowledge::{
    Knowledge, KnowledgeCaps, KnowledgeDocument, KnowledgeVersion, NewDocument, Passage,
    PassageEmbedding, PutOutcome,
};

/// How often a relay looks for changes made by other processes.
const POLL: Duration = Duration::from_millis(250);

/// How long a copy that cannot be checked is trusted, unless configured otherwise.
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(30);

/// One consistent copy, as of `version`.
#[derive(Debug, Default)]
pub struct Directory {
    version: i64,
    /// By the site key's lookup id: each site's current key, and its previous one during the
    /// grace period after a re-key.
    sites: HashMap<String, SiteEntry>,
    /// By lookup id: each active key's current secret, and its previous one during the grace
    /// period after a rotation.
    keys: HashMap<String, KeyEntry>,
    origins: HashSet<String>,
}

#[derive(Debug)]
struct SiteEntry {
    site: Arc<Site>,
    key_hash: Vec<u8>,
    /// For a previous key: when it stops working (unix seconds).
    expires_at: Option<i64>,
}

/// A site as stored: its current key's hash, and the previous one's if it has one.
#[derive(Debug)]
pub struct StoredSite {
    pub site: Site,
    pub key_hash: Vec<u8>,
    pub previous_key_hash: Option<Vec<u8>>,
}

#[derive(Debug)]
struct KeyEntry {
    key: Arc<ApiKey>,
    key_hash: Vec<u8>,
    /// For a previous secret: when it stops working (unix seconds).
    expires_at: Option<i64>,
}

/// An active key as stored: its current secret's hash, and the previous one's if it has one.
#[derive(Debug)]
pub struct StoredKey {
    pub key: ApiKey,
    pub key_hash: Vec<u8>,
    pub previous_key_hash: Option<Vec<u8>>,
}

impl Directory {
    /// Builds the copy from rows as an engine reads them: every site without its origins,
    /// every `(site id, origin)` pair in the order its site lists them, and every active key.
    pub fn assemble(
        version: i64,
        sites: Vec<StoredSite>,
        origins: impl IntoIterator<Item = (String, String)>,
        keys: Vec<StoredKey>,
    ) -> Self {
        let mut by_site: HashMap<String, Vec<String>> = HashMap::new();
        for (site_id, origin) in origins {
            by_site.entry(site_id).or_default().push(origin);
        }
        let sites = sites.into_iter().map(|mut stored| {
            stored.site.settings.origins = by_site.remove(&stored.site.id).unwrap_or_default();
            stored
        });
        Self::new(version, sites, keys)
    }

    /// Builds the copy from every site (with its origins and key hashes) and every active key.
    pub fn new(
        version: i64,
        sites: impl IntoIterator<Item = StoredSite>,
        keys: impl IntoIterator<Item = StoredKey>,
    ) -> Self {
        let mut directory = Directory { version, ..Directory::default() };
        let mut current_sites = Vec::new();
        for StoredSite { site, key_hash, previous_key_hash } in sites {
            directory.origins.extend(site.settings.origins.iter().cloned());
            let site = Arc::new(site);
            if let (Some(lookup), Some(hash)) = (&site.previous_key_lookup_id, previous_key_hash) {
                let expires_at = Some(site.previous_key_expires_at.unwrap_or(i64::MIN));
                let entry = SiteEntry { site: Arc::clone(&site), key_hash: hash, expires_at };
                directory.sites.insert(lookup.clone(), entry);
            }
            current_sites.push(SiteEntry { site, key_hash, expires_at: None });
        }
        // A current key wins over another site's expiring one with the same lookup id.
        for entry in current_sites {
            directory.sites.insert(entry.site.key_lookup_id.clone(), entry);
        }
        let mut current = Vec::new();
        for StoredKey { key, key_hash, previous_key_hash } in keys {
            let key = Arc::new(key);
            if let (Some(lookup), Some(hash)) = (&key.previous_lookup_id, previous_key_hash) {
                let expires_at = Some(key.previous_expires_at.unwrap_or(i64::MIN));
                let entry = KeyEntry { key: Arc::clone(&key), key_hash: hash, expires_at };
                directory.keys.insert(lookup.clone(), entry);
            }
            current.push(KeyEntry { key, key_hash, expires_at: None });
        }
        // A current secret wins over another key's expiring one with the same lookup id.
        for entry in current {
            directory.keys.insert(entry.key.lookup_id.clone(), entry);
        }
        directory
    }

    pub fn site_by_key(&self, lookup_id: &str, now: i64) -> Option<SiteCredentials> {
        let entry = self.sites.get(lookup_id)?;
        if entry.expires_at.is_some_and(|expires_at| expires_at <= now) {
            return None;
        }
        Some(SiteCredentials { site: Arc::clone(&entry.site), key_hash: entry.key_hash.clone() })
    }

    pub fn api_key_by_lookup(&self, lookup_id: &str, now: i64) -> Option<ApiKeyCredentials> {
        let entry = self.keys.get(lookup_id)?;
        if entry.expires_at.is_some_and(|expires_at| expires_at <= now) {
            return None;
        }
        Some(ApiKeyCredentials { key: Arc::clone(&entry.key), key_hash: entry.key_hash.clone() })
    }

    pub fn origin_is_registered(&self, origin: &str) -> bool {
        self.origins.contains(origin)
    }
}

/// Where a directory is loaded from: an engine.
#[derive(Debug, Clone)]
struct Source(Arc<dyn Store>);

impl Source {
    async fn version(&self) -> Result<i64, StoreError> {
        self.0.directory_version().await
    }

    async fn load(&self) -> Result<Directory, StoreError> {
        self.0.load_directory().await
    }
}

/// The current copy, loaded on first use and kept fresh (see the module docs).
#[derive(Debug)]
struct DirectoryCache {
    current: RwLock<Option<Arc<Directory>>>,
    /// One reload at a time, so a slow reload cannot replace a newer copy.
    reloading: tokio::sync::Mutex<()>,
    polling: AtomicBool,
    /// When the copy was last known to be current (loaded, or its version checked), as a
    /// monotonic instant and as unix milliseconds (for reporting).
    confirmed: Mutex<Option<(Instant, i64)>>,
    /// Past this long without a confirmation the copy is not used.
    max_stale: Duration,
    /// Whether the poller has already logged that the copy went stale (logged once per episode).
    reported_stale: AtomicBool,
    /// How often the poller checks the change counter.
    poll_every: Duration,
}

impl DirectoryCache {
    pub fn new(max_stale: Duration, poll_every: Duration) -> Self {
        Self {
            current: RwLock::default(),
            reloading: tokio::sync::Mutex::default(),
            polling: AtomicBool::default(),
            confirmed: Mutex::default(),
            max_stale,
            reported_stale: AtomicBool::default(),
            poll_every,
        }
    }

    /// The current copy; the first call loads it and starts polling for outside changes. Fails
    /// with `DirectoryStale` while the copy is too old to trust.
    pub async fn get(self: &Arc<Self>, source: &Source) -> Result<Arc<Directory>, StoreError> {
        if let Some(current) = self.loaded() {
            if let Some(since_ms) = self.stale_since() {
                return Err(StoreError::DirectoryStale { since_ms });
            }
            return Ok(current);
        }
        let directory = self.reload(source).await?;
        if !self.polling.swap(true, Ordering::Relaxed) {
            tokio::spawn(poll(Arc::downgrade(self), source.clone()));
        }
        Ok(directory)
    }

    /// Called after this process wrote to what the directory holds: brings the copy, if there is
    /// one, up to date before the write returns (a write that changed nothing costs no reload).
    /// A failure drops the copy, so the next read loads it again rather than trusting an old one.
    pub async fn changed(&self, source: &Source) {
        if let Err(error) = self.refresh(source).await {
            tracing::warn!(%error, "cannot reload sites and keys after a change; will load them on next use");
            *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
    }

    /// When the copy was last confirmed current (unix ms), if that is longer ago than the
    /// maximum staleness; `None` while it is fresh (or before it is first loaded).
    pub fn stale_since(&self) -> Option<i64> {
        let confirmed = *self.confirmed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (at, unix_ms) = confirmed?;
        (at.elapsed() > self.max_stale).then_some(unix_ms)
    }

    fn confirm(&self) {
        let now = (Instant::now(), crate::time::unix_now_ms());
        *self.confirmed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(now);
    }

    /// Reloads the copy if the change counter moved since it was loaded; nothing before the
    /// first load. Either way, a success confirms the copy is current.
    async fn refresh(&self, source: &Source) -> Result<(), StoreError> {
        let Some(held) = self.loaded().map(|directory| directory.version) else { return Ok(()) };
        if source.version().await? != held {
            self.reload(source).await?;
        }
        self.confirm();
        Ok(())
    }

    fn loaded(&self) -> Option<Arc<Directory>> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Loads a fresh copy and makes it current unless a newer one got there first.
    async fn reload(&self, source: &Source) -> Result<Arc<Directory>, StoreError> {
        let _one_at_a_time = self.reloading.lock().await;
        let fresh = Arc::new(source.load().await?);
        self.confirm();
        let mut current = self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        match current.as_ref() {
            Some(newer) if newer.version > fresh.version => Ok(Arc::clone(newer)),
            _ => {
                *current = Some(Arc::clone(&fresh));
                Ok(fresh)
            }
        }
    }
}

/// Reloads the copy whenever the change counter moved, until the cache is dropped: it checks the
/// counter at every poll, and at once when the engine announces a change.
async fn poll(cache: Weak<DirectoryCache>, source: Source) {
    let Some(poll_every) = cache.upgrade().map(|cache| cache.poll_every) else { return };
    let mut changes = source.0.directory_changes();
    let mut every = tokio::time::interval(poll_every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = announced(&mut changes) => every.reset(),
        }
        let Some(cache) = cache.upgrade() else { return };
        match cache.refresh(&source).await {
            Ok(()) => {
                if cache.reported_stale.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        "sites and keys are checked against the database again; keys are accepted again"
                    );
                }
            }
            Err(error) => match cache.stale_since() {
                Some(since_ms) if !cache.reported_stale.swap(true, Ordering::Relaxed) => {
                    tracing::error!(
                        %error,
                        since = %crate::rfc3339(since_ms / 1000),
                        "cannot check sites and keys for changes for longer than \
                         database.directory_max_stale_ms; refusing keys until it can"
                    );
                }
                Some(_) => {}
                None => {
                    tracing::warn!(%error, "cannot check sites and keys for changes; keeping the copy in memory");
                }
            },
        }
    }
}

/// Resolves when the engine announces a change; never for an engine that announces none, or
/// whose announcements have stopped.
async fn announced(changes: &mut Option<tokio::sync::watch::Receiver<()>>) {
    if let Some(receiver) = changes
        && receiver.changed().await.is_err()
    {
        *changes = None;
    }
    if changes.is_none() {
        std::future::pending::<()>().await;
    }
}

/// An engine with the directory in front of it: the per-request lookups are answered from
/// memory, and every write to sites, origins or keys made through it reloads the copy before it
/// returns. Everything else goes to the engine as it is.
#[derive(Debug)]
pub struct Cached {
    engine: Source,
    cache: Arc<DirectoryCache>,
}

impl Cached {
    /// `engine` behind a directory that refuses keys once it could not be checked against the
    /// database for `max_stale` (`database.directory_max_stale_ms`).
    pub fn new(engine: impl Store, max_stale: Duration) -> Self {
        Self::polling_every(engine, max_stale, POLL)
    }

    /// As [`Cached::new`], polling the change counter every `poll_every` instead of every 250 ms.
    /// With an engine that announces changes the poll is only the backstop (a test sets it to
    /// hours to see the announcements alone at work).
    pub fn polling_every(engine: impl Store, max_stale: Duration, poll_every: Duration) -> Self {
        let cache = DirectoryCache::new(max_stale, poll_every);
        Self { engine: Source(Arc::new(engine)), cache: Arc::new(cache) }
    }

    fn engine(&self) -> &dyn Store {
        self.engine.0.as_ref()
    }

    async fn directory(&self) -> Result<Arc<Directory>, StoreError> {
        self.cache.get(&self.engine).await
    }

    /// After a write to what the directory holds.
    async fn changed<T>(&self, written: Result<T, StoreError>) -> Result<T, StoreError> {
        if written.is_ok() {
            self.cache.changed(&self.engine).await;
        }
        written
    }
}

/// Conversations are not in the directory: every call goes to the engine.
#[async_trait]
impl Conversations for Cached {
    async fn record_turns(&self, turns: &[Turn]) -> Result<(), StoreError> {
        self.engine().record_turns(turns).await
    }

    async fn add_message(&self, message: &NewMessage) -> Result<Option<Message>, StoreError> {
        self.engine().add_message(message).await
    }

    async fn set_holder(&self, id: &str, holder: Holder, at_ms: i64) -> Result<bool, StoreError> {
        self.engine().set_holder(id, holder, at_ms).await
    }

    async fn open_conversation(
        &self,
        id: &str,
        site_id: &str,
        visitor: Option<&str>,
        page_url: Option<&str>,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        self.engine().open_conversation(id, site_id, visitor, page_url, at_ms).await
    }

    async fn conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        self.engine().conversation(id).await
    }

    async fn messages(
        &self,
        id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError> {
        self.engine().messages(id, after_seq, limit).await
    }

    async fn list_conversations(
        &self,
        filter: &ConversationFilter,
    ) -> Result<Vec<Conversation>, StoreError> {
        self.engine().list_conversations(filter).await
    }

    async fn record_feedback(&self, feedback: &Feedback) -> Result<(), StoreError> {
        self.engine().record_feedback(feedback).await
    }

    async fn delete_conversation(&self, id: &str) -> Result<bool, StoreError> {
        self.engine().delete_conversation(id).await
    }

    async fn delete_visitor(
        &self,
        visitor: &str,
        site_id: Option<&str>,
    ) -> Result<u64, StoreError> {
        self.engine().delete_visitor(visitor, site_id).await
    }

    async fn prune_conversations(&self, site_id: &str, before_ms: i64) -> Result<u64, StoreError> {
        self.engine().prune_conversations(site_id, before_ms).await
    }
}

#[async_trait]
impl Knowledge for Cached {
    async fn put_document(
        &self,
        document: &NewDocument,
        caps: KnowledgeCaps,
    ) -> Result<PutOutcome, StoreError> {
        self.engine().put_document(document, caps).await
    }

    async fn knowledge_documents(
        &self,
        site_id: &str,
    ) -> Result<Vec<KnowledgeDocument>, StoreError> {
        self.engine().knowledge_documents(site_id).await
    }

    async fn remove_document(&self, site_id: &str, id: i64) -> Result<bool, StoreError> {
        self.engine().remove_document(site_id, id).await
    }

    async fn site_passages(&self, site_id: &str) -> Result<Vec<Passage>, StoreError> {
        self.engine().site_passages(site_id).await
    }

    async fn passages(&self, site_id: &str, ids: &[i64]) -> Result<Vec<Passage>, StoreError> {
        self.engine().passages(site_id, ids).await
    }

    async fn knowledge_versions(&self) -> Result<Vec<KnowledgeVersion>, StoreError> {
        self.engine().knowledge_versions().await
    }

    async fn put_embeddings(
        &self,
        site_id: &str,
        model: &str,
        embeddings: &[PassageEmbedding],
    ) -> Result<u64, StoreError> {
        self.engine().put_embeddings(site_id, model, embeddings).await
    }

    async fn site_embeddings(
        &self,
        site_id: &str,
        model: &str,
    ) -> Result<Vec<PassageEmbedding>, StoreError> {
        self.engine().site_embeddings(site_id, model).await
    }

    async fn passages_without_embedding(
        &self,
        site_id: &str,
        model: &str,
        limit: usize,
    ) -> Result<Vec<Passage>, StoreError> {
        self.engine().passages_without_embedding(site_id, model, limit).await
    }
}

#[async_trait]
impl Store for Cached {
    async fn site_by_key(
        &self,
        lookup_id: &str,
        now: i64,
    ) -> Result<Option<SiteCredentials>, StoreError> {
        Ok(self.directory().await?.site_by_key(lookup_id, now))
    }

    async fn api_key_by_lookup(
        &self,
        lookup_id: &str,
        now: i64,
    ) -> Result<Option<ApiKeyCredentials>, StoreError> {
        Ok(self.directory().await?.api_key_by_lookup(lookup_id, now))
    }

    async fn origin_is_registered(&self, origin: &str) -> Result<bool, StoreError> {
        Ok(self.directory().await?.origin_is_registered(origin))
    }

    fn directory_stale_since(&self) -> Option<i64> {
        self.cache.stale_since()
    }

    async fn directory_version(&self) -> Result<i64, StoreError> {
        self.engine().directory_version().await
    }

    fn directory_changes(&self) -> Option<tokio::sync::watch::Receiver<()>> {
        self.engine().directory_changes()
    }

    async fn load_directory(&self) -> Result<Directory, StoreError> {
        self.engine().load_directory().await
    }

    // Writes to what the directory holds.

    async fn create_site(&self, site: NewSite) -> Result<Site, StoreError> {
        self.changed(self.engine().create_site(site).await).await
    }

    async fn delete_site(&self, id: &str) -> Result<bool, StoreError> {
        self.changed(self.engine().delete_site(id).await).await
    }

    async fn rekey_site(
        &self,
        id: &str,
        lookup_id: &str,
        key_hash: &[u8; 32],
        previous_expires_at: Option<i64>,
    ) -> Result<bool, StoreError> {
        let written = self.engine().rekey_site(id, lookup_id, key_hash, previous_expires_at).await;
        self.changed(written).await
    }

    async fn set_site_widget(&self, id: &str, widget: &SiteWidget) -> Result<bool, StoreError> {
        self.changed(self.engine().set_site_widget(id, widget).await).await
    }

    async fn set_site_limits(
        &self,
        id: &str,
        limits: &crate::CallerLimits,
        visitor_limits: &VisitorLimits,
    ) -> Result<bool, StoreError> {
        self.changed(self.engine().set_site_limits(id, limits, visitor_limits).await).await
    }

    async fn set_site_client_instructions(
        &self,
        id: &str,
        value: Option<crate::ClientInstructions>,
    ) -> Result<bool, StoreError> {
        self.changed(self.engine().set_site_client_instructions(id, value).await).await
    }

    async fn set_site_grounding(
        &self,
        id: &str,
        grounding: crate::Grounding,
    ) -> Result<bool, StoreError> {
        self.changed(self.engine().set_site_grounding(id, grounding).await).await
    }

    async fn set_site_verification(
        &self,
        id: &str,
        verification: &Verification,
    ) -> Result<bool, StoreError> {
        self.changed(self.engine().set_site_verification(id, verification).await).await
    }

    async fn set_site_origins(&self, id: &str, origins: &[String]) -> Result<bool, StoreError> {
        self.changed(self.engine().set_site_origins(id, origins).await).await
    }

    async fn set_site_conversations(
        &self,
        id: &str,
        settings: &ConversationSettings,
    ) -> Result<bool, StoreError> {
        self.changed(self.engine().set_site_conversations(id, settings).await).await
    }

    async fn create_api_key(&self, key: NewApiKey) -> Result<ApiKey, StoreError> {
        self.changed(self.engine().create_api_key(key).await).await
    }

    async fn rotate_api_key(
        &self,
        id: &str,
        lookup_id: &str,
        key_hash: &[u8; 32],
        previous_expires_at: i64,
    ) -> Result<Option<ApiKey>, StoreError> {
        let written = self.engine().rotate_api_key(id, lookup_id, key_hash, previous_expires_at);
        self.changed(written.await).await
    }

    async fn revoke_api_key(&self, id: &str, at: i64) -> Result<bool, StoreError> {
        self.changed(self.engine().revoke_api_key(id, at).await).await
    }

    // Everything else, as the engine does it.

    async fn list_sites(&self) -> Result<Vec<Site>, StoreError> {
        self.engine().list_sites().await
    }

    async fn site(&self, id: &str) -> Result<Option<Site>, StoreError> {
        self.engine().site(id).await
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        self.engine().list_api_keys().await
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        self.engine().api_key(id).await
    }

    async fn touch_api_keys(&self, used: &[(String, i64)]) -> Result<(), StoreError> {
        self.engine().touch_api_keys(used).await
    }

    async fn record_usage(&self, records: &[UsageRecord]) -> Result<(), StoreError> {
        self.engine().record_usage(records).await
    }

    async fn recover_usage(&self, records: &[UsageRecord]) -> Result<u64, StoreError> {
        self.engine().recover_usage(records).await
    }

    async fn settle_pending_usage(&self) -> Result<u64, StoreError> {
        self.engine().settle_pending_usage().await
    }

    async fn prune_usage(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.engine().prune_usage(before_ms).await
    }

    async fn usage_since(
        &self,
        since_ms: i64,
        site_id: Option<&str>,
        key_id: Option<&str>,
    ) -> Result<Vec<UsageRecord>, StoreError> {
        self.engine().usage_since(since_ms, site_id, key_id).await
    }

    async fn usage_totals(
        &self,
        since_ms: i64,
        site_id: Option<&str>,
        key_id: Option<&str>,
    ) -> Result<Vec<UsageGroup>, StoreError> {
        self.engine().usage_totals(since_ms, site_id, key_id).await
    }

    async fn relay_secret(&self, name: &str, len: usize) -> Result<Vec<u8>, StoreError> {
        self.engine().relay_secret(name, len).await
    }

    async fn revoke_console_session(
        &self,
        id: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        self.engine().revoke_console_session(id, expires_at, now).await
    }

    async fn console_session_revoked(&self, id: &str) -> Result<bool, StoreError> {
        self.engine().console_session_revoked(id).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.engine().ping().await
    }

    async fn add_webhook_events(&self, events: &[WebhookEvent]) -> Result<(), StoreError> {
        self.engine().add_webhook_events(events).await
    }

    async fn undispatched_webhook_events(
        &self,
        limit: u32,
    ) -> Result<Vec<WebhookEvent>, StoreError> {
        self.engine().undispatched_webhook_events(limit).await
    }

    async fn dispatch_webhook_event(
        &self,
        event_id: &str,
        deliveries: &[NewWebhookDelivery],
        due_ms: i64,
    ) -> Result<bool, StoreError> {
        self.engine().dispatch_webhook_event(event_id, deliveries, due_ms).await
    }

    async fn webhook_delivered(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        self.engine().webhook_delivered(id, at_ms).await
    }

    async fn webhook_attempt_failed(
        &self,
        id: &str,
        error: &str,
        at_ms: i64,
        retry_at_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        self.engine().webhook_attempt_failed(id, error, at_ms, retry_at_ms).await
    }

    async fn webhook_deliveries(&self, limit: u32) -> Result<Vec<WebhookDelivery>, StoreError> {
        self.engine().webhook_deliveries(limit).await
    }

    async fn redeliver_webhook(
        &self,
        id: &str,
        due_ms: i64,
    ) -> Result<Option<WebhookDelivery>, StoreError> {
        self.engine().redeliver_webhook(id, due_ms).await
    }

    async fn prune_webhook_events(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.engine().prune_webhook_events(before_ms).await
    }

    async fn claim_webhook_deliveries_to(
        &self,
        endpoint: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        self.engine().claim_webhook_deliveries_to(endpoint, now_ms, lease_until_ms, limit).await
    }

    async fn give_up_webhook_deliveries_except(
        &self,
        endpoints: &[String],
        error: &str,
        at_ms: i64,
    ) -> Result<u64, StoreError> {
        self.engine().give_up_webhook_deliveries_except(endpoints, error, at_ms).await
    }

    async fn webhook_backlog(&self) -> Result<u64, StoreError> {
        self.engine().webhook_backlog().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CallerLimits, Scope};

    fn key(lookup: &str, previous: Option<(&str, i64)>) -> StoredKey {
        StoredKey {
            key: ApiKey {
                id: format!("key_{lookup}"),
                name: lookup.into(),
                lookup_id: lookup.into(),
                scopes: vec![Scope::Chat],
                models: vec![],
                limits: CallerLimits::default(),
                created_at: 0,
                last_used_at: None,
                revoked_at: None,
                previous_lookup_id: previous.map(|(l, _)| l.to_owned()),
                previous_expires_at: previous.map(|(_, t)| t),
            },
            key_hash: vec![1],
            previous_key_hash: previous.map(|_| vec![2]),
        }
    }

    #[test]
    fn a_previous_secret_works_until_it_expires_and_returns_its_own_hash() {
        let directory = Directory::new(1, [], [key("new", Some(("old", 100)))]);
        let current = directory.api_key_by_lookup("new", 1_000).unwrap();
        assert_eq!((current.key.id.as_str(), current.key_hash), ("key_new", vec![1]));
        let previous = directory.api_key_by_lookup("old", 99).unwrap();
        assert_eq!((previous.key.id.as_str(), previous.key_hash), ("key_new", vec![2]));
        assert!(directory.api_key_by_lookup("old", 100).is_none());
        assert!(directory.api_key_by_lookup("other", 0).is_none());
    }

    fn site(lookup: &str, previous: Option<(&str, i64)>) -> StoredSite {
        StoredSite {
            site: Site {
                id: format!("site_{lookup}"),
                key_lookup_id: lookup.into(),
                settings: crate::SiteSettings {
                    name: lookup.into(),
                    allow_no_origin: true,
                    ..Default::default()
                },
                is_demo: false,
                verification: crate::Verification::default(),
                created_at: 0,
                previous_key_lookup_id: previous.map(|(l, _)| l.to_owned()),
                previous_key_expires_at: previous.map(|(_, t)| t),
            },
            key_hash: vec![1],
            previous_key_hash: previous.map(|_| vec![2]),
        }
    }

    #[test]
    fn a_previous_site_key_works_until_it_expires_and_returns_its_own_hash() {
        let directory = Directory::new(1, [site("new", Some(("old", 100)))], []);
        let current = directory.site_by_key("new", 1_000).unwrap();
        assert_eq!((current.site.id.as_str(), current.key_hash), ("site_new", vec![1]));
        let previous = directory.site_by_key("old", 99).unwrap();
        assert_eq!((previous.site.id.as_str(), previous.key_hash), ("site_new", vec![2]));
        assert!(directory.site_by_key("old", 100).is_none());
    }

    #[test]
    fn a_current_site_key_wins_over_an_expiring_one_with_the_same_lookup_id() {
        let directory = Directory::new(1, [site("a", Some(("b", 100))), site("b", None)], []);
        assert_eq!(directory.site_by_key("b", 0).unwrap().site.id, "site_b");
    }

    #[test]
    fn assembled_sites_get_their_own_origins_in_order() {
        let origins = [("site_a", "https://a.example"), ("site_b", "https://b.example")]
            .into_iter()
            .chain([("site_a", "https://www.a.example")])
            .map(|(site, origin)| (site.to_owned(), origin.to_owned()));
        let directory = Directory::assemble(
            7,
            vec![site("a", None), site("b", None), site("c", None)],
            origins,
            vec![],
        );
        let origins_of =
            |lookup: &str| directory.site_by_key(lookup, 0).unwrap().site.settings.origins.clone();
        assert_eq!(origins_of("a"), ["https://a.example", "https://www.a.example"]);
        assert_eq!(origins_of("b"), ["https://b.example"]);
        assert!(origins_of("c").is_empty());
        assert!(directory.origin_is_registered("https://www.a.example"));
    }

    #[test]
    fn a_current_secret_wins_over_an_expiring_one_with_the_same_lookup_id() {
        let directory = Directory::new(1, [], [key("a", Some(("b", 100))), key("b", None)]);
        assert_eq!(directory.api_key_by_lookup("b", 0).unwrap().key.id, "key_b");
    }
}
