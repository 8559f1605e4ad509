//! The store contract: what every storage engine must do, run against each engine through
//! `confab_server::store::open` (so with the in-memory directory in front, as the relay uses
//! it). Each test is written once and instantiated per engine by `contract!`.

use std::sync::Arc;
use std::time::Duration;

use confab_server::config::DatabaseConfig;
use confab_server::sitekey::{KeyKind, NewKey};
use confab_server::store::{
    CallerLimits, NewApiKey, NewSite, Scope, SiteSettings, SiteWidget, Store,
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
