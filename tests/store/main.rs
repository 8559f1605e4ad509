//! The store contract: what every storage engine must do, run against each engine through
//! `confab_server::store::open` (so with the in-memory directory in front, as the relay uses
//! it). Each test is written once and instantiated per engine by `contract!`; PostgreSQL runs on
//! the test binary's real server (`confab_tests::servers::postgres`), a fresh database per test.
//!
//! Every test runs on PostgreSQL over TLS too (`postgres_tls`: `sslmode=verify-full` with the
//! test's own authority, on a server that refuses connections without TLS); `tls` holds what
//! the URL's `sslmode` and `sslrootcert` must do. `postgres_only` holds what only an engine
//! shared by several relays has to do.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use confab_server::config::DatabaseConfig;
use confab_server::sitekey::{KeyKind, NewKey};
use confab_server::store::{
    CallerLimits, ClientInstructions, Engine, Grounding, NewApiKey, NewSite, NewWebhookDelivery,
    Outcome, Scope, SiteSettings, SiteWidget, Store, TokenMode, UsageGroup, UsageRecord,
    Verification, VisitorLimits, WebhookDelivery, WebhookEvent,
};
use confab_tests::WAIT;

mod conversations;
use conversations::*;
mod knowledge;
use knowledge::*;

/// A fresh database of one engine; each `open` is another independent store on it (as another
/// relay or the CLI would be).
struct Database {
    url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Database {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        Self { url, _dir: Some(dir) }
    }

    fn postgres() -> Self {
        Self { url: confab_tests::servers::postgres().database(), _dir: None }
    }

    /// A database of the server that speaks TLS only, reached as a relay on a managed database
    /// would be: the certificate's chain and host name verified against the server's authority.
    fn postgres_tls() -> Self {
        let server = confab_tests::servers::postgres_with_tls();
        let query =
            format!("sslmode=verify-full&sslrootcert={}", server.certificates().ca.display());
        Self { url: server.database_at("localhost", &query), _dir: None }
    }

    fn engine(&self) -> Engine {
        Engine::of(&self.url).unwrap()
    }

    async fn open(&self) -> Arc<dyn Store> {
        let config = DatabaseConfig { url: self.url.clone(), ..DatabaseConfig::default() };
        confab_server::store::open(&config).await.unwrap()
    }
}

/// Instantiates each named test (an `async fn(Database)`) once per engine.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Database::sqlite()).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Database::postgres()).await
                }
            )*
        }
        mod postgres_tls {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Database::postgres_tls()).await
                }
            )*
        }
    };
}

contract!(
    a_created_site_reads_back_identically,
    deleting_a_site_removes_its_origins,
    every_site_setting_reads_back_as_it_was_set,
    a_site_keeps_its_origins_in_order_and_each_once,
    a_change_made_through_the_store_is_seen_by_its_next_lookup,
    a_key_with_every_scope_reads_back_with_every_scope,
    a_change_made_by_another_process_is_seen_after_a_poll,
    a_change_made_by_another_process_is_announced_by_an_engine_that_listens,
    recording_when_a_key_was_used_does_not_count_as_a_change,
    a_key_is_last_used_at_the_latest_time_recorded,
    a_revoked_key_can_be_neither_rotated_nor_revoked_again,
    a_rekeyed_site_keeps_its_previous_key_only_for_its_grace_period,
    a_relay_secret_is_made_once_and_then_kept,
    a_logged_out_console_session_is_refused_through_every_store_until_it_expires,
    usage_records_written_together_read_back_identically_and_in_order,
    pending_usage_left_by_a_crash_is_settled_as_interrupted,
    usage_totals_are_summed_per_utc_day_caller_and_model,
    usage_totals_come_from_the_daily_rollup_and_outlive_pruned_records,
    recovery_records_only_the_requests_a_crashed_run_did_not,
    the_same_request_id_twice_is_two_records,
    a_webhook_event_is_dispatched_once_and_its_delivery_is_leased_while_attempted,
    failed_webhook_attempts_are_retried_until_delivered_or_given_up,
    a_webhook_claim_for_one_endpoint_leaves_the_others_deliveries_due,
    deliveries_to_endpoints_no_longer_configured_are_given_up,
    the_webhook_backlog_counts_each_event_still_to_deliver_once,
    pruning_keeps_webhook_events_with_deliveries_still_to_make,
    an_event_dispatched_by_two_stores_at_once_gets_its_deliveries_once,
    concurrent_claims_from_two_stores_never_return_the_same_delivery,
    a_sites_conversation_settings_read_back_as_set,
    turns_make_a_conversation_with_its_cost_and_feedback,
    a_person_takes_over_and_hands_back,
    conversations_are_listed_newest_first_filtered_and_paged,
    deleting_conversations_takes_their_messages_and_feedback,
    a_document_reads_back_with_its_passages_in_order,
    putting_a_source_again_replaces_it_and_the_same_content_changes_nothing,
    a_document_past_the_caps_is_refused_and_changes_nothing,
    removing_a_document_or_its_site_takes_its_passages,
    two_relays_adding_at_once_both_respect_the_caps,
    embeddings_read_back_exactly_and_by_their_model_only,
    passages_without_an_embedding_are_listed_in_order_up_to_the_limit,
    embeddings_of_unknown_or_another_sites_passages_are_skipped,
    a_put_of_embeddings_that_do_not_fit_together_is_refused_whole,
    embeddings_go_with_their_passages_document_and_site,
    a_large_put_of_embeddings_is_stored_whole,
);

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

fn new_key(key: &NewKey) -> NewApiKey {
    NewApiKey {
        name: "backend".into(),
        scopes: vec![Scope::Chat],
        models: vec![],
        limits: CallerLimits::default(),
        lookup_id: key.lookup_id.clone(),
        key_hash: key.hash,
    }
}

async fn a_created_site_reads_back_identically(db: Database) {
    let store = db.open().await;
    let key = NewKey::generate(KeyKind::Site);
    let created = store.create_site(new_site(&key)).await.unwrap();
    assert_eq!(store.site(&created.id).await.unwrap(), Some(created.clone()));
    let found = store.site_by_key(&key.lookup_id, 0).await.unwrap().unwrap();
    assert_eq!(*found.site, created);
    assert_eq!(found.key_hash, key.hash);
    assert!(store.origin_is_registered("https://www.shop.example").await.unwrap());
    assert!(!store.origin_is_registered("https://evil.example").await.unwrap());
}

async fn deleting_a_site_removes_its_origins(db: Database) {
    let store = db.open().await;
    let created = store.create_site(new_site(&NewKey::generate(KeyKind::Site))).await.unwrap();
    assert!(store.delete_site(&created.id).await.unwrap());
    assert!(!store.delete_site(&created.id).await.unwrap());
    assert!(!store.origin_is_registered("https://shop.example").await.unwrap());
    assert!(store.list_sites().await.unwrap().is_empty());
}

/// Every scope's name (`tools` included, which came later than the others) is stored and read
/// back by each engine, by another store too (as another relay or the CLI would read it).
async fn a_key_with_every_scope_reads_back_with_every_scope(db: Database) {
    let store = db.open().await;
    let secret = NewKey::generate(KeyKind::Secret);
    let spec = NewApiKey { scopes: Scope::ALL.to_vec(), ..new_key(&secret) };
    let created = store.create_api_key(spec).await.unwrap();
    assert_eq!(created.scopes, Scope::ALL);
    let other = db.open().await;
    let found = other.api_key_by_lookup(&secret.lookup_id, 0).await.unwrap().unwrap();
    assert_eq!(found.key.scopes, Scope::ALL);
    assert!(found.key.has_scope(Scope::Tools));
}

async fn a_change_made_through_the_store_is_seen_by_its_next_lookup(db: Database) {
    let store = db.open().await;
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

async fn a_change_made_by_another_process_is_seen_after_a_poll(db: Database) {
    let relay = db.open().await;
    let cli = db.open().await;
    let secret = NewKey::generate(KeyKind::Secret);
    let key = cli.create_api_key(new_key(&secret)).await.unwrap();
    // The relay loads its copy after the key exists, and holds it.
    assert!(relay.api_key_by_lookup(&secret.lookup_id, 0).await.unwrap().is_some());
    let site_key = NewKey::generate(KeyKind::Site);
    cli.create_site(new_site(&site_key)).await.unwrap();
    assert!(cli.revoke_api_key(&key.id, 5).await.unwrap());
    // Until the relay's next poll, it may still answer from its copy; after it, not.
    let waited = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let revoked = relay.api_key_by_lookup(&secret.lookup_id, 0).await.unwrap().is_none();
            let site = relay.site_by_key(&site_key.lookup_id, 0).await.unwrap().is_some();
            if revoked && site {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "the relay never saw the other process's changes");
}

async fn recording_when_a_key_was_used_does_not_count_as_a_change(db: Database) {
    let store = db.open().await;
    let key = store.create_api_key(new_key(&NewKey::generate(KeyKind::Secret))).await.unwrap();
    let before = store.directory_version().await.unwrap();
    store.touch_api_keys(&[(key.id.clone(), 42)]).await.unwrap();
    assert_eq!(store.directory_version().await.unwrap(), before);
    assert!(store.revoke_api_key(&key.id, 43).await.unwrap());
    assert!(store.directory_version().await.unwrap() > before);
}

async fn every_site_setting_reads_back_as_it_was_set(db: Database) {
    let store = db.open().await;
    let site = store.create_site(new_site(&NewKey::generate(KeyKind::Site))).await.unwrap();
    let widget = SiteWidget {
        title: None,
        greeting: Some("Hello, \"ü\"".into()),
        suggestions: Some(vec![]),
        primary_color: Some("#fff".into()),
    };
    let limits = CallerLimits {
        rpm: Some(u32::MAX),
        rpd: Some(0),
        tpm: None,
        monthly_budget_micros: Some(i64::MAX as u64),
        daily_budget_micros: Some(1),
    };
    let visitor_limits =
        VisitorLimits { rpm: Some(1), rpd: None, verified_rpm: Some(3), verified_rpd: Some(4) };
    let verification =
        Verification { secret: Some("ab".repeat(32)), required: true, mode: TokenMode::Jwt };
    assert!(store.set_site_widget(&site.id, &widget).await.unwrap());
    assert!(store.set_site_limits(&site.id, &limits, &visitor_limits).await.unwrap());
    let instructions = Some(ClientInstructions::Reject);
    assert!(store.set_site_client_instructions(&site.id, instructions).await.unwrap());
    assert!(store.set_site_verification(&site.id, &verification).await.unwrap());
    assert_eq!(site.settings.grounding, Grounding::Prefer, "the default");
    assert!(store.set_site_grounding(&site.id, Grounding::Strict).await.unwrap());

    let mut expected = site.clone();
    expected.settings.widget = widget.clone();
    expected.settings.limits = limits;
    expected.settings.visitor_limits = visitor_limits;
    expected.settings.client_instructions = instructions;
    expected.settings.grounding = Grounding::Strict;
    expected.verification = verification.clone();
    assert_eq!(store.site(&site.id).await.unwrap().as_ref(), Some(&expected));
    assert_eq!(store.list_sites().await.unwrap(), [expected.clone()]);
    let found = store.site_by_key(&site.key_lookup_id, 0).await.unwrap().unwrap();
    assert_eq!(*found.site, expected);

    // Back to the defaults.
    assert!(store.set_site_client_instructions(&site.id, None).await.unwrap());
    assert_eq!(store.site(&site.id).await.unwrap().unwrap().settings.client_instructions, None);

    let missing = "site_missing";
    assert!(!store.set_site_widget(missing, &widget).await.unwrap());
    assert!(!store.set_site_limits(missing, &limits, &visitor_limits).await.unwrap());
    assert!(!store.set_site_client_instructions(missing, instructions).await.unwrap());
    assert!(!store.set_site_verification(missing, &verification).await.unwrap());
    assert!(!store.set_site_grounding(missing, Grounding::Strict).await.unwrap());
    assert!(!store.set_site_origins(missing, &[]).await.unwrap());
    assert!(store.site(missing).await.unwrap().is_none());
    assert_eq!(store.list_sites().await.unwrap().len(), 1);
}

async fn a_site_keeps_its_origins_in_order_and_each_once(db: Database) {
    let store = db.open().await;
    let key = NewKey::generate(KeyKind::Site);
    let mut site = new_site(&key);
    site.settings.origins =
        ["https://b.example", "https://a.example", "https://b.example"].map(String::from).to_vec();
    let site = store.create_site(site).await.unwrap();
    let origins = |site: Option<confab_server::store::Site>| site.unwrap().settings.origins;
    assert_eq!(
        origins(store.site(&site.id).await.unwrap()),
        ["https://b.example", "https://a.example"]
    );

    let replaced =
        ["https://c.example", "https://a.example", "https://a.example"].map(String::from);
    assert!(store.set_site_origins(&site.id, &replaced).await.unwrap());
    assert_eq!(
        origins(store.site(&site.id).await.unwrap()),
        ["https://c.example", "https://a.example"]
    );
    let found = store.site_by_key(&key.lookup_id, 0).await.unwrap().unwrap();
    assert_eq!(found.site.settings.origins, ["https://c.example", "https://a.example"]);
    assert!(!store.origin_is_registered("https://b.example").await.unwrap());
}

async fn a_change_made_by_another_process_is_announced_by_an_engine_that_listens(db: Database) {
    let relay = db.open().await;
    let cli = db.open().await;
    let changes = relay.directory_changes();
    assert_eq!(
        changes.is_some(),
        db.engine() == Engine::Postgres,
        "PostgreSQL announces changes (NOTIFY); SQLite is only polled"
    );
    let Some(mut changes) = changes else { return };
    // The listener ticks once it listens (whatever changed while it connected); after that, only
    // a notification makes it tick.
    tokio::time::timeout(WAIT, changes.changed()).await.unwrap().unwrap();
    cli.create_api_key(new_key(&NewKey::generate(KeyKind::Secret))).await.unwrap();
    let announced = tokio::time::timeout(WAIT, changes.changed()).await;
    assert!(announced.is_ok_and(|listening| listening.is_ok()), "the change was never announced");
}

async fn a_key_is_last_used_at_the_latest_time_recorded(db: Database) {
    let store = db.open().await;
    let key = store.create_api_key(new_key(&NewKey::generate(KeyKind::Secret))).await.unwrap();
    let last_used = async || store.api_key(&key.id).await.unwrap().unwrap().last_used_at;
    store.touch_api_keys(&[]).await.unwrap();
    assert_eq!(last_used().await, None);
    store.touch_api_keys(&[(key.id.clone(), 42), (key.id.clone(), 7)]).await.unwrap();
    assert_eq!(last_used().await, Some(42));
    store.touch_api_keys(&[(key.id.clone(), 10)]).await.unwrap();
    assert_eq!(last_used().await, Some(42), "an older time never goes back");
    store.touch_api_keys(&[(key.id.clone(), 50), ("key_missing".into(), 1)]).await.unwrap();
    assert_eq!(last_used().await, Some(50));
    assert_eq!(store.list_api_keys().await.unwrap()[0].last_used_at, Some(50));
}

async fn a_revoked_key_can_be_neither_rotated_nor_revoked_again(db: Database) {
    let store = db.open().await;
    let first = NewKey::generate(KeyKind::Secret);
    let key = store.create_api_key(new_key(&first)).await.unwrap();
    assert_eq!(store.api_key(&key.id).await.unwrap().as_ref(), Some(&key));
    let second = NewKey::generate(KeyKind::Secret);
    let rotated =
        store.rotate_api_key(&key.id, &second.lookup_id, &second.hash, 1_000).await.unwrap();
    let expected = confab_server::store::ApiKey {
        lookup_id: second.lookup_id.clone(),
        previous_lookup_id: Some(first.lookup_id.clone()),
        previous_expires_at: Some(1_000),
        ..key.clone()
    };
    assert_eq!(rotated.as_ref(), Some(&expected));
    assert_eq!(store.list_api_keys().await.unwrap(), std::slice::from_ref(&expected));

    assert!(store.revoke_api_key(&key.id, 5).await.unwrap());
    assert!(!store.revoke_api_key(&key.id, 6).await.unwrap());
    let third = NewKey::generate(KeyKind::Secret);
    assert_eq!(
        store.rotate_api_key(&key.id, &third.lookup_id, &third.hash, 9).await.unwrap(),
        None
    );
    let revoked = store.api_key(&key.id).await.unwrap().unwrap();
    assert_eq!(revoked, confab_server::store::ApiKey { revoked_at: Some(5), ..expected });
    assert!(!revoked.is_active());
    assert!(!store.revoke_api_key("key_missing", 5).await.unwrap());
    assert_eq!(store.rotate_api_key("key_missing", "x", &third.hash, 9).await.unwrap(), None);
}

async fn a_rekeyed_site_keeps_its_previous_key_only_for_its_grace_period(db: Database) {
    let store = db.open().await;
    let old = NewKey::generate(KeyKind::Site);
    let site = store.create_site(new_site(&old)).await.unwrap();
    let new = NewKey::generate(KeyKind::Site);
    assert!(store.rekey_site(&site.id, &new.lookup_id, &new.hash, Some(1_000)).await.unwrap());
    let stored = store.site(&site.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.key_lookup_id.as_str(), stored.previous_key_lookup_id.as_deref()),
        (new.lookup_id.as_str(), Some(old.lookup_id.as_str()))
    );
    assert_eq!(stored.previous_key_expires_at, Some(1_000));
    let hash_at = async |key: &NewKey, now: i64| {
        store.site_by_key(&key.lookup_id, now).await.unwrap().map(|found| found.key_hash)
    };
    assert_eq!(hash_at(&old, 999).await, Some(old.hash.to_vec()));
    assert_eq!(hash_at(&old, 1_000).await, None);
    assert_eq!(hash_at(&new, 5_000).await, Some(new.hash.to_vec()));

    // Without a grace period the current key stops at once, and the previous one with it.
    let newest = NewKey::generate(KeyKind::Site);
    assert!(store.rekey_site(&site.id, &newest.lookup_id, &newest.hash, None).await.unwrap());
    let stored = store.site(&site.id).await.unwrap().unwrap();
    assert_eq!((stored.previous_key_lookup_id, stored.previous_key_expires_at), (None, None));
    assert_eq!(hash_at(&old, 0).await, None);
    assert_eq!(hash_at(&new, 0).await, None);
    assert_eq!(hash_at(&newest, 0).await, Some(newest.hash.to_vec()));
    assert!(!store.rekey_site("site_missing", &old.lookup_id, &old.hash, None).await.unwrap());
}

async fn a_relay_secret_is_made_once_and_then_kept(db: Database) {
    let (first, second) = (db.open().await, db.open().await);
    // Two relays starting at once agree on one value.
    let (a, b) = tokio::join!(first.relay_secret("salt", 32), second.relay_secret("salt", 32));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!((a.len(), &a), (32, &b));
    assert_eq!(first.relay_secret("salt", 16).await.unwrap(), a, "made once, then kept");
    let other = first.relay_secret("other", 32).await.unwrap();
    assert_ne!(other, a);
    assert_eq!(second.relay_secret("other", 32).await.unwrap(), other);
}

async fn a_logged_out_console_session_is_refused_through_every_store_until_it_expires(
    db: Database,
) {
    let (first, second) = (db.open().await, db.open().await);
    assert!(!second.console_session_revoked("s1").await.unwrap());
    first.revoke_console_session("s1", 2_000, 1_000).await.unwrap();
    // Seen by another relay's store; revoking again changes nothing.
    assert!(second.console_session_revoked("s1").await.unwrap());
    second.revoke_console_session("s1", 2_000, 1_001).await.unwrap();
    assert!(first.console_session_revoked("s1").await.unwrap());
    assert!(!first.console_session_revoked("s2").await.unwrap());
    // Once it would have expired anyway, the next logout forgets it.
    first.revoke_console_session("s2", 9_000, 2_000).await.unwrap();
    assert!(!second.console_session_revoked("s1").await.unwrap());
    assert!(second.console_session_revoked("s2").await.unwrap());
}

async fn usage_records_written_together_read_back_identically_and_in_order(db: Database) {
    let store = db.open().await;
    let record = |at_ms: i64, visitor: Option<&str>, outcome: Outcome| UsageRecord {
        request_id: format!("req_{at_ms}_{}", visitor.unwrap_or("none")),
        visitor: visitor.map(str::to_owned),
        model: "m \"quoted\" ü".into(),
        input_tokens: 12,
        output_tokens: u64::MAX,
        cache_read_tokens: 5,
        cache_write_tokens: 7,
        estimated: true,
        cost_micros: 0,
        first_token_ms: None,
        total_ms: 7,
        outcome,
        ..usage("", at_ms, Some("site_a"), 0)
    };
    // (Not NUL: PostgreSQL's text cannot hold it; visitors are hashes.)
    let mut records = vec![
        record(3, Some("v1"), Outcome::Completed),
        record(3, None, Outcome::Interrupted),
        record(1, Some("v\u{1}2"), Outcome::UpstreamError),
    ];
    records[1].key_id = Some("key_b".into());
    records[1].site_id = None;
    records[1].estimated = false;
    records[1].first_token_ms = Some(4);
    // More than one statement's worth in SQLite, written in order after the three above.
    records.extend((0..600).map(|i| record(10 + i, Some("many"), Outcome::Completed)));
    store.record_usage(&records).await.unwrap();
    store.record_usage(&[]).await.unwrap();
    // Counts are stored as signed 64-bit integers: one past i64::MAX is kept as i64::MAX.
    let mut expected = records.clone();
    for r in &mut expected {
        r.output_tokens = i64::MAX as u64;
    }
    let read = store.usage_since(0, None, None).await.unwrap();
    assert_eq!(read[..3], [expected[2].clone(), expected[0].clone(), expected[1].clone()]);
    assert_eq!(read[3..], expected[3..]);
    assert_eq!(store.usage_since(10, None, None).await.unwrap(), expected[3..]);
    assert_eq!(store.usage_since(0, None, Some("key_b")).await.unwrap(), [expected[1].clone()]);
    assert_eq!(store.usage_since(0, Some("site_a"), None).await.unwrap().len(), 602);
}

async fn pending_usage_left_by_a_crash_is_settled_as_interrupted(db: Database) {
    let store = db.open().await;
    // Rows that versions before the reservation journal left pending.
    let pending = UsageRecord { outcome: Outcome::Pending, ..usage("req_a", 1_000, None, 90) };
    let done = usage("req_b", 2_000, None, 1);
    store.record_usage(&[pending.clone(), done.clone()]).await.unwrap();
    assert_eq!(store.settle_pending_usage().await.unwrap(), 1);
    // At the worst case the pending row held.
    let interrupted = UsageRecord { outcome: Outcome::Interrupted, estimated: true, ..pending };
    assert_eq!(store.usage_since(0, None, None).await.unwrap(), [interrupted, done]);
    assert_eq!(store.settle_pending_usage().await.unwrap(), 0);
}

async fn usage_totals_are_summed_per_utc_day_caller_and_model(db: Database) {
    let store = db.open().await;
    let record =
        |id: &str, at_ms: i64, site: Option<&str>, key: Option<&str>, model: &str| UsageRecord {
            key_id: key.map(str::to_owned),
            model: model.into(),
            ..usage(id, at_ms, site, 1)
        };
    let huge = |id: &str| UsageRecord {
        output_tokens: u64::MAX,
        cost_micros: u64::MAX,
        ..record(id, 2 * DAY_MS, Some("site_b"), None, "m1")
    };
    store
        .record_usage(&[
            record("r1", 1_000, Some("site_a"), None, "m1"),
            record("r2", DAY_MS - 1, Some("site_a"), None, "m1"),
            record("r3", 5_000, Some("site_a"), None, "m2"),
            record("r4", 6_000, None, Some("key_k"), "m1"),
            record("r5", DAY_MS, Some("site_a"), None, "m1"),
            huge("r6"),
        ])
        .await
        .unwrap();
    // In a second batch, so that the rollup adds to a saturated sum.
    store.record_usage(&[huge("r7"), huge("r8")]).await.unwrap();
    let summed =
        |day: u64, site: Option<&str>, key: Option<&str>, model: &str, requests: u64| UsageGroup {
            key_id: key.map(str::to_owned),
            model: model.into(),
            ..group(i64::try_from(day).unwrap(), site, requests, requests)
        };
    // Sums stop at the largest stored integer.
    let saturated = UsageGroup {
        output_tokens: i64::MAX as u64,
        cost_micros: i64::MAX as u64,
        ..summed(2, Some("site_b"), None, "m1", 3)
    };
    let totals = async |since_ms: i64, site: Option<&str>, key: Option<&str>| {
        let mut groups = store.usage_totals(since_ms, site, key).await.unwrap();
        groups.sort_by(|a, b| {
            (a.day_start, &a.site_id, &a.key_id, &a.model).cmp(&(
                b.day_start,
                &b.site_id,
                &b.key_id,
                &b.model,
            ))
        });
        groups
    };
    let day_0 = [
        summed(0, None, Some("key_k"), "m1", 1),
        summed(0, Some("site_a"), None, "m1", 2),
        summed(0, Some("site_a"), None, "m2", 1),
    ];
    let day_1 = summed(1, Some("site_a"), None, "m1", 1);
    let all = [&day_0[..], &[day_1.clone(), saturated.clone()]].concat();
    assert_eq!(totals(0, None, None).await, all);
    // From the start of since_ms's day.
    assert_eq!(totals(5_000, None, None).await, all);
    assert_eq!(totals(DAY_MS + 1, None, None).await, [day_1.clone(), saturated]);
    assert_eq!(totals(0, Some("site_a"), None).await, [&day_0[1..], &[day_1]].concat());
    assert_eq!(totals(0, None, Some("key_k")).await, [day_0[0].clone()]);
    assert_eq!(totals(0, Some("site_none"), None).await, []);
}

fn event(id: &str, at_ms: i64) -> WebhookEvent {
    WebhookEvent {
        id: id.into(),
        kind: "key.revoked".into(),
        site_id: None,
        payload: format!("{{\"id\":\"{id}\"}}"),
        created_at_ms: at_ms,
    }
}

fn to(endpoint: &str, id: &str) -> NewWebhookDelivery {
    NewWebhookDelivery { id: id.into(), endpoint: endpoint.into() }
}

/// The ids of the deliveries to `endpoint` that one claim at `now_ms` leases (up to 10).
async fn claimed(
    store: &dyn Store,
    endpoint: &str,
    now_ms: i64,
    lease_until_ms: i64,
) -> Vec<String> {
    let claimed = store.claim_webhook_deliveries_to(endpoint, now_ms, lease_until_ms, 10);
    claimed.await.unwrap().into_iter().map(|d| d.id).collect()
}

async fn only_delivery(store: &dyn Store) -> WebhookDelivery {
    let mut all = store.webhook_deliveries(10).await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

async fn a_webhook_event_is_dispatched_once_and_its_delivery_is_leased_while_attempted(
    db: Database,
) {
    let store = db.open().await;
    let mut scoped = event("evt_1", 1_000);
    scoped.site_id = Some("site_a".into());
    store.add_webhook_events(&[scoped.clone(), event("evt_2", 500)]).await.unwrap();
    let pending = store.undispatched_webhook_events(10).await.unwrap();
    assert_eq!(pending, vec![event("evt_2", 500), scoped]);
    assert_eq!(store.undispatched_webhook_events(1).await.unwrap(), [event("evt_2", 500)]);
    store.dispatch_webhook_event("evt_2", &[], 0).await.unwrap();

    assert!(
        store.dispatch_webhook_event("evt_1", &[to("http://a", "whd_1")], 2_000).await.unwrap()
    );
    assert!(
        !store.dispatch_webhook_event("evt_1", &[to("http://a", "whd_2")], 2_000).await.unwrap()
    );
    assert!(store.undispatched_webhook_events(10).await.unwrap().is_empty());

    assert!(claimed(store.as_ref(), "http://a", 1_999, 9_000).await.is_empty());
    let leased = store.claim_webhook_deliveries_to("http://a", 2_000, 9_000, 10).await.unwrap();
    assert_eq!(
        leased,
        [WebhookDelivery {
            id: "whd_1".into(),
            event_id: "evt_1".into(),
            kind: "key.revoked".into(),
            payload: "{\"id\":\"evt_1\"}".into(),
            endpoint: "http://a".into(),
            attempts: 0,
            created_at_ms: 1_000,
            delivered_at_ms: None,
            failed_at_ms: None,
            last_error: None,
        }]
    );
    // Leased: not due again until the lease ends.
    assert!(claimed(store.as_ref(), "http://a", 8_999, 19_000).await.is_empty());
    assert_eq!(claimed(store.as_ref(), "http://a", 9_000, 19_000).await, ["whd_1"]);
}

async fn failed_webhook_attempts_are_retried_until_delivered_or_given_up(db: Database) {
    let store = db.open().await;
    store.add_webhook_events(&[event("evt_1", 1_000)]).await.unwrap();
    store.dispatch_webhook_event("evt_1", &[to("http://a", "whd_1")], 1_000).await.unwrap();

    assert_eq!(claimed(store.as_ref(), "http://a", 1_000, 5_000).await, ["whd_1"]);
    store.webhook_attempt_failed("whd_1", "HTTP 500", 1_100, Some(3_000)).await.unwrap();
    let failed = only_delivery(store.as_ref()).await;
    assert_eq!((failed.attempts, failed.last_error.as_deref()), (1, Some("HTTP 500")));
    assert_eq!((failed.delivered_at_ms, failed.failed_at_ms), (None, None));
    assert!(claimed(store.as_ref(), "http://a", 2_999, 9_000).await.is_empty());
    assert_eq!(claimed(store.as_ref(), "http://a", 3_000, 9_000).await, ["whd_1"]);

    store.webhook_delivered("whd_1", 3_100).await.unwrap();
    let delivered = only_delivery(store.as_ref()).await;
    assert_eq!((delivered.attempts, delivered.delivered_at_ms), (2, Some(3_100)));
    assert_eq!(delivered.last_error, None);
    assert!(claimed(store.as_ref(), "http://a", 99_000, 100_000).await.is_empty());

    // Given up: kept as a dead letter, never attempted again.
    store.add_webhook_events(&[event("evt_2", 1_000)]).await.unwrap();
    store.dispatch_webhook_event("evt_2", &[to("http://a", "whd_2")], 1_000).await.unwrap();
    store.webhook_attempt_failed("whd_2", "timed out", 1_200, None).await.unwrap();
    let dead = store.webhook_deliveries(10).await.unwrap();
    let dead = dead.iter().find(|d| d.id == "whd_2").unwrap();
    assert_eq!((dead.attempts, dead.failed_at_ms), (1, Some(1_200)));
    assert_eq!(dead.last_error.as_deref(), Some("timed out"));
    assert!(claimed(store.as_ref(), "http://a", 99_000, 100_000).await.is_empty());
}

async fn a_webhook_claim_for_one_endpoint_leaves_the_others_deliveries_due(db: Database) {
    let store = db.open().await;
    store.add_webhook_events(&[event("evt_1", 1_000)]).await.unwrap();
    let deliveries = [to("http://a", "whd_a"), to("http://b", "whd_b")];
    store.dispatch_webhook_event("evt_1", &deliveries, 1_000).await.unwrap();

    assert_eq!(claimed(store.as_ref(), "http://a", 1_000, 9_000).await, ["whd_a"]);
    assert!(claimed(store.as_ref(), "http://a", 1_000, 9_000).await.is_empty());
    let to_b = store.claim_webhook_deliveries_to("http://b", 1_000, 9_000, 10).await.unwrap();
    assert_eq!(to_b.len(), 1);
    assert_eq!((to_b[0].id.as_str(), to_b[0].endpoint.as_str()), ("whd_b", "http://b"));
}

async fn deliveries_to_endpoints_no_longer_configured_are_given_up(db: Database) {
    let store = db.open().await;
    store.add_webhook_events(&[event("evt_1", 1_000), event("evt_2", 1_000)]).await.unwrap();
    let deliveries = [to("http://a", "whd_a"), to("http://gone", "whd_gone")];
    store.dispatch_webhook_event("evt_1", &deliveries, 1_000).await.unwrap();
    store.dispatch_webhook_event("evt_2", &[to("http://old", "whd_old")], 1_000).await.unwrap();
    store.webhook_delivered("whd_old", 1_100).await.unwrap();

    let configured = ["http://a".to_owned()];
    assert_eq!(
        store.give_up_webhook_deliveries_except(&configured, "removed", 2_000).await.unwrap(),
        1
    );
    let all = store.webhook_deliveries(10).await.unwrap();
    let state = |id: &str| {
        let d = all.iter().find(|d| d.id == id).unwrap();
        (d.delivered_at_ms, d.failed_at_ms, d.last_error.clone())
    };
    assert_eq!(state("whd_gone"), (None, Some(2_000), Some("removed".into())));
    assert_eq!(state("whd_a"), (None, None, None), "still to make");
    assert_eq!(state("whd_old"), (Some(1_100), None, None), "delivered before: kept as it was");
    // With no endpoint configured, every delivery still to make is given up.
    let none: [String; 0] = [];
    assert_eq!(store.give_up_webhook_deliveries_except(&none, "removed", 3_000).await.unwrap(), 1);
}

async fn the_webhook_backlog_counts_each_event_still_to_deliver_once(db: Database) {
    let store = db.open().await;
    assert_eq!(store.webhook_backlog().await.unwrap(), 0);
    store
        .add_webhook_events(&[
            event("evt_new", 1_000),
            event("evt_two", 1_000),
            event("evt_done", 1_000),
            event("evt_none", 1_000),
        ])
        .await
        .unwrap();
    assert_eq!(store.webhook_backlog().await.unwrap(), 4, "undispatched");

    let two = [to("http://a", "whd_a"), to("http://b", "whd_b")];
    store.dispatch_webhook_event("evt_two", &two, 1_000).await.unwrap();
    store.dispatch_webhook_event("evt_done", &[to("http://a", "whd_c")], 1_000).await.unwrap();
    store.dispatch_webhook_event("evt_none", &[], 1_000).await.unwrap();
    assert_eq!(store.webhook_backlog().await.unwrap(), 3, "evt_none has nothing to deliver");

    store.webhook_delivered("whd_c", 1_100).await.unwrap();
    store.webhook_delivered("whd_a", 1_100).await.unwrap();
    assert_eq!(store.webhook_backlog().await.unwrap(), 2, "evt_two still goes to b");
    store.webhook_attempt_failed("whd_b", "HTTP 500", 1_200, None).await.unwrap();
    assert_eq!(store.webhook_backlog().await.unwrap(), 1, "a dead letter is not waiting");
}

async fn pruning_keeps_webhook_events_with_deliveries_still_to_make(db: Database) {
    let store = db.open().await;
    store
        .add_webhook_events(&[
            event("evt_done", 1_000),
            event("evt_open", 1_000),
            event("evt_new", 5_000),
            event("evt_undispatched", 1_000),
        ])
        .await
        .unwrap();
    for (event, delivery) in [("evt_done", "whd_1"), ("evt_open", "whd_2"), ("evt_new", "whd_3")] {
        store.dispatch_webhook_event(event, &[to("http://a", delivery)], 1_000).await.unwrap();
    }
    store.webhook_delivered("whd_1", 1_500).await.unwrap();
    store.webhook_delivered("whd_3", 5_500).await.unwrap();

    assert_eq!(store.prune_webhook_events(2_000).await.unwrap(), 1);
    let mut left: Vec<String> =
        store.webhook_deliveries(10).await.unwrap().into_iter().map(|d| d.id).collect();
    left.sort();
    assert_eq!(left, ["whd_2", "whd_3"]);
    let undispatched = store.undispatched_webhook_events(10).await.unwrap();
    assert_eq!(undispatched, [event("evt_undispatched", 1_000)], "not dispatched: kept");
}

async fn an_event_dispatched_by_two_stores_at_once_gets_its_deliveries_once(db: Database) {
    let (first, second) = (db.open().await, db.open().await);
    first.add_webhook_events(&[event("evt_1", 1_000)]).await.unwrap();
    let (to_a, to_b) = ([to("http://a", "whd_a")], [to("http://a", "whd_b")]);
    let (a, b) = tokio::join!(
        first.dispatch_webhook_event("evt_1", &to_a, 1_000),
        second.dispatch_webhook_event("evt_1", &to_b, 1_000),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a != b, "exactly one dispatch creates deliveries: {a}, {b}");
    let winner = if a { "whd_a" } else { "whd_b" };
    assert_eq!(only_delivery(second.as_ref()).await.id, winner);
}

async fn concurrent_claims_from_two_stores_never_return_the_same_delivery(db: Database) {
    let (first, second) = (db.open().await, db.open().await);
    let ids: Vec<String> = (0..60).map(|i| format!("whd_{i:02}")).collect();
    let deliveries: Vec<_> = ids.iter().map(|id| to("http://a", id)).collect();
    first.add_webhook_events(&[event("evt_1", 1_000)]).await.unwrap();
    first.dispatch_webhook_event("evt_1", &deliveries, 1_000).await.unwrap();
    // Each store claims a few at a time until nothing is left.
    let drain = async |store: &dyn Store| {
        let mut claimed = Vec::new();
        loop {
            let batch = match store.claim_webhook_deliveries_to("http://a", 1_000, 9_000, 4).await {
                Ok(batch) => batch,
                // Neither engine may refuse a claim because another one runs.
                Err(error) => panic!("{error}"),
            };
            if batch.is_empty() {
                return claimed;
            }
            claimed.extend(batch.into_iter().map(|d| d.id));
        }
    };
    let (a, b) = tokio::time::timeout(WAIT, async {
        tokio::join!(drain(first.as_ref()), drain(second.as_ref()))
    })
    .await
    .unwrap();
    let all: HashSet<&String> = a.iter().chain(&b).collect();
    assert_eq!(all.len(), a.len() + b.len(), "claimed twice: {a:?} and {b:?}");
    assert_eq!(all, ids.iter().collect(), "every delivery claimed");
}

const DAY_MS: i64 = 86_400_000;

fn usage(request_id: &str, at_ms: i64, site: Option<&str>, tokens: u64) -> UsageRecord {
    UsageRecord {
        request_id: request_id.into(),
        at_ms,
        site_id: site.map(str::to_owned),
        key_id: None,
        visitor: None,
        model: "m".into(),
        upstream: "up".into(),
        input_tokens: 3 * tokens,
        output_tokens: 2 * tokens,
        cache_read_tokens: tokens,
        cache_write_tokens: tokens,
        estimated: false,
        cost_micros: 10 * tokens,
        first_token_ms: Some(5),
        total_ms: 9,
        outcome: Outcome::Completed,
    }
}

fn group(day: i64, site: Option<&str>, requests: u64, tokens: u64) -> UsageGroup {
    UsageGroup {
        day_start: u64::try_from(day * 86_400).unwrap(),
        site_id: site.map(str::to_owned),
        key_id: None,
        model: "m".into(),
        requests,
        input_tokens: 3 * tokens,
        output_tokens: 2 * tokens,
        cache_read_tokens: tokens,
        cache_write_tokens: tokens,
        cost_micros: 10 * tokens,
    }
}

async fn usage_totals_come_from_the_daily_rollup_and_outlive_pruned_records(db: Database) {
    let store = db.open().await;
    let day = 20_000;
    // Two batches touch the same day and caller: the rollup adds them up.
    store
        .record_usage(&[
            usage("r1", day * DAY_MS + 1, Some("site_a"), 1),
            usage("r2", day * DAY_MS + 2, Some("site_a"), 2),
            usage("r3", day * DAY_MS + 3, None, 4),
        ])
        .await
        .unwrap();
    store
        .record_usage(&[
            usage("r4", day * DAY_MS + 4, Some("site_a"), 8),
            usage("r5", (day + 1) * DAY_MS, Some("site_a"), 16),
        ])
        .await
        .unwrap();
    let mut totals = store.usage_totals(day * DAY_MS + 5, None, None).await.unwrap();
    totals.sort_by_key(|g| (g.day_start, g.site_id.clone()));
    let expected = [
        group(day, None, 1, 4),
        group(day, Some("site_a"), 3, 11),
        group(day + 1, Some("site_a"), 1, 16),
    ];
    assert_eq!(totals, expected, "from the start of since_ms's day");
    let one_site = store.usage_totals(0, Some("site_a"), None).await.unwrap();
    assert_eq!(one_site.len(), 2);

    assert_eq!(store.prune_usage((day + 1) * DAY_MS).await.unwrap(), 4);
    let records = store.usage_since(0, None, None).await.unwrap();
    assert_eq!(records.len(), 1, "only the record of the day after is left");
    let mut after = store.usage_totals(0, None, None).await.unwrap();
    after.sort_by_key(|g| (g.day_start, g.site_id.clone()));
    assert_eq!(after, expected, "the rollup keeps what was pruned");
}

async fn recovery_records_only_the_requests_a_crashed_run_did_not(db: Database) {
    let store = db.open().await;
    let at = 20_000 * DAY_MS;
    store.record_usage(&[usage("written", at + 10, Some("s"), 1)]).await.unwrap();
    let mut left = [usage("written", at + 10, Some("s"), 100), usage("lost", at, Some("s"), 100)];
    for record in &mut left {
        record.outcome = Outcome::Interrupted;
        record.estimated = true;
    }
    assert_eq!(store.recover_usage(&left).await.unwrap(), 1);
    let records = store.usage_since(0, None, None).await.unwrap();
    let summary: Vec<_> =
        records.iter().map(|r| (r.request_id.as_str(), r.outcome, r.input_tokens)).collect();
    assert_eq!(summary, [("lost", Outcome::Interrupted, 300), ("written", Outcome::Completed, 3)]);
    let totals = store.usage_totals(0, None, None).await.unwrap();
    assert_eq!(totals, [group(20_000, Some("s"), 2, 101)]);
    assert_eq!(store.recover_usage(&[]).await.unwrap(), 0);
}

async fn the_same_request_id_twice_is_two_records(db: Database) {
    // A trusted proxy may send one X-Request-Id with two requests: neither record is lost.
    let store = db.open().await;
    let at = 20_000 * DAY_MS;
    store.record_usage(&[usage("req_same", at, None, 1)]).await.unwrap();
    store.record_usage(&[usage("req_same", at + 1, None, 2)]).await.unwrap();
    assert_eq!(store.usage_since(0, None, None).await.unwrap().len(), 2);
    assert_eq!(store.usage_totals(0, None, None).await.unwrap(), [group(20_000, None, 2, 3)]);
}

/// What only an engine shared by several relays has to do.
mod postgres_only {
    use super::*;
    use confab_server::store::{Cached, PgStore};

    /// A relay (its directory over PostgreSQL) that polls only once an hour, so that anything it
    /// sees happens through notifications.
    async fn relay_hearing_only_notifications(db: &Database) -> Cached {
        let hour = Duration::from_secs(3_600);
        Cached::polling_every(PgStore::open(&db.url, 2).await.unwrap(), hour, hour)
    }

    async fn wait_until_revoked(relay: &Cached, key: &NewKey) {
        let revoked = tokio::time::timeout(WAIT, async {
            while relay.api_key_by_lookup(&key.lookup_id, 0).await.unwrap().is_some() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(revoked.is_ok(), "the relay never heard of the revocation");
    }

    #[tokio::test]
    async fn a_relay_that_does_not_poll_hears_of_changes_through_notifications() {
        let db = Database::postgres();
        let relay = relay_hearing_only_notifications(&db).await;
        let cli = db.open().await;
        let (first, second) =
            (NewKey::generate(KeyKind::Secret), NewKey::generate(KeyKind::Secret));
        let first_id = cli.create_api_key(new_key(&first)).await.unwrap().id;
        let second_id = cli.create_api_key(new_key(&second)).await.unwrap().id;
        // The first lookup loads the copy and starts the relay's listener.
        assert!(relay.api_key_by_lookup(&second.lookup_id, 0).await.unwrap().is_some());
        // Seen once the listener listens (it checks the counter when it starts)...
        cli.revoke_api_key(&first_id, 1).await.unwrap();
        wait_until_revoked(&relay, &first).await;
        // ... and from then on through a notification alone.
        cli.revoke_api_key(&second_id, 1).await.unwrap();
        wait_until_revoked(&relay, &second).await;
    }

    #[tokio::test]
    async fn a_relay_hears_of_changes_again_after_its_listening_connection_is_killed() {
        let db = Database::postgres();
        let relay = relay_hearing_only_notifications(&db).await;
        let cli = db.open().await;
        let keys: Vec<NewKey> = (0..3).map(|_| NewKey::generate(KeyKind::Secret)).collect();
        let mut ids = Vec::new();
        for key in &keys {
            ids.push(cli.create_api_key(new_key(key)).await.unwrap().id);
        }
        assert!(relay.api_key_by_lookup(&keys[0].lookup_id, 0).await.unwrap().is_some());
        cli.revoke_api_key(&ids[0], 1).await.unwrap();
        wait_until_revoked(&relay, &keys[0]).await;

        let admin = sqlx::PgPool::connect(&db.url).await.unwrap();
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND query = 'LISTEN \"confab_directory\"'",
        )
        .fetch_all(&admin)
        .await
        .unwrap();
        assert_eq!(killed, [true], "one listening connection");
        // Seen once the listener listens again, and then through a notification alone.
        cli.revoke_api_key(&ids[1], 1).await.unwrap();
        wait_until_revoked(&relay, &keys[1]).await;
        cli.revoke_api_key(&ids[2], 1).await.unwrap();
        wait_until_revoked(&relay, &keys[2]).await;
    }
}

/// What a `postgres://` URL's `sslmode` and `sslrootcert` do, as libpq documents them, on the
/// test binary's server that speaks TLS only and on the one that does not speak it at all.
mod tls {
    use super::*;
    use confab_server::store::StoreError;
    use confab_tests::servers::{Postgres, postgres, postgres_with_tls};

    fn server() -> &'static Postgres {
        postgres_with_tls()
    }

    /// A new database of `server`, at `host`, with `query` (in which `{ca}` and `{other_ca}`
    /// stand for the authorities' files).
    fn url(server: &Postgres, host: &str, query: &str) -> String {
        let query = if query.contains('{') {
            let certificates = server.certificates();
            query
                .replace("{ca}", &certificates.ca.display().to_string())
                .replace("{other_ca}", &certificates.other_ca.display().to_string())
        } else {
            query.to_owned()
        };
        server.database_at(host, &query)
    }

    /// Opens the store as the relay does (`confab_server::store::open`).
    async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
        let config = DatabaseConfig { url: url.to_owned(), ..DatabaseConfig::default() };
        confab_server::store::open(&config).await
    }

    async fn refusal(url: &str) -> String {
        match open(url).await {
            Ok(_) => panic!("connected with {url}"),
            Err(error) => error.to_string(),
        }
    }

    /// Whether the connection `url` makes is encrypted, and with which protocol.
    async fn encryption(url: &str) -> (bool, Option<String>) {
        let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(url).await.unwrap();
        sqlx::query_as("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut connection)
            .await
            .unwrap()
    }

    fn tls13() -> (bool, Option<String>) {
        (true, Some("TLSv1.3".to_owned()))
    }

    const UNKNOWN_AUTHORITY: &str = "storage failure: the TLS handshake with the database \
                                     failed: invalid peer certificate: UnknownIssuer";

    #[tokio::test]
    async fn verify_full_with_the_servers_authority_connects_over_tls() {
        let url = url(server(), "localhost", "sslmode=verify-full&sslrootcert={ca}");
        let store = open(&url).await.unwrap();
        store.ping().await.unwrap();
        assert_eq!(store.list_sites().await.unwrap(), []);
        assert_eq!(encryption(&url).await, tls13());
    }

    #[tokio::test]
    async fn the_tls_server_refuses_a_connection_without_tls() {
        let url = url(server(), "127.0.0.1", "sslmode=disable");
        let database = url.rsplit('/').next().unwrap().split('?').next().unwrap();
        let error = refusal(&url).await;
        // Without the line of PostgreSQL's source that sqlx appends (` at line 544`).
        let (error, _) = error.rsplit_once(" at line ").unwrap();
        assert_eq!(
            error,
            format!(
                "storage failure: error returned from database: no pg_hba.conf entry for host \
                 \"127.0.0.1\", user \"postgres\", database \"{database}\", no encryption"
            )
        );
    }

    #[tokio::test]
    async fn verify_full_refuses_a_certificate_that_does_not_name_the_host() {
        // The certificate names `localhost`, not `127.0.0.1`.
        let error =
            refusal(&url(server(), "127.0.0.1", "sslmode=verify-full&sslrootcert={ca}")).await;
        assert_eq!(
            error,
            "storage failure: the TLS handshake with the database failed: invalid peer \
             certificate: certificate not valid for name \"127.0.0.1\"; certificate is only \
             valid for DnsName(\"localhost\")"
        );
    }

    #[tokio::test]
    async fn verify_ca_checks_the_chain_but_not_the_host_name() {
        let store = open(&url(server(), "127.0.0.1", "sslmode=verify-ca&sslrootcert={ca}")).await;
        store.unwrap().ping().await.unwrap();
        let error =
            refusal(&url(server(), "127.0.0.1", "sslmode=verify-ca&sslrootcert={other_ca}")).await;
        assert_eq!(error, UNKNOWN_AUTHORITY);
    }

    #[tokio::test]
    async fn a_certificate_from_an_authority_not_trusted_is_refused() {
        for query in [
            "sslmode=verify-full&sslrootcert={other_ca}",
            // Without sslrootcert: the public authorities alone, which did not sign it.
            "sslmode=verify-full",
            // `system` is those public authorities too, not a file of that name.
            "sslrootcert=system",
        ] {
            let error = refusal(&url(server(), "localhost", query)).await;
            assert_eq!(error, UNKNOWN_AUTHORITY, "{query}");
        }
    }

    #[tokio::test]
    async fn require_encrypts_without_verifying_unless_given_an_authority() {
        let url_without = url(server(), "127.0.0.1", "sslmode=require");
        open(&url_without).await.unwrap().ping().await.unwrap();
        assert_eq!(encryption(&url_without).await, tls13());
        // With a root certificate, libpq's `require` verifies the chain, as `verify-ca` does.
        let error =
            refusal(&url(server(), "127.0.0.1", "sslmode=require&sslrootcert={other_ca}")).await;
        assert_eq!(error, UNKNOWN_AUTHORITY);
        open(&url(server(), "127.0.0.1", "sslmode=require&sslrootcert={ca}")).await.unwrap();
    }

    #[tokio::test]
    async fn require_fails_naming_tls_when_the_server_does_not_speak_it() {
        let url = postgres().database_at("127.0.0.1", "sslmode=require").replacen(
            "postgres@",
            "postgres:s3cret@",
            1,
        );
        assert_eq!(
            refusal(&url).await,
            "storage failure: error occurred while attempting to establish a TLS connection: \
             server does not support TLS"
        );
    }

    #[tokio::test]
    async fn prefer_connects_with_tls_or_without_as_the_server_offers() {
        assert_eq!(encryption(&url(server(), "127.0.0.1", "")).await, tls13());
        let plain = postgres().database();
        open(&plain).await.unwrap().ping().await.unwrap();
        assert_eq!(encryption(&plain).await, (false, None));
    }
}
