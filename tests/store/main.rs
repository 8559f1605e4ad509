//! The store contract: what every storage engine must do, run against each engine through
//! `confab_server::store::open` (so with the in-memory directory in front, as the relay uses
//! it). Each test is written once and instantiated per engine by `contract!`.

use std::sync::Arc;
use std::time::Duration;

use confab_server::config::DatabaseConfig;
use confab_server::sitekey::{KeyKind, NewKey};
use confab_server::store::{
    CallerLimits, NewApiKey, NewSite, Outcome, Scope, SiteSettings, SiteWidget, Store, UsageGroup,
    UsageRecord,
};

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
    };
}

contract!(
    a_created_site_reads_back_identically,
    deleting_a_site_removes_its_origins,
    a_change_made_through_the_store_is_seen_by_its_next_lookup,
    a_change_made_by_another_process_is_seen_after_a_poll,
    recording_when_a_key_was_used_does_not_count_as_a_change,
    usage_totals_come_from_the_daily_rollup_and_outlive_pruned_records,
    recovery_records_only_the_requests_a_crashed_run_did_not,
    the_same_request_id_twice_is_two_records,
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
        input_tokens: tokens,
        output_tokens: 2 * tokens,
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
        input_tokens: tokens,
        output_tokens: 2 * tokens,
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
    assert_eq!(summary, [("lost", Outcome::Interrupted, 100), ("written", Outcome::Completed, 1)]);
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
